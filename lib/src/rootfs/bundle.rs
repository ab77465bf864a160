//! OCI runtime bundles from images in the store: `BUNDLE/rootfs` and
//! `BUNDLE/config.json`.
//!
//! Two ways to make the rootfs:
//! - overlay (root, overlayfs available): every layer is unpacked once, in overlay
//!   form, into the layer cache `<root>/layers/<chain-id>/diff`, layers of one image
//!   in parallel; the rootfs is an overlay mount of the cached layers with the
//!   bundle's own `upper/` and `work/`. A second bundle of the same image unpacks
//!   nothing.
//! - copy (unprivileged, or asked for): the layers applied in order to a plain
//!   directory; without root, ownership is skipped and config.json maps the caller
//!   to root in a user namespace.
//!
//! A bundle is assembled in a temp dir beside its destination and renamed into
//! place, so it is never seen half made. Bundles are registered under
//! `<root>/bundles/` so that [`prune_layers`] keeps the layers they use.

use crate::distribution::digest::Digest;
use crate::distribution::layout::{LayoutError, Store, MAX_CONFIG_SIZE};
use crate::distribution::unpack::{chain_ids, diff_ids};
use crate::rootfs::cache::remove_tree;
pub use crate::rootfs::cache::{LayerCache, LayerPruneReport};
use crate::rootfs::layer::{self, ApplyOptions, Compression, Form, LayerError};
use crate::rootfs::spec::{self, Overrides, SpecError};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// Errors from making or removing bundles.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The image is not in the store, or its blobs are unreadable.
    #[error(transparent)]
    Store(#[from] LayoutError),
    /// A layer failed to apply.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// config.json could not be generated.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The image's config or manifest is inconsistent.
    #[error("image {image}: {reason}")]
    Image {
        /// The image.
        image: String,
        /// What is wrong.
        reason: String,
    },
    /// The destination exists.
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    /// Not a bundle made by bundlegen.
    #[error("{} is not a bundle (no config.json)", .0.display())]
    NotABundle(PathBuf),
    /// Filesystem trouble.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

pub(crate) type Result<T, E = BundleError> = std::result::Result<T, E>;

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// How the rootfs is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootfsMode {
    /// Overlay when root and overlayfs allow, copy otherwise.
    #[default]
    Auto,
    /// Overlay mount of cached layers.
    Overlay,
    /// A plain directory.
    Copy,
}

/// How to make a bundle.
#[derive(Debug, Clone, Default)]
pub struct BundleOptions {
    /// Rootfs mode.
    pub mode: RootfsMode,
    /// config.json overrides.
    pub overrides: Overrides,
    /// A JSON merge patch applied last.
    pub patch: Option<serde_json::Value>,
    /// The user namespace the container will run in, if any.
    pub userns: Option<UsernsRootfs>,
}

/// The user namespace a bundle's rootfs is made for: the overlay's layers are
/// ID-mapped through it, so the image's files show owned by the namespace's own IDs
/// (the shared layer cache stays as it is), and the bundle's upper directory belongs
/// to the namespace's root. Needs the overlay mode and a layer cache on a file system
/// that allows ID-mapped mounts (ext4, xfs, btrfs).
#[derive(Debug, Clone)]
pub struct UsernsRootfs {
    /// The namespace: `/proc/PID/ns/user` or a file it is pinned to.
    pub userns: PathBuf,
    /// The host uid of the namespace's root.
    pub root_uid: u32,
    /// The host gid of the namespace's root.
    pub root_gid: u32,
}

/// ID-mapped copies of the layers, mounted under a bundle's temp dir for as long as
/// the overlay mount takes to find them (it keeps its own references): unmounted on
/// drop, before anything could remove the temp dir through them.
struct IdmappedLayers {
    dir: PathBuf,
    mounted: Vec<PathBuf>,
}

