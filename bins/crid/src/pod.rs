//! Pod sandboxes: pinned namespaces, hostname and resolv.conf files, the log
//! directory, the network; state kept in `<root>/pods/<id>/pod.json`.

use crate::state::{now_ns, write_json, Crid};
use k8s_cri::v1 as cri;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use tonic::Status;

/// What crid keeps of a pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pod {
    /// Its id.
    pub id: String,
    /// The request's config.
    pub config: cri::PodSandboxConfig,
    /// The runtime handler asked for.
    pub runtime_handler: String,
    /// Ready (true) or not ready.
    pub ready: bool,
    /// When it was made (ns).
    pub created_at: i64,
    /// Pinned namespaces: kind → file.
    pub ns: BTreeMap<String, PathBuf>,
    /// Its run directory (namespaces, hostname, resolv.conf).
    pub dir: PathBuf,
    /// Pod IPs, first the primary.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The CNI result of the ADD, for DEL and CHECK.
    #[serde(default)]
    pub network: Option<serde_json::Value>,
    /// The infra container, when the pod shares a PID namespace.
    #[serde(default)]
    pub infra: Option<String>,
}

/// The key that makes a pod's name unique.
pub fn name_key(m: &cri::PodSandboxMetadata) -> String {
    format!("pod\0{}\0{}\0{}\0{}", m.name, m.namespace, m.uid, m.attempt)
}

impl Pod {
    fn ns_mode(&self, which: fn(&cri::NamespaceOption) -> i32) -> cri::NamespaceMode {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .map(which)
            .and_then(|m| cri::NamespaceMode::try_from(m).ok())
            .unwrap_or(cri::NamespaceMode::Pod)
    }

    /// The pod's network namespace mode.
    pub fn net_mode(&self) -> cri::NamespaceMode {
        self.ns_mode(|o| o.network)
    }

    /// The pod's IPC namespace mode.
    pub fn ipc_mode(&self) -> cri::NamespaceMode {
        self.ns_mode(|o| o.ipc)
    }

    /// The pod's PID namespace mode.
    pub fn pid_mode(&self) -> cri::NamespaceMode {
        self.ns_mode(|o| o.pid)
    }

    /// The pod's cgroup parent, if it names one.
    pub fn cgroup_parent(&self) -> Option<&str> {
        self.config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.as_str())
            .filter(|c| !c.is_empty())
    }

    /// The pod's sysctls.
    pub fn sysctls(&self) -> HashMap<String, String> {
        self.config
            .linux
            .as_ref()
            .map(|l| l.sysctls.clone())
            .unwrap_or_default()
    }

    fn metadata(&self) -> cri::PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }

    fn state(&self) -> i32 {
        if self.ready {
            cri::PodSandboxState::SandboxReady as i32
        } else {
            cri::PodSandboxState::SandboxNotready as i32
        }
    }

    /// As ListPodSandbox shows it.
    pub fn to_cri(&self) -> cri::PodSandbox {
        cri::PodSandbox {
            id: self.id.clone(),
            metadata: Some(self.metadata()),
            state: self.state(),
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }

    /// As PodSandboxStatus shows it.
    pub fn status(&self) -> cri::PodSandboxStatus {
        let ns_options = self
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        cri::PodSandboxStatus {
            id: self.id.clone(),
            metadata: Some(self.metadata()),
            state: self.state(),
            created_at: self.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: self.ips.first().cloned().unwrap_or_default(),
                additional_ips: self
                    .ips
                    .iter()
                    .skip(1)
                    .map(|ip| cri::PodIp { ip: ip.clone() })
                    .collect(),
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: ns_options,
                }),
            }),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }

    /// Whether it passes ListPodSandbox's filter.
    pub fn matches(&self, f: &cri::PodSandboxFilter) -> bool {
        (f.id.is_empty() || self.id.starts_with(&f.id))
            && f.state.as_ref().is_none_or(|s| s.state == self.state())
            && f.label_selector
                .iter()
                .all(|(k, v)| self.config.labels.get(k) == Some(v))
    }
}

