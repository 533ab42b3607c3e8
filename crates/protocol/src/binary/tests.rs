//! Table-driven tests: exact bytes in, exact bytes out.
//!
//! Request and response bytes are written as wire dumps (see [`wire`]): the
//! header as `magic opcode keylen extlen datatype status/vbucket bodylen
//! opaque cas`, then extras, key and value. Every expected answer marked
//! "memcached" is what memcached 1.6.18 sent for the same request bytes (a
//! fresh `memcached -B binary`, so CAS values count from 1).

use super::{HEADER_LEN, decode, encode, opcode, status};
use crate::{
    ArithOp, BinaryReply, Command, Decode, Error, Hit, Keys, Limits, OutBuf, Reply, Request,
    Response, StoreMode, Value, Vivify,
};

/// Bytes from a wire dump: pairs of hex digits, and ASCII between single
/// quotes. Spaces and `|` (between packets) are ignored.
pub(super) fn wire(dump: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = dump.chars();
    let mut high: Option<u32> = None;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for c in chars.by_ref().take_while(|&c| c != '\'') {
                    out.push(u8::try_from(c).expect("ASCII in quotes"));
                }
            }
            ' ' | '|' | '\n' => assert!(high.is_none(), "odd hex digits in {dump:?}"),
            _ => {
                let digit = c.to_digit(16).expect("hex digit");
                match high.take() {
                    None => high = Some(digit),
                    Some(h) => out.push(u8::try_from(h * 16 + digit).expect("byte")),
                }
            }
        }
    }
    assert!(high.is_none(), "odd hex digits in {dump:?}");
    out
}

fn limits() -> Limits {
    Limits::default()
}

fn reply(opcode: u8, opaque: u32, quiet: bool, with_key: bool) -> BinaryReply {
    BinaryReply {
        opcode,
        opaque,
        quiet,
        with_key,
    }
}

fn hit(key: &'static [u8], flags: u32, cas: u64, value: &'static [u8]) -> Response<'static> {
    Response::Hit(Hit {
        key,
        flags,
        cas,
        value: Value::Slice(value),
        ttl: -1,
        last_access: 0,
        fetched: false,
    })
}

fn miss(key: &'static [u8]) -> Response<'static> {
    Response::Miss { key }
}

/// Decode exactly one whole request from `bytes`.
fn decode_one(bytes: &[u8]) -> Request<'_> {
    match decode(bytes, &limits()) {
        Decode::Request { request, consumed } => {
            assert_eq!(consumed, bytes.len(), "consumed all of one request");
            request
        }
        other => panic!("expected a request, got {other:?}"),
    }
}

fn binary(reply: &Reply<'_>) -> BinaryReply {
    match reply {
        Reply::Binary(r) => *r,
        other => panic!("expected a binary reply, got {other:?}"),
    }
}

