//! Runs the create and delete steps as background tasks, one at a time per
//! instance, and is the one place that turns a step's [`Outcome`] into what
//! happens next: a retry's time goes into the database (so it survives a
//! restart) and the pool is woken, and reconcile — which reads that time —
//! schedules the retry. No task sleeps waiting for one.

use std::sync::Arc;
use std::time::Duration;

use hangar_core::{Instance, InstanceName, InstanceStatus, Pool};
use hangar_store::{Change, StoreError};
use rand::Rng;

use crate::SchedulerError;
use crate::context::Ctx;
use crate::{create, delete};

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing left to do for now.
    Done,
    /// The create succeeded: the instance is running.
    Created,
    /// Try again after this long, for this reason (a failure).
    RetryAfter(Duration, String),
    /// Not tried: the pool or its provider is backing off. Come back after
    /// this long; no failure is counted.
    Wait(Duration, String),
    /// Retrying will not help: retire the instance, for this reason.
    GiveUp(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepKind {
    Create,
    /// Settling a create a restart interrupted: like a create, except that
    /// a failure is not the pool's (no breaker count).
    Recover,
    Delete,
}

impl StepKind {
    fn as_str(self) -> &'static str {
        match self {
            StepKind::Create => "create",
            StepKind::Recover => "recovery",
            StepKind::Delete => "delete",
        }
    }
}

/// Starts the create step of `inst` unless a step of it is under way.
pub(crate) fn spawn_create(ctx: &Arc<Ctx>, inst: Instance, pool: Pool) -> bool {
    let Some(claim) = ctx.claim(&inst.name) else {
        return false;
    };
    let c = ctx.clone();
    let fence = hangar_store::current_fence();
    ctx.tasks.spawn(hangar_store::fenced(fence, async move {
        let _claim = claim;
        // During a webhook burst only a few creates run at once, so their
        // writes do not queue ahead of intake's commits.
        let _slot = c.intake.create_slot().await;
        if !still_fenced(&c, &inst.name, "create").await {
            return;
        }
        let name = inst.name.clone();
        let outcome = create::run(&c, inst, &pool).await;
        settle(&c, &name, &pool, StepKind::Create, outcome).await;
    }));
    true
}

/// Settles an instance caught in `creating` by a restart
/// ([`create::recover`]) unless a step of it is under way.
pub(crate) fn spawn_recover(
    ctx: &Arc<Ctx>,
    inst: Instance,
    process: Option<hangar_core::provider::CallProcess>,
) -> bool {
    let Some(claim) = ctx.claim(&inst.name) else {
        return false;
    };
    let c = ctx.clone();
    let fence = hangar_store::current_fence();
    ctx.tasks.spawn(hangar_store::fenced(fence, async move {
        let _claim = claim;
        if !still_fenced(&c, &inst.name, "recovery").await {
            return;
        }
        let name = inst.name.clone();
        let pool = match c.store.pool(inst.pool_id).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(instance.name = %name, error = %e, "cannot read the pool of an interrupted create");
                return;
            }
        };
        let outcome = create::recover(&c, inst, process).await;
        settle(&c, &name, &pool, StepKind::Recover, outcome).await;
    }));
    true
}

/// Starts the delete step of `name` unless a step of it is under way.
pub(crate) fn spawn_delete(ctx: &Arc<Ctx>, name: InstanceName, pool: Pool) -> bool {
    let Some(claim) = ctx.claim(&name) else {
        return false;
    };
    let c = ctx.clone();
    let fence = hangar_store::current_fence();
    ctx.tasks.spawn(hangar_store::fenced(fence, async move {
        let _claim = claim;
        if !still_fenced(&c, &name, "delete").await {
            return;
        }
        let outcome = delete::run(&c, &name, &pool).await;
        settle(&c, &name, &pool, StepKind::Delete, outcome).await;
    }));
    true
}

/// Whether a step spawned under its pool's fence may still start: the
/// lease not lost, let go or taken since (the database asked), so a step
/// that waited for its turn after the pool moved on makes no GitHub or
/// provider call. The pool's new holder settles the instance instead
/// (`Scheduler::take_over`). A database that cannot answer does not stop
/// the step: its own writes fail, and `settle` deals with that as ever.
async fn still_fenced(ctx: &Ctx, name: &InstanceName, op: &str) -> bool {
    match ctx.check_fence().await {
        Err(StoreError::Fenced(why)) => {
            tracing::info!(instance.name = %name, reason = %why, "{op} step not started: the pool moved to another replica");
            false
        }
        _ => true,
    }
}

