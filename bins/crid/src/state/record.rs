//! crid's state files, `<root>/pods/<id>/pod.json` and
//! `<root>/containers/<id>/container.json`: crid's own types with a schema
//! version, never the CRI's generated types, so that a change of the CRI crate
//! cannot change what is on disk.
//!
//! Versions: 0 is what crid 0.1 wrote before versions existed (the CRI request's
//! config, serialised; no `version` field), loaded and migrated; 1 is this
//! release's. A newer version is refused with a message that names it: a
//! downgrade must not guess at a format it does not know.

use k8s_cri::v1 as cri;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The schema version this release writes.
pub const VERSION: u32 = 1;

/// A state file that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It could not be read.
    #[error("reading it")]
    Read(#[source] std::io::Error),
    /// It is not JSON of the shape its version says.
    #[error("not a crid state file of version {version}")]
    Parse {
        /// The version it claims (0 for none).
        version: u64,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A later crid wrote it.
    #[error(
        "schema version {found} is newer than this crid's ({VERSION}); run a crid that knows it"
    )]
    Newer {
        /// The version in the file.
        found: u64,
    },
}

/// How a pod or container uses a namespace, as the CRI's NamespaceMode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsMode {
    /// The pod's.
    #[default]
    Pod,
    /// The container's own.
    Container,
    /// The host's.
    Node,
    /// Another container's.
    Target,
}

impl NsMode {
    /// From the CRI's number (unknown numbers are the default, POD).
    pub fn from_cri(n: i32) -> NsMode {
        match cri::NamespaceMode::try_from(n) {
            Ok(cri::NamespaceMode::Container) => NsMode::Container,
            Ok(cri::NamespaceMode::Node) => NsMode::Node,
            Ok(cri::NamespaceMode::Target) => NsMode::Target,
            _ => NsMode::Pod,
        }
    }

    /// The CRI's number.
    pub fn to_cri(self) -> i32 {
        let m = match self {
            NsMode::Pod => cri::NamespaceMode::Pod,
            NsMode::Container => cri::NamespaceMode::Container,
            NsMode::Node => cri::NamespaceMode::Node,
            NsMode::Target => cri::NamespaceMode::Target,
        };
        m as i32
    }
}

/// A pod's namespace modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodNamespaces {
    /// Network.
    pub network: NsMode,
    /// PID.
    pub pid: NsMode,
    /// IPC.
    pub ipc: NsMode,
}

/// One ID range of a user namespace: IDs `container_id..container_id+length` in it
/// are `host_id..host_id+length` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// The first ID inside.
    pub container_id: u32,
    /// The first ID outside.
    pub host_id: u32,
    /// How many.
    pub length: u32,
}

impl IdMap {
    /// The CRI's form.
    pub fn to_cri(self) -> cri::IdMapping {
        cri::IdMapping {
            host_id: self.host_id,
            container_id: self.container_id,
            length: self.length,
        }
    }
}

/// A pod's own user namespace (NamespaceMode POD): one range each of uids and gids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespace {
    /// The uid range.
    pub uids: IdMap,
    /// The gid range.
    pub gids: IdMap,
}

/// The network a pod's ADD used, and what it returned: DEL and CHECK run with
/// exactly these, whatever the conf dir holds by then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// The network's name.
    pub name: String,
    /// Its CNI version.
    pub cni_version: String,
    /// The conflist (`plugins` and all) as the ADD ran it.
    pub list: serde_json::Value,
    /// The last plugin's result; null while the ADD has not finished.
    pub result: serde_json::Value,
}

impl Attachment {
    /// From crid 0.1's record: `{"name", "cniVersion", "list", "result"}`.
    pub fn from_v0(v: serde_json::Value) -> Attachment {
        Attachment {
            name: v["name"].as_str().unwrap_or_default().to_string(),
            cni_version: v["cniVersion"].as_str().unwrap_or("0.4.0").to_string(),
            list: v["list"].clone(),
            result: v["result"].clone(),
        }
    }

    /// The plugins of its list, in order.
    pub fn plugins(&self) -> impl DoubleEndedIterator<Item = &serde_json::Value> {
        self.list["plugins"].as_array().into_iter().flatten()
    }
}

