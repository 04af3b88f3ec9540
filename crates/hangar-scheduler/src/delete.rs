//! The delete step: the runner leaves GitHub first (so GitHub never hands a
//! job to a VM about to vanish; a busy runner is left to finish), then the
//! VM leaves the provider. [`at_provider`] is the one way a VM is deleted,
//! used as well by the create step's clean-up and the orphan sweep.

use std::sync::Arc;
use std::time::Duration;

use hangar_core::provider::InstanceRef;
use hangar_core::{
    ForgeError, ForgeTarget, Instance, InstanceName, InstanceStatus, Pool, ProviderError,
    RunnerStatus,
};
use hangar_store::{Change, StoreError};

use crate::SchedulerError;
use crate::context::Ctx;
use crate::create::forge_delay;
use crate::providers::ProviderEntry;
use crate::worker::Outcome;

/// Retries of a delete are spaced like a second failed attempt.
const DELETE_ATTEMPT: u32 = 2;

/// Failed provider deletes after which a forced delete (`runner rm
/// --force-remove-runner`) gives up on the provider and marks the
/// instance deleted; the orphan sweep reaps the VM if it still exists.
/// Every delete does so after `[scheduler] delete_attempts`.
pub const FORCED_DELETE_TRIES: u32 = 3;

/// Failed tries at removing the runner from GitHub after which a forced
/// delete goes on to the VM without it: one. Each try already holds the
/// client's own retries, and spacing three of them out made `runner rm
/// -f` of a runner stuck at an unreachable GitHub take about 48 s; the
/// sweep removes this controller's offline runners later. They count
/// towards [`FORCED_DELETE_TRIES`].
pub const FORCED_GITHUB_TRIES: u32 = 1;

/// Deletes a VM at its provider, unless the provider is backing off after
/// failures (then nothing is sent).
pub(crate) async fn at_provider(
    ctx: &Ctx,
    entry: &ProviderEntry,
    iref: &InstanceRef,
) -> Result<(), ProviderError> {
    if let Some(left) = entry.gate.remaining() {
        return Err(ProviderError::Transient(format!(
            "provider {} is backing off after failures for {} ms",
            entry.name,
            left.as_millis()
        )));
    }
    ctx.provider_call(entry, "delete", entry.provider.delete_instance(iref))
        .await
}

#[tracing::instrument(skip_all, fields(instance.name = %name, pool.id = %pool.id))]
pub(crate) async fn run(
    ctx: &Arc<Ctx>,
    name: &InstanceName,
    pool: &Pool,
) -> Result<Outcome, SchedulerError> {
    let inst = ctx.store.instance(name).await?;
    if inst.status != InstanceStatus::PendingDelete {
        return Ok(Outcome::Done);
    }
    // 1. The runner (a scale set's from the Actions service).
    let scale_set = ctx.store.scale_set_of_pool(pool.id).await?.is_some();
    match ctx.github.target(pool.entity_id).await {
        Ok(target) => match remove_runner(ctx, &inst, &target, scale_set).await? {
            Runner::Gone => {}
            Runner::Wait(stop) => return Ok(stop),
            Runner::Failed(wait, why) => {
                // GitHub's failures are tries of the delete too: once out
                // of them (at the first for a forced delete) the runner is
                // left to the sweep, which removes offline runners of this
                // controller, and the VM goes.
                let (failures, forced) = ctx.store.record_delete_failure(name).await?;
                if !hangar_core::policy::delete_gives_up(
                    failures,
                    forced,
                    ctx.config.delete_attempts,
                    FORCED_GITHUB_TRIES,
                ) {
                    return Ok(Outcome::RetryAfter(wait, why));
                }
                tracing::warn!(failures, forced, error = %why, "cannot remove the runner from GitHub; deleting the instance without it");
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "entity unavailable; deleting the instance without touching GitHub")
        }
    }

    // 2. The VM, if one may exist.
    let made = inst.create_attempts > 0 || inst.provider_id.is_some();
    let entry = if made {
        let Some(entry) = ctx.providers.get(pool.spec.provider_name.as_str()).cloned() else {
            let why = format!(
                "provider {:?} is not configured in hangard",
                pool.spec.provider_name.as_str()
            );
            return match give_up_after_tries(ctx, name, &why, true).await? {
                Tries::GaveUp(done) => Ok(done),
                Tries::Failed(n) => {
                    Ok(Outcome::RetryAfter(ctx.backoff(n.max(DELETE_ATTEMPT)), why))
                }
            };
        };
        if let Some(left) = entry.gate.remaining() {
            return Ok(Outcome::RetryAfter(
                left,
                format!("provider {} is backing off after failures", entry.name),
            ));
        }
        Some(entry)
    } else {
        None
    };
    ctx.store
        .transition(name, Change::Status(InstanceStatus::Deleting, None))
        .await?;
    if let Some(entry) = entry {
        let iref = InstanceRef {
            name: name.clone(),
            provider_id: inst.provider_id.clone(),
            controller_id: ctx.store.controller_id(),
            pool_id: pool.id,
        };
        // The gate may have closed while this step waited (another delete
        // failed): that is no attempt, and a forced delete counts attempts.
        if let Some(left) = entry.gate.remaining() {
            ctx.store
                .transition(name, Change::Status(InstanceStatus::PendingDelete, None))
                .await?;
            return Ok(Outcome::RetryAfter(
                left,
                format!("provider {} is backing off after failures", entry.name),
            ));
        }
        let deleted = ctx
            .provider_call(&entry, "delete", entry.provider.delete_instance(&iref))
            .await;
        if let Err(e) = deleted {
            let why = e.to_string();
            let failures = match give_up_after_tries(ctx, name, &why, false).await? {
                Tries::GaveUp(done) => return Ok(done),
                Tries::Failed(n) => n,
            };
            ctx.store
                .transition(
                    name,
                    Change::Status(InstanceStatus::PendingDelete, Some(&why)),
                )
                .await?;
            // Spaced further apart with each failure, up to the backoff's cap.
            return Ok(Outcome::RetryAfter(
                ctx.backoff(failures.max(DELETE_ATTEMPT)),
                why,
            ));
        }
    }
    ctx.store
        .transition(name, Change::Status(InstanceStatus::Deleted, None))
        .await?;
    tracing::info!("instance deleted");
    Ok(Outcome::Done)
}

