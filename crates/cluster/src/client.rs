//! The peer client: one [`Peer`] handle per remote node, and the [`Peers`]
//! pool the router keeps them in, keyed by node name.
//!
//! One unary gRPC call costs about 80 µs on loopback, far more than the
//! store call it carries, so a handle does not make one call per operation.
//! Callers hand their [`Operation`]s to [`Peer::send`], which queues them on
//! a bounded channel to one task per peer. That task gathers whatever is
//! queued into a [`BatchRequest`](crate::peer::v1::BatchRequest) (up to [`ClientConfig::max_batch_ops`]
//! operations or [`ClientConfig::max_batch_bytes`] bytes), sends it down one
//! long-lived `Pipeline` stream as soon as the stream's window
//! ([`ClientConfig::max_in_flight`] unanswered batches) has room, and
//! routes each [`OperationResult`] back to its caller. Operations queued
//! back to back share one queue entry, an `OpGroup`: each is encoded
//! straight into the group's buffer, already framed for the batch, and the
//! group's results come back together, so a forwarded write costs no
//! allocation or channel of its own. No timer holds a batch back. Batches grow while earlier ones are in
//! flight, and when work reaches an idle task, the task first yields once
//! to the runtime: every connection already runnable then queues its
//! operations before the batch forms, so one batch carries a whole round
//! of the scheduler. The peer then wakes about half as often (each wake
//! costs it tens of µs on a busy core), for one scheduler round of delay.
//! Likewise, what queued while a batch was out goes as soon as the answer
//! is in, unless it is only a handful of keys ([`SMALL_BATCH_KEYS`]): then
//! it too waits one round. The owner answers a stream's batches in arrival
//! order, so operations sent to one peer are executed in the order `send`
//! was called (a shared get, below, runs where it opened).
//!
//! Plain gets are the bulk of the traffic, and one operation each would
//! cost both ends more than the lookups it carries. A caller instead joins
//! the peer's open [`SharedGet`] ([`Peer::join_get`]): every caller's packed
//! keys go out as one `GetRequest`, whose answer is checked and indexed
//! once and read by each caller at its own positions ([`Joined`]). A shared
//! get runs where it opened in the queue, which may be before operations
//! queued since: a caller whose get must follow an operation of its own
//! says so ([`Ticket::place`]), and its get joins only a shared get opened
//! after that operation. That keeps each caller's own order, which is all
//! a memcache connection can observe: another caller's operation queued
//! meanwhile is not yet answered, so the two may run in either order.
//!
//! # Failure
//! Every operation has a deadline ([`ClientConfig::deadline`]). When the
//! stream breaks, the peer answers out of turn, or the oldest unanswered
//! batch passes its deadline, the task fails every operation it holds
//! (sent or still queued) with [`Error::Unavailable`] at once, drops the
//! stream, and opens a new one for the next operation. The caller's side
//! also waits no longer than the deadline, so a stuck task still cannot
//! hang a client. The channel connects lazily, with a connect timeout, and
//! tonic reconnects it when a call finds it broken.
//!
//! The batching itself is plain data: [`assemble`] fills a batch from a
//! queue and [`deliver`] hands a response's results to their callers; both
//! are unit tested without a socket.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use prost::Message;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tonic::codegen::{Body as _, Service as _, http};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::codec::{self, Frames};
use crate::packed::{self, FEATURE_PACKED_GETS, Items};
use crate::peer::OMIT_CAS;
use crate::peer::v1::peer_client::PeerClient;
use crate::peer::v1::{
    BatchResponse, ErrorCode, GetRequest, Operation, OperationResult, operation, operation_result,
};
use crate::{Error, NodeName};

/// How a node talks to its peers. Every field bounds something: time, a
/// batch, or memory held for calls not yet answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Longest an operation may wait for its answer, queueing included.
    /// Past it the caller gets [`Error::Unavailable`]: a read answers a
    /// miss, a write `SERVER_ERROR`. Default 1 s.
    pub deadline: Duration,
    /// Longest a TCP connect to a peer may take. Default 250 ms.
    pub connect_timeout: Duration,
    /// HTTP/2 pings on an open connection this often, so a peer that
    /// vanished while the link was idle is noticed before the next call.
    /// Default 5 s.
    pub keepalive: Duration,
    /// Most operations in one batch. Default 256.
    pub max_batch_ops: usize,
    /// Most encoded bytes in one batch; a single larger operation is sent
    /// alone. Default 1 MiB.
    pub max_batch_bytes: usize,
    /// Batches sent on the stream and not yet answered. While the window is
    /// full, new operations queue and go out together in the next batch.
    /// Default 8.
    pub max_in_flight: usize,
    /// Operations queued for one peer and not yet sent; past it `send`
    /// answers [`Error::Unavailable`] at once instead of buffering without
    /// bound. Default 8192.
    pub max_queued: usize,
    /// Largest response accepted (a multi-get of large values). Default
    /// 256 MiB.
    pub max_response_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            deadline: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(250),
            keepalive: Duration::from_secs(5),
            max_batch_ops: 256,
            max_batch_bytes: 1 << 20,
            max_in_flight: 8,
            max_queued: 8192,
            max_response_bytes: 256 << 20,
        }
    }
}

// ---------------------------------------------------------------------------
// Errors: the one mapping between the cluster's `Error`, the peer API's
// `ErrorCode`, gRPC's `Status` and the memcache protocol's `Error`.

impl Error {
    /// The error an operation's `ErrorCode` stands for; `None` for
    /// `ERROR_CODE_NONE`. A code this node does not know (from a newer
    /// node) reads as `InvalidArgument`, as the proto asks.
    pub fn from_code(code: i32) -> Option<Error> {
        match ErrorCode::try_from(code) {
            Ok(ErrorCode::None) => None,
            Ok(code) => Some(Error::Peer(code)),
            Err(_) => Some(Error::Peer(ErrorCode::InvalidArgument)),
        }
    }

    /// The code an owner puts in an operation's answer for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Peer(code) => *code,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::InvalidNodeName { .. } | Error::InvalidPeerAddress { .. } => {
                ErrorCode::InvalidArgument
            }
        }
    }

    /// Whether the same request may succeed later (a dead or busy peer, a
    /// ring that disagrees for a moment). The router answers a read that
    /// failed this way as a miss; everything else as an error.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::Peer(ErrorCode::Unavailable | ErrorCode::NotOwner)
        )
    }

    /// What a memcache client is told when a forwarded operation failed
    /// this way (as `cluster::peer` documents).
    pub fn to_protocol(&self) -> protocol::Error {
        match self {
            Error::Peer(ErrorCode::TooLarge) => protocol::Error::TooLarge,
            Error::Peer(ErrorCode::OutOfMemory) => protocol::Error::OutOfMemory,
            Error::Peer(ErrorCode::NonNumeric) => protocol::Error::NonNumeric,
            Error::Peer(ErrorCode::FlushDisabled) => protocol::Error::FlushDisabled,
            e if e.is_transient() => protocol::Error::Unavailable("peer unavailable".into()),
            _ => protocol::Error::server("peer rejected the request"),
        }
    }
}

/// A gRPC status fails the whole call, never one operation: the peer could
/// not be reached, broke off, or missed the deadline (`Unavailable`), or
/// refused the call itself as malformed (`InvalidArgument`: version skew or
/// a bug, not worth retrying).
impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        use tonic::Code;
        match status.code() {
            Code::InvalidArgument | Code::Unimplemented | Code::OutOfRange => {
                Error::Peer(ErrorCode::InvalidArgument)
            }
            code => Error::Unavailable(format!("{code:?}: {}", status.message())),
        }
    }
}

/// The status an owner fails a whole call with.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        if e.is_transient() {
            tonic::Status::unavailable(e.to_string())
        } else {
            tonic::Status::invalid_argument(e.to_string())
        }
    }
}

// ---------------------------------------------------------------------------
// Batching, as plain data.

/// What a caller is handed for one operation.
type Answer = Result<OperationResult, Error>;

