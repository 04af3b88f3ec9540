//! What reconcile decides on for one pool, read in one statement.

use chrono::{DateTime, Utc};
use hangar_core::{Pool, PoolId};

use crate::instances::{PoolUsage, needs_step_from_where, usage_from_row, usage_select};
use crate::jobs::PoolDemand;
use crate::pools::pool_from_row;
use crate::{DbRow, Result, Store, on};

/// One pool as reconcile sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolState {
    pub pool: Pool,
    pub usage: PoolUsage,
    /// Queued jobs, each count capped at [`hangar_core::policy::demand_cap`].
    pub demand: PoolDemand,
    /// Whether some instance needs a step (what `instances_needing_work`
    /// lists). When not, reconcile needs nothing beyond this state.
    pub instance_work: bool,
    /// For a scale set's pool, its demand: the engine scales it by this
    /// instead of queued jobs.
    pub scale_set: Option<ScaleSetDemand>,
}

/// What a scale set asks of its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScaleSetDemand {
    /// `min(max_runners, min_idle_runners + assigned jobs)` from the last
    /// message applied; 0 while the scale set is not active.
    pub desired: u32,
    /// Instances that are or will be a runner serving the scale set: not
    /// retired, runner not finished (idle and busy ones alike).
    pub serving: u32,
}

impl Store {
    /// The pool, its usage, its capped queued demand (jobs queued after
    /// `young_after` count as young) and whether any instance needs work
    /// (a runner still bootstrapping counts once the pool's bootstrap
    /// timeout has passed since its creation, at `now`); `None` when the
    /// pool is gone. One round trip:
    /// reconcile runs on every webhook batch, and a pool with nothing to do
    /// costs just this.
    pub async fn pool_state(
        &self,
        pool_id: PoolId,
        young_after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<PoolState>> {
        // The LIMIT is `hangar_core::policy::demand_cap` over the pool's row
        // and its usage (a test holds the two together).
        let sql = concat!(
            "WITH u AS (",
            usage_select!(),
            "), cap AS (SELECT CASE WHEN p.max_runners + p.min_idle_runners + u.spare + u.idle + 1 < 4294967295
                                   THEN p.max_runners + p.min_idle_runners + u.spare + u.idle + 1
                                   ELSE 4294967295 END AS n
                         FROM pools p, u WHERE p.id = $1)
             SELECT p.*, u.*,
               (SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE pool_id = $1 AND status = 'queued' AND status_rank <= 1
                  LIMIT (SELECT n FROM cap)) AS q) AS queued,
               (SELECT COUNT(*) FROM (SELECT 1 FROM jobs
                  WHERE pool_id = $1 AND status = 'queued' AND status_rank <= 1 AND queued_at > $3
                  LIMIT (SELECT n FROM cap)) AS q) AS queued_young,
               EXISTS (SELECT 1 ",
            needs_step_from_where!("$2 - p.runner_bootstrap_timeout * 60000"),
            ") AS instance_work,
               (SELECT CAST(CASE WHEN s.state = 'active' THEN s.desired_runners ELSE 0 END AS BIGINT)
                  FROM scale_sets s WHERE s.pool_id = $1) AS ss_desired,
               CAST(CASE WHEN p.scale_set THEN (SELECT COUNT(*) FROM instances
                  WHERE pool_id = $1 AND status IN ('pending_create', 'creating', 'running', 'error')
                    AND runner_status IN ('pending', 'installing', 'idle', 'active')) ELSE 0 END AS BIGINT) AS ss_serving
             FROM pools p, u WHERE p.id = $1"
        );
        on!(self, read, |c| {
            let row = sqlx::query(sql)
                .bind(pool_id.to_string())
                .bind(now.timestamp_millis())
                .bind(young_after.timestamp_millis())
                .fetch_optional(c)
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            Ok(Some(PoolState {
                pool: pool_from_row(&row)?,
                usage: usage_from_row(&row),
                demand: PoolDemand {
                    queued: row.get::<i64, _>("queued") as u32,
                    queued_young: row.get::<i64, _>("queued_young") as u32,
                },
                instance_work: row.get("instance_work"),
                scale_set: row
                    .get::<Option<i64>, _>("ss_desired")
                    .map(|d| ScaleSetDemand {
                        desired: d.max(0) as u32,
                        serving: row.get::<i64, _>("ss_serving") as u32,
                    }),
            }))
        })
    }
}
