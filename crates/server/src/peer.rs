//! The peer gRPC API, served: what this node does when another node
//! forwards it a client's operation, asks it to flush, or asks for its
//! stats.
//!
//! Every RPC runs through one synchronous [`execute`] (the unary calls
//! through its typed parts): each store call is a short critical section,
//! so a whole batch runs inline on the tonic task and no lock is held
//! across an `.await`. A `Pipeline` stream's batches are executed and
//! answered one at a time, in arrival order, so one caller's pipelined
//! `set k` then `get k` stay in order.
//!
//! The mapping onto the store is the one `cluster::peer` documents. Work
//! done here is counted as `peer_ops`, not as client commands (`cmd_get`,
//! `cmd_set`, ...): those are counted where the client is; the store's own
//! figures (hits, items, evictions) are the owner's, as everywhere.
//!
//! Keys and values arrive as `Bytes` slices of the gRPC receive buffer.
//! `Store::store` copies key and value into the item's own allocation, and
//! nothing here keeps a decoded `Bytes` past the call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use cluster::packed;
use cluster::peer::v1::peer_server::{Peer, PeerServer};
use cluster::peer::v1::{
    ArithOp, ArithOutcome, ArithRequest, ArithResponse, BatchRequest, BatchResponse, DeleteOutcome,
    DeleteRequest, DeleteResponse, ErrorCode, FlushAllRequest, FlushAllResponse, GetRequest,
    GetResponse, Item, Operation, OperationResult, Stat, StatsRequest, StatsResponse, StoreMode,
    StoreOutcome, StoreRequest, StoreResponse, TouchRequest, TouchResponse, operation,
    operation_result,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::codegen::tokio_stream::Stream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

use crate::Node;
use crate::router::Table;

/// Room a peer's request may take beyond one item of `-I` bytes: a full
/// client batch (1 MiB by default) and framing, with margin.
const MESSAGE_SLACK: usize = 8 << 20;

/// Serve the peer API on `listener` until `stop` turns true. Open
/// `Pipeline` streams are ended then too (with `UNAVAILABLE`), so shutdown
/// never waits on a peer's idle stream.
pub(crate) async fn serve(listener: TcpListener, node: Arc<Node>, stop: watch::Receiver<bool>) {
    let max_message = node.settings.max_item_size.saturating_add(MESSAGE_SLACK);
    let service = PeerServer::new(PeerService {
        node,
        stop: stop.clone(),
    })
    .max_decoding_message_size(max_message);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let result = Server::builder()
        .max_frame_size(cluster::peer::MAX_FRAME_BYTES)
        .serve_with_incoming_shutdown(service, incoming, stopped(stop))
        .await;
    if let Err(e) = result {
        warn!("peer listener failed: {e}");
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

struct PeerService {
    node: Arc<Node>,
    stop: watch::Receiver<bool>,
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Peer for PeerService {
    type PipelineStream = Answers;

    async fn batch(&self, request: Request<BatchRequest>) -> Answer<BatchResponse> {
        Ok(Response::new(execute_batch(
            &self.node,
            request.into_inner(),
        )))
    }

    async fn pipeline(
        &self,
        request: Request<Streaming<BatchRequest>>,
    ) -> Answer<Self::PipelineStream> {
        Ok(Response::new(Answers {
            inbound: request.into_inner(),
            node: self.node.clone(),
            stop: Box::pin(stopped(self.stop.clone())),
            done: false,
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Answer<GetResponse> {
        let table = table_of(&self.node);
        Ok(Response::new(get(
            &self.node,
            table.as_deref(),
            &request.into_inner(),
        )))
    }

    async fn store(&self, request: Request<StoreRequest>) -> Answer<StoreResponse> {
        let table = table_of(&self.node);
        Ok(Response::new(store(
            &self.node,
            table.as_deref(),
            &request.into_inner(),
        )))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Answer<DeleteResponse> {
        let table = table_of(&self.node);
        Ok(Response::new(delete(
            &self.node,
            table.as_deref(),
            &request.into_inner(),
        )))
    }

    async fn arith(&self, request: Request<ArithRequest>) -> Answer<ArithResponse> {
        let table = table_of(&self.node);
        Ok(Response::new(arith(
            &self.node,
            table.as_deref(),
            &request.into_inner(),
        )))
    }

    async fn touch(&self, request: Request<TouchRequest>) -> Answer<TouchResponse> {
        let table = table_of(&self.node);
        Ok(Response::new(touch(
            &self.node,
            table.as_deref(),
            &request.into_inner(),
        )))
    }

    async fn flush_all(&self, request: Request<FlushAllRequest>) -> Answer<FlushAllResponse> {
        Ok(Response::new(flush_all(&self.node, &request.into_inner())))
    }

    async fn stats(&self, request: Request<StatsRequest>) -> Answer<StatsResponse> {
        Ok(Response::new(stats(&self.node, &request.into_inner())))
    }
}

/// A `Pipeline` stream's answers: each batch read is executed when the
/// answer stream is polled for it, so batches are answered one at a time
/// in arrival order, and a peer that does not read its answers stops
/// being read from (HTTP/2 flow control does the rest).
pub(crate) struct Answers {
    inbound: Streaming<BatchRequest>,
    node: Arc<Node>,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    done: bool,
}

impl Stream for Answers {
    type Item = Result<BatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.stop.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(Some(Err(Status::unavailable("node shutting down"))));
        }
        match Pin::new(&mut this.inbound).poll_next(cx) {
            Poll::Ready(Some(Ok(batch))) => Poll::Ready(Some(Ok(execute_batch(&this.node, batch)))),
            Poll::Ready(Some(Err(status))) => {
                this.done = true;
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The routing table a batch is checked against, taken once per batch.
fn table_of(node: &Node) -> Option<Arc<Table>> {
    node.router.as_ref().map(|r| r.table())
}

fn execute_batch(node: &Node, batch: BatchRequest) -> BatchResponse {
    node.counters.peer_batches.fetch_add(1, Ordering::Relaxed);
    let table = table_of(node);
    let ring_version = table.as_ref().map_or(0, |t| t.view.ring.version());
    // A caller that routed the whole batch with the very ring this node
    // routes with sent only keys this node owns: equal versions mean equal
    // placement, so the keys need no second look.
    let trusted = batch.ring_version != 0
        && batch.ring_version == ring_version
        && table.as_ref().is_some_and(|t| t.ready);
    let check = if trusted { None } else { table.as_deref() };
    // The items every packed get of the batch will read are requested
    // from memory first, so their cache misses overlap instead of
    // queueing key after key behind each lookup's shard lock.
    for op in &batch.operations {
        if let Some(operation::Op::Get(get)) = &op.op
            && let Ok(keys) = packed::keys(&get.packed_keys)
        {
            node.store.prefetch_many(keys);
        }
    }
    BatchResponse {
        id: batch.id,
        ring_version,
        features: packed::FEATURE_PACKED_GETS,
        results: batch
            .operations
            .into_iter()
            .map(|op| execute(node, check, op))
            .collect(),
    }
}

/// Runs one operation against the local store. An operation of a kind this
/// node does not know (a newer node's) decodes as no operation at all and
/// is answered with no result, which the caller reads as
/// `INVALID_ARGUMENT`.
pub(crate) fn execute(node: &Node, table: Option<&Table>, op: Operation) -> OperationResult {
    use operation::Op;
    use operation_result::Result as R;
    let result = op.op.map(|op| match op {
        Op::Get(r) => R::Get(get(node, table, &r)),
        Op::Store(r) => R::Store(store(node, table, &r)),
        Op::Delete(r) => R::Delete(delete(node, table, &r)),
        Op::Arith(r) => R::Arith(arith(node, table, &r)),
        Op::Touch(r) => R::Touch(touch(node, table, &r)),
        Op::FlushAll(r) => R::FlushAll(flush_all(node, &r)),
        Op::Stats(r) => R::Stats(stats(node, &r)),
    });
    OperationResult { result }
}

/// Counts one operation served for a peer, and checks what every request
/// carries: the namespace (only the default one exists yet, so no node
/// silently mixes two) and the keys' length.
fn admit<'a>(
    node: &Node,
    namespace: &Bytes,
    mut keys: impl Iterator<Item = &'a [u8]>,
) -> Result<(), ErrorCode> {
    node.counters.peer_ops.fetch_add(1, Ordering::Relaxed);
    if !namespace.is_empty() || keys.any(|k| k.len() > protocol::MAX_KEY_LEN) {
        return Err(ErrorCode::InvalidArgument);
    }
    Ok(())
}

/// [`admit`], then [`owned`]: what every keyed operation checks first.
fn admit_keys<'a>(
    node: &Node,
    table: Option<&Table>,
    namespace: &Bytes,
    keys: impl Iterator<Item = &'a [u8]> + Clone,
) -> Result<(), ErrorCode> {
    admit(node, namespace, keys.clone())?;
    owned(table, keys)
}

/// In a cluster, a key this node's ring does not give it is refused: the
/// two nodes' rings disagree for a moment, and answering from (or writing
/// to) a copy this node no longer owns could bring stale data back.
fn owned<'a>(
    table: Option<&Table>,
    mut keys: impl Iterator<Item = &'a [u8]>,
) -> Result<(), ErrorCode> {
    match table {
        Some(table) => {
            if keys.all(|k| table.owns(k)) {
                Ok(())
            } else {
                Err(ErrorCode::NotOwner)
            }
        }
        None => Ok(()),
    }
}

fn store_error(e: store::Error) -> ErrorCode {
    match e {
        store::Error::TooLarge => ErrorCode::TooLarge,
        store::Error::OutOfMemory => ErrorCode::OutOfMemory,
        store::Error::NonNumeric => ErrorCode::NonNumeric,
    }
}

fn get(node: &Node, table: Option<&Table>, r: &GetRequest) -> GetResponse {
    let refused = |code: ErrorCode| GetResponse {
        error: code as i32,
        ..GetResponse::default()
    };
    if !r.packed_keys.is_empty() {
        return match packed::keys(&r.packed_keys) {
            Ok(keys) => get_packed(node, table, r, keys).unwrap_or_else(refused),
            Err(packed::Malformed) => refused(ErrorCode::InvalidArgument),
        };
    }
    if let Err(code) = admit_keys(node, table, &r.namespace, r.keys.iter().map(|k| &k[..])) {
        return refused(code);
    }
    let store = &node.store;
    let now = store.now();
    let (cas, meta) = (
        r.omit & cluster::peer::OMIT_CAS == 0,
        r.omit & cluster::peer::OMIT_META == 0,
    );
    let items = r
        .keys
        .iter()
        .map(|key| {
            let Some(found) = lookup(node, key, r.touch) else {
                return Item::default();
            };
            let item = &found.item;
            let mut answer = Item {
                found: true,
                flags: item.flags(),
                // A handle on the stored item: no copy until prost encodes.
                value: item.value_bytes(),
                ..Item::default()
            };
            if cas {
                answer.cas = item.cas();
            }
            if meta {
                answer.ttl = item.ttl(now);
                answer.last_access = found.last_access;
                answer.fetched = found.fetched;
                answer.size = u32::try_from(item.total_size()).unwrap_or(u32::MAX);
            }
            answer
        })
        .collect();
    GetResponse {
        error: ErrorCode::None as i32,
        items,
        ..GetResponse::default()
    }
}

/// A get whose keys came packed, answered packed ([`cluster::packed`]):
/// flags, the CAS unless omitted, the key's family code (with metrics on)
/// and the value (a packed get never asks for the meta fields).
///
/// A packed get carries the keys of many clients (the caller's shared
/// get), so a key this node does not own is answered as a miss, not by
/// refusing the whole get: while two rings disagree, only that key's
/// reader misses. A miss is never stale.
fn get_packed(
    node: &Node,
    table: Option<&Table>,
    r: &GetRequest,
    keys: packed::Keys<'_>,
) -> Result<GetResponse, ErrorCode> {
    admit(node, &r.namespace, keys.clone())?;
    let mut answer = packed::ItemWriter::new(keys.len(), r.omit & cluster::peer::OMIT_CAS == 0);
    let metrics = node.metrics.as_ref();
    for key in keys {
        if table.is_some_and(|t| !t.owns(key)) {
            answer.miss();
            continue;
        }
        // The caller counts the hit by family; the item's tag saves it
        // classifying the key.
        let mut hit = |item: &store::Item| {
            let family = metrics.map_or(0, |m| m.family_code(item));
            answer.hit(item.flags(), item.cas(), family, item.value(), || {
                item.value_bytes()
            });
        };
        let found = match r.touch {
            // A plain get copies the value under the shard's lock rather
            // than taking a handle on the item.
            None => node.store.get_with(key, hit).is_some(),
            Some(exptime) => node
                .store
                .get_and_touch(key, exptime)
                .map(|found| hit(&found.item))
                .is_some(),
        };
        if !found {
            answer.miss();
        }
    }
    let (packed_items, values) = answer.finish();
    Ok(GetResponse {
        error: ErrorCode::None as i32,
        packed_items,
        values,
        ..GetResponse::default()
    })
}

/// One key of a get: looked up, or looked up and touched (gat).
fn lookup(node: &Node, key: &[u8], touch: Option<i64>) -> Option<store::Found> {
    match touch {
        Some(exptime) => node.store.get_and_touch(key, exptime),
        None => node.store.get(key),
    }
}

fn store(node: &Node, table: Option<&Table>, r: &StoreRequest) -> StoreResponse {
    let refused = |code: ErrorCode| StoreResponse {
        error: code as i32,
        outcome: StoreOutcome::Unspecified as i32,
        ..StoreResponse::default()
    };
    if let Err(code) = admit_keys(node, table, &r.namespace, std::iter::once(&r.key[..])) {
        return refused(code);
    }
    let mode = match StoreMode::try_from(r.mode) {
        Ok(StoreMode::Set) => store::Mode::Set,
        Ok(StoreMode::Add) => store::Mode::Add,
        Ok(StoreMode::Replace) => store::Mode::Replace,
        Ok(StoreMode::Append) => store::Mode::Append,
        Ok(StoreMode::Prepend) => store::Mode::Prepend,
        Ok(StoreMode::Unspecified) | Err(_) => return refused(ErrorCode::InvalidArgument),
    };
    if r.too_large {
        // The value never left the client's node; a failed set still drops
        // the old value, as memcached does.
        if mode == store::Mode::Set && r.cas == 0 {
            node.store.remove(&r.key);
        }
        return refused(ErrorCode::TooLarge);
    }
    // `store` copies key and value out of the receive buffer. The key's
    // family is worked out once per key and kept on its item, as a local
    // store does, and named to the caller, which counts the store.
    let metrics = node.metrics.as_ref();
    let tag = || metrics.map_or(0, |m| m.tag_for(&r.key));
    let (outcome, cas, family) = match node
        .store
        .store_tagged(mode, &r.key, &r.value, r.flags, r.exptime, r.cas, tag)
    {
        Ok((store::StoreOutcome::Stored { cas }, tag)) => (
            StoreOutcome::Stored,
            cas,
            metrics.map_or(0, |m| m.family_code_of(tag, &r.key)),
        ),
        Ok((store::StoreOutcome::NotStored, _)) => (StoreOutcome::NotStored, 0, 0),
        Ok((store::StoreOutcome::Exists, _)) => (StoreOutcome::Exists, 0, 0),
        Ok((store::StoreOutcome::NotFound, _)) => (StoreOutcome::NotFound, 0, 0),
        Err(e) => return refused(store_error(e)),
    };
    StoreResponse {
        error: ErrorCode::None as i32,
        outcome: outcome as i32,
        cas,
        family,
    }
}

fn delete(node: &Node, table: Option<&Table>, r: &DeleteRequest) -> DeleteResponse {
    if let Err(code) = admit_keys(node, table, &r.namespace, std::iter::once(&r.key[..])) {
        return DeleteResponse {
            error: code as i32,
            outcome: DeleteOutcome::Unspecified as i32,
        };
    }
    let outcome = match node.store.delete(&r.key, r.cas) {
        store::DeleteOutcome::Deleted => DeleteOutcome::Deleted,
        store::DeleteOutcome::NotFound => DeleteOutcome::NotFound,
        store::DeleteOutcome::Exists => DeleteOutcome::Exists,
    };
    DeleteResponse {
        error: ErrorCode::None as i32,
        outcome: outcome as i32,
    }
}

fn arith(node: &Node, table: Option<&Table>, r: &ArithRequest) -> ArithResponse {
    let refused = |code: ErrorCode| ArithResponse {
        error: code as i32,
        outcome: ArithOutcome::Unspecified as i32,
        value: 0,
        cas: 0,
    };
    if let Err(code) = admit_keys(node, table, &r.namespace, std::iter::once(&r.key[..])) {
        return refused(code);
    }
    let op = match ArithOp::try_from(r.op) {
        Ok(ArithOp::Incr) => store::ArithOp::Incr,
        Ok(ArithOp::Decr) => store::ArithOp::Decr,
        Ok(ArithOp::Unspecified) | Err(_) => return refused(ErrorCode::InvalidArgument),
    };
    let vivify = r.vivify.as_ref().map(|v| (v.initial, v.exptime));
    let (outcome, value, cas) = match node.store.arith(&r.key, op, r.delta, vivify, r.cas) {
        Ok(store::ArithOutcome::Value { value, cas }) => (ArithOutcome::Value, value, cas),
        Ok(store::ArithOutcome::NotFound) => (ArithOutcome::NotFound, 0, 0),
        Ok(store::ArithOutcome::Exists) => (ArithOutcome::Exists, 0, 0),
        Err(e) => return refused(store_error(e)),
    };
    ArithResponse {
        error: ErrorCode::None as i32,
        outcome: outcome as i32,
        value,
        cas,
    }
}

fn touch(node: &Node, table: Option<&Table>, r: &TouchRequest) -> TouchResponse {
    let mut response = TouchResponse::default();
    if let Err(code) = admit_keys(node, table, &r.namespace, std::iter::once(&r.key[..])) {
        response.error = code as i32;
        return response;
    }
    // As a local touch: binary touch answers carry the flags and CAS.
    if let Some(found) = node.store.get_and_touch(&r.key, r.exptime) {
        response.found = true;
        response.flags = found.item.flags();
        response.cas = found.item.cas();
    }
    response
}

fn flush_all(node: &Node, r: &FlushAllRequest) -> FlushAllResponse {
    let code = match admit(node, &r.namespace, std::iter::empty()) {
        Err(code) => code,
        Ok(()) if node.settings.disable_flush => ErrorCode::FlushDisabled,
        Ok(()) => {
            node.store.flush_all(r.delay);
            ErrorCode::None
        }
    };
    FlushAllResponse { error: code as i32 }
}

fn stats(node: &Node, r: &StatsRequest) -> StatsResponse {
    let refused = |code: ErrorCode| StatsResponse {
        error: code as i32,
        stats: Vec::new(),
    };
    if let Err(code) = admit(node, &r.namespace, std::iter::empty()) {
        return refused(code);
    }
    match crate::stats::group(node, r.group.as_bytes()) {
        Some(lines) => StatsResponse {
            error: ErrorCode::None as i32,
            stats: lines
                .into_iter()
                .map(|(name, value)| Stat { name, value })
                .collect(),
        },
        None => refused(ErrorCode::InvalidArgument),
    }
}
