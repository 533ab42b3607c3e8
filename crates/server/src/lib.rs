//! The `shoal` server: listeners, the connection loop, and the executor that
//! answers memcache requests from the local store.
//!
//! - [`config`]: the command line (memcached's flags plus cluster flags).
//! - [`run`]: serves already-bound listeners until a shutdown future
//!   resolves, so tests bind `127.0.0.1:0` and never sleep for start-up.
//! - `conn`: one task per connection; parses every whole request in the read
//!   buffer, answers them all, and writes the answers in one vectored write.
//! - `exec`: turns one decoded [`protocol::Request`] into store calls and
//!   encoded answers; it never touches a socket.
//! - `stats`: memcached's `stats` groups with memcached's field names.
//! - `peer`: the peer gRPC API served from the same node's store, on
//!   [`Listeners::peer`].
//! - `router`: follows the cluster's membership and says who owns a key;
//!   `forward`: sends a request to its owner and puts the answers back in
//!   the client's order.
//! - `http`: `/healthz`, `/readyz` and `/cluster` on [`Listeners::http`].

pub mod config;
mod conn;
mod exec;
mod forward;
mod http;
mod metrics;
mod peer;
mod router;
mod stats;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cluster::client::ClientConfig;
use cluster::membership::{Endpoints, NodeIdentity};
use cluster::{Membership, MembershipConfig, NodeName, Profile};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

pub use config::Config;

/// What a node needs to serve, beyond its listeners.
#[derive(Debug, Clone)]
pub struct Settings {
    pub memory_limit: usize,
    pub max_item_size: usize,
    pub conn_limit: usize,
    pub disable_flush: bool,
    pub threads: u16,
    /// Interval of the background expiry sweep.
    pub sweep_interval: Duration,
    /// How long a graceful shutdown waits for connections to finish.
    pub drain_timeout: Duration,
    /// Clustering; `None` (or no gossip socket) serves as a plain single
    /// node that owns every key.
    pub cluster: Option<ClusterSettings>,
    /// Keep Prometheus metrics (served on `/metrics`).
    pub metrics: bool,
    /// Most application key families labelled in the metrics; later ones
    /// count as `other`.
    pub key_family_cap: usize,
    /// How hot keys are shown (`stats hotkeys`, `/hotkeys`).
    pub hot_key_privacy: telemetry::Privacy,
}

/// How a node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The stable name the ring is keyed by.
    pub node_name: NodeName,
    /// Other nodes' gossip addresses (`host:port`); empty: a cluster of one.
    pub seeds: Vec<String>,
    /// The host peers and clients are told to use for this node.
    pub advertise_host: String,
    /// Where peers send gossip to; `None`: the gossip socket's bound
    /// address (right unless it is bound to a wildcard address).
    pub gossip_addr: Option<std::net::SocketAddr>,
    /// The ports this node announces; 0 means "the bound listener's port".
    pub memcache_port: u16,
    pub peer_port: u16,
    pub http_port: u16,
    pub profile: Profile,
    pub client: ClientConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            memory_limit: 64 << 20,
            max_item_size: 1 << 20,
            conn_limit: 1024,
            disable_flush: false,
            threads: 4,
            sweep_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(5),
            cluster: None,
            metrics: true,
            key_family_cap: 32,
            hot_key_privacy: telemetry::Privacy::Plain,
        }
    }
}

impl From<&Config> for Settings {
    fn from(c: &Config) -> Self {
        Settings {
            memory_limit: c.memory_limit,
            max_item_size: c.max_item_size,
            conn_limit: c.conn_limit,
            disable_flush: c.disable_flush,
            threads: c.threads,
            metrics: c.metrics == "on",
            key_family_cap: c.key_family_cap,
            hot_key_privacy: c.hot_key_privacy.clone(),
            ..Settings::default()
        }
    }
}

