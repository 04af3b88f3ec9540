//! The scheduler stepped by hand under tokio's paused clock: each test
//! drives `step()` (through `run_until_idle`) against a real store, the
//! fake provider and an in-memory GitHub, and moves time itself.

mod support;

use std::time::Duration;

use hangar_core::forge::ForgeRunner;
use hangar_core::*;
use hangar_scheduler::FORCED_DELETE_TRIES;
use hangar_store::Change;
use hangar_testkit::fake_provider::FakeInstance;
use support::{Harness, config, spec};

// Waiting on SQLite's thread moves the paused clock by a millisecond at a
// time (see `support`), so the times below keep wide margins.
const MIN: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn a_queued_job_gets_a_registered_runner_on_a_new_instance() {
    let h = Harness::new(config(), spec(4)).await;
    h.deliver(1, JobAction::Queued, None).await;
    h.scheduler.run_until_idle().await;

    let inst = h.only_instance().await;
    assert_eq!(inst.status, InstanceStatus::Running);
    assert_eq!(inst.job_id, Some(JobId(1)));
    assert_eq!(h.provider.create_count(), 1);
    let runner = h
        .github
        .runner_named(inst.name.as_str())
        .expect("registered");
    assert_eq!(inst.runner_id, Some(runner.id));
    let controller = controller_label(h.store.controller_id());
    assert!(runner.labels.contains(&controller), "{:?}", runner.labels);
    assert!(runner.labels.contains(&pool_label(h.pool.id)));
    // A second pass finds nothing to do.
    h.scheduler.wake_all();
    h.scheduler.run_until_idle().await;
    assert_eq!(h.provider.create_count(), 1);
    assert_eq!(h.github.calls("generate_jit_config"), 1);
}

/// Intake only records and wakes: what `in_progress` and `completed` mean
/// for an instance is decided by reconcile.
#[tokio::test(start_paused = true)]
async fn job_progress_is_decided_by_reconcile() {
    let h = Harness::new(config(), spec(4)).await;
    h.deliver(1, JobAction::Queued, None).await;
    h.scheduler.run_until_idle().await;
    let name = h.only_instance().await.name;

    h.deliver(1, JobAction::InProgress, Some(name.as_str()))
        .await;
    let before = h.store.instance(&name).await.unwrap();
    assert_eq!(
        before.runner_status,
        RunnerStatus::Pending,
        "recording decides nothing"
    );
    h.scheduler.run_until_idle().await;
    let active = h.store.instance(&name).await.unwrap();
    assert_eq!(active.runner_status, RunnerStatus::Active);
    assert_eq!(active.job_id, Some(JobId(1)));

    h.deliver(1, JobAction::Completed, Some(name.as_str()))
        .await;
    h.scheduler.run_until_idle().await;
    let done = h.store.instance(&name).await.unwrap();
    assert_eq!(done.status, InstanceStatus::Deleted);
    assert_eq!(done.runner_status, RunnerStatus::Terminated);
    assert_eq!(done.status_message.as_deref(), Some("job completed"));
    assert!(h.github.runners().is_empty(), "runner removed from GitHub");
    assert!(h.provider.instances().is_empty(), "VM deleted");
}

