//! crid driven by cri-tools' crictl, as a node operator drives a runtime: pull, runp,
//! create, start, exec -s, logs, stats, inspect, then stop and remove, with crictl's
//! bare pod config and with the one kubelet sends. crictl is not part of the
//! project: these tests run when `CRICTL` or PATH finds it and report themselves
//! skipped when not (see `e2e::skip`).

use e2e::crid::{Network, World};
use e2e::{process_runs, run, wait_for, Run};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

struct Crictl {
    bin: PathBuf,
    socket: String,
}

impl Crictl {
    fn find(w: &World) -> Option<Crictl> {
        let bin = e2e::skip::find("CRICTL", "crictl");
        if !e2e::skip::require("crictl", bin.is_some(), "it is not found (CRICTL or PATH)") {
            return None;
        }
        let bin = bin?;
        Some(Crictl {
            bin,
            socket: format!("unix://{}", w.crid.socket.display()),
        })
    }

    /// `crictl ARGS` against the test's crid, no configuration file of the host's.
    fn run(&self, args: &[&str]) -> Run {
        let mut c = Command::new(&self.bin);
        c.args(["--config", "/dev/null", "--timeout", "30s"])
            .args(["--runtime-endpoint", &self.socket])
            .args(["--image-endpoint", &self.socket])
            .args(args);
        run(c, T)
    }

    /// `crictl ARGS`, which must succeed; its stdout, trimmed.
    fn ok(&self, args: &[&str]) -> String {
        self.run(args).ok().stdout.trim().to_string()
    }

