//! What crid measures and limits: container resources and stats, pod metrics that
//! move under CPU and memory load.

use e2e::crid::{Network, World};
use e2e::pods::*;
use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode::Container as OwnPid;
use std::path::Path;
use std::time::{Duration, Instant};

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
         while [ ! -e /data/stop ]; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; done; \
         echo done; exec sleep 1000",
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

    // 48 MB held in a shell variable, then a busy loop in user space (the stop
    // file is looked for once in 20,000 turns: a stat every turn made most of it
    // system time): both show. The kernel
    // folds memory.stat's counters in lazily, so a sample may lag the usage.
    std::fs::write(data.join("go"), "").unwrap();
    w.wait_for_log(&log, "stdout F allocated").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = pod_metrics(&w).await;
        let ms = now[0].container_metrics[0].metrics.clone();
        let read = |name, labels: &[&str]| metric(&ms, name, labels).unwrap();
        let cpu = read("container_cpu_usage_seconds_total", &["total"]);
        let ws = read("container_memory_working_set_bytes", &[]);
        let rss = read("container_memory_rss", &[]);
        if cpu >= idle_cpu + 2 && ws >= idle_ws + 40_000_000 && rss >= 40_000_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pod's metrics never moved: cpu {idle_cpu} -> {cpu} s, \
             working set {idle_ws} -> {ws}, rss {rss}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(data.join("stop"), "").unwrap();
    let after = pod_metrics(&w).await;
    let user = metric(
        &after[0].container_metrics[0].metrics,
        "container_cpu_user_seconds_total",
        &[],
    )
    .unwrap();
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
