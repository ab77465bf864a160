//! A server's side of a SPDY/3.1 session over an upgraded connection: the client
//! opens the streams (SYN_STREAM), this side accepts each (SYN_REPLY) and both
//! send data on it.
//!
//! One task reads and decodes frames, one encodes and writes them (header blocks
//! share a zlib stream per direction, so each direction has one coder). Data for a
//! stream waits in a small queue: a stream whose reader is slow holds back the
//! connection (TCP's flow control then reaches the client) rather than crid's
//! memory. SPDY windows are announced (WINDOW_UPDATE for what was read, as a peer
//! may honour them) but not waited for: spdystream, which every Kubernetes client
//! uses, never sends WINDOW_UPDATE.

use super::spdy::{self, Codec, Frame, Headers};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The most data put in one DATA frame.
pub const MAX_DATA: usize = 32 * 1024;
/// How long closing waits for the client to take what is still queued.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A stream the client opened.
pub struct Stream {
    /// Its id.
    pub id: u32,
    /// Its SYN_STREAM's headers.
    pub headers: Headers,
    /// What the client sends on it; None once it sent FIN (or reset it).
    pub rx: mpsc::Receiver<Bytes>,
    /// Sending on it.
    pub tx: StreamTx,
}

/// The sending half of a stream.
#[derive(Clone)]
pub struct StreamTx {
    id: u32,
    out: mpsc::Sender<Frame>,
}

impl StreamTx {
    /// Sending on stream `id` through the writer fed by `out`.
    pub fn new(id: u32, out: mpsc::Sender<Frame>) -> StreamTx {
        StreamTx { id, out }
    }

    /// Accepts the stream (SYN_REPLY).
    pub async fn reply(&self) -> bool {
        self.frame(Frame::SynReply {
            stream_id: self.id,
            flags: 0,
            headers: Vec::new(),
        })
        .await
    }

    /// Sends `data`, in frames of at most [`MAX_DATA`]; false once the session is gone.
    pub async fn send(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(MAX_DATA) {
            let f = Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: Bytes::copy_from_slice(chunk),
            };
            if !self.frame(f).await {
                return false;
            }
        }
        true
    }

    /// This side's last frame on the stream (DATA with FIN).
    pub async fn close(&self) -> bool {
        self.frame(Frame::Data {
            stream_id: self.id,
            flags: spdy::FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }

    /// Ends the stream abnormally.
    pub async fn reset(&self, status: u32) -> bool {
        self.frame(Frame::RstStream {
            stream_id: self.id,
            status,
        })
        .await
    }

    async fn frame(&self, f: Frame) -> bool {
        self.out.send(f).await.is_ok()
    }
}

/// The session: new streams arrive on `accept`; `goaway` ends it.
pub struct Session {
    /// Streams as the client opens them; None once the connection is gone.
    pub accept: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Frame>,
    last_stream: Arc<Mutex<u32>>,
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Serves SPDY on `io` (the connection after its HTTP upgrade); a session
    /// where no frame went either way for `idle` ends as if the client had gone.
    pub fn start<IO>(io: IO, idle: Duration) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel::<Frame>(64);
        let (accept_tx, accept_rx) = mpsc::channel::<Stream>(16);
        let last_stream = Arc::new(Mutex::new(0));
        let activity = Activity::new();
        let writer = tokio::spawn(write_frames(wr, out_rx, activity.clone()));
        let reader = tokio::spawn(read_frames(
            rd,
            out_tx.clone(),
            accept_tx,
            Arc::clone(&last_stream),
            activity.clone(),
        ));
        activity.watch(idle, reader.abort_handle());
        Session {
            accept: accept_rx,
            out: out_tx,
            last_stream,
            writer,
            reader,
        }
    }

    /// A session of another framing (WebSocket channels) that feeds `accept` and
    /// writes what `out` gets, through its own `writer` and `reader` tasks.
    pub fn from_parts(
        accept: mpsc::Receiver<Stream>,
        out: mpsc::Sender<Frame>,
        writer: tokio::task::JoinHandle<()>,
        reader: tokio::task::JoinHandle<()>,
    ) -> Session {
        Session {
            accept,
            out,
            last_stream: Arc::new(Mutex::new(0)),
            writer,
            reader,
        }
    }

    /// Ends the session: GOAWAY, what is queued written (for at most
    /// [`CLOSE_TIMEOUT`]), the connection closed.
    pub async fn close(self) {
        let last_good = *crikit::sync::lock(&self.last_stream);
        let _ = self
            .out
            .send(Frame::GoAway {
                last_good,
                status: 0,
            })
            .await;
        drop(self.out);
        self.reader.abort();
        // A client that stopped reading must not hold the session (and its slot):
        // what it has not taken in a few seconds is dropped with the connection.
        let mut writer = self.writer;
        if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
}

/// When a frame last went either way, for the idle timeout.
#[derive(Clone)]
pub struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity::new()
    }
}

