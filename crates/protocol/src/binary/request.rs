//! Decoding one binary request.
//!
//! The decoder checks everything the header alone can tell before it waits
//! for the body, in memcached's order: the lengths add up (else "unknown
//! command" and close, as `dispatch_bin_command` does), the key is at most
//! 250 bytes, and the extras, key and body lengths fit the opcode (else
//! "invalid arguments" and close). Only then does it wait for the bytes it
//! needs, so a malformed header is answered at once instead of after a body
//! that may never come.

use crate::{
    ArithOp, BinaryReply, Command, Decode, Error, Keys, Limits, MAX_KEY_LEN, Reply, Request,
    StoreMode, Vivify,
};

use super::{HEADER_LEN, REQUEST_MAGIC, opcode};

/// Longest SASL mechanism name memcached accepts (`MAX_SASL_MECH_LEN`).
const MAX_SASL_MECH_LEN: usize = 32;

/// An arithmetic request's expiration that means "do not create a missing
/// key".
const NO_VIVIFY: u32 = 0xffff_ffff;

/// Decode one binary request from the front of `buf`.
///
/// Storage requests are returned whole, borrowing their value from `buf`,
/// unless the value is over [`Limits::max_value_len`]: then the decoder
/// waits only for the header, extras and key, and answers
/// [`Command::TooLarge`] with `consumed` covering those and `swallow` the
/// value's length, so the connection discards the value as it arrives
/// instead of buffering it. A request whose body memcached would skip (an
/// unknown opcode, a SASL request with an over-long mechanism name) is
/// waited for whole and answered [`Decode::Invalid`] without closing, as long
/// as the body is within [`Limits::max_line_len`]; a longer one closes the
/// connection, since no legitimate request of that kind is so large.
///
/// Never panics, whatever `buf` holds; `consumed` is always within `buf`,
/// and at least the header unless the connection is to be closed.
pub fn decode<'a>(buf: &'a [u8], limits: &Limits) -> Decode<'a> {
    let Some(&magic) = buf.first() else {
        return Decode::Incomplete;
    };
    if magic != REQUEST_MAGIC {
        return bad_magic(buf);
    }
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Decode::Incomplete;
    };
    let h = Header::parse(header);
    let (op, quiet, with_key) = classify(h.opcode);
    let reply = Reply::Binary(BinaryReply {
        opcode: h.opcode,
        opaque: h.opaque,
        quiet,
        with_key,
    });

    // memcached answers a header whose key and extras overrun the body with
    // "unknown command", and closes.
    if h.key_len + h.extras_len > h.body_len {
        return invalid(Error::UnknownCommand, reply, HEADER_LEN, true);
    }
    if h.key_len > MAX_KEY_LEN {
        return invalid(
            Error::client("key longer than 250 bytes"),
            reply,
            HEADER_LEN,
            true,
        );
    }
    if !op.fits(&h) {
        return invalid(
            Error::client("malformed binary request"),
            reply,
            HEADER_LEN,
            true,
        );
    }

    match op {
        Op::Store(mode) => {
            let value_len = h.body_len - h.extras_len - h.key_len;
            if value_len > limits.max_value_len {
                let head = HEADER_LEN + h.extras_len + h.key_len;
                let Some(front) = buf.get(..head) else {
                    return Decode::Incomplete;
                };
                let key = &front[HEADER_LEN + h.extras_len..];
                return Decode::Request {
                    request: Request {
                        command: Command::TooLarge {
                            mode,
                            key,
                            cas: h.cas,
                            swallow: value_len,
                        },
                        reply,
                    },
                    consumed: head,
                };
            }
        }
        Op::Unknown if h.body_len > limits.max_line_len => {
            return invalid(Error::UnknownCommand, reply, HEADER_LEN, true);
        }
        Op::SaslAuth | Op::SaslStep if h.body_len > limits.max_line_len => {
            return invalid(
                Error::client("SASL request too large"),
                reply,
                HEADER_LEN,
                true,
            );
        }
        _ => {}
    }

    let total = HEADER_LEN.saturating_add(h.body_len);
    let Some(packet) = buf.get(..total) else {
        return Decode::Incomplete;
    };
    let (extras, rest) = packet[HEADER_LEN..].split_at(h.extras_len);
    let (key, value) = rest.split_at(h.key_len);

    let command = match op {
        Op::Get { touch: false } => Command::Get {
            keys: Keys::One(key),
            touch: None,
        },
        Op::Get { touch: true } => Command::Get {
            keys: Keys::One(key),
            touch: Some(i64::from(be_u32(extras, 0))),
        },
        Op::Touch => Command::Touch {
            key,
            exptime: i64::from(be_u32(extras, 0)),
        },
        Op::Store(mode) => Command::Store {
            mode,
            key,
            // Append and prepend carry no extras: the item keeps its own.
            flags: be_u32(extras, 0),
            exptime: i64::from(be_u32(extras, 4)),
            value,
            cas: h.cas,
        },
        Op::Delete => Command::Delete { key, cas: h.cas },
        Op::Arith(op) => {
            let expiration = be_u32(extras, 16);
            Command::Arith {
                key,
                op,
                delta: be_u64(extras, 0),
                vivify: (expiration != NO_VIVIFY).then(|| Vivify {
                    initial: be_u64(extras, 8),
                    exptime: i64::from(expiration),
                }),
                cas: h.cas,
            }
        }
        Op::Quit => Command::Quit,
        Op::Flush => Command::FlushAll {
            delay: i64::from(be_u32(extras, 0)),
        },
        Op::Noop => Command::Noop,
        Op::Version => Command::Version,
        Op::Stat => Command::Stats { group: key },
        Op::Verbosity => Command::Verbosity {
            level: be_u32(extras, 0),
        },
        Op::SaslListMechs => Command::SaslListMechs,
        Op::SaslAuth | Op::SaslStep if key.len() > MAX_SASL_MECH_LEN => {
            // memcached answers this one and skips the data, without closing.
            return invalid(
                Error::client("SASL mechanism name too long"),
                reply,
                total,
                false,
            );
        }
        Op::SaslAuth => Command::SaslAuth {
            mechanism: key,
            data: value,
        },
        Op::SaslStep => Command::SaslStep {
            mechanism: key,
            data: value,
        },
        Op::Unknown => return invalid(Error::UnknownCommand, reply, total, false),
    };
    Decode::Request {
        request: Request { command, reply },
        consumed: total,
    }
}

