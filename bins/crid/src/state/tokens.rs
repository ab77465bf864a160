//! The streaming URLs handed out and not yet used: Exec, Attach and PortForward
//! answer with `BASE/{exec,attach,portforward}/TOKEN`, and the streaming server
//! takes the request back by its token when the client connects.
//!
//! A token is random, good for one connection, and only for a minute; the table is
//! bounded (as kubelet's streaming server).

use crate::error::{CridError, Result};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a URL stays good.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// URLs handed out and not yet used, at most (as kubelet's streaming server).
pub const MAX_PENDING: usize = 1000;

/// What a URL was handed out for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A process in a running container.
    Exec {
        /// The container.
        container: String,
        /// The command.
        cmd: Vec<String>,
        /// Its standard streams, and a terminal.
        io: Io,
    },
    /// The container's own process.
    Attach {
        /// The container.
        container: String,
        /// The streams wanted, and whether the container has a terminal.
        io: Io,
        /// The end of the client's stdin closes the container's (StdinOnce).
        stdin_once: bool,
    },
    /// Ports in a pod's network namespace.
    PortForward {
        /// The pod.
        pod: String,
    },
}

impl Request {
    /// The path it is served at.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Exec { .. } => "exec",
            Request::Attach { .. } => "attach",
            Request::PortForward { .. } => "portforward",
        }
    }
}

/// The standard streams a remote command session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Io {
    /// Standard input.
    pub stdin: bool,
    /// Standard output.
    pub stdout: bool,
    /// Standard error (never with a terminal: it is the terminal's output).
    pub stderr: bool,
    /// A terminal.
    pub tty: bool,
}

/// The URLs handed out and not yet used.
#[derive(Default)]
pub struct Tokens {
    base: OnceLock<String>,
    pending: Mutex<HashMap<String, (Instant, Request)>>,
}

impl Tokens {
    /// Sets where the server listens (`http://HOST:PORT`), once.
    pub fn set_base(&self, base: String) {
        let _ = self.base.set(base);
    }

    /// A URL for `r`; None when no streaming server runs. More than
    /// [`MAX_PENDING`] unused ones at once are refused.
    pub fn url_for(&self, r: Request) -> Result<Option<String>> {
        let Some(base) = self.base.get() else {
            return Ok(None);
        };
        let token =
            super::new_id().map_err(CridError::io("reading /dev/urandom"))?[..32].to_string();
        let kind = r.kind();
        let now = Instant::now();
        let mut p = crikit::sync::lock(&self.pending);
        p.retain(|_, (at, _)| now.duration_since(*at) < TOKEN_TTL);
        if p.len() >= MAX_PENDING {
            return Err(CridError::TooMany(format!(
                "{MAX_PENDING} streaming URLs are waiting for their clients; try again later"
            )));
        }
        p.insert(token.clone(), (now, r));
        Ok(Some(format!("{base}/{kind}/{token}")))
    }

    /// The request behind `token` at `kind`'s path, used up; None for an unknown,
    /// used or expired one.
    pub fn take(&self, kind: &str, token: &str) -> Option<Request> {
        let mut p = crikit::sync::lock(&self.pending);
        let (at, r) = p.remove(token)?;
        (at.elapsed() < TOKEN_TTL && r.kind() == kind).then_some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_good_once_at_its_own_path_only() {
        let t = Tokens::default();
        let r = Request::PortForward { pod: "p".into() };
        assert_eq!(t.url_for(r.clone()).unwrap(), None, "no server, no URL");
        t.set_base("http://127.0.0.1:1".into());
        let url = t.url_for(r.clone()).unwrap().unwrap();
        let token = url.rsplit('/').next().unwrap().to_string();
        assert!(url.starts_with("http://127.0.0.1:1/portforward/"));
        assert_eq!(token.len(), 32);
        assert_eq!(t.take("exec", &token), None, "another path uses it up");
        let url = t.url_for(r.clone()).unwrap().unwrap();
        let token = url.rsplit('/').next().unwrap().to_string();
        assert_eq!(t.take("portforward", &token), Some(r));
        assert_eq!(t.take("portforward", &token), None, "used");
        assert_eq!(t.take("portforward", "nope"), None);
    }

    #[test]
    fn unused_urls_are_bounded() {
        let t = Tokens::default();
        t.set_base("http://127.0.0.1:1".into());
        let r = Request::PortForward { pod: "p".into() };
        let urls: Vec<String> = (0..MAX_PENDING)
            .map(|_| t.url_for(r.clone()).unwrap().unwrap())
            .collect();
        let e = t.url_for(r.clone()).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::ResourceExhausted);
        // One used makes room for one more.
        let token = urls[0].rsplit('/').next().unwrap();
        assert!(t.take("portforward", token).is_some());
        assert!(t.url_for(r).unwrap().is_some());
    }
}