/// GitHub answers 422 while the runner runs a job: the delete waits
/// `busy_retry_secs`, does not call GitHub in between, and goes as soon as
/// the job completes.
#[tokio::test(start_paused = true)]
async fn a_busy_runner_is_deleted_after_its_job() {
    let mut c = config();
    c.busy_retry_secs = 600;
    let h = Harness::new(c, spec(4)).await;
    h.deliver(1, JobAction::Queued, None).await;
    h.scheduler.run_until_idle().await;
    let name = h.only_instance().await.name;
    h.github.set_busy(name.as_str(), true);

    h.scheduler.request_delete(&name).await.unwrap();
    h.scheduler.run_until_idle().await;
    let inst = h.store.instance(&name).await.unwrap();
    assert_eq!(inst.status, InstanceStatus::PendingDelete);
    assert_eq!(
        inst.runner_status,
        RunnerStatus::Active,
        "busy means active"
    );
    assert_eq!(h.github.calls("delete_runner"), 1);

    // Before the retry is due nothing is sent, however often it is woken.
    h.after(2 * MIN).await;
    h.after(2 * MIN).await;
    assert_eq!(h.github.calls("delete_runner"), 1);
    // Due: tried again, still busy.
    h.after(7 * MIN).await;
    assert_eq!(h.github.calls("delete_runner"), 2);
    assert_eq!(h.provider.delete_count(), 0, "the VM waits for its runner");

    // The job completes: the delete goes at once.
    h.github.set_busy(name.as_str(), false);
    h.deliver(1, JobAction::Completed, Some(name.as_str()))
        .await;
    h.scheduler.run_until_idle().await;
    assert_eq!(h.github.calls("delete_runner"), 3);
    let gone = h.store.instance(&name).await.unwrap();
    assert_eq!(gone.status, InstanceStatus::Deleted);
    assert_eq!(h.provider.delete_count(), 1);
}

/// A retry comes due through the queue's timer, with no other wake.
#[tokio::test(start_paused = true)]
async fn a_failed_create_is_retried_when_its_backoff_ends() {
    let mut c = config();
    c.backoff_base_ms = 60_000;
    c.backoff_max_ms = 120_000;
    let h = Harness::new(c, spec(4)).await;
    h.provider
        .fail_next_creates(1, ProviderError::Transient("boom".into()));
    h.deliver(1, JobAction::Queued, None).await;
    h.scheduler.run_until_idle().await;
    // The instance failed; it still stands for the job's runner (it is
    // retried under its name), so no second VM is made meanwhile.
    let failed = h.only_instance().await;
    assert_eq!(failed.status, InstanceStatus::Error);
    assert_eq!(failed.create_attempts, 1);
    let due = h.store.next_attempt(&failed.name).await.unwrap();
    assert!(due.is_some(), "the retry time is in the database");

    // Stepped without a wake: nothing yet.
    h.scheduler.run_until_idle().await;
    assert_eq!(
        h.store
            .instance(&failed.name)
            .await
            .unwrap()
            .create_attempts,
        1
    );
    // The backoff (at most the one-minute base) passes; the timer alone
    // brings the pool back.
    tokio::time::advance(MIN).await;
    h.scheduler.run_until_idle().await;
    let retried = h.store.instance(&failed.name).await.unwrap();
    assert_eq!(retried.status, InstanceStatus::Running);
    assert_eq!(retried.create_attempts, 2);
    // Its runner was registered once, not once per attempt.
    assert!(h.github.runner_named(failed.name.as_str()).is_some());
    assert_eq!(
        h.github.calls("generate_jit_config"),
        h.instances().await.len() as u64
    );
}

#[tokio::test(start_paused = true)]
async fn an_instance_is_given_up_after_its_create_attempts() {
    let mut c = config();
    c.create_attempts = 3;
    let h = Harness::new(c, spec(1)).await;
    h.provider
        .fail_next_creates(100, ProviderError::Transient("no capacity".into()));
    h.deliver(1, JobAction::Queued, None).await;
    h.scheduler.run_until_idle().await;
    let first = h.only_instance().await.name;
    for _ in 0..3 {
        h.after(Duration::from_secs(5)).await;
    }
    let given_up = h.store.instance(&first).await.unwrap();
    assert_eq!(given_up.status, InstanceStatus::Deleted);
    assert_eq!(given_up.create_attempts, 3);
    assert_eq!(
        given_up.status_message.as_deref(),
        Some("gave up after 3 failed create attempts")
    );
    assert!(
        h.github.runner_named(first.as_str()).is_none(),
        "its registration is removed"
    );
    // The job still waits, so a fresh instance takes its place.
    let all = h.instances().await;
    assert_eq!(all.len(), 2);
    assert!(
        all.iter()
            .any(|i| i.name != first && i.status != InstanceStatus::Deleted)
    );
}

