//! Every field of a CRI request checked before anything is made, the way kubelet's
//! validation and the kernel would take it: a refusal names the field (as a path
//! into the request, `config.linux.sysctls["kernel.panic"]`) and the offending
//! value, shortened, and why. Pure functions of the request, so that a fuzzer can
//! drive them; what depends on the node (runtime handlers, the cgroup manager, a
//! pod's user namespace) is checked where the node is known.

use k8s_cri::v1 as cri;
use std::collections::HashMap;

/// A refused field: its path in the request, the value, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Where in the request (`config.hostname`).
    pub field: String,
    /// The value, quoted and shortened.
    pub value: String,
    /// Why it is refused.
    pub why: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.field, self.value, self.why)
    }
}

impl From<Refused> for crate::error::CridError {
    fn from(r: Refused) -> Self {
        crate::error::CridError::Invalid(r.to_string())
    }
}

type Result<T = ()> = std::result::Result<T, Refused>;

/// The most a value is shown in a refusal, in characters.
const SHOWN: usize = 48;
/// Labels and annotations together, keys and values (kubelet's bound on annotations).
pub const MAX_METADATA_BYTES: usize = 256 << 10;
/// A hostname, as the kernel takes one (HOST_NAME_MAX).
const MAX_HOSTNAME: usize = 64;
/// Names, namespaces and uids (a DNS subdomain's bound).
const MAX_NAME: usize = 253;
/// A path (PATH_MAX).
const MAX_PATH: usize = 4096;
/// One component of a path (NAME_MAX).
const MAX_COMPONENT: usize = 255;
/// The least memory a container starts in (CRI-O's bound).
pub const MIN_MEMORY: i64 = 12 << 20;
/// The largest CFS quota the kernel takes, in microseconds.
const MAX_QUOTA: i64 = (1 << 44) - 1;

/// `v` quoted with its control characters escaped, cut to [`SHOWN`] characters.
pub fn shown(v: &str) -> String {
    let mut cut: String = v.chars().take(SHOWN).collect();
    if cut.len() < v.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

fn refuse<T>(field: impl Into<String>, value: &str, why: impl Into<String>) -> Result<T> {
    Err(Refused {
        field: field.into(),
        value: shown(value),
        why: why.into(),
    })
}

fn refuse_n<T>(field: impl Into<String>, value: i64, why: impl Into<String>) -> Result<T> {
    Err(Refused {
        field: field.into(),
        value: value.to_string(),
        why: why.into(),
    })
}

/// No NUL and no other control character.
fn printable(field: &str, v: &str) -> Result {
    if v.chars().any(char::is_control) {
        return refuse(field, v, "holds a control character");
    }
    Ok(())
}

/// No NUL, which no system call can take.
fn no_nul(field: &str, v: &str) -> Result {
    if v.contains('\0') {
        return refuse(field, v, "holds a NUL byte");
    }
    Ok(())
}

/// A name, namespace or uid: not empty, at most [`MAX_NAME`] bytes, no `/`, no
/// control character.
fn name(field: &str, v: &str) -> Result {
    if v.is_empty() {
        return refuse(field, v, "is empty");
    }
    if v.len() > MAX_NAME {
        return refuse(field, v, format!("is over {MAX_NAME} bytes"));
    }
    printable(field, v)?;
    if v.contains('/') {
        return refuse(field, v, "holds a '/'");
    }
    Ok(())
}

/// An absolute path without `.` or `..` components, NUL or control characters.
fn absolute_path(field: &str, v: &str) -> Result {
    if !v.starts_with('/') {
        return refuse(field, v, "is not an absolute path");
    }
    clean_path(field, v)
}

/// A path without `..` components, NUL or control characters, at most PATH_MAX.
fn clean_path(field: &str, v: &str) -> Result {
    printable(field, v)?;
    if v.len() > MAX_PATH {
        return refuse(field, v, format!("is over {MAX_PATH} bytes"));
    }
    if v.split('/').any(|c| c == "..") {
        return refuse(field, v, "climbs out with \"..\"");
    }
    if v.split('/').any(|c| c.len() > MAX_COMPONENT) {
        return refuse(
            field,
            v,
            format!("has a component over {MAX_COMPONENT} bytes"),
        );
    }
    Ok(())
}

/// A hostname as the kernel and resolvers take it: at most 64 bytes of RFC 1123
/// labels (letters, digits, '-' inside, 1 to 63 each) joined by dots.
pub fn hostname(field: &str, v: &str) -> Result {
    if v.len() > MAX_HOSTNAME {
        return refuse(field, v, format!("is over {MAX_HOSTNAME} bytes"));
    }
    for label in v.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return refuse(
                field,
                v,
                "is not a hostname (RFC 1123 labels of letters, digits and '-', joined by dots)",
            );
        }
    }
    Ok(())
}

