//! Hot keys: the approximately most frequent keys of a stream, in bounded
//! memory, cheap enough to feed from every request.
//!
//! # Algorithm
//! Space-Saving (Metwally, Agrawal and El Abbadi, "Efficient computation of
//! frequent and top-k elements in data streams", ICDT 2005). `m` counters
//! each hold a key, a count and an error. A tracked key's counter is
//! incremented; an untracked key takes over the counter with the smallest
//! count `min`, which becomes `min + 1` with error `min`. The counters sit
//! in a min-heap (indexed, so a counter knows its place) and a hash index,
//! so a record costs O(1) expected plus O(log m) for the heap.
//!
//! # Sharing between threads
//! The counters are split into shards (a power of two, at most 16), each a
//! `Mutex` on its own cache line; a key's hash picks its shard, so every key
//! lives in exactly one shard and the shards are
//! independent Space-Saving summaries of disjoint sub-streams. Critical
//! sections are a probe, an increment and a short sift. The hash is
//! foldhash (hashbrown's default hasher) with a random seed per instance,
//! computed once per record and used for both the shard and its index. It
//! is fast rather than cryptographic; a client able to find colliding keys
//! could at worst lengthen one shard's probes (a shard holds at most
//! `capacity / shards` keys) or crowd one shard, raising that shard's error
//! bound — never grow memory. Optionally only one
//! record in `n` is taken ([`TopKConfig::sample_one_in`]), chosen by a
//! per-thread random generator, and reported counts are multiplied by `n`.
//!
//! # Error bounds
//! Without sampling, for a key reported with `count` and `error`, its true
//! number of records `f` since the last reset satisfies
//! `count - error <= f <= count`, and `error <= N_s / m_s`, where `N_s` is
//! the number of records in the key's shard and `m_s` the shard's counters
//! ([`TopK::error_bound`] reports the largest such bound). Every key with
//! `f > N_s / m_s` is tracked, so it is reported when asked for enough
//! keys. With hashing spreading keys evenly, `N_s / m_s` is close to the
//! classic `N / m`: with `capacity = 1000`, a key that makes up more than
//! about 0.1% of the records is never missed. With sampling, the bounds hold
//! for the sampled stream (in sampled units, scaled by `n`), plus the
//! sampling error of each count: a relative standard deviation of about
//! `sqrt(n / f)`.
//!
//! # Cost
//! About 360 instructions per record on a Zipf stream of Django-shaped keys
//! with 1000 counters, ~100 at 1 in 8 sampled, ~60 at 1 in 64 (callgrind;
//! `examples/bench.rs`). A very hot key always lands in the same shard, so
//! threads recording it at once contend on that shard's lock: sample on a
//! busy server.
//!
//! # Memory
//! At most `capacity` rounded up to a multiple of the shard count counters,
//! each holding at most [`MAX_KEY_LEN`] key bytes (a longer key is recorded
//! by its first `MAX_KEY_LEN` bytes): a counter's key buffer is reused when
//! another key takes the counter over, so after warming up a record
//! allocates nothing. [`TopK::memory_bytes`] reports the current figure.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::privacy::Privacy;

/// Longest key recorded: memcached's key limit.
pub const MAX_KEY_LEN: usize = 250;
/// Most shards an instance uses.
pub const MAX_SHARDS: usize = 16;

/// How a [`TopK`] is sized and shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopKConfig {
    /// How many keys [`TopK::top_k`] reports. Default 10.
    pub k: usize,
    /// Counters in all: what bounds memory and error. Should be several
    /// times `k`; default 1000.
    pub capacity: usize,
    /// Shards; rounded down to a power of two, clamped to `1..=MAX_SHARDS`
    /// and to at most one per `k` counters (each shard must be able to hold
    /// every hot key that hashes to it). Default 16.
    pub shards: usize,
    /// Take one record in this many (1: all). Default 1.
    pub sample_one_in: u32,
}

impl Default for TopKConfig {
    fn default() -> Self {
        TopKConfig {
            k: 10,
            capacity: 1000,
            shards: MAX_SHARDS,
            sample_one_in: 1,
        }
    }
}

/// One reported key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotKey<K> {
    /// The key: raw bytes from [`TopK::top`], shown per [`Privacy`] from
    /// [`TopK::report`].
    pub key: K,
    /// Estimated records of the key since the last reset; never below the
    /// true figure (without sampling).
    pub count: u64,
    /// How much `count` may overestimate: the true figure is at least
    /// `count - error` (without sampling).
    pub error: u64,
}

