//! The binary protocol cases every suite replays against memcached: the
//! single node's (`binary.rs`) and the cluster's through each node
//! (`cluster.rs`). Opcodes and packet builders are shared too.
#![allow(dead_code)]

use e2e::Packet;

pub const GET: u8 = 0x00;
pub const SET: u8 = 0x01;
pub const ADD: u8 = 0x02;
pub const REPLACE: u8 = 0x03;
pub const DELETE: u8 = 0x04;
pub const INCR: u8 = 0x05;
pub const DECR: u8 = 0x06;
pub const QUIT: u8 = 0x07;
pub const FLUSH: u8 = 0x08;
pub const GETQ: u8 = 0x09;
pub const NOOP: u8 = 0x0a;
pub const GETK: u8 = 0x0c;
pub const GETKQ: u8 = 0x0d;
pub const APPEND: u8 = 0x0e;
pub const PREPEND: u8 = 0x0f;
pub const SETQ: u8 = 0x11;
pub const ADDQ: u8 = 0x12;
pub const DELETEQ: u8 = 0x14;
pub const INCRQ: u8 = 0x15;
pub const FLUSHQ: u8 = 0x18;
pub const VERBOSITY: u8 = 0x1b;
pub const TOUCH: u8 = 0x1c;
pub const GAT: u8 = 0x1d;
pub const GATQ: u8 = 0x1e;
pub const SASL_LIST: u8 = 0x20;
pub const GATK: u8 = 0x23;
pub const GATKQ: u8 = 0x24;

pub fn set(op: u8, key: &str, value: &str, flags: u32, exptime: u32, opaque: u32) -> Vec<u8> {
    let mut extras = flags.to_be_bytes().to_vec();
    extras.extend_from_slice(&exptime.to_be_bytes());
    Packet::request(op, &extras, key.as_bytes(), value.as_bytes(), opaque, 0)
}

pub fn keyed(op: u8, key: &str, opaque: u32) -> Vec<u8> {
    Packet::request(op, b"", key.as_bytes(), b"", opaque, 0)
}

pub fn arith(op: u8, key: &str, delta: u64, initial: u64, exptime: u32, opaque: u32) -> Vec<u8> {
    let mut extras = delta.to_be_bytes().to_vec();
    extras.extend_from_slice(&initial.to_be_bytes());
    extras.extend_from_slice(&exptime.to_be_bytes());
    Packet::request(op, &extras, key.as_bytes(), b"", opaque, 0)
}

pub fn with_exptime(op: u8, key: &str, exptime: u32, opaque: u32) -> Vec<u8> {
    Packet::request(op, &exptime.to_be_bytes(), key.as_bytes(), b"", opaque, 0)
}

pub fn cases() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let long = "k".repeat(251);
    vec![
        (
            "set get getk",
            vec![
                set(SET, "a", "1", 7, 0, 1),
                keyed(GET, "a", 2),
                keyed(GETK, "a", 3),
            ],
        ),
        (
            "get and getk miss",
            vec![keyed(GET, "nope", 1), keyed(GETK, "nope", 2)],
        ),
        (
            "quiet batch of gets ended by noop",
            vec![
                set(SETQ, "a", "1", 0, 0, 1),
                set(SETQ, "c", "3", 0, 0, 2),
                keyed(GETKQ, "a", 3),
                keyed(GETKQ, "b", 4),
                keyed(GETKQ, "c", 5),
                keyed(GETQ, "b", 6),
                keyed(GETQ, "c", 7),
                keyed(NOOP, "", 8),
            ],
        ),
        (
            "add and addq",
            vec![
                set(ADD, "a", "1", 0, 0, 1),
                set(ADD, "a", "2", 0, 0, 2),
                set(ADDQ, "a", "3", 0, 0, 3),
            ],
        ),
        (
            "replace",
            vec![
                set(REPLACE, "a", "1", 0, 0, 1),
                set(SET, "a", "x", 0, 0, 2),
                set(REPLACE, "a", "y", 0, 0, 3),
                keyed(GET, "a", 4),
            ],
        ),
        (
            "append and prepend",
            vec![
                Packet::request(APPEND, b"", b"a", b">", 1, 0),
                set(SET, "a", "mm", 3, 0, 2),
                Packet::request(APPEND, b"", b"a", b">", 3, 0),
                Packet::request(PREPEND, b"", b"a", b"<", 4, 0),
                keyed(GET, "a", 5),
            ],
        ),
        (
            "delete",
            vec![
                keyed(DELETE, "a", 1),
                set(SET, "a", "1", 0, 0, 2),
                keyed(DELETE, "a", 3),
                keyed(DELETEQ, "a", 4),
                keyed(GET, "a", 5),
            ],
        ),
        (
            "incr and decr",
            vec![
                arith(INCR, "n", 1, 10, 0xffff_ffff, 1),
                arith(INCR, "n", 1, 10, 0, 2),
                arith(INCR, "n", 5, 10, 0, 3),
                arith(DECR, "n", 100, 10, 0, 4),
                arith(INCRQ, "n", 1, 0, 0, 5),
                keyed(GET, "n", 6),
            ],
        ),
        (
            "incr on non-numeric",
            vec![set(SET, "n", "abc", 0, 0, 1), arith(INCR, "n", 1, 0, 0, 2)],
        ),
        (
            "incr wraps",
            vec![
                set(SET, "n", "18446744073709551615", 0, 0, 1),
                arith(INCR, "n", 2, 0, 0, 2),
            ],
        ),
        (
            "touch and gat",
            vec![
                with_exptime(TOUCH, "a", 10, 1),
                set(SET, "a", "1", 9, 0, 2),
                with_exptime(TOUCH, "a", 10, 3),
                with_exptime(GAT, "a", 10, 4),
                with_exptime(GATK, "a", 10, 5),
                with_exptime(GATQ, "nope", 10, 6),
                with_exptime(GATKQ, "a", 10, 7),
                with_exptime(GAT, "nope", 10, 8),
            ],
        ),
        (
            "flush",
            vec![
                set(SET, "a", "1", 0, 0, 1),
                keyed(FLUSH, "", 2),
                keyed(GET, "a", 3),
                Packet::request(FLUSHQ, b"", b"", b"", 4, 0),
            ],
        ),
        ("a 251-byte key", vec![keyed(GET, &long, 1)]),
        (
            "negative-style absolute exptime in the past",
            vec![set(SET, "a", "1", 0, 1_000_000_000, 1), keyed(GET, "a", 2)],
        ),
        (
            "unknown opcode",
            vec![Packet::request(0x50, b"", b"", b"", 9, 0)],
        ),
        (
            "set with a wrong extras length",
            vec![Packet::request(SET, &[0, 0, 0, 0], b"a", b"1", 1, 0)],
        ),
        (
            "get with extras",
            vec![Packet::request(GET, &[0, 0, 0, 0], b"a", b"", 1, 0)],
        ),
        (
            "set with a cas mismatch",
            vec![
                set(SET, "a", "1", 0, 0, 1),
                {
                    let mut extras = 0u32.to_be_bytes().to_vec();
                    extras.extend_from_slice(&0u32.to_be_bytes());
                    Packet::request(SET, &extras, b"a", b"2", 2, 999_999)
                },
                keyed(GET, "a", 3),
            ],
        ),
        (
            "set with a cas on a missing key",
            vec![{
                let extras = [0u8; 8];
                Packet::request(SET, &extras, b"a", b"2", 2, 999_999)
            }],
        ),
    ]
}
