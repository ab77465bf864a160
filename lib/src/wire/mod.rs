//! Protocols on the wire: SPDY/3.1 framing for exec, attach and port-forward
//! ([`spdy`]) and the servers' TLS ([`tls`]).

pub mod spdy;
pub mod tls;
