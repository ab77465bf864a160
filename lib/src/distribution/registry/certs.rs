//! Per-registry CA certificates, as containers-certs.d(5) lays them out:
//! `DIR/HOST[:PORT]/*.crt` are PEM files of CAs trusted for that registry only,
//! besides the system's. The first DIR holding a directory for the host wins.

use std::path::{Path, PathBuf};

/// Errors reading a registry's certificate directory.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file or directory that cannot be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A CA file without a PEM certificate in it.
    #[error("{}: no PEM certificate in it", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A CA file with a certificate that does not parse.
    #[error("{}: certificate {index}: {reason}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Which certificate in it, from 1.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The certificate directories searched by default: the user's
/// `$XDG_CONFIG_HOME/containers/certs.d` (or `~/.config/…`) when not root, then
/// `/etc/containers/certs.d` and `/etc/docker/certs.d`.
pub fn default_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if !crate::paths::is_root() {
        if let Some(c) = crate::paths::config_home() {
            dirs.push(c.join("containers/certs.d"));
        }
    }
    dirs.push(PathBuf::from("/etc/containers/certs.d"));
    dirs.push(PathBuf::from("/etc/docker/certs.d"));
    dirs
}

/// What a registry's certificate directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCerts {
    /// The directory (`DIR/HOST[:PORT]`).
    pub dir: PathBuf,
    /// The CA certificates of its `*.crt` files (DER, each checked to make a trust
    /// anchor), in file-name order.
    pub roots: Vec<Vec<u8>>,
    /// Whether it also holds a client certificate or key (`*.cert`, `*.key`).
    pub client_identity: bool,
}

/// The certificates for `host` (`name[:port]`, as in an image reference) from the
/// first of `dirs` that has a directory for it; None when none has, or when that
/// directory may not be read (a user's pull next to root's certs.d), as
/// containers-image skips it.
pub fn for_host(dirs: &[PathBuf], host: &str) -> Result<Option<HostCerts>, CertsError> {
    // A host is one path component; anything else never names a directory here.
    if host.is_empty() || host == "." || host == ".." || host.contains('/') {
        return Ok(None);
    }
    let Some(dir) = dirs.iter().map(|d| d.join(host)).find(|d| d.is_dir()) else {
        return Ok(None);
    };
    let read_err = |path: &Path, source| CertsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!("{}: skipped: {e}", dir.display());
            return Ok(None);
        }
        Err(e) => return Err(read_err(&dir, e)),
    };
    let mut names: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()).map_err(|e| read_err(&dir, e)))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut out = HostCerts {
        dir: dir.clone(),
        roots: Vec::new(),
        client_identity: false,
    };
    for path in names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => out.roots.extend(ca_file(&path)?),
            Some("cert") | Some("key") => out.client_identity = true,
            _ => {}
        }
    }
    Ok(Some(out))
}

/// The CA certificates of the PEM file `path`: the DER of each, checked to make a
/// trust anchor; at least one.
pub fn ca_file(path: &Path) -> Result<Vec<Vec<u8>>, CertsError> {
    let data = std::fs::read(path).map_err(|source| CertsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let roots = trust_anchors(&data).map_err(|(index, reason)| CertsError::BadCertificate {
        path: path.to_path_buf(),
        index,
        reason,
    })?;
    if roots.is_empty() {
        return Err(CertsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

/// The DER of each PEM `CERTIFICATE` in `data`, each checked to make a trust
/// anchor; on failure, which one (from 1) and why.
fn trust_anchors(data: &[u8]) -> Result<Vec<Vec<u8>>, (usize, String)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut out = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(data).enumerate() {
        let cert = cert.map_err(|e| (i + 1, e.to_string()))?;
        rustls::RootCertStore::empty()
            .add(cert.clone())
            .map_err(|e| (i + 1, e.to_string()))?;
        out.push(cert.to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed P-256 CA made for these tests with openssl.
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBlDCCATmgAwIBAgIUU2neHHJhUjmFUQ+960Siyt7JPW4wCgYIKoZIzj0EAwIw
HjEcMBoGA1UEAwwTY3Jpa2l0IGNlcnRzLmQgdGVzdDAgFw0yNjExMjcwMjM2NDFa
GA8yMTI2MTEwMzAyMzY0MVowHjEcMBoGA1UEAwwTY3Jpa2l0IGNlcnRzLmQgdGVz
dDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABFFAmLux5yq1pxuvwb78xcT21fUV
9VpatUD5WnHX3vYXTBlBQtc2FVeUGrsk92UHhU5Hf1ckc3Hs0ptTBA5nw8OjUzBR
MB0GA1UdDgQWBBR947x8CcyhSBL51wZXV1J2RxW9LDAfBgNVHSMEGDAWgBR947x8
CcyhSBL51wZXV1J2RxW9LDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kA
MEYCIQC3S0HEZ92RGCmUngpsOjYR+4x+DvWCtB9Bb81zp+wuGAIhAMZ2XxT7/Mcq
mXkvgWMu2dRFWrC5feun7eKXuM/ZR8uT
-----END CERTIFICATE-----
";

    fn der(pem: &str) -> Vec<u8> {
        trust_anchors(pem.as_bytes()).unwrap().remove(0)
    }

    #[test]
    fn the_first_directory_with_the_host_wins_and_bundles_split() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir_all(b.join("reg.example:5000")).unwrap();
        std::fs::write(b.join("reg.example:5000/ca.crt"), format!("junk\n{CA}{CA}")).unwrap();
        std::fs::write(b.join("reg.example:5000/client.cert"), "x").unwrap();
        std::fs::write(b.join("reg.example:5000/notes.txt"), "x").unwrap();
        let dirs = [a.clone(), b.clone()];
        let got = for_host(&dirs, "reg.example:5000").unwrap().unwrap();
        assert_eq!(got.dir, b.join("reg.example:5000"));
        assert_eq!(got.roots, vec![der(CA); 2]);
        assert_eq!(got.roots[0].len(), 408);
        assert!(got.client_identity);

        std::fs::create_dir_all(a.join("reg.example:5000")).unwrap();
        let got = for_host(&dirs, "reg.example:5000").unwrap().unwrap();
        assert_eq!(got.dir, a.join("reg.example:5000"));
        assert!(got.roots.is_empty() && !got.client_identity);

        assert_eq!(for_host(&dirs, "other.example").unwrap(), None);
        assert_eq!(for_host(&dirs, "..").unwrap(), None);
    }

    #[test]
    fn crt_files_without_a_usable_certificate_are_errors_naming_them() {
        let t = tempfile::tempdir().unwrap();
        let dirs = [t.path().to_path_buf()];
        std::fs::create_dir_all(t.path().join("h")).unwrap();
        std::fs::write(t.path().join("h/ca.crt"), "not pem").unwrap();
        let e = for_host(&dirs, "h").unwrap_err().to_string();
        assert!(e.ends_with("h/ca.crt: no PEM certificate in it"), "{e}");

        // Well-formed PEM whose DER is not a certificate: the second one here.
        let junk = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
        std::fs::write(t.path().join("h/ca.crt"), format!("{CA}{junk}")).unwrap();
        let e = for_host(&dirs, "h").unwrap_err().to_string();
        assert!(e.contains("h/ca.crt: certificate 2: "), "{e}");
    }
}
