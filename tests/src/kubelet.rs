//! A standalone kubelet (static pods from a directory, no API server) driving a crid
//! of the test's own, as on a node: the tests drop pod manifests and read what
//! kubelet reports on its read-only port.
//!
//! kubelet is not packaged; a test that needs it asks [`Kubelet::find`], which
//! reports the test as skipped (or fails it, when `CRIKIT_REQUIRE` names kubelet).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What kubelet changes on the host whatever its root dir: the kernel tunables it
/// sets at start (`protectKernelDefaults` off), and the directories it makes at
/// fixed paths. Kept to be put back when it stops.
const SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];
const HOST_DIRS: &[&str] = &["/var/lib/kubelet", "/var/log/containers", "/var/log/pods"];

/// A running kubelet. One at a time on a machine: kubelets share the device
/// plugin socket and the kernel tunables, so [`Kubelet::start`] waits for the
/// previous test's to be gone.
pub struct Kubelet {
    child: Option<Child>,
    _one_at_a_time: nix::fcntl::Flock<std::fs::File>,
    sysctls: Vec<(String, String)>,
    made: Vec<PathBuf>,
    bin: PathBuf,
    /// Its directory: config, root dir, manifests, log.
    pub dir: PathBuf,
    /// The node name (static pods are named `NAME-NODE`).
    pub node: String,
    /// The read-only port on 127.0.0.1.
    pub port: u16,
    args: Vec<String>,
}

impl Kubelet {
    /// The kubelet binary (`KUBELET`, else PATH), or `None` after reporting the test
    /// as skipped.
    pub fn find() -> Option<PathBuf> {
        let bin = crate::skip::find("KUBELET", "kubelet");
        crate::skip::require("kubelet", bin.is_some(), "no kubelet on PATH (or KUBELET)")
            .then(|| bin.expect("found"))
    }

    /// Starts `bin` against the CRI socket `socket`, everything under `dir`.
    pub fn start(bin: &Path, dir: &Path, socket: &Path) -> Kubelet {
        Kubelet::start_with(bin, dir, socket, "")
    }

