//! Capacity reservation: new instances are recorded only while the pool has
//! room, deciding and writing in one transaction that holds the pool: on
//! SQLite through the single writer, on PostgreSQL by locking the pool's
//! row, so reservations from any number of connections and replicas never
//! exceed `max_runners` together.

use hangar_core::{Instance, InstanceName, PoolId};

use super::{NewInstance, instance_from_row, locking};
use crate::{DbRow, Result, Store, StoreError, map_constraint, now_ms, on, per_backend};

const INSERT: &str = "INSERT INTO instances (name, pool_id, provider_name, status, runner_status, job_id, created_at, updated_at)
     VALUES ($1, $2, $3, 'pending_create', 'pending', $4, $5, $6)";

per_backend! {
/// The room left in a pool (0 when it is disabled), read inside the
/// reserving transaction. On PostgreSQL it locks the pool's row until that
/// transaction ends: a second reserver waits here, then counts what the
/// first one committed.
pub(super) async fn room(conn: &mut Conn, pool_id: PoolId) -> Result<i64> {
    let pool = sqlx::query(locking!("SELECT max_runners, enabled FROM pools WHERE id = $1"))
        .bind(pool_id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("pool {pool_id}")))?;
    let max: i64 = pool.get(0);
    let enabled: bool = pool.get(1);
    if !enabled {
        return Ok(0);
    }
    let live: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM instances WHERE pool_id = $1 AND status != 'deleted'",
    )
    .bind(pool_id.to_string())
    .fetch_one(&mut *conn)
    .await?;
    Ok((max - live).max(0))
}

/// Records one `pending_create` instance in the caller's transaction.
pub(super) async fn insert(
    conn: &mut Conn,
    name: &InstanceName,
    pool_id: PoolId,
    provider_name: &str,
    job_id: Option<i64>,
    now: i64,
) -> Result<()> {
    sqlx::query(INSERT)
        .bind(name.as_str())
        .bind(pool_id.to_string())
        .bind(provider_name)
        .bind(job_id)
        .bind(now)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(|e| map_constraint(e, &format!("instance {name} already exists"), "pool does not exist"))?;
    Ok(())
}
}

impl Store {
    /// Records a new instance in `pending_create` if the pool has room.
    /// Returns `None` when the pool is at `max_runners` or disabled. Runs in
    /// one transaction holding the pool, so concurrent reservations can
    /// never exceed the limit.
    pub async fn reserve_instance(&self, new: &NewInstance) -> Result<Option<Instance>> {
        on!(self, write, m, |c| {
            crate::leases::fence_covers(new.pool_id)?;
            let mut tx = c.begin().await?;
            crate::leases::FenceConn::check_current_fence(&mut *tx).await?;
            if m::room(&mut tx, new.pool_id).await? == 0 {
                return Ok(None);
            }
            m::insert(
                &mut tx,
                &new.name,
                new.pool_id,
                &new.provider_name,
                new.job_id.map(|j| j.0),
                now_ms(),
            )
            .await?;
            tx.commit().await?;
        });
        self.instance(&new.name).await.map(Some)
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
        if names.is_empty() {
            return Ok(Vec::new());
        }
        on!(self, write, m, |c| {
            crate::leases::fence_covers(pool_id)?;
            let mut tx = c.begin().await?;
            crate::leases::FenceConn::check_current_fence(&mut *tx).await?;
            let room = usize::try_from(m::room(&mut tx, pool_id).await?)
                .unwrap_or(0)
                .min(names.len());
            if room == 0 {
                return Ok(Vec::new());
            }
            // The pool's row is held, so no other reservation hands out
            // these jobs meanwhile.
            let jobs: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM jobs WHERE pool_id = $1 AND status = 'queued' AND status_rank <= 1
                   AND id NOT IN (SELECT job_id FROM instances WHERE job_id IS NOT NULL AND status != 'deleted')
                 ORDER BY queued_at LIMIT CAST($2 AS INTEGER)",
            )
            .bind(pool_id.to_string())
            .bind(room as i64)
            .fetch_all(&mut *tx)
            .await?;
            let now = now_ms();
            for (i, name) in names.iter().take(room).enumerate() {
                m::insert(
                    &mut tx,
                    name,
                    pool_id,
                    provider_name,
                    jobs.get(i).copied(),
                    now,
                )
                .await?;
            }
            let mut q = sqlx::QueryBuilder::new(concat!(
                "SELECT ",
                super::instance_columns!(),
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
        })
    }
}
