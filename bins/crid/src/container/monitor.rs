//! The ctrmon client: crid runs one monitor per container (`runtime create`, and
//! for an infra container `start`), the infra process of a pod that shares a PID
//! namespace (`ctrmon --infra`), one monitor per exec (but a sync exec under crun,
//! which crid runs itself), and talks to a running monitor through its attach
//! socket. Command lines, paths and results are the
//! library's ([`crikit::runtime::monitor`]); nothing of ctrmon's is parsed by hand here.

use crate::error::{CridError, Result};
use crikit::oci_spec::runtime::Spec;
use crikit::runtime::monitor::cgroup::Parent;
use crikit::runtime::monitor::exec::ExecResult;
use crikit::runtime::monitor::{MonitorCommand, StateDir};
use crikit::runtime::runc::Runtime;
use std::path::Path;
use std::process::Stdio;

/// How crid runs ctrmon.
pub struct Monitors<'a> {
    /// The ctrmon binary.
    pub ctrmon: &'a Path,
    /// The OCI runtime.
    pub runtime: &'a Runtime,
    /// The run directory (monitors' state in `RUN/ctrmon/ID`).
    pub run_dir: &'a Path,
}

/// A new container's monitor.
#[derive(Debug, Default)]
pub struct Create<'a> {
    /// The CRI log file.
    pub log_path: Option<&'a Path>,
    /// A stdin pipe for attach clients.
    pub stdin: bool,
    /// A terminal.
    pub tty: bool,
    /// The monitor's cgroup parent.
    pub cgroup_parent: Option<&'a Parent>,
    /// Start it too.
    pub start: bool,
    /// Restore it from the CRIU images in this directory instead (running then).
    pub restore: Option<&'a Path>,
}

