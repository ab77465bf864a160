//! Every OCI runtime command line crikit runs, built in one place: `create`,
//! `exec --detach`, `start`, `kill`, `delete`, `update` and `checkpoint`, for runc or any runtime
//! that speaks its command line (crun, youki). The runtime's path and its state
//! root are fields, not constants, so a test can point them at a stand-in.
//!
//! Runs that crikit waits for capture the runtime's stderr as its error; the
//! monitor's long-lived runs log as JSON lines to a file (`--log`, `--log-format
//! json`), read back by [`last_error`].

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An OCI runtime: its binary and its `--root`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Runtime {
    /// The binary (`runc`, found on PATH, or a path).
    pub path: PathBuf,
    /// Its state directory (`--root`), or its own default.
    pub root: Option<PathBuf>,
    /// Global options given before every subcommand (`--systemd-cgroup`, `--debug`).
    pub args: Vec<String>,
    /// Run the binary from a sealed in-memory copy ([`super::sealed`]), made once,
    /// instead of letting every invocation copy itself.
    pub sealed: bool,
}

/// The runtime could not be run, or it failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// It could not be started or waited for.
    #[error("running {} {verb}", runtime.display())]
    Spawn {
        /// The binary.
        runtime: PathBuf,
        /// The subcommand.
        verb: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// It ran and failed; `message` is its own error text.
    #[error("{} {verb}: {message}", runtime.display())]
    Failed {
        /// The binary.
        runtime: PathBuf,
        /// The subcommand.
        verb: &'static str,
        /// Its error text.
        message: String,
    },
}

impl RuntimeError {
    /// Whether the runtime said the container does not exist (runc: "container does
    /// not exist", crun: "... not found").
    pub fn is_not_found(&self) -> bool {
        match self {
            RuntimeError::Failed { message, .. } => {
                message.contains("does not exist") || message.contains("not found")
            }
            RuntimeError::Spawn { .. } => false,
        }
    }
}

/// How a runtime-spec process gets its stdio when the runtime starts it.
#[derive(Debug, Clone, Copy)]
pub enum Console<'a> {
    /// The runtime's own stdio is passed on (pipes the caller set up).
    Inherit,
    /// A terminal, whose master the runtime sends to this socket.
    Socket(&'a Path),
}

impl Runtime {
    /// The runtime at `path` with state in `root`.
    pub fn new(path: impl Into<PathBuf>, root: Option<PathBuf>) -> Runtime {
        Runtime {
            path: path.into(),
            root,
            args: Vec::new(),
            sealed: false,
        }
    }

    /// The same runtime, run from a sealed copy of its binary (for a daemon that
    /// runs it often; see [`super::sealed`]).
    pub fn sealed(mut self) -> Runtime {
        self.sealed = true;
        self
    }

    /// The same runtime with `args` before every subcommand.
    pub fn with_args(mut self, args: Vec<String>) -> Runtime {
        self.args = args;
        self
    }

    /// `RUNTIME [--root ROOT] [ARGS…]`, from the sealed copy when asked for.
    pub fn command(&self) -> Command {
        let copy = self
            .sealed
            .then(|| super::sealed::exec_path(&self.path))
            .flatten();
        let mut c = match copy {
            Some(copy) => {
                let mut c = Command::new(copy);
                std::os::unix::process::CommandExt::arg0(&mut c, &self.path);
                c
            }
            None => Command::new(&self.path),
        };
        if let Some(root) = &self.root {
            c.arg("--root").arg(root);
        }
        c.args(&self.args);
        c
    }

    /// `RUNTIME [--root ROOT] --log LOG --log-format json`: its diagnostics as JSON
    /// lines in `log`, for [`last_error`].
    pub fn logged(&self, log: &Path) -> Command {
        let mut c = self.command();
        c.arg("--log").arg(log).args(["--log-format", "json"]);
        c
    }

    /// `create --bundle BUNDLE --pid-file PID [--console-socket S] ID`.
    pub fn create(
        &self,
        log: &Path,
        bundle: &Path,
        pid_file: &Path,
        console: Console,
        id: &str,
    ) -> Command {
        let mut c = self.logged(log);
        c.arg("create").arg("--bundle").arg(bundle);
        with_console(&mut c, pid_file, console, id);
        c
    }

    /// `restore --detach --bundle BUNDLE --image-path IMAGES --work-path WORK
    /// --pid-file PID [--console-socket S] ID`: the container CRIU dumped into
    /// IMAGES, made again from BUNDLE and running; CRIU's log (`restore.log`) goes
    /// into WORK.
    pub fn restore(
        &self,
        log: &Path,
        bundle: &Path,
        from: &Checkpoint,
        pid_file: &Path,
        console: Console,
        id: &str,
    ) -> Command {
        let mut c = self.logged(log);
        c.args(["restore", "--detach", "--bundle"])
            .arg(bundle)
            .arg("--image-path")
            .arg(&from.images)
            .arg("--work-path")
            .arg(&from.work);
        with_console(&mut c, pid_file, console, id);
        c
    }