/// Labels and annotations: keys not empty, no NUL, and all of them together
/// within [`MAX_METADATA_BYTES`].
fn metadata_maps(
    field: &str,
    labels: &HashMap<String, String>,
    annotations: &HashMap<String, String>,
) -> Result {
    let mut total = 0usize;
    for (what, map) in [("labels", labels), ("annotations", annotations)] {
        for (k, v) in map {
            let f = format!("{field}.{what}[{}]", shown(k));
            if k.is_empty() {
                return refuse(f, k, "is an empty key");
            }
            no_nul(&f, k)?;
            no_nul(&f, v)?;
            total += k.len() + v.len();
        }
    }
    if total > MAX_METADATA_BYTES {
        return Err(Refused {
            field: format!("{field}.labels and {field}.annotations"),
            value: format!("{total} bytes"),
            why: format!("are over {} KiB together", MAX_METADATA_BYTES >> 10),
        });
    }
    Ok(())
}

/// A uid or gid: 0 to 2^31 - 1, as the OCI runtimes take them.
fn id(field: &str, v: i64) -> Result {
    if !(0..=i64::from(i32::MAX)).contains(&v) {
        return refuse_n(field, v, "is not a user or group id (0 to 2147483647)");
    }
    Ok(())
}

/// An enum value the CRI defines.
fn known<E: TryFrom<i32>>(field: &str, v: i32) -> Result {
    if E::try_from(v).is_err() {
        return refuse_n(field, v.into(), "is not a value the CRI defines");
    }
    Ok(())
}

/// The sysctls a pod may set: those of the namespaces it has of its own, as runc
/// and CRI-O take them.
fn sysctl_namespace(name: &str) -> Option<&'static str> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let dotted = name.replace('/', ".");
    if IPC.contains(&dotted.as_str()) || dotted.starts_with("fs.mqueue.") {
        Some("IPC")
    } else if dotted.starts_with("net.") {
        Some("network")
    } else if dotted == "kernel.hostname" || dotted == "kernel.domainname" {
        Some("UTS")
    } else {
        None
    }
}

fn sysctls(
    field: &str,
    map: &HashMap<String, String>,
    ns: Option<&cri::NamespaceOption>,
) -> Result {
    let host = |mode: i32| mode == cri::NamespaceMode::Node as i32;
    for (k, v) in map {
        let f = format!("{field}[{}]", shown(k));
        let charset = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
            && !k.starts_with(['.', '/'])
            && !k.split(['.', '/']).any(str::is_empty);
        if !charset {
            return refuse(f, k, "is not a sysctl name");
        }
        let shared = match sysctl_namespace(k) {
            None => return refuse(
                f,
                k,
                "is not namespaced: it would change the host (IPC, network and UTS sysctls only)",
            ),
            Some("network") => ns.is_some_and(|o| host(o.network)),
            Some("IPC") => ns.is_some_and(|o| host(o.ipc)),
            // A pod shares the host's UTS namespace when it shares its network.
            Some(_) => ns.is_some_and(|o| host(o.network)),
        };
        if shared {
            return refuse(f, k, "belongs to a namespace the pod shares with the host");
        }
        if v.is_empty() || v.len() > 4096 {
            return refuse(f, v, "is not a sysctl value (1 to 4096 bytes)");
        }
        printable(&f, v)?;
    }
    Ok(())
}

