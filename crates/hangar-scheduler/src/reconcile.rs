//! `reconcile_pool`: brings one pool to the state its jobs and settings ask
//! for. Level-triggered and idempotent — it reads everything it decides on
//! from the store, so it does the right thing whether it runs because of a
//! webhook, a timer, a finished delete or a restart.

use chrono::Utc;
use hangar_core::{InstanceName, InstanceStatus, JobStatus, Pool, PoolId};
use hangar_store::{PoolDemand, PoolUsage};
use rand::Rng;
use rand::distributions::Alphanumeric;

use crate::{Scheduler, SchedulerError};

/// What one reconcile of a pool did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PoolReport {
    /// Instances reserved now (their create runs in the background).
    pub reserved: u32,
    /// Create or delete tasks started (including retries).
    pub creates_started: u32,
    pub deletes_started: u32,
    /// Idle runners retired because demand dropped.
    pub scaled_down: u32,
    /// Instances whose bootstrap took too long.
    pub timed_out: u32,
    /// Instances given up on after too many failed creates.
    pub given_up: u32,
}

/// How many spare runners a pool wants before it creates more: its idle
/// minimum plus every queued job, minus the young jobs an idle runner can
/// take right now (those get `idle_grace` before another VM is made).
pub(crate) fn spare_to_create_for(pool: &Pool, queued: u32, queued_young: u32, idle: u32) -> u32 {
    if !pool.spec.enabled {
        return 0;
    }
    pool.spec.min_idle_runners + queued - queued_young.min(idle)
}

/// How many spare runners a pool keeps before it retires idle ones: its
/// idle minimum plus every queued job — an idle runner that is about to
/// take a young job is not excess.
pub(crate) fn spare_to_keep(pool: &Pool, queued: u32) -> u32 {
    if !pool.spec.enabled {
        return 0;
    }
    pool.spec.min_idle_runners + queued
}

fn random_suffix() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(12)
        .map(|b| char::from(b).to_ascii_lowercase())
        .collect()
}

impl Scheduler {
    /// Reconciles one pool. Must not run twice at once for the same pool
    /// (the loop guarantees it; callers outside the loop must too).
    #[tracing::instrument(skip_all, fields(pool.id = %pool_id))]
    pub async fn reconcile_pool(&self, pool_id: PoolId) -> Result<PoolReport, SchedulerError> {
        let store = &self.inner.store;
        let now = Utc::now();
        let young_after =
            now - chrono::Duration::from_std(self.inner.config.idle_grace()).unwrap_or_default();
        let Some(state) = store.pool_state(pool_id, young_after, now).await? else {
            return Ok(PoolReport::default());
        };
        let pool = state.pool;
        let mut report = PoolReport::default();
        let (usage, demand) = if state.instance_work {
            self.step_instances(&pool, now, &mut report).await?;
            // Re-read: the steps above may have changed usage.
            match store.pool_state(pool_id, young_after, now).await? {
                Some(s) => (s.usage, s.demand),
                None => return Ok(report),
            }
        } else {
            (state.usage, state.demand)
        };
        self.scale(&pool, usage, demand, &mut report).await?;
        if report != PoolReport::default() {
            tracing::debug!(?report, "reconciled");
        }
        Ok(report)
    }

