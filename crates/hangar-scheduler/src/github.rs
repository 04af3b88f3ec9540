//! Every GitHub call the scheduler makes goes through [`GitHub`]: a bounded
//! number at once per set of credentials, a backoff gate per set of
//! credentials (a failing token slows only itself), metrics per call, and
//! short-lived caches of what is costly to fetch and rarely changes
//! (an entity's target, runner groups, runner downloads).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_core::forge::{ForgeJob, JitConfig, JitRequest};
use hangar_core::provider::RunnerTool;
use hangar_core::{EntityId, Forge, ForgeError, ForgeTarget, JobId, Pool};
use hangar_store::{Store, StoreError};
use tokio::sync::Semaphore;
use tokio::time::Instant;

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
    store: Store,
    metrics: Arc<Metrics>,
    concurrency: usize,
    backoff: (Duration, Duration),
    permits: Mutex<HashMap<String, Arc<Semaphore>>>,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
    targets: Mutex<HashMap<EntityId, Cached<ForgeTarget>>>,
    tools: Mutex<HashMap<EntityId, Cached<Vec<RunnerTool>>>>,
    groups: Mutex<HashMap<(EntityId, Option<String>), i64>>,
}

impl GitHub {
    pub(crate) fn new(
        forge: Arc<dyn Forge>,
        store: Store,
        metrics: Arc<Metrics>,
        config: &SchedulerConfig,
    ) -> Self {
        Self {
            forge,
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
            groups: Mutex::default(),
        }
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
        let r = fut.await;
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

    pub(crate) async fn get_job(
        &self,
        target: &ForgeTarget,
        repository: &str,
        job: JobId,
    ) -> Result<Option<ForgeJob>, ForgeError> {
        self.call(
            target,
            "get_job",
            self.forge.get_job(target, repository, job),
        )
        .await
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
        let now = Instant::now();
        if let Some((at, t)) = self.tools.lock().expect("tools lock").get(&entity)
            && now.duration_since(*at) < TOOLS_TTL
        {
            return t.clone();
        }
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
