//! Table-driven tests for the text codec: exact bytes in, exact values or
//! bytes out. Expected answers marked "memcached" were checked against
//! memcached 1.6.18; `wire_cases.txt` holds those that can be rechecked
//! mechanically (`crates/protocol/scripts/check_text_wire.py`).

use super::{MetaEcho, UNMATCHABLE_CAS, decode, encode, encode_meta, meta};
use crate::{
    ArithOp, Command, Decode, Error, Hit, Keys, Limits, MetaReply, MetaVerb, OutBuf, Reply,
    Request, Response, StoreMode, TextReply, TextVerb, Value, Vivify,
};

/// Stands for "the whole input" in expected `consumed` values.
const ALL: usize = usize::MAX;

const OTHER: Reply<'static> = Reply::Text(TextReply {
    verb: TextVerb::Other,
    noreply: false,
});
const NOREPLY: Reply<'static> = Reply::Text(TextReply {
    verb: TextVerb::Other,
    noreply: true,
});

fn text(verb: TextVerb, noreply: bool) -> Reply<'static> {
    Reply::Text(TextReply { verb, noreply })
}

fn ok(command: Command<'static>, reply: Reply<'static>) -> Decode<'static> {
    ok_n(command, reply, ALL)
}

fn ok_n(command: Command<'static>, reply: Reply<'static>, consumed: usize) -> Decode<'static> {
    Decode::Request {
        request: Request { command, reply },
        consumed,
    }
}

fn bad(error: Error, reply: Reply<'static>) -> Decode<'static> {
    bad_n(error, reply, ALL)
}

fn bad_n(error: Error, reply: Reply<'static>, consumed: usize) -> Decode<'static> {
    Decode::Invalid {
        error,
        reply,
        consumed,
        close: false,
    }
}

fn client(msg: &'static str) -> Error {
    Error::client(msg)
}

fn unknown() -> Decode<'static> {
    bad(Error::UnknownCommand, OTHER)
}

fn get(keys: &'static [u8]) -> Command<'static> {
    Command::Get {
        keys: Keys::Spaced(keys),
        touch: None,
    }
}

fn set(key: &'static [u8], flags: u32, exptime: i64, value: &'static [u8]) -> Command<'static> {
    Command::Store {
        mode: StoreMode::Set,
        key,
        flags,
        exptime,
        value,
        cas: 0,
    }
}

/// A meta reply as the decoder builds it: `letters` are the return flags in
/// request order, `v` and `q` the value and quiet flags.
fn meta(
    verb: MetaVerb,
    key: &'static [u8],
    letters: &[u8],
    opaque: Option<&'static [u8]>,
    value: bool,
    quiet: bool,
) -> Reply<'static> {
    let mut echo = MetaEcho::new(key);
    for &l in letters {
        echo.push(l);
    }
    let has = |l: u8| letters.contains(&l);
    Reply::Meta(MetaReply {
        verb,
        quiet,
        opaque,
        key: has(b'k'),
        value,
        flags: has(b'f'),
        cas: has(b'c'),
        ttl: has(b't'),
        size: has(b's'),
        hit_before: has(b'h'),
        last_access: has(b'l'),
        echo,
    })
}

/// The reply the decoder attaches to meta errors.
fn meta_err(verb: MetaVerb) -> Reply<'static> {
    Reply::Meta(meta::plain(verb))
}

fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

fn check_decode(limits: &Limits, cases: Vec<(&'static [u8], Decode<'static>)>) {
    for (input, mut want) in cases {
        match &mut want {
            Decode::Request { consumed, .. } | Decode::Invalid { consumed, .. }
                if *consumed == ALL =>
            {
                *consumed = input.len();
            }
            _ => {}
        }
        assert_eq!(decode(input, limits), want, "decoding {}", show(input));
    }
}

#[test]
fn framing() {
    check_decode(
        &Limits::default(),
        vec![
            (b"", Decode::Incomplete),
            (b"get a", Decode::Incomplete),
            (b"get a\r", Decode::Incomplete),
            (b"get a\r\n", ok(get(b"a"), text(TextVerb::Get, false))),
            // memcached takes a bare \n too.
            (b"get a\n", ok(get(b"a"), text(TextVerb::Get, false))),
            // Only one \r is part of the line end: the other is in the key.
            (b"get a\r\r\n", ok(get(b"a\r"), text(TextVerb::Get, false))),
            (b"\r\n", unknown()),
            (b"\n", unknown()),
            (b"   \r\n", unknown()),
            (b"x\r\n", unknown()),
            (b"xy\r\n", unknown()),
            (b"GET a\r\n", unknown()),
            (b"Get a\r\n", unknown()),
            (b"version\r\n", ok(Command::Version, OTHER)),
            (b"  version  \r\n", ok(Command::Version, OTHER)),
            (b"version 1 2\r\n", ok(Command::Version, OTHER)),
            (b"version\r\nget a\r\n", ok_n(Command::Version, OTHER, 9)),
            // memcached hangs up on HTTP without answering.
            (
                b"GET / HTTP/1.1\r\n",
                Decode::Invalid {
                    error: Error::UnknownCommand,
                    reply: NOREPLY,
                    consumed: 16,
                    close: true,
                },
            ),
            (b"foo HTTP/1.0 x\r\n", unknown()),
            (b"delet / HTTP/1.0\r\n", unknown()),
            (b"G HTTP/1.0\r\n", unknown()),
            (
                b"get HTTP/1.1\r\n",
                ok(get(b"HTTP/1.1"), text(TextVerb::Get, false)),
            ),
            // quit answers nothing in text.
            (b"quit\r\n", ok(Command::Quit, NOREPLY)),
            (b"quit now\r\n", ok(Command::Quit, NOREPLY)),
        ],
    );
}

#[test]
fn line_length_limit() {
    let limits = Limits {
        max_line_len: 12,
        ..Limits::default()
    };
    let too_long = |consumed| Decode::Invalid {
        error: client("line too long"),
        reply: OTHER,
        consumed,
        close: true,
    };
    let g = text(TextVerb::Get, false);
    check_decode(
        &limits,
        vec![
            (b"get 12345678\r\n", ok(get(b"12345678"), g.clone())),
            (b"get 12345678\n", ok(get(b"12345678"), g.clone())),
            // Twelve bytes and a \r may still be followed by \n.
            (b"get 12345678\r", Decode::Incomplete),
            (b"get 123456789", Decode::Incomplete),
            (b"get 123456789\r\n", too_long(14)),
            (b"get 123456789\n", too_long(14)),
            (b"get 1234567890", too_long(14)),
            (
                b"get 1234567890123456789012345678901234567890",
                too_long(14),
            ),
            // The data block is not part of the line.
            (
                b"set k 0 0 20\r\n01234567890123456789\r\n",
                ok(set(b"k", 0, 0, b"01234567890123456789"), OTHER),
            ),
        ],
    );
}

