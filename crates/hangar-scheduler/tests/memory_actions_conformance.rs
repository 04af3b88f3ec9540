//! `MemoryActions` (the scheduler tests' Actions service) held to
//! `FakeActions`, which is held to GitHub's own client
//! (`fixtures/actions-scaleset/`, checked by the testkit's and
//! hangar-github's `actions_shapes.rs`).
//!
//! `MemoryActions` implements the `ActionsService` trait in process: its
//! answers are domain values, never JSON, so there are no wire shapes of
//! its own to compare with the fixture. What can drift is what it *says*:
//! which call refuses with which error kind, what a message carries, the
//! counters. So the same script runs against both — `MemoryActions`
//! directly, and `FakeActions` through the real `ActionsClient` over
//! loopback HTTP (the fixture's routes, fields and statuses) — and what
//! each answered, written down without the ids each numbers its own way,
//! must be the same.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hangar_core::*;
use hangar_github::{ActionsClient, GitHubConfig, GitHubForge};
use hangar_store::{NewEntity, Store, StoreOptions};
use hangar_testkit::fake_actions::FakeActions;
use hangar_testkit::fake_github::FakeGitHub;
use hangar_testkit::sample;
use support::memory_actions::MemoryActions;

/// What the script needs beyond the trait: the service's own side (a job
/// queued by a workflow, a runner taking it).
trait ServiceSide {
    fn queue_job(&self, scale_set_id: i64, name: &str) -> i64;
    fn runner_takes_job(&self, runner_id: i64, runner_name: &str);
}

impl ServiceSide for Arc<MemoryActions> {
    fn queue_job(&self, scale_set_id: i64, _name: &str) -> i64 {
        MemoryActions::queue_job(self, scale_set_id)
    }
    fn runner_takes_job(&self, _runner_id: i64, runner_name: &str) {
        assert!(self.start_job(runner_name));
    }
}

impl ServiceSide for FakeActions {
    fn queue_job(&self, _scale_set_id: i64, name: &str) -> i64 {
        FakeActions::queue_job(self, name, "octo/app")
    }
    fn runner_takes_job(&self, runner_id: i64, _runner_name: &str) {
        // The runner comes online and the service hands it the job.
        assert!(self.runner_online(runner_id));
    }
}

fn kind<T: std::fmt::Debug>(r: &Result<T, ForgeError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(ForgeError::AlreadyExists(_)) => "already exists".into(),
        Err(ForgeError::NotFound(_)) => "not found".into(),
        Err(ForgeError::Busy(_)) => "busy".into(),
        Err(ForgeError::Unauthorized(_)) => "unauthorized".into(),
        Err(e) => format!("other: {e}"),
    }
}

fn event(e: &ScaleSetJobEvent, request: i64) -> String {
    let job = e.job();
    assert_eq!(job.runner_request_id, request, "{e:?}");
    let what = match e {
        ScaleSetJobEvent::Available { .. } => "available".to_owned(),
        ScaleSetJobEvent::Assigned { .. } => "assigned".to_owned(),
        ScaleSetJobEvent::Started { runner_name, .. } => format!("started on {runner_name}"),
        ScaleSetJobEvent::Completed {
            runner_name,
            result,
            ..
        } => format!("completed on {runner_name}: {result}"),
    };
    format!(
        "{what} repo={} labels={:?}",
        job.repository, job.request_labels
    )
}

fn stats(s: &Option<ScaleSetStatistics>) -> String {
    match s {
        Some(s) => format!(
            "available={} acquired={} assigned={} running={} registered={} busy={} idle={}",
            s.total_available_jobs,
            s.total_acquired_jobs,
            s.total_assigned_jobs,
            s.total_running_jobs,
            s.total_registered_runners,
            s.total_busy_runners,
            s.total_idle_runners
        ),
        None => "no statistics".into(),
    }
}

