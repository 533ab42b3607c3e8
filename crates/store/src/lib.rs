//! shoal's local item store: a synchronous, sharded, in-memory map from keys
//! to items with memcached 1.6's semantics — memory limit with LRU
//! eviction, expiry, flush, CAS, the `-I` item-size limit, incr/decr.
//!
//! No tokio, no I/O, no metrics, no logging: the server wraps it. Every call
//! hashes the key, takes one shard's `std::sync::Mutex` for a short critical
//! section, and returns. Time comes from an injectable [`Clock`], so tests
//! drive expiry with a [`ManualClock`].
//!
//! The parts:
//! - [`Store`]: the API the server calls; shards, the global memory budget,
//!   the CAS counter and the `flush_all` moment.
//! - `shard`: one shard — a `hashbrown::HashTable<u32>` index into a slab
//!   `Vec` of 16-byte entries (item handle + `u32` LRU links), with a free
//!   list and an intrusive LRU. Shard = bits 32.. of the key's hash (the table
//!   itself uses the low bits for the bucket and the top 7 for its tags, so
//!   the shard bits are independent of both).
//! - [`Item`]: one heap allocation per item — refcount, a 32-byte header,
//!   key and value — shared by cheap handles, so a value reaches a socket
//!   without a copy and without holding a lock ([`Item::value_bytes`]).
//! - `rules`: memcached's pure rules — [`expiry_time`], [`Store::item_size`],
//!   and the incr/decr number parser.
//!
//! # Memory accounting
//! Each linked item is charged `malloc_chunk(32 + key + value) + 30`, where
//! `malloc_chunk(n)` is what glibc's malloc really carves for `n` bytes
//! (`n + 8` rounded up to 16, at least 32) and 30 bytes is the item's share
//! of the index (slab entry and table slot, with their average growth
//! slack). The sum of charges (plus charges reserved by writes in flight)
//! never exceeds [`Config::memory_limit`]: a write that needs room evicts
//! from its own shard's LRU tail, then — after releasing that lock, never
//! holding two — from other shards, and answers [`Error::OutOfMemory`] if
//! the item can never fit. Items removed from the store but still held by a
//! reader (a `get` being written out) are no longer charged, as in memcached.
//!
//! For 1M items of 13-byte keys and 100-byte values this charges 190 B per
//! item (a 160-byte malloc chunk + 30), and the process's resident memory
//! grows by about 187 B per item (`cargo run --release -p shoal-store
//! --example rss`), against 196-200 B for memcached 1.6.18 (200 B measured
//! on the same machine with the same items). The `ops` example
//! times single-thread gets and sets.
//!
//! # Expiry and flush
//! Expired and flushed items read as misses and are unlinked when a command
//! finds them; [`Store::sweep`] reclaims the ones nobody asks for. An
//! immediate `flush_all` empties every shard at once (freeing the memory); a
//! delayed one records its moment and items stored before it die lazily when
//! it arrives.

mod item;
mod rules;
mod shard;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hashbrown::DefaultHashBuilder;

pub use item::{Item, MAX_KEY_LEN, MAX_VALUE_LEN};
pub use rules::{Expiry, MAX_RELATIVE_EXPTIME, expiry_time};

use shard::{Ctx, Fit, NIL, Shard, charge, hash_key};

/// The store's limits. The server fills it from `-m` and `-I`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Bytes the items may be charged in total (`-m`, in bytes). See the
    /// crate docs for what an item is charged.
    pub memory_limit: usize,
    /// Largest item, as memcached sizes it (`-I`, in bytes): see
    /// [`Store::item_size`].
    pub max_item_size: usize,
    /// Number of shards (independent locks). Rounded up to a power of two
    /// between 1 and 65,536.
    pub shards: usize,
}

impl Default for Config {
    /// memcached's defaults (`-m 64 -I 1m`) and 64 shards.
    fn default() -> Self {
        Config {
            memory_limit: 64 << 20,
            max_item_size: 1 << 20,
            shards: 64,
        }
    }
}

/// Where the store gets the time, in unix seconds. Injected so that tests
/// control expiry, and so a server may supply a cheaper cached clock.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> u32;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u32 {
        whole_seconds(since_epoch())
    }
}

/// The system's time since the epoch (zero for a clock set before it).
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// `since_epoch` in whole seconds, as the store keeps time.
fn whole_seconds(since_epoch: Duration) -> u32 {
    u32::try_from(since_epoch.as_secs()).unwrap_or(u32::MAX)
}

/// The wall clock, read from memory: [`TickingClock::tick`] stores the time
/// and every read is one atomic load, as memcached's `current_time` is set
/// by a timer rather than read from the system on every command (a
/// `clock_gettime` per get cost a single node about 4% of its CPU). Whoever
/// owns it ticks it when the system's second turns, as `tick` says: the
/// server's clock thread wakes once a second, and the store's time trails
/// the system's by [`TICK_MARGIN`] plus scheduling delay.
#[derive(Debug)]
pub struct TickingClock {
    now: AtomicU32,
}

