//! Behaviour tests for the store, table-driven where the cases are many.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;
use crate::shard::{INDEX_SHARE, malloc_chunk};

const T0: u32 = 1_700_000_000;

fn config(memory_limit: usize, max_item_size: usize, shards: usize) -> Config {
    Config {
        memory_limit,
        max_item_size,
        shards,
    }
}

fn new_store(config: Config) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    (Store::with_clock(config, clock.clone()), clock)
}

fn default_store() -> (Store, Arc<ManualClock>) {
    new_store(Config::default())
}

fn set(s: &Store, key: &str, value: &str) -> u64 {
    set_ext(s, key, value, 0, 0)
}

fn set_ext(s: &Store, key: &str, value: &str, flags: u32, exptime: i64) -> u64 {
    match s.store(
        Mode::Set,
        key.as_bytes(),
        value.as_bytes(),
        flags,
        exptime,
        0,
    ) {
        Ok(StoreOutcome::Stored { cas }) => cas,
        other => panic!("set {key}: {other:?}"),
    }
}

fn value(s: &Store, key: &str) -> Option<String> {
    s.get(key.as_bytes())
        .map(|f| String::from_utf8_lossy(f.item.value()).into_owned())
}

/// Accounting invariants: the global charge equals the shards' (no leaked
/// reservation once writers are done), stays within the limit, and every
/// shard's LRU, table and slab agree.
fn check_invariants(s: &Store) {
    let used = s.used.load(Ordering::Relaxed);
    let stats = s.stats();
    assert_eq!(
        used as u64, stats.bytes,
        "global charge matches the shards'"
    );
    assert!(
        used <= s.config.memory_limit,
        "{used} > {}",
        s.config.memory_limit
    );
    for i in 0..s.shards.len() {
        let shard = s.lock(i);
        let keys = shard.lru_keys();
        assert_eq!(keys.len(), shard.len);
    }
}

/// What one item with these lengths is charged.
fn charge_for(key_len: usize, value_len: usize) -> usize {
    malloc_chunk(32 + key_len + value_len) + INDEX_SHARE
}

#[test]
fn config_is_sanitised() {
    let mut cases = vec![(0, 1), (1, 1), (3, 4), (64, 64), (100, 128)];
    if !cfg!(miri) {
        cases.push((1 << 20, 1 << 16));
    }
    for (asked, got) in cases {
        let s = Store::new(config(1 << 20, 1 << 20, asked));
        assert_eq!(s.config().shards, got, "asked {asked}");
        assert_eq!(s.shards.len(), got);
    }
    let d = Config::default();
    assert_eq!(
        (d.memory_limit, d.max_item_size, d.shards),
        (64 << 20, 1 << 20, 64)
    );
}

#[test]
fn set_then_get() {
    let (s, clock) = default_store();
    let cas = set_ext(&s, "k", "hello", 42, 0);
    assert_ne!(cas, 0);
    clock.advance(5);
    let f = s.get(b"k").unwrap();
    assert_eq!(f.item.key(), b"k");
    assert_eq!(f.item.value(), b"hello");
    assert_eq!(f.item.flags(), 42);
    assert_eq!(f.item.cas(), cas);
    assert_eq!(f.item.exptime(), 0);
    assert_eq!(f.item.ttl(s.now()), -1);
    assert_eq!((f.last_access, f.fetched), (5, false));
    clock.advance(2);
    let f = s.get(b"k").unwrap();
    assert_eq!((f.last_access, f.fetched), (2, true));
    assert!(s.get(b"missing").is_none());
    let st = s.stats();
    assert_eq!(
        (st.get_hits, st.get_misses, st.curr_items, st.total_items),
        (2, 1, 1, 1)
    );
    assert_eq!(st.bytes as usize, charge_for(1, 5));
    assert_eq!(st.limit_maxbytes, 64 << 20);
}

#[test]
fn every_store_gets_a_fresh_cas() {
    let (s, _) = default_store();
    let mut seen = std::collections::HashSet::new();
    for i in 0..100 {
        assert!(seen.insert(set(&s, &format!("k{}", i % 7), "v")));
    }
    let a = s.arith(b"n", ArithOp::Incr, 1, Some((1, 0)), 0).unwrap();
    let ArithOutcome::Value { cas, .. } = a else {
        panic!()
    };
    assert!(seen.insert(cas));
}

#[test]
fn store_with_cas_start() {
    let s = Store::with_cas_start(Config::default(), Arc::new(ManualClock::new(T0)), 7 << 48);
    assert_eq!(set(&s, "k", "v"), 7 << 48);
    let s = Store::with_cas_start(Config::default(), Arc::new(ManualClock::new(T0)), 0);
    assert_eq!(set(&s, "k", "v"), 1);
}

#[test]
fn expiry() {
    // (exptime given at T0, seconds later, still visible?)
    let cases: &[(i64, u32, bool)] = &[
        (0, 100_000_000, true),
        (1, 0, true),
        (1, 1, false),
        (10, 9, true),
        (10, 10, false),
        (-1, 0, false),
        (-1000, 0, false),
        // 30 days is still relative...
        (2_592_000, 2_591_999, true),
        (2_592_000, 2_592_000, false),
        // ...one more second is an absolute time, in 1970.
        (2_592_001, 0, false),
        (i64::from(T0) + 100, 99, true),
        (i64::from(T0) + 100, 100, false),
        (i64::from(T0), 0, false),
        (i64::from(T0) - 1, 0, false),
    ];
    for &(exptime, later, visible) in cases {
        let (s, clock) = default_store();
        assert!(matches!(
            s.store(Mode::Set, b"k", b"v", 0, exptime, 0),
            Ok(StoreOutcome::Stored { .. })
        ));
        clock.advance(later);
        assert_eq!(
            s.get(b"k").is_some(),
            visible,
            "exptime {exptime} after {later}s"
        );
        let st = s.stats();
        if !visible {
            assert_eq!(st.curr_items, 0, "a dead item is unlinked: {exptime}");
            assert_eq!(st.bytes, 0);
            assert_eq!(st.get_misses, 1);
        }
    }
}

