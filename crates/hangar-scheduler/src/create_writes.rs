//! Group commit for create steps: the writes a create step makes just
//! before and just after its provider call (`creating` with its JIT config
//! and the scale set request it serves, then `running`) go to one writer
//! task, which commits whatever has queued up meanwhile in one transaction
//! ([`Store::create_writes`]).
//!
//! Every commit syncs, and on SQLite there is one writer connection: a
//! burst of a few hundred creates (a scale set told it needs that many
//! runners) made three or four commits each, one after another, and the
//! last create waited for all of them. Batched, a burst costs a commit per
//! batch, and a lone create is written at once, as before. Each step still
//! waits for its own commit before it goes on, so nothing reaches the
//! provider that is not recorded first.
//!
//! The writer task does not run inside the step's lease fence (a
//! task-local): each write carries the fence its step runs under, and the
//! batch checks it write by write, so a write whose fence is stale is
//! refused alone and the others commit.

use std::sync::OnceLock;

use hangar_core::{InstanceName, Secret};
use hangar_store::{Change, CreateWritten, PoolFence, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// The most writes committed together.
const MAX_BATCH: usize = 256;

/// One create step's write, owned (it crosses to the writer task).
#[derive(Debug)]
pub(crate) enum CreateWrite {
    /// `pending_create → creating` with a fresh token hash, the runner
    /// registered for it (stored first), and whether it serves the scale
    /// set request that has waited longest.
    Begin {
        name: InstanceName,
        token_hash: [u8; 32],
        jit: Option<(i64, Secret)>,
        serve_scale_set_job: bool,
    },
    /// `creating → running`.
    Finish {
        name: InstanceName,
        provider_id: String,
        addresses: Vec<String>,
    },
}

/// A write with the fence of the step that made it.
#[derive(Debug)]
struct Queued {
    write: CreateWrite,
    fence: Option<PoolFence>,
    reply: oneshot::Sender<Result<CreateWritten, StoreError>>,
}

impl Queued {
    fn as_store(&self) -> hangar_store::CreateWrite<'_> {
        let (name, change, jit, serve) = match &self.write {
            CreateWrite::Begin {
                name,
                token_hash,
                jit,
                serve_scale_set_job,
            } => (
                name,
                Change::BeginCreate { token_hash },
                jit.as_ref().map(|(id, config)| (*id, config)),
                *serve_scale_set_job,
            ),
            CreateWrite::Finish {
                name,
                provider_id,
                addresses,
            } => (
                name,
                Change::FinishCreate {
                    provider_id,
                    addresses,
                },
                None,
                false,
            ),
        };
        hangar_store::CreateWrite {
            name,
            change,
            jit,
            serve_scale_set_job: serve,
            fence: self.fence,
        }
    }
}

/// The create steps' writer; started by the first write.
#[derive(Debug, Default)]
pub(crate) struct CreateWriter {
    tx: OnceLock<mpsc::UnboundedSender<Queued>>,
}

impl CreateWriter {
    /// Commits `w` (with whatever other create steps queued meanwhile),
    /// under the fence the calling task runs under, and returns once it is
    /// committed.
    pub(crate) async fn write(
        &self,
        store: &Store,
        w: CreateWrite,
    ) -> Result<CreateWritten, StoreError> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(writer(store.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Invalid("the create steps' writer has stopped".into());
        let queued = Queued {
            write: w,
            fence: hangar_store::current_fence(),
            reply,
        };
        tx.send(queued).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Ends when every sender is gone (the scheduler's context dropped).
async fn writer(store: Store, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let started = std::time::Instant::now();
        let together = {
            let writes: Vec<_> = batch.iter().map(Queued::as_store).collect();
            store.create_writes(&writes).await
        };
        tracing::debug!(
            writes = batch.len(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            ok = together.is_ok(),
            "create writes committed"
        );
        match together {
            Ok(results) => {
                for (q, r) in batch.drain(..).zip(results) {
                    let _ = q.reply.send(r);
                }
            }
            // The batch failed as a whole (the database, not one write):
            // each is tried on its own, so each step gets its own answer
            // and one write cannot fail the others.
            Err(e) if batch.len() == 1 => {
                if let Some(q) = batch.pop() {
                    let _ = q.reply.send(Err(e));
                }
            }
            Err(_) => {
                for q in batch.drain(..) {
                    let r = store
                        .create_writes(&[q.as_store()])
                        .await
                        .and_then(|mut v| v.pop().expect("one result per write"));
                    let _ = q.reply.send(r);
                }
            }
        }
    }
}