impl IdmappedLayers {
    fn new(dir: PathBuf, layers: &[PathBuf], userns: &Path) -> Result<IdmappedLayers> {
        let ns = File::open(userns).map_err(io_err("opening the user namespace", userns))?;
        fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
        let mut me = IdmappedLayers {
            dir,
            mounted: Vec::new(),
        };
        for (i, layer) in layers.iter().enumerate() {
            let at = me.dir.join(i.to_string());
            fs::create_dir(&at).map_err(io_err("creating", &at))?;
            crate::rootfs::mountattr::idmapped_bind(layer, &at, &ns)
                .map_err(io_err("mounting an ID-mapped copy of", layer))?;
            me.mounted.push(at);
        }
        Ok(me)
    }
}

impl Drop for IdmappedLayers {
    fn drop(&mut self) {
        for at in &self.mounted {
            if rustix::mount::unmount(at, rustix::mount::UnmountFlags::DETACH).is_ok() {
                let _ = fs::remove_dir(at);
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// What was made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleInfo {
    /// The bundle directory.
    pub path: PathBuf,
    /// The image, as named in the store.
    pub image: String,
    /// The stored manifest's digest.
    pub manifest_digest: String,
    /// "overlay" or "copy".
    pub mode: &'static str,
    /// Layers unpacked for this bundle (0 when all were cached).
    pub layers_unpacked: usize,
    /// Chain ids of the image's layers, bottom first.
    pub chain_ids: Vec<String>,
}

/// The mode of the record of an image mounted by itself ([`mount_image`]).
const MOUNT_MODE: &str = "image";

/// The record kept for each bundle under `<root>/bundles/`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    path: PathBuf,
    image: String,
    mode: String,
    chain_ids: Vec<String>,
}

struct ImageParts {
    name: String,
    manifest_digest: Digest,
    config: Vec<u8>,
    /// (blob digest, media type, diff_id)
    layers: Vec<(Digest, String, Digest)>,
}

fn load_image(store: &Store, name: &str) -> Result<ImageParts> {
    let desc = store.resolve(name)?;
    let image = crate::distribution::layout::ref_name(&desc)
        .unwrap_or(name)
        .to_string();
    let bad = |reason: String| BundleError::Image {
        image: image.clone(),
        reason,
    };
    let manifest_digest = Digest::parse(desc.digest().as_ref()).map_err(|e| bad(e.to_string()))?;
    let manifest = store.manifest(&manifest_digest)?;
    let config_digest =
        Digest::parse(manifest.config().digest().as_ref()).map_err(|e| bad(e.to_string()))?;
    let config = store.read_blob(&config_digest, MAX_CONFIG_SIZE)?;
    let diff_ids = diff_ids(&config).map_err(bad)?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(bad(format!(
            "{} layers but {} diff_ids",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    let layers = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(l, diff)| {
            let d = Digest::parse(l.digest().as_ref()).map_err(|e| bad(e.to_string()))?;
            Ok((d, l.media_type().to_string(), diff))
        })
        .collect::<Result<_>>()?;
    Ok(ImageParts {
        name: image.clone(),
        manifest_digest,
        config,
        layers,
    })
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether overlayfs can be mounted here: listed in /proc/filesystems, or, as root,
/// listed once the kernel has loaded its module. A distribution kernel builds it as
/// a module that loads on the first overlay mount, which on a freshly booted node may
/// not have happened yet: a mount that cannot succeed (no lower directory) asks for
/// it, as the first real one would. Found once per process.
fn overlay_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let listed = || {
            fs::read_to_string("/proc/filesystems")
                .is_ok_and(|s| s.lines().any(|l| l.ends_with("\toverlay")))
        };
        if listed() || !is_root() {
            return listed();
        }
        if let Ok(dir) = tempfile::tempdir() {
            let _ = nix::mount::mount(
                Some("overlay"),
                dir.path(),
                Some("overlay"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            );
            let _ = nix::mount::umount2(dir.path(), nix::mount::MntFlags::MNT_DETACH);
        }
        listed()
    })
}

/// Blobs in the store were verified when they were written; the diff_id check
/// binds what is unpacked to the image config (and catches a blob changed on disk).
fn apply_opts(form: Form, media_type: &str, diff_id: &Digest) -> ApplyOptions {
    ApplyOptions {
        form,
        privileged: is_root(),
        digest: None,
        diff_id: Some(diff_id.clone()),
        compression: Compression::from_media_type(media_type),
        lower: Vec::new(),
    }
}

fn record_path(root: &Path, bundle: &Path) -> PathBuf {
    root.join("bundles").join(format!(
        "{}.json",
        Digest::of(bundle.as_os_str().as_encoded_bytes()).hex()
    ))
}

/// A bundle being assembled in a temp dir beside its destination. Until
/// [`Staging::commit`] renames it into place, dropping it undoes what was made, in
/// reverse: the bundle's record, the overlay on its rootfs, the temp dir.
struct Staging {
    dir: PathBuf,
    mounted: bool,
    record: Option<PathBuf>,
    armed: bool,
}

impl Staging {
    fn new(parent: &Path, name: &str, userns: bool) -> Result<Staging> {
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempdir_in(parent)
            .map_err(io_err("creating a temp dir in", parent))?
            .keep();
        let me = Staging {
            dir,
            mounted: false,
            record: None,
            armed: true,
        };
        if userns {
            // The runtime mounts the rootfs from inside the user namespace, as its
            // root: the path must be searchable by others.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&me.dir, fs::Permissions::from_mode(0o711))
                .map_err(io_err("setting the mode of", &me.dir))?;
        }
        let rootfs = me.rootfs();
        fs::create_dir(&rootfs).map_err(io_err("creating", &rootfs))?;
        Ok(me)
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Renames the bundle into place: from here on it is no longer undone.
    fn commit(mut self, to: &Path) -> Result<()> {
        fs::rename(&self.dir, to).map_err(io_err("renaming into", to))?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(rec) = &self.record {
            let _ = fs::remove_file(rec);
        }
        if self.mounted {
            let _ = rustix::mount::unmount(self.rootfs(), rustix::mount::UnmountFlags::DETACH);
        }
        let _ = remove_tree(&self.dir);
    }
}

/// Makes a bundle at `bundle` (which must not exist) from the image `image`.
/// `root` is the state root (for the layer cache and bundle records).
pub fn create(
    store: &Store,
    root: &Path,
    image: &str,
    bundle: &Path,
    opts: &BundleOptions,
) -> Result<BundleInfo> {
    create_with(store, root, image, bundle, opts, |_| {
        Ok::<(), BundleError>(())
    })
}

/// [`create`], with `fit` changing the generated spec before it is validated
/// ([`spec::validate`]) and written: a caller's own settings (crid's CRI request)
/// go into the typed spec, and config.json is written once.
pub fn create_with<E: From<BundleError>>(
    store: &Store,
    root: &Path,
    image: &str,
    bundle: &Path,
    opts: &BundleOptions,
    fit: impl FnOnce(&mut oci_spec::runtime::Spec) -> Result<(), E>,
) -> Result<BundleInfo, E> {
    let img = load_image(store, image)?;
    if bundle.symlink_metadata().is_ok() {
        return Err(BundleError::Exists(bundle.to_path_buf()).into());
    }
    let bundle_abs = std::path::absolute(bundle).map_err(io_err("resolving", bundle))?;
    let parent = bundle_abs.parent().unwrap_or(Path::new("/"));
    let name = bundle_abs
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "bundle".into());
    let overlay = match opts.mode {
        RootfsMode::Copy => false,
        RootfsMode::Overlay => true,
        RootfsMode::Auto => is_root() && overlay_available(),
    };
    if !overlay && opts.userns.is_some() {
        return Err(BundleError::Io {
            action: "making a user namespace's rootfs in",
            path: bundle_abs.join("rootfs"),
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                "user namespaces need the overlay rootfs mode",
            ),
        }
        .into());
    }
    let chains = chain_ids(&img.layers.iter().map(|l| l.2.clone()).collect::<Vec<_>>());
    let mut staging = Staging::new(parent, &name, opts.userns.is_some())?;
    // Held until the bundle's record is written, so prune never sees its layers
    // unused in between.
    let _cache_lock = if overlay {
        Some(LayerCache::new(root).lock(false)?)
    } else {
        None
    };
    let layers_unpacked = if overlay {
        mount_overlay(
            &mut staging,
            store,
            root,
            &img,
            &chains,
            opts.userns.as_ref(),
        )?
    } else {
        copy_layers(&staging.rootfs(), store, &img)?
    };
    write_config(&staging, &img, &name, opts, fit)?;
    let info = BundleInfo {
        path: bundle_abs.clone(),
        image: img.name,
        manifest_digest: img.manifest_digest.to_string(),
        mode: if overlay { "overlay" } else { "copy" },
        layers_unpacked,
        chain_ids: chains.iter().map(|c| c.to_string()).collect(),
    };
    // Registered before the rename: a crash in between leaves a record whose bundle
    // does not exist, which prune drops; never a bundle whose layers could be pruned.
    staging.record = Some(write_record(root, &info)?);
    staging.commit(&bundle_abs)?;
    Ok(info)
}

/// Unpacks what the layer cache lacks and mounts the overlay of the image's layers
/// (ID-mapped through `userns` when given) on the staged rootfs. Returns how many
/// layers were unpacked.
fn mount_overlay(
    staging: &mut Staging,
    store: &Store,
    root: &Path,
    img: &ImageParts,
    chains: &[Digest],
    userns: Option<&UsernsRootfs>,
) -> Result<usize> {
    let cache = LayerCache::new(root);
    let unpacked = cache.ensure(store, &img.layers, chains)?;
    let upper = staging.dir.join("upper");
    let work = staging.dir.join("work");
    fs::create_dir(&upper).map_err(io_err("creating", &upper))?;
    fs::create_dir(&work).map_err(io_err("creating", &work))?;
    let layers: Vec<PathBuf> = chains.iter().rev().map(|c| cache.diff_dir(c)).collect();
    let idmapped = match userns {
        Some(u) => {
            rustix::fs::chown(
                &upper,
                Some(rustix::process::Uid::from_raw(u.root_uid)),
                Some(rustix::process::Gid::from_raw(u.root_gid)),
            )
            .map_err(|e| io_err("changing the owner of", &upper)(e.into()))?;
            Some(IdmappedLayers::new(
                staging.dir.join("idmapped"),
                &layers,
                &u.userns,
            )?)
        }
        None => None,
    };
    let lower: Vec<String> = match &idmapped {
        Some(m) => m.mounted.iter().map(|p| p.display().to_string()).collect(),
        None => layers.iter().map(|p| p.display().to_string()).collect(),
    };
    let rootfs = staging.rootfs();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount_overlay_at(
        &rootfs,
        data,
        rustix::mount::MountFlags::empty(),
        "mounting an overlay on",
    )?;
    staging.mounted = true;
    Ok(unpacked)
}

/// Mounts an overlay with the options `data` on `target`.
fn mount_overlay_at(
    target: &Path,
    data: String,
    flags: rustix::mount::MountFlags,
    action: &'static str,
) -> Result<()> {
    let data = std::ffi::CString::new(data)
        .map_err(|e| io_err("mounting", target)(io::Error::other(e)))?;
    rustix::mount::mount("overlay", target, "overlay", flags, data.as_c_str())
        .map_err(|e| io_err(action, target)(e.into()))
}

/// Applies the image's layers in order to the plain directory `rootfs`.
fn copy_layers(rootfs: &Path, store: &Store, img: &ImageParts) -> Result<usize> {
    for (digest, media_type, diff_id) in &img.layers {
        let blob = store.blob_path(digest);
        let f = File::open(&blob).map_err(io_err("opening", &blob))?;
        layer::apply(
            rootfs,
            f,
            digest.as_str(),
            &apply_opts(Form::Copy, media_type, diff_id),
        )?;
    }
    Ok(img.layers.len())
}

/// Generates the staged bundle's config.json, lets `fit` change it, validates and
/// writes it.
fn write_config<E: From<BundleError>>(
    staging: &Staging,
    img: &ImageParts,
    name: &str,
    opts: &BundleOptions,
    fit: impl FnOnce(&mut oci_spec::runtime::Spec) -> Result<(), E>,
) -> Result<(), E> {
    let mut overrides = opts.overrides.clone();
    if !is_root() && overrides.rootless.is_none() {
        overrides.rootless = Some((
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        ));
    }
    let mut config = spec::generate(
        &img.config,
        &staging.rootfs(),
        name,
        &overrides,
        opts.patch.as_ref(),
    )
    .map_err(BundleError::from)?;
    fit(&mut config)?;
    spec::validate(&config).map_err(BundleError::from)?;
    let path = staging.dir.join("config.json");
    let text = serde_json::to_vec_pretty(&config)
        .map_err(|e| io_err("writing", &path)(io::Error::other(e)))?;
    fs::write(&path, text).map_err(io_err("writing", &path))?;
    Ok(())
}

/// Writes the record of the bundle `info` describes, so that prune keeps its layers.
fn write_record(root: &Path, info: &BundleInfo) -> Result<PathBuf> {
    let rec = record_path(root, &info.path);
    let dir = root.join("bundles");
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let r = Record {
        path: info.path.clone(),
        image: info.image.clone(),
        mode: info.mode.to_string(),
        chain_ids: info.chain_ids.clone(),
    };
    crate::atomic::write_json(&rec, &r, 0o644).map_err(|e| io_err(e.step, &e.path)(e.source))?;
    Ok(rec)
}

/// Mounts the filesystem of the image `image`, read-only, at `dir/rootfs`: an
/// overlay of its layers with no upper layer (the layers unpacked first when they
/// are not). `dir` must not exist. A record keeps the layers from being pruned
/// while `dir` exists; [`remove`] undoes it all. Returns the mounted directory.
pub fn mount_image(store: &Store, root: &Path, image: &str, dir: &Path) -> Result<PathBuf> {
    let img = load_image(store, image)?;
    if dir.symlink_metadata().is_ok() {
        return Err(BundleError::Exists(dir.to_path_buf()));
    }
    let dir = std::path::absolute(dir).map_err(io_err("resolving", dir))?;
    let chains = chain_ids(&img.layers.iter().map(|l| l.2.clone()).collect::<Vec<_>>());
    let cache = LayerCache::new(root);
    let _lock = cache.lock(false)?;
    cache.ensure(store, &img.layers, &chains)?;
    let rootfs = dir.join("rootfs");
    let empty = dir.join("empty");
    for d in [&rootfs, &empty] {
        fs::create_dir_all(d).map_err(io_err("creating", d))?;
    }
    let info = BundleInfo {
        path: dir.clone(),
        image: img.name.clone(),
        manifest_digest: img.manifest_digest.to_string(),
        mode: MOUNT_MODE,
        layers_unpacked: 0,
        chain_ids: chains.iter().map(|c| c.to_string()).collect(),
    };
    let record = write_record(root, &info)?;
    // Without an upper layer overlayfs wants two lower ones: an empty one at the
    // bottom serves an image of one layer.
    let mut lower: Vec<String> = chains
        .iter()
        .rev()
        .map(|c| cache.diff_dir(c).display().to_string())
        .collect();
    lower.push(empty.display().to_string());
    if let Err(e) = mount_overlay_at(
        &rootfs,
        format!("lowerdir={}", lower.join(":")),
        rustix::mount::MountFlags::RDONLY
            | rustix::mount::MountFlags::NODEV
            | rustix::mount::MountFlags::NOSUID,
        "mounting the image's layers on",
    ) {
        let _ = fs::remove_file(&record);
        let _ = remove_tree(&dir);
        return Err(e);
    }
    Ok(rootfs)
}

/// Removes a bundle made by [`create`]: unmounts its rootfs, deletes it and its
/// record. A bundle that is already gone is no error.
pub fn remove(root: &Path, bundle: &Path) -> Result<()> {
    let bundle_abs = std::path::absolute(bundle).map_err(io_err("resolving", bundle))?;
    let rec = record_path(root, &bundle_abs);
    if bundle_abs.symlink_metadata().is_err() {
        let _ = fs::remove_file(&rec);
        return Ok(());
    }
    if !bundle_abs.join("config.json").is_file() && !rec.is_file() {
        return Err(BundleError::NotABundle(bundle_abs));
    }
    let rootfs = bundle_abs.join("rootfs");
    match rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        // In use (a container still runs): detach, the kernel finishes when free.
        Err(rustix::io::Errno::BUSY) => {
            let _ = rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH);
        }
        Err(e) => return Err(io_err("unmounting", &rootfs)(e.into())),
    }
    remove_tree(&bundle_abs)?;
    let _ = fs::remove_file(&rec);
    Ok(())
}

