//! The meta commands: `mg`, `ms`, `md`, `ma`, `mn`, `me`.
//!
//! A meta command is `<cm> <key> [<datalen>] <flag>*`, each flag one letter
//! with an optional token glued to it (`T30`, `Oabc`). Flags are checked the
//! way memcached 1.6.18's `_meta_flag_preparse` checks them: every flag any
//! meta command knows is accepted (and its token validated) by every meta
//! command, a repeated flag or an unknown one is an error, and flags that ask
//! for something back are answered in the order the client sent them.
//!
//! Not supported, answered with a `CLIENT_ERROR` that says so (the shared
//! [`Command`] model has no room for them, and silently ignoring them would
//! change what the client is told):
//! - `b` (base64 keys): the key would have to be decoded into a new buffer,
//!   and keys here borrow from the read buffer;
//! - `mg N`/`R` (vivify-on-miss and recache "leases", with their `W`/`X`/`Z`
//!   answers) and `I` (invalidate / mark stale) on `md`, and on `ms` with `C`
//!   (without `C`, memcached ignores `ms I` and so does this);
//! - `ma T` (set the TTL) and `ma t` (return it): [`Command::Arith`] carries
//!   no exptime and [`Response::Number`] no TTL.
//!
//! `u` (do not bump in the LRU) is accepted and ignored, like `P` and `L`.

use crate::{
    ArithOp, Command, Decode, Error, Keys, MAX_KEY_LEN, MetaReply, MetaVerb, OutBuf, Reply,
    Request, Response, StoreMode, TextReply, Vivify,
};

use super::num::{parse_exptime, parse_i64, parse_u32, parse_u64};
use super::{BAD_FORMAT, DataBlock, Input, Tokens, bad_format, client_cas, put_error};

/// What a meta answer echoes that a neutral [`Response`] does not carry: the
/// request's key (for `k` on `ms`/`md`/`ma` answers) and the order in which
/// the client sent its return flags, which is the order memcached answers
/// them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetaEcho<'a> {
    pub key: &'a [u8],
    /// Return-flag letters (`O k f c t s h l`), in request order; 0 pads.
    order: [u8; 8],
}

/// The order used when a [`MetaEcho`] records none.
const DEFAULT_ORDER: &[u8; 8] = b"Okfctshl";

impl<'a> MetaEcho<'a> {
    pub fn new(key: &'a [u8]) -> Self {
        MetaEcho { key, order: [0; 8] }
    }

    /// Record that return flag `letter` came next in the request; repeated
    /// or unknown letters are ignored.
    pub fn push(&mut self, letter: u8) {
        if !DEFAULT_ORDER.contains(&letter) || self.order.contains(&letter) {
            return;
        }
        if let Some(slot) = self.order.iter_mut().find(|b| **b == 0) {
            *slot = letter;
        }
    }

    /// The return-flag letters in the order to answer them.
    pub fn order(&self) -> impl Iterator<Item = u8> + '_ {
        let order = if self.order[0] == 0 {
            DEFAULT_ORDER
        } else {
            &self.order
        };
        order.iter().copied().take_while(|&b| b != 0)
    }
}

/// More tokens than this after the command name (key, data length, flags)
/// are refused: memcached's `ntokens > MFLAG_MAX_OPT_LENGTH`.
const MAX_TOKENS: usize = 18;

/// Longest `O` token memcached echoes, the `O` included.
const MAX_OPAQUE_TOKEN: usize = 32;

const BAD_TOKEN: &str = "bad token in command line format";
const INVALID_OR_DUPLICATE: &str = "invalid or duplicate flag";
const TOO_MANY_FLAGS: &str = "options flags too long";
const OPAQUE_TOO_LONG: &str = "opaque token too long";
pub(super) const NO_BASE64: &str = "base64 keys (b flag) are not supported";

/// The return flags, one bit each.
mod ret {
    pub const OPAQUE: u8 = 1;
    pub const KEY: u8 = 1 << 1;
    pub const FLAGS: u8 = 1 << 2;
    pub const CAS: u8 = 1 << 3;
    pub const TTL: u8 = 1 << 4;
    pub const SIZE: u8 = 1 << 5;
    pub const HIT: u8 = 1 << 6;
    pub const LAST_ACCESS: u8 = 1 << 7;
    pub const ALL: u8 = u8::MAX;

