//! garm's hook URLs: `/webhooks/<controller id>` (this controller's, or a
//! garm deployment's recorded by the importer) and `/webhooks/` are the
//! shared hook; any other id is still an unknown entity.

mod support;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;

const GARM_ID: &str = "8E1B1A5C-6C2A-4D7E-9C55-1D2B3A4F5E6D";

async fn post(app: &axum::Router, path: &str, secret: &str) -> u16 {
    let body = br#"{"zen":"Keep it simple.","hook_id":1,"organization":{"login":"acme","id":7}}"#;
    let req = Request::post(path)
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-github-hook-installation-target-type", "organization")
        .header("x-github-hook-installation-target-id", "7")
        .header(
            "x-hub-signature-256",
            hangar_github::webhook::sign(secret.as_bytes(), body),
        )
        .body(Body::from(&body[..]))
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn garm_hook_urls_route_like_the_shared_hook() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store, _, _) = support::app(dir.path(), &[GARM_ID]).await;
    let own = store.controller_id().to_string();
    assert_eq!(
        store.controller_info().await.unwrap().garm_controller_ids,
        vec![GARM_ID.to_owned()]
    );
    for path in [
        "/webhooks".to_owned(),
        "/webhooks/".to_owned(),
        format!("/webhooks/{own}"),
        format!("/webhooks/{GARM_ID}"),
        format!("/webhooks/{}", GARM_ID.to_ascii_lowercase()),
    ] {
        assert_eq!(post(&app, &path, "s").await, 200, "{path}");
        assert_eq!(post(&app, &path, "wrong").await, 401, "{path}");
    }
    assert_eq!(
        post(&app, "/webhooks/00000000-0000-0000-0000-000000000000", "s").await,
        404,
        "an id that is neither an entity nor a controller"
    );
}
