//! The monitor process: detaches from its caller, runs `runtime create` (and `start`)
//! with pipes for the container's stdout and stderr, reports the container pid — or
//! the runtime's error — as one JSON line, then, as the container's subreaper, copies
//! its output into the CRI log and writes the exit file when it ends.
//!
//! Single-threaded: one `poll(2)` over the output pipes and a signalfd (SIGCHLD to
//! reap, SIGHUP to reopen the log). The forks happen before any thread exists:
//! [`spawn`] refuses to fork a process that has more than one.
//!
//! Once detached, the monitor has no terminal: its own diagnostics go to the file
//! [`MonitorConfig::diagnostics`] names (ctrmon's `--log-file`).

use crate::error::{sys, MonitorError};
use crate::exec::{check_process, check_process_value};
use crikit::runtime::monitor::{attach, CriLog, ExitStatus, Stream};
use crikit::runtime::runc::{Console, Runtime};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::SystemTime;

/// What to monitor.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// What to run: a new container or a process in a running one.
    pub launch: Launch,
    /// Give the process a terminal: the runtime hands over the pty master through a
    /// console socket; its output is logged as stdout. Must match `process.terminal`.
    pub tty: bool,
    /// The container id.
    pub id: String,
    /// The OCI runtime (runc) and its root.
    pub runtime: Runtime,
    /// The CRI log file, if output is logged.
    pub log_path: Option<PathBuf>,
    /// Where the exit status goes, if anywhere (attach clients get it too).
    pub exit_file: Option<PathBuf>,
    /// Where the runtime writes the container's (or exec'd process's) pid.
    pub pid_file: PathBuf,
    /// Where the runtime writes its own diagnostics (JSON lines).
    pub runtime_log: PathBuf,
    /// Where the monitor writes its own pid (to signal it: SIGHUP reopens the log).
    pub monitor_pid_file: PathBuf,
    /// Also start the container.
    pub start: bool,
    /// Run `runtime delete` after the container exits.
    pub cleanup: bool,
    /// Created once that delete has succeeded, if given: the runtime holds nothing
    /// more of the container.
    pub deleted_file: Option<PathBuf>,
    /// Lines longer than this are split into partial records.
    pub max_line: usize,
    /// When the log would grow past this many bytes it is truncated and starts over,
    /// as conmon does with --log-size-max.
    pub log_size_max: Option<u64>,
    /// The attach socket to serve (see [`super::attach`]).
    pub attach_socket: Option<PathBuf>,
    /// Launch only once a first attach client has connected, waiting at most this
    /// long: none of the process's output is produced before someone reads it (an
    /// exec streamed to kubectl or crictl).
    pub attach_wait: Option<std::time::Duration>,
    /// Give the container a stdin pipe that attach clients write to.
    pub stdin: bool,
    /// Put the monitor in `PARENT/ctrmon-ID` or a scope of the slice PARENT (see
    /// [`crikit::runtime::monitor::cgroup`]).
    pub cgroup_parent: Option<crikit::runtime::monitor::cgroup::Parent>,
    /// Where the detached monitor's own diagnostics (its stderr) go; /dev/null
    /// without one.
    pub diagnostics: Option<PathBuf>,
}

/// What the monitor runs.
#[derive(Debug, Clone)]
pub enum Launch {
    /// `runtime create --bundle DIR`: a new container; with `restore`, `runtime
    /// restore` instead, which makes it from a checkpoint and leaves it running.
    Create {
        /// The bundle directory.
        bundle: PathBuf,
        /// The checkpoint to restore the container from.
        restore: Option<crikit::runtime::runc::Checkpoint>,
    },
    /// `runtime exec --detach --process FILE`: a process in the running container,
    /// served like a container (interactive exec).
    Exec {
        /// A runtime-spec `process` object.
        process: PathBuf,
    },
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

/// Checks the bundle before anything forks, so bad input fails in the caller with
/// a clear message (the runtime checks the rest, and its error reaches the caller
/// too). Returns whether its process asks for a terminal.
///
/// The check reads JSON values rather than a typed spec: the monitor is one binary
/// per container, and a typed runtime spec (with its validating regexes) would
/// double its size for what two lookups do.
pub fn check_bundle(bundle: &Path) -> Result<bool, MonitorError> {
    let bad = |reason: String| MonitorError::Bundle {
        path: bundle.to_path_buf(),
        reason: format!("config.json: {reason}"),
    };
    let data = std::fs::read(bundle.join("config.json")).map_err(|e| bad(e.to_string()))?;
    let spec: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| bad(format!("not JSON: {e}")))?;
    if !spec.is_object() {
        return Err(bad("not a runtime spec (a JSON object)".into()));
    }
    if !spec["ociVersion"].is_string() {
        return Err(bad("no ociVersion: not a runtime spec".into()));
    }
    if !spec["root"]["path"].is_string() {
        return Err(bad("no root.path".into()));
    }
    match &spec["process"] {
        serde_json::Value::Null => Err(bad("no process to run".into())),
        p => check_process_value(p).map_err(|r| bad(format!("process: {r}"))),
    }
}