    /// The bit of a return-flag letter, 0 for any other byte.
    pub fn bit(letter: u8) -> u8 {
        match letter {
            b'O' => OPAQUE,
            b'k' => KEY,
            b'f' => FLAGS,
            b'c' => CAS,
            b't' => TTL,
            b's' => SIZE,
            b'h' => HIT,
            b'l' => LAST_ACCESS,
            _ => 0,
        }
    }
}

/// Decode `m<second> …`; `tokens` starts after the command name.
pub(super) fn decode<'a>(input: &Input<'a, '_>, second: u8, tokens: Tokens<'a>) -> Decode<'a> {
    match second {
        b'g' => get(input, tokens),
        b's' => set(input, tokens),
        b'd' => delete(input, tokens),
        b'a' => arith(input, tokens),
        b'n' => request(input, Command::Noop, plain(MetaVerb::Noop)),
        b'e' => debug(input, tokens),
        _ => input.error(Error::UnknownCommand, crate::TextVerb::Other, false),
    }
}

fn request<'a>(input: &Input<'a, '_>, command: Command<'a>, reply: MetaReply<'a>) -> Decode<'a> {
    Decode::Request {
        request: Request {
            command,
            reply: Reply::Meta(reply),
        },
        consumed: input.consumed,
    }
}

fn error<'a>(input: &Input<'a, '_>, error: Error, verb: MetaVerb) -> Decode<'a> {
    Decode::Invalid {
        error,
        reply: Reply::Meta(plain(verb)),
        consumed: input.consumed,
        close: false,
    }
}

/// A reply asking for nothing back, for errors, `mn` and `me`.
pub(super) fn plain<'a>(verb: MetaVerb) -> MetaReply<'a> {
    MetaReply {
        verb,
        quiet: false,
        opaque: None,
        key: false,
        value: false,
        flags: false,
        cas: false,
        ttl: false,
        size: false,
        hit_before: false,
        last_access: false,
        echo: MetaEcho::default(),
    }
}

/// The key token of `mg`/`ms`/`md`/`ma`. Without one memcached answers
/// `ERROR`; a key too long is a meta error.
fn key<'a>(tokens: &mut Tokens<'a>) -> Result<&'a [u8], KeyError> {
    match tokens.next() {
        None => Err(KeyError::Missing),
        Some(key) if key.len() > MAX_KEY_LEN => Err(KeyError::TooLong),
        Some(key) => Ok(key),
    }
}

enum KeyError {
    Missing,
    TooLong,
}

fn key_error<'a>(input: &Input<'a, '_>, e: KeyError, verb: MetaVerb) -> Decode<'a> {
    match e {
        KeyError::Missing => input.error(Error::UnknownCommand, crate::TextVerb::Other, false),
        KeyError::TooLong => error(input, bad_format(), verb),
    }
}

/// `mg <key> <flag>*`.
fn get<'a>(input: &Input<'a, '_>, mut tokens: Tokens<'a>) -> Decode<'a> {
    let verb = MetaVerb::Get;
    let key = match key(&mut tokens) {
        Ok(key) => key,
        Err(e) => return key_error(input, e, verb),
    };
    let flags = match Flags::parse(tokens, MAX_TOKENS - 1, ret::ALL) {
        Parsed::Ok(flags) => flags,
        Parsed::TooMany => return error(input, Error::client("options flags are too long"), verb),
        Parsed::Bad(msg) => return error(input, Error::client(msg), verb),
    };
    if flags.opaque_too_long {
        return error(input, Error::client(OPAQUE_TOO_LONG), verb);
    }
    if flags.base64 {
        return error(input, Error::client(NO_BASE64), verb);
    }
    if flags.vivify.is_some() || flags.recache {
        return error(
            input,
            Error::client("mg N and R flags (leases) are not supported"),
            verb,
        );
    }
    request(
        input,
        Command::Get {
            keys: Keys::One(key),
            touch: flags.ttl,
        },
        flags.reply(verb, key),
    )
}

