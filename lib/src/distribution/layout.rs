//! The shared image store: an OCI image layout on disk (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) that skopeo's `oci:` transport and umoci read as they are.
//!
//! Every image is one manifest descriptor in `index.json`, named by its
//! `org.opencontainers.image.ref.name` annotation; blobs are shared between images.
//!
//! Crash safety comes from ordering, not from repair:
//! - a blob is written to a temp file under `.ingest/`, hashed while it streams,
//!   fsynced, then renamed into `blobs/sha256/` (and the directory fsynced), so a
//!   file under `blobs/` is always complete and matches its name;
//! - an image's blobs are all in place before its entry is added to `index.json`;
//! - `index.json` changes under an exclusive lock on `.index.lock` and is replaced
//!   atomically (temp file, fsync, rename).
//!
//! Pulls hold a shared lock on `.gc.lock` from their first blob to their index entry;
//! [`Store::prune`] takes it exclusively, so it never deletes the blobs of a pull in
//! flight, and any file left in `.ingest/` while it holds the lock is debris of a
//! killed process.
//!
//! Registry access lives in [`crate::distribution::registry`]; this module knows nothing of HTTP.

use crate::distribution::digest::{Digest, DigestError, Hasher};
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The annotation naming an image in `index.json` (OCI image-spec annotations).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation holding the digest the registry resolved the reference to (an image
/// index digest for multi-platform images); it is what `imgpull` prints.
pub const REPO_DIGEST: &str = "io.crikit.image.repo-digest";
/// The annotation listing, comma-separated, the manifests as the registry served
/// them where they differ from the stored one (the image index of a multi-platform
/// image, a Docker manifest before its conversion): kept as blobs so the store can
/// serve an image with the registry's own digests (`imgserve`).
pub const SOURCE_MANIFESTS: &str = "io.crikit.image.source-manifests";
/// The annotation holding the digest of the sigstore signature manifest (what the
/// registry served at the image's `sha256-HEX.sig` tag) whose signatures let the
/// image in; it and its payload layers are kept as blobs, so a later pull checks
/// them under the policy of that moment without asking the registry again.
pub const SIGNATURES: &str = "io.crikit.image.signatures";
/// Upper bound on a manifest or image index, as containerd applies.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Upper bound on an image config blob read into memory.
pub const MAX_CONFIG_SIZE: u64 = 16 << 20;

/// Errors from the image store.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A blob's content does not hash to its expected digest.
    #[error("blob {expected} has digest {actual}")]
    DigestMismatch {
        /// The digest the manifest named.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// A blob's size differs from its descriptor.
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Size from the descriptor.
        expected: u64,
        /// Bytes that arrived (at least).
        actual: u64,
    },
    /// Filesystem trouble at a path.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done ("writing", "reading", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The directory exists but is not an OCI image layout.
    #[error("{} is not an OCI image layout: {reason}", path.display())]
    NotALayout {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `index.json` or a stored manifest does not parse.
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No image by that name.
    #[error("no image named {0:?} in the store")]
    ImageNotFound(String),
    /// A blob is not in the store.
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    /// A blob too large to read into memory.
    #[error("blob {digest} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A descriptor carries an invalid digest.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

impl LayoutError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        LayoutError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when the error means the named image or blob does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            LayoutError::ImageNotFound(_) | LayoutError::BlobNotFound(_)
        )
    }
}

type Result<T, E = LayoutError> = std::result::Result<T, E>;

