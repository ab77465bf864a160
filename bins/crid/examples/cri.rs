//! A small CRI client for scripts, the demo and the benchmark: speaks runtime.v1 to
//! any CRI socket (crid, containerd, CRI-O) and prints JSON.
//!
//! ```text
//! cri SOCKET version
//! cri SOCKET pull IMAGE
//! cri SOCKET runp POD.json                      -> pod id
//! cri SOCKET create POD_ID CONTAINER.json POD.json -> container id
//! cri SOCKET start|stop|rm ID
//! cri SOCKET stopp|rmp POD_ID
//! cri SOCKET inspect ID | inspectp POD_ID | ps | pods
//! cri SOCKET exec ID CMD...
//! cri SOCKET execs N ID CMD...                  -> N ExecSync calls in a row, latencies
//! cri SOCKET bench N POD.json CONTAINER.json    -> start and teardown latencies
//! cri SOCKET up N POD.json CONTAINER.json       -> N pods with a running container
//! cri SOCKET down                               -> every pod stopped and removed
//! ```
//!
//! POD.json: `{"name", "namespace", "uid", "attempt", "hostname", "log_directory",
//! "labels", "pid"}` (pid: "pod", "container" or "node"); CONTAINER.json:
//! `{"name", "image", "command", "args", "env": {K: V}, "log_path", "labels",
//! "seccomp"}` (seccomp: "unconfined", as kubelet sends by default,
//! "runtime/default" or "localhost/PATH"); all optional. In `bench`, `{n}` becomes the run's number.

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn channel(path: String) -> Result<Channel> {
    Ok(tonic::transport::Endpoint::try_from("http://[::1]:1")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await?)
}

fn read<T: serde::de::DeserializeOwned>(path: &str, n: Option<usize>) -> Result<T> {
    let mut text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    if let Some(n) = n {
        text = text.replace("{n}", &n.to_string());
    }
    Ok(serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?)
}

/// The pod file.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Pod {
    name: String,
    namespace: String,
    uid: String,
    attempt: u32,
    hostname: String,
    log_directory: String,
    labels: std::collections::HashMap<String, String>,
    pid: String,
}

impl Pod {
    fn config(self) -> Result<cri::PodSandboxConfig> {
        let pid = match self.pid.as_str() {
            "" | "container" => cri::NamespaceMode::Container,
            "pod" => cri::NamespaceMode::Pod,
            "node" => cri::NamespaceMode::Node,
            other => return Err(format!("pid {other:?}: pod, container or node").into()),
        };
        Ok(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.name,
                uid: self.uid,
                namespace: if self.namespace.is_empty() {
                    "default".into()
                } else {
                    self.namespace
                },
                attempt: self.attempt,
            }),
            hostname: self.hostname,
            log_directory: self.log_directory,
            labels: self.labels,
            linux: Some(cri::LinuxPodSandboxConfig {
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
        })
    }
}

/// The container file.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Ctr {
    name: String,
    image: String,
    command: Vec<String>,
    args: Vec<String>,
    env: std::collections::BTreeMap<String, String>,
    log_path: String,
    labels: std::collections::HashMap<String, String>,
    seccomp: Option<String>,
}

impl Ctr {
    fn config(self) -> Result<cri::ContainerConfig> {
        use cri::security_profile::ProfileType;
        let seccomp = match self.seccomp.as_deref() {
            None => None,
            Some("unconfined") => Some((ProfileType::Unconfined, String::new())),
            Some("runtime/default") => Some((ProfileType::RuntimeDefault, String::new())),
            Some(s) => match s.strip_prefix("localhost/") {
                Some(p) => Some((ProfileType::Localhost, p.to_string())),
                None => return Err(format!("seccomp {s:?}").into()),
            },
        };
        Ok(cri::ContainerConfig {
            linux: seccomp.map(|(t, path)| cri::LinuxContainerConfig {
                resources: None,
                security_context: Some(cri::LinuxContainerSecurityContext {
                    seccomp: Some(cri::SecurityProfile {
                        profile_type: t as i32,
                        localhost_ref: path,
                    }),
                    ..Default::default()
                }),
            }),
            metadata: Some(cri::ContainerMetadata {
                name: self.name,
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image,
                ..Default::default()
            }),
            command: self.command,
            args: self.args,
            envs: self
                .env
                .into_iter()
                .map(|(key, value)| cri::KeyValue { key, value })
                .collect(),
            log_path: self.log_path,
            labels: self.labels,
            ..Default::default()
        })
    }
}

