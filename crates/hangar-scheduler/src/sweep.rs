//! The periodic sweep: everything that cannot be driven by an event because
//! the event is exactly what went missing — VMs nobody knows about, VMs a
//! provider lost, GitHub runners without an instance, jobs whose webhooks
//! never came, and old history.
//!
//! Several replicas: each sweeps the pools it holds, every action on a
//! pool's behalf under that pool's fence ([`Held`]) — its instances' status
//! changes are refused in their transaction once the lease is gone, and a
//! provider delete or runner removal that no write precedes asks the
//! database first ([`Ctx::check_fence`]). A pool whose fence refused is
//! left alone for the rest of the sweep. What spans pools (job re-checks,
//! matching unmatched jobs, history) runs on the replica that leads, under
//! the first pool's fence. On SQLite one replica holds every pool, unfenced.

use std::collections::{HashMap, HashSet};

use hangar_core::matching::{PoolCandidate, rank_pools};
use hangar_core::provider::InstanceRef;
use hangar_core::{
    ForgeError, ForgeJobStatus, InstanceName, InstanceStatus, JobStatus, RunnerStatus,
};
use std::sync::Arc;

use hangar_core::controller_label;
use hangar_core::{Pool, PoolId};
use hangar_store::{Change, InstanceFilter, PoolFence, StoreError};

use crate::SchedulerError;
use crate::context::Ctx;
use crate::delete::{at_provider, ignore_moved};

/// The label garm puts on its runners (`runner-controller-id:<id>`).
pub fn garm_controller_label(id: &str) -> String {
    format!("runner-controller-id:{id}")
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Provider instances tagged with this controller but unknown to Hangar.
    pub orphans_deleted: u32,
    /// Instances the provider no longer has.
    pub lost_instances: u32,
    /// GitHub runners with this controller's label and no live instance.
    pub stray_runners_deleted: u32,
    /// Instances whose runner vanished from GitHub (a scale set's: from
    /// the Actions service).
    pub runners_gone: u32,
    /// Long-queued jobs re-checked against GitHub, and how many were closed.
    pub jobs_rechecked: u32,
    pub jobs_closed: u32,
    /// Unmatched jobs a pool can now serve.
    pub jobs_matched: u32,
    pub history_purged: u64,
}

impl SweepReport {
    pub fn is_empty(&self) -> bool {
        *self == SweepReport::default()
    }
}

/// The pools one sweep acts on — those this replica holds when it starts,
/// each with its fence — and those whose fence has refused since.
pub(crate) struct Held {
    pools: Vec<Pool>,
    fences: HashMap<PoolId, Option<PoolFence>>,
    lost: HashSet<PoolId>,
}

impl Held {
    /// The pools this replica holds, as it knows and as the database says
    /// (one query): a pool another replica took meanwhile is not swept, so
    /// not even listed at its provider.
    async fn new(ctx: &Ctx, all: Vec<Pool>) -> Result<Self, SchedulerError> {
        let recorded: Option<HashMap<PoolId, i64>> = if ctx.leases.shared() {
            Some(
                ctx.store
                    .leases_of(ctx.leases.me())
                    .await?
                    .into_iter()
                    .collect(),
            )
        } else {
            None
        };
        let mut fences = HashMap::new();
        let mut pools = Vec::new();
        for p in all {
            let Ok(f) = ctx.leases.fence(p.id) else {
                continue;
            };
            let current = match (&recorded, &f) {
                (Some(rec), Some(f)) => rec.get(&p.id) == Some(&f.fence.token),
                _ => true,
            };
            if current {
                fences.insert(p.id, f);
                pools.push(p);
            }
        }
        Ok(Self {
            pools,
            fences,
            lost: HashSet::new(),
        })
    }

    /// Whether the sweep still acts on `pool`.
    fn holds(&self, pool: PoolId) -> bool {
        self.fences.contains_key(&pool) && !self.lost.contains(&pool)
    }

