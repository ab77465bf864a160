//! Container events for GetContainerEvents (kubelet's evented PLEG): CREATED and
//! STARTED when those calls succeed, STOPPED when a container's monitor writes its
//! exit file (one inotify watch per monitor directory, as CRI-O watches its exit
//! files), DELETED when RemoveContainer is done; and a pod's own, with its id in the
//! container's place, from RunPodSandbox, StopPodSandbox (or its infra container's
//! end) and RemovePodSandbox. Each event carries the pod's status and the statuses
//! of its containers as they are when it is sent.
//!
//! The events file (`--events-file`) gets those and the images' own: pulls and
//! removals.
//!
//! Any number of subscribers each get every event sent after they subscribed; one
//! that falls more than its backlog (`--events-backlog`) behind and reads nothing
//! for a second is dropped with a log line, and never slows crid or the others. Nothing survives a restart, as in
//! containerd.

use crate::error::CridError;
use k8s_cri::v1 as cri;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// How many events the broadcast ring keeps: how far a subscriber's forwarder or the
/// events file's writer may lag before it loses events.
const RING: usize = 1024;

/// How long a subscriber whose queue is full has to read an event before it is
/// dropped.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(1);

/// An event raised and not yet sent: container `id` (or the pod itself, when `id`
/// is `pod`) of pod `pod`, due at `due`.
pub struct Queued {
    /// The container, or the pod.
    pub id: String,
    /// Its pod.
    pub pod: String,
    /// What happened.
    pub kind: cri::ContainerEventType,
    /// When to take the statuses and send it.
    pub due: tokio::time::Instant,
    /// The pod's status when the event was raised: sent if the pod is gone by then,
    /// or busy in a call.
    pub pod_status: Option<cri::PodSandboxStatus>,
    /// When the event was raised (ns since the epoch).
    pub raised_at: i64,
}

/// What happened to an image, for the events file: a pull's start, progress,
/// unpacked layers and end, and a removal.
#[derive(Debug, Clone)]
pub struct ImageEvent {
    /// IMAGE_PULL_STARTED, IMAGE_PULL_PROGRESS, IMAGE_LAYER_UNPACKED, IMAGE_PULLED,
    /// IMAGE_PULL_FAILED or IMAGE_REMOVED.
    pub kind: &'static str,
    /// The image as asked for (a pull) or as named (a removal).
    pub image: String,
    /// When.
    pub at: std::time::SystemTime,
    /// The other fields: a layer's digest, bytes downloaded, layers unpacked, the
    /// pinned reference, the error.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl ImageEvent {
    /// An event of `kind` for `image`, now, with `fields`.
    pub fn new(kind: &'static str, image: &str, fields: serde_json::Value) -> ImageEvent {
        ImageEvent {
            kind,
            image: image.to_string(),
            at: std::time::SystemTime::now(),
            fields: match fields {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
        }
    }
}

/// A line of the events file.
#[derive(Debug, Clone)]
pub enum FeedItem {
    /// A container's or pod's event, as GetContainerEvents streams it.
    Container(Box<cri::ContainerEventResponse>),
    /// An image's.
    Image(ImageEvent),
}

/// The event feed and the exit watcher.
pub struct Events {
    tx: broadcast::Sender<cri::ContainerEventResponse>,
    /// What the events file gets: the container events and the images'.
    feed: broadcast::Sender<FeedItem>,
    /// Events raised, in the order raised, for the sender task.
    queue: tokio::sync::mpsc::UnboundedSender<Queued>,
    queued: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Queued>>>,
    /// Blocking: read by a thread of its own.
    inotify: Option<Inotify>,
    /// Watched monitor directories: their container's id.
    watched: Mutex<HashMap<WatchDescriptor, String>>,
}

impl Events {
    /// A feed with nobody subscribed; the exit watcher when inotify is there
    /// (without it, no STOPPED events).
    pub fn new() -> Events {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).ok();
        if inotify.is_none() {
            tracing::warn!("no inotify: GetContainerEvents sends no STOPPED events");
        }
        let (queue, queued) = tokio::sync::mpsc::unbounded_channel();
        Events {
            tx: broadcast::channel(RING).0,
            feed: broadcast::channel(RING).0,
            queue,
            queued: Mutex::new(Some(queued)),
            inotify,
            watched: Mutex::default(),
        }
    }

