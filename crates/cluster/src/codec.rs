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
//! Encoding reserves room for the whole message first ([`WholeEncoder`]).
//!
//! The `Pipeline` stream a node opens to each peer carries nearly every
//! forwarded byte; its client reads and writes gRPC messages itself
//! ([`Frames`], [`frame_message`]) rather than through tonic's message
//! streams, which copy them (see `crate::client`).

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

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
    type Encoder = WholeEncoder<T>;
    type Decoder = ContiguousDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        WholeEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ContiguousDecoder(PhantomData)
    }
}

/// Encodes `T` into tonic's buffer after reserving room for all of it.
///
/// tonic's buffer starts at 8 KiB and prost writes into it field by field,
/// so a larger message (an owner's answer to a get of a hundred keys is
/// 10-20 KiB) grew it on the way, copying what was already written each
/// time; the peer answering a get paid that for most answers. One reserve
/// of the message's length allocates at most once and copies at most the
/// 5-byte header in front of it.
#[derive(Debug)]
pub struct WholeEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for WholeEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode_raw(buf);
        Ok(())
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

/// The gRPC messages of a response body, cut from its data frames as they
/// arrive (each message: a compression flag byte, a big-endian `u32`
/// length, the message).
///
/// A node's own `Pipeline` client reads its answers through this rather
/// than tonic's `Streaming`, which copies every data frame into a buffer
/// of its own and then, for each message longer than that buffer's room,
/// copies it again into a larger one. Here a message that lies within one
/// data frame (nearly all: frames run to [`crate::peer::MAX_FRAME_BYTES`])
/// is a slice of that frame; only one that spans frames is gathered, once.
///
/// Pure and synchronous: tested without a socket.
#[derive(Debug, Default)]
pub struct Frames {
    /// Unread bytes of the last frame (or of a gathered message's buffer).
    rest: Bytes,
    /// A message that spans frames, gathered so far (header included).
    partial: BytesMut,
    max_message: usize,
}

/// The gRPC message header: the compression flag and the length.
const HEADER: usize = 5;

impl Frames {
    /// Messages longer than `max_message` bytes are refused.
    pub fn new(max_message: usize) -> Frames {
        Frames {
            max_message,
            ..Frames::default()
        }
    }

    /// Adds a data frame's bytes.
    pub fn push(&mut self, data: Bytes) {
        if !self.partial.is_empty() {
            self.partial.extend_from_slice(&data);
        } else if self.rest.is_empty() {
            self.rest = data;
        } else {
            // A message began in the last frame and goes on in this one.
            self.partial.reserve(self.rest.len() + data.len());
            self.partial.extend_from_slice(&self.rest);
            self.partial.extend_from_slice(&data);
            self.rest = Bytes::new();
        }
    }

    /// The next whole message, if one has arrived.
    ///
    /// # Errors
    /// A compressed message (this client never asks for compression) or
    /// one longer than the limit: the stream is unusable.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if !self.partial.is_empty() {
            let Some(len) = header(&self.partial, self.max_message)? else {
                return Ok(None);
            };
            if self.partial.len() < HEADER + len {
                // Room for the rest of it, so the frames to come are
                // appended without growing the buffer again.
                self.partial.reserve(HEADER + len - self.partial.len());
                return Ok(None);
            }
            // Whole: it, and what follows it, are read as slices again.
            self.rest = self.partial.split().freeze();
        }
        let Some(len) = header(&self.rest, self.max_message)? else {
            return Ok(None);
        };
        if self.rest.len() < HEADER + len {
            return Ok(None);
        }
        let message = self.rest.slice(HEADER..HEADER + len);
        self.rest = self.rest.slice(HEADER + len..);
        Ok(Some(message))
    }

    /// Whether part of a message is still unread: at the end of the body,
    /// the stream was cut short.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty() && self.partial.is_empty()
    }
}

/// The length of the message that `bytes` begin with, once its header is
/// in.
fn header(bytes: &[u8], max_message: usize) -> Result<Option<usize>, Status> {
    let Some(header) = bytes.get(..HEADER) else {
        return Ok(None);
    };
    if header[0] != 0 {
        return Err(Status::internal(format!(
            "protocol error: a message with compression flag {} (none was asked for)",
            header[0]
        )));
    }
    let len = u32::from_be_bytes(header[1..].try_into().expect("4 bytes")) as usize;
    if len > max_message {
        return Err(Status::out_of_range(format!(
            "a message of {len} bytes, past the limit of {max_message} bytes"
        )));
    }
    Ok(Some(len))
}

/// `message` as a gRPC message: header, then its encoding, in one buffer.
pub fn frame_message(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(HEADER + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).expect("a message under 4 GiB"));
    message.encode_raw(&mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn messages_within_one_frame_are_slices_of_it() {
        let mut all = framed(b"first");
        all.extend(framed(b""));
        all.extend(framed(b"third"));
        let frame = Bytes::from(all);
        let mut frames = Frames::new(1 << 20);
        frames.push(frame.clone());
        let first = frames.next_message().unwrap().unwrap();
        assert_eq!(&first[..], b"first");
        assert_eq!(first.as_ptr(), frame[5..].as_ptr(), "copied");
        assert_eq!(&frames.next_message().unwrap().unwrap()[..], b"");
        let third = frames.next_message().unwrap().unwrap();
        assert_eq!(&third[..], b"third");
        assert_eq!(third.as_ptr(), frame[frame.len() - 5..].as_ptr(), "copied");
        assert_eq!(frames.next_message().unwrap(), None);
        assert!(frames.is_empty());
    }

    #[test]
    fn a_message_split_anywhere_across_frames_comes_out_whole() {
        let mut all = framed(b"a message of some length");
        all.extend(framed(b"and the next"));
        for cut in 0..=all.len() {
            for second in cut..=all.len() {
                let mut frames = Frames::new(1 << 20);
                let mut got = Vec::new();
                for part in [&all[..cut], &all[cut..second], &all[second..]] {
                    frames.push(Bytes::copy_from_slice(part));
                    while let Some(m) = frames.next_message().unwrap() {
                        got.push(m);
                    }
                }
                assert_eq!(
                    got,
                    [&b"a message of some length"[..], &b"and the next"[..]],
                    "cut at {cut} and {second}"
                );
                assert!(frames.is_empty());
            }
        }
        // Cut short: the rest is left unread.
        let mut frames = Frames::new(1 << 20);
        frames.push(Bytes::copy_from_slice(&all[..7]));
        assert_eq!(frames.next_message().unwrap(), None);
        assert!(!frames.is_empty());
    }

    #[test]
    fn compressed_and_oversized_messages_are_refused() {
        let mut frames = Frames::new(1 << 20);
        frames.push(Bytes::from_static(&[1, 0, 0, 0, 1, b'x']));
        assert_eq!(
            frames.next_message().unwrap_err().code(),
            tonic::Code::Internal
        );

        let mut frames = Frames::new(4);
        frames.push(Bytes::from(framed(b"12345")));
        assert_eq!(
            frames.next_message().unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        let mut frames = Frames::new(5);
        frames.push(Bytes::from(framed(b"12345")));
        assert_eq!(&frames.next_message().unwrap().unwrap()[..], b"12345");
    }

    #[test]
    fn a_framed_message_reads_back() {
        use crate::peer::v1::BatchResponse;
        let sent = BatchResponse {
            id: 7,
            features: 1,
            ..Default::default()
        };
        let mut frames = Frames::new(1 << 20);
        frames.push(frame_message(&sent));
        let back = BatchResponse::decode(frames.next_message().unwrap().unwrap()).unwrap();
        assert_eq!(back, sent);
    }
}
