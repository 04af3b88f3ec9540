//! The intake writer: one task that commits webhook deliveries in batches,
//! then wakes the scheduler. The webhook handler hands it a parsed
//! [`JobEvent`] and waits for the commit; the writer takes everything that
//! queued up meanwhile and records it at once, so under load one fsync
//! covers many deliveries while a lone delivery is still committed at once.
//! A 202 is only sent after the commit. Recording decides nothing about
//! instances: that is reconcile's job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hangar_store::{JobEvent, JobOutcome, StoreError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::Scheduler;

const MAX_BATCH: usize = 512;

/// After deliveries last overlapped, intake counts as busy this much
/// longer: the deliveries of a burst arrive a few ms apart.
pub(crate) const BUSY_TAIL: Duration = Duration::from_millis(25);

/// Create steps that may run at once while intake is busy.
pub(crate) const CREATES_WHILE_BUSY: usize = 4;

/// The least time between two reconciles of a pool while intake is busy
/// (else [`crate::RECONCILE_GAP`]): each reconcile during a burst reserves
/// what arrived since the last one in one write, instead of one write per
/// few deliveries.
pub(crate) const RECONCILE_GAP_WHILE_BUSY: Duration = Duration::from_millis(25);

/// How hard webhook intake is working, so the scheduler can stay out of its
/// way during a burst.
///
/// Intake and the scheduler share the one database writer, whose waiters
/// are served in turn: with 64 create steps each wanting a write (and an
/// fsync), a delivery's commit waited for all of them. While deliveries are
/// arriving, at most [`CREATES_WHILE_BUSY`] create steps run and a pool
/// reconciles at most every [`RECONCILE_GAP_WHILE_BUSY`], so a commit waits
/// for a few writes at most; the rest start the moment the burst is over.
/// A burst is deliveries that overlap (two or more in flight at once, or
/// within [`BUSY_TAIL`] of that); one delivery after another, however
/// fast, is not one, so a lone job is never held back.
#[derive(Debug)]
pub(crate) struct Pressure {
    /// Deliveries handed to the writer and not answered yet.
    in_flight: AtomicUsize,
    /// When deliveries last overlapped, in µs since `epoch` (0: never).
    crowded_us: AtomicU64,
    epoch: Instant,
    creates: Arc<Semaphore>,
    /// `true` from the first overlap until a watcher saw the tail pass:
    /// creates waiting for a slot wait on this too, so none polls.
    burst: watch::Sender<bool>,
    /// A watcher task is running.
    watching: AtomicBool,
}

impl Default for Pressure {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            crowded_us: AtomicU64::new(0),
            epoch: Instant::now(),
            creates: Arc::new(Semaphore::new(CREATES_WHILE_BUSY)),
            burst: watch::channel(false).0,
            watching: AtomicBool::new(false),
        }
    }
}

impl Pressure {
    fn now_us(&self) -> u64 {
        // +1: 0 means "never".
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_micros() as u64
            + 1
    }

    fn started(self: &Arc<Self>) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= 1 {
            self.crowded_us.store(self.now_us(), Ordering::Release);
            self.burst.send_if_modified(|b| !std::mem::replace(b, true));
            self.watch();
        }
    }

    /// Starts the task that ends the burst once its tail has passed (one
    /// at a time; it wakes once per tail while the burst lasts).
    fn watch(self: &Arc<Self>) {
        if self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let p = self.clone();
        tokio::spawn(async move {
            loop {
                if p.in_flight.load(Ordering::Acquire) >= 2 {
                    // Overlapping now: the tail starts when they stop.
                    tokio::time::sleep(BUSY_TAIL).await;
                    continue;
                }
                let last = p.crowded_us.load(Ordering::Acquire);
                let end = p.epoch + Duration::from_micros(last) + BUSY_TAIL;
                // Never a busy loop: at least a millisecond between checks.
                let soonest = Instant::now() + Duration::from_millis(1);
                tokio::time::sleep_until(end.max(soonest)).await;
                if !p.busy() {
                    p.watching.store(false, Ordering::Release);
                    p.burst.send_replace(false);
                    // A burst that began meanwhile found `watching` set:
                    // keep watching for it.
                    if p.busy() && !p.watching.swap(true, Ordering::AcqRel) {
                        p.burst.send_replace(true);
                        continue;
                    }
                    return;
                }
            }
        });
    }

    fn answered(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) >= 2 {
            self.crowded_us.store(self.now_us(), Ordering::Release);
        }
    }

    /// Deliveries overlap now, or did within [`BUSY_TAIL`].
    pub(crate) fn busy(&self) -> bool {
        if self.in_flight.load(Ordering::Acquire) >= 2 {
            return true;
        }
        let last = self.crowded_us.load(Ordering::Acquire);
        last != 0 && self.now_us().saturating_sub(last) < BUSY_TAIL.as_micros() as u64
    }

    /// The gap to keep between two reconciles of a pool.
    pub(crate) fn reconcile_gap(&self) -> Duration {
        if self.busy() {
            RECONCILE_GAP_WHILE_BUSY
        } else {
            crate::RECONCILE_GAP
        }
    }

    /// Waits, while intake is busy, for one of the [`CREATES_WHILE_BUSY`]
    /// create slots; held for the whole step. Returns at once (`None`)
    /// when intake is quiet, and stops waiting as soon as it becomes so.
    pub(crate) async fn create_slot(&self) -> Option<OwnedSemaphorePermit> {
        if !self.busy() {
            return None;
        }
        let mut burst = self.burst.subscribe();
        tokio::select! {
            permit = self.creates.clone().acquire_owned() => permit.ok(),
            _ = burst.wait_for(|b| !*b) => None,
        }
    }
}