    /// Moves on every instance of `pool` that needs a step.
    async fn step_instances(
        &self,
        pool: &Pool,
        now: chrono::DateTime<Utc>,
        report: &mut PoolReport,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let pool_id = pool.id;
        // Catch up on job progress the event path may have missed.
        for (name, job, status) in store.instances_with_job_progress(pool_id).await? {
            let inst = store.instance(&name).await?;
            match status {
                JobStatus::InProgress => self.mark_active(&name, job).await?,
                JobStatus::Completed
                    if inst.status.can_transition_to(InstanceStatus::PendingDelete) =>
                {
                    self.move_instance(&name, InstanceStatus::PendingDelete, Some("job completed"))
                        .await?;
                }
                _ => {}
            }
        }

        let timeout = chrono::Duration::minutes(i64::from(pool.spec.runner_bootstrap_timeout));
        for (inst, next_attempt) in store.instances_needing_work(pool_id, now - timeout).await? {
            if self.is_in_flight(&inst.name) {
                continue;
            }
            let due = next_attempt.is_none_or(|at| at <= now);
            match inst.status {
                InstanceStatus::PendingCreate if due => {
                    self.spawn_create(inst.clone(), pool.clone());
                    report.creates_started += 1;
                }
                InstanceStatus::Error => {
                    if inst.create_attempts >= self.inner.config.create_attempts {
                        self.move_instance(
                            &inst.name,
                            InstanceStatus::PendingDelete,
                            Some(&format!(
                                "gave up after {} failed create attempts",
                                inst.create_attempts
                            )),
                        )
                        .await?;
                        tracing::warn!(instance.name = %inst.name, attempts = inst.create_attempts, "giving up on instance");
                        report.given_up += 1;
                        self.spawn_delete(inst.name.clone(), pool.clone());
                        report.deletes_started += 1;
                    } else if due
                        && self
                            .move_instance(&inst.name, InstanceStatus::PendingCreate, None)
                            .await?
                    {
                        // Retry: clean up whatever the failed attempt left,
                        // then create again under the same name.
                        let mut retry = inst.clone();
                        retry.status = InstanceStatus::PendingCreate;
                        self.spawn_create(retry, pool.clone());
                        report.creates_started += 1;
                    }
                }
                InstanceStatus::Running
                    if inst.runner_status == hangar_core::RunnerStatus::Failed =>
                {
                    self.move_instance(
                        &inst.name,
                        InstanceStatus::PendingDelete,
                        Some("runner reported a failure"),
                    )
                    .await?;
                    self.spawn_delete(inst.name.clone(), pool.clone());
                    report.deletes_started += 1;
                }
                InstanceStatus::Running if inst.runner_status.is_bootstrapping() => {
                    self.move_instance(
                        &inst.name,
                        InstanceStatus::PendingDelete,
                        Some(&format!(
                            "runner not up within the bootstrap timeout of {} min",
                            pool.spec.runner_bootstrap_timeout
                        )),
                    )
                    .await?;
                    tracing::warn!(instance.name = %inst.name, "bootstrap timeout");
                    report.timed_out += 1;
                    self.spawn_delete(inst.name.clone(), pool.clone());
                    report.deletes_started += 1;
                }
                InstanceStatus::PendingDelete if due => {
                    self.spawn_delete(inst.name.clone(), pool.clone());
                    report.deletes_started += 1;
                }
                _ => {}
            }
        }

        Ok(())
    }

