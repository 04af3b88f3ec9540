//! The two long-running steps of an instance's life, each a background task
//! with bounded concurrency per provider and per set of credentials:
//! making it (JIT config, provider create) and unmaking it (GitHub runner
//! first, then the provider's VM).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hangar_core::forge::JitRequest;
use hangar_core::provider::{BootstrapParams, CreateInstanceRequest, InstanceRef, ProxySettings};
use hangar_core::userdata::{self, UserdataParams};
use hangar_core::{
    ForgeError, ForgeTarget, Instance, InstanceName, InstanceStatus, Label, Labels, Pool,
    ProviderError, RunnerStatus, Secret,
};
use rand::RngCore;

use crate::providers::ProviderEntry;
use crate::{Scheduler, SchedulerError, controller_label, entity_web_url, pool_label};

/// The extra-specs key Hangar keeps for itself (proxy settings of a pool);
/// providers never see it.
pub const RESERVED_EXTRA_SPEC: &str = "proxy";

/// Pool extra specs as providers see them.
pub fn provider_extra_specs(
    specs: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut s = specs.clone();
    s.remove(RESERVED_EXTRA_SPEC);
    s
}

/// A pool's own proxy settings (`extra_specs.proxy`), if any.
pub fn pool_proxy(specs: &serde_json::Map<String, serde_json::Value>) -> ProxySettings {
    specs
        .get(RESERVED_EXTRA_SPEC)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// Removes an instance name from the in-flight set when the task ends,
/// however it ends.
struct InFlight {
    scheduler: Scheduler,
    name: InstanceName,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.scheduler
            .inner
            .in_flight
            .lock()
            .expect("in_flight lock")
            .remove(&self.name);
    }
}

fn new_token() -> Secret {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    Secret::new(hex::encode(bytes))
}

enum Failure {
    /// Try again after a backoff.
    Retry(String),
    /// Give up on this instance.
    Fatal(String),
}

impl Scheduler {
    fn claim(&self, name: &InstanceName) -> Option<InFlight> {
        let fresh = self
            .inner
            .in_flight
            .lock()
            .expect("in_flight lock")
            .insert(name.clone());
        fresh.then(|| InFlight {
            scheduler: self.clone(),
            name: name.clone(),
        })
    }