/// The fields of a request header the decoder uses (datatype and vbucket are
/// ignored, as memcached ignores them).
struct Header {
    opcode: u8,
    key_len: usize,
    extras_len: usize,
    body_len: usize,
    opaque: u32,
    cas: u64,
}

impl Header {
    fn parse(h: &[u8; HEADER_LEN]) -> Header {
        Header {
            opcode: h[1],
            key_len: usize::from(u16::from_be_bytes([h[2], h[3]])),
            extras_len: usize::from(h[4]),
            body_len: usize::try_from(be_u32(h, 8)).unwrap_or(usize::MAX),
            opaque: be_u32(h, 12),
            cas: be_u64(h, 16),
        }
    }
}

/// What an opcode asks for, known from the opcode alone.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// get, getq, getk, getkq; with `touch`, gat, gatq, gatk, gatkq.
    Get {
        touch: bool,
    },
    Touch,
    Store(StoreMode),
    Delete,
    Arith(ArithOp),
    Quit,
    Flush,
    Noop,
    Version,
    Stat,
    Verbosity,
    SaslListMechs,
    SaslAuth,
    SaslStep,
    Unknown,
}

/// The operation, whether the opcode is quiet, and whether its answer
/// carries the key.
fn classify(code: u8) -> (Op, bool, bool) {
    use opcode::*;
    let get = Op::Get { touch: false };
    let gat = Op::Get { touch: true };
    match code {
        GET => (get, false, false),
        GETQ => (get, true, false),
        GETK => (get, false, true),
        GETKQ => (get, true, true),
        GAT => (gat, false, false),
        GATQ => (gat, true, false),
        GATK => (gat, false, true),
        GATKQ => (gat, true, true),
        TOUCH => (Op::Touch, false, false),
        SET => (Op::Store(StoreMode::Set), false, false),
        SETQ => (Op::Store(StoreMode::Set), true, false),
        ADD => (Op::Store(StoreMode::Add), false, false),
        ADDQ => (Op::Store(StoreMode::Add), true, false),
        REPLACE => (Op::Store(StoreMode::Replace), false, false),
        REPLACEQ => (Op::Store(StoreMode::Replace), true, false),
        APPEND => (Op::Store(StoreMode::Append), false, false),
        APPENDQ => (Op::Store(StoreMode::Append), true, false),
        PREPEND => (Op::Store(StoreMode::Prepend), false, false),
        PREPENDQ => (Op::Store(StoreMode::Prepend), true, false),
        DELETE => (Op::Delete, false, false),
        DELETEQ => (Op::Delete, true, false),
        INCREMENT => (Op::Arith(ArithOp::Incr), false, false),
        INCREMENTQ => (Op::Arith(ArithOp::Incr), true, false),
        DECREMENT => (Op::Arith(ArithOp::Decr), false, false),
        DECREMENTQ => (Op::Arith(ArithOp::Decr), true, false),
        QUIT => (Op::Quit, false, false),
        QUITQ => (Op::Quit, true, false),
        FLUSH => (Op::Flush, false, false),
        FLUSHQ => (Op::Flush, true, false),
        NOOP => (Op::Noop, false, false),
        VERSION => (Op::Version, false, false),
        STAT => (Op::Stat, false, false),
        VERBOSITY => (Op::Verbosity, false, false),
        SASL_LIST_MECHS => (Op::SaslListMechs, false, false),
        SASL_AUTH => (Op::SaslAuth, false, false),
        SASL_STEP => (Op::SaslStep, false, false),
        _ => (Op::Unknown, false, false),
    }
}

