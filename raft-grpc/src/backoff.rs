//! Reconnect delays and log rate limiting: small pure pieces of the peer tasks.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Exponential backoff with "equal jitter": the n-th delay is drawn uniformly from
/// `[d/2, d]` where `d = min(initial * 2^n, max)`. The jitter keeps peers that lost a node at
/// the same moment from reconnecting in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    // Invariant: initial <= current <= max.
    current: Duration,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        assert!(initial <= max && !initial.is_zero(), "backoff needs 0 < initial <= max");
        Backoff { initial, max, current: initial, rng: seed }
    }

    /// The next delay; each call doubles the bound up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let bound = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = bound / 2;
        let span = u64::try_from((bound - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.next_random() % span.saturating_add(1))
    }

    /// Back to the initial delay, after a success.
    pub(crate) fn reset(&mut self) {
        self.current = self.initial;
    }

    /// splitmix64.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A seed that differs between processes and peers.
pub(crate) fn seed(a: u64, b: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ a.rotate_left(17) ^ b.rotate_left(41) ^ u64::from(std::process::id())
}

/// How loudly to log a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loudness {
    /// The first failure after a success, or the first in `interval`: a warning.
    Warn {
        /// Failures since the last warning that were not warned about.
        suppressed: u64,
    },
    /// Already warned recently: debug level only.
    Quiet,
}

/// Rate limit for "peer is down" warnings: one when a peer goes down, then at most one per
/// interval while it stays down, and one info line when it comes back.
#[derive(Debug)]
pub(crate) struct FailureLog {
    interval: Duration,
    down_since: Option<Instant>,
    last_warn: Option<Instant>,
    suppressed: u64,
}

impl FailureLog {
    pub(crate) fn new(interval: Duration) -> FailureLog {
        FailureLog { interval, down_since: None, last_warn: None, suppressed: 0 }
    }

    /// Records a failure at `now` and says how loudly to report it.
    pub(crate) fn failure(&mut self, now: Instant) -> Loudness {
        self.down_since.get_or_insert(now);
        match self.last_warn {
            Some(at) if now.saturating_duration_since(at) < self.interval => {
                self.suppressed += 1;
                Loudness::Quiet
            }
            _ => {
                self.last_warn = Some(now);
                Loudness::Warn { suppressed: std::mem::take(&mut self.suppressed) }
            }
        }
    }

    /// Records a success; returns how long the peer was down if it was.
    pub(crate) fn success(&mut self, now: Instant) -> Option<Duration> {
        self.last_warn = None;
        self.suppressed = 0;
        self.down_since.take().map(|since| now.saturating_duration_since(since))
    }
}

/// "Log once" for refusals on the server: the first refusal of each kind for a given claimed
/// identity is a warning, repeats are debug. Remembers at most `capacity` keys, so a flood of
/// distinct bogus identities cannot grow memory (past it, everything is debug).
#[derive(Debug)]
pub(crate) struct OnceLog {
    capacity: usize,
    seen: Mutex<HashSet<(&'static str, u64, u64)>>,
}

impl OnceLog {
    pub(crate) fn new(capacity: usize) -> OnceLog {
        OnceLog { capacity, seen: Mutex::new(HashSet::new()) }
    }

    /// Whether this is the first time `(kind, a, b)` is seen (and there is room to remember it).
    pub(crate) fn first(&self, kind: &'static str, a: u64, b: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= self.capacity {
            return false;
        }
        seen.insert((kind, a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let ms = Duration::from_millis;
        for seed in 0..50 {
            let mut b = Backoff::new(ms(100), ms(1000), seed);
            let bounds = [100, 200, 400, 800, 1000, 1000, 1000];
            for bound in bounds {
                let d = b.next_delay();
                assert!(
                    d >= ms(bound) / 2 && d <= ms(bound),
                    "seed {seed}: {d:?} outside [{bound}/2, {bound}]"
                );
            }
            b.reset();
            assert!(b.next_delay() <= ms(100));
        }
    }

    #[test]
    fn backoff_jitter_spreads() {
        let mut delays: Vec<_> = (0..20)
            .map(|s| Backoff::new(Duration::from_secs(1), Duration::from_secs(1), s).next_delay())
            .collect();
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 10, "jitter should differ between seeds: {delays:?}");
    }

    #[test]
    fn failure_log_warns_once_per_interval() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut log = FailureLog::new(s(30));
        assert_eq!(log.failure(t0), Loudness::Warn { suppressed: 0 });
        for i in 1..10 {
            assert_eq!(log.failure(t0 + s(i)), Loudness::Quiet);
        }
        assert_eq!(log.failure(t0 + s(30)), Loudness::Warn { suppressed: 9 });
        assert_eq!(log.failure(t0 + s(31)), Loudness::Quiet);
        assert_eq!(log.success(t0 + s(40)), Some(s(40)));
        assert_eq!(log.success(t0 + s(41)), None);
        // Down again: warned at once.
        assert_eq!(log.failure(t0 + s(42)), Loudness::Warn { suppressed: 0 });
    }

    #[test]
    fn once_log_is_bounded() {
        let log = OnceLog::new(2);
        assert!(log.first("cluster", 1, 2));
        assert!(!log.first("cluster", 1, 2));
        assert!(log.first("unknown", 1, 2));
        assert!(!log.first("other", 9, 9), "full: no more warnings, no more memory");
    }
}
