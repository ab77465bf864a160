//! The contract between the container monitor (ctrmon) and its callers (crid, the
//! tests, scripts): the paths of a monitor's state directory ([`StateDir`]), the
//! exit file ([`ExitStatus`]), the exec result ([`exec::ExecResult`]), ctrmon's
//! command line ([`MonitorCommand`]) and the CRI log file.
//!
//! CRI log lines are what kubelet parses (`kubectl logs`): an RFC 3339 timestamp
//! with nanoseconds, the stream, `F` for a full line or `P` for part of one, and the
//! text. Output is written as it arrives, like conmon does: the newline-terminated
//! lines of a read become `F` records, a trailing fragment a `P` record, and lines
//! longer than a bound are cut into `P` records.

pub mod attach;
pub mod cgroup;
pub mod exec;

use crate::runtime::runc::Runtime;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A monitor's state directory, `RUN/ctrmon/ID`, and the files in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir(PathBuf);

impl StateDir {
    /// The state directory of container `id` under the run directory `run_dir`.
    pub fn new(run_dir: &Path, id: &str) -> StateDir {
        StateDir(run_dir.join("ctrmon").join(id))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The exit file ([`ExitStatus`], JSON).
    pub fn exit_file(&self) -> PathBuf {
        self.0.join("exit")
    }

    /// The container's pid, as the runtime writes it.
    pub fn pid_file(&self) -> PathBuf {
        self.0.join("pid")
    }

    /// The CRI log, when the caller names none.
    pub fn log_file(&self) -> PathBuf {
        self.0.join("ctr.log")
    }

    /// The attach socket crid asks for.
    pub fn attach_socket(&self) -> PathBuf {
        self.0.join("attach.sock")
    }

    /// The monitor's own pid.
    pub fn monitor_pid_file(&self) -> PathBuf {
        self.0.join("ctrmon.pid")
    }

    /// The runtime's JSON log.
    pub fn runtime_log(&self) -> PathBuf {
        self.0.join("runtime.log")
    }

    /// Written by a monitor run with `--cleanup` once `RUNTIME delete` succeeded:
    /// the runtime holds nothing more of the container.
    pub fn deleted_file(&self) -> PathBuf {
        self.0.join("deleted")
    }

    /// Where a detached monitor writes its own diagnostics.
    pub fn diagnostics(&self) -> PathBuf {
        self.0.join("ctrmon.log")
    }

    /// `exec-TAG.NAME`: the files of one of several execs running at once.
    pub fn exec_file(&self, tag: u32, name: &str) -> PathBuf {
        self.0.join(format!("exec-{tag}.{name}"))
    }

    /// The exit status, once the monitor wrote it; `None` before (or when the file
    /// cannot be read: it is only ever replaced whole).
    pub fn exit(&self) -> Option<ExitStatus> {
        ExitStatus::read_from(&self.exit_file()).ok().flatten()
    }

    /// Every ctrmon process of this container, found by its command line
    /// (`--id ID … --run-dir RUN`): the monitor, a caller still waiting for its
    /// report, interactive execs. For cleaning up after a caller that was killed
    /// before it learned of them; zombies are not counted.
    pub fn monitor_processes(&self) -> Vec<i32> {
        let (Some(id), Some(run_dir)) =
            (self.0.file_name(), self.0.parent().and_then(Path::parent))
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            if !process_state(pid).is_some_and(|(comm, state)| comm == "ctrmon" && state != 'Z') {
                continue;
            }
            let args = Cmdline::of(pid);
            if args.after("--id") == Some(id.as_encoded_bytes())
                && args.after("--run-dir") == Some(run_dir.as_os_str().as_encoded_bytes())
            {
                out.push(pid);
            }
        }
        out
    }

    /// Whether the monitor runs: its pid file names a live process called ctrmon (a
    /// pid taken over by another program is no monitor, and a zombie has ended: its
    /// reaper, the node's init, may be slow to reap it).
    pub fn monitor_alive(&self) -> bool {
        read_pid(&self.monitor_pid_file())
            .and_then(process_state)
            .is_some_and(|(comm, state)| comm == "ctrmon" && state != 'Z')
    }
}

/// The pid a pid file holds (a runtime's `--pid-file`, a monitor's): none when the
/// file is missing or holds no number.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
}

/// A process's arguments, from `/proc/PID/cmdline` (none once it is gone).
pub(crate) struct Cmdline(Vec<u8>);