#[test]
fn get_with_reads_a_live_item_as_get_does_and_counts_alike() {
    let (s, clock) = default_store();
    set_ext(&s, "k", "hello", 7, 10);
    let read = |item: &Item| (item.value().to_vec(), item.flags());
    assert_eq!(s.get_with(b"k", read), Some((b"hello".to_vec(), 7)));
    // It was a read hit: the next lookup sees the item fetched and its
    // last access moved.
    clock.advance(3);
    let f = s.get(b"k").unwrap();
    assert_eq!((f.last_access, f.fetched), (3, true));
    assert_eq!(s.get_with(b"missing", read), None);
    clock.advance(10);
    assert_eq!(s.get_with(b"k", read), None, "expired");
    let st = s.stats();
    assert_eq!(
        (st.get_hits, st.get_misses, st.get_expired, st.curr_items),
        (2, 2, 1, 0)
    );
}

#[test]
fn expired_lookup_counts_get_expired() {
    let (s, clock) = default_store();
    set_ext(&s, "k", "v", 0, 10);
    let f = s.get(b"k").unwrap();
    assert_eq!(f.item.exptime(), T0 + 10);
    assert_eq!(f.item.ttl(T0 + 4), 6);
    clock.advance(10);
    assert!(s.get(b"k").is_none());
    let st = s.stats();
    assert_eq!(
        (st.get_expired, st.get_misses, st.get_hits, st.curr_items),
        (1, 1, 1, 0)
    );
}

#[test]
fn negative_exptime_stores_nothing_visible() {
    let (s, _) = default_store();
    set(&s, "k", "old");
    for mode in [Mode::Set, Mode::Replace] {
        set(&s, "k", "old");
        let r = s.store(mode, b"k", b"new", 0, -1, 0);
        assert!(
            matches!(r, Ok(StoreOutcome::Stored { .. })),
            "{mode:?}: {r:?}"
        );
        assert_eq!(value(&s, "k"), None, "{mode:?} removed the old value");
    }
    let r = s.store(Mode::Add, b"fresh", b"v", 0, -1, 0);
    assert!(matches!(r, Ok(StoreOutcome::Stored { .. })));
    assert_eq!(value(&s, "fresh"), None);
    // ...so a later add succeeds, as in memcached.
    assert!(matches!(
        s.store(Mode::Add, b"fresh", b"v", 0, 0, 0),
        Ok(StoreOutcome::Stored { .. })
    ));
    check_invariants(&s);
}

#[test]
fn store_modes() {
    use StoreOutcome::*;
    // (mode, key exists before?, expected outcome, value after, flags after)
    let cases: &[(Mode, bool, StoreOutcome, Option<&str>, u32)] = &[
        (Mode::Set, false, Stored { cas: 0 }, Some("new"), 9),
        (Mode::Set, true, Stored { cas: 0 }, Some("new"), 9),
        (Mode::Add, false, Stored { cas: 0 }, Some("new"), 9),
        (Mode::Add, true, NotStored, Some("old"), 5),
        (Mode::Replace, false, NotStored, None, 0),
        (Mode::Replace, true, Stored { cas: 0 }, Some("new"), 9),
        (Mode::Append, false, NotStored, None, 0),
        (Mode::Append, true, Stored { cas: 0 }, Some("oldnew"), 5),
        (Mode::Prepend, false, NotStored, None, 0),
        (Mode::Prepend, true, Stored { cas: 0 }, Some("newold"), 5),
    ];
    for &(mode, exists, want, after, flags) in cases {
        let (s, clock) = default_store();
        if exists {
            set_ext(&s, "k", "old", 5, 100);
        }
        let got = s.store(mode, b"k", b"new", 9, 1000, 0).unwrap();
        let got = match got {
            Stored { cas } => {
                assert_ne!(cas, 0);
                Stored { cas: 0 }
            }
            o => o,
        };
        assert_eq!(got, want, "{mode:?} exists={exists}");
        let f = s.get(b"k");
        assert_eq!(
            f.as_ref()
                .map(|f| String::from_utf8_lossy(f.item.value()).into_owned())
                .as_deref(),
            after,
            "{mode:?} exists={exists}"
        );
        if let Some(f) = f {
            assert_eq!(f.item.flags(), flags, "{mode:?} exists={exists}");
            // append/prepend keep the old exptime; the others set it.
            let exptime = match (mode, exists) {
                (Mode::Append | Mode::Prepend, _) | (Mode::Add, true) => T0 + 100,
                _ => T0 + 1000,
            };
            assert_eq!(f.item.exptime(), exptime, "{mode:?} exists={exists}");
            clock.advance(100);
            assert_eq!(s.get(b"k").is_some(), exptime > T0 + 100);
        }
        check_invariants(&s);
    }
}

#[test]
fn append_and_prepend_of_an_expired_item_are_not_stored() {
    let (s, clock) = default_store();
    set_ext(&s, "k", "old", 0, 10);
    clock.advance(10);
    for mode in [Mode::Append, Mode::Prepend, Mode::Replace] {
        assert_eq!(
            s.store(mode, b"k", b"x", 0, 0, 0),
            Ok(StoreOutcome::NotStored)
        );
    }
    assert_eq!(s.stats().get_expired, 1);
}

