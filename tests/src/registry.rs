//! Debian's `docker-registry` (the CNCF distribution registry) on 127.0.0.1 at a
//! free port, storing into a temp dir; killed and removed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry.
pub struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// One HTTP GET on loopback; returns the status code.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Registry {
    /// Starts a registry. Panics, naming the binary, when it is not installed.
    pub fn start() -> Registry {
        let exe = "/usr/bin/docker-registry";
        assert!(
            std::path::Path::new(exe).exists(),
            "{exe} is missing: install Debian's docker-registry (make deps)"
        );
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("crikit-registry-")
                .tempdir()
                .expect("tempdir");
            let addr = format!("127.0.0.1:{}", free_port());
            let config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            );
            let cfg = dir.path().join("config.yml");
            std::fs::write(&cfg, config).expect("write registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
            let mut child = Command::new(exe)
                .arg("serve")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawning docker-registry");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken in between: try another
                }
                if http_status(&addr, "/v2/") == Some(200) {
                    return Registry {
                        child,
                        _dir: dir,
                        addr,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start on loopback");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
