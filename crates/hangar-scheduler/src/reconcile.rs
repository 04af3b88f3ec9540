//! `reconcile`: brings one pool to the state its jobs and settings ask for.
//! Level-triggered and idempotent — it reads everything it decides on from
//! the store and decides with core's policy ([`hangar_core::policy`]), so it
//! does the same whether it runs because of a webhook, a timer, a finished
//! step or a restart. It is the only place that decides what a job's
//! progress means for an instance, and it says when it wants to run again.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hangar_core::policy::{self, RetireReason, Step, StepRules};
use hangar_core::{Instance, InstanceName, InstanceStatus, Pool, PoolId};
use hangar_store::{Change, PoolDemand, PoolUsage, ScaleSetDemand};
use rand::Rng;
use rand::distributions::Alphanumeric;

use crate::SchedulerError;
use crate::context::Ctx;
use crate::delete::ignore_moved;
use crate::worker::{spawn_create, spawn_delete};

/// What one reconcile of a pool did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PoolReport {
    /// Instances reserved now (their create runs in the background).
    pub reserved: u32,
    /// Create or delete steps started (including retries).
    pub creates_started: u32,
    pub deletes_started: u32,
    /// Runners found to have taken a job.
    pub marked_active: u32,
    /// Idle runners retired because demand dropped.
    pub scaled_down: u32,
    /// Instances whose bootstrap took too long.
    pub timed_out: u32,
    /// Instances retired because their job completed or their runner failed.
    pub retired: u32,
    /// Instances given up on after too many failed creates.
    pub given_up: u32,
    /// When the pool wants to run again: the earliest retry coming due.
    pub requeue_after: Option<Duration>,
}

fn random_suffix() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(12)
        .map(|b| char::from(b).to_ascii_lowercase())
        .collect()
}

/// Reconciles one pool. Must not run twice at once for the same pool (the
/// pool queue guarantees it).
#[tracing::instrument(skip_all, fields(pool.id = %pool_id))]
pub(crate) async fn reconcile(
    ctx: &Arc<Ctx>,
    pool_id: PoolId,
) -> Result<PoolReport, SchedulerError> {
    let store = &ctx.store;
    let now = ctx.now();
    let young_after = now - chrono::Duration::from_std(ctx.config.idle_grace()).unwrap_or_default();
    let Some(state) = store.pool_state(pool_id, young_after, now).await? else {
        return Ok(PoolReport::default());
    };
    let pool = state.pool;
    let mut report = PoolReport::default();
    let mut instance_work = state.instance_work;
    if state.scale_set.is_some() {
        // What the scale set's queue said about its runners, again: a
        // runner still being created when its job completed is retired
        // now (the listener applied the rest with the message).
        let (active, retired) = store.settle_scale_set_runners(pool_id).await?;
        report.marked_active += active;
        report.retired += retired;
        instance_work |= retired > 0;
    }
    let (usage, demand, scale_set) = if instance_work {
        step_instances(ctx, &pool, now, &mut report).await?;
        // Re-read: the steps above may have changed usage.
        match store.pool_state(pool_id, young_after, now).await? {
            Some(s) => (s.usage, s.demand, s.scale_set),
            None => return Ok(report),
        }
    } else {
        (state.usage, state.demand, state.scale_set)
    };
    match scale_set {
        Some(ss) => scale_to(ctx, &pool, usage, ss, &mut report).await?,
        None => scale(ctx, &pool, usage, demand, &mut report).await?,
    }
    if report != PoolReport::default() {
        tracing::debug!(?report, "reconciled");
    }
    Ok(report)
}

