//! Per-credentials rate-limit state: what GitHub told us (`x-ratelimit-*`,
//! `retry-after`, secondary limits) and our own call budget. Every call asks
//! [`Limiter::admit`] first and reports the answer's headers afterwards, so
//! limits are honoured, not just observed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use rand::Rng;
use tokio::time::Instant;

/// What GitHub's headers said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub remaining: Option<u64>,
    pub limit: Option<u64>,
    /// Unix seconds when the window resets.
    pub reset: Option<u64>,
    pub retry_after: Option<Duration>,
}

impl RateHeaders {
    pub fn parse(h: &HeaderMap) -> Self {
        let num = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Self {
            remaining: num("x-ratelimit-remaining"),
            limit: num("x-ratelimit-limit"),
            reset: num("x-ratelimit-reset"),
            retry_after: num("retry-after").map(Duration::from_secs),
        }
    }

    /// How long until the primary window resets, from now.
    pub fn until_reset(&self) -> Option<Duration> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        self.reset
            .map(|r| Duration::from_secs(r.saturating_sub(now).max(1)))
    }
}

/// Why a call may not go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// GitHub said to wait (primary or secondary limit).
    GitHub(Duration),
    /// Our own hourly budget is spent for now.
    Budget(Duration),
}

impl Denied {
    pub fn wait(&self) -> Duration {
        match self {
            Denied::GitHub(d) | Denied::Budget(d) => *d,
        }
    }
}

/// Rate-limit bookkeeping of one set of credentials.
#[derive(Debug)]
pub struct Limiter {
    blocked_until: Option<Instant>,
    secondary_strikes: u32,
    tokens: f64,
    refilled: Instant,
    per_sec: f64,
    burst: f64,
    pub last: RateHeaders,
}

impl Limiter {
    pub fn new(per_hour: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            blocked_until: None,
            secondary_strikes: 0,
            tokens: burst,
            refilled: Instant::now(),
            per_sec: f64::from(per_hour.max(1)) / 3600.0,
            burst,
            last: RateHeaders::default(),
        }
    }

    /// Takes one call from the budget, or says how long to wait.
    pub fn admit(&mut self) -> Result<(), Denied> {
        let now = Instant::now();
        if let Some(until) = self.blocked_until {
            if until > now {
                return Err(Denied::GitHub(until - now));
            }
            self.blocked_until = None;
        }
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Denied::Budget(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_sec,
            )))
        }
    }

    /// Records a successful or ordinary answer's headers. `remaining: 0`
    /// blocks the credentials until the reset.
    pub fn observe(&mut self, h: RateHeaders) {
        if h.remaining.is_some() {
            self.last = h;
        }
        if h.remaining == Some(0)
            && let Some(wait) = h.until_reset()
        {
            self.block_for(wait);
        }
    }

    /// Records a rate-limit answer (403/429) and returns how long to wait:
    /// `retry-after` when given, the reset when the window is spent, else
    /// exponential backoff with jitter (secondary limits).
    pub fn limited(&mut self, h: RateHeaders, base: Duration, max: Duration) -> Duration {
        self.observe(h);
        let wait = if let Some(ra) = h.retry_after {
            ra
        } else if h.remaining == Some(0) {
            h.until_reset().unwrap_or(base)
        } else {
            self.secondary_strikes = self.secondary_strikes.saturating_add(1);
            jittered(self.secondary_strikes, base, max)
        };
        self.block_for(wait);
        wait
    }

    pub fn success(&mut self) {
        self.secondary_strikes = 0;
    }

    fn block_for(&mut self, wait: Duration) {
        let until = Instant::now() + wait;
        if self.blocked_until.is_none_or(|b| b < until) {
            self.blocked_until = Some(until);
        }
    }
}

/// `base * 2^(attempt-1)` capped at `max`, times a random factor in [0.5, 1].
pub fn jittered(attempt: u32, base: Duration, max: Duration) -> Duration {
    let raw = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    raw.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[tokio::test(start_paused = true)]
    async fn budget_refills_evenly() {
        let mut l = Limiter::new(3600, 2); // one per second, burst two
        assert!(l.admit().is_ok());
        assert!(l.admit().is_ok());
        let Err(Denied::Budget(wait)) = l.admit() else {
            panic!("budget should be spent")
        };
        assert!(wait <= Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(l.admit().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_zero_blocks_until_reset() {
        let mut l = Limiter::new(3600, 100);
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 30;
        l.observe(RateHeaders::parse(&headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-reset", &reset.to_string()),
        ])));
        let Err(Denied::GitHub(wait)) = l.admit() else {
            panic!("blocked")
        };
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(31),
            "{wait:?}"
        );
        assert_eq!(l.last.limit, Some(5000));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_and_secondary_backs_off() {
        let mut l = Limiter::new(3600, 100);
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        let w = l.limited(
            RateHeaders::parse(&headers(&[("retry-after", "7")])),
            base,
            max,
        );
        assert_eq!(w, Duration::from_secs(7));
        tokio::time::advance(Duration::from_secs(8)).await;
        let w1 = l.limited(RateHeaders::default(), base, max);
        tokio::time::advance(w1).await;
        let w2 = l.limited(RateHeaders::default(), base, max);
        assert!(w1 <= Duration::from_secs(1) && w2 <= Duration::from_secs(2));
        assert!(
            w2 >= Duration::from_secs(1),
            "second strike waits longer: {w2:?}"
        );
        l.success();
        tokio::time::advance(w2).await;
        assert!(l.admit().is_ok());
    }
}
