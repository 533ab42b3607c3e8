//! `shoal-loadgen`: a memtier-style load generator for memcache servers.
//!
//! It speaks the text and binary protocols, keeps `--pipeline` requests in
//! flight per connection (sent in one write, all answers read back before the
//! next batch), validates every answer, and reports throughput and latency
//! percentiles as one human line and one JSON line.
//!
//! Parts: [`proto`] preformats requests and parses answers (sans-IO),
//! [`worker`] is one thread's epoll loop over its connections, [`stats`]
//! holds the counters and the latency histogram.
//!
//! Exit status: 0 when every request got the answer it should have, 3 when
//! some did not (the counts say which), 4 when the run gave up because the
//! server stopped answering, 1 when it could not start (bad flags, no server).

mod proto;
mod stats;
mod worker;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::proto::{Codec, KeyFormat, Protocol};
use crate::stats::Stats;
use crate::worker::{Phase, Plan, Worker};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "memtier-style load generator for memcache servers (text and binary)"
)]
struct Args {
    /// Server to load, host:port.
    #[arg(long, default_value = "127.0.0.1:11211")]
    server: String,
    #[arg(long, value_enum, default_value_t = Protocol::Text)]
    protocol: Protocol,
    /// Connections in all, shared out between the threads.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection: sent in one write, all answered
    /// before the next batch.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Size of the key space: keys `key:000001` ..= `key:<keys>`.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Length of every key in bytes (`key:` then zero-padded digits);
    /// default `key:` and at least 6 digits.
    #[arg(long)]
    key_len: Option<usize>,
    /// Bytes in every value that is set.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// sets:gets, e.g. 1:9 (10% sets, 90% gets) or 0:1 (gets only).
    #[arg(long, default_value = "1:9", value_parser = parse_ratio)]
    ratio: (u32, u32),
    /// Seconds to run (default 10 unless --requests is given).
    #[arg(long, conflicts_with = "requests")]
    duration: Option<f64>,
    /// Requests to send in all, instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Set every key once before measuring; a miss is then an error.
    #[arg(long)]
    preload: bool,
    /// Every key was set before this run (e.g. by an earlier `--fill`): a
    /// miss is an error.
    #[arg(long, conflicts_with = "preload")]
    assume_preloaded: bool,
    /// Only set keys 1..=N once each, in order, and report (fills a server,
    /// e.g. to measure memory per item). Overrides --keys and --ratio.
    #[arg(long, conflicts_with_all = ["preload", "duration", "requests"])]
    fill: Option<u64>,
    /// Generator threads, each an epoll loop over its share of connections.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Per-request timeout in milliseconds: a batch unanswered this long
    /// drops its connection and counts its requests as timeouts.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Seed for key and operation choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Free text copied into the JSON line (e.g. a workload name).
    #[arg(long)]
    label: Option<String>,
    /// Offer about this many requests per second in all, instead of as
    /// many as the server answers: each connection starts a batch every
    /// `connections × pipeline / rate` seconds (later if the last one is
    /// still unanswered). Latency still runs from each batch's send, so
    /// below the server's capacity it is a request's time at that load
    /// rather than its time in a saturated queue.
    #[arg(long)]
    rate: Option<f64>,
}

fn parse_ratio(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once(':').ok_or("expected SETS:GETS, like 1:9")?;
    let sets: u32 = a
        .trim()
        .parse()
        .map_err(|_| format!("bad set weight {a:?}"))?;
    let gets: u32 = b
        .trim()
        .parse()
        .map_err(|_| format!("bad get weight {b:?}"))?;
    if sets == 0 && gets == 0 {
        return Err("ratio 0:0 sends nothing".into());
    }
    Ok((sets, gets))
}

/// Connections (or keys, or requests) for thread `t` of `n` out of `total`.
fn share(total: u64, t: usize, n: usize) -> (u64, u64) {
    let start = total * t as u64 / n as u64;
    let end = total * (t as u64 + 1) / n as u64;
    (start, end)
}

