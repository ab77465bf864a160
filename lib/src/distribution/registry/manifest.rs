//! Manifests: fetched raw (bounded, digest-checked), parsed (OCI and Docker
//! schema 2 manifests, indexes and manifest lists), a platform chosen, Docker
//! manifests rewritten as OCI ones.

use super::*;

pub(super) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(super) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(super) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(super) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(super) const ACCEPT: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

impl Puller {
    pub(super) async fn fetch_manifest(
        &self,
        ctx: &PullCtx<'_>,
        r: &Reference,
        auth: &RegistryAuth,
        expected: Option<&str>,
        sink: &dyn Sink,
    ) -> Result<(Vec<u8>, Digest)> {
        let mut attempt = 1;
        let raw = loop {
            match ctx
                .client
                .manifest(
                    r,
                    auth,
                    ACCEPT,
                    crate::distribution::layout::MAX_MANIFEST_SIZE,
                )
                .await
            {
                Ok(raw) => break raw,
                Err(e) => {
                    let e = ctx.classify(e, "manifest");
                    if !self.backoff(ctx, "manifest", sink, &mut attempt, &e).await {
                        return Err(e);
                    }
                }
            }
        };
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
        Ok((raw, actual))
    }

    pub(super) fn choose_platform(
        &self,
        ctx: &Ctx<'_>,
        raw: &[u8],
        digest: &Digest,
    ) -> Result<Digest> {
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
}

pub(super) fn oci_digest(d: &Digest) -> oci_spec::image::Digest {
    // A validated sha256 digest always parses.
    d.as_str()
        .parse()
        .unwrap_or_else(|_| unreachable!("validated digest {d} rejected by oci-spec"))
}

/// The manifest's media type, from its `mediaType` field or its shape.
/// The media type of a parsed manifest or index: its `mediaType` field, else what
/// its shape says (an OCI index has `manifests`, an OCI manifest `config`), as OCI
/// image-spec lets both omit the field.
pub fn media_type_of(v: &serde_json::Value) -> Option<&str> {
    match v.get("mediaType").and_then(|m| m.as_str()) {
        Some(m) => Some(m),
        None if v.get("manifests").is_some() => Some(OCI_INDEX),
        None if v.get("config").is_some() => Some(OCI_MANIFEST),
        None => None,
    }
}

pub(super) fn detect_media_type(ctx: &Ctx<'_>, raw: &[u8], digest: &Digest) -> Result<String> {
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
    let Some(mt) = media_type_of(&v).map(str::to_string) else {
        return Err(ctx.bad_manifest(digest, "neither a manifest nor an index".into()));
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

pub(super) struct ParsedManifest {
    pub(super) config: Blob,
    pub(super) layers: Vec<Blob>,
    /// Each layer's media type.
    pub(super) layer_types: Vec<String>,
}

pub(super) const LAYER_TYPES: &[&str] = &[
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

pub(super) const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

pub(super) fn parse_manifest(ctx: &Ctx<'_>, raw: &[u8], digest: &Digest) -> Result<ParsedManifest> {
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
    let list = v
        .get("layers")
        .and_then(|l| l.as_array())
        .ok_or_else(|| ctx.bad_manifest(digest, "no layers list".into()))?;
    let layers = list
        .iter()
        .enumerate()
        .map(|(i, l)| blob(l, &format!("layer {i}"), LAYER_TYPES, None))
        .collect::<Result<Vec<_>>>()?;
    // Checked against LAYER_TYPES above.
    let layer_types = list
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap_or_default().to_string())
        .collect();
    Ok(ParsedManifest {
        config,
        layers,
        layer_types,
    })
}

/// Rewrites a Docker schema 2 manifest as an OCI image manifest over the same blobs.
pub(super) fn docker_to_oci(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn docker_manifests_convert_to_oci_types() {
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
    pub(super) fn malformed_manifests_are_named() {
        let ctx = Ctx {
            image: "x",
            registry: "r",
            mirror: false,
            peer: false,
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
}
