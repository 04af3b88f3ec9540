//! Lost-delivery recovery: jobs whose `queued` delivery never reached
//! Hangar (it was down or unreachable, or GitHub dropped the delivery) are
//! found two ways, after a start and then periodically.
//!
//! 1. *Redelivery.* For every hook that points at this Hangar (an entity's,
//!    found by its URL when Hangar did not make it, or a GitHub App's), the
//!    deliveries newer than the last one looked at are listed, and every
//!    `workflow_job` delivery whose latest attempt failed and which never
//!    succeeded is redelivered — once per pass at most, a bounded number of
//!    times in all. The redelivery goes through the webhook route like any
//!    delivery.
//! 2. *Queued runs.* For repositories, the queued workflow runs are listed,
//!    then the jobs of runs not listed recently; queued jobs Hangar never
//!    recorded go through intake as a `queued` delivery would.
//!
//! Both are idempotent with normal deliveries: jobs are keyed by id and
//! attempt and their status only moves forward. Every call is a background
//! call ([`crate::github`]): within its own budget per set of credentials
//! and only while runner calls leave a slot free.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hangar_core::forge::{ForgeDelivery, HookRef};
use hangar_core::matching::{PoolCandidate, rank_pools};
use hangar_core::{
    EntityId, EntityScope, ForgeError, ForgeJobStatus, ForgeTarget, JobAction, JobId, Labels,
};
use hangar_store::{DeliveryCursor, JobEvent, JobOutcome};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::RecoveryConfig;
use crate::{Scheduler, SchedulerError, intake};

/// Deliveries per page (GitHub's maximum).
const PER_PAGE: u32 = 100;
/// A source whose hook cannot be read (no hook scope) is asked again after
/// this.
const UNAVAILABLE_FOR: Duration = Duration::from_secs(3600);
/// An entity with no hook pointing here is looked at again after this (the
/// operator may install one).
const NO_HOOK_FOR: Duration = Duration::from_secs(600);

/// What recovery remembers between passes (the cursors are in the store).
#[derive(Debug)]
pub(crate) struct RecoveryState {
    next_redelivery: Instant,
    next_runs: Instant,
    guids: HashMap<String, GuidMemory>,
    /// Queued runs listed, and when.
    runs: HashMap<(EntityId, i64), Instant>,
    /// Sources whose hook could not be used, until when.
    unavailable: HashMap<String, Instant>,
    /// Where each pass starts in the entity list, so a budget that runs
    /// out part-way does not always leave out the same entities.
    rotation: usize,
}

/// One delivery (guid) as recovery knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GuidMemory {
    succeeded: bool,
    redeliveries: u32,
    last_redelivery: Option<Instant>,
    seen: Instant,
}

impl RecoveryState {
    pub(crate) fn new(now: Instant, config: &RecoveryConfig) -> Self {
        let first = now + Duration::from_secs(config.start_delay_secs);
        Self {
            next_redelivery: first,
            next_runs: first,
            guids: HashMap::new(),
            runs: HashMap::new(),
            unavailable: HashMap::new(),
            rotation: 0,
        }
    }

    fn next_due(&self) -> Instant {
        self.next_redelivery.min(self.next_runs)
    }

    /// Makes both paths due at `now` (a step run by hand).
    pub(crate) fn due_now(&mut self, now: Instant) {
        self.next_redelivery = now;
        self.next_runs = now;
    }
}

/// What one recovery step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Deliveries GitHub was asked to redeliver.
    pub redelivered: u32,
    /// Jobs recorded from the queued-runs listing.
    pub recovered_from_runs: u32,
    /// Sources (hooks, repositories) skipped: budget spent, hook missing,
    /// GitHub refusing.
    pub skipped: u32,
}

impl RecoveryReport {
    pub fn is_empty(&self) -> bool {
        *self == RecoveryReport::default()
    }
}

