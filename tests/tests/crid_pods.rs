//! crid's pods and containers through a real CRI client: real runc, ctrmon, overlay
//! rootfs, namespaces, cgroups and CNI plugins.

use e2e::crid::{Network, World};
use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode::{Container as OwnPid, Node, Pod as SharedPid};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn list_pods(state: Option<i32>, app: &str) -> cri::ListPodSandboxRequest {
    cri::ListPodSandboxRequest {
        filter: Some(cri::PodSandboxFilter {
            label_selector: [("app".to_string(), app.to_string())].into(),
            state: state.map(|state| cri::PodSandboxStateValue { state }),
            ..Default::default()
        }),
    }
}

fn list_running(pod: &str) -> cri::ListContainersRequest {
    cri::ListContainersRequest {
        filter: Some(cri::ContainerFilter {
            pod_sandbox_id: pod.into(),
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        }),
    }
}

/// Runs `prog args` on the host; panics with its stderr when it fails.
fn on_host(prog: &str, args: &[&str]) {
    let out = std::process::Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn log_of(w: &World, pod: &str, container: &str) -> PathBuf {
    w.tmp
        .path()
        .join("logs")
        .join(pod)
        .join(format!("{container}.log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_container_lifecycle() {
    let w = World::new(Network::Loopback, &[]).await;
    let mut rt = w.rt.clone();

    // The pod: namespaces pinned, listed, unique by its metadata.
    let config = w.pod_config("web", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let ns_dir = w.crid.run_dir.join("pods").join(&pod).join("ns");
    for kind in ["net", "ipc", "uts"] {
        assert!(ns_dir.join(kind).exists(), "{kind} namespace pinned");
    }
    let again = w.run_pod(&config).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
    let status = w.pod_status(&pod).await;
    assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(status.metadata.unwrap().name, "web");
    let items = rt
        .list_pod_sandbox(list_pods(Some(0), "web"))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].id, pod);
    assert!(rt
        .list_pod_sandbox(list_pods(None, "other"))
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());

    // A container: created, started, logging, in the pod's namespaces.
    let mut cconfig = w.container_config(
        "main",
        "echo hello; hostname; cat /etc/resolv.conf; echo err >&2; grep Seccomp: /proc/self/status; \
         while true; do echo tick; sleep 0.2; done",
    );
    cconfig.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        }),
    });
    let ctr = w.create(&pod, &config, cconfig.clone()).await.unwrap();
    let dup = w.create(&pod, &config, cconfig).await.unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists, "{dup:?}");
    let mut escape = w.container_config("escape", "true");
    escape.log_path = "../../escape.log".into();
    let e = w.create(&pod, &config, escape).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("log path"), "{e:?}");
    let s = w.status(&ctr).await;
    assert_eq!(s.state, cri::ContainerState::ContainerCreated as i32);
    assert_eq!(s.image_id, w.image_id);
    rt.start_container(cri::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap();
    let s = w.status(&ctr).await;
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
    // Run by the runtime under test: its state is in that handler's root.
    let handler_root = match e2e::runc::runtime().as_str() {
        "runc" => w.crid.run_dir.join("runc"),
        other => w.crid.run_dir.join("runtimes").join(other),
    };
    assert!(
        handler_root.join(&ctr).join("state.json").is_file()
            || handler_root.join(&ctr).join("status").is_file(),
        "{} holds no state of {ctr}",
        handler_root.display()
    );
    let log_path = PathBuf::from(&s.log_path);
    assert_eq!(log_path, log_of(&w, "web", "main"));
    let log = w.wait_for_log(&log_path, "stdout F tick").await;
    for want in [
        "stdout F hello",
        "stdout F web-host",
        "stdout F nameserver 10.0.0.10",
        "stdout F search svc.cluster.local",
        "stderr F err",
        // RuntimeDefault: the default profile, in filter mode.
        "stdout F Seccomp:\t2",
    ] {
        assert!(log.contains(want), "{want:?} in {log}");
    }
    let list = rt
        .list_containers(list_running(&pod))
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, ctr);
    assert!(rt
        .list_containers(list_running("nope"))
        .await
        .unwrap()
        .into_inner()
        .containers
        .is_empty());

    // ExecSync: output, exit code, environment; a timeout kills the command.
    let r = w
        .exec(&ctr, &["/bin/sh", "-c", "echo $FOO; echo e >&2; exit 3"], 0)
        .await
        .unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"bar\n"[..], &b"e\n"[..], 3)
    );
    let t0 = Instant::now();
    let e = w.exec(&ctr, &["/bin/sleep", "30"], 1).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(15));

    // ReopenContainerLog after the file was moved away.
    std::fs::rename(&log_path, w.tmp.path().join("main.log.1")).unwrap();
    rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap();
    // Open by the time the call returns, as kubelet's log rotation expects.
    assert!(
        log_path.exists(),
        "no new log once ReopenContainerLog returned"
    );
    w.wait_for_log(&log_path, "stdout F tick").await;

    // The image is in use.
    let spec = || {
        Some(cri::ImageSpec {
            image: w.image.clone(),
            ..Default::default()
        })
    };
    let e = w
        .img
        .clone()
        .remove_image(cri::RemoveImageRequest { image: spec() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

    // Stop: sh as PID 1 ignores SIGTERM, so SIGKILL after the timeout.
    let stop = cri::StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 1,
    };
    let t0 = Instant::now();
    rt.stop_container(stop.clone()).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(1));
    let s = w.status(&ctr).await;
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));
    assert!(s.finished_at >= s.started_at && s.started_at > 0, "{s:?}");
    rt.stop_container(stop)
        .await
        .expect("stopping twice is no error");
    // The exited container's runtime state goes with its exit, as containerd deletes
    // its task then; RemoveContainer has only files left to remove.
    let monitor = crikit::runtime::monitor::StateDir::new(&w.crid.run_dir, &ctr);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !monitor.deleted_file().exists() {
        assert!(Instant::now() < deadline, "ctrmon never deleted {ctr}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !handler_root.join(&ctr).exists(),
        "{} still holds {ctr} after its exit",
        handler_root.display()
    );

    let remove = cri::RemoveContainerRequest {
        container_id: ctr.clone(),
    };
    rt.remove_container(remove.clone()).await.unwrap();
    assert!(
        !monitor.path().exists(),
        "{} left",
        monitor.path().display()
    );
    let e = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: ctr.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    rt.remove_container(remove)
        .await
        .expect("removing twice is no error");

    // Stop and remove the pod; its name is free again.
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    let items = rt
        .list_pod_sandbox(list_pods(Some(1), "web"))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.len(), 1, "not ready after stop");
    assert!(!ns_dir.join("net").exists());
    w.remove_pod(&pod).await;
    w.remove_pod(&pod).await;
    let e = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let again = w.run_pod(&config).await.unwrap();
    w.remove_pod(&again).await;
    // The image is free to go now.
    w.img
        .clone()
        .remove_image(cri::RemoveImageRequest { image: spec() })
        .await
        .unwrap();
}

/// A bridge of a test's own, deleted on drop (CNI's DEL leaves bridges in place).
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .output();
    }
}

/// The nat rules the CNI plugins of network `.0` made (their comments name it), and
/// the chains they jump to, removed on drop: what a DEL that never came (a test that
/// failed halfway) would have removed.
struct NatRules(String);

impl Drop for NatRules {
    fn drop(&mut self) {
        let Ok(out) = std::process::Command::new("iptables")
            .args(["-t", "nat", "-S"])
            .output()
        else {
            return;
        };
        let mark = format!("name: \\\"{}\\\"", self.0);
        let mut chains = vec![];
        for rule in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(spec) = rule.strip_prefix("-A ").filter(|_| rule.contains(&mark)) else {
                continue;
            };
            if let Some(chain) = spec.split_once(" -j CNI-").map(|(_, c)| c) {
                let chain = format!("CNI-{}", chain.split_whitespace().next().unwrap_or(""));
                if !chain.starts_with("CNI-HOSTPORT-") {
                    chains.push(chain);
                }
            }
            // The rule as iptables printed it, quoting and all, deleted.
            let _ = std::process::Command::new("sh")
                .args(["-c", &format!("iptables -t nat -D {spec}")])
                .output();
        }
        for chain in chains {
            for op in ["-F", "-X"] {
                let _ = std::process::Command::new("iptables")
                    .args(["-t", "nat", op, &chain])
                    .output();
            }
        }
    }
}