#[test]
fn retrieval() {
    let k250: &'static [u8] = &[b'k'; 250];
    let get250: &'static [u8] = Box::leak([b"get ", k250, b"\r\n"].concat().into_boxed_slice());
    let get251: &'static [u8] =
        Box::leak([b"get a ", k250, b"k b\r\n"].concat().into_boxed_slice());
    let g = text(TextVerb::Get, false);
    let gs = text(TextVerb::Gets, false);
    check_decode(
        &Limits::default(),
        vec![
            (b"get a\r\n", ok(get(b"a"), g.clone())),
            (b"get a b c\r\n", ok(get(b"a b c"), g.clone())),
            (b"get  a   b  \r\n", ok(get(b"a   b"), g.clone())),
            (b"bget a\r\n", ok(get(b"a"), g.clone())),
            (b"gets a b\r\n", ok(get(b"a b"), gs.clone())),
            // Only spaces separate: tabs and control bytes are key bytes,
            // as in memcached.
            (
                b"get a\tb c\x01d\x7f\r\n",
                ok(get(b"a\tb c\x01d\x7f"), g.clone()),
            ),
            (get250, ok(get(k250), g.clone())),
            (get251, bad(client("bad command line format"), g.clone())),
            (b"get\r\n", bad(Error::UnknownCommand, g.clone())),
            (b"get \r\n", bad(Error::UnknownCommand, g.clone())),
            (b"gets\r\n", bad(Error::UnknownCommand, gs.clone())),
            (
                b"gat 10 a b\r\n",
                ok(
                    Command::Get {
                        keys: Keys::Spaced(b"a b"),
                        touch: Some(10),
                    },
                    g.clone(),
                ),
            ),
            (
                b"gats -1 a\r\n",
                ok(
                    Command::Get {
                        keys: Keys::Spaced(b"a"),
                        touch: Some(-1),
                    },
                    gs.clone(),
                ),
            ),
            // memcached answers a gat without keys with END.
            (
                b"gat 10\r\n",
                ok(
                    Command::Get {
                        keys: Keys::Spaced(b""),
                        touch: Some(10),
                    },
                    g.clone(),
                ),
            ),
            (b"gat\r\n", bad(Error::UnknownCommand, g.clone())),
            (
                b"gat abc k\r\n",
                bad(client("invalid exptime argument"), g.clone()),
            ),
            (
                b"gat 1x k\r\n",
                bad(client("invalid exptime argument"), g.clone()),
            ),
            (
                b"gats 99999999999999999999 k\r\n",
                bad(client("invalid exptime argument"), gs.clone()),
            ),
        ],
    );
}

#[test]
fn many_keys_are_not_copied() {
    let line: Vec<u8> = (0..100)
        .flat_map(|i| format!(" key{i}").into_bytes())
        .collect();
    let input = [b"get".as_slice(), &line, b"\r\n"].concat();
    let Decode::Request {
        request:
            Request {
                command: Command::Get { keys, touch: None },
                ..
            },
        consumed,
    } = decode(&input, &Limits::default())
    else {
        panic!("not a get");
    };
    assert_eq!(consumed, input.len());
    assert_eq!(keys.count(), 100);
    assert_eq!(keys.iter().nth(42), Some(&b"key42"[..]));
    let Keys::Spaced(raw) = keys else {
        panic!("keys were split")
    };
    assert_eq!(raw.as_ptr(), input[4..].as_ptr(), "keys borrow the input");
}

#[test]
fn storage() {
    let k250: &'static [u8] = &[b'k'; 250];
    let set250: &'static [u8] = Box::leak(
        [b"set ", k250, b" 0 0 1\r\nx\r\n"]
            .concat()
            .into_boxed_slice(),
    );
    let set251: &'static [u8] = Box::leak(
        [b"set ", k250, b"k 0 0 1\r\nx\r\n"]
            .concat()
            .into_boxed_slice(),
    );
    let bad_format = || client("bad command line format");
    let store = |mode, cas| Command::Store {
        mode,
        key: b"k",
        flags: 1,
        exptime: 2,
        value: b"x",
        cas,
    };
    check_decode(
        &Limits::default(),
        vec![
            (b"set k 0 0 1\r\nx\r\n", ok(set(b"k", 0, 0, b"x"), OTHER)),
            (b"set k 0 0 1\nx\r\n", ok(set(b"k", 0, 0, b"x"), OTHER)),
            (b"set k 0 0 0\r\n\r\n", ok(set(b"k", 0, 0, b""), OTHER)),
            // The data block may hold anything, \r\n included.
            (
                b"set k 0 0 4\r\n\r\n\r\n\r\n",
                ok(set(b"k", 0, 0, b"\r\n\r\n"), OTHER),
            ),
            (
                b"set  k  7  30  1 \r\nx\r\n",
                ok(set(b"k", 7, 30, b"x"), OTHER),
            ),
            (
                b"set k 0 0 1 noreply\r\nx\r\n",
                ok(set(b"k", 0, 0, b"x"), NOREPLY),
            ),
            // memcached ignores a sixth token that is not noreply.
            (
                b"set k 0 0 1 junk\r\nx\r\n",
                ok(set(b"k", 0, 0, b"x"), OTHER),
            ),
            (
                b"set k 0 0 1 NOREPLY\r\nx\r\n",
                ok(set(b"k", 0, 0, b"x"), OTHER),
            ),
            (
                b"set k 4294967295 -1 1\r\nx\r\n",
                ok(set(b"k", u32::MAX, -1, b"x"), OTHER),
            ),
            (b"set k +1 -0 1\r\nx\r\n", ok(set(b"k", 1, 0, b"x"), OTHER)),
            // Wrapped to 32 bits, as memcached reads exptimes.
            (
                b"set k 0 9999999999 1\r\nx\r\n",
                ok(set(b"k", 0, 1_410_065_407, b"x"), OTHER),
            ),
            (
                b"set k 0 4294967295 1\r\nx\r\n",
                ok(set(b"k", 0, -1, b"x"), OTHER),
            ),
            (set250, ok(set(k250, 0, 0, b"x"), OTHER)),
            (
                b"set a\x01b 0 0 1\r\nx\r\n",
                ok(set(b"a\x01b", 0, 0, b"x"), OTHER),
            ),
            (b"add k 1 2 1\r\nx\r\n", ok(store(StoreMode::Add, 0), OTHER)),
            (
                b"replace k 1 2 1\r\nx\r\n",
                ok(store(StoreMode::Replace, 0), OTHER),
            ),
            (
                b"append k 1 2 1\r\nx\r\n",
                ok(store(StoreMode::Append, 0), OTHER),
            ),
            (
                b"prepend k 1 2 1 noreply\r\nx\r\n",
                ok(store(StoreMode::Prepend, 0), NOREPLY),
            ),
            (
                b"cas k 1 2 1 99\r\nx\r\n",
                ok(store(StoreMode::Set, 99), OTHER),
            ),
            (
                b"cas k 1 2 1 18446744073709551615 noreply\r\nx\r\n",
                ok(store(StoreMode::Set, u64::MAX), NOREPLY),
            ),
            // A CAS of 0 never matches in memcached.
            (
                b"cas k 1 2 1 0\r\nx\r\n",
                ok(store(StoreMode::Set, UNMATCHABLE_CAS), OTHER),
            ),
            // Errors: memcached does not read the data block, so only the
            // line is consumed; noreply hides them.
            (set251, bad_n(bad_format(), OTHER, set251.len() - 3)),
            (b"set k abc 0 1\r\nx\r\n", bad_n(bad_format(), OTHER, 15)),
            (
                b"set k abc 0 1 noreply\r\nx\r\n",
                bad_n(bad_format(), NOREPLY, 23),
            ),
            (b"set k 0 abc 1\r\n", bad(bad_format(), OTHER)),
            (b"set k 0 0 abc\r\n", bad(bad_format(), OTHER)),
            (b"set k -1 0 1\r\n", bad(bad_format(), OTHER)),
            // Refused here; memcached would store flags 0.
            (b"set k 4294967296 0 1\r\n", bad(bad_format(), OTHER)),
            (b"set k 0 0 -1\r\n", bad(bad_format(), OTHER)),
            (b"set k 0 0 1x\r\n", bad(bad_format(), OTHER)),
            (b"set k 0 0 2147483646\r\n", bad(bad_format(), OTHER)),
            (
                b"set k 0 99999999999999999999 1\r\n",
                bad(bad_format(), OTHER),
            ),
            // The last token decides noreply, wherever it is.
            (b"set k 0 0 noreply\r\n", bad(bad_format(), NOREPLY)),
            (b"cas k 0 0 1 abc\r\n", bad(bad_format(), OTHER)),
            (b"cas k 0 0 1 -1\r\n", bad(bad_format(), OTHER)),
            (
                b"cas k 0 0 1 18446744073709551616\r\n",
                bad(bad_format(), OTHER),
            ),
            (b"set k 0 0\r\n", unknown()),
            (b"set k 0 0 1 noreply extra\r\n", unknown()),
            (b"cas k 0 0 1\r\n", unknown()),
            (b"cas k 0 0 1 1 2 3\r\n", unknown()),
            // Bad data chunk: the declared block and two bytes are dropped.
            (
                b"set k 0 0 1\r\nxyz\r\n",
                bad_n(client("bad data chunk"), OTHER, 16),
            ),
            (
                b"set k 0 0 1\r\nx\n\r\n",
                bad_n(client("bad data chunk"), OTHER, 16),
            ),
            (
                b"set k 0 0 1 noreply\r\nxyz\r\n",
                bad_n(client("bad data chunk"), NOREPLY, 24),
            ),
        ],
    );
}

