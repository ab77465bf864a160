//! A crid of a test's own: its root, run dir and socket inside the test's temp root,
//! stopped by `Drop` (SIGTERM, then SIGKILL), with CRI clients over its socket.

use crate::cmd::bin;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

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
            .args(["--registries-conf", "/dev/null", "--log-level", "info"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("crid log file"));
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

    /// A gRPC channel over the socket.
    pub async fn channel(&self) -> Channel {
        channel(&self.socket).await
    }

    /// A RuntimeService client.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    /// An ImageService client.
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
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
        if self.child.is_some() {
            self.stop_with(nix::sys::signal::Signal::SIGTERM);
        }
        // Containers outlive crid by design; a test's do not outlive the test.
        let runc_root = self.run_dir.join("runc");
        for e in std::fs::read_dir(&runc_root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force"])
                .arg(e.file_name())
                .output();
        }
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
    let path = path.to_path_buf();
    tonic::transport::Endpoint::try_from("http://[::1]:1")
        .expect("endpoint")
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