/// The recovery loop: a step after `start_delay_secs`, then whenever a path
/// is due, until `cancel`.
pub(crate) async fn run(scheduler: Scheduler, cancel: CancellationToken) {
    loop {
        let due = scheduler.recovery.lock().await.next_due();
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(due) => {}
        }
        let mut state = scheduler.recovery.lock().await;
        // Several replicas: one runs it (the first pool's holder), under
        // that pool's fence; the others skip their turn.
        let Ok(lead) = scheduler.ctx.leases.lead_fence() else {
            let now = Instant::now();
            state.next_redelivery = state.next_redelivery.max(now + config_interval(&scheduler));
            state.next_runs = state.next_runs.max(now + config_interval(&scheduler));
            continue;
        };
        let stepped =
            hangar_store::fenced(lead, step(&scheduler, &mut state, Instant::now())).await;
        match stepped {
            Ok(r) if r.is_empty() => {}
            Ok(r) => tracing::info!(?r, "lost-delivery recovery"),
            Err(e) => tracing::warn!(error = %e, "lost-delivery recovery failed"),
        }
    }
}

/// How long a replica that does not lead waits before it looks again.
fn config_interval(scheduler: &Scheduler) -> Duration {
    scheduler.ctx.config.lease_ttl()
}

/// Runs whichever path is due at `now`, under the fence of the replica
/// that leads (none on SQLite): the lease is asked before every GitHub call
/// and every write on recovery's behalf (intake's commit, the cursors,
/// which check it in their transaction too), so a replica that no longer
/// leads stops at its next call with [`hangar_store::StoreError::Fenced`].
pub(crate) async fn step(
    scheduler: &Scheduler,
    state: &mut RecoveryState,
    now: Instant,
) -> Result<RecoveryReport, SchedulerError> {
    let config = &scheduler.ctx.config.recovery;
    let mut report = RecoveryReport::default();
    if now >= state.next_redelivery {
        state.next_redelivery = now + config.redelivery_interval();
        redelivery_pass(scheduler, state, now, &mut report).await?;
    }
    if now >= state.next_runs {
        state.next_runs = now + config.queued_runs_interval();
        queued_runs_pass(scheduler, state, now, &mut report).await?;
    }
    let keep = Duration::from_secs(config.lookback_secs.max(3600)) * 2;
    state
        .guids
        .retain(|_, g| now.saturating_duration_since(g.seen) < keep);
    state.unavailable.retain(|_, until| *until > now);
    Ok(report)
}

/// Whether a hook URL points at this Hangar: the entity's own webhook URL,
/// or the shared hook (`<base>`, `<base>/`, `<base>/<controller id>`, as
/// garm made them).
pub(crate) fn points_here(
    hook_url: &str,
    webhook_base: &str,
    entity: EntityId,
    controller_ids: &[String],
) -> bool {
    let url = hook_url.trim_end_matches('/');
    let base = webhook_base.trim_end_matches('/');
    if url == base {
        return true;
    }
    let Some(rest) = url.strip_prefix(base).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    rest.eq_ignore_ascii_case(&entity.to_string())
        || controller_ids.iter().any(|c| rest.eq_ignore_ascii_case(c))
}

fn rotate<T>(items: &mut [T], by: usize) {
    if !items.is_empty() {
        let n = by % items.len();
        items.rotate_left(n);
    }
}

fn succeeded(status_code: i64) -> bool {
    (200..300).contains(&status_code)
}