#[test]
fn too_large_values_are_not_buffered() {
    let limits = Limits {
        max_value_len: 4,
        ..Limits::default()
    };
    let too_large = |key, swallow| Command::TooLarge {
        mode: StoreMode::Set,
        key,
        cas: 0,
        swallow,
    };
    check_decode(
        &limits,
        vec![
            (
                b"set k 0 0 4\r\nabcd\r\n",
                ok(set(b"k", 0, 0, b"abcd"), OTHER),
            ),
            // Answered as soon as the line is in, the data not waited for.
            (b"set k 0 0 5\r\n", ok(too_large(b"k", 7), OTHER)),
            (
                b"set k 0 0 5\r\nabcde\r\n",
                ok_n(too_large(b"k", 7), OTHER, 13),
            ),
            (b"set k 0 0 5 noreply\r\n", ok(too_large(b"k", 7), NOREPLY)),
            (
                b"cas k 0 0 2147483645 1\r\n",
                ok(
                    Command::TooLarge {
                        mode: StoreMode::Set,
                        key: b"k",
                        cas: 1,
                        swallow: 2147483647,
                    },
                    OTHER,
                ),
            ),
            (
                b"ms k 5 T0 q\r\n",
                ok(
                    too_large(b"k", 7),
                    meta(MetaVerb::Set, b"k", b"", None, false, true),
                ),
            ),
            // Errors in the line still come first.
            (
                b"set k x 0 5\r\n",
                bad(client("bad command line format"), OTHER),
            ),
        ],
    );
}

#[test]
fn every_split_point_of_a_set_is_incomplete() {
    let limits = Limits::default();
    let input = b"set key 5 60 10 noreply\r\n0123456789\r\n";
    let want = ok_n(set(b"key", 5, 60, b"0123456789"), NOREPLY, input.len());
    for cut in 0..input.len() {
        assert_eq!(
            decode(&input[..cut], &limits),
            Decode::Incomplete,
            "cut at {cut}: {}",
            show(&input[..cut])
        );
    }
    assert_eq!(decode(input, &limits), want);
    let mut more = input.to_vec();
    more.extend_from_slice(b"get key\r\n");
    assert_eq!(decode(&more, &limits), want);

    let meta = b"ms key 10 F5 T60 q\r\n0123456789\r\n";
    for cut in 0..meta.len() {
        assert_eq!(
            decode(&meta[..cut], &limits),
            Decode::Incomplete,
            "cut at {cut}"
        );
    }
    assert!(matches!(
        decode(meta, &limits),
        Decode::Request { consumed, .. } if consumed == meta.len()
    ));
}

#[test]
fn pipelined_requests_decode_one_at_a_time() {
    let limits = Limits::default();
    let input: &[u8] = b"set a 1 0 3\r\nabc\r\nget a b\nincr n 5 noreply\r\n\
        bogus\r\nmg a v k Oq\r\ndelete a\r\nms b 2 c\r\nhi\r\nmn\r\nset c 0 0 9\r\nabc";
    let want: Vec<(Decode<'static>, usize)> = vec![
        (ok_n(set(b"a", 1, 0, b"abc"), OTHER, 18), 18),
        (ok_n(get(b"a b"), text(TextVerb::Get, false), 8), 8),
        (
            ok_n(
                Command::Arith {
                    key: b"n",
                    op: ArithOp::Incr,
                    delta: 5,
                    vivify: None,
                    cas: 0,
                },
                NOREPLY,
                18,
            ),
            18,
        ),
        (bad_n(Error::UnknownCommand, OTHER, 7), 7),
        (
            ok_n(
                Command::Get {
                    keys: Keys::One(b"a"),
                    touch: None,
                },
                meta(MetaVerb::Get, b"a", b"kO", Some(b"q"), true, false),
                13,
            ),
            13,
        ),
        (ok_n(Command::Delete { key: b"a", cas: 0 }, OTHER, 10), 10),
        (
            ok_n(
                set(b"b", 0, 0, b"hi"),
                meta(MetaVerb::Set, b"b", b"c", None, false, false),
                14,
            ),
            14,
        ),
        (ok_n(Command::Noop, meta_err(MetaVerb::Noop), 4), 4),
    ];
    let mut pos = 0;
    for (expected, step) in want {
        assert_eq!(decode(&input[pos..], &limits), expected, "at {pos}");
        pos += step;
    }
    assert_eq!(decode(&input[pos..], &limits), Decode::Incomplete);
    assert_eq!(&input[pos..], b"set c 0 0 9\r\nabc");
}

#[test]
fn delete_touch_arith() {
    let k250: &'static [u8] = &[b'k'; 250];
    let del251: &'static [u8] = Box::leak(
        [b"delete ", k250, b"k noreply\r\n"]
            .concat()
            .into_boxed_slice(),
    );
    let del = |key| Command::Delete { key, cas: 0 };
    let usage = || client("bad command line format.  Usage: delete <key> [noreply]");
    let arith = |op, delta| Command::Arith {
        key: b"n",
        op,
        delta,
        vivify: None,
        cas: 0,
    };
    let touch = |exptime| Command::Touch { key: b"k", exptime };
    check_decode(
        &Limits::default(),
        vec![
            (b"delete k\r\n", ok(del(b"k"), OTHER)),
            (b"delete k 0\r\n", ok(del(b"k"), OTHER)),
            (b"delete k noreply\r\n", ok(del(b"k"), NOREPLY)),
            (b"delete k 0 noreply\r\n", ok(del(b"k"), NOREPLY)),
            (b"delete k 5\r\n", bad(usage(), OTHER)),
            (b"delete k 0 junk\r\n", bad(usage(), OTHER)),
            // memcached swallows these errors: noreply was seen.
            (b"delete k 5 noreply\r\n", bad(usage(), NOREPLY)),
            (b"delete k noreply noreply\r\n", bad(usage(), NOREPLY)),
            (b"delete\r\n", unknown()),
            (b"delete k a b c\r\n", unknown()),
            (del251, bad(client("bad command line format"), NOREPLY)),
            (b"incr n 1\r\n", ok(arith(ArithOp::Incr, 1), OTHER)),
            (
                b"decr n 18446744073709551615\r\n",
                ok(arith(ArithOp::Decr, u64::MAX), OTHER),
            ),
            (
                b"incr n +7 noreply\r\n",
                ok(arith(ArithOp::Incr, 7), NOREPLY),
            ),
            (b"incr n 01 2\r\n", ok(arith(ArithOp::Incr, 1), OTHER)),
            (b"incr n \t1\t\r\n", ok(arith(ArithOp::Incr, 1), OTHER)),
            (
                b"incr n 18446744073709551616\r\n",
                bad(client("invalid numeric delta argument"), OTHER),
            ),
            (
                b"incr n -1\r\n",
                bad(client("invalid numeric delta argument"), OTHER),
            ),
            (
                b"incr n abc\r\n",
                bad(client("invalid numeric delta argument"), OTHER),
            ),
            (
                b"incr n abc noreply\r\n",
                bad(client("invalid numeric delta argument"), NOREPLY),
            ),
            (b"incr n\r\n", unknown()),
            (b"decr n 1 2 3\r\n", unknown()),
            (b"touch k 10\r\n", ok(touch(10), OTHER)),
            (b"touch k -1 noreply\r\n", ok(touch(-1), NOREPLY)),
            (b"touch k 10 junk\r\n", ok(touch(10), OTHER)),
            (
                b"touch k abc\r\n",
                bad(client("invalid exptime argument"), OTHER),
            ),
            (b"touch k\r\n", unknown()),
        ],
    );
}

