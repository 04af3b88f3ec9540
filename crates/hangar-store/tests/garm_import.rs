//! The garm importer's writes on both backends: garm's database (always a
//! SQLite file, the committed fixture a real garm build made) read, then
//! imported into a SQLite or a PostgreSQL store, twice.

mod common;

use std::path::PathBuf;

use common::TestDb;
use hangar_core::*;
use hangar_store::garm::read_garm_database;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hangar-daemon/tests/fixtures/garm/garm.db")
}

async fn garm_fixture_imports_once(db: TestDb) {
    // Read from a copy: the importer only reads, but the fixture is shared.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("garm.db");
    std::fs::copy(fixture(), &copy).unwrap();
    let data = read_garm_database(&copy, &Secret::new("fixture-passphrase-32-bytes-long"))
        .await
        .unwrap();

    let store = db.open().await;
    let counts = store.import_garm(&data).await.unwrap();
    assert_eq!(counts.entities, (3, 0));
    assert_eq!(counts.pools, (2, 0));
    assert_eq!(counts.credentials, (2, 0));
    assert_eq!(
        store
            .garm_controller_id()
            .await
            .unwrap()
            .unwrap()
            .to_string(),
        "8257ed84-09a5-4d07-a918-d383c7d56a8c"
    );
    match store.credentials("fixture-pat").await.unwrap().auth {
        CredentialsAuth::Pat { token } => {
            assert_eq!(token.expose(), "ghp_FixtureThrowawayPat0123456789abcdef")
        }
        other => panic!("{other:?}"),
    }
    let secrets = store.entity_webhook_secrets().await.unwrap();
    let (repo, secret) = secrets
        .iter()
        .find(|(e, _)| e.scope.kind() == EntityKind::Repository)
        .expect("the repository");
    assert_eq!(repo.id.to_string(), "08f61883-c785-4f25-987d-d7e582802690");
    assert_eq!(secret.expose(), "repo-hook-secret-Fixture-7f3a9c");
    let pools = store.list_pools(Some(repo.id)).await.unwrap();
    assert_eq!(pools.len(), 1);
    assert_eq!(
        pools[0].id.to_string(),
        "443ca3b1-cd77-4694-98ce-0ab27b532eef"
    );
    assert_eq!((pools[0].spec.max_runners, pools[0].spec.priority), (3, 5));
    assert!(pools[0].spec.enabled);

    // Twice: nothing added, nothing duplicated.
    let again = store.import_garm(&data).await.unwrap();
    assert_eq!(again.entities, (0, 3));
    assert_eq!(again.pools, (0, 2));
    assert_eq!(again.credentials, (0, 2));
    assert_eq!(store.list_pools(None).await.unwrap().len(), 2);
    store.close().await;
}

on_both_backends!(garm_fixture_imports_once);