fn encoded(reply: &BinaryReply, responses: &[Response<'_>]) -> Vec<u8> {
    let mut out = OutBuf::new();
    for r in responses {
        encode(reply, r, &mut out);
    }
    out.to_vec()
}

/// Decode the requests in `requests` one by one from one buffer, answer the
/// n-th with `answers[n]`, and return every byte sent back.
fn converse(requests: &[u8], answers: &[Vec<Response<'_>>]) -> Vec<u8> {
    let mut rest = requests;
    let mut out = OutBuf::new();
    for answer in answers {
        let Decode::Request { request, consumed } = decode(rest, &limits()) else {
            panic!("expected a request at {:02x?}", &rest[..rest.len().min(24)]);
        };
        let reply = binary(&request.reply);
        for r in answer {
            encode(&reply, r, &mut out);
        }
        rest = &rest[consumed..];
    }
    assert!(rest.is_empty(), "{} bytes left undecoded", rest.len());
    out.to_vec()
}

#[test]
fn wire_dumps_read_as_bytes() {
    assert_eq!(wire("80 0a 'k1' | 00"), [0x80, 0x0a, b'k', b'1', 0]);
}

/// One request of every opcode, and what it decodes to.
#[test]
fn every_opcode_decodes() {
    use opcode::*;
    let k1: &[u8] = b"k1";
    let get = |touch| Command::Get {
        keys: Keys::One(k1),
        touch,
    };
    let store = |mode, flags, exptime, value: &'static [u8], cas| Command::Store {
        mode,
        key: k1,
        flags,
        exptime,
        value,
        cas,
    };
    let arith = |op, vivify| Command::Arith {
        key: k1,
        op,
        delta: 5,
        vivify,
        cas: 0,
    };
    let vivify = Some(Vivify {
        initial: 42,
        exptime: 100,
    });
    #[rustfmt::skip]
    let table: Vec<(&str, Command<'static>, BinaryReply)> = vec![
        ("80 00 0002 00 00 0000 00000002 11223344 0000000000000000 'k1'",
            get(None), reply(GET, 0x1122_3344, false, false)),
        ("80 09 0002 00 00 0000 00000002 00000001 0000000000000000 'k1'",
            get(None), reply(GETQ, 1, true, false)),
        ("80 0c 0002 00 00 0000 00000002 00000002 0000000000000000 'k1'",
            get(None), reply(GETK, 2, false, true)),
        ("80 0d 0002 00 00 0000 00000002 00000003 0000000000000000 'k1'",
            get(None), reply(GETKQ, 3, true, true)),
        ("80 1d 0002 04 00 0000 00000006 00000004 0000000000000000 00000064 'k1'",
            get(Some(100)), reply(GAT, 4, false, false)),
        ("80 1e 0002 04 00 0000 00000006 00000005 0000000000000000 00000064 'k1'",
            get(Some(100)), reply(GATQ, 5, true, false)),
        ("80 23 0002 04 00 0000 00000006 00000006 0000000000000000 00000064 'k1'",
            get(Some(100)), reply(GATK, 6, false, true)),
        ("80 24 0002 04 00 0000 00000006 00000007 0000000000000000 ffffffff 'k1'",
            get(Some(0xffff_ffff)), reply(GATKQ, 7, true, true)),
        ("80 1c 0002 04 00 0000 00000006 00000008 0000000000000000 00000064 'k1'",
            Command::Touch { key: k1, exptime: 100 }, reply(TOUCH, 8, false, false)),
        // The datatype and vbucket fields are ignored, as memcached ignores them.
        ("80 01 0002 08 01 0007 0000000f 00000009 0000000000000000 deadbeef 0000003c 'k1' 'hello'",
            store(StoreMode::Set, 0xdead_beef, 60, b"hello", 0), reply(SET, 9, false, false)),
        ("80 11 0002 08 00 0000 0000000f 0000000a 00000000000003e7 00000001 00000000 'k1' 'hello'",
            store(StoreMode::Set, 1, 0, b"hello", 999), reply(SETQ, 10, true, false)),
        ("80 02 0002 08 00 0000 0000000a 0000000b 0000000000000000 00000000 00000000 'k1'",
            store(StoreMode::Add, 0, 0, b"", 0), reply(ADD, 11, false, false)),
        ("80 12 0002 08 00 0000 0000000b 0000000c 0000000000000000 00000000 00000000 'k1' 'x'",
            store(StoreMode::Add, 0, 0, b"x", 0), reply(ADDQ, 12, true, false)),
        ("80 03 0002 08 00 0000 0000000b 0000000d 0000000000000005 00000002 00000003 'k1' 'x'",
            store(StoreMode::Replace, 2, 3, b"x", 5), reply(REPLACE, 13, false, false)),
        ("80 13 0002 08 00 0000 0000000b 0000000e 0000000000000000 00000000 00000000 'k1' 'x'",
            store(StoreMode::Replace, 0, 0, b"x", 0), reply(REPLACEQ, 14, true, false)),
        ("80 0e 0002 00 00 0000 00000003 0000000f 0000000000000000 'k1' '!'",
            store(StoreMode::Append, 0, 0, b"!", 0), reply(APPEND, 15, false, false)),
        ("80 19 0002 00 00 0000 00000003 00000010 0000000000000007 'k1' '!'",
            store(StoreMode::Append, 0, 0, b"!", 7), reply(APPENDQ, 16, true, false)),
        ("80 0f 0002 00 00 0000 00000003 00000011 0000000000000000 'k1' '<'",
            store(StoreMode::Prepend, 0, 0, b"<", 0), reply(PREPEND, 17, false, false)),
        ("80 1a 0002 00 00 0000 00000003 00000012 0000000000000000 'k1' '<'",
            store(StoreMode::Prepend, 0, 0, b"<", 0), reply(PREPENDQ, 18, true, false)),
        ("80 04 0002 00 00 0000 00000002 00000013 0000000000000009 'k1'",
            Command::Delete { key: k1, cas: 9 }, reply(DELETE, 19, false, false)),
        ("80 14 0002 00 00 0000 00000002 00000014 0000000000000000 'k1'",
            Command::Delete { key: k1, cas: 0 }, reply(DELETEQ, 20, true, false)),
        ("80 05 0002 14 00 0000 00000016 00000015 0000000000000000 0000000000000005 000000000000002a 00000064 'k1'",
            arith(ArithOp::Incr, vivify), reply(INCREMENT, 21, false, false)),
        ("80 15 0002 14 00 0000 00000016 00000016 0000000000000000 0000000000000005 000000000000002a ffffffff 'k1'",
            arith(ArithOp::Incr, None), reply(INCREMENTQ, 22, true, false)),
        ("80 06 0002 14 00 0000 00000016 00000017 0000000000000000 0000000000000005 000000000000002a ffffffff 'k1'",
            arith(ArithOp::Decr, None), reply(DECREMENT, 23, false, false)),
        ("80 16 0002 14 00 0000 00000016 00000018 0000000000000000 0000000000000005 000000000000002a 00000064 'k1'",
            arith(ArithOp::Decr, vivify), reply(DECREMENTQ, 24, true, false)),
        ("80 07 0000 00 00 0000 00000000 00000019 0000000000000000",
            Command::Quit, reply(QUIT, 25, false, false)),
        ("80 17 0000 00 00 0000 00000000 0000001a 0000000000000000",
            Command::Quit, reply(QUITQ, 26, true, false)),
        ("80 08 0000 00 00 0000 00000000 0000001b 0000000000000000",
            Command::FlushAll { delay: 0 }, reply(FLUSH, 27, false, false)),
        ("80 08 0000 04 00 0000 00000004 0000001c 0000000000000000 0000003c",
            Command::FlushAll { delay: 60 }, reply(FLUSH, 28, false, false)),
        ("80 18 0000 04 00 0000 00000004 0000001d 0000000000000000 0000000a",
            Command::FlushAll { delay: 10 }, reply(FLUSHQ, 29, true, false)),
        ("80 0a 0000 00 00 0000 00000000 0000001e 0000000000000000",
            Command::Noop, reply(NOOP, 30, false, false)),
        ("80 0b 0000 00 00 0000 00000000 0000001f 0000000000000000",
            Command::Version, reply(VERSION, 31, false, false)),
        ("80 10 0000 00 00 0000 00000000 00000020 0000000000000000",
            Command::Stats { group: b"" }, reply(STAT, 32, false, false)),
        ("80 10 0008 00 00 0000 00000008 00000021 0000000000000000 'settings'",
            Command::Stats { group: b"settings" }, reply(STAT, 33, false, false)),
        ("80 10 0005 00 00 0000 00000005 00000022 0000000000000000 'items'",
            Command::Stats { group: b"items" }, reply(STAT, 34, false, false)),
        ("80 1b 0000 04 00 0000 00000004 00000023 0000000000000000 00000001",
            Command::Verbosity { level: 1 }, reply(VERBOSITY, 35, false, false)),
        // python-binary-memcached and libmemcached (pylibmc) both open with
        // an all-zero list-mechs header.
        ("80 20 0000 00 00 0000 00000000 00000000 0000000000000000",
            Command::SaslListMechs, reply(SASL_LIST_MECHS, 0, false, false)),
        ("80 21 0005 00 00 0000 0000000f 00000000 0000000000000000 'PLAIN' 00 'user' 00 'pass'",
            Command::SaslAuth { mechanism: b"PLAIN", data: b"\0user\0pass" },
            reply(SASL_AUTH, 0, false, false)),
        ("80 22 0005 00 00 0000 00000009 00000024 0000000000000000 'PLAIN' 'more'",
            Command::SaslStep { mechanism: b"PLAIN", data: b"more" },
            reply(SASL_STEP, 36, false, false)),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (dump, command, expected) in table {
        let bytes = wire(dump);
        let request = decode_one(&bytes);
        assert_eq!(request.command, command, "{dump}");
        assert_eq!(binary(&request.reply), expected, "{dump}");
        seen.insert(expected.opcode);
    }
    assert_eq!(seen.len(), 36, "one row per opcode memcached implements");
}

/// Request bytes, the answers a server gives, and the bytes memcached 1.6.18
/// sent for the same requests.
#[test]
fn answers_match_memcached() {
    #[rustfmt::skip]
    let table: Vec<(&str, &str, Vec<Vec<Response<'static>>>, &str)> = vec![
        ("set returns the new CAS",
            "80 01 0002 08 00 0000 0000000f 00000001 0000000000000000 deadbeef00000000 'k1' 'hello'",
            vec![vec![Response::Stored { cas: 1 }]],
            "81 01 0000 00 00 0000 00000000 00000001 0000000000000001"),
        ("get hit: flags as extras, CAS in the header, opaque echoed",
            "80 00 0002 00 00 0000 00000002 11223344 0000000000000000 'k1'",
            vec![vec![hit(b"k1", 0xdead_beef, 1, b"hello"), Response::End]],
            "81 00 0000 04 00 0000 00000009 11223344 0000000000000001 deadbeef 'hello'"),
        ("getk hit carries the key",
            "80 0c 0002 00 00 0000 00000002 00000004 0000000000000000 'k1'",
            vec![vec![hit(b"k1", 0xdead_beef, 1, b"hello"), Response::End]],
            "81 0c 0002 04 00 0000 0000000b 00000004 0000000000000001 deadbeef 'k1' 'hello'"),
        ("get miss says Not found",
            "80 00 0005 00 00 0000 00000005 00000005 0000000000000000 'nokey'",
            vec![vec![miss(b"nokey"), Response::End]],
            "81 00 0000 00 00 0001 00000009 00000005 0000000000000000 'Not found'"),
        ("getk miss: the key, no text",
            "80 0c 0005 00 00 0000 00000005 00000006 0000000000000000 'nokey'",
            vec![vec![miss(b"nokey"), Response::End]],
            "81 0c 0005 00 00 0001 00000005 00000006 0000000000000000 'nokey'"),
        ("getkq k1, k2, k3, noop (libmemcached's mget): hits only, then the noop",
            "80 0d 0002 00 00 0000 00000002 00000007 0000000000000000 'k1' | \
             80 0d 0002 00 00 0000 00000002 00000008 0000000000000000 'k2' | \
             80 0d 0002 00 00 0000 00000002 00000009 0000000000000000 'k3' | \
             80 0a 0000 00 00 0000 00000000 0000000a 0000000000000000",
            vec![
                vec![hit(b"k1", 0xdead_beef, 1, b"hello"), Response::End],
                vec![miss(b"k2"), Response::End],
                vec![hit(b"k3", 0, 2, b"v3"), Response::End],
                vec![Response::Ok],
            ],
            "81 0d 0002 04 00 0000 0000000b 00000007 0000000000000001 deadbeef 'k1' 'hello' | \
             81 0d 0002 04 00 0000 00000008 00000009 0000000000000002 00000000 'k3' 'v3' | \
             81 0a 0000 00 00 0000 00000000 0000000a 0000000000000000"),
        ("getq k1, k2, noop",
            "80 09 0002 00 00 0000 00000002 0000000b 0000000000000000 'k1' | \
             80 09 0002 00 00 0000 00000002 0000000c 0000000000000000 'k2' | \
             80 0a 0000 00 00 0000 00000000 0000000d 0000000000000000",
            vec![
                vec![hit(b"k1", 0xdead_beef, 1, b"hello"), Response::End],
                vec![miss(b"k2"), Response::End],
                vec![Response::Ok],
            ],
            "81 09 0000 04 00 0000 00000009 0000000b 0000000000000001 deadbeef 'hello' | \
             81 0a 0000 00 00 0000 00000000 0000000d 0000000000000000"),
        ("set with a CAS that does not match",
            "80 01 0002 08 00 0000 0000000f 0000000e 00000000000003e7 0000000000000000 'k1' 'world'",
            vec![vec![Response::Exists]],
            "81 01 0000 00 00 0002 00000014 0000000e 0000000000000000 'Data exists for key.'"),
        ("set with a CAS that matches",
            "80 01 0002 08 00 0000 0000000f 0000000f 0000000000000001 0000000000000000 'k1' 'world'",
            vec![vec![Response::Stored { cas: 3 }]],
            "81 01 0000 00 00 0000 00000000 0000000f 0000000000000003"),
        ("add of an existing key: not stored reads as exists",
            "80 02 0002 08 00 0000 0000000b 00000010 0000000000000000 0000000000000000 'k1' 'x'",
            vec![vec![Response::NotStored]],
            "81 02 0000 00 00 0002 00000014 00000010 0000000000000000 'Data exists for key.'"),
        ("replace of a missing key: not stored reads as not found",
            "80 03 0005 08 00 0000 0000000e 00000011 0000000000000000 0000000000000000 'nokey' 'x'",
            vec![vec![Response::NotStored]],
            "81 03 0000 00 00 0001 00000009 00000011 0000000000000000 'Not found'"),
        ("append returns the new CAS",
            "80 0e 0002 00 00 0000 00000003 00000012 0000000000000000 'k1' '!'",
            vec![vec![Response::Stored { cas: 4 }]],
            "81 0e 0000 00 00 0000 00000000 00000012 0000000000000004"),
        ("prepend to a missing key",
            "80 0f 0005 00 00 0000 00000006 00000013 0000000000000000 'nokey' 'x'",
            vec![vec![Response::NotStored]],
            "81 0f 0000 00 00 0005 0000000b 00000013 0000000000000000 'Not stored.'"),
        ("delete: CAS 0",
            "80 04 0002 00 00 0000 00000002 00000014 0000000000000000 'k3'",
            vec![vec![Response::Deleted]],
            "81 04 0000 00 00 0000 00000000 00000014 0000000000000000"),
        ("delete miss",
            "80 04 0002 00 00 0000 00000002 00000015 0000000000000000 'k3'",
            vec![vec![Response::NotFound]],
            "81 04 0000 00 00 0001 00000009 00000015 0000000000000000 'Not found'"),
        ("deleteq miss is an error, so it is sent",
            "80 14 0002 00 00 0000 00000002 00000016 0000000000000000 'k3' | \
             80 0a 0000 00 00 0000 00000000 00000017 0000000000000000",
            vec![vec![Response::NotFound], vec![Response::Ok]],
            "81 14 0000 00 00 0001 00000009 00000016 0000000000000000 'Not found' | \
             81 0a 0000 00 00 0000 00000000 00000017 0000000000000000"),
        ("setq ok, setq with a bad CAS, noop: only the error and the noop",
            "80 11 0001 08 00 0000 0000000b 00000018 0000000000000000 0000000000000000 'n' '10' | \
             80 11 0002 08 00 0000 0000000b 00000019 00000000000003e7 0000000000000000 'k1' 'x' | \
             80 0a 0000 00 00 0000 00000000 0000001a 0000000000000000",
            vec![vec![Response::Stored { cas: 5 }], vec![Response::Exists], vec![Response::Ok]],
            "81 11 0000 00 00 0002 00000014 00000019 0000000000000000 'Data exists for key.' | \
             81 0a 0000 00 00 0000 00000000 0000001a 0000000000000000"),
        ("incr: the new value and CAS",
            "80 05 0001 14 00 0000 00000015 0000001b 0000000000000000 0000000000000005000000000000000000000000 'n'",
            vec![vec![Response::Number { value: 15, cas: 6 }]],
            "81 05 0000 00 00 0000 00000008 0000001b 0000000000000006 000000000000000f"),
        ("decr",
            "80 06 0001 14 00 0000 00000015 0000001c 0000000000000000 0000000000000064000000000000000000000000 'n'",
            vec![vec![Response::Number { value: 0, cas: 7 }]],
            "81 06 0000 00 00 0000 00000008 0000001c 0000000000000007 0000000000000000"),
        ("incr of a missing key creates it with the initial value",
            "80 05 0001 14 00 0000 00000015 0000001d 0000000000000000 0000000000000005000000000000002a00000000 'c'",
            vec![vec![Response::Number { value: 42, cas: 8 }]],
            "81 05 0000 00 00 0000 00000008 0000001d 0000000000000008 000000000000002a"),
        ("incr with expiration ffffffff does not create",
            "80 05 0001 14 00 0000 00000015 0000001e 0000000000000000 0000000000000005000000000000002affffffff 'd'",
            vec![vec![Response::NotFound]],
            "81 05 0000 00 00 0001 00000009 0000001e 0000000000000000 'Not found'"),
        ("incr of a non-numeric value",
            "80 05 0002 14 00 0000 00000016 0000001f 0000000000000000 0000000000000001000000000000000000000000 'k1'",
            vec![vec![Response::Error(Error::NonNumeric)]],
            "81 05 0000 00 00 0006 0000002e 0000001f 0000000000000000 \
             'Non-numeric server-side value for incr or decr'"),
        ("incrq, noop",
            "80 15 0001 14 00 0000 00000015 00000020 0000000000000000 0000000000000001000000000000000000000000 'n' | \
             80 0a 0000 00 00 0000 00000000 00000021 0000000000000000",
            vec![vec![Response::Number { value: 1, cas: 9 }], vec![Response::Ok]],
            "81 0a 0000 00 00 0000 00000000 00000021 0000000000000000"),
        ("touch answered with the item: flags and CAS, no value",
            "80 1c 0001 04 00 0000 00000005 00000022 0000000000000000 00000064 'n'",
            vec![vec![hit(b"n", 0, 9, b"1 ")]],
            "81 1c 0000 04 00 0000 00000004 00000022 0000000000000009 00000000"),
        ("touch miss",
            "80 1c 0005 04 00 0000 00000009 00000023 0000000000000000 00000064 'nokey'",
            vec![vec![Response::NotFound]],
            "81 1c 0000 00 00 0001 00000009 00000023 0000000000000000 'Not found'"),
        ("gat",
            "80 1d 0001 04 00 0000 00000005 00000024 0000000000000000 00000064 'n'",
            vec![vec![hit(b"n", 0, 9, b"1 "), Response::End]],
            "81 1d 0000 04 00 0000 00000006 00000024 0000000000000009 00000000 '1 '"),
        ("gatk",
            "80 23 0001 04 00 0000 00000005 00000025 0000000000000000 00000064 'n'",
            vec![vec![hit(b"n", 0, 9, b"1 "), Response::End]],
            "81 23 0001 04 00 0000 00000007 00000025 0000000000000009 00000000 'n' '1 '"),
        ("gatk miss: the key, no text",
            "80 23 0005 04 00 0000 00000009 00000026 0000000000000000 00000064 'nokey'",
            vec![vec![miss(b"nokey"), Response::End]],
            "81 23 0005 00 00 0001 00000005 00000026 0000000000000000 'nokey'"),
        ("gatq miss, gatkq miss, gatkq hit, noop",
            "80 1e 0005 04 00 0000 00000009 00000027 0000000000000000 00000000 'nokey' | \
             80 24 0005 04 00 0000 00000009 00000028 0000000000000000 00000000 'nokey' | \
             80 24 0001 04 00 0000 00000005 00000029 0000000000000000 00000000 'n' | \
             80 0a 0000 00 00 0000 00000000 0000002a 0000000000000000",
            vec![
                vec![miss(b"nokey"), Response::End],
                vec![miss(b"nokey"), Response::End],
                vec![hit(b"n", 0, 9, b"1 "), Response::End],
                vec![Response::Ok],
            ],
            "81 24 0001 04 00 0000 00000007 00000029 0000000000000009 00000000 'n' '1 ' | \
             81 0a 0000 00 00 0000 00000000 0000002a 0000000000000000"),
        ("version",
            "80 0b 0000 00 00 0000 00000000 0000002b 0000000000000000",
            vec![vec![Response::Version("1.6.18")]],
            "81 0b 0000 00 00 0000 00000006 0000002b 0000000000000000 '1.6.18'"),
        ("stat of an unknown group is not found",
            "80 10 0005 00 00 0000 00000005 00000030 0000000000000000 'bogus'",
            vec![vec![Response::Error(Error::UnknownCommand)]],
            "81 10 0000 00 00 0001 00000009 00000030 0000000000000000 'Not found'"),
        ("stat group with no lines: just the terminating packet",
            "80 10 0009 00 00 0000 00000009 00000031 0000000000000000 'detail on'",
            vec![vec![Response::End]],
            "81 10 0000 00 00 0000 00000000 00000031 0000000000000000"),
        ("stat settings: one packet per stat, then the empty one",
            "80 10 0008 00 00 0000 00000008 00000031 0000000000000000 'settings'",
            vec![vec![
                Response::Stat { name: "maxbytes", value: "67108864" },
                Response::Stat { name: "maxconns", value: "1024" },
                Response::End,
            ]],
            "81 10 0008 00 00 0000 00000010 00000031 0000000000000000 'maxbytes' '67108864' | \
             81 10 0008 00 00 0000 0000000c 00000031 0000000000000000 'maxconns' '1024' | \
             81 10 0000 00 00 0000 00000000 00000031 0000000000000000"),
        ("flush with a delay",
            "80 08 0000 04 00 0000 00000004 0000002c 0000000000000000 0000003c",
            vec![vec![Response::Ok]],
            "81 08 0000 00 00 0000 00000000 0000002c 0000000000000000"),
        ("flushq, noop",
            "80 18 0000 00 00 0000 00000000 0000002d 0000000000000000 | \
             80 0a 0000 00 00 0000 00000000 0000002e 0000000000000000",
            vec![vec![Response::Ok], vec![Response::Ok]],
            "81 0a 0000 00 00 0000 00000000 0000002e 0000000000000000"),
        ("flush",
            "80 08 0000 00 00 0000 00000000 0000002f 0000000000000000",
            vec![vec![Response::Ok]],
            "81 08 0000 00 00 0000 00000000 0000002f 0000000000000000"),
        ("quit answers, then the connection closes",
            "80 07 0000 00 00 0000 00000000 0000003f 0000000000000000",
            vec![vec![Response::Ok]],
            "81 07 0000 00 00 0000 00000000 0000003f 0000000000000000"),
        ("quitq closes without a word",
            "80 17 0000 00 00 0000 00000000 0000003e 0000000000000000",
            vec![vec![Response::Ok]],
            ""),
        ("SASL list mechs, as bmemcached and pylibmc send it",
            "80 20 0000 00 00 0000 00000000 00000000 0000000000000000",
            vec![vec![Response::SaslMechs("PLAIN")]],
            "81 20 0000 00 00 0000 00000005 00000000 0000000000000000 'PLAIN'"),
        ("SASL PLAIN auth with a wrong password",
            "80 21 0005 00 00 0000 00000010 00000000 0000000000000000 'PLAIN' 00 'user' 00 'wrong'",
            vec![vec![Response::Error(Error::AuthFailed)]],
            "81 21 0000 00 00 0020 0000000d 00000000 0000000000000000 'Auth failure.'"),
        ("SASL PLAIN auth",
            "80 21 0005 00 00 0000 0000000f 00000000 0000000000000000 'PLAIN' 00 'user' 00 'pass'",
            vec![vec![Response::AuthOk]],
            "81 21 0000 00 00 0000 0000000d 00000000 0000000000000000 'Authenticated'"),
    ];
    for (name, requests, answers, expected) in table {
        let sent = converse(&wire(requests), &answers);
        assert_eq!(sent, wire(expected), "{name}: sent {}", dump(&sent));
    }
}

/// Requests memcached refuses, what it answers, and whether it closes.
#[test]
fn malformed_requests_match_memcached() {
    #[rustfmt::skip]
    let table: Vec<(&str, &str, Error, usize, bool, &str)> = vec![
        ("key of 251 bytes: invalid arguments, close",
            "80 00 00fb 00 00 0000 000000fb 00000035 0000000000000000",
            Error::client(""), HEADER_LEN, true,
            "81 00 0000 00 00 0004 00000011 00000035 0000000000000000 'Invalid arguments'"),
        ("key longer than the body: unknown command, close",
            "80 00 0003 00 00 0000 00000002 00000036 0000000000000000 'ab'",
            Error::UnknownCommand, HEADER_LEN, true,
            "81 00 0000 00 00 0081 0000000f 00000036 0000000000000000 'Unknown command'"),
        ("set with 4 bytes of extras",
            "80 01 0003 04 00 0000 00000008 00000037 0000000000000000 00000000 'abc' 'v'",
            Error::client(""), HEADER_LEN, true,
            "81 01 0000 00 00 0004 00000011 00000037 0000000000000000 'Invalid arguments'"),
        ("get with extras",
            "80 00 0003 04 00 0000 00000007 00000038 0000000000000000 00000000 'abc'",
            Error::client(""), HEADER_LEN, true,
            "81 00 0000 00 00 0004 00000011 00000038 0000000000000000 'Invalid arguments'"),
        ("flush with 8 bytes of extras",
            "80 08 0000 08 00 0000 00000008 0000003d 0000000000000000 0000000000000000",
            Error::client(""), HEADER_LEN, true,
            "81 08 0000 00 00 0004 00000011 0000003d 0000000000000000 'Invalid arguments'"),
        ("unknown opcode: the body is skipped and the connection kept",
            "80 30 0000 00 00 0000 00000000 00000032 0000000000000000",
            Error::UnknownCommand, HEADER_LEN, false,
            "81 30 0000 00 00 0081 0000000f 00000032 0000000000000000 'Unknown command'"),
        ("SASL mechanism over 32 bytes: invalid, data skipped, connection kept",
            "80 21 0021 00 00 0000 00000022 00000005 0000000000000000 \
             'MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM' 'x'",
            Error::client(""), HEADER_LEN + 34, false,
            "81 21 0000 00 00 0004 00000011 00000005 0000000000000000 'Invalid arguments'"),
    ];
    for (name, request, error_kind, want_consumed, want_close, expected) in table {
        let bytes = wire(request);
        let Decode::Invalid {
            error,
            reply,
            consumed,
            close,
        } = decode(&bytes, &limits())
        else {
            panic!("{name}: expected Invalid");
        };
        assert_eq!(
            std::mem::discriminant(&error),
            std::mem::discriminant(&error_kind),
            "{name}: {error:?}"
        );
        assert_eq!((consumed, close), (want_consumed, want_close), "{name}");
        let sent = encoded(&binary(&reply), &[Response::Error(error)]);
        assert_eq!(sent, wire(expected), "{name}: sent {}", dump(&sent));
    }
}

#[test]
fn header_errors_are_answered_before_the_body_arrives() {
    // A 251-byte key and a get with a 1 GiB body: decided from the header.
    for dump in [
        "80 00 00fb 00 00 0000 000000fb 00000001 0000000000000000",
        "80 00 0003 00 00 0000 40000000 00000001 0000000000000000",
    ] {
        let bytes = wire(dump);
        assert!(matches!(
            decode(&bytes, &limits()),
            Decode::Invalid {
                consumed: HEADER_LEN,
                close: true,
                ..
            }
        ));
    }
}

#[test]
fn unknown_opcode_with_a_body_is_skipped_exactly() {
    // memcached 1.6.18 skips `body length` bytes *after* the extras and key,
    // eating the start of the next request; this codec skips the body only.
    let bytes = wire(
        "80 30 0003 02 00 0000 0000000a 00000001 0000000000000000 eeee 'abc' 'vvvvv' | \
         80 0a 0000 00 00 0000 00000000 00000002 0000000000000000",
    );
    let Decode::Invalid {
        error,
        consumed,
        close,
        ..
    } = decode(&bytes, &limits())
    else {
        panic!("expected Invalid");
    };
    assert_eq!((error, consumed, close), (Error::UnknownCommand, 34, false));
    assert_eq!(decode_one(&bytes[34..]).command, Command::Noop);
    // Only part of the body: wait for the rest.
    assert_eq!(decode(&bytes[..30], &limits()), Decode::Incomplete);
}

#[test]
fn unknown_opcode_with_an_absurd_body_closes() {
    let bytes = wire("80 30 0000 00 00 0000 7fffffff 00000001 0000000000000000");
    assert!(matches!(
        decode(&bytes, &limits()),
        Decode::Invalid {
            error: Error::UnknownCommand,
            consumed: HEADER_LEN,
            close: true,
            ..
        }
    ));
}

#[test]
fn bad_magic_closes() {
    // memcached closes without answering; we answer "invalid", then close.
    for dump in [
        "81",
        "81 00 0003 00 00 0000 00000003 00000040 0000000000000000 'abc'",
    ] {
        let bytes = wire(dump);
        let Decode::Invalid {
            consumed, close, ..
        } = decode(&bytes, &limits())
        else {
            panic!("expected Invalid");
        };
        assert!(close);
        assert_eq!(consumed, bytes.len());
    }
}

/// memcached 1.6.18: a 250-byte key is looked up, a 251-byte one is
/// "invalid arguments" and the connection is closed.
#[test]
fn key_of_250_bytes_vs_251() {
    let key = [b'a'; 251];
    let get = |len: usize| {
        let mut bytes = wire(&format!(
            "80 00 {len:04x} 00 00 0000 {len:08x} 00000034 0000000000000000"
        ));
        bytes.extend_from_slice(&key[..len]);
        bytes
    };
    let ok = get(250);
    let request = decode_one(&ok);
    assert_eq!(
        request.command,
        Command::Get {
            keys: Keys::One(&key[..250]),
            touch: None
        }
    );
    assert_eq!(
        encoded(&binary(&request.reply), &[miss(b"k"), Response::End]),
        wire("81 00 0000 00 00 0001 00000009 00000034 0000000000000000 'Not found'")
    );
    let long = get(251);
    let Decode::Invalid {
        error,
        reply,
        consumed: HEADER_LEN,
        close: true,
    } = decode(&long, &limits())
    else {
        panic!("expected Invalid and close");
    };
    assert_eq!(
        encoded(&binary(&reply), &[Response::Error(error)]),
        wire("81 00 0000 00 00 0004 00000011 00000034 0000000000000000 'Invalid arguments'")
    );
    // The same for a storage opcode.
    let mut set = wire("80 01 00fb 08 00 0000 00000104 00000001 0000000000000000 0000000000000000");
    set.extend_from_slice(&key);
    set.push(b'v');
    assert!(matches!(
        decode(&set, &limits()),
        Decode::Invalid {
            consumed: HEADER_LEN,
            close: true,
            ..
        }
    ));
}

/// A value over the limit is refused from its header, extras and key alone;
/// the connection swallows the value as it comes.
#[test]
fn too_large_value_needs_only_the_head() {
    let value_len = 2 << 20;
    let mut bytes =
        wire("80 01 0003 08 00 0000 0020000b 00000039 0000000000000000 0000000000000000 'big'");
    assert_eq!(bytes.len(), HEADER_LEN + 8 + 3);
    for n in 0..bytes.len() {
        assert_eq!(decode(&bytes[..n], &limits()), Decode::Incomplete);
    }
    let head_len = bytes.len();
    let expect = |bytes: &[u8]| match decode(bytes, &limits()) {
        Decode::Request { request, consumed } => {
            assert_eq!(
                request.command,
                Command::TooLarge {
                    mode: StoreMode::Set,
                    key: b"big",
                    cas: 0,
                    swallow: value_len
                }
            );
            assert_eq!(consumed, head_len);
            binary(&request.reply)
        }
        other => panic!("expected TooLarge, got {other:?}"),
    };
    let reply = expect(&bytes);
    // The same answer with part of the value already read.
    bytes.extend(std::iter::repeat_n(b'x', 1000));
    assert_eq!(expect(&bytes), reply);
    // memcached: E2BIG with "Too large.", for setq as well.
    assert_eq!(
        encoded(&reply, &[Response::Error(Error::TooLarge)]),
        wire("81 01 0000 00 00 0003 0000000a 00000039 0000000000000000 'Too large.'")
    );
    let quiet =
        reply_of("80 11 0003 08 00 0000 0020000b 0000003b 0000000000000000 0000000000000000 'big'");
    assert_eq!(
        encoded(&quiet, &[Response::Error(Error::TooLarge)]),
        wire("81 11 0000 00 00 0003 0000000a 0000003b 0000000000000000 'Too large.'")
    );
    // Append and prepend are bounded the same way.
    let bytes = wire("80 0e 0003 00 00 0000 00200003 00000001 0000000000000000 'big'");
    assert!(matches!(
        decode(&bytes, &limits()),
        Decode::Request {
            request: Request {
                command: Command::TooLarge {
                    swallow: 0x0020_0000,
                    ..
                },
                ..
            },
            consumed: 27,
        }
    ));
}

fn reply_of(dump: &str) -> BinaryReply {
    let bytes = wire(dump);
    match decode(&bytes, &limits()) {
        Decode::Request { request, .. } => binary(&request.reply),
        Decode::Invalid { reply, .. } => binary(&reply),
        Decode::Incomplete => panic!("incomplete: {dump}"),
    }
}

#[test]
fn value_at_the_limit_is_buffered() {
    let limits = Limits {
        max_value_len: 4,
        ..Limits::default()
    };
    let at = wire(
        "80 01 0001 08 00 0000 0000000d 00000000 0000000000000000 0000000000000000 'k' 'abcd'",
    );
    assert!(matches!(
        decode(&at, &limits),
        Decode::Request {
            request: Request {
                command: Command::Store { value: b"abcd", .. },
                ..
            },
            ..
        }
    ));
    let over = wire(
        "80 01 0001 08 00 0000 0000000e 00000000 0000000000000000 0000000000000000 'k' 'abcde'",
    );
    assert!(matches!(
        decode(&over, &limits),
        Decode::Request {
            request: Request {
                command: Command::TooLarge {
                    mode: StoreMode::Set,
                    key: b"k",
                    cas: 0,
                    swallow: 5
                },
                ..
            },
            consumed: 33,
        }
    ));
}

/// Every strict prefix of every request is incomplete.
#[test]
fn truncated_requests_are_incomplete() {
    for dump in [
        "80 00 0002 00 00 0000 00000002 00000000 0000000000000000 'k1'",
        "80 01 0002 08 00 0000 0000000f 00000000 0000000000000000 deadbeef00000000 'k1' 'hello'",
        "80 05 0001 14 00 0000 00000015 00000000 0000000000000000 0000000000000005000000000000000000000000 'n'",
        "80 21 0005 00 00 0000 0000000f 00000000 0000000000000000 'PLAIN' 00 'user' 00 'pass'",
        "80 0a 0000 00 00 0000 00000000 00000000 0000000000000000",
    ] {
        let bytes = wire(dump);
        for n in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..n], &limits()),
                Decode::Incomplete,
                "{dump} [..{n}]"
            );
        }
        decode_one(&bytes);
    }
}

