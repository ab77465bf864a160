//! imgserve's library: the crikit image store served read-only over the OCI
//! distribution API (pull side), so the nodes of a cluster pull from each other.
//!
//! `view` decides what of the store may be served, `api` answers a parsed request,
//! `auth` checks clients, `fetch` gets from upstream what peers ask for and the
//! store lacks (`growing`: its body while the bytes arrive), and `server` speaks
//! HTTP/1.1 with bodies sent by sendfile.
#![deny(missing_docs)]

pub mod api;
pub mod auth;
pub mod fetch;
pub mod growing;
pub mod server;
pub mod view;
