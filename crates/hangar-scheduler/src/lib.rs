//! The pool manager: turns recorded jobs into instances and back into
//! nothing.
//!
//! Event-driven on the hot path: the intake writer ([`Intake`]) records a
//! delivery and wakes the pool it names at once; there is no ticker between
//! a queued job and the provider call. Reconcile ([`reconcile`]) is the one
//! decision path: level-triggered, idempotent, never run twice at once for
//! a pool ([`queue`]), and it says when it wants to run again. Creates and
//! deletes are steps ([`create`], [`delete`]) that return an [`Outcome`];
//! [`worker`] is the one place that turns an outcome into a retry time. A
//! timer also runs every pool and the sweep (orphans, lost instances, job
//! re-checks, history) so nothing depends on an event having arrived.

mod backoff;
pub mod config;
mod context;
mod create;
mod create_writes;
mod delete;
mod github;
mod intake;
mod lease;
pub mod metrics;
pub mod providers;
mod queue;
mod reconcile;
mod recover;
mod scaleset;
mod sweep;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use hangar_core::{
    ActionsService, EntityId, Forge, InstanceName, InstanceStatus, JobStatus, PoolId,
};
use hangar_store::{Change, JobEvent, JobOutcome, Store, StoreError};
use tokio_util::sync::CancellationToken;

pub use backoff::{Gate, delay as backoff_delay};
pub use config::{RecoveryConfig, SchedulerConfig};
pub use context::SharedUrls;
pub use delete::{FORCED_DELETE_TRIES, FORCED_GITHUB_TRIES};
pub use hangar_core::Urls;
pub use intake::{Intake, IntakeError};
pub use lease::LeasePass;
pub use metrics::Metrics;
pub use providers::{ProviderEntry, Providers};
pub use queue::RECONCILE_GAP;
pub use reconcile::PoolReport;
pub use recover::RecoveryReport;
pub use scaleset::{ListenStep, ScaleSetListener};
pub use sweep::SweepReport;
pub use worker::Outcome;

use context::Ctx;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operation cannot run in the instance's current state (the
    /// operator asked too early).
    #[error("{0}")]
    Busy(String),
    /// The scheduler is shutting down.
    #[error("the scheduler is shutting down")]
    ShuttingDown,
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Everything the scheduler is built from.
#[derive(Debug)]
pub struct SchedulerDeps {
    pub store: Store,
    pub forge: Arc<dyn Forge>,
    /// GitHub's runner scale set API (the listener and scale-set pools'
    /// runners); `None`: scale sets are not served (their pools' creates
    /// give up, no listener starts).
    pub actions: Option<Arc<dyn ActionsService>>,
    pub providers: Providers,
    pub config: SchedulerConfig,
    pub urls: SharedUrls,
    pub metrics: Arc<Metrics>,
}

/// A handle on the scheduler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Scheduler {
    ctx: Arc<Ctx>,
    /// Lost-delivery recovery's memory between passes.
    recovery: Arc<tokio::sync::Mutex<recover::RecoveryState>>,
}

/// What one [`Scheduler::step`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    /// Runners whose progress woke their pool.
    pub runners: usize,
    pub pools_reconciled: usize,
}

impl Scheduler {
    pub fn new(deps: SchedulerDeps) -> Self {
        let shutdown = CancellationToken::new();
        let github = github::GitHub::new(
            deps.forge,
            deps.actions,
            deps.store.clone(),
            deps.metrics.clone(),
            &deps.config,
            shutdown.clone(),
        );
        let recovery =
            recover::RecoveryState::new(tokio::time::Instant::now(), &deps.config.recovery);
        Self {
            recovery: Arc::new(tokio::sync::Mutex::new(recovery)),
            ctx: Arc::new(Ctx::new(
                deps.store,
                github,
                deps.providers,
                deps.config,
                deps.urls,
                deps.metrics,
                shutdown,
            )),
        }
    }

