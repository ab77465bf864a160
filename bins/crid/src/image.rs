//! Images over the crikit store: the images imgpull pulls are the images crid
//! lists, and the other way round.
//!
//! An image's CRI id is its config digest, as containerd and CRI-O report it; its
//! repo tags are the store names that point at it, its repo digests
//! `REPOSITORY@DIGEST` with the digest the registry served. Concurrent pulls of
//! one image with the same credentials share one download.

use crate::error::{CridError, Result};
use crikit::distribution::digest::Digest;
use crikit::distribution::layout::{ImageEntry, LayoutError, Store as Layout, MAX_CONFIG_SIZE};
use crikit::distribution::progress::{Event, Sink};
use crikit::distribution::registry::Puller;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One image as the CRI sees it: every store name of one config digest.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// `sha256:…` of the config.
    pub id: String,
    /// Store names (`docker.io/library/busybox:latest`).
    pub names: Vec<String>,
    /// `REPOSITORY@sha256:…`.
    pub repo_digests: Vec<String>,
    /// Bytes of its blobs in the store.
    pub size: u64,
    /// The config's `User`.
    pub user: String,
}

impl ImageInfo {
    /// As the CRI reports it, pinned if `pins` says so.
    pub fn to_cri(&self, pins: &Pins) -> cri::Image {
        let user = self.user.split(':').next().unwrap_or_default();
        let (uid, username) = match user.parse::<i64>() {
            Ok(n) => (Some(cri::Int64Value { value: n }), String::new()),
            Err(_) if user.is_empty() => (Some(cri::Int64Value { value: 0 }), String::new()),
            Err(_) => (None, user.to_string()),
        };
        cri::Image {
            id: self.id.clone(),
            repo_tags: self.names.clone(),
            repo_digests: self.repo_digests.clone(),
            size: self.size,
            uid,
            username,
            spec: Some(cri::ImageSpec {
                image: self.id.clone(),
                ..Default::default()
            }),
            pinned: pins.pinned(&self.names),
        }
    }
}

/// The images reported pinned (kubelet's image garbage collection never removes
/// them): the pause image, and the names that match the `pinned-images` patterns,
/// as CRI-O matches its `pinned_images`: an exact name, `PREFIX*`, or
/// `*KEYWORD*`. Exact names are normalised as references are (`busybox` is
/// `docker.io/library/busybox:latest`).
#[derive(Debug, Clone, Default)]
pub struct Pins {
    exact: Vec<String>,
    prefixes: Vec<String>,
    keywords: Vec<String>,
}

impl Pins {
    /// The pins of `patterns` (checked already) and the pause image.
    pub fn new(patterns: &[String], pause_image: Option<&str>) -> Pins {
        let mut pins = Pins::default();
        for p in patterns.iter().map(String::as_str).chain(pause_image) {
            match (p.strip_prefix('*'), p.strip_suffix('*')) {
                (Some(rest), Some(_)) => pins.keywords.push(rest.trim_end_matches('*').to_string()),
                (None, Some(prefix)) => pins.prefixes.push(prefix.to_string()),
                _ => pins.exact.push(normalised(p)),
            }
        }
        pins
    }

    /// Whether `pattern` is one: `*` only at its end, or at both ends, and
    /// something besides.
    pub fn check(pattern: &str) -> std::result::Result<(), String> {
        let inner = pattern.trim_start_matches('*').trim_end_matches('*');
        if inner.is_empty() {
            return Err("matches every image; name some".into());
        }
        if inner.contains('*') {
            return Err("'*' may only end a prefix, or surround a keyword".into());
        }
        if pattern.starts_with('*') && !pattern.ends_with('*') {
            return Err("a leading '*' needs a trailing one (*KEYWORD*)".into());
        }
        Ok(())
    }

    /// Whether an image of these names is pinned.
    pub fn pinned(&self, names: &[String]) -> bool {
        names.iter().any(|n| {
            self.exact.iter().any(|e| e == n)
                || self.prefixes.iter().any(|p| n.starts_with(p.as_str()))
                || self.keywords.iter().any(|k| n.contains(k.as_str()))
        })
    }
}

/// A reference as the store names it, or as given when it does not parse.
fn normalised(r: &str) -> String {
    crikit::distribution::reference::parse(r)
        .map(|r| crikit::distribution::reference::store_name(&r))
        .unwrap_or_else(|_| r.to_string())
}