/// Process CPU time (user + system, all threads) so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct ThreadResult {
    preload: Option<worker::PhaseEnd>,
    main: worker::PhaseEnd,
    elapsed: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoal-loadgen: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(mut args: Args) -> Result<ExitCode, String> {
    if let Some(n) = args.fill {
        args.keys = n;
        args.ratio = (1, 0);
    }
    if args.threads == 0 || args.connections < args.threads {
        return Err("need at least one connection per thread".into());
    }
    if args.pipeline == 0 || args.keys == 0 {
        return Err("--pipeline and --keys must be at least 1".into());
    }
    let addr: SocketAddr = args
        .server
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", args.server))?
        .next()
        .ok_or_else(|| format!("{} resolves to nothing", args.server))?;
    let key = match args.key_len {
        Some(len) => KeyFormat::with_len(len, args.keys)?,
        None => KeyFormat::default_for(args.keys),
    };
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;

    let fill_mode = args.fill.is_some();
    let plan = Arc::new(Plan {
        codec: Codec::new(args.protocol, key, args.value_size),
        addr,
        keys: args.keys,
        ratio: args.ratio,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        expect_hits: args.preload || args.assume_preloaded,
        seed: args.seed,
        pace: match args.rate {
            Some(rate) if rate > 0.0 && !fill_mode => Some(Duration::from_secs_f64(
                (args.connections * args.pipeline) as f64 / rate,
            )),
            Some(_) if !fill_mode => return Err("--rate must be above 0".into()),
            _ => None,
        },
    });
    let duration = match (args.duration, args.requests) {
        (Some(d), _) => Some(Duration::from_secs_f64(d.max(0.0))),
        (None, None) if !fill_mode => Some(Duration::from_secs(10)),
        _ => None,
    };
    let preload_depth = args.pipeline.max(32);
    let ready = Arc::new(Barrier::new(args.threads + 1));

    let mut handles = Vec::with_capacity(args.threads);
    for t in 0..args.threads {
        let plan = Arc::clone(&plan);
        let ready = Arc::clone(&ready);
        let (c0, c1) = share(args.connections as u64, t, args.threads);
        let (k0, k1) = share(args.keys, t, args.threads);
        let requests = args.requests.map(|r| {
            let (r0, r1) = share(r, t, args.threads);
            r1 - r0
        });
        let (preload, pipeline) = (args.preload, args.pipeline);
        let depth = if preload {
            pipeline.max(preload_depth)
        } else {
            pipeline
        };
        let spawned = thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || {
                let conns = (c1 - c0) as usize;
                let worker = Worker::connect(&plan, conns, depth, t);
                let mut worker = match worker {
                    Ok(w) => w,
                    Err(e) => {
                        ready.wait();
                        return Err(format!("thread {t}: {e}"));
                    }
                };
                let preloaded = preload
                    .then(|| worker.run(&plan, Phase::Fill { next: k0, end: k1 }, preload_depth));
                ready.wait();
                let start = Instant::now();
                let phase = if fill_mode {
                    Phase::Fill { next: k0, end: k1 }
                } else {
                    Phase::Mixed {
                        stop_at: duration.map(|d| start + d),
                        remaining: requests,
                    }
                };
                let main = worker.run(&plan, phase, pipeline);
                let elapsed = main
                    .stats
                    .last_response
                    .unwrap_or_else(Instant::now)
                    .saturating_duration_since(start);
                Ok(ThreadResult {
                    preload: preloaded,
                    main,
                    elapsed,
                })
            });
        handles.push(spawned.map_err(|e| format!("cannot start a thread: {e}"))?);
    }
    ready.wait();
    let cpu0 = cpu_time();
    let wall0 = Instant::now();

    let mut total = Stats::new();
    let mut preload_total = Stats::new();
    let mut elapsed = Duration::ZERO;
    let mut aborted = false;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| "a generator thread panicked".to_string())??;
        total.merge(&r.main.stats);
        aborted |= r.main.aborted;
        if let Some(p) = &r.preload {
            preload_total.merge(&p.stats);
            aborted |= p.aborted;
        }
        elapsed = elapsed.max(r.elapsed);
    }
    let cpu = cpu_time().saturating_sub(cpu0);
    let wall = wall0.elapsed();

    let report = Report {
        args: &args,
        key_len: key.len(),
        stats: &total,
        preload_errors: args.preload.then(|| preload_total.errors()),
        elapsed,
        client_cpu: cpu,
        wall,
        aborted,
    };
    // A closed pipe (`| head -1`) is not worth a panic.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", report.human()).and_then(|()| writeln!(out, "{}", report.json()));
    Ok(if aborted {
        ExitCode::from(4)
    } else if total.errors() > 0 || preload_total.errors() > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

struct Report<'a> {
    args: &'a Args,
    key_len: usize,
    stats: &'a Stats,
    preload_errors: Option<u64>,
    elapsed: Duration,
    client_cpu: Duration,
    wall: Duration,
    aborted: bool,
}

