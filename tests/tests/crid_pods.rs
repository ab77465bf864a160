//! crid's pods and containers through a real CRI client, from creation to removal:
//! real runc or crun, ctrmon, overlay rootfs, namespaces, cgroups and CNI plugins;
//! pods on a bridge, shared PID namespaces and their infra process, many pods at once.

use e2e::crid::{Network, World};
use e2e::pods::*;
use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode::{Container as OwnPid, Pod as SharedPid};
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
    assert!(e.message().starts_with("config.log_path"), "{e:?}");
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
    let r = w.exec(&ctr, &["/bin/ps", "-o", "args"], 10).await.unwrap();
    let ps = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        !ps.contains("sleep 30"),
        "the timed-out command lives on: {ps}"
    );
    // Killed by a signal: 128+N, as a shell says.
    let r = w
        .exec(&ctr, &["/bin/sh", "-c", "kill -9 $$"], 10)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 137);
    // What the command leaves running, holding its output, does not hold the
    // answer beyond a short drain, under either runtime.
    let t0 = Instant::now();
    let r = w
        .exec(&ctr, &["/bin/sh", "-c", "sleep 20 & echo started"], 0)
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert_eq!((r.exit_code, r.stdout.as_slice()), (0, &b"started\n"[..]));
    // Each exec's process file, pid file and runtime log are gone.
    let dir = w.crid.run_dir.join("ctrmon").join(&ctr);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("exec-"))
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", dir.display());

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
    let e = w.try_status(&ctr).await.unwrap_err();
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
    let e = w.try_pod_status(&pod).await.unwrap_err();
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
    let bridge = BridgeNet::write(&w, "ckt", false);
    let held = &bridge.subnet;
    let host_port = e2e::net::free_port();
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
        "{ip_a} in {}",
        held.cidr()
    );
    assert!(
        ip_b.starts_with(&format!("{}.", held.prefix)) && ip_b != ip_a,
        "{ip_b}"
    );
    let web = w.run_sh(&pod_a, &config_a, "web", "mkdir -p /tmp/www && echo hello-from-a > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www").await;
    let client = w
        .run_sh(&pod_b, &config_b, "client", "exec sleep 1000")
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
    let eth0 = || {
        let mut rt = w.rt.clone();
        let pod_sandbox_id = pod_a.clone();
        async move {
            let ps = rt
                .pod_sandbox_stats(cri::PodSandboxStatsRequest { pod_sandbox_id })
                .await
                .unwrap()
                .into_inner();
            let net = ps.stats.unwrap().linux.unwrap().network.unwrap();
            let eth0 = net.default_interface.unwrap();
            assert_eq!(eth0.name, "eth0");
            (eth0.rx_bytes.unwrap().value, eth0.tx_bytes.unwrap().value)
        }
    };
    let (rx, tx) = eth0().await;
    assert!(rx > 0 && tx > 0);
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
    // With no process left in the pod (its own PID namespace, no infra process),
    // its interfaces are still read, in its network namespace.
    w.rt.clone()
        .stop_container(cri::StopContainerRequest {
            container_id: web,
            timeout: 0,
        })
        .await
        .unwrap();
    let (rx_after, tx_after) = eth0().await;
    assert!(rx_after >= rx && tx_after >= tx, "{rx_after} {tx_after}");
    let all = pod_metrics(&w).await;
    let a = all.iter().find(|p| p.pod_sandbox_id == pod_a).unwrap();
    assert!(
        metric(
            &a.metrics,
            "container_network_receive_bytes_total",
            &["eth0"]
        )
        .unwrap()
            > 0
    );

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
    let leases = w.tmp.path().join("ipam").join(&bridge.name);
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
    w.run_sh(&pod, &config, "infra", "exec sleep 1000").await;
    let two = w.run_sh(&pod, &config, "two", "exec sleep 1001").await;
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
    let c = w.run_sh(&pod, &config, "c", "exec sleep 1002").await;
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
                w.run_sh(&pod, &config, "c", "exec sleep 1000").await;
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
async fn a_stopped_container_in_a_shared_pid_namespace_leaves_nothing_running() {
    let w = World::new(Network::Loopback, &[]).await;
    // crictl's bare pod: one PID namespace for the pod. The shell ends on SIGTERM;
    // the sleep it started would live on in the pod's namespace, holding stdout.
    let config = w.pod_config("shared-stop", SharedPid);
    let pod = w.run_pod(&config).await.unwrap();
    let ctr = w
        .run_sh(&pod, &config, "c", "trap 'exit 0' TERM; sleep 3579 & wait")
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

/// A CNI plugin whose DEL marks `DIR/del-started`, counts itself in `DIR/dels` and
/// waits (30 s at most) for `DIR/del-go`: a network that takes its time to go.
fn gated_del_plugin(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "#!/bin/sh\n\
         cat >/dev/null\n\
         case \"$CNI_COMMAND\" in\n\
         VERSION) echo '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\"]}}' ;;\n\
         ADD) echo '{{\"cniVersion\":\"1.0.0\"}}' ;;\n\
         DEL) echo del >> {d}/dels; touch {d}/del-started; i=0\n\
              while [ ! -e {d}/del-go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done ;;\n\
         esac\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_network_is_going_is_listed_not_ready_meanwhile_and_torn_down_once() {
    let mut w = World::new(Network::None, &[]).await;
    let gate = w.tmp.path().join("gate");
    let bin = w.tmp.path().join("cni-bin");
    std::fs::create_dir_all(&gate).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let plugin = bin.join("gated");
    std::fs::write(&plugin, gated_del_plugin(&gate)).unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    e2e::crid::write_conflist(
        w.tmp.path(),
        "10-gated",
        &serde_json::json!({"cniVersion": "1.0.0", "name": "gated",
            "plugins": [{"type": "gated"}, {"type": "loopback"}]}),
    );
    w.crid.stop_with(nix::sys::signal::Signal::SIGTERM);
    let bins = format!("{}:/usr/lib/cni", bin.display());
    let reg = w.reg.addr.clone();
    w.restart_with(&["--insecure-registry", &reg, "--cni-bin-dir", &bins])
        .await;

    let config = w.pod_config("gated", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let c = w.run_sh(&pod, &config, "c", "exec sleep 1003").await;
    let stop = |w: &World| {
        let mut rt = w.rt.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await
        })
    };
    let first = stop(&w);
    e2e::wait_for("the network's DEL to begin", || {
        gate.join("del-started").exists()
    });
    let second = stop(&w);
    // While DEL runs, the pod answers status and list calls, as not ready, and its
    // container as exited: kubelet's relist does not wait for a network to go.
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        (w.pods().await, w.pod_status(&pod).await, w.status(&c).await)
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no answer while the pod's network goes: {}",
            w.crid.stderr()
        )
    });
    let (pods, status, container) = answered;
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxNotready as i32);
    assert_eq!(status.state, cri::PodSandboxState::SandboxNotready as i32);
    assert_eq!(container.state, cri::ContainerState::ContainerExited as i32);
    assert!(!first.is_finished(), "the stop waits for its DEL");
    std::fs::write(gate.join("del-go"), "").unwrap();
    for s in [first, second] {
        s.await
            .unwrap()
            .unwrap_or_else(|e| panic!("stopping the pod: {e:?}: {}", w.crid.stderr()));
    }
    // The second stop waited for the first, and found the network gone.
    let dels = std::fs::read_to_string(gate.join("dels")).unwrap();
    assert_eq!(dels.lines().count(), 1, "DEL ran once: {dels:?}");
    let info = w.pod_info(&pod).await;
    assert!(info["network"].is_null(), "{info}");
    w.remove_pod(&pod).await;
    assert!(w.pods().await.is_empty());
}

