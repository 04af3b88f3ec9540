//! The whole life of a job against the real `hangard`: a queued webhook
//! from FakeGitHub → JIT config → instance created → the simulated runner
//! fetches its JIT config and reports in → FakeGitHub hands it the job →
//! `in_progress` → `completed` → runner gone from GitHub → instance deleted.

use std::time::Duration;

use hangar_e2e::{Api, Daemon, free_port, wait_for, write_config};
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::{Value, json};

const SECRET: &str = "e2e-webhook-secret-value";

fn fake_provider(extra: &str) -> String {
    format!(
        r#"
[scheduler]
reconcile_interval_secs = 2

[[provider]]
name = "fake"
kind = "fake"
[provider.fake]
boot = "simulate"
{extra}
"#
    )
}

async fn setup(extra: &str) -> (tempfile::TempDir, Daemon, Api, FakeGitHub, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, &fake_provider(extra));
    let daemon = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::init(&daemon.url).await.unwrap();
    let gh = FakeGitHub::start().await;
    gh.set_job_duration(Duration::from_millis(300));
    api.add_github(&gh.url()).await.unwrap();
    let repo = api.add_repo("octo", "app", SECRET).await.unwrap();
    gh.set_webhook_target(format!("{}/webhooks/{repo}", daemon.url), SECRET);
    (dir, daemon, api, gh, repo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_gets_a_fresh_runner_that_is_gone_afterwards() {
    let (_dir, daemon, api, gh, repo) = setup("").await;
    let pool = api
        .add_pool(
            &repo,
            json!({"provider_name": "fake", "image": "ubuntu", "flavor": "small",
                   "tags": ["self-hosted", "linux", "x64"], "max_runners": 2}),
        )
        .await
        .unwrap();

    let job = gh.queue_job("octo/app", &["self-hosted", "Linux"]).await;
    assert_eq!(gh.deliveries()[0].status, 202, "queued delivery recorded");

    gh.wait_for(
        Duration::from_secs(60),
        "the job to run and complete",
        |g| g.job(job).is_some_and(|j| j.status == "completed"),
    )
    .await;
    let ran_on = gh.job(job).unwrap().runner_name.unwrap();
    assert!(ran_on.starts_with("hangar-"), "{ran_on}");

    // Hangar saw every step and retired the instance.
    let api2 = api.clone();
    let name = ran_on.clone();
    let inst: Value = wait_for(
        Duration::from_secs(60),
        "the instance to be deleted",
        || {
            let api = api2.clone();
            let name = name.clone();
            async move {
                let all = api.instances(true).await.map_err(|e| e.to_string())?;
                let i = all
                    .into_iter()
                    .find(|i| i["name"] == name.as_str())
                    .ok_or("instance missing")?;
                if i["status"] == "deleted" {
                    Ok(i)
                } else {
                    Err(format!("instance is {}", i["status"]))
                }
            }
        },
    )
    .await;
    assert_eq!(inst["pool_id"], pool.as_str());
    assert_eq!(inst["runner_status"], "terminated");
    assert!(
        api.instances(false).await.unwrap().is_empty(),
        "no live instance left"
    );
    assert!(
        gh.runners().is_empty(),
        "no runner left registered on GitHub"
    );

    let jobs = api.jobs().await.unwrap();
    let j = jobs.iter().find(|j| j["id"] == job).expect("job recorded");
    assert_eq!(j["status"], "completed");
    assert_eq!(j["runner_name"], ran_on.as_str());
    assert_eq!(j["pool_id"], pool.as_str());
    assert_eq!(gh.calls("generate-jitconfig"), 1, "one runner for one job");

    // The metrics saw it too.
    let metrics = reqwest::get(format!("{}/metrics", daemon.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hangar_time_to_create_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hangar_time_to_runner_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hangar_webhooks_total{event=\"workflow_job\",outcome=\"recorded\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_idle_runners_are_kept() {
    let (_dir, _daemon, api, gh, repo) = setup("").await;
    api.add_pool(
        &repo,
        json!({"provider_name": "fake", "image": "ubuntu", "flavor": "small",
               "tags": ["self-hosted", "linux"], "min_idle_runners": 2, "max_runners": 3}),
    )
    .await
    .unwrap();
    let idle = |api: Api| async move {
        let all = api.instances(false).await.map_err(|e| e.to_string())?;
        let n = all.iter().filter(|i| i["runner_status"] == "idle").count();
        if n == 2 && all.len() == 2 {
            Ok(())
        } else {
            Err(format!("{} instances, {n} idle", all.len()))
        }
    };
    wait_for(Duration::from_secs(60), "two idle runners", || {
        idle(api.clone())
    })
    .await;

    // A job takes one of them; a replacement tops the pool back up.
    let job = gh.queue_job("octo/app", &["self-hosted"]).await;
    gh.wait_for(Duration::from_secs(60), "the job to complete", |g| {
        g.job(job).is_some_and(|j| j.status == "completed")
    })
    .await;
    wait_for(Duration::from_secs(60), "two idle runners again", || {
        idle(api.clone())
    })
    .await;
    assert_eq!(
        gh.calls("generate-jitconfig"),
        3,
        "two idle + one replacement"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_jobs_are_accepted_and_served_once_a_pool_fits() {
    let (_dir, _daemon, api, gh, repo) = setup("").await;
    let job = gh.queue_job("octo/app", &["self-hosted", "gpu"]).await;
    assert_eq!(
        gh.deliveries()[0].status,
        200,
        "no pool: accepted, not an error"
    );
    let jobs = api.jobs().await.unwrap();
    assert!(
        jobs.iter()
            .any(|j| j["id"] == job && j["pool_id"].is_null())
    );
    api.add_pool(
        &repo,
        json!({"provider_name": "fake", "image": "ubuntu", "flavor": "small",
               "tags": ["self-hosted", "gpu"], "max_runners": 1}),
    )
    .await
    .unwrap();
    gh.wait_for(
        Duration::from_secs(60),
        "the unmatched job to be served",
        |g| g.job(job).is_some_and(|j| j.status == "completed"),
    )
    .await;
}
