//! Replicas on one PostgreSQL database: an entity added through another
//! replica's admin API (here: straight into the shared store) reaches this
//! replica's webhook intake without a restart. Needs
//! `HANGAR_TEST_POSTGRES_URL`; skipped loudly otherwise (never under CI).

mod support;

use std::str::FromStr as _;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hangar_core::*;
use hangar_store::{NewEntity, Store, StoreOptions};
use hangar_testkit::sample;
use sqlx::{ConnectOptions as _, Connection as _};
use tower::ServiceExt as _;

async fn ping(app: &axum::Router, entity: EntityId) -> u16 {
    let body = br#"{"zen":"Keep it simple.","hook_id":1,"organization":{"login":"acme","id":7}}"#;
    let req = Request::post(format!("/webhooks/{entity}"))
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-github-hook-installation-target-type", "organization")
        .header("x-github-hook-installation-target-id", "7")
        .header(
            "x-hub-signature-256",
            hangar_github::webhook::sign(b"s", body),
        )
        .body(Body::from(&body[..]))
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status().as_u16()
}

/// A `workflow_job` `queued` delivery of job `job` asking for
/// `self-hosted, gpu`, for the organization `acme`.
async fn queued(app: &axum::Router, entity: EntityId, job: i64) -> u16 {
    let mut v: serde_json::Value = serde_json::from_str(include_str!(
        "../../../fixtures/github-webhooks/workflow_job/queued.payload.json"
    ))
    .unwrap();
    v["workflow_job"]["id"] = job.into();
    v["workflow_job"]["labels"] = serde_json::json!(["self-hosted", "gpu"]);
    v["organization"] = serde_json::json!({"login": "acme", "id": 7});
    let body = serde_json::to_vec(&v).unwrap();
    let req = Request::post(format!("/webhooks/{entity}"))
        .header("content-type", "application/json")
        .header("x-github-event", "workflow_job")
        .header("x-github-hook-installation-target-type", "organization")
        .header("x-github-hook-installation-target-id", "7")
        .header(
            "x-hub-signature-256",
            hangar_github::webhook::sign(b"s", &body),
        )
        .body(Body::from(body))
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_added_through_another_replica_reaches_intake() {
    let Ok(admin) = std::env::var("HANGAR_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "HANGAR_TEST_POSTGRES_URL unset under CI=true: the replica catalog test must run"
        );
        eprintln!("HANGAR_TEST_POSTGRES_URL unset: the replica catalog test did not run (SKIPPED)");
        return;
    };
    let name = format!(
        "hangar_replica_catalog_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await
        .unwrap();
    let url = sqlx::postgres::PgConnectOptions::from_str(&admin)
        .unwrap()
        .database(&name)
        .to_url_lossy()
        .to_string();
    let open = || async {
        Store::open(&StoreOptions::new(
            url.clone(),
            Secret::new("replica catalog test passphrase, 32+ chars"),
        ))
        .await
        .unwrap()
    };
    let (other, this) = (open().await, open().await);
    other
        .create_endpoint(&sample::endpoint(
            "gh",
            "http://127.0.0.1:1",
            "http://127.0.0.1:1",
        ))
        .await
        .unwrap();
    other
        .create_credentials(&sample::pat("gh", "gh", "t"))
        .await
        .unwrap();
    // This replica is up before the entity exists.
    let (app, _scheduler) = support::router_over(&this).await;
    let entity = other
        .create_entity(&NewEntity {
            scope: EntityScope::Organization {
                name: "acme".into(),
            },
            credentials_name: ResourceName::parse("gh").unwrap(),
            webhook_secret: Secret::new("s"),
        })
        .await
        .unwrap();
    // The first delivery finds it: a miss rebuilds the catalog from the
    // database at once, not at the next periodic rebuild.
    assert_eq!(
        ping(&app, entity.id).await,
        200,
        "the entity another replica added did not reach this replica's intake at once"
    );
    // A queued job for labels no pool has yet: recorded without a pool
    // (200); once another replica added a pool for them, the next job is
    // matched to it at once (202), a miss having rebuilt the catalog.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(queued(&app, entity.id, 1).await, 200);
    other
        .create_pool(entity.id, &sample::pool_spec("fake", "self-hosted,gpu", 4))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        queued(&app, entity.id, 2).await,
        202,
        "the pool another replica added did not reach this replica's intake at once"
    );
    drop((app, other, this));
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await;
}
