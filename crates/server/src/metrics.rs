//! Prometheus metrics: what `/metrics` on the HTTP port serves.
//!
//! Each node has its own recorder (`metrics-exporter-prometheus`, built, not
//! installed globally), so several nodes in one process — the cluster tests
//! — keep their figures apart. The hot path touches only plain atomics of
//! this module: one relaxed increment per answer (`shoal_requests_total` by
//! command, protocol and outcome) and, per pass over a connection's read
//! buffer, a TSC clock read and one bucket increment per command seen in
//! it. At scrape time the counts are handed to the recorder, and the
//! latency histograms (kept here in fixed buckets, since a sample pushed
//! into the exporter's histogram costs ~150 instructions) are rendered
//! beside its text. Everything the node already counts elsewhere (the
//! store's figures, connections, bytes, the cluster's view, forwards per
//! peer) is read when Prometheus scrapes. `bench/callgrind.sh` measures
//! what it all costs per request.
//!
//! Counting follows ARCHITECTURE.md: client requests are counted at the
//! node the client talks to (`shoal_requests_total`, per key for gets, like
//! memcached's `cmd_get`); store figures at the owner (`shoal_store_*`,
//! `shoal_items`, …); work done for a peer has its own counter
//! (`shoal_peer_operations_total`). A cluster-wide sum of
//! `shoal_requests_total` counts every client request once.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use protocol::{ArithOp, Command, OutBuf, Reply, Response, StoreMode};
use telemetry::{Families, FamilyId, Privacy, TopK, TopKConfig};

use crate::Node;
use crate::router::PeerStats;

/// The command label: memcache commands grouped as operators think of them
/// (every get form is `get`, every get-and-touch `gat`, a store with a CAS
/// `cas`), whatever the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Cmd {
    Get,
    Gat,
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
    Delete,
    Incr,
    Decr,
    Touch,
    FlushAll,
    Stats,
    Version,
    Noop,
    Verbosity,
    Quit,
    Auth,
    Debug,
    /// A request that did not decode.
    Invalid,
}

const CMDS: usize = Cmd::Invalid as usize + 1;
const _: () = assert!(CMDS <= 32, "Tally keeps one bit per command");

impl Cmd {
    const NAMES: [&'static str; CMDS] = [
        "get",
        "gat",
        "set",
        "add",
        "replace",
        "append",
        "prepend",
        "cas",
        "delete",
        "incr",
        "decr",
        "touch",
        "flush_all",
        "stats",
        "version",
        "noop",
        "verbosity",
        "quit",
        "auth",
        "debug",
        "invalid",
    ];

