//! What can go wrong in a pull, which failures are worth retrying, and how a
//! failed request is named.

use crate::distribution::digest::Digest;
use crate::distribution::layout::LayoutError;
use crate::distribution::reference;
use crate::distribution::registry::auth::AuthError;
use crate::distribution::registry::http::{Client, HttpError};
use crate::distribution::registry::registries::RegistriesError;
use crate::distribution::registry::signatures::Verdict;

/// What kind of failure an error is; binaries map this to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The repository, tag, digest or platform does not exist.
    NotFound,
    /// The registry or the network failed, or sent something wrong.
    Registry,
    /// The request itself is wrong (bad reference, bad configuration).
    Usage,
    /// Anything else (local disk, store).
    Other,
    /// The signature policy does not let the image in.
    Refused,
}

/// Errors from pulling an image.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry says the repository, tag or blob does not exist.
    #[error("pulling {image}: {registry} answered {status}: {message}")]
    NotFound {
        /// The image being pulled.
        image: String,
        /// The registry host.
        registry: String,
        /// The registry's status (HTTP code or distribution error code).
        status: String,
        /// The registry's message.
        message: String,
    },
    /// The registry refused the request or failed (after retries when transient).
    #[error("pulling {image}: {registry} answered {status}: {message}")]
    Status {
        /// The image being pulled.
        image: String,
        /// The registry host.
        registry: String,
        /// The registry's status.
        status: String,
        /// The registry's message.
        message: String,
    },
    /// The registry could not be reached or the connection failed (after retries).
    #[error("pulling {image}: cannot reach {registry}: {message}")]
    Network {
        /// The image being pulled.
        image: String,
        /// The registry host.
        registry: String,
        /// What failed, with its causes.
        message: String,
    },
    /// The TLS handshake failed: an untrusted or invalid certificate, or a server
    /// that does not speak TLS. Not retried: waiting does not change it.
    #[error("pulling {image}: TLS with {registry} failed: {reason}{hint}")]
    Tls {
        /// The image being pulled.
        image: String,
        /// The registry host.
        registry: String,
        /// What rustls reported.
        reason: String,
        /// What to do about it, when that is clear.
        hint: &'static str,
    },
    /// A manifest that is too large.
    #[error(
        "pulling {image}: manifest from {registry} is {size} bytes, over the {limit}-byte limit"
    )]
    ManifestTooLarge {
        /// The image being pulled.
        image: String,
        /// The registry host.
        registry: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A manifest that does not parse or breaks the spec.
    #[error("pulling {image}: malformed manifest {digest} from {registry}: {reason}")]
    BadManifest {
        /// The image being pulled.
        image: String,
        /// The registry host.
        registry: String,
        /// The manifest's digest.
        digest: String,
        /// What is wrong.
        reason: String,
    },
    /// Content whose digest does not match what was asked for.
    #[error("pulling {image}: {what} from {registry} has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// The image being pulled.
        image: String,
        /// The registry host.
        registry: String,
        /// "manifest" or "blob".
        what: &'static str,
        /// Expected digest.
        expected: String,
        /// Digest of what arrived.
        actual: String,
    },
    /// An index with no manifest for the wanted platform.
    #[error("pulling {image}: no manifest for platform {platform} (the index has {available})")]
    NoPlatform {
        /// The image being pulled.
        image: String,
        /// The wanted platform.
        platform: String,
        /// The platforms it has.
        available: String,
    },
    /// Something that is not a container image.
    #[error("pulling {image}: unsupported media type {media_type} ({what})")]
    Unsupported {
        /// The image being pulled.
        image: String,
        /// The media type.
        media_type: String,
        /// Where it was found.
        what: String,
    },
    /// Storing a blob failed.
    #[error("pulling {image}: storing {digest}")]
    Store {
        /// The image being pulled.
        image: String,
        /// The blob.
        digest: String,
        /// The cause.
        #[source]
        source: LayoutError,
    },
    /// A layer could not be unpacked.
    #[error("pulling {image}: unpacking layer {digest}")]
    Unpack {
        /// The image being pulled.
        image: String,
        /// The layer's blob.
        digest: String,
        /// The cause.
        #[source]
        source: crate::distribution::unpack::UnpackError,
    },
    /// The store itself failed (index update, lock).
    #[error("pulling {image}: updating the store")]
    Index {
        /// The image being pulled.
        image: String,
        /// The cause.
        #[source]
        source: LayoutError,
    },
    /// The HTTP client cannot be set up (no usable CA certificates, say).
    #[error("setting up the registry client: {message}")]
    Client {
        /// What failed, with its causes.
        message: String,
    },
    /// A bad reference.
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    /// registries.conf trouble or a blocked registry.
    #[error(transparent)]
    Registries(#[from] RegistriesError),
    /// Auth file trouble.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A peer list that does not do.
    #[error(transparent)]
    Peers(#[from] crate::distribution::registry::peers::PeersError),
    /// The signature policy refuses the image.
    #[error(transparent)]
    Refused(Box<crate::distribution::policy::Refused>),
    /// A registry's certificate directory that cannot be used.
    #[error("certificates for {registry}: {source}")]
    Certs {
        /// The registry host.
        registry: String,
        /// The cause.
        #[source]
        source: crate::distribution::registry::certs::CertsError,
    },
}

impl RegistryError {
    /// The class of failure, for exit codes and gRPC statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::NotFound { .. } | RegistryError::NoPlatform { .. } => {
                ErrorKind::NotFound
            }
            RegistryError::Status { .. }
            | RegistryError::Network { .. }
            | RegistryError::Tls { .. }
            | RegistryError::ManifestTooLarge { .. }
            | RegistryError::BadManifest { .. }
            | RegistryError::DigestMismatch { .. }
            | RegistryError::Unsupported { .. } => ErrorKind::Registry,
            RegistryError::Store { source, .. } => match source {
                LayoutError::DigestMismatch { .. } | LayoutError::SizeMismatch { .. } => {
                    ErrorKind::Registry
                }
                _ => ErrorKind::Other,
            },
            RegistryError::Unpack { source, .. } if source.bad_content => ErrorKind::Registry,
            RegistryError::Unpack { .. } => ErrorKind::Other,
            RegistryError::Index { .. } | RegistryError::Client { .. } => ErrorKind::Other,
            RegistryError::Refused(_) => ErrorKind::Refused,
            RegistryError::Reference(_) => ErrorKind::Usage,
            RegistryError::Registries(RegistriesError::Blocked(_)) => ErrorKind::Usage,
            RegistryError::Registries(_)
            | RegistryError::Auth(_)
            | RegistryError::Peers(_)
            | RegistryError::Certs { .. } => ErrorKind::Usage,
        }
    }

    pub(super) fn transient(&self) -> bool {
        match self {
            RegistryError::Network { .. } => true,
            RegistryError::Status { status, .. } => status
                .split(' ')
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .is_some_and(|c| c >= 500 || c == 429 || c == 408),
            // A body cut short: the connection broke midway.
            RegistryError::Store {
                source:
                    LayoutError::SizeMismatch {
                        expected, actual, ..
                    },
                ..
            } => actual < expected,
            _ => false,
        }
    }
}