/// The resources of a pod or a container, within the kernel's ranges; 0 leaves
/// a value unset.
pub fn resources(field: &str, r: &cri::LinuxContainerResources) -> Result {
    let f = |name: &str| format!("{field}.{name}");
    if r.cpu_period != 0 && !(1_000..=1_000_000).contains(&r.cpu_period) {
        return refuse_n(
            f("cpu_period"),
            r.cpu_period,
            "is not a CFS period (1000 to 1000000 microseconds)",
        );
    }
    if r.cpu_quota != 0 && r.cpu_quota != -1 && !(1_000..=MAX_QUOTA).contains(&r.cpu_quota) {
        return refuse_n(
            f("cpu_quota"),
            r.cpu_quota,
            format!("is not a CFS quota (-1, or 1000 to {MAX_QUOTA} microseconds)"),
        );
    }
    if r.cpu_shares != 0 && !(2..=262_144).contains(&r.cpu_shares) {
        return refuse_n(f("cpu_shares"), r.cpu_shares, "is not 2 to 262144");
    }
    if r.memory_limit_in_bytes != 0 && r.memory_limit_in_bytes < MIN_MEMORY {
        return refuse_n(
            f("memory_limit_in_bytes"),
            r.memory_limit_in_bytes,
            "is below 12 MiB, the least a container starts in",
        );
    }
    if r.memory_swap_limit_in_bytes < -1 {
        return refuse_n(
            f("memory_swap_limit_in_bytes"),
            r.memory_swap_limit_in_bytes,
            "is not -1 (unlimited) or a size",
        );
    }
    if r.memory_swap_limit_in_bytes > 0 && r.memory_limit_in_bytes == 0 {
        return refuse_n(
            f("memory_swap_limit_in_bytes"),
            r.memory_swap_limit_in_bytes,
            "is set without memory_limit_in_bytes (it counts memory and swap together)",
        );
    }
    if r.memory_swap_limit_in_bytes > 0 && r.memory_swap_limit_in_bytes < r.memory_limit_in_bytes {
        return refuse_n(
            f("memory_swap_limit_in_bytes"),
            r.memory_swap_limit_in_bytes,
            "is below memory_limit_in_bytes (it counts memory and swap together)",
        );
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return refuse_n(f("oom_score_adj"), r.oom_score_adj, "is not -1000 to 1000");
    }
    for (name, v) in [
        ("cpuset_cpus", &r.cpuset_cpus),
        ("cpuset_mems", &r.cpuset_mems),
    ] {
        if !cpuset(v) {
            return refuse(f(name), v, "is not a list of numbers and ranges (0-3,7)");
        }
    }
    for (i, h) in r.hugepage_limits.iter().enumerate() {
        if !page_size(&h.page_size) {
            return refuse(
                format!("{field}.hugepage_limits[{i}].page_size"),
                &h.page_size,
                "is not a page size (2MB, 1GB, 64KB)",
            );
        }
    }
    for (k, v) in &r.unified {
        let fk = format!("{field}.unified[{}]", shown(k));
        let file = k.split_once('.').is_some_and(|(c, rest)| {
            !c.is_empty()
                && !rest.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
        if !file {
            return refuse(fk, k, "is not a cgroup v2 file name (CONTROLLER.FILE)");
        }
        printable(&fk, v)?;
    }
    Ok(())
}

/// `0-3,7` and the like: a list of numbers and ascending ranges; empty is none.
fn cpuset(v: &str) -> bool {
    v.is_empty()
        || v.split(',').all(|part| {
            let mut ends = part.splitn(2, '-').map(|n| {
                (!n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| n.parse::<u32>().ok())
                    .flatten()
            });
            match (ends.next().flatten(), ends.next()) {
                (Some(_), None) => true,
                (Some(a), Some(Some(b))) => a <= b,
                _ => false,
            }
        })
}

/// `2MB`, `1GB`, `64KB`: a number and one of KB, MB, GB.
fn page_size(v: &str) -> bool {
    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &v[digits.len()..];
    !digits.is_empty()
        && digits.len() <= 6
        && digits.bytes().all(|b| b.is_ascii_digit())
        && ["KB", "MB", "GB"].contains(&unit)
}

/// A seccomp profile: a known type, and for Localhost an absolute clean path.
fn seccomp(field: &str, p: Option<&cri::SecurityProfile>, legacy: &str) -> Result {
    if let Some(p) = p {
        known::<cri::security_profile::ProfileType>(
            &format!("{field}.seccomp.profile_type"),
            p.profile_type,
        )?;
        if p.profile_type == cri::security_profile::ProfileType::Localhost as i32 {
            absolute_path(&format!("{field}.seccomp.localhost_ref"), &p.localhost_ref)?;
        }
    }
    let lf = format!("{field}.seccomp_profile_path");
    match legacy {
        "" | "runtime/default" | "docker/default" | "unconfined" => Ok(()),
        other => match other.strip_prefix("localhost/") {
            Some(path) => absolute_path(&lf, path),
            None => refuse(
                lf,
                other,
                "is not runtime/default, docker/default, unconfined or localhost/PATH",
            ),
        },
    }
}

fn namespace_options(field: &str, o: Option<&cri::NamespaceOption>) -> Result {
    let Some(o) = o else { return Ok(()) };
    for (name, mode) in [("network", o.network), ("pid", o.pid), ("ipc", o.ipc)] {
        known::<cri::NamespaceMode>(&format!("{field}.namespace_options.{name}"), mode)?;
    }
    if let Some(u) = &o.userns_options {
        known::<cri::NamespaceMode>(
            &format!("{field}.namespace_options.userns_options.mode"),
            u.mode,
        )?;
    }
    printable(
        &format!("{field}.namespace_options.target_id"),
        &o.target_id,
    )
}

/// A capability name: `ALL`, or letters, digits and '_', with or without `CAP_`,
/// in either case (kubelet passes on what the pod says).
fn capabilities(field: &str, c: Option<&cri::Capability>) -> Result {
    let Some(c) = c else { return Ok(()) };
    for (what, list) in [
        ("add_capabilities", &c.add_capabilities),
        ("drop_capabilities", &c.drop_capabilities),
        ("add_ambient_capabilities", &c.add_ambient_capabilities),
    ] {
        for (i, cap) in list.iter().enumerate() {
            let ok = !cap.is_empty()
                && cap.len() <= 64
                && cap.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return refuse(
                    format!("{field}.capabilities.{what}[{i}]"),
                    cap,
                    "is not a capability name (CAP_NET_ADMIN, NET_ADMIN or ALL)",
                );
            }
        }
    }
    Ok(())
}

/// RunPodSandbox's pod config.
// seccomp_profile_path is what kubelets before 1.19 sent, and crictl still may.
#[allow(deprecated)]
pub fn pod_config(c: &cri::PodSandboxConfig) -> Result {
    let Some(m) = &c.metadata else {
        return refuse("config.metadata", "", "is missing");
    };
    name("config.metadata.name", &m.name)?;
    name("config.metadata.namespace", &m.namespace)?;
    name("config.metadata.uid", &m.uid)?;
    if !c.hostname.is_empty() {
        hostname("config.hostname", &c.hostname)?;
    }
    if !c.log_directory.is_empty() {
        absolute_path("config.log_directory", &c.log_directory)?;
    }
    if let Some(dns) = &c.dns_config {
        for (i, s) in dns.servers.iter().enumerate() {
            if s.parse::<std::net::IpAddr>().is_err() {
                return refuse(
                    format!("config.dns_config.servers[{i}]"),
                    s,
                    "is not an IP address",
                );
            }
        }
        for (what, list) in [("searches", &dns.searches), ("options", &dns.options)] {
            for (i, v) in list.iter().enumerate() {
                if v.is_empty()
                    || v.len() > 253
                    || v.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return refuse(
                        format!("config.dns_config.{what}[{i}]"),
                        v,
                        "is not one resolv.conf word (1 to 253 bytes, no whitespace or control character)",
                    );
                }
            }
        }
    }
    for (i, p) in c.port_mappings.iter().enumerate() {
        let f = |name: &str| format!("config.port_mappings[{i}].{name}");
        known::<cri::Protocol>(&f("protocol"), p.protocol)?;
        if !(1..=65535).contains(&p.container_port) {
            return refuse_n(
                f("container_port"),
                p.container_port.into(),
                "is not a port (1 to 65535)",
            );
        }
        if !(0..=65535).contains(&p.host_port) {
            return refuse_n(
                f("host_port"),
                p.host_port.into(),
                "is not a port (1 to 65535, or 0 for none)",
            );
        }
        if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
            return refuse(f("host_ip"), &p.host_ip, "is not an IP address");
        }
    }
    metadata_maps("config", &c.labels, &c.annotations)?;
    let Some(l) = &c.linux else { return Ok(()) };
    if !l.cgroup_parent.is_empty() {
        clean_path("config.linux.cgroup_parent", &l.cgroup_parent)?;
    }
    let sc = l.security_context.as_ref();
    let ns = sc.and_then(|s| s.namespace_options.as_ref());
    sysctls("config.linux.sysctls", &l.sysctls, ns)?;
    for (what, r) in [("overhead", &l.overhead), ("resources", &l.resources)] {
        if let Some(r) = r {
            resources(&format!("config.linux.{what}"), r)?;
        }
    }
    if let Some(s) = sc {
        let f = "config.linux.security_context";
        namespace_options(f, s.namespace_options.as_ref())?;
        for (what, v) in [
            ("run_as_user", &s.run_as_user),
            ("run_as_group", &s.run_as_group),
        ] {
            if let Some(v) = v {
                id(&format!("{f}.{what}"), v.value)?;
            }
        }
        for (i, g) in s.supplemental_groups.iter().enumerate() {
            id(&format!("{f}.supplemental_groups[{i}]"), *g)?;
        }
        known::<cri::SupplementalGroupsPolicy>(
            &format!("{f}.supplemental_groups_policy"),
            s.supplemental_groups_policy,
        )?;
        seccomp(f, s.seccomp.as_ref(), &s.seccomp_profile_path)?;
    }
    Ok(())
}