    /// Runs `work` on `pool`'s behalf under its fence; `None` when this
    /// replica does not hold the pool or the fence refused (the pool is
    /// then left alone for the rest of the sweep).
    async fn act<T>(
        &mut self,
        pool: PoolId,
        work: impl std::future::Future<Output = Result<T, SchedulerError>>,
    ) -> Result<Option<T>, SchedulerError> {
        if !self.holds(pool) {
            return Ok(None);
        }
        let fence = self.fences[&pool];
        match hangar_store::fenced(fence, work).await {
            Ok(v) => Ok(Some(v)),
            Err(SchedulerError::Store(StoreError::Fenced(why))) => {
                tracing::info!(pool.id = %pool, reason = %why, "sweep stops acting on a pool whose lease is gone");
                self.lost.insert(pool);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Runs every sweep step; a failing step is logged and the rest still run.
pub(crate) async fn sweep(ctx: &Arc<Ctx>) -> Result<SweepReport, SchedulerError> {
    let mut r = SweepReport::default();
    let mut held = Held::new(ctx, ctx.store.list_pools(None).await?).await?;
    if let Err(e) = sweep_providers(ctx, &mut held, &mut r).await {
        tracing::warn!(error = %e, "provider sweep failed");
    }
    if let Err(e) = sweep_github_runners(ctx, &mut held, &mut r).await {
        tracing::warn!(error = %e, "GitHub runner sweep failed");
    }
    if let Err(e) = sweep_scale_set_runners(ctx, &mut held, &mut r).await {
        tracing::warn!(error = %e, "scale set runner sweep failed");
    }
    // What spans pools: on the replica that leads, under its fence.
    let Ok(lead) = ctx.leases.lead_fence() else {
        return Ok(r);
    };
    hangar_store::fenced(lead, sweep_shared(ctx, r)).await
}

/// The sweep's part that spans pools: job re-checks, unmatched jobs,
/// history.
async fn sweep_shared(ctx: &Arc<Ctx>, mut r: SweepReport) -> Result<SweepReport, SchedulerError> {
    if let Err(e) = sweep_jobs(ctx, &mut r).await {
        tracing::warn!(error = %e, "job sweep failed");
    }
    ctx.check_fence().await?;
    let c = &ctx.config;
    let store = &ctx.store;
    r.history_purged += store
        .purge_deleted_instances(
            ctx.now() - chrono::Duration::hours(c.deleted_history_hours as i64),
        )
        .await?;
    r.history_purged += store
        .purge_completed_jobs(
            ctx.now() - chrono::Duration::hours(c.completed_job_history_hours as i64),
        )
        .await?;
    r.history_purged += store
        .purge_completed_scale_set_jobs(
            ctx.now() - chrono::Duration::hours(c.completed_job_history_hours as i64),
        )
        .await?;
    Ok(r)
}

/// Orphans (at the provider, not in the DB) and lost instances (in the
/// DB, not at the provider), in the pools this replica holds. Each provider
/// is asked once for those of its pools
/// ([`hangar_core::Provider::list_instances_in`]; per pool only where the
/// provider cannot list more at once), so the sweep's provider calls do not
/// grow with the number of pools.
async fn sweep_providers(
    ctx: &Arc<Ctx>,
    held: &mut Held,
    r: &mut SweepReport,
) -> Result<(), SchedulerError> {
    let store = &ctx.store;
    let controller = store.controller_id();
    let grace = chrono::Duration::seconds(ctx.config.lost_instance_grace_secs as i64);
    let garm_ids = garm_controller_ids(ctx).await?;
    let mut by_provider: HashMap<String, Vec<Pool>> = HashMap::new();
    for pool in &held.pools {
        by_provider
            .entry(pool.spec.provider_name.to_string())
            .or_default()
            .push(pool.clone());
    }
    for (provider, pools) in by_provider {
        let Some(entry) = ctx.providers.get(&provider).cloned() else {
            continue;
        };
        if entry.gate.remaining().is_some() {
            // Backing off after failures: asked again next sweep.
            continue;
        }
        // Snapshot the DB first: an instance created after this point
        // is absent from it but present at the provider, and must not be
        // mistaken for an orphan — so only names the DB never had, or
        // has as deleted, count.
        let mut known: HashMap<InstanceName, hangar_core::Instance> = HashMap::new();
        for pool in &pools {
            known.extend(
                store
                    .list_instances(&InstanceFilter {
                        pool_id: Some(pool.id),
                        include_deleted: true,
                        ..Default::default()
                    })
                    .await?
                    .into_iter()
                    .map(|i| (i.name.clone(), i)),
            );
        }
        let pool_ids: Vec<PoolId> = pools.iter().map(|p| p.id).collect();
        // Under the provider's permits like every other call, so a create
        // or delete that passed its fence check never waits behind a list
        // inside the provider for a permit (a replica frozen meanwhile
        // would make that call after its lease lapsed).
        let listed = match listing(
            &entry,
            entry.provider.list_instances_in(controller, &pool_ids),
        )
        .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(provider = %entry.name, error = %e, "cannot list instances");
                continue;
            }
        };
        let listed_names: HashSet<String> = listed.iter().map(|p| p.name.clone()).collect();
        for pi in &listed {
            let Ok(name) = InstanceName::parse(&pi.name) else {
                continue;
            };
            let Some(pool_id) = pi.pool_id.filter(|p| pool_ids.contains(p)) else {
                continue;
            };
            let orphan = match known.get(&name) {
                None => store.instance(&name).await.is_err(),
                Some(i) => i.status == InstanceStatus::Deleted,
            };
            if orphan {
                let iref = InstanceRef {
                    name,
                    provider_id: Some(pi.provider_id.clone()),
                    controller_id: controller,
                    pool_id,
                };
                let entry = &entry;
                let deleted = held
                    .act(pool_id, async move {
                        // No write precedes the delete: the lease is asked.
                        ctx.check_fence().await?;
                        tracing::warn!(instance.name = %iref.name, provider = %entry.name, "deleting orphan instance");
                        Ok(at_provider(ctx, entry, &iref).await)
                    })
                    .await?;
                match deleted {
                    Some(Ok(())) => r.orphans_deleted += 1,
                    Some(Err(e)) => tracing::warn!(error = %e, "cannot delete orphan"),
                    None => {}
                }
            }
        }
        for pool in &pools {
            reap_garm_vms(ctx, held, &entry, pool, &garm_ids, r).await?;
        }
        for inst in known.values() {
            if inst.status == InstanceStatus::Running
                && !listed_names.contains(inst.name.as_str())
                && ctx.now() - inst.updated_at > grace
                && !ctx.is_in_flight(&inst.name)
            {
                let lost = held
                    .act(inst.pool_id, async {
                        tracing::warn!(instance.name = %inst.name, "provider lost the instance");
                        ignore_moved(
                            store
                                .transition(
                                    &inst.name,
                                    Change::Status(
                                        InstanceStatus::Error,
                                        Some("lost by the provider"),
                                    ),
                                )
                                .await,
                        )?;
                        ignore_moved(
                            store
                                .transition(
                                    &inst.name,
                                    Change::Status(InstanceStatus::PendingDelete, None),
                                )
                                .await,
                        )?;
                        Ok(())
                    })
                    .await?;
                if lost.is_some() {
                    r.lost_instances += 1;
                    ctx.queue.wake(inst.pool_id);
                }
            }
        }
    }
    Ok(())
}

/// The controller ids of garm deployments moved over (`import-garm`).
async fn garm_controller_ids(ctx: &Ctx) -> Result<Vec<String>, SchedulerError> {
    let info = ctx.store.controller_info().await?;
    let mut ids: Vec<String> = info.garm_controller_ids;
    if let Some(id) = info.garm_controller_id {
        let id = id.to_string();
        if !ids.iter().any(|i| i.eq_ignore_ascii_case(&id)) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// VMs a garm deployment moved over left in one of its pools (the importer
/// keeps garm's pool ids): garm no longer runs, so once GitHub no longer
/// lists their runner as busy they are orphans. Nothing is deleted while
/// GitHub cannot be asked, nor once the pool's lease is gone.
async fn reap_garm_vms(
    ctx: &Arc<Ctx>,
    held: &mut Held,
    entry: &crate::providers::ProviderEntry,
    pool: &Pool,
    garm_ids: &[String],
    r: &mut SweepReport,
) -> Result<(), SchedulerError> {
    for garm in garm_ids {
        let Ok(controller) = garm.parse::<hangar_core::ControllerId>() else {
            continue;
        };
        if !held.holds(pool.id) {
            return Ok(());
        }
        let listed = match listing(entry, entry.provider.list_instances(controller, pool.id)).await
        {
            Ok(l) if !l.is_empty() => l,
            _ => continue,
        };
        let busy: HashSet<String> = match ctx.github.target(pool.entity_id).await {
            Ok(target) => match ctx.github.list_runners(&target).await {
                Ok(rs) => rs
                    .into_iter()
                    .filter(|rn| rn.busy)
                    .map(|rn| rn.name)
                    .collect(),
                Err(_) => continue,
            },
            Err(_) => continue,
        };
        for pi in listed.iter().filter(|pi| !busy.contains(&pi.name)) {
            let Ok(name) = InstanceName::parse(&pi.name) else {
                continue;
            };
            let iref = InstanceRef {
                name,
                provider_id: Some(pi.provider_id.clone()),
                controller_id: controller,
                pool_id: pool.id,
            };
            let deleted = held
                .act(pool.id, async {
                    ctx.check_fence().await?;
                    tracing::warn!(instance.name = %iref.name, garm.controller = %garm, "deleting a VM the garm deployment left");
                    Ok(at_provider(ctx, entry, &iref).await)
                })
                .await?;
            match deleted {
                Some(Ok(())) => r.orphans_deleted += 1,
                Some(Err(e)) => tracing::warn!(error = %e, "cannot delete a garm VM"),
                None => return Ok(()),
            }
        }
    }
    Ok(())
}

/// Runners of ours GitHub lists without an instance, and instances whose
/// runner GitHub no longer lists: for each entity with a pool this replica
/// holds. A stray runner is removed on behalf of the pool its instance was
/// in (the entity's first pool when the store never had it or forgot it),
/// so each has exactly one replica that may remove it; instances are
/// retired only in pools held here.
async fn sweep_github_runners(
    ctx: &Arc<Ctx>,
    held: &mut Held,
    r: &mut SweepReport,
) -> Result<(), SchedulerError> {
    let store = &ctx.store;
    // Ours, and those of a garm deployment moved over (`import-garm`):
    // garm no longer runs, so its idle runners are strays too.
    let mut labels = vec![controller_label(store.controller_id())];
    labels.extend(
        garm_controller_ids(ctx)
            .await?
            .iter()
            .map(|id| garm_controller_label(id)),
    );
    let pools = store.list_pools(None).await?;
    let scale_set_pools = store.scale_set_pool_ids().await?;
    let entities: HashSet<_> = held.pools.iter().map(|p| p.entity_id).collect();
    let live = store.list_instances(&InstanceFilter::default()).await?;
    for entity in entities {
        // Every pool of the entity, held here or not: a runner of a pool
        // another replica holds is no stray.
        let entity_pools: HashSet<PoolId> = pools
            .iter()
            .filter(|p| p.entity_id == entity)
            .map(|p| p.id)
            .collect();
        if !entity_pools.iter().any(|p| held.holds(*p)) {
            continue;
        }
        let Some(first_pool) = entity_pools.iter().min().copied() else {
            continue;
        };
        let target = match ctx.github.target(entity).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(entity.id = %entity, error = %e, "cannot load entity");
                continue;
            }
        };
        let runners = match ctx.github.list_runners(&target).await {
            Ok(rs) => rs,
            Err(e) => {
                tracing::warn!(entity.id = %entity, error = %e, "cannot list runners");
                continue;
            }
        };
        let mine: Vec<_> = runners
            .iter()
            .filter(|rn| {
                rn.labels
                    .iter()
                    .any(|l| labels.iter().any(|m| l.eq_ignore_ascii_case(m)))
            })
            .collect();
        let live_names: HashSet<&str> = live
            .iter()
            .filter(|i| entity_pools.contains(&i.pool_id))
            .map(|i| i.name.as_str())
            .collect();
        for rn in &mine {
            if live_names.contains(rn.name.as_str()) || rn.busy {
                continue;
            }
            // Asked again: an instance reserved since the snapshot above
            // registers its runner before it is listed as live there.
            let owner = match InstanceName::parse(&rn.name) {
                Ok(name) => match store.instance(&name).await {
                    Ok(i) if i.status != InstanceStatus::Deleted => continue,
                    Ok(i) => i.pool_id,
                    Err(StoreError::NotFound(_)) => first_pool,
                    Err(e) => return Err(e.into()),
                },
                Err(_) => first_pool,
            };
            let removed = held
                .act(owner, async {
                    // No write precedes the removal: the lease is asked.
                    ctx.check_fence().await?;
                    tracing::warn!(runner.name = %rn.name, "removing stray runner");
                    Ok(ctx.github.delete_runner(&target, rn.id).await)
                })
                .await?;
            match removed {
                Some(Ok(())) => r.stray_runners_deleted += 1,
                Some(Err(e)) => tracing::warn!(error = %e, "cannot remove stray runner"),
                None => {}
            }
        }
        let registered: HashSet<i64> = runners.iter().map(|rn| rn.id).collect();
        for inst in live.iter().filter(|i| entity_pools.contains(&i.pool_id)) {
            // A scale set's runners are the Actions service's, not this
            // listing's: `sweep_scale_set_runners` asks the service.
            if scale_set_pools.contains(&inst.pool_id) {
                continue;
            }
            let Some(id) = inst.runner_id else { continue };
            let settled = matches!(
                inst.runner_status,
                RunnerStatus::Idle | RunnerStatus::Active
            );
            if inst.status == InstanceStatus::Running
                && settled
                && !registered.contains(&id)
                && !ctx.is_in_flight(&inst.name)
            {
                // An ephemeral runner leaves GitHub after its job.
                let retired = held
                    .act(inst.pool_id, async {
                        tracing::info!(instance.name = %inst.name, "runner gone from GitHub; retiring instance");
                        Ok(ignore_moved(
                            store
                                .transition(
                                    &inst.name,
                                    Change::Status(
                                        InstanceStatus::PendingDelete,
                                        Some("runner gone from GitHub"),
                                    ),
                                )
                                .await,
                        )?)
                    })
                    .await?;
                if retired.is_some() {
                    r.runners_gone += 1;
                    ctx.queue.wake(inst.pool_id);
                }
            }
        }
    }
    Ok(())
}

/// Scale set runners the Actions service no longer has: the runner the
/// instance registered (its JIT config) was removed there — it ran its job
/// and left while no `JobCompleted` reached us, or it was deleted — so the
/// instance serves nothing and only blocks a replacement that would take
/// the scale set's waiting jobs (they are assigned to the scale set, not
/// to a runner). Its VM the provider lost is `sweep_providers`' and a
/// runner that never comes up is the bootstrap timeout's, as in any pool.
///
/// One `GET …/agents?agentName=` per running instance, each at most once
/// per `lost_instance_grace_secs`, and only once the instance has been
/// unchanged that long (a runner is registered before its VM is asked
/// for, so a young one is never mistaken for a lost one).
async fn sweep_scale_set_runners(
    ctx: &Arc<Ctx>,
    held: &mut Held,
    r: &mut SweepReport,
) -> Result<(), SchedulerError> {
    if ctx.github.actions().is_none() {
        return Ok(());
    }
    let store = &ctx.store;
    let grace = chrono::Duration::seconds(ctx.config.lost_instance_grace_secs as i64);
    let now = ctx.now();
    let mut live_names = HashSet::new();
    for ss in store.listened_scale_sets().await? {
        // Scale sets whose pool another replica holds are its to sweep.
        if !held.holds(ss.pool_id) {
            continue;
        }
        let insts = store
            .list_instances(&InstanceFilter {
                pool_id: Some(ss.pool_id),
                ..Default::default()
            })
            .await?;
        live_names.extend(insts.iter().map(|i| i.name.clone()));
        let due: Vec<&hangar_core::Instance> = insts
            .iter()
            .filter(|i| {
                i.status == InstanceStatus::Running
                    && !matches!(
                        i.runner_status,
                        RunnerStatus::Terminated | RunnerStatus::Failed
                    )
                    && now - i.updated_at > grace
                    && !ctx.is_in_flight(&i.name)
            })
            .filter(|i| {
                let checks = ctx
                    .scale_set_runner_checks
                    .lock()
                    .expect("scale set runner checks");
                checks.get(&i.name).is_none_or(|at| now - *at > grace)
            })
            .collect();
        if due.is_empty() {
            continue;
        }
        let target = match ctx.github.target(ss.entity_id).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(entity.id = %ss.entity_id, error = %e, "cannot load entity");
                continue;
            }
        };
        for inst in due {
            if !held.holds(ss.pool_id) {
                break;
            }
            let found = ctx
                .github
                .scale_set_runner_by_name(&target, inst.name.as_str())
                .await;
            match found {
                Ok(Some(_)) => {}
                Ok(None) => {
                    // Asked while the instance may have moved on (the
                    // listener retired it): the transition tables decide.
                    let retired = held
                        .act(ss.pool_id, async {
                            tracing::warn!(instance.name = %inst.name, scale_set.id = %ss.id, "runner gone from the Actions service; retiring instance");
                            Ok(ignore_moved(
                                store
                                    .transition(
                                        &inst.name,
                                        Change::Status(
                                            InstanceStatus::PendingDelete,
                                            Some("runner gone from the Actions service"),
                                        ),
                                    )
                                    .await,
                            )?)
                        })
                        .await?;
                    if let Some(Some(_)) = retired {
                        r.runners_gone += 1;
                        ctx.queue.wake(inst.pool_id);
                    }
                }
                Err(e) => {
                    // Asked again next sweep; the rest of this scale set too.
                    tracing::warn!(scale_set.id = %ss.id, error = %e, "cannot ask the Actions service for a runner");
                    break;
                }
            }
            ctx.scale_set_runner_checks
                .lock()
                .expect("scale set runner checks")
                .insert(inst.name.clone(), now);
        }
    }
    ctx.scale_set_runner_checks
        .lock()
        .expect("scale set runner checks")
        .retain(|name, _| live_names.contains(name));
    Ok(())
}

