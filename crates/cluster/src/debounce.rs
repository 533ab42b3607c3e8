//! When to rebuild the ring: membership changes in, "rebuild now with these
//! members" out.
//!
//! Every ring rebuild moves keys, and a moved key is a cold miss (and, for
//! the node that loses it, data it must stop serving). Gossip is noisy: a
//! member can flap (down, up, down), and after a partition heals foca may
//! gossip stale "down" updates about healthy nodes that come back within
//! about a second. So changes are not applied as they arrive:
//!
//! - **settle**: a rebuild waits until no change has arrived for `settle`,
//!   so a burst (nodes joining one by one, a down promptly contradicted) is
//!   applied as one rebuild — or none, if it cancels out.
//! - **max_delay**: a stream of changes cannot postpone the rebuild more
//!   than `max_delay` after the first of them, so a dead owner's keys move
//!   on in bounded time.
//! - **min_interval**: two rebuilds are never closer than `min_interval`:
//!   one flapping member reshuffles keys at most once per window. This wins
//!   over `max_delay`.
//! - A pending change that is undone before it is applied (the set of ready
//!   members is back to what the ring has) is dropped: no rebuild at all.
//!
//! Pure: times are plain values (a [`Duration`] since any epoch the driver
//! picks, e.g. its start), nothing here reads a clock or sleeps. The driver
//! (the membership task) feeds [`Debounce::change`], sleeps until
//! [`Debounce::deadline`], and calls [`Debounce::poll`].

use std::collections::BTreeSet;
use std::time::Duration;

use crate::NodeName;

/// The timings; see the module docs for what each bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebounceConfig {
    /// Quiet time after the latest change before rebuilding. Default 500 ms:
    /// longer than a burst of joins takes to gossip (~0.2 s), short next to
    /// failure detection (1–7 s), so it adds little to the time a dead
    /// owner costs clients errors.
    pub settle: Duration,
    /// Longest a pending change waits while changes keep coming. Default 2 s.
    pub max_delay: Duration,
    /// Shortest time between two rebuilds. Default 5 s.
    pub min_interval: Duration,
}

impl Default for DebounceConfig {
    fn default() -> Self {
        DebounceConfig {
            settle: Duration::from_millis(500),
            max_delay: Duration::from_secs(2),
            min_interval: Duration::from_secs(5),
        }
    }
}

/// A change in the set of members the ring is built from (the *ready*
/// ones): the driver maps gossip's joins, state changes, downs and leaves
/// onto these, by stable name only (a renamed identity — same name, new
/// generation or addresses — is no change here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The member is ready and should own keys.
    Up(NodeName),
    /// The member left, was declared down, or stopped being ready.
    Down(NodeName),
}

/// The debouncer's state: the members the current ring was built from, the
/// members it should have, and when things happened.
#[derive(Debug, Clone)]
pub struct Debounce {
    config: DebounceConfig,
    /// What the last rebuild used (empty before the first).
    applied: BTreeSet<NodeName>,
    /// What the latest changes say.
    desired: BTreeSet<NodeName>,
    /// When the current run of unapplied changes began (`None`: nothing
    /// pending).
    first_change: Option<Duration>,
    last_change: Duration,
    last_rebuild: Option<Duration>,
    /// The latest time seen, so a late-stamped input cannot move time back.
    now: Duration,
}

impl Debounce {
    /// Nothing applied yet: the first rebuild (the node's first ring) is
    /// subject to `settle` and `max_delay` but not to `min_interval`.
    pub fn new(config: DebounceConfig) -> Debounce {
        Debounce {
            config,
            applied: BTreeSet::new(),
            desired: BTreeSet::new(),
            first_change: None,
            last_change: Duration::ZERO,
            last_rebuild: None,
            now: Duration::ZERO,
        }
    }

    pub fn config(&self) -> &DebounceConfig {
        &self.config
    }

