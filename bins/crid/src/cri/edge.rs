//! The edge every CRI call passes through, inside tonic's server: the caller's
//! deadline answered as DEADLINE_EXCEEDED, and the call counted and timed in
//! [`crate::metrics::Metrics`] by method and the gRPC code it was answered with.
//!
//! tonic's server enforces the `grpc-timeout` header itself but answers CANCELLED
//! when it runs out, and a client whose own timer fires a little late sees that code
//! instead of its own DEADLINE_EXCEEDED (critest's "public image should timeout if
//! requested" does, on a loaded machine). The edge ends the call a little before
//! tonic would, with the code the gRPC spec gives a deadline; that answer is counted
//! like any other.

use crate::metrics::Metrics;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::codegen::http;

/// The [`tower::Layer`] of [`Edge`].
#[derive(Clone)]
pub struct EdgeLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

/// Ends a call at its caller's deadline with DEADLINE_EXCEEDED, and counts and
/// times every call.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// How much earlier than tonic's own timer this one fires: a quarter of the
/// deadline, at most 5 ms.
fn ours(deadline: Duration) -> Duration {
    deadline - (deadline / 4).min(Duration::from_millis(5))
}

/// The `grpc-timeout` header's duration (digits then one of `HMSmun`); `None` when
/// there is none or it is malformed (tonic then ignores it too).
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (n, unit) = v.split_at(v.len() - 1);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
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

impl<S, B, R> tower::Service<http::Request<B>> for Edge<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method(req.uri().path()).to_string();
        let deadline = grpc_timeout(req.headers());
        let metrics = Arc::clone(&self.metrics);
        let t0 = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let r = match deadline {
                None => call.await,
                Some(d) => match tokio::time::timeout(ours(d), call).await {
                    Ok(r) => r,
                    Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                        "the caller's deadline of {d:?} passed"
                    ))
                    .into_http()),
                },
            };
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
    fn the_header_in_each_unit() {
        let at = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(at("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(at("3M"), Some(Duration::from_secs(180)));
        assert_eq!(at("10S"), Some(Duration::from_secs(10)));
        assert_eq!(at("999m"), Some(Duration::from_millis(999)));
        assert_eq!(at("870u"), Some(Duration::from_micros(870)));
        assert_eq!(at("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "10", "10x", "123456789S", "-1S"] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
        // Before tonic's timer, by a quarter, at most 5 ms.
        assert_eq!(ours(Duration::from_millis(1)), Duration::from_micros(750));
        assert_eq!(
            ours(Duration::from_secs(120)),
            Duration::from_millis(119_995)
        );
    }

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
