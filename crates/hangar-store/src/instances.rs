//! Instances: capacity reservation, the two status machines, the instance
//! token and the one-time JIT config.

use chrono::{DateTime, Utc};
use hangar_core::{Instance, InstanceName, InstanceStatus, JobId, PoolId, RunnerStatus, Secret};
use sqlx::Row;

use crate::{Result, Store, StoreError, corrupt, map_constraint, now_ms, to_dt};

/// `FROM instances i JOIN jobs j … WHERE` of the instances whose job moved
/// on without the instance following (see `instances_with_job_progress`);
/// `?1` is the pool.
macro_rules! job_progress_from_where {
    () => {
        "FROM instances i JOIN jobs j ON j.runner_name = i.name
         WHERE i.pool_id = ?1 AND (
            (j.status = 'in_progress' AND i.status != 'deleted'
                AND i.runner_status IN ('pending', 'installing', 'idle'))
            OR (j.status = 'completed' AND i.status IN ('pending_create', 'running', 'error'))
         )"
    };
}
pub(crate) use job_progress_from_where;

/// `FROM instances WHERE` of the instances that need a step (see
/// `instances_needing_work`); `?1` is the pool, the argument an SQL
/// expression for the bootstrap cutoff (Unix ms).
macro_rules! needing_work_from_where {
    ($cutoff:literal) => {
        concat!(
            "FROM instances
             WHERE pool_id = ?1 AND (
                status IN ('pending_create', 'error', 'pending_delete')
                OR (status = 'running' AND runner_status IN ('pending', 'installing') AND created_at < ",
            $cutoff,
            ")
                OR (status = 'running' AND runner_status = 'failed')
             )"
        )
    };
}
pub(crate) use needing_work_from_where;

/// The [`PoolUsage`] counts (live, spare, idle, active) of the pool `?1`.
macro_rules! usage_select {
    () => {
        "SELECT
            COUNT(*) AS live,
            coalesce(SUM(CASE WHEN status IN ('pending_create', 'creating', 'running')
                      AND runner_status IN ('pending', 'installing', 'idle') THEN 1 ELSE 0 END), 0) AS spare,
            coalesce(SUM(CASE WHEN status = 'running' AND runner_status = 'idle' THEN 1 ELSE 0 END), 0) AS idle,
            coalesce(SUM(CASE WHEN runner_status = 'active' THEN 1 ELSE 0 END), 0) AS active
         FROM instances WHERE pool_id = ?1 AND status != 'deleted'"
    };
}
pub(crate) use usage_select;

macro_rules! instance_columns {
    () => {
        "name, pool_id, provider_id, status, runner_status, runner_id, job_id, addresses, status_message, create_attempts, created_at, updated_at"
    };
}

/// A reservation request.
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub name: InstanceName,
    pub pool_id: PoolId,
    pub provider_name: String,
    pub job_id: Option<JobId>,
}

#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub pool_id: Option<PoolId>,
    pub statuses: Option<Vec<InstanceStatus>>,
    pub include_deleted: bool,
}

/// Capacity use of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolUsage {
    /// Instances holding capacity (everything not deleted).
    pub live: u32,
    /// Instances that are or will be a runner free to take a job: not being
    /// deleted, not failed, runner pending/installing/idle.
    pub spare: u32,
    /// Of those, runners already idle.
    pub idle: u32,
    pub active: u32,
}

pub(crate) fn usage_from_row(row: &sqlx::sqlite::SqliteRow) -> PoolUsage {
    let n = |c: &str| row.get::<i64, _>(c) as u32;
    PoolUsage {
        live: n("live"),
        spare: n("spare"),
        idle: n("idle"),
        active: n("active"),
    }
}

/// Counts for metrics: (pool, status, runner status) → n.
pub type InstanceCounts = Vec<(PoolId, InstanceStatus, RunnerStatus, u64)>;

/// The instance a token belongs to.
#[derive(Debug, Clone)]
pub struct TokenLookup {
    pub instance: Instance,
    pub has_jit_config: bool,
    pub jit_fetched: bool,
}

