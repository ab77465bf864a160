//! ctrmon with real runc: exit statuses, CRI logs, log reopening, detaching, and
//! the runtime's errors reaching the caller.

use crikit::runtime::monitor::{MonitorCommand, StateDir};
use crikit::runtime::runc::Runtime;
use e2e::{bin, pull_into, run, CgroupGuard, Image, Registry, Run, TempRoot};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

struct World {
    tmp: TempRoot,
    image: String,
    runc_root: PathBuf,
    ids: std::cell::RefCell<Vec<String>>,
}

impl Drop for World {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&self.runc_root)
                .args(["delete", "-f", id])
                .output();
        }
    }
}

impl World {
    fn new() -> World {
        let reg = Registry::start();
        let tmp = TempRoot::new();
        let p = reg.push("mon/busybox", &Image::busybox());
        let image = pull_into(&tmp.path().join("state"), &reg.addr, &p.reference);
        let runc_root = tmp.path().join("runc");
        World {
            tmp,
            image,
            runc_root,
            ids: Default::default(),
        }
    }

    fn bundle(&self, name: &str, extra: &[&str], script: &str) -> PathBuf {
        let b = self.tmp.path().join(name);
        let mut c = Command::new(bin("bundlegen"));
        c.arg("--root")
            .arg(self.tmp.path().join("state"))
            .args(extra)
            .arg(&self.image)
            .arg(&b);
        c.args(["--", "/bin/sh", "-c", script]);
        run(c, T).ok();
        b
    }

    fn state(&self, id: &str) -> PathBuf {
        self.dirs(id).path().to_path_buf()
    }

    fn dirs(&self, id: &str) -> StateDir {
        StateDir::new(&self.tmp.path().join("run"), id)
    }

    fn runtime(&self) -> Runtime {
        Runtime::new("runc", Some(self.runc_root.clone()))
    }

    fn ctrmon(&self, bundle: &Path, id: &str, extra: &[&str]) -> Run {
        self.ids.borrow_mut().push(id.to_string());
        let mut c = MonitorCommand::new(
            &bin("ctrmon"),
            id,
            &self.runtime(),
            &self.tmp.path().join("run"),
        )
        .bundle(bundle);
        for a in extra {
            c = c.arg(a);
        }
        run(c.into_command(), T)
    }

