//! Scale sets through the one engine: a listener stepped by hand against
//! the in-memory Actions service ([`support::memory_actions`]), the
//! scheduler stepped under tokio's paused clock, a real store.

mod support;

use hangar_core::*;
use hangar_scheduler::ListenStep;
use hangar_store::InstanceFilter;
use support::{Harness, config, spec};

const NAME: &str = "linux-scale-set";

struct Set {
    h: Harness,
    id: String,
    gid: i64,
}

async fn scale_set(max: u32, min_idle: u32) -> Set {
    let mut s = spec(max);
    s.min_idle_runners = min_idle;
    s.tags = Labels::parse_list(NAME).unwrap();
    let h = Harness::new(config(), s).await;
    let gid = h.actions.add_scale_set(NAME);
    let id = h
        .store
        .attach_scale_set(h.pool.id, NAME, Some(gid))
        .await
        .unwrap();
    Set { h, id, gid }
}

impl Set {
    async fn statuses(&self) -> Vec<(i64, String)> {
        self.h.store.scale_set_job_statuses(&self.id).await.unwrap()
    }

    async fn progress(&self) -> hangar_store::ScaleSetProgress {
        self.h
            .store
            .scale_set_progress(&self.id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Live (not deleted) instances of the pool.
    async fn live(&self) -> Vec<Instance> {
        self.h
            .store
            .list_instances(&InstanceFilter {
                pool_id: Some(self.h.pool.id),
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// Steps `l` until the queue holds no message, checking after each
    /// message that the pool stays within `max_runners` at the store and at
    /// the provider; returns the steps.
    async fn drain(&self, l: &mut hangar_scheduler::ScaleSetListener) -> Vec<ListenStep> {
        let mut steps = Vec::new();
        while !self.h.actions.pending_messages(self.gid).is_empty() {
            let s = l.step().await.unwrap();
            assert!(
                matches!(s, ListenStep::Message { .. }),
                "expected a message, got {s:?}"
            );
            steps.push(s);
            self.h.scheduler.run_until_idle().await;
            self.assert_within_max().await;
        }
        steps
    }

    async fn assert_within_max(&self) {
        let max = self.h.pool.spec.max_runners as usize;
        let live = self.live().await.len();
        assert!(live <= max, "{live} live instances, max {max}");
        let vms = self.h.provider.instances().len();
        assert!(vms <= max, "{vms} VMs, max {max}");
    }
}

/// A message is in the store before it leaves the queue: when the
/// acknowledgement is lost (a crash between apply and delete), the message
/// comes again after the restart and changes nothing, and nothing is
/// acquired twice.
#[tokio::test(start_paused = true)]
async fn a_message_is_applied_before_it_is_acknowledged_and_a_redelivery_is_harmless() {
    let s = scale_set(4, 0).await;
    let rid = s.h.actions.queue_job(s.gid);
    s.h.actions.fail_next(
        "delete_message",
        vec![ForgeError::Transient("connection reset".into())],
    );
    let mut l = s.h.scheduler.scale_set_listener(&s.id);
    let first = l.step().await.unwrap();
    let ListenStep::Message {
        message_id,
        acquired: 1,
        redelivered: false,
    } = first
    else {
        panic!("{first:?}");
    };
    // Applied, though the service still holds it.
    assert_eq!(s.statuses().await, vec![(rid, "acquired".to_owned())]);
    assert_eq!(s.progress().await.last_message_id, message_id);
    assert!(s.h.actions.pending_messages(s.gid).contains(&message_id));

    // hangard dies here; another starts over the same database.
    drop(l);
    let restarted = Harness::scheduler_with_actions(
        &s.h.store,
        &s.h.github,
        Some(s.h.actions.clone()),
        s.h.provider.clone(),
        &s.h.config,
    );
    let mut l = restarted.scale_set_listener(&s.id);
    let again = l.step().await.unwrap();
    assert_eq!(
        again,
        ListenStep::Message {
            message_id,
            acquired: 0,
            redelivered: true
        }
    );
    assert_eq!(s.h.actions.calls("acquire_jobs"), 1, "acquired once");
    assert!(!s.h.actions.pending_messages(s.gid).contains(&message_id));
    assert_eq!(s.statuses().await, vec![(rid, "acquired".to_owned())]);

    // The service's JobAssigned: the pool gets its runner.
    s.drain(&mut l).await;
    assert_eq!(s.statuses().await, vec![(rid, "assigned".to_owned())]);
    restarted.run_until_idle().await;
    let live = s.live().await;
    assert_eq!(live.len(), 1, "{live:#?}");
    assert_eq!(live[0].status, InstanceStatus::Running);
    let runners = s.h.actions.runners();
    assert_eq!(runners.len(), 1);
    assert_eq!(runners[0].name, live[0].name.as_str());
    assert_eq!(live[0].runner_id, Some(runners[0].id));
    assert_eq!(s.h.github.calls("generate_jit_config"), 0, "no REST JIT");
}

/// Another listener holds the session (409): ours backs off, never takes
/// a second session, and gets one once the other's has expired.
#[tokio::test(start_paused = true)]
async fn a_held_session_makes_the_listener_back_off_until_it_is_free() {
    let s = scale_set(4, 0).await;
    s.h.actions.hold_session(s.gid, "another-hangard");
    let mut l = s.h.scheduler.scale_set_listener(&s.id);
    for _ in 0..3 {
        let step = l.step().await.unwrap();
        assert!(matches!(step, ListenStep::Backoff(..)), "{step:?}");
        assert!(l.session().is_none());
        assert_eq!(
            s.h.actions.session_owner(s.gid).as_deref(),
            Some("another-hangard")
        );
    }
    assert_eq!(s.h.actions.calls("create_session"), 3);
    assert_eq!(
        s.h.actions.calls("get_message"),
        0,
        "no poll without a session"
    );

    s.h.actions.expire_session(s.gid);
    s.h.actions.queue_job(s.gid);
    let step = l.step().await.unwrap();
    assert!(
        matches!(step, ListenStep::Message { acquired: 1, .. }),
        "{step:?}"
    );
    let owner = s.h.actions.session_owner(s.gid).unwrap();
    assert_eq!(owner, format!("hangar-{}", s.h.store.controller_id()));
}

/// An expired queue token (401) is renewed with the session, and polling
/// goes on; nothing is lost.
#[tokio::test(start_paused = true)]
async fn an_expired_queue_token_is_refreshed() {
    let s = scale_set(4, 0).await;
    let mut l = s.h.scheduler.scale_set_listener(&s.id);
    s.h.actions.queue_job(s.gid);
    s.drain(&mut l).await;
    let session = l.session().unwrap().session_id.clone();

    s.h.actions.expire_queue_token(s.gid);
    let second = s.h.actions.queue_job(s.gid);
    let step = l.step().await.unwrap();
    assert_eq!(step, ListenStep::Empty, "the refresh ends the step");
    assert_eq!(s.h.actions.calls("refresh_session"), 1);
    assert_eq!(l.session().unwrap().session_id, session, "same session");
    s.drain(&mut l).await;
    assert!(
        s.statuses()
            .await
            .contains(&(second, "assigned".to_owned())),
        "{:?}",
        s.statuses().await
    );
    assert_eq!(s.h.actions.calls("create_session"), 1);
}

/// The scale set deleted on GitHub: the listener notices (its session is
/// gone, a new one is refused with 404), records it, stops, and the pool
/// wants no runners.
#[tokio::test(start_paused = true)]
async fn a_scale_set_deleted_on_github_is_reported_and_its_listener_stops() {
    let s = scale_set(4, 1).await;
    let mut l = s.h.scheduler.scale_set_listener(&s.id);
    s.h.actions.queue_job(s.gid);
    s.drain(&mut l).await;
    assert!(s.progress().await.desired_runners >= 1);

    s.h.actions.delete_scale_set_remotely(s.gid);
    let step = l.step().await.unwrap();
    assert!(matches!(step, ListenStep::Backoff(..)), "{step:?}");
    let step = l.step().await.unwrap();
    assert!(matches!(step, ListenStep::Stop(_)), "{step:?}");
    let p = s.progress().await;
    assert_eq!(p.state, "deleted_on_github");
    assert!(p.last_error.unwrap().contains(&s.gid.to_string()));
    assert_eq!(p.desired_runners, 0);
    let listened = s.h.store.listened_scale_set(&s.id).await.unwrap().unwrap();
    assert!(!listened.listening);
    // Stays stopped.
    assert!(matches!(l.step().await.unwrap(), ListenStep::Stop(_)));
    // Its pool makes no more runners.
    let before = s.live().await.len();
    s.h.scheduler.wake_pool(s.h.pool.id);
    s.h.scheduler.run_until_idle().await;
    assert!(s.live().await.len() <= before);
    assert_eq!(s.h.actions.calls("generate_jit_config") as usize, before);
}

/// Demand is `min(max_runners, min_idle + assigned jobs)` from the
/// service's counters, and the pool never holds more than `max_runners`,
/// however many jobs are assigned.
#[tokio::test(start_paused = true)]
async fn demand_follows_the_statistics_and_never_exceeds_max_runners() {
    let s = scale_set(2, 1).await;
    let mut l = s.h.scheduler.scale_set_listener(&s.id);
    // No job yet: the session's counters give min_idle.
    s.h.actions.queue_job(s.gid);
    s.h.actions.queue_job(s.gid);
    s.h.actions.queue_job(s.gid);
    s.drain(&mut l).await;
    let p = s.progress().await;
    assert_eq!(p.statistics.unwrap().total_assigned_jobs, 3);
    assert_eq!(p.desired_runners, 2, "min(2, 1 + 3)");
    s.h.scheduler.run_until_idle().await;
    let live = s.live().await;
    assert_eq!(live.len(), 2, "{live:#?}");

    // Two runners take jobs and finish them; one job is left.
    for inst in &live {
        assert!(s.h.actions.start_job(inst.name.as_str()));
    }
    s.drain(&mut l).await;
    for inst in &live {
        let now = s.h.store.instance(&inst.name).await.unwrap();
        assert_eq!(now.runner_status, RunnerStatus::Active);
        assert!(s.h.actions.complete_job(inst.name.as_str()));
    }
    s.drain(&mut l).await;
    assert_eq!(s.progress().await.desired_runners, 2, "min(2, 1 + 1)");
    s.h.scheduler.run_until_idle().await;
    s.assert_within_max().await;
    let now = s.live().await;
    assert_eq!(now.len(), 2, "{now:#?}");
    assert!(now.iter().all(|i| !live.iter().any(|o| o.name == i.name)));

    // The last job runs and completes: min_idle is what is left.
    assert!(s.h.actions.start_job(now[0].name.as_str()));
    s.drain(&mut l).await;
    assert!(s.h.actions.complete_job(now[0].name.as_str()));
    s.drain(&mut l).await;
    assert_eq!(s.progress().await.desired_runners, 1);
    s.h.scheduler.run_until_idle().await;
    let left = s.live().await;
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(s.h.provider.instances().len(), 1);
}

/// A job acquired is demand with the message that offered it: its runner
/// is asked for before the service's next message (JobAssigned, a poll
/// later) is read, and that message asks for no more.
#[tokio::test(start_paused = true)]
async fn an_acquired_job_gets_its_runner_before_the_next_message() {
    let s = scale_set(4, 0).await;
    s.h.actions.queue_job(s.gid);
    let mut l = s.h.scheduler.scale_set_listener(&s.id);
    let first = l.step().await.unwrap();
    assert!(
        matches!(first, ListenStep::Message { acquired: 1, .. }),
        "{first:?}"
    );
    assert_eq!(s.progress().await.desired_runners, 1);
    assert_eq!(
        s.h.actions.pending_messages(s.gid).len(),
        1,
        "the service's JobAssigned is not read yet"
    );
    s.h.scheduler.run_until_idle().await;
    let live = s.live().await;
    assert_eq!(live.len(), 1, "{live:#?}");
    assert_eq!(live[0].status, InstanceStatus::Running);

    s.drain(&mut l).await;
    assert_eq!(s.progress().await.desired_runners, 1);
    s.h.scheduler.run_until_idle().await;
    assert_eq!(s.live().await.len(), 1);
    assert_eq!(s.h.provider.instances().len(), 1);
}

/// JobStarted marks the runner active in the message's own transaction;
/// JobCompleted retires it, and the engine deletes the VM and leaves no
/// runner registered.
#[tokio::test(start_paused = true)]
async fn a_completed_job_retires_its_runner_and_the_vm_is_deleted() {
    let s = scale_set(4, 0).await;
    let mut l = s.h.scheduler.scale_set_listener(&s.id);
    s.h.actions.queue_job(s.gid);
    s.drain(&mut l).await;
    let inst = s.live().await.pop().expect("a runner for the job");
    assert_eq!(inst.status, InstanceStatus::Running);

    assert!(s.h.actions.start_job(inst.name.as_str()));
    let step = l.step().await.unwrap();
    assert!(matches!(step, ListenStep::Message { .. }));
    // Before any reconcile.
    let active = s.h.store.instance(&inst.name).await.unwrap();
    assert_eq!(active.runner_status, RunnerStatus::Active);

    assert!(s.h.actions.complete_job(inst.name.as_str()));
    l.step().await.unwrap();
    let retired = s.h.store.instance(&inst.name).await.unwrap();
    assert_eq!(retired.status, InstanceStatus::PendingDelete);
    assert_eq!(retired.status_message.as_deref(), Some("job completed"));

    s.h.scheduler.run_until_idle().await;
    let done = s.h.store.instance(&inst.name).await.unwrap();
    assert_eq!(done.status, InstanceStatus::Deleted);
    assert!(s.h.provider.instances().is_empty(), "VM deleted");
    assert!(s.h.actions.runners().is_empty(), "no runner left");
    assert!(s.live().await.is_empty(), "no replacement: demand is 0");
    assert_eq!(
        s.statuses().await.pop().map(|(_, st)| st).as_deref(),
        Some("completed")
    );
}

/// After a restart the listener closes the session its predecessor left,
/// opens its own without a 409, and polls from the last message applied.
/// At shutdown it closes its session.
#[tokio::test(start_paused = true)]
async fn a_restart_resumes_from_the_last_message_applied() {
    let s = scale_set(4, 0).await;
    let mut l = s.h.scheduler.scale_set_listener(&s.id);
    s.h.actions.queue_job(s.gid);
    s.h.actions.queue_job(s.gid);
    s.drain(&mut l).await;
    let last = s.progress().await.last_message_id;
    assert!(last > 0);
    assert!(s.progress().await.session_id.is_some());
    drop(l); // killed: the session stays open at the service

    let restarted = Harness::scheduler_with_actions(
        &s.h.store,
        &s.h.github,
        Some(s.h.actions.clone()),
        s.h.provider.clone(),
        &s.h.config,
    );
    let mut l = restarted.scale_set_listener(&s.id);
    let third = s.h.actions.queue_job(s.gid);
    let step = l.step().await.unwrap();
    assert!(
        matches!(
            step,
            ListenStep::Message {
                acquired: 1,
                redelivered: false,
                ..
            }
        ),
        "{step:?}"
    );
    assert_eq!(
        s.h.actions.calls("delete_session"),
        1,
        "stale session closed"
    );
    assert_eq!(s.h.actions.calls("create_session"), 2, "no 409");
    assert_eq!(s.h.actions.polled_with().last(), Some(&last));
    assert!(s.statuses().await.contains(&(third, "acquired".to_owned())));

    l.close().await;
    assert_eq!(s.h.actions.session_owner(s.gid), None);
    assert_eq!(s.progress().await.session_id, None);
}

/// The run loop supervises the listeners: one starts for an enabled scale
/// set and serves its jobs, it stops (closing its session) when the scale
/// set is disabled, and shutdown closes whatever session is open.
#[tokio::test(start_paused = true)]
async fn the_run_loop_starts_and_stops_listeners() {
    let mut cfg = config();
    cfg.recovery.enabled = false;
    let mut sp = spec(2);
    sp.tags = Labels::parse_list(NAME).unwrap();
    let h = Harness::new(cfg, sp).await;
    let gid = h.actions.add_scale_set(NAME);
    let id = h
        .store
        .attach_scale_set(h.pool.id, NAME, Some(gid))
        .await
        .unwrap();
    let s = Set { h, id, gid };
    let cancel = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn({
        let scheduler = s.h.scheduler.clone();
        let cancel = cancel.clone();
        async move { scheduler.run(cancel).await }
    });
    s.h.actions.queue_job(s.gid);
    let within = std::time::Duration::from_secs(600);
    tokio::time::timeout(within, async {
        while !s
            .live()
            .await
            .iter()
            .any(|i| i.status == InstanceStatus::Running)
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the job got a runner");
    assert!(s.h.actions.session_owner(s.gid).is_some());

    // Disabled: its listener stops and closes its session.
    let mut off = s.h.pool.spec.clone();
    off.enabled = false;
    s.h.store.update_pool(s.h.pool.id, &off).await.unwrap();
    s.h.scheduler.scale_sets_changed();
    tokio::time::timeout(within, async {
        while s.h.actions.session_owner(s.gid).is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the session was closed");

    // Enabled again: a new listener, closed at shutdown.
    s.h.store
        .update_pool(s.h.pool.id, &s.h.pool.spec)
        .await
        .unwrap();
    s.h.scheduler.scale_sets_changed();
    tokio::time::timeout(within, async {
        while s.h.actions.session_owner(s.gid).is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a listener again");
    cancel.cancel();
    tokio::time::timeout(within, run)
        .await
        .expect("the run loop ends")
        .unwrap();
    assert_eq!(s.h.actions.session_owner(s.gid), None);
    assert_eq!(s.progress().await.session_id, None);
    assert_eq!(s.h.actions.calls("create_session"), 2);
}

/// The runner reports in, as the boot script does once it listens.
async fn runner_idle(s: &Set, inst: &Instance) {
    s.h.store
        .transition(
            &inst.name,
            hangar_store::Change::Runner(RunnerStatus::Idle, None),
        )
        .await
        .unwrap();
}

/// One job through the scale set: it is assigned and gets one runner,
/// which reports idle. Returns the job's request id and that instance.
async fn one_assigned_job(s: &Set, l: &mut hangar_scheduler::ScaleSetListener) -> (i64, Instance) {
    let rid = s.h.actions.queue_job(s.gid);
    s.drain(l).await;
    s.h.scheduler.run_until_idle().await;
    assert!(s.statuses().await.contains(&(rid, "assigned".to_owned())));
    let inst = s.live().await.pop().expect("a runner for the job");
    assert_eq!(inst.status, InstanceStatus::Running);
    runner_idle(s, &inst).await;
    (rid, inst)
}

/// The job waiting on the scale set is served by the runner that replaced
/// `gone`: it takes the job, completes it, and is deleted in turn.
async fn served_by_a_replacement(
    s: &Set,
    l: &mut hangar_scheduler::ScaleSetListener,
    rid: i64,
    gone: &Instance,
) {
    s.h.scheduler.run_until_idle().await;
    let old = s.h.store.instance(&gone.name).await.unwrap();
    assert_eq!(old.status, InstanceStatus::Deleted, "{old:#?}");
    let live = s.live().await;
    assert_eq!(live.len(), 1, "one replacement: {live:#?}");
    let new = &live[0];
    assert_ne!(new.name, gone.name);
    assert!(
        s.h.actions.start_job(new.name.as_str()),
        "the job still waits for a runner of the scale set"
    );
    s.drain(l).await;
    assert!(s.h.actions.complete_job(new.name.as_str()));
    s.drain(l).await;
    s.h.scheduler.run_until_idle().await;
    assert!(
        s.statuses().await.contains(&(rid, "completed".to_owned())),
        "{:?}",
        s.statuses().await
    );
    assert!(s.live().await.is_empty(), "{:#?}", s.live().await);
    assert!(s.h.provider.instances().is_empty(), "no VM left");
    assert!(s.h.actions.runners().is_empty(), "no runner left");
}

/// A runner the Actions service no longer has (removed there, or it left
/// without a `JobCompleted` reaching us) serves nothing: past the
/// lost-instance grace the sweep asks the service, retires the instance,
/// and the job assigned to the scale set gets a new runner. A runner the
/// service still has is left alone, and asked about at most once per grace.
#[tokio::test(start_paused = true)]
async fn a_runner_gone_from_the_actions_service_is_retired_and_its_job_served() {
    let s = scale_set(2, 0).await;
    let mut l = s.h.scheduler.scale_set_listener(&s.id);
    let (rid, inst) = one_assigned_job(&s, &mut l).await;

    // Registered and young: nothing to ask yet, nothing retired.
    let r = s.h.scheduler.sweep().await.unwrap();
    assert_eq!(r.runners_gone, 0);
    assert_eq!(
        s.h.actions.calls("get_runner_by_name"),
        0,
        "too young to ask"
    );
    let grace = std::time::Duration::from_secs(s.h.config.lost_instance_grace_secs + 1);
    s.h.after(grace).await;
    let r = s.h.scheduler.sweep().await.unwrap();
    assert_eq!(r.runners_gone, 0, "still registered: left alone");
    assert_eq!(s.h.actions.calls("get_runner_by_name"), 1);
    s.h.scheduler.sweep().await.unwrap();
    assert_eq!(s.h.actions.calls("get_runner_by_name"), 1, "once per grace");

    assert!(s.h.actions.drop_runner(inst.name.as_str()));
    s.h.after(grace).await;
    let r = s.h.scheduler.sweep().await.unwrap();
    assert_eq!(r.runners_gone, 1, "{r:?}");
    let retired = s.h.store.instance(&inst.name).await.unwrap();
    assert_eq!(retired.status, InstanceStatus::PendingDelete);
    assert_eq!(
        retired.status_message.as_deref(),
        Some("runner gone from the Actions service")
    );
    served_by_a_replacement(&s, &mut l, rid, &inst).await;
}

/// A runner whose VM the provider lost (killed, crashed host) is retired by
/// the sweep as in any pool, and the job assigned to the scale set gets a
/// new runner.
#[tokio::test(start_paused = true)]
async fn a_runner_whose_vm_vanished_is_retired_and_its_job_served() {
    let s = scale_set(2, 0).await;
    let mut l = s.h.scheduler.scale_set_listener(&s.id);
    let (rid, inst) = one_assigned_job(&s, &mut l).await;
    assert!(s.h.provider.lose(inst.name.as_str()));
    s.h.after(std::time::Duration::from_secs(
        s.h.config.lost_instance_grace_secs + 1,
    ))
    .await;
    let r = s.h.scheduler.sweep().await.unwrap();
    assert_eq!(r.lost_instances, 1, "{r:?}");
    served_by_a_replacement(&s, &mut l, rid, &inst).await;
}

/// A runner that never comes up (its VM never reports in) is retired at
/// the pool's bootstrap timeout, its registration removed from the
/// service, and the job assigned to the scale set gets a new runner.
#[tokio::test(start_paused = true)]
async fn a_runner_that_never_comes_up_is_retired_at_the_bootstrap_timeout() {
    let s = scale_set(2, 0).await;
    let mut l = s.h.scheduler.scale_set_listener(&s.id);
    let rid = s.h.actions.queue_job(s.gid);
    s.drain(&mut l).await;
    s.h.scheduler.run_until_idle().await;
    let inst = s.live().await.pop().expect("a runner for the job");
    assert_eq!(inst.runner_status, RunnerStatus::Pending);
    let timeout = u64::from(s.h.pool.spec.runner_bootstrap_timeout) * 60;
    s.h.after(std::time::Duration::from_secs(timeout + 1)).await;
    let old = s.h.store.instance(&inst.name).await.unwrap();
    assert_eq!(old.status, InstanceStatus::Deleted, "{old:#?}");
    assert!(
        old.status_message
            .as_deref()
            .is_some_and(|m| m.contains("bootstrap timeout")),
        "{old:#?}"
    );
    assert!(
        s.h.actions
            .runners()
            .iter()
            .all(|r| r.name != inst.name.as_str()),
        "its registration is removed"
    );
    served_by_a_replacement(&s, &mut l, rid, &inst).await;
}