#[test]
fn a_tag_is_worked_out_once_per_key_and_taken_over_by_replacements() {
    let (s, clock) = default_store();
    let calls = std::cell::Cell::new(0);
    let tagger = |t: u8| {
        let calls = &calls;
        move || {
            calls.set(calls.get() + 1);
            t
        }
    };
    let store = |mode, key: &[u8], exptime, t| {
        s.store_tagged(mode, key, b"v", 0, exptime, 0, tagger(t))
            .map(|(outcome, tag)| (matches!(outcome, StoreOutcome::Stored { .. }), tag))
    };
    let tag_of = |key: &[u8]| s.get(key).map(|f| f.item.tag());

    // A new key asks for its tag; every kind of replacement keeps it.
    assert_eq!(store(Mode::Set, b"k", 0, 7), Ok((true, 7)));
    assert_eq!(calls.get(), 1);
    for mode in [Mode::Set, Mode::Replace, Mode::Append, Mode::Prepend] {
        assert_eq!(store(mode, b"k", 0, 9), Ok((true, 7)), "{mode:?}");
    }
    assert_eq!((calls.get(), tag_of(b"k")), (1, Some(7)));

    // Refused stores neither ask nor report a tag.
    assert_eq!(store(Mode::Add, b"k", 0, 9), Ok((false, 0)));
    assert_eq!(store(Mode::Replace, b"absent", 0, 9), Ok((false, 0)));
    assert_eq!(store(Mode::Append, b"absent", 0, 9), Ok((false, 0)));
    assert_eq!(calls.get(), 1);

    // An untagged item (a peer's write, or a family that did not fit)
    // gets a tag at its next replacement.
    s.store(Mode::Set, b"u", b"v", 0, 0, 0).unwrap();
    assert_eq!(tag_of(b"u"), Some(0));
    assert_eq!(store(Mode::Set, b"u", 0, 5), Ok((true, 5)));
    assert_eq!(calls.get(), 2);

    // An expired item's tag is not taken over: the key starts afresh.
    assert_eq!(store(Mode::Set, b"e", 10, 3), Ok((true, 3)));
    clock.advance(10);
    assert_eq!(store(Mode::Set, b"e", 0, 4), Ok((true, 4)));
    assert_eq!(calls.get(), 4);
    // Born expired: stored, nothing kept, no tag.
    assert_eq!(store(Mode::Set, b"gone", -1, 6), Ok((true, 0)));
    assert_eq!(tag_of(b"gone"), None);
}

#[test]
fn cas_compare() {
    use StoreOutcome::*;
    // (mode, key exists?, cas matches? (None: cas 0), outcome)
    let cases: &[(Mode, bool, Option<bool>, StoreOutcome)] = &[
        (Mode::Set, false, Some(true), NotFound),
        (Mode::Set, true, Some(false), Exists),
        (Mode::Set, true, Some(true), Stored { cas: 0 }),
        (Mode::Replace, false, Some(true), NotFound),
        (Mode::Replace, true, Some(false), Exists),
        (Mode::Replace, true, Some(true), Stored { cas: 0 }),
        // add ignores a CAS (text/meta semantics).
        (Mode::Add, false, Some(false), Stored { cas: 0 }),
        (Mode::Add, true, Some(true), NotStored),
        (Mode::Append, false, Some(true), NotStored),
        (Mode::Append, true, Some(false), Exists),
        (Mode::Append, true, Some(true), Stored { cas: 0 }),
        (Mode::Prepend, true, Some(false), Exists),
        (Mode::Prepend, true, Some(true), Stored { cas: 0 }),
    ];
    for &(mode, exists, matches, want) in cases {
        let (s, _) = default_store();
        let old_cas = if exists { set(&s, "k", "old") } else { 12345 };
        let cas = match matches {
            Some(true) => old_cas,
            Some(false) => old_cas + 1000,
            None => 0,
        };
        let got = s.store(mode, b"k", b"new", 0, 0, cas).unwrap();
        match (got, want) {
            (Stored { cas: new }, Stored { .. }) => {
                assert_ne!(new, old_cas, "{mode:?}: a new CAS");
                assert_eq!(s.get(b"k").unwrap().item.cas(), new);
            }
            _ => assert_eq!(got, want, "{mode:?} exists={exists} matches={matches:?}"),
        }
        if got == Exists {
            assert_eq!(value(&s, "k").as_deref(), Some("old"));
        }
    }
    // The cas command's counters.
    let (s, _) = default_store();
    let c = set(&s, "k", "v");
    let _ = s.store(Mode::Set, b"nope", b"v", 0, 0, 1);
    let _ = s.store(Mode::Set, b"k", b"v", 0, 0, c + 1);
    let _ = s.store(Mode::Set, b"k", b"v", 0, 0, c);
    let st = s.stats();
    assert_eq!((st.cas_misses, st.cas_badval, st.cas_hits), (1, 1, 1));
}

#[test]
fn delete() {
    let (s, _) = default_store();
    let c = set(&s, "k", "v");
    assert_eq!(s.delete(b"nope", 0), DeleteOutcome::NotFound);
    assert_eq!(s.delete(b"k", c + 1), DeleteOutcome::Exists);
    assert_eq!(value(&s, "k").as_deref(), Some("v"));
    assert_eq!(s.delete(b"k", c), DeleteOutcome::Deleted);
    assert_eq!(value(&s, "k"), None);
    set(&s, "k", "v");
    assert_eq!(s.delete(b"k", 0), DeleteOutcome::Deleted);
    assert_eq!(s.delete(b"k", 0), DeleteOutcome::NotFound);
    let st = s.stats();
    assert_eq!(
        (st.delete_hits, st.delete_misses, st.curr_items, st.bytes),
        (2, 3, 0, 0)
    );
    check_invariants(&s);
}

#[test]
fn remove() {
    let (s, _) = default_store();
    set(&s, "k", "v");
    assert!(s.remove(b"k"));
    assert!(!s.remove(b"k"));
    assert_eq!(value(&s, "k"), None);
    check_invariants(&s);
}

