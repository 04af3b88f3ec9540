//! `FakeProvider`: an in-memory [`Provider`] with latency and failure
//! injection, that can simulate each instance's boot over real HTTP.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hangar_core::provider::{
    CreateInstanceRequest, InstanceRef, ProviderInstance, ProviderInstanceStatus,
};
use hangar_core::{ControllerId, PoolId, PoolSpec, Provider, ProviderError};
use tokio::sync::Notify;

use crate::runner_sim;

/// What happens after a create succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// Nothing: the instance exists but its runner never comes up.
    None,
    /// Walk through the real bootstrap calls ([`runner_sim::boot`]).
    Simulate,
}

#[derive(Debug, Clone)]
pub struct FakeProviderConfig {
    pub create_latency: Duration,
    pub delete_latency: Duration,
    pub boot: BootMode,
    pub max_concurrency: usize,
    /// Appends `<op> <instance> <unix µs>` per create/delete call, so a
    /// process outside (a benchmark) can see when calls happened.
    pub calls_log: Option<std::path::PathBuf>,
}

impl Default for FakeProviderConfig {
    fn default() -> Self {
        Self {
            create_latency: Duration::ZERO,
            delete_latency: Duration::ZERO,
            boot: BootMode::None,
            max_concurrency: 64,
            calls_log: None,
        }
    }
}

/// The `[provider.fake]` table of hangard's config (`kind = "fake"`: for
/// demos, tests and benchmarks — no real machine is made).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeProviderSettings {
    /// Milliseconds each create takes.
    #[serde(default)]
    pub create_latency_ms: u64,
    #[serde(default)]
    pub delete_latency_ms: u64,
    /// `simulate`: each instance walks through the real bootstrap calls;
    /// `none`: runners never come up.
    #[serde(default = "default_boot")]
    pub boot: BootMode,
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    pub calls_log: Option<std::path::PathBuf>,
    /// The first N creates fail with a transient error (fault injection).
    #[serde(default)]
    pub fail_first_creates: u32,
}

fn default_boot() -> BootMode {
    BootMode::Simulate
}

fn default_concurrency() -> usize {
    64
}

impl From<FakeProviderSettings> for FakeProviderConfig {
    fn from(s: FakeProviderSettings) -> Self {
        Self {
            create_latency: Duration::from_millis(s.create_latency_ms),
            delete_latency: Duration::from_millis(s.delete_latency_ms),
            boot: s.boot,
            max_concurrency: s.max_concurrency,
            calls_log: s.calls_log,
        }
    }
}

fn log_call(path: &Option<std::path::PathBuf>, op: &str, name: &str) {
    use std::io::Write as _;
    let Some(path) = path else { return };
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line: `writeln!` on a File issues several, and
        // concurrent calls would interleave their pieces.
        let _ = f.write_all(format!("{op} {name} {micros}\n").as_bytes());
    }
}

/// An instance the fake holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeInstance {
    pub provider_id: String,
    pub name: String,
    pub controller_id: ControllerId,
    pub pool_id: PoolId,
    pub image: String,
    pub flavor: String,
    pub userdata: String,
    pub labels: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    instances: BTreeMap<String, FakeInstance>,
    fail_creates: VecDeque<ProviderError>,
    fail_deletes: VecDeque<ProviderError>,
    creates: u64,
    deletes: u64,
    next_id: u64,
    boot_errors: Vec<String>,
    /// Highest number of instances held at once.
    peak: usize,
}

#[derive(Debug, Clone)]
pub struct FakeProvider {
    state: Arc<Mutex<State>>,
    config: Arc<Mutex<FakeProviderConfig>>,
    changed: Arc<Notify>,
}

impl Default for FakeProvider {
    fn default() -> Self {
        Self::new(FakeProviderConfig::default())
    }
}

impl FakeProvider {
    pub fn new(config: FakeProviderConfig) -> Self {
        Self {
            state: Arc::default(),
            config: Arc::new(Mutex::new(config)),
            changed: Arc::new(Notify::new()),
        }
    }

    pub fn set_boot(&self, boot: BootMode) {
        self.config.lock().unwrap().boot = boot;
    }

    pub fn set_create_latency(&self, d: Duration) {
        self.config.lock().unwrap().create_latency = d;
    }

    /// The next `n` creates fail with `err` (after their latency).
    pub fn fail_next_creates(&self, n: usize, err: ProviderError) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..n {
            s.fail_creates.push_back(err.clone());
        }
    }

    pub fn fail_next_deletes(&self, n: usize, err: ProviderError) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..n {
            s.fail_deletes.push_back(err.clone());
        }
    }

    /// Removes an instance behind Hangar's back (a VM that vanished).
    pub fn lose(&self, name: &str) -> bool {
        let removed = self.state.lock().unwrap().instances.remove(name).is_some();
        self.changed.notify_waiters();
        removed
    }

    /// Adds an instance Hangar never asked for (an orphan to be reaped).
    pub fn plant(&self, inst: FakeInstance) {
        let mut s = self.state.lock().unwrap();
        s.instances.insert(inst.name.clone(), inst);
        s.peak = s.peak.max(s.instances.len());
        drop(s);
        self.changed.notify_waiters();
    }

    pub fn instances(&self) -> Vec<FakeInstance> {
        self.state
            .lock()
            .unwrap()
            .instances
            .values()
            .cloned()
            .collect()
    }

    pub fn instance(&self, name: &str) -> Option<FakeInstance> {
        self.state.lock().unwrap().instances.get(name).cloned()
    }

    /// Successful creates so far.
    pub fn create_count(&self) -> u64 {
        self.state.lock().unwrap().creates
    }

    pub fn delete_count(&self) -> u64 {
        self.state.lock().unwrap().deletes
    }

    pub fn peak_instances(&self) -> usize {
        self.state.lock().unwrap().peak
    }

    pub fn boot_errors(&self) -> Vec<String> {
        self.state.lock().unwrap().boot_errors.clone()
    }

    /// Waits until `pred` holds for the current instances, or panics after
    /// `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&[FakeInstance]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if pred(&self.instances()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; instances: {:?}",
                    self.instances().iter().map(|i| &i.name).collect::<Vec<_>>()
                );
            }
        }
    }

    fn to_provider_instance(i: &FakeInstance) -> ProviderInstance {
        ProviderInstance {
            provider_id: i.provider_id.clone(),
            name: i.name.clone(),
            status: ProviderInstanceStatus::Running,
            controller_id: Some(i.controller_id),
            pool_id: Some(i.pool_id),
            addresses: vec!["192.0.2.10".into()],
            os_name: Some("fake".into()),
            os_version: None,
            fault: None,
        }
    }
}

