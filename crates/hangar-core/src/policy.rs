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
    /// The runner reported that it exited (its one job ended) before
    /// GitHub's `completed` arrived.
    RunnerExited,
}

impl RetireReason {
    pub fn message(self) -> &'static str {
        match self {
            RetireReason::JobCompleted => "job completed",
            RetireReason::RunnerFailed => "runner reported a failure",
            RetireReason::BootstrapTimeout => "runner not up within the bootstrap timeout",
            RetireReason::RunnerExited => "runner exited",
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
    // An ephemeral runner that exited serves nothing more; its VM goes
    // without waiting for GitHub's `completed`.
    if inst.runner_status == R::Terminated && inst.status == I::Running {
        return Some((Step::Retire(RetireReason::RunnerExited), None));
    }
    match inst.status {
        // Attempts that failed before the provider was called (a JIT
        // registration GitHub refused) count too.
        I::PendingCreate if inst.create_attempts >= rules.max_create_attempts => {
            Some((Step::GiveUp, None))
        }
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

/// The settings of a pool's circuit breaker (`[scheduler]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerRules {
    /// Consecutive failed creates before the pool backs off.
    pub threshold: u32,
    /// The first back-off; doubles with each further failure.
    pub base: std::time::Duration,
    /// The longest back-off.
    pub max: std::time::Duration,
}

/// A pool's breaker as stored: failures since the last successful create,
/// and, while open, the time before which no create of the pool starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breaker {
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Whether a create of the pool may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: creates run freely.
    Go,
    /// Open and its back-off is over: one create may probe; it must first
    /// claim the probe (push `next_attempt_at` forward) so no other starts
    /// until it has finished.
    Probe,
    /// Open: nothing starts before this time.
    Wait(DateTime<Utc>),
}

impl Breaker {
    /// Open: the pool is backing off (shown as degraded).
    pub fn is_open(&self) -> bool {
        self.next_attempt_at.is_some()
    }

    /// Whether a create may start at `now`.
    pub fn admission(&self, now: DateTime<Utc>) -> Admission {
        match self.next_attempt_at {
            None => Admission::Go,
            Some(at) if at > now => Admission::Wait(at),
            Some(_) => Admission::Probe,
        }
    }

    /// The breaker after one more failed create at `now`. `jitter` in
    /// [0.5, 1.0] scales the back-off (the caller draws it; core has no
    /// randomness): `base * 2^(failures - threshold)`, capped at `max`, once
    /// `threshold` failures are reached; closed before that.
    pub fn after_failure(
        &self,
        rules: &BreakerRules,
        error: &str,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Breaker {
        let failures = self.consecutive_failures.saturating_add(1);
        let next_attempt_at = (failures >= rules.threshold.max(1)).then(|| {
            let exp = (failures - rules.threshold.max(1)).min(20);
            let raw = rules.base.saturating_mul(1u32 << exp).min(rules.max);
            let wait = raw.mul_f64(jitter.clamp(0.5, 1.0));
            now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
        });
        Breaker {
            consecutive_failures: failures,
            last_error: Some(error.to_owned()),
            next_attempt_at,
        }
    }
}

/// Whether a delete that failed `failures` times gives up on the provider
/// and takes the forced path (instance marked deleted; the orphan sweep
/// removes the VM if it still exists): always after `max_tries`, sooner
/// when an operator forced it.
pub fn delete_gives_up(failures: u32, forced: bool, max_tries: u32, forced_tries: u32) -> bool {
    failures >= max_tries.max(1) || (forced && failures >= forced_tries)
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

    fn breaker_rules() -> BreakerRules {
        BreakerRules {
            threshold: 3,
            base: std::time::Duration::from_secs(10),
            max: std::time::Duration::from_secs(300),
        }
    }

    #[test]
    fn the_breaker_opens_at_its_threshold_and_backs_off_exponentially() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let r = breaker_rules();
        let mut b = Breaker::default();
        assert_eq!(b.admission(now), Admission::Go);
        for i in 1..3 {
            b = b.after_failure(&r, "boom", now, 1.0);
            assert_eq!(b.consecutive_failures, i);
            assert!(!b.is_open(), "below the threshold it stays closed");
            assert_eq!(b.admission(now), Admission::Go);
        }
        // From the threshold on: 10 s, 20 s, 40 s … capped at 300 s.
        let mut expect = 10;
        for _ in 0..8 {
            b = b.after_failure(&r, "boom", now, 1.0);
            let at = b.next_attempt_at.expect("open");
            assert_eq!((at - now).num_seconds(), expect.min(300));
            assert_eq!(b.admission(now), Admission::Wait(at));
            assert_eq!(b.admission(at), Admission::Probe);
            expect *= 2;
        }
        assert_eq!(b.last_error.as_deref(), Some("boom"));
        // Jitter shortens the wait by at most half, never lengthens it.
        let half = b.after_failure(&r, "x", now, 0.1).next_attempt_at.unwrap();
        assert_eq!((half - now).num_seconds(), 150);
        let full = b.after_failure(&r, "x", now, 7.0).next_attempt_at.unwrap();
        assert_eq!((full - now).num_seconds(), 300);
        // A huge failure count neither overflows nor exceeds the cap.
        let many = Breaker {
            consecutive_failures: u32::MAX - 1,
            ..Default::default()
        };
        let at = many
            .after_failure(&r, "x", now, 1.0)
            .next_attempt_at
            .unwrap();
        assert_eq!((at - now).num_seconds(), 300);
    }

    #[test]
    fn a_threshold_of_zero_opens_at_the_first_failure() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let r = BreakerRules {
            threshold: 0,
            ..breaker_rules()
        };
        let b = Breaker::default().after_failure(&r, "x", now, 1.0);
        assert_eq!(
            b.next_attempt_at.map(|at| (at - now).num_seconds()),
            Some(10)
        );
    }

    #[test]
    fn deletes_give_up_after_their_tries() {
        assert!(!delete_gives_up(2, false, 10, 3));
        assert!(delete_gives_up(3, true, 10, 3), "forced: sooner");
        assert!(!delete_gives_up(9, false, 10, 3));
        assert!(delete_gives_up(10, false, 10, 3));
        assert!(delete_gives_up(1, false, 0, 3), "at least one try");
    }

    #[test]
    fn a_create_that_failed_before_the_provider_call_counts() {
        let mut v = view(InstanceStatus::PendingCreate, RunnerStatus::Pending);
        assert_eq!(next_step(&v, &rules(0)), Some((Step::Create, None)));
        v.instance.create_attempts = 3;
        assert_eq!(next_step(&v, &rules(0)), Some((Step::GiveUp, None)));
    }

    #[test]
    fn create_failures_retry_then_give_up() {
        let mut v = view(InstanceStatus::Error, RunnerStatus::Pending);
        assert_eq!(next_step(&v, &rules(0)), Some((Step::RetryCreate, None)));
        v.instance.create_attempts = 3;
        assert_eq!(next_step(&v, &rules(0)), Some((Step::GiveUp, None)));
    }

    #[test]
    fn a_runner_that_exited_retires_its_running_instance() {
        let v = view(InstanceStatus::Running, RunnerStatus::Terminated);
        assert_eq!(
            next_step(&v, &rules(0)),
            Some((Step::Retire(RetireReason::RunnerExited), None))
        );
        // Already on its way out: the delete goes on as before.
        let v = view(InstanceStatus::PendingDelete, RunnerStatus::Terminated);
        assert_eq!(next_step(&v, &rules(0)), Some((Step::Delete, None)));
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
