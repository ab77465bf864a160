//! A cluster on this machine: nodes as network namespaces joined by a bridge, and
//! an upstream docker-registry in a namespace of its own whose link is shaped with
//! a token bucket (`tc … tbf`), so that the upstream, not loopback, is the
//! bottleneck, as in a real cluster. The bridge lives in a namespace too: nothing
//! of the host's network is touched.
//!
//! Each cluster's namespaces are named `crikit-c<PID>-<N>-…`; dropping the cluster
//! kills what it started in them and deletes them, and a cluster that a killed run
//! left behind (its pid gone) is swept by the next one.

use crate::image::http;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The addresses every cluster uses inside its own namespaces.
const PREFIX: &str = "10.251.0";
/// The upstream registry's port.
const UPSTREAM_PORT: u16 = 5000;

/// One node: a network namespace with one interface on the cluster's bridge.
#[derive(Debug, Clone)]
pub struct NetNode {
    /// The namespace's name.
    pub ns: String,
    /// Its address on the bridge.
    pub ip: String,
}

impl NetNode {
    /// `prog args…` run inside the node's namespace.
    pub fn command(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(prog);
        c
    }
}

/// The cluster; dropped, everything it made is gone.
pub struct Cluster {
    tag: String,
    /// The nodes, in order.
    pub nodes: Vec<NetNode>,
    /// `IP:PORT` of the upstream registry, as the nodes reach it.
    pub upstream: String,
    upstream_ns: String,
    registry: Option<Child>,
    access_log: PathBuf,
    children: std::sync::Mutex<Vec<Child>>,
    _dir: tempfile::TempDir,
}

/// Runs `ip ARGS…`, failing the test with its output when it fails.
fn ip(args: &[&str]) {
    crate::pods::on_host("ip", args);
}

