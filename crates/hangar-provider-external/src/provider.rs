//! [`ExternalProvider`]: Hangar's `Provider` trait spoken as garm's external
//! provider protocol, one executable run per operation, so garm's LXD,
//! Incus, OpenStack, AWS, GCP, Azure and Kubernetes providers work as they
//! are.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hangar_core::provider::{CreateInstanceRequest, InstanceRef, ProviderInstance, ProxySettings};
use hangar_core::{ControllerId, OsArch, OsType, PoolId, PoolSpec, Provider, ProviderError};
use tokio::sync::Semaphore;

use crate::config::{ExternalProviderConfig, InterfaceVersion, inherited_env};
use crate::exec::{self, CallError, GarmCommand, Invocation, Runner};
use crate::wire::{BootstrapInstance, GarmInstance};

/// garm's "not found" exit code: DeleteInstance treats it as done (as garm
/// does), everything else as [`ProviderError::NotFound`] (garm itself only
/// looks at it on delete; garm-provider-common exits 30 for any not-found).
pub const EXIT_NOT_FOUND: i32 = 30;
/// garm's "duplicate" exit code (an instance with that name exists).
pub const EXIT_DUPLICATE: i32 = 31;

/// `GARM_CONTROLLER_ID` for calls that concern no controller (version,
/// schemas, pool validation) when none was given: garm's Go library refuses
/// to run without one.
const NIL_CONTROLLER: &str = "00000000-0000-0000-0000-000000000000";

/// Why an [`ExternalProvider`] could not be set up. Every variant is an
/// operator's config mistake, reported at startup rather than at the first
/// job.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error(
        "executable {0:?} must be an absolute path (providers run without a shell or PATH lookup)"
    )]
    RelativeExecutable(PathBuf),
    #[error("executable {path:?}: {source}")]
    Executable { path: PathBuf, source: io::Error },
    #[error("{0:?} is not an executable file (check its mode bits)")]
    NotExecutable(PathBuf),
    #[error("provider config file {path:?}: {source}")]
    ConfigFile { path: PathBuf, source: io::Error },
    #[error("{field} must be at least 1")]
    Zero { field: &'static str },
}

/// Whether a failed call is the provider saying it does not know `command`
/// at all. garm-provider-common answers an unknown `GARM_COMMAND` with exit
/// code 1 and `unknown GARM_COMMAND: <command>` (its environment check) or
/// `invalid command: <command>` (its dispatcher) on stderr. "unknown
/// command" with the name is taken too (hand-written providers); a message
/// without the command's name is an ordinary failure.
fn is_unknown_command(err: &CallError, command: GarmCommand) -> bool {
    let CallError::Exit { code, stderr, .. } = err else {
        return false;
    };
    if *code == EXIT_NOT_FOUND || *code == EXIT_DUPLICATE {
        return false;
    }
    let text = stderr.to_lowercase();
    text.contains(&command.as_str().to_lowercase())
        && ["unknown garm_command", "invalid command", "unknown command"]
            .iter()
            .any(|phrase| text.contains(phrase))
}

fn check_executable(path: &Path) -> Result<(), ExternalError> {
    let meta = std::fs::metadata(path).map_err(|source| ExternalError::Executable {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(ExternalError::NotExecutable(path.to_owned()));
    }
    Ok(())
}

fn check_config_file(path: &Path) -> Result<(), ExternalError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|source| ExternalError::ConfigFile {
            path: path.to_owned(),
            source,
        })
}

/// A provider that runs a garm-compatible executable per operation.
pub struct ExternalProvider {
    config: ExternalProviderConfig,
    runner: Runner,
    permits: Semaphore,
    controller_id: Option<ControllerId>,
    /// garm passes a pool's extra specs with every call, but an
    /// [`InstanceRef`] does not carry them: remember them from creates (and
    /// from [`ExternalProvider::remember_pool_extra_specs`]).
    pool_extra_specs: Mutex<HashMap<PoolId, serde_json::Map<String, serde_json::Value>>>,
    /// The proxy settings (pool's over provider's) of each pool's last
    /// create, so later calls about its instances run with them too.
    pool_proxy: Mutex<HashMap<PoolId, ProxySettings>>,
}

impl std::fmt::Debug for ExternalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalProvider")
            .field("executable", &self.config.executable)
            .field("interface_version", &self.config.interface_version)
            .field("max_concurrency", &self.config.max_concurrency)
            .field("runner", &self.runner)
            .finish_non_exhaustive()
    }
}