    /// Called by intake once a delivery is committed: wakes the job's pool
    /// and, when GitHub reports a runner taking or finishing a job, that
    /// runner's pool. Never blocks; decides nothing.
    pub fn job_recorded(&self, event: JobEvent, outcome: JobOutcome) {
        let JobOutcome::Recorded { status, pool_id } = outcome else {
            return;
        };
        if let Some(pool) = pool_id {
            self.ctx.queue.wake(pool);
        }
        if matches!(status, JobStatus::InProgress | JobStatus::Completed)
            && let Some(runner) = event.runner_name
        {
            self.ctx.queue.wake_runner(runner);
        }
    }

    /// Wakes a pool (an operator's change, an instance's callback). Several
    /// replicas: when another replica holds the pool, it is told through
    /// the database (`NOTIFY`), as intake tells it of a delivery; the
    /// change itself is only ever written to the store, and the holder
    /// acts on it.
    pub fn wake_pool(&self, pool: PoolId) {
        self.ctx.queue.wake(pool);
        if self.ctx.leases.shared() && !self.ctx.leases.holds(pool) {
            let store = self.ctx.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.notify_wakes(&[pool]).await {
                    tracing::debug!(pool.id = %pool, error = %e, "cannot wake the pool's holder; its timer will");
                }
            });
        }
    }

    pub fn wake_all(&self) {
        self.ctx.queue.wake_all();
    }

    /// A scale set was created, updated, enabled, disabled or deleted: the
    /// listeners' supervisor looks again now instead of at its next pass.
    pub fn scale_sets_changed(&self) {
        self.ctx.scale_sets_changed.notify_one();
    }

    /// A listener for one scale set, to step by hand (tests, tools); the
    /// run loop runs its own. Two listeners of one scale set compete for
    /// its session like two daemons would.
    pub fn scale_set_listener(&self, scale_set_id: &str) -> ScaleSetListener {
        ScaleSetListener::new(self.ctx.clone(), scale_set_id.to_owned())
    }

    /// Forgets cached GitHub targets (credentials or entity changed).
    pub fn invalidate_entity(&self, entity: Option<EntityId>) {
        self.ctx.github.invalidate(entity);
    }

    /// Asks for an instance to be deleted (admin API). Runs in the
    /// background; the instance passes through `pending_delete`.
    pub async fn request_delete(&self, name: &InstanceName) -> Result<(), SchedulerError> {
        let store = &self.ctx.store;
        let inst = store.instance(name).await?;
        match inst.status {
            InstanceStatus::PendingDelete | InstanceStatus::Deleting | InstanceStatus::Deleted => {}
            InstanceStatus::Creating => {
                return Err(SchedulerError::Busy(format!(
                    "instance {name} is being created; delete it once the create has finished"
                )));
            }
            _ => {
                store
                    .transition(
                        name,
                        Change::Status(
                            InstanceStatus::PendingDelete,
                            Some("deleted by an operator"),
                        ),
                    )
                    .await?;
            }
        }
        self.wake_pool(inst.pool_id);
        Ok(())
    }

    /// [`Self::request_delete`], forced (`runner rm --force-remove-runner`):
    /// after [`FORCED_GITHUB_TRIES`] failed try at GitHub the VM goes
    /// without the runner's removal, and after [`FORCED_DELETE_TRIES`]
    /// failed tries in all the instance is marked deleted anyway.
    pub async fn request_forced_delete(&self, name: &InstanceName) -> Result<(), SchedulerError> {
        self.ctx.store.set_force_delete(name).await?;
        self.request_delete(name).await
    }

    /// The main loop: runs until `cancel`, then waits (bounded) for work in
    /// flight.
    pub async fn run(&self, cancel: CancellationToken) {
        let ctx = &self.ctx;
        // Several replicas: each pool's interrupted work is settled by
        // whichever replica takes its lease ([`Self::lease_pass`]), never
        // here, where another replica may be working on it.
        let leases = ctx.leases.shared().then(|| {
            let (s, cancel) = (self.clone(), cancel.clone());
            tokio::spawn(async move { s.keep_leases(cancel).await })
        });
        if leases.is_none() {
            self.recover_interrupted().await;
        }
        let wakes = leases.as_ref().map(|_| {
            let (s, cancel) = (self.clone(), cancel.clone());
            tokio::spawn(async move { s.hear_wakes(cancel).await })
        });
        self.wake_all();
        // Not one of `ctx.tasks`: it runs for as long as the loop does, and
        // those tasks are what `settle` waits for.
        let recovery = ctx
            .config
            .recovery
            .enabled
            .then(|| tokio::spawn(recover::run(self.clone(), cancel.clone())));
        // Listeners end at `cancel`, each closing its message session.
        let listeners = tokio::spawn(scaleset::supervise(self.clone(), cancel.clone()));
        let mut tick = tokio::time::interval(ctx.config.reconcile_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sweeping = Arc::new(tokio::sync::Mutex::new(()));
        loop {
            let deadline = ctx.queue.next_deadline();
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = ctx.queue.notified() => {}
                () = sleep_until(deadline) => {}
                _ = tick.tick() => {
                    self.wake_all();
                    // One sweep at a time; a slow one is skipped, not
                    // queued. Several replicas: each sweeps the pools it
                    // holds, the one that leads what spans pools.
                    if let Ok(guard) = sweeping.clone().try_lock_owned() {
                        let c = ctx.clone();
                        ctx.tasks.spawn(async move {
                            let _guard = guard;
                            match sweep::sweep(&c).await {
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
        // Listeners first, while GitHub calls still go out: each closes its
        // message session (the service refuses a new one until it does or
        // the session expires). A listener whose call hangs is cut short
        // below with the rest.
        let mut listeners = listeners;
        let listeners_done = tokio::time::timeout(Duration::from_secs(10), &mut listeners)
            .await
            .is_ok();
        // Pauses between retries, and GitHub calls (with their own retries)
        // in flight, end now; provider calls run to their end, within the
        // grace below.
        ctx.shutdown.cancel();
        if let Some(recovery) = recovery {
            // It stops at `cancel`, or after the call in flight.
            let _ = recovery.await;
        }
        if !listeners_done {
            let _ = listeners.await;
        }
        ctx.tasks.close();
        let grace = Duration::from_secs(ctx.config.shutdown_grace_secs);
        if tokio::time::timeout(grace, ctx.tasks.wait()).await.is_err() {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "scheduler work still in flight at shutdown; it resumes after restart"
            );
        }
        // Only now, with no step of this replica left, may another replica
        // take its pools.
        if let Some(wakes) = wakes {
            let _ = wakes.await;
        }
        if let Some(leases) = leases {
            let _ = leases.await;
            ctx.leases.retire(&ctx.store).await;
        }
    }

    /// This replica's id among those sharing the database.
    pub fn replica_id(&self) -> hangar_core::ReplicaId {
        self.ctx.leases.me()
    }

    /// Whether this replica may act on `pool` now (always on SQLite).
    pub fn holds_pool(&self, pool: PoolId) -> bool {
        self.ctx.leases.holds(pool)
    }

    /// Renews this replica's pool leases every third of their time, until
    /// `cancel`.
    async fn keep_leases(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.ctx.leases.period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.lease_pass().await {
                tracing::warn!(error = %e, "cannot renew pool leases; pools stop before their leases lapse");
            }
        }
    }

    /// Wakes the pools this replica holds when another replica's intake
    /// says they have work, until `cancel`.
    async fn hear_wakes(&self, cancel: CancellationToken) {
        let ctx = &self.ctx;
        let mut listener = loop {
            match ctx.store.wake_listener().await {
                Ok(Some(l)) => break l,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for other replicas' wakes; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(ctx.leases.period()) => {}
                    }
                }
            }
        };
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                woken = listener.recv() => match woken {
                    Ok(pool) if ctx.leases.holds(pool) => ctx.queue.wake(pool),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the wake channel; listening again");
                        tokio::time::sleep(ctx.leases.period()).await;
                    }
                },
            }
        }
    }

    /// One lease pass ([`lease::Leases::pass`]): pools taken have their
    /// interrupted work settled (deletes under way go back to be retried,
    /// creates under way are adopted or retried under their names, under
    /// the new token) and are woken; listeners follow the pools held.
    pub async fn lease_pass(&self) -> Result<LeasePass, SchedulerError> {
        let ctx = &self.ctx;
        let pass = ctx.leases.pass(&ctx.store).await?;
        for pool in &pass.lost {
            tracing::info!(pool.id = %pool, "pool lease let go or lost; no longer acting on the pool");
        }
        for &pool in &pass.regained {
            tracing::warn!(pool.id = %pool, "pool lease renewed after its local deadline had passed; settling the work cut short meanwhile");
        }
        for &pool in pass.gained.iter().chain(&pass.regained) {
            if pass.gained.contains(&pool) {
                tracing::info!(pool.id = %pool, "pool lease taken");
            }
            let Ok(fence) = ctx.leases.fence(pool) else {
                continue;
            };
            if let Err(e) = hangar_store::fenced(fence, self.take_over(pool)).await {
                tracing::error!(pool.id = %pool, error = %e, "cannot settle the work a pool's last holder left");
            }
            ctx.queue.wake(pool);
        }
        if !pass.gained.is_empty() || !pass.lost.is_empty() {
            ctx.scale_sets_changed.notify_one();
        }
        Ok(pass)
    }

    /// What [`Self::recover_interrupted`] does at a restart, for one pool
    /// another replica held (its work there stopped mid-way).
    async fn take_over(&self, pool: PoolId) -> Result<(), SchedulerError> {
        let ctx = &self.ctx;
        let deleting = ctx
            .store
            .list_instances(&hangar_store::InstanceFilter {
                pool_id: Some(pool),
                ..Default::default()
            })
            .await?;
        for inst in deleting
            .iter()
            .filter(|i| i.status == InstanceStatus::Deleting)
        {
            if ctx.is_in_flight(&inst.name) {
                continue;
            }
            delete::ignore_moved(
                ctx.store
                    .transition(
                        &inst.name,
                        Change::Status(InstanceStatus::PendingDelete, None),
                    )
                    .await,
            )?;
        }
        for (inst, process) in ctx.store.interrupted_creates().await? {
            if inst.pool_id == pool {
                worker::spawn_recover(ctx, inst, process);
            }
        }
        Ok(())
    }

    /// After a restart: deletes under way go back to be retried, and each
    /// create under way is settled in the background before anything else
    /// touches its instance — its process (if it outlived hangard) is
    /// waited for or stopped, then the instance is adopted if the provider
    /// has it, else retried under its name. [`Self::run`] calls this first.
    pub async fn recover_interrupted(&self) {
        let ctx = &self.ctx;
        match ctx.store.recover_interrupted().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(instances = n, "deletes interrupted by a restart resume"),
            Err(e) => tracing::error!(error = %e, "restart recovery failed"),
        }
        match ctx.store.interrupted_creates().await {
            Ok(list) => {
                if !list.is_empty() {
                    tracing::info!(
                        instances = list.len(),
                        "settling creates interrupted by a restart"
                    );
                }
                for (inst, process) in list {
                    worker::spawn_recover(ctx, inst, process);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot list creates interrupted by a restart"),
        }
    }

    /// One pass: wakes the pools of runners GitHub reported on, and starts
    /// a reconcile of every pool that is woken (or whose timer is due) and
    /// not running. Returns without waiting for the reconciles or the steps
    /// they start.
    pub async fn step(&self) -> StepOutcome {
        let ctx = &self.ctx;
        let runners = ctx.queue.take_runners();
        if !runners.is_empty() {
            let names: Vec<&str> = runners.iter().map(String::as_str).collect();
            match ctx.store.pools_of_instances(&names).await {
                Ok(pools) => pools.into_iter().for_each(|p| ctx.queue.wake(p)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot find the pools of runners");
                    ctx.queue.wake_all();
                }
            }
        }
        if ctx.queue.take_all() {
            match ctx.store.list_pools(None).await {
                Ok(pools) => pools.iter().for_each(|p| ctx.queue.wake(p.id)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot list pools");
                    ctx.queue.restore_all();
                }
            }
            // Scale sets' pools too, whether or not the pool listing
            // shows them.
            match ctx.store.scale_set_pool_ids().await {
                Ok(pools) => pools.into_iter().for_each(|p| ctx.queue.wake(p)),
                Err(e) => tracing::error!(error = %e, "cannot list scale sets' pools"),
            }
        }
        let mut ready = ctx.queue.start_ready(tokio::time::Instant::now());
        // Pools another replica holds are its to run.
        ready.retain(|&pool| {
            let held = ctx.leases.holds(pool);
            if !held {
                ctx.queue.finished(pool);
            }
            held
        });
        for &pool in &ready {
            let c = ctx.clone();
            let Ok(fence) = ctx.leases.fence(pool) else {
                ctx.queue.finished(pool);
                continue;
            };
            ctx.tasks.spawn(hangar_store::fenced(fence, async move {
                let started = std::time::Instant::now();
                match reconcile::reconcile(&c, pool).await {
                    Ok(report) => {
                        if let Some(after) = report.requeue_after {
                            c.queue.wake_at(pool, tokio::time::Instant::now() + after);
                        }
                    }
                    Err(e) => tracing::warn!(pool.id = %pool, error = %e, "reconcile failed"),
                }
                c.metrics
                    .reconcile_seconds
                    .observe(started.elapsed().as_secs_f64());
                // Longer while webhooks are arriving: fewer reserve writes
                // competing with intake's commits.
                tokio::time::sleep(c.intake.reconcile_gap()).await;
                c.queue.finished(pool);
            }));
        }
        StepOutcome {
            runners: runners.len(),
            pools_reconciled: ready.len(),
        }
    }

    /// Reconciles one pool now, outside the loop (tests, tools). Must not
    /// run while the loop runs. Several replicas: under the pool's fence,
    /// and refused ([`StoreError::Fenced`]) on a replica not holding it.
    pub async fn reconcile_pool(&self, pool: PoolId) -> Result<PoolReport, SchedulerError> {
        let Ok(fence) = self.ctx.leases.fence(pool) else {
            return Err(StoreError::Fenced(format!(
                "replica {} does not hold pool {pool}",
                self.ctx.leases.me()
            ))
            .into());
        };
        hangar_store::fenced(fence, reconcile::reconcile(&self.ctx, pool)).await
    }

    /// Runs the sweep now, outside the loop: the pools this replica holds,
    /// each under its fence, and what spans pools when it leads.
    pub async fn sweep(&self) -> Result<SweepReport, SchedulerError> {
        sweep::sweep(&self.ctx).await
    }

    /// Runs both lost-delivery recovery paths now, outside their timer
    /// (tests, tools); what recovery remembers carries over. Several
    /// replicas: only the one that leads recovers (nothing is done on the
    /// others), under the first pool's fence.
    pub async fn recover(&self) -> Result<RecoveryReport, SchedulerError> {
        let Ok(lead) = self.ctx.leases.lead_fence() else {
            return Ok(RecoveryReport::default());
        };
        let mut state = self.recovery.lock().await;
        let now = tokio::time::Instant::now();
        state.due_now(now);
        hangar_store::fenced(lead, recover::step(self, &mut state, now)).await
    }

    /// Waits until no background work is in flight (tests and benchmarks).
    /// Retries waiting for their time do not count.
    pub async fn settle(&self) {
        loop {
            if self.is_settled() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Drives the loop by hand until nothing is woken, reconciling or
    /// stepping, for tests and tools that step the scheduler themselves
    /// (the run loop must not be running). Retries waiting for their time
    /// stay waiting: step tokio's clock to bring them due. Returns how
    /// many reconciles it started.
    pub async fn run_until_idle(&self) -> usize {
        let mut reconciles = 0;
        for _ in 0..10_000 {
            reconciles += self.step().await.pools_reconciled;
            while !(self.ctx.nothing_in_flight() && self.ctx.tasks.is_empty()) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if self.ctx.queue.is_quiet() {
                return reconciles;
            }
        }
        panic!("the scheduler did not come to rest within 10,000 passes");
    }

    /// Nothing woken, reconciling or stepping.
    pub fn is_settled(&self) -> bool {
        self.ctx.queue.is_quiet() && self.ctx.nothing_in_flight() && self.ctx.tasks.is_empty()
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
