//! Requests answered by other nodes: planning them (synchronously, in the
//! connection's pass over its read buffer), settling the pass (awaiting
//! every answer it needs, all in flight together, in one wait) and
//! finishing them (encoding the answers in the client's order,
//! synchronously again).
//!
//! [`plan`] looks at one decoded request with the pass's routing
//! [`Table`]. Everything this node owns, and every request without a key,
//! is [`Plan::Local`]: `exec` answers it as on a single node. A request
//! for a key owned elsewhere becomes a [`Pending`] answer. The gets of one
//! pass — every key of every get, gets, gat, `mg`, binary get the client
//! pipelined — are gathered per owner into one `GetRequest` ([`Pass`]),
//! with its keys packed ([`cluster::packed`]) when the owner has said it
//! reads them and no gathered request needs the meta fields,
//! sent when the pass ends, or just before another operation on one of its
//! keys goes to that owner, so the owner sees each key's requests in the
//! client's order (across keys, see [`Pass::send_if_gathering`]); other
//! operations are handed to the owner's peer handle at once, and a get the
//! pass gathers after one of them on the same key is sent to follow it
//! ([`Pass::written`]). A plain packed get is not sent on its own: it
//! joins the owner's shared get, which carries the gets of every
//! connection to that owner in one operation
//! (`cluster::client::Peer::join_get`). A multi-key get is split the same
//! way: local keys are looked up now, the others ride their owners'
//! gathered gets, all in flight together, and the answer is put back
//! together in the client's key order. `flush_all` is applied here and
//! sent to every live member; it answers `OK` only once all of them have
//! flushed.
//!
//! Failures follow ARCHITECTURE.md: a read that a peer could not answer
//! is a miss, a write is `SERVER_ERROR` (binary: a non-success status),
//! and nothing waits longer than the peer client's deadline.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use cluster::client::{Joined, Ticket};
use cluster::packed;
use cluster::peer::v1::{
    self as api, ArithOp as ApiArithOp, ArithOutcome, DeleteOutcome, ErrorCode, Operation,
    StoreMode as ApiStoreMode, StoreOutcome, operation, operation_result,
};
use cluster::peer::{OMIT_CAS, OMIT_META};
use protocol::{
    ArithOp, Command, Error, Hit, Keys, OutBuf, Reply, Request, Response, StoreMode, TextVerb,
    Value,
};
use store::Found;
use tokio::time::Instant;

use crate::Node;
use crate::exec::{self, After};
use crate::metrics::{Cmd, Metrics};
use crate::router::{Owner, PeerStats, Remote, Table};

/// What to do with one request. Lives on the stack for one request and is
/// moved once, so the size of `Forward` costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Plan<'a> {
    /// Answer it from the local store.
    Local,
    /// Answer it with this error now (the node is not ready, or the owner
    /// cannot be reached at all).
    Refuse(Error),
    /// Its answer comes from peers; then continue as `After` says.
    Forward(Pending<'a>, After),
}

/// An answer waiting on peers.
pub(crate) struct Pending<'a> {
    reply: Reply<'a>,
    cmd: Cmd,
    kind: Kind<'a>,
}

enum Kind<'a> {
    /// One keyed operation (store, delete, arith, touch) at one owner.
    /// Boxed: the gets that make up most forwards move a `Pending` a few
    /// times, and without this variant's 88 bytes it is small enough to
    /// move without a call to `memcpy`.
    One {
        call: Box<Outcome>,
        what: One,
        /// A storage command's key and value length (for its key family).
        stored: Option<(&'a [u8], usize)>,
    },
    /// A get of one key owned elsewhere (most gets): no call means the
    /// owner cannot be reached, a miss.
    GetOne {
        key: &'a [u8],
        /// The pass's gathered get and the key's position in it.
        call: Option<(usize, usize)>,
        debug: bool,
    },
    /// A get of one or many keys, some perhaps local.
    Get {
        keys: Vec<&'a [u8]>,
        slots: Vec<Slot>,
        /// `me`: answer the debug line, not a hit.
        debug: bool,
    },
    /// `flush_all`: flushed here already, sent to every other live member.
    Flush { calls: Vec<Outcome> },
}

/// How to read a single operation's answer.
#[derive(Clone, Copy)]
enum One {
    Store,
    /// The value was refused as too large before it was read: whatever the
    /// owner says, the client hears "too large".
    TooLarge,
    Delete,
    Arith,
    Touch,
}

/// Where one key of a get is answered.
enum Slot {
    Local(Option<Found>),
    /// The `pos`th key of the pass's `call`th gathered get.
    Remote {
        call: usize,
        pos: usize,
    },
}

/// An operation handed to a peer, and whose counters its outcome goes to.
struct Sent {
    answer: Ticket,
    stats: Arc<PeerStats>,
}

impl Sent {
    fn send(table: &Table, remote: &Remote, op: operation::Op, now: Instant) -> Sent {
        remote.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        Sent {
            answer: remote
                .peer
                .enqueue(Operation { op: Some(op) }, table.view.ring.version(), now),
            stats: remote.stats.clone(),
        }
    }

