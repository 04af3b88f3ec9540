//! The packaged `/etc/hangar/hangard.toml` (deploy/hangard.toml) starts
//! `hangard` as is, with the credentials the package generates handed over
//! as systemd would (`CREDENTIALS_DIRECTORY`): no providers, a placeholder
//! public URL, and `/metrics` closed without the generated token.

use hangar_e2e::walkthrough::root;
use hangar_e2e::{Daemon, free_port};

#[tokio::test(flavor = "multi_thread")]
async fn the_packaged_config_starts_and_metrics_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let token = "generated-metrics-token-0123456789";
    std::fs::write(
        creds.join("passphrase"),
        "generated passphrase, 48 random bytes in base64\n",
    )
    .unwrap();
    std::fs::write(
        creds.join("jwt-secret"),
        "generated-jwt-secret-0123456789abcdef\n",
    )
    .unwrap();
    std::fs::write(creds.join("metrics-token"), format!("{token}\n")).unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    // Only the paths a test cannot use are moved: the port and the database.
    let db = format!("sqlite://{}/hangar.db", dir.path().display());
    let d = Daemon::start_with_env(
        dir.path(),
        port,
        &root().join("deploy/hangard.toml"),
        &[
            ("HANGAR_BIND", bind.as_str()),
            ("HANGAR_DATABASE_URL", db.as_str()),
            ("CREDENTIALS_DIRECTORY", creds.to_str().unwrap()),
        ],
    )
    .await
    .unwrap();
    assert!(
        d.logs().contains("no [[provider]] configured"),
        "{}",
        d.logs()
    );
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client
        .get(format!("{}/metrics", d.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("# EOF"));
    // The placeholder public URL is what the controller reports.
    let r = client
        .get(format!("{}/healthz", d.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}