fn jit_purpose(name: &InstanceName) -> String {
    format!("instances.jit_config:{name}")
}

pub(crate) fn instance_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Instance> {
    let name: String = row.get("name");
    let pool_id: String = row.get("pool_id");
    Ok(Instance {
        name: InstanceName::parse(&name).map_err(corrupt)?,
        pool_id: pool_id.parse().map_err(corrupt)?,
        provider_id: row.get("provider_id"),
        status: row.get::<String, _>("status").parse().map_err(corrupt)?,
        runner_status: row
            .get::<String, _>("runner_status")
            .parse()
            .map_err(corrupt)?,
        runner_id: row.get("runner_id"),
        job_id: row.get::<Option<i64>, _>("job_id").map(JobId),
        addresses: serde_json::from_str(row.get("addresses")).map_err(corrupt)?,
        status_message: row.get("status_message"),
        create_attempts: row.get::<i64, _>("create_attempts") as u32,
        created_at: to_dt(row.get("created_at")),
        updated_at: to_dt(row.get("updated_at")),
    })
}

fn not_found(name: &InstanceName) -> StoreError {
    StoreError::NotFound(format!("instance {name}"))
}

impl Store {
    /// Records a new instance in `pending_create` if the pool has room.
    /// Returns `None` when the pool is at `max_runners` or disabled. Runs in
    /// one transaction on the single writer, so concurrent reservations can
    /// never exceed the limit.
    pub async fn reserve_instance(&self, new: &NewInstance) -> Result<Option<Instance>> {
        let mut tx = self.w().begin().await?;
        let pool = sqlx::query("SELECT max_runners, enabled FROM pools WHERE id = ?")
            .bind(new.pool_id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("pool {}", new.pool_id)))?;
        let max: i64 = pool.get(0);
        let enabled: bool = pool.get(1);
        if !enabled {
            return Ok(None);
        }
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM instances WHERE pool_id = ? AND status != 'deleted'",
        )
        .bind(new.pool_id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        if live >= max {
            return Ok(None);
        }
        let now = now_ms();
        sqlx::query(
            "INSERT INTO instances (name, pool_id, provider_name, status, runner_status, job_id, created_at, updated_at)
             VALUES (?, ?, ?, 'pending_create', 'pending', ?, ?, ?)",
        )
        .bind(new.name.as_str())
        .bind(new.pool_id.to_string())
        .bind(&new.provider_name)
        .bind(new.job_id.map(|j| j.0))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_constraint(e, &format!("instance {} already exists", new.name), "pool does not exist"))?;
        tx.commit().await?;
        self.instance(&new.name).await.map(Some)
    }

    pub async fn instance(&self, name: &InstanceName) -> Result<Instance> {
        let row = sqlx::query(concat!(
            "SELECT ",
            instance_columns!(),
            " FROM instances WHERE name = ?"
        ))
        .bind(name.as_str())
        .fetch_optional(self.r())
        .await?
        .ok_or_else(|| not_found(name))?;
        instance_from_row(&row)
    }

    pub async fn list_instances(&self, f: &InstanceFilter) -> Result<Vec<Instance>> {
        let mut q = sqlx::QueryBuilder::new(concat!(
            "SELECT ",
            instance_columns!(),
            " FROM instances WHERE 1 = 1"
        ));
        if let Some(p) = f.pool_id {
            q.push(" AND pool_id = ").push_bind(p.to_string());
        }
        if let Some(statuses) = &f.statuses {
            q.push(" AND status IN (");
            let mut sep = q.separated(", ");
            for s in statuses {
                sep.push_bind(s.as_str());
            }
            q.push(")");
        } else if !f.include_deleted {
            q.push(" AND status != 'deleted'");
        }
        q.push(" ORDER BY created_at, name");
        let rows = q.build().fetch_all(self.r()).await?;
        rows.iter().map(instance_from_row).collect()
    }

    /// Moves an instance to `to` if the core table allows it from its current
    /// status, in one transaction. `message` replaces the status message when
    /// given.
    pub async fn set_instance_status(
        &self,
        name: &InstanceName,
        to: InstanceStatus,
        message: Option<&str>,
    ) -> Result<Instance> {
        let mut tx = self.w().begin().await?;
        let current: String = sqlx::query_scalar("SELECT status FROM instances WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found(name))?;
        let from: InstanceStatus = current.parse().map_err(corrupt)?;
        from.check_transition(to)?;
        let now = now_ms();
        sqlx::query(
            "UPDATE instances SET status = ?, status_message = coalesce(?, status_message), updated_at = ?,
                deleted_at = CASE WHEN ? = 'deleted' THEN ? ELSE deleted_at END,
                token_hash = CASE WHEN ? = 'deleted' THEN NULL ELSE token_hash END,
                jit_config = CASE WHEN ? = 'deleted' THEN NULL ELSE jit_config END
             WHERE name = ?",
        )
        .bind(to.as_str())
        .bind(message)
        .bind(now)
        .bind(to.as_str())
        .bind(now)
        .bind(to.as_str())
        .bind(to.as_str())
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.instance(name).await
    }

    /// Moves the runner to `to` if the core table allows it.
    pub async fn set_runner_status(
        &self,
        name: &InstanceName,
        to: RunnerStatus,
        message: Option<&str>,
    ) -> Result<Instance> {
        let mut tx = self.w().begin().await?;
        let current: String =
            sqlx::query_scalar("SELECT runner_status FROM instances WHERE name = ?")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| not_found(name))?;
        let from: RunnerStatus = current.parse().map_err(corrupt)?;
        from.check_transition(to)?;
        sqlx::query(
            "UPDATE instances SET runner_status = ?, status_message = coalesce(?, status_message), updated_at = ?
             WHERE name = ?",
        )
        .bind(to.as_str())
        .bind(message)
        .bind(now_ms())
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.instance(name).await
    }

    /// Stores the JIT config (sealed) and the GitHub runner id.
    pub async fn set_instance_jit(
        &self,
        name: &InstanceName,
        runner_id: i64,
        jit_config: &Secret,
    ) -> Result<()> {
        let sealed = self.sealer().seal_secret(&jit_purpose(name), jit_config);
        let done = sqlx::query(
            "UPDATE instances SET runner_id = ?, jit_config = ?, updated_at = ? WHERE name = ?",
        )
        .bind(runner_id)
        .bind(sealed)
        .bind(now_ms())
        .bind(name.as_str())
        .execute(self.w())
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(name));
        }
        Ok(())
    }

    /// Records the GitHub runner id (registration-token instances learn it
    /// from the runner list).
    pub async fn set_instance_runner_id(&self, name: &InstanceName, runner_id: i64) -> Result<()> {
        sqlx::query("UPDATE instances SET runner_id = ?, updated_at = ? WHERE name = ?")
            .bind(runner_id)
            .bind(now_ms())
            .bind(name.as_str())
            .execute(self.w())
            .await?;
        Ok(())
    }

    /// Starts a create attempt: `pending_create → creating`, counting it and
    /// installing a fresh instance token (the token goes into this attempt's
    /// userdata; an earlier attempt's token stops working).
    pub async fn begin_create(
        &self,
        name: &InstanceName,
        token_hash: &[u8; 32],
    ) -> Result<Instance> {
        let mut tx = self.w().begin().await?;
        let current: String = sqlx::query_scalar("SELECT status FROM instances WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found(name))?;
        let from: InstanceStatus = current.parse().map_err(corrupt)?;
        from.check_transition(InstanceStatus::Creating)?;
        sqlx::query(
            "UPDATE instances SET status = 'creating', create_attempts = create_attempts + 1, token_hash = ?,
                next_attempt_at = NULL, updated_at = ? WHERE name = ?",
        )
        .bind(&token_hash[..])
        .bind(now_ms())
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.instance(name).await
    }

    /// Records what the provider reported for a created instance and moves
    /// it to `running`.
    pub async fn finish_create(
        &self,
        name: &InstanceName,
        provider_id: &str,
        addresses: &[String],
    ) -> Result<Instance> {
        let mut tx = self.w().begin().await?;
        let current: String = sqlx::query_scalar("SELECT status FROM instances WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found(name))?;
        let from: InstanceStatus = current.parse().map_err(corrupt)?;
        from.check_transition(InstanceStatus::Running)?;
        sqlx::query(
            "UPDATE instances SET status = 'running', provider_id = ?, addresses = ?, status_message = NULL,
                next_attempt_at = NULL, updated_at = ? WHERE name = ?",
        )
        .bind(provider_id)
        .bind(serde_json::to_string(addresses).map_err(corrupt)?)
        .bind(now_ms())
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.instance(name).await
    }

    /// Sets when the next attempt (create retry or delete retry) may happen.
    pub async fn set_next_attempt(
        &self,
        name: &InstanceName,
        at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        sqlx::query("UPDATE instances SET next_attempt_at = ?, updated_at = ? WHERE name = ?")
            .bind(at.map(|t| t.timestamp_millis()))
            .bind(now_ms())
            .bind(name.as_str())
            .execute(self.w())
            .await?;
        Ok(())
    }

    /// When the next attempt may happen (`None`: now).
    pub async fn next_attempt(&self, name: &InstanceName) -> Result<Option<DateTime<Utc>>> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT next_attempt_at FROM instances WHERE name = ?")
                .bind(name.as_str())
                .fetch_optional(self.r())
                .await?
                .ok_or_else(|| not_found(name))?;
        Ok(at.map(to_dt))
    }

    /// The instance a token hash belongs to, if it is still valid (not
    /// deleted).
    pub async fn instance_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<TokenLookup>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            instance_columns!(),
            ", jit_config IS NOT NULL AS has_jit, jit_fetched_at IS NOT NULL AS fetched
             FROM instances WHERE token_hash = ?"
        ))
        .bind(&token_hash[..])
        .fetch_optional(self.r())
        .await?;
        row.map(|row| {
            Ok(TokenLookup {
                instance: instance_from_row(&row)?,
                has_jit_config: row.get("has_jit"),
                jit_fetched: row.get("fetched"),
            })
        })
        .transpose()
    }

    /// Hands out the JIT config exactly once: returns it and forgets it.
    /// A second call is a [`StoreError::Conflict`].
    pub async fn take_jit_config(&self, name: &InstanceName) -> Result<Secret> {
        let mut tx = self.w().begin().await?;
        let row = sqlx::query("SELECT jit_config, jit_fetched_at FROM instances WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found(name))?;
        let sealed: Option<Vec<u8>> = row.get(0);
        let fetched: Option<i64> = row.get(1);
        if fetched.is_some() {
            return Err(StoreError::Conflict(
                "the JIT config of this instance was already fetched".into(),
            ));
        }
        let sealed = sealed
            .ok_or_else(|| StoreError::NotFound(format!("a JIT config for instance {name}")))?;
        let secret = self.sealer().open_secret(&jit_purpose(name), &sealed)?;
        sqlx::query("UPDATE instances SET jit_config = NULL, jit_fetched_at = ?, updated_at = ? WHERE name = ?")
            .bind(now_ms())
            .bind(now_ms())
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(secret)
    }

    /// Capacity use of every pool that has instances.
    pub async fn pool_usage(&self) -> Result<Vec<(PoolId, PoolUsage)>> {
        let rows = sqlx::query(
            "SELECT pool_id,
                SUM(CASE WHEN status != 'deleted' THEN 1 ELSE 0 END),
                SUM(CASE WHEN status IN ('pending_create', 'creating', 'running')
                          AND runner_status IN ('pending', 'installing', 'idle') THEN 1 ELSE 0 END),
                SUM(CASE WHEN status = 'running' AND runner_status = 'idle' THEN 1 ELSE 0 END),
                SUM(CASE WHEN status != 'deleted' AND runner_status = 'active' THEN 1 ELSE 0 END)
             FROM instances WHERE status != 'deleted' GROUP BY pool_id",
        )
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| {
                let p: String = r.get(0);
                Ok((
                    p.parse().map_err(corrupt)?,
                    PoolUsage {
                        live: r.get::<i64, _>(1) as u32,
                        spare: r.get::<i64, _>(2) as u32,
                        idle: r.get::<i64, _>(3) as u32,
                        active: r.get::<i64, _>(4) as u32,
                    },
                ))
            })
            .collect()
    }

    pub async fn instance_counts(&self) -> Result<InstanceCounts> {
        let rows = sqlx::query(
            "SELECT pool_id, status, runner_status, COUNT(*) FROM instances GROUP BY pool_id, status, runner_status",
        )
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| {
                let p: String = r.get(0);
                Ok((
                    p.parse().map_err(corrupt)?,
                    r.get::<String, _>(1).parse().map_err(corrupt)?,
                    r.get::<String, _>(2).parse().map_err(corrupt)?,
                    r.get::<i64, _>(3) as u64,
                ))
            })
            .collect()
    }

    /// The live instance whose runner has this name (runner name = instance
    /// name; `None` for names Hangar did not make).
    pub async fn instance_by_runner_name(&self, runner_name: &str) -> Result<Option<Instance>> {
        let Ok(name) = InstanceName::parse(runner_name) else {
            return Ok(None);
        };
        match self.instance(&name).await {
            Ok(i) => Ok(Some(i)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Forgets `deleted` instances older than `before`.
    pub async fn purge_deleted_instances(&self, before: DateTime<Utc>) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM instances WHERE status = 'deleted' AND deleted_at < ?")
                .bind(before.timestamp_millis())
                .execute(self.w())
                .await?
                .rows_affected(),
        )
    }

    /// Reserves up to `count` new instances in one transaction, never above
    /// the pool's `max_runners`, handing each the oldest queued job of the
    /// pool that no live instance was made for yet. Returns what was made.
    pub async fn reserve_instances(
        &self,
        pool_id: PoolId,
        provider_name: &str,
        names: &[InstanceName],
    ) -> Result<Vec<Instance>> {
        let mut tx = self.w().begin().await?;
        let pool = sqlx::query("SELECT max_runners, enabled FROM pools WHERE id = ?")
            .bind(pool_id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("pool {pool_id}")))?;
        let max: i64 = pool.get(0);
        let enabled: bool = pool.get(1);
        if !enabled || names.is_empty() {
            return Ok(Vec::new());
        }
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM instances WHERE pool_id = ? AND status != 'deleted'",
        )
        .bind(pool_id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let room = usize::try_from((max - live).max(0))
            .unwrap_or(0)
            .min(names.len());
        if room == 0 {
            return Ok(Vec::new());
        }
        let jobs: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE pool_id = ? AND status = 'queued' AND status_rank <= 1
               AND id NOT IN (SELECT job_id FROM instances WHERE job_id IS NOT NULL AND status != 'deleted')
             ORDER BY queued_at LIMIT CAST(? AS INTEGER)",
        )
        .bind(pool_id.to_string())
        .bind(room as i64)
        .fetch_all(&mut *tx)
        .await?;
        let now = now_ms();
        for (i, name) in names.iter().take(room).enumerate() {
            sqlx::query(
                "INSERT INTO instances (name, pool_id, provider_name, status, runner_status, job_id, created_at, updated_at)
                 VALUES (?, ?, ?, 'pending_create', 'pending', ?, ?, ?)",
            )
            .bind(name.as_str())
            .bind(pool_id.to_string())
            .bind(provider_name)
            .bind(jobs.get(i).copied())
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_constraint(e, &format!("instance {name} already exists"), "pool does not exist"))?;
        }
        let mut q = sqlx::QueryBuilder::new(concat!(
            "SELECT ",
            instance_columns!(),
            " FROM instances WHERE name IN ("
        ));
        let mut sep = q.separated(", ");
        for name in names.iter().take(room) {
            sep.push_bind(name.as_str());
        }
        q.push(") ORDER BY created_at, name");
        let rows = q.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(instance_from_row).collect()
    }

    /// After a restart, nothing is under way any more: instances caught in
    /// `creating` go to `error` (their create may or may not have happened;
    /// the error path cleans up either way) and `deleting` back to
    /// `pending_delete`. Returns how many were moved.
    pub async fn recover_interrupted(&self) -> Result<u64> {
        let mut tx = self.w().begin().await?;
        let now = now_ms();
        let a = sqlx::query(
            "UPDATE instances SET status = 'error', status_message = 'create interrupted by a restart', updated_at = ?
             WHERE status = 'creating'",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let b = sqlx::query(
            "UPDATE instances SET status = 'pending_delete', updated_at = ? WHERE status = 'deleting'",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(a + b)
    }

    /// Instances of a pool whose runner took a job that GitHub reports
    /// `in_progress` (runner not yet marked active) or `completed` (instance
    /// not yet being retired), with that job's status: lets reconcile catch
    /// up on deliveries the event path missed. Only rows that need a change.
    pub async fn instances_with_job_progress(
        &self,
        pool_id: PoolId,
    ) -> Result<Vec<(InstanceName, JobId, hangar_core::JobStatus)>> {
        let rows = sqlx::query(concat!(
            "SELECT i.name, j.id, j.status ",
            job_progress_from_where!()
        ))
        .bind(pool_id.to_string())
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    InstanceName::parse(r.get(0)).map_err(corrupt)?,
                    JobId(r.get(1)),
                    r.get::<String, _>(2).parse().map_err(corrupt)?,
                ))
            })
            .collect()
    }

    /// Records which job an instance's runner took.
    pub async fn set_instance_job(&self, name: &InstanceName, job: JobId) -> Result<()> {
        sqlx::query("UPDATE instances SET job_id = ?, updated_at = ? WHERE name = ?")
            .bind(job.0)
            .bind(now_ms())
            .bind(name.as_str())
            .execute(self.w())
            .await?;
        Ok(())
    }

    /// Capacity use of one pool.
    pub async fn pool_usage_of(&self, pool_id: PoolId) -> Result<PoolUsage> {
        let row = sqlx::query(usage_select!())
            .bind(pool_id.to_string())
            .fetch_one(self.r())
            .await?;
        Ok(usage_from_row(&row))
    }

    /// The instances of a pool that need a step now or soon: waiting to be
    /// created, failed, waiting to be deleted, running with a runner that
    /// reported a failure, or running with a runner that is still
    /// bootstrapping and was created before `bootstrap_cutoff`. Each comes with the time its next attempt is
    /// allowed (`None`: now). Everything else needs nothing, so reconcile's
    /// cost follows the work, not the pool's size.
    pub async fn instances_needing_work(
        &self,
        pool_id: PoolId,
        bootstrap_cutoff: DateTime<Utc>,
    ) -> Result<Vec<(Instance, Option<DateTime<Utc>>)>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            instance_columns!(),
            ", next_attempt_at ",
            needing_work_from_where!("?2"),
            " ORDER BY created_at, name"
        ))
        .bind(pool_id.to_string())
        .bind(bootstrap_cutoff.timestamp_millis())
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| {
                let next: Option<i64> = r.get("next_attempt_at");
                Ok((instance_from_row(r)?, next.map(to_dt)))
            })
            .collect()
    }

    /// Up to `limit` running instances of a pool with an idle runner,
    /// oldest first (candidates for scaling down).
    pub async fn idle_instances(&self, pool_id: PoolId, limit: u32) -> Result<Vec<Instance>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            instance_columns!(),
            " FROM instances WHERE pool_id = ? AND status = 'running' AND runner_status = 'idle'
             ORDER BY created_at, name LIMIT CAST(? AS INTEGER)"
        ))
        .bind(pool_id.to_string())
        .bind(i64::from(limit))
        .fetch_all(self.r())
        .await?;
        rows.iter().map(instance_from_row).collect()
    }
}
