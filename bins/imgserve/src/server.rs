//! HTTP/1.1 over TCP (plain or TLS): request heads read within limits and parsed by
//! httparse, persistent connections, and bodies sent from the file — by sendfile(2)
//! on plain connections, so blob bytes never pass through user space, and through a
//! fixed 64 KiB buffer under TLS. Memory per connection is bounded by the head
//! buffer and that one buffer, whatever the blob size; connections beyond
//! [`Limits::max_connections`] wait to be accepted.

use crate::api::{self, Body, Response};
use crate::auth::Auth;
use crate::view::Views;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};

/// Bounds on what a client may send and hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line and headers), bytes; 431 beyond it.
    pub max_head: usize,
    /// Longest request target, bytes; 414 beyond it.
    pub max_target: usize,
    /// Most headers in a request; 431 beyond it.
    pub max_headers: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// A client that sends no complete request head for this long, or takes nothing
    /// of an answer for this long, is dropped.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 << 10,
            max_target: 4096,
            max_headers: 64,
            max_connections: 512,
            idle: Duration::from_secs(60),
        }
    }
}

/// What every connection shares.
pub struct Shared {
    /// The store.
    pub views: Views,
    /// Who may pull.
    pub auth: Auth,
    /// Request limits.
    pub limits: Limits,
    /// TLS, when serving HTTPS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Fetches from upstream for peers, when peers are configured.
    pub fetcher: Option<Arc<crate::fetch::Fetcher>>,
}

/// Accepts connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(shared.limits.max_connections));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (sock, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: wait a moment rather than spin.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _permit = permit;
            let r = match &shared.tls {
                None => connection(Conn::Plain(sock), &shared, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(shared.limits.idle, acceptor.accept(sock)).await {
                        Ok(Ok(tls)) => connection(Conn::Tls(Box::new(tls)), &shared, peer).await,
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(io::ErrorKind::TimedOut.into()),
                    }
                }
            };
            if let Err(e) = r {
                tracing::debug!("{peer}: {e}");
            }
        });
    }
}

/// A client connection.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(buf).await,
            Conn::Tls(s) => s.write_all(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush().await,
            Conn::Tls(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Tls(s) => s.shutdown().await,
        }
    }

    /// Sends `len` bytes of `file` from `offset`; a client that takes nothing for
    /// `stall` fails it.
    async fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
        stall: Duration,
    ) -> io::Result<()> {
        match self {
            Conn::Plain(s) => sendfile(s, file, offset, len, stall).await,
            Conn::Tls(s) => copy_file(s.as_mut(), file, offset, len, stall).await,
        }
    }

    /// Ends a connection whose client may still be sending (a request body, the
    /// rest of an oversized head): the write side is shut, and what arrives is read
    /// and dropped for a moment, so the kernel does not answer it with a reset that
    /// could destroy the response before the client reads it.
    async fn linger(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.shutdown()).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut sink = [0u8; 4096];
        let mut total = 0usize;
        while total < 1 << 20 {
            match tokio::time::timeout_at(deadline, self.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => total += n,
                _ => break,
            }
        }
    }
}

/// How far ahead of the sender a blob is read from disk.
const READAHEAD: u64 = 64 << 20;

/// Asks the kernel to read a blob ahead of the sender, a window at a time
/// (POSIX_FADV_WILLNEED): a cold blob streams at the disk's pace rather than at
/// that of the default readahead.
struct Readahead {
    advised: u64,
    end: u64,
}

impl Readahead {
    fn new(offset: u64, end: u64) -> Readahead {
        Readahead {
            advised: offset,
            end,
        }
    }

    fn advise(&mut self, file: &std::fs::File, off: u64) {
        if off + READAHEAD / 2 < self.advised || self.advised >= self.end {
            return;
        }
        let from = self.advised.max(off);
        let to = (off + READAHEAD).min(self.end);
        // Queuing the reads may itself wait on the device.
        let _ = tokio::task::block_in_place(|| {
            rustix::fs::fadvise(
                file,
                from,
                std::num::NonZeroU64::new(to - from),
                rustix::fs::Advice::WillNeed,
            )
        });
        self.advised = to;
    }
}

fn stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")
}