/// What callers queue for the peer's task, which then answers them
/// through it.
#[derive(Debug)]
enum Queued {
    /// Where a group of single operations sits in the queue: it keeps
    /// growing until the task takes it ([`Peer::enqueue`]).
    Ops(Hold<OpGroup>),
    /// Where a shared get sits in the queue: its keys keep growing until
    /// the task takes it ([`Peer::join_get`]).
    Shared(Hold<SharedGet>),
}

/// What callers wait on: one answer for all of them ([`OpGroup`],
/// [`SharedGet`]).
trait Awaited {
    /// Fails the callers, unless they have their answer.
    fn abandon(&self);
}

/// The hold of the queue, and then of the peer's task, on what callers
/// wait on. Dropped unanswered (the task stopped, or let go of it), it
/// fails them at once, where they would otherwise wait out their timers.
#[derive(Debug)]
struct Hold<T: Awaited>(Arc<T>);

impl<T: Awaited> Drop for Hold<T> {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

impl<T: Awaited> std::ops::Deref for Hold<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// What callers hear when the peer's task let go of their operation
/// without an answer.
fn abandoned() -> Error {
    Error::Unavailable("the peer's client task stopped".into())
}

/// Operations ready to go into a batch.
#[derive(Debug)]
struct Ready {
    /// The encoded operations, each framed as a `BatchRequest.operations`
    /// field ([`frame`]).
    framed: Bytes,
    /// How many.
    ops: usize,
    /// The version of the ring the callers routed them with (0: unknown,
    /// or not one for all).
    ring_version: u64,
    deadline: Instant,
    reply: Queued,
}

impl Queued {
    /// Hands the callers their results, taken from `results`; a missing
    /// one is an error.
    fn answer(self, ops: usize, results: &mut impl Iterator<Item = OperationResult>) {
        match self {
            Queued::Ops(group) => {
                let answers: Vec<_> = results.take(ops).map(Some).collect();
                group.resolve(if answers.len() == ops {
                    Ok(answers)
                } else {
                    Err(Error::Peer(ErrorCode::InvalidArgument))
                });
            }
            Queued::Shared(get) => {
                get.resolve(
                    results
                        .next()
                        .ok_or(Error::Peer(ErrorCode::InvalidArgument)),
                );
            }
        }
    }

    /// The operations as they go into a batch: a group or a shared get
    /// stops gathering here.
    fn ready(self) -> Ready {
        let ((framed, ops, ring_version), deadline) = match &self {
            Queued::Ops(group) => (group.take(), group.deadline),
            Queued::Shared(get) => {
                let (framed, ring_version) = get.take();
                ((framed, 1, ring_version), get.deadline)
            }
        };
        Ready {
            framed,
            ops,
            ring_version,
            deadline,
            reply: self,
        }
    }

    /// [`Queued::ready`] for work that woke the idle task, after one yield
    /// to the runtime: every task already runnable then queues its
    /// operations, and joins this shared get if it is one, before the batch
    /// forms. One batch then carries a whole round of the scheduler, and
    /// the peer wakes about half as often.
    async fn ready_after_this_round(self) -> Ready {
        tokio::task::yield_now().await;
        self.ready()
    }

    fn fail(self, e: &Error) {
        match self {
            Queued::Ops(group) => group.resolve(Err(e.clone())),
            Queued::Shared(get) => get.resolve(Err(e.clone())),
        }
    }
}

/// Appends `op` to `buf` as a `BatchRequest.operations` field: its tag,
/// its length, the message.
fn frame(op: &Operation, buf: &mut BytesMut) {
    frame_sized(op, op.encoded_len(), buf);
}

/// Bytes [`frame`] adds for an operation whose message is `len` bytes.
fn framed_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

/// [`frame`], with the message's length already known.
fn frame_sized(op: &Operation, len: usize, buf: &mut BytesMut) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    buf.reserve(framed_len(len));
    encode_key(3, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    op.encode_raw(buf);
}

/// A `BatchRequest` as this client sends it: the same fields, each
/// operation already encoded and framed by the caller that queued it
/// ([`frame`]). An embedded message and a `bytes` field share one wire
/// form (a length-delimited field), so the owner decodes this as the
/// `BatchRequest` it is. The peer's task then only concatenates: it
/// neither walks the operations to size them (prost sizes a nested
/// message once per level) nor drops them, and the caller lets go of the
/// slices of its read buffer that an operation held as soon as it is
/// queued. Only encoded, so its `Message` impl is written out.
#[derive(Debug, Default)]
struct EncodedBatch {
    id: u64,
    ring_version: u64,
    /// Runs of framed operations.
    framed: Vec<Bytes>,
}

impl Message for EncodedBatch {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        use prost::encoding::uint64;
        if self.id != 0 {
            uint64::encode(1, &self.id, buf);
        }
        if self.ring_version != 0 {
            uint64::encode(2, &self.ring_version, buf);
        }
        for run in &self.framed {
            buf.put_slice(run);
        }
    }

    /// Never decoded: the owner reads a `BatchRequest`.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        use prost::encoding::uint64;
        let scalar = |tag, v: &u64| {
            if *v != 0 {
                uint64::encoded_len(tag, v)
            } else {
                0
            }
        };
        scalar(1, &self.id)
            + scalar(2, &self.ring_version)
            + self.framed.iter().map(Bytes::len).sum::<usize>()
    }

    fn clear(&mut self) {
        *self = EncodedBatch::default();
    }
}

/// The `Pipeline` method, as the generated client names it.
const PIPELINE: &str = "/shoal.peer.v1.Peer/Pipeline";

/// Bounds of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_ops: usize,
    pub max_bytes: usize,
}

/// Fills one batch: the carried-over item (if any) first, then items
/// from `next` until the batch holds `max_ops` operations or the next item
/// would take it past `max_ops` or `max_bytes` (that one is left in
/// `carry`); `weigh` says how many operations and bytes an item is. The
/// first item always goes in, however large, so nothing is stuck. Empty
/// only when there was nothing to take. `expect` (how many items wait, as
/// far as the caller knows) sizes the batch's list up front.
pub(crate) fn assemble<T>(
    carry: &mut Option<T>,
    mut next: impl FnMut() -> Option<T>,
    weigh: impl Fn(&T) -> (usize, usize),
    limits: Limits,
    expect: usize,
) -> Vec<T> {
    let max_ops = limits.max_ops.max(1);
    let mut batch = Vec::with_capacity(expect.clamp(1, max_ops));
    let (mut ops, mut bytes) = (0usize, 0usize);
    while ops < max_ops {
        let Some(item) = carry.take().or_else(&mut next) else {
            break;
        };
        let (n, len) = weigh(&item);
        if !batch.is_empty()
            && (ops.saturating_add(n) > max_ops || bytes.saturating_add(len) > limits.max_bytes)
        {
            *carry = Some(item);
            break;
        }
        ops = ops.saturating_add(n);
        bytes = bytes.saturating_add(len);
        batch.push(item);
    }
    batch
}

/// A batch on the stream, waiting for its answer.
#[derive(Debug)]
struct InFlight {
    id: u64,
    /// The earliest deadline among its operations.
    deadline: Instant,
    /// Who the results go to, in order, and how many each takes.
    replies: Vec<(Queued, usize)>,
    /// How many results it expects.
    ops: usize,
}

/// Hands the results of `response` to the callers of the oldest batch in
/// flight, which it must answer (streams answer in order).
///
/// # Errors
/// A response for another batch, or with the wrong number of results,
/// means the stream can no longer be trusted: that batch's callers get
/// [`Error::Unavailable`] and so should every other one (the caller's job).
fn deliver(in_flight: &mut VecDeque<InFlight>, response: BatchResponse) -> Result<(), Error> {
    let Some(batch) = in_flight.pop_front() else {
        return Err(Error::Unavailable(format!(
            "answer to batch {} that was never sent",
            response.id
        )));
    };
    if response.id != batch.id || response.results.len() != batch.ops {
        let e = Error::Unavailable(format!(
            "batch {} of {} operations answered as batch {} with {} results",
            batch.id,
            batch.ops,
            response.id,
            response.results.len()
        ));
        fail(batch.replies.into_iter().map(|(reply, _)| reply), &e);
        return Err(e);
    }
    let mut results = response.results.into_iter();
    for (reply, ops) in batch.replies {
        reply.answer(ops, &mut results);
    }
    Ok(())
}

