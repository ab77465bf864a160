//! OCI runtime configuration (`config.json`) from an image config, the defaults a
//! container gets from CRI-O or containerd, and caller overrides.
//!
//! The document is assembled as JSON — which is also what `--patch` (an RFC 7396
//! merge patch, applied last) works on — and then parsed into
//! `oci_spec::runtime::Spec`, so whatever is written is a valid runtime spec.
//! Users and groups are resolved against the rootfs' /etc/passwd and /etc/group,
//! read with the same in-root resolution as layers (a symlinked /etc/passwd cannot
//! point outside).

use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Errors from generating a runtime spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The image config is not what an image config should be.
    #[error("image config: {0}")]
    ImageConfig(String),
    /// A user or group that the rootfs does not know.
    #[error("user {user:?}: {reason}")]
    User {
        /// The user spec.
        user: String,
        /// What is wrong.
        reason: String,
    },
    /// A bad override value.
    #[error("{flag}: {reason}")]
    Override {
        /// The option.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The result is not a valid runtime spec (usually after a patch).
    #[error("the generated config.json is not a valid runtime spec: {0}")]
    Invalid(String),
    /// There is nothing to run.
    #[error("no command: the image has no Entrypoint or Cmd and none was given")]
    NoCommand,
}

type Result<T, E = SpecError> = std::result::Result<T, E>;

/// The capabilities containers get by default (containerd's and Docker's set).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability, in number order (bit N of a capability set is entry N);
/// `--privileged` gets those the bounding set holds.
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Network namespace choice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Net {
    /// A new, empty network namespace (loopback only).
    #[default]
    None,
    /// The host's.
    Host,
    /// Join the namespace pinned at this path.
    Path(PathBuf),
}

