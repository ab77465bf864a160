//! Command line and configuration file of crid.

use anyhow::{Context, Result};
use crid::config::{CgroupManager, Handler, Settings, StreamTls};
use crikit_cli::LogArgs;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Man page sections written by hand, spliced after the generated ones.
pub const MAN_EXTRA: &str = include_str!("../../../man/crid.extra.roff");

/// The configuration file read when --config is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/crikit/crid.toml";

/// Serve the Kubernetes Container Runtime Interface for kubelet and crictl
///
/// crid serves the CRI's RuntimeService and ImageService (runtime.v1, gRPC) on a unix
/// socket, in the foreground, logging to stderr. Images go to the same store imgpull
/// fills, through the same registries.conf and auth files. Every flag may also be
/// set in the configuration file (see crid.toml(5)); a flag wins over the file.
/// SIGTERM or SIGINT stops it cleanly; containers keep running. SIGHUP re-reads
/// registries.conf and the credential files.
#[derive(Debug, clap::Parser)]
#[command(name = "crid", version, max_term_width = 100)]
pub struct Args {
    /// TOML configuration file, keys named like these flags [default: /etc/crikit/crid.toml
    /// when it exists]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to serve: unix:///PATH [default: unix://RUN/crid.sock]
    #[arg(long, value_name = "ADDRESS")]
    pub listen: Option<String>,
    /// State directory: the image store, layers, containers [default: /var/lib/crikit as
    /// root]
    #[arg(long, value_name = "DIR", env = "CRIKIT_ROOT")]
    pub root: Option<PathBuf>,
    /// Runtime state directory [default: /run/crikit as root]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// The OCI runtime of the default handler, runc (other handlers are configured in
    /// the file's [runtimes.NAME] tables) [default: runc]
    #[arg(long, value_name = "PATH")]
    pub runtime: Option<PathBuf>,
    /// The handler of pods whose RunPodSandbox names none: runc, crun (when installed) or
    /// one of the file's [runtimes.NAME] [default: crun when installed and --runtime is
    /// not given, else runc]
    #[arg(long, value_name = "NAME")]
    pub default_runtime: Option<String>,
    /// Who makes containers' cgroups: systemd (the runtime runs with
    /// --systemd-cgroup, monitors get scopes of their own over D-Bus; kubelet's
    /// cgroupDriver must be systemd) or cgroupfs [default: systemd when it is the init
    /// system, else cgroupfs]
    #[arg(long, value_name = "MANAGER")]
    pub cgroup_manager: Option<ManagerArg>,
    /// CNI network configurations; the first .conflist (or .conf) by name is used
    /// [default: /etc/cni/net.d]
    #[arg(long, value_name = "DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// CNI plugin directories, colon-separated [default: /opt/cni/bin:/usr/lib/cni]
    #[arg(long, value_name = "DIR")]
    pub cni_bin_dir: Option<String>,
    /// containers-registries.conf(5) file [default: $CONTAINERS_REGISTRIES_CONF or
    /// /etc/containers/registries.conf]
    #[arg(long, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// Run the infra process of pods that share a PID namespace as a container of
    /// this image (registry.k8s.io/pause:3.10, say) instead of crid's own (ctrmon
    /// --infra: no image, bundle or runtime)
    #[arg(long, value_name = "REF")]
    pub pause_image: Option<String>,
    /// Cancel an image pull that has made no progress for this many seconds; 0 never
    /// does [default: 300]
    #[arg(long, value_name = "SECONDS")]
    pub pull_progress_timeout: Option<u64>,
    /// Plain HTTP for this registry (repeatable), as registries.conf's insecure = true
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// Images reported pinned, which kubelet's image garbage collection never
    /// removes: exact names, `PREFIX*` or `*KEYWORD*` (repeatable, or
    /// comma-separated); the pause image is always pinned
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    pub pinned_images: Vec<String>,
    /// A mirror (registries.conf) that may be sent the credentials a PullImage
    /// request carries for the registry it mirrors (repeatable); other mirrors get
    /// only those stored for their own host
    #[arg(long, value_name = "HOST[:PORT]")]
    pub mirror_with_credentials: Vec<String>,
    /// Ask other nodes' imgserve for blobs before the registry, once the registry
    /// gave the manifest with the pull's credentials: a file of ADDR:PORT lines, or
    /// dns:NAME:PORT; read at each pull, ranked per blob by rendezvous hashing
    #[arg(long, value_name = "FILE|dns:NAME:PORT")]
    pub peers: Option<PathBuf>,
    /// This node's own imgserve: ranked with the peers, asked where it ranks first
    #[arg(long = "self", value_name = "ADDR:PORT")]
    pub self_address: Option<String>,
    /// containers-policy.json(5) file pulls are checked against [default:
    /// /etc/containers/policy.json when it exists; none lets anything in]
    #[arg(long, value_name = "FILE")]
    pub signature_policy: Option<PathBuf>,
    /// Directory of per-namespace policies: a pull for a pod of NAMESPACE is
    /// checked against DIR/NAMESPACE.json when it exists, else --signature-policy
    #[arg(long, value_name = "DIR")]
    pub signature_policy_dir: Option<PathBuf>,
    /// containers-registries.d(5) directory: where signatures are looked for
    /// [default: /etc/containers/registries.d]
    #[arg(long = "registries-d", value_name = "DIR")]
    pub registries_d: Option<PathBuf>,
    /// The ctrmon binary [default: the one beside crid, else ctrmon on PATH]
    #[arg(long, value_name = "PATH")]
    pub ctrmon: Option<PathBuf>,
    /// Address of the streaming server that Exec, Attach and PortForward URLs point at
    /// [default: 127.0.0.1]
    #[arg(long, value_name = "IP")]
    pub stream_address: Option<std::net::IpAddr>,
    /// Its port; 0 picks a free one [default: 0]
    #[arg(long, value_name = "PORT")]
    pub stream_port: Option<u16>,
    /// Streaming sessions served at once; more are refused with 503 [default: 64]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub stream_max_sessions: Option<u32>,
    /// End a streaming session after this many seconds without traffic either way
    /// [default: 14400, as kubelet's]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub stream_idle_timeout: Option<u64>,
    /// Serve the streaming server over TLS with this PEM certificate (chain); URLs
    /// become https. Read again when it changes
    #[arg(long, value_name = "FILE", requires = "stream_tls_key")]
    pub stream_tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key
    #[arg(long, value_name = "FILE", requires = "stream_tls_cert")]
    pub stream_tls_key: Option<PathBuf>,
    /// Require client certificates that chain to these PEM CA certificates
    /// (needs --stream-tls-cert)
    #[arg(long, value_name = "FILE")]
    pub stream_tls_ca: Option<PathBuf>,
    /// Append every container event to FILE as a JSON line (see EVENTS)
    #[arg(long, value_name = "FILE")]
    pub events_file: Option<PathBuf>,
    /// Rotate the events file to FILE.1 when a line would take it past BYTES
    /// [default: 10485760]
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub events_file_max: Option<u64>,
    /// Drop a GetContainerEvents subscriber that falls N events behind and reads
    /// none for a second (see EVENTS)
    /// [default: 1024]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub events_backlog: Option<u32>,
    /// Serve crid's own metrics (Prometheus text) at http://ADDR:PORT/metrics; off
    /// unless given (see METRICS)
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_address: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// --cgroup-manager's values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ManagerArg {
    /// systemd's slices and scopes
    Systemd,
    /// directories under /sys/fs/cgroup
    Cgroupfs,
}

