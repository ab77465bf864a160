//! Pulling images from registries into the store, through oci-client.
//!
//! Manifests are fetched raw (bounded, digest-checked) and parsed here: OCI and
//! Docker schema 2 manifests, OCI image indexes and Docker manifest lists with
//! platform selection. Blobs are streamed — never buffered whole — into
//! [`crate::layout::BlobWriter`]s on a writer thread per blob, so hashing and disk
//! writes overlap with the network. Layers download in parallel (bounded); blobs
//! already stored are skipped; transient failures (5xx, 429, resets, timeouts) are
//! retried with exponential backoff, and a blob cut off midway resumes with an HTTP
//! range request when the registry honours one.
//!
//! Docker schema 2 manifests are converted to OCI manifests on the way in (same
//! config and layer blobs, OCI media types), as `skopeo copy … oci:` does, so every
//! OCI tool can read the store; the digest the registry gave is kept in the
//! [`crate::layout::REPO_DIGEST`] annotation and is what the caller prints.

use crate::auth::{AuthError, CredentialStore, Credentials};
use crate::digest::{Digest, DigestError};
use crate::layout::{LayoutError, Store, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE, REPO_DIGEST};
use crate::platform::Platform;
use crate::progress::{Event, Sink};
use crate::reference::{self, Reference};
use crate::registries::{Endpoint, Registries, RegistriesError};
use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use oci_spec::image::{Descriptor, MediaType};
use std::time::Duration;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPT: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

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
    /// A registry's certificate directory that cannot be used.
    #[error("certificates for {registry}: {source}")]
    Certs {
        /// The registry host.
        registry: String,
        /// The cause.
        #[source]
        source: crate::certs::CertsError,
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
            RegistryError::Index { .. } | RegistryError::Client { .. } => ErrorKind::Other,
            RegistryError::Reference(_) => ErrorKind::Usage,
            RegistryError::Registries(RegistriesError::Blocked(_)) => ErrorKind::Usage,
            RegistryError::Registries(_) | RegistryError::Auth(_) | RegistryError::Certs { .. } => {
                ErrorKind::Usage
            }
        }
    }

    fn transient(&self) -> bool {
        match self {
            RegistryError::Network { .. } => true,
            RegistryError::Status { status, .. } => status
                .parse::<u16>()
                .is_ok_and(|c| c >= 500 || c == 429 || c == 408),
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

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform chosen from image indexes.
    pub platform: Platform,
    /// Blobs downloaded at once.
    pub max_concurrent: usize,
    /// Retries after the first attempt of each request, for transient failures.
    pub retries: u32,
    /// The first retry's delay; it doubles each time.
    pub retry_delay: Duration,
    /// A connection that delivers nothing for this long fails (and is retried);
    /// a slow but moving download is never cut off.
    pub stall_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// containers-certs.d(5) directories: `DIR/HOST[:PORT]/*.crt` are CAs trusted
    /// for that registry, besides the system's.
    pub certs_dirs: Vec<std::path::PathBuf>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            max_concurrent: 4,
            retries: 4,
            retry_delay: Duration::from_millis(500),
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            certs_dirs: crate::certs::default_dirs(),
        }
    }
}

/// The outcome of one pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The name in the store (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The digest the registry resolved the reference to.
    pub repo_digest: Digest,
    /// The stored manifest's digest (differs for converted Docker manifests).
    pub manifest_digest: Digest,
    /// The line to print: `NAME@DIGEST`.
    pub pinned: String,
}

/// Pulls images from registries into a store.
pub struct Puller {
    client: Client,
    /// Clients of registries with CAs of their own (certs.d), by host.
    host_clients: std::sync::Mutex<std::collections::HashMap<String, HostClient>>,
    registries: Registries,
    creds: CredentialStore,
    opts: PullOptions,
}

/// A registry's own client and the CAs (DER) it was made to trust.
struct HostClient {
    roots: Vec<Vec<u8>>,
    client: Client,
}

