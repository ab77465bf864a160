//! What crid runs with, once the command line, the configuration file and the
//! defaults are resolved (by the binary).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// An OCI runtime a pod may ask for by its RuntimeClass's handler name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Handler {
    /// The runtime binary.
    pub path: PathBuf,
    /// Its state directory (`--root`).
    pub root: PathBuf,
    /// It honours recursive read-only mounts.
    pub recursive_read_only_mounts: bool,
    /// It runs pods in user namespaces.
    pub user_namespaces: bool,
    /// Global options given to it before every subcommand.
    pub args: Vec<String>,
}

impl Handler {
    /// The runtime, to run; crid runs it from a sealed copy of its binary
    /// ([`crikit::runtime::sealed`]).
    pub fn runtime(&self) -> crikit::runtime::runc::Runtime {
        crikit::runtime::runc::Runtime::new(&self.path, Some(self.root.clone()))
            .with_args(self.args.clone())
            .sealed()
    }
}

/// Who makes the cgroups of containers: the runtime itself, as paths
/// (`cgroupfs`), or systemd, as units the runtime asks it for (`systemd`, the
/// runtime run with `--systemd-cgroup`). kubelet's cgroup driver must be the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupManager {
    /// systemd's units: slices and scopes.
    Systemd,
    /// Directories under the hierarchy's root.
    Cgroupfs,
}

impl std::fmt::Display for CgroupManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupManager::Systemd => "systemd",
            CgroupManager::Cgroupfs => "cgroupfs",
        })
    }
}

/// The largest CRI message either way, as kubelet's own limit.
pub const MAX_MESSAGE: usize = 16 << 20;

/// crid's settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    /// The socket path.
    pub listen: PathBuf,
    /// The state directory.
    pub root: PathBuf,
    /// The runtime state directory.
    pub run_dir: PathBuf,
    /// Who makes the containers' cgroups.
    pub cgroup_manager: CgroupManager,
    /// The runtime handlers by name; `default_runtime` is one of them.
    pub runtimes: BTreeMap<String, Handler>,
    /// The handler of pods that name none.
    pub default_runtime: String,
    /// CNI configurations.
    pub cni_conf_dir: PathBuf,
    /// CNI plugin directories.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// registries.conf, if any.
    pub registries_conf: Option<PathBuf>,
    /// The pause image of infra containers; `None`: crid's own infra process.
    pub pause_image: Option<String>,
    /// No-progress limit for pulls; `None` never cancels.
    #[serde(with = "secs")]
    pub pull_progress_timeout: Option<Duration>,
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Patterns of the images reported pinned (besides the pause image).
    pub pinned_images: Vec<String>,
    /// Mirrors that may be sent a PullImage request's credentials.
    pub mirrors_with_credentials: Vec<String>,
    /// The peer list file, if any.
    pub peers: Option<PathBuf>,
    /// This node's imgserve: ranked with the peers, asked where it ranks first.
    pub self_address: Option<String>,
    /// The signature policy file, if any.
    pub signature_policy: Option<PathBuf>,
    /// Per-namespace policies, `DIR/NAMESPACE.json`.
    pub signature_policy_dir: Option<PathBuf>,
    /// containers-registries.d(5) directory; None: the default ones.
    pub registries_d: Option<PathBuf>,
    /// The ctrmon binary.
    pub ctrmon: PathBuf,
    /// Where the streaming server (Exec, Attach, PortForward) listens.
    pub stream_address: std::net::IpAddr,
    /// Its port; 0 for any free one.
    pub stream_port: u16,
    /// Streaming sessions served at once; more get 503.
    pub stream_max_sessions: usize,
    /// A streaming session with no frame either way for this long ends.
    #[serde(with = "secs_required")]
    pub stream_idle_timeout: Duration,
    /// TLS for the streaming server; None serves plain HTTP.
    pub stream_tls: Option<StreamTls>,
    /// The JSON-lines event feed, if any.
    pub events_file: Option<PathBuf>,
    /// Its size before it rotates.
    pub events_file_max: u64,
    /// How many events a GetContainerEvents subscriber may fall behind.
    pub events_backlog: usize,
    /// Where to serve crid's own metrics, if anywhere.
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// The streaming server's certificate, key and, to require client certificates,
/// the CA they must chain to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamTls {
    /// PEM certificate chain, the server's first.
    pub cert: PathBuf,
    /// Its PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
}

impl Settings {
    /// The handler `name` names: the default for "", none for one not configured.
    pub fn handler(&self, name: &str) -> Option<&Handler> {
        let name = if name.is_empty() {
            self.default_runtime.as_str()
        } else {
            name
        };
        self.runtimes.get(name)
    }
}

/// `prog` as a path when it has a directory in it, else the first on PATH.
pub fn which(prog: &std::path::Path) -> Option<PathBuf> {
    if prog.components().count() > 1 {
        return prog.is_file().then(|| prog.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.map_or(0, |d| d.as_secs()))
    }
}

mod secs_required {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}
