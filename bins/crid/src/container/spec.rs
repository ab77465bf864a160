//! The CRI's part of a container's runtime spec: namespaces, sysctls, resources,
//! devices, security and mount propagation, fitted onto the typed spec that the
//! library generated from the image, before it is validated and written.

use crate::error::{CridError, Result};
use crate::state::record::{NsMode, PodRecord};
use crikit::oci_spec::runtime::{
    Capability, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxHugepageLimit, LinuxMemory,
    LinuxNamespace, LinuxNamespaceType, LinuxResources, LinuxSeccomp, Spec,
};
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The PID namespace a container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidNs {
    /// The host's.
    Host,
    /// One of its own.
    New,
    /// Another process's (the pod's infra process, or a target container).
    Join(PathBuf),
}

/// What a container's spec is fitted from.
pub struct Fit<'a> {
    /// Its pod.
    pub pod: &'a PodRecord,
    /// The request.
    pub config: &'a cri::ContainerConfig,
    /// Its PID namespace.
    pub pid: PidNs,
    /// crid's own OOM score adjustment: the kernel may deny going below it.
    pub own_oom_score_adj: i32,
    /// Whether the host has cgroup v2 (a cgroup namespace of its own then).
    pub cgroup_v2: bool,
}

impl Fit<'_> {
    fn security(&self) -> cri::LinuxContainerSecurityContext {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default()
    }

    fn resources(&self) -> cri::LinuxContainerResources {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .unwrap_or_default()
    }
}

/// The PID namespace mode a container asks for.
pub fn pid_mode(config: &cri::ContainerConfig) -> (NsMode, String) {
    let o = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    (
        o.map_or(NsMode::Pod, |o| NsMode::from_cri(o.pid)),
        o.map(|o| o.target_id.clone()).unwrap_or_default(),
    )
}

fn namespace(typ: LinuxNamespaceType, path: Option<&Path>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ);
    n.set_path(path.map(Path::to_path_buf));
    n
}

