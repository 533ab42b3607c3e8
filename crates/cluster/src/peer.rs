//! The peer API: generated from `proto/peer.proto` (package
//! `shoal.peer.v1`) into [`v1`] — the messages, `v1::peer_client::PeerClient`
//! and `v1::peer_server::{Peer, PeerServer}`. `bytes` fields are
//! [`bytes::Bytes`].
//!
//! # How it maps onto the store and the `Command` model
//! The proto's operations mirror `protocol::Command` one to one, so the
//! router forwards a decoded command without interpreting it, and the owner
//! runs it exactly as it would run a local one:
//!
//! | `Command` | operation | owner calls `store::Store::` |
//! |---|---|---|
//! | `Get { keys, touch }` | `GetRequest` with the keys this owner holds | `get` / `get_and_touch` per key |
//! | `MetaDebug { key }` | `GetRequest` with one key (`Item.size` is `me`'s `size`) | `get` |
//! | `Store { mode, .. }` | `StoreRequest` | `store` |
//! | `TooLarge { mode, key, cas, .. }` | `StoreRequest { too_large: true }` | `remove` for a set without CAS |
//! | `Delete` | `DeleteRequest` | `delete` |
//! | `Arith` | `ArithRequest` (`vivify` as `Vivify`) | `arith` |
//! | `Touch` | `TouchRequest` | `get_and_touch` (flags and CAS for binary) |
//! | `FlushAll` | `FlushAllRequest` to every live member | `flush_all` |
//! | `Stats` | `StatsRequest` (admin views only: `stats` answers the node's own figures) | the server's stats groups |
//!
//! Version, verbosity, noop, quit and SASL are answered where the client
//! is and never forwarded.
//!
//! - **Server side.** One synchronous `execute(Operation) -> OperationResult`
//!   shared by `Batch`, `Pipeline` and the unary calls; every store call is
//!   a short critical section, so it runs inline on the tonic task, never
//!   holding a lock across an `.await`. It needs what only the server crate
//!   has (the store, `-F`, counters, stats groups), so the `Peer` trait is
//!   best implemented there; this crate keeps the schema, the client side's
//!   batching and pure conversions. A get's `Item.value` can be
//!   `Item::value_bytes()`, a handle on the stored item: no copy until prost
//!   encodes it. Store outcomes and `store::Error` map onto the response
//!   enums and `ErrorCode` (`TooLarge`, `OutOfMemory`, `NonNumeric`); a
//!   non-empty `namespace` is `ERROR_CODE_INVALID_ARGUMENT` until namespaces
//!   exist, so no node silently mixes them.
//! - **Client side.** A multi-get is split by [`crate::Ring::owner`]; each
//!   owner's answer is one `Item` per key in request order (keys are not
//!   echoed), zipped back with the client's keys into `Hit`s or `Miss`es and
//!   put back in the client's order. Once a peer's `BatchResponse` has named
//!   `FEATURE_PACKED_GETS`, gets that need no meta fields go to it packed
//!   ([`crate::packed`]): the same answer, laid out for reading in place. `ErrorCode` maps onto
//!   `protocol::Error`: `TooLarge`, `OutOfMemory`, `NonNumeric` and
//!   `FlushDisabled` one to one; `Unavailable`, `NotOwner`, a gRPC status or
//!   a missed deadline become a miss for reads and `Error::Unavailable`
//!   (`SERVER_ERROR …`, binary temporary failure) for everything else;
//!   `InvalidArgument` is `Error::Server`.
//!
//! # Pitfall: decoded bytes share the receive buffer
//! With `.bytes(".")`, a decoded `key` or `value` is a slice of the gRPC
//! receive buffer (the test `decoded_bytes_alias_the_receive_buffer` shows
//! it). Writing such a value to a client socket and dropping it is fine
//! (that is the point: no copy on the way out). *Keeping* it is not: one
//! 100-byte value held in the store would pin the whole buffer (often tens
//! of KB) for the item's life and make the memory accounting lie. Today
//! `Store::store` takes `&[u8]` and copies key and value into the item's
//! own allocation, so the owner is safe by construction; any later path
//! that keeps a decoded `Bytes` — a zero-copy store API, a hand-over queue,
//! a replica log — must copy it first (`Bytes::copy_from_slice`).

/// Generated code for `shoal.peer.v1`.
pub mod v1 {
    tonic::include_proto!("shoal.peer.v1");
}

/// `GetRequest.omit` bit: leave `Item.cas` out.
pub const OMIT_CAS: u32 = 1;
/// `GetRequest.omit` bit: leave out `Item.ttl`, `last_access`, `fetched`
/// and `size` (only meta commands show them).
pub const OMIT_META: u32 = 2;

