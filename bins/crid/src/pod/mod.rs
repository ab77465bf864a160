//! Pod sandboxes: pinned namespaces, hostname and resolv.conf files, the log
//! directory, the network, the infra process of a pod that shares its PID
//! namespace; state kept in `<root>/pods/<id>/pod.json`.

pub mod metrics;
use crate::config::CgroupManager;
use crate::container::create::{check_apparmor, check_selinux};
use crate::error::{CridError, Result};
use crate::host::stats::PodNet;
use crate::state::record::{IdMap, NsMode, PodRecord, UserNamespace};
use crate::state::store::{pod_name_key, PodRef};
use crate::state::{now_ns, status};
use crate::Crid;
use k8s_cri::v1 as cri;
use std::sync::Arc;

/// One range of a pod's user namespace: exactly one, from ID 0, within 32 bits.
fn id_map(what: &str, maps: &[cri::IdMapping]) -> Result<IdMap> {
    let [m] = maps else {
        return Err(CridError::Invalid(format!(
            "user namespace: {} {what} mappings; crid takes exactly one",
            maps.len()
        )));
    };
    if m.container_id != 0 {
        return Err(CridError::Invalid(format!(
            "user namespace: the {what} mapping starts at container ID {}, not 0 (the \
             container's root must be mapped)",
            m.container_id
        )));
    }
    if m.length == 0 || m.host_id.checked_add(m.length - 1).is_none() {
        return Err(CridError::Invalid(format!(
            "user namespace: the {what} mapping {}+{} is out of range",
            m.host_id, m.length
        )));
    }
    Ok(IdMap {
        container_id: m.container_id,
        host_id: m.host_id,
        length: m.length,
    })
}

/// The user namespace a pod asks for: none (NODE, or nothing asked), or one of its
/// own (POD) with one uid and one gid range from 0, on a handler that supports them,
/// with no host namespace beside it.
pub fn user_namespace(
    ns: Option<&cri::NamespaceOption>,
    handler: &str,
    settings: &crate::config::Settings,
) -> Result<Option<UserNamespace>> {
    let Some(o) = ns else { return Ok(None) };
    let Some(u) = o.userns_options.as_ref() else {
        return Ok(None);
    };
    match cri::NamespaceMode::try_from(u.mode) {
        Ok(cri::NamespaceMode::Node) => return Ok(None),
        Ok(cri::NamespaceMode::Pod) => {}
        _ => {
            return Err(CridError::Invalid(format!(
                "user namespace mode {}: a pod has its own (POD) or the host's (NODE)",
                cri::NamespaceMode::try_from(u.mode)
                    .map(|m| m.as_str_name())
                    .unwrap_or("unknown")
            )))
        }
    }
    if !settings.handler(handler).is_some_and(|h| h.user_namespaces) {
        return Err(CridError::Invalid(format!(
            "user namespace: runtime handler {handler:?} does not run pods in user namespaces \
             (crid.toml: user-namespaces = true)"
        )));
    }
    let node = cri::NamespaceMode::Node as i32;
    for (what, mode) in [("network", o.network), ("PID", o.pid), ("IPC", o.ipc)] {
        if mode == node {
            return Err(CridError::Invalid(format!(
                "user namespace: the pod shares the host's {what} namespace"
            )));
        }
    }
    let userns = UserNamespace {
        uids: id_map("uid", &u.uids)?,
        gids: id_map("gid", &u.gids)?,
    };
    // The runtime mounts the rootfs and the pod's files from inside the namespace.
    for dir in [&settings.root, &settings.run_dir] {
        searchable_by_others(dir)?;
    }
    Ok(Some(userns))
}