/// Fits `spec` to the request.
pub fn fit(spec: &mut Spec, f: &Fit) -> Result<()> {
    let sc = f.security();
    namespaces(spec, f);
    let mut linux = spec.linux().clone().unwrap_or_default();
    // Sysctls of the pod; network ones only in a network namespace of its own.
    let sysctls: HashMap<String, String> = f
        .pod
        .sysctls
        .iter()
        .filter(|(k, _)| !k.starts_with("net.") || f.pod.ns.contains_key("net"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !sysctls.is_empty() {
        linux.set_sysctl(Some(sysctls));
    }
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut asked = f.resources();
    // A new cgroup has no quota: -1 ("none") asks for what is there already, and
    // crun on cgroup v1 cannot write it (ERANGE).
    if asked.cpu_quota == -1 {
        asked.cpu_quota = 0;
    }
    apply_resources(&mut resources, &asked);
    let (devices, rules) = devices(f.config)?;
    if !devices.is_empty() {
        let mut list = linux.devices().clone().unwrap_or_default();
        list.extend(devices);
        linux.set_devices(Some(list));
        let mut all = resources.devices().clone().unwrap_or_default();
        all.extend(rules);
        resources.set_devices(Some(all));
    }
    linux.set_resources(Some(resources));
    if !sc.privileged {
        if !sc.masked_paths.is_empty() {
            linux.set_masked_paths(Some(sc.masked_paths.clone()));
        }
        if !sc.readonly_paths.is_empty() {
            linux.set_readonly_paths(Some(sc.readonly_paths.clone()));
        }
        match seccomp(&sc) {
            Seccomp::Unconfined => {
                linux.set_seccomp(None);
            }
            Seccomp::Localhost(path) => {
                linux.set_seccomp(Some(load_seccomp(&path)?));
            }
            Seccomp::RuntimeDefault => {}
        }
    }
    spec.set_linux(Some(linux));
    process(spec, f, &sc)?;
    propagation(spec, f.config);
    Ok(())
}

/// The pod's pinned namespaces, the PID namespace asked for, a mount namespace,
/// a cgroup namespace on cgroup v2.
fn namespaces(spec: &mut Spec, f: &Fit) {
    use LinuxNamespaceType as T;
    let mut ns = vec![namespace(T::Mount, None)];
    for (kind, typ) in [("user", T::User), ("net", T::Network), ("ipc", T::Ipc)] {
        if let Some(p) = f.pod.ns.get(kind) {
            ns.push(namespace(typ, Some(p)));
        }
    }
    match f.pod.ns.get("uts") {
        Some(p) => ns.push(namespace(T::Uts, Some(p))),
        // The host's UTS namespace: its hostname is not the container's to set.
        None => {
            spec.set_hostname(None);
        }
    }
    match &f.pid {
        PidNs::Host => {}
        PidNs::New => ns.push(namespace(T::Pid, None)),
        PidNs::Join(p) => ns.push(namespace(T::Pid, Some(p))),
    }
    if f.cgroup_v2 {
        ns.push(namespace(T::Cgroup, None));
    }
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_namespaces(Some(ns));
    // The maps of the pinned user namespace it joins: runc wants them to own the
    // /dev and the files it makes for the container's root.
    if let Some(u) = f.pod.userns {
        let map = |m: crate::state::record::IdMap| {
            crikit::oci_spec::runtime::LinuxIdMappingBuilder::default()
                .container_id(m.container_id)
                .host_id(m.host_id)
                .size(m.length)
                .build()
        };
        if let (Ok(uid), Ok(gid)) = (map(u.uids), map(u.gids)) {
            linux.set_uid_mappings(Some(vec![uid]));
            linux.set_gid_mappings(Some(vec![gid]));
        }
    }
    spec.set_linux(Some(linux));
}

/// The seccomp profile a container asks for.
#[derive(Debug, PartialEq, Eq)]
enum Seccomp {
    /// None.
    Unconfined,
    /// The runtime's default (the library's profile).
    RuntimeDefault,
    /// A profile file on the node.
    Localhost(String),
}

/// What `seccomp` asks for, else the deprecated `seccomp_profile_path` of kubelets
/// before 1.22 (`runtime/default`, `docker/default`, `localhost/PATH`,
/// `unconfined`); neither set is unconfined, as the CRI defines it.
#[allow(deprecated)]
fn seccomp(sc: &cri::LinuxContainerSecurityContext) -> Seccomp {
    use cri::security_profile::ProfileType;
    if let Some(p) = &sc.seccomp {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Seccomp::RuntimeDefault,
            Ok(ProfileType::Localhost) => Seccomp::Localhost(p.localhost_ref.clone()),
            _ => Seccomp::Unconfined,
        };
    }
    match sc.seccomp_profile_path.as_str() {
        "runtime/default" | "docker/default" => Seccomp::RuntimeDefault,
        p => match p.strip_prefix("localhost/") {
            Some(path) => Seccomp::Localhost(path.to_string()),
            None => Seccomp::Unconfined,
        },
    }
}

/// The CRI's resources onto a runtime spec's (set fields only), for create and
/// for `runtime update`.
pub fn apply_resources(r: &mut LinuxResources, res: &cri::LinuxContainerResources) {
    let mut cpu = r.cpu().clone().unwrap_or_default();
    let mut cpu_set = false;
    if res.cpu_shares > 0 {
        cpu.set_shares(Some(res.cpu_shares as u64));
        cpu_set = true;
    }
    if res.cpu_quota != 0 {
        cpu.set_quota(Some(res.cpu_quota));
        cpu_set = true;
    }
    if res.cpu_period > 0 {
        cpu.set_period(Some(res.cpu_period as u64));
        cpu_set = true;
    }
    if !res.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(res.cpuset_cpus.clone()));
        cpu_set = true;
    }
    if !res.cpuset_mems.is_empty() {
        cpu.set_mems(Some(res.cpuset_mems.clone()));
        cpu_set = true;
    }
    if cpu_set {
        r.set_cpu(Some(cpu));
    }
    let mut mem: LinuxMemory = r.memory().unwrap_or_default();
    let mut mem_set = false;
    if res.memory_limit_in_bytes > 0 {
        mem.set_limit(Some(res.memory_limit_in_bytes));
        mem_set = true;
    }
    if res.memory_swap_limit_in_bytes > 0 {
        mem.set_swap(Some(res.memory_swap_limit_in_bytes));
        mem_set = true;
    }
    if mem_set {
        r.set_memory(Some(mem));
    }
    if !res.hugepage_limits.is_empty() {
        r.set_hugepage_limits(Some(
            res.hugepage_limits
                .iter()
                .map(|h| {
                    let mut l = LinuxHugepageLimit::default();
                    l.set_page_size(h.page_size.clone());
                    l.set_limit(h.limit as i64);
                    l
                })
                .collect(),
        ));
    }
    if !res.unified.is_empty() {
        r.set_unified(Some(res.unified.clone()));
    }
}

