//! Runner scale sets, each with the one pool that carries its runners
//! (migration 0010): both rows are written in one transaction, so a scale
//! set never exists without its pool nor its pool without it.

use std::collections::HashMap;
use std::future::Future;

use hangar_core::{
    EntityId, Instance, InstanceName, Label, Pool, PoolId, PoolSpec, ScaleSet, ScaleSetId,
    ScaleSetSpec, ScaleSetState, ScaleSetStatistics,
};

use crate::instances::Change;
use crate::pools::pool_from_row;
use crate::{
    DbRow, Result, Store, StoreError, corrupt, map_constraint, now_ms, on, per_backend, to_dt,
};

/// What scale sets need from the pools and instances modules, named once
/// for both backends: code in a [`per_backend!`] block calls
/// `<Db as Deps>::insert_pool(…)` and gets that backend's helper. Every
/// call into those modules' per-backend helpers is here.
pub(crate) trait Deps: sqlx::Database {
    /// Whether this is PostgreSQL (row locks with `FOR … UPDATE`).
    const POSTGRES: bool;

    fn insert_pool<'a>(
        conn: &'a mut Self::Connection,
        id: PoolId,
        entity_id: EntityId,
        spec: &'a PoolSpec,
        scale_set: bool,
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    fn update_pool_row<'a>(
        conn: &'a mut Self::Connection,
        id: PoolId,
        spec: &'a PoolSpec,
    ) -> impl Future<Output = Result<bool>> + Send + 'a;

    fn refuse_live_instances<'a>(
        conn: &'a mut Self::Connection,
        id: PoolId,
        what: &'a str,
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    fn apply_if_legal<'a>(
        conn: &'a mut Self::Connection,
        name: &'a InstanceName,
        change: Change<'a>,
        now: i64,
    ) -> impl Future<Output = Result<Option<Instance>>> + Send + 'a;

    /// Marks the `n` oldest runner requests of the pool's scale set that
    /// no create serves yet; when each was first seen (ms), oldest first.
    fn serve_scale_set_jobs<'a>(
        conn: &'a mut Self::Connection,
        pool_id: &'a str,
        n: usize,
        now: i64,
    ) -> impl Future<Output = Result<Vec<i64>>> + Send + 'a;
}

/// Each backend's `Deps`: the same calls into its `per_backend!` modules.
macro_rules! deps {
    ($db:ty, $m:ident, $postgres:expr) => {
        impl Deps for $db {
            const POSTGRES: bool = $postgres;

            fn insert_pool<'a>(
                conn: &'a mut Self::Connection,
                id: PoolId,
                entity_id: EntityId,
                spec: &'a PoolSpec,
                scale_set: bool,
            ) -> impl Future<Output = Result<()>> + Send + 'a {
                crate::pools::$m::insert_pool(conn, id, entity_id, spec, scale_set)
            }

            fn update_pool_row<'a>(
                conn: &'a mut Self::Connection,
                id: PoolId,
                spec: &'a PoolSpec,
            ) -> impl Future<Output = Result<bool>> + Send + 'a {
                crate::pools::$m::update_pool_row(conn, id, spec)
            }

            fn refuse_live_instances<'a>(
                conn: &'a mut Self::Connection,
                id: PoolId,
                what: &'a str,
            ) -> impl Future<Output = Result<()>> + Send + 'a {
                crate::pools::$m::refuse_live_instances(conn, id, what)
            }

            fn apply_if_legal<'a>(
                conn: &'a mut Self::Connection,
                name: &'a InstanceName,
                change: Change<'a>,
                now: i64,
            ) -> impl Future<Output = Result<Option<Instance>>> + Send + 'a {
                crate::instances::$m::apply_if_legal(conn, name, change, now)
            }

            fn serve_scale_set_jobs<'a>(
                conn: &'a mut Self::Connection,
                pool_id: &'a str,
                n: usize,
                now: i64,
            ) -> impl Future<Output = Result<Vec<i64>>> + Send + 'a {
                crate::scale_set_queue::$m::serve_jobs(conn, pool_id, n, now)
            }
        }
    };
}
deps!(sqlx::Sqlite, on_sqlite, false);
deps!(sqlx::Postgres, on_postgres, true);