/// The sockets a node serves on, bound by the caller.
#[derive(Debug, Default)]
pub struct Listeners {
    pub tcp: Option<TcpListener>,
    /// A unix socket and its path, removed when the node stops.
    pub unix: Option<(UnixListener, PathBuf)>,
    /// The peer gRPC API (`--peer-port`), served from the same store.
    pub peer: Option<TcpListener>,
    /// Gossip (`--gossip-port`); with [`Settings::cluster`], the node joins
    /// a cluster through it.
    pub gossip: Option<UdpSocket>,
    /// `/healthz`, `/readyz`, `/cluster` (`--http-port`).
    pub http: Option<TcpListener>,
}

/// Counters the connection loop keeps, read by `stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub curr_connections: AtomicUsize,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub cmd_get: AtomicU64,
    pub cmd_set: AtomicU64,
    pub cmd_touch: AtomicU64,
    pub cmd_flush: AtomicU64,
    pub auth_cmds: AtomicU64,
    /// Operations executed for other nodes (the peer API), counted apart
    /// from the client commands above.
    pub peer_ops: AtomicU64,
    /// Batches those operations came in.
    pub peer_batches: AtomicU64,
}

/// State shared by every connection of one node.
pub(crate) struct Node {
    pub store: store::Store,
    /// The store's clock, ticked by [`start_clock`]'s thread.
    pub clock: Arc<store::TickingClock>,
    pub settings: Settings,
    pub limits: protocol::Limits,
    pub counters: Counters,
    pub started: Instant,
    /// Set once the "auth is off" warning was logged.
    pub warned_auth_off: AtomicBool,
    /// The cluster side; `None` on a plain single node.
    pub router: Option<router::Router>,
    /// Prometheus metrics; `None` when turned off.
    pub metrics: Option<metrics::Metrics>,
}

impl Node {
    pub fn new(settings: Settings, membership: Option<Membership>) -> Self {
        let settings_metrics = settings.metrics;
        let family_cap = settings.key_family_cap;
        let privacy = settings.hot_key_privacy.clone();
        let config = store::Config {
            memory_limit: settings.memory_limit,
            max_item_size: settings.max_item_size,
            ..store::Config::default()
        };
        let clock = Arc::new(store::TickingClock::new());
        let store = match &membership {
            // CAS values carry this process's identity (see `cas_tag`).
            Some(m) => {
                let view = m.view();
                let tag = cas_tag(view.local.name(), view.generation());
                store::Store::with_cas_start(config, clock.clone(), tag << 48)
            }
            None => store::Store::with_clock(config, clock.clone()),
        };
        let router = membership.map(|m| {
            let client = settings
                .cluster
                .as_ref()
                .map(|c| c.client.clone())
                .unwrap_or_default();
            router::Router::new(m, client)
        });
        let limits = protocol::Limits {
            max_value_len: settings.max_item_size,
            ..protocol::Limits::default()
        };
        Node {
            store,
            clock,
            settings,
            limits,
            counters: Counters::default(),
            started: Instant::now(),
            warned_auth_off: AtomicBool::new(false),
            router,
            metrics: settings_metrics.then(|| metrics::Metrics::new(family_cap, privacy.clone())),
        }
    }

    /// The longest a pass waits for forwarded answers: the peer deadline
    /// (by which the peer client answers or fails every operation itself)
    /// and a margin, as a safety net against a stuck peer client.
    pub fn forward_net(&self) -> Duration {
        self.forward_deadline() + Duration::from_millis(250)
    }

    /// The peer client's deadline for one forwarded operation.
    pub fn forward_deadline(&self) -> Duration {
        self.settings
            .cluster
            .as_ref()
            .map_or(Duration::from_secs(1), |c| c.client.deadline)
    }

    /// Whether this node serves clients: always on a plain single node;
    /// in a cluster, once it has joined and owns its arcs.
    pub fn is_ready(&self) -> bool {
        self.router.as_ref().is_none_or(|r| r.table().ready)
    }
}

