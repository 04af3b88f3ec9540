//! Replicas and pool leases: which `hangard` of a cluster sharing one
//! database runs the scheduler of which pool.
//!
//! Each replica keeps a `replicas` row fresh; each pool has at most one
//! holder (`pool_leases`) until its `expires_at`. A take is one statement
//! (`INSERT … ON CONFLICT … DO UPDATE … WHERE expired`), so two replicas
//! can never both hold a pool: on PostgreSQL the second writer waits for the
//! first's row lock and then finds the row no longer expired. Every take
//! adds one to the pool's `token`; a write made on a pool's behalf carries
//! the token it acted under and [`on_sqlite::check_fence`] /
//! [`on_postgres::check_fence`] refuse it once the pool has moved on. On
//! PostgreSQL the times come from the database's clock, so clock skew
//! between replicas cannot give a pool two holders.

use std::time::Duration;

use hangar_core::{PoolId, ReplicaId};

use crate::{DbRow, Result, Store, StoreError, corrupt, now_ms, on, per_backend};

/// A pool lease this replica holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub pool_id: PoolId,
    /// The fencing token: what this replica's writes for the pool carry.
    pub token: i64,
    /// When it lapses, in the database's milliseconds.
    pub expires_at_ms: i64,
}

/// The proof a fenced write carries: the replica acting and the token of
/// the pool's lease it acts under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub replica: ReplicaId,
    pub token: i64,
}

/// A fence for one pool's work: what [`fenced`] runs a future under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFence {
    pub pool_id: PoolId,
    pub fence: Fence,
}

tokio::task_local! {
    static CURRENT: PoolFence;
}

/// Runs `fut` (a scheduler step of one pool) under `fence`: the writes it
/// makes on the provider's or GitHub's behalf (reservations, status
/// changes, JIT configs) check in their own transaction that the pool's
/// lease is still held under that token, and fail with
/// [`StoreError::Fenced`] when it is not. `None` runs it unfenced (SQLite:
/// one replica holds every pool). Work the future spawns is not covered:
/// the spawner passes [`current_fence`] on.
pub async fn fenced<F: std::future::Future>(fence: Option<PoolFence>, fut: F) -> F::Output {
    match fence {
        Some(f) => CURRENT.scope(f, fut).await,
        None => fut.await,
    }
}

/// The fence the current task runs under, if any.
pub fn current_fence() -> Option<PoolFence> {
    CURRENT.try_with(|f| *f).ok()
}

/// Refuses a fenced write that would touch another pool than the one its
/// fence holds: a task fenced for one pool acts on that pool only, so a
/// lease never covers work on a pool another replica may hold.
pub(crate) fn fence_covers(pool: PoolId) -> Result<()> {
    match current_fence() {
        Some(f) if f.pool_id != pool => Err(StoreError::Fenced(format!(
            "a write fenced by pool {}'s lease touches pool {pool}",
            f.pool_id
        ))),
        _ => Ok(()),
    }
}

/// A connection whose transaction can check a fence.
pub(crate) trait FenceConn {
    /// Refuses unless `fence` (if any) still holds its pool; on PostgreSQL
    /// the lease row stays share-locked until the transaction ends, so a
    /// takeover waits for this write to commit.
    async fn check_pool_fence(&mut self, fence: Option<PoolFence>) -> Result<()>;

    /// [`Self::check_pool_fence`] with the fence the task runs under.
    async fn check_current_fence(&mut self) -> Result<()> {
        self.check_pool_fence(current_fence()).await
    }
}

impl FenceConn for sqlx::SqliteConnection {
    async fn check_pool_fence(&mut self, fence: Option<PoolFence>) -> Result<()> {
        match fence {
            Some(f) => on_sqlite::check_fence(self, f.pool_id, &f.fence).await,
            None => Ok(()),
        }
    }
}

impl FenceConn for sqlx::PgConnection {
    async fn check_pool_fence(&mut self, fence: Option<PoolFence>) -> Result<()> {
        match fence {
            Some(f) => on_postgres::check_fence(self, f.pool_id, &f.fence).await,
            None => Ok(()),
        }
    }
}

/// What a renewal found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// The leases still held, now extended.
    pub held: Vec<Lease>,
    /// Pools at most per replica: ceil(pools / live replicas).
    pub fair_share: usize,
    /// The first pool by id: its holder also runs the work that spans
    /// pools (lost-delivery recovery, the sweep's job re-checks and
    /// history), under that pool's fence.
    pub first_pool: Option<PoolId>,
}