/// The HTTP client for `registries` (plain HTTP for insecure hosts) and `opts`,
/// trusting the CAs `extra_roots` (DER) besides the system's.
fn make_client(
    registries: &Registries,
    opts: &PullOptions,
    extra_roots: &[Vec<u8>],
) -> Result<Client> {
    // TLS runs on rustls with ring's cryptography, installed once per process
    // (reqwest takes the process default); a second install is refused, harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ClientConfig {
        protocol: ClientProtocol::HttpsExcept(registries.insecure_hosts()),
        platform_resolver: None,
        read_timeout: Some(opts.stall_timeout),
        connect_timeout: Some(opts.connect_timeout),
        max_concurrent_download: opts.max_concurrent.max(1),
        user_agent: concat!("crikit/", env!("CARGO_PKG_VERSION")),
        extra_root_certificates: extra_roots
            .iter()
            .map(|der| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Der,
                data: der.clone(),
            })
            .collect(),
        ..Default::default()
    };
    // Not Client::new: it logs a failed set-up (no CA certificates, say) and carries
    // on with a default client that ignores the insecure hosts.
    Client::try_from(config).map_err(|e| {
        let mut message = chain(&e);
        // rustls-platform-verifier's words. The client is built with the system's
        // CAs even when every registry is plain HTTP, so say where they come from.
        if message.contains("No CA certificates were loaded") {
            message.push_str(
                " (install the ca-certificates package, or name a CA bundle in SSL_CERT_FILE)",
            );
        }
        RegistryError::Client { message }
    })
}

/// A blob to fetch.
#[derive(Debug, Clone)]
struct Blob {
    digest: Digest,
    size: u64,
}

impl Puller {
    /// A puller with its HTTP client configured from `registries` (plain HTTP for
    /// insecure hosts) and `opts`.
    pub fn new(registries: Registries, creds: CredentialStore, opts: PullOptions) -> Result<Self> {
        Ok(Puller {
            client: make_client(&registries, &opts, &[])?,
            host_clients: Default::default(),
            registries,
            creds,
            opts,
        })
    }

    /// The same puller with an HTTP client of its own. The client remembers the
    /// first credentials and the tokens it got for each registry: a pull made with
    /// credentials of its own (a CRI request's) must not leave them behind for
    /// other pulls, nor use someone else's.
    pub fn fork(&self) -> Result<Self> {
        Ok(Puller {
            client: make_client(&self.registries, &self.opts, &[])?,
            host_clients: Default::default(),
            registries: self.registries.clone(),
            creds: self.creds.clone(),
            opts: self.opts.clone(),
        })
    }

    /// Pulls `image` into `store` and names it. Tries mirrors from registries.conf
    /// first, then the registry itself.
    pub async fn pull(&self, store: &Store, image: &str, sink: &dyn Sink) -> Result<Pulled> {
        self.pull_as(store, image, sink, None).await
    }