    /// The peer's answer, once it is there (the ticket registers the
    /// waker until then), counted as [`Sent::count`] says.
    fn poll_answer(
        &mut self,
        cx: &mut Context<'_>,
        node: &Node,
        now: &mut Now,
    ) -> Poll<Result<operation_result::Result, cluster::Error>> {
        let answer = ready!(Pin::new(&mut self.answer).poll(cx));
        Poll::Ready(self.count(node, answer, now))
    }

    /// Takes the answer's result: a failed call or a missing result counts
    /// as a forward error; every answer counts in the peer's latency.
    fn count(
        &self,
        node: &Node,
        answer: Result<api::OperationResult, cluster::Error>,
        now: &mut Now,
    ) -> Result<operation_result::Result, cluster::Error> {
        let answer = answer.and_then(|r| {
            r.result
                .ok_or(cluster::Error::Peer(ErrorCode::InvalidArgument))
        });
        // The ticket's deadline is its send time plus the peer deadline.
        let sent = self.answer.deadline() - node.forward_deadline();
        tally(node, &self.stats, sent, answer.is_err(), now);
        answer
    }

    /// Gives up on the answer: the pass's safety timer fired (the peer's
    /// task answers by the deadline on its own, unless it is stuck).
    fn overdue(
        &self,
        node: &Node,
        now: &mut Now,
    ) -> Result<operation_result::Result, cluster::Error> {
        self.count(
            node,
            Err(cluster::Error::Unavailable("peer answer overdue".into())),
            now,
        )
    }
}

/// A single operation's answer: awaited with the rest of the pass
/// ([`settle`]), then read when its request is answered.
enum Outcome {
    Waiting(Sent),
    Done(Result<operation_result::Result, cluster::Error>),
}

impl Outcome {
    /// Whether the answer is in (polling for it if not).
    fn poll(&mut self, cx: &mut Context<'_>, node: &Node, now: &mut Now) -> bool {
        if let Outcome::Waiting(sent) = self {
            match sent.poll_answer(cx, node, now) {
                Poll::Ready(result) => *self = Outcome::Done(result),
                Poll::Pending => return false,
            }
        }
        true
    }

    fn overdue(&mut self, node: &Node, now: &mut Now) {
        if let Outcome::Waiting(sent) = self {
            *self = Outcome::Done(sent.overdue(node, now));
        }
    }

    fn take(self) -> Result<operation_result::Result, cluster::Error> {
        match self {
            Outcome::Done(result) => result,
            // Not settled: nothing to read.
            Outcome::Waiting(_) => Err(cluster::Error::Unavailable("answer not awaited".into())),
        }
    }
}

/// The forwarded gets of one pass over a connection's read buffer,
/// gathered per owner: a client that pipelines 16 gets costs each peer one
/// operation, not up to 16.
#[derive(Default)]
pub(crate) struct Pass {
    /// Per remote (its index in the table): the call still gathering keys.
    open: Vec<Option<usize>>,
    calls: Vec<Call>,
    /// The connection's safety timer for [`settle`], kept armed across
    /// passes: arming a timer costs more than a pass's other bookkeeping.
    net: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Emptied lists of packed keys, kept for the next pass.
    spare_keys: Vec<BytesMut>,
    /// The single operations this pass handed to peers, which a get of
    /// their key gathered later in the pass must follow. Only this pass's
    /// count: the connection's earlier passes are all answered.
    written: Vec<Written>,
    /// When this pass handed its first operation to a peer: the time every
    /// operation of the pass is sent at, for its deadline and its latency.
    now: Now,
}

/// One reading of the clock for everything that happens at about the same
/// moment (a pass's forwards, the answers one wake of its settling finds):
/// reading the clock costs more than the rest of a forwarded key's
/// bookkeeping, and the moments differ by microseconds.
#[derive(Default)]
struct Now(Option<Instant>);

impl Now {
    fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// A single operation handed to a peer ([`Pass::written`]).
struct Written {
    remote: usize,
    /// `None`: every key (`flush_all`).
    key: Option<Bytes>,
    /// Its place in the peer's queue.
    place: u64,
}

enum Call {
    Gathering {
        remote: usize,
        touch: Option<i64>,
        keys: Gathered,
        /// Item fields none of the gathered requests needs.
        omit: u32,
        /// The place of the pass's latest operation on one of the keys,
        /// which the get must follow.
        after: Option<u64>,
    },
    Sent {
        sent: Sent,
        /// For packed keys: how many, and whether the answer carries CASes.
        packed: Option<(usize, bool)>,
    },
    /// A plain packed get, joined to the peer's shared get.
    Joined {
        joined: Joined,
        stats: Arc<PeerStats>,
    },
    Got(Got),
}

/// The keys of a get being gathered for one peer.
enum Gathered {
    /// As `GetRequest.keys`: slices of the pass's input, no copy.
    Listed(Vec<Bytes>),
    /// As `GetRequest.packed_keys` (a peer that reads them, and no request
    /// that needs the meta fields), and how many.
    Packed(BytesMut, usize),
}

impl Gathered {
    /// Adds `key` unless it cannot join (a packed list, and a request
    /// that needs what a packed answer lacks, or a key too long to pack);
    /// returns its position.
    fn push(&mut self, input: &Bytes, key: &[u8], omit: u32) -> Option<usize> {
        match self {
            Gathered::Listed(keys) => {
                keys.push(share(input, key));
                Some(keys.len() - 1)
            }
            Gathered::Packed(keys, n) => {
                if omit & OMIT_META == 0 || !packed::push_key(keys, key) {
                    return None;
                }
                *n += 1;
                Some(*n - 1)
            }
        }
    }

