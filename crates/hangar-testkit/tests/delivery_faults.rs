//! FakeGitHub's fault knobs behave as documented and as GitHub does: the
//! delivery plan loses, duplicates and holds back webhooks, every attempt
//! (a lost one with `status_code` 0) is listed by the hook's deliveries
//! route in GitHub's `hook-delivery-item` shape
//! (`fixtures/github-openapi/recovery.json`), a failed one can be
//! redelivered through `POST …/deliveries/{id}/attempts`, and injected
//! rate-limit and busy answers carry GitHub's statuses, headers and
//! messages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hangar_testkit::fake_github::{DeliveryFate, FakeGitHub, FaultKind};
use serde_json::Value;

/// A receiver that records (action, job id, delivery guid) and answers 202.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, i64, String)>>>) {
    let seen: Arc<Mutex<Vec<(String, i64, String)>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap();
                s.lock().unwrap().push((
                    v["action"].as_str().unwrap().to_owned(),
                    v["workflow_job"]["id"].as_i64().unwrap(),
                    headers["x-github-delivery"].to_str().unwrap().to_owned(),
                ));
                StatusCode::ACCEPTED
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, seen)
}

fn fixture() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/github-openapi/recovery.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every delivery attempt of repository hook `hook`, as GitHub lists it
/// (newest first).
async fn listed(gh: &FakeGitHub, hook: i64) -> Vec<Value> {
    let r = reqwest::Client::new()
        .get(format!(
            "{}/repos/octo/app/hooks/{hook}/deliveries?per_page=100",
            gh.url()
        ))
        .bearer_auth("ghp_x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Vec<Value>>().await.unwrap()
}

#[tokio::test]
async fn the_delivery_plan_loses_duplicates_and_holds_back_and_lists_every_attempt() {
    let (url, seen) = receiver().await;
    let gh = FakeGitHub::start().await;
    let c = reqwest::Client::new();
    let made: Value = c
        .post(format!("{}/repos/octo/app/hooks", gh.url()))
        .bearer_auth("ghp_x")
        .json(
            &serde_json::json!({"name": "web", "active": true, "events": ["workflow_job"],
            "config": {"url": url, "content_type": "json", "secret": "s3cret"}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hook = made["id"].as_i64().unwrap();
    // Jobs are numbered in order: the first lost, the second duplicated,
    // the third and fourth held back.
    let first = 30_000_000_000i64;
    gh.set_delivery_plan(move |action, job| match (action, job - first) {
        ("queued", 0) => DeliveryFate::Lose,
        ("queued", 1) => DeliveryFate::Duplicate,
        ("queued", 2 | 3) => DeliveryFate::Hold,
        _ => DeliveryFate::Deliver,
    });
    let ids: Vec<i64> = [
        gh.queue_job("octo/app", &["x"]).await,
        gh.queue_job("octo/app", &["x"]).await,
        gh.queue_job("octo/app", &["x"]).await,
        gh.queue_job("octo/app", &["x"]).await,
    ]
    .to_vec();
    assert_eq!(ids[0], first);
    let got: Vec<i64> = seen.lock().unwrap().iter().map(|s| s.1).collect();
    assert_eq!(
        got,
        vec![ids[1], ids[1]],
        "lost and held ones did not arrive"
    );
    {
        let s = seen.lock().unwrap();
        assert_eq!(s[0].2, s[1].2, "a duplicate carries the same delivery guid");
    }
    assert_eq!(gh.held_deliveries(), 2);
    assert_eq!(gh.release_held(true).await, 2);
    let got: Vec<i64> = seen.lock().unwrap().iter().map(|s| s.1).collect();
    assert_eq!(got[2..], [ids[3], ids[2]], "released newest first");

    // Every attempt is listed, in GitHub's shape; the lost one as failed.
    let spec = fixture();
    let required = &spec["operations"]["repos/list-webhook-deliveries"]["response_items_required"];
    let props = &spec["schemas"]["hook-delivery-item"]["properties"];
    let list = listed(&gh, hook).await;
    assert_eq!(list.len(), 5, "1 lost + 2 duplicated + 2 released");
    for v in &list {
        for f in required.as_array().unwrap() {
            assert!(v.get(f.as_str().unwrap()).is_some(), "{f} missing in {v}");
        }
        for (k, x) in v.as_object().unwrap() {
            let p = &props[k];
            assert!(p.is_object(), "{k} is not a documented field");
            let t = type_of(x);
            let ok = t == p["type"]
                || (t == "integer" && p["type"] == "number")
                || (t == "null" && p["nullable"] == true);
            assert!(ok, "{k}: {t} where GitHub has {p}");
        }
    }
    let attempts = gh.delivery_attempts();
    let lost = attempts
        .iter()
        .find(|a| a.job_id == ids[0])
        .unwrap()
        .clone();
    assert_eq!(lost.status_code, 0);
    let lost_listed = list.iter().find(|v| v["id"] == lost.id).unwrap();
    assert_eq!(lost_listed["status_code"], 0);
    assert!(
        list.iter()
            .filter(|v| v["id"] != lost.id)
            .all(|v| v["status"] == "OK" && v["status_code"] == 202)
    );

    // Redelivering the failed attempt reaches the receiver, as a redelivery.
    gh.clear_delivery_plan();
    let r = c
        .post(format!(
            "{}/repos/octo/app/hooks/{hook}/deliveries/{}/attempts",
            gh.url(),
            lost.id
        ))
        .bearer_auth("ghp_x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    gh.wait_for(Duration::from_secs(10), "the redelivery", |g| {
        g.delivery_attempts().iter().any(|a| a.redelivery)
    })
    .await;
    let again = gh.delivery_attempts().last().unwrap().clone();
    assert!(again.redelivery);
    assert_eq!(again.guid, lost.guid, "a redelivery keeps the event's guid");
    assert_eq!(again.status_code, 202);
    assert_eq!(seen.lock().unwrap().last().unwrap().1, ids[0]);
    let newest = &listed(&gh, hook).await[0];
    assert_eq!(newest["redelivery"], true);

    // A delayed delivery arrives later, without holding anything up.
    gh.set_delivery_plan(|_, _| DeliveryFate::Delay(Duration::from_millis(300)));
    let late = gh.queue_job("octo/app", &["x"]).await;
    assert!(!seen.lock().unwrap().iter().any(|s| s.1 == late));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(seen.lock().unwrap().iter().any(|s| s.1 == late));
}

#[tokio::test]
async fn injected_limits_and_busy_answers_look_like_githubs() {
    let gh = FakeGitHub::start().await;
    let c = reqwest::Client::new();
    let list = format!("{}/repos/octo/app/actions/runners", gh.url());
    gh.inject(
        None,
        "/actions/runners",
        1,
        FaultKind::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    let r = c.get(&list).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let reset: i64 = r.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset > chrono::Utc::now().timestamp());
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("rate limit exceeded")
    );
    assert!(
        v["documentation_url"]
            .as_str()
            .unwrap()
            .starts_with("https://docs.github.com/")
    );

    gh.inject(
        None,
        "/actions/runners",
        1,
        FaultKind::SecondaryLimit {
            retry_after_secs: Some(2),
        },
    );
    let r = c.get(&list).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["retry-after"], "2");
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("secondary rate limit")
    );

    let id = gh.add_runner("repos/octo/app", "r1", &["x"], true, false);
    gh.inject(
        Some(reqwest::Method::DELETE),
        "/actions/runners/",
        1,
        FaultKind::Busy,
    );
    let del = format!("{list}/{id}");
    let r = c.delete(&del).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(gh.runners().len(), 1, "a busy answer removes nothing");
    let r = c.delete(&del).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(gh.faults_fired(), 3);
}
