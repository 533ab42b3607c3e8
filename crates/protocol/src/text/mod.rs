//! memcached's text protocol, classic commands and meta commands, sans-IO.
//!
//! [`decode`] reads one request from the front of a buffer: a command line
//! ended by `\n` (an optional `\r` before it is dropped), split on spaces
//! only, as memcached splits it (a tab or other control byte is part of a
//! token, so it may be part of a key). Storage commands also wait for their
//! data block. Keys and values borrow from the buffer; nothing is allocated
//! for a get, set, delete or incr, however many keys a get names.
//!
//! [`encode`] and [`encode_meta`] write one [`Response`] framed as the request
//! asked (`noreply`, `gets`' CAS column, the meta return flags).
//!
//! Error answers are memcached 1.6.18's, byte for byte, including which are
//! swallowed by `noreply`: memcached suppresses *every* answer to a classic
//! command carrying `noreply`, errors included (a `noreply` client never
//! reads them), except the `ERROR` it sends before looking for `noreply`
//! (wrong token count). Meta commands always answer errors.
//!
//! Parts:
//! - this file: line framing, the classic commands, the classic encoder;
//! - [`meta`]: `mg`/`ms`/`md`/`ma`/`mn`/`me` and their encoder;
//! - `num`: numbers parsed the way memcached's `safe_strto*` parse them.
//!
//! Known differences from memcached, all deliberate:
//! - a line longer than [`Limits::max_line_len`] is answered
//!   `CLIENT_ERROR line too long` and the connection closed (memcached closes
//!   silently after 2048 bytes without a newline, unless the line is a get);
//! - numbers too big for their field are refused where memcached truncates
//!   them to 32 bits (flags `4294967296` would be stored as `0`); exptimes
//!   alone wrap to 32 bits as memcached's do, because libmemcached sends a
//!   negative timeout as `4294967295`;
//! - a NUL byte does not end the line (memcached stops reading a line at it);
//! - `cas` with a CAS unique of `0` is passed on as [`UNMATCHABLE_CAS`], so it
//!   fails as it does in memcached instead of meaning "no compare".
//!
//! Tests: table-driven, next to the code (`tests.rs`), plus `wire_cases.txt`,
//! request bytes and memcached 1.6.18's exact answers, which the Rust tests
//! replay through the codec and `crates/protocol/scripts/check_text_wire.py`
//! replays against a real memcached.

use memchr::memchr;

use crate::{
    ArithOp, Command, Decode, Error, Keys, Limits, MAX_KEY_LEN, OutBuf, Reply, Request, Response,
    StoreMode, TextReply, TextVerb,
};

pub mod meta;
mod num;
#[cfg(test)]
mod tests;

pub use meta::{MetaEcho, encode_meta};

/// What a client's explicit CAS of `0` becomes. In memcached a CAS of 0 never
/// matches (items' CAS values start at 1), while [`Command::Store`] reads 0
/// as "no compare"; this value matches no item either.
pub const UNMATCHABLE_CAS: u64 = u64::MAX;

/// A CAS unique as the client sent it, turned into the model's convention.
fn client_cas(cas: u64) -> u64 {
    if cas == 0 { UNMATCHABLE_CAS } else { cas }
}