#[test]
fn admin_commands() {
    let flush = |delay| Command::FlushAll { delay };
    let stats = |group| Command::Stats { group };
    let st = text(TextVerb::Stats, false);
    check_decode(
        &Limits::default(),
        vec![
            (b"flush_all\r\n", ok(flush(0), OTHER)),
            (b"flush_all 0\r\n", ok(flush(0), OTHER)),
            (b"flush_all 30\r\n", ok(flush(30), OTHER)),
            // A negative delay flushes now.
            (b"flush_all -1\r\n", ok(flush(0), OTHER)),
            (b"flush_all 1 2\r\n", ok(flush(1), OTHER)),
            (b"flush_all noreply\r\n", ok(flush(0), NOREPLY)),
            (b"flush_all 10 noreply\r\n", ok(flush(10), NOREPLY)),
            (
                b"flush_all abc\r\n",
                bad(client("invalid exptime argument"), OTHER),
            ),
            (
                b"flush_all noreply 5\r\n",
                bad(client("invalid exptime argument"), OTHER),
            ),
            (b"flush_all 1 2 3\r\n", unknown()),
            (
                b"verbosity 1\r\n",
                ok(Command::Verbosity { level: 1 }, OTHER),
            ),
            (
                b"verbosity 1 2\r\n",
                ok(Command::Verbosity { level: 1 }, OTHER),
            ),
            (
                b"verbosity 99999999999 noreply\r\n",
                ok(Command::Verbosity { level: u32::MAX }, NOREPLY),
            ),
            (
                b"verbosity abc\r\n",
                bad(client("bad command line format"), OTHER),
            ),
            (
                b"verbosity noreply\r\n",
                bad(client("bad command line format"), NOREPLY),
            ),
            (b"verbosity\r\n", unknown()),
            (b"verbosity 1 2 3\r\n", unknown()),
            (b"stats\r\n", ok(stats(b""), st.clone())),
            (b"stats   \r\n", ok(stats(b""), st.clone())),
            (b"stats settings\r\n", ok(stats(b"settings"), st.clone())),
            (b"stats  items  \r\n", ok(stats(b"items"), st.clone())),
            (
                b"stats cachedump 1 2\r\n",
                ok(stats(b"cachedump 1 2"), st.clone()),
            ),
            (b"shutdown\r\n", unknown()),
        ],
    );
}

#[test]
fn meta_get() {
    let k250: &'static [u8] = &[b'k'; 250];
    let mg250: &'static [u8] = Box::leak([b"mg ", k250, b" v\r\n"].concat().into_boxed_slice());
    let mg251: &'static [u8] = Box::leak([b"mg ", k250, b"k v\r\n"].concat().into_boxed_slice());
    let mg = |key, touch| Command::Get {
        keys: Keys::One(key),
        touch,
    };
    let err = |msg| bad(client(msg), meta_err(MetaVerb::Get));
    check_decode(
        &Limits::default(),
        vec![
            (
                b"mg k\r\n",
                ok(
                    mg(b"k", None),
                    meta(MetaVerb::Get, b"k", b"", None, false, false),
                ),
            ),
            (
                b"mg   k   v  \r\n",
                ok(
                    mg(b"k", None),
                    meta(MetaVerb::Get, b"k", b"", None, true, false),
                ),
            ),
            (
                b"mg k v f c t s k Oabc q h l\r\n",
                ok(
                    mg(b"k", None),
                    meta(MetaVerb::Get, b"k", b"fctskOhl", Some(b"abc"), true, true),
                ),
            ),
            (
                b"mg k l h O k s t c f\r\n",
                ok(
                    mg(b"k", None),
                    meta(MetaVerb::Get, b"k", b"lhOkstcf", Some(b""), false, false),
                ),
            ),
            // T touches; ignored and validated-only flags change nothing.
            (
                b"mg k T-1 u P L F1 C5 J5 MX I D1\r\n",
                ok(
                    mg(b"k", Some(-1)),
                    meta(MetaVerb::Get, b"k", b"", None, false, false),
                ),
            ),
            (
                b"mg k O1234567890123456789012345678901\r\n",
                ok(
                    mg(b"k", None),
                    meta(
                        MetaVerb::Get,
                        b"k",
                        b"O",
                        Some(b"1234567890123456789012345678901"),
                        false,
                        false,
                    ),
                ),
            ),
            (
                mg250,
                ok(
                    mg(k250, None),
                    meta(MetaVerb::Get, k250, b"", None, true, false),
                ),
            ),
            (
                b"mg \x01\t v\r\n",
                ok(
                    mg(b"\x01\t", None),
                    meta(MetaVerb::Get, b"\x01\t", b"", None, true, false),
                ),
            ),
            (b"mg\r\n", unknown()),
            (mg251, err("bad command line format")),
            (b"mg k v v\r\n", err("duplicate flag")),
            (b"mg k \xff\r\n", err("duplicate flag")),
            (b"mg k zz\r\n", err("invalid flag")),
            (b"mg k Tabc\r\n", err("bad token in command line format")),
            (b"mg k T\r\n", err("bad token in command line format")),
            (b"mg k Dx\r\n", err("invalid numeric delta value")),
            (b"mg k Jx\r\n", err("invalid numeric initial value")),
            (b"mg k Fx\r\n", err("bad command line format")),
            (b"mg k F4294967296\r\n", err("bad command line format")),
            (b"mg k Tx Fx\r\n", err("bad token in command line format")),
            (b"mg k Tx Dx\r\n", err("invalid numeric delta value")),
            (b"mg k MEE\r\n", err("incorrect length for M token")),
            (
                b"mg k O12345678901234567890123456789012\r\n",
                err("opaque token too long"),
            ),
            (
                b"mg k 1 2 3 4 5 6 7 8 9 0 a b c d e f g h\r\n",
                err("options flags are too long"),
            ),
            (
                b"mg k 1 2 3 4 5 6 7 8 9 0 a b c d e f g\r\n",
                err("invalid flag"),
            ),
            // Not supported here.
            (b"mg aw== b v\r\n", err(meta::NO_BASE64)),
            (
                b"mg k N30 v\r\n",
                err("mg N and R flags (leases) are not supported"),
            ),
            (
                b"mg k R30 v\r\n",
                err("mg N and R flags (leases) are not supported"),
            ),
            (b"mn\r\n", ok(Command::Noop, meta_err(MetaVerb::Noop))),
            (b"mn foo\r\n", ok(Command::Noop, meta_err(MetaVerb::Noop))),
            (b"mx\r\n", unknown()),
            (
                b"me k\r\n",
                ok(Command::MetaDebug { key: b"k" }, meta_err(MetaVerb::Debug)),
            ),
            (
                b"me k x y\r\n",
                ok(Command::MetaDebug { key: b"k" }, meta_err(MetaVerb::Debug)),
            ),
            (
                b"me\r\n",
                bad(client("bad command line format"), meta_err(MetaVerb::Debug)),
            ),
            (
                b"me aw== b\r\n",
                bad(client(meta::NO_BASE64), meta_err(MetaVerb::Debug)),
            ),
        ],
    );
}