/// A port the pod's network maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The port in the pod.
    pub container_port: i32,
    /// The port on the host (0: none).
    pub host_port: i32,
    /// The host address ("" for any).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// A pod's name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodMetadata {
    /// Name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
    /// Attempt.
    pub attempt: u32,
}

/// What crid keeps of a pod (`pod.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    /// The schema version.
    pub version: u32,
    /// Its id.
    pub id: String,
    /// Its name.
    pub metadata: PodMetadata,
    /// Labels.
    #[serde(default)]
    pub labels: HashMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The runtime handler asked for.
    #[serde(default)]
    pub runtime_handler: String,
    /// The namespace modes it asked for.
    #[serde(default)]
    pub namespaces: PodNamespaces,
    /// Its own user namespace, when it has one (pinned as `ns["user"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<UserNamespace>,
    /// Its cgroup parent, if it names one.
    #[serde(default)]
    pub cgroup_parent: Option<String>,
    /// Its sysctls.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Its log directory ("" for none).
    #[serde(default)]
    pub log_directory: String,
    /// Ports its network maps.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Ready (true) or not ready.
    pub ready: bool,
    /// When it was made (ns).
    pub created_at: i64,
    /// Pinned namespaces: kind → file.
    #[serde(default)]
    pub ns: BTreeMap<String, PathBuf>,
    /// Its run directory (namespaces, hostname, resolv.conf).
    pub dir: PathBuf,
    /// Pod IPs, first the primary.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The network its ADD used and the ADD's result, for DEL and CHECK.
    #[serde(default)]
    pub network: Option<Attachment>,
    /// The infra container, when the pod shares a PID namespace and crid runs a
    /// pause image for it (`--pause-image`).
    #[serde(default)]
    pub infra: Option<String>,
    /// The pid of crid's own infra process (`ctrmon --infra`), when the pod shares a
    /// PID namespace; the namespace is pinned at `ns["pid"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra_pid: Option<i32>,
}

/// A mount of a container, as ContainerStatus reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// Where in the container.
    pub container_path: String,
    /// What on the host.
    pub host_path: String,
    /// Read-only.
    #[serde(default)]
    pub readonly: bool,
    /// The CRI's MountPropagation number.
    #[serde(default)]
    pub propagation: i32,
    /// Recursively read-only.
    #[serde(default)]
    pub recursive_read_only: bool,
    /// An image volume's image id ("" for other mounts).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
}

/// A hugepage limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugepageLimit {
    /// `2MB`, `1GB`.
    pub page_size: String,
    /// Bytes.
    pub limit: u64,
}

/// A container's resources as the CRI gives them (0 and "" for unset).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// CFS period, µs.
    pub cpu_period: i64,
    /// CFS quota, µs.
    pub cpu_quota: i64,
    /// CPU shares.
    pub cpu_shares: i64,
    /// Memory limit, bytes.
    pub memory_limit_in_bytes: i64,
    /// OOM score adjustment.
    pub oom_score_adj: i64,
    /// cpuset CPUs.
    pub cpuset_cpus: String,
    /// cpuset memory nodes.
    pub cpuset_mems: String,
    /// Hugepage limits.
    pub hugepage_limits: Vec<HugepageLimit>,
    /// cgroup v2 settings.
    pub unified: BTreeMap<String, String>,
    /// Memory + swap limit, bytes.
    pub memory_swap_limit_in_bytes: i64,
}

impl Resources {
    /// From the CRI's.
    pub fn from_cri(r: &cri::LinuxContainerResources) -> Resources {
        Resources {
            cpu_period: r.cpu_period,
            cpu_quota: r.cpu_quota,
            cpu_shares: r.cpu_shares,
            memory_limit_in_bytes: r.memory_limit_in_bytes,
            oom_score_adj: r.oom_score_adj,
            cpuset_cpus: r.cpuset_cpus.clone(),
            cpuset_mems: r.cpuset_mems.clone(),
            hugepage_limits: r
                .hugepage_limits
                .iter()
                .map(|h| HugepageLimit {
                    page_size: h.page_size.clone(),
                    limit: h.limit,
                })
                .collect(),
            unified: r
                .unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
        }
    }