#[test]
fn arith() {
    use ArithOp::*;
    // (stored value, op, delta, result, value read back)
    type Case = (&'static str, ArithOp, u64, Result<u64, Error>, &'static str);
    let cases: &[Case] = &[
        ("0", Incr, 1, Ok(1), "1"),
        ("10", Decr, 1, Ok(9), "9 "),
        ("9 ", Incr, 100, Ok(109), "109"),
        ("99", Incr, 1, Ok(100), "100"),
        ("3", Decr, 5, Ok(0), "0"),
        ("100", Decr, 100, Ok(0), "0  "),
        (
            "18446744073709551615",
            Incr,
            2,
            Ok(1),
            "1                   ",
        ),
        (
            "18446744073709551615",
            Incr,
            0,
            Ok(u64::MAX),
            "18446744073709551615",
        ),
        ("5", Incr, u64::MAX, Ok(4), "4"),
        // memcached 1.6.18's strtoull quirks, verified on the real server.
        ("12 abc", Incr, 1, Ok(13), "13    "),
        (" 5", Incr, 1, Ok(6), "6 "),
        ("+5", Incr, 1, Ok(6), "6 "),
        ("-0", Incr, 1, Ok(1), "1 "),
        ("007", Incr, 1, Ok(8), "8  "),
        (
            "-18446744073709551615",
            Incr,
            1,
            Ok(2),
            "2                    ",
        ),
        ("", Incr, 1, Err(Error::NonNumeric), ""),
        (" ", Incr, 1, Err(Error::NonNumeric), " "),
        ("abc", Decr, 1, Err(Error::NonNumeric), "abc"),
        ("-1", Incr, 1, Err(Error::NonNumeric), "-1"),
        ("0x10", Incr, 1, Err(Error::NonNumeric), "0x10"),
        (
            "18446744073709551616",
            Incr,
            1,
            Err(Error::NonNumeric),
            "18446744073709551616",
        ),
    ];
    for &(stored, op, delta, want, after) in cases {
        let (s, _) = default_store();
        let old_cas = set_ext(&s, "n", stored, 7, 1000);
        let got = s.arith(b"n", op, delta, None, 0);
        match (got, want) {
            (Ok(ArithOutcome::Value { value, cas }), Ok(w)) => {
                assert_eq!(value, w, "{stored:?} {op:?} {delta}");
                assert_ne!(cas, old_cas);
                let f = s.get(b"n").unwrap();
                assert_eq!(f.item.cas(), cas);
                assert_eq!(f.item.flags(), 7, "flags kept");
                assert_eq!(f.item.exptime(), T0 + 1000, "exptime kept");
            }
            (got, want) => assert_eq!(got, want.map(|_| unreachable!()), "{stored:?} {op:?}"),
        }
        assert_eq!(
            value(&s, "n").as_deref(),
            Some(after),
            "{stored:?} {op:?} {delta}"
        );
        check_invariants(&s);
    }
}

#[test]
fn arith_missing_cas_and_counters() {
    let (s, _) = default_store();
    assert_eq!(
        s.arith(b"n", ArithOp::Incr, 1, None, 0),
        Ok(ArithOutcome::NotFound)
    );
    assert_eq!(
        s.arith(b"n", ArithOp::Decr, 1, None, 0),
        Ok(ArithOutcome::NotFound)
    );
    let c = set(&s, "n", "5");
    assert_eq!(
        s.arith(b"n", ArithOp::Incr, 1, None, c + 1),
        Ok(ArithOutcome::Exists)
    );
    assert_eq!(value(&s, "n").as_deref(), Some("5"));
    let Ok(ArithOutcome::Value { value: 6, cas }) = s.arith(b"n", ArithOp::Incr, 1, None, c) else {
        panic!()
    };
    assert!(matches!(
        s.arith(b"n", ArithOp::Decr, 2, None, cas),
        Ok(ArithOutcome::Value { value: 4, .. })
    ));
    let st = s.stats();
    assert_eq!(
        (st.incr_misses, st.decr_misses, st.incr_hits, st.decr_hits),
        (1, 1, 1, 1)
    );
}

#[test]
fn arith_vivify() {
    let (s, clock) = default_store();
    let r = s.arith(b"n", ArithOp::Incr, 10, Some((5, 100)), 0).unwrap();
    let ArithOutcome::Value { value: 5, cas } = r else {
        panic!("{r:?}")
    };
    let f = s.get(b"n").unwrap();
    assert_eq!(
        (f.item.value(), f.item.flags(), f.item.cas()),
        (&b"5"[..], 0, cas)
    );
    assert_eq!(f.item.exptime(), T0 + 100);
    assert!(matches!(
        s.arith(b"n", ArithOp::Incr, 10, Some((5, 100)), 0),
        Ok(ArithOutcome::Value { value: 15, .. })
    ));
    assert_eq!(s.stats().incr_misses, 0, "vivify is not a miss");
    clock.advance(100);
    assert!(matches!(
        s.arith(b"n", ArithOp::Decr, 1, Some((0, 0)), 0),
        Ok(ArithOutcome::Value { value: 0, .. })
    ));
}

#[test]
fn arith_keeps_the_fetched_bit() {
    let (s, _) = default_store();
    set(&s, "n", "1");
    s.arith(b"n", ArithOp::Incr, 1, None, 0).unwrap();
    assert!(!s.get(b"n").unwrap().fetched);
    s.arith(b"n", ArithOp::Incr, 1, None, 0).unwrap();
    assert!(s.get(b"n").unwrap().fetched);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "megabyte values: too slow under Miri, and no unsafe path of its own"
)]
fn too_large_boundary() {
    // (max item size, key length, flags, largest value memcached 1.6.18 accepts)
    let cases: &[(usize, usize, u32, usize)] = &[
        (1 << 20, 1, 0, 1_048_516),
        (1 << 20, 3, 0, 1_048_514),
        (1 << 20, 13, 0, 1_048_504),
        (1 << 20, 13, 1, 1_048_500),
        (1 << 20, 250, 0, 1_048_267),
        (2048, 1, 0, 1988),
        (2048, 13, 0, 1976),
        (2048, 13, 1, 1972),
        (2048, 250, 0, 1739),
        (2048, 250, 1, 1735),
    ];
    for &(max, key_len, flags, largest) in cases {
        let (s, _) = new_store(config(64 << 20, max, 4));
        let key = vec![b'k'; key_len];
        let v = vec![b'x'; largest + 1];
        assert_eq!(Store::item_size_with_flags(key_len, largest, flags), max);
        let ok = s.store(Mode::Set, &key, &v[..largest], flags, 0, 0);
        assert!(
            matches!(ok, Ok(StoreOutcome::Stored { .. })),
            "{max} {key_len} {flags}: {ok:?}"
        );
        assert_eq!(s.get(&key).unwrap().item.total_size(), max);
        let too = s.store(Mode::Set, &key, &v, flags, 0, 0);
        assert_eq!(too, Err(Error::TooLarge), "{max} {key_len} {flags}");
        assert!(s.get(&key).is_none(), "a too-large set drops the old value");
    }
    assert_eq!(Store::item_size(3, 1_048_514), 1 << 20);
}

