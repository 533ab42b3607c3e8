//! Membership: who is in the cluster, in what state, and the ring that
//! follows from it. SWIM gossip over UDP with [foca], driven by one tokio
//! task.
//!
//! # How it fits together
//! - [`NodeIdentity`] is what a node gossips about itself: its stable
//!   [`NodeName`](crate::NodeName) (foca's member key), its gossip address,
//!   its advertised memcache / peer / HTTP endpoints, a *generation* (which
//!   process of that name this is) and its [`NodeState`].
//! - [`Membership::start`] spawns the driver: one task that owns `Foca`,
//!   the UDP socket, a heap of foca's timers (one sleep, for the earliest),
//!   the ring [`Debounce`](crate::Debounce) and a command channel. Every
//!   foca call is followed by draining its `AccumulatingRuntime`: packets
//!   out, timers into the heap, notifications into the member table.
//! - The task publishes a [`MembershipView`] on a `watch` channel: the live
//!   members with their metadata, the current [`Ring`] (built from the
//!   *ready* members by stable name, debounced), whether this node has
//!   joined, its generation and a data *epoch*.
//!
//! # State changes travel as identity changes
//! Joining → ready → leaving is announced by switching to a new identity
//! (same name and generation, next `version`, new state) with
//! `Foca::change_identity`. Peers see `Rename(old, new)`: same member, new
//! metadata. This beats a custom broadcast because foca's membership table
//! *is* the state: a node that joins later gets every member's state in
//! the feed it is sent, while a custom broadcast is only retransmitted a
//! few times and a latecomer would never hear it.
//!
//! # Finding the cluster
//! `--seeds` are `host:port` of other nodes' gossip sockets; a name may
//! resolve to many addresses (a headless service). They are resolved and
//! announced to (every address that is not this node) with doubling
//! backoff for as long as this node knows no other member. A joiner
//! does not know its seeds' identities, only their addresses, so it
//! announces to a placeholder identity (generation 0) and the receiving
//! driver readdresses such an announce to itself before foca sees it. No
//! seeds, or seeds that resolve only to this node: a cluster of one, ready
//! at once (it keeps re-resolving slowly, so two nodes that both started
//! alone still merge).
//!
//! # Down and back
//! A node declared down (a long pause, a partition) learns it from gossip
//! and comes back by itself under a new generation (foca calls
//! [`foca::Identity::renew`]); so does a node that hears of a *newer*
//! identity under its own name. Either way the view's `epoch` grows: the
//! store owner must drop everything it held, because the cluster moved on
//! without it (writes went to other owners). The view is published before
//! any packet carrying the new identity leaves.

mod driver;
mod identity;
mod seeds;

use std::fmt;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use identity::{Endpoints, InvalidIdentity, MAX_IDENTITY_LEN, NodeIdentity, NodeState};

use crate::{DEFAULT_VNODES, DebounceConfig, NodeName, Ring};

/// Timings. [`Profile::lan`] for deployments, [`Profile::fast`] for tests;
/// every field can be changed.
#[derive(Debug, Clone)]
pub struct Profile {
    /// foca's protocol timings and fan-outs (probe period and RTT,
    /// suspicion, retransmissions, periodic gossip and announces).
    pub foca: foca::Config,
    /// When ring changes are applied (see [`crate::debounce`]).
    pub debounce: DebounceConfig,
    /// Virtual nodes per member in the ring.
    pub vnodes: u32,
    /// First delay between two rounds of seed resolution; doubles...
    pub seed_retry_min: Duration,
    /// ...up to this.
    pub seed_retry_max: Duration,
    /// How long one seed may take to resolve.
    pub resolve_timeout: Duration,
    /// How long a leaving node keeps gossiping its `Leaving` state (and
    /// answering probes) before it leaves: long enough for peers to learn
    /// it and move its keys, so requests stop arriving before it goes.
    pub leave_grace: Duration,
}