impl Monitors<'_> {
    fn command(&self, id: &str) -> MonitorCommand {
        MonitorCommand::new(self.ctrmon, id, self.runtime, self.run_dir)
    }

    /// Runs `runtime create` for the bundle under a new monitor; the container's
    /// pid. `what` names the container in errors.
    pub fn create(&self, id: &str, what: &str, bundle: &Path, o: &Create) -> Result<i32> {
        let dirs = StateDir::new(self.run_dir, id);
        let mut cmd = self
            .command(id)
            .bundle(bundle)
            .attach_socket(&dirs.attach_socket())
            .stdin(o.stdin)
            .tty(o.tty)
            .start(o.start)
            // The runtime's state goes when the container exits, as containerd
            // deletes its task then; RemoveContainer has only files left to remove.
            .cleanup(true);
        if let Some(p) = o.log_path {
            cmd = cmd.log_path(p);
        }
        if let Some(p) = o.cgroup_parent {
            cmd = cmd.cgroup_parent(p);
        }
        if let Some(images) = o.restore {
            cmd = cmd.restore(images);
        }
        let what = format!(
            "{} container {what}",
            if o.restore.is_some() {
                "restoring"
            } else {
                "creating"
            }
        );
        pid_of(&self.run(cmd, &what)?, &what)
    }

    /// Runs `cmd` in the running container `id` (its bundle's process, with these
    /// arguments and no terminal) and waits for it, at most `timeout` seconds when
    /// positive; each stream is kept up to `max_output` bytes.
    ///
    /// A probe a second per pod makes this the call kubelet makes most. When the
    /// runtime's foreground exec returns as the process ends (crun), crid runs it
    /// itself; otherwise (runc waits for whatever the command left running) under
    /// a monitor, which reaps the process as its subreaper.
    pub fn exec_sync(
        &self,
        id: &str,
        bundle: &Path,
        cmd: &[String],
        timeout: i64,
        max_output: usize,
    ) -> Result<ExecResult> {
        let file = self.process_file(id, bundle, cmd, false, None)?;
        let r = if self.runtime.exec_returns_with_its_process() {
            let pid_file = file.path().with_extension("pid");
            let log = file.path().with_extension("log");
            let exec = crikit::runtime::monitor::exec::ExecSync {
                runtime: self.runtime,
                id,
                process: file.path(),
                pid_file: &pid_file,
                log: &log,
                timeout: (timeout > 0).then(|| std::time::Duration::from_secs(timeout as u64)),
                max_output,
            };
            crikit::runtime::monitor::exec::exec_sync(&exec).map_err(|source| {
                CridError::Runtime {
                    action: "exec in",
                    id: id.to_string(),
                    source,
                }
            })?
        } else {
            let mut command = self
                .command(id)
                .exec(file.path())
                .exec_output_max(max_output);
            if timeout > 0 {
                command = command.exec_timeout(timeout as u64);
            }
            let stdout = self.run(command, &format!("exec in {id}"))?;
            serde_json::from_slice(&stdout).map_err(|e| CridError::Monitor {
                what: format!("exec in {id}"),
                message: format!("unreadable result: {e}"),
            })?
        };
        if r.timed_out {
            return Err(CridError::ExecTimeout {
                cmd: cmd.to_vec(),
                secs: timeout,
            });
        }
        Ok(r)
    }

    /// The container's process with `cmd` as its arguments, in a file of its monitor
    /// directory, for `ctrmon --exec`; removed when the handle drops.
    fn process_file(
        &self,
        id: &str,
        bundle: &Path,
        cmd: &[String],
        tty: bool,
        size: Option<(u16, u16)>,
    ) -> Result<tempfile::NamedTempFile> {
        let config = bundle.join("config.json");
        let spec = Spec::load(&config).map_err(|e| CridError::Io {
            what: format!("reading {}", config.display()),
            source: std::io::Error::other(e),
        })?;
        let mut process = spec
            .process()
            .clone()
            .ok_or_else(|| CridError::Invalid(format!("{}: no process", config.display())))?;
        process.set_args(Some(cmd.to_vec()));
        process.set_terminal(Some(tty));
        if let (true, Some((width, height))) = (tty, size) {
            let b = crikit::oci_spec::runtime::BoxBuilder::default()
                .width(u64::from(width))
                .height(u64::from(height))
                .build();
            process.set_console_size(b.ok());
        }
        let dirs = StateDir::new(self.run_dir, id);
        let dir = dirs.path();
        std::fs::create_dir_all(dir)
            .map_err(CridError::io(format!("creating {}", dir.display())))?;
        let file = tempfile::Builder::new()
            .prefix("exec-")
            .suffix(".json")
            .tempfile_in(dir)
            .map_err(CridError::io(format!(
                "creating a process file in {}",
                dir.display()
            )))?;
        let data = serde_json::to_vec(&process).map_err(|e| CridError::Io {
            what: "encoding the exec process".into(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(file.path(), data)
            .map_err(CridError::io(format!("writing {}", file.path().display())))?;
        Ok(file)
    }

    /// Starts an interactive exec of `cmd` in `id` under a monitor serving it on
    /// `socket`, which starts the process once a first client is there (at most 30
    /// seconds), with a terminal of `size` (columns, rows) when it has one. The monitor prints the process's pid then; the process file is kept
    /// until that.
    pub fn exec_interactive(
        &self,
        id: &str,
        bundle: &Path,
        cmd: &[String],
        io: crate::state::tokens::Io,
        size: Option<(u16, u16)>,
        socket: &Path,
    ) -> Result<(tokio::process::Child, tempfile::NamedTempFile)> {
        let file = self.process_file(id, bundle, cmd, io.tty, size)?;
        let command = self
            .command(id)
            .exec(file.path())
            .attach_socket(socket)
            .stdin(io.stdin)
            .tty(io.tty)
            .arg("--attach-wait")
            .arg("30");
        let child = tokio::process::Command::from(command.into_command())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .spawn()
            .map_err(CridError::io(format!("running {}", self.ctrmon.display())))?;
        Ok((child, file))
    }

    /// Runs ctrmon; its stdout, or its error (`what` it was asked) when it failed.
    fn run(&self, cmd: MonitorCommand, what: &str) -> Result<Vec<u8>> {
        run(self.ctrmon, cmd, what)
    }

    /// Asks the monitor of `id` to reopen its log file.
    pub fn reopen_log(&self, id: &str) -> Result<()> {
        let sock = StateDir::new(self.run_dir, id).attach_socket();
        crikit::runtime::monitor::attach::Client::connect(&sock)
            .and_then(|mut a| a.reopen_log())
            .map_err(|e| CridError::Monitor {
                what: format!("reopening the log of {id}"),
                message: e.to_string(),
            })
    }
}

/// Runs `cmd`, a ctrmon that reports and exits; its stdout, or its error.
fn run(ctrmon: &Path, cmd: MonitorCommand, what: &str) -> Result<Vec<u8>> {
    let out = cmd
        .into_command()
        .stdin(Stdio::null())
        .output()
        .map_err(CridError::io(format!("running {}", ctrmon.display())))?;
    if !out.status.success() {
        return Err(CridError::Monitor {
            what: what.to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// The pid a ctrmon printed.
fn pid_of(stdout: &[u8], what: &str) -> Result<i32> {
    String::from_utf8_lossy(stdout)
        .trim()
        .parse()
        .map_err(|_| CridError::Monitor {
            what: what.to_string(),
            message: format!("no pid in its output {:?}", String::from_utf8_lossy(stdout)),
        })
}

/// Starts the infra process of pod `pod` (`ctrmon --infra`) in the namespaces pinned
/// in `ns_dir`, its pid written to `pid_file` before it is reported; its pid.
pub fn start_infra(
    ctrmon: &Path,
    pod: &str,
    ns_dir: &Path,
    pid_file: &Path,
    cgroup_parent: Option<&Parent>,
) -> Result<i32> {
    let mut cmd = MonitorCommand::infra(ctrmon, pod, ns_dir).pid_file(pid_file);
    if let Some(p) = cgroup_parent {
        cmd = cmd.cgroup_parent(p);
    }
    let what = format!("starting the infra process of pod {pod}");
    pid_of(&run(ctrmon, cmd, &what)?, &what)
}
