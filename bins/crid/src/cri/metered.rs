//! Each CRI call counted and timed in [`crate::metrics::Metrics`], by method and
//! the gRPC code it was answered with.

use crate::metrics::Metrics;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::codegen::http;

/// The [`tower::Layer`] of [`Metered`].
#[derive(Clone)]
pub struct MeteredLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for MeteredLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

/// Counts and times the calls through it.
#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The method of a CRI path (`/runtime.v1.RuntimeService/Version` is `Version`);
/// any other path is `unknown`, so that a client cannot add label values at will.
fn method(path: &str) -> &str {
    ["/runtime.v1.RuntimeService/", "/runtime.v1.ImageService/"]
        .iter()
        .find_map(|s| path.strip_prefix(s))
        .filter(|m| !m.is_empty() && m.len() <= 64 && m.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("unknown")
}

/// The name of a `grpc-status` value, as tonic names the codes.
fn code_name(status: Option<&http::HeaderValue>) -> String {
    let code = status
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    format!("{:?}", tonic::Code::from_i32(code))
}

impl<S, B, R> tower::Service<http::Request<B>> for Metered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method(req.uri().path()).to_string();
        let metrics = Arc::clone(&self.metrics);
        let t0 = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let r = call.await;
            // A failed call is answered with its status in the headers; a
            // successful one with its status in the trailers, after the message.
            let code = match &r {
                Ok(resp) => code_name(resp.headers().get("grpc-status")),
                Err(_) => "Internal".to_string(),
            };
            metrics.operation(&method, &code, t0.elapsed());
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_codes_by_name() {
        assert_eq!(
            method("/runtime.v1.RuntimeService/RunPodSandbox"),
            "RunPodSandbox"
        );
        assert_eq!(method("/runtime.v1.ImageService/PullImage"), "PullImage");
        for odd in [
            "/",
            "/other.Service/X",
            "/runtime.v1.RuntimeService/",
            "/runtime.v1.RuntimeService/a/b",
        ] {
            assert_eq!(method(odd), "unknown", "{odd}");
        }
        assert_eq!(code_name(None), "Ok");
        let v = http::HeaderValue::from_static("5");
        assert_eq!(code_name(Some(&v)), "NotFound");
    }
}
