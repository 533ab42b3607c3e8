//! memcached's text protocol, including the meta commands.

use crate::{Decode, Limits, MetaReply, OutBuf, Response, TextReply};

/// Decode one text request (classic or meta) from the front of `buf`.
pub fn decode<'a>(buf: &'a [u8], limits: &Limits) -> Decode<'a> {
    let _ = (buf, limits);
    todo!("text decoder")
}

/// Append a classic text answer.
pub fn encode(reply: &TextReply, response: &Response<'_>, out: &mut OutBuf) {
    let _ = (reply, response, out);
    todo!("text encoder")
}

/// Append a meta command answer.
pub fn encode_meta(reply: &MetaReply<'_>, response: &Response<'_>, out: &mut OutBuf) {
    let _ = (reply, response, out);
    todo!("meta encoder")
}