/// An approximate top-K of the keys recorded. `Sync`: one instance is
/// shared by every connection.
pub struct TopK {
    k: usize,
    sample_one_in: u32,
    /// Accept a sampled record when the thread's next random number is
    /// below this.
    sample_below: u64,
    shard_mask: u64,
    hasher: DefaultHashBuilder,
    shards: Box<[Padded<Mutex<Shard>>]>,
}

#[repr(align(64))]
struct Padded<T>(T);

struct Shard {
    capacity: usize,
    counters: Vec<Counter>,
    /// Min-heap of indices into `counters`, by count.
    heap: Vec<u32>,
    /// Index from a key's hash to its counter.
    index: HashTable<u32>,
    /// Records into this shard since the last reset.
    records: u64,
}

struct Counter {
    key: Vec<u8>,
    hash: u64,
    count: u64,
    error: u64,
    /// This counter's place in `heap`.
    pos: u32,
}

impl TopK {
    /// A top-`k` over `capacity` counters, with the default sharding and no
    /// sampling.
    pub fn new(k: usize, capacity: usize) -> TopK {
        TopK::with_config(TopKConfig {
            k,
            capacity,
            ..TopKConfig::default()
        })
    }

    /// A top-K sized and shared as `config` says.
    pub fn with_config(config: TopKConfig) -> TopK {
        let capacity = config.capacity.max(1);
        let by_k = (capacity / config.k.max(1)).max(1);
        let shards = config.shards.clamp(1, MAX_SHARDS).min(by_k);
        // Round down to a power of two.
        let shards = 1usize << (usize::BITS - 1 - shards.leading_zeros());
        let per_shard = capacity.div_ceil(shards);
        let sample_one_in = config.sample_one_in.max(1);
        TopK {
            k: config.k,
            sample_one_in,
            sample_below: u64::MAX / u64::from(sample_one_in),
            shard_mask: shards as u64 - 1,
            hasher: DefaultHashBuilder::default(),
            shards: (0..shards)
                .map(|_| Padded(Mutex::new(Shard::new(per_shard))))
                .collect(),
        }
    }

    /// Count one occurrence of `key`.
    pub fn record(&self, key: &[u8]) {
        if self.sample_one_in > 1 && next_random() >= self.sample_below {
            return;
        }
        let key = &key[..key.len().min(MAX_KEY_LEN)];
        let hash = self.hasher.hash_one(key);
        // Bits 32.. pick the shard: the index uses the low bits for its
        // buckets and the top 7 for its tags.
        let shard = ((hash >> 32) & self.shard_mask) as usize;
        lock(&self.shards[shard].0).record(key, hash);
    }

    /// The `n` keys with the highest counts, highest first (ties by key),
    /// as raw bytes. For the server's own use; show keys with
    /// [`TopK::report`].
    pub fn top(&self, n: usize) -> Vec<HotKey<Vec<u8>>> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(&shard.0);
            let scale = u64::from(self.sample_one_in);
            all.extend(shard.counters.iter().map(|c| HotKey {
                key: c.key.clone(),
                count: c.count * scale,
                error: c.error * scale,
            }));
        }
        all.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        all.truncate(n);
        all
    }

    /// The `k` keys this instance was built to report.
    pub fn top_k(&self) -> Vec<HotKey<Vec<u8>>> {
        self.top(self.k)
    }

    /// The `n` hottest keys, shown as `privacy` says: what `stats` and the
    /// HTTP page print.
    pub fn report(&self, n: usize, privacy: &Privacy) -> Vec<HotKey<String>> {
        self.top(n)
            .into_iter()
            .map(|h| HotKey {
                key: privacy.render(&h.key),
                count: h.count,
                error: h.error,
            })
            .collect()
    }

    /// Forget everything, e.g. at the start of a reporting period. Keeps the
    /// memory already allocated, which stays within the bound.
    pub fn reset(&self) {
        for shard in self.shards.iter() {
            lock(&shard.0).clear();
        }
    }

    /// Records counted since the last reset (scaled when sampling).
    pub fn records(&self) -> u64 {
        let sampled: u64 = self.shards.iter().map(|s| lock(&s.0).records).sum();
        sampled * u64::from(self.sample_one_in)
    }

    /// The largest overestimate any reported count may carry now: the
    /// largest `N_s / m_s` over shards, scaled when sampling (0 while no
    /// shard has been full).
    pub fn error_bound(&self) -> u64 {
        let max = self
            .shards
            .iter()
            .map(|s| {
                let s = lock(&s.0);
                if s.counters.len() < s.capacity {
                    0
                } else {
                    s.records / s.capacity as u64
                }
            })
            .max()
            .unwrap_or(0);
        max * u64::from(self.sample_one_in)
    }

    /// Counters in all, over every shard.
    pub fn capacity(&self) -> usize {
        self.shards.len() * lock(&self.shards[0].0).capacity
    }

    /// Shards in use.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Heap bytes held now (counters, key buffers, heaps and indexes):
    /// never more than about `capacity * (MAX_KEY_LEN + 80)` plus the
    /// instance itself.
    pub fn memory_bytes(&self) -> usize {
        let mut total = std::mem::size_of_val(&*self.shards);
        for shard in self.shards.iter() {
            let s = lock(&shard.0);
            total += s.counters.capacity() * std::mem::size_of::<Counter>()
                + s.counters.iter().map(|c| c.key.capacity()).sum::<usize>()
                + s.heap.capacity() * 4
                + s.index.allocation_size();
        }
        total
    }
}

