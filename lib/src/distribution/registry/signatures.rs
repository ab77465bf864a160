//! The signature policy at pull time: which requirements apply to the image, the
//! signatures they need (attached in the registry as cosign attaches them, or in
//! registries.d's lookaside storage), and the verdict, which the pull's blob
//! commits and layer unpacks wait for ([`Verdict`]).
//!
//! The sigstore signatures that let an image in are kept in the store with it
//! (their manifest and payloads as blobs, named by the entry's
//! [`crate::distribution::layout::SIGNATURES`] annotation). A later pull of the
//! same digest checks those first, under the policy and keys of that moment, and
//! asks the registry only when they do not do.

use super::*;
use crate::distribution::layout::SIGNATURES;

/// Sigstore signatures that let an image in, to keep with it.
pub(super) enum KeptSignatures {
    /// Already in the store: the signature manifest's digest.
    Stored(Digest),
    /// Fetched by this pull: the signature manifest and its payloads.
    Fetched {
        manifest: (Digest, Vec<u8>),
        payloads: Vec<(Digest, Vec<u8>)>,
    },
}

impl KeptSignatures {
    /// Puts what was fetched into the store; the digest for the annotation.
    pub(super) fn store(self, store: &Store) -> std::result::Result<Digest, LayoutError> {
        match self {
            KeptSignatures::Stored(d) => Ok(d),
            KeptSignatures::Fetched { manifest, payloads } => {
                for (d, bytes) in &payloads {
                    store.put_blob(d, bytes)?;
                }
                store.put_blob(&manifest.0, &manifest.1)?;
                Ok(manifest.0)
            }
        }
    }
}

/// The signature policy's verdict on a pull, which its blob commits and layer
/// unpacks wait for: the blobs download while the signatures are fetched and
/// checked, and nothing is stored or unpacked before the policy lets the image in.
#[derive(Debug, Clone)]
pub(super) struct Verdict(tokio::sync::watch::Receiver<Option<bool>>);

/// Where the verdict is given, once.
pub(super) struct GiveVerdict(tokio::sync::watch::Sender<Option<bool>>);

impl Verdict {
    /// A verdict to come, and where to give it.
    pub(super) fn pending() -> (GiveVerdict, Verdict) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (GiveVerdict(tx), Verdict(rx))
    }

    /// Whether the image was let in: false when it was refused or the check
    /// ended without a verdict.
    pub(super) async fn wait(&self) -> bool {
        let mut rx = self.0.clone();
        let given = rx.wait_for(Option::is_some).await.map(|v| *v);
        matches!(given, Ok(Some(true)))
    }

    /// Returns once the image is let in, and never otherwise: for the work of a
    /// pull that is joined with the check, whose refusal then ends the pull.
    pub(super) async fn accepted(&self) {
        if !self.wait().await {
            std::future::pending::<()>().await
        }
    }
}

impl GiveVerdict {
    pub(super) fn give(self, accepted: bool) {
        // No one waiting is fine: the pull may have ended for another reason.
        let _ = self.0.send(Some(accepted));
    }
}

/// The signatures of a signature manifest, with their payloads.
struct Attachments {
    manifest: (Digest, Vec<u8>),
    found: Vec<(Digest, sigstore::Attached)>,
}

