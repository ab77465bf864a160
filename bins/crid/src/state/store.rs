//! The pods and containers crid knows: in memory (maps, name reservations) and on
//! disk (their state files, see [`crate::state::record`]), and finding them again when
//! crid starts.

use crate::error::{CridError, Result};
use crate::state::record::{self, ContainerRecord, PodRecord};
use crikit::runtime::monitor::StateDir;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// A pod's state, behind the lock its RPCs take.
pub type PodRef = Arc<tokio::sync::Mutex<PodRecord>>;

/// A container's state, behind a lock held only to read or change the record: never
/// across a runtime call (see [`Store::container_changes`]).
pub type ContainerRef = Arc<tokio::sync::Mutex<ContainerRecord>>;

/// What never changes about a container once it is made, readable without taking
/// its lock.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Its pod.
    pub pod_id: String,
    /// The pod's infra process, not a container of the pod's.
    pub infra: bool,
    /// The image's id.
    pub image_id: String,
    /// The ids of the images its image volumes mount.
    pub volume_images: Vec<String>,
    /// Its init process.
    pub pid: i32,
}

/// A container crid tracks: its facts, its state behind a lock, and the lock of the
/// calls that change it through its runtime.
struct Tracked {
    facts: Facts,
    state: ContainerRef,
    changes: Arc<tokio::sync::Mutex<()>>,
}

/// The pods and containers.
pub struct Store {
    root: PathBuf,
    run_dir: PathBuf,
    pods: RwLock<HashMap<String, PodRef>>,
    /// Each pod's teardown lock (see [`Store::pod_teardown`]).
    teardowns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    containers: RwLock<HashMap<String, Tracked>>,
    /// Names taken (pods' and containers' metadata keys) → id.
    names: Mutex<HashMap<String, String>>,
}

/// A name held for an object being made; released on drop unless kept.
pub struct Reservation<'a> {
    store: &'a Store,
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
            self.store.release(&self.key);
        }
    }
}

/// The key that makes a pod's name unique.
pub fn pod_name_key(m: &record::PodMetadata) -> String {
    format!("pod\0{}\0{}\0{}\0{}", m.name, m.namespace, m.uid, m.attempt)
}

