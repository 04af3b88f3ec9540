//! Instances: their rows and the queries that read them. Reservation,
//! status changes, tokens and reconcile's reads each have a module.

use chrono::{DateTime, Utc};
use hangar_core::{Instance, InstanceName, InstanceStatus, JobId, PoolId, RunnerStatus};

use crate::{DbRow, Result, Store, StoreError, corrupt, now_ms, on, to_dt};

macro_rules! instance_columns {
    () => {
        "name, pool_id, provider_id, status, runner_status, runner_id, job_id, addresses, status_message, create_attempts, os_name, os_version, created_at, updated_at"
    };
}
pub(crate) use instance_columns;

mod reserve;
mod tokens;
mod transition;
mod work;

pub use transition::{Change, CreateWrite, CreateWritten};
pub(crate) use work::{needs_step_from_where, usage_counts, usage_select};

/// `$sql` with a row lock on PostgreSQL (` FOR NO KEY UPDATE`: it
/// serialises the deciders of one row across connections and replicas but,
/// unlike `FOR UPDATE`, does not hold up inserts whose foreign key points at
/// the row); `$sql` as it is on SQLite, whose single writer connection
/// already serialises every read-then-write. Use it inside a
/// [`crate::per_backend!`] block (it reads that block's `Db`).
macro_rules! locking {
    ($sql:expr) => {
        if <Db as sqlx::Database>::NAME == <sqlx::Postgres as sqlx::Database>::NAME {
            concat!($sql, " FOR NO KEY UPDATE")
        } else {
            $sql
        }
    };
}
pub(crate) use locking;

/// The status door, for other modules' transactions on either backend.
pub(crate) mod on_sqlite {
    #[allow(unused_imports)]
    pub(crate) use super::transition::on_sqlite::apply_if_legal;
}
/// The status door, for other modules' transactions on either backend.
pub(crate) mod on_postgres {
    #[allow(unused_imports)]
    pub(crate) use super::transition::on_postgres::apply_if_legal;
}
/// Transitional: `scale_set_queue` still runs on the SQLite writer only.
#[allow(unused_imports)]
pub(crate) use on_sqlite::apply_if_legal;

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
    /// deleted, a failed create to be retried included, runner
    /// pending/installing/idle.
    pub spare: u32,
    /// Of those, runners already idle.
    pub idle: u32,
    pub active: u32,
}

pub(crate) fn usage_from_row(row: &impl DbRow) -> PoolUsage {
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

pub(crate) fn instance_from_row(row: &impl DbRow) -> Result<Instance> {
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
        os_name: row.get("os_name"),
        os_version: row.get("os_version"),
        created_at: to_dt(row.get("created_at")),
        updated_at: to_dt(row.get("updated_at")),
    })
}

fn not_found(name: &InstanceName) -> StoreError {
    StoreError::NotFound(format!("instance {name}"))
}

impl Store {
    pub async fn instance(&self, name: &InstanceName) -> Result<Instance> {
        let sql = concat!(
            "SELECT ",
            instance_columns!(),
            " FROM instances WHERE name = $1"
        );
        on!(self, read, |c| {
            let row = sqlx::query(sql)
                .bind(name.as_str())
                .fetch_optional(c)
                .await?
                .ok_or_else(|| not_found(name))?;
            instance_from_row(&row)
        })
    }

    pub async fn list_instances(&self, f: &InstanceFilter) -> Result<Vec<Instance>> {
        on!(self, read, |c| {
            let mut q = sqlx::QueryBuilder::new(concat!(
                "SELECT ",
                instance_columns!(),
                " FROM instances WHERE 1 = 1"
            ));
            if let Some(p) = f.pool_id {
                q.push(" AND pool_id = ").push_bind(p.to_string());
            }
            if let Some(statuses) = &f.statuses {
                if statuses.is_empty() {
                    // `IN ()` is SQLite's only: no status, no instance.
                    q.push(" AND 1 = 0");
                } else {
                    q.push(" AND status IN (");
                    let mut sep = q.separated(", ");
                    for s in statuses {
                        sep.push_bind(s.as_str());
                    }
                    q.push(")");
                }
            } else if !f.include_deleted {
                q.push(" AND status != 'deleted'");
            }
            q.push(" ORDER BY created_at, name");
            let rows = q.build().fetch_all(c).await?;
            rows.iter().map(instance_from_row).collect()
        })
    }