    /// [`Puller::pull`] with `creds` for every endpoint instead of the credential
    /// store's (the CRI's PullImage carries its own).
    pub async fn pull_as(
        &self,
        store: &Store,
        image: &str,
        sink: &dyn Sink,
        creds: Option<&Credentials>,
    ) -> Result<Pulled> {
        let r = reference::parse(image)?;
        let endpoints = self.registries.endpoints(&r)?;
        let mut last = None;
        for ep in &endpoints {
            match self.pull_from(store, image, &r, ep, sink, creds).await {
                Ok(p) => return Ok(p),
                Err(e) if ep.mirror => {
                    tracing::warn!(
                        "mirror {} failed, trying the next endpoint: {e}",
                        ep.reference.registry()
                    );
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Network {
            image: image.to_string(),
            registry: r.registry().to_string(),
            message: "no endpoint to try".into(),
        }))
    }

    /// The client for `registry`: one of its own when a certs.d directory gives it
    /// CAs (kept while they stay the same: the directory is read on every pull, as
    /// containers-image does), the shared one otherwise. A new client reads the
    /// system's CAs: it is made off the async workers and outside the lock.
    async fn client_for(&self, registry: &str) -> Result<Client> {
        let certs = crate::certs::for_host(&self.opts.certs_dirs, registry).map_err(|source| {
            RegistryError::Certs {
                registry: registry.to_string(),
                source,
            }
        })?;
        let Some(certs) = certs else {
            return Ok(self.client.clone());
        };
        if certs.client_identity {
            tracing::warn!(
                "{}: client certificates are not supported; only its CAs (*.crt) are used",
                certs.dir.display()
            );
        }
        if certs.roots.is_empty() {
            return Ok(self.client.clone());
        }
        let cached = self
            .host_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registry)
            .filter(|h| h.roots == certs.roots)
            .map(|h| h.client.clone());
        if let Some(c) = cached {
            return Ok(c);
        }
        let (registries, opts, roots) = (
            self.registries.clone(),
            self.opts.clone(),
            certs.roots.clone(),
        );
        let client = tokio::task::spawn_blocking(move || make_client(&registries, &opts, &roots))
            .await
            .map_err(|e| RegistryError::Client {
                message: e.to_string(),
            })??;
        self.host_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                registry.to_string(),
                HostClient {
                    roots: certs.roots,
                    client: client.clone(),
                },
            );
        Ok(client)
    }

    fn auth_for(&self, r: &Reference, creds: Option<&Credentials>) -> Result<RegistryAuth> {
        if let Some(c) = creds {
            return Ok(RegistryAuth::Basic(c.username.clone(), c.password.clone()));
        }
        Ok(match self.creds.lookup(r.registry(), r.repository())? {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        })
    }

    async fn pull_from(
        &self,
        store: &Store,
        image: &str,
        asked: &Reference,
        ep: &Endpoint,
        sink: &dyn Sink,
        creds: Option<&Credentials>,
    ) -> Result<Pulled> {
        let r = &ep.reference;
        let registry = r.registry().to_string();
        let auth = self.auth_for(r, creds)?;
        sink.event(&Event::Resolving {
            image: image.to_string(),
            endpoint: r.to_string(),
        });
        let client = self.client_for(&registry).await?;
        let ctx = PullCtx {
            names: Ctx {
                image,
                registry: &registry,
            },
            client: &client,
        };

        let (raw, top_digest) = self
            .fetch_manifest(&ctx, r, &auth, r.digest(), sink)
            .await?;
        let mut raw = raw;
        let mut manifest_digest = top_digest.clone();
        let mut media_type = detect_media_type(&ctx, &raw, &top_digest)?;
        if media_type == OCI_INDEX || media_type == DOCKER_LIST {
            let child = self.choose_platform(&ctx, &raw, &top_digest)?;
            let child_ref = r.clone_with_digest(child.to_string());
            let (child_raw, _) = self
                .fetch_manifest(&ctx, &child_ref, &auth, Some(child.as_str()), sink)
                .await?;
            media_type = detect_media_type(&ctx, &child_raw, &child)?;
            if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
                return Err(ctx.bad_manifest(
                    &child,
                    format!("index entry is a {media_type}, not an image manifest"),
                ));
            }
            raw = child_raw;
            manifest_digest = child;
        }
        let manifest = parse_manifest(&ctx, &raw, &manifest_digest)?;

        // From here on the pull writes blobs: keep prune away until the entry is in.
        let _guard = store.pull_guard().map_err(|source| RegistryError::Index {
            image: image.to_string(),
            source,
        })?;
        let mut blobs = vec![manifest.config.clone()];
        blobs.extend(manifest.layers.iter().cloned());
        // The first failure stops the pull: the other downloads are dropped, and
        // their temp files with them.
        futures_util::stream::iter(blobs.into_iter().map(|b| {
            let auth = &auth;
            async move { self.fetch_blob(store, &ctx, r, auth, &b, sink).await }
        }))
        .buffer_unordered(self.opts.max_concurrent.max(1))
        .try_collect::<Vec<()>>()
        .await?;

        // Docker schema 2 becomes an OCI manifest over the same blobs.
        let (stored_raw, stored_digest) = if media_type == DOCKER_MANIFEST {
            let converted =
                docker_to_oci(&raw).map_err(|reason| ctx.bad_manifest(&manifest_digest, reason))?;
            let d = Digest::of(&converted);
            (converted, d)
        } else {
            (raw, manifest_digest.clone())
        };
        store
            .put_blob(&stored_digest, &stored_raw)
            .map_err(|source| RegistryError::Store {
                image: image.to_string(),
                digest: stored_digest.to_string(),
                source,
            })?;
        let mut desc = Descriptor::new(
            MediaType::ImageManifest,
            stored_raw.len() as u64,
            oci_digest(&stored_digest),
        );
        let mut ann = std::collections::HashMap::new();
        ann.insert(REPO_DIGEST.to_string(), top_digest.to_string());
        desc.set_annotations(Some(ann));
        let name = reference::store_name(asked);
        store
            .add_image(&name, desc)
            .map_err(|source| RegistryError::Index {
                image: image.to_string(),
                source,
            })?;
        let pinned = reference::pinned(asked, top_digest.as_str());
        sink.event(&Event::Done {
            image: image.to_string(),
            reference: pinned.clone(),
        });
        Ok(Pulled {
            name,
            repo_digest: top_digest,
            manifest_digest: stored_digest,
            pinned,
        })
    }

    /// Decides whether a failed attempt is retried: sleeps and returns true, or
    /// returns false when the error is final or the retries are used up.
    async fn backoff(
        &self,
        ctx: &Ctx<'_>,
        what: &str,
        sink: &dyn Sink,
        attempt: &mut u32,
        e: &RegistryError,
    ) -> bool {
        if !e.transient() || *attempt > self.opts.retries {
            return false;
        }
        let delay = (self.opts.retry_delay * 2u32.saturating_pow(*attempt - 1))
            .min(Duration::from_secs(30));
        *attempt += 1;
        sink.event(&Event::Retry {
            image: ctx.image.to_string(),
            what: what.to_string(),
            attempt: *attempt,
            delay_ms: delay.as_millis() as u64,
            error: e.to_string(),
        });
        tracing::info!("retrying {what} in {delay:?} (attempt {attempt}): {e}");
        tokio::time::sleep(delay).await;
        true
    }

    async fn fetch_manifest(
        &self,
        ctx: &PullCtx<'_>,
        r: &Reference,
        auth: &RegistryAuth,
        expected: Option<&str>,
        sink: &dyn Sink,
    ) -> Result<(Vec<u8>, Digest)> {
        let mut attempt = 1;
        let raw = loop {
            match ctx.client.pull_manifest_raw(r, auth, ACCEPT).await {
                Ok((raw, _)) => break raw,
                Err(e) => {
                    let e = ctx.classify(e, "manifest");
                    if !self.backoff(ctx, "manifest", sink, &mut attempt, &e).await {
                        return Err(e);
                    }
                }
            }
        };
        if raw.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(RegistryError::ManifestTooLarge {
                image: ctx.image.to_string(),
                registry: ctx.registry.to_string(),
                size: raw.len() as u64,
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let actual = Digest::of(&raw);
        if let Some(want) = expected {
            if actual.as_str() != want {
                return Err(RegistryError::DigestMismatch {
                    image: ctx.image.to_string(),
                    registry: ctx.registry.to_string(),
                    what: "manifest",
                    expected: want.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        Ok((raw.to_vec(), actual))
    }

    fn choose_platform(&self, ctx: &Ctx<'_>, raw: &[u8], digest: &Digest) -> Result<Digest> {
        let v: serde_json::Value =
            serde_json::from_slice(raw).map_err(|e| ctx.bad_manifest(digest, e.to_string()))?;
        let entries = v
            .get("manifests")
            .and_then(|m| m.as_array())
            .ok_or_else(|| {
                ctx.bad_manifest(digest, "image index without a manifests list".into())
            })?;
        let want = &self.opts.platform;
        let mut best: Option<(u8, &serde_json::Value)> = None;
        let mut available = Vec::new();
        for e in entries {
            let p = e.get("platform");
            let field = |k: &str| p.and_then(|p| p.get(k)).and_then(|v| v.as_str());
            let (Some(os), Some(arch)) = (field("os"), field("architecture")) else {
                continue; // attestations and other non-image entries have no platform
            };
            let variant = field("variant");
            available.push(match variant {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            });
            if let Some(score) = want.score(os, arch, variant) {
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, e));
                }
            }
        }
        let Some((_, entry)) = best else {
            return Err(RegistryError::NoPlatform {
                image: ctx.image.to_string(),
                platform: want.to_string(),
                available: if available.is_empty() {
                    "no platforms".into()
                } else {
                    available.join(", ")
                },
            });
        };
        let d = entry
            .get("digest")
            .and_then(|d| d.as_str())
            .ok_or_else(|| ctx.bad_manifest(digest, "index entry without a digest".into()))?;
        Digest::parse(d).map_err(|e| ctx.bad_manifest(digest, e.to_string()))
    }

    async fn fetch_blob(
        &self,
        store: &Store,
        ctx: &PullCtx<'_>,
        r: &Reference,
        auth: &RegistryAuth,
        blob: &Blob,
        sink: &dyn Sink,
    ) -> Result<()> {
        let image = ctx.image.to_string();
        let digest_s = blob.digest.to_string();
        if store.has_blob(&blob.digest) {
            sink.event(&Event::BlobExists {
                image,
                digest: digest_s,
                size: blob.size,
            });
            return Ok(());
        }
        let store_err = |source: LayoutError| RegistryError::Store {
            image: ctx.image.to_string(),
            digest: blob.digest.to_string(),
            source,
        };
        let writer = store
            .ingest(&blob.digest, Some(blob.size))
            .map_err(store_err)?;
        let mut pipe = WriterThread::start(writer);
        // The registry authenticates on the first request of each client; make sure
        // a token is in place so concurrent blob requests do not race for it.
        let _ = ctx
            .client
            .store_auth_if_needed(r.resolve_registry(), auth)
            .await;
        let mut attempt = 1;
        let result = loop {
            sink.event(&Event::BlobStart {
                image: ctx.image.to_string(),
                digest: digest_s.clone(),
                size: blob.size,
                offset: pipe.sent,
            });
            match self.download(ctx, r, blob, &mut pipe, sink).await {
                Ok(()) => break Ok(()),
                Err(e) => {
                    if !self.backoff(ctx, &digest_s, sink, &mut attempt, &e).await {
                        break Err(e);
                    }
                }
            }
        };
        // The download's error comes first: when the writer thread failed (a full
        // disk, say), the download already collected its error and finishing has
        // nothing left to report.
        let finished = pipe.finish().await;
        result?;
        let writer = finished.map_err(store_err)?;
        tokio::task::spawn_blocking(move || writer.commit())
            .await
            .map_err(|e| {
                store_err(LayoutError::Io {
                    action: "committing",
                    path: store.blob_path(&blob.digest),
                    source: std::io::Error::other(e.to_string()),
                })
            })?
            .map_err(|source| match source {
                LayoutError::DigestMismatch { expected, actual } => RegistryError::DigestMismatch {
                    image: ctx.image.to_string(),
                    registry: ctx.registry.to_string(),
                    what: "blob",
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                },
                other => store_err(other),
            })?;
        sink.event(&Event::BlobDone {
            image: ctx.image.to_string(),
            digest: blob.digest.to_string(),
            size: blob.size,
        });
        Ok(())
    }

    /// One attempt at streaming a blob, from the writer's offset.
    async fn download(
        &self,
        ctx: &PullCtx<'_>,
        r: &Reference,
        blob: &Blob,
        pipe: &mut WriterThread,
        sink: &dyn Sink,
    ) -> Result<()> {
        let what = blob.digest.to_string();
        // Always ask for a range: a registry that honours it answers 206 and
        // oci-client leaves verification to us, so the bytes are hashed once.
        let resp = ctx
            .client
            .pull_blob_stream_partial(r, what.as_str(), pipe.sent, None)
            .await
            .map_err(|e| ctx.classify(e, &what))?;
        let mut stream = match resp {
            oci_client::client::BlobResponse::Partial(s) => s,
            oci_client::client::BlobResponse::Full(s) => {
                if pipe.sent > 0 {
                    tracing::info!("{what}: registry ignored the range, starting over");
                    pipe.reset().await.map_err(|source| RegistryError::Store {
                        image: ctx.image.to_string(),
                        digest: what.clone(),
                        source,
                    })?;
                }
                s
            }
        };
        let mut last_report = pipe.sent;
        let mut last_report_at = std::time::Instant::now();
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| ctx.network(&what, &e))?
        {
            if pipe.sent + chunk.len() as u64 > blob.size {
                pipe.reset().await.ok();
                return Err(RegistryError::Store {
                    image: ctx.image.to_string(),
                    digest: what.clone(),
                    source: LayoutError::SizeMismatch {
                        digest: blob.digest.clone(),
                        expected: blob.size,
                        actual: pipe.sent + chunk.len() as u64,
                    },
                });
            }
            pipe.send(chunk)
                .await
                .map_err(|source| RegistryError::Store {
                    image: ctx.image.to_string(),
                    digest: what.clone(),
                    source,
                })?;
            // Every 4 MiB, and at least every 250 ms while bytes come: a slow
            // download still shows (and proves) that it moves.
            if pipe.sent - last_report >= 4 << 20
                || pipe.sent == blob.size
                || last_report_at.elapsed() >= Duration::from_millis(250)
            {
                last_report = pipe.sent;
                last_report_at = std::time::Instant::now();
                sink.event(&Event::BlobProgress {
                    image: ctx.image.to_string(),
                    digest: what.clone(),
                    done: pipe.sent,
                    size: blob.size,
                });
            }
        }
        if pipe.sent < blob.size {
            // The body ended early: a cut connection. Retried, resuming at the offset.
            return Err(RegistryError::Store {
                image: ctx.image.to_string(),
                digest: what,
                source: LayoutError::SizeMismatch {
                    digest: blob.digest.clone(),
                    expected: blob.size,
                    actual: pipe.sent,
                },
            });
        }
        Ok(())
    }
}

/// The image and registry an operation is for, to name them in errors.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    image: &'a str,
    registry: &'a str,
}