/// The redelivery rule. From the attempts listed (any order), remembers
/// which guids succeeded and returns the latest attempt of each
/// `workflow_job` delivery to redeliver: its latest attempt failed, no
/// attempt ever succeeded, it is younger than `oldest`, it was not
/// redelivered within `period`, and fewer than `max` times in all.
pub(crate) fn choose_redeliveries(
    listed: &[ForgeDelivery],
    memory: &mut HashMap<String, GuidMemory>,
    now: Instant,
    oldest: DateTime<Utc>,
    period: Duration,
    max: u32,
) -> Vec<ForgeDelivery> {
    let mut latest: HashMap<&str, &ForgeDelivery> = HashMap::new();
    for d in listed {
        let m = memory.entry(d.guid.clone()).or_insert(GuidMemory {
            succeeded: false,
            redeliveries: 0,
            last_redelivery: None,
            seen: now,
        });
        m.seen = now;
        if succeeded(d.status_code) {
            m.succeeded = true;
        }
        let e = latest.entry(d.guid.as_str()).or_insert(d);
        if d.id > e.id {
            *e = d;
        }
    }
    let mut out: Vec<ForgeDelivery> = latest
        .into_values()
        .filter(|d| d.event == "workflow_job" && !succeeded(d.status_code))
        .filter(|d| d.delivered_at >= oldest)
        .filter(|d| {
            let m = &memory[&d.guid];
            !m.succeeded
                && m.redeliveries < max
                && m.last_redelivery
                    .is_none_or(|at| now.saturating_duration_since(at) >= period)
        })
        .cloned()
        .collect();
    // Oldest first: a job's `queued` before its `completed`.
    out.sort_by_key(|d| d.id);
    out
}

async fn redelivery_pass(
    scheduler: &Scheduler,
    state: &mut RecoveryState,
    now: Instant,
    report: &mut RecoveryReport,
) -> Result<(), SchedulerError> {
    let ctx = &scheduler.ctx;
    let store = &ctx.store;
    // A scale set's pool gets its jobs from the scale set's queue, never
    // from a webhook: recovery neither serves it nor matches jobs to it.
    let pools = webhook_pools(store).await?;
    let served: HashSet<EntityId> = pools.iter().map(|p| p.entity_id).collect();
    let mut entities = store.list_entities(None).await?;
    rotate(&mut entities, state.rotation);
    let webhook_base = ctx.urls.get().webhook_base_url;
    let mut controller_ids = vec![store.controller_id().to_string()];
    let info = store.controller_info().await?;
    controller_ids.extend(info.garm_controller_ids);
    controller_ids.extend(info.garm_controller_id.map(|c| c.to_string()));

    // Credentials name → a target using them (for the App's hook).
    let mut app_targets: HashMap<String, ForgeTarget> = HashMap::new();
    for entity in entities.iter().filter(|e| served.contains(&e.id)) {
        ctx.check_fence().await?;
        let target = match ctx.github.target(entity.id).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(entity.id = %entity.id, error = %e, "cannot load entity");
                continue;
            }
        };
        app_targets
            .entry(entity.credentials_name.to_string())
            .or_insert_with(|| (*target).clone());
        if matches!(entity.scope, EntityScope::Enterprise { .. }) {
            // The REST API has no enterprise hooks; an App's hook may cover it.
            continue;
        }
        let source = format!("entity:{}", entity.id);
        if state.unavailable.contains_key(&source) {
            continue;
        }
        let cursor = store.delivery_cursor(&source).await?.unwrap_or_default();
        let hook_id = match cursor.hook_id {
            Some(id) => id,
            None => match ctx.github.list_hooks(&target).await {
                Ok(hooks) => {
                    match hooks
                        .iter()
                        .find(|h| points_here(&h.url, &webhook_base, entity.id, &controller_ids))
                    {
                        Some(h) => {
                            store
                                .set_delivery_cursor(
                                    &source,
                                    DeliveryCursor {
                                        hook_id: Some(h.id),
                                        last_seen: 0,
                                    },
                                )
                                .await?;
                            h.id
                        }
                        None => {
                            tracing::info!(entity.id = %entity.id, "no hook points here; redelivery skipped for 10 minutes");
                            state.unavailable.insert(source, now + NO_HOOK_FOR);
                            report.skipped += 1;
                            continue;
                        }
                    }
                }
                Err(e) => {
                    skip_source(state, report, &source, now, &e);
                    continue;
                }
            },
        };
        let cursor = DeliveryCursor {
            hook_id: Some(hook_id),
            last_seen: cursor.last_seen,
        };
        redeliver_source(
            scheduler,
            state,
            now,
            report,
            &source,
            &target,
            HookRef::Entity { hook_id },
            cursor,
        )
        .await?;
    }
    for (name, _app_id, _secret) in store.app_webhook_secrets().await? {
        let Some(target) = app_targets.get(name.as_str()) else {
            continue;
        };
        let source = format!("app:{name}");
        if state.unavailable.contains_key(&source) {
            continue;
        }
        ctx.check_fence().await?;
        let cursor = store.delivery_cursor(&source).await?.unwrap_or_default();
        redeliver_source(
            scheduler,
            state,
            now,
            report,
            &source,
            target,
            HookRef::App,
            cursor,
        )
        .await?;
    }
    Ok(())
}