/// GET `path` from `addr` over plain HTTP/1.0; the response, once it answers 200.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(
                &addr.parse().expect("address"),
                Duration::from_secs(2),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match attempt {
            Ok(body) if body.contains("200") => return body,
            r => assert!(Instant::now() < deadline, "no answer from {addr}: {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_a_cni_bridge_reach_each_other_and_the_host_reaches_them() {
    let w = World::new(Network::None, &[]).await;
    let tag = w.cgroup.trim_start_matches("/crikit-test-").to_string();
    let hex = crikit::distribution::digest::Digest::of(tag.as_bytes())
        .hex()
        .to_string();
    let bridge = Bridge(format!("ckt{}", &hex[..8]));
    // A /24 and a host port that are free now, held for this test.
    let held = e2e::net::Subnet::pick();
    let subnet = held.cidr();
    let host_port = e2e::net::free_port();
    e2e::crid::write_conflist(
        w.tmp.path(),
        "10-bridge",
        &serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("crikit-{tag}"),
            "plugins": [
                {"type": "bridge", "bridge": bridge.0, "isGateway": true, "ipMasq": false,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                          "dataDir": w.tmp.path().join("ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        }),
    );
    let mut rt = w.rt.clone();
    let conds = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let net = conds
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady");
    assert!(net.as_ref().is_some_and(|n| n.status), "{net:?}");

    let mut config_a = w.pod_config("a", OwnPid);
    config_a.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let config_b = w.pod_config("b", OwnPid);
    let pod_a = w.run_pod(&config_a).await.unwrap();
    let pod_b = w.run_pod(&config_b).await.unwrap();
    let status = |pod: String, verbose: bool| {
        let mut rt = rt.clone();
        async move {
            rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod,
                verbose,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let ip_a = status(pod_a.clone(), false)
        .await
        .status
        .unwrap()
        .network
        .unwrap()
        .ip;
    let ip_b = status(pod_b.clone(), false)
        .await
        .status
        .unwrap()
        .network
        .unwrap()
        .ip;
    assert!(
        ip_a.starts_with(&format!("{}.", held.prefix)),
        "{ip_a} in {subnet}"
    );
    assert!(
        ip_b.starts_with(&format!("{}.", held.prefix)) && ip_b != ip_a,
        "{ip_b}"
    );
    w.start(
        &pod_a,
        &config_a,
        w.container_config(
            "web",
            "mkdir -p /tmp/www && echo hello-from-a > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
        ),
    )
    .await;
    let client = w
        .start(
            &pod_b,
            &config_b,
            w.container_config("client", "exec sleep 1000"),
        )
        .await;

    // The host reaches pod A at its IP, and through the mapped port.
    for addr in [
        format!("{ip_a}:8080"),
        format!("{}:{host_port}", held.host(1)),
    ] {
        let body = tokio::task::spawn_blocking(move || http_get(&addr, "/index.html"))
            .await
            .unwrap();
        assert!(body.contains("hello-from-a"), "{body}");
    }
    // Pod B reaches pod A (the image links few applets; busybox's shell runs the others).
    let wget = format!("wget -qO- http://{ip_a}:8080/index.html");
    let r = w
        .exec(&client, &["/bin/sh", "-c", &wget], 10)
        .await
        .unwrap();
    assert_eq!(
        r.stdout,
        b"hello-from-a\n",
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );

    // Pod stats carry the traffic of the pod's interface.
    let ps =
        w.rt.clone()
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: pod_a.clone(),
            })
            .await
            .unwrap()
            .into_inner();
    let net = ps.stats.unwrap().linux.unwrap().network.unwrap();
    let eth0 = net.default_interface.unwrap();
    assert_eq!(eth0.name, "eth0");
    assert!(eth0.rx_bytes.unwrap().value > 0 && eth0.tx_bytes.unwrap().value > 0);
    // And so do its metrics, labelled as the pod's.
    let all = pod_metrics(&w).await;
    let a = all.iter().find(|p| p.pod_sandbox_id == pod_a).unwrap();
    for name in [
        "container_network_receive_bytes_total",
        "container_network_receive_packets_total",
        "container_network_transmit_bytes_total",
        "container_network_transmit_packets_total",
    ] {
        assert!(metric(&a.metrics, name, &["eth0"]).unwrap() > 0, "{name}");
    }
    let m = &a.metrics[0];
    assert_eq!(
        m.label_values[..5],
        [
            pod_a.clone(),
            String::new(),
            "default".into(),
            "a".into(),
            "POD".into()
        ]
    );
    assert!(a.metrics.iter().all(|m| m.label_values[5] != "lo"));

    // A verbose status runs CNI CHECK: fine, then not once eth0 is gone.
    let check = |pod: String| {
        let s = status(pod, true);
        async move {
            s.await
                .info
                .get("networkCheck")
                .cloned()
                .unwrap_or_default()
        }
    };
    assert_eq!(check(pod_b.clone()).await, "ok");
    let netns = w.crid.run_dir.join("pods").join(&pod_b).join("ns/net");
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "link", "del", "eth0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let broken = check(pod_b.clone()).await;
    assert!(broken.starts_with("failed: bridge CHECK"), "{broken}");

    // Stopping a pod gives its address back.
    let leases = w.tmp.path().join("ipam").join(format!("crikit-{tag}"));
    assert!(leases.join(&ip_a).exists());
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_a.clone(),
    })
    .await
    .unwrap();
    assert!(!leases.join(&ip_a).exists(), "DEL released {ip_a}");
    w.remove_pod(&pod_a).await;
    w.remove_pod(&pod_b).await;
    assert!(!leases.join(&ip_b).exists());
}

/// Two containers in a pod of `w` that shares its PID namespace; the pod, the second
/// container, and what it sees: PID 1's command line, then every process's.
async fn shared_pid_pod(w: &World, name: &str) -> (String, String, String) {
    let config = w.pod_config(name, SharedPid);
    let pod = w
        .run_pod(&config)
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
    // "infra" is a name like any other: the infra process holds no container name.
    w.start(
        &pod,
        &config,
        w.container_config("infra", "exec sleep 1000"),
    )
    .await;
    let two = w
        .start(&pod, &config, w.container_config("two", "exec sleep 1001"))
        .await;
    let script = "tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/[0-9]*/cmdline | tr '\\0' ' '";
    let r = w.exec(&two, &["/bin/sh", "-c", script], 10).await.unwrap();
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    assert!(
        out.contains("sleep 1000"),
        "the other container is visible: {out}"
    );
    // The infra process is the pod's, not a container kubelet knows of.
    let list =
        w.rt.clone()
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap();
    assert_eq!(list.into_inner().containers.len(), 2);
    (pod, two, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_pid_namespace_is_held_by_an_infra_process_that_sees_nothing_of_the_host() {
    let w = World::new(Network::Loopback, &[]).await;
    let (pod, two, out) = shared_pid_pod(&w, "shared").await;
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.contains(" --infra ") && first.contains(&format!("--id {pod} ")),
        "PID 1 is crid's infra process: {out}"
    );
    // From the host: PID 1 of the containers' namespace, in the pod's network, IPC
    // and UTS namespaces, with an empty root, no privileges, in the pod's cgroup.
    let info = w.pod_info(&pod).await;
    let infra = info["infra_pid"].as_i64().expect("an infra pid") as i32;
    let status = std::fs::read_to_string(format!("/proc/{infra}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("NSpid").split(' ').nth(1), Some("1"), "{status}");
    assert_eq!(field("Uid"), "65535 65535 65535 65535", "{status}");
    assert_eq!(field("Gid"), "65535 65535 65535 65535", "{status}");
    for caps in ["CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(caps), "0000000000000000", "{caps}: {status}");
    }
    assert_eq!(field("NoNewPrivs"), "1");
    let ns = |pid: &str, kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    let ctr_pid = w.container_pid(&two).await.to_string();
    for kind in ["net", "ipc", "uts", "pid"] {
        assert_eq!(ns(&infra.to_string(), kind), ns(&ctr_pid, kind), "{kind}");
    }
    assert_ne!(ns(&infra.to_string(), "mnt"), ns("self", "mnt"));
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{infra}/root"))
        .unwrap()
        .collect();
    assert!(root.is_empty(), "the infra process's root is empty");
    let mounts = std::fs::read_to_string(format!("/proc/{infra}/mountinfo")).unwrap();
    assert_eq!(mounts.lines().count(), 1, "{mounts}");
    let cgroup = std::fs::read_to_string(format!("/proc/{infra}/cgroup")).unwrap();
    assert!(
        cgroup.contains(&format!("{}/ctrmon-{pod}", w.cgroup)),
        "{cgroup}"
    );
    // The container cannot look through it at the host.
    let r = w
        .exec(
            &two,
            &[
                "/bin/sh",
                "-c",
                "ls /proc/1/root/ 2>&1; cat /proc/1/net/dev",
            ],
            10,
        )
        .await
        .unwrap();
    let seen = String::from_utf8_lossy(&r.stdout);
    assert!(seen.contains("Permission denied"), "{seen}");
    assert!(seen.contains("lo:") && !seen.contains("eth"), "{seen}");

    // It is gone with the pod, and its cgroup with it.
    w.remove_pod(&pod).await;
    assert!(crikit::runtime::monitor::process_state(infra).is_none_or(|(_, s)| s == 'Z'));
    for h in ["memory", "pids", "unified"] {
        let dir = Path::new("/sys/fs/cgroup")
            .join(h)
            .join(w.cgroup.trim_start_matches('/'));
        assert!(
            !dir.join(format!("ctrmon-{pod}")).exists(),
            "{}",
            dir.display()
        );
    }
    let left = std::fs::read_dir(w.crid.root.join("containers"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "the containers are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_infra_process_dies_is_not_ready_and_takes_no_containers() {
    let w = World::new(Network::Loopback, &[]).await;
    let config = w.pod_config("orphaned", SharedPid);
    let pod = w.run_pod(&config).await.unwrap();
    let c = w
        .start(&pod, &config, w.container_config("c", "exec sleep 1002"))
        .await;
    assert_eq!(
        w.pod_status(&pod).await.state,
        cri::PodSandboxState::SandboxReady as i32
    );
    let infra = w.pod_info(&pod).await["infra_pid"].as_i64().unwrap() as i32;
    // As a container's `kill 1` would: pause's way out.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(infra),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    e2e::wait_for("the pod's processes to end", || {
        !e2e::process_runs(b"sleep\x001002\x00")
    });
    e2e::wait_for("the infra process to end", || {
        crikit::runtime::monitor::process_state(infra).is_none_or(|(_, s)| s == 'Z')
    });
    assert_eq!(
        w.pod_status(&pod).await.state,
        cri::PodSandboxState::SandboxNotready as i32
    );
    let e =
        w.rt.clone()
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(w.container_config("late", "sleep 1")),
                sandbox_config: Some(config.clone()),
            })
            .await
            .unwrap_err();
    assert!(
        e.message().contains("infra process is not running"),
        "{e:?}"
    );
    let s = w.status(&c).await;
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_pause_image_the_infra_process_is_a_container_of_it() {
    // The pause image: busybox sleeping; pulled on demand by the first such pod.
    let w = World::with_pause_image(Network::Loopback, &[]).await;
    let (pod, _, out) = shared_pid_pod(&w, "paused").await;
    assert_eq!(out.lines().next(), Some("/bin/sleep 2147483647 "), "{out}");
    assert!(w.pod_info(&pod).await["infra"].is_string());
    w.remove_pod(&pod).await;
    let left = std::fs::read_dir(w.crid.root.join("containers"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "containers and the infra container are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crid_killed_and_restarted_loses_nothing() {
    let mut w = World::new(Network::Loopback, &[]).await;
    let config = w.pod_config("keep", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let long = w
        .start(&pod, &config, w.container_config("long", "exec sleep 1000"))
        .await;
    let short = w
        .start(
            &pod,
            &config,
            w.container_config("short", "sleep 1; exit 4"),
        )
        .await;
    let before = w.status(&long).await;
    assert_eq!(before.state, cri::ContainerState::ContainerRunning as i32);

    // SIGKILL; the short container ends while crid is away.
    w.kill_and_restart(Duration::from_millis(1500)).await;
    let pods =
        w.rt.clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap();
    let pods = pods.into_inner().items;
    assert_eq!((pods.len(), pods[0].id.as_str()), (1, pod.as_str()));
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxReady as i32);
    let after = w.status(&long).await;
    assert_eq!(after.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(after.started_at, before.started_at);
    let s = w.status(&short).await;
    assert_eq!(
        (s.state, s.exit_code),
        (cri::ContainerState::ContainerExited as i32, 4),
        "{s:?}"
    );
    // Names are still taken, and it goes on.
    let dup = w
        .create(&pod, &config, w.container_config("long", "true"))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    let r = w
        .exec(&long, &["/bin/echo", "still here"], 10)
        .await
        .unwrap();
    assert_eq!(r.stdout, b"still here\n");
    // SIGTERM stops crid cleanly and leaves the containers running as well.
    let status = w.crid.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}");
    let pid = before_pid(&w, &long);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container runs on"
    );
    w.restart().await;
    assert_eq!(
        w.status(&long).await.state,
        cri::ContainerState::ContainerRunning as i32
    );

    // A container whose monitor was killed is in an unknown state, and still goes.
    let monitor =
        crikit::runtime::monitor::StateDir::new(&w.crid.run_dir, &long).monitor_pid_file();
    let monitor: i32 = std::fs::read_to_string(monitor)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let sigkill = nix::sys::signal::Signal::SIGKILL;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor), sigkill).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.status(&long).await.state != cri::ContainerState::ContainerUnknown as i32 {
        assert!(Instant::now() < deadline, "{:?}", w.status(&long).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.remove_pod(&pod).await;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("sleep"),
        "the container process is gone"
    );
}

/// The init pid crid recorded for a container.
fn before_pid(w: &World, id: &str) -> i32 {
    let state = w
        .crid
        .root
        .join("containers")
        .join(id)
        .join("container.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    v["pid"].as_i64().unwrap() as i32
}

/// ListPodSandboxMetrics: every pod's metrics.
async fn pod_metrics(w: &World) -> Vec<cri::PodSandboxMetrics> {
    w.rt.clone()
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .into_inner()
        .pod_metrics
}

/// The value of the metric `name` among `metrics`, whose labels after the base
/// ones are `extra`.
fn metric(metrics: &[cri::Metric], name: &str, extra: &[&str]) -> Option<u64> {
    metrics
        .iter()
        .find(|m| m.name == name && m.label_values[5..] == *extra)
        .map(|m| m.value.as_ref().unwrap().value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_metrics_move_when_a_container_burns_cpu_and_allocates_memory() {
    let w = World::new(Network::Loopback, &[]).await;
    let data = w.tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = w.pod_config("metrics", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let mut c = w.container_config(
        "burner",
        "echo ready; while [ ! -e /data/go ]; do sleep 0.05; done; \
         x=$(head -c 48000000 /dev/zero | tr '\\0' a); echo allocated; \
         while [ ! -e /data/stop ]; do :; done; echo done; exec sleep 1000",
    );
    c.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: data.display().to_string(),
        ..Default::default()
    }];
    let id = w.start(&pod, &config, c).await;
    let log = log_of(&w, "metrics", "burner");
    w.wait_for_log(&log, "stdout F ready").await;

    // Every descriptor has the five base label keys; every metric reported is
    // described, with as many label values as its descriptor has keys.
    let descs =
        w.rt.clone()
            .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
            .await
            .unwrap()
            .into_inner()
            .descriptors;
    let keys: std::collections::HashMap<_, _> = descs
        .iter()
        .map(|d| (d.name.clone(), d.label_keys.clone()))
        .collect();
    for d in &descs {
        assert_eq!(
            d.label_keys[..5],
            ["id", "image", "namespace", "pod", "container"]
        );
    }
    let idle = pod_metrics(&w).await;
    assert_eq!(idle.len(), 1);
    assert_eq!(idle[0].pod_sandbox_id, pod);
    assert_eq!(idle[0].container_metrics.len(), 1, "the one container");
    let ctr = &idle[0].container_metrics[0];
    assert_eq!(ctr.container_id, id);
    for m in &ctr.metrics {
        let k = keys
            .get(&m.name)
            .unwrap_or_else(|| panic!("{} is not described", m.name));
        assert_eq!(k.len(), m.label_values.len(), "{m:?}");
        let image = w.image.clone();
        assert_eq!(
            m.label_values[..5],
            [
                id.clone(),
                image,
                "default".into(),
                "metrics".into(),
                "burner".into()
            ],
            "{m:?}"
        );
    }
    let ms = &ctr.metrics;
    let idle_ws = metric(ms, "container_memory_working_set_bytes", &[]).unwrap();
    assert!(metric(ms, "container_processes", &[]).unwrap() >= 1);
    assert!(metric(ms, "container_threads", &[]).unwrap() >= 1);
    assert!(metric(ms, "container_file_descriptors", &[]).unwrap() >= 3);
    assert_eq!(metric(ms, "container_oom_events_total", &[]), Some(0));
    assert!(metric(ms, "container_fs_limit_bytes", &[]).unwrap() > 0);
    let started = metric(ms, "container_start_time_seconds", &[]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(started <= now && now - started < 120, "{started} {now}");
    let idle_cpu = metric(ms, "container_cpu_usage_seconds_total", &["total"]).unwrap();

    // 48 MB held in a shell variable, then a busy loop: both show.
    std::fs::write(data.join("go"), "").unwrap();
    w.wait_for_log(&log, "stdout F allocated").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let busy = loop {
        let now = pod_metrics(&w).await;
        let ms = now[0].container_metrics[0].metrics.clone();
        if metric(&ms, "container_cpu_usage_seconds_total", &["total"]).unwrap() >= idle_cpu + 2 {
            break ms;
        }
        assert!(Instant::now() < deadline, "the CPU use never moved: {ms:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    std::fs::write(data.join("stop"), "").unwrap();
    let ws = metric(&busy, "container_memory_working_set_bytes", &[]).unwrap();
    let rss = metric(&busy, "container_memory_rss", &[]).unwrap();
    assert!(ws >= idle_ws + 40_000_000, "{idle_ws} -> {ws}");
    assert!(rss >= 40_000_000, "{rss}");
    let user = metric(&busy, "container_cpu_user_seconds_total", &[]).unwrap();
    assert!(user >= 1, "{user}");
    w.wait_for_log(&log, "stdout F done").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_config_resources_and_stats() {
    let w = World::new(Network::Loopback, &[]).await;
    let mut rt = w.rt.clone();
    let data = w.tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("hello"), "from the host\n").unwrap();
    let mut config = w.pod_config("cfg", OwnPid);
    if let Some(l) = config.linux.as_mut() {
        l.sysctls = [("kernel.shm_rmid_forced".to_string(), "1".to_string())].into();
    }
    let pod = w.run_pod(&config).await.unwrap();
    let mut c = w.container_config(
        "cfg",
        "id; pwd; cat /proc/sys/kernel/shm_rmid_forced; cat /data/hello; \
         touch /rootfs-write 2>/dev/null || echo read-only-rootfs; \
         grep -E 'CapBnd|NoNewPrivs' /proc/self/status; echo oom $(cat /proc/self/oom_score_adj); \
         echo ready; exec sleep 1000",
    );
    c.working_dir = "/tmp".into();
    c.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: data.display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpu_shares: 512,
            oom_score_adj: -998,
            ..Default::default()
        }),
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            run_as_group: Some(cri::Int64Value { value: 2000 }),
            supplemental_groups: vec![3000],
            readonly_rootfs: true,
            no_new_privs: true,
            capabilities: Some(cri::Capability {
                add_capabilities: vec!["NET_BIND_SERVICE".into()],
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            namespace_options: Some(cri::NamespaceOption {
                pid: OwnPid as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
    });
    let id = w.start(&pod, &config, c).await;
    let log = w
        .wait_for_log(&log_of(&w, "cfg", "cfg"), "stdout F ready")
        .await;
    let own_oom = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", w.crid.pid())).unwrap();
    for want in [
        "uid=1000 gid=2000 groups=2000,3000".to_string(),
        "stdout F /tmp".into(),
        "stdout F 1".into(),
        "from the host".into(),
        "read-only-rootfs".into(),
        "CapBnd:\t0000000000000400".into(),
        "NoNewPrivs:\t1".into(),
        format!("oom {}", own_oom.trim()),
    ] {
        assert!(log.contains(&want), "{want:?} in {log}");
    }

    // Limits in the container's cgroup; updated in place.
    let mem = Path::new("/sys/fs/cgroup/memory")
        .join(w.cgroup.trim_start_matches('/'))
        .join(format!("crikit-{id}"));
    let limit = || std::fs::read_to_string(mem.join("memory.limit_in_bytes")).unwrap();
    assert_eq!(limit().trim(), (64u64 << 20).to_string());
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(limit().trim(), (128u64 << 20).to_string());

    // Stats.
    let s = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await;
    let s = s.unwrap().into_inner().stats.unwrap();
    let ws = s.memory.unwrap().working_set_bytes.unwrap().value;
    assert!(ws > 0 && ws < 128 << 20, "{ws}");
    assert!(s.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert!(s.writable_layer.unwrap().inodes_used.unwrap().value >= 1);
    let list = rt
        .list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
        .await;
    assert_eq!(list.unwrap().into_inner().stats.len(), 1);
    let ps =
        w.rt.clone()
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await;
    let linux = ps.unwrap().into_inner().stats.unwrap().linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    assert!(linux.process.unwrap().process_count.unwrap().value >= 1);
    assert!(linux.memory.unwrap().working_set_bytes.unwrap().value >= ws);
    let all = rt
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default())
        .await;
    assert_eq!(all.unwrap().into_inner().stats.len(), 1);

    // A terminal, and a container the OOM killer ends.
    let mut tty = w.container_config("tty", "[ -t 1 ] && echo on-a-terminal");
    tty.tty = true;
    let tty = w.start(&pod, &config, tty).await;
    let oom = w.start(&pod, &config, w.oom_container_config("oom")).await;
    for (id, reason) in [(&tty, "Completed"), (&oom, "OOMKilled")] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let s = loop {
            let s = w.status(id).await;
            if s.state == cri::ContainerState::ContainerExited as i32 {
                break s;
            }
            assert!(Instant::now() < deadline, "{id} did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(s.reason, reason, "{s:?}");
    }
    let log = std::fs::read_to_string(log_of(&w, "cfg", "tty")).unwrap();
    assert!(log.contains("stdout F on-a-terminal"), "{log}");

    // Options crid cannot honour are refused by name.
    let mut bad = w.container_config("bad", "true");
    bad.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            apparmor: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Localhost as i32,
                localhost_ref: "k8s-x".into(),
            }),
            ..Default::default()
        }),
    });
    let e = w.create(&pod, &config, bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("AppArmor"), "{e:?}");
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_pods_at_once() {
    let w = std::sync::Arc::new(World::new(Network::Loopback, &[]).await);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let w = std::sync::Arc::clone(&w);
            tokio::spawn(async move {
                // Every pod pulls, as kubelet does when they start together.
                let image = Some(cri::ImageSpec {
                    image: w.image.clone(),
                    ..Default::default()
                });
                w.img
                    .clone()
                    .pull_image(cri::PullImageRequest {
                        image,
                        ..Default::default()
                    })
                    .await?;
                let config = w.pod_config(&format!("p{i}"), OwnPid);
                let pod = w.run_pod(&config).await?;
                w.start(&pod, &config, w.container_config("c", "exec sleep 1000"))
                    .await;
                Ok::<_, tonic::Status>(pod)
            })
        })
        .collect();
    let mut pods = vec![];
    for t in tasks {
        pods.push(
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr())),
        );
    }
    pods.sort();
    pods.dedup();
    assert_eq!(pods.len(), 20);
    let running =
        w.rt.clone()
            .list_containers(list_running(""))
            .await
            .unwrap();
    assert_eq!(running.into_inner().containers.len(), 20);
    let teardown: Vec<_> = pods
        .into_iter()
        .map(|pod| {
            let w = std::sync::Arc::clone(&w);
            tokio::spawn(async move { w.remove_pod(&pod).await })
        })
        .collect();
    for t in teardown {
        t.await.unwrap();
    }
    let left =
        w.rt.clone()
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap();
    assert!(left.into_inner().containers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_devices_seccomp_profile_and_mount_propagation() {
    // No CNI config at all: a host-network pod needs none.
    let w = World::new(Network::None, &[]).await;
    let mut config = w.pod_config("hostnet", OwnPid);
    config.hostname = String::new();
    config.dns_config = None;
    if let Some(o) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        o.network = Node as i32;
        o.ipc = Node as i32;
        o.pid = Node as i32;
    }
    let pod = w
        .run_pod(&config)
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
    assert!(!w
        .crid
        .run_dir
        .join("pods")
        .join(&pod)
        .join("ns/net")
        .exists());

    // A shared mount on the host whose later submounts reach the container.
    let prop = w.tmp.path().join("prop");
    std::fs::create_dir_all(prop.join("sub")).unwrap();
    let mount = |args: &[&str]| on_host("mount", args);
    let prop_s = prop.display().to_string();
    mount(&["--bind", &prop_s, &prop_s]);
    mount(&["--make-shared", &prop_s]);
    let profile = w.tmp.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let mut c = w.container_config(
        "c",
        "hostname; echo x > /dev/mynull && echo device-ok; \
         mkdir /tmp/d 2>/dev/null || echo mkdir-denied; \
         echo ipc $(readlink /proc/self/ns/ipc) pid $(readlink /proc/self/ns/pid); \
         echo ready; exec sleep 1000",
    );
    c.devices = vec![cri::Device {
        container_path: "/dev/mynull".into(),
        host_path: "/dev/null".into(),
        permissions: "rwm".into(),
    }];
    c.mounts = vec![cri::Mount {
        container_path: "/prop".into(),
        host_path: prop_s.clone(),
        propagation: cri::MountPropagation::PropagationHostToContainer as i32,
        ..Default::default()
    }];
    c.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Localhost as i32,
                localhost_ref: profile.display().to_string(),
            }),
            ..Default::default()
        }),
    });
    let id = w.start(&pod, &config, c).await;
    let log = w
        .wait_for_log(&log_of(&w, "hostnet", "c"), "stdout F ready")
        .await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let ns = |kind: &str| {
        std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .unwrap()
            .display()
            .to_string()
    };
    for want in [
        format!("stdout F {}", host.trim()),
        "device-ok".into(),
        "mkdir-denied".into(),
        // Host IPC and PID namespaces, as the pod asked.
        format!("ipc {} pid {}", ns("ipc"), ns("pid")),
    ] {
        assert!(log.contains(&want), "{want:?} in {log}");
    }
    // The container shares the host's network: it sees the host's interfaces.
    let r = w
        .exec(&id, &["/bin/cat", "/proc/net/dev"], 10)
        .await
        .unwrap();
    // Less the veths and bridges that tests running beside this one make and remove.
    let names = |t: &str| -> Vec<String> {
        let mut v: Vec<String> = t
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|s| s.trim().to_string())
            .filter(|n| !n.starts_with("veth") && !n.starts_with("ck"))
            .collect();
        v.sort();
        v
    };
    let host_dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert_eq!(names(&String::from_utf8_lossy(&r.stdout)), names(&host_dev));

    // A mount made on the host after the start reaches the container (rslave).
    mount(&[
        "-t",
        "tmpfs",
        "crikit-test",
        &prop.join("sub").display().to_string(),
    ]);
    std::fs::write(prop.join("sub/late"), "x").unwrap();
    let r = w.exec(&id, &["/bin/ls", "/prop/sub"], 10).await.unwrap();
    assert_eq!(
        r.stdout,
        b"late\n",
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );

    // No seccomp field at all: unconfined, as the CRI defines it (issue 11).
    let bare = w.container_config(
        "bare",
        "grep Seccomp: /proc/self/status; echo ready; exec sleep 1000",
    );
    w.start(&pod, &config, bare).await;
    let log = w
        .wait_for_log(&log_of(&w, "hostnet", "bare"), "stdout F ready")
        .await;
    assert!(log.contains("stdout F Seccomp:\t0"), "{log}");

    // Privileged: every capability the runtime holds (this host withholds
    // CAP_SYS_RESOURCE even from root), not a failure to apply them (issue 11).
    let mut privileged = w.container_config(
        "privileged",
        "grep CapEff: /proc/self/status; echo ready; exec sleep 1000",
    );
    privileged.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
    });
    w.start(&pod, &config, privileged).await;
    let log = w
        .wait_for_log(&log_of(&w, "hostnet", "privileged"), "stdout F ready")
        .await;
    let bounding = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        .unwrap();
    assert!(
        log.contains(&format!("stdout F CapEff:\t{bounding}")),
        "{bounding} in {log}"
    );
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supplemental_groups_policy_and_the_user_in_the_status() {
    let w = World::new(Network::Loopback, &[]).await;
    let features =
        w.rt.clone()
            .status(cri::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner()
            .features;
    assert_eq!(
        features.map(|f| f.supplemental_groups_policy),
        Some(true),
        "Status says the policy is supported"
    );
    // An image whose /etc/group lists root in a group of its own: an implicit
    // membership, as the CRI's SupplementalGroupsPolicy is about.
    let groups = e2e::image::Layer::new(
        &[
            e2e::image::Entry::Dir("etc".into(), 0o755),
            e2e::image::Entry::File(
                "etc/group".into(),
                b"root:x:0:\nimplicit:x:50000:root\n".to_vec(),
                0o644,
            ),
        ],
        e2e::image::Compression::Gzip,
    );
    let image = e2e::image::Image::new(vec![
        e2e::image::Layer::busybox(e2e::image::Compression::Gzip),
        groups,
    ]);
    let pushed = e2e::image::push(&w.reg.addr, "cri/groups", "1", &image);
    w.img
        .clone()
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: pushed.reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let config = w.pod_config("groups", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    for (name, policy, want) in [
        // Merge: the requested groups and the image's membership of the user.
        (
            "merge",
            cri::SupplementalGroupsPolicy::Merge,
            vec![3000, 50000, 4000],
        ),
        // Strict: the requested ones only.
        (
            "strict",
            cri::SupplementalGroupsPolicy::Strict,
            vec![3000, 4000],
        ),
    ] {
        let mut c = w.container_config(name, "id -G; echo ready; exec sleep 1000");
        c.image = Some(cri::ImageSpec {
            image: pushed.reference.clone(),
            ..Default::default()
        });
        c.linux = Some(cri::LinuxContainerConfig {
            resources: None,
            security_context: Some(cri::LinuxContainerSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 0 }),
                run_as_group: Some(cri::Int64Value { value: 3000 }),
                supplemental_groups: vec![4000],
                supplemental_groups_policy: policy as i32,
                ..Default::default()
            }),
        });
        let id = w.start(&pod, &config, c).await;
        let log = w
            .wait_for_log(&log_of(&w, "groups", name), "stdout F ready")
            .await;
        let mut sorted = want.clone();
        sorted.sort();
        let line = sorted
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            log.contains(&format!("stdout F {line}\n")),
            "{name}: {line:?} in {log}"
        );
        let user = w.status(&id).await.user.and_then(|u| u.linux);
        assert_eq!(
            user,
            Some(cri::LinuxContainerUser {
                uid: 0,
                gid: 3000,
                supplemental_groups: want,
            }),
            "{name}"
        );
    }
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_read_only_mounts_reach_submounts() {
    let w = World::new(Network::Loopback, &[]).await;
    // A host directory with a tmpfs mounted inside it (TempRoot unmounts it).
    let host = w.tmp.path().join("rro-host");
    std::fs::create_dir_all(host.join("tmpfs")).unwrap();
    let sub = host.join("tmpfs").display().to_string();
    on_host("mount", &["-t", "tmpfs", "rro-test", &sub]);
    let config = w.pod_config("rro", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let mount = |rro: bool, readonly: bool, propagation: cri::MountPropagation| cri::Mount {
        container_path: "/mnt".into(),
        host_path: host.display().to_string(),
        readonly,
        recursive_read_only: rro,
        propagation: propagation as i32,
        ..Default::default()
    };
    let write = "echo x > /mnt/tmpfs/f && echo wrote; echo x > /mnt/top 2>/dev/null || echo top-ro";
    let mut results = vec![];
    for (name, rro) in [("plain", false), ("recursive", true)] {
        let mut c = w.container_config(name, "exec sleep 1000");
        c.mounts = vec![mount(rro, true, cri::MountPropagation::PropagationPrivate)];
        let id = w.start(&pod, &config, c).await;
        let r = w.exec(&id, &["/bin/sh", "-c", write], 10).await.unwrap();
        results.push((
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        ));
        let status = w.status(&id).await;
        assert_eq!(status.mounts[0].recursive_read_only, rro, "{name}");
        // The host keeps no copy of its own once the container has one, and the
        // host path's mountpoints can go while it runs.
        let copies = e2e::mounts_under(&w.crid.run_dir.join("rro"));
        assert_eq!(copies, Vec::<PathBuf>::new(), "{name}");
    }
    // Read-only: the top is; without recursion the tmpfs inside stays writable.
    assert_eq!(results[0].0, "wrote\ntop-ro\n", "{results:?}");
    assert_eq!(results[1].0, "top-ro\n", "{results:?}");
    assert!(
        results[1].1.contains("Read-only file system"),
        "{results:?}"
    );
    // The host path's submount can be taken away while the containers run.
    on_host("umount", &["-l", &sub]);
    std::fs::remove_dir(&sub).expect("no mount of this namespace pins it");
    // What the CRI says cannot go with it.
    for (m, why) in [
        (
            mount(true, false, cri::MountPropagation::PropagationPrivate),
            "needs readonly",
        ),
        (
            mount(
                true,
                true,
                cri::MountPropagation::PropagationHostToContainer,
            ),
            "needs private propagation",
        ),
        (
            mount(true, true, cri::MountPropagation::PropagationBidirectional),
            "needs private propagation",
        ),
    ] {
        let mut c = w.container_config("bad", "true");
        c.mounts = vec![m];
        let e = w.create(&pod, &config, c).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(why), "{e:?}");
    }
    w.remove_pod(&pod).await;
    // The read-only copies went with their container.
    let rro = w.crid.run_dir.join("rro");
    let left = e2e::mounts_under(&rro);
    assert_eq!(
        left,
        Vec::<PathBuf>::new(),
        "no mount left under {}",
        rro.display()
    );
    assert!(std::fs::read_dir(&rro).map(|d| d.count()).unwrap_or(0) == 0);
}