/// Checks what `cfg` launches, and that `cfg.tty` matches the process's `terminal`.
pub fn check_launch(cfg: &MonitorConfig) -> Result<(), MonitorError> {
    if let Some(parent) = &cfg.cgroup_parent {
        parent
            .check()
            .map_err(|reason| MonitorError::Usage { reason })?;
    }
    let (terminal, what) = match &cfg.launch {
        Launch::Create { bundle, .. } => (check_bundle(bundle)?, "config.json"),
        Launch::Exec { process } => (check_process(process)?, "the process file"),
    };
    let mismatch = match (terminal, cfg.tty) {
        (true, false) => Some(format!(
            "process.terminal is true in {what}; run with --tty"
        )),
        (false, true) => Some(format!("--tty needs process.terminal true in {what}")),
        _ => None,
    };
    match (mismatch, &cfg.launch) {
        (None, _) => Ok(()),
        (Some(reason), Launch::Create { bundle, .. }) => Err(MonitorError::Bundle {
            path: bundle.clone(),
            reason,
        }),
        (Some(reason), Launch::Exec { process }) => Err(MonitorError::Process {
            path: process.clone(),
            reason,
        }),
    }
}

/// Where [`spawn`] returns.
#[derive(Debug)]
pub enum Spawned {
    /// In the caller: what the monitor reported.
    Caller(Report),
    /// In one of the forked processes, once its work is done: exit with this code
    /// at once, without touching anything the caller's process image holds.
    Exit(i32),
}

/// Refuses to go on in a process that runs more than one thread (a fork copies only
/// the caller's); with no /proc to count with, the caller's word is all there is.
pub fn single_threaded() -> Result<(), MonitorError> {
    match threads() {
        0 | 1 => Ok(()),
        threads => Err(MonitorError::Threaded { threads }),
    }
}

/// [`single_threaded`], once threads this process ended (an event loop's, shut
/// down) have left, waiting at most `limit` for them.
pub fn single_threaded_within(limit: std::time::Duration) -> Result<(), MonitorError> {
    crikit::sync::poll_until(limit, std::time::Duration::from_millis(1), || {
        threads() <= 1
    });
    single_threaded()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Detaches a monitor for `cfg` (new session, double fork) and returns, in the
/// caller, what it reported; in the forked processes it returns
/// [`Spawned::Exit`] once they are done.
///
/// Forking is sound only in a single-threaded process: a process with more
/// threads is refused ([`MonitorError::Threaded`]), so call it before starting any
/// (ctrmon does, before it reads its log settings into a subscriber thread; crid
/// runs ctrmon as a program instead).
pub fn spawn(cfg: &MonitorConfig) -> Result<Spawned, MonitorError> {
    check_launch(cfg)?;
    single_threaded()?;
    let (r, w) = nix::unistd::pipe().map_err(|e| sys("creating the report pipe")(e.into()))?;
    // SAFETY: the process is single-threaded here (checked just above, and nothing
    // in between starts a thread), so the child may run arbitrary code.
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
                    runtime: cfg.runtime.path.display().to_string(),
                    message: "the monitor ended without reporting".into(),
                });
            }
            serde_json::from_str(line.trim())
                .map(Spawned::Caller)
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
                    detach_stdio(cfg.diagnostics.as_deref());
                    Ok(Spawned::Exit(monitor(cfg, w)))
                }
                // The intermediate process: done once the monitor is forked off.
                _ => Ok(Spawned::Exit(0)),
            }
        }
    }
}

/// Points stdin and stdout at /dev/null, and stderr at the diagnostics file when
/// there is one (appended to; /dev/null when it cannot be opened).
fn detach_stdio(diagnostics: Option<&Path>) {
    let Ok(null) = File::options().read(true).write(true).open("/dev/null") else {
        return;
    };
    let err = diagnostics.and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok());
    for fd in 0..3 {
        let source = match (&err, fd) {
            (Some(f), 2) => f.as_fd(),
            _ => null.as_fd(),
        };
        // SAFETY: 0..3 are this process's standard descriptors; dup2 replaces
        // them atomically and nothing holds Rust handles to them.
        let mut target = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = nix::unistd::dup2(source, &mut target);
        std::mem::forget(target);
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

/// How a runtime command ended, as the message the caller gets when it failed.
fn runtime_outcome(
    cfg: &MonitorConfig,
    verb: &str,
    status: io::Result<std::process::ExitStatus>,
) -> Result<(), String> {
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => {
            let mut why = runtime_error(cfg, &format!("exited with {s}"));
            if let Launch::Create {
                restore: Some(from),
                ..
            } = &cfg.launch
            {
                if let Some(e) = (verb == "restore")
                    .then(|| crikit::runtime::runc::criu_log_errors(&from.work.join("restore.log")))
                    .flatten()
                {
                    why = format!("{why}: {e}");
                }
            }
            Err(format!("{} {verb}: {why}", cfg.runtime.path.display()))
        }
        Err(e) => Err(format!(
            "running {} {verb}: {e}",
            cfg.runtime.path.display()
        )),
    }
}

