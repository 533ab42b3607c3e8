//! One generator thread: a plain non-blocking epoll loop (mio) over its share
//! of the connections.
//!
//! Each connection runs memtier's cycle: build a batch of `depth` requests in
//! a reused buffer, send it with one `write`, read the answers back, and only
//! then send the next batch. The latency of each request is the time from its
//! batch's send to the `read` that completed its answer. Nothing on this path
//! allocates: buffers are sized once from the [`Codec`], and a batch's
//! operations live in a reused `Vec`.
//!
//! Failure never hangs the run: a batch unanswered after `timeout` drops its
//! connection (the requests count as timeouts) and the connection is redialled
//! 100 ms later; a thread with no answer at all for twice the timeout gives up.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::proto::{Codec, OpKind, Parsed};
use crate::stats::Stats;

const SWEEP_EVERY: Duration = Duration::from_millis(10);
const REDIAL_AFTER: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What every thread shares, read-only.
pub struct Plan {
    pub codec: Codec,
    pub addr: SocketAddr,
    pub keys: u64,
    /// (sets, gets) out of sets + gets.
    pub ratio: (u32, u32),
    pub timeout: Duration,
    /// Count a miss as an error: every key was set before this phase.
    pub expect_hits: bool,
    pub seed: u64,
    /// With `--rate`: how often each connection starts a batch.
    pub pace: Option<Duration>,
}

/// Where the next operations come from.
pub enum Phase {
    /// Set keys `next..end` once each, in order.
    Fill { next: u64, end: u64 },
    /// Random keys, sets and gets in `Plan::ratio`, until `stop_at` or until
    /// `remaining` requests were sent.
    Mixed {
        stop_at: Option<Instant>,
        remaining: Option<u64>,
    },
}

impl Phase {
    /// Whether another batch may start at `now`.
    fn more(&self, now: Instant) -> bool {
        match *self {
            Phase::Fill { next, end } => next < end,
            Phase::Mixed { stop_at, remaining } => {
                stop_at.is_none_or(|t| now < t) && remaining.is_none_or(|r| r > 0)
            }
        }
    }

    #[inline]
    fn next_op(&mut self, plan: &Plan, rng: &mut Rng) -> Option<(OpKind, u64)> {
        match self {
            Phase::Fill { next, end } => {
                if *next >= *end {
                    return None;
                }
                let k = *next;
                *next += 1;
                Some((OpKind::Set, k + 1))
            }
            Phase::Mixed { remaining, .. } => {
                if let Some(r) = remaining {
                    if *r == 0 {
                        return None;
                    }
                    *r -= 1;
                }
                let (sets, gets) = plan.ratio;
                let kind = if rng.below((sets + gets) as u64) < sets as u64 {
                    OpKind::Set
                } else {
                    OpKind::Get
                };
                Some((kind, rng.below(plan.keys) + 1))
            }
        }
    }
}

/// wyrand: tiny, fast, good enough to pick keys.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x2d35_8dcc_aa6c_78a5)
    }

    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.0 as u128).wrapping_mul((self.0 ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) ^ t) as u64
    }

    /// Uniform in `0..n` (multiply-shift, no division).
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

#[derive(Clone, Copy)]
struct Op {
    kind: OpKind,
    key: u64,
}

struct Conn {
    stream: Option<TcpStream>,
    redial_at: Option<Instant>,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    /// Free space wanted at the end of `rbuf` before a read.
    min_room: usize,
    ops: Vec<Op>,
    /// Index in `ops` of the next answer expected.
    next: usize,
    in_flight: bool,
    sent_at: Instant,
    /// Paced (`Plan::pace`): when the next batch is due, and whether it
    /// waits for that time.
    due: Instant,
    waiting: bool,
    /// Binary opaque of `ops[0]`; `ops[i]` carries `seq0 + i`.
    seq0: u32,
    rng: Rng,
}

/// Why a connection was dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout,
    Broken,
}

struct Ctx<'a> {
    plan: &'a Plan,
    phase: &'a mut Phase,
    stats: &'a mut Stats,
    registry: &'a Registry,
    depth: usize,
}

