//! A pod's namespaces, pinned to files: network, IPC and UTS namespaces are made in
//! a thread of their own (unshare(2) acts on the calling thread for these kinds),
//! bind-mounted onto files under the pod's run directory, and joined by path by
//! every container of the pod. No process has to hold them.
//!
//! A pod with a user namespace of its own gets it, and the others owned by it, from a
//! short-lived child process (a multithreaded process cannot unshare a user
//! namespace): crid writes the child's ID maps, pins its namespaces and lets it go.
//!
//! Also the recursive read-only binds that runtimes without `rro` cannot make, and
//! CNI plugins bound to crid's life: the one module of crid with unsafe code (the
//! ioctl, the mount_setattr syscall and a pre_exec hook).

use crate::state::record::UserNamespace;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use std::io;
use std::path::{Path, PathBuf};

/// Has the process `cmd` starts killed if crid dies first (PR_SET_PDEATHSIG): a CNI
/// plugin must not go on with an ADD that a restarted crid is undoing with a DEL
/// (the two would race on the same veth and iptables chains). DEL is made for what a
/// plugin killed halfway leaves.
pub fn dies_with_crid(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let crid = nix::unistd::getpid();
    // SAFETY: the hook makes two system calls and touches no memory of the parent's.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // crid died before the line above: nobody would kill this one.
            if nix::unistd::getppid() != crid {
                return Err(io::Error::other("crid has exited"));
            }
            Ok(())
        });
    }
}

/// The kinds a pod may pin, with their unshare flag.
pub const KINDS: [(&str, CloneFlags); 3] = [
    ("net", CloneFlags::CLONE_NEWNET),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
];

/// Makes new namespaces of the `kinds` named (`net`, `ipc`, `uts`) and pins each at
/// `dir/KIND`. The UTS namespace gets `hostname`; the network namespace has its
/// loopback up. With `userns`, a user namespace with those ID maps comes first, pinned
/// at `dir/user`, and owns the others. On failure nothing stays pinned.
pub fn pin(
    dir: &Path,
    kinds: &[&str],
    hostname: &str,
    userns: Option<&UserNamespace>,
) -> io::Result<Vec<PathBuf>> {
    if let Some(u) = userns {
        return pin_in_userns(dir, kinds, hostname, u);
    }
    std::fs::create_dir_all(dir)?;
    let dir = dir.to_path_buf();
    let kinds: Vec<&'static str> = KINDS
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| kinds.contains(k))
        .collect();
    let hostname = hostname.to_string();
    // A thread that ends once its namespaces are pinned: nothing else ever runs in
    // them from crid.
    std::thread::spawn(move || {
        nix::sched::unshare(flags_of(&kinds)).map_err(io::Error::from)?;
        if kinds.contains(&"uts") && !hostname.is_empty() {
            nix::unistd::sethostname(&hostname).map_err(io::Error::from)?;
        }
        if kinds.contains(&"net") {
            loopback_up()?;
        }
        let mut pinned = Vec::new();
        for k in &kinds {
            match pin_one(&dir, None, k) {
                Ok(p) => pinned.push(p),
                Err(e) => {
                    unpin(&dir);
                    return Err(e);
                }
            }
        }
        Ok(pinned)
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

fn flags_of(kinds: &[&str]) -> CloneFlags {
    let mut flags = CloneFlags::empty();
    for (k, f) in KINDS {
        if kinds.contains(&k) {
            flags |= f;
        }
    }
    flags
}

/// Pins the PID namespace of process `pid` (a pod's infra process) at `dir/pid`.
pub fn pin_pid(dir: &Path, pid: i32) -> io::Result<PathBuf> {
    pin_one(dir, Some(pid), "pid")
}

/// Binds `/proc/PID/ns/KIND` (or the thread's own, for `pid` None) at `dir/KIND`.
fn pin_one(dir: &Path, pid: Option<i32>, kind: &str) -> io::Result<PathBuf> {
    let target = dir.join(kind);
    let source = match pid {
        Some(p) => format!("/proc/{p}/ns/{kind}"),
        None => format!("/proc/thread-self/ns/{kind}"),
    };
    std::fs::File::create(&target)
        .and_then(|_| {
            mount(
                Some(source.as_str()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(io::Error::from)
        })
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("pinning the {kind} namespace at {}: {e}", target.display()),
            )
        })?;
    Ok(target)
}

/// [`pin`] with a user namespace: a forked child unshares the user namespace and the
/// `kinds` together (so it owns them), crid writes its uid and gid maps, pins them
/// all from `/proc/CHILD/ns`, then sets the hostname and the loopback from a thread
/// that joins the pinned UTS and network namespaces.
fn pin_in_userns(
    dir: &Path,
    kinds: &[&str],
    hostname: &str,
    userns: &UserNamespace,
) -> io::Result<Vec<PathBuf>> {
    use std::io::{Read, Write};
    std::fs::create_dir_all(dir)?;
    let flags = flags_of(kinds) | CloneFlags::CLONE_NEWUSER;
    let (mut ready_r, ready_w) = std::io::pipe()?;
    let (go_r, go_w) = std::io::pipe()?;
    let pid = spawn_unshared(flags, ready_w, go_r, &go_w)?;
    let made = (|| -> io::Result<Vec<PathBuf>> {
        let mut ok = [0u8; 1];
        ready_r.read_exact(&mut ok)?;
        if ok[0] != 1 {
            return Err(io::Error::other(
                "unsharing a user namespace failed (are user namespaces enabled?)",
            ));
        }
        for (file, m) in [("uid_map", userns.uids), ("gid_map", userns.gids)] {
            std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/{pid}/{file}"))?
                .write_all(format!("{} {} {}\n", m.container_id, m.host_id, m.length).as_bytes())
                .map_err(|e| io::Error::new(e.kind(), format!("writing the {file}: {e}")))?;
        }
        let mut pinned = vec![pin_one(dir, Some(pid), "user")?];
        for k in kinds {
            pinned.push(pin_one(dir, Some(pid), k)?);
        }
        Ok(pinned)
    })();
    drop(go_w); // the child ends
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    let pinned = match made {
        Ok(p) => p,
        Err(e) => {
            unpin(dir);
            return Err(e);
        }
    };
    let net = kinds.contains(&"net").then(|| dir.join("net"));
    let uts = (kinds.contains(&"uts") && !hostname.is_empty()).then(|| dir.join("uts"));
    let hostname = hostname.to_string();
    let set = std::thread::spawn(move || -> io::Result<()> {
        if let Some(p) = uts {
            nix::sched::setns(std::fs::File::open(p)?, CloneFlags::CLONE_NEWUTS)?;
            nix::unistd::sethostname(&hostname)?;
        }
        if let Some(p) = net {
            nix::sched::setns(std::fs::File::open(p)?, CloneFlags::CLONE_NEWNET)?;
            loopback_up()?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))
    .and_then(|r| r);
    if let Err(e) = set {
        unpin(dir);
        return Err(e);
    }
    Ok(pinned)
}

/// Forks a child that unshares `flags`, says on `ready` whether it could (one byte, 1
/// for yes), then waits for `go` to close (the parent's `go_w`, which the child closes
/// on its side) and exits; its pid. It dies with crid.
fn spawn_unshared(
    flags: CloneFlags,
    ready: std::io::PipeWriter,
    go: std::io::PipeReader,
    go_w: &std::io::PipeWriter,
) -> io::Result<i32> {
    use std::os::fd::AsRawFd;
    let (ready_fd, go_fd, go_w_fd) = (ready.as_raw_fd(), go.as_raw_fd(), go_w.as_raw_fd());
    // SAFETY: the child runs only async-signal-safe system calls (prctl, close,
    // unshare, write, read, _exit) on descriptors that stay open in it, then exits without
    // returning into Rust: fork in a multithreaded process allows exactly that.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Child => unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::close(go_w_fd);
            let ok: u8 = u8::from(libc::unshare(flags.bits()) == 0);
            libc::write(ready_fd, &ok as *const u8 as *const libc::c_void, 1);
            let mut b = 0u8;
            libc::read(go_fd, &mut b as *mut u8 as *mut libc::c_void, 1);
            libc::_exit(0);
        },
        nix::unistd::ForkResult::Parent { child } => Ok(child.as_raw()),
    }
}