/// sendfile(2) from `file` to the socket, waiting for room in its buffer.
async fn sendfile(
    s: &TcpStream,
    file: &std::fs::File,
    offset: u64,
    len: u64,
    stall: Duration,
) -> io::Result<()> {
    let mut off = offset;
    let end = offset + len;
    let mut ahead = Readahead::new(offset, end);
    while off < end {
        ahead.advise(file, off);
        let want = usize::try_from(end - off)
            .unwrap_or(usize::MAX)
            .min(READAHEAD as usize);
        let sent = loop {
            tokio::time::timeout(stall, s.writable())
                .await
                .map_err(|_| stalled())??;
            // On the worker: handing each call to a blocking thread cost a third
            // more CPU and three times the memory under twenty clients, and the
            // readahead window keeps the pages in memory before sendfile wants them
            // (only a cold blob's first pages are waited for).
            match s.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(s.as_fd(), file.as_fd(), Some(&mut off), want)
                    .map_err(io::Error::from)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => break r?,
            }
        };
        if sent == 0 {
            // The file is shorter than it was: the client must not take a short
            // body for a whole one, so the connection ends here.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being sent",
            ));
        }
    }
    Ok(())
}

/// Copies from `file` through one fixed buffer (TLS has to see the bytes).
async fn copy_file<W: AsyncWrite + Unpin>(
    w: &mut W,
    file: &std::fs::File,
    offset: u64,
    len: u64,
    stall: Duration,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 << 10];
    let mut off = offset;
    let end = offset + len;
    let mut ahead = Readahead::new(offset, end);
    while off < end {
        ahead.advise(file, off);
        let want = ((end - off) as usize).min(buf.len());
        // Reads of a page-cached file are short; a cold one waits on the disk.
        let n = tokio::task::block_in_place(|| file.read_at(&mut buf[..want], off))?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being sent",
            ));
        }
        tokio::time::timeout(stall, w.write_all(&buf[..n]))
            .await
            .map_err(|_| stalled())??;
        off += n as u64;
    }
    Ok(())
}

/// Why a request head could not be taken.
enum HeadError {
    /// Answer this status, then close.
    Status(u16, &'static str),
    /// The connection ended or failed: nothing to answer.
    Gone(Option<io::Error>),
}

/// Serves requests on one connection until the client closes it, asks to, or sends
/// something that ends it.
async fn connection(
    mut conn: Conn,
    shared: &Shared,
    client: std::net::SocketAddr,
) -> io::Result<()> {
    let limits = &shared.limits;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let head_len = match read_head(&mut conn, &mut buf, limits).await {
            Ok(n) => n,
            Err(HeadError::Gone(e)) => return e.map_or(Ok(()), Err),
            Err(HeadError::Status(status, message)) => {
                let r = api::protocol_error(status, message);
                write_response(&mut conn, r, true, limits.idle).await?;
                conn.linger().await;
                return Ok(());
            }
        };
        let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(&buf[..head_len]);
        let (method, target, version) = match (parsed, req.method, req.path, req.version) {
            (Ok(httparse::Status::Complete(_)), Some(m), Some(p), Some(v)) => (m, p, v),
            // read_head parsed it whole already.
            _ => {
                let r = api::protocol_error(400, "malformed request");
                write_response(&mut conn, r, true, limits.idle).await?;
                conn.linger().await;
                return Ok(());
            }
        };
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
        };
        let connection_hdr = header("Connection").unwrap_or("").to_ascii_lowercase();
        // A request body is never read (no endpoint takes one): the connection ends
        // after the answer, so its bytes are never taken for a request.
        let lengths: Vec<&str> = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("Content-Length"))
            .map(|h| std::str::from_utf8(h.value).unwrap_or("?").trim())
            .collect();
        if lengths.windows(2).any(|w| w[0] != w[1]) {
            // RFC 9112 6.3: conflicting lengths are unrecoverable framing.
            let r = api::protocol_error(400, "conflicting Content-Length headers");
            write_response(&mut conn, r, true, limits.idle).await?;
            conn.linger().await;
            return Ok(());
        }
        let has_body = header("Transfer-Encoding").is_some() || lengths.iter().any(|l| *l != "0");
        // HTTP/1.0 clients get one answer per connection.
        let close = version == 0 || connection_hdr.contains("close") || has_body;
        let response = if target.len() > limits.max_target {
            api::protocol_error(414, "request target too long")
        } else {
            let request = api::Request {
                method,
                target,
                range: header("Range"),
                authorization: header("Authorization"),
            };
            let views = &shared.views;
            let auth = &shared.auth;
            // Opening and stat'ing the files is the only blocking work.
            let r = tokio::task::block_in_place(|| api::handle(views, auth, &request));
            match (&shared.fetcher, &r.missing_blob) {
                (Some(f), Some(missing)) if f.serves(client.ip()).await => f
                    .serve(missing)
                    .await
                    .with_header("Docker-Distribution-API-Version", "registry/2.0"),
                _ => r,
            }
        };
        tracing::info!(
            method,
            target = %target.chars().take(200).collect::<String>(),
            status = response.status,
            bytes = response.body.len(),
            "request"
        );
        // Any pipelined bytes after this head stay for the next request.
        buf.drain(..head_len);
        write_response(&mut conn, response, close, limits.idle).await?;
        if has_body {
            conn.linger().await;
            return Ok(());
        }
        if close {
            return Ok(());
        }
    }
}

