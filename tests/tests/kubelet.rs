//! A real kubelet (standalone, static pods) driving crid: what kubelet does that
//! crictl and critest do not. Runs when kubelet is on PATH (or KUBELET); says so
//! when it is not.

use e2e::crid::{Network, World};
use e2e::kubelet::{container_status, find_container, Kubelet};
use e2e::pods::BridgeNet;
use serde_json::json;
use std::time::Duration;

const READY: Duration = Duration::from_secs(90);

/// The manifest of the static pod `name` in namespace default, with `spec`.
fn static_pod(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid")},
        "spec": spec
    })
}

/// A pod of an init container that writes into an emptyDir and an app container
/// that serves what it wrote, Ready through an exec readiness probe that reads it.
fn init_and_app(w: &World, name: &str) -> serde_json::Value {
    static_pod(
        name,
        json!({
            "volumes": [{"name": "data", "emptyDir": {}}],
            "initContainers": [{
                "name": "init",
                "image": w.image,
                "command": ["/bin/sh", "-c", "echo written-by-init > /data/ready"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }],
            "containers": [{
                "name": "app",
                "image": w.image,
                "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "readinessProbe": {
                    "exec": {"command": ["/bin/sh", "-c", "grep -q written-by-init /data/ready"]},
                    "periodSeconds": 1
                }
            }],
            "terminationGracePeriodSeconds": 5
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_container_prepares_an_empty_dir_and_a_removed_pod_is_cleaned_up() {
    let Some(bin) = Kubelet::find() else { return };
    let w = World::new(Network::Loopback, &[]).await;
    let k = Kubelet::start(&bin, w.tmp.path(), &w.crid.socket);
    k.add_pod("web", &init_and_app(&w, "web"));
    let pod = k.wait_ready("web", READY);
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(
        init["state"]["terminated"]["exitCode"],
        0,
        "{pod}\n{}",
        k.log_tail()
    );
    let app = container_status(&pod, "app");
    assert_eq!(app["ready"], true, "{pod}");
    assert_eq!(app["restartCount"], 0, "{pod}");
    assert!(app["state"]["running"].is_object(), "{pod}");
    // crid holds the one pod.
    let pods = w.pods().await;
    assert_eq!(pods.len(), 1, "{pods:?}");

    // The manifest goes: kubelet stops the pod and removes it, and crid is empty.
    k.remove_pod("web");
    k.wait_for(READY, "pod web gone", |k| k.pod("web").is_none());
    let t0 = std::time::Instant::now();
    loop {
        let left = w.pods().await;
        if left.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < READY,
            "kubelet left pods in crid: {left:?}\n{}",
            k.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_no_errors_but(&k, &[]);
}

/// Fails the test with them if kubelet logged errors other than those it logs
/// whatever the runtime and those the test provokes (`expected`).
fn assert_no_errors_but(k: &Kubelet, expected: &[&str]) {
    let errors = unexplained(&k.errors(), expected);
    assert!(
        errors.is_empty(),
        "kubelet logged errors:\n{}",
        errors.join("\n")
    );
}

/// kubelet's error lines less those it logs whatever the runtime, each for the
/// reason given, and those the test provokes (`expected`).
fn unexplained(errors: &[String], expected: &[&str]) -> Vec<String> {
    const ANY_RUNTIME: &[&str] = &[
        // This machine's kernel refuses both.
        "Failed to set rlimit on max file handles",
        "Failed to ensure process in container with oom score",
        // The first seconds, before the first relist and the first runtime status.
        "PLEG is not healthy: pleg has yet to be successful",
        "container runtime status check may not have completed yet",
        // kubelet's cAdvisor names the image filesystem only for containerd's and
        // CRI-O's default sockets.
        "no imagefs label for configured runtime",
        // kubelet's cAdvisor reads every host interface at start; other tests'
        // bridges and veths come and go meanwhile.
        "Failed to get network devices",
        // kubelet's cAdvisor asked for a new container's stats before its first
        // housekeeping of the cgroup; the bench's containerd runs log it as well.
        "RecentStats: unable to find data in memory cache",
    ];
    errors
        .iter()
        .filter(|e| {
            !ANY_RUNTIME
                .iter()
                .chain(expected)
                .any(|known| e.contains(known))
        })
        // kubelet's container deletor removes a dead container twice and logs the
        // second status lookup's NotFound.
        .filter(|e| {
            !(e.contains("ContainerStatus from runtime service failed")
                && e.contains("code = NotFound"))
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_kubelet_adopts_the_running_pod_as_it_is() {
    let Some(bin) = Kubelet::find() else { return };
    let w = World::new(Network::Loopback, &[]).await;
    let mut k = Kubelet::start(&bin, w.tmp.path(), &w.crid.socket);
    k.add_pod("keep", &init_and_app(&w, "keep"));
    let before = k.wait_ready("keep", READY);
    let id = container_status(&before, "app")["containerID"].clone();
    let containers = w.containers().await;
    k.restart();
    // Ready again (its probe reads what the init container wrote: the emptyDir is
    // intact), the same container, no restart, the init container not run again.
    let after = k.wait_ready("keep", READY);
    let app = container_status(&after, "app");
    assert_eq!(app["containerID"], id, "{after}\n{}", k.log_tail());
    assert_eq!(app["restartCount"], 0, "{after}");
    assert_eq!(w.containers().await, containers);
    assert_no_errors_but(&k, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_liveness_probe_restarts_and_a_crashing_container_backs_off() {
    let Some(bin) = Kubelet::find() else { return };
    let w = World::new(Network::Loopback, &[]).await;
    let k = Kubelet::start(&bin, w.tmp.path(), &w.crid.socket);
    k.add_pod(
        "flaky",
        &static_pod(
            "flaky",
            json!({
                "containers": [
                    {
                        "name": "crash",
                        "image": w.image,
                        "command": ["/bin/sh", "-c", "echo going down; exit 3"]
                    },
                    {
                        "name": "live",
                        "image": w.image,
                        "command": ["/bin/sh", "-c",
                                    "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 3600"],
                        "livenessProbe": {
                            "exec": {"command": ["/bin/sh", "-c", "test -f /tmp/alive"]},
                            "periodSeconds": 1,
                            "failureThreshold": 1
                        }
                    }
                ],
                "terminationGracePeriodSeconds": 1
            }),
        ),
    );
    let pod = k.wait_pod(
        "flaky",
        READY,
        "restarted twice (crash) and once (live)",
        |p| {
            let count = |name: &str| {
                find_container(p, name)
                    .and_then(|c| c["restartCount"].as_u64())
                    .unwrap_or(0)
            };
            count("crash") >= 2 && count("live") >= 1
        },
    );
    let crash = container_status(&pod, "crash");
    assert_eq!(crash["lastState"]["terminated"]["exitCode"], 3, "{pod}");
    let live = container_status(&pod, "live");
    assert!(live["lastState"]["terminated"].is_object(), "{pod}");
    // Between its attempts the crashing one waits, backing off.
    let backing_off = k.wait_pod("flaky", READY, "backing off crash", |p| {
        find_container(p, "crash")
            .is_some_and(|c| c["state"]["waiting"]["reason"] == "CrashLoopBackOff")
    });
    assert!(!e2e::kubelet::is_ready(&backing_off));
    // kubelet says so each time it holds the crashing container back.
    assert_no_errors_but(&k, &["with CrashLoopBackOff"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crid_killed_under_a_running_kubelet_restarts_no_container() {
    let Some(bin) = Kubelet::find() else { return };
    let mut w = World::new(Network::Loopback, &[]).await;
    let k = Kubelet::start(&bin, w.tmp.path(), &w.crid.socket);
    k.add_pod("steady", &init_and_app(&w, "steady"));
    let before = k.wait_ready("steady", READY);
    let id = container_status(&before, "app")["containerID"].clone();
    let containers = w.containers().await;
    // kubelet relists every second: it sees crid gone for a few of them.
    w.kill_and_restart(Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = k.wait_ready("steady", READY);
    let app = container_status(&after, "app");
    assert_eq!(app["containerID"], id, "{after}\n{}", k.log_tail());
    assert_eq!(app["restartCount"], 0, "{after}");
    assert_eq!(w.containers().await, containers);
    // What kubelet logs while the runtime is away, with any runtime.
    assert_no_errors_but(
        &k,
        &[
            "connect: connection refused",
            "connect: no such file or directory",
            "PLEG is not healthy",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_tcp_probes_reach_the_pod_over_its_network() {
    let Some(bin) = Kubelet::find() else { return };
    let w = World::new(Network::None, &[]).await;
    let net = BridgeNet::write(&w, "ckk", false);
    // What the containers serve, and whether the TCP one listens, from the host.
    let www = w.tmp.path().join("www");
    let ctl = w.tmp.path().join("ctl");
    for (dir, file) in [(&www, "ready"), (&www, "alive"), (&ctl, "listen")] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), "ok\n").unwrap();
    }
    let k = Kubelet::start(&bin, w.tmp.path(), &w.crid.socket);
    let http = |path: &str| json!({"httpGet": {"path": path, "port": 8080}, "periodSeconds": 1, "failureThreshold": 1});
    k.add_pod(
        "probed",
        &static_pod(
            "probed",
            json!({
                "volumes": [
                    {"name": "www", "hostPath": {"path": www}},
                    {"name": "ctl", "hostPath": {"path": ctl}}
                ],
                "containers": [
                    {
                        "name": "web",
                        "image": w.image,
                        "command": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
                        "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                        "readinessProbe": http("/ready"),
                        "livenessProbe": http("/alive")
                    },
                    {
                        "name": "tcp",
                        "image": w.image,
                        "command": ["/bin/sh", "-c",
                            "nc -ll -p 9090 -e /bin/true & \
                             while [ -e /ctl/listen ]; do sleep 0.2; done; \
                             kill $!; exec sleep 3600"],
                        "volumeMounts": [{"name": "ctl", "mountPath": "/ctl"}],
                        "readinessProbe": {"tcpSocket": {"port": 9090}, "periodSeconds": 1},
                        "livenessProbe": {"tcpSocket": {"port": 9090}, "periodSeconds": 1,
                                          "failureThreshold": 1}
                    }
                ],
                "terminationGracePeriodSeconds": 1
            }),
        ),
    );
    let pod = k.wait_ready("probed", READY);
    let ip = pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(ip.starts_with(&format!("{}.", net.subnet.prefix)), "{pod}");
    let ready = |p: &serde_json::Value, name: &str| {
        find_container(p, name).is_some_and(|c| c["ready"] == true)
    };
    let restarts = |p: &serde_json::Value, name: &str| {
        find_container(p, name)
            .and_then(|c| c["restartCount"].as_u64())
            .unwrap_or(0)
    };

    // An HTTP readiness probe that answers 404 takes the pod out of Ready without a
    // restart; answering again brings it back.
    std::fs::remove_file(www.join("ready")).unwrap();
    k.wait_pod("probed", READY, "unready (web)", |p| {
        !ready(p, "web") && ready(p, "tcp")
    });
    std::fs::write(www.join("ready"), "ok\n").unwrap();
    let back = k.wait_ready("probed", READY);
    assert_eq!(restarts(&back, "web"), 0, "{back}");

    // A failing HTTP liveness probe restarts the container.
    std::fs::remove_file(www.join("alive")).unwrap();
    k.wait_pod("probed", READY, "web restarted", |p| {
        restarts(p, "web") >= 1
    });
    std::fs::write(www.join("alive"), "ok\n").unwrap();

    // A port that stops listening: the TCP probes see it, and liveness restarts it.
    std::fs::remove_file(ctl.join("listen")).unwrap();
    k.wait_pod("probed", READY, "tcp restarted", |p| {
        restarts(p, "tcp") >= 1
    });
    std::fs::write(ctl.join("listen"), "ok\n").unwrap();
    let pod = k.wait_ready("probed", READY);
    assert_eq!(pod["status"]["podIP"], ip.as_str(), "same sandbox: {pod}");

    // Probe failures are logged at info level; kubelet's back-off of a container
    // that failed its liveness probe twice is the only error expected.
    assert_no_errors_but(&k, &["with CrashLoopBackOff"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_api_and_resource_metrics_cover_every_pod_from_crid() {
    let Some(bin) = Kubelet::find() else { return };
    let w = World::new(Network::None, &[]).await;
    let _net = BridgeNet::write(&w, "cks", false);
    let mut k = Kubelet::start(&bin, w.tmp.path(), &w.crid.socket);
    let pods = ["busy-a", "busy-b"];
    for name in pods {
        k.add_pod(
            name,
            &static_pod(
                name,
                json!({
                    "containers": [{
                        "name": "app",
                        "image": w.image,
                        // CPU, 8 MB in its rootfs, log lines, and packets out of
                        // eth0 (to the bridge's address, which answers).
                        "command": ["/bin/sh", "-c",
                            "head -c 8000000 /dev/zero > /big; \
                             gw=$(ip route | awk '/default/ {print $3}'); \
                             while true; do echo tick; ping -c 1 -W 1 $gw >/dev/null; \
                             i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; done"]
                    }],
                    "terminationGracePeriodSeconds": 1
                }),
            ),
        );
    }
    for name in pods {
        k.wait_ready(name, READY);
    }
    let node = k.node.clone();
    let ours = |p: &serde_json::Value| {
        let name = p["podRef"]["name"].as_str().unwrap_or_default();
        pods.iter().any(|n| name == format!("{n}-{node}"))
    };
    // Every pod with its container's CPU (a rate needs two samples), memory, rootfs
    // (8 MB written) and logs, and, when `network`, eth0's counters.
    let complete = |s: &serde_json::Value, network: bool| {
        let listed = s["pods"].as_array().into_iter().flatten();
        listed.clone().filter(|p| ours(p)).count() == pods.len()
            && listed.filter(|p| ours(p)).all(|p| {
                let c = &p["containers"][0];
                let at = |v: &serde_json::Value, path: &str| {
                    path.split('.').fold(v, |v, k| &v[k]).as_u64().unwrap_or(0)
                };
                at(c, "cpu.usageNanoCores") > 0
                    && at(c, "cpu.usageCoreNanoSeconds") > 0
                    && at(c, "memory.workingSetBytes") > 0
                    && at(c, "rootfs.usedBytes") >= 8_000_000
                    && at(c, "logs.usedBytes") > 0
                    && at(p, "cpu.usageCoreNanoSeconds") >= at(c, "cpu.usageCoreNanoSeconds")
                    && at(p, "memory.workingSetBytes") > 0
                    && at(p, "ephemeral-storage.usedBytes") >= 8_000_000
                    && (!network
                        || p["network"]["interfaces"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|i| {
                                i["name"] == "eth0" && at(i, "rxBytes") > 0 && at(i, "txBytes") > 0
                            }))
            })
    };
    // /metrics/resource: the same pods and, when `containers`, their containers.
    let resource_metrics = |k: &Kubelet, containers: bool| {
        let text = k.get_text("/metrics/resource");
        let mut wanted = vec![
            "pod_cpu_usage_seconds_total{",
            "pod_memory_working_set_bytes{",
        ];
        if containers {
            wanted.extend([
                "container_cpu_usage_seconds_total{",
                "container_memory_working_set_bytes{",
            ]);
        }
        for name in pods {
            let pod = format!("pod=\"{name}-{}\"", k.node);
            for metric in &wanted {
                let line = text
                    .lines()
                    .find(|l| l.starts_with(metric) && l.contains(&pod))
                    .unwrap_or_else(|| panic!("no {metric} for {pod} in\n{text}"));
                let value: f64 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{line}"));
                assert!(value > 0.0, "{line}");
            }
        }
    };

    // By default kubelet takes containers' stats from ListContainerStats and the
    // rest from its cAdvisor, which knows only containerd's and CRI-O's pods' network.
    let mut summary = serde_json::Value::Null;
    k.wait_for(READY, "a complete summary", |k| {
        summary = k.get("/stats/summary");
        complete(&summary, false)
    });
    resource_metrics(&k, true);

    // With PodAndContainerStatsFromCRI every figure comes from crid, pods' network
    // included (kubelet 1.32 then leaves containers out of /metrics/resource).
    k.restart_with("featureGates: {PodAndContainerStatsFromCRI: true}\n");
    k.wait_for(READY, "a complete summary from the CRI", |k| {
        summary = k.get("/stats/summary");
        complete(&summary, true)
    });
    resource_metrics(&k, false);
    assert_no_errors_but(&k, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_rotates_a_busy_containers_log_and_no_line_is_lost() {
    use std::io::Read;
    let Some(bin) = Kubelet::find() else { return };
    let w = World::new(Network::Loopback, &[]).await;
    // A rotation when the log passes 16 KiB, looked at every 3 s; enough files kept
    // that kubelet deletes none of what the test writes.
    let k = Kubelet::start_with(
        &bin,
        w.tmp.path(),
        &w.crid.socket,
        "containerLogMaxSize: 16Ki\ncontainerLogMaxFiles: 50\ncontainerLogMonitorInterval: 3s\n",
    );
    // 1,500 numbered lines of about 100 bytes over about 15 s: several rotations while the
    // container writes.
    const LINES: usize = 1500;
    k.add_pod(
        "chatty",
        &static_pod(
            "chatty",
            json!({
                "containers": [{
                    "name": "talk",
                    "image": w.image,
                    "command": ["/bin/sh", "-c", format!(
                        "pad=$(head -c 88 /dev/zero | tr '\\0' x); i=0; \
                         while [ $i -lt {LINES} ]; do i=$((i+1)); echo \"line $i $pad\"; \
                         [ $((i % 10)) = 0 ] && sleep 0.1; done; echo finished; exec sleep 3600")]
                }],
                "terminationGracePeriodSeconds": 1
            }),
        ),
    );
    k.wait_ready("chatty", READY);
    let dir = k
        .dir
        .join("logs")
        .join(format!("default_chatty-{}_chatty-uid", k.node))
        .join("talk");
    // Every file of the container's log, rotated (compressed or not) and current, in
    // the order written: the rotated ones carry their time in their names.
    let read_all = || {
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort_by_key(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            (name == "0.log", name)
        });
        let mut text = String::new();
        for f in &files {
            let raw = std::fs::read(f).unwrap_or_default();
            if f.extension().is_some_and(|e| e == "gz") {
                flate2::read::GzDecoder::new(&raw[..])
                    .read_to_string(&mut text)
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            } else {
                text.push_str(&String::from_utf8_lossy(&raw));
            }
        }
        (files, text)
    };
    let (mut files, mut text) = (vec![], String::new());
    k.wait_for(Duration::from_secs(120), "the last line", |_| {
        (files, text) = read_all();
        text.contains(" stdout F finished")
    });
    // Each line once, in order, whole, in CRI's log format.
    let numbers: Vec<usize> = text
        .lines()
        .filter_map(|l| {
            let content = l.splitn(4, ' ').nth(3)?;
            let n = content.strip_prefix("line ")?.split(' ').next()?;
            let whole = content.ends_with(&format!(" {}", "x".repeat(88)));
            assert!(l.split(' ').nth(1) == Some("stdout") && whole, "{l}");
            n.parse().ok()
        })
        .collect();
    assert_eq!(
        numbers,
        (1..=LINES).collect::<Vec<_>>(),
        "lines lost or repeated across {files:?}"
    );
    let rotated = files.iter().filter(|f| !f.ends_with("0.log")).count();
    assert!(rotated >= 3, "kubelet rotated {rotated} times: {files:?}");
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "gz")),
        "kubelet compressed none: {files:?}"
    );
    assert_no_errors_but(&k, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_replaces_a_dead_sandbox_and_its_gc_removes_the_old_ones() {
    let Some(bin) = Kubelet::find() else { return };
    let w = World::new(Network::Loopback, &[]).await;
    let k = Kubelet::start(&bin, w.tmp.path(), &w.crid.socket);
    // Its containers share the pod's PID namespace, whose init is crid's infra
    // process (pause's part).
    let mut pod = init_and_app(&w, "phoenix");
    pod["spec"]["shareProcessNamespace"] = json!(true);
    k.add_pod("phoenix", &pod);
    k.wait_ready("phoenix", READY);
    // Twice: the pod's infra process dies (as a container's `kill -9 1` would end
    // it), kubelet sees the sandbox not ready and makes a new one with new
    // containers.
    let mut sandboxes = vec![];
    for round in 1..=2 {
        let pods = w.pods().await;
        let ready: Vec<_> = pods
            .iter()
            .filter(|p| p.state == k8s_cri::v1::PodSandboxState::SandboxReady as i32)
            .collect();
        assert_eq!(ready.len(), 1, "{pods:?}");
        let id = ready[0].id.clone();
        let infra = w.pod_info(&id).await["infra_pid"]
            .as_i64()
            .expect("infra pid") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(infra),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("killing the infra process");
        sandboxes.push(id);
        k.wait_pod("phoenix", READY, "Ready in a new sandbox", |p| {
            e2e::kubelet::is_ready(p)
                && find_container(p, "app").and_then(|c| c["restartCount"].as_u64()) == Some(round)
        });
    }
    // kubelet's container GC (once a minute) keeps one dead container per container
    // name and the newest dead sandbox: the first sandbox goes, with its containers.
    let t0 = std::time::Instant::now();
    loop {
        let ids: Vec<String> = w.pods().await.into_iter().map(|p| p.id).collect();
        if !ids.contains(&sandboxes[0]) {
            assert!(ids.contains(&sandboxes[1]), "{ids:?} {sandboxes:?}");
            assert_eq!(ids.len(), 2, "{ids:?}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(150),
            "kubelet's GC left the first sandbox: {ids:?}\n{}",
            k.log_tail()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let left =
        w.rt.clone()
            .list_containers(k8s_cri::v1::ListContainersRequest {
                filter: Some(k8s_cri::v1::ContainerFilter {
                    pod_sandbox_id: sandboxes[0].clone(),
                    ..Default::default()
                }),
            })
            .await
            .expect("ListContainers")
            .into_inner()
            .containers;
    assert!(left.is_empty(), "{left:?}");
    // Nothing of the first sandbox is left in crid's state.
    assert!(
        !w.crid.root.join("pods").join(&sandboxes[0]).exists(),
        "the first sandbox's state is left"
    );
    // A readiness probe that runs as the sandbox dies finds its container gone, and
    // containers killed twice in a row are restarted with back-off; kubelet logs
    // both whatever the runtime.
    assert_no_errors_but(&k, &["is not running", "with CrashLoopBackOff"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_evented_pleg_kubelet_follows_pods_through_crids_events() {
    let Some(bin) = Kubelet::find() else { return };
    let w = World::new(Network::Loopback, &[]).await;
    // kubelet then relists only every 5 minutes: what it learns, it learns from
    // GetContainerEvents.
    let k = Kubelet::start_with(
        &bin,
        w.tmp.path(),
        &w.crid.socket,
        "featureGates: {EventedPLEG: true}\n",
    );
    k.add_pod("evented", &init_and_app(&w, "evented"));
    // A pod whose sync fails after its sandbox is made, before any container is:
    // kubelet must know the sandbox from its own events, or it asks for another
    // with the same name.
    let mut stuck = init_and_app(&w, "stuck");
    stuck["spec"]["initContainers"][0]["image"] = json!(format!("{}/cri/absent:1", w.reg.addr));
    k.add_pod("stuck", &stuck);
    let pod = k.wait_ready("evented", READY);
    assert_eq!(container_status(&pod, "app")["restartCount"], 0, "{pod}");
    k.wait_pod("stuck", READY, "failing to pull", |p| {
        p["status"]["initContainerStatuses"][0]
            .as_object()
            .is_some_and(|c| {
                let reason = c["state"]["waiting"]["reason"].as_str().unwrap_or_default();
                reason == "ErrImagePull" || reason == "ImagePullBackOff"
            })
    });
    // Past kubelet's 5-second cache refresh, with retries in between.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let pods = w.pods().await;
    assert_eq!(pods.len(), 2, "one sandbox each: {pods:?}");
    // The pod removed: stopped, and gone from kubelet.
    k.remove_pod("evented");
    k.wait_for(READY, "pod evented gone", |k| k.pod("evented").is_none());
    assert_no_errors_but(
        &k,
        &[
            // The absent image, each time kubelet tries it.
            "absent:1",
            "ImagePullBackOff",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelets_image_gc_removes_unused_images_and_their_layers_but_not_pinned_ones() {
    let Some(bin) = Kubelet::find() else { return };
    let mut w = World::new(Network::Loopback, &[]).await;
    let big = w.reg.push(
        "gc/big",
        &e2e::Image::new(vec![
            e2e::Layer::busybox(e2e::Compression::Gzip),
            e2e::Layer::large("big.bin", 8, e2e::Compression::Gzip),
        ]),
    );
    let kept = w.reg.push(
        "gc/kept",
        &e2e::Image::new(vec![e2e::Layer::large(
            "kept.bin",
            2,
            e2e::Compression::Gzip,
        )]),
    );
    // crid again, with gc/kept pinned.
    let pin = format!("{}/gc/kept:1", w.reg.addr);
    let args = [
        "--pinned-images",
        pin.as_str(),
        "--insecure-registry",
        w.reg.addr.as_str(),
        "--cni-bin-dir",
        "/usr/lib/cni",
    ]
    .map(String::from);
    w.crid.stop_with(nix::sys::signal::Signal::SIGTERM);
    w.restart_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let img = w.img.clone();
    for p in [&big, &kept] {
        img.clone()
            .pull_image(e2e::crid::pull_request(&p.reference))
            .await
            .unwrap();
    }
    let root = w.crid.root.clone();
    let holding = |file: &str| {
        std::fs::read_dir(root.join("layers")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.path().join("diff").join(file).exists())
        })
    };
    assert!(holding("big.bin") && holding("kept.bin"));
    // The image file system is always short of space here: kubelet's eviction
    // manager reclaims it through the image GC (unused images, never a pinned
    // one), as its periodic image GC does above its high threshold. Images count
    // once they are a second old (kubelet takes 0 for its 2-minute default).
    let k = Kubelet::start_with(
        &bin,
        w.tmp.path(),
        &w.crid.socket,
        "imageGCHighThresholdPercent: 1\nimageGCLowThresholdPercent: 0\nimageMinimumGCAge: 1s\n\
         evictionHard: {imagefs.available: \"99%\", nodefs.available: \"1%\"}\n",
    );
    let names = || async {
        img.clone()
            .list_images(k8s_cri::v1::ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let n = names().await;
        if !n.iter().any(|t| t.contains("gc/big")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kubelet's image GC never removed gc/big: {n:?}\n{}",
            k.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let n = names().await;
    assert!(n.contains(&pin), "the pinned image stays: {n:?}");
    // big.bin's layer went with its image; the pinned image's stayed.
    e2e::wait_for("big.bin's layer to go", || !holding("big.bin"));
    assert!(holding("kept.bin"));
    drop(k);
}
