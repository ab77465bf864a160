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
    pub(super) fn start(mut w: crate::distribution::layout::BlobWriter) -> Self {
        // A few chunks in flight overlap network and disk; a deeper queue only
        // holds more freshly allocated chunks (RSS and page faults) when the disk
        // is the slower side, and pulls no faster.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(4);
        let handle = std::thread::spawn(move || {
            while let Some(m) = rx.blocking_recv() {
                match m {
                    Msg::Data(b) => w.write(&b)?,
                    Msg::Reset => w.reset()?,
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
