//! Workflow jobs. Intake writes here in batches; the scheduler reads the
//! open ones. Deliveries are deduplicated on (job id, run attempt, action)
//! and a job's status only moves forward, enforced by the upsert itself.

use chrono::{DateTime, Utc};
use hangar_core::{EntityId, Job, JobAction, JobId, JobStatus, Labels, PoolId};
use std::collections::HashMap;

use sqlx::Connection;

use crate::{DbRow, Result, Store, StoreError, corrupt, now_ms, on, per_backend, to_dt};

/// One `workflow_job` delivery, already verified and parsed.
#[derive(Debug, Clone)]
pub struct JobEvent {
    pub job_id: JobId,
    pub run_attempt: i64,
    pub action: JobAction,
    pub entity_id: EntityId,
    pub labels: Labels,
    pub repository: String,
    pub workflow_run_id: Option<i64>,
    pub name: Option<String>,
    pub runner_name: Option<String>,
    pub conclusion: Option<String>,
    /// The pool chosen by label matching; `None` when none matched.
    pub pool_id: Option<PoolId>,
}

/// What recording an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// The same (job, attempt, action) was recorded before.
    Duplicate,
    /// New, but the job already has a later status; nothing changed.
    Stale,
    /// The job now has this status; `pool_id` is its (possibly earlier) pool.
    Recorded {
        status: JobStatus,
        pool_id: Option<PoolId>,
    },
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub pool_id: Option<PoolId>,
    pub entity_id: Option<EntityId>,
    pub limit: Option<u32>,
}

/// Open demand of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolDemand {
    /// Jobs queued for the pool.
    pub queued: u32,
    /// Of those, jobs queued after the grace cutoff (young enough that an
    /// idle runner may still take them).
    pub queued_young: u32,
}

fn status_rank(s: JobStatus) -> i64 {
    match s {
        JobStatus::Waiting => 0,
        JobStatus::Queued => 1,
        JobStatus::InProgress => 2,
        JobStatus::Completed => 3,
    }
}

/// Deliveries per upsert statement: 17 parameters each, and one cached
/// statement per batch size up to this.
pub const ROWS_PER_STATEMENT: usize = 32;

fn action_bit(a: JobAction) -> i64 {
    match a {
        JobAction::Waiting => 1,
        JobAction::Queued => 2,
        JobAction::InProgress => 4,
        JobAction::Completed => 8,
    }
}

/// What the upsert returns for each delivery it applied.
#[derive(sqlx::FromRow)]
pub(crate) struct Applied {
    id: i64,
    run_attempt: i64,
    last_action: String,
    #[sqlx(rename = "last_action_moved")]
    moved: bool,
    pool_id: Option<String>,
}

/// The upsert of `rows` deliveries, built once per batch size: building it
/// per batch cost about a fifth of the intake writer's CPU. The same text
/// runs on both backends (`$N` placeholders, numbered per row).
fn upsert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=ROWS_PER_STATEMENT)
            .map(|n| {
                let values: Vec<String> = (0..n)
                    .map(|r| {
                        let params: Vec<String> = (1..=UPSERT_PARAMS)
                            .map(|p| format!("${}", r * UPSERT_PARAMS + p))
                            .collect();
                        format!("({}, TRUE)", params.join(", "))
                    })
                    .collect();
                format!("{UPSERT_HEAD}{}{UPSERT_TAIL}", values.join(", "))
            })
            .collect()
    });
    &all[rows]
}

/// Parameters bound per delivery in [`upsert_sql`].
const UPSERT_PARAMS: usize = 17;

const UPSERT_HEAD: &str = "INSERT INTO jobs (id, run_attempt, entity_id, status, status_rank,
    conclusion, labels, repository, workflow_run_id, name, runner_name, pool_id, queued_at,
    created_at, updated_at, actions_seen, last_action, last_action_moved) VALUES ";