fn fail(replies: impl IntoIterator<Item = Queued>, e: &Error) {
    for reply in replies {
        reply.fail(e);
    }
}

// ---------------------------------------------------------------------------
// Single operations queued together.

/// Room a group's buffer starts with, and the most bytes it gathers
/// (less if a batch holds less).
const GROUP_FIRST_BYTES: usize = 4 << 10;
const GROUP_MAX_BYTES: usize = 256 << 10;

/// The single operations (writes, deletes, incr/decr, touches, ...)
/// queued back to back for one peer, gathered into one queue entry
/// ([`Peer::enqueue`]): each is encoded straight into the group's buffer,
/// framed for the batch, and their results come back together. An
/// operation then costs no allocation, channel or queue slot of its own.
/// An operation whose caller stopped waiting is still sent (a write runs
/// even if nobody reads its answer).
#[derive(Debug)]
struct OpGroup {
    /// Its place in the peer's queue ([`Ticket::place`]).
    place: u64,
    /// The first caller's deadline.
    deadline: Instant,
    /// Most operations and bytes it gathers: no more than one batch takes
    /// (and at most [`GROUP_MAX_BYTES`]).
    max_ops: usize,
    max_bytes: usize,
    /// The peer's count of operations queued and not yet taken, which
    /// this group's count is part of until the task takes it.
    queued: Arc<AtomicUsize>,
    state: Mutex<GroupState>,
}

#[derive(Debug)]
struct GroupState {
    /// The operations, framed ([`frame`]), until the peer's task takes them.
    framed: BytesMut,
    count: usize,
    /// The ring version every caller routed with (0: not one for all).
    ring_version: u64,
    /// Taken by the peer's task (or failed): no more operations join.
    taken: bool,
    /// One result per operation, each taken by its caller.
    answer: OneAnswer<Result<Vec<Option<OperationResult>>, Error>>,
}