/// `ms <key> <datalen> <flag>*`, then the data block.
fn set<'a>(input: &Input<'a, '_>, mut tokens: Tokens<'a>) -> Decode<'a> {
    let verb = MetaVerb::Set;
    let key = match key(&mut tokens) {
        Ok(key) => key,
        Err(e) => return key_error(input, e, verb),
    };
    let Some(len) = tokens.next() else {
        return error(input, bad_format(), verb);
    };
    // memcached counts the tokens before it reads the data length, and
    // checks the flags after.
    let flags = Flags::parse(tokens, MAX_TOKENS - 2, ret::OPAQUE | ret::KEY | ret::CAS);
    if let Parsed::TooMany = flags {
        return error(input, Error::client(TOO_MANY_FLAGS), verb);
    }
    let Some(len) = parse_i64(len).and_then(super::data_len) else {
        return error(input, bad_format(), verb);
    };
    // From here on memcached drops the data block along with the request.
    let fail = |msg: &'static str| swallow_error(input, len, Error::client(msg), verb);
    let flags = match flags {
        Parsed::Ok(flags) => flags,
        Parsed::Bad(msg) => return fail(msg),
        Parsed::TooMany => unreachable!("handled above"),
    };
    let mode = match flags.mode {
        None | Some(b'S') => StoreMode::Set,
        Some(b'E') => StoreMode::Add,
        Some(b'A') => StoreMode::Append,
        Some(b'P') => StoreMode::Prepend,
        Some(b'R') => StoreMode::Replace,
        Some(_) => return fail("invalid mode for ms M token"),
    };
    if flags.opaque_too_long {
        return fail(OPAQUE_TOO_LONG);
    }
    if flags.base64 {
        return fail(NO_BASE64);
    }
    if flags.invalidate && flags.cas.is_some() {
        return fail("ms I flag (invalidate) is not supported");
    }
    // memcached turns set and replace with a CAS into its `cas` command, and
    // ignores a CAS given to add.
    let (mode, cas) = match (mode, flags.cas) {
        (StoreMode::Add, _) | (_, None) => (mode, 0),
        (StoreMode::Set | StoreMode::Replace, Some(cas)) => (StoreMode::Set, client_cas(cas)),
        (_, Some(cas)) => (mode, client_cas(cas)),
    };
    let reply = flags.reply(verb, key);
    if len > input.limits.max_value_len {
        return request(
            input,
            Command::TooLarge {
                mode,
                key,
                cas,
                swallow: len + 2,
            },
            reply,
        );
    }
    match input.data_block(len) {
        DataBlock::Incomplete => Decode::Incomplete,
        DataBlock::Bad(consumed) => Decode::Invalid {
            error: Error::client("bad data chunk"),
            reply: Reply::Meta(reply),
            consumed,
            close: false,
        },
        DataBlock::Ok(value, consumed) => Decode::Request {
            request: Request {
                command: Command::Store {
                    mode,
                    key,
                    flags: flags.client_flags,
                    exptime: flags.ttl.unwrap_or(0),
                    value,
                    cas,
                },
                reply: Reply::Meta(reply),
            },
            consumed,
        },
    }
}

/// An `ms` error found after the data length was read: memcached answers it
/// and drops the data block. A block too large to wait for cannot be told
/// apart from the commands after it, so the connection is closed instead.
fn swallow_error<'a>(
    input: &Input<'a, '_>,
    len: usize,
    error: Error,
    verb: MetaVerb,
) -> Decode<'a> {
    let reply = Reply::Meta(plain(verb));
    if len > input.limits.max_value_len {
        return Decode::Invalid {
            error,
            reply,
            consumed: input.consumed,
            close: true,
        };
    }
    let end = input.consumed + len + 2;
    if input.buf.len() < end {
        return Decode::Incomplete;
    }
    Decode::Invalid {
        error,
        reply,
        consumed: end,
        close: false,
    }
}

/// `md <key> <flag>*`.
fn delete<'a>(input: &Input<'a, '_>, mut tokens: Tokens<'a>) -> Decode<'a> {
    let verb = MetaVerb::Delete;
    let key = match key(&mut tokens) {
        Ok(key) => key,
        Err(e) => return key_error(input, e, verb),
    };
    let flags = match Flags::parse(tokens, MAX_TOKENS - 1, ret::OPAQUE | ret::KEY) {
        Parsed::Ok(flags) => flags,
        Parsed::TooMany => return error(input, Error::client(TOO_MANY_FLAGS), verb),
        Parsed::Bad(_) => return error(input, Error::client(INVALID_OR_DUPLICATE), verb),
    };
    if flags.opaque_too_long {
        return error(input, Error::client(OPAQUE_TOO_LONG), verb);
    }
    if flags.base64 {
        return error(input, Error::client(NO_BASE64), verb);
    }
    if flags.invalidate {
        return error(
            input,
            Error::client("md I flag (invalidate) is not supported"),
            verb,
        );
    }
    request(
        input,
        Command::Delete {
            key,
            cas: flags.cas.map_or(0, client_cas),
        },
        flags.reply(verb, key),
    )
}

