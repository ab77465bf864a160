//! What the store holds that may be served: the complete images of `index.json`,
//! their manifests by digest, and the tags that name them.
//!
//! A view is built from `index.json` and rebuilt when that file changes (its inode,
//! size or modification time), so images pulled while imgserve runs are served as
//! soon as their entry is in. An entry is served only when its manifest, config and
//! every layer are blobs of the store; blobs still being written live in `.ingest/`,
//! which is never read. Besides the stored manifest, an entry's registry manifests
//! (the image index of a multi-platform image, a Docker manifest before conversion;
//! [`crikit::distribution::layout::SOURCE_MANIFESTS`]) are served, and a tag is answered with the
//! manifest the registry gave for it, so a client sees the registry's own digests.

use crikit::distribution::digest::Digest;
use crikit::distribution::layout::{self, LayoutError, Store, MAX_MANIFEST_SIZE};
use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A manifest that may be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Its digest.
    pub digest: Digest,
    /// Its media type, the response's Content-Type.
    pub media_type: String,
}

/// One stored image name, split the way requests ask for it.
#[derive(Debug, Clone)]
struct Named {
    registry: String,
    repository: String,
    tag: String,
    manifest: Manifest,
}

/// How a tag or a repository lookup went.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    /// Found.
    Found(T),
    /// Nothing stored by that name.
    Missing,
    /// Stored from several registries: the request must name one (`?ns=`).
    Ambiguous(Vec<String>),
}

/// The servable contents of the store at one moment.
#[derive(Debug, Default)]
pub struct View {
    names: Vec<Named>,
    by_digest: HashMap<Digest, Manifest>,
}

impl View {
    /// Reads `store`'s index and every manifest it reaches; entries with a missing
    /// or malformed blob are left out (and logged at debug level). Fails when the
    /// store could not be read (out of file descriptors, say), so that a passing
    /// trouble does not hide images until the index next changes.
    pub fn load(store: &Store) -> Result<View, LayoutError> {
        let mut view = View::default();
        let entries = match store.list() {
            Ok(e) => e,
            Err(e) if e.is_not_found() => return Ok(view),
            Err(e) => return Err(e),
        };
        for e in entries {
            let Ok(stored) = Digest::parse(&e.manifest_digest) else {
                continue;
            };
            match complete(store, &stored) {
                Ok(()) => {}
                Err(Incomplete::Missing(why)) => {
                    tracing::debug!("{}: not served: {why}", e.name);
                    continue;
                }
                Err(Incomplete::Unreadable(err)) => return Err(err),
            }
            let stored = Manifest {
                digest: stored,
                media_type: e.media_type.clone(),
            };
            view.by_digest.insert(stored.digest.clone(), stored.clone());
            for d in layout::source_manifests(&e.descriptor) {
                if let Some(media_type) = manifest_type(store, &d) {
                    view.by_digest.insert(
                        d.clone(),
                        Manifest {
                            digest: d,
                            media_type,
                        },
                    );
                }
            }
            // A tag answers with the registry's own manifest when it is stored.
            let tagged = Digest::parse(&e.repo_digest)
                .ok()
                .and_then(|d| view.by_digest.get(&d).cloned())
                .unwrap_or(stored);
            let Ok(r) = crikit::distribution::reference::parse(&e.name) else {
                continue;
            };
            let Some(tag) = r.tag() else { continue };
            view.names.push(Named {
                registry: r.registry().to_string(),
                repository: r.repository().to_string(),
                tag: tag.to_string(),
                manifest: tagged,
            });
        }
        Ok(view)
    }

    /// A manifest by digest, for any repository path.
    pub fn manifest(&self, digest: &Digest) -> Option<&Manifest> {
        self.by_digest.get(digest)
    }

    /// The registries `repository` is stored from (all of them, or only `ns`).
    fn registries(&self, repository: &str, ns: Option<&str>) -> BTreeSet<&str> {
        self.names
            .iter()
            .filter(|n| n.repository == repository && ns.is_none_or(|ns| n.registry == ns))
            .map(|n| n.registry.as_str())
            .collect()
    }

    /// The one registry `repository` comes from, as a mirror request is answered:
    /// the upstream `ns` when the client names one, else the only registry the store
    /// holds that path of.
    fn registry(&self, repository: &str, ns: Option<&str>) -> Lookup<&str> {
        let regs = self.registries(repository, ns);
        let mut it = regs.iter();
        match (it.next(), it.next()) {
            (None, _) => Lookup::Missing,
            (Some(r), None) => Lookup::Found(*r),
            _ => Lookup::Ambiguous(regs.iter().map(|s| s.to_string()).collect()),
        }
    }