/// A scale set to store. `github_id` and `runner_group_id` are known when
/// it was made (or found) on GitHub first, as the API does.
#[derive(Debug, Clone)]
pub struct NewScaleSet {
    pub entity_id: EntityId,
    pub spec: ScaleSetSpec,
    pub github_id: Option<i64>,
    pub runner_group_id: Option<i64>,
}

fn scale_set_from_rows(row: &impl DbRow, pool: &Pool) -> Result<ScaleSet> {
    let id: String = row.get("id");
    let entity_id: String = row.get("entity_id");
    let name = Label::parse(row.get("name")).map_err(corrupt)?;
    let mut spec = ScaleSetSpec::from_pool(name, &pool.spec);
    spec.runner_group = row.get("runner_group");
    let statistics: Option<String> = row.get("statistics");
    let statistics = statistics
        .map(|s| serde_json::from_str::<ScaleSetStatistics>(&s))
        .transpose()
        .map_err(corrupt)?;
    Ok(ScaleSet {
        id: id.parse().map_err(corrupt)?,
        entity_id: entity_id.parse().map_err(corrupt)?,
        pool_id: pool.id,
        spec,
        github_id: row.get("github_id"),
        runner_group_id: row.get("runner_group_id"),
        state: row
            .get::<String, _>("state")
            .parse::<ScaleSetState>()
            .map_err(corrupt)?,
        last_error: row.get("last_error"),
        last_message_id: row.get("last_message_id"),
        statistics,
        desired_runners: row.get::<i64, _>("desired_runners").max(0) as u32,
        created_at: to_dt(row.get("created_at")),
        updated_at: to_dt(row.get("updated_at")),
    })
}

fn unique_name(spec: &ScaleSetSpec, entity_id: EntityId) -> String {
    format!(
        "entity {entity_id} already has a scale set named {:?}",
        spec.name.as_str()
    )
}

fn adopted_conflict(github_id: i64, (id, name): (String, String)) -> StoreError {
    StoreError::Conflict(format!(
        "GitHub scale set {github_id} is already driven by scale set {name:?} ({id})"
    ))
}