impl Cmdline {
    pub(crate) fn of(pid: i32) -> Cmdline {
        Cmdline(std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
    }

    fn args(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|b| *b == 0)
    }

    /// Whether `flag` is one of them.
    pub(crate) fn has(&self, flag: &str) -> bool {
        self.args().any(|a| a == flag.as_bytes())
    }

    /// The argument after the first `flag`.
    pub(crate) fn after(&self, flag: &str) -> Option<&[u8]> {
        let mut args = self.args();
        args.find(|a| *a == flag.as_bytes())?;
        args.next()
    }
}

/// A process's command name and state letter (`R`, `S`, `Z` for a zombie, …), from
/// `/proc/PID/stat`; `None` once it is gone. The name sits between the first `(` and
/// the last `)`, and may hold either.
pub fn process_state(pid: i32) -> Option<(String, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.split_once('(')?;
    let (comm, rest) = rest.rsplit_once(')')?;
    Some((comm.to_string(), rest.trim_start().chars().next()?))
}

/// ctrmon's command line, as its callers build it.
#[derive(Debug)]
pub struct MonitorCommand(std::process::Command);

impl MonitorCommand {
    /// `CTRMON --id ID --runtime R [--runtime-root ROOT] [--runtime-arg A…] --run-dir RUN`.
    pub fn new(ctrmon: &Path, id: &str, runtime: &Runtime, run_dir: &Path) -> MonitorCommand {
        let mut c = std::process::Command::new(ctrmon);
        c.args(["--id", id]).arg("--runtime").arg(&runtime.path);
        if let Some(root) = &runtime.root {
            c.arg("--runtime-root").arg(root);
        }
        for a in &runtime.args {
            c.arg(format!("--runtime-arg={a}"));
        }
        c.arg("--run-dir").arg(run_dir);
        MonitorCommand(c)
    }

    /// `CTRMON --id POD --infra --ns-dir DIR`: the infra process of a pod (see
    /// [`infra`]); no runtime and no run directory, so no monitor scan takes it for
    /// a container's.
    pub fn infra(ctrmon: &Path, pod: &str, ns_dir: &Path) -> MonitorCommand {
        let mut c = std::process::Command::new(ctrmon);
        c.args(["--id", pod, "--infra", "--ns-dir"]).arg(ns_dir);
        MonitorCommand(c)
    }

    fn with(mut self, flag: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.0.arg(flag).arg(value);
        self
    }

    fn flag(mut self, flag: &str, on: bool) -> Self {
        if on {
            self.0.arg(flag);
        }
        self
    }

    /// `--bundle DIR`: create a container.
    pub fn bundle(self, dir: &Path) -> Self {
        self.with("--bundle", dir)
    }

    /// `--exec FILE`: run a process in the container.
    pub fn exec(self, process: &Path) -> Self {
        self.with("--exec", process)
    }

    /// `--exec-timeout SECONDS`.
    pub fn exec_timeout(self, secs: u64) -> Self {
        self.with("--exec-timeout", secs.to_string())
    }

    /// `--exec-output-max BYTES`.
    pub fn exec_output_max(self, bytes: usize) -> Self {
        self.with("--exec-output-max", bytes.to_string())
    }

    /// `--attach-socket PATH`.
    pub fn attach_socket(self, path: &Path) -> Self {
        self.with("--attach-socket", path)
    }

    /// `--log-path FILE`.
    pub fn log_path(self, path: &Path) -> Self {
        self.with("--log-path", path)
    }

    /// `--pid-file FILE`.
    pub fn pid_file(self, path: &Path) -> Self {
        self.with("--pid-file", path)
    }

    /// `--cgroup-parent PARENT`, with `--cgroup-manager systemd` for a slice.
    pub fn cgroup_parent(self, parent: &cgroup::Parent) -> Self {
        let me = match parent {
            cgroup::Parent::Slice(_) => self.with("--cgroup-manager", "systemd"),
            cgroup::Parent::Dir(_) => self,
        };
        me.with("--cgroup-parent", parent.as_str().as_ref())
    }

    /// `--stdin`.
    pub fn stdin(self, on: bool) -> Self {
        self.flag("--stdin", on)
    }

    /// `--tty`.
    pub fn tty(self, on: bool) -> Self {
        self.flag("--tty", on)
    }

    /// `--start`: start the container too.
    pub fn start(self, on: bool) -> Self {
        self.flag("--start", on)
    }