/// The script: what a scale set's life looks like to Hangar, call by call.
async fn script(
    svc: &dyn ActionsService,
    side: &dyn ServiceSide,
    target: &ForgeTarget,
) -> Vec<String> {
    let mut seen = Vec::new();
    let name = "lab";
    let group = svc.runner_group_id(target, None).await.unwrap();
    let req = ScaleSetRequest {
        name: name.into(),
        runner_group_id: group,
        labels: Vec::new(),
        disable_update: false,
    };
    let made = svc.create_scale_set(target, &req).await.unwrap();
    seen.push(format!("created {} labels={:?}", made.name, made.labels));
    let id = made.id;
    let found = svc.find_scale_set(target, group, name).await.unwrap();
    seen.push(format!(
        "found by name: {}",
        found.is_some_and(|f| f.id == id)
    ));
    let other = svc.find_scale_set(target, group, "nope").await.unwrap();
    seen.push(format!("other name: {other:?}"));
    let got = svc.get_scale_set(target, id).await.unwrap();
    seen.push(format!("by id: {:?}", got.map(|g| g.name)));

    let session = svc.create_session(target, id, "owner-a").await.unwrap();
    seen.push(format!(
        "session {} {}",
        session.owner_name,
        stats(&session.statistics)
    ));
    let second = svc.create_session(target, id, "owner-b").await;
    seen.push(format!("second session: {}", kind(&second)));

    let rid = side.queue_job(id, name);
    let m1 = svc
        .get_message(&session, 0, 4)
        .await
        .unwrap()
        .expect("JobAvailable");
    seen.push(format!("message: {}", stats(&m1.statistics)));
    seen.extend(m1.events.iter().map(|e| event(e, rid)));
    // Not acknowledged: the same message again.
    let again = svc.get_message(&session, 0, 4).await.unwrap().unwrap();
    seen.push(format!(
        "redelivered: {}",
        again.message_id == m1.message_id
    ));
    let acquired = svc.acquire_jobs(target, &session, &[rid]).await.unwrap();
    seen.push(format!("acquired: {}", acquired == [rid]));
    svc.delete_message(&session, m1.message_id).await.unwrap();
    let m2 = svc
        .get_message(&session, m1.message_id, 4)
        .await
        .unwrap()
        .expect("JobAssigned");
    seen.push(format!("message: newer {}", m2.message_id > m1.message_id));
    seen.extend(m2.events.iter().map(|e| event(e, rid)));
    svc.delete_message(&session, m2.message_id).await.unwrap();

    let jit = svc
        .generate_jit_config(target, id, "runner-1", "_work")
        .await
        .unwrap();
    seen.push(format!("jit for {}", jit.runner_name));
    let clash = svc
        .generate_jit_config(target, id, "runner-1", "_work")
        .await;
    seen.push(format!("same name again: {}", kind(&clash)));
    let by_name = svc.get_runner_by_name(target, "runner-1").await.unwrap();
    seen.push(format!(
        "runner by name: {:?}",
        by_name.map(|r| (r.id == jit.runner_id, r.name, r.scale_set_id == id))
    ));
    let nobody = svc.get_runner_by_name(target, "nobody").await.unwrap();
    seen.push(format!("unknown runner: {nobody:?}"));

    side.runner_takes_job(jit.runner_id, "runner-1");
    let m3 = svc
        .get_message(&session, m2.message_id, 4)
        .await
        .unwrap()
        .expect("JobStarted");
    seen.push(format!("message: {}", stats(&m3.statistics)));
    seen.extend(m3.events.iter().map(|e| event(e, rid)));
    svc.delete_message(&session, m3.message_id).await.unwrap();
    let busy = svc.delete_runner(target, jit.runner_id).await;
    seen.push(format!("delete a busy runner: {}", kind(&busy)));

    // A runner that never took a job goes; going twice is fine.
    let idle = svc
        .generate_jit_config(target, id, "runner-2", "_work")
        .await
        .unwrap();
    let gone = svc.delete_runner(target, idle.runner_id).await;
    seen.push(format!("delete an idle runner: {}", kind(&gone)));
    let after = svc.get_runner_by_name(target, "runner-2").await.unwrap();
    seen.push(format!("deleted runner by name: {after:?}"));

    svc.delete_session(target, &session).await.unwrap();
    let reopened = svc.create_session(target, id, "owner-b").await;
    seen.push(format!("session after close: {}", kind(&reopened)));
    if let Ok(s) = &reopened {
        svc.delete_session(target, s).await.unwrap();
    }

    svc.delete_scale_set(target, id).await.unwrap();
    let gone = svc.get_scale_set(target, id).await.unwrap();
    seen.push(format!("deleted scale set: {gone:?}"));
    let no_session = svc.create_session(target, id, "owner-c").await;
    seen.push(format!(
        "session on a deleted scale set: {}",
        kind(&no_session)
    ));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_actions_answers_as_fake_actions_does() {
    let gh = FakeGitHub::start().await;
    gh.require_token("ghp_test");
    let fa = FakeActions::start(&gh).await;
    fa.set_poll_wait(Duration::from_secs(5));
    // Long enough that the started job is still running when the script
    // tries to remove its runner.
    fa.set_job_duration(Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreOptions::new(
        format!("sqlite://{}/h.db", dir.path().display()),
        Secret::new("conformance test passphrase, 32+ chars"),
    ))
    .await
    .unwrap();
    store
        .create_endpoint(&sample::endpoint("gh", &gh.url(), &gh.url()))
        .await
        .unwrap();
    store
        .create_credentials(&sample::pat("gh", "gh", "ghp_test"))
        .await
        .unwrap();
    let entity = store
        .create_entity(&NewEntity {
            scope: EntityScope::Repository {
                owner: "octo".into(),
                name: "app".into(),
            },
            credentials_name: ResourceName::parse("gh").unwrap(),
            webhook_secret: Secret::new("s"),
        })
        .await
        .unwrap();
    let target = store.forge_target(entity.id).await.unwrap();
    let config = GitHubConfig {
        backoff_base_ms: 10,
        backoff_max_ms: 50,
        request_timeout_secs: 30,
        ..GitHubConfig::default()
    };
    let client = ActionsClient::new(config.clone(), Arc::new(GitHubForge::new(config)));

    let over_http = script(&client, &fa, &target).await;
    // The refusals the scheduler decides on, as the fixtures' client reads
    // them.
    for says in [
        "second session: already exists",
        "same name again: already exists",
        "delete a busy runner: busy",
        "session on a deleted scale set: not found",
        "redelivered: true",
    ] {
        assert!(
            over_http.iter().any(|l| l == says),
            "{says}: {over_http:#?}"
        );
    }
    let memory = Arc::new(MemoryActions::default());
    let in_memory = script(memory.as_ref(), &memory, &target).await;
    assert_eq!(
        in_memory, over_http,
        "\nMemoryActions:\n{in_memory:#?}\nFakeActions:\n{over_http:#?}"
    );
}
