//! shoal's cluster: which node owns a key, when that changes, and the API
//! nodes use to forward requests to each other.
//!
//! The parts:
//! - [`ring`]: the consistent-hash [`Ring`] built from the ready members'
//!   stable [`NodeName`]s, with virtual nodes and a placement hash that is
//!   defined byte for byte (rapidhash V3, default secrets, one `write` of
//!   raw bytes), so nodes built by different compilers agree on every owner.
//!   Pure and synchronous.
//! - [`debounce`]: a pure state machine that turns membership changes
//!   (timestamps as plain values) into "rebuild the ring now with these
//!   members", so a flapping member does not reshuffle keys over and over.
//! - [`peer`]: the peer gRPC API generated from `proto/peer.proto` (tonic +
//!   prost, compiled by protox in `build.rs`: no system `protoc`), and the
//!   design of how it maps onto the store and the protocol's `Command`.
//! - [`membership`]: SWIM gossip (foca) driven by one tokio task, which
//!   publishes the live members, their states and the debounced [`Ring`]
//!   of the ready ones on a `watch` channel ([`Membership`]).
//!
//! - [`client`]: the pooled peer client; concurrent operations for one
//!   peer are batched onto one long-lived `Pipeline` stream.
//! - [`packed`]: the packed form of a forwarded get's keys and answers.

pub mod client;
pub mod codec;
pub mod debounce;
pub mod membership;
mod node;
pub mod packed;
pub mod peer;
pub mod ring;

pub use debounce::{Change, Debounce, DebounceConfig};
pub use membership::{
    Membership, MembershipConfig, MembershipView, NodeIdentity, NodeState, Profile,
};
pub use node::{MAX_NODE_NAME_LEN, NodeName};
pub use ring::{DEFAULT_VNODES, Ring};

/// The cluster crate's errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A node name that cannot key the ring or be shown in stats and logs.
    #[error("invalid node name {name:?}: {reason}")]
    InvalidNodeName { name: String, reason: &'static str },
    /// A peer address that is not a `host:port`.
    #[error("invalid peer address {addr:?}: {reason}")]
    InvalidPeerAddress { addr: String, reason: String },
    /// A peer could not answer in time: unreachable, the connection or
    /// stream broke, the deadline passed, or too much is queued for it.
    /// The same request may succeed later (see [`client`] for the mapping
    /// to gRPC and memcache errors).
    #[error("{0}")]
    Unavailable(String),
    /// The owner answered one operation with this error code (never
    /// `ERROR_CODE_NONE`).
    #[error("peer answered {}", .0.as_str_name())]
    Peer(peer::v1::ErrorCode),
}