    /// Runs `bundle` under ctrmon with a stdin pipe served on an attach socket
    /// (`extra`: `--start`, `--tty`, …); a connected client and the socket.
    fn attached(
        &self,
        bundle: &Path,
        id: &str,
        extra: &[&str],
    ) -> (crikit::runtime::monitor::attach::Client, PathBuf) {
        let sock = self.tmp.path().join(format!("{id}.sock"));
        let mut args = vec!["--stdin", "--attach-socket", sock.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.ctrmon(bundle, id, &args).ok();
        let client = crikit::runtime::monitor::attach::Client::connect(&sock).expect("connect");
        (client, sock)
    }

    fn exit(&self, id: &str) -> serde_json::Value {
        let p = self.dirs(id).exit_file();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.exists() {
            assert!(Instant::now() < deadline, "no exit file for {id}");
            std::thread::sleep(Duration::from_millis(20));
        }
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    }

    fn log(&self, id: &str) -> Vec<(String, String, String)> {
        std::fs::read_to_string(self.state(id).join("ctr.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut p = l.splitn(4, ' ');
                let ts = p.next().unwrap_or_default();
                assert!(ts.ends_with('Z') && ts.len() == 30, "timestamp {ts:?}");
                (
                    p.next().unwrap_or_default().to_string(),
                    p.next().unwrap_or_default().to_string(),
                    p.next().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Whether runc still holds state for `id`.
    fn runc_has(&self, id: &str) -> bool {
        Command::new("runc")
            .arg("--root")
            .arg(&self.runc_root)
            .args(["state", id])
            .output()
            .unwrap()
            .status
            .success()
    }

    fn runc(&self, args: &[&str]) {
        let out = Command::new("runc")
            .arg("--root")
            .arg(&self.runc_root)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "runc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn exit_codes_and_signals() {
    let w = World::new();
    for (id, script, want) in [("ok", "exit 0", 0), ("one", "exit 1", 1)] {
        let b = w.bundle(id, &[], script);
        let r = w.ctrmon(&b, id, &["--start", "--cleanup"]).ok();
        assert!(
            r.stdout.trim().parse::<i32>().unwrap() > 0,
            "{}",
            r.describe()
        );
        let e = w.exit(id);
        assert_eq!(e["exit_code"], want);
        assert_eq!(e["reason"], if want == 0 { "Completed" } else { "Error" });
        assert_eq!(e["oom_killed"], false);
        // --cleanup: the runtime's state goes once the monitor has the exit, and
        // `deleted` says so.
        let deleted = w.dirs(id).deleted_file();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !deleted.exists() {
            assert!(Instant::now() < deadline, "no {}", deleted.display());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!w.runc_has(id), "runc still has {id} after --cleanup");
    }
    // The shell must not be its PID namespace's init, which ignores signals it has no
    // handler for: these containers share the host's PID namespace.
    let patch = w.tmp.path().join("no-pidns.json");
    std::fs::write(
        &patch,
        r#"{"linux": {"namespaces": [{"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}]}}"#,
    )
    .unwrap();
    for (id, sig, want) in [("killed", "KILL", 137), ("termed", "TERM", 143)] {
        let b = w.bundle(id, &["--patch", patch.to_str().unwrap()], "sleep 100");
        let r = w.ctrmon(&b, id, &["--start"]).ok();
        let state = Command::new("runc")
            .arg("--root")
            .arg(&w.runc_root)
            .args(["state", id])
            .output()
            .unwrap();
        assert!(
            state.status.success(),
            "{}\n{}",
            r.describe(),
            String::from_utf8_lossy(&state.stderr)
        );
        w.runc(&["kill", id, sig]);
        let e = w.exit(id);
        assert_eq!(e["exit_code"], want, "{e}");
        // Without --cleanup the stopped container stays the runtime's to delete.
        assert!(w.runc_has(id), "runc lost {id} without --cleanup");
        assert!(!w.dirs(id).deleted_file().exists());
    }
}

#[test]
fn cri_log_lines_partial_and_split() {
    let w = World::new();
    let b = w.bundle(
        "log",
        &[],
        "echo out1; echo err1 >&2; printf part; sleep 0.1; echo ial; echo 0123456789abcdefghij",
    );
    w.ctrmon(&b, "log", &["--start", "--log-line-max", "8"])
        .ok();
    w.exit("log");
    let lines = w.log("log");
    let has = |s: &str, t: &str, x: &str| lines.iter().any(|l| l.0 == s && l.1 == t && l.2 == x);
    assert!(
        has("stdout", "F", "out1") && has("stderr", "F", "err1"),
        "{lines:?}"
    );
    assert!(
        has("stdout", "P", "part") && has("stdout", "F", "ial"),
        "{lines:?}"
    );
    assert!(
        has("stdout", "P", "01234567")
            && has("stdout", "P", "89abcdef")
            && has("stdout", "F", "ghij"),
        "{lines:?}"
    );
}

#[test]
fn log_reopens_after_rotation_and_monitor_outlives_its_caller() {
    let w = World::new();
    let b = w.bundle("rot", &[], "echo before; sleep 1; echo after");
    // The caller is killed outright right after ctrmon returns: the monitor, in its
    // own session, carries on.
    let mut c = Command::new("setsid");
    c.arg("--wait")
        .arg(bin("ctrmon"))
        .arg("--bundle")
        .arg(&b)
        .args(["--id", "rot", "--run-dir"]);
    c.arg(w.tmp.path().join("run"))
        .arg("--runtime-root")
        .arg(&w.runc_root)
        .arg("--start");
    w.ids.borrow_mut().push("rot".into());
    let mut child = c.stdout(std::process::Stdio::null()).spawn().unwrap();
    let pid_file = w.state("rot").join("ctrmon.pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pid_file.exists() {
        assert!(Instant::now() < deadline, "no monitor started");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The caller's whole session goes (setsid made it a group of its own).
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    let log = w.state("rot").join("ctr.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("before")
    {
        assert!(Instant::now() < deadline, "no output logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::rename(&log, w.state("rot").join("ctr.log.1")).unwrap();
    let pid = std::fs::read_to_string(w.state("rot").join("ctrmon.pid")).unwrap();
    let pid: i32 = pid.trim().parse().expect("monitor pid");
    assert!(pid > 1, "monitor pid {pid}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP to the monitor");
    let e = w.exit("rot");
    assert_eq!(e["exit_code"], 0);
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("stdout F after"));
    assert!(!std::fs::read_to_string(w.state("rot").join("ctr.log.1"))
        .unwrap()
        .contains("after"));
}

#[test]
fn bad_bundles_and_runtime_errors_reach_the_caller() {
    let w = World::new();
    let missing = w.tmp.path().join("nope");
    let r = w.ctrmon(&missing, "missing", &[]).expect_code(1);
    assert!(r.stderr.contains("config.json"), "{}", r.describe());
    // A bind mount of a missing source: runc create fails, and says why.
    let b = w.bundle("badmount", &[], "true");
    let cfg = b.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/x", "type": "bind", "source": "/definitely/missing", "options": ["rbind"]}));
    std::fs::write(&cfg, serde_json::to_vec(&v).unwrap()).unwrap();
    let r = w.ctrmon(&b, "badmount", &["--start"]).expect_code(1);
    assert!(
        r.stderr.contains("/definitely/missing") || r.stderr.contains("no such file"),
        "{}",
        r.describe()
    );
    // The same text on --sync-fd, as one JSON line.
    let mut c = Command::new("bash");
    c.arg("-c").arg(format!(
        "{} --bundle {} --id badmount2 --run-dir {} --runtime-root {} --sync-fd 3 3>{}/sync; true",
        bin("ctrmon").display(),
        b.display(),
        w.tmp.path().join("run").display(),
        w.runc_root.display(),
        w.tmp.path().display()
    ));
    run(c, T).ok();
    let line = std::fs::read_to_string(w.tmp.path().join("sync")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["pid"], -1);
    assert!(v["message"].as_str().unwrap().contains("missing"), "{line}");
}

#[test]
fn oom_kill_is_reported() {
    let w = World::new();
    let b = w.bundle(
        "oom",
        &["--memory", "16m"],
        "x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; while true; do x=\"$x$x\"; done",
    );
    w.ctrmon(&b, "oom", &["--start", "--cleanup"]).ok();
    let e = w.exit("oom");
    assert_eq!(e["oom_killed"], true, "{e}");
    assert_eq!(e["reason"], "OOMKilled");
    assert_eq!(e["exit_code"], 137);
}

#[test]
fn log_size_max_bounds_the_file() {
    let w = World::new();
    let b = w.bundle("big", &[], "i=0; while [ $i -lt 200 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done");
    w.ctrmon(&b, "big", &["--start", "--log-size-max", "4096"])
        .ok();
    w.exit("big");
    let log = std::fs::read_to_string(w.state("big").join("ctr.log")).unwrap();
    assert!(log.len() <= 4096, "log is {} bytes", log.len());
    assert!(
        log.contains("line-199-"),
        "the newest output is kept: {log}"
    );
    assert!(!log.contains("line-0-"), "the oldest output was dropped");
}

#[test]
fn attach_round_trip_with_stdin() {
    use crikit::runtime::monitor::attach;
    let w = World::new();
    let b = w.bundle("att", &[], "cat; echo bye >&2");
    let (mut a, sock) = w.attached(&b, "att", &["--start"]);
    let mut second = attach::Client::connect(&sock).expect("a second client");
    a.stdin(b"hello through attach\n").unwrap();
    let (kind, data) = a.next_frame().unwrap().expect("a frame");
    assert_eq!(
        (kind, data.as_slice()),
        (attach::STDOUT, &b"hello through attach\n"[..])
    );
    let (kind, data) = second.next_frame().unwrap().expect("a frame");
    assert_eq!(
        (kind, data.as_slice()),
        (attach::STDOUT, &b"hello through attach\n"[..]),
        "both clients see output"
    );
    a.close_stdin().unwrap();
    let mut frames = Vec::new();
    while let Some(f) = a.next_frame().unwrap() {
        frames.push(f);
    }
    assert!(
        frames.contains(&(attach::STDERR, b"bye\n".to_vec())),
        "{frames:?}"
    );
    let (kind, exit) = frames.last().cloned().expect("exit frame");
    assert_eq!(kind, attach::EXIT);
    let exit: serde_json::Value = serde_json::from_slice(&exit).unwrap();
    assert_eq!(exit["exit_code"], 0);
    let log = std::fs::read_to_string(w.state("att").join("ctr.log")).unwrap();
    assert!(log.contains("stdout F hello through attach"), "{log}");
    assert!(!sock.exists(), "the socket goes with the monitor");
}

#[test]
fn sync_exec_with_output_and_with_a_timeout() {
    let w = World::new();
    let b = w.bundle("ex", &[], "sleep 100");
    w.ctrmon(&b, "ex", &["--start"]).ok();
    let n = std::cell::Cell::new(0);
    let process = |args: &[&str]| {
        n.set(n.get() + 1);
        let p = w.tmp.path().join(format!("process-{}.json", n.get()));
        let spec = serde_json::json!({"args": args, "cwd": "/tmp", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"]});
        std::fs::write(&p, spec.to_string()).unwrap();
        p
    };
    let exec = |p: &Path, extra: &[&str]| {
        let mut c = MonitorCommand::new(
            &bin("ctrmon"),
            "ex",
            &w.runtime(),
            &w.tmp.path().join("run"),
        )
        .exec(p);
        for a in extra {
            c = c.arg(a);
        }
        let r = run(c.into_command(), T).ok();
        // The documented wire format, and the library's type for it.
        let typed: crikit::runtime::monitor::exec::ExecResult =
            serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.describe()));
        let v = serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap();
        assert_eq!(v["exit_code"], typed.exit_code);
        v
    };
    let v = exec(
        &process(&["/bin/sh", "-c", "pwd; echo oops >&2; exit 3"]),
        &[],
    );
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["stdout"]["text"], "/tmp\n");
    assert_eq!(v["stderr"]["text"], "oops\n");
    assert_eq!(v["timed_out"], false);
    let t0 = Instant::now();
    let v = exec(&process(&["/bin/sleep", "30"]), &["--exec-timeout", "1"]);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the timeout killed the process"
    );
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["exit_code"], 137);
    let v = exec(
        &process(&[
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 100 ]; do echo 0123456789; i=$((i+1)); done",
        ]),
        &["--exec-output-max", "100"],
    );
    assert_eq!(v["truncated"], true);
    assert_eq!(v["stdout"]["text"].as_str().unwrap().len(), 100);
    // A background process holding the pipes does not hold the result.
    let t0 = Instant::now();
    let v = exec(&process(&["/bin/sh", "-c", "sleep 30 & echo started"]), &[]);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["stdout"]["text"], "started\n");
    w.runc(&["kill", "ex", "KILL"]);
    w.exit("ex");
}

#[test]
fn a_detached_monitor_reports_its_own_trouble_in_its_log_file() {
    let w = World::new();
    let b = w.bundle("diag", &[], "exit 0");
    // An exit file in a directory that does not exist cannot be written: the monitor
    // has no stderr any more, so it says so in its diagnostics file.
    let missing = w.tmp.path().join("no-such-dir/exit");
    w.ctrmon(
        &b,
        "diag",
        &["--start", "--exit-file", missing.to_str().unwrap()],
    )
    .ok();
    let diag = w.dirs("diag").diagnostics();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&diag).unwrap_or_default();
        if text.contains("writing the exit file") {
            assert!(text.contains("no-such-dir"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing in {}: {text:?}",
            diag.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!missing.exists());
}

/// Reads frames until the exit frame; returns the output and the exit status.
fn drain(c: &mut crikit::runtime::monitor::attach::Client) -> (Vec<u8>, serde_json::Value) {
    use crikit::runtime::monitor::attach;
    let mut out = Vec::new();
    while let Some((kind, data)) = c.next_frame().expect("reading frames") {
        match kind {
            attach::STDOUT | attach::STDERR => out.extend_from_slice(&data),
            attach::EXIT => return (out, serde_json::from_slice(&data).expect("exit JSON")),
            k => panic!("unexpected frame kind {k}"),
        }
    }
    panic!(
        "the connection closed without an exit frame after {:?}",
        String::from_utf8_lossy(&out)
    );
}

/// Reads output frames until `want` appears in what arrived.
fn read_until(c: &mut crikit::runtime::monitor::attach::Client, want: &str) -> String {
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains(want) {
        match c.next_frame().expect("reading frames") {
            Some((crikit::runtime::monitor::attach::EXIT, _)) | None => {
                panic!("ended before {want:?}: {:?}", String::from_utf8_lossy(&out))
            }
            Some((_, data)) => out.extend_from_slice(&data),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn terminal_mode_with_resize_and_eof() {
    let w = World::new();
    let b = w.bundle(
        "tty",
        &["--tty"],
        "[ -t 0 ] && [ -t 1 ] && echo on a tty; read line; echo got $line; stty size; cat; echo eof seen; echo to stderr >&2",
    );
    // A terminal process without --tty is refused before anything runs.
    let r = w.ctrmon(&b, "tty-no", &["--start"]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(r.stderr.contains("--tty"), "{}", r.describe());

    let (mut a, _) = w.attached(&b, "tty", &["--tty"]);
    w.runc(&["start", "tty"]);
    read_until(&mut a, "on a tty");
    a.resize(33, 101).unwrap();
    a.stdin(b"hello\n").unwrap();
    let seen = read_until(&mut a, "33 101");
    // The terminal echoes input and turns \n into \r\n.
    assert!(seen.contains("got hello\r\n"), "{seen:?}");
    a.close_stdin().unwrap();
    let (out, exit) = drain(&mut a);
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("eof seen"), "^D ended cat: {out:?}");
    assert!(
        out.contains("to stderr"),
        "stderr shares the terminal: {out:?}"
    );
    assert_eq!(exit["exit_code"], 0);
    let log = w.log("tty");
    assert!(log.iter().all(|(s, _, _)| s == "stdout"), "{log:?}");
    let raw = std::fs::read_to_string(w.state("tty").join("ctr.log")).unwrap();
    assert!(
        raw.contains(" stdout F to stderr\r\n"),
        "terminal output is logged as it came: {raw:?}"
    );
    assert_eq!(w.exit("tty")["exit_code"], 0);
}

#[test]
fn interactive_exec_on_an_attach_socket() {
    use crikit::runtime::monitor::attach;
    let w = World::new();
    let b = w.bundle("ix", &[], "sleep 100");
    w.ctrmon(&b, "ix", &["--start"]).ok();
    let write_process = |name: &str, terminal: bool, args: &[&str]| {
        let p = w.tmp.path().join(name);
        let spec = serde_json::json!({"terminal": terminal, "args": args, "cwd": "/",
            "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin", "TERM=xterm"]});
        std::fs::write(&p, spec.to_string()).unwrap();
        p
    };
    let exec = |process: &Path, sock: &Path, extra: &[&str]| {
        let mut c = Command::new(bin("ctrmon"));
        c.args(["--id", "ix", "--run-dir"])
            .arg(w.tmp.path().join("run"))
            .arg("--runtime-root")
            .arg(&w.runc_root)
            .arg("--exec")
            .arg(process)
            .arg("--attach-socket")
            .arg(sock)
            .args(extra);
        run(c, T)
    };

    // Pipes: stdin in, stdout and stderr apart, the exit code out.
    let sock = w.tmp.path().join("ix1.sock");
    let exit_file = w.tmp.path().join("ix1.exit");
    let p = write_process(
        "p1.json",
        false,
        &["/bin/sh", "-c", "read x; echo out $x; echo err >&2; exit 7"],
    );
    let r = exec(
        &p,
        &sock,
        &["--stdin", "--exit-file", exit_file.to_str().unwrap()],
    )
    .ok();
    let pid: i32 = r.stdout.trim().parse().expect("the exec pid");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let mut a = attach::Client::connect(&sock).expect("connect");
    a.stdin(b"one\n").unwrap();
    let mut frames = Vec::new();
    while let Some(f) = a.next_frame().unwrap() {
        frames.push(f);
    }
    assert!(
        frames.contains(&(attach::STDOUT, b"out one\n".to_vec())),
        "{frames:?}"
    );
    assert!(
        frames.contains(&(attach::STDERR, b"err\n".to_vec())),
        "{frames:?}"
    );
    let (kind, exit) = frames.last().cloned().unwrap();
    assert_eq!(kind, attach::EXIT);
    let exit: serde_json::Value = serde_json::from_slice(&exit).unwrap();
    assert_eq!(exit["exit_code"], 7);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&exit_file).unwrap()).unwrap();
    assert_eq!(on_disk["exit_code"], 7);

    // A terminal, ended by ^D from close_stdin.
    let sock = w.tmp.path().join("ix2.sock");
    let p = write_process(
        "p2.json",
        true,
        &["/bin/sh", "-c", "stty size; cat; echo done"],
    );
    let refused = exec(&p, &sock, &["--stdin"]);
    assert_eq!(refused.code, Some(1), "{}", refused.describe());
    assert!(refused.stderr.contains("--tty"), "{}", refused.describe());
    exec(&p, &sock, &["--stdin", "--tty"]).ok();
    let mut a = attach::Client::connect(&sock).expect("connect");
    a.stdin(b"typed\n").unwrap();
    read_until(&mut a, "typed");
    a.close_stdin().unwrap();
    let (out, exit) = drain(&mut a);
    assert!(String::from_utf8_lossy(&out).contains("done"), "{out:?}");
    assert_eq!(exit["exit_code"], 0);

    // --attach-wait: the process starts once a client is there, so its first output
    // reaches it; with nobody coming, nothing starts.
    let sock = w.tmp.path().join("ix3.sock");
    let p = write_process("p3.json", false, &["/bin/sh", "-c", "echo first; exit 3"]);
    let waiting = {
        std::thread::scope(|s| {
            let t = s.spawn(|| exec(&p, &sock, &["--attach-wait", "10"]));
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut a = loop {
                if let Ok(a) = attach::Client::connect(&sock) {
                    break a;
                }
                assert!(Instant::now() < deadline, "no attach socket");
                std::thread::sleep(Duration::from_millis(10));
            };
            let (out, exit) = drain(&mut a);
            (t.join().unwrap(), out, exit)
        })
    };
    let (r, out, exit) = waiting;
    r.ok();
    assert_eq!(
        (out.as_slice(), exit["exit_code"].as_i64()),
        (&b"first\n"[..], Some(3))
    );
    let nobody = exec(&p, &w.tmp.path().join("ix4.sock"), &["--attach-wait", "1"]);
    assert_eq!(nobody.code, Some(1), "{}", nobody.describe());
    assert!(
        nobody.stderr.contains("waiting for an attach client"),
        "{}",
        nobody.describe()
    );

    // The container itself is untouched by its execs.
    let state = Command::new("runc")
        .arg("--root")
        .arg(&w.runc_root)
        .args(["state", "ix"])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    assert_eq!(state["status"], "running");
    assert!(!w.state("ix").join("exit").exists());
    w.runc(&["kill", "ix", "KILL"]);
    assert_eq!(w.exit("ix")["exit_code"], 137);
}

#[test]
fn log_reopens_on_a_control_message() {
    let w = World::new();
    let b = w.bundle("ro", &[], "read x; echo before; read x; echo after");
    let (mut a, _) = w.attached(&b, "ro", &["--start"]);
    a.stdin(b"\n").unwrap();
    read_until(&mut a, "before");
    let log = w.state("ro").join("ctr.log");
    let moved = w.tmp.path().join("ro.log.1");
    std::fs::rename(&log, &moved).unwrap();
    // A log that cannot be opened: the answer says why, and the old file goes on.
    std::fs::create_dir(&log).unwrap();
    let e = a.reopen_log().unwrap_err().to_string();
    assert!(
        e.contains("reopening the log") && e.contains("ctr.log"),
        "{e}"
    );
    std::fs::remove_dir(&log).unwrap();
    a.reopen_log().unwrap();
    assert!(log.is_file(), "the new log is open once reopen_log returns");
    a.stdin(b"\n").unwrap();
    let _ = drain(&mut a);
    let old = std::fs::read_to_string(&moved).unwrap();
    let new = std::fs::read_to_string(&log).unwrap();
    assert!(
        old.contains("stdout F before") && !old.contains("after"),
        "{old}"
    );
    assert!(
        new.contains("stdout F after") && !new.contains("before"),
        "{new}"
    );
}

fn cgroup_of(pid: i32, controller: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, c, path) = (p.next()?, p.next()?, p.next()?);
            c.split(',')
                .any(|x| x == controller)
                .then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no {controller:?} cgroup in {text}"))
}

#[test]
fn monitor_joins_a_cgroup_under_the_parent_and_removes_it() {
    let w = World::new();
    let name = w
        .tmp
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "");
    let parent = format!("/crikit-test-{name}");
    let _guard = CgroupGuard(parent.clone());
    let patch = w.tmp.path().join("cg.json");
    std::fs::write(
        &patch,
        serde_json::json!({"linux": {"cgroupsPath": format!("{parent}/ctr")}}).to_string(),
    )
    .unwrap();
    let b = w.bundle("cg", &["--patch", patch.to_str().unwrap()], "sleep 100");

    let r = w.ctrmon(&b, "cg-rel", &["--cgroup-parent", "kubepods"]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(r.stderr.contains("absolute"), "{}", r.describe());
    // Under systemd the parent is a slice (the scope itself is tried in the node).
    let r = w.ctrmon(
        &b,
        "cg-slice",
        &["--cgroup-manager", "systemd", "--cgroup-parent", &parent],
    );
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains("not a systemd slice name"),
        "{}",
        r.describe()
    );

    let r = w
        .ctrmon(
            &b,
            "cg",
            &["--start", "--cleanup", "--cgroup-parent", &parent],
        )
        .ok();
    let ctr: i32 = r.stdout.trim().parse().unwrap();
    let mon: i32 = std::fs::read_to_string(w.state("cg").join("ctrmon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(cgroup_of(mon, "memory"), format!("{parent}/ctrmon-cg"));
    assert_eq!(cgroup_of(mon, "pids"), format!("{parent}/ctrmon-cg"));
    assert_eq!(cgroup_of(ctr, "memory"), format!("{parent}/ctr"));
    let mon_dir = Path::new("/sys/fs/cgroup/memory")
        .join(parent.trim_start_matches('/'))
        .join("ctrmon-cg");
    assert!(mon_dir.is_dir());

    w.runc(&["kill", "cg", "KILL"]);
    assert_eq!(w.exit("cg")["exit_code"], 137);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{mon}")).exists() {
        assert!(Instant::now() < deadline, "the monitor did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!mon_dir.exists(), "the monitor's cgroup is removed");
}

#[test]
fn fast_output_is_logged_whole_and_in_order() {
    let w = World::new();
    // 300k lines as fast as the shell can write them, on both streams.
    let b = w.bundle("fast", &[], "seq 1 200000; seq 1 100000 >&2");
    w.ctrmon(&b, "fast", &["--start"]).ok();
    assert_eq!(w.exit("fast")["exit_code"], 0);
    let log = w.log("fast");
    // Reads cut lines anywhere: partial records join up to the next full one, as
    // kubelet reads them.
    let lines = |stream: &str| -> Vec<u64> {
        let mut out = Vec::new();
        let mut part = String::new();
        for (_, tag, text) in log.iter().filter(|(s, _, _)| s == stream) {
            part.push_str(text);
            if tag == "F" {
                out.push(part.parse().unwrap_or_else(|_| panic!("line {part:?}")));
                part.clear();
            }
        }
        assert!(part.is_empty(), "a partial line at the end: {part:?}");
        out
    };
    assert_eq!(lines("stdout"), (1..=200_000).collect::<Vec<u64>>());
    assert_eq!(lines("stderr"), (1..=100_000).collect::<Vec<u64>>());
}

#[test]
fn what_the_init_leaves_behind_is_killed_before_the_exit_is_recorded() {
    let w = World::new();
    // No PID namespace of its own (as a container in a pod's shared one): the init's
    // end does not end the sleep it started, which holds its stdout.
    let patch = w.tmp.path().join("no-pidns.json");
    std::fs::write(
        &patch,
        r#"{"linux": {"namespaces": [{"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}]}}"#,
    )
    .unwrap();
    let b = w.bundle(
        "leftover",
        &["--patch", patch.to_str().unwrap()],
        "sleep 4321 & echo init-done; exit 3",
    );
    w.ctrmon(&b, "leftover", &["--start"]).ok();
    let e = w.exit("leftover");
    assert_eq!(e["exit_code"], 3, "{e}");
    // By the time the exit file is there, the sleep is gone, and the output came.
    assert!(
        !e2e::process_runs(b"sleep\x004321\x00"),
        "the init's leftover still runs"
    );
    assert!(
        w.log("leftover")
            .iter()
            .any(|(s, _, l)| s == "stdout" && l == "init-done"),
        "{:?}",
        w.log("leftover")
    );
}
