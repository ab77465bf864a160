//! CreateContainer: the request checked, the image found (and a checkpoint opened
//! when it is one), the bundle made with the library and its spec fitted to the
//! request, the container created by its monitor (or left to be restored at
//! StartContainer), and its record saved.

use super::checkpoint::{open_image_restore, unpack_restore, Dump};
use super::monitor;
use super::spec;
use crate::error::{CridError, Result};
use crate::image::ImageInfo;
use crate::state::record::{self, ContainerRecord, NsMode, PodRecord, Resources};
use crate::state::store::container_name_key;
use crate::state::{now_ns, status};
use crate::Crid;
use crikit::runtime::monitor::cgroup::Parent;
use k8s_cri::v1 as cri;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Refuses SELinux options, which crid cannot honour.
pub fn check_selinux(selinux: Option<&cri::SeLinuxOption>) -> Result<()> {
    if selinux.is_some_and(|s| {
        !(s.user.is_empty() && s.role.is_empty() && s.r#type.is_empty() && s.level.is_empty())
    }) {
        return Err(CridError::Unsupported(
            "SELinux options (crid does not label containers)".into(),
        ));
    }
    Ok(())
}

/// A container's user namespace is its pod's: it may say so (kubelet repeats the
/// pod's options), not ask for another.
fn check_userns(pod: &PodRecord, ns: Option<&cri::NamespaceOption>) -> Result<()> {
    let Some(u) = ns.and_then(|o| o.userns_options.as_ref()) else {
        return Ok(());
    };
    let same = match (cri::NamespaceMode::try_from(u.mode), pod.userns) {
        (Ok(cri::NamespaceMode::Node), None) => true,
        (Ok(cri::NamespaceMode::Pod), Some(p)) => {
            (u.uids.is_empty() && u.gids.is_empty())
                || (u.uids == [p.uids.to_cri()] && u.gids == [p.gids.to_cri()])
        }
        _ => false,
    };
    if !same {
        return Err(CridError::Invalid(
            "container user namespace: a container runs in its pod's user namespace".into(),
        ));
    }
    Ok(())
}

/// Refuses AppArmor profiles: crid cannot apply them.
pub fn check_apparmor(p: Option<&cri::SecurityProfile>) -> Result<()> {
    match p {
        Some(p) if p.profile_type != cri::security_profile::ProfileType::Unconfined as i32 => Err(
            CridError::Unsupported("AppArmor profiles (ask for Unconfined or none)".into()),
        ),
        _ => Ok(()),
    }
}

/// Refuses container options crid cannot honour.
// The deprecated apparmor_profile field is what kubelets before 1.30 send.
#[allow(deprecated)]
fn check_container_config(pod: &PodRecord, config: &cri::ContainerConfig) -> Result<()> {
    for m in config.mounts.iter().filter(|m| m.recursive_read_only) {
        if !m.readonly {
            return Err(CridError::Invalid(format!(
                "mount {}: recursive read-only needs readonly too",
                m.container_path
            )));
        }
        if m.propagation != cri::MountPropagation::PropagationPrivate as i32 {
            return Err(CridError::Invalid(format!(
                "mount {}: recursive read-only needs private propagation",
                m.container_path
            )));
        }
    }
    for m in config
        .mounts
        .iter()
        .filter(|m| !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty())
    {
        let Some(u) = pod.userns else {
            return Err(CridError::Invalid(format!(
                "mount {}: ID mappings are for pods with a user namespace",
                m.container_path
            )));
        };
        if m.uid_mappings != [u.uids.to_cri()] || m.gid_mappings != [u.gids.to_cri()] {
            return Err(CridError::Invalid(format!(
                "mount {}: its ID mappings are not those of its pod's user namespace",
                m.container_path
            )));
        }
    }
    for m in &config.mounts {
        let Some(image) = &m.image else { continue };
        if !m.host_path.is_empty() {
            return Err(CridError::Invalid(format!(
                "mount {}: an image volume has no host path (got {:?})",
                m.container_path, m.host_path
            )));
        }
        if image.image.is_empty() {
            return Err(CridError::Invalid(format!(
                "mount {}: an image volume names no image",
                m.container_path
            )));
        }
    }
    let Some(sc) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
    else {
        return Ok(());
    };
    if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
        return Err(CridError::Invalid(
            "RunAsGroup is set without RunAsUser or RunAsUsername".into(),
        ));
    }
    check_userns(pod, sc.namespace_options.as_ref())?;
    check_apparmor(sc.apparmor.as_ref())?;
    if !sc.apparmor_profile.is_empty() && sc.apparmor_profile != "unconfined" {
        return Err(CridError::Unsupported(
            "AppArmor profiles (ask for unconfined or none)".into(),
        ));
    }
    check_selinux(sc.selinux_options.as_ref())
}