/// The proxy variables a provider process gets, in both spellings (curl
/// and Go read upper case, many shell tools only lower case). Unset
/// settings export nothing, so an inherited value stays.
fn proxy_env(p: &ProxySettings) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (value, upper, lower) in [
        (&p.http_proxy, "HTTP_PROXY", "http_proxy"),
        (&p.https_proxy, "HTTPS_PROXY", "https_proxy"),
        (&p.no_proxy, "NO_PROXY", "no_proxy"),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            out.push((upper, v.to_owned()));
            out.push((lower, v.to_owned()));
        }
    }
    out
}

/// The per-call variables besides the command.
struct Target<'a> {
    controller: Option<ControllerId>,
    pool: Option<PoolId>,
    /// `GARM_INSTANCE_ID`: the provider id, or the name when there is none.
    instance_id: String,
    /// For logs and errors.
    instance_name: &'a str,
    extra_specs: Option<serde_json::Map<String, serde_json::Value>>,
    /// Exported as `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` and their
    /// lowercase forms, over any inherited value.
    proxy: Option<ProxySettings>,
    /// Told the call's process (creates: recorded for crash recovery).
    watcher: Option<hangar_core::provider::CallWatcher>,
}

impl Target<'static> {
    fn none() -> Self {
        Target {
            controller: None,
            pool: None,
            instance_id: String::new(),
            instance_name: "-",
            extra_specs: None,
            proxy: None,
            watcher: None,
        }
    }
}

impl ExternalProvider {
    /// Checks the config (absolute executable with an execute bit, existing
    /// config file, non-zero limits) and takes the allow-listed part of
    /// hangard's environment as it is now.
    pub fn new(config: ExternalProviderConfig) -> Result<Self, ExternalError> {
        let parent = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Self::with_environment(config, parent)
    }

