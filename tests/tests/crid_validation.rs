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

/// A small deterministic generator (xorshift64*), so that a failing run can be
/// repeated with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())].clone()
    }

    /// One of `fixed`, or now and then [`Rng::string`].
    fn or_string(&mut self, fixed: &[String]) -> String {
        let i = self.below(fixed.len() + 1);
        match fixed.get(i) {
            Some(f) => f.clone(),
            None => self.string(),
        }
    }

    /// A string from the edges: empty, control characters, separators, `..`,
    /// bounds of 63, 64 and 253 bytes, a lot of bytes, non-ASCII.
    fn string(&mut self) -> String {
        let pool = [
            String::new(),
            "a".into(),
            "web-0".into(),
            "a.b".into(),
            "a\nb".into(),
            "a\0b".into(),
            "a\rb".into(),
            "-a".into(),
            "a b".into(),
            "a=b".into(),
            "a/b".into(),
            "..".into(),
            "../x".into(),
            "/abs".into(),
            "/a/../b".into(),
            "ünï".into(),
            "x".repeat(63),
            "x".repeat(64),
            "x".repeat(253),
            "x".repeat(254),
            "x".repeat(5000),
        ];
        let mut s = self.pick(&pool);
        if self.below(4) == 0 {
            s.push_str(&self.pick(&pool));
        }
        s
    }

    fn int(&mut self) -> i64 {
        self.pick(&[
            0,
            1,
            -1,
            2,
            999,
            1000,
            1001,
            -1000,
            -1001,
            65535,
            65536,
            70000,
            262_144,
            262_145,
            1_000_000,
            1_000_001,
            4_294_967_294,
            4_294_967_295,
            i64::MAX,
            i64::MIN,
        ])
    }
}

/// One random change to a pod config; `tmp` is the test's directory (the only
/// place a valid path may point), `cgroup` the test's cgroup parent.
fn mutate_pod(r: &mut Rng, c: &mut cri::PodSandboxConfig, tmp: &str, cgroup: &str) {
    match r.below(11) {
        0 => c.hostname = r.string(),
        1 => c.log_directory = format!("{tmp}/{}", r.string()),
        2 => c.log_directory = r.string(),
        3 => {
            let protocol = r.below(4) as i32;
            c.port_mappings.push(cri::PortMapping {
                protocol,
                container_port: r.int() as i32,
                host_port: r.int() as i32,
                host_ip: r.or_string(&[String::new(), "127.0.0.1".into()]),
            })
        }
        4 => {
            let name = r.or_string(&[
                "net.ipv4.ip_forward".to_string(),
                "kernel.panic".into(),
                "kernel.shm_rmid_forced".into(),
                "net/ipv4/ping_group_range".into(),
            ]);
            linux(c).sysctls.insert(name, r.string());
        }
        5 => {
            linux(c).cgroup_parent = r.pick(&[
                format!("{cgroup}/../escape"),
                format!("{cgroup}\n"),
                format!("{cgroup}/a\0b"),
            ])
        }
        6 => {
            let m = c.metadata.as_mut().unwrap();
            match r.below(3) {
                0 => m.name = r.string(),
                1 => m.namespace = r.string(),
                _ => m.uid = r.string(),
            }
        }
        7 => {
            let d = c.dns_config.get_or_insert_with(Default::default);
            match r.below(3) {
                0 => d.servers = vec![r.string()],
                1 => d.searches = vec![r.string()],
                _ => d.options = vec![r.string()],
            }
        }
        8 => {
            let res = linux(c).overhead.get_or_insert_with(Default::default);
            let n = r.int();
            match r.below(5) {
                0 => res.cpu_period = n,
                1 => res.cpu_quota = n,
                2 => res.cpu_shares = n,
                3 => res.memory_limit_in_bytes = n,
                _ => res.oom_score_adj = n,
            }
        }
        9 => {
            let sc = linux(c)
                .security_context
                .get_or_insert_with(Default::default);
            sc.run_as_user = Some(cri::Int64Value { value: r.int() });
        }
        _ => {
            let (k, v) = (r.string(), r.string());
            c.annotations.insert(k, v);
        }
    }
}

/// One random change to a container config.
fn mutate_container(r: &mut Rng, c: &mut cri::ContainerConfig, tmp: &str) {
    match r.below(12) {
        0 => c.envs.push(cri::KeyValue {
            key: r.string(),
            value: r.string(),
        }),
        1 => c.args.push(r.string()),
        2 => c.working_dir = r.or_string(&["/".to_string(), "/tmp".into()]),
        3 => c.mounts.push(cri::Mount {
            container_path: r.or_string(&["/data".to_string()]),
            host_path: r.pick(&[
                format!("{tmp}/mnt"),
                format!("{tmp}/../x"),
                format!("{tmp}/a\0"),
                "relative".into(),
            ]),
            readonly: r.below(2) == 0,
            propagation: r.below(4) as i32,
            ..Default::default()
        }),
        4 => c.devices.push(cri::Device {
            container_path: r.or_string(&["/dev/zz".to_string()]),
            host_path: r.or_string(&["/dev/null".to_string(), format!("{tmp}/nodev")]),
            permissions: r.pick(&["rwm".to_string(), "m".into(), "rwx".into(), String::new()]),
        }),
        5 => c.log_path = r.string(),
        6 => {
            let res = resources(c);
            let n = r.int();
            match r.below(7) {
                0 => res.cpu_period = n,
                1 => res.cpu_quota = n,
                2 => res.cpu_shares = n,
                3 => res.memory_limit_in_bytes = n,
                4 => res.memory_swap_limit_in_bytes = n,
                5 => res.oom_score_adj = n,
                _ => res.cpuset_cpus = r.or_string(&["0".to_string(), "0-1".into(), "1-0".into()]),
            }
        }
        7 => {
            let caps = r.or_string(&["NET_ADMIN".to_string(), "CAP_CHOWN".into(), "ALL".into()]);
            let sc = c
                .linux
                .get_or_insert_with(Default::default)
                .security_context
                .get_or_insert_with(Default::default);
            sc.capabilities
                .get_or_insert_with(Default::default)
                .drop_capabilities
                .push(caps);
        }
        8 => {
            let sc = c
                .linux
                .get_or_insert_with(Default::default)
                .security_context
                .get_or_insert_with(Default::default);
            sc.run_as_user = Some(cri::Int64Value { value: r.int() });
        }
        9 => {
            let p = r.string();
            let sc = c
                .linux
                .get_or_insert_with(Default::default)
                .security_context
                .get_or_insert_with(Default::default);
            sc.masked_paths.push(p);
        }
        10 => {
            let p = r.or_string(&[format!("{tmp}/none.json")]);
            let sc = c
                .linux
                .get_or_insert_with(Default::default)
                .security_context
                .get_or_insert_with(Default::default);
            sc.seccomp = Some(cri::SecurityProfile {
                profile_type: r.below(4) as i32,
                localhost_ref: p,
            });
        }
        _ => c.metadata.as_mut().unwrap().name = r.string(),
    }
}

