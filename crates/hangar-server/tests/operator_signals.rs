//! What an operator reads about the server without the admin API: refused
//! webhook deliveries leave a warning naming the entity and the reason
//! (once a minute, with a count) and are counted under that reason in
//! `/metrics`; `/healthz` and `/readyz` list the same providers.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn job(org: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "action": "queued",
        "workflow_job": {
            "id": 77, "run_id": 1, "run_attempt": 1, "status": "queued",
            "labels": ["self-hosted"], "name": "build",
            "runner_name": null, "runner_id": null, "conclusion": null
        },
        "repository": {"id": 1, "name": "app", "full_name": format!("{org}/app"),
            "owner": {"login": org}},
        "organization": {"login": org, "id": 9}
    }))
    .unwrap()
}

async fn deliver(app: &axum::Router, path: &str, secret: &str, body: Vec<u8>) -> u16 {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .header("x-github-event", "workflow_job")
        .header(
            "x-hub-signature-256",
            hangar_github::webhook::sign(secret.as_bytes(), &body),
        )
        .body(Body::from(body))
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status().as_u16()
}

async fn get(app: &axum::Router, path: &str) -> (u16, String) {
    let resp = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn refused_deliveries_are_logged_once_and_counted_by_reason() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let (app, _store, pool, _) = support::app(dir.path(), &[]).await;
    let path = format!("/webhooks/{}", pool.entity_id);

    // Signed with acme's secret, about another organization.
    for _ in 0..3 {
        assert_eq!(deliver(&app, &path, "s", job("other-org")).await, 400);
    }
    // A bad signature.
    for _ in 0..2 {
        assert_eq!(
            deliver(&app, &path, "not-the-secret", job("acme")).await,
            401
        );
    }
    // Accepted deliveries log no warning.
    assert_eq!(deliver(&app, &path, "s", job("acme")).await, 202);

    let text = logs.text();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("webhook delivery rejected"))
        .collect();
    assert_eq!(warnings.len(), 2, "one line per entity and reason: {text}");
    assert!(
        warnings.iter().all(|l| l.contains("WARN")
            && l.contains("organization acme")
            && l.contains(&pool.entity_id.to_string())),
        "{text}"
    );
    assert!(
        warnings[0].contains("reason=\"wrong_entity\"")
            || warnings[0].contains("reason=wrong_entity"),
        "{text}"
    );
    assert!(warnings[1].contains("bad_signature"), "{text}");

    let (_, metrics) = get(&app, "/metrics").await;
    let line = |outcome: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("hangar_webhooks")
                    && l.contains(&format!("outcome=\"{outcome}\""))
                    && l.contains("event=\"workflow_job\"")
            })
            .map(str::to_owned)
    };
    assert!(
        line("wrong_entity").is_some_and(|l| l.ends_with(" 3")),
        "{metrics}"
    );
    assert!(
        line("bad_signature").is_some_and(|l| l.ends_with(" 2")),
        "{metrics}"
    );
    assert!(line("malformed").is_none(), "not malformed: {metrics}");
}

#[tokio::test]
async fn healthz_and_readyz_list_the_same_providers() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _store, _pool, _) = support::app(dir.path(), &[]).await;
    let (code, live) = get(&app, "/healthz").await;
    assert_eq!(code, 200);
    let (code, ready) = get(&app, "/readyz").await;
    assert_eq!(code, 200);
    let live: serde_json::Value = serde_json::from_str(&live).unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let names = |v: &serde_json::Value| {
        v["providers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].clone(), p["kind"].clone(), p["healthy"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&live),
        vec![("fake".into(), "fake".into(), true.into())],
        "{live}"
    );
    assert_eq!(names(&live), names(&ready), "{live} vs {ready}");
    assert_eq!(live["status"], "ok");
    assert_eq!(live["database"], "unchecked", "liveness asks no one");
    assert_eq!(ready["database"], "ok");
}
