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
        c.new_key(&["-x509", "-days", "1", "-out", "ca.crt"], "ca", ca);
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
            c.new_key(&["-out", &format!("{who}.csr")], who, who);
            let (csr, crt, ext) = (
                format!("{who}.csr"),
                format!("{who}.crt"),
                format!("{who}.ext"),
            );
            c.openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ]);
        }
        c
    }

    /// `openssl req` with a new P-256 key in NAME.key, for the subject CN=`cn`.
    fn new_key(&self, args: &[&str], name: &str, cn: &str) {
        let key = format!("{name}.key");
        let subject = format!("/CN={cn}");
        let mut all = vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ];
        all.extend(["-nodes", "-keyout", &key, "-subj", &subject]);
        all.extend(args);
        self.openssl(&all);
    }

    fn openssl(&self, args: &[&str]) {
        let mut cmd = Command::new("openssl");
        cmd.current_dir(&self.dir).args(args);
        crate::run(cmd, Duration::from_secs(30)).ok();
    }

    /// A file of theirs: `ca.crt`, `server.key`, `client.crt`, ….
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}
