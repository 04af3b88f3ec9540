//! Capacity reservation: new instances are recorded only while the pool has
//! room, in one transaction on the single writer, so concurrent
//! reservations can never exceed `max_runners`.

use hangar_core::{Instance, InstanceName, PoolId};
use sqlx::Row;

use super::{NewInstance, instance_from_row};
use crate::{Result, Store, StoreError, map_constraint, now_ms};

/// The room left in a pool (0 when it is disabled), read inside the
/// reserving transaction.
async fn room(conn: &mut sqlx::SqliteConnection, pool_id: PoolId) -> Result<i64> {
    let pool = sqlx::query("SELECT max_runners, enabled FROM pools WHERE id = $1")
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

impl Store {
    /// Records a new instance in `pending_create` if the pool has room.
    /// Returns `None` when the pool is at `max_runners` or disabled. Runs in
    /// one transaction on the single writer, so concurrent reservations can
    /// never exceed the limit.
    pub async fn reserve_instance(&self, new: &NewInstance) -> Result<Option<Instance>> {
        let mut tx = self.w().begin().await?;
        if room(&mut tx, new.pool_id).await? == 0 {
            return Ok(None);
        }
        let now = now_ms();
        sqlx::query(
            "INSERT INTO instances (name, pool_id, provider_name, status, runner_status, job_id, created_at, updated_at)
             VALUES ($1, $2, $3, 'pending_create', 'pending', $4, $5, $6)",
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
        let mut tx = self.w().begin().await?;
        let room = usize::try_from(room(&mut tx, pool_id).await?)
            .unwrap_or(0)
            .min(names.len());
        if room == 0 {
            return Ok(Vec::new());
        }
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
            sqlx::query(
                "INSERT INTO instances (name, pool_id, provider_name, status, runner_status, job_id, created_at, updated_at)
                 VALUES ($1, $2, $3, 'pending_create', 'pending', $4, $5, $6)",
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
    }
}
