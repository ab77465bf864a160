//! The monitor process: detaches from its caller, runs `runtime create` (and `start`)
//! with pipes for the container's stdout and stderr, reports the container pid — or
//! the runtime's error — as one JSON line, then, as the container's subreaper, copies
//! its output into the CRI log and writes the exit file when it ends.
//!
//! Single-threaded: one `poll(2)` over the output pipes and a signalfd (SIGCHLD to
//! reap, SIGHUP to reopen the log). The forks happen before any thread exists.

use super::{attach, CriLog, ExitStatus, Stream};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// Errors before the monitor detaches.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The bundle is missing or its config.json is not a runtime spec.
    #[error("bundle {}: {reason}", path.display())]
    Bundle {
        /// The bundle directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The exec process file is missing or not a runtime-spec process.
    #[error("process file {}: {reason}", path.display())]
    Process {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A system call failed while setting up.
    #[error("{action}")]
    Sys {
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The runtime failed; its own message.
    #[error("{runtime} create failed: {message}")]
    Runtime {
        /// The runtime binary.
        runtime: String,
        /// Its error text.
        message: String,
    },
}

fn sys(action: &'static str) -> impl FnOnce(io::Error) -> MonitorError {
    move |source| MonitorError::Sys { action, source }
}

/// What to monitor.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The container id.
    pub id: String,
    /// The OCI runtime (runc).
    pub runtime: PathBuf,
    /// The runtime's `--root`, if not its default.
    pub runtime_root: Option<PathBuf>,
    /// The CRI log file.
    pub log_path: PathBuf,
    /// Where the exit status goes.
    pub exit_file: PathBuf,
    /// Where the runtime writes the container pid.
    pub pid_file: PathBuf,
    /// Where the runtime writes its own diagnostics (JSON lines).
    pub runtime_log: PathBuf,
    /// Where the monitor writes its own pid (to signal it: SIGHUP reopens the log).
    pub monitor_pid_file: PathBuf,
    /// Also start the container.
    pub start: bool,
    /// Run `runtime delete` after the container exits.
    pub cleanup: bool,
    /// Lines longer than this are split into partial records.
    pub max_line: usize,
    /// When the log would grow past this many bytes it is truncated and starts over,
    /// as conmon does with --log-size-max.
    pub log_size_max: Option<u64>,
    /// The attach socket to serve (see [`super::attach`]).
    pub attach_socket: Option<PathBuf>,
    /// Give the container a stdin pipe that attach clients write to.
    pub stdin: bool,
}

/// What the monitor tells its caller once the container exists.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// The container's pid, or -1 when the runtime failed.
    pub pid: i32,
    /// The runtime's error text, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Checks the bundle before anything forks, so bad input fails in the caller.
pub fn check_bundle(bundle: &Path) -> Result<(), MonitorError> {
    let bad = |reason: String| MonitorError::Bundle {
        path: bundle.to_path_buf(),
        reason,
    };
    let data =
        std::fs::read(bundle.join("config.json")).map_err(|e| bad(format!("config.json: {e}")))?;
    let _: oci_spec::runtime::Spec =
        serde_json::from_slice(&data).map_err(|e| bad(format!("config.json: {e}")))?;
    Ok(())
}

/// Detaches a monitor for `cfg` and returns, in the caller, what it reported.
pub fn spawn(cfg: &MonitorConfig) -> Result<Report, MonitorError> {
    check_bundle(&cfg.bundle)?;
    let (r, w) = nix::unistd::pipe().map_err(|e| sys("creating the report pipe")(e.into()))?;
    // SAFETY: the process is single-threaded here (ctrmon forks before starting any
    // thread), so the child may run arbitrary code.
    match unsafe { fork() }.map_err(|e| sys("forking the monitor")(e.into()))? {
        ForkResult::Parent { child } => {
            drop(w);
            // The intermediate child exits at once; reap it.
            let _ = waitpid(child, None);
            let mut line = String::new();
            io::BufReader::new(File::from(r))
                .read_line(&mut line)
                .map_err(sys("reading the monitor's report"))?;
            if line.trim().is_empty() {
                return Err(MonitorError::Runtime {
                    runtime: cfg.runtime.display().to_string(),
                    message: "the monitor ended without reporting".into(),
                });
            }
            serde_json::from_str(line.trim())
                .map_err(|e| sys("reading the monitor's report")(io::Error::other(e)))
        }
        ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            // SAFETY: still single-threaded.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    // A daemon keeps nothing of its caller's: `pid=$(ctrmon …)` must
                    // not wait for the container to end.
                    detach_stdio();
                    let code = monitor(cfg, w);
                    std::process::exit(code);
                }
                _ => {
                    // SAFETY: _exit skips destructors and atexit handlers, which belong
                    // to the caller's process image.
                    unsafe { nix::libc::_exit(0) }
                }
            }
        }
    }
}

