//! Applying image layers (tar streams, gzip/zstd/plain) to a directory, safely.
//!
//! Layers are hostile input. Every path is resolved with `openat2(RESOLVE_IN_ROOT)`
//! against a descriptor of the target directory, so symlinks already in the tree —
//! from this layer or an earlier one — are followed as the container would see them,
//! clamped to the root, and nothing can be created or changed outside it. The last
//! component is never followed: it is created with `O_EXCL`/`*at` calls on the
//! resolved parent. Entry and hardlink names that climb above the root lexically
//! (`../x`) are refused with an error naming the layer and the entry.
//!
//! Two forms: [`Form::Copy`] applies whiteouts (deletes, opaque directories) to what
//! earlier layers left in the same tree; [`Form::Overlay`] writes one layer into an
//! empty directory the way overlayfs wants a lower dir: `.wh.NAME` becomes a 0:0
//! character device, `.wh..wh..opq` the `trusted.overlay.opaque` xattr.
//!
//! Ownership, device nodes and `trusted.*` xattrs need root; without it they are
//! skipped (and counted), as umoci and rootless podman do.
//!
//! Both the compressed blob and the uncompressed tar are hashed as they stream and
//! checked against the layer digest and the image's diff_id.

use crate::distribution::digest::{Digest, Hasher};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Dev, FileType, Mode, OFlags, ResolveFlags, Timestamps, XattrFlags};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Errors from applying a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A tar entry that cannot be applied, named with its layer.
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    Entry {
        /// The layer (its digest, or a path).
        layer: String,
        /// The entry's path as written in the tar.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// A filesystem call failed on an entry.
    #[error("layer {layer}: entry {entry:?}: {action}")]
    EntryIo {
        /// The layer.
        layer: String,
        /// The entry's path.
        entry: String,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The tar stream itself is broken, or reading the blob failed.
    #[error("layer {layer}: reading the archive")]
    Read {
        /// The layer.
        layer: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The blob or its uncompressed content does not have the expected digest.
    #[error("layer {layer}: {what} is {actual}, expected {expected}")]
    DigestMismatch {
        /// The layer.
        layer: String,
        /// "digest" or "diff_id".
        what: &'static str,
        /// Expected.
        expected: Digest,
        /// Actual.
        actual: Digest,
    },
    /// A hardlink to a path that is neither in the layer nor (overlay form) in the
    /// layers below it.
    #[error("layer {layer}: entry {entry:?}: hardlink target {target} does not exist")]
    LinkTargetMissing {
        /// The layer.
        layer: String,
        /// The link's path as written in the tar.
        entry: String,
        /// Its target as written.
        target: String,
    },
    /// The target directory cannot be opened.
    #[error("opening {}", path.display())]
    Root {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

type Result<T, E = LayerError> = std::result::Result<T, E>;

/// How a layer is laid down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Onto the layers below, applying whiteouts as deletions.
    Copy,
    /// Alone into an empty directory, whiteouts in overlayfs form.
    Overlay,
}

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// From the first bytes of a blob: gzip and zstd by their magic numbers.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// A reader of what `r` holds, decompressed.
    pub fn decoder<'a, R: BufRead + 'a>(self, r: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(r),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        })
    }

    /// From an OCI or Docker layer media type, when it says.
    pub fn from_media_type(mt: &str) -> Option<Self> {
        if mt.ends_with("+gzip") || mt.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if mt.ends_with("+zstd") || mt.ends_with(".tar.zstd") {
            Some(Compression::Zstd)
        } else if mt.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// What a layer application did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Tar entries applied.
    pub entries: u64,
    /// Whiteouts applied.
    pub whiteouts: u64,
    /// Device nodes skipped (no privilege to create them).
    pub skipped_devices: u64,
    /// Ownership changes skipped (no privilege).
    pub skipped_owners: u64,
    /// Extended attributes that could not be set.
    pub skipped_xattrs: u64,
}

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Copy or overlay form.
    pub form: Form,
    /// Whether to set ownership, create device nodes and trusted xattrs (root).
    pub privileged: bool,
    /// The blob's digest, checked while reading; `None` skips the check.
    pub digest: Option<Digest>,
    /// The uncompressed tar's digest (the image config's diff_id), checked likewise.
    pub diff_id: Option<Digest>,
    /// Compression; `None` sniffs the magic bytes.
    pub compression: Option<Compression>,
    /// Overlay form: the layers below this one, topmost first, as overlayfs stacks
    /// them. A hardlink to a file only they hold gets that file copied up into this
    /// layer first (its parent directories with it), as overlayfs copies a lower
    /// file up before it links it.
    pub lower: Vec<PathBuf>,
}

