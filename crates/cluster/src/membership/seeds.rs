//! Finding the cluster: resolving `--seeds` and spacing out the retries.

use std::net::SocketAddr;
use std::time::Duration;

/// Doubling retry delays between `min` and `max`: a node whose seeds are
/// not up yet (a StatefulSet starting all pods at once) keeps trying
/// without flooding DNS or the network.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay before the next attempt; each call doubles the following
    /// one, up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to `min`: the cluster was found (or lost again, and should be
    /// looked for promptly).
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// What one round of resolution found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Every address the seeds resolved to, sorted, without duplicates.
    pub(crate) addrs: Vec<SocketAddr>,
    /// Seeds that did not resolve (or timed out), for the log.
    pub(crate) failed: Vec<String>,
}

/// Resolves every seed (`host:port`; a name may yield many addresses, as a
/// Kubernetes headless service does). A seed that fails or takes longer
/// than `timeout` is skipped this round, so one bad entry never holds up
/// the others.
pub(crate) async fn resolve(seeds: &[String], timeout: Duration) -> Resolved {
    let mut resolved = Resolved::default();
    for seed in seeds {
        match tokio::time::timeout(timeout, tokio::net::lookup_host(seed.as_str())).await {
            Ok(Ok(addrs)) => resolved.addrs.extend(addrs),
            Ok(Err(_)) | Err(_) => resolved.failed.push(seed.clone()),
        }
    }
    resolved.addrs.sort_unstable();
    resolved.addrs.dedup();
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(200), ms(5_000));
        let delays: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), ms(200));
    }

    #[tokio::test]
    async fn resolves_literals_and_skips_what_does_not_resolve() {
        let seeds = vec![
            "127.0.0.1:7946".to_string(),
            "127.0.0.1:7946".to_string(),
            "not a seed".to_string(),
            "[::1]:7000".to_string(),
        ];
        let got = resolve(&seeds, Duration::from_secs(2)).await;
        assert_eq!(
            got.addrs,
            [
                "127.0.0.1:7946".parse::<SocketAddr>().unwrap(),
                "[::1]:7000".parse().unwrap()
            ]
        );
        assert_eq!(got.failed, ["not a seed"]);
    }
}