/// The largest HTTP/2 frame a node accepts on a peer connection, in both
/// directions (h2's default is 16 KiB). A peer sends each frame with a
/// write of its own, so a shared get's answer of a few hundred items
/// (tens of KiB) went out in two or more writes, each a wake of the
/// receiving process on a busy core; in one frame it is one.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message;
    use tonic::{Request, Response, Status, Streaming};

    use super::v1::peer_client::PeerClient;
    use super::v1::peer_server::{Peer, PeerServer};
    use super::v1::*;

    fn operations() -> Vec<Operation> {
        use operation::Op;
        [
            Op::Get(GetRequest {
                namespace: Bytes::new(),
                keys: vec![Bytes::from_static(b"k1"), Bytes::from_static(b"k2")],
                touch: Some(-1),
                omit: super::OMIT_CAS | super::OMIT_META,
                packed_keys: Bytes::new(),
            }),
            Op::Get(GetRequest {
                omit: super::OMIT_META,
                packed_keys: Bytes::from_static(b"\x02k1\x02k2"),
                ..GetRequest::default()
            }),
            Op::Store(StoreRequest {
                namespace: Bytes::from_static(b"tenant"),
                mode: StoreMode::Append as i32,
                key: Bytes::from_static(b"k"),
                flags: u32::MAX,
                exptime: 2_592_001,
                value: Bytes::from(vec![0u8, 255, 13, 10]),
                cas: u64::MAX,
                too_large: false,
            }),
            Op::Delete(DeleteRequest {
                namespace: Bytes::new(),
                key: Bytes::from_static(b"d"),
                cas: 7,
            }),
            Op::Arith(ArithRequest {
                namespace: Bytes::new(),
                key: Bytes::from_static(b"n"),
                op: ArithOp::Decr as i32,
                delta: u64::MAX,
                vivify: Some(Vivify {
                    initial: 10,
                    exptime: -5,
                }),
                cas: 0,
            }),
            Op::Touch(TouchRequest {
                namespace: Bytes::new(),
                key: Bytes::from_static(b"t"),
                exptime: 100,
            }),
            Op::FlushAll(FlushAllRequest {
                namespace: Bytes::new(),
                delay: 30,
            }),
            Op::Stats(StatsRequest {
                namespace: Bytes::new(),
                group: "settings".into(),
            }),
        ]
        .into_iter()
        .map(|op| Operation { op: Some(op) })
        .collect()
    }

    fn results() -> Vec<OperationResult> {
        use operation_result::Result as R;
        [
            R::Get(GetResponse {
                error: ErrorCode::None as i32,
                items: vec![
                    Item {
                        found: true,
                        flags: 3,
                        cas: 0xdead_beef_0000_0001,
                        value: Bytes::from_static(b"hello"),
                        ttl: -1,
                        last_access: 12,
                        fetched: true,
                        size: 70,
                    },
                    Item::default(),
                ],
                packed_items: Bytes::new(),
                values: Vec::new(),
            }),
            R::Get(GetResponse {
                packed_items: Bytes::from_static(b"\x00\x03\x07\x00\x00\x00"),
                values: vec![Bytes::from_static(b"large")],
                ..GetResponse::default()
            }),
            R::Store(StoreResponse {
                error: ErrorCode::TooLarge as i32,
                outcome: StoreOutcome::Unspecified as i32,
                ..StoreResponse::default()
            }),
            R::Delete(DeleteResponse {
                error: ErrorCode::None as i32,
                outcome: DeleteOutcome::Exists as i32,
            }),
            R::Arith(ArithResponse {
                error: ErrorCode::None as i32,
                outcome: ArithOutcome::Value as i32,
                value: 9,
                cas: 5,
            }),
            R::Touch(TouchResponse {
                error: ErrorCode::NotOwner as i32,
                found: false,
                flags: 0,
                cas: 0,
            }),
            R::FlushAll(FlushAllResponse {
                error: ErrorCode::FlushDisabled as i32,
            }),
            R::Stats(StatsResponse {
                error: ErrorCode::None as i32,
                stats: vec![Stat {
                    name: "curr_items".into(),
                    value: "3".into(),
                }],
            }),
        ]
        .into_iter()
        .map(|r| OperationResult { result: Some(r) })
        .collect()
    }

    #[test]
    fn a_batch_round_trips_through_prost() {
        let request = BatchRequest {
            id: 42,
            ring_version: 0x4b7e_4f3c_f8c4_ac39,
            operations: operations(),
        };
        let wire = Bytes::from(request.encode_to_vec());
        assert_eq!(BatchRequest::decode(wire).unwrap(), request);

        let response = BatchResponse {
            id: 42,
            ring_version: 1,
            results: results(),
            features: crate::packed::FEATURE_PACKED_GETS,
        };
        let wire = Bytes::from(response.encode_to_vec());
        assert_eq!(BatchResponse::decode(wire).unwrap(), response);
    }

    /// Field numbers and types are a contract between nodes of different
    /// versions: this pins the bytes of one message.
    #[test]
    fn wire_format_is_pinned() {
        let request = StoreRequest {
            namespace: Bytes::new(),
            mode: StoreMode::Set as i32,
            key: Bytes::from_static(b"k"),
            flags: 1,
            exptime: -1,
            value: Bytes::from_static(b"v"),
            cas: 2,
            too_large: true,
        };
        assert_eq!(
            request.encode_to_vec(),
            [
                0x10, 0x01, // mode = SET
                0x1a, 0x01, b'k', // key
                0x20, 0x01, // flags
                0x28, 0x01, // exptime = -1 (zigzag)
                0x32, 0x01, b'v', // value
                0x39, 2, 0, 0, 0, 0, 0, 0, 0, // cas, fixed64
                0x40, 0x01, // too_large
            ]
        );
        // A miss costs nothing but its framing.
        assert!(Item::default().encode_to_vec().is_empty());
    }

    /// The CRATES.md pitfall, demonstrated: a decoded `bytes` field points
    /// into the buffer it was decoded from.
    #[test]
    fn decoded_bytes_alias_the_receive_buffer() {
        let value = vec![7u8; 100];
        let request = StoreRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(value),
            ..StoreRequest::default()
        };
        let wire = Bytes::from(request.encode_to_vec());
        let decoded = StoreRequest::decode(wire.clone()).unwrap();
        let buffer = wire.as_ptr_range();
        assert!(buffer.contains(&decoded.value.as_ptr()));
        // What a keeper must do instead.
        let owned = Bytes::copy_from_slice(&decoded.value);
        assert!(!buffer.contains(&owned.as_ptr()));
    }

    #[test]
    fn unknown_enum_values_survive_decoding() {
        // A newer node's mode reaches an older one as a plain number, which
        // the older one must answer INVALID_ARGUMENT, not misread.
        let request = StoreRequest {
            mode: 99,
            ..StoreRequest::default()
        };
        let decoded = StoreRequest::decode(Bytes::from(request.encode_to_vec())).unwrap();
        assert_eq!(decoded.mode, 99);
        assert!(StoreMode::try_from(decoded.mode).is_err());
        assert_eq!(decoded.mode(), StoreMode::Unspecified);
    }

    /// A server that answers nothing, only to prove the generated trait's
    /// shape: one method per RPC, and a stream type for `Pipeline`.
    struct Stub;

    type Answer<T> = Result<Response<T>, Status>;

    #[tonic::async_trait]
    impl Peer for Stub {
        type PipelineStream = std::pin::Pin<
            Box<
                dyn tonic::codegen::tokio_stream::Stream<Item = Result<BatchResponse, Status>>
                    + Send,
            >,
        >;

        async fn batch(&self, _: Request<BatchRequest>) -> Answer<BatchResponse> {
            Err(Status::unimplemented("stub"))
        }
        async fn pipeline(
            &self,
            _: Request<Streaming<BatchRequest>>,
        ) -> Answer<Self::PipelineStream> {
            Err(Status::unimplemented("stub"))
        }
        async fn get(&self, _: Request<GetRequest>) -> Answer<GetResponse> {
            Err(Status::unimplemented("stub"))
        }
        async fn store(&self, _: Request<StoreRequest>) -> Answer<StoreResponse> {
            Err(Status::unimplemented("stub"))
        }
        async fn delete(&self, _: Request<DeleteRequest>) -> Answer<DeleteResponse> {
            Err(Status::unimplemented("stub"))
        }
        async fn arith(&self, _: Request<ArithRequest>) -> Answer<ArithResponse> {
            Err(Status::unimplemented("stub"))
        }
        async fn touch(&self, _: Request<TouchRequest>) -> Answer<TouchResponse> {
            Err(Status::unimplemented("stub"))
        }
        async fn flush_all(&self, _: Request<FlushAllRequest>) -> Answer<FlushAllResponse> {
            Err(Status::unimplemented("stub"))
        }
        async fn stats(&self, _: Request<StatsRequest>) -> Answer<StatsResponse> {
            Err(Status::unimplemented("stub"))
        }
    }

    #[test]
    fn generated_client_and_server_types_exist() {
        use tonic::server::NamedService;
        use tonic::transport::Channel;
        let _server: PeerServer<Stub> = PeerServer::new(Stub);
        assert_eq!(
            <PeerServer<Stub> as NamedService>::NAME,
            "shoal.peer.v1.Peer"
        );
        let _client: fn(Channel) -> PeerClient<Channel> = PeerClient::new;
    }
}