/// The last error message the runtime logged.
fn runtime_error(cfg: &MonitorConfig, fallback: &str) -> String {
    crikit::runtime::runc::last_error(&cfg.runtime_log).unwrap_or_else(|| fallback.to_string())
}

/// How long output may still come once the container's process has ended.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The capacity asked for the output pipes.
const PIPE_SIZE: nix::libc::c_int = 1 << 20;

/// The monitor proper; returns its exit code.
fn monitor(cfg: &MonitorConfig, report: OwnedFd) -> i32 {
    let mut report = Some(File::from(report));
    if let Err(e) = std::fs::write(&cfg.monitor_pid_file, format!("{}\n", std::process::id())) {
        tracing::warn!("writing {}: {e}", cfg.monitor_pid_file.display());
    }
    let (mut m, sigfd, _cgroup_joined) = match Monitor::set_up(cfg) {
        Ok(set) => set,
        Err(message) => {
            // The joined cgroup, if any, is left as its guard drops.
            tracing::error!("container {}: {message}", cfg.id);
            send(
                &mut report,
                &Report {
                    pid: -1,
                    message: Some(message),
                },
            );
            return 1;
        }
    };
    let started = SystemTime::now();
    // The cgroup outlives the container until the runtime deletes it, so its OOM
    // counter can be compared after the exit.
    let cgroup = memory_cgroup(m.pid);
    let oom_before = cgroup.as_deref().map(oom_kills).unwrap_or(0);
    m.cgroup = cgroup.clone();
    m.oom_watch = cgroup.as_deref().and_then(|c| OomWatch::new(c, oom_before));
    send(
        &mut report,
        &Report {
            pid: m.pid,
            message: None,
        },
    );
    trim_heap();
    m.serve(&sigfd);
    // v2's count as watched (read once more now); v1's cgroup stays until the
    // runtime deletes it, so its count is read after the exit.
    let oom = match m.oom_watch.as_mut() {
        Some(w) => w.killed(),
        None => cgroup.as_deref().is_some_and(|c| oom_kills(c) > oom_before),
    };
    m.finish(started, oom)
}

/// A running monitor: the container's stdio, its log, its attach clients.
struct Monitor<'a> {
    cfg: &'a MonitorConfig,
    /// The container's (or exec'd process's) pid.
    pid: i32,
    io: ProcessIo,
    log: Option<CriLog<File>>,
    log_size: u64,
    listener: Option<UnixListener>,
    clients: Vec<AttachClient>,
    stdin_backlog: Vec<u8>,
    /// How the process ended: (exit code, signal).
    status: Option<(Option<i32>, Option<i32>)>,
    /// Once it has ended, how long its pipes may still drain.
    drain_until: Option<std::time::Instant>,
    /// When it ended, for the exit file.
    ended_at: Option<SystemTime>,
    /// The container's memory cgroup (whose processes outlive its init, in a shared
    /// PID namespace).
    cgroup: Option<PathBuf>,
    /// OOM kills seen as they happen: a systemd scope's cgroup goes as soon as it
    /// is empty, before the counter could be read after the exit.
    oom_watch: Option<OomWatch>,
    buf: Vec<u8>,
    records: Vec<u8>,
}

