//! Test certificates made with openssl: a CA, a server certificate for `localhost`
//! and 127.0.0.1, and a client certificate, all P-256 and good for a day.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The files of one CA and what it signed.
pub struct Certs {
    /// The directory they are in.
    pub dir: PathBuf,
}

impl Certs {
    /// A CA named `ca` with a server and a client certificate, in `dir`.
    pub fn make(dir: &Path, ca: &str) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        let c = Certs {
            dir: dir.to_path_buf(),
        };
        c.openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "1",
                "-subj",
            ],
            &format!("/CN={ca}"),
        );
        std::fs::write(
            dir.join("server.ext"),
            "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("client.ext"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for who in ["server", "client"] {
            c.openssl(
                &[
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{who}.key"),
                    "-out",
                    &format!("{who}.csr"),
                    "-subj",
                ],
                &format!("/CN={who}"),
            );
            c.openssl(
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{who}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-out",
                    &format!("{who}.crt"),
                    "-extfile",
                ],
                &format!("{who}.ext"),
            );
        }
        c
    }

    fn openssl(&self, args: &[&str], last: &str) {
        let mut cmd = Command::new("openssl");
        cmd.current_dir(&self.dir).args(args).arg(last);
        crate::run(cmd, Duration::from_secs(30)).ok();
    }

    /// A file of theirs: `ca.crt`, `server.key`, `client.crt`, ….
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}