/// A lease as stored (tests and the cluster's status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub holder: Option<ReplicaId>,
    pub token: i64,
    pub expires_at_ms: i64,
}

/// The SQL the two backends write differently.
pub(crate) trait LeaseDialect {
    /// Checks a fence; on PostgreSQL it also share-locks the lease row until
    /// the transaction ends, so a takeover waits for the fenced write.
    const FENCE: &'static str;
}

impl LeaseDialect for sqlx::Sqlite {
    const FENCE: &'static str =
        "SELECT token FROM pool_leases WHERE pool_id = $1 AND holder = $2 AND token = $3";
}

impl LeaseDialect for sqlx::Postgres {
    const FENCE: &'static str =
        "SELECT token FROM pool_leases WHERE pool_id = $1 AND holder = $2 AND token = $3 FOR SHARE";
}

/// The time leases are measured by: the store's clock on SQLite (one
/// process), the database server's on PostgreSQL (shared by every replica).
pub(crate) trait DbClock {
    async fn db_now_ms(&mut self) -> Result<i64>;
}

impl DbClock for sqlx::SqliteConnection {
    async fn db_now_ms(&mut self) -> Result<i64> {
        Ok(now_ms())
    }
}

impl DbClock for sqlx::PgConnection {
    async fn db_now_ms(&mut self) -> Result<i64> {
        let sql = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
        Ok(sqlx::query_scalar(sql).fetch_one(self).await?)
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn lease_of(row: &impl DbRow) -> Result<Lease> {
    let pool: String = row.get(0);
    Ok(Lease {
        pool_id: pool.parse().map_err(corrupt)?,
        token: row.get(1),
        expires_at_ms: row.get(2),
    })
}

per_backend! {
/// Refuses unless `fence` still holds `pool`'s lease. Call it inside the
/// transaction of the write it guards.
pub(crate) async fn check_fence(conn: &mut Conn, pool: PoolId, fence: &Fence) -> Result<()> {
    let held: Option<i64> = sqlx::query_scalar(<Db as LeaseDialect>::FENCE)
        .bind(pool.to_string())
        .bind(fence.replica.to_string())
        .bind(fence.token)
        .fetch_optional(&mut *conn)
        .await?;
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::Fenced(format!(
            "replica {} no longer holds pool {pool} under lease token {}",
            fence.replica, fence.token
        ))),
    }
}

/// The database's time now.
pub(crate) async fn db_now(conn: &mut Conn) -> Result<i64> {
    conn.db_now_ms().await
}
}

