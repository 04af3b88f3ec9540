//! The `Provider` trait: how Hangar gets a VM (or container) made and unmade.
//!
//! Implementations live in their own crates (libvirt, Azure, external
//! executables); the scheduler only ever sees `Arc<dyn Provider>`. Errors are
//! shaped by what the caller must decide next: retry, back off, or give up.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::{ControllerId, InstanceName, PoolId};
use crate::labels::Labels;
use crate::pool::{OsArch, OsType, PoolSpec};
use crate::secret::Secret;

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The instance (or image, or flavor) does not exist. For deletes this is
    /// success; for creates a configuration problem.
    #[error("not found: {0}")]
    NotFound(String),
    /// Out of quota or capacity; retry later, with a longer wait.
    #[error("quota or capacity exhausted: {0}")]
    Quota(String),
    /// A passing failure (connection lost, throttled, 5xx); retry with backoff.
    #[error("transient provider failure: {0}")]
    Transient(String),
    /// The pool's image, flavor or extra specs are unusable for this provider.
    #[error("invalid pool settings: {0}")]
    InvalidSpec(String),
    /// Anything else that retrying will not fix.
    #[error("provider failure: {0}")]
    Fatal(String),
    /// A create found an instance of that name already there (an earlier
    /// attempt made it): creates are keyed by the instance name, so the
    /// caller adopts it instead of making a second.
    #[error("already exists: {0}")]
    AlreadyExists(String),
}

impl ProviderError {
    /// Whether the same call may succeed later without anyone changing
    /// anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Quota(_) | ProviderError::Transient(_))
    }

    /// A short, fixed name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::NotFound(_) => "not_found",
            ProviderError::Quota(_) => "quota",
            ProviderError::Transient(_) => "transient",
            ProviderError::InvalidSpec(_) => "invalid_spec",
            ProviderError::Fatal(_) => "fatal",
            ProviderError::AlreadyExists(_) => "already_exists",
        }
    }
}

/// The check a provider makes right before each step that changes
/// something outside Hangar ([`may_act`]): `Err` says why the caller may no
/// longer act. The scheduler installs one per provider call
/// ([`act_guarded`]) that holds the call to its pool's lease, so a replica
/// frozen after it decided to act (SIGSTOP, a long GC-like stall, a
/// suspended VM) does not act once it resumes past its lease: the guard is
/// asked again at the last moment, inside the provider, after every wait
/// the provider itself adds (its own concurrency limit, a retry's sleep).
pub type ActGuard = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

tokio::task_local! {
    static ACT_GUARD: ActGuard;
}

/// Runs `fut` (a provider call) with `guard` as what [`may_act`] asks.
pub async fn act_guarded<F: std::future::Future>(guard: ActGuard, fut: F) -> F::Output {
    ACT_GUARD.scope(guard, fut).await
}

/// The guard of the provider call this task runs, for a provider that acts
/// on another thread (a blocking pool) where [`may_act`] cannot see it:
/// ask it there, right before acting.
pub fn act_guard() -> Option<ActGuard> {
    ACT_GUARD.try_with(Arc::clone).ok()
}

/// Asked by a provider right before it acts: spawns its process, defines,
/// starts or destroys a domain, sends an ARM `PUT` or `DELETE`. Outside
/// [`act_guarded`] (tests, the admin CLI, SQLite's single replica without a
/// guard) it always allows. A refusal is [`ProviderError::Transient`]: the
/// call is not made, and whoever holds the pool now does the work.
pub fn may_act() -> Result<(), ProviderError> {
    match ACT_GUARD.try_with(|guard| guard()) {
        Ok(Err(why)) => Err(ProviderError::Transient(format!("not acting: {why}"))),
        Ok(Ok(())) | Err(_) => Ok(()),
    }
}

/// Proxy settings that reach the runner and the guest's package tools.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxySettings {
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
}

impl ProxySettings {
    pub fn is_empty(&self) -> bool {
        self.http_proxy.is_none() && self.https_proxy.is_none() && self.no_proxy.is_none()
    }

    /// `self` where set, `fallback` elsewhere (pool settings over provider).
    pub fn or(&self, fallback: &ProxySettings) -> ProxySettings {
        ProxySettings {
            http_proxy: self
                .http_proxy
                .clone()
                .or_else(|| fallback.http_proxy.clone()),
            https_proxy: self
                .https_proxy
                .clone()
                .or_else(|| fallback.https_proxy.clone()),
            no_proxy: self.no_proxy.clone().or_else(|| fallback.no_proxy.clone()),
        }
    }
}

