//! Container events: GetContainerEvents from creation to removal, a subscriber that
//! stops reading, and the JSON-lines feed with its rotation.

use e2e::crid::{Network, World};
use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode::Container as OwnPid;
use std::path::PathBuf;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_events_follow_each_container_from_creation_to_removal() {
    use futures_util::StreamExt;
    use std::collections::HashMap;
    use tokio::time::timeout;
    let w = World::new(Network::Loopback, &[]).await;
    let subscribe = || async {
        w.rt.clone()
            .get_container_events(cri::GetEventsRequest {})
            .await
            .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()))
            .into_inner()
    };
    let mut first = subscribe().await;
    let mut second = subscribe().await;
    let config = w.pod_config("events", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let long = w.run_sh(&pod, &config, "long", "exec sleep 1005").await;
    let short = w.run_sh(&pod, &config, "short", "sleep 1; exit 3").await;
    // The short one ends by itself; the long one is stopped; both are removed, and
    // the pod, which has events of its own.
    let mut seen: HashMap<String, Vec<i32>> = HashMap::new();
    let mut stopped_short = None;
    let mut all = vec![];
    while seen.values().map(Vec::len).sum::<usize>() < 12 {
        let n = seen.values().map(Vec::len).sum::<usize>();
        if n == 7 {
            // The pod's and the containers' created and started, the short one's
            // stop: now the long one.
            w.rt.clone()
                .stop_container(cri::StopContainerRequest {
                    container_id: long.clone(),
                    timeout: 0,
                })
                .await
                .unwrap();
        }
        if n == 8 {
            w.remove_pod(&pod).await;
        }
        let e = timeout(Duration::from_secs(10), first.next())
            .await
            .unwrap_or_else(|_| panic!("no event after {seen:?}"))
            .expect("the stream goes on")
            .unwrap();
        if e.container_id == short
            && e.container_event_type == cri::ContainerEventType::ContainerStoppedEvent as i32
        {
            stopped_short = Some(e.clone());
        }
        seen.entry(e.container_id.clone())
            .or_default()
            .push(e.container_event_type);
        all.push(e);
    }
    use cri::ContainerEventType::*;
    let life = vec![
        ContainerCreatedEvent as i32,
        ContainerStartedEvent as i32,
        ContainerStoppedEvent as i32,
        ContainerDeletedEvent as i32,
    ];
    assert_eq!(seen[&long], life);
    assert_eq!(seen[&short], life);
    assert_eq!(seen[&pod], life);
    // The pod's come first and last.
    assert_eq!(all[0].container_id, pod);
    assert_eq!(all[11].container_id, pod);
    // Each event carries the pod's status and its containers' as they were.
    let e = stopped_short.expect("the short one's stop");
    assert_eq!(
        e.pod_sandbox_status.as_ref().map(|p| p.id.as_str()),
        Some(pod.as_str())
    );
    let s = e
        .containers_statuses
        .iter()
        .find(|s| s.id == short)
        .expect("its status");
    assert_eq!(
        (s.state, s.exit_code),
        (cri::ContainerState::ContainerExited as i32, 3)
    );
    // The pod's removal says which pod, as it was, and that no container is left.
    let deleted = all.last().unwrap();
    assert!(deleted.containers_statuses.is_empty(), "{deleted:?}");
    assert_eq!(
        deleted
            .pod_sandbox_status
            .as_ref()
            .map(|p| (p.id.as_str(), p.state)),
        Some((pod.as_str(), cri::PodSandboxState::SandboxNotready as i32))
    );
    // Every subscriber gets every event, in the same order.
    for want in &all {
        let got = timeout(Duration::from_secs(5), second.next())
            .await
            .expect("the second subscriber's event")
            .unwrap()
            .unwrap();
        assert_eq!(
            (&got.container_id, got.container_event_type),
            (&want.container_id, want.container_event_type)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_subscriber_that_stops_reading_is_dropped_and_can_subscribe_again() {
    use futures_util::StreamExt;
    use tokio::time::timeout;
    let w = World::new(Network::Loopback, &["--events-backlog", "2"]).await;
    // A window of 16 bytes: crid can send it no more than the start of one event
    // until it reads, so its queue of 2 fills at the fourth event or so.
    let stalled_rt = w.crid.runtime_with_window(16).await;
    let subscribe = |mut rt: cri::runtime_service_client::RuntimeServiceClient<_>| async move {
        rt.get_container_events(cri::GetEventsRequest {})
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
            .into_inner()
    };
    let mut stalled = subscribe(stalled_rt.clone()).await;
    let mut reader = subscribe(w.rt.clone()).await;
    let config = w.pod_config("laggard", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    for name in ["a", "b", "c"] {
        w.run_sh(&pod, &config, name, "exec sleep 1006").await;
    }
    w.remove_pod(&pod).await;
    // The reader gets all 16 (created, started, stopped, deleted of three, and of
    // the pod).
    let mut seen = vec![];
    while seen.len() < 16 {
        let e = timeout(Duration::from_secs(10), reader.next())
            .await
            .unwrap_or_else(|_| panic!("no event after {} {}", seen.len(), w.crid.stderr()))
            .expect("the reader's stream goes on")
            .unwrap_or_else(|e| panic!("the reader is not dropped: {e}"));
        seen.push((e.container_id, e.container_event_type));
    }
    e2e::wait_for("crid's log of the drop", || {
        w.crid
            .stderr()
            .contains("a subscriber fell 2 events behind and is dropped")
    });
    // The stalled one, reading at last: what crid had queued for it, in order, then
    // why it was dropped.
    let mut got = vec![];
    let why = loop {
        match timeout(Duration::from_secs(10), stalled.next())
            .await
            .expect("the stalled stream ends")
        {
            Some(Ok(e)) => got.push((e.container_id, e.container_event_type)),
            Some(Err(status)) => break status,
            None => panic!("it ended without a reason after {got:?}"),
        }
    };
    assert_eq!(why.code(), tonic::Code::ResourceExhausted, "{why}");
    assert!(why.message().contains("list the containers again"), "{why}");
    assert!(
        !got.is_empty() && got.len() < seen.len() && seen.starts_with(&got),
        "the stalled one got {got:?} of {seen:?}"
    );
    assert!(timeout(Duration::from_secs(5), stalled.next())
        .await
        .expect("the end")
        .is_none());
    // Subscribed again, it sees every change from then on.
    let mut again = subscribe(stalled_rt.clone()).await;
    let pod = w.run_pod(&config).await.unwrap();
    let id = w.run_sh(&pod, &config, "d", "exec sleep 1007").await;
    use cri::ContainerEventType::*;
    for (who, want) in [
        (&pod, ContainerCreatedEvent),
        (&pod, ContainerStartedEvent),
        (&id, ContainerCreatedEvent),
        (&id, ContainerStartedEvent),
    ] {
        let e = timeout(Duration::from_secs(10), again.next())
            .await
            .expect("an event")
            .expect("the stream goes on")
            .unwrap();
        assert_eq!(
            (&e.container_id, e.container_event_type),
            (who, want as i32)
        );
    }
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_file_gets_each_event_as_a_json_line_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("events.jsonl");
    let feed_arg = feed.display().to_string();
    let w = World::new(
        Network::Loopback,
        &["--events-file", &feed_arg, "--events-file-max", "2400"],
    )
    .await;
    let config = w.pod_config("feed", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let ctr = w.run_sh(&pod, &config, "c", "sleep 1; exit 7").await;
    let lines = || -> Vec<serde_json::Value> {
        let mut rotated = feed.clone().into_os_string();
        rotated.push(".1");
        [PathBuf::from(rotated), feed.clone()]
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let of = |who: &str| -> Vec<serde_json::Value> {
        lines()
            .into_iter()
            .filter(|l| l["container_id"] == who)
            .collect()
    };
    e2e::wait_for("the stop in the feed", || of(&ctr).len() >= 3);
    w.remove_pod(&pod).await;
    e2e::wait_for("the pod's removal in the feed", || of(&pod).len() >= 4);
    let life = [
        "CONTAINER_CREATED",
        "CONTAINER_STARTED",
        "CONTAINER_STOPPED",
        "CONTAINER_DELETED",
    ];
    let kinds = |ls: &[serde_json::Value]| -> Vec<String> {
        ls.iter()
            .map(|l| l["type"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (seen, pods) = (of(&ctr), of(&pod));
    assert_eq!(kinds(&seen), life);
    assert_eq!(kinds(&pods), life);
    for l in seen.iter().chain(&pods) {
        assert_eq!(l["version"], 1, "{l}");
        assert_eq!(
            (l["pod_id"].as_str(), l["pod_name"].as_str()),
            (Some(pod.as_str()), Some("feed"))
        );
        assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
    }
    assert_eq!(seen[2]["exit_code"], 7, "{}", seen[2]);
    assert_eq!(seen[2]["state"], "CONTAINER_EXITED");
    assert_eq!(seen[0]["container_name"], "c");
    // A pod's own lines: no container name, the pod's state.
    assert!(pods[0]["container_name"].is_null(), "{}", pods[0]);
    assert_eq!(pods[1]["state"], "SANDBOX_READY", "{}", pods[1]);
    assert_eq!(pods[2]["state"], "SANDBOX_NOTREADY", "{}", pods[2]);
    assert!(pods[2].get("exit_code").is_none(), "{}", pods[2]);
    // The pod's and the container's lines, after those of the test image's pull,
    // take more than 2400 bytes: the feed has rotated, each file within bounds.
    let mut rotated = feed.clone().into_os_string();
    rotated.push(".1");
    for p in [PathBuf::from(rotated), feed.clone()] {
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len > 0 && len <= 2400, "{}: {len}", p.display());
    }
}
