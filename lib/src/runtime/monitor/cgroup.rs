//! The monitor's own cgroup: `--cgroup-parent PARENT` puts the monitor in
//! `PARENT/ctrmon-ID` in every mounted hierarchy, v1 and v2, so its memory and CPU
//! count against what the caller chose (a pod's cgroup, as CRI-O does with conmon)
//! rather than against whoever started it. Under the systemd cgroup manager the
//! parent is a slice and the monitor asks systemd for a scope of its own in it,
//! `crikit-ctrmon-ID.scope` (see [`crate::runtime::systemd`]): cgroups systemd
//! manages are not written to by hand. The container itself goes where its
//! config.json's `cgroupsPath` says.
//!
//! v1 `cpuset` is left alone: a new cpuset cgroup has no CPUs until someone copies
//! them in, and the monitor has no use for a CPU set of its own.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// A cgroup hierarchy mounted on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted.
    pub mount: PathBuf,
    /// Its v1 controllers (`memory`, `name=systemd`, …); empty for cgroup2.
    pub controllers: Vec<String>,
}

/// The cgroup hierarchies in a `/proc/self/mountinfo` text whose root is the
/// hierarchy's root (a namespaced view cannot be joined by absolute path).
pub fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut l = left.split(' ');
            let root = l.nth(3)?;
            let mount = l.next()?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let superopts = r.nth(1)?;
            if root != "/" {
                return None;
            }
            let controllers = match fstype {
                "cgroup2" => Vec::new(),
                "cgroup" => superopts
                    .split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro" | "xattr" | "noprefix" | "clone_children")
                            && !o.starts_with("release_agent")
                    })
                    .map(String::from)
                    .collect(),
                _ => return None,
            };
            Some(Hierarchy {
                mount: PathBuf::from(unescape(mount)),
                controllers,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a cgroup parent given on the command line: absolute, no `..`.
pub fn check_parent(parent: &Path) -> Result<(), String> {
    if !parent.is_absolute() {
        return Err(format!(
            "cgroup parent {}: must be an absolute cgroup path such as /kubepods",
            parent.display()
        ));
    }
    if parent
        .components()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err(format!(
            "cgroup parent {}: must not contain . or ..",
            parent.display()
        ));
    }
    Ok(())
}

/// Where a monitor's cgroup goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parent {
    /// Under a cgroup directory (`/kubepods/pod1`): the monitor makes
    /// `PARENT/ctrmon-ID` itself.
    Dir(PathBuf),
    /// In a systemd slice (`kubepods-pod1.slice`): systemd makes the scope.
    Slice(String),
}

impl Parent {
    /// The parent a caller named: a slice under the systemd cgroup manager, else a
    /// directory; checked.
    pub fn new(systemd: bool, parent: &str) -> Result<Parent, String> {
        let p = if systemd {
            Parent::Slice(parent.to_string())
        } else {
            Parent::Dir(PathBuf::from(parent))
        };
        p.check()?;
        Ok(p)
    }

    /// A recorded parent ([`Parent::as_str`]): a slice name never starts with `/`.
    pub fn from_recorded(parent: &str) -> Parent {
        if parent.starts_with('/') {
            Parent::Dir(PathBuf::from(parent))
        } else {
            Parent::Slice(parent.to_string())
        }
    }