/// A pull from one registry: its names for errors, and the HTTP client to use.
#[derive(Clone, Copy)]
struct PullCtx<'a> {
    names: Ctx<'a>,
    client: &'a Client,
}

impl<'a> std::ops::Deref for PullCtx<'a> {
    type Target = Ctx<'a>;

    fn deref(&self) -> &Ctx<'a> {
        &self.names
    }
}

impl Ctx<'_> {
    fn bad_manifest(&self, digest: &Digest, reason: String) -> RegistryError {
        RegistryError::BadManifest {
            image: self.image.to_string(),
            registry: self.registry.to_string(),
            digest: digest.to_string(),
            reason,
        }
    }

    /// A request that failed before any response: a TLS handshake that failed is
    /// final, anything else a network error (retried).
    fn request_failed(&self, what: &str, e: &(dyn std::error::Error + 'static)) -> RegistryError {
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
            _ => "",
        };
        RegistryError::Tls {
            image: self.image.to_string(),
            registry: self.registry.to_string(),
            reason: tls.to_string(),
            hint,
        }
    }

    fn network(&self, what: &str, e: &dyn std::error::Error) -> RegistryError {
        RegistryError::Network {
            image: self.image.to_string(),
            registry: self.registry.to_string(),
            message: format!("{what}: {}", chain(e)),
        }
    }

    /// Maps an oci-client error to ours, keeping the registry's status.
    fn classify(&self, e: OciDistributionError, what: &str) -> RegistryError {
        let image = self.image.to_string();
        let registry = self.registry.to_string();
        match e {
            OciDistributionError::RegistryError { envelope, .. } => {
                let first = envelope.errors.first();
                // The code exactly as the registry sent it (MANIFEST_UNKNOWN, DENIED, …).
                let status = first
                    .and_then(|e| serde_json::to_value(&e.code).ok())
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_else(|| "error".into());
                let message = envelope
                    .errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                let not_found = first.is_some_and(|e| {
                    matches!(
                        e.code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                });
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
            OciDistributionError::ImageManifestNotFoundError(message) => RegistryError::NotFound {
                image,
                registry,
                status: "404".into(),
                message,
            },
            OciDistributionError::ServerError { code, message, .. } => {
                let message = one_line(&message, code);
                if code == 404 {
                    RegistryError::NotFound {
                        image,
                        registry,
                        status: code.to_string(),
                        message,
                    }
                } else {
                    RegistryError::Status {
                        image,
                        registry,
                        status: code.to_string(),
                        message,
                    }
                }
            }
            OciDistributionError::UnauthorizedError { .. } => RegistryError::Status {
                image,
                registry,
                status: "401".into(),
                message: format!("{what}: unauthorized (check the credentials)"),
            },
            OciDistributionError::AuthenticationFailure(m) => RegistryError::Status {
                image,
                registry,
                status: "401".into(),
                message: format!("token request refused: {}", one_line(&m, 401)),
            },
            OciDistributionError::DigestError(d) => RegistryError::Status {
                image,
                registry,
                status: "bad digest".into(),
                message: format!("{what}: {d}"),
            },
            OciDistributionError::RequestError(e) => self.request_failed(what, &e),
            OciDistributionError::IoError(e) => self.network(what, &e),
            other => RegistryError::Status {
                image,
                registry,
                status: "error".into(),
                message: format!("{what}: {other}"),
            },
        }
    }
}

fn one_line(msg: &str, code: u16) -> String {
    let m = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    if m.is_empty() {
        http_reason(code).to_string()
    } else if m.len() > 200 {
        format!("{}…", &m[..m.floor_char_boundary(200)])
    } else {
        m
    }
}

fn http_reason(code: u16) -> &'static str {
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
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
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

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn oci_digest(d: &Digest) -> oci_spec::image::Digest {
    // A validated sha256 digest always parses.
    d.as_str()
        .parse()
        .unwrap_or_else(|_| unreachable!("validated digest {d} rejected by oci-spec"))
}

/// The manifest's media type, from its `mediaType` field or its shape.
fn detect_media_type(ctx: &Ctx<'_>, raw: &[u8], digest: &Digest) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| ctx.bad_manifest(digest, format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ctx.bad_manifest(digest, "not a JSON object".into()));
    }
    if v.get("schemaVersion").and_then(|s| s.as_i64()) != Some(2) {
        return Err(ctx.bad_manifest(
            digest,
            "schemaVersion is not 2 (schema 1 manifests are not supported)".into(),
        ));
    }
    let mt = match v.get("mediaType").and_then(|m| m.as_str()) {
        Some(m) => m.to_string(),
        None if v.get("manifests").is_some() => OCI_INDEX.to_string(),
        None if v.get("config").is_some() => OCI_MANIFEST.to_string(),
        None => return Err(ctx.bad_manifest(digest, "neither a manifest nor an index".into())),
    };
    if !ACCEPT.contains(&mt.as_str()) {
        return Err(RegistryError::Unsupported {
            image: ctx.image.to_string(),
            media_type: mt,
            what: format!("manifest {digest}"),
        });
    }
    Ok(mt)
}

