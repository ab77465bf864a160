//! Root filesystems and bundles: layers unpacked ([`layer`]), the runtime spec
//! generated from the image config ([`spec`], with [`seccomp`]), mounts set up
//! ([`mountattr`]), the layer cache ([`cache`]) and bundles made of them
//! ([`bundle`]).

pub mod bundle;
pub mod cache;
pub mod layer;
pub mod mountattr;
pub mod seccomp;
pub mod spec;
