//! Preformatted requests and response validation for the memcache text and
//! binary protocols.
//!
//! A [`Codec`] is built once per run: it holds one request template per
//! operation with the key (and the key echoed at the start of the value) left
//! as a fixed-width slot, so queuing a request is one `memcpy` plus writing a
//! few digits, never an allocation. Parsing is sans-IO: bytes in, a
//! [`Parsed`] out, with "incomplete" an ordinary answer.

/// Wire protocol spoken to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Text,
    Binary,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Text => "text",
            Protocol::Binary => "binary",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Get,
    Set,
}

/// How one response ended, once it was framed correctly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A get that returned the expected value.
    Hit,
    /// A get that found nothing (`END` / status 1).
    Miss,
    /// A set that was stored (`STORED` / status 0).
    Stored,
    /// An error reply (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`, `NOT_STORED`,
    /// a non-success binary status): the stream is still in step.
    ErrorReply,
    /// A hit whose key, length or bytes are not what was stored.
    BadValue,
}

/// Result of looking at the front of a connection's read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole response yet: read more.
    Incomplete,
    /// One whole response of `len` bytes.
    Done { len: usize, outcome: Outcome },
    /// Bytes that cannot be the answer to the request sent: the connection
    /// is out of step and must be dropped.
    Desync,
}

/// Keys are `key:` followed by zero-padded decimal digits, all the same
/// length, so a request template has a fixed slot for them.
#[derive(Clone, Copy, Debug)]
pub struct KeyFormat {
    len: usize,
}

const KEY_PREFIX: &[u8] = b"key:";
/// Longest key memcached accepts.
pub const MAX_KEY_LEN: usize = 250;

impl KeyFormat {
    /// The default length for `keys` keys: `key:` and at least six digits,
    /// like `key:000001`.
    pub fn default_for(keys: u64) -> Self {
        KeyFormat {
            len: KEY_PREFIX.len() + digits(keys).max(6),
        }
    }