/// Removes the debris of killed unpacks and removals from the layer cache under
/// `root`, when nobody works in it; returns how many went.
pub fn sweep_layer_cache(root: &Path) -> Result<usize> {
    LayerCache::new(root).sweep()
}

/// The hex chain ids of the layers that the images in the store and the bundles
/// under `root` use; records of bundles that no longer exist are dropped (and
/// counted in the second value).
fn layers_in_use(store: &Store, root: &Path) -> Result<(HashSet<String>, u64)> {
    let mut keep: HashSet<String> = HashSet::new();
    for img in store.list()? {
        if let Ok(parts) = load_image(store, &img.name) {
            let diff: Vec<Digest> = parts.layers.iter().map(|l| l.2.clone()).collect();
            keep.extend(chain_ids(&diff).iter().map(|c| c.hex().to_string()));
        }
    }
    let mut stale = 0;
    let rec_dir = root.join("bundles");
    if let Ok(rd) = fs::read_dir(&rec_dir) {
        for e in rd.flatten() {
            let rec: Option<Record> = fs::read(e.path())
                .ok()
                .and_then(|d| serde_json::from_slice(&d).ok());
            match rec {
                Some(r)
                    if r.path.join("config.json").is_file()
                        || (r.mode == MOUNT_MODE && r.path.exists()) =>
                {
                    keep.extend(
                        r.chain_ids
                            .iter()
                            .map(|c| c.trim_start_matches("sha256:").to_string()),
                    );
                }
                _ => {
                    let _ = fs::remove_file(e.path());
                    stale += 1;
                }
            }
        }
    }
    Ok((keep, stale))
}