/// A reader that hashes what passes through it, when asked to.
struct HashingReader<R> {
    inner: R,
    hasher: Option<Hasher>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

type Chunk = std::sync::Arc<Vec<u8>>;
const CHUNK: usize = 1 << 20;

/// Reads the chunks the decompressing thread sends.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Chunk>>,
    cur: Option<Chunk>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(c) = &self.cur {
                if self.pos < c.len() {
                    let n = buf.len().min(c.len() - self.pos);
                    buf[..n].copy_from_slice(&c[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.cur = Some(c);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // the sender finished: end of stream
            }
        }
    }
}

/// Decompresses `blob` into chunks for the tar reader and the diff_id hasher;
/// returns the blob's digest when `hash_blob`.
fn decompress_into(
    blob: impl Read,
    compression: Option<Compression>,
    hash_blob: bool,
    to_tar: &std::sync::mpsc::SyncSender<io::Result<Chunk>>,
    to_hash: &std::sync::mpsc::SyncSender<Chunk>,
) -> io::Result<Option<Digest>> {
    let mut compressed = BufReader::with_capacity(
        CHUNK,
        HashingReader {
            inner: blob,
            hasher: hash_blob.then(Hasher::new),
        },
    );
    let compression = match compression {
        Some(c) => c,
        None => Compression::sniff(compressed.fill_buf()?),
    };
    {
        let mut decoder = compression.decoder(&mut compressed)?;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0;
            while n < CHUNK {
                match decoder.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if n == 0 {
                break;
            }
            buf.truncate(n);
            let chunk = std::sync::Arc::new(buf);
            if to_hash.send(chunk.clone()).is_err() || to_tar.send(Ok(chunk)).is_err() {
                // The reader stopped (an error in the layer): nothing more to do.
                return Ok(None);
            }
        }
    }
    io::copy(&mut compressed, &mut io::sink())?;
    Ok(compressed.into_inner().hasher.map(Hasher::finish))
}

/// Applies the layer blob read from `blob` to the directory `root`. `layer` names the
/// layer in errors.
///
/// Three threads share the work: one reads and decompresses, one hashes the
/// uncompressed stream (the diff_id), and the caller's parses the tar and writes.
pub fn apply(
    root: &Path,
    blob: impl Read + Send,
    layer: &str,
    opts: &ApplyOptions,
) -> Result<Report> {
    let read_err = |source: io::Error| LayerError::Read {
        layer: layer.to_string(),
        source,
    };
    let mut report = Report::default();
    let (blob_hash, diff_hash) =
        std::thread::scope(|s| -> Result<(Option<Digest>, Option<Digest>)> {
            let (to_tar, from_decoder) = std::sync::mpsc::sync_channel::<io::Result<Chunk>>(8);
            let (to_hash, for_hash) = std::sync::mpsc::sync_channel::<Chunk>(8);
            let want_diff = opts.diff_id.is_some();
            let hasher = s.spawn(move || {
                let mut h = want_diff.then(Hasher::new);
                for c in for_hash {
                    if let Some(h) = &mut h {
                        h.update(&c);
                    }
                }
                h.map(Hasher::finish)
            });
            let compression = opts.compression;
            let hash_blob = opts.digest.is_some();
            let decoder = s.spawn(move || {
                let r = decompress_into(blob, compression, hash_blob, &to_tar, &to_hash);
                match r {
                    Ok(d) => Ok(d),
                    Err(e) => {
                        let kind = e.kind();
                        let msg = e.to_string();
                        let _ = to_tar.send(Err(e));
                        Err(io::Error::new(kind, msg))
                    }
                }
            });
            let mut tar_stream = ChannelReader {
                rx: from_decoder,
                cur: None,
                pos: 0,
            };
            let applied = (|| -> Result<()> {
                let mut archive = tar::Archive::new(&mut tar_stream);
                let mut applier = Applier::new(root, layer, opts)?;
                let entries = archive.entries().map_err(read_err)?;
                for entry in entries {
                    let mut entry = entry.map_err(read_err)?;
                    applier.entry(&mut entry, &mut report)?;
                }
                applier.finish()
            })();
            if let Err(e) = applied {
                drop(tar_stream); // stops the decoder
                let _ = decoder.join();
                let _ = hasher.join();
                return Err(e);
            }
            // Whatever follows the end-of-archive blocks is part of the diff_id too.
            io::copy(&mut tar_stream, &mut io::sink()).map_err(read_err)?;
            let blob_hash = decoder
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("decompressing thread panicked")))
                .map_err(read_err)?;
            let diff_hash = hasher
                .join()
                .map_err(|_| read_err(io::Error::other("hashing thread panicked")))?;
            Ok((blob_hash, diff_hash))
        })?;
    for (what, want, got) in [
        ("digest", &opts.digest, blob_hash),
        ("diff_id", &opts.diff_id, diff_hash),
    ] {
        if let (Some(want), Some(got)) = (want, got) {
            if *want != got {
                return Err(LayerError::DigestMismatch {
                    layer: layer.to_string(),
                    what,
                    expected: want.clone(),
                    actual: got,
                });
            }
        }
    }
    Ok(report)
}

/// Normalises an entry or link name lexically: leading `/` and `.` go, `..` pops a
/// component and may not climb above the root. `None` for the root itself.
fn clean(path: &Path) -> std::result::Result<Option<PathBuf>, &'static str> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err("escapes the rootfs");
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

