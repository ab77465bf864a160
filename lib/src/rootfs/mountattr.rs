//! Mounts: attributes set with mount_setattr(2) (Linux 5.12), which neither nix nor
//! rustix wraps — read-only over a whole mount tree, and ID-mapped copies of a
//! directory (a user namespace's mapping applied to the owners seen through the
//! mount), which is how the layers under a user-namespaced container's overlay look
//! owned by its root — and the mounts below a directory, found and detached before it
//! is removed.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

/// `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[allow(unsafe_code)]
fn mount_setattr(dir: BorrowedFd, path: &Path, flags: u32, attr: &MountAttr) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: mount_setattr reads `size` bytes of `attr`, a live repr(C) struct of
    // exactly that size, and the NUL-terminated `path`; both outlive the call, and
    // `dir` is an open descriptor (or AT_FDCWD's stand-in) for its duration.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dir.as_raw_fd(),
            path.as_ptr(),
            flags as libc::c_uint,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the mount at `path` and every mount below it read-only.
pub fn readonly_recursive(path: &Path) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    mount_setattr(rustix::fs::CWD, path, libc::AT_RECURSIVE as u32, &attr)
}

/// Mounts an ID-mapped copy of the directory `src` at `dst` (an existing directory):
/// files owned by ID `n` on disk show as owned by whatever `n` maps to in `userns` (an
/// open `/proc/PID/ns/user` or a file it is pinned to), and files made through it as a
/// mapped ID land on disk as `n`. Not recursive: mounts below `src` are not copied. The
/// file system of `src` must allow ID-mapped mounts (ext4, xfs, btrfs, tmpfs on Linux
/// 6.3+; not overlayfs).
pub fn idmapped_bind(src: &Path, dst: &Path, userns: &File) -> io::Result<()> {
    use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};
    let tree = open_tree(
        rustix::fs::CWD,
        src,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    mount_setattr(
        tree.as_fd(),
        Path::new(""),
        libc::AT_EMPTY_PATH as u32,
        &attr,
    )?;
    move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        dst,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// The mount points at or below `dir` in this process's mount namespace, deepest
/// first (`/proc/self/mountinfo`, its octal escapes decoded).
pub fn mounts_below(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out: Vec<std::path::PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|mp| std::path::PathBuf::from(unescape(mp)))
        .filter(|mp| mp.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    Ok(out)
}

/// Unmounts every bind copy made directly under `dir` (recursive read-only or
/// ID-mapped copies) and removes the then empty directories and files they were mounted
/// on, never their content: what a bind shows belongs to the host.
pub fn unbind_each(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
        // Fails (EBUSY) on anything still mounted: never reaches the host's file.
        let _ = std::fs::remove_dir(&p).or_else(|_| std::fs::remove_file(&p));
    }
    let _ = std::fs::remove_dir(dir);
}

/// Detaches every mount at or below `dir`, deepest first, so that removing `dir`
/// afterwards cannot reach through a mount into what it shows (a layer of the shared
/// cache, a host path). Returns how many there were.
pub fn unmount_below(dir: &Path) -> io::Result<usize> {
    let mounts = mounts_below(dir)?;
    for mp in &mounts {
        match rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("unmounting {}: {e}", mp.display()),
                ))
            }
        }
    }
    Ok(mounts.len())
}

/// mountinfo's `\ooo` escapes (space, tab, newline, backslash) decoded.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(super::unescape("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        assert_eq!(super::unescape("/plain"), "/plain");
        assert_eq!(super::unescape("/end\\04"), "/end\\04");
    }
}
