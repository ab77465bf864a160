//! The OCI runtime and the monitor: every runtime command line ([`runc`]) and the
//! contract between ctrmon and its callers ([`monitor`]).

pub mod monitor;
pub mod runc;
