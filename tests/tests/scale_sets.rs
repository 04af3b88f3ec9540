//! Runner scale sets end to end, with no webhook configured at all: the
//! real `hangard`, `FakeGitHub` (REST: registration tokens) and
//! `FakeActions` (the Actions service: scale sets, sessions, the message
//! queue, JIT runners), and a fake provider whose simulated VMs boot, fetch
//! their JIT config from hangard and come online at FakeActions.
//!
//! A job queued on the scale set → `JobAvailable` → hangard acquires it →
//! `JobAssigned` → the provider creates a VM → the runner boots and takes
//! the job → `JobStarted` / `JobCompleted` → the VM is deleted.
//!
//! The crash run (`kill -9` of hangard in the middle of a stream of jobs,
//! then a restart) uses the external fake provider, whose VMs outlive the
//! daemon in its state folder: every job is served once, no VM is left, no
//! runner stays registered, and `max_runners` is never exceeded (sampled
//! continuously at FakeActions and in hangard). 100 jobs by default;
//! `HANGAR_E2E_LONG=1` runs 500.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar_e2e::{Api, Daemon, bin, free_port, wait_for, write_config};
use hangar_testkit::fake_actions::{ActionsFault, FakeActions};
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::{Value, json};

const SECRET: &str = "unused-webhook-secret-value";

fn in_process_provider() -> String {
    r#"
[scheduler]
reconcile_interval_secs = 2

[[provider]]
name = "fake"
kind = "fake"
[provider.fake]
boot = "simulate"
"#
    .to_owned()
}

/// A `[[provider]]` of the external fake with its own state folder.
fn external_provider(dir: &Path) -> (String, PathBuf) {
    let state = dir.join("state-fake");
    std::fs::create_dir_all(&state).unwrap();
    let cfg = state.join("fake-provider.toml");
    std::fs::write(
        &cfg,
        format!("state_dir = \"{}\"\nboot = \"simulate\"\n", state.display()),
    )
    .unwrap();
    let toml = format!(
        "[scheduler]\nreconcile_interval_secs = 2\n\n[[provider]]\nname = \"fake\"\nkind = \"external\"\n[provider.external]\nexecutable = \"{}\"\nconfig_file = \"{}\"\n",
        bin("hangar-fake-provider").display(),
        cfg.display()
    );
    (toml, state)
}

/// VMs the external fake provider holds now.
fn live_vms(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("instances"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

struct World {
    _dir: tempfile::TempDir,
    daemon: Daemon,
    api: Api,
    gh: FakeGitHub,
    fa: FakeActions,
}

async fn world(provider: &str, dir: tempfile::TempDir) -> World {
    let port = free_port();
    let config = write_config(dir.path(), port, provider);
    let daemon = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::init(&daemon.url).await.unwrap();
    let gh = FakeGitHub::start().await;
    let fa = FakeActions::start(&gh).await;
    // Shorter than the service's 50 s, so a test's last poll ends soon.
    fa.set_poll_wait(Duration::from_secs(5));
    fa.set_job_duration(Duration::from_millis(300));
    api.add_github(&gh.url()).await.unwrap();
    World {
        _dir: dir,
        daemon,
        api,
        gh,
        fa,
    }
}

/// Creates a scale set under `entity` (`repositories/ID`, …) and waits
/// until hangard's listener holds its session at FakeActions.
async fn add_scale_set(w: &World, entity: &str, body: Value) -> Value {
    let ss = w
        .api
        .post(&format!("/api/v1/{entity}/scalesets"), body)
        .await
        .unwrap();
    assert!(ss["github_id"].as_i64().is_some(), "{ss}");
    let name = ss["name"].as_str().unwrap().to_owned();
    w.fa.wait_for(Duration::from_secs(60), |fa| {
        fa.scale_sets()
            .iter()
            .any(|s| s.name == name && s.session_owner.is_some())
    })
    .await
    .then_some(())
    .unwrap_or_else(|| panic!("no listener session for {name}:\n{}", w.daemon.logs()));
    ss
}

/// Waits until every instance of `pool_id` hangard ever had is deleted;
/// returns them.
async fn all_deleted(api: &Api, pool_id: &str, at_least: usize) -> Vec<Value> {
    let api = api.clone();
    let pool_id = pool_id.to_owned();
    wait_for(Duration::from_secs(90), "every instance deleted", || {
        let api = api.clone();
        let pool_id = pool_id.clone();
        async move {
            let all = api.instances(true).await.map_err(|e| e.to_string())?;
            let mine: Vec<Value> = all
                .into_iter()
                .filter(|i| i["pool_id"] == pool_id.as_str())
                .collect();
            if mine.len() >= at_least && mine.iter().all(|i| i["status"] == "deleted") {
                Ok(mine)
            } else {
                Err(format!("{mine:?}"))
            }
        }
    })
    .await
}

/// One job through a scale set of `entity`, queued for `repo`.
async fn one_job(w: &World, entity: &str, repo: &str) {
    let ss = add_scale_set(
        w,
        entity,
        json!({"name": "hangar-e2e-ss", "provider_name": "fake", "image": "ubuntu",
               "flavor": "small", "max_runners": 2}),
    )
    .await;
    let pool_id = ss["pool_id"].as_str().unwrap().to_owned();
    // Nothing runs before a job asks for it (min_idle_runners = 0).
    assert!(w.api.instances(false).await.unwrap().is_empty());

    let rid = w.fa.queue_job("hangar-e2e-ss", repo);
    let served =
        w.fa.wait_for(Duration::from_secs(90), |fa| {
            fa.job(rid).is_some_and(|j| j.status == "completed")
        })
        .await;
    assert!(
        served,
        "job not served: {:?}\n{}",
        w.fa.job(rid),
        w.daemon.logs()
    );
    let job = w.fa.job(rid).unwrap();
    assert_eq!(job.starts, 1, "{job:?}");
    let ran_on = job.runner_name.clone().unwrap();

    // hangard created exactly the VM that ran it, and deleted it.
    let insts = all_deleted(&w.api, &pool_id, 1).await;
    assert_eq!(insts.len(), 1, "{insts:?}");
    assert_eq!(insts[0]["name"], ran_on.as_str());
    // The ephemeral runner is gone from the scale set, every message was
    // acknowledged, and no webhook was ever sent or needed.
    assert!(w.fa.runners().is_empty(), "{:?}", w.fa.runners());
    let fa = w.fa.clone();
    assert!(
        w.fa.wait_for(Duration::from_secs(30), move |_| fa
            .unacknowledged("hangar-e2e-ss")
            == 0)
            .await
    );
    assert!(w.gh.deliveries().is_empty());
    assert!(w.gh.hooks().is_empty());
    // The scale set shows what the queue said.
    let shown = w
        .api
        .get(&format!("/api/v1/scalesets/{}", ss["id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(shown["state"], "active", "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_scale_set_serves_a_job_without_webhooks() {
    let w = world(&in_process_provider(), tempfile::tempdir().unwrap()).await;
    let repo = w.api.add_repo("octo", "app", SECRET).await.unwrap();
    one_job(&w, &format!("repositories/{repo}"), "octo/app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_scale_set_serves_a_job_of_any_of_its_repositories() {
    let w = world(&in_process_provider(), tempfile::tempdir().unwrap()).await;
    let org = w
        .api
        .post(
            "/api/v1/organizations",
            json!({"name": "octo", "credentials_name": "gh", "webhook_secret": SECRET}),
        )
        .await
        .unwrap();
    let org = org["id"].as_str().unwrap();
    one_job(&w, &format!("organizations/{org}"), "octo/website").await;
}