    /// The events file's receiver: container and image events.
    pub fn subscribe_feed(&self) -> broadcast::Receiver<FeedItem> {
        self.feed.subscribe()
    }

    /// What tells the events file, when there is one, of an image event.
    pub fn image_teller(&self) -> impl Fn(&'static str, &str, serde_json::Value) + Send + Sync {
        let feed = self.feed.clone();
        move |kind, image, fields| {
            if feed.receiver_count() > 0 {
                let _ = feed.send(FeedItem::Image(ImageEvent::new(kind, image, fields)));
            }
        }
    }

    /// Every event sent from now on, as GetContainerEvents streams them. A task of
    /// its own moves each into a queue of `backlog` events as it is sent; when the
    /// subscriber has let the queue fill and reads nothing for [`CATCH_UP`], it is
    /// dropped: `dropped` is called and a line logged, and the stream ends, once the queued events are
    /// read, with RESOURCE_EXHAUSTED (the subscriber has missed events and must list
    /// the containers again). The task ends when the stream is dropped.
    pub fn stream(
        &self,
        backlog: usize,
        dropped: impl FnOnce() + Send + 'static,
    ) -> impl futures_util::Stream<Item = Result<cri::ContainerEventResponse, CridError>> + Send + 'static
    {
        use tokio::sync::mpsc::error::TrySendError;
        let mut rx = self.tx.subscribe();
        let (tx, queue) = tokio::sync::mpsc::channel(backlog.max(1));
        let (why_tx, why) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            loop {
                let got = tokio::select! {
                    () = tx.closed() => return,
                    got = rx.recv() => got,
                };
                match got {
                    Ok(e) => match tx.try_send(e) {
                        Ok(()) => continue,
                        Err(TrySendError::Closed(_)) => return,
                        // A burst (events a CRI call raised fall due together) fills
                        // the queue of a subscriber that reads: it gets a moment.
                        Err(TrySendError::Full(e)) => {
                            match tokio::time::timeout(CATCH_UP, tx.send(e)).await {
                                Ok(Ok(())) => continue,
                                Ok(Err(_)) => return,
                                Err(_) => {}
                            }
                        }
                    },
                    // The ring outran this task: as good as a full queue.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                tracing::warn!(
                    "GetContainerEvents: a subscriber fell {backlog} events behind and is \
                     dropped"
                );
                dropped();
                let _ = why_tx.send(CridError::TooMany(format!(
                    "container events: fell {backlog} events behind, so events were lost; \
                     list the containers again and resubscribe"
                )));
                return;
            }
        });
        futures_util::stream::unfold((queue, Some(why)), |(mut queue, why)| async move {
            if let Some(e) = queue.recv().await {
                return Some((Ok(e), (queue, why)));
            }
            // The queue ends when the task does: with a reason when it dropped us.
            let status = why?.try_recv().ok()?;
            Some((Err(status), (queue, None)))
        })
    }

    /// Watches the monitor directory `dir` of container `id` for its exit file.
    pub fn watch(&self, id: &str, dir: &Path) {
        let Some(i) = &self.inotify else { return };
        let flags = AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE;
        match i.add_watch(dir, flags) {
            Ok(wd) => {
                crikit::sync::lock(&self.watched).insert(wd, id.to_string());
            }
            Err(e) => tracing::warn!("container {id}: watching {}: {e}", dir.display()),
        }
    }

    /// Queues an event for the sender task, which sends events in the order queued,
    /// none before it is due.
    pub fn queue(&self, e: Queued) {
        // Nothing is lost when the sender is gone: crid is stopping.
        let _ = self.queue.send(e);
    }

    /// The queue's receiving end, for the one sender task (None after the first call).
    pub fn take_queue(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Queued>> {
        crikit::sync::lock(&self.queued).take()
    }

    /// Sends `e` to every subscriber.
    pub fn send(&self, e: cri::ContainerEventResponse) {
        if self.feed.receiver_count() > 0 {
            let _ = self.feed.send(FeedItem::Container(Box::new(e.clone())));
        }
        // No subscriber is no error.
        let _ = self.tx.send(e);
    }

    /// Whether anyone listens (a subscriber or the events file).
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0 || self.feed.receiver_count() > 0
    }

    /// Blocks until monitors write exit files; the ids of their containers, each
    /// once. None when there is no inotify or it fails (the watcher stops).
    pub fn read_exits(&self) -> Option<Vec<String>> {
        let i = self.inotify.as_ref()?;
        loop {
            let events = match i.read_events() {
                Ok(e) => e,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("the exit watcher stops: {e}");
                    return None;
                }
            };
            let mut watched = crikit::sync::lock(&self.watched);
            let mut ids = Vec::new();
            for e in events {
                if e.mask.contains(AddWatchFlags::IN_IGNORED) {
                    watched.remove(&e.wd);
                    continue;
                }
                if e.name.as_deref() != Some(std::ffi::OsStr::new("exit")) {
                    continue;
                }
                // One exit per container: the file may be written again (its
                // status completed), and that is no new event.
                if let Some(id) = watched.remove(&e.wd) {
                    let _ = i.rm_watch(e.wd);
                    ids.push(id);
                }
            }
            return Some(ids);
        }
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