pub(super) type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// The image and registry an operation is for, to name them in errors.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub(super) image: &'a str,
    pub(super) registry: &'a str,
    /// A mirror: retried once at most, since the next endpoint is there to try.
    pub(super) mirror: bool,
    /// A peer: never retried; the next peer or the registry is asked instead.
    pub(super) peer: bool,
}

/// A pull from one registry: its names for errors, and the HTTP client to use.
#[derive(Clone, Copy)]
pub(super) struct PullCtx<'a> {
    pub(super) names: Ctx<'a>,
    pub(super) client: &'a Client,
    /// For a peer: the registry the blob comes from, sent as `?ns=` so the peer can
    /// fetch it there for the nodes that ask.
    pub(super) ns: Option<&'a str>,
    /// The signature policy's verdict, still to come: blobs are committed and
    /// layers unpacked only once it lets the image in.
    pub(super) verdict: Option<&'a Verdict>,
}

impl<'a> std::ops::Deref for PullCtx<'a> {
    type Target = Ctx<'a>;

    fn deref(&self) -> &Ctx<'a> {
        &self.names
    }
}

impl Ctx<'_> {
    pub(super) fn bad_manifest(&self, digest: &Digest, reason: String) -> RegistryError {
        RegistryError::BadManifest {
            image: self.image.to_string(),
            registry: self.registry.to_string(),
            digest: digest.to_string(),
            reason,
        }
    }

    /// A request that failed before any response: a TLS handshake that failed is
    /// final, anything else a network error (retried).
    pub(super) fn request_failed(
        &self,
        what: &str,
        e: &(dyn std::error::Error + 'static),
    ) -> RegistryError {
        let Some(tls) = tls_error(e) else {
            return self.network(what, e);
        };
        let hint = match tls {
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                " (a registry's private CA goes in /etc/containers/certs.d/HOST[:PORT]/ca.crt)"
            }
            rustls::Error::InvalidMessage(_) => {
                " (a registry that speaks plain HTTP must be named insecure)"
            }
            rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::CertificateRequired
                | rustls::AlertDescription::UnknownCA,
            ) => {
                " (the registry wants a client certificate, or refused the one given: \
                 NAME.cert and NAME.key go in /etc/containers/certs.d/HOST[:PORT]/)"
            }
            _ => "",
        };
        RegistryError::Tls {
            image: self.image.to_string(),
            registry: self.registry.to_string(),
            reason: tls.to_string(),
            hint,
        }
    }

    pub(super) fn network(&self, what: &str, e: &dyn std::error::Error) -> RegistryError {
        RegistryError::Network {
            image: self.image.to_string(),
            registry: self.registry.to_string(),
            message: format!("{what}: {}", crate::one_line(e)),
        }
    }

    /// Our error for a failed registry request, keeping the registry's status.
    pub(super) fn classify(&self, e: HttpError, what: &str) -> RegistryError {
        let image = self.image.to_string();
        let registry = self.registry.to_string();
        match e {
            HttpError::Status { code, errors, text } => {
                let not_found = match errors.first() {
                    Some((c, _)) => matches!(
                        c.as_str(),
                        "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "BLOB_UNKNOWN" | "NOT_FOUND"
                    ),
                    None => code == 404,
                };
                // The HTTP status, and the code exactly as the registry sent it
                // (MANIFEST_UNKNOWN, DENIED, …) when it sent one.
                let (status, message) = match errors.first() {
                    Some((c, _)) if !c.is_empty() => (
                        format!("{code} {c}"),
                        one_line(
                            &errors
                                .iter()
                                .map(|(_, m)| m.as_str())
                                .filter(|m| !m.is_empty())
                                .collect::<Vec<_>>()
                                .join("; "),
                            code,
                        ),
                    ),
                    _ => (code.to_string(), one_line(&text, code)),
                };
                let message = format!("{what}: {message}");
                if not_found {
                    RegistryError::NotFound {
                        image,
                        registry,
                        status,
                        message,
                    }
                } else {
                    RegistryError::Status {
                        image,
                        registry,
                        status,
                        message,
                    }
                }
            }
            HttpError::Unauthorized { challenge } => RegistryError::Status {
                image,
                registry,
                status: "401".into(),
                message: if challenge.is_empty() {
                    format!("{what}: unauthorized (check the credentials)")
                } else {
                    format!(
                        "{what}: unauthorized (check the credentials; it asks for {})",
                        one_line(&challenge, 401)
                    )
                },
            },
            HttpError::Token { realm, message } => RegistryError::Status {
                image,
                registry,
                status: "401".into(),
                message: format!(
                    "token request to {realm} refused: {}",
                    one_line(&message, 401)
                ),
            },
            HttpError::TooLarge { size } => RegistryError::ManifestTooLarge {
                image,
                registry,
                size,
                limit: crate::distribution::layout::MAX_MANIFEST_SIZE,
            },
            HttpError::Protocol(message) => RegistryError::Status {
                image,
                registry,
                status: "bad answer".into(),
                message: format!("{what}: {message}"),
            },
            HttpError::Request(e) => self.request_failed(what, &e),
        }
    }
}