/// Refuses what crid cannot honour, naming it.
fn check_pod_config(config: &cri::PodSandboxConfig, handler: &str) -> Result<(), Status> {
    let m = config
        .metadata
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("pod config has no metadata"))?;
    for (what, v) in [
        ("name", &m.name),
        ("namespace", &m.namespace),
        ("uid", &m.uid),
    ] {
        if v.is_empty() {
            return Err(Status::invalid_argument(format!(
                "pod metadata has no {what}"
            )));
        }
    }
    if !handler.is_empty() && handler != "runc" {
        return Err(Status::invalid_argument(format!(
            "runtime handler {handler:?}: crid has only the default (runc)"
        )));
    }
    if let Some(sc) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
    {
        crate::container::check_selinux_userns(
            sc.selinux_options.as_ref(),
            sc.namespace_options.as_ref(),
        )?;
        if sc
            .namespace_options
            .as_ref()
            .is_some_and(|o| o.pid == cri::NamespaceMode::Target as i32)
        {
            return Err(Status::invalid_argument(
                "pod PID namespace mode TARGET applies to containers only",
            ));
        }
        crate::container::check_apparmor(sc.apparmor.as_ref())?;
    }
    Ok(())
}

/// resolv.conf text from the pod's DNS config.
fn resolv_conf(dns: &cri::DnsConfig) -> String {
    let mut s = String::new();
    if !dns.searches.is_empty() {
        s.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for n in &dns.servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !dns.options.is_empty() {
        s.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    s
}

impl Crid {
    /// The pod `id`, if crid has it.
    pub fn pod(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<Pod>>> {
        self.pods
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn pod_file(&self, id: &str) -> PathBuf {
        self.settings.root.join("pods").join(id).join("pod.json")
    }

    /// Saves a pod's state.
    pub fn save_pod(&self, pod: &Pod) -> Result<(), Status> {
        write_json(&self.pod_file(&pod.id), pod)
            .map_err(|e| Status::internal(format!("saving pod {}: {e}", pod.id)))
    }

    /// RunPodSandbox.
    pub async fn run_pod(
        self: &Arc<Self>,
        req: cri::RunPodSandboxRequest,
    ) -> Result<String, Status> {
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("RunPodSandbox without a pod config"))?;
        check_pod_config(&config, &req.runtime_handler)?;
        let meta = config.metadata.clone().unwrap_or_default();
        let id = crate::state::new_id().map_err(crate::image::internal)?;
        let _name = self.reserve(
            name_key(&meta),
            &id,
            &format!("pod {}/{}", meta.namespace, meta.name),
        )?;
        let dir = self.settings.run_dir.join("pods").join(&id);
        let mut pod = Pod {
            id: id.clone(),
            runtime_handler: req.runtime_handler.clone(),
            config,
            ready: false,
            created_at: now_ns(),
            ns: BTreeMap::new(),
            dir: dir.clone(),
            ips: vec![],
            network: None,
            infra: None,
        };
        // On disk before anything is made: a crid killed half way finds a pod
        // that is not ready, which kubelet stops and removes.
        self.save_pod(&pod)?;
        let me = Arc::clone(self);
        let made = tokio::task::spawn_blocking(move || me.make_pod(&mut pod).map(|()| pod))
            .await
            .map_err(crate::image::internal)?;
        let mut pod = match made {
            Ok(p) => p,
            Err(e) => {
                crate::netns::unpin(&dir.join("ns"));
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_dir_all(self.settings.root.join("pods").join(&id));
                return Err(e);
            }
        };
        if pod.pid_mode() == cri::NamespaceMode::Pod {
            let started = self.start_infra(&mut pod).await;
            if started.is_ok() {
                self.save_pod(&pod)?;
            }
            if let Err(e) = started {
                let _ = self.teardown_pod(&mut pod).await;
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_dir_all(self.settings.root.join("pods").join(&id));
                return Err(e);
            }
        }
        pod.ready = true;
        self.save_pod(&pod)?;
        self.pods
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(pod)));
        _name.keep();
        Ok(id)
    }

    /// Namespaces, files, network: the slow, blocking part of RunPodSandbox.
    fn make_pod(&self, pod: &mut Pod) -> Result<(), Status> {
        std::fs::create_dir_all(&pod.dir).map_err(crate::image::internal)?;
        // A host-network pod shares the host's UTS namespace too, as in containerd.
        let mut kinds = vec![];
        if pod.net_mode() != cri::NamespaceMode::Node {
            kinds.push("uts");
            kinds.push("net");
        }
        if pod.ipc_mode() != cri::NamespaceMode::Node {
            kinds.push("ipc");
        }
        let hostname =
            if pod.net_mode() == cri::NamespaceMode::Node && pod.config.hostname.is_empty() {
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                pod.config.hostname.clone()
            };
        let t0 = std::time::Instant::now();
        let pinned = crate::netns::pin(&pod.dir.join("ns"), &kinds, &hostname)
            .map_err(|e| Status::internal(format!("pod namespaces: {e}")))?;
        for p in pinned {
            let kind = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            pod.ns.insert(kind, p);
        }
        std::fs::write(pod.dir.join("hostname"), format!("{hostname}\n"))
            .map_err(crate::image::internal)?;
        let resolv = match &pod.config.dns_config {
            Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
                resolv_conf(d)
            }
            _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        std::fs::write(pod.dir.join("resolv.conf"), resolv).map_err(crate::image::internal)?;
        if !pod.config.log_directory.is_empty() {
            std::fs::create_dir_all(&pod.config.log_directory).map_err(|e| {
                Status::invalid_argument(format!("log directory {}: {e}", pod.config.log_directory))
            })?;
        }
        let t_files = t0.elapsed();
        if pod.net_mode() != cri::NamespaceMode::Node {
            crate::network::add(self, pod)?;
            // Recorded at once: a crid killed from here on still runs DEL.
            self.save_pod(pod)?;
        }
        tracing::debug!(
            "pod {}: namespaces and files in {t_files:?}, network by {:?}",
            pod.id,
            t0.elapsed()
        );
        Ok(())
    }

    /// StopPodSandbox: the pod's containers stop, its network goes. Unknown pods
    /// are no error.
    pub async fn stop_pod(self: &Arc<Self>, id: &str) -> Result<(), Status> {
        let Some(pod) = self.pod(id) else {
            return Ok(());
        };
        for c in self.containers_of(id) {
            self.stop_container(&c, 0).await?;
        }
        let mut pod = pod.lock().await;
        pod.ready = false;
        let torn = self.teardown_pod(&mut pod).await;
        self.save_pod(&pod)?;
        torn
    }

    /// Stops the infra process, tears the network down, unpins the namespaces.
    async fn teardown_pod(self: &Arc<Self>, pod: &mut Pod) -> Result<(), Status> {
        if let Some(infra) = pod.infra.clone() {
            let _ = self.stop_container(&infra, 0).await;
        }
        if pod.network.is_some() {
            let me = Arc::clone(self);
            let p = pod.clone();
            tokio::task::spawn_blocking(move || crate::network::del(&me, &p))
                .await
                .map_err(crate::image::internal)?
                // The namespace and the ADD's result stay for the retry kubelet
                // makes: a lease given up here would be lost for good.
                .map_err(|e| {
                    Status::new(
                        e.code(),
                        format!("pod {}: network teardown: {}", pod.id, e.message()),
                    )
                })?;
            pod.network = None;
            pod.ips.clear();
        }
        crate::netns::unpin(&pod.dir.join("ns"));
        pod.ns.clear();
        Ok(())
    }

    /// RemovePodSandbox: stops it if need be, removes its containers and its
    /// state. Unknown pods are no error.
    pub async fn remove_pod(self: &Arc<Self>, id: &str) -> Result<(), Status> {
        let Some(pod) = self.pod(id) else {
            return Ok(());
        };
        for c in self.containers_of(id) {
            self.remove_container(&c).await?;
        }
        let mut guard = pod.lock().await;
        guard.ready = false;
        if let Err(e) = self.teardown_pod(&mut guard).await {
            self.save_pod(&guard)?;
            return Err(e);
        }
        // The infra process, and any a crash left unrecorded in the pod.
        for c in self.infra_of(id) {
            self.remove_container(&c).await?;
        }
        if let Some(infra) = guard.infra.take() {
            self.remove_container(&infra).await?;
        }
        let _ = std::fs::remove_dir_all(&guard.dir);
        std::fs::remove_dir_all(self.settings.root.join("pods").join(id))
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(crate::image::internal)?;
        self.release(&name_key(&guard.metadata()));
        self.cpu_samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("pod:{id}"));
        self.pods
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(())
    }

    /// Every pod, for ListPodSandbox.
    pub async fn list_pods(&self, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        let pods = self.all_pods();
        let mut out = Vec::new();
        for p in pods {
            let p = p.lock().await;
            if filter.as_ref().is_none_or(|f| p.matches(f)) {
                out.push(p.to_cri());
            }
        }
        out.sort_by_key(|p| p.created_at);
        out
    }
}
