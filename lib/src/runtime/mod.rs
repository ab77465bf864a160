//! The OCI runtime and the monitor: every runtime command line ([`runc`]), the
//! contract between ctrmon and its callers ([`monitor`]), and the systemd units
//! they are placed in under the systemd cgroup manager ([`systemd`]).

pub mod monitor;
pub mod runc;
pub mod sealed;
pub mod systemd;
