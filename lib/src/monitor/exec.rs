//! Synchronous exec in a running container, as the CRI's ExecSync needs: run
//! `RUNTIME exec --process FILE ID`, capture stdout and stderr up to a bound, and
//! kill the process (not just the runtime) when a timeout passes.

use super::run::MonitorError;
use crate::runc::{Console, Runtime};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What an exec did: the JSON object `ctrmon --exec` prints, one line. Output is
/// `{"text": …}` when it is UTF-8, `{"bytes": BASE64}` otherwise (the convention
/// ripgrep's JSON output uses).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecResult {
    /// Its exit code (128+N when killed by signal N).
    pub exit_code: i32,
    /// Its stdout, up to the bound.
    #[serde(with = "json_bytes")]
    pub stdout: Vec<u8>,
    /// Its stderr, up to the bound.
    #[serde(with = "json_bytes")]
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
    let error = crate::runc::last_error(&log);
    let _ = std::fs::remove_file(&log);
    if !status.success() {
        let message = error.unwrap_or_else(|| format!("exited with {status}"));
        return Err(MonitorError::Runtime {
            runtime: format!("{} exec", o.runtime.path.display()),
            message,
        });
    }
    let pid = std::fs::read_to_string(&o.pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .ok_or_else(|| MonitorError::Runtime {
            runtime: format!("{} exec", o.runtime.path.display()),
            message: format!("no pid in {}", o.pid_file.display()),
        })?;
    let pid = nix::unistd::Pid::from_raw(pid);
    let mut pipes = [
        Some(std::fs::File::from(out_r)),
        Some(std::fs::File::from(err_r)),
    ];
    let mut out = [Vec::new(), Vec::new()];
    let mut truncated = false;
    let mut timed_out = false;
    let mut exit_code = None;
    let deadline = o.timeout.and_then(|t| Instant::now().checked_add(t));
    let mut drain_until: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
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
                drain_until = Some(Instant::now() + Duration::from_secs(1));
            }
        }
        if pipes.iter().all(Option::is_none) && exit_code.is_some() {
            break;
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if exit_code.is_none() && !timed_out && deadline.is_some_and(|d| Instant::now() >= d) {
            timed_out = true;
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let mut fds: Vec<PollFd> = pipes
            .iter()
            .flatten()
            .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        let which: Vec<usize> = (0..2).filter(|&i| pipes[i].is_some()).collect();
        // Short naps: the process's end shows in waitpid, not on the pipes.
        match nix::poll::poll(&mut fds, PollTimeout::from(50u16)) {
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
    let [stdout, stderr] = out;
    Ok(ExecResult {
        exit_code: exit_code.unwrap_or(if timed_out { 137 } else { 255 }),
        stdout,
        stderr,
        truncated,
        timed_out,
    })
}

/// A byte string in JSON: `{"text": …}` when it is UTF-8, `{"bytes": BASE64}`
/// otherwise.
mod json_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text { text: String },
        Bytes { bytes: String },
    }

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(b) {
            Ok(t) => Repr::Text {
                text: t.to_string(),
            },
            Err(_) => Repr::Bytes {
                bytes: base64::engine::general_purpose::STANDARD.encode(b),
            },
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text { text } => Ok(text.into_bytes()),
            Repr::Bytes { bytes } => base64::engine::general_purpose::STANDARD
                .decode(bytes)
                .map_err(serde::de::Error::custom),
        }
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

#[cfg(test)]
mod tests {
    use super::ExecResult;

    #[test]
    fn results_round_trip_as_text_or_base64() {
        let r = ExecResult {
            exit_code: 3,
            stdout: b"hi\n".to_vec(),
            stderr: vec![0xff, 0, 1],
            truncated: false,
            timed_out: true,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""stdout":{"text":"hi\n"}"#), "{line}");
        assert!(line.contains(r#""stderr":{"bytes":"/wAB"}"#), "{line}");
        assert_eq!(serde_json::from_str::<ExecResult>(&line).unwrap(), r);
    }
}
