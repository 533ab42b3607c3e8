//! One shard: a hash index into a slab of entries that also form the LRU.
//!
//! - `slab: Vec<Entry>` holds one 16-byte entry per item: the item handle and
//!   the LRU's `prev`/`next` links as `u32` slab indices. Freed slots are
//!   chained through `next` into a free list and reused, so indices stay
//!   stable while the item lives (the index table refers to them).
//! - `table: HashTable<u32>` maps a key to its slab index: 4 bytes per slot
//!   plus hashbrown's control byte. It stores no hash; on growth it rehashes
//!   each key (the key lives in the item, one pointer away).
//! - The LRU is intrusive in the slab: `head` is the most recently stored
//!   (or rescued) entry, `tail` the first to evict. No boxed nodes.
//! - A hit does not move its entry: it marks the item *active*, one bit in
//!   the item's header, which the lookup has just read. Eviction gives an
//!   active tail entry a second chance instead (clears the bit and moves it
//!   to the head), as memcached's segmented LRU does with its `ACTIVE`
//!   flag. A relink on every hit would write the two neighbours' and the
//!   head's slab entries: up to three more cache misses per hit, under the
//!   lock.
//!
//! Everything here runs under the shard's `Mutex`; nothing blocks or does
//! I/O. The global memory budget is shared between shards through
//! [`Ctx::used`]; this module keeps it in step with its own `bytes`.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::item::Item;
use crate::{Found, Stats};

/// "No entry" in the LRU links and the free list.
pub(crate) const NIL: u32 = u32::MAX;

/// Most active entries one eviction moves back to the head before it
/// evicts the tail whatever its bit (memcached's tail pull also looks at a
/// handful of items only).
pub(crate) const MAX_RESCUES: usize = 64;

/// What an item is charged against the memory limit on top of its own
/// allocation: its share of the index. A slab entry is 16 bytes, and a
/// doubling `Vec` is on average ~1.39x its length (22 bytes); a table slot is
/// a 4-byte index plus a 1-byte control byte, and hashbrown keeps its load
/// between 7/16 and 7/8, ~1.58x on average (8 bytes). 22 + 8 = 30.
pub(crate) const INDEX_SHARE: usize = 30;

/// The size of the chunk glibc's malloc carves for a request of `size`
/// bytes: the request plus its 8-byte size field, rounded up to 16, at least
/// 32. (Allocations above the mmap threshold, 128 KiB by default, are really
/// page-rounded; the difference is under 4 KiB on an item of 128 KiB or more,
/// so it is ignored.)
pub(crate) fn malloc_chunk(size: usize) -> usize {
    (size.saturating_add(8 + 15) & !15).max(32)
}

/// Bytes an item is charged against the memory limit: its malloc chunk plus
/// its share of the index.
pub(crate) fn charge(item: &Item) -> usize {
    malloc_chunk(item.alloc_size()) + INDEX_SHARE
}

/// The per-operation context a shard needs from the store.
pub(crate) struct Ctx<'a> {
    pub(crate) hasher: &'a DefaultHashBuilder,
    /// Bytes charged store-wide: linked items plus reservations in flight.
    pub(crate) used: &'a AtomicUsize,
    pub(crate) limit: usize,
    pub(crate) now: u32,
    /// The pending or past `flush_all` moment (0: none). See
    /// [`Ctx::dead`].
    pub(crate) flush_at: u32,
}

/// Why a linked item no longer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dead {
    Flushed,
    Expired,
}

