//! The layer cache, `<root>/layers/<chain-id>/diff`: every layer unpacked once, in
//! overlay form, shared as a lower directory by every rootfs that has it.
//!
//! A layer is unpacked into `.tmp-*` beside its place and renamed into place only
//! once its bytes matched the blob digest and the diff_id, so a layer that is
//! visible is whole. Removal is the same in reverse: a layer is renamed to `.rm-*`
//! first, so a removal cut short never leaves a partial layer under its chain id.
//! Both kinds of debris are swept when nobody works in the cache.
//!
//! One lock file orders the work: unpackers, pulls that unpack and bundles being
//! made hold it shared; removal holds it exclusive.

use crate::distribution::digest::Digest;
use crate::distribution::layout::Store;
use crate::distribution::unpack::{BlobBytes, LayerJob, UnpackError, Unpacked, Unpacker};
use crate::rootfs::bundle::{BundleError, Result};
use crate::rootfs::layer::{self, ApplyOptions, Compression, Form, LayerError};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A layer of an image: its blob's digest, media type and diff_id.
pub type LayerBlob = (Digest, String, Digest);

/// The layer cache: `<root>/layers`.
#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
}

/// What [`LayerCache::remove_unused`] removed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LayerPruneReport {
    /// Layers removed.
    pub layers: u64,
    /// Their bytes (allocated blocks).
    pub bytes: u64,
    /// Stale records of bundles that no longer exist.
    pub stale_records: u64,
    /// Debris of killed unpacks and removals.
    pub temp_dirs: u64,
}

impl LayerCache {
    /// The cache under a state root.
    pub fn new(root: &Path) -> Self {
        LayerCache {
            dir: root.join("layers"),
        }
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a layer's overlay-form tree is.
    pub fn diff_dir(&self, chain_id: &Digest) -> PathBuf {
        self.dir.join(chain_id.hex()).join("diff")
    }

    /// Whether the layer is in place.
    pub fn has(&self, chain_id: &Digest) -> bool {
        self.diff_dir(chain_id).is_dir()
    }

    /// The cache's lock file: shared by unpackers and bundles being made,
    /// exclusive for removals and sweeps.
    fn lock_file(&self) -> Result<(File, PathBuf)> {
        fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        let p = self.dir.join(".lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err("opening", &p))?;
        Ok((f, p))
    }

    /// The cache's lock, shared or exclusive, held until the file is dropped.
    pub fn lock(&self, exclusive: bool) -> Result<File> {
        let (f, p) = self.lock_file()?;
        if exclusive { f.lock() } else { f.lock_shared() }.map_err(io_err("locking", &p))?;
        Ok(f)
    }

    /// The lock taken exclusively, unless someone holds it.
    pub fn try_lock_exclusive(&self) -> Result<Option<File>> {
        let (f, p) = self.lock_file()?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io_err("locking", &p)(e)),
        }
    }

    /// Makes sure every layer of an image is unpacked, unpacking the missing ones
    /// from the store in parallel. A layer that hardlinks to a file of the layers
    /// below it waits for them: it is unpacked again once they are, with the file
    /// copied up. Returns how many were unpacked. The caller holds the lock.
    pub fn ensure(&self, store: &Store, layers: &[LayerBlob], chains: &[Digest]) -> Result<usize> {
        let missing: Vec<usize> = (0..chains.len())
            .filter(|&i| !self.has(&chains[i]))
            .collect();
        let results: Vec<(usize, Result<()>)> = std::thread::scope(|s| {
            let handles: Vec<_> = missing
                .iter()
                .map(|&i| s.spawn(move || self.unpack_stored(store, &layers[i], &chains[i], &[])))
                .collect();
            handles
                .into_iter()
                .zip(missing.iter().copied())
                .map(|(h, i)| {
                    let r = h.join().unwrap_or_else(|_| {
                        Err(BundleError::Io {
                            action: "unpacking (thread panicked) into",
                            path: self.dir.clone(),
                            source: io::Error::other("panic"),
                        })
                    });
                    (i, r)
                })
                .collect()
        });
        let mut linked_below = Vec::new();
        for (i, r) in results {
            match r {
                Err(BundleError::Layer(LayerError::LinkTargetMissing { .. })) if i > 0 => {
                    linked_below.push(i)
                }
                r => r?,
            }
        }
        // In order, so that the layers below each are complete.
        for i in linked_below {
            let lower: Vec<PathBuf> = chains[..i].iter().rev().map(|c| self.diff_dir(c)).collect();
            self.unpack_stored(store, &layers[i], &chains[i], &lower)?;
        }
        Ok(missing.len())
    }

