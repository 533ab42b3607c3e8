//! Cost of the hot-path calls, in nanoseconds per call:
//! `cargo run --release -p shoal-telemetry --example bench`.
//!
//! Keys come from a fixed Zipf(1.0) stream over 100k Django-shaped keys, so
//! the numbers include the index probes and heap sifts of a realistic mix of
//! hot keys and take-overs. The stream sits in one contiguous buffer read in
//! order, as the server's key sits in its just-parsed read buffer; the
//! "touch the key" line is that reading alone, to subtract. Run on a quiet
//! machine; the figures are only as steady as the host.
//!
//! `bench WHAT ROUNDS` runs one measurement (`touch`, `families`, `topk`,
//! `topk8`, `topk64`, `threads`) with `ROUNDS` passes over the stream
//! (`BENCH_KEYS` keys, default 2M): running it under
//! `valgrind --tool=callgrind` with 0 and with 1 round gives instructions
//! per call, repeatable on a busy host.

use std::hint::black_box;
use std::time::Instant;

use telemetry::{Families, TopK, TopKConfig};

/// One buffer holding every key of the stream, and where each one is.
struct Stream {
    bytes: Vec<u8>,
    spans: Vec<(u32, u32)>,
}

impl Stream {
    fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.spans
            .iter()
            .map(|&(at, len)| &self.bytes[at as usize..(at + len) as usize])
    }
    fn len(&self) -> usize {
        self.spans.len()
    }
}

fn stream(n: usize, len: usize) -> Stream {
    let weights: Vec<f64> = (1..=n).map(|i| 1.0 / i as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let cdf: Vec<f64> = weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect();
    let shapes = [
        "user_{}",
        "product:{}:detail",
        "views.decorators.cache.cache_page..GET.{}.d41d8cd98f00b204e9800998ecf8427e.en-us.UTC",
        "template.cache.sidebar.{}",
        "django.contrib.sessions.cache{}",
        "cart-{}",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Stream {
        bytes: Vec::new(),
        spans: Vec::with_capacity(len),
    };
    for _ in 0..len {
        let key = {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let u = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
            let i = cdf.partition_point(|&c| c < u).min(n - 1);
            let shape = shapes[i % shapes.len()].replace("{}", &format!("{i:08x}"));
            format!("myapp:1:{shape}").into_bytes()
        };
        out.spans.push((out.bytes.len() as u32, key.len() as u32));
        out.bytes.extend_from_slice(&key);
    }
    out
}

fn per_call(label: &str, calls: usize, f: impl FnOnce()) {
    let start = Instant::now();
    f();
    let ns = start.elapsed().as_nanos() as f64 / calls as f64;
    println!("{label:<48} {ns:>7.1} ns/call");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("all", String::as_str);
    let rounds: usize = args.get(2).map_or(3, |r| r.parse().expect("rounds"));
    let n = std::env::var("BENCH_KEYS").map_or(2_000_000, |v| v.parse().expect("BENCH_KEYS"));
    let keys = stream(100_000, n);
    let calls = (keys.len() * rounds).max(1);
    let on = |name: &str| what == "all" || what == name;

    if on("touch") {
        per_call("touch the key (baseline)", calls, || {
            for _ in 0..rounds {
                for k in keys.iter() {
                    let k = black_box(k);
                    black_box(k[0] ^ k[k.len() - 1]);
                }
            }
        });
    }

    if on("families") {
        let families = Families::new(100);
        for k in keys.iter() {
            families.classify(k);
        }
        per_call("Families::classify", calls, || {
            for _ in 0..rounds {
                for k in keys.iter() {
                    black_box(families.classify(black_box(k)));
                }
            }
        });
    }

    for (name, label, sample) in [
        ("topk", "TopK::record (1000 counters, 16 shards)", 1),
        ("topk8", "TopK::record, 1 in 8 sampled", 8),
        ("topk64", "TopK::record, 1 in 64 sampled", 64),
    ] {
        if !on(name) {
            continue;
        }
        let top = TopK::with_config(TopKConfig {
            k: 10,
            capacity: 1000,
            shards: 16,
            sample_one_in: sample,
        });
        for k in keys.iter() {
            top.record(k);
        }
        per_call(label, calls, || {
            for _ in 0..rounds {
                for k in keys.iter() {
                    top.record(black_box(k));
                }
            }
        });
    }

    if !on("threads") {
        return;
    }
    let top = TopK::new(10, 1000);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (top, keys) = (&top, &keys);
            s.spawn(move || {
                for _ in 0..rounds {
                    for k in keys.iter().skip(t) {
                        top.record(black_box(k));
                    }
                }
            });
        }
    });
    let ns = start.elapsed().as_nanos() as f64 / calls as f64;
    println!(
        "{:<48} {ns:>7.1} ns/call (wall time per record per thread)",
        format!("TopK::record, {threads} threads at once")
    );

    let best = top.top(3);
    println!(
        "top 3 after the run: {:?}",
        best.iter()
            .map(|h| (
                String::from_utf8_lossy(&h.key).into_owned(),
                h.count,
                h.error
            ))
            .collect::<Vec<_>>()
    );
}
