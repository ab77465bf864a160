//! WebSocket clients (crictl `-r websocket`, critest `-websocket-*`, kubectl through
//! an apiserver that speaks WebSocket to nodes):
//! - Exec and Attach with `v5.channel.k8s.io`: every binary message is a channel
//!   byte (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize) and its payload;
//!   the client's `[255, N]` closes channel N (crid ends them all with the
//!   WebSocket's close, 1000, which is what clients read). The channels become the same [`Stream`]s a SPDY
//!   session gives (with the channel as stream id), so one pump serves both.
//! - PortForward with `SPDY/3.1+portforward.k8s.io`: the binary messages carry a SPDY
//!   session's bytes, one continuous stream across messages, run as any other.

use super::session::{Activity, Session, Stream, StreamTx};
use super::spdy::Frame;
use super::Io;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The remote command subprotocol crid serves over WebSocket.
pub const REMOTE_COMMAND: &str = "v5.channel.k8s.io";
/// The port-forward one: SPDY tunnelled through the WebSocket.
pub const PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

const CLOSE: u8 = 255;

/// The channels of a v5 session for `io`, by stream type.
fn channels(io: Io) -> Vec<(u8, &'static str)> {
    let mut c = vec![(3, "error")];
    if io.stdin {
        c.push((0, "stdin"));
    }
    if io.stdout {
        c.push((1, "stdout"));
    }
    if io.stderr {
        c.push((2, "stderr"));
    }
    if io.tty {
        c.push((4, "resize"));
    }
    c
}

/// A v5 session on `io` (the upgraded connection), as a [`Session`] whose streams
/// (the channels `sio` asks for) are there from the start; no message either way
/// for `idle` ends it as if the client had gone.
pub async fn remote_command<IO>(io: IO, sio: Io, idle: std::time::Duration) -> Session
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (sink, stream) = ws.split();
    let (out_tx, out_rx) = mpsc::channel::<Frame>(64);
    let (accept_tx, accept_rx) = mpsc::channel::<Stream>(8);
    let mut inbound = HashMap::new();
    for (ch, kind) in channels(sio) {
        let (tx, rx) = mpsc::channel(16);
        if matches!(kind, "stdin" | "resize") {
            inbound.insert(ch, tx);
        }
        let s = Stream {
            id: u32::from(ch),
            headers: vec![("streamtype".into(), kind.into())],
            rx,
            tx: StreamTx::new(u32::from(ch), out_tx.clone()),
        };
        // The queue holds them all: it is as long as there are channels.
        let _ = accept_tx.try_send(s);
    }
    let activity = Activity::new();
    let seen = activity.clone();
    let writer = tokio::spawn(async move {
        let mut sink = sink;
        let mut rx = out_rx;
        while let Some(f) = rx.recv().await {
            match f {
                // A channel's end (FIN) sends nothing: client-go reads no close
                // signal from the server, and the WebSocket's own close (1000) ends
                // every channel at once.
                Frame::Data {
                    stream_id, data, ..
                } if !data.is_empty() => {
                    let mut m = Vec::with_capacity(data.len() + 1);
                    m.push(stream_id as u8);
                    m.extend_from_slice(&data);
                    if sink.send(Message::binary(m)).await.is_err() {
                        return;
                    }
                    seen.touch();
                }
                Frame::GoAway { .. } => return close(sink).await,
                _ => {}
            }
        }
    });
    let seen = activity.clone();
    let reader = tokio::spawn(async move {
        let mut stream = stream;
        let _accept = accept_tx; // closed when the client goes
        while let Some(Ok(msg)) = stream.next().await {
            seen.touch();
            let data = match msg {
                Message::Binary(d) => d,
                Message::Close(_) => break,
                _ => continue,
            };
            match data.first() {
                Some(&CLOSE) => {
                    if let Some(ch) = data.get(1) {
                        inbound.remove(ch);
                    }
                }
                Some(ch) => {
                    if let Some(tx) = inbound.get(ch) {
                        if tx.send(data.slice(1..)).await.is_err() {
                            inbound.remove(ch);
                        }
                    }
                }
                None => {}
            }
        }
    });
    activity.watch(idle, reader.abort_handle());
    Session::from_parts(accept_rx, out_tx, writer, reader)
}

/// A SPDY session tunnelled through the WebSocket on `io`: its binary messages in
/// order are the session's bytes.
pub async fn tunnel<IO>(io: IO, idle: std::time::Duration) -> Session
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut sink, mut stream) = ws.split();
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Binary(d) if wr.write_all(&d).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        close(sink).await
    });
    Session::start(ours, idle)
}

/// Ends the WebSocket normally (1000), which clients read as the end of every channel.
async fn close<S>(mut sink: S)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = sink.close().await;
}
