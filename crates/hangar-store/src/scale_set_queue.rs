//! What a scale set's message queue changes, applied in one transaction per
//! message: the runner requests it names (`scale_set_jobs`, status only
//! forward), the scale set's counters and the demand they give its pool
//! (`desired_runners`), and what the events mean for the pool's runners
//! (a started job's runner is active, a completed job's runner is retired),
//! all with the message id, so a redelivered message changes nothing.
//!
//! Plus the small reads the listener and the engine need about scale sets.

use std::collections::HashSet;

use crate::instances::Change;
use crate::scale_sets::Deps;
use crate::{DbRow, Result, Store, StoreError, corrupt, now_ms, on, per_backend, to_dt};
use chrono::{DateTime, Utc};
use hangar_core::{
    EntityId, InstanceName, InstanceStatus, PoolId, RunnerStatus, ScaleSetJobEvent,
    ScaleSetMessage, ScaleSetStatistics,
};

/// A scale set as its listener sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenedScaleSet {
    pub id: String,
    pub entity_id: EntityId,
    pub pool_id: PoolId,
    pub name: String,
    /// The Actions service's scale set id.
    pub github_id: i64,
    pub max_runners: u32,
    pub min_idle_runners: u32,
    /// Whether the listener should run: the pool is enabled, the scale set
    /// exists on GitHub (`github_id`) and is `active`.
    pub listening: bool,
    pub last_message_id: i64,
    /// The message session the listener opened last.
    pub session_id: Option<String>,
    /// The pool's runners that are running a job.
    pub busy_runners: u32,
}

/// The scale set behind a pool, as the create and delete steps need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolScaleSet {
    pub id: String,
    pub github_id: Option<i64>,
}

/// Where a scale set's queue stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSetProgress {
    /// `active`, `deleted_on_github` or `error`.
    pub state: String,
    pub last_error: Option<String>,
    pub last_message_id: i64,
    pub desired_runners: u32,
    pub statistics: Option<ScaleSetStatistics>,
    pub session_id: Option<String>,
}

/// What applying one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppliedMessage {
    /// Its id is not above the last applied one: nothing changed.
    AlreadyApplied,
    Applied {
        pool_id: PoolId,
        desired_runners: u32,
        /// Runners marked active / retired by it.
        marked_active: u32,
        retired: u32,
    },
}

/// `desired = min(max_runners, min_idle_runners + assigned jobs)`, as
/// actions-runner-controller scales.
pub fn desired_runners(min_idle: u32, max: u32, stats: &ScaleSetStatistics) -> u32 {
    let assigned = u32::try_from(stats.total_assigned_jobs.max(0)).unwrap_or(u32::MAX);
    min_idle.saturating_add(assigned).min(max)
}

fn rank(e: &ScaleSetJobEvent) -> (i64, &'static str) {
    match e {
        ScaleSetJobEvent::Available { .. } => (0, "available"),
        ScaleSetJobEvent::Assigned { .. } => (2, "assigned"),
        ScaleSetJobEvent::Started { .. } => (3, "started"),
        ScaleSetJobEvent::Completed { .. } => (4, "completed"),
    }
}

macro_rules! listened {
    () => {
        "SELECT s.id, s.entity_id, s.pool_id, s.name, s.github_id, s.state,
        s.last_message_id, s.session_id, p.max_runners, p.min_idle_runners, p.enabled,
        (SELECT COUNT(*) FROM instances i WHERE i.pool_id = s.pool_id AND i.status != 'deleted'
            AND i.runner_status = 'active') AS busy
     FROM scale_sets s JOIN pools p ON p.id = s.pool_id"
    };
}

fn listened_from_row(row: &impl DbRow) -> Result<Option<ListenedScaleSet>> {
    let Some(github_id) = row.get::<Option<i64>, _>("github_id") else {
        return Ok(None);
    };
    let entity: String = row.get("entity_id");
    let pool: String = row.get("pool_id");
    let state: String = row.get("state");
    let enabled: bool = row.get("enabled");
    Ok(Some(ListenedScaleSet {
        id: row.get("id"),
        entity_id: entity.parse().map_err(corrupt)?,
        pool_id: pool.parse().map_err(corrupt)?,
        name: row.get("name"),
        github_id,
        max_runners: row.get::<i64, _>("max_runners") as u32,
        min_idle_runners: row.get::<i64, _>("min_idle_runners") as u32,
        listening: enabled && state == "active",
        last_message_id: row.get("last_message_id"),
        session_id: row.get("session_id"),
        busy_runners: row.get::<i64, _>("busy") as u32,
    }))
}