    /// As the CRI reports it.
    pub fn to_cri(&self) -> cri::LinuxContainerResources {
        cri::LinuxContainerResources {
            cpu_period: self.cpu_period,
            cpu_quota: self.cpu_quota,
            cpu_shares: self.cpu_shares,
            memory_limit_in_bytes: self.memory_limit_in_bytes,
            oom_score_adj: self.oom_score_adj,
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            hugepage_limits: self
                .hugepage_limits
                .iter()
                .map(|h| cri::HugepageLimit {
                    page_size: h.page_size.clone(),
                    limit: h.limit,
                })
                .collect(),
            unified: self
                .unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            memory_swap_limit_in_bytes: self.memory_swap_limit_in_bytes,
        }
    }
}

/// What crid keeps of a container (`container.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The schema version.
    pub version: u32,
    /// Its id.
    pub id: String,
    /// Its pod.
    pub pod_id: String,
    /// Its name.
    pub name: String,
    /// Its attempt.
    #[serde(default)]
    pub attempt: u32,
    /// Labels.
    #[serde(default)]
    pub labels: HashMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Its mounts.
    #[serde(default)]
    pub mounts: Vec<MountRecord>,
    /// Its resources, as last asked for.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// The image's id (config digest).
    pub image_id: String,
    /// The image as stored (the name it was found under).
    pub image_name: String,
    /// The image's repo digest, if any.
    pub image_ref: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Its cgroup, as config.json's `linux.cgroupsPath`.
    #[serde(default)]
    pub cgroups_path: String,
    /// The CRI log file ("" for none).
    pub log_path: String,
    /// When it was created (ns).
    pub created_at: i64,
    /// When it was started (ns), 0 before.
    pub started_at: i64,
    /// Its init process.
    pub pid: i32,
    /// The signal that asks it to stop.
    pub stop_signal: String,
    /// The pod's infra process (shared PID namespace), not listed.
    #[serde(default)]
    pub infra: bool,
    /// The cgroup parent ctrmon was put under (a directory; under systemd, the slice
    /// its scope is in), to clean up after a killed one.
    #[serde(default)]
    pub monitor_cgroup_parent: Option<String>,
    /// The identity its first process started with (absent in files of crid 0.1).
    #[serde(default)]
    pub user: Option<UserRecord>,
    /// Its pod's runtime handler ("" for the default).
    #[serde(default)]
    pub runtime_handler: String,
    /// It was made with a stdin pipe attach clients write to.
    #[serde(default)]
    pub stdin: bool,
    /// It was made with a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Its stdin closes when the first attach session ends.
    #[serde(default)]
    pub stdin_once: bool,
    /// CRIU's images of the checkpoint StartContainer restores this container from
    /// (made from a checkpoint archive, not yet started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<PathBuf>,
}

/// A process's user and groups, as config.json gives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups.
    #[serde(default)]
    pub groups: Vec<u32>,
}

impl ContainerRecord {
    /// The CRI's metadata.
    pub fn metadata(&self) -> cri::ContainerMetadata {
        cri::ContainerMetadata {
            name: self.name.clone(),
            attempt: self.attempt,
        }
    }
}

/// Loads a state file of either kind, migrating what an earlier version wrote.
pub fn load<T: Versioned>(path: &Path) -> Result<T, StateError> {
    let data = std::fs::read(path).map_err(StateError::Read)?;
    let v: serde_json::Value =
        serde_json::from_slice(&data).map_err(|source| StateError::Parse { version: 0, source })?;
    let version = v.get("version").and_then(|n| n.as_u64()).unwrap_or(0);
    match version {
        0 => T::from_v0(v).map_err(|source| StateError::Parse { version, source }),
        n if n == u64::from(VERSION) => {
            serde_json::from_value(v).map_err(|source| StateError::Parse { version, source })
        }
        found => Err(StateError::Newer { found }),
    }
}

/// A state file's type: its current form, and how version 0 becomes it.
pub trait Versioned: serde::de::DeserializeOwned {
    /// Reads a version-0 file.
    fn from_v0(v: serde_json::Value) -> serde_json::Result<Self>;
}

