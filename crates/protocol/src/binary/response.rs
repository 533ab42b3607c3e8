//! Encoding one binary answer.
//!
//! Every answer echoes the request's opcode and opaque; the datatype is
//! always raw bytes (0). Statuses and error bodies are memcached's own
//! (`write_bin_error` in `proto_bin.c`): "Not found", "Data exists for key.",
//! "Too large.", "Invalid arguments", "Not stored.", "Non-numeric
//! server-side value for incr or decr", "Auth failure.", "Unknown command",
//! "Out of memory".

use crate::{BinaryReply, Error, OutBuf, Response};

use super::{HEADER_LEN, RESPONSE_MAGIC, opcode, status};

/// Append the binary answer to one request.
///
/// How each neutral [`Response`] is framed, as memcached 1.6.18 frames it:
/// - `Hit`: 4 bytes of flags as extras, the key for getk/gatk (and their
///   quiet forms), then the value, and the item's CAS. A hit for a touch
///   request carries flags and CAS but no value.
/// - `Miss`: nothing for the quiet gets; for getk/gatk, status "not found"
///   with the key and no text; otherwise "not found" with the text
///   `Not found`.
/// - `End`: the empty packet that ends a stat answer; nothing otherwise.
/// - `Stored { cas }`, `Number { cas, .. }`: success with the new CAS (and
///   for a number, its 8 big-endian bytes). `Deleted`, `Touched` and `Ok`
///   are empty successes with CAS 0.
/// - `NotStored`: what memcached says for the opcode: "exists" for add,
///   "not found" for replace, "not stored" for append and prepend.
/// - `Stat`: one packet with the name as key and the value as value.
/// - `Error`: [`Error::binary_status`] with memcached's text; on a stat
///   request, [`Error::UnknownCommand`] (an unknown stats group) is "not
///   found", as memcached answers it.
///
/// Quiet opcodes send no successes and no get misses; errors always go out.
/// Nothing is allocated: the header is built on the stack and the value goes
/// through [`OutBuf::put_value`], so a large shared value is queued, not
/// copied. Lengths beyond what the header's fields hold (keys over 64 KiB,
/// bodies over 4 GiB) are clamped rather than panicking; no item gets near
/// them.
pub fn encode(reply: &BinaryReply, response: &Response<'_>, out: &mut OutBuf) {
    match response {
        Response::Hit(hit) => {
            let key = if reply.with_key {
                clamp_key(hit.key)
            } else {
                &[]
            };
            let value: &[u8] = if reply.opcode == opcode::TOUCH {
                &[]
            } else {
                hit.value.as_slice()
            };
            let header = header(reply, status::SUCCESS, 4, key.len(), value.len(), hit.cas);
            let mut head = [0u8; HEADER_LEN + 4];
            head[..HEADER_LEN].copy_from_slice(&header);
            head[HEADER_LEN..].copy_from_slice(&hit.flags.to_be_bytes());
            out.put(&head);
            out.put(key);
            if !value.is_empty() {
                out.put_value(&hit.value);
            }
        }
        Response::Miss { key } => {
            if reply.quiet {
                return;
            }
            if reply.with_key {
                let key = clamp_key(key);
                let header = header(reply, status::KEY_NOT_FOUND, 0, key.len(), 0, 0);
                out.put(&header);
                out.put(key);
            } else {
                error(reply, status::KEY_NOT_FOUND, out);
            }
        }
        Response::End => {
            if reply.opcode == opcode::STAT {
                packet(reply, status::SUCCESS, 0, b"", b"", out);
            }
        }
        Response::Stored { cas } => success(reply, *cas, b"", out),
        Response::NotStored => {
            let code = match reply.opcode {
                opcode::ADD | opcode::ADDQ => status::KEY_EXISTS,
                opcode::REPLACE | opcode::REPLACEQ => status::KEY_NOT_FOUND,
                _ => status::ITEM_NOT_STORED,
            };
            error(reply, code, out);
        }
        Response::Exists => error(reply, status::KEY_EXISTS, out),
        Response::NotFound => error(reply, status::KEY_NOT_FOUND, out),
        Response::Deleted | Response::Ok => success(reply, 0, b"", out),
        // memcached answers a touch with the item's flags and CAS.
        Response::Touched { flags, cas } => {
            if !reply.quiet {
                out.put(&header(reply, status::SUCCESS, 4, 0, 0, *cas));
                out.put(&flags.to_be_bytes());
            }
        }
        Response::Number { value, cas } => success(reply, *cas, &value.to_be_bytes(), out),
        Response::Version(version) => success(reply, 0, version.as_bytes(), out),
        Response::Stat { name, value } => {
            packet(
                reply,
                status::SUCCESS,
                0,
                name.as_bytes(),
                value.as_bytes(),
                out,
            );
        }
        // `me` has no binary form; should it reach here, it reads as a stat.
        Response::Debug { key, fields } => {
            packet(reply, status::SUCCESS, 0, key, fields.as_bytes(), out);
        }
        Response::SaslMechs(mechs) => success(reply, 0, mechs.as_bytes(), out),
        Response::AuthOk => success(reply, 0, b"Authenticated", out),
        Response::Error(e) => {
            let code = match e {
                Error::UnknownCommand if reply.opcode == opcode::STAT => status::KEY_NOT_FOUND,
                e => e.binary_status(),
            };
            let text = match e {
                Error::Server(m) | Error::Unavailable(m) => m.as_bytes(),
                _ => status_text(code).as_bytes(),
            };
            packet(reply, code, 0, b"", text, out);
        }
    }
}

