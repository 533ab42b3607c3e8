//! The memcache wire protocols, sans-IO.
//!
//! Bytes go in, a [`Request`] and the number of bytes it used come out; a
//! [`Response`] goes in, bytes come out into an [`OutBuf`]. Nothing here reads
//! a socket, knows about tokio, or touches the store.
//!
//! Both codecs decode into the same [`Command`], so the store and the router
//! never learn which protocol a request came in on. What *does* depend on the
//! protocol — how an answer is framed (text line, meta flags, binary header
//! with opcode and opaque) — travels beside the command as a [`Reply`], and
//! [`encode`] turns a neutral [`Response`] into bytes with it.
//!
//! - [`text`]: memcached's text protocol, including the meta commands
//!   (`mg`/`ms`/`md`/`ma`/`mn`/`me`).
//! - [`binary`]: memcached's binary protocol (first byte `0x80`), including
//!   the quiet variants and SASL.
//! - [`OutBuf`]: the response queue a connection writes from; large values
//!   are queued as shared [`Bytes`] and reach the socket without a copy.

pub mod binary;
mod out;
pub mod text;

use std::borrow::Cow;

pub use bytes::Bytes;
pub use out::{OutBuf, ZERO_COPY_MIN};

/// Longest key memcached accepts, in bytes.
pub const MAX_KEY_LEN: usize = 250;

/// Exptimes up to this many seconds are relative to now; larger ones are unix
/// times (memcached's `REALTIME_MAXDELTA`).
pub const MAX_RELATIVE_EXPTIME: i64 = 60 * 60 * 24 * 30;

/// Bounds the decoders enforce, so one request cannot make a connection buffer
/// without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Values longer than this are never buffered: the decoder answers
    /// [`Command::TooLarge`] and the connection discards the payload as it
    /// arrives. The store applies the exact item-size rule to anything
    /// smaller.
    pub max_value_len: usize,
    /// Longest text command line (without its value), in bytes. A longer line
    /// is answered `CLIENT_ERROR line too long` and the connection closed.
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value_len: 1024 * 1024,
            max_line_len: 64 * 1024,
        }
    }
}

/// The outcome of trying to decode one request from the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decode<'a> {
    /// The buffer does not hold a whole request yet: read more and try again.
    Incomplete,
    /// One whole request, which used the first `consumed` bytes.
    Request {
        request: Request<'a>,
        consumed: usize,
    },
    /// A malformed request. Answer `error` framed by `reply`, drop the first
    /// `consumed` bytes, and close the connection after the answer when
    /// `close` is set (memcached closes on an over-long line or a bad binary
    /// magic byte, where it can no longer find the next request).
    Invalid {
        error: Error,
        reply: Reply<'a>,
        consumed: usize,
        close: bool,
    },
}

/// One decoded request: what to do, and how to frame the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub command: Command<'a>,
    pub reply: Reply<'a>,
}

/// What a client asked for, whatever protocol it spoke. Keys and values
/// borrow from the connection's read buffer; whoever keeps them copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `get`/`gets`/`gat`/`gats`, binary `get*`/`gat*`, `mg`. With `touch`,
    /// each hit's exptime is set to it first (gat, binary gat, `mg … T`).
    Get {
        keys: Keys<'a>,
        touch: Option<i64>,
    },
    /// `set`/`add`/`replace`/`append`/`prepend`/`cas`, their binary opcodes,
    /// `ms`. `cas` of 0 means "no compare".
    Store {
        mode: StoreMode,
        key: &'a [u8],
        flags: u32,
        exptime: i64,
        value: &'a [u8],
        cas: u64,
    },
    /// A storage command whose value is over [`Limits::max_value_len`]: the
    /// connection discards the next `swallow` bytes and answers "too large".
    /// A plain set (no CAS) also removes the key's old value, as memcached
    /// does, so a failed set never leaves stale data.
    TooLarge {
        mode: StoreMode,
        key: &'a [u8],
        cas: u64,
        swallow: usize,
    },
    /// `delete`, binary delete, `md`. `cas` of 0 means "no compare".
    Delete {
        key: &'a [u8],
        cas: u64,
    },
    /// `incr`/`decr`, binary increment/decrement, `ma`.
    Arith {
        key: &'a [u8],
        op: ArithOp,
        delta: u64,
        /// Create a missing key with this value and exptime (binary, and
        /// `ma N`/`J`) instead of answering "not found".
        vivify: Option<Vivify>,
        cas: u64,
    },
    /// `touch`, binary touch.
    Touch {
        key: &'a [u8],
        exptime: i64,
    },
    /// `flush_all [delay]`, binary flush.
    FlushAll {
        delay: i64,
    },
    /// `stats [group]`, binary stat; an empty group is the general one.
    Stats {
        group: &'a [u8],
    },
    Version,
    Verbosity {
        level: u32,
    },
    /// Binary noop, `mn`: answers once everything before it has been.
    Noop,
    /// `quit`, binary quit: answer (binary only), then close.
    Quit,
    /// `me <key>`: memcached's item debug line.
    MetaDebug {
        key: &'a [u8],
    },
    SaslListMechs,
    SaslAuth {
        mechanism: &'a [u8],
        data: &'a [u8],
    },
    SaslStep {
        mechanism: &'a [u8],
        data: &'a [u8],
    },
}

