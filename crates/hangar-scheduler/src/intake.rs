//! The intake writer: one task that commits webhook deliveries in batches,
//! then wakes the scheduler. The webhook handler hands it a parsed
//! [`JobEvent`] and waits for the commit; the writer takes everything that
//! queued up meanwhile and records it at once, so under load one fsync
//! covers many deliveries while a lone delivery is still committed at once.
//! A 202 is only sent after the commit. Recording decides nothing about
//! instances: that is reconcile's job.

use std::sync::Arc;

use hangar_store::{JobEvent, JobOutcome, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::Scheduler;

const MAX_BATCH: usize = 512;

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
}

impl Intake {
    /// Starts the writer. It ends when every `Intake` handle is dropped.
    pub fn start(scheduler: Scheduler) -> Self {
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(writer(scheduler, rx));
        Self { tx }
    }

    /// Records one event; returns once it is committed.
    pub async fn record(&self, event: JobEvent) -> Result<JobOutcome, IntakeError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send((event, reply))
            .await
            .map_err(|_| IntakeError::ShuttingDown)?;
        wait.await.map_err(|_| IntakeError::ShuttingDown)?
    }
}

/// Records events and wakes the scheduler for each: what a delivery goes
/// through, and what lost-delivery recovery uses for the jobs it finds.
pub(crate) async fn commit(
    scheduler: &Scheduler,
    events: Vec<JobEvent>,
) -> Result<Vec<JobOutcome>, StoreError> {
    let outcomes = scheduler.ctx.store.record_job_events(&events).await?;
    for (event, outcome) in events.into_iter().zip(&outcomes) {
        scheduler.job_recorded(event, *outcome);
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
