//! [`Item`]: one heap allocation per cached item, shared by refcount.
//!
//! Layout of the allocation (alignment 8):
//!
//! ```text
//! offset  0  refs         AtomicU32   handles alive (the store's is one of them)
//!         4  value_len    u32
//!         8  cas          u64
//!        16  flags        u32
//!        20  exptime      AtomicU32   unix seconds, 0 = never (touch rewrites it)
//!        24  last_access  AtomicU32   unix seconds of the last access
//!        28  key_len      u16
//!        30  state        AtomicU8    bit 0: fetched, bit 1: active
//!        31  tag          AtomicU8    the server's note on the item (0 = none)
//!        32  key bytes, then value bytes
//! ```
//!
//! That is 32 bytes of header against memcached's 56 (48-byte `item` plus the
//! CAS). The refcount lives inside the allocation, so cloning a handle (for a
//! reader, or for [`Item::value_bytes`]) is one atomic increment and never a
//! second allocation, unlike `Bytes::from(Vec<u8>)` whose first clone
//! allocates a shared header.
//!
//! Why hand-written rather than `triomphe::ThinArc<Header, u8>`: `ThinArc`
//! spends a `usize` refcount and a `usize` slice length on top of the header
//! and pads the header to 8, which costs 16 bytes per item — for the 13-byte
//! key / 100-byte value benchmark item, a 176-byte malloc chunk instead of
//! 160. The unsafe code is limited to this file: allocation, the two
//! pointer-to-slice conversions, the Arc-style refcount, and a prefetch
//! hint.
//!
//! The header fields that change after construction (`exptime`,
//! `last_access`, `state`) are atomics, but they are only *written* by the
//! store while it holds the lock of the shard the item is linked in; handles
//! held elsewhere only read them. So plain `Relaxed` loads and stores are
//! enough: there is never a read-modify-write race between two writers.

use std::alloc::{Layout, alloc, dealloc};
use std::fmt;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering, fence};

use bytes::Bytes;

/// Bytes of header before the key, in every item allocation.
pub(crate) const HEADER_LEN: usize = 32;

/// Longest key an item can hold (its length is a `u16`). memcached's own limit
/// is 250, which the protocol layer enforces.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

/// Longest value an item can hold (its length is a `u32`).
pub const MAX_VALUE_LEN: usize = u32::MAX as usize;

/// Above this many handles, cloning aborts (as `Arc` does at `isize::MAX`): a
/// refcount that wrapped would free an item still in use. Reaching it takes
/// two billion live handles to one item, which no real workload holds.
const MAX_REFS: u32 = i32::MAX as u32;

/// `state` bit: the item was fetched (get, gat, touch) since it was stored.
const FETCHED: u8 = 1;
/// `state` bit: the item was fetched since it last reached the LRU's tail
/// (its second chance; see the `shard` module).
const ACTIVE: u8 = 2;

#[repr(C)]
struct Header {
    refs: AtomicU32,
    value_len: u32,
    cas: u64,
    flags: u32,
    exptime: AtomicU32,
    last_access: AtomicU32,
    key_len: u16,
    state: AtomicU8,
    tag: AtomicU8,
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_LEN);
const _: () = assert!(std::mem::align_of::<Header>() == 8);

/// A cheap-to-clone handle to an immutable cached item: key, value, flags
/// and CAS never change once it is built (a new value means a new item), so a
/// reader can keep a handle — e.g. while its value is being written to a
/// socket — without holding any lock and without copying the value.
///
/// Cloning is one atomic increment; the allocation is freed when the last
/// handle (the store's or a reader's) is dropped.
pub struct Item {
    ptr: NonNull<Header>,
    _owns: PhantomData<Header>,
}

// SAFETY: the key and value bytes and the non-atomic header fields are never
// written after `Item::build` returns; the mutable header fields are atomics.
// The refcount is atomic with Arc's orderings. So handles may be sent to and
// shared between threads.
unsafe impl Send for Item {}
// SAFETY: see `Send`: every `&self` method only reads immutable data or atomics.
unsafe impl Sync for Item {}