/// One entry of GitHub's runner downloads list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerTool {
    pub os: String,
    pub architecture: String,
    pub download_url: String,
    pub filename: String,
    pub sha256_checksum: Option<String>,
}

/// What an instance needs to bootstrap its runner, as data. Providers that
/// render their own bootstrap (garm's external providers) use this; the rest
/// pass [`CreateInstanceRequest::userdata`] through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapParams {
    /// Web URL of the repository, organization or enterprise.
    pub repo_url: String,
    /// Base of the instance metadata routes (`…/api/v1/metadata`).
    pub metadata_url: String,
    /// The status callback URL (`…/api/v1/callbacks/status`).
    pub callback_url: String,
    /// The instance's own bearer token for the two URLs above.
    pub instance_token: Secret,
    pub jit_config_enabled: bool,
    pub runner_group: Option<String>,
    pub tools: Vec<RunnerTool>,
    pub ca_cert_bundle: Option<String>,
    pub proxy: ProxySettings,
}

/// The OS process a provider call runs in (external providers run one per
/// call, as its own process group), so a restarted hangard can tell
/// whether a create it lost track of still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallProcess {
    /// Its pid, which is also its process group id.
    pub pid: u32,
    /// When it started, in clock ticks since boot (`/proc/<pid>/stat`
    /// field 22): a pid reused by another process does not match.
    pub start_ticks: u64,
}

/// Told when a create's process has started ([`CallProcess`]).
#[derive(Clone)]
pub struct CallWatcher(Arc<dyn Fn(CallProcess) + Send + Sync>);

impl CallWatcher {
    pub fn new(f: impl Fn(CallProcess) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub fn started(&self, p: CallProcess) {
        (self.0)(p)
    }
}

impl fmt::Debug for CallWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallWatcher")
    }
}

/// Everything a provider needs to create one instance.
#[derive(Debug, Clone)]
pub struct CreateInstanceRequest {
    pub name: InstanceName,
    pub controller_id: ControllerId,
    pub pool_id: PoolId,
    pub image: String,
    pub flavor: String,
    pub os_type: OsType,
    pub os_arch: OsArch,
    /// The labels the runner registers with (pool tags plus Hangar's own).
    pub labels: Labels,
    pub extra_specs: serde_json::Map<String, serde_json::Value>,
    /// Rendered boot script (cloud-init user-data); see [`crate::userdata`].
    /// Empty when the provider renders its own ([`Provider::renders_userdata`]
    /// is false).
    pub userdata: String,
    pub bootstrap: BootstrapParams,
    /// Told the process the create runs in, when it runs in one of its own.
    pub watcher: Option<CallWatcher>,
}

/// Identifies an instance to the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRef {
    pub name: InstanceName,
    /// The provider's id, when the create call got far enough to return one.
    pub provider_id: Option<String>,
    pub controller_id: ControllerId,
    pub pool_id: PoolId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderInstanceStatus {
    Creating,
    Running,
    Stopped,
    Error,
    Unknown,
}

/// An instance as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInstance {
    pub provider_id: String,
    pub name: String,
    pub status: ProviderInstanceStatus,
    /// From the instance's tags/metadata; `None` when it carries none.
    pub controller_id: Option<ControllerId>,
    pub pool_id: Option<PoolId>,
    pub addresses: Vec<String>,
    pub os_name: Option<String>,
    pub os_version: Option<String>,
    /// The provider's explanation when `status` is `Error`.
    pub fault: Option<String>,
}

