//! FakeGitHub's webhook routes hold to GitHub's REST description: the
//! status codes, required response fields and config fields that
//! `fixtures/github-openapi/webhooks.json` extracts from `@octokit/openapi`
//! (`repos/create-webhook`, `repos/list-webhooks`, `repos/delete-webhook`
//! and their `orgs/` twins), and its delivery and workflow-run routes to
//! `recovery.json` (hook deliveries of repositories, organizations and the
//! App, redelivery, queued runs and their jobs).

use hangar_testkit::fake_github::FakeGitHub;
use std::time::Duration;

use serde_json::{Value, json};

fn spec() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/github-openapi/webhooks.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Every required field is there, and config has only documented fields.
fn holds(op: &Value, hook: &Value, what: &str) {
    for f in strings(&op["response_required"]) {
        assert!(hook.get(&f).is_some(), "{what}: {f} missing in {hook}");
    }
    let allowed = strings(&op["response_config_properties"]);
    for k in hook["config"].as_object().unwrap().keys() {
        assert!(allowed.contains(k), "{what}: config.{k} is not documented");
    }
}

#[tokio::test]
async fn webhook_routes_hold_to_the_rest_description() {
    let spec = spec();
    let ops = &spec["operations"];
    let gh = FakeGitHub::start().await;
    let c = reqwest::Client::new();
    for (prefix, scope) in [("repos", "/repos/octo/app"), ("orgs", "/orgs/acme")] {
        let create = &ops[format!("{prefix}/create-webhook")];
        let list = &ops[format!("{prefix}/list-webhooks")];
        let delete = &ops[format!("{prefix}/delete-webhook")];
        // The request uses only documented fields, with the required ones.
        let body = json!({"name": "web", "active": true, "events": ["workflow_job"],
            "config": {"url": "https://hangar.example/webhooks/x", "content_type": "json",
                       "secret": "s3cret", "insecure_ssl": "0"}});
        for k in body.as_object().unwrap().keys() {
            assert!(strings(&create["request_properties"]).contains(k), "{k}");
        }
        for k in strings(&create["request_required"]) {
            assert!(body.get(&k).is_some(), "{prefix}: request lacks {k}");
        }
        let r = c
            .post(format!("{}{scope}/hooks", gh.url()))
            .bearer_auth("ghp_x")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16() as u64,
            create["status"].as_u64().unwrap()
        );
        let made: Value = r.json().await.unwrap();
        holds(create, &made, &format!("{prefix}/create-webhook"));
        assert_eq!(made["config"]["url"], "https://hangar.example/webhooks/x");
        assert_ne!(made["config"]["secret"], "s3cret", "secrets are not echoed");

        let r = c
            .get(format!("{}{scope}/hooks", gh.url()))
            .bearer_auth("ghp_x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16() as u64, list["status"].as_u64().unwrap());
        let all: Value = r.json().await.unwrap();
        assert_eq!(all.as_array().unwrap().len(), 1);
        holds(list, &all[0], &format!("{prefix}/list-webhooks"));

        let url = format!("{}{scope}/hooks/{}", gh.url(), made["id"]);
        let r = c.delete(&url).bearer_auth("ghp_x").send().await.unwrap();
        assert_eq!(
            r.status().as_u16() as u64,
            delete["status"].as_u64().unwrap()
        );
        let r = c.delete(&url).bearer_auth("ghp_x").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "gone is 404");
    }
}

fn recovery_spec() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/github-openapi/recovery.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn has_all(v: &Value, required: &Value, what: &str) {
    for f in strings(required) {
        assert!(v.get(&f).is_some(), "{what}: {f} missing in {v}");
    }
}

/// The `cursor` of a `Link: <…>; rel="next"` header.
fn next_cursor(r: &reqwest::Response) -> Option<String> {
    let link = r.headers().get("link")?.to_str().ok()?.to_owned();
    let url = link.split(';').next()?.trim().trim_matches(['<', '>']);
    url.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix("cursor=").map(str::to_owned))
}

/// An App JWT as octocrab sends it (FakeGitHub reads `iss`, not the
/// signature).
fn app_jwt(app_id: i64) -> String {
    use base64::Engine as _;
    let b = |v: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    format!(
        "{}.{}.c2ln",
        b(json!({"alg": "RS256", "typ": "JWT"})),
        b(json!({"iss": app_id.to_string(), "iat": 0, "exp": 0}))
    )
}

