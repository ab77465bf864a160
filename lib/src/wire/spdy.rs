//! SPDY/3.1 framing, as kubelet, kubectl and crictl speak it for exec, attach and
//! port-forward (through moby/spdystream): the frame layouts of SPDY/3
//! (draft-mbelshe-httpbis-spdy-00) with 3.1's session-level WINDOW_UPDATE, and the
//! name/value header blocks, compressed with one zlib stream per direction for the
//! whole session, primed with SPDY/3's dictionary and flushed (Z_SYNC_FLUSH) after
//! every block.
//!
//! Frames are decoded from a buffer the caller fills and encoded into one it
//! drains; no I/O here.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::sync::OnceLock;

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// FLAG_FIN: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL (SYN_STREAM): the receiver sends nothing on it.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// A stream's send window before any WINDOW_UPDATE or SETTINGS (SPDY/3).
pub const INITIAL_WINDOW: u32 = 64 * 1024;
/// SETTINGS id of SETTINGS_INITIAL_WINDOW_SIZE.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// The largest frame payload accepted (control frames carry a few headers here).
pub const MAX_FRAME: usize = 1 << 20;
/// The largest header block, decompressed.
pub const MAX_HEADERS: usize = 256 << 10;

/// RST_STREAM status codes used here.
pub mod status {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 3;
    /// CANCEL.
    pub const CANCEL: u32 = 5;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 6;
    /// STREAM_IN_USE.
    pub const STREAM_IN_USE: u32 = 8;
}

/// A header block: names lowercase, a value with several parts joined by NUL.
pub type Headers = Vec<(String, String)>;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// Its id (odd from the client).
        stream_id: u32,
        /// The stream it belongs to (server push), else 0.
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// FIN, UNIDIRECTIONAL.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// Ends a stream abnormally.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why (see [`status`]).
        status: u32,
    },
    /// Session settings: (flags, id, value) entries.
    Settings {
        /// FLAG_SETTINGS_CLEAR_SETTINGS.
        flags: u8,
        /// The entries.
        entries: Vec<(u8, u32, u32)>,
    },
    /// A ping, answered with the same id.
    Ping {
        /// Its id.
        id: u32,
    },
    /// The session ends.
    GoAway {
        /// The last stream the sender handled.
        last_good: u32,
        /// 0 OK, 1 PROTOCOL_ERROR, 2 INTERNAL_ERROR.
        status: u32,
    },
    /// More headers on a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// More room to send on a stream (0: the whole session).
    WindowUpdate {
        /// The stream, or 0.
        stream_id: u32,
        /// How many more bytes.
        delta: u32,
    },
    /// Data on a stream.
    Data {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// The bytes.
        data: Bytes,
    },
    /// A control frame of a type this side does not know: ignored, as SPDY says.
    Unknown {
        /// Its type.
        kind: u16,
    },
}

/// The peer broke the protocol, or a header block does not (de)compress.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// A frame that cannot be.
    #[error("SPDY: {0}")]
    Protocol(String),
    /// zlib failed on a header block.
    #[error("SPDY header block: {0}")]
    Compression(String),
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// The header names SPDY/3's dictionary starts with, each with its 4-byte length in
/// front of it there.
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The rest of the dictionary: status codes and texts, dates, media types.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
    "charset=iso-8859-1,utf-,*,enq=0."
);

/// SPDY/3's zlib dictionary (1423 bytes).
pub fn dictionary() -> &'static [u8] {
    static D: OnceLock<Vec<u8>> = OnceLock::new();
    D.get_or_init(|| {
        let mut d = Vec::with_capacity(1423);
        for w in DICTIONARY_WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        d
    })
}

/// A session's two header compression contexts: frames in and frames out.
pub struct Codec {
    deflate: flate2::Compress,
    inflate: flate2::Decompress,
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new()
    }
}

impl Codec {
    /// Fresh contexts, as at the start of a session.
    pub fn new() -> Codec {
        let mut deflate = flate2::Compress::new(flate2::Compression::default(), true);
        // Only fails on a stream already in use; this one is new.
        let _ = deflate.set_dictionary(dictionary());
        Codec {
            deflate,
            inflate: flate2::Decompress::new(true),
        }
    }