/// A place that makes runner instances.
///
/// Every method must be safe to call again after a crash half-way: `create`
/// cleans up what it made when it fails, `delete` of something already gone
/// succeeds.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// `libvirt`, `azure`, `external`, …
    fn kind(&self) -> &'static str;

    /// Whether instances bootstrap from a JIT config (true) or a registration
    /// token.
    fn jit_enabled(&self) -> bool {
        true
    }

    /// Whether Hangar renders the instance's boot script into
    /// [`CreateInstanceRequest::userdata`] (true: libvirt, Azure, the fake)
    /// or the provider renders its own from [`BootstrapParams`] (false:
    /// garm's external providers, which also render Windows scripts). A
    /// provider that relies on Hangar's script must refuse pools whose OS
    /// that script does not cover (Linux only) in
    /// [`Provider::validate_pool`].
    fn renders_userdata(&self) -> bool {
        true
    }

    /// Whether instances of this OS and architecture can boot here; `Err`
    /// says why not. Asked before a pool is stored, so a pool that could
    /// never boot is refused instead of failing every create. By default a
    /// provider that boots with Hangar's script (Linux only) serves Linux
    /// on any architecture, and one that renders its own serves all.
    fn can_boot(&self, os_type: OsType, _os_arch: OsArch) -> Result<(), String> {
        if self.renders_userdata() && os_type != OsType::Linux {
            return Err(format!(
                "os_type {}: the {} provider boots with Hangar's boot script, which is Linux only; serve {} pools through an external (garm) provider, which renders its own boot script",
                os_type.as_str(),
                self.kind(),
                os_type.as_str()
            ));
        }
        Ok(())
    }

    /// How many calls may run at once against this provider.
    fn max_concurrency(&self) -> usize {
        8
    }

    /// How long one create may take before the scheduler gives up on it.
    fn create_timeout(&self) -> Duration {
        Duration::from_secs(15 * 60)
    }

    /// Checks a pool's image, flavor and extra specs before they are stored.
    async fn validate_pool(&self, spec: &PoolSpec) -> Result<(), ProviderError>;

    /// Creates and starts an instance.
    async fn create_instance(
        &self,
        req: &CreateInstanceRequest,
    ) -> Result<ProviderInstance, ProviderError>;

    /// Deletes an instance and everything made for it. Already gone is `Ok`.
    async fn delete_instance(&self, instance: &InstanceRef) -> Result<(), ProviderError>;

    /// The instance as the provider sees it; `NotFound` when it is gone.
    async fn get_instance(&self, instance: &InstanceRef)
    -> Result<ProviderInstance, ProviderError>;

    /// Every instance carrying this controller's and pool's tags.
    async fn list_instances(
        &self,
        controller_id: ControllerId,
        pool_id: PoolId,
    ) -> Result<Vec<ProviderInstance>, ProviderError>;

    /// Every instance carrying this controller's tag in any of `pools`,
    /// each with its `pool_id`. Providers that can list everything of a
    /// controller at once do so in one call (the sweep's cost then does not
    /// grow with the number of pools); the default asks per pool.
    async fn list_instances_in(
        &self,
        controller_id: ControllerId,
        pools: &[PoolId],
    ) -> Result<Vec<ProviderInstance>, ProviderError> {
        let mut out = Vec::new();
        for &pool in pools {
            for mut i in self.list_instances(controller_id, pool).await? {
                i.pool_id.get_or_insert(pool);
                out.push(i);
            }
        }
        Ok(out)
    }

    /// A cheap reachability check for `/readyz`.
    async fn health(&self) -> Result<(), ProviderError>;

    /// After a restart: makes sure the create that ran in `process` (as its
    /// [`CreateInstanceRequest::watcher`] was told) no longer runs — waits
    /// for it up to `wait`, then stops its process group. Providers whose
    /// calls run inside hangard have nothing left over.
    async fn stop_orphaned_call(&self, _process: CallProcess, _wait: Duration) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_kinds() {
        assert!(ProviderError::Transient("x".into()).is_retryable());
        assert!(ProviderError::Quota("x".into()).is_retryable());
        assert!(!ProviderError::Fatal("x".into()).is_retryable());
        assert!(!ProviderError::NotFound("x".into()).is_retryable());
        assert!(!ProviderError::InvalidSpec("x".into()).is_retryable());
    }

    #[tokio::test]
    async fn may_act_asks_the_guard_of_the_call_it_runs_in() {
        assert_eq!(may_act(), Ok(()), "no guard: nothing to ask");
        let live = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let seen = live.clone();
        let guard: ActGuard = Arc::new(move || {
            if seen.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                Err("lease 7 of pool p lost".into())
            }
        });
        let checks = act_guarded(guard, async {
            let before = may_act();
            live.store(false, std::sync::atomic::Ordering::SeqCst);
            tokio::task::yield_now().await;
            (before, may_act())
        })
        .await;
        assert_eq!(checks.0, Ok(()));
        assert_eq!(
            checks.1,
            Err(ProviderError::Transient(
                "not acting: lease 7 of pool p lost".into()
            ))
        );
        assert_eq!(may_act(), Ok(()), "the guard ends with its call");
    }

    #[test]
    fn proxy_pool_over_provider() {
        let pool = ProxySettings {
            http_proxy: Some("http://pool:3128".into()),
            ..Default::default()
        };
        let prov = ProxySettings {
            http_proxy: Some("http://prov:3128".into()),
            no_proxy: Some("localhost".into()),
            ..Default::default()
        };
        let merged = pool.or(&prov);
        assert_eq!(merged.http_proxy.as_deref(), Some("http://pool:3128"));
        assert_eq!(merged.no_proxy.as_deref(), Some("localhost"));
        assert!(merged.https_proxy.is_none());
    }
}
