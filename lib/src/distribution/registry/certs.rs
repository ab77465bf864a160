//! Per-registry certificates, as containers-certs.d(5) lays them out:
//! `DIR/HOST[:PORT]/*.crt` are PEM files of CAs trusted for that registry only,
//! besides the system's; `NAME.cert` with `NAME.key` is a client certificate and
//! its key, presented when the registry asks for one (mutual TLS). The first DIR
//! holding a directory for the host wins.

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
    /// A client certificate without its key, or a key without its certificate.
    #[error("{}: no {} next to it", have.display(), missing.display())]
    Unpaired {
        /// The file that is there.
        have: PathBuf,
        /// The file it needs.
        missing: PathBuf,
    },
    /// A client certificate and key that do not make an identity.
    #[error("client certificate {} with key {}: {reason}", cert.display(), key.display())]
    BadIdentity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
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
    /// The client certificate to present, from the first `NAME.cert` (by name)
    /// and its `NAME.key`.
    pub identity: Option<Identity>,
}

/// A client certificate chain and its private key.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// Both, PEM: the chain, then the key.
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
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
        identity: None,
    };
    for path in &names {
        // Every certificate needs its key and every key its certificate, as
        // containers-image checks.
        let partner = |ext: &str| {
            let other = path.with_extension(ext);
            match names.contains(&other) {
                true => Ok(other),
                false => Err(CertsError::Unpaired {
                    have: path.clone(),
                    missing: other,
                }),
            }
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => out.roots.extend(ca_file(path)?),
            Some("cert") => {
                let key = partner("key")?;
                if out.identity.is_none() {
                    out.identity = Some(identity(path, &key)?);
                } else {
                    tracing::warn!(
                        "{}: not used; {} is presented",
                        path.display(),
                        out.identity.as_ref().map_or(path, |i| &i.cert).display()
                    );
                }
            }
            Some("key") => {
                partner("cert")?;
            }
            _ => {}
        }
    }
    Ok(Some(out))
}

/// The client identity of `cert` and `key` (PEM), checked: a certificate chain,
/// a private key rustls can sign with, and the key the certificate is for.
pub fn identity(cert: &Path, key: &Path) -> Result<Identity, CertsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let bad = |reason: String| CertsError::BadIdentity {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("the certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(bad("no PEM certificate in the certificate file".into()));
    }
    let private =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(format!("the key file: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, private, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => bad("the key is not the certificate's".into()),
        other => bad(other.to_string()),
    })?;
    let mut pem = cert_pem;
    if !pem.ends_with(b"\n") {
        pem.push(b'\n');
    }
    pem.extend_from_slice(&key_pem);
    Ok(Identity {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        pem,
    })
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
        std::fs::write(b.join("reg.example:5000/notes.txt"), "x").unwrap();
        let dirs = [a.clone(), b.clone()];
        let got = for_host(&dirs, "reg.example:5000").unwrap().unwrap();
        assert_eq!(got.dir, b.join("reg.example:5000"));
        assert_eq!(got.roots, vec![der(CA); 2]);
        assert_eq!(got.roots[0].len(), 408);
        assert!(got.identity.is_none());

        std::fs::create_dir_all(a.join("reg.example:5000")).unwrap();
        let got = for_host(&dirs, "reg.example:5000").unwrap().unwrap();
        assert_eq!(got.dir, a.join("reg.example:5000"));
        assert!(got.roots.is_empty() && got.identity.is_none());

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

    /// A client certificate and its key, and a key of another, made with openssl.
    const CLIENT_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBojCCAUegAwIBAgIUOyxPW9q9hWN3/eq+o8VHaT1kfZUwCgYIKoZIzj0EAwIw
JTEjMCEGA1UEAwwaY3Jpa2l0IGNlcnRzLmQgY2xpZW50IHRlc3QwIBcNMjYxMjA3
MTMzMDI5WhgPMjEyNjExMTMxMzMwMjlaMCUxIzAhBgNVBAMMGmNyaWtpdCBjZXJ0
cy5kIGNsaWVudCB0ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAERqsFevFX
2xBt2I0Ptcs5oK5bcUOWPkggAy3CTBpD6N+O+z9QBTlah47hLDX9+xaTkCDij37g
AZJPc61hXq+IA6NTMFEwHQYDVR0OBBYEFFrA6IBtO8nCRqrmP5b/xtvO9UwuMB8G
A1UdIwQYMBaAFFrA6IBtO8nCRqrmP5b/xtvO9UwuMA8GA1UdEwEB/wQFMAMBAf8w
CgYIKoZIzj0EAwIDSQAwRgIhAJqpgx4Gj/HOcjb/OYteyaexCCINS+uzecayLtck
JSyyAiEA0FXLNUFeUjGq2tHRH66mfLyrnRd50Gj+NogK74r/qbc=
-----END CERTIFICATE-----
";
    const CLIENT_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgmPjbVL312ERdW1M+
pFGtsuKgrX/i2bHKnvZ15fPWRNyhRANCAARGqwV68VfbEG3YjQ+1yzmgrltxQ5Y+
SCADLcJMGkPo3477P1AFOVqHjuEsNf37FpOQIOKPfuABkk9zrWFer4gD
-----END PRIVATE KEY-----
";
    const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgTreo8UnwOTAUQTDO
vpNWOUQDctPcK46yhC0FO93v9VOhRANCAARfEvwUaeltiuqPKUa4GXU6NJUA7cDM
YX0HAxfRRGeKisU7KwrfhlIhbjahZBvy690XKXc0tcOuqnZMM8hSJWUA
-----END PRIVATE KEY-----
";

    #[test]
    fn client_certificates_pair_with_their_keys_or_fail_naming_the_files() {
        let t = tempfile::tempdir().unwrap();
        let dirs = [t.path().to_path_buf()];
        let h = t.path().join("reg.example");
        std::fs::create_dir_all(&h).unwrap();
        std::fs::write(h.join("ca.crt"), CA).unwrap();
        std::fs::write(h.join("me.cert"), CLIENT_CERT).unwrap();
        let e = for_host(&dirs, "reg.example").unwrap_err().to_string();
        let unpaired = |have: &str, missing: &str| {
            format!(
                "{}: no {} next to it",
                h.join(have).display(),
                h.join(missing).display()
            )
        };
        assert_eq!(e, unpaired("me.cert", "me.key"));

        std::fs::write(h.join("me.key"), OTHER_KEY).unwrap();
        let e = for_host(&dirs, "reg.example").unwrap_err().to_string();
        assert!(
            e.contains("me.cert with key ")
                && e.ends_with("me.key: the key is not the certificate's"),
            "{e}"
        );

        std::fs::write(h.join("me.key"), "not a key").unwrap();
        let e = for_host(&dirs, "reg.example").unwrap_err().to_string();
        assert!(e.contains("me.key: the key file: "), "{e}");

        std::fs::write(h.join("me.key"), CLIENT_KEY).unwrap();
        let got = for_host(&dirs, "reg.example").unwrap().unwrap();
        let id = got.identity.expect("an identity");
        assert_eq!((id.cert, id.key), (h.join("me.cert"), h.join("me.key")));
        assert_eq!(id.pem, format!("{CLIENT_CERT}{CLIENT_KEY}").into_bytes());
        assert_eq!(got.roots.len(), 1);

        std::fs::write(h.join("stray.key"), CLIENT_KEY).unwrap();
        let e = for_host(&dirs, "reg.example").unwrap_err().to_string();
        assert_eq!(e, unpaired("stray.key", "stray.cert"));
    }
}
