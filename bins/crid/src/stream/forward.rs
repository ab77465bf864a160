//! PortForward over SPDY (portforward.k8s.io): per forwarded connection the client
//! opens an error stream and a data stream with the same `requestID` and `port`;
//! crid connects to that port on the pod's loopback from a thread that entered the
//! pod's network namespace (a thread of its own, never an async worker, whose
//! namespace would then be wrong for everything else it runs) and copies both ways.
//! Any number of connections, to several ports, on one session.

use super::session::{Session, Stream};
use super::spdy;
use crate::Crid;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a pair's second stream may take to come.
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one PortForward session on the pod `pod`.
pub async fn serve(crid: Arc<Crid>, pod: String, mut session: Session) {
    let netns = match crid.store.pod(&pod) {
        Some(p) => p.lock().await.ns.get("net").cloned(),
        None => {
            session.close().await;
            return;
        }
    };
    let mut waiting: HashMap<String, (Option<Stream>, Option<Stream>, tokio::time::Instant)> =
        HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(s) = session.accept.recv().await {
        // Forwarded connections that ended are reaped as new ones come.
        while tasks.try_join_next().is_some() {}
        let port = spdy::header(&s.headers, "port").and_then(|p| p.parse::<u16>().ok());
        let kind = spdy::header(&s.headers, "streamtype").map(str::to_string);
        let (Some(port), Some(kind)) = (port.filter(|p| *p > 0), kind) else {
            s.tx.reset(spdy::status::CANCEL).await;
            continue;
        };
        if !s.tx.reply().await {
            break;
        }
        let id = spdy::header(&s.headers, "requestid")
            .map(str::to_string)
            .unwrap_or_else(|| {
                // Without request ids, a data stream follows its error stream.
                let base = if kind == "data" {
                    s.id.saturating_sub(2)
                } else {
                    s.id
                };
                base.to_string()
            });
        let now = tokio::time::Instant::now();
        waiting.retain(|_, (_, _, at)| now.duration_since(*at) < PAIR_TIMEOUT);
        let entry = waiting.entry(id.clone()).or_insert((None, None, now));
        match kind.as_str() {
            "error" => entry.0 = Some(s),
            "data" => entry.1 = Some(s),
            _ => {
                s.tx.reset(spdy::status::CANCEL).await;
                continue;
            }
        }
        if let (Some(_), Some(_), _) = entry {
            if let Some((Some(error), Some(data), _)) = waiting.remove(&id) {
                let netns = netns.clone();
                let pod = pod.clone();
                tasks.spawn(forward(netns, pod, port, error, data));
            }
        }
    }
    // The client is gone: what it forwarded goes too.
    tasks.abort_all();
    session.close().await;
}

/// One forwarded connection.
async fn forward(netns: Option<PathBuf>, pod: String, port: u16, error: Stream, mut data: Stream) {
    let tcp = match dial(netns, port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {pod}, uid : {e}");
            tracing::debug!("streaming: {msg}");
            error.tx.send(msg.as_bytes()).await;
            error.tx.close().await;
            data.tx.close().await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let to_pod = async {
        while let Some(d) = data.rx.recv().await {
            if wr.write_all(&d).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let tx = data.tx.clone();
    let from_pod = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !tx.send(&buf[..n]).await {
                        break;
                    }
                }
            }
        }
    };
    // The pod's side ending ends the connection; the client's end half-closes it,
    // and the pod has a second to answer what it was sent (as containerd does).
    tokio::pin!(to_pod);
    tokio::pin!(from_pod);
    tokio::select! {
        _ = &mut from_pod => {}
        _ = &mut to_pod => {
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut from_pod).await;
        }
    }
    error.tx.close().await;
    data.tx.close().await;
}

/// A TCP connection to `port` on the loopback of `netns` (the host's when None),
/// IPv4 first, then IPv6.
async fn dial(netns: Option<PathBuf>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("crid-portforward".into())
        .spawn(move || {
            let r = (|| {
                if let Some(ns) = &netns {
                    let f = std::fs::File::open(ns)?;
                    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)?;
                }
                let timeout = Duration::from_secs(5);
                let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
                std::net::TcpStream::connect_timeout(&v4, timeout)
                    .or_else(|e| std::net::TcpStream::connect_timeout(&v6, timeout).map_err(|_| e))
            })();
            let _ = tx.send(r);
        })?;
    let std = rx
        .await
        .map_err(|_| std::io::Error::other("the connecting thread died"))??;
    std.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std)
}