    /// Marks the instance for a forced delete (`runner rm
    /// --force-remove-runner`): the delete step stops waiting for the
    /// provider after a few failed deletes. Not a status change.
    pub async fn set_force_delete(&self, name: &InstanceName) -> Result<()> {
        let sql = "UPDATE instances SET force_delete = TRUE, updated_at = $1 WHERE name = $2";
        let done = on!(self, write, |c| sqlx::query(sql)
            .bind(now_ms())
            .bind(name.as_str())
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(not_found(name));
        }
        Ok(())
    }

    /// Counts a failed provider delete; returns the failures so far and
    /// whether the delete is forced.
    pub async fn record_delete_failure(&self, name: &InstanceName) -> Result<(u32, bool)> {
        let sql = "UPDATE instances SET delete_attempts = delete_attempts + 1, updated_at = $1
             WHERE name = $2 RETURNING delete_attempts, force_delete";
        let got = on!(self, write, |c| sqlx::query(sql)
            .bind(now_ms())
            .bind(name.as_str())
            .fetch_optional(c)
            .await?
            .map(|row| (row.get::<i64, _>(0) as u32, row.get::<bool, _>(1))));
        got.ok_or_else(|| not_found(name))
    }

    /// Counts a create attempt that failed before the provider was called
    /// (the instance is still `pending_create`; `BeginCreate` counts the
    /// rest), so a pool whose registrations always fail gives up on the
    /// instance after its attempts like any other failed create, and keeps
    /// its reason as the status message, so the operator sees why the
    /// instance waits. Not a status change.
    pub async fn count_failed_create(&self, name: &InstanceName, why: &str) -> Result<()> {
        let sql = "UPDATE instances SET create_attempts = create_attempts + 1, status_message = $1,
             updated_at = $2 WHERE name = $3 AND status = 'pending_create'";
        on!(self, write, |c| sqlx::query(sql)
            .bind(why)
            .bind(now_ms())
            .bind(name.as_str())
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Replaces the status message of a live instance (why it waits, why
    /// its create is paused). Not a status change; an instance already
    /// deleted keeps the message it ended with.
    pub async fn set_status_message(&self, name: &InstanceName, message: &str) -> Result<()> {
        let sql = "UPDATE instances SET status_message = $1, updated_at = $2
             WHERE name = $3 AND status != 'deleted'";
        on!(self, write, |c| sqlx::query(sql)
            .bind(message)
            .bind(now_ms())
            .bind(name.as_str())
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Records the GitHub runner id (registration-token instances learn it
    /// from the runner list).
    pub async fn set_instance_runner_id(&self, name: &InstanceName, runner_id: i64) -> Result<()> {
        let sql = "UPDATE instances SET runner_id = $1, updated_at = $2 WHERE name = $3";
        on!(self, write, |c| sqlx::query(sql)
            .bind(runner_id)
            .bind(now_ms())
            .bind(name.as_str())
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Capacity use of every pool that has instances.
    pub async fn pool_usage(&self) -> Result<Vec<(PoolId, PoolUsage)>> {
        let sql = concat!(
            "SELECT pool_id, ",
            usage_counts!(),
            " FROM instances WHERE status != 'deleted' GROUP BY pool_id"
        );
        on!(self, read, |c| {
            let rows = sqlx::query(sql).fetch_all(c).await?;
            rows.iter()
                .map(|r| {
                    let p: String = r.get("pool_id");
                    Ok((p.parse().map_err(corrupt)?, usage_from_row(r)))
                })
                .collect()
        })
    }

    pub async fn instance_counts(&self) -> Result<InstanceCounts> {
        let sql = "SELECT pool_id, status, runner_status, COUNT(*) FROM instances GROUP BY pool_id, status, runner_status";
        on!(self, read, |c| {
            let rows = sqlx::query(sql).fetch_all(c).await?;
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
        })
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
        let sql = "DELETE FROM instances WHERE status = 'deleted' AND deleted_at < $1";
        Ok(on!(self, write, |c| sqlx::query(sql)
            .bind(before.timestamp_millis())
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?)
    }

    /// The pools of the named instances (unknown names are skipped): whom
    /// to wake when GitHub reports a runner's progress.
    pub async fn pools_of_instances(&self, names: &[&str]) -> Result<Vec<PoolId>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        on!(self, read, |c| {
            let mut q =
                sqlx::QueryBuilder::new("SELECT DISTINCT pool_id FROM instances WHERE name IN (");
            let mut sep = q.separated(", ");
            for n in names {
                sep.push_bind(*n);
            }
            q.push(")");
            let rows = q.build().fetch_all(c).await?;
            rows.iter()
                .map(|r| r.get::<String, _>(0).parse().map_err(corrupt))
                .collect()
        })
    }
}
