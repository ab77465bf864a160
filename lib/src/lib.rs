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
pub mod mountattr;
pub mod paths;
pub mod platform;
pub mod progress;
pub mod reference;
pub mod registries;
pub mod registry;
pub mod runc;
pub mod seccomp;
pub mod spdy;
pub mod spec;
pub mod sync;
pub mod tls;

/// An error and its causes on one line, each cause once (a cause whose text the
/// line already holds is left out), newlines made spaces: what every tool prints
/// and crid answers.
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cur {
        let s = c.to_string();
        if !s.is_empty() && !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
        cur = c.source();
    }
    out.replace('\n', " ")
}
