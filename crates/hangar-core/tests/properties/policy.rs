//! The scaling policy over its whole domain (pool sizes up to `u32::MAX`):
//! no overflow; the creation target respects `min_idle_runners`, grows with
//! the queue and never exceeds what the pool keeps (so a pool never retires
//! what it just made); creations never exceed `max_runners − live`; counting
//! the queue only up to `demand_cap` decides the same; every step
//! `next_step` proposes is a legal move of the state machines.

use chrono::{DateTime, Duration, Utc};
use hangar_core::policy::{
    InstanceView, RetireReason, Step, StepRules, demand_cap, next_step, spare_to_create,
    spare_to_keep,
};
use hangar_core::{
    Instance, InstanceName, InstanceStatus as I, JobId, JobStatus, Labels, OsArch, OsType, PoolId,
    PoolSpec, ResourceName, RunnerPrefix, RunnerStatus as R,
};
use proptest::prelude::*;
use uuid::Uuid;

/// Counts small and huge alike: most bugs live at 0, 1 and the top.
fn count() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..8, 0u32..200, any::<u32>(), (u32::MAX - 8)..=u32::MAX]
}

fn spec(min_idle: u32, max: u32, enabled: bool) -> PoolSpec {
    PoolSpec {
        provider_name: ResourceName::parse("fake").unwrap(),
        image: "img".into(),
        flavor: "small".into(),
        tags: Labels::parse_list("self-hosted").unwrap(),
        os_type: OsType::Linux,
        os_arch: OsArch::Amd64,
        min_idle_runners: min_idle,
        max_runners: max,
        runner_prefix: RunnerPrefix::default(),
        runner_bootstrap_timeout: 20,
        extra_specs: Default::default(),
        runner_group: None,
        priority: 0,
        enabled,
    }
}

/// A pool as `PoolSpec::validate` lets it be (`min_idle ≤ max`), and its
/// usage: `idle ≤ spare ≤ live`; `live` may exceed `max` after the pool
/// was shrunk.
#[derive(Debug, Clone, Copy)]
struct State {
    min_idle: u32,
    max: u32,
    enabled: bool,
    live: u32,
    spare: u32,
    idle: u32,
    queued: u32,
    young: u32,
}

fn state() -> impl Strategy<Value = State> {
    (
        count(),
        count(),
        prop::bool::weighted(0.9),
        count(),
        count(),
        count(),
        count(),
        count(),
    )
        .prop_map(|(a, b, enabled, l, s, i, q, y)| {
            let (min_idle, max) = (a.min(b), a.max(b));
            let live = l;
            let spare = s.min(live);
            let idle = i.min(spare);
            let young = y.min(q);
            State {
                min_idle,
                max,
                enabled,
                live,
                spare,
                idle,
                queued: q,
                young,
            }
        })
}

/// What `hangar-scheduler`'s `reconcile::scale` does with the policy:
/// `(created, retired)`.
fn decide(p: &PoolSpec, s: &State, queued: u32, young: u32) -> (u32, u32) {
    let want = spare_to_create(p, queued, young, s.idle);
    let keep = spare_to_keep(p, queued);
    if s.spare < want {
        (
            (want - s.spare).min(p.max_runners.saturating_sub(s.live)),
            0,
        )
    } else if s.spare > keep {
        (0, s.spare - keep)
    } else {
        (0, 0)
    }
}

