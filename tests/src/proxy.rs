//! A small fault-injecting HTTP proxy on loopback in front of the real registry.
//!
//! Each client connection carries one request: the proxy forwards it upstream with
//! `Connection: close`, reads the whole response, and passes it back — or, when a
//! [`Fault`] rule matches the request path, answers with an error status, flips a
//! byte, cuts the body short, replaces the body, stalls, or trickles the bytes.
//! With [`Proxy::with_token_auth`] it also plays a registry's token server: requests
//! without a valid bearer token get a 401 challenge pointing at its `/token`.
//! With [`Proxy::with_basic_challenge`] it plays a mirror that wants Basic
//! credentials: requests without any get a 401 Basic challenge, the others go
//! through. It records each request's Authorization header, so a test sees who
//! was sent which credentials.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to a matching response.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this HTTP status with a small body, without asking upstream.
    Status(u16),
    /// Flip one byte in the middle of the body.
    Corrupt,
    /// Send the full headers but only this fraction (0..1) of the body, then close.
    Truncate(f64),
    /// Replace the body (Content-Length adjusted, digest header dropped).
    Body(Vec<u8>),
    /// Read the request, then say nothing for this long and close.
    Stall(Duration),
    /// Send the body at about this many bytes per second.
    Throttle(u64),
    /// Wait this long, then forward the request as usual.
    Delay(Duration),
}

#[derive(Debug, Clone)]
struct Rule {
    path_contains: String,
    method: Option<String>,
    fault: Fault,
    remaining: Option<usize>,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// GET, HEAD, …
    pub method: String,
    /// The request path.
    pub path: String,
    /// The Range header, if any.
    pub range: Option<String>,
    /// The Authorization header, if any.
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
    auth: Option<(String, String)>,
    basic_challenge: bool,
}

/// A running proxy; stopped on drop.
pub struct Proxy {
    /// `127.0.0.1:PORT` to point clients at.
    pub addr: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const TOKEN: &str = "crikit-test-token";

impl Proxy {
    /// Starts a proxy in front of `upstream` (`HOST:PORT`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, up, me) = (
            state.clone(),
            stop.clone(),
            upstream.to_string(),
            addr.clone(),
        );
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, up, me) = (st.clone(), up.clone(), me.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &me, &st);
                });
            }
        });
        Proxy {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Requires `user`/`password` through a bearer-token flow.
    pub fn with_token_auth(self, user: &str, password: &str) -> Proxy {
        self.lock().auth = Some((user.into(), password.into()));
        self
    }

    /// Answers requests that carry no Authorization header with a 401 Basic
    /// challenge; forwards the others, whatever they carry.
    pub fn with_basic_challenge(self) -> Proxy {
        self.lock().basic_challenge = true;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crikit::sync::lock(&self.state)
    }

    /// Applies `fault` to requests whose path contains `path_contains`, `times`
    /// times (None: always).
    pub fn fault(&self, path_contains: &str, fault: Fault, times: Option<usize>) {
        self.fault_method(None, path_contains, fault, times);
    }

    /// Like [`Proxy::fault`], only for one HTTP method.
    pub fn fault_method(
        &self,
        method: Option<&str>,
        path_contains: &str,
        fault: Fault,
        times: Option<usize>,
    ) {
        self.lock().rules.push(Rule {
            path_contains: path_contains.into(),
            method: method.map(String::from),
            fault,
            remaining: times,
        });
    }

    /// Removes all fault rules.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
        if buf.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
    Ok(buf)
}

fn respond(s: &mut TcpStream, status: u16, extra: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status} Fault\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    )?;
    s.write_all(body)
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    me: &str,
    state: &Mutex<State>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = read_head(&mut client)?;
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (fault, auth, basic_challenge) = {
        let mut st = crikit::sync::lock(state);
        st.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            range: header("Range"),
            authorization: header("Authorization"),
        });
        let auth = st.auth.clone();
        let basic_challenge = st.basic_challenge;
        let mut fault = None;
        for r in st.rules.iter_mut() {
            let method_ok = r.method.as_deref().is_none_or(|m| m == method);
            if method_ok && path.contains(&r.path_contains) && r.remaining != Some(0) {
                if let Some(n) = r.remaining.as_mut() {
                    *n -= 1;
                }
                fault = Some(r.fault.clone());
                break;
            }
        }
        (fault, auth, basic_challenge)
    };
    if let Some((user, pass)) = auth {
        if path.starts_with("/token") {
            let want = format!("Basic {}", b64(&format!("{user}:{pass}")));
            if header("Authorization").as_deref() == Some(want.as_str()) {
                let body =
                    format!(r#"{{"token":"{TOKEN}","access_token":"{TOKEN}","expires_in":300}}"#);
                return respond(&mut client, 200, "", body.as_bytes());
            }
            return respond(
                &mut client,
                401,
                "",
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
            );
        }
        if header("Authorization").as_deref() != Some(&format!("Bearer {TOKEN}")) {
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"crikit-test\"\r\n"
            );
            return respond(
                &mut client,
                401,
                &challenge,
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
        }
    }
    if basic_challenge && header("Authorization").is_none() {
        return respond(
            &mut client,
            401,
            "WWW-Authenticate: Basic realm=\"mirror\"\r\n",
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
    }
    match &fault {
        Some(Fault::Status(code)) => {
            return respond(
                &mut client,
                *code,
                "",
                br#"{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}"#,
            );
        }
        Some(Fault::Stall(d)) => {
            std::thread::sleep(*d);
            return client.shutdown(Shutdown::Both);
        }
        Some(Fault::Delay(d)) => std::thread::sleep(*d),
        _ => {}
    }
    // Forward upstream, one request per connection.
    let mut up = TcpStream::connect(upstream)?;
    let mut req = format!("{first}\r\n");
    for (k, v) in &headers {
        if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("authorization") {
            continue;
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    if let Some(len) = header("Content-Length").and_then(|l| l.parse::<u64>().ok()) {
        std::io::copy(&mut (&mut client).take(len), &mut up)?;
    }
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(resp.len());
    let (rhead, body) = resp.split_at(split);
    let mut rhead = String::from_utf8_lossy(rhead).to_string();
    let mut body = body.to_vec();
    match fault {
        Some(Fault::Corrupt) if !body.is_empty() => {
            let i = body.len() / 2;
            body[i] ^= 0xff;
        }
        Some(Fault::Body(b)) => {
            body = b;
            rhead = rhead
                .split("\r\n")
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    !l.starts_with("content-length:") && !l.starts_with("docker-content-digest:")
                })
                .collect::<Vec<_>>()
                .join("\r\n");
            rhead = format!(
                "{}\r\nContent-Length: {}\r\n\r\n",
                rhead.trim_end(),
                body.len()
            );
        }
        Some(Fault::Truncate(frac)) => {
            client.write_all(rhead.as_bytes())?;
            let n = ((body.len() as f64) * frac) as usize;
            client.write_all(&body[..n.min(body.len())])?;
            client.flush()?;
            return client.shutdown(Shutdown::Both);
        }
        Some(Fault::Throttle(bps)) => {
            client.write_all(rhead.as_bytes())?;
            let chunk = (bps / 20).max(1) as usize;
            for c in body.chunks(chunk) {
                client.write_all(c)?;
                std::thread::sleep(Duration::from_millis(50));
            }
            return Ok(());
        }
        _ => {}
    }
    client.write_all(rhead.as_bytes())?;
    client.write_all(&body)?;
    client.flush()
}