// Every SET sees the row as it was before this delivery; `excluded.status_rank
// > jobs.status_rank` is whether this delivery moves the status on.
const UPSERT_TAIL: &str = " ON CONFLICT (id, run_attempt) DO UPDATE SET
    actions_seen = jobs.actions_seen | excluded.actions_seen,
    last_action = excluded.last_action,
    last_action_moved = excluded.status_rank > jobs.status_rank,
    status = CASE WHEN excluded.status_rank > jobs.status_rank
        THEN excluded.status ELSE jobs.status END,
    status_rank = CASE WHEN excluded.status_rank > jobs.status_rank
        THEN excluded.status_rank ELSE jobs.status_rank END,
    conclusion = CASE WHEN excluded.status_rank > jobs.status_rank
        THEN COALESCE(excluded.conclusion, jobs.conclusion) ELSE jobs.conclusion END,
    runner_name = CASE WHEN excluded.status_rank > jobs.status_rank
        THEN COALESCE(excluded.runner_name, jobs.runner_name) ELSE jobs.runner_name END,
    pool_id = CASE WHEN excluded.status_rank > jobs.status_rank
        THEN COALESCE(jobs.pool_id, excluded.pool_id) ELSE jobs.pool_id END,
    queued_at = CASE WHEN excluded.status_rank > jobs.status_rank AND excluded.status = 'queued'
        THEN excluded.queued_at ELSE jobs.queued_at END,
    updated_at = CASE WHEN excluded.status_rank > jobs.status_rank
        THEN excluded.updated_at ELSE jobs.updated_at END,
    started_at = CASE WHEN excluded.status_rank > jobs.status_rank AND excluded.status = 'in_progress'
        THEN excluded.updated_at ELSE jobs.started_at END
  WHERE (jobs.actions_seen & excluded.actions_seen) = 0
  RETURNING id, run_attempt, last_action, last_action_moved, pool_id";

/// Splits `events` into the statements PostgreSQL runs them as. Its
/// `ON CONFLICT DO UPDATE` may not touch one row twice in a statement, so a
/// job that comes again starts the next statement (which sees the one
/// before, as SQLite's rows do within one). Events are first put in key
/// order, stably (a job's own events keep their order): every transaction
/// then locks job rows in ascending order, so two replicas taking
/// overlapping batches wait for each other instead of deadlocking.
fn postgres_statements(events: &[JobEvent]) -> Vec<Vec<&JobEvent>> {
    let mut sorted: Vec<&JobEvent> = events.iter().collect();
    sorted.sort_by_key(|e| (e.job_id.0, e.run_attempt));
    let mut out: Vec<Vec<&JobEvent>> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for ev in sorted {
        let key = (ev.job_id.0, ev.run_attempt);
        let full = out.last().is_none_or(|s| s.len() >= ROWS_PER_STATEMENT);
        if full || keys.contains(&key) {
            out.push(Vec::new());
            keys.clear();
        }
        keys.insert(key);
        out.last_mut().expect("a statement was started").push(ev);
    }
    out
}

/// Whether PostgreSQL gave up on a transaction that can simply be run
/// again: a deadlock (40P01) or a serialization failure (40001).
fn is_retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(sqlx::Error::Database(db))
        if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

per_backend! {
/// Upserts `events` (in order, at most [`ROWS_PER_STATEMENT`]) into `jobs`
/// on `conn`; returns the rows it applied.
pub(crate) async fn upsert_events(
    conn: &mut Conn,
    events: &[&JobEvent],
    now: i64,
) -> Result<Vec<Applied>> {
    let mut q = sqlx::query_as::<Db, Applied>(upsert_sql(events.len()));
    for ev in events {
        let status = ev.action.status();
        q = q
            .bind(ev.job_id.0)
            .bind(ev.run_attempt)
            .bind(ev.entity_id.to_string())
            .bind(status.as_str())
            .bind(status_rank(status))
            .bind(ev.conclusion.as_deref())
            .bind(serde_json::to_string(&ev.labels).map_err(corrupt)?)
            .bind(ev.repository.as_str())
            .bind(ev.workflow_run_id)
            .bind(ev.name.as_deref())
            .bind(ev.runner_name.as_deref())
            .bind(ev.pool_id.map(|p| p.to_string()))
            .bind(now)
            .bind(now)
            .bind(now)
            .bind(action_bit(ev.action))
            .bind(ev.action.as_str());
    }
    Ok(q.fetch_all(&mut *conn).await?)
}
}