/// The codes a request may be answered with: done, or refused for the request or
/// for the node; never INTERNAL or UNKNOWN.
fn answered_well(r: &Result<(), tonic::Status>) -> bool {
    match r {
        Ok(()) => true,
        Err(e) => matches!(
            e.code(),
            Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::NotFound
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_generated_requests_never_crash_leak_or_answer_internal() {
    let seed: u64 = std::env::var("CRIKIT_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_C41D);
    let mut r = Rng(seed | 1);
    let w = World::new(Network::Loopback, &[]).await;
    let tmp = w.tmp.path().display().to_string();
    // No bridge, lease directory or NAT rules: the pods have only a loopback.
    let net_none = (
        "crikit-nobr",
        std::path::PathBuf::from("/nonexistent"),
        "crikit-no-such-network",
    );
    let left = || {
        let mut l = leftovers(&w, net_none.0, &net_none.1, net_none.2);
        l.sort();
        l
    };
    let mut rt = w.rt.clone();
    // One good pod with a running container for the container and exec requests.
    let config = w.pod_config("base", OwnPid);
    let pod = w.run_pod(&config).await.expect("the base pod");
    let running = w
        .start(&pod, &config, w.container_config("app", "sleep 1000"))
        .await;
    let before = left();
    let start = w.crid.footprint();
    let (mut done, mut refused) = (0usize, 0usize);
    let mut bad = Vec::new();
    for i in 0..2000 {
        let what;
        let outcome: Result<(), tonic::Status> = if i % 20 == 19 {
            let cmd: Vec<String> = (0..1 + r.below(3)).map(|_| r.string()).collect();
            let timeout = r.pick(&[0, 1, -1, 5]);
            what = format!("ExecSync {cmd:?} timeout {timeout}");
            rt.exec_sync(cri::ExecSyncRequest {
                container_id: running.clone(),
                cmd,
                timeout,
            })
            .await
            .map(|_| ())
        } else if i % 2 == 0 {
            let mut c = w.pod_config(&format!("p{i}"), OwnPid);
            for _ in 0..1 + r.below(2) {
                mutate_pod(&mut r, &mut c, &tmp, &w.cgroup);
            }
            what = format!("RunPodSandbox (linux: {:?}) {c:?}", c.linux);
            match w.run_pod(&c).await {
                Ok(id) => {
                    w.remove_pod(&id).await;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            let mut c = w.container_config(&format!("c{i}"), "true");
            for _ in 0..1 + r.below(2) {
                mutate_container(&mut r, &mut c, &tmp);
            }
            what = format!("CreateContainer (linux: {:?}) {c:?}", c.linux);
            match w.create(&pod, &config, c).await {
                Ok(id) => {
                    rt.remove_container(cri::RemoveContainerRequest { container_id: id })
                        .await
                        .expect("removing a created container");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        match &outcome {
            Ok(()) => done += 1,
            Err(_) => refused += 1,
        }
        if let Some(e) = outcome.as_ref().err().filter(|_| !answered_well(&outcome)) {
            let cut = |s: &str| s.chars().take(400).collect::<String>();
            bad.push(format!(
                "{}\n  -> {:?}: {}",
                cut(&what),
                e.code(),
                cut(e.message())
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "seed {seed}: {} requests answered INTERNAL or UNKNOWN:\n{}",
        bad.len(),
        bad.join("\n")
    );
    // Both kinds were sent, and crid still serves.
    assert!(
        done > 100 && refused > 500,
        "done {done}, refused {refused}"
    );
    rt.version(cri::VersionRequest::default())
        .await
        .expect("crid still serves");
    let after = left();
    let added: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    let gone: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
    assert!(
        added.is_empty() && gone.is_empty(),
        "seed {seed}: left behind {added:#?}; gone {gone:#?}"
    );
    let end = w.crid.footprint();
    assert!(
        end.1 <= start.1 + 2,
        "seed {seed}: file descriptors went from {} to {}",
        start.1,
        end.1
    );
    assert!(
        end.0 <= start.0 + 32 * 1024,
        "seed {seed}: RSS went from {} KiB to {} KiB",
        start.0,
        end.0
    );
    println!(
        "seed {seed}: {done} done, {refused} refused; RSS {} -> {} KiB, fds {} -> {}",
        start.0, end.0, start.1, end.1
    );
    w.remove_pod(&pod).await;
}
