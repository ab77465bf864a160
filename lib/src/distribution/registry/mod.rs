//! Pulling images from registries into the store.
//!
//! Manifests are fetched raw (bounded, digest-checked) and parsed here: OCI and
//! Docker schema 2 manifests, OCI image indexes and Docker manifest lists with
//! platform selection. Blobs are streamed — never buffered whole — into
//! [`crate::distribution::layout::BlobWriter`]s on a writer thread per blob, so hashing and disk
//! writes overlap with the network. Layers download in parallel (bounded); blobs
//! already stored are skipped; transient failures (5xx, 429, resets, timeouts) are
//! retried with exponential backoff, and a blob cut off midway resumes with an HTTP
//! range request when the registry honours one.
//!
//! Docker schema 2 manifests are converted to OCI manifests on the way in (same
//! config and layer blobs, OCI media types), as `skopeo copy … oci:` does, so every
//! OCI tool can read the store; the digest the registry gave is kept in the
//! [`crate::distribution::layout::REPO_DIGEST`] annotation and is what the caller prints.

//!
//! The pieces: `error` (what can go wrong and which failures are retried),
//! `http` (the registry API: requests, auth challenges, tokens), `client` (HTTP
//! clients, per-registry CAs and client certificates, credentials), `manifest` (fetching,
//! parsing, platform choice, Docker → OCI), `blob` (streaming with resume and
//! backoff, peers first), `signatures` (the signature policy checked, with the
//! signatures it needs fetched) and `writer` (the writer thread).

pub mod auth;
mod blob;
pub mod certs;
mod client;
mod error;
mod http;
mod manifest;
pub mod peers;
pub mod registries;
mod signatures;
mod upstream;
mod writer;

pub use error::{ErrorKind, RegistryError};
pub use manifest::media_type_of;
pub use upstream::UpstreamBlob;

use crate::distribution::digest::{Digest, DigestError};
use crate::distribution::layout::{
    LayoutError, Store, MAX_CONFIG_SIZE, REPO_DIGEST, SOURCE_MANIFESTS,
};
use crate::distribution::platform::Platform;
use crate::distribution::policy::registries_d::RegistriesD;
use crate::distribution::policy::{sigstore, Policy};
use crate::distribution::progress::{Event, Sink};
use crate::distribution::reference::{self, Reference};
use crate::distribution::registry::auth::{CredentialStore, Credentials};
use crate::distribution::registry::registries::{Endpoint, Registries};
use crate::distribution::unpack::{self, LayerJob, UnpackError, Unpacked, Unpacker};
use blob::*;
use client::*;
use error::*;
use futures_util::{StreamExt, TryStreamExt};
use http::{Client, HttpError, Protocol, RegistryAuth, Setup};
use manifest::*;
use oci_spec::image::{Descriptor, MediaType};
use signatures::Verdict;
use std::sync::Arc;
use std::time::Duration;
use writer::*;

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
    /// Where layers are unpacked as their bytes arrive; `None` stores blobs only.
    pub unpacker: Option<Arc<dyn Unpacker>>,
    /// Other nodes asked for blobs before the registry, once the registry gave
    /// the manifest.
    pub peers: peers::Peers,
    /// Mirrors (`HOST[:PORT]`) that may be sent the credentials a pull was given
    /// for the image's registry. Other mirrors get only those stored for their own
    /// host.
    pub mirrors_with_credentials: Vec<String>,
    /// The signature policy every pull is checked against; `None` lets anything in.
    pub policy: Option<Arc<Policy>>,
    /// registries.d: where signatures are looked for.
    pub registries_d: RegistriesD,
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
            certs_dirs: crate::distribution::registry::certs::default_dirs(),
            unpacker: None,
            peers: peers::Peers::default(),
            mirrors_with_credentials: Vec::new(),
            policy: None,
            registries_d: RegistriesD::default(),
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
    /// Plain HTTP to peers; it never holds a pod's credentials.
    peer_client: Option<Client>,
    /// For http(s):// lookaside signature storage, made when first needed.
    lookaside_client: std::sync::OnceLock<reqwest::Client>,
    /// Clients of registries with CAs of their own (certs.d), by host.
    host_clients: std::sync::Mutex<std::collections::HashMap<String, HostClient>>,
    registries: Registries,
    creds: CredentialStore,
    opts: PullOptions,
}