impl Report<'_> {
    fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.stats.ops as f64 / secs
        } else {
            0.0
        }
    }

    fn client_util(&self) -> f64 {
        let w = self.wall.as_secs_f64();
        if w > 0.0 {
            self.client_cpu.as_secs_f64() / w
        } else {
            0.0
        }
    }

    fn mode(&self) -> &'static str {
        if self.args.fill.is_some() {
            "fill"
        } else {
            "mixed"
        }
    }

    fn human(&self) -> String {
        let a = self.args;
        let s = self.stats;
        let q = |x| s.quantile_us(x);
        let mut line = format!(
            "{} {} {} conns={} pipeline={} threads={} keys={} value={}B ratio={}:{}: \
             {} ops in {:.2} s = {:.0} ops/s | gets {} (hits {}, misses {}) sets {} | errors {} | \
             latency us p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} | client cpu {:.0}%",
            self.mode(),
            a.protocol.name(),
            a.server,
            a.connections,
            a.pipeline,
            a.threads,
            a.keys,
            a.value_size,
            a.ratio.0,
            a.ratio.1,
            s.ops,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            s.gets,
            s.hits,
            s.misses,
            s.sets,
            s.errors(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            s.hist.max() as f64 / 1000.0,
            100.0 * self.client_util(),
        );
        if s.errors() > 0 {
            line += &format!(
                " [error replies {}, bad values {}, unexpected misses {}, timeouts {}, lost {}, dropped connections {}]",
                s.error_replies,
                s.bad_values,
                s.unexpected_misses,
                s.timeouts,
                s.lost,
                s.conn_failures
            );
        }
        if let Some(e) = self.preload_errors.filter(|&e| e > 0) {
            line += &format!(" [preload errors {e}]");
        }
        if self.aborted {
            line += " [ABORTED: server stopped answering]";
        }
        line
    }

    fn json(&self) -> String {
        let a = self.args;
        let s = self.stats;
        let q = |x| s.quantile_us(x);
        format!(
            concat!(
                "{{\"tool\":\"shoal-loadgen\",\"mode\":\"{}\",\"label\":{},\"server\":{},\"protocol\":\"{}\",",
                "\"connections\":{},\"pipeline\":{},\"rate\":{},\"threads\":{},\"keys\":{},\"key_len\":{},\"value_size\":{},",
                "\"ratio\":\"{}:{}\",\"elapsed_s\":{:.6},\"ops\":{},\"ops_per_sec\":{:.1},",
                "\"gets\":{},\"sets\":{},\"hits\":{},\"misses\":{},\"errors\":{},",
                "\"error_replies\":{},\"bad_values\":{},\"unexpected_misses\":{},\"timeouts\":{},\"lost\":{},",
                "\"dropped_connections\":{},\"preload_errors\":{},",
                "\"p10_us\":{:.1},\"p25_us\":{:.1},\"p50_us\":{:.1},\"p75_us\":{:.1},\"p90_us\":{:.1},",
                "\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"mean_us\":{:.1},",
                "\"client_cpu_s\":{:.3},\"client_cpu_util\":{:.3},\"aborted\":{}}}"
            ),
            self.mode(),
            a.label.as_deref().map_or("null".to_string(), json_str),
            json_str(&a.server),
            a.protocol.name(),
            a.connections,
            a.pipeline,
            a.rate.map_or("null".to_string(), |r| format!("{r:.0}")),
            a.threads,
            a.keys,
            self.key_len,
            a.value_size,
            a.ratio.0,
            a.ratio.1,
            self.elapsed.as_secs_f64(),
            s.ops,
            self.ops_per_sec(),
            s.gets,
            s.sets,
            s.hits,
            s.misses,
            s.errors(),
            s.error_replies,
            s.bad_values,
            s.unexpected_misses,
            s.timeouts,
            s.lost,
            s.conn_failures,
            self.preload_errors
                .map_or("null".to_string(), |e| e.to_string()),
            q(0.1),
            q(0.25),
            q(0.5),
            q(0.75),
            q(0.9),
            q(0.99),
            q(0.999),
            s.hist.max() as f64 / 1000.0,
            s.hist.mean() / 1000.0,
            self.client_cpu.as_secs_f64(),
            self.client_util(),
            self.aborted,
        )
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_and_share() {
        assert_eq!(parse_ratio("1:9"), Ok((1, 9)));
        assert_eq!(parse_ratio("0:1"), Ok((0, 1)));
        assert!(parse_ratio("0:0").is_err());
        assert!(parse_ratio("19").is_err());
        let parts: Vec<_> = (0..3).map(|t| share(50, t, 3)).collect();
        assert_eq!(parts, vec![(0, 16), (16, 33), (33, 50)]);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