impl Conn {
    fn new(plan: &Plan, depth: usize, seed: u64) -> Self {
        let resp = plan.codec.max_response_len();
        Conn {
            stream: None,
            redial_at: None,
            wbuf: Vec::with_capacity(depth * plan.codec.max_request_len()),
            wpos: 0,
            rbuf: vec![0; (2 * depth * resp).max(64 << 10)],
            rstart: 0,
            rend: 0,
            min_room: resp.max(16 << 10),
            ops: Vec::with_capacity(depth),
            next: 0,
            in_flight: false,
            sent_at: Instant::now(),
            due: Instant::now(),
            waiting: false,
            seq0: 0,
            rng: Rng::new(seed),
        }
    }

    /// Opens the connection (blocking, bounded by `CONNECT_TIMEOUT`: on
    /// loopback this is immediate) and registers it.
    fn dial(&mut self, addr: SocketAddr, registry: &Registry, token: Token) -> io::Result<()> {
        let s = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        let mut s = TcpStream::from_std(s);
        registry.register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
        self.stream = Some(s);
        self.redial_at = None;
        self.rstart = 0;
        self.rend = 0;
        Ok(())
    }

    /// Drops the connection: the batch's unanswered requests are lost.
    fn drop_conn(&mut self, cx: &mut Ctx, why: Failure, now: Instant) {
        if let Some(mut s) = self.stream.take() {
            let _ = cx.registry.deregister(&mut s);
        }
        let unanswered = if self.in_flight {
            (self.ops.len() - self.next) as u64
        } else {
            0
        };
        match why {
            Failure::Timeout => cx.stats.timeouts += unanswered,
            Failure::Broken => cx.stats.lost += unanswered,
        }
        cx.stats.conn_failures += 1;
        self.in_flight = false;
        self.ops.clear();
        self.redial_at = Some(now + REDIAL_AFTER);
    }

    /// Builds and sends the next batch, if the phase has one.
    fn start_batch(&mut self, cx: &mut Ctx) {
        self.ops.clear();
        self.wbuf.clear();
        self.wpos = 0;
        self.next = 0;
        self.seq0 = self.seq0.wrapping_add(cx.depth as u32);
        for i in 0..cx.depth {
            let Some((kind, key)) = cx.phase.next_op(cx.plan, &mut self.rng) else {
                break;
            };
            cx.plan
                .codec
                .push(&mut self.wbuf, kind, key, self.seq0.wrapping_add(i as u32));
            self.ops.push(Op { kind, key });
        }
        if self.ops.is_empty() {
            return;
        }
        self.in_flight = true;
        self.sent_at = Instant::now();
        if self.flush().is_err() {
            self.drop_conn(cx, Failure::Broken, self.sent_at);
        }
    }

