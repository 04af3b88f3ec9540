//! `ActionsClient` against the loopback FakeGitHub + FakeActions: the
//! registration exchange and its refresh, scale set CRUD, the session 409
//! rule, long polls (202 and messages), acquiring, JIT runners, and the
//! faults the listener must survive.

use std::sync::Arc;
use std::time::Duration;

use hangar_core::actions::{ActionsService, ScaleSetJobEvent, ScaleSetRequest};
use hangar_core::entity::{Credentials, CredentialsAuth, Endpoint};
use hangar_core::{EntityScope, ForgeError, ForgeTarget, ResourceName, Secret};
use hangar_github::{ActionsClient, GitHubConfig, GitHubForge};
use hangar_testkit::fake_actions::{ActionsFault, FakeActions};
use hangar_testkit::fake_github::FakeGitHub;
use hangar_testkit::runner_sim::FakeJitConfig;

fn target(gh: &FakeGitHub, scope: EntityScope) -> ForgeTarget {
    ForgeTarget {
        endpoint: Endpoint {
            name: ResourceName::parse("fake").unwrap(),
            description: String::new(),
            base_url: gh.url(),
            api_base_url: gh.url(),
            ca_bundle: None,
        },
        credentials: Credentials {
            name: ResourceName::parse("gh").unwrap(),
            description: String::new(),
            endpoint: ResourceName::parse("fake").unwrap(),
            auth: CredentialsAuth::Pat {
                token: Secret::new("ghp_test"),
            },
            app_webhook_secret: None,
        },
        scope,
    }
}

fn repo() -> EntityScope {
    EntityScope::Repository {
        owner: "octo".into(),
        name: "app".into(),
    }
}

fn org() -> EntityScope {
    EntityScope::Organization {
        name: "octo".into(),
    }
}

struct World {
    gh: FakeGitHub,
    fa: FakeActions,
    client: ActionsClient,
}

async fn world() -> World {
    let gh = FakeGitHub::start().await;
    gh.require_token("ghp_test");
    let fa = FakeActions::start(&gh).await;
    fa.set_poll_wait(Duration::from_millis(300));
    let config = GitHubConfig {
        backoff_base_ms: 20,
        backoff_max_ms: 100,
        request_timeout_secs: 10,
        ..GitHubConfig::default()
    };
    let forge = Arc::new(GitHubForge::new(config.clone()));
    let client = ActionsClient::new(config, forge);
    World { gh, fa, client }
}

fn request(name: &str) -> ScaleSetRequest {
    ScaleSetRequest {
        name: name.into(),
        runner_group_id: 1,
        labels: Vec::new(),
        disable_update: false,
    }
}

#[tokio::test]
async fn exchange_once_then_scale_set_crud() {
    let w = world().await;
    let t = target(&w.gh, repo());
    assert_eq!(w.client.runner_group_id(&t, None).await.unwrap(), 1);
    let created = w
        .client
        .create_scale_set(&t, &request("linux-ss"))
        .await
        .unwrap();
    assert_eq!(created.name, "linux-ss");
    assert_eq!(created.labels, ["linux-ss"]);
    assert_eq!(created.runner_group_name.as_deref(), Some("Default"));
    let found = w.client.find_scale_set(&t, 1, "linux-ss").await.unwrap();
    assert_eq!(found.as_ref().map(|s| s.id), Some(created.id));
    assert_eq!(w.client.find_scale_set(&t, 1, "other").await.unwrap(), None);
    // The same name again in the same group is refused.
    let again = w.client.create_scale_set(&t, &request("linux-ss")).await;
    assert!(
        matches!(again, Err(ForgeError::AlreadyExists(_))),
        "{again:?}"
    );

    let mut upd = request("linux-ss");
    upd.disable_update = true;
    upd.labels = vec!["extra".into()];
    let updated = w
        .client
        .update_scale_set(&t, created.id, &upd)
        .await
        .unwrap();
    assert!(updated.disable_update);
    assert_eq!(updated.labels, ["linux-ss", "extra"]);
    assert_eq!(
        w.client.get_scale_set(&t, created.id).await.unwrap(),
        Some(updated)
    );
    w.client.delete_scale_set(&t, created.id).await.unwrap();
    assert_eq!(w.client.get_scale_set(&t, created.id).await.unwrap(), None);
    // Already gone is fine.
    w.client.delete_scale_set(&t, created.id).await.unwrap();
    // One exchange served every call above.
    assert_eq!(w.client.admin_exchanges(), 1);
    assert_eq!(w.fa.exchanges(), 1);
    assert_eq!(w.gh.calls("registration-token"), 1);
}