/// `ma <key> <flag>*`.
fn arith<'a>(input: &Input<'a, '_>, mut tokens: Tokens<'a>) -> Decode<'a> {
    let verb = MetaVerb::Arith;
    let key = match key(&mut tokens) {
        Ok(key) => key,
        Err(e) => return key_error(input, e, verb),
    };
    let flags = match Flags::parse(tokens, MAX_TOKENS - 1, ret::OPAQUE | ret::KEY | ret::CAS) {
        Parsed::Ok(flags) => flags,
        Parsed::TooMany => return error(input, Error::client(TOO_MANY_FLAGS), verb),
        Parsed::Bad(_) => return error(input, Error::client(INVALID_OR_DUPLICATE), verb),
    };
    let op = match flags.mode {
        None | Some(b'I' | b'+') => ArithOp::Incr,
        Some(b'D' | b'-') => ArithOp::Decr,
        Some(_) => return error(input, Error::client("invalid mode for ma M token"), verb),
    };
    if flags.opaque_too_long {
        return error(input, Error::client(OPAQUE_TOO_LONG), verb);
    }
    if flags.base64 {
        return error(input, Error::client(NO_BASE64), verb);
    }
    if flags.ttl.is_some() || flags.returns & ret::TTL != 0 {
        return error(
            input,
            Error::client("ma T and t flags are not supported"),
            verb,
        );
    }
    request(
        input,
        Command::Arith {
            key,
            op,
            delta: flags.delta.unwrap_or(1),
            vivify: flags.vivify.map(|exptime| Vivify {
                initial: flags.initial.unwrap_or(0),
                exptime,
            }),
            cas: flags.cas.map_or(0, client_cas),
        },
        flags.reply(verb, key),
    )
}

/// `me <key> [b]`: flags other than a lone `b` are ignored, as memcached does.
fn debug<'a>(input: &Input<'a, '_>, mut tokens: Tokens<'a>) -> Decode<'a> {
    let verb = MetaVerb::Debug;
    let key = match tokens.next() {
        Some(key) if key.len() <= MAX_KEY_LEN => key,
        _ => return error(input, bad_format(), verb),
    };
    if tokens.next() == Some(b"b") {
        return error(input, Error::client(NO_BASE64), verb);
    }
    request(input, Command::MetaDebug { key }, plain(verb))
}

/// The outcome of reading a meta request's flags.
enum Parsed<'a> {
    Ok(Flags<'a>),
    /// More tokens than memcached takes.
    TooMany,
    /// The `CLIENT_ERROR` message memcached gives for `mg` and `ms` (`md` and
    /// `ma` give one message for all).
    Bad(&'static str),
}

/// The flags of one meta request, as memcached's preparse reads them.
#[derive(Debug, Default)]
struct Flags<'a> {
    base64: bool,
    quiet: bool,
    /// `v`
    value: bool,
    /// The return flags asked for ([`ret`] bits), all of them.
    returns: u8,
    /// Those the command answers, in request order.
    order: [u8; 8],
    /// `O<token>`, the token without its `O`.
    opaque: Option<&'a [u8]>,
    opaque_too_long: bool,
    /// `N<ttl>`
    vivify: Option<i64>,
    /// `T<ttl>`
    ttl: Option<i64>,
    /// `R<ttl>`
    recache: bool,
    /// `F<flags>`
    client_flags: u32,
    /// `C<cas>`
    cas: Option<u64>,
    /// `M<mode>`
    mode: Option<u8>,
    /// `J<initial>`
    initial: Option<u64>,
    /// `D<delta>`
    delta: Option<u64>,
    /// `I`
    invalidate: bool,
    /// The [`ret`] bits the command answers.
    allowed: u8,
}