/// The namespaces of clusters whose process is gone, deleted.
fn sweep() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("crikit-c")
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Cluster {
    /// `n` nodes, and docker-registry serving the storage `registry_data` (what a
    /// loopback [`crate::Registry`] was given) from behind a link of `mbit`
    /// Mbit/s towards the nodes.
    pub fn start(n: usize, registry_data: &Path, mbit: u32) -> Cluster {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        assert!(n < 200, "at most 199 nodes");
        sweep();
        let tag = format!(
            "crikit-c{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix("crikit-cluster-")
            .tempdir()
            .expect("tempdir");
        let mut c = Cluster {
            tag: tag.clone(),
            nodes: Vec::new(),
            upstream: format!("{PREFIX}.2:{UPSTREAM_PORT}"),
            upstream_ns: format!("{tag}-up"),
            registry: None,
            access_log: dir.path().join("access.log"),
            children: Default::default(),
            _dir: dir,
        };
        let switch = format!("{tag}-sw");
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        let join = |ns: &str, port: &str, addr: &str| {
            ip(&["netns", "add", ns]);
            ip(&[
                "-n", &switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ]);
            ip(&["-n", &switch, "link", "set", port, "master", "br0", "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        };
        join(&c.upstream_ns, "vup", &format!("{PREFIX}.2"));
        // What leaves the upstream for the nodes goes through a token bucket.
        let rate = format!("{mbit}mbit");
        ip(&[
            "netns",
            "exec",
            &c.upstream_ns,
            "tc",
            "qdisc",
            "add",
            "dev",
            "eth0",
            "root",
            "tbf",
            "rate",
            &rate,
            "burst",
            "64kb",
            "latency",
            "100ms",
        ]);
        for i in 0..n {
            let node = NetNode {
                ns: format!("{tag}-n{i}"),
                ip: format!("{PREFIX}.{}", 10 + i),
            };
            join(&node.ns, &format!("vn{i}"), &node.ip);
            c.nodes.push(node);
        }
        c.start_registry(registry_data);
        c
    }

    fn start_registry(&mut self, data: &Path) {
        let cfg = self.access_log.with_file_name("registry.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {}\n",
                data.display(),
                self.upstream
            ),
        )
        .expect("writing the registry's config");
        let log = std::fs::File::create(&self.access_log).expect("access log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.upstream_ns,
                "docker-registry",
                "serve",
            ])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        self.registry = Some(child);
        let node = self.nodes.first().cloned().expect("a node");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let upstream = self.upstream.clone();
            let up = in_netns(&node.ns, move || {
                std::net::TcpStream::connect(&upstream).is_ok()
            });
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not come up in {}: {}",
                self.upstream_ns,
                std::fs::read_to_string(&self.access_log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// imgserve on node `i` over the store under `root`, listening on the node's
    /// address, port 7000, with `extra` flags: its address and its child's index
    /// (for [`Cluster::kill`]).
    pub fn imgserve(&self, i: usize, root: &Path, extra: &[&str]) -> (String, usize) {
        use std::io::BufRead as _;
        let listen = format!("{}:7000", self.nodes[i].ip);
        let mut child = self.nodes[i]
            .command(crate::bin("imgserve"))
            .arg("--root")
            .arg(root)
            .args(["--listen", &listen])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting imgserve");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        let read = std::io::BufReader::new(out).read_line(&mut line);
        let idx = self.adopt(child);
        assert!(
            read.is_ok() && !line.trim().is_empty(),
            "imgserve on {} printed no address",
            self.nodes[i].ns
        );
        (line.trim().to_string(), idx)
    }

    /// Keeps `child`, started in the cluster, to kill when the cluster goes.
    pub fn adopt(&self, child: Child) -> usize {
        let mut children = self.children.lock().expect("children");
        children.push(child);
        children.len() - 1
    }

    /// Kills the adopted child `i` now.
    pub fn kill(&self, i: usize) {
        let mut children = self.children.lock().expect("children");
        let _ = children[i].kill();
        let _ = children[i].wait();
    }

    /// What the upstream sent: for each blob digest, the GETs that asked for it
    /// and the body bytes they were sent, from the registry's access log.
    pub fn upstream_blobs(&self) -> std::collections::BTreeMap<String, (usize, u64)> {
        let log = std::fs::read_to_string(&self.access_log).unwrap_or_default();
        let mut out = std::collections::BTreeMap::new();
        for line in log.lines() {
            // IP - - [DATE] "GET /v2/REPO/blobs/DIGEST HTTP/1.1" STATUS BYTES "…" "…"
            let Some((_, req)) = line.split_once("\"GET ") else {
                continue;
            };
            let Some((path, rest)) = req.split_once(' ') else {
                continue;
            };
            let Some((_, digest)) = path.split_once("/blobs/") else {
                continue;
            };
            let mut words = rest.split_whitespace().skip(1);
            let status = words.next().unwrap_or_default();
            let bytes: u64 = words.next().and_then(|b| b.parse().ok()).unwrap_or(0);
            if status.starts_with('2') {
                let e = out.entry(digest.to_string()).or_insert((0, 0));
                e.0 += 1;
                e.1 += bytes;
            }
        }
        out
    }

    /// The bytes the upstream's interface has sent, headers and all.
    pub fn upstream_tx_bytes(&self) -> u64 {
        let out = Command::new("ip")
            .args(["-n", &self.upstream_ns, "-s", "-j", "link", "show", "eth0"])
            .output()
            .expect("ip -s link");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["stats64"]["tx"]["bytes"].as_u64().unwrap_or(0)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let children = self.children.get_mut().map(|c| c.iter_mut());
        for c in children.into_iter().flatten().chain(self.registry.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut names: Vec<String> = self.nodes.iter().map(|n| n.ns.clone()).collect();
        names.push(self.upstream_ns.clone());
        names.push(format!("{}-sw", self.tag));
        for ns in names {
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs `f` on a thread of its own inside the network namespace `ns`: sockets it
/// opens are the namespace's.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("entering {path}: {e}"));
        f()
    })
    .join()
    .expect("the thread in the namespace")
}

/// One HTTP request made from inside `ns` (see [`crate::image::http`]).
pub fn http_in(ns: &str, addr: &str, path: &str) -> (u16, Vec<u8>) {
    let (addr, path) = (addr.to_string(), path.to_string());
    in_netns(ns, move || {
        let (status, _, body) = http(&addr, "GET", &path, &[], b"");
        (status, body)
    })
}