struct ParsedManifest {
    config: Blob,
    layers: Vec<Blob>,
}

const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

fn parse_manifest(ctx: &Ctx<'_>, raw: &[u8], digest: &Digest) -> Result<ParsedManifest> {
    let v: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| ctx.bad_manifest(digest, format!("not JSON: {e}")))?;
    let blob =
        |d: &serde_json::Value, what: &str, types: &[&str], limit: Option<u64>| -> Result<Blob> {
            let mt = d
                .get("mediaType")
                .and_then(|m| m.as_str())
                .unwrap_or_default();
            if !types.contains(&mt) {
                return Err(RegistryError::Unsupported {
                    image: ctx.image.to_string(),
                    media_type: if mt.is_empty() {
                        "(none)".into()
                    } else {
                        mt.into()
                    },
                    what: format!("{what} in manifest {digest}; not a container image"),
                });
            }
            let dg = d
                .get("digest")
                .and_then(|x| x.as_str())
                .ok_or_else(|| ctx.bad_manifest(digest, format!("{what} has no digest")))?;
            let dg = Digest::parse(dg)
                .map_err(|e: DigestError| ctx.bad_manifest(digest, format!("{what}: {e}")))?;
            let size = d
                .get("size")
                .and_then(|x| x.as_u64())
                .ok_or_else(|| ctx.bad_manifest(digest, format!("{what} has no valid size")))?;
            if let Some(limit) = limit {
                if size > limit {
                    return Err(ctx.bad_manifest(
                        digest,
                        format!("{what} claims {size} bytes, over the {limit}-byte limit"),
                    ));
                }
            }
            Ok(Blob { digest: dg, size })
        };
    let config = v
        .get("config")
        .ok_or_else(|| ctx.bad_manifest(digest, "no config descriptor".into()))?;
    let config = blob(config, "config", CONFIG_TYPES, Some(MAX_CONFIG_SIZE))?;
    let layers = v
        .get("layers")
        .and_then(|l| l.as_array())
        .ok_or_else(|| ctx.bad_manifest(digest, "no layers list".into()))?
        .iter()
        .enumerate()
        .map(|(i, l)| blob(l, &format!("layer {i}"), LAYER_TYPES, None))
        .collect::<Result<Vec<_>>>()?;
    Ok(ParsedManifest { config, layers })
}