/// What crid has read of the store's manifests, by manifest digest: the config each
/// names and, once an image of it was described, the config's user and the image's
/// size. Blobs are content-addressed, so nothing here goes stale: a lookup reads only
/// index.json again (imgpull may have changed it), not every image's manifest.
/// Manifests index.json no longer names are forgotten.
#[derive(Debug, Default)]
pub struct Catalog(std::sync::Mutex<HashMap<String, Known>>);

#[derive(Debug, Clone)]
struct Known {
    config: String,
    /// The config's `User` and the image's size in the store.
    described: Option<(String, u64)>,
}

impl Catalog {
    /// The config digest the manifest `digest` names, read once.
    fn config(&self, store: &Layout, digest: &str) -> Result<String, LayoutError> {
        if let Some(k) = crikit::sync::lock(&self.0).get(digest) {
            return Ok(k.config.clone());
        }
        let config = store
            .manifest(&Digest::parse(digest)?)?
            .config()
            .digest()
            .to_string();
        crikit::sync::lock(&self.0).insert(
            digest.to_string(),
            Known {
                config: config.clone(),
                described: None,
            },
        );
        Ok(config)
    }

    /// Forgets the manifests not in `named`.
    fn keep(&self, named: &std::collections::HashSet<&str>) {
        crikit::sync::lock(&self.0).retain(|d, _| named.contains(d.as_str()));
    }

    fn described(&self, digest: &str) -> Option<(String, u64)> {
        crikit::sync::lock(&self.0)
            .get(digest)
            .and_then(|k| k.described.clone())
    }

    fn remember(&self, digest: &str, user: &str, size: u64) {
        if let Some(k) = crikit::sync::lock(&self.0).get_mut(digest) {
            k.described = Some((user.to_string(), size));
        }
    }
}

/// The store's entries grouped by config digest, in index order.
fn grouped(
    store: &Layout,
    catalog: &Catalog,
) -> Result<Vec<(String, Vec<ImageEntry>)>, LayoutError> {
    let mut groups: Vec<(String, Vec<ImageEntry>)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    let entries = store.list()?;
    catalog.keep(&entries.iter().map(|e| e.manifest_digest.as_str()).collect());
    for e in entries {
        let config = catalog.config(store, &e.manifest_digest)?;
        match at.get(&config) {
            Some(&i) => groups[i].1.push(e),
            None => {
                at.insert(config.clone(), groups.len());
                groups.push((config, vec![e]));
            }
        }
    }
    Ok(groups)
}

/// The image with config `id`, from its store entries: reads the config and sizes
/// the blobs.
fn describe(
    store: &Layout,
    catalog: &Catalog,
    id: String,
    entries: Vec<ImageEntry>,
) -> Result<ImageInfo, LayoutError> {
    let first = entries.first().map(|e| e.manifest_digest.as_str());
    let (user, size) = match first.and_then(|d| catalog.described(d)) {
        Some(known) => known,
        None => {
            let raw = store.read_blob(&Digest::parse(&id)?, MAX_CONFIG_SIZE)?;
            let user = serde_json::from_slice::<serde_json::Value>(&raw)
                .ok()
                .and_then(|v| v["config"]["User"].as_str().map(String::from))
                .unwrap_or_default();
            let size = match entries.first() {
                Some(e) => store.image_size(&e.descriptor)?,
                None => 0,
            };
            if let Some(d) = first {
                catalog.remember(d, &user, size);
            }
            (user, size)
        }
    };
    let mut repo_digests: Vec<String> = Vec::new();
    for e in &entries {
        let rd = repo_digest(e);
        if !repo_digests.contains(&rd) {
            repo_digests.push(rd);
        }
    }
    Ok(ImageInfo {
        id,
        names: entries.iter().map(|e| e.name.clone()).collect(),
        repo_digests,
        size,
        user,
    })
}

/// `REPOSITORY@DIGEST` of a store entry, the digest as the registry served it.
fn repo_digest(e: &ImageEntry) -> String {
    format!("{}@{}", repository_of(&e.name), e.repo_digest)
}

/// `host/repo` of `host/repo:tag` or `host/repo@digest`.
fn repository_of(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    }
}

