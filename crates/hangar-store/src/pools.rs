//! Pools, and their circuit breakers (failed creates since the last
//! success, and while open the time before which no create starts; the
//! rule is [`hangar_core::policy::Breaker`]).

use chrono::{DateTime, Utc};
use hangar_core::policy::Breaker;
use hangar_core::{EntityId, Labels, Pool, PoolId, PoolSpec, ResourceName, RunnerPrefix};

use crate::instances::locking;
use crate::{
    DbRow, Result, Store, StoreError, corrupt, map_constraint, now_ms, on, per_backend, to_dt,
};

fn breaker_from_row(row: &impl DbRow) -> Breaker {
    Breaker {
        consecutive_failures: row.get::<i64, _>("consecutive_failures") as u32,
        last_error: row.get("last_error"),
        next_attempt_at: row.get::<Option<i64>, _>("next_attempt_at").map(to_dt),
    }
}

per_backend! {
/// A pool's row, in `conn`'s transaction; `scale_set` marks the pool of a
/// scale set (hidden from pool listings and webhook matching).
pub(crate) async fn insert_pool(
    conn: &mut Conn,
    id: PoolId,
    entity_id: EntityId,
    spec: &PoolSpec,
    scale_set: bool,
) -> Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO pools (id, entity_id, provider_name, image, flavor, tags, os_type, os_arch,
            min_idle_runners, max_runners, runner_prefix, runner_bootstrap_timeout, extra_specs,
            runner_group, priority, enabled, created_at, updated_at, scale_set)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
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
    .bind(scale_set)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        map_constraint(
            e,
            "pool already exists",
            &format!("entity {entity_id} does not exist"),
        )
    })?;
    Ok(())
}