impl TickingClock {
    /// A clock set to the system's time now.
    pub fn new() -> TickingClock {
        TickingClock {
            now: AtomicU32::new(SystemClock.now()),
        }
    }

    /// Sets the clock to the system's time; returns how long until the
    /// system's clock turns its next second (plus [`TICK_MARGIN`]), when
    /// the next tick is due.
    pub fn tick(&self) -> Duration {
        let since_epoch = since_epoch();
        self.now
            .store(whole_seconds(since_epoch), Ordering::Relaxed);
        until_next_second(since_epoch)
    }
}

/// How late after the system's second turns a tick is set for: the sleep
/// that waits for it runs on the monotonic clock, which may run up to 0.05%
/// apart from a wall clock NTP is slewing, so a tick set for the very turn
/// could land just before it.
pub const TICK_MARGIN: Duration = Duration::from_millis(2);

/// From `since_epoch` (the system's time) to [`TICK_MARGIN`] past its next
/// whole second.
fn until_next_second(since_epoch: Duration) -> Duration {
    Duration::from_secs(1) - Duration::from_nanos(u64::from(since_epoch.subsec_nanos()))
        + TICK_MARGIN
}

impl Default for TickingClock {
    fn default() -> TickingClock {
        TickingClock::new()
    }
}

impl Clock for TickingClock {
    fn now(&self) -> u32 {
        self.now.load(Ordering::Relaxed)
    }
}

/// The tag of an item replacing one tagged `old` (0: none, or no old
/// item): a tag depends only on the key, so the old one is kept; only
/// without one is `fresh` asked.
fn taken_over(old: u8, fresh: impl FnOnce() -> u8) -> u8 {
    if old != 0 { old } else { fresh() }
}

/// A clock that moves only when told: for tests of expiry and flush.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU32,
}

impl ManualClock {
    pub fn new(start: u32) -> ManualClock {
        ManualClock {
            now: AtomicU32::new(start),
        }
    }

    pub fn set(&self, t: u32) {
        self.now.store(t, Ordering::Relaxed);
    }

    /// Moves the clock forward (saturating at `u32::MAX`).
    pub fn advance(&self, secs: u32) {
        let _ = self
            .now
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(secs))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u32 {
        self.now.load(Ordering::Relaxed)
    }
}

/// How a store command treats an existing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Store unconditionally. With a CAS: memcached's `cas` command.
    Set,
    /// Store only if the key is missing. A CAS is ignored (as in the text and
    /// meta protocols; memcached's *binary* add with a CAS behaves like a
    /// `cas`, so the binary codec should send `Set` for it).
    Add,
    /// Store only if the key exists. With a CAS: like `Set` with a CAS.
    Replace,
    /// Add the value after the existing one, keeping its flags and exptime.
    Append,
    /// Add the value before the existing one, keeping its flags and exptime.
    Prepend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    Incr,
    Decr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored, with the new item's CAS.
    Stored { cas: u64 },
    /// The mode's condition failed (add on a live key; replace, append or
    /// prepend on a missing one), or an append/prepend result would exceed
    /// `-I` or could not get memory (memcached answers `NOT_STORED` there too).
    NotStored,
    /// The CAS did not match.
    Exists,
    /// A CAS store (set/replace with a CAS) found no item.
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    /// The CAS did not match; nothing was deleted.
    Exists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOutcome {
    /// The new number, and the CAS of the item now holding it.
    Value {
        value: u64,
        cas: u64,
    },
    NotFound,
    /// The CAS did not match; nothing changed.
    Exists,
}

/// The store's one error type; each maps to one memcached reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The item exceeds `-I` (`SERVER_ERROR object too large for cache`,
    /// binary `E2BIG`).
    #[error("object too large for cache")]
    TooLarge,
    /// The item cannot fit in the memory limit even after evicting
    /// (`SERVER_ERROR out of memory storing object`).
    #[error("out of memory storing object")]
    OutOfMemory,
    /// incr/decr on a value that is not a decimal 64-bit number
    /// (`CLIENT_ERROR cannot increment or decrement non-numeric value`).
    #[error("cannot increment or decrement non-numeric value")]
    NonNumeric,
}

/// A read hit.
#[derive(Debug, Clone)]
pub struct Found {
    pub item: Item,
    /// Seconds since the item's previous access (meta `l`/`la`).
    pub last_access: u32,
    /// Whether the item had been fetched before this access (meta `h`).
    pub fetched: bool,
}

