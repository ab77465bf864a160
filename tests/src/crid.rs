//! A crid of a test's own: its root, run dir and socket inside the test's temp root,
//! stopped by `Drop` (SIGTERM, then SIGKILL), with CRI clients over its socket.

use crate::cmd::bin;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// A gRPC channel of [`Crid::images_without_timer`].
pub type BareChannel = tower::util::BoxCloneService<
    tonic::codegen::http::Request<tonic::body::Body>,
    tonic::codegen::http::Response<hyper::body::Incoming>,
    hyper::Error,
>;

/// A running crid.
pub struct Crid {
    child: Option<Child>,
    /// The CRI socket.
    pub socket: PathBuf,
    /// Its --root.
    pub root: PathBuf,
    /// Its --run-dir.
    pub run_dir: PathBuf,
    /// Its stderr.
    pub log: PathBuf,
}

impl Crid {
    /// Starts crid under `dir` (root, run dir, socket, CNI conf dir `dir/cni`) with
    /// `extra` flags, and waits for its socket.
    pub fn start(dir: &Path, extra: &[&str]) -> Crid {
        Crid::start_with_env(dir, extra, &[])
    }

    /// [`Crid::start`] with `env` added to crid's environment.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Crid {
        let root = dir.join("root");
        let run_dir = dir.join("run");
        let socket = run_dir.join("crid.sock");
        let log = dir.join("crid.log");
        let mut c = Command::new(bin("crid"));
        c.arg("--root")
            .arg(&root)
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--listen")
            .arg(format!("unix://{}", socket.display()))
            .arg("--cni-conf-dir")
            .arg(dir.join("cni"))
            .args([
                "--log-level",
                &std::env::var("CRIKIT_TEST_LOG").unwrap_or("info".into()),
            ])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("crid log file"));
        if !extra.contains(&"--registries-conf") {
            c.args(["--registries-conf", "/dev/null"]);
        }
        // The runtime under test, unless the test picks the runtime itself.
        if !extra
            .iter()
            .any(|a| *a == "--runtime" || *a == "--default-runtime")
        {
            c.args(["--default-runtime", &crate::runc::runtime()]);
        }
        let child = c.spawn().expect("starting crid");
        let mut crid = Crid {
            child: Some(child),
            socket,
            root,
            run_dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // Connectable, not just there: a killed crid leaves its socket behind.
        while std::os::unix::net::UnixStream::connect(&crid.socket).is_err() {
            if let Some(status) = crid
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("crid exited with {status}: {}", crid.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "crid did not listen: {}",
                crid.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        crid
    }

    /// What crid wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// crid's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(-1, |c| c.id() as i32)
    }

    /// crid's resident memory in KiB and its open file descriptors.
    pub fn footprint(&self) -> (u64, usize) {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        (rss, fds)
    }

    /// A gRPC channel over the socket.
    pub async fn channel(&self) -> Channel {
        channel(&self.socket).await
    }

    /// A RuntimeService client.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    /// A RuntimeService client on a connection of its own whose streams take at most
    /// `window` unread bytes: one that stops reading a stream holds crid up at once.
    pub async fn runtime_with_window(&self, window: u32) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(channel_with_window(&self.socket, Some(window)).await)
    }

    /// An ImageService client.
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    /// An ImageService client on a bare HTTP/2 connection with no timer of its own:
    /// a `grpc-timeout` it sends is enforced by crid alone, so the caller sees what
    /// crid answers (tonic's channel would end the call itself at that deadline).
    pub async fn images_without_timer(&self) -> ImageServiceClient<BareChannel> {
        let s = tokio::net::UnixStream::connect(&self.socket)
            .await
            .expect("connecting to crid");
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(s),
        )
        .await
        .expect("HTTP/2 with crid");
        tokio::spawn(conn);
        let svc = tower::service_fn(move |req| {
            let mut send = send.clone();
            async move { send.send_request(req).await }
        });
        let origin = "http://crid".parse().expect("a URI");
        ImageServiceClient::with_origin(BareChannel::new(svc), origin)
    }

    /// Sends `signal` and waits for crid to exit; returns its exit status.
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("crid is running");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().expect("waiting for crid");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Crid {
    fn drop(&mut self) {
        // Pods a failed test left behind go through the CRI, so their network
        // (leases, iptables rules) is torn down by CNI DEL as in production.
        if self.child.is_some() && self.socket.exists() {
            let socket = self.socket.clone();
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let mut c = RuntimeServiceClient::new(channel(&socket).await);
                    let pods = c
                        .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest::default())
                        .await
                        .map(|r| r.into_inner().items)
                        .unwrap_or_default();
                    for p in pods {
                        let _ = c
                            .remove_pod_sandbox(k8s_cri::v1::RemovePodSandboxRequest {
                                pod_sandbox_id: p.id,
                            })
                            .await;
                    }
                });
            })
            .join();
        }
        if self.child.is_none() {
            // Stopped by the test itself, which may start another crid on the
            // same state: its containers stay.
            return;
        }
        self.stop_with(nix::sys::signal::Signal::SIGTERM);
        // Containers outlive crid by design; a test's do not outlive the test.
        let mut roots = vec![("runc".to_string(), self.run_dir.join("runc"))];
        for h in std::fs::read_dir(self.run_dir.join("runtimes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            roots.push((h.file_name().to_string_lossy().into_owned(), h.path()));
        }
        for (runtime, root) in roots {
            for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                let _ = Command::new(&runtime)
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force"])
                    .arg(e.file_name())
                    .output();
            }
        }
    }
}