impl<'a> Flags<'a> {
    /// Read the flag tokens: at most `budget` of them, keeping in the answer
    /// order the return flags among `allowed` ([`ret`] bits).
    fn parse(mut tokens: Tokens<'a>, budget: usize, allowed: u8) -> Parsed<'a> {
        let mut f = Flags {
            allowed,
            ..Flags::default()
        };
        let mut seen = 0u128;
        let mut n = 0;
        let mut ordered = 0;
        // An error memcached notes and reads on after; the last message wins.
        let mut failed: Option<&'static str> = None;
        let stop = |n: usize, rest: Tokens<'a>, msg| {
            if n + rest.count() > budget {
                Parsed::TooMany
            } else {
                Parsed::Bad(msg)
            }
        };
        while let Some(tok) = tokens.next() {
            n += 1;
            if n > budget {
                return Parsed::TooMany;
            }
            let (letter, arg) = (tok[0], &tok[1..]);
            // memcached says "duplicate" for any byte past 126 as well.
            if letter >= 127 || seen & (1 << letter) != 0 {
                return stop(n, tokens, "duplicate flag");
            }
            seen |= 1 << letter;
            match letter {
                b'b' => f.base64 = true,
                b'N' => match parse_exptime(arg) {
                    Some(ttl) => f.vivify = Some(ttl),
                    None => failed = Some(BAD_TOKEN),
                },
                b'T' => match parse_exptime(arg) {
                    Some(ttl) => f.ttl = Some(ttl),
                    None => failed = Some(BAD_TOKEN),
                },
                b'R' => match parse_i64(arg) {
                    Some(_) => f.recache = true,
                    None => failed = Some(BAD_TOKEN),
                },
                b'O' | b'k' | b'f' | b'c' | b't' | b's' | b'h' | b'l' => {
                    if letter == b'O' {
                        f.opaque = Some(arg);
                        f.opaque_too_long = tok.len() > MAX_OPAQUE_TOKEN;
                    }
                    let bit = ret::bit(letter);
                    f.returns |= bit;
                    if allowed & bit != 0 {
                        f.order[ordered] = letter;
                        ordered += 1;
                    }
                }
                b'v' => f.value = true,
                b'q' => f.quiet = true,
                b'u' | b'P' | b'L' => {}
                // memcached keeps its previous message for a bad F.
                b'F' => match parse_u32(arg) {
                    Some(flags) => f.client_flags = flags,
                    None => failed = Some(failed.unwrap_or(BAD_FORMAT)),
                },
                b'C' => match parse_u64(arg) {
                    Some(cas) => f.cas = Some(cas),
                    None => failed = Some(BAD_TOKEN),
                },
                b'M' => match arg {
                    &[mode] => f.mode = Some(mode),
                    _ => failed = Some("incorrect length for M token"),
                },
                b'J' => match parse_u64(arg) {
                    Some(initial) => f.initial = Some(initial),
                    None => failed = Some("invalid numeric initial value"),
                },
                b'D' => match parse_u64(arg) {
                    Some(delta) => f.delta = Some(delta),
                    None => failed = Some("invalid numeric delta value"),
                },
                b'I' => f.invalidate = true,
                _ => return stop(n, tokens, "invalid flag"),
            }
        }
        match failed {
            Some(msg) => Parsed::Bad(msg),
            None => Parsed::Ok(f),
        }
    }