    /// `crictl events -o json` running, its output going to `out`.
    fn events(&self, out: &Path) -> std::process::Child {
        Command::new(&self.bin)
            .args(["--config", "/dev/null", "--runtime-endpoint", &self.socket])
            .args(["events", "--output", "json"])
            .stdout(std::fs::File::create(out).expect("the events file"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("crictl events")
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("crictl {args:?}: {e}: {out}"))
    }
}

fn write_json(dir: &Path, name: &str, v: &serde_json::Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_runs_a_bare_pod_from_pull_to_removal() {
    let w = World::new(Network::Loopback, &[]).await;
    let Some(c) = Crictl::find(&w) else { return };
    let dir = w.tmp.path();

    let version = c.ok(&["version"]);
    assert!(version.contains("RuntimeName:  crikit"), "{version}");

    // Pull an image crid has not seen, by the name a user types.
    let pushed = e2e::image::push(&w.reg.addr, "cri/tools", "2", &e2e::Image::busybox());
    let out = c.ok(&["pull", &pushed.reference]);
    assert!(out.contains(&pushed.config), "{out}");
    let ids = c.ok(&["images", "-q"]);
    assert!(ids.lines().any(|l| l == pushed.config), "{ids}");

    // crictl's bare pod: metadata, a log directory and an empty linux section.
    let pod_json = write_json(
        dir,
        "pod.json",
        &serde_json::json!({
            "metadata": {"name": "bare", "namespace": "default", "uid": "bare-uid", "attempt": 1},
            "log_directory": dir.join("logs/bare").display().to_string(),
            "linux": {}
        }),
    );
    let ctr_json = write_json(
        dir,
        "ctr.json",
        &serde_json::json!({
            "metadata": {"name": "main"},
            "image": {"image": pushed.reference},
            "command": ["/bin/sh", "-c", "echo hello from crictl; while true; do sleep 1; done"],
            "log_path": "main.log"
        }),
    );
    // `crictl events` watching it all.
    let events_out = dir.join("events.json");
    let mut events = c.events(&events_out);
    std::thread::sleep(Duration::from_millis(300));
    let pod = c.ok(&["runp", &pod_json]);
    assert_eq!(pod.len(), 64, "{pod}");
    let ctr = c.ok(&["create", &pod, &ctr_json, &pod_json]);
    c.ok(&["start", &ctr]);
    assert_eq!(c.ok(&["ps", "-q", "--pod", &pod]), ctr);
    assert_eq!(c.ok(&["pods", "-q", "--name", "bare"]), pod);

    let r = c.run(&[
        "exec",
        "-s",
        &ctr,
        "/bin/sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    // crictl prints both streams on its stdout, each with a newline of its own.
    let shown: Vec<&str> = r.stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        (r.code, shown),
        (Some(0), vec!["out", "err"]),
        "{}",
        r.describe()
    );
    // crictl reports a failed command with its code and stderr.
    let r = c.run(&["exec", "-s", &ctr, "/bin/sh", "-c", "echo oops >&2; exit 3"]);
    assert!(
        r.code == Some(1) && r.stderr.contains("exited with 3: oops"),
        "{}",
        r.describe()
    );
    wait_for("the log line", || {
        c.ok(&["logs", &ctr]).contains("hello from crictl")
    });

    let inspect = c.json(&["inspect", "-o", "json", &ctr]);
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");
    assert_eq!(inspect["status"]["metadata"]["name"], "main");
    assert_eq!(inspect["status"]["imageId"], pushed.config, "{inspect}");
    let inspectp = c.json(&["inspectp", "-o", "json", &pod]);
    assert_eq!(inspectp["status"]["state"], "SANDBOX_READY", "{inspectp}");
    // No namespace options: the pod shares one PID namespace (the CRI default).
    assert_eq!(
        inspectp["status"]["linux"]["namespaces"]["options"]["pid"], "POD",
        "{inspectp}"
    );

    let stats = c.json(&["stats", "-o", "json", &ctr]);
    let s = &stats["stats"][0];
    assert_eq!(s["attributes"]["id"], ctr, "{stats}");
    let memory: u64 = s["memory"]["workingSetBytes"]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(memory > 0, "{stats}");

    // The cAdvisor metrics, as kubelet's CRI stats provider asks for them.
    let descs = c.json(&["metricdescs", "-o", "json"]);
    let described = |name: &str| {
        descs["descriptors"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["name"] == name))
    };
    assert!(described("container_memory_working_set_bytes"), "{descs}");
    let metrics = c.json(&["metricsp", "-o", "json"]);
    let pm = &metrics["podMetrics"][0];
    assert_eq!(pm["podSandboxId"], pod, "{metrics}");
    let cm = &pm["containerMetrics"][0];
    assert_eq!(cm["containerId"], ctr, "{metrics}");
    let ws = cm["metrics"]
        .as_array()
        .and_then(|ms| {
            ms.iter()
                .find(|m| m["name"] == "container_memory_working_set_bytes")
        })
        .unwrap_or_else(|| panic!("no working set in {metrics}"));
    assert!(described(ws["name"].as_str().unwrap_or_default()));
    assert_eq!(ws["labelValues"][4], "main", "{ws}");
    assert_eq!(ws["metricType"], "GAUGE", "{ws}");
    let value: u64 = ws["value"]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(value > 0, "{ws}");

    // crictl checkpoint: the archive, or CRIU's reason it cannot be made here.
    let archive = w.tmp.path().join("checkpoint.tar");
    let export = format!("--export={}", archive.display());
    let r = c.run(&["checkpoint", &export, &ctr]);
    let works = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let checkpoints =
        works("criu", &["check"]) && works(&e2e::runc::runtime(), &["checkpoint", "--help"]);
    if checkpoints {
        r.ok();
        assert!(archive.is_file());
    } else {
        assert_ne!(r.code, Some(0), "{}", r.stdout);
        assert!(
            r.stderr.contains("CRIU cannot run here: criu")
                || r.stderr.contains("has no checkpoint command"),
            "{}",
            r.stderr
        );
        eprintln!(
            "crictl checkpoint, as CRIU cannot run here: {}",
            r.stderr.trim()
        );
        assert!(!archive.exists());
    }

    c.ok(&["stop", "--timeout", "2", &ctr]);
    let inspect = c.json(&["inspect", "-o", "json", &ctr]);
    assert_eq!(inspect["status"]["state"], "CONTAINER_EXITED", "{inspect}");
    c.ok(&["rm", &ctr]);
    if checkpoints {
        // crictl create with the archive as the image: the container is back,
        // running the process the checkpoint caught (its pid free again).
        let restore_json = write_json(
            dir,
            "restore.json",
            &serde_json::json!({
                "metadata": {"name": "restored"},
                "image": {"image": archive.display().to_string()},
                "log_path": "restored.log"
            }),
        );
        let restored = c.ok(&["create", &pod, &restore_json, &pod_json]);
        let inspect = c.json(&["inspect", "-o", "json", &restored]);
        assert_eq!(inspect["status"]["state"], "CONTAINER_CREATED", "{inspect}");
        c.ok(&["start", &restored]);
        let inspect = c.json(&["inspect", "-o", "json", &restored]);
        assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");
        // The process is the checkpointed script, caught in its loop: it does not
        // greet again, as a fresh start would.
        let pid = inspect["info"]["pid"].as_i64().unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&cmdline).contains("echo hello from crictl"),
            "{pid}: {inspect}"
        );
        std::thread::sleep(Duration::from_millis(500));
        let r = c.run(&["exec", "-s", &restored, "/bin/sh", "-c", "echo in"]);
        assert_eq!(r.stdout.trim(), "in", "{}", r.describe());
        assert!(!c.ok(&["logs", &restored]).contains("hello"));
        c.ok(&["stop", "--timeout", "2", &restored]);
        c.ok(&["rm", &restored]);
    }
    c.ok(&["stopp", &pod]);
    c.ok(&["rmp", &pod]);
    assert_eq!(c.ok(&["pods", "-q"]), "");
    // crictl saw the container's life as it happened.
    let seen = || -> Vec<(String, String)> {
        let text = std::fs::read_to_string(&events_out).unwrap_or_default();
        serde_json::Deserializer::from_str(&text)
            .into_iter::<serde_json::Value>()
            .map_while(Result::ok)
            .map(|e| {
                let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (field("containerId"), field("containerEventType"))
            })
            .collect()
    };
    // Pods have events of their own: the container's removal is what ends the wait.
    wait_for("crictl events to print the removal", || {
        seen()
            .iter()
            .any(|(id, k)| *id == ctr && k == "CONTAINER_DELETED_EVENT")
    });
    let _ = events.kill();
    let _ = events.wait();
    let kinds: Vec<String> = seen()
        .into_iter()
        .filter(|(id, _)| *id == ctr)
        .map(|(_, k)| k)
        .collect();
    assert_eq!(
        kinds,
        [
            "CONTAINER_CREATED_EVENT",
            "CONTAINER_STARTED_EVENT",
            "CONTAINER_STOPPED_EVENT",
            "CONTAINER_DELETED_EVENT"
        ]
    );
    c.ok(&["rmi", &pushed.reference]);
    let ids = c.ok(&["images", "-q"]);
    assert!(!ids.lines().any(|l| l == pushed.config), "{ids}");
    // A bad id is one line that names it.
    let r = c.run(&["inspect", "nope"]);
    assert_ne!(r.code, Some(0), "{}", r.describe());
    assert!(r.stderr.contains("nope"), "{}", r.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_runs_a_kubelet_like_pod() {
    let w = World::new(Network::Loopback, &[]).await;
    let Some(c) = Crictl::find(&w) else { return };
    let dir = w.tmp.path();
    // What kubelet sends by default: a PID namespace per container, seccomp as the
    // pod asks (RuntimeDefault here), the cgroup parent, labels and annotations.
    let pod_json = write_json(
        dir,
        "pod.json",
        &serde_json::json!({
            "metadata": {"name": "kubelet-like", "namespace": "default", "uid": "kl-uid"},
            "hostname": "kubelet-like",
            "log_directory": dir.join("logs/kl").display().to_string(),
            "dns_config": {"servers": ["10.96.0.10"], "searches": ["default.svc.cluster.local"]},
            "labels": {"io.kubernetes.pod.name": "kubelet-like"},
            "annotations": {"kubernetes.io/config.source": "api"},
            "linux": {
                "cgroup_parent": w.cgroup,
                "security_context": {
                    "namespace_options": {"pid": 1},
                    "seccomp": {"profile_type": 0}
                }
            }
        }),
    );
    let ctr_json = write_json(
        dir,
        "ctr.json",
        &serde_json::json!({
            "metadata": {"name": "app"},
            "image": {"image": w.image},
            "command": ["/bin/sh", "-c", "while true; do sleep 1; done"],
            "log_path": "app/0.log",
            "linux": {"security_context": {
                "namespace_options": {"pid": 1},
                "seccomp": {"profile_type": 0}
            }}
        }),
    );
    let pod = c.ok(&["runp", &pod_json]);
    let ctr = c.ok(&["create", &pod, &ctr_json, &pod_json]);
    c.ok(&["start", &ctr]);
    // Its own PID namespace: the shell is PID 1; RuntimeDefault filters syscalls.
    let out = c.ok(&[
        "exec",
        "-s",
        &ctr,
        "/bin/sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; grep Seccomp: /proc/self/status; hostname",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("/bin/sh -c while"), "{out}");
    assert_eq!(lines[1].split_whitespace().last(), Some("2"), "{out}");
    assert_eq!(lines[2], "kubelet-like", "{out}");
    c.ok(&["rmp", "-f", &pod]);
    assert_eq!(c.ok(&["ps", "-a", "-q"]), "");
}

impl Crictl {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["--config", "/dev/null", "--timeout", "30s"])
            .args(["--runtime-endpoint", &self.socket])
            .args(["--image-endpoint", &self.socket])
            .args(args);
        c
    }
}

/// A pod of its own PID namespace (as kubelet sends) with one started container.
fn pod_with(c: &Crictl, w: &World, name: &str, container: serde_json::Value) -> (String, String) {
    let dir = w.tmp.path();
    let pod_json = write_json(
        dir,
        &format!("{name}-pod.json"),
        &serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid")},
            "log_directory": dir.join("logs").join(name).display().to_string(),
            "linux": {"security_context": {"namespace_options": {"pid": 1}}}
        }),
    );
    let ctr_json = write_json(dir, &format!("{name}-ctr.json"), &container);
    let pod = c.ok(&["runp", &pod_json]);
    let ctr = c.ok(&["create", &pod, &ctr_json, &pod_json]);
    c.ok(&["start", &ctr]);
    (pod, ctr)
}

