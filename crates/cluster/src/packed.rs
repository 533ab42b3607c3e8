//! Packed gets: the keys of a forwarded get in one `bytes` field and its
//! answers in another (`GetRequest.packed_keys`, `GetResponse.packed_items`
//! and `values`), laid out as `proto/peer.proto` describes.
//!
//! A get is nearly every forwarded operation, and one forwarded batch holds
//! a hundred keys or more. As repeated messages, each key is a `Bytes` in a
//! `Vec` and each answer an `Item` message that prost sizes, encodes,
//! decodes and collects one field at a time; that cost more than the
//! owner's store lookups. Packed, the caller appends keys to one buffer,
//! the owner walks it with no allocation and writes each answer's fields
//! with a few fixed-width stores, and the caller reads an answer in place
//! when it encodes it for its client. Values of [`INLINE_MAX`] bytes or
//! more are not copied into the packed buffer: they travel in `values`,
//! handles on the stored items that prost copies once, as before.
//!
//! Pure and synchronous: everything here is tested without a socket.

use bytes::{BufMut, Bytes, BytesMut};
use protocol::Value;

/// `BatchResponse.features` bit: the node reads `GetRequest.packed_keys`.
pub const FEATURE_PACKED_GETS: u32 = 1;

/// Entry bit: a hit (clear: a miss, and the entry is this one byte).
const FOUND: u8 = 1;
/// Entry bit: the value is the next of `values`, not inline.
const OUT_OF_LINE: u8 = 2;
/// Entry bit: an 8-byte family code follows the CAS.
const FAMILY: u8 = 4;

/// Values this long or longer go in `values` rather than inline (the size
/// from which a client connection also hands a value on without a copy).
pub const INLINE_MAX: usize = 1024;

/// The longest fixed-width part of a hit: its bits, flags, CAS, family
/// code and inline value length.
const HEAD_MAX: usize = 1 + 4 + 8 + 8 + 4;

/// Longest key a packed list can hold (its length is one byte). The
/// memcache protocols allow 250.
pub const MAX_PACKED_KEY: usize = u8::MAX as usize;

/// A packed list or answer that does not parse: the sender is broken or
/// speaks another version; the operation fails as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed packed get")]
pub struct Malformed;

/// Appends `key` to a packed key list. A key longer than
/// [`MAX_PACKED_KEY`] cannot be packed: `false`, and nothing is appended.
pub fn push_key(packed: &mut BytesMut, key: &[u8]) -> bool {
    let Ok(len) = u8::try_from(key.len()) else {
        return false;
    };
    packed.reserve(1 + key.len());
    packed.put_u8(len);
    packed.put_slice(key);
    true
}

/// The keys of a packed list, in order; checked whole first, so a list
/// cut short is refused rather than half served.
///
/// # Errors
/// [`Malformed`] if the last key runs past the end.
pub fn keys(packed: &[u8]) -> Result<Keys<'_>, Malformed> {
    let mut at = 0;
    let mut count = 0;
    while at < packed.len() {
        at += 1 + usize::from(packed[at]);
        count += 1;
    }
    if at != packed.len() {
        return Err(Malformed);
    }
    Ok(Keys {
        rest: packed,
        count,
    })
}

/// Iterator over a checked packed key list ([`keys`]).
#[derive(Debug, Clone)]
pub struct Keys<'a> {
    rest: &'a [u8],
    count: usize,
}

impl<'a> Iterator for Keys<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (&len, rest) = self.rest.split_first()?;
        let (key, rest) = rest.split_at(usize::from(len));
        self.rest = rest;
        self.count -= 1;
        Some(key)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.count, Some(self.count))
    }
}

impl ExactSizeIterator for Keys<'_> {}

/// Writes a packed answer, one entry per key in the request's order.
#[derive(Debug)]
pub struct ItemWriter {
    packed: BytesMut,
    values: Vec<Bytes>,
    cas: bool,
}