    /// `exec --detach --process PROCESS --pid-file PID [--console-socket S] ID`: a
    /// process in a running container, left for the caller to reap.
    pub fn exec_detached(
        &self,
        log: &Path,
        process: &Path,
        pid_file: &Path,
        console: Console,
        id: &str,
    ) -> Command {
        let mut c = self.logged(log);
        c.args(["exec", "--detach", "--process"]).arg(process);
        with_console(&mut c, pid_file, console, id);
        c
    }

    /// Whether the runtime's foreground `exec` returns as soon as the process ends
    /// (crun). runc's returns only once every process the command left running has
    /// ended (`sh -c 'sleep 5 & echo'` takes 5 s), so a sync exec under runc needs a
    /// subreaper of its own that reaps the process (ctrmon).
    pub fn exec_returns_with_its_process(&self) -> bool {
        self.path.file_name().is_some_and(|n| n == "crun")
    }

    /// `exec --process PROCESS --pid-file PID ID` in the foreground: the runtime
    /// waits for the process and exits with its status.
    pub fn exec(&self, log: &Path, process: &Path, pid_file: &Path, id: &str) -> Command {
        let mut c = self.logged(log);
        c.args(["exec", "--process"]).arg(process);
        with_console(&mut c, pid_file, Console::Inherit, id);
        c
    }

    /// `start ID` with a JSON log.
    pub fn start_logged(&self, log: &Path, id: &str) -> Command {
        let mut c = self.logged(log);
        c.arg("start").arg(id);
        c
    }

    /// `delete --force ID` with a JSON log.
    pub fn delete_logged(&self, log: &Path, id: &str) -> Command {
        let mut c = self.logged(log);
        c.args(["delete", "--force", id]);
        c
    }

