//! A pod's infra process: PID 1 of the PID namespace that the containers of a pod
//! share, as the pause container is for other runtimes, without an image, a bundle
//! or an OCI runtime. It holds the namespace, reaps the orphans that the kernel hands
//! to it, and ends on SIGTERM or SIGINT (as pause does) or SIGKILL; when it ends, the
//! kernel kills every process left in its namespace.
//!
//! [`spawn`] runs in the caller (ctrmon --infra): it joins the pod's cgroup and
//! namespaces, unshares a PID namespace and forks the infra process into it. That
//! process makes a mount namespace of its own whose root is an empty read-only tmpfs,
//! drops every capability, becomes uid and gid 65535 (as the pause image does) where
//! the user namespace maps them, sets no_new_privs and turns non-dumpable, and only
//! then says it is ready. Its view of the host is gone: `/proc/1/root`, `/proc/1/mounts`
//! and `/proc/1/net` as the pod's containers see them show nothing of the node.

use crate::error::{sys, MonitorError};
use crikit::runtime::monitor::cgroup::Parent;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{fork, ForkResult, Pid};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The uid and gid of the infra process, where the user namespace maps them.
pub const INFRA_ID: u32 = 65535;

/// The namespaces the infra process joins from its pod's directory of pinned
/// namespaces, in this order (the user namespace last: after it, crid's host
/// privileges are gone).
const JOINED: [(&str, CloneFlags); 4] = [
    ("net", CloneFlags::CLONE_NEWNET),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("user", CloneFlags::CLONE_NEWUSER),
];

/// What `ctrmon --infra` is asked for.
#[derive(Debug, Clone)]
pub struct InfraConfig {
    /// The pod's id: names the cgroup (`PARENT/ctrmon-ID`).
    pub id: String,
    /// The pod's pinned namespaces (`net`, `ipc`, `uts`, `user`; each joined when
    /// present).
    pub ns_dir: PathBuf,
    /// Where the infra process's pid goes (written atomically before it is
    /// reported), so that a caller killed meanwhile still finds it.
    pub pid_file: Option<PathBuf>,
    /// Put it in `PARENT/ctrmon-ID` or a scope of the slice PARENT (see
    /// [`crikit::runtime::monitor::cgroup`]).
    pub cgroup_parent: Option<Parent>,
}