/// The CRI log path of a container: relative and inside the pod's log directory,
/// as the CRI defines it; its directory made. "" for none.
fn log_path(pod: &PodRecord, config: &cri::ContainerConfig) -> Result<String> {
    if pod.log_directory.is_empty() || config.log_path.is_empty() {
        return Ok(String::new());
    }
    let rel = Path::new(&config.log_path);
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(CridError::Invalid(format!(
            "log path {:?} must be relative to the pod's log directory, without ..",
            config.log_path
        )));
    }
    let p = Path::new(&pod.log_directory).join(rel);
    // A valid path the node cannot use: something else is there.
    let taken = |e: &dyn std::fmt::Display| {
        CridError::NotReady(format!(
            "config.log_path {:?}: {} {e}",
            config.log_path,
            p.display()
        ))
    };
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTDIR) | Some(libc::EEXIST) => taken(&e),
            _ => CridError::Io {
                what: format!("making the log directory {}", parent.display()),
                source: e,
            },
        })?;
    }
    if p.is_dir() {
        return Err(taken(&"is a directory"));
    }
    Ok(p.display().to_string())
}

/// The library's overrides for a container: command, environment, user, mounts
/// (the pod's hostname and resolv.conf among them), capabilities, network and
/// cgroup.
fn overrides(
    pod: &PodRecord,
    id: &str,
    config: &cri::ContainerConfig,
    sources: &[Option<PathBuf>],
    manager: crate::config::CgroupManager,
) -> Result<crikit::rootfs::spec::Overrides> {
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let hostname = std::fs::read_to_string(pod.dir.join("hostname"))
        .unwrap_or_default()
        .trim()
        .to_string();
    // A missing host path becomes a directory, as Docker, containerd and CRI-O
    // do for kubelet's plain hostPath volumes.
    for m in &config.mounts {
        if !m.host_path.is_empty() && std::fs::symlink_metadata(&m.host_path).is_err() {
            std::fs::create_dir_all(&m.host_path)
                .map_err(|e| CridError::Invalid(format!("mount source {}: {e}", m.host_path)))?;
        }
    }
    // A recursive read-only mount binds its read-only copy (see `recursive_readonly`).
    let mut mounts: Vec<(String, String, bool)> = config
        .mounts
        .iter()
        .zip(sources.iter().chain(std::iter::repeat(&None)))
        .map(|(m, src)| {
            let host = src
                .as_ref()
                .map_or_else(|| m.host_path.clone(), |s| s.display().to_string());
            (host, m.container_path.clone(), m.readonly)
        })
        .collect();
    for (file, dest) in [
        ("hostname", "/etc/hostname"),
        ("resolv.conf", "/etc/resolv.conf"),
    ] {
        if !mounts.iter().any(|m| m.1 == dest) {
            mounts.push((
                pod.dir.join(file).display().to_string(),
                dest.to_string(),
                false,
            ));
        }
    }
    let group = sc.run_as_group.as_ref().map(|g| g.value);
    let user = match (&sc.run_as_username, &sc.run_as_user, group) {
        (name, _, g) if !name.is_empty() => Some(match g {
            Some(g) => format!("{name}:{g}"),
            None => name.clone(),
        }),
        (_, Some(u), Some(g)) => Some(format!("{}:{g}", u.value)),
        (_, Some(u), None) => Some(u.value.to_string()),
        (_, None, _) => None,
    };
    let caps = sc.capabilities.clone().unwrap_or_default();
    let cgroups_path =
        crate::host::cgroups::container_path(manager, pod.cgroup_parent.as_deref(), id);
    Ok(crikit::rootfs::spec::Overrides {
        cmd: (!config.args.is_empty()).then(|| config.args.clone()),
        entrypoint: (!config.command.is_empty()).then(|| config.command.clone()),
        env: config
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect(),
        cwd: (!config.working_dir.is_empty()).then(|| config.working_dir.clone()),
        user,
        hostname: Some(hostname),
        mounts,
        tmpfs: vec![],
        read_only: sc.readonly_rootfs,
        tty: config.tty,
        cap_add: caps.add_capabilities.clone(),
        cap_drop: caps.drop_capabilities.clone(),
        privileged: sc.privileged,
        memory: None,
        cpus: None,
        pids_limit: None,
        net: match pod.ns.get("net") {
            Some(p) => crikit::rootfs::spec::Net::Path(p.clone()),
            None => crikit::rootfs::spec::Net::Host,
        },
        annotations: config
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        rootless: None,
        cgroups_path: Some(cgroups_path),
        // Merge, the CRI's default policy: the image's memberships of the user
        // count whatever group is asked (Strict drops them in spec::fit).
        member_groups: true,
    })
}