    /// A format of exactly `len` bytes, if `keys` keys fit in it.
    pub fn with_len(len: usize, keys: u64) -> Result<Self, String> {
        if len > MAX_KEY_LEN {
            return Err(format!("--key-len {len} is over memcached's {MAX_KEY_LEN}"));
        }
        let need = KEY_PREFIX.len() + digits(keys);
        if len < need {
            return Err(format!(
                "--key-len {len} is too short for {keys} keys (need {need})"
            ));
        }
        Ok(KeyFormat { len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Writes key number `n` into `dst[..self.len()]`.
    #[inline]
    pub fn write(&self, dst: &mut [u8], mut n: u64) {
        let dst = &mut dst[..self.len];
        dst[..KEY_PREFIX.len()].copy_from_slice(KEY_PREFIX);
        for b in dst[KEY_PREFIX.len()..].iter_mut().rev() {
            *b = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }

    /// Whether `got` is exactly key number `n`.
    #[inline]
    fn matches(&self, got: &[u8], n: u64) -> bool {
        let mut want = [0u8; MAX_KEY_LEN];
        self.write(&mut want, n);
        got == &want[..self.len]
    }
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Request templates and the expected value for one run.
pub struct Codec {
    protocol: Protocol,
    key: KeyFormat,
    value_size: usize,
    /// The value every set sends: the key (when it fits) then a fixed filler,
    /// so a hit proves both the bytes and that they belong to this key.
    value: Vec<u8>,
    embed_key: bool,
    get: Vec<u8>,
    get_key_at: usize,
    set: Vec<u8>,
    set_key_at: usize,
    set_value_at: usize,
}

const BIN_REQ: u8 = 0x80;
const BIN_RES: u8 = 0x81;
const BIN_GET: u8 = 0x00;
const BIN_SET: u8 = 0x01;
const BIN_HEADER: usize = 24;
/// Longest text reply line we wait for before calling the stream garbage.
const MAX_LINE: usize = 2048;

impl Codec {
    pub fn new(protocol: Protocol, key: KeyFormat, value_size: usize) -> Self {
        let embed_key = value_size >= key.len();
        let mut value: Vec<u8> = (0..value_size).map(|i| b'a' + (i % 26) as u8).collect();
        if embed_key {
            key.write(&mut value, 0);
        }
        let klen = key.len();
        let (get, get_key_at, set, set_key_at, set_value_at);
        match protocol {
            Protocol::Text => {
                let mut g = b"get ".to_vec();
                get_key_at = g.len();
                g.resize(g.len() + klen, b'0');
                g.extend_from_slice(b"\r\n");
                get = g;
                let mut s = b"set ".to_vec();
                set_key_at = s.len();
                s.resize(s.len() + klen, b'0');
                s.extend_from_slice(format!(" 0 0 {value_size}\r\n").as_bytes());
                set_value_at = s.len();
                s.extend_from_slice(&value);
                s.extend_from_slice(b"\r\n");
                set = s;
            }
            Protocol::Binary => {
                let mut g = bin_header(BIN_GET, klen, 0, 0);
                get_key_at = g.len();
                g.resize(g.len() + klen, b'0');
                get = g;
                let mut s = bin_header(BIN_SET, klen, 8, value_size);
                s.extend_from_slice(&[0u8; 8]); // flags 0, exptime 0
                set_key_at = s.len();
                s.resize(s.len() + klen, b'0');
                set_value_at = s.len();
                s.extend_from_slice(&value);
                set = s;
            }
        }
        Codec {
            protocol,
            key,
            value_size,
            value,
            embed_key,
            get,
            get_key_at,
            set,
            set_key_at,
            set_value_at,
        }
    }

    /// Bytes the longest request takes, to size write buffers once.
    pub fn max_request_len(&self) -> usize {
        self.get.len().max(self.set.len())
    }

    /// Bytes the longest expected response takes, to size read buffers once.
    pub fn max_response_len(&self) -> usize {
        let framed = match self.protocol {
            // VALUE <key> <flags> <bytes> <cas>\r\n<data>\r\nEND\r\n
            Protocol::Text => {
                6 + self.key.len() + 1 + 10 + 1 + 20 + 1 + 20 + 2 + self.value_size + 7
            }
            // header, flags extra, (key for getk), value
            Protocol::Binary => BIN_HEADER + 4 + self.key.len() + self.value_size,
        };
        framed.max(MAX_LINE)
    }

    /// Appends one request for key number `key_no` to `out`. `opaque` is
    /// echoed by binary servers and checked on the way back.
    #[inline]
    pub fn push(&self, out: &mut Vec<u8>, kind: OpKind, key_no: u64, opaque: u32) {
        let base = out.len();
        match kind {
            OpKind::Get => {
                out.extend_from_slice(&self.get);
                self.key.write(&mut out[base + self.get_key_at..], key_no);
            }
            OpKind::Set => {
                out.extend_from_slice(&self.set);
                self.key.write(&mut out[base + self.set_key_at..], key_no);
                if self.embed_key {
                    self.key.write(&mut out[base + self.set_value_at..], key_no);
                }
            }
        }
        if self.protocol == Protocol::Binary {
            out[base + 12..base + 16].copy_from_slice(&opaque.to_be_bytes());
        }
    }

    /// Looks for the response to (`kind`, `key_no`, `opaque`) at the front
    /// of `buf`.
    #[inline]
    pub fn parse(&self, buf: &[u8], kind: OpKind, key_no: u64, opaque: u32) -> Parsed {
        match self.protocol {
            Protocol::Text => self.parse_text(buf, kind, key_no),
            Protocol::Binary => self.parse_binary(buf, kind, key_no, opaque),
        }
    }

    fn value_ok(&self, v: &[u8], key_no: u64) -> bool {
        if v.len() != self.value_size {
            return false;
        }
        let from = if self.embed_key {
            if !self.key.matches(&v[..self.key.len()], key_no) {
                return false;
            }
            self.key.len()
        } else {
            0
        };
        v[from..] == self.value[from..]
    }

    fn parse_text(&self, buf: &[u8], kind: OpKind, key_no: u64) -> Parsed {
        match kind {
            OpKind::Set if buf.starts_with(b"STORED\r\n") => {
                return Parsed::Done {
                    len: 8,
                    outcome: Outcome::Stored,
                };
            }
            OpKind::Get if buf.starts_with(b"END\r\n") => {
                return Parsed::Done {
                    len: 5,
                    outcome: Outcome::Miss,
                };
            }
            OpKind::Get if buf.starts_with(b"VALUE ") => return self.parse_text_value(buf, key_no),
            _ => {}
        }
        // Anything else must be a whole error line, or the start of one.
        let Some(end) = line_end(buf) else {
            return if buf.len() < MAX_LINE {
                Parsed::Incomplete
            } else {
                Parsed::Desync
            };
        };
        let line = &buf[..end];
        const ERRORS: [&[u8]; 6] = [
            b"ERROR",
            b"CLIENT_ERROR",
            b"SERVER_ERROR",
            b"NOT_STORED",
            b"EXISTS",
            b"NOT_FOUND",
        ];
        if ERRORS.iter().any(|e| line.starts_with(e)) {
            Parsed::Done {
                len: end,
                outcome: Outcome::ErrorReply,
            }
        } else {
            Parsed::Desync
        }
    }

    /// `VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\nEND\r\n`
    fn parse_text_value(&self, buf: &[u8], key_no: u64) -> Parsed {
        let Some(head) = line_end(buf) else {
            return if buf.len() < MAX_LINE {
                Parsed::Incomplete
            } else {
                Parsed::Desync
            };
        };
        let mut fields = buf[6..head - 2].split(|&b| b == b' ');
        let (Some(key), Some(_flags), Some(bytes)) = (fields.next(), fields.next(), fields.next())
        else {
            return Parsed::Desync;
        };
        let Some(n) = parse_usize(bytes) else {
            return Parsed::Desync;
        };
        let total = head + n + 7;
        if buf.len() < total {
            return Parsed::Incomplete;
        }
        if &buf[head + n..total] != b"\r\nEND\r\n" {
            return Parsed::Desync;
        }
        let good = self.key.matches(key, key_no) && self.value_ok(&buf[head..head + n], key_no);
        Parsed::Done {
            len: total,
            outcome: if good {
                Outcome::Hit
            } else {
                Outcome::BadValue
            },
        }
    }

    fn parse_binary(&self, buf: &[u8], kind: OpKind, key_no: u64, opaque: u32) -> Parsed {
        if buf.len() < BIN_HEADER {
            return Parsed::Incomplete;
        }
        if buf[0] != BIN_RES {
            return Parsed::Desync;
        }
        let body = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
        if body > 64 << 20 {
            return Parsed::Desync;
        }
        let total = BIN_HEADER + body;
        if buf.len() < total {
            return Parsed::Incomplete;
        }
        let want_op = match kind {
            OpKind::Get => BIN_GET,
            OpKind::Set => BIN_SET,
        };
        let got_opaque = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
        if buf[1] != want_op || got_opaque != opaque {
            return Parsed::Desync;
        }
        let status = u16::from_be_bytes([buf[6], buf[7]]);
        let outcome = match (kind, status) {
            (OpKind::Set, 0) => Outcome::Stored,
            (OpKind::Get, 0) => {
                let skip = buf[4] as usize + u16::from_be_bytes([buf[2], buf[3]]) as usize;
                if skip > body {
                    return Parsed::Desync;
                }
                if self.value_ok(&buf[BIN_HEADER + skip..total], key_no) {
                    Outcome::Hit
                } else {
                    Outcome::BadValue
                }
            }
            (OpKind::Get, 1) => Outcome::Miss,
            _ => Outcome::ErrorReply,
        };
        Parsed::Done {
            len: total,
            outcome,
        }
    }
}

fn bin_header(opcode: u8, key_len: usize, extras: usize, value_len: usize) -> Vec<u8> {
    let mut h = vec![0u8; BIN_HEADER];
    h[0] = BIN_REQ;
    h[1] = opcode;
    h[2..4].copy_from_slice(&(key_len as u16).to_be_bytes());
    h[4] = extras as u8;
    let body = (extras + key_len + value_len) as u32;
    h[8..12].copy_from_slice(&body.to_be_bytes());
    h
}

/// Index just past the first `\r\n`, if there is one.
#[inline]
fn line_end(buf: &[u8]) -> Option<usize> {
    let limit = buf.len().min(MAX_LINE);
    buf[..limit]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| i + 2)
}

fn parse_usize(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 12 {
        return None;
    }
    let mut n = 0usize;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (b - b'0') as usize;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(p: Protocol, value_size: usize) -> Codec {
        Codec::new(p, KeyFormat::default_for(10_000), value_size)
    }

    fn one(c: &Codec, kind: OpKind, key: u64, opaque: u32) -> Vec<u8> {
        let mut v = Vec::new();
        c.push(&mut v, kind, key, opaque);
        v
    }

    fn text_value(key: &str, value: &[u8]) -> Vec<u8> {
        let mut r = format!("VALUE {key} 0 {}\r\n", value.len()).into_bytes();
        r.extend_from_slice(value);
        r.extend_from_slice(b"\r\nEND\r\n");
        r
    }

    #[test]
    fn keys_are_fixed_width() {
        let k = KeyFormat::default_for(10_000);
        let mut b = [0u8; 16];
        k.write(&mut b, 42);
        assert_eq!(&b[..k.len()], b"key:000042");
        let k13 = KeyFormat::with_len(13, 1_000_000).unwrap();
        k13.write(&mut b, 1_000_000);
        assert_eq!(&b[..13], b"key:001000000");
        assert!(KeyFormat::with_len(8, 1_000_000).is_err());
    }

    #[test]
    fn text_requests() {
        let c = codec(Protocol::Text, 12);
        assert_eq!(one(&c, OpKind::Get, 7, 0), b"get key:000007\r\n");
        assert_eq!(
            one(&c, OpKind::Set, 7, 0),
            b"set key:000007 0 0 12\r\nkey:000007kl\r\n"
        );
        let short = codec(Protocol::Text, 3);
        assert_eq!(
            one(&short, OpKind::Set, 7, 0),
            b"set key:000007 0 0 3\r\nabc\r\n"
        );
    }

    #[test]
    fn text_responses() {
        let c = codec(Protocol::Text, 12);
        let hit = text_value("key:000007", b"key:000007kl");
        let cases: Vec<(OpKind, Vec<u8>, Parsed)> = vec![
            (
                OpKind::Set,
                b"STORED\r\n".to_vec(),
                Parsed::Done {
                    len: 8,
                    outcome: Outcome::Stored,
                },
            ),
            (OpKind::Set, b"STOR".to_vec(), Parsed::Incomplete),
            (
                OpKind::Set,
                b"NOT_STORED\r\n".to_vec(),
                Parsed::Done {
                    len: 12,
                    outcome: Outcome::ErrorReply,
                },
            ),
            (
                OpKind::Set,
                b"SERVER_ERROR out of memory\r\n".to_vec(),
                Parsed::Done {
                    len: 28,
                    outcome: Outcome::ErrorReply,
                },
            ),
            (OpKind::Set, b"END\r\n".to_vec(), Parsed::Desync),
            (
                OpKind::Get,
                b"END\r\n".to_vec(),
                Parsed::Done {
                    len: 5,
                    outcome: Outcome::Miss,
                },
            ),
            (OpKind::Get, b"EN".to_vec(), Parsed::Incomplete),
            (
                OpKind::Get,
                hit.clone(),
                Parsed::Done {
                    len: hit.len(),
                    outcome: Outcome::Hit,
                },
            ),
            (
                OpKind::Get,
                hit[..hit.len() - 1].to_vec(),
                Parsed::Incomplete,
            ),
            (OpKind::Get, hit[..10].to_vec(), Parsed::Incomplete),
            (
                OpKind::Get,
                text_value("key:000008", b"key:000008kl"),
                Parsed::Done {
                    len: hit.len(),
                    outcome: Outcome::BadValue,
                },
            ),
            (
                OpKind::Get,
                text_value("key:000007", b"key:000007ax"),
                Parsed::Done {
                    len: hit.len(),
                    outcome: Outcome::BadValue,
                },
            ),
            (
                OpKind::Get,
                text_value("key:000007", b"key:000007a"),
                Parsed::Done {
                    len: hit.len() - 1,
                    outcome: Outcome::BadValue,
                },
            ),
            (
                OpKind::Get,
                b"VALUE key:000007 0 12 99\r\nkey:000007kl\r\nEND\r\n".to_vec(),
                Parsed::Done {
                    len: 45,
                    outcome: Outcome::Hit,
                },
            ),
            (
                OpKind::Get,
                b"VALUE key:000007 0 12\r\nkey:000007kl\r\nXXX\r\n".to_vec(),
                Parsed::Desync,
            ),
            (OpKind::Get, b"STORED\r\n".to_vec(), Parsed::Desync),
            (
                OpKind::Get,
                b"ERROR\r\n".to_vec(),
                Parsed::Done {
                    len: 7,
                    outcome: Outcome::ErrorReply,
                },
            ),
        ];
        for (kind, bytes, want) in cases {
            assert_eq!(
                c.parse(&bytes, kind, 7, 0),
                want,
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    fn bin_response(op: u8, status: u16, opaque: u32, extras: &[u8], value: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; 24];
        r[0] = BIN_RES;
        r[1] = op;
        r[4] = extras.len() as u8;
        r[6..8].copy_from_slice(&status.to_be_bytes());
        r[8..12].copy_from_slice(&((extras.len() + value.len()) as u32).to_be_bytes());
        r[12..16].copy_from_slice(&opaque.to_be_bytes());
        r.extend_from_slice(extras);
        r.extend_from_slice(value);
        r
    }

    #[test]
    fn binary_requests() {
        let c = codec(Protocol::Binary, 12);
        let get = one(&c, OpKind::Get, 7, 0x01020304);
        assert_eq!(get.len(), 24 + 10);
        assert_eq!(&get[..2], &[0x80, 0x00]);
        assert_eq!(&get[2..4], &10u16.to_be_bytes());
        assert_eq!(&get[8..12], &10u32.to_be_bytes());
        assert_eq!(&get[12..16], &[1, 2, 3, 4]);
        assert_eq!(&get[24..], b"key:000007");
        let set = one(&c, OpKind::Set, 7, 9);
        assert_eq!(set[1], 0x01);
        assert_eq!(set[4], 8);
        assert_eq!(&set[8..12], &30u32.to_be_bytes());
        assert_eq!(&set[32..], b"key:000007key:000007kl");
    }

    #[test]
    fn binary_responses() {
        let c = codec(Protocol::Binary, 12);
        let hit = bin_response(BIN_GET, 0, 5, &[0; 4], b"key:000007kl");
        let cases: Vec<(OpKind, Vec<u8>, Parsed)> = vec![
            (
                OpKind::Get,
                hit.clone(),
                Parsed::Done {
                    len: hit.len(),
                    outcome: Outcome::Hit,
                },
            ),
            (OpKind::Get, hit[..30].to_vec(), Parsed::Incomplete),
            (OpKind::Get, hit[..3].to_vec(), Parsed::Incomplete),
            (
                OpKind::Get,
                bin_response(BIN_GET, 0, 5, &[0; 4], b"key:000009kl"),
                Parsed::Done {
                    len: hit.len(),
                    outcome: Outcome::BadValue,
                },
            ),
            (
                OpKind::Get,
                bin_response(BIN_GET, 1, 5, &[], b"Not found"),
                Parsed::Done {
                    len: 33,
                    outcome: Outcome::Miss,
                },
            ),
            (
                OpKind::Get,
                bin_response(BIN_GET, 0, 6, &[0; 4], b"key:000007kl"),
                Parsed::Desync,
            ),
            (
                OpKind::Get,
                bin_response(BIN_SET, 0, 5, &[], b""),
                Parsed::Desync,
            ),
            (
                OpKind::Set,
                bin_response(BIN_SET, 0, 5, &[], b""),
                Parsed::Done {
                    len: 24,
                    outcome: Outcome::Stored,
                },
            ),
            (
                OpKind::Set,
                bin_response(BIN_SET, 3, 5, &[], b"Too large."),
                Parsed::Done {
                    len: 34,
                    outcome: Outcome::ErrorReply,
                },
            ),
        ];
        for (kind, bytes, want) in cases {
            assert_eq!(c.parse(&bytes, kind, 7, 5), want);
        }
        let mut bad_magic = hit.clone();
        bad_magic[0] = 0x80;
        assert_eq!(c.parse(&bad_magic, OpKind::Get, 7, 5), Parsed::Desync);
    }
}
