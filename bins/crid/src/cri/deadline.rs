//! A caller's deadline (the `grpc-timeout` header) answered as DEADLINE_EXCEEDED.
//!
//! tonic's server enforces the header itself but answers CANCELLED when it runs out,
//! and a client whose own timer fires a little late sees that code instead of its
//! own DEADLINE_EXCEEDED (critest's "public image should timeout if requested"
//! does, on a loaded machine). This layer, inside tonic's, ends the call a little
//! before tonic would, with the code the gRPC spec gives a deadline.

use futures_util::future::BoxFuture;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codegen::http;

/// The [`tower::Layer`] of [`Deadline`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// Ends a call at its caller's deadline with DEADLINE_EXCEEDED.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
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

impl<S, B, R> tower::Service<http::Request<B>> for Deadline<S>
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
        let deadline = grpc_timeout(req.headers());
        let call = self.inner.call(req);
        Box::pin(async move {
            let Some(d) = deadline else {
                return call.await;
            };
            match tokio::time::timeout(ours(d), call).await {
                Ok(r) => r,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "the caller's deadline of {d:?} passed"
                ))
                .into_http()),
            }
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
}