/// Decode one text request (classic or meta) from the front of `buf`.
///
/// Returns [`Decode::Incomplete`] until a whole line (and, for a storage
/// command, its data block) has arrived. A value longer than
/// [`Limits::max_value_len`] is not waited for: it decodes to
/// [`Command::TooLarge`] with `consumed` covering the command line only.
pub fn decode<'a>(buf: &'a [u8], limits: &Limits) -> Decode<'a> {
    let window_len = buf.len().min(limits.max_line_len.saturating_add(2));
    let Some(nl) = memchr(b'\n', &buf[..window_len]) else {
        if window_len == limits.max_line_len.saturating_add(2) {
            return line_too_long(window_len);
        }
        return Decode::Incomplete;
    };
    let mut line = &buf[..nl];
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    if line.len() > limits.max_line_len {
        return line_too_long(nl + 1);
    }
    let input = Input {
        buf,
        consumed: nl + 1,
        limits,
    };
    let mut tokens = Tokens::new(line);
    let Some(name) = tokens.next() else {
        return input.error(Error::UnknownCommand, TextVerb::Other, false);
    };
    match name {
        b"get" | b"bget" => input.get(tokens, TextVerb::Get, false),
        b"gets" => input.get(tokens, TextVerb::Gets, false),
        b"gat" => input.get(tokens, TextVerb::Get, true),
        b"gats" => input.get(tokens, TextVerb::Gets, true),
        b"set" => input.storage(tokens, StoreMode::Set, false),
        b"add" => input.storage(tokens, StoreMode::Add, false),
        b"replace" => input.storage(tokens, StoreMode::Replace, false),
        b"append" => input.storage(tokens, StoreMode::Append, false),
        b"prepend" => input.storage(tokens, StoreMode::Prepend, false),
        b"cas" => input.storage(tokens, StoreMode::Set, true),
        b"delete" => input.delete(tokens),
        b"incr" => input.arith(tokens, ArithOp::Incr),
        b"decr" => input.arith(tokens, ArithOp::Decr),
        b"touch" => input.touch(tokens),
        b"flush_all" => input.flush_all(tokens),
        b"verbosity" => input.verbosity(tokens),
        b"stats" => input.request(
            Command::Stats {
                group: trim_spaces(tokens.remainder()),
            },
            TextVerb::Stats,
            false,
        ),
        b"version" => input.request(Command::Version, TextVerb::Other, false),
        // memcached answers quit with nothing at all.
        b"quit" => input.request(Command::Quit, TextVerb::Other, true),
        [b'm', second] => meta::decode(&input, *second, tokens),
        _ => input.unknown(name, tokens),
    }
}

fn line_too_long<'a>(consumed: usize) -> Decode<'a> {
    Decode::Invalid {
        error: Error::client("line too long"),
        reply: Reply::Text(TextReply::default()),
        consumed,
        close: true,
    }
}

/// A whole command line and what surrounds it.
struct Input<'a, 'l> {
    buf: &'a [u8],
    /// Bytes of the line including its `\r\n`.
    consumed: usize,
    limits: &'l Limits,
}

const BAD_FORMAT: &str = "bad command line format";

fn bad_format() -> Error {
    Error::client(BAD_FORMAT)
}

