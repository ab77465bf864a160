//! Unpacking while pulling: the hook through which a pull hands each layer's bytes,
//! as they arrive, to whatever lays layers down (the layer cache of
//! [`crate::rootfs::bundle`]), and the image-spec arithmetic both sides share.

use crate::distribution::digest::{Digest, Hasher};
use std::io::Read;

/// One layer of an image, as an unpacker needs it.
#[derive(Debug, Clone)]
pub struct LayerJob {
    /// The image being pulled, for messages.
    pub image: String,
    /// The compressed blob's digest: what arrives is checked against it.
    pub digest: Digest,
    /// The blob's media type (gzip, zstd or plain tar).
    pub media_type: String,
    /// The uncompressed tar's digest, from the image config.
    pub diff_id: Digest,
    /// The layer's chain id: where it is kept.
    pub chain_id: Digest,
    /// The chain ids of the layers below it, bottom first.
    pub below: Vec<Digest>,
}

/// How an unpack ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpacked {
    /// The layer is in place.
    Done,
    /// The layer hardlinks to a file only the layers below hold: unpack it again,
    /// from the stored blob, once they are in place.
    NeedsBelow,
}

/// How an unpacker knows that the blob bytes it read are the right ones.
#[derive(Debug)]
pub enum BlobBytes {
    /// Read from the store, where they were verified when written.
    Stored,
    /// Read as they arrive, while the blob writer hashes them: the layer is put in
    /// place only once the writer says (`true`) that the blob's digest matched, so
    /// the bytes are hashed once. Anything else (`false`, or the sender gone)
    /// leaves nothing.
    Arriving(std::sync::mpsc::Receiver<bool>),
}

/// A failed unpack: its message names the layer and the cause.
#[derive(Debug)]
pub struct UnpackError {
    /// The layer's content is at fault (a bad archive, a hostile entry, a digest
    /// that does not match), not the node.
    pub bad_content: bool,
    /// What failed.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl UnpackError {
    /// A failure of the node (disk, permissions), not of the layer.
    pub fn local(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        UnpackError {
            bad_content: false,
            source: Box::new(e),
        }
    }
}

impl std::fmt::Display for UnpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for UnpackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// Whatever holds unpacked layers.
pub trait Unpacker: Send + Sync + std::fmt::Debug {
    /// Keeps the unpacker's garbage collection away until the returned guard is
    /// dropped: a pull holds it from its first layer until the image is named.
    fn hold(&self) -> Result<Box<dyn Send + Sync>, UnpackError>;
    /// Whether the layer with this chain id is in place already.
    fn has(&self, chain_id: &Digest) -> bool;
    /// Unpacks a layer from its compressed bytes. The layer is committed only once
    /// its diff_id matched and the blob's digest is known to (see [`BlobBytes`]); a
    /// failure leaves nothing behind. `below_ready`: the layers below are in place
    /// and may be read.
    fn unpack(
        &self,
        job: &LayerJob,
        blob: &mut (dyn Read + Send),
        verified: BlobBytes,
        below_ready: bool,
    ) -> Result<Unpacked, UnpackError>;
}

/// Chain ids (image-spec): the first is the first diff_id; each next one is the
/// digest of "PREVIOUS DIFF_ID".
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let mut h = Hasher::new();
                h.update(format!("{prev} {d}").as_bytes());
                h.finish()
            }
        };
        out.push(next);
    }
    out
}

/// The diff_ids of an image config (`rootfs.diff_ids`), or why there are none.
pub fn diff_ids(config: &[u8]) -> Result<Vec<Digest>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| format!("config is not JSON: {e}"))?;
    v["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| "config has no rootfs.diff_ids".to_string())?
        .iter()
        .map(|d| {
            let s = d
                .as_str()
                .ok_or_else(|| format!("diff_id {d} is not a string"))?;
            Digest::parse(s).map_err(|e| e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn diff_ids_of_configs() {
        let a = Digest::of(b"a");
        let cfg = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{a}"]}}}}"#);
        assert_eq!(diff_ids(cfg.as_bytes()).unwrap(), vec![a]);
        assert!(diff_ids(b"{}").unwrap_err().contains("no rootfs.diff_ids"));
        assert!(diff_ids(br#"{"rootfs":{"diff_ids":[1]}}"#)
            .unwrap_err()
            .contains("not a string"));
        assert!(diff_ids(b"[").unwrap_err().contains("not JSON"));
    }
}
