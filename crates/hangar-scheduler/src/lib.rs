//! The pool manager: turns recorded jobs into instances and back into
//! nothing.
//!
//! Event-driven on the hot path: intake calls [`Scheduler::job_recorded`]
//! after the job is committed, which wakes the loop at once; there is no
//! ticker between a queued job and the provider call. A level-triggered
//! [`Scheduler::reconcile_pool`] does all the deciding; it is idempotent, is
//! not told why it runs, and never runs twice at once for one pool. A timer
//! also runs every pool and a sweep (orphans, lost instances, job re-checks,
//! history) so nothing depends on an event having arrived.

mod backoff;
pub mod config;
mod lifecycle;
pub mod metrics;
pub mod providers;
mod reconcile;
mod sweep;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hangar_core::provider::RunnerTool;
use hangar_core::{
    EntityId, EntityScope, Forge, ForgeTarget, InstanceName, InstanceStatus, JobId, JobStatus,
    PoolId,
};
use hangar_store::{Store, StoreError};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use backoff::{Gate, delay as backoff_delay};
pub use config::SchedulerConfig;
pub use lifecycle::{RESERVED_EXTRA_SPEC, pool_proxy, provider_extra_specs};
pub use metrics::Metrics;
pub use providers::{ProviderEntry, Providers};
pub use reconcile::PoolReport;
pub use sweep::SweepReport;

/// The label every runner of this controller carries, so cleanup only ever
/// touches Hangar's own runners.
pub fn controller_label(id: hangar_core::ControllerId) -> String {
    format!("hangar-controller-id:{id}")
}

pub fn pool_label(id: PoolId) -> String {
    format!("hangar-pool-id:{id}")
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operation cannot run in the instance's current state (operator asked too early).
    #[error("{0}")]
    Busy(String),
    /// The scheduler is shutting down (a closed semaphore, a stopped writer).
    #[error("the scheduler is shutting down")]
    ShuttingDown,
    #[error("invalid: {0}")]
    Invalid(String),
}

/// The URLs instances and GitHub use to reach Hangar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    pub public_url: String,
    pub webhook_base_url: String,
    pub metadata_url: String,
    pub callback_url: String,
}

impl Urls {
    /// URLs derived from `public_url`, with the operator's overrides.
    pub fn derive(
        public_url: &str,
        webhook: Option<&str>,
        metadata: Option<&str>,
        callback: Option<&str>,
    ) -> Self {
        let base = public_url.trim_end_matches('/');
        Self {
            public_url: base.to_owned(),
            webhook_base_url: webhook
                .map(|s| s.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| format!("{base}/webhooks")),
            metadata_url: metadata
                .map(|s| s.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| format!("{base}/api/v1/metadata")),
            callback_url: callback
                .map(|s| s.to_owned())
                .unwrap_or_else(|| format!("{base}/api/v1/callbacks/status")),
        }
    }
}

/// The current [`Urls`], one copy shared by the scheduler (which renders
/// them into boot scripts) and the server (which shows and changes them).
/// Cheap to clone.
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

/// What intake tells the scheduler after committing a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobNotice {
    pub job_id: JobId,
    pub run_attempt: i64,
    pub status: JobStatus,
    pub pool_id: Option<PoolId>,
    pub runner_name: Option<String>,
}

/// Everything the scheduler is built from.
#[derive(Debug)]
pub struct SchedulerDeps {
    pub store: Store,
    pub forge: Arc<dyn Forge>,
    pub providers: Providers,
    pub config: SchedulerConfig,
    /// Shared with the server, whose `controller update` changes them.
    pub urls: SharedUrls,
    pub metrics: Arc<Metrics>,
}

/// A handle on the scheduler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    forge: Arc<dyn Forge>,
    providers: Providers,
    config: SchedulerConfig,
    urls: SharedUrls,
    metrics: Arc<Metrics>,
    wake: Notify,
    notices: Mutex<Vec<JobNotice>>,
    dirty: Mutex<Dirty>,
    running_pools: Mutex<HashSet<PoolId>>,
    /// Instances with a create or delete task under way.
    in_flight: Mutex<HashSet<InstanceName>>,
    tasks: TaskTracker,
    credential_permits: Mutex<HashMap<String, Arc<Semaphore>>>,
    credential_gates: Mutex<HashMap<String, Arc<Gate>>>,
    targets: Mutex<HashMap<EntityId, Cached<ForgeTarget>>>,
    tools: Mutex<HashMap<EntityId, Cached<Vec<RunnerTool>>>>,
    groups: Mutex<HashMap<(EntityId, Option<String>), i64>>,
}