/// A success with an optional value, unless the opcode is quiet.
fn success(reply: &BinaryReply, cas: u64, value: &[u8], out: &mut OutBuf) {
    if !reply.quiet {
        packet(reply, status::SUCCESS, cas, b"", value, out);
    }
}

/// An error status with memcached's text for it as the value.
fn error(reply: &BinaryReply, code: u16, out: &mut OutBuf) {
    packet(reply, code, 0, b"", status_text(code).as_bytes(), out);
}

/// A packet without extras.
fn packet(reply: &BinaryReply, code: u16, cas: u64, key: &[u8], value: &[u8], out: &mut OutBuf) {
    let key = clamp_key(key);
    out.put(&header(reply, code, 0, key.len(), value.len(), cas));
    out.put(key);
    out.put(value);
}

/// The text memcached sends with an error status (`write_bin_error`).
fn status_text(code: u16) -> &'static str {
    match code {
        status::KEY_NOT_FOUND => "Not found",
        status::KEY_EXISTS => "Data exists for key.",
        status::VALUE_TOO_LARGE => "Too large.",
        status::INVALID_ARGUMENTS => "Invalid arguments",
        status::ITEM_NOT_STORED => "Not stored.",
        status::NON_NUMERIC => "Non-numeric server-side value for incr or decr",
        status::AUTH_ERROR => "Auth failure.",
        status::UNKNOWN_COMMAND => "Unknown command",
        status::OUT_OF_MEMORY => "Out of memory",
        status::NOT_SUPPORTED => "Not supported",
        status::BUSY => "Busy",
        status::TEMPORARY_FAILURE => "Temporary failure",
        _ => "Internal error",
    }
}

/// A response header. `body_len` counts what follows extras and key.
fn header(
    reply: &BinaryReply,
    code: u16,
    extras_len: u8,
    key_len: usize,
    value_len: usize,
    cas: u64,
) -> [u8; HEADER_LEN] {
    let key_len = u16::try_from(key_len).unwrap_or(u16::MAX);
    let body_len = usize::from(extras_len)
        .saturating_add(usize::from(key_len))
        .saturating_add(value_len);
    let body_len = u32::try_from(body_len).unwrap_or(u32::MAX);
    let mut h = [0u8; HEADER_LEN];
    h[0] = RESPONSE_MAGIC;
    h[1] = reply.opcode;
    h[2..4].copy_from_slice(&key_len.to_be_bytes());
    h[4] = extras_len;
    // h[5]: datatype, always raw bytes.
    h[6..8].copy_from_slice(&code.to_be_bytes());
    h[8..12].copy_from_slice(&body_len.to_be_bytes());
    h[12..16].copy_from_slice(&reply.opaque.to_be_bytes());
    h[16..24].copy_from_slice(&cas.to_be_bytes());
    h
}

/// At most the 64 KiB a header's key length can say.
fn clamp_key(key: &[u8]) -> &[u8] {
    &key[..key.len().min(usize::from(u16::MAX))]
}