#[test]
fn meta_set() {
    let store = |mode, flags, exptime, cas| Command::Store {
        mode,
        key: b"k",
        flags,
        exptime,
        value: b"hi",
        cas,
    };
    let r =
        |letters: &[u8], opaque, quiet| meta(MetaVerb::Set, b"k", letters, opaque, false, quiet);
    let e = || meta_err(MetaVerb::Set);
    let limits = Limits {
        max_value_len: 16,
        ..Limits::default()
    };
    check_decode(
        &limits,
        vec![
            (
                b"ms k 2\r\nhi\r\n",
                ok(store(StoreMode::Set, 0, 0, 0), r(b"", None, false)),
            ),
            (
                b"ms k 2 F5 T-1 c k Oab q\r\nhi\r\n",
                ok(
                    store(StoreMode::Set, 5, -1, 0),
                    r(b"ckO", Some(b"ab"), true),
                ),
            ),
            // v, t, f, … are accepted and answer nothing for ms.
            (
                b"ms k 2 v t f s h l u N5 R5 P L D5 J5\r\nhi\r\n",
                ok(store(StoreMode::Set, 0, 0, 0), r(b"", None, false)),
            ),
            (
                b"ms k 2 MS\r\nhi\r\n",
                ok(store(StoreMode::Set, 0, 0, 0), r(b"", None, false)),
            ),
            (
                b"ms k 2 ME\r\nhi\r\n",
                ok(store(StoreMode::Add, 0, 0, 0), r(b"", None, false)),
            ),
            (
                b"ms k 2 MA\r\nhi\r\n",
                ok(store(StoreMode::Append, 0, 0, 0), r(b"", None, false)),
            ),
            (
                b"ms k 2 MP\r\nhi\r\n",
                ok(store(StoreMode::Prepend, 0, 0, 0), r(b"", None, false)),
            ),
            (
                b"ms k 2 MR\r\nhi\r\n",
                ok(store(StoreMode::Replace, 0, 0, 0), r(b"", None, false)),
            ),
            // With a CAS, set and replace are memcached's cas; add ignores it.
            (
                b"ms k 2 C7\r\nhi\r\n",
                ok(store(StoreMode::Set, 0, 0, 7), r(b"", None, false)),
            ),
            (
                b"ms k 2 MR C7\r\nhi\r\n",
                ok(store(StoreMode::Set, 0, 0, 7), r(b"", None, false)),
            ),
            (
                b"ms k 2 ME C7\r\nhi\r\n",
                ok(store(StoreMode::Add, 0, 0, 0), r(b"", None, false)),
            ),
            (
                b"ms k 2 MA C7\r\nhi\r\n",
                ok(store(StoreMode::Append, 0, 0, 7), r(b"", None, false)),
            ),
            (
                b"ms k 2 C0\r\nhi\r\n",
                ok(
                    store(StoreMode::Set, 0, 0, UNMATCHABLE_CAS),
                    r(b"", None, false),
                ),
            ),
            // I without C does nothing in memcached.
            (
                b"ms k 2 I\r\nhi\r\n",
                ok(store(StoreMode::Set, 0, 0, 0), r(b"", None, false)),
            ),
            (
                b"ms k 0\r\n\r\n",
                ok(
                    Command::Store {
                        mode: StoreMode::Set,
                        key: b"k",
                        flags: 0,
                        exptime: 0,
                        value: b"",
                        cas: 0,
                    },
                    r(b"", None, false),
                ),
            ),
            (b"ms k 2\r\nh", Decode::Incomplete),
            // Errors before the data length leave the data to be read as a
            // command; later ones drop it.
            (b"ms\r\n", unknown()),
            (b"ms k\r\n", bad(client("bad command line format"), e())),
            (
                b"ms k abc\r\nhi\r\n",
                bad_n(client("bad command line format"), e(), 10),
            ),
            (
                b"ms k -1\r\nhi\r\n",
                bad_n(client("bad command line format"), e(), 9),
            ),
            (
                b"ms k 2 1 2 3 4 5 6 7 8 9 0 a b c d e f g\r\nhi\r\n",
                bad_n(client("options flags too long"), e(), 42),
            ),
            (
                b"ms k 2 zz\r\nhi\r\nmn\r\n",
                bad_n(client("invalid flag"), e(), 15),
            ),
            (b"ms k 2 zz\r\nhi\r", Decode::Incomplete),
            (b"ms k 2 c c\r\nhi\r\n", bad(client("duplicate flag"), e())),
            (
                b"ms k 2 MX\r\nhi\r\n",
                bad(client("invalid mode for ms M token"), e()),
            ),
            (
                b"ms k 2 MEE\r\nhi\r\n",
                bad(client("incorrect length for M token"), e()),
            ),
            (
                b"ms k 2 Fabc\r\nhi\r\n",
                bad(client("bad command line format"), e()),
            ),
            (
                b"ms k 2 F4294967296\r\nhi\r\n",
                bad(client("bad command line format"), e()),
            ),
            (
                b"ms k 2 Tabc\r\nhi\r\n",
                bad(client("bad token in command line format"), e()),
            ),
            (
                b"ms k 2 O12345678901234567890123456789012\r\nhi\r\n",
                bad(client("opaque token too long"), e()),
            ),
            (
                b"ms k 2 O12345678901234567890123456789012 MX\r\nhi\r\n",
                bad(client("invalid mode for ms M token"), e()),
            ),
            (b"ms aw== 2 b\r\nhi\r\n", bad(client(meta::NO_BASE64), e())),
            (
                b"ms k 2 I C5\r\nhi\r\n",
                bad(client("ms I flag (invalidate) is not supported"), e()),
            ),
            // An error with a block too large to wait for closes.
            (
                b"ms k 17 zz\r\n",
                Decode::Invalid {
                    error: client("invalid flag"),
                    reply: e(),
                    consumed: 12,
                    close: true,
                },
            ),
            // Bad data chunk: always answered in meta, even with q.
            (
                b"ms k 2 q\r\nhiX\r\n",
                bad_n(client("bad data chunk"), r(b"", None, true), 14),
            ),
        ],
    );
}