#[test]
fn too_large_keeps_the_old_value_except_for_set() {
    let big = vec![b'x'; 2000];
    for (mode, kept) in [
        (Mode::Set, false),
        (Mode::Add, true),
        (Mode::Replace, true),
        (Mode::Append, true),
        (Mode::Prepend, true),
    ] {
        let (s, _) = new_store(config(1 << 20, 2048, 1));
        set(&s, "k", "old");
        assert_eq!(
            s.store(mode, b"k", &big, 0, 0, 0),
            Err(Error::TooLarge),
            "{mode:?}"
        );
        assert_eq!(value(&s, "k").is_some(), kept, "{mode:?}");
    }
    // A key longer than an item can hold is too large, not a panic.
    let (s, _) = new_store(config(1 << 20, usize::MAX, 1));
    let key = vec![b'k'; MAX_KEY_LEN + 1];
    assert_eq!(
        s.store(Mode::Set, &key, b"v", 0, 0, 0),
        Err(Error::TooLarge)
    );
}

#[test]
fn append_past_the_item_limit_is_not_stored() {
    let (s, _) = new_store(config(1 << 20, 2048, 1));
    // With a 1-byte key, a 1,988-byte value fills -I 2k exactly.
    let v = vec![b'a'; 1900];
    s.store(Mode::Set, b"k", &v, 0, 0, 0).unwrap();
    assert_eq!(
        s.store(Mode::Append, b"k", &[b'b'; 88], 0, 0, 0)
            .map(|o| matches!(o, StoreOutcome::Stored { .. })),
        Ok(true)
    );
    assert_eq!(
        s.store(Mode::Append, b"k", b"c", 0, 0, 0),
        Ok(StoreOutcome::NotStored)
    );
    assert_eq!(
        s.store(Mode::Prepend, b"k", b"c", 0, 0, 0),
        Ok(StoreOutcome::NotStored)
    );
    assert_eq!(s.get(b"k").unwrap().item.value().len(), 1988);
}

/// A one-shard store with room for exactly `n` items, `key(0)` to
/// `key(n - 1)` (keys of one length) with `value_len`-byte values, filled
/// with them in that order: `key(0)` is the LRU's tail. Also the value and
/// one item's charge.
fn full_store(n: usize, key: impl Fn(usize) -> String, value_len: usize) -> (Store, String, usize) {
    let per_item = charge_for(key(0).len(), value_len);
    let (s, _) = new_store(config(n * per_item, 1 << 20, 1));
    let v = "v".repeat(value_len);
    for i in 0..n {
        set(&s, &key(i), &v);
    }
    (s, v, per_item)
}

#[test]
fn eviction_is_lru_and_a_get_protects() {
    let (s, v, per_item) = full_store(5, |i| format!("k{i}"), 100);
    assert_eq!(s.stats().bytes as usize, 5 * per_item);
    assert_eq!(
        s.lock(0).lru_keys(),
        [&b"k4"[..], b"k3", b"k2", b"k1", b"k0"]
    );
    assert!(s.get(b"k0").is_some());
    assert!(s.touch(b"k1", 0));
    set(&s, "k5", &v);
    // k2 was the least recently used: k0 was read and k1 touched.
    assert_eq!(
        s.lock(0).lru_keys(),
        [&b"k5"[..], b"k1", b"k0", b"k4", b"k3"]
    );
    set(&s, "k6", &v);
    assert_eq!(value(&s, "k2"), None);
    assert_eq!(value(&s, "k3"), None);
    let st = s.stats();
    assert_eq!(
        (st.evictions, st.evicted_unfetched, st.curr_items),
        (2, 2, 5)
    );
    // A bigger item evicts as many as it needs, oldest first.
    let big = "b".repeat(300);
    set(&s, "big", &big);
    let st = s.stats();
    assert!(st.bytes as usize <= 5 * per_item);
    assert_eq!(value(&s, "big").as_deref(), Some(&big[..]));
    check_invariants(&s);
}

#[test]
fn a_hit_buys_one_second_chance_not_a_place_at_the_head() {
    let (s, v, _) = full_store(3, |i| format!("k{i}"), 100);
    // A hit leaves the order as it is.
    assert!(s.get(b"k0").is_some());
    assert_eq!(s.lock(0).lru_keys(), [&b"k2"[..], b"k1", b"k0"]);
    // k0 reaches the tail active: it moves to the head and k1 goes.
    set(&s, "k3", &v);
    assert_eq!(s.lock(0).lru_keys(), [&b"k3"[..], b"k0", b"k2"]);
    set(&s, "k4", &v);
    assert_eq!(s.lock(0).lru_keys(), [&b"k4"[..], b"k3", b"k0"]);
    // Not read again since its rescue, k0 is evicted next.
    set(&s, "k5", &v);
    assert_eq!(s.lock(0).lru_keys(), [&b"k5"[..], b"k4", b"k3"]);
    // Everything active: one round of rescues, then the oldest goes.
    for k in ["k3", "k4", "k5"] {
        assert!(s.get(k.as_bytes()).is_some());
    }
    set(&s, "k6", &v);
    assert_eq!(s.lock(0).lru_keys(), [&b"k6"[..], b"k5", b"k4"]);
    assert_eq!(s.stats().evictions, 4);
    check_invariants(&s);
}

#[test]
fn a_prefetch_changes_nothing() {
    let (s, _) = new_store(config(1 << 20, 1 << 20, 4));
    set(&s, "a", "1");
    set(&s, "b", "2");
    let before = s.stats();
    for key in ["a", "b", "missing", ""] {
        s.prefetch(key.as_bytes());
    }
    let many: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    s.prefetch_many(["a", "b", "missing", "a"].iter().map(|k| k.as_bytes()));
    s.prefetch_many(many.iter().map(String::as_bytes));
    s.prefetch_many([b"b".as_slice()]);
    s.prefetch_many([]);
    let after = s.stats();
    assert_eq!(
        (after.get_hits, after.get_misses, after.curr_items),
        (before.get_hits, before.get_misses, before.curr_items)
    );
    let found = s.get(b"a").unwrap();
    assert!(!found.fetched, "a prefetch is no fetch");
    check_invariants(&s);
}

#[test]
fn one_eviction_rescues_a_bounded_number_of_active_items() {
    use crate::shard::MAX_RESCUES;
    let n = MAX_RESCUES + 8;
    let key = |i: usize| format!("k{i:03}");
    let (s, v, _) = full_store(n, key, 10);
    for i in 0..n {
        assert!(s.get(key(i).as_bytes()).is_some());
    }
    // Every item is active: the oldest MAX_RESCUES are moved to the head,
    // and the next one in age goes, active or not.
    set(&s, "new!", &v);
    assert_eq!(s.stats().evictions, 1);
    assert_eq!(value(&s, &key(MAX_RESCUES)), None);
    assert!(value(&s, &key(0)).is_some() && value(&s, &key(MAX_RESCUES + 1)).is_some());
    check_invariants(&s);
}