#[async_trait]
impl Provider for FakeProvider {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn max_concurrency(&self) -> usize {
        self.config.lock().unwrap().max_concurrency
    }

    async fn validate_pool(&self, spec: &PoolSpec) -> Result<(), ProviderError> {
        if spec.image == "invalid" {
            return Err(ProviderError::InvalidSpec(
                "image \"invalid\" does not exist".into(),
            ));
        }
        if let Some(k) = spec
            .extra_specs
            .keys()
            .find(|k| k.as_str() != "fake_option")
        {
            return Err(ProviderError::InvalidSpec(format!(
                "unknown extra spec {k:?} (the fake provider accepts only \"fake_option\")"
            )));
        }
        Ok(())
    }

    async fn create_instance(
        &self,
        req: &CreateInstanceRequest,
    ) -> Result<ProviderInstance, ProviderError> {
        let (latency, boot, log) = {
            let c = self.config.lock().unwrap();
            (c.create_latency, c.boot, c.calls_log.clone())
        };
        hangar_core::provider::may_act()?;
        log_call(&log, "create", req.name.as_str());
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let inst = {
            let mut s = self.state.lock().unwrap();
            if let Some(err) = s.fail_creates.pop_front() {
                return Err(err);
            }
            if let Some(existing) = s.instances.get(req.name.as_str()) {
                return Ok(Self::to_provider_instance(existing));
            }
            s.next_id += 1;
            s.creates += 1;
            let inst = FakeInstance {
                provider_id: format!("fake-{}", s.next_id),
                name: req.name.to_string(),
                controller_id: req.controller_id,
                pool_id: req.pool_id,
                image: req.image.clone(),
                flavor: req.flavor.clone(),
                userdata: req.userdata.clone(),
                labels: req.labels.to_vec(),
            };
            s.instances.insert(inst.name.clone(), inst.clone());
            s.peak = s.peak.max(s.instances.len());
            inst
        };
        self.changed.notify_waiters();
        if boot == BootMode::Simulate {
            let bootstrap = req.bootstrap.clone();
            let state = self.state.clone();
            tokio::spawn(async move {
                if let Err(e) = runner_sim::boot(&bootstrap).await {
                    tracing::warn!(error = %e, "simulated boot failed");
                    state.lock().unwrap().boot_errors.push(e.to_string());
                }
            });
        }
        Ok(Self::to_provider_instance(&inst))
    }

    async fn delete_instance(&self, instance: &InstanceRef) -> Result<(), ProviderError> {
        let (latency, log) = {
            let c = self.config.lock().unwrap();
            (c.delete_latency, c.calls_log.clone())
        };
        hangar_core::provider::may_act()?;
        log_call(&log, "delete", instance.name.as_str());
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        {
            let mut s = self.state.lock().unwrap();
            if let Some(err) = s.fail_deletes.pop_front() {
                return Err(err);
            }
            if s.instances.remove(instance.name.as_str()).is_some() {
                s.deletes += 1;
            }
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn get_instance(
        &self,
        instance: &InstanceRef,
    ) -> Result<ProviderInstance, ProviderError> {
        self.state
            .lock()
            .unwrap()
            .instances
            .get(instance.name.as_str())
            .map(Self::to_provider_instance)
            .ok_or_else(|| ProviderError::NotFound(format!("instance {}", instance.name)))
    }

    async fn list_instances(
        &self,
        controller_id: ControllerId,
        pool_id: PoolId,
    ) -> Result<Vec<ProviderInstance>, ProviderError> {
        let log = self.config.lock().unwrap().calls_log.clone();
        log_call(&log, "list", "-");
        Ok(self
            .state
            .lock()
            .unwrap()
            .instances
            .values()
            .filter(|i| i.controller_id == controller_id && i.pool_id == pool_id)
            .map(Self::to_provider_instance)
            .collect())
    }

    async fn list_instances_in(
        &self,
        controller_id: ControllerId,
        pools: &[PoolId],
    ) -> Result<Vec<ProviderInstance>, ProviderError> {
        let log = self.config.lock().unwrap().calls_log.clone();
        log_call(&log, "list", "-");
        Ok(self
            .state
            .lock()
            .unwrap()
            .instances
            .values()
            .filter(|i| i.controller_id == controller_id && pools.contains(&i.pool_id))
            .map(Self::to_provider_instance)
            .collect())
    }

    async fn health(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}
