//! Progress events of long work (pulls). The library only emits them; the binaries
//! render them (bars on a terminal, JSON lines for machines, nothing when quiet).

use serde::Serialize;

/// One thing that happened during a pull.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A pull started; the manifest is being resolved.
    Resolving {
        /// The image as asked for.
        image: String,
        /// The registry endpoint tried.
        endpoint: String,
    },
    /// A blob download started.
    BlobStart {
        /// The image.
        image: String,
        /// The blob.
        digest: String,
        /// Its size from the manifest.
        size: u64,
        /// Bytes already there (a resumed download).
        offset: u64,
    },
    /// Bytes of a blob arrived.
    BlobProgress {
        /// The image.
        image: String,
        /// The blob.
        digest: String,
        /// Bytes so far.
        done: u64,
        /// Total size.
        size: u64,
    },
    /// A blob was already in the store.
    BlobExists {
        /// The image.
        image: String,
        /// The blob.
        digest: String,
        /// Its size.
        size: u64,
    },
    /// A blob is stored and verified.
    BlobDone {
        /// The image.
        image: String,
        /// The blob.
        digest: String,
        /// Its size.
        size: u64,
    },
    /// A layer is unpacked and in place (pulls that unpack).
    LayerUnpacked {
        /// The image.
        image: String,
        /// The layer's blob.
        digest: String,
    },
    /// A transient failure; the request is retried after a delay.
    Retry {
        /// The image.
        image: String,
        /// What failed (a blob digest or "manifest").
        what: String,
        /// Attempt number about to start (2 = first retry).
        attempt: u32,
        /// Delay before it, in milliseconds.
        delay_ms: u64,
        /// The failure.
        error: String,
    },
    /// The image is stored and named.
    Done {
        /// The image as asked for.
        image: String,
        /// The line printed on stdout.
        reference: String,
    },
}

/// Receives progress events. Implementations must be cheap: `BlobProgress` comes often.
pub trait Sink: Send + Sync {
    /// Handles one event.
    fn event(&self, e: &Event);
}

/// A sink that drops everything.
pub struct Quiet;

impl Sink for Quiet {
    fn event(&self, _: &Event) {}
}
