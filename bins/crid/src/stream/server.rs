//! The HTTP side: a TCP listener, a path and token per request, the SPDY/3.1
//! upgrade with the subprotocol the client prefers among those crid speaks.

use super::session::Session;
use super::Request;
use crate::Crid;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{header, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The remote command subprotocols, crid's preference first (as kubelet's).
pub const REMOTE_COMMAND_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The port-forward subprotocol.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";

/// How long a client has for its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `listener` until the process ends, over TLS when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    crid: Arc<Crid>,
) {
    let sessions = Arc::new(Semaphore::new(crid.settings.stream_max_sessions));
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("streaming server: accepting: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let crid = Arc::clone(&crid);
        let sessions = Arc::clone(&sessions);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(tcp, crid, sessions).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(stream, crid, sessions).await,
                        Ok(Err(e)) => tracing::debug!("streaming server: TLS from {peer}: {e}"),
                        Err(_) => tracing::debug!("streaming server: TLS from {peer}: timed out"),
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 requests on one connection, and the upgrade it may ask for.
async fn connection<I>(io: I, crid: Arc<Crid>, sessions: Arc<Semaphore>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        handle(Arc::clone(&crid), Arc::clone(&sessions), req)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .max_buf_size(64 * 1024)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .with_upgrades()
        .await;
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// 101, upgrading to `protocol`.
fn switching(protocol: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(header::UPGRADE, header::HeaderValue::from_static(protocol));
    r
}

/// 503: every session slot is taken.
fn too_many(crid: &Crid) -> Response<Full<Bytes>> {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!(
            "too many streaming sessions (at most {})",
            crid.settings.stream_max_sessions
        ),
    )
}

/// The values of header `name`, its lines and their comma-separated parts in order.
fn listed(headers: &hyper::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The subprotocol to speak: the first the client offers that crid speaks.
pub fn negotiate<'a>(offered: &[String], ours: &[&'a str]) -> Option<&'a str> {
    offered
        .iter()
        .find_map(|o| ours.iter().find(|p| **p == o.as_str()).copied())
}

async fn handle(
    crid: Arc<Crid>,
    sessions: Arc<Semaphore>,
    mut req: hyper::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    let (kind, token) = path.split_once('/').unwrap_or((path.as_str(), ""));
    if !matches!(*req.method(), hyper::Method::GET | hyper::Method::POST) || token.contains('/') {
        return Ok(plain(StatusCode::NOT_FOUND, "404 page not found"));
    }
    let Some(request) = crid.streams.take(kind, token) else {
        return Ok(plain(StatusCode::NOT_FOUND, "404 page not found"));
    };
    let headers = req.headers();
    let wants_websocket = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_websocket {
        return Ok(websocket(crid, sessions, req, request));
    }
    let wants_spdy = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("spdy/3.1"));
    if !wants_spdy {
        return Ok(plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request (this server speaks SPDY/3.1)",
        ));
    }
    let offered = listed(headers, PROTOCOL_HEADER);
    let ours: &[&str] = match request {
        Request::PortForward { .. } => &[PORT_FORWARD_PROTOCOL],
        _ => &REMOTE_COMMAND_PROTOCOLS,
    };
    let Some(protocol) = negotiate(&offered, ours) else {
        let mut r = plain(
            StatusCode::FORBIDDEN,
            &format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, \
                 server accepts {ours:?}"
            ),
        );
        for p in ours {
            r.headers_mut()
                .append(ACCEPTED_HEADER, header::HeaderValue::from_static(p));
        }
        return Ok(r);
    };
    let Ok(permit) = sessions.try_acquire_owned() else {
        return Ok(too_many(&crid));
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let counted = crid.metrics.stream(request.kind());
    tokio::spawn(async move {
        let _permit = (permit, counted);
        match upgrade.await {
            Ok(io) => {
                let session = Session::start(
                    hyper_util::rt::TokioIo::new(io),
                    crid.settings.stream_idle_timeout,
                );
                match request {
                    Request::PortForward { pod } => super::forward::serve(crid, pod, session).await,
                    r => super::remote::serve(crid, r, protocol, session).await,
                }
                tracing::debug!("streaming: a session ended");
            }
            Err(e) => tracing::debug!("streaming: upgrade failed: {e}"),
        }
    });
    let mut r = switching("SPDY/3.1");
    r.headers_mut()
        .insert(PROTOCOL_HEADER, header::HeaderValue::from_static(protocol));
    Ok(r)
}

/// The WebSocket upgrade: v5.channel.k8s.io for Exec and Attach, SPDY tunnelled
/// through it for PortForward.
fn websocket(
    crid: Arc<Crid>,
    sessions: Arc<Semaphore>,
    mut req: hyper::Request<Incoming>,
    request: Request,
) -> Response<Full<Bytes>> {
    use super::websocket::{PORT_FORWARD, REMOTE_COMMAND};
    let headers = req.headers();
    let Some(key) = headers
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
    else {
        return plain(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade without Sec-WebSocket-Key",
        );
    };
    let offered = listed(headers, "sec-websocket-protocol");
    let ours = match request {
        Request::PortForward { .. } => PORT_FORWARD,
        _ => REMOTE_COMMAND,
    };
    if !offered.iter().any(|o| o == ours) {
        return plain(
            StatusCode::FORBIDDEN,
            &format!("unable to upgrade: client offers {offered:?}, server accepts [{ours:?}]"),
        );
    }
    let Ok(permit) = sessions.try_acquire_owned() else {
        return too_many(&crid);
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let counted = crid.metrics.stream(request.kind());
    tokio::spawn(async move {
        let _permit = (permit, counted);
        let io = match upgrade.await {
            Ok(io) => hyper_util::rt::TokioIo::new(io),
            Err(e) => return tracing::debug!("streaming: upgrade failed: {e}"),
        };
        match request {
            Request::PortForward { pod } => {
                let session = super::websocket::tunnel(io, crid.settings.stream_idle_timeout).await;
                super::forward::serve(crid, pod, session).await
            }
            Request::Exec { io: sio, .. } | Request::Attach { io: sio, .. } => {
                let session =
                    super::websocket::remote_command(io, sio, crid.settings.stream_idle_timeout)
                        .await;
                super::remote::serve(crid, request, REMOTE_COMMAND, session).await
            }
        }
    });
    let mut r = switching("websocket");
    let h = r.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(
        &tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key),
    ) {
        h.insert("sec-websocket-accept", v);
    }
    h.insert(
        "sec-websocket-protocol",
        header::HeaderValue::from_static(ours),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_first_choice_that_crid_speaks_wins() {
        let offered = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            negotiate(
                &offered(&["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"]),
                &REMOTE_COMMAND_PROTOCOLS
            ),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate(&offered(&["channel.k8s.io"]), &REMOTE_COMMAND_PROTOCOLS),
            Some("channel.k8s.io")
        );
        assert_eq!(negotiate(&offered(&["x"]), &REMOTE_COMMAND_PROTOCOLS), None);
        assert_eq!(negotiate(&[], &[PORT_FORWARD_PROTOCOL]), None);
    }
}
