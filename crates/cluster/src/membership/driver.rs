//! The membership task: the one owner of `Foca`, the gossip socket, foca's
//! timers, the ring debounce and the seed search. Everything here is
//! synchronous except the `select!` that waits for the next input (a
//! command, a datagram, a finished seed resolution, or the earliest
//! deadline), so no lock exists and nothing is held across an `.await`.

use std::borrow::Cow;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foca::{
    AccumulatingRuntime, Codec, Foca, Header, Identity as _, Message, NoCustomBroadcast,
    OwnedNotification, PostcardCodec, Timer,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::seeds::{self, Backoff, Resolved};
use super::{Command, MembershipConfig, MembershipView, NodeIdentity, NodeState};
use crate::{Change, Debounce, NodeName, Ring};

type Gossip = Foca<NodeIdentity, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// Receive buffer: UDP's largest datagram, so an oversized packet is read
/// whole and rejected by foca (`DataTooBig`), never truncated into a
/// prefix that might decode.
const RECV_BUF: usize = 65_536;

/// A foca timer waiting in the heap. Ordered by due time, then by when it
/// was scheduled, so timers due together are delivered in order.
struct Scheduled {
    at: Instant,
    seq: u64,
    timer: Timer<NodeIdentity>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

enum LeavePhase {
    /// Gossiping `Leaving` while still answering probes.
    Announcing,
    /// Declared ourselves down; one more round of gossip, then stop.
    Left,
}

struct Leaving {
    phase: LeavePhase,
    until: Instant,
    waiters: Vec<oneshot::Sender<()>>,
}

pub(super) struct Driver {
    foca: Gossip,
    runtime: AccumulatingRuntime<NodeIdentity>,
    socket: UdpSocket,
    local_addr: Option<SocketAddr>,
    commands: mpsc::Receiver<Command>,
    view: watch::Sender<MembershipView>,
    config: MembershipConfig,

    timers: BinaryHeap<Reverse<Scheduled>>,
    timer_seq: u64,

    /// The debounce's clock: its times are offsets from this.
    start: Instant,
    debounce: Debounce,
    ring: Arc<Ring>,
    /// Live members other than this node, by name.
    live: BTreeMap<NodeName, NodeIdentity>,
    joined: bool,
    epoch: u64,

    backoff: Backoff,
    /// When to resolve the seeds next (only while no other member is known).
    seek_at: Option<Instant>,
    resolving: Option<JoinHandle<Resolved>>,
    /// Addresses found to be this node (a seed that echoed our own announce).
    own_addrs: HashSet<SocketAddr>,

    leaving: Option<Leaving>,
    stopped: bool,
    /// The view must be republished.
    dirty: bool,
    seq: u64,
}

impl Driver {
    pub(super) fn new(
        config: MembershipConfig,
        socket: UdpSocket,
        identity: NodeIdentity,
        commands: mpsc::Receiver<Command>,
    ) -> (Driver, watch::Receiver<MembershipView>) {
        let seed = RandomState::new().hash_one((identity.name().as_str(), identity.generation()));
        let foca = Foca::new(
            identity.clone(),
            config.profile.foca.clone(),
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
        );
        let ring = Arc::new(Ring::new([], config.profile.vnodes));
        let (view, view_rx) = watch::channel(MembershipView {
            seq: 0,
            local: identity.clone(),
            members: vec![identity],
            ring: ring.clone(),
            joined: false,
            epoch: 0,
        });
        let driver = Driver {
            foca,
            runtime: AccumulatingRuntime::new(),
            local_addr: socket.local_addr().ok(),
            socket,
            commands,
            view,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            start: Instant::now(),
            debounce: Debounce::new(config.profile.debounce),
            ring,
            live: BTreeMap::new(),
            joined: false,
            epoch: 0,
            backoff: Backoff::new(config.profile.seed_retry_min, config.profile.seed_retry_max),
            seek_at: None,
            resolving: None,
            own_addrs: HashSet::new(),
            leaving: None,
            stopped: false,
            dirty: false,
            seq: 0,
            config,
        };
        (driver, view_rx)
    }

    pub(super) async fn run(mut self) {
        self.begin();
        let mut buf = vec![0u8; RECV_BUF];
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        while !self.stopped {
            self.publish();
            let wake = self.next_wake();
            if let Some(at) = wake {
                sleep.as_mut().reset(at);
            }
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command),
                    // Every handle is gone: nobody can ask us to leave.
                    None => break,
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_packet(&buf[..len], from),
                    Err(error) => tracing::debug!(%error, "gossip receive failed"),
                },
                resolved = finished(&mut self.resolving), if self.resolving.is_some() => {
                    self.on_resolved(resolved);
                }
                () = &mut sleep, if wake.is_some() => self.on_wake(),
            }
        }
        if let Some(resolving) = self.resolving.take() {
            resolving.abort();
        }
        self.joined = false;
        self.dirty = true;
        self.publish();
    }

    /// No seeds: a cluster of one. Otherwise look for the seeds at once.
    fn begin(&mut self) {
        if self.config.seeds.is_empty() {
            self.become_alone();
        } else {
            self.seek_at = Some(Instant::now());
        }
        self.dirty = true;
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::SetState(state, reply) => {
                if self.leaving.is_none() {
                    self.set_state(state);
                }
                let _ = reply.send(());
            }
            Command::Leave(reply) => self.start_leave(reply),
            Command::Shutdown(reply) => {
                self.stopped = true;
                let _ = reply.send(());
            }
        }
    }

    fn on_packet(&mut self, data: &[u8], from: SocketAddr) {
        let Some(data) = self.readdress(data, from) else {
            return;
        };
        if let Err(error) = self.foca.handle_data(&data, &mut self.runtime) {
            tracing::trace!(%from, %error, "gossip packet ignored");
        }
        self.drain();
        self.check_own_name();
    }

    /// Looks at a packet's header before foca does: an announce addressed to
    /// a seed placeholder (the sender knew our address, not our identity)
    /// is readdressed to us, and our own announce coming back marks its
    /// source as one of our addresses. `None`: not worth handing to foca
    /// (undecodable, or our own echo).
    fn readdress<'a>(&mut self, data: &'a [u8], from: SocketAddr) -> Option<Cow<'a, [u8]>> {
        let mut codec = PostcardCodec;
        let mut rest = data;
        let header: Header<NodeIdentity> = match codec.decode_header(&mut rest) {
            Ok(header) => header,
            Err(error) => {
                tracing::trace!(%from, %error, "undecodable gossip packet");
                return None;
            }
        };
        if header.src.name() == self.foca.identity().name() {
            if header.src == *self.foca.identity() {
                self.own_addrs.insert(from);
            }
            return Some(Cow::Borrowed(data));
        }
        if !(matches!(header.message, Message::Announce) && header.dst.is_placeholder()) {
            return Some(Cow::Borrowed(data));
        }
        let header = Header {
            dst: self.foca.identity().clone(),
            ..header
        };
        let mut out = Vec::with_capacity(data.len() + 64);
        codec.encode_header(&header, &mut out).ok()?;
        out.extend_from_slice(rest);
        Some(Cow::Owned(out))
    }

    fn on_wake(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        while self.timers.peek().is_some_and(|Reverse(t)| t.at <= now) {
            let Some(Reverse(scheduled)) = self.timers.pop() else {
                break;
            };
            due.push(scheduled.timer);
        }
        // foca's own order for timers delivered together (an indirect probe
        // before the next probe round); stable, so otherwise FIFO.
        due.sort();
        for timer in due {
            if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(%error, "gossip timer");
            }
            self.drain();
        }

        if let Some(members) = self.debounce.poll(self.clock()) {
            self.rebuild(members);
        }

        if self.should_seek()
            && self.resolving.is_none()
            && self.seek_at.is_some_and(|at| at <= now)
        {
            self.seek_at = None;
            let seeds = self.config.seeds.clone();
            let timeout = self.config.profile.resolve_timeout;
            self.resolving = Some(tokio::spawn(async move {
                seeds::resolve(&seeds, timeout).await
            }));
        }

        if self.leaving.as_ref().is_some_and(|l| l.until <= now) {
            self.advance_leave(now);
        }
    }

    fn on_resolved(&mut self, resolved: Resolved) {
        if !resolved.failed.is_empty() {
            tracing::debug!(failed = ?resolved.failed, "seeds did not resolve");
        }
        if !self.should_seek() {
            return;
        }
        let targets: Vec<SocketAddr> = resolved
            .addrs
            .iter()
            .copied()
            .filter(|addr| !self.is_self(*addr))
            .collect();
        if targets.is_empty() && !resolved.addrs.is_empty() {
            // The seeds are this node: a cluster of one, still looking
            // (slowly) so that two nodes that both started alone merge.
            self.become_alone();
        }
        for target in targets {
            tracing::debug!(%target, "announcing to seed");
            if let Err(error) = self
                .foca
                .announce(NodeIdentity::placeholder(target), &mut self.runtime)
            {
                tracing::debug!(%target, %error, "announce failed");
            }
        }
        self.drain();
        self.seek_at = Some(Instant::now() + self.backoff.next_delay());
    }

    /// Empties foca's runtime: notifications first (so a new generation or
    /// epoch is published before a packet carrying the new identity
    /// leaves), then packets, then timers. A notification handler may call
    /// foca again; what that queues is drained by the same loop.
    fn drain(&mut self) {
        loop {
            if let Some(notification) = self.runtime.to_notify() {
                self.on_notification(notification);
            } else if let Some((to, data)) = self.runtime.to_send() {
                self.send(&to, &data);
            } else if let Some((after, timer)) = self.runtime.to_schedule() {
                self.timer_seq += 1;
                self.timers.push(Reverse(Scheduled {
                    at: Instant::now() + after,
                    seq: self.timer_seq,
                    timer,
                }));
            } else {
                break;
            }
        }
        self.sync_local();
    }

    fn send(&self, to: &NodeIdentity, data: &[u8]) {
        // Never waits: a full socket buffer drops the packet, which SWIM
        // tolerates (it is UDP), rather than stalling every timer.
        if let Err(error) = self.socket.try_send_to(data, to.gossip_addr()) {
            tracing::debug!(to = ?to, %error, "gossip send failed");
        }
    }

    fn on_notification(&mut self, notification: OwnedNotification<NodeIdentity>) {
        match notification {
            OwnedNotification::MemberUp(id) => {
                tracing::info!(member = ?id, "member up");
                self.ring_change(&id);
                self.live.insert(id.name().clone(), id);
                self.dirty = true;
            }
            OwnedNotification::MemberDown(id) => {
                tracing::info!(member = ?id, "member down");
                // foca keys members by name: this is the only one of it.
                self.live.remove(id.name());
                let at = self.clock();
                self.debounce.change(at, Change::Down(id.name().clone()));
                self.dirty = true;
            }
            OwnedNotification::Rename(old, new) => {
                tracing::debug!(?old, ?new, "member renamed");
                // Only a live member's new metadata matters here; a renamed
                // member that also came up is followed by `MemberUp`.
                if self.live.contains_key(new.name()) {
                    self.ring_change(&new);
                    self.live.insert(new.name().clone(), new);
                    self.dirty = true;
                }
            }
            OwnedNotification::Active => {
                if !self.joined {
                    tracing::info!(local = ?self.foca.identity(), "joined the cluster");
                }
                self.joined = true;
                self.backoff.reset();
                self.seek_at = None;
                self.dirty = true;
                self.ready_on_join();
            }
            OwnedNotification::Idle => {
                tracing::info!("no other member left");
                // Look for the cluster again, promptly.
                self.backoff.reset();
                self.seek_at = Some(Instant::now() + self.backoff.next_delay());
                self.dirty = true;
            }
            OwnedNotification::Defunct => {
                tracing::info!(local = ?self.foca.identity(), "out of the cluster");
                self.joined = false;
                self.dirty = true;
            }
            OwnedNotification::Rejoin(id) => {
                tracing::warn!(local = ?id, "declared down by the cluster; rejoining as a new generation, dropping held data");
                self.renewed();
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// Our identity was renewed (declared down, or a newer process of our
    /// name appeared): whatever this node held belongs to a past epoch.
    /// Published right away, before the new identity is gossiped.
    fn renewed(&mut self) {
        self.epoch += 1;
        self.joined = false;
        self.dirty = true;
        self.publish();
    }

    /// A newer identity under our name (another process of the same name,
    /// or stale news about our previous one that beats us): come back
    /// above it, as after being declared down.
    fn check_own_name(&mut self) {
        let me = self.foca.identity();
        if me.state() == NodeState::Leaving || self.leaving.is_some() {
            return;
        }
        let rival = self
            .foca
            .iter_membership_state()
            .map(foca::Member::id)
            .filter(|id| id.name() == me.name() && *id != me && id.win_addr_conflict(me))
            .max_by(|a, b| {
                if a.win_addr_conflict(b) {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            })
            .cloned();
        let Some(rival) = rival else {
            return;
        };
        let next = me.renewed_over(Some(&rival));
        tracing::warn!(?rival, local = ?next, "a newer identity holds our name; rejoining above it, dropping held data");
        self.renewed();
        self.change_identity(next);
    }

    fn ready_on_join(&mut self) {
        if self.config.ready_on_join
            && self.leaving.is_none()
            && self.foca.identity().state() == NodeState::Joining
        {
            self.set_state(NodeState::Ready);
        }
    }

    fn set_state(&mut self, state: NodeState) {
        let current = self.foca.identity();
        if current.state() != state {
            let next = current.with_state(state);
            tracing::info!(local = ?next, "state change");
            self.change_identity(next);
        }
    }

    fn change_identity(&mut self, next: NodeIdentity) {
        if let Err(error) = self.foca.change_identity(next, &mut self.runtime) {
            tracing::warn!(%error, "identity change failed");
        }
        self.dirty = true;
        self.drain();
    }

    /// A cluster of one: joined, ready (if so configured), and owning the
    /// whole ring at once. Nothing to debounce: no other node's placement
    /// can disagree with ours.
    fn become_alone(&mut self) {
        if !self.joined {
            tracing::info!(local = ?self.foca.identity(), "no other node found: a cluster of one");
        }
        self.joined = true;
        self.dirty = true;
        self.ready_on_join();
        self.sync_local();
        let me = self.foca.identity();
        if self.ring.is_empty() && me.is_ready() {
            self.ring = Arc::new(Ring::new([me.name().clone()], self.config.profile.vnodes));
        }
    }

    fn start_leave(&mut self, reply: oneshot::Sender<()>) {
        if let Some(leaving) = &mut self.leaving {
            leaving.waiters.push(reply);
            return;
        }
        self.set_state(NodeState::Leaving);
        let grace = if self.foca.num_members() == 0 {
            Duration::ZERO
        } else {
            self.config.profile.leave_grace
        };
        self.leaving = Some(Leaving {
            phase: LeavePhase::Announcing,
            until: Instant::now() + grace,
            waiters: vec![reply],
        });
    }

    fn advance_leave(&mut self, now: Instant) {
        let Some(mut leaving) = self.leaving.take() else {
            return;
        };
        match leaving.phase {
            LeavePhase::Announcing => {
                if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
                    tracing::warn!(%error, "leave failed");
                }
                self.drain();
                leaving.phase = LeavePhase::Left;
                leaving.until = now + self.config.profile.foca.probe_rtt;
                self.leaving = Some(leaving);
            }
            LeavePhase::Left => {
                // A second round to other random members, in case the
                // first datagrams were lost.
                if self.foca.num_members() > 0 {
                    let _ = self.foca.gossip(&mut self.runtime);
                    self.drain();
                }
                tracing::info!(local = ?self.foca.identity(), "left the cluster");
                self.stopped = true;
                for waiter in leaving.waiters {
                    let _ = waiter.send(());
                }
            }
        }
    }

    /// Tells the debounce whether this node belongs in its own ring.
    fn sync_local(&mut self) {
        let me = self.foca.identity();
        let change = if self.joined && me.is_ready() {
            Change::Up(me.name().clone())
        } else {
            Change::Down(me.name().clone())
        };
        let at = self.clock();
        self.debounce.change(at, change);
    }

    fn ring_change(&mut self, member: &NodeIdentity) {
        let name = member.name().clone();
        let change = if member.is_ready() {
            Change::Up(name)
        } else {
            Change::Down(name)
        };
        let at = self.clock();
        self.debounce.change(at, change);
    }

    fn rebuild(&mut self, members: Vec<NodeName>) {
        let ring = Ring::new(members, self.config.profile.vnodes);
        if ring.version() != self.ring.version() {
            tracing::info!(members = ?ring.members(), version = ring.version(), "ring rebuilt");
            self.ring = Arc::new(ring);
            self.dirty = true;
        }
    }

    fn should_seek(&self) -> bool {
        !self.config.seeds.is_empty() && self.foca.num_members() == 0 && self.leaving.is_none()
    }

    fn is_self(&self, addr: SocketAddr) -> bool {
        addr == self.foca.identity().gossip_addr()
            || self.own_addrs.contains(&addr)
            || self.local_addr.is_some_and(|local| {
                addr == local
                    || (local.ip().is_unspecified()
                        && addr.ip().is_loopback()
                        && addr.port() == local.port())
            })
    }

    fn next_wake(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse(t)| t.at);
        let debounce = self.debounce.deadline().map(|d| self.start + d);
        let seek = self
            .seek_at
            .filter(|_| self.should_seek() && self.resolving.is_none());
        let leave = self.leaving.as_ref().map(|l| l.until);
        [timer, debounce, seek, leave].into_iter().flatten().min()
    }

    fn clock(&self) -> Duration {
        self.start.elapsed()
    }

    fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.seq += 1;
        let local = self.foca.identity().clone();
        let mut members: Vec<NodeIdentity> = self
            .live
            .values()
            .filter(|m| m.name() != local.name())
            .cloned()
            .collect();
        if !self.stopped {
            members.push(local.clone());
        }
        members.sort_by(|a, b| a.name().cmp(b.name()));
        self.view.send_replace(MembershipView {
            seq: self.seq,
            local,
            members,
            ring: self.ring.clone(),
            joined: self.joined,
            epoch: self.epoch,
        });
    }
}

/// Waits for the seed resolution in flight; pending forever when there is
/// none (the `select!` branch is disabled then anyway).
async fn finished(task: &mut Option<JoinHandle<Resolved>>) -> Resolved {
    let Some(handle) = task.as_mut() else {
        return std::future::pending().await;
    };
    let resolved = handle.await.unwrap_or_default();
    *task = None;
    resolved
}
