//! The peer API's gRPC codec: prost messages, decoded from one contiguous
//! [`Bytes`].
//!
//! tonic hands a decoder the message as a `DecodeBuf`, a length-limited view
//! of its receive buffer. prost can decode straight from it, but then every
//! varint and every field goes through `DecodeBuf`'s generic `Buf` methods
//! and its bounds checks; for a `GetResponse` of small items that cost more
//! than everything else the forwarding node does with an item. This codec
//! first takes the whole message out of the receive buffer as one `Bytes`
//! (a slice: a reference count, no copy) and decodes from that, where
//! prost's fast paths apply and each `bytes` field is again a slice of the
//! same allocation. The aliasing rule of [`crate::peer`] is unchanged.
//! Encoding is tonic-prost's own.

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// The codec `build.rs` names for every peer API method.
#[derive(Debug, Clone, Copy)]
pub struct PeerCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for PeerCodec<T, U> {
    fn default() -> Self {
        PeerCodec(PhantomData)
    }
}

impl<T, U> Codec for PeerCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ContiguousDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ContiguousDecoder(PhantomData)
    }
}

/// Decodes `U` from the message's bytes taken out as one `Bytes`.
#[derive(Debug)]
pub struct ContiguousDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ContiguousDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let message = buf.copy_to_bytes(buf.remaining());
        U::decode(message)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}