#[tokio::test(start_paused = true)]
async fn a_runner_not_up_within_the_bootstrap_timeout_is_retired() {
    let mut s = spec(2);
    s.runner_bootstrap_timeout = 10;
    let h = Harness::new(config(), s).await;
    h.deliver(1, JobAction::Queued, None).await;
    h.scheduler.run_until_idle().await;
    let first = h.only_instance().await.name;

    h.after(5 * MIN).await;
    assert_eq!(
        h.store.instance(&first).await.unwrap().status,
        InstanceStatus::Running,
        "still within its ten minutes"
    );
    h.after(6 * MIN).await;
    let retired = h.store.instance(&first).await.unwrap();
    assert_eq!(retired.status, InstanceStatus::Deleted);
    assert_eq!(
        retired.status_message.as_deref(),
        Some("runner not up within the bootstrap timeout of 10 min")
    );
    assert!(h.provider.instance(first.as_str()).is_none());
}

#[tokio::test(start_paused = true)]
async fn the_sweep_reaps_orphans_and_stray_runners() {
    let h = Harness::new(config(), spec(2)).await;
    let controller = h.store.controller_id();
    // A VM tagged with this controller that the database never had.
    h.provider.plant(FakeInstance {
        provider_id: "orphan-1".into(),
        name: "hangar-orphan".into(),
        controller_id: controller,
        pool_id: h.pool.id,
        image: "img".into(),
        flavor: "small".into(),
        userdata: String::new(),
        labels: vec![],
    });
    // A runner carrying this controller's label with no instance, and one
    // of someone else's.
    h.github
        .add_runner("hangar-stray", &[controller_label(controller)]);
    h.github.add_runner("someone-else", &["self-hosted".into()]);

    let r = h.scheduler.sweep().await.unwrap();
    assert_eq!(r.orphans_deleted, 1);
    assert_eq!(r.stray_runners_deleted, 1);
    assert!(h.provider.instances().is_empty());
    let left: Vec<ForgeRunner> = h.github.runners();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, "someone-else");
}

