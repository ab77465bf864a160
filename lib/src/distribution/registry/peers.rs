//! Peers: other nodes' imgserve, asked for blobs before the registry.
//!
//! A peer list is a file of `ADDR:PORT` lines (`#` starts a comment), read again
//! at every pull so that whoever keeps it (a DaemonSet, a config manager) can
//! change it under a running crid. A node never counts itself: its own imgserve
//! address is left out. Peers are reached over plain HTTP and sent no pod's
//! credentials; what they send is checked against the digest the registry's
//! manifest gave, so a peer can cost time, never correctness.

use std::path::{Path, PathBuf};

/// A peer list that does not do.
#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    /// The file cannot be read.
    #[error("reading the peer list {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `ADDR:PORT`.
    #[error("peer list {}, line {line}: {text:?} is not ADDR:PORT", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// Its line number, from 1.
        line: usize,
        /// What the line says.
        text: String,
    },
    /// The node's own address is not `ADDR:PORT`.
    #[error("the node's own address {0:?} is not ADDR:PORT")]
    SelfAddress(String),
}

/// Where the peers are listed, and which address is this node's.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    /// The `ADDR:PORT` file; `None`: no peers.
    pub file: Option<PathBuf>,
    /// This node's imgserve, never asked.
    pub self_addr: Option<String>,
}

impl Peers {
    /// A peer list from `file`, without `self_addr`; both checked.
    pub fn new(file: Option<PathBuf>, self_addr: Option<String>) -> Result<Self, PeersError> {
        if let Some(s) = &self_addr {
            if !is_addr_port(s) {
                return Err(PeersError::SelfAddress(s.clone()));
            }
        }
        let peers = Peers { file, self_addr };
        peers.list()?;
        Ok(peers)
    }

    /// Whether a peer file is configured.
    pub fn configured(&self) -> bool {
        self.file.is_some()
    }

    /// The peers as the file lists them now, in its order, without this node; none
    /// while the file does not exist.
    pub fn list(&self) -> Result<Vec<String>, PeersError> {
        let Some(path) = &self.file else {
            return Ok(Vec::new());
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            // Not written yet (whoever keeps it starts later): no peers for now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(PeersError::Read {
                    path: path.clone(),
                    source,
                })
            }
        };
        parse(path, &text, self.self_addr.as_deref())
    }
}

fn parse(path: &Path, text: &str, self_addr: Option<&str>) -> Result<Vec<String>, PeersError> {
    let mut out: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if !is_addr_port(l) {
            return Err(PeersError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                text: l.chars().take(80).collect(),
            });
        }
        if Some(l) != self_addr && !out.iter().any(|p| p == l) {
            out.push(l.to_string());
        }
    }
    Ok(out)
}

/// `HOST:PORT`, `IPV4:PORT` or `[IPV6]:PORT`: no scheme, no path, a port.
fn is_addr_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return false;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_self_and_duplicates() {
        let p = Path::new("/etc/peers");
        let text = "# nodes\n10.0.0.1:5050\n\n 10.0.0.2:5050 \nnode-3.example:5050\n[fd00::4]:5050\n10.0.0.1:5050\n";
        assert_eq!(
            parse(p, text, Some("10.0.0.2:5050")).unwrap(),
            ["10.0.0.1:5050", "node-3.example:5050", "[fd00::4]:5050"]
        );
        for bad in [
            "10.0.0.1",
            "http://10.0.0.1:5050",
            "10.0.0.1:5050/x",
            "10.0.0.1:0",
            "10.0.0.1:70000",
            "[zz]:5050",
            ":5050",
            "a b:5050",
        ] {
            let e = parse(p, &format!("10.0.0.9:1\n{bad}\n"), None).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("peer list /etc/peers, line 2: {bad:?} is not ADDR:PORT")
            );
        }
    }
}
