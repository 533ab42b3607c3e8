//! A node's identity in gossip: who it is (the stable [`NodeName`]), where
//! to reach it, which incarnation of it this is (the generation), and what
//! it is doing (its [`NodeState`]).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::NodeName;

/// Largest encoded identity accepted, in bytes. A foca packet is at most
/// 1400 bytes and an indirect probe carries three identities (source,
/// destination, target) in its header, so each must stay well under a
/// third of that, leaving room for piggybacked updates.
pub const MAX_IDENTITY_LEN: usize = 400;

/// What a node is doing, as gossiped with its identity. Only `Ready`
/// members own keys (the ring is built from them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Started, looking for the cluster or catching up: owns nothing yet.
    Joining,
    /// Serving: owns its arcs of the ring.
    Ready,
    /// Shutting down gracefully: its keys move on before it goes.
    Leaving,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Ready => "ready",
            NodeState::Leaving => "leaving",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The addresses a node advertises besides its gossip one: one host (the
/// `--advertise-host`) and a port per service. Kept as one host and three
/// ports rather than three `host:port` strings so an identity stays small
/// on the wire (see [`MAX_IDENTITY_LEN`]); [`NodeIdentity::memcache_addr`]
/// and friends give the `host:port` strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoints {
    /// A DNS name or an IP literal (IPv6 without brackets).
    pub host: String,
    pub memcache_port: u16,
    pub peer_port: u16,
    pub http_port: u16,
}

/// Why an identity cannot be gossiped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdentity {
    #[error("invalid advertised host {0:?}: empty, or holds whitespace or control characters")]
    Host(String),
    #[error(
        "identity is {0} bytes encoded, more than {MAX_IDENTITY_LEN}: shorten the node name or the advertised host"
    )]
    TooLarge(usize),
}

/// A node's identity as foca sees it: foca keys members by
/// [`foca::Identity::addr`], which is the stable name here, so a node that
/// comes back with a new generation, new addresses or a new state replaces
/// its previous identity ([`foca::Notification::Rename`]) instead of
/// appearing as a second member.
///
/// Cheap to clone (foca clones identities into every message header): the
/// strings are shared.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    name: NodeName,
    gossip: SocketAddr,
    host: Arc<str>,
    memcache_port: u16,
    peer_port: u16,
    http_port: u16,
    generation: u64,
    /// Bumped by every metadata change within a generation (a state
    /// change), so the newer identity wins foca's conflict resolution.
    version: u32,
    state: NodeState,
}

impl NodeIdentity {
    /// A new node in state [`NodeState::Joining`], whose generation is the
    /// current time in milliseconds since the Unix epoch: a restarted
    /// process (same name) gets a larger one and wins over what the cluster
    /// remembers of the previous process.
    ///
    /// `gossip` is the UDP address peers send to (an IP, not a name: gossip
    /// never waits on DNS).
    ///
    /// # Errors
    /// [`InvalidIdentity`] if the host is empty or unprintable, or if the
    /// identity would not fit foca's packets.
    pub fn new(
        name: NodeName,
        gossip: SocketAddr,
        endpoints: Endpoints,
    ) -> Result<NodeIdentity, InvalidIdentity> {
        let host = endpoints.host;
        if !valid_host(&host) {
            return Err(InvalidIdentity::Host(host));
        }
        let identity = NodeIdentity {
            name,
            gossip,
            host: Arc::from(host),
            memcache_port: endpoints.memcache_port,
            peer_port: endpoints.peer_port,
            http_port: endpoints.http_port,
            generation: now_ms().max(1),
            version: 0,
            state: NodeState::Joining,
        };
        let len = identity.encoded_len();
        if len > MAX_IDENTITY_LEN {
            return Err(InvalidIdentity::TooLarge(len));
        }
        Ok(identity)
    }

    /// The same identity with another generation (at least 1): for tests,
    /// and for a process that keeps its own restart counter.
    #[must_use]
    pub fn with_generation(mut self, generation: u64) -> NodeIdentity {
        self.generation = generation.max(1);
        self.version = 0;
        self
    }

    /// The same identity in another state, announced as newer (same
    /// generation, next version).
    #[must_use]
    pub fn with_state(&self, state: NodeState) -> NodeIdentity {
        NodeIdentity {
            state,
            version: self.version.wrapping_add(1),
            ..self.clone()
        }
    }