#[tokio::test]
async fn delivery_and_run_routes_hold_to_the_rest_description() {
    let spec = recovery_spec();
    let ops = &spec["operations"];
    let gh = FakeGitHub::start().await;
    gh.set_app(77);
    let c = reqwest::Client::new();
    // Two hooks whose receiver is unreachable: every attempt fails with 0.
    let dead = "http://127.0.0.1:9/webhooks/x";
    let mut hooks = Vec::new();
    for scope in ["/repos/octo/app", "/orgs/octo"] {
        let made: Value = c
            .post(format!("{}{scope}/hooks", gh.url()))
            .bearer_auth("ghp_x")
            .json(
                &json!({"name": "web", "active": true, "events": ["workflow_job"],
                "config": {"url": dead, "content_type": "json", "secret": "s"}}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        hooks.push((scope, made["id"].as_i64().unwrap()));
    }
    gh.set_app_hook(dead, "s");
    for _ in 0..3 {
        gh.queue_job("octo/app", &["self-hosted"]).await;
    }

    let routes: Vec<(String, String, &str)> = hooks
        .iter()
        .map(|(scope, id)| {
            let prefix = if scope.starts_with("/repos") {
                "repos"
            } else {
                "orgs"
            };
            (
                format!("{scope}/hooks/{id}/deliveries"),
                "ghp_x".to_owned(),
                prefix,
            )
        })
        .chain([("/app/hook/deliveries".to_owned(), app_jwt(77), "apps")])
        .collect();
    for (path, token, prefix) in routes {
        let list = &ops[format!("{prefix}/list-webhook-deliveries")];
        let redeliver = &ops[format!("{prefix}/redeliver-webhook-delivery")];
        assert_eq!(list["method"], "GET");
        // Paged by two, newest first, following the Link cursor.
        let mut seen: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}{path}?per_page=2", gh.url());
            if let Some(cur) = &cursor {
                url.push_str(&format!("&cursor={cur}"));
            }
            let r = c.get(url).bearer_auth(&token).send().await.unwrap();
            assert_eq!(r.status().as_u16() as u64, list["status"].as_u64().unwrap());
            cursor = next_cursor(&r);
            let page: Value = r.json().await.unwrap();
            let page = page.as_array().unwrap().clone();
            assert!(page.len() <= 2);
            for d in &page {
                has_all(d, &list["response_items_required"], prefix);
                assert_eq!(d["status_code"], 0, "unreachable is status_code 0");
            }
            seen.extend(page);
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen.len(), 3, "{prefix}: one attempt per job");
        let ids: Vec<i64> = seen.iter().map(|d| d["id"].as_i64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        for q in strings(&list["query_params"]) {
            assert!(
                ["per_page", "cursor", "status"].contains(&q.as_str()),
                "{q}"
            );
        }

        // Redelivery: 202, then a new attempt of the same guid.
        let oldest = seen.last().unwrap().clone();
        let r = c
            .post(format!("{}{path}/{}/attempts", gh.url(), oldest["id"]))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16() as u64,
            redeliver["status"].as_u64().unwrap()
        );
        let guid = oldest["guid"].as_str().unwrap().to_owned();
        gh.wait_for(Duration::from_secs(10), "the redelivery", |g| {
            g.delivery_attempts()
                .iter()
                .any(|a| a.guid == guid && a.redelivery)
        })
        .await;
        let r = c
            .post(format!("{}{path}/1/attempts", gh.url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "unknown delivery");
    }
    // The App's deliveries need the App's JWT, not a token.
    let r = c
        .get(format!("{}/app/hook/deliveries", gh.url()))
        .bearer_auth("ghs_fake_1_1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Queued runs and their jobs.
    let runs_op = &ops["actions/list-workflow-runs-for-repo"];
    let jobs_op = &ops["actions/list-jobs-for-workflow-run"];
    assert!(strings(&runs_op["query_params"]).contains(&"status".to_owned()));
    let r = c
        .get(format!(
            "{}/repos/octo/app/actions/runs?status=queued&per_page=100",
            gh.url()
        ))
        .bearer_auth("ghp_x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16() as u64,
        runs_op["status"].as_u64().unwrap()
    );
    let runs: Value = r.json().await.unwrap();
    has_all(&runs, &runs_op["response_required"], "list runs");
    let list = runs[runs_op["list_field"].as_str().unwrap()]
        .as_array()
        .unwrap()
        .clone();
    assert!(!list.is_empty());
    for run in &list {
        has_all(run, &runs_op["list_items_required"], "workflow run");
        assert_eq!(run["status"], "queued");
        let r = c
            .get(format!(
                "{}/repos/octo/app/actions/runs/{}/jobs",
                gh.url(),
                run["id"]
            ))
            .bearer_auth("ghp_x")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16() as u64,
            jobs_op["status"].as_u64().unwrap()
        );
        let jobs: Value = r.json().await.unwrap();
        has_all(&jobs, &jobs_op["response_required"], "run jobs");
        for j in jobs[jobs_op["list_field"].as_str().unwrap()]
            .as_array()
            .unwrap()
        {
            has_all(j, &jobs_op["list_items_required"], "workflow job");
            assert_eq!(j["run_id"], run["id"]);
        }
    }
    let in_progress: Value = c
        .get(format!(
            "{}/repos/octo/app/actions/runs?status=in_progress",
            gh.url()
        ))
        .bearer_auth("ghp_x")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(in_progress["total_count"], 0, "nothing has started");
}