    /// `--restore DIR`: restore the container from the CRIU images in `dir`.
    pub fn restore(self, dir: &Path) -> Self {
        self.with("--restore", dir)
    }

    /// `--cleanup`: run `RUNTIME delete` once the container has exited.
    pub fn cleanup(self, on: bool) -> Self {
        self.flag("--cleanup", on)
    }

    /// Any other argument.
    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.0.arg(a);
        self
    }

    /// The command, to run.
    pub fn into_command(self) -> std::process::Command {
        self.0
    }
}

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// `2024-01-01T00:00:00.000000000Z` for a point in time (UTC).
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = crate::time::civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Nanoseconds since the epoch of a UTC timestamp as [`rfc3339_nanos`] writes it
/// (fewer fraction digits are fine); `None` when it is not one.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |a: usize, z: usize| s.get(a..z).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, se) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let rest = s[19..].strip_suffix('Z')?;
    let nanos = match rest.strip_prefix('.') {
        None if rest.is_empty() => 0,
        None => return None,
        Some(f) if f.is_empty() || f.len() > 9 || !f.bytes().all(|c| c.is_ascii_digit()) => {
            return None
        }
        Some(f) => f.parse::<i64>().ok()? * 10i64.pow(9 - f.len() as u32),
    };
    let days = crate::time::days_from_civil(y, mo, d);
    Some((days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000_000 + nanos)
}

/// Writes CRI log records.
pub struct CriLog<W: Write> {
    out: W,
    max_line: usize,
}

impl<W: Write> CriLog<W> {
    /// A writer cutting lines longer than `max_line` bytes into partial records.
    pub fn new(out: W, max_line: usize) -> Self {
        CriLog {
            out,
            max_line: max_line.max(1),
        }
    }

    /// Records one read of container output, stamped `now`. Returns bytes written.
    pub fn write(&mut self, stream: Stream, data: &[u8], now: SystemTime) -> io::Result<u64> {
        let buf = self.records(stream, data, now);
        self.out.write_all(&buf)?;
        Ok(buf.len() as u64)
    }

    /// The writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The writer, to truncate or replace it.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// The records one read of output becomes.
    pub fn records(&self, stream: Stream, data: &[u8], now: SystemTime) -> Vec<u8> {
        let mut buf = Vec::with_capacity(data.len() + 64);
        self.records_into(&mut buf, stream, data, now);
        buf
    }

    /// Appends the records one read of output becomes to `buf` (which a busy
    /// monitor reuses from read to read).
    pub fn records_into(&self, buf: &mut Vec<u8>, stream: Stream, data: &[u8], now: SystemTime) {
        let ts = rfc3339_nanos(now);
        let mut rest = data;
        while !rest.is_empty() {
            let (line, full, next) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true, &rest[i + 1..]),
                None => (rest, false, &rest[rest.len()..]),
            };
            if line.is_empty() {
                record(buf, &ts, stream, full, b"");
            }
            let mut chunks = line.chunks(self.max_line).peekable();
            while let Some(c) = chunks.next() {
                let last = chunks.peek().is_none();
                record(buf, &ts, stream, full && last, c);
            }
            rest = next;
        }
    }

    /// The writer, back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

fn record(buf: &mut Vec<u8>, ts: &str, stream: Stream, full: bool, text: &[u8]) {
    buf.extend_from_slice(ts.as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(stream.name().as_bytes());
    buf.extend_from_slice(if full { b" F " } else { b" P " });
    buf.extend_from_slice(text);
    buf.push(b'\n');
}

/// How a container ended, as ctrmon writes it to its exit file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitStatus {
    /// The exit code; 128+N when killed by signal N.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Whether the kernel's OOM killer killed it.
    pub oom_killed: bool,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// `Completed`, `Error` or `OOMKilled`, as the CRI reports it.
    pub reason: String,
}

impl ExitStatus {
    /// The status from a wait(2) result.
    pub fn new(
        code: Option<i32>,
        signal: Option<i32>,
        oom_killed: bool,
        started: SystemTime,
        finished: SystemTime,
    ) -> Self {
        let exit_code = match (code, signal) {
            (_, Some(s)) => 128 + s,
            (Some(c), None) => c,
            (None, None) => 255,
        };
        let reason = if oom_killed {
            "OOMKilled"
        } else if exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        ExitStatus {
            exit_code,
            signal,
            oom_killed,
            started_at: rfc3339_nanos(started),
            finished_at: rfc3339_nanos(finished),
            reason: reason.into(),
        }
    }

