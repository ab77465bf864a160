//! Images as kubelet manages them through crid: PullImage leaves every layer
//! unpacked, RemoveImage gives the disk back down to what other images use, pinned
//! images are reported pinned, image volumes mount an image read-only and keep it
//! in use, and a crid killed during a pull starts again with a consistent store.

use e2e::crid::{pull_request, Crid, Network, World};
use e2e::{
    check_store, disk_usage, layer_cache, Compression, Entry, Fault, Image, Layer, Proxy, TempRoot,
};
use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode::Container as OwnPid;
use std::path::Path;
use std::time::Duration;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// The chain ids (hex) of an image's layers, from its config's diff_ids, as the
/// image spec defines them.
fn chain_ids(root: &Path, config_digest: &str) -> Vec<String> {
    let config = std::fs::read(
        root.join("images/blobs/sha256")
            .join(config_digest.trim_start_matches("sha256:")),
    )
    .expect("config blob");
    let v: serde_json::Value = serde_json::from_slice(&config).expect("config json");
    let mut out: Vec<String> = Vec::new();
    for d in v["rootfs"]["diff_ids"].as_array().expect("diff_ids") {
        let d = d.as_str().expect("a diff_id").to_string();
        let next = match out.last() {
            None => d,
            Some(prev) => e2e::sha256(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out.iter()
        .map(|c| c.trim_start_matches("sha256:").to_string())
        .collect()
}

/// RemoveImage of `image`, which must be refused as FAILED_PRECONDITION; the error.
async fn removal_refused(
    img: &k8s_cri::v1::image_service_client::ImageServiceClient<tonic::transport::Channel>,
    image: &str,
) -> tonic::Status {
    let e = img
        .clone()
        .remove_image(cri::RemoveImageRequest { image: spec(image) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    e
}

fn app_image() -> Image {
    Image::new(vec![
        Layer::busybox(Compression::Gzip),
        Layer::new(
            &[Entry::File(
                "app/data".into(),
                b"app data\n".to_vec(),
                0o644,
            )],
            Compression::Zstd,
        ),
        Layer::large("app/big.bin", 6, Compression::Gzip),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_image_is_ready_to_run_and_its_removal_gives_the_disk_back() {
    let w = World::new(Network::Loopback, &[]).await;
    let root = w.crid.root.clone();
    let mut img = w.img.clone();
    // The test image (busybox) is pulled and unpacked already.
    let base = chain_ids(&root, &w.image_id);
    assert_eq!(layer_cache(&root).0, base);
    let before = disk_usage(&[&root.join("images"), &root.join("layers")]);

    let p = w.reg.push("images/app", &app_image());
    img.pull_image(pull_request(&p.reference)).await.unwrap();
    // Every layer is in place before any container is made: the first create
    // unpacks nothing. The busybox layer is shared, not unpacked twice.
    let chains = chain_ids(&root, &p.config);
    assert_eq!(chains[0], base[0]);
    let (layers, debris) = layer_cache(&root);
    assert!(debris.is_empty(), "{debris:?}");
    let mut want: Vec<String> = chains.clone();
    want.sort();
    assert_eq!(layers, want);
    let full = disk_usage(&[&root.join("images"), &root.join("layers")]);
    assert!(full > before + (6 << 20), "{before} → {full}");

    let config = w.pod_config("app", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let mut c = w.container_config("app", "cat /app/data; sleep 600");
    c.image = spec(&p.reference);
    let id = w.start(&pod, &config, c).await;
    w.wait_for_log(&w.tmp.path().join("logs/app/app.log"), "app data")
        .await;
    assert_eq!(
        layer_cache(&root).0,
        want,
        "the create unpacked nothing new"
    );

    // In use: refused, and nothing is lost.
    let e = removal_refused(&img, &p.reference).await;
    assert!(e.message().contains(&id), "{e:?}");
    assert_eq!(layer_cache(&root).0, want);

    w.remove_pod(&pod).await;
    img.remove_image(cri::RemoveImageRequest {
        image: spec(&p.reference),
    })
    .await
    .unwrap();
    // The app's own layers went at once; busybox's, which the test image uses,
    // stayed. Their files are deleted by a thread of crid's: the disk comes back
    // shortly after.
    assert_eq!(layer_cache(&root).0, base);
    e2e::wait_for("the disk to come back", || {
        disk_usage(&[&root.join("images"), &root.join("layers")]) <= before + (16 << 10)
    });
    let after = disk_usage(&[&root.join("images"), &root.join("layers")]);
    // ImageFsInfo counts what is there.
    let fs = img
        .image_fs_info(cri::ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let used = fs.image_filesystems[0].used_bytes.as_ref().unwrap().value;
    assert!(
        used <= before + (16 << 10) && used + (16 << 10) >= after,
        "{used} vs {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_images_and_the_pause_image_are_reported_pinned() {
    let w = World::with_pause_image(Network::Loopback, &["--pinned-images", "*/keep/*"]).await;
    let mut img = w.img.clone();
    let kept = w.reg.push("keep/tool", &Image::busybox());
    let other = w.reg.push("other/tool", &Image::busybox());
    for p in [&kept, &other] {
        img.pull_image(pull_request(&p.reference)).await.unwrap();
    }
    // The first pod that shares its PID namespace pulls the pause image.
    let config = w.pod_config("pinned", k8s_cri::v1::NamespaceMode::Pod);
    let pod = w.run_pod(&config).await.unwrap();
    let list = img
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    let pinned = |name: &str| {
        list.iter()
            .find(|i| i.repo_tags.iter().any(|t| t.contains(name)))
            .unwrap_or_else(|| panic!("{name} in {list:?}"))
            .pinned
    };
    // busybox under three names is one image (one config): pinned because one of
    // its names is keep/tool.
    assert!(pinned("keep/tool") && pinned("other/tool"));
    assert!(pinned("cri/pause"), "the pause image");
    let status = img
        .image_status(cri::ImageStatusRequest {
            image: spec(&format!("{}/cri/pause:1", w.reg.addr)),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.expect("the pause image").pinned);
    w.remove_pod(&pod).await;
    drop(w);

    // A pattern crid cannot read stops it at start, naming the pattern.
    let tmp = TempRoot::new();
    let out = std::process::Command::new(e2e::bin("crid"))
        .arg("--root")
        .arg(tmp.path().join("root"))
        .args(["--pinned-images", "a*b", "config"])
        .output()
        .expect("crid config");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pinned-images: \"a*b\""), "{err}");
    // Not pinned when no pattern matches.
    let w = World::new(Network::Loopback, &["--pinned-images", "quay.io/x/*"]).await;
    let list = w
        .img
        .clone()
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(list.iter().all(|i| !i.pinned), "{list:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_volume_is_the_image_read_only_and_keeps_it_in_use() {
    let w = World::new(Network::Loopback, &[]).await;
    let root = w.crid.root.clone();
    let mut img = w.img.clone();
    let data = Image::new(vec![
        Layer::new(
            &[
                Entry::File("models/one".into(), b"first\n".to_vec(), 0o644),
                Entry::File("models/gone".into(), b"x".to_vec(), 0o644),
            ],
            Compression::Gzip,
        ),
        Layer::new(
            &[
                Entry::File("models/.wh.gone".into(), Vec::new(), 0o644),
                Entry::File("models/two".into(), b"second\n".to_vec(), 0o644),
            ],
            Compression::None,
        ),
    ]);
    let p = w.reg.push("images/data", &data);
    let pulled = img
        .pull_image(pull_request(&p.reference))
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    let config = w.pod_config("vol", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let mut c = w.container_config(
        "vol",
        "ls /data/models; cat /data/models/one /data/models/two; \
         touch /data/models/new 2>&1 || echo refused; sleep 600",
    );
    c.mounts.push(cri::Mount {
        container_path: "/data".into(),
        image: spec(&pulled),
        ..Default::default()
    });
    let id = w.start(&pod, &config, c.clone()).await;
    let log = w
        .wait_for_log(&w.tmp.path().join("logs/vol/vol.log"), "refused")
        .await;
    let lines: Vec<&str> = log
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
        .collect();
    assert_eq!(
        &lines[..4],
        ["one", "two", "first", "second"],
        "the whiteout hides `gone`: {log}"
    );
    assert!(log.contains("Read-only file system"), "{log}");
    let status = w.status(&id).await;
    let m = status
        .mounts
        .iter()
        .find(|m| m.container_path == "/data")
        .expect("the image volume in the status");
    assert_eq!(
        m.image.as_ref().map(|i| i.image.as_str()),
        Some(p.config.as_str())
    );
    assert!(m.readonly);

    // In use while the container exists.
    let e = removal_refused(&img, &p.reference).await;
    assert!(e.message().contains("in use by container"), "{e:?}");

    // Bad requests: a host path besides the image, no image, an image not pulled.
    for (mount, code, says) in [
        (
            cri::Mount {
                container_path: "/x".into(),
                host_path: "/srv".into(),
                image: spec(&pulled),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "has no host path",
        ),
        (
            cri::Mount {
                container_path: "/x".into(),
                image: spec(""),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
            "names no image",
        ),
        (
            cri::Mount {
                container_path: "/x".into(),
                image: spec(&format!("{}/images/never:1", w.reg.addr)),
                ..Default::default()
            },
            tonic::Code::NotFound,
            "pull it first",
        ),
    ] {
        let mut bad = w.container_config("bad", "true");
        bad.mounts.push(mount);
        let e = w.create(&pod, &config, bad).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(says), "{e:?}");
    }

    w.remove_pod(&pod).await;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains("image-volumes"))
        .collect();
    assert!(
        left.is_empty(),
        "unmounted with the container: {left:?}: {}",
        w.crid.stderr()
    );
    img.remove_image(cri::RemoveImageRequest {
        image: spec(&p.reference),
    })
    .await
    .unwrap();
    let chains = chain_ids(&root, &w.image_id);
    assert_eq!(
        layer_cache(&root).0,
        chains,
        "the volume image's layers went"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crid_killed_during_a_pull_starts_with_a_consistent_store_and_no_orphan_layer() {
    let reg = e2e::Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let p = reg.push("kill/app", &app_image());
    proxy.fault("/blobs/", Fault::Throttle(4 << 20), None);
    let reference = p.reference.replace(&reg.addr, &proxy.addr);
    let tmp = TempRoot::new();
    let args = ["--insecure-registry", proxy.addr.as_str()];
    for delay in [300u64, 900, 1600] {
        let mut crid = Crid::start(tmp.path(), &args);
        let mut img = crid.images().await;
        let r = reference.clone();
        let pull = tokio::spawn(async move { img.pull_image(pull_request(&r)).await });
        tokio::time::sleep(Duration::from_millis(delay)).await;
        crid.stop_with(nix::sys::signal::Signal::SIGKILL);
        let _ = pull.await;
        // Started again: the store is consistent, and every layer in place
        // belongs to an image in it (none yet, or the whole image).
        let crid = Crid::start(tmp.path(), &args);
        let names = check_store(&crid.root.join("images"));
        let (layers, debris) = layer_cache(&crid.root);
        assert!(debris.is_empty(), "after a kill at {delay} ms: {debris:?}");
        if names.is_empty() {
            assert!(
                layers.is_empty(),
                "orphans after a kill at {delay} ms: {layers:?}"
            );
        } else {
            let mut want = chain_ids(&crid.root, &p.config);
            want.sort();
            assert_eq!(layers, want);
        }
        drop(crid);
    }
    // And the pull completes.
    proxy.clear();
    let crid = Crid::start(tmp.path(), &args);
    let mut img = crid.images().await;
    img.pull_image(pull_request(&reference)).await.unwrap();
    let mut want = chain_ids(&crid.root, &p.config);
    want.sort();
    assert_eq!(layer_cache(&crid.root).0, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_and_removals_are_told_in_the_events_file() {
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("events.jsonl");
    let feed_arg = feed.display().to_string();
    let w = World::new(Network::Loopback, &["--events-file", &feed_arg]).await;
    let mut img = w.img.clone();
    let p = w.reg.push("images/told", &app_image());
    img.pull_image(pull_request(&p.reference)).await.unwrap();
    let missing = format!("{}/images/told:nope", w.reg.addr);
    img.pull_image(pull_request(&missing)).await.unwrap_err();
    img.remove_image(cri::RemoveImageRequest {
        image: spec(&p.reference),
    })
    .await
    .unwrap();
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&feed)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter(|l: &serde_json::Value| {
                l["type"].as_str().is_some_and(|t| t.starts_with("IMAGE_"))
            })
            .collect()
    };
    e2e::wait_for("the removal in the feed", || {
        lines().iter().any(|l| l["type"] == "IMAGE_REMOVED")
    });
    let of = |image: &str| -> Vec<serde_json::Value> {
        lines()
            .into_iter()
            .filter(|l| l["image"] == image)
            .collect()
    };
    let told = of(&p.reference);
    let kinds: Vec<&str> = told.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"IMAGE_PULL_STARTED"), "{kinds:?}");
    assert!(kinds.contains(&"IMAGE_PULL_PROGRESS"), "{kinds:?}");
    // Two layers of its own; busybox's was there already.
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "IMAGE_LAYER_UNPACKED")
            .count(),
        2,
        "{kinds:?}"
    );
    let pulled = told
        .iter()
        .find(|l| l["type"] == "IMAGE_PULLED")
        .expect("IMAGE_PULLED");
    assert_eq!(pulled["id"], p.config, "{pulled}");
    assert_eq!(pulled["layers_unpacked"], 2, "{pulled}");
    assert!(pulled["bytes"].as_u64().unwrap() > 1 << 20, "{pulled}");
    assert_eq!(pulled["version"], 1);
    assert!(pulled["time"].as_str().unwrap().ends_with('Z'), "{pulled}");
    let removed = told
        .iter()
        .find(|l| l["type"] == "IMAGE_REMOVED")
        .expect("IMAGE_REMOVED");
    assert_eq!(removed["id"], p.config, "{removed}");
    let failed = of(&missing);
    let kinds: Vec<&str> = failed.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(kinds, ["IMAGE_PULL_STARTED", "IMAGE_PULL_FAILED"]);
    assert!(
        failed[1]["error"]
            .as_str()
            .unwrap()
            .contains("manifest unknown"),
        "{}",
        failed[1]
    );
}
