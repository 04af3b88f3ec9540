//! One repository registered on two endpoints (github.com and a GHES), as
//! garm allows: the shared hook routes a delivery to the one whose endpoint
//! sent it (`X-GitHub-Enterprise-Host`, github.com without), and the
//! entity's own hook is unambiguous.

mod support;

use axum::body::Body;
use axum::http::Request;
use hangar_core::*;
use hangar_store::{NewEntity, Store, StoreOptions};
use hangar_testkit::sample;
use tower::ServiceExt as _;

const PAYLOAD: &str =
    include_str!("../../../fixtures/github-webhooks/workflow_job/queued.payload.json");

async fn endpoint(store: &Store, name: &str, base_url: &str) {
    store
        .create_endpoint(&sample::endpoint(name, base_url, "http://127.0.0.1:1"))
        .await
        .unwrap();
    store
        .create_credentials(&sample::pat(name, name, "t"))
        .await
        .unwrap();
}

async fn repo(store: &Store, credentials: &str, secret: &str) -> EntityId {
    store
        .create_entity(&NewEntity {
            scope: EntityScope::Repository {
                owner: "octo".into(),
                name: "app".into(),
            },
            credentials_name: ResourceName::parse(credentials).unwrap(),
            webhook_secret: Secret::new(secret),
        })
        .await
        .unwrap()
        .id
}

async fn app(store: &Store) -> axum::Router {
    support::router_over(store).await.0
}

/// Posts a queued job `job` of octo/app signed with `secret`, from `host`
/// when given, and returns the status (200: recorded, no pool to wake) and
/// the entity the job was recorded for.
async fn deliver(
    app: &axum::Router,
    store: &Store,
    path: &str,
    job: i64,
    secret: &str,
    host: Option<&str>,
) -> (u16, Option<EntityId>) {
    let mut v: serde_json::Value = serde_json::from_str(PAYLOAD).unwrap();
    v["workflow_job"]["id"] = job.into();
    v["repository"]["name"] = "app".into();
    v["repository"]["full_name"] = "octo/app".into();
    v["repository"]["owner"]["login"] = "octo".into();
    let body = serde_json::to_vec(&v).unwrap();
    let mut req = Request::post(path)
        .header("content-type", "application/json")
        .header("x-github-event", "workflow_job")
        .header("x-github-hook-installation-target-type", "repository")
        .header("x-github-hook-installation-target-id", "1")
        .header(
            "x-hub-signature-256",
            hangar_github::webhook::sign(secret.as_bytes(), &body),
        );
    if let Some(h) = host {
        req = req.header(hangar_github::routing::ENTERPRISE_HOST_HEADER, h);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let entity = store.job(JobId(job), 1).await.ok().map(|j| j.entity_id);
    (status, entity)
}

async fn store(dir: &std::path::Path) -> Store {
    let store = Store::open(&StoreOptions::new(
        format!("sqlite://{}/h.db", dir.display()),
        Secret::new("webhook endpoints test passphrase, 32+ chars"),
    ))
    .await
    .unwrap();
    endpoint(&store, "github.com", "https://github.com").await;
    endpoint(&store, "ghes", "https://GHES.example.com:443/").await;
    store
}

#[tokio::test]
async fn the_shared_hook_routes_to_the_entity_of_the_sending_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let dotcom = repo(&store, "github.com", "one secret").await;
    let ghes = repo(&store, "ghes", "one secret").await;
    let app = app(&store).await;

    // One secret for both: the host decides.
    let got = deliver(
        &app,
        &store,
        "/webhooks",
        1,
        "one secret",
        Some("ghes.example.com"),
    )
    .await;
    assert_eq!(got, (200, Some(ghes)));
    let got = deliver(&app, &store, "/webhooks/", 2, "one secret", None).await;
    assert_eq!(got, (200, Some(dotcom)));
    // The entity's own hook is unambiguous, whatever the host.
    let path = format!("/webhooks/{ghes}");
    let got = deliver(&app, &store, &path, 3, "one secret", None).await;
    assert_eq!(got, (200, Some(ghes)));
}

#[tokio::test]
async fn a_secret_of_its_own_tells_the_twin_apart_without_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let dotcom = repo(&store, "github.com", "dotcom secret").await;
    let ghes = repo(&store, "ghes", "ghes secret").await;
    let app = app(&store).await;

    // No enterprise host would say github.com, but only the GHES
    // entity's secret verifies.
    let got = deliver(&app, &store, "/webhooks", 1, "ghes secret", None).await;
    assert_eq!(got, (200, Some(ghes)));
    let got = deliver(&app, &store, "/webhooks", 2, "dotcom secret", None).await;
    assert_eq!(got, (200, Some(dotcom)));
    let got = deliver(&app, &store, "/webhooks", 3, "neither", None).await;
    assert_eq!(got, (401, None));
}
