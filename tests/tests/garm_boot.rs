//! A runner VM booted the way every garm external provider boots one: the
//! provider (the fake, in `boot = "save"` mode) keeps the bootstrap JSON it
//! gets on stdin, and `tests/scripts/garm-style-boot.sh` makes, with curl,
//! the calls garm's Linux install script makes with the URLs and token from
//! that JSON — for a JIT pool and for a registration-token pool. The runner
//! ends idle, no credential can be read twice, and a token of an instance
//! that is already up, or a made-up one, is refused.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use hangar_e2e::{Api, Daemon, bin, free_port, wait_for, write_config};
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::{Value, json};

const SECRET: &str = "e2e-webhook-secret-value";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/garm-style-boot.sh")
}

/// Two external providers on the fake executable, one with JIT and one
/// without, each saving bootstrap JSON under its own state dir.
fn providers(dir: &Path) -> String {
    let mut out = String::from("[scheduler]\nreconcile_interval_secs = 2\n");
    for (name, jit) in [("garm-jit", true), ("garm-token", false)] {
        let state = dir.join(name);
        std::fs::create_dir_all(&state).unwrap();
        let cfg = state.join("provider.toml");
        std::fs::write(
            &cfg,
            format!("state_dir = \"{}\"\nboot = \"save\"\n", state.display()),
        )
        .unwrap();
        out.push_str(&format!(
            r#"
[[provider]]
name = "{name}"
kind = "external"
[provider.external]
executable = "{exe}"
config_file = "{cfg}"
jit_enabled = {jit}
"#,
            exe = bin("hangar-fake-provider").display(),
            cfg = cfg.display(),
        ));
    }
    out
}

/// The bootstrap JSON the provider got for its one instance.
async fn bootstrap_json(state: &Path) -> Value {
    let boot = state.join("boot");
    wait_for(
        Duration::from_secs(60),
        "the provider's bootstrap JSON",
        || {
            let boot = boot.clone();
            async move {
                let file = std::fs::read_dir(&boot)
                    .map_err(|e| e.to_string())?
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|x| x == "json"))
                    .ok_or("none yet")?;
                let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
                serde_json::from_str::<Value>(&text).map_err(|e| e.to_string())
            }
        },
    )
    .await
}

/// A runner archive with the runner's service script in it.
fn runner_archive(dir: &Path) -> String {
    let src = dir.join("runner-src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/runsvc.sh"), "#!/bin/sh\nexit 0\n").unwrap();
    let archive = dir.join("actions-runner-linux-x64.tar.gz");
    let ok = std::process::Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    format!("file://{}", archive.display())
}

/// Runs the boot script as the instance described by `b`, with `token`.
async fn boot(b: &Value, token: &str, home: &Path, tools: &str) -> Output {
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(script())
        .env("CALLBACK_URL", b["callback-url"].as_str().unwrap())
        .env("METADATA_URL", b["metadata-url"].as_str().unwrap())
        .env("BEARER_TOKEN", token)
        .env("USE_JIT", b["jit_config_enabled"].to_string())
        .env("RUN_HOME", home.join("runner/actions-runner"))
        .env("RUN_AS", "runner")
        .env("TOOLS_URL", tools)
        .env("CHECK_ONCE", "1");
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("boot script finishes")
        .expect("bash runs")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn instance(api: &Api, name: &str) -> Value {
    api.get(&format!("/api/v1/instances/{name}")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garm_style_boot_registers_jit_and_registration_token_runners() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, &providers(dir.path()));
    let daemon = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::init(&daemon.url).await.unwrap();
    let gh = FakeGitHub::start().await;
    api.add_github(&gh.url()).await.unwrap();
    let repo = api.add_repo("octo", "app", SECRET).await.unwrap();
    gh.set_webhook_target(format!("{}/webhooks/{repo}", daemon.url), SECRET);
    let tools = runner_archive(dir.path());

    // One idle runner per pool: no job needed for Hangar to create it.
    for (provider, tag) in [("garm-jit", "jit"), ("garm-token", "token")] {
        api.add_pool(
            &repo,
            json!({"provider_name": provider, "image": "ubuntu", "flavor": "small",
                   "tags": ["self-hosted", tag], "min_idle_runners": 1, "max_runners": 1}),
        )
        .await
        .unwrap();
    }
    let jit = bootstrap_json(&dir.path().join("garm-jit")).await;
    let tok = bootstrap_json(&dir.path().join("garm-token")).await;
    assert_eq!(jit["jit_config_enabled"], true);
    assert_eq!(tok["jit_config_enabled"], false);
    for b in [&jit, &tok] {
        assert_eq!(b["repo_url"], format!("{}/octo/app", gh.url()));
        assert!(b["user_data_options"].is_object(), "{b}");
        assert!(b["proxy_config"].is_object(), "{b}");
    }

    let mut booted = Vec::new();
    for (b, home) in [(&jit, "home-jit"), (&tok, "home-token")] {
        let name = b["name"].as_str().unwrap().to_owned();
        let token = b["instance-token"].as_str().unwrap();
        let home = dir.path().join(home);
        let out = boot(b, token, &home, &tools).await;
        assert!(
            out.status.success(),
            "{name}: {}\n{}",
            show(&out),
            daemon.logs()
        );
        let i = instance(&api, &name).await;
        assert_eq!(i["runner_status"], "idle", "{i}");
        assert_eq!(i["os_name"], "Hangar-e2e", "{i}");
        assert_eq!(i["os_version"], "1.0", "{i}");
        let svc = std::fs::read_to_string(home.join("runner/actions-runner/.service")).unwrap();
        assert_eq!(svc, "actions.runner.octo.app");
        booted.push((b.clone(), token.to_owned(), home));
    }
    // The JIT runner is the one GitHub issued the config for.
    let jit_runner =
        std::fs::read_to_string(booted[0].2.join("runner/actions-runner/.runner")).unwrap();
    let jit_name = jit["name"].as_str().unwrap();
    assert!(jit_runner.contains(jit_name), "{jit_runner}");
    let i = instance(&api, jit_name).await;
    assert!(i["runner_id"].as_i64().is_some(), "{i}");

    // Another instance's token (up already, so spent) is refused at the
    // first call, and so is a made-up one.
    let (jit_b, jit_token, _) = &booted[0];
    let (tok_b, tok_token, _) = &booted[1];
    for (b, token, want) in [
        (tok_b, jit_token.as_str(), "HTTP 403"),
        (jit_b, tok_token.as_str(), "HTTP 403"),
        (jit_b, "not-a-token", "HTTP 401"),
    ] {
        let out = boot(b, token, &dir.path().join("home-again"), "").await;
        assert!(!out.status.success(), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "want {want}: {}", show(&out));
    }
}