    /// Records a change seen at `at`. A change that does not alter the
    /// desired set (an `Up` for a member already up) is ignored and resets
    /// no timer. Times earlier than one already seen are taken as that one.
    pub fn change(&mut self, at: Duration, change: Change) {
        let at = self.advance(at);
        let changed = match change {
            Change::Up(name) => self.desired.insert(name),
            Change::Down(name) => self.desired.remove(&name),
        };
        if !changed {
            return;
        }
        if self.desired == self.applied {
            // Undone before it was applied: nothing to rebuild.
            self.first_change = None;
            return;
        }
        self.first_change.get_or_insert(at);
        self.last_change = at;
    }

    /// When [`Debounce::poll`] should next be called; `None` when nothing
    /// is pending.
    pub fn deadline(&self) -> Option<Duration> {
        let first = self.first_change?;
        let due = (self.last_change + self.config.settle).min(first + self.config.max_delay);
        Some(match self.last_rebuild {
            Some(last) => due.max(last + self.config.min_interval),
            None => due,
        })
    }

    /// If a rebuild is due at `now`, the members to build the new ring
    /// from (sorted); they become the applied set. `None` when nothing is
    /// pending or it is not yet time.
    pub fn poll(&mut self, now: Duration) -> Option<Vec<NodeName>> {
        let now = self.advance(now);
        if self.deadline().is_none_or(|deadline| now < deadline) {
            return None;
        }
        self.first_change = None;
        self.last_rebuild = Some(now);
        self.applied.clone_from(&self.desired);
        Some(self.applied.iter().cloned().collect())
    }

    /// The members the current ring was built from.
    pub fn applied(&self) -> &BTreeSet<NodeName> {
        &self.applied
    }

    /// The members the latest changes say the ring should have.
    pub fn desired(&self) -> &BTreeSet<NodeName> {
        &self.desired
    }

    /// Whether changes are waiting to be applied.
    pub fn is_pending(&self) -> bool {
        self.first_change.is_some()
    }

