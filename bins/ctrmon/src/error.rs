//! Why ctrmon could not start its work, before it detaches: what its caller reads
//! as the one-line error and the exit code.

use std::io;
use std::path::PathBuf;

/// Errors before the monitor detaches.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The bundle is missing or its config.json is not a runtime spec.
    #[error("bundle {}: {reason}", path.display())]
    Bundle {
        /// The bundle directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The exec process file is missing or not a runtime-spec process.
    #[error("process file {}: {reason}", path.display())]
    Process {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An option's value cannot be used.
    #[error("{reason}")]
    Usage {
        /// What is wrong.
        reason: String,
    },
    /// A system call failed while setting up.
    #[error("{action}")]
    Sys {
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The calling process runs threads, and a fork copies only the caller's: the
    /// child could deadlock on a lock another thread held.
    #[error("refusing to fork the monitor from a process with {threads} threads")]
    Threaded {
        /// How many threads it has.
        threads: usize,
    },
    /// The runtime failed; its own message.
    #[error("{runtime}: {message}")]
    Runtime {
        /// The runtime binary.
        runtime: String,
        /// Its error text.
        message: String,
    },
}

/// A failed system call while `action`.
pub fn sys(action: &'static str) -> impl FnOnce(io::Error) -> MonitorError {
    move |source| MonitorError::Sys { action, source }
}