/// How a failed provider delete was counted.
enum Tries {
    /// Failures so far; the delete is retried.
    Failed(u32),
    /// Out of tries: the instance was marked deleted.
    GaveUp(Outcome),
}

/// Counts a failed provider delete. Once out of tries
/// ([`hangar_core::policy::delete_gives_up`]: `delete_attempts`, or
/// [`FORCED_DELETE_TRIES`] for a forced delete) the instance is marked
/// deleted (through `deleting` when still `pending`) with the provider's
/// last error; the orphan sweep removes the VM if it still exists.
async fn give_up_after_tries(
    ctx: &Ctx,
    name: &InstanceName,
    why: &str,
    pending: bool,
) -> Result<Tries, SchedulerError> {
    let (failures, forced) = ctx.store.record_delete_failure(name).await?;
    if !hangar_core::policy::delete_gives_up(
        failures,
        forced,
        ctx.config.delete_attempts,
        FORCED_DELETE_TRIES,
    ) {
        return Ok(Tries::Failed(failures));
    }
    if pending {
        ctx.store
            .transition(name, Change::Status(InstanceStatus::Deleting, None))
            .await?;
    }
    let msg = format!(
        "force-removed: the provider failed to delete it {failures} times (last: {why}); the orphan sweep removes the VM if it still exists"
    );
    ctx.store
        .transition(name, Change::Status(InstanceStatus::Deleted, Some(&msg)))
        .await?;
    tracing::warn!(
        failures,
        forced,
        error = why,
        "delete out of tries: provider failures ignored, instance marked deleted"
    );
    Ok(Tries::GaveUp(Outcome::Done))
}

/// Where the runner stands after [`remove_runner`].
enum Runner {
    /// Off GitHub (or never on it): the VM may go.
    Gone,
    /// The delete must wait (a busy runner): no failure.
    Wait(Outcome),
    /// GitHub failed; try again after this long, for this reason.
    Failed(Duration, String),
}

/// Removes the instance's runner from GitHub.
async fn remove_runner(
    ctx: &Ctx,
    inst: &Instance,
    target: &ForgeTarget,
    scale_set: bool,
) -> Result<Runner, SchedulerError> {
    let retry = |e: &ForgeError, what: &str| {
        Runner::Failed(forge_delay(ctx, e, DELETE_ATTEMPT), format!("{what}: {e}"))
    };
    let runner_id = match inst.runner_id {
        Some(id) => Some(id),
        // A scale set's runner whose registration was not recorded.
        None if scale_set && inst.create_attempts > 0 => {
            match ctx
                .github
                .scale_set_runner_by_name(target, inst.name.as_str())
                .await
            {
                Ok(r) => r.map(|r| r.id),
                Err(e) => return Ok(retry(&e, "finding the scale set runner")),
            }
        }
        // Registration-token runners: find it by name.
        None if inst.create_attempts > 0 => match ctx.github.list_runners(target).await {
            Ok(rs) => rs
                .iter()
                .find(|r| r.name == inst.name.as_str())
                .map(|r| r.id),
            Err(e) => return Ok(retry(&e, "listing runners")),
        },
        None => None,
    };
    let Some(id) = runner_id else {
        return Ok(Runner::Gone);
    };
    // No fenced write precedes this call: a step that lost its pool's
    // lease while it waited removes nothing.
    ctx.fence_live()?;
    let deleted = if scale_set {
        ctx.github.scale_set_delete_runner(target, id).await
    } else {
        ctx.github.delete_runner(target, id).await
    };
    match deleted {
        Ok(()) => {
            // Gone from GitHub: whatever the VM does now, the runner is over.
            ignore_moved(
                ctx.store
                    .transition(&inst.name, Change::Runner(RunnerStatus::Terminated, None))
                    .await,
            )?;
            Ok(Runner::Gone)
        }
        Err(ForgeError::Busy(_)) => {
            // It took a job: it is active, whatever we thought.
            ignore_moved(
                ctx.store
                    .transition(&inst.name, Change::Runner(RunnerStatus::Active, None))
                    .await,
            )?;
            Ok(Runner::Wait(Outcome::RetryAfter(
                Duration::from_secs(ctx.config.busy_retry_secs),
                "runner is running a job; deleting it afterwards".into(),
            )))
        }
        Err(e) if e.is_retryable() => Ok(retry(&e, "removing runner")),
        Err(e) => {
            // Broken credentials must not keep a paid VM alive; the sweep
            // removes the registration later.
            tracing::warn!(error = %e, "cannot remove runner from GitHub; deleting the instance anyway");
            Ok(Runner::Gone)
        }
    }
}

/// A transition refused because the instance moved on meanwhile is not an
/// error: the next pass sees where it is.
pub(crate) fn ignore_moved<T>(r: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::Transition(e)) => {
            tracing::debug!(error = %e, "instance moved meanwhile");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