#[test]
fn opaque_and_cas_round_trip() {
    let bytes = wire("80 04 0001 00 00 0000 00000001 deadbeef 0123456789abcdef 'k'");
    let request = decode_one(&bytes);
    assert_eq!(
        request.command,
        Command::Delete {
            key: b"k",
            cas: 0x0123_4567_89ab_cdef
        }
    );
    let reply = binary(&request.reply);
    assert_eq!(
        encoded(&reply, &[Response::Exists]),
        wire("81 04 0000 00 00 0002 00000014 deadbeef 0000000000000000 'Data exists for key.'")
    );
    let get = reply_of("80 00 0001 00 00 0000 00000001 cafebabe 0000000000000000 'k'");
    assert_eq!(
        encoded(&get, &[hit(b"k", 7, u64::MAX, b"v")]),
        wire("81 00 0000 04 00 0000 00000005 cafebabe ffffffffffffffff 00000007 'v'")
    );
}

/// The neutral errors a server may answer with, as binary statuses.
#[test]
fn errors_map_to_statuses_and_texts() {
    let r = reply(opcode::SET, 1, false, false);
    #[rustfmt::skip]
    let table = [
        (Error::UnknownCommand, status::UNKNOWN_COMMAND, "Unknown command"),
        (Error::client("bad data chunk"), status::INVALID_ARGUMENTS, "Invalid arguments"),
        (Error::server("boom"), status::INTERNAL_ERROR, "boom"),
        (Error::TooLarge, status::VALUE_TOO_LARGE, "Too large."),
        (Error::OutOfMemory, status::OUT_OF_MEMORY, "Out of memory"),
        (Error::NonNumeric, status::NON_NUMERIC, "Non-numeric server-side value for incr or decr"),
        (Error::AuthFailed, status::AUTH_ERROR, "Auth failure."),
        (Error::Unavailable("node not ready".into()), status::TEMPORARY_FAILURE, "node not ready"),
    ];
    for (error, code, text) in table {
        let sent = encoded(&r, &[Response::Error(error.clone())]);
        assert_eq!(u16::from_be_bytes([sent[6], sent[7]]), code, "{error:?}");
        assert_eq!(&sent[HEADER_LEN..], text.as_bytes(), "{error:?}");
        // Quiet opcodes still send their errors.
        let quiet = reply(opcode::SETQ, 1, true, false);
        assert!(!encoded(&quiet, &[Response::Error(error)]).is_empty());
    }
}