    /// Like [`ExternalProvider::new`], with `parent` standing in for
    /// hangard's environment.
    pub fn with_environment(
        config: ExternalProviderConfig,
        parent: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ExternalError> {
        if !config.executable.is_absolute() {
            return Err(ExternalError::RelativeExecutable(config.executable.clone()));
        }
        check_executable(&config.executable)?;
        check_config_file(&config.config_file)?;
        if config.max_concurrency == 0 {
            return Err(ExternalError::Zero {
                field: "max_concurrency",
            });
        }
        if config.call_timeout_secs == 0 {
            return Err(ExternalError::Zero {
                field: "call_timeout_secs",
            });
        }
        let runner = Runner {
            executable: config.executable.clone(),
            inherited_env: inherited_env(&config.environment_variables, parent),
            timeout: config.call_timeout(),
        };
        Ok(Self {
            permits: Semaphore::new(config.max_concurrency),
            runner,
            controller_id: None,
            pool_extra_specs: Mutex::new(HashMap::new()),
            pool_proxy: Mutex::new(HashMap::new()),
            config,
        })
    }

    /// The controller id sent with calls that concern no instance (version,
    /// schemas, pool validation). Without it those calls send the nil UUID.
    pub fn with_controller_id(mut self, controller_id: ControllerId) -> Self {
        self.controller_id = Some(controller_id);
        self
    }

    pub fn config(&self) -> &ExternalProviderConfig {
        &self.config
    }

    /// Tells the provider a pool's extra specs, so that get/delete/list for
    /// that pool pass them in `GARM_POOL_EXTRASPECS` as garm does (the
    /// daemon calls this for every pool at startup; creates record them
    /// too). Unknown pools get `{}`.
    pub fn remember_pool_extra_specs(
        &self,
        pool_id: PoolId,
        extra_specs: serde_json::Map<String, serde_json::Value>,
    ) {
        self.specs_cache().insert(pool_id, extra_specs);
    }

    fn specs_cache(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<PoolId, serde_json::Map<String, serde_json::Value>>>
    {
        // A panic elsewhere while holding the lock cannot leave the map
        // half-updated (single insert/get), so keep using it.
        self.pool_extra_specs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn specs_for(&self, pool: PoolId) -> Option<serde_json::Map<String, serde_json::Value>> {
        self.specs_cache().get(&pool).cloned()
    }

    fn remember_pool_proxy(&self, pool_id: PoolId, proxy: &ProxySettings) {
        self.pool_proxy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(pool_id, proxy.clone());
    }

    fn proxy_for(&self, pool: PoolId) -> Option<ProxySettings> {
        self.pool_proxy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&pool)
            .cloned()
    }

    fn instance_target<'a>(&self, r: &'a InstanceRef) -> Target<'a> {
        Target {
            controller: Some(r.controller_id),
            pool: Some(r.pool_id),
            instance_id: r
                .provider_id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| r.name.to_string()),
            instance_name: r.name.as_str(),
            extra_specs: self.specs_for(r.pool_id),
            proxy: self.proxy_for(r.pool_id),
            watcher: None,
        }
    }

    fn unsupported(&self, command: GarmCommand) -> ProviderError {
        ProviderError::Fatal(format!(
            "{command} is not part of external provider interface {}; set interface_version = \"v0.1.1\" if {} supports it",
            self.config.interface_version,
            self.config.executable.display()
        ))
    }

    fn exe_name(&self) -> String {
        self.config
            .executable
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.config.executable.display().to_string())
    }

    /// Runs `command` with garm's variables for `target`, bounded by the
    /// concurrency limit.
    async fn call(
        &self,
        command: GarmCommand,
        target: &Target<'_>,
        stdin: Option<Vec<u8>>,
        redact: Option<&str>,
    ) -> Result<Vec<u8>, CallError> {
        let specs = target.extra_specs.clone().unwrap_or_default();
        let specs_json = serde_json::to_vec(&specs).unwrap_or_else(|_| b"{}".to_vec());
        let mut env = vec![
            ("GARM_COMMAND", command.as_str().to_owned()),
            (
                "GARM_CONTROLLER_ID",
                target
                    .controller
                    .or(self.controller_id)
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| NIL_CONTROLLER.to_owned()),
            ),
            (
                "GARM_POOL_ID",
                target.pool.map(|p| p.to_string()).unwrap_or_default(),
            ),
            ("GARM_INSTANCE_ID", target.instance_id.clone()),
            (
                "GARM_PROVIDER_CONFIG_FILE",
                self.config.config_file.to_string_lossy().into_owned(),
            ),
            (
                "GARM_INTERFACE_VERSION",
                self.config.interface_version.as_str().to_owned(),
            ),
            (
                "GARM_POOL_EXTRASPECS",
                base64::engine::general_purpose::STANDARD.encode(specs_json),
            ),
        ];
        if let Some(proxy) = &target.proxy {
            env.extend(proxy_env(proxy));
        }
        // The semaphore is never closed, so acquiring only waits.
        let _permit =
            self.permits.acquire().await.map_err(|_| {
                CallError::Io(io::Error::other("provider concurrency limiter closed"))
            })?;
        let out = self
            .runner
            .run(Invocation {
                command,
                env,
                stdin,
                instance: target.instance_name,
                redact,
                watcher: target.watcher.as_ref(),
            })
            .await?;
        Ok(out.stdout)
    }

    /// What a failed call means for the caller.
    fn classify(
        &self,
        command: GarmCommand,
        instance: &str,
        err: CallError,
        redact: Option<&str>,
    ) -> ProviderError {
        let what = format!("{} {command} ({instance})", self.exe_name());
        match err {
            CallError::Spawn { ref source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) =>
            {
                ProviderError::Fatal(format!("{what}: {err}"))
            }
            CallError::Exit { code, .. } if code == EXIT_NOT_FOUND => {
                ProviderError::NotFound(format!("{what}: {err}"))
            }
            // A create keyed by a name that exists: an earlier attempt made
            // it, and the caller adopts it.
            CallError::Exit { code, .. }
                if code == EXIT_DUPLICATE && command == GarmCommand::CreateInstance =>
            {
                ProviderError::AlreadyExists(format!("{what}: duplicate instance: {err}"))
            }
            CallError::Exit { code, .. } if code == EXIT_DUPLICATE => {
                ProviderError::Fatal(format!("{what}: duplicate instance: {err}"))
            }
            CallError::Exit {
                ref stderr,
                ref stdout,
                ..
            } => {
                let fault = serde_json::from_slice::<GarmInstance>(stdout)
                    .ok()
                    .and_then(|i| i.provider_fault)
                    .and_then(|f| crate::wire::fault_text(&f))
                    .map(|f| exec::excerpt(f.as_bytes(), redact, 500));
                let msg = match &fault {
                    Some(f) => format!("{what}: {err}; provider_fault: {f}"),
                    None => format!("{what}: {err}"),
                };
                let text = format!("{stderr} {}", fault.as_deref().unwrap_or("")).to_lowercase();
                if command == GarmCommand::ValidatePoolInfo {
                    ProviderError::InvalidSpec(msg)
                } else if text.contains("quota") || text.contains("insufficient capacity") {
                    ProviderError::Quota(msg)
                } else {
                    // Providers exit 1 for everything from a lost connection to
                    // a typo; retrying with backoff is the safe reading.
                    ProviderError::Transient(msg)
                }
            }
            CallError::Spawn { .. }
            | CallError::TimedOut { .. }
            | CallError::Signal { .. }
            | CallError::Io(_)
            | CallError::NotActing(_) => ProviderError::Transient(format!("{what}: {err}")),
        }
    }

    fn bad_output(
        &self,
        command: GarmCommand,
        instance: &str,
        problem: impl std::fmt::Display,
        stdout: &[u8],
        redact: Option<&str>,
    ) -> ProviderError {
        let shown = exec::excerpt(stdout, redact, 200);
        let shown = if shown.is_empty() {
            "nothing".to_owned()
        } else {
            format!("{shown:?}")
        };
        ProviderError::Fatal(format!(
            "{} {command} ({instance}) printed {shown}, not the expected JSON: {problem}",
            self.exe_name()
        ))
    }

    fn parse_instance(
        &self,
        command: GarmCommand,
        instance: &str,
        stdout: &[u8],
        controller: Option<ControllerId>,
        pool: Option<PoolId>,
        redact: Option<&str>,
    ) -> Result<ProviderInstance, ProviderError> {
        let parsed: GarmInstance = serde_json::from_slice(stdout)
            .map_err(|e| self.bad_output(command, instance, e, stdout, redact))?;
        parsed
            .into_provider_instance(controller, pool)
            .map_err(|e| self.bad_output(command, instance, e, stdout, redact))
    }

    async fn simple_call(
        &self,
        command: GarmCommand,
        target: &Target<'_>,
    ) -> Result<Vec<u8>, ProviderError> {
        if self.config.interface_version == InterfaceVersion::V010 && !command.in_v010() {
            return Err(self.unsupported(command));
        }
        self.call(command, target, None, None)
            .await
            .map_err(|e| self.classify(command, target.instance_name, e, None))
    }

    /// `RemoveAllInstances`: deletes everything the provider tagged with
    /// `controller_id`.
    pub async fn remove_all_instances(
        &self,
        controller_id: ControllerId,
    ) -> Result<(), ProviderError> {
        let target = Target {
            controller: Some(controller_id),
            ..Target::none()
        };
        self.simple_call(GarmCommand::RemoveAllInstances, &target)
            .await
            .map(drop)
    }

    /// `StartInstance`.
    pub async fn start_instance(&self, instance: &InstanceRef) -> Result<(), ProviderError> {
        self.simple_call(GarmCommand::StartInstance, &self.instance_target(instance))
            .await
            .map(drop)
    }

    /// `StopInstance`.
    pub async fn stop_instance(&self, instance: &InstanceRef) -> Result<(), ProviderError> {
        self.simple_call(GarmCommand::StopInstance, &self.instance_target(instance))
            .await
            .map(drop)
    }

    /// `GetVersion` (v0.1.1): the provider's own version string.
    pub async fn get_version(&self) -> Result<String, ProviderError> {
        let command = GarmCommand::GetVersion;
        let out = self.simple_call(command, &Target::none()).await?;
        self.parse_version(&out)
    }

    /// `GetVersion`, where a provider answering "unknown command" (a
    /// v0.1.1 config in front of a provider that never implemented it)
    /// gives `None` rather than an error.
    pub async fn get_version_if_implemented(&self) -> Result<Option<String>, ProviderError> {
        let command = GarmCommand::GetVersion;
        if self.config.interface_version == InterfaceVersion::V010 {
            return Ok(None);
        }
        match self.call(command, &Target::none(), None, None).await {
            Ok(out) => self.parse_version(&out).map(Some),
            Err(e) if is_unknown_command(&e, command) => {
                tracing::debug!(error = %e, "provider does not implement GetVersion");
                Ok(None)
            }
            Err(e) => Err(self.classify(command, "-", e, None)),
        }
    }

    fn parse_version(&self, out: &[u8]) -> Result<String, ProviderError> {
        let command = GarmCommand::GetVersion;
        let text = String::from_utf8_lossy(out).trim().to_owned();
        // Tolerate a JSON-quoted string as well as garm's bare one.
        let text = serde_json::from_str::<String>(&text).unwrap_or(text);
        if text.is_empty() {
            return Err(self.bad_output(command, "-", "empty version", out, None));
        }
        Ok(text)
    }

    /// `GetSupportedInterfaceVersions` (v0.1.1), e.g. `["v0.1.0", "v0.1.1"]`.
    pub async fn supported_interface_versions(&self) -> Result<Vec<String>, ProviderError> {
        let command = GarmCommand::GetSupportedInterfaceVersions;
        let out = self.simple_call(command, &Target::none()).await?;
        serde_json::from_slice(&out).map_err(|e| self.bad_output(command, "-", e, &out, None))
    }

    async fn schema(&self, command: GarmCommand) -> Result<serde_json::Value, ProviderError> {
        let out = self.simple_call(command, &Target::none()).await?;
        serde_json::from_slice(&out).map_err(|e| self.bad_output(command, "-", e, &out, None))
    }

    /// `GetConfigJSONSchema` (v0.1.1): the JSON schema of the provider's
    /// config file.
    pub async fn config_json_schema(&self) -> Result<serde_json::Value, ProviderError> {
        self.schema(GarmCommand::GetConfigJSONSchema).await
    }

    /// `GetExtraSpecsJSONSchema` (v0.1.1): the JSON schema of a pool's
    /// extra specs.
    pub async fn extra_specs_json_schema(&self) -> Result<serde_json::Value, ProviderError> {
        self.schema(GarmCommand::GetExtraSpecsJSONSchema).await
    }
}