/// The resources `runtime update` gets: the CRI's, with the swap limit lifted when
/// only the memory limit is given (runc refuses a limit above the current swap
/// limit).
pub fn update_resources(res: &cri::LinuxContainerResources) -> LinuxResources {
    let mut r = LinuxResources::default();
    apply_resources(&mut r, res);
    if res.memory_limit_in_bytes > 0 && res.memory_swap_limit_in_bytes <= 0 {
        let mut m: LinuxMemory = r.memory().unwrap_or_default();
        m.set_swap(Some(-1));
        r.set_memory(Some(m));
    }
    r
}

/// The process's supplementary groups. Merge (the default): the groups the
/// image's /etc/group gives its user, then the requested ones. Strict: the
/// primary group and the requested ones only, whatever the image says.
fn groups(
    p: &mut crikit::oci_spec::runtime::Process,
    sc: &cri::LinuxContainerSecurityContext,
) -> Result<()> {
    let strict = sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32;
    let mut all = if strict {
        vec![p.user().gid()]
    } else {
        p.user().additional_gids().clone().unwrap_or_default()
    };
    for g in &sc.supplemental_groups {
        let g = u32::try_from(*g)
            .map_err(|_| CridError::Invalid(format!("supplemental group {g} is not a group id")))?;
        if !all.contains(&g) {
            all.push(g);
        }
    }
    if strict || !sc.supplemental_groups.is_empty() {
        p.user_mut().set_additional_gids(Some(all));
    }
    Ok(())
}

/// OOM score, supplementary groups, no_new_privs, ambient capabilities.
fn process(spec: &mut Spec, f: &Fit, sc: &cri::LinuxContainerSecurityContext) -> Result<()> {
    let Some(mut p) = spec.process().clone() else {
        return Err(CridError::Invalid(
            "the generated spec has no process".into(),
        ));
    };
    // Never below crid's own: this kernel may deny lowering it.
    let adj = i32::try_from(f.resources().oom_score_adj).unwrap_or(i32::MAX);
    p.set_oom_score_adj(Some(adj.max(f.own_oom_score_adj)));
    groups(&mut p, sc)?;
    p.set_no_new_privileges(Some(sc.no_new_privs));
    let ambient = ambient_capabilities(sc)?;
    if !ambient.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        caps.set_ambient(Some(ambient));
        p.set_capabilities(Some(caps));
    }
    spec.set_process(Some(p));
    Ok(())
}