/// Deletes cached layers that no image in the store and no existing bundle uses,
/// and the debris of killed unpacks and removals. Waits for unpacks and bundles
/// in flight.
pub fn prune_layers(store: &Store, root: &Path) -> Result<LayerPruneReport> {
    prune_layers_with(store, root, false)
}

/// [`prune_layers`]; with `background`, the layers are renamed out of sight and
/// a thread of this process deletes them after it returns (for a daemon, which
/// outlives that thread; their bytes are not counted).
pub fn prune_layers_with(store: &Store, root: &Path, background: bool) -> Result<LayerPruneReport> {
    let cache = LayerCache::new(root);
    let _lock = cache.lock(true)?;
    let (keep, stale) = layers_in_use(store, root)?;
    let mut report = cache.remove_unused(&keep, background)?;
    report.stale_records = stale;
    Ok(report)
}

/// [`prune_layers`], unless someone works in the cache now (a pull, a bundle
/// being made): then nothing, and `None`.
pub fn prune_layers_if_idle(store: &Store, root: &Path) -> Result<Option<LayerPruneReport>> {
    let cache = LayerCache::new(root);
    let Some(_lock) = cache.try_lock_exclusive()? else {
        return Ok(None);
    };
    let (keep, stale) = layers_in_use(store, root)?;
    let mut report = cache.remove_unused(&keep, false)?;
    report.stale_records = stale;
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_bundle_is_undone_unless_committed() {
        let parent = tempfile::tempdir().unwrap();
        let rec = parent.path().join("record.json");
        let staged = |name: &str| {
            let mut s = Staging::new(parent.path(), name, false).unwrap();
            fs::write(s.rootfs().join("file"), "x").unwrap();
            fs::write(&rec, "{}").unwrap();
            s.record = Some(rec.clone());
            s
        };
        let names = || -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(parent.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        drop(staged("dropped"));
        assert_eq!(names(), Vec::<String>::new(), "dir and record removed");
        // A failed rename (the destination's parent is missing) undoes it too.
        let s = staged("failed");
        assert!(s.commit(&parent.path().join("missing/b")).is_err());
        assert_eq!(names(), Vec::<String>::new());
        let s = staged("kept");
        s.commit(&parent.path().join("b")).unwrap();
        assert_eq!(names(), ["b", "record.json"]);
        assert!(parent.path().join("b/rootfs/file").is_file());
    }
}