/// Takes the step each instance of `pool` needs, if it is due.
async fn step_instances(
    ctx: &Arc<Ctx>,
    pool: &Pool,
    now: DateTime<Utc>,
    report: &mut PoolReport,
) -> Result<(), SchedulerError> {
    let rules = StepRules {
        bootstrap_cutoff: now
            - chrono::Duration::minutes(i64::from(pool.spec.runner_bootstrap_timeout)),
        max_create_attempts: ctx.config.create_attempts,
    };
    let mut next_due: Option<DateTime<Utc>> = None;
    for mut view in ctx
        .store
        .instances_needing_work(pool.id, rules.bootstrap_cutoff)
        .await?
    {
        if ctx.is_in_flight(&view.instance.name) {
            continue;
        }
        // Marking a runner active may leave its instance a further step
        // (e.g. a delete that waited for it); no step leads to more than
        // one more.
        for _ in 0..2 {
            let Some((step, not_before)) = policy::next_step(&view, &rules) else {
                break;
            };
            // A disabled pool starts no create, retries included: the
            // instance waits, saying so, until the pool is enabled again
            // or an operator removes it.
            if !pool.spec.enabled && matches!(step, Step::Create | Step::RetryCreate) {
                park(ctx, &view.instance).await?;
                break;
            }
            if let Some(at) = not_before.filter(|at| *at > now) {
                next_due = Some(next_due.map_or(at, |n| n.min(at)));
                break;
            }
            match take(ctx, pool, &view.instance, step, report).await? {
                Some(updated) => view.instance = updated,
                None => break,
            }
        }
    }
    report.requeue_after = next_due.map(|at| (at - now).to_std().unwrap_or_default());
    Ok(())
}

/// What a create waiting on a disabled pool says.
pub(crate) const PAUSED: &str = "pool is disabled: create paused until the pool is enabled";

/// Leaves a create of a disabled pool where it is, saying why (once).
async fn park(ctx: &Ctx, inst: &Instance) -> Result<(), SchedulerError> {
    if inst.status_message.as_deref() != Some(PAUSED) {
        tracing::info!(instance.name = %inst.name, "pool disabled; create paused");
        ctx.store.set_status_message(&inst.name, PAUSED).await?;
    }
    Ok(())
}

/// Takes one step. Returns the instance when it changed and may need
/// another.
async fn take(
    ctx: &Arc<Ctx>,
    pool: &Pool,
    inst: &Instance,
    step: Step,
    report: &mut PoolReport,
) -> Result<Option<Instance>, SchedulerError> {
    let store = &ctx.store;
    let name = &inst.name;
    match step {
        Step::MarkActive(job) => {
            let Some(updated) = ignore_moved(store.transition(name, Change::TookJob(job)).await)?
            else {
                return Ok(None);
            };
            tracing::info!(instance.name = %name, job.id = %job, "runner took a job");
            report.marked_active += 1;
            if let Ok(Some(queued)) = store.job_queued_at(job).await {
                let secs = (ctx.now() - queued).num_milliseconds().max(0) as f64 / 1000.0;
                ctx.metrics.time_to_runner_seconds.observe(secs);
            }
            return Ok(Some(updated));
        }
        Step::Retire(reason) => {
            let message = match reason {
                RetireReason::BootstrapTimeout => format!(
                    "runner not up within the bootstrap timeout of {} min",
                    pool.spec.runner_bootstrap_timeout
                ),
                other => other.message().to_owned(),
            };
            if retire(ctx, name, &message).await? {
                match reason {
                    RetireReason::BootstrapTimeout => {
                        tracing::warn!(instance.name = %name, "bootstrap timeout");
                        report.timed_out += 1;
                    }
                    _ => {
                        tracing::info!(instance.name = %name, reason = %message, "retiring instance");
                        report.retired += 1;
                    }
                }
                start_delete(ctx, name, pool, report);
            }
        }
        Step::Create => {
            if spawn_create(ctx, inst.clone(), pool.clone()) {
                report.creates_started += 1;
            }
        }
        Step::RetryCreate => {
            // Clean up whatever the failed attempt left, then create again
            // under the same name.
            if let Some(retry) = ignore_moved(
                store
                    .transition(name, Change::Status(InstanceStatus::PendingCreate, None))
                    .await,
            )? && spawn_create(ctx, retry, pool.clone())
            {
                report.creates_started += 1;
            }
        }
        Step::GiveUp => {
            let message = format!(
                "gave up after {} failed create attempts",
                inst.create_attempts
            );
            if retire(ctx, name, &message).await? {
                tracing::warn!(instance.name = %name, attempts = inst.create_attempts, "giving up on instance");
                report.given_up += 1;
                start_delete(ctx, name, pool, report);
            }
        }
        Step::Delete => start_delete(ctx, name, pool, report),
    }
    Ok(None)
}