/// Every image in the store, grouped by config digest, sorted by first name.
pub fn list(store: &Layout, catalog: &Catalog) -> Result<Vec<ImageInfo>> {
    let mut out = grouped(store, catalog)?
        .into_iter()
        .map(|(id, entries)| describe(store, catalog, id, entries))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| a.names.cmp(&b.names));
    Ok(out)
}

/// The image `spec` names: an id (full, or a prefix of at least 12 hex digits), a
/// store name, a short name, a `NAME@DIGEST` or a repo digest. Only the image found
/// has its config read and its blobs sized.
pub fn find(store: &Layout, catalog: &Catalog, spec: &str) -> Result<Option<ImageInfo>> {
    let groups = grouped(store, catalog)?;
    let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
    let by_id = (hex.len() >= 12 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| {
            groups
                .iter()
                .position(|(id, _)| id.trim_start_matches("sha256:").starts_with(hex))
        })
        .flatten();
    let by_repo_digest = || {
        groups
            .iter()
            .position(|(_, entries)| entries.iter().any(|e| repo_digest(e) == spec))
    };
    let found = match by_id.or_else(by_repo_digest) {
        Some(i) => Some(i),
        None => match store.find(spec) {
            Ok(name) => groups
                .iter()
                .position(|(_, entries)| entries.iter().any(|e| e.name == name)),
            Err(e) if e.is_not_found() => None,
            // What is not a digest cannot name an image here.
            Err(LayoutError::Digest(_)) => None,
            Err(e) => return Err(e.into()),
        },
    };
    let Some(i) = found else {
        return Ok(None);
    };
    let (id, entries) = groups.into_iter().nth(i).unwrap_or_default();
    Ok(Some(describe(store, catalog, id, entries)?))
}

/// Credentials from the CRI's AuthConfig.
pub fn credentials(
    auth: Option<&cri::AuthConfig>,
) -> Result<Option<crikit::distribution::registry::auth::Credentials>> {
    let Some(a) = auth else { return Ok(None) };
    if !a.username.is_empty() {
        return Ok(Some(crikit::distribution::registry::auth::Credentials {
            username: a.username.clone(),
            password: a.password.clone(),
        }));
    }
    if !a.auth.is_empty() {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|e| CridError::Invalid(format!("auth: not base64: {e}")))?;
        let text = String::from_utf8(raw)
            .map_err(|_| CridError::Invalid("auth: not USER:PASSWORD".into()))?;
        return crikit::distribution::registry::auth::Credentials::parse(&text)
            .map(Some)
            .map_err(|e| CridError::Invalid(format!("auth: {e}")));
    }
    if !a.identity_token.is_empty() || !a.registry_token.is_empty() {
        return Err(CridError::Unsupported(
            "identity and registry tokens (give a user name and password)".into(),
        ));
    }
    Ok(None)
}

/// Bytes and inodes of the image store and the layer cache under `root`.
pub fn fs_usage(root: &Path) -> cri::FilesystemUsage {
    let (bytes, inodes) = ["images", "layers"]
        .iter()
        .map(|d| crate::host::fsusage::usage(&root.join(d)))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    cri::FilesystemUsage {
        timestamp: crate::state::record::now_ns(),
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: root.display().to_string(),
        }),
        used_bytes: Some(cri::UInt64Value { value: bytes }),
        inodes_used: Some(cri::UInt64Value { value: inodes }),
    }
}

/// A pull's outcome, shareable between the requests that wait for it: the
/// image's id.
type PullOutcome = Result<String, Arc<CridError>>;

/// The images: the store, the puller, the pulls under way.
pub struct Images {
    /// The image store (the one imgpull fills).
    pub store: Layout,
    /// The state root: the layer cache is under it.
    root: std::path::PathBuf,
    /// Replaced whole when SIGHUP re-reads registries.conf and the credentials;
    /// pulls under way keep the one they started with.
    puller: std::sync::RwLock<Arc<Puller>>,
    progress_timeout: Option<Duration>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Pulls under way, by reference and credentials.
    inflight: std::sync::Mutex<HashMap<String, Shared<BoxFuture<'static, PullOutcome>>>>,
    /// Held by a removal: two at once would each read what the other prunes.
    removing: std::sync::Mutex<()>,
    /// The images reported pinned.
    pub pins: Pins,
    /// What has been read of the store's manifests (see [`Catalog`]).
    pub catalog: Arc<Catalog>,
    /// Where pulls and removals are told (the events file).
    tell: Tell,
    /// The signature policies pulls are checked against.
    policies: Policies,
}

