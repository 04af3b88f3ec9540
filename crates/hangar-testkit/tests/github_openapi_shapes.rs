//! FakeGitHub's webhook routes hold to GitHub's REST description: the
//! status codes, required response fields and config fields that
//! `fixtures/github-openapi/webhooks.json` extracts from `@octokit/openapi`
//! (`repos/create-webhook`, `repos/list-webhooks`, `repos/delete-webhook`
//! and their `orgs/` twins).

use hangar_testkit::fake_github::FakeGitHub;
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