#[tokio::test]
async fn runner_groups_by_name_for_an_organization() {
    let w = world().await;
    w.fa.add_runner_group("orgs/octo", 7, "gpu");
    let t = target(&w.gh, org());
    assert_eq!(w.client.runner_group_id(&t, Some("gpu")).await.unwrap(), 7);
    let missing = w.client.runner_group_id(&t, Some("nope")).await;
    assert!(
        matches!(missing, Err(ForgeError::NotFound(_))),
        "{missing:?}"
    );
    let mut req = request("gpu-ss");
    req.runner_group_id = 7;
    let ss = w.client.create_scale_set(&t, &req).await.unwrap();
    assert_eq!(ss.runner_group_id, 7);
    assert_eq!(ss.runner_group_name.as_deref(), Some("gpu"));
}

#[tokio::test]
async fn admin_token_is_fetched_again_after_a_401_and_before_expiry() {
    let w = world().await;
    let t = target(&w.gh, repo());
    let ss = w.client.create_scale_set(&t, &request("ss")).await.unwrap();
    assert_eq!(w.client.admin_exchanges(), 1);
    // The service stops taking the token: the client exchanges again and
    // the call goes through.
    w.fa.expire_admin_tokens();
    assert!(w.client.get_scale_set(&t, ss.id).await.unwrap().is_some());
    assert_eq!(w.client.admin_exchanges(), 2);
    // A token within a minute of its exp is replaced before it is used.
    w.fa.set_admin_token_ttl(Duration::from_secs(30));
    w.fa.expire_admin_tokens();
    w.client.get_scale_set(&t, ss.id).await.unwrap();
    assert_eq!(w.client.admin_exchanges(), 3);
    w.client.get_scale_set(&t, ss.id).await.unwrap();
    assert_eq!(w.client.admin_exchanges(), 4);
    // Another entity has its own admin token.
    let o = target(&w.gh, org());
    w.client.runner_group_id(&o, Some("Default")).await.unwrap();
    assert_eq!(w.client.admin_exchanges(), 5);
}

#[tokio::test]
async fn a_second_session_is_a_conflict_until_the_first_is_gone() {
    let w = world().await;
    let t = target(&w.gh, repo());
    let ss = w.client.create_scale_set(&t, &request("ss")).await.unwrap();
    let s1 = w
        .client
        .create_session(&t, ss.id, "hangar-a")
        .await
        .unwrap();
    assert_eq!(s1.owner_name, "hangar-a");
    assert!(s1.statistics.is_some());
    let second = w.client.create_session(&t, ss.id, "hangar-b").await;
    assert!(
        matches!(second, Err(ForgeError::AlreadyExists(_))),
        "{second:?}"
    );
    let refreshed = w.client.refresh_session(&t, &s1).await.unwrap();
    assert_eq!(refreshed.session_id, s1.session_id);
    assert_ne!(
        refreshed.message_queue_access_token.expose(),
        s1.message_queue_access_token.expose()
    );
    w.client.delete_session(&t, &refreshed).await.unwrap();
    // Already gone is fine.
    w.client.delete_session(&t, &refreshed).await.unwrap();
    let s2 = w
        .client
        .create_session(&t, ss.id, "hangar-b")
        .await
        .unwrap();
    w.client.delete_session(&t, &s2).await.unwrap();
    // Held by some other listener for a while.
    w.fa.hold_session("ss", Duration::from_secs(60));
    let held = w.client.create_session(&t, ss.id, "hangar-c").await;
    assert!(
        matches!(held, Err(ForgeError::AlreadyExists(_))),
        "{held:?}"
    );
    assert_eq!(w.fa.session_conflicts(), 2);
}

