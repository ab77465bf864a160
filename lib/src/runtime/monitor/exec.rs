//! A synchronous exec, as the CRI's ExecSync needs: [`exec_sync`] runs the
//! runtime's foreground `exec`, keeps stdout and stderr up to a bound and kills the
//! process when a timeout passes; [`ExecResult`] is what it did, as `ctrmon --exec`
//! prints it and its callers read it. crid runs [`exec_sync`] for a runtime whose
//! foreground exec returns with its process ([`Runtime::exec_returns_with_its_process`]);
//! ctrmon's `--exec` detaches the process and reaps it as a subreaper instead. Both
//! read the output through [`Capture`].

use crate::runtime::runc::{Runtime, RuntimeError};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long the output may keep coming once the process has ended: a process it
/// left in the background (`sh -c 'daemon &'`) may hold the pipes for ever.
pub const DRAIN: Duration = Duration::from_secs(1);

/// One exec.
#[derive(Debug, Clone, Copy)]
pub struct ExecSync<'a> {
    /// The runtime.
    pub runtime: &'a Runtime,
    /// The running container.
    pub id: &'a str,
    /// A runtime-spec `process` object, as `runc exec --process` reads it.
    pub process: &'a Path,
    /// Where the runtime writes the process's pid (removed afterwards).
    pub pid_file: &'a Path,
    /// The runtime's JSON log, where it says why it could not start the process
    /// (removed afterwards).
    pub log: &'a Path,
    /// Kill the process after this long.
    pub timeout: Option<Duration>,
    /// Keep at most this many bytes of each stream.
    pub max_output: usize,
}

/// Runs the exec and waits for the process (or the timeout).
///
/// The runtime's foreground `exec` reaps the process and exits with its status
/// (128+N when signal N ended it), so no subreaper is needed, as long as it
/// returns when the process ends (crun; runc waits for whatever the process left
/// running, until the timeout kills it too); a runtime that could
/// not start the process says why in its log, and that is the error. The process's
/// end is watched through a pidfd of the runtime, its output through the pipes,
/// with no polling naps.
pub fn exec_sync(o: &ExecSync) -> Result<ExecResult, RuntimeError> {
    let _ = std::fs::remove_file(o.pid_file);
    let _ = std::fs::remove_file(o.log);
    let failed = |message: String| RuntimeError::Failed {
        runtime: o.runtime.path.clone(),
        verb: "exec",
        message,
    };
    let spawn = |source: std::io::Error| RuntimeError::Spawn {
        runtime: o.runtime.path.clone(),
        verb: "exec",
        source,
    };
    let mut child = o
        .runtime
        .exec(o.log, o.process, o.pid_file, o.id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    let result = follow(o, &mut child);
    if result.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let error = crate::runtime::runc::last_error(o.log);
    let _ = std::fs::remove_file(o.log);
    let _ = std::fs::remove_file(o.pid_file);
    let r = result.map_err(spawn)?;
    match error {
        Some(message) => Err(failed(message)),
        None => Ok(r),
    }
}

/// Reads the runtime's pipes until it has exited and they are drained.
fn follow(o: &ExecSync, child: &mut std::process::Child) -> std::io::Result<ExecResult> {
    use std::os::unix::process::ExitStatusExt;
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_child(child),
        rustix::process::PidfdFlags::empty(),
    )?;
    let mut output = Capture::new(
        [
            child.stdout.take().map(|p| OwnedFd::from(p).into()),
            child.stderr.take().map(|p| OwnedFd::from(p).into()),
        ],
        o.max_output,
    );
    let mut timed_out = false;
    let mut status = None;
    let deadline = o.timeout.and_then(|t| Instant::now().checked_add(t));
    let mut drain_until: Option<Instant> = None;
    let mut kill_runtime_at: Option<Instant> = None;
    loop {
        if status.is_none() {
            if let Some(s) = child.try_wait()? {
                status = Some(s);
                drain_until = Some(Instant::now() + DRAIN);
            }
        }
        let now = Instant::now();
        if status.is_some() && (!output.is_open() || drain_until <= Some(now)) {
            break;
        }
        if status.is_none() && !timed_out && deadline.is_some_and(|d| now >= d) {
            timed_out = true;
            kill_process(o.pid_file, child);
            kill_runtime_at = Some(now + DRAIN);
        }
        // A runtime still waiting, for what the process left running, is killed too.
        if status.is_none() && kill_runtime_at.is_some_and(|k| now >= k) {
            let _ = child.kill();
            kill_runtime_at = None;
        }
        let wake = [
            drain_until,
            deadline.filter(|_| !timed_out && status.is_none()),
            kill_runtime_at.filter(|_| status.is_none()),
        ]
        .into_iter()
        .flatten()
        .min();
        let end = status.is_none().then_some(pidfd.as_fd());
        output.wait(end, wake)?;
    }
    let status = status.unwrap_or_default();
    let exit_code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255);
    let ([stdout, stderr], truncated) = output.finish();
    Ok(ExecResult {
        exit_code,
        stdout,
        stderr,
        truncated,
        timed_out,
    })
}

