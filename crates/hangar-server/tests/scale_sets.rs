//! The scale set routes against the loopback FakeGitHub + FakeActions
//! through the real `ActionsClient`: create (and adopt), list, show,
//! update, delete on GitHub and in the store; refused input and GitHub
//! failures leave nothing stored and nothing on GitHub.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use hangar_core::*;
use hangar_github::{ActionsClient, GitHubConfig, GitHubForge};
use hangar_store::{NewEntity, NewInstance, Store, StoreOptions};
use hangar_testkit::fake_actions::FakeActions;
use hangar_testkit::fake_github::FakeGitHub;
use hangar_testkit::sample;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const PASSWORD: &str = "correct horse battery staple";

struct World {
    app: axum::Router,
    store: Store,
    fa: FakeActions,
    _gh: FakeGitHub,
    token: String,
    org: EntityId,
    repo: EntityId,
    _dir: tempfile::TempDir,
}

async fn call(w: &World, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    raw(&w.app, method, path, Some(&w.token), body).await
}

async fn raw(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
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
    let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(addr));
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn world() -> World {
    let gh = FakeGitHub::start().await;
    gh.require_token("ghp_test");
    let fa = FakeActions::start(&gh).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreOptions::new(
        format!("sqlite://{}/h.db", dir.path().display()),
        Secret::new("scale set api test passphrase, 32+ chars"),
    ))
    .await
    .unwrap();
    store
        .create_endpoint(&sample::endpoint("gh", &gh.url(), &gh.url()))
        .await
        .unwrap();
    store
        .create_credentials(&sample::pat("gh", "gh", "ghp_test"))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for scope in [
        EntityScope::Organization {
            name: "octo".into(),
        },
        EntityScope::Repository {
            owner: "octo".into(),
            name: "app".into(),
        },
    ] {
        let e = store
            .create_entity(&NewEntity {
                scope,
                credentials_name: ResourceName::parse("gh").unwrap(),
                webhook_secret: Secret::new("s"),
            })
            .await
            .unwrap();
        ids.push(e.id);
    }
    // A webhook pool beside the scale sets.
    store
        .create_pool(ids[0], &sample::pool_spec("fake", "self-hosted", 2))
        .await
        .unwrap();
    // Few, quick retries: a failing GitHub answers within the test.
    let config = GitHubConfig {
        backoff_base_ms: 10,
        backoff_max_ms: 50,
        request_timeout_secs: 10,
        ..GitHubConfig::default()
    };
    let forge: Arc<dyn Forge> = Arc::new(GitHubForge::new(config.clone()));
    let actions: Arc<dyn ActionsService> = Arc::new(ActionsClient::new(config, forge.clone()));
    let (app, _) = support::router_with(&store, forge, actions).await;
    let (s, b) = raw(
        &app,
        "POST",
        "/api/v1/first-run",
        None,
        Some(json!({"username": "admin", "password": PASSWORD})),
    )
    .await;
    assert!(s.is_success(), "{b}");
    let (s, b) = raw(
        &app,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({"username": "admin", "password": PASSWORD})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    World {
        app,
        store,
        fa,
        _gh: gh,
        token: b["token"].as_str().unwrap().to_owned(),
        org: ids[0],
        repo: ids[1],
        _dir: dir,
    }
}

fn body(name: &str) -> Value {
    json!({
        "name": name,
        "provider_name": "fake",
        "image": "ubuntu-22.04",
        "flavor": "small",
        "min_idle_runners": 0,
        "max_runners": 4,
        "extra_specs": {"proxy": {"https_proxy": "http://proxy.lab:3128", "no_proxy": "localhost"}},
    })
}

