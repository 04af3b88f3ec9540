//! ActionsClient's requests held to GitHub's own scale set client
//! (`fixtures/actions-scaleset/scaleset.json`): every request it sends
//! matches a route of the fixture by method and path, carries its query
//! parameters, `api-version`, the right authorization and headers, and a
//! body with the fixture's field names.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hangar_core::actions::{ActionsService, ScaleSetRequest};
use hangar_core::entity::{Credentials, CredentialsAuth, Endpoint};
use hangar_core::{EntityScope, ForgeTarget, ResourceName, Secret};
use hangar_github::{ActionsClient, GitHubConfig, GitHubForge};
use hangar_testkit::fake_actions::{FakeActions, RecordedRequest};
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::Value;

const FIXTURE: &str = include_str!("../../../fixtures/actions-scaleset/scaleset.json");

fn target(gh: &FakeGitHub) -> ForgeTarget {
    ForgeTarget {
        endpoint: Endpoint {
            name: ResourceName::parse("fake").unwrap(),
            description: String::new(),
            base_url: gh.url(),
            api_base_url: gh.url(),
            ca_bundle: None,
        },
        credentials: Credentials {
            name: ResourceName::parse("gh").unwrap(),
            description: String::new(),
            endpoint: ResourceName::parse("fake").unwrap(),
            auth: CredentialsAuth::Pat {
                token: Secret::new("ghp_test"),
            },
            app_webhook_secret: None,
        },
        scope: EntityScope::Organization {
            name: "octo".into(),
        },
    }
}