impl Profile {
    /// foca's `Config::new_lan` for a cluster of about 10 (1 s probes,
    /// 500 ms RTT, 4 s suspicion: a crash is noticed in about 5–7 s),
    /// with `max_transmissions` raised from its 4 to 10: small clusters
    /// otherwise stop spreading an update after two or three hops.
    pub fn lan() -> Profile {
        let mut foca = foca::Config::new_lan(NonZeroU32::new(10).expect("non-zero"));
        foca.max_transmissions = NonZeroU8::new(10).expect("non-zero");
        Profile {
            foca,
            debounce: DebounceConfig::default(),
            vnodes: DEFAULT_VNODES,
            seed_retry_min: Duration::from_millis(200),
            seed_retry_max: Duration::from_secs(5),
            resolve_timeout: Duration::from_secs(2),
            leave_grace: Duration::from_secs(1),
        }
    }

    /// For tests on loopback: probe every 200 ms with an 80 ms RTT and
    /// 600 ms of suspicion, so a crash is noticed in about a second; ring
    /// changes settle in 100 ms.
    pub fn fast() -> Profile {
        let mut foca = foca::Config::new_lan(NonZeroU32::new(10).expect("non-zero"));
        foca.probe_period = Duration::from_millis(200);
        foca.probe_rtt = Duration::from_millis(80);
        foca.suspect_to_down_after = Duration::from_millis(600);
        foca.max_transmissions = NonZeroU8::new(10).expect("non-zero");
        foca.remove_down_after = Some(Duration::from_secs(60));
        let periodic = |ms, n| {
            Some(foca::PeriodicParams {
                frequency: Duration::from_millis(ms),
                num_members: NonZeroUsize::new(n).expect("non-zero"),
            })
        };
        foca.periodic_gossip = periodic(50, 3);
        foca.periodic_announce = periodic(1_000, 1);
        foca.periodic_announce_to_down_members = periodic(1_000, 2);
        Profile {
            foca,
            debounce: DebounceConfig {
                settle: Duration::from_millis(100),
                max_delay: Duration::from_millis(400),
                min_interval: Duration::from_millis(200),
            },
            vnodes: DEFAULT_VNODES,
            seed_retry_min: Duration::from_millis(50),
            seed_retry_max: Duration::from_millis(500),
            resolve_timeout: Duration::from_secs(1),
            leave_grace: Duration::from_millis(300),
        }
    }
}

impl Default for Profile {
    fn default() -> Profile {
        Profile::lan()
    }
}

/// What [`Membership::start`] needs besides the socket and the identity.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Other nodes' gossip addresses, `host:port`; empty for a cluster of
    /// one.
    pub seeds: Vec<String>,
    pub profile: Profile,
    /// Switch from `Joining` to `Ready` as soon as the node has joined (or
    /// found itself alone). Off when the server wants to say when itself
    /// ([`Membership::set_state`]).
    pub ready_on_join: bool,
}

impl MembershipConfig {
    pub fn new(seeds: Vec<String>, profile: Profile) -> MembershipConfig {
        MembershipConfig {
            seeds,
            profile,
            ready_on_join: true,
        }
    }
}

/// The cluster as this node sees it, published on every change.
#[derive(Clone)]
pub struct MembershipView {
    /// Grows by one on every change of anything below: a cheap "did
    /// anything change" for pollers.
    pub seq: u64,
    /// This node's current identity (its generation and state included).
    pub local: NodeIdentity,
    /// The live members (alive or suspect, any state), this node included,
    /// sorted by name.
    pub members: Vec<NodeIdentity>,
    /// The ring of the ready members, as last rebuilt (debounced). Empty
    /// until this node has joined.
    pub ring: Arc<Ring>,
    /// Whether this node has joined a cluster (or is a cluster of one).
    pub joined: bool,
    /// Grows each time this node came back after being declared down (or
    /// found a newer process under its name): whoever holds data for this
    /// node drops all of it when it changes.
    pub epoch: u64,
}

impl MembershipView {
    /// Joined (or alone), in state `Ready`, and in its own ring: until then
    /// the server answers `SERVER_ERROR` and `/readyz` 503.
    pub fn is_ready(&self) -> bool {
        self.joined && self.local.is_ready() && self.ring.contains(self.local.name())
    }