/// What happens after a step: the single place that records a retry's
/// time or retires an instance given up on; then the pool is woken.
///
/// A create whose end could not be written (the database full, read-only
/// or failing) leaves its instance in `creating`, which no reconcile moves:
/// the step's claim is kept and the instance is settled as after a restart
/// (adopted if the provider has it, else retried under its name) once the
/// database takes writes again, with a growing pause between tries.
pub(crate) async fn settle(
    ctx: &Arc<Ctx>,
    name: &InstanceName,
    pool: &Pool,
    kind: StepKind,
    outcome: Result<Outcome, SchedulerError>,
) {
    let (mut kind, mut outcome) = (kind, outcome);
    let mut tries = 0;
    loop {
        if settle_once(ctx, name, pool, kind, outcome).await
            || !matches!(kind, StepKind::Create | StepKind::Recover)
        {
            return;
        }
        // The pool moved to another replica: its holder settles the
        // instance (as after a restart).
        if !ctx.leases.holds(pool.id) {
            return;
        }
        tries += 1;
        let wait = ctx.backoff(tries);
        tracing::warn!(instance.name = %name, retry_in_ms = wait.as_millis() as u64, "the end of a create was not recorded; settling it again");
        // At shutdown the instance is left `creating`: a restart settles it.
        if !ctx.pause(wait).await {
            return;
        }
        // The pool moved on meanwhile (the database says so, whatever this
        // replica still believes): its new holder settles the instance.
        if matches!(ctx.check_fence().await, Err(StoreError::Fenced(_))) {
            return;
        }
        outcome = match ctx.store.instance(name).await {
            Ok(inst) if inst.status == InstanceStatus::Creating => {
                create::recover(ctx, inst, None).await
            }
            Ok(_) => {
                ctx.queue.wake(pool.id);
                return;
            }
            Err(e) => Err(e.into()),
        };
        kind = StepKind::Recover;
    }
}