/// The version of the JSON-lines feed's schema.
pub const FEED_VERSION: u32 = 1;

/// One image event as a line of the feed (see EVENTS in crid(8)).
pub fn image_line(e: &ImageEvent) -> String {
    let mut v = serde_json::json!({
        "version": FEED_VERSION,
        "time": crikit::runtime::monitor::rfc3339_nanos(e.at),
        "type": e.kind,
        "image": e.image,
    });
    if let Some(o) = v.as_object_mut() {
        o.extend(e.fields.clone());
    }
    let mut line = v.to_string();
    line.push('\n');
    line
}

/// One event as a line of the feed (see EVENTS in crid(8)).
pub fn feed_line(e: &cri::ContainerEventResponse) -> String {
    let kind = cri::ContainerEventType::try_from(e.container_event_type)
        .map(|k| k.as_str_name().trim_end_matches("_EVENT").to_string())
        .unwrap_or_else(|_| e.container_event_type.to_string());
    let pod = e.pod_sandbox_status.as_ref();
    let meta = pod.and_then(|p| p.metadata.as_ref());
    let ctr = e
        .containers_statuses
        .iter()
        .find(|s| s.id == e.container_id);
    // A pod's own event has its state in the container's place.
    let state = match pod.filter(|p| p.id == e.container_id) {
        Some(p) => cri::PodSandboxState::try_from(p.state)
            .ok()
            .map(|s| s.as_str_name().to_string()),
        None => ctr
            .and_then(|s| cri::ContainerState::try_from(s.state).ok())
            .map(|s| s.as_str_name().to_string()),
    };
    let mut v = serde_json::json!({
        "version": FEED_VERSION,
        "time": crikit::runtime::monitor::rfc3339_nanos(
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(e.created_at.max(0) as u64)
        ),
        "type": kind,
        "container_id": e.container_id,
        "container_name": ctr.and_then(|s| s.metadata.as_ref()).map(|m| m.name.clone()),
        "pod_id": pod.map(|p| p.id.clone()),
        "pod_name": meta.map(|m| m.name.clone()),
        "pod_namespace": meta.map(|m| m.namespace.clone()),
        "pod_uid": meta.map(|m| m.uid.clone()),
        "state": state,
    });
    if e.container_event_type == cri::ContainerEventType::ContainerStoppedEvent as i32 {
        if let Some(s) = ctr {
            v["exit_code"] = s.exit_code.into();
            v["reason"] = s.reason.clone().into();
        }
    }
    let mut line = v.to_string();
    line.push('\n');
    line
}

