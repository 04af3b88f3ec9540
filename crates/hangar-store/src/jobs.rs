//! Workflow jobs. Intake writes here in batches; the scheduler reads the
//! open ones. Deliveries are deduplicated on (job id, run attempt, action)
//! and a job's status only moves forward, enforced by the upsert itself.

use chrono::{DateTime, Utc};
use hangar_core::{EntityId, Job, JobAction, JobId, JobStatus, Labels, PoolId};
use sqlx::Row;

use crate::{Result, Store, StoreError, corrupt, now_ms, to_dt};

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

fn job_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Job> {
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
    /// Records a batch of deliveries in one transaction (one fsync for all),
    /// returning an outcome per event, in order.
    pub async fn record_job_events(&self, events: &[JobEvent]) -> Result<Vec<JobOutcome>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // The whole batch goes to SQLite as one JSON array and is written
        // by two statements, whatever its size: each statement is a round
        // trip to sqlx's SQLite thread, which cost more than the SQL itself.
        let rows: Vec<serde_json::Value> = events
            .iter()
            .enumerate()
            .map(|(i, ev)| {
                let status = ev.action.status();
                Ok(serde_json::json!({
                    "i": i,
                    "job_id": ev.job_id.0,
                    "run_attempt": ev.run_attempt,
                    "action": ev.action.as_str(),
                    "entity_id": ev.entity_id.to_string(),
                    "status": status.as_str(),
                    "rank": status_rank(status),
                    "conclusion": ev.conclusion,
                    "labels": serde_json::to_string(&ev.labels).map_err(corrupt)?,
                    "repository": ev.repository,
                    "workflow_run_id": ev.workflow_run_id,
                    "name": ev.name,
                    "runner_name": ev.runner_name,
                    "pool_id": ev.pool_id.map(|p| p.to_string()),
                }))
            })
            .collect::<Result<_>>()?;
        let batch = serde_json::Value::Array(rows).to_string();
        let now = now_ms();
        let mut tx = self.w().begin().await?;
        // Deduplicate on (job, attempt, action): the first of equal events
        // is fresh, every later one (and every one seen before) a duplicate.
        let inserted: Vec<(i64, i64, String)> = sqlx::query_as(
            "INSERT OR IGNORE INTO job_events (job_id, run_attempt, action, received_at)
             SELECT value ->> 'job_id', value ->> 'run_attempt', value ->> 'action', ?
               FROM json_each(?) ORDER BY key
             RETURNING job_id, run_attempt, action",
        )
        .bind(now)
        .bind(&batch)
        .fetch_all(&mut *tx)
        .await?;
        let mut fresh_keys: std::collections::HashSet<(i64, i64, String)> =
            inserted.into_iter().collect();
        let fresh: Vec<bool> = events
            .iter()
            .map(|ev| {
                fresh_keys.remove(&(ev.job_id.0, ev.run_attempt, ev.action.as_str().to_owned()))
            })
            .collect();
        let fresh_idx: Vec<i64> = fresh
            .iter()
            .enumerate()
            .filter(|(_, f)| **f)
            .map(|(i, _)| i as i64)
            .collect();
        let mut changed: Vec<(i64, i64, String, Option<String>)> = Vec::new();
        if !fresh_idx.is_empty() {
            let wanted = serde_json::to_string(&fresh_idx).map_err(corrupt)?;
            // Status only moves forward; events of one job in one batch are
            // applied in arrival order, each seeing the one before.
            changed = sqlx::query_as(
                "INSERT INTO jobs (id, run_attempt, entity_id, status, status_rank, conclusion, labels, repository,
                    workflow_run_id, name, runner_name, pool_id, queued_at, created_at, updated_at)
                 SELECT e.value ->> 'job_id', e.value ->> 'run_attempt', e.value ->> 'entity_id',
                    e.value ->> 'status', e.value ->> 'rank', e.value ->> 'conclusion', e.value ->> 'labels',
                    e.value ->> 'repository', e.value ->> 'workflow_run_id', e.value ->> 'name',
                    e.value ->> 'runner_name', e.value ->> 'pool_id', ?, ?, ?
                   FROM json_each(?) AS e
                  WHERE e.key IN (SELECT value FROM json_each(?))
                  ORDER BY e.key
                 ON CONFLICT (id, run_attempt) DO UPDATE SET
                    status = excluded.status,
                    status_rank = excluded.status_rank,
                    conclusion = coalesce(excluded.conclusion, jobs.conclusion),
                    runner_name = coalesce(excluded.runner_name, jobs.runner_name),
                    pool_id = coalesce(jobs.pool_id, excluded.pool_id),
                    queued_at = CASE WHEN excluded.status = 'queued' THEN excluded.queued_at ELSE jobs.queued_at END,
                    updated_at = excluded.updated_at
                 WHERE excluded.status_rank > jobs.status_rank
                 RETURNING id, run_attempt, status, pool_id",
            )
            .bind(now)
            .bind(now)
            .bind(now)
            .bind(&batch)
            .bind(&wanted)
            .fetch_all(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        // Each returned row is one event that moved its job forward; as
        // status only moves forward, (job, attempt, status) names it alone.
        let mut moved: std::collections::HashMap<(i64, i64, String), Option<String>> = changed
            .into_iter()
            .map(|(id, attempt, status, pool)| ((id, attempt, status), pool))
            .collect();
        let mut out = Vec::with_capacity(events.len());
        for (ev, fresh) in events.iter().zip(fresh) {
            if !fresh {
                out.push(JobOutcome::Duplicate);
                continue;
            }
            let status = ev.action.status();
            out.push(
                match moved.remove(&(ev.job_id.0, ev.run_attempt, status.as_str().to_owned())) {
                    None => JobOutcome::Stale,
                    Some(pool) => JobOutcome::Recorded {
                        status,
                        pool_id: pool
                            .as_deref()
                            .map(str::parse)
                            .transpose()
                            .map_err(corrupt)?,
                    },
                },
            );
        }
        Ok(out)
    }

    pub async fn job(&self, id: JobId, run_attempt: i64) -> Result<Job> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ? AND run_attempt = ?")
            .bind(id.0)
            .bind(run_attempt)
            .fetch_optional(self.r())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("job {id} attempt {run_attempt}")))?;
        job_from_row(&row)
    }

    /// Jobs, newest first.
    pub async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<Job>> {
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
        let rows = q.build().fetch_all(self.r()).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Queued demand of one pool, each count capped at `cap`; jobs queued
    /// after `young_after` count as young. Two bounded ranges of the
    /// `jobs_pool_queued` index, so a long queue costs no more than `cap`
    /// rows.
    pub async fn pool_demand_of(
        &self,
        pool_id: PoolId,
        young_after: DateTime<Utc>,
        cap: u32,
    ) -> Result<PoolDemand> {
        let pool = pool_id.to_string();
        let queued: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE pool_id = ? AND status = 'queued' LIMIT ?)",
        )
        .bind(&pool)
        .bind(i64::from(cap))
        .fetch_one(self.r())
        .await?;
        let young: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM jobs
               WHERE pool_id = ? AND status = 'queued' AND queued_at > ? LIMIT ?)",
        )
        .bind(&pool)
        .bind(young_after.timestamp_millis())
        .bind(i64::from(cap))
        .fetch_one(self.r())
        .await?;
        Ok(PoolDemand {
            queued: queued as u32,
            queued_young: young as u32,
        })
    }

    /// Queued demand per pool; jobs queued after `young_after` count as young.
    pub async fn pool_demand(
        &self,
        young_after: DateTime<Utc>,
    ) -> Result<Vec<(PoolId, PoolDemand)>> {
        let rows = sqlx::query(
            "SELECT pool_id, COUNT(*), SUM(CASE WHEN queued_at > ? THEN 1 ELSE 0 END)
             FROM jobs WHERE status = 'queued' AND pool_id IS NOT NULL GROUP BY pool_id",
        )
        .bind(young_after.timestamp_millis())
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| {
                let p: String = r.get(0);
                Ok((
                    p.parse().map_err(corrupt)?,
                    PoolDemand {
                        queued: r.get::<i64, _>(1) as u32,
                        queued_young: r.get::<i64, _>(2) as u32,
                    },
                ))
            })
            .collect()
    }

    /// Queued jobs with no pool (nothing matched when they arrived).
    pub async fn unmatched_queued_jobs(&self, limit: u32) -> Result<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE status = 'queued' AND pool_id IS NULL ORDER BY queued_at LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(self.r())
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Queued (or waiting) jobs queued before `before` and not re-checked
    /// since `checked_before`, oldest first.
    pub async fn stale_queued_jobs(
        &self,
        before: DateTime<Utc>,
        checked_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE status_rank <= 1 AND queued_at < ?
               AND (checked_at IS NULL OR checked_at < ?)
             ORDER BY queued_at LIMIT ?",
        )
        .bind(before.timestamp_millis())
        .bind(checked_before.timestamp_millis())
        .bind(i64::from(limit))
        .fetch_all(self.r())
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Moves a job forward (never back); returns whether it changed.
    pub async fn advance_job(
        &self,
        id: JobId,
        run_attempt: i64,
        status: JobStatus,
        conclusion: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = ?, status_rank = ?, conclusion = coalesce(?, conclusion), updated_at = ?
             WHERE id = ? AND run_attempt = ? AND status_rank < ?",
        )
        .bind(status.as_str())
        .bind(status_rank(status))
        .bind(conclusion)
        .bind(now_ms())
        .bind(id.0)
        .bind(run_attempt)
        .bind(status_rank(status))
        .execute(self.w())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn mark_job_checked(&self, id: JobId, run_attempt: i64) -> Result<()> {
        sqlx::query("UPDATE jobs SET checked_at = ? WHERE id = ? AND run_attempt = ?")
            .bind(now_ms())
            .bind(id.0)
            .bind(run_attempt)
            .execute(self.w())
            .await?;
        Ok(())
    }

    /// Assigns a pool to a job that has none (a pool appeared after it came).
    pub async fn assign_job_pool(&self, id: JobId, run_attempt: i64, pool: PoolId) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET pool_id = ?, updated_at = ? WHERE id = ? AND run_attempt = ? AND pool_id IS NULL",
        )
        .bind(pool.to_string())
        .bind(now_ms())
        .bind(id.0)
        .bind(run_attempt)
        .execute(self.w())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Job counts by status (for metrics and `controller show`).
    pub async fn job_counts(&self) -> Result<Vec<(JobStatus, u64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM jobs GROUP BY status")
            .fetch_all(self.r())
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get::<String, _>(0).parse().map_err(corrupt)?,
                    r.get::<i64, _>(1) as u64,
                ))
            })
            .collect()
    }

    /// Drops completed jobs (and their delivery records) older than `before`.
    pub async fn purge_completed_jobs(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.w().begin().await?;
        let cutoff = before.timestamp_millis();
        sqlx::query(
            "DELETE FROM job_events WHERE (job_id, run_attempt) IN
               (SELECT id, run_attempt FROM jobs WHERE status = 'completed' AND updated_at < ?)",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query("DELETE FROM jobs WHERE status = 'completed' AND updated_at < ?")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// When the latest attempt of a job was queued.
    pub async fn job_queued_at(&self, id: JobId) -> Result<Option<DateTime<Utc>>> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT queued_at FROM jobs WHERE id = ? ORDER BY run_attempt DESC LIMIT 1",
        )
        .bind(id.0)
        .fetch_optional(self.r())
        .await?;
        Ok(at.map(to_dt))
    }
}