/// kill -9 in the middle of creates and a delete. After a restart the
/// delete finishes; a create is never raced by a second one: an instance
/// the provider made is adopted as it is, one it never made is created
/// once under its name, and a runner registration a crashed create left
/// (its runner id never recorded) is removed before the new one is made.
#[tokio::test(start_paused = true)]
async fn restart_recovery_adopts_or_retries_interrupted_creates_once() {
    let h = Harness::new(config(), spec(4)).await;
    h.deliver(1, JobAction::Queued, None).await;
    h.scheduler.run_until_idle().await;
    // A delete under way when hangard died.
    let deleting = h.only_instance().await.name;
    for to in [InstanceStatus::PendingDelete, InstanceStatus::Deleting] {
        h.store
            .transition(&deleting, Change::Status(to, None))
            .await
            .unwrap();
    }
    let controller = h.store.controller_id();
    let begin = |name: &'static str| {
        let store = h.store.clone();
        let pool = h.pool.id;
        async move {
            let name = InstanceName::parse(name).unwrap();
            store
                .reserve_instances(pool, "fake", std::slice::from_ref(&name))
                .await
                .unwrap();
            store
                .transition(
                    &name,
                    Change::BeginCreate {
                        token_hash: &[name.as_str().as_bytes()[7]; 32],
                    },
                )
                .await
                .unwrap();
            name
        }
    };
    // A create the provider finished although hangard never heard back.
    let made = begin("hangar-made").await;
    h.provider.plant(FakeInstance {
        provider_id: "made-by-the-orphan".into(),
        name: made.to_string(),
        controller_id: controller,
        pool_id: h.pool.id,
        image: "img".into(),
        flavor: "small".into(),
        userdata: String::new(),
        labels: vec![],
    });
    // A create the provider never got to.
    let lost = begin("hangar-lost").await;
    // A create whose JIT registration reached GitHub but not the database.
    let unrecorded = InstanceName::parse("hangar-unrecorded").unwrap();
    h.store
        .reserve_instances(h.pool.id, "fake", std::slice::from_ref(&unrecorded))
        .await
        .unwrap();
    let stale = h
        .github
        .add_runner(unrecorded.as_str(), &[controller_label(controller)]);
    let creates_before = h.provider.create_count();

    // The restart: a fresh scheduler settles what was under way.
    let restarted = Harness::scheduler(&h.store, &h.github, &h.provider, &h.config);
    restarted.recover_interrupted().await;
    restarted.wake_all();
    restarted.run_until_idle().await;
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(5)).await;
        restarted.wake_all();
        restarted.run_until_idle().await;
    }

    let adopted = h.store.instance(&made).await.unwrap();
    assert_eq!(adopted.status, InstanceStatus::Running, "{adopted:?}");
    assert_eq!(adopted.provider_id.as_deref(), Some("made-by-the-orphan"));
    assert_eq!(adopted.create_attempts, 1, "adopted, not created again");

    let retried = h.store.instance(&lost).await.unwrap();
    assert_eq!(retried.status, InstanceStatus::Running, "{retried:?}");
    assert_eq!(retried.create_attempts, 2);
    assert!(h.provider.instance(lost.as_str()).is_some());

    let fresh = h.store.instance(&unrecorded).await.unwrap();
    assert_eq!(fresh.status, InstanceStatus::Running, "{fresh:?}");
    let named: Vec<_> = h
        .github
        .runners()
        .into_iter()
        .filter(|r| r.name == unrecorded.as_str())
        .collect();
    assert_eq!(named.len(), 1, "one registration per name: {named:?}");
    assert_ne!(named[0].id, stale, "the stale registration was removed");
    assert_eq!(fresh.runner_id, Some(named[0].id));

    assert_eq!(
        h.provider.create_count() - creates_before,
        2,
        "one create each for the lost and the unrecorded instance, none for the adopted one"
    );
    assert_eq!(
        h.store.instance(&deleting).await.unwrap().status,
        InstanceStatus::Deleted
    );
    assert!(h.provider.instance(deleting.as_str()).is_none());
    // Nothing was left with two VMs or two runners of one name.
    let mut vms: Vec<String> = h.provider.instances().into_iter().map(|i| i.name).collect();
    vms.sort();
    let n = vms.len();
    vms.dedup();
    assert_eq!(vms.len(), n);
}

/// Many wakes of one pool while it reconciles start one more run, not many.
#[tokio::test(start_paused = true)]
async fn wakes_of_a_busy_pool_coalesce() {
    let h = Harness::new(config(), spec(4)).await;
    h.scheduler.wake_pool(h.pool.id);
    let first = h.scheduler.step().await;
    assert_eq!(first.pools_reconciled, 1);
    for _ in 0..50 {
        h.scheduler.wake_pool(h.pool.id);
    }
    assert_eq!(
        h.scheduler.step().await.pools_reconciled,
        0,
        "still running"
    );
    // Once it is over, the fifty wakes become one run.
    assert_eq!(h.scheduler.run_until_idle().await, 1);
    assert!(h.scheduler.is_settled());
    h.scheduler.wake_pool(h.pool.id);
    assert_eq!(h.scheduler.step().await.pools_reconciled, 1);
    h.scheduler.run_until_idle().await;
}

