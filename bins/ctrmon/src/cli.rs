//! Command line of ctrmon.

use crate::error::MonitorError;
use crate::run::{Launch, MonitorConfig, Report, Spawned};
use anyhow::{Context, Result};
use crikit::runtime::monitor::cgroup::Parent;
use crikit::runtime::monitor::StateDir;
use crikit::runtime::runc::Runtime;
use crikit_cli::LogArgs;
use std::io::Write;
use std::path::PathBuf;

/// Man page sections written by hand, spliced after the generated ones.
pub const MAN_EXTRA: &str = include_str!("../../../man/ctrmon.extra.roff");

/// Monitor one OCI container run by runc: stdio, CRI logs, exit status
///
/// Checks the bundle, then detaches a monitor process (new session, double fork) that
/// runs `RUNTIME create` with pipes for the container's stdout and stderr (or, with
/// --tty, a console socket that receives the terminal), and with --start also
/// `RUNTIME start`; with --restore, `RUNTIME restore` from a checkpoint instead. ctrmon returns once the container exists: it prints
/// the container's pid on stdout (and, with --sync-fd, writes {"pid": N} to that
/// descriptor), or fails with the runtime's own error text. The monitor stays behind
/// as the container's subreaper, writes its output to the CRI log, reopens the log on
/// SIGHUP, and writes the exit file when the container ends.
#[derive(Debug, clap::Parser)]
#[command(name = "ctrmon", version, max_term_width = 100)]
pub struct Args {
    /// Bundle directory of the container (not needed with --exec or --infra)
    #[arg(long, value_name = "DIR", required_unless_present_any = ["exec", "infra"])]
    pub bundle: Option<PathBuf>,
    /// Container id
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// OCI runtime to run
    #[arg(
        long,
        value_name = "PATH",
        default_value = "runc",
        env = "CTRMON_RUNTIME"
    )]
    pub runtime: PathBuf,
    /// The runtime's state directory (its --root)
    #[arg(long, value_name = "DIR")]
    pub runtime_root: Option<PathBuf>,
    /// A global option for the runtime, given before each of its subcommands
    /// (repeatable; write --runtime-arg=--systemd-cgroup)
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub runtime_arg: Vec<String>,
    /// ctrmon's own state directory; defaults for the files below live in RUN/ctrmon/ID
    ///
    /// Defaults to /run/crikit as root, $XDG_RUNTIME_DIR/crikit otherwise.
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// CRI log file [default: RUN/ctrmon/ID/ctr.log; none for an exec]
    #[arg(long, value_name = "FILE")]
    pub log_path: Option<PathBuf>,
    /// Exit status file, JSON [default: RUN/ctrmon/ID/exit; none for an exec]
    #[arg(long, value_name = "FILE")]
    pub exit_file: Option<PathBuf>,
    /// Container pid file [default: RUN/ctrmon/ID/pid; RUN/ctrmon/ID/exec-N.pid for an
    /// exec; none for --infra, whose process's pid it then holds]
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Inherited descriptor to write the {"pid": N} or {"pid": -1, "message": …} line to
    #[arg(long, value_name = "N")]
    pub sync_fd: Option<i32>,
    /// Serve attach clients on this unix socket (framing: see the ATTACH section)
    #[arg(long, value_name = "PATH")]
    pub attach_socket: Option<PathBuf>,
    /// Start the process only once a first client has connected to the attach socket,
    /// waiting at most SECONDS (for an exec whose output must all reach a client)
    #[arg(long, value_name = "SECONDS", requires = "attach_socket")]
    pub attach_wait: Option<u64>,
    /// Give the container a stdin pipe that attach clients write to
    #[arg(long)]
    pub stdin: bool,
    /// Put the monitor in the cgroup PARENT/ctrmon-ID (every hierarchy but v1 cpuset),
    /// removed when it exits; with --cgroup-manager systemd, PARENT is a slice and the
    /// monitor asks systemd for the scope crikit-ctrmon-ID.scope in it. The container
    /// goes where its cgroupsPath says (with --infra, the infra process goes there and
    /// stays)
    #[arg(long, value_name = "PARENT")]
    pub cgroup_parent: Option<String>,
    /// Who makes the monitor's cgroup: ctrmon itself (cgroupfs), or systemd over
    /// D-Bus (systemd; --cgroup-parent is then a slice such as kubepods.slice)
    #[arg(long, value_enum, value_name = "MANAGER", default_value = "cgroupfs")]
    pub cgroup_manager: CgroupManager,
    /// Give the container a terminal (its process.terminal must be true); output is
    /// logged as stdout, attach clients may resize it
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Also start the container (without it the caller runs `RUNTIME start`)
    #[arg(long)]
    pub start: bool,
    /// Restore the container from the CRIU images in DIR (`RUNTIME restore`, CRIU's
    /// restore.log beside them) instead of creating it; it runs once ctrmon returns
    #[arg(long, value_name = "DIR", conflicts_with_all = ["exec", "start"])]
    pub restore: Option<PathBuf>,
    /// Run `RUNTIME delete` once the container has exited (and, when it succeeded,
    /// create the state directory's `deleted`)
    #[arg(long)]
    pub cleanup: bool,
    /// Split log lines longer than this many bytes into partial records
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024)]
    pub log_line_max: usize,

    /// Exec mode: run the process described in FILE (a runtime-spec process object) in
    /// the running container ID. Without --attach-socket: wait for it and print a JSON
    /// result; with it: serve it on the socket like a container (see EXEC)
    #[arg(long, value_name = "FILE")]
    pub exec: Option<PathBuf>,
    /// With a sync --exec: kill the process after this many seconds
    #[arg(long, value_name = "SECONDS", requires = "exec")]
    pub exec_timeout: Option<u64>,
    /// With --exec: keep at most this many bytes of each output stream
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20, requires = "exec")]
    pub exec_output_max: usize,
    /// Infra mode: start the infra process of the pod ID, PID 1 of a new PID namespace
    /// that its containers join, in the namespaces pinned in --ns-dir, and print its
    /// pid (see INFRA)
    #[arg(
        long,
        requires = "ns_dir",
        conflicts_with_all = ["bundle", "exec", "tty", "stdin", "attach_socket", "start", "cleanup", "restore"]
    )]
    pub infra: bool,
    /// With --infra: the pod's pinned namespaces (files named net, ipc, uts, user),
    /// each joined when present; the new root's mount point
    #[arg(long, value_name = "DIR", requires = "infra")]
    pub ns_dir: Option<PathBuf>,
    /// Truncate the log and start over when it would grow past this many bytes
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub log_size_max: Option<u64>,
    /// Where the monitor writes its own diagnostics once it has detached (appended)
    /// [default: RUN/ctrmon/ID/ctrmon.log; none for an exec]
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Runs ctrmon; in the detached monitor, returns the code to exit with once the
/// container is gone.
pub fn run(args: Args) -> Result<std::process::ExitCode> {
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(crikit::paths::default_run_dir);
    if args.id.is_empty() || args.id.contains('/') || args.id == "." || args.id == ".." {
        return Err(usage(&format!(
            "--id {:?}: not a container id (empty, a path, or . or ..)",
            args.id
        )));
    }
    if args.infra {
        return infra(&args).map(|()| std::process::ExitCode::SUCCESS);
    }
    let dirs = StateDir::new(&run_dir, &args.id);
    let state = dirs.path();
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    if let (Some(process), None) = (&args.exec, &args.attach_socket) {
        if args.tty {
            return Err(usage(
                "--tty with --exec needs --attach-socket to serve the terminal",
            ));
        }
        return exec(&args, process, &dirs).map(|()| std::process::ExitCode::SUCCESS);
    }
    let cfg = config_of(&args, launch_of(&args)?, &dirs)?;
    monitor(&args, &cfg)
}