#[test]
fn replacing_an_item_never_evicts_itself() {
    let per_item = charge_for(1, 100);
    let (s, _) = new_store(config(2 * per_item, 1 << 20, 1));
    let v = "v".repeat(100);
    set(&s, "a", &v);
    set(&s, "b", &v);
    // "a" is the LRU tail; growing it needs room, which must come from "b".
    let bigger = "w".repeat(150);
    set(&s, "a", &bigger);
    assert_eq!(value(&s, "a").as_deref(), Some(&bigger[..]));
    assert_eq!(value(&s, "b"), None);
    check_invariants(&s);
}

#[test]
fn expired_items_at_the_tail_are_reclaimed_not_evicted() {
    let per_item = charge_for(2, 100);
    let (s, clock) = new_store(config(3 * per_item, 1 << 20, 1));
    let v = "v".repeat(100);
    set_ext(&s, "k0", &v, 0, 5);
    set(&s, "k1", &v);
    set(&s, "k2", &v);
    clock.advance(5);
    set(&s, "k3", &v);
    let st = s.stats();
    assert_eq!(
        (st.evictions, st.reclaimed, st.expired_unfetched),
        (0, 1, 1)
    );
}

#[test]
fn out_of_memory() {
    let (s, _) = new_store(config(1000, 1 << 20, 4));
    set(&s, "k", "small");
    let big = vec![b'x'; 2000];
    assert_eq!(
        s.store(Mode::Add, b"other", &big, 0, 0, 0),
        Err(Error::OutOfMemory)
    );
    assert_eq!(
        value(&s, "k").as_deref(),
        Some("small"),
        "an add that cannot fit evicts nothing"
    );
    assert_eq!(
        s.store(Mode::Set, b"k", &big, 0, 0, 0),
        Err(Error::OutOfMemory)
    );
    assert_eq!(
        value(&s, "k"),
        None,
        "a set that cannot fit drops the old value"
    );
    // Append that cannot fit: NOT_STORED, old value kept.
    set(&s, "k", "small");
    assert_eq!(
        s.store(Mode::Append, b"k", &big, 0, 0, 0),
        Ok(StoreOutcome::NotStored)
    );
    assert_eq!(value(&s, "k").as_deref(), Some("small"));
    let (s, _) = new_store(config(0, 1 << 20, 1));
    assert_eq!(
        s.store(Mode::Set, b"k", b"v", 0, 0, 0),
        Err(Error::OutOfMemory)
    );
    check_invariants(&s);
}

/// A deterministic pseudo-random sequence for the load tests.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn memory_never_exceeds_the_limit() {
    let limit = if cfg!(miri) { 16 << 10 } else { 256 << 10 };
    for shards in [1, 8, 64] {
        let (s, _) = new_store(config(limit, 1 << 20, shards));
        let mut rng = Lcg(shards as u64);
        let mut written = 0;
        let mut i = 0u64;
        while written < 10 * limit {
            let size = match rng.below(10) {
                0 => rng.below(8000) as usize,
                1..=3 => rng.below(1000) as usize,
                _ => rng.below(100) as usize,
            };
            let key = format!("key{}", rng.below(2000));
            let v = vec![b'a' + (i % 26) as u8; size];
            let mode = match rng.below(6) {
                0 => Mode::Append,
                1 => Mode::Add,
                _ => Mode::Set,
            };
            match s.store(mode, key.as_bytes(), &v, 0, 0, 0) {
                Ok(_) => {}
                Err(e) => panic!("{mode:?} {size}: {e:?}"),
            }
            written += size;
            i += 1;
            assert!(s.used.load(Ordering::Relaxed) <= limit);
            if i.is_multiple_of(256) {
                check_invariants(&s);
            }
        }
        check_invariants(&s);
        let st = s.stats();
        assert!(st.evictions > 0, "{shards} shards: {st:?}");
        assert!(st.bytes as usize <= limit);
        // Fuller than half: eviction keeps the store near its limit.
        assert!(st.bytes as usize > limit / 2, "{shards} shards: {st:?}");
    }
}

#[test]
fn a_big_item_evicts_from_other_shards() {
    let limit = 64 << 10;
    let (s, _) = new_store(config(limit, 1 << 20, 64));
    let v = "v".repeat(100);
    let mut i = 0;
    while s.stats().bytes as usize + charge_for(8, 100) <= limit {
        set(&s, &format!("k{i:06}"), &v);
        i += 1;
    }
    // No single shard holds 40 KiB: room must come from many shards.
    let big = "b".repeat(40 << 10);
    set(&s, "big", &big);
    assert_eq!(value(&s, "big").map(|v| v.len()), Some(40 << 10));
    let st = s.stats();
    assert!(st.evictions > 100, "{st:?}");
    check_invariants(&s);
}

#[test]
fn flush_all_now() {
    let (s, clock) = default_store();
    set(&s, "a", "1");
    set_ext(&s, "b", "2", 0, 100);
    s.flush_all(0);
    let st = s.stats();
    assert_eq!((st.curr_items, st.bytes), (0, 0), "memory freed at once");
    assert_eq!(value(&s, "a"), None);
    // Stored after the flush, in the same second: survives.
    set(&s, "c", "3");
    assert_eq!(value(&s, "c").as_deref(), Some("3"));
    clock.advance(1000);
    assert_eq!(value(&s, "c").as_deref(), Some("3"));
    s.flush_all(-5);
    assert_eq!(value(&s, "c"), None, "a negative delay is now");
    check_invariants(&s);
}