/// A container running `script` with a stdin to attach to; `once`: closed when the
/// first attach ends (stdin_once).
fn with_stdin(w: &World, name: &str, script: &str, once: bool) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"name": name},
        "image": {"image": w.image},
        "command": ["/bin/sh", "-c", script],
        "stdin": true,
        "stdin_once": once,
        "log_path": format!("{name}.log")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_exec_attach_and_port_forward_over_spdy() {
    streams_through_crid("spdy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_exec_attach_and_port_forward_over_websocket() {
    streams_through_crid("websocket").await;
}

/// exec (plain, -i, -it), port-forward and attach -i with crictl's `transport`.
async fn streams_through_crid(transport: &str) {
    let w = World::new(Network::Loopback, &[]).await;
    let Some(c) = Crictl::find(&w) else { return };
    let t = ["-r", transport];

    // exec, plain: both streams and the exit code.
    let (pod, ctr) = pod_with(
        &c,
        &w,
        "streams",
        serde_json::json!({
            "metadata": {"name": "sh"},
            "image": {"image": w.image},
            "command": ["/bin/sh", "-c", "mkdir -p /www; echo forwarded > /www/index.html; \
                        exec httpd -f -p 8080 -h /www"],
            "log_path": "sh.log"
        }),
    );
    // crictl reports the code it got in the status (v4 or v5), and exits 1.
    let r = c.run(&[
        "exec",
        t[0],
        t[1],
        &ctr,
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(1), "out\n"),
        "{}\n{}",
        r.describe(),
        w.crid.stderr()
    );
    assert!(
        r.stderr.starts_with("err\n") && r.stderr.contains("command terminated with exit code 3"),
        "{}",
        r.describe()
    );
    let r = c.run(&["exec", t[0], t[1], &ctr, "/bin/true"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), ""),
        "{}",
        r.describe()
    );

    // exec -i: stdin piped through, its end the process's.
    let mut cmd = c.command(&[
        "exec",
        t[0],
        t[1],
        "-i",
        &ctr,
        "/bin/sh",
        "-c",
        "wc -c; echo done",
    ]);
    let r = e2e::run_input(cmd, Some(b"twelve bytes"), T);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert_eq!(
        r.stdout.split_whitespace().collect::<Vec<_>>(),
        ["12", "done"],
        "{}",
        r.describe()
    );

    // exec -it under a terminal: its size reaches the process's terminal. runc
    // sizes the terminal before the process starts; crun (the default handler
    // where installed) just after it, so the process may look a moment too soon.
    let line = format!(
        "stty rows 33 cols 101; {} --config /dev/null --runtime-endpoint {} exec -r {transport} -it {ctr} \
         /bin/sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do s=$(stty size 2>/dev/null); \
         [ -n \"$s\" ] && [ \"$s\" != \"0 0\" ] && break; sleep 0.2; done; echo \"size $s\"; tty'",
        c.bin.display(),
        c.socket
    );
    cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]);
    let r = e2e::run_input(cmd, Some(b""), T);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(
        r.stdout.contains("size 33 101"),
        "{}\n{}",
        r.describe(),
        w.crid.stderr()
    );
    assert!(r.stdout.contains("/dev/pts/"), "{}", r.describe());

    // port-forward: an HTTP GET through a forwarded port, twice on one session.
    let port = e2e::net::free_port();
    let mut pf = c
        .command(&["port-forward", t[0], t[1], &pod, &format!("{port}:8080")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let get = || -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    };
    let mut got = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.is_none() && Instant::now() < deadline {
        got = get().filter(|r| r.contains("forwarded"));
        if got.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let second = get();
    let _ = pf.kill();
    let _ = pf.wait();
    let got =
        got.unwrap_or_else(|| panic!("no answer through the forwarded port: {}", w.crid.stderr()));
    assert!(got.starts_with("HTTP/1.") && got.contains("200"), "{got}");
    assert!(
        second.is_some_and(|r| r.contains("forwarded")),
        "a second connection"
    );

    // attach -i: the container's own stdin and stdout.
    let (_, cat) = pod_with(
        &c,
        &w,
        "attach",
        with_stdin(&w, "cat", "read line; echo got $line", true),
    );
    let r = e2e::run_input(
        c.command(&["attach", t[0], t[1], "-i", &cat]),
        Some(b"hi there\n"),
        T,
    );
    assert!(r.stdout.contains("got hi there"), "{}", r.describe());

    c.ok(&["rmp", "-fa"]);
}

/// One HTTP/1.1 request to `url`'s host with `headers`; the status line.
fn http_status(url: &str, method: &str, headers: &[&str]) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut s = std::net::TcpStream::connect(host).expect("connecting to the streaming server");
    let mut req = format!("{method} /{path} HTTP/1.1\r\nHost: {host}\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_urls_are_single_use_and_the_upgrade_is_checked() {
    use k8s_cri::v1 as cri;
    let w = World::new(Network::Loopback, &[]).await;
    let config = w.pod_config("urls", k8s_cri::v1::NamespaceMode::Container);
    let pod = w.run_pod(&config).await.unwrap();
    let ctr = w.run_sh(&pod, &config, "c", "sleep 100").await;
    let mut rt = w.rt.clone();
    let spdy = ["Connection: Upgrade", "Upgrade: SPDY/3.1"];
    let v4 = "X-Stream-Protocol-Version: v4.channel.k8s.io";

    // Absolute, on loopback, with a token.
    let url = w.exec_url(&ctr, &["/bin/true"], Default::default()).await;
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/exec/"),
        "{url}"
    );
    // Without an upgrade: 400, and the token is spent.
    assert!(http_status(&url, "POST", &[v4]).contains(" 400 "));
    assert!(http_status(&url, "POST", &[spdy[0], spdy[1], v4]).contains(" 404 "));
    // A protocol crid does not speak: 403.
    let url = w.exec_url(&ctr, &["/bin/true"], Default::default()).await;
    let other = "X-Stream-Protocol-Version: v9.channel.k8s.io";
    assert!(http_status(&url, "POST", &[spdy[0], spdy[1], other]).contains(" 403 "));
    // The upgrade, then never again.
    let url = w.exec_url(&ctr, &["/bin/true"], Default::default()).await;
    assert!(http_status(&url, "POST", &[spdy[0], spdy[1], v4]).contains(" 101 "));
    assert!(http_status(&url, "POST", &[spdy[0], spdy[1], v4]).contains(" 404 "));
    // A token at another path, or made up: 404.
    let url = w.exec_url(&ctr, &["/bin/true"], Default::default()).await;
    let attach = url.replace("/exec/", "/attach/");
    assert!(http_status(&attach, "POST", &[spdy[0], spdy[1], v4]).contains(" 404 "));
    let made_up = format!(
        "{}/exec/{}",
        url.rsplit_once("/exec/").unwrap().0,
        "0".repeat(32)
    );
    assert!(http_status(&made_up, "POST", &[spdy[0], spdy[1], v4]).contains(" 404 "));

    // Refusals at the RPC: no command, no stream, stdin the container lacks; a
    // pod that does not exist.
    let no_command = cri::ExecRequest {
        container_id: ctr.clone(),
        stdout: true,
        ..Default::default()
    };
    let no_stdin = cri::AttachRequest {
        container_id: ctr.clone(),
        stdin: true,
        stdout: true,
        ..Default::default()
    };
    let no_pod = cri::PortForwardRequest {
        pod_sandbox_id: "nope".into(),
        port: vec![],
    };
    let refused = [
        (
            rt.exec(no_command).await.map(drop),
            tonic::Code::InvalidArgument,
        ),
        (
            rt.attach(no_stdin).await.map(drop),
            tonic::Code::InvalidArgument,
        ),
        (
            rt.port_forward(no_pod).await.map(drop),
            tonic::Code::NotFound,
        ),
    ];
    for (r, code) in refused {
        let e = r.expect_err("refused");
        assert_eq!(e.code(), code, "{e:?}");
    }
    w.remove_pod(&pod).await;
}

