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
    /// A `.crt` file without a PEM certificate in it.
    #[error("{}: no PEM certificate in it", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
}

/// The certificate directories searched by default: the user's
/// `$XDG_CONFIG_HOME/containers/certs.d` (or `~/.config/…`) when not root, then
/// `/etc/containers/certs.d` and `/etc/docker/certs.d`.
pub fn default_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if !rustix::process::geteuid().is_root() {
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        if let Some(c) = config {
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
    /// The CA certificates of its `*.crt` files, one PEM block each, in file-name
    /// order.
    pub roots: Vec<Vec<u8>>,
    /// Whether it also holds a client certificate or key (`*.cert`, `*.key`).
    pub client_identity: bool,
}

/// The certificates for `host` (`name[:port]`, as in an image reference) from the
/// first of `dirs` that has a directory for it; None when none has.
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
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| read_err(&dir, e))?
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
            Some("crt") => {
                let data = std::fs::read(&path).map_err(|e| read_err(&path, e))?;
                let blocks = pem_certificates(&data);
                if blocks.is_empty() {
                    return Err(CertsError::NoCertificate { path });
                }
                out.roots.extend(blocks);
            }
            Some("cert") | Some("key") => out.client_identity = true,
            _ => {}
        }
    }
    Ok(Some(out))
}

/// The `CERTIFICATE` PEM blocks of `data`, each with its BEGIN and END lines.
fn pem_certificates(data: &[u8]) -> Vec<Vec<u8>> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(start) = memchr::memmem::find(rest, BEGIN) {
        let Some(len) = memchr::memmem::find(&rest[start..], END) else {
            break;
        };
        let end = start + len + END.len();
        let mut block = rest[start..end].to_vec();
        block.push(b'\n');
        out.push(block);
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn the_first_directory_with_the_host_wins_and_bundles_split() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir_all(b.join("reg.example:5000")).unwrap();
        std::fs::write(
            b.join("reg.example:5000/ca.crt"),
            format!("junk\n{CERT}{CERT}"),
        )
        .unwrap();
        std::fs::write(b.join("reg.example:5000/client.cert"), "x").unwrap();
        std::fs::write(b.join("reg.example:5000/notes.txt"), "x").unwrap();
        let dirs = [a.clone(), b.clone()];
        let got = for_host(&dirs, "reg.example:5000").unwrap().unwrap();
        assert_eq!(got.dir, b.join("reg.example:5000"));
        assert_eq!(got.roots, vec![CERT.as_bytes().to_vec(); 2]);
        assert!(got.client_identity);

        std::fs::create_dir_all(a.join("reg.example:5000")).unwrap();
        let got = for_host(&dirs, "reg.example:5000").unwrap().unwrap();
        assert_eq!(got.dir, a.join("reg.example:5000"));
        assert!(got.roots.is_empty() && !got.client_identity);

        assert_eq!(for_host(&dirs, "other.example").unwrap(), None);
        assert_eq!(for_host(&dirs, "..").unwrap(), None);
    }

    #[test]
    fn a_crt_file_without_a_certificate_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("h")).unwrap();
        std::fs::write(t.path().join("h/ca.crt"), "not pem").unwrap();
        let e = for_host(&[t.path().to_path_buf()], "h").unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