    /// Whether `key` is one of the gathered keys.
    fn names(&self, key: &[u8]) -> bool {
        match self {
            Gathered::Listed(keys) => keys.iter().any(|k| k[..] == *key),
            // A list this pass packed always parses.
            Gathered::Packed(keys, _) => {
                packed::keys(keys).map_or(true, |mut keys| keys.any(|k| k == key))
            }
        }
    }
}

/// A gathered get's answer: a failed read is no items, all misses.
enum Got {
    Listed(Vec<api::Item>),
    /// A packed answer (perhaps shared with other passes: this one's keys
    /// start at `start`).
    Packed {
        items: Arc<packed::Items>,
        start: usize,
    },
}

/// One forwarded key's item, as either form of answer carries it.
struct RemoteItem<'a> {
    flags: u32,
    cas: u64,
    value: Value<'a>,
    /// Only in a listed answer (a packed get never asks for them).
    ttl: i64,
    last_access: u32,
    fetched: bool,
    size: u32,
    /// The key's family code, if the owner sent one (0: classify here).
    family: u64,
}

impl Got {
    fn item(&self, pos: usize) -> Option<RemoteItem<'_>> {
        match self {
            Got::Listed(items) => items.get(pos).filter(|i| i.found).map(|i| RemoteItem {
                flags: i.flags,
                cas: i.cas,
                value: Value::Shared(i.value.clone()),
                ttl: i.ttl,
                last_access: i.last_access,
                fetched: i.fetched,
                size: i.size,
                family: 0,
            }),
            Got::Packed { items, start } => items.get(start + pos).map(|hit| RemoteItem {
                flags: hit.flags,
                cas: hit.cas,
                value: hit.value,
                ttl: 0,
                last_access: 0,
                fetched: false,
                size: 0,
                family: hit.family,
            }),
        }
    }
}

/// Keys gathered for one peer before a new list must grow.
const GATHER: usize = 16;

/// The largest emptied list of packed keys a pass keeps for the next one
/// (a huge multi-get's list is let go).
const SPARE_KEYS_CAPACITY: usize = 4096;

/// `part` as `Bytes`: a slice of `input` (no copy) when it lies within it,
/// as everything a request decoded from `input` does; else a copy.
fn share(input: &Bytes, part: &[u8]) -> Bytes {
    let within = input.as_ptr_range();
    if !part.is_empty() && within.start <= part.as_ptr() && part.as_ptr_range().end <= within.end {
        input.slice_ref(part)
    } else {
        Bytes::copy_from_slice(part)
    }
}

impl Pass {
    /// Forgets the last pass (keeping the allocations).
    pub(crate) fn clear(&mut self) {
        self.open.clear();
        self.calls.clear();
        self.written.clear();
        self.now = Now::default();
    }

    /// Adds `key` (a slice of `input`) to the get gathered for `remote` (a
    /// new one if there is none, or if it touches differently); returns
    /// (call, position).
    #[allow(clippy::too_many_arguments)]
    fn get(
        &mut self,
        table: &Table,
        remote: usize,
        touch: Option<i64>,
        omit: u32,
        input: &Bytes,
        key: &[u8],
    ) -> (usize, usize) {
        if self.open.len() < table.remotes.len() {
            self.open.resize(table.remotes.len(), None);
        }
        let follows = self.follows(remote, key);
        if let Some(c) = self.open[remote] {
            if let Call::Gathering {
                touch: t,
                keys,
                omit: o,
                after,
                ..
            } = &mut self.calls[c]
                && *t == touch
                && let Some(pos) = keys.push(input, key, omit)
            {
                *o &= omit;
                *after = (*after).max(follows);
                return (c, pos);
            }
            self.send(table, remote);
        }
        let mut keys = if omit & OMIT_META != 0 && table.remotes[remote].peer.packs() {
            let list = self.spare_keys.pop();
            Gathered::Packed(
                list.unwrap_or_else(|| BytesMut::with_capacity(GATHER * 16)),
                0,
            )
        } else {
            Gathered::Listed(Vec::with_capacity(GATHER))
        };
        if keys.push(input, key, omit).is_none() {
            // Too long to pack (longer than any protocol allows).
            keys = Gathered::Listed(vec![share(input, key)]);
        }
        self.calls.push(Call::Gathering {
            remote,
            touch,
            keys,
            omit,
            after: follows,
        });
        let c = self.calls.len() - 1;
        self.open[remote] = Some(c);
        (c, 0)
    }