/// What a caller changes on top of the image config and the defaults.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces Cmd (and, with no entrypoint override, runs after Entrypoint).
    pub cmd: Option<Vec<String>>,
    /// Replaces Entrypoint (an empty string clears it).
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` entries, added or replacing the image's.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// User, in any form the image config takes.
    pub user: Option<String>,
    /// Hostname (default: the bundle's name, cut to 63 characters).
    pub hostname: Option<String>,
    /// Bind mounts: (source, destination, read-only).
    pub mounts: Vec<(String, String, bool)>,
    /// tmpfs mounts at these paths.
    pub tmpfs: Vec<String>,
    /// Read-only rootfs.
    pub read_only: bool,
    /// Allocate a terminal.
    pub tty: bool,
    /// Capabilities to add (`NET_ADMIN` or `CAP_NET_ADMIN`, or `ALL`).
    pub cap_add: Vec<String>,
    /// Capabilities to drop (or `ALL`).
    pub cap_drop: Vec<String>,
    /// All capabilities, no seccomp, no masked paths, host devices.
    pub privileged: bool,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// CPUs (quota/period).
    pub cpus: Option<f64>,
    /// Pids limit.
    pub pids_limit: Option<i64>,
    /// Network namespace.
    pub net: Net,
    /// Extra annotations.
    pub annotations: Vec<(String, String)>,
    /// Run rootless: map the caller's uid/gid to root in a user namespace.
    pub rootless: Option<(u32, u32)>,
    /// cgroups path for runc.
    pub cgroups_path: Option<String>,
    /// Add the groups the image's /etc/group lists the user in even when `user`
    /// names a group, as the CRI's Merge policy does (without it, an explicit
    /// group means that group only, as `docker run --user uid:gid`).
    pub member_groups: bool,
}

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Home directory, for HOME.
    pub home: Option<String>,
}

/// Reads a file of the rootfs, resolved inside it; `None` when absent.
fn read_in_root(rootfs: &Path, path: &str) -> Option<String> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fd = rustix::fs::openat2(
        &root,
        path.trim_start_matches('/'),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut s = String::new();
    use std::io::Read;
    std::fs::File::from(fd)
        .take(4 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// Resolves a user spec (`name`, `uid`, `uid:gid`, `name:group`, …) against the
/// rootfs' /etc/passwd and /etc/group. Numeric ids need no entry; names do.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser> {
    resolve_user_with(rootfs, spec, false)
}

/// [`resolve_user`]; with `member_groups`, the groups that list the user as a
/// member are added even when `spec` names a group.
pub fn resolve_user_with(rootfs: &Path, spec: &str, member_groups: bool) -> Result<ResolvedUser> {
    let err = |reason: String| SpecError::User {
        user: spec.to_string(),
        reason,
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(err("empty user name".into()));
    }
    let passwd = read_in_root(rootfs, "/etc/passwd").unwrap_or_default();
    let groups = read_in_root(rootfs, "/etc/group").unwrap_or_default();
    // name:x:uid:gid:gecos:home:shell
    let pw: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 4)
        .collect();
    let gr: Vec<Vec<&str>> = groups
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 3)
        .collect();
    let entry = match user.parse::<u32>() {
        Ok(uid) => pw.iter().find(|f| f[2].parse::<u32>().ok() == Some(uid)),
        Err(_) => pw.iter().find(|f| f[0] == user),
    };
    let uid = match user.parse::<u32>() {
        Ok(u) => u,
        Err(_) => {
            let e =
                entry.ok_or_else(|| err(format!("no user {user:?} in the image's /etc/passwd")))?;
            e[2].parse()
                .map_err(|_| err(format!("bad uid in /etc/passwd for {user:?}")))?
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => gr
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| err(format!("no group {g:?} in the image's /etc/group")))?,
        },
        None => entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
    };
    // Supplementary groups, as containerd sets them: the primary group, then (unless
    // a group was given explicitly, and not asked to all the same) those naming the
    // user as a member.
    let mut additional = vec![gid];
    if group.is_none() || member_groups {
        if let Some(name) = entry.map(|f| f[0]) {
            for f in &gr {
                let members = f.get(3).copied().unwrap_or_default();
                if members.split(',').any(|m| m == name) {
                    if let Ok(g) = f[2].parse::<u32>() {
                        if g != gid && !additional.contains(&g) {
                            additional.push(g);
                        }
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        home: entry
            .and_then(|f| f.get(5))
            .map(|h| h.to_string())
            .filter(|h| !h.is_empty()),
    })
}

fn normalise_cap(c: &str) -> Result<String> {
    let up = c.trim().to_ascii_uppercase();
    let name = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if name == "CAP_ALL" || ALL_CAPS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(SpecError::Override {
            flag: "--cap-add/--cap-drop",
            reason: format!("unknown capability {c:?}"),
        })
    }
}

/// Merges `KEY=VALUE` entries: later keys replace earlier ones, order is kept.
fn merge_env(base: &[String], extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in base.iter().chain(extra) {
        let key = e.split_once('=').map(|(k, _)| k).unwrap_or(e);
        if let Some(pos) = out
            .iter()
            .position(|o| o.split_once('=').map(|(k, _)| k).unwrap_or(o) == key)
        {
            out[pos] = e.clone();
        } else {
            out.push(e.clone());
        }
    }
    out
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds `config.json` for an image. `image_config` is the image's config blob,
/// `rootfs` the bundle's root (for users), `name` the bundle's name (hostname).
/// The document is checked by parsing it as a typed runtime spec and by
/// [`validate`].
pub fn generate(
    image_config: &[u8],
    rootfs: &Path,
    name: &str,
    o: &Overrides,
    patch: Option<&Value>,
) -> Result<oci_spec::runtime::Spec> {
    let ic: Value =
        serde_json::from_slice(image_config).map_err(|e| SpecError::ImageConfig(e.to_string()))?;
    let cfg = ic.get("config").cloned().unwrap_or(Value::Null);
    let args = command(&cfg, o)?;
    let user_spec = o
        .user
        .clone()
        .or_else(|| cfg.get("User").and_then(|u| u.as_str()).map(String::from))
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "0".into());
    let user = resolve_user_with(rootfs, &user_spec, o.member_groups)?;
    let caps = capabilities(o, bounding_set())?;
    let mut doc = json!({
        "ociVersion": OCI_VERSION,
        "process": process(&cfg, o, name, &user, &user_spec, args, &caps)?,
        "root": {"path": "rootfs", "readonly": o.read_only},
        "hostname": hostname(o, name),
        "mounts": mounts(o, user.uid)?,
        "annotations": annotations(&cfg, o),
        "linux": linux(o, &caps)?,
    });
    if let Some(p) = patch {
        merge_patch(&mut doc, p);
    }
    let spec: oci_spec::runtime::Spec =
        serde_json::from_value(doc).map_err(|e| SpecError::Invalid(e.to_string()))?;
    validate(&spec)?;
    Ok(spec)
}

/// The runtime-spec version generated configs declare: one every runtime here
/// takes (crun 1.8 refuses anything but 1.0.x; runc 1.1's `features` says
/// ociVersionMax 1.0.2-dev), and what they contain needs no later one.
pub const OCI_VERSION: &str = "1.0.2";

/// Checks what every OCI runtime needs of a spec, beyond its types: a process
/// with arguments and an absolute working directory, a root, absolute mount
/// destinations, each namespace type at most once.
pub fn validate(spec: &oci_spec::runtime::Spec) -> Result<()> {
    let bad = |why: String| Err(SpecError::Invalid(why));
    let Some(p) = spec.process() else {
        return bad("no process".into());
    };
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        return bad("process.args is empty".into());
    }
    if !p.cwd().is_absolute() {
        return bad(format!("process.cwd {:?} is not absolute", p.cwd()));
    }
    if spec.root().is_none() {
        return bad("no root".into());
    }
    for m in spec.mounts().iter().flatten() {
        if !m.destination().is_absolute() {
            return bad(format!(
                "mount destination {:?} is not absolute",
                m.destination()
            ));
        }
    }
    let mut seen = Vec::new();
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        if seen.contains(&ns.typ()) {
            return bad(format!("namespace {:?} is listed twice", ns.typ()));
        }
        seen.push(ns.typ());
    }
    Ok(())
}

/// Entrypoint and Cmd, as overridden (docker's rules).
fn command(cfg: &Value, o: &Overrides) -> Result<Vec<String>> {
    let entrypoint = match &o.entrypoint {
        Some(e) if e.len() == 1 && e[0].is_empty() => Vec::new(),
        Some(e) => e.clone(),
        None => strings(cfg.get("Entrypoint")),
    };
    // docker: a new entrypoint resets the image's Cmd.
    let cmd = match (&o.cmd, &o.entrypoint) {
        (Some(c), _) => c.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => strings(cfg.get("Cmd")),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// The image's environment with PATH, TERM, HOSTNAME and HOME filled in, then the
/// overrides.
fn environment(cfg: &Value, o: &Overrides, name: &str, user: &ResolvedUser) -> Vec<String> {
    let mut env = strings(cfg.get("Env"));
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if o.tty {
        env.push("TERM=xterm".into());
    }
    env.push(format!("HOSTNAME={}", hostname(o, name)));
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!(
            "HOME={}",
            user.home.clone().unwrap_or_else(|| "/".into())
        ));
    }
    merge_env(&env, &o.env)
}

/// This process's capability bounding set (`CapBnd` in /proc/self/status), bit N
/// for capability N; `None` when it cannot be read.
pub fn bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Every capability, as far as `bounding` (see [`bounding_set`]) holds it: what a
/// privileged container or `ALL` gets, as containerd and CRI-O give it. A runtime
/// cannot grant what it does not hold itself (runc fails with "unable to apply
/// caps"), and some hosts withhold one (CAP_SYS_RESOURCE, say) even from root.
fn all_caps(bounding: Option<u64>) -> Vec<String> {
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding.is_none_or(|b| b >> bit & 1 == 1))
        .map(|(_, c)| c.to_string())
        .collect()
}

/// The capability set: the default one, or all the runtime holds when privileged;
/// then drops and adds (`ALL` again as far as the bounding set goes).
fn capabilities(o: &Overrides, bounding: Option<u64>) -> Result<Vec<String>> {
    let mut caps: Vec<String> = if o.privileged {
        all_caps(bounding)
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    for c in &o.cap_drop {
        let c = normalise_cap(c)?;
        if c == "CAP_ALL" {
            caps.clear();
        } else {
            caps.retain(|x| *x != c);
        }
    }
    for c in &o.cap_add {
        let c = normalise_cap(c)?;
        let add: Vec<String> = if c == "CAP_ALL" {
            all_caps(bounding)
        } else {
            vec![c]
        };
        for c in add {
            if !caps.contains(&c) {
                caps.push(c);
            }
        }
    }
    Ok(caps)
}

/// The image's labels and stop signal as annotations, then the overrides'.
fn annotations(cfg: &Value, o: &Overrides) -> Map<String, Value> {
    let mut annotations = Map::new();
    if let Some(labels) = cfg.get("Labels").and_then(|l| l.as_object()) {
        for (k, v) in labels {
            if let Some(v) = v.as_str() {
                annotations.insert(k.clone(), Value::String(v.to_string()));
            }
        }
    }
    if let Some(sig) = cfg.get("StopSignal").and_then(|s| s.as_str()) {
        annotations.insert(
            "org.opencontainers.image.stopSignal".into(),
            Value::String(sig.to_string()),
        );
    }
    for (k, v) in &o.annotations {
        annotations.insert(k.clone(), Value::String(v.clone()));
    }
    annotations
}

/// The `process` object.
fn process(
    cfg: &Value,
    o: &Overrides,
    name: &str,
    user: &ResolvedUser,
    user_spec: &str,
    args: Vec<String>,
    caps: &[String],
) -> Result<Value> {
    let cwd = o
        .cwd
        .clone()
        .or_else(|| {
            cfg.get("WorkingDir")
                .and_then(|w| w.as_str())
                .map(String::from)
        })
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(SpecError::Override {
            flag: "--cwd",
            reason: format!("{cwd:?} is not an absolute path"),
        });
    }
    // A non-root process only keeps what is in its bounding set; root gets all sets.
    let eff = if user.uid == 0 {
        caps.to_vec()
    } else {
        Vec::new()
    };
    let (nofile_soft, nofile_hard) = nofile_limit();
    let mut process = json!({
        "terminal": o.tty,
        "user": {"uid": user.uid, "gid": user.gid},
        "args": args,
        "env": environment(cfg, o, name, user),
        "cwd": cwd,
        "capabilities": {
            "bounding": caps,
            "effective": eff,
            "permitted": eff,
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile_hard, "soft": nofile_soft}],
        "noNewPrivileges": !o.privileged,
    });
    if !user.additional_gids.is_empty() {
        process["user"]["additionalGids"] = json!(user.additional_gids);
    }
    if o.rootless.is_some() {
        process["user"]["uid"] = json!(0);
        process["user"]["gid"] = json!(0);
        // setgroups(2) is denied in a user namespace with a single mapping.
        if let Some(u) = process["user"].as_object_mut() {
            u.remove("additionalGids");
        }
        if user.uid != 0 || user.gid != 0 {
            return Err(SpecError::User {
                user: user_spec.to_string(),
                reason: "a rootless bundle maps only root; this image runs as another user (try --user 0)".into(),
            });
        }
    }
    Ok(process)
}

/// The default filesystems, then the overrides' bind and tmpfs mounts.
fn mounts(o: &Overrides, uid: u32) -> Result<Vec<Value>> {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
    ];
    if o.rootless.is_some() {
        // A user namespace cannot mount sysfs for a network namespace it does not
        // own, nor cgroupfs: bind the host's, read-only.
        mounts.push(json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}));
    } else {
        mounts.push(json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}));
        mounts.push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}));
    }
    if o.rootless.is_none() && uid == 0 {
        // gid=5 (tty) only exists when not remapped.
        if let Some(a) = mounts[2]["options"].as_array_mut() {
            a.push("gid=5".into());
        }
    }
    for (src, dst, ro) in &o.mounts {
        if !dst.starts_with('/') {
            return Err(SpecError::Override {
                flag: "--mount",
                reason: format!("destination {dst:?} is not an absolute path"),
            });
        }
        let mut opts = vec!["rbind", "rprivate"];
        if *ro {
            opts.push("ro");
        }
        mounts.push(json!({"destination": dst, "type": "bind", "source": src, "options": opts}));
    }
    for t in &o.tmpfs {
        if !t.starts_with('/') {
            return Err(SpecError::Override {
                flag: "--tmpfs",
                reason: format!("{t:?} is not an absolute path"),
            });
        }
        mounts.push(json!({"destination": t, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
    }
    Ok(mounts)
}

/// The `linux` object: namespaces, masked and read-only paths, seccomp, ID
/// mappings, resources, the cgroups path.
fn linux(o: &Overrides, caps: &[String]) -> Result<Value> {
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match &o.net {
        Net::None => namespaces.push(json!({"type": "network"})),
        Net::Host => {}
        Net::Path(p) => namespaces.push(json!({"type": "network", "path": p})),
    }
    if o.rootless.is_some() {
        namespaces.push(json!({"type": "user"}));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": if o.privileged { Vec::new() } else { MASKED_PATHS.to_vec() },
        "readonlyPaths": if o.privileged { Vec::new() } else { READONLY_PATHS.to_vec() },
    });
    if !o.privileged {
        linux["seccomp"] = crate::rootfs::seccomp::default_profile(caps);
    }
    if let Some((uid, gid)) = o.rootless {
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
    }
    let mut resources = Map::new();
    if let Some(m) = o.memory {
        resources.insert("memory".into(), json!({"limit": m}));
    }
    if let Some(c) = o.cpus {
        if c <= 0.0 {
            return Err(SpecError::Override {
                flag: "--cpus",
                reason: format!("{c} is not a positive number"),
            });
        }
        let period = 100_000u64;
        resources.insert(
            "cpu".into(),
            json!({"quota": (c * period as f64) as i64, "period": period}),
        );
    }
    if let Some(p) = o.pids_limit {
        resources.insert("pids".into(), json!({"limit": p}));
    }
    if !resources.is_empty() {
        linux["resources"] = Value::Object(resources);
    }
    if let Some(cg) = &o.cgroups_path {
        linux["cgroupsPath"] = json!(cg);
    }
    Ok(linux)
}

fn hostname(o: &Overrides, name: &str) -> String {
    if let Some(h) = &o.hostname {
        return h.clone();
    }
    let h: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let h = h.trim_matches('-').to_string();
    if h.is_empty() {
        "container".into()
    } else {
        h
    }
}

/// CRI-O's default open-files limit, capped by this process's hard limit: raising it
/// needs CAP_SYS_RESOURCE, which not every runtime host grants even to root.
fn nofile_limit() -> (u64, u64) {
    let want = 1_048_576u64;
    match rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum {
        Some(max) => (want.min(max), want.min(max)),
        None => (want, want),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_value(s: Result<oci_spec::runtime::Spec>) -> Value {
        serde_json::to_value(s.unwrap()).unwrap()
    }

    #[test]
    fn validation_names_what_no_runtime_takes() {
        let d = rootfs();
        let ic = json!({"config": {"Cmd": ["/bin/sh"]}}).to_string();
        let o = Overrides::default();
        let mut spec = generate(ic.as_bytes(), d.path(), "b", &o, None).unwrap();
        validate(&spec).unwrap();
        // What crun 1.8 (1.0.x only) and runc 1.1 (up to 1.0.2) both take.
        assert_eq!(spec.version(), "1.0.2");
        let mut ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        ns.push(ns[0].clone());
        spec.linux_mut().as_mut().unwrap().set_namespaces(Some(ns));
        let e = validate(&spec).unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
        let patch = json!({"process": {"cwd": "relative"}});
        let e = generate(ic.as_bytes(), d.path(), "b", &o, Some(&patch)).unwrap_err();
        assert!(e.to_string().contains("process.cwd"), "{e}");
    }

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\naudio:x:29:app\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn users_in_every_form() {
        let d = rootfs();
        let r = |s| resolve_user(d.path(), s).map(|u| (u.uid, u.gid, u.additional_gids));
        assert_eq!(r("app").unwrap(), (1000, 1000, vec![1000, 10, 29]));
        assert_eq!(r("1000").unwrap(), (1000, 1000, vec![1000, 10, 29]));
        assert_eq!(r("1000:10").unwrap(), (1000, 10, vec![10]));
        assert_eq!(r("app:wheel").unwrap(), (1000, 10, vec![10]));
        assert_eq!(r("4242").unwrap(), (4242, 0, vec![0]));
        assert_eq!(r("4242:4343").unwrap(), (4242, 4343, vec![4343]));
        assert!(r("nobody")
            .unwrap_err()
            .to_string()
            .contains("no user \"nobody\""));
        assert!(r("app:nogroup")
            .unwrap_err()
            .to_string()
            .contains("no group"));
    }

    #[test]
    fn passwd_symlinked_outside_is_read_inside() {
        let d = rootfs();
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("etc/passwd")).unwrap();
        // The host's /etc/passwd has root; inside, the link points at itself: nothing.
        assert!(resolve_user(d.path(), "root").is_err());
    }

    #[test]
    fn image_config_and_overrides() {
        let d = rootfs();
        let ic = json!({"config": {
            "Entrypoint": ["/bin/ep"], "Cmd": ["a", "b"], "Env": ["PATH=/bin", "X=1"],
            "WorkingDir": "/work", "User": "app", "StopSignal": "SIGQUIT",
            "Labels": {"l": "v"}}})
        .to_string();
        let s = to_value(generate(
            ic.as_bytes(),
            d.path(),
            "my_bundle",
            &Overrides::default(),
            None,
        ));
        let p = &s["process"];
        assert_eq!(p["args"], json!(["/bin/ep", "a", "b"]));
        assert_eq!(
            p["user"],
            json!({"uid": 1000, "gid": 1000, "additionalGids": [1000, 10, 29]})
        );
        assert_eq!(p["cwd"], "/work");
        assert!(p["env"].as_array().unwrap().contains(&json!("X=1")));
        assert!(p["env"]
            .as_array()
            .unwrap()
            .contains(&json!("HOME=/home/app")));
        assert_eq!(
            s["annotations"]["org.opencontainers.image.stopSignal"],
            "SIGQUIT"
        );
        assert_eq!(s["annotations"]["l"], "v");
        assert_eq!(s["hostname"], "my-bundle");
        assert_eq!(
            p["capabilities"]["effective"],
            json!([]),
            "non-root gets no effective caps"
        );
        assert!(s["linux"]["seccomp"]["syscalls"]
            .as_array()
            .is_some_and(|a| !a.is_empty()));

        let o = Overrides {
            cmd: Some(vec!["echo".into(), "hi".into()]),
            entrypoint: Some(vec![String::new()]),
            env: vec!["X=2".into()],
            user: Some("0".into()),
            cap_add: vec!["net_admin".into()],
            cap_drop: vec!["CAP_KILL".into()],
            read_only: true,
            memory: Some(64 << 20),
            cpus: Some(0.5),
            pids_limit: Some(10),
            mounts: vec![("/src".into(), "/dst".into(), true)],
            ..Default::default()
        };
        let patch = json!({"process": {"noNewPrivileges": false}, "annotations": {"l": null}});
        let s = to_value(generate(ic.as_bytes(), d.path(), "b", &o, Some(&patch)));
        let p = &s["process"];
        assert_eq!(p["args"], json!(["echo", "hi"]));
        assert!(p["env"].as_array().unwrap().contains(&json!("X=2")));
        assert!(!p["env"].as_array().unwrap().contains(&json!("X=1")));
        let caps = p["capabilities"]["effective"].as_array().unwrap();
        assert!(caps.contains(&json!("CAP_NET_ADMIN")) && !caps.contains(&json!("CAP_KILL")));
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(p["noNewPrivileges"], false);
        assert!(s["annotations"].get("l").is_none());
        assert!(s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/dst"
                && m["options"].as_array().unwrap().contains(&json!("ro"))));
        let bad = Overrides {
            cap_add: vec!["CAP_FLY".into()],
            ..Default::default()
        };
        assert!(generate(ic.as_bytes(), d.path(), "b", &bad, None)
            .unwrap_err()
            .to_string()
            .contains("CAP_FLY"));
        let invalid = json!({"process": {"user": {"uid": "root"}}});
        assert!(matches!(
            generate(
                ic.as_bytes(),
                d.path(),
                "b",
                &Overrides::default(),
                Some(&invalid)
            ),
            Err(SpecError::Invalid(_))
        ));
    }

    #[test]
    fn privileged_and_tty() {
        let d = rootfs();
        let ic = json!({"config": {"Cmd": ["sh"]}}).to_string();
        let o = Overrides {
            privileged: true,
            tty: true,
            ..Default::default()
        };
        let s = to_value(generate(ic.as_bytes(), d.path(), "b", &o, None));
        let mut bounding: Vec<String> =
            serde_json::from_value(s["process"]["capabilities"]["bounding"].clone()).unwrap();
        bounding.sort();
        let mut want = all_caps(bounding_set());
        want.sort();
        assert_eq!(bounding, want, "every capability this process holds");
        assert!(s["linux"].get("seccomp").is_none());
        assert_eq!(s["linux"]["maskedPaths"], json!([]));
        assert_eq!(s["process"]["noNewPrivileges"], false);
        assert_eq!(s["process"]["terminal"], true);
        assert!(s["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&json!("TERM=xterm")));
        let none = json!({"config": {}}).to_string();
        assert!(matches!(
            generate(none.as_bytes(), d.path(), "b", &Overrides::default(), None),
            Err(SpecError::NoCommand)
        ));
    }

    #[test]
    fn privileged_and_all_get_what_the_bounding_set_holds() {
        // A host without CAP_SYS_RESOURCE (bit 24) and CAP_BPF (bit 39).
        let bounding = Some(((1u64 << 41) - 1) & !(1 << 24) & !(1 << 39));
        let all = all_caps(bounding);
        assert_eq!(all.len(), ALL_CAPS.len() - 2);
        assert!(!all.contains(&"CAP_SYS_RESOURCE".to_string()));
        assert!(!all.contains(&"CAP_BPF".to_string()));
        assert!(all.contains(&"CAP_SYS_ADMIN".to_string()));
        let privileged = Overrides {
            privileged: true,
            ..Default::default()
        };
        assert_eq!(capabilities(&privileged, bounding).unwrap(), all);
        let add_all = Overrides {
            cap_add: vec!["ALL".into()],
            ..Default::default()
        };
        let caps = capabilities(&add_all, bounding).unwrap();
        assert_eq!(caps.len(), all.len());
        assert!(!caps.contains(&"CAP_SYS_RESOURCE".to_string()));
        // Unknown, every capability is asked for.
        assert_eq!(all_caps(None).len(), ALL_CAPS.len());
        assert!(bounding_set().is_some(), "this process has a CapBnd line");
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge_patch(&mut t, &json!({"a": [3]}));
        assert_eq!(t, json!({"a": [3]}));
    }
}
