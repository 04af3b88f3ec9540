//! Exponential backoff with jitter, per target (a provider, a set of
//! credentials), so one failing target slows down only itself.

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// The delay before retry number `attempt` (1-based): `base * 2^(attempt-1)`
/// capped at `max`, then scaled by a random factor in [0.5, 1.0] ("equal
/// jitter"), so synchronized failures spread out.
pub fn delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let raw = base.saturating_mul(1u32 << exp).min(max);
    let factor = rand::thread_rng().gen_range(0.5..=1.0);
    raw.mul_f64(factor)
}

/// Remembers consecutive failures of one target and when it may be called
/// again.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<(u32, Option<Instant>)>,
    base: Duration,
    max: Duration,
}

impl Gate {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            state: Mutex::new((0, None)),
            base,
            max,
        }
    }

    /// How long until the target may be called again; `None` when it may
    /// be called now. Callers come back later rather than wait here, so no
    /// task sleeps on a closed gate.
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.state.lock().expect("gate lock").1?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// Keeps the gate closed for at least `d` (the target said when to come
    /// back), without counting a failure.
    pub fn close_for(&self, d: Duration) {
        let mut s = self.state.lock().expect("gate lock");
        let until = Instant::now() + d;
        if s.1.is_none_or(|t| t < until) {
            s.1 = Some(until);
        }
    }

    pub fn success(&self) {
        *self.state.lock().expect("gate lock") = (0, None);
    }

    /// Records a failure and returns the delay imposed on the next call.
    pub fn failure(&self) -> Duration {
        let mut s = self.state.lock().expect("gate lock");
        s.0 = s.0.saturating_add(1);
        let d = delay(s.0, self.base, self.max);
        s.1 = Some(Instant::now() + d);
        d
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.state.lock().expect("gate lock").0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps_with_jitter() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..=10 {
            let d = delay(attempt, base, max);
            let raw = (base * 2u32.pow(attempt - 1)).min(max);
            assert!(d <= raw, "attempt {attempt}: {d:?} > {raw:?}");
            assert!(d >= raw / 2, "attempt {attempt}: {d:?} < half of {raw:?}");
        }
        assert!(delay(60, base, max) <= max);
    }

    #[tokio::test(start_paused = true)]
    async fn gate_closes_after_failures_and_reopens() {
        let g = Gate::new(Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(g.remaining(), None);
        let d = g.failure();
        assert!(d >= Duration::from_millis(500));
        assert_eq!(g.remaining(), Some(d));
        tokio::time::advance(d).await;
        assert_eq!(g.remaining(), None, "open again once the delay is over");
        g.failure();
        assert_eq!(g.consecutive_failures(), 2);
        g.success();
        assert_eq!(g.remaining(), None);
        assert_eq!(g.consecutive_failures(), 0);
        // A retry-after closes it without counting a failure, and never
        // shortens a longer closure.
        g.close_for(Duration::from_secs(30));
        g.close_for(Duration::from_secs(5));
        assert_eq!(g.remaining(), Some(Duration::from_secs(30)));
        assert_eq!(g.consecutive_failures(), 0);
    }
}