#[test]
fn meta_delete_and_arith() {
    let r = |verb, letters: &[u8], opaque, value, quiet| {
        meta(verb, b"k", letters, opaque, value, quiet)
    };
    let de = || meta_err(MetaVerb::Delete);
    let ae = || meta_err(MetaVerb::Arith);
    let arith = |op, delta, vivify, cas| Command::Arith {
        key: b"k",
        op,
        delta,
        vivify,
        cas,
    };
    check_decode(
        &Limits::default(),
        vec![
            (
                b"md k\r\n",
                ok(
                    Command::Delete { key: b"k", cas: 0 },
                    r(MetaVerb::Delete, b"", None, false, false),
                ),
            ),
            (
                b"md k q Oa k C9 c t f s v T30\r\n",
                ok(
                    Command::Delete { key: b"k", cas: 9 },
                    r(MetaVerb::Delete, b"Ok", Some(b"a"), false, true),
                ),
            ),
            (
                b"md k C0\r\n",
                ok(
                    Command::Delete {
                        key: b"k",
                        cas: UNMATCHABLE_CAS,
                    },
                    r(MetaVerb::Delete, b"", None, false, false),
                ),
            ),
            (b"md\r\n", unknown()),
            (
                b"md k zz\r\n",
                bad(client("invalid or duplicate flag"), de()),
            ),
            (
                b"md k v v\r\n",
                bad(client("invalid or duplicate flag"), de()),
            ),
            (
                b"md k Cx\r\n",
                bad(client("invalid or duplicate flag"), de()),
            ),
            (
                b"md k O12345678901234567890123456789012\r\n",
                bad(client("opaque token too long"), de()),
            ),
            (
                b"md k 1 2 3 4 5 6 7 8 9 0 a b c d e f g h\r\n",
                bad(client("options flags too long"), de()),
            ),
            (
                b"md k I\r\n",
                bad(client("md I flag (invalidate) is not supported"), de()),
            ),
            (
                b"ma k\r\n",
                ok(
                    arith(ArithOp::Incr, 1, None, 0),
                    r(MetaVerb::Arith, b"", None, false, false),
                ),
            ),
            (
                b"ma k N0 J10 v\r\n",
                ok(
                    arith(
                        ArithOp::Incr,
                        1,
                        Some(Vivify {
                            initial: 10,
                            exptime: 0,
                        }),
                        0,
                    ),
                    r(MetaVerb::Arith, b"", None, true, false),
                ),
            ),
            (
                b"ma k v D5 MD c k Oq q C3\r\n",
                ok(
                    arith(ArithOp::Decr, 5, None, 3),
                    r(MetaVerb::Arith, b"ckO", Some(b"q"), true, true),
                ),
            ),
            (
                b"ma k M- D18446744073709551615 N-1\r\n",
                ok(
                    arith(
                        ArithOp::Decr,
                        u64::MAX,
                        Some(Vivify {
                            initial: 0,
                            exptime: -1,
                        }),
                        0,
                    ),
                    r(MetaVerb::Arith, b"", None, false, false),
                ),
            ),
            // J alone does nothing; f, s, h, l answer nothing for ma.
            (
                b"ma k M+ J5 f s h l\r\n",
                ok(
                    arith(ArithOp::Incr, 1, None, 0),
                    r(MetaVerb::Arith, b"", None, false, false),
                ),
            ),
            (
                b"ma k MX\r\n",
                bad(client("invalid mode for ma M token"), ae()),
            ),
            (
                b"ma k MII\r\n",
                bad(client("invalid or duplicate flag"), ae()),
            ),
            (
                b"ma k D-1\r\n",
                bad(client("invalid or duplicate flag"), ae()),
            ),
            (
                b"ma k D18446744073709551616\r\n",
                bad(client("invalid or duplicate flag"), ae()),
            ),
            (
                b"ma k Nx\r\n",
                bad(client("invalid or duplicate flag"), ae()),
            ),
            (
                b"ma k T30\r\n",
                bad(client("ma T and t flags are not supported"), ae()),
            ),
            (
                b"ma k t\r\n",
                bad(client("ma T and t flags are not supported"), ae()),
            ),
            (b"ma\r\n", unknown()),
        ],
    );
}

fn encoded(reply: &Reply<'_>, responses: &[Response<'_>]) -> Vec<u8> {
    let mut out = OutBuf::new();
    for r in responses {
        crate::encode(reply, r, &mut out);
    }
    out.to_vec()
}

fn hit<'a>(key: &'a [u8], value: &'a [u8]) -> Hit<'a> {
    Hit {
        key,
        flags: 5,
        cas: 28,
        value: Value::Slice(value),
        ttl: -1,
        last_access: 0,
        fetched: false,
    }
}

