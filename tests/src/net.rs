//! Test networks picked free: a /24 of 10.0.0.0/8 that no address or route of the
//! host touches and no other test holds, and a host port nobody listens on.
//!
//! A subnet is held by a directory under the system temp dir, made with mkdir(2)
//! (atomic across processes) and removed on drop, so parallel tests and parallel
//! test binaries never meet; one that a killed run left behind is taken again once
//! its holder's pid is gone. And one plain HTTP GET, for the servers tests start.

use std::path::PathBuf;

/// One HTTP/1.1 GET of `path` from `addr` (`HOST:PORT`), read to its end within
/// `timeout`: the status code and the body (de-chunked). None when the server
/// cannot be reached or does not answer in HTTP.
pub fn http_get(addr: &str, path: &str, timeout: std::time::Duration) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some((
        code,
        if chunked {
            unchunk(body)
        } else {
            body.to_string()
        },
    ))
}

/// The body of a chunked HTTP response.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A /24 held for one test.
pub struct Subnet {
    /// `10.A.B` — the first three octets.
    pub prefix: String,
    hold: PathBuf,
}

impl Subnet {
    /// A free /24.
    pub fn pick() -> Subnet {
        let dir = std::env::temp_dir().join("crikit-test-subnets");
        std::fs::create_dir_all(&dir).expect("creating the subnet holds");
        let used = host_prefixes();
        let mut seed = rand_u32();
        for _ in 0..10_000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let (a, b) = (16 + (seed >> 24) % 200, (seed >> 16) & 0xff);
            let prefix = format!("10.{a}.{b}");
            if used.iter().any(|u| u == &prefix) {
                continue;
            }
            let hold = dir.join(&prefix);
            if std::fs::create_dir(&hold).is_err() && !stale(&hold) {
                continue;
            }
            let _ = std::fs::write(hold.join("pid"), std::process::id().to_string());
            return Subnet { prefix, hold };
        }
        panic!("no free /24 in 10.0.0.0/8");
    }

    /// `10.A.B.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}.0/24", self.prefix)
    }

    /// `10.A.B.N`.
    pub fn host(&self, n: u8) -> String {
        format!("{}.{n}", self.prefix)
    }
}

impl Drop for Subnet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.hold);
    }
}

/// A hold whose holder is gone is taken over.
fn stale(hold: &std::path::Path) -> bool {
    let pid = std::fs::read_to_string(hold.join("pid")).unwrap_or_default();
    let gone =
        !pid.trim().is_empty() && !std::path::Path::new(&format!("/proc/{}", pid.trim())).exists();
    gone && std::fs::write(hold.join("pid"), std::process::id().to_string()).is_ok()
}

/// The `10.A.B` prefixes of the host's IPv4 addresses and routes.
fn host_prefixes() -> Vec<String> {
    let mut out = vec![];
    for args in [&["-4", "-o", "addr"][..], &["-4", "route"][..]] {
        let text = std::process::Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for word in text.split_whitespace() {
            let addr = word.split('/').next().unwrap_or(word);
            let parts: Vec<&str> = addr.split('.').collect();
            if parts.len() == 4 && parts[0] == "10" {
                out.push(format!("10.{}.{}", parts[1], parts[2]));
            }
        }
    }
    out
}

fn rand_u32() -> u32 {
    use std::io::Read;
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    u32::from_le_bytes(b) ^ std::process::id()
}

/// A TCP port on the host that nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free port")
}
