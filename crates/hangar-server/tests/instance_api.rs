//! The routes a booting instance calls, driven through the router with
//! `oneshot`: its token opens only its own instance, only while the runner
//! bootstraps; the JIT config is handed out once; callbacks follow the
//! runner state machine.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hangar_core::*;
use hangar_store::Change;
use hangar_store::Store;
use http_body_util::BodyExt as _;
use support::app;
use tower::ServiceExt as _;

/// An instance in `creating` with a JIT config and a known token.
async fn instance(store: &Store, pool: &Pool, name: &str, token: &str) -> InstanceName {
    let name = InstanceName::parse(name).unwrap();
    store
        .reserve_instances(pool.id, "fake", std::slice::from_ref(&name))
        .await
        .unwrap();
    store
        .set_instance_jit(&name, 1, &Secret::new(format!("JIT-{name}")))
        .await
        .unwrap();
    store
        .transition(
            &name,
            Change::BeginCreate {
                token_hash: &hangar_store::hash_token(token),
            },
        )
        .await
        .unwrap();
    name
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.unwrap_or("").to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn a_token_opens_its_own_instance_once_and_only_while_bootstrapping() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store, pool, scheduler) = app(dir.path(), &[]).await;
    let a = instance(&store, &pool, "hangar-a", "token-a").await;
    let b = instance(&store, &pool, "hangar-b", "token-b").await;

    let (s, _) = call(&app, "GET", "/api/v1/metadata/jit-config", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(
        &app,
        "GET",
        "/api/v1/metadata/jit-config",
        Some("nope"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Each token yields its own instance's JIT config, once.
    let (s, body) = call(
        &app,
        "GET",
        "/api/v1/metadata/jit-config",
        Some("token-a"),
        None,
    )
    .await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "JIT-hangar-a"));
    let (s, body) = call(
        &app,
        "GET",
        "/api/v1/metadata/jit-config",
        Some("token-a"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let (s, body) = call(
        &app,
        "GET",
        "/api/v1/metadata/jit-config",
        Some("token-b"),
        None,
    )
    .await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "JIT-hangar-b"));

    // Callbacks walk the runner state machine.
    let cb = |status: &str| format!(r#"{{"status":"{status}","message":"m"}}"#);
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/callbacks/status",
        Some("token-a"),
        Some(&cb("installing")),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        store.instance(&a).await.unwrap().runner_status,
        RunnerStatus::Installing
    );
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/callbacks/status",
        Some("token-a"),
        Some(&cb("bogus")),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/callbacks/status",
        Some("token-a"),
        Some(&cb("idle")),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        store.instance(&a).await.unwrap().runner_status,
        RunnerStatus::Idle
    );
    // Once the runner is up, the token is worthless.
    let (s, body) = call(
        &app,
        "POST",
        "/api/v1/callbacks/status",
        Some("token-a"),
        Some(&cb("failed")),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        store.instance(&a).await.unwrap().runner_status,
        RunnerStatus::Idle
    );

    // A failure report is recorded; reconcile retires the instance.
    store
        .transition(
            &b,
            Change::FinishCreate {
                provider_id: "vm-b",
                addresses: &[],
            },
        )
        .await
        .unwrap();
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/callbacks/status",
        Some("token-b"),
        Some(&cb("failed")),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let b_now = store.instance(&b).await.unwrap();
    assert_eq!(b_now.runner_status, RunnerStatus::Failed);
    assert_eq!(
        b_now.status,
        InstanceStatus::Running,
        "the event path decides nothing"
    );
    let report = scheduler.reconcile_pool(pool.id).await.unwrap();
    assert_eq!(report.retired, 1);
    let b_now = store.instance(&b).await.unwrap();
    assert_eq!(b_now.status, InstanceStatus::PendingDelete);
    assert_eq!(
        b_now.status_message.as_deref(),
        Some("runner reported a failure")
    );
    let (s, _) = call(
        &app,
        "GET",
        "/api/v1/metadata/jit-config",
        Some("token-b"),
        None,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a retired instance's token is refused"
    );
}

