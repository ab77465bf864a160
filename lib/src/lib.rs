//! crikit: the library behind `imgpull`, `bundlegen`, `ctrmon`, `crid` and `imgserve`.
//!
//! The binaries are thin: they parse arguments and call into the modules here.
//! The library never prints, never exits and never reads argv; every root
//! directory it touches is a parameter so tests can point it at a temp dir.
//!
//! Its concerns, one folder each:
//! - [`distribution`]: images from registries into the shared store (references,
//!   digests, platforms, the OCI image layout, pulls and their configuration:
//!   registries.conf, auth files, certs.d);
//! - [`rootfs`]: layers unpacked, runtime specs generated, bundles made;
//! - [`runtime`]: every OCI runtime command line, and the contract between ctrmon
//!   and its callers (state directory, exit file, exec result, attach framing);
//! - [`wire`]: the protocols on the wire that are no one else's (SPDY/3.1, the
//!   servers' TLS);
//! - and what all of them use: [`atomic`] writes, [`paths`], [`sync`].
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub use oci_spec;

pub mod atomic;
pub mod distribution;
pub mod paths;
pub mod rootfs;
pub mod runtime;
pub mod sync;
mod time;
pub mod wire;

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