#[test]
fn flush_all_delayed() {
    let (s, clock) = default_store();
    set(&s, "a", "1");
    s.flush_all(10);
    assert_eq!(value(&s, "a").as_deref(), Some("1"), "not yet");
    clock.advance(9);
    set(&s, "b", "2");
    assert_eq!(value(&s, "b").as_deref(), Some("2"));
    clock.advance(1);
    // The moment has come: everything stored before it is gone.
    assert_eq!(value(&s, "a"), None);
    assert_eq!(value(&s, "b"), None);
    set(&s, "c", "3");
    clock.advance(100);
    assert_eq!(
        value(&s, "c").as_deref(),
        Some("3"),
        "stored at the moment: survives"
    );
    let st = s.stats();
    assert_eq!((st.get_flushed, st.curr_items), (2, 1));
}

#[test]
fn flush_all_delayed_items_are_swept() {
    let (s, clock) = default_store();
    for i in 0..10 {
        set(&s, &format!("k{i}"), "v");
    }
    s.flush_all(5);
    assert_eq!(s.sweep(100), 0);
    clock.advance(5);
    assert_eq!(s.sweep(100), 10);
    let st = s.stats();
    assert_eq!((st.curr_items, st.bytes, st.reclaimed), (0, 0, 10));
}

#[test]
fn flush_all_absolute_and_replaced() {
    let (s, clock) = default_store();
    set(&s, "a", "1");
    // An absolute moment in the past is now.
    s.flush_all(i64::from(T0) - 10);
    assert_eq!(value(&s, "a"), None);
    // An absolute moment in the future.
    set(&s, "a", "1");
    s.flush_all(i64::from(T0) + 50);
    clock.advance(49);
    assert!(value(&s, "a").is_some());
    clock.advance(1);
    assert!(value(&s, "a").is_none());
    // A later flush replaces a pending one (memcached keeps one moment).
    set(&s, "b", "1");
    s.flush_all(100);
    s.flush_all(1000);
    clock.advance(500);
    assert!(value(&s, "b").is_some());
    clock.advance(500);
    assert!(value(&s, "b").is_none());
}

#[test]
fn sweep_reclaims_expired_items() {
    let (s, clock) = new_store(config(64 << 20, 1 << 20, 1));
    for i in 0..100 {
        set_ext(&s, &format!("e{i}"), "v", 0, 10);
        set(&s, &format!("l{i}"), "v");
    }
    assert!(s.get(b"e0").is_some());
    assert_eq!(s.sweep(1000), 0);
    clock.advance(10);
    // A budget of 30 slots per sweep: resumes where it stopped.
    let mut total = 0;
    for round in 0..7 {
        let n = s.sweep(30);
        assert!(n <= 30, "round {round}");
        total += n;
    }
    assert_eq!(total, 100);
    let st = s.stats();
    assert_eq!(
        (st.curr_items, st.reclaimed, st.expired_unfetched),
        (100, 100, 99)
    );
    assert_eq!(s.sweep(1000), 0);
    check_invariants(&s);
}

#[test]
fn touch_and_gat() {
    let (s, clock) = default_store();
    assert!(!s.touch(b"k", 10));
    assert!(s.get_and_touch(b"k", 10).is_none());
    set_ext(&s, "k", "v", 0, 10);
    clock.advance(5);
    assert!(s.touch(b"k", 100));
    clock.advance(50);
    let f = s.get_and_touch(b"k", 0).unwrap();
    assert_eq!(f.item.exptime(), 0);
    assert_eq!(f.item.value(), b"v");
    assert_eq!(
        (f.last_access, f.fetched),
        (50, true),
        "touch marked it fetched"
    );
    let f = s.get_and_touch(b"k", 30).unwrap();
    assert_eq!(f.item.exptime(), T0 + 55 + 30);
    assert_eq!(f.item.ttl(s.now()), 30);
    // Touching with a negative exptime answers, then the key is gone.
    let f = s.get_and_touch(b"k", -1).unwrap();
    assert_eq!(f.item.value(), b"v");
    assert!(s.get(b"k").is_none());
    set(&s, "k", "v");
    assert!(s.touch(b"k", -1));
    assert!(s.get(b"k").is_none());
    let st = s.stats();
    assert_eq!((st.touch_hits, st.touch_misses), (5, 2));
    check_invariants(&s);
}

#[test]
fn found_items_outlive_their_removal() {
    let (s, _) = default_store();
    set(&s, "k", &"v".repeat(1000));
    let f = s.get(b"k").unwrap();
    let bytes = f.item.value_bytes();
    assert_eq!(bytes.as_ptr(), f.item.value().as_ptr(), "no copy");
    s.delete(b"k", 0);
    set(&s, "k", "new");
    s.flush_all(0);
    drop(f);
    assert_eq!(bytes.len(), 1000);
    assert!(bytes.iter().all(|&b| b == b'v'));
}

#[test]
fn empty_key_and_value() {
    let (s, _) = default_store();
    set(&s, "", "");
    assert_eq!(value(&s, "").as_deref(), Some(""));
    assert_eq!(
        s.arith(b"", ArithOp::Incr, 1, None, 0),
        Err(Error::NonNumeric)
    );
}

/// Random operations with random arguments: nothing panics, and the
/// accounting holds throughout.
#[test]
fn random_operations_keep_invariants() {
    let (s, clock) = new_store(config(32 << 10, 4096, 4));
    let mut rng = Lcg(7);
    let steps = if cfg!(miri) { 2_000 } else { 50_000 };
    let mut cas_seen = 0;
    for step in 0..steps {
        let key = format!("k{}", rng.below(64));
        let key = key.as_bytes();
        let bound = if rng.below(20) == 0 { 5000 } else { 200 };
        let size = rng.below(bound) as usize;
        let v: Vec<u8> = if rng.below(3) == 0 {
            rng.below(1000).to_string().into_bytes()
        } else {
            vec![b'x'; size]
        };
        let exptime = match rng.below(8) {
            0 => -1,
            1 => rng.below(20) as i64,
            2 => i64::from(T0) + rng.below(40) as i64 - 20,
            _ => 0,
        };
        let cas = if rng.below(4) == 0 {
            cas_seen + rng.below(2)
        } else {
            0
        };
        match rng.below(12) {
            0 => {
                let _ = s.store(Mode::Set, key, &v, rng.below(3) as u32, exptime, cas);
            }
            1 => {
                let _ = s.store(Mode::Add, key, &v, 0, exptime, cas);
            }
            2 => {
                let _ = s.store(Mode::Replace, key, &v, 0, exptime, cas);
            }
            3 => {
                let _ = s.store(Mode::Append, key, &v, 0, exptime, cas);
            }
            4 => {
                let _ = s.store(Mode::Prepend, key, &v, 0, exptime, cas);
            }
            5 => {
                if let Some(f) = s.get(key) {
                    cas_seen = f.item.cas();
                }
            }
            6 => {
                let _ = s.get_and_touch(key, exptime);
            }
            7 => {
                let _ = s.delete(key, cas);
            }
            8 => {
                let op = if rng.below(2) == 0 {
                    ArithOp::Incr
                } else {
                    ArithOp::Decr
                };
                let vivify = (rng.below(2) == 0).then_some((rng.below(100), exptime));
                let _ = s.arith(key, op, rng.next(), vivify, cas);
            }
            9 => clock.advance(rng.below(3) as u32),
            10 => {
                let _ = s.sweep(rng.below(50) as usize);
            }
            _ => {
                if rng.below(50) == 0 {
                    s.flush_all(rng.below(3) as i64);
                } else {
                    let _ = s.remove(key);
                }
            }
        }
        if step % 500 == 0 {
            check_invariants(&s);
        }
    }
    check_invariants(&s);
}