impl Puller {
    /// Checks `asked`, whose manifest `r` resolved to `digest`, against `policy`,
    /// fetching its attached signatures when a requirement needs them and
    /// registries.d says to look for them, unless those kept in `store` with an
    /// earlier pull of the image do. Returns the sigstore signatures to keep.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn enforce(
        &self,
        store: &Store,
        policy: &Policy,
        ctx: &PullCtx<'_>,
        asked: &Reference,
        r: &Reference,
        auth: &RegistryAuth,
        digest: &Digest,
    ) -> Result<Option<KeptSignatures>> {
        let scoped = policy.requirements_for(asked);
        let settings = self.opts.registries_d.for_image(asked);
        let mut found = crate::distribution::policy::Found::default();
        let mut kept = None;
        if scoped.wants_sigstore() && settings.use_sigstore_attachments == Some(true) {
            if let Some(stored) = self.stored_attachments(store, digest) {
                found.sigstore = stored.found.iter().map(|(_, a)| a.clone()).collect();
                if policy.check(asked, &scoped, digest, &found).is_ok() {
                    return Ok(Some(KeptSignatures::Stored(stored.manifest.0)));
                }
            }
            match self.sigstore_attachments(ctx, r, auth, digest).await? {
                Some(a) => {
                    found.sigstore = a.found.iter().map(|(_, a)| a.clone()).collect();
                    kept = Some(KeptSignatures::Fetched {
                        manifest: a.manifest,
                        payloads: a.found.into_iter().map(|(d, a)| (d, a.payload)).collect(),
                    });
                }
                None => found.sigstore = Vec::new(),
            }
        }
        if scoped.wants_simple() {
            if let Some(base) = &settings.lookaside {
                found.simple = self
                    .lookaside(base, asked.repository(), digest)
                    .await
                    .map_err(|reason| {
                        RegistryError::Refused(Box::new(crate::distribution::policy::Refused {
                            image: asked.to_string(),
                            policy: policy.path().to_path_buf(),
                            scope: scoped.scope.clone(),
                            requirement: format!("signedBy: {reason}"),
                        }))
                    })?;
                found.lookaside = Some(base.clone());
            }
        }
        policy
            .check(asked, &scoped, digest, &found)
            .map_err(|e| RegistryError::Refused(Box::new(e)))?;
        Ok(kept)
    }

    /// The sigstore signatures an earlier pull of the image at `digest` kept in
    /// `store`, if any are there whole.
    fn stored_attachments(&self, store: &Store, digest: &Digest) -> Option<Attachments> {
        let index = store.index().ok()?;
        let manifest = index.manifests().iter().find_map(|d| {
            let a = d.annotations().as_ref()?;
            (a.get(REPO_DIGEST).map(String::as_str) == Some(digest.as_str()))
                .then(|| a.get(SIGNATURES))
                .flatten()
                .and_then(|s| Digest::parse(s).ok())
        })?;
        let raw = store
            .read_blob(&manifest, crate::distribution::layout::MAX_MANIFEST_SIZE)
            .ok()?;
        let mut found = Vec::new();
        for (layer, signature) in payload_layers(&raw).ok()? {
            let payload = store.read_blob(&layer, sigstore::MAX_PAYLOAD).ok()?;
            if Digest::of(&payload) != layer {
                return None;
            }
            found.push((layer, sigstore::Attached { payload, signature }));
        }
        Some(Attachments {
            manifest: (manifest, raw),
            found,
        })
    }

    /// The GPG signatures of the image at `digest` in `repository` from lookaside
    /// storage `base` (file://, http://, https://), signature-1 on until one is
    /// missing. No credentials are sent.
    async fn lookaside(
        &self,
        base: &str,
        repository: &str,
        digest: &Digest,
    ) -> std::result::Result<Vec<Vec<u8>>, String> {
        use crate::distribution::policy::gpg;
        gpg::check_lookaside(base)?;
        if base.starts_with("file://") {
            let (base, repo, d) = (base.to_string(), repository.to_string(), digest.clone());
            return tokio::task::spawn_blocking(move || {
                gpg::read_lookaside_files(&base, &repo, &d)
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        let client = match self.lookaside_client.get() {
            Some(c) => c.clone(),
            None => {
                let c = reqwest::Client::builder()
                    .timeout(self.opts.stall_timeout)
                    .connect_timeout(self.opts.connect_timeout)
                    .build()
                    .map_err(|e| format!("lookaside client: {e}"))?;
                self.lookaside_client.get_or_init(|| c).clone()
            }
        };
        let mut out = Vec::new();
        for n in 1..=gpg::MAX_SIGNATURES {
            let url = gpg::lookaside_url(base, repository, digest, n);
            let mut resp = client
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("{url}: {}", crate::one_line(&e)))?;
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                break;
            }
            if !resp.status().is_success() {
                return Err(format!("{url}: HTTP {}", resp.status()));
            }
            let mut data = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("{url}: {}", crate::one_line(&e)))?
            {
                data.extend_from_slice(&chunk);
                if data.len() as u64 > gpg::MAX_SIGNATURE {
                    return Err(format!("{url}: larger than {} bytes", gpg::MAX_SIGNATURE));
                }
            }
            out.push(data);
        }
        Ok(out)
    }

    /// The signatures attached to the image of `digest` in `r`'s repository, as
    /// cosign attaches them: None when the signature tag does not exist. Layers
    /// that are not payloads, or too big, are passed over; each payload's digest is
    /// checked.
    async fn sigstore_attachments(
        &self,
        ctx: &PullCtx<'_>,
        r: &Reference,
        auth: &RegistryAuth,
        digest: &Digest,
    ) -> Result<Option<Attachments>> {
        let at = Reference::with_tag(
            r.registry().to_string(),
            r.repository().to_string(),
            sigstore::signature_tag(digest),
        );
        let raw = match ctx
            .client
            .manifest(
                &at,
                auth,
                &[OCI_MANIFEST],
                crate::distribution::layout::MAX_MANIFEST_SIZE,
            )
            .await
        {
            Ok(raw) => raw,
            Err(e) => {
                let e = ctx.classify(e, "signatures");
                if e.kind() == ErrorKind::NotFound {
                    return Ok(None);
                }
                return Err(e);
            }
        };
        let manifest = Digest::of(&raw);
        let layers = payload_layers(&raw)
            .map_err(|e| ctx.bad_manifest(&manifest, format!("signature manifest: {e}")))?;
        let mut found = Vec::new();
        for (layer, signature) in layers {
            let payload = self
                .small_blob(ctx, &at, auth, &layer, sigstore::MAX_PAYLOAD)
                .await?;
            found.push((layer, sigstore::Attached { payload, signature }));
        }
        Ok(Some(Attachments {
            manifest: (manifest, raw),
            found,
        }))
    }

    /// A blob of at most `limit` bytes, in memory, its digest checked.
    async fn small_blob(
        &self,
        ctx: &PullCtx<'_>,
        r: &Reference,
        auth: &RegistryAuth,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let what = digest.to_string();
        let body = ctx
            .client
            .blob(r, what.as_str(), 0, auth, None)
            .await
            .map_err(|e| ctx.classify(e, &what))?;
        let buf = http::read_bounded(body.response, limit)
            .await
            .map_err(|e| match e {
                HttpError::TooLarge { .. } => {
                    ctx.bad_manifest(digest, format!("signature payload over {limit} bytes"))
                }
                HttpError::Request(e) => ctx.network(&what, &e),
                other => ctx.classify(other, &what),
            })?;
        let actual = Digest::of(&buf);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                image: ctx.image.to_string(),
                registry: ctx.registry.to_string(),
                what: "signature payload",
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(buf)
    }
}

/// The payload layers of a sigstore signature manifest, with their signatures:
/// layers that are not payloads, or too big, are passed over; at most
/// [`sigstore::MAX_SIGNATURES`] are looked at.
fn payload_layers(raw: &[u8]) -> std::result::Result<Vec<(Digest, String)>, serde_json::Error> {
    let manifest: serde_json::Value = serde_json::from_slice(raw)?;
    let layers = manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for l in layers.iter().take(sigstore::MAX_SIGNATURES) {
        let media_type = l.get("mediaType").and_then(|m| m.as_str());
        let size = l.get("size").and_then(|s| s.as_u64()).unwrap_or(u64::MAX);
        let signature = l
            .get("annotations")
            .and_then(|a| a.get(sigstore::SIGNATURE_ANNOTATION))
            .and_then(|s| s.as_str());
        let digest = l
            .get("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| Digest::parse(d).ok());
        let (Some(signature), Some(digest)) = (signature, digest) else {
            continue;
        };
        if media_type != Some(sigstore::PAYLOAD_MEDIA_TYPE) || size > sigstore::MAX_PAYLOAD {
            continue;
        }
        out.push((digest, signature.to_string()));
    }
    Ok(out)
}