/// Points stdin, stdout and stderr at /dev/null.
fn detach_stdio() {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: 0..3 are this process's standard descriptors; dup2 replaces
            // them atomically and nothing holds Rust handles to them.
            let mut target = unsafe { OwnedFd::from_raw_fd(fd) };
            let _ = nix::unistd::dup2(&null, &mut target);
            std::mem::forget(target);
        }
    }
}

fn send(report_to: &mut Option<File>, r: &Report) {
    if let Some(mut f) = report_to.take() {
        if let Ok(mut line) = serde_json::to_vec(r) {
            line.push(b'\n');
            let _ = f.write_all(&line);
        }
    }
}

fn runtime_cmd(cfg: &MonitorConfig) -> Command {
    let mut c = Command::new(&cfg.runtime);
    if let Some(root) = &cfg.runtime_root {
        c.arg("--root").arg(root);
    }
    c.arg("--log")
        .arg(&cfg.runtime_log)
        .args(["--log-format", "json"]);
    c
}

/// How a runtime command ended, as the message the caller gets when it failed.
fn runtime_outcome(
    cfg: &MonitorConfig,
    verb: &str,
    status: io::Result<std::process::ExitStatus>,
) -> Result<(), String> {
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!(
            "{} {verb}: {}",
            cfg.runtime.display(),
            runtime_error(cfg, &format!("exited with {s}"))
        )),
        Err(e) => Err(format!("running {} {verb}: {e}", cfg.runtime.display())),
    }
}

/// The last error message the runtime logged.
fn runtime_error(cfg: &MonitorConfig, fallback: &str) -> String {
    let text = std::fs::read_to_string(&cfg.runtime_log).unwrap_or_default();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(String::from))
        .unwrap_or_else(|| fallback.to_string())
}

