//! `hangard import-garm` on a database made by a real garm build (the
//! committed fixture, see its README): the real binaries write the config,
//! import, then serve the imported entities — `hangar repo ls` and
//! `pool ls` show them, a delivery signed with garm's webhook secret is
//! accepted, and no secret is readable in the new database file.

use std::path::{Path, PathBuf};
use std::process::Command;

use hangar_e2e::{Api, Daemon, PASSPHRASE, bin, free_port, sign};
use serde_json::{Value, json};

const REPO_ID: &str = "08f61883-c785-4f25-987d-d7e582802690";
const REPO_SECRET: &str = "repo-hook-secret-Fixture-7f3a9c";
const PAT: &str = "ghp_FixtureThrowawayPat0123456789abcdef";
const GARM_CONTROLLER: &str = "8257ed84-09a5-4d07-a918-d383c7d56a8c";

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/hangar-daemon/tests/fixtures/garm")
}

/// garm's fixture config and database under `dir/garm`, its provider paths
/// pointing at a stub executable there (garm ran it from /tmp/garm-run).
fn garm_copy(dir: &Path) -> PathBuf {
    let garm = dir.join("garm");
    std::fs::create_dir_all(garm.join("provider")).unwrap();
    std::fs::copy(fixture_dir().join("garm.db"), garm.join("garm.db")).unwrap();
    let text = std::fs::read_to_string(fixture_dir().join("config.toml"))
        .unwrap()
        .replace("/tmp/garm-run/", &format!("{}/", garm.display()));
    let exe = garm.join("provider/garm-provider-test");
    std::fs::write(&exe, "#!/bin/sh\necho '{}'\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(garm.join("provider/provider.toml"), "# stub\n").unwrap();
    let config = garm.join("config.toml");
    std::fs::write(&config, text).unwrap();
    config
}

fn import(config: &Path, garm_config: &Path) -> std::process::Output {
    Command::new(bin("hangard"))
        .arg("--config")
        .arg(config)
        .arg("import-garm")
        .arg("--garm-config")
        .arg(garm_config)
        .env("HANGAR_PASSPHRASE", PASSPHRASE)
        .env_remove("HANGAR_CONFIG")
        .output()
        .expect("run hangard import-garm")
}

fn hangar(cli_dir: &Path, api: &Api, args: &[&str]) -> Value {
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
    serde_json::from_slice(&out.stdout).expect("json output")
}

#[tokio::test]
async fn garm_deployment_moves_over_and_serves_its_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let garm_config = garm_copy(dir.path());
    let config = dir.path().join("hangar/hangard.toml");

    let out = import(&config, &garm_config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "import failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("entities: 3 imported"), "{stdout}");
    assert!(stdout.contains("pools: 2 imported"), "{stdout}");
    assert!(stdout.contains(GARM_CONTROLLER), "{stdout}");
    // What did not move is listed, not dropped.
    assert!(stderr.contains("jwt_auth.secret"), "{stderr}");
    assert!(stderr.contains("garm users"), "{stderr}");
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("kind = \"external\""), "{written}");
    assert!(written.contains("environment_variables = [\"LXD_\", \"HOME\"]"));
    assert!(written.contains("call_timeout_secs = 120"));

    // Twice: nothing new.
    let again = import(&config, &garm_config);
    assert!(again.status.success());
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("kept the existing"), "{stdout}");
    assert!(
        stdout.contains("entities: 0 imported, 3 already present"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pools: 0 imported, 2 already present"),
        "{stdout}"
    );

    // No secret in plain text in the new database.
    let db = dir.path().join("garm/hangar.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    bytes.extend(std::fs::read(wal).unwrap_or_default());
    for secret in [
        PAT,
        REPO_SECRET,
        "org-hook-secret-Fixture-52d1e8",
        "PRIVATE KEY",
    ] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is readable in {}",
            db.display()
        );
    }

    // Served on a free port (garm's own port may be taken here).
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let url = format!("http://127.0.0.1:{port}");
    let daemon = Daemon::start_with_env(
        dir.path(),
        port,
        &config,
        &[
            ("HANGAR_PASSPHRASE", PASSPHRASE),
            ("HANGAR_BIND", &bind),
            ("HANGAR_PUBLIC_URL", &url),
        ],
    )
    .await
    .unwrap();
    let api = Api::init(&daemon.url).await.unwrap();
    let cli_dir = dir.path().join("cli");
    let repos = hangar(&cli_dir, &api, &["repo", "ls"]);
    let repo = repos
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == REPO_ID)
        .unwrap_or_else(|| panic!("{repos}"));
    assert_eq!(repo["owner"], "octo-fixture");
    assert_eq!(repo["name"], "app");
    assert_eq!(repo["credentials_name"], "fixture-pat");
    let orgs = hangar(&cli_dir, &api, &["org", "ls"]);
    assert_eq!(orgs[0]["name"], "octo-org-fixture", "{orgs}");
    let pools = hangar(&cli_dir, &api, &["pool", "ls"]);
    let pools = pools.as_array().unwrap();
    assert_eq!(pools.len(), 2, "{pools:?}");
    let repo_pool = pools.iter().find(|p| p["entity_id"] == REPO_ID).unwrap();
    assert_eq!(repo_pool["provider_name"], "lxd_local");
    assert_eq!(repo_pool["max_runners"], 3);
    assert_eq!(repo_pool["extra_specs"], json!({"disk_size": 20}));

    // A delivery signed with garm's webhook secret for that repository.
    let body = serde_json::to_vec(&json!({
        "action": "queued",
        "workflow_job": {
            "id": 9_100_000_001_i64, "run_id": 42, "run_attempt": 1, "status": "queued",
            "labels": ["self-hosted", "linux", "fixture-repo"], "name": "build",
            "runner_name": null, "runner_id": null, "conclusion": null
        },
        "repository": {"id": 1, "name": "app", "full_name": "octo-fixture/app",
            "owner": {"login": "octo-fixture"}}
    }))
    .unwrap();
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/webhooks/{REPO_ID}", daemon.url))
        .header("x-github-event", "workflow_job")
        .header("x-github-delivery", "garm-import-1")
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(REPO_SECRET, &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(status, 202, "{}", r.text().await.unwrap_or_default());
    // The hook garm made points at /webhooks/<garm controller id>: it is
    // routed by the payload's repository, like /webhooks.
    let mut job = serde_json::from_slice::<serde_json::Value>(&body).unwrap();
    job["workflow_job"]["id"] = json!(9_100_000_002_i64);
    let via_controller = serde_json::to_vec(&job).unwrap();
    let r = client
        .post(format!("{}/webhooks/{GARM_CONTROLLER}", daemon.url))
        .header("x-github-event", "workflow_job")
        .header("x-github-delivery", "garm-import-3")
        .header("x-github-hook-installation-target-type", "repository")
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(REPO_SECRET, &via_controller))
        .body(via_controller)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(status, 202, "{}", r.text().await.unwrap_or_default());
    let r = client
        .post(format!("{}/webhooks/{REPO_ID}", daemon.url))
        .header("x-github-event", "workflow_job")
        .header("x-github-delivery", "garm-import-2")
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign("not-the-secret", &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn bad_garm_input_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let garm_config = garm_copy(dir.path());
    let config = dir.path().join("hangar/hangard.toml");

    // Wrong garm passphrase.
    let wrong = dir.path().join("garm/wrong.toml");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&garm_config).unwrap().replace(
            "fixture-passphrase-32-bytes-long",
            "another-passphrase-32-bytes-long",
        ),
    )
    .unwrap();
    let out = import(&config, &wrong);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong garm passphrase"), "{err}");

    // Missing garm config.
    let out = import(&config, &dir.path().join("nope.toml"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));

    // A database of a schema garm never had.
    let odd = dir.path().join("garm/odd.toml");
    std::fs::write(dir.path().join("garm/odd.db"), b"").unwrap();
    std::fs::write(
        &odd,
        std::fs::read_to_string(&garm_config)
            .unwrap()
            .replace("garm.db", "odd.db"),
    )
    .unwrap();
    let out = import(&config, &odd);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a garm database"), "{err}");

    assert!(!config.exists(), "no config may be written on bad input");
    assert!(!dir.path().join("garm/hangar.db").exists());
    assert!(!dir.path().join("hangar").exists());
}