/// `dir/KIND` when a namespace is pinned there (an nsfs mount, not the empty file a
/// pin cut short leaves).
pub fn pinned(dir: &Path, kind: &str) -> Option<PathBuf> {
    let p = dir.join(kind);
    nix::sys::statfs::statfs(&p)
        .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .then_some(p)
}

/// Reads `/proc/thread-self/net/FILE` (`dev`, `snmp`, …) as the network namespace
/// `ns` (a pinned namespace file) sees it: a thread of its own joins the namespace,
/// reads, and ends, so no other thread of crid ever changes namespace.
pub fn read_net_file(ns: &Path, file: &str) -> io::Result<String> {
    let fd = std::fs::File::open(ns)?;
    let path = format!("/proc/thread-self/net/{file}");
    std::thread::Builder::new()
        .name("crid-netns".into())
        .spawn(move || -> io::Result<String> {
            nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET)?;
            std::fs::read_to_string(path)
        })?
        .join()
        .map_err(|_| io::Error::other("the thread reading the namespace panicked"))?
}

/// Unmounts and removes whatever is pinned under `dir`, then `dir` itself.
pub fn unpin(dir: &Path) {
    for k in KINDS.iter().map(|(k, _)| *k).chain(["user", "pid"]) {
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

/// Binds `src` at `dst` (an empty directory) with every mount of the copy read-only
/// and private: a recursive read-only view of `src` whose submounts stay read-only
/// when a runtime binds it again (runc 1.1 knows no `rro`; a bind keeps each mount's
/// read-only flag). Needs mount_setattr(2), Linux 5.12. On failure nothing stays
/// mounted.
pub fn bind_recursive_readonly(src: &Path, dst: &Path) -> io::Result<()> {
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
        crikit::rootfs::mountattr::readonly_recursive(dst)?;
        Ok(())
    })();
    if let Err(e) = sealed {
        let _ = umount2(dst, MntFlags::MNT_DETACH);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod read_tests {
    use super::*;

    #[test]
    fn a_net_file_is_read_as_the_namespace_sees_it() {
        // A thread in a namespace of its own, with only loopback, until told to go.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).unwrap();
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        let ns = PathBuf::from(format!("/proc/{}/task/{tid}/ns/net", std::process::id()));
        let inside = read_net_file(&ns, "dev").unwrap();
        let names: Vec<&str> = inside
            .lines()
            .skip(2)
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim()))
            .collect();
        assert_eq!(names, ["lo"], "{inside}");
        let host = std::fs::read_to_string("/proc/self/net/dev").unwrap();
        assert_ne!(host, inside);
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(read_net_file(Path::new("/nonexistent"), "dev").is_err());
    }
}