fn shape(fx: &Value, name: &str) -> BTreeSet<String> {
    fx["shapes"][name]
        .as_array()
        .unwrap_or_else(|| panic!("no shape {name}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// Whether a recorded path fits a fixture path. Service paths are relative
/// to the tenant URL (the recorded path's first segment); the queue's are
/// FakeActions' `messageQueueUrl` (`/_queue/{id}/messages`).
fn fits(route: &Value, r: &RecordedRequest) -> bool {
    if route["method"].as_str() != Some(r.method.as_str()) {
        return false;
    }
    let host = route["host"].as_str().unwrap();
    let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let (is_queue, rest): (bool, Vec<&str>) = match segs.as_slice() {
        ["_queue", _, "messages", tail @ ..] => (true, tail.to_vec()),
        [_tenant, tail @ ..] if host == "service" => (false, tail.to_vec()),
        all => (false, all.to_vec()),
    };
    if host == "queue" {
        return is_queue
            && match route["name"].as_str().unwrap() {
                "get-message" => rest.is_empty(),
                _ => rest.len() == 1 && rest[0].parse::<i64>().is_ok(),
            };
    }
    if is_queue {
        return false;
    }
    route["paths"].as_array().unwrap().iter().any(|p| {
        let pat: Vec<&str> = p
            .as_str()
            .unwrap()
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let got: Vec<&str> = if host == "service" {
            rest.iter().copied().filter(|s| !s.is_empty()).collect()
        } else {
            segs.clone()
        };
        pat.len() == got.len()
            && pat
                .iter()
                .zip(&got)
                .all(|(p, g)| (p.starts_with('{') && p.ends_with('}')) || p == g)
    })
}

fn query_keys(q: &str) -> BTreeSet<String> {
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect()
}

#[tokio::test]
async fn client_requests_hold_to_the_scaleset_client() {
    let fx: Value = serde_json::from_str(FIXTURE).unwrap();
    let gh = FakeGitHub::start().await;
    let fa = FakeActions::start(&gh).await;
    fa.set_poll_wait(Duration::from_millis(200));
    fa.set_job_duration(Duration::from_millis(10));
    fa.add_runner_group("orgs/octo", 3, "ci");
    let forge = Arc::new(GitHubForge::new(GitHubConfig::default()));
    let c = ActionsClient::new(GitHubConfig::default(), forge);
    let t = target(&gh);

    // Every call of the client, once.
    let group = c.runner_group_id(&t, Some("ci")).await.unwrap();
    let req = ScaleSetRequest {
        name: "ss".into(),
        runner_group_id: group,
        labels: vec!["linux".into()],
        disable_update: false,
    };
    let ss = c.create_scale_set(&t, &req).await.unwrap();
    c.find_scale_set(&t, group, "ss").await.unwrap().unwrap();
    c.get_scale_set(&t, ss.id).await.unwrap().unwrap();
    c.update_scale_set(&t, ss.id, &req).await.unwrap();
    let session = c.create_session(&t, ss.id, "hangar").await.unwrap();
    let session = c.refresh_session(&t, &session).await.unwrap();
    assert!(c.get_message(&session, 0, 3).await.unwrap().is_none());
    let rid = fa.queue_job("ss", "octo/app");
    let m = c.get_message(&session, 0, 3).await.unwrap().unwrap();
    c.acquire_jobs(&t, &session, &[rid]).await.unwrap();
    c.delete_message(&session, m.message_id).await.unwrap();
    let m2 = c
        .get_message(&session, m.message_id, 3)
        .await
        .unwrap()
        .unwrap();
    c.delete_message(&session, m2.message_id).await.unwrap();
    let jit = c
        .generate_jit_config(&t, ss.id, "hangar-r1", "_work")
        .await
        .unwrap();
    c.get_runner_by_name(&t, "hangar-r1")
        .await
        .unwrap()
        .unwrap();
    c.delete_runner(&t, jit.runner_id).await.unwrap();
    c.delete_session(&t, &session).await.unwrap();
    c.delete_scale_set(&t, ss.id).await.unwrap();

    let routes = fx["routes"].as_array().unwrap();
    let mut used = BTreeSet::new();
    let requests = fa.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        let matching: Vec<&Value> = routes.iter().filter(|rt| fits(rt, r)).collect();
        let [route] = matching.as_slice() else {
            panic!(
                "{} {} matches {} fixture routes",
                r.method,
                r.path,
                matching.len()
            );
        };
        let name = route["name"].as_str().unwrap();
        used.insert(name.to_owned());
        let q = query_keys(&r.query);
        let auth = r.headers["authorization"].to_str().unwrap();
        match route["host"].as_str().unwrap() {
            "service" => {
                assert!(
                    r.query.contains(&format!(
                        "api-version={}",
                        fx["api_version"].as_str().unwrap()
                    )),
                    "{name}: {}",
                    r.query
                );
            }
            "queue" => assert!(q.contains("sessionId"), "{name}: {}", r.query),
            _ => {}
        }
        for k in route["query"].as_array().into_iter().flatten() {
            let k = k.as_str().unwrap();
            // lastMessageId is sent once there is a last message.
            if k == "lastMessageId" {
                continue;
            }
            assert!(q.contains(k), "{name}: query {k} missing in {}", r.query);
        }
        let scheme = match route["auth"].as_str().unwrap() {
            "remote_auth" => fx["headers"]["exchange_authorization_scheme"]
                .as_str()
                .unwrap(),
            _ => fx["headers"]["service_authorization_scheme"]
                .as_str()
                .unwrap(),
        };
        assert!(auth.starts_with(&format!("{scheme} ")), "{name}: {auth}");
        let token = &auth[scheme.len() + 1..];
        match route["auth"].as_str().unwrap() {
            "admin" => assert_eq!(token.split('.').count(), 3, "{name}: an admin JWT"),
            "queue" => assert_eq!(
                token,
                session.message_queue_access_token.expose(),
                "{name}: the queue token"
            ),
            _ => {}
        }
        if name == "get-message" {
            assert_eq!(
                r.headers["accept"],
                fx["headers"]["poll_accept"].as_str().unwrap()
            );
            let cap = fx["headers"]["max_capacity"].as_str().unwrap();
            assert_eq!(r.headers[cap], "3");
        }
        match route["request"].as_str() {
            Some("int64 array") => {
                assert!(
                    r.body.as_array().unwrap().iter().all(Value::is_i64),
                    "{name}"
                )
            }
            Some("RunnerScaleSet") => {
                let got = keys(&r.body);
                assert!(
                    got.is_subset(&shape(&fx, "RunnerScaleSet")),
                    "{name}: {got:?}"
                );
                for k in ["name", "runnerGroupId", "labels"] {
                    assert!(got.contains(k), "{name}: {k}");
                }
                for l in r.body["labels"].as_array().unwrap() {
                    assert_eq!(keys(l), shape(&fx, "Label"));
                }
                assert!(keys(&r.body["RunnerSetting"]).is_subset(&shape(&fx, "RunnerSetting")));
            }
            Some(s) => assert_eq!(keys(&r.body), shape(&fx, s), "{name}"),
            None => assert!(r.body.is_null(), "{name}: no body expected: {}", r.body),
        }
    }
    let all: BTreeSet<String> = routes
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .filter(|n| n != "registration-token" && n != "get-runner")
        .collect();
    // Every route but the REST registration token (FakeGitHub's, checked
    // by the forge's tests) and get-runner-by-id (the trait has no such
    // call) was exercised.
    assert_eq!(used, all);
}