impl From<ManagerArg> for CgroupManager {
    fn from(m: ManagerArg) -> CgroupManager {
        match m {
            ManagerArg::Systemd => CgroupManager::Systemd,
            ManagerArg::Cgroupfs => CgroupManager::Cgroupfs,
        }
    }
}

/// What to do instead of serving.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the configuration crid would run with (the file, the flags before
    /// `config` and the defaults resolved) as a crid.toml, and exit
    Config,
}

/// The configuration file: the flags' names as keys.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    listen: Option<String>,
    root: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    runtime: Option<PathBuf>,
    default_runtime: Option<String>,
    cgroup_manager: Option<CgroupManager>,
    cni_conf_dir: Option<PathBuf>,
    cni_bin_dir: Option<String>,
    registries_conf: Option<PathBuf>,
    pause_image: Option<String>,
    pull_progress_timeout: Option<u64>,
    #[serde(default)]
    insecure_registry: Vec<String>,
    #[serde(default)]
    pinned_images: Vec<String>,
    #[serde(default)]
    mirrors_with_credentials: Vec<String>,
    peers: Option<PathBuf>,
    self_address: Option<String>,
    signature_policy: Option<PathBuf>,
    signature_policy_dir: Option<PathBuf>,
    registries_d: Option<PathBuf>,
    ctrmon: Option<PathBuf>,
    stream_address: Option<std::net::IpAddr>,
    stream_port: Option<u16>,
    stream_max_sessions: Option<u32>,
    stream_idle_timeout: Option<u64>,
    stream_tls_cert: Option<PathBuf>,
    stream_tls_key: Option<PathBuf>,
    stream_tls_ca: Option<PathBuf>,
    events_file: Option<PathBuf>,
    events_file_max: Option<u64>,
    events_backlog: Option<u32>,
    metrics_address: Option<std::net::SocketAddr>,
    // Last: TOML's tables follow its plain keys.
    #[serde(default)]
    runtimes: BTreeMap<String, FileHandler>,
}

