//! A streaming client of the tests' own, for what crictl cannot show: a blocking
//! SPDY/3.1 client on crikit's framer (the upgrade, streams by `streamtype`, frames
//! per stream), and the remotecommand exec session on top of it.

use bytes::BytesMut;
use crikit::wire::spdy::{self, Codec, Frame};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a read waits before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// `http://HOST:PORT/PATH` as (HOST:PORT, /PATH).
pub fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    (host.to_string(), format!("/{path}"))
}

/// One SPDY session, as a client.
pub struct Spdy {
    tcp: TcpStream,
    codec: Codec,
    buf: BytesMut,
    next_id: u32,
    /// The subprotocol the server chose.
    pub protocol: String,
}

impl Spdy {
    /// Upgrades a connection to `url`, offering `protocols` (first preferred).
    pub fn connect(url: &str, protocols: &[&str]) -> Spdy {
        Spdy::try_connect(url, protocols).unwrap_or_else(|head| panic!("no upgrade: {head}"))
    }

    /// Like [`Spdy::connect`]; the response head when it is not a 101.
    pub fn try_connect(url: &str, protocols: &[&str]) -> Result<Spdy, String> {
        let (host, path) = split_url(url);
        let mut tcp = TcpStream::connect(&host).expect("connecting to the streaming server");
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        );
        for p in protocols {
            req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
        }
        req.push_str("Content-Length: 0\r\n\r\n");
        tcp.write_all(req.as_bytes()).unwrap();
        // The response head, byte by byte: SPDY frames follow it at once.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(tcp.read(&mut b).unwrap(), 1, "the server hung up: {head:?}");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head);
        }
        let protocol = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-stream-protocol-version")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        Ok(Spdy {
            tcp,
            codec: Codec::new(),
            buf: BytesMut::new(),
            next_id: 1,
            protocol,
        })
    }

    fn write(&mut self, f: &Frame) {
        let mut out = BytesMut::new();
        self.codec.encode(f, &mut out).unwrap();
        self.tcp.write_all(&out).unwrap();
    }

    /// Opens a stream with `headers`; its id.
    pub fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        self.write(&Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
        id
    }

    /// Data on stream `id`, FIN with `fin`.
    pub fn send(&mut self, id: u32, data: &[u8], fin: bool) {
        self.write(&Frame::Data {
            stream_id: id,
            flags: if fin { spdy::FLAG_FIN } else { 0 },
            data: bytes::Bytes::copy_from_slice(data),
        });
    }

    /// The next frame from the server (PINGs answered on the way); None once it
    /// closed the connection.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.codec.decode(&mut self.buf).expect("a SPDY frame") {
                if let Frame::Ping { id } = f {
                    self.write(&Frame::Ping { id });
                    continue;
                }
                return Some(f);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.tcp.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading from the streaming server: {e}"),
            }
        }
    }
}

/// What a remote command session wants: a terminal, stdin.
#[derive(Clone, Copy, Default)]
pub struct ExecIo {
    /// stdin.
    pub stdin: bool,
    /// A terminal (stdout only, and a resize stream).
    pub tty: bool,
}

/// A remote command session (exec or attach) over SPDY, as client-go opens it:
/// error, then stdin, stdout, stderr, resize.
pub struct RemoteCommand {
    /// The session.
    pub spdy: Spdy,
    /// Stream ids by type.
    pub streams: HashMap<&'static str, u32>,
    /// What has arrived, by stream type.
    pub got: HashMap<&'static str, Vec<u8>>,
    ended: Vec<u32>,
}

impl RemoteCommand {
    /// Connects to `url` with `protocol` and opens the streams `io` asks for.
    pub fn open(url: &str, protocol: &str, io: ExecIo) -> RemoteCommand {
        RemoteCommand::try_open(url, protocol, io)
            .unwrap_or_else(|head| panic!("no upgrade: {head}"))
    }

    /// Like [`RemoteCommand::open`]; the response head when the upgrade failed.
    pub fn try_open(url: &str, protocol: &str, io: ExecIo) -> Result<RemoteCommand, String> {
        let mut spdy = Spdy::try_connect(url, &[protocol])?;
        assert_eq!(spdy.protocol, protocol);
        let mut kinds = vec!["error"];
        if io.stdin {
            kinds.push("stdin");
        }
        kinds.push("stdout");
        if io.tty {
            kinds.push("resize");
        } else {
            kinds.push("stderr");
        }
        let mut streams = HashMap::new();
        for k in kinds {
            streams.insert(k, spdy.open(&[("streamtype", k)]));
        }
        Ok(RemoteCommand {
            spdy,
            streams,
            got: HashMap::new(),
            ended: Vec::new(),
        })
    }

    /// Writes `data` to the stream of type `kind`, ending it with `fin`.
    pub fn send(&mut self, kind: &str, data: &[u8], fin: bool) {
        let id = self.streams[kind];
        self.spdy.send(id, data, fin);
    }

    /// Sends a terminal size on the resize stream.
    pub fn resize(&mut self, width: u16, height: u16) {
        let line = format!("{{\"Width\":{width},\"Height\":{height}}}\n");
        self.send("resize", line.as_bytes(), false);
    }

    fn kind(&self, id: u32) -> Option<&'static str> {
        self.streams
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| *k)
    }

    /// Reads one frame and keeps what it carried; false once the session ended.
    fn step(&mut self) -> bool {
        match self.spdy.next_frame() {
            None | Some(Frame::GoAway { .. }) => false,
            Some(Frame::Data {
                stream_id,
                flags,
                data,
            }) => {
                if let Some(k) = self.kind(stream_id) {
                    self.got.entry(k).or_default().extend_from_slice(&data);
                }
                if flags & spdy::FLAG_FIN != 0 {
                    self.ended.push(stream_id);
                }
                true
            }
            Some(_) => true,
        }
    }

    /// Reads frames until `done` holds of what arrived, or the session ends;
    /// whether it held.
    pub fn read_until(
        &mut self,
        mut done: impl FnMut(&HashMap<&'static str, Vec<u8>>) -> bool,
    ) -> bool {
        while !done(&self.got) {
            if !self.step() {
                return done(&self.got);
            }
        }
        true
    }

    /// Reads to the end of the error stream; what it said.
    pub fn status(&mut self) -> String {
        let error = self.streams["error"];
        while !self.ended.contains(&error) && self.step() {}
        self.text("error")
    }

    /// What arrived on the stream of type `kind`, as text.
    pub fn text(&self, kind: &str) -> String {
        String::from_utf8_lossy(self.got.get(kind).map_or(&[][..], |v| v)).to_string()
    }
}
