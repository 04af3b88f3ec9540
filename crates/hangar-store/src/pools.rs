//! Pools.

use hangar_core::{EntityId, Labels, Pool, PoolId, PoolSpec, ResourceName, RunnerPrefix};
use sqlx::Row;

use crate::{Result, Store, StoreError, corrupt, map_constraint, now_ms, to_dt};

pub(crate) fn pool_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Pool> {
    let id: String = row.get("id");
    let entity_id: String = row.get("entity_id");
    let tags: Labels = serde_json::from_str(row.get("tags")).map_err(corrupt)?;
    let extra_specs: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(row.get("extra_specs")).map_err(corrupt)?;
    Ok(Pool {
        id: id.parse().map_err(corrupt)?,
        entity_id: entity_id.parse().map_err(corrupt)?,
        spec: PoolSpec {
            provider_name: ResourceName::parse(row.get("provider_name")).map_err(corrupt)?,
            image: row.get("image"),
            flavor: row.get("flavor"),
            tags,
            os_type: row.get::<String, _>("os_type").parse().map_err(corrupt)?,
            os_arch: row.get::<String, _>("os_arch").parse().map_err(corrupt)?,
            min_idle_runners: row.get::<i64, _>("min_idle_runners") as u32,
            max_runners: row.get::<i64, _>("max_runners") as u32,
            runner_prefix: RunnerPrefix::parse(row.get("runner_prefix")).map_err(corrupt)?,
            runner_bootstrap_timeout: row.get::<i64, _>("runner_bootstrap_timeout") as u32,
            extra_specs,
            runner_group: row.get("runner_group"),
            priority: row.get::<i64, _>("priority") as u32,
            enabled: row.get("enabled"),
        },
        created_at: to_dt(row.get("created_at")),
        updated_at: to_dt(row.get("updated_at")),
    })
}

impl Store {
    /// Stores a new pool. The spec must already be validated by core and by
    /// the provider; the database re-checks `max_runners >= min_idle_runners`.
    pub async fn create_pool(&self, entity_id: EntityId, spec: &PoolSpec) -> Result<Pool> {
        spec.validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let id = PoolId::new_random();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO pools (id, entity_id, provider_name, image, flavor, tags, os_type, os_arch,
                min_idle_runners, max_runners, runner_prefix, runner_bootstrap_timeout, extra_specs,
                runner_group, priority, enabled, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(entity_id.to_string())
        .bind(spec.provider_name.as_str())
        .bind(&spec.image)
        .bind(&spec.flavor)
        .bind(serde_json::to_string(&spec.tags).map_err(corrupt)?)
        .bind(spec.os_type.as_str())
        .bind(spec.os_arch.as_str())
        .bind(i64::from(spec.min_idle_runners))
        .bind(i64::from(spec.max_runners))
        .bind(spec.runner_prefix.as_str())
        .bind(i64::from(spec.runner_bootstrap_timeout))
        .bind(serde_json::to_string(&spec.extra_specs).map_err(corrupt)?)
        .bind(&spec.runner_group)
        .bind(i64::from(spec.priority))
        .bind(spec.enabled)
        .bind(now)
        .bind(now)
        .execute(self.w())
        .await
        .map_err(|e| map_constraint(e, "pool already exists", &format!("entity {entity_id} does not exist")))?;
        self.pool(id).await
    }

    pub async fn pool(&self, id: PoolId) -> Result<Pool> {
        let row = sqlx::query("SELECT * FROM pools WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(self.r())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("pool {id}")))?;
        pool_from_row(&row)
    }

    /// All pools, or the pools of one entity.
    pub async fn list_pools(&self, entity_id: Option<EntityId>) -> Result<Vec<Pool>> {
        let rows = match entity_id {
            Some(e) => {
                sqlx::query("SELECT * FROM pools WHERE entity_id = ? ORDER BY created_at, id")
                    .bind(e.to_string())
                    .fetch_all(self.r())
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM pools ORDER BY created_at, id")
                    .fetch_all(self.r())
                    .await?
            }
        };
        rows.iter().map(pool_from_row).collect()
    }

    /// Replaces a pool's spec (the caller merged and validated it).
    pub async fn update_pool(&self, id: PoolId, spec: &PoolSpec) -> Result<Pool> {
        spec.validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE pools SET provider_name = ?, image = ?, flavor = ?, tags = ?, os_type = ?, os_arch = ?,
                min_idle_runners = ?, max_runners = ?, runner_prefix = ?, runner_bootstrap_timeout = ?,
                extra_specs = ?, runner_group = ?, priority = ?, enabled = ?, updated_at = ?
             WHERE id = ?",
        )
        .bind(spec.provider_name.as_str())
        .bind(&spec.image)
        .bind(&spec.flavor)
        .bind(serde_json::to_string(&spec.tags).map_err(corrupt)?)
        .bind(spec.os_type.as_str())
        .bind(spec.os_arch.as_str())
        .bind(i64::from(spec.min_idle_runners))
        .bind(i64::from(spec.max_runners))
        .bind(spec.runner_prefix.as_str())
        .bind(i64::from(spec.runner_bootstrap_timeout))
        .bind(serde_json::to_string(&spec.extra_specs).map_err(corrupt)?)
        .bind(&spec.runner_group)
        .bind(i64::from(spec.priority))
        .bind(spec.enabled)
        .bind(now_ms())
        .bind(id.to_string())
        .execute(self.w())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("pool {id}")));
        }
        self.pool(id).await
    }

    /// Deletes a pool that has no live instances (history rows go with it).
    pub async fn delete_pool(&self, id: PoolId) -> Result<()> {
        let mut tx = self.w().begin().await?;
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM instances WHERE pool_id = ? AND status != 'deleted' ORDER BY name",
        )
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        if !live.is_empty() {
            let shown: Vec<&str> = live.iter().take(5).map(String::as_str).collect();
            return Err(StoreError::Conflict(format!(
                "pool {id} still has {} instance(s) ({}{}); set max_runners to 0 or delete them, and wait until they are gone",
                live.len(),
                shown.join(", "),
                if live.len() > 5 { ", …" } else { "" }
            )));
        }
        let done = sqlx::query("DELETE FROM pools WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("pool {id}")));
        }
        tx.commit().await?;
        Ok(())
    }
}
