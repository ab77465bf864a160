//! Blobs fetched from upstream for the peers that ask for them, served while they
//! download.
//!
//! Every node ranks the peers for a blob alike (rendezvous hashing), so the nodes
//! pulling an image at once ask the same peer first for each blob. When that peer
//! does not have the blob, it fetches it once from the registry the request's
//! `?ns=` names (as a pull of its own would reach it, with only its node's own
//! credentials for that registry) and sends the bytes to every asker as they
//! arrive, from the file they are written to: memory stays flat whatever the blob
//! size. Each asker checks the digest before it stores anything; the blob enters
//! this node's store only once its digest is checked here too. At most
//! `max_fetches` blobs are fetched at once; beyond that a request is answered 503,
//! and the asker goes to the next peer or the registry.

use crate::api::{MissingBlob, Response};
use crate::growing::{Growing, Progress};
use crikit::distribution::digest::Digest;
use crikit::distribution::layout::Store;
use crikit::distribution::registry::peers::Peers;
use crikit::distribution::registry::Puller;
use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// One fetch in flight, shared by its askers.
struct InFlight {
    file: Arc<File>,
    size: u64,
    progress: watch::Receiver<Progress>,
}

/// Fetches for peers: one per blob at a time, at most `max` at once.
pub struct Fetcher {
    puller: Puller,
    peers: Peers,
    store: Store,
    slots: Arc<tokio::sync::Semaphore>,
    max: usize,
    inflight: Mutex<HashMap<Digest, Arc<tokio::sync::OnceCell<Started>>>>,
}

