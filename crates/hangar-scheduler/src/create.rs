//! The create step: registers the runner on GitHub (JIT providers), then
//! asks the provider for the VM with a boot script carrying a fresh
//! instance token. Returns how it went; [`crate::worker::settle`] decides
//! what follows.

use std::sync::Arc;

use hangar_core::forge::{JitConfig, JitRequest};
use hangar_core::policy::Admission;
use hangar_core::provider::{
    BootstrapParams, CallProcess, CallWatcher, CreateInstanceRequest, InstanceRef,
    ProviderInstanceStatus,
};
use hangar_core::userdata::{self, UserdataParams};
use hangar_core::{
    ForgeError, ForgeTarget, Instance, InstanceStatus, Pool, ProviderError, Secret, entity_web_url,
};
use hangar_store::{Change, PoolScaleSet, StoreError};
use rand::RngCore;

use crate::SchedulerError;
use crate::context::Ctx;
use crate::create_writes::CreateWrite;
use crate::delete;
use crate::providers::ProviderEntry;
use crate::worker::Outcome;

fn new_token() -> Secret {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    Secret::new(hex::encode(bytes))
}

/// How long to wait after GitHub refused: what it asked for when it said,
/// else the usual backoff.
pub(crate) fn forge_delay(ctx: &Ctx, e: &ForgeError, attempt: u32) -> std::time::Duration {
    match e {
        ForgeError::RateLimited { retry_after, .. } => *retry_after,
        _ => ctx.backoff(attempt),
    }
}