/// A value fetched at an instant, kept for a while.
type Cached<T> = (tokio::time::Instant, Arc<T>);

#[derive(Debug, Default)]
struct Dirty {
    all: bool,
    pools: HashSet<PoolId>,
}

/// What one [`Scheduler::step`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    pub notices: usize,
    pub pools_reconciled: usize,
}

const TARGET_TTL: Duration = Duration::from_secs(30);
/// The least time between the end of one reconcile of a pool and the start
/// of the next.
const RECONCILE_GAP: Duration = Duration::from_millis(5);
const TOOLS_TTL: Duration = Duration::from_secs(3600);

impl Scheduler {
    pub fn new(deps: SchedulerDeps) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: deps.store,
                forge: deps.forge,
                providers: deps.providers,
                config: deps.config,
                urls: deps.urls,
                metrics: deps.metrics,
                wake: Notify::new(),
                notices: Mutex::default(),
                dirty: Mutex::default(),
                running_pools: Mutex::default(),
                in_flight: Mutex::default(),
                tasks: TaskTracker::new(),
                credential_permits: Mutex::default(),
                credential_gates: Mutex::default(),
                targets: Mutex::default(),
                tools: Mutex::default(),
                groups: Mutex::default(),
            }),
        }
    }

    /// Called by intake once a delivery is committed. Never blocks.
    pub fn job_recorded(&self, notice: JobNotice) {
        self.inner
            .notices
            .lock()
            .expect("notices lock")
            .push(notice);
        self.inner.wake.notify_one();
    }

    pub fn wake_pool(&self, pool: PoolId) {
        self.inner
            .dirty
            .lock()
            .expect("dirty lock")
            .pools
            .insert(pool);
        self.inner.wake.notify_one();
    }

    pub fn wake_all(&self) {
        self.inner.dirty.lock().expect("dirty lock").all = true;
        self.inner.wake.notify_one();
    }

    /// Forgets cached GitHub targets (credentials or entity changed).
    pub fn invalidate_entity(&self, entity: Option<EntityId>) {
        let mut t = self.inner.targets.lock().expect("targets lock");
        match entity {
            Some(e) => {
                t.remove(&e);
            }
            None => t.clear(),
        }
        self.inner.groups.lock().expect("groups lock").clear();
    }

    /// Asks for an instance to be deleted (admin API). Runs in the
    /// background; the instance passes through `pending_delete`.
    pub async fn request_delete(&self, name: &InstanceName) -> Result<(), SchedulerError> {
        let inst = self.inner.store.instance(name).await?;
        match inst.status {
            InstanceStatus::PendingDelete | InstanceStatus::Deleting | InstanceStatus::Deleted => {}
            InstanceStatus::Creating => {
                return Err(SchedulerError::Busy(format!(
                    "instance {name} is being created; delete it once the create has finished"
                )));
            }
            _ => {
                self.inner
                    .store
                    .set_instance_status(
                        name,
                        InstanceStatus::PendingDelete,
                        Some("deleted by an operator"),
                    )
                    .await?;
            }
        }
        self.wake_pool(inst.pool_id);
        Ok(())
    }

    /// The main loop: runs until `cancel`, then waits (bounded) for work in
    /// flight.
    pub async fn run(&self, cancel: CancellationToken) {
        match self.inner.store.recover_interrupted().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                instances = n,
                "recovered instances interrupted by a restart"
            ),
            Err(e) => tracing::error!(error = %e, "restart recovery failed"),
        }
        self.wake_all();
        let mut tick = tokio::time::interval(self.inner.config.reconcile_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sweeping = Arc::new(tokio::sync::Mutex::new(()));
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = self.inner.wake.notified() => {}
                _ = tick.tick() => {
                    self.wake_all();
                    // One sweep at a time; a slow one is skipped, not queued.
                    if let Ok(guard) = sweeping.clone().try_lock_owned() {
                        let this = self.clone();
                        self.inner.tasks.spawn(async move {
                            let _guard = guard;
                            match this.sweep().await {
                                Ok(r) if r.is_empty() => {}
                                Ok(r) => tracing::info!(?r, "sweep"),
                                Err(e) => tracing::warn!(error = %e, "sweep failed"),
                            }
                        });
                    }
                }
            }
            self.step().await;
        }
        self.inner.tasks.close();
        let grace = Duration::from_secs(self.inner.config.shutdown_grace_secs);
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "scheduler work still in flight at shutdown; it resumes after restart"
            );
        }
    }

    /// One pass: handles the notices received so far and starts a reconcile
    /// for every pool that was woken. Returns without waiting for the
    /// reconciles or the provider calls they start.
    pub async fn step(&self) -> StepOutcome {
        let notices = std::mem::take(&mut *self.inner.notices.lock().expect("notices lock"));
        let n_notices = notices.len();
        for n in notices {
            self.handle_notice(n);
        }
        let dirty = std::mem::take(&mut *self.inner.dirty.lock().expect("dirty lock"));
        let pools: Vec<PoolId> = if dirty.all {
            match self.inner.store.list_pools(None).await {
                Ok(p) => p.into_iter().map(|p| p.id).collect(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot list pools");
                    self.inner.dirty.lock().expect("dirty lock").all = true;
                    return StepOutcome::default();
                }
            }
        } else {
            dirty.pools.into_iter().collect()
        };
        let mut started = 0;
        for pool in pools {
            if self.spawn_reconcile(pool) {
                started += 1;
            }
        }
        StepOutcome {
            notices: n_notices,
            pools_reconciled: started,
        }
    }

    /// Starts a reconcile of `pool` unless one is running (or ended less
    /// than [`RECONCILE_GAP`] ago); then it is marked to run again once
    /// that one and the gap are over.
    fn spawn_reconcile(&self, pool: PoolId) -> bool {
        if !self
            .inner
            .running_pools
            .lock()
            .expect("running lock")
            .insert(pool)
        {
            self.inner
                .dirty
                .lock()
                .expect("dirty lock")
                .pools
                .insert(pool);
            return false;
        }
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let started = std::time::Instant::now();
            if let Err(e) = this.reconcile_pool(pool).await {
                tracing::warn!(pool.id = %pool, error = %e, "reconcile failed");
            }
            this.inner
                .metrics
                .reconcile_seconds
                .observe(started.elapsed().as_secs_f64());
            // Wakes during the gap coalesce into one more run after it, so
            // under a stream of webhooks a pool reconciles at most about
            // once per gap instead of once per intake batch; a wake after
            // quiet still runs at once.
            tokio::time::sleep(RECONCILE_GAP).await;
            this.inner
                .running_pools
                .lock()
                .expect("running lock")
                .remove(&pool);
            // Work that arrived meanwhile runs now.
            if this
                .inner
                .dirty
                .lock()
                .expect("dirty lock")
                .pools
                .contains(&pool)
            {
                this.inner.wake.notify_one();
            }
        });
        true
    }

    fn handle_notice(&self, n: JobNotice) {
        if let Some(pool) = n.pool_id {
            self.wake_pool(pool);
        }
        let Some(runner) = n.runner_name.clone() else {
            return;
        };
        if !matches!(n.status, JobStatus::InProgress | JobStatus::Completed) {
            return;
        }
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            if let Err(e) = this.apply_job_progress(&runner, n.job_id, n.status).await {
                tracing::warn!(runner.name = %runner, error = %e, "cannot apply job progress");
            }
        });
    }

    /// A runner of ours took a job (→ active) or finished one (→ delete).
    async fn apply_job_progress(
        &self,
        runner: &str,
        job: JobId,
        status: JobStatus,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let Some(inst) = store.instance_by_runner_name(runner).await? else {
            return Ok(());
        };
        match status {
            JobStatus::InProgress => self.mark_active(&inst.name, job).await?,
            JobStatus::Completed if inst.status == InstanceStatus::PendingDelete => {
                // A delete waiting for the runner to finish may go now.
                store.set_next_attempt(&inst.name, None).await?;
            }
            JobStatus::Completed
                if inst.status.can_transition_to(InstanceStatus::PendingDelete) =>
            {
                self.move_instance(
                    &inst.name,
                    InstanceStatus::PendingDelete,
                    Some("job completed"),
                )
                .await?;
                tracing::info!(instance.name = %inst.name, job.id = %job, "job completed; retiring instance");
            }
            _ => {}
        }
        self.wake_pool(inst.pool_id);
        Ok(())
    }

    /// Moves an instance on, treating "another path already moved it" (an
    /// illegal transition from wherever it is now) as nothing to do: the
    /// scheduler is level-triggered, so the next pass sees the new state.
    pub(crate) async fn move_instance(
        &self,
        name: &InstanceName,
        to: InstanceStatus,
        message: Option<&str>,
    ) -> Result<bool, SchedulerError> {
        match self
            .inner
            .store
            .set_instance_status(name, to, message)
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::Transition(e)) => {
                tracing::debug!(instance.name = %name, error = %e, "instance moved meanwhile");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Marks a runner active (it took `job`), once: whichever path gets
    /// there first (webhook or reconcile catch-up) records the transition
    /// and the queued→runner time.
    pub(crate) async fn mark_active(
        &self,
        name: &InstanceName,
        job: JobId,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        match store
            .set_runner_status(name, hangar_core::RunnerStatus::Active, None)
            .await
        {
            Ok(_) => {}
            // Already active or gone: the other path won.
            Err(StoreError::Transition(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        store.set_instance_job(name, job).await?;
        tracing::info!(instance.name = %name, job.id = %job, "runner took a job");
        if let Ok(Some(queued)) = store.job_queued_at(job).await {
            let secs = (chrono::Utc::now() - queued).num_milliseconds().max(0) as f64 / 1000.0;
            self.inner.metrics.time_to_runner_seconds.observe(secs);
        }
        Ok(())
    }

    /// Waits until no background work is in flight (tests and benchmarks).
    pub async fn settle(&self) {
        loop {
            let busy = !self.inner.running_pools.lock().expect("lock").is_empty()
                || !self.inner.in_flight.lock().expect("lock").is_empty()
                || !self.inner.notices.lock().expect("lock").is_empty();
            if !busy && self.inner.tasks.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The GitHub target of an entity, cached briefly (three queries and
    /// three decryptions otherwise, per instance).
    async fn target(&self, entity: EntityId) -> Result<Arc<ForgeTarget>, SchedulerError> {
        let now = tokio::time::Instant::now();
        if let Some((at, t)) = self
            .inner
            .targets
            .lock()
            .expect("targets lock")
            .get(&entity)
            && now.duration_since(*at) < TARGET_TTL
        {
            return Ok(t.clone());
        }
        let t = Arc::new(self.inner.store.forge_target(entity).await?);
        self.inner
            .targets
            .lock()
            .expect("targets lock")
            .insert(entity, (now, t.clone()));
        Ok(t)
    }

    fn credential_permits(&self, credentials: &str) -> Arc<Semaphore> {
        self.inner
            .credential_permits
            .lock()
            .expect("permits lock")
            .entry(credentials.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.inner.config.github_concurrency)))
            .clone()
    }

    fn credential_gate(&self, credentials: &str) -> Arc<Gate> {
        let c = &self.inner.config;
        self.inner
            .credential_gates
            .lock()
            .expect("gates lock")
            .entry(credentials.to_owned())
            .or_insert_with(|| {
                Arc::new(Gate::new(
                    Duration::from_millis(c.backoff_base_ms),
                    Duration::from_millis(c.backoff_max_ms),
                ))
            })
            .clone()
    }
}

/// The web URL runners register against (`config.sh --url`).
pub fn entity_web_url(base_url: &str, scope: &EntityScope) -> String {
    let base = base_url.trim_end_matches('/');
    match scope {
        EntityScope::Repository { owner, name } => format!("{base}/{owner}/{name}"),
        EntityScope::Organization { name } => format!("{base}/{name}"),
        EntityScope::Enterprise { slug } => format!("{base}/enterprises/{slug}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_derive_from_public_url() {
        let u = Urls::derive("http://127.0.0.1:9997/", None, None, None);
        assert_eq!(u.webhook_base_url, "http://127.0.0.1:9997/webhooks");
        assert_eq!(u.metadata_url, "http://127.0.0.1:9997/api/v1/metadata");
        assert_eq!(
            u.callback_url,
            "http://127.0.0.1:9997/api/v1/callbacks/status"
        );
        let o = Urls::derive(
            "http://a",
            Some("https://hooks.example/"),
            Some("http://10.0.2.2:1/m"),
            None,
        );
        assert_eq!(o.webhook_base_url, "https://hooks.example");
        assert_eq!(o.metadata_url, "http://10.0.2.2:1/m");
    }

    #[test]
    fn web_urls() {
        let s = EntityScope::Repository {
            owner: "o".into(),
            name: "r".into(),
        };
        assert_eq!(
            entity_web_url("https://github.com/", &s),
            "https://github.com/o/r"
        );
        let e = EntityScope::Enterprise { slug: "big".into() };
        assert_eq!(
            entity_web_url("https://ghes.local", &e),
            "https://ghes.local/enterprises/big"
        );
    }
}