/// The key that makes a container's name unique in its pod. The pod's infra
/// process has a key of its own, so no container name is taken by it.
pub fn container_name_key(pod: &str, name: &str, attempt: u32, infra: bool) -> String {
    if infra {
        format!("infra\0{pod}")
    } else {
        format!("ctr\0{pod}\0{name}\0{attempt}")
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// An empty store over the state directory `root` and the run directory.
    pub fn new(root: &Path, run_dir: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
            pods: Default::default(),
            teardowns: Default::default(),
            containers: Default::default(),
            names: Default::default(),
        }
    }

    /// `<root>/pods/<id>`.
    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.root.join("pods").join(id)
    }

    /// `<root>/containers/<id>`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// Where container `id`'s recursive read-only copies are mounted.
    pub fn rro_dir(&self, id: &str) -> PathBuf {
        self.run_dir.join("rro").join(id)
    }

    /// The monitor state directory of container `id`.
    pub fn monitor_dir(&self, id: &str) -> StateDir {
        StateDir::new(&self.run_dir, id)
    }

    /// Saves a pod's state file.
    pub fn save_pod(&self, pod: &PodRecord) -> Result<()> {
        let dir = self.pod_dir(&pod.id);
        std::fs::create_dir_all(&dir)
            .map_err(CridError::io(format!("creating {}", dir.display())))?;
        crikit::atomic::write_json(&dir.join("pod.json"), pod, 0o600)
            .map_err(CridError::save(format!("pod {}", pod.id)))
    }

    /// Saves a container's state file.
    pub fn save_container(&self, c: &ContainerRecord) -> Result<()> {
        let dir = self.container_dir(&c.id);
        std::fs::create_dir_all(&dir)
            .map_err(CridError::io(format!("creating {}", dir.display())))?;
        crikit::atomic::write_json(&dir.join("container.json"), c, 0o600)
            .map_err(CridError::save(format!("container {}", c.id)))
    }

    /// The pod `id`, if crid has it.
    pub fn pod(&self, id: &str) -> Option<PodRef> {
        read(&self.pods).get(id).cloned()
    }

    /// Every pod, as a snapshot of the map.
    pub fn all_pods(&self) -> Vec<PodRef> {
        read(&self.pods).values().cloned().collect()
    }

    /// Tracks a made pod.
    pub fn insert_pod(&self, pod: PodRecord) {
        write(&self.pods).insert(pod.id.clone(), Arc::new(tokio::sync::Mutex::new(pod)));
    }

    /// The lock that lets one call at a time (StopPodSandbox, RemovePodSandbox) tear
    /// the pod `id` down. It is held across the teardown, the pod's record lock only
    /// to read and to change the record: status and list calls, kubelet's relist
    /// among them, and the events do not wait for a network's teardown.
    pub fn pod_teardown(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            crikit::sync::lock(&self.teardowns)
                .entry(id.to_string())
                .or_default(),
        )
    }

    /// Drops the teardown lock of the pod `id` once the pod is gone (a call that
    /// waited for a removal asked for it again).
    pub fn forget_teardown(&self, id: &str) {
        if self.pod(id).is_none() {
            crikit::sync::lock(&self.teardowns).remove(id);
        }
    }

    /// Forgets the pod `id`.
    pub fn forget_pod(&self, id: &str) {
        write(&self.pods).remove(id);
        crikit::sync::lock(&self.teardowns).remove(id);
    }

    /// The container `id`, if crid has it.
    pub fn container(&self, id: &str) -> Option<ContainerRef> {
        read(&self.containers).get(id).map(|t| Arc::clone(&t.state))
    }

    /// The lock a call holds while it changes the container `id` through its
    /// runtime (StartContainer, UpdateContainerResources, RemoveContainer), so that
    /// two such calls do not overlap; StopContainer waits for it before it signals.
    /// The record's own lock is taken only to read and to change the record, so
    /// status and list calls, kubelet's relist among them, do not wait for a runtime.
    pub fn container_changes(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        read(&self.containers)
            .get(id)
            .map(|t| Arc::clone(&t.changes))
    }

    /// Every container, as a snapshot of the map.
    pub fn all_containers(&self) -> Vec<ContainerRef> {
        read(&self.containers)
            .values()
            .map(|t| Arc::clone(&t.state))
            .collect()
    }

    /// Tracks a made container.
    pub fn insert_container(&self, c: ContainerRecord) {
        let facts = Facts {
            pod_id: c.pod_id.clone(),
            infra: c.infra,
            image_id: c.image_id.clone(),
            volume_images: c
                .mounts
                .iter()
                .filter(|m| !m.image.is_empty())
                .map(|m| m.image.clone())
                .collect(),
            pid: c.pid,
        };
        let id = c.id.clone();
        let t = Tracked {
            facts,
            state: Arc::new(tokio::sync::Mutex::new(c)),
            changes: Default::default(),
        };
        write(&self.containers).insert(id, t);
    }

    /// Forgets the container `id`.
    pub fn forget_container(&self, id: &str) {
        write(&self.containers).remove(id);
    }

    /// Ids of the containers whose facts pass `keep`.
    fn containers_where(&self, keep: impl Fn(&Facts) -> bool) -> Vec<String> {
        read(&self.containers)
            .iter()
            .filter(|(_, t)| keep(&t.facts))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ids of the pod's (listed) containers.
    pub fn containers_of(&self, pod: &str) -> Vec<String> {
        self.containers_where(|f| !f.infra && f.pod_id == pod)
    }

    /// Ids of the pod's infra processes (one, unless a crash left another).
    pub fn infra_of(&self, pod: &str) -> Vec<String> {
        self.containers_where(|f| f.infra && f.pod_id == pod)
    }

    /// The id of a container that uses the image `id` (as its image, or in an
    /// image volume), if one does.
    pub fn image_user(&self, image_id: &str) -> Option<String> {
        self.containers_where(|f| {
            f.image_id == image_id || f.volume_images.iter().any(|v| v == image_id)
        })
        .into_iter()
        .next()
    }

    /// The running init pid of a container, with its pod. Only ids crid knows are
    /// looked up: a request's id never becomes a path.
    pub fn container_pid(&self, id: &str) -> Option<(i32, String)> {
        let f = read(&self.containers).get(id)?.facts.clone();
        (f.pid > 0 && self.monitor_dir(id).exit().is_none()).then_some((f.pid, f.pod_id))
    }

    /// Takes the name `key` for `id`; AlreadyExists when another object has it.
    pub fn reserve(&self, key: String, id: &str, what: String) -> Result<Reservation<'_>> {
        let mut names = crikit::sync::lock(&self.names);
        if let Some(other) = names.get(&key) {
            return Err(CridError::AlreadyExists {
                what,
                id: other.clone(),
            });
        }
        names.insert(key.clone(), id.to_string());
        Ok(Reservation {
            store: self,
            key,
            kept: false,
        })
    }

    /// Frees the name `key`.
    pub fn release(&self, key: &str) {
        crikit::sync::lock(&self.names).remove(key);
    }

    /// Finds the pods and containers a previous crid left in the state directory:
    /// their state is on disk, their processes never depended on crid. Files that
    /// cannot be loaded are reported and left alone; containers whose creation did
    /// not finish are removed (see [`Store::remove_orphans`]). Returns how many
    /// pods and containers were found.
    pub fn restore(&self, runtimes: &[crikit::runtime::runc::Runtime]) -> (usize, usize) {
        let mut pods = 0;
        for (id, path) in state_files(&self.root.join("pods"), "pod.json") {
            match record::load::<PodRecord>(&path).map_err(|source| CridError::State {
                path: path.clone(),
                source: source.into(),
            }) {
                Ok(mut pod) if pod.id == id => {
                    // After a reboot the pinned namespaces are gone: not ready.
                    if pod.ready && pod.ns.values().any(|p| !p.exists()) {
                        pod.ready = false;
                    }
                    crikit::sync::lock(&self.names).insert(pod_name_key(&pod.metadata), id.clone());
                    self.insert_pod(pod);
                    pods += 1;
                }
                Ok(_) => tracing::warn!("{}: its id is not its directory's", path.display()),
                Err(e) => tracing::warn!("{}", e.message()),
            }
        }
        let mut containers = 0;
        for (id, path) in state_files(&self.root.join("containers"), "container.json") {
            match record::load::<ContainerRecord>(&path).map_err(|source| CridError::State {
                path: path.clone(),
                source: source.into(),
            }) {
                Ok(c) if c.id == id => {
                    crikit::sync::lock(&self.names).insert(
                        container_name_key(&c.pod_id, &c.name, c.attempt, c.infra),
                        id.clone(),
                    );
                    self.insert_container(c);
                    containers += 1;
                }
                Ok(_) => tracing::warn!("{}: its id is not its directory's", path.display()),
                Err(e) => tracing::warn!("{}", e.message()),
            }
        }
        self.remove_orphans(runtimes);
        (pods, containers)
    }

    /// Containers whose creation a previous crid did not finish (a bundle or a
    /// half-made one, mounts, a monitor maybe still running the runtime's create,
    /// a runtime container of any handler, no state file) are removed: nobody
    /// knows of them. So are the monitor and mount directories of containers that
    /// are gone, and the layer cache's half-unpacked layers.
    fn remove_orphans(&self, runtimes: &[crikit::runtime::runc::Runtime]) {
        // A pod's state file is written before anything of the pod is made: a
        // directory without one (a crid killed writing it) holds nothing else.
        for e in std::fs::read_dir(self.root.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().is_dir() && !e.path().join("pod.json").exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = self.root.join("containers");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            if !path.is_dir() || path.join("container.json").exists() {
                continue;
            }
            let id = e.file_name().to_string_lossy().into_owned();
            tracing::warn!("removing container {id}, whose creation did not finish");
            self.remove_unknown(runtimes, &id);
        }
        // A removal cut short after the container's directory went.
        for sub in ["ctrmon", "rro"] {
            for e in std::fs::read_dir(self.run_dir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                let id = e.file_name().to_string_lossy().into_owned();
                if self.container(&id).is_none() && !self.container_dir(&id).exists() {
                    self.remove_unknown(runtimes, &id);
                }
            }
        }
        match crikit::rootfs::bundle::sweep_layer_cache(&self.root) {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} half-unpacked layers from the layer cache"),
            Err(e) => tracing::warn!("layer cache: {e}"),
        }
    }

    /// Ends the monitors of a container nobody knows of and removes its files.
    fn remove_unknown(&self, runtimes: &[crikit::runtime::runc::Runtime], id: &str) {
        self.end_monitors(runtimes, id);
        let bundle = self.container_dir(id).join("bundle");
        self.remove_container_files(runtimes, id, &bundle);
    }

    /// Ends the monitors of a container nobody knows of: lets a create they are
    /// running finish (the runtime writes the pid file) or fail, deletes the
    /// container in every runtime, which ends them; kills what is left after that,
    /// and removes the cgroups it leaves.
    fn end_monitors(&self, runtimes: &[crikit::runtime::runc::Runtime], id: &str) {
        use std::time::Duration;
        let dirs = self.monitor_dir(id);
        let wait = |d: Duration, done: &dyn Fn() -> bool| {
            crikit::sync::poll_until(d, Duration::from_millis(10), done);
        };
        let found = dirs.monitor_processes();
        if found.is_empty() {
            return;
        }
        let cgroups: Vec<PathBuf> = found.iter().filter_map(|&p| own_cgroup(p)).collect();
        wait(Duration::from_secs(10), &|| {
            dirs.pid_file().exists() || dirs.monitor_processes().is_empty()
        });
        for runtime in runtimes {
            if let Err(e) = runtime.delete(id) {
                tracing::warn!("container {id}: {e}");
            }
        }
        wait(Duration::from_secs(5), &|| {
            dirs.monitor_processes().is_empty()
        });
        for pid in dirs.monitor_processes() {
            tracing::warn!("container {id}: killing its monitor {pid}");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        wait(Duration::from_secs(5), &|| {
            dirs.monitor_processes().is_empty()
        });
        for c in cgroups {
            if let (Some(parent), Some(name)) = (c.parent(), c.file_name()) {
                crikit::runtime::monitor::cgroup::remove(parent, &name.to_string_lossy());
            }
        }
    }

    /// Deletes the container `id` in these runtimes, its bundle, its state and
    /// monitor directories; what fails is logged, the rest goes on.
    pub fn remove_container_files(
        &self,
        runtimes: &[crikit::runtime::runc::Runtime],
        id: &str,
        bundle: &Path,
    ) {
        for runtime in runtimes {
            if let Err(e) = runtime.delete(id) {
                tracing::warn!("container {id}: {e}");
            }
        }
        if let Err(e) = crikit::rootfs::bundle::remove(&self.root, bundle) {
            tracing::warn!("container {id}: removing its bundle: {e}");
        }
        crikit::rootfs::mountattr::unbind_each(&self.rro_dir(id));
        // A create cut short leaves its half-made bundle mounted (its rootfs, the
        // ID-mapped copies of shared layers): detached first, so the removal cannot
        // reach through them.
        let dir = self.container_dir(id);
        match crikit::rootfs::mountattr::unmount_below(&dir) {
            Ok(0) => {}
            Ok(n) => tracing::info!("container {id}: detached {n} mounts left below its directory"),
            Err(e) => {
                tracing::warn!("container {id}: {e}; leaving {} in place", dir.display());
                return;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(self.monitor_dir(id).path());
    }
}

/// The cgroup a monitor made for itself (`PARENT/ctrmon-ID`, as the first
/// hierarchy holding it shows it), if it made one.
fn own_cgroup(pid: i32) -> Option<PathBuf> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .map(PathBuf::from)
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ctrmon-"))
        })
}

