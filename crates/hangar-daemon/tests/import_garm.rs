//! `import-garm` on the committed database made by a real garm build: what
//! lands in Hangar's store, secrets opened again with Hangar's passphrase.

use std::path::{Path, PathBuf};

use hangar_core::{CredentialsAuth, EntityKind, EntityScope};
use hangar_daemon::config::Config;
use hangar_daemon::import_garm::{ImportRequest, import_garm};
use hangar_store::{Store, StoreOptions};

const PASSPHRASE: &str = "import test passphrase, at least 32 characters";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/garm")
        .join(name)
}

fn request(dir: &Path) -> ImportRequest {
    std::fs::copy(fixture("garm.db"), dir.join("garm.db")).unwrap();
    let pass = dir.join("passphrase");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    ImportRequest {
        config: dir.join("etc/hangard.toml"),
        garm_config: fixture("config.toml"),
        garm_db: Some(dir.join("garm.db")),
        passphrase_file: Some(pass),
    }
}

#[tokio::test]
async fn garm_fixture_lands_in_the_store_sealed_with_hangars_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(dir.path());
    let report = import_garm(&req).await.unwrap();
    assert!(report.config_written);
    assert_eq!(report.counts.entities, (3, 0));
    assert_eq!(report.counts.pools, (2, 0));
    assert_eq!(report.counts.credentials, (2, 0));

    let config = Config::load_with(&req.config, &|_| None).unwrap();
    assert_eq!(config.server.bind, "127.0.0.1:49675");
    assert_eq!(config.server.public_url, "http://127.0.0.1:49675");
    let lxd = &config.providers[0];
    assert_eq!(lxd.name, "lxd_local");
    let ext = lxd.external.as_ref().unwrap();
    assert_eq!(
        ext.executable,
        Path::new("/tmp/garm-run/provider/garm-provider-test")
    );
    assert_eq!(ext.environment_variables, ["LXD_", "HOME"]);
    assert_eq!(ext.call_timeout_secs, 120);
    assert!(ext.jit_enabled);

    let store = Store::open(&StoreOptions::new(
        config.database.url.clone(),
        config.passphrase().unwrap(),
    ))
    .await
    .unwrap();
    assert_eq!(
        store
            .garm_controller_id()
            .await
            .unwrap()
            .unwrap()
            .to_string(),
        "8257ed84-09a5-4d07-a918-d383c7d56a8c"
    );
    assert_eq!(
        store.controller_info().await.unwrap().garm_controller_id,
        store.garm_controller_id().await.unwrap()
    );
    let pat = store.credentials("fixture-pat").await.unwrap();
    match pat.auth {
        CredentialsAuth::Pat { token } => {
            assert_eq!(token.expose(), "ghp_FixtureThrowawayPat0123456789abcdef")
        }
        other => panic!("{other:?}"),
    }
    match store.credentials("fixture-app").await.unwrap().auth {
        CredentialsAuth::App {
            app_id,
            installation_id,
            private_key,
        } => {
            assert_eq!((app_id, installation_id), (424242, 777));
            assert!(private_key.expose().contains("PRIVATE KEY"));
        }
        other => panic!("{other:?}"),
    }
    let endpoint = store.endpoint("ghes-loopback").await.unwrap();
    assert_eq!(endpoint.api_base_url, "http://127.0.0.1:9/api/v3/");

    let secrets = store.entity_webhook_secrets().await.unwrap();
    let find = |kind: EntityKind| {
        secrets
            .iter()
            .find(|(e, _)| e.scope.kind() == kind)
            .unwrap_or_else(|| panic!("no {kind:?}"))
    };
    let (repo, secret) = find(EntityKind::Repository);
    assert_eq!(repo.id.to_string(), "08f61883-c785-4f25-987d-d7e582802690");
    assert_eq!(
        repo.scope,
        EntityScope::Repository {
            owner: "octo-fixture".into(),
            name: "app".into()
        }
    );
    assert_eq!(secret.expose(), "repo-hook-secret-Fixture-7f3a9c");
    assert_eq!(
        find(EntityKind::Organization).1.expose(),
        "org-hook-secret-Fixture-52d1e8"
    );
    assert_eq!(
        find(EntityKind::Enterprise).1.expose(),
        "ent-hook-secret-Fixture-c09b44"
    );
    let pools = store.list_pools(Some(repo.id)).await.unwrap();
    assert_eq!(pools.len(), 1);
    let p = &pools[0];
    assert_eq!(p.id.to_string(), "443ca3b1-cd77-4694-98ce-0ab27b532eef");
    let mut tags: Vec<String> = p
        .spec
        .tags
        .to_string()
        .split(',')
        .map(str::to_owned)
        .collect();
    tags.sort();
    assert_eq!(tags, ["fixture-repo", "linux", "self-hosted"]);
    assert_eq!((p.spec.max_runners, p.spec.priority), (3, 5));
    assert!(p.spec.enabled);
    store.close().await;

    // Twice: nothing added, nothing duplicated.
    let again = import_garm(&req).await.unwrap();
    assert!(!again.config_written);
    assert_eq!(again.counts.entities, (0, 3));
    assert_eq!(again.counts.pools, (0, 2));
    assert_eq!(again.counts.credentials, (0, 2));
}

#[tokio::test]
async fn wrong_garm_passphrase_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = request(dir.path());
    let wrong = dir.path().join("garm.toml");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(fixture("config.toml"))
            .unwrap()
            .replace(
                "fixture-passphrase-32-bytes-long",
                "another-passphrase-32-bytes-long",
            ),
    )
    .unwrap();
    req.garm_config = wrong;
    let err = import_garm(&req).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("wrong garm passphrase"),
        "{err:#}"
    );
    assert!(!req.config.exists());
    assert!(!dir.path().join("hangar.db").exists());
}

#[tokio::test]
async fn a_database_garm_never_made_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = request(dir.path());
    // A Hangar database is SQLite, but not garm's schema.
    let other = dir.path().join("other.db");
    let store = Store::open(&StoreOptions::new(
        format!("sqlite://{}", other.display()),
        hangar_core::Secret::new(PASSPHRASE),
    ))
    .await
    .unwrap();
    store.close().await;
    req.garm_db = Some(other);
    let err = import_garm(&req).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("not a garm database this importer knows"),
        "{err:#}"
    );
    assert!(!req.config.exists());
}