/// Once its runner is up, the token may report one thing more: that the
/// runner exited (its one job ended). The instance is then retired without
/// waiting for GitHub's `completed`.
#[tokio::test]
async fn an_up_runner_reports_its_exit_and_its_instance_is_retired() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store, pool, scheduler) = app(dir.path(), &[]).await;
    let a = instance(&store, &pool, "hangar-a", "token-a").await;
    store
        .transition(
            &a,
            Change::FinishCreate {
                provider_id: "vm-a",
                addresses: &[],
            },
        )
        .await
        .unwrap();
    let cb = |status: &str, msg: &str| format!(r#"{{"status":"{status}","message":"{msg}"}}"#);
    let post = |body: String| {
        let app = app.clone();
        async move {
            call(
                &app,
                "POST",
                "/api/v1/callbacks/status",
                Some("token-a"),
                Some(&body),
            )
            .await
        }
    };
    let (s, body) = post(cb("idle", "runner connected, listening for jobs")).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    // Up: bootstrap reports and the metadata are closed to the token ...
    let (s, body) = post(cb("failed", "x")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("may now only report terminated"), "{body}");
    let (s, _) = call(
        &app,
        "GET",
        "/api/v1/metadata/jit-config",
        Some("token-a"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // ... but the runner's exit is recorded with its message.
    let (s, body) = post(cb("terminated", "runner exited with status 0")).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let now = store.instance(&a).await.unwrap();
    assert_eq!(now.runner_status, RunnerStatus::Terminated);
    assert_eq!(
        now.status_message.as_deref(),
        Some("runner exited with status 0")
    );
    // Terminated is the end: the token is worthless now.
    let (s, _) = post(cb("terminated", "again")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let report = scheduler.reconcile_pool(pool.id).await.unwrap();
    assert_eq!(report.retired, 1);
    let now = store.instance(&a).await.unwrap();
    assert_eq!(now.status, InstanceStatus::PendingDelete);
    assert_eq!(now.status_message.as_deref(), Some("runner exited"));
}

/// An instance in `creating` without a JIT config (registration token).
async fn token_instance(store: &Store, pool: &Pool, name: &str, token: &str) -> InstanceName {
    let name = InstanceName::parse(name).unwrap();
    store
        .reserve_instances(pool.id, "fake", std::slice::from_ref(&name))
        .await
        .unwrap();
    store
        .transition(
            &name,
            Change::BeginCreate {
                token_hash: &hangar_store::hash_token(token),
            },
        )
        .await
        .unwrap();
    name
}

#[tokio::test]
async fn garm_boot_contract_hands_out_each_jit_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store, pool, _scheduler) = app(dir.path(), &[]).await;
    let jit = jit::encode_jit_config([
        (
            JitFile::Runner,
            &br#"{"agentId": 41, "agentName": "hangar-j"}"#[..],
        ),
        (JitFile::Credentials, &b"CREDS"[..]),
        (JitFile::CredentialsRsaParams, &b"RSA"[..]),
    ]);
    let j = instance(&store, &pool, "hangar-j", "token-j").await;
    store
        .set_instance_jit(&j, 41, &Secret::new(jit.clone()))
        .await
        .unwrap();
    let whole = instance(&store, &pool, "hangar-w", "token-w").await;
    store
        .set_instance_jit(&whole, 42, &Secret::new(jit))
        .await
        .unwrap();
    token_instance(&store, &pool, "hangar-t", "token-t").await;
    let get = |path: &'static str, token: &'static str| {
        let app = app.clone();
        async move { call(&app, "GET", path, Some(token), None).await }
    };

    // Each file, decoded, once; with or without a trailing slash.
    let (s, body) = get("/api/v1/metadata/credentials/runner", "token-j").await;
    assert_eq!(
        (s, body.as_str()),
        (
            StatusCode::OK,
            r#"{"agentId": 41, "agentName": "hangar-j"}"#
        )
    );
    let (s, body) = get("/api/v1/metadata/credentials/runner/", "token-j").await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let (s, body) = get("/api/v1/metadata/credentials/credentials/", "token-j").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "CREDS"));
    // The whole config is gone once a file is out.
    let (s, body) = get("/api/v1/metadata/jit-config", "token-j").await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let (s, body) = get(
        "/api/v1/metadata/credentials/credentials_rsaparams",
        "token-j",
    )
    .await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "RSA"));
    let (s, body) = get("/api/v1/metadata/credentials/secrets", "token-j").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        err["error"].is_string() && err["details"].is_string(),
        "{body}"
    );
    // JIT instances get no registration token.
    let (s, body) = get("/api/v1/metadata/runner-registration-token/", "token-j").await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");

    // Taking the whole config takes every file.
    let (s, _) = get("/api/v1/metadata/jit-config/", "token-w").await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = get("/api/v1/metadata/credentials/runner", "token-w").await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");

    // A registration-token instance has no files; its token call reaches
    // GitHub (unreachable here), and a failed call does not use it up.
    let (s, body) = get("/api/v1/metadata/credentials/runner", "token-t").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    for _ in 0..2 {
        let (s, body) = get("/api/v1/metadata/runner-registration-token", "token-t").await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    }

    // The rest of the contract.
    let (s, body) = get("/api/v1/metadata/system/service-name/", "token-t").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "actions.runner.acme"));
    let (s, body) = get("/api/v1/metadata/systemd/unit-file?runAsUser=ci", "token-t").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("User=ci\n") && body.contains("/home/ci/actions-runner/runsvc.sh"),
        "{body}"
    );
    let (s, body) = get(
        "/api/v1/metadata/systemd/unit-file/?runAsUser=..%2Froot",
        "token-t",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, body) = get("/api/v1/metadata/system/cert-bundle", "token-t").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "{}"));
    let (s, body) = get("/api/v1/metadata/runner-metadata/", "token-t").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let meta: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(meta["runner_name"], "hangar-t");
    assert_eq!(meta["jit_enabled"], false);
    assert_eq!(meta["runner_registration_url"], "http://127.0.0.1:1/acme");
    assert_eq!(
        meta["metadata_access"]["metadata_url"],
        "http://127.0.0.1:1/api/v1/metadata"
    );
    assert!(
        meta["runner_labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "self-hosted")
    );

    // Callbacks as garm's script sends them: `curl -d`, a form content type.
    let post = |path: &'static str, token: &'static str, body: &'static str| {
        let app = app.clone();
        async move {
            let req = Request::builder()
                .method("POST")
                .uri(path)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let (s, body) = post(
        "/api/v1/callbacks/status/",
        "token-t",
        r#"{"status": "installing", "message": "downloading tools"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let (s, body) = post(
        "/api/v1/callbacks/system-info/",
        "token-t",
        r#"{"os_name": "Ubuntu", "os_version": "24.04", "agent_id": 77}"#,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let (s, body) = post("/api/v1/callbacks/system-info", "token-t", "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        err["error"].is_string() && err["details"].is_string(),
        "{body}"
    );
    let (s, body) = post(
        "/api/v1/callbacks/status",
        "token-t",
        r#"{"status": "idle", "message": "runner successfully installed", "agent_id": 77, "extra": 1}"#,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let t = store
        .instance(&InstanceName::parse("hangar-t").unwrap())
        .await
        .unwrap();
    assert_eq!(t.runner_status, RunnerStatus::Idle);
    assert_eq!(t.runner_id, Some(77));
    assert_eq!(
        (t.os_name.as_deref(), t.os_version.as_deref()),
        (Some("Ubuntu"), Some("24.04"))
    );
}
