//! The container events crid emits (GetContainerEvents, the JSON-lines feed,
//! the metrics that count them): each carries its pod's status and the statuses
//! of the pod's containers as they are when it is sent; STOPPED comes from the
//! exit watcher.
//!
//! An event that a CRI call raises (CREATED, STARTED, DELETED) is sent shortly
//! after the call has answered, not while it runs. kubelet's evented PLEG takes an
//! event's `created_at` as the time its statuses were true and waits, after each
//! pod sync, for statuses newer than the sync's end; statuses taken inside the
//! call that the sync made are older than that, and kubelet would wait for its
//! 5-second cache refresh instead.

use crate::events::Queued;
use crate::state::record::PodRecord;
use crate::state::status;
use crate::Crid;
use k8s_cri::v1 as cri;
use std::sync::Arc;
use std::time::Duration;

/// How long after it is raised a CRI call's event is sent: the call's answer has
/// reached its caller, and kubelet has ended the sync that made it. With 20 pods
/// started at once on two cores, at 20 ms kubelet ended the sync after the event's
/// time for 2 of the 20 and they waited for its 5-second refresh; at 100 ms, in
/// two runs, none did.
const SETTLE: Duration = Duration::from_millis(100);

impl Crid {
    /// Raises a `kind` event of container `id`: counted now, sent by the sender task
    /// ([`Crid::send_events`]) in the order raised, a CRI call's after [`SETTLE`].
    pub async fn emit(&self, id: &str, pod: &str, kind: cri::ContainerEventType) {
        self.count(id, kind).await;
        if !self.events.has_subscribers() {
            return;
        }
        let settle = match kind {
            cri::ContainerEventType::ContainerStoppedEvent => Duration::ZERO,
            _ => SETTLE,
        };
        // Taken first, as in the sender: the status is no older than its time.
        let raised_at = crate::state::now_ns();
        let pod_status = match self.store.pod(pod) {
            Some(p) => Some(status::pod_status(&*p.lock().await)),
            None => None,
        };
        self.events.queue(Queued {
            id: id.to_string(),
            pod: pod.to_string(),
            kind,
            due: tokio::time::Instant::now() + settle,
            pod_status,
            raised_at,
        });
    }

    /// Raises a `kind` event of the pod `pod` itself, as it is now: its id in the
    /// container id's place, as kubelet's evented PLEG takes a sandbox's events
    /// (it learns of a new sandbox, one stopped, one removed, from them). `call`
    /// says a CRI call raised it (sent after [`SETTLE`]).
    pub fn emit_pod(&self, pod: &PodRecord, kind: cri::ContainerEventType, call: bool) {
        if !self.events.has_subscribers() {
            return;
        }
        let settle = if call { SETTLE } else { Duration::ZERO };
        self.events.queue(Queued {
            id: pod.id.clone(),
            pod: pod.id.clone(),
            kind,
            due: tokio::time::Instant::now() + settle,
            pod_status: Some(status::pod_status(pod)),
            raised_at: crate::state::now_ns(),
        });
    }

    /// The sender task: sends each queued event when it is due, in the order
    /// raised. Runs until crid stops; a second call returns at once.
    pub async fn send_events(self: Arc<Self>) {
        let Some(mut queued) = self.events.take_queue() else {
            return;
        };
        while let Some(e) = queued.recv().await {
            tokio::time::sleep_until(e.due).await;
            self.send_event(e).await;
        }
    }

    /// Sends the event `e` to every subscriber, with its pod's status and its
    /// containers' (infra containers have none) as they are now.
    async fn send_event(&self, e: Queued) {
        if !self.events.has_subscribers() {
            return;
        }
        // Taken first: the statuses read below are no older than the event says.
        let now = crate::state::now_ns();
        let pod = &e.pod;
        let (at, pod_status) = match self.store.pod(pod) {
            None => (now, e.pod_status),
            Some(p) => match p.try_lock() {
                Ok(p) => (now, Some(status::pod_status(&p))),
                // A call at work on the pod (a teardown) holds it: what it was when
                // the event was raised, and that time, rather than hold up every
                // event behind this one.
                Err(_) => (e.raised_at, e.pod_status),
            },
        };
        let mut statuses = Vec::new();
        for c in self.store.containers_of(pod) {
            if let Some(r) = self.store.container(&c) {
                let r = r.lock().await;
                statuses.push(status::container_status(&r, &self.store.monitor_dir(&r.id)));
            }
        }
        statuses.sort_by_key(|s| s.created_at);
        self.events.send(cri::ContainerEventResponse {
            container_id: e.id,
            container_event_type: e.kind as i32,
            created_at: at,
            pod_sandbox_status: pod_status,
            containers_statuses: statuses,
        });
    }

    /// Counts the event in crid's metrics.
    async fn count(&self, id: &str, kind: cri::ContainerEventType) {
        use cri::ContainerEventType as T;
        let m = &self.metrics;
        match kind {
            T::ContainerCreatedEvent => {
                m.containers_created.inc();
            }
            T::ContainerStartedEvent => {
                m.containers_started.inc();
            }
            T::ContainerStoppedEvent => {
                m.containers_exited.inc();
                if let Some(c) = self.store.container(id) {
                    let c = c.lock().await;
                    let s = status::container_status(&c, &self.store.monitor_dir(id));
                    if s.reason == "OOMKilled" {
                        m.containers_oom.inc();
                    }
                }
            }
            T::ContainerDeletedEvent => {}
        }
    }

    /// The exit watcher, in a thread of its own that blocks on inotify: a STOPPED
    /// event for each exit file a monitor writes, sent through `rt`. Runs until crid
    /// stops.
    pub fn watch_exits(self: Arc<Self>, rt: tokio::runtime::Handle) {
        while let Some(ids) = self.events.read_exits() {
            for id in ids {
                rt.block_on(async {
                    let Some(c) = self.store.container(&id) else {
                        return;
                    };
                    let (pod, infra) = {
                        let c = c.lock().await;
                        (c.pod_id.clone(), c.infra)
                    };
                    if !infra {
                        self.emit(&id, &pod, cri::ContainerEventType::ContainerStoppedEvent)
                            .await;
                    } else if let Some(p) = self.store.pod(&pod) {
                        // The pod's infra container is gone: so is the sandbox.
                        let p = p.lock().await;
                        self.emit_pod(&p, cri::ContainerEventType::ContainerStoppedEvent, false);
                    }
                });
            }
        }
    }
}