#[test]
fn encode_classic() {
    let g = text(TextVerb::Get, false);
    let gs = text(TextVerb::Gets, false);
    let cases: Vec<(Reply<'static>, Vec<Response<'static>>, &[u8])> = vec![
        (
            g.clone(),
            vec![
                Response::Hit(hit(b"a", b"hi")),
                Response::Miss { key: b"b" },
                Response::Hit(hit(b"c", b"")),
                Response::End,
            ],
            b"VALUE a 5 2\r\nhi\r\nVALUE c 5 0\r\n\r\nEND\r\n",
        ),
        (
            gs.clone(),
            vec![Response::Hit(hit(b"a", b"hi")), Response::End],
            b"VALUE a 5 2 28\r\nhi\r\nEND\r\n",
        ),
        (
            gs,
            vec![Response::Hit(Hit {
                flags: u32::MAX,
                cas: u64::MAX,
                ..hit(b"k", b"x")
            })],
            b"VALUE k 4294967295 1 18446744073709551615\r\nx\r\n",
        ),
        (g.clone(), vec![Response::End], b"END\r\n"),
        (OTHER, vec![Response::Stored { cas: 9 }], b"STORED\r\n"),
        (OTHER, vec![Response::NotStored], b"NOT_STORED\r\n"),
        (OTHER, vec![Response::Exists], b"EXISTS\r\n"),
        (OTHER, vec![Response::NotFound], b"NOT_FOUND\r\n"),
        (OTHER, vec![Response::Deleted], b"DELETED\r\n"),
        (
            OTHER,
            vec![Response::Touched { flags: 0, cas: 0 }],
            b"TOUCHED\r\n",
        ),
        (
            OTHER,
            vec![Response::Number {
                value: u64::MAX,
                cas: 3,
            }],
            b"18446744073709551615\r\n",
        ),
        (OTHER, vec![Response::Number { value: 0, cas: 3 }], b"0\r\n"),
        (OTHER, vec![Response::Ok], b"OK\r\n"),
        (
            OTHER,
            vec![Response::Version("1.6.18")],
            b"VERSION 1.6.18\r\n",
        ),
        (
            text(TextVerb::Stats, false),
            vec![
                Response::Stat {
                    name: "pid",
                    value: "42",
                },
                Response::Stat {
                    name: "version",
                    value: "1.6.18",
                },
                Response::End,
            ],
            b"STAT pid 42\r\nSTAT version 1.6.18\r\nEND\r\n",
        ),
        (
            OTHER,
            vec![Response::Error(Error::UnknownCommand)],
            b"ERROR\r\n",
        ),
        (
            OTHER,
            vec![Response::Error(client("bad data chunk"))],
            b"CLIENT_ERROR bad data chunk\r\n",
        ),
        (
            OTHER,
            vec![Response::Error(Error::server("out of memory"))],
            b"SERVER_ERROR out of memory\r\n",
        ),
        (
            OTHER,
            vec![Response::Error(Error::Unavailable("node not ready".into()))],
            b"SERVER_ERROR node not ready\r\n",
        ),
        (
            OTHER,
            vec![Response::Error(Error::TooLarge)],
            b"SERVER_ERROR object too large for cache\r\n",
        ),
        (
            OTHER,
            vec![Response::Error(Error::OutOfMemory)],
            b"SERVER_ERROR out of memory storing object\r\n",
        ),
        (
            OTHER,
            vec![Response::Error(Error::NonNumeric)],
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
        // noreply: nothing at all, errors included (memcached).
        (
            NOREPLY,
            vec![
                Response::Stored { cas: 1 },
                Response::NotFound,
                Response::Number { value: 1, cas: 1 },
                Response::Ok,
                Response::Error(Error::TooLarge),
                Response::Error(client("bad data chunk")),
            ],
            b"",
        ),
    ];
    for (reply, responses, want) in cases {
        assert_eq!(
            show(&encoded(&reply, &responses)),
            show(want),
            "{responses:?}"
        );
    }
}

#[test]
fn large_shared_values_are_queued_not_copied() {
    let big = crate::Bytes::from(vec![b'z'; crate::ZERO_COPY_MIN * 2]);
    let mut out = OutBuf::new();
    let reply = TextReply {
        verb: TextVerb::Get,
        noreply: false,
    };
    encode(
        &reply,
        &Response::Hit(Hit {
            value: Value::Shared(big.clone()),
            ..hit(b"k", b"")
        }),
        &mut out,
    );
    let mut slices = [std::io::IoSlice::new(&[]); 4];
    assert_eq!(out.io_slices(&mut slices), 3);
    assert_eq!(slices[1].as_ptr(), big.as_ptr(), "the value was copied");
    let all = out.to_vec();
    assert!(all.starts_with(b"VALUE k 5 2048\r\nzz"));
    assert!(all.ends_with(b"zz\r\n"));
}

/// Decode `request`, answer it with `responses`, compare with `want`.
fn exchange(request: &[u8], responses: &[Response<'_>], want: &[u8]) {
    let Decode::Request { request: req, .. } = decode(request, &Limits::default()) else {
        panic!("{} did not decode", show(request));
    };
    assert_eq!(
        show(&encoded(&req.reply, responses)),
        show(want),
        "answering {}",
        show(request)
    );
}

#[test]
fn encode_meta_in_request_order() {
    let la = |h: Hit<'static>| Hit {
        last_access: 7,
        fetched: true,
        ttl: 30,
        ..h
    };
    // Each answer as memcached 1.6.18 gave it for the same item state.
    exchange(
        b"mg m v f c t s k Oabc q h l\r\n",
        &[Response::Hit(hit(b"m", b"hi")), Response::End],
        b"VA 2 f5 c28 t-1 s2 km Oabc h0 l0\r\nhi\r\n",
    );
    exchange(
        b"mg m l h O k s t c f\r\n",
        &[Response::Hit(la(hit(b"m", b"hi")))],
        b"HD l7 h1 O km s2 t30 c28 f5\r\n",
    );
    exchange(
        b"mg m k v\r\n",
        &[Response::Hit(hit(b"m", b"hi"))],
        b"VA 2 km\r\nhi\r\n",
    );
    exchange(b"mg m\r\n", &[Response::Hit(hit(b"m", b"hi"))], b"HD\r\n");
    // q hides only the miss.
    exchange(b"mg m q\r\n", &[Response::Hit(hit(b"m", b"hi"))], b"HD\r\n");
    exchange(b"mg m v q\r\n", &[Response::Miss { key: b"m" }], b"");
    exchange(
        b"mg miss v\r\n",
        &[Response::Miss { key: b"miss" }],
        b"EN\r\n",
    );
    exchange(
        b"mg miss Oxy k s t f\r\n",
        &[Response::Miss { key: b"miss" }, Response::End],
        b"EN Oxy kmiss\r\n",
    );
    exchange(
        b"mg miss k Oxy\r\n",
        &[Response::Miss { key: b"miss" }],
        b"EN kmiss Oxy\r\n",
    );
    exchange(
        b"ms m 2 c k Oab\r\nhi\r\n",
        &[Response::Stored { cas: 30 }],
        b"HD c30 km Oab\r\n",
    );
    exchange(
        b"ms m 2 Oab k c q\r\nhi\r\n",
        &[Response::Stored { cas: 30 }],
        b"",
    );
    exchange(
        b"ms m 2 ME c k\r\nhi\r\n",
        &[Response::NotStored],
        b"NS c0 km\r\n",
    );
    exchange(
        b"ms m 2 ME q Oz\r\nhi\r\n",
        &[Response::NotStored],
        b"NS Oz\r\n",
    );
    exchange(b"ms m 2 C5 c\r\nhi\r\n", &[Response::Exists], b"EX c0\r\n");
    exchange(
        b"ms nope 2 C5 c\r\nhi\r\n",
        &[Response::NotFound],
        b"NF c0\r\n",
    );
    exchange(
        b"ms m 2 q\r\nhi\r\n",
        &[Response::Error(Error::OutOfMemory)],
        b"SERVER_ERROR out of memory storing object\r\n",
    );
    exchange(b"md d\r\n", &[Response::Deleted], b"HD\r\n");
    exchange(b"md d q Oa k\r\n", &[Response::Deleted], b"");
    // memcached sends NF under q for md.
    exchange(b"md d q Oa k\r\n", &[Response::NotFound], b"NF Oa kd\r\n");
    exchange(b"md d C1 Oa k\r\n", &[Response::Exists], b"EX Oa kd\r\n");
    exchange(
        b"md d k Oa c t f s v\r\n",
        &[Response::NotFound],
        b"NF kd Oa\r\n",
    );
    exchange(b"ma cnt\r\n", &[Response::NotFound], b"NF\r\n");
    exchange(b"ma cnt q\r\n", &[Response::NotFound], b"NF\r\n");
    exchange(
        b"ma cnt N0 J10 v\r\n",
        &[Response::Number { value: 10, cas: 1 }],
        b"VA 2\r\n10\r\n",
    );
    exchange(
        b"ma cnt v D5 MD c k Oq\r\n",
        &[Response::Number { value: 6, cas: 56 }],
        b"VA 1 c56 kcnt Oq\r\n6\r\n",
    );
    exchange(
        b"ma cnt MI\r\n",
        &[Response::Number { value: 6, cas: 56 }],
        b"HD\r\n",
    );
    exchange(
        b"ma cnt q v\r\n",
        &[Response::Number { value: 6, cas: 56 }],
        b"",
    );
    exchange(b"ma cnt C1 v k\r\n", &[Response::Exists], b"EX kcnt\r\n");
    exchange(
        b"ma str q\r\n",
        &[Response::Error(Error::NonNumeric)],
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
    exchange(b"mn\r\n", &[Response::Ok], b"MN\r\n");
    exchange(
        b"me cnt\r\n",
        &[Response::Debug {
            key: b"cnt",
            fields: "exp=-1 la=14 cas=64 fetch=no cls=1 size=64",
        }],
        b"ME cnt exp=-1 la=14 cas=64 fetch=no cls=1 size=64\r\n",
    );
    exchange(
        b"me nope\r\n",
        &[Response::Miss { key: b"nope" }],
        b"EN\r\n",
    );
}

#[test]
fn meta_echo_defaults_to_a_fixed_order() {
    let mut reply = meta::plain(MetaVerb::Get);
    reply.key = true;
    reply.opaque = Some(b"7");
    reply.size = true;
    let mut out = OutBuf::new();
    encode_meta(&reply, &Response::Hit(hit(b"k", b"abc")), &mut out);
    assert_eq!(show(&out.to_vec()), show(b"HD O7 kk s3\r\n"));
}

// ---------------------------------------------------------------- wire cases

/// The answer an empty cache gives, as memcached would: every key misses.
enum Flow {
    Continue,
    Swallow(usize),
    Close,
}

fn empty_cache(request: &Request<'_>, out: &mut OutBuf) -> Flow {
    let mut say = |r: Response<'_>| crate::encode(&request.reply, &r, out);
    match &request.command {
        Command::Get { keys, .. } => {
            for key in keys.iter() {
                say(Response::Miss { key });
            }
            say(Response::End);
        }
        Command::Store { mode, cas, .. } => say(match (mode, cas) {
            (_, 1..) => Response::NotFound,
            (StoreMode::Set | StoreMode::Add, _) => Response::Stored { cas: 1 },
            _ => Response::NotStored,
        }),
        Command::TooLarge { swallow, .. } => {
            say(Response::Error(Error::TooLarge));
            return Flow::Swallow(*swallow);
        }
        Command::Arith {
            vivify: Some(v), ..
        } => say(Response::Number {
            value: v.initial,
            cas: 1,
        }),
        Command::Delete { .. } | Command::Arith { .. } | Command::Touch { .. } => {
            say(Response::NotFound)
        }
        Command::FlushAll { .. } | Command::Verbosity { .. } | Command::Noop => say(Response::Ok),
        Command::Stats { .. } => say(Response::End),
        Command::Version => say(Response::Version("1.6.18")),
        Command::Quit => {
            say(Response::Ok);
            return Flow::Close;
        }
        Command::MetaDebug { key } => say(Response::Miss { key }),
        other => panic!("not a text command: {other:?}"),
    }
    Flow::Continue
}

/// Feed `input` to the decoder as a connection would; the bytes answered
/// and whether the connection was closed.
fn converse(input: &[u8]) -> (Vec<u8>, bool) {
    let limits = Limits::default();
    let mut out = OutBuf::new();
    let (mut pos, mut swallow) = (0, 0);
    loop {
        let skip = swallow.min(input.len() - pos);
        pos += skip;
        swallow -= skip;
        if swallow > 0 {
            return (out.to_vec(), false);
        }
        match decode(&input[pos..], &limits) {
            Decode::Incomplete => return (out.to_vec(), false),
            Decode::Request { request, consumed } => {
                assert!(consumed > 0 && pos + consumed <= input.len());
                pos += consumed;
                match empty_cache(&request, &mut out) {
                    Flow::Continue => {}
                    Flow::Swallow(n) => swallow = n,
                    Flow::Close => return (out.to_vec(), true),
                }
            }
            Decode::Invalid {
                error,
                reply,
                consumed,
                close,
            } => {
                assert!(consumed > 0 && pos + consumed <= input.len());
                crate::encode(&reply, &Response::Error(error), &mut out);
                pos += consumed;
                if close {
                    return (out.to_vec(), true);
                }
            }
        }
    }
}

/// The escapes of `wire_cases.txt`.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                match b[i + 1] {
                    b'x' => {
                        let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                        out.push(u8::from_str_radix(hex, 16).unwrap());
                        i += 2;
                    }
                    b'r' => out.push(b'\r'),
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'\\' => out.push(b'\\'),
                    other => panic!("unknown escape \\{}", other as char),
                }
                i += 2;
            }
            b'<' if matches!(b.get(i + 1), Some(b'k' | b'x'))
                && b.get(i + 2).is_some_and(u8::is_ascii_digit) =>
            {
                let end = i + b[i..].iter().position(|&c| c == b'>').unwrap();
                let n: usize = s[i + 2..end].parse().unwrap();
                out.extend(std::iter::repeat_n(b[i + 1], n));
                i = end + 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[test]
fn wire_cases() {
    let file = include_str!("wire_cases.txt");
    let mut cases: Vec<(Vec<u8>, Vec<u8>, bool)> = Vec::new();
    for line in file.lines() {
        if let Some(req) = line.strip_prefix("> ") {
            cases.push((unescape(req), Vec::new(), false));
        } else if let Some(ans) = line.strip_prefix('<') {
            cases.last_mut().unwrap().1 = unescape(ans.strip_prefix(' ').unwrap_or(ans));
        } else if line.starts_with("= closed") {
            cases.last_mut().unwrap().2 = true;
        }
    }
    assert!(cases.len() > 200, "parsed only {} cases", cases.len());
    for (input, want, want_closed) in &cases {
        let (got, closed) = converse(input);
        let shown = show(&input[..input.len().min(120)]);
        assert_eq!(show(&got), show(want), "answer to {shown}");
        assert_eq!(closed, *want_closed, "closing after {shown}");
    }
}

// ------------------------------------------------------------ random inputs

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const CORPUS: &[&[u8]] = &[
    b"get a b c\r\n",
    b"gets a\r\n",
    b"gat 10 a b\r\n",
    b"set k 1 2 3\r\nabc\r\n",
    b"cas k 1 2 3 4 noreply\r\nabc\r\n",
    b"append k 0 0 1\nx\r\n",
    b"delete k 0 noreply\r\n",
    b"incr k 18446744073709551615\r\n",
    b"touch k -1\r\n",
    b"flush_all 10 noreply\r\n",
    b"stats cachedump 1 2\r\n",
    b"verbosity 1\r\n",
    b"version\r\n",
    b"quit\r\n",
    b"mg k v f c t s k Oabc q h l T30\r\n",
    b"ms k 3 F5 T-1 C9 MA c k Oz q\r\nabc\r\n",
    b"md k q C5 Oa k\r\n",
    b"ma k N0 J10 D5 MD v c k Oq q\r\n",
    b"mn\r\n",
    b"me k\r\n",
];

/// Every outcome must keep the decoder's promises, and encoding any answer
/// to a decoded request must not panic.
fn check_invariants(input: &[u8], limits: &Limits) {
    match decode(input, limits) {
        Decode::Incomplete => {}
        Decode::Request { request, consumed } => {
            assert!(consumed > 0 && consumed <= input.len(), "{}", show(input));
            for prefix in [0, consumed / 2, consumed.saturating_sub(1)] {
                assert_eq!(
                    decode(&input[..prefix], limits),
                    Decode::Incomplete,
                    "a prefix of {} decoded",
                    show(input)
                );
            }
            let mut out = OutBuf::new();
            for response in [
                Response::Hit(hit(b"k", b"v")),
                Response::Miss { key: b"k" },
                Response::End,
                Response::Stored { cas: 1 },
                Response::NotStored,
                Response::Exists,
                Response::NotFound,
                Response::Deleted,
                Response::Number { value: 3, cas: 1 },
                Response::Ok,
                Response::Error(Error::TooLarge),
            ] {
                crate::encode(&request.reply, &response, &mut out);
            }
        }
        Decode::Invalid {
            consumed, reply, ..
        } => {
            assert!(consumed > 0 && consumed <= input.len(), "{}", show(input));
            let mut out = OutBuf::new();
            crate::encode(&reply, &Response::Error(Error::UnknownCommand), &mut out);
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let alphabet = b" \r\n\t0123456789-+getsamdcvkOqTNFCMDJIbxyz\x00\xff";
    let limits = [
        Limits::default(),
        Limits {
            max_value_len: 8,
            max_line_len: 24,
        },
        Limits {
            max_value_len: 0,
            max_line_len: 0,
        },
    ];
    let mut buf = Vec::new();
    for round in 0..60_000 {
        buf.clear();
        let len = rng.below(64);
        if round % 2 == 0 {
            buf.extend((0..len).map(|_| alphabet[rng.below(alphabet.len())]));
        } else {
            buf.extend((0..len).map(|_| rng.next() as u8));
        }
        for l in &limits {
            check_invariants(&buf, l);
        }
    }
}

#[test]
fn mutated_requests_never_panic() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let limits = Limits {
        max_value_len: 16,
        max_line_len: 64,
    };
    for _ in 0..40_000 {
        let mut buf: Vec<u8> = Vec::new();
        for _ in 0..1 + rng.below(3) {
            buf.extend_from_slice(CORPUS[rng.below(CORPUS.len())]);
        }
        for _ in 0..rng.below(4) {
            let at = rng.below(buf.len() + 1);
            match rng.below(4) {
                0 if at < buf.len() => buf[at] = rng.next() as u8,
                1 if at < buf.len() => {
                    buf.remove(at);
                }
                2 => buf.insert(at, b" \r\n0-"[rng.below(5)]),
                _ => buf.truncate(at),
            }
        }
        // Walk the buffer as a connection would.
        let mut pos = 0;
        while pos < buf.len() {
            check_invariants(&buf[pos..], &limits);
            check_invariants(&buf[pos..], &Limits::default());
            match decode(&buf[pos..], &limits) {
                Decode::Request { consumed, .. } | Decode::Invalid { consumed, .. } => {
                    pos += consumed
                }
                Decode::Incomplete => break,
            }
        }
    }
}

#[test]
fn corpus_decodes_whole_and_pipelined() {
    let limits = Limits::default();
    let mut all = Vec::new();
    for req in CORPUS {
        match decode(req, &limits) {
            Decode::Request { consumed, .. } => assert_eq!(consumed, req.len(), "{}", show(req)),
            other => panic!("{} gave {other:?}", show(req)),
        }
        all.extend_from_slice(req);
    }
    let mut pos = 0;
    for req in CORPUS {
        let Decode::Request { consumed, .. } = decode(&all[pos..], &limits) else {
            panic!("pipelined {} failed", show(req));
        };
        assert_eq!(&all[pos..pos + consumed], *req);
        pos += consumed;
    }
    assert_eq!(pos, all.len());
}