/// A pod whose container sleeps; the container's id.
fn sleeper(c: &Crictl, w: &World, name: &str) -> String {
    let container = serde_json::json!({
        "metadata": {"name": "c"},
        "image": {"image": w.image},
        "command": ["/bin/sleep", "1000"],
        "log_path": "c.log"
    });
    pod_with(c, w, name, container).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_whose_client_goes_away_is_killed() {
    let w = World::new(Network::Loopback, &[]).await;
    let Some(c) = Crictl::find(&w) else { return };
    let ctr = sleeper(&c, &w, "gone");
    let mut client = c
        .command(&[
            "exec",
            &ctr,
            "/bin/sh",
            "-c",
            "echo started; exec sleep 777",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Seen from the host: a process whose command line is the exec's.
    let sleeping = || process_runs(b"sleep\x00777\x00");
    wait_for("the exec", sleeping);
    let _ = client.kill();
    let _ = client.wait();
    wait_for("the exec's end once its client went", || !sleeping());
    c.ok(&["rmp", "-fa"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_sessions_are_bounded_and_end_when_idle() {
    let w = World::new(
        Network::Loopback,
        &["--stream-max-sessions", "1", "--stream-idle-timeout", "2"],
    )
    .await;
    let Some(c) = Crictl::find(&w) else { return };
    let ctr = sleeper(&c, &w, "bounded");
    // One session, silent: a second is refused while it lasts, and it ends once
    // idle, its process with it.
    let t0 = Instant::now();
    let mut quiet = c
        .command(&["exec", &ctr, "/bin/sleep", "555"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(w.tmp.path().join("quiet.err")).unwrap())
        .spawn()
        .unwrap();
    let running = || process_runs(b"/bin/sleep\x00555\x00");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !running() {
        assert!(
            Instant::now() < deadline,
            "the quiet exec never ran: {:?} {}\n{}",
            quiet.try_wait(),
            std::fs::read_to_string(w.tmp.path().join("quiet.err")).unwrap_or_default(),
            w.crid.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = c.run(&["exec", &ctr, "/bin/true"]);
    assert!(
        second.code != Some(0)
            && second
                .stderr
                .contains("too many streaming sessions (at most 1)"),
        "{}",
        second.describe()
    );
    let status = quiet.wait().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(
        !status.success() || !running(),
        "the idle session ended, its process still ran: {}",
        w.crid.stderr()
    );
    wait_for("the idle exec's end", || !running());
    // The slot is free again (once the session's task has wound up).
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.run(&["exec", &ctr, "/bin/true"]).code != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the session's slot stayed taken: {}",
            w.crid
                .stderr()
                .lines()
                .filter(|l| l.contains("streaming"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.ok(&["rmp", "-fa"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_leaves_a_stdin_that_is_not_stdin_once_open() {
    use std::io::{BufRead, Write};
    let w = World::new(Network::Loopback, &[]).await;
    let Some(c) = Crictl::find(&w) else { return };
    let (_pod, ctr) = pod_with(
        &c,
        &w,
        "reattach",
        with_stdin(
            &w,
            "reader",
            "while read l; do echo got $l; done; echo stdin closed",
            false,
        ),
    );
    // Two attach sessions one after the other, each typing a line and ending its
    // stdin: the container reads both, its stdin still open after each.
    for word in ["one", "two"] {
        let mut a = c
            .command(&["attach", "-i", &ctr])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = a.stdin.take().unwrap();
        writeln!(stdin, "{word}").unwrap();
        drop(stdin);
        let mut out = std::io::BufReader::new(a.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let _ = a.kill();
        let _ = a.wait();
        assert_eq!(line.trim(), format!("got {word}"));
    }
    let log = std::fs::read_to_string(w.tmp.path().join("logs/reattach/reader.log")).unwrap();
    assert!(!log.contains("stdin closed"), "{log}");
    c.ok(&["rmp", "-fa"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streaming_server_speaks_tls_and_checks_client_certificates() {
    use e2e::tls::Certs;
    let files = tempfile::tempdir().unwrap();
    let one = Certs::make(&files.path().join("one"), "crikit test CA one");
    let two = Certs::make(&files.path().join("two"), "crikit test CA two");
    // The served pair lives at paths of its own, so that it can be replaced.
    let (cert, key) = (files.path().join("tls.crt"), files.path().join("tls.key"));
    std::fs::copy(one.path("server.crt"), &cert).unwrap();
    std::fs::copy(one.path("server.key"), &key).unwrap();
    let w = World::new(
        Network::Loopback,
        &[
            "--stream-tls-cert",
            &cert.display().to_string(),
            "--stream-tls-key",
            &key.display().to_string(),
            "--stream-tls-ca",
            &one.path("ca.crt"),
        ],
    )
    .await;
    let Some(c) = Crictl::find(&w) else { return };
    let ctr = sleeper(&c, &w, "tls");
    let url = w.exec_url(&ctr, &["/bin/true"], Default::default()).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // No client certificate: refused in the handshake.
    let r = c.run(&["exec", &ctr, "/bin/echo", "hi"]);
    assert!(
        r.code != Some(0) && r.stderr.contains("certificate required"),
        "{}",
        r.describe()
    );
    // Client and server checked against the CA, over SPDY and WebSocket: `ca`
    // vouches for the server, `client` made the client's certificate.
    let with = |ca: &Certs, client: &Certs, transport: &str, word: &str| {
        c.run(&[
            "exec",
            "-r",
            transport,
            "--tls-ca",
            &ca.path("ca.crt"),
            "--tls-cert",
            &client.path("client.crt"),
            "--tls-key",
            &client.path("client.key"),
            &ctr,
            "/bin/echo",
            word,
        ])
    };
    for transport in ["spdy", "websocket"] {
        let r = with(&one, &one, transport, transport);
        assert_eq!(
            (r.code, r.stdout.trim()),
            (Some(0), transport),
            "{}",
            r.describe()
        );
    }
    // A client certificate of another CA: refused.
    let r = with(&one, &two, "spdy", "stranger");
    assert_ne!(r.code, Some(0), "{}", r.describe());

    // The pair replaced on disk serves the next session, no restart.
    std::fs::copy(two.path("server.key"), &key).unwrap();
    std::fs::copy(two.path("server.crt"), &cert).unwrap();
    let r = with(&two, &one, "spdy", "rotated");
    assert_eq!(
        (r.code, r.stdout.trim()),
        (Some(0), "rotated"),
        "{}\n{}",
        r.describe(),
        w.crid.stderr()
    );
    let r = with(&one, &one, "spdy", "old");
    assert_ne!(
        r.code,
        Some(0),
        "the old CA no longer vouches: {}",
        r.describe()
    );
    c.ok(&["rmp", "-fa"]);
}