/// A `[runtimes.NAME]` table.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileHandler {
    path: Option<PathBuf>,
    root: Option<PathBuf>,
    recursive_read_only_mounts: Option<bool>,
    user_namespaces: Option<bool>,
    #[serde(default)]
    args: Vec<String>,
}

/// The runtime handlers: `runc` (its path from --runtime or `runtime`, its state in
/// RUN/runc), `crun` when it is installed, then the file's tables, each over what
/// came before it.
fn handlers(
    args: &Args,
    file: &FileConfig,
    run_dir: &Path,
    manager: CgroupManager,
) -> Result<(BTreeMap<String, Handler>, String)> {
    let mut out = BTreeMap::new();
    out.insert(
        "runc".to_string(),
        Handler {
            path: pick(&args.runtime, &file.runtime).unwrap_or_else(|| "runc".into()),
            root: run_dir.join("runc"),
            // crid makes them itself, whatever the runtime (see container.rs).
            recursive_read_only_mounts: true,
            // crid makes the user namespace and the ID-mapped rootfs; the runtime
            // joins it by path, as runc 1.1 and crun 1.8 can.
            user_namespaces: true,
            args: Vec::new(),
        },
    );
    if let Some(crun) = crid::config::which(Path::new("crun")) {
        out.insert(
            "crun".to_string(),
            Handler {
                path: crun,
                root: run_dir.join("runtimes").join("crun"),
                recursive_read_only_mounts: true,
                user_namespaces: true,
                args: Vec::new(),
            },
        );
    }
    for (name, h) in &file.runtimes {
        if name.is_empty() || name.contains('/') {
            anyhow::bail!("config: runtime handler {name:?}: not a name");
        }
        let known = out.get(name).cloned();
        let path = h
            .path
            .clone()
            .or_else(|| known.as_ref().map(|k| k.path.clone()))
            .ok_or_else(|| anyhow::anyhow!("config: [runtimes.{name}] has no path"))?;
        out.insert(
            name.clone(),
            Handler {
                path,
                root: h
                    .root
                    .clone()
                    .or_else(|| known.as_ref().map(|k| k.root.clone()))
                    .unwrap_or_else(|| run_dir.join("runtimes").join(name)),
                recursive_read_only_mounts: h.recursive_read_only_mounts.unwrap_or(true),
                user_namespaces: h
                    .user_namespaces
                    .or_else(|| known.as_ref().map(|k| k.user_namespaces))
                    .unwrap_or(false),
                args: if h.args.is_empty() {
                    known.map(|k| k.args).unwrap_or_default()
                } else {
                    h.args.clone()
                },
            },
        );
    }
    // crun when it is there, as CRI-O does: its create takes about half of runc's.
    // Whoever names the runc handler's binary means it.
    let default = pick(&args.default_runtime, &file.default_runtime).unwrap_or_else(|| {
        let runc_named = args.runtime.is_some() || file.runtime.is_some();
        if out.contains_key("crun") && !runc_named {
            "crun".into()
        } else {
            "runc".into()
        }
    });
    if !out.contains_key(&default) {
        anyhow::bail!("config: default-runtime {default:?} is not a configured runtime handler");
    }
    // Every call of every handler goes through the same cgroup manager.
    for (name, h) in &mut out {
        let asks = h.args.iter().any(|a| a == SYSTEMD_CGROUP);
        match manager {
            CgroupManager::Systemd if !asks => h.args.insert(0, SYSTEMD_CGROUP.into()),
            CgroupManager::Cgroupfs if asks => anyhow::bail!(
                "config: runtime handler {name:?}: {SYSTEMD_CGROUP} in its args needs \
                 cgroup-manager systemd"
            ),
            _ => {}
        }
    }
    Ok((out, default))
}