proptest! {
    #![proptest_config(crate::config(512))]

    #[test]
    fn targets_respect_min_idle_and_never_exceed_what_is_kept(s in state()) {
        let p = spec(s.min_idle, s.max, s.enabled);
        let create = spare_to_create(&p, s.queued, s.young, s.idle);
        let keep = spare_to_keep(&p, s.queued);
        if !s.enabled {
            prop_assert_eq!((create, keep), (0, 0));
            return Ok(());
        }
        prop_assert!(create >= s.min_idle, "min_idle {} > target {}", s.min_idle, create);
        prop_assert!(create >= s.queued.saturating_sub(s.idle), "a queued job beyond the idle runners gets none");
        prop_assert!(create <= keep, "target {} above what is kept {}", create, keep);
        prop_assert!(keep >= s.min_idle);
    }

    #[test]
    fn targets_grow_with_the_queue(s in state(), more in count(), more_idle in count()) {
        let p = spec(s.min_idle, s.max, s.enabled);
        let q2 = s.queued.saturating_add(more);
        prop_assert!(spare_to_create(&p, q2, s.young, s.idle) >= spare_to_create(&p, s.queued, s.young, s.idle));
        prop_assert!(spare_to_keep(&p, q2) >= spare_to_keep(&p, s.queued));
        // More idle runners to absorb young jobs never ask for more.
        let idle2 = s.idle.saturating_add(more_idle);
        prop_assert!(spare_to_create(&p, s.queued, s.young, idle2) <= spare_to_create(&p, s.queued, s.young, s.idle));
    }

    #[test]
    fn creations_stay_within_max_runners(s in state()) {
        let p = spec(s.min_idle, s.max, s.enabled);
        let (created, retired) = decide(&p, &s, s.queued, s.young);
        prop_assert!(created <= s.max.saturating_sub(s.live));
        prop_assert!(u64::from(s.live) + u64::from(created) <= u64::from(s.max.max(s.live)));
        prop_assert!(retired <= s.spare);
        prop_assert!(created == 0 || retired == 0);
    }

    /// After creating what it decided, a pool decides to retire nothing:
    /// scale-up and scale-down never fight.
    #[test]
    fn a_pool_never_retires_what_it_just_made(s in state()) {
        let p = spec(s.min_idle, s.max, s.enabled);
        let (created, _) = decide(&p, &s, s.queued, s.young);
        if created == 0 {
            return Ok(());
        }
        let after = State { live: s.live + created, spare: s.spare + created, ..s };
        prop_assert_eq!(decide(&p, &after, s.queued, s.young).1, 0);
    }

    #[test]
    fn the_capped_queue_decides_the_same(s in state()) {
        let p = spec(s.min_idle, s.max, s.enabled);
        let cap = demand_cap(&p, s.spare, s.idle);
        prop_assert!(cap >= 1);
        prop_assert_eq!(
            decide(&p, &s, s.queued.min(cap), s.young.min(cap)),
            decide(&p, &s, s.queued, s.young),
        );
    }
}

fn view() -> impl Strategy<Value = (InstanceView, StepRules)> {
    let status = prop::sample::select(I::ALL.to_vec());
    let runner = prop::sample::select(R::ALL.to_vec());
    let job = prop::option::of((1i64..1_000, prop::sample::select(JobStatus::ALL.to_vec())));
    (
        status,
        runner,
        job,
        0u32..6,
        -100i64..100,
        prop::option::of(-100i64..100),
        1u32..5,
    )
        .prop_map(
            |(status, runner_status, job, attempts, age, retry, max_create_attempts)| {
                let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
                let instance = Instance {
                    name: InstanceName::parse("hangar-prop").unwrap(),
                    pool_id: PoolId(Uuid::nil()),
                    provider_id: None,
                    status,
                    runner_status,
                    runner_id: None,
                    job_id: job.map(|(id, _)| JobId(id)),
                    addresses: vec![],
                    status_message: None,
                    create_attempts: attempts,
                    os_name: None,
                    os_version: None,
                    created_at: t0 + Duration::seconds(age),
                    updated_at: t0,
                };
                let v = InstanceView {
                    instance,
                    next_attempt: retry.map(|s| t0 + Duration::seconds(s)),
                    job: job.map(|(id, st)| (JobId(id), st)),
                };
                (
                    v,
                    StepRules {
                        bootstrap_cutoff: t0,
                        max_create_attempts,
                    },
                )
            },
        )
}

proptest! {
    #![proptest_config(crate::config(512))]

    /// Every step proposed is a move the tables allow from where the
    /// instance is, so the store will accept it; `deleted` needs nothing.
    #[test]
    fn every_proposed_step_is_a_legal_move((v, rules) in view()) {
        let (st, rs) = (v.instance.status, v.instance.runner_status);
        let Some((step, when)) = next_step(&v, &rules) else {
            return Ok(());
        };
        prop_assert_ne!(st, I::Deleted, "deleted got {:?}", step);
        match step {
            Step::MarkActive(job) => {
                prop_assert!(rs.can_transition_to(R::Active));
                prop_assert_eq!(Some((job, JobStatus::InProgress)), v.job);
                prop_assert_eq!(when, None);
            }
            Step::Retire(reason) => {
                prop_assert!(st.can_transition_to(I::PendingDelete), "retire from {}", st);
                prop_assert_eq!(when, None);
                if reason == RetireReason::BootstrapTimeout {
                    prop_assert!(rs.is_bootstrapping());
                    prop_assert!(v.instance.created_at < rules.bootstrap_cutoff);
                }
            }
            Step::Create => {
                prop_assert_eq!(st, I::PendingCreate);
                prop_assert!(st.can_transition_to(I::Creating));
                prop_assert_eq!(when, v.next_attempt);
            }
            Step::RetryCreate => {
                prop_assert!(st.can_transition_to(I::PendingCreate));
                prop_assert!(v.instance.create_attempts < rules.max_create_attempts);
                prop_assert_eq!(when, v.next_attempt);
            }
            Step::GiveUp => {
                prop_assert!(st.can_transition_to(I::PendingDelete));
                prop_assert!(v.instance.create_attempts >= rules.max_create_attempts);
            }
            Step::Delete => {
                prop_assert!(st.can_transition_to(I::Deleting));
            }
        }
    }
}
