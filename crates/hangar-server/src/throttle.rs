//! Login throttling, per username and per client address: after a few
//! free failures each further one doubles a lock-out (1 s, 2 s, 4 s, … up
//! to 15 minutes) during which logins for that name, or from that address,
//! answer 429 with `Retry-After` without checking the password. Guessing
//! drops from about 60 passwords a second to a handful an hour, while an
//! admin who mistypes twice notices nothing. A success clears the name's
//! record, not the address's (else one valid account would reset the
//! address's count for guessing the others).
//!
//! The records live in memory, at most [`Policy::max_tracked`] of them: a
//! flood of made-up names evicts the oldest, never grows the map without
//! bound. A restart forgets them, which costs an attacker a restart of the
//! service per handful of guesses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// When failures start to cost time.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Failures for one username before the first lock-out.
    pub free_per_user: u32,
    /// Failures from one address before the first lock-out (higher: many
    /// people may share an address behind NAT or a proxy).
    pub free_per_address: u32,
    /// The first lock-out; each further failure doubles it.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// A record with no failure for this long is forgotten.
    pub forget_after: Duration,
    /// Records kept at most (names and addresses together).
    pub max_tracked: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            free_per_user: 5,
            free_per_address: 20,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(60 * 60),
            max_tracked: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    /// IPv4 addresses whole; IPv6 by their /64, which one host can hold.
    Address(IpAddr),
}

impl Key {
    fn user(name: &str) -> Self {
        // Valid names are at most 64 characters; longer ones still count,
        // cut short so a record's size stays bounded.
        Key::User(name.chars().take(64).collect::<String>().to_lowercase())
    }

    fn address(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::Address(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    Key::Address(IpAddr::V6(bits.into()))
                }
            },
            v4 => Key::Address(v4),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

/// The throttle every login passes through.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    policy: Policy,
    records: Mutex<HashMap<Key, Record>>,
}

impl LoginThrottle {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            records: Mutex::new(HashMap::new()),
        }
    }

    fn keys(user: &str, addr: Option<IpAddr>) -> impl Iterator<Item = Key> {
        std::iter::once(Key::user(user)).chain(addr.map(Key::address))
    }

    /// `Err(wait)` while `user` or `addr` is locked out.
    pub fn check(&self, user: &str, addr: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let records = self.records.lock().expect("throttle poisoned");
        let wait = Self::keys(user, addr)
            .filter_map(|k| records.get(&k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match wait {
            Some(w) => Err(w),
            None => Ok(()),
        }
    }

    /// Counts a failed login against `user` and `addr`.
    pub fn failed(&self, user: &str, addr: Option<IpAddr>) {
        let now = Instant::now();
        let mut records = self.records.lock().expect("throttle poisoned");
        for key in Self::keys(user, addr) {
            if !records.contains_key(&key) && records.len() >= self.policy.max_tracked {
                self.evict(&mut records, now);
            }
            let free = match key {
                Key::User(_) => self.policy.free_per_user,
                Key::Address(_) => self.policy.free_per_address,
            };
            let r = records.entry(key.clone()).or_insert(Record {
                failures: 0,
                last_failure: now,
                locked_until: None,
            });
            if now.duration_since(r.last_failure) > self.policy.forget_after {
                r.failures = 0;
            }
            r.failures = r.failures.saturating_add(1);
            r.last_failure = now;
            if r.failures > free {
                let doublings = (r.failures - free - 1).min(30);
                let delay = self
                    .policy
                    .first_delay
                    .saturating_mul(1 << doublings)
                    .min(self.policy.max_delay);
                r.locked_until = Some(now + delay);
                if r.failures == free + 1 {
                    match &key {
                        Key::User(name) => tracing::warn!(
                            user.name = %name,
                            failures = r.failures,
                            "repeated failed logins for this user; throttling it"
                        ),
                        Key::Address(ip) => tracing::warn!(
                            client.address = %ip,
                            failures = r.failures,
                            "repeated failed logins from this address; throttling it"
                        ),
                    }
                }
            }
        }
    }

    /// A successful login clears `user`'s record.
    pub fn succeeded(&self, user: &str) {
        self.records
            .lock()
            .expect("throttle poisoned")
            .remove(&Key::user(user));
    }

    /// Records tracked now.
    pub fn tracked(&self) -> usize {
        self.records.lock().expect("throttle poisoned").len()
    }

    /// Makes room for one record: drops the stale ones, else the one whose
    /// last failure is oldest.
    fn evict(&self, records: &mut HashMap<Key, Record>, now: Instant) {
        let forget = self.policy.forget_after;
        records.retain(|_, r| {
            now.duration_since(r.last_failure) <= forget
                || r.locked_until.is_some_and(|until| until > now)
        });
        if records.len() >= self.policy.max_tracked
            && let Some(oldest) = records
                .iter()
                .min_by_key(|(_, r)| r.last_failure)
                .map(|(k, _)| k.clone())
        {
            records.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn lockouts_double_after_the_free_failures_and_expire() {
        let t = LoginThrottle::default();
        for _ in 0..5 {
            assert_eq!(t.check("admin", ip("10.0.0.1")), Ok(()));
            t.failed("admin", ip("10.0.0.1"));
        }
        assert_eq!(t.check("admin", ip("10.0.0.1")), Ok(()), "five are free");
        t.failed("admin", ip("10.0.0.1"));
        assert_eq!(
            t.check("admin", ip("10.0.0.1")),
            Err(Duration::from_secs(1))
        );
        // The name is locked from any address, in any case.
        assert!(t.check("ADMIN", ip("10.9.9.9")).is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.check("admin", ip("10.0.0.1")), Ok(()));
        t.failed("admin", ip("10.0.0.1"));
        assert_eq!(t.check("admin", None), Err(Duration::from_secs(2)));
        for _ in 0..20 {
            t.failed("admin", None);
        }
        assert_eq!(t.check("admin", None), Err(Duration::from_secs(15 * 60)));
        // Success clears the name, not the address.
        t.succeeded("admin");
        assert_eq!(t.check("admin", None), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn addresses_are_throttled_across_names() {
        let t = LoginThrottle::default();
        for n in 0..21 {
            t.failed(&format!("user{n}"), ip("2001:db8::1"));
        }
        assert!(t.check("someone-else", ip("2001:db8::1")).is_err());
        // The same /64 is the same client.
        assert!(t.check("someone-else", ip("2001:db8::ffff")).is_err());
        assert_eq!(t.check("someone-else", ip("2001:db8:0:1::1")), Ok(()));
        assert_eq!(t.check("someone-else", ip("192.0.2.1")), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_map_stays_bounded() {
        let t = LoginThrottle::new(Policy {
            max_tracked: 100,
            ..Policy::default()
        });
        for n in 0..1000 {
            t.failed(&format!("made-up-{n}"), None);
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(t.tracked() <= 100, "{}", t.tracked());
        // The newest records are the ones kept.
        t.failed("made-up-999", None);
        assert!(t.tracked() <= 100);
    }
}