/// Version 0 of `pod.json`: the CRI's pod config as crid 0.1 serialised it.
#[derive(Deserialize)]
struct PodV0 {
    id: String,
    config: cri::PodSandboxConfig,
    runtime_handler: String,
    ready: bool,
    created_at: i64,
    ns: BTreeMap<String, PathBuf>,
    dir: PathBuf,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    network: Option<serde_json::Value>,
    #[serde(default)]
    infra: Option<String>,
}

impl Versioned for PodRecord {
    fn from_v0(v: serde_json::Value) -> serde_json::Result<Self> {
        let old: PodV0 = serde_json::from_value(v)?;
        let mut p = PodRecord::new(old.id, &old.config, old.runtime_handler, old.dir);
        p.ready = old.ready;
        p.created_at = old.created_at;
        p.ns = old.ns;
        p.ips = old.ips;
        p.network = old.network.map(Attachment::from_v0);
        p.infra = old.infra;
        Ok(p)
    }
}

/// Version 0 of `container.json`.
#[derive(Deserialize)]
struct ContainerV0 {
    id: String,
    pod_id: String,
    config: cri::ContainerConfig,
    image_id: String,
    image_name: String,
    image_ref: String,
    bundle: PathBuf,
    log_path: String,
    created_at: i64,
    started_at: i64,
    pid: i32,
    stop_signal: String,
    #[serde(default)]
    infra: bool,
    #[serde(default)]
    monitor_cgroup_parent: Option<String>,
}

impl Versioned for ContainerRecord {
    fn from_v0(v: serde_json::Value) -> serde_json::Result<Self> {
        let old: ContainerV0 = serde_json::from_value(v)?;
        // Version 0 kept no cgroups path: it is config.json's.
        let cgroups_path = crikit::oci_spec::runtime::Spec::load(old.bundle.join("config.json"))
            .ok()
            .and_then(|s| s.linux().as_ref()?.cgroups_path().clone())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let meta = old.config.metadata.clone().unwrap_or_default();
        Ok(ContainerRecord {
            version: VERSION,
            id: old.id,
            pod_id: old.pod_id,
            name: meta.name,
            attempt: meta.attempt,
            labels: old.config.labels.clone(),
            annotations: old.config.annotations.clone(),
            mounts: mounts_of(&old.config),
            resources: old
                .config
                .linux
                .as_ref()
                .and_then(|l| l.resources.as_ref())
                .map(Resources::from_cri),
            image_id: old.image_id,
            image_name: old.image_name,
            image_ref: old.image_ref,
            bundle: old.bundle,
            cgroups_path,
            log_path: old.log_path,
            created_at: old.created_at,
            started_at: old.started_at,
            pid: old.pid,
            stop_signal: old.stop_signal,
            infra: old.infra,
            monitor_cgroup_parent: old.monitor_cgroup_parent,
            user: None,
            runtime_handler: String::new(),
            stdin: old.config.stdin,
            tty: old.config.tty,
            stdin_once: old.config.stdin_once,
            restore_from: None,
        })
    }
}

/// A container config's mounts, as kept.
pub fn mounts_of(config: &cri::ContainerConfig) -> Vec<MountRecord> {
    config
        .mounts
        .iter()
        .map(|m| MountRecord {
            container_path: m.container_path.clone(),
            host_path: m.host_path.clone(),
            readonly: m.readonly,
            propagation: m.propagation,
            recursive_read_only: m.recursive_read_only,
            image: m
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
        })
        .collect()
}