/// memcached's `stats` figures that the store owns, summed over shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub curr_items: u64,
    pub total_items: u64,
    /// Bytes charged for the linked items (see the crate docs).
    pub bytes: u64,
    pub limit_maxbytes: u64,
    pub evictions: u64,
    /// Expired or flushed items unlinked by a sweep or at the LRU tail.
    pub reclaimed: u64,
    pub expired_unfetched: u64,
    pub evicted_unfetched: u64,
    pub get_hits: u64,
    /// Every miss, including the expired and flushed ones below.
    pub get_misses: u64,
    /// Lookups (by any command) that found an expired item.
    pub get_expired: u64,
    /// Lookups (by any command) that found an item killed by `flush_all`.
    pub get_flushed: u64,
    pub touch_hits: u64,
    pub touch_misses: u64,
    pub delete_hits: u64,
    pub delete_misses: u64,
    pub incr_hits: u64,
    pub incr_misses: u64,
    pub decr_hits: u64,
    pub decr_misses: u64,
    pub cas_hits: u64,
    pub cas_misses: u64,
    pub cas_badval: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.curr_items += o.curr_items;
        self.total_items += o.total_items;
        self.bytes += o.bytes;
        self.evictions += o.evictions;
        self.reclaimed += o.reclaimed;
        self.expired_unfetched += o.expired_unfetched;
        self.evicted_unfetched += o.evicted_unfetched;
        self.get_hits += o.get_hits;
        self.get_misses += o.get_misses;
        self.get_expired += o.get_expired;
        self.get_flushed += o.get_flushed;
        self.touch_hits += o.touch_hits;
        self.touch_misses += o.touch_misses;
        self.delete_hits += o.delete_hits;
        self.delete_misses += o.delete_misses;
        self.incr_hits += o.incr_hits;
        self.incr_misses += o.incr_misses;
        self.decr_hits += o.decr_hits;
        self.decr_misses += o.decr_misses;
        self.cas_hits += o.cas_hits;
        self.cas_misses += o.cas_misses;
        self.cas_badval += o.cas_badval;
    }
}

/// A shard's lock on its own cache lines, so neighbouring shards' locks do
/// not false-share.
#[repr(align(128))]
struct ShardSlot(Mutex<Shard>);

/// How many times a write retries after evicting in other shards before it
/// gives up with out-of-memory (each retry only follows a successful
/// reservation, so more than one is rare).
const MAX_ATTEMPTS: usize = 8;

/// How many times eviction in other shards goes round all of them.
const MAX_EVICT_ROUNDS: usize = 1024;