#[tracing::instrument(skip_all, fields(instance.name = %inst.name, pool.id = %pool.id))]
pub(crate) async fn run(
    ctx: &Arc<Ctx>,
    inst: Instance,
    pool: &Pool,
) -> Result<Outcome, SchedulerError> {
    // The caller's copy may predate an earlier step that has finished since
    // (the claim is held now, so this read is current): act on what is
    // stored, never on the snapshot.
    let inst = ctx.store.instance(&inst.name).await?;
    if inst.status != InstanceStatus::PendingCreate {
        return Ok(Outcome::Done);
    }
    let attempt = inst.create_attempts.max(1);
    let Some(entry) = ctx.providers.get(pool.spec.provider_name.as_str()).cloned() else {
        return Ok(Outcome::GiveUp(format!(
            "provider {:?} is not configured in hangard",
            pool.spec.provider_name.as_str()
        )));
    };
    // 0. Nothing — no registration either — while the pool's breaker or
    // the provider's gate says to wait.
    if let Some(wait) = admit(ctx, pool, &entry).await? {
        return Ok(wait);
    }
    let target = match ctx.github.target(pool.entity_id).await {
        Ok(t) => t,
        Err(e) => return Ok(Outcome::RetryAfter(ctx.backoff(attempt), e.to_string())),
    };
    tracing::debug!("create admitted");

    // 1. Register the runner on GitHub (once per instance): a scale set's
    // through the Actions service (always JIT), any other pool's through
    // the REST API when its provider boots JIT runners.
    let scale_set = ctx.store.scale_set_of_pool(pool.id).await?;
    let jit = scale_set.is_some() || entry.provider.jit_enabled();
    // The runner registered now is stored with `creating` below, in one
    // commit; a step that stops before that stores it on its own.
    let mut registered: Option<(i64, Secret)> = None;
    if inst.runner_id.is_none() {
        // No fenced write precedes the registration: a replica whose lease
        // has lapsed must not register a name the pool's new holder may be
        // registering (the step's start asked the database; this is the
        // local check, free, right before the call).
        ctx.fence_live()?;
        let r = match &scale_set {
            Some(ss) => register_scale_set_runner(ctx, &inst, ss, &target).await?,
            None if jit => register_runner(ctx, &inst, pool, &target).await?,
            None => Ok(None),
        };
        match r {
            Ok(j) => registered = j.map(|j| (j.runner_id, j.encoded_jit_config)),
            Err(stop) => return Ok(stop),
        }
    }
    tracing::debug!(registered = registered.is_some(), "create registered");

    // 2. The provider's turn (its gate may have closed meanwhile).
    if let Some(left) = entry.gate.remaining() {
        keep_registration(ctx, &inst.name, registered).await?;
        return Ok(Outcome::Wait(
            left,
            format!("provider {} is backing off after failures", entry.name),
        ));
    }
    if inst.create_attempts > 0 {
        // A retry: remove what the failed attempt may have left.
        let iref = InstanceRef {
            name: inst.name.clone(),
            provider_id: inst.provider_id.clone(),
            controller_id: ctx.store.controller_id(),
            pool_id: pool.id,
        };
        if let Err(e) = delete::at_provider(ctx, &entry, &iref).await {
            keep_registration(ctx, &inst.name, registered).await?;
            return Ok(Outcome::RetryAfter(
                ctx.backoff(attempt),
                format!("cleanup before retry: {e}"),
            ));
        }
    }

    // 3. A fresh token, then `creating` (with the runner registered for
    // it, and the scale set request it serves), committed together with
    // the other create steps' writes of the moment.
    let token = new_token();
    let begin = CreateWrite::Begin {
        name: inst.name.clone(),
        token_hash: hangar_store::hash_token(token.expose()),
        jit: registered,
        serve_scale_set_job: scale_set.is_some(),
    };
    let (inst, served) = match ctx.create_writes.write(&ctx.store, begin).await {
        Ok(w) => w,
        Err(StoreError::Transition(e)) => {
            tracing::info!(error = %e, "instance changed meanwhile; not creating");
            return Ok(Outcome::Done);
        }
        Err(e) => return Err(e.into()),
    };
    let req = match create_request(ctx, &inst, pool, &target, &entry, token, jit).await {
        Ok(r) => r,
        Err(e) => return Ok(Outcome::GiveUp(e.to_string())),
    };
    if let Some(job) = inst.job_id
        && let Ok(Some(queued)) = ctx.store.job_queued_at(job).await
    {
        let secs = (ctx.now() - queued).num_milliseconds().max(0) as f64 / 1000.0;
        ctx.metrics.time_to_create_seconds.observe(secs);
    }
    if let (Some(ss), Some(seen)) = (&scale_set, served) {
        let secs = (ctx.now() - seen).num_milliseconds().max(0) as f64 / 1000.0;
        ctx.metrics.scale_set_time_to_create(&ss.id, secs);
    }
    tracing::info!(provider = %entry.name, image = %pool.spec.image, flavor = %pool.spec.flavor, "creating instance");
    let timeout = entry.provider.create_timeout();
    let result = match tokio::time::timeout(
        timeout,
        ctx.provider_call(&entry, "create", entry.provider.create_instance(&req)),
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
            let finish = CreateWrite::Finish {
                name: inst.name.clone(),
                provider_id: created.provider_id.clone(),
                addresses: created.addresses.clone(),
            };
            ctx.create_writes.write(&ctx.store, finish).await?;
            tracing::info!(provider.id = %created.provider_id, "instance running");
            Ok(Outcome::Created)
        }
        // Creates are keyed by the instance name: one that exists was made
        // by an earlier attempt of this instance, and is adopted.
        Err(ProviderError::AlreadyExists(why)) => {
            tracing::info!(reason = %why, "instance exists at the provider; adopting it");
            adopt(ctx, &entry, &inst, pool, "create").await
        }
        Err(e) if e.is_retryable() => Ok(Outcome::RetryAfter(
            ctx.backoff(inst.create_attempts),
            e.to_string(),
        )),
        Err(e) => Ok(Outcome::GiveUp(e.to_string())),
    }
}

