//! Debian's `docker-registry` (the CNCF distribution registry) on 127.0.0.1 at a
//! free port, storing into a temp dir; killed and removed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// For a TLS registry, the PEM file of the CA that signed its certificate.
    pub ca: Option<std::path::PathBuf>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// One HTTP GET on loopback; returns the status code.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    crate::net::http_get(addr, path, Duration::from_secs(2)).map(|(code, _)| code)
}

impl Registry {
    /// Pushes `img` as `repo:1`.
    pub fn push(&self, repo: &str, img: &crate::image::Image) -> crate::image::Pushed {
        crate::image::push(&self.addr, repo, "1", img)
    }

    /// Where it keeps what is pushed: another registry may serve it too.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Starts a registry on plain HTTP. Panics, naming the binary, when it is not
    /// installed.
    pub fn start() -> Registry {
        Registry::launch(None, None)
    }

    /// A second registry serving this one's storage over TLS, with a certificate
    /// for 127.0.0.1 from a CA of its own ([`Registry::ca`]): push to the first,
    /// pull from this one.
    pub fn tls_twin(&self) -> Registry {
        Registry::launch(Some(&self.data_dir()), None)
    }

    /// [`Registry::tls_twin`] that requires a client certificate signed by a CA of
    /// the PEM file `client_ca` (docker-registry's `http.tls.clientcas`).
    pub fn mtls_twin(&self, client_ca: &std::path::Path) -> Registry {
        Registry::launch(Some(&self.data_dir()), Some(client_ca))
    }

    fn launch(tls_over: Option<&std::path::Path>, client_ca: Option<&std::path::Path>) -> Registry {
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
            let data = tls_over.map_or_else(|| dir.path().join("data"), |d| d.to_path_buf());
            let mut config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                data.display()
            );
            let ca = tls_over.map(|_| {
                let (cert, key) = make_certificate(dir.path());
                config.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                ));
                if let Some(ca) = client_ca {
                    config.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
                }
                dir.path().join("ca.pem")
            });
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
            // A TLS server answers a plain HTTP request with 400.
            let ready = if ca.is_some() { 400 } else { 200 };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken in between: try another
                }
                // Still ours: another process may have taken the port meanwhile.
                if http_status(&addr, "/v2/") == Some(ready) && matches!(child.try_wait(), Ok(None))
                {
                    return Registry {
                        child,
                        dir,
                        addr,
                        ca,
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

/// A CA (`dir/ca.pem`) and a certificate it signed for 127.0.0.1, made with the
/// openssl command; returns the certificate and key files.
fn make_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("running openssl (make deps installs it)");
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            // Named after its directory: CAs of two registries never share a name.
            &[
                "-subj",
                &format!(
                    "/CN=crikit test CA {}",
                    dir.file_name().unwrap_or_default().to_string_lossy()
                ),
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "key.pem",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("san.cnf");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
    ]);
    (dir.join("cert.pem"), dir.join("key.pem"))
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
