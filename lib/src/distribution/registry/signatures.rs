//! The signature policy at pull time: which requirements apply to the image, the
//! signatures they need (attached in the registry as cosign attaches them, or in
//! registries.d's lookaside storage), and the verdict, before any blob comes.

use super::*;

impl Puller {
    /// Checks `asked`, whose manifest `r` resolved to `digest`, against `policy`,
    /// fetching its attached signatures when a requirement needs them and
    /// registries.d says to look for them.
    pub(super) async fn enforce(
        &self,
        policy: &Policy,
        ctx: &PullCtx<'_>,
        asked: &Reference,
        r: &Reference,
        auth: &RegistryAuth,
        digest: &Digest,
    ) -> Result<()> {
        let scoped = policy.requirements_for(asked);
        let settings = self.opts.registries_d.for_image(asked);
        let mut found = crate::distribution::policy::Found::default();
        if scoped.wants_sigstore() && settings.use_sigstore_attachments == Some(true) {
            found.sigstore = self.sigstore_attachments(ctx, r, auth, digest).await?;
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
            .map_err(|e| RegistryError::Refused(Box::new(e)))
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
    /// cosign attaches them: none when the signature tag does not exist. Layers
    /// that are not payloads, or too big, are passed over; each payload's digest is
    /// checked.
    async fn sigstore_attachments(
        &self,
        ctx: &PullCtx<'_>,
        r: &Reference,
        auth: &RegistryAuth,
        digest: &Digest,
    ) -> Result<Vec<sigstore::Attached>> {
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
                    return Ok(Vec::new());
                }
                return Err(e);
            }
        };
        ctx.manifest_size(raw.len())?;
        let manifest: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| ctx.bad_manifest(&Digest::of(&raw), format!("signature manifest: {e}")))?;
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
            let layer_digest = l
                .get("digest")
                .and_then(|d| d.as_str())
                .and_then(|d| Digest::parse(d).ok());
            let (Some(signature), Some(layer_digest)) = (signature, layer_digest) else {
                continue;
            };
            if media_type != Some(sigstore::PAYLOAD_MEDIA_TYPE) || size > sigstore::MAX_PAYLOAD {
                continue;
            }
            let payload = self
                .small_blob(ctx, &at, auth, &layer_digest, sigstore::MAX_PAYLOAD)
                .await?;
            out.push(sigstore::Attached {
                payload,
                signature: signature.to_string(),
            });
        }
        Ok(out)
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
        let mut body = ctx
            .client
            .blob(r, what.as_str(), 0, auth)
            .await
            .map_err(|e| ctx.classify(e, &what))?;
        let mut buf = Vec::new();
        while let Some(chunk) = body
            .response
            .chunk()
            .await
            .map_err(|e| ctx.network(&what, &e))?
        {
            buf.extend_from_slice(&chunk);
            if buf.len() as u64 > limit {
                return Err(
                    ctx.bad_manifest(digest, format!("signature payload over {limit} bytes"))
                );
            }
        }
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
