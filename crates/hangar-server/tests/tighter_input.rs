//! Input the server refuses, and how: job numbers GitHub never sends,
//! unknown fields in admin bodies, implausible pool sizes, and password
//! guessing. Each refusal is a JSON error saying what is wrong, and
//! nothing is stored.

mod support;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use hangar_core::*;
use hangar_store::{JobFilter, Store};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const PAYLOAD: &str =
    include_str!("../../../fixtures/github-webhooks/workflow_job/queued.payload.json");
const PASSWORD: &str = "correct horse battery staple";

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    peer: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&b).unwrap()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    if let Some(p) = peer {
        // What the daemon's listener attaches to every request.
        let addr: SocketAddr = format!("{p}:40000").parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
    }
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
}

/// The app with its first admin, and that admin's token.
async fn app_with_admin(dir: &std::path::Path) -> (axum::Router, Store, Pool, String) {
    let (app, store, pool, _) = support::app(dir, &[]).await;
    let a = call(
        &app,
        "POST",
        "/api/v1/first-run",
        None,
        None,
        Some(json!({"username": "admin", "password": PASSWORD})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let token = login(&app, "admin", PASSWORD, "10.0.0.1").await;
    assert_eq!(token.status, StatusCode::OK, "{}", token.body);
    let token = token.body["token"].as_str().unwrap().to_owned();
    (app, store, pool, token)
}

async fn login(app: &axum::Router, user: &str, password: &str, peer: &str) -> Answer {
    call(
        app,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(peer),
        Some(json!({"username": user, "password": password})),
    )
    .await
}

fn assert_error(a: &Answer, status: StatusCode, mentions: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    let text = format!("{} {}", a.body["error"], a.body["details"]);
    assert!(
        a.body["error"].is_string() && text.contains(mentions),
        "the error should mention {mentions:?}: {}",
        a.body
    );
}

#[tokio::test]
async fn job_numbers_github_never_sends_are_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store, _pool, _) = support::app(dir.path(), &[]).await;
    let entity = store.list_entities(None).await.unwrap()[0].id;
    let deliver = |patch: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_str(PAYLOAD).unwrap();
        v["organization"] = json!({"login": "acme", "id": 7});
        v["repository"]["full_name"] = "acme/app".into();
        v["repository"]["name"] = "app".into();
        v["repository"]["owner"]["login"] = "acme".into();
        v["workflow_job"]["labels"] = json!(["self-hosted"]);
        patch(&mut v);
        let body = serde_json::to_vec(&v).unwrap();
        let req = Request::post(format!("/webhooks/{entity}"))
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_job")
            .header(
                "x-hub-signature-256",
                hangar_github::webhook::sign(b"s", &body),
            )
            .body(Body::from(body))
            .unwrap();
        let app = app.clone();
        async move {
            let res = app.oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };

    for (field, value, path) in [
        ("id", json!(0), "/workflow_job/id"),
        ("id", json!(-42), "/workflow_job/id"),
        ("run_attempt", json!(0), "/workflow_job/run_attempt"),
        ("run_attempt", json!(-1), "/workflow_job/run_attempt"),
        ("run_id", json!(0), "/workflow_job/run_id"),
        ("run_id", json!(-7), "/workflow_job/run_id"),
    ] {
        let (status, body) =
            deliver(&|v: &mut Value| *v.pointer_mut(path).unwrap() = value.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field} = {value}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("workflow_job.{field}")) && error.contains(&value.to_string()),
            "{field} = {value}: {error}"
        );
    }
    assert!(
        store
            .list_jobs(&JobFilter::default())
            .await
            .unwrap()
            .is_empty(),
        "nothing was recorded"
    );

    // The delivery as GitHub sends it is recorded.
    let (status, body) = deliver(&|_: &mut Value| {}).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        store.list_jobs(&JobFilter::default()).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn unknown_fields_in_admin_bodies_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store, pool, token) = app_with_admin(dir.path()).await;
    let t = Some(token.as_str());

    let a = call(
        &app,
        "POST",
        "/api/v1/endpoints",
        t,
        None,
        Some(json!({
            "name": "ghes",
            "base_url": "https://ghes.example.com",
            "api_base_url": "https://ghes.example.com/api/v3",
            "ca_bundel": "typo",
        })),
    )
    .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "ca_bundel");
    assert_eq!(
        a.body["error"],
        "unknown field \"ca_bundel\" in the request body"
    );
    assert!(
        store.endpoint("ghes").await.is_err(),
        "the endpoint was not created"
    );

    let a = call(
        &app,
        "PUT",
        &format!("/api/v1/pools/{}", pool.id),
        t,
        None,
        Some(json!({"max_runer": 3, "enabled": false})),
    )
    .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "max_runer");
    let stored = store.pool(pool.id).await.unwrap();
    assert_eq!(stored.spec, pool.spec, "the pool is unchanged");

    let a = call(
        &app,
        "POST",
        &format!("/api/v1/organizations/{}/pools", pool.entity_id),
        t,
        None,
        Some(json!({
            "provider_name": "fake", "image": "i", "flavor": "f", "tags": ["x"],
            "extra_spec": {"disk": 1},
        })),
    )
    .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "extra_spec");
    assert_eq!(store.list_pools(None).await.unwrap().len(), 1);

    let a = call(
        &app,
        "POST",
        "/api/v1/auth/login",
        None,
        Some("10.0.0.9"),
        Some(json!({"username": "admin", "password": PASSWORD, "otp": "123456"})),
    )
    .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "otp");

    let a = call(
        &app,
        "POST",
        &format!("/api/v1/organizations/{}/webhook", pool.entity_id),
        t,
        None,
        Some(json!({"insecure_ssl": false, "events": ["push"]})),
    )
    .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "events");

    // Known fields alone still work.
    let a = call(
        &app,
        "PUT",
        &format!("/api/v1/pools/{}", pool.id),
        t,
        None,
        Some(json!({"max_runners": 3})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn pool_sizes_above_the_configured_maximum_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store, pool, token) = app_with_admin(dir.path()).await;
    let t = Some(token.as_str());
    let limit = hangar_server::DEFAULT_MAX_RUNNERS_PER_POOL;
    let pools_path = format!("/api/v1/organizations/{}/pools", pool.entity_id);
    let create = |max: u32, min_idle: u32| {
        call(
            &app,
            "POST",
            &pools_path,
            t,
            None,
            Some(json!({
                "provider_name": "fake", "image": "i", "flavor": "f", "tags": ["big"],
                "max_runners": max, "min_idle_runners": min_idle,
            })),
        )
    };

    let a = create(100_000, 0).await;
    assert_error(&a, StatusCode::BAD_REQUEST, "max_runners_per_pool");
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("max_runners 100000 is above the limit of {limit}")),
        "{}",
        a.body
    );
    let a = create(limit + 1, limit + 1).await;
    assert_error(&a, StatusCode::BAD_REQUEST, &limit.to_string());
    assert_eq!(
        store.list_pools(None).await.unwrap().len(),
        1,
        "none created"
    );

    let a = create(limit, 0).await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "the limit itself is fine: {}",
        a.body
    );

    let pool_path = format!("/api/v1/pools/{}", pool.id);
    let update = |body: Value| call(&app, "PUT", &pool_path, t, None, Some(body));
    let a = update(json!({"max_runners": 5000})).await;
    assert_error(&a, StatusCode::BAD_REQUEST, "max_runners 5000");
    let a = update(json!({"min_idle_runners": 2000})).await;
    assert_error(&a, StatusCode::BAD_REQUEST, "min_idle_runners 2000");
    assert_eq!(
        store.pool(pool.id).await.unwrap().spec,
        pool.spec,
        "the pool is unchanged"
    );
}

