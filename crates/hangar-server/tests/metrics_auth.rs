//! `[metrics] token`: `/metrics` names credentials and pools, so with a
//! token configured it answers only requests that carry it — as a Bearer
//! token or as the basic-auth password, the two ways Prometheus sends one.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use hangar_core::Secret;
use hangar_store::{Store, StoreOptions};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

async fn store(dir: &std::path::Path) -> Store {
    Store::open(&StoreOptions::new(
        format!("sqlite://{}/h.db", dir.display()),
        Secret::new("metrics auth test passphrase, 32+ chars"),
    ))
    .await
    .unwrap()
}

async fn scrape(app: &axum::Router, auth: Option<String>) -> (StatusCode, String, Option<String>) {
    let mut req = Request::get("/metrics");
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let challenge = resp
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        challenge,
    )
}

#[tokio::test]
async fn with_a_token_metrics_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let token = "metrics-token-0123456789abcdef";
    let (app, _sched) = support::router_with_metrics_token(&store, Some(Secret::new(token))).await;

    let (status, body, challenge) = scrape(&app, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"], "the metrics token is missing or wrong");
    assert!(challenge.unwrap().contains("Bearer"));
    assert!(!body.contains("hangar_"), "no metric leaks: {body}");

    for wrong in [
        "Bearer nope".to_owned(),
        format!("Bearer {token}x"),
        format!("Token {token}"),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("prometheus:nope")
        ),
        "Basic !!!".to_owned(),
    ] {
        let (status, _, _) = scrape(&app, Some(wrong.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
    }

    let (status, body, _) = scrape(&app, Some(format!("Bearer {token}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("# EOF"), "OpenMetrics text: {body}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("prometheus:{token}"));
    let (status, _, _) = scrape(&app, Some(format!("Basic {basic}"))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn without_a_token_metrics_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let (app, _sched) = support::router_with_metrics_token(&store, None).await;
    let (status, body, _) = scrape(&app, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("# EOF"));
}