/// An exec's stdout and stderr, read as they come and each kept up to a bound.
pub struct Capture {
    pipes: [Option<std::fs::File>; 2],
    out: [Vec<u8>; 2],
    max: usize,
    truncated: bool,
    buf: Vec<u8>,
}

impl Capture {
    /// Reads these pipes (stdout, stderr), keeping at most `max` bytes of each.
    pub fn new(pipes: [Option<std::fs::File>; 2], max: usize) -> Capture {
        Capture {
            pipes,
            out: [Vec::new(), Vec::new()],
            max,
            truncated: false,
            buf: vec![0u8; 64 * 1024],
        }
    }

    /// Whether a pipe is still open (its writers have not all closed it).
    pub fn is_open(&self) -> bool {
        self.pipes.iter().any(Option::is_some)
    }

    /// Waits until output comes, `also` (a pidfd, say) is readable or `until`
    /// passes (no bound when `None`), and reads what came.
    pub fn wait(
        &mut self,
        also: Option<std::os::fd::BorrowedFd<'_>>,
        until: Option<Instant>,
    ) -> std::io::Result<()> {
        let timeout = until.map_or(PollTimeout::NONE, |w| {
            PollTimeout::try_from(w.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::MAX)
        });
        let which: Vec<usize> = (0..2).filter(|&i| self.pipes[i].is_some()).collect();
        let mut fds: Vec<PollFd> = self
            .pipes
            .iter()
            .flatten()
            .map(|p| PollFd::new(p.as_fd(), PollFlags::POLLIN))
            .chain(also.map(|fd| PollFd::new(fd, PollFlags::POLLIN)))
            .collect();
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds
            .iter()
            .take(which.len())
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        for (k, &i) in which.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            let n = match self.pipes[i].as_mut().map(|p| p.read(&mut self.buf)) {
                Some(Ok(n)) => n,
                Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                _ => 0,
            };
            if n == 0 {
                self.pipes[i] = None;
                continue;
            }
            let room = self.max.saturating_sub(self.out[i].len());
            if n > room {
                self.truncated = true;
            }
            self.out[i].extend_from_slice(&self.buf[..n.min(room)]);
        }
        Ok(())
    }

    /// What was kept of stdout and stderr, and whether anything was dropped.
    pub fn finish(self) -> ([Vec<u8>; 2], bool) {
        (self.out, self.truncated)
    }
}

/// Kills the exec'd process, whose pid the runtime wrote; the runtime itself when
/// it has not written one yet (the process, if it comes, is then left behind).
fn kill_process(pid_file: &Path, runtime: &mut std::process::Child) {
    let pid = super::read_pid(pid_file).and_then(rustix::process::Pid::from_raw);
    // Through a pidfd: the runtime has not reaped the process yet, so the pid is
    // still its.
    match pid.map(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())) {
        Some(Ok(fd)) => {
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
        }
        _ => {
            let _ = runtime.kill();
        }
    }
}

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
