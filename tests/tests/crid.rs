//! crid's server and ImageService through a real CRI client (tonic, over its unix
//! socket), against a real registry on loopback and the fault proxy. Pods and
//! containers: crid_pods.rs.

use e2e::crid::{pull_request, Crid};
use e2e::{bin, run, Compression, Fault, Image, Proxy, Registry, TempRoot};
use k8s_cri::v1 as cri;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

type Images = cri::image_service_client::ImageServiceClient<tonic::transport::Channel>;

/// Every image crid lists.
async fn all_images(img: &mut Images) -> Vec<cri::Image> {
    img.list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
}

/// The image `name` names, as ImageStatus reports it (not verbose).
async fn image_of(img: &mut Images, name: &str) -> Option<cri::Image> {
    img.image_status(cri::ImageStatusRequest {
        image: spec(name),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_status_bad_requests_and_a_clean_stop() {
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

    // The cgroup driver kubelet must use.
    let c = rt
        .runtime_config(cri::RuntimeConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        c.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
    // A checkpoint without a location is a bad request.
    let e = rt
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("checkpoint location"), "{e:?}");
    // Exec without a command is a bad request, not a URL.
    let e = rt.exec(cri::ExecRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
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

    // Another crid on `socket` with its state in `root`, run until it exits.
    let other = |socket: &std::path::Path, root: &std::path::Path, extra: &[&str]| {
        let mut c = std::process::Command::new(bin("crid"));
        c.arg("--listen")
            .arg(format!("unix://{}", socket.display()))
            .arg("--root")
            .arg(root)
            .args(["--registries-conf", "/dev/null"])
            .args(extra);
        run(c, Duration::from_secs(30))
    };
    // A second crid on the same socket is refused; the first keeps serving.
    let second = other(&crid.socket, &crid.root, &[]);
    assert_eq!(second.code, Some(1), "{}", second.describe());
    assert!(
        second.stderr.contains("another server"),
        "{}",
        second.describe()
    );
    rt.version(cri::VersionRequest::default()).await.unwrap();
    // An events file that cannot be written is a failed start, naming the file.
    let events = tmp.path().join("no-such-dir").join("events.jsonl");
    let bad = other(
        &tmp.path().join("other.sock"),
        &tmp.path().join("other"),
        &["--events-file", events.to_str().unwrap()],
    );
    assert_eq!(bad.code, Some(1), "{}", bad.describe());
    assert!(
        bad.stderr
            .contains(&format!("events file {}", events.display())),
        "{}",
        bad.describe()
    );
    // A cgroup manager that cannot work here stops crid at start, saying why.
    let start_with = |extra: &[&str]| {
        other(
            &tmp.path().join("third.sock"),
            &tmp.path().join("third"),
            extra,
        )
    };
    if std::path::Path::new("/run/systemd/system").exists() {
        eprintln!(
            "systemd is this host's init: crid's start with systemd's cgroups is not refused here"
        );
    } else {
        let bad = start_with(&["--cgroup-manager", "systemd"]);
        assert_eq!(bad.code, Some(1), "{}", bad.describe());
        assert!(
            bad.stderr
                .contains("cgroup manager systemd: systemd is not this host's init system"),
            "{}",
            bad.describe()
        );
        assert_eq!(bad.stderr.trim().lines().count(), 1, "{}", bad.describe());
    }
    // A handler told to use systemd's cgroups while crid uses cgroupfs.
    let conf = tmp.path().join("systemd-handler.toml");
    std::fs::write(
        &conf,
        "cgroup-manager = \"cgroupfs\"\n[runtimes.sd]\npath = \"runc\"\nargs = [\"--systemd-cgroup\"]\n",
    )
    .unwrap();
    let bad = start_with(&["--config", conf.to_str().unwrap()]);
    assert_eq!(bad.code, Some(1), "{}", bad.describe());
    assert!(
        bad.stderr.contains(
            "runtime handler \"sd\": --systemd-cgroup in its args needs cgroup-manager systemd"
        ),
        "{}",
        bad.describe()
    );
    // kubelet with the systemd driver against crid with cgroupfs: its pods' parents
    // are slices, refused by name rather than made as directories.
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: "sliced".into(),
                    namespace: "default".into(),
                    uid: "sliced-uid".into(),
                    attempt: 0,
                }),
                linux: Some(cri::LinuxPodSandboxConfig {
                    cgroup_parent: "kubepods-besteffort-podsliced.slice".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("is a systemd slice") && e.message().contains("cgroupDriver"),
        "{e:?}"
    );

    let status = crid.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}: {}", crid.stderr());
    assert!(!crid.socket.exists(), "the socket goes with crid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_when_crid_serves_and_sighup_rereads_registries_conf() {
    let reg = Registry::start();
    let p = reg.push("cri/busybox", &Image::busybox());
    let tmp = TempRoot::new();
    // systemd's end of a Type=notify unit.
    let notify_path = tmp.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let next_message = || {
        let mut buf = [0u8; 4096];
        let n = notify.recv(&mut buf).expect("a message on NOTIFY_SOCKET");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let conf = tmp.path().join("registries.conf");
    std::fs::write(&conf, "").unwrap();
    let crid = Crid::start_with_env(
        tmp.path(),
        &[
            "--registries-conf",
            conf.to_str().unwrap(),
            "--insecure-registry",
            &reg.addr,
        ],
        &[("NOTIFY_SOCKET", &notify_path)],
    );
    let ready = next_message();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains(&format!(
            "STATUS=serving the CRI on {}",
            crid.socket.display()
        )),
        "{ready:?}"
    );
    let mut img = crid.images().await;
    // Nothing listens on port 1: the name means nothing until registries.conf says.
    let tag = p.reference.rsplit_once(':').map(|(_, t)| t).unwrap();
    let moved = &format!("127.0.0.1:1/moved/busybox:{tag}");
    let e = img.pull_image(pull_request(moved)).await.unwrap_err();
    assert!(e.message().contains("127.0.0.1:1"), "{e:?}");
    let hangup = |want: &str| {
        let before = crid.stderr().matches(want).count();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(crid.pid()),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        e2e::wait_for("crid's log of the reload", || {
            crid.stderr().matches(want).count() > before
        });
    };
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"127.0.0.1:1/moved\"\nlocation = \"{}/cri\"\n",
            reg.addr
        ),
    )
    .unwrap();
    hangup("SIGHUP: registries.conf and the credential files re-read");
    img.pull_image(pull_request(moved))
        .await
        .expect("pulled through the rewrite read at SIGHUP");
    // A broken file leaves the rewrite read before in force.
    std::fs::write(&conf, "[[registry]\n").unwrap();
    hangup("pulls go on as before");
    img.pull_image(pull_request(moved))
        .await
        .expect("still pulled through the rewrite");
    let mut crid = crid;
    let status = crid.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}: {}", crid.stderr());
    let stopping = next_message();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_pull_list_status_remove_and_fs_info() {
    let reg = Registry::start();
    let p = reg.push("cri/busybox", &Image::busybox());
    let tmp = TempRoot::new();
    let crid = Crid::start(tmp.path(), &["--insecure-registry", &reg.addr]);
    let mut img = crid.images().await;

    let r = img
        .pull_image(pull_request(&p.reference))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.image_ref, p.config, "the image id is the config digest");

    let list = all_images(&mut img).await;
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
    assert!(
        image_of(&mut img, "nothing/here:1").await.is_none(),
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
        .pull_image(pull_request(format!("{}/cri/busybox:nope", reg.addr)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("manifest unknown"), "{e:?}");
    let e = img.pull_image(pull_request("Bad//Ref")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = img.pull_image(pull_request("")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // Removed by several callers at once (critest's Image Consistency spec): each
    // succeeds; none reads a blob another has just pruned.
    let channel = crid.channel().await;
    let removals: Vec<_> = (0..8)
        .map(|_| {
            let mut img =
                k8s_cri::v1::image_service_client::ImageServiceClient::new(channel.clone());
            let image = spec(&p.config);
            tokio::spawn(async move { img.remove_image(cri::RemoveImageRequest { image }).await })
        })
        .collect();
    for r in removals {
        r.await.unwrap().unwrap();
    }
    let list = all_images(&mut img).await;
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
async fn what_imgpull_changes_in_the_store_crid_reports_at_once() {
    let reg = Registry::start();
    let a = reg.push("cri/app", &Image::busybox());
    let tmp = TempRoot::new();
    let crid = Crid::start(tmp.path(), &["--insecure-registry", &reg.addr]);
    let mut img = crid.images().await;
    img.pull_image(pull_request(&a.reference)).await.unwrap();
    let first = image_of(&mut img, &a.reference)
        .await
        .expect("the image pulled");
    assert_eq!(first.id, a.config);

    // Another image under the same name, pulled into the store by imgpull while crid
    // runs: crid's next answers are about it.
    let mut bigger = Image::new(vec![
        e2e::Layer::busybox(Compression::Gzip),
        e2e::Layer::large("data/big", 1, Compression::Gzip),
    ]);
    bigger.cmd = vec!["/bin/true".into()];
    let b = reg.push("cri/app", &bigger);
    assert_eq!(a.reference, b.reference);
    assert_ne!(a.config, b.config);
    let imgpull = |args: &[&str]| {
        let mut c = std::process::Command::new(bin("imgpull"));
        c.arg("--root").arg(&crid.root).args(args);
        run(c, Duration::from_secs(60)).ok();
    };
    imgpull(&["--insecure-registry", &reg.addr, &b.reference]);
    let second = image_of(&mut img, &b.reference)
        .await
        .expect("the image imgpull pulled");
    assert_eq!(second.id, b.config);
    assert!(
        second.size > first.size + 1024 * 1024,
        "{} then {}",
        first.size,
        second.size
    );
    let listed = all_images(&mut img).await;
    let named: Vec<&str> = listed
        .iter()
        .filter(|i| i.repo_tags.contains(&b.reference))
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(named, [b.config.as_str()], "{listed:?}");

    // Removed by imgpull: gone for crid too.
    imgpull(&["--remove", &b.reference]);
    assert_eq!(image_of(&mut img, &b.reference).await, None);
    let listed = all_images(&mut img).await;
    assert!(
        listed.iter().all(|i| !i.repo_tags.contains(&b.reference)),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_share_one_download() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let p = reg.push("cri/shared", &Image::large("big.bin", 4, Compression::None));
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
    let p = reg.push("cri/slow", &Image::large("big.bin", 6, Compression::None));
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
    let p = reg.push("private/app", &Image::busybox());
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
    let basic = |password: &str| cri::AuthConfig {
        username: "alice".into(),
        password: password.into(),
        ..Default::default()
    };
    let e = img.pull_image(with(basic("wrong"))).await.unwrap_err();
    assert!(e.message().contains("401"), "{e:?}");
    let encoded = cri::AuthConfig {
        auth: "YWxpY2U6czNjcmV0".into(), // alice:s3cret
        ..Default::default()
    };
    for auth in [basic("s3cret"), encoded] {
        let r = img
            .pull_image(with(auth))
            .await
            .unwrap_or_else(|e| panic!("{e:?}: {}", crid.stderr()));
        assert_eq!(r.into_inner().image_ref, p.config);
    }
    // The token those credentials got is theirs: a pull without them, or with
    // others, does not ride on it.
    let e = img.pull_image(pull_request(&reference)).await.unwrap_err();
    assert!(e.message().contains("401"), "{e:?}");
    let e = img.pull_image(with(basic("wrong"))).await.unwrap_err();
    assert!(e.message().contains("401"), "{e:?}");
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