/// The monitor proper; returns its exit code.
fn monitor(cfg: &MonitorConfig, report: OwnedFd) -> i32 {
    let mut report = Some(File::from(report));
    let _ = std::fs::write(&cfg.monitor_pid_file, format!("{}\n", std::process::id()));
    let fail = |report: &mut Option<File>, message: String| {
        send(
            report,
            &Report {
                pid: -1,
                message: Some(message),
            },
        );
        1
    };
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return fail(&mut report, format!("becoming a subreaper: {e}"));
    }
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGHUP);
    if let Err(e) = mask.thread_block() {
        return fail(&mut report, format!("blocking signals: {e}"));
    }
    let sigfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
        Ok(s) => s,
        Err(e) => return fail(&mut report, format!("creating a signalfd: {e}")),
    };
    let pipes = (|| -> nix::Result<_> { Ok((nix::unistd::pipe()?, nix::unistd::pipe()?)) })();
    let ((out_r, out_w), (err_r, err_w)) = match pipes {
        Ok(p) => p,
        Err(e) => return fail(&mut report, format!("creating the output pipes: {e}")),
    };
    // The log opens before anything is created: a bad --log-path fails cleanly.
    let open_log = |p: &Path| OpenOptions::new().create(true).append(true).open(p);
    let mut log = match open_log(&cfg.log_path) {
        Ok(f) => CriLog::new(f, cfg.max_line),
        Err(e) => {
            return fail(
                &mut report,
                format!("opening the log {}: {e}", cfg.log_path.display()),
            )
        }
    };
    let _ = std::fs::remove_file(&cfg.runtime_log);
    let (stdin_for_runtime, mut stdin_w) = if cfg.stdin {
        match nix::unistd::pipe() {
            Ok((r, w)) => {
                let _ = nix::fcntl::fcntl(
                    &w,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                );
                (Stdio::from(r), Some(File::from(w)))
            }
            Err(e) => return fail(&mut report, format!("creating the stdin pipe: {e}")),
        }
    } else {
        (Stdio::null(), None)
    };
    // Listening before the pid is reported: the caller may attach right away.
    let listener = match &cfg.attach_socket {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            match std::os::unix::net::UnixListener::bind(path) {
                Ok(l) => {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
                    let _ = l.set_nonblocking(true);
                    Some(l)
                }
                Err(e) => {
                    return fail(&mut report, format!("listening on {}: {e}", path.display()))
                }
            }
        }
        None => None,
    };
    // std resets the signal mask of the child, so runc and the container start clean.
    let created = runtime_cmd(cfg)
        .arg("create")
        .arg("--bundle")
        .arg(&cfg.bundle)
        .arg("--pid-file")
        .arg(&cfg.pid_file)
        .arg(&cfg.id)
        .stdin(stdin_for_runtime)
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .status();
    if let Err(m) = runtime_outcome(cfg, "create", created) {
        return fail(&mut report, m);
    }
    let pid: i32 = match std::fs::read_to_string(&cfg.pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        Some(p) => p,
        None => return fail(&mut report, format!("no pid in {}", cfg.pid_file.display())),
    };
    if cfg.start {
        let started = runtime_cmd(cfg)
            .arg("start")
            .arg(&cfg.id)
            .stdin(Stdio::null())
            .status();
        if let Err(m) = runtime_outcome(cfg, "start", started) {
            return fail(&mut report, m);
        }
    }
    let started = SystemTime::now();
    // The cgroup outlives the container until the runtime deletes it, so its OOM
    // counter can be compared after the exit.
    let cgroup = memory_cgroup(pid);
    let oom_before = cgroup.as_deref().map(oom_kills).unwrap_or(0);
    send(&mut report, &Report { pid, message: None });

    let mut log_size = log.get_mut().metadata().map(|m| m.len()).unwrap_or(0);
    let mut status: Option<(Option<i32>, Option<i32>)> = None;
    let mut open = [Some(File::from(out_r)), Some(File::from(err_r))];
    let mut clients: Vec<AttachClient> = Vec::new();
    let mut stdin_backlog: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if status.is_some() && open.iter().all(Option::is_none) {
            break;
        }
        use nix::poll::{PollFd, PollFlags};
        // Slots: 0 signals, 1-2 output pipes, 3 listener, 4 stdin, 5.. clients.
        let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
        let mut slots = vec![Slot::Signals];
        for (i, f) in open.iter().enumerate() {
            if let Some(f) = f {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                slots.push(Slot::Output(i));
            }
        }
        if let Some(l) = &listener {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            slots.push(Slot::Listener);
        }
        if let (Some(w), false) = (&stdin_w, stdin_backlog.is_empty()) {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLOUT));
            slots.push(Slot::Stdin);
        }
        for (k, c) in clients.iter().enumerate() {
            let mut ev = PollFlags::POLLIN;
            if !c.out.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.stream.as_fd(), ev));
            slots.push(Slot::Client(k));
        }
        // Once the container is gone, give its pipes a moment to drain, no more.
        let timeout = if status.is_some() {
            nix::poll::PollTimeout::from(1000u16)
        } else {
            nix::poll::PollTimeout::NONE
        };
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) => break,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<(Slot, PollFlags)> = fds
            .iter()
            .zip(slots)
            .filter_map(|(f, s)| f.revents().filter(|r| !r.is_empty()).map(|r| (s, r)))
            .collect();
        drop(fds);
        let mut dead_clients = Vec::new();
        for (slot, revents) in ready {
            match slot {
                Slot::Output(i) => {
                    let stream = if i == 0 {
                        Stream::Stdout
                    } else {
                        Stream::Stderr
                    };
                    let n = match open[i].as_mut().map(|f| f.read(&mut buf)) {
                        Some(Ok(n)) => n,
                        _ => 0,
                    };
                    if n == 0 {
                        open[i] = None;
                        continue;
                    }
                    let records = log.records(stream, &buf[..n], SystemTime::now());
                    let mut records = &records[..];
                    if let Some(max) = cfg.log_size_max {
                        if log_size + records.len() as u64 > max {
                            let _ = log.get_mut().set_len(0);
                            log_size = 0;
                            records = newest_within(records, max);
                        }
                    }
                    if log.get_mut().write_all(records).is_ok() {
                        log_size += records.len() as u64;
                    }
                    let kind = if i == 0 {
                        attach::STDOUT
                    } else {
                        attach::STDERR
                    };
                    let frame = attach::encode(kind, &buf[..n]);
                    for (k, c) in clients.iter_mut().enumerate() {
                        if !c.send(&frame) {
                            dead_clients.push(k);
                        }
                    }
                }
                Slot::Listener => {
                    if let Some(l) = &listener {
                        while let Ok((stream, _)) = l.accept() {
                            let _ = stream.set_nonblocking(true);
                            clients.push(AttachClient {
                                stream,
                                inbuf: Vec::new(),
                                out: Vec::new(),
                            });
                        }
                    }
                }
                Slot::Stdin => flush_stdin(&mut stdin_w, &mut stdin_backlog),
                Slot::Client(k) => {
                    let c = &mut clients[k];
                    if revents.contains(PollFlags::POLLOUT) && !c.flush() {
                        dead_clients.push(k);
                        continue;
                    }
                    if !revents
                        .intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                    {
                        continue;
                    }
                    let frames = match c.stream.read(&mut buf) {
                        Ok(0) => {
                            dead_clients.push(k);
                            continue;
                        }
                        Ok(n) => {
                            c.inbuf.extend_from_slice(&buf[..n]);
                            attach::decode(&mut c.inbuf)
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => Err(e),
                    };
                    let Ok(frames) = frames else {
                        dead_clients.push(k);
                        continue;
                    };
                    for (kind, payload) in frames {
                        match kind {
                            attach::STDIN if stdin_w.is_some() => {
                                stdin_backlog.extend_from_slice(&payload);
                                flush_stdin(&mut stdin_w, &mut stdin_backlog);
                            }
                            attach::CLOSE_STDIN => {
                                stdin_w = None;
                                stdin_backlog.clear();
                            }
                            // Without a terminal there is nothing to resize.
                            _ => {}
                        }
                    }
                }
                Slot::Signals => {
                    while let Ok(Some(info)) = sigfd.read_signal() {
                        if info.ssi_signo == Signal::SIGHUP as u32 {
                            // Log rotation: the file was moved away; start a new one.
                            if let Ok(f) = open_log(&cfg.log_path) {
                                log_size = f.metadata().map(|m| m.len()).unwrap_or(0);
                                log = CriLog::new(f, cfg.max_line);
                            }
                        }
                    }
                    loop {
                        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => {
                                status = Some((Some(code), None))
                            }
                            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                                status = Some((None, Some(sig as i32)))
                            }
                            Ok(WaitStatus::StillAlive) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
            }
        }
        dead_clients.sort_unstable();
        dead_clients.dedup();
        for k in dead_clients.into_iter().rev() {
            clients.remove(k);
        }
    }
    let (code, signal) = status.unwrap_or((None, None));
    let oom = cgroup.as_deref().is_some_and(|c| oom_kills(c) > oom_before);
    let exit = ExitStatus::new(code, signal, oom, started, SystemTime::now());
    let written = exit.write_to(&cfg.exit_file);
    // The socket goes first (no one new can attach to a finished container), then the
    // attached clients learn the status.
    drop(listener);
    if let Some(p) = &cfg.attach_socket {
        let _ = std::fs::remove_file(p);
    }
    if let Ok(json) = serde_json::to_vec(&exit) {
        let frame = attach::encode(attach::EXIT, &json);
        for mut c in clients {
            let _ = c.stream.set_nonblocking(false);
            let _ = c
                .stream
                .set_write_timeout(Some(std::time::Duration::from_secs(1)));
            c.out.extend_from_slice(&frame);
            let _ = c.stream.write_all(&c.out);
        }
    }

    if cfg.cleanup {
        let _ = runtime_cmd(cfg)
            .arg("delete")
            .arg("--force")
            .arg(&cfg.id)
            .stdin(Stdio::null())
            .status();
    }
    if written.is_ok() {
        0
    } else {
        1
    }
}

