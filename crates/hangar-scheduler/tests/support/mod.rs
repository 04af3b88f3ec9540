//! What the scheduler's own tests run it with: a real store in a temporary
//! folder, the in-process fake provider, and [`MemoryGitHub`] — GitHub's
//! runner and job state kept in memory with the answers the REST API gives
//! (a name clash on registration, 422 for a busy runner, nothing for a
//! runner already gone) — so a test can step the scheduler under tokio's
//! paused clock without sockets.

#![allow(dead_code)]

pub mod memory_actions;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use hangar_core::forge::{ForgeJob, ForgeRunner, JitConfig, JitRequest, RegistrationToken};
use hangar_core::provider::RunnerTool;
use hangar_core::*;
use hangar_scheduler::{
    Metrics, Providers, Scheduler, SchedulerConfig, SchedulerDeps, SharedUrls, Urls,
};
use hangar_store::{JobEvent, NewEntity, Store, StoreOptions};
use hangar_testkit::fake_provider::FakeProvider;
use hangar_testkit::sample;
use memory_actions::MemoryActions;

#[derive(Debug, Default)]
pub struct MemoryGitHub {
    state: Mutex<GhState>,
    /// While set, JIT registrations fail as GitHub's 5xx would.
    failing_jit: std::sync::atomic::AtomicBool,
    /// While set, every call fails as one to an unreachable GitHub does.
    unreachable: std::sync::atomic::AtomicBool,
    /// While set, JIT registrations never answer (a call stuck in its
    /// transport's retries).
    hanging_jit: std::sync::atomic::AtomicBool,
}

/// What the transport reports when GitHub cannot be reached.
pub const UNREACHABLE: &str = "POST /repos/octo/app/actions/runners/generate-jitconfig: error trying to connect: tcp connect error: Connection refused (os error 111)";

#[derive(Debug, Default)]
struct GhState {
    next_id: i64,
    runners: BTreeMap<i64, ForgeRunner>,
    jobs: HashMap<i64, ForgeJob>,
    /// Queued workflow runs and their jobs (what lost-delivery recovery
    /// lists).
    runs: BTreeMap<i64, Vec<ForgeJob>>,
    calls: HashMap<&'static str, u64>,
}