/// Why a delivery was not recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntakeError {
    /// hangard is stopping; GitHub redelivers later.
    #[error("intake is shutting down")]
    ShuttingDown,
    /// The commit failed; nothing of the batch was recorded.
    #[error("cannot record the delivery: {0}")]
    Commit(Arc<StoreError>),
}

type Reply = oneshot::Sender<Result<JobOutcome, IntakeError>>;

#[derive(Debug, Clone)]
pub struct Intake {
    tx: mpsc::Sender<(JobEvent, Reply)>,
    pressure: Arc<Pressure>,
}

impl Intake {
    /// Starts the writer. It ends when every `Intake` handle is dropped.
    pub fn start(scheduler: Scheduler) -> Self {
        let (tx, rx) = mpsc::channel(8192);
        let pressure = scheduler.ctx.intake.clone();
        tokio::spawn(writer(scheduler, rx));
        Self { tx, pressure }
    }

    /// Records one event; returns once it is committed.
    pub async fn record(&self, event: JobEvent) -> Result<JobOutcome, IntakeError> {
        let (reply, wait) = oneshot::channel();
        let _busy = Busy::new(self.pressure.clone());
        self.tx
            .send((event, reply))
            .await
            .map_err(|_| IntakeError::ShuttingDown)?;
        wait.await.map_err(|_| IntakeError::ShuttingDown)?
    }
}

/// Counts a delivery as in flight until it is answered (or its handler
/// is dropped).
struct Busy(Arc<Pressure>);

impl Busy {
    fn new(p: Arc<Pressure>) -> Self {
        p.started();
        Self(p)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.answered();
    }
}

/// Records events and wakes the scheduler for each: what a delivery goes
/// through, and what lost-delivery recovery uses for the jobs it finds.
pub(crate) async fn commit(
    scheduler: &Scheduler,
    events: Vec<JobEvent>,
) -> Result<Vec<JobOutcome>, StoreError> {
    let outcomes = scheduler.ctx.store.record_job_events(&events).await?;
    let mut elsewhere = Vec::new();
    for (event, outcome) in events.into_iter().zip(&outcomes) {
        if let JobOutcome::Recorded {
            pool_id: Some(pool),
            ..
        } = outcome
            && !scheduler.ctx.leases.holds(*pool)
            && !elsewhere.contains(pool)
        {
            elsewhere.push(*pool);
        }
        scheduler.job_recorded(event, *outcome);
    }
    // Several replicas: the pools another replica runs are woken there
    // (PostgreSQL NOTIFY, after the commit), without holding up the reply.
    if !elsewhere.is_empty() {
        let store = scheduler.ctx.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.notify_wakes(&elsewhere).await {
                tracing::warn!(error = %e, "cannot wake other replicas; their timers pick the jobs up");
            }
        });
    }
    Ok(outcomes)
}

async fn writer(scheduler: Scheduler, mut rx: mpsc::Receiver<(JobEvent, Reply)>) {
    let mut batch: Vec<(JobEvent, Reply)> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (events, replies): (Vec<JobEvent>, Vec<Reply>) = batch.drain(..).unzip();
        let n = events.len();
        match commit(&scheduler, events).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, deliveries = n, "cannot record webhook deliveries");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(IntakeError::Commit(e.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_holds_creates_to_a_few_slots_and_quiet_releases_them() {
        let p = Arc::new(Pressure::default());
        // Quiet: a create never waits and takes no slot.
        assert!(!p.busy());
        assert!(p.create_slot().await.is_none());
        assert_eq!(p.reconcile_gap(), crate::RECONCILE_GAP);

        // One delivery at a time is no burst, however many follow.
        for _ in 0..3 {
            drop(Busy::new(p.clone()));
            assert!(!p.busy());
        }
        // Two at once are: busy, and only CREATES_WHILE_BUSY slots.
        let delivery = Busy::new(p.clone());
        let second = Busy::new(p.clone());
        assert!(p.busy());
        assert_eq!(p.reconcile_gap(), RECONCILE_GAP_WHILE_BUSY);
        let mut held = Vec::new();
        for _ in 0..CREATES_WHILE_BUSY {
            held.push(p.create_slot().await.expect("a free slot"));
        }
        let waiting = tokio::spawn({
            let p = p.clone();
            async move { p.create_slot().await.is_none() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a fifth create waits while busy");

        // Answered: still busy for the tail, then quiet; the waiter goes
        // without a slot.
        drop(second);
        drop(delivery);
        assert!(p.busy());
        assert!(waiting.await.expect("joins"), "released once quiet");
        assert!(!p.busy());
        assert!(p.create_slot().await.is_none());
    }
}