impl Ctx<'_> {
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        hash_key(self.hasher, key)
    }

    /// Whether `item` is invalid now. A flush at moment `m` invalidates,
    /// from `m` on, every item last accessed (stored, read or touched) before
    /// `m`: exactly the items that were stored before it, since anything
    /// accessed after `m` was checked first. Items stored at or after `m`
    /// survive.
    pub(crate) fn dead(&self, item: &Item) -> Option<Dead> {
        if self.flush_at != 0 && self.flush_at <= self.now && item.last_access() < self.flush_at {
            return Some(Dead::Flushed);
        }
        let exptime = item.exptime();
        if exptime != 0 && exptime <= self.now {
            return Some(Dead::Expired);
        }
        None
    }

    /// Adds `n` to the global charge if that stays within the limit.
    pub(crate) fn try_reserve(&self, n: usize) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n) else {
                return false;
            };
            if next > self.limit {
                return false;
            }
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    pub(crate) fn release(&self, n: usize) {
        if n != 0 {
            self.used.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// The store's key hash: one `write` of the key's bytes into foldhash
/// (randomly seeded per process).
pub(crate) fn hash_key(hasher: &DefaultHashBuilder, key: &[u8]) -> u64 {
    let mut h = hasher.build_hasher();
    h.write(key);
    h.finish()
}

pub(crate) struct Entry {
    /// `None` for a free slot.
    item: Option<Item>,
    prev: u32,
    /// For a free slot: the next free slot.
    next: u32,
}

/// The outcome of making room for a write in this shard.
pub(crate) enum Fit {
    /// The charge is now accounted; link the item.
    Done,
    /// This shard cannot free enough: reserve this many bytes by evicting in
    /// other shards (without this shard's lock), then retry.
    Elsewhere(usize),
}

#[derive(Default)]
pub(crate) struct Shard {
    table: HashTable<u32>,
    slab: Vec<Entry>,
    free: u32,
    head: u32,
    tail: u32,
    /// Where the next sweep resumes, as a slab index.
    cursor: u32,
    /// Items linked.
    pub(crate) len: usize,
    /// Bytes charged for the items linked here.
    pub(crate) bytes: usize,
    /// This shard's counters (`curr_items`, `bytes` and `limit_maxbytes`
    /// are filled in by `Store::stats`).
    pub(crate) stats: Stats,
}

impl Shard {
    pub(crate) fn new() -> Shard {
        Shard {
            free: NIL,
            head: NIL,
            tail: NIL,
            ..Shard::default()
        }
    }

    fn entry(&self, idx: u32) -> &Entry {
        &self.slab[idx as usize]
    }

    fn entry_mut(&mut self, idx: u32) -> &mut Entry {
        &mut self.slab[idx as usize]
    }

    /// The item at a slab index the table gave out (always a used slot).
    pub(crate) fn item(&self, idx: u32) -> Option<&Item> {
        self.slab.get(idx as usize).and_then(|e| e.item.as_ref())
    }

    /// The slab index holding `key`, live or not.
    pub(crate) fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slab = &self.slab;
        self.table
            .find(hash, |&i| {
                slab.get(i as usize)
                    .and_then(|e| e.item.as_ref())
                    .is_some_and(|it| it.key() == key)
            })
            .copied()
    }

    /// Starts loading the items that may hold `key` into the cache (see
    /// [`crate::Store::prefetch`]); reads the index and the slab, never an
    /// item.
    pub(crate) fn prefetch(&self, hash: u64) {
        let slab = &self.slab;
        // Every candidate the index offers (nearly always one), never a
        // match: the probe walks on to its end without reading any item.
        let _ = self.table.find(hash, |&i| {
            if let Some(item) = slab.get(i as usize).and_then(|e| e.item.as_ref()) {
                item.prefetch();
            }
            false
        });
    }

    /// The slab index holding a live `key`. A flushed or expired item found
    /// on the way is unlinked and counted (`get_flushed` / `get_expired`), as
    /// memcached's `do_item_get` does for every command that looks a key up.
    pub(crate) fn find_live(&mut self, ctx: &Ctx<'_>, hash: u64, key: &[u8]) -> Option<u32> {
        let idx = self.find(hash, key)?;
        match ctx.dead(self.item(idx)?) {
            None => Some(idx),
            Some(dead) => {
                match dead {
                    Dead::Flushed => self.stats.get_flushed += 1,
                    Dead::Expired => self.stats.get_expired += 1,
                }
                self.remove(ctx, idx);
                None
            }
        }
    }

    /// A read hit: marked fetched and active (see the module docs), last
    /// access now.
    pub(crate) fn access(&mut self, idx: u32, now: u32) -> Option<Found> {
        let (item, last_access, fetched) = self.touch_read(idx, now)?;
        Some(Found {
            item: item.clone(),
            last_access,
            fetched,
        })
    }

    /// [`Shard::access`] without a handle on the item: the item, seconds
    /// since its previous access, and whether it had been fetched before.
    pub(crate) fn touch_read(&self, idx: u32, now: u32) -> Option<(&Item, u32, bool)> {
        let item = self.item(idx)?;
        let previous = item.last_access();
        let fetched = item.fetched();
        item.set_last_access(now);
        item.set_fetched();
        Some((item, now.saturating_sub(previous), fetched))
    }

    /// Moves an entry to the most-recent end of the LRU.
    pub(crate) fn bump(&mut self, idx: u32) {
        if self.head != idx {
            self.unlink_lru(idx);
            self.link_front(idx);
        }
    }

    fn unlink_lru(&mut self, idx: u32) {
        let (prev, next) = {
            let e = self.entry(idx);
            (e.prev, e.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.entry_mut(prev).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.entry_mut(next).prev = prev;
        }
    }

    fn link_front(&mut self, idx: u32) {
        let head = self.head;
        {
            let e = self.entry_mut(idx);
            e.prev = NIL;
            e.next = head;
        }
        if head == NIL {
            self.tail = idx;
        } else {
            self.entry_mut(head).prev = idx;
        }
        self.head = idx;
    }

    /// Makes sure one more item can be linked without allocating (table slot
    /// and slab entry). `false` if the allocator refused.
    pub(crate) fn reserve_slot(&mut self, hasher: &DefaultHashBuilder) -> bool {
        let slab = &self.slab;
        let rehash = |&i: &u32| rehash(hasher, slab, i);
        if self.table.try_reserve(1, rehash).is_err() {
            return false;
        }
        if self.free == NIL {
            if self.slab.len() >= NIL as usize {
                return false;
            }
            if self.slab.try_reserve(1).is_err() {
                return false;
            }
        }
        true
    }

    /// Links a new key's item as most recent. The caller has called
    /// [`Shard::reserve_slot`] and accounted `charge` (via [`Shard::fit`]).
    pub(crate) fn insert(
        &mut self,
        hasher: &DefaultHashBuilder,
        hash: u64,
        item: Item,
        charge: usize,
    ) {
        let idx = if self.free == NIL {
            let idx = self.slab.len() as u32;
            self.slab.push(Entry {
                item: Some(item),
                prev: NIL,
                next: NIL,
            });
            idx
        } else {
            let idx = self.free;
            let e = self.entry_mut(idx);
            let next_free = e.next;
            e.item = Some(item);
            self.free = next_free;
            idx
        };
        self.link_front(idx);
        let slab = &self.slab;
        self.table
            .insert_unique(hash, idx, |&i| rehash(hasher, slab, i));
        self.len += 1;
        self.bytes += charge;
    }

    /// Puts a new item (same key) in an entry's place, most recent in the
    /// LRU, and hands back the old one (to be dropped after the lock is
    /// released). The caller accounted the charges via [`Shard::fit`].
    pub(crate) fn replace(
        &mut self,
        idx: u32,
        item: Item,
        charge: usize,
        old_charge: usize,
    ) -> Option<Item> {
        let old = self.entry_mut(idx).item.replace(item);
        self.bump(idx);
        self.bytes = self.bytes + charge - old_charge;
        old
    }

    /// Unlinks an entry and releases its charge. The item is returned so the
    /// caller may drop it after releasing the lock.
    pub(crate) fn remove(&mut self, ctx: &Ctx<'_>, idx: u32) -> Option<Item> {
        let hash = ctx.hash(self.item(idx)?.key());
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
        self.unlink_lru(idx);
        let free = self.free;
        let e = self.entry_mut(idx);
        let item = e.item.take()?;
        e.prev = NIL;
        e.next = free;
        self.free = idx;
        let c = charge(&item);
        self.len -= 1;
        self.bytes -= c;
        ctx.release(c);
        Some(item)
    }

    /// Frees the least recently used entry other than `protect` (the item a
    /// write is about to replace), after moving the live active entries it
    /// meets at the tail to the head, once each and at most
    /// [`MAX_RESCUES`] of them (their second chance). An
    /// expired or flushed victim counts as reclaimed, a live one as an
    /// eviction. Returns the bytes freed, or `None` if there was nothing to
    /// evict.
    pub(crate) fn evict_one(&mut self, ctx: &Ctx<'_>, protect: u32) -> Option<usize> {
        // Every rescue clears a bit, so the tail is soon inactive; the cap
        // bounds the work one write can do under the lock when most of a
        // large shard was read since its last eviction (the hits' bits stay
        // and protect them next time round).
        let mut rescues = MAX_RESCUES;
        let (victim, item, dead) = loop {
            let mut victim = self.tail;
            if victim != NIL && victim == protect {
                victim = self.entry(victim).prev;
            }
            if victim == NIL {
                return None;
            }
            let item = self.item(victim)?;
            let dead = ctx.dead(item).is_some();
            if rescues > 0 && !dead && item.take_active() {
                rescues -= 1;
                self.bump(victim);
                continue;
            }
            break (victim, item, dead);
        };
        let unfetched = !item.fetched();
        if dead {
            self.stats.reclaimed += 1;
            self.stats.expired_unfetched += u64::from(unfetched);
        } else {
            self.stats.evictions += 1;
            self.stats.evicted_unfetched += u64::from(unfetched);
        }
        self.remove(ctx, victim).map(|item| charge(&item))
    }

    /// Accounts a write that links an item charged `new` bytes in place of
    /// one charged `old` (0 for a new key), counting `reserved` bytes the
    /// caller already holds. Evicts from this shard's LRU tail (never
    /// `protect`) until the global charge fits the limit.
    pub(crate) fn fit(
        &mut self,
        ctx: &Ctx<'_>,
        new: usize,
        old: usize,
        reserved: &mut usize,
        protect: u32,
    ) -> Fit {
        let have = old + *reserved;
        if new <= have {
            ctx.release(have - new);
            *reserved = 0;
            return Fit::Done;
        }
        let need = new - have;
        loop {
            if ctx.try_reserve(need) {
                *reserved = 0;
                return Fit::Done;
            }
            if self.evict_one(ctx, protect).is_none() {
                return Fit::Elsewhere(need);
            }
        }
    }

    /// Looks at up to `budget` slab slots from where the last sweep stopped
    /// and unlinks the expired or flushed items among them. Returns how many
    /// it reclaimed.
    pub(crate) fn sweep(&mut self, ctx: &Ctx<'_>, budget: usize) -> usize {
        let n = self.slab.len();
        let mut reclaimed = 0;
        for _ in 0..budget.min(n) {
            let idx = if (self.cursor as usize) < n {
                self.cursor
            } else {
                0
            };
            self.cursor = if idx as usize + 1 < n { idx + 1 } else { 0 };
            let Some(item) = self.item(idx) else {
                continue;
            };
            if ctx.dead(item).is_none() {
                continue;
            }
            let unfetched = !item.fetched();
            self.stats.reclaimed += 1;
            self.stats.expired_unfetched += u64::from(unfetched);
            self.remove(ctx, idx);
            reclaimed += 1;
        }
        reclaimed
    }

    /// Unlinks every item whose key `keep` refuses (dead items too), and
    /// returns how many live ones it dropped.
    pub(crate) fn retain(&mut self, ctx: &Ctx<'_>, keep: &mut dyn FnMut(&[u8]) -> bool) -> usize {
        let mut dropped = 0;
        for idx in 0..self.slab.len() as u32 {
            let Some(item) = self.item(idx) else {
                continue;
            };
            if keep(item.key()) {
                continue;
            }
            dropped += usize::from(ctx.dead(item).is_none());
            self.remove(ctx, idx);
        }
        dropped
    }

    /// Empties the shard, returning its index (to be dropped, freeing every
    /// item, after the lock is released) and the bytes it was charged, which
    /// the caller releases. Counters are kept.
    pub(crate) fn take_all(&mut self) -> (HashTable<u32>, Vec<Entry>, usize) {
        let table = std::mem::take(&mut self.table);
        let slab = std::mem::take(&mut self.slab);
        let bytes = self.bytes;
        self.free = NIL;
        self.head = NIL;
        self.tail = NIL;
        self.cursor = 0;
        self.len = 0;
        self.bytes = 0;
        (table, slab, bytes)
    }

    /// The LRU from most to least recent, for tests.
    #[cfg(test)]
    pub(crate) fn lru_keys(&self) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        let mut idx = self.head;
        let mut prev = NIL;
        while idx != NIL {
            let e = self.entry(idx);
            assert_eq!(e.prev, prev, "LRU back link");
            keys.push(
                e.item
                    .as_ref()
                    .map(|it| it.key().to_vec())
                    .unwrap_or_default(),
            );
            prev = idx;
            idx = e.next;
        }
        assert_eq!(prev, self.tail, "LRU tail");
        assert_eq!(keys.len(), self.len);
        assert_eq!(self.table.len(), self.len);
        keys
    }
}

/// The hash of the key in slab slot `i`, for the table's rehash on growth.
fn rehash(hasher: &DefaultHashBuilder, slab: &[Entry], i: u32) -> u64 {
    match slab.get(i as usize).and_then(|e| e.item.as_ref()) {
        Some(item) => hash_key(hasher, item.key()),
        None => 0,
    }
}