/// When a job queued since `queued_at` is next re-checked, after one at
/// `now`: spaced by its age (so the spacing doubles from `first` per
/// re-check), never less than `first` nor more than `max`.
pub(crate) fn next_recheck(
    queued_at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    first: chrono::Duration,
    max: chrono::Duration,
) -> chrono::DateTime<chrono::Utc> {
    let age = now - queued_at;
    now + age.clamp(first, max.max(first))
}

/// Re-checks long-queued jobs and matches unmatched ones to new pools.
///
/// A sweep re-checks at most `job_recheck_batch` jobs, the most overdue
/// first, each a background call within the credentials' background
/// budget; a job's next re-check is spaced by its age, so a queue that does
/// not move costs fewer calls the longer it waits, not more the longer it
/// is.
async fn sweep_jobs(ctx: &Arc<Ctx>, r: &mut SweepReport) -> Result<(), SchedulerError> {
    let store = &ctx.store;
    let first = chrono::Duration::seconds(ctx.config.job_recheck_after_secs.max(1) as i64);
    let max = chrono::Duration::seconds(ctx.config.job_recheck_max_secs as i64);
    let now = ctx.now();
    let mut deferred: HashSet<String> = HashSet::new();
    for job in store
        .due_rechecks(now, first, ctx.config.job_recheck_batch)
        .await?
    {
        let target = match ctx.github.target(job.entity_id).await {
            Ok(t) => t,
            Err(_) => continue,
        };
        if deferred.contains(target.credentials.name.as_str()) {
            continue;
        }
        // The replica that leads asks GitHub only while it does.
        ctx.check_fence().await?;
        let got = ctx
            .github
            .recheck_job(&target, &job.repository, job.id)
            .await;
        match got {
            Ok(None) => {
                r.jobs_rechecked += 1;
                store
                    .advance_job(job.id, job.run_attempt, JobStatus::Completed, Some("gone"))
                    .await?;
                r.jobs_closed += 1;
            }
            Ok(Some(fj)) => {
                r.jobs_rechecked += 1;
                match fj.status {
                    ForgeJobStatus::Completed => {
                        store
                            .advance_job(
                                job.id,
                                job.run_attempt,
                                JobStatus::Completed,
                                fj.conclusion.as_deref(),
                            )
                            .await?;
                        r.jobs_closed += 1;
                    }
                    ForgeJobStatus::InProgress => {
                        store
                            .advance_job(job.id, job.run_attempt, JobStatus::InProgress, None)
                            .await?;
                    }
                    // Still waiting for a runner: reconcile counts it.
                    _ => {}
                }
            }
            Err(ForgeError::RateLimited { .. }) => {
                // Budget spent or runner calls first: the rest of these
                // credentials' jobs wait for the next sweep.
                deferred.insert(target.credentials.name.to_string());
                continue;
            }
            Err(e) => {
                tracing::warn!(job.id = %job.id, error = %e, "cannot re-check job");
                continue;
            }
        }
        let next = next_recheck(job.created_at, ctx.now(), first, max);
        store
            .mark_job_checked(job.id, job.run_attempt, next)
            .await?;
        if let Some(p) = job.pool_id {
            ctx.queue.wake(p);
        }
    }

    let unmatched = store.unmatched_queued_jobs(500).await?;
    if !unmatched.is_empty() {
        ctx.check_fence().await?;
        let pools = crate::recover::webhook_pools(store).await?;
        let usage: HashMap<_, _> = store.pool_usage().await?.into_iter().collect();
        for job in unmatched {
            let cands: Vec<PoolCandidate<'_>> = pools
                .iter()
                .filter(|p| p.entity_id == job.entity_id)
                .map(|p| PoolCandidate {
                    id: p.id,
                    tags: &p.spec.tags,
                    priority: p.spec.priority,
                    enabled: p.spec.enabled,
                    busy: usage.get(&p.id).map(|u| u.live).unwrap_or(0),
                })
                .collect();
            if let Some(pool) = rank_pools(&job.labels, &cands).into_iter().next()
                && store.assign_job_pool(job.id, job.run_attempt, pool).await?
            {
                r.jobs_matched += 1;
                ctx.queue.wake(pool);
            }
        }
    }
    Ok(())
}

/// A provider list call, holding one of the provider's permits (see
/// `Ctx::provider_call`, which the sweep's reads do not go through: they
/// are not fenced and do not count for the gate).
async fn listing<T>(
    entry: &crate::providers::ProviderEntry,
    call: impl std::future::Future<Output = Result<T, hangar_core::ProviderError>>,
) -> Result<T, hangar_core::ProviderError> {
    let _permit =
        entry.permits.acquire().await.map_err(|_| {
            hangar_core::ProviderError::Transient("hangard is shutting down".into())
        })?;
    call.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recheck_spacing_doubles_with_age_up_to_the_cap() {
        let t0 = chrono::Utc::now();
        let first = chrono::Duration::seconds(300);
        let max = chrono::Duration::seconds(3600);
        let mut now = t0 + first;
        let mut gaps = Vec::new();
        for _ in 0..6 {
            let next = next_recheck(t0, now, first, max);
            gaps.push((next - now).num_seconds());
            now = next;
        }
        assert_eq!(gaps, vec![300, 600, 1200, 2400, 3600, 3600]);
        // A job re-checked before it is `first` old still waits `first`.
        assert_eq!((next_recheck(t0, t0, first, max) - t0).num_seconds(), 300);
    }
}