    /// Appends `f` to `out`.
    pub fn encode(&mut self, f: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        let control = |out: &mut BytesMut, kind: u16, flags: u8, body: &[u8]| {
            out.put_u16(0x8000 | VERSION);
            out.put_u16(kind);
            out.put_u32(u32::from(flags) << 24 | body.len() as u32);
            out.put_slice(body);
        };
        let mut body = BytesMut::new();
        match f {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(associated_to & 0x7fff_ffff);
                body.put_u8((priority & 0x7) << 5);
                body.put_u8(0);
                body.put_slice(&self.compress(headers)?);
                control(out, SYN_STREAM, *flags, &body);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let kind = if matches!(f, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_slice(&self.compress(headers)?);
                control(out, kind, *flags, &body);
            }
            Frame::RstStream { stream_id, status } => {
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(*status);
                control(out, RST_STREAM, 0, &body);
            }
            Frame::Settings { flags, entries } => {
                body.put_u32(entries.len() as u32);
                for (f, id, value) in entries {
                    body.put_u32(u32::from(*f) << 24 | (id & 0x00ff_ffff));
                    body.put_u32(*value);
                }
                control(out, SETTINGS, *flags, &body);
            }
            Frame::Ping { id } => {
                body.put_u32(*id);
                control(out, PING, 0, &body);
            }
            Frame::GoAway { last_good, status } => {
                body.put_u32(last_good & 0x7fff_ffff);
                body.put_u32(*status);
                control(out, GOAWAY, 0, &body);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(delta & 0x7fff_ffff);
                control(out, WINDOW_UPDATE, 0, &body);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() >= 1 << 24 {
                    return Err(SpdyError::Protocol(format!(
                        "a data frame of {} bytes",
                        data.len()
                    )));
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(u32::from(*flags) << 24 | data.len() as u32);
                out.put_slice(data);
            }
            Frame::Unknown { kind } => {
                return Err(SpdyError::Protocol(format!(
                    "encoding a frame of unknown type {kind}"
                )))
            }
        }
        Ok(())
    }

    /// The next whole frame at the front of `buf`, removed from it; None until the
    /// buffer holds one.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (u32::from_be_bytes([0, buf[5], buf[6], buf[7]])) as usize;
        if len > MAX_FRAME {
            return Err(SpdyError::Protocol(format!("a frame of {len} bytes")));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let first = buf.get_u32();
        let flags_len = buf.get_u32();
        let flags = (flags_len >> 24) as u8;
        let mut body = buf.split_to(len).freeze();
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                flags,
                data: body,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Protocol(format!("version {version}, not 3")));
        }
        let kind = (first & 0xffff) as u16;
        let need = |n: usize, body: &Bytes| {
            if body.len() < n {
                Err(SpdyError::Protocol(format!(
                    "a frame of type {kind} with {} bytes, not {n}",
                    body.len()
                )))
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                need(10, &body)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let associated_to = body.get_u32() & 0x7fff_ffff;
                let priority = body.get_u8() >> 5;
                let _slot = body.get_u8();
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers: self.decompress(&body)?,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4, &body)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let headers = self.decompress(&body)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(8, &body)?;
                Frame::RstStream {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            SETTINGS => {
                need(4, &body)?;
                let n = body.get_u32() as usize;
                need(n.saturating_mul(8), &body)?;
                let entries = (0..n)
                    .map(|_| {
                        let head = body.get_u32();
                        ((head >> 24) as u8, head & 0x00ff_ffff, body.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need(4, &body)?;
                Frame::Ping { id: body.get_u32() }
            }
            GOAWAY => {
                need(4, &body)?;
                let last_good = body.get_u32() & 0x7fff_ffff;
                // SPDY/2 peers send no status.
                let status = if body.len() >= 4 { body.get_u32() } else { 0 };
                Frame::GoAway { last_good, status }
            }
            WINDOW_UPDATE => {
                need(8, &body)?;
                Frame::WindowUpdate {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    delta: body.get_u32() & 0x7fff_ffff,
                }
            }
            kind => Frame::Unknown { kind },
        }))
    }

    fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        raw.put_u32(headers.len() as u32);
        for (k, v) in headers {
            raw.put_u32(k.len() as u32);
            raw.put_slice(k.to_ascii_lowercase().as_bytes());
            raw.put_u32(v.len() as u32);
            raw.put_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before_in = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, flate2::FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            let used = (self.deflate.total_in() - before_in) as usize;
            input = &input[used..];
            // Done once all is in and the flush left spare room in the output.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    fn decompress(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut raw = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            raw.reserve(1024);
            let before_in = self.inflate.total_in();
            let r = self
                .inflate
                .decompress_vec(input, &mut raw, flate2::FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            match r {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
            if raw.len() > MAX_HEADERS {
                return Err(SpdyError::Protocol(format!(
                    "a header block over {MAX_HEADERS} bytes"
                )));
            }
            if input.is_empty() && raw.len() < raw.capacity() {
                break;
            }
        }
        parse_headers(&raw)
    }
}

fn parse_headers(mut raw: &[u8]) -> Result<Headers, SpdyError> {
    let bad = || SpdyError::Protocol("a truncated header block".into());
    let take = |raw: &mut &[u8]| -> Result<String, SpdyError> {
        if raw.len() < 4 {
            return Err(bad());
        }
        let n = raw.get_u32() as usize;
        if raw.len() < n {
            return Err(bad());
        }
        let s = String::from_utf8_lossy(&raw[..n]).into_owned();
        raw.advance(n);
        Ok(s)
    };
    if raw.len() < 4 {
        return Err(bad());
    }
    let n = raw.get_u32() as usize;
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let k = take(&mut raw)?;
        let v = take(&mut raw)?;
        out.push((k.to_ascii_lowercase(), v));
    }
    Ok(out)
}

/// The value of header `name` (lowercase), if there.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        use sha2::Digest;
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        let hex: String = sha2::Sha256::digest(d)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
        );
    }

    fn round_trip(frames: &[Frame]) {
        let (mut tx, mut rx) = (Codec::new(), Codec::new());
        let mut wire = BytesMut::new();
        for f in frames {
            tx.encode(f, &mut wire).unwrap();
        }
        // Fed a byte at a time: frames come out whole, in order, and only then.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = rx.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert!(buf.is_empty());
    }

    #[test]
    fn every_frame_round_trips_through_one_session_of_header_compression() {
        let h = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        round_trip(&[
            Frame::Settings {
                flags: 0,
                entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)],
            },
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: h(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 7,
                flags: FLAG_UNIDIRECTIONAL,
                headers: h(&[("streamtype", "stdout"), ("port", "80")]),
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: h(&[]),
            },
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::new(),
            },
            Frame::Headers {
                stream_id: 1,
                flags: FLAG_FIN,
                headers: h(&[("x", "a\0b")]),
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 65536,
            },
            Frame::Ping { id: 2 },
            Frame::RstStream {
                stream_id: 1,
                status: status::CANCEL,
            },
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
        ]);
    }

    #[test]
    fn the_wire_layout_is_the_specs() {
        let mut c = Codec::new();
        let mut out = BytesMut::new();
        c.encode(&Frame::Ping { id: 7 }, &mut out).unwrap();
        // Control bit and version 3, type 6, no flags, length 4, the id.
        assert_eq!(&out[..], &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]);
        out.clear();
        c.encode(
            &Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"ab"),
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 5, 1, 0, 0, 2, b'a', b'b']);
        out.clear();
        c.encode(
            &Frame::WindowUpdate {
                stream_id: 1,
                delta: 0x10000,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            &out[..],
            &[0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 1, 0, 0]
        );
    }

    #[test]
    fn the_control_frames_have_the_specs_layouts() {
        let layout = |f: Frame| {
            let mut out = BytesMut::new();
            Codec::new().encode(&f, &mut out).unwrap();
            // And back: what the spec's layout says is what decodes.
            let mut back = out.clone();
            assert_eq!(Codec::new().decode(&mut back).unwrap(), Some(f));
            out.to_vec()
        };
        // RST_STREAM (2.6.3): type 3, length 8, stream id, status code.
        assert_eq!(
            layout(Frame::RstStream {
                stream_id: 3,
                status: status::CANCEL
            }),
            [0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5]
        );
        // SETTINGS (2.6.4): type 4, the number of entries, each 8 bits of flags,
        // 24 of id and 32 of value.
        assert_eq!(
            layout(Frame::Settings {
                flags: 0,
                entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 0x20000)],
            }),
            [0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 7, 0, 2, 0, 0]
        );
        // GOAWAY (2.6.6): type 7, length 8, last good stream id, status code.
        assert_eq!(
            layout(Frame::GoAway {
                last_good: 9,
                status: 0
            }),
            [0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 0]
        );
    }

    /// The first three SYN_STREAMs of `crictl exec` (v1.36: client-go and
    /// moby/spdystream, Go's zlib) as they came over the wire: one compression
    /// context across the session, primed with the dictionary.
    #[test]
    fn client_gos_syn_streams_decode() {
        let wire: &[&[u8]] = &[
            &[
                0x80, 3, 0, 1, 0, 0, 0, 0x2a, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x78, 0xf9, 0xe3, 0xc6,
                0xa7, 0xc2, 0x62, 0x60, 0x60, 0x60, 0x04, 0xa7, 0xb3, 0x92, 0xa2, 0xd4, 0xc4, 0x5c,
                0x68, 0x51, 0xc2, 0x9a, 0x5a, 0x54, 0x94, 0x5f, 0x04, 0, 0, 0, 0xff, 0xff,
            ],
            &[
                0x80, 3, 0, 1, 0, 0, 0, 0x19, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0xc2, 0x2a, 0xc5, 0x56,
                0x5c, 0x92, 0x92, 0x5f, 0x5a, 0x02, 0, 0, 0, 0xff, 0xff,
            ],
            &[
                0x80, 3, 0, 1, 0, 0, 0, 0x15, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0xc2, 0x29, 0x97, 0x5a,
                0x54, 0x04, 0, 0, 0, 0xff, 0xff,
            ],
        ];
        let mut c = Codec::new();
        let mut got = Vec::new();
        for frame in wire {
            let mut buf = BytesMut::from(*frame);
            match c.decode(&mut buf).unwrap() {
                Some(Frame::SynStream {
                    stream_id, headers, ..
                }) => got.push((
                    stream_id,
                    header(&headers, "streamtype").map(str::to_string),
                )),
                other => panic!("{other:?}"),
            }
            assert!(buf.is_empty());
        }
        let want = |id, t: &str| (id, Some(t.to_string()));
        assert_eq!(
            got,
            [want(1, "error"), want(3, "stdout"), want(5, "stderr")]
        );
    }

    #[test]
    fn a_header_block_starts_with_a_zlib_header_naming_the_dictionary() {
        let mut c = Codec::new();
        let mut out = BytesMut::new();
        c.encode(
            &Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![],
            },
            &mut out,
        )
        .unwrap();
        let block = &out[12..];
        // CMF 0x78, FDICT set in FLG, then the dictionary's Adler-32.
        assert_eq!(block[0], 0x78);
        assert_ne!(block[1] & 0x20, 0);
        assert_eq!(&block[2..6], &adler32(dictionary()).to_be_bytes());
    }

    fn adler32(d: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for x in d {
            a = (a + u32::from(*x)) % 65521;
            b = (b + a) % 65521;
        }
        b << 16 | a
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut c = Codec::new();
        // Version 2.
        let mut b = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(c.decode(&mut b).is_err());
        // Too large.
        let mut b = BytesMut::from(&[0, 0, 0, 1, 0, 0xff, 0xff, 0xff][..]);
        assert!(c.decode(&mut b).is_err());
        // A SYN_STREAM whose header block is not zlib.
        let mut b = BytesMut::from(
            &[
                0x80, 3, 0, 1, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2,
            ][..],
        );
        assert!(c.decode(&mut b).is_err());
        // A short RST_STREAM.
        let mut b = BytesMut::from(&[0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(c.decode(&mut b).is_err());
        // An unknown control type is skipped.
        let mut b = BytesMut::from(&[0x80, 3, 0, 0x20, 0, 0, 0, 1, 9][..]);
        assert_eq!(
            c.decode(&mut b).unwrap(),
            Some(Frame::Unknown { kind: 0x20 })
        );
    }
}