impl ItemWriter {
    /// An answer to `keys` keys; `cas`: whether entries carry the CAS
    /// (the request did not omit it).
    pub fn new(keys: usize, cas: bool) -> ItemWriter {
        // A hit with a 100-byte value and its header: most answers fit.
        ItemWriter {
            packed: BytesMut::with_capacity(keys.saturating_mul(128)),
            values: Vec::new(),
            cas,
        }
    }

    /// The next key is a miss.
    pub fn miss(&mut self) {
        self.packed.put_u8(0);
    }

    /// The next key is a hit. `family`: the key's family code (0: none
    /// sent); `value`: the stored value, copied here when it is under
    /// [`INLINE_MAX`] bytes; `shared` gives a handle on it otherwise.
    pub fn hit(
        &mut self,
        flags: u32,
        cas: u64,
        family: u64,
        value: &[u8],
        shared: impl FnOnce() -> Bytes,
    ) {
        let inline = value.len() < INLINE_MAX;
        let mut bits = FOUND;
        if !inline {
            bits |= OUT_OF_LINE;
        }
        if family != 0 {
            bits |= FAMILY;
        }
        // The fixed-width fields go in as one slice: a `put_*` each would
        // check the room and move the end once per field.
        let mut head = [0u8; HEAD_MAX];
        head[0] = bits;
        head[1..5].copy_from_slice(&flags.to_le_bytes());
        let mut n = 5;
        if self.cas {
            head[n..n + 8].copy_from_slice(&cas.to_le_bytes());
            n += 8;
        }
        if family != 0 {
            head[n..n + 8].copy_from_slice(&family.to_le_bytes());
            n += 8;
        }
        if inline {
            // Under INLINE_MAX, so it fits.
            head[n..n + 4].copy_from_slice(&(value.len() as u32).to_le_bytes());
            n += 4;
            self.packed.reserve(n + value.len());
            self.packed.extend_from_slice(&head[..n]);
            self.packed.extend_from_slice(value);
        } else {
            self.packed.extend_from_slice(&head[..n]);
            self.values.push(shared());
        }
    }

    /// `packed_items` and `values`.
    pub fn finish(self) -> (Bytes, Vec<Bytes>) {
        (self.packed.freeze(), self.values)
    }
}

/// One packed hit, read in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit<'a> {
    pub flags: u32,
    /// 0 when the request omitted it.
    pub cas: u64,
    /// The key's family code; 0 when the owner sent none.
    pub family: u64,
    /// A slice of the packed answer (under [`INLINE_MAX`] bytes), or a
    /// handle on one of `values`, handed on without a copy.
    pub value: Value<'a>,
}

/// A checked packed answer, read by key position in any order: its
/// entries are indexed once, when it is checked, so the many callers that
/// share one answer (see `client::Joined`) each read their own keys
/// directly.
#[derive(Debug, Default)]
pub struct Items {
    packed: Bytes,
    values: Vec<Bytes>,
    cas: bool,
    /// Per entry: its offset in `packed`, and how many out-of-line values
    /// lie before it.
    index: Vec<(u32, u32)>,
}

impl Items {
    /// Checks an answer to `keys` keys whose entries carry the CAS iff
    /// `cas`.
    ///
    /// # Errors
    /// [`Malformed`] unless it holds exactly `keys` whole entries and one
    /// value in `values` per out-of-line entry.
    pub fn new(
        packed: Bytes,
        values: Vec<Bytes>,
        cas: bool,
        keys: usize,
    ) -> Result<Items, Malformed> {
        // An answer past 4 GiB is refused long before (the client's
        // response limit), so offsets fit in u32.
        if u32::try_from(packed.len()).is_err() {
            return Err(Malformed);
        }
        let mut index = Vec::with_capacity(keys);
        let mut at = 0;
        let mut out_of_line = 0;
        while at < packed.len() && index.len() < keys {
            let (len, ool) = entry(&packed, at, cas)?;
            index.push((at as u32, out_of_line as u32));
            at += len;
            out_of_line += usize::from(ool);
        }
        if at != packed.len() || index.len() != keys || out_of_line != values.len() {
            return Err(Malformed);
        }
        Ok(Items {
            packed,
            values,
            cas,
            index,
        })
    }

