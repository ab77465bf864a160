//! Bad requests, as anything that reaches crid's socket may send them: each is
//! answered INVALID_ARGUMENT with one line naming the field and the value, before
//! anything is made, so nothing is left behind (no network namespace, mount,
//! cgroup, IP lease, ctrmon or state file), and crid goes on serving good ones.

use e2e::crid::{Network, World};
use e2e::pods::{leftovers, BridgeNet};
use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode::Container as OwnPid;
use tonic::Code;

type PodEdit = Box<dyn Fn(&mut cri::PodSandboxConfig)>;
type ContainerEdit = Box<dyn Fn(&mut cri::ContainerConfig)>;

fn linux(c: &mut cri::PodSandboxConfig) -> &mut cri::LinuxPodSandboxConfig {
    c.linux.get_or_insert_with(Default::default)
}

fn resources(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerResources {
    c.linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
}

/// The refusal is INVALID_ARGUMENT, one line, naming `field`.
fn refused_for(e: &tonic::Status, field: &str, what: &str) {
    assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
    assert!(
        e.message().starts_with(field) && !e.message().contains('\n'),
        "{what}: {:?} does not name {field}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_argument_naming_the_field_and_leave_nothing() {
    let w = World::new(Network::None, &[]).await;
    let net = BridgeNet::write(&w, "val", false);
    let ipam = w.tmp.path().join("ipam");
    let left = || {
        let mut l = leftovers(&w, &net.bridge.0, &ipam, &net.name);
        l.sort();
        l
    };

    // What crictl let through before: each one now refused before anything is made.
    let pods: Vec<(&str, &str, PodEdit)> = vec![
        (
            "a hostname with a line of its own",
            "config.hostname",
            Box::new(|c| c.hostname = "web\nevil".into()),
        ),
        (
            "a hostname of 300 characters",
            "config.hostname",
            Box::new(|c| c.hostname = "h".repeat(300)),
        ),
        (
            "host port 70000",
            "config.port_mappings[0].host_port",
            Box::new(|c| {
                c.port_mappings = vec![cri::PortMapping {
                    container_port: 80,
                    host_port: 70000,
                    ..Default::default()
                }]
            }),
        ),
        (
            "a relative log directory",
            "config.log_directory",
            Box::new(|c| c.log_directory = "logs/pod".into()),
        ),
        (
            "a sysctl name with a newline",
            "config.linux.sysctls[\"net.ipv4.ip_forward\\nkernel.panic\"]",
            Box::new(|c| {
                linux(c)
                    .sysctls
                    .insert("net.ipv4.ip_forward\nkernel.panic".into(), "1".into());
            }),
        ),
        (
            "a sysctl of the host's (kernel.panic)",
            "config.linux.sysctls[\"kernel.panic\"]",
            Box::new(|c| {
                linux(c).sysctls.insert("kernel.panic".into(), "1".into());
            }),
        ),
        (
            "a cgroup parent that climbs out",
            "config.linux.cgroup_parent",
            Box::new(|c| linux(c).cgroup_parent = "/crikit-test/../../system.slice".into()),
        ),
        (
            "a DNS search domain that adds a line",
            "config.dns_config.searches[0]",
            Box::new(|c| {
                c.dns_config = Some(cri::DnsConfig {
                    searches: vec!["svc\nnameserver 192.0.2.66".into()],
                    ..Default::default()
                })
            }),
        ),
        (
            "a pod OOM score adjustment past the kernel's range",
            "config.linux.resources.oom_score_adj",
            Box::new(|c| {
                linux(c).resources = Some(cri::LinuxContainerResources {
                    oom_score_adj: 5000,
                    ..Default::default()
                })
            }),
        ),
        (
            "a namespace with a slash",
            "config.metadata.namespace",
            Box::new(|c| c.metadata.as_mut().unwrap().namespace = "a/b".into()),
        ),
        (
            "a negative run-as user",
            "config.linux.security_context.run_as_user",
            Box::new(|c| {
                let sc = linux(c)
                    .security_context
                    .get_or_insert_with(Default::default);
                sc.run_as_user = Some(cri::Int64Value { value: -1 });
            }),
        ),
        (
            "annotations over 256 KiB",
            "config.labels and config.annotations",
            Box::new(|c| {
                c.annotations.insert("big".into(), "x".repeat(300 << 10));
            }),
        ),
    ];
    for (i, (what, field, edit)) in pods.iter().enumerate() {
        let mut c = w.pod_config(&format!("bad{i}"), OwnPid);
        edit(&mut c);
        let e = w.run_pod(&c).await.unwrap_err();
        refused_for(&e, field, what);
    }
    let left_now = left();
    assert!(left_now.is_empty(), "left: {left_now:#?}");
    assert!(w.pods().await.is_empty());

    // A good pod with a container running; then bad containers, execs, forwards
    // and updates leave it as it was.
    let config = w.pod_config("good", OwnPid);
    let pod = w.run_pod(&config).await.expect("the good pod");
    let running = w
        .start(&pod, &config, w.container_config("app", "sleep 1000"))
        .await;
    let before = left();
    let containers: Vec<(&str, &str, ContainerEdit)> = vec![
        (
            "an environment name holding '='",
            "config.envs[0].key",
            Box::new(|c| c.envs[0].key = "A=B".into()),
        ),
        (
            "a NUL in an argument",
            "config.command[2]",
            Box::new(|c| c.command[2] = "echo\0hidden".into()),
        ),
        (
            "a relative mount path",
            "config.mounts[0].container_path",
            Box::new(|c| {
                c.mounts = vec![cri::Mount {
                    container_path: "data".into(),
                    host_path: "/tmp".into(),
                    ..Default::default()
                }]
            }),
        ),
        (
            "a host path that climbs out",
            "config.mounts[0].host_path",
            Box::new(|c| {
                c.mounts = vec![cri::Mount {
                    container_path: "/data".into(),
                    host_path: "/tmp/../etc".into(),
                    ..Default::default()
                }]
            }),
        ),
        (
            "a log path out of the pod's log directory",
            "config.log_path",
            Box::new(|c| c.log_path = "../../escape.log".into()),
        ),
        (
            "CPU shares of 1",
            "config.linux.resources.cpu_shares",
            Box::new(|c| resources(c).cpu_shares = 1),
        ),
        (
            "a CFS period of 10 microseconds",
            "config.linux.resources.cpu_period",
            Box::new(|c| resources(c).cpu_period = 10),
        ),
        (
            "an OOM score adjustment of -1001",
            "config.linux.resources.oom_score_adj",
            Box::new(|c| resources(c).oom_score_adj = -1001),
        ),
        (
            "a cpuset range backwards",
            "config.linux.resources.cpuset_cpus",
            Box::new(|c| resources(c).cpuset_cpus = "3-1".into()),
        ),
        (
            "a unified key that is a path",
            "config.linux.resources.unified[\"../cgroup.procs\"]",
            Box::new(|c| {
                resources(c)
                    .unified
                    .insert("../cgroup.procs".into(), "1".into());
            }),
        ),
        (
            "a device with permissions beyond rwm",
            "config.devices[0].permissions",
            Box::new(|c| {
                c.devices = vec![cri::Device {
                    container_path: "/dev/zero2".into(),
                    host_path: "/dev/zero".into(),
                    permissions: "rwx".into(),
                }]
            }),
        ),
        (
            "a relative working directory",
            "config.working_dir",
            Box::new(|c| c.working_dir = "srv".into()),
        ),
    ];
    for (i, (what, field, edit)) in containers.iter().enumerate() {
        let mut c = w.container_config(&format!("bad{i}"), "true");
        edit(&mut c);
        let e = w.create(&pod, &config, c).await.unwrap_err();
        refused_for(&e, field, what);
    }
    let mut rt = w.rt.clone();
    let e = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: running.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo\0x".into()],
            timeout: 5,
        })
        .await
        .unwrap_err();
    refused_for(&e, "cmd[2]", "an exec argument with a NUL");
    let e = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: running.clone(),
            cmd: vec!["true".into()],
            timeout: -1,
        })
        .await
        .unwrap_err();
    refused_for(&e, "timeout", "a negative exec timeout");
    let e = rt
        .exec(cri::ExecRequest {
            container_id: running.clone(),
            cmd: vec![],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    refused_for(&e, "cmd", "an exec without a command");
    let e = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![80, 70000],
        })
        .await
        .unwrap_err();
    refused_for(&e, "port[1]", "a port past 65535");
    let e = rt
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: running.clone(),
            linux: Some(cri::LinuxContainerResources {
                cpu_quota: 5,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    refused_for(&e, "linux.cpu_quota", "a CFS quota of 5 microseconds");
    assert_eq!(left(), before, "a refused request left something");

    // Borderline but valid: still served.
    let mut edge = w.container_config("edge", "cat /proc/self/oom_score_adj; exit 0");
    let r = resources(&mut edge);
    r.cpu_shares = 2;
    r.oom_score_adj = 1000;
    r.cpu_period = 100_000;
    r.cpu_quota = 1_000;
    edge.envs.push(cri::KeyValue {
        key: "EMPTY".into(),
        value: String::new(),
    });
    w.create(&pod, &config, edge)
        .await
        .unwrap_or_else(|e| panic!("a borderline container: {e:?}: {}", w.crid.stderr()));
    let ok = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: running,
            cmd: vec!["echo".into(), String::new()],
            timeout: 0,
        })
        .await
        .expect("an exec with an empty argument")
        .into_inner();
    assert_eq!(ok.exit_code, 0);
    w.remove_pod(&pod).await;
    let left_now = left();
    assert!(left_now.is_empty(), "left: {left_now:#?}");
}
