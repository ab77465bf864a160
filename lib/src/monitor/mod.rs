//! Wire formats of the container monitor (ctrmon) that its callers read: the CRI
//! log file and the exit file.
//!
//! CRI log lines are what kubelet parses (`kubectl logs`): an RFC 3339 timestamp
//! with nanoseconds, the stream, `F` for a full line or `P` for part of one, and the
//! text. Output is written as it arrives, like conmon does: the newline-terminated
//! lines of a read become `F` records, a trailing fragment a `P` record, and lines
//! longer than a bound are cut into `P` records.

pub mod attach;
pub mod cgroup;
pub mod exec;
#[allow(unsafe_code)]
pub mod run;

use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

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
    let (y, m, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
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

    /// Writes the status to `path` atomically (temp file, fsync, rename).
    pub fn write_to(&self, path: &Path) -> io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new().prefix(".exit-").tempfile_in(dir)?;
        serde_json::to_writer(&mut tmp, self).map_err(io::Error::other)?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        let back: ExitStatus = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
