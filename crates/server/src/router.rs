//! Who answers a key: this node's store, or a peer's over the peer API.
//!
//! The [`Router`] follows the membership task's views. For each view it
//! builds a [`Table`] — the ring, whether this node is ready, and a peer
//! handle per live member — and swaps it in whole, so a connection takes
//! one `Arc<Table>` per pass over its read buffer and routes every request
//! of that pass with it, without locks.
//!
//! It also keeps the promise that no stale data comes back: when the ring
//! moves keys away from this node, the store drops its copies of them (so
//! they are never served again if ownership returns), and when the node
//! comes back from being declared down (a new epoch), it drops everything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use cluster::client::{ClientConfig, Peer, Peers};
use cluster::{Membership, MembershipView, NodeName};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::Node;

/// Forwarding figures for one peer, kept for as long as the node runs (a
/// peer that leaves and comes back keeps counting), shown by `stats
/// cluster`.
#[derive(Debug)]
pub(crate) struct PeerStats {
    /// Operations sent to the peer on behalf of clients.
    pub forwarded: AtomicU64,
    /// Of those, the ones that failed (unreachable, deadline, refused).
    pub errors: AtomicU64,
    /// `shoal_forward_duration_seconds{peer}`.
    pub duration: crate::metrics::Buckets,
}

/// A live member other than this node, and how to reach it.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    pub name: NodeName,
    pub peer: Peer,
    pub stats: Arc<PeerStats>,
}

/// Where one key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Local,
    /// `Table::remotes[i]`.
    Remote(usize),
    /// No owner can be reached: this node is not ready, or the owner has no
    /// peer handle (an address that does not parse).
    Unavailable,
}

/// The routing state of one membership view.
#[derive(Debug)]
pub(crate) struct Table {
    pub view: MembershipView,
    pub ready: bool,
    /// The ring is this node alone: every key is local, no hashing needed.
    alone: bool,
    /// Every live member but this one, in name order.
    pub remotes: Vec<Remote>,
    /// Where each ring member's keys go, by its index in the ring.
    routes: Vec<Owner>,
}

impl Table {
    /// Before the first view: owns nothing, knows no one.
    fn joining(view: MembershipView) -> Table {
        Table {
            view,
            ready: false,
            alone: false,
            remotes: Vec::new(),
            routes: Vec::new(),
        }
    }

    pub fn owner(&self, key: &[u8]) -> Owner {
        if self.alone {
            return Owner::Local;
        }
        if !self.ready {
            return Owner::Unavailable;
        }
        match self.view.ring.owner_index(key) {
            Some(i) => self.routes[i],
            None => Owner::Unavailable,
        }
    }

    /// Whether this node owns `key` now (the peer API's check).
    pub fn owns(&self, key: &[u8]) -> bool {
        matches!(self.owner(key), Owner::Local)
    }
}

/// This node's side of the cluster: the membership handle, the peer pool
/// and the current routing table.
pub(crate) struct Router {
    pub membership: Membership,
    peers: Peers,
    table: RwLock<Arc<Table>>,
    /// Bumped after every table swap: connections keep their own `Arc` of
    /// the table and take the lock only when this moved.
    version: AtomicU64,
    stats: Mutex<HashMap<NodeName, Arc<PeerStats>>>,
}

impl Router {
    pub fn new(membership: Membership, client: ClientConfig) -> Router {
        let table = Table::joining(membership.view());
        Router {
            membership,
            peers: Peers::new(client),
            table: RwLock::new(Arc::new(table)),
            version: AtomicU64::new(0),
            stats: Mutex::new(HashMap::new()),
        }
    }

    /// The routing table in force.
    pub fn table(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Refreshes `cached` (a connection's copy of the table, and the
    /// version it was taken at) if the table changed since.
    pub fn refresh(&self, cached: &mut Option<(u64, Arc<Table>)>) {
        let version = self.version.load(Ordering::Acquire);
        if cached.as_ref().is_none_or(|(v, _)| *v != version) {
            *cached = Some((version, self.table()));
        }
    }

    /// Forwarding figures per peer ever forwarded to, in name order.
    pub fn peer_stats(&self) -> Vec<(NodeName, Arc<PeerStats>)> {
        let mut all: Vec<_> = self
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn stats_for(&self, name: &NodeName) -> Arc<PeerStats> {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.clone())
            .or_insert_with(|| {
                Arc::new(PeerStats {
                    forwarded: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    duration: crate::metrics::Buckets::default(),
                })
            })
            .clone()
    }

    /// The table for `view`: a handle per live member (created on first
    /// sight, replaced when its address changes, dropped when it is gone).
    fn build(&self, view: MembershipView) -> Table {
        let local = view.local.name().clone();
        let mut remotes = Vec::new();
        for member in view.members.iter().filter(|m| *m.name() != local) {
            match self
                .peers
                .get_or_connect(member.name(), &member.peer_addr())
            {
                Ok(peer) => remotes.push(Remote {
                    name: member.name().clone(),
                    peer,
                    stats: self.stats_for(member.name()),
                }),
                Err(e) => warn!("cannot forward to {}: {e}", member.name()),
            }
        }
        for gone in self.peers.names() {
            if !remotes.iter().any(|r| r.name == gone) {
                self.peers.remove(&gone);
            }
        }
        let routes = view
            .ring
            .members()
            .iter()
            .map(|name| {
                if name == &local {
                    Owner::Local
                } else {
                    remotes
                        .iter()
                        .position(|r| &r.name == name)
                        .map_or(Owner::Unavailable, Owner::Remote)
                }
            })
            .collect();
        let ready = view.is_ready();
        let alone = ready && view.ring.len() == 1;
        Table {
            view,
            ready,
            alone,
            remotes,
            routes,
        }
    }
}

/// Follows the membership views until the task ends: swaps in each new
/// table, and drops from the store what this node no longer owns.
pub(crate) async fn follow(node: Arc<Node>, mut views: watch::Receiver<MembershipView>) {
    let Some(router) = node.router.as_ref() else {
        return;
    };
    let mut ring_version = 0;
    let mut epoch = router.table().view.epoch;
    loop {
        let view = views.borrow_and_update().clone();
        let table = Arc::new(router.build(view));
        let old = std::mem::replace(
            &mut *router.table.write().unwrap_or_else(PoisonError::into_inner),
            table.clone(),
        );
        router.version.fetch_add(1, Ordering::Release);
        if old.ready != table.ready {
            info!(
                "node {} is {}",
                table.view.local.name(),
                if table.ready { "ready" } else { "not ready" }
            );
        }
        let view = &table.view;
        if view.epoch != epoch {
            // Declared down and back: the cluster moved on without us.
            epoch = view.epoch;
            let dropped = drop_keys(&node, |_| false).await;
            info!("new epoch {epoch}: dropped all {dropped} items held before");
        } else if view.ring.version() != ring_version && table.ready {
            let kept = table.clone();
            let dropped = drop_keys(&node, move |key| kept.owns(key)).await;
            if dropped > 0 {
                info!(
                    "ring {:016x}: dropped {dropped} items now owned elsewhere",
                    view.ring.version()
                );
            }
        }
        ring_version = view.ring.version();
        if views.changed().await.is_err() {
            return;
        }
    }
}

/// Runs `store.retain` off the async workers (it walks every item).
async fn drop_keys(node: &Arc<Node>, keep: impl Fn(&[u8]) -> bool + Send + 'static) -> usize {
    let node = node.clone();
    tokio::task::spawn_blocking(move || node.store.retain(keep))
        .await
        .unwrap_or(0)
}