/// What a poll slot watches.
#[derive(Clone, Copy)]
enum Slot {
    Signals,
    Output(usize),
    Listener,
    Stdin,
    Client(usize),
}

/// An attached client: its socket, a partial incoming frame, unsent output.
struct AttachClient {
    stream: std::os::unix::net::UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
}

impl AttachClient {
    /// Queues a frame and writes what the socket takes; false when the client is
    /// gone or too far behind.
    fn send(&mut self, frame: &[u8]) -> bool {
        self.out.extend_from_slice(frame);
        self.flush() && self.out.len() <= attach::MAX_BACKLOG
    }

    fn flush(&mut self) -> bool {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return false,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }
}

/// Writes what the container's stdin pipe takes, keeping the rest (bounded).
fn flush_stdin(w: &mut Option<File>, backlog: &mut Vec<u8>) {
    let Some(f) = w else {
        backlog.clear();
        return;
    };
    while !backlog.is_empty() {
        match f.write(backlog) {
            Ok(n) if n > 0 => {
                backlog.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // The container closed its stdin.
            _ => {
                *w = None;
                backlog.clear();
                return;
            }
        }
    }
    if backlog.len() > attach::MAX_BACKLOG {
        backlog.drain(..backlog.len() - attach::MAX_BACKLOG);
    }
}

/// The newest whole records of `records` that fit in `max` bytes.
fn newest_within(records: &[u8], max: u64) -> &[u8] {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if records.len() <= max {
        return records;
    }
    let cut = records.len() - max;
    // Start after the first record boundary at or past the cut.
    match records[cut.saturating_sub(1)..]
        .iter()
        .position(|&b| b == b'\n')
    {
        Some(i) => &records[(cut.saturating_sub(1) + i + 1).min(records.len())..],
        None => &[],
    }
}

/// The container's memory cgroup directory, from /proc/PID/cgroup: the v1 `memory`
/// controller's, or the v2 unified one.
fn memory_cgroup(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            return Some(Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')));
        }
        if controllers.is_empty() {
            v2 = Some(Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')));
        }
    }
    v2.filter(|p| p.join("memory.events").exists())
}

/// The cgroup's OOM kill count: `oom_kill` in v2's memory.events or v1's
/// memory.oom_control.
fn oom_kills(cgroup: &Path) -> u64 {
    ["memory.events", "memory.oom_control"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(cgroup.join(f)).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
                .collect::<Vec<u64>>()
        })
        .max()
        .unwrap_or(0)
}

/// Writes `report` as one JSON line to the inherited descriptor `fd` (`--sync-fd`)
/// and closes it.
pub fn report_to_fd(fd: i32, report: &Report) -> io::Result<()> {
    use std::os::fd::FromRawFd;
    // SAFETY: borrowed only for the F_GETFD probe, which is harmless on any number.
    let probe = fd >= 0
        && nix::fcntl::fcntl(
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .is_ok();
    if !probe {
        return Err(io::Error::other(format!(
            "--sync-fd {fd} is not an open descriptor"
        )));
    }
    // SAFETY: the descriptor was handed to this process for exactly this use and is
    // checked open above; nothing else in ctrmon owns it.
    let mut f = unsafe { File::from_raw_fd(fd) };
    let mut line = serde_json::to_vec(report).map_err(io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::newest_within;

    #[test]
    fn newest_records_that_fit() {
        let r = b"aaaa\nbbbb\ncccc\n";
        assert_eq!(newest_within(r, 100), r);
        assert_eq!(newest_within(r, 10), b"bbbb\ncccc\n");
        assert_eq!(newest_within(r, 9), b"cccc\n");
        assert_eq!(newest_within(r, 3), b"");
    }
}
