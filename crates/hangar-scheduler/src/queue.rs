//! The pool queue: which pools to reconcile next. Never one pool twice at
//! once; wakes that arrive while a pool is reconciling (or within
//! [`RECONCILE_GAP`] after) coalesce into one more run; a pool can ask to be
//! woken at a later instant (a retry coming due), and only the earliest such
//! instant per pool is kept, since reconcile recomputes the next one from
//! the database every time it runs.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use hangar_core::PoolId;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The least time between the end of one reconcile of a pool and the start
/// of the next: under a stream of webhooks a pool reconciles about once per
/// gap instead of once per intake batch, while a wake after quiet still
/// runs at once.
pub const RECONCILE_GAP: Duration = Duration::from_millis(5);

#[derive(Debug, Default)]
pub(crate) struct PoolQueue {
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Every pool is wanted (the store lists them).
    all: bool,
    /// Pools woken and not started yet.
    dirty: HashSet<PoolId>,
    /// Pools reconciling now, or within the gap after.
    running: HashSet<PoolId>,
    /// The earliest later wake of each pool.
    timers: HashMap<PoolId, Instant>,
    /// Runners GitHub reported taking or finishing a job: their pools are
    /// looked up and woken.
    runners: Vec<String>,
}

impl PoolQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("pool queue lock")
    }

    /// Wants `pool` reconciled as soon as it is free.
    ///
    /// The loop is only notified when this wake can start something: a
    /// pool already woken has a notification on its way, and a running one
    /// is started again by [`Self::finished`]. Under a stream of deliveries
    /// most wakes land in a pool's gap, and each skipped notification is a
    /// thread wake-up the intake thread does not pay for.
    pub(crate) fn wake(&self, pool: PoolId) {
        let mut s = self.state();
        let fresh = s.dirty.insert(pool);
        let running = s.running.contains(&pool);
        drop(s);
        if fresh && !running {
            self.notify.notify_one();
        }
    }

    pub(crate) fn wake_all(&self) {
        self.state().all = true;
        self.notify.notify_one();
    }

    /// Wants the pool of the instance whose runner is `name` reconciled.
    pub(crate) fn wake_runner(&self, name: String) {
        self.state().runners.push(name);
        self.notify.notify_one();
    }

    /// The runners woken since the last call.
    pub(crate) fn take_runners(&self) -> Vec<String> {
        std::mem::take(&mut self.state().runners)
    }

    /// Wants `pool` reconciled at `at` (or earlier, if woken before).
    pub(crate) fn wake_at(&self, pool: PoolId, at: Instant) {
        let mut s = self.state();
        let t = s.timers.entry(pool).or_insert(at);
        if at < *t {
            *t = at;
        }
        drop(s);
        // The loop recomputes how long it may sleep.
        self.notify.notify_one();
    }

    /// Resolves when something was woken since the last call.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }

    /// When the earliest timer fires.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.state().timers.values().min().copied()
    }

    /// Whether every pool was asked for; clears the request.
    pub(crate) fn take_all(&self) -> bool {
        std::mem::take(&mut self.state().all)
    }

    /// Asks again for every pool (listing them failed).
    pub(crate) fn restore_all(&self) {
        self.state().all = true;
    }

    /// The pools to reconcile now, marked running: those woken (timers due
    /// by `now` included) that are not running already. A woken pool that
    /// is running stays woken and starts once it is finished.
    pub(crate) fn start_ready(&self, now: Instant) -> Vec<PoolId> {
        let mut s = self.state();
        let due: Vec<PoolId> = s
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            s.timers.remove(&p);
            s.dirty.insert(p);
        }
        let State { dirty, running, .. } = &mut *s;
        let ready: Vec<PoolId> = dirty.difference(running).copied().collect();
        for p in &ready {
            dirty.remove(p);
            running.insert(*p);
        }
        ready
    }

    /// A reconcile of `pool` (and its gap) is over; a wake that came
    /// meanwhile runs now.
    pub(crate) fn finished(&self, pool: PoolId) {
        let mut s = self.state();
        s.running.remove(&pool);
        if s.dirty.contains(&pool) {
            drop(s);
            self.notify.notify_one();
        }
    }

    /// No pool is woken or reconciling (timers may be pending).
    pub(crate) fn is_quiet(&self) -> bool {
        let s = self.state();
        !s.all && s.dirty.is_empty() && s.running.is_empty() && s.runners.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_running_pool_is_not_started_twice_and_wakes_coalesce() {
        let q = PoolQueue::default();
        let p = PoolId::new_random();
        q.wake(p);
        assert_eq!(q.start_ready(Instant::now()), vec![p]);
        // Three wakes while it runs: not started again now ...
        for _ in 0..3 {
            q.wake(p);
        }
        assert!(q.start_ready(Instant::now()).is_empty());
        // ... but exactly once after it finishes.
        q.finished(p);
        assert_eq!(q.start_ready(Instant::now()), vec![p]);
        assert!(q.start_ready(Instant::now()).is_empty());
        q.finished(p);
        assert!(q.is_quiet());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_during_a_run_is_notified_by_its_end_not_at_once() {
        let q = PoolQueue::default();
        let p = PoolId::new_random();
        q.wake(p);
        q.notified().await;
        assert_eq!(q.start_ready(Instant::now()), vec![p]);
        q.wake(p);
        q.wake(p);
        // No notification while it runs ...
        let early = tokio::time::timeout(Duration::from_secs(1), q.notified()).await;
        assert!(
            early.is_err(),
            "a running pool's wake must not wake the loop"
        );
        // ... one when it is over, and it starts then.
        q.finished(p);
        q.notified().await;
        assert_eq!(q.start_ready(Instant::now()), vec![p]);
    }

    #[tokio::test(start_paused = true)]
    async fn timers_keep_the_earliest_and_fire_when_due() {
        let q = PoolQueue::default();
        let p = PoolId::new_random();
        let t0 = Instant::now();
        q.wake_at(p, t0 + Duration::from_secs(10));
        q.wake_at(p, t0 + Duration::from_secs(3));
        q.wake_at(p, t0 + Duration::from_secs(7));
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(3)));
        assert!(q.start_ready(t0).is_empty());
        assert_eq!(q.start_ready(t0 + Duration::from_secs(3)), vec![p]);
        assert_eq!(q.next_deadline(), None, "one timer per pool");
    }
}