    /// Creates or retires spare runners to match the pool's demand.
    async fn scale(
        &self,
        pool: &Pool,
        usage: PoolUsage,
        demand: PoolDemand,
        report: &mut PoolReport,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let pool_id = pool.id;
        let want = spare_to_create_for(pool, demand.queued, demand.queued_young, usage.idle);
        let keep = spare_to_keep(pool, demand.queued);
        if usage.spare < want {
            let room = pool.spec.max_runners.saturating_sub(usage.live);
            let n = (want - usage.spare).min(room);
            if n > 0 {
                let names = (0..n)
                    .map(|_| InstanceName::generate(&pool.spec.runner_prefix, &random_suffix()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| SchedulerError::Invalid(e.to_string()))?;
                let made = store
                    .reserve_instances(pool_id, pool.spec.provider_name.as_str(), &names)
                    .await?;
                report.reserved = made.len() as u32;
                for inst in made {
                    tracing::info!(instance.name = %inst.name, job.id = ?inst.job_id.map(|j| j.0), "reserved instance");
                    self.spawn_create(inst, pool.clone());
                    report.creates_started += 1;
                }
            }
        } else if usage.spare > keep {
            let excess = usage.spare - keep;
            for inst in store.idle_instances(pool_id, excess).await? {
                if self.is_in_flight(&inst.name) {
                    continue;
                }
                self.move_instance(
                    &inst.name,
                    InstanceStatus::PendingDelete,
                    Some("scaled down: not needed"),
                )
                .await?;
                tracing::info!(instance.name = %inst.name, "scaling down idle runner");
                report.scaled_down += 1;
                self.spawn_delete(inst.name.clone(), pool.clone());
                report.deletes_started += 1;
            }
        }
        Ok(())
    }

    pub(crate) fn is_in_flight(&self, name: &InstanceName) -> bool {
        self.inner
            .in_flight
            .lock()
            .expect("in_flight lock")
            .contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_core::*;

    /// Counting the queue only up to `demand_cap` changes no decision.
    #[test]
    fn capped_demand_decides_the_same() {
        for min_idle in [0, 2] {
            let mut p = pool(min_idle, true);
            for max in [0, 1, 4, 10] {
                p.spec.max_runners = max;
                for live in 0..=max {
                    for spare in 0..=live {
                        for idle in 0..=spare {
                            for queued in [0, 1, 3, 9, 20, 200] {
                                for young in [0, 1, queued / 2, queued] {
                                    let young = young.min(queued);
                                    let cap = hangar_store::demand_cap(&p.spec, spare, idle);
                                    let (q, y) = (queued.min(cap), young.min(cap));
                                    let create = |q: u32, y: u32| {
                                        let want = spare_to_create_for(&p, q, y, idle);
                                        want.saturating_sub(spare).min(max - live)
                                    };
                                    let retire =
                                        |q: u32| spare.saturating_sub(spare_to_keep(&p, q));
                                    assert_eq!(
                                        (create(queued, young), retire(queued)),
                                        (create(q, y), retire(q)),
                                        "min_idle {min_idle} max {max} live {live} spare {spare} idle {idle} queued {queued} young {young}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn pool(min_idle: u32, enabled: bool) -> Pool {
        Pool {
            id: PoolId::new_random(),
            entity_id: EntityId::new_random(),
            spec: PoolSpec {
                provider_name: ResourceName::parse("fake").unwrap(),
                image: "i".into(),
                flavor: "f".into(),
                tags: Labels::parse_list("a").unwrap(),
                os_type: OsType::Linux,
                os_arch: OsArch::Amd64,
                min_idle_runners: min_idle,
                max_runners: 10,
                runner_prefix: RunnerPrefix::default(),
                runner_bootstrap_timeout: 20,
                extra_specs: Default::default(),
                runner_group: None,
                priority: 0,
                enabled,
            },
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn idle_runner_absorbs_a_young_job() {
        // One idle runner, one job just queued: no second instance yet.
        assert_eq!(spare_to_create_for(&pool(1, true), 1, 1, 1), 1);
        // Once the grace is over, a replacement is wanted.
        assert_eq!(spare_to_create_for(&pool(1, true), 1, 0, 1), 2);
        // No idle runner: every job needs one.
        assert_eq!(spare_to_create_for(&pool(0, true), 3, 3, 0), 3);
        assert_eq!(spare_to_create_for(&pool(2, true), 0, 0, 0), 2);
        assert_eq!(spare_to_create_for(&pool(2, false), 5, 0, 0), 0);
    }

    #[test]
    fn a_runner_about_to_take_a_job_is_not_excess() {
        // min_idle 0, one young job, its runner just went idle: keep it.
        assert_eq!(spare_to_keep(&pool(0, true), 1), 1);
        assert_eq!(spare_to_keep(&pool(0, true), 0), 0);
        assert_eq!(spare_to_keep(&pool(2, true), 3), 5);
        assert_eq!(spare_to_keep(&pool(2, false), 3), 0);
    }
}