pub(super) fn one_line(msg: &str, code: u16) -> String {
    let m = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    if m.is_empty() {
        http_reason(code).to_string()
    } else if m.len() > 200 {
        format!("{}…", &m[..m.floor_char_boundary(200)])
    } else {
        m
    }
}

pub(super) fn http_reason(code: u16) -> &'static str {
    match code {
        400 => "bad request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        429 => "too many requests",
        500 => "internal server error",
        502 => "bad gateway",
        503 => "service unavailable",
        504 => "gateway timeout",
        _ => "error",
    }
}

/// The rustls error behind a failed request, if a TLS handshake is what failed.
/// hyper hands it up inside `io::Error`s (nested), whose `source()` skips the error
/// each wraps, so those are opened by hand.
pub(super) fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        let mut inner = c;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            inner = wrapped;
        }
        if let Some(t) = inner.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        cur = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn transient_errors_are_the_retryable_ones() {
        let st = |s: &str| RegistryError::Status {
            image: "i".into(),
            registry: "r".into(),
            status: s.into(),
            message: String::new(),
        };
        assert!(st("503").transient());
        assert!(st("503 UNAVAILABLE").transient());
        assert!(!st("404 MANIFEST_UNKNOWN").transient());
        assert!(st("429").transient());
        assert!(!st("403").transient());
        assert!(!st("DENIED").transient());
    }
}