pub(crate) fn job_from_row(row: &impl DbRow) -> Result<Job> {
    let entity_id: String = row.get("entity_id");
    let pool_id: Option<String> = row.get("pool_id");
    Ok(Job {
        id: JobId(row.get("id")),
        run_attempt: row.get("run_attempt"),
        entity_id: entity_id.parse().map_err(corrupt)?,
        status: row.get::<String, _>("status").parse().map_err(corrupt)?,
        conclusion: row.get("conclusion"),
        labels: serde_json::from_str(row.get("labels")).map_err(corrupt)?,
        repository: row.get("repository"),
        workflow_run_id: row.get("workflow_run_id"),
        name: row.get("name"),
        runner_name: row.get("runner_name"),
        pool_id: pool_id.map(|p| p.parse()).transpose().map_err(corrupt)?,
        created_at: to_dt(row.get("created_at")),
        updated_at: to_dt(row.get("updated_at")),
    })
}

impl Store {
    /// Records a batch of deliveries, returning an outcome per event, in
    /// order. All of it is committed (one fsync) before this returns.
    ///
    /// Each delivery is one row of one multi-row upsert on `jobs`: the
    /// job's `actions_seen` bits deduplicate on (job, attempt, action), the
    /// upsert's own `WHERE` skips a repeat, and a status only moves forward.
    /// Rows are applied in order, each seeing the one before, so a job's
    /// whole life can arrive in one batch. A batch of up to [`ROWS_PER_STATEMENT`]
    /// is a single statement (its own transaction: one round trip to
    /// SQLite's thread); a larger one is several statements in one
    /// transaction.
    pub async fn record_job_events(&self, events: &[JobEvent]) -> Result<Vec<JobOutcome>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let applied = match &self.inner.backend {
            crate::Backend::Sqlite(b) => {
                let mut conn = b.write.acquire().await?;
                let events: Vec<&JobEvent> = events.iter().collect();
                if events.len() <= ROWS_PER_STATEMENT {
                    on_sqlite::upsert_events(&mut conn, &events, now).await?
                } else {
                    let mut applied = Vec::with_capacity(events.len());
                    let mut tx = conn.begin().await?;
                    for chunk in events.chunks(ROWS_PER_STATEMENT) {
                        applied.extend(on_sqlite::upsert_events(&mut tx, chunk, now).await?);
                    }
                    tx.commit().await?;
                    applied
                }
            }
            crate::Backend::Postgres(p) => {
                let statements = postgres_statements(events);
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let result: Result<Vec<Applied>> = async {
                        let mut applied = Vec::with_capacity(events.len());
                        let mut tx = p.begin().await?;
                        for statement in &statements {
                            applied
                                .extend(on_postgres::upsert_events(&mut tx, statement, now).await?);
                        }
                        tx.commit().await?;
                        Ok(applied)
                    }
                    .await;
                    match result {
                        Err(e) if attempt < 5 && is_retryable(&e) => {
                            tracing::debug!(attempt, error = %e, "job intake transaction retried");
                        }
                        other => break other?,
                    }
                }
            }
        };
        // A returned row is a new delivery: its (job, attempt, action) names
        // it alone, as the first of equal events in a batch is the new one
        // and every later one is skipped by the upsert.
        let mut fresh: HashMap<(i64, i64, JobAction), (bool, Option<String>)> = applied
            .into_iter()
            .map(|row| {
                let action = JobAction::from_webhook(&row.last_action).ok_or_else(|| {
                    corrupt(format!(
                        "job {} has last action {:?}",
                        row.id, row.last_action
                    ))
                })?;
                Ok(((row.id, row.run_attempt, action), (row.moved, row.pool_id)))
            })
            .collect::<Result<_>>()?;
        events
            .iter()
            .map(|ev| {
                Ok(
                    match fresh.remove(&(ev.job_id.0, ev.run_attempt, ev.action)) {
                        None => JobOutcome::Duplicate,
                        Some((false, _)) => JobOutcome::Stale,
                        Some((true, pool)) => JobOutcome::Recorded {
                            status: ev.action.status(),
                            pool_id: pool
                                .as_deref()
                                .map(str::parse)
                                .transpose()
                                .map_err(corrupt)?,
                        },
                    },
                )
            })
            .collect()
    }

    pub async fn job(&self, id: JobId, run_attempt: i64) -> Result<Job> {
        on!(self, read, |c| {
            let row = sqlx::query("SELECT * FROM jobs WHERE id = $1 AND run_attempt = $2")
                .bind(id.0)
                .bind(run_attempt)
                .fetch_optional(c)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("job {id} attempt {run_attempt}")))?;
            job_from_row(&row)
        })
    }

    /// Jobs, newest first.
    pub async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<Job>> {
        on!(self, read, |c| {
            let mut q = sqlx::QueryBuilder::new("SELECT * FROM jobs WHERE 1 = 1");
            if let Some(s) = f.status {
                q.push(" AND status = ").push_bind(s.as_str());
            }
            if let Some(p) = f.pool_id {
                q.push(" AND pool_id = ").push_bind(p.to_string());
            }
            if let Some(e) = f.entity_id {
                q.push(" AND entity_id = ").push_bind(e.to_string());
            }
            q.push(" ORDER BY updated_at DESC, id DESC");
            q.push(" LIMIT ")
                .push_bind(i64::from(f.limit.unwrap_or(1000)));
            let rows = q.build().fetch_all(c).await?;
            rows.iter().map(job_from_row).collect()
        })
    }

    /// Queued jobs with no pool (nothing matched when they arrived).
    pub async fn unmatched_queued_jobs(&self, limit: u32) -> Result<Vec<Job>> {
        on!(self, read, |c| {
            let rows = sqlx::query(
                "SELECT * FROM jobs WHERE status = 'queued' AND status_rank <= 1 AND pool_id IS NULL
                 ORDER BY queued_at LIMIT CAST($1 AS INTEGER)",
            )
            .bind(i64::from(limit))
            .fetch_all(c)
            .await?;
            rows.iter().map(job_from_row).collect()
        })
    }

    /// Queued (or waiting) jobs whose re-check is due at `now`, most
    /// overdue first: a job never re-checked is due `first_after` after it
    /// was queued, a re-checked one at its `recheck_at`. Reads only open
    /// jobs (the `jobs_queue` index), however many there are.
    pub async fn due_rechecks(
        &self,
        now: DateTime<Utc>,
        first_after: chrono::Duration,
        limit: u32,
    ) -> Result<Vec<Job>> {
        on!(self, read, |c| {
            let rows = sqlx::query(
                "SELECT * FROM jobs WHERE status_rank <= 1
                   AND COALESCE(recheck_at, queued_at + $1) <= $2
                 ORDER BY COALESCE(recheck_at, queued_at + $3) LIMIT CAST($4 AS INTEGER)",
            )
            .bind(first_after.num_milliseconds())
            .bind(now.timestamp_millis())
            .bind(first_after.num_milliseconds())
            .bind(i64::from(limit))
            .fetch_all(c)
            .await?;
            rows.iter().map(job_from_row).collect()
        })
    }

    /// When a job was queued (its first delivery or recovery), for the
    /// re-check spacing.
    pub async fn job_queued_since(&self, id: JobId, run_attempt: i64) -> Result<DateTime<Utc>> {
        let sql = "SELECT queued_at FROM jobs WHERE id = $1 AND run_attempt = $2";
        let at: Option<i64> = on!(self, read, |c| sqlx::query_scalar(sql)
            .bind(id.0)
            .bind(run_attempt)
            .fetch_optional(c)
            .await)?;
        at.map(to_dt)
            .ok_or_else(|| StoreError::NotFound(format!("job {id} attempt {run_attempt}")))
    }

    /// Which of these (job, attempt) pairs are recorded at all.
    pub async fn known_jobs(&self, keys: &[(JobId, i64)]) -> Result<Vec<(JobId, i64)>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(200) {
            on!(self, read, |c| {
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT id, run_attempt FROM jobs WHERE (id, run_attempt) IN (VALUES ",
                );
                let mut sep = q.separated(", ");
                for (id, attempt) in chunk {
                    sep.push("(")
                        .push_bind_unseparated(id.0)
                        .push_unseparated(", ")
                        .push_bind_unseparated(*attempt)
                        .push_unseparated(")");
                }
                q.push(")");
                for r in q.build().fetch_all(c).await? {
                    out.push((JobId(r.get(0)), r.get(1)));
                }
            });
        }
        Ok(out)
    }

    /// Moves a job forward (never back); returns whether it changed.
    pub async fn advance_job(
        &self,
        id: JobId,
        run_attempt: i64,
        status: JobStatus,
        conclusion: Option<&str>,
    ) -> Result<bool> {
        let sql = "UPDATE jobs SET status = $1, status_rank = $2,
                conclusion = COALESCE($3, conclusion), updated_at = $4
             WHERE id = $5 AND run_attempt = $6 AND status_rank < $7";
        let done = on!(self, write, |c| sqlx::query(sql)
            .bind(status.as_str())
            .bind(status_rank(status))
            .bind(conclusion)
            .bind(now_ms())
            .bind(id.0)
            .bind(run_attempt)
            .bind(status_rank(status))
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    /// Records a re-check and when the next one is due.
    pub async fn mark_job_checked(
        &self,
        id: JobId,
        run_attempt: i64,
        next_at: DateTime<Utc>,
    ) -> Result<()> {
        let sql =
            "UPDATE jobs SET checked_at = $1, recheck_at = $2 WHERE id = $3 AND run_attempt = $4";
        on!(self, write, |c| sqlx::query(sql)
            .bind(now_ms())
            .bind(next_at.timestamp_millis())
            .bind(id.0)
            .bind(run_attempt)
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Assigns a pool to a job that has none (a pool appeared after it came).
    pub async fn assign_job_pool(&self, id: JobId, run_attempt: i64, pool: PoolId) -> Result<bool> {
        let sql = "UPDATE jobs SET pool_id = $1, updated_at = $2
             WHERE id = $3 AND run_attempt = $4 AND pool_id IS NULL";
        let done = on!(self, write, |c| sqlx::query(sql)
            .bind(pool.to_string())
            .bind(now_ms())
            .bind(id.0)
            .bind(run_attempt)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }

    /// Job counts by status (for metrics and `controller show`).
    pub async fn job_counts(&self) -> Result<Vec<(JobStatus, u64)>> {
        on!(self, read, |c| {
            let rows = sqlx::query("SELECT status, COUNT(*) FROM jobs GROUP BY status")
                .fetch_all(c)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.get::<String, _>(0).parse().map_err(corrupt)?,
                        r.get::<i64, _>(1) as u64,
                    ))
                })
                .collect()
        })
    }

    /// Drops completed jobs older than `before`.
    pub async fn purge_completed_jobs(&self, before: DateTime<Utc>) -> Result<u64> {
        let sql = "DELETE FROM jobs WHERE status = 'completed' AND updated_at < $1";
        Ok(on!(self, write, |c| sqlx::query(sql)
            .bind(before.timestamp_millis())
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?)
    }

    /// When the latest attempt of a job was queued.
    pub async fn job_queued_at(&self, id: JobId) -> Result<Option<DateTime<Utc>>> {
        let sql = "SELECT queued_at FROM jobs WHERE id = $1 ORDER BY run_attempt DESC LIMIT 1";
        let at: Option<i64> = on!(self, read, |c| sqlx::query_scalar(sql)
            .bind(id.0)
            .fetch_optional(c)
            .await)?;
        Ok(at.map(to_dt))
    }
}
