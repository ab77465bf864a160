//! The container events crid emits (GetContainerEvents, the JSON-lines feed,
//! the metrics that count them): each carries its pod's status and the statuses
//! of the pod's containers as they are then; STOPPED comes from the exit watcher.

use crate::state::status;
use crate::Crid;
use k8s_cri::v1 as cri;
use std::sync::Arc;

impl Crid {
    /// Sends a `kind` event of container `id` to every subscriber, with its pod's
    /// status and its containers' (infra containers have none).
    pub async fn emit(&self, id: &str, pod: &str, kind: cri::ContainerEventType) {
        self.count(id, kind).await;
        if !self.events.has_subscribers() {
            return;
        }
        let pod_status = match self.store.pod(pod) {
            Some(p) => Some(status::pod_status(&*p.lock().await)),
            None => None,
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
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: crate::state::now_ns(),
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
                    }
                });
            }
        }
    }
}
