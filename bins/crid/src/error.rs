//! crid's errors: one enum for the domain, each variant naming the object it failed
//! on and keeping its cause, and an [`ErrorKind`] that says what happened in the
//! terms a client acts on (retry, fix the request, wait). The service layer turns
//! kinds into gRPC codes in one place; nothing here knows gRPC.

use crikit::distribution::layout::LayoutError;
use crikit::distribution::registry::RegistryError;
use crikit::rootfs::bundle::BundleError;
use crikit::rootfs::layer::LayerError;
use crikit::runtime::runc::RuntimeError;
use std::path::PathBuf;

/// What went wrong, as a client should act on it (containerd's errdefs kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The pod, container or image does not exist.
    NotFound,
    /// The name is taken.
    AlreadyExists,
    /// The request is wrong, or asks for what crid does not do.
    InvalidArgument,
    /// The object is not in a state that allows it (not ready, not running).
    FailedPrecondition,
    /// Out of disk space or quota: retrying will not help until space is freed.
    ResourceExhausted,
    /// A registry or another service could not be reached: worth retrying.
    Unavailable,
    /// It took too long.
    DeadlineExceeded,
    /// The OCI runtime, the monitor or a CNI plugin failed.
    Unknown,
    /// crid itself failed.
    Internal,
}