    /// Sends the get gathered for `remote`, if any: before anything else
    /// goes to it, and when the pass ends.
    fn send(&mut self, table: &Table, remote: usize) {
        let Some(c) = self.open.get_mut(remote).and_then(Option::take) else {
            return;
        };
        if let Call::Gathering {
            remote,
            touch,
            keys,
            omit,
            after,
        } = std::mem::replace(&mut self.calls[c], Call::Got(Got::Listed(Vec::new())))
        {
            let target = &table.remotes[remote];
            let keys = match (keys, touch) {
                (Gathered::Packed(mut keys, n), None) => {
                    // A plain get: one shared get per peer carries every
                    // pass's keys.
                    target.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    self.calls[c] = Call::Joined {
                        joined: target.peer.join_get(
                            &keys,
                            n,
                            omit,
                            table.view.ring.version(),
                            self.now.get(),
                            after,
                        ),
                        stats: target.stats.clone(),
                    };
                    if self.spare_keys.len() < table.remotes.len()
                        && keys.capacity() <= SPARE_KEYS_CAPACITY
                    {
                        keys.clear();
                        self.spare_keys.push(keys);
                    }
                    return;
                }
                (keys, _) => keys,
            };
            let mut request = api::GetRequest {
                touch,
                omit,
                ..Default::default()
            };
            let packed = match keys {
                Gathered::Listed(keys) => {
                    request.keys = keys;
                    None
                }
                Gathered::Packed(keys, n) => {
                    request.packed_keys = keys.freeze();
                    Some((n, omit & OMIT_CAS == 0))
                }
            };
            self.calls[c] = Call::Sent {
                sent: Sent::send(table, target, operation::Op::Get(request), self.now.get()),
                packed,
            };
        }
    }

    /// The place of this pass's latest operation at `remote` that a get of
    /// `key` must follow, if any.
    fn follows(&self, remote: usize, key: &[u8]) -> Option<u64> {
        self.written
            .iter()
            .filter(|w| w.remote == remote && w.key.as_ref().is_none_or(|k| k[..] == *key))
            .map(|w| w.place)
            .max()
    }

    /// Notes an operation on `key` (`None`: every key) handed to `remote`
    /// with `sent`.
    fn wrote(&mut self, remote: usize, key: Option<Bytes>, sent: &Sent) {
        self.written.push(Written {
            remote,
            key,
            place: sent.answer.place(),
        });
    }

    /// Sends the get gathered for `remote` if it names `key`, so each
    /// key's requests reach its owner in the client's order; keeping the
    /// gathered get open lets the rest of the pass join it. Across keys the
    /// owner may run a pass's requests in another order (a gathered get
    /// after a later write), as requests to different owners already may:
    /// the client itself hears nothing until the pass is answered, and
    /// only another client watching both keys at that moment could notice.
    fn send_if_gathering(&mut self, table: &Table, remote: usize, key: &[u8]) {
        let Some(&Some(c)) = self.open.get(remote) else {
            return;
        };
        if let Call::Gathering { keys, .. } = &self.calls[c]
            && keys.names(key)
        {
            self.send(table, remote);
        }
    }

    /// Sends every gathered get: the pass is over.
    pub(crate) fn seal(&mut self, table: &Table) {
        for remote in 0..self.open.len() {
            self.send(table, remote);
        }
    }

    /// The item answered for the `pos`th key of call `c` (a miss, or a
    /// failed read, is `None`). The pass was settled first.
    fn item(&self, c: usize, pos: usize) -> Option<RemoteItem<'_>> {
        match &self.calls[c] {
            Call::Got(got) => got.item(pos),
            // Not sent, or not settled: nothing to read.
            Call::Gathering { .. } | Call::Sent { .. } | Call::Joined { .. } => None,
        }
    }
}

impl Call {
    /// Whether the answer is in (polling for it if not).
    fn poll(&mut self, cx: &mut Context<'_>, node: &Node, now: &mut Now) -> bool {
        match self {
            Call::Sent { sent, .. } => {
                let Poll::Ready(result) = sent.poll_answer(cx, node, now) else {
                    return false;
                };
                self.got(result);
            }
            Call::Joined { joined, stats } => {
                let Poll::Ready(answer) = joined.poll_answer(cx) else {
                    return false;
                };
                let got = shared_items(node, stats, joined, answer, now);
                *self = Call::Got(got);
            }
            Call::Gathering { .. } | Call::Got(_) => {}
        }
        true
    }

    fn overdue(&mut self, node: &Node, now: &mut Now) {
        match self {
            Call::Sent { sent, .. } => {
                let result = sent.overdue(node, now);
                self.got(result);
            }
            Call::Joined { joined, stats } => {
                let overdue = Err(cluster::Error::Unavailable("peer answer overdue".into()));
                let got = shared_items(node, stats, joined, overdue, now);
                *self = Call::Got(got);
            }
            Call::Gathering { .. } | Call::Got(_) => {}
        }
    }

