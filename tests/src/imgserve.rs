//! imgserve started by a test, on a free loopback port; killed on drop.

use crate::bin;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running imgserve.
pub struct Server {
    child: Child,
    /// The `127.0.0.1:PORT` it printed.
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// imgserve over the store under `root`, with `extra` flags.
    pub fn start(root: &Path, extra: &[&str]) -> Server {
        Server::start_on(root, "127.0.0.1:0", extra)
    }

    /// [`Server::start`] listening on `listen`.
    pub fn start_on(root: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(bin("imgserve"))
            .arg("--root")
            .arg(root)
            .args(["--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting imgserve");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("imgserve's address");
        assert!(!line.is_empty(), "imgserve printed no address");
        Server {
            child,
            addr: line.trim().to_string(),
        }
    }
}