fn ambient_capabilities(
    sc: &cri::LinuxContainerSecurityContext,
) -> Result<std::collections::HashSet<Capability>> {
    let names = sc
        .capabilities
        .as_ref()
        .map(|c| c.add_ambient_capabilities.clone())
        .unwrap_or_default();
    names
        .iter()
        .map(|x| {
            let x = x.to_uppercase();
            let name = if x.starts_with("CAP_") {
                x
            } else {
                format!("CAP_{x}")
            };
            serde_json::from_value(serde_json::Value::String(name.clone())).map_err(|_| {
                CridError::Invalid(format!("ambient capability {name:?}: no such capability"))
            })
        })
        .collect()
}

/// Mount propagation as each mount asks: rslave for HostToContainer, rshared for
/// Bidirectional (and the rootfs with them).
fn propagation(spec: &mut Spec, config: &cri::ContainerConfig) {
    let mut rootfs: Option<String> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone());
    for m in &config.mounts {
        let prop = match cri::MountPropagation::try_from(m.propagation) {
            Ok(cri::MountPropagation::PropagationHostToContainer) => "rslave",
            Ok(cri::MountPropagation::PropagationBidirectional) => "rshared",
            _ => continue,
        };
        for entry in spec
            .mounts_mut()
            .iter_mut()
            .flatten()
            .filter(|e| e.destination() == Path::new(&m.container_path))
        {
            if let Some(o) = entry.options_mut() {
                o.retain(|x| x != "rprivate");
                o.push(prop.into());
            }
        }
        if prop == "rshared" {
            rootfs = Some("rshared".into());
        } else if rootfs.is_none() {
            rootfs = Some("rslave".into());
        }
    }
    if rootfs.is_some() {
        if let Some(l) = spec.linux_mut() {
            l.set_rootfs_propagation(rootfs);
        }
    }
}

/// The devices the request asks for, with their cgroup rules.
fn devices(config: &cri::ContainerConfig) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut devs = vec![];
    let mut rules = vec![];
    for d in &config.devices {
        let m = std::fs::metadata(&d.host_path)
            .map_err(|e| CridError::Invalid(format!("device {}: {e}", d.host_path)))?;
        let ty = if m.file_type().is_char_device() {
            LinuxDeviceType::C
        } else if m.file_type().is_block_device() {
            LinuxDeviceType::B
        } else {
            return Err(CridError::Invalid(format!(
                "device {}: not a device",
                d.host_path
            )));
        };
        let rdev = m.rdev();
        let (major, minor) = (
            nix::sys::stat::major(rdev) as i64,
            nix::sys::stat::minor(rdev) as i64,
        );
        let path = if d.container_path.is_empty() {
            &d.host_path
        } else {
            &d.container_path
        };
        let mut dev = LinuxDevice::default();
        dev.set_path(PathBuf::from(path));
        dev.set_typ(ty);
        dev.set_major(major);
        dev.set_minor(minor);
        dev.set_file_mode(Some(m.mode() & 0o777));
        dev.set_uid(Some(0));
        dev.set_gid(Some(0));
        devs.push(dev);
        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(true);
        rule.set_typ(Some(ty));
        rule.set_major(Some(major));
        rule.set_minor(Some(minor));
        rule.set_access(Some(if d.permissions.is_empty() {
            "rwm".to_string()
        } else {
            d.permissions.clone()
        }));
        rules.push(rule);
    }
    Ok((devs, rules))
}

