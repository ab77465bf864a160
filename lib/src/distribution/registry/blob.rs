//! Blobs: streamed into the store through a writer thread, resumed with a range
//! request when a download is cut off, retried with backoff.

use super::*;

/// A blob to fetch.
#[derive(Debug, Clone)]
pub(super) struct Blob {
    pub(super) digest: Digest,
    pub(super) size: u64,
}

impl Puller {
    pub(super) async fn fetch_blob(
        &self,
        store: &Store,
        ctx: &PullCtx<'_>,
        r: &Reference,
        auth: &RegistryAuth,
        blob: &Blob,
        sink: &dyn Sink,
    ) -> Result<()> {
        let image = ctx.image.to_string();
        let digest_s = blob.digest.to_string();
        if store.has_blob(&blob.digest) {
            sink.event(&Event::BlobExists {
                image,
                digest: digest_s,
                size: blob.size,
            });
            return Ok(());
        }
        let store_err = |source: LayoutError| RegistryError::Store {
            image: ctx.image.to_string(),
            digest: blob.digest.to_string(),
            source,
        };
        let writer = store
            .ingest(&blob.digest, Some(blob.size))
            .map_err(store_err)?;
        let mut pipe = WriterThread::start(writer);
        // The registry authenticates on the first request of each client; make sure
        // a token is in place so concurrent blob requests do not race for it.
        let _ = ctx
            .client
            .store_auth_if_needed(r.resolve_registry(), auth)
            .await;
        let mut attempt = 1;
        let result = loop {
            sink.event(&Event::BlobStart {
                image: ctx.image.to_string(),
                digest: digest_s.clone(),
                size: blob.size,
                offset: pipe.sent,
            });
            match self.download(ctx, r, blob, &mut pipe, sink).await {
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
        // nothing left to report.
        let finished = pipe.finish().await;
        result?;
        let writer = finished.map_err(store_err)?;
        tokio::task::spawn_blocking(move || writer.commit())
            .await
            .map_err(|e| {
                store_err(LayoutError::Io {
                    action: "committing",
                    path: store.blob_path(&blob.digest),
                    source: std::io::Error::other(e.to_string()),
                })
            })?
            .map_err(|source| match source {
                LayoutError::DigestMismatch { expected, actual } => RegistryError::DigestMismatch {
                    image: ctx.image.to_string(),
                    registry: ctx.registry.to_string(),
                    what: "blob",
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                },
                other => store_err(other),
            })?;
        sink.event(&Event::BlobDone {
            image: ctx.image.to_string(),
            digest: blob.digest.to_string(),
            size: blob.size,
        });
        Ok(())
    }

    /// One attempt at streaming a blob, from the writer's offset.
    pub(super) async fn download(
        &self,
        ctx: &PullCtx<'_>,
        r: &Reference,
        blob: &Blob,
        pipe: &mut WriterThread,
        sink: &dyn Sink,
    ) -> Result<()> {
        let what = blob.digest.to_string();
        // Always ask for a range: a registry that honours it answers 206 and
        // oci-client leaves verification to us, so the bytes are hashed once.
        let resp = ctx
            .client
            .pull_blob_stream_partial(r, what.as_str(), pipe.sent, None)
            .await
            .map_err(|e| ctx.classify(e, &what))?;
        let mut stream = match resp {
            oci_client::client::BlobResponse::Partial(s) => s,
            oci_client::client::BlobResponse::Full(s) => {
                if pipe.sent > 0 {
                    tracing::info!("{what}: registry ignored the range, starting over");
                    pipe.reset().await.map_err(|source| RegistryError::Store {
                        image: ctx.image.to_string(),
                        digest: what.clone(),
                        source,
                    })?;
                }
                s
            }
        };
        let mut last_report = pipe.sent;
        let mut last_report_at = std::time::Instant::now();
        while let Some(chunk) = stream
            .try_next()
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
