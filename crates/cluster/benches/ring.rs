//! Ring lookup and build costs, without a bench framework (criterion would
//! add more build time than this crate's code): `cargo bench -p
//! shoal-cluster --bench ring`. Each figure is the best of 5 runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cluster::{DEFAULT_VNODES, NodeName, Ring, ring};

fn keys(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            if i % 2 == 0 {
                format!("key:{i}").into_bytes()
            } else {
                format!(":1:views.decorators.cache.cache_page.{i:08x}").into_bytes()
            }
        })
        .collect()
}

fn ring_of(n: usize) -> Ring {
    Ring::new(
        (0..n).map(|i| NodeName::new(format!("shoal-{i}")).unwrap()),
        DEFAULT_VNODES,
    )
}

/// Best per-iteration time over 5 runs of `iters` calls.
fn time(iters: usize, mut f: impl FnMut(usize)) -> Duration {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for i in 0..iters {
                f(i);
            }
            start.elapsed() / iters as u32
        })
        .min()
        .unwrap()
}

fn main() {
    let keys = keys(4096);
    let iters = 2_000_000;
    let t = time(iters, |i| {
        black_box(ring::point(black_box(&keys[i & 4095])));
    });
    println!("point (rapidhash V3 of a 7-45 byte key): {t:?}");
    for n in [3, 10, 100] {
        let r = ring_of(n);
        let t = time(iters, |i| {
            black_box(r.owner(black_box(&keys[i & 4095])));
        });
        println!("owner, {n} members x {DEFAULT_VNODES} vnodes: {t:?}");
        let t = time(iters / 4, |i| {
            black_box(r.owners(black_box(&keys[i & 4095]), 3));
        });
        println!("owners(key, 3), {n} members: {t:?}");
        let t = time(if n > 10 { 5 } else { 50 }, |_| {
            black_box(ring_of(n));
        });
        println!("Ring::new, {n} members: {t:?}");
    }
}