/// Reads until `buf` holds a whole request head; its length.
async fn read_head(
    conn: &mut Conn,
    buf: &mut Vec<u8>,
    limits: &Limits,
) -> Result<usize, HeadError> {
    let deadline = tokio::time::Instant::now() + limits.idle;
    loop {
        // Parsed as it arrives: bytes that are no HTTP (a TLS ClientHello from a
        // client trying HTTPS first, as Go's registry clients do) are answered at
        // once, not after the head timeout.
        if !buf.is_empty() {
            let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
            match httparse::Request::new(&mut headers).parse(buf) {
                Ok(httparse::Status::Complete(n)) => return Ok(n),
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(HeadError::Status(431, "too many headers"))
                }
                Err(_) => return Err(HeadError::Status(400, "malformed request")),
            }
        }
        if buf.len() >= limits.max_head {
            return Err(HeadError::Status(431, "request head too large"));
        }
        let mut chunk = [0u8; 4096];
        let room = (limits.max_head - buf.len()).min(chunk.len());
        let n = match tokio::time::timeout_at(deadline, conn.read(&mut chunk[..room])).await {
            Err(_) if buf.is_empty() => return Err(HeadError::Gone(None)),
            Err(_) => return Err(HeadError::Status(408, "request head took too long")),
            Ok(Err(e)) => return Err(HeadError::Gone(Some(e))),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(HeadError::Gone(None));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

async fn write_response(
    conn: &mut Conn,
    r: Response,
    close: bool,
    stall: Duration,
) -> io::Result<()> {
    use std::fmt::Write as _;
    let mut head = String::with_capacity(512);
    let _ = write!(head, "HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n", r.length());
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    // Every write is bounded: a client that stops reading loses the connection.
    let bounded =
        |r: Result<io::Result<()>, tokio::time::error::Elapsed>| r.map_err(|_| stalled())?;
    match r.body {
        Body::Empty => bounded(tokio::time::timeout(stall, conn.write_all(head.as_bytes())).await)?,
        Body::Bytes(b) => {
            let mut all = head.into_bytes();
            all.extend_from_slice(&b);
            bounded(tokio::time::timeout(stall, conn.write_all(&all)).await)?;
        }
        Body::File { file, offset, len } => {
            bounded(tokio::time::timeout(stall, conn.write_all(head.as_bytes())).await)?;
            conn.send_file(&file, offset, len, stall).await?;
        }
        Body::Growing(mut g) => {
            bounded(tokio::time::timeout(stall, conn.write_all(head.as_bytes())).await)?;
            // Bytes go out as they arrive; a fetch that fails cuts the body short,
            // which the client sees and counts as this source failing.
            let mut buf = vec![0u8; 64 << 10];
            let (mut at, end) = (g.offset, g.offset + g.len);
            while at < end {
                let n = g.read_at(&mut buf, at).await?;
                if n == 0 {
                    break;
                }
                bounded(tokio::time::timeout(stall, conn.write_all(&buf[..n])).await)?;
                at += n as u64;
            }
        }
    }
    bounded(tokio::time::timeout(stall, conn.flush()).await)
}
