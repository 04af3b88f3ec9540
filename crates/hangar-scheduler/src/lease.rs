//! Which pools this replica may act on.
//!
//! On SQLite one `hangard` runs and holds every pool: nothing is stored and
//! nothing is fenced. On PostgreSQL several replicas share the database and
//! each pool's work runs on the one replica holding the pool's lease
//! (`hangar_store` leases): [`Leases::pass`] renews what this replica
//! holds, lets go of pools above its fair share, and takes free ones. A
//! pool counts as held only until a local deadline a margin before the
//! lease this replica last confirmed can lapse (measured from before the
//! renewal was sent), so a replica whose renewals fail or come late stops
//! acting before another may start; its writes carry the lease's token
//! ([`Leases::fence`]) and are refused once the pool has moved on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hangar_core::{PoolId, ReplicaId};
use hangar_store::{Fence, PoolFence, Store};
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Leases {
    me: ReplicaId,
    /// SQLite: this replica holds every pool, always.
    sole: bool,
    ttl: Duration,
    held: Mutex<HashMap<PoolId, Held>>,
    /// The pool whose holder also runs the work that spans pools
    /// (lost-delivery recovery, the sweep's job re-checks and history),
    /// under its fence: the first pool by id.
    first_pool: Mutex<Option<PoolId>>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    token: i64,
    /// Acting on the pool stops here.
    until: Instant,
}

/// What one [`Leases::pass`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeasePass {
    /// Pools taken (their interrupted work is settled, then they run).
    pub gained: Vec<PoolId>,
    /// Pools no longer held (lost, lapsed, or let go to other replicas).
    pub lost: Vec<PoolId>,
    /// Pools renewed under the same token after their local deadline had
    /// passed (a renewal late past it: a stall, a frozen process). Work
    /// cut short meanwhile stopped as if the pool had moved; it is settled
    /// again as for a pool taken.
    pub regained: Vec<PoolId>,
    /// Pools held after the pass.
    pub held: usize,
}

impl Leases {
    pub(crate) fn new(store: &Store, ttl: Duration) -> Self {
        Self {
            me: ReplicaId::new_random(),
            sole: store.backend_name() == "sqlite",
            ttl,
            held: Mutex::default(),
            first_pool: Mutex::default(),
        }
    }

    pub(crate) fn me(&self) -> ReplicaId {
        self.me
    }

