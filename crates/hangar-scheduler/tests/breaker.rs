//! The pool's circuit breaker under tokio's paused clock: a provider (or
//! GitHub) that fails every create costs a bounded number of creates and
//! JIT registrations per minute once the breaker is open, the breaker
//! survives a restart, and one successful create closes it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hangar_core::*;
use hangar_scheduler::Scheduler;
use support::{BrokenProvider, Harness, config, spec};

const SEC: Duration = Duration::from_secs(1);

/// Steps the clock `secs` seconds, one at a time, letting `s` catch up.
async fn run_for(s: &Scheduler, secs: u64) {
    for _ in 0..secs {
        tokio::time::advance(SEC).await;
        s.wake_all();
        s.run_until_idle().await;
    }
}

/// Counts per virtual minute of what `count` reads, over `minutes`.
async fn per_minute(s: &Scheduler, minutes: u64, count: impl Fn() -> u64) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..minutes {
        let before = count();
        run_for(s, 60).await;
        out.push(count() - before);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_provider_failing_every_create_is_backed_off_and_recovers() {
    let h = Harness::new(config(), spec(4)).await;
    let broken = Arc::new(BrokenProvider::new(
        h.provider.clone(),
        ProviderError::Fatal("provider printed garbage: expected JSON".into()),
    ));
    let s = Harness::scheduler_with(&h.store, &h.github, broken.clone(), &h.config);
    for job in 1..=3 {
        h.deliver(job, JobAction::Queued, None).await;
    }
    s.wake_all();
    s.run_until_idle().await;

    // The first minute: the threshold's failures, then the back-off.
    let jit = || h.github.calls("generate_jit_config");
    let first_creates = broken.creates();
    run_for(&s, 60).await;
    let breaker = h.store.pool_breaker(h.pool.id).await.unwrap();
    assert!(breaker.is_open(), "{breaker:?}");
    assert!(breaker.consecutive_failures >= h.config.breaker_threshold);
    assert!(
        breaker
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("garbage"),
        "{breaker:?}"
    );
    assert!(
        broken.creates() - first_creates <= 15,
        "first minute: {} creates",
        broken.creates() - first_creates
    );

    // Open: at most 10 creates and 10 registrations a minute, every minute.
    let creates = per_minute(&s, 6, || broken.creates()).await;
    eprintln!("creates per minute while open: {creates:?}");
    assert!(
        creates.iter().all(|&n| n <= 10),
        "creates per minute {creates:?}"
    );
    assert!(
        creates.iter().sum::<u64>() >= 1,
        "probes still go: {creates:?}"
    );
    let regs = per_minute(&s, 3, jit).await;
    eprintln!("JIT registrations per minute while open: {regs:?}");
    assert!(
        regs.iter().all(|&n| n <= 10),
        "JIT registrations per minute {regs:?}"
    );
    // Never more live instances than jobs: a failed create's slot is
    // retried or retired, not doubled.
    let live = h
        .instances()
        .await
        .into_iter()
        .filter(|i| !matches!(i.status, InstanceStatus::Deleted))
        .count();
    assert!(live <= 3, "{live} live instances for 3 jobs");

    // A restart keeps the breaker: the new scheduler waits too.
    let restarted = Harness::scheduler_with(&h.store, &h.github, broken.clone(), &h.config);
    let breaker = h.store.pool_breaker(h.pool.id).await.unwrap();
    let due = breaker.next_attempt_at.expect("still open after a restart");
    let before = broken.creates();
    restarted.wake_all();
    restarted.run_until_idle().await;
    if due > hangar_store::clock::now() + chrono::Duration::seconds(2) {
        assert_eq!(
            broken.creates(),
            before,
            "nothing starts before the back-off ends"
        );
    }

    // The provider heals: the next probe succeeds, the breaker closes and
    // every job gets its runner.
    broken.heal();
    let mut healed = false;
    for _ in 0..12 {
        run_for(&restarted, 30).await;
        let running = h
            .instances()
            .await
            .into_iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .count();
        if running == 3 {
            healed = true;
            break;
        }
    }
    assert!(healed, "{:#?}", h.instances().await);
    let breaker = h.store.pool_breaker(h.pool.id).await.unwrap();
    assert_eq!(breaker, policy::Breaker::default(), "closed");
}

/// Failures before the provider call (GitHub refusing the JIT
/// registration) count against the instance and the breaker like any
/// other: the registrations are bounded and the provider is never called.
#[tokio::test(start_paused = true)]
async fn failed_registrations_count_and_back_off() {
    let h = Harness::new(config(), spec(4)).await;
    h.github.fail_jit(true);
    h.deliver(1, JobAction::Queued, None).await;
    h.scheduler.run_until_idle().await;
    run_for(&h.scheduler, 60).await;
    let breaker = h.store.pool_breaker(h.pool.id).await.unwrap();
    assert!(breaker.is_open(), "{breaker:?}");
    assert!(
        breaker
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("502"),
        "{breaker:?}"
    );
    let regs = per_minute(&h.scheduler, 5, || h.github.calls("generate_jit_config")).await;
    eprintln!("JIT registrations per minute while open: {regs:?}");
    assert!(
        regs.iter().all(|&n| n <= 10),
        "JIT registrations per minute {regs:?}"
    );
    assert_eq!(h.provider.create_count(), 0);
    // Attempts that never reached the provider still give the instance up.
    let given_up = h
        .instances()
        .await
        .into_iter()
        .filter(|i| {
            i.status_message
                .as_deref()
                .is_some_and(|m| m.starts_with("gave up after"))
        })
        .count();
    assert!(given_up >= 1, "{:#?}", h.instances().await);

    // A pool update closes the breaker at once.
    h.github.fail_jit(false);
    let pool = h.store.pool(h.pool.id).await.unwrap();
    h.store.update_pool(pool.id, &pool.spec).await.unwrap();
    assert!(!h.store.pool_breaker(h.pool.id).await.unwrap().is_open());
    h.scheduler.wake_all();
    h.scheduler.run_until_idle().await;
    run_for(&h.scheduler, 5).await;
    let running = h
        .instances()
        .await
        .into_iter()
        .filter(|i| i.status == InstanceStatus::Running)
        .count();
    assert_eq!(running, 1, "{:#?}", h.instances().await);
}

/// Deletes are bounded too: after `delete_attempts` failed provider
/// deletes the forced path applies without an operator asking (marked
/// deleted with the provider's error; the orphan sweep reaps the VM).
#[tokio::test(start_paused = true)]
async fn a_delete_gives_up_after_its_tries() {
    let mut c = config();
    c.delete_attempts = 4;
    let h = Harness::new(c, spec(4)).await;
    h.deliver(1, JobAction::Queued, None).await;
    h.scheduler.run_until_idle().await;
    let name = h.only_instance().await.name;
    h.provider
        .fail_next_deletes(1000, ProviderError::Transient("the cloud is down".into()));
    h.scheduler.request_delete(&name).await.unwrap();
    h.scheduler.run_until_idle().await;
    let mut gone = None;
    for _ in 0..60 {
        run_for(&h.scheduler, 10).await;
        let i = h.store.instance(&name).await.unwrap();
        if i.status == InstanceStatus::Deleted {
            gone = Some(i);
            break;
        }
    }
    let gone = gone.expect("the delete ends after its tries");
    let msg = gone.status_message.unwrap_or_default();
    assert!(
        msg.contains("4 times") && msg.contains("the cloud is down"),
        "{msg}"
    );
    assert!(
        h.github.runner_named(name.as_str()).is_none(),
        "the runner left first"
    );
}