    /// A new generation of this node that beats both this identity and
    /// `rival` (another identity with the same name): the identity to
    /// rejoin with after being declared down.
    #[must_use]
    pub fn renewed_over(&self, rival: Option<&NodeIdentity>) -> NodeIdentity {
        let floor = rival.map_or(0, |r| r.generation);
        NodeIdentity {
            generation: now_ms()
                .max(self.generation.saturating_add(1))
                .max(floor.saturating_add(1)),
            version: 0,
            ..self.clone()
        }
    }

    pub fn name(&self) -> &NodeName {
        &self.name
    }

    /// Where this node's gossip (UDP) listens.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip
    }

    /// The advertised host the service addresses are built from.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `host:port` of the memcache listener, as clients should be told.
    pub fn memcache_addr(&self) -> String {
        join_host_port(&self.host, self.memcache_port)
    }

    /// `host:port` of the peer gRPC listener: where forwarded requests go.
    pub fn peer_addr(&self) -> String {
        join_host_port(&self.host, self.peer_port)
    }

    /// `host:port` of the HTTP listener (metrics, health, admin).
    pub fn http_addr(&self) -> String {
        join_host_port(&self.host, self.http_port)
    }

    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            host: self.host.to_string(),
            memcache_port: self.memcache_port,
            peer_port: self.peer_port,
            http_port: self.http_port,
        }
    }

    /// Which process of this name this is: grows on every restart and
    /// every rejoin after being declared down. Data and CAS tokens of an
    /// older generation must never be served by a newer one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counts metadata changes within a generation.
    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn state(&self) -> NodeState {
        self.state
    }

    pub fn is_ready(&self) -> bool {
        self.state == NodeState::Ready
    }

    /// A stand-in for a seed whose identity is not known yet: foca can only
    /// send to identities, and a joiner knows its seeds by address alone.
    /// Generation 0 marks it; no real identity has it (see
    /// [`super::driver`], which rewrites an announce addressed to a
    /// placeholder into one addressed to the receiving node).
    pub(crate) fn placeholder(gossip: SocketAddr) -> NodeIdentity {
        NodeIdentity {
            name: NodeName::new("seed").expect("a valid name"),
            gossip,
            host: Arc::from("seed"),
            memcache_port: 0,
            peer_port: 0,
            http_port: 0,
            generation: 0,
            version: 0,
            state: NodeState::Joining,
        }
    }

    pub(crate) fn is_placeholder(&self) -> bool {
        self.generation == 0
    }

    /// What decides between two identities of the same name: the newer
    /// generation, then the newer version; the remaining fields only make
    /// the order total, so every node picks the same winner.
    #[allow(clippy::type_complexity)]
    fn precedence(&self) -> (u64, u32, NodeState, SocketAddr, &str, (u16, u16, u16)) {
        (
            self.generation,
            self.version,
            self.state,
            self.gossip,
            &*self.host,
            (self.memcache_port, self.peer_port, self.http_port),
        )
    }

    fn encoded_len(&self) -> usize {
        postcard::to_allocvec(self).map_or(usize::MAX, |bytes| bytes.len())
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}#{}.{}({})",
            self.name, self.gossip, self.generation, self.version, self.state
        )
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = NodeName;

    /// A node declared down comes back by itself under a new generation,
    /// unless it is leaving: then being down is what it wants.
    fn renew(&self) -> Option<Self> {
        (self.state != NodeState::Leaving).then(|| self.renewed_over(None))
    }

    fn addr(&self) -> NodeName {
        self.name.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.precedence().cmp(&adversary.precedence()) == Ordering::Greater
    }
}

/// A DNS name or IP literal (at most 255 bytes, room for IPv6 brackets),
/// printable: it ends up in `host:port` strings, logs and admin views.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= crate::MAX_NODE_NAME_LEN + 2
        && !host.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `host:port`, with brackets around an IPv6 literal.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The identity as it travels (postcard: fields in order, varints). The
/// name and host are checked again on the way in: a packet from the
/// network is not trusted to hold a valid name.
#[derive(Serialize)]
struct WireRef<'a> {
    name: &'a str,
    gossip: SocketAddr,
    host: &'a str,
    memcache_port: u16,
    peer_port: u16,
    http_port: u16,
    generation: u64,
    version: u32,
    state: NodeState,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    gossip: SocketAddr,
    #[serde(borrow)]
    host: Cow<'a, str>,
    memcache_port: u16,
    peer_port: u16,
    http_port: u16,
    generation: u64,
    version: u32,
    state: NodeState,
}