/// `runner rm --force-remove-runner`: the runner leaves GitHub, the
/// provider is tried a bounded number of times, then the instance is marked
/// deleted with the provider's error. Without force, a provider that
/// always fails keeps the instance in `pending_delete` (and retrying).
#[tokio::test(start_paused = true)]
async fn a_forced_delete_gives_up_on_a_failing_provider() {
    // An unforced delete gives up only after `delete_attempts`; keep that
    // out of reach of this test's half hour.
    let mut c = config();
    c.delete_attempts = 1000;
    let h = Harness::new(c, spec(4)).await;
    h.deliver(1, JobAction::Queued, None).await;
    h.deliver(2, JobAction::Queued, None).await;
    h.scheduler.run_until_idle().await;
    let all = h.instances().await;
    assert_eq!(all.len(), 2, "{all:#?}");
    let (forced, plain) = (all[0].name.clone(), all[1].name.clone());
    h.provider
        .fail_next_deletes(1000, ProviderError::Transient("the cloud is down".into()));

    h.scheduler.request_forced_delete(&forced).await.unwrap();
    h.scheduler.request_delete(&plain).await.unwrap();
    h.scheduler.run_until_idle().await;
    let first = h.store.instance(&forced).await.unwrap();
    assert_eq!(
        first.status,
        InstanceStatus::PendingDelete,
        "one failure is not enough to give up"
    );
    assert!(
        h.github.runner_named(forced.as_str()).is_none(),
        "the runner left GitHub first"
    );

    let mut gone = None;
    for _ in 0..30 {
        h.after(MIN).await;
        let i = h.store.instance(&forced).await.unwrap();
        if i.status == InstanceStatus::Deleted {
            gone = Some(i);
            break;
        }
    }
    let gone = gone.expect("a forced delete ends");
    assert_eq!(gone.runner_status, RunnerStatus::Terminated);
    let msg = gone.status_message.unwrap_or_default();
    assert!(
        msg.contains("force-removed") && msg.contains(&format!("{FORCED_DELETE_TRIES} times")),
        "{msg}"
    );
    assert!(msg.contains("the cloud is down"), "{msg}");

    let plain = h.store.instance(&plain).await.unwrap();
    assert_ne!(
        plain.status,
        InstanceStatus::Deleted,
        "an unforced delete keeps trying"
    );
}

/// After `import-garm`, garm is gone: its idle runners (labelled with its
/// controller id) and their VMs are strays the sweep removes; a busy one
/// finishes its job first.
#[tokio::test(start_paused = true)]
async fn the_sweep_reaps_the_idle_runners_and_vms_of_a_garm_moved_over() {
    let h = Harness::new(config(), spec(2)).await;
    let garm = "8257ed84-09a5-4d07-a918-d383c7d56a8c";
    h.store.add_garm_controller_id(garm).await.unwrap();
    let label = format!("runner-controller-id:{garm}");
    h.github
        .add_runner("garm-idle", std::slice::from_ref(&label));
    h.github
        .add_runner("garm-busy", std::slice::from_ref(&label));
    h.github.set_busy("garm-busy", true);
    h.github
        .add_runner("garm-other", &["runner-controller-id:another-garm".into()]);

    // The VMs garm left in the pool (imported pools keep garm's ids).
    for name in ["garm-idle", "garm-busy"] {
        h.provider.plant(FakeInstance {
            provider_id: format!("vm-{name}"),
            name: name.into(),
            controller_id: garm.parse().unwrap(),
            pool_id: h.pool.id,
            image: "img".into(),
            flavor: "small".into(),
            userdata: String::new(),
            labels: vec![label.clone()],
        });
    }

    let r = h.scheduler.sweep().await.unwrap();
    assert_eq!(r.stray_runners_deleted, 1);
    assert_eq!(r.orphans_deleted, 1, "the idle runner's VM");
    let vms: Vec<String> = h.provider.instances().into_iter().map(|i| i.name).collect();
    assert_eq!(
        vms,
        ["garm-busy"],
        "a VM running a job is left to finish it"
    );
    let mut left: Vec<String> = h.github.runners().into_iter().map(|r| r.name).collect();
    left.sort();
    assert_eq!(left, ["garm-busy", "garm-other"]);
}