/// Rewrites a Docker schema 2 manifest as an OCI image manifest over the same blobs.
fn docker_to_oci(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut v: serde_json::Value = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    let obj = v.as_object_mut().ok_or("not an object")?;
    obj.insert("mediaType".into(), OCI_MANIFEST.into());
    if let Some(c) = obj.get_mut("config").and_then(|c| c.as_object_mut()) {
        c.insert(
            "mediaType".into(),
            "application/vnd.oci.image.config.v1+json".into(),
        );
    }
    if let Some(layers) = obj.get_mut("layers").and_then(|l| l.as_array_mut()) {
        for l in layers {
            let Some(l) = l.as_object_mut() else { continue };
            let mt = l
                .get("mediaType")
                .and_then(|m| m.as_str())
                .unwrap_or_default();
            let new = match mt {
                "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                    "application/vnd.oci.image.layer.v1.tar+gzip"
                }
                "application/vnd.docker.image.rootfs.diff.tar" => {
                    "application/vnd.oci.image.layer.v1.tar"
                }
                "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
                    "application/vnd.oci.image.layer.v1.tar+zstd"
                }
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
                }
                other => other,
            }
            .to_string();
            l.insert("mediaType".into(), new.into());
        }
    }
    serde_json::to_vec(&v).map_err(|e| e.to_string())
}