impl Store {
    /// Renews this replica's row and every lease it still holds, for `ttl`
    /// from the database's now, and says what its fair share is. A lease
    /// another replica has taken meanwhile is not among `held`.
    pub async fn renew_leases(&self, me: ReplicaId, ttl: Duration) -> Result<Renewal> {
        on!(self, write, m, |c| {
            let mut conn = c.acquire().await?;
            let now = m::db_now(&mut conn).await?;
            let until = now.saturating_add(ms(ttl));
            sqlx::query(
                "INSERT INTO replicas (id, started_at, heartbeat_at, expires_at) \
                 VALUES ($1, $2, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, \
                 expires_at = excluded.expires_at",
            )
            .bind(me.to_string())
            .bind(now)
            .bind(until)
            .execute(&mut *conn)
            .await?;
            let rows = sqlx::query(
                "UPDATE pool_leases SET expires_at = $1 \
                 WHERE holder = $2 AND expires_at > $3 \
                 RETURNING pool_id, token, expires_at",
            )
            .bind(until)
            .bind(me.to_string())
            .bind(now)
            .fetch_all(&mut *conn)
            .await?;
            let held = rows.iter().map(lease_of).collect::<Result<Vec<_>>>()?;
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM pools), \
                 (SELECT COUNT(*) FROM replicas WHERE expires_at > $1), \
                 (SELECT MIN(id) FROM pools)",
            )
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
            let pools: i64 = row.get(0);
            let live: i64 = row.get(1);
            let first: Option<String> = row.get(2);
            let share = fair_share(pools, live);
            Ok(Renewal {
                held,
                fair_share: share,
                first_pool: first.map(|p| p.parse()).transpose().map_err(corrupt)?,
            })
        })
    }

    /// Takes pools' leases that nobody holds (never held, released, or
    /// lapsed): at most `room` of them, plus any that has lapsed for `ttl`
    /// or more (nobody else took it within a whole lease: its pool would
    /// otherwise stay unserved). Returns the leases taken, each with a
    /// token one above the pool's last.
    pub async fn acquire_leases(
        &self,
        me: ReplicaId,
        ttl: Duration,
        room: usize,
    ) -> Result<Vec<Lease>> {
        on!(self, write, m, |c| {
            let mut conn = c.acquire().await?;
            let now = m::db_now(&mut conn).await?;
            let rows = sqlx::query(
                "SELECT p.id, l.holder, l.expires_at FROM pools p \
                 LEFT JOIN pool_leases l ON l.pool_id = p.id \
                 WHERE l.pool_id IS NULL OR l.holder IS NULL OR l.expires_at <= $1",
            )
            .bind(now)
            .fetch_all(&mut *conn)
            .await?;
            let me_text = me.to_string();
            let mut fresh = Vec::new();
            let mut stale = Vec::new();
            for row in &rows {
                let pool: String = row.get(0);
                let holder: Option<String> = row.get(1);
                let expires: Option<i64> = row.get(2);
                let long_lapsed = expires.is_some_and(|e| e <= now - ms(ttl));
                if long_lapsed {
                    stale.push(pool);
                } else if holder.as_deref() != Some(me_text.as_str()) {
                    // A pool this replica let go of is left to the others
                    // for a whole lease.
                    fresh.push(pool);
                }
            }
            // Replicas starting together should not all reach for the same
            // pools first.
            {
                use rand::seq::SliceRandom;
                fresh.shuffle(&mut rand::thread_rng());
            }
            let mut taken = Vec::new();
            let candidates = fresh.into_iter().take(room).chain(stale);
            for pool in candidates {
                let now = m::db_now(&mut conn).await?;
                let row = sqlx::query(
                    "INSERT INTO pool_leases (pool_id, holder, token, expires_at) \
                     VALUES ($1, $2, 1, $3) \
                     ON CONFLICT (pool_id) DO UPDATE SET holder = excluded.holder, \
                     token = pool_leases.token + 1, expires_at = excluded.expires_at \
                     WHERE pool_leases.expires_at <= $4 \
                     RETURNING pool_id, token, expires_at",
                )
                .bind(&pool)
                .bind(&me_text)
                .bind(now.saturating_add(ms(ttl)))
                .bind(now)
                .fetch_optional(&mut *conn)
                .await;
                match row {
                    Ok(Some(row)) => {
                        let lease = lease_of(&row)?;
                        // The take may have waited on the row's lock (a
                        // frozen holder's transaction, until the server's
                        // idle-in-transaction timeout ends it): its lease,
                        // counted from before the wait, may be spent at
                        // birth. Counted again from now, under its token;
                        // gone if another replica took it meanwhile.
                        let after = m::db_now(&mut conn).await?;
                        if lease.expires_at_ms - after >= ms(ttl) / 2 {
                            taken.push(lease);
                            continue;
                        }
                        let renewed: Option<i64> = sqlx::query_scalar(
                            "UPDATE pool_leases SET expires_at = $1 \
                             WHERE pool_id = $2 AND holder = $3 AND token = $4 \
                             RETURNING expires_at",
                        )
                        .bind(after.saturating_add(ms(ttl)))
                        .bind(&pool)
                        .bind(&me_text)
                        .bind(lease.token)
                        .fetch_optional(&mut *conn)
                        .await?;
                        if let Some(expires_at_ms) = renewed {
                            taken.push(Lease {
                                expires_at_ms,
                                ..lease
                            });
                        }
                    }
                    Ok(None) => {}
                    // The pool was deleted meanwhile.
                    Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(taken)
        })
    }

    /// Lets go of a pool's lease (this replica stopped acting on it
    /// first): it lapses now and its holder stays recorded, so this replica
    /// does not take it straight back. Whether it still held it.
    pub async fn release_lease(&self, me: ReplicaId, pool: PoolId) -> Result<bool> {
        on!(self, write, m, |c| {
            let mut conn = c.acquire().await?;
            let now = m::db_now(&mut conn).await?;
            sqlx::query(
                "UPDATE pool_leases SET expires_at = $1 \
                 WHERE pool_id = $2 AND holder = $3 AND expires_at > $1",
            )
            .bind(now)
            .bind(pool.to_string())
            .bind(me.to_string())
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected() > 0)
        })
        .map_err(StoreError::from)
    }

    /// A clean shutdown: every lease of this replica lapses now and its row
    /// goes, so the others take its pools without waiting out a lease.
    pub async fn retire_replica(&self, me: ReplicaId) -> Result<()> {
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            let now = m::db_now(&mut tx).await?;
            sqlx::query(
                "UPDATE pool_leases SET expires_at = $1 WHERE holder = $2 AND expires_at > $1",
            )
            .bind(now)
            .bind(me.to_string())
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM replicas WHERE id = $1")
                .bind(me.to_string())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// A pool's lease as stored.
    pub async fn pool_lease(&self, pool: PoolId) -> Result<Option<LeaseRow>> {
        let row = on!(self, read, |c| {
            let row =
                sqlx::query("SELECT holder, token, expires_at FROM pool_leases WHERE pool_id = $1")
                    .bind(pool.to_string())
                    .fetch_optional(c)
                    .await?;
            row.map(|row| -> Result<LeaseRow> {
                let holder: Option<String> = row.get(0);
                Ok(LeaseRow {
                    holder: holder.map(|h| h.parse()).transpose().map_err(corrupt)?,
                    token: row.get(1),
                    expires_at_ms: row.get(2),
                })
            })
            .transpose()
        })?;
        Ok(row)
    }

    /// The pools `me` is recorded holding, with their tokens, lapsed or
    /// not (a fence holds until another replica takes the pool): what a
    /// pass over many pools (the sweep) checks its fences against in one
    /// query before it acts.
    pub async fn leases_of(&self, me: ReplicaId) -> Result<Vec<(PoolId, i64)>> {
        on!(self, read, |c| {
            let rows = sqlx::query("SELECT pool_id, token FROM pool_leases WHERE holder = $1")
                .bind(me.to_string())
                .fetch_all(c)
                .await?;
            rows.iter()
                .map(|r| {
                    let pool: String = r.get(0);
                    Ok((pool.parse().map_err(corrupt)?, r.get(1)))
                })
                .collect()
        })
    }

    /// Checks a fence on its own (a step about to call a provider or
    /// GitHub); the writes themselves check it again in their transaction.
    pub async fn check_fence(&self, pool: PoolId, fence: &Fence) -> Result<()> {
        on!(self, write, m, |c| {
            let mut tx = c.begin().await?;
            m::check_fence(&mut tx, pool, fence).await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

/// ceil(pools / live replicas); a replica counts itself when no row is live.
pub fn fair_share(pools: i64, live_replicas: i64) -> usize {
    let live = live_replicas.max(1);
    usize::try_from((pools.max(0) + live - 1) / live).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn fair_share_rounds_up_and_survives_no_replicas() {
        assert_eq!(fair_share(0, 2), 0);
        assert_eq!(fair_share(5, 2), 3);
        assert_eq!(fair_share(6, 3), 2);
        assert_eq!(fair_share(7, 0), 7);
    }
}

/// The channel intake's wakes travel on between replicas.
const WAKE_CHANNEL: &str = "hangar_wake";

/// Wakes from other replicas' intake (PostgreSQL `LISTEN hangar_wake`).
#[derive(Debug)]
pub struct WakeListener {
    listener: sqlx::postgres::PgListener,
}

impl WakeListener {
    /// The next pool woken by any replica. A dropped connection is opened
    /// again (wakes sent meanwhile are lost; the scheduler's timer and the
    /// lease passes wake every pool anyway).
    pub async fn recv(&mut self) -> Result<PoolId> {
        loop {
            let n = self.listener.recv().await?;
            match n.payload().parse() {
                Ok(pool) => return Ok(pool),
                Err(_) => tracing::warn!(payload = n.payload(), "ignoring a malformed wake"),
            }
        }
    }
}

impl Store {
    /// Tells every replica listening that these pools have work (after the
    /// deliveries naming them were committed). Nothing on SQLite, where
    /// the one replica wakes its own queue.
    pub async fn notify_wakes(&self, pools: &[PoolId]) -> Result<()> {
        let crate::Backend::Postgres(pg) = &self.inner.backend else {
            return Ok(());
        };
        if pools.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = pools.iter().map(ToString::to_string).collect();
        sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(WAKE_CHANNEL)
            .bind(ids)
            .execute(pg)
            .await?;
        Ok(())
    }

    /// Listens for other replicas' wakes; `None` on SQLite.
    pub async fn wake_listener(&self) -> Result<Option<WakeListener>> {
        let crate::Backend::Postgres(pg) = &self.inner.backend else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pg).await?;
        listener.listen(WAKE_CHANNEL).await?;
        Ok(Some(WakeListener { listener }))
    }
}