/// The JSON-lines feed: appends each event to `path` as one line, in one write(2)
/// on a file opened with O_APPEND (a reader never sees half a line); before a line
/// would take the file past `max` bytes it is renamed to `PATH.1` (replacing the
/// one before) and a new file started. Runs in a thread of its own until crid
/// stops; a subscriber that falls behind starts again with the next event, after a
/// line in the log.
pub fn write_feed(mut rx: broadcast::Receiver<FeedItem>, path: std::path::PathBuf, max: u64) {
    use std::io::Write;
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
    };
    let mut rotated = path.clone().into_os_string();
    rotated.push(".1");
    let mut file = open(&path);
    loop {
        let e = match rx.blocking_recv() {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("events file {}: {n} events lost", path.display());
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let line = match &e {
            FeedItem::Container(e) => feed_line(e),
            FeedItem::Image(e) => image_line(e),
        };
        let size = file
            .as_ref()
            .ok()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        if size > 0 && size + line.len() as u64 > max {
            if let Err(err) = std::fs::rename(&path, &rotated) {
                tracing::warn!("events file {}: rotating: {err}", path.display());
            }
            file = open(&path);
        }
        let written = match &mut file {
            Ok(f) => f.write_all(line.as_bytes()),
            Err(err) => Err(std::io::Error::new(err.kind(), err.to_string())),
        };
        if let Err(err) = written {
            tracing::warn!("events file {}: {err}", path.display());
            file = open(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    fn event(id: &str) -> cri::ContainerEventResponse {
        cri::ContainerEventResponse {
            container_id: id.to_string(),
            ..Default::default()
        }
    }

    async fn until(what: &str, ok: impl Fn() -> bool) {
        for _ in 0..500 {
            if ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: not after 5 s");
    }

    #[tokio::test]
    async fn a_subscriber_that_stops_reading_is_dropped_and_slows_nobody() {
        let events = Events::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&dropped);
        let stalled = events.stream(3, move || flag.store(true, Ordering::SeqCst));
        let reader = events.stream(3, || panic!("the reader is not dropped"));
        let mut reader = std::pin::pin!(reader);
        for i in 0..8 {
            events.send(event(&i.to_string()));
            // The reader keeps up; the stalled one reads nothing.
            let e = reader
                .next()
                .await
                .expect("an event")
                .expect("not an error");
            assert_eq!(e.container_id, i.to_string());
        }
        until("the stalled subscriber dropped", || {
            dropped.load(Ordering::SeqCst)
        })
        .await;
        // What it had queued, then the reason, then the end.
        let got: Vec<_> = stalled.collect().await;
        let ids: Vec<_> = got.iter().filter_map(|e| e.as_ref().ok()).collect();
        assert_eq!(
            ids.iter()
                .map(|e| e.container_id.as_str())
                .collect::<Vec<_>>(),
            ["0", "1", "2"]
        );
        let err = got
            .last()
            .expect("items")
            .as_ref()
            .expect_err("an error last");
        assert_eq!(
            err.kind(),
            crate::error::ErrorKind::ResourceExhausted,
            "{err}"
        );
        assert!(err.message().contains("3 events behind"), "{err}");
        assert_eq!(got.len(), 4);
        // The reader goes on; a new subscriber sees what is sent from then on.
        let mut again = std::pin::pin!(events.stream(3, || {}));
        events.send(event("next"));
        let e = reader
            .next()
            .await
            .expect("an event")
            .expect("not an error");
        assert_eq!(e.container_id, "next");
        let e = again.next().await.expect("an event").expect("not an error");
        assert_eq!(e.container_id, "next");
    }

    #[tokio::test]
    async fn a_subscriber_that_goes_away_leaves_nothing_behind() {
        let events = Events::new();
        let s = events.stream(3, || {});
        until("the forwarder subscribed", || {
            events.tx.receiver_count() == 1
        })
        .await;
        drop(s);
        until("the forwarder gone", || events.tx.receiver_count() == 0).await;
    }
}