    pub fn of(command: &Command<'_>) -> Cmd {
        let mode = |mode: StoreMode, cas: u64| match mode {
            _ if cas != 0 => Cmd::Cas,
            StoreMode::Set => Cmd::Set,
            StoreMode::Add => Cmd::Add,
            StoreMode::Replace => Cmd::Replace,
            StoreMode::Append => Cmd::Append,
            StoreMode::Prepend => Cmd::Prepend,
        };
        match command {
            Command::Get { touch: None, .. } => Cmd::Get,
            Command::Get { touch: Some(_), .. } => Cmd::Gat,
            Command::Store { mode: m, cas, .. } | Command::TooLarge { mode: m, cas, .. } => {
                mode(*m, *cas)
            }
            Command::Delete { .. } => Cmd::Delete,
            Command::Arith {
                op: ArithOp::Incr, ..
            } => Cmd::Incr,
            Command::Arith {
                op: ArithOp::Decr, ..
            } => Cmd::Decr,
            Command::Touch { .. } => Cmd::Touch,
            Command::FlushAll { .. } => Cmd::FlushAll,
            Command::Stats { .. } => Cmd::Stats,
            Command::Version => Cmd::Version,
            Command::Noop => Cmd::Noop,
            Command::Verbosity { .. } => Cmd::Verbosity,
            Command::Quit => Cmd::Quit,
            Command::MetaDebug { .. } => Cmd::Debug,
            Command::SaslListMechs | Command::SaslAuth { .. } | Command::SaslStep { .. } => {
                Cmd::Auth
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Proto {
    Text,
    Meta,
    Binary,
}

const PROTOS: usize = 3;
const PROTO_NAMES: [&str; PROTOS] = ["text", "meta", "binary"];

impl Proto {
    fn of(reply: &Reply<'_>) -> Proto {
        match reply {
            Reply::Text(_) => Proto::Text,
            Reply::Meta(_) => Proto::Meta,
            Reply::Binary(_) => Proto::Binary,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Outcome {
    Hit,
    Miss,
    Stored,
    NotStored,
    Exists,
    NotFound,
    Deleted,
    Touched,
    Ok,
    Error,
}

const OUTCOMES: usize = Outcome::Error as usize + 1;
const OUTCOME_NAMES: [&str; OUTCOMES] = [
    "hit",
    "miss",
    "stored",
    "not_stored",
    "exists",
    "not_found",
    "deleted",
    "touched",
    "ok",
    "error",
];

impl Outcome {
    /// What an answer says happened; `None` for the parts of an answer that
    /// are not one (a get's `END`, a stats line).
    fn of(response: &Response<'_>) -> Option<Outcome> {
        Some(match response {
            Response::Hit(_) | Response::Number { .. } | Response::Debug { .. } => Outcome::Hit,
            Response::Miss { .. } => Outcome::Miss,
            Response::Stored { .. } => Outcome::Stored,
            Response::NotStored => Outcome::NotStored,
            Response::Exists => Outcome::Exists,
            Response::NotFound => Outcome::NotFound,
            Response::Deleted => Outcome::Deleted,
            Response::Touched { .. } => Outcome::Touched,
            Response::Ok | Response::Version(_) | Response::SaslMechs(_) | Response::AuthOk => {
                Outcome::Ok
            }
            Response::Error(_) => Outcome::Error,
            Response::End | Response::Stat { .. } => return None,
        })
    }
}

/// Latency bucket bounds, seconds: 25 µs to 2.5 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5,
];

/// The same bounds in nanoseconds, for the hot path.
const LATENCY_BUCKETS_NS: [u64; 16] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// Encodes `response` as `reply` frames it, counting it first when metrics
/// are on: the one way an answer leaves.
#[inline]
pub(crate) fn encode(
    metrics: Option<&Metrics>,
    cmd: Cmd,
    reply: &Reply<'_>,
    response: &Response<'_>,
    out: &mut OutBuf,
) {
    if let Some(m) = metrics {
        m.answered(cmd, reply, response);
    }
    protocol::encode(reply, response, out);
}

/// A latency histogram in fixed buckets: a few relaxed atomic adds per
/// sample, rendered in Prometheus' histogram format at scrape time.
#[derive(Debug, Default)]
pub(crate) struct Buckets {
    /// Per bucket (the last one past every bound), not cumulative.
    counts: [AtomicU64; LATENCY_BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Buckets {
    #[inline]
    pub fn record_many(&self, took_ns: u64, n: u64) {
        let i = LATENCY_BUCKETS_NS.partition_point(|&b| b < took_ns);
        self.counts[i].fetch_add(n, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(took_ns.saturating_mul(n), Ordering::Relaxed);
    }

    /// Appends the `_bucket`, `_sum` and `_count` series with `labels`
    /// (`name="value"` pairs, comma separated); nothing if empty.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return;
        }
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
    }
}

/// One node's metrics.
pub(crate) struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// `shoal_requests_total` by (command, protocol, outcome).
    requests: Box<[AtomicU64]>,
    /// `shoal_request_duration_seconds` by command.
    durations: Box<[Buckets]>,
    clock: quanta::Clock,
    /// Key families (see the `telemetry` crate for the rule) and, per
    /// family id, hits, misses and stores ([`FAMILY_OUTCOMES`]), then
    /// value bytes.
    families: Families,
    family_figures: Box<[[AtomicU64; 4]]>,
    /// Approximate top keys requested and missed (gets, per key), fed one
    /// key in [`HOT_SAMPLE`].
    hot_requested: TopK,
    hot_missed: TopK,
    privacy: Privacy,
}

/// Hot keys are sampled about one get in this many, so the sketch's ~360
/// instructions per record cost about 6 per get; reported counts are scaled
/// back up.
const HOT_SAMPLE: u64 = 64;

/// How many hot keys `stats hotkeys` and `/hotkeys` list.
pub(crate) const HOT_KEYS: usize = 10;

thread_local! {
    /// Gets left until the next sample, and the xorshift64 state that
    /// draws the gaps.
    static DRAW: std::cell::Cell<(u32, u64)> = const { std::cell::Cell::new((1, 0)) };
}

/// True about one time in [`HOT_SAMPLE`]: after a gap drawn uniformly from
/// 1..2·HOT_SAMPLE (mean HOT_SAMPLE), so a get pays one decrement and a
/// workload that repeats with any period is still sampled evenly. The
/// xorshift64 state is per thread, seeded from the thread's own address.
#[inline]
fn sample() -> bool {
    DRAW.with(|d| {
        let (left, x) = d.get();
        if left > 1 {
            d.set((left - 1, x));
            return false;
        }
        let mut x = if x == 0 {
            (d as *const _ as u64) | 1
        } else {
            x
        };
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let gap = 1 + (x % (2 * HOT_SAMPLE - 1)) as u32;
        d.set((gap, x));
        true
    })
}

/// One hot key as reported: the key (as the privacy setting shows it), its
/// estimated count, and how much that estimate may exceed the truth.
#[derive(Debug, Clone)]
pub(crate) struct Hot {
    pub key: String,
    pub count: u64,
    pub error: u64,
}

impl Metrics {
    /// Metrics with at most `family_cap` application key families (every
    /// other application key counts as `other`).
    pub fn new(family_cap: usize, privacy: Privacy) -> Metrics {
        let recorder = PrometheusBuilder::new().build_recorder();
        let families = Families::new(family_cap);
        // Every id the registry can hand out: the built-in ones and the cap.
        let ids = families.len() + family_cap;
        let handle = recorder.handle();
        let metrics = Metrics {
            recorder,
            handle,
            requests: (0..CMDS * PROTOS * OUTCOMES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            durations: (0..CMDS).map(|_| Buckets::default()).collect(),
            clock: quanta::Clock::new(),
            families,
            family_figures: (0..ids).map(|_| Default::default()).collect(),
            hot_requested: TopK::with_config(hot_config()),
            hot_missed: TopK::with_config(hot_config()),
            privacy,
        };
        metrics.describe();
        metrics
    }

    /// A cheap timestamp (the TSC where it is reliable) for [`Metrics::pass`].
    #[inline]
    pub fn now(&self) -> u64 {
        self.clock.raw()
    }

    fn describe(&self) {
        let r = &self.recorder;
        let counter = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            r.describe_counter(name.into(), unit, help.into());
        };
        let gauge = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            r.describe_gauge(name.into(), unit, help.into());
        };
        counter(
            "shoal_requests_total",
            None,
            "Client requests answered by this node, by command, protocol and outcome (gets count one per key).",
        );
        counter(
            "shoal_bytes_read_total",
            Some(Unit::Bytes),
            "Bytes read from clients.",
        );
        counter(
            "shoal_bytes_written_total",
            Some(Unit::Bytes),
            "Bytes written to clients.",
        );
        gauge("shoal_connections", None, "Open client connections.");
        counter(
            "shoal_connections_total",
            None,
            "Client connections accepted.",
        );
        counter(
            "shoal_connections_rejected_total",
            None,
            "Client connections refused over the connection limit (-c).",
        );
        gauge("shoal_items", None, "Items in this node's store.");
        gauge(
            "shoal_memory_used_bytes",
            Some(Unit::Bytes),
            "Bytes charged for the items in this node's store (key, value and per-item overhead).",
        );
        gauge(
            "shoal_memory_limit_bytes",
            Some(Unit::Bytes),
            "The store's memory limit (-m).",
        );
        counter(
            "shoal_evictions_total",
            None,
            "Live items evicted to make room.",
        );
        counter(
            "shoal_reclaimed_total",
            None,
            "Expired or flushed items unlinked by the sweep or at the LRU tail.",
        );
        counter(
            "shoal_store_hits_total",
            None,
            "Lookups this node's store answered with an item (for clients and for peers).",
        );
        counter(
            "shoal_store_misses_total",
            None,
            "Lookups this node's store found nothing for (for clients and for peers).",
        );
        counter(
            "shoal_forwarded_total",
            None,
            "Operations forwarded to a peer on behalf of this node's clients.",
        );
        counter(
            "shoal_forward_errors_total",
            None,
            "Forwarded operations that failed (unreachable, deadline, refused).",
        );
        counter(
            "shoal_peer_operations_total",
            None,
            "Operations executed for peers.",
        );
        gauge(
            "shoal_ready",
            None,
            "1 once the node has joined and owns its part of the ring.",
        );
        gauge(
            "shoal_cluster_members",
            None,
            "Live members this node knows, by state.",
        );
        gauge("shoal_ring_members", None, "Members of this node's ring.");
        counter(
            "shoal_membership_changes_total",
            None,
            "Membership views this node has seen (joins, leaves, state changes).",
        );
        gauge(
            "shoal_uptime_seconds",
            Some(Unit::Seconds),
            "Seconds since the node started.",
        );
        gauge(
            "shoal_build_info",
            None,
            "1, with the version and git commit as labels.",
        );
    }

    /// Counts one answer of a request (nothing for the parts of an answer
    /// that are not one, like a get's `END`). Hits' and stores' key
    /// families are counted where the item is known ([`Metrics::local_hit`],
    /// [`Metrics::stored`] and their `remote_` forms).
    #[inline(always)]
    pub fn answered(&self, cmd: Cmd, reply: &Reply<'_>, response: &Response<'_>) {
        let outcome = match (Outcome::of(response), cmd, response) {
            (Some(outcome), _, _) => outcome,
            // A stats answer is its lines and `END`: one request, counted at
            // the end.
            (None, Cmd::Stats, Response::End) => Outcome::Ok,
            (None, _, _) => return,
        };
        let proto = Proto::of(reply);
        let i = (cmd as usize * PROTOS + proto as usize) * OUTCOMES + outcome as usize;
        self.requests[i].fetch_add(1, Ordering::Relaxed);
        match response {
            Response::Hit(hit) if sample() => self.hot_requested.record(hit.key),
            Response::Miss { key } => {
                self.family(key, FAMILY_MISS, 0);
                if sample() {
                    self.hot_requested.record(key);
                    self.hot_missed.record(key);
                }
            }
            _ => {}
        }
    }

    /// A hit on `item` for a client, by its key family: worked out from
    /// the key once and kept in the item's tag, so a hit rarely classifies.
    #[inline]
    pub fn local_hit(&self, item: &store::Item) {
        self.count_family(self.item_family(item), FAMILY_HIT, item.value().len());
    }

    /// The tag a new item for `key` gets ([`Metrics::local_hit`] reads it
    /// back): its family, 0 when that does not fit a tag.
    pub fn tag_for(&self, key: &[u8]) -> u8 {
        family_tag(self.families.classify(key).index())
    }

    /// A store of `len` value bytes for `key`, whose item was tagged `tag`
    /// (0: classified here).
    pub fn stored(&self, tag: u8, key: &[u8], len: usize) {
        self.count_family(self.family_of(tag, key), FAMILY_STORED, len);
    }

    /// The family of `key`, read from its item's `tag` ([`family_tag`])
    /// when it has one, else classified.
    #[inline]
    fn family_of(&self, tag: u8, key: &[u8]) -> usize {
        match tag {
            0 => self.families.classify(key).index(),
            tag => usize::from(tag) - 1,
        }
    }

    /// The most requested and the most missed keys (estimates, scaled for
    /// the sampling), as the privacy setting shows them.
    pub fn hot_keys(&self) -> (Vec<Hot>, Vec<Hot>) {
        let report = |top: &TopK| {
            top.report(HOT_KEYS, &self.privacy)
                .into_iter()
                .map(|h| Hot {
                    key: h.key,
                    count: h.count * HOT_SAMPLE,
                    error: h.error * HOT_SAMPLE,
                })
                .collect()
        };
        (report(&self.hot_requested), report(&self.hot_missed))
    }

    /// A hit answered by a peer, which named the key's family by its
    /// [`Families::code`] (0: it did not); an unknown code is classified
    /// here.
    pub fn remote_hit(&self, key: &[u8], value_len: usize, code: u64) {
        self.count_family(self.named_family(key, code), FAMILY_HIT, value_len);
    }

    /// A store answered by a peer, which named the key's family as
    /// [`Metrics::remote_hit`]'s peer does.
    pub fn remote_stored(&self, key: &[u8], value_len: usize, code: u64) {
        self.count_family(self.named_family(key, code), FAMILY_STORED, value_len);
    }

    /// The family a peer named by `code`, or `key`'s when it named none
    /// this registry knows.
    fn named_family(&self, key: &[u8], code: u64) -> usize {
        match self.families.by_code(code) {
            Some(id) => id.index(),
            None => self.families.classify(key).index(),
        }
    }

    /// The family code ([`Families::code`]) of `item`'s key, for a peer to
    /// count its hit by.
    pub fn family_code(&self, item: &store::Item) -> u64 {
        self.families
            .code(FamilyId::from_index(self.item_family(item)))
    }

    /// The family code of `key`, whose item was tagged `tag` (0:
    /// classified here), for a peer to count its store by.
    pub fn family_code_of(&self, tag: u8, key: &[u8]) -> u64 {
        self.families
            .code(FamilyId::from_index(self.family_of(tag, key)))
    }

    /// The family of `item`'s key: from its tag, which is set here if it
    /// has none yet, so the key is classified once.
    #[inline]
    fn item_family(&self, item: &store::Item) -> usize {
        let tag = item.tag();
        let id = self.family_of(tag, item.key());
        if tag == 0 {
            item.set_tag(family_tag(id));
        }
        id
    }

    #[inline]
    fn family(&self, key: &[u8], outcome: usize, bytes: usize) {
        let id = self.families.classify(key).index();
        self.count_family(id, outcome, bytes);
    }

    #[inline]
    fn count_family(&self, id: usize, outcome: usize, bytes: usize) {
        if let Some(figures) = self.family_figures.get(id) {
            figures[outcome].fetch_add(1, Ordering::Relaxed);
            if bytes > 0 {
                figures[FAMILY_BYTES].fetch_add(bytes as u64, Ordering::Relaxed);
            }
        }
    }

    /// One pass over a connection's buffer, begun at `started` (from
    /// [`Metrics::now`]): every request in it waited about that long.
    pub fn pass(&self, started: u64, seen: &Tally) {
        let took = self.clock.delta_as_nanos(started, self.clock.raw());
        let mut bits = seen.seen;
        while bits != 0 {
            let cmd = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            self.durations[cmd].record_many(took, u64::from(seen.counts[cmd]));
        }
    }

    /// A forwarded operation's round trip to a peer.
    pub fn forward_took(&self, peer: &PeerStats, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        peer.duration.record_many(ns, 1);
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
    }

    /// The exporter's periodic housekeeping (run every few seconds).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text page: the figures read now, then everything.
    pub fn render(&self, node: &Node) -> String {
        self.collect(node);
        let mut page = self.handle.render();
        self.render_histograms(node, &mut page);
        page
    }

    fn render_histograms(&self, node: &Node, page: &mut String) {
        page.push_str(
            "# HELP shoal_request_duration_seconds Time from reading a request to having its answer ready to write, by command.\n\
             # TYPE shoal_request_duration_seconds histogram\n",
        );
        for (cmd, buckets) in self.durations.iter().enumerate() {
            let labels = format!("command=\"{}\"", Cmd::NAMES[cmd]);
            buckets.render(page, "shoal_request_duration_seconds", &labels);
        }
        page.push('\n');
        let Some(router) = &node.router else {
            return;
        };
        page.push_str(
            "# HELP shoal_forward_duration_seconds Time from handing an operation to a peer to having its answer.\n\
             # TYPE shoal_forward_duration_seconds histogram\n",
        );
        for (name, stats) in router.peer_stats() {
            let labels = format!("peer=\"{}\"", escape_label(name.as_str()));
            stats
                .duration
                .render(page, "shoal_forward_duration_seconds", &labels);
        }
        page.push('\n');
    }

    /// Reads the figures kept elsewhere into their series.
    fn collect(&self, node: &Node) {
        for (i, count) in self.requests.iter().enumerate() {
            let n = count.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let (rest, outcome) = (i / OUTCOMES, i % OUTCOMES);
            let (cmd, proto) = (rest / PROTOS, rest % PROTOS);
            self.counter(
                "shoal_requests_total",
                vec![
                    Label::new("command", Cmd::NAMES[cmd]),
                    Label::new("protocol", PROTO_NAMES[proto]),
                    Label::new("outcome", OUTCOME_NAMES[outcome]),
                ],
            )
            .absolute(n);
        }
        for (id, name) in self.families.iter() {
            let i = id.index();
            let Some(figures) = self.family_figures.get(i) else {
                continue;
            };
            for (outcome, label) in FAMILY_OUTCOMES.iter().enumerate() {
                self.counter(
                    "shoal_key_family_requests_total",
                    vec![
                        Label::new("family", name.to_owned()),
                        Label::new("outcome", *label),
                    ],
                )
                .absolute(figures[outcome].load(Ordering::Relaxed));
            }
            self.counter(
                "shoal_key_family_bytes_total",
                vec![Label::new("family", name.to_owned())],
            )
            .absolute(figures[FAMILY_BYTES].load(Ordering::Relaxed));
        }
        let c = &node.counters;
        let s = node.store.stats();
        let counter = |name, v: u64| self.counter(name, Vec::new()).absolute(v);
        let gauge = |name, v: f64| self.gauge(name, Vec::new()).set(v);
        counter(
            "shoal_bytes_read_total",
            c.bytes_read.load(Ordering::Relaxed),
        );
        counter(
            "shoal_bytes_written_total",
            c.bytes_written.load(Ordering::Relaxed),
        );
        gauge(
            "shoal_connections",
            c.curr_connections.load(Ordering::Relaxed) as f64,
        );
        counter(
            "shoal_connections_total",
            c.total_connections.load(Ordering::Relaxed),
        );
        counter(
            "shoal_connections_rejected_total",
            c.rejected_connections.load(Ordering::Relaxed),
        );
        gauge("shoal_items", s.curr_items as f64);
        gauge("shoal_memory_used_bytes", s.bytes as f64);
        gauge("shoal_memory_limit_bytes", s.limit_maxbytes as f64);
        counter("shoal_evictions_total", s.evictions);
        counter("shoal_reclaimed_total", s.reclaimed);
        counter("shoal_store_hits_total", s.get_hits);
        counter("shoal_store_misses_total", s.get_misses);
        counter(
            "shoal_peer_operations_total",
            c.peer_ops.load(Ordering::Relaxed),
        );
        gauge("shoal_uptime_seconds", node.started.elapsed().as_secs_f64());
        gauge("shoal_ready", if node.is_ready() { 1.0 } else { 0.0 });
        self.gauge(
            "shoal_build_info",
            vec![
                Label::new("version", env!("CARGO_PKG_VERSION")),
                Label::new("git_sha", option_env!("SHOAL_GIT_SHA").unwrap_or("unknown")),
            ],
        )
        .set(1.0);
        let Some(router) = &node.router else {
            gauge("shoal_ring_members", 1.0);
            return;
        };
        let table = router.table();
        let view = &table.view;
        gauge("shoal_ring_members", view.ring.len() as f64);
        counter("shoal_membership_changes_total", view.seq);
        for state in [
            cluster::NodeState::Joining,
            cluster::NodeState::Ready,
            cluster::NodeState::Leaving,
        ] {
            let n = view.members.iter().filter(|m| m.state() == state).count();
            self.gauge(
                "shoal_cluster_members",
                vec![Label::new("state", state.as_str())],
            )
            .set(n as f64);
        }
        for (name, stats) in router.peer_stats() {
            let peer = || vec![Label::new("peer", name.as_str().to_owned())];
            self.counter("shoal_forwarded_total", peer())
                .absolute(stats.forwarded.load(Ordering::Relaxed));
            self.counter("shoal_forward_errors_total", peer())
                .absolute(stats.errors.load(Ordering::Relaxed));
        }
    }
}

fn hot_config() -> TopKConfig {
    TopKConfig {
        k: HOT_KEYS,
        ..TopKConfig::default()
    }
}

const FAMILY_HIT: usize = 0;
const FAMILY_MISS: usize = 1;
const FAMILY_STORED: usize = 2;
const FAMILY_OUTCOMES: [&str; 3] = ["hit", "miss", "stored"];
const FAMILY_BYTES: usize = 3;

/// The item tag that remembers family `id` (`id + 1`); 0, "not known",
/// when the id does not fit a byte.
fn family_tag(id: usize) -> u8 {
    u8::try_from(id + 1).unwrap_or(0)
}

/// A label value as Prometheus' text format wants it.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

static METADATA: Metadata<'static> =
    Metadata::new("shoal", metrics::Level::INFO, Some(module_path!()));

/// Requests per command seen in one pass (and which commands, as bits, so
/// the pass's end visits only those).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    counts: [u32; CMDS],
    seen: u32,
}

impl Tally {
    #[inline]
    pub fn add(&mut self, cmd: Cmd) {
        self.counts[cmd as usize] += 1;
        self.seen |= 1 << cmd as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_keys_are_sampled_about_one_get_in_hot_sample() {
        // The mean gap is HOT_SAMPLE: over 640k gets, 10k samples give or
        // take a few hundred (gaps are uniform, σ of the count ≈ 0.6 %).
        let n = 640_000;
        let taken = (0..n).filter(|_| sample()).count() as u64;
        let expected = n / HOT_SAMPLE;
        assert!(
            taken.abs_diff(expected) < expected / 20,
            "{taken} samples of {n}, expected about {expected}"
        );
        // No gap is shorter than one get or longer than 2·HOT_SAMPLE − 1.
        let mut gap = 0;
        for _ in 0..100_000 {
            gap += 1;
            if sample() {
                assert!((1..2 * HOT_SAMPLE).contains(&gap), "gap {gap}");
                gap = 0;
            }
        }
    }

    /// The family `label`'s count of `outcome` and its bytes.
    fn counted(m: &Metrics, label: &str, outcome: usize) -> (u64, u64) {
        let (id, _) = m.families.iter().find(|(_, name)| *name == label).unwrap();
        let f = &m.family_figures[id.index()];
        (
            f[outcome].load(Ordering::Relaxed),
            f[FAMILY_BYTES].load(Ordering::Relaxed),
        )
    }

    #[test]
    fn a_forwarded_hit_counts_under_the_family_its_owner_named() {
        let owner = Metrics::new(8, Privacy::Plain);
        let caller = Metrics::new(8, Privacy::Plain);
        let hits = |m: &Metrics, label: &str| counted(m, label, FAMILY_HIT);
        let user = owner.families.code(owner.families.classify(b":1:user:42"));
        // Unknown to the caller: its key is classified, which registers it.
        caller.remote_hit(b":1:user:7", 3, user);
        assert_eq!(hits(&caller, "app:user"), (1, 3));
        // Known now: the code decides, whatever the key looks like (which
        // shows the key was not classified).
        caller.remote_hit(b"opaque", 4, user);
        assert_eq!(hits(&caller, "app:user"), (2, 7));
        let session = owner.families.code(FamilyId::SESSION);
        caller.remote_hit(b"opaque", 1, session);
        assert_eq!(hits(&caller, "django:session"), (1, 1));
        // No code: classified.
        caller.remote_hit(b"opaque", 1, 0);
        assert_eq!(hits(&caller, "other"), (1, 1));
    }

    #[test]
    fn a_forwarded_store_counts_under_the_family_its_owner_named() {
        let owner = Metrics::new(8, Privacy::Plain);
        let caller = Metrics::new(8, Privacy::Plain);
        let stored = |m: &Metrics, label: &str| counted(m, label, FAMILY_STORED);
        // The owner names the family of a key it tagged, and of one it
        // could not tag (classified again).
        let tag = owner.tag_for(b":1:user:42");
        let user = owner.family_code_of(tag, b"ignored: the tag decides");
        assert_eq!(owner.family_code_of(0, b":1:user:42"), user);
        caller.remote_stored(b":1:user:7", 3, user);
        assert_eq!(stored(&caller, "app:user"), (1, 3));
        // Known now: the code decides, not the key.
        caller.remote_stored(b"opaque", 4, user);
        assert_eq!(stored(&caller, "app:user"), (2, 7));
        // No code (an owner that does not say): classified.
        caller.remote_stored(b"opaque", 1, 0);
        assert_eq!(stored(&caller, "other"), (1, 1));
    }

    #[test]
    fn a_latency_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let b = Buckets::default();
        for (ns, n) in [
            (0, 1),
            (25_000, 2),
            (25_001, 3),
            (2_500_000_000, 4),
            (u64::MAX / 8, 5),
        ] {
            b.record_many(ns, n);
        }
        let counts: Vec<u64> = b.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(counts[0], 3);
        assert_eq!(counts[1], 3);
        assert_eq!(counts[LATENCY_BUCKETS_NS.len() - 1], 4);
        assert_eq!(counts[LATENCY_BUCKETS_NS.len()], 5);
        assert_eq!(counts.iter().sum::<u64>(), 15);
    }
}