fn skip_source(
    state: &mut RecoveryState,
    report: &mut RecoveryReport,
    source: &str,
    now: Instant,
    e: &ForgeError,
) {
    report.skipped += 1;
    match e {
        // Budget or backoff: simply the next pass.
        ForgeError::RateLimited { .. } | ForgeError::Transient(_) => {
            tracing::debug!(source, error = %e, "recovery deferred");
        }
        // No hook scope, no such hook, an App without hook access: the
        // queued-runs path still covers repositories.
        _ => {
            tracing::warn!(source, error = %e, "webhook deliveries unavailable; redelivery skipped for an hour");
            state
                .unavailable
                .insert(source.to_owned(), now + UNAVAILABLE_FOR);
        }
    }
}

/// One hook: list what is new, redeliver what failed, move the cursor.
#[allow(clippy::too_many_arguments)]
async fn redeliver_source(
    scheduler: &Scheduler,
    state: &mut RecoveryState,
    now: Instant,
    report: &mut RecoveryReport,
    source: &str,
    target: &ForgeTarget,
    hook: HookRef,
    cursor: DeliveryCursor,
) -> Result<(), SchedulerError> {
    let ctx = &scheduler.ctx;
    let config = &ctx.config.recovery;
    let oldest = ctx.now() - chrono::Duration::seconds(config.lookback_secs as i64);
    let mut listed: Vec<ForgeDelivery> = Vec::new();
    let mut page_cursor: Option<String> = None;
    for _ in 0..config.max_delivery_pages.max(1) {
        ctx.check_fence().await?;
        let page = match ctx
            .github
            .list_hook_deliveries(target, hook, page_cursor.as_deref(), PER_PAGE)
            .await
        {
            Ok(p) => p,
            Err(ForgeError::NotFound(m)) if matches!(hook, HookRef::Entity { .. }) => {
                // The hook is gone: find it again next pass.
                tracing::info!(source, message = %m, "hook gone; looking for it again");
                ctx.store.clear_delivery_cursor(source).await?;
                report.skipped += 1;
                return Ok(());
            }
            Err(e) => {
                skip_source(state, report, source, now, &e);
                if listed.is_empty() {
                    return Ok(());
                }
                break;
            }
        };
        let mut reached = false;
        for d in page.deliveries {
            if d.id <= cursor.last_seen || d.delivered_at < oldest {
                reached = true;
                break;
            }
            listed.push(d);
        }
        match page.next_cursor {
            Some(next) if !reached => page_cursor = Some(next),
            _ => break,
        }
    }
    if listed.is_empty() {
        return Ok(());
    }
    let newest = listed
        .iter()
        .map(|d| d.id)
        .max()
        .unwrap_or(cursor.last_seen);
    let chosen = choose_redeliveries(
        &listed,
        &mut state.guids,
        now,
        oldest,
        config.redelivery_interval(),
        config.max_redeliveries.max(1),
    );
    let mut pending: Option<i64> = None;
    let mut done = 0;
    let mut queued = 0;
    for d in chosen {
        ctx.check_fence().await?;
        match ctx.github.redeliver(target, hook, d.id).await {
            Ok(()) => {
                done += 1;
                if d.action.as_deref() == Some("queued") {
                    queued += 1;
                }
                if let Some(m) = state.guids.get_mut(&d.guid) {
                    m.redeliveries += 1;
                    m.last_redelivery = Some(now);
                }
                tracing::info!(source, delivery.id = d.id, delivery.guid = %d.guid, action = ?d.action, status_code = d.status_code, "asked GitHub to redeliver a failed delivery");
            }
            Err(e) if e.is_retryable() => {
                // Not now: keep it above the cursor for the next pass.
                pending = Some(pending.map_or(d.id, |p| p.min(d.id)));
                tracing::debug!(source, error = %e, "redelivery deferred");
            }
            Err(e) => {
                if let Some(m) = state.guids.get_mut(&d.guid) {
                    m.redeliveries = u32::MAX;
                }
                tracing::warn!(source, delivery.id = d.id, error = %e, "GitHub refused to redeliver");
            }
        }
    }
    report.redelivered += done;
    if queued > 0 {
        ctx.metrics.job_recovered("redelivery", queued);
    }
    let last_seen = match pending {
        Some(p) => (p - 1).max(cursor.last_seen),
        None => newest,
    };
    ctx.store
        .set_delivery_cursor(
            source,
            DeliveryCursor {
                hook_id: cursor.hook_id,
                last_seen,
            },
        )
        .await?;
    Ok(())
}

