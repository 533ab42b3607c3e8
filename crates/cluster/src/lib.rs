//! shoal's cluster: which node owns a key, when that changes, and the API
//! nodes use to forward requests to each other.
//!
//! The parts:
//! - [`ring`]: the consistent-hash [`Ring`] built from the ready members'
//!   stable [`NodeName`]s, with virtual nodes and a placement hash that is
//!   defined byte for byte (SipHash-2-4, zero keys, one `write` of raw
//!   bytes), so nodes built by different compilers agree on every owner.
//!   Pure and synchronous.
//! - [`debounce`]: a pure state machine that turns membership changes
//!   (timestamps as plain values) into "rebuild the ring now with these
//!   members", so a flapping member does not reshuffle keys over and over.
//! - [`peer`]: the peer gRPC API generated from `proto/peer.proto` (tonic +
//!   prost, compiled by protox in `build.rs`: no system `protoc`), and the
//!   design of how it maps onto the store and the protocol's `Command`.
//!
//! Still to come (issue 3): membership with foca driven by one tokio task,
//! the peer server and the pooled, batching peer client.

pub mod debounce;
mod node;
pub mod peer;
pub mod ring;

pub use debounce::{Change, Debounce, DebounceConfig};
pub use node::{MAX_NODE_NAME_LEN, NodeName};
pub use ring::{DEFAULT_VNODES, Ring};

/// The cluster crate's errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A node name that cannot key the ring or be shown in stats and logs.
    #[error("invalid node name {name:?}: {reason}")]
    InvalidNodeName { name: String, reason: &'static str },
}