#[test]
fn quiet_opcodes_send_no_successes() {
    use opcode::*;
    for (op, response) in [
        (SETQ, Response::Stored { cas: 1 }),
        (ADDQ, Response::Stored { cas: 1 }),
        (REPLACEQ, Response::Stored { cas: 1 }),
        (APPENDQ, Response::Stored { cas: 1 }),
        (PREPENDQ, Response::Stored { cas: 1 }),
        (DELETEQ, Response::Deleted),
        (INCREMENTQ, Response::Number { value: 1, cas: 1 }),
        (DECREMENTQ, Response::Number { value: 1, cas: 1 }),
        (QUITQ, Response::Ok),
        (FLUSHQ, Response::Ok),
        (GETQ, miss(b"k")),
        (GETKQ, miss(b"k")),
        (GATQ, miss(b"k")),
        (GATKQ, miss(b"k")),
    ] {
        let r = reply_of(&request_dump(op));
        assert!(r.quiet, "{op:#04x} is quiet");
        assert_eq!(encoded(&r, &[response, Response::End]), b"", "{op:#04x}");
    }
}

/// A well-formed request of `op` with key `k`, for tests that need only the
/// reply.
fn request_dump(op: u8) -> String {
    use opcode::*;
    let (extras, value) = match op {
        SET | SETQ | ADD | ADDQ | REPLACE | REPLACEQ => ("0000000000000000", "'v'"),
        APPEND | APPENDQ | PREPEND | PREPENDQ => ("", "'v'"),
        INCREMENT | INCREMENTQ | DECREMENT | DECREMENTQ => {
            ("0000000000000001000000000000000000000000", "")
        }
        GAT | GATQ | GATK | GATKQ | TOUCH => ("00000000", ""),
        QUITQ | QUIT | FLUSH | FLUSHQ | NOOP | VERSION => {
            return format!("80 {op:02x} 0000 00 00 0000 00000000 00000000 0000000000000000");
        }
        _ => ("", ""),
    };
    let extras_len = extras.len() / 2;
    let value_len = if value.is_empty() { 0 } else { 1 };
    format!(
        "80 {op:02x} 0001 {extras_len:02x} 00 0000 {:08x} 00000000 0000000000000000 {extras} 'k' {value}",
        extras_len + 1 + value_len
    )
}

