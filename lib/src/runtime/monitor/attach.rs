//! The attach protocol of ctrmon's attach socket, shared by ctrmon, crid and tests.
//!
//! A `SOCK_STREAM` unix socket; any number of clients. Every message, both ways, is
//! one frame: a kind byte, a big-endian `u32` payload length, the payload.
//!
//! | kind | direction | payload |
//! |---|---|---|
//! | 0 `STDIN` | client → ctrmon | bytes for the container's stdin (ignored without `--stdin`) |
//! | 1 `STDOUT` | ctrmon → client | container output |
//! | 2 `STDERR` | ctrmon → client | container output |
//! | 3 `EXIT` | ctrmon → client | the exit file's JSON, sent last before ctrmon closes |
//! | 4 `CLOSE_STDIN` | client → ctrmon | empty: the container's stdin reaches EOF |
//! | 5 `RESIZE` | client → ctrmon | `u16` rows, `u16` columns (big-endian); with a terminal |
//! | 6 `REOPEN_LOG` | client → ctrmon | empty: reopen the log file (as SIGHUP does) |
//! | 7 `LOG_REOPENED` | ctrmon → client | the answer to `REOPEN_LOG`, to its sender only: empty once the new file is open, else the error |
//!
//! With a terminal (`--tty`) all output comes as `STDOUT`, and `CLOSE_STDIN` sends the
//! terminal's EOF character (^D) instead of closing anything.
//!
//! Output is sent from the moment a client connects (no replay: the log has the
//! past). A client that cannot keep up (over [`MAX_BACKLOG`] unsent bytes) is dropped
//! rather than slowing the container.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Container stdin data.
pub const STDIN: u8 = 0;
/// Container stdout.
pub const STDOUT: u8 = 1;
/// Container stderr.
pub const STDERR: u8 = 2;
/// The exit status (JSON), last frame.
pub const EXIT: u8 = 3;
/// Close the container's stdin.
pub const CLOSE_STDIN: u8 = 4;
/// Terminal size.
pub const RESIZE: u8 = 5;
/// Reopen the log file.
pub const REOPEN_LOG: u8 = 6;
/// The log file was reopened (empty payload) or could not be (the error).
pub const LOG_REOPENED: u8 = 7;
/// How long [`Client::reopen_log`] waits for ctrmon's answer.
pub const REOPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest payload accepted in one frame.
pub const MAX_FRAME: u32 = 1 << 20;
/// Unsent bytes after which a slow client is dropped.
pub const MAX_BACKLOG: usize = 4 << 20;

/// Encodes one frame.
pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + payload.len());
    f.push(kind);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Splits complete frames off the front of `buf`; leaves a partial one in place.
/// Fails on a frame over [`MAX_FRAME`].
pub fn decode(buf: &mut Vec<u8>) -> io::Result<Vec<(u8, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while buf.len() - pos >= 5 {
        let len = u32::from_be_bytes([buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]]);
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("attach frame of {len} bytes"),
            ));
        }
        let end = pos + 5 + len as usize;
        if buf.len() < end {
            break;
        }
        out.push((buf[pos], buf[pos + 5..end].to_vec()));
        pos = end;
    }
    buf.drain(..pos);
    Ok(out)
}

/// A unix socket path that fits `sun_path`: long paths (a 64-digit container id
/// under a deep run directory) are reached through `/proc/self/fd/N/NAME`, with N
/// an `O_PATH` descriptor of their directory, held by the returned guard for as
/// long as the path is used.
pub fn short_path(path: &Path) -> io::Result<(Option<std::os::fd::OwnedFd>, std::path::PathBuf)> {
    if path.as_os_str().len() < 100 {
        return Ok((None, path.to_path_buf()));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "socket path has no name"))?;
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    use std::os::fd::AsRawFd;
    let short = Path::new("/proc/self/fd")
        .join(fd.as_raw_fd().to_string())
        .join(name);
    Ok((Some(fd), short))
}

/// A client of an attach socket.
pub struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<(u8, Vec<u8>)>,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> io::Result<Client> {
        let (_dir, short) = short_path(path)?;
        Ok(Client {
            stream: UnixStream::connect(short)?,
            buf: Vec::new(),
            pending: Default::default(),
        })
    }

    /// Sends bytes to the container's stdin.
    pub fn stdin(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(&encode(STDIN, data))
    }

    /// Closes the container's stdin.
    pub fn close_stdin(&mut self) -> io::Result<()> {
        self.stream.write_all(&encode(CLOSE_STDIN, &[]))
    }

    /// Asks for a terminal size.
    pub fn resize(&mut self, rows: u16, cols: u16) -> io::Result<()> {
        let mut p = rows.to_be_bytes().to_vec();
        p.extend_from_slice(&cols.to_be_bytes());
        self.stream.write_all(&encode(RESIZE, &p))
    }

    /// Asks ctrmon to reopen its log file and waits until it has: when this returns
    /// Ok, output goes to the new file. Output frames that arrive meanwhile are
    /// dropped (this client is for the request alone).
    pub fn reopen_log(&mut self) -> io::Result<()> {
        self.stream.write_all(&encode(REOPEN_LOG, &[]))?;
        self.stream.set_read_timeout(Some(REOPEN_TIMEOUT))?;
        let answer = loop {
            match self.next_frame() {
                Ok(Some((LOG_REOPENED, payload))) => break payload,
                Ok(Some((EXIT, _))) | Ok(None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the container exited before its log was reopened",
                    ))
                }
                Ok(Some(_)) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("ctrmon did not answer within {}s", REOPEN_TIMEOUT.as_secs()),
                    ))
                }
                Err(e) => return Err(e),
            }
        };
        self.stream.set_read_timeout(None)?;
        if answer.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(
                String::from_utf8_lossy(&answer).into_owned(),
            ))
        }
    }

    /// The next frame from ctrmon; `None` once it closed the connection.
    pub fn next_frame(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Ok(Some(f));
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
            self.pending.extend(decode(&mut self.buf)?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let mut all = encode(STDOUT, b"hello");
        all.extend(encode(CLOSE_STDIN, b""));
        all.extend(encode(STDERR, &[7u8; 300]));
        for cut in 0..all.len() {
            let mut buf = all[..cut].to_vec();
            let mut got = decode(&mut buf).unwrap();
            buf.extend_from_slice(&all[cut..]);
            got.extend(decode(&mut buf).unwrap());
            assert!(buf.is_empty());
            assert_eq!(got.len(), 3, "cut at {cut}");
            assert_eq!(got[0], (STDOUT, b"hello".to_vec()));
            assert_eq!(got[1], (CLOSE_STDIN, Vec::new()));
            assert_eq!(got[2].1.len(), 300);
        }
        let mut huge = vec![STDIN, 0xff, 0xff, 0xff, 0xff];
        assert!(decode(&mut huge).is_err());
    }
}
