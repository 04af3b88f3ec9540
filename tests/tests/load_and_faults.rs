//! Hangar under pressure, with the real `hangard`: a storm of concurrent
//! jobs across pools, a crash (kill -9) in the middle of a burst, injected
//! GitHub and provider faults, and a check that no secret reaches the logs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hangar_e2e::{Api, Daemon, PASSWORD, bin, free_port, wait_for, write_config};
use hangar_testkit::fake_github::{FakeGitHub, FaultKind};
use serde_json::json;

const SECRET: &str = "load-webhook-secret-XYZ";

async fn start(dir: &Path, port: u16, providers: &str) -> (Daemon, Api) {
    let config = write_config(dir, port, providers);
    let daemon = Daemon::start(dir, port, &config).await.unwrap();
    let api = Api::init(&daemon.url).await.unwrap();
    (daemon, api)
}

const IN_PROCESS: &str = r#"
[github]
budget_per_hour = 1000000
budget_burst = 100000

[scheduler]
reconcile_interval_secs = 2
backoff_base_ms = 50
backoff_max_ms = 500
# The pool's circuit breaker backs off in seconds here, so injected
# faults cost seconds, not minutes.
breaker_base_secs = 1
breaker_max_secs = 2

[[provider]]
name = "fake"
kind = "fake"
[provider.fake]
boot = "simulate"
"#;