/// `settings` as a crid.toml that gives them back: `crid config`.
pub fn to_toml(s: &Settings) -> Result<String> {
    let file = FileConfig {
        listen: Some(format!("unix://{}", s.listen.display())),
        root: Some(s.root.clone()),
        run_dir: Some(s.run_dir.clone()),
        runtime: s.runtimes.get("runc").map(|h| h.path.clone()),
        default_runtime: Some(s.default_runtime.clone()),
        cgroup_manager: Some(s.cgroup_manager),
        cni_conf_dir: Some(s.cni_conf_dir.clone()),
        cni_bin_dir: Some(
            std::env::join_paths(&s.cni_bin_dirs)
                .context("cni-bin-dir")?
                .to_string_lossy()
                .into_owned(),
        ),
        registries_conf: s.registries_conf.clone(),
        pause_image: s.pause_image.clone(),
        pull_progress_timeout: Some(s.pull_progress_timeout.map_or(0, |d| d.as_secs())),
        insecure_registry: s.insecure_registries.clone(),
        pinned_images: s.pinned_images.clone(),
        mirrors_with_credentials: s.mirrors_with_credentials.clone(),
        peers: s.peers.clone(),
        self_address: s.self_address.clone(),
        signature_policy: s.signature_policy.clone(),
        signature_policy_dir: s.signature_policy_dir.clone(),
        registries_d: s.registries_d.clone(),
        ctrmon: Some(s.ctrmon.clone()),
        stream_address: Some(s.stream_address),
        stream_port: Some(s.stream_port),
        stream_max_sessions: Some(s.stream_max_sessions as u32),
        stream_idle_timeout: Some(s.stream_idle_timeout.as_secs()),
        stream_tls_cert: s.stream_tls.as_ref().map(|t| t.cert.clone()),
        stream_tls_key: s.stream_tls.as_ref().map(|t| t.key.clone()),
        stream_tls_ca: s.stream_tls.as_ref().and_then(|t| t.client_ca.clone()),
        events_file: s.events_file.clone(),
        events_file_max: Some(s.events_file_max),
        events_backlog: Some(s.events_backlog as u32),
        metrics_address: s.metrics_address,
        runtimes: s
            .runtimes
            .iter()
            .map(|(name, h)| {
                let table = FileHandler {
                    path: Some(h.path.clone()),
                    root: Some(h.root.clone()),
                    recursive_read_only_mounts: Some(h.recursive_read_only_mounts),
                    user_namespaces: Some(h.user_namespaces),
                    // What crid adds for the cgroup manager is not the handler's own.
                    args: h
                        .args
                        .iter()
                        .filter(|a| *a != SYSTEMD_CGROUP)
                        .cloned()
                        .collect(),
                };
                (name.clone(), table)
            })
            .collect(),
    };
    toml::to_string(&file).context("writing the configuration as TOML")
}

/// The runtime's global option for systemd's cgroups (runc and crun).
const SYSTEMD_CGROUP: &str = "--systemd-cgroup";