    /// Unpacks a layer from its blob in the store. Stored blobs were verified when
    /// they were written; the diff_id check binds what is unpacked to the image
    /// config (and catches a blob changed on disk).
    fn unpack_stored(
        &self,
        store: &Store,
        layer: &LayerBlob,
        chain: &Digest,
        lower: &[PathBuf],
    ) -> Result<()> {
        let (digest, media_type, diff_id) = layer;
        let blob = store.blob_path(digest);
        let f = File::open(&blob).map_err(io_err("opening", &blob))?;
        self.unpack_from(
            f,
            digest,
            media_type,
            diff_id,
            BlobBytes::Stored,
            chain,
            lower,
        )
    }

    /// Unpacks a layer from `blob` into a temp dir and renames it into place once
    /// the diff_id matched and, for bytes still arriving, the blob writer found
    /// the blob's digest right. A layer someone else put in place meanwhile is as
    /// good as this one.
    #[allow(clippy::too_many_arguments)]
    fn unpack_from(
        &self,
        blob: impl Read + Send,
        digest: &Digest,
        media_type: &str,
        diff_id: &Digest,
        verified: BlobBytes,
        chain: &Digest,
        lower: &[PathBuf],
    ) -> Result<()> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{}-", chain.short()))
            .tempdir_in(&self.dir)
            .map_err(io_err("creating a temp dir in", &self.dir))?;
        let diff = tmp.path().join("diff");
        fs::create_dir(&diff).map_err(io_err("creating", &diff))?;
        let opts = ApplyOptions {
            form: Form::Overlay,
            privileged: is_root(),
            digest: None,
            diff_id: Some(diff_id.clone()),
            compression: Compression::from_media_type(media_type),
            lower: lower.to_vec(),
        };
        let tmp_path = tmp.keep();
        if let Err(e) = layer::apply(&diff, blob, digest.as_str(), &opts) {
            let _ = remove_tree(&tmp_path);
            return Err(e.into());
        }
        let dest = self.dir.join(chain.hex());
        if let BlobBytes::Arriving(verdict) = verified {
            if verdict.recv() != Ok(true) {
                let _ = remove_tree(&tmp_path);
                return Err(BundleError::Io {
                    action: "keeping the layer at",
                    path: dest,
                    source: io::Error::other(format!("blob {digest} was not stored whole")),
                });
            }
        }
        match fs::rename(&tmp_path, &dest) {
            Ok(()) => Ok(()),
            // Another unpacker put it in place meanwhile: theirs is as good as ours.
            Err(e) if dest.join("diff").is_dir() => {
                tracing::debug!("layer {chain} unpacked concurrently ({e})");
                remove_tree(&tmp_path)
            }
            Err(e) => {
                let _ = remove_tree(&tmp_path);
                Err(io_err("renaming into", &dest)(e))
            }
        }
    }

    /// Removes every layer whose chain id (hex) `keep` does not hold, and the debris
    /// of killed unpacks and removals. The caller holds the lock exclusively. Each
    /// layer is renamed out of sight at once; with `background`, a thread deletes
    /// the renamed trees after this returns (their bytes are not counted), so the
    /// caller does not wait for a cold tree's unlinks.
    pub fn remove_unused(
        &self,
        keep: &HashSet<String>,
        background: bool,
    ) -> Result<LayerPruneReport> {
        let mut report = LayerPruneReport::default();
        let entries = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(io_err("reading", &self.dir)(e)),
        };
        let mut doomed = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name == ".lock" || keep.contains(&name) {
                continue;
            }
            if name.starts_with('.') {
                // Another removal's thread may be deleting a `.rm-*` now: it is
                // left to that thread (and to the next sweep, if it dies).
                if !(background && name.starts_with(".rm-")) {
                    doomed.push(e.path());
                    report.temp_dirs += 1;
                }
                continue;
            }
            // Out of sight first: a removal cut short leaves `.rm-*`, never a
            // partial layer under its chain id. Unique: the same layer may be
            // pulled and removed again while an earlier copy is still going.
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let to = self.dir.join(format!(".rm-{name}-{stamp}"));
            fs::rename(e.path(), &to).map_err(io_err("renaming", &e.path()))?;
            doomed.push(to);
            report.layers += 1;
        }
        if background {
            std::thread::spawn(move || {
                for d in doomed {
                    if let Err(e) = remove_tree(&d) {
                        tracing::warn!("removing an unused layer: {e}");
                    }
                }
            });
            return Ok(report);
        }
        for d in doomed {
            report.bytes += allocated(&d);
            remove_tree(&d)?;
        }
        Ok(report)
    }

    /// Removes the debris (`.tmp-*`, `.rm-*`) that killed unpackers and removals
    /// left, when nobody works in the cache now (its lock is free for the taking);
    /// returns how many went. With the lock held elsewhere nothing is touched:
    /// those may be in progress.
    pub fn sweep(&self) -> Result<usize> {
        if !self.dir.is_dir() {
            return Ok(0);
        }
        let Some(_lock) = self.try_lock_exclusive()? else {
            return Ok(0);
        };
        let mut n = 0;
        for e in fs::read_dir(&self.dir)
            .map_err(io_err("reading", &self.dir))?
            .flatten()
        {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".tmp-") || name.starts_with(".rm-") {
                remove_tree(&e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Unpacker for LayerCache {
    fn hold(&self) -> std::result::Result<Box<dyn Send + Sync>, UnpackError> {
        Ok(Box::new(self.lock(false).map_err(UnpackError::local)?))
    }

    fn has(&self, chain_id: &Digest) -> bool {
        LayerCache::has(self, chain_id)
    }

    fn unpack(
        &self,
        job: &LayerJob,
        blob: &mut (dyn Read + Send),
        verified: BlobBytes,
        below_ready: bool,
    ) -> std::result::Result<Unpacked, UnpackError> {
        // Held for the unpack itself too: a pull given up on keeps no guard, and
        // its unpack still must not see its temp dir swept.
        let _lock = self.lock(false).map_err(UnpackError::local)?;
        let lower: Vec<PathBuf> = if below_ready {
            job.below.iter().rev().map(|c| self.diff_dir(c)).collect()
        } else {
            Vec::new()
        };
        match self.unpack_from(
            blob,
            &job.digest,
            &job.media_type,
            &job.diff_id,
            verified,
            &job.chain_id,
            &lower,
        ) {
            Ok(()) => Ok(Unpacked::Done),
            Err(BundleError::Layer(LayerError::LinkTargetMissing { .. }))
                if !below_ready && !job.below.is_empty() =>
            {
                Ok(Unpacked::NeedsBelow)
            }
            Err(e) => Err(UnpackError {
                bad_content: matches!(
                    e,
                    BundleError::Layer(
                        LayerError::Entry { .. }
                            | LayerError::Read { .. }
                            | LayerError::DigestMismatch { .. }
                            | LayerError::LinkTargetMissing { .. }
                    )
                ),
                source: Box::new(e),
            }),
        }
    }
}

/// The bytes of the blocks a tree takes on disk (hardlinked files counted once).
fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Removes a tree without following symlinks in it; a tree already gone is no error.
pub(crate) fn remove_tree(p: &Path) -> Result<()> {
    let parent = p.parent().unwrap_or(Path::new("/"));
    let name = p.file_name().unwrap_or_default();
    let fd = rustix::fs::open(
        parent,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| io_err("opening", parent)(e.into()))?;
    match crate::rootfs::layer::remove_all_at(&fd, name) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(io_err("removing", p)(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debris_is_swept_only_when_nobody_holds_the_cache() {
        let root = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(root.path());
        assert_eq!(cache.sweep().unwrap(), 0, "no cache yet");
        let half = cache.dir.join(".tmp-abc-123");
        fs::create_dir_all(half.join("diff/etc")).unwrap();
        let removing = cache.dir.join(".rm-0123");
        fs::create_dir_all(removing.join("diff/usr")).unwrap();
        fs::create_dir_all(cache.dir.join("0123abcd/diff")).unwrap();
        let held = cache.lock(false).unwrap();
        assert_eq!(cache.sweep().unwrap(), 0);
        assert!(half.exists(), "an unpacker may still be writing it");
        drop(held);
        assert_eq!(cache.sweep().unwrap(), 2);
        assert!(!half.exists() && !removing.exists());
        assert!(
            cache.dir.join("0123abcd/diff").is_dir(),
            "complete layers stay"
        );
    }

    #[test]
    fn unused_layers_go_and_kept_ones_stay() {
        let root = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(root.path());
        for name in ["aa", "bb", ".tmp-cc-1"] {
            fs::create_dir_all(cache.dir.join(name).join("diff")).unwrap();
            fs::write(cache.dir.join(name).join("diff/f"), vec![7u8; 10_000]).unwrap();
        }
        let _held = cache.lock(true).unwrap();
        let keep: HashSet<String> = ["aa".to_string()].into();
        let r = cache.remove_unused(&keep, false).unwrap();
        assert_eq!((r.layers, r.temp_dirs), (1, 1));
        assert!(r.bytes >= 10_000, "{r:?}");
        assert!(cache.dir.join("aa/diff/f").is_file());
        assert!(!cache.dir.join("bb").exists());
        assert_eq!(
            fs::read_dir(&cache.dir).unwrap().count(),
            2,
            "aa and the lock are all that is left"
        );
    }
}
