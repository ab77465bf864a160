//! What crid knows: the pods and containers in memory and on disk ([`store`]), their
//! state files ([`record`]: crid's own serde types with a schema version), how a
//! record reads as the CRI's status ([`status`]), and the streaming URLs handed out
//! and not yet used ([`tokens`]). Nothing here knows [`Crid`] or calls back up.
//!
//! [`Crid`]: crate::Crid

pub mod record;
pub mod status;
pub mod store;
pub mod tokens;

pub use record::{new_id, now_ns};