impl Item {
    /// Builds an item whose value is the concatenation of `parts` followed by
    /// `pad` ASCII spaces (how incr/decr keep a value's length, as memcached
    /// does in place). `last_access` starts at `now`, not fetched.
    ///
    /// Returns `None` if the key or value is too long for the header's length
    /// fields, or if the allocator has no memory: the caller answers
    /// out-of-memory instead of aborting the process.
    pub(crate) fn build(
        key: &[u8],
        parts: &[&[u8]],
        pad: usize,
        flags: u32,
        exptime: u32,
        cas: u64,
        now: u32,
    ) -> Option<Item> {
        let key_len = u16::try_from(key.len()).ok()?;
        let mut value_len = pad;
        for part in parts {
            value_len = value_len.checked_add(part.len())?;
        }
        let value_len_u32 = u32::try_from(value_len).ok()?;
        let layout = Self::layout(key.len(), value_len)?;
        // SAFETY: `layout` has a non-zero size (at least HEADER_LEN).
        let raw = unsafe { alloc(layout) };
        let ptr = NonNull::new(raw.cast::<Header>())?;
        // SAFETY: `raw` is a fresh allocation of `layout.size()` =
        // HEADER_LEN + key.len() + value_len bytes, aligned for `Header`.
        // The header is written at offset 0; the key and the value parts (and
        // the padding) are copied into disjoint ranges after it, whose total
        // length is exactly what the layout reserved. Source slices cannot
        // overlap a fresh allocation.
        unsafe {
            ptr.as_ptr().write(Header {
                refs: AtomicU32::new(1),
                value_len: value_len_u32,
                cas,
                flags,
                exptime: AtomicU32::new(exptime),
                last_access: AtomicU32::new(now),
                key_len,
                state: AtomicU8::new(0),
                tag: AtomicU8::new(0),
            });
            let mut dst = raw.add(HEADER_LEN);
            ptr::copy_nonoverlapping(key.as_ptr(), dst, key.len());
            dst = dst.add(key.len());
            for part in parts {
                ptr::copy_nonoverlapping(part.as_ptr(), dst, part.len());
                dst = dst.add(part.len());
            }
            ptr::write_bytes(dst, b' ', pad);
        }
        Some(Item {
            ptr,
            _owns: PhantomData,
        })
    }

    /// The allocation's layout for a key and value of these lengths, or
    /// `None` if the size overflows.
    fn layout(key_len: usize, value_len: usize) -> Option<Layout> {
        let size = HEADER_LEN.checked_add(key_len)?.checked_add(value_len)?;
        Layout::from_size_align(size, std::mem::align_of::<Header>()).ok()
    }

    /// Bytes this item asks the allocator for (header + key + value).
    pub(crate) fn alloc_size(&self) -> usize {
        HEADER_LEN + self.key_len() + self.value_len()
    }

    fn header(&self) -> &Header {
        // SAFETY: `ptr` points to a live allocation (we hold one of its
        // references) whose first HEADER_LEN bytes were initialised as a
        // `Header` by `build`.
        unsafe { self.ptr.as_ref() }
    }

    fn key_len(&self) -> usize {
        usize::from(self.header().key_len)
    }

    fn value_len(&self) -> usize {
        self.header().value_len as usize
    }

