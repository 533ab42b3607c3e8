//! memcached's binary protocol.

use crate::{BinaryReply, Decode, Limits, OutBuf, Response};

/// First byte of every binary request.
pub const REQUEST_MAGIC: u8 = 0x80;
/// First byte of every binary response.
pub const RESPONSE_MAGIC: u8 = 0x81;

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

/// Decode one binary request from the front of `buf`.
pub fn decode<'a>(buf: &'a [u8], limits: &Limits) -> Decode<'a> {
    let _ = (buf, limits);
    todo!("binary decoder")
}

/// Append a binary answer.
pub fn encode(reply: &BinaryReply, response: &Response<'_>, out: &mut OutBuf) {
    let _ = (reply, response, out);
    todo!("binary encoder")
}
