//! What reconcile reads about a pool's instances: which need a step, and
//! the capacity figures. The step rule itself is
//! [`hangar_core::policy::next_step`]; the SQL here only narrows the rows
//! to those the rule can act on (a test holds the two together), so a pool
//! with nothing to do costs one statement.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use hangar_core::policy::InstanceView;
use hangar_core::{Instance, JobId, JobStatus, PoolId};

use super::{PoolUsage, instance_from_row, usage_from_row};
use crate::{DbRow, Result, Store, corrupt, on, to_dt};

/// `FROM … WHERE` of the instances of pool `$1` that
/// [`hangar_core::policy::next_step`] has a step for, joined (as `j`) to the
/// job their runner took; the argument is an SQL expression for the
/// bootstrap cutoff (Unix ms).
macro_rules! needs_step_from_where {
    ($cutoff:literal) => {
        concat!(
            "FROM instances i LEFT JOIN jobs j ON j.runner_name = i.name
             WHERE i.pool_id = $1 AND (
                i.status IN ('pending_create', 'error', 'pending_delete')
                OR (i.status = 'running' AND i.runner_status IN ('failed', 'terminated'))
                OR (i.status = 'running' AND i.runner_status IN ('pending', 'installing')
                    AND i.created_at < ",
            $cutoff,
            ")
                OR (j.status = 'in_progress' AND i.status != 'deleted'
                    AND i.runner_status IN ('pending', 'installing', 'idle'))
                OR (j.status = 'completed' AND i.status IN ('pending_create', 'running', 'error'))
             )"
        )
    };
}
pub(crate) use needs_step_from_where;

/// The [`PoolUsage`] columns (live, spare, idle, active) over live
/// instances: `spare` and `idle` are [`hangar_core::Instance::is_spare`] and
/// [`hangar_core::Instance::is_idle`] in SQL (a store test holds them
/// together).
macro_rules! usage_counts {
    () => {
        "COUNT(*) AS live,
            CAST(COALESCE(SUM(CASE WHEN status IN ('pending_create', 'creating', 'running', 'error')
                      AND runner_status IN ('pending', 'installing', 'idle') THEN 1 ELSE 0 END), 0) AS BIGINT) AS spare,
            CAST(COALESCE(SUM(CASE WHEN status = 'running' AND runner_status = 'idle' THEN 1 ELSE 0 END), 0) AS BIGINT) AS idle,
            CAST(COALESCE(SUM(CASE WHEN runner_status = 'active' THEN 1 ELSE 0 END), 0) AS BIGINT) AS active"
    };
}
pub(crate) use usage_counts;

/// The [`PoolUsage`] counts of the pool `$1`.
macro_rules! usage_select {
    () => {
        concat!(
            "SELECT ",
            crate::instances::usage_counts!(),
            " FROM instances WHERE pool_id = $1 AND status != 'deleted'"
        )
    };
}
pub(crate) use usage_select;

/// Folds [`Store::instances_needing_work`]'s rows (an instance once per
/// job naming its runner) into one view per instance.
fn needing_work_from_rows(rows: &[impl DbRow]) -> Result<Vec<InstanceView>> {
    // A runner takes one job; should two attempts name it, the one
    // furthest along counts.
    let mut out: Vec<InstanceView> = Vec::with_capacity(rows.len());
    let mut rank: HashMap<String, (usize, i64)> = HashMap::new();
    for r in rows {
        let job = match r.get::<Option<i64>, _>("runner_job") {
            Some(id) => Some((
                JobId(id),
                r.get::<String, _>("runner_job_status")
                    .parse::<JobStatus>()
                    .map_err(corrupt)?,
            )),
            None => None,
        };
        let job_rank = r.get::<Option<i64>, _>("runner_job_rank").unwrap_or(-1);
        let name: String = r.get("name");
        if let Some(&(at, seen)) = rank.get(&name) {
            if job_rank > seen {
                out[at].job = job;
                rank.insert(name, (at, job_rank));
            }
            continue;
        }
        let next: Option<i64> = r.get("next_attempt_at");
        rank.insert(name, (out.len(), job_rank));
        out.push(InstanceView {
            instance: instance_from_row(r)?,
            next_attempt: next.map(to_dt),
            job,
        });
    }
    Ok(out)
}

impl Store {
    /// The instances of a pool that need a step now or later (see
    /// [`hangar_core::policy::next_step`]), each with the time its next
    /// attempt is allowed and the job its runner took. A bootstrapping
    /// runner counts once it was created before `bootstrap_cutoff`.
    /// Everything else needs nothing, so reconcile's cost follows the work,
    /// not the pool's size.
    pub async fn instances_needing_work(
        &self,
        pool_id: PoolId,
        bootstrap_cutoff: DateTime<Utc>,
    ) -> Result<Vec<InstanceView>> {
        let sql = concat!(
            "SELECT i.name, i.pool_id, i.provider_id, i.status, i.runner_status, i.runner_id,
                i.job_id, i.addresses, i.status_message, i.create_attempts, i.os_name, i.os_version, i.created_at,
                i.updated_at, i.next_attempt_at, j.id AS runner_job, j.status AS runner_job_status,
                j.status_rank AS runner_job_rank ",
            needs_step_from_where!("$2"),
            " ORDER BY i.created_at, i.name"
        );
        on!(self, read, |c| {
            let rows = sqlx::query(sql)
                .bind(pool_id.to_string())
                .bind(bootstrap_cutoff.timestamp_millis())
                .fetch_all(c)
                .await?;
            needing_work_from_rows(&rows)
        })
    }
    /// Capacity use of one pool.
    pub async fn pool_usage_of(&self, pool_id: PoolId) -> Result<PoolUsage> {
        on!(self, read, |c| {
            let row = sqlx::query(usage_select!())
                .bind(pool_id.to_string())
                .fetch_one(c)
                .await?;
            Ok(usage_from_row(&row))
        })
    }

    /// Up to `limit` running instances of a pool with an idle runner,
    /// oldest first (candidates for scaling down).
    pub async fn idle_instances(&self, pool_id: PoolId, limit: u32) -> Result<Vec<Instance>> {
        let sql = concat!(
            "SELECT ",
            super::instance_columns!(),
            " FROM instances WHERE pool_id = $1 AND status = 'running' AND runner_status = 'idle'
             ORDER BY created_at, name LIMIT CAST($2 AS INTEGER)"
        );
        on!(self, read, |c| {
            let rows = sqlx::query(sql)
                .bind(pool_id.to_string())
                .bind(i64::from(limit))
                .fetch_all(c)
                .await?;
            rows.iter().map(instance_from_row).collect()
        })
    }
}