    /// The item's key.
    pub fn key(&self) -> &[u8] {
        // SAFETY: bytes HEADER_LEN..HEADER_LEN + key_len of the live
        // allocation were initialised by `build` and are never written again.
        // The pointer is derived from the allocation's own pointer, not from
        // the `&Header` reference, so it may address bytes past the header.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().cast::<u8>().add(HEADER_LEN),
                self.key_len(),
            )
        }
    }

    /// The item's value.
    pub fn value(&self) -> &[u8] {
        // SAFETY: as for `key`: the value follows the key, was initialised by
        // `build`, and lies within the allocation.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr
                    .as_ptr()
                    .cast::<u8>()
                    .add(HEADER_LEN + self.key_len()),
                self.value_len(),
            )
        }
    }

    /// The 32-bit client flags stored with the value.
    pub fn flags(&self) -> u32 {
        self.header().flags
    }

    /// The item's unique CAS value (never 0).
    pub fn cas(&self) -> u64 {
        self.header().cas
    }

    /// When the item expires, in unix seconds; 0 means never. A `touch` or
    /// `gat` changes it, and a handle held across one sees the new time.
    pub fn exptime(&self) -> u32 {
        self.header().exptime.load(Ordering::Relaxed)
    }

    /// Seconds left to live at `now`, or -1 if the item never expires (the
    /// number memcached's meta `t` flag answers). 0 once it has expired.
    pub fn ttl(&self, now: u32) -> i64 {
        match self.exptime() {
            0 => -1,
            t => (i64::from(t) - i64::from(now)).max(0),
        }
    }

    /// memcached's size of this item, as counted against `-I` (see
    /// [`crate::Store::item_size_with_flags`]); what `me` reports as `size`.
    pub fn total_size(&self) -> usize {
        crate::Store::item_size_with_flags(self.key_len(), self.value_len(), self.flags())
    }

    /// The value as [`Bytes`] without copying it: the `Bytes` owns a clone of
    /// this handle, so the item stays alive until the last `Bytes` (and
    /// handle) is gone. Costs one small owner allocation inside `bytes`; an
    /// empty value costs nothing.
    pub fn value_bytes(&self) -> Bytes {
        if self.value_len() == 0 {
            return Bytes::new();
        }
        Bytes::from_owner(ValueOwner(self.clone()))
    }

    /// Whether two handles point to the same item.
    pub fn ptr_eq(a: &Item, b: &Item) -> bool {
        a.ptr == b.ptr
    }

    pub(crate) fn last_access(&self) -> u32 {
        self.header().last_access.load(Ordering::Relaxed)
    }

    /// Only under the lock of the shard the item is linked in.
    pub(crate) fn set_last_access(&self, now: u32) {
        self.header().last_access.store(now, Ordering::Relaxed);
    }

    /// Only under the lock of the shard the item is linked in.
    pub(crate) fn set_exptime(&self, exptime: u32) {
        self.header().exptime.store(exptime, Ordering::Relaxed);
    }

    pub(crate) fn fetched(&self) -> bool {
        self.header().state.load(Ordering::Relaxed) & FETCHED != 0
    }

    /// Marks the item fetched and active. Only under the lock of the shard
    /// the item is linked in.
    pub(crate) fn set_fetched(&self) {
        let state = &self.header().state;
        let was = state.load(Ordering::Relaxed);
        if was & (FETCHED | ACTIVE) != FETCHED | ACTIVE {
            state.store(was | FETCHED | ACTIVE, Ordering::Relaxed);
        }
    }

    /// Whether the item was fetched since it last reached the LRU's tail,
    /// clearing that. Only under the lock of the shard the item is linked
    /// in.
    pub(crate) fn take_active(&self) -> bool {
        let state = &self.header().state;
        let was = state.load(Ordering::Relaxed);
        if was & ACTIVE != 0 {
            state.store(was & !ACTIVE, Ordering::Relaxed);
        }
        was & ACTIVE != 0
    }

    /// Asks the CPU to start loading the item's first three cache lines
    /// without waiting for them: a hint, which never faults and changes
    /// nothing. Three lines hold the header, a short key and a value of
    /// about 100 bytes wherever the allocation starts within a line, so
    /// the copy of such a value into an answer does not wait either.
    #[inline]
    pub(crate) fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let p = self.ptr.as_ptr().cast::<i8>();
            // SAFETY: a prefetch reads nothing architecturally and cannot
            // fault, whatever the address; `wrapping_add` computes the
            // addresses without claiming they lie within the allocation.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(128));
            }
        }
    }

    /// A byte the server may keep on the item (0 until set): e.g. a
    /// classification of the key worked out once and reused on every hit.
    /// The store never reads it; it is not part of the item's value.
    pub fn tag(&self) -> u8 {
        self.header().tag.load(Ordering::Relaxed)
    }

    /// Sets [`Item::tag`]. Any handle may: writers racing on one item write
    /// the same value for the same key, and a reader sees the old or the new.
    pub fn set_tag(&self, tag: u8) {
        self.header().tag.store(tag, Ordering::Relaxed);
    }
}