#[tokio::test]
async fn poll_acquire_run_and_acknowledge() {
    let w = world().await;
    w.fa.set_job_duration(Duration::from_millis(50));
    let t = target(&w.gh, repo());
    let ss = w.client.create_scale_set(&t, &request("ss")).await.unwrap();
    let session = w.client.create_session(&t, ss.id, "hangar").await.unwrap();
    // Nothing queued: the poll waits, then the service answers 202.
    assert_eq!(w.client.get_message(&session, 0, 4).await.unwrap(), None);
    let h = w.fa.last_poll_headers().unwrap();
    assert_eq!(h["x-scalesetmaxcapacity"], "4");
    assert_eq!(h["accept"], "application/json; api-version=6.0-preview");

    let rid = w.fa.queue_job("ss", "octo/app");
    let m1 = w.client.get_message(&session, 0, 4).await.unwrap().unwrap();
    let [ScaleSetJobEvent::Available { job }] = m1.events.as_slice() else {
        panic!("{m1:?}")
    };
    assert_eq!(job.runner_request_id, rid);
    assert_eq!(job.repository, "octo/app");
    assert_eq!(job.request_labels, ["ss"]);
    assert_eq!(m1.statistics.unwrap().total_available_jobs, 1);
    // Not acknowledged: the same message again.
    let again = w.client.get_message(&session, 0, 4).await.unwrap().unwrap();
    assert_eq!(again.message_id, m1.message_id);
    w.client
        .delete_message(&session, m1.message_id)
        .await
        .unwrap();

    let got = w.client.acquire_jobs(&t, &session, &[rid]).await.unwrap();
    assert_eq!(got, [rid]);
    let m2 = w
        .client
        .get_message(&session, m1.message_id, 4)
        .await
        .unwrap()
        .unwrap();
    assert!(m2.message_id > m1.message_id);
    assert!(
        matches!(m2.events.as_slice(), [ScaleSetJobEvent::Assigned { job }] if job.runner_request_id == rid),
        "{m2:?}"
    );
    assert_eq!(m2.statistics.unwrap().total_assigned_jobs, 1);
    w.client
        .delete_message(&session, m2.message_id)
        .await
        .unwrap();

    // A runner of the scale set registers and comes online: it takes the job.
    let jit = w
        .client
        .generate_jit_config(&t, ss.id, "hangar-ss-1", "_work")
        .await
        .unwrap();
    assert_eq!(jit.runner_name, "hangar-ss-1");
    let decoded = FakeJitConfig::decode(jit.encoded_jit_config.expose()).unwrap();
    assert_eq!(decoded.runner_id, jit.runner_id);
    assert_eq!(decoded.fake_github_url, w.fa.url());
    let clash = w
        .client
        .generate_jit_config(&t, ss.id, "hangar-ss-1", "_work")
        .await;
    assert!(
        matches!(clash, Err(ForgeError::AlreadyExists(_))),
        "{clash:?}"
    );
    let r = w
        .client
        .get_runner_by_name(&t, "hangar-ss-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.id, r.scale_set_id), (jit.runner_id, ss.id));
    assert!(w.fa.runner_online(jit.runner_id));

    let mut last = m2.message_id;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e| matches!(e, ScaleSetJobEvent::Completed { .. }))
    {
        if let Some(m) = w.client.get_message(&session, last, 4).await.unwrap() {
            last = m.message_id;
            w.client
                .delete_message(&session, m.message_id)
                .await
                .unwrap();
            seen.extend(m.events);
        }
    }
    let ScaleSetJobEvent::Started { runner_name, .. } = &seen[0] else {
        panic!("{seen:?}")
    };
    assert_eq!(runner_name, "hangar-ss-1");
    let Some(ScaleSetJobEvent::Completed { result, .. }) = seen.last() else {
        panic!("{seen:?}")
    };
    assert_eq!(result, "succeeded");
    let job = w.fa.job(rid).unwrap();
    assert_eq!((job.status.as_str(), job.starts), ("completed", 1));
    // The ephemeral runner is gone; deleting it again is fine.
    assert_eq!(
        w.client
            .get_runner_by_name(&t, "hangar-ss-1")
            .await
            .unwrap(),
        None
    );
    w.client.delete_runner(&t, jit.runner_id).await.unwrap();
    assert_eq!(w.fa.unacknowledged("ss"), 0);
}