/// A blob writer on its own thread: the download task sends chunks, the thread
/// hashes and writes them, so network, hashing and disk overlap.
struct WriterThread {
    tx: Option<tokio::sync::mpsc::Sender<Msg>>,
    handle: Option<
        std::thread::JoinHandle<std::result::Result<crate::layout::BlobWriter, LayoutError>>,
    >,
    /// Bytes handed to the thread (the resume offset).
    sent: u64,
}

enum Msg {
    Data(bytes::Bytes),
    Reset,
}

impl WriterThread {
    fn start(mut w: crate::layout::BlobWriter) -> Self {
        // A few chunks in flight overlap network and disk; a deeper queue only
        // holds more freshly allocated chunks (RSS and page faults) when the disk
        // is the slower side, and pulls no faster.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(4);
        let handle = std::thread::spawn(move || {
            while let Some(m) = rx.blocking_recv() {
                match m {
                    Msg::Data(b) => w.write(&b)?,
                    Msg::Reset => w.reset()?,
                }
            }
            Ok(w)
        });
        WriterThread {
            tx: Some(tx),
            handle: Some(handle),
            sent: 0,
        }
    }

    async fn send(&mut self, b: bytes::Bytes) -> std::result::Result<(), LayoutError> {
        let n = b.len() as u64;
        let ok = match &self.tx {
            Some(tx) => tx.send(Msg::Data(b)).await.is_ok(),
            None => false,
        };
        if !ok {
            // The thread stopped on an error: report it.
            return Err(match self.join().await {
                Err(e) => e,
                Ok(_) => LayoutError::Io {
                    action: "writing",
                    path: "blob".into(),
                    source: std::io::Error::other("writer thread stopped"),
                },
            });
        }
        self.sent += n;
        Ok(())
    }