/// `(id, dir/ID/FILE)` for every subdirectory of `dir` that has FILE.
fn state_files(dir: &Path, file: &str) -> Vec<(String, PathBuf)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::record::tests::fixture;

    /// A state root holding the fixtures, as a previous crid left it.
    fn root_with(version: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let pod: PodRecord = record::load(&fixture(&format!("{version}/pod.json"))).unwrap();
        let c: ContainerRecord =
            record::load(&fixture(&format!("{version}/container.json"))).unwrap();
        for (dir, file, src) in [
            (format!("pods/{}", pod.id), "pod.json", "pod.json"),
            (
                format!("containers/{}", c.id),
                "container.json",
                "container.json",
            ),
        ] {
            let dir = d.path().join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(fixture(&format!("{version}/{src}")), dir.join(file)).unwrap();
        }
        d
    }

    #[test]
    fn restore_finds_pods_containers_and_their_names_and_drops_half_made_ones() {
        for version in ["v0", "v1"] {
            let d = root_with(version);
            // A creation cut short: a container directory without a state file.
            std::fs::create_dir_all(d.path().join("containers/half/bundle")).unwrap();
            // A pod whose state file was never written.
            std::fs::create_dir_all(d.path().join("pods/halfpod")).unwrap();
            let store = Store::new(d.path(), &d.path().join("run"));
            let runtime = crikit::runtime::runc::Runtime::new("/bin/true", None);
            assert_eq!(store.restore(&[runtime]), (1, 1), "{version}");
            assert!(!d.path().join("containers/half").exists());
            assert!(!d.path().join("pods/halfpod").exists());
            let pod = store.all_pods().pop().unwrap();
            let pod = pod.try_lock().unwrap().clone();
            let e = store
                .reserve(
                    pod_name_key(&pod.metadata),
                    "other",
                    "pod default/web".into(),
                )
                .err()
                .unwrap();
            assert_eq!(
                e.to_string(),
                format!("pod default/web already exists (id {})", pod.id)
            );
            let c = store.all_containers().pop().unwrap();
            let c = c.try_lock().unwrap().clone();
            assert_eq!(store.containers_of(&pod.id), vec![c.id.clone()]);
            assert_eq!(store.image_user(&c.image_id), Some(c.id.clone()));
            // No exit file, a pid: running as far as the store knows.
            assert_eq!(store.container_pid(&c.id), Some((c.pid, pod.id.clone())));
        }
    }

    #[test]
    fn a_newer_state_file_is_left_alone() {
        let d = root_with("v1");
        let pods = d.path().join("pods");
        let file = std::fs::read_dir(&pods)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("pod.json");
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("\"version\":1", "\"version\":7");
        std::fs::write(&file, &text).unwrap();
        let store = Store::new(d.path(), &d.path().join("run"));
        assert_eq!(
            store.restore(&[crikit::runtime::runc::Runtime::new("/bin/true", None)]),
            (0, 1)
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            text,
            "not rewritten"
        );
    }
}
