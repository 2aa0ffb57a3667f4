//! The one backoff of the bus: event retries, HTTP pushes and NATS reconnects all wait this way.

use std::time::Duration;

/// Exponential backoff with "equal" jitter: the pause before retry `attempt` (1-based) is
/// `base` doubled for each attempt after the first, capped at `max`, of which half is waited
/// for sure and the other half at random. The sure half keeps a storm of failures from
/// retrying at once; the random half keeps many failing callers from retrying in lockstep.
///
/// Written here rather than taken from a crate: it is these ten lines, and the call sites want
/// a pure function of the attempt number (a worker that retries in place, a relay that resends
/// later), not an iterator or a retry loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The pause before retry number `attempt` (1-based; 0 counts as 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let half = self.cap(attempt).max(Duration::from_millis(1)) / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// The pause before retry number `attempt` with "full" jitter: anywhere between zero and
    /// the same cap. For retries of requests, where a caller waits and many callers retrying a
    /// callee that just failed must spread out most (the edge policies' retries).
    pub fn full_jitter(&self, attempt: u32) -> Duration {
        self.cap(attempt).mul_f64(rand::random::<f64>())
    }

    /// `base` doubled for each attempt after the first, at most `max`.
    fn cap(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.max.max(self.base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_grows_with_each_attempt_and_never_passes_its_cap() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 0..40 {
            let pause = backoff.delay(attempt);
            assert!(pause <= Duration::from_secs(1), "{attempt}: {pause:?}");
        }
        assert!(backoff.delay(1) <= Duration::from_millis(100));
        assert!(backoff.delay(1) >= Duration::from_millis(50));
        assert!(backoff.delay(10) >= Duration::from_millis(500));
    }

    #[test]
    fn full_jitter_spreads_pauses_between_zero_and_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let pauses: Vec<Duration> = (0..200).map(|_| backoff.full_jitter(3)).collect();
        assert!(pauses.iter().all(|p| *p <= Duration::from_millis(400)));
        assert!(pauses.iter().any(|p| *p < Duration::from_millis(100)));
        assert!(pauses.iter().any(|p| *p > Duration::from_millis(300)));
    }
}