/// The keys of a get: text sends many separated by spaces, the other forms
/// one. Kept as the raw bytes so a 100-key get allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys<'a> {
    /// Exactly one key (binary, meta), which may contain any byte.
    One(&'a [u8]),
    /// One or more valid text keys separated by single or repeated spaces.
    Spaced(&'a [u8]),
}

impl<'a> Keys<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (one, spaced): (Option<&'a [u8]>, &'a [u8]) = match *self {
            Keys::One(k) => (Some(k), &[]),
            Keys::Spaced(s) => (None, s),
        };
        one.into_iter()
            .chain(spaced.split(|&b| b == b' ').filter(|k| !k.is_empty()))
    }

    pub fn count(&self) -> usize {
        self.iter().count()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArithOp {
    Incr,
    Decr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vivify {
    pub initial: u64,
    pub exptime: i64,
}

/// How to frame the answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    Text(TextReply),
    Meta(MetaReply<'a>),
    Binary(BinaryReply),
}

/// Framing for a classic text command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TextReply {
    /// The command word, so `END` follows gets and stats, `VALUE` lines carry
    /// a CAS for gets/gats, and so on.
    pub verb: TextVerb,
    /// `noreply`: send nothing but errors.
    pub noreply: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextVerb {
    #[default]
    Other,
    Get,
    /// `gets`/`gats`: `VALUE` lines carry the CAS.
    Gets,
    Stats,
}

/// Framing for a meta command: which fields to return, and the flags that
/// echo back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaReply<'a> {
    pub verb: MetaVerb,
    /// `q`: suppress the "nothing interesting" answer (EN for mg, HD for
    /// ms/md/ma); errors, hits, NS/EX/NF are still sent (memcached 1.6.18
    /// sends md's NF too).
    pub quiet: bool,
    /// `O<token>`: echoed back as `O<token>`.
    pub opaque: Option<&'a [u8]>,
    /// `k`: return the key as `k<key>`.
    pub key: bool,
    /// `v`: return the value (mg: `VA <len> <flags>`; ma: the number).
    pub value: bool,
    /// `f`: return client flags as `f<flags>`.
    pub flags: bool,
    /// `c`: return the CAS as `c<cas>`.
    pub cas: bool,
    /// `t`: return the remaining TTL as `t<secs>` (`-1` for none).
    pub ttl: bool,
    /// `s`: return the value size as `s<bytes>`.
    pub size: bool,
    /// `h`: return whether the item was fetched before as `h0`/`h1`.
    pub hit_before: bool,
    /// `l`: return seconds since last access as `l<secs>`.
    pub last_access: bool,
    /// The key for `k` on answers that carry none (ms/md/ma), and the order
    /// the return flags were asked in, which memcached answers them in.
    pub echo: text::MetaEcho<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaVerb {
    Get,
    Set,
    Delete,
    Arith,
    Noop,
    Debug,
}

/// Framing for a binary request: echoed opcode and opaque, and whether the
/// opcode is a quiet one (answer only errors; for gets, only hits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryReply {
    pub opcode: u8,
    pub opaque: u32,
    pub quiet: bool,
    /// getk/getkq/gatk/gatkq: the key is returned with the value.
    pub with_key: bool,
}

/// A neutral answer, framed by the [`Reply`] that came with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    /// One found item of a get.
    Hit(Hit<'a>),
    /// One key of a get that was not found.
    Miss {
        key: &'a [u8],
    },
    /// The end of a get's or stats' answers (text `END`, binary stats' empty
    /// packet; nothing for binary and meta gets).
    End,
    /// Stored, with the item's new CAS (binary answers carry it).
    Stored {
        cas: u64,
    },
    NotStored,
    /// The CAS did not match.
    Exists,
    NotFound,
    Deleted,
    /// Touched; binary answers carry the item's flags and CAS.
    Touched {
        flags: u32,
        cas: u64,
    },
    /// The new value of an incr/decr, and the item's CAS.
    Number {
        value: u64,
        cas: u64,
    },
    /// flush_all, verbosity, binary quit/noop, `mn`.
    Ok,
    Version(&'a str),
    /// One line of stats; follow the last with [`Response::End`].
    Stat {
        name: &'a str,
        value: &'a str,
    },
    /// The `me` line: `ME <key> <debug fields>`.
    Debug {
        key: &'a [u8],
        fields: &'a str,
    },
    /// SASL mechanisms, space separated.
    SaslMechs(&'a str),
    /// SASL authentication succeeded.
    AuthOk,
    Error(Error),
}

/// A found item as a get returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit<'a> {
    pub key: &'a [u8],
    pub flags: u32,
    pub cas: u64,
    pub value: Value<'a>,
    /// Seconds until expiry; `-1` when the item never expires.
    pub ttl: i64,
    /// Seconds since the item was last accessed (before this access).
    pub last_access: u32,
    /// Whether the item had been fetched before this access.
    pub fetched: bool,
}

/// A value to send: a slice the encoder copies, or a shared buffer it queues
/// without copying. Callers pick `Shared` for values large enough that a copy
/// costs more than a reference count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Slice(&'a [u8]),
    Shared(Bytes),
}

impl Value<'_> {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Value::Slice(s) => s,
            Value::Shared(b) => b,
        }
    }
}

