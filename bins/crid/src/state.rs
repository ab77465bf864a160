//! What every RPC shares: the settings, the image store, the puller.

use crate::cli::Settings;
use crate::container::{Container, Tracked};
use crate::image::Pulls;
use crate::pod::Pod;
use anyhow::{Context, Result};
use crikit::layout::Store;
use crikit::registry::{PullOptions, Puller};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tonic::Status;

/// The server's shared state.
pub struct Crid {
    /// What it runs with.
    pub settings: Settings,
    /// The image store (the one imgpull fills).
    pub store: Store,
    /// Pulls from registries, as imgpull does.
    pub puller: Puller,
    /// Pulls under way.
    pub pulls: Pulls,
    /// Pods by id.
    pub pods: RwLock<HashMap<String, Arc<tokio::sync::Mutex<Pod>>>>,
    /// Containers by id.
    pub containers: RwLock<HashMap<String, Tracked>>,
    /// Names taken (pods' and containers' metadata keys) → id.
    names: Mutex<HashMap<String, String>>,
    /// The last CPU sample (time, ns used) per container and pod, for rates.
    pub cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
    /// The pod CIDR kubelet gave through UpdateRuntimeConfig.
    pub pod_cidr: Mutex<String>,
}

/// A name held for an object being made; released on drop unless kept.
pub struct Reservation<'a> {
    crid: &'a Crid,
    key: String,
    kept: bool,
}

impl Reservation<'_> {
    /// The object exists: the name stays taken.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.crid.release(&self.key);
        }
    }
}

impl Crid {
    /// Opens the store and sets up the puller.
    pub fn new(settings: Settings) -> Result<Crid> {
        let store = Store::open(crikit::paths::images_dir(&settings.root))
            .with_context(|| format!("opening the image store in {}", settings.root.display()))?;
        let mut registries = crikit::registries::Registries::load(
            settings
                .registries_conf
                .clone()
                .or_else(|| std::env::var_os("CONTAINERS_REGISTRIES_CONF").map(Into::into))
                .as_deref(),
        )?;
        registries.add_insecure(settings.insecure_registries.iter().cloned());
        let creds = crikit::auth::CredentialStore::from_env(None);
        let puller = Puller::new(registries, creds, PullOptions::default())?;
        Ok(Crid {
            settings,
            store,
            puller,
            pulls: Pulls::default(),
            pods: Default::default(),
            containers: Default::default(),
            names: Default::default(),
            cpu_samples: Default::default(),
            pod_cidr: Default::default(),
        })
    }

    /// Finds the pods and containers a previous crid left in the state
    /// directory: their state is on disk, their processes never depended on crid.
    /// Files that cannot be read are reported and left alone.
    pub fn load(&self) -> Result<(usize, usize)> {
        let mut pods = 0;
        for (id, path) in state_files(&self.settings.root.join("pods"), "pod.json") {
            match read_state::<Pod>(&path) {
                Ok(mut pod) if pod.id == id => {
                    // After a reboot the pinned namespaces are gone: not ready.
                    if pod.ready && pod.ns.values().any(|p| !p.exists()) {
                        pod.ready = false;
                    }
                    if let Some(m) = &pod.config.metadata {
                        self.names
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(crate::pod::name_key(m), id.clone());
                    }
                    self.pods
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, Arc::new(tokio::sync::Mutex::new(pod)));
                    pods += 1;
                }
                Ok(_) => tracing::warn!("{}: its id is not its directory's", path.display()),
                Err(e) => tracing::warn!("{}: {e}", path.display()),
            }
        }
        let mut containers = 0;
        for (id, path) in state_files(&self.settings.root.join("containers"), "container.json") {
            match read_state::<Container>(&path) {
                Ok(c) if c.id == id => {
                    if let Some(m) = &c.config.metadata {
                        self.names.lock().unwrap_or_else(|p| p.into_inner()).insert(
                            crate::container::name_key(&c.pod_id, m, c.infra),
                            id.clone(),
                        );
                    }
                    self.containers
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, Tracked::new(c));
                    containers += 1;
                }
                Ok(_) => tracing::warn!("{}: its id is not its directory's", path.display()),
                // A container whose creation was cut short has a bundle but no
                // state file: nothing to find, nothing that runs.
                Err(e) => tracing::warn!("{}: {e}", path.display()),
            }
        }
        self.remove_orphans();
        Ok((pods, containers))
    }

    /// Containers whose creation a previous crid did not finish (a bundle, maybe
    /// a runtime container, no state file) are removed: nobody knows of them.
    fn remove_orphans(&self) {
        let dir = self.settings.root.join("containers");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            if !path.is_dir() || path.join("container.json").exists() {
                continue;
            }
            let id = e.file_name().to_string_lossy().into_owned();
            tracing::warn!("removing container {id}, whose creation did not finish");
            let _ = std::process::Command::new(&self.settings.runtime)
                .arg("--root")
                .arg(self.settings.run_dir.join("runc"))
                .args(["delete", "--force", &id])
                .stdin(std::process::Stdio::null())
                .output();
            let _ = crikit::bundle::remove(&self.settings.root, &path.join("bundle"));
            let _ = std::fs::remove_dir_all(&path);
            let _ = std::fs::remove_dir_all(self.settings.run_dir.join("ctrmon").join(&id));
        }
    }

    /// Every pod, as a snapshot of the map.
    pub fn all_pods(&self) -> Vec<Arc<tokio::sync::Mutex<Pod>>> {
        self.pods
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Every container, as a snapshot of the map.
    pub fn all_containers(&self) -> Vec<Arc<tokio::sync::Mutex<Container>>> {
        self.containers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|t| Arc::clone(&t.state))
            .collect()
    }

    /// Takes the name `key` for `id`; AlreadyExists when another object has it.
    pub fn reserve(&self, key: String, id: &str, what: &str) -> Result<Reservation<'_>, Status> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(other) = names.get(&key) {
            return Err(Status::already_exists(format!(
                "{what} already exists (id {other})"
            )));
        }
        names.insert(key.clone(), id.to_string());
        Ok(Reservation {
            crid: self,
            key,
            kept: false,
        })
    }

    /// Frees the name `key`.
    pub fn release(&self, key: &str) {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// `(id, dir/ID/FILE)` for every subdirectory of `dir`.
fn state_files(dir: &std::path::Path, file: &str) -> Vec<(String, std::path::PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path().join(file),
            )
        })
        .filter(|(_, p)| p.exists())
        .collect();
    out.sort();
    out
}

fn read_state<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> std::io::Result<T> {
    serde_json::from_slice(&std::fs::read(path)?).map_err(std::io::Error::other)
}

/// A fresh 64-hex-digit id, as containerd and CRI-O make them.
pub fn new_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Nanoseconds since the epoch, as the CRI's timestamps.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Writes `value` as JSON to `path` atomically: temp file, fsync, rename, fsync of
/// the directory.
pub fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".state-")
        .tempfile_in(dir)?;
    serde_json::to_writer(&mut tmp, value).map_err(std::io::Error::other)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename itself survives a power loss once the directory is synced.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
