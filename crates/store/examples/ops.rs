//! Rough single-thread cost of `get` and `set` (release build), for a hot
//! key set that fits in cache and a large one that does not. Not a
//! substitute for the whole-server load tests; it shows where store time goes.
//!
//! `cargo run --release -p shoal-store --example ops`

use std::hint::black_box;
use std::time::Instant;

use store::{Config, Mode, Store};

fn keys(n: usize) -> Vec<[u8; 13]> {
    (0..n)
        .map(|i| {
            let mut k = *b"key:000000000";
            k[4..].copy_from_slice(format!("{i:09}").as_bytes());
            k
        })
        .collect()
}

/// A fixed pseudo-random visiting order, so the large set defeats caches.
fn order(n: usize, ops: usize) -> Vec<usize> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..ops)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        })
        .collect()
}

fn main() {
    let value = [b'v'; 100];
    for n in [1_000, 1_000_000] {
        let store = Store::new(Config {
            memory_limit: 4 << 30,
            ..Config::default()
        });
        let keys = keys(n);
        for k in &keys {
            let _ = store.store(Mode::Set, k, &value, 0, 0, 0);
        }
        let ops = 2_000_000;
        let order = order(n, ops);
        let start = Instant::now();
        for &i in &order {
            black_box(store.get(&keys[i]));
        }
        let get = start.elapsed().as_nanos() as f64 / ops as f64;
        let start = Instant::now();
        for &i in &order {
            let _ = black_box(store.store(Mode::Set, &keys[i], &value, 0, 0, 0));
        }
        let set = start.elapsed().as_nanos() as f64 / ops as f64;
        println!("{n:>9} keys: get {get:.0} ns/op, set {set:.0} ns/op");
    }
}
