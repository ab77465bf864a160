//! The writer thread of a blob download.

use super::*;

/// A blob writer on its own thread: the download task sends chunks, the thread
/// hashes and writes them, so network, hashing and disk overlap.
pub(super) struct WriterThread {
    pub(super) tx: Option<tokio::sync::mpsc::Sender<Msg>>,
    pub(super) handle: Option<
        std::thread::JoinHandle<
            std::result::Result<crate::distribution::layout::BlobWriter, LayoutError>,
        >,
    >,
    /// Bytes handed to the thread (the resume offset).
    pub(super) sent: u64,
}

pub(super) enum Msg {
    Data(bytes::Bytes),
    Reset,
}

impl WriterThread {
    /// Starts the thread. With `tee`, every byte written is also sent there once,
    /// in order: bytes written again after a reset (a download started over) are
    /// not sent twice.
    pub(super) fn start(
        mut w: crate::distribution::layout::BlobWriter,
        tee: Option<std::sync::mpsc::SyncSender<bytes::Bytes>>,
    ) -> Self {
        // A few chunks in flight overlap network and disk; a deeper queue only
        // holds more freshly allocated chunks (RSS and page faults) when the disk
        // is the slower side, and pulls no faster.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(4);
        let handle = std::thread::spawn(move || {
            let mut tee = tee;
            let (mut pos, mut forwarded) = (0u64, 0u64);
            while let Some(m) = rx.blocking_recv() {
                match m {
                    Msg::Data(b) => {
                        w.write(&b)?;
                        let start = pos;
                        pos += b.len() as u64;
                        if pos > forwarded {
                            let skip = (forwarded - start) as usize;
                            // A receiver that stopped (its unpack failed) reports
                            // that itself; the blob is still stored.
                            if tee
                                .as_ref()
                                .is_some_and(|t| t.send(b.slice(skip..)).is_err())
                            {
                                tee = None;
                            }
                            forwarded = pos;
                        }
                    }
                    Msg::Reset => {
                        w.reset()?;
                        pos = 0;
                    }
                }
            }
            Ok(w)
        });
        WriterThread {
            tx: Some(tx),
            handle: Some(handle),
            sent: 0,
        }
    }

    pub(super) async fn send(&mut self, b: bytes::Bytes) -> std::result::Result<(), LayoutError> {
        let n = b.len() as u64;
        let ok = match &self.tx {
            Some(tx) => tx.send(Msg::Data(b)).await.is_ok(),
            None => false,
        };
        if !ok {
            // The thread stopped on an error: report it.
            return Err(match self.join().await {
                Err(e) => e,
                Ok(_) => LayoutError::Io {
                    action: "writing",
                    path: "blob".into(),
                    source: std::io::Error::other("writer thread stopped"),
                },
            });
        }
        self.sent += n;
        Ok(())
    }

    pub(super) async fn reset(&mut self) -> std::result::Result<(), LayoutError> {
        if let Some(tx) = &self.tx {
            if tx.send(Msg::Reset).await.is_err() {
                return self.join().await.map(|_| ());
            }
        }
        self.sent = 0;
        Ok(())
    }

    pub(super) async fn join(
        &mut self,
    ) -> std::result::Result<crate::distribution::layout::BlobWriter, LayoutError> {
        self.tx = None;
        let Some(h) = self.handle.take() else {
            return Err(LayoutError::Io {
                action: "writing",
                path: "blob".into(),
                source: std::io::Error::other("writer already finished"),
            });
        };
        tokio::task::spawn_blocking(move || h.join())
            .await
            .map_err(|e| LayoutError::Io {
                action: "writing",
                path: "blob".into(),
                source: std::io::Error::other(e.to_string()),
            })?
            .unwrap_or_else(|_| {
                Err(LayoutError::Io {
                    action: "writing",
                    path: "blob".into(),
                    source: std::io::Error::other("writer thread panicked"),
                })
            })
    }

    pub(super) async fn finish(
        mut self,
    ) -> std::result::Result<crate::distribution::layout::BlobWriter, LayoutError> {
        self.join().await
    }
}

/// Reads what a writer thread's tee sends: the blob's bytes, in order, until the
/// writer is done (or gone).
pub(super) struct TeeReader {
    pub(super) rx: std::sync::mpsc::Receiver<bytes::Bytes>,
    pub(super) cur: bytes::Bytes,
}

impl std::io::Read for TeeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.cur = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// What a tee reader gets from a writer thread that was fed `steps`.
    async fn teed(steps: Vec<Option<&'static [u8]>>) -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let content: &[u8] = b"0123456789abcdefghij";
        let digest = Digest::of(content);
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let mut pipe = WriterThread::start(store.ingest(&digest, None).unwrap(), Some(tx));
        for step in steps {
            match step {
                Some(b) => pipe.send(bytes::Bytes::from_static(b)).await.unwrap(),
                None => pipe.reset().await.unwrap(),
            }
        }
        let writer = pipe.finish().await.unwrap();
        writer.commit().unwrap();
        let mut out = Vec::new();
        TeeReader {
            rx,
            cur: bytes::Bytes::new(),
        }
        .read_to_end(&mut out)
        .unwrap();
        (out, store.read_blob(&digest, 1 << 20).unwrap())
    }

    #[tokio::test]
    async fn the_tee_gets_each_byte_once_in_order_across_resumes_and_restarts() {
        let whole = b"0123456789abcdefghij".to_vec();
        // Straight through, and resumed at an offset.
        let (got, stored) = teed(vec![Some(b"0123456789"), Some(b"abcdefghij")]).await;
        assert_eq!((&got, &stored), (&whole, &whole));
        // Started over after 12 bytes: the first 12 of the second pass are not
        // sent again, the rest are.
        let (got, stored) = teed(vec![
            Some(b"0123456789ab"),
            None,
            Some(b"01234"),
            Some(b"56789abcd"),
            Some(b"efghij"),
        ])
        .await;
        assert_eq!((&got, &stored), (&whole, &whole));
    }
}