impl Serialize for NodeIdentity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireRef {
            name: self.name.as_str(),
            gossip: self.gossip,
            host: &self.host,
            memcache_port: self.memcache_port,
            peer_port: self.peer_port,
            http_port: self.http_port,
            generation: self.generation,
            version: self.version,
            state: self.state,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NodeIdentity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let wire = Wire::deserialize(deserializer)?;
        let name = NodeName::new(&wire.name).map_err(D::Error::custom)?;
        if !valid_host(&wire.host) {
            return Err(D::Error::custom("invalid host"));
        }
        Ok(NodeIdentity {
            name,
            gossip: wire.gossip,
            host: Arc::from(&*wire.host),
            memcache_port: wire.memcache_port,
            peer_port: wire.peer_port,
            http_port: wire.http_port,
            generation: wire.generation,
            version: wire.version,
            state: wire.state,
        })
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity as _;

    use super::*;

    fn identity(name: &str) -> NodeIdentity {
        NodeIdentity::new(
            NodeName::new(name).unwrap(),
            "127.0.0.1:7946".parse().unwrap(),
            Endpoints {
                host: "shoal-0.shoal.default.svc.cluster.local".into(),
                memcache_port: 11211,
                peer_port: 7947,
                http_port: 9150,
            },
        )
        .unwrap()
        .with_generation(1_700_000_000_000)
    }

    #[test]
    fn round_trips_through_postcard() {
        let id = identity("shoal-0").with_state(NodeState::Ready);
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert!(bytes.len() < 100, "{} bytes", bytes.len());
        let back: NodeIdentity = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, id);
        assert_eq!(
            back.peer_addr(),
            "shoal-0.shoal.default.svc.cluster.local:7947"
        );
    }

    #[test]
    fn rejects_invalid_names_and_hosts_from_the_wire() {
        let mut id = identity("shoal-0");
        id.host = Arc::from("bad host");
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert!(postcard::from_bytes::<NodeIdentity>(&bytes).is_err());
        let wire = WireRef {
            name: "a b",
            gossip: id.gossip,
            host: "h",
            memcache_port: 1,
            peer_port: 2,
            http_port: 3,
            generation: 1,
            version: 0,
            state: NodeState::Ready,
        };
        let bytes = postcard::to_allocvec(&wire).unwrap();
        assert!(postcard::from_bytes::<NodeIdentity>(&bytes).is_err());
        // Truncated input at every length is an error, never a panic.
        let good = postcard::to_allocvec(&identity("shoal-0")).unwrap();
        for len in 0..good.len() {
            assert!(postcard::from_bytes::<NodeIdentity>(&good[..len]).is_err());
        }
    }

    #[test]
    fn newer_generation_then_version_wins() {
        let old = identity("shoal-0");
        let ready = old.with_state(NodeState::Ready);
        assert!(ready.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&ready));
        let renewed = ready.renew().unwrap();
        assert!(renewed.generation() > ready.generation());
        assert_eq!(renewed.state(), NodeState::Ready);
        assert!(renewed.win_addr_conflict(&ready));
        // A rival far in the future is beaten too.
        let rival = ready.clone().with_generation(u64::MAX / 2);
        let over = ready.renewed_over(Some(&rival));
        assert!(over.win_addr_conflict(&rival));
        assert_eq!(renewed.addr(), old.addr());
        // Leaving nodes stay down.
        assert!(ready.with_state(NodeState::Leaving).renew().is_none());
    }

    #[test]
    fn bounds_the_encoded_size() {
        let err = NodeIdentity::new(
            NodeName::new("n".repeat(200)).unwrap(),
            "127.0.0.1:1".parse().unwrap(),
            Endpoints {
                host: "h".repeat(250),
                memcache_port: 1,
                peer_port: 2,
                http_port: 3,
            },
        )
        .unwrap_err();
        assert!(matches!(err, InvalidIdentity::TooLarge(_)), "{err}");
    }

    #[test]
    fn brackets_ipv6_hosts() {
        assert_eq!(join_host_port("::1", 11211), "[::1]:11211");
        assert_eq!(join_host_port("10.0.0.1", 1), "10.0.0.1:1");
    }
}