    async fn reset(&mut self) -> std::result::Result<(), LayoutError> {
        if let Some(tx) = &self.tx {
            if tx.send(Msg::Reset).await.is_err() {
                return self.join().await.map(|_| ());
            }
        }
        self.sent = 0;
        Ok(())
    }

    async fn join(&mut self) -> std::result::Result<crate::layout::BlobWriter, LayoutError> {
        self.tx = None;
        let Some(h) = self.handle.take() else {
            return Err(LayoutError::Io {
                action: "writing",
                path: "blob".into(),
                source: std::io::Error::other("writer already finished"),
            });
        };
        tokio::task::spawn_blocking(move || h.join())
            .await
            .map_err(|e| LayoutError::Io {
                action: "writing",
                path: "blob".into(),
                source: std::io::Error::other(e.to_string()),
            })?
            .unwrap_or_else(|_| {
                Err(LayoutError::Io {
                    action: "writing",
                    path: "blob".into(),
                    source: std::io::Error::other("writer thread panicked"),
                })
            })
    }

    async fn finish(mut self) -> std::result::Result<crate::layout::BlobWriter, LayoutError> {
        self.join().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_manifests_convert_to_oci_types() {
        let raw = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
          "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
          "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":3,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}]}"#;
        let out = docker_to_oci(raw).unwrap();
        let m: oci_spec::image::ImageManifest = serde_json::from_slice(&out).unwrap();
        assert_eq!(m.media_type(), &Some(MediaType::ImageManifest));
        assert_eq!(m.config().media_type(), &MediaType::ImageConfig);
        assert_eq!(m.layers()[0].media_type(), &MediaType::ImageLayerGzip);
    }

    #[test]
    fn malformed_manifests_are_named() {
        let ctx = Ctx {
            image: "x",
            registry: "r",
        };
        let d = Digest::of(b"x");
        for (raw, want) in [
            (&b"not json"[..], "not JSON"),
            (br#"{"schemaVersion":1}"#, "schemaVersion"),
            (br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:zz","size":1},"layers":[]}"#, "config"),
        ] {
            let e = detect_media_type(&ctx, raw, &d)
                .and_then(|_| parse_manifest(&ctx, raw, &d).map(|_| String::new()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        let wasm = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.wasm.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":1},"layers":[]}"#;
        assert!(matches!(
            parse_manifest(&ctx, wasm, &d),
            Err(RegistryError::Unsupported { .. })
        ));
    }

    #[test]
    fn transient_errors_are_the_retryable_ones() {
        let st = |s: &str| RegistryError::Status {
            image: "i".into(),
            registry: "r".into(),
            status: s.into(),
            message: String::new(),
        };
        assert!(st("503").transient());
        assert!(st("429").transient());
        assert!(!st("403").transient());
        assert!(!st("DENIED").transient());
    }
}
