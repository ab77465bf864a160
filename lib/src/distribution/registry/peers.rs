//! Peers: other nodes' imgserve, asked for blobs before the registry.
//!
//! The peers are a file of `ADDR:PORT` lines (`#` starts a comment), or
//! `dns:NAME:PORT`: the A and AAAA records of NAME (a headless Service over a
//! DaemonSet has one per node), each with PORT. Either is read again at every
//! pull, so the list follows the cluster under a running crid. The list never
//! holds the node itself (its own imgserve address is left out of it); the
//! puller ranks that address with the others, so that where the node ranks first
//! its own imgserve, which fetches from upstream for every asker, is asked. For
//! each blob the peers are ranked by rendezvous hashing of (digest, peer), so
//! every node asks the same peer first for the same blob without talking to the
//! others. Peers are
//! reached over plain HTTP and sent no pod's credentials; what they send is
//! checked against the digest the registry's manifest gave, so a peer can cost
//! time, never correctness.

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
    /// `dns:` without a NAME:PORT after it.
    #[error("peers \"dns:{0}\" is not dns:NAME:PORT")]
    Dns(String),
    /// The peers' name does not resolve.
    #[error("resolving the peers' name {name}")]
    Resolve {
        /// The name.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// `peers` ranked for the blob `digest`, first asked first: by rendezvous
/// (highest random weight) hashing of (digest, peer). Every node computes the same
/// order without talking to the others, and a peer joining or leaving changes the
/// first choice only for the blobs that rank it first.
pub fn rank(peers: &[String], digest: &crate::distribution::digest::Digest) -> Vec<String> {
    let mut scored: Vec<(u64, &String)> = peers
        .iter()
        .map(|p| {
            let mut h = crate::distribution::digest::Hasher::new();
            h.update(digest.as_str().as_bytes());
            h.update(b"\0");
            h.update(p.as_bytes());
            let d = h.finish();
            let hex = d.hex();
            (u64::from_str_radix(&hex[..16], 16).unwrap_or(0), p)
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().map(|(_, p)| p.clone()).collect()
}

/// Where the peers come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file of `ADDR:PORT` lines.
    File(PathBuf),
    /// The addresses NAME resolves to, each with PORT.
    Dns {
        /// The name.
        name: String,
        /// The port of every peer.
        port: u16,
    },
}

/// Where the peers are listed, and which address is this node's.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    /// The source; `None`: no peers.
    pub source: Option<Source>,
    /// This node's imgserve, never asked.
    pub self_addr: Option<String>,
}

impl Peers {
    /// Peers from `spec` (a file, or `dns:NAME:PORT`), without `self_addr`; both
    /// checked (a file that exists is read; a name is not resolved yet).
    pub fn new(spec: Option<PathBuf>, self_addr: Option<String>) -> Result<Self, PeersError> {
        if let Some(s) = &self_addr {
            if !is_addr_port(s) {
                return Err(PeersError::SelfAddress(s.clone()));
            }
        }
        let source = match spec {
            None => None,
            Some(p) => match p.to_str().and_then(|s| s.strip_prefix("dns:")) {
                Some(rest) => {
                    let parsed = rest
                        .rsplit_once(':')
                        .and_then(|(n, port)| Some((n, port.parse::<u16>().ok()?)))
                        .filter(|(n, port)| *port != 0 && is_addr_port(&format!("{n}:{port}")));
                    let Some((name, port)) = parsed else {
                        return Err(PeersError::Dns(rest.to_string()));
                    };
                    Some(Source::Dns {
                        name: name.to_string(),
                        port,
                    })
                }
                None => Some(Source::File(p)),
            },
        };
        let peers = Peers { source, self_addr };
        if let Some(Source::File(path)) = &peers.source {
            peers.list_file(path)?;
        }
        Ok(peers)
    }

    /// Whether peers are configured.
    pub fn configured(&self) -> bool {
        self.source.is_some()
    }

    /// The peers now, without this node: the file's, in its order (none while it
    /// does not exist), or what the name resolves to.
    pub async fn list(&self) -> Result<Vec<String>, PeersError> {
        match &self.source {
            None => Ok(Vec::new()),
            Some(Source::File(path)) => self.list_file(path),
            Some(Source::Dns { name, port }) => {
                let addrs = tokio::net::lookup_host((name.as_str(), *port))
                    .await
                    .map_err(|source| PeersError::Resolve {
                        name: name.clone(),
                        source,
                    })?;
                let mut out: Vec<String> = Vec::new();
                for a in addrs {
                    let a = a.to_string();
                    if Some(a.as_str()) != self.self_addr.as_deref() && !out.contains(&a) {
                        out.push(a);
                    }
                }
                Ok(out)
            }
        }
    }

    fn list_file(&self, path: &Path) -> Result<Vec<String>, PeersError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            // Not written yet (whoever keeps it starts later): no peers for now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(PeersError::Read {
                    path: path.to_path_buf(),
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
    use crate::distribution::digest::Digest;

    #[test]
    fn rendezvous_ranking_agrees_spreads_and_moves_little() {
        let peers: Vec<String> = (1..=5).map(|i| format!("10.0.0.{i}:5050")).collect();
        let digests: Vec<Digest> = (0..400)
            .map(|i| Digest::of(format!("blob {i}").as_bytes()))
            .collect();
        let mut firsts = std::collections::HashMap::new();
        for d in &digests {
            let r = rank(&peers, d);
            // Every node, whatever order it lists its peers in, ranks alike.
            let mut shuffled = peers.clone();
            shuffled.reverse();
            assert_eq!(rank(&shuffled, d), r);
            assert_eq!(r.len(), peers.len());
            *firsts.entry(r[0].clone()).or_insert(0) += 1;
        }
        // Each peer is first for a fair share (80 of 400 expected).
        assert_eq!(firsts.len(), 5);
        assert!(
            firsts.values().all(|&n| (40..=120).contains(&n)),
            "{firsts:?}"
        );
        // A peer leaving moves only the blobs it ranked first.
        let fewer: Vec<String> = peers[1..].to_vec();
        for d in &digests {
            let before = rank(&peers, d);
            let after = rank(&fewer, d);
            if before[0] != peers[0] {
                assert_eq!(after[0], before[0]);
            }
        }
    }

    #[test]
    fn dns_specs() {
        let p = Peers::new(Some("dns:imgserve.kube-system.svc:5050".into()), None).unwrap();
        assert_eq!(
            p.source,
            Some(Source::Dns {
                name: "imgserve.kube-system.svc".into(),
                port: 5050
            })
        );
        for bad in ["dns:", "dns:name", "dns:name:0", "dns:na me:1", "dns::5050"] {
            let e = Peers::new(Some(bad.into()), None).unwrap_err();
            assert!(e.to_string().contains("is not dns:NAME:PORT"), "{bad}: {e}");
        }
    }

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
