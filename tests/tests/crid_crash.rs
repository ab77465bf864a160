//! crid killed and restarted: at rest, and at any moment of a burst of creates;
//! what a create cut short leaves is removed at start.

use e2e::crid::{Network, World};
use e2e::pods::*;
use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode::{Container as OwnPid, Pod as SharedPid};
use std::path::Path;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crid_killed_and_restarted_loses_nothing() {
    let mut w = World::new(Network::Loopback, &[]).await;
    let config = w.pod_config("keep", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let long = w.run_sh(&pod, &config, "long", "exec sleep 1000").await;
    let short = w.run_sh(&pod, &config, "short", "sleep 1; exit 4").await;
    let before = w.status(&long).await;
    assert_eq!(before.state, cri::ContainerState::ContainerRunning as i32);

    // SIGKILL; the short container ends while crid is away.
    w.kill_and_restart(Duration::from_millis(1500)).await;
    let pods = w.pods().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_cut_short_is_removed_at_start_without_reaching_through_its_mounts() {
    let mut w = World::new(Network::Loopback, &[]).await;
    let config = w.pod_config("cut", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    // A container, so that the image's layer is in the shared cache.
    w.run_sh(&pod, &config, "c", "sleep 100").await;
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
    w.run_sh(&pod, &config, "after", "sleep 100").await;
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crid_killed_at_any_moment_of_a_burst_of_creates_leaves_nothing_once_its_pods_go() {
    let mut w = World::new(Network::None, &[]).await;
    // As kubelet's nodes have it: masquerading and hairpin, so that an ADD cut short
    // leaves iptables rules as well as a lease and a veth.
    let net = BridgeNet::write(&w, "ckc", true);
    let ipam = w.tmp.path().join("ipam");
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
        let pods = w.pods().await;
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
        let left = leftovers(&w, &net.bridge.0, &ipam, &net.name);
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
