//! TLS for the servers (crid's streaming server, imgserve): a certificate and key,
//! and optionally client certificates required and checked against a CA, on rustls
//! with ring's cryptography, as the registry client.
//!
//! The certificate and key are read again for a new connection when either file's
//! modification time or size changed, so a rotated pair serves the next session
//! without a restart; a pair that does not load keeps the one before it (and says so
//! in the log). The client CA is read once, at start.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A file of the TLS configuration that does not do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate or its key.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The client CA file.
    #[error(transparent)]
    ClientCa(#[from] crate::distribution::registry::certs::CertsError),
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The rustls server configuration for the certificate chain `cert` and its `key`
/// (PEM), with client certificates signed by `client_ca` required when given; the
/// files read and checked. `server` names the server in log lines.
pub fn server_config(
    server: &'static str,
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(Reloading::new(
        server,
        cert.to_path_buf(),
        key.to_path_buf(),
        &provider,
    )?);
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, e))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for der in crate::distribution::registry::certs::ca_file(ca)? {
                roots
                    .add(CertificateDer::from(der))
                    .map_err(|e| bad(ca, e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| bad(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_cert_resolver(resolver)))
}

/// Every PEM certificate in `path`, at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(|e| bad(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, e))?;
    if certs.is_empty() {
        return Err(bad(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The certificate chain and key, paired and checked.
fn load(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates(cert)?;
    let data = std::fs::read(key).map_err(|e| bad(key, e))?;
    let der = PrivateKeyDer::from_pem_slice(&data).map_err(|e| bad(key, e))?;
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| bad(key, e))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|_| bad(key, format!("is not the key of {}", cert.display())))?;
    Ok(Arc::new(certified))
}

/// What identifies a version of a file: its modification time and size.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The server's certificate, read again when its files change.
#[derive(Debug)]
struct Reloading {
    server: &'static str,
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: Mutex<((Stamp, Stamp), Arc<CertifiedKey>)>,
}

impl Reloading {
    fn new(
        server: &'static str,
        cert: PathBuf,
        key: PathBuf,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Reloading, TlsError> {
        let stamps = (stamp(&cert), stamp(&key));
        let loaded = load(&cert, &key, provider)?;
        Ok(Reloading {
            server,
            cert,
            key,
            provider: Arc::clone(provider),
            current: Mutex::new((stamps, loaded)),
        })
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut cur = crate::sync::lock(&self.current);
        let stamps = (stamp(&self.cert), stamp(&self.key));
        if stamps != cur.0 {
            match load(&self.cert, &self.key, &self.provider) {
                Ok(k) => {
                    tracing::info!("{}: {} reloaded", self.server, self.cert.display());
                    *cur = (stamps, k);
                }
                Err(e) => {
                    tracing::warn!("{}: keeping the certificate before: {e}", self.server);
                    cur.0 = stamps;
                }
            }
        }
        Some(Arc::clone(&cur.1))
    }
}
