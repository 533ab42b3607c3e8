//! Counters and the latency histogram one thread fills, merged at the end.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::proto::{OpKind, Outcome};

/// Latencies are kept in nanoseconds, 3 significant digits, up to a minute.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

pub struct Stats {
    pub hist: Histogram<u64>,
    /// Responses received, error replies included.
    pub ops: u64,
    pub gets: u64,
    pub sets: u64,
    pub hits: u64,
    pub misses: u64,
    /// `ERROR`/`SERVER_ERROR`/`NOT_STORED`/non-zero binary status.
    pub error_replies: u64,
    /// Hits whose key or bytes were wrong.
    pub bad_values: u64,
    /// Misses on keys that were preloaded.
    pub unexpected_misses: u64,
    /// Requests with no answer within the timeout.
    pub timeouts: u64,
    /// Requests lost with a connection that failed or fell out of step.
    pub lost: u64,
    /// Connections dropped (reset, EOF, desync, timeout, failed connect).
    pub conn_failures: u64,
    pub last_response: Option<Instant>,
}

impl Stats {
    pub fn new() -> Self {
        Stats {
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds"),
            ops: 0,
            gets: 0,
            sets: 0,
            hits: 0,
            misses: 0,
            error_replies: 0,
            bad_values: 0,
            unexpected_misses: 0,
            timeouts: 0,
            lost: 0,
            conn_failures: 0,
            last_response: None,
        }
    }

    #[inline]
    pub fn record(&mut self, kind: OpKind, outcome: Outcome, latency: Duration, expect_hits: bool) {
        self.ops += 1;
        self.hist.saturating_record(latency.as_nanos() as u64);
        match kind {
            OpKind::Get => self.gets += 1,
            OpKind::Set => self.sets += 1,
        }
        match outcome {
            Outcome::Hit => self.hits += 1,
            Outcome::Miss => {
                self.misses += 1;
                if expect_hits {
                    self.unexpected_misses += 1;
                }
            }
            Outcome::Stored => {}
            Outcome::ErrorReply => self.error_replies += 1,
            Outcome::BadValue => self.bad_values += 1,
        }
    }

    /// Every request that did not get the answer it should have.
    pub fn errors(&self) -> u64 {
        self.error_replies + self.bad_values + self.unexpected_misses + self.timeouts + self.lost
    }

    pub fn merge(&mut self, o: &Stats) {
        self.hist.add(&o.hist).expect("same histogram bounds");
        self.ops += o.ops;
        self.gets += o.gets;
        self.sets += o.sets;
        self.hits += o.hits;
        self.misses += o.misses;
        self.error_replies += o.error_replies;
        self.bad_values += o.bad_values;
        self.unexpected_misses += o.unexpected_misses;
        self.timeouts += o.timeouts;
        self.lost += o.lost;
        self.conn_failures += o.conn_failures;
        self.last_response = match (self.last_response, o.last_response) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Latency at quantile `q`, in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}
