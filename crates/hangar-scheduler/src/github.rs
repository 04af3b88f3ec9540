//! Every GitHub call the scheduler makes goes through [`GitHub`]: a bounded
//! number at once per set of credentials, a backoff gate per set of
//! credentials (a failing token slows only itself), metrics per call, and
//! short-lived caches of what is costly to fetch and rarely changes
//! (an entity's target, runner groups, runner downloads).
//!
//! Background work — lost-delivery recovery and job re-checks — has its own
//! small budget per set of credentials ([`Bucket`]) and lower priority: it
//! calls only while the credentials' gate is open and one of their
//! concurrency slots is free, so JIT registrations and runner deletions
//! are never queued behind it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_core::forge::{DeliveryPage, ForgeHook, ForgeJob, HookRef, JitConfig, JitRequest};
use hangar_core::provider::RunnerTool;
use hangar_core::{ActionsService, EntityId, Forge, ForgeError, ForgeTarget, JobId, Pool};
use hangar_store::{Store, StoreError};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Gate;
use crate::config::SchedulerConfig;
use crate::metrics::Metrics;

const TARGET_TTL: Duration = Duration::from_secs(30);
const TOOLS_TTL: Duration = Duration::from_secs(3600);

/// A value fetched at an instant, kept for a while.
type Cached<T> = (Instant, Arc<T>);

#[derive(Debug)]
pub(crate) struct GitHub {
    forge: Arc<dyn Forge>,
    /// The runner scale set API, when hangard serves scale sets.
    actions: Option<Arc<dyn ActionsService>>,
    store: Store,
    metrics: Arc<Metrics>,
    concurrency: usize,
    backoff: (Duration, Duration),
    permits: Mutex<HashMap<String, Arc<Semaphore>>>,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
    targets: Mutex<HashMap<EntityId, Cached<ForgeTarget>>>,
    tools: Mutex<HashMap<EntityId, Cached<Vec<RunnerTool>>>>,
    /// Held while the runner downloads are fetched: the creates of a burst
    /// that find none cached wait for the one fetch instead of each making
    /// their own (each holding a concurrency slot the JIT registrations
    /// need).
    tools_fetch: tokio::sync::Mutex<()>,
    groups: Mutex<HashMap<(EntityId, Option<String>), i64>>,
    background_per_hour: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// The scheduler's shutdown: a call in flight (its retries and their
    /// pauses included) is dropped then, answered as a transient failure.
    shutdown: CancellationToken,
}

/// A token bucket: `per_hour` calls, refilled evenly, up to `burst`.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
    per_sec: f64,
    burst: f64,
}

impl Bucket {
    pub(crate) fn new(per_hour: u32) -> Self {
        let burst = f64::from((per_hour / 10).max(10));
        Self {
            tokens: burst,
            at: Instant::now(),
            per_sec: f64::from(per_hour.max(1)) / 3600.0,
            burst,
        }
    }

    /// Takes one call, or says how long until one is free.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

impl GitHub {
    pub(crate) fn new(
        forge: Arc<dyn Forge>,
        actions: Option<Arc<dyn ActionsService>>,
        store: Store,
        metrics: Arc<Metrics>,
        config: &SchedulerConfig,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            forge,
            actions,
            store,
            metrics,
            concurrency: config.github_concurrency.max(1),
            backoff: (
                Duration::from_millis(config.backoff_base_ms),
                Duration::from_millis(config.backoff_max_ms),
            ),
            permits: Mutex::default(),
            gates: Mutex::default(),
            targets: Mutex::default(),
            tools: Mutex::default(),
            tools_fetch: tokio::sync::Mutex::default(),
            groups: Mutex::default(),
            background_per_hour: config.recovery.budget_per_hour,
            buckets: Mutex::default(),
            shutdown,
        }
    }

    /// The runner scale set API, when hangard serves scale sets.
    pub(crate) fn actions(&self) -> Option<&Arc<dyn ActionsService>> {
        self.actions.as_ref()
    }