struct Applier<'a> {
    root: OwnedFd,
    layer: &'a str,
    form: Form,
    privileged: bool,
    lower: &'a [PathBuf],
    /// Paths this layer created (an opaque whiteout keeps them).
    created: HashSet<PathBuf>,
    /// Directory mtimes, set at the end (entries below would change them).
    dir_times: Vec<(PathBuf, u64)>,
    /// The last parent directory resolved, to save a lookup per entry.
    cached_parent: Option<(PathBuf, std::rc::Rc<OwnedFd>)>,
    /// The group a file created in the cached parent gets (its own when it is
    /// setgid), once looked up; cleared with the cache and when a directory's
    /// owner or mode is set.
    cached_parent_gid: Option<u32>,
    /// Who applies it (effective uid and gid), looked up once, not per file.
    euid: u32,
    egid: u32,
    buf: Vec<u8>,
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV
}

/// What every kind of tar entry carries besides its path.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// What a new file was created with already, so need not be set again.
#[derive(Debug, Default, Clone, Copy)]
struct Preset {
    /// Its owner is the entry's.
    owner: bool,
    /// Its mode is the entry's (no setuid, setgid or sticky bit, which come after
    /// the owner, and nothing the umask took away).
    mode: bool,
}

/// The process's umask, read once from /proc (reading it with umask(2) would
/// change it for a moment under the other threads). None: not known, so every
/// mode is set explicitly.
fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(value.trim(), 8).ok()
    })
}

/// Where an entry goes: its parent directory (opened inside the root), its name,
/// and its path as the tar wrote it (for errors).
struct At<'p> {
    parent: &'p OwnedFd,
    name: &'p OsStr,
    raw: &'p Path,
}

impl<'a> Applier<'a> {
    fn new(root: &Path, layer: &'a str, opts: &'a ApplyOptions) -> Result<Self> {
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| LayerError::Root {
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Applier {
            root: fd,
            layer,
            form: opts.form,
            privileged: opts.privileged,
            lower: &opts.lower,
            created: HashSet::new(),
            dir_times: Vec::new(),
            cached_parent: None,
            cached_parent_gid: None,
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            buf: vec![0; 1 << 18],
        })
    }

    fn err(&self, entry: &Path, reason: impl Into<String>) -> LayerError {
        LayerError::Entry {
            layer: self.layer.to_string(),
            entry: entry.display().to_string(),
            reason: reason.into(),
        }
    }

