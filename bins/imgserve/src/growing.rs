//! A blob's body while its bytes still arrive: read from the file they are
//! written to, as far as the writer says it has come.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::sync::watch;

/// How far a fetch has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// This many bytes are in the file.
    Receiving(u64),
    /// All of them, digest checked.
    Done(u64),
    /// The fetch failed: what was sent is wrong or short.
    Failed,
}

/// A blob's bytes as they arrive: `len` bytes from `offset` of `file`, readable
/// as far as `progress` says.
#[derive(Debug)]
pub struct Growing {
    /// The file being written.
    pub file: Arc<File>,
    /// Where to start.
    pub offset: u64,
    /// How many bytes.
    pub len: u64,
    /// How far the file is written.
    pub progress: watch::Receiver<Progress>,
}

impl Growing {
    /// Reads the next bytes from `at` into `buf`, waiting for them to arrive; 0 at
    /// the end, an error when the fetch failed.
    pub async fn read_at(&mut self, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
        let end = self.offset + self.len;
        if at >= end {
            return Ok(0);
        }
        let ready = loop {
            let p = *self.progress.borrow_and_update();
            match p {
                Progress::Receiving(n) | Progress::Done(n) if n > at => break n,
                Progress::Done(_) => {
                    return Err(std::io::Error::other("the blob is shorter than announced"))
                }
                Progress::Failed => return Err(std::io::Error::other("the upstream fetch failed")),
                Progress::Receiving(_) => {}
            }
            if self.progress.changed().await.is_err() {
                // The fetch is gone: its last word is final.
                if !matches!(*self.progress.borrow(), Progress::Done(_)) {
                    return Err(std::io::Error::other("the upstream fetch ended"));
                }
            }
        };
        let want = (ready.min(end) - at).min(buf.len() as u64) as usize;
        let file = Arc::clone(&self.file);
        tokio::task::block_in_place(|| file.read_at(&mut buf[..want], at))
    }
}