/// Asks the provider for an instance whose create was made (or may have
/// been made) and, when it is there and sound, records it `running`.
async fn adopt(
    ctx: &Ctx,
    entry: &ProviderEntry,
    inst: &Instance,
    pool: &Pool,
    why: &str,
) -> Result<Outcome, SchedulerError> {
    let iref = InstanceRef {
        name: inst.name.clone(),
        provider_id: inst.provider_id.clone(),
        controller_id: ctx.store.controller_id(),
        pool_id: pool.id,
    };
    let found = ctx
        .provider_call(entry, "get", entry.provider.get_instance(&iref))
        .await;
    let controller = ctx.store.controller_id();
    let problem = match found {
        // Only an instance that runs (or that the provider is still
        // bringing up) is adopted: a create cut short can leave a VM that
        // exists but never started (libvirt: defined, not running), and
        // adopting that would leave a slot with no runner until its
        // bootstrap timeout.
        Ok(pi)
            if matches!(
                pi.status,
                ProviderInstanceStatus::Running | ProviderInstanceStatus::Creating
            ) && pi.controller_id.is_none_or(|c| c == controller) =>
        {
            ctx.store
                .transition(
                    &inst.name,
                    Change::FinishCreate {
                        provider_id: &pi.provider_id,
                        addresses: &pi.addresses,
                    },
                )
                .await?;
            tracing::info!(provider.id = %pi.provider_id, "{why}: adopted the instance the provider made");
            return Ok(Outcome::Created);
        }
        Ok(pi) if pi.status == ProviderInstanceStatus::Error => format!(
            "the provider reports it failed: {}",
            pi.fault.as_deref().unwrap_or("no reason given")
        ),
        Ok(pi) if pi.controller_id.is_none_or(|c| c == controller) => {
            // Ours, but half made: remove it so the retry under the same
            // name starts clean instead of adopting it again.
            match delete::at_provider(ctx, entry, &iref).await {
                Ok(()) => format!(
                    "the provider's instance was left {:?}; deleted it before retrying",
                    pi.status
                ),
                Err(e) => format!(
                    "the provider's instance was left {:?} and could not be deleted yet: {e}",
                    pi.status
                ),
            }
        }
        Ok(_) => "the provider's instance of that name belongs to another controller".into(),
        Err(ProviderError::NotFound(_)) => "the provider has no such instance".into(),
        Err(e) => format!("cannot ask the provider: {e}"),
    };
    Ok(Outcome::RetryAfter(
        ctx.backoff(inst.create_attempts),
        format!("{why}: {problem}"),
    ))
}

/// After a restart, settles an instance caught in `creating`: first makes
/// sure the create that was under way no longer runs (an external
/// provider's process outlives hangard: it is waited for up to the
/// provider's create timeout, then stopped), then asks the provider whether
/// the instance exists and adopts it, or leaves it in `error` for the
/// usual retry under the same name. So an interrupted create is never
/// raced by a second one.
#[tracing::instrument(skip_all, fields(instance.name = %inst.name, pool.id = %inst.pool_id))]
pub(crate) async fn recover(
    ctx: &Arc<Ctx>,
    inst: Instance,
    process: Option<CallProcess>,
) -> Result<Outcome, SchedulerError> {
    let pool = ctx.store.pool(inst.pool_id).await?;
    let Some(entry) = ctx.providers.get(pool.spec.provider_name.as_str()).cloned() else {
        return Ok(Outcome::RetryAfter(
            ctx.backoff(inst.create_attempts),
            format!(
                "create interrupted by a restart; provider {:?} is not configured in hangard",
                pool.spec.provider_name.as_str()
            ),
        ));
    };
    if let Some(p) = process {
        tracing::info!(pid = p.pid, "waiting for the interrupted create's process");
        entry
            .provider
            .stop_orphaned_call(p, entry.provider.create_timeout())
            .await;
    }
    adopt(ctx, &entry, &inst, &pool, "create interrupted by a restart").await
}

/// Whether a create of `pool` may start now: `Some(Outcome::Wait)` while
/// the provider's gate is closed or the pool's breaker is open (core's
/// [`hangar_core::policy::Breaker::admission`]); once the breaker's back-off
/// is over, only the create that claims the probe goes.
async fn admit(
    ctx: &Ctx,
    pool: &Pool,
    entry: &ProviderEntry,
) -> Result<Option<Outcome>, SchedulerError> {
    if let Some(left) = entry.gate.remaining() {
        return Ok(Some(Outcome::Wait(
            left,
            format!("provider {} is backing off after failures", entry.name),
        )));
    }
    let now = ctx.now();
    let breaker = ctx.store.pool_breaker(pool.id).await?;
    ctx.metrics.pool_breaker(pool.id, breaker.is_open());
    let until = match breaker.admission(now) {
        Admission::Go => return Ok(None),
        Admission::Probe => {
            let lease = now + chrono::Duration::seconds(ctx.config.breaker_max_secs as i64);
            if ctx.store.claim_pool_probe(pool.id, now, lease).await? {
                tracing::info!(
                    failures = breaker.consecutive_failures,
                    "pool is backing off; probing with one create"
                );
                return Ok(None);
            }
            lease
        }
        Admission::Wait(at) => at,
    };
    Ok(Some(Outcome::Wait(
        (until - now).to_std().unwrap_or_default(),
        format!(
            "pool is backing off after {} failed creates (last: {})",
            breaker.consecutive_failures,
            breaker.last_error.as_deref().unwrap_or("-")
        ),
    )))
}