/// One image in the store, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageEntry {
    /// The full reference it was pulled as (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The digest of the stored manifest.
    pub manifest_digest: String,
    /// The digest the registry resolved the reference to (index or manifest).
    pub repo_digest: String,
    /// The manifest's media type.
    pub media_type: String,
    /// The index.json descriptor itself.
    #[serde(skip)]
    pub descriptor: Descriptor,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneReport {
    /// Blobs deleted.
    pub blobs: u64,
    /// Bytes freed (blobs and stale temp files).
    pub bytes: u64,
    /// Stale temp files deleted from `.ingest/`.
    pub temp_files: u64,
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct LockGuard(File);

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Store {
    /// Opens the layout at `dir`, creating it (and its parents) when missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let store = Store { dir };
        store.init()?;
        Ok(store)
    }

    /// Opens an existing layout without creating anything.
    pub fn open_existing(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let layout = dir.join("oci-layout");
        if !layout.is_file() {
            return Err(LayoutError::NotALayout {
                path: dir,
                reason: "no oci-layout file".into(),
            });
        }
        Ok(Store { dir })
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn init(&self) -> Result<()> {
        let blobs = self.dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| LayoutError::io("creating", &blobs, e))?;
        let ingest = self.ingest_dir();
        fs::create_dir_all(&ingest).map_err(|e| LayoutError::io("creating", &ingest, e))?;
        let layout = self.dir.join("oci-layout");
        match fs::read(&layout) {
            Ok(data) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&data).map_err(|e| LayoutError::NotALayout {
                        path: self.dir.clone(),
                        reason: format!("oci-layout: {e}"),
                    })?;
                if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
                    return Err(LayoutError::NotALayout {
                        path: self.dir.clone(),
                        reason: "oci-layout has no imageLayoutVersion 1.0.0".into(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.replace_file(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            }
            Err(e) => return Err(LayoutError::io("reading", &layout, e)),
        }
        let index = self.dir.join("index.json");
        if !index.exists() {
            let _lock = self.lock_index()?;
            if !index.exists() {
                self.write_index(&empty_index())?;
            }
        }
        Ok(())
    }

    fn ingest_dir(&self) -> PathBuf {
        self.dir.join(".ingest")
    }

    /// The path a blob has (or would have) in the store.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }

    /// Whether the blob is in the store. A blob present is complete and verified:
    /// only verified content is ever renamed into `blobs/`.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Starts writing a blob. `expected_size`, when given, is enforced as data arrives.
    pub fn ingest(&self, digest: &Digest, expected_size: Option<u64>) -> Result<BlobWriter> {
        let dir = self.ingest_dir();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}-", digest.short()))
            .tempfile_in(&dir)
            .map_err(|e| LayoutError::io("creating a temp file in", &dir, e))?;
        Ok(BlobWriter {
            store: self.clone(),
            expected: digest.clone(),
            expected_size,
            hasher: Hasher::new(),
            written: 0,
            writeback_from: 0,
            // Network chunks (hundreds of KiB) are larger than the buffer and go
            // straight to write(2) without a copy; only small writes are gathered.
            out: BufWriter::with_capacity(64 << 10, tmp),
        })
    }

    /// Stores a small blob held in memory (manifests, configs).
    pub fn put_blob(&self, digest: &Digest, data: &[u8]) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut w = self.ingest(digest, Some(data.len() as u64))?;
        w.write(data)?;
        w.commit()
    }

    /// Reads a blob into memory, refusing blobs over `limit` bytes.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let f = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                LayoutError::BlobNotFound(digest.clone())
            } else {
                LayoutError::io("opening", &path, e)
            }
        })?;
        let size = f
            .metadata()
            .map_err(|e| LayoutError::io("reading", &path, e))?
            .len();
        if size > limit {
            return Err(LayoutError::TooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let mut data = Vec::with_capacity(size as usize);
        f.take(limit)
            .read_to_end(&mut data)
            .map_err(|e| LayoutError::io("reading", &path, e))?;
        Ok(data)
    }

    fn lock_file(&self, name: &str) -> Result<File> {
        let path = self.dir.join(name);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LayoutError::io("opening lock", &path, e))
    }

    fn lock_index(&self) -> Result<LockGuard> {
        let f = self.lock_file(".index.lock")?;
        f.lock()
            .map_err(|e| LayoutError::io("locking", &self.dir.join(".index.lock"), e))?;
        Ok(LockGuard(f))
    }

    /// Takes the shared side of the garbage-collection lock: held by a pull from its
    /// first blob until its index entry is written, so [`Store::prune`] waits for it.
    pub fn pull_guard(&self) -> Result<LockGuard> {
        let f = self.lock_file(".gc.lock")?;
        f.lock_shared()
            .map_err(|e| LayoutError::io("locking", &self.dir.join(".gc.lock"), e))?;
        Ok(LockGuard(f))
    }

    /// Reads `index.json`.
    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.dir.join("index.json");
        let data = fs::read(&path).map_err(|e| LayoutError::io("reading", &path, e))?;
        serde_json::from_slice(&data).map_err(|e| LayoutError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let path = self.dir.join("index.json");
        let data = serde_json::to_vec(index).map_err(|e| LayoutError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        self.replace_file(&path, &data)
    }

    /// Replaces `path` with `data` atomically and durably, mode 0644.
    fn replace_file(&self, path: &Path, data: &[u8]) -> Result<()> {
        crate::atomic::write(path, data, 0o644)
            .map_err(|e| LayoutError::io(e.step, &e.path, e.source))
    }

    /// Applies `f` to `index.json` under the exclusive lock and replaces it atomically.
    pub fn update_index<T>(&self, f: impl FnOnce(&mut Vec<Descriptor>) -> Result<T>) -> Result<T> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        let mut manifests = index.manifests().clone();
        let out = f(&mut manifests)?;
        index.set_manifests(manifests);
        self.write_index(&index)?;
        Ok(out)
    }

    /// Names `descriptor` as `name`, replacing any image of that name. Every blob the
    /// descriptor reaches must already be in the store.
    pub fn add_image(&self, name: &str, mut descriptor: Descriptor) -> Result<()> {
        let mut ann = descriptor.annotations().clone().unwrap_or_default();
        ann.insert(REF_NAME.to_string(), name.to_string());
        descriptor.set_annotations(Some(ann));
        // Checked before the entry goes in: never an entry whose blobs are missing,
        // and their renames made durable first.
        self.reachable_from(&descriptor, &mut HashSet::new())?;
        sync_dir(&self.dir.join("blobs").join("sha256"))?;
        self.update_index(|m| {
            m.retain(|d| ref_name(d) != Some(name));
            m.push(descriptor);
            Ok(())
        })
    }

    /// Lists the images in `index.json`, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageEntry>> {
        let index = self.index()?;
        let mut out: Vec<ImageEntry> = index
            .manifests()
            .iter()
            .filter_map(|d| {
                let name = ref_name(d)?.to_string();
                let manifest_digest = d.digest().to_string();
                let repo_digest = d
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(REPO_DIGEST).cloned())
                    .unwrap_or_else(|| manifest_digest.clone());
                Some(ImageEntry {
                    name,
                    manifest_digest,
                    repo_digest,
                    media_type: d.media_type().to_string(),
                    descriptor: d.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Finds an image by exact name, or by manifest or repo digest.
    pub fn resolve(&self, name: &str) -> Result<Descriptor> {
        let index = self.index()?;
        index
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name))
            .or_else(|| {
                index.manifests().iter().find(|d| {
                    d.digest().as_ref() == name
                        || d.annotations().as_ref().and_then(|a| a.get(REPO_DIGEST))
                            == Some(&name.to_string())
                })
            })
            .cloned()
            .ok_or_else(|| LayoutError::ImageNotFound(name.to_string()))
    }

    /// Finds the store name of what a user typed for an image: a full or short name,
    /// a `NAME@DIGEST` line as imgpull prints it, or a digest.
    pub fn find(&self, input: &str) -> Result<String> {
        let mut last = None;
        for cand in crate::distribution::reference::store_candidates(input) {
            match self.resolve(&cand) {
                Ok(d) => return Ok(ref_name(&d).unwrap_or(&cand).to_string()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| LayoutError::ImageNotFound(input.to_string())))
    }

    /// Reads and parses an image manifest.
    pub fn manifest(&self, digest: &Digest) -> Result<ImageManifest> {
        let data = self.read_blob(digest, MAX_MANIFEST_SIZE)?;
        serde_json::from_slice(&data).map_err(|e| LayoutError::Corrupt {
            path: self.blob_path(digest),
            reason: format!("manifest: {e}"),
        })
    }

    /// Removes the images named `name` from `index.json`; their blobs stay until
    /// [`Store::prune`]. Returns the removed descriptor.
    pub fn remove(&self, name: &str) -> Result<Descriptor> {
        self.update_index(|m| {
            let pos = m
                .iter()
                .position(|d| ref_name(d) == Some(name))
                .ok_or_else(|| LayoutError::ImageNotFound(name.to_string()))?;
            Ok(m.remove(pos))
        })
    }

    /// Collects every blob reachable from `desc` into `out`, failing when one is missing.
    fn reachable_from(&self, desc: &Descriptor, out: &mut HashSet<Digest>) -> Result<()> {
        let digest = Digest::parse(desc.digest().as_ref())?;
        if !out.insert(digest.clone()) {
            return Ok(());
        }
        if !self.has_blob(&digest) {
            return Err(LayoutError::BlobNotFound(digest));
        }
        match desc.media_type() {
            MediaType::ImageIndex => {
                let data = self.read_blob(&digest, MAX_MANIFEST_SIZE)?;
                let idx: ImageIndex =
                    serde_json::from_slice(&data).map_err(|e| LayoutError::Corrupt {
                        path: self.blob_path(&digest),
                        reason: format!("image index: {e}"),
                    })?;
                for child in idx.manifests() {
                    self.reachable_from(child, out)?;
                }
            }
            MediaType::ImageManifest => {
                let m = self.manifest(&digest)?;
                let config = Digest::parse(m.config().digest().as_ref())?;
                if !self.has_blob(&config) {
                    return Err(LayoutError::BlobNotFound(config));
                }
                out.insert(config);
                for l in m.layers() {
                    let d = Digest::parse(l.digest().as_ref())?;
                    if !self.has_blob(&d) {
                        return Err(LayoutError::BlobNotFound(d));
                    }
                    out.insert(d);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Deletes every blob no image references and every temp file a killed process
    /// left behind. Waits for pulls in flight to finish first.
    pub fn prune(&self) -> Result<PruneReport> {
        let gc = self.lock_file(".gc.lock")?;
        gc.lock()
            .map_err(|e| LayoutError::io("locking", &self.dir.join(".gc.lock"), e))?;
        let _gc = LockGuard(gc);
        let _idx = self.lock_index()?;
        let mut keep = HashSet::new();
        for d in self.index()?.manifests() {
            // An entry whose blobs are damaged keeps what it still has.
            if let Err(e) = self.reachable_from(d, &mut keep) {
                tracing::warn!("image {:?}: {e}", ref_name(d).unwrap_or("?"));
            }
            keep.extend(source_manifests(d));
            keep.extend(self.signature_blobs(d));
        }
        let mut report = PruneReport::default();
        let blobs = self.dir.join("blobs").join("sha256");
        for entry in fs::read_dir(&blobs).map_err(|e| LayoutError::io("reading", &blobs, e))? {
            let entry = entry.map_err(|e| LayoutError::io("reading", &blobs, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let keep_it = Digest::parse(&format!("sha256:{name}"))
                .map(|d| keep.contains(&d))
                .unwrap_or(false);
            if !keep_it {
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path())
                    .map_err(|e| LayoutError::io("removing", &entry.path(), e))?;
                report.blobs += 1;
                report.bytes += len;
            }
        }
        // Temp files of killed writers: blobs in .ingest/, index.json and oci-layout
        // replacements (.tmp-*) in the layout itself. No writer runs while both
        // locks are held.
        let ingest = self.ingest_dir();
        let debris = fs::read_dir(&ingest)
            .into_iter()
            .flatten()
            .chain(fs::read_dir(&self.dir).into_iter().flatten())
            .flatten()
            .filter(|e| {
                e.path().parent() == Some(ingest.as_path())
                    || e.file_name().to_string_lossy().starts_with(".tmp-")
            });
        for entry in debris {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(entry.path()).is_ok() {
                report.temp_files += 1;
                report.bytes += len;
            }
        }
        sync_dir(&blobs)?;
        Ok(report)
    }

    /// Total size of the blobs an image references (manifest, config, layers).
    pub fn image_size(&self, desc: &Descriptor) -> Result<u64> {
        let mut set = HashSet::new();
        self.reachable_from(desc, &mut set)?;
        let mut total = 0;
        for d in set {
            let p = self.blob_path(&d);
            total += fs::metadata(&p)
                .map_err(|e| LayoutError::io("reading", &p, e))?
                .len();
        }
        Ok(total)
    }
}

/// The registry's own manifests an index.json entry names in [`SOURCE_MANIFESTS`]
/// (malformed digests left out).
pub fn source_manifests(d: &Descriptor) -> Vec<Digest> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(SOURCE_MANIFESTS))
        .map(|v| {
            v.split(',')
                .filter_map(|s| Digest::parse(s.trim()).ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Store {
    /// The stored signature manifest an entry names ([`SIGNATURES`]) and the
    /// payload layers it lists; none when it names none or it is not stored.
    pub fn signature_blobs(&self, d: &Descriptor) -> Vec<Digest> {
        let Some(manifest) = d
            .annotations()
            .as_ref()
            .and_then(|a| a.get(SIGNATURES))
            .and_then(|v| Digest::parse(v).ok())
        else {
            return Vec::new();
        };
        let Ok(raw) = self.read_blob(&manifest, MAX_MANIFEST_SIZE) else {
            return Vec::new();
        };
        let layers = serde_json::from_slice::<serde_json::Value>(&raw)
            .ok()
            .and_then(|v| v.get("layers").and_then(|l| l.as_array()).cloned())
            .unwrap_or_default();
        let mut out = vec![manifest];
        out.extend(layers.iter().filter_map(|l| {
            l.get("digest")
                .and_then(|d| d.as_str())
                .and_then(|d| Digest::parse(d).ok())
        }));
        out
    }
}

/// The `org.opencontainers.image.ref.name` of a descriptor.
pub fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .unwrap_or_default()
}

fn set_mode_0644(f: &File, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(|e| LayoutError::io("setting mode of", path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LayoutError::io("syncing", dir, e))
}

/// A blob being written: bytes are hashed as they arrive; [`BlobWriter::commit`]
/// checks size and digest, fsyncs and renames into place. Dropped without a commit,
/// the temp file is removed.
pub struct BlobWriter {
    store: Store,
    expected: Digest,
    expected_size: Option<u64>,
    hasher: Hasher,
    written: u64,
    writeback_from: u64,
    out: BufWriter<tempfile::NamedTempFile>,
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: starts writeback of a range without
/// waiting for it.
#[allow(unsafe_code)]
fn writeback(fd: std::os::fd::RawFd, offset: u64, len: u64) {
    // SAFETY: a plain syscall on a descriptor the caller owns; no memory is passed.
    unsafe {
        libc::sync_file_range(fd, offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}

impl BlobWriter {
    /// A second handle on the file being written, to read what is written so far
    /// (once [`BlobWriter::flush`] has pushed it out); it stays valid, and the same
    /// file, once the blob is committed or dropped.
    pub fn reader(&self) -> Result<File> {
        let tmp = self.out.get_ref();
        tmp.reopen()
            .map_err(|e| LayoutError::io("reopening", tmp.path(), e))
    }

    /// Pushes what was written out of the buffer, to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| LayoutError::io("writing", self.out.get_ref().path(), e))
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// The digest this blob must have.
    pub fn digest(&self) -> &Digest {
        &self.expected
    }

    /// Appends bytes. Fails as soon as more arrive than the descriptor's size.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let new_len = self.written + data.len() as u64;
        if let Some(size) = self.expected_size {
            if new_len > size {
                return Err(LayoutError::SizeMismatch {
                    digest: self.expected.clone(),
                    expected: size,
                    actual: new_len,
                });
            }
        }
        self.hasher.update(data);
        self.out
            .write_all(data)
            .map_err(|e| LayoutError::io("writing blob to", self.out.get_ref().path(), e))?;
        self.written = new_len;
        self.start_writeback();
        Ok(())
    }

    /// Asks the kernel to start writing back what is already flushed, in steps of
    /// 8 MiB, so the fsync at commit finds little left to do: disk writes overlap the
    /// download instead of following it. Only a hint; the fsync reports errors.
    fn start_writeback(&mut self) {
        const STEP: u64 = 8 << 20;
        let flushed = self.written - self.out.buffer().len() as u64;
        if flushed >= self.writeback_from + STEP {
            use std::os::fd::AsRawFd;
            let fd = self.out.get_ref().as_file().as_raw_fd();
            writeback(fd, self.writeback_from, flushed - self.writeback_from);
            self.writeback_from = flushed;
        }
    }

    /// Throws away what was written, to start over (a server that ignored a range).
    pub fn reset(&mut self) -> Result<()> {
        let path = self.out.get_ref().path().to_path_buf();
        self.out
            .flush()
            .and_then(|_| self.out.get_mut().as_file_mut().set_len(0))
            .and_then(|_| self.out.get_mut().as_file_mut().rewind())
            .map_err(|e| LayoutError::io("truncating", &path, e))?;
        self.hasher = Hasher::new();
        self.written = 0;
        self.writeback_from = 0;
        Ok(())
    }

    /// Verifies size and digest, fsyncs, and renames the blob into the store. The
    /// directory is fsynced by [`Store::add_image`], before an entry names the blob.
    pub fn commit(self) -> Result<()> {
        let BlobWriter {
            store,
            expected,
            expected_size,
            hasher,
            written,
            out,
            ..
        } = self;
        if let Some(size) = expected_size {
            if written != size {
                return Err(LayoutError::SizeMismatch {
                    digest: expected,
                    expected: size,
                    actual: written,
                });
            }
        }
        let actual = hasher.finish();
        if actual != expected {
            return Err(LayoutError::DigestMismatch { expected, actual });
        }
        let tmp_path = out.get_ref().path().to_path_buf();
        let tmp = out
            .into_inner()
            .map_err(|e| LayoutError::io("writing blob to", &tmp_path, e.into_error()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| LayoutError::io("syncing", tmp.path(), e))?;
        let dest = store.blob_path(&expected);
        set_mode_0644(tmp.as_file(), &dest)?;
        // The rename becomes durable with the fsync of blobs/ that add_image does
        // before any index entry can name this blob: one directory flush per image
        // instead of one per blob.
        tmp.persist(&dest)
            .map_err(|e| LayoutError::io("renaming into", &dest, e.error))?;
        Ok(())
    }
}

/// Image config and manifest details for `imgpull --inspect`.
pub fn inspect(store: &Store, name: &str) -> Result<serde_json::Value> {
    let desc = store.resolve(name)?;
    let digest = Digest::parse(desc.digest().as_ref())?;
    let manifest_raw = store.read_blob(&digest, MAX_MANIFEST_SIZE)?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&manifest_raw).map_err(|e| LayoutError::Corrupt {
            path: store.blob_path(&digest),
            reason: e.to_string(),
        })?;
    let m = store.manifest(&digest)?;
    let config_digest = Digest::parse(m.config().digest().as_ref())?;
    let config_raw = store.read_blob(&config_digest, MAX_CONFIG_SIZE)?;
    let config: serde_json::Value =
        serde_json::from_slice(&config_raw).map_err(|e| LayoutError::Corrupt {
            path: store.blob_path(&config_digest),
            reason: e.to_string(),
        })?;
    let annotations: BTreeMap<String, String> = desc
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect::<HashMap<_, _>>()
        .into_iter()
        .collect();
    let layers_size: u64 = m.layers().iter().map(|l| l.size()).sum();
    Ok(serde_json::json!({
        "name": ref_name(&desc),
        "manifest_digest": digest.as_str(),
        "repo_digest": annotations.get(REPO_DIGEST).cloned().unwrap_or_else(|| digest.to_string()),
        "media_type": desc.media_type().to_string(),
        "size": store.image_size(&desc)?,
        "layers_size": layers_size,
        "annotations": annotations,
        "manifest": manifest,
        "config": config,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(store: &Store, data: &[u8]) -> Descriptor {
        let d = Digest::of(data);
        store.put_blob(&d, data).unwrap();
        Descriptor::new(
            MediaType::ImageLayer,
            data.len() as u64,
            d.as_str().parse::<oci_spec::image::Digest>().unwrap(),
        )
    }

    fn image(store: &Store, layers: &[&[u8]]) -> Descriptor {
        let config = layer(
            store,
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        let mut config = config;
        config.set_media_type(MediaType::ImageConfig);
        let layers: Vec<_> = layers.iter().map(|l| layer(store, l)).collect();
        let m = oci_spec::image::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(layers)
            .build()
            .unwrap();
        let raw = serde_json::to_vec(&m).unwrap();
        let mut d = layer(store, &raw);
        d.set_media_type(MediaType::ImageManifest);
        d
    }

    #[test]
    fn blob_with_wrong_digest_is_never_visible() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let claimed = Digest::of(b"good");
        let mut w = store.ingest(&claimed, None).unwrap();
        w.write(b"evil").unwrap();
        assert!(matches!(
            w.commit(),
            Err(LayoutError::DigestMismatch { .. })
        ));
        assert!(!store.has_blob(&claimed));
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
    }

    #[test]
    fn writer_refuses_more_bytes_than_the_descriptor_says() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"abc");
        let mut w = store.ingest(&d, Some(3)).unwrap();
        w.write(b"ab").unwrap();
        assert!(matches!(
            w.write(b"cd"),
            Err(LayoutError::SizeMismatch { .. })
        ));
        w.reset().unwrap();
        w.write(b"abc").unwrap();
        w.commit().unwrap();
        assert_eq!(fs::read(store.blob_path(&d)).unwrap(), b"abc");
    }

    #[test]
    fn add_list_remove_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = image(&store, &[b"layer-a", b"shared"]);
        let b = image(&store, &[b"layer-b", b"shared"]);
        store.add_image("example.com/a:1", a.clone()).unwrap();
        store.add_image("example.com/b:1", b).unwrap();
        // Re-adding a name replaces it.
        store.add_image("example.com/a:1", a).unwrap();
        let names: Vec<_> = store.list().unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["example.com/a:1", "example.com/b:1"]);
        let orphan = Digest::of(b"orphan");
        store.put_blob(&orphan, b"orphan").unwrap();
        let r = store.prune().unwrap();
        assert_eq!(r.blobs, 1);
        assert!(!store.has_blob(&orphan));
        store.remove("example.com/a:1").unwrap();
        let r = store.prune().unwrap();
        // manifest a + layer-a (config and "shared" are still used by b)
        assert_eq!(r.blobs, 2);
        assert!(store.has_blob(&Digest::of(b"shared")));
        assert!(!store.has_blob(&Digest::of(b"layer-a")));
        assert!(matches!(
            store.remove("example.com/a:1"),
            Err(LayoutError::ImageNotFound(_))
        ));
    }

    #[test]
    fn prune_removes_debris_of_killed_writers_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(dir.path().join(".tmp-abc"), b"half an index").unwrap();
        fs::write(store.ingest_dir().join("0123-xyz"), b"half a blob").unwrap();
        let r = store.prune().unwrap();
        assert_eq!(r.temp_files, 2);
        assert!(dir.path().join("index.json").is_file());
        assert!(dir.path().join("oci-layout").is_file());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn entry_with_missing_blob_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = image(&store, &[b"layer-a"]);
        fs::remove_file(store.blob_path(&Digest::of(b"layer-a"))).unwrap();
        assert!(matches!(
            store.add_image("x/a:1", a),
            Err(LayoutError::BlobNotFound(_))
        ));
        assert!(store.list().unwrap().is_empty());
    }
}
