//! The streaming server: Exec, Attach and PortForward answer with a URL on it, and
//! the client (kubelet, kubectl, crictl) connects there with SPDY/3.1.

pub mod spdy;