/// 15 bits from the node's name and generation (the ring's placement
/// hash), never 0, placed in bits 48..63 of every CAS value: a token from
/// another node, or from an earlier life of this one, does not match here
/// (but for a 1 in 32767 chance per pair of identities). Bit 63 stays
/// clear: libmemcached (pylibmc) reads CAS values as signed and fails on
/// larger ones.
fn cas_tag(name: &NodeName, generation: u64) -> u64 {
    let mut bytes = name.as_bytes().to_vec();
    bytes.extend_from_slice(&generation.to_le_bytes());
    (cluster::ring::point(&bytes) >> 49).max(1)
}

/// Starts membership on `socket` for `settings`, announcing the bound ports
/// of the other listeners where the settings say 0.
fn start_membership(
    settings: &ClusterSettings,
    socket: UdpSocket,
    ports: (u16, u16, u16),
) -> io::Result<(Membership, tokio::task::JoinHandle<()>)> {
    let pick = |want: u16, bound: u16| if want == 0 { bound } else { want };
    let gossip = match settings.gossip_addr {
        Some(addr) => addr,
        None => socket.local_addr()?,
    };
    let endpoints = Endpoints {
        host: settings.advertise_host.clone(),
        memcache_port: pick(settings.memcache_port, ports.0),
        peer_port: pick(settings.peer_port, ports.1),
        http_port: pick(settings.http_port, ports.2),
    };
    let identity = NodeIdentity::new(settings.node_name.clone(), gossip, endpoints)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let config = MembershipConfig::new(settings.seeds.clone(), settings.profile.clone());
    Ok(Membership::start(config, socket, identity))
}

/// Serve `listeners` until `shutdown` resolves, then stop accepting, let open
/// connections finish the requests they have (up to the drain timeout), and
/// return.
///
/// # Errors
/// Only if the listeners cannot be used at all; per-connection errors are
/// logged and cost only that connection.
pub async fn run(
    listeners: Listeners,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let Listeners {
        tcp,
        unix,
        peer,
        gossip,
        http,
    } = listeners;
    let port = |l: &Option<TcpListener>| {
        l.as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port())
    };
    let ports = (port(&tcp), port(&peer), port(&http));
    let (membership, gossip_task) = match (&settings.cluster, gossip) {
        (Some(cluster), Some(socket)) => {
            let (m, task) = start_membership(cluster, socket, ports)?;
            (Some(m), Some(task))
        }
        _ => (None, None),
    };
    let views = membership.as_ref().map(Membership::subscribe);
    let node = Arc::new(Node::new(settings, membership));
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(node.settings.conn_limit));
    let mut tasks = JoinSet::new();

    let sweeper = tokio::spawn(sweep_loop(node.clone(), stop_rx.clone()));
    start_clock(&node.clock);
    let follower = views.map(|views| tokio::spawn(router::follow(node.clone(), views)));
    let upkeep = node
        .metrics
        .is_some()
        .then(|| tokio::spawn(metrics_upkeep(node.clone())));
    if let Some(http) = http {
        tasks.spawn(http::serve(http, node.clone(), stop_rx.clone()));
    }
    let unix_path = unix.as_ref().map(|(_, p)| p.clone());
    if let Some(tcp) = tcp {
        tasks.spawn(accept_loop(
            tcp,
            node.clone(),
            slots.clone(),
            stop_rx.clone(),
        ));
    }
    if let Some(peer) = peer {
        tasks.spawn(peer::serve(peer, node.clone(), stop_rx.clone()));
    }
    if let Some((unix, _)) = unix {
        tasks.spawn(accept_loop(
            unix,
            node.clone(),
            slots.clone(),
            stop_rx.clone(),
        ));
    }

    shutdown.await;
    if let Some(router) = &node.router {
        // Leave while still serving: peers take this node out of their
        // rings during the grace period, then forget it.
        info!("leaving the cluster");
        if router.membership.leave().await.is_err() {
            warn!("the membership task had already stopped");
        }
    }
    info!("shutting down: no new connections, draining open ones");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(node.settings.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("drain timeout: closing the remaining connections");
        tasks.abort_all();
    }
    sweeper.abort();
    if let Some(task) = upkeep {
        task.abort();
    }
    if let Some(task) = follower {
        task.abort();
    }
    if let Some(task) = gossip_task {
        task.abort();
    }
    if let Some(path) = unix_path {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Keeps the store's clock (whole seconds) in step with the system's, so
/// commands read the time from memory, until the node is gone: one tick
/// just after each turn of the system's second, as memcached's clock
/// handler runs once a second. (It used to tick every 10 ms: 100 wakes a
/// second per node for a value that changes once, each a context switch
/// on a busy core and a wake of an idle one.)
///
/// A thread of its own, not a tokio task: when it was one, its timer (then
/// every 10 ms) woke the runtime's idle workers, which then stole
/// connection tasks from each other, spreading one connection's
/// allocations over glibc's per-thread arenas. Resident memory under mixed
/// value sizes grew by half (`resident_memory_stays_within_the_limit`:
/// 45 → 61-70 MiB at -m 32).
fn start_clock(clock: &Arc<store::TickingClock>) {
    let clock = Arc::downgrade(clock);
    let spawned = std::thread::Builder::new()
        .name("shoal-clock".into())
        .spawn(move || {
            while let Some(clock) = clock.upgrade() {
                let next = clock.tick();
                drop(clock);
                std::thread::sleep(next);
            }
        });
    if let Err(e) = spawned {
        // The clock then stays at the time the node started: expiry would
        // stop working, so say so loudly.
        tracing::error!("cannot start the clock thread: {e}");
    }
}

/// Expire items in the background, so expired items that nobody asks for do
/// not hold memory until they are evicted.
async fn sweep_loop(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(node.settings.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                node.store.sweep(SWEEP_BUDGET);
            }
            _ = stop.changed() => return,
        }
    }
}