    /// The GitHub target of an entity, cached briefly (three queries and
    /// three decryptions otherwise, per instance).
    pub(crate) async fn target(&self, entity: EntityId) -> Result<Arc<ForgeTarget>, StoreError> {
        let now = Instant::now();
        if let Some((at, t)) = self.targets.lock().expect("targets lock").get(&entity)
            && now.duration_since(*at) < TARGET_TTL
        {
            return Ok(t.clone());
        }
        let t = Arc::new(self.store.forge_target(entity).await?);
        self.targets
            .lock()
            .expect("targets lock")
            .insert(entity, (now, t.clone()));
        Ok(t)
    }

    /// Forgets cached targets and runner groups (credentials or an entity
    /// changed); `None` forgets every entity.
    pub(crate) fn invalidate(&self, entity: Option<EntityId>) {
        let mut t = self.targets.lock().expect("targets lock");
        match entity {
            Some(e) => {
                t.remove(&e);
            }
            None => t.clear(),
        }
        self.groups.lock().expect("groups lock").clear();
    }

    fn gate(&self, credentials: &str) -> Arc<Gate> {
        let (base, max) = self.backoff;
        self.gates
            .lock()
            .expect("gates lock")
            .entry(credentials.to_owned())
            .or_insert_with(|| Arc::new(Gate::new(base, max)))
            .clone()
    }

