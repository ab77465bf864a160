//! CheckpointContainer with CRIU, and containers restored from checkpoint archives
//! and checkpoint images, where they left off. These need CRIU and a runtime with a
//! checkpoint command (see `e2e::skip`).

use e2e::crid::{Network, World};
use e2e::pods::*;
use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode::{Container as OwnPid, Pod as SharedPid};
use std::path::Path;
use std::time::{Duration, Instant};

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
        .run_sh(
            &pod,
            &config,
            "c",
            "echo changed > /made; echo ready; exec sleep 1000",
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
    let ended = w.run_sh(&pod, &config, "ended", "exit 0").await;
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
    let id = w.run_sh(&pod, &config, "counter", script).await;
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
        .pull_image(e2e::crid::pull_request(image.clone()))
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
    img.pull_image(e2e::crid::pull_request(image.clone()))
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