    /// Runs `start ID`.
    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let mut c = self.command();
        c.args(["start", id]);
        self.run("start", c, b"")
    }

    /// Runs `kill [--all] ID SIGNAL`.
    pub fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), RuntimeError> {
        let mut c = self.command();
        c.arg("kill");
        if all {
            c.arg("--all");
        }
        c.args([id, signal]);
        self.run("kill", c, b"")
    }

    /// Runs `delete --force ID`; a container the runtime does not know is no error.
    pub fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let mut c = self.command();
        c.args(["delete", "--force", id]);
        match self.run("delete", c, b"") {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Runs `update --resources - ID` with `resources` (a runtime-spec
    /// `linux.resources` object) on stdin.
    pub fn update(&self, id: &str, resources: &impl serde::Serialize) -> Result<(), RuntimeError> {
        let input = serde_json::to_vec(resources).map_err(|e| RuntimeError::Spawn {
            runtime: self.path.clone(),
            verb: "update",
            source: io::Error::other(e),
        })?;
        let mut c = self.command();
        c.args(["update", "--resources", "-", id]);
        self.run("update", c, &input)
    }

    /// Runs `checkpoint --image-path IMAGES --work-path WORK --leave-running ID`:
    /// CRIU dumps the container into IMAGES (its log, `dump.log`, into WORK) and the
    /// container keeps running. Killed, and failed, once `timeout` has passed.
    pub fn checkpoint(
        &self,
        id: &str,
        images: &Path,
        work: &Path,
        timeout: std::time::Duration,
    ) -> Result<(), RuntimeError> {
        let mut c = self.command();
        c.arg("checkpoint")
            .arg("--image-path")
            .arg(images)
            .arg("--work-path")
            .arg(work)
            .args(["--leave-running", id]);
        let spawn = |source| RuntimeError::Spawn {
            runtime: self.path.clone(),
            verb: "checkpoint",
            source,
        };
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        let mut stderr = child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(s) = stderr.as_mut() {
                let _ = io::Read::read_to_string(s, &mut text);
            }
            text
        });
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().map_err(spawn)? {
                break s;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RuntimeError::Failed {
                    runtime: self.path.clone(),
                    verb: "checkpoint",
                    message: format!("did not finish within {timeout:?}"),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let text = reader.join().unwrap_or_default();
        self.outcome("checkpoint", status, &text)
    }

    /// Whether the runtime has the subcommand `verb` (`checkpoint`, say: crun built
    /// without CRIU has neither it nor `restore`): `RUNTIME VERB --help` succeeds.
    pub fn has_command(&self, verb: &str) -> bool {
        let mut c = self.command();
        c.args([verb, "--help"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.status().is_ok_and(|s| s.success())
    }

    /// Runs `c` with `input` on stdin; its trimmed stderr is the error when it fails.
    fn run(&self, verb: &'static str, mut c: Command, input: &[u8]) -> Result<(), RuntimeError> {
        let spawn = |source| RuntimeError::Spawn {
            runtime: self.path.clone(),
            verb,
            source,
        };
        let mut child = c
            .stdin(if input.is_empty() {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A runtime that exits before reading says why on stderr.
            let _ = stdin.write_all(input);
        }
        let out = child.wait_with_output().map_err(spawn)?;
        self.outcome(verb, out.status, &String::from_utf8_lossy(&out.stderr))
    }

    /// A run's end: success, or the error its stderr gives.
    fn outcome(
        &self,
        verb: &'static str,
        status: std::process::ExitStatus,
        stderr: &str,
    ) -> Result<(), RuntimeError> {
        if status.success() {
            return Ok(());
        }
        let message = match text_log_message(stderr) {
            Some(m) => m,
            None if stderr.trim().is_empty() => format!("exited with {status}"),
            None => stderr.trim().to_string(),
        };
        Err(RuntimeError::Failed {
            runtime: self.path.clone(),
            verb,
            message,
        })
    }
}

/// What CRIU's `Error (file.c:N): what` lines in `text` say, as `what`, in order.
pub fn criu_errors(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter_map(|l| Some(l[l.find("Error (")?..].split_once("): ")?.1.trim()))
}

/// CRIU's errors in its log file `log`, joined by "; ", when it has any: what the
/// runtime's own "criu failed" leaves out (it only names the log).
pub fn criu_log_errors(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let errors: Vec<&str> = criu_errors(&text).collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// A container's CRIU images to restore it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// CRIU's images (the runtime's `--image-path`).
    pub images: PathBuf,
    /// Where CRIU writes its log, `restore.log` (the runtime's `--work-path`).
    pub work: PathBuf,
}

fn with_console(c: &mut Command, pid_file: &Path, console: Console, id: &str) {
    c.arg("--pid-file").arg(pid_file);
    if let Console::Socket(s) = console {
        c.arg("--console-socket").arg(s);
    }
    c.arg(id);
}

/// The last error message in a runtime's `--log-format json` log file.
pub fn last_error(log: &Path) -> Option<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(String::from))
}

/// The message of the last `level=error` line runc's text log format writes on
/// stderr (`time="…" level=error msg="container does not exist"`), unquoted.
fn text_log_message(stderr: &str) -> Option<String> {
    let line = stderr.lines().rev().find(|l| l.contains("level=error"))?;
    let rest = &line[line.find("msg=")? + 4..];
    match rest.strip_prefix('"') {
        Some(quoted) => serde_json::from_str::<String>(&format!("\"{}", quoted.trim_end()))
            .ok()
            .or_else(|| Some(quoted.trim_end_matches('"').to_string())),
        None => Some(rest.trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Command) -> Vec<String> {
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn command_lines() {
        let r = Runtime::new("/usr/bin/crun", Some("/run/x".into()));
        let c = r.create(
            Path::new("/l"),
            Path::new("/b"),
            Path::new("/p"),
            Console::Socket(Path::new("/s")),
            "id1",
        );
        assert_eq!(
            argv(&c),
            [
                "/usr/bin/crun",
                "--root",
                "/run/x",
                "--log",
                "/l",
                "--log-format",
                "json",
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/p",
                "--console-socket",
                "/s",
                "id1"
            ]
        );
        let r = Runtime::new("runc", None);
        let c = r.exec_detached(
            Path::new("/l"),
            Path::new("/proc.json"),
            Path::new("/p"),
            Console::Inherit,
            "c",
        );
        assert_eq!(
            argv(&c)[5..],
            [
                "exec",
                "--detach",
                "--process",
                "/proc.json",
                "--pid-file",
                "/p",
                "c"
            ]
        );
    }

    #[test]
    fn failures_carry_the_runtimes_message() {
        let d = tempfile::tempdir().unwrap();
        let fake = d.path().join("fake-runtime");
        std::fs::write(
            &fake,
            "#!/bin/sh\ncat >/dev/null\necho 'time=\"2024\" level=error msg=\"container \\\"x\\\" does not exist\"' >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = Runtime::new(&fake, None);
        let e = r.kill("x", "TERM", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{} kill: container \"x\" does not exist", fake.display())
        );
        assert!(e.is_not_found());
        r.delete("x")
            .expect("deleting what does not exist is no error");
        let e = r.update("x", &serde_json::json!({"cpu": {}})).unwrap_err();
        assert!(
            matches!(e, RuntimeError::Failed { verb: "update", .. }),
            "{e}"
        );
        let missing = Runtime::new(d.path().join("none"), None);
        let e = missing.start("x").unwrap_err();
        assert!(matches!(e, RuntimeError::Spawn { .. }), "{e}");
    }

    #[test]
    fn json_log_errors() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        std::fs::write(
            &log,
            "{\"level\":\"error\",\"msg\":\"first\"}\n{\"level\":\"info\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"last\"}\n{\"level\":\"warning\",\"msg\":\"w\"}\n",
        )
        .unwrap();
        assert_eq!(last_error(&log).as_deref(), Some("last"));
        assert_eq!(last_error(&d.path().join("none")), None);
    }
}
