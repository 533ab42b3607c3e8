//! memcached's binary protocol, sans-IO.
//!
//! Every packet is a 24-byte big-endian header followed by a body of
//! extras, key and value, in that order:
//!
//! ```text
//! byte  0      1       2..4     4       5         6..8            8..12      12..16  16..24
//!       magic  opcode  key len  extras  datatype  vbucket/status  body len   opaque  cas
//! ```
//!
//! - [`decode`] turns the front of a read buffer into one [`Request`]: a
//!   neutral [`Command`](crate::Command) plus a [`BinaryReply`] that remembers
//!   the opcode, the opaque and whether the opcode is quiet. It never
//!   allocates, and never needs more than the header, extras and key of a
//!   value too large to store (see [`decode`]).
//! - [`encode`] writes the answer straight into an [`OutBuf`]: echoed opcode
//!   and opaque, status, CAS, then extras, key and value. Quiet opcodes
//!   swallow their successes (and, for gets, their misses); errors are always
//!   sent.
//! - [`opcode`] and [`status`] name the wire numbers as memcached's
//!   `protocol_binary.h` does.
//!
//! Behaviour follows memcached 1.6.18 (`proto_bin.c`), checked against the
//! real server; where this codec differs on purpose (it skips an unknown
//! opcode's body exactly, and accepts verbosity, which 1.6.18 answers
//! "unknown command"), the item's docs say so.
//!
//! [`Request`]: crate::Request

mod request;
mod response;

#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod tests;

pub use request::decode;
pub use response::encode;

/// First byte of every binary request.
pub const REQUEST_MAGIC: u8 = 0x80;
/// First byte of every binary response.
pub const RESPONSE_MAGIC: u8 = 0x81;
/// Length of every request and response header.
pub const HEADER_LEN: usize = 24;

/// Response status codes, as memcached's `protocol_binary.h` names them.
pub mod status {
    pub const SUCCESS: u16 = 0x00;
    pub const KEY_NOT_FOUND: u16 = 0x01;
    pub const KEY_EXISTS: u16 = 0x02;
    pub const VALUE_TOO_LARGE: u16 = 0x03;
    pub const INVALID_ARGUMENTS: u16 = 0x04;
    pub const ITEM_NOT_STORED: u16 = 0x05;
    pub const NON_NUMERIC: u16 = 0x06;
    pub const AUTH_ERROR: u16 = 0x20;
    pub const AUTH_CONTINUE: u16 = 0x21;
    pub const UNKNOWN_COMMAND: u16 = 0x81;
    pub const OUT_OF_MEMORY: u16 = 0x82;
    pub const NOT_SUPPORTED: u16 = 0x83;
    pub const INTERNAL_ERROR: u16 = 0x84;
    pub const BUSY: u16 = 0x85;
    pub const TEMPORARY_FAILURE: u16 = 0x86;
}

/// Request opcodes, as memcached's `protocol_binary.h` names them. A `Q`
/// suffix is the quiet form: it answers only errors (and, for gets, hits).
pub mod opcode {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCREMENTQ: u8 = 0x15;
    pub const DECREMENTQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const VERBOSITY: u8 = 0x1b;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const SASL_LIST_MECHS: u8 = 0x20;
    pub const SASL_AUTH: u8 = 0x21;
    pub const SASL_STEP: u8 = 0x22;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}