/// A fetch started, or why not: (status, code, message).
type Started = Result<Arc<InFlight>, (u16, &'static str, String)>;

impl Fetcher {
    /// A fetcher into `store` for `peers` that reaches registries with `puller`.
    pub fn new(puller: Puller, peers: Peers, store: Store, max: usize) -> Fetcher {
        Fetcher {
            puller,
            peers,
            store,
            slots: Arc::new(tokio::sync::Semaphore::new(max.max(1))),
            max: max.max(1),
            inflight: Mutex::default(),
        }
    }

    /// Whether a client at `ip` is a peer, for which this node fetches: the
    /// peers as their file or name says at this moment, and this node itself.
    pub async fn serves(&self, ip: std::net::IpAddr) -> bool {
        let mut peers = self.peers.list().await.unwrap_or_default();
        peers.extend(self.peers.self_addr.clone());
        peers.iter().any(|p| {
            p.parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().to_canonical() == ip.to_canonical())
        })
    }

    /// The answer to a peer's GET of a blob the store does not hold: its bytes as
    /// they arrive from upstream, from the range's start on (a 206 then), or why
    /// not.
    pub async fn serve(self: &Arc<Self>, missing: &MissingBlob) -> Response {
        let (registry, repository, digest) =
            (&missing.registry, &missing.repository, &missing.digest);
        // The upstream's name is the client's word: it must name a registry.
        let named =
            crikit::distribution::reference::parse(&format!("{registry}/{repository}@{digest}"));
        if !named.is_ok_and(|r| r.registry() == registry && r.repository() == repository) {
            return Response::error(400, "NAME_INVALID", "?ns= does not name a registry");
        }
        // Committed by a fetch since the store was looked at: served as any
        // stored blob, not fetched again.
        if let Ok(file) = File::open(self.store.blob_path(digest)) {
            if let Ok(meta) = file.metadata() {
                return crate::api::blob_file(digest, file, meta.len(), missing.range.as_deref());
            }
        }
        let range_start = missing.range.as_deref().and_then(crate::api::range_start);
        let flight = match self.join_or_start(registry, repository, digest).await {
            Ok(f) => f,
            Err(r) => return r,
        };
        self.answer(
            Arc::clone(&flight.file),
            flight.size,
            flight.progress.clone(),
            digest,
            range_start,
        )
    }

    fn answer(
        &self,
        file: Arc<File>,
        size: u64,
        progress: watch::Receiver<Progress>,
        digest: &Digest,
        range_start: Option<u64>,
    ) -> Response {
        let start = range_start.unwrap_or(0);
        if start > size || (start == size && size > 0) {
            return Response::error(416, "RANGE_INVALID", "the range starts past the blob's end")
                .with_header("Content-Range", format!("bytes */{size}"));
        }
        let body = Growing {
            file,
            offset: start,
            len: size - start,
            progress,
        };
        Response::growing(body, start, size, range_start.is_some())
            .with_header("Docker-Content-Digest", digest.to_string())
    }

    /// The fetch of `digest` in flight, joined, or started: one per blob, however
    /// many ask at once.
    async fn join_or_start(
        self: &Arc<Self>,
        registry: &str,
        repository: &str,
        digest: &Digest,
    ) -> Result<Arc<InFlight>, Response> {
        let cell = Arc::clone(
            crikit::sync::lock(&self.inflight)
                .entry(digest.clone())
                .or_default(),
        );
        let started = cell
            .get_or_init(|| self.start(registry, repository, digest))
            .await
            .clone();
        if started.is_err() {
            // Those waiting have their answer; the next asker tries again.
            let mut map = crikit::sync::lock(&self.inflight);
            if map.get(digest).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                map.remove(digest);
            }
        }
        started.map_err(|(status, code, message)| Response::error(status, code, message))
    }

    /// Opens the blob upstream and starts copying it into the store.
    async fn start(self: &Arc<Self>, registry: &str, repository: &str, digest: &Digest) -> Started {
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            return Err((
                503,
                "TOOMANYREQUESTS",
                format!("{} blobs are being fetched already", self.max),
            ));
        };
        let mut upstream = match self.puller.open_blob(registry, repository, digest).await {
            Ok(u) => u,
            Err(e) => {
                tracing::info!("fetching {digest} for a peer: {}", crikit::one_line(&e));
                return Err((
                    404,
                    "BLOB_UNKNOWN",
                    "not stored here, and the upstream fetch failed".into(),
                ));
            }
        };
        let Some(size) = upstream.size else {
            return Err((
                404,
                "BLOB_UNKNOWN",
                "not stored here, and the upstream gave no length".into(),
            ));
        };
        let store_err = |e: crikit::distribution::layout::LayoutError| {
            tracing::warn!("fetching {digest} for a peer: {}", crikit::one_line(&e));
            (500, "UNKNOWN", "cannot store the blob".to_string())
        };
        let mut writer = self.store.ingest(digest, Some(size)).map_err(store_err)?;
        let file = Arc::new(writer.reader().map_err(store_err)?);
        let (tx, rx) = watch::channel(Progress::Receiving(0));
        let flight = Arc::new(InFlight {
            file,
            size,
            progress: rx,
        });
        let this = Arc::clone(self);
        let digest = digest.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut written = 0u64;
            let outcome = loop {
                match upstream.chunk().await {
                    Ok(Some(bytes)) => {
                        let r = tokio::task::block_in_place(|| {
                            writer.write(&bytes).and_then(|()| writer.flush())
                        });
                        if let Err(e) = r {
                            break Err(crikit::one_line(&e));
                        }
                        written += bytes.len() as u64;
                        let _ = tx.send(Progress::Receiving(written));
                    }
                    Ok(None) => {
                        break tokio::task::block_in_place(|| writer.commit())
                            .map_err(|e| crikit::one_line(&e));
                    }
                    Err(e) => break Err(crikit::one_line(&e)),
                }
            };
            match outcome {
                Ok(()) => {
                    let _ = tx.send(Progress::Done(written));
                    tracing::info!("fetched {digest} ({written} bytes) for peers");
                }
                Err(e) => {
                    let _ = tx.send(Progress::Failed);
                    tracing::warn!("fetching {digest} for peers: {e}");
                }
            }
            crikit::sync::lock(&this.inflight).remove(&digest);
        });
        Ok(flight)
    }
}