/// Resolves `args` against the configuration file and the defaults: flags over
/// the file over the defaults.
pub fn resolve(args: &Args) -> Result<Settings> {
    let file = match &args.config {
        Some(p) => read_config(p)?,
        None if Path::new(DEFAULT_CONFIG).exists() => read_config(Path::new(DEFAULT_CONFIG))?,
        None => FileConfig::default(),
    };
    let run_dir = pick(&args.run_dir, &file.run_dir).unwrap_or_else(crikit::paths::default_run_dir);
    let listen = match pick(&args.listen, &file.listen) {
        Some(a) => socket_path(&a)?,
        None => run_dir.join("crid.sock"),
    };
    let cni_bin = pick(&args.cni_bin_dir, &file.cni_bin_dir)
        .unwrap_or_else(|| "/opt/cni/bin:/usr/lib/cni".into());
    let timeout = pick(&args.pull_progress_timeout, &file.pull_progress_timeout).unwrap_or(300);
    let mut insecure = file.insecure_registry.clone();
    insecure.extend(args.insecure_registry.iter().cloned());
    let mut pinned = file.pinned_images.clone();
    pinned.extend(args.pinned_images.iter().cloned());
    for p in &pinned {
        crid::image::Pins::check(p)
            .map_err(|why| anyhow::anyhow!("pinned-images: {p:?}: {why}"))?;
    }
    let mut mirrors_with_credentials = file.mirrors_with_credentials.clone();
    mirrors_with_credentials.extend(args.mirror_with_credentials.iter().cloned());
    let peers = pick(&args.peers, &file.peers);
    let self_address = pick(&args.self_address, &file.self_address);
    crikit::distribution::registry::peers::Peers::new(peers.clone(), self_address.clone())?;
    // The policy is read again at each pull; a bad one stops crid here first.
    let signature_policy = pick(&args.signature_policy, &file.signature_policy)
        .or_else(crikit::distribution::policy::default_path);
    if let Some(p) = &signature_policy {
        crikit::distribution::policy::Policy::load(p)?;
    }
    let signature_policy_dir = pick(&args.signature_policy_dir, &file.signature_policy_dir);
    let registries_d = pick(&args.registries_d, &file.registries_d);
    let ctrmon = pick(&args.ctrmon, &file.ctrmon).unwrap_or_else(default_ctrmon);
    let cgroup_manager = args
        .cgroup_manager
        .map(CgroupManager::from)
        .or(file.cgroup_manager)
        .unwrap_or_else(crid::host::cgroups::default_manager);
    let (runtimes, default_runtime) = handlers(args, &file, &run_dir, cgroup_manager)?;
    Ok(Settings {
        cgroup_manager,
        listen,
        root: pick(&args.root, &file.root).unwrap_or_else(crikit::paths::default_root),
        run_dir,
        runtimes,
        default_runtime,
        cni_conf_dir: pick(&args.cni_conf_dir, &file.cni_conf_dir)
            .unwrap_or_else(|| "/etc/cni/net.d".into()),
        cni_bin_dirs: std::env::split_paths(&cni_bin).collect(),
        registries_conf: pick(&args.registries_conf, &file.registries_conf),
        pause_image: pick(&args.pause_image, &file.pause_image).filter(|i| !i.is_empty()),
        pull_progress_timeout: (timeout > 0).then(|| Duration::from_secs(timeout)),
        insecure_registries: insecure,
        pinned_images: pinned,
        mirrors_with_credentials,
        peers,
        self_address,
        signature_policy,
        signature_policy_dir,
        registries_d,
        ctrmon,
        stream_address: pick(&args.stream_address, &file.stream_address)
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        stream_port: pick(&args.stream_port, &file.stream_port).unwrap_or(0),
        stream_max_sessions: pick(&args.stream_max_sessions, &file.stream_max_sessions)
            .unwrap_or(64)
            .max(1) as usize,
        stream_idle_timeout: Duration::from_secs(
            pick(&args.stream_idle_timeout, &file.stream_idle_timeout)
                .unwrap_or(4 * 3600)
                .max(1),
        ),
        stream_tls: stream_tls(args, &file)?,
        events_file: pick(&args.events_file, &file.events_file),
        events_file_max: pick(&args.events_file_max, &file.events_file_max)
            .unwrap_or(10 << 20)
            .max(1),
        events_backlog: pick(&args.events_backlog, &file.events_backlog)
            .unwrap_or(1024)
            .clamp(1, 1 << 20) as usize,
        metrics_address: pick(&args.metrics_address, &file.metrics_address),
    })
}

