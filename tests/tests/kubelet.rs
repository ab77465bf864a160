//! A real kubelet (standalone, static pods) driving crid: what kubelet does that
//! crictl and critest do not. Runs when kubelet is on PATH (or KUBELET); says so
//! when it is not.

use e2e::crid::{Network, World};
use e2e::kubelet::{container_status, Kubelet};
use serde_json::json;
use std::time::Duration;

const READY: Duration = Duration::from_secs(90);

/// A pod of an init container that writes into an emptyDir and an app container
/// that serves what it wrote, Ready through an exec readiness probe that reads it.
fn init_and_app(w: &World, name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid")},
        "spec": {
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
        }
    })
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
    // crid holds the pod and both containers, the init one exited.
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
    let errors = unexplained(&k.errors());
    assert!(
        errors.is_empty(),
        "kubelet logged errors:\n{}",
        errors.join("\n")
    );
}

/// kubelet's error lines less those it logs whatever the runtime, each for the
/// reason given.
fn unexplained(errors: &[String]) -> Vec<String> {
    const ANY_RUNTIME: &[&str] = &[
        // This machine's kernel refuses both.
        "Failed to set rlimit on max file handles",
        "Failed to ensure process in container with oom score",
        // The first seconds, before the first relist.
        "PLEG is not healthy: pleg has yet to be successful",
        // kubelet's cAdvisor names the image filesystem only for containerd's and
        // CRI-O's default sockets.
        "no imagefs label for configured runtime",
    ];
    errors
        .iter()
        .filter(|e| !ANY_RUNTIME.iter().any(|known| e.contains(known)))
        // kubelet's container deletor removes a dead container twice and logs the
        // second status lookup's NotFound.
        .filter(|e| {
            !(e.contains("ContainerStatus from runtime service failed")
                && e.contains("code = NotFound"))
        })
        .cloned()
        .collect()
}