/// A PullImage request for `image`, with no credentials.
pub fn pull_request(image: impl Into<String>) -> k8s_cri::v1::PullImageRequest {
    k8s_cri::v1::PullImageRequest {
        image: Some(k8s_cri::v1::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Writes a CNI network config list into `dir/cni` (the conf dir [`Crid::start`]
/// gives crid).
pub fn write_conflist(dir: &Path, name: &str, conflist: &serde_json::Value) {
    let conf = dir.join("cni");
    std::fs::create_dir_all(&conf).expect("cni conf dir");
    std::fs::write(conf.join(format!("{name}.conflist")), conflist.to_string()).expect("conflist");
}

/// A gRPC channel to the unix socket at `path`.
pub async fn channel(path: &Path) -> Channel {
    channel_with_window(path, None).await
}

/// A gRPC channel to the unix socket at `path` whose HTTP/2 streams take at most
/// `window` bytes that the caller has not read (h2's 64 KiB when None).
pub async fn channel_with_window(path: &Path, window: Option<u32>) -> Channel {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::try_from("http://[::1]:1")
        .expect("endpoint")
        .initial_stream_window_size(window)
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .expect("connecting to crid")
}

/// The network a [`World`]'s pods get.
pub enum Network {
    /// No CNI config at all.
    None,
    /// A config whose only plugin brings the loopback up: pods without an address.
    Loopback,
}

/// A test's CRI world: the registry holding a busybox image, a crid of its own whose
/// pods go under a cgroup parent of the test's, and clients. Dropped in order:
/// clients, crid (its pods torn down), the cgroups, the temp root, the registry.
pub struct World {
    /// The RuntimeService.
    pub rt: RuntimeServiceClient<Channel>,
    /// The ImageService.
    pub img: ImageServiceClient<Channel>,
    /// The server.
    pub crid: Crid,
    /// The pushed busybox image's reference, already pulled through crid.
    pub image: String,
    /// Its config digest (the CRI image id).
    pub image_id: String,
    /// The cgroup parent of the test's pods.
    pub cgroup: String,
    args: Vec<String>,
    _cgroups: crate::CgroupGuard,
    /// The test's directory.
    pub tmp: crate::TempRoot,
    /// The registry.
    pub reg: crate::Registry,
}

impl World {
    /// Starts everything; `extra` goes to crid.
    pub async fn new(network: Network, extra: &[&str]) -> World {
        World::build(network, extra, None, false).await
    }

    /// [`World::new`] with a pause image of its own (busybox sleeping, in the same
    /// registry, pulled by the first pod that shares its PID namespace).
    pub async fn with_pause_image(network: Network, extra: &[&str]) -> World {
        World::build(network, extra, None, true).await
    }

    /// [`World::new`] with crid's root on a tmpfs of `size` (`8m`): a disk that
    /// fills up.
    pub async fn on_tmpfs(network: Network, extra: &[&str], size: &str) -> World {
        World::build(network, extra, Some(size), false).await
    }

    async fn build(
        network: Network,
        extra: &[&str],
        root_size: Option<&str>,
        pause: bool,
    ) -> World {
        let reg = crate::Registry::start();
        let pushed = crate::image::push(&reg.addr, "cri/busybox", "1", &crate::Image::busybox());
        let pause_ref = pause.then(|| {
            let mut image = crate::Image::busybox();
            image.cmd = vec!["/bin/sleep".into(), "2147483647".into()];
            crate::image::push(&reg.addr, "cri/pause", "1", &image).reference
        });
        let tmp = crate::TempRoot::new();
        if let Some(size) = root_size {
            tmp.mount_tmpfs("root", size);
        }
        let tag = tmp
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().replace('.', ""))
            .unwrap_or_default();
        let cgroup = format!("/crikit-test-{tag}");
        let cgroups = crate::CgroupGuard(cgroup.clone());
        if let Network::Loopback = network {
            write_conflist(
                tmp.path(),
                "10-lo",
                &serde_json::json!({"cniVersion": "1.0.0", "name": "lo-only",
                    "plugins": [{"type": "loopback"}]}),
            );
        }
        let mut args: Vec<String> = [
            "--insecure-registry",
            &reg.addr,
            "--cni-bin-dir",
            "/usr/lib/cni",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        if let Some(r) = pause_ref {
            args.extend(["--pause-image".to_string(), r]);
        }
        args.shrink_to_fit();
        let crid = Crid::start(
            tmp.path(),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let mut img = crid.images().await;
        let rt = crid.runtime().await;
        img.pull_image(k8s_cri::v1::PullImageRequest {
            image: Some(k8s_cri::v1::ImageSpec {
                image: pushed.reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("pulling the test image: {e:?}: {}", crid.stderr()));
        World {
            rt,
            img,
            crid,
            image: pushed.reference,
            image_id: pushed.config,
            cgroup,
            args,
            _cgroups: cgroups,
            tmp,
            reg,
        }
    }

    /// Kills crid with SIGKILL, waits `pause`, starts it again on the same state.
    pub async fn kill_and_restart(&mut self, pause: Duration) {
        let status = self.crid.stop_with(nix::sys::signal::Signal::SIGKILL);
        assert!(!status.success(), "crid was killed: {status}");
        tokio::time::sleep(pause).await;
        self.restart().await;
    }

    /// Starts crid again on the same state with `extra` for flags instead of the
    /// earlier ones (after the test stopped it).
    pub async fn restart_with(&mut self, extra: &[&str]) {
        self.args = extra.iter().map(|s| s.to_string()).collect();
        self.restart().await;
    }

    /// Starts crid again on the same state (after the test stopped it).
    pub async fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.crid = Crid::start(self.tmp.path(), &args);
        self.rt = self.crid.runtime().await;
        self.img = self.crid.images().await;
    }

    /// A pod config: its own hostname, log directory, DNS, `app` label and the
    /// test's cgroup parent; `pid` is the PID namespace mode.
    pub fn pod_config(
        &self,
        name: &str,
        pid: k8s_cri::v1::NamespaceMode,
    ) -> k8s_cri::v1::PodSandboxConfig {
        use k8s_cri::v1 as cri;
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: format!("{name}-host"),
            log_directory: self
                .tmp
                .path()
                .join("logs")
                .join(name)
                .display()
                .to_string(),
            dns_config: Some(cri::DnsConfig {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            labels: [("app".to_string(), name.to_string())].into(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup.clone(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        pid: pid as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A container the OOM killer ends: 200 MB through a pipe under a 16 MiB limit.
    pub fn oom_container_config(&self, name: &str) -> k8s_cri::v1::ContainerConfig {
        use k8s_cri::v1 as cri;
        let mut oom = self.container_config(name, "head -c 200m /dev/zero | tail");
        oom.linux = Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 16 << 20,
                memory_swap_limit_in_bytes: 16 << 20,
                ..Default::default()
            }),
            security_context: None,
        });
        oom
    }

    /// A container config running `script` under /bin/sh from the test image, with
    /// FOO=bar, a `tier` label and the log at NAME.log.
    pub fn container_config(&self, name: &str, script: &str) -> k8s_cri::v1::ContainerConfig {
        use k8s_cri::v1 as cri;
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            envs: vec![cri::KeyValue {
                key: "FOO".into(),
                value: "bar".into(),
            }],
            log_path: format!("{name}.log"),
            labels: [("tier".to_string(), name.to_string())].into(),
            ..Default::default()
        }
    }

    /// RunPodSandbox; the pod's id.
    pub async fn run_pod(
        &self,
        config: &k8s_cri::v1::PodSandboxConfig,
    ) -> Result<String, tonic::Status> {
        Ok(self
            .rt
            .clone()
            .run_pod_sandbox(k8s_cri::v1::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id)
    }

    /// CreateContainer; the container's id.
    pub async fn create(
        &self,
        pod: &str,
        config: &k8s_cri::v1::PodSandboxConfig,
        c: k8s_cri::v1::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        Ok(self
            .rt
            .clone()
            .create_container(k8s_cri::v1::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(c),
                sandbox_config: Some(config.clone()),
            })
            .await?
            .into_inner()
            .container_id)
    }

    /// CreateContainer and StartContainer; the container's id. Panics on failure.
    pub async fn start(
        &self,
        pod: &str,
        config: &k8s_cri::v1::PodSandboxConfig,
        c: k8s_cri::v1::ContainerConfig,
    ) -> String {
        let id = self
            .create(pod, config, c)
            .await
            .unwrap_or_else(|e| panic!("{e:?}: {}", self.crid.stderr()));
        self.rt
            .clone()
            .start_container(k8s_cri::v1::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{e:?}: {}", self.crid.stderr()));
        id
    }

    /// Creates and starts a container of the test image running `sh -c script`
    /// (see [`World::container_config`]) in `pod`; its id.
    pub async fn run_sh(
        &self,
        pod: &str,
        config: &k8s_cri::v1::PodSandboxConfig,
        name: &str,
        script: &str,
    ) -> String {
        self.start(pod, config, self.container_config(name, script))
            .await
    }

    /// ContainerStatus.
    pub async fn status(&self, id: &str) -> k8s_cri::v1::ContainerStatus {
        self.try_status(id)
            .await
            .unwrap_or_else(|e| panic!("status of {id}: {e:?}"))
    }

    /// ContainerStatus (not verbose), or the error crid answered.
    pub async fn try_status(
        &self,
        id: &str,
    ) -> Result<k8s_cri::v1::ContainerStatus, tonic::Status> {
        let r = self
            .rt
            .clone()
            .container_status(k8s_cri::v1::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await?;
        Ok(r.into_inner().status.expect("a status"))
    }

    /// Every container crid lists, as (id, state), sorted.
    pub async fn containers(&self) -> Vec<(String, i32)> {
        let mut out: Vec<(String, i32)> = self
            .rt
            .clone()
            .list_containers(k8s_cri::v1::ListContainersRequest::default())
            .await
            .unwrap_or_else(|e| panic!("listing containers: {e:?}"))
            .into_inner()
            .containers
            .into_iter()
            .map(|c| (c.id, c.state))
            .collect();
        out.sort();
        out
    }

    /// Every pod sandbox crid lists (ListPodSandbox without a filter).
    pub async fn pods(&self) -> Vec<k8s_cri::v1::PodSandbox> {
        self.rt
            .clone()
            .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest::default())
            .await
            .unwrap_or_else(|e| panic!("listing pods: {e:?}"))
            .into_inner()
            .items
    }

    /// PodSandboxStatus (not verbose).
    pub async fn pod_status(&self, id: &str) -> k8s_cri::v1::PodSandboxStatus {
        self.try_pod_status(id)
            .await
            .unwrap_or_else(|e| panic!("status of pod {id}: {e:?}"))
    }

    /// PodSandboxStatus (not verbose), or the error crid answered.
    pub async fn try_pod_status(
        &self,
        id: &str,
    ) -> Result<k8s_cri::v1::PodSandboxStatus, tonic::Status> {
        let r = self
            .rt
            .clone()
            .pod_sandbox_status(k8s_cri::v1::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await?;
        Ok(r.into_inner().status.expect("a pod status"))
    }

    /// PodSandboxStatus's verbose `info`: crid's record of the pod.
    pub async fn pod_info(&self, id: &str) -> serde_json::Value {
        let r = self
            .rt
            .clone()
            .pod_sandbox_status(k8s_cri::v1::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap_or_else(|e| panic!("status of pod {id}: {e:?}"))
            .into_inner();
        serde_json::from_str(&r.info["info"]).expect("the pod's record")
    }

    /// The container's pid, from ContainerStatus's verbose `info` (crid's record).
    pub async fn container_pid(&self, id: &str) -> i32 {
        let r = self
            .rt
            .clone()
            .container_status(k8s_cri::v1::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap_or_else(|e| panic!("status of {id}: {e:?}"))
            .into_inner();
        let v: serde_json::Value = serde_json::from_str(&r.info["info"]).expect("its record");
        v["pid"].as_i64().expect("a pid") as i32
    }

    /// An Exec URL for `cmd` in `ctr`: stdout, and stderr unless `io` asks for a
    /// terminal.
    pub async fn exec_url(&self, ctr: &str, cmd: &[&str], io: crate::stream::ExecIo) -> String {
        self.rt
            .clone()
            .exec(k8s_cri::v1::ExecRequest {
                container_id: ctr.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty: io.tty,
                stdin: io.stdin,
                stdout: true,
                stderr: !io.tty,
            })
            .await
            .unwrap_or_else(|e| panic!("Exec in {ctr}: {e:?}"))
            .into_inner()
            .url
    }

    /// ExecSync with a timeout in seconds.
    pub async fn exec(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<k8s_cri::v1::ExecSyncResponse, tonic::Status> {
        Ok(self
            .rt
            .clone()
            .exec_sync(k8s_cri::v1::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await?
            .into_inner())
    }

    /// StopPodSandbox then RemovePodSandbox.
    pub async fn remove_pod(&self, id: &str) {
        let mut rt = self.rt.clone();
        rt.stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("stopping pod {id}: {e:?}"));
        rt.remove_pod_sandbox(k8s_cri::v1::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("removing pod {id}: {e:?}"));
    }

    /// Waits for `want` in the log at `path`; the log.
    pub async fn wait_for_log(&self, path: &Path, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(want) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{want:?} never reached {}: {text}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
