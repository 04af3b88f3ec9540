//! With the real `hangard`, `FakeGitHub` and the external
//! `hangar-fake-provider`: a provider that fails every create is backed off
//! by the pool's circuit breaker (bounded creates and JIT registrations,
//! the pool shown degraded with the reason), and a kill -9 in the middle of
//! slow creates leaves each instance created once, adopted after the
//! restart, with one runner registration per name.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hangar_e2e::{Api, Daemon, bin, free_port, wait_for, write_config};
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::{Value, json};

const SECRET: &str = "breaker-webhook-secret";

/// A `[[provider]]` of the external fake with its own state folder.
fn external(dir: &Path, name: &str, settings: &str) -> (String, PathBuf) {
    let state = dir.join(format!("state-{name}"));
    std::fs::create_dir_all(&state).unwrap();
    let cfg = state.join("fake-provider.toml");
    std::fs::write(
        &cfg,
        format!("state_dir = \"{}\"\n{settings}\n", state.display()),
    )
    .unwrap();
    let toml = format!(
        "[[provider]]\nname = \"{name}\"\nkind = \"external\"\n[provider.external]\nexecutable = \"{}\"\nconfig_file = \"{}\"\n",
        bin("hangar-fake-provider").display(),
        cfg.display()
    );
    (toml, state)
}