/// CreateContainer's container config.
// The deprecated apparmor_profile field is what kubelets before 1.30 send.
#[allow(deprecated)]
pub fn container_config(c: &cri::ContainerConfig) -> Result {
    let Some(m) = &c.metadata else {
        return refuse("config.metadata", "", "is missing");
    };
    name("config.metadata.name", &m.name)?;
    match &c.image {
        Some(i) if !i.image.is_empty() => printable("config.image.image", &i.image)?,
        _ => return refuse("config.image.image", "", "is missing"),
    }
    for (what, list) in [("command", &c.command), ("args", &c.args)] {
        for (i, a) in list.iter().enumerate() {
            no_nul(&format!("config.{what}[{i}]"), a)?;
        }
    }
    if !c.working_dir.is_empty() {
        absolute_path("config.working_dir", &c.working_dir)?;
    }
    for (i, e) in c.envs.iter().enumerate() {
        let f = format!("config.envs[{i}].key");
        if e.key.is_empty() {
            return refuse(f, &e.key, "is empty");
        }
        if e.key.contains('=') {
            return refuse(f, &e.key, "holds '=', which ends a variable's name");
        }
        no_nul(&f, &e.key)?;
        no_nul(&format!("config.envs[{i}].value"), &e.value)?;
    }
    for (i, mount) in c.mounts.iter().enumerate() {
        let f = |name: &str| format!("config.mounts[{i}].{name}");
        absolute_path(&f("container_path"), &mount.container_path)?;
        if !mount.host_path.is_empty() {
            absolute_path(&f("host_path"), &mount.host_path)?;
        }
        known::<cri::MountPropagation>(&f("propagation"), mount.propagation)?;
        if let Some(img) = &mount.image {
            printable(&f("image.image"), &img.image)?;
        }
    }
    for (i, d) in c.devices.iter().enumerate() {
        let f = |name: &str| format!("config.devices[{i}].{name}");
        absolute_path(&f("container_path"), &d.container_path)?;
        absolute_path(&f("host_path"), &d.host_path)?;
        if !d.permissions.bytes().all(|b| b"rwm".contains(&b)) || d.permissions.len() > 3 {
            return refuse(
                f("permissions"),
                &d.permissions,
                "is not made of r, w and m",
            );
        }
    }
    if !c.log_path.is_empty() {
        clean_path("config.log_path", &c.log_path)?;
        if c.log_path.starts_with('/') {
            return refuse(
                "config.log_path",
                &c.log_path,
                "is not relative to the pod's log directory",
            );
        }
    }
    metadata_maps("config", &c.labels, &c.annotations)?;
    let Some(l) = &c.linux else { return Ok(()) };
    if let Some(r) = &l.resources {
        resources("config.linux.resources", r)?;
    }
    let Some(s) = &l.security_context else {
        return Ok(());
    };
    let f = "config.linux.security_context";
    capabilities(f, s.capabilities.as_ref())?;
    namespace_options(f, s.namespace_options.as_ref())?;
    for (what, v) in [
        ("run_as_user", &s.run_as_user),
        ("run_as_group", &s.run_as_group),
    ] {
        if let Some(v) = v {
            id(&format!("{f}.{what}"), v.value)?;
        }
    }
    if !s.run_as_username.is_empty() {
        name(&format!("{f}.run_as_username"), &s.run_as_username)?;
        if s.run_as_username.contains(':') {
            return refuse(
                format!("{f}.run_as_username"),
                &s.run_as_username,
                "holds a ':'",
            );
        }
    }
    for (i, g) in s.supplemental_groups.iter().enumerate() {
        id(&format!("{f}.supplemental_groups[{i}]"), *g)?;
    }
    known::<cri::SupplementalGroupsPolicy>(
        &format!("{f}.supplemental_groups_policy"),
        s.supplemental_groups_policy,
    )?;
    for (what, list) in [
        ("masked_paths", &s.masked_paths),
        ("readonly_paths", &s.readonly_paths),
    ] {
        for (i, p) in list.iter().enumerate() {
            absolute_path(&format!("{f}.{what}[{i}]"), p)?;
        }
    }
    seccomp(f, s.seccomp.as_ref(), &s.seccomp_profile_path)?;
    printable(&format!("{f}.apparmor_profile"), &s.apparmor_profile)?;
    Ok(())
}

