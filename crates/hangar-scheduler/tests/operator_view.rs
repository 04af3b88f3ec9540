//! What an operator sees and can do when creates cannot go, under tokio's
//! paused clock: a create stuck at an unreachable GitHub says why and
//! counts its attempts, its retry time is the one it really waits for; a
//! disabled pool stops retrying; a removed runner is not replaced while its
//! pool is disabled, and once enabled again is replaced only once; a
//! forced removal ends within seconds; removal does not wait for a
//! create's back-off; shutdown does not wait for a
//! GitHub call or a retry pause.

mod support;

use std::time::Duration;

use hangar_core::*;
use hangar_scheduler::Scheduler;
use support::{Harness, UNREACHABLE, config, spec};
use tokio_util::sync::CancellationToken;

const SEC: Duration = Duration::from_secs(1);

async fn run_for(s: &Scheduler, secs: u64) {
    for _ in 0..secs {
        tokio::time::advance(SEC).await;
        s.wake_all();
        s.run_until_idle().await;
    }
}

fn live(all: &[Instance]) -> Vec<&Instance> {
    all.iter()
        .filter(|i| {
            !matches!(
                i.status,
                InstanceStatus::PendingDelete | InstanceStatus::Deleting | InstanceStatus::Deleted
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_create_stuck_at_github_shows_its_error_and_attempts_and_waits_as_recorded() {
    let h = Harness::new(config(), spec(4)).await;
    h.github.set_unreachable(true);
    h.deliver(1, JobAction::Queued, None).await;
    h.scheduler.run_until_idle().await;

    let first = h.only_instance().await;
    assert_eq!(first.status, InstanceStatus::PendingCreate);
    assert_eq!(first.create_attempts, 1, "{first:#?}");
    assert!(
        first
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains(UNREACHABLE)),
        "the reason is on the instance, not only in the log: {first:#?}"
    );

    // Through the breaker's back-off: whatever instance holds the job
    // says why it waits and names the last error.
    run_for(&h.scheduler, 90).await;
    let breaker = h.store.pool_breaker(h.pool.id).await.unwrap();
    assert!(breaker.is_open(), "{breaker:?}");
    let all = h.instances().await;
    let waiting = live(&all);
    assert_eq!(waiting.len(), 1, "one instance for one job: {all:#?}");
    let w = waiting[0];
    let msg = w.status_message.as_deref().unwrap_or_default();
    assert!(msg.contains("Connection refused"), "{w:#?}");
    assert!(
        w.create_attempts >= 1 || msg.starts_with("waiting: pool is backing off"),
        "{w:#?}"
    );
    // The retry time recorded is the one the breaker allows, not an
    // earlier one that would be turned away.
    if w.create_attempts >= 1 {
        let at = h
            .store
            .next_attempt(&w.name)
            .await
            .unwrap()
            .expect("a retry time");
        let held = breaker.next_attempt_at.expect("open breaker has a time");
        assert!(
            at >= held,
            "retry at {at} before the breaker opens at {held}"
        );
    }
    // Attempts are counted up to the give-up, as an operator would read them.
    let given_up = all
        .iter()
        .filter(|i| {
            i.status_message
                .as_deref()
                .is_some_and(|m| m.starts_with("gave up after 3"))
        })
        .count();
    assert!(given_up >= 1, "{all:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_disabled_pool_stops_retrying_and_a_removed_runner_is_not_replaced() {
    let h = Harness::new(config(), spec(4)).await;
    h.github.set_unreachable(true);
    h.deliver(1, JobAction::Queued, None).await;
    h.scheduler.run_until_idle().await;
    let stuck = h.only_instance().await;
    assert_eq!(stuck.create_attempts, 1, "{stuck:#?}");

    let mut disabled = h.store.pool(h.pool.id).await.unwrap().spec;
    disabled.enabled = false;
    h.store.update_pool(h.pool.id, &disabled).await.unwrap();
    h.scheduler.wake_pool(h.pool.id);
    h.scheduler.run_until_idle().await;
    let calls = h.github.calls("generate_jit_config");
    run_for(&h.scheduler, 300).await;
    assert_eq!(
        h.github.calls("generate_jit_config"),
        calls,
        "no registration is tried for a disabled pool"
    );
    let parked = h.only_instance().await;
    assert_eq!(parked.status, InstanceStatus::PendingCreate, "{parked:#?}");
    assert!(
        parked
            .status_message
            .as_deref()
            .unwrap_or_default()
            .contains("pool is disabled"),
        "{parked:#?}"
    );

    // Removed, forced, with GitHub still away: gone within a few tries,
    // and nothing takes its place while the pool is disabled.
    h.scheduler
        .request_forced_delete(&parked.name)
        .await
        .unwrap();
    h.scheduler.run_until_idle().await;
    let mut secs = 0;
    while h.store.instance(&parked.name).await.unwrap().status != InstanceStatus::Deleted {
        assert!(secs < 60, "{:#?}", h.instances().await);
        run_for(&h.scheduler, 1).await;
        secs += 1;
    }
    run_for(&h.scheduler, 120).await;
    assert_eq!(h.instances().await.len(), 1, "{:#?}", h.instances().await);

    // Enabled again (GitHub back): the queued job gets one runner, not two.
    h.github.set_unreachable(false);
    let mut enabled = disabled.clone();
    enabled.enabled = true;
    h.store.update_pool(h.pool.id, &enabled).await.unwrap();
    h.scheduler.wake_pool(h.pool.id);
    h.scheduler.run_until_idle().await;
    run_for(&h.scheduler, 10).await;
    let all = h.instances().await;
    let now_live = live(&all);
    assert_eq!(now_live.len(), 1, "{all:#?}");
    assert_eq!(now_live[0].status, InstanceStatus::Running, "{all:#?}");
}

/// `runner rm -f` of a runner stuck at an unreachable GitHub, its pool
/// left enabled, with the scheduler's own loop (no test wakes): it took
/// about 48 s once; the forced delete gives GitHub a few quick tries and
/// ends within seconds of virtual time, not a reconcile interval per try.
#[tokio::test(start_paused = true)]
async fn a_forced_delete_of_a_runner_stuck_at_github_ends_within_seconds() {
    let h = Harness::new(config(), spec(4)).await;
    h.github.set_unreachable(true);
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let s = h.scheduler.clone();
        let c = cancel.clone();
        async move { s.run(c).await }
    });
    h.deliver(1, JobAction::Queued, None).await;
    h.scheduler.wake_pool(h.pool.id);
    let mut stuck = None;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(i) = live(&h.instances().await)
            .into_iter()
            .find(|i| i.create_attempts >= 1)
        {
            stuck = Some(i.clone());
            break;
        }
    }
    let stuck = stuck.expect("a create attempt failed at GitHub");
    assert_eq!(stuck.status, InstanceStatus::PendingCreate, "{stuck:#?}");

    let asked = tokio::time::Instant::now();
    h.scheduler
        .request_forced_delete(&stuck.name)
        .await
        .unwrap();
    let took = loop {
        let i = h.store.instance(&stuck.name).await.unwrap();
        if i.status == InstanceStatus::Deleted {
            break asked.elapsed();
        }
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "forced delete still not done: {i:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cancel.cancel();
    run.await.unwrap();
    eprintln!("forced delete: {took:?} of virtual time");
    // One GitHub try, then the provider: no back-off between GitHub tries
    // (each at least 1 s here), let alone a reconcile interval (30 s).
    assert!(
        took < Duration::from_secs(2),
        "the forced delete took {took:?} of virtual time"
    );
}

#[tokio::test(start_paused = true)]
async fn removing_a_waiting_runner_does_not_wait_for_its_back_off() {
    let mut c = config();
    // Long enough that waiting for it would show.
    c.breaker_base_secs = 600;
    c.breaker_max_secs = 600;
    c.breaker_threshold = 1;
    let h = Harness::new(c, spec(4)).await;
    h.github.fail_jit(true);
    h.deliver(1, JobAction::Queued, None).await;
    h.scheduler.run_until_idle().await;
    run_for(&h.scheduler, 3).await;
    let stuck = live(&h.instances().await)[0].clone();
    let at = h.store.next_attempt(&stuck.name).await.unwrap();
    assert!(
        at.is_some_and(|t| t > hangar_store::clock::now() + chrono::Duration::seconds(200)),
        "held back by the breaker: {at:?}"
    );

    h.scheduler.request_delete(&stuck.name).await.unwrap();
    h.scheduler.run_until_idle().await;
    run_for(&h.scheduler, 5).await;
    let gone = h.store.instance(&stuck.name).await.unwrap();
    assert_eq!(gone.status, InstanceStatus::Deleted, "{gone:#?}");
    // The job still queued keeps one instance (waiting for the breaker), not two.
    let all = h.instances().await;
    assert!(live(&all).len() <= 1, "{all:#?}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_does_not_wait_for_a_github_call_in_flight() {
    let h = Harness::new(config(), spec(4)).await;
    h.github.hang_jit(true);
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let s = h.scheduler.clone();
        let c = cancel.clone();
        async move { s.run(c).await }
    });
    h.deliver(1, JobAction::Queued, None).await;
    for _ in 0..1000 {
        if h.github.calls("generate_jit_config") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(h.github.calls("generate_jit_config") > 0);
    let started = tokio::time::Instant::now();
    cancel.cancel();
    run.await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(h.config.shutdown_grace_secs),
        "shutdown waited {took:?}, the whole grace"
    );
    // Not counted as the pool's failure: shutting down is nobody's fault.
    let i = h.only_instance().await;
    assert_eq!(i.create_attempts, 0, "{i:#?}");
    assert_eq!(
        h.store
            .pool_breaker(h.pool.id)
            .await
            .unwrap()
            .consecutive_failures,
        0
    );
}
