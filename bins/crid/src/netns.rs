//! A pod's namespaces, pinned to files: network, IPC and UTS namespaces are made in
//! a thread of their own (unshare(2) acts on the calling thread for these kinds),
//! bind-mounted onto files under the pod's run directory, and joined by path by
//! every container of the pod. No process has to hold them.
//!
//! Also the recursive read-only binds that runtimes without `rro` cannot make: the
//! one module of crid with unsafe code (the ioctl and the mount_setattr syscall).

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use std::io;
use std::path::{Path, PathBuf};

/// The kinds a pod may pin, with their unshare flag.
pub const KINDS: [(&str, CloneFlags); 3] = [
    ("net", CloneFlags::CLONE_NEWNET),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
];

/// Makes new namespaces of the `kinds` named (`net`, `ipc`, `uts`) and pins each at
/// `dir/KIND`. The UTS namespace gets `hostname`; the network namespace has its
/// loopback up. On failure nothing stays pinned.
pub fn pin(dir: &Path, kinds: &[&str], hostname: &str) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.to_path_buf();
    let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    let hostname = hostname.to_string();
    // A thread that ends once its namespaces are pinned: nothing else ever runs in
    // them from crid.
    std::thread::spawn(move || {
        let mut flags = CloneFlags::empty();
        for (k, f) in KINDS {
            if kinds.iter().any(|x| x == k) {
                flags |= f;
            }
        }
        nix::sched::unshare(flags).map_err(io::Error::from)?;
        if kinds.iter().any(|k| k == "uts") && !hostname.is_empty() {
            nix::unistd::sethostname(&hostname).map_err(io::Error::from)?;
        }
        if kinds.iter().any(|k| k == "net") {
            loopback_up()?;
        }
        let mut pinned = Vec::new();
        for k in &kinds {
            let target = dir.join(k);
            let r = std::fs::File::create(&target).and_then(|_| {
                mount(
                    Some(format!("/proc/thread-self/ns/{k}").as_str()),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(io::Error::from)
            });
            if let Err(e) = r {
                unpin(&dir);
                return Err(io::Error::new(
                    e.kind(),
                    format!("pinning the {k} namespace at {}: {e}", target.display()),
                ));
            }
            pinned.push(target);
        }
        Ok(pinned)
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// Unmounts and removes whatever is pinned under `dir`, then `dir` itself.
pub fn unpin(dir: &Path) {
    for (k, _) in KINDS {
        let p = dir.join(k);
        let _ = umount2(&p, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&p);
    }
    let _ = std::fs::remove_dir(dir);
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in `req` into
    // it; the socket is open and `req` lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member SIOCGIFFLAGS filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above, setting the flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// Binds `src` at `dst` (an empty directory) with every mount of the copy read-only
/// and private: a recursive read-only view of `src` whose submounts stay read-only
/// when a runtime binds it again (runc 1.1 knows no `rro`; a bind keeps each mount's
/// read-only flag). Needs mount_setattr(2), Linux 5.12. On failure nothing stays
/// mounted.
pub fn bind_recursive_readonly(src: &Path, dst: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(io::Error::from)?;
    let sealed = (|| -> io::Result<()> {
        mount(
            None::<&str>,
            dst,
            None::<&str>,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(io::Error::from)?;
        let path = std::ffi::CString::new(dst.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: mount_setattr reads `size` bytes of `attr`, a live repr(C) struct of
        // exactly that size, and the NUL-terminated `path`, which lives across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::AT_RECURSIVE as libc::c_uint,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })();
    if let Err(e) = sealed {
        let _ = umount2(dst, MntFlags::MNT_DETACH);
        return Err(e);
    }
    Ok(())
}

/// Unmounts every bind made under `dir` by [`bind_recursive_readonly`] and removes
/// the (then empty) directories, never their content: what a bind shows belongs to
/// the host.
pub fn unbind_all(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let _ = umount2(&p, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&p);
    }
    let _ = std::fs::remove_dir(dir);
}