/// Folds recorded latency samples into their histogram buckets every few
/// seconds, so memory stays bounded however rarely Prometheus scrapes.
async fn metrics_upkeep(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(m) = &node.metrics {
            m.upkeep();
        }
    }
}

/// Items looked at per shard per sweep: bounded, so a sweep holds each shard
/// lock only briefly.
const SWEEP_BUDGET: usize = 1000;

/// The reply memcached sends a connection over the limit before closing it.
const TOO_MANY_CONNECTIONS: &[u8] = b"ERROR Too many open connections\r\n";

/// A listening socket the accept loop can take connections from.
trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn accept(&self) -> io::Result<TcpStream> {
        let (stream, _) = TcpListener::accept(self).await?;
        // Answers are written whole; Nagle would only delay them.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn accept(&self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

async fn accept_loop<L: Listener>(
    listener: L,
    node: Arc<Node>,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            node.counters
                .rejected_connections
                .fetch_add(1, Ordering::Relaxed);
            conns.spawn(conn::reject(stream, TOO_MANY_CONNECTIONS));
            continue;
        };
        let node = node.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            conn::serve(stream, &node, stop).await;
            drop(permit);
        });
    }
    while conns.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_tags_are_non_zero_and_leave_the_sign_bit_clear() {
        let mut seen = std::collections::HashSet::new();
        for generation in 0..2000u64 {
            let name = NodeName::new(format!("shoal-{}", generation % 7)).unwrap();
            let tag = cas_tag(&name, 1_795_000_000_000 + generation);
            assert!((1..1 << 15).contains(&tag), "{tag}");
            // The first CAS and the next 2^48 stay below 2^63.
            assert!((tag << 48) + (1 << 48) - 1 <= i64::MAX as u64);
            seen.insert(tag);
        }
        // Spread over the 15 bits, not stuck on a few values.
        assert!(seen.len() > 1900, "{}", seen.len());
    }
}