#[tokio::test]
async fn password_guessing_is_throttled_per_user_and_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _store, _pool, _) = app_with_admin(dir.path()).await;

    // One address trying many names: free for 20 failures, then locked.
    for n in 0..21 {
        let a = login(&app, &format!("guess{n}"), "hunter2hunter2", "192.0.2.66").await;
        assert_error(&a, StatusCode::UNAUTHORIZED, "invalid username or password");
    }
    let a = login(&app, "admin", PASSWORD, "192.0.2.66").await;
    assert_error(&a, StatusCode::TOO_MANY_REQUESTS, "too many failed logins");
    let wait: u64 = a.retry_after.as_deref().unwrap().parse().unwrap();
    assert!(wait >= 1, "Retry-After {wait}");
    // The right password for another user, from another address, works.
    let a = login(&app, "admin", PASSWORD, "198.51.100.7").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    // A success clears the user's count: five failures, a success, five
    // more are still all plain 401s (eleven in a row would be locked).
    for round in 0..2 {
        for _ in 0..5 {
            let a = login(&app, "admin", "wrong password!", "198.51.100.8").await;
            assert_error(&a, StatusCode::UNAUTHORIZED, "invalid username or password");
        }
        let a = login(&app, "admin", PASSWORD, "198.51.100.8").await;
        assert_eq!(a.status, StatusCode::OK, "round {round}: {}", a.body);
    }

    // Many wrong passwords for one user: after five, 429 with Retry-After,
    // from any address and even with the right password, without a check.
    for _ in 0..6 {
        let a = login(&app, "admin", "wrong password!", "198.51.100.9").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    }
    for peer in ["198.51.100.9", "203.0.113.1"] {
        let a = login(&app, "admin", "wrong password!", peer).await;
        assert_error(&a, StatusCode::TOO_MANY_REQUESTS, "try again later");
        assert!(a.retry_after.is_some());
        let a = login(&app, "admin", PASSWORD, peer).await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    }
}