/// The signature policies: a file, and a directory of `NAMESPACE.json` files for
/// pods of a namespace, as CRI-O's signature_policy and signature_policy_dir.
/// Read at each pull, so an edit counts from the next one.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    /// The policy of pulls no namespace file covers; None lets anything in.
    pub file: Option<std::path::PathBuf>,
    /// `DIR/NAMESPACE.json` for pulls made for a pod of NAMESPACE.
    pub dir: Option<std::path::PathBuf>,
}

impl Policies {
    /// The policy file for a pull made for a pod of `namespace` (None: not for a
    /// pod, as the pause image), if any.
    pub fn file_for(&self, namespace: Option<&str>) -> Result<Option<std::path::PathBuf>> {
        if let (Some(dir), Some(ns)) = (&self.dir, namespace.filter(|n| !n.is_empty())) {
            let label = ns.len() <= 63
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !ns.starts_with('-')
                && !ns.ends_with('-');
            if !label {
                return Err(CridError::Invalid(format!(
                    "sandbox_config.metadata.namespace {:?} is not a namespace name (RFC 1123 label)",
                    ns.chars().take(70).collect::<String>()
                )));
            }
            let f = dir.join(format!("{ns}.json"));
            if f.exists() {
                return Ok(Some(f));
            }
        }
        Ok(self.file.clone())
    }
}

/// Tells the events file of an image event: its type, the image, its other fields.
pub type Tell = Box<dyn Fn(&'static str, &str, serde_json::Value) + Send + Sync>;

/// Records when a pull last moved, counts the bytes it downloads, and tells the
/// events file how it goes (at most once a second, and each layer unpacked).
struct Watch<'a> {
    start: Instant,
    last_ms: AtomicU64,
    metrics: &'a crate::metrics::Metrics,
    /// The bytes each resumed blob already had.
    resumed: std::sync::Mutex<HashMap<String, u64>>,
    /// The image as asked for.
    image: &'a str,
    tell: &'a Tell,
    /// Bytes of each blob so far, and when progress was last told.
    done: std::sync::Mutex<(HashMap<String, u64>, Option<Instant>)>,
    unpacked: AtomicU64,
}

impl Watch<'_> {
    fn tell(&self, kind: &'static str, fields: serde_json::Value) {
        (self.tell)(kind, self.image, fields);
    }

    /// Bytes of the image's blobs stored or downloaded so far; told once a second.
    fn progress(&self, digest: &str, bytes: u64) {
        let mut g = crikit::sync::lock(&self.done);
        g.0.insert(digest.to_string(), bytes);
        if g.1.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        g.1 = Some(Instant::now());
        let total: u64 = g.0.values().sum();
        drop(g);
        self.tell(
            "IMAGE_PULL_PROGRESS",
            serde_json::json!({
                "bytes": total,
                "layers_unpacked": self.unpacked.load(Ordering::Relaxed),
            }),
        );
    }
}

impl Sink for Watch<'_> {
    fn event(&self, e: &Event) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        match e {
            // What a resumed download already had is not downloaded again.
            Event::BlobStart { digest, offset, .. } if *offset > 0 => {
                crikit::sync::lock(&self.resumed).insert(digest.clone(), *offset);
            }
            Event::BlobProgress { digest, done, .. } => self.progress(digest, *done),
            Event::BlobExists { digest, size, .. } => self.progress(digest, *size),
            Event::BlobDone { digest, size, .. } => {
                let had = crikit::sync::lock(&self.resumed)
                    .remove(digest)
                    .unwrap_or(0);
                self.metrics.pull_bytes.inc_by(size.saturating_sub(had));
                self.progress(digest, *size);
            }
            Event::LayerUnpacked { digest, .. } => {
                self.metrics.layers_unpacked.inc();
                self.unpacked.fetch_add(1, Ordering::Relaxed);
                self.tell(
                    "IMAGE_LAYER_UNPACKED",
                    serde_json::json!({ "digest": digest }),
                );
            }
            _ => {}
        }
    }
}

impl Watch<'_> {
    /// Returns once nothing has happened for `limit`.
    async fn stalled(&self, limit: Duration) {
        loop {
            let idle = self
                .start
                .elapsed()
                .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)));
            if idle >= limit {
                return;
            }
            tokio::time::sleep((limit - idle).max(Duration::from_millis(50))).await;
        }
    }
}

