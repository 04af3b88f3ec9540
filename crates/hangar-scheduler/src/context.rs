//! The shared context every part of the scheduler works over: the store,
//! GitHub (through its call wrapper), the providers, settings, metrics, the
//! pool queue and the set of instances with a step under way.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hangar_core::{InstanceName, ProviderError, Urls};
use hangar_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::SchedulerConfig;
use crate::github::GitHub;
use crate::metrics::Metrics;
use crate::providers::{ProviderEntry, Providers};
use crate::queue::PoolQueue;

/// The URLs instances and GitHub use to reach Hangar, shared by the
/// scheduler and the server so an operator's change reaches both.
#[derive(Debug, Clone)]
pub struct SharedUrls(Arc<RwLock<Urls>>);

impl SharedUrls {
    pub fn new(urls: Urls) -> Self {
        Self(Arc::new(RwLock::new(urls)))
    }

    pub fn get(&self) -> Urls {
        self.0.read().expect("urls lock").clone()
    }

    pub fn set(&self, urls: Urls) {
        *self.0.write().expect("urls lock") = urls;
    }
}

#[derive(Debug)]
pub(crate) struct Ctx {
    pub store: Store,
    pub github: GitHub,
    pub providers: Providers,
    pub config: SchedulerConfig,
    pub urls: SharedUrls,
    pub metrics: Arc<Metrics>,
    pub queue: PoolQueue,
    /// The pools this replica may act on (every pool on SQLite).
    pub leases: Arc<crate::lease::Leases>,
    /// Background work: reconciles, creates, deletes, sweeps.
    pub tasks: TaskTracker,
    /// How busy webhook intake is: the scheduler holds back during a burst.
    pub intake: Arc<crate::intake::Pressure>,
    /// Instances with a create or delete step under way.
    in_flight: Mutex<HashSet<InstanceName>>,
    /// When the sweep last asked the Actions service for each scale set
    /// runner (so each is asked at most once per lost-instance grace).
    pub scale_set_runner_checks: Mutex<HashMap<InstanceName, DateTime<Utc>>>,
    /// Commits the create steps' writes in batches.
    pub create_writes: crate::create_writes::CreateWriter,
    /// Wakes the scale set listeners' supervisor (a scale set was created,
    /// changed or deleted).
    pub scale_sets_changed: tokio::sync::Notify,
    /// Cancelled when the run loop stops: pauses between retries end at
    /// once, so shutdown waits only for calls, never for a back-off.
    pub shutdown: CancellationToken,
}

/// Holds an instance's place in the in-flight set; released on drop,
/// however the step ends.
#[derive(Debug)]
pub(crate) struct Claim {
    ctx: Arc<Ctx>,
    name: InstanceName,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.ctx
            .in_flight
            .lock()
            .expect("in_flight lock")
            .remove(&self.name);
    }
}

impl Ctx {
    pub(crate) fn new(
        store: Store,
        github: GitHub,
        providers: Providers,
        config: SchedulerConfig,
        urls: SharedUrls,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let leases = Arc::new(crate::lease::Leases::new(&store, config.lease_ttl()));
        Self {
            leases,
            store,
            github,
            providers,
            config,
            urls,
            metrics,
            queue: PoolQueue::default(),
            tasks: TaskTracker::new(),
            intake: Arc::default(),
            in_flight: Mutex::default(),
            scale_set_runner_checks: Mutex::default(),
            create_writes: Default::default(),
            scale_sets_changed: tokio::sync::Notify::new(),
            shutdown,
        }
    }