impl MemoryGitHub {
    fn count(&self, op: &'static str) -> std::sync::MutexGuard<'_, GhState> {
        let mut s = self.state.lock().unwrap();
        *s.calls.entry(op).or_default() += 1;
        s
    }

    pub fn calls(&self, op: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    /// Every call made, whatever its kind.
    pub fn total_calls(&self) -> u64 {
        self.state.lock().unwrap().calls.values().sum()
    }

    /// A queued workflow run with these jobs, as `GET …/actions/runs
    /// ?status=queued` and `…/runs/{id}/jobs` list it.
    pub fn queue_run(&self, run_id: i64, jobs: Vec<ForgeJob>) {
        self.state.lock().unwrap().runs.insert(run_id, jobs);
    }

    pub fn runners(&self) -> Vec<ForgeRunner> {
        self.state
            .lock()
            .unwrap()
            .runners
            .values()
            .cloned()
            .collect()
    }

    pub fn runner_named(&self, name: &str) -> Option<ForgeRunner> {
        self.runners().into_iter().find(|r| r.name == name)
    }

    /// Makes every JIT registration fail (a GitHub outage) or work again.
    pub fn fail_jit(&self, on: bool) {
        self.failing_jit
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// GitHub goes away (every call fails to connect) or comes back.
    pub fn set_unreachable(&self, on: bool) {
        self.unreachable
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// JIT registrations hang (until the caller gives up) or answer again.
    pub fn hang_jit(&self, on: bool) {
        self.hanging_jit
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    fn reachable(&self) -> Result<(), ForgeError> {
        if self.unreachable.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ForgeError::Transient(UNREACHABLE.into()));
        }
        Ok(())
    }

    /// A runner starts or finishes running a job.
    pub fn set_busy(&self, name: &str, busy: bool) {
        let mut s = self.state.lock().unwrap();
        for r in s.runners.values_mut().filter(|r| r.name == name) {
            r.busy = busy;
        }
    }

    /// A runner registered by someone (e.g. a crashed controller).
    pub fn add_runner(&self, name: &str, labels: &[String]) -> i64 {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = s.next_id;
        s.runners.insert(
            id,
            ForgeRunner {
                id,
                name: name.into(),
                status: "offline".into(),
                busy: false,
                labels: labels.to_vec(),
            },
        );
        id
    }
}

#[async_trait]
impl Forge for MemoryGitHub {
    async fn generate_jit_config(
        &self,
        _target: &ForgeTarget,
        req: &JitRequest,
    ) -> Result<JitConfig, ForgeError> {
        drop(self.count("generate_jit_config"));
        self.reachable()?;
        if self.hanging_jit.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let mut s = self.state.lock().unwrap();
        if self.failing_jit.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ForgeError::Transient("502 Bad Gateway".into()));
        }
        if s.runners.values().any(|r| r.name == req.name) {
            return Err(ForgeError::AlreadyExists(format!(
                "a runner named {} exists",
                req.name
            )));
        }
        s.next_id += 1;
        let id = s.next_id;
        s.runners.insert(
            id,
            ForgeRunner {
                id,
                name: req.name.clone(),
                status: "offline".into(),
                busy: false,
                labels: req.labels.clone(),
            },
        );
        Ok(JitConfig {
            runner_id: id,
            runner_name: req.name.clone(),
            encoded_jit_config: Secret::new(format!("jit-{id}")),
        })
    }

    async fn registration_token(
        &self,
        _target: &ForgeTarget,
    ) -> Result<RegistrationToken, ForgeError> {
        drop(self.count("registration_token"));
        Ok(RegistrationToken {
            token: Secret::new("reg-token"),
            expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        })
    }

    async fn list_runners(&self, _target: &ForgeTarget) -> Result<Vec<ForgeRunner>, ForgeError> {
        self.reachable()?;
        Ok(self
            .count("list_runners")
            .runners
            .values()
            .cloned()
            .collect())
    }

    async fn delete_runner(&self, _target: &ForgeTarget, runner_id: i64) -> Result<(), ForgeError> {
        let mut s = self.count("delete_runner");
        self.reachable()?;
        match s.runners.get(&runner_id) {
            Some(r) if r.busy => Err(ForgeError::Busy(format!(
                "runner {} is running a job",
                r.name
            ))),
            _ => {
                s.runners.remove(&runner_id);
                Ok(())
            }
        }
    }

    async fn get_job(
        &self,
        _target: &ForgeTarget,
        _repository: &str,
        job_id: JobId,
    ) -> Result<Option<ForgeJob>, ForgeError> {
        Ok(self.count("get_job").jobs.get(&job_id.0).cloned())
    }

    async fn runner_group_id(
        &self,
        _target: &ForgeTarget,
        _name: Option<&str>,
    ) -> Result<i64, ForgeError> {
        drop(self.count("runner_group_id"));
        Ok(1)
    }

    async fn runner_downloads(&self, _target: &ForgeTarget) -> Result<Vec<RunnerTool>, ForgeError> {
        drop(self.count("runner_downloads"));
        Ok(Vec::new())
    }

    /// No hook points here: redelivery has nothing to read.
    async fn list_hooks(
        &self,
        _target: &ForgeTarget,
    ) -> Result<Vec<hangar_core::forge::ForgeHook>, ForgeError> {
        drop(self.count("list_hooks"));
        self.reachable()?;
        Ok(Vec::new())
    }

    async fn queued_run_ids(
        &self,
        _target: &ForgeTarget,
        _repository: &str,
        limit: u32,
    ) -> Result<Vec<i64>, ForgeError> {
        let s = self.count("queued_run_ids");
        self.reachable()?;
        Ok(s.runs.keys().rev().take(limit as usize).copied().collect())
    }

    async fn run_jobs(
        &self,
        _target: &ForgeTarget,
        _repository: &str,
        run_id: i64,
    ) -> Result<Vec<ForgeJob>, ForgeError> {
        let s = self.count("run_jobs");
        self.reachable()?;
        Ok(s.runs.get(&run_id).cloned().unwrap_or_default())
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub github: Arc<MemoryGitHub>,
    /// The runner scale set service the scheduler is given.
    pub actions: Arc<MemoryActions>,
    pub provider: Arc<FakeProvider>,
    pub scheduler: Scheduler,
    pub entity: Entity,
    pub pool: Pool,
    pub config: SchedulerConfig,
}

pub fn spec(max: u32) -> PoolSpec {
    sample::pool_spec("fake", "self-hosted,linux", max)
}

/// Quick retries, so tests step the clock by seconds.
pub fn config() -> SchedulerConfig {
    SchedulerConfig {
        backoff_base_ms: 1_000,
        backoff_max_ms: 4_000,
        // No re-check of queued jobs against GitHub within a test's span.
        job_recheck_after_secs: 24 * 3600,
        busy_retry_secs: 30,
        ..Default::default()
    }
}

impl Harness {
    pub async fn new(config: SchedulerConfig, spec: PoolSpec) -> Self {
        // Under a paused clock tokio jumps to the next timer whenever the
        // runtime waits, including for SQLite's connection thread. A timer
        // every millisecond keeps those jumps small, and a long acquire
        // timeout keeps them from failing a query.
        tokio::spawn(async {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let mut opts = StoreOptions::new(
            format!("sqlite://{}", dir.path().join("hangar.db").display()),
            Secret::new("a test passphrase that is long enough!"),
        );
        opts.acquire_timeout = std::time::Duration::from_secs(24 * 3600);
        // No fsync per commit: the shorter each wait on SQLite, the less the
        // clock moves during it.
        opts.synchronous_full = false;
        let store = Store::open(&opts).await.unwrap();
        store.create_endpoint(&sample::github_com()).await.unwrap();
        store
            .create_credentials(&sample::pat("gh", "github.com", "ghp_test"))
            .await
            .unwrap();
        let entity = store
            .create_entity(&NewEntity {
                scope: EntityScope::Repository {
                    owner: "octo".into(),
                    name: "app".into(),
                },
                credentials_name: ResourceName::parse("gh").unwrap(),
                webhook_secret: Secret::new("whsec"),
            })
            .await
            .unwrap();
        let pool = store.create_pool(entity.id, &spec).await.unwrap();
        let github = Arc::new(MemoryGitHub::default());
        let provider = Arc::new(FakeProvider::default());
        let actions = Arc::new(MemoryActions::default());
        let scheduler = Self::scheduler_with_actions(
            &store,
            &github,
            Some(actions.clone()),
            provider.clone(),
            &config,
        );
        Self {
            dir,
            store,
            github,
            actions,
            provider,
            scheduler,
            entity,
            pool,
            config,
        }
    }

    /// A scheduler over the harness's store, GitHub and provider (a second
    /// one stands for hangard after a restart).
    pub fn scheduler(
        store: &Store,
        github: &Arc<MemoryGitHub>,
        provider: &Arc<FakeProvider>,
        config: &SchedulerConfig,
    ) -> Scheduler {
        Self::scheduler_with(store, github, provider.clone(), config)
    }

    /// [`Self::scheduler`] over any provider named `fake`.
    pub fn scheduler_with(
        store: &Store,
        github: &Arc<MemoryGitHub>,
        provider: Arc<dyn Provider>,
        config: &SchedulerConfig,
    ) -> Scheduler {
        Self::scheduler_with_actions(store, github, None, provider, config)
    }

    /// [`Self::scheduler_with`], with a runner scale set service.
    pub fn scheduler_with_actions(
        store: &Store,
        github: &Arc<MemoryGitHub>,
        actions: Option<Arc<MemoryActions>>,
        provider: Arc<dyn Provider>,
        config: &SchedulerConfig,
    ) -> Scheduler {
        let providers = Providers::builder()
            .backoff(
                std::time::Duration::from_millis(config.backoff_base_ms),
                std::time::Duration::from_millis(config.backoff_max_ms),
            )
            .add("fake", "", provider, Default::default())
            .unwrap()
            .build();
        Scheduler::new(SchedulerDeps {
            store: store.clone(),
            forge: github.clone(),
            actions: actions.map(|a| a as Arc<dyn ActionsService>),
            providers,
            config: config.clone(),
            urls: SharedUrls::new(Urls::derive("http://127.0.0.1:1", None, None, None)),
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// Records a delivery as intake does, and tells the scheduler.
    pub async fn deliver(&self, job: i64, action: JobAction, runner: Option<&str>) {
        let event = JobEvent {
            job_id: JobId(job),
            run_attempt: 1,
            action,
            entity_id: self.entity.id,
            labels: Labels::parse_list("self-hosted,linux").unwrap(),
            repository: "octo/app".into(),
            workflow_run_id: Some(1),
            name: Some("build".into()),
            runner_name: runner.map(str::to_owned),
            conclusion: None,
            pool_id: Some(self.pool.id),
        };
        let outcome = self
            .store
            .record_job_events(std::slice::from_ref(&event))
            .await
            .unwrap();
        self.scheduler.job_recorded(event, outcome[0]);
    }

    /// Every instance of the pool, deleted ones too.
    pub async fn instances(&self) -> Vec<Instance> {
        self.store
            .list_instances(&hangar_store::InstanceFilter {
                pool_id: Some(self.pool.id),
                include_deleted: true,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    pub async fn only_instance(&self) -> Instance {
        let all = self.instances().await;
        assert_eq!(all.len(), 1, "{all:#?}");
        all.into_iter().next().unwrap()
    }

    /// Steps tokio's (paused) clock and lets the scheduler catch up.
    pub async fn after(&self, d: std::time::Duration) {
        tokio::time::advance(d).await;
        self.scheduler.wake_all();
        self.scheduler.run_until_idle().await;
    }
}

/// A provider that answers every create the way a broken one does (an
/// error, garbage output or exit 1 all reach the scheduler as `Fatal`)
/// while `failing` is set, and is the fake provider otherwise; it counts
/// every create call that reached it.
#[derive(Debug)]
pub struct BrokenProvider {
    pub inner: Arc<FakeProvider>,
    pub failing: std::sync::atomic::AtomicBool,
    pub create_calls: std::sync::atomic::AtomicU64,
    pub error: ProviderError,
}

impl BrokenProvider {
    pub fn new(inner: Arc<FakeProvider>, error: ProviderError) -> Self {
        Self {
            inner,
            failing: std::sync::atomic::AtomicBool::new(true),
            create_calls: Default::default(),
            error,
        }
    }

    pub fn creates(&self) -> u64 {
        self.create_calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn heal(&self) {
        self.failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl Provider for BrokenProvider {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn validate_pool(&self, spec: &PoolSpec) -> Result<(), ProviderError> {
        self.inner.validate_pool(spec).await
    }

    async fn create_instance(
        &self,
        req: &hangar_core::provider::CreateInstanceRequest,
    ) -> Result<hangar_core::provider::ProviderInstance, ProviderError> {
        self.create_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(self.error.clone());
        }
        self.inner.create_instance(req).await
    }

    async fn delete_instance(
        &self,
        instance: &hangar_core::provider::InstanceRef,
    ) -> Result<(), ProviderError> {
        self.inner.delete_instance(instance).await
    }

    async fn get_instance(
        &self,
        instance: &hangar_core::provider::InstanceRef,
    ) -> Result<hangar_core::provider::ProviderInstance, ProviderError> {
        self.inner.get_instance(instance).await
    }

    async fn list_instances(
        &self,
        controller_id: ControllerId,
        pool_id: PoolId,
    ) -> Result<Vec<hangar_core::provider::ProviderInstance>, ProviderError> {
        self.inner.list_instances(controller_id, pool_id).await
    }

    async fn health(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}