    /// Writes what the socket takes; the rest waits for a writable event.
    fn flush(&mut self) -> io::Result<()> {
        let Some(s) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.wpos < self.wbuf.len() {
            match s.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn on_writable(&mut self, cx: &mut Ctx) {
        if self.in_flight && self.wpos < self.wbuf.len() && self.flush().is_err() {
            self.drop_conn(cx, Failure::Broken, Instant::now());
        }
    }

    fn on_readable(&mut self, cx: &mut Ctx) {
        loop {
            if self.stream.is_none() {
                return;
            }
            if self.rbuf.len() - self.rend < self.min_room {
                self.make_room();
            }
            let Some(s) = self.stream.as_mut() else {
                return;
            };
            let room = self.rbuf.len() - self.rend;
            match s.read(&mut self.rbuf[self.rend..]) {
                Ok(0) => return self.drop_conn(cx, Failure::Broken, Instant::now()),
                Ok(n) => {
                    let now = Instant::now();
                    self.rend += n;
                    if !self.consume(cx, now) {
                        return self.drop_conn(cx, Failure::Broken, now);
                    }
                    // A short read drained the socket (what tokio assumes
                    // too); edge-triggered epoll reports the next arrival.
                    if n < room {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.drop_conn(cx, Failure::Broken, Instant::now()),
            }
        }
    }

    fn make_room(&mut self) {
        if self.rstart > 0 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        if self.rbuf.len() - self.rend < self.min_room {
            // Only an oversized answer gets here; it will be judged by parse.
            let len = self.rbuf.len() * 2;
            self.rbuf.resize(len, 0);
        }
    }

    /// Takes every whole answer off the read buffer, and starts the next
    /// batch when this one is complete. `false`: the stream is out of step.
    fn consume(&mut self, cx: &mut Ctx, now: Instant) -> bool {
        if !self.in_flight {
            return false; // bytes nobody asked for
        }
        while self.next < self.ops.len() {
            let op = self.ops[self.next];
            let opaque = self.seq0.wrapping_add(self.next as u32);
            match cx
                .plan
                .codec
                .parse(&self.rbuf[self.rstart..self.rend], op.kind, op.key, opaque)
            {
                Parsed::Incomplete => break,
                Parsed::Desync => return false,
                Parsed::Done { len, outcome } => {
                    self.rstart += len;
                    self.next += 1;
                    cx.stats
                        .record(op.kind, outcome, now - self.sent_at, cx.plan.expect_hits);
                }
            }
        }
        cx.stats.last_response = Some(now);
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
        if self.next == self.ops.len() {
            if self.rend != self.rstart {
                return false; // more bytes than answers
            }
            self.in_flight = false;
            if cx.phase.more(now) {
                self.next_batch(cx, now);
            }
        }
        true
    }

    /// Starts the next batch now, or (paced) marks it waiting for its time.
    fn next_batch(&mut self, cx: &mut Ctx, now: Instant) {
        if let Some(pace) = cx.plan.pace {
            self.due = next_due(self.due, pace, now);
            if self.due > now {
                self.waiting = true;
                return;
            }
        }
        self.start_batch(cx);
    }
}

/// When a paced connection's next batch is due, its last one having been
/// due at `due`: one `pace` later. Behind schedule (the server is slower
/// than the rate) that is already past, and the batch starts at once; the
/// whole paces missed beyond it are skipped, but the connection keeps its
/// place on its own grid of due times. Resetting the grid to `now` would
/// give every connection answered in the same pass of the server the same
/// phase, and the offered load would arrive in bursts.
fn next_due(due: Instant, pace: Duration, now: Instant) -> Instant {
    let next = due + pace;
    let missed = now.saturating_duration_since(next).as_nanos() / pace.as_nanos().max(1);
    next + pace * u32::try_from(missed).unwrap_or(u32::MAX)
}

/// A thread's connections and its poller.
pub struct Worker {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
}

/// How a phase ended.
pub struct PhaseEnd {
    pub stats: Stats,
    /// The watchdog gave up: no answer for twice the timeout.
    pub aborted: bool,
}

impl Worker {
    /// Opens `n` connections; one that cannot be opened is redialled later.
    pub fn connect(plan: &Plan, n: usize, depth: usize, thread: usize) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let seed = plan
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add((thread * 65_537 + i) as u64);
            let mut c = Conn::new(plan, depth, seed);
            if c.dial(plan.addr, poll.registry(), Token(i)).is_err() {
                c.redial_at = Some(Instant::now());
            }
            conns.push(c);
        }
        Ok(Worker {
            poll,
            events: Events::with_capacity(1024),
            conns,
        })
    }

    /// Runs one phase to its end: every connection busy until the phase has
    /// no more batches, then the last answers drained.
    pub fn run(&mut self, plan: &Plan, mut phase: Phase, depth: usize) -> PhaseEnd {
        let mut stats = Stats::new();
        let mut aborted = false;
        let Worker {
            poll,
            events,
            conns,
        } = self;
        let started = Instant::now();
        let n = conns.len().max(1) as u32;
        for (i, c) in conns.iter_mut().enumerate() {
            let mut cx = Ctx {
                plan,
                phase: &mut phase,
                stats: &mut stats,
                registry: poll.registry(),
                depth,
            };
            c.waiting = false;
            if let Some(pace) = plan.pace {
                // Spread the connections' first batches over one pace.
                c.due = started + pace * i as u32 / n;
                c.waiting = c.stream.is_some();
            } else if c.stream.is_some() {
                c.start_batch(&mut cx);
            }
        }
        let mut last_sweep = started;
        loop {
            // Paced: wake for the next due batch; epoll counts whole
            // milliseconds, so one due sooner is waited for by polling.
            let next_due = plan.pace.and_then(|_| {
                let now = Instant::now();
                conns
                    .iter()
                    .filter(|c| c.waiting)
                    .map(|c| c.due.saturating_duration_since(now))
                    .min()
            });
            let wait = next_due.map_or(SWEEP_EVERY, |d| {
                if d < Duration::from_millis(1) {
                    Duration::ZERO
                } else {
                    d.min(SWEEP_EVERY)
                }
            });
            if let Err(e) = poll.poll(events, Some(wait))
                && e.kind() != io::ErrorKind::Interrupted
            {
                eprintln!("shoal-loadgen: poll failed: {e}");
                aborted = true;
                break;
            }
            let mut cx = Ctx {
                plan,
                phase: &mut phase,
                stats: &mut stats,
                registry: poll.registry(),
                depth,
            };
            for ev in events.iter() {
                let c = &mut conns[ev.token().0];
                if ev.is_writable() {
                    c.on_writable(&mut cx);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    c.on_readable(&mut cx);
                }
            }
            let now = Instant::now();
            let more = cx.phase.more(now);
            if plan.pace.is_some() {
                for c in conns.iter_mut().filter(|c| c.waiting && c.due <= now) {
                    c.waiting = false;
                    if more && c.stream.is_some() {
                        c.start_batch(&mut cx);
                    }
                }
            }
            if !more && !conns.iter().any(|c| c.in_flight) {
                break;
            }
            if now - last_sweep < SWEEP_EVERY {
                continue;
            }
            last_sweep = now;
            for (i, c) in conns.iter_mut().enumerate() {
                if c.in_flight && now - c.sent_at > plan.timeout {
                    c.drop_conn(&mut cx, Failure::Timeout, now);
                }
                if c.stream.is_none() && more && c.redial_at.is_some_and(|t| t <= now) {
                    match c.dial(plan.addr, cx.registry, Token(i)) {
                        Ok(()) => {}
                        Err(_) => {
                            cx.stats.conn_failures += 1;
                            c.redial_at = Some(Instant::now() + REDIAL_AFTER);
                        }
                    }
                }
                if c.stream.is_some() && !c.in_flight && !c.waiting && cx.phase.more(now) {
                    c.next_batch(&mut cx, now);
                }
            }
            let quiet_since = cx.stats.last_response.unwrap_or(started);
            if now - quiet_since > (2 * plan.timeout).max(Duration::from_secs(1)) {
                eprintln!(
                    "shoal-loadgen: no answer from {} for {:?}, giving up",
                    plan.addr,
                    now - quiet_since
                );
                for c in conns.iter_mut().filter(|c| c.in_flight) {
                    c.drop_conn(&mut cx, Failure::Timeout, now);
                }
                aborted = true;
                break;
            }
        }
        PhaseEnd { stats, aborted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACE: Duration = Duration::from_millis(2);

    #[test]
    fn on_schedule_the_next_batch_is_one_pace_later() {
        let t0 = Instant::now();
        assert_eq!(next_due(t0, PACE, t0 + PACE / 2), t0 + PACE);
        // Less than a pace late: due already, and the grid stays.
        assert_eq!(next_due(t0, PACE, t0 + PACE * 3 / 2), t0 + PACE);
    }

    #[test]
    fn far_behind_skips_missed_slots_but_keeps_the_connections_phase() {
        let t0 = Instant::now();
        // Two connections half a pace apart, both answered at the same
        // moment, several paces late.
        let a = t0;
        let b = t0 + PACE / 2;
        let now = t0 + PACE * 7 + Duration::from_micros(300);
        let (next_a, next_b) = (next_due(a, PACE, now), next_due(b, PACE, now));
        for (start, next) in [(a, next_a), (b, next_b)] {
            assert!(
                next <= now && now - next < PACE,
                "due at once, within a pace"
            );
            let offset = (next - start).as_nanos() % PACE.as_nanos();
            assert_eq!(offset, 0, "still on its own grid");
        }
        // a's grid is t0 + 2k ms, b's t0 + 1 + 2k ms: 14 and 13 ms.
        assert_eq!(next_a - next_b, PACE / 2, "phases kept apart");
    }
}