    /// Keeps a sent get's answer: its items, or none (all misses) when it
    /// failed; an answer that does not fit its request counts as an error.
    fn got(&mut self, result: Result<operation_result::Result, cluster::Error>) {
        let Call::Sent { sent, packed } =
            std::mem::replace(self, Call::Got(Got::Listed(Vec::new())))
        else {
            return;
        };
        match got_items(result, packed) {
            Some(got) => *self = Call::Got(got),
            None => {
                sent.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Counts one forwarded operation's answer: its latency since `sent`, and
/// a forward error if it `failed`.
fn tally(node: &Node, stats: &PeerStats, sent: Instant, failed: bool, now: &mut Now) {
    if failed {
        stats.errors.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(m) = &node.metrics {
        m.forward_took(stats, now.get().saturating_duration_since(sent));
    }
}

/// This pass's part of a shared get's answer, counted as [`Sent::count`]
/// counts an operation's: a failure (all misses) is a forward error.
fn shared_items(
    node: &Node,
    stats: &PeerStats,
    joined: &Joined,
    answer: Result<Arc<packed::Items>, cluster::Error>,
    now: &mut Now,
) -> Got {
    tally(node, stats, joined.sent(), answer.is_err(), now);
    match answer {
        Ok(items) => Got::Packed {
            items,
            start: joined.start(),
        },
        Err(_) => Got::Listed(Vec::new()),
    }
}

/// Waits until every answer the pass's requests need is in: the gathered
/// gets and every single operation, all in flight together. `net` is a
/// safety timer (each operation already fails at the peer client's
/// deadline); should it fire, whatever is still missing is a failure.
pub(crate) async fn settle(node: &Node, pass: &mut Pass, waiting: &mut [Pending<'_>]) {
    // The timer fires between one and two `forward_net` after the pass
    // began: it is moved only when it would fire sooner than one.
    let (soonest, rearm) = {
        let now = pass.now.get();
        (now + node.forward_net(), now + 2 * node.forward_net())
    };
    let Pass { calls, net, .. } = pass;
    let net = net.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(rearm)));
    if net.deadline() < soonest {
        net.as_mut().reset(rearm);
    }
    // Everything before `calls_done` / `pending_done` is in.
    let (mut calls_done, mut pending_done) = (0, 0);
    let all_in = std::future::poll_fn(|cx| {
        let now = &mut Now::default();
        while let Some(call) = calls.get_mut(calls_done) {
            if !call.poll(cx, node, now) {
                return net.as_mut().poll(cx).map(|()| false);
            }
            calls_done += 1;
        }
        while let Some(pending) = waiting.get_mut(pending_done) {
            if !pending.poll(cx, node, now) {
                return net.as_mut().poll(cx).map(|()| false);
            }
            pending_done += 1;
        }
        Poll::Ready(true)
    })
    .await;
    if !all_in {
        // Whatever answered meanwhile is kept; only the rest is overdue.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let now = &mut Now::default();
        for call in calls.iter_mut() {
            if !call.poll(&mut cx, node, now) {
                call.overdue(node, now);
            }
        }
        for pending in waiting.iter_mut() {
            if !pending.poll(&mut cx, node, now) {
                pending.overdue(node, now);
            }
        }
    }
}

fn stored_of<'a>(request: &Request<'a>) -> Option<(&'a [u8], usize)> {
    match request.command {
        Command::Store { key, value, .. } => Some((key, value.len())),
        _ => None,
    }
}

fn not_ready() -> Error {
    Error::Unavailable("node not ready: not yet part of the cluster".into())
}

fn unreachable_owner() -> Error {
    Error::Unavailable("owner unreachable".into())
}

/// Routes one request (see the module docs). Counts client commands as
/// `exec` does for the ones it keeps.
pub(crate) fn plan<'a>(
    node: &Node,
    table: &Table,
    pass: &mut Pass,
    input: &Bytes,
    cmd: Cmd,
    request: &Request<'a>,
) -> Plan<'a> {
    let counters = &node.counters;
    // The operation is built only when the key is owned elsewhere.
    let mut single = |key: &'a [u8], what: One, op: &dyn Fn() -> operation::Op| -> Plan<'a> {
        match table.owner(key) {
            Owner::Local => Plan::Local,
            Owner::Unavailable if !table.ready => Plan::Refuse(not_ready()),
            Owner::Unavailable => Plan::Refuse(unreachable_owner()),
            Owner::Remote(i) => Plan::Forward(
                Pending {
                    reply: request.reply.clone(),
                    cmd,
                    kind: Kind::One {
                        call: {
                            // A gathered get of the same key goes first,
                            // and one gathered later follows: the owner
                            // sees each key's requests in the client's
                            // order.
                            pass.send_if_gathering(table, i, key);
                            let now = pass.now.get();
                            let sent = Sent::send(table, &table.remotes[i], op(), now);
                            pass.wrote(i, Some(share(input, key)), &sent);
                            Box::new(Outcome::Waiting(sent))
                        },
                        what,
                        stored: stored_of(request),
                    },
                },
                After::Continue,
            ),
        }
    };
    let bytes = |part: &[u8]| share(input, part);
    match &request.command {
        Command::Get { keys, touch } => {
            plan_get(node, table, pass, input, cmd, request, *keys, *touch, false)
        }
        Command::MetaDebug { key } => plan_get(
            node,
            table,
            pass,
            input,
            cmd,
            request,
            Keys::One(key),
            None,
            true,
        ),
        &Command::Store {
            mode,
            key,
            flags,
            exptime,
            value,
            cas,
        } => {
            let plan = single(key, One::Store, &|| {
                operation::Op::Store(api::StoreRequest {
                    mode: store_mode(mode) as i32,
                    key: bytes(key),
                    flags,
                    exptime,
                    value: bytes(value),
                    cas,
                    ..Default::default()
                })
            });
            if !matches!(plan, Plan::Local) {
                counters.cmd_set.fetch_add(1, Ordering::Relaxed);
            }
            plan
        }
        &Command::TooLarge {
            mode,
            key,
            cas,
            swallow,
        } => match single(key, One::TooLarge, &|| {
            operation::Op::Store(api::StoreRequest {
                mode: store_mode(mode) as i32,
                key: bytes(key),
                cas,
                too_large: true,
                ..Default::default()
            })
        }) {
            Plan::Local => Plan::Local,
            // Whoever owns it, the client hears "too large" and the
            // payload is discarded.
            Plan::Refuse(_) => {
                counters.cmd_set.fetch_add(1, Ordering::Relaxed);
                Plan::Refuse(Error::TooLarge)
            }
            Plan::Forward(pending, _) => {
                counters.cmd_set.fetch_add(1, Ordering::Relaxed);
                Plan::Forward(pending, After::Swallow(swallow))
            }
        },
        &Command::Delete { key, cas } => single(key, One::Delete, &|| {
            operation::Op::Delete(api::DeleteRequest {
                key: bytes(key),
                cas,
                ..Default::default()
            })
        }),
        &Command::Arith {
            key,
            op,
            delta,
            vivify,
            cas,
        } => single(key, One::Arith, &|| {
            operation::Op::Arith(api::ArithRequest {
                key: bytes(key),
                op: match op {
                    ArithOp::Incr => ApiArithOp::Incr,
                    ArithOp::Decr => ApiArithOp::Decr,
                } as i32,
                delta,
                vivify: vivify.map(|v| api::Vivify {
                    initial: v.initial,
                    exptime: v.exptime,
                }),
                cas,
                ..Default::default()
            })
        }),
        &Command::Touch { key, exptime } => {
            let plan = single(key, One::Touch, &|| {
                operation::Op::Touch(api::TouchRequest {
                    key: bytes(key),
                    exptime,
                    ..Default::default()
                })
            });
            if !matches!(plan, Plan::Local) {
                counters.cmd_touch.fetch_add(1, Ordering::Relaxed);
            }
            plan
        }
        &Command::FlushAll { delay } => {
            if node.settings.disable_flush || table.remotes.is_empty() {
                return Plan::Local;
            }
            counters.cmd_flush.fetch_add(1, Ordering::Relaxed);
            node.store.flush_all(delay);
            pass.seal(table);
            let now = pass.now.get();
            let calls = table
                .remotes
                .iter()
                .enumerate()
                .map(|(i, remote)| {
                    let op = operation::Op::FlushAll(api::FlushAllRequest {
                        delay,
                        ..Default::default()
                    });
                    let sent = Sent::send(table, remote, op, now);
                    // Every get the pass gathers from now on follows it.
                    pass.wrote(i, None, &sent);
                    Outcome::Waiting(sent)
                })
                .collect();
            Plan::Forward(
                Pending {
                    reply: request.reply.clone(),
                    cmd,
                    kind: Kind::Flush { calls },
                },
                After::Continue,
            )
        }
        Command::Stats { .. }
        | Command::Version
        | Command::Verbosity { .. }
        | Command::Noop
        | Command::Quit
        | Command::SaslListMechs
        | Command::SaslAuth { .. }
        | Command::SaslStep { .. } => Plan::Local,
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_get<'a>(
    node: &Node,
    table: &Table,
    pass: &mut Pass,
    input: &Bytes,
    cmd: Cmd,
    request: &Request<'a>,
    keys: Keys<'a>,
    touch: Option<i64>,
    debug: bool,
) -> Plan<'a> {
    let counters = &node.counters;
    let count = |n: u64| {
        if !debug {
            counters.cmd_get.fetch_add(n, Ordering::Relaxed);
            if touch.is_some() {
                counters.cmd_touch.fetch_add(n, Ordering::Relaxed);
            }
        }
    };
    let forward = |kind: Kind<'a>| {
        Plan::Forward(
            Pending {
                reply: request.reply.clone(),
                cmd,
                kind,
            },
            After::Continue,
        )
    };