    /// The directory or the slice name.
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Parent::Dir(d) => d.to_string_lossy(),
            Parent::Slice(s) => s.as_str().into(),
        }
    }

    /// Why this parent cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Parent::Dir(d) => check_parent(d),
            Parent::Slice(s) if crate::runtime::systemd::slice_dir(s).is_none() => Err(format!(
                "cgroup parent {s:?}: not a systemd slice name (NAME.slice)"
            )),
            Parent::Slice(_) => Ok(()),
        }
    }

    /// Puts the calling process in the monitor cgroup for `id` under this parent:
    /// `PARENT/ctrmon-ID`, left again when the result drops, or the scope
    /// `crikit-ctrmon-ID.scope`, which systemd removes once it is empty. A scope is
    /// asked for over D-Bus from threads that may outlive the call by a moment.
    pub fn place(&self, id: &str, what: &str) -> Result<Option<Joined>, String> {
        match self {
            Parent::Dir(d) => join(d, &format!("ctrmon-{id}"))
                .map(Some)
                .map_err(|e| format!("joining the monitor's cgroup: {e}")),
            Parent::Slice(slice) => {
                let unit = crate::runtime::systemd::monitor_scope(id);
                crate::runtime::systemd::start_scope_blocking(
                    &unit,
                    slice,
                    std::process::id(),
                    &format!("crikit {what} {id}"),
                )
                .map(|()| None)
                .map_err(|e| crate::one_line(&e))
            }
        }
    }

    /// Removes what [`Parent::place`] made for `id`, for callers cleaning up after
    /// a monitor that was killed; whether nothing is left (a scope goes by itself).
    pub fn remove(&self, id: &str) -> bool {
        match self {
            Parent::Dir(d) => remove(d, &format!("ctrmon-{id}")),
            Parent::Slice(_) => true,
        }
    }
}

/// The cgroups the monitor joined.
#[derive(Debug)]
pub struct Joined {
    /// (hierarchy mount, the monitor's cgroup directory in it).
    dirs: Vec<(PathBuf, PathBuf)>,
}

/// Moves the calling process into `PARENT/NAME` in every hierarchy but cpuset,
/// creating the directories. On failure, what was joined is left again.
pub fn join(parent: &Path, name: &str) -> io::Result<Joined> {
    let rel = parent.strip_prefix("/").unwrap_or(parent).join(name);
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let mut joined = Joined { dirs: Vec::new() };
    for h in hierarchies(&info) {
        if h.controllers.iter().any(|c| c == "cpuset") {
            continue;
        }
        let dir = h.mount.join(&rel);
        let r = fs::create_dir_all(&dir).and_then(|()| fs::write(dir.join("cgroup.procs"), "0"));
        if let Err(e) = r {
            joined.leave();
            return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
        }
        joined.dirs.push((h.mount, dir));
    }
    Ok(joined)
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Removes `PARENT/NAME` in every hierarchy, as [`Joined`] would have on its way
/// out: for callers cleaning up after a monitor that was killed. A cgroup that
/// still has processes stays; whether none is left.
pub fn remove(parent: &Path, name: &str) -> bool {
    let rel = parent.strip_prefix("/").unwrap_or(parent).join(name);
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut gone = true;
    for h in hierarchies(&info) {
        let dir = h.mount.join(&rel);
        if fs::remove_dir(&dir).is_err() && dir.exists() {
            gone = false;
        }
    }
    gone
}

impl Joined {
    /// Moves the process back to each hierarchy's root (exempt from cgroup2's
    /// no-internal-processes rule, unlike the parent) and removes its cgroups.
    pub fn leave(&mut self) {
        for (mount, dir) in self.dirs.drain(..) {
            let _ = fs::write(mount.join("cgroup.procs"), "0");
            let _ = fs::remove_dir(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchies_from_mountinfo() {
        let info = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
42 31 0:39 /sub /mnt/nested rw - cgroup2 cgroup2 rw
43 31 0:40 / /mnt/with\\040space rw - cgroup cgroup rw,pids
";
        let h = hierarchies(info);
        let mounts: Vec<_> = h.iter().map(|h| h.mount.to_str().unwrap()).collect();
        assert_eq!(
            mounts,
            [
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified",
                "/mnt/with space"
            ]
        );
        assert_eq!(h[1].controllers, ["memory"]);
        assert_eq!(h[2].controllers, ["name=systemd"]);
        assert!(h[3].controllers.is_empty());
    }

    #[test]
    fn parents_must_be_absolute_and_plain() {
        assert!(check_parent(Path::new("/kubepods/pod1")).is_ok());
        assert!(check_parent(Path::new("kubepods")).is_err());
        assert!(check_parent(Path::new("/kubepods/../x")).is_err());
    }
}