/// A pod's user namespace as kubelet asks for one (`hostUsers: false`).
fn userns_options(host_id: u32, mode: cri::NamespaceMode) -> cri::UserNamespace {
    let map = vec![cri::IdMapping {
        host_id,
        container_id: 0,
        length: 65536,
    }];
    cri::UserNamespace {
        mode: mode as i32,
        uids: map.clone(),
        gids: map,
    }
}

fn with_userns(mut config: cri::PodSandboxConfig, u: cri::UserNamespace) -> cri::PodSandboxConfig {
    if let Some(o) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        o.userns_options = Some(u);
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_in_a_user_namespace_owns_its_rootfs_and_the_layers_stay_the_hosts() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // The pod shares its PID namespace: its infra process runs in the namespace too.
    let w = World::new(Network::Loopback, &[]).await;
    // Clear of the host's own IDs and of other tests' pods.
    let host_id = 1_000_000 + (std::process::id() % 1000) * 65536;
    let base = w.pod_config("userns", SharedPid);

    // Refused, naming why: another mode, two ranges, a range not from 0, the host's
    // network beside it.
    let mut two = userns_options(host_id, cri::NamespaceMode::Pod);
    two.uids.push(two.uids[0]);
    let mut from_one = userns_options(host_id, cri::NamespaceMode::Pod);
    from_one.gids[0].container_id = 1;
    let mut host_net = with_userns(
        base.clone(),
        userns_options(host_id, cri::NamespaceMode::Pod),
    );
    if let Some(o) = host_net
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        o.network = Node as i32;
    }
    for (config, want) in [
        (
            with_userns(
                base.clone(),
                userns_options(host_id, cri::NamespaceMode::Target),
            ),
            "mode TARGET",
        ),
        (with_userns(base.clone(), two), "2 uid mappings"),
        (with_userns(base.clone(), from_one), "container ID 1, not 0"),
        (host_net, "host's network"),
    ] {
        let e = w.run_pod(&config).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(want), "{want:?} in {e:?}");
    }

    // A private directory above crid's root: the namespace's root could not reach
    // the rootfs, and crid says so before making anything.
    std::fs::set_permissions(w.tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = with_userns(
        base.clone(),
        userns_options(host_id, cri::NamespaceMode::Pod),
    );
    let e = w.run_pod(&config).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains(&w.tmp.path().display().to_string())
            && e.message().contains("not searchable"),
        "{e:?}"
    );
    std::fs::set_permissions(w.tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();

    let pod = w
        .run_pod(&config)
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
    let status = w.pod_status(&pod).await;
    let reported = status
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .and_then(|o| o.userns_options)
        .unwrap();
    assert_eq!(reported, userns_options(host_id, cri::NamespaceMode::Pod));

    // A volume as kubelet gives one to such a pod: ID-mapped like the namespace.
    let vol = w.tmp.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("config"), "from the host\n").unwrap();
    std::fs::set_permissions(vol.join("config"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let idmapped_mount = |path: &str| cri::Mount {
        container_path: path.into(),
        host_path: vol.display().to_string(),
        uid_mappings: userns_options(host_id, cri::NamespaceMode::Pod).uids,
        gid_mappings: userns_options(host_id, cri::NamespaceMode::Pod).gids,
        ..Default::default()
    };
    let mut cconfig = w.container_config(
        "main",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; stat -c '%u:%g' /bin/busybox /etc; \
         echo made > /etc/made-here && stat -c '%u:%g' /etc/made-here; \
         stat -c '%u:%g' /vol/config; cat /vol/config; echo back > /vol/written; \
         echo more >> /etc/passwd && echo appended; sleep 100",
    );
    cconfig.mounts = vec![idmapped_mount("/vol")];
    cconfig.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                userns_options: Some(userns_options(host_id, cri::NamespaceMode::Pod)),
                ..Default::default()
            }),
            ..Default::default()
        }),
    });
    // A container asking for another user namespace than its pod's is refused.
    let mut other = cconfig.clone();
    other.metadata.as_mut().unwrap().name = "other".into();
    if let Some(o) = other
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        o.userns_options = Some(userns_options(host_id + 65536, cri::NamespaceMode::Pod));
    }
    let e = w.create(&pod, &config, other).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // So is a mount mapped otherwise than the namespace.
    let mut other_map = cconfig.clone();
    other_map.metadata.as_mut().unwrap().name = "other-map".into();
    other_map.mounts[0].uid_mappings[0].host_id += 1;
    let e = w.create(&pod, &config, other_map).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("mount /vol"), "{e:?}");

    let ctr = w.start(&pod, &config, cconfig).await;
    let log = w
        .wait_for_log(&log_of(&w, "userns", "main"), "appended")
        .await;
    let out: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(" stdout F ").map(|(_, t)| t))
        .collect();
    let map = format!("0 {host_id} 65536");
    let squeeze = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(squeeze(out[0]), map, "{log}");
    assert_eq!(squeeze(out[1]), map, "{log}");
    // Root inside, and the image's files its own: the layers are ID-mapped.
    assert_eq!(&out[2..6], ["0", "0:0", "0:0", "0:0"], "{log}");
    // The volume's root-owned, private file is the namespace root's own, and what it
    // writes there is the host's root's.
    assert_eq!(&out[6..8], ["0:0", "from the host"], "{log}");
    let written = std::fs::metadata(vol.join("written")).unwrap();
    assert_eq!((written.uid(), written.gid()), (0, 0));

    // On the host: what it made belongs to the namespace's root; the shared layer
    // cache still belongs to the host's root.
    let upper = w
        .crid
        .root
        .join("containers")
        .join(&ctr)
        .join("bundle")
        .join("upper");
    let made = std::fs::metadata(upper.join("etc/made-here")).unwrap();
    assert_eq!((made.uid(), made.gid()), (host_id, host_id));
    let passwd = std::fs::metadata(upper.join("etc/passwd")).unwrap();
    assert_eq!(passwd.uid(), host_id, "copied up as the namespace's root");
    let mut layer_files = 0;
    for e in std::fs::read_dir(w.crid.root.join("layers"))
        .unwrap()
        .flatten()
    {
        let busybox = e.path().join("diff/bin/busybox");
        if let Ok(m) = std::fs::metadata(&busybox) {
            assert_eq!((m.uid(), m.gid()), (0, 0), "{}", busybox.display());
            layer_files += 1;
        }
    }
    assert_eq!(layer_files, 1, "one cached layer holds busybox");
    // No ID-mapped copy of a layer outlives the making of the rootfs.
    let idmapped: Vec<_> = e2e::mounts_under(&w.crid.root)
        .into_iter()
        .filter(|m| m.to_string_lossy().contains("idmapped"))
        .collect();
    assert!(idmapped.is_empty(), "{idmapped:?}");

    // Exec joins the same namespace.
    let r = w
        .exec(&ctr, &["/bin/cat", "/proc/self/uid_map"], 10)
        .await
        .unwrap();
    assert_eq!(squeeze(&String::from_utf8_lossy(&r.stdout)), map);

    w.remove_pod(&pod).await;
    let ns_dir = w.crid.run_dir.join("pods").join(&pod).join("ns");
    assert!(!ns_dir.exists(), "the pinned namespaces went with the pod");
    assert!(
        e2e::mounts_under(w.tmp.path()).is_empty(),
        "{:?}",
        e2e::mounts_under(w.tmp.path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_cut_short_is_removed_at_start_without_reaching_through_its_mounts() {
    let mut w = World::new(Network::Loopback, &[]).await;
    let config = w.pod_config("cut", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    // A container, so that the image's layer is in the shared cache.
    w.start(&pod, &config, w.container_config("c", "sleep 100"))
        .await;
    let layer = std::fs::read_dir(w.crid.root.join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("diff"))
        .find(|d| d.join("bin/busybox").exists())
        .expect("the cached busybox layer");
    w.crid.stop_with(nix::sys::signal::Signal::SIGKILL);

    // What a crid killed while making a user-namespaced bundle leaves: a container
    // directory without its state file, a temp bundle holding a copy of a shared
    // layer mounted, and the rootfs overlay on top of it.
    let half = w.crid.root.join("containers").join("f".repeat(64));
    let tmp = half.join(".bundle.tmp-cut");
    let copy = tmp.join("idmapped/0");
    for d in [
        &copy,
        &tmp.join("rootfs"),
        &tmp.join("upper"),
        &tmp.join("work"),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    on_host(
        "mount",
        &[
            "--bind",
            &layer.display().to_string(),
            &copy.display().to_string(),
        ],
    );
    on_host(
        "mount",
        &[
            "-t",
            "overlay",
            "overlay",
            "-o",
            &format!(
                "lowerdir={},upperdir={},workdir={}",
                copy.display(),
                tmp.join("upper").display(),
                tmp.join("work").display()
            ),
            &tmp.join("rootfs").display().to_string(),
        ],
    );

    w.restart().await;
    assert!(!half.exists(), "the half-made container is gone");
    assert!(e2e::mounts_under(&half).is_empty());
    assert!(
        layer.join("bin/busybox").is_file(),
        "the shared layer lost files through the mount: {}",
        w.crid.stderr()
    );
    // And the image still runs.
    w.start(&pod, &config, w.container_config("after", "sleep 100"))
        .await;
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_container_in_a_shared_pid_namespace_leaves_nothing_running() {
    let w = World::new(Network::Loopback, &[]).await;
    // crictl's bare pod: one PID namespace for the pod. The shell ends on SIGTERM;
    // the sleep it started would live on in the pod's namespace, holding stdout.
    let config = w.pod_config("shared-stop", SharedPid);
    let pod = w.run_pod(&config).await.unwrap();
    let ctr = w
        .start(
            &pod,
            &config,
            w.container_config("c", "trap 'exit 0' TERM; sleep 3579 & wait"),
        )
        .await;
    e2e::wait_for("the sleep", || e2e::process_runs(b"sleep\x003579\x00"));
    let mut rt = w.rt.clone();
    rt.stop_container(cri::StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 10,
    })
    .await
    .unwrap();
    let s = w.status(&ctr).await;
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 0, "{s:?}");
    // Once StopContainer has answered, nothing of the container runs.
    assert!(
        !e2e::process_runs(b"sleep\x003579\x00"),
        "the sleep outlived its container"
    );
    w.remove_pod(&pod).await;
}

/// What is left on the host of the pods a crid under `w` made: mounts, network
/// namespaces and other pins, veths on `bridge`, leases in `ipam`, iptables rules of
/// the network `net`, cgroups below the test's parent, ctrmon processes, runtime
/// state, and directories of pods and containers. Empty when nothing is.
fn leftovers(w: &World, bridge: &str, ipam: &Path, net: &str) -> Vec<String> {
    let mut out: Vec<String> = e2e::mounts_under(w.tmp.path())
        .iter()
        .map(|m| format!("mount {}", m.display()))
        .collect();
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.extend(links.lines().map(|l| format!("veth {l}")));
    for e in std::fs::read_dir(ipam.join(net))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "lock" && !name.starts_with("last_reserved_ip") {
            out.push(format!("lease {name}"));
        }
    }
    let nat = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.extend(
        nat.lines()
            .filter(|l| l.contains(net))
            .map(|l| format!("iptables {l}")),
    );
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for h in crikit::runtime::monitor::cgroup::hierarchies(&info) {
        let top = h.mount.join(w.cgroup.trim_start_matches('/'));
        for e in std::fs::read_dir(&top).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(format!("cgroup {}", e.path().display()));
            }
        }
    }
    if e2e::process_runs(w.crid.run_dir.as_os_str().as_encoded_bytes()) {
        out.push(format!(
            "a process whose command line names {}",
            w.crid.run_dir.display()
        ));
    }
    for dir in [
        w.crid.root.join("pods"),
        w.crid.root.join("containers"),
        w.crid.run_dir.join("pods"),
        w.crid.run_dir.join("ctrmon"),
        w.crid.run_dir.join("rro"),
        w.crid.run_dir.join("runc"),
        w.crid.run_dir.join("runtimes/crun"),
    ] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            out.push(format!("left in {}: {:?}", dir.display(), e.file_name()));
        }
    }
    for e in std::fs::read_dir(w.crid.root.join("layers"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            out.push(format!("half-unpacked layer {:?}", e.file_name()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crid_killed_at_any_moment_of_a_burst_of_creates_leaves_nothing_once_its_pods_go() {
    let mut w = World::new(Network::None, &[]).await;
    let tag = w.cgroup.trim_start_matches("/crikit-test-").to_string();
    let hex = crikit::distribution::digest::Digest::of(tag.as_bytes())
        .hex()
        .to_string();
    let bridge = Bridge(format!("ckc{}", &hex[..8]));
    let held = e2e::net::Subnet::pick();
    let net = format!("crikit-crash-{}", &hex[..8]);
    let _nat = NatRules(net.clone());
    let ipam = w.tmp.path().join("ipam");
    // As kubelet's nodes have it: masquerading and hairpin, so that an ADD cut short
    // leaves iptables rules as well as a lease and a veth.
    e2e::crid::write_conflist(
        w.tmp.path(),
        "10-bridge",
        &serde_json::json!({
            "cniVersion": "1.0.0",
            "name": net,
            "plugins": [
                {"type": "bridge", "bridge": bridge.0, "isGateway": true, "ipMasq": true,
                 "hairpinMode": true,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": held.cidr()}]],
                          "dataDir": ipam}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "loopback"},
            ],
        }),
    );
    // Kill moments from before the first RPC lands to after the last create.
    let mut half_made = 0;
    for (round, delay_ms) in [0u64, 15, 40, 80, 140, 220, 350, 600, 1000, 1600]
        .into_iter()
        .enumerate()
    {
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..12 {
            // Half crictl's bare pods (an infra process), half kubelet's.
            let pid = if i % 2 == 0 { SharedPid } else { OwnPid };
            let config = w.pod_config(&format!("burst-{round}-{i}"), pid);
            let ctr = w.container_config("c", "exec sleep 1000");
            let mut rt = w.rt.clone();
            burst.spawn(async move {
                let pod = rt
                    .run_pod_sandbox(cri::RunPodSandboxRequest {
                        config: Some(config.clone()),
                        runtime_handler: String::new(),
                    })
                    .await?
                    .into_inner()
                    .pod_sandbox_id;
                rt.create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(ctr),
                    sandbox_config: Some(config),
                })
                .await
                .map(drop)
            });
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        w.kill_and_restart(Duration::ZERO).await;
        // The calls in flight fail with the connection; none may hang.
        while let Some(r) = tokio::time::timeout(Duration::from_secs(30), burst.join_next())
            .await
            .expect("a call to the killed crid ended")
        {
            // Done or failed with the connection, either is fine.
            let _ = r.expect("the call's task");
        }
        let mut rt = w.rt.clone();
        let pods = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
        for p in &pods {
            // As `crictl rmp -fa` does it.
            rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: p.id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("stopping {}: {e:?}: {}", p.id, w.crid.stderr()));
            w.remove_pod(&p.id).await;
        }
        let half = w
            .crid
            .stderr()
            .matches("whose creation did not finish")
            .count();
        eprintln!(
            "killed {delay_ms} ms into the burst: {} pods, {half} half-made containers",
            pods.len()
        );
        half_made += half;
        let left = leftovers(&w, &bridge.0, &ipam, &net);
        assert!(
            left.is_empty(),
            "killed {delay_ms} ms into the burst, {} pods found after the restart; left: \
             {left:#?}\n{}",
            pods.len(),
            w.crid.stderr()
        );
    }
    assert!(half_made > 0, "no kill fell in the middle of a create");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_events_follow_each_container_from_creation_to_removal() {
    use futures_util::StreamExt;
    use std::collections::HashMap;
    use tokio::time::timeout;
    let w = World::new(Network::Loopback, &[]).await;
    let subscribe = || async {
        w.rt.clone()
            .get_container_events(cri::GetEventsRequest {})
            .await
            .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()))
            .into_inner()
    };
    let mut first = subscribe().await;
    let mut second = subscribe().await;
    let config = w.pod_config("events", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let long = w
        .start(&pod, &config, w.container_config("long", "exec sleep 1005"))
        .await;
    let short = w
        .start(
            &pod,
            &config,
            w.container_config("short", "sleep 1; exit 3"),
        )
        .await;
    // The short one ends by itself; the long one is stopped; both are removed.
    let mut seen: HashMap<String, Vec<i32>> = HashMap::new();
    let mut stopped_short = None;
    let mut all = vec![];
    while seen.values().map(Vec::len).sum::<usize>() < 8 {
        let n = seen.values().map(Vec::len).sum::<usize>();
        if n == 5 {
            // Created ×2, started ×2, the short one's stop: now the long one.
            w.rt.clone()
                .stop_container(cri::StopContainerRequest {
                    container_id: long.clone(),
                    timeout: 0,
                })
                .await
                .unwrap();
        }
        if n == 6 {
            w.remove_pod(&pod).await;
        }
        let e = timeout(Duration::from_secs(10), first.next())
            .await
            .unwrap_or_else(|_| panic!("no event after {seen:?}"))
            .expect("the stream goes on")
            .unwrap();
        if e.container_id == short
            && e.container_event_type == cri::ContainerEventType::ContainerStoppedEvent as i32
        {
            stopped_short = Some(e.clone());
        }
        seen.entry(e.container_id.clone())
            .or_default()
            .push(e.container_event_type);
        all.push(e);
    }
    use cri::ContainerEventType::*;
    let life = vec![
        ContainerCreatedEvent as i32,
        ContainerStartedEvent as i32,
        ContainerStoppedEvent as i32,
        ContainerDeletedEvent as i32,
    ];
    assert_eq!(seen[&long], life);
    assert_eq!(seen[&short], life);
    // Each event carries the pod's status and its containers' as they were.
    let e = stopped_short.expect("the short one's stop");
    assert_eq!(
        e.pod_sandbox_status.as_ref().map(|p| p.id.as_str()),
        Some(pod.as_str())
    );
    let s = e
        .containers_statuses
        .iter()
        .find(|s| s.id == short)
        .expect("its status");
    assert_eq!(
        (s.state, s.exit_code),
        (cri::ContainerState::ContainerExited as i32, 3)
    );
    let deleted = all.last().unwrap();
    assert!(deleted.containers_statuses.is_empty(), "{deleted:?}");
    // Every subscriber gets every event, in the same order.
    for want in &all {
        let got = timeout(Duration::from_secs(5), second.next())
            .await
            .expect("the second subscriber's event")
            .unwrap()
            .unwrap();
        assert_eq!(
            (&got.container_id, got.container_event_type),
            (&want.container_id, want.container_event_type)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_subscriber_that_stops_reading_is_dropped_and_can_subscribe_again() {
    use futures_util::StreamExt;
    use tokio::time::timeout;
    let w = World::new(Network::Loopback, &["--events-backlog", "2"]).await;
    // A window of 16 bytes: crid can send it no more than the start of one event
    // until it reads, so its queue of 2 fills at the fourth event or so.
    let stalled_rt = w.crid.runtime_with_window(16).await;
    let subscribe = |mut rt: cri::runtime_service_client::RuntimeServiceClient<_>| async move {
        rt.get_container_events(cri::GetEventsRequest {})
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
            .into_inner()
    };
    let mut stalled = subscribe(stalled_rt.clone()).await;
    let mut reader = subscribe(w.rt.clone()).await;
    let config = w.pod_config("laggard", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    for name in ["a", "b", "c"] {
        w.start(&pod, &config, w.container_config(name, "exec sleep 1006"))
            .await;
    }
    w.remove_pod(&pod).await;
    // The reader gets all 12 (created, started, stopped, deleted of three).
    let mut seen = vec![];
    while seen.len() < 12 {
        let e = timeout(Duration::from_secs(10), reader.next())
            .await
            .unwrap_or_else(|_| panic!("no event after {} {}", seen.len(), w.crid.stderr()))
            .expect("the reader's stream goes on")
            .unwrap_or_else(|e| panic!("the reader is not dropped: {e}"));
        seen.push((e.container_id, e.container_event_type));
    }
    e2e::wait_for("crid's log of the drop", || {
        w.crid
            .stderr()
            .contains("a subscriber fell 2 events behind and is dropped")
    });
    // The stalled one, reading at last: what crid had queued for it, in order, then
    // why it was dropped.
    let mut got = vec![];
    let why = loop {
        match timeout(Duration::from_secs(10), stalled.next())
            .await
            .expect("the stalled stream ends")
        {
            Some(Ok(e)) => got.push((e.container_id, e.container_event_type)),
            Some(Err(status)) => break status,
            None => panic!("it ended without a reason after {got:?}"),
        }
    };
    assert_eq!(why.code(), tonic::Code::ResourceExhausted, "{why}");
    assert!(why.message().contains("list the containers again"), "{why}");
    assert!(
        !got.is_empty() && got.len() < seen.len() && seen.starts_with(&got),
        "the stalled one got {got:?} of {seen:?}"
    );
    assert!(timeout(Duration::from_secs(5), stalled.next())
        .await
        .expect("the end")
        .is_none());
    // Subscribed again, it sees every change from then on.
    let mut again = subscribe(stalled_rt.clone()).await;
    let pod = w.run_pod(&config).await.unwrap();
    let id = w
        .start(&pod, &config, w.container_config("d", "exec sleep 1007"))
        .await;
    use cri::ContainerEventType::*;
    for want in [ContainerCreatedEvent, ContainerStartedEvent] {
        let e = timeout(Duration::from_secs(10), again.next())
            .await
            .expect("an event")
            .expect("the stream goes on")
            .unwrap();
        assert_eq!(
            (&e.container_id, e.container_event_type),
            (&id, want as i32)
        );
    }
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_file_gets_each_event_as_a_json_line_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("events.jsonl");
    let feed_arg = feed.display().to_string();
    let w = World::new(
        Network::Loopback,
        &["--events-file", &feed_arg, "--events-file-max", "1000"],
    )
    .await;
    let config = w.pod_config("feed", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let ctr = w
        .start(&pod, &config, w.container_config("c", "sleep 1; exit 7"))
        .await;
    let lines = || -> Vec<serde_json::Value> {
        let mut rotated = feed.clone().into_os_string();
        rotated.push(".1");
        [PathBuf::from(rotated), feed.clone()]
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    e2e::wait_for("the stop in the feed", || lines().len() >= 3);
    w.remove_pod(&pod).await;
    e2e::wait_for("the removal in the feed", || lines().len() >= 4);
    let seen = lines();
    let kinds: Vec<&str> = seen.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "CONTAINER_CREATED",
            "CONTAINER_STARTED",
            "CONTAINER_STOPPED",
            "CONTAINER_DELETED"
        ]
    );
    for l in &seen {
        assert_eq!(l["version"], 1, "{l}");
        assert_eq!(l["container_id"], ctr.as_str());
        assert_eq!(
            (l["pod_id"].as_str(), l["pod_name"].as_str()),
            (Some(pod.as_str()), Some("feed"))
        );
        assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
    }
    assert_eq!(seen[2]["exit_code"], 7, "{}", seen[2]);
    assert_eq!(seen[2]["state"], "CONTAINER_EXITED");
    assert_eq!(seen[0]["container_name"], "c");
    // 1000 bytes hold two lines at most: the feed has rotated, each file within bounds.
    let mut rotated = feed.clone().into_os_string();
    rotated.push(".1");
    for p in [PathBuf::from(rotated), feed.clone()] {
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len > 0 && len <= 1000, "{}: {len}", p.display());
    }
}

/// Whether containers can be checkpointed and restored here: `criu check` passes and
/// the runtime under test has `checkpoint` (crun built without CRIU has not).
fn checkpoints_work() -> bool {
    if !e2e::skip::require("criu", criu_runs(), "`criu check` fails") {
        return false;
    }
    let rt = e2e::runc::runtime();
    if !runtime_checkpoints() {
        e2e::skip::skipped(&format!("{rt} has no checkpoint command"));
        return false;
    }
    true
}

fn criu_runs() -> bool {
    e2e::skip::runs("criu", &["check"])
}

fn runtime_checkpoints() -> bool {
    e2e::skip::runs(&e2e::runc::runtime(), &["checkpoint", "--help"])
}

/// A tar archive at `path` holding `files` (name, body).
fn write_tar(path: &Path, files: &[(&str, &str)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, body.as_bytes()).unwrap();
    }
    b.finish().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_container_dumps_with_criu_or_says_why_it_cannot() {
    let w = World::new(Network::Loopback, &[]).await;
    let mut rt = w.rt.clone();
    let config = w.pod_config("ckpt", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let id = w
        .start(
            &pod,
            &config,
            w.container_config("c", "echo changed > /made; echo ready; exec sleep 1000"),
        )
        .await;
    w.wait_for_log(&log_of(&w, "ckpt", "c"), "stdout F ready")
        .await;
    let archive = w.tmp.path().join("ckpt.tar");
    let checkpoint = |container_id: String, location: String| {
        let mut rt = rt.clone();
        async move {
            rt.checkpoint_container(cri::CheckpointContainerRequest {
                container_id,
                location,
                timeout: 60,
            })
            .await
        }
    };
    let got = checkpoint(id.clone(), archive.display().to_string()).await;
    if criu_runs() && runtime_checkpoints() {
        got.unwrap_or_else(|e| panic!("{e:?}"));
        let mut a = tar::Archive::new(std::fs::File::open(&archive).unwrap());
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        for want in [
            "config.dump",
            "spec.dump",
            "rootfs-diff.tar",
            "deleted.files",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(
            names.iter().any(|n| n.starts_with("checkpoint/")),
            "{names:?}"
        );
    } else {
        // CRIU cannot run on this machine, or the runtime has no checkpoint: the
        // call says so, and why, and leaves nothing behind.
        let e = got.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains("CRIU cannot run here: criu")
                || e.message().contains("has no checkpoint command"),
            "{e:?}"
        );
        assert!(e.message().contains(&id), "{e:?}");
        assert!(!archive.exists());
        let dir = w.crid.root.join("containers").join(&id);
        let tmp: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".checkpoint"))
            .collect();
        assert!(tmp.is_empty(), "{tmp:?}");
    }
    // Either way the container runs on.
    assert_eq!(
        w.status(&id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );

    // Bad requests.
    let e = checkpoint(id.clone(), "relative.tar".into())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("not an absolute path"), "{e:?}");
    let e = checkpoint("nope".into(), archive.display().to_string())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let ended = w
        .start(&pod, &config, w.container_config("ended", "exit 0"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.status(&ended).await.state != cri::ContainerState::ContainerExited as i32 {
        assert!(Instant::now() < deadline, "the container never exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = checkpoint(ended, archive.display().to_string())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

    // A restore: CreateContainer whose image is a checkpoint archive.
    let create = |image: &Path, name: &str| {
        let mut c = w.container_config(name, "true");
        c.image = Some(cri::ImageSpec {
            image: image.display().to_string(),
            ..Default::default()
        });
        let mut rt = rt.clone();
        let (pod, config) = (pod.clone(), config.clone());
        async move {
            rt.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod,
                config: Some(c),
                sandbox_config: Some(config),
            })
            .await
        }
    };
    let not_tar = w.tmp.path().join("not-a.tar");
    std::fs::write(&not_tar, "x".repeat(2000)).unwrap();
    let e = create(&not_tar, "r1").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let other = w.tmp.path().join("other.tar");
    write_tar(&other, &[("config.dump", "{}")]);
    let e = create(&other, "r2").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains("not a checkpoint archive (no spec.dump)"),
        "{e:?}"
    );
    let restore = w.tmp.path().join("restore.tar");
    write_tar(&restore, &[("config.dump", "{}"), ("spec.dump", "{}")]);
    // Its members are there, but empty: no CRIU images, no image named.
    let e = create(&restore, "r3").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("without CRIU's images"), "{e:?}");
    let listed = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        listed.len(),
        2,
        "no restored container was made: {listed:?}"
    );
}

/// The ticks a container logged, in order.
fn ticks(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split_once(" F tick ")?.1.trim().parse().ok())
        .collect()
}

/// CheckpointContainer of `id` to `archive`, which must succeed.
async fn checkpoint_to(w: &World, id: &str, archive: &Path) {
    w.rt.clone()
        .checkpoint_container(cri::CheckpointContainerRequest {
            container_id: id.into(),
            location: archive.display().to_string(),
            timeout: 60,
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
}

/// The ticks a restored counter logs at `log`, once there are three, checked to go
/// on from where the checkpoint (after `before`) caught it rather than from 1.
async fn ticks_go_on(log: &Path, before: &[u64]) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let t = ticks(&std::fs::read_to_string(log).unwrap_or_default());
        if t.len() >= 3 {
            break t;
        }
        assert!(Instant::now() < deadline, "no ticks in {}", log.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(after[0] > 5, "restarted, not restored: {after:?}");
    assert!(
        after[0] <= before.last().copied().unwrap_or(0) + 2,
        "{before:?} then {after:?}"
    );
    after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointed_container_is_restored_in_a_new_pod_where_it_left_off() {
    if !checkpoints_work() {
        // checkpoint_container_dumps_with_criu_or_says_why_it_cannot checks the error.
        return;
    }
    let w = World::new(Network::Loopback, &[]).await;
    // A PID namespace of its own, as kubelet asks by default, and the pod's.
    for (mode, kind) in [(OwnPid, "own"), (SharedPid, "shared")] {
        restore_in_a_new_pod(&w, mode, kind).await;
    }
}

async fn restore_in_a_new_pod(w: &World, mode: cri::NamespaceMode, kind: &str) {
    let mut rt = w.rt.clone();
    let (origin, restored_pod) = (format!("origin-{kind}"), format!("restored-{kind}"));
    let config = w.pod_config(&origin, mode);
    let pod = w.run_pod(&config).await.unwrap();
    // A counter in the shell's memory, a file made and one of the image's removed.
    let script = "echo changed > /made; rm /etc/group; i=0; \
                  while true; do i=$((i+1)); echo tick $i; sleep 0.1; done";
    // A volume, recursive read-only: crid's own bind copy, which the runtime needs
    // at the restore too.
    let vol = w.tmp.path().join(format!("vol-{kind}"));
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("f"), "volume\n").unwrap();
    let mounts = vec![cri::Mount {
        container_path: "/vol".into(),
        host_path: vol.display().to_string(),
        readonly: true,
        recursive_read_only: true,
        propagation: cri::MountPropagation::PropagationPrivate as i32,
        ..Default::default()
    }];
    let mut c = w.container_config("counter", script);
    c.mounts = mounts.clone();
    let id = w.start(&pod, &config, c).await;
    w.wait_for_log(&log_of(w, &origin, "counter"), "stdout F tick 5")
        .await;
    let archive = w.tmp.path().join(format!("counter-{kind}.tar"));
    checkpoint_to(w, &id, &archive).await;
    let before = ticks(&std::fs::read_to_string(log_of(w, &origin, "counter")).unwrap());
    let image_ref = w.status(&id).await.image_ref;
    w.remove_pod(&pod).await;

    // In a new pod: no command given, the image is the archive.
    let config = w.pod_config(&restored_pod, mode);
    let pod = w.run_pod(&config).await.unwrap();
    let mut c = w.container_config("counter", "");
    c.command.clear();
    c.envs.clear();
    // kubelet gives the restored pod the same volumes.
    c.mounts = mounts;
    c.image = Some(cri::ImageSpec {
        image: archive.display().to_string(),
        ..Default::default()
    });
    // One made and removed unstarted leaves nothing.
    let mut unstarted = c.clone();
    unstarted.metadata = Some(cri::ContainerMetadata {
        name: "unstarted".into(),
        attempt: 0,
    });
    let u = w
        .create(&pod, &config, unstarted)
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: u.clone(),
    })
    .await
    .unwrap();
    assert!(!w.crid.root.join("containers").join(&u).exists());
    let restored = w
        .create(&pod, &config, c)
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
    let status = w.status(&restored).await;
    assert_eq!(status.state, cri::ContainerState::ContainerCreated as i32);
    // The image the checkpointed container ran.
    assert_eq!(status.image_ref, image_ref);
    rt.start_container(cri::StartContainerRequest {
        container_id: restored.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
    assert_eq!(
        w.status(&restored).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    // CRIU's images went once used.
    let dir = w.crid.root.join("containers").join(&restored);
    assert!(dir.join("restore").is_dir() && !dir.join("restore/checkpoint").exists());
    // The counter goes on from where the checkpoint caught it, into the new log.
    let log = log_of(w, &restored_pod, "counter");
    let after = ticks_go_on(&log, &before).await;
    assert!(after.windows(2).all(|p| p[1] == p[0] + 1), "{after:?}");
    // Its rootfs changes came along: the file it made, the one it removed.
    let r = w.exec(&restored, &["cat", "/made"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "changed\n");
    let r = w.exec(&restored, &["cat", "/etc/group"], 10).await.unwrap();
    assert_ne!(r.exit_code, 0, "/etc/group came back");
    // The volume is there, read-only.
    let r = w
        .exec(
            &restored,
            &["/bin/sh", "-c", "cat /vol/f; echo x > /vol/g || echo ro"],
            10,
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "volume\nro\n");
    // Its environment is the checkpointed process's.
    let r = w.exec(&restored, &["env"], 10).await.unwrap();
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("FOO=bar"),
        "{:?}",
        String::from_utf8_lossy(&r.stdout)
    );
    // It stops and goes like any other.
    rt.stop_container(cri::StopContainerRequest {
        container_id: restored.clone(),
        timeout: 5,
    })
    .await
    .unwrap();
    assert_eq!(
        w.status(&restored).await.state,
        cri::ContainerState::ContainerExited as i32
    );
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointed_terminal_container_is_restored_with_a_terminal() {
    if !checkpoints_work() {
        return;
    }
    let w = World::new(Network::Loopback, &[]).await;
    let mut rt = w.rt.clone();
    let config = w.pod_config("tty-origin", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let script = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done";
    let mut c = w.container_config("counter", script);
    c.tty = true;
    c.stdin = true;
    let id = w.start(&pod, &config, c.clone()).await;
    let log = log_of(&w, "tty-origin", "counter");
    w.wait_for_log(&log, "stdout F tick 5").await;
    let archive = w.tmp.path().join("tty.tar");
    checkpoint_to(&w, &id, &archive).await;
    let before = ticks(&std::fs::read_to_string(&log).unwrap());
    w.remove_pod(&pod).await;

    let config = w.pod_config("tty-restored", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    c.command.clear();
    c.image = Some(cri::ImageSpec {
        image: archive.display().to_string(),
        ..Default::default()
    });
    let restored = w
        .create(&pod, &config, c)
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
    rt.start_container(cri::StartContainerRequest {
        container_id: restored.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
    // The counter goes on, its output through a new terminal into the new log.
    let log = log_of(&w, "tty-restored", "counter");
    ticks_go_on(&log, &before).await;
    // Its standard streams are a terminal's.
    let r = w
        .exec(&restored, &["ls", "-l", "/proc/1/fd/0", "/proc/1/fd/1"], 10)
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        out.lines().count() == 2 && out.lines().all(|l| l.contains(" -> /dev/pts/")),
        "{out:?}"
    );
    w.remove_pod(&pod).await;
}

/// The checkpoint archive at `archive` as a checkpoint image (its one layer, gzip'd,
/// and checkpointctl's annotation), pushed to `reg` as `repo:1`; its reference.
fn push_checkpoint_image(reg: &str, repo: &str, archive: &Path) -> String {
    use std::io::Write;
    let tar = std::fs::read(archive).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": e2e::image::host_arch(),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [e2e::sha256(&tar)]},
    }))
    .unwrap();
    let desc = |mt: &str, data: &[u8]| serde_json::json!({"mediaType": mt, "digest": e2e::sha256(data), "size": data.len()});
    e2e::image::push_blob(reg, repo, &config);
    e2e::image::push_blob(reg, repo, &layer);
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": desc("application/vnd.oci.image.config.v1+json", &config),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", &layer)],
        "annotations": {"org.criu.checkpoint.container.name": "counter"},
    }))
    .unwrap();
    e2e::image::push_manifest(reg, repo, "1", mt, &manifest);
    format!("{reg}/{repo}:1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_is_restored_from_a_checkpoint_image_pulled_from_a_registry() {
    if !checkpoints_work() {
        return;
    }
    let w = World::new(Network::Loopback, &[]).await;
    let mut rt = w.rt.clone();
    let config = w.pod_config("image-origin", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let script =
        "echo changed > /made; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done";
    let id = w
        .start(&pod, &config, w.container_config("counter", script))
        .await;
    let log = log_of(&w, "image-origin", "counter");
    w.wait_for_log(&log, "stdout F tick 5").await;
    let archive = w.tmp.path().join("counter.tar");
    checkpoint_to(&w, &id, &archive).await;
    let before = ticks(&std::fs::read_to_string(&log).unwrap());
    let image_ref = w.status(&id).await.image_ref;
    w.remove_pod(&pod).await;

    // As kubelet restores: the checkpoint image pulled, then named in the config.
    let image = push_checkpoint_image(&w.reg.addr, "ckpt/counter", &archive);
    let mut img = w.img.clone();
    let pulled = img
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()))
        .into_inner()
        .image_ref;
    let config = w.pod_config("image-restored", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let mut c = w.container_config("counter", "");
    c.command.clear();
    c.envs.clear();
    c.image = Some(cri::ImageSpec {
        image: pulled,
        user_specified_image: image,
        ..Default::default()
    });
    let restored = w
        .create(&pod, &config, c)
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
    // Made from the image the checkpointed container ran.
    assert_eq!(w.status(&restored).await.image_ref, image_ref);
    rt.start_container(cri::StartContainerRequest {
        container_id: restored.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
    let log = log_of(&w, "image-restored", "counter");
    ticks_go_on(&log, &before).await;
    let r = w.exec(&restored, &["cat", "/made"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "changed\n");

    // An image marked as a checkpoint that holds none is refused, and says why.
    let bogus = w.tmp.path().join("bogus.tar");
    write_tar(&bogus, &[("hello", "not a checkpoint\n")]);
    let image = push_checkpoint_image(&w.reg.addr, "ckpt/bogus", &bogus);
    img.pull_image(cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut c = w.container_config("bogus", "");
    c.image = Some(cri::ImageSpec {
        image: image.clone(),
        ..Default::default()
    });
    let e = w.create(&pod, &config, c).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains(&format!("checkpoint image {image}"))
            && e.message()
                .contains("not a checkpoint archive (no config.dump)"),
        "{e:?}"
    );
    w.remove_pod(&pod).await;
}