    let omit = omitted(&request.reply, debug);
    // One key, the common case: no lists to build.
    let mut iter = keys.iter();
    if let (Some(key), None) = (iter.next(), iter.next()) {
        let call = match table.owner(key) {
            Owner::Local => return Plan::Local,
            Owner::Unavailable if !table.ready => return Plan::Refuse(not_ready()),
            Owner::Unavailable => None,
            Owner::Remote(i) => Some(pass.get(table, i, touch, omit, input, key)),
        };
        count(1);
        return forward(Kind::GetOne { key, call, debug });
    }

    // Many keys: every key's owner, once.
    let owners: Vec<(&'a [u8], Owner)> = keys.iter().map(|k| (k, table.owner(k))).collect();
    if owners.iter().all(|(_, o)| *o == Owner::Local) {
        return Plan::Local;
    }
    if !table.ready {
        return Plan::Refuse(not_ready());
    }
    count(owners.len() as u64);
    let store = &node.store;
    // The local keys' cache misses overlap (see `Store::prefetch`).
    for (key, _) in owners.iter().filter(|(_, o)| *o == Owner::Local) {
        store.prefetch(key);
    }
    let mut keys_in_order = Vec::with_capacity(owners.len());
    let mut slots = Vec::with_capacity(owners.len());
    for (key, owner) in owners {
        keys_in_order.push(key);
        slots.push(match owner {
            Owner::Local => Slot::Local(match (debug, touch) {
                (true, _) | (false, None) => store.get(key),
                (false, Some(exptime)) => store.get_and_touch(key, exptime),
            }),
            // An unreachable owner's keys are misses.
            Owner::Unavailable => Slot::Local(None),
            Owner::Remote(i) => {
                let (call, pos) = pass.get(table, i, touch, omit, input, key);
                Slot::Remote { call, pos }
            }
        });
    }
    forward(Kind::Get {
        keys: keys_in_order,
        slots,
        debug,
    })
}

/// The item fields a get answered as `reply` (or as `me`'s debug line)
/// never shows, which the owner need not send.
fn omitted(reply: &Reply<'_>, debug: bool) -> u32 {
    match reply {
        _ if debug => 0,
        Reply::Text(text) if text.verb == TextVerb::Gets => OMIT_META,
        Reply::Text(_) => OMIT_CAS | OMIT_META,
        // The CAS is in every binary response's header.
        Reply::Binary(_) => OMIT_META,
        Reply::Meta(meta) => {
            let mut omit = 0;
            if !meta.cas {
                omit |= OMIT_CAS;
            }
            if !(meta.ttl || meta.last_access || meta.hit_before) {
                omit |= OMIT_META;
            }
            omit
        }
    }
}

fn store_mode(mode: StoreMode) -> ApiStoreMode {
    match mode {
        StoreMode::Set => ApiStoreMode::Set,
        StoreMode::Add => ApiStoreMode::Add,
        StoreMode::Replace => ApiStoreMode::Replace,
        StoreMode::Append => ApiStoreMode::Append,
        StoreMode::Prepend => ApiStoreMode::Prepend,
    }
}

impl Pending<'_> {
    /// Whether the answers of its single operations are in (polling for
    /// them if not); its gets' answers are the pass's.
    #[inline]
    fn poll(&mut self, cx: &mut Context<'_>, node: &Node, now: &mut Now) -> bool {
        match &mut self.kind {
            Kind::One { call, .. } => call.poll(cx, node, now),
            Kind::Flush { calls } => calls.iter_mut().all(|call| call.poll(cx, node, now)),
            Kind::GetOne { .. } | Kind::Get { .. } => true,
        }
    }