impl<'a> Input<'a, '_> {
    fn request(&self, command: Command<'a>, verb: TextVerb, noreply: bool) -> Decode<'a> {
        Decode::Request {
            request: Request {
                command,
                reply: Reply::Text(TextReply { verb, noreply }),
            },
            consumed: self.consumed,
        }
    }

    fn error(&self, error: Error, verb: TextVerb, noreply: bool) -> Decode<'a> {
        Decode::Invalid {
            error,
            reply: Reply::Text(TextReply { verb, noreply }),
            consumed: self.consumed,
            close: false,
        }
    }

    /// `get <key>*`, `gat <exptime> <key>*` and their CAS forms.
    fn get(&self, mut tokens: Tokens<'a>, verb: TextVerb, touch: bool) -> Decode<'a> {
        let (keys, touch) = if touch {
            let Some(exptime) = tokens.next() else {
                return self.error(Error::UnknownCommand, verb, false);
            };
            let Some(exptime) = num::parse_exptime(exptime) else {
                return self.error(Error::client("invalid exptime argument"), verb, false);
            };
            // `gat <exptime>` with no key is answered `END`, as memcached does.
            (trim_spaces(tokens.remainder()), Some(exptime))
        } else {
            let keys = trim_spaces(tokens.remainder());
            if keys.is_empty() {
                return self.error(Error::UnknownCommand, verb, false);
            }
            (keys, None)
        };
        // A line shorter than the longest key cannot hold a longer one.
        if keys.len() > MAX_KEY_LEN && Tokens::new(keys).any(|key| key.len() > MAX_KEY_LEN) {
            return self.error(bad_format(), verb, false);
        }
        self.request(
            Command::Get {
                keys: Keys::Spaced(keys),
                touch,
            },
            verb,
            false,
        )
    }

    /// `set|add|replace|append|prepend <key> <flags> <exptime> <bytes>
    /// [noreply]` and `cas … <bytes> <cas unique> [noreply]`, then the data.
    fn storage(&self, tokens: Tokens<'a>, mode: StoreMode, with_cas: bool) -> Decode<'a> {
        let verb = TextVerb::Other;
        let args = if with_cas { 5 } else { 4 };
        let (t, n) = collect::<6>(tokens);
        // Exactly the arguments, or one more (`noreply` or anything else).
        if n != args && n != args + 1 {
            return self.error(Error::UnknownCommand, verb, false);
        }
        let noreply = t[n - 1] == b"noreply";
        let key = t[0];
        if key.len() > MAX_KEY_LEN {
            return self.error(bad_format(), verb, noreply);
        }
        let (Some(flags), Some(exptime), Some(len)) = (
            num::parse_u32(t[1]),
            num::parse_exptime(t[2]),
            num::parse_i64(t[3]),
        ) else {
            return self.error(bad_format(), verb, noreply);
        };
        let cas = if with_cas {
            match num::parse_u64(t[4]) {
                Some(cas) => client_cas(cas),
                None => return self.error(bad_format(), verb, noreply),
            }
        } else {
            0
        };
        let Some(len) = data_len(len) else {
            return self.error(bad_format(), verb, noreply);
        };
        if len > self.limits.max_value_len {
            return self.request(
                Command::TooLarge {
                    mode,
                    key,
                    cas,
                    swallow: len + 2,
                },
                verb,
                noreply,
            );
        }
        match self.data_block(len) {
            DataBlock::Incomplete => Decode::Incomplete,
            DataBlock::Bad(consumed) => Decode::Invalid {
                error: Error::client("bad data chunk"),
                reply: Reply::Text(TextReply { verb, noreply }),
                consumed,
                close: false,
            },
            DataBlock::Ok(value, consumed) => Decode::Request {
                request: Request {
                    command: Command::Store {
                        mode,
                        key,
                        flags,
                        exptime,
                        value,
                        cas,
                    },
                    reply: Reply::Text(TextReply { verb, noreply }),
                },
                consumed,
            },
        }
    }

    /// The `len`-byte data block after the line, which must end in `\r\n`.
    fn data_block(&self, len: usize) -> DataBlock<'a> {
        let end = self.consumed + len + 2;
        if self.buf.len() < end {
            return DataBlock::Incomplete;
        }
        let value = &self.buf[self.consumed..self.consumed + len];
        if &self.buf[end - 2..end] == b"\r\n" {
            DataBlock::Ok(value, end)
        } else {
            // memcached drops the whole declared block, then reads on.
            DataBlock::Bad(end)
        }
    }

    /// `delete <key> [0] [noreply]`: memcached still accepts the old hold
    /// time, but only `0`.
    fn delete(&self, tokens: Tokens<'a>) -> Decode<'a> {
        let verb = TextVerb::Other;
        let (t, n) = collect::<4>(tokens);
        if !(1..=3).contains(&n) {
            return self.error(Error::UnknownCommand, verb, false);
        }
        let noreply = n > 1 && t[n - 1] == b"noreply";
        if n > 1 {
            let hold_is_zero = t[1] == b"0";
            let valid =
                (n == 2 && (hold_is_zero || noreply)) || (n == 3 && hold_is_zero && noreply);
            if !valid {
                return self.error(
                    Error::client("bad command line format.  Usage: delete <key> [noreply]"),
                    verb,
                    noreply,
                );
            }
        }
        let key = t[0];
        if key.len() > MAX_KEY_LEN {
            return self.error(bad_format(), verb, noreply);
        }
        self.request(Command::Delete { key, cas: 0 }, verb, noreply)
    }

    /// The shape incr/decr and touch share: `<key> <arg> [noreply]` (any
    /// other third token is ignored, as memcached does).
    /// An error comes back with whether the line said `noreply`.
    fn key_and_arg(tokens: Tokens<'a>) -> Result<KeyArg<'a>, (Error, bool)> {
        let (t, n) = collect::<3>(tokens);
        if n != 2 && n != 3 {
            return Err((Error::UnknownCommand, false));
        }
        let noreply = t[n - 1] == b"noreply";
        let key = t[0];
        if key.len() > MAX_KEY_LEN {
            return Err((bad_format(), noreply));
        }
        Ok(KeyArg {
            key,
            arg: t[1],
            noreply,
        })
    }

    /// `incr|decr <key> <delta> [noreply]`.
    fn arith(&self, tokens: Tokens<'a>, op: ArithOp) -> Decode<'a> {
        let verb = TextVerb::Other;
        let KeyArg {
            key,
            arg: delta,
            noreply,
        } = match Self::key_and_arg(tokens) {
            Ok(parts) => parts,
            Err((error, noreply)) => return self.error(error, verb, noreply),
        };
        let Some(delta) = num::parse_u64(delta) else {
            return self.error(
                Error::client("invalid numeric delta argument"),
                verb,
                noreply,
            );
        };
        self.request(
            Command::Arith {
                key,
                op,
                delta,
                vivify: None,
                cas: 0,
            },
            verb,
            noreply,
        )
    }

    /// `touch <key> <exptime> [noreply]`.
    fn touch(&self, tokens: Tokens<'a>) -> Decode<'a> {
        let verb = TextVerb::Other;
        let KeyArg {
            key,
            arg: exptime,
            noreply,
        } = match Self::key_and_arg(tokens) {
            Ok(parts) => parts,
            Err((error, noreply)) => return self.error(error, verb, noreply),
        };
        let Some(exptime) = num::parse_exptime(exptime) else {
            return self.error(Error::client("invalid exptime argument"), verb, noreply);
        };
        self.request(Command::Touch { key, exptime }, verb, noreply)
    }

    /// `flush_all [delay] [noreply]`. A delay of zero or less flushes now.
    fn flush_all(&self, tokens: Tokens<'a>) -> Decode<'a> {
        let verb = TextVerb::Other;
        let (t, n) = collect::<2>(tokens);
        if n > 2 {
            return self.error(Error::UnknownCommand, verb, false);
        }
        let noreply = n > 0 && t[n - 1] == b"noreply";
        let delay = if n > usize::from(noreply) {
            match num::parse_exptime(t[0]) {
                Some(delay) => delay.max(0),
                None => {
                    return self.error(Error::client("invalid exptime argument"), verb, noreply);
                }
            }
        } else {
            0
        };
        self.request(Command::FlushAll { delay }, verb, noreply)
    }

    /// `verbosity <level> [noreply]`.
    fn verbosity(&self, tokens: Tokens<'a>) -> Decode<'a> {
        let verb = TextVerb::Other;
        let (t, n) = collect::<2>(tokens);
        if n != 1 && n != 2 {
            return self.error(Error::UnknownCommand, verb, false);
        }
        let noreply = t[n - 1] == b"noreply";
        // memcached only clamps the level, so any unsigned number will do.
        let Some(level) = num::parse_u64(t[0]) else {
            return self.error(bad_format(), verb, noreply);
        };
        let level = u32::try_from(level).unwrap_or(u32::MAX);
        self.request(Command::Verbosity { level }, verb, noreply)
    }

    /// Any other command: `ERROR`, except that memcached hangs up without a
    /// word on what looks like an HTTP request line (`GET / HTTP/1.1`).
    fn unknown(&self, name: &[u8], tokens: Tokens<'a>) -> Decode<'a> {
        // memcached dispatches on these first letters before its HTTP check.
        let http_checked = name.len() >= 2
            && !matches!(name[0], b'g' | b's' | b'a' | b'c' | b'i' | b'd' | b't')
            && !(name[0] == b'm' && name.len() == 2);
        let last = tokens.last().unwrap_or(name);
        if http_checked && last.starts_with(b"HTTP/") {
            return Decode::Invalid {
                error: Error::UnknownCommand,
                reply: Reply::Text(TextReply {
                    verb: TextVerb::Other,
                    noreply: true,
                }),
                consumed: self.consumed,
                close: true,
            };
        }
        self.error(Error::UnknownCommand, TextVerb::Other, false)
    }
}

enum DataBlock<'a> {
    Incomplete,
    /// The value and the bytes used by line and block.
    Ok(&'a [u8], usize),
    /// Not ended by `\r\n`: the bytes to drop.
    Bad(usize),
}

/// A declared data length memcached accepts: `0..=INT_MAX - 2`.
fn data_len(len: i64) -> Option<usize> {
    if (0..=i64::from(i32::MAX) - 2).contains(&len) {
        usize::try_from(len).ok()
    } else {
        None
    }
}

/// Collect the tokens after the command name into a fixed array. Returns how
/// many there were, or `N + 1` when there were more than `N` (the array then
/// holds the first `N`).
fn collect<'a, const N: usize>(mut tokens: Tokens<'a>) -> ([&'a [u8]; N], usize) {
    let mut out: [&[u8]; N] = [&[]; N];
    for (i, slot) in out.iter_mut().enumerate() {
        match tokens.next() {
            Some(t) => *slot = t,
            None => return (out, i),
        }
    }
    let n = if tokens.next().is_some() { N + 1 } else { N };
    (out, n)
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    let end = s.iter().rposition(|&b| b != b' ').map_or(start, |i| i + 1);
    &s[start..end]
}

/// Tokens up to this long are scanned byte by byte, longer ones with memchr.
const SHORT_TOKEN: usize = 32;

/// The tokens of a command line: runs of bytes between spaces. Only `' '`
/// separates, as in memcached.
#[derive(Debug, Clone)]
struct Tokens<'a> {
    rest: &'a [u8],
}

impl<'a> Tokens<'a> {
    fn new(line: &'a [u8]) -> Self {
        Tokens { rest: line }
    }

    /// What is left after the tokens taken so far, spaces included.
    fn remainder(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|&b| b != b' ')?;
        let rest = &self.rest[start..];
        // Most tokens are short: a plain loop beats a call into memchr.
        let head = rest.len().min(SHORT_TOKEN);
        let end = match rest[..head].iter().position(|&b| b == b' ') {
            Some(end) => end,
            None => memchr(b' ', &rest[head..]).map_or(rest.len(), |i| head + i),
        };
        self.rest = &rest[end..];
        Some(&rest[..end])
    }
}

/// Append a classic text answer. With `noreply` nothing is written, errors
/// included, as memcached does.
pub fn encode(reply: &TextReply, response: &Response<'_>, out: &mut OutBuf) {
    if reply.noreply {
        return;
    }
    match response {
        Response::Hit(hit) => {
            let value = hit.value.as_slice();
            out.put(b"VALUE ");
            out.put(hit.key);
            out.put_u8(b' ');
            out.put_decimal(u64::from(hit.flags));
            out.put_u8(b' ');
            out.put_decimal(value.len() as u64);
            if reply.verb == TextVerb::Gets {
                out.put_u8(b' ');
                out.put_decimal(hit.cas);
            }
            out.put(b"\r\n");
            out.put_value(&hit.value);
            out.put(b"\r\n");
        }
        Response::Miss { .. } => {}
        Response::End => out.put(b"END\r\n"),
        Response::Stored { .. } => out.put(b"STORED\r\n"),
        Response::NotStored => out.put(b"NOT_STORED\r\n"),
        Response::Exists => out.put(b"EXISTS\r\n"),
        Response::NotFound => out.put(b"NOT_FOUND\r\n"),
        Response::Deleted => out.put(b"DELETED\r\n"),
        Response::Touched { .. } => out.put(b"TOUCHED\r\n"),
        Response::Number { value, .. } => {
            out.put_decimal(*value);
            out.put(b"\r\n");
        }
        Response::Ok => out.put(b"OK\r\n"),
        Response::Version(v) => {
            out.put(b"VERSION ");
            out.put(v.as_bytes());
            out.put(b"\r\n");
        }
        Response::Stat { name, value } => {
            out.put(b"STAT ");
            out.put(name.as_bytes());
            out.put_u8(b' ');
            out.put(value.as_bytes());
            out.put(b"\r\n");
        }
        Response::Debug { key, fields } => put_debug(key, fields, out),
        // The text protocol has no SASL; these only answer binary requests.
        Response::SaslMechs(mechs) => {
            out.put(mechs.as_bytes());
            out.put(b"\r\n");
        }
        // memcached's text authentication (a `set`) answers STORED.
        Response::AuthOk => out.put(b"STORED\r\n"),
        Response::Error(e) => put_error(e, out),
    }
}

/// An error line, without allocating.
fn put_error(error: &Error, out: &mut OutBuf) {
    match error {
        Error::Client(msg) => {
            out.put(b"CLIENT_ERROR ");
            out.put(msg.as_bytes());
        }
        Error::Server(msg) | Error::Unavailable(msg) => {
            out.put(b"SERVER_ERROR ");
            out.put(msg.as_bytes());
        }
        // The other lines are static strings.
        other => out.put(other.text_line().as_bytes()),
    }
    out.put(b"\r\n");
}

/// `<key> <arg> [noreply]`, as incr/decr and touch take them.
struct KeyArg<'a> {
    key: &'a [u8],
    arg: &'a [u8],
    noreply: bool,
}

/// The `me` answer: `ME <key> <fields>`.
fn put_debug(key: &[u8], fields: &str, out: &mut OutBuf) {
    out.put(b"ME ");
    out.put(key);
    out.put_u8(b' ');
    out.put(fields.as_bytes());
    out.put(b"\r\n");
}