    fn advance(&mut self, at: Duration) -> Duration {
        self.now = self.now.max(at);
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn name(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    enum Ev {
        Up(&'static str),
        Down(&'static str),
    }

    /// Drives a debouncer as the membership task will: deliver each event at
    /// its time, and poll exactly at every deadline that falls before the
    /// next event (and up to `until`). Returns the rebuilds: (time in ms,
    /// members).
    fn run(config: DebounceConfig, events: &[(u64, Ev)], until: u64) -> Vec<(u64, Vec<String>)> {
        let mut d = Debounce::new(config);
        let mut rebuilds = Vec::new();
        let mut poll_until = |d: &mut Debounce, t: Duration| {
            while let Some(deadline) = d.deadline().filter(|&dl| dl <= t) {
                if let Some(members) = d.poll(deadline) {
                    let members = members.iter().map(|m| m.to_string()).collect();
                    rebuilds.push((deadline.as_millis() as u64, members));
                }
            }
        };
        for (at, ev) in events {
            poll_until(&mut d, ms(*at));
            let change = match ev {
                Ev::Up(n) => Change::Up(name(n)),
                Ev::Down(n) => Change::Down(name(n)),
            };
            d.change(ms(*at), change);
        }
        poll_until(&mut d, ms(until));
        rebuilds
    }

    fn config() -> DebounceConfig {
        DebounceConfig {
            settle: ms(500),
            max_delay: ms(2_000),
            min_interval: ms(5_000),
        }
    }

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_join_burst_is_one_rebuild() {
        use Ev::*;
        let got = run(
            config(),
            &[(0, Up("a")), (100, Up("b")), (150, Up("c"))],
            10_000,
        );
        assert_eq!(got, [(650, members(&["a", "b", "c"]))]);
    }

    #[test]
    fn a_crash_is_applied_after_settle_when_the_ring_is_old() {
        use Ev::*;
        let got = run(
            config(),
            &[
                (0, Up("a")),
                (0, Up("b")),
                (0, Up("c")),
                (60_000, Down("b")),
            ],
            70_000,
        );
        assert_eq!(
            got,
            [
                (500, members(&["a", "b", "c"])),
                (60_500, members(&["a", "c"]))
            ]
        );
    }

    #[test]
    fn a_down_contradicted_within_settle_rebuilds_nothing() {
        use Ev::*;
        // foca after a partition heals: a stale "down", then the node is
        // back under a new generation a few hundred ms later.
        let got = run(
            config(),
            &[
                (0, Up("a")),
                (0, Up("b")),
                (60_000, Down("b")),
                (60_300, Up("b")),
            ],
            70_000,
        );
        assert_eq!(got, [(500, members(&["a", "b"]))]);
    }

    #[test]
    fn a_flapping_member_reshuffles_at_most_once_per_window() {
        use Ev::*;
        let mut events = vec![(0, Up("a")), (0, Up("b")), (0, Up("c"))];
        // "c" goes down at 10 s and then flaps every 1.5 s for 12 s, ending up.
        let mut up = false;
        for k in 0..9 {
            let t = 10_000 + k * 1_500;
            events.push((t, if up { Up("c") } else { Down("c") }));
            up = !up;
        }
        events.push((23_500, Up("c")));
        let got = run(config(), &events, 60_000);
        // The first down is applied once settled; the 9 flaps that follow
        // become one rebuild per 5 s window (states in between are never
        // applied), and the last one leaves "c" in.
        let times: Vec<u64> = got.iter().map(|r| r.0).collect();
        assert_eq!(times, [500, 10_500, 15_500, 20_500, 25_500]);
        assert_eq!(got[1].1, members(&["a", "b"]));
        assert_eq!(got.last().unwrap().1, members(&["a", "b", "c"]));
    }

    #[test]
    fn changes_that_keep_coming_wait_at_most_max_delay() {
        use Ev::*;
        // A member joins every 300 ms: settle alone would wait forever.
        let events: Vec<(u64, Ev)> = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
            .into_iter()
            .enumerate()
            .map(|(i, n)| (i as u64 * 300, Up(n)))
            .collect();
        let got = run(config(), &events, 20_000);
        assert_eq!(got[0].0, 2_000);
        assert_eq!(got[0].1, members(&["a", "b", "c", "d", "e", "f", "g"]));
        // The rest wait for min_interval after the first rebuild.
        assert_eq!(got[1].0, 7_000);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn min_interval_beats_settle_and_max_delay() {
        use Ev::*;
        let got = run(config(), &[(0, Up("a")), (1_000, Up("b"))], 20_000);
        assert_eq!(got, [(500, members(&["a"])), (5_500, members(&["a", "b"]))]);
    }

    #[test]
    fn a_change_undone_while_waiting_out_min_interval_is_dropped() {
        use Ev::*;
        let got = run(
            config(),
            &[
                (0, Up("a")),
                (0, Up("b")),
                (1_000, Down("b")),
                (3_000, Up("b")),
            ],
            20_000,
        );
        assert_eq!(got, [(500, members(&["a", "b"]))]);
    }

    #[test]
    fn repeated_and_late_inputs_change_nothing() {
        let mut d = Debounce::new(config());
        d.change(ms(1_000), Change::Up(name("a")));
        assert_eq!(d.deadline(), Some(ms(1_500)));
        // Already up: no timer reset.
        d.change(ms(1_400), Change::Up(name("a")));
        assert_eq!(d.deadline(), Some(ms(1_500)));
        // Down for a member never seen: nothing.
        d.change(ms(1_400), Change::Down(name("zz")));
        assert_eq!(d.deadline(), Some(ms(1_500)));
        assert_eq!(d.poll(ms(1_499)), None);
        assert_eq!(d.poll(ms(1_500)), Some(vec![name("a")]));
        assert!(!d.is_pending());
        assert_eq!(d.poll(ms(9_000)), None);
        // A time from the past is read as the latest seen (9 s).
        d.change(ms(10), Change::Up(name("b")));
        assert_eq!(d.deadline(), Some(ms(9_500)));
        assert_eq!(d.desired().len(), 2);
        assert_eq!(d.applied().len(), 1);
    }

    #[test]
    fn a_member_gone_before_the_first_ring_leaves_nothing_pending() {
        // Before the first rebuild the ring is empty, so an up undone by a
        // down is no change either.
        let mut d = Debounce::new(config());
        d.change(ms(0), Change::Up(name("a")));
        d.change(ms(100), Change::Down(name("a")));
        assert_eq!(d.deadline(), None);
        assert_eq!(d.poll(ms(600)), None);
    }
}