    fn overdue(&mut self, node: &Node, now: &mut Now) {
        match &mut self.kind {
            Kind::One { call, .. } => call.overdue(node, now),
            Kind::Flush { calls } => calls.iter_mut().for_each(|call| call.overdue(node, now)),
            Kind::GetOne { .. } | Kind::Get { .. } => {}
        }
    }

    /// Encodes the answer into `out`, once the pass is settled.
    pub(crate) fn finish(self, node: &Node, out: &mut OutBuf, pass: &mut Pass) {
        let reply = &self.reply;
        let cmd = self.cmd;
        let metrics = node.metrics.as_ref();
        let mut answer =
            |response: Response<'_>| crate::metrics::encode(metrics, cmd, reply, &response, out);
        match self.kind {
            Kind::One { call, what, stored } => {
                let result = call.take();
                let family = match &result {
                    Ok(operation_result::Result::Store(r)) => r.family,
                    _ => 0,
                };
                let response = one_response(what, result);
                if let (Some(m), Some((key, len)), Response::Stored { .. }) =
                    (metrics, stored, &response)
                {
                    m.remote_stored(key, len, family);
                }
                answer(response);
            }
            Kind::GetOne { key, call, debug } => {
                let item = call.and_then(|(c, pos)| pass.item(c, pos));
                remote_item(&mut answer, metrics, key, item, debug);
                if !debug {
                    answer(Response::End);
                }
            }
            Kind::Flush { calls } => {
                let total = calls.len();
                let failed = calls
                    .into_iter()
                    .map(Outcome::take)
                    .filter(|result| {
                        !matches!(result, Ok(operation_result::Result::FlushAll(r))
                            if r.error() == ErrorCode::None)
                    })
                    .count();
                answer(if failed == 0 {
                    Response::Ok
                } else {
                    Response::Error(Error::Server(
                        format!("flush_all failed on {failed} of {} nodes", total + 1).into(),
                    ))
                });
            }
            Kind::Get { keys, slots, debug } => {
                let now = node.store.now();
                for (key, slot) in keys.into_iter().zip(slots) {
                    let response = match &slot {
                        Slot::Local(Some(found)) if debug => {
                            let item = &found.item;
                            debug_line(
                                &mut answer,
                                key,
                                item.ttl(now),
                                found.last_access,
                                item.cas(),
                                found.fetched,
                                item.total_size(),
                            );
                            continue;
                        }
                        Slot::Local(Some(found)) => exec::hit(metrics, key, found, now),
                        Slot::Local(None) => Response::Miss { key },
                        Slot::Remote { call, pos } => {
                            let item = pass.item(*call, *pos);
                            remote_item(&mut answer, metrics, key, item, debug);
                            continue;
                        }
                    };
                    answer(response);
                }
                if !debug {
                    answer(Response::End);
                }
            }
        }
    }
}

