//! The intake writer: one task that commits webhook deliveries in batches.
//!
//! Each handler sends its parsed event and waits for the commit; the writer
//! takes everything that queued up meanwhile and records it in one
//! transaction, so under load one fsync covers many deliveries while a lone
//! delivery is still committed at once. A 202 is only sent after the commit.

use std::sync::Arc;

use hangar_scheduler::{JobNotice, Scheduler};
use hangar_store::{JobEvent, JobOutcome, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<JobOutcome, IntakeError>>;

/// Why a delivery was not recorded. Both answer a 5xx, so GitHub redelivers;
/// they differ in whether retrying here soon can help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntakeError {
    /// The writer is gone: the server is shutting down.
    #[error("intake is shutting down")]
    ShuttingDown,
    /// The batch's commit failed; every delivery in it shares the error.
    #[error(transparent)]
    Commit(Arc<StoreError>),
}

#[derive(Debug, Clone)]
pub struct Intake {
    tx: mpsc::Sender<(JobEvent, Reply)>,
}

impl Intake {
    /// Starts the writer. It ends when every `Intake` handle is dropped.
    pub fn start(store: Store, scheduler: Scheduler) -> Self {
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(writer(store, scheduler, rx));
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

async fn writer(store: Store, scheduler: Scheduler, mut rx: mpsc::Receiver<(JobEvent, Reply)>) {
    let mut batch: Vec<(JobEvent, Reply)> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (events, replies): (Vec<JobEvent>, Vec<Reply>) = batch.drain(..).unzip();
        match store.record_job_events(&events).await {
            Ok(outcomes) => {
                for ((event, reply), outcome) in events.into_iter().zip(replies).zip(outcomes) {
                    if let JobOutcome::Recorded { status, pool_id } = outcome {
                        scheduler.job_recorded(JobNotice {
                            job_id: event.job_id,
                            run_attempt: event.run_attempt,
                            status,
                            pool_id,
                            runner_name: event.runner_name,
                        });
                    }
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                // Not logged here: each delivery's 500 is logged where it is
                // answered.
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(IntakeError::Commit(e.clone())));
                }
            }
        }
    }
}