    /// [`Kubelet::start`] with `extra` (KubeletConfiguration fields, YAML) added to
    /// the configuration.
    pub fn start_with(bin: &Path, dir: &Path, socket: &Path, extra: &str) -> Kubelet {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/crikit-kubelet-tests.lock")
            .expect("the kubelet tests' lock");
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("taking the kubelet tests' lock");
        let sysctls = SYSCTLS
            .iter()
            .filter_map(|k| {
                let v = std::fs::read_to_string(format!("/proc/sys/{k}")).ok()?;
                Some((k.to_string(), v.trim().to_string()))
            })
            .collect();
        let made = HOST_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|d| !d.exists())
            .collect();
        let dir = dir.join("kubelet");
        for d in ["manifests", "root", "logs", "plugins"] {
            std::fs::create_dir_all(dir.join(d)).expect("kubelet dirs");
        }
        let port = crate::net::free_port();
        let config = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: {main}
readOnlyPort: {port}
healthzPort: 0
authentication:
  anonymous: {{enabled: true}}
  webhook: {{enabled: false}}
authorization: {{mode: AlwaysAllow}}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
staticPodPath: {manifests}
fileCheckFrequency: 1s
syncFrequency: 5s
podLogsDir: {logs}
volumePluginDir: {plugins}
containerRuntimeEndpoint: unix://{socket}
imageServiceEndpoint: unix://{socket}
{gc}{eviction}resolvConf: ''
makeIPTablesUtilChains: false
{extra}",
            // Image GC and evictions are off unless the test sets them.
            gc = if extra.contains("imageGCHighThresholdPercent") {
                ""
            } else {
                "imageGCHighThresholdPercent: 100\n"
            },
            eviction = if extra.contains("evictionHard") {
                ""
            } else {
                "evictionHard: {}\n"
            },
            main = crate::net::free_port(),
            manifests = dir.join("manifests").display(),
            logs = dir.join("logs").display(),
            plugins = dir.join("plugins").display(),
            socket = socket.display(),
        );
        std::fs::write(dir.join("config.yaml"), config).expect("kubelet config");
        let node = format!("node{port}");
        let args = vec![
            format!("--config={}", dir.join("config.yaml").display()),
            format!("--root-dir={}", dir.join("root").display()),
            format!("--hostname-override={node}"),
            "--v=2".to_string(),
        ];
        let mut k = Kubelet {
            child: None,
            _one_at_a_time: lock,
            sysctls,
            made,
            bin: bin.to_path_buf(),
            dir,
            node,
            port,
            args,
        };
        k.spawn();
        k.wait_for(Duration::from_secs(60), "its read-only port", |k| {
            k.try_get("/healthz").is_some()
        });
        k
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kubelet.log"))
            .expect("kubelet log");
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    /// Stops kubelet (SIGKILL, as a node losing it) and starts it again with the same
    /// configuration; pods keep running meanwhile.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_for(Duration::from_secs(60), "its read-only port", |k| {
            k.try_get("/healthz").is_some()
        });
    }

    /// [`Kubelet::restart`] with `extra` (KubeletConfiguration fields, YAML) added
    /// to the configuration.
    pub fn restart_with(&mut self, extra: &str) {
        let config = self.dir.join("config.yaml");
        let mut text = std::fs::read_to_string(&config).expect("kubelet config");
        text.push_str(extra);
        std::fs::write(&config, text).expect("kubelet config");
        self.restart();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Writes the manifest of the static pod `name`.
    pub fn add_pod(&self, name: &str, manifest: &serde_json::Value) {
        let tmp = self.dir.join(format!(".{name}.json"));
        std::fs::write(&tmp, manifest.to_string()).expect("manifest");
        std::fs::rename(
            &tmp,
            self.dir.join("manifests").join(format!("{name}.json")),
        )
        .expect("manifest");
    }

    /// Removes the manifest of the static pod `name`.
    pub fn remove_pod(&self, name: &str) {
        std::fs::remove_file(self.dir.join("manifests").join(format!("{name}.json")))
            .expect("removing a manifest");
    }

    fn try_get(&self, path: &str) -> Option<String> {
        let addr = format!("127.0.0.1:{}", self.port);
        crate::net::http_get(&addr, path, Duration::from_secs(30))
            .filter(|(code, _)| *code == 200)
            .map(|(_, body)| body)
    }

    /// GET `path` on the read-only port, as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let body = self.get_text(path);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// GET `path` on the read-only port, as text.
    pub fn get_text(&self, path: &str) -> String {
        self.try_get(path)
            .unwrap_or_else(|| panic!("GET {path} on kubelet failed\n{}", self.log_tail()))
    }

    /// The pod kubelet runs for the static pod `name`, if any.
    pub fn pod(&self, name: &str) -> Option<serde_json::Value> {
        let full = format!("{name}-{}", self.node);
        self.get("/pods")["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["metadata"]["name"] == full.as_str())
            .cloned()
    }

    /// Waits until kubelet reports the static pod `name` Ready; returns the pod.
    pub fn wait_ready(&self, name: &str, timeout: Duration) -> serde_json::Value {
        self.wait_pod(name, timeout, "Ready", is_ready)
    }

    /// Waits until kubelet reports the static pod `name` with `done` true (`what`
    /// names the wait); returns the pod, or panics with the last one seen and
    /// kubelet's log after `timeout`.
    pub fn wait_pod(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            let pod = self.pod(name);
            match pod {
                Some(p) if done(&p) => return p,
                _ if t0.elapsed() > timeout => panic!(
                    "kubelet: pod {name} not {what} after {timeout:?}: {pod:?}\n{}",
                    self.log_tail()
                ),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Waits until `done` holds, panicking with kubelet's log after `timeout`.
    pub fn wait_for(&self, timeout: Duration, what: &str, mut done: impl FnMut(&Kubelet) -> bool) {
        let t0 = Instant::now();
        while !done(self) {
            if t0.elapsed() > timeout {
                panic!("kubelet: no {what} after {timeout:?}\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of kubelet's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("kubelet.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// kubelet's log lines at error level (klog's `E` prefix).
    pub fn errors(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("kubelet.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with('E'))
            .map(str::to_string)
            .collect()
    }
}

/// Whether a pod's `Ready` condition is true.
pub fn is_ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// A container's status in a pod kubelet reports, if it has one yet.
pub fn find_container<'a>(pod: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
}

/// A container's status in a pod kubelet reports.
pub fn container_status<'a>(pod: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    find_container(pod, name).unwrap_or_else(|| panic!("no status of container {name} in {pod}"))
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.kill();
        // What kubelet mounted for its pods' volumes (tmpfs for secrets, emptyDir
        // with medium Memory) goes with it.
        let root = self.dir.join("root");
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut under: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| Path::new(m).starts_with(&root))
                .collect();
            under.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in under {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        for (k, v) in &self.sysctls {
            let _ = std::fs::write(format!("/proc/sys/{k}"), v);
        }
        for d in &self.made {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