/// Why a bundle could not be made: the library's error, or the fitting's.
enum Making {
    Bundle(crikit::rootfs::bundle::BundleError),
    Fit(CridError),
}

impl From<crikit::rootfs::bundle::BundleError> for Making {
    fn from(e: crikit::rootfs::bundle::BundleError) -> Making {
        Making::Bundle(e)
    }
}

/// A CreateContainer's config for a container restored from `dump`: the image the
/// checkpointed container ran, and its process (command, environment, working
/// directory) where the config gives none, as the restored process keeps them.
fn from_checkpoint(config: &mut cri::ContainerConfig, dump: &Dump) {
    config.image = Some(cri::ImageSpec {
        image: dump.image.clone(),
        ..Default::default()
    });
    let Some(p) = &dump.process else { return };
    if config.command.is_empty() && config.args.is_empty() {
        config.command = p.args().clone().unwrap_or_default();
    }
    if config.envs.is_empty() {
        config.envs = p
            .env()
            .iter()
            .flatten()
            .filter_map(|kv| kv.split_once('='))
            .map(|(key, value)| cri::KeyValue {
                key: key.into(),
                value: value.into(),
            })
            .collect();
    }
    if config.working_dir.is_empty() {
        config.working_dir = p.cwd().display().to_string();
    }
}

/// Makes sure the created container's process, waiting to start, has the OOM score
/// adjustment its spec asks for: crun 1.8 writes none when it is 0, and the process
/// would keep crid's own (the unit's -999) through ctrmon and the runtime. Raising
/// it needs no privilege; a failure is logged.
fn hold_oom_score_adj(id: &str, pid: i32, adj: i32) {
    if pid <= 0 {
        return;
    }
    let file = format!("/proc/{pid}/oom_score_adj");
    let now = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if now.is_some_and(|n| n != adj) {
        if let Err(e) = std::fs::write(&file, adj.to_string()) {
            tracing::warn!("container {id}: setting its oom_score_adj to {adj}: {e}");
        }
    }
}

