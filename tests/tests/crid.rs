//! crid through a real CRI client (tonic, over its unix socket), against a real
//! registry on loopback and the fault proxy.

use e2e::crid::Crid;
use e2e::image::push;
use e2e::{bin, run, Compression, Fault, Image, Layer, Proxy, Registry, TempRoot};
use k8s_cri::v1 as cri;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

fn pull_request(image: &str) -> cri::PullImageRequest {
    cri::PullImageRequest {
        image: spec(image),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_status_unimplemented_and_a_clean_stop() {
    let tmp = TempRoot::new();
    let mut crid = Crid::start(tmp.path(), &[]);
    let mode = std::fs::metadata(&crid.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");

    let mut rt = crid.runtime().await;
    let v = rt
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "crikit");
    assert_eq!(v.runtime_api_version, "v1");

    let s = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = s.status.unwrap().conditions;
    let cond = |t: &str| conds.iter().find(|c| c.r#type == t).cloned().unwrap();
    assert!(cond("RuntimeReady").status, "{conds:?}");
    let net = cond("NetworkReady");
    assert!(!net.status, "no CNI config yet: {net:?}");
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(net.message.contains("CNI"), "{net:?}");
    let info: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
    assert_eq!(info["config"]["root"], crid.root.to_str().unwrap());

    // What this version does not do says so.
    let e = rt.exec(cri::ExecRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    assert!(e.message().contains("Exec"), "{e:?}");
    // Bad requests say what is wrong.
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("pod config"), "{e:?}");
    let e = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: "nope".into(),
    })
    .await
    .expect("stopping an unknown pod is no error");

    // A second crid on the same socket is refused; the first keeps serving.
    let second = run(
        {
            let mut c = std::process::Command::new(bin("crid"));
            c.arg("--listen")
                .arg(format!("unix://{}", crid.socket.display()))
                .arg("--root")
                .arg(&crid.root)
                .args(["--registries-conf", "/dev/null"]);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(second.code, Some(1), "{}", second.describe());
    assert!(
        second.stderr.contains("another server"),
        "{}",
        second.describe()
    );
    rt.version(cri::VersionRequest::default()).await.unwrap();

    let status = crid.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}: {}", crid.stderr());
    assert!(!crid.socket.exists(), "the socket goes with crid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_pull_list_status_remove_and_fs_info() {
    let reg = Registry::start();
    let p = push(&reg.addr, "cri/busybox", "1", &Image::busybox());
    let tmp = TempRoot::new();
    let crid = Crid::start(tmp.path(), &["--insecure-registry", &reg.addr]);
    let mut img = crid.images().await;

    let r = img
        .pull_image(pull_request(&p.reference))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.image_ref, p.config, "the image id is the config digest");

    let list = img
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(list.len(), 1, "{list:?}");
    let i = &list[0];
    assert_eq!(i.id, p.config);
    assert_eq!(i.repo_tags, std::slice::from_ref(&p.reference));
    assert_eq!(
        i.repo_digests,
        [format!("{}/cri/busybox@{}", reg.addr, p.digest)]
    );
    assert!(i.size > 1000, "{i:?}");

    // The store is imgpull's: it sees the image too.
    let mut c = std::process::Command::new(bin("imgpull"));
    c.arg("--root").arg(&crid.root).arg("--list");
    let listed = run(c, Duration::from_secs(30)).ok();
    assert!(
        listed.stdout.contains(&p.reference),
        "{}",
        listed.describe()
    );

    // Found by tag, id, id prefix, repo digest; verbose status carries the config.
    let short = &p.config["sha256:".len().."sha256:".len() + 12];
    for name in [
        p.reference.clone(),
        p.config.clone(),
        short.to_string(),
        i.repo_digests[0].clone(),
    ] {
        let s = img
            .image_status(cri::ImageStatusRequest {
                image: spec(&name),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            s.image.as_ref().map(|i| i.id.as_str()),
            Some(p.config.as_str()),
            "{name}"
        );
        let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
        assert!(info["config"]["rootfs"]["diff_ids"].is_array(), "{info}");
    }
    let missing = img
        .image_status(cri::ImageStatusRequest {
            image: spec("nothing/here:1"),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        missing.image.is_none(),
        "an unknown image is no error, and no image"
    );

    let filtered = img
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: spec("nothing/here:1"),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(filtered.images.is_empty());
    let filtered = img
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: spec(&p.reference),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.images.len(), 1);

    let fs = img
        .image_fs_info(cri::ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let u = &fs.image_filesystems[0];
    assert!(u.used_bytes.as_ref().unwrap().value >= i.size, "{u:?}");
    assert!(u.inodes_used.as_ref().unwrap().value >= 5, "{u:?}");
    assert_eq!(
        u.fs_id.as_ref().unwrap().mountpoint,
        crid.root.to_str().unwrap()
    );

    // Errors: an unknown tag with the registry's status, a bad reference, no image.
    let e = img
        .pull_image(pull_request(&format!("{}/cri/busybox:nope", reg.addr)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("manifest unknown"), "{e:?}");
    let e = img.pull_image(pull_request("Bad//Ref")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = img.pull_image(pull_request("")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    img.remove_image(cri::RemoveImageRequest {
        image: spec(&p.config),
    })
    .await
    .unwrap();
    let list = img
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(list.is_empty(), "{list:?}");
    let blobs = std::fs::read_dir(crid.root.join("images/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "its blobs are pruned");
    // Removing it again is no error: RemoveImage is idempotent.
    img.remove_image(cri::RemoveImageRequest {
        image: spec(&p.config),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_share_one_download() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let p = push(
        &reg.addr,
        "cri/shared",
        "1",
        &Image::new(vec![Layer::large("big.bin", 4, Compression::None)]),
    );
    // Slow enough that all the requests arrive while the first download runs.
    proxy.fault("/blobs/", Fault::Throttle(8 << 20), None);
    let reference = p.reference.replace(&reg.addr, &proxy.addr);
    let tmp = TempRoot::new();
    let crid = Crid::start(tmp.path(), &["--insecure-registry", &proxy.addr]);
    let channel = crid.channel().await;
    let pulls = (0..10).map(|_| {
        let mut img = k8s_cri::v1::image_service_client::ImageServiceClient::new(channel.clone());
        let reference = reference.clone();
        tokio::spawn(async move { img.pull_image(pull_request(&reference)).await })
    });
    for r in futures_join(pulls).await {
        assert_eq!(r.unwrap().into_inner().image_ref, p.config);
    }
    let layer_gets = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.path.contains(&p.layers[0]))
        .count();
    assert_eq!(layer_gets, 1, "one download for ten requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pull_is_cancelled_and_a_slow_one_is_not() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let p = push(
        &reg.addr,
        "cri/slow",
        "1",
        &Image::new(vec![Layer::large("big.bin", 6, Compression::None)]),
    );
    let reference = p.reference.replace(&reg.addr, &proxy.addr);
    let tmp = TempRoot::new();
    let crid = Crid::start(
        tmp.path(),
        &[
            "--insecure-registry",
            &proxy.addr,
            "--pull-progress-timeout",
            "2",
        ],
    );
    let mut img = crid.images().await;

    // Nothing at all comes for the layer: cancelled after 2 s without progress.
    proxy.fault(&p.layers[0], Fault::Stall(Duration::from_secs(60)), None);
    let t0 = std::time::Instant::now();
    let e = img.pull_image(pull_request(&reference)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("no progress for 2 s"), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());

    // 6 MiB at 1.5 MiB/s takes about 4 s, twice the limit, but it moves.
    proxy.clear();
    proxy.fault("/blobs/", Fault::Throttle(3 << 19), None);
    let t0 = std::time::Instant::now();
    let r = img.pull_image(pull_request(&reference)).await;
    assert_eq!(r.unwrap().into_inner().image_ref, p.config);
    assert!(
        t0.elapsed() > Duration::from_secs(2),
        "the pull was slow: {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_use_the_request_credentials() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr).with_token_auth("alice", "s3cret");
    let p = push(&reg.addr, "private/app", "1", &Image::busybox());
    let reference = p.reference.replace(&reg.addr, &proxy.addr);
    let tmp = TempRoot::new();
    let crid = Crid::start(tmp.path(), &["--insecure-registry", &proxy.addr]);
    let mut img = crid.images().await;
    let with = |auth: cri::AuthConfig| cri::PullImageRequest {
        image: spec(&reference),
        auth: Some(auth),
        ..Default::default()
    };
    let e = img.pull_image(pull_request(&reference)).await.unwrap_err();
    assert!(e.message().contains("401"), "{e:?}");
    let e = img
        .pull_image(with(cri::AuthConfig {
            username: "alice".into(),
            password: "wrong".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(e.message().contains("401"), "{e:?}");
    let r = img
        .pull_image(with(cri::AuthConfig {
            username: "alice".into(),
            password: "s3cret".into(),
            ..Default::default()
        }))
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", crid.stderr()));
    assert_eq!(r.into_inner().image_ref, p.config);
    let r = img
        .pull_image(with(cri::AuthConfig {
            auth: "YWxpY2U6czNjcmV0".into(), // alice:s3cret
            ..Default::default()
        }))
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", crid.stderr()));
    assert_eq!(r.into_inner().image_ref, p.config);
    let e = img
        .pull_image(with(cri::AuthConfig {
            registry_token: "t".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
}

/// Awaits every task, in order.
async fn futures_join<T>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

/// A pod config; `pid` is the PID namespace mode (0 pod, 1 container, 2 node).
fn pod_config(name: &str, tmp: &std::path::Path, cgroup: &str, pid: i32) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: tmp.join("logs").join(name).display().to_string(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: [("app".to_string(), name.to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup.into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, image: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: spec(image),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        envs: vec![cri::KeyValue {
            key: "FOO".into(),
            value: "bar".into(),
        }],
        log_path: format!("{name}.log"),
        labels: [("tier".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

async fn wait_for_log(path: &std::path::Path, want: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(want) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{want:?} never reached {}: {text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn container_state(rt: &mut Runtime, id: &str) -> cri::ContainerStatus {
    rt.container_status(cri::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

type Runtime = k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_container_lifecycle() {
    let reg = Registry::start();
    let p = push(&reg.addr, "cri/life", "1", &Image::busybox());
    let tmp = TempRoot::new();
    let cgroup = format!(
        "/crikit-test-{}",
        tmp.path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "")
    );
    let _cg = e2e::CgroupGuard(cgroup.clone());
    e2e::crid::write_conflist(
        tmp.path(),
        "10-lo",
        &serde_json::json!({"cniVersion": "1.0.0", "name": "lo-only", "plugins": [{"type": "loopback"}]}),
    );
    let crid = Crid::start(
        tmp.path(),
        &[
            "--insecure-registry",
            &reg.addr,
            "--cni-bin-dir",
            "/usr/lib/cni",
        ],
    );
    let mut img = crid.images().await;
    let mut rt = crid.runtime().await;
    img.pull_image(pull_request(&p.reference)).await.unwrap();

    // The pod: namespaces pinned, files written, listed, unique by metadata.
    let config = pod_config("web", tmp.path(), &cgroup, 1);
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", crid.stderr()))
        .into_inner()
        .pod_sandbox_id;
    let ns_dir = crid.run_dir.join("pods").join(&pod).join("ns");
    for kind in ["net", "ipc", "uts"] {
        assert!(ns_dir.join(kind).exists(), "{kind} namespace pinned");
    }
    let again = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
    let status = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(status.metadata.unwrap().name, "web");
    let listed = |label: &str, state: Option<i32>| cri::ListPodSandboxRequest {
        filter: Some(cri::PodSandboxFilter {
            label_selector: [("app".to_string(), label.to_string())].into(),
            state: state.map(|state| cri::PodSandboxStateValue { state }),
            ..Default::default()
        }),
    };
    let items = rt
        .list_pod_sandbox(listed("web", Some(0)))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].id, pod);
    let items = rt
        .list_pod_sandbox(listed("other", None))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(items.is_empty());

    // A container: created, started, logging, in the pod's namespaces.
    let cconfig = container_config(
        "main",
        &p.reference,
        "echo hello; hostname; cat /etc/resolv.conf; echo err >&2; \
         while true; do echo tick; sleep 0.2; done",
    );
    let create = |c: cri::ContainerConfig| cri::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(c),
        sandbox_config: Some(config.clone()),
    };
    let ctr = rt
        .create_container(create(cconfig.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", crid.stderr()))
        .into_inner()
        .container_id;
    let dup = rt
        .create_container(create(cconfig.clone()))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists, "{dup:?}");
    let s = container_state(&mut rt, &ctr).await;
    assert_eq!(s.state, cri::ContainerState::ContainerCreated as i32);
    assert_eq!(s.image_id, p.config);
    rt.start_container(cri::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap();
    let s = container_state(&mut rt, &ctr).await;
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
    let log_path = std::path::PathBuf::from(&s.log_path);
    assert_eq!(log_path, tmp.path().join("logs/web/main.log"));
    let log = wait_for_log(&log_path, "stdout F tick").await;
    for want in [
        "stdout F hello",
        "stdout F web-host",
        "stdout F nameserver 10.0.0.10",
        "stdout F search svc.cluster.local",
        "stderr F err",
    ] {
        assert!(log.contains(want), "{want:?} in {log}");
    }
    let running = |pod: &str| cri::ListContainersRequest {
        filter: Some(cri::ContainerFilter {
            pod_sandbox_id: pod.into(),
            state: Some(cri::ContainerStateValue { state: 1 }),
            ..Default::default()
        }),
    };
    let list = rt
        .list_containers(running(&pod))
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, ctr);
    let list = rt
        .list_containers(running("nope"))
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(list.is_empty());

    // ExecSync: output, exit code, environment; a timeout kills the command.
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: ctr.clone(),
            cmd: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo $FOO; echo e >&2; exit 3".into(),
            ],
            timeout: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"bar\n"[..], &b"e\n"[..], 3)
    );
    let t0 = std::time::Instant::now();
    let e = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: ctr.clone(),
            cmd: vec!["/bin/sleep".into(), "30".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(15));

    // ReopenContainerLog after the file was moved away.
    let moved = tmp.path().join("main.log.1");
    std::fs::rename(&log_path, &moved).unwrap();
    rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap();
    wait_for_log(&log_path, "stdout F tick").await;

    // The image is in use.
    let e = img
        .remove_image(cri::RemoveImageRequest {
            image: spec(&p.reference),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

    // Stop: sh as PID 1 ignores SIGTERM, so SIGKILL after the timeout.
    let t0 = std::time::Instant::now();
    rt.stop_container(cri::StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(1));
    let s = container_state(&mut rt, &ctr).await;
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 137);
    assert_eq!(s.reason, "Error");
    assert!(s.finished_at >= s.started_at && s.started_at > 0, "{s:?}");
    rt.stop_container(cri::StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 1,
    })
    .await
    .unwrap();

    rt.remove_container(cri::RemoveContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap();
    let e = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: ctr.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap();

    // Stop and remove the pod; its name is free again.
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    let items = rt
        .list_pod_sandbox(listed("web", Some(1)))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.len(), 1, "not ready after stop");
    assert!(!ns_dir.join("net").exists());
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    let e = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let again = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: again.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: again,
    })
    .await
    .unwrap();
    // The image is free to go now.
    img.remove_image(cri::RemoveImageRequest {
        image: spec(&p.reference),
    })
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

/// GET `path` from `addr` over plain HTTP/1.0; the body, once it answers.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
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
            r => assert!(
                std::time::Instant::now() < deadline,
                "no answer from {addr}: {r:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_a_cni_bridge_reach_each_other_and_the_host_reaches_them() {
    let reg = Registry::start();
    let p = push(&reg.addr, "cri/net", "1", &Image::busybox());
    let tmp = TempRoot::new();
    let tag = tmp
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "");
    let h = crikit::digest::Digest::of(tag.as_bytes());
    let hex = h.hex();
    let bridge = Bridge(format!("ckt{}", &hex[..8]));
    // A /24 of 10.0.0.0/8 picked from the test's name: parallel tests do not meet.
    let (a, b) = (
        u8::from_str_radix(&hex[8..10], 16).unwrap(),
        u8::from_str_radix(&hex[10..12], 16).unwrap(),
    );
    let subnet = format!("10.{a}.{b}.0/24");
    let gateway = format!("10.{a}.{b}.1");
    let host_port = 20000 + u16::from_str_radix(&hex[12..15], 16).unwrap() % 20000;
    let cgroup = format!("/crikit-test-{tag}");
    let _cg = e2e::CgroupGuard(cgroup.clone());
    e2e::crid::write_conflist(
        tmp.path(),
        "10-bridge",
        &serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("crikit-{tag}"),
            "plugins": [
                {"type": "bridge", "bridge": bridge.0, "isGateway": true, "ipMasq": false,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                          "dataDir": tmp.path().join("ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        }),
    );
    let crid = Crid::start(
        tmp.path(),
        &[
            "--insecure-registry",
            &reg.addr,
            "--cni-bin-dir",
            "/usr/lib/cni",
        ],
    );
    let mut img = crid.images().await;
    let mut rt = crid.runtime().await;
    img.pull_image(pull_request(&p.reference)).await.unwrap();
    let net = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(net.status, "{net:?}");

    let run_pod = |name: &str, ports: Vec<cri::PortMapping>| {
        let mut config = pod_config(name, tmp.path(), &cgroup, 1);
        config.port_mappings = ports;
        let mut rt = rt.clone();
        async move {
            let id = rt
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .pod_sandbox_id;
            (id, config)
        }
    };
    let (pod_a, config_a) = run_pod(
        "a",
        vec![cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 8080,
            host_port: host_port as i32,
            host_ip: String::new(),
        }],
    )
    .await;
    let (pod_b, config_b) = run_pod("b", vec![]).await;
    let ip_of = |pod: String| {
        let mut rt = rt.clone();
        async move {
            rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod,
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
            .network
            .unwrap()
            .ip
        }
    };
    let ip_a = ip_of(pod_a.clone()).await;
    let ip_b = ip_of(pod_b.clone()).await;
    assert!(
        ip_a.starts_with(&format!("10.{a}.{b}.")),
        "{ip_a} in {subnet}"
    );
    assert!(
        ip_b.starts_with(&format!("10.{a}.{b}.")) && ip_b != ip_a,
        "{ip_b}"
    );

    let start = |pod: String, config: cri::PodSandboxConfig, c: cri::ContainerConfig| {
        let mut rt = rt.clone();
        async move {
            let id = rt
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(c),
                    sandbox_config: Some(config),
                })
                .await
                .unwrap()
                .into_inner()
                .container_id;
            rt.start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
            id
        }
    };
    start(
        pod_a.clone(),
        config_a,
        container_config(
            "web",
            &p.reference,
            "mkdir -p /tmp/www && echo hello-from-a > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
        ),
    )
    .await;
    let client = start(
        pod_b.clone(),
        config_b,
        container_config("client", &p.reference, "exec sleep 1000"),
    )
    .await;

    // The host reaches pod A at its IP, and through the mapped port.
    let addr = format!("{ip_a}:8080");
    let body = tokio::task::spawn_blocking(move || http_get(&addr, "/index.html"))
        .await
        .unwrap();
    assert!(body.contains("hello-from-a"), "{body}");
    let mapped = format!("{gateway}:{host_port}");
    let body = tokio::task::spawn_blocking(move || http_get(&mapped, "/index.html"))
        .await
        .unwrap();
    assert!(
        body.contains("hello-from-a"),
        "through the port mapping: {body}"
    );

    // Pod B reaches pod A.
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: client,
            // The image links few applets; busybox's shell runs the others.
            cmd: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("wget -qO- http://{ip_a}:8080/index.html"),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.stdout,
        b"hello-from-a\n",
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );

    // A verbose status runs CNI CHECK: fine, then not once eth0 is gone.
    let check = |pod: String| {
        let mut rt = rt.clone();
        async move {
            rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod,
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner()
            .info
            .get("networkCheck")
            .cloned()
            .unwrap_or_default()
        }
    };
    assert_eq!(check(pod_b.clone()).await, "ok");
    let netns = crid.run_dir.join("pods").join(&pod_b).join("ns/net");
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

    // Stopping pod A gives its address back.
    let leases = tmp.path().join("ipam").join(format!("crikit-{tag}"));
    assert!(leases.join(&ip_a).exists());
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_a.clone(),
    })
    .await
    .unwrap();
    assert!(!leases.join(&ip_a).exists(), "DEL released {ip_a}");
    for pod in [pod_a, pod_b] {
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    }
    assert!(!leases.join(&ip_b).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_pid_namespace_has_an_infra_process() {
    let reg = Registry::start();
    let p = push(&reg.addr, "cri/app", "1", &Image::busybox());
    let mut pause = Image::busybox();
    pause.cmd = vec!["/bin/sleep".into(), "2147483647".into()];
    let pause = push(&reg.addr, "cri/pause", "1", &pause);
    let tmp = TempRoot::new();
    let tag = tmp
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "");
    let cgroup = format!("/crikit-test-{tag}");
    let _cg = e2e::CgroupGuard(cgroup.clone());
    e2e::crid::write_conflist(
        tmp.path(),
        "10-lo",
        &serde_json::json!({"cniVersion": "1.0.0", "name": "lo-only", "plugins": [{"type": "loopback"}]}),
    );
    let crid = Crid::start(
        tmp.path(),
        &[
            "--insecure-registry",
            &reg.addr,
            "--cni-bin-dir",
            "/usr/lib/cni",
            "--pause-image",
            &pause.reference,
        ],
    );
    let mut img = crid.images().await;
    let mut rt = crid.runtime().await;
    img.pull_image(pull_request(&p.reference)).await.unwrap();
    // PID mode POD (0): the pause image is pulled on demand and runs as PID 1.
    let config = pod_config("shared", tmp.path(), &cgroup, 0);
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", crid.stderr()))
        .into_inner()
        .pod_sandbox_id;
    let mut ids = vec![];
    for (name, script) in [("one", "exec sleep 1000"), ("two", "exec sleep 1001")] {
        let id = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(name, &p.reference, script)),
                sandbox_config: Some(config.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        ids.push(id);
    }
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: ids[1].clone(),
            cmd: vec![
                "/bin/sh".into(),
                "-c".into(),
                "tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/[0-9]*/cmdline | tr '\\0' ' '"
                    .into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let out = String::from_utf8_lossy(&r.stdout);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("/bin/sleep 2147483647 "), "{out}");
    assert!(
        out.contains("sleep 1000"),
        "the other container is visible: {out}"
    );
    // The infra process is the pod's, not a container kubelet knows of.
    let list = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(list.len(), 2, "{list:?}");
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    let left = std::fs::read_dir(crid.root.join("containers"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "containers and the infra process are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crid_killed_and_restarted_loses_nothing() {
    let reg = Registry::start();
    let p = push(&reg.addr, "cri/restart", "1", &Image::busybox());
    let tmp = TempRoot::new();
    let tag = tmp
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "");
    let cgroup = format!("/crikit-test-{tag}");
    let _cg = e2e::CgroupGuard(cgroup.clone());
    e2e::crid::write_conflist(
        tmp.path(),
        "10-lo",
        &serde_json::json!({"cniVersion": "1.0.0", "name": "lo-only", "plugins": [{"type": "loopback"}]}),
    );
    let args = [
        "--insecure-registry",
        &reg.addr,
        "--cni-bin-dir",
        "/usr/lib/cni",
    ];
    let mut crid = Crid::start(tmp.path(), &args);
    let mut rt = crid.runtime().await;
    let mut img = crid.images().await;
    img.pull_image(pull_request(&p.reference)).await.unwrap();
    let config = pod_config("keep", tmp.path(), &cgroup, 1);
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let mut ids = vec![];
    for (name, script) in [("long", "exec sleep 1000"), ("short", "sleep 1; exit 4")] {
        let id = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(name, &p.reference, script)),
                sandbox_config: Some(config.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        ids.push(id);
    }
    let long_pid = container_state(&mut rt, &ids[0]).await;
    assert_eq!(long_pid.state, cri::ContainerState::ContainerRunning as i32);

    // SIGKILL; the short container ends while crid is away.
    drop(rt);
    drop(img);
    let status = crid.stop_with(nix::sys::signal::Signal::SIGKILL);
    assert!(!status.success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let crid = Crid::start(tmp.path(), &args);
    let mut rt = crid.runtime().await;

    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].id, pod);
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxReady as i32);
    let long = container_state(&mut rt, &ids[0]).await;
    assert_eq!(long.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(long.started_at, long_pid.started_at);
    let short = container_state(&mut rt, &ids[1]).await;
    assert_eq!(
        short.state,
        cri::ContainerState::ContainerExited as i32,
        "{short:?}"
    );
    assert_eq!(short.exit_code, 4);
    // Names are still taken.
    let dup = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("long", &p.reference, "true")),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    // And it goes on: exec into the container that ran all along.
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: ids[0].clone(),
            cmd: vec!["/bin/echo".into(), "still here".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.stdout, b"still here\n");
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_config_resources_and_stats() {
    let reg = Registry::start();
    let p = push(&reg.addr, "cri/cfg", "1", &Image::busybox());
    let tmp = TempRoot::new();
    let tag = tmp
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "");
    let cgroup = format!("/crikit-test-{tag}");
    let _cg = e2e::CgroupGuard(cgroup.clone());
    e2e::crid::write_conflist(
        tmp.path(),
        "10-lo",
        &serde_json::json!({"cniVersion": "1.0.0", "name": "lo-only", "plugins": [{"type": "loopback"}]}),
    );
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("hello"), "from the host\n").unwrap();
    let crid = Crid::start(
        tmp.path(),
        &[
            "--insecure-registry",
            &reg.addr,
            "--cni-bin-dir",
            "/usr/lib/cni",
        ],
    );
    let mut img = crid.images().await;
    let mut rt = crid.runtime().await;
    img.pull_image(pull_request(&p.reference)).await.unwrap();
    let mut config = pod_config("cfg", tmp.path(), &cgroup, 1);
    if let Some(l) = config.linux.as_mut() {
        l.sysctls = [("kernel.shm_rmid_forced".to_string(), "1".to_string())].into();
    }
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let mut c = container_config(
        "cfg",
        &p.reference,
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
                pid: 1,
                ..Default::default()
            }),
            ..Default::default()
        }),
    });
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", crid.stderr()))
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let log = wait_for_log(&tmp.path().join("logs/cfg/cfg.log"), "stdout F ready").await;
    let own_oom = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", crid.pid())).unwrap();
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
    let mem = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(cgroup.trim_start_matches('/'))
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
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
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
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(list.len(), 1);
    let ps = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = ps.linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    assert!(linux.process.unwrap().process_count.unwrap().value >= 1);
    assert!(linux.memory.unwrap().working_set_bytes.unwrap().value >= ws);
    let all = rt
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);

    // Options crid cannot honour are refused by name.
    let mut bad = container_config("bad", &p.reference, "true");
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
    let e = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(bad),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("AppArmor"), "{e:?}");

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_pods_at_once() {
    let reg = Registry::start();
    let p = push(&reg.addr, "cri/many", "1", &Image::busybox());
    let tmp = TempRoot::new();
    let tag = tmp
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "");
    let cgroup = format!("/crikit-test-{tag}");
    let _cg = e2e::CgroupGuard(cgroup.clone());
    e2e::crid::write_conflist(
        tmp.path(),
        "10-lo",
        &serde_json::json!({"cniVersion": "1.0.0", "name": "lo-only", "plugins": [{"type": "loopback"}]}),
    );
    let crid = Crid::start(
        tmp.path(),
        &[
            "--insecure-registry",
            &reg.addr,
            "--cni-bin-dir",
            "/usr/lib/cni",
        ],
    );
    let channel = crid.channel().await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let channel = channel.clone();
            let image = p.reference.clone();
            let config = pod_config(&format!("p{i}"), tmp.path(), &cgroup, 1);
            tokio::spawn(async move {
                let mut img =
                    k8s_cri::v1::image_service_client::ImageServiceClient::new(channel.clone());
                let mut rt =
                    k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(channel);
                // Every pod pulls, as kubelet does when they start together.
                img.pull_image(pull_request(&image)).await?;
                let pod = rt
                    .run_pod_sandbox(cri::RunPodSandboxRequest {
                        config: Some(config.clone()),
                        runtime_handler: String::new(),
                    })
                    .await?
                    .into_inner()
                    .pod_sandbox_id;
                let ctr = rt
                    .create_container(cri::CreateContainerRequest {
                        pod_sandbox_id: pod.clone(),
                        config: Some(container_config("c", &image, "exec sleep 1000")),
                        sandbox_config: Some(config),
                    })
                    .await?
                    .into_inner()
                    .container_id;
                rt.start_container(cri::StartContainerRequest { container_id: ctr })
                    .await?;
                Ok::<_, tonic::Status>(pod)
            })
        })
        .collect();
    let mut pods = vec![];
    for t in tasks {
        pods.push(
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{e:?}: {}", crid.stderr())),
        );
    }
    pods.sort();
    pods.dedup();
    assert_eq!(pods.len(), 20);
    let mut rt = crid.runtime().await;
    let running = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue { state: 1 }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(running.len(), 20);
    let teardown: Vec<_> = pods
        .into_iter()
        .map(|pod| {
            let mut rt = rt.clone();
            tokio::spawn(async move {
                rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await?;
                rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: pod,
                })
                .await
            })
        })
        .collect();
    for t in teardown {
        t.await.unwrap().unwrap();
    }
    let left = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(left.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_devices_seccomp_profile_and_mount_propagation() {
    let reg = Registry::start();
    let p = push(&reg.addr, "cri/host", "1", &Image::busybox());
    let tmp = TempRoot::new();
    let tag = tmp
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "");
    let cgroup = format!("/crikit-test-{tag}");
    let _cg = e2e::CgroupGuard(cgroup.clone());
    // No CNI config at all: a host-network pod needs none.
    let crid = Crid::start(tmp.path(), &["--insecure-registry", &reg.addr]);
    let mut img = crid.images().await;
    let mut rt = crid.runtime().await;
    img.pull_image(pull_request(&p.reference)).await.unwrap();
    let mut config = pod_config("hostnet", tmp.path(), &cgroup, 1);
    config.hostname = String::new();
    config.dns_config = None;
    if let Some(o) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        o.network = cri::NamespaceMode::Node as i32;
    }
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", crid.stderr()))
        .into_inner()
        .pod_sandbox_id;
    assert!(!crid.run_dir.join("pods").join(&pod).join("ns/net").exists());

    // A shared mount on the host whose later submounts reach the container.
    let prop = tmp.path().join("prop");
    std::fs::create_dir_all(prop.join("sub")).unwrap();
    let mount = |args: &[&str]| {
        let out = std::process::Command::new("mount")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let prop_s = prop.display().to_string();
    mount(&["--bind", &prop_s, &prop_s]);
    mount(&["--make-shared", &prop_s]);
    let profile = tmp.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let mut c = container_config(
        "c",
        &p.reference,
        "hostname; echo x > /dev/mynull && echo device-ok; \
         mkdir /tmp/d 2>/dev/null || echo mkdir-denied; echo ready; exec sleep 1000",
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
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", crid.stderr()))
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let log = wait_for_log(&tmp.path().join("logs/hostnet/c.log"), "stdout F ready").await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for want in [
        format!("stdout F {}", host.trim()),
        "device-ok".into(),
        "mkdir-denied".into(),
    ] {
        assert!(log.contains(&want), "{want:?} in {log}");
    }
    // The container shares the host's network: it sees the host's interfaces.
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["/bin/cat".into(), "/proc/net/dev".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let host_dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    let names = |t: &str| -> Vec<String> {
        let mut v: Vec<String> = t
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|s| s.trim().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&String::from_utf8_lossy(&r.stdout)), names(&host_dev));

    // A mount made on the host after the start reaches the container (rslave).
    let sub = prop.join("sub").display().to_string();
    mount(&["-t", "tmpfs", "crikit-test", &sub]);
    std::fs::write(prop.join("sub/late"), "x").unwrap();
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["/bin/ls".into(), "/prop/sub".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.stdout,
        b"late\n",
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
}