/// Starts the infra process for `cfg`; its pid, as the caller's PID namespace sees
/// it. Call it single-threaded (a fork copies only the calling thread).
pub fn spawn(cfg: &InfraConfig) -> Result<i32, MonitorError> {
    if !cfg.ns_dir.is_dir() {
        return Err(MonitorError::Usage {
            reason: format!("--ns-dir {}: not a directory", cfg.ns_dir.display()),
        });
    }
    // Left again when this process exits: the infra process stays in it. Asking
    // systemd for a scope starts threads, which must be gone again before the fork.
    let _cgroup = match &cfg.cgroup_parent {
        Some(parent) => parent
            .place(&cfg.id, "infra process of pod")
            .map_err(|reason| MonitorError::Sys {
                action: "joining the infra process's cgroup",
                source: io::Error::other(reason),
            })?,
        None => None,
    };
    crate::run::single_threaded_within(std::time::Duration::from_secs(2))?;
    for (kind, flag) in JOINED {
        let path = cfg.ns_dir.join(kind);
        if !path.exists() {
            continue;
        }
        let f = std::fs::File::open(&path).map_err(sys("opening a pinned namespace"))?;
        nix::sched::setns(f.as_fd(), flag).map_err(|e| MonitorError::Sys {
            action: "joining a pinned namespace",
            source: io::Error::new(
                io::Error::from(e).kind(),
                format!("{}: {e}", path.display()),
            ),
        })?;
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| sys("unsharing a PID namespace")(e.into()))?;
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(sys("opening /dev/null"))?;
    let (mut ready_r, ready_w) = std::io::pipe().map_err(sys("creating a pipe"))?;
    // Before the fork: the child's new root has no /proc to read it from.
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(63);
    // SAFETY: single-threaded (checked above), so the child may run any code.
    match unsafe { fork() }.map_err(|e| sys("forking the infra process")(e.into()))? {
        ForkResult::Child => {
            drop(ready_r);
            let mut ready_w = ready_w;
            let outcome = match become_infra(&cfg.ns_dir, null.into(), last_cap) {
                Ok(()) => b"ok\n".to_vec(),
                Err(e) => format!("{e}\n").into_bytes(),
            };
            let ok = outcome == b"ok\n";
            let _ = ready_w.write_all(&outcome);
            drop(ready_w);
            // Nothing of the caller's stays open but stdio (on /dev/null).
            // SAFETY: closes descriptors 3 and up, which no Rust handle in this
            // process uses any more.
            unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
            if ok {
                pause();
            }
            // SAFETY: _exit ends the process without running the caller's
            // atexit handlers or unwinding: nothing of it is left to clean up.
            unsafe { libc::_exit(1) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            let mut said = String::new();
            let _ = ready_r.read_to_string(&mut said);
            if said != "ok\n" {
                let _ = nix::sys::wait::waitpid(child, None);
                let reason = match said.trim() {
                    "" => "it ended before it was ready",
                    r => r,
                };
                return Err(MonitorError::Sys {
                    action: "setting up the infra process",
                    source: io::Error::other(reason.to_string()),
                });
            }
            if let Some(p) = &cfg.pid_file {
                if let Err(e) = crikit::atomic::write(p, child.to_string().as_bytes(), 0o644) {
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                    return Err(sys("writing the infra process's pid file")(
                        io::Error::other(e),
                    ));
                }
            }
            Ok(child.as_raw())
        }
    }
}

/// In the forked child, PID 1 of the new namespace: a session of its own, stdio on
/// /dev/null, no other descriptor, an empty read-only root, no privileges.
fn become_infra(ns_dir: &Path, null: OwnedFd, last_cap: u32) -> Result<(), String> {
    let _ = nix::unistd::setsid();
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which nothing holds Rust
        // handles to in this process.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(format!("dup2: {}", io::Error::last_os_error()));
        }
    }
    drop(null);
    let fail = |what: &str, e: nix::Error| format!("{what}: {e}");
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| fail("unsharing mounts", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| fail("making mounts private", e))?;
    mount(
        Some("infra"),
        ns_dir,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,nr_inodes=1,mode=0555"),
    )
    .map_err(|e| fail("mounting an empty root", e))?;
    nix::unistd::chdir(ns_dir).map_err(|e| fail("entering the empty root", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| fail("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| fail("detaching the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| fail("chdir /", e))?;
    for cap in 0..=last_cap {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
    }
    let id = INFRA_ID;
    // A user namespace that maps no 65535 keeps its root, with no capabilities.
    let _ = nix::unistd::setgroups(&[]);
    let _ = nix::unistd::setresgid(id.into(), id.into(), id.into());
    let _ = nix::unistd::setresuid(id.into(), id.into(), id.into());
    drop_capabilities().map_err(|e| format!("dropping capabilities: {e}"))?;
    // SAFETY: prctl with integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(format!("no_new_privs: {}", io::Error::last_os_error()));
        }
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    Ok(())
}

/// Empties the effective, permitted and inheritable sets (capset(2), version 3).
fn drop_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a version-3 header and two data structs, both laid out
    // as the kernel's and alive across the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    Ok(())
}

extern "C" fn noop(_: libc::c_int) {}

/// PID 1's loop: reap whatever ends, exit on SIGTERM or SIGINT. The signals have a
/// handler (as PID 1 of a namespace, a signal left at its default is dropped
/// before it is ever queued) and are blocked, so `sigwait` receives them.
fn pause() -> ! {
    let mut set = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        set.add(s);
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(noop),
            nix::sys::signal::SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        let _ = unsafe { nix::sys::signal::sigaction(s, &action) };
    }
    let _ = set.thread_block();
    loop {
        reap();
        match set.wait() {
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                // SAFETY: as in `spawn`.
                unsafe { libc::_exit(0) }
            }
            _ => {}
        }
    }
}

/// Reaps every child that has ended.
fn reap() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}