/// The streaming server's TLS files: a certificate and a key together, a client CA
/// only with them.
fn stream_tls(args: &Args, file: &FileConfig) -> Result<Option<StreamTls>> {
    let cert = pick(&args.stream_tls_cert, &file.stream_tls_cert);
    let key = pick(&args.stream_tls_key, &file.stream_tls_key);
    let client_ca = pick(&args.stream_tls_ca, &file.stream_tls_ca);
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(StreamTls {
            cert,
            key,
            client_ca,
        })),
        (None, None) if client_ca.is_none() => Ok(None),
        (None, None) => anyhow::bail!("stream-tls-ca needs stream-tls-cert and stream-tls-key"),
        _ => anyhow::bail!("stream-tls-cert and stream-tls-key go together"),
    }
}

fn pick<T: Clone>(flag: &Option<T>, file: &Option<T>) -> Option<T> {
    flag.clone().or_else(|| file.clone())
}

fn read_config(path: &Path) -> Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "config {}: {}",
            path.display(),
            e.to_string().lines().collect::<Vec<_>>().join(" ")
        )
    })
}

/// The path in a `unix://` address (a bare absolute path is taken as is).
fn socket_path(address: &str) -> Result<PathBuf> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    if !path.starts_with('/') {
        anyhow::bail!("listen address {address:?}: expected unix:///ABSOLUTE/PATH");
    }
    Ok(PathBuf::from(path))
}