/// UpdateRuntimeConfig's pod CIDR: empty, or CIDRs (one per IP family) joined
/// by commas, as kubelet sends them.
pub fn pod_cidr(field: &str, v: &str) -> Result {
    if v.is_empty() {
        return Ok(());
    }
    for cidr in v.split(',') {
        let ok = cidr.split_once('/').is_some_and(|(ip, len)| {
            let len: Option<u8> = (!len.is_empty() && len.len() <= 3)
                .then(|| len.parse().ok())
                .flatten();
            match (ip.parse::<std::net::IpAddr>(), len) {
                (Ok(std::net::IpAddr::V4(_)), Some(n)) => n <= 32,
                (Ok(std::net::IpAddr::V6(_)), Some(n)) => n <= 128,
                _ => false,
            }
        });
        if !ok {
            return refuse(field, v, "is not a CIDR, or CIDRs joined by commas");
        }
    }
    Ok(())
}

/// ExecSync's and Exec's command: not empty, no NUL in any argument.
pub fn command(field: &str, cmd: &[String]) -> Result {
    if cmd.is_empty() {
        return refuse(field, "", "is empty");
    }
    for (i, a) in cmd.iter().enumerate() {
        no_nul(&format!("{field}[{i}]"), a)?;
    }
    Ok(())
}

/// ExecSync's timeout: seconds, 0 for none.
pub fn timeout(field: &str, t: i64) -> Result {
    if t < 0 {
        return refuse_n(field, t, "is negative");
    }
    Ok(())
}