impl Puller {
    /// Pulls `image` into `store` and names it. Tries mirrors from registries.conf
    /// first, then the registry itself.
    pub async fn pull(&self, store: &Store, image: &str, sink: &dyn Sink) -> Result<Pulled> {
        self.pull_as(store, image, sink, None).await
    }

    /// [`Puller::pull`] with `creds`, given for the image's registry (the CRI's
    /// PullImage carries its own), instead of the credential store's. They go to
    /// that registry (at the `location` registries.conf gives it, if any) and to
    /// mirrors named in [`PullOptions::mirrors_with_credentials`]; any other
    /// mirror gets the credentials stored for its own host, if any, and a peer
    /// never gets them.
    pub async fn pull_as(
        &self,
        store: &Store,
        image: &str,
        sink: &dyn Sink,
        creds: Option<&Credentials>,
    ) -> Result<Pulled> {
        self.pull_checked(store, image, sink, creds, self.opts.policy.as_deref())
            .await
    }

    /// [`Puller::pull_as`] checked against `policy` instead of the options' (crid's
    /// per-namespace policies). The check comes once the manifest is in, while the
    /// blobs download: none is committed and no layer unpacked before the verdict,
    /// and a refused image leaves nothing in the store.
    pub async fn pull_checked(
        &self,
        store: &Store,
        image: &str,
        sink: &dyn Sink,
        creds: Option<&Credentials>,
        policy: Option<&Policy>,
    ) -> Result<Pulled> {
        let r = reference::parse(image)?;
        if let Some(p) = policy {
            // A rejected scope needs no registry to say so.
            let scoped = p.requirements_for(&r);
            if scoped.rejects() {
                p.check(&r, &scoped, &Digest::of(b""), &Default::default())
                    .map_err(|e| RegistryError::Refused(Box::new(e)))?;
            }
        }
        let endpoints = self.registries.endpoints(&r)?;
        let mut last = None;
        for ep in &endpoints {
            let ep_creds = creds.filter(|_| self.may_send_creds(ep));
            if creds.is_some() && ep_creds.is_none() {
                tracing::debug!(
                    "{}: not sending the pull's credentials for {} there",
                    ep.reference.registry(),
                    r.registry()
                );
            }
            match self
                .pull_from(store, image, &r, ep, sink, ep_creds, policy)
                .await
            {
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

    /// Whether the credentials a pull was given for the image's registry may go
    /// to `ep`: the registry itself (where registries.conf's `location` puts it),
    /// or a mirror trusted with them.
    fn may_send_creds(&self, ep: &Endpoint) -> bool {
        let host = ep.reference.registry();
        !ep.mirror || self.opts.mirrors_with_credentials.iter().any(|m| m == host)
    }

    #[allow(clippy::too_many_arguments)]
    async fn pull_from(
        &self,
        store: &Store,
        image: &str,
        asked: &Reference,
        ep: &Endpoint,
        sink: &dyn Sink,
        creds: Option<&Credentials>,
        policy: Option<&Policy>,
    ) -> Result<Pulled> {
        let r = &ep.reference;
        let registry = r.registry().to_string();
        let auth = self.auth_for(r, creds)?;
        sink.event(&Event::Resolving {
            image: image.to_string(),
            endpoint: r.to_string(),
        });
        let client = self.client_for(&registry).await?;
        let mut ctx = PullCtx {
            names: Ctx {
                image,
                registry: &registry,
                mirror: ep.mirror,
                peer: false,
            },
            client: &client,
            ns: None,
            verdict: None,
        };

        let (raw, top_digest) = self
            .fetch_manifest(&ctx, r, &auth, r.digest(), sink)
            .await?;
        // The signatures are fetched and checked while the blobs download; a blob
        // is committed, and a layer unpacked, only once the policy lets the image in.
        let (give, verdict) = Verdict::pending();
        if policy.is_some() {
            ctx.verdict = Some(&verdict);
        }
        let check = async {
            let Some(p) = policy else {
                return Ok(None);
            };
            let checked = self
                .enforce(store, p, &ctx, asked, r, &auth, &top_digest)
                .await;
            give.give(checked.is_ok());
            checked
        };
        // From here on the pull writes blobs: keep prune away until the entry is in.
        let _guard = store.pull_guard().map_err(|source| RegistryError::Index {
            image: image.to_string(),
            source,
        })?;
        let _held = match self.opts.unpacker.as_ref() {
            Some(u) => Some(u.hold().map_err(|source| RegistryError::Unpack {
                image: image.to_string(),
                digest: top_digest.to_string(),
                source,
            })?),
            None => None,
        };
        // The check comes first: its refusal ends the pull, and the fetches, which
        // wait for the verdict, with it.
        let (signatures, (mut sources, raw, manifest_digest, media_type)) =
            futures_util::future::try_join(
                check,
                self.fetch_image(store, &ctx, r, &auth, &top_digest, raw, sink),
            )
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
        sources.retain(|(d, _)| *d != stored_digest);
        for (d, bytes) in &sources {
            store
                .put_blob(d, bytes)
                .map_err(|source| RegistryError::Store {
                    image: image.to_string(),
                    digest: d.to_string(),
                    source,
                })?;
        }
        let mut desc = Descriptor::new(
            MediaType::ImageManifest,
            stored_raw.len() as u64,
            oci_digest(&stored_digest),
        );
        let mut ann = std::collections::HashMap::new();
        ann.insert(REPO_DIGEST.to_string(), top_digest.to_string());
        if !sources.is_empty() {
            let list: Vec<&str> = sources.iter().map(|(d, _)| d.as_str()).collect();
            ann.insert(SOURCE_MANIFESTS.to_string(), list.join(","));
        }
        if let Some(s) = signatures {
            let d = s.store(store).map_err(|source| RegistryError::Store {
                image: image.to_string(),
                digest: "signatures".into(),
                source,
            })?;
            ann.insert(
                crate::distribution::layout::SIGNATURES.to_string(),
                d.to_string(),
            );
        }
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

    /// The image's manifests (the platform's, for an index) and blobs, fetched
    /// into the store: the registry's own manifests, the stored one and its digest
    /// and media type.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_image(
        &self,
        store: &Store,
        ctx: &PullCtx<'_>,
        r: &Reference,
        auth: &RegistryAuth,
        top_digest: &Digest,
        raw: Vec<u8>,
        sink: &dyn Sink,
    ) -> Result<(Vec<(Digest, Vec<u8>)>, Vec<u8>, Digest, String)> {
        // The registry's own bytes where they differ from what is stored (an index, a
        // Docker manifest), kept so the store serves the image by the same digests.
        let mut sources = vec![(top_digest.clone(), raw.clone())];
        let mut raw = raw;
        let mut manifest_digest = top_digest.clone();
        let mut media_type = detect_media_type(ctx, &raw, top_digest)?;
        if media_type == OCI_INDEX || media_type == DOCKER_LIST {
            let child = self.choose_platform(ctx, &raw, top_digest)?;
            let child_ref = r.clone_with_digest(child.to_string());
            let (child_raw, _) = self
                .fetch_manifest(ctx, &child_ref, auth, Some(child.as_str()), sink)
                .await?;
            media_type = detect_media_type(ctx, &child_raw, &child)?;
            if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
                return Err(ctx.bad_manifest(
                    &child,
                    format!("index entry is a {media_type}, not an image manifest"),
                ));
            }
            sources.push((child.clone(), child_raw.clone()));
            raw = child_raw;
            manifest_digest = child;
        }
        let manifest = parse_manifest(ctx, &raw, &manifest_digest)?;

        let unpacker = self.opts.unpacker.as_ref();
        // The registry gave the manifest, with this pull's credentials: the node may
        // read the image, and peers may now be asked for its blobs.
        let peers = self.peers_now().await;
        // An unpacking pull needs the config's diff_ids before the layers come.
        let jobs = match unpacker {
            Some(u) => {
                self.fetch_blob_via_peers(
                    store,
                    ctx,
                    r,
                    auth,
                    &manifest.config,
                    None,
                    sink,
                    &peers,
                )
                .await?;
                self.layer_jobs(store, ctx, u.as_ref(), &manifest)?
            }
            None => vec![None; manifest.layers.len()],
        };
        let mut blobs: Vec<(Blob, Option<LayerJob>)> = Vec::new();
        if unpacker.is_none() {
            blobs.push((manifest.config.clone(), None));
        }
        blobs.extend(manifest.layers.iter().cloned().zip(jobs));
        // The first failure stops the pull: the other downloads are dropped, and
        // their temp files with them.
        let mut fetches = Vec::with_capacity(blobs.len());
        for (b, job) in &blobs {
            let unpack = unpacker.zip(job.as_ref());
            let peers = &peers;
            fetches.push(async move {
                let u = self
                    .fetch_blob_via_peers(store, ctx, r, auth, b, unpack, sink, peers)
                    .await?;
                Ok::<_, RegistryError>((job, u))
            });
        }
        let outcomes = futures_util::stream::iter(fetches)
            .buffer_unordered(self.opts.max_concurrent.max(1))
            .try_collect::<Vec<_>>()
            .await?;
        // Layers that hardlink into the layers below them, once those are in
        // place, bottom first.
        let mut later: Vec<&LayerJob> = outcomes
            .iter()
            .filter(|(_, u)| *u == Some(Unpacked::NeedsBelow))
            .filter_map(|(job, _)| job.as_ref())
            .collect();
        later.sort_by_key(|j| j.below.len());
        if let Some(u) = unpacker {
            for job in later {
                self.unpack_stored(store, ctx, u, job, true, sink).await?;
            }
        }

        Ok((sources, raw, manifest_digest, media_type))
    }

    /// What an unpacking pull does with each layer: `None` for a layer that is in
    /// place already. An image whose config names no layers to unpack (not a
    /// container image) is stored without unpacking.
    fn layer_jobs(
        &self,
        store: &Store,
        ctx: &PullCtx<'_>,
        u: &dyn Unpacker,
        manifest: &ParsedManifest,
    ) -> Result<Vec<Option<LayerJob>>> {
        let config = store
            .read_blob(&manifest.config.digest, MAX_CONFIG_SIZE)
            .map_err(|source| RegistryError::Store {
                image: ctx.image.to_string(),
                digest: manifest.config.digest.to_string(),
                source,
            })?;
        let diff_ids = match unpack::diff_ids(&config) {
            Ok(d) if d.len() == manifest.layers.len() => d,
            Ok(d) => {
                return Err(ctx.bad_manifest(
                    &manifest.config.digest,
                    format!(
                        "the config has {} diff_ids for {} layers",
                        d.len(),
                        manifest.layers.len()
                    ),
                ))
            }
            Err(reason) => {
                tracing::info!("{}: not unpacked: {reason}", ctx.image);
                return Ok(vec![None; manifest.layers.len()]);
            }
        };
        let chains = unpack::chain_ids(&diff_ids);
        Ok(manifest
            .layers
            .iter()
            .zip(diff_ids)
            .enumerate()
            .map(|(i, (layer, diff_id))| {
                (!u.has(&chains[i])).then(|| LayerJob {
                    image: ctx.image.to_string(),
                    digest: layer.digest.clone(),
                    media_type: manifest.layer_types[i].clone(),
                    diff_id,
                    chain_id: chains[i].clone(),
                    below: chains[..i].to_vec(),
                })
            })
            .collect())
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
        // A mirror that is down or failing costs one retry, not the full backoff:
        // the next mirror or the registry itself may have it now. A peer, none.
        let retries = if ctx.peer {
            0
        } else if ctx.mirror {
            self.opts.retries.min(1)
        } else {
            self.opts.retries
        };
        if !e.transient() || *attempt > retries {
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
}