/// A Localhost seccomp profile: OCI form, or Docker's (with `archMap`).
fn load_seccomp(path: &str) -> Result<LinuxSeccomp> {
    let bad = |why: String| CridError::Invalid(format!("seccomp profile {path}: {why}"));
    if !path.starts_with('/') {
        return Err(bad("must be an absolute path".into()));
    }
    let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut v: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| bad(format!("not JSON: {e}")))?;
    if !v["defaultAction"].is_string() {
        return Err(bad("no defaultAction".into()));
    }
    if let Some(map) = v["archMap"].as_array().cloned() {
        let mut arches = vec![];
        for a in map {
            arches.extend(a["architecture"].as_str().map(String::from));
            for s in a["subArchitectures"].as_array().into_iter().flatten() {
                arches.extend(s.as_str().map(String::from));
            }
        }
        v["architectures"] = serde_json::json!(arches);
        if let Some(o) = v.as_object_mut() {
            o.remove("archMap");
        }
    }
    serde_json::from_value(v).map_err(|e| bad(format!("not a seccomp profile: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::record::PodRecord;

    fn generated() -> Spec {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let ic = serde_json::json!({"config": {"Cmd": ["/bin/sh"]}}).to_string();
        let o = crikit::rootfs::spec::Overrides {
            mounts: vec![("/srv".into(), "/data".into(), false)],
            ..Default::default()
        };
        crikit::rootfs::spec::generate(ic.as_bytes(), d.path(), "c", &o, None).unwrap()
    }

    fn pod() -> PodRecord {
        let config = cri::PodSandboxConfig {
            linux: Some(cri::LinuxPodSandboxConfig {
                sysctls: [
                    ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
                    ("net.ipv4.ip_forward".to_string(), "1".to_string()),
                ]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut p = PodRecord::new("p1".into(), &config, String::new(), "/run/p1".into());
        p.ns.insert("ipc".into(), "/run/p1/ns/ipc".into());
        p
    }

    #[test]
    fn a_kubelet_like_request_fits_and_validates() {
        let mut spec = generated();
        let config = cri::ContainerConfig {
            mounts: vec![cri::Mount {
                container_path: "/data".into(),
                host_path: "/srv".into(),
                propagation: cri::MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            }],
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    cpu_shares: 512,
                    memory_limit_in_bytes: 64 << 20,
                    oom_score_adj: -5,
                    ..Default::default()
                }),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    supplemental_groups: vec![10, 20],
                    seccomp: Some(cri::SecurityProfile {
                        profile_type: cri::security_profile::ProfileType::Unconfined as i32,
                        ..Default::default()
                    }),
                    capabilities: Some(cri::Capability {
                        add_ambient_capabilities: vec!["net_bind_service".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let f = Fit {
            pod: &pod(),
            config: &config,
            pid: PidNs::Join("/proc/42/ns/pid".into()),
            own_oom_score_adj: 0,
            cgroup_v2: false,
        };
        fit(&mut spec, &f).unwrap();
        crikit::rootfs::spec::validate(&spec).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(ns.len(), 3, "{ns:?}");
        assert_eq!(
            ns[2],
            serde_json::json!({"type": "pid", "path": "/proc/42/ns/pid"})
        );
        assert!(v.get("hostname").is_none(), "host UTS: no hostname");
        assert_eq!(
            v["linux"]["sysctl"],
            serde_json::json!({"kernel.shm_rmid_forced": "1"})
        );
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 512);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["process"]["oomScoreAdj"], 0, "never below crid's own");
        // The image user's own groups stay; the pod's are added.
        assert_eq!(
            v["process"]["user"]["additionalGids"],
            serde_json::json!([0, 10, 20])
        );
        assert_eq!(
            v["process"]["capabilities"]["ambient"],
            serde_json::json!(["CAP_NET_BIND_SERVICE"])
        );
        assert!(v["linux"].get("seccomp").is_none());
        let data = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert!(data["options"]
            .as_array()
            .unwrap()
            .contains(&"rslave".into()));
        assert_eq!(v["linux"]["rootfsPropagation"], "rslave");
    }

    #[test]
    fn bad_requests_are_named() {
        let mut spec = generated();
        let mut config = cri::ContainerConfig {
            devices: vec![cri::Device {
                host_path: "/etc/passwd".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let p = pod();
        fn f<'a>(pod: &'a PodRecord, config: &'a cri::ContainerConfig) -> Fit<'a> {
            Fit {
                pod,
                config,
                pid: PidNs::New,
                own_oom_score_adj: 0,
                cgroup_v2: true,
            }
        }
        let e = fit(&mut spec, &f(&p, &config)).unwrap_err();
        assert_eq!(e.to_string(), "device /etc/passwd: not a device");
        config.devices.clear();
        config.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_ambient_capabilities: vec!["FLY".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let e = fit(&mut spec, &f(&p, &config)).unwrap_err();
        assert!(e.to_string().contains("\"CAP_FLY\""), "{e}");
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
    }

    #[test]
    #[allow(deprecated)]
    fn seccomp_unset_is_unconfined_and_the_old_paths_are_read() {
        use cri::security_profile::ProfileType;
        let sc = |seccomp: Option<ProfileType>, path: &str| cri::LinuxContainerSecurityContext {
            seccomp: seccomp.map(|t| cri::SecurityProfile {
                profile_type: t as i32,
                localhost_ref: "/p.json".into(),
            }),
            seccomp_profile_path: path.into(),
            ..Default::default()
        };
        assert_eq!(seccomp(&sc(None, "")), Seccomp::Unconfined);
        assert_eq!(
            seccomp(&sc(Some(ProfileType::RuntimeDefault), "")),
            Seccomp::RuntimeDefault
        );
        assert_eq!(
            seccomp(&sc(Some(ProfileType::Unconfined), "runtime/default")),
            Seccomp::Unconfined
        );
        assert_eq!(
            seccomp(&sc(Some(ProfileType::Localhost), "")),
            Seccomp::Localhost("/p.json".into())
        );
        assert_eq!(
            seccomp(&sc(None, "docker/default")),
            Seccomp::RuntimeDefault
        );
        assert_eq!(
            seccomp(&sc(None, "localhost//x.json")),
            Seccomp::Localhost("/x.json".into())
        );
        assert_eq!(seccomp(&sc(None, "unconfined")), Seccomp::Unconfined);
    }

    #[test]
    fn strict_groups_leave_out_the_images_and_merge_keeps_them() {
        let pod = pod();
        let mut spec = generated();
        let image_groups = spec
            .process()
            .as_ref()
            .unwrap()
            .user()
            .additional_gids()
            .clone();
        assert_eq!(
            image_groups,
            Some(vec![0]),
            "the image's root is in group 0"
        );
        let config = |policy: cri::SupplementalGroupsPolicy| cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                resources: None,
                security_context: Some(cri::LinuxContainerSecurityContext {
                    supplemental_groups: vec![4000],
                    supplemental_groups_policy: policy as i32,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let fit_with = |spec: &mut Spec, c: &cri::ContainerConfig| {
            let f = Fit {
                pod: &pod,
                config: c,
                pid: PidNs::New,
                own_oom_score_adj: 0,
                cgroup_v2: false,
            };
            fit(spec, &f).unwrap();
            spec.process()
                .as_ref()
                .unwrap()
                .user()
                .additional_gids()
                .clone()
        };
        let merge = config(cri::SupplementalGroupsPolicy::Merge);
        assert_eq!(fit_with(&mut spec, &merge), Some(vec![0, 4000]));
        // Strict: the primary group and the requested ones, none of the image's.
        let mut spec = generated();
        let mut user = spec.process().as_ref().unwrap().user().clone();
        user.set_gid(3000);
        let mut p = spec.process().clone().unwrap();
        p.set_user(user);
        spec.set_process(Some(p));
        let strict = config(cri::SupplementalGroupsPolicy::Strict);
        assert_eq!(fit_with(&mut spec, &strict), Some(vec![3000, 4000]));
    }

    #[test]
    fn updates_lift_swap_with_a_memory_limit() {
        let r = update_resources(&cri::LinuxContainerResources {
            memory_limit_in_bytes: 1 << 30,
            cpu_quota: 50_000,
            ..Default::default()
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["memory"],
            serde_json::json!({"limit": 1 << 30, "swap": -1})
        );
        assert_eq!(v["cpu"], serde_json::json!({"quota": 50_000}));
    }
}