/// crid's own OOM score adjustment.
fn own_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Crid {
    /// CreateContainer.
    pub async fn create_container(
        self: &Arc<Self>,
        req: cri::CreateContainerRequest,
    ) -> Result<String> {
        let config = req.config.ok_or_else(|| {
            CridError::Invalid("CreateContainer without a container config".into())
        })?;
        crate::validate::container_config(&config)?;
        let pod = self
            .store
            .pod(&req.pod_sandbox_id)
            .ok_or_else(|| CridError::NotFound(format!("pod {}", req.pod_sandbox_id)))?;
        let pod = pod.lock().await.clone();
        if !pod.ready {
            return Err(CridError::NotReady(format!("pod {} is not ready", pod.id)));
        }
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let mut config = config;
        let restore = if image.starts_with('/') {
            let runtime = self.runtime(&pod.runtime_handler)?;
            tokio::task::spawn_blocking(move || {
                crate::container::checkpoint::open_restore(&image, &runtime)
            })
            .await??
        } else {
            None
        };
        if let Some(dump) = &restore {
            from_checkpoint(&mut config, dump);
        }
        let id = self.create_in(&pod, config, false, restore).await?;
        self.events.watch(&id, self.store.monitor_dir(&id).path());
        self.emit(&id, &pod.id, cri::ContainerEventType::ContainerCreatedEvent)
            .await;
        Ok(id)
    }

    /// Makes a container in `pod` (its infra process with `infra`; with `restore`,
    /// one that StartContainer restores from that checkpoint).
    pub async fn create_in(
        self: &Arc<Self>,
        pod: &PodRecord,
        config: cri::ContainerConfig,
        infra: bool,
        restore: Option<Dump>,
    ) -> Result<String> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| CridError::Invalid("container config has no metadata".into()))?;
        if meta.name.is_empty() {
            return Err(CridError::Invalid("container metadata has no name".into()));
        }
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| CridError::Invalid("container config names no image".into()))?;
        check_container_config(pod, &config)?;
        let id = crate::state::new_id().map_err(CridError::io("reading /dev/urandom"))?;
        let name = self.store.reserve(
            container_name_key(&pod.id, &meta.name, meta.attempt, infra),
            &id,
            format!(
                "container {} (attempt {}) in pod {}",
                meta.name, meta.attempt, pod.id
            ),
        )?;
        let me = Arc::clone(self);
        let pod2 = pod.clone();
        let id2 = id.clone();
        let made = tokio::task::spawn_blocking(move || {
            me.make_container(&pod2, &id2, config, &image, infra, restore.as_ref())
        })
        .await?;
        // The pod may have been removed while the container was being made.
        let made = match made {
            Ok(_) if !infra && self.store.pod(&pod.id).is_none() => Err(CridError::NotFound(
                format!("pod {} (removed while the container was created)", pod.id),
            )),
            other => other,
        };
        match made {
            Ok(c) => {
                self.store.insert_container(c);
                name.keep();
                Ok(id)
            }
            Err(e) => {
                let me = Arc::clone(self);
                let runtimes = self
                    .runtime(&pod.runtime_handler)
                    .map_or_else(|_| vec![], |r| vec![r]);
                let _ = tokio::task::spawn_blocking(move || {
                    let bundle = me.store.container_dir(&id).join("bundle");
                    me.store.remove_container_files(&runtimes, &id, &bundle);
                })
                .await;
                Err(e)
            }
        }
    }

    /// The mounts crid makes itself for the runtime to bind instead of the host's
    /// path, under `RUN/rro/ID/N` by the mount's index: recursive read-only copies
    /// (every submount read-only too, which runc 1.1 cannot do) and ID-mapped copies
    /// through the pod's user namespace (which runc 1.1 cannot make either), both for
    /// a mount that asks for both. They are unmounted once the runtime has made the
    /// container (which keeps its own copies).
    fn crid_made_mounts(
        &self,
        pod: &PodRecord,
        id: &str,
        config: &cri::ContainerConfig,
    ) -> Result<Vec<Option<PathBuf>>> {
        let mut out = Vec::with_capacity(config.mounts.len());
        for (i, m) in config.mounts.iter().enumerate() {
            let idmapped = !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty();
            if !m.recursive_read_only && !idmapped {
                out.push(None);
                continue;
            }
            let src = Path::new(&m.host_path);
            let dst = self.store.rro_dir(id).join(i.to_string());
            let failed = |what: &str| {
                CridError::io(format!(
                    "mount {}: {what} of {}",
                    m.container_path, m.host_path
                ))
            };
            let is_dir = std::fs::metadata(src)
                .map_err(failed("the source"))?
                .is_dir();
            std::fs::create_dir_all(self.store.rro_dir(id))
                .map_err(CridError::io(format!("creating {}", dst.display())))?;
            if is_dir {
                std::fs::create_dir(&dst)
            } else {
                std::fs::File::create(&dst).map(drop)
            }
            .map_err(CridError::io(format!("creating {}", dst.display())))?;
            match pod.ns.get("user").filter(|_| idmapped) {
                Some(userns) => {
                    let ns = std::fs::File::open(userns)
                        .map_err(CridError::io(format!("opening {}", userns.display())))?;
                    crikit::rootfs::mountattr::idmapped_bind(src, &dst, &ns)
                        .map_err(failed("an ID-mapped copy"))?;
                    if m.recursive_read_only {
                        crikit::rootfs::mountattr::readonly_recursive(&dst)
                            .map_err(failed("a read-only ID-mapped copy"))?;
                    }
                }
                None => crate::host::netns::bind_recursive_readonly(src, &dst)
                    .map_err(failed("a recursive read-only copy"))?,
            }
            out.push(Some(dst));
        }
        Ok(out)
    }

    /// The PID namespace a new container gets.
    fn pid_ns(
        &self,
        pod: &PodRecord,
        config: &cri::ContainerConfig,
        infra: bool,
    ) -> Result<spec::PidNs> {
        let (mode, target) = spec::pid_mode(config);
        let join = |pid: i32| spec::PidNs::Join(PathBuf::from(format!("/proc/{pid}/ns/pid")));
        Ok(match (infra, mode, pod.namespaces.pid) {
            (true, _, _) => spec::PidNs::New,
            (false, _, NsMode::Node) | (false, NsMode::Node, _) => spec::PidNs::Host,
            (false, NsMode::Target, _) => match self.store.container_pid(&target) {
                Some((pid, p)) if p == pod.id => join(pid),
                Some(_) => {
                    return Err(CridError::Invalid(format!(
                        "target container {target} is in another pod"
                    )))
                }
                None => {
                    return Err(CridError::NotFound(format!(
                        "running target container {target}"
                    )))
                }
            },
            (false, _, NsMode::Pod) if pod.infra_pid.is_some() => match pod.ns.get("pid") {
                Some(p) if status::infra_process_alive(pod) => spec::PidNs::Join(p.clone()),
                _ => {
                    return Err(CridError::NotReady(format!(
                        "pod {}: its infra process is not running",
                        pod.id
                    )))
                }
            },
            (false, _, NsMode::Pod) => {
                let pid = pod
                    .infra
                    .as_deref()
                    .and_then(|i| self.store.container_pid(i))
                    .map(|(pid, _)| pid)
                    .ok_or_else(|| {
                        CridError::NotReady(format!(
                            "pod {}: its infra process is not running",
                            pod.id
                        ))
                    })?;
                join(pid)
            }
            (false, _, _) => spec::PidNs::New,
        })
    }

    /// Makes container `id` of `pod` from `config` and `image` (a checkpoint
    /// `restore`, or one the image holds, staged for StartContainer): the image
    /// looked up, the bundle and its spec made, the container created by its
    /// monitor, and its record saved.
    fn make_container(
        &self,
        pod: &PodRecord,
        id: &str,
        mut config: cri::ContainerConfig,
        image: &str,
        infra: bool,
        restore: Option<&Dump>,
    ) -> Result<ContainerRecord> {
        let t0 = Instant::now();
        let runtime = self.runtime(&pod.runtime_handler)?;
        let (info, from_image) = self.image_of(image, infra, restore, &runtime, &mut config)?;
        let restore = restore.or(from_image.as_ref());
        let t_find = t0.elapsed();
        let dir = self.store.container_dir(id);
        std::fs::create_dir_all(&dir)
            .map_err(CridError::io(format!("creating {}", dir.display())))?;
        self.mount_image_volumes(&dir, &mut config)?;
        let bundle = dir.join("bundle");
        let fitted = self.make_bundle(pod, id, &config, &info.names[0], infra, &bundle)?;
        let t_bundle = t0.elapsed();
        let log_path = log_path(pod, &config)?;
        let monitor_parent = crate::host::cgroups::monitor_parent(
            self.settings.cgroup_manager,
            pod.cgroup_parent.as_deref(),
        );
        let (pid, restore_from) = match restore {
            // The runtime makes the container when StartContainer restores it.
            Some(dump) => (0, Some(self.stage_restore(id, dump, &dir, &bundle)?)),
            None => {
                let create = monitor::Create {
                    log_path: (!log_path.is_empty()).then(|| Path::new(&log_path)),
                    stdin: config.stdin,
                    tty: config.tty,
                    cgroup_parent: monitor_parent.as_ref(),
                    start: infra,
                    restore: None,
                };
                let name = name_of(&config);
                let pid = self.monitors(&runtime).create(id, name, &bundle, &create)?;
                if let Some(adj) = fitted.oom_score_adj {
                    hold_oom_score_adj(id, pid, adj);
                }
                // The container's mount namespace holds its own copies of the
                // read-only binds now: the host's go, so that nothing pins the host
                // path's mountpoints here (an rmdir of one in this namespace would
                // fail with EBUSY). A restore needs them until StartContainer.
                crikit::rootfs::mountattr::unbind_each(&self.store.rro_dir(id));
                (pid, None)
            }
        };
        tracing::debug!(
            "container {id}: image found in {t_find:?}, bundle and spec made by {t_bundle:?}, \
             created by {:?}",
            t0.elapsed()
        );
        let made = Made {
            info,
            bundle,
            fitted,
            log_path,
            pid,
            restore_from,
            monitor_parent,
        };
        let c = self.record_of(pod, id, &config, infra, made);
        self.store.save_container(&c)?;
        Ok(c)
    }

    /// Mounts the image of each image volume (KEP 4639) read-only under the
    /// container's directory `dir`, and points its mount there; the mount's image
    /// becomes the image's id, which keeps the image in use while the container
    /// exists. The mounts go with the directory when the container is removed.
    fn mount_image_volumes(&self, dir: &Path, config: &mut cri::ContainerConfig) -> Result<()> {
        for (i, m) in config.mounts.iter_mut().enumerate() {
            let Some(spec) = m.image.as_mut() else {
                continue;
            };
            let info = crate::image::find(&self.images.store, &self.images.catalog, &spec.image)?
                .ok_or_else(|| {
                CridError::NotFound(format!(
                    "image {} of the image volume at {} (pull it first)",
                    spec.image, m.container_path
                ))
            })?;
            let at = dir.join("image-volumes").join(i.to_string());
            let rootfs = crikit::rootfs::bundle::mount_image(
                &self.images.store,
                &self.settings.root,
                &info.names[0],
                &at,
            )
            .map_err(|source| {
                CridError::ImageVolume(Box::new(crate::error::ImageVolumeError {
                    path: m.container_path.clone(),
                    image: spec.image.clone(),
                    source,
                }))
            })?;
            m.host_path = rootfs.display().to_string();
            m.readonly = true;
            spec.image = info.id;
        }
        Ok(())
    }

    /// The image a container is made of, and the checkpoint its image holds (a
    /// checkpoint image: the archive as its layer), whose container is then made
    /// from the image the checkpointed one ran, with its process (`config` takes
    /// it).
    fn image_of(
        &self,
        image: &str,
        infra: bool,
        restore: Option<&Dump>,
        runtime: &crikit::runtime::runc::Runtime,
        config: &mut cri::ContainerConfig,
    ) -> Result<(ImageInfo, Option<Dump>)> {
        let find = |image: &str| {
            crate::image::find(&self.images.store, &self.images.catalog, image)?.ok_or_else(|| {
                CridError::NotFound(format!("image {image} in the store (pull it first)"))
            })
        };
        let info = find(image)?;
        if restore.is_some() || infra {
            return Ok((info, None));
        }
        match open_image_restore(&self.images.store, &info.names[0], runtime)? {
            Some(dump) => {
                from_checkpoint(config, &dump);
                Ok((find(&dump.image)?, Some(dump)))
            }
            None => Ok((info, None)),
        }
    }

    /// Makes the bundle of container `id` from `image`, its spec generated by the
    /// library and fitted to the request; what the record keeps of that spec.
    fn make_bundle(
        &self,
        pod: &PodRecord,
        id: &str,
        config: &cri::ContainerConfig,
        image: &str,
        infra: bool,
        bundle: &Path,
    ) -> Result<Fitted> {
        let sources = self.crid_made_mounts(pod, id, config)?;
        let opts = crikit::rootfs::bundle::BundleOptions {
            mode: crikit::rootfs::bundle::RootfsMode::Auto,
            overrides: overrides(pod, id, config, &sources, self.settings.cgroup_manager)?,
            patch: None,
            userns: match (pod.userns, pod.ns.get("user")) {
                (Some(u), Some(file)) => Some(crikit::rootfs::bundle::UsernsRootfs {
                    userns: file.clone(),
                    root_uid: u.uids.host_id,
                    root_gid: u.gids.host_id,
                }),
                _ => None,
            },
        };
        let fit = spec::Fit {
            pod,
            config,
            pid: self.pid_ns(pod, config, infra)?,
            own_oom_score_adj: own_oom_score_adj(),
            cgroup_v2: Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        };
        let mut fitted = None;
        crikit::rootfs::bundle::create_with(
            &self.images.store,
            &self.settings.root,
            image,
            bundle,
            &opts,
            |s| -> Result<(), Making> {
                spec::fit(s, &fit).map_err(Making::Fit)?;
                fitted = Some(Fitted::of(s));
                Ok(())
            },
        )
        .map_err(|e| match e {
            Making::Bundle(source) => CridError::Bundle {
                name: name_of(config).to_string(),
                source,
            },
            Making::Fit(e) => e,
        })?;
        // create_with calls the fitting before it returns Ok.
        fitted.ok_or_else(|| CridError::Invalid(format!("container {id}: no spec was fitted")))
    }

    /// Unpacks the checkpoint `dump` for StartContainer to restore container `id`
    /// from: CRIU's images under `dir`, its file changes into the bundle's rootfs.
    /// Where CRIU's images are.
    fn stage_restore(&self, id: &str, dump: &Dump, dir: &Path, bundle: &Path) -> Result<PathBuf> {
        let images = unpack_restore(dump, &dir.join("restore"), &bundle.join("rootfs"))?;
        let state = self.store.monitor_dir(id);
        std::fs::create_dir_all(state.path()).map_err(CridError::io(format!(
            "creating {}",
            state.path().display()
        )))?;
        Ok(images)
    }

    /// The record of container `id`, made as `made` says.
    fn record_of(
        &self,
        pod: &PodRecord,
        id: &str,
        config: &cri::ContainerConfig,
        infra: bool,
        made: Made,
    ) -> ContainerRecord {
        let info = made.info;
        ContainerRecord {
            version: record::VERSION,
            id: id.to_string(),
            pod_id: pod.id.clone(),
            name: name_of(config).to_string(),
            attempt: config.metadata.as_ref().map_or(0, |m| m.attempt),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            mounts: record::mounts_of(config),
            resources: config
                .linux
                .as_ref()
                .and_then(|l| l.resources.as_ref())
                .map(Resources::from_cri),
            image_ref: info
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| info.id.clone()),
            image_id: info.id,
            image_name: info.names.into_iter().next().unwrap_or_default(),
            bundle: made.bundle,
            cgroups_path: made.fitted.cgroups_path,
            log_path: made.log_path,
            created_at: now_ns(),
            started_at: if infra { now_ns() } else { 0 },
            pid: made.pid,
            stop_signal: made.fitted.stop_signal,
            infra,
            // Where the monitor's cgroup is: a directory, or a slice under systemd.
            monitor_cgroup_parent: made.monitor_parent.map(|p| p.as_str().into_owned()),
            user: made.fitted.user,
            // The handler by name, the default resolved now: a default changed later
            // must not send it to another runtime.
            runtime_handler: if pod.runtime_handler.is_empty() {
                self.settings.default_runtime.clone()
            } else {
                pod.runtime_handler.clone()
            },
            stdin: config.stdin,
            tty: config.tty,
            stdin_once: config.stdin_once,
            restore_from: made.restore_from,
        }
    }
}