per_backend! {
/// Names are labels, which GitHub compares case-insensitively: `Lab` and
/// `lab` would be one `runs-on` value, so one entity may not have both.
async fn refuse_taken_name(
    conn: &mut Conn,
    entity_id: EntityId,
    spec: &ScaleSetSpec,
    except: Option<ScaleSetId>,
) -> Result<()> {
    let taken: Option<String> = sqlx::query_scalar(
        "SELECT id FROM scale_sets WHERE entity_id = $1 AND lower(name) = lower($2) AND id != $3",
    )
    .bind(entity_id.to_string())
    .bind(spec.name.as_str())
    .bind(except.map(|e| e.to_string()).unwrap_or_default())
    .fetch_optional(&mut *conn)
    .await?;
    match taken {
        Some(_) => Err(StoreError::Conflict(unique_name(spec, entity_id))),
        None => Ok(()),
    }
}

/// The scale set row (other than `except`) that already drives GitHub's
/// scale set `github_id` as seen by `entity_id`: the same id on the same
/// scope (kind, owner, name) of a GitHub reached at the same API URL —
/// the entity itself, or its twin under another endpoint of that GitHub.
/// Ids are only compared within a scope: the Actions service numbers
/// scale sets per tenant, so another organisation may have the same id.
pub(crate) async fn adopted_by(
    conn: &mut Conn,
    github_id: i64,
    entity_id: EntityId,
    except: Option<ScaleSetId>,
) -> Result<Option<(String, String)>> {
    let row = sqlx::query(
        "SELECT s.id, s.name FROM scale_sets s
           JOIN entities e ON e.id = s.entity_id
           JOIN endpoints p ON p.name = e.endpoint_name
           JOIN entities me ON me.id = $2
           JOIN endpoints mp ON mp.name = me.endpoint_name
          WHERE s.github_id = $1 AND s.id != $3
            AND e.kind = me.kind AND lower(e.owner) = lower(me.owner)
            AND lower(e.name) = lower(me.name)
            AND lower(rtrim(p.api_base_url, '/')) = lower(rtrim(mp.api_base_url, '/'))
          LIMIT 1",
    )
    .bind(github_id)
    .bind(entity_id.to_string())
    .bind(except.map(|e| e.to_string()).unwrap_or_default())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Records the scale set's ids on GitHub, refusing an id another row
/// drives already; `false` when there is no such scale set.
pub(crate) async fn set_github(
    conn: &mut Conn,
    id: ScaleSetId,
    github_id: Option<i64>,
    runner_group_id: Option<i64>,
) -> Result<bool> {
    let lock = if <Db as Deps>::POSTGRES {
        "SELECT entity_id FROM scale_sets WHERE id = $1 FOR NO KEY UPDATE"
    } else {
        "SELECT entity_id FROM scale_sets WHERE id = $1"
    };
    let Some(entity) = sqlx::query_scalar::<_, String>(lock)
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(false);
    };
    if let Some(gid) = github_id
        && let Some(other) =
            adopted_by(conn, gid, entity.parse().map_err(corrupt)?, Some(id)).await?
    {
        return Err(adopted_conflict(gid, other));
    }
    sqlx::query(
        "UPDATE scale_sets SET github_id = $1, runner_group_id = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(github_id)
    .bind(runner_group_id)
    .bind(now_ms())
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// The rows of [`Store::create_scale_set`], in `conn`'s transaction.
pub(crate) async fn create(
    conn: &mut Conn,
    id: ScaleSetId,
    pool_id: PoolId,
    new: &NewScaleSet,
    now: i64,
) -> Result<()> {
    refuse_taken_name(conn, new.entity_id, &new.spec, None).await?;
    if let Some(gid) = new.github_id
        && let Some(other) = adopted_by(conn, gid, new.entity_id, None).await?
    {
        return Err(adopted_conflict(gid, other));
    }
    <Db as Deps>::insert_pool(conn, pool_id, new.entity_id, &new.spec.pool_spec(), true).await?;
    sqlx::query(
        "INSERT INTO scale_sets (id, entity_id, pool_id, name, runner_group, github_id,
            runner_group_id, state, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9)",
    )
    .bind(id.to_string())
    .bind(new.entity_id.to_string())
    .bind(pool_id.to_string())
    .bind(new.spec.name.as_str())
    .bind(&new.spec.runner_group)
    .bind(new.github_id)
    .bind(new.runner_group_id)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        map_constraint(
            e,
            &unique_name(&new.spec, new.entity_id),
            &format!("entity {} does not exist", new.entity_id),
        )
    })?;
    Ok(())
}