/// PortForward's ports.
pub fn ports(field: &str, ports: &[i32]) -> Result {
    for (i, p) in ports.iter().enumerate() {
        if !(1..=65535).contains(p) {
            return refuse_n(
                format!("{field}[{i}]"),
                (*p).into(),
                "is not a port (1 to 65535)",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type PodEdit = Box<dyn FnOnce(&mut cri::PodSandboxConfig)>;
    type ContainerEdit = Box<dyn FnOnce(&mut cri::ContainerConfig)>;

    fn pod() -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "web-0".into(),
            log_directory: "/var/log/pods/default_web_u1".into(),
            ..Default::default()
        }
    }

    fn ctr() -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The field a pod config changed by `f` is refused for; None when accepted.
    fn pod_refused(f: impl FnOnce(&mut cri::PodSandboxConfig)) -> Option<String> {
        let mut c = pod();
        f(&mut c);
        pod_config(&c).err().map(|r| r.field)
    }

    fn ctr_refused(f: impl FnOnce(&mut cri::ContainerConfig)) -> Option<String> {
        let mut c = ctr();
        f(&mut c);
        container_config(&c).err().map(|r| r.field)
    }

    fn linux(c: &mut cri::PodSandboxConfig) -> &mut cri::LinuxPodSandboxConfig {
        c.linux.get_or_insert_with(Default::default)
    }

    fn ctr_res(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerResources {
        c.linux
            .get_or_insert_with(Default::default)
            .resources
            .get_or_insert_with(Default::default)
    }

    #[test]
    fn a_plain_pod_and_container_pass() {
        assert_eq!(pod_config(&pod()), Ok(()));
        assert_eq!(container_config(&ctr()), Ok(()));
        let mut c = ctr();
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: vec!["net_admin".into(), "CAP_SYS_TIME".into()],
                    drop_capabilities: vec!["ALL".into()],
                    add_ambient_capabilities: vec!["NET_BIND_SERVICE".into()],
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(container_config(&c), Ok(()));
    }

    #[test]
    fn hostnames_are_rfc_1123_within_the_kernels_bound() {
        for good in [
            "a",
            "web-0",
            "a.b.c",
            "A1",
            &"a".repeat(63),
            &format!("{}.b", "a".repeat(62)),
        ] {
            assert_eq!(hostname("h", good), Ok(()), "{good}");
        }
        for bad in [
            "web\nx",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a_b",
            "a b",
            &"a".repeat(64),
            &format!("{}.{}", "a".repeat(40), "b".repeat(40)),
        ] {
            assert!(hostname("h", bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            pod_refused(|c| c.hostname = "a\nb".into()).as_deref(),
            Some("config.hostname")
        );
    }

    #[test]
    fn a_refusal_names_the_field_and_a_shortened_value() {
        let r = pod_config(&cri::PodSandboxConfig {
            hostname: "x".repeat(300),
            ..pod()
        })
        .unwrap_err();
        let line = r.to_string();
        assert!(line.starts_with("config.hostname \"xxxx"), "{line}");
        assert!(line.contains("…\""), "{line}");
        assert!(line.len() < 160 && !line.contains('\n'), "{line}");
    }

    #[test]
    fn pod_fields() {
        let cases: Vec<(&str, PodEdit)> = vec![
            (
                "config.metadata.name",
                Box::new(|c| c.metadata.as_mut().unwrap().name = String::new()),
            ),
            (
                "config.metadata.namespace",
                Box::new(|c| c.metadata.as_mut().unwrap().namespace = "a/b".into()),
            ),
            (
                "config.metadata.uid",
                Box::new(|c| c.metadata.as_mut().unwrap().uid = "u\0".into()),
            ),
            (
                "config.log_directory",
                Box::new(|c| c.log_directory = "logs".into()),
            ),
            (
                "config.log_directory",
                Box::new(|c| c.log_directory = "/var/log/../etc".into()),
            ),
            (
                "config.port_mappings[0].host_port",
                Box::new(|c| {
                    c.port_mappings = vec![cri::PortMapping {
                        container_port: 80,
                        host_port: 70000,
                        ..Default::default()
                    }]
                }),
            ),
            (
                "config.port_mappings[0].container_port",
                Box::new(|c| {
                    c.port_mappings = vec![cri::PortMapping {
                        container_port: 0,
                        ..Default::default()
                    }]
                }),
            ),
            (
                "config.port_mappings[0].protocol",
                Box::new(|c| {
                    c.port_mappings = vec![cri::PortMapping {
                        container_port: 80,
                        protocol: 9,
                        ..Default::default()
                    }]
                }),
            ),
            (
                "config.port_mappings[0].host_ip",
                Box::new(|c| {
                    c.port_mappings = vec![cri::PortMapping {
                        container_port: 80,
                        host_ip: "nowhere".into(),
                        ..Default::default()
                    }]
                }),
            ),
            (
                "config.dns_config.servers[0]",
                Box::new(|c| {
                    c.dns_config = Some(cri::DnsConfig {
                        servers: vec!["8.8.8.8 x".into()],
                        ..Default::default()
                    })
                }),
            ),
            (
                "config.dns_config.searches[0]",
                Box::new(|c| {
                    c.dns_config = Some(cri::DnsConfig {
                        searches: vec!["a\nnameserver 1.2.3.4".into()],
                        ..Default::default()
                    })
                }),
            ),
            (
                "config.linux.sysctls[\"kernel.panic\"]",
                Box::new(|c| {
                    linux(c).sysctls.insert("kernel.panic".into(), "1".into());
                }),
            ),
            (
                "config.linux.sysctls[\"net.a\\nb\"]",
                Box::new(|c| {
                    linux(c).sysctls.insert("net.a\nb".into(), "1".into());
                }),
            ),
            (
                "config.linux.sysctls[\"kernel.shm_rmid_forced\"]",
                Box::new(|c| {
                    linux(c)
                        .sysctls
                        .insert("kernel.shm_rmid_forced".into(), "1\n".into());
                }),
            ),
            (
                "config.linux.cgroup_parent",
                Box::new(|c| linux(c).cgroup_parent = "/kubepods/../../etc".into()),
            ),
            (
                "config.linux.resources.oom_score_adj",
                Box::new(|c| {
                    linux(c).resources = Some(cri::LinuxContainerResources {
                        oom_score_adj: 1001,
                        ..Default::default()
                    })
                }),
            ),
            (
                "config.linux.security_context.run_as_user",
                Box::new(|c| {
                    linux(c).security_context = Some(cri::LinuxSandboxSecurityContext {
                        run_as_user: Some(cri::Int64Value { value: -1 }),
                        ..Default::default()
                    })
                }),
            ),
            (
                "config.linux.security_context.seccomp.localhost_ref",
                Box::new(|c| {
                    linux(c).security_context = Some(cri::LinuxSandboxSecurityContext {
                        seccomp: Some(cri::SecurityProfile {
                            profile_type: 2,
                            localhost_ref: "profile.json".into(),
                        }),
                        ..Default::default()
                    })
                }),
            ),
            (
                "config.labels and config.annotations",
                Box::new(|c| {
                    c.annotations
                        .insert("big".into(), "x".repeat(MAX_METADATA_BYTES));
                }),
            ),
        ];
        for (field, f) in cases {
            assert_eq!(pod_refused(f).as_deref(), Some(field));
        }
    }

    #[test]
    fn namespaced_sysctls_pass_unless_the_host_namespace_is_shared() {
        let set = |k: &str, network: i32| {
            pod_refused(|c| {
                let l = linux(c);
                l.sysctls.insert(k.into(), "1".into());
                l.security_context = Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            })
        };
        let (pod_net, host_net) = (
            cri::NamespaceMode::Pod as i32,
            cri::NamespaceMode::Node as i32,
        );
        for k in [
            "kernel.shm_rmid_forced",
            "fs.mqueue.msg_max",
            "net.ipv4.ip_forward",
            "net/ipv4/ping_group_range",
            "kernel.hostname",
        ] {
            assert_eq!(set(k, pod_net), None, "{k}");
        }
        assert!(set("net.ipv4.ip_forward", host_net).is_some());
        assert!(set("kernel.domainname", host_net).is_some());
        assert_eq!(set("kernel.sem", host_net), None);
    }

    #[test]
    #[allow(deprecated)]
    fn container_fields() {
        let cases: Vec<(&str, ContainerEdit)> = vec![
            (
                "config.metadata.name",
                Box::new(|c| c.metadata = Some(cri::ContainerMetadata::default())),
            ),
            ("config.image.image", Box::new(|c| c.image = None)),
            (
                "config.args[1]",
                Box::new(|c| c.args = vec!["a".into(), "b\0c".into()]),
            ),
            (
                "config.working_dir",
                Box::new(|c| c.working_dir = "data".into()),
            ),
            (
                "config.envs[0].key",
                Box::new(|c| {
                    c.envs = vec![cri::KeyValue {
                        key: "A=B".into(),
                        value: "x".into(),
                    }]
                }),
            ),
            (
                "config.envs[0].value",
                Box::new(|c| {
                    c.envs = vec![cri::KeyValue {
                        key: "A".into(),
                        value: "x\0".into(),
                    }]
                }),
            ),
            (
                "config.mounts[0].container_path",
                Box::new(|c| {
                    c.mounts = vec![cri::Mount {
                        container_path: "data".into(),
                        ..Default::default()
                    }]
                }),
            ),
            (
                "config.mounts[0].host_path",
                Box::new(|c| {
                    c.mounts = vec![cri::Mount {
                        container_path: "/data".into(),
                        host_path: "/var/../etc".into(),
                        ..Default::default()
                    }]
                }),
            ),
            (
                "config.mounts[0].propagation",
                Box::new(|c| {
                    c.mounts = vec![cri::Mount {
                        container_path: "/data".into(),
                        propagation: 7,
                        ..Default::default()
                    }]
                }),
            ),
            (
                "config.devices[0].permissions",
                Box::new(|c| {
                    c.devices = vec![cri::Device {
                        container_path: "/dev/x".into(),
                        host_path: "/dev/null".into(),
                        permissions: "rwx".into(),
                    }]
                }),
            ),
            (
                "config.log_path",
                Box::new(|c| c.log_path = "../../etc/passwd".into()),
            ),
            (
                "config.log_path",
                Box::new(|c| c.log_path = "/etc/passwd".into()),
            ),
            (
                "config.linux.resources.cpu_shares",
                Box::new(|c| ctr_res(c).cpu_shares = 1),
            ),
            (
                "config.linux.resources.cpu_period",
                Box::new(|c| ctr_res(c).cpu_period = 10),
            ),
            (
                "config.linux.resources.cpu_quota",
                Box::new(|c| ctr_res(c).cpu_quota = 999),
            ),
            (
                "config.linux.resources.memory_limit_in_bytes",
                Box::new(|c| ctr_res(c).memory_limit_in_bytes = -5),
            ),
            (
                "config.linux.resources.memory_swap_limit_in_bytes",
                Box::new(|c| {
                    let r = ctr_res(c);
                    r.memory_limit_in_bytes = 100 << 20;
                    r.memory_swap_limit_in_bytes = 50 << 20;
                }),
            ),
            (
                "config.linux.resources.oom_score_adj",
                Box::new(|c| ctr_res(c).oom_score_adj = -1001),
            ),
            (
                "config.linux.resources.cpuset_cpus",
                Box::new(|c| ctr_res(c).cpuset_cpus = "3-1".into()),
            ),
            (
                "config.linux.resources.hugepage_limits[0].page_size",
                Box::new(|c| {
                    ctr_res(c).hugepage_limits = vec![cri::HugepageLimit {
                        page_size: "2M".into(),
                        limit: 1,
                    }]
                }),
            ),
            (
                "config.linux.resources.unified[\"../x\"]",
                Box::new(|c| {
                    ctr_res(c).unified.insert("../x".into(), "1".into());
                }),
            ),
            (
                "config.linux.security_context.capabilities.add_capabilities[0]",
                Box::new(|c| {
                    c.linux
                        .get_or_insert_with(Default::default)
                        .security_context = Some(cri::LinuxContainerSecurityContext {
                        capabilities: Some(cri::Capability {
                            add_capabilities: vec!["net admin".into()],
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                }),
            ),
            (
                "config.linux.security_context.masked_paths[0]",
                Box::new(|c| {
                    c.linux
                        .get_or_insert_with(Default::default)
                        .security_context = Some(cri::LinuxContainerSecurityContext {
                        masked_paths: vec!["proc/kcore".into()],
                        ..Default::default()
                    })
                }),
            ),
            (
                "config.linux.security_context.supplemental_groups[0]",
                Box::new(|c| {
                    c.linux
                        .get_or_insert_with(Default::default)
                        .security_context = Some(cri::LinuxContainerSecurityContext {
                        supplemental_groups: vec![1 << 40],
                        ..Default::default()
                    })
                }),
            ),
            (
                "config.linux.security_context.seccomp_profile_path",
                Box::new(|c| {
                    c.linux
                        .get_or_insert_with(Default::default)
                        .security_context = Some(cri::LinuxContainerSecurityContext {
                        seccomp_profile_path: "mine".into(),
                        ..Default::default()
                    })
                }),
            ),
        ];
        for (field, f) in cases {
            assert_eq!(ctr_refused(f).as_deref(), Some(field));
        }
    }

    #[test]
    fn borderline_values_pass() {
        assert_eq!(
            ctr_refused(|c| {
                let r = ctr_res(c);
                r.cpu_period = 100_000;
                r.cpu_quota = 1_000;
                r.cpu_shares = 2;
                r.oom_score_adj = -1000;
                r.memory_swap_limit_in_bytes = -1;
                r.cpuset_cpus = "0-1,3".into();
                r.hugepage_limits = vec![cri::HugepageLimit {
                    page_size: "1GB".into(),
                    limit: 0,
                }];
                r.unified.insert("memory.high".into(), "max".into());
                c.envs = vec![cri::KeyValue {
                    key: "EMPTY".into(),
                    value: String::new(),
                }];
                c.log_path = "app/0.log".into();
            }),
            None
        );
        assert_eq!(
            pod_refused(|c| {
                c.port_mappings = vec![cri::PortMapping {
                    container_port: 65535,
                    host_port: 0,
                    host_ip: "::1".into(),
                    ..Default::default()
                }];
                linux(c).cgroup_parent = "/kubepods.slice/kubepods-burstable.slice".into();
            }),
            None
        );
        assert!(command("cmd", &[]).is_err());
        assert!(command("cmd", &["sh".into(), "-c".into(), "a\0".into()]).is_err());
        assert!(ports("port", &[80, 0]).is_err());
        assert!(timeout("timeout", -1).is_err());
        assert_eq!(ports("port", &[1, 65535]), Ok(()));
        for good in ["", "10.244.0.0/24", "10.244.0.0/24,fd00::/64"] {
            assert_eq!(pod_cidr("cidr", good), Ok(()), "{good}");
        }
        for bad in [
            "10.244.0.0",
            "10.244.0.0/33",
            "fd00::/129",
            "x/8",
            "10.0.0.0/8\n",
            ",",
        ] {
            assert!(pod_cidr("cidr", bad).is_err(), "{bad:?}");
        }
    }
}
