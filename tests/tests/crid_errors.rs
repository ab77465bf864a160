//! crid's error paths, as a client sees them: the gRPC code says what happened
//! (the request was wrong, the runtime failed, the disk is full), the message
//! carries the cause, and nothing of a failed request is left behind. The runtime
//! failures come from a stand-in: runc itself, except for the subcommands a test
//! asks to fail, which fail the way runc does.

use e2e::crid::{Network, World};
use e2e::image::{push, Compression};
use e2e::{Image, TempRoot};
use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode::Container as OwnPid;
use std::path::PathBuf;
use tonic::Code;

/// A stand-in OCI runtime: `runc "$@"`, except that a subcommand listed in its
/// `fail` file fails with the message given there, in the JSON log when the caller
/// asked for one (`--log`), and on stderr in runc's text format.
struct StandIn {
    dir: TempRoot,
}

impl StandIn {
    fn new() -> StandIn {
        let dir = TempRoot::new();
        let script = format!(
            r#"#!/bin/sh
FAIL={fail}
echo "$@" >>{calls}
log= prev= verb=
for a in "$@"; do
  [ "$prev" = --log ] && log=$a
  case "$a" in create|start|kill|delete|update|exec) [ -z "$verb" ] && verb=$a;; esac
  prev=$a
done
if [ -n "$verb" ] && [ -f "$FAIL" ] && grep -q "^$verb " "$FAIL"; then
  msg=$(grep "^$verb " "$FAIL" | head -n 1 | cut -d' ' -f2-)
  [ -n "$log" ] && printf '{{"level":"error","msg":"%s","time":"2026-01-01T00:00:00Z"}}\n' "$msg" >>"$log"
  printf 'time="2026-01-01T00:00:00Z" level=error msg="%s"\n' "$msg" >&2
  exit 1
fi
exec runc "$@"
"#,
            fail = dir.path().join("fail").display(),
            calls = dir.path().join("calls").display()
        );
        let path = dir.path().join("runtime");
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        StandIn { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("runtime")
    }

    /// Every command line it was run with, one a line.
    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default()
    }

    /// Makes `verb` fail with `message` (none with an empty verb).
    fn fail(&self, verb: &str, message: &str) {
        let text = if verb.is_empty() {
            String::new()
        } else {
            format!("{verb} {message}\n")
        };
        std::fs::write(self.dir.path().join("fail"), text).unwrap();
    }
}