/// The items of a forwarded get's answer (`packed`: the key count and
/// CAS width it was asked with packed keys). A read that failed is no
/// items, all misses; a packed answer that does not fit its request is
/// `None`, a failure the caller counts.
fn got_items(
    result: Result<operation_result::Result, cluster::Error>,
    packed: Option<(usize, bool)>,
) -> Option<Got> {
    let r = match result {
        Ok(operation_result::Result::Get(r)) if r.error() == ErrorCode::None => r,
        _ => return Some(Got::Listed(Vec::new())),
    };
    match packed {
        None => Some(Got::Listed(r.items)),
        Some((keys, cas)) => packed::Items::new(r.packed_items, r.values, cas, keys)
            .ok()
            .map(|items| Got::Packed {
                items: Arc::new(items),
                start: 0,
            }),
    }
}

/// Answers one key of a get from the owner's item (`None`: a miss).
fn remote_item(
    answer: &mut impl FnMut(Response<'_>),
    metrics: Option<&Metrics>,
    key: &[u8],
    item: Option<RemoteItem<'_>>,
    debug: bool,
) {
    match item {
        Some(item) if debug => debug_line(
            answer,
            key,
            item.ttl,
            item.last_access,
            item.cas,
            item.fetched,
            item.size as usize,
        ),
        Some(item) => {
            if let Some(m) = metrics {
                m.remote_hit(key, item.value.as_slice().len(), item.family);
            }
            answer(Response::Hit(Hit {
                key,
                flags: item.flags,
                cas: item.cas,
                value: item.value,
                ttl: item.ttl,
                last_access: item.last_access,
                fetched: item.fetched,
            }));
        }
        None => answer(Response::Miss { key }),
    }
}

fn debug_line(
    answer: &mut impl FnMut(Response<'_>),
    key: &[u8],
    ttl: i64,
    last_access: u32,
    cas: u64,
    fetched: bool,
    size: usize,
) {
    let fields = format!(
        "exp={ttl} la={last_access} cas={cas} fetch={} cls=1 size={size}",
        if fetched { "yes" } else { "no" },
    );
    answer(Response::Debug {
        key,
        fields: &fields,
    });
}

/// The client's answer to one forwarded keyed operation.
fn one_response(
    what: One,
    result: Result<operation_result::Result, cluster::Error>,
) -> Response<'static> {
    use operation_result::Result as R;
    let refused =
        |code: i32| cluster::Error::from_code(code).map(|e| Response::Error(e.to_protocol()));
    match (what, result) {
        (One::TooLarge, _) => Response::Error(Error::TooLarge),
        (_, Err(e)) => Response::Error(e.to_protocol()),
        (One::Store, Ok(R::Store(r))) => refused(r.error).unwrap_or(match r.outcome() {
            StoreOutcome::Stored => Response::Stored { cas: r.cas },
            StoreOutcome::NotStored => Response::NotStored,
            StoreOutcome::Exists => Response::Exists,
            StoreOutcome::NotFound => Response::NotFound,
            StoreOutcome::Unspecified => Response::Error(Error::server("peer sent no outcome")),
        }),
        (One::Delete, Ok(R::Delete(r))) => refused(r.error).unwrap_or(match r.outcome() {
            DeleteOutcome::Deleted => Response::Deleted,
            DeleteOutcome::NotFound => Response::NotFound,
            DeleteOutcome::Exists => Response::Exists,
            DeleteOutcome::Unspecified => Response::Error(Error::server("peer sent no outcome")),
        }),
        (One::Arith, Ok(R::Arith(r))) => refused(r.error).unwrap_or(match r.outcome() {
            ArithOutcome::Value => Response::Number {
                value: r.value,
                cas: r.cas,
            },
            ArithOutcome::NotFound => Response::NotFound,
            ArithOutcome::Exists => Response::Exists,
            ArithOutcome::Unspecified => Response::Error(Error::server("peer sent no outcome")),
        }),
        (One::Touch, Ok(R::Touch(r))) => refused(r.error).unwrap_or(if r.found {
            Response::Touched {
                flags: r.flags,
                cas: r.cas,
            }
        } else {
            Response::NotFound
        }),
        (_, Ok(_)) => Response::Error(Error::server("peer answered another operation")),
    }
}