/// What the fitted spec says that a container's record keeps.
struct Fitted {
    /// The image's stop signal, else SIGTERM.
    stop_signal: String,
    /// The runtime's cgroups path.
    cgroups_path: String,
    /// The user the process runs as.
    user: Option<record::UserRecord>,
    /// The process's OOM score adjustment.
    oom_score_adj: Option<i32>,
}

impl Fitted {
    fn of(s: &crikit::oci_spec::runtime::Spec) -> Fitted {
        Fitted {
            stop_signal: s
                .annotations()
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.stopSignal"))
                .cloned()
                .unwrap_or_else(|| "SIGTERM".into()),
            cgroups_path: s
                .linux()
                .as_ref()
                .and_then(|l| l.cgroups_path().as_ref())
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            user: s.process().as_ref().map(|p| record::UserRecord {
                uid: p.user().uid(),
                gid: p.user().gid(),
                groups: p.user().additional_gids().clone().unwrap_or_default(),
            }),
            oom_score_adj: s.process().as_ref().and_then(|p| p.oom_score_adj()),
        }
    }
}

/// What making a container produced, for its record.
struct Made {
    info: ImageInfo,
    bundle: PathBuf,
    fitted: Fitted,
    log_path: String,
    pid: i32,
    restore_from: Option<PathBuf>,
    monitor_parent: Option<Parent>,
}

/// The container's name, as its metadata gives it ("" for none).
fn name_of(config: &cri::ContainerConfig) -> &str {
    config.metadata.as_ref().map_or("", |m| m.name.as_str())
}
