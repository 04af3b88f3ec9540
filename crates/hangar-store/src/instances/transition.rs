//! The one door for instance status changes: [`Store::transition`] reads
//! the current statuses, checks the move against core's transition tables
//! and writes it, in one transaction (on PostgreSQL holding the instance's
//! row from the read to the commit, so two connections or replicas cannot
//! both move it from the same status). Every status move goes through it,
//! restart recovery included; nothing else writes `status` or
//! `runner_status`.

use chrono::{DateTime, Utc};
use hangar_core::provider::CallProcess;
use hangar_core::{Instance, InstanceName, InstanceStatus, JobId, PoolId, RunnerStatus, Secret};
use sqlx::QueryBuilder;

use super::{instance_from_row, jit_purpose, locking, not_found};
use crate::leases::{FenceConn, PoolFence};
use crate::scale_sets::Deps;
use crate::seal::Sealer;
use crate::{DbRow, Result, Store, StoreError, corrupt, now_ms, on, per_backend, to_dt};

/// A status change of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// Moves the instance; the message, when given, replaces the status
    /// message. `deleted` also forgets the token and JIT config, and
    /// terminates the runner.
    Status(InstanceStatus, Option<&'a str>),
    /// Moves the runner.
    Runner(RunnerStatus, Option<&'a str>),
    /// The runner took `job`: it is active, and the job is recorded.
    TookJob(JobId),
    /// `pending_create → creating`: counts the attempt and installs a fresh
    /// instance token (it goes into this attempt's userdata; an earlier
    /// attempt's token stops working).
    BeginCreate { token_hash: &'a [u8; 32] },
    /// `creating → running` with what the provider reported.
    FinishCreate {
        provider_id: &'a str,
        addresses: &'a [String],
    },
}

/// One create step's write for [`Store::create_writes`].
#[derive(Debug, Clone, Copy)]
pub struct CreateWrite<'a> {
    pub name: &'a InstanceName,
    pub change: Change<'a>,
    /// The runner registered for the instance (GitHub's runner id and its
    /// JIT config), stored first, sealed as `set_instance_jit` stores it.
    pub jit: Option<(i64, &'a Secret)>,
    /// Whether the create serves the scale set request that has waited
    /// longest (its first-seen time is returned).
    pub serve_scale_set_job: bool,
    /// The fence the step acts under (what [`crate::current_fence`] gave
    /// it): the write is refused with [`StoreError::Fenced`] once the pool
    /// has moved on, as [`Store::transition`] refuses under that fence.
    pub fence: Option<PoolFence>,
}

/// What a create write gives back: the instance as written and, when it
/// served a scale set request, when that request was first seen.
pub type CreateWritten = (Instance, Option<DateTime<Utc>>);

per_backend! {
/// One [`CreateWrite`] inside the caller's transaction, but for the scale
/// set request it serves (the batch serves them per pool). `checked` holds
/// the fences already found holding in this transaction (on PostgreSQL the
/// lease row stays share-locked until it ends, so once is enough).
pub(super) async fn create_write(
    conn: &mut Conn,
    sealer: &Sealer,
    w: &CreateWrite<'_>,
    checked: &mut Vec<PoolFence>,
    now: i64,
) -> Result<CreateWritten> {
    if let Some(f) = w.fence {
        if !checked.contains(&f) {
            conn.check_pool_fence(Some(f)).await?;
            checked.push(f);
        }
        // A fence covers its own pool only (as `fence_covers` checks for
        // the task-local fence), checked before anything is written.
        let pool: Option<String> = sqlx::query_scalar("SELECT pool_id FROM instances WHERE name = $1")
            .bind(w.name.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        match pool {
            None => return Err(not_found(w.name)),
            Some(p) if p != f.pool_id.to_string() => {
                return Err(StoreError::Fenced(format!(
                    "a write fenced by pool {}'s lease touches pool {p}",
                    f.pool_id
                )));
            }
            Some(_) => {}
        }
    }
    if let Some((runner_id, config)) = w.jit {
        let sealed = sealer.seal_secret(&jit_purpose(w.name), config);
        let done = sqlx::query(
            "UPDATE instances SET runner_id = $1, jit_config = $2, jit_files_taken = 0,
                updated_at = $3 WHERE name = $4",
        )
        .bind(runner_id)
        .bind(sealed)
        .bind(now)
        .bind(w.name.as_str())
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(w.name));
        }
    }
    Ok((apply(conn, w.name, w.change, now).await?, None))
}

/// Serves the `n` oldest waiting requests of `pool`'s scale set (the
/// batch's creates of that pool that asked); when each was first seen,
/// oldest first.
pub(super) async fn serve_requests(
    conn: &mut Conn,
    pool_id: &str,
    n: usize,
    now: i64,
) -> Result<Vec<i64>> {
    <Db as Deps>::serve_scale_set_jobs(conn, pool_id, n, now).await
}

/// Applies `change` inside the caller's transaction; returns the instance
/// as written.
pub(super) async fn apply(
    conn: &mut Conn,
    name: &InstanceName,
    change: Change<'_>,
    now: i64,
) -> Result<Instance> {
    let row = sqlx::query(locking!("SELECT status, runner_status FROM instances WHERE name = $1"))
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| not_found(name))?;
    let status: InstanceStatus = row.get::<String, _>(0).parse().map_err(corrupt)?;
    let runner: RunnerStatus = row.get::<String, _>(1).parse().map_err(corrupt)?;
    let mut q: QueryBuilder<Db> = QueryBuilder::new("UPDATE instances SET updated_at = ");
    q.push_bind(now);
    let message = |q: &mut QueryBuilder<Db>, m: Option<&str>| {
        if let Some(m) = m {
            q.push(", status_message = ").push_bind(m.to_owned());
        }
    };
    match change {
        Change::Status(to, msg) => {
            status.check_transition(to)?;
            q.push(", status = ").push_bind(to.as_str());
            message(&mut q, msg);
            // A retirement starts afresh: the wait of a create retry (or of
            // a breaker) does not hold up the delete. A delete's own retry
            // sets its time after this move.
            if to == InstanceStatus::PendingDelete {
                q.push(", next_attempt_at = NULL");
            }
            if to == InstanceStatus::Deleted {
                q.push(", token_hash = NULL, jit_config = NULL, deleted_at = ")
                    .push_bind(now);
                if runner.can_transition_to(RunnerStatus::Terminated) {
                    q.push(", runner_status = 'terminated'");
                }
            }
        }
        Change::Runner(to, msg) => {
            runner.check_transition(to)?;
            q.push(", runner_status = ").push_bind(to.as_str());
            message(&mut q, msg);
        }
        Change::TookJob(job) => {
            runner.check_transition(RunnerStatus::Active)?;
            q.push(", runner_status = 'active', job_id = ")
                .push_bind(job.0);
        }
        Change::BeginCreate { token_hash } => {
            status.check_transition(InstanceStatus::Creating)?;
            q.push(
                ", status = 'creating', create_attempts = create_attempts + 1, next_attempt_at = NULL, registration_token_at = NULL, create_pid = NULL, create_pid_start = NULL, token_hash = ",
            )
            .push_bind(token_hash.to_vec());
        }
        Change::FinishCreate {
            provider_id,
            addresses,
        } => {
            status.check_transition(InstanceStatus::Running)?;
            q.push(", status = 'running', status_message = NULL, next_attempt_at = NULL, provider_id = ")
                .push_bind(provider_id.to_owned())
                .push(", addresses = ")
                .push_bind(serde_json::to_string(addresses).map_err(corrupt)?);
        }
    }
    q.push(" WHERE name = ")
        .push_bind(name.as_str().to_owned())
        .push(concat!(" RETURNING ", crate::instances::instance_columns!()));
    let row = q.build().fetch_one(&mut *conn).await?;
    instance_from_row(&row)
}

/// [`apply`], when core's tables allow the change from where the instance
/// is now; `None` (nothing written) when they do not.
pub(crate) async fn apply_if_legal(
    conn: &mut Conn,
    name: &InstanceName,
    change: Change<'_>,
    now: i64,
) -> Result<Option<Instance>> {
    match apply(conn, name, change, now).await {
        Ok(i) => Ok(Some(i)),
        Err(crate::StoreError::Transition(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
}

impl Store {
    /// Makes one status change, if core's tables allow it from where the
    /// instance is now (else [`crate::StoreError::Transition`]).
    pub async fn transition(&self, name: &InstanceName, change: Change<'_>) -> Result<Instance> {
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            crate::leases::FenceConn::check_current_fence(&mut *tx).await?;
            let inst = m::apply(&mut tx, name, change, now_ms()).await?;
            // Rolled back when the instance is another pool's.
            crate::leases::fence_covers(inst.pool_id)?;
            tx.commit().await?;
            Ok(inst)
        })
    }

    /// The writes of several create steps in one transaction, so a burst
    /// of creates costs a commit (a sync) per batch rather than several per
    /// create. For each, in order: its fence is checked, its JIT config
    /// stored, its change checked and made as [`Self::transition`] makes
    /// it, and a waiting scale set request served when asked. A write that
    /// is fenced, refused by core's tables, or of an instance that is gone
    /// gets that error and leaves the others be (a refused change keeps
    /// its JIT config, as when it was stored on its own); any other
    /// failure fails the whole batch, which then writes nothing.
    pub async fn create_writes(
        &self,
        writes: &[CreateWrite<'_>],
    ) -> Result<Vec<Result<CreateWritten>>> {
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            let now = now_ms();
            let mut checked = Vec::new();
            let mut out = Vec::with_capacity(writes.len());
            for w in writes {
                match m::create_write(&mut tx, self.sealer(), w, &mut checked, now).await {
                    Err(
                        e @ (StoreError::Transition(_)
                        | StoreError::NotFound(_)
                        | StoreError::Fenced(_)),
                    ) => out.push(Err(e)),
                    r => out.push(Ok(r?)),
                }
            }
            // The scale set requests the batch's creates serve: one
            // statement per pool, the oldest to the first of its writes.
            let mut serving: Vec<(PoolId, Vec<usize>)> = Vec::new();
            for (i, (w, r)) in writes.iter().zip(&out).enumerate() {
                if let (true, Ok((inst, _))) = (w.serve_scale_set_job, r) {
                    match serving.iter_mut().find(|(p, _)| *p == inst.pool_id) {
                        Some((_, at)) => at.push(i),
                        None => serving.push((inst.pool_id, vec![i])),
                    }
                }
            }
            for (pool, at) in serving {
                let seen = m::serve_requests(&mut tx, &pool.to_string(), at.len(), now).await?;
                for (i, seen) in at.into_iter().zip(seen) {
                    if let Ok((_, served)) = &mut out[i] {
                        *served = Some(to_dt(seen));
                    }
                }
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    /// After a restart, no delete is under way any more: instances caught
    /// in `deleting` go back to `pending_delete` (a provider delete is
    /// idempotent). Instances caught in `creating` stay there: their create
    /// may still run (an external provider's process outlives hangard), so
    /// the scheduler settles each first ([`Store::interrupted_creates`]).
    /// Returns how many were moved.
    pub async fn recover_interrupted(&self) -> Result<u64> {
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            let rows = sqlx::query("SELECT name FROM instances WHERE status = 'deleting'")
                .fetch_all(&mut *tx)
                .await?;
            let now = now_ms();
            let mut moved = 0;
            for r in &rows {
                let name = InstanceName::parse(r.get(0)).map_err(corrupt)?;
                // Rechecked under the row's lock: skipped when another
                // connection moved it meanwhile.
                let done = m::apply_if_legal(
                    &mut tx,
                    &name,
                    Change::Status(InstanceStatus::PendingDelete, None),
                    now,
                )
                .await?;
                moved += u64::from(done.is_some());
            }
            tx.commit().await?;
            Ok(moved)
        })
    }

    /// Instances in `creating` with the process their create ran in, when
    /// it ran in one of its own and it was recorded.
    pub async fn interrupted_creates(&self) -> Result<Vec<(Instance, Option<CallProcess>)>> {
        let sql = concat!(
            "SELECT ",
            super::instance_columns!(),
            ", create_pid, create_pid_start FROM instances WHERE status = 'creating' ORDER BY created_at, name"
        );
        on!(self, read, |c| {
            let rows = sqlx::query(sql).fetch_all(c).await?;
            rows.iter()
                .map(|r| {
                    let process = match (
                        r.get::<Option<i64>, _>("create_pid"),
                        r.get::<Option<i64>, _>("create_pid_start"),
                    ) {
                        (Some(pid), Some(start)) => Some(CallProcess {
                            pid: u32::try_from(pid).map_err(corrupt)?,
                            start_ticks: u64::try_from(start).map_err(corrupt)?,
                        }),
                        _ => None,
                    };
                    Ok((instance_from_row(r)?, process))
                })
                .collect()
        })
    }

    /// Records the process a create runs in (while it is `creating`).
    pub async fn set_create_process(&self, name: &InstanceName, p: CallProcess) -> Result<()> {
        let sql = "UPDATE instances SET create_pid = $1, create_pid_start = $2
             WHERE name = $3 AND status = 'creating'";
        let start = i64::try_from(p.start_ticks).map_err(corrupt)?;
        on!(self, write, |c| sqlx::query(sql)
            .bind(i64::from(p.pid))
            .bind(start)
            .bind(name.as_str())
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Sets when the next attempt (create retry or delete retry) may happen.
    pub async fn set_next_attempt(
        &self,
        name: &InstanceName,
        at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let sql = "UPDATE instances SET next_attempt_at = $1, updated_at = $2 WHERE name = $3";
        on!(self, write, |c| sqlx::query(sql)
            .bind(at.map(|t| t.timestamp_millis()))
            .bind(now_ms())
            .bind(name.as_str())
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// When the next attempt may happen (`None`: now).
    pub async fn next_attempt(&self, name: &InstanceName) -> Result<Option<DateTime<Utc>>> {
        let sql = "SELECT next_attempt_at FROM instances WHERE name = $1";
        let at: Option<Option<i64>> = on!(self, read, |c| sqlx::query_scalar(sql)
            .bind(name.as_str())
            .fetch_optional(c)
            .await)?;
        Ok(at.ok_or_else(|| not_found(name))?.map(to_dt))
    }
}
