//! Synchronous exec in a running container, as the CRI's ExecSync needs: run
//! `RUNTIME exec --process FILE ID`, capture stdout and stderr up to a bound, and
//! kill the process (not just the runtime) when a timeout passes.

use crate::error::MonitorError;
use crikit::runtime::monitor::exec::{Capture, ExecResult, DRAIN};
use crikit::runtime::runc::{Console, Runtime};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How to exec.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The OCI runtime.
    pub runtime: Runtime,
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
///
/// As conmon does: `RUNTIME exec --detach` starts the process and returns, the
/// calling process (made a subreaper here) inherits it and reaps it. The result
/// comes once the process ends and its output has drained for at most a second:
/// the runtime's own foreground exec would wait for every process holding the
/// pipes, `sh -c 'daemon &'` included.
pub fn exec_sync(o: &ExecOptions) -> Result<ExecResult, MonitorError> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let sys =
        |action: &'static str| move |source: std::io::Error| MonitorError::Sys { action, source };
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| sys("becoming a subreaper")(e.into()))?;
    let _ = std::fs::remove_file(&o.pid_file);
    let log = o.pid_file.with_extension("runtime.log");
    let _ = std::fs::remove_file(&log);
    let mut cmd = o
        .runtime
        .exec_detached(&log, &o.process, &o.pid_file, Console::Inherit, &o.id);
    let (out_r, out_w) = nix::unistd::pipe().map_err(|e| sys("creating a pipe")(e.into()))?;
    let (err_r, err_w) = nix::unistd::pipe().map_err(|e| sys("creating a pipe")(e.into()))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .status()
        .map_err(sys("running the runtime's exec"));
    // The command holds the write ends until it is dropped.
    drop(cmd);
    let status = status?;
    let error = crikit::runtime::runc::last_error(&log);
    let _ = std::fs::remove_file(&log);
    if !status.success() {
        let message = error.unwrap_or_else(|| format!("exited with {status}"));
        return Err(MonitorError::Runtime {
            runtime: format!("{} exec", o.runtime.path.display()),
            message,
        });
    }
    let pid =
        crikit::runtime::monitor::read_pid(&o.pid_file).ok_or_else(|| MonitorError::Runtime {
            runtime: format!("{} exec", o.runtime.path.display()),
            message: format!("no pid in {}", o.pid_file.display()),
        })?;
    let pidfd = rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    let pid = nix::unistd::Pid::from_raw(pid);
    let mut output = Capture::new(
        [
            Some(std::fs::File::from(out_r)),
            Some(std::fs::File::from(err_r)),
        ],
        o.max_output,
    );
    let mut timed_out = false;
    let mut exit_code = None;
    let deadline = o.timeout.and_then(|t| Instant::now().checked_add(t));
    let mut drain_until: Option<Instant> = None;
    loop {
        if exit_code.is_none() {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, c)) => exit_code = Some(c),
                Ok(WaitStatus::Signaled(_, sig, _)) => exit_code = Some(128 + sig as i32),
                Ok(_) => {}
                // Not (yet) ours to reap: the runtime's until it exits and the
                // kernel hands the process over; gone altogether, it was reaped
                // elsewhere and its status is lost.
                Err(nix::errno::Errno::ECHILD) => {
                    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        exit_code = Some(255);
                    }
                }
                Err(_) => exit_code = Some(255),
            }
            if exit_code.is_some() {
                drain_until = Some(Instant::now() + DRAIN);
            }
        }
        if !output.is_open() && exit_code.is_some() {
            break;
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if exit_code.is_none() && !timed_out && deadline.is_some_and(|d| Instant::now() >= d) {
            timed_out = true;
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        // The process's end wakes the wait through its pidfd; without one (a
        // kernel before 5.3), short naps.
        let (end, until) = match (&pidfd, exit_code) {
            (Some(fd), None) => (
                Some(fd.as_fd()),
                [drain_until, deadline.filter(|_| !timed_out)]
                    .into_iter()
                    .flatten()
                    .min(),
            ),
            (None, None) => (None, Some(Instant::now() + Duration::from_millis(50))),
            (_, Some(_)) => (None, drain_until),
        };
        output
            .wait(end, until)
            .map_err(sys("waiting for exec output"))?;
    }
    let ([stdout, stderr], truncated) = output.finish();
    Ok(ExecResult {
        exit_code: exit_code.unwrap_or(if timed_out { 137 } else { 255 }),
        stdout,
        stderr,
        truncated,
        timed_out,
    })
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
    check_process_value(&p).map_err(|r| bad(format!("not a process spec: {r}")))
}

/// Checks the parts of a runtime-spec `process` the monitor and the runtime cannot
/// do without; returns its `terminal` flag.
pub fn check_process_value(p: &serde_json::Value) -> Result<bool, String> {
    if !p.is_object() {
        return Err("not an object".into());
    }
    match p["args"].as_array() {
        Some(a) if !a.is_empty() && a.iter().all(|v| v.is_string()) => {}
        _ => return Err("args must be a non-empty list of strings".into()),
    }
    if !p["cwd"].is_string() {
        return Err("no cwd".into());
    }
    match &p["terminal"] {
        serde_json::Value::Null => Ok(false),
        serde_json::Value::Bool(b) => Ok(*b),
        _ => Err("terminal must be true or false".into()),
    }
}