#[tokio::test]
async fn a_busy_runner_is_not_deleted() {
    let w = world().await;
    w.fa.set_job_duration(Duration::from_secs(30));
    let t = target(&w.gh, repo());
    let ss = w.client.create_scale_set(&t, &request("ss")).await.unwrap();
    let session = w.client.create_session(&t, ss.id, "hangar").await.unwrap();
    let rid = w.fa.queue_job("ss", "octo/app");
    w.client.acquire_jobs(&t, &session, &[rid]).await.unwrap();
    let jit = w
        .client
        .generate_jit_config(&t, ss.id, "r1", "_work")
        .await
        .unwrap();
    w.fa.runner_online(jit.runner_id);
    let busy = w.client.delete_runner(&t, jit.runner_id).await;
    assert!(matches!(busy, Err(ForgeError::Busy(_))), "{busy:?}");
    // An idle one is.
    let idle = w
        .client
        .generate_jit_config(&t, ss.id, "r2", "_work")
        .await
        .unwrap();
    w.client.delete_runner(&t, idle.runner_id).await.unwrap();
    assert!(w.fa.removed_runners().contains(&idle.runner_id));
}

#[tokio::test]
async fn expired_queue_token_is_unauthorized_until_the_session_is_refreshed() {
    let w = world().await;
    let t = target(&w.gh, repo());
    let ss = w.client.create_scale_set(&t, &request("ss")).await.unwrap();
    let session = w.client.create_session(&t, ss.id, "hangar").await.unwrap();
    w.fa.queue_job("ss", "octo/app");
    w.fa.expire_queue_tokens();
    let e = w.client.get_message(&session, 0, 1).await;
    assert!(matches!(e, Err(ForgeError::Unauthorized(_))), "{e:?}");
    let e = w.client.acquire_jobs(&t, &session, &[1]).await;
    assert!(matches!(e, Err(ForgeError::Unauthorized(_))), "{e:?}");
    let fresh = w.client.refresh_session(&t, &session).await.unwrap();
    let m = w.client.get_message(&fresh, 0, 1).await.unwrap();
    assert!(m.is_some_and(|m| m.events.len() == 1));
}

#[tokio::test]
async fn server_errors_and_dropped_polls_are_transient() {
    let w = world().await;
    let t = target(&w.gh, repo());
    let ss = w.client.create_scale_set(&t, &request("ss")).await.unwrap();
    // A short outage: idempotent reads are retried through it.
    w.fa.fail_for(Duration::from_millis(60), 503);
    assert!(w.client.get_scale_set(&t, ss.id).await.unwrap().is_some());
    // A longer one: a session create (sent once) fails as transient.
    w.fa.fail_for(Duration::from_secs(30), 503);
    let e = w.client.create_session(&t, ss.id, "hangar").await;
    assert!(matches!(e, Err(ForgeError::Transient(_))), "{e:?}");
    w.fa.fail_for(Duration::ZERO, 503);
    // 429 carries its wait.
    w.fa.inject(None, "/sessions", 1, ActionsFault::Status(429));
    let e = w.client.create_session(&t, ss.id, "hangar").await;
    assert!(matches!(e, Err(ForgeError::RateLimited { .. })), "{e:?}");

    let session = w.client.create_session(&t, ss.id, "hangar").await.unwrap();
    w.fa.inject(Some(http::Method::GET), "/_queue/", 1, ActionsFault::Drop);
    let e = w.client.get_message(&session, 0, 1).await;
    assert!(matches!(e, Err(ForgeError::Transient(_))), "{e:?}");
    w.fa.queue_job("ss", "octo/app");
    let m = w.client.get_message(&session, 0, 1).await.unwrap();
    assert!(m.is_some());
    assert!(w.fa.faults_fired() >= 3);
}

#[tokio::test]
async fn a_scale_set_deleted_on_github_is_not_found() {
    let w = world().await;
    let t = target(&w.gh, repo());
    let ss = w.client.create_scale_set(&t, &request("ss")).await.unwrap();
    let session = w.client.create_session(&t, ss.id, "hangar").await.unwrap();
    w.fa.delete_scale_set("ss");
    assert_eq!(w.client.get_scale_set(&t, ss.id).await.unwrap(), None);
    let e = w.client.get_message(&session, 0, 1).await;
    assert!(matches!(e, Err(ForgeError::NotFound(_))), "{e:?}");
    let e = w.client.create_session(&t, ss.id, "hangar").await;
    assert!(matches!(e, Err(ForgeError::NotFound(_))), "{e:?}");
}