/// Several threads hammer overlapping keys with every kind of write, under
/// memory pressure, and check what they read: a value is always one that
/// some thread wrote whole for that key.
#[test]
fn threads_hammering_overlapping_keys() {
    let (threads, ops) = if cfg!(miri) { (3, 300) } else { (4, 40_000) };
    let store = Arc::new(Store::with_clock(
        config(64 << 10, 1 << 20, 4),
        Arc::new(ManualClock::new(T0)),
    ));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                let mut rng = Lcg(t as u64 + 1);
                for _ in 0..ops {
                    let k = rng.below(32);
                    let key = format!("key{k}");
                    match rng.below(10) {
                        0..=3 => {
                            // Value: the key's tag byte repeated, length varies.
                            let len = 1 + rng.below(600) as usize;
                            let v = vec![b'a' + k as u8 % 26; len];
                            let _ = s.store(Mode::Set, key.as_bytes(), &v, k as u32, 0, 0);
                        }
                        4..=6 => {
                            if let Some(f) = s.get(key.as_bytes()) {
                                let v = f.item.value();
                                assert_eq!(f.item.key(), key.as_bytes());
                                if f.item.flags() == k as u32 {
                                    let tag = b'a' + k as u8 % 26;
                                    assert!(v.iter().all(|&b| b == tag), "torn value for {key}");
                                }
                                let b = f.item.value_bytes();
                                assert_eq!(&b[..], v);
                            }
                        }
                        7 => {
                            let _ = s.delete(key.as_bytes(), 0);
                        }
                        8 => {
                            let nkey = format!("n{}", k % 4);
                            let _ = s.arith(nkey.as_bytes(), ArithOp::Incr, 1, Some((0, 0)), 0);
                        }
                        _ => {
                            let _ = s.store(
                                Mode::Append,
                                key.as_bytes(),
                                &[b'a' + k as u8 % 26],
                                k as u32,
                                0,
                                0,
                            );
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    check_invariants(&store);
    // incr under contention never loses an update unless the item was evicted
    // (64 KiB is tight); the counters at least are numbers.
    for k in 0..4 {
        if let Some(f) = store.get(format!("n{k}").as_bytes()) {
            assert!(crate::rules::parse_counter(f.item.value()).is_some());
        }
    }
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
    check::<Item>();
    check::<Found>();
}

#[test]
fn retain_drops_exactly_the_refused_keys_and_frees_their_memory() {
    let (s, _) = default_store();
    for i in 0..1000 {
        set(&s, &format!("key{i}"), "value");
    }
    let before = s.used.load(Ordering::Relaxed);
    let dropped = s.retain(|k| k.last().is_some_and(|b| b % 2 == 0));
    assert_eq!(dropped, 500);
    assert_eq!(s.stats().curr_items, 500);
    for i in 0..1000 {
        let want = (i % 2 == 0).then(|| "value".to_owned());
        assert_eq!(value(&s, &format!("key{i}")), want, "key{i}");
    }
    assert!(s.used.load(Ordering::Relaxed) < before);
    check_invariants(&s);
    // Dropped keys can be stored again.
    set(&s, "key1", "again");
    assert_eq!(value(&s, "key1").as_deref(), Some("again"));
}

#[test]
fn a_ticking_clock_reads_the_time_it_was_last_ticked_to() {
    let clock = TickingClock::new();
    let system = || SystemClock.now();
    assert!(system().abs_diff(clock.now()) <= 1);
    clock.now.store(5, Ordering::Relaxed);
    assert_eq!(clock.now(), 5, "a read does not look at the system clock");
    let next = clock.tick();
    assert!(system().abs_diff(clock.now()) <= 1);
    assert!(next > TICK_MARGIN && next <= Duration::from_secs(1) + TICK_MARGIN);
}

#[test]
fn a_tick_is_due_just_after_the_next_whole_second() {
    let at = |secs, nanos| until_next_second(Duration::new(secs, nanos));
    assert_eq!(at(100, 0), Duration::from_secs(1) + TICK_MARGIN);
    assert_eq!(
        at(100, 250_000_000),
        Duration::from_millis(750) + TICK_MARGIN
    );
    assert_eq!(at(100, 999_999_999), Duration::from_nanos(1) + TICK_MARGIN);
    // Slept for, the system's time lands past the turn, in the next second.
    for nanos in [0, 1, 400_000_000, 999_999_999] {
        let woke = Duration::new(100, nanos) + at(100, nanos);
        assert_eq!(woke.as_secs(), 101);
        assert_eq!(woke.subsec_nanos(), TICK_MARGIN.subsec_nanos());
    }
}

#[test]
fn the_counting_sort_puts_every_hash_in_shard_order() {
    let (s, _) = new_store(config(1 << 20, 1 << 20, 4));
    let hashes: Vec<u64> = (0..300u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let sorted = s.by_shard(&hashes);
    assert!(sorted.is_sorted_by_key(|&h| s.shard_index(h)));
    let (mut a, mut b) = (hashes.clone(), sorted);
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "the same hashes, each once");
}