impl OpGroup {
    /// An empty group of operations routed with `ring_version`.
    fn new(
        place: u64,
        deadline: Instant,
        (max_ops, max_bytes): (usize, usize),
        queued: Arc<AtomicUsize>,
        ring_version: u64,
    ) -> OpGroup {
        OpGroup {
            place,
            deadline,
            max_ops: max_ops.max(1),
            max_bytes,
            queued,
            state: Mutex::new(GroupState {
                framed: BytesMut::with_capacity(GROUP_FIRST_BYTES),
                count: 0,
                ring_version,
                taken: false,
                answer: OneAnswer::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `op`, unless the group was taken or is full; returns its place.
    /// A group is full at a batch's worth of operations or bytes; its
    /// first operation always joins, however large.
    fn join(&self, op: &Operation, ring_version: u64) -> Option<usize> {
        let len = op.encoded_len();
        let mut state = self.lock();
        if state.taken
            || state.count >= self.max_ops
            || (state.count > 0 && state.framed.len() + framed_len(len) > self.max_bytes)
        {
            return None;
        }
        frame_sized(op, len, &mut state.framed);
        if state.ring_version != ring_version {
            state.ring_version = 0;
        }
        state.count += 1;
        self.queued.fetch_add(1, Ordering::Relaxed);
        Some(state.count - 1)
    }

    /// No more operations join: its operations leave the peer's count of
    /// queued ones (once).
    fn close(&self, state: &mut GroupState) {
        if !state.taken {
            state.taken = true;
            self.queued.fetch_sub(state.count, Ordering::Relaxed);
        }
    }

    /// Stops the gathering: the framed operations, how many, and the ring
    /// version they were routed with.
    fn take(&self) -> (Bytes, usize, u64) {
        let mut state = self.lock();
        self.close(&mut state);
        let framed = std::mem::take(&mut state.framed).freeze();
        (framed, state.count, state.ring_version)
    }

    /// Keeps the results (the first answer only) and wakes every caller.
    fn resolve(&self, answer: Result<Vec<Option<OperationResult>>, Error>) {
        self.keep(|| answer);
    }

    /// Keeps the results `answer` makes, unless there are some, and wakes
    /// every caller.
    fn keep(&self, answer: impl FnOnce() -> Result<Vec<Option<OperationResult>>, Error>) {
        let wakers = {
            let mut state = self.lock();
            self.close(&mut state);
            state.answer.keep(answer)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl Awaited for OpGroup {
    fn abandon(&self) {
        self.keep(|| Err(abandoned()));
    }
}

// ---------------------------------------------------------------------------
// Gets shared by many callers.

/// Most keys one shared get gathers, and most bytes of packed keys.
const SHARED_MAX_KEYS: usize = 4096;
const SHARED_MAX_BYTES: usize = 256 << 10;
/// Room a shared get's key list starts with, so that joining seldom
/// grows (and copies) it.
const SHARED_FIRST_BYTES: usize = 4 << 10;

/// Callers a shared get has room for before its list of wakers grows: on
/// a busy node, every connection's pass joins the same one.
const SHARED_FIRST_WAKERS: usize = 64;

/// The plain gets of many callers to one peer, gathered into one packed
/// `GetRequest` ([`Peer::join_get`]): the peer decodes, serves and answers
/// one operation where it would have had one per caller, and the answer
/// is checked and indexed once, for all of them.
#[derive(Debug)]
pub struct SharedGet {
    /// Its place in the peer's queue ([`Ticket::place`]).
    place: u64,
    omit: u32,
    /// The first caller's deadline.
    deadline: Instant,
    state: Mutex<SharedState>,
}

#[derive(Debug)]
struct SharedState {
    /// Packed keys, until the peer's task takes them.
    keys: BytesMut,
    count: usize,
    /// The ring version every caller routed with (0: not one for all).
    ring_version: u64,
    /// Taken by the peer's task (or failed): no more keys join.
    taken: bool,
    answer: OneAnswer<Result<Arc<Items>, Error>>,
}

impl SharedGet {
    fn lock(&self) -> MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many keys it has gathered that the peer's task has not taken.
    fn gathering(&self) -> usize {
        let state = self.lock();
        if state.taken { 0 } else { state.count }
    }

    /// Stops the gathering: the `Operation` it became, framed
    /// ([`frame`]), and the ring version it was routed with.
    fn take(&self) -> (Bytes, u64) {
        let mut state = self.lock();
        state.taken = true;
        let op = Operation {
            op: Some(operation::Op::Get(GetRequest {
                packed_keys: std::mem::take(&mut state.keys).freeze(),
                omit: self.omit,
                ..GetRequest::default()
            })),
        };
        let mut framed = BytesMut::new();
        frame(&op, &mut framed);
        (framed.freeze(), state.ring_version)
    }

    /// Keeps the answer (the first one only) and wakes every caller. An
    /// answer comes only for a taken get, whose key count is final, so its
    /// items are checked without holding the lock.
    fn resolve(&self, answer: Answer) {
        let count = {
            let mut state = self.lock();
            state.taken = true;
            state.count
        };
        let cas = self.omit & OMIT_CAS == 0;
        let answer = answer.and_then(|r| match r.result {
            Some(operation_result::Result::Get(r)) => match Error::from_code(r.error) {
                Some(e) => Err(e),
                None => Items::new(r.packed_items, r.values, cas, count)
                    .map(Arc::new)
                    .map_err(|packed::Malformed| Error::Peer(ErrorCode::InvalidArgument)),
            },
            _ => Err(Error::Peer(ErrorCode::InvalidArgument)),
        });
        self.keep(|| answer);
    }

    /// Keeps the answer `answer` makes, unless there is one, and wakes
    /// every caller.
    fn keep(&self, answer: impl FnOnce() -> Result<Arc<Items>, Error>) {
        let wakers = {
            let mut state = self.lock();
            state.taken = true;
            state.answer.keep(answer)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl Awaited for SharedGet {
    fn abandon(&self) {
        self.keep(|| Err(abandoned()));
    }
}

/// One caller's part of a [`SharedGet`]: its keys are the answer's
/// `start()..start() + n`.
#[derive(Debug)]
pub struct Joined {
    get: Arc<SharedGet>,
    start: usize,
    /// When this caller joined.
    sent: Instant,
    /// Where this caller's waker sits in the get's list, once it is there.
    waker: Option<usize>,
}

impl Joined {
    /// The position of this caller's first key in the answer.
    pub fn start(&self) -> usize {
        self.start
    }

    /// When this caller joined: the start of its wait.
    pub fn sent(&self) -> Instant {
        self.sent
    }

    /// The checked answer, shared by every caller; an error when the get
    /// failed (or its answer did not fit it).
    pub fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<Items>, Error>> {
        let mut state = self.get.lock();
        match state.answer.poll(&mut self.waker, cx) {
            Some(answer) => Poll::Ready(answer.clone()),
            None => Poll::Pending,
        }
    }
}

/// The one answer the callers of an [`OpGroup`] or a [`SharedGet`] wait
/// for (the first kept; later ones are dropped), and their wakers.
#[derive(Debug)]
struct OneAnswer<A> {
    answer: Option<A>,
    wakers: Vec<Waker>,
}

impl<A> Default for OneAnswer<A> {
    fn default() -> Self {
        OneAnswer::with_room(0)
    }
}

impl<A> OneAnswer<A> {
    /// Room for `wakers` callers' wakers before the list grows.
    fn with_room(wakers: usize) -> Self {
        OneAnswer {
            answer: None,
            wakers: Vec::with_capacity(wakers),
        }
    }

    /// Keeps the answer `answer` makes, unless there is one; returns the
    /// wakers to wake (once the lock around this is let go).
    fn keep(&mut self, answer: impl FnOnce() -> A) -> Vec<Waker> {
        if self.answer.is_some() {
            return Vec::new();
        }
        self.answer = Some(answer());
        std::mem::take(&mut self.wakers)
    }

    /// The answer, if it is in; else the polling task's waker is listed,
    /// at the caller's own place `slot` once it has one, so a caller
    /// polled again is not listed twice.
    fn poll(&mut self, slot: &mut Option<usize>, cx: &Context<'_>) -> Option<&mut A> {
        if self.answer.is_none() {
            let wakers = &mut self.wakers;
            match *slot {
                Some(i) if wakers[i].will_wake(cx.waker()) => {}
                Some(i) => wakers[i] = cx.waker().clone(),
                None => {
                    *slot = Some(wakers.len());
                    wakers.push(cx.waker().clone());
                }
            }
        }
        self.answer.as_mut()
    }
}

/// The shared get opened last, and what was queued after it. Held weakly:
/// once taken and answered, a shared get must not keep its answer (slices
/// of a gRPC receive buffer) alive; a taken one no longer gathers keys.
#[derive(Debug, Default)]
struct Open {
    get: Option<std::sync::Weak<SharedGet>>,
    /// The place the next entry of the queue takes.
    next_place: u64,
    /// The group of single operations queued last, while nothing has been
    /// queued after it.
    ops: Option<std::sync::Weak<OpGroup>>,
}

impl Open {
    fn lock(open: &Mutex<Open>) -> MutexGuard<'_, Open> {
        open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The shared get opened last, unless it is answered and gone.
    fn last(&self) -> Option<Arc<SharedGet>> {
        self.get.as_ref().and_then(std::sync::Weak::upgrade)
    }

    /// A place for a new entry of the queue: places grow in queue order.
    fn take_place(&mut self) -> u64 {
        self.next_place += 1;
        self.next_place
    }
}

// ---------------------------------------------------------------------------
// One peer.

/// A handle on one peer: cheap to clone, shared by every task that
/// forwards to it. Dropping the last clone ends the peer's task once its
/// calls are answered.
#[derive(Debug, Clone)]
pub struct Peer {
    addr: Arc<str>,
    queue: mpsc::Sender<Queued>,
    /// For unary calls; the peer's task streams batches on the same
    /// channel.
    client: PeerClient<Channel>,
    deadline: Duration,
    /// The peer's stream answered with `FEATURE_PACKED_GETS` (cleared
    /// whenever a new stream starts: the peer may have been replaced).
    packs: Arc<AtomicBool>,
    /// The shared get being gathered; its lock also orders what is
    /// queued.
    open: Arc<Mutex<Open>>,
    /// Most operations and bytes one group gathers (a batch's worth).
    group_limits: (usize, usize),
    /// Operations in groups the task has not taken yet, and the most
    /// there may be ([`ClientConfig::max_queued`]).
    queued: Arc<AtomicUsize>,
    max_queued: usize,
}

impl Peer {
    /// A handle on the peer at `addr` (`host:port`; a name is resolved at
    /// each connect). Connects lazily: nothing happens on the network until
    /// the first call. Must be called within a tokio runtime (it spawns the
    /// peer's task).
    ///
    /// # Errors
    /// [`Error::InvalidPeerAddress`] if `addr` is not a `host:port`.
    pub fn connect(addr: &str, config: &ClientConfig) -> Result<Peer, Error> {
        let invalid = |reason: String| Error::InvalidPeerAddress {
            addr: addr.to_owned(),
            reason,
        };
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(config.keepalive)
            .keep_alive_timeout(config.deadline)
            .max_frame_size(crate::peer::MAX_FRAME_BYTES);
        let channel = endpoint.connect_lazy();
        let client =
            PeerClient::new(channel.clone()).max_decoding_message_size(config.max_response_bytes);
        let (queue, rx) = mpsc::channel(config.max_queued.max(1));
        let addr: Arc<str> = Arc::from(addr);
        let packs = Arc::new(AtomicBool::new(false));
        let open = Arc::<Mutex<Open>>::default();
        tokio::spawn(run(
            rx,
            channel,
            config.clone(),
            addr.clone(),
            packs.clone(),
            open.clone(),
        ));
        Ok(Peer {
            addr,
            queue,
            client,
            deadline: config.deadline,
            packs,
            open,
            group_limits: (
                config.max_batch_ops,
                config.max_batch_bytes.min(GROUP_MAX_BYTES),
            ),
            queued: Arc::default(),
            max_queued: config.max_queued.max(1),
        })
    }

    /// Whether the peer has said it reads packed gets
    /// ([`crate::packed`]): until it has, gets go to it as `keys`.
    pub fn packs(&self) -> bool {
        self.packs.load(Ordering::Relaxed)
    }

    /// The address this handle sends to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Queues `op` for the peer now — so operations are executed in the
    /// order `send` was called, even if their futures are awaited in
    /// another order — and returns its answer's future. The future never
    /// outlives the deadline.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the peer cannot be reached or answer in
    /// time, or too many operations are already queued for it; otherwise
    /// the peer's answer, whose per-operation `error` field the caller
    /// reads (see [`Error::from_code`]).
    pub fn send(
        &self,
        op: Operation,
    ) -> impl Future<Output = Result<OperationResult, Error>> + Send + 'static {
        let ticket = self.enqueue(op, 0, Instant::now());
        let addr = self.addr.clone();
        async move {
            let deadline = ticket.deadline;
            tokio::time::timeout_at(deadline, ticket)
                .await
                .unwrap_or_else(|_| Err(unavailable(&addr, "deadline exceeded")))
        }
    }

    /// [`Peer::send`] without a timer of its own: the peer's task answers
    /// (or fails) the operation by its deadline, so a caller with many
    /// tickets can await them all behind one timer of its own (a safety net
    /// should the task itself be stuck) instead of one each.
    ///
    /// `ring_version` is the version of the ring that sent `op` here (0:
    /// none): a batch whose operations all name the owner's own ring
    /// version is served without checking each key's owner again. `now`
    /// is the time, as the caller last read it (the deadline runs from
    /// it): a caller that hands over many operations at once reads the
    /// clock once for all of them.
    pub fn enqueue(&self, op: Operation, ring_version: u64, now: Instant) -> Ticket {
        let mut open = self.lock_open();
        let ticket = |group, index| Ticket {
            group,
            index,
            waker: None,
            deadline: now + self.deadline,
        };
        // The open group is the last thing queued: joining it keeps the
        // queue's order.
        let full = self.queued.load(Ordering::Relaxed) >= self.max_queued;
        if !full
            && let Some(group) = open.ops.as_ref().and_then(std::sync::Weak::upgrade)
            && group.deadline > now + self.deadline / 2
            && let Some(index) = group.join(&op, ring_version)
        {
            return ticket(group, index);
        }
        let group = Arc::new(OpGroup::new(
            open.take_place(),
            now + self.deadline,
            self.group_limits,
            self.queued.clone(),
            ring_version,
        ));
        let index = group
            .join(&op, ring_version)
            .expect("a new group takes its first operation");
        let queued = if full {
            Err(self.unavailable("too many operations queued"))
        } else {
            self.queue_up(Queued::Ops(Hold(group.clone())))
        };
        match queued {
            Ok(()) => open.ops = Some(Arc::downgrade(&group)),
            Err(e) => {
                open.ops = None;
                group.resolve(Err(e));
            }
        }
        ticket(group, index)
    }

    /// Adds the plain get of `count` packed `keys` ([`crate::packed`]) to
    /// the shared get being gathered for this peer, or opens one: the
    /// peer's task sends it as one operation, with every caller's keys,
    /// when it next fills a batch. The answer is the caller's part of it
    /// ([`Joined`]).
    ///
    /// A shared get runs where it opened in the queue, so a get that joins
    /// it may run before operations queued since. `after` is the place
    /// ([`Ticket::place`]) of the caller's latest operation that the get
    /// must follow (one naming any of its keys), if any: the get joins
    /// only a shared get opened after it, so no caller's get overtakes
    /// that caller's own operation on the same key. A caller joins only
    /// while at least half of its deadline remains on the shared get
    /// (whose deadline is its opener's), else it opens another. The caller
    /// bounds its wait with a timer of its own, as with [`Peer::enqueue`]:
    /// the peer's task fails the get by its deadline unless the task
    /// itself is stuck. `now` is as for [`Peer::enqueue`].
    pub fn join_get(
        &self,
        keys: &[u8],
        count: usize,
        omit: u32,
        ring_version: u64,
        now: Instant,
        after: Option<u64>,
    ) -> Joined {
        let mut open = self.lock_open();
        if let Some(get) = open.last()
            && get.omit == omit
            && get.deadline > now + self.deadline / 2
            && after.is_none_or(|after| get.place > after)
        {
            let mut state = get.lock();
            if !state.taken
                && state.count + count <= SHARED_MAX_KEYS
                && state.keys.len() + keys.len() <= SHARED_MAX_BYTES
            {
                state.keys.extend_from_slice(keys);
                let start = state.count;
                state.count += count;
                if state.ring_version != ring_version {
                    state.ring_version = 0;
                }
                drop(state);
                return Joined {
                    get,
                    start,
                    sent: now,
                    waker: None,
                };
            }
        }
        let get = Arc::new(SharedGet {
            place: open.take_place(),
            omit,
            deadline: now + self.deadline,
            state: Mutex::new(SharedState {
                keys: {
                    let mut list = BytesMut::with_capacity(keys.len().max(SHARED_FIRST_BYTES));
                    list.extend_from_slice(keys);
                    list
                },
                count,
                ring_version,
                taken: false,
                answer: OneAnswer::with_room(SHARED_FIRST_WAKERS),
            }),
        });
        match self.queue_up(Queued::Shared(Hold(get.clone()))) {
            Ok(()) => {
                open.get = Some(Arc::downgrade(&get));
                // Operations queued from now on go after this get.
                open.ops = None;
            }
            Err(e) => {
                open.get = None;
                get.resolve(Err(e));
            }
        }
        Joined {
            get,
            start: 0,
            sent: now,
            waker: None,
        }
    }

    fn lock_open(&self) -> MutexGuard<'_, Open> {
        Open::lock(&self.open)
    }

    /// Queues for the peer's task (under the `open` lock, so the queue's
    /// order is the order the shared get's rules saw).
    fn queue_up(&self, queued: Queued) -> Result<(), Error> {
        let (queued, e) = match self.queue.try_send(queued) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(q)) => (q, self.unavailable("too many operations queued")),
            Err(TrySendError::Closed(q)) => (q, self.unavailable("client task is gone")),
        };
        queued.fail(&e);
        Err(e)
    }

    /// [`Peer::send`], awaited.
    ///
    /// # Errors
    /// As [`Peer::send`].
    pub async fn call(&self, op: Operation) -> Result<OperationResult, Error> {
        self.send(op).await
    }

    /// One operation in its own unary call, with the deadline: for rare
    /// operations and tools. It is not ordered with operations sent through
    /// [`Peer::send`].
    ///
    /// # Errors
    /// As [`Peer::send`].
    pub async fn unary(&self, op: Operation) -> Result<OperationResult, Error> {
        use operation::Op;
        use operation_result::Result as R;
        let mut client = self.client.clone();
        let deadline = self.deadline;
        let call = async move {
            fn request<T>(msg: T, deadline: Duration) -> tonic::Request<T> {
                let mut request = tonic::Request::new(msg);
                request.set_timeout(deadline);
                request
            }
            let result = match op.op {
                Some(Op::Get(r)) => R::Get(client.get(request(r, deadline)).await?.into_inner()),
                Some(Op::Store(r)) => {
                    R::Store(client.store(request(r, deadline)).await?.into_inner())
                }
                Some(Op::Delete(r)) => {
                    R::Delete(client.delete(request(r, deadline)).await?.into_inner())
                }
                Some(Op::Arith(r)) => {
                    R::Arith(client.arith(request(r, deadline)).await?.into_inner())
                }
                Some(Op::Touch(r)) => {
                    R::Touch(client.touch(request(r, deadline)).await?.into_inner())
                }
                Some(Op::FlushAll(r)) => {
                    R::FlushAll(client.flush_all(request(r, deadline)).await?.into_inner())
                }
                Some(Op::Stats(r)) => {
                    R::Stats(client.stats(request(r, deadline)).await?.into_inner())
                }
                None => return Err(Error::Peer(ErrorCode::InvalidArgument)),
            };
            Ok::<_, Error>(OperationResult {
                result: Some(result),
            })
        };
        match tokio::time::timeout(deadline, call).await {
            Ok(Err(Error::Unavailable(why))) => Err(self.unavailable(&why)),
            Ok(answer) => answer,
            Err(_) => Err(self.unavailable("deadline exceeded")),
        }
    }

    /// The generated client on this peer's channel, for what the handle
    /// does not wrap. Set a deadline on every request made with it.
    pub fn client(&self) -> PeerClient<Channel> {
        self.client.clone()
    }

    fn unavailable(&self, why: &str) -> Error {
        unavailable(&self.addr, why)
    }
}

fn unavailable(addr: &str, why: &str) -> Error {
    Error::Unavailable(format!("peer {addr}: {why}"))
}

/// One operation queued for a peer ([`Peer::enqueue`]): resolves to its
/// answer, or to [`Error::Unavailable`] once the peer's task gave up on it
/// (by its group's deadline: the first caller's send time plus the peer
/// deadline) or stopped.
#[derive(Debug)]
pub struct Ticket {
    group: Arc<OpGroup>,
    /// Its place in the group.
    index: usize,
    /// Where its waker sits in the group's list, once it is there.
    waker: Option<usize>,
    deadline: Instant,
}

impl Ticket {
    /// When the operation's wait ends: its send time, as its caller gave
    /// it, plus the peer deadline. The peer's task fails it by then if no
    /// answer came (by its group's deadline, which is that of the group's
    /// first caller: the same, or up to a caller's pass earlier).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Its operation's place in the peer's queue (shared with the other
    /// operations of its group): a get that must run after it passes this
    /// to [`Peer::join_get`].
    pub fn place(&self) -> u64 {
        self.group.place
    }
}

impl Future for Ticket {
    type Output = Result<OperationResult, Error>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = this.group.lock();
        match state.answer.poll(&mut this.waker, cx) {
            Some(Ok(results)) => Poll::Ready(
                results
                    .get_mut(this.index)
                    .and_then(Option::take)
                    .ok_or_else(|| Error::Unavailable("answer already taken".into())),
            ),
            Some(Err(e)) => Poll::Ready(Err(e.clone())),
            None => Poll::Pending,
        }
    }
}

/// The peer's task: waits for work, runs a pipeline session until the
/// stream ends or fails, fails whatever it still holds, and starts over on
/// the next operation. Ends when every handle is gone and nothing is left.
async fn run(
    mut queue: mpsc::Receiver<Queued>,
    channel: Channel,
    config: ClientConfig,
    addr: Arc<str>,
    packs: Arc<AtomicBool>,
    open: Arc<Mutex<Open>>,
) {
    let mut carry = None;
    loop {
        if carry.is_none() {
            match queue.recv().await {
                Some(q) => carry = Some(q.ready_after_this_round().await),
                None => return,
            }
        }
        // A new stream may reach another process under the same address.
        packs.store(false, Ordering::Relaxed);
        let session = session(
            &mut queue,
            &mut carry,
            channel.clone(),
            &config,
            &addr,
            &packs,
            &open,
        );
        let why = match session.await {
            End::Closed => return,
            End::Idle => continue,
            End::Broken(why) => why,
        };
        let e = unavailable(&addr, &why);
        // Everything queued before the failure was known fails with it:
        // promptly, rather than after a reconnect attempt each.
        fail(carry.take().map(|r| r.reply), &e);
        while let Ok(q) = queue.try_recv() {
            q.fail(&e);
        }
    }
}

/// Opens the `Pipeline` stream: the request body sends `batches`, each a
/// gRPC message; the answers are read by [`Answers`]. The call is the one
/// tonic's generated client would make (the same method, headers and
/// framing, on the same channel), but its answers are not read through
/// tonic's message stream, which copies all their bytes once more (see
/// [`Frames`]).
async fn pipeline(
    channel: &mut Channel,
    batches: mpsc::Receiver<EncodedBatch>,
    max_response: usize,
) -> Result<Answers, Status> {
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(http::Uri::from_static(PIPELINE))
        .version(http::Version::HTTP_2)
        .header(http::header::TE, "trailers")
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(tonic::body::Body::new(Batches(batches)))
        .map_err(|e| Status::internal(e.to_string()))?;
    let response = channel
        .call(request)
        .await
        .map_err(|e| Status::from_error(Box::new(e)))?;
    let (parts, body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(Status::unavailable(format!("HTTP status {}", parts.status)));
    }
    // A status in the headers: an answer with no messages ("trailers only").
    let ended = match Status::from_header_map(&parts.headers) {
        Some(status) if status.code() != Code::Ok => return Err(status),
        Some(_) => true,
        None => false,
    };
    Ok(Answers {
        body,
        frames: Frames::new(max_response),
        ended,
    })
}

/// The request body of a `Pipeline` call: each batch as a gRPC message.
struct Batches(mpsc::Receiver<EncodedBatch>);

impl http_body::Body for Batches {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.0
            .poll_recv(cx)
            .map(|batch| batch.map(|batch| Ok(Frame::data(codec::frame_message(&batch)))))
    }
}

/// The answers of a `Pipeline` call, read from its response body.
struct Answers {
    body: tonic::body::Body,
    frames: Frames,
    /// The body's status has been read.
    ended: bool,
}

impl Answers {
    /// The next answer, expected to carry `results` results (its list is
    /// sized for them up front rather than grown, and copied, as they are
    /// decoded); `None` once the peer has ended the stream with an OK
    /// status. Cancel-safe: a frame read is kept in `frames` before
    /// anything awaits again.
    async fn message(&mut self, results: usize) -> Result<Option<BatchResponse>, Status> {
        const NO_STATUS: &str = "the stream ended without a status";
        loop {
            if let Some(message) = self.frames.next_message()? {
                let mut response = BatchResponse {
                    results: Vec::with_capacity(results),
                    ..BatchResponse::default()
                };
                return response
                    .merge(message)
                    .map(|()| Some(response))
                    .map_err(|e| Status::internal(e.to_string()));
            }
            if self.ended {
                return Ok(None);
            }
            let frame = std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await;
            let frame = match frame {
                Some(Ok(frame)) => frame,
                Some(Err(status)) => return Err(status),
                None => return Err(Status::internal(NO_STATUS)),
            };
            let frame = match frame.into_data() {
                Ok(data) => {
                    self.frames.push(data);
                    continue;
                }
                Err(frame) => frame,
            };
            let Ok(trailers) = frame.into_trailers() else {
                continue;
            };
            self.ended = true;
            match Status::from_header_map(&trailers) {
                Some(status) if status.code() != Code::Ok => return Err(status),
                Some(_) if !self.frames.is_empty() => {
                    return Err(Status::internal("the stream ended inside a message"));
                }
                Some(_) => {}
                None => return Err(Status::internal(NO_STATUS)),
            }
        }
    }
}

/// Why a pipeline session ended.
#[derive(Debug)]
enum End {
    /// Every handle is gone and every batch was answered.
    Closed,
    /// Nothing was left to send (the task starts a session with work in
    /// hand, so this does not happen as things stand).
    Idle,
    /// The stream is unusable; every batch in flight has been failed.
    Broken(String),
}

/// A batch of fewer operations and keys than this, ready when an answer
/// arrives, first waits one round of the scheduler for company. A wake
/// costs the peer about as much as serving a hundred keys (about 25 µs on
/// a busy core), and with few requests in flight (clients that do not
/// pipeline, each waiting on its one request) batches stay small unless
/// they wait. Measured on one core, 50 connections: without pipelining,
/// owner wakes fell from 33 to 20 per 1000 requests and throughput rose
/// 12%; pipelined 16 deep, no change either way. 32 and 64 cost the
/// pipelined case about 2%.
const SMALL_BATCH_KEYS: usize = 16;

/// About how many operations and keys wait for the peer: the queue, and
/// the keys of the open shared get.
fn waiting_keys(queue: &mpsc::Receiver<Queued>, open: &Mutex<Open>) -> usize {
    let last = Open::lock(open).last();
    queue.len() + last.map_or(0, |get| get.gathering())
}

/// Takes the next queued operations.
fn next_ready(queue: &mut mpsc::Receiver<Queued>) -> Option<Ready> {
    queue.try_recv().ok().map(Queued::ready)
}

/// One `Pipeline` stream: sends batches as the window allows and routes
/// the answers, until the stream breaks or every handle is gone.
async fn session(
    queue: &mut mpsc::Receiver<Queued>,
    carry: &mut Option<Ready>,
    mut channel: Channel,
    config: &ClientConfig,
    addr: &str,
    packs: &AtomicBool,
    open: &Mutex<Open>,
) -> End {
    let limits = Limits {
        max_ops: config.max_batch_ops,
        max_bytes: config.max_batch_bytes,
    };
    let window = config.max_in_flight.max(1);
    let (body, body_rx) = mpsc::channel::<EncodedBatch>(window);
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut next_id = 0u64;
    let mut closed = false;

    // Queue the batches available now, then place the call: the first
    // batch travels with the call's headers.
    let mut send_ready = |in_flight: &mut VecDeque<InFlight>,
                          carry: &mut Option<Ready>,
                          queue: &mut mpsc::Receiver<Queued>|
     -> Result<(), String> {
        while in_flight.len() < window {
            let waiting = queue.len() + usize::from(carry.is_some());
            let batch = assemble(
                carry,
                || next_ready(queue),
                |q| (q.ops, q.framed.len()),
                limits,
                waiting,
            );
            if batch.is_empty() {
                break;
            }
            next_id += 1;
            let mut framed = Vec::with_capacity(batch.len());
            let mut replies = Vec::with_capacity(batch.len());
            let mut ops = 0;
            let mut deadline = batch[0].deadline;
            // The batch names a ring version only if all its operations
            // were routed with that one.
            let mut ring_version = batch[0].ring_version;
            for q in batch {
                deadline = deadline.min(q.deadline);
                if q.ring_version != ring_version {
                    ring_version = 0;
                }
                framed.push(q.framed);
                replies.push((q.reply, q.ops));
                ops += q.ops;
            }
            let request = EncodedBatch {
                id: next_id,
                ring_version,
                framed,
            };
            in_flight.push_back(InFlight {
                id: next_id,
                deadline,
                replies,
                ops,
            });
            // Never full: the channel holds at most the batches in flight.
            body.try_send(request)
                .map_err(|_| "the stream's request body is gone".to_owned())?;
        }
        Ok(())
    };

    let result: Result<End, String> = async {
        send_ready(&mut in_flight, carry, queue)?;
        let Some(first_deadline) = in_flight.front().map(|b| b.deadline) else {
            return Ok(End::Idle);
        };
        let call = pipeline(&mut channel, body_rx, config.max_response_bytes);
        let mut answers = match tokio::time::timeout_at(first_deadline, call).await {
            Ok(Ok(answers)) => answers,
            Ok(Err(status)) => return Err(Error::from(status).to_string()),
            Err(_) => return Err("deadline exceeded while connecting".to_owned()),
        };
        // One timer for the oldest batch's deadline, moved only when the
        // oldest batch changes.
        let timer = tokio::time::sleep_until(first_deadline);
        tokio::pin!(timer);
        let mut armed = first_deadline;
        loop {
            let front_deadline = in_flight.front().map(|b| b.deadline);
            if let Some(deadline) = front_deadline.filter(|&d| d != armed) {
                timer.as_mut().reset(deadline);
                armed = deadline;
            }
            // The oldest batch's answer is the next to come.
            let expect = in_flight.front().map_or(0, |b| b.ops);
            tokio::select! {
                answer = answers.message(expect) => match answer {
                    Ok(Some(response)) => {
                        if response.features & FEATURE_PACKED_GETS != 0 {
                            packs.store(true, Ordering::Relaxed);
                        }
                        deliver(&mut in_flight, response).map_err(|e| e.to_string())?;
                        // What queued meanwhile goes out now, unless it is
                        // too little to be worth a wake of the peer: then
                        // it waits one round of the scheduler for company.
                        if carry.is_none()
                            && !queue.is_empty()
                            && waiting_keys(queue, open) < SMALL_BATCH_KEYS
                        {
                            tokio::task::yield_now().await;
                        }
                    }
                    Ok(None) => return Err("the peer ended the stream".to_owned()),
                    Err(status) => return Err(Error::from(status).to_string()),
                },
                () = &mut timer, if front_deadline.is_some() => {
                    return Err("deadline exceeded".to_owned());
                }
                queued = queue.recv(), if !closed && carry.is_none() && in_flight.len() < window => {
                    match queued {
                        Some(q) => *carry = Some(q.ready_after_this_round().await),
                        None => closed = true,
                    }
                }
            }
            send_ready(&mut in_flight, carry, queue)?;
            if closed && in_flight.is_empty() && carry.is_none() {
                return Ok(End::Closed);
            }
        }
    }
    .await;
    match result {
        Ok(end) => end,
        Err(why) => {
            let e = unavailable(addr, &why);
            for batch in in_flight.drain(..) {
                fail(batch.replies.into_iter().map(|(reply, _)| reply), &e);
            }
            End::Broken(why)
        }
    }
}

// ---------------------------------------------------------------------------
// The pool.

/// The peers a node forwards to, by node name. The router asks it for the
/// owner's handle on every forward; membership removes a node that left.
#[derive(Debug)]
pub struct Peers {
    config: ClientConfig,
    peers: Mutex<HashMap<NodeName, Peer>>,
}

impl Peers {
    pub fn new(config: ClientConfig) -> Peers {
        Peers {
            config,
            peers: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The handle on `name`, created (without connecting) if there is none
    /// or if the node now announces another address (a replaced pod keeps
    /// its name, not its IP).
    ///
    /// # Errors
    /// [`Error::InvalidPeerAddress`] if `addr` is not a `host:port`.
    pub fn get_or_connect(&self, name: &NodeName, addr: &str) -> Result<Peer, Error> {
        let mut peers = self.lock();
        if let Some(peer) = peers.get(name).filter(|p| p.addr() == addr) {
            return Ok(peer.clone());
        }
        let peer = Peer::connect(addr, &self.config)?;
        peers.insert(name.clone(), peer.clone());
        Ok(peer)
    }

    /// The handle on `name`, if there is one.
    pub fn get(&self, name: &NodeName) -> Option<Peer> {
        self.lock().get(name).cloned()
    }

    /// Forgets `name` (it left or was declared down). Calls already made
    /// through its handle still get their answers or errors.
    pub fn remove(&self, name: &NodeName) -> Option<Peer> {
        self.lock().remove(name)
    }

    /// The names of the peers held, in no particular order.
    pub fn names(&self) -> Vec<NodeName> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeName, Peer>> {
        // Only map operations run under the lock; a panic cannot leave the
        // map half-changed.
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::v1::{BatchRequest, StoreRequest};

    #[test]
    fn an_encoded_batch_is_read_as_the_batch_request_it_stands_for() {
        let operations = vec![
            Operation {
                op: Some(operation::Op::Get(GetRequest {
                    packed_keys: Bytes::from_static(b"\x01a\x02bc"),
                    omit: 3,
                    ..Default::default()
                })),
            },
            Operation {
                op: Some(operation::Op::Store(StoreRequest {
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from(vec![7u8; 300]),
                    flags: 9,
                    ..Default::default()
                })),
            },
            Operation::default(),
        ];
        // The first operation framed alone, the other two as one run.
        let run = |ops: &[Operation]| {
            let mut framed = BytesMut::new();
            ops.iter().for_each(|op| frame(op, &mut framed));
            framed.freeze()
        };
        let encoded = EncodedBatch {
            id: 41,
            ring_version: 1 << 40,
            framed: vec![run(&operations[..1]), run(&operations[1..])],
        };
        let expected = BatchRequest {
            id: 41,
            ring_version: 1 << 40,
            operations,
        };
        let wire = encoded.encode_to_vec();
        assert_eq!(wire, expected.encode_to_vec());
        assert_eq!(BatchRequest::decode(&wire[..]).unwrap(), expected);
        assert_eq!(encoded.encoded_len(), wire.len());
        let framed: usize = encoded.framed.iter().map(Bytes::len).sum();
        assert_eq!(framed + 1 + 1 + 1 + 6, wire.len());
    }

    const LIMITS: Limits = Limits {
        max_ops: 4,
        max_bytes: 100,
    };

    fn fill(carry: &mut Option<usize>, queue: &mut VecDeque<usize>, limits: Limits) -> Vec<usize> {
        let expect = queue.len();
        assemble(carry, || queue.pop_front(), |&n| (1, n), limits, expect)
    }

    #[test]
    fn a_batch_takes_what_is_queued_up_to_the_op_limit() {
        let mut queue: VecDeque<usize> = (1..=10).collect();
        let mut carry = None;
        assert_eq!(fill(&mut carry, &mut queue, LIMITS), [1, 2, 3, 4]);
        assert_eq!(fill(&mut carry, &mut queue, LIMITS), [5, 6, 7, 8]);
        assert_eq!(fill(&mut carry, &mut queue, LIMITS), [9, 10]);
        assert!(fill(&mut carry, &mut queue, LIMITS).is_empty());
        assert!(carry.is_none());
    }

    #[test]
    fn the_op_that_would_overflow_the_bytes_waits_for_the_next_batch() {
        let mut queue = VecDeque::from([40, 50, 20, 30]);
        let mut carry = None;
        assert_eq!(fill(&mut carry, &mut queue, LIMITS), [40, 50]);
        assert_eq!(carry, Some(20));
        // Order is kept: the carried item leads the next batch.
        assert_eq!(fill(&mut carry, &mut queue, LIMITS), [20, 30]);
        assert!(carry.is_none() && queue.is_empty());
    }

    #[test]
    fn an_op_larger_than_a_batch_goes_alone() {
        let mut queue = VecDeque::from([10, 500, 10]);
        let mut carry = None;
        assert_eq!(fill(&mut carry, &mut queue, LIMITS), [10]);
        assert_eq!(fill(&mut carry, &mut queue, LIMITS), [500]);
        assert_eq!(fill(&mut carry, &mut queue, LIMITS), [10]);
    }

    #[test]
    fn a_zero_op_limit_still_makes_progress() {
        let mut queue = VecDeque::from([1, 2]);
        let mut carry = None;
        let limits = Limits {
            max_ops: 0,
            max_bytes: 0,
        };
        assert_eq!(fill(&mut carry, &mut queue, limits), [1]);
        assert_eq!(fill(&mut carry, &mut queue, limits), [2]);
    }

    /// A batch in flight whose `n` operations are one group, and their
    /// tickets.
    fn in_flight(id: u64, n: usize) -> (InFlight, Vec<Ticket>) {
        let now = Instant::now();
        let group = Arc::new(empty_group(n, GROUP_MAX_BYTES));
        let tickets = (0..n)
            .map(|_| Ticket {
                index: group.join(&Operation::default(), 0).unwrap(),
                group: group.clone(),
                waker: None,
                deadline: now,
            })
            .collect();
        assert!(group.join(&Operation::default(), 0).is_none(), "group full");
        let batch = InFlight {
            id,
            deadline: now,
            replies: vec![(Queued::Ops(Hold(group)), n)],
            ops: n,
        };
        (batch, tickets)
    }

    #[test]
    fn a_group_counts_its_operations_as_queued_until_taken() {
        let (batch, _tickets) = in_flight(1, 3);
        let (Queued::Ops(group), 3) = &batch.replies[0] else {
            panic!("one group of three");
        };
        assert_eq!(group.queued.load(Ordering::Relaxed), 3);
        let (framed, ops, _) = group.take();
        assert_eq!(ops, 3);
        assert_eq!(framed.len(), 3 * 2, "three empty operations, framed");
        assert_eq!(group.queued.load(Ordering::Relaxed), 0);
        // Answered (or failed) after it was taken: counted out once only.
        group.resolve(Err(Error::Unavailable("gone".into())));
        assert_eq!(group.queued.load(Ordering::Relaxed), 0);
        assert!(group.join(&Operation::default(), 0).is_none());
    }

    #[test]
    fn callers_hear_at_once_when_the_task_lets_go_of_their_operations() {
        let (batch, mut tickets) = in_flight(1, 2);
        assert!(answer(&mut tickets[0]).is_none());
        drop(batch);
        for ticket in &mut tickets {
            assert!(matches!(answer(ticket), Some(Err(Error::Unavailable(_)))));
        }
        // An answered group keeps its answer when let go of.
        let (batch, mut tickets) = in_flight(2, 1);
        let mut queue = VecDeque::from([batch]);
        let response = BatchResponse {
            id: 2,
            results: vec![stored(7)],
            ..Default::default()
        };
        deliver(&mut queue, response).unwrap();
        assert_eq!(answer(&mut tickets[0]), Some(Ok(stored(7))));
    }

    #[test]
    fn a_group_holds_a_batch_of_bytes_but_always_its_first_operation() {
        let store = |len: usize| Operation {
            op: Some(operation::Op::Store(StoreRequest {
                key: Bytes::from_static(b"k"),
                value: Bytes::from(vec![1u8; len]),
                ..Default::default()
            })),
        };
        let framed = |op: &Operation| framed_len(op.encoded_len());
        let group = empty_group(10, 100);
        assert_eq!(group.join(&store(500), 0), Some(0), "first, however large");
        assert_eq!(group.join(&store(1), 0), None, "past the bytes");
        let (half, over) = (store(40), store(45));
        assert!(2 * framed(&half) <= 100 && 2 * framed(&over) > 100);
        let group = empty_group(10, 100);
        assert_eq!(group.join(&half, 0), Some(0));
        assert_eq!(group.join(&half, 0), Some(1));
        let group = empty_group(10, 100);
        assert_eq!(group.join(&over, 0), Some(0));
        assert_eq!(group.join(&over, 0), None, "two would pass 100 bytes");
    }

    fn empty_group(max_ops: usize, max_bytes: usize) -> OpGroup {
        OpGroup::new(1, Instant::now(), (max_ops, max_bytes), Arc::default(), 0)
    }

    /// A ticket's answer, if it has one.
    fn answer(ticket: &mut Ticket) -> Option<Result<OperationResult, Error>> {
        let mut cx = Context::from_waker(Waker::noop());
        match std::pin::Pin::new(ticket).poll(&mut cx) {
            Poll::Ready(answer) => Some(answer),
            Poll::Pending => None,
        }
    }

    fn stored(cas: u64) -> OperationResult {
        OperationResult {
            result: Some(operation_result::Result::Store(
                crate::peer::v1::StoreResponse {
                    cas,
                    ..Default::default()
                },
            )),
        }
    }

    #[test]
    fn results_go_to_their_callers_in_order() {
        let (a, mut a_rx) = in_flight(1, 2);
        let (b, mut b_rx) = in_flight(2, 1);
        let mut queue = VecDeque::from([a, b]);
        let response = |id, cases: &[u64]| BatchResponse {
            id,
            ring_version: 0,
            results: cases.iter().map(|&c| stored(c)).collect(),
            features: 0,
        };
        assert!(answer(&mut a_rx[0]).is_none(), "answered before its batch");
        deliver(&mut queue, response(1, &[10, 11])).unwrap();
        assert!(answer(&mut b_rx[0]).is_none(), "answered by another batch");
        deliver(&mut queue, response(2, &[20])).unwrap();
        assert!(queue.is_empty());
        let got: Vec<_> = a_rx
            .iter_mut()
            .chain(b_rx.iter_mut())
            .map(|ticket| answer(ticket).unwrap().unwrap())
            .collect();
        assert_eq!(got, [stored(10), stored(11), stored(20)]);
        // Each result is its caller's alone.
        assert!(answer(&mut a_rx[1]).unwrap().is_err());
    }

    #[test]
    fn a_mismatched_answer_fails_the_batch() {
        for response in [
            // Another batch's id.
            BatchResponse {
                id: 2,
                ring_version: 0,
                results: vec![stored(1)],
                features: 0,
            },
            // Too few results.
            BatchResponse {
                id: 1,
                ring_version: 0,
                results: vec![],
                features: 0,
            },
        ] {
            let (a, mut a_rx) = in_flight(1, 1);
            let mut queue = VecDeque::from([a]);
            let e = deliver(&mut queue, response).unwrap_err();
            assert!(e.is_transient());
            assert_eq!(answer(&mut a_rx[0]), Some(Err(e)));
        }
        // An answer with nothing in flight.
        let e = deliver(&mut VecDeque::new(), BatchResponse::default()).unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)));
    }

    #[test]
    fn error_codes_map_onto_memcache_errors() {
        use protocol::Error as P;
        assert_eq!(Error::from_code(ErrorCode::None as i32), None);
        let cases = [
            (ErrorCode::TooLarge, P::TooLarge),
            (ErrorCode::OutOfMemory, P::OutOfMemory),
            (ErrorCode::NonNumeric, P::NonNumeric),
            (ErrorCode::FlushDisabled, P::FlushDisabled),
            (
                ErrorCode::Unavailable,
                P::Unavailable("peer unavailable".into()),
            ),
            (
                ErrorCode::NotOwner,
                P::Unavailable("peer unavailable".into()),
            ),
            (
                ErrorCode::InvalidArgument,
                P::server("peer rejected the request"),
            ),
        ];
        for (code, expected) in cases {
            let e = Error::from_code(code as i32).unwrap();
            assert_eq!(e.code(), code);
            assert_eq!(e.to_protocol(), expected, "{code:?}");
        }
        // A code from a newer node.
        assert_eq!(
            Error::from_code(99),
            Some(Error::Peer(ErrorCode::InvalidArgument))
        );
    }

    #[test]
    fn statuses_map_onto_errors_and_back() {
        use tonic::{Code, Status};
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::Cancelled,
        ] {
            let e = Error::from(Status::new(code, "x"));
            assert!(e.is_transient(), "{code:?}");
            assert_eq!(tonic::Status::from(e).code(), Code::Unavailable);
        }
        let e = Error::from(Status::invalid_argument("bad batch"));
        assert_eq!(e, Error::Peer(ErrorCode::InvalidArgument));
        assert!(!e.is_transient());
        assert_eq!(tonic::Status::from(e).code(), Code::InvalidArgument);
    }
}