/// Directories under `<root>/containers` and mounts below crid's root.
fn leftovers(w: &World) -> (Vec<String>, Vec<String>) {
    let dirs = std::fs::read_dir(w.crid.root.join("containers"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let mounts = e2e::mounts_under(&w.crid.root.join("containers"))
        .iter()
        .map(|m| m.display().to_string())
        .collect();
    (dirs, mounts)
}

async fn containers(w: &World) -> Vec<cri::Container> {
    w.rt.clone()
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_failures_are_unknown_with_the_runtimes_message_and_leave_nothing() {
    let runtime = StandIn::new();
    let flag = runtime.path().display().to_string();
    let w = World::new(Network::Loopback, &["--runtime", &flag]).await;
    let config = w.pod_config("errs", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();

    // create: ctrmon reports the runtime's error; nothing of the container stays.
    runtime.fail("create", "injected create failure");
    let e = w
        .create(&pod, &config, w.container_config("c1", "sleep 100"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unknown, "{e:?}");
    assert!(e.message().starts_with("creating container c1: "), "{e:?}");
    assert!(
        e.message().contains("create: injected create failure"),
        "{e:?}"
    );
    assert!(containers(&w).await.is_empty());
    assert_eq!(leftovers(&w), (vec![], vec![]), "nothing left of c1");

    // The runtime's own "no space left on device" is a full disk to the client.
    runtime.fail("create", "mkdir /sys/fs/cgroup/x: no space left on device");
    let e = w
        .create(&pod, &config, w.container_config("c1", "sleep 100"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");

    // start: the container stays created, and can be started once the runtime works.
    runtime.fail("start", "injected start failure");
    let id = w
        .create(&pod, &config, w.container_config("c1", "sleep 100"))
        .await
        .unwrap();
    let mut rt = w.rt.clone();
    let e = rt
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unknown, "{e:?}");
    assert_eq!(
        e.message(),
        format!(
            "starting container {id}: {} start: injected start failure",
            runtime.path().display()
        )
    );
    assert_eq!(
        w.status(&id).await.state,
        cri::ContainerState::ContainerCreated as i32
    );

    // update: the recorded resources stay as they were.
    runtime.fail("update", "injected update failure");
    let e = rt
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                cpu_shares: 256,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unknown, "{e:?}");
    assert!(
        e.message().contains("update: injected update failure"),
        "{e:?}"
    );
    assert_eq!(w.status(&id).await.resources, None);

    runtime.fail("", "");
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        w.status(&id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );

    // Requests that are wrong say so: a group without a user (issue 11), …
    let mut c = w.container_config("grouponly", "true");
    c.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_group: Some(cri::Int64Value { value: 10 }),
            ..Default::default()
        }),
    });
    let e = w.create(&pod, &config, c).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("RunAsGroup"), "{e:?}");
    // … an unknown container, one that is not in the created state.
    let e = rt
        .start_container(cri::StartContainerRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "container nope not found")
    );
    let e = rt
        .start_container(cri::StartContainerRequest { container_id: id })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    w.remove_pod(&pod).await;
    assert_eq!(leftovers(&w), (vec![], vec![]));
    // A DNS server with a line of its own in it: refused, no pod made.
    let mut bad = w.pod_config("dns", OwnPid);
    if let Some(d) = bad.dns_config.as_mut() {
        d.servers = vec!["10.0.0.10\nnameserver 192.0.2.66".into()];
    }
    let e = w.run_pod(&bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("config.dns_config.servers[0]"),
        "{e:?}"
    );
    let pods = w.pods().await;
    assert!(pods.is_empty(), "{pods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_resource_exhausted_and_names_the_cause() {
    let w = World::on_tmpfs(Network::Loopback, &[], "8m").await;
    let big = push(
        &w.reg.addr,
        "disk/big",
        "1",
        &Image::large("big.bin", 12, Compression::None),
    );
    let mut img = w.img.clone();
    let e = img
        .pull_image(e2e::crid::pull_request(big.reference.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("No space left on device"), "{e:?}");

    let config = w.pod_config("full", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    // Fill what is left; the container's layer cannot be unpacked.
    let filler = w.crid.root.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let e = w
        .create(&pod, &config, w.container_config("c", "sleep 100"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("No space left on device"), "{e:?}");
    assert!(e.message().starts_with("container c: "), "{e:?}");
    assert_eq!(leftovers(&w), (vec![], vec![]));

    // With room again the same request works: nothing stored was damaged.
    std::fs::remove_file(&filler).unwrap();
    let id = w.run_sh(&pod, &config, "c", "echo fine; sleep 100").await;
    let out = w
        .exec(&id, &["/bin/sh", "-c", "echo $FOO"], 10)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"bar\n");
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_runtime_handler_runs_its_containers() {
    let standin = StandIn::new();
    let conf = standin.dir.path().join("crid.toml");
    let root = standin.dir.path().join("standin-root");
    std::fs::write(
        &conf,
        format!(
            "[runtimes.standin]\npath = {:?}\nroot = {:?}\nrecursive-read-only-mounts = false\n\
             args = [\"--rootless=false\"]\n",
            standin.path().display().to_string(),
            root.display().to_string()
        ),
    )
    .unwrap();
    let flag = conf.display().to_string();
    let w = World::new(Network::Loopback, &["--config", &flag]).await;
    let mut rt = w.rt.clone();

    // Status lists the handlers with their features, the default also as "".
    let handlers = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .runtime_handlers;
    let names: Vec<&str> = handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names[0], "", "the default first: {names:?}");
    assert!(
        names.contains(&"runc") && names.contains(&"standin"),
        "{names:?}"
    );
    let feature = |name: &str| {
        handlers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.features.as_ref())
            .map(|f| f.recursive_read_only_mounts)
    };
    assert_eq!(
        (feature("standin"), feature("runc"), feature("")),
        (Some(false), Some(true), Some(true))
    );

    // An unknown handler is a bad request.
    let config = w.pod_config("handler", OwnPid);
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("\"nope\" is not configured"), "{e:?}");

    // The pod's handler runs its containers, with its own state root.
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "standin".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let id = w
        .run_sh(&pod, &config, "c", "echo via the handler; sleep 100")
        .await;
    let out = w.exec(&id, &["/bin/echo", "exec too"], 10).await.unwrap();
    assert_eq!(out.stdout, b"exec too\n");
    w.remove_pod(&pod).await;
    let calls = standin.calls();
    let root = root.display().to_string();
    for verb in ["create", "start", "exec", "kill", "delete"] {
        assert!(
            calls.lines().any(
                |l| l.starts_with(&format!("--root {root} --rootless=false"))
                    && l.split(' ').any(|w| w == verb)
            ),
            "{verb} through the handler, with its root and args: {calls}"
        );
    }
    assert!(!calls.lines().any(|l| !l.contains(&root)), "{calls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_callers_deadline_is_deadline_exceeded() {
    let w = World::new(Network::Loopback, &[]).await;
    let big = push(
        &w.reg.addr,
        "slow/big",
        "1",
        &Image::large("big.bin", 16, Compression::None),
    );
    // The header alone, with no timer in this client: what crid answers is what
    // arrives, as for a Go client whose own timer fires late.
    let mut bare = w.crid.images_without_timer().await;
    let mut req = tonic::Request::new(e2e::crid::pull_request(big.reference.clone()));
    req.metadata_mut()
        .insert("grpc-timeout", "20m".parse().unwrap());
    let t0 = std::time::Instant::now();
    let e = bare.pull_image(req).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    // Without one, the same pull completes.
    w.img
        .clone()
        .pull_image(e2e::crid::pull_request(big.reference))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_keeps_its_runtime_when_the_default_changes() {
    if !e2e::skip::require(
        "crun",
        e2e::skip::runs("crun", &["--version"]),
        "it is not on PATH",
    ) {
        return;
    }
    let mut w = World::new(Network::Loopback, &["--default-runtime", "runc"]).await;
    let config = w.pod_config("keep-runtime", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let new = w.run_sh(&pod, &config, "new", "exec sleep 1003").await;
    let old = w.run_sh(&pod, &config, "old", "exec sleep 1004").await;
    let status = w.crid.stop_with(nix::sys::signal::Signal::SIGKILL);
    assert!(!status.success());
    // `old` as an earlier crid recorded it: no handler's name, the default meant.
    let file = w
        .crid
        .root
        .join("containers")
        .join(&old)
        .join("container.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(record["runtime_handler"], "runc", "{record}");
    record["runtime_handler"] = "".into();
    std::fs::write(&file, record.to_string()).unwrap();
    w.restart_with(&["--default-runtime", "crun"]).await;
    // Both still run under runc: they stop, and runc's state of them goes.
    let runc_root = w.crid.run_dir.join("runc");
    for c in [&new, &old] {
        assert!(runc_root.join(c).is_dir(), "{c} in runc's state");
        w.rt.clone()
            .stop_container(cri::StopContainerRequest {
                container_id: c.to_string(),
                timeout: 0,
            })
            .await
            .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
        let s = w.status(c).await;
        assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    }
    w.remove_pod(&pod).await;
    for c in [&new, &old] {
        assert!(!runc_root.join(c).exists(), "{c} left in runc's state");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_that_races_its_containers_end_is_failed_precondition() {
    // kubelet's probes go on while it stops a pod: an exec the runtime is starting
    // as the container ends fails with the runtime's words for it. The caller
    // must learn that the container is not running, not that the runtime failed.
    let w = World::new(Network::Loopback, &[]).await;
    let config = w.pod_config("racing", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let (mut ok, mut not_running) = (0, 0);
    for round in 0..8 {
        let id = w
            .run_sh(&pod, &config, &format!("r{round}"), "exec sleep 1000")
            .await;
        let mut execs = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (mut rt, id) = (w.rt.clone(), id.clone());
            execs.spawn(async move {
                let mut got = vec![];
                loop {
                    let r = rt
                        .exec_sync(cri::ExecSyncRequest {
                            container_id: id.clone(),
                            cmd: vec!["/bin/true".into()],
                            timeout: 10,
                        })
                        .await;
                    let done = r.is_err();
                    got.push(r.map(|r| r.into_inner().exit_code));
                    if done || got.len() > 200 {
                        return got;
                    }
                }
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(50 + 20 * round)).await;
        w.rt.clone()
            .stop_container(cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await
            .unwrap();
        while let Some(got) = execs.join_next().await {
            for r in got.unwrap() {
                match r {
                    Ok(_) => ok += 1,
                    Err(e) if e.code() == tonic::Code::FailedPrecondition => not_running += 1,
                    Err(e) => panic!("an exec as {id} ended: {e:?}"),
                }
            }
        }
    }
    assert!(
        ok > 0 && not_running > 0,
        "{ok} execs ran, {not_running} found it ended"
    );
}