/// `GET /api/v1/pools/{id}/userdata`: the pool's boot data for inspection,
/// as `#cloud-config`, with placeholders where a new instance's name
/// suffix, token and runner download go; listed in the OpenAPI document.
#[tokio::test]
async fn a_pools_boot_data_can_be_inspected_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _store, pool, token) = app_with_admin(dir.path()).await;
    let path = format!("/api/v1/pools/{}/userdata", pool.id);
    let a = call(&app, "GET", &path, None, None, None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    let a = call(&app, "GET", &path, Some(&token), None, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["pool_id"], pool.id.to_string());
    assert_eq!(a.body["provider_name"], "fake");
    assert_eq!(a.body["content_type"], "text/cloud-config");
    let ud = a.body["userdata"].as_str().unwrap();
    assert!(ud.starts_with("#cloud-config\n"), "{ud}");
    assert!(ud.contains("runcmd:"), "{ud}");
    assert!(
        ud.contains("HANGAR_METADATA_URL='http://127.0.0.1:1/api/v1/metadata'"),
        "{ud}"
    );
    assert!(
        ud.contains("HANGAR_TOKEN='<instance token: issued per instance"),
        "{ud}"
    );
    assert!(ud.contains("-xxxxxxxxxxxx"), "{ud}");
    assert!(ud.contains("hangar-pool-id:"), "the runner labels: {ud}");
    assert_eq!(a.body["placeholders"].as_array().unwrap().len(), 4);
    // The standard validator takes it as it is (placeholders included).
    if let Err(e) = hangar_testkit::cloud_init::schema_check(ud) {
        panic!("{e}");
    }

    let a = call(
        &app,
        "GET",
        &format!("/api/v1/pools/{}/userdata", uuid::Uuid::new_v4()),
        Some(&token),
        None,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    let a = call(
        &app,
        "GET",
        "/api/v1/pools/nope/userdata",
        Some(&token),
        None,
        None,
    )
    .await;
    assert_error(&a, StatusCode::NOT_FOUND, "not found");

    let doc = hangar_server::openapi_json();
    assert!(
        doc["paths"]["/api/v1/pools/{id}/userdata"]["get"].is_object(),
        "in the OpenAPI document"
    );
}