async fn retire(ctx: &Ctx, name: &InstanceName, message: &str) -> Result<bool, SchedulerError> {
    Ok(ignore_moved(
        ctx.store
            .transition(
                name,
                Change::Status(InstanceStatus::PendingDelete, Some(message)),
            )
            .await,
    )?
    .is_some())
}

fn start_delete(ctx: &Arc<Ctx>, name: &InstanceName, pool: &Pool, report: &mut PoolReport) {
    if spawn_delete(ctx, name.clone(), pool.clone()) {
        report.deletes_started += 1;
    }
}

/// A scale set's pool: as many runners, idle and busy, as its scale set
/// wants (`desired_runners` of the last message applied), never above
/// `max_runners` (the reservation enforces it too); beyond that, idle
/// runners are retired, busy ones left to finish.
async fn scale_to(
    ctx: &Arc<Ctx>,
    pool: &Pool,
    usage: PoolUsage,
    ss: ScaleSetDemand,
    report: &mut PoolReport,
) -> Result<(), SchedulerError> {
    let desired = if pool.spec.enabled { ss.desired } else { 0 };
    if ss.serving < desired {
        let room = pool.spec.max_runners.saturating_sub(usage.live);
        reserve(ctx, pool, (desired - ss.serving).min(room), report).await?;
    } else if ss.serving > desired {
        retire_idle(ctx, pool, ss.serving - desired, report).await?;
    }
    Ok(())
}

/// Reserves `n` instances of the pool and starts their creates.
async fn reserve(
    ctx: &Arc<Ctx>,
    pool: &Pool,
    n: u32,
    report: &mut PoolReport,
) -> Result<(), SchedulerError> {
    if n == 0 {
        return Ok(());
    }
    let names = (0..n)
        .map(|_| InstanceName::generate(&pool.spec.runner_prefix, &random_suffix()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SchedulerError::Invalid(e.to_string()))?;
    let made = ctx
        .store
        .reserve_instances(pool.id, pool.spec.provider_name.as_str(), &names)
        .await?;
    report.reserved = made.len() as u32;
    for inst in made {
        tracing::info!(instance.name = %inst.name, job.id = ?inst.job_id.map(|j| j.0), "reserved instance");
        if spawn_create(ctx, inst, pool.clone()) {
            report.creates_started += 1;
        }
    }
    Ok(())
}

/// Retires up to `excess` idle runners of the pool, oldest first.
async fn retire_idle(
    ctx: &Arc<Ctx>,
    pool: &Pool,
    excess: u32,
    report: &mut PoolReport,
) -> Result<(), SchedulerError> {
    for inst in ctx.store.idle_instances(pool.id, excess).await? {
        if ctx.is_in_flight(&inst.name) {
            continue;
        }
        if retire(ctx, &inst.name, "scaled down: not needed").await? {
            tracing::info!(instance.name = %inst.name, "scaling down idle runner");
            report.scaled_down += 1;
            start_delete(ctx, &inst.name, pool, report);
        }
    }
    Ok(())
}

/// Creates or retires spare runners to match the pool's demand.
async fn scale(
    ctx: &Arc<Ctx>,
    pool: &Pool,
    usage: PoolUsage,
    demand: PoolDemand,
    report: &mut PoolReport,
) -> Result<(), SchedulerError> {
    let want = policy::spare_to_create(&pool.spec, demand.queued, demand.queued_young, usage.idle);
    let keep = policy::spare_to_keep(&pool.spec, demand.queued);
    if usage.spare < want {
        let room = pool.spec.max_runners.saturating_sub(usage.live);
        reserve(ctx, pool, (want - usage.spare).min(room), report).await?;
    } else if usage.spare > keep {
        retire_idle(ctx, pool, usage.spare - keep, report).await?;
    }
    Ok(())
}