async fn live_per_pool(api: &Api) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for i in api.instances(false).await.unwrap_or_default() {
        *m.entry(i["pool_id"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_500_jobs_never_exceeds_max_runners_and_every_job_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, api) = start(dir.path(), free_port(), IN_PROCESS).await;
    let gh = FakeGitHub::start().await;
    gh.set_job_duration(Duration::from_millis(20));
    api.add_github(&gh.url()).await.unwrap();
    let repo = api.add_repo("octo", "storm", SECRET).await.unwrap();
    gh.set_webhook_target(format!("{}/webhooks/{repo}", api.url), SECRET);
    let mut max = HashMap::new();
    for (label, m) in [("a", 5usize), ("b", 3), ("c", 4)] {
        let id = api
            .add_pool(
                &repo,
                json!({"provider_name": "fake", "image": "i", "flavor": "f",
                                    "tags": ["self-hosted", label], "max_runners": m}),
            )
            .await
            .unwrap();
        max.insert(id, m);
    }

    // Watch the live instances per pool while the storm runs.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let api = api.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak: HashMap<String, usize> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                for (p, n) in live_per_pool(&api).await {
                    let e = peak.entry(p).or_default();
                    *e = (*e).max(n);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    let mut sends = Vec::new();
    for i in 0..500 {
        let gh = gh.clone();
        let label = ["a", "b", "c"][i % 3];
        sends.push(tokio::spawn(async move {
            gh.queue_job("octo/storm", &["self-hosted", label]).await
        }));
    }
    let mut jobs = Vec::new();
    for s in sends {
        jobs.push(s.await.unwrap());
    }
    assert!(
        gh.deliveries()
            .iter()
            .filter(|d| d.action == "queued")
            .all(|d| d.status == 202),
        "every queued delivery accepted"
    );
    gh.wait_for(Duration::from_secs(240), "all 500 jobs to complete", |g| {
        g.jobs().iter().filter(|j| j.status == "completed").count() == 500
    })
    .await;
    let api2 = api.clone();
    wait_for(Duration::from_secs(60), "every instance to be gone", || {
        let api = api2.clone();
        async move {
            let n = api.instances(false).await.map_err(|e| e.to_string())?.len();
            if n == 0 {
                Ok(())
            } else {
                Err(format!("{n} live instances"))
            }
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let peak = watcher.await.unwrap();
    for (pool, m) in &max {
        let p = peak.get(pool).copied().unwrap_or(0);
        assert!(
            p <= *m,
            "pool {pool} peaked at {p} instances, max_runners is {m}"
        );
        assert!(p > 0, "pool {pool} never ran");
    }
    assert!(gh.runners().is_empty(), "no runner left registered");
    let hangar_jobs = api.jobs().await.unwrap();
    assert_eq!(
        hangar_jobs
            .iter()
            .filter(|j| j["status"] == "completed")
            .count(),
        500
    );
}

fn external_fake(state: &Path) -> String {
    std::fs::create_dir_all(state).unwrap();
    let cfg = state.join("fake-provider.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\nboot = \"simulate\"\ncreate_delay_ms = 200\n",
            state.display()
        ),
    )
    .unwrap();
    format!(
        r#"
[scheduler]
reconcile_interval_secs = 2
lost_instance_grace_secs = 5
backoff_base_ms = 100
backoff_max_ms = 1000
breaker_base_secs = 1
breaker_max_secs = 2

[[provider]]
name = "ext"
kind = "external"
[provider.external]
executable = "{exe}"
config_file = "{cfg}"
"#,
        exe = bin("hangar-fake-provider").display(),
        cfg = cfg.display()
    )
}

/// Instances the external fake provider holds (one JSON file each).
fn provider_instances(state: &Path) -> Vec<String> {
    std::fs::read_dir(state)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_then_restart_serves_every_accepted_job_and_leaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("provider-state");
    let providers = external_fake(&state);
    let port = free_port();
    let (mut daemon, api) = start(dir.path(), port, &providers).await;
    let gh = FakeGitHub::start().await;
    gh.set_job_duration(Duration::from_millis(50));
    api.add_github(&gh.url()).await.unwrap();
    let repo = api.add_repo("octo", "crash", SECRET).await.unwrap();
    gh.set_webhook_target(format!("{}/webhooks/{repo}", api.url), SECRET);
    api.add_pool(
        &repo,
        json!({"provider_name": "ext", "image": "i", "flavor": "f",
                               "tags": ["self-hosted", "linux"], "max_runners": 4}),
    )
    .await
    .unwrap();

    let mut sends = Vec::new();
    for _ in 0..30 {
        let gh = gh.clone();
        sends.push(tokio::spawn(async move {
            gh.queue_job("octo/crash", &["self-hosted", "linux"]).await
        }));
    }
    for s in sends {
        s.await.unwrap();
    }
    // Crash while creates are under way.
    let calls = state.join("calls.log");
    wait_for(Duration::from_secs(60), "some creates to start", || {
        let calls = calls.clone();
        async move {
            let n = std::fs::read_to_string(&calls)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("CreateInstance"))
                .count();
            if n >= 2 {
                Ok(())
            } else {
                Err(format!("{n} creates"))
            }
        }
    })
    .await;
    daemon.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let config = daemon.config.clone();
    let mut daemon = Daemon::start(dir.path(), port, &config).await.unwrap();
    let accepted: Vec<i64> = gh
        .deliveries()
        .iter()
        .filter(|d| d.action == "queued" && d.status == 202)
        .map(|d| d.job_id)
        .collect();
    assert_eq!(
        accepted.len(),
        30,
        "all queued before the crash were acknowledged"
    );
    gh.wait_for(
        Duration::from_secs(240),
        "every accepted job to complete",
        |g| {
            accepted
                .iter()
                .all(|id| g.job(*id).is_some_and(|j| j.status == "completed"))
        },
    )
    .await;
    let api = Api::login(&daemon.url).await.unwrap();
    let st = state.clone();
    wait_for(
        Duration::from_secs(120),
        "no instance left anywhere",
        || {
            let api = api.clone();
            let st = st.clone();
            async move {
                let live = api.instances(false).await.map_err(|e| e.to_string())?.len();
                let vms = provider_instances(&st);
                if live == 0 && vms.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{live} live in hangar, provider holds {vms:?}"))
                }
            }
        },
    )
    .await;
    wait_for(Duration::from_secs(60), "no runner left registered", || {
        let gh = gh.clone();
        async move {
            if gh.runners().is_empty() {
                Ok(())
            } else {
                Err(format!("{:?}", gh.runners()))
            }
        }
    })
    .await;
    let logs = daemon.all_logs();
    assert!(
        logs.contains("recovered instances interrupted by a restart")
            || logs.contains("reserved instance"),
        "restart recovery ran"
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_and_provider_faults_are_retried_with_bounds_and_jobs_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let providers = IN_PROCESS.replace(
        "boot = \"simulate\"",
        "boot = \"simulate\"\nfail_first_creates = 3",
    );
    let (_daemon, api) = start(dir.path(), free_port(), &providers).await;
    let gh = FakeGitHub::start().await;
    gh.set_job_duration(Duration::from_millis(50));
    api.add_github(&gh.url()).await.unwrap();
    let repo = api.add_repo("octo", "faults", SECRET).await.unwrap();
    gh.set_webhook_target(format!("{}/webhooks/{repo}", api.url), SECRET);
    api.add_pool(
        &repo,
        json!({"provider_name": "fake", "image": "i", "flavor": "f",
                               "tags": ["self-hosted"], "max_runners": 2}),
    )
    .await
    .unwrap();
    gh.inject(
        Some(reqwest::Method::POST),
        "generate-jitconfig",
        2,
        FaultKind::Status(502),
    );
    gh.inject(
        Some(reqwest::Method::POST),
        "generate-jitconfig",
        1,
        FaultKind::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    gh.inject(
        Some(reqwest::Method::DELETE),
        "/actions/runners/",
        2,
        FaultKind::Status(500),
    );
    let mut jobs = Vec::new();
    for _ in 0..6 {
        jobs.push(gh.queue_job("octo/faults", &["self-hosted"]).await);
    }
    gh.wait_for(
        Duration::from_secs(180),
        "all jobs to complete despite faults",
        |g| {
            jobs.iter()
                .all(|id| g.job(*id).is_some_and(|j| j.status == "completed"))
        },
    )
    .await;
    let api2 = api.clone();
    wait_for(Duration::from_secs(60), "instances gone", || {
        let api = api2.clone();
        async move {
            let n = api.instances(false).await.map_err(|e| e.to_string())?.len();
            if n == 0 {
                Ok(())
            } else {
                Err(format!("{n} live"))
            }
        }
    })
    .await;
    // Bounded: six jobs, three failed JIT calls and three failed creates
    // cost a handful of extra calls, not a storm of them.
    let jit_calls = gh.calls("generate-jitconfig");
    assert!(
        (6 + 3..=6 + 3 + 4).contains(&jit_calls),
        "{jit_calls} JIT calls"
    );
    let all = api.instances(true).await.unwrap();
    let attempts: u64 = all
        .iter()
        .map(|i| i["create_attempts"].as_u64().unwrap())
        .sum();
    // Each instance's create counts once, and each failure once more:
    // three refused JIT registrations and three failed provider creates.
    assert!(
        attempts <= all.len() as u64 + 3 + 3,
        "{attempts} create attempts for {} instances",
        all.len()
    );
    assert!(
        all.iter()
            .any(|i| i["create_attempts"].as_u64().unwrap() > 1),
        "failed creates were retried"
    );
    let m = reqwest::get(format!("{}/metrics", api.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("op=\"create\",outcome=\"transient\"} 3"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, api) = start(dir.path(), free_port(), IN_PROCESS).await;
    let gh = FakeGitHub::start().await;
    gh.set_job_duration(Duration::from_millis(50));
    api.add_github(&gh.url()).await.unwrap();
    let repo = api.add_repo("octo", "secrets", SECRET).await.unwrap();
    gh.set_webhook_target(format!("{}/webhooks/{repo}", api.url), SECRET);
    api.add_pool(&repo, json!({"provider_name": "fake", "image": "i", "flavor": "f", "tags": ["self-hosted"], "max_runners": 1}))
        .await
        .unwrap();
    let job = gh.queue_job("octo/secrets", &["self-hosted"]).await;
    gh.wait_for(Duration::from_secs(60), "the job", |g| {
        g.job(job).is_some_and(|j| j.status == "completed")
    })
    .await;
    // A JIT config FakeGitHub issued (they are deterministic).
    let j = gh.job(job).unwrap();
    let jit = hangar_testkit::runner_sim::FakeJitConfig {
        fake_github_url: gh.url(),
        runner_id: j.runner_id.unwrap(),
        runner_name: j.runner_name.unwrap(),
    }
    .encode();
    let logs = daemon.all_logs();
    assert!(logs.len() > 1000, "logs were written");
    for secret in [
        SECRET,
        "ghp_e2eTOKENthatMustNotLeak",
        PASSWORD,
        hangar_e2e::PASSPHRASE,
        jit.as_str(),
        api.token.as_str(),
    ] {
        assert!(
            !logs.contains(secret),
            "secret {secret:?} found in the logs"
        );
    }
}