impl std::fmt::Debug for TopK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopK")
            .field("k", &self.k)
            .field("capacity", &self.capacity())
            .field("shards", &self.shards.len())
            .field("sample_one_in", &self.sample_one_in)
            .finish_non_exhaustive()
    }
}

/// A poisoned shard only means a panic elsewhere mid-update; the summary is
/// still a valid (if slightly off) estimate, so keep counting.
fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shard {
    fn new(capacity: usize) -> Shard {
        Shard {
            capacity,
            counters: Vec::with_capacity(capacity),
            heap: Vec::with_capacity(capacity),
            index: HashTable::with_capacity(capacity),
            records: 0,
        }
    }

    fn clear(&mut self) {
        self.counters.clear();
        self.heap.clear();
        self.index.clear();
        self.records = 0;
    }

    fn record(&mut self, key: &[u8], hash: u64) {
        self.records += 1;
        let counters = &self.counters;
        let found = self
            .index
            .find(hash, |&i| {
                let c = &counters[i as usize];
                c.hash == hash && c.key == key
            })
            .copied();
        if let Some(i) = found {
            let c = &mut self.counters[i as usize];
            c.count += 1;
            let pos = c.pos as usize;
            self.sift_down(pos);
        } else if self.counters.len() < self.capacity {
            let i = self.counters.len() as u32;
            let pos = self.heap.len();
            self.counters.push(Counter {
                key: key.to_vec(),
                hash,
                count: 1,
                error: 0,
                pos: pos as u32,
            });
            self.heap.push(i);
            let counters = &self.counters;
            self.index
                .insert_unique(hash, i, |&j| counters[j as usize].hash);
            self.sift_up(pos);
        } else {
            // Take over the smallest counter.
            let i = self.heap[0];
            let old = self.counters[i as usize].hash;
            if let Ok(entry) = self.index.find_entry(old, |&j| j == i) {
                entry.remove();
            }
            let c = &mut self.counters[i as usize];
            c.key.clear();
            // Exact: a doubling buffer could hold twice `MAX_KEY_LEN`.
            c.key.reserve_exact(key.len());
            c.key.extend_from_slice(key);
            c.hash = hash;
            c.error = c.count;
            c.count += 1;
            let counters = &self.counters;
            self.index
                .insert_unique(hash, i, |&j| counters[j as usize].hash);
            self.sift_down(0);
        }
    }

    fn count_at(&self, pos: usize) -> u64 {
        self.counters[self.heap[pos] as usize].count
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.counters[self.heap[a] as usize].pos = a as u32;
        self.counters[self.heap[b] as usize].pos = b as u32;
    }

    fn sift_down(&mut self, mut pos: usize) {
        let len = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                return;
            }
            let right = left + 1;
            let child = if right < len && self.count_at(right) < self.count_at(left) {
                right
            } else {
                left
            };
            if self.count_at(child) >= self.count_at(pos) {
                return;
            }
            self.swap(pos, child);
            pos = child;
        }
    }

    fn sift_up(&mut self, mut pos: usize) {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.count_at(parent) <= self.count_at(pos) {
                return;
            }
            self.swap(pos, parent);
            pos = parent;
        }
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(0u8) | 1);
}

