//! Lost-delivery recovery against the real `hangard` and FakeGitHub: jobs
//! queued while hangard is down (their deliveries fail and FakeGitHub
//! records them as failed, status 0) are served after it starts, with the
//! default `[recovery]` settings — by redelivery when the repository's hook
//! can be read (whether Hangar made the hook or not), by re-listing queued
//! runs when it cannot.

use std::time::Duration;

use hangar_e2e::{Api, Daemon, free_port, write_config};
use hangar_testkit::fake_github::{FakeGitHub, FaultKind, HookKey};
use serde_json::json;

const SECRET: &str = "e2e-recovery-webhook-secret";
/// The promise is "within 3 minutes"; polling returns as soon as it holds.
const SERVED_WITHIN: Duration = Duration::from_secs(180);

/// The fake provider and nothing else: `[recovery]` stays at its defaults.
const CONFIG: &str = r#"
[[provider]]
name = "fake"
kind = "fake"
[provider.fake]
boot = "simulate"
"#;

enum Hook {
    /// Made by Hangar (`POST /api/v1/repositories/{id}/webhook`).
    ByHangar,
    /// Made by someone else on GitHub, to the same URL.
    ByHand,
}

struct Setup {
    _dir: tempfile::TempDir,
    daemon: Daemon,
    gh: FakeGitHub,
}

/// hangard with a repository, a pool and a hook; then hangard stops.
async fn setup(hook: Hook) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, CONFIG);
    let mut daemon = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::init(&daemon.url).await.unwrap();
    let gh = FakeGitHub::start().await;
    gh.set_job_duration(Duration::from_millis(200));
    api.add_github(&gh.url()).await.unwrap();
    let repo = api.add_repo("octo", "app", SECRET).await.unwrap();
    api.add_pool(
        &repo,
        json!({"provider_name": "fake", "image": "ubuntu", "flavor": "small",
               "tags": ["self-hosted", "linux", "x64"], "max_runners": 5}),
    )
    .await
    .unwrap();
    let url = format!("{}/webhooks/{repo}", daemon.url);
    match hook {
        Hook::ByHangar => {
            api.post(
                &format!("/api/v1/repositories/{repo}/webhook"),
                json!({"insecure_ssl": false}),
            )
            .await
            .unwrap();
        }
        Hook::ByHand => {
            let r = reqwest::Client::new()
                .post(format!("{}/repos/octo/app/hooks", gh.url()))
                .bearer_auth("ghp_someone_else")
                .json(
                    &json!({"name": "web", "active": true, "events": ["workflow_job"],
                    "config": {"url": url, "content_type": "json", "secret": SECRET}}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
        }
    }
    assert_eq!(gh.hooks().len(), 1);
    assert_eq!(gh.hooks()[0].url, url);
    daemon.stop();
    Setup {
        _dir: dir,
        daemon,
        gh,
    }
}

/// Five jobs queued while hangard is down: every delivery fails.
async fn queue_five_while_down(gh: &FakeGitHub) -> Vec<i64> {
    let mut jobs = Vec::new();
    for _ in 0..5 {
        jobs.push(gh.queue_job("octo/app", &["self-hosted", "linux"]).await);
    }
    let attempts = gh.delivery_attempts();
    assert_eq!(attempts.len(), 5);
    assert!(
        attempts.iter().all(|a| a.status_code == 0),
        "hangard was down: {attempts:?}"
    );
    jobs
}

async fn restart(s: &mut Setup) {
    let d = &s.daemon;
    s.daemon = Daemon::start(&d.dir, d.port, &d.config).await.unwrap();
}

async fn wait_served(gh: &FakeGitHub, jobs: &[i64]) {
    gh.wait_for(SERVED_WITHIN, "every lost job to be served", |g| {
        jobs.iter().all(|id| {
            g.job(*id)
                .is_some_and(|j| j.status != "queued" && j.runner_name.is_some())
        })
    })
    .await;
}

async fn metric(daemon: &Daemon, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", daemon.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Every lost `queued` delivery was redelivered and answered 2xx.
fn redelivered_every_queued(gh: &FakeGitHub) {
    let attempts = gh.delivery_attempts();
    for lost in attempts
        .iter()
        .filter(|a| !a.redelivery && a.action == "queued")
    {
        assert!(
            attempts.iter().any(|a| a.guid == lost.guid
                && a.redelivery
                && (200..300).contains(&a.status_code)),
            "delivery {} of job {} was not redelivered: {attempts:?}",
            lost.guid,
            lost.job_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queued_while_hangard_was_down_are_served_by_redelivery() {
    let mut s = setup(Hook::ByHangar).await;
    let jobs = queue_five_while_down(&s.gh).await;
    restart(&mut s).await;
    wait_served(&s.gh, &jobs).await;
    s.gh.wait_for(Duration::from_secs(60), "the redeliveries", |g| {
        g.delivery_attempts()
            .iter()
            .filter(|a| a.redelivery && a.action == "queued")
            .count()
            >= 5
    })
    .await;
    redelivered_every_queued(&s.gh);
    assert!(s.gh.calls("redeliver") >= 5);
    assert!(
        metric(
            &s.daemon,
            "hangar_recovery_calls_total{op=\"redeliver\",outcome=\"ok\"}"
        )
        .await
            >= 5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_hangar_did_not_make_is_found_by_its_url() {
    let mut s = setup(Hook::ByHand).await;
    let jobs = queue_five_while_down(&s.gh).await;
    restart(&mut s).await;
    wait_served(&s.gh, &jobs).await;
    s.gh.wait_for(Duration::from_secs(60), "the redeliveries", |g| {
        g.delivery_attempts()
            .iter()
            .filter(|a| a.redelivery && a.action == "queued")
            .count()
            >= 5
    })
    .await;
    redelivered_every_queued(&s.gh);
    let hook = s.gh.hooks()[0].id;
    assert!(
        s.gh.delivery_attempts()
            .iter()
            .all(|a| a.hook == HookKey::Hook(hook)),
        "deliveries went to the hand-made hook"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hook_access_queued_runs_are_listed_instead() {
    let mut s = setup(Hook::ByHangar).await;
    let jobs = queue_five_while_down(&s.gh).await;
    // A PAT without the hook scope: GitHub answers 404 to hook routes.
    s.gh.inject(None, "/hooks", u32::MAX, FaultKind::Status(404));
    restart(&mut s).await;
    wait_served(&s.gh, &jobs).await;
    assert_eq!(s.gh.calls("redeliver"), 0);
    assert!(
        s.gh.delivery_attempts().iter().all(|a| !a.redelivery),
        "nothing was redelivered"
    );
    assert!(s.gh.calls("list-runs") >= 1 && s.gh.calls("run-jobs") >= 1);
    assert_eq!(
        metric(
            &s.daemon,
            "hangar_jobs_recovered_total{path=\"queued_runs\"}"
        )
        .await,
        5.0
    );
}