impl Clone for Item {
    fn clone(&self) -> Item {
        // Relaxed is enough for an increment (as in `Arc::clone`): the new
        // handle is created from an existing one, which keeps the item alive.
        let old = self.header().refs.fetch_add(1, Ordering::Relaxed);
        if old > MAX_REFS {
            std::process::abort();
        }
        Item {
            ptr: self.ptr,
            _owns: PhantomData,
        }
    }
}

impl Drop for Item {
    fn drop(&mut self) {
        // Release/Acquire as in `Arc::drop`: every other handle's uses of the
        // item happen before the last one frees it.
        if self.header().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        let Some(layout) = Self::layout(self.key_len(), self.value_len()) else {
            // Unreachable: `build` succeeded with this very layout.
            return;
        };
        // SAFETY: this was the last handle, so no reference into the
        // allocation remains; `ptr` came from `alloc` with this same layout
        // (same key and value lengths, same alignment).
        unsafe { dealloc(self.ptr.as_ptr().cast::<u8>(), layout) }
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Item")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("value_len", &self.value_len())
            .field("flags", &self.flags())
            .field("cas", &self.cas())
            .field("exptime", &self.exptime())
            .finish()
    }
}

/// Owner handed to `Bytes::from_owner`: its bytes are the item's value.
struct ValueOwner(Item);

impl AsRef<[u8]> for ValueOwner {
    fn as_ref(&self) -> &[u8] {
        self.0.value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_read_back() {
        let it = Item::build(b"key", &[b"ab", b"cd"], 3, 7, 99, 42, 1000).unwrap();
        assert_eq!(it.key(), b"key");
        assert_eq!(it.value(), b"abcd   ");
        assert_eq!(it.flags(), 7);
        assert_eq!(it.exptime(), 99);
        assert_eq!(it.cas(), 42);
        assert_eq!(it.last_access(), 1000);
        assert!(!it.fetched());
        it.set_fetched();
        it.set_last_access(1005);
        it.set_exptime(0);
        assert!(it.fetched());
        assert_eq!(it.last_access(), 1005);
        assert_eq!(it.ttl(1005), -1);
        assert_eq!(it.alloc_size(), HEADER_LEN + 3 + 7);
    }

    #[test]
    fn empty_key_and_value() {
        let it = Item::build(b"", &[], 0, 0, 0, 1, 0).unwrap();
        assert_eq!(it.key(), b"");
        assert_eq!(it.value(), b"");
        assert!(it.value_bytes().is_empty());
    }

    #[test]
    fn clones_share_and_outlive_each_other() {
        let a = Item::build(b"k", &[b"value"], 0, 0, 0, 1, 0).unwrap();
        let b = a.clone();
        assert!(Item::ptr_eq(&a, &b));
        drop(a);
        let bytes = b.value_bytes();
        let c = b.clone();
        drop(b);
        assert_eq!(&bytes[..], b"value");
        assert_eq!(
            bytes.as_ptr(),
            c.value().as_ptr(),
            "value_bytes copies nothing"
        );
        drop(c);
        assert_eq!(&bytes.clone()[..], b"value");
    }

    #[test]
    fn ttl() {
        let it = Item::build(b"k", &[], 0, 0, 110, 1, 0).unwrap();
        assert_eq!(it.ttl(100), 10);
        assert_eq!(it.ttl(110), 0);
        assert_eq!(it.ttl(200), 0);
    }

    #[test]
    fn too_long_key_is_refused_not_truncated() {
        let key = vec![b'k'; MAX_KEY_LEN + 1];
        assert!(Item::build(&key, &[], 0, 0, 0, 1, 0).is_none());
        let key = vec![b'k'; MAX_KEY_LEN];
        assert_eq!(
            Item::build(&key, &[], 0, 0, 0, 1, 0).unwrap().key().len(),
            MAX_KEY_LEN
        );
    }

    #[test]
    fn handles_cross_threads() {
        let it = Item::build(b"k", &[b"v"], 0, 0, 0, 1, 0).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let it = it.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let c = it.clone();
                        assert_eq!(c.value(), b"v");
                    }
                })
            })
            .collect();
        drop(it);
        for h in handles {
            h.join().unwrap();
        }
    }
}