impl ErrorKind {
    /// Its name as a metric's label value (`not_found`).
    pub fn as_label(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::ResourceExhausted => "resource_exhausted",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::Unknown => "unknown",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An image volume that could not be mounted.
#[derive(Debug, thiserror::Error)]
#[error("image volume {path}: mounting image {image}")]
pub struct ImageVolumeError {
    /// Where in the container.
    pub path: String,
    /// The image.
    pub image: String,
    /// The cause.
    #[source]
    pub source: BundleError,
}

/// crid's errors.
#[derive(Debug, thiserror::Error)]
pub enum CridError {
    /// A pod, container or image that is not there.
    #[error("{0} not found")]
    NotFound(String),
    /// A name another object has.
    #[error("{what} already exists (id {id})")]
    AlreadyExists {
        /// The object (`pod default/web`).
        what: String,
        /// The id of the one that has the name.
        id: String,
    },
    /// A bad request: a missing field, a bad value.
    #[error("{0}")]
    Invalid(String),
    /// A request for what crid cannot honour (SELinux labels, AppArmor, …).
    #[error("{0} are not supported by crid")]
    Unsupported(String),
    /// The object is not in a state that allows the request.
    #[error("{0}")]
    NotReady(String),
    /// A bound was reached (streaming URLs handed out and not used).
    #[error("{0}")]
    TooMany(String),
    /// A file or system call failed.
    #[error("{what}")]
    Io {
        /// What was being done, to what.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A state file could not be written.
    #[error("saving {what}")]
    Save {
        /// The object (`pod ID`).
        what: String,
        /// The cause.
        #[source]
        source: crikit::atomic::WriteError,
    },
    /// A state file that cannot be loaded.
    #[error("{}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong (a [`StateError`](crate::state::record::StateError)).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The image store failed.
    #[error("image store")]
    Store(#[from] LayoutError),
    /// A pull failed.
    #[error(transparent)]
    Pull(RegistryError),
    /// A signature policy file that cannot be read or enforced.
    #[error(transparent)]
    Policy(crikit::distribution::policy::PolicyError),
    /// A pull made no progress for too long.
    #[error("pulling {image}: no progress for {secs} s (pull-progress-timeout); cancelled")]
    PullStalled {
        /// The image.
        image: String,
        /// The limit.
        secs: u64,
    },
    /// A container's bundle could not be made.
    #[error("container {name}: making its bundle")]
    Bundle {
        /// The container's name.
        name: String,
        /// The cause.
        #[source]
        source: BundleError,
    },
    /// An image volume could not be mounted.
    #[error(transparent)]
    ImageVolume(Box<ImageVolumeError>),
    /// The layer cache failed while unused layers were removed.
    #[error("removing unused layers from {}", path.display())]
    Layers {
        /// The layer cache.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: BundleError,
    },
    /// The OCI runtime failed.
    #[error("{action} container {id}")]
    Runtime {
        /// What crid asked (`starting`).
        action: &'static str,
        /// The container.
        id: String,
        /// The runtime's error.
        #[source]
        source: RuntimeError,
    },
    /// ctrmon failed; its own message, with the runtime's.
    #[error("{what}: {message}")]
    Monitor {
        /// What it was asked (`creating container web`).
        what: String,
        /// Its error text.
        message: String,
    },
    /// The pod network.
    #[error("pod {pod}: {subject}")]
    Network {
        /// The pod.
        pod: String,
        /// `network NAME`, or `network` before one was chosen.
        subject: String,
        /// How the network's failure is to be taken.
        kind: ErrorKind,
        /// The cause (a [`NetError`](crate::host::net::NetError)).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An exec that ran out of time.
    #[error("command {cmd:?} timed out after {secs} s and was killed")]
    ExecTimeout {
        /// The command.
        cmd: Vec<String>,
        /// The timeout.
        secs: i64,
    },
    /// A container that would not stop even when killed.
    #[error("container {0} did not stop")]
    Unstoppable(String),
    /// The outcome of work that several requests shared (one pull for all).
    #[error(transparent)]
    Shared(std::sync::Arc<CridError>),
    /// A blocking task of crid's died.
    #[error("a worker task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// crid's results.
pub type Result<T, E = CridError> = std::result::Result<T, E>;

impl CridError {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CridError {
        let what = what.into();
        move |source| CridError::Io { what, source }
    }

    /// A state file of `what` that could not be saved.
    pub fn save(what: impl Into<String>) -> impl FnOnce(crikit::atomic::WriteError) -> CridError {
        let what = what.into();
        move |source| CridError::Save { what, source }
    }

    /// What happened, as a client should act on it.
    pub fn kind(&self) -> ErrorKind {
        // A full disk is the cause wherever it shows up in the chain.
        if self.out_of_space() {
            return ErrorKind::ResourceExhausted;
        }
        match self {
            CridError::Shared(e) => e.kind(),
            CridError::NotFound(_) => ErrorKind::NotFound,
            CridError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            CridError::Invalid(_) | CridError::Unsupported(_) => ErrorKind::InvalidArgument,
            CridError::NotReady(_) => ErrorKind::FailedPrecondition,
            CridError::TooMany(_) => ErrorKind::ResourceExhausted,
            CridError::Io { .. } | CridError::Save { .. } | CridError::State { .. } => {
                ErrorKind::Internal
            }
            CridError::Store(e) if e.is_not_found() => ErrorKind::NotFound,
            CridError::Store(_) | CridError::Task(_) => ErrorKind::Internal,
            CridError::Pull(e) => match e.kind() {
                crikit::distribution::registry::ErrorKind::NotFound => ErrorKind::NotFound,
                crikit::distribution::registry::ErrorKind::Usage => ErrorKind::InvalidArgument,
                crikit::distribution::registry::ErrorKind::Registry => ErrorKind::Unavailable,
                crikit::distribution::registry::ErrorKind::Other => ErrorKind::Internal,
                // The node's policy, not the request, says no: a failed pull.
                crikit::distribution::registry::ErrorKind::Refused => ErrorKind::FailedPrecondition,
            },
            CridError::Policy(_) => ErrorKind::FailedPrecondition,
            CridError::PullStalled { .. } | CridError::ExecTimeout { .. } => {
                ErrorKind::DeadlineExceeded
            }
            CridError::Bundle { source, .. } | CridError::Layers { source, .. } => {
                bundle_kind(source)
            }
            CridError::ImageVolume(v) => bundle_kind(&v.source),
            CridError::Network { kind, .. } => *kind,
            CridError::Runtime { .. } | CridError::Monitor { .. } | CridError::Unstoppable(_) => {
                ErrorKind::Unknown
            }
        }
    }

    /// Whether the cause is a full disk or an exceeded quota.
    fn out_of_space(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
                    || io.kind() == std::io::ErrorKind::StorageFull
                {
                    return true;
                }
            }
            cur = e.source();
        }
        // Messages that crossed a process boundary (ctrmon, the runtime) as text.
        matches!(self, CridError::Monitor { message, .. } if message.contains("no space left on device"))
    }

    /// The message with its whole cause chain, on one line, each cause once.
    pub fn message(&self) -> String {
        crikit::one_line(self)
    }
}

/// A bundle error's kind: the image's own trouble is the request's; the store's or
/// the disk's is crid's.
fn bundle_kind(e: &BundleError) -> ErrorKind {
    match e {
        BundleError::Store(l) if l.is_not_found() => ErrorKind::NotFound,
        BundleError::Spec(_) | BundleError::Image { .. } => ErrorKind::InvalidArgument,
        BundleError::Layer(l) => match l {
            LayerError::Entry { .. }
            | LayerError::LinkTargetMissing { .. }
            | LayerError::DigestMismatch { .. } => ErrorKind::InvalidArgument,
            // A broken archive is the image's; a failing disk is not.
            LayerError::Read { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                ErrorKind::InvalidArgument
            }
            _ => ErrorKind::Internal,
        },
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_resource_exhausted_and_named_wherever_it_is() {
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = CridError::Bundle {
            name: "web".into(),
            source: BundleError::Io {
                action: "writing",
                path: "/x/config.json".into(),
                source: enospc,
            },
        };
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        let m = e.message();
        assert!(
            m.starts_with("container web: making its bundle: writing /x/config.json: "),
            "{m}"
        );
        assert!(m.contains("No space left on device"), "{m}");
        let e = CridError::Monitor {
            what: "creating container web".into(),
            message: "runc create: write /x: no space left on device".into(),
        };
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
    }

    #[test]
    fn kinds() {
        assert_eq!(
            CridError::NotFound("pod x".into()).kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            CridError::Unsupported("SELinux options".into()).to_string(),
            "SELinux options are not supported by crid"
        );
        let io = CridError::io("reading x")(std::io::Error::other("boom"));
        assert_eq!(
            (io.kind(), io.message().as_str()),
            (ErrorKind::Internal, "reading x: boom")
        );
        let stalled = CridError::PullStalled {
            image: "a".into(),
            secs: 3,
        };
        assert_eq!(stalled.kind(), ErrorKind::DeadlineExceeded);
        let rt = CridError::Runtime {
            action: "starting",
            id: "c1".into(),
            source: RuntimeError::Failed {
                runtime: "runc".into(),
                verb: "start",
                message: "boom".into(),
            },
        };
        assert_eq!(rt.kind(), ErrorKind::Unknown);
        assert_eq!(rt.message(), "starting container c1: runc start: boom");
    }
}
