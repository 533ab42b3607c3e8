//! The response queue a connection writes from.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::Value;

/// Shared values at least this long are queued by reference; shorter ones are
/// copied, because a 100-byte memcpy is cheaper than an extra iovec.
pub const ZERO_COPY_MIN: usize = 1024;

/// Answers waiting to be written, in order.
///
/// Encoders append small pieces (headers, status lines, short values) to one
/// growing buffer; a large [`Value::Shared`] is queued as its own chunk, so a
/// pipeline of answers goes out in one vectored write without copying any
/// large value.
#[derive(Debug, Default)]
pub struct OutBuf {
    /// Finished chunks, oldest first.
    chunks: VecDeque<Bytes>,
    /// The chunk being appended to.
    tail: BytesMut,
    len: usize,
}

impl OutBuf {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the buffer being appended to holds without growing.
    pub fn capacity(&self) -> usize {
        self.tail.capacity()
    }

    pub fn put(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    pub fn put_u8(&mut self, b: u8) {
        self.tail.put_u8(b);
        self.len += 1;
    }

    pub fn put_u16(&mut self, n: u16) {
        self.tail.put_u16(n);
        self.len += 2;
    }

    pub fn put_u32(&mut self, n: u32) {
        self.tail.put_u32(n);
        self.len += 4;
    }

    pub fn put_u64(&mut self, n: u64) {
        self.tail.put_u64(n);
        self.len += 8;
    }

    /// Append a number in decimal, without allocating.
    pub fn put_decimal(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&digits[i..]);
    }

    /// Append a signed number in decimal.
    pub fn put_signed(&mut self, n: i64) {
        if n < 0 {
            self.put_u8(b'-');
        }
        self.put_decimal(n.unsigned_abs());
    }

    /// Append a value: copied when short, queued by reference when long and
    /// shared.
    pub fn put_value(&mut self, value: &Value<'_>) {
        match value {
            Value::Shared(b) if b.len() >= ZERO_COPY_MIN => {
                self.seal_tail();
                self.len += b.len();
                self.chunks.push_back(b.clone());
            }
            other => self.put(other.as_slice()),
        }
    }

    /// Move everything waiting in `other` to the end of this queue, without
    /// copying its chunks (answers encoded out of turn, put back in order).
    /// `other` is left empty with its buffer's capacity, ready for reuse.
    pub fn append(&mut self, other: &mut OutBuf) {
        if other.is_empty() {
            return;
        }
        if other.chunks.is_empty() {
            self.put(&other.tail);
            other.clear();
            return;
        }
        self.seal_tail();
        other.seal_tail();
        self.len += other.len;
        self.chunks.append(&mut other.chunks);
        other.len = 0;
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            let sealed = self.tail.split().freeze();
            self.chunks.push_back(sealed);
        }
    }

    /// Fill `dst` with the waiting bytes, in order, for a vectored write;
    /// returns how many slices were filled.
    pub fn io_slices<'s>(&'s self, dst: &mut [IoSlice<'s>]) -> usize {
        let mut n = 0;
        for chunk in self
            .chunks
            .iter()
            .map(|c| &c[..])
            .chain(Some(&self.tail[..]))
        {
            if n == dst.len() {
                break;
            }
            if !chunk.is_empty() {
                dst[n] = IoSlice::new(chunk);
                n += 1;
            }
        }
        n
    }

    /// Drop the first `n` bytes, after they were written.
    pub fn advance(&mut self, mut n: usize) {
        assert!(n <= self.len, "advanced past the end of the output");
        self.len -= n;
        while n > 0 {
            match self.chunks.front_mut() {
                Some(front) if front.len() <= n => {
                    n -= front.len();
                    self.chunks.pop_front();
                }
                Some(front) => {
                    front.advance(n);
                    return;
                }
                None => {
                    self.tail.advance(n);
                    return;
                }
            }
        }
    }

    /// Everything waiting, copied into one vector: for tests.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for c in &self.chunks {
            v.extend_from_slice(c);
        }
        v.extend_from_slice(&self.tail);
        v
    }

    /// Drop everything waiting.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.tail.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_shared_values_are_queued_small_ones_copied() {
        let mut out = OutBuf::new();
        out.put(b"VALUE k 0 2048\r\n");
        let big = Bytes::from(vec![b'x'; 2048]);
        out.put_value(&Value::Shared(big.clone()));
        out.put(b"\r\n");
        out.put_value(&Value::Shared(Bytes::from_static(b"tiny")));
        assert_eq!(out.chunks.len(), 2);
        assert_eq!(
            out.chunks[1].as_ptr(),
            big.as_ptr(),
            "large value not copied"
        );
        let all = out.to_vec();
        assert_eq!(all.len(), out.len());
        assert!(all.ends_with(b"\r\ntiny"));
    }

    #[test]
    fn advance_walks_across_chunks() {
        let mut out = OutBuf::new();
        out.put(b"abc");
        out.put_value(&Value::Shared(Bytes::from(vec![b'y'; ZERO_COPY_MIN])));
        out.put(b"def");
        let total = out.len();
        out.advance(2);
        assert_eq!(out.to_vec()[0], b'c');
        out.advance(1 + ZERO_COPY_MIN + 1);
        assert_eq!(out.to_vec(), b"ef");
        out.advance(2);
        assert!(out.is_empty());
        assert_eq!(total, 3 + ZERO_COPY_MIN + 3);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(out.io_slices(&mut slices), 0);
    }

    #[test]
    fn append_keeps_order_and_shares_large_values() {
        let big = Bytes::from(vec![b'z'; ZERO_COPY_MIN]);
        let mut later = OutBuf::new();
        later.put(b"B");
        later.put_value(&Value::Shared(big.clone()));
        later.put(b"C");
        let mut out = OutBuf::new();
        out.put(b"A");
        out.append(&mut later);
        assert!(later.is_empty());
        out.append(&mut OutBuf::new());
        let mut small = OutBuf::new();
        small.put(b"D");
        let small_buffer = small.tail.as_ptr();
        out.append(&mut small);
        assert!(small.is_empty());
        small.put(b"E");
        assert_eq!(small.tail.as_ptr(), small_buffer, "buffer kept for reuse");
        let mut want = b"AB".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"CD");
        assert_eq!(out.to_vec(), want);
        assert_eq!(out.len(), want.len());
        assert!(out.chunks.iter().any(|c| c.as_ptr() == big.as_ptr()));
    }

    #[test]
    fn decimals() {
        let mut out = OutBuf::new();
        out.put_decimal(0);
        out.put(b" ");
        out.put_decimal(u64::MAX);
        out.put(b" ");
        out.put_signed(-1);
        assert_eq!(out.to_vec(), b"0 18446744073709551615 -1");
    }
}
