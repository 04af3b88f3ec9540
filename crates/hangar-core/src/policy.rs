//! The scheduler's policy, as pure functions: how many runners a pool
//! wants, and what one instance needs next. The scheduler applies these
//! decisions and the store only fetches the rows they are made from, so the
//! rules are written once, here, and tested without a database.
//!
//! The store narrows its queries with SQL predicates for speed (a pool with
//! nothing to do costs one statement); its tests hold those predicates to
//! [`next_step`] and [`demand_cap`] over their whole domain.

use chrono::{DateTime, Utc};

use crate::ids::JobId;
use crate::instance::{Instance, InstanceStatus, RunnerStatus};
use crate::job::JobStatus;
use crate::pool::PoolSpec;

/// How many spare runners a pool wants before it creates more: its idle
/// minimum plus every queued job, minus the young jobs an idle runner can
/// take right now (those get the idle grace before another VM is made).
/// Saturates: a pool may be as large as `u32` allows, and the queue is
/// counted up to [`demand_cap`], which saturates too.
pub fn spare_to_create(spec: &PoolSpec, queued: u32, queued_young: u32, idle: u32) -> u32 {
    if !spec.enabled {
        return 0;
    }
    spec.min_idle_runners
        .saturating_add(queued.saturating_sub(queued_young.min(idle)))
}

/// How many spare runners a pool keeps before it retires idle ones: its
/// idle minimum plus every queued job — an idle runner about to take a young
/// job is not excess. Saturates, like [`spare_to_create`].
pub fn spare_to_keep(spec: &PoolSpec, queued: u32) -> u32 {
    if !spec.enabled {
        return 0;
    }
    spec.min_idle_runners.saturating_add(queued)
}

/// How many queued jobs are worth counting for a pool: beyond this many,
/// every scaling decision is the same (create up to the pool's room, retire
/// nothing), so a long queue costs no more than a full pool.
pub fn demand_cap(spec: &PoolSpec, spare: u32, idle: u32) -> u32 {
    spec.max_runners
        .saturating_add(spec.min_idle_runners)
        .saturating_add(spare)
        .saturating_add(idle)
        .saturating_add(1)
}

/// One instance as the step rule sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceView {
    pub instance: Instance,
    /// When a retried create or delete may run again (`None`: now).
    pub next_attempt: Option<DateTime<Utc>>,
    /// The job this instance's runner took, as GitHub last reported it.
    pub job: Option<(JobId, JobStatus)>,
}

/// Why a live instance is retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireReason {
    JobCompleted,
    RunnerFailed,
    /// The runner was not up within the pool's bootstrap timeout.
    BootstrapTimeout,
}

impl RetireReason {
    pub fn message(self) -> &'static str {
        match self {
            RetireReason::JobCompleted => "job completed",
            RetireReason::RunnerFailed => "runner reported a failure",
            RetireReason::BootstrapTimeout => "runner not up within the bootstrap timeout",
        }
    }
}

/// What an instance needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Its runner took this job.
    MarkActive(JobId),
    /// Move it to `pending_delete`, then delete it.
    Retire(RetireReason),
    /// Make it at the provider (first attempt).
    Create,
    /// Create it again after a failed attempt.
    RetryCreate,
    /// Too many failed creates: delete it.
    GiveUp,
    /// Remove its runner from GitHub, then its VM.
    Delete,
}

/// The settings [`next_step`] decides with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRules {
    /// Instances created before this whose runner is still bootstrapping
    /// have timed out.
    pub bootstrap_cutoff: DateTime<Utc>,
    /// Failed creates before an instance is given up on.
    pub max_create_attempts: u32,
}