    /// How many keys it answers.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The answer for the key at `pos`: `None` for a miss, or past the end.
    pub fn get(&self, pos: usize) -> Option<Hit<'_>> {
        let &(at, value_index) = self.index.get(pos)?;
        // Checked in `new`: every indexed entry is whole, so it is read
        // field by field without working out its length again.
        let (&bits, mut rest) = self.packed.get(at as usize..)?.split_first()?;
        if bits & FOUND == 0 {
            return None;
        }
        let flags = u32::from_le_bytes(take(&mut rest)?);
        let cas = if self.cas {
            u64::from_le_bytes(take(&mut rest)?)
        } else {
            0
        };
        let family = if bits & FAMILY != 0 {
            u64::from_le_bytes(take(&mut rest)?)
        } else {
            0
        };
        let value = if bits & OUT_OF_LINE != 0 {
            Value::Shared(self.values.get(value_index as usize)?.clone())
        } else {
            let len = u32::from_le_bytes(take(&mut rest)?) as usize;
            Value::Slice(rest.get(..len)?)
        };
        Some(Hit {
            flags,
            cas,
            family,
            value,
        })
    }
}

/// The next `N` bytes of `rest`, taken off its front.
fn take<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = rest.split_first_chunk::<N>()?;
    *rest = tail;
    Some(*head)
}