    /// Sleeps `d` unless shutdown comes first; whether it slept it all.
    pub(crate) async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }

    /// The time the scheduler decides by: the store's clock, which its
    /// timestamps come from (see [`hangar_store::clock`]).
    pub(crate) fn now(&self) -> DateTime<Utc> {
        hangar_store::clock::now()
    }

    /// Claims `name` for one step; `None` when a step is under way already.
    pub(crate) fn claim(self: &Arc<Self>, name: &InstanceName) -> Option<Claim> {
        let fresh = self
            .in_flight
            .lock()
            .expect("in_flight lock")
            .insert(name.clone());
        fresh.then(|| Claim {
            ctx: self.clone(),
            name: name.clone(),
        })
    }

    pub(crate) fn is_in_flight(&self, name: &InstanceName) -> bool {
        self.in_flight
            .lock()
            .expect("in_flight lock")
            .contains(name)
    }

    pub(crate) fn nothing_in_flight(&self) -> bool {
        self.in_flight.lock().expect("in_flight lock").is_empty()
    }

    /// The exponential backoff (with jitter) before retry number `attempt`.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        crate::backoff::delay(
            attempt.max(1),
            Duration::from_millis(self.config.backoff_base_ms),
            Duration::from_millis(self.config.backoff_max_ms),
        )
    }

    /// Refuses ([`StoreError::Fenced`]) when the task runs under a pool's
    /// fence this replica no longer holds as far as it knows — the lease
    /// lost, let go, or past its local deadline — without asking the
    /// database. Nothing to check outside a fence (SQLite, the admin API).
    pub(crate) fn fence_live(&self) -> Result<(), StoreError> {
        match hangar_store::current_fence() {
            Some(f) if !self.leases.still_holds(&f) => Err(StoreError::Fenced(format!(
                "replica {} no longer holds pool {} under lease token {}",
                f.fence.replica, f.pool_id, f.fence.token
            ))),
            _ => Ok(()),
        }
    }

    /// [`Self::fence_live`], then the database's word: the lease not taken
    /// meanwhile. Called right before a provider or GitHub action that no
    /// fenced write precedes (an orphan's delete, a stray runner's removal,
    /// a scale set job's acquisition, a redelivery), so that a replica
    /// whose lease was taken makes no such call.
    pub(crate) async fn check_fence(&self) -> Result<(), StoreError> {
        self.fence_live()?;
        match hangar_store::current_fence() {
            Some(f) => self.store.check_fence(f.pool_id, &f.fence).await,
            None => Ok(()),
        }
    }

    /// Calls a provider method under the provider's concurrency limit,
    /// records its metrics and tells the provider's gate how it went.
    /// Callers check the gate first (see [`crate::backoff::Gate::remaining`]).
    /// A call made under a fence this replica no longer holds
    /// ([`Self::fence_live`], checked once the call has its permit) is not
    /// made: it fails as transient, counting against neither the gate nor
    /// the metrics, and the write that would follow it is refused.
    pub(crate) async fn provider_call<T>(
        &self,
        entry: &ProviderEntry,
        op: &'static str,
        fut: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let _permit = entry
            .permits
            .acquire()
            .await
            .map_err(|_| ProviderError::Transient("hangard is shutting down".into()))?;
        if let Err(e) = self.fence_live() {
            tracing::warn!(provider = %entry.name, op, error = %e, "provider call not made: the pool's lease is gone");
            return Err(ProviderError::Transient(e.to_string()));
        }
        let started = Instant::now();
        let r = match hangar_store::current_fence() {
            // The provider asks again right before it acts (`may_act`),
            // after any wait of its own: a replica frozen between here and
            // there does not act on a lease it lost meanwhile.
            Some(fence) => {
                let leases = self.leases.clone();
                let guard: hangar_core::provider::ActGuard = Arc::new(move || {
                    if leases.still_holds(&fence) {
                        Ok(())
                    } else {
                        Err(format!(
                            "replica {} no longer holds pool {} under lease token {}",
                            fence.fence.replica, fence.pool_id, fence.fence.token
                        ))
                    }
                });
                hangar_core::provider::act_guarded(guard, fut).await
            }
            None => fut.await,
        };
        if r.is_err() && self.fence_live().is_err() {
            // Refused inside the provider (or failed as the lease went):
            // the provider's health is not in question.
            return r;
        }
        let outcome = match &r {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.metrics
            .provider_op(&entry.name, op, outcome, started.elapsed().as_secs_f64());
        match &r {
            Ok(_) => entry.gate.success(),
            Err(e) if e.is_retryable() => {
                entry.gate.failure();
            }
            Err(_) => {}
        }
        r
    }
}