/// Makes its file when dropped.
struct OpensOnDrop(PathBuf);

impl Drop for OpensOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

/// An OCI runtime that is the one under test, except that its `start` waits until
/// the file `go` appears in `gate` (having made `start-began` there).
fn gated_start_runtime(gate: &Path) -> String {
    let g = gate.display();
    format!(
        "#!/bin/sh\n\
         for a in \"$@\"; do\n\
           if [ \"$a\" = start ]; then\n\
             : >{g}/start-began\n\
             while [ ! -e {g}/go ]; do sleep 0.05; done\n\
           fi\n\
         done\n\
         exec {} \"$@\"\n",
        e2e::runc::runtime()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_being_started_is_listed_meanwhile_and_started_once() {
    let tmp = e2e::TempRoot::new();
    let gate = tmp.path().join("gate");
    std::fs::create_dir_all(&gate).unwrap();
    let runtime = tmp.path().join("gated-runtime");
    std::fs::write(&runtime, gated_start_runtime(&gate)).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let conf = tmp.path().join("crid.toml");
    std::fs::write(
        &conf,
        format!(
            "[runtimes.gated]\npath = {:?}\nroot = {:?}\n",
            runtime.display().to_string(),
            tmp.path().join("gated-root").display().to_string()
        ),
    )
    .unwrap();
    let conf = conf.display().to_string();
    let w = World::new(Network::Loopback, &["--config", &conf]).await;
    // Dropped before the world, whatever fails: no start is left waiting.
    let _opens = OpensOnDrop(gate.join("go"));
    let config = w.pod_config("gated-start", OwnPid);
    let pod =
        w.rt.clone()
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: "gated".into(),
            })
            .await
            .unwrap_or_else(|e| panic!("running the pod: {e:?}: {}", w.crid.stderr()))
            .into_inner()
            .pod_sandbox_id;
    let c = w
        .create(&pod, &config, w.container_config("c", "exec sleep 1004"))
        .await
        .unwrap_or_else(|e| panic!("creating the container: {e:?}: {}", w.crid.stderr()));
    let start = |w: &World| {
        let mut rt = w.rt.clone();
        let c = c.clone();
        tokio::spawn(async move {
            rt.start_container(cri::StartContainerRequest { container_id: c })
                .await
        })
    };
    let first = start(&w);
    // Waited for without blocking a worker: the start's task may sit in this one's
    // queue.
    let began = tokio::time::timeout(Duration::from_secs(30), async {
        while !gate.join("start-began").exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    if began.await.is_err() {
        panic!("the runtime's start never began: {}", w.crid.stderr());
    }
    let second = start(&w);
    // While the runtime starts it, the container answers list and status calls, as
    // created: kubelet's relist does not wait for a start.
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        (w.containers().await, w.status(&c).await)
    })
    .await
    .unwrap_or_else(|_| panic!("no answer while the container starts: {}", w.crid.stderr()));
    let (listed, status) = answered;
    assert_eq!(
        listed,
        vec![(c.clone(), cri::ContainerState::ContainerCreated as i32)]
    );
    assert_eq!(status.state, cri::ContainerState::ContainerCreated as i32);
    assert!(!first.is_finished(), "the start waits for its runtime");
    assert!(
        !second.is_finished(),
        "the second start waits for the first"
    );
    std::fs::write(gate.join("go"), "").unwrap();
    first
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("starting the container: {e:?}: {}", w.crid.stderr()));
    // The second found it started: one start, and a clear refusal.
    let e = second.await.unwrap().unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not in the created state"), "{e:?}");
    assert_eq!(
        w.status(&c).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    w.remove_pod(&pod).await;
    assert!(w.containers().await.is_empty());
}