impl Activity {
    /// Nothing has gone either way yet.
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Something went one way or the other.
    pub fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Ends `reader` (so the session's users see the client gone) once `idle` passed
    /// without a frame; the watch ends with the reader.
    pub fn watch(&self, idle: Duration, reader: tokio::task::AbortHandle) {
        let me = self.clone();
        tokio::spawn(async move {
            let every = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(30));
            loop {
                tokio::time::sleep(every).await;
                if reader.is_finished() {
                    return;
                }
                let last = Duration::from_millis(me.last_ms.load(Ordering::Relaxed));
                if me.start.elapsed().saturating_sub(last) >= idle {
                    tracing::debug!("streaming: a session idle for {idle:?} ends");
                    reader.abort();
                    return;
                }
            }
        });
    }
}

async fn write_frames<W: AsyncWrite>(wr: W, mut rx: mpsc::Receiver<Frame>, activity: Activity) {
    tokio::pin!(wr);
    let mut codec = Codec::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(f) = rx.recv().await {
        let goaway = matches!(f, Frame::GoAway { .. });
        if let Err(e) = codec.encode(&f, &mut buf) {
            tracing::debug!("streaming: {e}");
            break;
        }
        // Whatever else is queued goes in the same write.
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(f) => {
                    if codec.encode(&f, &mut buf).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        if wr.write_all(&buf).await.is_err() {
            return;
        }
        activity.touch();
        buf.clear();
        if goaway {
            break;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}

async fn read_frames<R: AsyncRead>(
    rd: R,
    out: mpsc::Sender<Frame>,
    accept: mpsc::Sender<Stream>,
    last_stream: Arc<Mutex<u32>>,
    activity: Activity,
) {
    tokio::pin!(rd);
    let mut codec = Codec::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    loop {
        let frame = match codec.decode(&mut buf) {
            Ok(Some(f)) => {
                activity.touch();
                f
            }
            Ok(None) => {
                buf.reserve(64 * 1024);
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
            Err(e) => {
                tracing::debug!("streaming: {e}");
                let last_good = *crikit::sync::lock(&last_stream);
                let _ = out
                    .send(Frame::GoAway {
                        last_good,
                        status: 1,
                    })
                    .await;
                return;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                let fresh = {
                    let mut last = crikit::sync::lock(&last_stream);
                    let fresh = stream_id > *last && stream_id % 2 == 1;
                    if fresh {
                        *last = stream_id;
                    }
                    fresh
                };
                if !fresh {
                    let _ = out
                        .send(Frame::RstStream {
                            stream_id,
                            status: spdy::status::PROTOCOL_ERROR,
                        })
                        .await;
                    continue;
                }
                let (tx, rx) = mpsc::channel(16);
                if flags & spdy::FLAG_FIN == 0 {
                    streams.insert(stream_id, tx);
                }
                let s = Stream {
                    id: stream_id,
                    headers,
                    rx,
                    tx: StreamTx {
                        id: stream_id,
                        out: out.clone(),
                    },
                };
                if accept.send(s).await.is_err() {
                    let _ = out
                        .send(Frame::RstStream {
                            stream_id,
                            status: spdy::status::REFUSED_STREAM,
                        })
                        .await;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let len = data.len() as u32;
                if let Some(tx) = streams.get(&stream_id) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        // Its reader is gone: nothing more is wanted on it.
                        streams.remove(&stream_id);
                    }
                }
                if flags & spdy::FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
                if len > 0 {
                    for id in [stream_id, 0] {
                        let _ = out
                            .send(Frame::WindowUpdate {
                                stream_id: id,
                                delta: len,
                            })
                            .await;
                    }
                }
            }
            Frame::RstStream { stream_id, .. } => {
                streams.remove(&stream_id);
            }
            Frame::Headers {
                stream_id, flags, ..
            } if flags & spdy::FLAG_FIN != 0 => {
                streams.remove(&stream_id);
            }
            Frame::Ping { id } => {
                let _ = out.send(Frame::Ping { id }).await;
            }
            Frame::GoAway { .. } => return,
            // Windows are not waited for (see above); settings and the rest ignored.
            _ => {}
        }
    }
}