impl<'a> Monitor<'a> {
    /// Becomes a subreaper, opens the log and the attach socket, joins the monitor
    /// cgroup, runs the runtime; the error is the message for the caller.
    fn set_up(
        cfg: &'a MonitorConfig,
    ) -> Result<
        (
            Monitor<'a>,
            SignalFd,
            Option<crikit::runtime::monitor::cgroup::Joined>,
        ),
        String,
    > {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| format!("becoming a subreaper: {e}"))?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.add(Signal::SIGHUP);
        mask.thread_block()
            .map_err(|e| format!("blocking signals: {e}"))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| format!("creating a signalfd: {e}"))?;
        // The log opens before anything is created: a bad --log-path fails cleanly.
        let log = match &cfg.log_path {
            Some(path) => Some(CriLog::new(
                open_log(path).map_err(|e| format!("opening the log {}: {e}", path.display()))?,
                cfg.max_line,
            )),
            None => None,
        };
        let _ = std::fs::remove_file(&cfg.runtime_log);
        // Listening before the pid is reported: the caller may attach right away.
        let listener = match &cfg.attach_socket {
            Some(path) => {
                Some(listen(path).map_err(|e| format!("listening on {}: {e}", path.display()))?)
            }
            None => None,
        };
        let first_client = match (&listener, cfg.attach_wait) {
            (Some(l), Some(wait)) => Some(accept_within(l, wait).map_err(|e| {
                format!("waiting for an attach client for {}s: {e}", wait.as_secs())
            })?),
            _ => None,
        };
        let joined = match &cfg.cgroup_parent {
            Some(parent) => parent.place(&cfg.id, "monitor of container")?,
            None => None,
        };
        let io = launch(cfg)?;
        let pid: i32 = std::fs::read_to_string(&cfg.pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("no pid in {}", cfg.pid_file.display()))?;
        // A restored container runs already.
        if let (Launch::Create { restore: None, .. }, true) = (&cfg.launch, cfg.start) {
            let started = cfg
                .runtime
                .start_logged(&cfg.runtime_log, &cfg.id)
                .stdin(Stdio::null())
                .status();
            runtime_outcome(cfg, "start", started)?;
        }
        let log_size = log
            .as_ref()
            .and_then(|l: &CriLog<File>| l.get_ref().metadata().ok())
            .map_or(0, |m| m.len());
        let m = Monitor {
            cfg,
            pid,
            io,
            log,
            log_size,
            listener,
            clients: first_client
                .into_iter()
                .map(|stream| AttachClient {
                    stream,
                    inbuf: Vec::new(),
                    out: Vec::new(),
                })
                .collect(),
            stdin_backlog: Vec::new(),
            status: None,
            drain_until: None,
            ended_at: None,
            cgroup: None,
            oom_watch: None,
            buf: vec![0u8; 64 * 1024],
            records: Vec::new(),
        };
        Ok((m, sigfd, joined))
    }

    /// The poll loop: output to the log and the clients, clients' input to the
    /// container, signals; until the process has ended and its output drained.
    fn serve(&mut self, sigfd: &SignalFd) {
        use nix::poll::{PollFd, PollFlags};
        loop {
            if self.status.is_some() && self.io.outputs.iter().all(Option::is_none) {
                return;
            }
            let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
            let mut slots = vec![Slot::Signals];
            for (i, f) in self.io.outputs.iter().enumerate() {
                if let Some(f) = f {
                    fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                    slots.push(Slot::Output(i));
                }
            }
            if let Some(l) = &self.listener {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                slots.push(Slot::Listener);
            }
            if let Some(w) = &self.oom_watch {
                fds.push(PollFd::new(w.inotify.as_fd(), PollFlags::POLLIN));
                slots.push(Slot::Oom);
            }
            if let (Some(w), false) = (&self.io.stdin, self.stdin_backlog.is_empty()) {
                fds.push(PollFd::new(w.as_fd(), PollFlags::POLLOUT));
                slots.push(Slot::Stdin);
            }
            for (k, c) in self.clients.iter().enumerate() {
                let mut ev = PollFlags::POLLIN;
                if !c.out.is_empty() {
                    ev |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.stream.as_fd(), ev));
                slots.push(Slot::Client(k));
            }
            // Once the container is gone, its pipes get a second to drain, no more:
            // a process it left behind that keeps writing must not keep the exit
            // status from its callers.
            let timeout = match self.drain_until {
                Some(end) => {
                    let left = end.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    nix::poll::PollTimeout::try_from(left).unwrap_or(nix::poll::PollTimeout::ZERO)
                }
                None => nix::poll::PollTimeout::NONE,
            };
            match nix::poll::poll(&mut fds, timeout) {
                Ok(0) => return,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("container {}: poll: {e}", self.cfg.id);
                    return;
                }
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
                    Slot::Output(i) => self.on_output(i, &mut dead_clients),
                    Slot::Listener => self.on_accept(),
                    Slot::Stdin => flush_stdin(&mut self.io.stdin, &mut self.stdin_backlog),
                    Slot::Client(k) => {
                        if !self.on_client(k, revents) {
                            dead_clients.push(k);
                        }
                    }
                    Slot::Signals => self.on_signals(sigfd),
                    Slot::Oom => {
                        if let Some(w) = &mut self.oom_watch {
                            w.update();
                        }
                    }
                }
            }
            dead_clients.sort_unstable();
            dead_clients.dedup();
            for k in dead_clients.into_iter().rev() {
                self.clients.remove(k);
            }
        }
    }

    /// Output ready on stream `i`: into the log, and to every client.
    fn on_output(&mut self, i: usize, dead_clients: &mut Vec<usize>) {
        let n = match self.io.outputs[i].as_mut().map(|f| f.read(&mut self.buf)) {
            Some(Ok(n)) => n,
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
            // EOF, or EIO from a pty master once every slave is closed.
            _ => 0,
        };
        if n == 0 {
            self.io.outputs[i] = None;
            return;
        }
        let (stream, kind) = if i == 0 {
            (Stream::Stdout, attach::STDOUT)
        } else {
            (Stream::Stderr, attach::STDERR)
        };
        if let Some(log) = &mut self.log {
            self.records.clear();
            log.records_into(&mut self.records, stream, &self.buf[..n], SystemTime::now());
            let mut records = &self.records[..];
            if let Some(max) = self.cfg.log_size_max {
                if self.log_size + records.len() as u64 > max {
                    let _ = log.get_mut().set_len(0);
                    self.log_size = 0;
                    records = newest_within(records, max);
                }
            }
            match log.get_mut().write_all(records) {
                Ok(()) => self.log_size += records.len() as u64,
                Err(e) => tracing::warn!("container {}: writing its log: {e}", self.cfg.id),
            }
        }
        if !self.clients.is_empty() {
            let frame = attach::encode(kind, &self.buf[..n]);
            for (k, c) in self.clients.iter_mut().enumerate() {
                if !c.send(&frame) {
                    dead_clients.push(k);
                }
            }
        }
    }

    /// New attach clients.
    fn on_accept(&mut self) {
        if let Some(l) = &self.listener {
            while let Ok((stream, _)) = l.accept() {
                let _ = stream.set_nonblocking(true);
                self.clients.push(AttachClient {
                    stream,
                    inbuf: Vec::new(),
                    out: Vec::new(),
                });
            }
        }
    }

    /// Client `k` is ready; false when it is gone.
    fn on_client(&mut self, k: usize, revents: nix::poll::PollFlags) -> bool {
        use nix::poll::PollFlags;
        let c = &mut self.clients[k];
        if revents.contains(PollFlags::POLLOUT) && !c.flush() {
            return false;
        }
        if !revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            return true;
        }
        let frames = match c.stream.read(&mut self.buf) {
            Ok(0) => return false,
            Ok(n) => {
                c.inbuf.extend_from_slice(&self.buf[..n]);
                attach::decode(&mut c.inbuf)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) => Err(e),
        };
        let Ok(frames) = frames else {
            return false;
        };
        for (kind, payload) in frames {
            if let Some(answer) = self.on_frame(kind, &payload) {
                if !self.clients[k].send(&answer) {
                    return false;
                }
            }
        }
        true
    }

    /// One frame from a client; what to answer it, if anything.
    fn on_frame(&mut self, kind: u8, payload: &[u8]) -> Option<Vec<u8>> {
        let io = &mut self.io;
        match kind {
            attach::STDIN if io.stdin.is_some() => {
                self.stdin_backlog.extend_from_slice(payload);
                flush_stdin(&mut io.stdin, &mut self.stdin_backlog);
            }
            attach::CLOSE_STDIN => match &io.terminal {
                // A terminal has no EOF of its own: send its EOF character, as a
                // user typing ^D would.
                Some(t) if io.stdin.is_some() => {
                    self.stdin_backlog.push(eof_char(t));
                    flush_stdin(&mut io.stdin, &mut self.stdin_backlog);
                }
                _ => {
                    io.stdin = None;
                    self.stdin_backlog.clear();
                }
            },
            attach::RESIZE if payload.len() == 4 => {
                if let Some(t) = &io.terminal {
                    let size = rustix::termios::Winsize {
                        ws_row: u16::from_be_bytes([payload[0], payload[1]]),
                        ws_col: u16::from_be_bytes([payload[2], payload[3]]),
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    let _ = rustix::termios::tcsetwinsize(t, size);
                }
            }
            attach::REOPEN_LOG => {
                let error = self.reopen_log().err().unwrap_or_default();
                return Some(attach::encode(attach::LOG_REOPENED, error.as_bytes()));
            }
            _ => {}
        }
        None
    }

    /// SIGHUP reopens the log; SIGCHLD reaps, and the container's own end starts
    /// the drain.
    fn on_signals(&mut self, sigfd: &SignalFd) {
        while let Ok(Some(info)) = sigfd.read_signal() {
            if info.ssi_signo == Signal::SIGHUP as u32 {
                let _ = self.reopen_log();
            }
        }
        loop {
            let ended = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p.as_raw() == self.pid => (Some(code), None),
                Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == self.pid => {
                    (None, Some(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            self.status = Some(ended);
            self.ended_at = Some(SystemTime::now());
            self.drain_until = Some(std::time::Instant::now() + DRAIN);
            if let Launch::Create { .. } = self.cfg.launch {
                self.kill_leftovers();
            }
        }
    }

    /// Once a container's init has ended, what it left behind in the container (in a
    /// PID namespace it shares with its pod, its init's end does not end them) is
    /// killed, as containerd does: its output then ends, and the drain with it.
    fn kill_leftovers(&self) {
        if let Some(cg) = &self.cgroup {
            let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() {
                return;
            }
        }
        if let Err(e) = self.cfg.runtime.kill(&self.cfg.id, "KILL", true) {
            tracing::debug!("container {}: killing what its init left: {e}", self.cfg.id);
        }
    }

    /// Log rotation: the file was moved away (or truncated); go on in a new one.
    fn reopen_log(&mut self) -> Result<(), String> {
        if let (Some(path), Some(l)) = (&self.cfg.log_path, self.log.as_mut()) {
            match open_log(path) {
                Ok(f) => {
                    self.log_size = f.metadata().map_or(0, |m| m.len());
                    *l = CriLog::new(f, self.cfg.max_line);
                }
                Err(e) => {
                    let e = format!("reopening the log {}: {e}", path.display());
                    tracing::warn!("{e}");
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Writes the exit file, tells the clients, cleans up; the monitor's exit code.
    fn finish(mut self, started: SystemTime, oom: bool) -> i32 {
        let cfg = self.cfg;
        let (code, signal) = self.status.unwrap_or((None, None));
        let ended = self.ended_at.unwrap_or_else(SystemTime::now);
        let exit = ExitStatus::new(code, signal, oom, started, ended);
        let mut failed = false;
        // The log's last records are written already: a reader that sees the exit
        // file sees them. The exit file goes first, so that the exit is known as
        // soon as it can be; the log is made durable right after.
        if let Some(f) = &cfg.exit_file {
            if let Err(e) = exit.write_to(f) {
                tracing::error!("container {}: writing the exit file: {e}", cfg.id);
                failed = true;
            }
        }
        if let Some(log) = &mut self.log {
            let _ = log.get_mut().sync_data();
        }
        // The socket goes first (no one new can attach to a finished container),
        // then the attached clients learn the status.
        drop(self.listener.take());
        if let Some(p) = &cfg.attach_socket {
            let _ = std::fs::remove_file(p);
        }
        if let Ok(json) = serde_json::to_vec(&exit) {
            let frame = attach::encode(attach::EXIT, &json);
            for mut c in std::mem::take(&mut self.clients) {
                let _ = c.stream.set_nonblocking(false);
                let _ = c
                    .stream
                    .set_write_timeout(Some(std::time::Duration::from_secs(1)));
                c.out.extend_from_slice(&frame);
                let _ = c.stream.write_all(&c.out);
            }
        }
        match cfg.launch {
            Launch::Create { .. } if cfg.cleanup => {
                let deleted = cfg
                    .runtime
                    .delete_logged(&cfg.runtime_log, &cfg.id)
                    .stdin(Stdio::null())
                    .status();
                match runtime_outcome(cfg, "delete", deleted) {
                    Ok(()) => {
                        if let Some(p) = &cfg.deleted_file {
                            let _ = File::create(p);
                        }
                    }
                    Err(m) => tracing::warn!("container {}: {m}", cfg.id),
                }
            }
            // An exec leaves nothing behind but what its caller named.
            Launch::Exec { .. } => {
                let _ = std::fs::remove_file(&cfg.runtime_log);
                let _ = std::fs::remove_file(&cfg.monitor_pid_file);
            }
            _ => {}
        }
        i32::from(failed)
    }
}

/// Gives back the heap that set-up left behind (the caller's argument parsing,
/// inherited through fork, and the runtime's spawn): the monitor lives as long as
/// its container, so what it holds while idle is what it costs.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only returns free memory to the
    // kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn open_log(p: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

/// Binds the attach socket, readable and writable by its owner only.
/// The first client of `l`, within `wait`; non-blocking, as the loop wants it.
fn accept_within(
    l: &UnixListener,
    wait: std::time::Duration,
) -> io::Result<std::os::unix::net::UnixStream> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let ms = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(l.as_fd(), PollFlags::POLLIN)];
    if nix::poll::poll(&mut fds, ms)? == 0 {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "no client came"));
    }
    l.set_nonblocking(false)?;
    let (stream, _) = l.accept()?;
    l.set_nonblocking(true)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

fn listen(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let (_dir, short) = attach::short_path(path)?;
    let l = UnixListener::bind(short)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// The process's stdio as the monitor holds it.
struct ProcessIo {
    /// What it writes: the stdout and stderr pipes, or the pty master (as stdout).
    outputs: [Option<File>; 2],
    /// Where attach clients' stdin goes: a pipe, or the pty master.
    stdin: Option<File>,
    /// The pty master, for resizes.
    terminal: Option<File>,
}

/// Runs `runtime create` (or `exec --detach`) and returns the process's stdio.
fn launch(cfg: &MonitorConfig) -> Result<ProcessIo, String> {
    let command = |console: Console| match &cfg.launch {
        Launch::Create {
            bundle,
            restore: None,
        } => (
            cfg.runtime
                .create(&cfg.runtime_log, bundle, &cfg.pid_file, console, &cfg.id),
            "create",
        ),
        Launch::Create {
            bundle,
            restore: Some(from),
        } => (
            cfg.runtime.restore(
                &cfg.runtime_log,
                bundle,
                from,
                &cfg.pid_file,
                console,
                &cfg.id,
            ),
            "restore",
        ),
        Launch::Exec { process } => (
            cfg.runtime
                .exec_detached(&cfg.runtime_log, process, &cfg.pid_file, console, &cfg.id),
            "exec",
        ),
    };
    if cfg.tty {
        let console = ConsoleSocket::new().map_err(|e| format!("console socket: {e}"))?;
        let socket = console.path();
        let (mut cmd, verb) = command(Console::Socket(&socket));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        runtime_outcome(cfg, verb, cmd.status())?;
        let master = console.receive().map_err(|e| {
            format!(
                "receiving the terminal from {}: {e}",
                cfg.runtime.path.display()
            )
        })?;
        let _ = nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        let master = File::from(master);
        let dup = |f: &File| f.try_clone().map_err(|e| format!("terminal: {e}"));
        return Ok(ProcessIo {
            stdin: if cfg.stdin { Some(dup(&master)?) } else { None },
            terminal: Some(dup(&master)?),
            outputs: [Some(master), None],
        });
    }
    let pipe = || nix::unistd::pipe().map_err(|e| format!("creating a pipe: {e}"));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // Room for bursts: a container writing fast blocks less often, and the monitor
    // wakes less often for more. Pages are only taken while output waits; when the
    // limit (fs.pipe-max-size) is lower, the default size stays.
    for r in [&out_r, &err_r] {
        let _ = nix::fcntl::fcntl(r, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    }
    let (stdin_for_runtime, stdin) = if cfg.stdin {
        let (r, w) = pipe()?;
        let _ = nix::fcntl::fcntl(
            &w,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        (Stdio::from(r), Some(File::from(w)))
    } else {
        (Stdio::null(), None)
    };
    // std resets the signal mask of the child, so runc and the container start clean.
    let (mut cmd, verb) = command(Console::Inherit);
    cmd.stdin(stdin_for_runtime)
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    let status = cmd.status();
    // The command (and with it the write ends) is dropped here, so the pipes see EOF
    // when the process and whatever inherited them are gone.
    drop(cmd);
    runtime_outcome(cfg, verb, status)?;
    Ok(ProcessIo {
        outputs: [Some(File::from(out_r)), Some(File::from(err_r))],
        stdin,
        terminal: None,
    })
}

/// The terminal's EOF character (^D unless the container changed it).
fn eof_char(t: &File) -> u8 {
    rustix::termios::tcgetattr(t)
        .map(|a| a.special_codes[rustix::termios::SpecialCodeIndex::VEOF])
        .unwrap_or(4)
}

/// The socket the runtime sends the pty master through (`--console-socket`), in a
/// private directory of its own: socket paths must stay short.
struct ConsoleSocket {
    dir: tempfile::TempDir,
    listener: UnixListener,
}

impl ConsoleSocket {
    fn new() -> io::Result<ConsoleSocket> {
        let dir = tempfile::Builder::new().prefix("ctrmon-tty").tempdir()?;
        let listener = UnixListener::bind(dir.path().join("sock"))?;
        Ok(ConsoleSocket { dir, listener })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The master the runtime sent (it has done so before `create` returns).
    fn receive(&self) -> io::Result<OwnedFd> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::AsRawFd;
        self.listener.set_nonblocking(true)?;
        let (stream, _) = self.listener.accept().map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::other("it did not connect")
            } else {
                e
            }
        })?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let mut name = [0u8; 4096];
        let mut iov = [io::IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut master = None;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: SCM_RIGHTS installed these descriptors in this process
                    // just now; nothing else refers to them.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if master.is_none() {
                        master = Some(owned);
                    }
                }
            }
        }
        master.ok_or_else(|| io::Error::other("no descriptor in its message"))
    }
}

/// What a poll slot watches.
#[derive(Clone, Copy)]
enum Slot {
    Signals,
    Oom,
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

/// The v2 `memory.events` of the container's cgroup, watched with inotify (the
/// kernel notifies on every change): whether its `oom_kill` count has passed the
/// one at the start.
struct OomWatch {
    inotify: nix::sys::inotify::Inotify,
    cgroup: PathBuf,
    before: u64,
    killed: bool,
}

impl OomWatch {
    /// A watch of `cgroup`'s memory.events; None on v1 (whose cgroups stay until
    /// the runtime deletes them) or when it cannot be watched.
    fn new(cgroup: &Path, before: u64) -> Option<OomWatch> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let events = cgroup.join("memory.events");
        if !events.exists() {
            return None;
        }
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
        inotify.add_watch(&events, AddWatchFlags::IN_MODIFY).ok()?;
        Some(OomWatch {
            inotify,
            cgroup: cgroup.to_path_buf(),
            before,
            killed: false,
        })
    }

    /// memory.events changed: reads the count again.
    fn update(&mut self) {
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
        }
        self.killed = self.killed || oom_kills(&self.cgroup) > self.before;
    }

    /// Whether the OOM killer has killed in the cgroup since the start.
    fn killed(&mut self) -> bool {
        self.update();
        self.killed
    }
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
    use super::{check_bundle, newest_within};

    #[test]
    fn a_process_with_threads_is_not_forked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                "process": {"args": ["/bin/sh"], "cwd": "/"}}"#,
        )
        .unwrap();
        // A second thread for certain, whatever the test harness runs on.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let cfg = super::MonitorConfig {
            launch: super::Launch::Create {
                bundle: dir.path().to_path_buf(),
                restore: None,
            },
            tty: false,
            id: "t".into(),
            runtime: crikit::runtime::runc::Runtime::new("/bin/false", None),
            log_path: None,
            exit_file: None,
            pid_file: dir.path().join("pid"),
            runtime_log: dir.path().join("runtime.log"),
            monitor_pid_file: dir.path().join("ctrmon.pid"),
            start: false,
            cleanup: false,
            deleted_file: None,
            max_line: 1024,
            log_size_max: None,
            attach_socket: None,
            attach_wait: None,
            stdin: false,
            cgroup_parent: None,
            diagnostics: None,
        };
        let e = super::spawn(&cfg).unwrap_err();
        assert!(
            matches!(e, crate::error::MonitorError::Threaded { threads } if threads >= 2),
            "{e}"
        );
        assert!(
            e.to_string().starts_with("refusing to fork the monitor"),
            "{e}"
        );
        drop(tx);
        let _ = other.join();
    }

    #[test]
    fn bundle_checks_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let check = |config: &str| {
            std::fs::write(dir.path().join("config.json"), config).unwrap();
            check_bundle(dir.path()).map_err(|e| e.to_string())
        };
        let good = r#"{"ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"args": ["/bin/sh"], "cwd": "/"}}"#;
        assert_eq!(check(good), Ok(false));
        assert_eq!(
            check(&good.replace(r#""cwd""#, r#""terminal": true, "cwd""#)),
            Ok(true)
        );
        for (config, want) in [
            ("{", "not JSON"),
            ("[]", "a JSON object"),
            (r#"{"root": {"path": "r"}}"#, "no ociVersion"),
            (r#"{"ociVersion": "1", "process": {}}"#, "no root.path"),
            (
                r#"{"ociVersion": "1", "root": {"path": "r"}}"#,
                "no process",
            ),
            (
                r#"{"ociVersion": "1", "root": {"path": "r"}, "process": {"args": "sh", "cwd": "/"}}"#,
                "args must be",
            ),
            (
                r#"{"ociVersion": "1", "root": {"path": "r"}, "process": {"args": [], "cwd": "/"}}"#,
                "args must be",
            ),
            (
                r#"{"ociVersion": "1", "root": {"path": "r"}, "process": {"args": ["x"]}}"#,
                "no cwd",
            ),
            (
                r#"{"ociVersion": "1", "root": {"path": "r"}, "process": {"args": ["x"], "cwd": "/", "terminal": 1}}"#,
                "terminal must be",
            ),
        ] {
            let e = check(config).expect_err(config);
            assert!(
                e.contains(want) && e.contains("config.json"),
                "{config}: {e}"
            );
        }
        std::fs::remove_file(dir.path().join("config.json")).unwrap();
        assert!(check_bundle(dir.path()).is_err());
    }

    #[test]
    fn newest_records_that_fit() {
        let r = b"aaaa\nbbbb\ncccc\n";
        assert_eq!(newest_within(r, 100), r);
        assert_eq!(newest_within(r, 10), b"bbbb\ncccc\n");
        assert_eq!(newest_within(r, 9), b"cccc\n");
        assert_eq!(newest_within(r, 3), b"");
    }
}