    fn permits(&self, credentials: &str) -> Arc<Semaphore> {
        self.permits
            .lock()
            .expect("permits lock")
            .entry(credentials.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.concurrency)))
            .clone()
    }

    /// Makes one call through the credentials' limit and gate. While the
    /// gate is closed nothing is sent: the answer is
    /// [`ForgeError::RateLimited`] with the time left, and the gate is not
    /// pushed further out by it.
    async fn call<T>(
        &self,
        target: &ForgeTarget,
        op: &'static str,
        fut: impl Future<Output = Result<T, ForgeError>>,
    ) -> Result<T, ForgeError> {
        let cred = target.credentials.name.as_str();
        let gate = self.gate(cred);
        if let Some(left) = gate.remaining() {
            return Err(ForgeError::RateLimited {
                retry_after: left,
                message: format!("credentials {cred:?} are backing off after failures"),
            });
        }
        let permits = self.permits(cred);
        let _permit = permits.acquire().await.expect("semaphore never closed");
        let r = tokio::select! {
            r = fut => r,
            () = self.shutdown.cancelled() => {
                return Err(ForgeError::Transient(format!("{op}: hangard is shutting down")));
            }
        };
        let outcome = match &r {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.metrics.github_call(cred, op, outcome);
        match &r {
            Ok(_) => gate.success(),
            Err(ForgeError::Transient(_)) => {
                gate.failure();
            }
            Err(ForgeError::RateLimited { retry_after, .. }) => gate.close_for(*retry_after),
            Err(_) => {}
        }
        r
    }

    /// Admits one background call (recovery, re-check) for `target`'s
    /// credentials: the gate is open, a concurrency slot is free (JIT and
    /// delete calls come first) and the background budget has a call left.
    /// Otherwise says how long to wait, as [`ForgeError::RateLimited`].
    fn admit_background(&self, target: &ForgeTarget) -> Result<(), ForgeError> {
        let cred = target.credentials.name.as_str();
        if let Some(left) = self.gate(cred).remaining() {
            return Err(ForgeError::RateLimited {
                retry_after: left,
                message: format!("credentials {cred:?} are backing off after failures"),
            });
        }
        if self.permits(cred).available_permits() == 0 {
            return Err(ForgeError::RateLimited {
                retry_after: Duration::from_secs(1),
                message: format!("credentials {cred:?} are busy with runner calls"),
            });
        }
        let mut buckets = self.buckets.lock().expect("buckets lock");
        let bucket = buckets
            .entry(cred.to_owned())
            .or_insert_with(|| Bucket::new(self.background_per_hour));
        bucket
            .take(Instant::now())
            .map_err(|wait| ForgeError::RateLimited {
                retry_after: wait,
                message: format!("credentials {cred:?}: the background call budget is spent"),
            })
    }

    /// One background call: admitted by [`Self::admit_background`], then
    /// made like any other, and counted under recovery's metrics too.
    async fn background<T>(
        &self,
        target: &ForgeTarget,
        op: &'static str,
        fut: impl Future<Output = Result<T, ForgeError>>,
    ) -> Result<T, ForgeError> {
        if let Err(e) = self.admit_background(target) {
            self.metrics.recovery_call(op, "deferred");
            return Err(e);
        }
        let r = self.call(target, op, fut).await;
        self.metrics.recovery_call(
            op,
            match &r {
                Ok(_) => "ok",
                Err(e) => e.kind(),
            },
        );
        r
    }

    pub(crate) async fn recheck_job(
        &self,
        target: &ForgeTarget,
        repository: &str,
        job: JobId,
    ) -> Result<Option<ForgeJob>, ForgeError> {
        self.background(
            target,
            "get_job",
            self.forge.get_job(target, repository, job),
        )
        .await
    }

    pub(crate) async fn list_hooks(
        &self,
        target: &ForgeTarget,
    ) -> Result<Vec<ForgeHook>, ForgeError> {
        self.background(target, "list_hooks", self.forge.list_hooks(target))
            .await
    }

    pub(crate) async fn list_hook_deliveries(
        &self,
        target: &ForgeTarget,
        hook: HookRef,
        cursor: Option<&str>,
        per_page: u32,
    ) -> Result<DeliveryPage, ForgeError> {
        self.background(
            target,
            "list_hook_deliveries",
            self.forge
                .list_hook_deliveries(target, hook, cursor, per_page),
        )
        .await
    }

    pub(crate) async fn redeliver(
        &self,
        target: &ForgeTarget,
        hook: HookRef,
        delivery_id: i64,
    ) -> Result<(), ForgeError> {
        self.background(
            target,
            "redeliver",
            self.forge.redeliver(target, hook, delivery_id),
        )
        .await
    }

    pub(crate) async fn queued_run_ids(
        &self,
        target: &ForgeTarget,
        repository: &str,
        limit: u32,
    ) -> Result<Vec<i64>, ForgeError> {
        self.background(
            target,
            "queued_run_ids",
            self.forge.queued_run_ids(target, repository, limit),
        )
        .await
    }

    pub(crate) async fn run_jobs(
        &self,
        target: &ForgeTarget,
        repository: &str,
        run_id: i64,
    ) -> Result<Vec<ForgeJob>, ForgeError> {
        self.background(
            target,
            "run_jobs",
            self.forge.run_jobs(target, repository, run_id),
        )
        .await
    }

    pub(crate) async fn generate_jit_config(
        &self,
        target: &ForgeTarget,
        req: &JitRequest,
    ) -> Result<JitConfig, ForgeError> {
        self.call(
            target,
            "generate_jit_config",
            self.forge.generate_jit_config(target, req),
        )
        .await
    }

    pub(crate) async fn list_runners(
        &self,
        target: &ForgeTarget,
    ) -> Result<Vec<hangar_core::forge::ForgeRunner>, ForgeError> {
        self.call(target, "list_runners", self.forge.list_runners(target))
            .await
    }

    pub(crate) async fn delete_runner(
        &self,
        target: &ForgeTarget,
        runner_id: i64,
    ) -> Result<(), ForgeError> {
        self.call(
            target,
            "delete_runner",
            self.forge.delete_runner(target, runner_id),
        )
        .await
    }

    /// The runner scale set API, or why there is none.
    fn actions_or_fail(&self) -> Result<&Arc<dyn ActionsService>, ForgeError> {
        self.actions.as_ref().ok_or_else(|| {
            ForgeError::Fatal(
                "hangard has no Actions service client: scale sets are not served".into(),
            )
        })
    }

    /// Registers an ephemeral runner of a scale set (its JIT config).
    pub(crate) async fn scale_set_jit_config(
        &self,
        target: &ForgeTarget,
        scale_set_id: i64,
        runner_name: &str,
    ) -> Result<JitConfig, ForgeError> {
        let actions = self.actions_or_fail()?;
        self.call(
            target,
            "scale_set_jit_config",
            actions.generate_jit_config(target, scale_set_id, runner_name, "_work"),
        )
        .await
    }

    pub(crate) async fn scale_set_runner_by_name(
        &self,
        target: &ForgeTarget,
        name: &str,
    ) -> Result<Option<hangar_core::ScaleSetRunner>, ForgeError> {
        let actions = self.actions_or_fail()?;
        self.call(
            target,
            "scale_set_runner_by_name",
            actions.get_runner_by_name(target, name),
        )
        .await
    }

    pub(crate) async fn scale_set_delete_runner(
        &self,
        target: &ForgeTarget,
        runner_id: i64,
    ) -> Result<(), ForgeError> {
        let actions = self.actions_or_fail()?;
        self.call(
            target,
            "scale_set_delete_runner",
            actions.delete_runner(target, runner_id),
        )
        .await
    }

    /// A listener's call made with the entity's credentials (session,
    /// acquire): through their gate and concurrency limit like any other.
    pub(crate) async fn listener_call<T>(
        &self,
        target: &ForgeTarget,
        op: &'static str,
        fut: impl Future<Output = Result<T, ForgeError>>,
    ) -> Result<T, ForgeError> {
        self.call(target, op, fut).await
    }

    /// A call on a session's message queue (long poll, acknowledgement):
    /// made with the session's own token, so neither the credentials' gate
    /// nor their concurrency slots apply (a long poll would hold a slot for
    /// up to a minute); counted like the rest.
    pub(crate) async fn queue_call<T>(
        &self,
        credentials: &str,
        op: &'static str,
        fut: impl Future<Output = Result<T, ForgeError>>,
    ) -> Result<T, ForgeError> {
        let r = fut.await;
        let outcome = match &r {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.metrics.github_call(credentials, op, outcome);
        r
    }

    /// The id of the pool's runner group, cached per entity and name.
    pub(crate) async fn runner_group(
        &self,
        pool: &Pool,
        target: &ForgeTarget,
    ) -> Result<i64, ForgeError> {
        let key = (pool.entity_id, pool.spec.runner_group.clone());
        if let Some(id) = self.groups.lock().expect("groups lock").get(&key) {
            return Ok(*id);
        }
        let id = self
            .call(
                target,
                "runner_group_id",
                self.forge
                    .runner_group_id(target, pool.spec.runner_group.as_deref()),
            )
            .await?;
        self.groups.lock().expect("groups lock").insert(key, id);
        Ok(id)
    }

    /// GitHub's runner downloads for an entity, cached for an hour. Empty
    /// when GitHub cannot be asked: images with a pre-installed runner do
    /// not need the list.
    pub(crate) async fn runner_tools(
        &self,
        entity: EntityId,
        target: &ForgeTarget,
    ) -> Arc<Vec<RunnerTool>> {
        let cached = || {
            self.tools
                .lock()
                .expect("tools lock")
                .get(&entity)
                .filter(|(at, _)| at.elapsed() < TOOLS_TTL)
                .map(|(_, t)| t.clone())
        };
        if let Some(t) = cached() {
            return t;
        }
        let _fetching = self.tools_fetch.lock().await;
        // Fetched meanwhile by the step this one waited for.
        if let Some(t) = cached() {
            return t;
        }
        let now = Instant::now();
        let tools = match self
            .call(
                target,
                "runner_downloads",
                self.forge.runner_downloads(target),
            )
            .await
        {
            Ok(t) => Arc::new(t),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list runner downloads");
                Arc::new(Vec::new())
            }
        };
        self.tools
            .lock()
            .expect("tools lock")
            .insert(entity, (now, tools.clone()));
        tools
    }
}