/// ctrmon from the same directory as crid (an install or a build tree), else PATH.
fn default_ctrmon() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("ctrmon")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "ctrmon".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = std::env::temp_dir().join(format!("crid-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("crid.toml");
        std::fs::write(
            &cfg,
            "root = \"/srv/crikit\"\nrun-dir = \"/run/x\"\npull-progress-timeout = 0\n\
             insecure-registry = [\"a:5000\"]\ncni-bin-dir = \"/a:/b\"\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "crid",
            "--config",
            cfg.to_str().unwrap(),
            "--root",
            "/flag/root",
            "--insecure-registry",
            "b:5000",
        ]);
        let s = resolve(&args).unwrap();
        assert_eq!(s.root, Path::new("/flag/root"));
        assert_eq!(s.run_dir, Path::new("/run/x"));
        assert_eq!(s.listen, Path::new("/run/x/crid.sock"));
        assert_eq!(s.pull_progress_timeout, None);
        assert_eq!(s.insecure_registries, ["a:5000", "b:5000"]);
        assert_eq!(s.cni_bin_dirs, [Path::new("/a"), Path::new("/b")]);
        assert_eq!(s.cni_conf_dir, Path::new("/etc/cni/net.d"));

        std::fs::write(&cfg, "roots = \"/x\"\n").unwrap();
        let e = resolve(&args).unwrap_err().to_string();
        assert!(e.contains("crid.toml") && e.contains("roots"), "{e}");
        let bad = Args::parse_from(["crid", "--listen", "tcp://0:1", "--config", "/dev/null"]);
        let e = resolve(&bad).unwrap_err().to_string();
        assert!(e.contains("unix://"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runtime_handlers_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("crid.toml");
        let args = Args::parse_from([
            "crid",
            "--config",
            cfg.to_str().unwrap(),
            "--run-dir",
            "/run/t",
            "--runtime",
            "/opt/runc",
        ]);
        std::fs::write(
            &cfg,
            "default-runtime = \"kata\"\n[runtimes.kata]\npath = \"/opt/kata\"\nuser-namespaces = true\nargs = [\"--debug\"]\n\
             [runtimes.runc]\nroot = \"/srv/runc\"\n",
        )
        .unwrap();
        let s = resolve(&args).unwrap();
        assert_eq!(s.default_runtime, "kata");
        let kata = s.handler("").unwrap();
        assert_eq!(kata.path, Path::new("/opt/kata"));
        assert_eq!(kata.root, Path::new("/run/t/runtimes/kata"));
        assert!(kata.user_namespaces && kata.recursive_read_only_mounts);
        assert_eq!(kata.args, ["--debug"]);
        assert_eq!(
            kata.runtime().command().get_args().collect::<Vec<_>>(),
            ["--root", "/run/t/runtimes/kata", "--debug"]
        );
        // A table of a known handler changes what it says, keeps the rest.
        let runc = s.handler("runc").unwrap();
        assert_eq!(
            (runc.path.as_path(), runc.root.as_path()),
            (Path::new("/opt/runc"), Path::new("/srv/runc"))
        );
        assert!(s.handler("nope").is_none());
        // Without a file's or a flag's word: crun when installed, unless --runtime
        // names runc's binary.
        let bare = Args::parse_from(["crid", "--config", "/dev/null", "--run-dir", "/run/t"]);
        let crun = crid::config::which(Path::new("crun")).is_some();
        assert_eq!(
            resolve(&bare).unwrap().default_runtime,
            if crun { "crun" } else { "runc" }
        );
        let named = Args::parse_from(["crid", "--config", "/dev/null", "--runtime", "/opt/runc"]);
        assert_eq!(resolve(&named).unwrap().default_runtime, "runc");
        let mut with_flag = Args::parse_from([
            "crid",
            "--config",
            cfg.to_str().unwrap(),
            "--default-runtime",
            "runc",
        ]);
        assert_eq!(resolve(&with_flag).unwrap().default_runtime, "runc");
        with_flag.default_runtime = Some("gone".into());
        let e = resolve(&with_flag).unwrap_err().to_string();
        assert!(e.contains("\"gone\" is not a configured"), "{e}");
        for (text, want) in [
            ("[runtimes.x]\nroot = \"/r\"\n", "[runtimes.x] has no path"),
            ("default-runtime = \"y\"\n", "default-runtime \"y\""),
            ("[runtimes.z]\npath = \"/z\"\nspeed = 1\n", "speed"),
        ] {
            std::fs::write(&cfg, text).unwrap();
            let e = resolve(&args).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} in {e}");
        }
    }

    #[test]
    fn the_installed_crid_toml_names_only_real_keys() {
        let text = include_str!("../dist/crid.toml");
        // As installed: all commented out.
        let _: FileConfig = toml::from_str(text).expect("crid.toml as installed");
        // Every key it shows, uncommented, with the value it shows.
        let shown: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let file: FileConfig = toml::from_str(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
        assert_eq!(file.cgroup_manager, Some(CgroupManager::Systemd));
        assert!(file.runtimes.contains_key("kata"), "{shown}");
        assert!(file.metrics_address.is_some(), "{shown}");
    }

    #[test]
    fn crid_config_prints_a_file_that_gives_the_same_settings_back() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("in.toml");
        std::fs::write(
            &conf,
            "cgroup-manager = \"cgroupfs\"\ninsecure-registry = [\"reg.local:5000\"]\n\
             pull-progress-timeout = 0\n[runtimes.slow]\npath = \"/opt/slow\"\nargs = [\"--debug\"]\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "crid",
            "--config",
            conf.to_str().unwrap(),
            "--run-dir",
            "/run/t",
            "--events-backlog",
            "7",
            "config",
        ]);
        assert!(matches!(args.command, Some(Command::Config)));
        let first = resolve(&args).unwrap();
        let printed = to_toml(&first).unwrap();
        let out = d.path().join("out.toml");
        std::fs::write(&out, &printed).unwrap();
        let again = resolve(&Args::parse_from([
            "crid",
            "--config",
            out.to_str().unwrap(),
        ]))
        .unwrap_or_else(|e| panic!("{e}\n{printed}"));
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&first).unwrap(),
            "{printed}"
        );
        assert!(printed.contains("events-backlog = 7"), "{printed}");
        assert!(printed.contains("[runtimes.slow]"), "{printed}");
    }
}