    /// Writes the status to `path` atomically and durably (see [`crate::atomic`]).
    pub fn write_to(&self, path: &Path) -> Result<(), crate::atomic::WriteError> {
        crate::atomic::write_json(path, self, 0o600)
    }

    /// The status in `path`; `None` when there is no such file yet.
    pub fn read_from(path: &Path) -> io::Result<Option<ExitStatus>> {
        match std::fs::read(path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// When it started, in ns since the epoch.
    pub fn started_at_ns(&self) -> Option<i64> {
        parse_rfc3339_nanos(&self.started_at)
    }

    /// When it ended, in ns since the epoch.
    pub fn finished_at_ns(&self) -> Option<i64> {
        parse_rfc3339_nanos(&self.finished_at)
    }
}

/// Whether `pid` is the infra process started for the namespaces in `ns_dir`: its
/// command line says so (a pid taken over by another program is not).
pub fn is_infra(pid: i32, ns_dir: &Path) -> bool {
    // As ctrmon has it: absolute.
    let Ok(ns_dir) = std::path::absolute(ns_dir) else {
        return false;
    };
    let args = Cmdline::of(pid);
    args.has("--infra")
        && args.after("--ns-dir") == Some(ns_dir.as_os_str().as_encoded_bytes())
        && !matches!(process_state(pid), Some((_, 'Z')) | None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_process_state_is_read_from_proc() {
        let (_, state) = process_state(std::process::id() as i32).expect("this process");
        assert!(matches!(state, 'R' | 'S'), "{state}");
        assert_eq!(process_state(i32::MAX), None, "no such pid");
    }

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn timestamps_are_rfc3339_with_nanoseconds() {
        assert_eq!(rfc3339_nanos(at(0, 0)), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(at(1_704_067_200, 5)),
            "2024-01-01T00:00:00.000000005Z"
        );
        // A leap day.
        assert_eq!(
            rfc3339_nanos(at(951_782_400 + 3661, 123_456_789)),
            "2000-02-29T01:01:01.123456789Z"
        );
    }

    #[test]
    fn timestamps_parse_back() {
        for t in [
            at(0, 0),
            at(1_704_067_200, 5),
            at(951_782_400 + 3661, 123_456_789),
        ] {
            let ns = t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64;
            assert_eq!(parse_rfc3339_nanos(&rfc3339_nanos(t)), Some(ns));
        }
        assert_eq!(
            parse_rfc3339_nanos("2024-03-01T12:00:00.5Z"),
            Some(1_709_294_400_500_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos("2024-03-01T12:00:00Z"),
            Some(1_709_294_400_000_000_000)
        );
        for bad in [
            "garbage",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "",
        ] {
            assert_eq!(parse_rfc3339_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn full_partial_and_long_lines() {
        let mut log = CriLog::new(Vec::new(), 4);
        let t = at(0, 0);
        log.write(Stream::Stdout, b"ab\n\ncdefghij\nxy", t).unwrap();
        log.write(Stream::Stderr, b"z\n", t).unwrap();
        let out = String::from_utf8(log.into_inner()).unwrap();
        let ts = "1970-01-01T00:00:00.000000000Z";
        let want = [
            format!("{ts} stdout F ab"),
            format!("{ts} stdout F "),
            format!("{ts} stdout P cdef"),
            format!("{ts} stdout F ghij"),
            format!("{ts} stdout P xy"),
            format!("{ts} stderr F z"),
        ];
        assert_eq!(out.lines().collect::<Vec<_>>(), want);
    }

    #[test]
    fn exit_status_codes_and_reasons() {
        let (s, f) = (at(10, 0), at(20, 0));
        let e = ExitStatus::new(None, Some(9), false, s, f);
        assert_eq!((e.exit_code, e.reason.as_str()), (137, "Error"));
        let e = ExitStatus::new(Some(0), None, false, s, f);
        assert_eq!((e.exit_code, e.reason.as_str()), (0, "Completed"));
        let e = ExitStatus::new(None, Some(9), true, s, f);
        assert_eq!(e.reason, "OOMKilled");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exit");
        e.write_to(&p).unwrap();
        let back = ExitStatus::read_from(&p).unwrap().unwrap();
        assert_eq!(back, e);
        assert_eq!(back.finished_at_ns(), Some(20_000_000_000));
        assert_eq!(
            ExitStatus::read_from(&dir.path().join("none")).unwrap(),
            None
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
