//! The cgroup manager crid has the runtime use, and where the cgroups it names are.
//!
//! With `cgroupfs` a cgroup is a path under the hierarchy's root, which the runtime
//! makes itself (kubelet's pod cgroups look like `/kubepods/burstable/pod<uid>`).
//! With `systemd` every cgroup is a unit: kubelet's pod cgroups are slices
//! (`kubepods-burstable-pod<uid>.slice`), a container's cgroupsPath is runc's
//! `slice:prefix:name`, which the runtime (run with `--systemd-cgroup`) asks systemd
//! to make as the scope `prefix-name.scope` in that slice. systemd lays a slice out
//! by its name: `a-b-c.slice` is `/a.slice/a-b.slice/a-b-c.slice`.

use crate::config::CgroupManager;
use crikit::runtime::monitor::cgroup::Parent;
use crikit::runtime::systemd::Value;
use std::path::Path;

/// Where the cgroup hierarchies are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

/// The slice of containers whose pod names no cgroup parent, under systemd.
pub const DEFAULT_SLICE: &str = "crikit.slice";

/// The controllers kubelet's pods need on a cgroup v2 host.
const NEEDED_V2: [&str; 3] = ["cpu", "memory", "pids"];

/// Whether systemd is this host's init system, as sd_booted(3) tells.
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The manager crid uses when none is configured: systemd where it is the init
/// system, as CRI-O does, else cgroupfs.
pub fn default_manager() -> CgroupManager {
    if systemd_booted() {
        CgroupManager::Systemd
    } else {
        CgroupManager::Cgroupfs
    }
}

/// Why `manager` cannot work on this host, if it cannot: systemd asked where it is
/// not the init system, or a controller pods need missing from a cgroup v2 root.
pub fn check(manager: CgroupManager) -> Result<(), String> {
    if manager == CgroupManager::Systemd && !systemd_booted() {
        return Err(
            "cgroup manager systemd: systemd is not this host's init system \
                    (no /run/systemd/system); use --cgroup-manager cgroupfs"
                .into(),
        );
    }
    if manager == CgroupManager::Systemd {
        crikit::runtime::systemd::system_bus_present()
            .map_err(|e| format!("cgroup manager systemd: {e}"))?;
    }
    if is_unified(Path::new(ROOT)) {
        let file = Path::new(ROOT).join("cgroup.controllers");
        let have = std::fs::read_to_string(&file)
            .map_err(|e| format!("cgroup v2: reading {}: {e}", file.display()))?;
        missing_controllers(&have).map_err(|c| {
            format!(
                "cgroup v2: the {c} controller is not available at {} (it has: {})",
                ROOT,
                have.trim()
            )
        })?;
    }
    Ok(())
}

/// The first controller pods need that `have` (a cgroup.controllers text) lacks.
fn missing_controllers(have: &str) -> Result<(), &'static str> {
    let have: Vec<&str> = have.split_whitespace().collect();
    match NEEDED_V2.iter().find(|c| !have.contains(c)) {
        Some(c) => Err(c),
        None => Ok(()),
    }
}