/// Rewrites a pool's settings in `conn`'s transaction; `false` when there
/// is no such pool.
pub(crate) async fn update_pool_row(
    conn: &mut Conn,
    id: PoolId,
    spec: &PoolSpec,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE pools SET provider_name = $1, image = $2, flavor = $3, tags = $4, os_type = $5, os_arch = $6,
            min_idle_runners = $7, max_runners = $8, runner_prefix = $9, runner_bootstrap_timeout = $10,
            extra_specs = $11, runner_group = $12, priority = $13, enabled = $14, updated_at = $15
         WHERE id = $16",
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
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Refuses (409) while the pool has instances that are not deleted: a
/// pool, or a scale set, goes only once its machines are gone.
pub(crate) async fn refuse_live_instances(
    conn: &mut Conn,
    id: PoolId,
    what: &str,
) -> Result<()> {
    // The pool's row is held first (until the caller's transaction ends):
    // a reservation holds it while it adds an instance, so none can slip
    // in between this check and the caller's delete.
    hold_pool(conn, id).await?;
    let live: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM instances WHERE pool_id = $1 AND status != 'deleted' ORDER BY name",
    )
    .bind(id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    if live.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = live.iter().take(5).map(String::as_str).collect();
    Err(StoreError::Conflict(format!(
        "{what} still has {} instance(s) ({}{}); set max_runners to 0 or delete them, and wait until they are gone",
        live.len(),
        shown.join(", "),
        if live.len() > 5 { ", …" } else { "" }
    )))
}

/// Forgets the pool's breaker and lets its creates that waited for the
/// breaker start at once (their wait is the only `next_attempt_at` a
/// `pending_create` instance carries besides a provider's or GitHub's
/// back-off, which their own gates still enforce).
pub(super) async fn close_breaker(conn: &mut Conn, id: PoolId) -> Result<()> {
    let gone = sqlx::query("DELETE FROM pool_breakers WHERE pool_id = $1")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    if gone.rows_affected() > 0 {
        sqlx::query(
            "UPDATE instances SET next_attempt_at = NULL
             WHERE pool_id = $1 AND status = 'pending_create' AND next_attempt_at IS NOT NULL",
        )
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Locks the pool's row on PostgreSQL until the caller's transaction
/// ends (nothing on SQLite, whose one writer runs one transaction at a
/// time): the deciders of one pool (breaker, reservations) queue there.
pub(super) async fn hold_pool(conn: &mut Conn, id: PoolId) -> Result<()> {
    sqlx::query(locking!("SELECT id FROM pools WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(())
}
}

/// Transitional: `scale_sets` still runs on the SQLite writer only.
#[allow(unused_imports)]
pub(crate) use on_sqlite::{insert_pool, refuse_live_instances, update_pool_row};

pub(crate) fn pool_from_row(row: &impl DbRow) -> Result<Pool> {
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
        on!(self, write, m, |c| {
            let mut conn = c.acquire().await?;
            m::insert_pool(&mut conn, id, entity_id, spec, false).await?;
        });
        self.pool(id).await
    }

    pub async fn pool(&self, id: PoolId) -> Result<Pool> {
        on!(self, read, |c| {
            let row = sqlx::query("SELECT * FROM pools WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(c)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("pool {id}")))?;
            pool_from_row(&row)
        })
    }

    /// The pools webhooks serve (every pool but scale sets'), or those of
    /// one entity: what `/pools` lists and what a job's labels are matched
    /// against.
    pub async fn list_webhook_pools(&self, entity_id: Option<EntityId>) -> Result<Vec<Pool>> {
        let sql = "SELECT * FROM pools WHERE scale_set = FALSE AND ($1 IS NULL OR entity_id = $1)
             ORDER BY created_at, id";
        on!(self, read, |c| {
            let rows = sqlx::query(sql)
                .bind(entity_id.map(|e| e.to_string()))
                .fetch_all(c)
                .await?;
            rows.iter().map(pool_from_row).collect()
        })
    }

    /// All pools, or the pools of one entity, scale sets' included: what
    /// the engine reconciles and sweeps.
    pub async fn list_pools(&self, entity_id: Option<EntityId>) -> Result<Vec<Pool>> {
        on!(self, read, |c| {
            let rows = match entity_id {
                Some(e) => {
                    sqlx::query("SELECT * FROM pools WHERE entity_id = $1 ORDER BY created_at, id")
                        .bind(e.to_string())
                        .fetch_all(c)
                        .await?
                }
                None => {
                    sqlx::query("SELECT * FROM pools ORDER BY created_at, id")
                        .fetch_all(c)
                        .await?
                }
            };
            rows.iter().map(pool_from_row).collect()
        })
    }

    /// Replaces a pool's spec (the caller merged and validated it) and
    /// closes its breaker.
    pub async fn update_pool(&self, id: PoolId, spec: &PoolSpec) -> Result<Pool> {
        spec.validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            let done = m::update_pool_row(&mut tx, id, spec).await?;
            if !done {
                return Err(StoreError::NotFound(format!("pool {id}")));
            }
            // The operator changed the pool: whatever failed may work now.
            m::close_breaker(&mut tx, id).await?;
            tx.commit().await?;
        });
        self.pool(id).await
    }

    /// The pool's breaker (closed, no failures, when it has no row).
    pub async fn pool_breaker(&self, id: PoolId) -> Result<Breaker> {
        on!(self, read, |c| {
            let row = sqlx::query("SELECT * FROM pool_breakers WHERE pool_id = $1")
                .bind(id.to_string())
                .fetch_optional(c)
                .await?;
            Ok(row.as_ref().map(breaker_from_row).unwrap_or_default())
        })
    }

    /// Every pool with failures since its last successful create.
    pub async fn pool_breakers(&self) -> Result<Vec<(PoolId, Breaker)>> {
        on!(self, read, |c| {
            let rows = sqlx::query("SELECT * FROM pool_breakers")
                .fetch_all(c)
                .await?;
            rows.iter()
                .map(|r| {
                    let p: String = r.get("pool_id");
                    Ok((p.parse().map_err(corrupt)?, breaker_from_row(r)))
                })
                .collect()
        })
    }

    /// Records a failed create: `decide` turns the stored breaker into the
    /// new one (core's rule), read and written in one transaction holding
    /// the pool, so concurrent failures (from any connection or replica)
    /// all count. Returns the new breaker.
    pub async fn record_pool_failure(
        &self,
        id: PoolId,
        decide: impl FnOnce(&Breaker) -> Breaker,
    ) -> Result<Breaker> {
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            m::hold_pool(&mut tx, id).await?;
            let row = sqlx::query("SELECT * FROM pool_breakers WHERE pool_id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            let old = row.as_ref().map(breaker_from_row).unwrap_or_default();
            let new = decide(&old);
            let now = now_ms();
            sqlx::query(
                "INSERT INTO pool_breakers (pool_id, consecutive_failures, last_error, last_failure_at, next_attempt_at, updated_at)
                 SELECT $1, $2, $3, $4, $5, $4 WHERE EXISTS (SELECT 1 FROM pools WHERE id = $1)
                 ON CONFLICT (pool_id) DO UPDATE SET consecutive_failures = excluded.consecutive_failures,
                    last_error = excluded.last_error, last_failure_at = excluded.last_failure_at,
                    next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at",
            )
            .bind(id.to_string())
            .bind(i64::from(new.consecutive_failures))
            .bind(&new.last_error)
            .bind(now)
            .bind(new.next_attempt_at.map(|t| t.timestamp_millis()))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(new)
        })
    }

    /// Claims the one probe of an open breaker whose back-off is over: moves
    /// its next attempt to `lease_until` if it is still due at `now`.
    /// `false` when another create claimed it first (or it closed).
    pub async fn claim_pool_probe(
        &self,
        id: PoolId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        // One conditional UPDATE: on PostgreSQL a second claimer waits for
        // the first one's row lock and then re-checks the condition.
        let sql = "UPDATE pool_breakers SET next_attempt_at = $1, updated_at = $2
             WHERE pool_id = $3 AND next_attempt_at IS NOT NULL AND next_attempt_at <= $4";
        let done = on!(self, write, |c| sqlx::query(sql)
            .bind(lease_until.timestamp_millis())
            .bind(now_ms())
            .bind(id.to_string())
            .bind(now.timestamp_millis())
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// A create of the pool succeeded: the breaker closes, and the pool's
    /// creates that waited for it may start now.
    pub async fn close_pool_breaker(&self, id: PoolId) -> Result<()> {
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            m::close_breaker(&mut tx, id).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes a pool that has no live instances (history rows go with it).
    pub async fn delete_pool(&self, id: PoolId) -> Result<()> {
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            let owner: Option<String> =
                sqlx::query_scalar("SELECT id FROM scale_sets WHERE pool_id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(owner) = owner {
                return Err(StoreError::Conflict(format!(
                    "pool {id} carries scale set {owner}; delete the scale set instead"
                )));
            }
            m::refuse_live_instances(&mut tx, id, &format!("pool {id}")).await?;
            let done = sqlx::query("DELETE FROM pools WHERE id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done == 0 {
                return Err(StoreError::NotFound(format!("pool {id}")));
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