    pub(crate) fn spawn_create(&self, inst: Instance, pool: Pool) {
        let Some(guard) = self.claim(&inst.name) else {
            return;
        };
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let _guard = guard;
            let name = inst.name.clone();
            if let Err(e) = this.run_create(inst, &pool).await {
                tracing::error!(instance.name = %name, error = %e, "create task failed");
            }
            this.wake_pool(pool.id);
        });
    }

    pub(crate) fn spawn_delete(&self, name: InstanceName, pool: Pool) {
        let Some(guard) = self.claim(&name) else {
            return;
        };
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let _guard = guard;
            if let Err(e) = this.run_delete(&name, &pool).await {
                tracing::error!(instance.name = %name, error = %e, "delete task failed");
            }
            this.wake_pool(pool.id);
        });
    }

    /// Schedules a wake-up of the pool when a backoff ends.
    fn wake_later(&self, pool: hangar_core::PoolId, after: Duration) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            tokio::time::sleep(after).await;
            this.wake_pool(pool);
        });
    }

    fn backoff_for(&self, attempts: u32) -> Duration {
        let c = &self.inner.config;
        crate::backoff::delay(
            attempts.max(1),
            Duration::from_millis(c.backoff_base_ms),
            Duration::from_millis(c.backoff_max_ms),
        )
    }

    #[tracing::instrument(skip_all, fields(instance.name = %inst.name, pool.id = %pool.id))]
    async fn run_create(&self, inst: Instance, pool: &Pool) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let Some(entry) = self
            .inner
            .providers
            .get(pool.spec.provider_name.as_str())
            .cloned()
        else {
            return self
                .create_failed(
                    &inst,
                    pool,
                    Failure::Fatal(format!(
                        "provider {:?} is not configured in hangard",
                        pool.spec.provider_name.as_str()
                    )),
                )
                .await;
        };
        let target = match self.target(pool.entity_id).await {
            Ok(t) => t,
            Err(e) => {
                return self
                    .create_failed(&inst, pool, Failure::Retry(e.to_string()))
                    .await;
            }
        };

        // 1. Register the runner on GitHub (once per instance).
        let jit = entry.provider.jit_enabled();
        if jit
            && inst.runner_id.is_none()
            && let Err(f) = self.register_runner(&inst, pool, &target).await
        {
            return self.create_failed(&inst, pool, f).await;
        }

        // 2. Wait for the provider's turn.
        entry.gate.wait().await;
        let _permit = entry
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SchedulerError::ShuttingDown)?;

        let iref = InstanceRef {
            name: inst.name.clone(),
            provider_id: inst.provider_id.clone(),
            controller_id: store.controller_id(),
            pool_id: pool.id,
        };
        if inst.create_attempts > 0 {
            // A retry: remove what the failed attempt may have left.
            if let Err(e) = self
                .provider_call(&entry, "delete", entry.provider.delete_instance(&iref))
                .await
            {
                return self
                    .create_failed(
                        &inst,
                        pool,
                        Failure::Retry(format!("cleanup before retry: {e}")),
                    )
                    .await;
            }
        }

        // 3. Fresh token, then `creating`.
        let token = new_token();
        let inst = match store
            .begin_create(&inst.name, &hangar_store::hash_token(token.expose()))
            .await
        {
            Ok(i) => i,
            Err(hangar_store::StoreError::Transition(e)) => {
                tracing::info!(error = %e, "instance changed meanwhile; not creating");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };

        let req = match self
            .create_request(&inst, pool, &target, &entry, token, jit)
            .await
        {
            Ok(r) => r,
            Err(f) => return self.create_failed(&inst, pool, f).await,
        };
        if let Some(job) = inst.job_id
            && let Ok(Some(queued)) = store.job_queued_at(job).await
        {
            let secs = (Utc::now() - queued).num_milliseconds().max(0) as f64 / 1000.0;
            self.inner.metrics.time_to_create_seconds.observe(secs);
        }
        tracing::info!(provider = %entry.name, image = %pool.spec.image, flavor = %pool.spec.flavor, "creating instance");
        let timeout = entry.provider.create_timeout();
        let result = match tokio::time::timeout(
            timeout,
            self.provider_call(&entry, "create", entry.provider.create_instance(&req)),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ProviderError::Transient(format!(
                "create did not finish within {}s",
                timeout.as_secs()
            ))),
        };
        match result {
            Ok(created) => {
                entry.gate.success();
                store
                    .finish_create(&inst.name, &created.provider_id, &created.addresses)
                    .await?;
                tracing::info!(provider.id = %created.provider_id, "instance running");
                Ok(())
            }
            Err(e) => {
                if e.is_retryable() {
                    entry.gate.failure();
                }
                let f = if e.is_retryable() {
                    Failure::Retry(e.to_string())
                } else {
                    Failure::Fatal(e.to_string())
                };
                self.create_failed(&inst, pool, f).await
            }
        }
    }

    /// Calls a provider method and records its metrics.
    async fn provider_call<T>(
        &self,
        entry: &ProviderEntry,
        op: &str,
        fut: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let started = Instant::now();
        let r = fut.await;
        let outcome = match &r {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.inner
            .metrics
            .provider_op(&entry.name, op, outcome, started.elapsed().as_secs_f64());
        r
    }

    /// Calls GitHub through the credentials' concurrency limit and backoff
    /// gate, recording metrics.
    pub(crate) async fn github<T>(
        &self,
        target: &ForgeTarget,
        op: &str,
        fut: impl std::future::Future<Output = Result<T, ForgeError>>,
    ) -> Result<T, ForgeError> {
        let cred = target.credentials.name.as_str();
        let gate = self.credential_gate(cred);
        gate.wait().await;
        let permits = self.credential_permits(cred);
        let _permit = permits.acquire().await.expect("semaphore never closed");
        let r = fut.await;
        let outcome = match &r {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.inner.metrics.github_call(cred, op, outcome);
        match &r {
            Err(ForgeError::Transient(_) | ForgeError::RateLimited { .. }) => {
                gate.failure();
            }
            Ok(_) => gate.success(),
            Err(_) => {}
        }
        r
    }

    async fn register_runner(
        &self,
        inst: &Instance,
        pool: &Pool,
        target: &Arc<ForgeTarget>,
    ) -> Result<(), Failure> {
        let forge = &self.inner.forge;
        let group = self.runner_group(pool, target).await.map_err(|e| match e {
            ForgeError::NotFound(m) | ForgeError::Fatal(m) => Failure::Fatal(m),
            other => Failure::Retry(other.to_string()),
        })?;
        let mut labels = pool.spec.tags.clone();
        let controller = self.inner.store.controller_id();
        for l in [controller_label(controller), pool_label(pool.id)] {
            labels.insert(Label::parse(&l).expect("controller labels are valid"));
        }
        let req = JitRequest {
            name: inst.name.to_string(),
            runner_group_id: group,
            labels: labels.to_vec(),
            work_folder: "_work".into(),
        };
        let mut result = self
            .github(
                target,
                "generate_jit_config",
                forge.generate_jit_config(target, &req),
            )
            .await;
        if let Err(ForgeError::AlreadyExists(_)) = &result {
            // An earlier attempt registered this name (e.g. its answer was
            // lost). Remove that registration and register afresh.
            tracing::info!(instance.name = %inst.name, "runner name already registered; replacing it");
            let runners = self
                .github(target, "list_runners", forge.list_runners(target))
                .await
                .map_err(|e| Failure::Retry(e.to_string()))?;
            if let Some(old) = runners.iter().find(|r| r.name == inst.name.as_str()) {
                self.github(target, "delete_runner", forge.delete_runner(target, old.id))
                    .await
                    .map_err(|e| Failure::Retry(e.to_string()))?;
            }
            result = self
                .github(
                    target,
                    "generate_jit_config",
                    forge.generate_jit_config(target, &req),
                )
                .await;
        }
        let jit = result.map_err(|e| {
            if e.is_retryable() || matches!(e, ForgeError::AlreadyExists(_)) {
                Failure::Retry(e.to_string())
            } else {
                Failure::Fatal(e.to_string())
            }
        })?;
        self.inner
            .store
            .set_instance_jit(&inst.name, jit.runner_id, &jit.encoded_jit_config)
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        Ok(())
    }

    async fn runner_group(&self, pool: &Pool, target: &ForgeTarget) -> Result<i64, ForgeError> {
        let key = (pool.entity_id, pool.spec.runner_group.clone());
        if let Some(id) = self.inner.groups.lock().expect("groups lock").get(&key) {
            return Ok(*id);
        }
        let id = self
            .github(
                target,
                "runner_group_id",
                self.inner
                    .forge
                    .runner_group_id(target, pool.spec.runner_group.as_deref()),
            )
            .await?;
        self.inner
            .groups
            .lock()
            .expect("groups lock")
            .insert(key, id);
        Ok(id)
    }

    async fn runner_tools(
        &self,
        pool: &Pool,
        target: &ForgeTarget,
    ) -> Arc<Vec<hangar_core::provider::RunnerTool>> {
        let now = tokio::time::Instant::now();
        if let Some((at, t)) = self
            .inner
            .tools
            .lock()
            .expect("tools lock")
            .get(&pool.entity_id)
            && now.duration_since(*at) < crate::TOOLS_TTL
        {
            return t.clone();
        }
        let tools = match self
            .github(
                target,
                "runner_downloads",
                self.inner.forge.runner_downloads(target),
            )
            .await
        {
            Ok(t) => Arc::new(t),
            Err(e) => {
                // Images with a pre-installed runner do not need the list.
                tracing::warn!(error = %e, "cannot list runner downloads");
                Arc::new(Vec::new())
            }
        };
        self.inner
            .tools
            .lock()
            .expect("tools lock")
            .insert(pool.entity_id, (now, tools.clone()));
        tools
    }

    async fn create_request(
        &self,
        inst: &Instance,
        pool: &Pool,
        target: &ForgeTarget,
        entry: &ProviderEntry,
        token: Secret,
        jit: bool,
    ) -> Result<CreateInstanceRequest, Failure> {
        let urls = self.inner.urls.get();
        let tools = self.runner_tools(pool, target).await;
        let os = pool.spec.os_type.as_str();
        let arch = pool.spec.os_arch.github_name();
        let tool = tools
            .iter()
            .find(|t| t.os.eq_ignore_ascii_case(os) && t.architecture.eq_ignore_ascii_case(arch));
        let mut labels: Labels = pool.spec.tags.clone();
        let controller = self.inner.store.controller_id();
        for l in [controller_label(controller), pool_label(pool.id)] {
            labels.insert(Label::parse(&l).expect("controller labels are valid"));
        }
        let bootstrap = BootstrapParams {
            repo_url: entity_web_url(&target.endpoint.base_url, &target.scope),
            metadata_url: urls.metadata_url.clone(),
            callback_url: urls.callback_url.clone(),
            instance_token: token,
            jit_config_enabled: jit,
            runner_group: pool.spec.runner_group.clone(),
            tools: tools.as_ref().clone(),
            ca_cert_bundle: target.endpoint.ca_bundle.clone(),
            proxy: pool_proxy(&pool.spec.extra_specs).or(&entry.proxy),
        };
        let script = userdata::render(&UserdataParams {
            name: &inst.name,
            os_type: pool.spec.os_type,
            labels: &labels,
            bootstrap: &bootstrap,
            tool,
        })
        .map_err(|e| Failure::Fatal(e.to_string()))?;
        Ok(CreateInstanceRequest {
            name: inst.name.clone(),
            controller_id: controller,
            pool_id: pool.id,
            image: pool.spec.image.clone(),
            flavor: pool.spec.flavor.clone(),
            os_type: pool.spec.os_type,
            os_arch: pool.spec.os_arch,
            labels,
            extra_specs: provider_extra_specs(&pool.spec.extra_specs),
            userdata: script,
            bootstrap,
        })
    }

    async fn create_failed(
        &self,
        inst: &Instance,
        pool: &Pool,
        f: Failure,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let current = store.instance(&inst.name).await?;
        match f {
            Failure::Retry(msg) => {
                let wait = self.backoff_for(current.create_attempts.max(1));
                tracing::warn!(error = %msg, retry_in_ms = wait.as_millis() as u64, "create failed; will retry");
                if current.status == InstanceStatus::Creating {
                    store
                        .set_instance_status(&inst.name, InstanceStatus::Error, Some(&msg))
                        .await?;
                }
                store
                    .set_next_attempt(
                        &inst.name,
                        Some(Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default()),
                    )
                    .await?;
                self.wake_later(pool.id, wait);
            }
            Failure::Fatal(msg) => {
                tracing::error!(error = %msg, "create failed for good; deleting instance");
                if current.status == InstanceStatus::Creating {
                    store
                        .set_instance_status(&inst.name, InstanceStatus::Error, Some(&msg))
                        .await?;
                }
                let now = store.instance(&inst.name).await?;
                if now.status.can_transition_to(InstanceStatus::PendingDelete) {
                    store
                        .set_instance_status(&inst.name, InstanceStatus::PendingDelete, Some(&msg))
                        .await?;
                }
            }
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(instance.name = %name, pool.id = %pool.id))]
    async fn run_delete(&self, name: &InstanceName, pool: &Pool) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let inst = store.instance(name).await?;
        if inst.status != InstanceStatus::PendingDelete {
            return Ok(());
        }
        // 1. The runner goes first, so GitHub never hands a job to a VM that
        //    is about to vanish.
        match self.target(pool.entity_id).await {
            Ok(target) => {
                let forge = &self.inner.forge;
                let runner_id = match inst.runner_id {
                    Some(id) => Some(id),
                    None if inst.create_attempts > 0 => {
                        // Registration-token runners: find it by name.
                        match self
                            .github(&target, "list_runners", forge.list_runners(&target))
                            .await
                        {
                            Ok(rs) => rs.iter().find(|r| r.name == name.as_str()).map(|r| r.id),
                            Err(e) => {
                                return self
                                    .delete_retry(&inst, pool, format!("listing runners: {e}"))
                                    .await;
                            }
                        }
                    }
                    None => None,
                };
                if let Some(id) = runner_id {
                    match self
                        .github(&target, "delete_runner", forge.delete_runner(&target, id))
                        .await
                    {
                        Ok(()) => {}
                        Err(ForgeError::Busy(_)) => {
                            // It took a job: it is active, whatever we thought.
                            match store
                                .set_runner_status(name, RunnerStatus::Active, None)
                                .await
                            {
                                Ok(_) | Err(hangar_store::StoreError::Transition(_)) => {}
                                Err(e) => return Err(e.into()),
                            }
                            let wait = Duration::from_secs(self.inner.config.busy_retry_secs);
                            tracing::info!(
                                wait_s = wait.as_secs(),
                                "runner is running a job; deleting it afterwards"
                            );
                            store
                                .set_next_attempt(
                                    name,
                                    Some(
                                        Utc::now()
                                            + chrono::Duration::from_std(wait).unwrap_or_default(),
                                    ),
                                )
                                .await?;
                            self.wake_later(pool.id, wait);
                            return Ok(());
                        }
                        Err(e) if e.is_retryable() => {
                            return self
                                .delete_retry(&inst, pool, format!("removing runner: {e}"))
                                .await;
                        }
                        Err(e) => {
                            // Broken credentials must not keep a paid VM
                            // alive; the sweep removes the registration later.
                            tracing::warn!(error = %e, "cannot remove runner from GitHub; deleting the instance anyway");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "entity unavailable; deleting the instance without touching GitHub")
            }
        }

        // 2. The VM.
        store
            .set_instance_status(name, InstanceStatus::Deleting, None)
            .await?;
        if inst.create_attempts > 0 || inst.provider_id.is_some() {
            let Some(entry) = self
                .inner
                .providers
                .get(pool.spec.provider_name.as_str())
                .cloned()
            else {
                store
                    .set_instance_status(
                        name,
                        InstanceStatus::PendingDelete,
                        Some("provider not configured"),
                    )
                    .await?;
                return Ok(());
            };
            entry.gate.wait().await;
            let _permit = entry
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| SchedulerError::ShuttingDown)?;
            let iref = InstanceRef {
                name: name.clone(),
                provider_id: inst.provider_id.clone(),
                controller_id: store.controller_id(),
                pool_id: pool.id,
            };
            if let Err(e) = self
                .provider_call(&entry, "delete", entry.provider.delete_instance(&iref))
                .await
            {
                if e.is_retryable() {
                    entry.gate.failure();
                }
                store
                    .set_instance_status(name, InstanceStatus::PendingDelete, Some(&e.to_string()))
                    .await?;
                let next = store.instance(name).await?;
                return self.delete_retry(&next, pool, e.to_string()).await;
            }
            entry.gate.success();
        }
        store
            .set_instance_status(name, InstanceStatus::Deleted, None)
            .await?;
        let inst = store.instance(name).await?;
        if inst
            .runner_status
            .can_transition_to(RunnerStatus::Terminated)
        {
            store
                .set_runner_status(name, RunnerStatus::Terminated, None)
                .await?;
        }
        tracing::info!("instance deleted");
        Ok(())
    }

    async fn delete_retry(
        &self,
        inst: &Instance,
        pool: &Pool,
        msg: String,
    ) -> Result<(), SchedulerError> {
        let wait = self.backoff_for(2);
        tracing::warn!(error = %msg, retry_in_ms = wait.as_millis() as u64, "delete failed; will retry");
        self.inner
            .store
            .set_next_attempt(
                &inst.name,
                Some(Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default()),
            )
            .await?;
        self.wake_later(pool.id, wait);
        Ok(())
    }
}