/// Stores the runner registered by a create step that stops before
/// `creating` (which would have stored it), so a retry does not register
/// it again.
async fn keep_registration(
    ctx: &Ctx,
    name: &hangar_core::InstanceName,
    registered: Option<(i64, Secret)>,
) -> Result<(), StoreError> {
    match registered {
        Some((id, config)) => ctx.store.set_instance_jit(name, id, &config).await,
        None => Ok(()),
    }
}

/// What registering a runner gave: its JIT config (for the caller to
/// store with `creating`), or how the create stops here.
type Registered = Result<Option<JitConfig>, Outcome>;

/// Registers a JIT runner named after the instance.
async fn register_runner(
    ctx: &Ctx,
    inst: &Instance,
    pool: &Pool,
    target: &ForgeTarget,
) -> Result<Registered, SchedulerError> {
    let attempt = inst.create_attempts.max(1);
    let stop = |e: ForgeError| -> Outcome {
        if e.is_retryable() || matches!(e, ForgeError::AlreadyExists(_)) {
            Outcome::RetryAfter(forge_delay(ctx, &e, attempt), e.to_string())
        } else {
            Outcome::GiveUp(e.to_string())
        }
    };
    let group = match ctx.github.runner_group(pool, target).await {
        Ok(g) => g,
        Err(e @ (ForgeError::NotFound(_) | ForgeError::Fatal(_))) => {
            return Ok(Err(Outcome::GiveUp(e.to_string())));
        }
        Err(e) => {
            return Ok(Err(Outcome::RetryAfter(
                forge_delay(ctx, &e, attempt),
                e.to_string(),
            )));
        }
    };
    let req = JitRequest {
        name: inst.name.to_string(),
        runner_group_id: group,
        labels: pool.runner_labels(ctx.store.controller_id()).to_vec(),
        work_folder: "_work".into(),
    };
    let mut result = ctx.github.generate_jit_config(target, &req).await;
    if let Err(ForgeError::AlreadyExists(_)) = &result {
        // An earlier attempt registered this name (its answer was lost, or
        // hangard stopped before recording it): remove that registration
        // and register afresh.
        tracing::info!(instance.name = %inst.name, "runner name already registered; replacing it");
        let runners = match ctx.github.list_runners(target).await {
            Ok(r) => r,
            Err(e) => return Ok(Err(stop(e))),
        };
        if let Some(old) = runners.iter().find(|r| r.name == inst.name.as_str())
            && let Err(e) = ctx.github.delete_runner(target, old.id).await
        {
            return Ok(Err(stop(e)));
        }
        result = ctx.github.generate_jit_config(target, &req).await;
    }
    match result {
        Ok(j) => Ok(Ok(Some(j))),
        Err(e) => Ok(Err(stop(e))),
    }
}

