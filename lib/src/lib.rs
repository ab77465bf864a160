//! crikit: the library behind `imgpull`, `bundlegen`, `ctrmon` and `crid`.
//!
//! The binaries are thin: they parse arguments and call into the modules here.
//! The library never prints, never exits and never reads argv; every root
//! directory it touches is a parameter so tests can point it at a temp dir.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub use oci_spec;

pub mod atomic;
pub mod auth;
pub mod bundle;
pub mod certs;
pub mod cli;
pub mod digest;
pub mod layer;
pub mod layout;
pub mod monitor;
pub mod paths;
pub mod platform;
pub mod progress;
pub mod reference;
pub mod registries;
pub mod registry;
pub mod runc;
pub mod seccomp;
pub mod spec;