/// Whether `root` is a cgroup2 mount (a unified host), not v1's tmpfs of hierarchies.
fn is_unified(root: &Path) -> bool {
    nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Why the pod cgroup parent `parent` (kubelet's `cgroup_parent`) does not suit
/// `manager`: kubelet's cgroup driver and crid's must be the same.
pub fn check_parent(manager: CgroupManager, parent: &str) -> Result<(), String> {
    match manager {
        CgroupManager::Systemd if slice_dir(&normalize_parent(manager, parent)).is_none() => {
            Err(format!(
                "cgroup parent {parent:?} is not a systemd slice (NAME.slice): crid's cgroup \
             manager is systemd, so kubelet's cgroupDriver must be systemd too"
            ))
        }
        CgroupManager::Cgroupfs if parent.ends_with(".slice") && !parent.contains('/') => {
            Err(format!(
                "cgroup parent {parent:?} is a systemd slice: crid's cgroup manager is \
                 cgroupfs, so kubelet's cgroupDriver must be cgroupfs too"
            ))
        }
        CgroupManager::Cgroupfs if parent.split('/').any(|c| c == "..") => {
            Err(format!("cgroup parent {parent:?} climbs out with \"..\""))
        }
        _ => Ok(()),
    }
}

/// The pod cgroup parent crid uses for `parent` as a caller gave it: under systemd
/// the last slice of a path of them, as containerd and CRI-O take it (kubelet's
/// systemd driver sends the whole path, `/kubepods.slice/kubepods-burstable.slice/
/// kubepods-burstable-pod<uid>.slice`; critest sends `/test.slice`).
pub fn normalize_parent(manager: CgroupManager, parent: &str) -> std::borrow::Cow<'_, str> {
    match manager {
        CgroupManager::Systemd if parent.contains('/') => parent
            .rsplit('/')
            .find(|c| !c.is_empty())
            .unwrap_or_default()
            .to_string()
            .into(),
        _ => parent.into(),
    }
}

/// A container's cgroupsPath (config.json) under `manager`, in its pod's cgroup
/// parent if it has one.
pub fn container_path(manager: CgroupManager, parent: Option<&str>, id: &str) -> String {
    match manager {
        CgroupManager::Cgroupfs => match parent {
            Some(p) => format!("{}/crikit-{id}", p.trim_end_matches('/')),
            None => format!("/crikit/{id}"),
        },
        CgroupManager::Systemd => format!("{}:crikit:{id}", parent.unwrap_or(DEFAULT_SLICE)),
    }
}

/// Where the monitors and the infra process of a pod with cgroup parent `parent`
/// go: `DIR/ctrmon-ID` under cgroupfs (none without a parent: they stay in crid's
/// cgroup), a scope of the pod's slice under systemd (`crikit.slice` without one).
pub fn monitor_parent(manager: CgroupManager, parent: Option<&str>) -> Option<Parent> {
    match manager {
        CgroupManager::Cgroupfs => parent.map(|p| Parent::Dir(dir(p).into())),
        CgroupManager::Systemd => Some(Parent::Slice(parent.unwrap_or(DEFAULT_SLICE).into())),
    }
}

/// The cgroup directory of the slice `slice`: in the unified hierarchy, or in
/// systemd's own on a hybrid host; None when it has none (yet).
fn slice_cgroup(slice: &str) -> Option<std::path::PathBuf> {
    let rel = slice_dir(slice)?;
    let rel = rel.trim_start_matches('/');
    [
        Path::new(ROOT).join(rel),
        Path::new(ROOT).join("systemd").join(rel),
    ]
    .into_iter()
    .find(|d| d.is_dir())
}

/// Makes the pod's slice `slice` when nobody has. kubelet makes its pods' slices
/// before RunPodSandbox, with their limits, and those are left as kubelet set them;
/// for any other caller crid makes it, limited to the pod's resources plus its
/// overhead (LinuxPodSandboxConfig's `resources` and `overhead`, as kubelet sums
/// them), and leaves a mark in `marks` (one file per slice) so that the last of its
/// pods lets it go ([`release_pod_slice`]). Call it holding [`crate::Crid::slices`].
pub async fn make_pod_slice(
    marks: &Path,
    slice: &str,
    resources: Option<&k8s_cri::v1::LinuxContainerResources>,
    overhead: Option<&k8s_cri::v1::LinuxContainerResources>,
) -> Result<(), String> {
    if slice_dir(slice).is_none() {
        return Err(format!("{slice:?} is not a slice name"));
    }
    if slice_cgroup(slice).is_some() {
        return Ok(());
    }
    let zero = k8s_cri::v1::LinuxContainerResources::default();
    let (r, o) = (resources.unwrap_or(&zero), overhead.unwrap_or(&zero));
    // A limit only where the pod has one: overhead alone limits nothing.
    let sum = |a: i64, b: i64| if a > 0 { a.saturating_add(b.max(0)) } else { 0 };
    let limits = crikit::runtime::systemd::slice_limits(
        is_unified(Path::new(ROOT)),
        sum(r.memory_limit_in_bytes, o.memory_limit_in_bytes),
        sum(r.cpu_shares, o.cpu_shares),
        sum(r.cpu_quota, o.cpu_quota),
        r.cpu_period,
    );
    let mut props = vec![("Description", Value::from(format!("crikit pod {slice}")))];
    props.extend(limits);
    let m = crikit::runtime::systemd::Manager::connect()
        .await
        .map_err(|e| crikit::one_line(&e))?;
    // Marked first: a crid killed in between leaves a mark, not a slice nobody lets go.
    std::fs::create_dir_all(marks)
        .and_then(|()| std::fs::write(marks.join(slice), b""))
        .map_err(|e| format!("marking {}: {e}", marks.display()))?;
    match m.start_transient(slice, props).await {
        Ok(()) => Ok(()),
        // Loaded already (an inactive unit, a unit file): someone else's.
        Err(e) if e.unit_exists() => {
            let _ = std::fs::remove_file(marks.join(slice));
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(marks.join(slice));
            Err(crikit::one_line(&e))
        }
    }
}

/// Stops the pod slice `slice` if crid made it ([`make_pod_slice`]) and no pod's
/// cgroups are left in it. Call it holding [`crate::Crid::slices`], with no pod
/// being made in the slice.
pub async fn release_pod_slice(marks: &Path, slice: &str) -> Result<(), String> {
    let mark = marks.join(slice);
    if slice_dir(slice).is_none() || !mark.exists() {
        return Ok(());
    }
    if let Some(dir) = slice_cgroup(slice) {
        let in_use = std::fs::read_dir(&dir)
            .map(|d| d.flatten().any(|e| e.file_type().is_ok_and(|t| t.is_dir())))
            .unwrap_or(false);
        if in_use {
            return Ok(());
        }
    }
    let m = crikit::runtime::systemd::Manager::connect()
        .await
        .map_err(|e| crikit::one_line(&e))?;
    m.stop(slice).await.map_err(|e| crikit::one_line(&e))?;
    let _ = std::fs::remove_file(&mark);
    Ok(())
}

/// The cgroup directory, from the hierarchy's root, that a cgroupsPath or a pod's
/// cgroup parent names: systemd's `slice:prefix:name` and `NAME.slice` laid out as
/// systemd lays them out, a path as it is.
pub fn dir(path: &str) -> String {
    // A path is absolute; systemd's form never is.
    if let Some((slice, rest)) = path.split_once(':').filter(|_| !path.starts_with('/')) {
        let (prefix, name) = rest.split_once(':').unwrap_or(("", rest));
        let parent = slice_dir(if slice.is_empty() {
            "system.slice"
        } else {
            slice
        })
        .unwrap_or_else(|| "/".into());
        let unit = if name.ends_with(".slice") {
            name.to_string()
        } else if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        return format!("{}/{unit}", parent.trim_end_matches('/'));
    }
    slice_dir(path).unwrap_or_else(|| path.to_string())
}

pub use crikit::runtime::systemd::slice_dir;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_systemd_parent_is_its_last_slice() {
        let n = |p| normalize_parent(CgroupManager::Systemd, p).into_owned();
        assert_eq!(n("/test.slice"), "test.slice");
        assert_eq!(
            n("/kubepods.slice/kubepods-besteffort.slice/"),
            "kubepods-besteffort.slice"
        );
        assert_eq!(n("kubepods.slice"), "kubepods.slice");
        assert_eq!(n("/"), "");
        assert!(check_parent(CgroupManager::Systemd, "/test.slice").is_ok());
        assert!(check_parent(CgroupManager::Systemd, "/").is_err());
        let e = check_parent(CgroupManager::Systemd, "/kubepods/pod1").unwrap_err();
        assert!(e.contains("\"/kubepods/pod1\""), "{e}");
        assert_eq!(
            normalize_parent(CgroupManager::Cgroupfs, "/kubepods/pod1"),
            "/kubepods/pod1"
        );
    }

    #[test]
    fn a_cgroups_path_names_its_directory() {
        assert_eq!(
            dir("kubepods-besteffort-podx.slice:crikit:c1"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podx.slice/crikit-c1.scope"
        );
        assert_eq!(dir(":crikit:c1"), "/system.slice/crikit-c1.scope");
        assert_eq!(
            dir("crikit.slice:crikit:c1"),
            "/crikit.slice/crikit-c1.scope"
        );
        assert_eq!(
            dir("kubepods-pod1.slice"),
            "/kubepods.slice/kubepods-pod1.slice"
        );
        assert_eq!(
            dir("/kubepods/burstable/pod1/crikit-c1"),
            "/kubepods/burstable/pod1/crikit-c1"
        );
        assert_eq!(dir("/odd:name/crikit-c1"), "/odd:name/crikit-c1");
    }

    #[test]
    fn containers_go_where_the_manager_puts_them() {
        use CgroupManager::*;
        assert_eq!(
            container_path(Cgroupfs, Some("/kubepods/pod1/"), "c"),
            "/kubepods/pod1/crikit-c"
        );
        assert_eq!(container_path(Cgroupfs, None, "c"), "/crikit/c");
        assert_eq!(
            container_path(Systemd, Some("kubepods-pod1.slice"), "c"),
            "kubepods-pod1.slice:crikit:c"
        );
        assert_eq!(container_path(Systemd, None, "c"), "crikit.slice:crikit:c");
    }

    #[test]
    fn a_pod_parent_must_suit_the_manager() {
        use CgroupManager::*;
        assert!(check_parent(Systemd, "kubepods-burstable-pod1.slice").is_ok());
        let e = check_parent(Systemd, "/kubepods/burstable/pod1").unwrap_err();
        assert!(
            e.contains("not a systemd slice") && e.contains("cgroupDriver"),
            "{e}"
        );
        assert!(check_parent(Cgroupfs, "/kubepods/burstable/pod1").is_ok());
        let e = check_parent(Cgroupfs, "kubepods-burstable-pod1.slice").unwrap_err();
        assert!(e.contains("is a systemd slice"), "{e}");
        assert!(check_parent(Cgroupfs, "/kubepods/../../etc").is_err());
    }

    #[test]
    fn a_v2_root_without_a_needed_controller_is_refused() {
        assert_eq!(
            missing_controllers("cpuset cpu io memory hugetlb pids rdma misc"),
            Ok(())
        );
        assert_eq!(missing_controllers("cpuset cpu io pids"), Err("memory"));
        assert_eq!(missing_controllers(""), Err("cpu"));
    }
}