fn print(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("cri: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (sock, cmd, rest) = match args.as_slice() {
        [s, c, rest @ ..] => (
            s.trim_start_matches("unix://").to_string(),
            c.as_str(),
            rest,
        ),
        _ => return Err("usage: cri SOCKET COMMAND [ARGS] (see the source's header)".into()),
    };
    let ch = channel(sock).await?;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);
    let arg = |i: usize| rest.get(i).cloned().ok_or("missing argument");
    match cmd {
        "version" => print(
            &rt.version(cri::VersionRequest::default())
                .await?
                .into_inner(),
        ),
        "pull" => {
            let r = img
                .pull_image(cri::PullImageRequest {
                    image: Some(cri::ImageSpec {
                        image: arg(0)?,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?;
            println!("{}", r.into_inner().image_ref);
            Ok(())
        }
        "runp" => {
            let config = read::<Pod>(&arg(0)?, None)?.config()?;
            println!("{}", runp(&mut rt, config).await?);
            Ok(())
        }
        "create" => {
            let ctr = read::<Ctr>(&arg(1)?, None)?.config()?;
            let pod = read::<Pod>(&arg(2)?, None)?.config()?;
            println!("{}", create(&mut rt, arg(0)?, ctr, pod).await?);
            Ok(())
        }
        "start" => {
            rt.start_container(cri::StartContainerRequest {
                container_id: arg(0)?,
            })
            .await?;
            Ok(())
        }
        "stop" => {
            rt.stop_container(cri::StopContainerRequest {
                container_id: arg(0)?,
                timeout: 10,
            })
            .await?;
            Ok(())
        }
        "rm" => {
            rt.remove_container(cri::RemoveContainerRequest {
                container_id: arg(0)?,
            })
            .await?;
            Ok(())
        }
        "stopp" => {
            rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: arg(0)?,
            })
            .await?;
            Ok(())
        }
        "rmp" => {
            rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: arg(0)?,
            })
            .await?;
            Ok(())
        }
        "inspect" => print(
            &rt.container_status(cri::ContainerStatusRequest {
                container_id: arg(0)?,
                verbose: false,
            })
            .await?
            .into_inner()
            .status,
        ),
        "inspectp" => print(
            &rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: arg(0)?,
                verbose: false,
            })
            .await?
            .into_inner()
            .status,
        ),
        "ps" => print(
            &rt.list_containers(cri::ListContainersRequest::default())
                .await?
                .into_inner()
                .containers,
        ),
        "pods" => print(
            &rt.list_pod_sandbox(cri::ListPodSandboxRequest::default())
                .await?
                .into_inner()
                .items,
        ),
        "exec" => {
            let r = rt
                .exec_sync(cri::ExecSyncRequest {
                    container_id: arg(0)?,
                    cmd: rest[1..].to_vec(),
                    timeout: 30,
                })
                .await?
                .into_inner();
            use std::io::Write;
            std::io::stdout().write_all(&r.stdout)?;
            std::io::stderr().write_all(&r.stderr)?;
            std::process::exit(r.exit_code);
        }
        "execs" => {
            let n: usize = arg(0)?.parse()?;
            let req = cri::ExecSyncRequest {
                container_id: arg(1)?,
                cmd: rest.get(2..).unwrap_or_default().to_vec(),
                timeout: 30,
            };
            let mut ms = Vec::with_capacity(n);
            for _ in 0..n {
                let t0 = Instant::now();
                let r = rt.exec_sync(req.clone()).await?.into_inner();
                if r.exit_code != 0 {
                    return Err(format!("exit code {}", r.exit_code).into());
                }
                ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            print(&serde_json::json!({ "exec_ms": ms }))
        }
        "bench" => bench(&mut rt, arg(0)?.parse()?, &arg(1)?, &arg(2)?).await,
        "up" => {
            let mut ids = vec![];
            for i in 0..arg(0)?.parse()? {
                let p = read::<Pod>(&arg(1)?, Some(i))?.config()?;
                let c = read::<Ctr>(&arg(2)?, Some(i))?.config()?;
                let id = runp(&mut rt, p.clone()).await?;
                let cid = create(&mut rt, id.clone(), c, p).await?;
                rt.start_container(cri::StartContainerRequest { container_id: cid })
                    .await?;
                ids.push(id);
            }
            print(&ids)
        }
        "down" => {
            let pods = rt
                .list_pod_sandbox(cri::ListPodSandboxRequest::default())
                .await?
                .into_inner()
                .items;
            for p in pods {
                rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: p.id.clone(),
                })
                .await?;
                rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: p.id,
                })
                .await?;
            }
            Ok(())
        }
        other => Err(format!("unknown command {other:?}").into()),
    }
}

async fn runp(
    rt: &mut RuntimeServiceClient<Channel>,
    config: cri::PodSandboxConfig,
) -> Result<String> {
    Ok(rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id)
}

async fn create(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: String,
    ctr: cri::ContainerConfig,
    config: cri::PodSandboxConfig,
) -> Result<String> {
    Ok(rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod,
            config: Some(ctr),
            sandbox_config: Some(config),
        })
        .await?
        .into_inner()
        .container_id)
}

/// N times: RunPodSandbox + CreateContainer + StartContainer, then StopPodSandbox +
/// RemovePodSandbox; prints the durations (ms) as JSON.
async fn bench(
    rt: &mut RuntimeServiceClient<Channel>,
    n: usize,
    pod: &str,
    ctr: &str,
) -> Result<()> {
    let mut start = vec![];
    let mut teardown = vec![];
    for i in 0..n {
        let p = read::<Pod>(pod, Some(i))?.config()?;
        let c = read::<Ctr>(ctr, Some(i))?.config()?;
        let t0 = Instant::now();
        let id = runp(rt, p.clone()).await?;
        let cid = create(rt, id.clone(), c, p).await?;
        rt.start_container(cri::StartContainerRequest {
            container_id: cid.clone(),
        })
        .await?;
        start.push(t0.elapsed());
        let t1 = Instant::now();
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await?;
        teardown.push(t1.elapsed());
    }
    let ms = |v: &[Duration]| -> Vec<f64> { v.iter().map(|d| d.as_secs_f64() * 1000.0).collect() };
    print(&serde_json::json!({"start_ms": ms(&start), "teardown_ms": ms(&teardown)}))
}