#[tokio::test]
async fn create_list_show_update_delete_on_github_and_here() {
    let w = world().await;
    let (s, made) = call(
        &w,
        "POST",
        &format!("/api/v1/organizations/{}/scalesets", w.org),
        Some(body("lab-ubuntu")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let remote = w.fa.scale_sets();
    assert_eq!(remote.len(), 1);
    assert_eq!(remote[0].name, "lab-ubuntu");
    assert_eq!(remote[0].scope, "orgs/octo");
    assert_eq!(made["github_id"], json!(remote[0].id));
    assert_eq!(made["runner_group_id"], json!(1));
    assert_eq!(made["state"], "active");
    assert_eq!(made["max_runners"], 4);
    assert_eq!(made["instance_count"], 0);
    assert_eq!(made["desired_runners"], 0);
    assert_eq!(made["statistics"], Value::Null);
    assert_eq!(
        made["extra_specs"]["proxy"]["https_proxy"],
        "http://proxy.lab:3128"
    );
    let id = made["id"].as_str().unwrap().to_owned();
    let pool_id = made["pool_id"].as_str().unwrap().to_owned();

    // A repository's, too.
    let (s, repo_set) = call(
        &w,
        "POST",
        &format!("/api/v1/repositories/{}/scalesets", w.repo),
        Some(body("app-ci")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{repo_set}");
    assert!(
        w.fa.scale_sets()
            .iter()
            .any(|r| r.scope == "repos/octo/app" && r.name == "app-ci")
    );

    let (s, all) = call(&w, "GET", "/api/v1/scalesets", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let (_, of_org) = call(
        &w,
        "GET",
        &format!("/api/v1/organizations/{}/scalesets", w.org),
        None,
    )
    .await;
    assert_eq!(of_org, json!([made.clone()]));
    let (s, shown) = call(&w, "GET", &format!("/api/v1/scalesets/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shown, made);

    // Its pool is not a webhook pool: not listed, not reachable as one.
    let (_, pools) = call(&w, "GET", "/api/v1/pools", None).await;
    assert_eq!(pools.as_array().unwrap().len(), 1);
    assert!(
        pools
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["id"] != pool_id.as_str())
    );
    let (s, e) = call(&w, "GET", &format!("/api/v1/pools/{pool_id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(e["details"].as_str().unwrap().contains(&id), "{e}");
    let (s, _) = call(&w, "DELETE", &format!("/api/v1/pools/{pool_id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Provider settings change only here; a rename reaches GitHub.
    let (s, u) = call(
        &w,
        "PUT",
        &format!("/api/v1/scalesets/{id}"),
        Some(json!({"max_runners": 6, "image": "ubuntu-24.04"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(
        (u["max_runners"].clone(), u["image"].clone()),
        (json!(6), json!("ubuntu-24.04"))
    );
    assert_eq!(w.fa.scale_sets()[0].name, "lab-ubuntu");
    let (s, u) = call(
        &w,
        "PUT",
        &format!("/api/v1/scalesets/{id}"),
        Some(json!({"name": "lab-jammy"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["name"], "lab-jammy");
    assert_eq!(u["github_id"], made["github_id"]);
    assert!(w.fa.scale_sets().iter().any(|r| r.name == "lab-jammy"));
    let pool = w.store.pool(pool_id.parse().unwrap()).await.unwrap();
    assert_eq!(pool.spec.tags.to_vec(), vec!["lab-jammy".to_owned()]);
    assert_eq!(pool.spec.max_runners, 6);

    let (s, _) = call(&w, "DELETE", &format!("/api/v1/scalesets/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(w.fa.scale_sets().iter().all(|r| r.name != "lab-jammy"));
    let (s, e) = call(&w, "GET", &format!("/api/v1/scalesets/{id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    assert!(w.store.pool(pool_id.parse().unwrap()).await.is_err());
}

#[tokio::test]
async fn a_scale_set_already_on_github_is_adopted_not_duplicated() {
    let w = world().await;
    let target = w.store.forge_target(w.org).await.unwrap();
    let config = GitHubConfig::default();
    let client = ActionsClient::new(config.clone(), Arc::new(GitHubForge::new(config)));
    let existing = client
        .create_scale_set(
            &target,
            &ScaleSetRequest {
                name: "lab".into(),
                runner_group_id: 1,
                labels: Vec::new(),
                disable_update: false,
            },
        )
        .await
        .unwrap();
    let (s, made) = call(
        &w,
        "POST",
        &format!("/api/v1/organizations/{}/scalesets", w.org),
        Some(body("lab")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    assert_eq!(made["github_id"], json!(existing.id));
    assert_eq!(w.fa.scale_sets().len(), 1);
}

/// A GitHub scale set that another Hangar scale set drives already (it
/// was renamed on GitHub, so a create finds it under the new name) is not
/// adopted twice: 409 naming the other one, nothing stored, nothing
/// changed on GitHub — on create and on an update that makes it again.
#[tokio::test]
async fn a_github_scale_set_driven_by_another_is_a_conflict() {
    let w = world().await;
    let path = format!("/api/v1/organizations/{}/scalesets", w.org);
    let (s, first) = call(&w, "POST", &path, Some(body("lab"))).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let gid = first["github_id"].as_i64().unwrap();
    let target = w.store.forge_target(w.org).await.unwrap();
    let config = GitHubConfig::default();
    let client = ActionsClient::new(config.clone(), Arc::new(GitHubForge::new(config)));
    let renamed = ScaleSetRequest {
        name: "lab-renamed".into(),
        runner_group_id: 1,
        labels: Vec::new(),
        disable_update: false,
    };
    client
        .update_scale_set(&target, gid, &renamed)
        .await
        .unwrap();

    let (s, e) = call(&w, "POST", &path, Some(body("lab-renamed"))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains(&gid.to_string()) && msg.contains(first["id"].as_str().unwrap()),
        "{e}"
    );
    assert!(e["details"].as_str().is_some(), "{e}");
    assert_eq!(w.store.list_scale_sets(None).await.unwrap().len(), 1);
    let remote = w.fa.scale_sets();
    assert_eq!(remote.len(), 1, "nothing made or removed on GitHub");
    assert_eq!(
        (remote[0].id, remote[0].name.as_str()),
        (gid, "lab-renamed")
    );

    // A scale set gone from GitHub, updated to that name: its update would
    // adopt the same one. Refused; its settings stay as they were.
    let (s, other) = call(&w, "POST", &path, Some(body("other"))).await;
    assert_eq!(s, StatusCode::CREATED, "{other}");
    let oid = other["id"].as_str().unwrap();
    w.fa.delete_scale_set("other");
    w.store
        .mark_scale_set_deleted_on_github(oid, "404 from GitHub")
        .await
        .unwrap();
    let (s, e) = call(
        &w,
        "PUT",
        &format!("/api/v1/scalesets/{oid}"),
        Some(json!({"name": "lab-renamed", "max_runners": 3})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (_, shown) = call(&w, "GET", &format!("/api/v1/scalesets/{oid}"), None).await;
    assert_eq!(shown["name"], "other", "{shown}");
    assert_eq!(shown["max_runners"], 4, "{shown}");
    assert_eq!(shown["state"], "deleted_on_github", "{shown}");
    assert_eq!(w.fa.scale_sets().len(), 1);
}

#[tokio::test]
async fn bad_input_is_refused_before_github_and_nothing_is_stored() {
    let w = world().await;
    let path = format!("/api/v1/organizations/{}/scalesets", w.org);
    let mut cases = vec![
        (body("two words"), "name"),
        (body(""), "name"),
        (
            {
                let mut b = body("lab");
                b["min_idle_runners"] = json!(5);
                b["max_runners"] = json!(2);
                b
            },
            "max_runners",
        ),
        (
            {
                let mut b = body("lab");
                b["provider_name"] = json!("nope");
                b
            },
            "not configured",
        ),
        (
            {
                let mut b = body("lab");
                b["max_runner"] = json!(2);
                b
            },
            "unknown field \"max_runner\"",
        ),
        (
            {
                let mut b = body("lab");
                b["extra_specs"] = json!([1]);
                b
            },
            "extra_specs",
        ),
        (
            {
                let mut b = body("lab");
                b["max_runners"] = json!(1_000_000);
                b
            },
            "limit",
        ),
    ];
    // A runner group GitHub does not have: refused by GitHub's answer.
    let mut missing_group = body("lab");
    missing_group["runner_group"] = json!("nowhere");
    cases.push((missing_group, "runner group"));
    for (b, says) in cases {
        let (s, e) = call(&w, "POST", &path, Some(b.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b} → {e}");
        assert!(
            e["error"].as_str().unwrap().contains(says)
                || e["details"].as_str().unwrap_or_default().contains(says),
            "{b} → {e}"
        );
    }
    let (s, _) = call(
        &w,
        "POST",
        &format!("/api/v1/enterprises/{}/scalesets", w.org),
        Some(body("lab")),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(w.store.list_scale_sets(None).await.unwrap().is_empty());
    assert!(w.fa.scale_sets().is_empty());
    assert_eq!(w.store.list_pools(None).await.unwrap().len(), 1);

    // A second scale set of one name: 409, the first unchanged.
    let (s, first) = call(&w, "POST", &path, Some(body("lab"))).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let (s, e) = call(&w, "POST", &path, Some(body("LAB"))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(w.fa.scale_sets().len(), 1);
    let id = first["id"].as_str().unwrap();
    let (s, e) = call(
        &w,
        "PUT",
        &format!("/api/v1/scalesets/{id}"),
        Some(json!({"min_idle_runners": 9})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = call(
        &w,
        "PUT",
        &format!("/api/v1/scalesets/{id}"),
        Some(json!({"tags": ["x"]})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (_, shown) = call(&w, "GET", &format!("/api/v1/scalesets/{id}"), None).await;
    assert_eq!(shown, first);
    let (s, _) = call(&w, "GET", "/api/v1/scalesets/not-an-id", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn github_failures_are_502_and_leave_nothing_behind() {
    let w = world().await;
    let path = format!("/api/v1/organizations/{}/scalesets", w.org);
    w.fa.fail_for(Duration::from_secs(600), 500);
    let (s, e) = call(&w, "POST", &path, Some(body("lab"))).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    assert!(
        e["error"].as_str().unwrap().starts_with("GitHub: cannot"),
        "{e}"
    );
    assert!(w.store.list_scale_sets(None).await.unwrap().is_empty());
    assert_eq!(w.store.list_pools(None).await.unwrap().len(), 1);

    // Once GitHub is back: made; then a failing rename and delete keep it.
    w.fa.fail_for(Duration::ZERO, 500);
    let (s, made) = call(&w, "POST", &path, Some(body("lab"))).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    w.fa.fail_for(Duration::from_secs(600), 503);
    let (s, e) = call(
        &w,
        "PUT",
        &format!("/api/v1/scalesets/{id}"),
        Some(json!({"name": "renamed"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    let (s, e) = call(&w, "DELETE", &format!("/api/v1/scalesets/{id}"), None).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{e}");
    w.fa.fail_for(Duration::ZERO, 500);
    let (_, shown) = call(&w, "GET", &format!("/api/v1/scalesets/{id}"), None).await;
    assert_eq!(shown, made);
    assert_eq!(w.fa.scale_sets()[0].name, "lab");
}

#[tokio::test]
async fn delete_waits_for_machines_and_tolerates_a_scale_set_gone_from_github() {
    let w = world().await;
    let path = format!("/api/v1/repositories/{}/scalesets", w.repo);
    let (_, made) = call(&w, "POST", &path, Some(body("app-ci"))).await;
    let id = made["id"].as_str().unwrap().to_owned();
    let pool_id: PoolId = made["pool_id"].as_str().unwrap().parse().unwrap();
    w.store
        .reserve_instance(&NewInstance {
            name: InstanceName::parse("hangar-ss1").unwrap(),
            pool_id,
            provider_name: "fake".into(),
            job_id: None,
        })
        .await
        .unwrap()
        .unwrap();
    let (s, e) = call(&w, "DELETE", &format!("/api/v1/scalesets/{id}"), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["error"].as_str().unwrap().contains("hangar-ss1"), "{e}");
    assert_eq!(w.fa.scale_sets().len(), 1, "GitHub keeps it while refused");
    let (_, shown) = call(&w, "GET", &format!("/api/v1/scalesets/{id}"), None).await;
    assert_eq!(shown["instance_count"], 1);

    // The machine goes; someone removed the scale set on GitHub meanwhile.
    let name = InstanceName::parse("hangar-ss1").unwrap();
    w.store
        .transition(
            &name,
            hangar_store::Change::Status(InstanceStatus::PendingDelete, None),
        )
        .await
        .unwrap();
    w.store
        .transition(
            &name,
            hangar_store::Change::Status(InstanceStatus::Deleting, None),
        )
        .await
        .unwrap();
    w.store
        .transition(
            &name,
            hangar_store::Change::Status(InstanceStatus::Deleted, None),
        )
        .await
        .unwrap();
    w.fa.delete_scale_set("app-ci");
    let (s, e) = call(&w, "DELETE", &format!("/api/v1/scalesets/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{e}");
    assert!(w.store.list_scale_sets(None).await.unwrap().is_empty());
}