/// What the monitor starts: an exec served through its attach socket, or the
/// container itself (created, or restored from a checkpoint).
fn launch_of(args: &Args) -> Result<Launch> {
    if let Some(process) = &args.exec {
        if args.exec_timeout.is_some() {
            return Err(usage(
                "--exec-timeout applies only to a sync exec (no --attach-socket)",
            ));
        }
        return Ok(Launch::Exec {
            process: std::path::absolute(process)
                .with_context(|| format!("process file {}", process.display()))?,
        });
    }
    let bundle = args.bundle.clone().unwrap_or_default();
    Ok(Launch::Create {
        bundle: std::path::absolute(&bundle)
            .with_context(|| format!("bundle {}", bundle.display()))?,
        restore: restore_of(args)?,
    })
}

/// `--restore DIR`: the checkpoint to restore from, its work directory beside it.
fn restore_of(args: &Args) -> Result<Option<crikit::runtime::runc::Checkpoint>> {
    let Some(images) = &args.restore else {
        return Ok(None);
    };
    let images =
        std::path::absolute(images).with_context(|| format!("--restore {}", images.display()))?;
    if !images.is_dir() {
        return Err(usage(&format!(
            "--restore {}: not a directory of CRIU images",
            images.display()
        )));
    }
    let work = images.parent().unwrap_or(&images).to_path_buf();
    Ok(Some(crikit::runtime::runc::Checkpoint { images, work }))
}