per_backend! {
/// Moves the pool's runners as their scale set jobs say: a started job's
/// runner is active, a completed job's runner is retired (its delete step
/// follows, as for a webhook's `completed`). Driven from the pool's live
/// instances, so it costs what the pool holds, not the job history; each
/// move goes through the transition tables, and one the instance is not
/// ready for (still `creating`) is left for the next pass.
pub(crate) async fn settle_runners(
    conn: &mut Conn,
    scale_set_id: &str,
    pool_id: &str,
    now: i64,
) -> Result<(u32, u32)> {
    let rows = sqlx::query(
        "SELECT i.name, MAX(j.status_rank) AS rank
         FROM instances i JOIN scale_set_jobs j ON j.runner_name = i.name AND j.scale_set_id = $2
         WHERE i.pool_id = $1 AND i.status != 'deleted' AND j.status_rank >= 3
           AND ((i.runner_status IN ('pending', 'installing', 'idle'))
             OR (j.status_rank = 4 AND i.status IN ('pending_create', 'running', 'error')))
         GROUP BY i.name
         ORDER BY i.name",
    )
    .bind(pool_id)
    .bind(scale_set_id)
    .fetch_all(&mut *conn)
    .await?;
    let (mut active, mut retired) = (0, 0);
    for r in &rows {
        let name = InstanceName::parse(r.get("name")).map_err(corrupt)?;
        let rank: i64 = r.get("rank");
        // A runner that ran its job is active, even when the completion
        // arrives in the same message.
        if <Db as Deps>::apply_if_legal(conn, &name, Change::Runner(RunnerStatus::Active, None), now)
            .await?
            .is_some()
        {
            active += 1;
        }
        if rank == 4
            && <Db as Deps>::apply_if_legal(
                conn,
                &name,
                Change::Status(InstanceStatus::PendingDelete, Some("job completed")),
                now,
            )
            .await?
            .is_some()
        {
            retired += 1;
        }
    }
    Ok((active, retired))
}

/// [`Store::apply_scale_set_message`] in `conn`'s transaction. The scale
/// set's row is read with a lock on PostgreSQL (`FOR NO KEY UPDATE`), so
/// of two connections applying the same message one waits for the other,
/// then sees its `last_message_id` and changes nothing.
pub(crate) async fn apply_message(
    conn: &mut Conn,
    scale_set_id: &str,
    msg: &ScaleSetMessage,
    acquired: &[i64],
) -> Result<AppliedMessage> {
    let sql = if <Db as Deps>::POSTGRES {
        "SELECT s.pool_id, s.last_message_id, s.desired_runners, p.min_idle_runners, p.max_runners
         FROM scale_sets s JOIN pools p ON p.id = s.pool_id WHERE s.id = $1
         FOR NO KEY UPDATE OF s"
    } else {
        "SELECT s.pool_id, s.last_message_id, s.desired_runners, p.min_idle_runners, p.max_runners
         FROM scale_sets s JOIN pools p ON p.id = s.pool_id WHERE s.id = $1"
    };
    let row = sqlx::query(sql)
        .bind(scale_set_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("scale set {scale_set_id}")))?;
    let pool: String = row.get("pool_id");
    let pool_id: PoolId = pool.parse().map_err(corrupt)?;
    if msg.message_id <= row.get::<i64, _>("last_message_id") {
        return Ok(AppliedMessage::AlreadyApplied);
    }
    let now = now_ms();
    for e in &msg.events {
        let job = e.job();
        let (rank, status) = rank(e);
        let (runner_name, runner_id, result) = match e {
            ScaleSetJobEvent::Started {
                runner_id,
                runner_name,
                ..
            } => (Some(runner_name.as_str()), Some(*runner_id), None),
            ScaleSetJobEvent::Completed {
                runner_id,
                runner_name,
                result,
                ..
            } => (
                Some(runner_name.as_str()).filter(|n| !n.is_empty()),
                Some(*runner_id).filter(|id| *id != 0),
                Some(result.as_str()),
            ),
            _ => (None, None, None),
        };
        let labels = serde_json::to_string(&job.request_labels).map_err(corrupt)?;
        sqlx::query(
            "INSERT INTO scale_set_jobs (scale_set_id, runner_request_id, job_id, repository,
                name, workflow_run_id, labels, status, status_rank, result, runner_name,
                runner_id, queued_at, started_at, seen_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $15, $14, $14, $14)
             ON CONFLICT (scale_set_id, runner_request_id) DO UPDATE SET
                status = CASE WHEN excluded.status_rank > scale_set_jobs.status_rank
                    THEN excluded.status ELSE scale_set_jobs.status END,
                status_rank = CASE WHEN excluded.status_rank > scale_set_jobs.status_rank
                    THEN excluded.status_rank ELSE scale_set_jobs.status_rank END,
                result = COALESCE(excluded.result, scale_set_jobs.result),
                runner_name = COALESCE(excluded.runner_name, scale_set_jobs.runner_name),
                runner_id = COALESCE(excluded.runner_id, scale_set_jobs.runner_id),
                started_at = COALESCE(scale_set_jobs.started_at, excluded.started_at),
                updated_at = excluded.updated_at",
        )
        .bind(scale_set_id)
        .bind(job.runner_request_id)
        .bind(&job.job_id)
        .bind(&job.repository)
        .bind(job.job_display_name.as_deref())
        .bind(job.workflow_run_id)
        .bind(labels)
        .bind(status)
        .bind(rank)
        .bind(result)
        .bind(runner_name)
        .bind(runner_id)
        .bind(job.queue_time.map(|t| t.timestamp_millis()))
        .bind(now)
        // When its runner took it, for the dashboard's waits.
        .bind(matches!(e, ScaleSetJobEvent::Started { .. }).then_some(now))
        .execute(&mut *conn)
        .await?;
    }
    let mut fresh: i64 = 0;
    for id in acquired {
        let moved = sqlx::query(
            "UPDATE scale_set_jobs SET status = 'acquired', status_rank = 1, updated_at = $1
             WHERE scale_set_id = $2 AND runner_request_id = $3 AND status_rank < 1",
        )
        .bind(now)
        .bind(scale_set_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
        fresh += moved.rows_affected() as i64;
    }
    let desired = match &msg.statistics {
        Some(s) => {
            // The jobs acquired with this message are the scale set's now,
            // but the message's counters (taken when they were offered)
            // still count them as available: the service counts them as
            // assigned only in its next message. They are demand already;
            // waiting for that message would cost a poll round trip
            // before their runners are asked for. Never more of them than
            // the counters' available jobs, so none is counted twice.
            let known = ScaleSetStatistics {
                total_assigned_jobs: s
                    .total_assigned_jobs
                    .saturating_add(fresh.min(s.total_available_jobs.max(0))),
                ..*s
            };
            desired_runners(
                row.get::<i64, _>("min_idle_runners") as u32,
                row.get::<i64, _>("max_runners") as u32,
                &known,
            )
        }
        None => row.get::<i64, _>("desired_runners") as u32,
    };
    let stats = match &msg.statistics {
        Some(s) => Some(serde_json::to_string(s).map_err(corrupt)?),
        None => None,
    };
    sqlx::query(
        "UPDATE scale_sets SET last_message_id = $1, statistics = COALESCE($2, statistics),
            desired_runners = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(msg.message_id)
    .bind(stats)
    .bind(i64::from(desired))
    .bind(now)
    .bind(scale_set_id)
    .execute(&mut *conn)
    .await?;
    let (marked_active, retired) = settle_runners(conn, scale_set_id, &pool, now).await?;
    Ok(AppliedMessage::Applied {
        pool_id,
        desired_runners: desired,
        marked_active,
        retired,
    })
}

/// Marks the `n` oldest runner requests of the pool's scale set that no
/// create serves yet, in `conn`'s transaction (the creates of a batch of
/// `Store::create_writes` are served by one statement); returns when each
/// was first seen, oldest first (fewer when fewer wait).
pub(crate) async fn serve_jobs(
    conn: &mut Conn,
    pool_id: &str,
    n: usize,
    now: i64,
) -> Result<Vec<i64>> {
    let sql = if <Db as Deps>::POSTGRES { SERVE_POSTGRES } else { SERVE_SQLITE };
    let mut seen: Vec<i64> = sqlx::query_scalar(sql)
        .bind(now)
        .bind(pool_id)
        .bind(i64::try_from(n).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await?;
    seen.sort_unstable();
    Ok(seen)
}

/// [`Store::set_scale_set_statistics`] in `conn`'s transaction (the scale
/// set's row locked on PostgreSQL, as [`apply_message`] locks it).
pub(crate) async fn set_statistics(
    conn: &mut Conn,
    scale_set_id: &str,
    stats: &ScaleSetStatistics,
) -> Result<u32> {
    let sql = if <Db as Deps>::POSTGRES {
        "SELECT p.min_idle_runners, p.max_runners FROM scale_sets s
         JOIN pools p ON p.id = s.pool_id WHERE s.id = $1 FOR NO KEY UPDATE OF s"
    } else {
        "SELECT p.min_idle_runners, p.max_runners FROM scale_sets s
         JOIN pools p ON p.id = s.pool_id WHERE s.id = $1"
    };
    let row = sqlx::query(sql)
        .bind(scale_set_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("scale set {scale_set_id}")))?;
    let desired = desired_runners(
        row.get::<i64, _>(0) as u32,
        row.get::<i64, _>(1) as u32,
        stats,
    );
    sqlx::query(
        "UPDATE scale_sets SET statistics = $1, desired_runners = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(serde_json::to_string(stats).map_err(corrupt)?)
    .bind(i64::from(desired))
    .bind(now_ms())
    .bind(scale_set_id)
    .execute(&mut *conn)
    .await?;
    Ok(desired)
}
}

/// Marks the `$3` oldest runner requests of a pool's scale set that no
/// create serves yet. SQLite picks them by rowid (its single writer
/// serialises this); PostgreSQL by key, skipping requests another
/// connection is marking right now, and re-checks `served_at` so no
/// request is served twice.
const SERVE_SQLITE: &str = "UPDATE scale_set_jobs SET served_at = $1
     WHERE rowid IN (SELECT j.rowid FROM scale_set_jobs j JOIN scale_sets s ON s.id = j.scale_set_id
         WHERE s.pool_id = $2 AND j.served_at IS NULL AND j.status_rank BETWEEN 1 AND 2
         ORDER BY j.seen_at, j.runner_request_id LIMIT CAST($3 AS INTEGER))
     RETURNING seen_at";
const SERVE_POSTGRES: &str = "UPDATE scale_set_jobs SET served_at = $1
     WHERE (scale_set_id, runner_request_id) IN (
         SELECT j.scale_set_id, j.runner_request_id
         FROM scale_set_jobs j JOIN scale_sets s ON s.id = j.scale_set_id
         WHERE s.pool_id = $2 AND j.served_at IS NULL AND j.status_rank BETWEEN 1 AND 2
         ORDER BY j.seen_at, j.runner_request_id LIMIT $3
         FOR UPDATE OF j SKIP LOCKED)
       AND served_at IS NULL
     RETURNING seen_at";

impl Store {
    /// Every scale set that exists on GitHub (has a `github_id`), with
    /// whether its listener should run.
    pub async fn listened_scale_sets(&self) -> Result<Vec<ListenedScaleSet>> {
        on!(self, read, |c| {
            let rows = sqlx::query(concat!(listened!(), " ORDER BY s.created_at, s.id"))
                .fetch_all(c)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.extend(listened_from_row(r)?);
            }
            Ok(out)
        })
    }

    /// One scale set as [`Self::listened_scale_sets`] gives it; `None` when
    /// it is gone or has no `github_id`.
    pub async fn listened_scale_set(&self, id: &str) -> Result<Option<ListenedScaleSet>> {
        on!(self, read, |c| {
            let row = sqlx::query(concat!(listened!(), " WHERE s.id = $1"))
                .bind(id)
                .fetch_optional(c)
                .await?;
            match row {
                Some(r) => listened_from_row(&r),
                None => Ok(None),
            }
        })
    }

    /// The pools that scale sets drive (never matched to a webhook's job;
    /// their runners are not listed by the REST runners API's labels).
    pub async fn scale_set_pool_ids(&self) -> Result<HashSet<PoolId>> {
        let sql = "SELECT id FROM pools WHERE scale_set = TRUE";
        let ids: Vec<String> = on!(self, read, |c| sqlx::query_scalar(sql).fetch_all(c).await)?;
        ids.iter().map(|id| id.parse().map_err(corrupt)).collect()
    }

    /// Makes an existing pool the one a scale set drives and records the
    /// scale set (its id on GitHub, when made there) — the listener's side
    /// of a scale set's creation, for the scheduler's tests and tools.
    /// Returns the scale set's id.
    pub async fn attach_scale_set(
        &self,
        pool: PoolId,
        name: &str,
        github_id: Option<i64>,
    ) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        on!(self, write, |c| {
            let mut tx = c.begin().await?;
            let entity: String = sqlx::query_scalar(
                "UPDATE pools SET scale_set = TRUE, updated_at = $1 WHERE id = $2 RETURNING entity_id",
            )
            .bind(now)
            .bind(pool.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("pool {pool}")))?;
            sqlx::query(
                "INSERT INTO scale_sets (id, entity_id, pool_id, name, github_id, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&id)
            .bind(entity)
            .bind(pool.to_string())
            .bind(name)
            .bind(github_id)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                crate::map_constraint(
                    e,
                    "the pool or the name has a scale set already",
                    "no such entity",
                )
            })?;
            tx.commit().await?;
        });
        Ok(id)
    }

    /// Where a scale set's queue stands; `None` when it is gone.
    pub async fn scale_set_progress(&self, id: &str) -> Result<Option<ScaleSetProgress>> {
        on!(self, read, |c| {
            let row = sqlx::query(
                "SELECT state, last_error, last_message_id, desired_runners, statistics, session_id
                 FROM scale_sets WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(c)
            .await?;
            let Some(r) = row else {
                return Ok(None);
            };
            let statistics = match r.get::<Option<String>, _>("statistics") {
                Some(s) => Some(serde_json::from_str(&s).map_err(corrupt)?),
                None => None,
            };
            Ok(Some(ScaleSetProgress {
                state: r.get("state"),
                last_error: r.get("last_error"),
                last_message_id: r.get("last_message_id"),
                desired_runners: r.get::<i64, _>("desired_runners").max(0) as u32,
                statistics,
                session_id: r.get("session_id"),
            }))
        })
    }

    /// The scale set driving `pool`, if it is a scale set's pool.
    pub async fn scale_set_of_pool(&self, pool: PoolId) -> Result<Option<PoolScaleSet>> {
        on!(self, read, |c| {
            let row = sqlx::query("SELECT id, github_id FROM scale_sets WHERE pool_id = $1")
                .bind(pool.to_string())
                .fetch_optional(c)
                .await?;
            Ok(row.map(|r| PoolScaleSet {
                id: r.get(0),
                github_id: r.get(1),
            }))
        })
    }

    /// Records the message session the listener opened (`None`: closed).
    pub async fn set_scale_set_session(&self, id: &str, session: Option<&str>) -> Result<()> {
        let sql = "UPDATE scale_sets SET session_id = $1, updated_at = $2 WHERE id = $3";
        on!(self, write, |c| sqlx::query(sql)
            .bind(session)
            .bind(now_ms())
            .bind(id)
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Forgets a closed session, unless a newer one was recorded since.
    pub async fn clear_scale_set_session(&self, id: &str, session: &str) -> Result<()> {
        let sql = "UPDATE scale_sets SET session_id = NULL, updated_at = $1
             WHERE id = $2 AND session_id = $3";
        on!(self, write, |c| sqlx::query(sql)
            .bind(now_ms())
            .bind(id)
            .bind(session)
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// The Actions service answered 404 for the scale set: it was deleted
    /// on GitHub. Its listener stops; its pool wants no runners.
    pub async fn mark_scale_set_deleted_on_github(&self, id: &str, why: &str) -> Result<()> {
        let sql = "UPDATE scale_sets SET state = 'deleted_on_github', last_error = $1,
                desired_runners = 0, session_id = NULL, updated_at = $2 WHERE id = $3";
        on!(self, write, |c| sqlx::query(sql)
            .bind(why)
            .bind(now_ms())
            .bind(id)
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// The runners the engine wants for a scale set's pool (the last
    /// message's `desired_runners`); `None` when `pool` is not a scale
    /// set's, 0 when its scale set is not active.
    pub async fn scale_set_desired(&self, pool: PoolId) -> Result<Option<u32>> {
        let sql =
            "SELECT CAST(CASE WHEN state = 'active' THEN desired_runners ELSE 0 END AS BIGINT)
             FROM scale_sets WHERE pool_id = $1";
        let desired: Option<i64> = on!(self, read, |c| sqlx::query_scalar(sql)
            .bind(pool.to_string())
            .fetch_optional(c)
            .await)?;
        Ok(desired.map(|d| d.max(0) as u32))
    }

    /// Applies one queue message in one transaction: upserts a row per
    /// runner request (status only forward; `acquired` ids, which the
    /// listener acquired before applying, move to `acquired`), stores the
    /// statistics and the demand they give, moves the runners the events
    /// name, and records the message id. A message whose id is not above
    /// the last applied one changes nothing, so a message redelivered after
    /// a crash between apply and acknowledgement is harmless.
    pub async fn apply_scale_set_message(
        &self,
        scale_set_id: &str,
        msg: &ScaleSetMessage,
        acquired: &[i64],
    ) -> Result<AppliedMessage> {
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            crate::leases::FenceConn::check_current_fence(&mut *tx).await?;
            let applied = m::apply_message(&mut tx, scale_set_id, msg, acquired).await?;
            if applied != AppliedMessage::AlreadyApplied {
                tx.commit().await?;
            }
            Ok(applied)
        })
    }

    /// Stores the counters a new message session came with and the demand
    /// they give (the queue may be quiet for a long time after a start);
    /// the message id is left as it is.
    pub async fn set_scale_set_statistics(
        &self,
        scale_set_id: &str,
        stats: &ScaleSetStatistics,
    ) -> Result<u32> {
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            crate::leases::FenceConn::check_current_fence(&mut *tx).await?;
            let desired = m::set_statistics(&mut tx, scale_set_id, stats).await?;
            tx.commit().await?;
            Ok(desired)
        })
    }

    /// What the scale set's jobs say about its pool's runners, applied
    /// again (a runner still `creating` when its job completed is retired
    /// once it is running). Returns (marked active, retired).
    pub async fn settle_scale_set_runners(&self, pool: PoolId) -> Result<(u32, u32)> {
        let Some(ss) = self.scale_set_of_pool(pool).await? else {
            return Ok((0, 0));
        };
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            crate::leases::FenceConn::check_current_fence(&mut *tx).await?;
            let r = m::settle_runners(&mut tx, &ss.id, &pool.to_string(), now_ms()).await?;
            tx.commit().await?;
            Ok(r)
        })
    }

    /// A create of the scale set's pool is starting: the oldest runner
    /// request still waiting for a runner is served by it. Returns when
    /// that request was first seen (for the JobAvailable → create latency).
    pub async fn serve_scale_set_job(&self, pool: PoolId) -> Result<Option<DateTime<Utc>>> {
        let seen = on!(self, write, m, |c| {
            let mut conn = c.acquire().await?;
            m::serve_jobs(&mut conn, &pool.to_string(), 1, now_ms()).await?
        });
        Ok(seen.first().copied().map(to_dt))
    }

    /// The request ids of a scale set's jobs and their status (tests, tools).
    pub async fn scale_set_job_statuses(&self, scale_set_id: &str) -> Result<Vec<(i64, String)>> {
        let sql = "SELECT runner_request_id, status FROM scale_set_jobs WHERE scale_set_id = $1
             ORDER BY runner_request_id";
        Ok(on!(self, read, |c| sqlx::query_as(sql)
            .bind(scale_set_id)
            .fetch_all(c)
            .await)?)
    }

    /// Forgets completed scale set jobs last changed before `before`.
    pub async fn purge_completed_scale_set_jobs(&self, before: DateTime<Utc>) -> Result<u64> {
        let sql = "DELETE FROM scale_set_jobs WHERE status_rank = 4 AND updated_at < $1";
        Ok(on!(self, write, |c| sqlx::query(sql)
            .bind(before.timestamp_millis())
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?)
    }
}