/// python-binary-memcached's `get_multi`: getkq for all keys but the last,
/// a plain getk for the last one, which ends the batch.
#[test]
fn bmemcached_get_multi_batch() {
    let requests = wire(
        "80 0d 0001 00 00 0000 00000001 00000000 0000000000000000 'a' | \
         80 0d 0001 00 00 0000 00000001 00000000 0000000000000000 'b' | \
         80 0c 0001 00 00 0000 00000001 00000000 0000000000000000 'c'",
    );
    let sent = converse(
        &requests,
        &[
            vec![miss(b"a"), Response::End],
            vec![hit(b"b", 2, 3, b"B"), Response::End],
            vec![miss(b"c"), Response::End],
        ],
    );
    assert_eq!(
        sent,
        wire(
            "81 0d 0001 04 00 0000 00000006 00000000 0000000000000003 00000002 'b' 'B' | \
             81 0c 0001 00 00 0001 00000001 00000000 0000000000000000 'c'"
        )
    );
}

/// A large shared value reaches the output without being copied.
#[test]
fn large_hit_values_are_queued_not_copied() {
    let value = bytes::Bytes::from(vec![b'z'; 64 * 1024]);
    let r = reply(opcode::GETK, 9, false, true);
    let mut out = OutBuf::new();
    let response = Response::Hit(Hit {
        key: b"big",
        flags: 1,
        cas: 2,
        value: Value::Shared(value.clone()),
        ttl: -1,
        last_access: 0,
        fetched: false,
    });
    encode(&r, &response, &mut out);
    let mut slices = [std::io::IoSlice::new(&[]); 4];
    let n = out.io_slices(&mut slices);
    assert_eq!(n, 2, "header and the shared value");
    assert_eq!(slices[1].as_ptr(), value.as_ptr());
    assert_eq!(out.len(), HEADER_LEN + 4 + 3 + value.len());
}

/// A hex dump of `bytes`, for assertion messages.
pub(super) fn dump(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