    /// Whether leases are kept at all (not on SQLite).
    pub(crate) fn shared(&self) -> bool {
        !self.sole
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<PoolId, Held>> {
        self.held.lock().expect("leases lock")
    }

    /// Whether this replica may act on `pool` now.
    pub(crate) fn holds(&self, pool: PoolId) -> bool {
        self.sole
            || self
                .held()
                .get(&pool)
                .is_some_and(|h| h.until > Instant::now())
    }

    /// The fence `pool`'s work runs under: `None` on SQLite (unfenced);
    /// `Err` when this replica does not hold the pool.
    pub(crate) fn fence(&self, pool: PoolId) -> Result<Option<PoolFence>, NotHeld> {
        if self.sole {
            return Ok(None);
        }
        match self.held().get(&pool) {
            Some(h) if h.until > Instant::now() => Ok(Some(PoolFence {
                pool_id: pool,
                fence: Fence {
                    replica: self.me,
                    token: h.token,
                },
            })),
            _ => Err(NotHeld),
        }
    }

    /// Whether `fence` is still this replica's, as far as it knows without
    /// asking the database: the pool held under the same token (not lost
    /// and taken back since) and its local deadline not passed.
    pub(crate) fn still_holds(&self, fence: &PoolFence) -> bool {
        self.sole
            || (fence.fence.replica == self.me
                && self
                    .held()
                    .get(&fence.pool_id)
                    .is_some_and(|h| h.token == fence.fence.token && h.until > Instant::now()))
    }

    /// The fence the work that spans pools (the sweep's global part,
    /// lost-delivery recovery) runs under: the first pool's (by id), whose
    /// holder leads. `None` on SQLite; `Err` when this replica does not
    /// lead.
    pub(crate) fn lead_fence(&self) -> Result<Option<PoolFence>, NotHeld> {
        if self.sole {
            return Ok(None);
        }
        let first = *self.first_pool.lock().expect("leases lock");
        match first {
            Some(p) => self.fence(p),
            None => Err(NotHeld),
        }
    }

    /// How often [`Self::pass`] runs.
    pub(crate) fn period(&self) -> Duration {
        self.ttl / 3
    }

    fn deadline(&self, sent: Instant) -> Instant {
        sent + self.ttl - self.ttl / 6
    }

    /// Renews, lets go of pools above the fair share, takes free ones.
    pub(crate) async fn pass(&self, store: &Store) -> Result<LeasePass, hangar_store::StoreError> {
        let mut out = LeasePass::default();
        if self.sole {
            return Ok(out);
        }
        let sent = Instant::now();
        let renewal = store.renew_leases(self.me, self.ttl).await?;
        *self.first_pool.lock().expect("leases lock") = renewal.first_pool;
        let mut renewed: HashMap<PoolId, i64> =
            renewal.held.iter().map(|l| (l.pool_id, l.token)).collect();
        {
            let mut held = self.held();
            held.retain(|pool, h| match renewed.get(pool) {
                Some(token) if *token == h.token => true,
                _ => {
                    out.lost.push(*pool);
                    false
                }
            });
            let answered = Instant::now();
            for (pool, h) in held.iter_mut() {
                if renewed.remove(pool).is_some() {
                    if h.until <= answered {
                        out.regained.push(*pool);
                    }
                    h.until = self.deadline(sent);
                }
            }
        }
        // Leases this replica holds in the database but did not know of (a
        // take whose answer was lost): let them go rather than act on
        // pools whose interrupted work was not settled.
        for pool in renewed.into_keys() {
            store.release_lease(self.me, pool).await?;
        }
        // Above the fair share (another replica joined): stop acting on
        // the extra pools first, then let them go.
        let extra: Vec<PoolId> = {
            let mut held = self.held();
            let over = held.len().saturating_sub(renewal.fair_share);
            let mut pools: Vec<PoolId> = held.keys().copied().collect();
            pools.sort();
            let extra: Vec<PoolId> = pools.into_iter().rev().take(over).collect();
            for p in &extra {
                held.remove(p);
            }
            extra
        };
        for pool in extra {
            out.lost.push(pool);
            store.release_lease(self.me, pool).await?;
        }
        let room = renewal.fair_share.saturating_sub(self.held().len());
        let mut sent = Instant::now();
        let mut taken = store.acquire_leases(self.me, self.ttl, room).await?;
        // A take that waited (on a frozen holder's row lock, say) would
        // start with its local deadline spent, and the pool's interrupted
        // work, settled right after, would stop at once as if the pool had
        // moved. Counted again from a renewal instead; a lease lost
        // meanwhile is not taken.
        if !taken.is_empty() && sent.elapsed() >= self.ttl / 6 {
            sent = Instant::now();
            let again = store.renew_leases(self.me, self.ttl).await?;
            taken.retain(|l| {
                again
                    .held
                    .iter()
                    .any(|r| r.pool_id == l.pool_id && r.token == l.token)
            });
        }
        {
            let mut held = self.held();
            for l in taken {
                held.insert(
                    l.pool_id,
                    Held {
                        token: l.token,
                        until: self.deadline(sent),
                    },
                );
                out.gained.push(l.pool_id);
            }
            out.held = held.len();
        }
        Ok(out)
    }

    /// A clean shutdown: every pool lapses now so the others take them at
    /// once.
    pub(crate) async fn retire(&self, store: &Store) {
        if self.sole {
            return;
        }
        self.held().clear();
        if let Err(e) = store.retire_replica(self.me).await {
            tracing::warn!(error = %e, "cannot hand back this replica's pool leases; they lapse on their own");
        }
    }
}

/// This replica does not hold the pool's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotHeld;
