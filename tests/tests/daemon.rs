//! `hangard` as an operator runs it: start, restart, migrate, a wrong
//! passphrase, a bad config, a password reset, SIGTERM.

use std::process::Command;

use hangar_e2e::{Api, Daemon, PASSWORD, bin, free_port, write_config};
use sha2::Digest as _;

fn hangard(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("hangard"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("hangard runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart_and_healthz_answers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let mut d = Daemon::start(dir.path(), port, &config).await.unwrap();
    assert!(
        dir.path().join("data/hangar.db").exists(),
        "database created with its folder"
    );
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", d.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["database"], "ok");
    let api = Api::init(&d.url).await.unwrap();
    api.post("/api/v1/endpoints", serde_json::json!({"name": "ghes", "base_url": "https://ghes.example", "api_base_url": "https://ghes.example/api/v3"}))
        .await
        .unwrap();
    let before = api.get("/api/v1/controller").await.unwrap();
    let status = d.stop().expect("exit status");
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    assert!(d.logs().contains("stopped"));

    let d = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::login(&d.url).await.unwrap();
    let eps = api.get("/api/v1/endpoints").await.unwrap();
    assert_eq!(eps[0]["api_base_url"], "https://ghes.example/api/v3");
    let after = api.get("/api/v1/controller").await.unwrap();
    assert_eq!(
        before["controller_id"], after["controller_id"],
        "same controller identity"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_passphrase_is_refused_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let mut d = Daemon::start(dir.path(), port, &config).await.unwrap();
    Api::init(&d.url).await.unwrap();
    d.stop();
    let db = dir.path().join("data/hangar.db");
    let hash = |p: &std::path::Path| sha2::Sha256::digest(std::fs::read(p).unwrap());
    let before = hash(&db);

    let text = std::fs::read_to_string(&config).unwrap().replace(
        hangar_e2e::PASSPHRASE,
        "a different passphrase of enough length",
    );
    let other = dir.path().join("other.toml");
    std::fs::write(&other, text).unwrap();
    let out = hangard(&other, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("different passphrase"), "{err}");
    assert_eq!(hash(&db), before, "database file byte-for-byte unchanged");
}

#[test]
fn a_bad_config_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), "[scheduler]\nidle_grace = 5\n");
    let out = hangard(&config, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("idle_grace") && err.contains("line"), "{err}");
    assert!(!dir.path().join("data").exists(), "nothing created");

    let config = write_config(dir.path(), free_port(), "[metrics]\nenabled = \"yes\"\n");
    let out = hangard(&config, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("enabled"));
}

#[test]
fn migrate_creates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), "");
    let out = hangard(&config, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every migration in the repository, in order.
    let mut versions: Vec<u32> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/sqlite"))
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.split('_').next()?.parse().ok()
            })
            .collect();
    versions.sort_unstable();
    let applied = format!("migrations applied: {versions:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&applied),
        "want {applied:?} in {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let tables = Command::new("sqlite3")
        .arg(dir.path().join("data/hangar.db"))
        .arg(".tables")
        .output();
    if let Ok(t) = tables {
        let t = String::from_utf8_lossy(&t.stdout);
        for table in [
            "controller",
            "credentials",
            "entities",
            "instances",
            "jobs",
            "pools",
            "users",
        ] {
            assert!(t.contains(table), "{t}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_revokes_earlier_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let mut d = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::init(&d.url).await.unwrap();
    api.get("/api/v1/jobs").await.unwrap();
    d.stop();

    let mut child = Command::new(bin("hangard"))
        .arg("--config")
        .arg(&config)
        .args(["admin", "reset-password", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"another strong password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());

    let d = Daemon::start(dir.path(), port, &config).await.unwrap();
    let (s, v) = api
        .call(reqwest::Method::GET, "/api/v1/jobs", None)
        .await
        .unwrap();
    assert_eq!(s, 401, "old token refused: {v}");
    assert!(
        v["error"].as_str().unwrap().contains("revoked")
            || v["error"].as_str().unwrap().contains("invalid"),
        "{v}"
    );
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", d.url))
        .json(&serde_json::json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "old password refused");
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", d.url))
        .json(&serde_json::json!({"username": "admin", "password": "another strong password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Too short a password is refused before anything changes.
    let out = hangard(&config, &["admin", "reset-password", "--password", "short"]);
    assert!(!out.status.success());
}
