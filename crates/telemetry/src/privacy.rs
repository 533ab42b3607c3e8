//! How a key is shown when hot keys are reported: in full, cut short, or as
//! a keyed hash — keys often hold user ids, e-mail addresses or session
//! keys, and a `stats` reply or a JSON page is easy to leak.
//!
//! # What [`Privacy::Hash`] guarantees, and what not
//! A key is shown as `hash:` and 16 hex digits of SipHash-2-4 under a
//! 128-bit secret [`HashKey`]. SipHash is a pseudorandom function: without
//! the secret nobody can reverse a token or confirm a guess, not even for
//! low-entropy keys such as `:1:user_42` that an unkeyed hash (MD5, SHA-256)
//! would give away to a dictionary. The same key always gives the same
//! token under the same secret, so a key can be followed across reports,
//! and — if every node is given the same secret — across nodes.
//!
//! It does **not** hide: that some key is hot, how hot, and when it became
//! so; equality (the same token is the same key); anything from whoever
//! holds the secret (it lives in the process's memory and, if configured,
//! in its configuration), who can test guesses at will. 64-bit tokens can
//! collide, with negligible odds for the few keys a report shows.
//! [`HashKey::random`] secrets change at every start, so tokens do not
//! survive restarts. [`Privacy::Truncate`] shows the first bytes verbatim,
//! which is only as private as those bytes are.

use std::fmt;
use std::hash::{BuildHasher, RandomState};

/// How reported keys are shown.
#[derive(Clone, Debug, Default)]
pub enum Privacy {
    /// The whole key, escaped where it is not printable UTF-8.
    #[default]
    Plain,
    /// At most this many bytes of the key (cut back to a character
    /// boundary), followed by `…` when something was cut.
    Truncate(usize),
    /// `hash:` and 16 hex digits of SipHash-2-4 under a secret.
    Hash(HashKey),
}

/// The secret of [`Privacy::Hash`]. Its `Debug` never shows the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HashKey {
    k0: u64,
    k1: u64,
}

impl HashKey {
    /// A secret drawn from the operating system's randomness (through
    /// std's `RandomState`); tokens then differ between processes.
    pub fn random() -> HashKey {
        let state = RandomState::new();
        HashKey {
            k0: state.hash_one(0x5348_4f41_4c00_0000_u64),
            k1: state.hash_one(0x5348_4f41_4c00_0001_u64),
        }
    }

    /// A secret given by the operator (e.g. from a mounted Kubernetes
    /// secret), so every node — and every restart — shows the same key the
    /// same way.
    pub fn from_bytes(secret: [u8; 16]) -> HashKey {
        let (a, b) = secret.split_at(8);
        HashKey {
            k0: u64::from_le_bytes(a.try_into().expect("8 bytes")),
            k1: u64::from_le_bytes(b.try_into().expect("8 bytes")),
        }
    }

    /// SipHash-2-4 of `data` under this secret.
    pub fn hash(&self, data: &[u8]) -> u64 {
        siphash24(self.k0, self.k1, data)
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(<secret>)")
    }
}

impl Privacy {
    /// `key` as it may be shown: always a printable string, whatever the
    /// bytes (see [`escape`]).
    pub fn render(&self, key: &[u8]) -> String {
        match self {
            Privacy::Plain => escape(key),
            Privacy::Truncate(n) => {
                if key.len() <= *n {
                    return escape(key);
                }
                let mut end = *n;
                if let Ok(s) = std::str::from_utf8(key) {
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                }
                let mut out = escape(&key[..end]);
                out.push('…');
                out
            }
            Privacy::Hash(secret) => format!("hash:{:016x}", secret.hash(key)),
        }
    }
}

/// A key as printable text that maps back to its bytes: UTF-8 is kept,
/// except `\` (shown `\\`), control characters and bytes that are not UTF-8
/// (shown `\xNN`), as in Python's `repr` of bytes.
pub fn escape(key: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(key.len());
    for chunk in key.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_control() {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012), 64-bit output, keyed: the
/// `siphasher` crate the ring's hash already comes with (std's keyed SipHash
/// is unstable or deprecated). One `write` of the raw bytes.
fn siphash24(k0: u64, k1: u64, data: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = siphasher::sip::SipHasher24::new_with_keys(k0, k1);
    hasher.write(data);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_key() -> HashKey {
        HashKey::from_bytes(std::array::from_fn(|i| i as u8))
    }

    #[test]
    fn siphash_matches_the_paper() {
        // Test vectors of the SipHash paper / reference implementation:
        // key 00..0f, message 00..(n-1).
        let key = reference_key();
        assert_eq!(key.hash(b""), 0x726f_db47_dd0e_0e31);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(key.hash(&msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn rendering() {
        let key = reference_key();
        let cases: &[(Privacy, &[u8], &str)] = &[
            (Privacy::Plain, b":1:user_42", ":1:user_42"),
            (Privacy::Plain, "café".as_bytes(), "café"),
            (Privacy::Plain, b"a\xffb", "a\\xffb"),
            (Privacy::Plain, b"a\\xff", "a\\\\xff"),
            (Privacy::Plain, b"a\x01\x7f", "a\\x01\\x7f"),
            (Privacy::Truncate(4), b":1:user_42", ":1:u…"),
            (Privacy::Truncate(10), b":1:user_42", ":1:user_42"),
            (Privacy::Truncate(0), b"abc", "…"),
            // Never split a character: back to its start.
            (Privacy::Truncate(4), "cafés".as_bytes(), "caf…"),
            (Privacy::Truncate(2), b"a\xff\xfe", "a\\xff…"),
            (Privacy::Hash(key), b"", "hash:726fdb47dd0e0e31"),
        ];
        for (privacy, raw, want) in cases {
            assert_eq!(privacy.render(raw), *want, "{privacy:?} {raw:?}");
        }
    }

    #[test]
    fn hash_tokens_depend_on_the_secret_only() {
        let a = HashKey::from_bytes([7; 16]);
        let b = HashKey::from_bytes([8; 16]);
        let p = Privacy::Hash(a);
        assert_eq!(p.render(b":1:user_42"), p.render(b":1:user_42"));
        assert_ne!(p.render(b":1:user_42"), p.render(b":1:user_43"));
        assert_ne!(a.hash(b":1:user_42"), b.hash(b":1:user_42"));
        assert_ne!(HashKey::random(), HashKey::random());
        assert_eq!(format!("{a:?}"), "HashKey(<secret>)");
    }
}
