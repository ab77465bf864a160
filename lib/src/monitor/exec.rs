//! Synchronous exec in a running container, as the CRI's ExecSync needs: run
//! `RUNTIME exec --process FILE ID`, capture stdout and stderr up to a bound, and
//! kill the process (not just the runtime) when a timeout passes.

use super::run::MonitorError;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What an exec did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// Its exit code (128+N when killed by signal N).
    pub exit_code: i32,
    /// Its stdout, up to the bound.
    pub stdout: Vec<u8>,
    /// Its stderr, up to the bound.
    pub stderr: Vec<u8>,
    /// Whether output beyond the bound was dropped.
    pub truncated: bool,
    /// Whether the timeout killed it.
    pub timed_out: bool,
}

/// How to exec.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The OCI runtime.
    pub runtime: PathBuf,
    /// The runtime's `--root`.
    pub runtime_root: Option<PathBuf>,
    /// The container.
    pub id: String,
    /// A runtime-spec `process` object, as `runc exec --process` reads it.
    pub process: PathBuf,
    /// Kill the process after this long.
    pub timeout: Option<Duration>,
    /// Keep at most this many bytes of each stream.
    pub max_output: usize,
    /// Where the runtime writes the exec'd process's pid.
    pub pid_file: PathBuf,
}

/// Runs the exec and waits for it (or the timeout).
pub fn exec_sync(o: &ExecOptions) -> Result<ExecResult, MonitorError> {
    let sys =
        |action: &'static str| move |source: std::io::Error| MonitorError::Sys { action, source };
    let _ = std::fs::remove_file(&o.pid_file);
    let mut cmd = Command::new(&o.runtime);
    if let Some(r) = &o.runtime_root {
        cmd.arg("--root").arg(r);
    }
    cmd.arg("exec")
        .arg("--process")
        .arg(&o.process)
        .arg("--pid-file")
        .arg(&o.pid_file)
        .arg(&o.id);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(sys("running the runtime's exec"))?;
    let mut pipes = [
        child
            .stdout
            .take()
            .map(|p| std::fs::File::from(std::os::fd::OwnedFd::from(p))),
        child
            .stderr
            .take()
            .map(|p| std::fs::File::from(std::os::fd::OwnedFd::from(p))),
    ];
    let mut out = [Vec::new(), Vec::new()];
    let mut truncated = false;
    let mut timed_out = false;
    let deadline = o.timeout.and_then(|t| Instant::now().checked_add(t));
    // Once the runtime's exec has returned, the output gets a moment to drain: a
    // process the command left in the background may hold the pipes for ever.
    let mut drain_until: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    while pipes.iter().any(Option::is_some) {
        if drain_until.is_none() && matches!(child.try_wait(), Ok(Some(_))) {
            drain_until = Some(Instant::now() + Duration::from_secs(1));
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) && !timed_out && drain_until.is_none() {
            timed_out = true;
            // runc exec waits for the process; killing runc would leave it running.
            if let Some(pid) = std::fs::read_to_string(&o.pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            } else {
                let _ = child.kill();
            }
        }
        // Short naps while the runtime runs, to notice it return.
        let timeout = match left {
            Some(l) if !timed_out => {
                PollTimeout::try_from(l.as_millis().min(100) as i32 + 1).unwrap_or(PollTimeout::MAX)
            }
            _ => PollTimeout::from(100u16),
        };
        let mut fds: Vec<PollFd> = pipes
            .iter()
            .flatten()
            .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        let which: Vec<usize> = (0..2).filter(|&i| pipes[i].is_some()).collect();
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(sys("waiting for exec output")(e.into())),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        for (k, &i) in which.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            let n = pipes[i]
                .as_mut()
                .map(|f| f.read(&mut buf))
                .transpose()
                .unwrap_or(Some(0))
                .unwrap_or(0);
            if n == 0 {
                pipes[i] = None;
                continue;
            }
            let room = o.max_output.saturating_sub(out[i].len());
            if n > room {
                truncated = true;
            }
            out[i].extend_from_slice(&buf[..n.min(room)]);
        }
    }
    let status = child
        .wait()
        .map_err(sys("waiting for the runtime's exec"))?;
    use std::os::unix::process::ExitStatusExt;
    let exit_code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 255,
    };
    let [stdout, stderr] = out;
    Ok(ExecResult {
        exit_code: if timed_out && exit_code == 0 {
            137
        } else {
            exit_code
        },
        stdout,
        stderr,
        truncated,
        timed_out,
    })
}

/// A byte string for JSON: `{"text": …}` when it is UTF-8, `{"bytes": BASE64}`
/// otherwise (the convention ripgrep's JSON output uses).
pub fn json_bytes(b: &[u8]) -> serde_json::Value {
    use base64::Engine as _;
    match std::str::from_utf8(b) {
        Ok(t) => serde_json::json!({"text": t}),
        Err(_) => serde_json::json!({"bytes": base64::engine::general_purpose::STANDARD.encode(b)}),
    }
}

/// Makes sure a process file exists and parses as a runtime-spec process. Returns
/// whether it asks for a terminal.
pub fn check_process(path: &Path) -> Result<bool, MonitorError> {
    let bad = |reason: String| MonitorError::Process {
        path: path.to_path_buf(),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let p: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| bad(format!("not JSON: {e}")))?;
    super::run::check_process_value(&p).map_err(|r| bad(format!("not a process spec: {r}")))
}