/// The length of the entry at `at` and whether its value is out of line.
fn entry(packed: &[u8], at: usize, cas: bool) -> Result<(usize, bool), Malformed> {
    let bits = *packed.get(at).ok_or(Malformed)?;
    if bits & FOUND == 0 {
        return if bits == 0 {
            Ok((1, false))
        } else {
            Err(Malformed)
        };
    }
    if bits & !(FOUND | OUT_OF_LINE | FAMILY) != 0 {
        return Err(Malformed);
    }
    let ool = bits & OUT_OF_LINE != 0;
    let mut len = 1 + 4;
    if cas {
        len += 8;
    }
    if bits & FAMILY != 0 {
        len += 8;
    }
    if !ool {
        let field = packed.get(at + len..at + len + 4).ok_or(Malformed)?;
        let value = u32::from_le_bytes(field.try_into().map_err(|_| Malformed)?) as usize;
        len += 4 + value;
    }
    if at + len > packed.len() {
        return Err(Malformed);
    }
    Ok((len, ool))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(keys: &[&[u8]]) -> BytesMut {
        let mut packed = BytesMut::new();
        for k in keys {
            assert!(push_key(&mut packed, k));
        }
        packed
    }

    #[test]
    fn keys_come_back_in_order() {
        let long = vec![b'k'; 250];
        let packed = pack(&[b"a", b"", b"key:000001", &long]);
        let got: Vec<&[u8]> = keys(&packed).unwrap().collect();
        assert_eq!(got, [&b"a"[..], b"", b"key:000001", &long[..]]);
        assert_eq!(keys(&packed).unwrap().len(), 4);
        assert_eq!(keys(&[]).unwrap().count(), 0);
    }

    #[test]
    fn a_key_too_long_for_its_length_byte_is_not_packed() {
        let mut packed = BytesMut::new();
        assert!(!push_key(&mut packed, &[b'k'; 256]));
        assert!(packed.is_empty());
        assert!(push_key(&mut packed, &[b'k'; 255]));
    }

    #[test]
    fn a_key_list_cut_short_is_refused() {
        let packed = pack(&[b"first", b"second"]);
        for cut in 1..packed.len() {
            if cut == 6 {
                continue; // a whole first key: a shorter, valid list
            }
            assert_eq!(keys(&packed[..cut]).err(), Some(Malformed), "cut at {cut}");
        }
    }

    fn answer(cas: bool) -> (Bytes, Vec<Bytes>) {
        let mut w = ItemWriter::new(5, cas);
        let large = Bytes::from(vec![b'L'; INLINE_MAX]);
        let unused = || -> Bytes { panic!("an inline value needs no handle") };
        w.hit(7, 0x0102_0304_0506_0708, 0, b"small", unused);
        w.miss();
        w.hit(0, 9, 1 << 63 | 42, &large, || large.clone());
        w.hit(u32::MAX, 10, 3, b"", unused);
        w.miss();
        w.finish()
    }

    #[test]
    fn hits_misses_and_large_values_read_back_by_position() {
        for cas in [false, true] {
            let (packed, values) = answer(cas);
            assert_eq!(values.len(), 1, "only the large value goes out of line");
            let items = Items::new(packed, values.clone(), cas, 5).unwrap();
            let want_cas = |c: u64| if cas { c } else { 0 };
            let first = Hit {
                flags: 7,
                cas: want_cas(0x0102_0304_0506_0708),
                family: 0,
                value: Value::Slice(b"small"),
            };
            assert_eq!(items.get(0), Some(first.clone()));
            assert_eq!(items.get(1), None);
            let large = items.get(2).unwrap();
            assert_eq!(
                (large.flags, large.cas, large.family),
                (0, want_cas(9), 1 << 63 | 42)
            );
            assert_eq!(large.value, Value::Shared(values[0].clone()));
            let empty = items.get(3).unwrap();
            assert_eq!(
                (empty.flags, empty.family, empty.value),
                (u32::MAX, 3, Value::Slice(b""))
            );
            assert_eq!(items.get(4), None);
            assert_eq!(items.get(5), None, "past the end");
            // Going back, and skipping ahead, read the same entries.
            assert_eq!(items.get(0), Some(first));
            assert_eq!(items.get(3).map(|h| h.flags), Some(u32::MAX));
            assert_eq!(items.get(2).map(|h| h.family), Some(1 << 63 | 42));
        }
    }

    #[test]
    fn an_answer_that_does_not_match_its_request_is_refused() {
        let (packed, values) = answer(true);
        assert!(Items::new(packed.clone(), values.clone(), true, 5).is_ok());
        // Another key count, a missing or extra value, the other CAS width.
        assert!(Items::new(packed.clone(), values.clone(), true, 4).is_err());
        assert!(Items::new(packed.clone(), values.clone(), true, 6).is_err());
        assert!(Items::new(packed.clone(), Vec::new(), true, 5).is_err());
        let two = vec![values[0].clone(), values[0].clone()];
        assert!(Items::new(packed.clone(), two, true, 5).is_err());
        assert!(Items::new(packed.clone(), values.clone(), false, 5).is_err());
        // Cut anywhere, or with an unknown bit.
        for cut in 0..packed.len() {
            let short = packed.slice(..cut);
            assert!(
                Items::new(short, values.clone(), true, 5).is_err(),
                "cut at {cut}"
            );
        }
        let mut odd = packed.to_vec();
        odd[0] |= 8;
        assert!(Items::new(Bytes::from(odd), values.clone(), true, 5).is_err());
        let mut miss_with_bits = BytesMut::new();
        miss_with_bits.put_u8(OUT_OF_LINE);
        assert!(Items::new(miss_with_bits.freeze(), Vec::new(), true, 1).is_err());
    }

    #[test]
    fn an_empty_answer_answers_no_keys() {
        let (packed, values) = ItemWriter::new(0, true).finish();
        let items = Items::new(packed, values, true, 0).unwrap();
        assert!(items.is_empty());
        assert_eq!(items.get(0), None);
    }
}