impl PodRecord {
    /// A new pod's record from its request (not ready, nothing made yet).
    pub fn new(
        id: String,
        config: &cri::PodSandboxConfig,
        runtime_handler: String,
        dir: PathBuf,
    ) -> PodRecord {
        let m = config.metadata.clone().unwrap_or_default();
        let linux = config.linux.clone().unwrap_or_default();
        let ns = linux
            .security_context
            .as_ref()
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        PodRecord {
            version: VERSION,
            id,
            metadata: PodMetadata {
                name: m.name,
                namespace: m.namespace,
                uid: m.uid,
                attempt: m.attempt,
            },
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            runtime_handler,
            namespaces: PodNamespaces {
                network: NsMode::from_cri(ns.network),
                pid: NsMode::from_cri(ns.pid),
                ipc: NsMode::from_cri(ns.ipc),
            },
            userns: None,
            cgroup_parent: Some(linux.cgroup_parent).filter(|c| !c.is_empty()),
            sysctls: linux.sysctls.into_iter().collect(),
            log_directory: config.log_directory.clone(),
            port_mappings: config
                .port_mappings
                .iter()
                .map(|p| PortMapping {
                    protocol: match cri::Protocol::try_from(p.protocol) {
                        Ok(cri::Protocol::Udp) => "udp",
                        Ok(cri::Protocol::Sctp) => "sctp",
                        _ => "tcp",
                    }
                    .into(),
                    container_port: p.container_port,
                    host_port: p.host_port,
                    host_ip: p.host_ip.clone(),
                })
                .collect(),
            ready: false,
            created_at: 0,
            ns: BTreeMap::new(),
            dir,
            ips: vec![],
            network: None,
            infra: None,
            infra_pid: None,
        }
    }

    /// The CRI's metadata.
    pub fn cri_metadata(&self) -> cri::PodSandboxMetadata {
        cri::PodSandboxMetadata {
            name: self.metadata.name.clone(),
            namespace: self.metadata.namespace.clone(),
            uid: self.metadata.uid.clone(),
            attempt: self.metadata.attempt,
        }
    }
}

/// A fresh 64-hex-digit id, as containerd and CRI-O make them.
pub fn new_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Nanoseconds since the epoch, as the CRI's timestamps.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A state file fixture (`v0/pod.json`).
    pub(crate) fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/state")
            .join(name)
    }

    #[test]
    fn this_releases_files_load() {
        let p: PodRecord = load(&fixture("v1/pod.json")).unwrap();
        assert_eq!(p.version, 1);
        assert_eq!(p.metadata.name, "web");
        assert_eq!(p.namespaces.pid, NsMode::Container);
        assert_eq!(p.port_mappings[0].host_port, 8080);
        assert!(p.network.is_some());
        let c: ContainerRecord = load(&fixture("v1/container.json")).unwrap();
        assert_eq!((c.name.as_str(), c.attempt), ("app", 1));
        assert_eq!(
            c.resources.as_ref().unwrap().memory_limit_in_bytes,
            67_108_864
        );
        assert_eq!(c.mounts[0].container_path, "/data");
        // What is loaded is what is written again.
        let again: PodRecord = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn the_unversioned_files_of_crid_0_1_migrate() {
        let p: PodRecord = load(&fixture("v0/pod.json")).unwrap();
        assert_eq!(p.version, VERSION);
        assert_eq!(p.metadata.namespace, "default");
        assert_eq!(p.namespaces.network, NsMode::Pod);
        assert_eq!(p.namespaces.pid, NsMode::Container);
        assert_eq!(p.labels["app"], "web");
        let net = p.network.as_ref().unwrap();
        assert_eq!(
            (net.name.as_str(), net.cni_version.as_str()),
            ("crikit", "1.0.0")
        );
        let c: ContainerRecord = load(&fixture("v0/container.json")).unwrap();
        assert_eq!(c.name, "app");
        assert_eq!(c.resources.as_ref().unwrap().cpu_shares, 512);
        assert!(c.mounts[0].host_path.ends_with("/data"), "{:?}", c.mounts);
    }

    #[test]
    fn a_newer_version_is_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pod.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture("v1/pod.json")).unwrap()).unwrap();
        v["version"] = 2.into();
        std::fs::write(&p, v.to_string()).unwrap();
        let e = load::<PodRecord>(&p).unwrap_err().to_string();
        assert!(
            e.contains("schema version 2 is newer than this crid's (1)"),
            "{e}"
        );
        std::fs::write(&p, "{\"version\": 1, \"id\": 3}").unwrap();
        let e = load::<PodRecord>(&p).unwrap_err().to_string();
        assert!(e.contains("not a crid state file of version 1"), "{e}");
    }
}
