//! Randomized tests: the codec never panics, and what it decides about a
//! request never changes as more bytes arrive.
//!
//! A fixed-seed xorshift generator keeps failures reproducible without a
//! dependency; `SHOAL_FUZZ_ITERS` raises the iteration count for a longer
//! local run.

use super::{HEADER_LEN, REQUEST_MAGIC, RESPONSE_MAGIC, decode, encode, opcode};
use crate::{
    BinaryReply, Bytes, Command, Decode, Error, Hit, Limits, OutBuf, Reply, Request, Response,
    Value,
};

/// xorshift64*: small, fast, good enough to shake a parser.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0), near enough.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    /// Up to `max - 1` random bytes.
    fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
}

fn iterations(default: usize) -> usize {
    std::env::var("SHOAL_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Small limits, so the too-large and absurd-body paths are hit often.
const LIMITS: Limits = Limits {
    max_value_len: 64,
    max_line_len: 128,
};

/// Every opcode memcached implements, plus a few it does not.
const OPCODES: [u8; 39] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x20,
    0x21, 0x22, 0x23, 0x24, 0x1f, 0x30, 0xff,
];

/// The invariants every decode result keeps, whatever the input.
fn check(buf: &[u8], result: &Decode<'_>) {
    match result {
        Decode::Incomplete => {}
        Decode::Request { request, consumed } => {
            assert!(
                *consumed >= HEADER_LEN && *consumed <= buf.len(),
                "consumed {consumed} of {}",
                buf.len()
            );
            let Reply::Binary(reply) = request.reply else {
                panic!("binary decode gave a non-binary reply");
            };
            assert_eq!(reply.opcode, buf[1]);
            let body = be_u32(&buf[8..12]) as usize;
            match request.command {
                Command::TooLarge { key, swallow, .. } => {
                    assert!(swallow > LIMITS.max_value_len);
                    assert_eq!(*consumed + swallow, HEADER_LEN + body);
                    assert!(within(buf, key));
                }
                _ => assert_eq!(*consumed, HEADER_LEN + body),
            }
            check_borrows(buf, &request.command);
        }
        Decode::Invalid {
            consumed, close, ..
        } => {
            assert!(
                *consumed >= 1 && *consumed <= buf.len(),
                "consumed {consumed} of {}",
                buf.len()
            );
            if !close {
                assert!(*consumed >= HEADER_LEN);
            }
        }
    }
}

/// Keys and values borrow from the request itself.
fn check_borrows(buf: &[u8], command: &Command<'_>) {
    let slices: Vec<&[u8]> = match command {
        Command::Get { keys, .. } => keys.iter().collect(),
        Command::Store { key, value, .. } => vec![key, value],
        Command::Delete { key, .. }
        | Command::Arith { key, .. }
        | Command::Touch { key, .. }
        | Command::TooLarge { key, .. } => vec![key],
        Command::Stats { group } => vec![group],
        Command::SaslAuth { mechanism, data } | Command::SaslStep { mechanism, data } => {
            vec![mechanism, data]
        }
        _ => vec![],
    };
    for s in slices {
        assert!(within(buf, s), "a slice outside the buffer");
        assert!(s.len() <= buf.len() - HEADER_LEN);
    }
}

fn within(buf: &[u8], s: &[u8]) -> bool {
    let range = buf.as_ptr_range();
    s.is_empty() || (range.start <= s.as_ptr() && s.as_ptr_range().end <= range.end)
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Decode every prefix of `buf`: each is either incomplete or the same
/// decision as for the whole buffer, and once decided it stays decided.
fn check_prefixes(buf: &[u8], rng: &mut Rng) {
    let full = decode(buf, &LIMITS);
    check(buf, &full);
    let magic_ok = buf.first() == Some(&REQUEST_MAGIC);
    let mut decided = false;
    // Every prefix of small frames; a sample of large ones.
    let lens: Vec<usize> = if buf.len() <= 400 {
        (0..=buf.len()).collect()
    } else {
        let mut v: Vec<usize> = (0..64).map(|_| rng.below(buf.len() + 1)).collect();
        v.extend(0..=HEADER_LEN + 300);
        v.sort_unstable();
        v
    };
    for n in lens {
        let part = decode(&buf[..n], &LIMITS);
        check(&buf[..n], &part);
        match &part {
            Decode::Incomplete => assert!(!decided, "decided, then incomplete at {n}"),
            // A bad magic byte consumes whatever is there.
            Decode::Invalid { close: true, .. } if !magic_ok => decided = true,
            other => {
                decided = true;
                assert_eq!(other, &full, "prefix of {n} bytes decided differently");
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..iterations(20_000) {
        let len = rng.below(80);
        let mut buf = rng.bytes(len);
        if !buf.is_empty() && rng.chance(2) {
            buf[0] = REQUEST_MAGIC;
        }
        check_prefixes(&buf, &mut rng);
    }
}

/// A header with a plausible opcode and lengths that are often consistent,
/// often off by a little, sometimes absurd; then a random body, truncated or
/// followed by junk.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let op = OPCODES[rng.below(OPCODES.len())];
    let key_len = match rng.below(10) {
        0 => 0,
        1 => 250 + rng.below(3),
        2 => rng.below(0x1_0000),
        _ => 1 + rng.below(12),
    };
    let extras_len = match rng.below(5) {
        0 => [0usize, 4, 8, 20][rng.below(4)],
        1 => rng.below(256),
        _ => match op {
            0x01..=0x03 | 0x11..=0x13 => 8,
            0x05 | 0x06 | 0x15 | 0x16 => 20,
            0x1b..=0x1e | 0x23 | 0x24 => 4,
            0x08 | 0x18 => [0, 4][rng.below(2)],
            _ => 0,
        },
    };
    let natural = key_len + extras_len;
    let body_len: u32 = match rng.below(10) {
        0 => rng.next() as u32,
        1 => natural.saturating_sub(rng.below(3)) as u32,
        2 => (natural + LIMITS.max_value_len + rng.below(8)) as u32,
        3 => (natural + rng.below(200)) as u32,
        4 => (natural + rng.below(4)) as u32,
        _ => natural as u32,
    };
    let mut frame = Vec::with_capacity(HEADER_LEN + 64);
    frame.push(if rng.chance(50) {
        rng.byte()
    } else {
        REQUEST_MAGIC
    });
    frame.push(op);
    frame.extend_from_slice(&(key_len as u16).to_be_bytes());
    frame.push(extras_len as u8);
    frame.push(rng.byte());
    frame.extend_from_slice(&(rng.next() as u16).to_be_bytes());
    frame.extend_from_slice(&body_len.to_be_bytes());
    frame.extend_from_slice(&(rng.next() as u32).to_be_bytes());
    frame.extend_from_slice(&rng.next().to_be_bytes());
    let body = (body_len as usize).min(600);
    let keep = match rng.below(4) {
        0 => rng.below(body + 1),
        _ => body,
    };
    frame.extend(rng.bytes(keep));
    if rng.chance(3) {
        let junk = rng.below(40);
        frame.extend(rng.bytes(junk));
    }
    frame
}

#[test]
fn random_headers_never_panic_and_decide_once() {
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..iterations(20_000) {
        let frame = random_frame(&mut rng);
        check_prefixes(&frame, &mut rng);
    }
}

/// Many random frames back to back, decoded the way a connection would:
/// every step makes progress or stops.
#[test]
fn random_streams_always_progress() {
    let mut rng = Rng(0x5eed_0003);
    for _ in 0..iterations(2_000) {
        let mut stream = Vec::new();
        for _ in 0..rng.below(12) {
            stream.extend(random_frame(&mut rng));
        }
        let mut at = 0;
        let mut skip = 0usize;
        loop {
            if skip > 0 {
                let n = skip.min(stream.len() - at);
                at += n;
                skip -= n;
                if skip > 0 {
                    break;
                }
            }
            let rest = &stream[at..];
            let result = decode(rest, &LIMITS);
            check(rest, &result);
            match result {
                Decode::Incomplete => break,
                Decode::Request { request, consumed } => {
                    at += consumed;
                    if let Command::TooLarge { swallow, .. } = request.command {
                        skip = swallow;
                    }
                }
                Decode::Invalid {
                    consumed, close, ..
                } => {
                    at += consumed;
                    if close {
                        break;
                    }
                }
            }
        }
    }
}

/// Every opcode, quiet or not, with every kind of response: no panic, and
/// the output is a sequence of well-formed response packets.
#[test]
fn encoding_never_panics_and_frames_are_well_formed() {
    let mut rng = Rng(0x5eed_0004);
    let big = Bytes::from(vec![b'v'; 4096]);
    let long_name = "n".repeat(300);
    for _ in 0..iterations(20_000) {
        let reply = BinaryReply {
            opcode: if rng.chance(4) {
                rng.byte()
            } else {
                OPCODES[rng.below(OPCODES.len())]
            },
            opaque: rng.next() as u32,
            quiet: rng.chance(2),
            with_key: rng.chance(2),
        };
        let key_len = rng.below(260);
        let key = rng.bytes(key_len);
        let small = rng.some_bytes(50);
        let value = match rng.below(3) {
            0 => Value::Shared(big.clone()),
            1 => Value::Shared(Bytes::from(small.clone())),
            _ => Value::Slice(&small),
        };
        let response = match rng.below(20) {
            0 => Response::Hit(Hit {
                key: &key,
                flags: rng.next() as u32,
                cas: rng.next(),
                value,
                ttl: -1,
                last_access: 0,
                fetched: false,
            }),
            1 => Response::Miss { key: &key },
            2 => Response::End,
            3 => Response::Stored { cas: rng.next() },
            4 => Response::NotStored,
            5 => Response::Exists,
            6 => Response::NotFound,
            7 => Response::Deleted,
            8 => Response::Touched { flags: 0, cas: 0 },
            9 => Response::Number {
                value: rng.next(),
                cas: rng.next(),
            },
            10 => Response::Ok,
            11 => Response::Version("1.6.18"),
            12 => Response::Stat {
                name: &long_name[..rng.below(300)],
                value: "1",
            },
            13 => Response::Debug {
                key: &key,
                fields: "exp=-1",
            },
            14 => Response::SaslMechs("PLAIN"),
            15 => Response::AuthOk,
            16 => Response::Error(Error::AuthFailed),
            17 => Response::Error(Error::server("boom")),
            18 => Response::Error(Error::UnknownCommand),
            _ => Response::Error(Error::client("bad")),
        };
        let mut out = OutBuf::new();
        encode(&reply, &response, &mut out);
        let bytes = out.to_vec();
        assert_eq!(bytes.len(), out.len());
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            assert!(rest.len() >= HEADER_LEN, "a partial header");
            assert_eq!(rest[0], RESPONSE_MAGIC);
            assert_eq!(rest[1], reply.opcode);
            assert_eq!(be_u32(&rest[12..16]), reply.opaque);
            let key_len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            let extras_len = usize::from(rest[4]);
            let body = be_u32(&rest[8..12]) as usize;
            assert!(key_len + extras_len <= body);
            assert!(HEADER_LEN + body <= rest.len(), "body overruns the output");
            rest = &rest[HEADER_LEN + body..];
        }
        // Quiet opcodes answer nothing but errors and hits.
        let status_ok = bytes.len() >= HEADER_LEN && bytes[6..8] == [0, 0];
        if reply.quiet && status_ok {
            assert!(
                matches!(
                    response,
                    Response::Hit(_)
                        | Response::Stat { .. }
                        | Response::Debug { .. }
                        | Response::End
                ),
                "quiet opcode {:#04x} answered {response:?}",
                reply.opcode
            );
        }
    }
}

/// Random well-formed requests of every opcode decode to the fields they
/// were built from.
#[test]
fn random_valid_requests_round_trip() {
    let mut rng = Rng(0x5eed_0005);
    let limits = Limits::default();
    for _ in 0..iterations(5_000) {
        let op = OPCODES[rng.below(36)];
        let key_len = 1 + rng.below(250);
        let key = rng.bytes(key_len);
        let opaque = rng.next() as u32;
        let cas = rng.next();
        let (extras, key, value): (Vec<u8>, &[u8], Vec<u8>) = match op {
            opcode::SET..=opcode::REPLACE | opcode::SETQ..=opcode::REPLACEQ => {
                (rng.bytes(8), &key, rng.some_bytes(300))
            }
            opcode::APPEND | opcode::PREPEND | opcode::APPENDQ | opcode::PREPENDQ => {
                (vec![], &key, rng.some_bytes(300))
            }
            opcode::INCREMENT | opcode::DECREMENT | opcode::INCREMENTQ | opcode::DECREMENTQ => {
                (rng.bytes(20), &key, vec![])
            }
            opcode::TOUCH | opcode::GAT | opcode::GATQ | opcode::GATK | opcode::GATKQ => {
                (rng.bytes(4), &key, vec![])
            }
            opcode::VERBOSITY => (rng.bytes(4), &[], vec![]),
            opcode::FLUSH | opcode::FLUSHQ if rng.chance(2) => (rng.bytes(4), &[], vec![]),
            opcode::QUIT
            | opcode::QUITQ
            | opcode::FLUSH
            | opcode::FLUSHQ
            | opcode::NOOP
            | opcode::VERSION
            | opcode::SASL_LIST_MECHS => (vec![], &[], vec![]),
            opcode::STAT => (vec![], &key[..rng.below(key.len())], vec![]),
            opcode::SASL_AUTH | opcode::SASL_STEP => {
                (vec![], &key[..key.len().min(20)], rng.some_bytes(100))
            }
            _ => (vec![], &key, vec![]),
        };
        let mut frame = vec![REQUEST_MAGIC, op];
        frame.extend_from_slice(&(key.len() as u16).to_be_bytes());
        frame.push(extras.len() as u8);
        frame.extend_from_slice(&[0, 0, 0]);
        frame.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&opaque.to_be_bytes());
        frame.extend_from_slice(&cas.to_be_bytes());
        frame.extend_from_slice(&extras);
        frame.extend_from_slice(key);
        frame.extend_from_slice(&value);
        let Decode::Request {
            request: Request { command, reply },
            consumed,
        } = decode(&frame, &limits)
        else {
            panic!("opcode {op:#04x} did not decode: {frame:02x?}");
        };
        assert_eq!(consumed, frame.len());
        let Reply::Binary(reply) = reply else {
            panic!("not binary");
        };
        assert_eq!((reply.opcode, reply.opaque), (op, opaque));
        match command {
            Command::Get { keys, .. } => assert_eq!(keys.iter().collect::<Vec<_>>(), [key]),
            Command::Store {
                key: k,
                value: v,
                cas: c,
                flags,
                ..
            } => {
                assert_eq!((k, v, c), (key, &value[..], cas));
                if !extras.is_empty() {
                    assert_eq!(flags, be_u32(&extras));
                }
            }
            Command::Delete { key: k, cas: c } | Command::Arith { key: k, cas: c, .. } => {
                assert_eq!((k, c), (key, cas));
            }
            Command::Touch { key: k, .. } => assert_eq!(k, key),
            Command::Stats { group } => assert_eq!(group, key),
            Command::SaslAuth { mechanism, data } | Command::SaslStep { mechanism, data } => {
                assert_eq!((mechanism, data), (key, &value[..]));
            }
            _ => {}
        }
    }
}