/// Registers a runner of the pool's scale set on the Actions service,
/// named after the instance.
async fn register_scale_set_runner(
    ctx: &Ctx,
    inst: &Instance,
    ss: &PoolScaleSet,
    target: &ForgeTarget,
) -> Result<Registered, SchedulerError> {
    let attempt = inst.create_attempts.max(1);
    let stop = |e: ForgeError| -> Outcome {
        if e.is_retryable() || matches!(e, ForgeError::AlreadyExists(_)) {
            Outcome::RetryAfter(forge_delay(ctx, &e, attempt), e.to_string())
        } else {
            Outcome::GiveUp(e.to_string())
        }
    };
    let Some(scale_set_id) = ss.github_id else {
        return Ok(Err(Outcome::RetryAfter(
            ctx.backoff(attempt),
            "the scale set does not exist on GitHub yet".into(),
        )));
    };
    let name = inst.name.as_str();
    let mut result = ctx
        .github
        .scale_set_jit_config(target, scale_set_id, name)
        .await;
    if let Err(ForgeError::AlreadyExists(_)) = &result {
        // An earlier attempt registered this name and its answer was lost:
        // replace that registration.
        tracing::info!(instance.name = %inst.name, "scale set runner name already registered; replacing it");
        match ctx.github.scale_set_runner_by_name(target, name).await {
            Ok(Some(old)) => {
                if let Err(e) = ctx.github.scale_set_delete_runner(target, old.id).await {
                    return Ok(Err(stop(e)));
                }
            }
            Ok(None) => {}
            Err(e) => return Ok(Err(stop(e))),
        }
        result = ctx
            .github
            .scale_set_jit_config(target, scale_set_id, name)
            .await;
    }
    match result {
        Ok(j) => Ok(Ok(Some(j))),
        Err(e) => Ok(Err(stop(e))),
    }
}

/// Records the process an external provider's create runs in, so a
/// restarted hangard can wait for it (see [`recover`]).
fn watcher(ctx: &Ctx, name: &hangar_core::InstanceName) -> CallWatcher {
    let store = ctx.store.clone();
    let name = name.clone();
    CallWatcher::new(move |p| {
        let (store, name) = (store.clone(), name.clone());
        tokio::spawn(async move {
            if let Err(e) = store.set_create_process(&name, p).await {
                tracing::warn!(instance.name = %name, error = %e, "cannot record the create's process");
            }
        });
    })
}

#[derive(Debug, thiserror::Error)]
#[error("cannot render the boot script: {0}")]
struct RenderError(String);

async fn create_request(
    ctx: &Ctx,
    inst: &Instance,
    pool: &Pool,
    target: &ForgeTarget,
    entry: &ProviderEntry,
    token: Secret,
    jit: bool,
) -> Result<CreateInstanceRequest, RenderError> {
    let urls = ctx.urls.get();
    let tools = ctx.github.runner_tools(pool.entity_id, target).await;
    let os = pool.spec.os_type.as_str();
    let arch = pool.spec.os_arch.github_name();
    let tool = tools
        .iter()
        .find(|t| t.os.eq_ignore_ascii_case(os) && t.architecture.eq_ignore_ascii_case(arch));
    let controller = ctx.store.controller_id();
    let labels = pool.runner_labels(controller);
    // Validated when the pool was stored; a bad value reads as none.
    let proxy = pool.spec.proxy().unwrap_or_default();
    let bootstrap = BootstrapParams {
        repo_url: entity_web_url(&target.endpoint.base_url, &target.scope),
        metadata_url: urls.metadata_url.clone(),
        callback_url: urls.callback_url.clone(),
        instance_token: token,
        jit_config_enabled: jit,
        runner_group: pool.spec.runner_group.clone(),
        tools: tools.as_ref().clone(),
        ca_cert_bundle: target.endpoint.ca_bundle.clone(),
        proxy: proxy.or(&entry.proxy),
    };
    // Providers that render their own boot script (garm's) get none.
    let script = if entry.provider.renders_userdata() {
        userdata::render(&UserdataParams {
            name: &inst.name,
            os_type: pool.spec.os_type,
            labels: &labels,
            bootstrap: &bootstrap,
            tool,
        })
        .map_err(|e| RenderError(e.to_string()))?
    } else {
        String::new()
    };
    Ok(CreateInstanceRequest {
        name: inst.name.clone(),
        controller_id: controller,
        pool_id: pool.id,
        image: pool.spec.image.clone(),
        flavor: pool.spec.flavor.clone(),
        os_type: pool.spec.os_type,
        os_arch: pool.spec.os_arch,
        labels,
        extra_specs: pool.spec.provider_extra_specs(),
        userdata: script,
        bootstrap,
        watcher: Some(watcher(ctx, &inst.name)),
    })
}
