//! Load that a node agent can put on crid: a thousand List and Status calls at
//! once, each with its deadline, while pods are created and removed beside them.
//! Every call is answered in time, and crid's memory and descriptors come back.

use e2e::crid::{Network, World};
use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode::Container as OwnPid;
use std::time::{Duration, Instant};

const CALLS: usize = 1000;
const DEADLINE: Duration = Duration::from_secs(20);

fn with_deadline<T>(msg: T, deadline: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(deadline);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_list_and_status_calls_at_once_are_answered_in_time_while_pods_churn() {
    let w = World::new(Network::Loopback, &[]).await;
    let config = w.pod_config("steady", OwnPid);
    let pod = w.run_pod(&config).await.expect("the steady pod");
    let ctr = w
        .start(&pod, &config, w.container_config("app", "sleep 1000"))
        .await;
    let start = w.crid.footprint();

    let churning = std::sync::atomic::AtomicBool::new(true);
    let churn = async {
        for i in 0..8 {
            let c = w.pod_config(&format!("churn{i}"), OwnPid);
            let id = w.run_pod(&c).await.expect("a churning pod");
            w.start(&id, &c, w.container_config("app", "sleep 1000"))
                .await;
            w.remove_pod(&id).await;
        }
        churning.store(false, std::sync::atomic::Ordering::Relaxed);
    };
    // Waves of CALLS at once, for as long as the pods churn.
    let calls = async {
        let mut out = Vec::new();
        let mut waves = 0;
        while waves == 0 || churning.load(std::sync::atomic::Ordering::Relaxed) {
            out.extend(wave(&w, &pod, &ctr).await);
            waves += 1;
        }
        (waves, out)
    };
    let ((), (waves, answers)) = tokio::join!(churn, calls);

    let failed: Vec<_> = answers
        .iter()
        .filter_map(|(i, r, _)| r.as_ref().err().map(|e| format!("call {i}: {e:?}")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} calls failed: {failed:#?}",
        failed.len()
    );
    let mut took: Vec<Duration> = answers.iter().map(|(_, _, t)| *t).collect();
    took.sort();
    let (p50, max) = (took[took.len() / 2], took[took.len() - 1]);
    assert!(max < DEADLINE, "the slowest call took {max:?}");
    // Memory and descriptors once the load is gone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = w.crid.footprint();
    println!(
        "{waves} waves of {CALLS} calls: p50 {p50:?}, max {max:?}; RSS {} -> {} KiB, fds {} -> {}",
        start.0, end.0, start.1, end.1
    );
    assert!(end.1 <= start.1 + 2, "fds {} -> {}", start.1, end.1);
    assert!(
        end.0 <= start.0 + 64 * 1024,
        "RSS {} -> {} KiB",
        start.0,
        end.0
    );
    w.remove_pod(&pod).await;
}

type Answer = (usize, Result<(), tonic::Status>, Duration);

/// CALLS List and Status calls at once, each with its deadline: their answers.
async fn wave(w: &World, pod: &str, ctr: &str) -> Vec<Answer> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let mut rt = w.rt.clone();
        let (pod, ctr) = (pod.to_string(), ctr.to_string());
        set.spawn(async move {
            let t = Instant::now();
            let r = match i % 5 {
                0 => rt
                    .list_pod_sandbox(with_deadline(
                        cri::ListPodSandboxRequest { filter: None },
                        DEADLINE,
                    ))
                    .await
                    .map(|_| ()),
                1 => rt
                    .list_containers(with_deadline(
                        cri::ListContainersRequest { filter: None },
                        DEADLINE,
                    ))
                    .await
                    .map(|_| ()),
                2 => rt
                    .pod_sandbox_status(with_deadline(
                        cri::PodSandboxStatusRequest {
                            pod_sandbox_id: pod,
                            verbose: false,
                        },
                        DEADLINE,
                    ))
                    .await
                    .map(|_| ()),
                3 => rt
                    .container_status(with_deadline(
                        cri::ContainerStatusRequest {
                            container_id: ctr,
                            verbose: false,
                        },
                        DEADLINE,
                    ))
                    .await
                    .map(|_| ()),
                _ => rt
                    .list_container_stats(with_deadline(
                        cri::ListContainerStatsRequest { filter: None },
                        DEADLINE,
                    ))
                    .await
                    .map(|_| ()),
            };
            (i, r, t.elapsed())
        });
    }
    let mut out = Vec::with_capacity(CALLS);
    while let Some(r) = set.join_next().await {
        out.push(r.expect("a call's task"));
    }
    out
}