impl Op {
    /// Whether the header's lengths are the ones this opcode takes: the
    /// checks of memcached's `dispatch_bin_command`, made exact where
    /// memcached leaves stray body bytes to be misread as the next header
    /// (touch/gat, stat), which ends in a closed connection there too.
    fn fits(self, h: &Header) -> bool {
        let (key, extras, body) = (h.key_len, h.extras_len, h.body_len);
        match self {
            Op::Get { touch: false } | Op::Delete => extras == 0 && key > 0 && body == key,
            Op::Get { touch: true } | Op::Touch => extras == 4 && key > 0 && body == key + 4,
            Op::Store(StoreMode::Set | StoreMode::Add | StoreMode::Replace) => {
                extras == 8 && key > 0
            }
            Op::Store(StoreMode::Append | StoreMode::Prepend) => extras == 0 && key > 0,
            Op::Arith(_) => extras == 20 && key > 0 && body == key + 20,
            Op::Quit | Op::Noop | Op::Version | Op::SaslListMechs => body == 0,
            Op::Flush => key == 0 && body == extras && (extras == 0 || extras == 4),
            Op::Stat => extras == 0 && body == key,
            Op::Verbosity => key == 0 && extras == 4 && body == 4,
            Op::SaslAuth | Op::SaslStep => extras == 0 && key > 0,
            Op::Unknown => true,
        }
    }
}

/// memcached closes a connection whose next byte is not the request magic,
/// without answering; the codec asks for an "invalid arguments" answer, then
/// the close. Nothing after the bad byte can be trusted, so all of it goes.
fn bad_magic(buf: &[u8]) -> Decode<'_> {
    let reply = Reply::Binary(BinaryReply {
        opcode: buf.get(1).copied().unwrap_or(0),
        opaque: buf.first_chunk::<HEADER_LEN>().map_or(0, |h| be_u32(h, 12)),
        quiet: false,
        with_key: false,
    });
    invalid(Error::client("bad magic byte"), reply, buf.len(), true)
}

fn invalid(error: Error, reply: Reply<'_>, consumed: usize, close: bool) -> Decode<'_> {
    Decode::Invalid {
        error,
        reply,
        consumed,
        close,
    }
}

/// The big-endian `u32` at `at`. The callers have checked the lengths, so
/// the zero for a short slice is never seen; it keeps the decoder free of
/// panics by construction.
fn be_u32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..)
        .and_then(<[u8]>::first_chunk::<4>)
        .map_or(0, |b| u32::from_be_bytes(*b))
}

/// The big-endian `u64` at `at`; see [`be_u32`].
fn be_u64(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..)
        .and_then(<[u8]>::first_chunk::<8>)
        .map_or(0, |b| u64::from_be_bytes(*b))
}