    /// The manifest `repository:tag` names.
    pub fn tag(&self, repository: &str, tag: &str, ns: Option<&str>) -> Lookup<&Manifest> {
        match self.registry(repository, ns) {
            Lookup::Found(reg) => self
                .names
                .iter()
                .find(|n| n.registry == reg && n.repository == repository && n.tag == tag)
                .map_or(Lookup::Missing, |n| Lookup::Found(&n.manifest)),
            Lookup::Missing => Lookup::Missing,
            Lookup::Ambiguous(r) => Lookup::Ambiguous(r),
        }
    }

    /// The tags of `repository`, sorted.
    pub fn tags(&self, repository: &str, ns: Option<&str>) -> Lookup<Vec<&str>> {
        match self.registry(repository, ns) {
            Lookup::Found(reg) => {
                let mut t: Vec<&str> = self
                    .names
                    .iter()
                    .filter(|n| n.registry == reg && n.repository == repository)
                    .map(|n| n.tag.as_str())
                    .collect();
                t.sort_unstable();
                t.dedup();
                Lookup::Found(t)
            }
            Lookup::Missing => Lookup::Missing,
            Lookup::Ambiguous(r) => Lookup::Ambiguous(r),
        }
    }

    /// Every repository path stored, sorted, once each.
    pub fn repositories(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self.names.iter().map(|n| n.repository.as_str()).collect();
        set.into_iter().collect()
    }
}

/// Why an image is not served.
enum Incomplete {
    /// A blob is missing or malformed: the image is not (yet) servable.
    Missing(String),
    /// The store could not be read: nothing can be said of the image.
    Unreadable(LayoutError),
}

/// Whether the image manifest `digest` and every blob it names are in the store.
fn complete(store: &Store, digest: &Digest) -> Result<(), Incomplete> {
    let m = store.manifest(digest).map_err(|e| match e {
        LayoutError::Io { ref source, .. } if source.kind() != std::io::ErrorKind::NotFound => {
            Incomplete::Unreadable(e)
        }
        e => Incomplete::Missing(e.to_string()),
    })?;
    let config = std::iter::once(m.config().digest().to_string());
    for d in config.chain(m.layers().iter().map(|l| l.digest().to_string())) {
        let d = Digest::parse(&d).map_err(|e| Incomplete::Missing(e.to_string()))?;
        if !store.has_blob(&d) {
            return Err(Incomplete::Missing(format!("blob {d} is missing")));
        }
    }
    Ok(())
}

/// The media type of a stored manifest or index, as the puller reads it.
fn manifest_type(store: &Store, digest: &Digest) -> Option<String> {
    let raw = store.read_blob(digest, MAX_MANIFEST_SIZE).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    crikit::distribution::registry::media_type_of(&v).map(str::to_string)
}

/// What identifies a version of `index.json`.
type Stamp = Option<(u64, u64, i64, i64)>;

/// The current [`View`] of a store directory, rebuilt when `index.json` changes.
#[derive(Debug)]
pub struct Views {
    dir: PathBuf,
    current: Mutex<(Stamp, Arc<View>)>,
}

impl Views {
    /// Views of the image layout at `dir` (which need not exist yet: until it does,
    /// nothing is served).
    pub fn new(dir: PathBuf) -> Views {
        Views {
            dir,
            current: Mutex::new((None, Arc::new(View::default()))),
        }
    }

    /// The view as of now.
    pub fn get(&self) -> Arc<View> {
        let stamp = std::fs::metadata(self.dir.join("index.json"))
            .ok()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()));
        let mut cur = crikit::sync::lock(&self.current);
        if stamp.is_some() && stamp != cur.0 {
            let loaded = match Store::open_existing(&self.dir) {
                Ok(store) => View::load(&store),
                Err(_) => Ok(View::default()),
            };
            match loaded {
                Ok(view) => *cur = (stamp, Arc::new(view)),
                // The view before stays, and the next request tries again.
                Err(e) => tracing::warn!("reading the store: {e}"),
            }
        }
        Arc::clone(&cur.1)
    }

    /// The path of blob `digest` (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }
}
