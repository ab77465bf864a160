//! The host below the pods: namespaces pinned to files ([`netns`], the one module
//! allowed `unsafe`), CNI networking ([`net`]), the cgroup manager and cgroup
//! paths ([`cgroups`]), cgroup and network statistics ([`stats`]) and filesystem
//! usage ([`fsusage`]). Nothing here knows [`Crid`] or
//! its state: each takes what it works on as arguments.
//!
//! [`Crid`]: crate::Crid

pub mod cgroups;
pub mod fsusage;
pub mod net;
#[allow(unsafe_code)]
pub mod netns;
pub mod stats;
