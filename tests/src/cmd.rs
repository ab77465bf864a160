//! Running the crikit binaries (from `CRIKIT_BIN_DIR`, default the workspace's
//! `target/debug`) with a timeout and an expected outcome; on a surprise the
//! panic message carries argv, exit status, stdout and stderr.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Path of a crikit binary. Panics with the path when it is missing: build first
/// (`make test` does).
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("CRIKIT_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` (or set CRIKIT_BIN_DIR)",
        p.display()
    );
    p
}

/// What a finished command left.
#[derive(Debug)]
pub struct Run {
    /// argv, for messages.
    pub argv: String,
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code and returns self.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit status\n{}",
            self.describe()
        );
        self
    }

    /// Asserts success.
    pub fn ok(self) -> Self {
        self.expect_code(0)
    }

    /// Asserts stderr contains `s`.
    pub fn stderr_has(self, s: &str) -> Self {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}\n{}",
            self.describe()
        );
        self
    }

    /// A full description for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "argv: {}\nexit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.argv, self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion within `timeout`; kills it and panics past that.
pub fn run(cmd: Command, timeout: Duration) -> Run {
    run_input(cmd, None, timeout)
}

/// Like [`run`], with `input` on the command's stdin (None: /dev/null).
pub fn run_input(mut cmd: Command, input: Option<&[u8]>, timeout: Duration) -> Run {
    let argv = format!("{cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {argv}: {e}"));
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        let data = data.to_vec();
        // A writer thread, so a command that does not read cannot wedge the test.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let r = Run {
        argv,
        code: status.and_then(|s| s.code()),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "timed out after {timeout:?}\n{}",
        r.describe()
    );
    r
}
