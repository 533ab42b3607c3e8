//! Memory per item, the figure shoal is graded on: 1M items of 13-byte keys
//! and 100-byte values (memcached 1.6.18 spends ~196 B of resident memory on
//! each). Prints the bytes the store charges per item and the growth of the
//! process's resident set per item, plus rough single-thread timings.
//!
//! Run in release: `cargo run --release -p shoal-store --example rss [N]`.

use std::time::Instant;

use store::{Config, Mode, Store};

/// Resident set size of this process, in bytes (Linux `VmRSS`).
fn rss() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let store = Store::new(Config {
        memory_limit: 4 << 30,
        ..Config::default()
    });
    let value = [b'v'; 100];
    let mut key = *b"key:000000000";
    let set_key = |key: &mut [u8; 13], i: usize| {
        let digits = format!("{i:09}");
        key[4..].copy_from_slice(digits.as_bytes());
    };

    let before = rss().unwrap_or(0);
    let start = Instant::now();
    for i in 0..n {
        set_key(&mut key, i);
        if !matches!(
            store.store(Mode::Set, &key, &value, 0, 0, 0),
            Ok(store::StoreOutcome::Stored { .. })
        ) {
            eprintln!("set {i} failed");
            std::process::exit(1);
        }
    }
    let set_time = start.elapsed();
    let after = rss().unwrap_or(0);

    let start = Instant::now();
    let mut hits = 0;
    for i in 0..n {
        set_key(&mut key, i);
        hits += usize::from(store.get(&key).is_some());
    }
    let get_time = start.elapsed();

    let stats = store.stats();
    println!("items:                 {}", stats.curr_items);
    println!(
        "charged per item:      {:.1} B",
        stats.bytes as f64 / n as f64
    );
    println!(
        "RSS growth per item:   {:.1} B  ({:.1} MiB total)",
        after.saturating_sub(before) as f64 / n as f64,
        after.saturating_sub(before) as f64 / (1 << 20) as f64
    );
    println!(
        "set: {:.0} ns/op, get: {:.0} ns/op (one thread, {hits} hits)",
        set_time.as_nanos() as f64 / n as f64,
        get_time.as_nanos() as f64 / n as f64
    );
}