/// xorshift64*: a few instructions, per thread, good enough to sample.
fn next_random() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A deterministic Zipf(s)-like stream over `n` keys: key `i` (from 1)
    /// has weight `1 / i^s`, drawn by inverse CDF from a fixed generator.
    fn zipf_stream(n: usize, s: f64, len: usize, seed: u64) -> Vec<Vec<u8>> {
        let weights: Vec<f64> = (1..=n).map(|i| 1.0 / (i as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for w in &weights {
            acc += w / total;
            cdf.push(acc);
        }
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                let u = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
                let i = cdf.partition_point(|&c| c < u).min(n - 1);
                format!(":1:item_{i}").into_bytes()
            })
            .collect()
    }

    fn exact(stream: &[Vec<u8>]) -> Vec<(Vec<u8>, u64)> {
        let mut counts: HashMap<&[u8], u64> = HashMap::new();
        for k in stream {
            *counts.entry(k).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().map(|(k, c)| (k.to_vec(), c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    #[test]
    fn small_streams_are_exact() {
        let top = TopK::new(3, 100);
        for (key, times) in [(&b"a"[..], 5), (b"b", 3), (b"c", 9), (b"d", 1)] {
            for _ in 0..times {
                top.record(key);
            }
        }
        let got: Vec<_> = top
            .top(3)
            .into_iter()
            .map(|h| (h.key, h.count, h.error))
            .collect();
        assert_eq!(
            got,
            vec![
                (b"c".to_vec(), 9, 0),
                (b"a".to_vec(), 5, 0),
                (b"b".to_vec(), 3, 0)
            ]
        );
        assert_eq!(top.top_k().len(), 3);
        assert_eq!(top.records(), 18);
        assert_eq!(top.error_bound(), 0);
        top.reset();
        assert!(top.top(10).is_empty());
        assert_eq!(top.records(), 0);
    }

    #[test]
    fn zipf_top_items_are_found_within_the_bound() {
        for (seed, shards, s) in [(1, 1, 1.0), (2, 4, 1.0), (3, 16, 1.1), (4, 8, 0.8)] {
            let stream = zipf_stream(50_000, s, 200_000, seed);
            let truth = exact(&stream);
            let truth_map: HashMap<_, _> = truth.iter().cloned().collect();
            let top = TopK::with_config(TopKConfig {
                k: 10,
                capacity: 1000,
                shards,
                sample_one_in: 1,
            });
            for k in &stream {
                top.record(k);
            }
            let bound = top.error_bound();
            assert!(bound > 0);
            let reported = top.top(10);
            for h in top.top(1000) {
                let f = truth_map[&h.key];
                // count - error <= f <= count, error <= bound.
                assert!(h.count >= f, "{h:?} f={f}");
                assert!(h.count - h.error <= f, "{h:?} f={f}");
                assert!(h.error <= bound, "{h:?} bound={bound}");
            }
            // The true top 10 fill the report unless overestimates push a
            // near neighbour in: any key whose true count beats the 10th
            // reported count is reported, and every reported key's true
            // count is within the bound of the true 10th.
            let tenth = reported[9].count;
            for (key, f) in &truth[..10] {
                if *f > tenth {
                    assert!(reported.iter().any(|h| &h.key == key), "missing {key:?}");
                }
            }
            for h in &reported {
                assert!(truth_map[&h.key] + bound >= truth[9].1, "{h:?}");
            }
            if shards == 1 {
                // Deterministic (one shard): the exact top 10.
                let mut got: Vec<_> = reported.iter().map(|h| h.key.clone()).collect();
                let mut want: Vec<_> = truth[..10].iter().map(|(k, _)| k.clone()).collect();
                got.sort();
                want.sort();
                assert_eq!(got, want, "seed {seed}");
            }
            for (key, f) in &truth {
                if *f > bound {
                    assert!(top.top(1000).iter().any(|h| &h.key == key), "lost {key:?}");
                }
            }
        }
    }

    #[test]
    fn memory_is_bounded_under_many_distinct_keys() {
        let top = TopK::new(10, 256);
        let cap = top.capacity();
        assert!((256..256 + MAX_SHARDS).contains(&cap), "{cap}");
        let long = vec![b'x'; 1000];
        top.record(&long);
        let mut peak = 0;
        for i in 0..300_000u32 {
            top.record(format!("distinct-{i}-{}", "y".repeat((i % 200) as usize)).as_bytes());
            if i % 10_000 == 0 {
                peak = peak.max(top.memory_bytes());
            }
        }
        peak = peak.max(top.memory_bytes());
        let tracked = top.top(usize::MAX);
        assert!(tracked.len() <= cap);
        assert!(tracked.iter().all(|h| h.key.len() <= MAX_KEY_LEN));
        assert!(peak <= cap * (MAX_KEY_LEN + 80) + 4096, "{peak}");
        // A long key is recorded by its first MAX_KEY_LEN bytes.
        let top = TopK::new(1, 10);
        top.record(&long);
        assert_eq!(top.top(1)[0].key.len(), MAX_KEY_LEN);
    }

    #[test]
    fn heavy_hitter_survives_a_flood_of_new_keys() {
        let top = TopK::with_config(TopKConfig {
            k: 1,
            capacity: 64,
            shards: 1,
            sample_one_in: 1,
        });
        for i in 0..100_000u32 {
            top.record(format!("noise{i}").as_bytes());
            if i % 10 == 0 {
                top.record(b"hot");
            }
        }
        let best = &top.top(1)[0];
        assert_eq!(best.key, b"hot");
        assert!(best.count >= 10_000 && best.count - best.error <= 10_000);
    }

    #[test]
    fn threads_share_one_instance() {
        let top = TopK::new(5, 500);
        std::thread::scope(|s| {
            for t in 0..4 {
                let top = &top;
                s.spawn(move || {
                    for i in 0..20_000u32 {
                        top.record(format!("k{}", i % 7).as_bytes());
                        top.record(format!("t{t}-{i}").as_bytes());
                    }
                });
            }
        });
        assert_eq!(top.records(), 160_000);
        let top5 = top.top(5);
        for h in &top5 {
            assert!(h.key.starts_with(b"k"), "{h:?}");
            assert!(h.count >= 80_000 / 7);
        }
    }

    #[test]
    fn sampling_scales_counts() {
        let top = TopK::with_config(TopKConfig {
            k: 2,
            capacity: 100,
            shards: 4,
            sample_one_in: 8,
        });
        for i in 0..200_000u32 {
            top.record(if i % 4 == 0 { b"a" } else { b"b" });
        }
        let got = top.top(2);
        assert_eq!(got[0].key, b"b");
        assert_eq!(got[1].key, b"a");
        // 150k and 50k, within 5% (relative sd ~ sqrt(8/50k) ~ 1.3%).
        assert!(got[0].count.abs_diff(150_000) < 7_500, "{got:?}");
        assert!(got[1].count.abs_diff(50_000) < 2_500, "{got:?}");
        assert!(top.records().abs_diff(200_000) < 10_000);
    }

    #[test]
    fn report_applies_privacy() {
        let top = TopK::new(2, 10);
        top.record(b":1:user_42");
        top.record(b":1:user_42");
        top.record(b"\xffraw");
        let plain = top.report(2, &Privacy::Plain);
        assert_eq!(plain[0].key, ":1:user_42");
        assert_eq!(plain[1].key, "\\xffraw");
        assert_eq!(top.report(1, &Privacy::Truncate(4))[0].key, ":1:u…");
        let hashed = top.report(1, &Privacy::Hash(crate::HashKey::from_bytes([1; 16])));
        assert!(hashed[0].key.starts_with("hash:") && hashed[0].key.len() == 21);
        assert_eq!(hashed[0].count, 2);
    }

    #[test]
    fn shard_count_follows_the_config() {
        let shards = |capacity, k, shards| {
            TopK::with_config(TopKConfig {
                k,
                capacity,
                shards,
                sample_one_in: 1,
            })
            .shards()
        };
        assert_eq!(shards(1000, 10, 16), 16);
        assert_eq!(shards(1000, 10, 12), 8);
        assert_eq!(shards(100, 10, 16), 8);
        assert_eq!(shards(10, 10, 16), 1);
        assert_eq!(shards(0, 0, 0), 1);
    }
}