/// The monitor's configuration: files named on the command line, or the defaults in
/// the state directory (none for an exec's log and exit file: its attach clients get
/// its output and status).
fn config_of(args: &Args, launch: Launch, dirs: &StateDir) -> Result<MonitorConfig> {
    let is_exec = matches!(launch, Launch::Exec { .. });
    let file = |p: Option<&PathBuf>, default: Option<PathBuf>| -> Result<Option<PathBuf>> {
        p.cloned()
            .or(default)
            .map(|p| std::path::absolute(&p).context("resolving a path"))
            .transpose()
    };
    let unless_exec = |p: PathBuf| (!is_exec).then_some(p);
    // Several execs may run in one container at once: theirs carry a number.
    let tag = std::process::id();
    let own = |name: &str, default: PathBuf| {
        if is_exec {
            dirs.exec_file(tag, name)
        } else {
            default
        }
    };
    Ok(MonitorConfig {
        launch,
        tty: args.tty,
        id: args.id.clone(),
        runtime: Runtime::new(&args.runtime, args.runtime_root.clone())
            .with_args(args.runtime_arg.clone()),
        log_path: file(args.log_path.as_ref(), unless_exec(dirs.log_file()))?,
        exit_file: file(args.exit_file.as_ref(), unless_exec(dirs.exit_file()))?,
        pid_file: file(args.pid_file.as_ref(), Some(own("pid", dirs.pid_file())))?
            .unwrap_or_default(),
        runtime_log: own("runtime.log", dirs.runtime_log()),
        monitor_pid_file: own("ctrmon.pid", dirs.monitor_pid_file()),
        diagnostics: file(args.log_file.as_ref(), unless_exec(dirs.diagnostics()))?,
        start: args.start,
        cleanup: args.cleanup,
        deleted_file: unless_exec(dirs.deleted_file()),
        max_line: args.log_line_max,
        log_size_max: args.log_size_max,
        attach_socket: args
            .attach_socket
            .as_ref()
            .map(std::path::absolute)
            .transpose()?,
        stdin: args.stdin,
        attach_wait: args.attach_wait.map(std::time::Duration::from_secs),
        cgroup_parent: cgroup_parent(args)?,
    })
}

/// Who makes the monitor's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CgroupManager {
    /// ctrmon makes PARENT/ctrmon-ID in every hierarchy.
    Cgroupfs,
    /// systemd makes the scope crikit-ctrmon-ID.scope in the slice PARENT.
    Systemd,
}

/// --cgroup-parent under --cgroup-manager, checked.
fn cgroup_parent(args: &Args) -> Result<Option<Parent>> {
    args.cgroup_parent
        .as_deref()
        .map(|p| {
            Parent::new(args.cgroup_manager == CgroupManager::Systemd, p).map_err(|r| usage(&r))
        })
        .transpose()
}

/// Detaches the monitor and reports what it started: the pid on stdout, and the
/// report to --sync-fd (also when starting failed).
fn monitor(args: &Args, cfg: &MonitorConfig) -> Result<std::process::ExitCode> {
    let report = match crate::run::spawn(cfg) {
        Ok(Spawned::Caller(r)) => r,
        // The monitor's (or the intermediate process's) own end.
        Ok(Spawned::Exit(code)) => return Ok(exit_code(code)),
        Err(e) => {
            if let Some(fd) = args.sync_fd {
                let r = Report {
                    pid: -1,
                    message: Some(e.to_string()),
                };
                let _ = crate::run::report_to_fd(fd, &r);
            }
            return Err(e.into());
        }
    };
    if let Some(fd) = args.sync_fd {
        crate::run::report_to_fd(fd, &report).context("writing to --sync-fd")?;
    }
    if report.pid < 0 {
        anyhow::bail!(
            "container {}: {}",
            args.id,
            report.message.unwrap_or_default()
        );
    }
    writeln!(std::io::stdout(), "{}", report.pid)?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn exit_code(code: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn usage(reason: &str) -> anyhow::Error {
    MonitorError::Usage {
        reason: reason.into(),
    }
    .into()
}

/// `--infra`: start the pod's infra process and print its pid.
fn infra(args: &Args) -> Result<()> {
    let ns_dir = args.ns_dir.clone().unwrap_or_default();
    let cfg = crate::infra::InfraConfig {
        id: args.id.clone(),
        ns_dir: std::path::absolute(&ns_dir)
            .with_context(|| format!("--ns-dir {}", ns_dir.display()))?,
        pid_file: args
            .pid_file
            .as_ref()
            .map(std::path::absolute)
            .transpose()?,
        cgroup_parent: cgroup_parent(args)?,
    };
    let pid =
        crate::infra::spawn(&cfg).with_context(|| format!("infra process of pod {}", args.id))?;
    writeln!(std::io::stdout(), "{pid}")?;
    Ok(())
}

/// `--exec`: run a process in the container and print the JSON result.
fn exec(args: &Args, process: &std::path::Path, dirs: &StateDir) -> Result<()> {
    crate::exec::check_process(process)?;
    let o = crate::exec::ExecOptions {
        runtime: Runtime::new(&args.runtime, args.runtime_root.clone())
            .with_args(args.runtime_arg.clone()),
        id: args.id.clone(),
        process: std::path::absolute(process)?,
        timeout: args.exec_timeout.map(std::time::Duration::from_secs),
        max_output: args.exec_output_max,
        pid_file: dirs.exec_file(std::process::id(), "pid"),
    };
    let r = crate::exec::exec_sync(&o).with_context(|| format!("exec in {}", args.id))?;
    let _ = std::fs::remove_file(&o.pid_file);
    let line = serde_json::to_string(&r).context("encoding the result")?;
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}
