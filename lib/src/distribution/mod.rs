//! Image distribution: images from registries into the shared store. References
//! ([`reference`]), digests ([`digest`]), platforms ([`platform`]), the OCI image
//! layout on disk ([`layout`]), pulls and their configuration ([`registry`]:
//! registries.conf, auth files, certs.d) and the progress they report ([`progress`]).

pub mod digest;
pub mod layout;
pub mod platform;
pub mod policy;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod unpack;