/// The writes of [`Store::update_scale_set`], in `conn`'s transaction.
/// On PostgreSQL the scale set's row is locked first, so two updates of
/// one scale set (from two replicas) take turns.
pub(crate) async fn update(conn: &mut Conn, id: ScaleSetId, spec: &ScaleSetSpec) -> Result<()> {
    let sql = if <Db as Deps>::POSTGRES {
        "SELECT pool_id, entity_id FROM scale_sets WHERE id = $1 FOR NO KEY UPDATE"
    } else {
        "SELECT pool_id, entity_id FROM scale_sets WHERE id = $1"
    };
    let row = sqlx::query(sql)
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("scale set {id}")))?;
    let pool_id: PoolId = row.get::<String, _>("pool_id").parse().map_err(corrupt)?;
    let entity_id: EntityId = row.get::<String, _>("entity_id").parse().map_err(corrupt)?;
    refuse_taken_name(conn, entity_id, spec, Some(id)).await?;
    sqlx::query(
        "UPDATE scale_sets SET name = $1, runner_group = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(spec.name.as_str())
    .bind(&spec.runner_group)
    .bind(now_ms())
    .bind(id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(|e| map_constraint(e, &unique_name(spec, entity_id), "scale set's entity"))?;
    if !<Db as Deps>::update_pool_row(conn, pool_id, &spec.pool_spec()).await? {
        return Err(StoreError::Corrupt(format!(
            "scale set {id} has no pool {pool_id}"
        )));
    }
    sqlx::query("DELETE FROM pool_breakers WHERE pool_id = $1")
        .bind(pool_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Refuses (409) while the pool has live instances.
pub(crate) async fn refuse_live(conn: &mut Conn, pool_id: PoolId, what: &str) -> Result<()> {
    <Db as Deps>::refuse_live_instances(conn, pool_id, what).await
}

/// The deletes of [`Store::delete_scale_set`], in `conn`'s transaction.
pub(crate) async fn delete(conn: &mut Conn, id: ScaleSetId) -> Result<()> {
    let pool_id: String = sqlx::query_scalar("SELECT pool_id FROM scale_sets WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("scale set {id}")))?;
    let pool_id: PoolId = pool_id.parse().map_err(corrupt)?;
    if <Db as Deps>::POSTGRES {
        // Deleting the pool deletes its instances (ON DELETE CASCADE): the
        // pool's row is locked before they are counted, so a reservation
        // on another connection either came first and is seen, or waits
        // and finds no pool.
        sqlx::query("SELECT id FROM pools WHERE id = $1 FOR UPDATE")
            .bind(pool_id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    <Db as Deps>::refuse_live_instances(conn, pool_id, &format!("scale set {id}")).await?;
    sqlx::query("DELETE FROM scale_sets WHERE id = $1")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM pools WHERE id = $1")
        .bind(pool_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
}

impl Store {
    /// The scale set (id, name) that already drives GitHub's scale set
    /// `github_id` for `entity_id`'s scope, other than `except`: a second
    /// row adopting it would run a second listener on one queue.
    pub async fn scale_set_adopting(
        &self,
        github_id: i64,
        entity_id: EntityId,
        except: Option<ScaleSetId>,
    ) -> Result<Option<(String, String)>> {
        on!(self, read, m, |c| {
            let mut conn = c.acquire().await?;
            m::adopted_by(&mut conn, github_id, entity_id, except).await
        })
    }

    /// Stores a scale set and its pool (tagged with the scale set's name,
    /// `scale_set = 1`) in one transaction.
    pub async fn create_scale_set(&self, new: &NewScaleSet) -> Result<ScaleSet> {
        new.spec
            .validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let id = ScaleSetId::new_random();
        let pool_id = PoolId::new_random();
        let now = now_ms();
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            m::create(&mut tx, id, pool_id, new, now).await?;
            tx.commit().await?;
        });
        self.scale_set(id).await
    }

    pub async fn scale_set(&self, id: ScaleSetId) -> Result<ScaleSet> {
        let sql = "SELECT * FROM scale_sets WHERE id = $1";
        on!(self, read, |c| {
            let row = sqlx::query(sql)
                .bind(id.to_string())
                .fetch_optional(c)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("scale set {id}")))?;
            let pool_id: String = row.get("pool_id");
            let pool = self.pool(pool_id.parse().map_err(corrupt)?).await?;
            scale_set_from_rows(&row, &pool)
        })
    }

    /// The scale set a pool carries, if it is a scale set's pool.
    pub async fn scale_set_by_pool(&self, pool_id: PoolId) -> Result<Option<ScaleSet>> {
        let sql = "SELECT id FROM scale_sets WHERE pool_id = $1";
        let id: Option<String> = on!(self, read, |c| sqlx::query_scalar(sql)
            .bind(pool_id.to_string())
            .fetch_optional(c)
            .await)?;
        match id {
            Some(id) => Ok(Some(self.scale_set(id.parse().map_err(corrupt)?).await?)),
            None => Ok(None),
        }
    }

    /// The scale set of an entity named `name` (case-insensitively, as
    /// labels compare), if any.
    pub async fn scale_set_by_name(
        &self,
        entity_id: EntityId,
        name: &str,
    ) -> Result<Option<ScaleSet>> {
        Ok(self
            .list_scale_sets(Some(entity_id))
            .await?
            .into_iter()
            .find(|s| s.spec.name.as_str().eq_ignore_ascii_case(name)))
    }

    /// All scale sets, or those of one entity, oldest first.
    pub async fn list_scale_sets(&self, entity_id: Option<EntityId>) -> Result<Vec<ScaleSet>> {
        let entity = entity_id.map(|e| e.to_string());
        on!(self, read, |c| {
            let rows = sqlx::query(
                "SELECT * FROM scale_sets WHERE $1 IS NULL OR entity_id = $1
                 ORDER BY created_at, id",
            )
            .bind(&entity)
            .fetch_all(c)
            .await?;
            let pools = sqlx::query(
                "SELECT * FROM pools WHERE scale_set = TRUE AND ($1 IS NULL OR entity_id = $1)",
            )
            .bind(&entity)
            .fetch_all(c)
            .await?;
            let mut pools: HashMap<PoolId, Pool> = pools
                .iter()
                .map(|r| pool_from_row(r).map(|p| (p.id, p)))
                .collect::<Result<_>>()?;
            rows.iter()
                .filter_map(|row| {
                    let pool_id: String = row.get("pool_id");
                    let pool_id: PoolId = match pool_id.parse() {
                        Ok(p) => p,
                        Err(e) => return Some(Err(corrupt(e))),
                    };
                    // A scale set made between the two reads has no pool in
                    // the second: it shows on the next listing.
                    let pool = pools.remove(&pool_id)?;
                    Some(scale_set_from_rows(row, &pool))
                })
                .collect()
        })
    }

    /// Replaces a scale set's spec (the caller merged and validated it):
    /// its row and its pool's, in one transaction; closes the pool's
    /// breaker as a pool update does.
    pub async fn update_scale_set(&self, id: ScaleSetId, spec: &ScaleSetSpec) -> Result<ScaleSet> {
        spec.validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            m::update(&mut tx, id, spec).await?;
            tx.commit().await?;
        });
        self.scale_set(id).await
    }

    /// Ok when the scale set could be deleted now (no live instances);
    /// the 409 [`Store::delete_scale_set`] would answer otherwise, so the
    /// API can refuse before it deletes anything on GitHub.
    pub async fn scale_set_deletable(&self, id: ScaleSetId) -> Result<()> {
        let s = self.scale_set(id).await?;
        let what = format!("scale set {id}");
        on!(self, read, m, |c| {
            let mut conn = c.acquire().await?;
            m::refuse_live(&mut conn, s.pool_id, &what).await
        })
    }

    /// Deletes a scale set without live instances, then its pool (its
    /// queue's job rows and the pool's history go with them).
    pub async fn delete_scale_set(&self, id: ScaleSetId) -> Result<()> {
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            m::delete(&mut tx, id).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records the scale set's ids on GitHub.
    pub async fn set_scale_set_github(
        &self,
        id: ScaleSetId,
        github_id: Option<i64>,
        runner_group_id: Option<i64>,
    ) -> Result<ScaleSet> {
        let found = on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            let found = m::set_github(&mut tx, id, github_id, runner_group_id).await?;
            tx.commit().await?;
            found
        });
        if !found {
            return Err(StoreError::NotFound(format!("scale set {id}")));
        }
        self.scale_set(id).await
    }

    /// Records how the scale set stands with GitHub, and why when not
    /// active (`None` clears the error).
    pub async fn set_scale_set_state(
        &self,
        id: ScaleSetId,
        state: ScaleSetState,
        last_error: Option<&str>,
    ) -> Result<()> {
        let sql =
            "UPDATE scale_sets SET state = $1, last_error = $2, updated_at = $3 WHERE id = $4";
        let done = on!(self, write, |c| sqlx::query(sql)
            .bind(state.as_str())
            .bind(last_error)
            .bind(now_ms())
            .bind(id.to_string())
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound(format!("scale set {id}")));
        }
        Ok(())
    }
}