/// One try of [`settle`]: whether what the step did is now recorded.
async fn settle_once(
    ctx: &Ctx,
    name: &InstanceName,
    pool: &Pool,
    kind: StepKind,
    outcome: Result<Outcome, SchedulerError>,
) -> bool {
    let op = kind.as_str();
    let outcome = match outcome {
        Ok(o) => o,
        // Nothing to record, nor may it be: the pool's new holder settles
        // the instance (`Scheduler::take_over`).
        Err(SchedulerError::Store(StoreError::Fenced(why))) => {
            tracing::info!(instance.name = %name, reason = %why, "{op} step stopped: the pool moved to another replica");
            return true;
        }
        Err(e) => {
            // The database failed under the step; come back after a pause
            // instead of spinning on it.
            let wait = ctx.backoff(1);
            tracing::error!(instance.name = %name, error = %e, retry_in_ms = wait.as_millis() as u64, "{op} step failed");
            ctx.queue
                .wake_at(pool.id, tokio::time::Instant::now() + wait);
            return false;
        }
    };
    // A step cut short by shutdown failed for no fault of the pool: its
    // retry is recorded without counting it.
    let outcome = match outcome {
        Outcome::RetryAfter(wait, why) if ctx.shutdown.is_cancelled() => {
            Outcome::Wait(wait, format!("interrupted by shutdown: {why}"))
        }
        o => o,
    };
    // Likewise a create whose provider call was not made because this
    // replica stopped acting on the pool (`Ctx::provider_call`): the
    // instance leaves `creating` as after any failure, but the pool's
    // breaker does not count it.
    let kind = match (&outcome, kind) {
        (Outcome::RetryAfter(..), StepKind::Create) if ctx.fence_live().is_err() => {
            StepKind::Recover
        }
        _ => kind,
    };
    let op = kind.as_str();
    let recorded = match &outcome {
        Outcome::Done => Ok(()),
        Outcome::Created => created(ctx, pool).await,
        Outcome::Wait(wait, why) => {
            tracing::debug!(instance.name = %name, reason = %why, retry_in_ms = wait.as_millis() as u64, "{op} waits");
            let at = ctx.now() + chrono::Duration::from_std(*wait).unwrap_or_default();
            let r = ctx.store.set_next_attempt(name, Some(at)).await;
            match r {
                // Why a create has not started is the operator's to see.
                Ok(()) if kind != StepKind::Delete => {
                    ctx.store
                        .set_status_message(name, &format!("waiting: {why}"))
                        .await
                }
                r => r,
            }
        }
        Outcome::RetryAfter(wait, why) => retry(ctx, name, pool, kind, *wait, why).await,
        Outcome::GiveUp(why) => {
            tracing::error!(instance.name = %name, error = %why, "{op} failed for good; retiring instance");
            let mut r = Ok(());
            if kind == StepKind::Create {
                r = create_failed(ctx, name, pool, why).await.map(drop);
            }
            r.and(retire(ctx, name, why).await)
        }
    };
    if let Err(StoreError::Fenced(why)) = &recorded {
        tracing::info!(instance.name = %name, reason = %why, "the outcome of a {op} is the pool's new holder's to settle");
        return true;
    }
    if let Err(e) = recorded {
        let wait = ctx.backoff(1);
        tracing::error!(instance.name = %name, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot record the outcome of a {op}");
        ctx.queue
            .wake_at(pool.id, tokio::time::Instant::now() + wait);
        return false;
    }
    ctx.queue.wake(pool.id);
    true
}

/// A create succeeded: the pool's breaker closes (its waiting creates may
/// start at once) and its provider counts it.
async fn created(ctx: &Ctx, pool: &Pool) -> Result<(), StoreError> {
    if let Some(entry) = ctx.providers.get(pool.spec.provider_name.as_str()) {
        entry.pool_succeeded(pool.id);
    }
    let was = ctx.store.pool_breaker(pool.id).await?;
    if was.consecutive_failures > 0 {
        ctx.store.close_pool_breaker(pool.id).await?;
        if was.is_open() {
            tracing::info!(pool.id = %pool.id, "pool's creates work again; breaker closed");
        }
    }
    ctx.metrics.pool_breaker(pool.id, false);
    Ok(())
}

/// A create failed (at GitHub, at the provider or before either): it counts
/// as an attempt of the instance even when the provider was never called,
/// and against the pool's breaker and, when failures span its pools, the
/// provider's gate. Returns until when the pool's breaker holds its creates
/// back, if it does.
async fn create_failed(
    ctx: &Ctx,
    name: &InstanceName,
    pool: &Pool,
    why: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
    ctx.store.count_failed_create(name, why).await?;
    if let Some(entry) = ctx.providers.get(pool.spec.provider_name.as_str())
        && entry.pool_failed(pool.id)
    {
        tracing::warn!(provider = %entry.name, "creates fail in several pools; provider backs off");
    }
    let rules = ctx.config.breaker_rules();
    let now = ctx.now();
    let jitter = rand::thread_rng().gen_range(0.5..=1.0);
    let b = ctx
        .store
        .record_pool_failure(pool.id, |old| old.after_failure(&rules, why, now, jitter))
        .await?;
    ctx.metrics.pool_create_failed(pool.id);
    ctx.metrics.pool_breaker(pool.id, b.is_open());
    if let Some(at) = b.next_attempt_at {
        tracing::warn!(pool.id = %pool.id, failures = b.consecutive_failures, next_attempt_at = %at, error = %why, "pool backs off after failed creates");
    }
    Ok(b.next_attempt_at)
}

/// Records a failed step and when to try it again. A create that reached
/// the provider leaves `creating` for `error`, from where reconcile retries
/// it. The time recorded, and logged, is when the retry can really go: the
/// step's own back-off, or later when the pool's breaker or the provider's
/// gate holds creates back until then (a retry due earlier would only be
/// turned away).
async fn retry(
    ctx: &Ctx,
    name: &InstanceName,
    pool: &Pool,
    kind: StepKind,
    wait: Duration,
    why: &str,
) -> Result<(), StoreError> {
    let op = kind.as_str();
    if kind != StepKind::Delete {
        match ctx
            .store
            .transition(name, Change::Status(InstanceStatus::Error, Some(why)))
            .await
        {
            Ok(_) | Err(StoreError::Transition(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let now = ctx.now();
    let mut at = now + chrono::Duration::from_std(wait).unwrap_or_default();
    if kind == StepKind::Create {
        if let Some(held) = create_failed(ctx, name, pool, why).await? {
            at = at.max(held);
        }
        if let Some(left) = ctx
            .providers
            .get(pool.spec.provider_name.as_str())
            .and_then(|e| e.gate.remaining())
        {
            at = at.max(now + chrono::Duration::from_std(left).unwrap_or_default());
        }
    }
    ctx.store.set_next_attempt(name, Some(at)).await?;
    let retry_in_ms = (at - now).num_milliseconds().max(0) as u64;
    tracing::warn!(instance.name = %name, error = %why, retry_in_ms, "{op} did not finish; will retry");
    Ok(())
}

/// Moves an instance given up on to `pending_delete` (through `error` when
/// its create was under way).
async fn retire(ctx: &Ctx, name: &InstanceName, why: &str) -> Result<(), StoreError> {
    let inst = ctx.store.instance(name).await?;
    if inst.status == InstanceStatus::Creating {
        ctx.store
            .transition(name, Change::Status(InstanceStatus::Error, Some(why)))
            .await?;
    }
    match ctx
        .store
        .transition(
            name,
            Change::Status(InstanceStatus::PendingDelete, Some(why)),
        )
        .await
    {
        Ok(_) | Err(StoreError::Transition(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