async fn queued_runs_pass(
    scheduler: &Scheduler,
    state: &mut RecoveryState,
    now: Instant,
    report: &mut RecoveryReport,
) -> Result<(), SchedulerError> {
    let ctx = &scheduler.ctx;
    let store = &ctx.store;
    let config = &ctx.config.recovery;
    // A scale set's pool gets its jobs from the scale set's queue, never
    // from a webhook: recovery neither serves it nor matches jobs to it.
    let pools = webhook_pools(store).await?;
    let served: HashSet<EntityId> = pools.iter().map(|p| p.entity_id).collect();
    let relist = Duration::from_secs(config.run_relist_secs);
    let mut still_queued: HashSet<(EntityId, i64)> = HashSet::new();
    let mut listed_entities: HashSet<EntityId> = HashSet::new();
    let mut entities = store.list_entities(None).await?;
    rotate(&mut entities, state.rotation);
    state.rotation = state.rotation.wrapping_add(1);
    for entity in entities {
        let EntityScope::Repository { owner, name } = &entity.scope else {
            continue;
        };
        if !served.contains(&entity.id) {
            continue;
        }
        let repository = format!("{owner}/{name}");
        ctx.check_fence().await?;
        let target = match ctx.github.target(entity.id).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(entity.id = %entity.id, error = %e, "cannot load entity");
                continue;
            }
        };
        let runs = match ctx.github.queued_run_ids(&target, &repository, 100).await {
            Ok(r) => r,
            Err(e) => {
                report.skipped += 1;
                tracing::debug!(repository, error = %e, "cannot list queued runs");
                continue;
            }
        };
        listed_entities.insert(entity.id);
        let mut jobs = Vec::new();
        let mut listed_runs = 0;
        for run in runs {
            still_queued.insert((entity.id, run));
            let fresh = state
                .runs
                .get(&(entity.id, run))
                .is_some_and(|at| now.saturating_duration_since(*at) < relist);
            if fresh || listed_runs >= config.max_runs_per_pass {
                continue;
            }
            ctx.check_fence().await?;
            match ctx.github.run_jobs(&target, &repository, run).await {
                Ok(js) => {
                    listed_runs += 1;
                    state.runs.insert((entity.id, run), now);
                    jobs.extend(js.into_iter().filter(|j| {
                        matches!(j.status, ForgeJobStatus::Queued | ForgeJobStatus::Waiting)
                    }));
                }
                Err(e) => {
                    report.skipped += 1;
                    tracing::debug!(repository, run, error = %e, "cannot list run jobs");
                    break;
                }
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let keys: Vec<(JobId, i64)> = jobs
            .iter()
            .map(|j| (j.id, j.run_attempt.unwrap_or(1)))
            .collect();
        let known: HashSet<(JobId, i64)> = store.known_jobs(&keys).await?.into_iter().collect();
        let usage: HashMap<_, _> = store.pool_usage().await?.into_iter().collect();
        let candidates: Vec<PoolCandidate<'_>> = pools
            .iter()
            .filter(|p| p.entity_id == entity.id)
            .map(|p| PoolCandidate {
                id: p.id,
                tags: &p.spec.tags,
                priority: p.spec.priority,
                enabled: p.spec.enabled,
                busy: usage.get(&p.id).map(|u| u.live).unwrap_or(0),
            })
            .collect();
        let mut events = Vec::new();
        for j in jobs {
            let attempt = j.run_attempt.unwrap_or(1);
            if known.contains(&(j.id, attempt)) || attempt < 1 || j.id.0 < 1 {
                continue;
            }
            let labels = match Labels::from_strs(&j.labels) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(job.id = %j.id, error = %e, "recovered job has unusable labels");
                    continue;
                }
            };
            let pool_id = rank_pools(&labels, &candidates).into_iter().next();
            let action = if j.status == ForgeJobStatus::Waiting {
                JobAction::Waiting
            } else {
                JobAction::Queued
            };
            tracing::info!(job.id = %j.id, repository, "recovered a job whose delivery never came");
            events.push(JobEvent {
                job_id: j.id,
                run_attempt: attempt,
                action,
                entity_id: entity.id,
                labels,
                repository: repository.clone(),
                workflow_run_id: j.run_id,
                name: j.name,
                runner_name: None,
                conclusion: None,
                pool_id,
            });
        }
        if events.is_empty() {
            continue;
        }
        ctx.check_fence().await?;
        let outcomes = intake::commit(scheduler, events).await?;
        let n = outcomes
            .iter()
            .filter(|o| matches!(o, JobOutcome::Recorded { .. }))
            .count() as u32;
        report.recovered_from_runs += n;
        if n > 0 {
            ctx.metrics.job_recovered("queued_runs", u64::from(n));
        }
    }
    // Runs no longer queued are forgotten (only where the listing answered).
    state
        .runs
        .retain(|k, _| !listed_entities.contains(&k.0) || still_queued.contains(k));
    Ok(())
}