/// Every error a client can be answered with. Each maps to exactly one text
/// line and one binary status (see [`Error::binary_status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Text `ERROR`; binary 0x81 unknown command.
    #[error("unknown command")]
    UnknownCommand,
    /// Text `CLIENT_ERROR <msg>`; binary 0x04 invalid arguments.
    #[error("CLIENT_ERROR {0}")]
    Client(Cow<'static, str>),
    /// Text `SERVER_ERROR <msg>`; binary 0x84 internal error.
    #[error("SERVER_ERROR {0}")]
    Server(Cow<'static, str>),
    /// Text `SERVER_ERROR object too large for cache`; binary 0x03 E2BIG.
    #[error("object too large for cache")]
    TooLarge,
    /// Text `SERVER_ERROR out of memory storing object`; binary 0x82 ENOMEM.
    #[error("out of memory storing object")]
    OutOfMemory,
    /// Text `CLIENT_ERROR cannot increment or decrement non-numeric value`;
    /// binary 0x06 non-numeric.
    #[error("cannot increment or decrement non-numeric value")]
    NonNumeric,
    /// Text `CLIENT_ERROR unauthenticated`; binary 0x20 auth error.
    #[error("authentication failed")]
    AuthFailed,
    /// flush_all refused by `-F`: text `CLIENT_ERROR flush_all not allowed`;
    /// binary 0x20, as memcached answers.
    #[error("flush_all not allowed")]
    FlushDisabled,
    /// Text `SERVER_ERROR <msg>`; binary 0x86 temporary failure. For a
    /// request that may succeed later (a node not yet ready, a dead peer).
    #[error("SERVER_ERROR {0}")]
    Unavailable(Cow<'static, str>),
}

impl Error {
    pub fn client(msg: &'static str) -> Self {
        Error::Client(Cow::Borrowed(msg))
    }

    pub fn server(msg: &'static str) -> Self {
        Error::Server(Cow::Borrowed(msg))
    }

    /// The binary protocol status for this error.
    pub fn binary_status(&self) -> u16 {
        match self {
            Error::UnknownCommand => binary::status::UNKNOWN_COMMAND,
            Error::Client(_) => binary::status::INVALID_ARGUMENTS,
            Error::Server(_) => binary::status::INTERNAL_ERROR,
            Error::TooLarge => binary::status::VALUE_TOO_LARGE,
            Error::OutOfMemory => binary::status::OUT_OF_MEMORY,
            Error::NonNumeric => binary::status::NON_NUMERIC,
            Error::AuthFailed | Error::FlushDisabled => binary::status::AUTH_ERROR,
            Error::Unavailable(_) => binary::status::TEMPORARY_FAILURE,
        }
    }

    /// The text protocol line for this error, without `\r\n`.
    pub fn text_line(&self) -> Cow<'static, str> {
        match self {
            Error::UnknownCommand => Cow::Borrowed("ERROR"),
            Error::Client(m) => Cow::Owned(format!("CLIENT_ERROR {m}")),
            Error::Server(m) | Error::Unavailable(m) => Cow::Owned(format!("SERVER_ERROR {m}")),
            Error::TooLarge => Cow::Borrowed("SERVER_ERROR object too large for cache"),
            Error::OutOfMemory => Cow::Borrowed("SERVER_ERROR out of memory storing object"),
            Error::NonNumeric => {
                Cow::Borrowed("CLIENT_ERROR cannot increment or decrement non-numeric value")
            }
            Error::AuthFailed => Cow::Borrowed("CLIENT_ERROR authentication failure"),
            Error::FlushDisabled => Cow::Borrowed("CLIENT_ERROR flush_all not allowed"),
        }
    }
}

/// Decode one request from the front of `buf`, whichever protocol it is:
/// a first byte of `0x80` is binary, anything else text.
pub fn decode<'a>(buf: &'a [u8], limits: &Limits) -> Decode<'a> {
    match buf.first() {
        None => Decode::Incomplete,
        Some(&binary::REQUEST_MAGIC) => binary::decode(buf, limits),
        Some(_) => text::decode(buf, limits),
    }
}

/// Append the bytes for `response`, framed by `reply`, to `out`.
pub fn encode(reply: &Reply<'_>, response: &Response<'_>, out: &mut OutBuf) {
    match reply {
        Reply::Text(r) => text::encode(r, response, out),
        Reply::Meta(r) => text::encode_meta(r, response, out),
        Reply::Binary(r) => binary::encode(r, response, out),
    }
}