    fn io_err(
        &self,
        entry: &Path,
        action: &'static str,
    ) -> impl Fn(rustix::io::Errno) -> LayerError + '_ {
        let entry = entry.display().to_string();
        move |e| LayerError::EntryIo {
            layer: self.layer.to_string(),
            entry: entry.clone(),
            action,
            source: e.into(),
        }
    }

    /// Opens the directory `rel` (None: the root) inside the root, creating missing
    /// directories on the way (0755, as tar does for entries without parents).
    /// The last directory opened is kept: entries come grouped by directory, and
    /// sharing it saves a dup and a close per entry.
    fn dir(&mut self, rel: Option<&Path>) -> rustix::io::Result<std::rc::Rc<OwnedFd>> {
        let Some(rel) = rel else {
            return rustix::fs::openat(
                &self.root,
                ".",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map(std::rc::Rc::new);
        };
        if let Some((p, fd)) = &self.cached_parent {
            if p == rel {
                return Ok(std::rc::Rc::clone(fd));
            }
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat2(&self.root, rel, flags, Mode::empty(), resolve_flags()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                // Create the missing components one by one, each resolved in the root.
                let mut cur = PathBuf::new();
                for c in rel.components() {
                    cur.push(c);
                    match rustix::fs::openat2(
                        &self.root,
                        &cur,
                        flags,
                        Mode::empty(),
                        resolve_flags(),
                    ) {
                        Ok(_) => {}
                        Err(rustix::io::Errno::NOENT) => {
                            let parent = self.dir_exact(cur.parent())?;
                            self.implicit_dir(&parent, c.as_os_str(), &cur)?;
                            // This layer made it: an opaque whiteout keeps it.
                            self.created.insert(cur.clone());
                        }
                        Err(e) => return Err(e),
                    }
                }
                rustix::fs::openat2(&self.root, rel, flags, Mode::empty(), resolve_flags())?
            }
            Err(e) => return Err(e),
        };
        let fd = std::rc::Rc::new(fd);
        self.cached_parent = Some((rel.to_path_buf(), std::rc::Rc::clone(&fd)));
        self.cached_parent_gid = None;
        Ok(fd)
    }

    /// Opens an existing directory inside the root, without creating anything.
    fn dir_exact(&self, rel: Option<&Path>) -> rustix::io::Result<OwnedFd> {
        let rel = match rel {
            Some(r) if !r.as_os_str().is_empty() => r,
            _ => Path::new("."),
        };
        rustix::fs::openat2(
            &self.root,
            rel,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            resolve_flags(),
        )
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, report: &mut Report) -> Result<()> {
        let raw_path = entry.path().map_err(|e| self.read_err(e))?.into_owned();
        let Some(path) = clean(&raw_path).map_err(|r| self.err(&raw_path, r))? else {
            // The root itself: its metadata is the bundle's business, not the layer's.
            return Ok(());
        };
        let name = path
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default();
        let parent_rel = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf);
        report.entries += 1;

        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            report.whiteouts += 1;
            return self.whiteout(&raw_path, parent_rel.as_deref(), &name);
        }

        let header = entry.header();
        let kind = header.entry_type();
        let meta = Meta {
            mode: header.mode().unwrap_or(0o644) & 0o7777,
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            mtime: header.mtime().unwrap_or(0),
            xattrs: pax_xattrs(entry),
        };
        let parent = self
            .dir(parent_rel.as_deref())
            .map_err(self.io_err(&raw_path, "opening its parent directory"))?;
        let at = At {
            parent: &parent,
            name: &name,
            raw: &raw_path,
        };
        let made = match kind {
            tar::EntryType::Directory => {
                self.directory(&at, &meta, report)?;
                self.dir_times.push((path.clone(), meta.mtime));
                true
            }
            tar::EntryType::GNUSparse => {
                return Err(self.err(&raw_path, "GNU sparse files are not supported"));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.regular(&at, entry, &meta, report)?;
                true
            }
            tar::EntryType::Symlink => {
                self.symlink(&at, entry, &meta, report)?;
                true
            }
            tar::EntryType::Link => self.hardlink(&at, entry, &path)?,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.node(&at, entry, kind, &meta, report)?
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => false,
            other => {
                return Err(self.err(&raw_path, format!("unsupported entry type {other:?}")));
            }
        };
        if made {
            self.created.insert(path);
        }
        Ok(())
    }

    fn read_err(&self, source: io::Error) -> LayerError {
        LayerError::Read {
            layer: self.layer.to_string(),
            source,
        }
    }

    /// A directory: made (or an existing non-directory replaced), then its owner,
    /// mode and xattrs. Its times are set once the layer is done.
    fn directory(&mut self, at: &At, m: &Meta, report: &mut Report) -> Result<()> {
        let (parent, name, raw) = (at.parent, at.name, at.raw);
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(self.io_err(raw, "inspecting the existing entry"))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    self.remove(parent, name)
                        .map_err(self.io_err(raw, "replacing the existing entry"))?;
                    rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
                        .map_err(self.io_err(raw, "creating the directory"))?;
                }
            }
            Err(e) => return Err(self.io_err(raw, "creating the directory")(e)),
        }
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.io_err(raw, "opening the directory"))?;
        // It may be the cached parent: what its new files inherit can change.
        self.cached_parent_gid = None;
        self.set_owner_mode_xattrs(&fd, raw, true, m, report, Preset::default())
    }

    /// A regular file: its content, owner, mode, xattrs and times.
    fn regular<R: Read>(
        &mut self,
        at: &At,
        entry: &mut tar::Entry<'_, R>,
        m: &Meta,
        report: &mut Report,
    ) -> Result<()> {
        let raw = at.raw;
        // Created with its final permission bits when the umask leaves them be, and
        // owned as the entry says when that is who creates it: most files then need
        // no fchmod and no fchown (two syscalls of six per file).
        let mode = self.file_mode(m.mode);
        let create = mode & 0o777;
        let preset = Preset {
            mode: mode == create && umask().is_some_and(|u| create & u == 0),
            owner: self.privileged && self.created_as(at.parent, m),
        };
        let fd = self.create_file(at.parent, at.name, raw, create)?;
        let mut file = std::fs::File::from(fd);
        loop {
            let n = entry.read(&mut self.buf).map_err(|e| self.read_err(e))?;
            if n == 0 {
                break;
            }
            file.write_all(&self.buf[..n])
                .map_err(|e| LayerError::EntryIo {
                    layer: self.layer.to_string(),
                    entry: raw.display().to_string(),
                    action: "writing the file",
                    source: e,
                })?;
        }
        let fd = OwnedFd::from(file);
        self.set_owner_mode_xattrs(&fd, raw, false, m, report, preset)?;
        rustix::fs::futimens(&fd, &times(m.mtime)).map_err(self.io_err(raw, "setting its times"))
    }

    /// A symlink. Its target is only data: it is resolved inside the root whenever
    /// it is used.
    fn symlink<R: Read>(
        &mut self,
        at: &At,
        entry: &tar::Entry<'_, R>,
        m: &Meta,
        report: &mut Report,
    ) -> Result<()> {
        let (parent, name, raw) = (at.parent, at.name, at.raw);
        let target = entry
            .link_name()
            .map_err(|e| self.read_err(e))?
            .ok_or_else(|| self.err(raw, "symlink without a target"))?
            .into_owned();
        self.make_room(parent, name, raw)?;
        rustix::fs::symlinkat(target.as_os_str(), parent, name)
            .map_err(self.io_err(raw, "creating the symlink"))?;
        self.chown_at(parent, name, raw, m.uid, m.gid, report)?;
        let _ = rustix::fs::utimensat(parent, name, &times(m.mtime), AtFlags::SYMLINK_NOFOLLOW);
        // A new symlink can redirect cached lookups.
        self.cached_parent = None;
        Ok(())
    }

    /// A hardlink to a file already in the root, found without leaving it; false
    /// for a link to itself (nothing made).
    fn hardlink<R: Read>(
        &mut self,
        at: &At,
        entry: &tar::Entry<'_, R>,
        path: &Path,
    ) -> Result<bool> {
        let raw = at.raw;
        let target_raw = entry
            .link_name()
            .map_err(|e| self.read_err(e))?
            .ok_or_else(|| self.err(raw, "hardlink without a target"))?
            .into_owned();
        let target = clean(&target_raw)
            .map_err(|r| {
                self.err(
                    raw,
                    format!("hardlink target {}: {r}", target_raw.display()),
                )
            })?
            .ok_or_else(|| self.err(raw, "hardlink to the rootfs itself"))?;
        let open = |root: &OwnedFd| open_in(root, &target, OFlags::PATH);
        let missing = || LayerError::LinkTargetMissing {
            layer: self.layer.to_string(),
            entry: raw.display().to_string(),
            target: target_raw.display().to_string(),
        };
        let src = match open(&self.root) {
            Err(rustix::io::Errno::NOENT) if self.form == Form::Overlay => {
                if !self.copy_up(&target, raw)? {
                    return Err(missing());
                }
                open(&self.root).map_err(self.io_err(raw, "opening the copied-up target"))?
            }
            Err(rustix::io::Errno::NOENT) => return Err(missing()),
            Err(e) => return Err(self.io_err(raw, "opening the hardlink target")(e)),
            Ok(fd) => fd,
        };
        let st =
            rustix::fs::fstat(&src).map_err(self.io_err(raw, "inspecting the hardlink target"))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            return Err(self.err(
                raw,
                format!("hardlink target {} is a directory", target_raw.display()),
            ));
        }
        if target == path {
            return Ok(false);
        }
        self.make_room(at.parent, at.name, raw)?;
        link_fd(&src, at.parent, at.name).map_err(self.io_err(raw, "creating the hardlink"))?;
        Ok(true)
    }

    /// Copies `target` up from the topmost lower layer that shows it (none once a
    /// whiteout or an opaque directory hides it), with the directories above it that
    /// this layer lacks; false when no lower layer shows it. Only regular files and
    /// symlinks are copied.
    fn copy_up(&mut self, target: &Path, raw: &Path) -> Result<bool> {
        // An opaque directory of this layer's own above it hides the lower layers.
        let mut cur = PathBuf::new();
        for c in target.parent().into_iter().flat_map(Path::components) {
            cur.push(c);
            match open_in(&self.root, &cur, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) if is_opaque(&fd) => return Ok(false),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let Some((lower, st)) = self
            .find_below(target)
            .map_err(self.io_err(raw, "looking in the layers below"))?
        else {
            return Ok(false);
        };
        let kind = FileType::from_raw_mode(st.st_mode);
        if !matches!(kind, FileType::RegularFile | FileType::Symlink) {
            return Ok(false);
        }
        let parent = self
            .dir(target.parent().filter(|p| !p.as_os_str().is_empty()))
            .map_err(self.io_err(raw, "making the directory to copy up into"))?;
        let name = target.file_name().unwrap_or_default();
        if kind == FileType::Symlink {
            let at = open_in(
                &lower,
                target.parent().unwrap_or(Path::new("")),
                OFlags::PATH | OFlags::DIRECTORY,
            )
            .map_err(self.io_err(raw, "opening the lower target's directory"))?;
            let link = rustix::fs::readlinkat(&at, name, Vec::new())
                .map_err(self.io_err(raw, "reading the lower symlink"))?;
            rustix::fs::symlinkat(link.as_c_str(), &parent, name)
                .map_err(self.io_err(raw, "copying the symlink up"))?;
            self.copy_meta(&parent, name, &st)
                .map_err(self.io_err(raw, "giving the copied-up target its metadata"))?;
        } else {
            let src = open_in(&lower, target, OFlags::RDONLY)
                .map_err(self.io_err(raw, "opening the lower target"))?;
            let dst = rustix::fs::openat(
                &parent,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(self.io_err(raw, "creating the copied-up target"))?;
            let (mut from, mut to) = (std::fs::File::from(src), std::fs::File::from(dst));
            io::copy(&mut from, &mut to).map_err(|e| {
                self.io_err(raw, "copying the target up")(
                    rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO),
                )
            })?;
            self.copy_meta(&parent, name, &st)
                .map_err(self.io_err(raw, "giving the copied-up target its metadata"))?;
            // After the owner: a chown drops file capabilities.
            copy_xattrs(&from, &to);
        }
        self.created.insert(target.to_path_buf());
        self.cached_parent = None;
        Ok(true)
    }

    /// The topmost lower layer that shows `path`, and what it shows there.
    fn find_below(&self, path: &Path) -> rustix::io::Result<Option<(OwnedFd, rustix::fs::Stat)>> {
        for dir in self.lower {
            let lower = rustix::fs::open(
                dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            // Each directory on the way: a whiteout hides the rest; an opaque one
            // hides the layers below this one.
            let mut cur = PathBuf::new();
            let mut opaque = false;
            for c in path.components() {
                cur.push(c);
                let fd = match open_in(&lower, &cur, OFlags::PATH) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::NOENT) => break,
                    // Something not a directory on the way hides what is below.
                    Err(rustix::io::Errno::NOTDIR) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let st = rustix::fs::fstat(&fd)?;
                if is_whiteout(&st) {
                    return Ok(None);
                }
                if cur.as_path() == path {
                    return Ok(Some((lower, st)));
                }
                opaque |=
                    FileType::from_raw_mode(st.st_mode) == FileType::Directory && is_opaque(&fd);
            }
            if opaque {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Gives `name` in `parent` the owner (when privileged), mode and times of `st`.
    fn copy_meta(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        st: &rustix::fs::Stat,
    ) -> rustix::io::Result<()> {
        if self.privileged {
            rustix::fs::chownat(
                parent,
                name,
                Some(rustix::process::Uid::from_raw(st.st_uid)),
                Some(rustix::process::Gid::from_raw(st.st_gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
            rustix::fs::chmodat(
                parent,
                name,
                Mode::from_raw_mode(st.st_mode & 0o7777),
                AtFlags::empty(),
            )?;
        }
        let _ = rustix::fs::utimensat(
            parent,
            name,
            &times(st.st_mtime.max(0) as u64),
            AtFlags::SYMLINK_NOFOLLOW,
        );
        Ok(())
    }

    /// Makes the directory `rel` (`name` in `parent`) that an entry needs and the tar
    /// did not give: in overlay form as the layers below show it (in the merged view
    /// this one stands for theirs), else 0755 as tar makes it.
    fn implicit_dir(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        rel: &Path,
    ) -> rustix::io::Result<()> {
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => return Ok(()),
            Err(e) => return Err(e),
        }
        if self.form == Form::Overlay {
            if let Some((_, st)) = self.find_below(rel)? {
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    self.copy_meta(parent, name, &st)?;
                    self.dir_times
                        .push((rel.to_path_buf(), st.st_mtime.max(0) as u64));
                }
            }
        }
        Ok(())
    }

    /// A device node (root only; skipped with a warning otherwise) or a FIFO;
    /// whether one was made.
    fn node<R: Read>(
        &mut self,
        at: &At,
        entry: &tar::Entry<'_, R>,
        kind: tar::EntryType,
        m: &Meta,
        report: &mut Report,
    ) -> Result<bool> {
        let (parent, name, raw) = (at.parent, at.name, at.raw);
        let (ft, dev) = match kind {
            tar::EntryType::Char => (FileType::CharacterDevice, dev_of(entry)),
            tar::EntryType::Block => (FileType::BlockDevice, dev_of(entry)),
            _ => (FileType::Fifo, 0),
        };
        if ft != FileType::Fifo && !self.privileged {
            tracing::warn!(
                "layer {}: skipping device node {} (needs root)",
                self.layer,
                raw.display()
            );
            report.skipped_devices += 1;
            return Ok(false);
        }
        self.make_room(parent, name, raw)?;
        rustix::fs::mknodat(parent, name, ft, Mode::from_raw_mode(m.mode & 0o777), dev)
            .map_err(self.io_err(raw, "creating the node"))?;
        self.chown_at(parent, name, raw, m.uid, m.gid, report)?;
        rustix::fs::chmodat(parent, name, Mode::from_raw_mode(m.mode), AtFlags::empty())
            .map_err(self.io_err(raw, "setting its mode"))?;
        let _ = rustix::fs::utimensat(parent, name, &times(m.mtime), AtFlags::SYMLINK_NOFOLLOW);
        Ok(true)
    }

    /// Sets the owner of `name` (never following it) when privileged; counts the
    /// skip otherwise.
    fn chown_at(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        raw: &Path,
        uid: u64,
        gid: u64,
        report: &mut Report,
    ) -> Result<()> {
        if self.privileged {
            rustix::fs::chownat(
                parent,
                name,
                Some(uid_of(uid)),
                Some(gid_of(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(self.io_err(raw, "setting its owner"))?;
        } else {
            report.skipped_owners += u64::from(uid != 0 || gid != 0);
        }
        Ok(())
    }

    /// Creates a regular file for writing, replacing whatever is at `name`.
    /// The file is made with `mode` (less the umask); its owner is whoever creates it.
    fn create_file(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        raw: &Path,
        mode: u32,
    ) -> Result<OwnedFd> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => Ok(fd),
            Err(rustix::io::Errno::EXIST) => {
                self.make_room(parent, name, raw)?;
                rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(mode))
                    .map_err(self.io_err(raw, "creating the file"))
            }
            Err(e) => Err(self.io_err(raw, "creating the file")(e)),
        }
    }

    /// Removes whatever is at `name` (a later entry replaces an earlier one).
    fn make_room(&mut self, parent: &OwnedFd, name: &OsStr, raw: &Path) -> Result<()> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => self
                .remove(parent, name)
                .map_err(self.io_err(raw, "replacing the existing entry")),
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(self.io_err(raw, "inspecting the existing entry")(e)),
        }
    }

    /// Deletes `name` under `parent`, recursively for directories, never following
    /// symlinks.
    fn remove(&mut self, parent: &OwnedFd, name: &OsStr) -> rustix::io::Result<()> {
        self.cached_parent = None;
        remove_all_at(parent, name)
    }

    fn whiteout(&mut self, raw: &Path, parent_rel: Option<&Path>, name: &OsStr) -> Result<()> {
        let opaque = name.as_bytes() == OPAQUE;
        let target = OsStr::from_bytes(&name.as_bytes()[WHITEOUT_PREFIX.len()..]);
        if !opaque && (target.is_empty() || target == "." || target == "..") {
            return Err(self.err(raw, "whiteout without a name"));
        }
        match self.form {
            Form::Overlay => {
                let parent = self
                    .dir(parent_rel)
                    .map_err(self.io_err(raw, "opening its parent directory"))?;
                if opaque {
                    let fd = rustix::fs::openat(
                        &parent,
                        ".",
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(self.io_err(raw, "opening the directory"))?;
                    rustix::fs::fsetxattr(&fd, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                        .map_err(self.io_err(raw, "marking the directory opaque"))?;
                } else {
                    self.make_room(&parent, target, raw)?;
                    rustix::fs::mknodat(
                        &parent,
                        target,
                        FileType::CharacterDevice,
                        Mode::empty(),
                        0,
                    )
                    .map_err(self.io_err(raw, "creating the overlay whiteout"))?;
                }
            }
            Form::Copy => {
                // A whiteout for something absent is no error.
                let parent = match self.dir_exact(parent_rel) {
                    Ok(p) => p,
                    Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(self.io_err(raw, "opening its parent directory")(e)),
                };
                if opaque {
                    let keep: HashSet<OsString> = self
                        .created
                        .iter()
                        .filter(|p| {
                            p.parent().map(|x| x.as_os_str())
                                == Some(parent_rel.map(|p| p.as_os_str()).unwrap_or_default())
                        })
                        .filter_map(|p| p.file_name().map(OsStr::to_os_string))
                        .collect();
                    let dirfd = rustix::fs::openat(
                        &parent,
                        ".",
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(self.io_err(raw, "opening the directory"))?;
                    let mut names = Vec::new();
                    let dir = rustix::fs::Dir::read_from(&dirfd)
                        .map_err(self.io_err(raw, "reading the directory"))?;
                    for ent in dir {
                        let ent = ent.map_err(self.io_err(raw, "reading the directory"))?;
                        let n = OsStr::from_bytes(ent.file_name().to_bytes()).to_os_string();
                        if n != "." && n != ".." && !keep.contains(&n) {
                            names.push(n);
                        }
                    }
                    for n in names {
                        self.remove(&dirfd, &n)
                            .map_err(self.io_err(raw, "clearing the opaque directory"))?;
                    }
                } else {
                    match rustix::fs::statat(&parent, target, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(_) => self
                            .remove(&parent, target)
                            .map_err(self.io_err(raw, "deleting the whited-out entry"))?,
                        Err(rustix::io::Errno::NOENT) => {}
                        Err(e) => {
                            return Err(self.io_err(raw, "inspecting the whited-out entry")(e))
                        }
                    }
                    if let Some(p) = parent_rel {
                        self.created.remove(&p.join(target));
                    } else {
                        self.created.remove(Path::new(target));
                    }
                }
            }
        }
        Ok(())
    }

    /// The mode a regular file gets: the entry's, and without root one its owner
    /// can still write (later entries and layers may replace it).
    fn file_mode(&self, mode: u32) -> u32 {
        if self.privileged {
            mode
        } else {
            mode | 0o200
        }
    }

    /// Whether a file created now in `parent` is already owned as `m` says: the
    /// creator's uid, and its gid or, in a setgid directory, the directory's. Known
    /// only for the cached parent (one fstat per directory, not per file).
    fn created_as(&mut self, parent: &OwnedFd, m: &Meta) -> bool {
        use rustix::fd::AsRawFd;
        let Some((_, cached)) = &self.cached_parent else {
            return false;
        };
        if cached.as_raw_fd() != parent.as_raw_fd() {
            return false;
        }
        if self.cached_parent_gid.is_none() {
            let Ok(st) = rustix::fs::fstat(&**cached) else {
                return false;
            };
            self.cached_parent_gid = Some(if st.st_mode & 0o2000 != 0 {
                st.st_gid
            } else {
                self.egid
            });
        }
        m.uid == u64::from(self.euid) && Some(m.gid) == self.cached_parent_gid.map(u64::from)
    }

    /// Sets what the entry says of `fd`, a directory or a regular file it made,
    /// except what `preset` says the file was created with.
    fn set_owner_mode_xattrs(
        &self,
        fd: &OwnedFd,
        raw: &Path,
        is_dir: bool,
        m: &Meta,
        report: &mut Report,
        preset: Preset,
    ) -> Result<()> {
        let (uid, gid, mode, xattrs) = (m.uid, m.gid, m.mode, &m.xattrs);
        if self.privileged {
            if !preset.owner {
                rustix::fs::fchown(fd, Some(uid_of(uid)), Some(gid_of(gid)))
                    .map_err(self.io_err(raw, "setting its owner"))?;
            }
        } else if uid != u64::from(self.euid) || gid != u64::from(self.egid) {
            report.skipped_owners += 1;
        }
        // After chown, which clears setuid/setgid bits and file capabilities. Without
        // root, the owner keeps write (and, on directories, search) permission, or
        // later entries and layers could not change what is below.
        let mode = match (self.privileged, is_dir) {
            (false, true) => mode | 0o700,
            _ => self.file_mode(mode),
        };
        if !preset.mode {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
                .map_err(self.io_err(raw, "setting its mode"))?;
        }
        for (k, v) in xattrs {
            if let Err(e) = rustix::fs::fsetxattr(fd, k.as_str(), v, XattrFlags::empty()) {
                if self.privileged && e != rustix::io::Errno::NOTSUP {
                    return Err(self.io_err(raw, "setting an extended attribute")(e));
                }
                tracing::debug!("layer {}: {}: xattr {k}: {e}", self.layer, raw.display());
                report.skipped_xattrs += 1;
            }
        }
        Ok(())
    }

    /// Sets directory mtimes, deepest first, once nothing more is written below them.
    fn finish(&mut self) -> Result<()> {
        let times_list = std::mem::take(&mut self.dir_times);
        for (path, mtime) in times_list.iter().rev() {
            if let Ok(fd) = rustix::fs::openat2(
                &self.root,
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                resolve_flags(),
            ) {
                let _ = rustix::fs::futimens(&fd, &times(*mtime));
            }
        }
        Ok(())
    }
}

fn uid_of(uid: u64) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(u32::try_from(uid).unwrap_or(u32::MAX - 1))
}

fn gid_of(gid: u64) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(u32::try_from(gid).unwrap_or(u32::MAX - 1))
}

fn dev_of<R: Read>(entry: &tar::Entry<'_, R>) -> Dev {
    let h = entry.header();
    let major = h.device_major().ok().flatten().unwrap_or(0);
    let minor = h.device_minor().ok().flatten().unwrap_or(0);
    rustix::fs::makedev(major, minor)
}

fn times(mtime: u64) -> Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(0),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Extended attributes from PAX `SCHILY.xattr.*` records.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    out
}

/// `linkat` from an `O_PATH` descriptor: `AT_EMPTY_PATH` needs CAP_DAC_READ_SEARCH,
/// so without it the descriptor's `/proc/self/fd` entry is followed instead.
fn link_fd(src: &OwnedFd, parent: &OwnedFd, name: &OsStr) -> rustix::io::Result<()> {
    match rustix::fs::linkat(src, "", parent, name, AtFlags::EMPTY_PATH) {
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::PERM) => {
            use std::os::fd::AsRawFd;
            let proc = format!("/proc/self/fd/{}", src.as_fd().as_raw_fd());
            rustix::fs::linkat(
                rustix::fs::CWD,
                proc.as_str(),
                parent,
                name,
                AtFlags::SYMLINK_FOLLOW,
            )
        }
        other => other,
    }
}

/// Recursively deletes `name` under `parent` without following symlinks.
pub(crate) fn remove_all_at(parent: &OwnedFd, name: &OsStr) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(parent, name, AtFlags::empty());
    }
    let dirfd = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    let dir = rustix::fs::Dir::read_from(&dirfd)?;
    for ent in dir {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    for n in names {
        remove_all_at(&dirfd, &n)?;
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
}

/// Opens `rel` inside the layer `root` (symlinks resolved within it, the last
/// component not followed).
fn open_in(root: &OwnedFd, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        resolve_flags(),
    )
}

/// An overlayfs whiteout: a 0:0 character device.
fn is_whiteout(st: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// Whether the directory `fd` (an O_PATH descriptor) is marked opaque.
fn is_opaque(fd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let mut v = [0u8; 4];
    matches!(
        rustix::fs::getxattr(path.as_str(), "trusted.overlay.opaque", &mut v),
        Ok(1) if v[0] == b'y'
    )
}

/// Copies the extended attributes `from` has onto `to`, as far as allowed.
fn copy_xattrs(from: &std::fs::File, to: &std::fs::File) {
    let mut names = vec![0u8; 64 * 1024];
    let Ok(n) = rustix::fs::flistxattr(from, &mut names) else {
        return;
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::ffi::CString::new(name) else {
            continue;
        };
        let mut value = vec![0u8; 64 * 1024];
        if let Ok(len) = rustix::fs::fgetxattr(from, name.as_c_str(), &mut value) {
            let _ = rustix::fs::fsetxattr(to, name.as_c_str(), &value[..len], XattrFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests;