    /// The reply framing: the return flags the command answers (memcached
    /// accepts the others and answers nothing for them).
    fn reply(&self, verb: MetaVerb, key: &'a [u8]) -> MetaReply<'a> {
        let r = self.returns & self.allowed;
        MetaReply {
            verb,
            quiet: self.quiet,
            opaque: self.opaque,
            key: r & ret::KEY != 0,
            value: self.value && matches!(verb, MetaVerb::Get | MetaVerb::Arith),
            flags: r & ret::FLAGS != 0,
            cas: r & ret::CAS != 0,
            ttl: r & ret::TTL != 0,
            size: r & ret::SIZE != 0,
            hit_before: r & ret::HIT != 0,
            last_access: r & ret::LAST_ACCESS != 0,
            echo: MetaEcho {
                key,
                order: self.order,
            },
        }
    }
}

/// The values a meta answer can report, where the response has them.
#[derive(Default)]
struct Fields {
    flags: Option<u32>,
    cas: Option<u64>,
    ttl: Option<i64>,
    size: Option<usize>,
    fetched: Option<bool>,
    last_access: Option<u32>,
}

/// Append a meta command answer.
///
/// `q` suppresses only the "nothing interesting" answers, as in memcached:
/// `EN` for `mg`; `HD` for `ms`, `md` and `ma` (and `ma`'s `VA` with `v`).
/// `NS`, `EX`, `NF` and every error are always sent; memcached 1.6.18 also
/// sends `md`'s `NF` under `q`, whatever older docs say.
pub fn encode_meta(reply: &MetaReply<'_>, response: &Response<'_>, out: &mut OutBuf) {
    match response {
        Response::Hit(hit) => {
            let size = hit.value.as_slice().len();
            if reply.value {
                out.put(b"VA ");
                out.put_decimal(size as u64);
            } else {
                out.put(b"HD");
            }
            let fields = Fields {
                flags: Some(hit.flags),
                cas: Some(hit.cas),
                ttl: Some(hit.ttl),
                size: Some(size),
                fetched: Some(hit.fetched),
                last_access: Some(hit.last_access),
            };
            put_flags(reply, hit.key, &fields, out);
            out.put(b"\r\n");
            if reply.value {
                out.put_value(&hit.value);
                out.put(b"\r\n");
            }
        }
        Response::Miss { key } => {
            if reply.verb == MetaVerb::Debug {
                out.put(b"EN\r\n");
            } else if !reply.quiet {
                status(reply, b"EN", key, &Fields::default(), out);
            }
        }
        Response::End => {}
        Response::Stored { cas } => {
            if !reply.quiet {
                let fields = Fields {
                    cas: Some(*cas),
                    ..Fields::default()
                };
                status(reply, b"HD", reply.echo.key, &fields, out);
            }
        }
        Response::NotStored => failure(reply, b"NS", out),
        Response::Exists => failure(reply, b"EX", out),
        Response::NotFound => failure(reply, b"NF", out),
        Response::Deleted | Response::Touched { .. } => {
            if !reply.quiet {
                status(reply, b"HD", reply.echo.key, &Fields::default(), out);
            }
        }
        Response::Number { value, cas } => {
            if reply.quiet {
                return;
            }
            let mut digits = [0u8; 20];
            let digits = decimal(*value, &mut digits);
            if reply.value {
                out.put(b"VA ");
                out.put_decimal(digits.len() as u64);
            } else {
                out.put(b"HD");
            }
            let fields = Fields {
                cas: Some(*cas),
                ..Fields::default()
            };
            put_flags(reply, reply.echo.key, &fields, out);
            out.put(b"\r\n");
            if reply.value {
                out.put(digits);
                out.put(b"\r\n");
            }
        }
        Response::Ok => {
            if reply.verb == MetaVerb::Noop {
                out.put(b"MN\r\n");
            } else if !reply.quiet {
                out.put(b"HD\r\n");
            }
        }
        Response::Debug { key, fields } => super::put_debug(key, fields, out),
        Response::Error(e) => put_error(e, out),
        Response::Version(_)
        | Response::Stat { .. }
        | Response::SaslMechs(_)
        | Response::AuthOk => {
            super::encode(&TextReply::default(), response, out);
        }
    }
}

/// `NS`/`EX`/`NF`: never suppressed. memcached's `ms` reports `c0` with them.
fn failure(reply: &MetaReply<'_>, code: &[u8], out: &mut OutBuf) {
    let fields = Fields {
        cas: (reply.verb == MetaVerb::Set).then_some(0),
        ..Fields::default()
    };
    status(reply, code, reply.echo.key, &fields, out);
}

fn status(reply: &MetaReply<'_>, code: &[u8], key: &[u8], fields: &Fields, out: &mut OutBuf) {
    out.put(code);
    put_flags(reply, key, fields, out);
    out.put(b"\r\n");
}

/// The requested return flags, in request order, each ` <letter><value>`;
/// a flag whose value this answer does not have is left out.
fn put_flags(reply: &MetaReply<'_>, key: &[u8], fields: &Fields, out: &mut OutBuf) {
    for letter in reply.echo.order() {
        match letter {
            b'O' => {
                if let Some(opaque) = reply.opaque {
                    out.put(b" O");
                    out.put(opaque);
                }
            }
            b'k' if reply.key => {
                out.put(b" k");
                out.put(key);
            }
            b'f' if reply.flags => {
                if let Some(flags) = fields.flags {
                    out.put(b" f");
                    out.put_decimal(u64::from(flags));
                }
            }
            b'c' if reply.cas => {
                if let Some(cas) = fields.cas {
                    out.put(b" c");
                    out.put_decimal(cas);
                }
            }
            b't' if reply.ttl => {
                if let Some(ttl) = fields.ttl {
                    out.put(b" t");
                    out.put_signed(ttl);
                }
            }
            b's' if reply.size => {
                if let Some(size) = fields.size {
                    out.put(b" s");
                    out.put_decimal(size as u64);
                }
            }
            b'h' if reply.hit_before => {
                if let Some(fetched) = fields.fetched {
                    out.put(if fetched { b" h1" } else { b" h0" });
                }
            }
            b'l' if reply.last_access => {
                if let Some(la) = fields.last_access {
                    out.put(b" l");
                    out.put_decimal(u64::from(la));
                }
            }
            _ => {}
        }
    }
}

/// `n` in decimal, in the tail of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}