/// The sharded item store. `Send + Sync`: share it with an `Arc`.
pub struct Store {
    config: Config,
    clock: Arc<dyn Clock>,
    hasher: DefaultHashBuilder,
    shards: Box<[ShardSlot]>,
    shard_mask: usize,
    /// Bytes charged store-wide: linked items plus reservations in flight.
    used: AtomicUsize,
    next_cas: AtomicU64,
    /// The latest `flush_all` moment, unix seconds (0: none).
    flush_at: AtomicU32,
    /// Where eviction in other shards starts next, spreading it around.
    evict_cursor: AtomicUsize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .field("used", &self.used.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store on the system clock.
    pub fn new(config: Config) -> Store {
        Store::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Store {
        Store::with_cas_start(config, clock, 1)
    }

    /// Like [`Store::with_clock`], with the first CAS value to hand out
    /// (0 is taken as 1). A node can put its identity and generation in the
    /// high bits so that a CAS from an earlier life of the node, or from
    /// another node, never matches.
    pub fn with_cas_start(mut config: Config, clock: Arc<dyn Clock>, first_cas: u64) -> Store {
        config.shards = config.shards.clamp(1, 1 << 16).next_power_of_two();
        let shards = (0..config.shards)
            .map(|_| ShardSlot(Mutex::new(Shard::new())))
            .collect();
        Store {
            shard_mask: config.shards - 1,
            config,
            clock,
            hasher: DefaultHashBuilder::default(),
            shards,
            used: AtomicUsize::new(0),
            next_cas: AtomicU64::new(first_cas.max(1)),
            flush_at: AtomicU32::new(0),
            evict_cursor: AtomicUsize::new(0),
        }
    }

    /// The configuration in force (`shards` as rounded).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store clock's time, unix seconds.
    pub fn now(&self) -> u32 {
        self.clock.now()
    }

    /// memcached's size of an item with these key and value lengths and
    /// flags 0, as counted against `-I`: 48 bytes of item header + 8 of CAS +
    /// key + 1 + value + 2. Non-zero flags add 4: see
    /// [`Store::item_size_with_flags`].
    ///
    /// Measured on memcached 1.6.18: with `-I 1m` the largest value `set`
    /// accepts for a 1-byte key is 1,048,516 bytes (250-byte key: 1,048,267);
    /// with `-I 2k`, 1,988.
    pub fn item_size(key_len: usize, value_len: usize) -> usize {
        rules::item_size(key_len, value_len, 0)
    }

    /// [`Store::item_size`] for given flags: memcached stores non-zero flags
    /// in 4 extra bytes, so they shrink the largest value by 4.
    pub fn item_size_with_flags(key_len: usize, value_len: usize, flags: u32) -> usize {
        rules::item_size(key_len, value_len, flags)
    }

    fn hash(&self, key: &[u8]) -> u64 {
        hash_key(&self.hasher, key)
    }

    fn shard_index(&self, hash: u64) -> usize {
        (hash >> 32) as usize & self.shard_mask
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard lock would be a bug in this crate;
        // the shard's structures are still consistent between statements,
        // so keep serving rather than propagate the poison.
        self.shards[index]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn ctx(&self, now: u32) -> Ctx<'_> {
        Ctx {
            hasher: &self.hasher,
            used: &self.used,
            limit: self.config.memory_limit,
            now,
            flush_at: self.flush_at.load(Ordering::Relaxed),
        }
    }

    fn next_cas(&self) -> u64 {
        self.next_cas.fetch_add(1, Ordering::Relaxed)
    }

    /// Lookup; bumps the item in the LRU, marks it fetched and updates its
    /// last access. Expired and flushed items are misses (and are unlinked).
    pub fn get(&self, key: &[u8]) -> Option<Found> {
        self.read_hit(key, |item, last_access, fetched| Found {
            item: item.clone(),
            last_access,
            fetched,
        })
    }

    /// [`Store::get`] for a caller that only reads the item: `read` runs
    /// on the live item under its shard's lock, so no handle on it is
    /// taken (two atomic updates fewer per hit). Keep `read` short: a copy
    /// of a small value, or a `value_bytes()` handle on a large one.
    pub fn get_with<R>(&self, key: &[u8], read: impl FnOnce(&Item) -> R) -> Option<R> {
        self.read_hit(key, |item, _, _| read(item))
    }

    /// The lookup of [`Store::get`], counted as a get hit or miss: `read`
    /// gets the live item under its shard's lock, with the seconds since
    /// its previous access and whether it had been fetched before.
    fn read_hit<R>(&self, key: &[u8], read: impl FnOnce(&Item, u32, bool) -> R) -> Option<R> {
        let hash = self.hash(key);
        let ctx = self.ctx(self.now());
        let mut shard = self.lock(self.shard_index(hash));
        let answer = shard
            .find_live(&ctx, hash, key)
            .and_then(|idx| shard.touch_read(idx, ctx.now))
            .map(|(item, last_access, fetched)| read(item, last_access, fetched));
        match answer {
            Some(_) => shard.stats.get_hits += 1,
            None => shard.stats.get_misses += 1,
        }
        answer
    }

    /// Starts loading into the CPU's cache the item a coming `get` of
    /// `key` will read, without waiting for it. A lookup is a chain of
    /// dependent loads that ends in the item, and each shard lock orders
    /// one key's loads after the last key's; prefetching the items of many
    /// keys first lets their cache misses overlap, so the gets that follow
    /// find them loaded. Only a hint: it changes nothing.
    pub fn prefetch(&self, key: &[u8]) {
        let hash = self.hash(key);
        self.lock(self.shard_index(hash)).prefetch(hash);
    }

    /// [`Store::prefetch`] for many keys, taken shard by shard: each shard
    /// is locked once for all of its keys, so their index lookups overlap
    /// too (one lock per key would queue each key's chain of loads behind
    /// the last key's). For a batch of a few hundred keys.
    pub fn prefetch_many<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        let mut hashes: Vec<u64> = keys.into_iter().map(|key| self.hash(key)).collect();
        if hashes.len() < self.shards.len() {
            // Fewer keys than shards: sorting them costs less than the
            // counting sort's pass over every shard.
            hashes.sort_unstable_by_key(|&h| self.shard_index(h));
        } else {
            hashes = self.by_shard(&hashes);
        }
        for group in hashes.chunk_by(|&a, &b| self.shard_index(a) == self.shard_index(b)) {
            let shard = self.lock(self.shard_index(group[0]));
            group.iter().for_each(|&h| shard.prefetch(h));
        }
    }

    /// `hashes` in shard order, by a counting sort.
    fn by_shard(&self, hashes: &[u64]) -> Vec<u64> {
        // `next[s]` is where shard s's next key goes.
        let mut next = vec![0u32; self.shards.len()];
        for &h in hashes {
            next[self.shard_index(h)] += 1;
        }
        let mut at = 0;
        for n in &mut next {
            (at, *n) = (at + *n, at);
        }
        let mut sorted = vec![0u64; hashes.len()];
        for &h in hashes {
            let slot = &mut next[self.shard_index(h)];
            sorted[*slot as usize] = h;
            *slot += 1;
        }
        sorted
    }

    /// `gat`: a lookup that also sets a new exptime (memcached's rules; a
    /// negative one answers the item and then drops it). Counted as a touch,
    /// as memcached does.
    pub fn get_and_touch(&self, key: &[u8], exptime: i64) -> Option<Found> {
        self.touch_inner(key, exptime)
    }

    /// Sets a live item's exptime; `false` if the key is missing.
    pub fn touch(&self, key: &[u8], exptime: i64) -> bool {
        self.touch_inner(key, exptime).is_some()
    }

    fn touch_inner(&self, key: &[u8], exptime: i64) -> Option<Found> {
        let hash = self.hash(key);
        let ctx = self.ctx(self.now());
        let expiry = expiry_time(exptime, ctx.now);
        let mut shard = self.lock(self.shard_index(hash));
        let Some(idx) = shard.find_live(&ctx, hash, key) else {
            shard.stats.touch_misses += 1;
            return None;
        };
        let found = shard.access(idx, ctx.now)?;
        shard.stats.touch_hits += 1;
        match expiry.field() {
            Some(t) => found.item.set_exptime(t),
            None => {
                found.item.set_exptime(ctx.now.max(1));
                shard.remove(&ctx, idx);
            }
        }
        Some(found)
    }

    /// set/add/replace/append/prepend, with an optional CAS compare (0: none).
    ///
    /// memcached's order: an item over `-I` is refused first (and a `Set`
    /// then also unlinks the key's old value, so a failed set never leaves
    /// stale data); then the mode and CAS decide. A set with a negative or
    /// past exptime answers `Stored` and leaves the key missing.
    ///
    /// # Errors
    /// [`Error::TooLarge`] over `-I`; [`Error::OutOfMemory`] if the item
    /// cannot fit the memory limit even after evicting (a `Set` then also
    /// unlinks the old value, as memcached does).
    pub fn store(
        &self,
        mode: Mode,
        key: &[u8],
        value: &[u8],
        flags: u32,
        exptime: i64,
        cas: u64,
    ) -> Result<StoreOutcome, Error> {
        self.store_tagged(mode, key, value, flags, exptime, cas, || 0)
            .map(|(outcome, _)| outcome)
    }

    /// [`Store::store`], tagging the new item ([`Item::tag`], the server's
    /// classification of the key, so hits need not redo it). A tag depends
    /// only on the key, so an item that replaces a tagged live item of the
    /// same key takes over its tag; `tag` is called (under the shard's lock,
    /// at most once) only when there is none. Returns the new item's tag
    /// beside the outcome: 0 when nothing was stored, or stored untagged.
    #[allow(clippy::too_many_arguments)]
    pub fn store_tagged(
        &self,
        mode: Mode,
        key: &[u8],
        value: &[u8],
        flags: u32,
        exptime: i64,
        cas: u64,
        tag: impl FnOnce() -> u8,
    ) -> Result<(StoreOutcome, u8), Error> {
        let hash = self.hash(key);
        if Self::item_size_with_flags(key.len(), value.len(), flags) > self.config.max_item_size
            || key.len() > MAX_KEY_LEN
            || value.len() > MAX_VALUE_LEN
        {
            if mode == Mode::Set {
                self.remove_hashed(hash, key);
            }
            return Err(Error::TooLarge);
        }
        let now = self.now();
        match mode {
            Mode::Append | Mode::Prepend => Ok(self.concat(mode, hash, key, value, cas, now, tag)),
            Mode::Set | Mode::Add | Mode::Replace => {
                let expiry = expiry_time(exptime, now);
                let result = self.store_whole(mode, hash, key, value, flags, expiry, cas, now, tag);
                if mode == Mode::Set && result == Err(Error::OutOfMemory) {
                    self.remove_hashed(hash, key);
                }
                result
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn store_whole(
        &self,
        mode: Mode,
        hash: u64,
        key: &[u8],
        value: &[u8],
        flags: u32,
        expiry: Expiry,
        cas: u64,
        now: u32,
        tag: impl FnOnce() -> u8,
    ) -> Result<(StoreOutcome, u8), Error> {
        let new_cas = self.next_cas();
        // Built before taking the lock: the copy of a large value does not
        // hold up the shard. An already expired item is never built.
        let mut item = match expiry.field() {
            Some(exptime) => Some(
                item::Item::build(key, &[value], 0, flags, exptime, new_cas, now)
                    .ok_or(Error::OutOfMemory)?,
            ),
            None => None,
        };
        let new_charge = item.as_ref().map_or(0, charge);
        if new_charge > self.config.memory_limit {
            return Err(Error::OutOfMemory);
        }
        let compare_cas = cas != 0 && matches!(mode, Mode::Set | Mode::Replace);
        let index = self.shard_index(hash);
        let mut reserved = 0;
        for _ in 0..MAX_ATTEMPTS {
            let ctx = self.ctx(now);
            let mut shard = self.lock(index);
            let old = shard.find_live(&ctx, hash, key);
            let refused = if compare_cas {
                match old.and_then(|i| shard.item(i)).map(Item::cas) {
                    None => {
                        shard.stats.cas_misses += 1;
                        Some(StoreOutcome::NotFound)
                    }
                    Some(c) if c != cas => {
                        shard.stats.cas_badval += 1;
                        Some(StoreOutcome::Exists)
                    }
                    Some(_) => None,
                }
            } else {
                match (mode, old) {
                    (Mode::Add, Some(i)) => {
                        // memcached promotes the existing item on a failed add.
                        shard.bump(i);
                        if let Some(it) = shard.item(i) {
                            it.set_last_access(now);
                        }
                        Some(StoreOutcome::NotStored)
                    }
                    (Mode::Replace, None) => Some(StoreOutcome::NotStored),
                    _ => None,
                }
            };
            if let Some(outcome) = refused {
                drop(shard);
                ctx.release(reserved);
                return Ok((outcome, 0));
            }
            let Some(new_item) = item.take() else {
                // Born expired: the key ends up missing.
                let _old = old.and_then(|i| shard.remove(&ctx, i));
                shard.stats.total_items += 1;
                shard.stats.cas_hits += u64::from(compare_cas);
                drop(shard);
                ctx.release(reserved);
                return Ok((StoreOutcome::Stored { cas: new_cas }, 0));
            };
            if old.is_none() && !shard.reserve_slot(&self.hasher) {
                drop(shard);
                ctx.release(reserved);
                return Err(Error::OutOfMemory);
            }
            let old_charge = old.and_then(|i| shard.item(i)).map_or(0, charge);
            match shard.fit(
                &ctx,
                new_charge,
                old_charge,
                &mut reserved,
                old.unwrap_or(NIL),
            ) {
                Fit::Done => {
                    let old_tag = old.and_then(|i| shard.item(i)).map_or(0, Item::tag);
                    let new_tag = taken_over(old_tag, tag);
                    new_item.set_tag(new_tag);
                    let _displaced = match old {
                        Some(i) => shard.replace(i, new_item, new_charge, old_charge),
                        None => {
                            shard.insert(&self.hasher, hash, new_item, new_charge);
                            None
                        }
                    };
                    shard.stats.total_items += 1;
                    shard.stats.cas_hits += u64::from(compare_cas);
                    drop(shard);
                    return Ok((StoreOutcome::Stored { cas: new_cas }, new_tag));
                }
                Fit::Elsewhere(need) => {
                    item = Some(new_item);
                    drop(shard);
                    if !self.evict_elsewhere(index, need, now) {
                        ctx.release(reserved);
                        return Err(Error::OutOfMemory);
                    }
                    reserved += need;
                }
            }
        }
        self.used.fetch_sub(reserved, Ordering::Relaxed);
        Err(Error::OutOfMemory)
    }

    /// append/prepend: the new item is built under the lock, from the old
    /// value, keeping its flags and exptime.
    #[allow(clippy::too_many_arguments)]
    fn concat(
        &self,
        mode: Mode,
        hash: u64,
        key: &[u8],
        data: &[u8],
        cas: u64,
        now: u32,
        tag: impl FnOnce() -> u8,
    ) -> (StoreOutcome, u8) {
        let index = self.shard_index(hash);
        let mut reserved = 0;
        for _ in 0..MAX_ATTEMPTS {
            let ctx = self.ctx(now);
            let mut shard = self.lock(index);
            let Some(idx) = shard.find_live(&ctx, hash, key) else {
                drop(shard);
                ctx.release(reserved);
                return (StoreOutcome::NotStored, 0);
            };
            let Some(old) = shard.item(idx) else {
                break;
            };
            if cas != 0 && old.cas() != cas {
                drop(shard);
                ctx.release(reserved);
                return (StoreOutcome::Exists, 0);
            }
            let (old_len, flags, old_tag) = (old.value().len(), old.flags(), old.tag());
            // Over -I (or out of memory) is NOT_STORED here, as in memcached.
            let too_large = old_len.checked_add(data.len()).is_none_or(|len| {
                Self::item_size_with_flags(key.len(), len, flags) > self.config.max_item_size
            });
            let parts: [&[u8]; 2] = match mode {
                Mode::Prepend => [data, old.value()],
                _ => [old.value(), data],
            };
            let new_item = if too_large {
                None
            } else {
                item::Item::build(key, &parts, 0, flags, old.exptime(), self.next_cas(), now)
            };
            let Some(new_item) = new_item else {
                drop(shard);
                ctx.release(reserved);
                return (StoreOutcome::NotStored, 0);
            };
            let old_charge = charge(old);
            let new_charge = charge(&new_item);
            if new_charge > self.config.memory_limit {
                drop(shard);
                ctx.release(reserved);
                return (StoreOutcome::NotStored, 0);
            }
            match shard.fit(&ctx, new_charge, old_charge, &mut reserved, idx) {
                Fit::Done => {
                    let new_tag = taken_over(old_tag, tag);
                    new_item.set_tag(new_tag);
                    let new_cas = new_item.cas();
                    let _displaced = shard.replace(idx, new_item, new_charge, old_charge);
                    shard.stats.total_items += 1;
                    drop(shard);
                    return (StoreOutcome::Stored { cas: new_cas }, new_tag);
                }
                Fit::Elsewhere(need) => {
                    drop(shard);
                    if !self.evict_elsewhere(index, need, now) {
                        ctx.release(reserved);
                        return (StoreOutcome::NotStored, 0);
                    }
                    reserved += need;
                }
            }
        }
        self.used.fetch_sub(reserved, Ordering::Relaxed);
        (StoreOutcome::NotStored, 0)
    }

    /// Unlinks a key, whatever its state. For a value refused as too large
    /// before it was read: memcached then also drops the key's old value.
    /// Returns whether a live item was removed.
    pub fn remove(&self, key: &[u8]) -> bool {
        self.remove_hashed(self.hash(key), key)
    }

    fn remove_hashed(&self, hash: u64, key: &[u8]) -> bool {
        let ctx = self.ctx(self.now());
        let mut shard = self.lock(self.shard_index(hash));
        let removed = shard
            .find_live(&ctx, hash, key)
            .and_then(|idx| shard.remove(&ctx, idx));
        drop(shard);
        removed.is_some()
    }

    /// delete, with an optional CAS compare (0: none).
    pub fn delete(&self, key: &[u8], cas: u64) -> DeleteOutcome {
        let hash = self.hash(key);
        let ctx = self.ctx(self.now());
        let mut shard = self.lock(self.shard_index(hash));
        let Some(idx) = shard.find_live(&ctx, hash, key) else {
            shard.stats.delete_misses += 1;
            return DeleteOutcome::NotFound;
        };
        if cas != 0 && shard.item(idx).map(Item::cas) != Some(cas) {
            // As memcached's meta delete counts it.
            shard.stats.delete_misses += 1;
            return DeleteOutcome::Exists;
        }
        let removed = shard.remove(&ctx, idx);
        shard.stats.delete_hits += 1;
        drop(shard);
        drop(removed);
        DeleteOutcome::Deleted
    }

    /// incr/decr by `delta`: incr wraps modulo 2^64, decr stops at 0. The
    /// result replaces the value padded with spaces to the old length when it
    /// is shorter (memcached rewrites in place: decr "10" by 1 reads "9 "),
    /// with a new CAS and the old flags and exptime.
    ///
    /// `vivify: Some((initial, exptime))` creates a missing key holding
    /// `initial` (the binary protocol's incr/decr; flags 0) and answers
    /// `initial`, without counting a miss.
    ///
    /// # Errors
    /// [`Error::NonNumeric`] if the value is not a number as memcached's
    /// `strtoull` reads it (empty, signs that wrap negative, overflow, junk
    /// right after the digits); [`Error::OutOfMemory`] if the new value
    /// cannot fit; [`Error::TooLarge`] if a vivified item exceeds `-I`.
    pub fn arith(
        &self,
        key: &[u8],
        op: ArithOp,
        delta: u64,
        vivify: Option<(u64, i64)>,
        cas: u64,
    ) -> Result<ArithOutcome, Error> {
        let hash = self.hash(key);
        let now = self.now();
        let index = self.shard_index(hash);
        let mut reserved = 0;
        let mut counted = false;
        for _ in 0..MAX_ATTEMPTS {
            let ctx = self.ctx(now);
            let mut shard = self.lock(index);
            let Some(idx) = shard.find_live(&ctx, hash, key) else {
                let Some((initial, exptime)) = vivify else {
                    match op {
                        ArithOp::Incr => shard.stats.incr_misses += 1,
                        ArithOp::Decr => shard.stats.decr_misses += 1,
                    }
                    drop(shard);
                    ctx.release(reserved);
                    return Ok(ArithOutcome::NotFound);
                };
                drop(shard);
                ctx.release(reserved);
                reserved = 0;
                let digits = initial.to_string();
                match self.store(Mode::Add, key, digits.as_bytes(), 0, exptime, 0)? {
                    StoreOutcome::Stored { cas } => {
                        return Ok(ArithOutcome::Value {
                            value: initial,
                            cas,
                        });
                    }
                    // Someone added the key meanwhile: apply the delta to it.
                    _ => continue,
                }
            };
            let Some(old) = shard.item(idx) else {
                break;
            };
            if old.value().is_empty() {
                drop(shard);
                ctx.release(reserved);
                return Err(Error::NonNumeric);
            }
            if cas != 0 && old.cas() != cas {
                drop(shard);
                ctx.release(reserved);
                return Ok(ArithOutcome::Exists);
            }
            let Some(n) = rules::parse_counter(old.value()) else {
                drop(shard);
                ctx.release(reserved);
                return Err(Error::NonNumeric);
            };
            let value = match op {
                ArithOp::Incr => n.wrapping_add(delta),
                ArithOp::Decr => n.saturating_sub(delta),
            };
            let digits = value.to_string();
            let pad = old.value().len().saturating_sub(digits.len());
            let new_item = item::Item::build(
                key,
                &[digits.as_bytes()],
                pad,
                old.flags(),
                old.exptime(),
                self.next_cas(),
                now,
            );
            let fetched = old.fetched();
            let old_charge = charge(old);
            if !counted {
                counted = true;
                match op {
                    ArithOp::Incr => shard.stats.incr_hits += 1,
                    ArithOp::Decr => shard.stats.decr_hits += 1,
                }
            }
            let Some(new_item) = new_item else {
                drop(shard);
                ctx.release(reserved);
                return Err(Error::OutOfMemory);
            };
            if fetched {
                // The same item, changed in place, in memcached.
                new_item.set_fetched();
            }
            let new_charge = charge(&new_item);
            if new_charge > self.config.memory_limit {
                drop(shard);
                ctx.release(reserved);
                return Err(Error::OutOfMemory);
            }
            match shard.fit(&ctx, new_charge, old_charge, &mut reserved, idx) {
                Fit::Done => {
                    let new_cas = new_item.cas();
                    let _displaced = shard.replace(idx, new_item, new_charge, old_charge);
                    drop(shard);
                    return Ok(ArithOutcome::Value {
                        value,
                        cas: new_cas,
                    });
                }
                Fit::Elsewhere(need) => {
                    drop(shard);
                    if !self.evict_elsewhere(index, need, now) {
                        ctx.release(reserved);
                        return Err(Error::OutOfMemory);
                    }
                    reserved += need;
                }
            }
        }
        self.used.fetch_sub(reserved, Ordering::Relaxed);
        Err(Error::OutOfMemory)
    }

    /// Frees memory in shards other than `home` (whose lock the caller does
    /// not hold) until `need` bytes are reserved, visiting shards round-robin
    /// and taking each one's lock alone. `false` when nothing is left to
    /// evict.
    fn evict_elsewhere(&self, home: usize, need: usize, now: u32) -> bool {
        let n = self.shards.len();
        let ctx = self.ctx(now);
        if n == 1 {
            return ctx.try_reserve(need);
        }
        // Spread the work: each visit frees about an equal share.
        let per_visit = need.div_ceil(n - 1).max(1);
        let start = self.evict_cursor.fetch_add(1, Ordering::Relaxed);
        // Bounded, so a writer competing with others for freed memory gives
        // up (out of memory) rather than spin.
        for _ in 0..MAX_EVICT_ROUNDS {
            let mut progressed = false;
            for k in 0..n {
                let index = (start + k) & self.shard_mask;
                if index == home {
                    continue;
                }
                let mut shard = self.lock(index);
                let mut freed = 0;
                while freed < per_visit {
                    match shard.evict_one(&ctx, NIL) {
                        Some(bytes) => freed += bytes,
                        None => break,
                    }
                }
                drop(shard);
                progressed |= freed > 0;
                if ctx.try_reserve(need) {
                    return true;
                }
            }
            if !progressed {
                return false;
            }
        }
        false
    }

    /// `flush_all [delay]`: items stored before the flush moment are invalid
    /// from that moment on; items stored at or after it survive. `delay <= 0`
    /// is now; otherwise memcached's exptime rules give the moment (a
    /// relative delay, or a unix time; one already past means now). The
    /// latest flush replaces any pending one, as in memcached. A flush whose
    /// moment is now also empties every shard at once, freeing the memory.
    ///
    /// Two small differences from memcached's arithmetic: memcached takes
    /// `moment - 1` as its cut-off, so a delayed flush bites one second
    /// early (and `flush_all 1` acts at once); and a unix time already past
    /// disables flushing there (`realtime()` returns 1, read as "none"),
    /// where here it flushes now.
    pub fn flush_all(&self, delay: i64) {
        let now = self.now();
        let moment = if delay <= 0 {
            now
        } else {
            match expiry_time(delay, now) {
                Expiry::At(t) => t,
                Expiry::Never | Expiry::Expired => now,
            }
        };
        self.flush_at.store(moment.max(1), Ordering::Relaxed);
        if moment > now {
            return;
        }
        for index in 0..self.shards.len() {
            let (table, slab, bytes) = self.lock(index).take_all();
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            // The items are freed here, outside the lock.
            drop(table);
            drop(slab);
        }
    }

    /// Unlinks every item whose key `keep` refuses, one shard at a time,
    /// and returns how many live items went. For a node whose ring moved
    /// keys to other owners: a copy it no longer owns must not be served
    /// again if ownership comes back. Each shard's lock is held while its
    /// items are looked at.
    pub fn retain(&self, keep: impl Fn(&[u8]) -> bool) -> usize {
        let ctx = self.ctx(self.now());
        let mut keep = keep;
        (0..self.shards.len())
            .map(|index| self.lock(index).retain(&ctx, &mut keep))
            .sum()
    }

    /// Background expiry: looks at up to `budget` slab slots in each shard,
    /// resuming where the previous sweep stopped, and unlinks the expired and
    /// flushed items. Returns how many it reclaimed. A server calls this
    /// every second or so; each shard's lock is held for one budget's worth.
    pub fn sweep(&self, budget: usize) -> usize {
        let ctx = self.ctx(self.now());
        (0..self.shards.len())
            .map(|index| self.lock(index).sweep(&ctx, budget))
            .sum()
    }

    /// The store's counters and gauges, summed over shards.
    pub fn stats(&self) -> Stats {
        let mut total = Stats {
            limit_maxbytes: self.config.memory_limit as u64,
            ..Stats::default()
        };
        for index in 0..self.shards.len() {
            let shard = self.lock(index);
            let mut s = shard.stats;
            s.curr_items = shard.len as u64;
            s.bytes = shard.bytes as u64;
            drop(shard);
            total.add(&s);
        }
        total
    }
}

#[cfg(test)]
mod tests;