    /// This node's generation.
    pub fn generation(&self) -> u64 {
        self.local.generation()
    }

    /// A live member by name.
    pub fn member(&self, name: &NodeName) -> Option<&NodeIdentity> {
        self.members
            .binary_search_by(|m| m.name().cmp(name))
            .ok()
            .map(|i| &self.members[i])
    }
}

impl fmt::Debug for MembershipView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MembershipView")
            .field("seq", &self.seq)
            .field("local", &self.local)
            .field("members", &self.members)
            .field("ring", &self.ring)
            .field("joined", &self.joined)
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// The membership task has stopped (left, shut down, or panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the membership task has stopped")]
pub struct Stopped;

#[derive(Debug)]
enum Command {
    SetState(NodeState, oneshot::Sender<()>),
    Leave(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle on the membership task: the view, and the commands. Cheap to
/// clone; the task stops when every handle is dropped (without leaving:
/// call [`Membership::leave`] on a graceful shutdown).
#[derive(Clone)]
pub struct Membership {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<MembershipView>,
}

impl Membership {
    /// Spawns the membership task on `socket` (already bound, so tests can
    /// use `127.0.0.1:0`) as `identity`, and starts looking for the
    /// cluster. `identity`'s gossip address is what peers send to: the
    /// socket's address as others reach it. Needs a tokio runtime.
    pub fn start(
        config: MembershipConfig,
        socket: UdpSocket,
        identity: NodeIdentity,
    ) -> (Membership, JoinHandle<()>) {
        let (commands_tx, commands_rx) = mpsc::channel(16);
        let (driver, view) = driver::Driver::new(config, socket, identity, commands_rx);
        let task = tokio::spawn(driver.run());
        (
            Membership {
                commands: commands_tx,
                view,
            },
            task,
        )
    }

    /// A receiver of every new view (`changed()`, `wait_for()`): the
    /// router swaps its ring from here, the store owner watches `epoch`.
    pub fn subscribe(&self) -> watch::Receiver<MembershipView> {
        self.view.clone()
    }

    /// The latest view (a clone: hold it as long as you like).
    pub fn view(&self) -> MembershipView {
        self.view.borrow().clone()
    }

    /// The current ring.
    pub fn ring(&self) -> Arc<Ring> {
        self.view.borrow().ring.clone()
    }

    /// See [`MembershipView::is_ready`]; never true once the task is gone
    /// (its last view stays readable, but nobody keeps it current).
    pub fn is_ready(&self) -> bool {
        !self.commands.is_closed() && self.view.borrow().is_ready()
    }

    /// Announces a new state (e.g. `Ready` when [`MembershipConfig::ready_on_join`]
    /// is off, or `Joining` to stop owning keys without leaving).
    ///
    /// # Errors
    /// [`Stopped`] if the task is gone.
    pub async fn set_state(&self, state: NodeState) -> Result<(), Stopped> {
        self.call(|reply| Command::SetState(state, reply)).await
    }

    /// Leaves gracefully: gossips `Leaving` for the profile's
    /// `leave_grace` (peers take this node out of their rings while it
    /// still answers), then tells the cluster it is gone and stops the
    /// task. Returns once that is done.
    ///
    /// # Errors
    /// [`Stopped`] if the task was already gone.
    pub async fn leave(&self) -> Result<(), Stopped> {
        self.call(Command::Leave).await
    }

    /// Stops the task without telling anyone: peers will detect the node
    /// as failed.
    ///
    /// # Errors
    /// [`Stopped`] if the task was already gone.
    pub async fn shutdown(&self) -> Result<(), Stopped> {
        self.call(Command::Shutdown).await
    }

    async fn call(
        &self,
        command: impl FnOnce(oneshot::Sender<()>) -> Command,
    ) -> Result<(), Stopped> {
        let (reply, done) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| Stopped)?;
        done.await.map_err(|_| Stopped)
    }
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("view", &*self.view.borrow())
            .finish()
    }
}