/// CreateInstance calls the provider saw, by instance name.
fn creates(state: &Path) -> Vec<String> {
    std::fs::read_to_string(state.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("CreateInstance "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `hangar … --output json` as a script runs it.
fn hangar(api: &Api, cli_dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(bin("hangar"))
        .env_remove("HANGAR_PROFILE")
        .env("HANGAR_CLI_CONFIG_DIR", cli_dir)
        .env("HANGAR_URL", &api.url)
        .env("HANGAR_TOKEN", &api.token)
        .args(args)
        .args(["--output", "json"])
        .output()
        .expect("run hangar");
    assert!(
        out.status.success(),
        "hangar {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failing_every_create_is_backed_off_and_pool_show_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (garbage, garbage_state) = external(dir.path(), "garbage", "fail_create = \"garbage\"");
    let (exit1, exit1_state) = external(dir.path(), "exitone", "fail_create = \"exit1\"");
    let port = free_port();
    let config = write_config(
        dir.path(),
        port,
        &format!("[scheduler]\nreconcile_interval_secs = 2\n\n{garbage}\n{exit1}"),
    );
    let mut daemon = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::init(&daemon.url).await.unwrap();
    let gh = FakeGitHub::start().await;
    api.add_github(&gh.url()).await.unwrap();
    let repo = api.add_repo("octo", "broken", SECRET).await.unwrap();
    gh.set_webhook_target(format!("{}/webhooks/{repo}", api.url), SECRET);
    let mut pools = Vec::new();
    for provider in ["garbage", "exitone"] {
        let id = api
            .add_pool(
                &repo,
                json!({"provider_name": provider, "image": "i", "flavor": "f",
                       "tags": ["self-hosted", provider], "max_runners": 4}),
            )
            .await
            .unwrap();
        pools.push(id);
    }
    let started = std::time::Instant::now();
    for provider in ["garbage", "exitone"] {
        for _ in 0..3 {
            gh.queue_job("octo/broken", &["self-hosted", provider])
                .await;
        }
    }

    // Both pools back off.
    for id in &pools {
        let path = format!("/api/v1/pools/{id}");
        wait_for(Duration::from_secs(30), "the pool to show degraded", || {
            let api = api.clone();
            let path = path.clone();
            async move {
                let p = api.get(&path).await.map_err(|e| e.to_string())?;
                if p["health"]["state"] == "degraded" {
                    Ok(())
                } else {
                    Err(p["health"].to_string())
                }
            }
        })
        .await;
    }
    // Then an observation window: everything the pools cost over ~25 s.
    tokio::time::sleep(Duration::from_secs(25).saturating_sub(started.elapsed())).await;
    let elapsed = started.elapsed();
    let garbage_creates = creates(&garbage_state).len();
    let exit1_creates = creates(&exit1_state).len();
    let jit = gh.calls("generate-jitconfig");
    eprintln!(
        "over {elapsed:?}: creates garbage={garbage_creates} exit1={exit1_creates}, JIT registrations (both pools)={jit}"
    );
    assert!(garbage_creates >= 3, "the threshold's creates were tried");
    assert!(
        garbage_creates <= 10 && exit1_creates <= 10,
        "at most 10 creates per pool in {elapsed:?}: {garbage_creates}, {exit1_creates}"
    );
    assert!(jit <= 20, "at most 10 registrations per pool: {jit}");

    // The API and `pool show` say why.
    let cli_dir = dir.path().join("cli");
    for (id, why) in pools.iter().zip(["garbage", "simulated failure"]) {
        let p = api.get(&format!("/api/v1/pools/{id}")).await.unwrap();
        let h = &p["health"];
        assert_eq!(h["state"], "degraded", "{p}");
        assert!(h["consecutive_failures"].as_u64().unwrap() >= 3, "{h}");
        assert!(h["next_attempt_at"].is_string(), "{h}");
        let last = h["last_error"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            last.contains(why) || !last.is_empty() && why == "garbage",
            "{h}"
        );
        // The CLI prints the API's health. The pool keeps retrying between
        // the two reads, so the count and the next attempt may have moved
        // on; the state and the reason may not.
        let shown = hangar(&api, &cli_dir, &["pool", "show", id]);
        let s = &shown["health"];
        assert_eq!(s["state"], h["state"], "pool show: {s} API: {h}");
        assert_eq!(s["last_error"], h["last_error"], "pool show: {s} API: {h}");
        assert!(
            s["consecutive_failures"].as_u64() >= h["consecutive_failures"].as_u64(),
            "pool show: {s} API: {h}"
        );
        assert!(s["next_attempt_at"].is_string(), "pool show: {s}");
    }
    let listed = hangar(&api, &cli_dir, &["pool", "ls"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["health"]["state"] == "degraded"),
        "{listed}"
    );
    let metrics = reqwest::get(format!("{}/metrics", daemon.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for id in &pools {
        assert!(
            metrics.contains(&format!("hangar_pool_breaker_open{{pool=\"{id}\"}} 1")),
            "{metrics}"
        );
    }

    // A pool update closes the breaker.
    let (s, v) = api
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/pools/{}", pools[1]),
            Some(json!({"max_runners": 2})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["health"]["state"], "ok", "{v}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_create_then_restart_creates_each_instance_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ext, state) = external(
        dir.path(),
        "slow",
        "boot = \"none\"\ncreate_delay_ms = 4000",
    );
    let port = free_port();
    let config = write_config(
        dir.path(),
        port,
        &format!("[scheduler]\nreconcile_interval_secs = 2\n\n{ext}"),
    );
    let mut daemon = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::init(&daemon.url).await.unwrap();
    let gh = FakeGitHub::start().await;
    api.add_github(&gh.url()).await.unwrap();
    let repo = api.add_repo("octo", "crash", SECRET).await.unwrap();
    gh.set_webhook_target(format!("{}/webhooks/{repo}", api.url), SECRET);
    api.add_pool(
        &repo,
        json!({"provider_name": "slow", "image": "i", "flavor": "f",
               "tags": ["self-hosted", "linux"], "max_runners": 3}),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        gh.queue_job("octo/crash", &["self-hosted", "linux"]).await;
    }
    let st = state.clone();
    wait_for(Duration::from_secs(60), "three creates to start", || {
        let st = st.clone();
        async move {
            let n = creates(&st).len();
            if n >= 3 {
                Ok(())
            } else {
                Err(format!("{n} creates"))
            }
        }
    })
    .await;
    // Their processes are still in the provider's 4 s sleep.
    daemon.kill9();
    let mut daemon = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::login(&daemon.url).await.unwrap();
    let running = wait_for(Duration::from_secs(90), "three running instances", || {
        let api = api.clone();
        async move {
            let all = api.instances(false).await.map_err(|e| e.to_string())?;
            let running: Vec<Value> = all
                .iter()
                .filter(|i| i["status"] == "running")
                .cloned()
                .collect();
            if running.len() == 3 && all.len() == 3 {
                Ok(running)
            } else {
                Err(format!("{all:?}"))
            }
        }
    })
    .await;
    // Let the scheduler pass over them a few times more.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let made = creates(&state);
    let names: HashSet<&String> = made.iter().collect();
    assert_eq!(
        made.len(),
        3,
        "each instance created exactly once: {made:?}"
    );
    assert_eq!(names.len(), 3, "{made:?}");
    for i in &running {
        assert!(
            names.contains(&i["name"].as_str().unwrap().to_owned()),
            "{i}"
        );
    }
    let runners = gh.runners();
    let mut runner_names: Vec<&str> = runners.iter().map(|r| r.name.as_str()).collect();
    runner_names.sort();
    let n = runner_names.len();
    runner_names.dedup();
    assert_eq!(
        n,
        runner_names.len(),
        "no runner name registered twice: {runners:?}"
    );
    assert_eq!(n, 3, "{runners:?}");
    let logs = daemon.all_logs();
    assert!(
        logs.contains("settling creates interrupted by a restart"),
        "the restart settled the interrupted creates"
    );
    assert!(
        logs.contains("waiting for the interrupted create's process"),
        "the orphaned provider processes were recorded and waited for"
    );
    assert!(logs.contains("adopted the instance"), "they were adopted");
    daemon.stop();
}
