//! Fuzzes crid's request checks and spec fitting with structured requests: a pod
//! config and a container config built field by field from the input. Whatever
//! the checks let through must fit onto an image's generated spec without a panic,
//! and a spec that fits must pass the library's validation (what runc and crun
//! would be given); a refusal must be one line naming a field of the request.
#![no_main]

use crid::container::spec::{fit, Fit, PidNs};
use crid::validate;
use crid::state::record::PodRecord;
use k8s_cri::v1 as cri;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
struct Resources {
    cpu_period: i64,
    cpu_quota: i64,
    cpu_shares: i64,
    memory: i64,
    swap: i64,
    oom_score_adj: i64,
    cpuset_cpus: String,
    cpuset_mems: String,
    hugepages: Vec<(String, u64)>,
    unified: Vec<(String, String)>,
}

impl Resources {
    fn cri(&self) -> cri::LinuxContainerResources {
        cri::LinuxContainerResources {
            cpu_period: self.cpu_period,
            cpu_quota: self.cpu_quota,
            cpu_shares: self.cpu_shares,
            memory_limit_in_bytes: self.memory,
            memory_swap_limit_in_bytes: self.swap,
            oom_score_adj: self.oom_score_adj,
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            hugepage_limits: self
                .hugepages
                .iter()
                .map(|(page_size, limit)| cri::HugepageLimit {
                    page_size: page_size.clone(),
                    limit: *limit,
                })
                .collect(),
            unified: self.unified.iter().cloned().collect(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Pod {
    name: String,
    namespace: String,
    uid: String,
    hostname: String,
    log_directory: String,
    ports: Vec<(i32, i32, i32, String)>,
    sysctls: Vec<(String, String)>,
    cgroup_parent: String,
    dns: (Vec<String>, Vec<String>, Vec<String>),
    annotations: Vec<(String, String)>,
    network: i32,
    ipc: i32,
    run_as_user: Option<i64>,
    overhead: Option<Resources>,
}

#[derive(Arbitrary, Debug)]
struct Container {
    name: String,
    image: String,
    command: Vec<String>,
    args: Vec<String>,
    working_dir: String,
    envs: Vec<(String, String)>,
    mounts: Vec<(String, String, bool, i32)>,
    devices: Vec<(String, String, String)>,
    log_path: String,
    resources: Option<Resources>,
    add: Vec<String>,
    drop: Vec<String>,
    ambient: Vec<String>,
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    run_as_username: String,
    groups: Vec<i64>,
    masked: Vec<String>,
    readonly: Vec<String>,
    seccomp: Option<(i32, String)>,
    seccomp_profile_path: String,
    privileged: bool,
    no_new_privs: bool,
    readonly_rootfs: bool,
}

#[derive(Arbitrary, Debug)]
struct Request {
    pod: Pod,
    container: Container,
}

impl Pod {
    fn cri(&self) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            hostname: self.hostname.clone(),
            log_directory: self.log_directory.clone(),
            dns_config: Some(cri::DnsConfig {
                servers: self.dns.0.clone(),
                searches: self.dns.1.clone(),
                options: self.dns.2.clone(),
            }),
            port_mappings: self
                .ports
                .iter()
                .map(
                    |(protocol, container_port, host_port, host_ip)| cri::PortMapping {
                        protocol: *protocol,
                        container_port: *container_port,
                        host_port: *host_port,
                        host_ip: host_ip.clone(),
                    },
                )
                .collect(),
            annotations: self.annotations.iter().cloned().collect(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                sysctls: self.sysctls.iter().cloned().collect(),
                overhead: self.overhead.as_ref().map(Resources::cri),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: self.network,
                        ipc: self.ipc,
                        ..Default::default()
                    }),
                    run_as_user: self.run_as_user.map(|value| cri::Int64Value { value }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl Container {
    #[allow(deprecated)]
    fn cri(&self) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: self.name.clone(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: self.command.clone(),
            args: self.args.clone(),
            working_dir: self.working_dir.clone(),
            envs: self
                .envs
                .iter()
                .map(|(key, value)| cri::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            mounts: self
                .mounts
                .iter()
                .map(
                    |(container_path, host_path, readonly, propagation)| cri::Mount {
                        container_path: container_path.clone(),
                        host_path: host_path.clone(),
                        readonly: *readonly,
                        propagation: *propagation,
                        ..Default::default()
                    },
                )
                .collect(),
            devices: self
                .devices
                .iter()
                .map(|(container_path, host_path, permissions)| cri::Device {
                    container_path: container_path.clone(),
                    host_path: host_path.clone(),
                    permissions: permissions.clone(),
                })
                .collect(),
            log_path: self.log_path.clone(),
            linux: Some(cri::LinuxContainerConfig {
                resources: self.resources.as_ref().map(Resources::cri),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    capabilities: Some(cri::Capability {
                        add_capabilities: self.add.clone(),
                        drop_capabilities: self.drop.clone(),
                        add_ambient_capabilities: self.ambient.clone(),
                    }),
                    privileged: self.privileged,
                    run_as_user: self.run_as_user.map(|value| cri::Int64Value { value }),
                    run_as_group: self.run_as_group.map(|value| cri::Int64Value { value }),
                    run_as_username: self.run_as_username.clone(),
                    readonly_rootfs: self.readonly_rootfs,
                    supplemental_groups: self.groups.clone(),
                    no_new_privs: self.no_new_privs,
                    masked_paths: self.masked.clone(),
                    readonly_paths: self.readonly.clone(),
                    seccomp: self.seccomp.as_ref().map(|(profile_type, localhost_ref)| {
                        cri::SecurityProfile {
                            profile_type: *profile_type,
                            localhost_ref: localhost_ref.clone(),
                        }
                    }),
                    seccomp_profile_path: self.seccomp_profile_path.clone(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }
}

/// The spec the library generates for a plain image, made once.
fn generated() -> &'static crikit::oci_spec::runtime::Spec {
    static SPEC: OnceLock<crikit::oci_spec::runtime::Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("etc")).expect("etc");
        std::fs::write(d.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").expect("passwd");
        let image = serde_json::json!({"config": {"Cmd": ["/bin/sh"]}}).to_string();
        let o = crikit::rootfs::spec::Overrides::default();
        crikit::rootfs::spec::generate(image.as_bytes(), d.path(), "c", &o, None)
            .expect("a generated spec")
    })
}

/// A refusal is one line that begins with a field of the request.
fn one_line(r: &validate::Refused) {
    let line = r.to_string();
    assert!(!line.contains('\n'), "{line:?}");
    assert!(
        line.starts_with("config.") || line.starts_with("linux."),
        "{line:?}"
    );
}

fuzz_target!(|req: Request| {
    let pod = req.pod.cri();
    let container = req.container.cri();
    if let Err(r) = validate::pod_config(&pod) {
        return one_line(&r);
    }
    if let Err(r) = validate::container_config(&container) {
        return one_line(&r);
    }
    let record = PodRecord::new("p".into(), &pod, String::new(), "/run/p".into());
    let mut spec = generated().clone();
    let f = Fit {
        pod: &record,
        config: &container,
        pid: PidNs::New,
        own_oom_score_adj: 0,
        cgroup_v2: false,
    };
    // Fitting may refuse what the node lacks (a device, a seccomp profile).
    if fit(&mut spec, &f).is_ok() {
        if let Err(e) = crikit::rootfs::spec::validate(&spec) {
            panic!("a request the checks let through made an invalid spec: {e}");
        }
    }
});