/// The pools webhooks serve: every pool but scale sets' pools.
pub(crate) async fn webhook_pools(
    store: &hangar_store::Store,
) -> Result<Vec<hangar_core::Pool>, hangar_store::StoreError> {
    let scale_set_pools = store.scale_set_pool_ids().await?;
    let mut pools = store.list_pools(None).await?;
    pools.retain(|p| !scale_set_pools.contains(&p.id));
    Ok(pools)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: i64, guid: &str, status_code: i64, age_min: i64) -> ForgeDelivery {
        ForgeDelivery {
            id,
            guid: guid.into(),
            delivered_at: Utc::now() - chrono::Duration::minutes(age_min),
            redelivery: false,
            status_code,
            event: "workflow_job".into(),
            action: Some("queued".into()),
        }
    }

    const PERIOD: Duration = Duration::from_secs(90);

    #[tokio::test(start_paused = true)]
    async fn redelivers_failed_deliveries_once_per_period_and_never_a_success() {
        let mut memory = HashMap::new();
        let oldest = Utc::now() - chrono::Duration::hours(6);
        let listed = vec![
            delivery(5, "a", 0, 1),   // hangard down
            delivery(6, "b", 503, 1), // hangard refused
            delivery(7, "c", 202, 1), // fine
            delivery(8, "d", 500, 1), // failed, then …
            delivery(9, "d", 202, 1), // … succeeded on a later attempt
        ];
        let now = Instant::now();
        let chosen = choose_redeliveries(&listed, &mut memory, now, oldest, PERIOD, 3);
        let ids: Vec<i64> = chosen.iter().map(|d| d.id).collect();
        assert_eq!(ids, vec![5, 6], "only guids whose every attempt failed");
        for d in &chosen {
            let m = memory.get_mut(&d.guid).unwrap();
            m.redeliveries += 1;
            m.last_redelivery = Some(now);
        }
        // Seen again within the period: nothing.
        tokio::time::advance(Duration::from_secs(30)).await;
        let again = choose_redeliveries(&listed, &mut memory, Instant::now(), oldest, PERIOD, 3);
        assert!(again.is_empty());
        // The redelivery of "a" failed too; one period later it is retried.
        tokio::time::advance(PERIOD).await;
        let retry = vec![ForgeDelivery {
            redelivery: true,
            ..delivery(10, "a", 0, 0)
        }];
        let chosen = choose_redeliveries(&retry, &mut memory, Instant::now(), oldest, PERIOD, 3);
        assert_eq!(chosen.iter().map(|d| d.id).collect::<Vec<_>>(), vec![10]);
        // A success later, even below the cursor, ends it for good.
        let ok = vec![delivery(11, "a", 202, 0)];
        assert!(
            choose_redeliveries(&ok, &mut memory, Instant::now(), oldest, PERIOD, 3).is_empty()
        );
        tokio::time::advance(PERIOD).await;
        assert!(
            choose_redeliveries(&retry, &mut memory, Instant::now(), oldest, PERIOD, 3).is_empty(),
            "a guid that succeeded is never redelivered"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn redeliveries_are_bounded_and_skip_other_events_and_old_ones() {
        let mut memory = HashMap::new();
        let oldest = Utc::now() - chrono::Duration::hours(1);
        let mut ping = delivery(1, "p", 0, 1);
        ping.event = "ping".into();
        let old = delivery(2, "o", 0, 120);
        let listed = vec![ping, old, delivery(3, "x", 502, 1)];
        for round in 0..5 {
            let chosen =
                choose_redeliveries(&listed, &mut memory, Instant::now(), oldest, PERIOD, 3);
            let ids: Vec<i64> = chosen.iter().map(|d| d.id).collect();
            if round < 3 {
                assert_eq!(ids, vec![3], "round {round}");
                let m = memory.get_mut("x").unwrap();
                m.redeliveries += 1;
                m.last_redelivery = Some(Instant::now());
            } else {
                assert!(ids.is_empty(), "at most three redeliveries");
            }
            tokio::time::advance(PERIOD).await;
        }
    }

    #[test]
    fn hooks_are_found_by_url() {
        let entity: EntityId = "6b7e4c1e-58a8-4bb6-9d43-a8f3f6b1f2a1".parse().unwrap();
        let base = "https://hangar.example/webhooks";
        let ctl = vec!["0c3f2a1e-58a8-4bb6-9d43-a8f3f6b1f2a1".to_owned()];
        assert!(points_here(&format!("{base}/{entity}"), base, entity, &ctl));
        assert!(points_here(
            &format!("{base}/{entity}/"),
            base,
            entity,
            &ctl
        ));
        assert!(points_here(base, base, entity, &ctl));
        assert!(points_here(&format!("{base}/"), base, entity, &ctl));
        assert!(points_here(
            &format!("{base}/{}", ctl[0]),
            base,
            entity,
            &ctl
        ));
        assert!(!points_here(
            "https://other.example/webhooks",
            base,
            entity,
            &ctl
        ));
        assert!(!points_here(
            &format!("{base}/6b7e4c1e-0000-4bb6-9d43-a8f3f6b1f2a1"),
            base,
            entity,
            &ctl
        ));
        assert!(!points_here(
            "https://hangar.example/webhooksX",
            base,
            entity,
            &ctl
        ));
    }
}