impl Images {
    /// Images in `store`, pulled by `puller`; a pull that makes no progress for
    /// `progress_timeout` is cancelled.
    pub fn new(
        store: Layout,
        root: std::path::PathBuf,
        puller: Puller,
        progress_timeout: Option<Duration>,
        metrics: Arc<crate::metrics::Metrics>,
        pins: Pins,
        tell: Tell,
    ) -> Images {
        Images {
            store,
            root,
            puller: std::sync::RwLock::new(Arc::new(puller)),
            progress_timeout,
            metrics,
            inflight: Default::default(),
            removing: Default::default(),
            pins,
            catalog: Default::default(),
            tell,
            policies: Policies::default(),
        }
    }

    /// The same, checking pulls against `policies`.
    pub fn with_policies(mut self, policies: Policies) -> Images {
        self.policies = policies;
        self
    }

    /// Pulls from now on go through `puller`.
    pub fn set_puller(&self, puller: Puller) {
        *self.puller.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(puller);
    }

    /// Pulls `image` for a pod of `namespace` (the policy of that namespace
    /// applies), joining a pull of the same image with the same credentials and
    /// the same policy that is already under way; the image's id.
    pub async fn pull(
        self: &Arc<Self>,
        image: &str,
        creds: Option<crikit::distribution::registry::auth::Credentials>,
        namespace: Option<&str>,
    ) -> Result<String> {
        let policy = self.policies.file_for(namespace)?;
        let key = format!(
            "{image}\0{}\0{}",
            creds
                .as_ref()
                .map(|c| format!("{}\0{}", c.username, c.password))
                .unwrap_or_default(),
            policy
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        let shared = {
            let mut map = crikit::sync::lock(&self.inflight);
            match map.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let me = Arc::clone(self);
                    let image = image.to_string();
                    // A task of its own: a caller that gives up does not cancel the
                    // download the others wait for.
                    let done_key = key.clone();
                    let task = tokio::spawn(async move {
                        let t0 = Instant::now();
                        let out = me.pull_now(&image, creds, policy).await.map_err(Arc::new);
                        let failed = out.as_ref().err().map(|e| e.kind().as_label());
                        me.metrics.pull(failed, t0.elapsed());
                        // Finished: the next request pulls afresh, even if every
                        // waiter gave up before now.
                        crikit::sync::lock(&me.inflight).remove(&done_key);
                        out
                    });
                    let fut = async move { task.await.map_err(|e| Arc::new(CridError::from(e)))? }
                        .boxed()
                        .shared();
                    map.insert(key.clone(), fut.clone());
                    fut
                }
            }
        };
        shared.await.map_err(CridError::Shared)
    }

    async fn pull_now(
        &self,
        image: &str,
        creds: Option<crikit::distribution::registry::auth::Credentials>,
        policy: Option<std::path::PathBuf>,
    ) -> Result<String> {
        let watch = Watch {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            metrics: &self.metrics,
            resumed: Default::default(),
            image,
            tell: &self.tell,
            done: Default::default(),
            unpacked: AtomicU64::new(0),
        };
        watch.tell("IMAGE_PULL_STARTED", serde_json::json!({}));
        let out = self.pull_watched(image, creds, policy, &watch).await;
        match &out {
            Ok(id) => watch.tell(
                "IMAGE_PULLED",
                serde_json::json!({
                    "id": id,
                    "bytes": crikit::sync::lock(&watch.done).0.values().sum::<u64>(),
                    "layers_unpacked": watch.unpacked.load(Ordering::Relaxed),
                    "seconds": watch.start.elapsed().as_secs_f64(),
                }),
            ),
            Err(e) => watch.tell(
                "IMAGE_PULL_FAILED",
                serde_json::json!({ "error": e.message() }),
            ),
        }
        out
    }

    async fn pull_watched(
        &self,
        image: &str,
        creds: Option<crikit::distribution::registry::auth::Credentials>,
        policy: Option<std::path::PathBuf>,
        watch: &Watch<'_>,
    ) -> Result<String> {
        let policy = match policy {
            Some(p) => Some(
                tokio::task::spawn_blocking(move || crikit::distribution::policy::Policy::load(&p))
                    .await?
                    .map_err(CridError::Policy)?,
            ),
            None => None,
        };
        // One client for every pull: the tokens it keeps are keyed by the
        // credentials that got them, so a request's own credentials share its
        // connections and never its tokens.
        let puller = Arc::clone(&self.puller.read().unwrap_or_else(|e| e.into_inner()));
        let pull = puller.pull_checked(&self.store, image, watch, creds.as_ref(), policy.as_ref());
        let result = match self.progress_timeout {
            Some(limit) => tokio::select! {
                r = pull => r,
                () = watch.stalled(limit) => {
                    return Err(CridError::PullStalled {
                        image: image.to_string(),
                        secs: limit.as_secs(),
                    });
                }
            },
            None => pull.await,
        };
        let p = result.map_err(CridError::Pull)?;
        tracing::info!("pulled {}", p.pinned);
        let store = self.store.clone();
        let catalog = Arc::clone(&self.catalog);
        let name = p.name.clone();
        let found = tokio::task::spawn_blocking(move || find(&store, &catalog, &name)).await??;
        Ok(found.map(|i| i.id).unwrap_or_default())
    }

    /// Removes every name of the image `spec` names, then the blobs no image needs,
    /// unless `in_use` names a container that uses it. Nothing to remove is no error
    /// (the CRI's RemoveImage is idempotent).
    pub fn remove(&self, spec: &str, in_use: impl Fn(&str) -> Option<String>) -> Result<()> {
        let _one = self.removing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(image) = find(&self.store, &self.catalog, spec)? else {
            return Ok(());
        };
        if let Some(user) = in_use(&image.id) {
            return Err(CridError::NotReady(format!(
                "image {} is in use by container {user}",
                image.names.first().unwrap_or(&image.id)
            )));
        }
        for name in &image.names {
            match self.store.remove(name) {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        (self.tell)(
            "IMAGE_REMOVED",
            image
                .names
                .first()
                .map_or(image.id.as_str(), String::as_str),
            serde_json::json!({ "id": image.id, "names": image.names }),
        );
        self.store.prune()?;
        // The layers only this image used go too: the disk comes back. They are
        // renamed out of sight now and deleted by a thread of crid's: RemoveImage
        // does not wait for the unlinks of a cold tree.
        let r = crikit::rootfs::bundle::prune_layers_with(&self.store, &self.root, true).map_err(
            |source| CridError::Layers {
                path: self.root.join("layers"),
                source,
            },
        )?;
        self.metrics.layers_removed.inc_by(r.layers);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::repository_of;

    #[test]
    fn repositories_of_names() {
        assert_eq!(
            repository_of("docker.io/library/busybox:latest"),
            "docker.io/library/busybox"
        );
        assert_eq!(repository_of("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000/a/b");
        assert_eq!(repository_of("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
        assert_eq!(repository_of("registry/a@sha256:00"), "registry/a");
    }

    #[test]
    fn pinned_images_match_like_cri_o() {
        use super::Pins;
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let pins = Pins::new(
            &["busybox".into(), "quay.io/team/*".into(), "*agent*".into()],
            Some("registry.k8s.io/pause:3.10"),
        );
        for pinned in [
            "docker.io/library/busybox:latest",
            "quay.io/team/tool:1",
            "ghcr.io/x/node-agent:2",
            "registry.k8s.io/pause:3.10",
        ] {
            assert!(pins.pinned(&names(&["other:1", pinned])), "{pinned}");
        }
        for not in [
            "docker.io/library/busybox:1",
            "quay.io/teams/x:1",
            "registry.k8s.io/pause:3.9",
        ] {
            assert!(!pins.pinned(&names(&[not])), "{not}");
        }
        assert!(!Pins::default().pinned(&names(&["a:1"])));
        for bad in ["*", "**", "a*b", "*a", "quay.io/*/x*"] {
            assert!(Pins::check(bad).is_err(), "{bad}");
        }
        for good in ["a", "a*", "*a*", "quay.io/x/y:1"] {
            assert!(Pins::check(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn credentials_from_auth_configs() {
        use k8s_cri::v1::AuthConfig;
        let c = super::credentials(Some(&AuthConfig {
            auth: "dTpw".into(),
            ..Default::default()
        }))
        .unwrap()
        .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        let e = super::credentials(Some(&AuthConfig {
            auth: "%%".into(),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
        assert!(super::credentials(None).unwrap().is_none());
    }
}
