//! The gRPC adapters: the CRI's RuntimeService and ImageService over [`Crid`].
//! These are the only modules that know tonic; crid's errors become gRPC
//! statuses here, in one place, by their kind.
//!
//! [`Crid`]: crate::Crid

mod edge;
mod image;
mod runtime;
pub mod server;

pub use image::ImageService;
pub use runtime::RuntimeService;

use crate::error::{CridError, ErrorKind};
use tonic::{Code, Status};

/// The gRPC code for each kind of error (as containerd's `errdefs.ToGRPC`).
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Unknown => Code::Unknown,
        ErrorKind::Internal => Code::Internal,
    }
}

impl From<CridError> for Status {
    fn from(e: CridError) -> Status {
        let code = code(e.kind());
        let message = e.message();
        // Logged where it is handled: here, once per failed RPC.
        match code {
            Code::Internal | Code::Unknown | Code::ResourceExhausted => tracing::warn!("{message}"),
            _ => tracing::debug!("{message}"),
        }
        Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_code_and_the_message_its_causes() {
        let e = CridError::io("writing /x")(std::io::Error::from_raw_os_error(libc::ENOSPC));
        let s = Status::from(e);
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(
            s.message()
                .starts_with("writing /x: No space left on device"),
            "{}",
            s.message()
        );
        let s = Status::from(CridError::NotFound("pod p".into()));
        assert_eq!((s.code(), s.message()), (Code::NotFound, "pod p not found"));
        let s = Status::from(CridError::AlreadyExists {
            what: "pod a/b".into(),
            id: "1".into(),
        });
        assert_eq!(s.code(), Code::AlreadyExists);
        for (kind, c) in [
            (ErrorKind::InvalidArgument, Code::InvalidArgument),
            (ErrorKind::FailedPrecondition, Code::FailedPrecondition),
            (ErrorKind::Unavailable, Code::Unavailable),
            (ErrorKind::DeadlineExceeded, Code::DeadlineExceeded),
            (ErrorKind::Unknown, Code::Unknown),
            (ErrorKind::Internal, Code::Internal),
        ] {
            assert_eq!(code(kind), c);
        }
    }
}
