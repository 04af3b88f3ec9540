//! With the real `hangard` and `hangar`, GitHub failing every runner call:
//! the stuck runner shows its attempts and last error in `hangar runner
//! ls`/`show`; once its pool is disabled nothing is retried; `hangar
//! runner rm -f` removes it within a few tries (seconds, not the 48 s it
//! once took) and nothing replaces it while the pool is disabled.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use hangar_e2e::{Api, Daemon, bin, free_port, wait_for, write_config};
use hangar_testkit::fake_github::{FakeGitHub, FaultKind};
use serde_json::{Value, json};

const SECRET: &str = "stuck-webhook-secret";

fn hangar(api: &Api, cli_dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("hangar"))
        .env_remove("HANGAR_PROFILE")
        .env("HANGAR_CLI_CONFIG_DIR", cli_dir)
        .env("HANGAR_URL", &api.url)
        .env("HANGAR_TOKEN", &api.token)
        .args(args)
        .output()
        .expect("run hangar")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn live(instances: &[Value]) -> Vec<&Value> {
    instances
        .iter()
        .filter(|i| i["status"] != "deleted")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_stuck_at_github_says_why_stops_when_disabled_and_goes_when_removed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        port,
        "[scheduler]\nreconcile_interval_secs = 2\nbackoff_max_ms = 2000\n\n[[provider]]\nname = \"fake\"\nkind = \"fake\"\n[provider.fake]\nboot = \"none\"\n",
    );
    let _daemon = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::init(&_daemon.url).await.unwrap();
    let gh = FakeGitHub::start().await;
    api.add_github(&gh.url()).await.unwrap();
    let repo = api.add_repo("octo", "stuck", SECRET).await.unwrap();
    gh.set_webhook_target(format!("{}/webhooks/{repo}", api.url), SECRET);
    let pool = api
        .add_pool(
            &repo,
            json!({"provider_name": "fake", "image": "i", "flavor": "f",
                   "tags": ["self-hosted", "stuck"], "max_runners": 2}),
        )
        .await
        .unwrap();
    // Every runner call fails as an unreachable GitHub behind a proxy does.
    gh.inject(None, "actions/runners", u32::MAX, FaultKind::Status(503));
    gh.queue_job("octo/stuck", &["self-hosted", "stuck"]).await;

    // The reason and the attempts are on the runner, not only in the log.
    let cli = dir.path().join("cli");
    let stuck = wait_for(Duration::from_secs(60), "a failed attempt", || {
        let api = api.clone();
        async move {
            let all = api.instances(false).await.map_err(|e| e.to_string())?;
            all.into_iter()
                .find(|i| {
                    i["create_attempts"].as_u64() >= Some(1)
                        && i["status_message"]
                            .as_str()
                            .is_some_and(|m| m.contains("503"))
                })
                .ok_or_else(|| "no attempt recorded yet".to_owned())
        }
    })
    .await;
    let name = stuck["name"].as_str().unwrap().to_owned();
    let table = ok(hangar(&api, &cli, &["runner", "ls"]), "runner ls");
    assert!(
        table.contains("TRIES") && table.contains(&name) && table.contains("503"),
        "{table}"
    );
    assert!(
        table.contains("octo/stuck") && !table.contains(&pool),
        "pool named, not by id: {table}"
    );
    assert!(
        table.lines().all(|l| l.chars().count() <= 100),
        "fits 100 columns:\n{table}"
    );
    let shown = ok(
        hangar(&api, &cli, &["runner", "show", &name]),
        "runner show",
    );
    assert!(
        shown.contains("create_attempts") && shown.contains("503"),
        "{shown}"
    );

    // Disabled: nothing is retried.
    ok(
        hangar(&api, &cli, &["pool", "update", &pool, "--enabled", "false"]),
        "pool update",
    );
    let paused = wait_for(Duration::from_secs(30), "the create to pause", || {
        let api = api.clone();
        async move {
            let all = api.instances(false).await.map_err(|e| e.to_string())?;
            let waiting: Vec<Value> = live(&all).into_iter().cloned().collect();
            if !waiting.is_empty()
                && waiting.iter().all(|i| {
                    i["status"] == "pending_delete"
                        || i["status_message"]
                            .as_str()
                            .is_some_and(|m| m.contains("pool is disabled"))
                })
            {
                Ok(waiting)
            } else {
                Err(format!("{waiting:?}"))
            }
        }
    })
    .await;
    let jit = gh.calls("generate-jitconfig");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        gh.calls("generate-jitconfig"),
        jit,
        "no registration for a disabled pool"
    );

    // Removed, forced: gone although GitHub still fails, and not replaced;
    // within seconds (it once took about 48 s).
    let asked = std::time::Instant::now();
    for i in &paused {
        let n = i["name"].as_str().unwrap();
        ok(
            hangar(&api, &cli, &["runner", "rm", "-f", n]),
            "runner rm -f",
        );
    }
    wait_for(Duration::from_secs(90), "the forced removal to end", || {
        let api = api.clone();
        async move {
            let all = api.instances(false).await.map_err(|e| e.to_string())?;
            if live(&all).is_empty() {
                Ok(())
            } else {
                Err(format!("{all:?}"))
            }
        }
    })
    .await;
    let took = asked.elapsed();
    eprintln!("runner rm -f: gone after {took:?}");
    // Generous for a loaded 2-core machine: a few GitHub tries and their
    // back-off take about 5 s here.
    assert!(
        took <= Duration::from_secs(15),
        "the forced removal took {took:?}"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let all = api.instances(false).await.unwrap();
    assert!(live(&all).is_empty(), "replaced while disabled: {all:?}");
}