#[async_trait]
impl Provider for ExternalProvider {
    fn kind(&self) -> &'static str {
        "external"
    }

    fn jit_enabled(&self) -> bool {
        self.config.jit_enabled
    }

    fn max_concurrency(&self) -> usize {
        self.config.max_concurrency
    }

    /// The call timeout plus the kill and drain grace, so the scheduler's
    /// own deadline never fires while the provider is still being stopped.
    fn create_timeout(&self) -> Duration {
        self.config.call_timeout() + exec::TERM_GRACE + exec::PIPE_GRACE
    }

    /// The provider renders the boot script itself from the bootstrap JSON
    /// on its stdin (garm-provider-common's templates, Windows included).
    fn renders_userdata(&self) -> bool {
        false
    }

    /// Waits for a create left running by a hangard that died, then stops
    /// its process group (see [`exec::stop_orphan`]).
    async fn stop_orphaned_call(
        &self,
        process: hangar_core::provider::CallProcess,
        wait: Duration,
    ) {
        exec::stop_orphan(process, wait).await;
    }

    /// What the operator said the executable serves (`os_types`,
    /// `os_archs`; empty = any).
    fn can_boot(&self, os_type: OsType, os_arch: OsArch) -> Result<(), String> {
        let c = &self.config;
        if !c.os_types.is_empty() && !c.os_types.contains(&os_type) {
            return Err(format!(
                "os_type {} is not among this provider's os_types ({})",
                os_type.as_str(),
                c.os_types
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !c.os_archs.is_empty() && !c.os_archs.contains(&os_arch) {
            return Err(format!(
                "os_arch {} is not among this provider's os_archs ({})",
                os_arch.as_str(),
                c.os_archs
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(())
    }

    /// `ValidatePoolInfo` on v0.1.1, with the pool's extra specs in
    /// `GARM_POOL_EXTRASPECS` and its image, flavor, OS and labels as a
    /// token-less bootstrap document on stdin; v0.1.0 has no such command
    /// (garm never sends it), so every pool is accepted, and so is every
    /// pool of a v0.1.1 provider that answers "unknown command".
    #[tracing::instrument(skip_all, fields(pool.image = %spec.image, pool.flavor = %spec.flavor))]
    async fn validate_pool(&self, spec: &PoolSpec) -> Result<(), ProviderError> {
        if self.config.interface_version == InterfaceVersion::V010 {
            return Ok(());
        }
        let command = GarmCommand::ValidatePoolInfo;
        let doc = BootstrapInstance::for_validation(spec, self.config.jit_enabled);
        let stdin = serde_json::to_vec(&doc)
            .map_err(|e| ProviderError::Fatal(format!("serialising pool info: {e}")))?;
        let target = Target {
            extra_specs: Some(spec.extra_specs.clone()),
            ..Target::none()
        };
        match self.call(command, &target, Some(stdin), None).await {
            Ok(_) => Ok(()),
            Err(e) if is_unknown_command(&e, command) => {
                tracing::info!(
                    error = %e,
                    "provider does not implement ValidatePoolInfo; pool accepted unchecked"
                );
                Ok(())
            }
            Err(e) => Err(self.classify(command, "-", e, None)),
        }
    }

    #[tracing::instrument(skip_all, fields(instance.name = %req.name, pool.id = %req.pool_id))]
    async fn create_instance(
        &self,
        req: &CreateInstanceRequest,
    ) -> Result<ProviderInstance, ProviderError> {
        let command = GarmCommand::CreateInstance;
        self.remember_pool_extra_specs(req.pool_id, req.extra_specs.clone());
        self.remember_pool_proxy(req.pool_id, &req.bootstrap.proxy);
        let doc = BootstrapInstance::from_request(req, self.config.jit_enabled);
        let stdin = serde_json::to_vec(&doc)
            .map_err(|e| ProviderError::Fatal(format!("serialising bootstrap params: {e}")))?;
        let token = req.bootstrap.instance_token.expose();
        let target = Target {
            controller: Some(req.controller_id),
            pool: Some(req.pool_id),
            instance_id: req.name.to_string(),
            instance_name: req.name.as_str(),
            extra_specs: Some(req.extra_specs.clone()),
            proxy: Some(req.bootstrap.proxy.clone()),
            watcher: req.watcher.clone(),
        };
        let out = self
            .call(command, &target, Some(stdin), Some(token))
            .await
            .map_err(|e| self.classify(command, req.name.as_str(), e, Some(token)))?;
        self.parse_instance(
            command,
            req.name.as_str(),
            &out,
            Some(req.controller_id),
            Some(req.pool_id),
            Some(token),
        )
    }

    #[tracing::instrument(skip_all, fields(instance.name = %instance.name, pool.id = %instance.pool_id))]
    async fn delete_instance(&self, instance: &InstanceRef) -> Result<(), ProviderError> {
        match self
            .simple_call(GarmCommand::DeleteInstance, &self.instance_target(instance))
            .await
        {
            Ok(_) => Ok(()),
            // garm's contract: deleting what is gone is done.
            Err(ProviderError::NotFound(why)) => {
                tracing::debug!(reason = %why, "instance already gone");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(skip_all, fields(instance.name = %instance.name, pool.id = %instance.pool_id))]
    async fn get_instance(
        &self,
        instance: &InstanceRef,
    ) -> Result<ProviderInstance, ProviderError> {
        let command = GarmCommand::GetInstance;
        let target = self.instance_target(instance);
        let out = self.simple_call(command, &target).await?;
        self.parse_instance(
            command,
            instance.name.as_str(),
            &out,
            Some(instance.controller_id),
            Some(instance.pool_id),
            None,
        )
    }

    #[tracing::instrument(skip_all, fields(pool.id = %pool_id))]
    async fn list_instances(
        &self,
        controller_id: ControllerId,
        pool_id: PoolId,
    ) -> Result<Vec<ProviderInstance>, ProviderError> {
        let command = GarmCommand::ListInstances;
        let target = Target {
            controller: Some(controller_id),
            pool: Some(pool_id),
            extra_specs: self.specs_for(pool_id),
            ..Target::none()
        };
        let out = self.simple_call(command, &target).await?;
        // Go prints `null` for an empty slice.
        let parsed: Option<Vec<GarmInstance>> = serde_json::from_slice(&out)
            .map_err(|e| self.bad_output(command, "-", e, &out, None))?;
        let mut instances = Vec::new();
        for raw in parsed.unwrap_or_default() {
            let inst = raw
                .into_provider_instance(Some(controller_id), Some(pool_id))
                .map_err(|e| self.bad_output(command, "-", e, &out, None))?;
            // A provider that filters by pool tag only would hand back
            // another controller's instances; never let those through.
            if inst.controller_id != Some(controller_id) || inst.pool_id != Some(pool_id) {
                tracing::debug!(
                    instance.name = %inst.name,
                    "provider listed an instance of another pool or controller; skipped"
                );
                continue;
            }
            instances.push(inst);
        }
        Ok(instances)
    }

    /// The executable and its config file are still in place, and on
    /// v0.1.1 `GetVersion` answers (or says it is not implemented). v0.1.0
    /// has no cheap command, so it gets none.
    async fn health(&self) -> Result<(), ProviderError> {
        check_executable(&self.config.executable)
            .and_then(|()| check_config_file(&self.config.config_file))
            .map_err(|e| ProviderError::Fatal(e.to_string()))?;
        self.get_version_if_implemented().await.map(drop)
    }
}