/// The step an instance needs, and the earliest time it may be taken
/// (`None`: now); `None` when it needs nothing. Job progress comes first: a
/// runner that took a job is active whatever else is under way.
pub fn next_step(v: &InstanceView, rules: &StepRules) -> Option<(Step, Option<DateTime<Utc>>)> {
    use InstanceStatus as I;
    use RunnerStatus as R;
    let inst = &v.instance;
    match v.job {
        Some((job, JobStatus::InProgress))
            if inst.status != I::Deleted
                && matches!(inst.runner_status, R::Pending | R::Installing | R::Idle) =>
        {
            return Some((Step::MarkActive(job), None));
        }
        Some((_, JobStatus::Completed))
            if matches!(inst.status, I::PendingCreate | I::Running | I::Error) =>
        {
            return Some((Step::Retire(RetireReason::JobCompleted), None));
        }
        _ => {}
    }
    if inst.runner_status == R::Failed
        && matches!(inst.status, I::PendingCreate | I::Running | I::Error)
    {
        return Some((Step::Retire(RetireReason::RunnerFailed), None));
    }
    match inst.status {
        I::PendingCreate => Some((Step::Create, v.next_attempt)),
        I::Error if inst.create_attempts >= rules.max_create_attempts => Some((Step::GiveUp, None)),
        I::Error => Some((Step::RetryCreate, v.next_attempt)),
        I::Running
            if inst.runner_status.is_bootstrapping()
                && inst.created_at < rules.bootstrap_cutoff =>
        {
            Some((Step::Retire(RetireReason::BootstrapTimeout), None))
        }
        I::PendingDelete => {
            // A delete that waited for a busy runner may go once its job is done.
            let job_done =
                matches!(v.job, Some((_, JobStatus::Completed))) && inst.runner_status == R::Active;
            Some((Step::Delete, if job_done { None } else { v.next_attempt }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{InstanceName, PoolId, ResourceName};
    use crate::labels::Labels;
    use crate::pool::{OsArch, OsType, RunnerPrefix};

    fn spec(min_idle: u32, enabled: bool) -> PoolSpec {
        PoolSpec {
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
        }
    }

    /// Counting the queue only up to `demand_cap` changes no decision.
    #[test]
    fn capped_demand_decides_the_same() {
        for min_idle in [0, 2] {
            let mut p = spec(min_idle, true);
            for max in [0, 1, 4, 10] {
                p.max_runners = max;
                for live in 0..=max {
                    for spare in 0..=live {
                        for idle in 0..=spare {
                            for queued in [0, 1, 3, 9, 20, 200] {
                                for young in [0, 1, queued / 2, queued] {
                                    let young = young.min(queued);
                                    let cap = demand_cap(&p, spare, idle);
                                    let (q, y) = (queued.min(cap), young.min(cap));
                                    let create = |q: u32, y: u32| {
                                        let want = spare_to_create(&p, q, y, idle);
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

    #[test]
    fn idle_runner_absorbs_a_young_job() {
        // One idle runner, one job just queued: no second instance yet.
        assert_eq!(spare_to_create(&spec(1, true), 1, 1, 1), 1);
        // Once the grace is over, a replacement is wanted.
        assert_eq!(spare_to_create(&spec(1, true), 1, 0, 1), 2);
        // No idle runner: every job needs one.
        assert_eq!(spare_to_create(&spec(0, true), 3, 3, 0), 3);
        assert_eq!(spare_to_create(&spec(2, true), 0, 0, 0), 2);
        assert_eq!(spare_to_create(&spec(2, false), 5, 0, 0), 0);
    }

    /// Found by `tests/properties` (policy): a pool as large as the API
    /// accepts (`min_idle_runners` ≤ `max_runners` ≤ `u32::MAX`) with its
    /// queue counted up to the saturated `demand_cap` overflowed the sum,
    /// a panic in debug builds and a wrapped, far too small target in
    /// release ones.
    #[test]
    fn huge_pools_do_not_overflow() {
        let mut p = spec(3_000_000_000, true);
        p.max_runners = 3_000_000_000;
        let queued = demand_cap(&p, 0, 0);
        assert_eq!(queued, u32::MAX);
        assert_eq!(spare_to_create(&p, queued, 0, 0), u32::MAX);
        assert_eq!(spare_to_create(&p, queued, 5, 2), u32::MAX);
        assert_eq!(spare_to_keep(&p, queued), u32::MAX);
        assert_eq!(spare_to_create(&p, 7, 5, 2), 3_000_000_005);
    }

    #[test]
    fn a_runner_about_to_take_a_job_is_not_excess() {
        assert_eq!(spare_to_keep(&spec(0, true), 1), 1);
        assert_eq!(spare_to_keep(&spec(0, true), 0), 0);
        assert_eq!(spare_to_keep(&spec(2, true), 3), 5);
        assert_eq!(spare_to_keep(&spec(2, false), 3), 0);
    }

    fn view(status: InstanceStatus, runner: RunnerStatus) -> InstanceView {
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        InstanceView {
            instance: Instance {
                name: InstanceName::parse("hangar-abc").unwrap(),
                pool_id: PoolId::new_random(),
                provider_id: None,
                status,
                runner_status: runner,
                runner_id: None,
                job_id: None,
                addresses: vec![],
                status_message: None,
                create_attempts: 1,
                os_name: None,
                os_version: None,
                created_at: t,
                updated_at: t,
            },
            next_attempt: None,
            job: None,
        }
    }

    fn rules(cutoff_secs: i64) -> StepRules {
        StepRules {
            bootstrap_cutoff: DateTime::from_timestamp(cutoff_secs, 0).unwrap(),
            max_create_attempts: 3,
        }
    }

    #[test]
    fn job_progress_comes_first() {
        let mut v = view(InstanceStatus::Running, RunnerStatus::Idle);
        v.job = Some((JobId(7), JobStatus::InProgress));
        assert_eq!(
            next_step(&v, &rules(0)),
            Some((Step::MarkActive(JobId(7)), None))
        );
        v.instance.runner_status = RunnerStatus::Active;
        assert_eq!(next_step(&v, &rules(0)), None);
        v.job = Some((JobId(7), JobStatus::Completed));
        assert_eq!(
            next_step(&v, &rules(0)),
            Some((Step::Retire(RetireReason::JobCompleted), None))
        );
    }

    #[test]
    fn a_busy_delete_goes_as_soon_as_its_job_is_done() {
        let later = DateTime::from_timestamp(2_000_000, 0).unwrap();
        let mut v = view(InstanceStatus::PendingDelete, RunnerStatus::Active);
        v.next_attempt = Some(later);
        v.job = Some((JobId(1), JobStatus::InProgress));
        assert_eq!(next_step(&v, &rules(0)), Some((Step::Delete, Some(later))));
        v.job = Some((JobId(1), JobStatus::Completed));
        assert_eq!(next_step(&v, &rules(0)), Some((Step::Delete, None)));
        // Once the runner is gone, retries keep their spacing.
        v.instance.runner_status = RunnerStatus::Terminated;
        assert_eq!(next_step(&v, &rules(0)), Some((Step::Delete, Some(later))));
    }

    #[test]
    fn create_failures_retry_then_give_up() {
        let mut v = view(InstanceStatus::Error, RunnerStatus::Pending);
        assert_eq!(next_step(&v, &rules(0)), Some((Step::RetryCreate, None)));
        v.instance.create_attempts = 3;
        assert_eq!(next_step(&v, &rules(0)), Some((Step::GiveUp, None)));
    }

    #[test]
    fn bootstrap_timeout_and_failed_runners_retire() {
        let v = view(InstanceStatus::Running, RunnerStatus::Installing);
        assert_eq!(next_step(&v, &rules(0)), None, "within the timeout");
        assert_eq!(
            next_step(&v, &rules(2_000_000)),
            Some((Step::Retire(RetireReason::BootstrapTimeout), None))
        );
        let v = view(InstanceStatus::Running, RunnerStatus::Failed);
        assert_eq!(
            next_step(&v, &rules(0)),
            Some((Step::Retire(RetireReason::RunnerFailed), None))
        );
        for s in [
            InstanceStatus::Creating,
            InstanceStatus::Deleting,
            InstanceStatus::Deleted,
        ] {
            assert_eq!(
                next_step(&view(s, RunnerStatus::Pending), &rules(2_000_000)),
                None
            );
        }
    }
}
