//! Blobs: streamed into the store through a writer thread, resumed with a range
//! request when a download is cut off, retried with backoff; a layer's bytes also
//! go, as they arrive, to the unpacker that lays the layer down.

use super::*;
use crate::distribution::unpack::{BlobBytes, LayerJob, Unpacked, Unpacker};

/// A blob to fetch.
#[derive(Debug, Clone)]
pub(super) struct Blob {
    pub(super) digest: Digest,
    pub(super) size: u64,
}

/// An unpack running on a blocking thread of the runtime's. A pull that fails
/// drops its other fetches; their unpacks still run to their end (and remove what
/// they made), and dropping the runtime waits for them.
type UnpackThread = tokio::task::JoinHandle<std::result::Result<Unpacked, UnpackError>>;

impl Puller {
    /// Fetches a blob into the store. With `unpack`, the layer is unpacked too:
    /// from the bytes as they arrive, or from the store when the blob was there
    /// already. Returns how the unpack ended (`None`: nothing to unpack).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch_blob(
        &self,
        store: &Store,
        ctx: &PullCtx<'_>,
        r: &Reference,
        auth: &RegistryAuth,
        blob: &Blob,
        unpack: Option<(&Arc<dyn Unpacker>, &LayerJob)>,
        sink: &dyn Sink,
    ) -> Result<Option<Unpacked>> {
        let image = ctx.image.to_string();
        let digest_s = blob.digest.to_string();
        if store.has_blob(&blob.digest) {
            sink.event(&Event::BlobExists {
                image,
                digest: digest_s,
                size: blob.size,
            });
            return match unpack {
                Some((u, job)) => self
                    .unpack_stored(store, ctx, u, job, false, sink)
                    .await
                    .map(Some),
                None => Ok(None),
            };
        }
        let store_err = |source: LayoutError| RegistryError::Store {
            image: ctx.image.to_string(),
            digest: blob.digest.to_string(),
            source,
        };
        let writer = store
            .ingest(&blob.digest, Some(blob.size))
            .map_err(store_err)?;
        let (tee, unpacking) = match unpack {
            Some((u, job)) => {
                let (tx, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(16);
                // The writer hashes the bytes; the unpacker waits for its verdict.
                let (verdict, verdict_rx) = std::sync::mpsc::sync_channel::<bool>(1);
                let (u, job) = (Arc::clone(u), job.clone());
                let policy = ctx.verdict.cloned();
                let rt = tokio::runtime::Handle::current();
                let thread: UnpackThread = tokio::task::spawn_blocking(move || {
                    // No layer is unpacked before the policy lets the image in; the
                    // bytes wait meanwhile in the tee's queue and the temp file.
                    if let Some(v) = policy {
                        if !rt.block_on(v.wait()) {
                            return Err(not_let_in());
                        }
                    }
                    let mut reader = TeeReader {
                        rx,
                        cur: bytes::Bytes::new(),
                    };
                    u.unpack(&job, &mut reader, BlobBytes::Arriving(verdict_rx), false)
                });
                (Some(tx), Some((thread, verdict)))
            }
            None => (None, None),
        };
        let mut pipe = WriterThread::start(writer, tee);
        let mut attempt = 1;
        let result = loop {
            sink.event(&Event::BlobStart {
                image: ctx.image.to_string(),
                digest: digest_s.clone(),
                size: blob.size,
                offset: pipe.sent,
            });
            match self.download(ctx, r, auth, blob, &mut pipe, sink).await {
                Ok(()) => break Ok(()),
                Err(e) => {
                    if !self.backoff(ctx, &digest_s, sink, &mut attempt, &e).await {
                        break Err(e);
                    }
                }
            }
        };
        // The download's error comes first: when the writer thread failed (a full
        // disk, say), the download already collected its error and finishing has
        // nothing left to report. Once the writer is done, the unpack has all the
        // bytes it will get; it keeps its layer only if the blob was committed,
        // its digest checked.
        let finished = pipe.finish().await;
        let stored = match (result, finished) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(store_err(e)),
            (Ok(()), Ok(writer)) => {
                if let Some(v) = ctx.verdict {
                    v.accepted().await;
                }
                tokio::task::spawn_blocking(move || writer.commit())
                    .await
                    .map_err(|e| {
                        store_err(LayoutError::Io {
                            action: "committing",
                            path: store.blob_path(&blob.digest),
                            source: std::io::Error::other(e.to_string()),
                        })
                    })
                    .and_then(|r| {
                        r.map_err(|source| match source {
                            LayoutError::DigestMismatch { expected, actual } => {
                                RegistryError::DigestMismatch {
                                    image: ctx.image.to_string(),
                                    registry: ctx.registry.to_string(),
                                    what: "blob",
                                    expected: expected.to_string(),
                                    actual: actual.to_string(),
                                }
                            }
                            other => store_err(other),
                        })
                    })
            }
        };
        let unpacked = match unpacking {
            Some((thread, verdict)) => {
                // An unpack that already ended takes no verdict.
                let _ = verdict.send(stored.is_ok());
                Some(join_unpack(thread).await)
            }
            None => None,
        };
        stored?;
        sink.event(&Event::BlobDone {
            image: ctx.image.to_string(),
            digest: blob.digest.to_string(),
            size: blob.size,
        });
        match unpacked {
            Some(r) => {
                let u = r.map_err(|source| RegistryError::Unpack {
                    image: ctx.image.to_string(),
                    digest: digest_s.clone(),
                    source,
                })?;
                if u == Unpacked::Done {
                    sink.event(&Event::LayerUnpacked {
                        image: ctx.image.to_string(),
                        digest: digest_s,
                    });
                }
                Ok(Some(u))
            }
            None => Ok(None),
        }
    }

    /// [`Puller::fetch_blob`] from the peers first, ranked for the blob
    /// ([`peers::rank`]), then from `r`. A peer is sent no credentials of the
    /// pull's. One that fails (down, missing the blob, cut off, wrong bytes) costs
    /// its attempt: what it sent is discarded, its unpack undone, and the next is
    /// asked. A blob stored whole whose layer then fails to unpack fails the pull:
    /// the bytes were right, so no other source would do better.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch_blob_via_peers(
        &self,
        store: &Store,
        ctx: &PullCtx<'_>,
        r: &Reference,
        auth: &RegistryAuth,
        blob: &Blob,
        unpack: Option<(&Arc<dyn Unpacker>, &LayerJob)>,
        sink: &dyn Sink,
        peers: &[String],
    ) -> Result<Option<Unpacked>> {
        if let Some(peer_client) = self.peer_client.as_ref().filter(|_| !peers.is_empty()) {
            if !store.has_blob(&blob.digest) {
                for peer in &super::peers::rank(peers, &blob.digest) {
                    let at = Reference::with_digest(
                        peer.clone(),
                        r.repository().to_string(),
                        blob.digest.to_string(),
                    );
                    let pctx = PullCtx {
                        names: Ctx {
                            image: ctx.image,
                            registry: peer,
                            mirror: true,
                            peer: true,
                        },
                        client: peer_client,
                        ns: Some(r.registry()),
                        verdict: ctx.verdict,
                    };
                    let auth = self.peer_auth(peer)?;
                    match self
                        .fetch_blob(store, &pctx, &at, &auth, blob, unpack, sink)
                        .await
                    {
                        Ok(u) => return Ok(u),
                        Err(e) if store.has_blob(&blob.digest) => return Err(e),
                        Err(e) => tracing::info!(
                            "peer {peer}: {}: {}; trying the next source",
                            blob.digest,
                            crate::one_line(&e)
                        ),
                    }
                }
            }
        }
        self.fetch_blob(store, ctx, r, auth, blob, unpack, sink)
            .await
    }

    /// Unpacks a layer from its blob in the store.
    pub(super) async fn unpack_stored(
        &self,
        store: &Store,
        ctx: &PullCtx<'_>,
        u: &Arc<dyn Unpacker>,
        job: &LayerJob,
        below_ready: bool,
        sink: &dyn Sink,
    ) -> Result<Unpacked> {
        if let Some(v) = ctx.verdict {
            v.accepted().await;
        }
        let path = store.blob_path(&job.digest);
        let (u, job2) = (Arc::clone(u), job.clone());
        let thread: UnpackThread = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&path).map_err(|e| {
                UnpackError::local(LayoutError::Io {
                    action: "opening",
                    path,
                    source: e,
                })
            })?;
            u.unpack(&job2, &mut f, BlobBytes::Stored, below_ready)
        });
        let out = join_unpack(thread)
            .await
            .map_err(|source| RegistryError::Unpack {
                image: ctx.image.to_string(),
                digest: job.digest.to_string(),
                source,
            })?;
        if out == Unpacked::Done {
            sink.event(&Event::LayerUnpacked {
                image: ctx.image.to_string(),
                digest: job.digest.to_string(),
            });
        }
        Ok(out)
    }

    /// One attempt at streaming a blob, from the writer's offset.
    pub(super) async fn download(
        &self,
        ctx: &PullCtx<'_>,
        r: &Reference,
        auth: &RegistryAuth,
        blob: &Blob,
        pipe: &mut WriterThread,
        sink: &dyn Sink,
    ) -> Result<()> {
        let what = blob.digest.to_string();
        // A range is always asked for; a registry that ignores it sends the blob
        // from its start.
        let mut body = ctx
            .client
            .blob(r, what.as_str(), pipe.sent, auth, ctx.ns)
            .await
            .map_err(|e| ctx.classify(e, &what))?;
        if !body.partial && pipe.sent > 0 {
            tracing::info!("{what}: registry ignored the range, starting over");
            pipe.reset().await.map_err(|source| RegistryError::Store {
                image: ctx.image.to_string(),
                digest: what.clone(),
                source,
            })?;
        }
        let mut last_report = pipe.sent;
        let mut last_report_at = std::time::Instant::now();
        while let Some(chunk) = body
            .response
            .chunk()
            .await
            .map_err(|e| ctx.network(&what, &e))?
        {
            if pipe.sent + chunk.len() as u64 > blob.size {
                pipe.reset().await.ok();
                return Err(RegistryError::Store {
                    image: ctx.image.to_string(),
                    digest: what.clone(),
                    source: LayoutError::SizeMismatch {
                        digest: blob.digest.clone(),
                        expected: blob.size,
                        actual: pipe.sent + chunk.len() as u64,
                    },
                });
            }
            pipe.send(chunk)
                .await
                .map_err(|source| RegistryError::Store {
                    image: ctx.image.to_string(),
                    digest: what.clone(),
                    source,
                })?;
            // Every 4 MiB, and at least every 250 ms while bytes come: a slow
            // download still shows (and proves) that it moves.
            if pipe.sent - last_report >= 4 << 20
                || pipe.sent == blob.size
                || last_report_at.elapsed() >= Duration::from_millis(250)
            {
                last_report = pipe.sent;
                last_report_at = std::time::Instant::now();
                sink.event(&Event::BlobProgress {
                    image: ctx.image.to_string(),
                    digest: what.clone(),
                    done: pipe.sent,
                    size: blob.size,
                });
            }
        }
        if pipe.sent < blob.size {
            // The body ended early: a cut connection. Retried, resuming at the offset.
            return Err(RegistryError::Store {
                image: ctx.image.to_string(),
                digest: what,
                source: LayoutError::SizeMismatch {
                    digest: blob.digest.clone(),
                    expected: blob.size,
                    actual: pipe.sent,
                },
            });
        }
        Ok(())
    }
}

/// What an unpack thread says when the signature policy refused the image before
/// it began; the pull reports the refusal itself.
fn not_let_in() -> UnpackError {
    UnpackError::local(std::io::Error::other(
        "the signature policy did not let the image in",
    ))
}

/// Waits for an unpack thread without blocking the runtime.
async fn join_unpack(t: UnpackThread) -> std::result::Result<Unpacked, UnpackError> {
    match t.await {
        Ok(r) => r,
        _ => Err(UnpackError::local(std::io::Error::other(
            "the unpacking thread panicked",
        ))),
    }
}