/// Every directory from `/` down to `dir` lets others search it (`o+x`), as a user
/// namespace's root, whose host uid owns none of them, needs to reach below it.
fn searchable_by_others(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    for d in abs.ancestors() {
        let Ok(meta) = std::fs::metadata(d) else {
            continue; // made by crid later, searchable
        };
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(CridError::NotReady(format!(
                "user namespace: {} (mode {:o}) is not searchable by others, so a user \
                 namespace's root cannot reach the rootfs below it; chmod o+x it",
                d.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// Refuses what crid cannot honour, naming it.
fn check_pod_config(
    config: &cri::PodSandboxConfig,
    handler: &str,
    settings: &crate::config::Settings,
) -> Result<()> {
    crate::validate::pod_config(config)?;
    if settings.handler(handler).is_none() {
        return Err(CridError::Invalid(format!(
            "runtime handler {handler:?} is not configured (crid.toml [runtimes.{handler}]; \
             there are {})",
            settings
                .runtimes
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Some(parent) = config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.as_str())
        .filter(|p| !p.is_empty())
    {
        crate::host::cgroups::check_parent(settings.cgroup_manager, parent)
            .map_err(CridError::Invalid)?;
    }
    if let Some(sc) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
    {
        check_selinux(sc.selinux_options.as_ref())?;
        if sc
            .namespace_options
            .as_ref()
            .is_some_and(|o| o.pid == cri::NamespaceMode::Target as i32)
        {
            return Err(CridError::Invalid(
                "pod PID namespace mode TARGET applies to containers only".into(),
            ));
        }
        check_apparmor(sc.apparmor.as_ref())?;
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
    /// RunPodSandbox.
    pub async fn run_pod(self: &Arc<Self>, req: cri::RunPodSandboxRequest) -> Result<String> {
        let config = req
            .config
            .ok_or_else(|| CridError::Invalid("RunPodSandbox without a pod config".into()))?;
        check_pod_config(&config, &req.runtime_handler, &self.settings)?;
        let userns = user_namespace(
            config
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.namespace_options.as_ref()),
            &req.runtime_handler,
            &self.settings,
        )?;
        let id = crate::state::new_id().map_err(CridError::io("reading /dev/urandom"))?;
        let dir = self.settings.run_dir.join("pods").join(&id);
        let mut pod = PodRecord::new(
            id.clone(),
            &config,
            req.runtime_handler.clone(),
            dir.clone(),
        );
        pod.userns = userns;
        pod.created_at = now_ns();
        pod.cgroup_parent = pod.cgroup_parent.map(|p| {
            crate::host::cgroups::normalize_parent(self.settings.cgroup_manager, &p).into_owned()
        });
        if pod.namespaces.network != NsMode::Node {
            // On disk before the ADD runs: a crid killed during it still runs DEL,
            // which releases what the plugins did so far (lease, iptables rules).
            pod.network = Some(self.network.begin().map_err(|e| e.of_pod(&id))?);
        }
        let name = self.store.reserve(
            pod_name_key(&pod.metadata),
            &id,
            format!("pod {}/{}", pod.metadata.namespace, pod.metadata.name),
        )?;
        // On disk before anything is made: a crid killed half way finds a pod
        // that is not ready, which kubelet stops and removes.
        self.store.save_pod(&pod)?;
        let slice = pod
            .cgroup_parent
            .clone()
            .filter(|_| self.settings.cgroup_manager == CgroupManager::Systemd);
        if let Some(slice) = &slice {
            let linux = config.linux.as_ref();
            let mut making = self.slices.lock().await;
            let made = crate::host::cgroups::make_pod_slice(
                &self.slice_marks(),
                slice,
                linux.and_then(|l| l.resources.as_ref()),
                linux.and_then(|l| l.overhead.as_ref()),
            )
            .await;
            if let Err(e) = made {
                drop(making);
                let _ = std::fs::remove_dir_all(self.store.pod_dir(&id));
                return Err(
                    CridError::io(format!("pod {id}: making its slice {slice}"))(
                        std::io::Error::other(e),
                    ),
                );
            }
            *making.entry(slice.clone()).or_default() += 1;
        }
        let made = self.make_and_start(pod, config, &dir).await;
        if let Some(slice) = &slice {
            let mut making = self.slices.lock().await;
            if let Some(n) = making.get_mut(slice) {
                *n -= 1;
                if *n == 0 {
                    making.remove(slice);
                }
            }
            if made.is_err() && !making.contains_key(slice) {
                self.release_slice(&id, slice).await;
            }
        }
        let pod = made?;
        self.store.insert_pod(pod);
        name.keep();
        Ok(id)
    }

    /// The rest of RunPodSandbox: namespaces, files, network, the infra process;
    /// on failure what was made is undone.
    async fn make_and_start(
        self: &Arc<Self>,
        mut pod: PodRecord,
        config: cri::PodSandboxConfig,
        dir: &std::path::Path,
    ) -> Result<PodRecord> {
        let id = pod.id.clone();
        let me = Arc::clone(self);
        let made =
            tokio::task::spawn_blocking(move || me.make_pod(&mut pod, &config).map(|()| pod))
                .await?;
        let mut pod = match made {
            Ok(p) => p,
            Err(e) => {
                crate::host::netns::unpin(&dir.join("ns"));
                let _ = std::fs::remove_dir_all(dir);
                let _ = std::fs::remove_dir_all(self.store.pod_dir(&id));
                return Err(e);
            }
        };
        if pod.namespaces.pid == NsMode::Pod {
            let started = self.start_infra(&mut pod).await;
            let started = started.and_then(|()| self.store.save_pod(&pod));
            if let Err(e) = started {
                if let Err(t) = self.teardown_pod(&mut pod).await {
                    tracing::warn!("pod {id}: {}", t.message());
                }
                let _ = std::fs::remove_dir_all(dir);
                let _ = std::fs::remove_dir_all(self.store.pod_dir(&id));
                return Err(e);
            }
        }
        pod.ready = true;
        self.store.save_pod(&pod)?;
        self.emit_pod(&pod, cri::ContainerEventType::ContainerCreatedEvent, true);
        self.emit_pod(&pod, cri::ContainerEventType::ContainerStartedEvent, true);
        Ok(pod)
    }

    /// Namespaces, files, network: the slow, blocking part of RunPodSandbox.
    fn make_pod(&self, pod: &mut PodRecord, config: &cri::PodSandboxConfig) -> Result<()> {
        std::fs::create_dir_all(&pod.dir)
            .map_err(CridError::io(format!("creating {}", pod.dir.display())))?;
        // A host-network pod shares the host's UTS namespace too, as in containerd.
        let mut kinds = vec![];
        let host_net = pod.namespaces.network == NsMode::Node;
        if !host_net {
            kinds.push("uts");
            kinds.push("net");
        }
        if pod.namespaces.ipc != NsMode::Node {
            kinds.push("ipc");
        }
        let hostname = if host_net && config.hostname.is_empty() {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            config.hostname.clone()
        };
        let t0 = std::time::Instant::now();
        let pinned =
            crate::host::netns::pin(&pod.dir.join("ns"), &kinds, &hostname, pod.userns.as_ref())
                .map_err(CridError::io(format!(
                    "pod {}: pinning its namespaces",
                    pod.id
                )))?;
        for p in pinned {
            let kind = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            pod.ns.insert(kind, p);
        }
        let file = pod.dir.join("hostname");
        std::fs::write(&file, format!("{hostname}\n"))
            .map_err(CridError::io(format!("writing {}", file.display())))?;
        let resolv = match &config.dns_config {
            Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
                resolv_conf(d)
            }
            _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        let file = pod.dir.join("resolv.conf");
        std::fs::write(&file, resolv)
            .map_err(CridError::io(format!("writing {}", file.display())))?;
        if !pod.log_directory.is_empty() {
            std::fs::create_dir_all(&pod.log_directory).map_err(|e| {
                CridError::Invalid(format!("log directory {}: {e}", pod.log_directory))
            })?;
        }
        let t_files = t0.elapsed();
        // Begun in run_pod for every pod that does not share the host's network.
        if let Some(att) = pod.network.clone() {
            let t_add = std::time::Instant::now();
            let added = self.network.add(pod, att);
            self.metrics.cni("ADD", added.is_ok(), t_add.elapsed());
            // Recorded at once, the result with it.
            self.store.save_pod(pod)?;
            added.map_err(|e| e.of_pod(&pod.id))?;
        }
        tracing::debug!(
            "pod {}: namespaces and files in {t_files:?}, network by {:?}",
            pod.id,
            t0.elapsed()
        );
        Ok(())
    }

    /// StopPodSandbox: the pod's containers stop, its network goes. Unknown pods
    /// are no error. The pod is listed as not ready from when its teardown begins.
    pub async fn stop_pod(self: &Arc<Self>, id: &str) -> Result<()> {
        let Some(pod) = self.store.pod(id) else {
            return Ok(());
        };
        for c in self.store.containers_of(id) {
            self.stop_container(&c, 0).await?;
        }
        let Some((_one, was_ready, mut work)) = self.begin_teardown(id, &pod).await? else {
            return Ok(());
        };
        let torn = self.teardown_pod(&mut work).await;
        let work = self.torn_down(&pod, &work).await?;
        if was_ready {
            self.emit_pod(&work, cri::ContainerEventType::ContainerStoppedEvent, true);
        }
        torn
    }

    /// Begins a teardown of the pod `id` (StopPodSandbox, RemovePodSandbox): takes
    /// its teardown lock, held until the guard goes, and marks it not ready (saved,
    /// when it was ready). The guard, whether it was ready, and a copy of its record
    /// for [`Crid::teardown_pod`] to work on without the record's lock; `None` when
    /// the pod was removed while this call waited.
    async fn begin_teardown(
        &self,
        id: &str,
        pod: &PodRef,
    ) -> Result<Option<(tokio::sync::OwnedMutexGuard<()>, bool, PodRecord)>> {
        let one = self.store.pod_teardown(id).lock_owned().await;
        if self.store.pod(id).is_none() {
            self.store.forget_teardown(id);
            return Ok(None);
        }
        let mut p = pod.lock().await;
        let was_ready = p.ready;
        if was_ready {
            p.ready = false;
            self.store.save_pod(&p)?;
        }
        Ok(Some((one, was_ready, p.clone())))
    }

    /// Puts what a teardown changed in the copy `work` (the infra process, the
    /// network, the namespaces) into the pod's record, saved; the record as it is.
    async fn torn_down(&self, pod: &PodRef, work: &PodRecord) -> Result<PodRecord> {
        let mut p = pod.lock().await;
        p.infra_pid = work.infra_pid;
        p.network = work.network.clone();
        p.ips = work.ips.clone();
        p.ns = work.ns.clone();
        self.store.save_pod(&p)?;
        Ok(p.clone())
    }

    /// Stops the infra process, tears the network down, unpins the namespaces.
    async fn teardown_pod(self: &Arc<Self>, pod: &mut PodRecord) -> Result<()> {
        if pod.namespaces.pid == NsMode::Pod {
            // crid's own, recorded or (after a crash) in its pid file only.
            let p = pod.clone();
            let parent = crate::host::cgroups::monitor_parent(
                self.settings.cgroup_manager,
                p.cgroup_parent.as_deref(),
            );
            tokio::task::spawn_blocking(move || {
                crate::container::infra::end_infra_process(&p, p.infra_pid, parent.as_ref())
            })
            .await?;
            pod.infra_pid = None;
        }
        if let Some(infra) = pod.infra.clone() {
            if let Err(e) = self.stop_container(&infra, 0).await {
                tracing::warn!("pod {}: {}", pod.id, e.message());
            }
        }
        if pod.network.is_some() {
            let me = Arc::clone(self);
            let p = pod.clone();
            tokio::task::spawn_blocking(move || {
                let t0 = std::time::Instant::now();
                let r = me.network.del(&p);
                me.metrics.cni("DEL", r.is_ok(), t0.elapsed());
                r
            })
            .await?
            // The namespace and the ADD's result stay for the retry kubelet
            // makes: a lease given up here would be lost for good.
            .map_err(|e| e.of_pod(&pod.id))?;
            pod.network = None;
            pod.ips.clear();
        }
        crate::host::netns::unpin(&pod.dir.join("ns"));
        pod.ns.clear();
        Ok(())
    }

    /// RemovePodSandbox: stops it if need be, removes its containers and its
    /// state. Unknown pods are no error.
    pub async fn remove_pod(self: &Arc<Self>, id: &str) -> Result<()> {
        let Some(pod) = self.store.pod(id) else {
            return Ok(());
        };
        for c in self.store.containers_of(id) {
            self.remove_container(&c).await?;
        }
        let Some((_one, was_ready, mut work)) = self.begin_teardown(id, &pod).await? else {
            return Ok(());
        };
        if let Err(e) = self.teardown_pod(&mut work).await {
            self.torn_down(&pod, &work).await?;
            return Err(e);
        }
        // The infra process, and any a crash left unrecorded in the pod.
        for c in self.store.infra_of(id) {
            self.remove_container(&c).await?;
        }
        if let Some(infra) = work.infra.clone() {
            self.remove_container(&infra).await?;
        }
        let _ = std::fs::remove_dir_all(&work.dir);
        let dir = self.store.pod_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(CridError::io(format!("removing {}", dir.display()))(e))
            }
            _ => {}
        }
        if let Some(slice) = work
            .cgroup_parent
            .as_deref()
            .filter(|_| self.settings.cgroup_manager == CgroupManager::Systemd)
        {
            let making = self.slices.lock().await;
            if !making.contains_key(slice) {
                self.release_slice(id, slice).await;
            }
        }
        self.store.release(&pod_name_key(&work.metadata));
        self.stats.forget(&format!("pod:{id}"));
        self.store.forget_pod(id);
        if was_ready {
            self.emit_pod(&work, cri::ContainerEventType::ContainerStoppedEvent, true);
        }
        self.emit_pod(&work, cri::ContainerEventType::ContainerDeletedEvent, true);
        Ok(())
    }

    /// Where crid marks the pod slices it made.
    fn slice_marks(&self) -> std::path::PathBuf {
        self.settings.run_dir.join("slices")
    }

    /// Lets the pod slice go if crid made it and nothing is left in it; what fails
    /// is logged (an empty slice left behind holds nothing). Call it holding
    /// [`Crid::slices`], with no pod being made in the slice.
    async fn release_slice(&self, id: &str, slice: &str) {
        if let Err(e) = crate::host::cgroups::release_pod_slice(&self.slice_marks(), slice).await {
            tracing::warn!("pod {id}: stopping its slice {slice}: {e}");
        }
    }

    /// Every pod, for ListPodSandbox.
    pub async fn list_pods(&self, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        let mut out = Vec::new();
        for p in self.store.all_pods() {
            let p = p.lock().await;
            if filter.as_ref().is_none_or(|f| status::pod_matches(&p, f)) {
                out.push(status::pod(&p));
            }
        }
        out.sort_by_key(|p| p.created_at);
        out
    }

    /// A pod's stats (see [`crate::host::stats::Stats::pod`]): its interfaces read
    /// in its own network namespace, or, on the host's network, as its first running
    /// process sees them.
    pub async fn pod_stats(self: &Arc<Self>, pod: &PodRecord) -> cri::PodSandboxStats {
        let id = pod.id.clone();
        let containers = self.containers_stats(|c| c.pod_id == id).await;
        self.stats.pod(pod, containers, self.pod_net(pod))
    }

    /// Where `pod`'s interfaces are read: its pinned network namespace, or for a pod
    /// on the host's network a process of it.
    pub fn pod_net(&self, pod: &PodRecord) -> Option<PodNet> {
        match pod.ns.get("net") {
            Some(ns) => Some(PodNet::Namespace(ns.clone())),
            None => self.pod_pid(pod).map(PodNet::Process),
        }
    }

    /// A process in `pod`'s network namespace: a container's, else its infra
    /// process.
    fn pod_pid(&self, pod: &PodRecord) -> Option<i32> {
        self.store
            .containers_of(&pod.id)
            .iter()
            .chain(pod.infra.iter())
            .find_map(|c| self.store.container_pid(c).map(|(pid, _)| pid))
            .or(pod.infra_pid)
    }

    /// PodSandboxStatus: the status; with `verbose`, the record as JSON and the
    /// outcome of a CNI CHECK with the ADD's result.
    pub async fn pod_status(
        self: &Arc<Self>,
        id: &str,
        verbose: bool,
    ) -> Result<(cri::PodSandboxStatus, Vec<(String, String)>)> {
        let pod = self
            .store
            .pod(id)
            .ok_or_else(|| CridError::NotFound(format!("pod {id}")))?;
        let pod = pod.lock().await.clone();
        let mut info = vec![];
        if verbose {
            info.push((
                "info".to_string(),
                serde_json::to_string(&pod).unwrap_or_default(),
            ));
            if pod.ready && pod.network.is_some() {
                let me = Arc::clone(self);
                let p = pod.clone();
                let checked = tokio::task::spawn_blocking(move || me.network.check(&p)).await?;
                let text = match checked {
                    Ok(true) => "ok".to_string(),
                    Ok(false) => "not supported by the network's CNI version".to_string(),
                    Err(e) => format!("failed: {e}"),
                };
                info.push(("networkCheck".to_string(), text));
            }
        }
        Ok((status::pod_status(&pod), info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pod config check on a pod with `dns`.
    fn check_dns(dns: &cri::DnsConfig) -> Result<()> {
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "p".into(),
                uid: "u".into(),
                namespace: "n".into(),
                attempt: 0,
            }),
            dns_config: Some(dns.clone()),
            ..Default::default()
        };
        Ok(crate::validate::pod_config(&config)?)
    }

    #[test]
    fn a_dns_entry_is_one_resolv_conf_word() {
        let ok = cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        check_dns(&ok).unwrap();
        assert_eq!(
            resolv_conf(&ok),
            "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        for bad in [
            cri::DnsConfig {
                servers: vec!["10.0.0.1\nnameserver 6.6.6.6".into()],
                ..ok.clone()
            },
            cri::DnsConfig {
                searches: vec!["a.example b.example".into()],
                ..ok.clone()
            },
            cri::DnsConfig {
                options: vec!["ndots:5\r".into()],
                ..ok.clone()
            },
            cri::DnsConfig {
                servers: vec![String::new()],
                ..ok.clone()
            },
        ] {
            let e = check_dns(&bad).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument, "{e}");
        }
    }
}
