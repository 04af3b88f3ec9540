//! The admin API as an operator's tools see it: auth, CRUD with validation
//! and explicit conflicts, write-only secrets, the OpenAPI document covering
//! every route, instance and controller views.

use hangar_e2e::{Api, Daemon, free_port, write_config};
use reqwest::Method;
use serde_json::{Value, json};

async fn daemon() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra =
        "[[provider]]\nname = \"fake\"\nkind = \"fake\"\n[provider.fake]\nboot = \"none\"\n";
    let config = write_config(dir.path(), port, extra);
    let d = Daemon::start(dir.path(), port, &config).await.unwrap();
    (dir, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_login_and_tokens() {
    let (_dir, d) = daemon().await;
    let c = reqwest::Client::new();
    let r = c
        .get(format!("{}/api/v1/jobs", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string(), "errors are {{error, details}}: {v}");

    let short = c
        .post(format!("{}/api/v1/first-run", d.url))
        .json(&json!({"username": "admin", "password": "short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(short.status(), 400);
    let api = Api::init(&d.url).await.unwrap();
    let again = c
        .post(format!("{}/api/v1/first-run", d.url))
        .json(&json!({"username": "other", "password": "a-long-enough-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let bad = c
        .post(format!("{}/api/v1/auth/login", d.url))
        .json(&json!({"username": "admin", "password": "wrong password!!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let forged = c
        .get(format!("{}/api/v1/jobs", d.url))
        .bearer_auth(format!("{}x", api.token))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let malformed = c
        .post(format!("{}/api/v1/auth/login", d.url))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert!(
        api.get("/api/v1/jobs")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_validation_conflicts_and_write_only_secrets() {
    let (_dir, d) = daemon().await;
    let api = Api::init(&d.url).await.unwrap();
    let status = |r: (u16, Value)| r.0;

    // Endpoints.
    assert_eq!(status(api.call(Method::POST, "/api/v1/endpoints", Some(json!({"name": "bad name", "base_url": "https://x", "api_base_url": "https://x"}))).await.unwrap()), 400);
    assert_eq!(
        status(
            api.call(
                Method::POST,
                "/api/v1/endpoints",
                Some(json!({"name": "gh", "base_url": "ftp://x", "api_base_url": "https://x"}))
            )
            .await
            .unwrap()
        ),
        400
    );
    api.post("/api/v1/endpoints", json!({"name": "gh", "base_url": "https://github.com", "api_base_url": "https://api.github.com"})).await.unwrap();
    assert_eq!(
        status(
            api.call(
                Method::POST,
                "/api/v1/endpoints",
                Some(json!({"name": "gh", "base_url": "https://a", "api_base_url": "https://a"}))
            )
            .await
            .unwrap()
        ),
        409
    );
    let (s, v) = api
        .call(
            Method::PUT,
            "/api/v1/endpoints/gh",
            Some(json!({"description": "GitHub.com"})),
        )
        .await
        .unwrap();
    assert_eq!((s, v["description"].as_str()), (200, Some("GitHub.com")));

    // Credentials: the token is never returned.
    let (s, v) = api
        .call(
            Method::POST,
            "/api/v1/credentials",
            Some(json!({"name": "c", "endpoint": "gh", "auth_type": "pat"})),
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "{v}");
    assert_eq!(status(api.call(Method::POST, "/api/v1/credentials", Some(json!({"name": "c", "endpoint": "nope", "auth_type": "pat", "pat_oauth_token": "t"}))).await.unwrap()), 400);
    assert_eq!(status(api.call(Method::POST, "/api/v1/credentials", Some(json!({"name": "c", "endpoint": "gh", "auth_type": "app", "app_id": 1, "installation_id": 2, "private_key": "not pem"}))).await.unwrap()), 400);
    let c = api.post("/api/v1/credentials", json!({"name": "garm", "endpoint": "gh", "auth_type": "pat", "pat_oauth_token": "ghp_WRITEONLY"})).await.unwrap();
    assert!(!c.to_string().contains("ghp_WRITEONLY"));
    let all = api.get("/api/v1/credentials").await.unwrap();
    assert!(!all.to_string().contains("ghp_WRITEONLY"));
    assert_eq!(all[0]["auth_type"], "pat");

    // Repositories: a generated secret is returned once; the pinned fields.
    let repo = api
        .post(
            "/api/v1/repositories",
            json!({"owner": "mkulke", "name": "garm-playground", "credentials_name": "garm"}),
        )
        .await
        .unwrap();
    let secret = repo["webhook_secret"]
        .as_str()
        .expect("generated secret returned once");
    assert_eq!(secret.len(), 64);
    for field in ["id", "owner", "name", "credentials_name", "webhook_url"] {
        assert!(!repo[field].is_null(), "{field}");
    }
    let id = repo["id"].as_str().unwrap();
    assert_eq!(repo["webhook_url"], format!("{}/webhooks/{id}", d.url));
    let shown = api
        .get(&format!("/api/v1/repositories/{id}"))
        .await
        .unwrap();
    assert!(shown.get("webhook_secret").is_none(), "not shown again");
    assert_eq!(status(api.call(Method::POST, "/api/v1/repositories", Some(json!({"owner": "MKULKE", "name": "garm-playground", "credentials_name": "garm"}))).await.unwrap()), 409);
    assert_eq!(
        status(
            api.call(
                Method::POST,
                "/api/v1/repositories",
                Some(json!({"name": "x", "credentials_name": "garm"}))
            )
            .await
            .unwrap()
        ),
        400
    );
    assert_eq!(
        status(
            api.call(Method::GET, &format!("/api/v1/organizations/{id}"), None)
                .await
                .unwrap()
        ),
        404,
        "a repository is not an organization"
    );
    let org = api
        .post(
            "/api/v1/organizations",
            json!({"name": "acme", "credentials_name": "garm", "webhook_secret": "s"}),
        )
        .await
        .unwrap();
    assert_eq!(org["owner"], "");
    api.post(
        "/api/v1/enterprises",
        json!({"name": "big-corp", "credentials_name": "garm", "webhook_secret": "s"}),
    )
    .await
    .unwrap();
    assert_eq!(
        api.get("/api/v1/enterprises")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Pools: validation, then the pinned fields.
    let pools = format!("/api/v1/repositories/{id}/pools");
    let base = json!({"provider_name": "fake", "image": "img", "flavor": "f", "tags": ["self-hosted", "azure-cvm", "ubuntu-2204"],
                      "min_idle_runners": 0, "max_runners": 4, "enabled": true});
    for (patch, want) in [
        (json!({"provider_name": "nope"}), "not configured"),
        (json!({"min_idle_runners": 5}), "max_runners"),
        (json!({"tags": []}), "tags"),
        (json!({"tags": ["has space"]}), "tags"),
        (json!({"extra_specs": [1, 2]}), "JSON object"),
        (json!({"extra_specs": {"unknown": true}}), "rejects"),
        (json!({"runner_prefix": "Bad_Prefix"}), "prefix"),
        (json!({"extra_specs": {"proxy": "x"}}), "proxy"),
        // The fake boots with Hangar's (Linux) script: a Windows pool could
        // never boot, so it is refused before anything is stored.
        (json!({"os_type": "windows"}), "cannot boot windows/amd64"),
    ] {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = api.call(Method::POST, &pools, Some(body)).await.unwrap();
        assert_eq!(s, 400, "{patch}: {v}");
        assert!(v.to_string().contains(want), "{patch}: {v}");
    }
    assert_eq!(
        api.get(&pools).await.unwrap().as_array().map(Vec::len),
        Some(0),
        "nothing refused was stored"
    );
    let mut good = base.clone();
    good["extra_specs"] = json!({"fake_option": true, "proxy": {"http_proxy": "http://p:3128"}});
    let pool = api.post(&pools, good).await.unwrap();
    for field in [
        "id",
        "entity_id",
        "provider_name",
        "image",
        "flavor",
        "tags",
        "min_idle_runners",
        "max_runners",
        "enabled",
        "extra_specs",
    ] {
        assert!(!pool[field].is_null(), "{field}");
    }
    let pid = pool["id"].as_str().unwrap();
    let (s, v) = api
        .call(
            Method::PUT,
            &format!("/api/v1/pools/{pid}"),
            Some(json!({"max_runners": 8, "enabled": false})),
        )
        .await
        .unwrap();
    assert_eq!(
        (s, v["max_runners"].as_u64(), v["enabled"].as_bool()),
        (200, Some(8), Some(false))
    );
    let (s, _) = api
        .call(
            Method::PUT,
            &format!("/api/v1/pools/{pid}"),
            Some(json!({"min_idle_runners": 9})),
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "max below min idle");
    let (s, v) = api
        .call(
            Method::PUT,
            &format!("/api/v1/pools/{pid}"),
            Some(json!({"os_type": "windows"})),
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "an update to an OS the provider cannot boot: {v}");
    assert!(
        v["details"]
            .as_str()
            .unwrap_or_default()
            .contains("Linux only"),
        "{v}"
    );
    let shown = api.get(&format!("/api/v1/pools/{pid}")).await.unwrap();
    assert_eq!(shown["max_runners"], 8, "nothing changed by the bad update");
    assert_eq!(shown["os_type"], "linux");
    assert_eq!(shown["health"]["state"], "ok", "{shown}");
    assert_eq!(shown["health"]["consecutive_failures"], 0);

    // Conflicts say what is in the way.
    let (s, v) = api
        .call(Method::DELETE, &format!("/api/v1/repositories/{id}"), None)
        .await
        .unwrap();
    assert_eq!(s, 409);
    assert!(v["error"].as_str().unwrap().contains(pid), "{v}");
    let (s, v) = api
        .call(Method::DELETE, "/api/v1/credentials/garm", None)
        .await
        .unwrap();
    assert!(
        s == 409
            && v["error"]
                .as_str()
                .unwrap()
                .contains("mkulke/garm-playground"),
        "{v}"
    );
    let (s, _) = api
        .call(Method::DELETE, "/api/v1/endpoints/gh", None)
        .await
        .unwrap();
    assert_eq!(s, 409);

    // Clean up in order.
    assert_eq!(
        status(
            api.call(Method::DELETE, &format!("/api/v1/pools/{pid}"), None)
                .await
                .unwrap()
        ),
        204
    );
    assert_eq!(
        status(
            api.call(Method::DELETE, &format!("/api/v1/repositories/{id}"), None)
                .await
                .unwrap()
        ),
        204
    );
    assert_eq!(
        status(
            api.call(Method::GET, &format!("/api/v1/repositories/{id}"), None)
                .await
                .unwrap()
        ),
        404
    );

    // Jobs filter, providers, controller.
    assert_eq!(
        status(
            api.call(Method::GET, "/api/v1/jobs?status=bogus", None)
                .await
                .unwrap()
        ),
        400
    );
    let providers = api.get("/api/v1/providers").await.unwrap();
    assert_eq!(providers[0]["name"], "fake");
    assert_eq!(providers[0]["healthy"], true);
    let c = api.get("/api/v1/controller").await.unwrap();
    assert!(c["controller_id"].is_string() && c["version"].is_string());
    assert_eq!(c["counts"]["pools"], 0);
    let (s, v) = api
        .call(
            Method::PUT,
            "/api/v1/controller",
            Some(json!({"metadata_url": "http://10.0.2.2:9997/api/v1/metadata"})),
        )
        .await
        .unwrap();
    assert_eq!(
        (s, v["metadata_url"].as_str()),
        (200, Some("http://10.0.2.2:9997/api/v1/metadata"))
    );
    assert_eq!(
        status(
            api.call(
                Method::PUT,
                "/api/v1/controller",
                Some(json!({"callback_url": "not a url"}))
            )
            .await
            .unwrap()
        ),
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_every_route() {
    let (_dir, d) = daemon().await;
    let api = Api::init(&d.url).await.unwrap();
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", d.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    // Every route of the contract (DESIGN §4) is documented…
    for (method, path) in [
        ("post", "/webhooks/{entity_id}"),
        ("post", "/webhooks"),
        ("post", "/webhooks/"),
        ("post", "/api/v1/first-run"),
        ("post", "/api/v1/auth/login"),
        ("get", "/api/v1/endpoints"),
        ("post", "/api/v1/endpoints"),
        ("get", "/api/v1/endpoints/{name}"),
        ("put", "/api/v1/endpoints/{name}"),
        ("delete", "/api/v1/endpoints/{name}"),
        ("get", "/api/v1/credentials"),
        ("post", "/api/v1/credentials"),
        ("get", "/api/v1/credentials/{name}"),
        ("put", "/api/v1/credentials/{name}"),
        ("delete", "/api/v1/credentials/{name}"),
        ("get", "/api/v1/repositories"),
        ("post", "/api/v1/repositories"),
        ("get", "/api/v1/repositories/{id}"),
        ("put", "/api/v1/repositories/{id}"),
        ("delete", "/api/v1/repositories/{id}"),
        ("get", "/api/v1/organizations"),
        ("get", "/api/v1/enterprises/{id}"),
        ("get", "/api/v1/repositories/{id}/pools"),
        ("post", "/api/v1/organizations/{id}/pools"),
        ("post", "/api/v1/enterprises/{id}/pools"),
        ("post", "/api/v1/repositories/{id}/webhook"),
        ("get", "/api/v1/repositories/{id}/webhook"),
        ("delete", "/api/v1/repositories/{id}/webhook"),
        ("post", "/api/v1/organizations/{id}/webhook"),
        ("get", "/api/v1/organizations/{id}/webhook"),
        ("delete", "/api/v1/organizations/{id}/webhook"),
        ("get", "/api/v1/pools"),
        ("get", "/api/v1/pools/{id}"),
        ("put", "/api/v1/pools/{id}"),
        ("delete", "/api/v1/pools/{id}"),
        ("get", "/api/v1/pools/{id}/instances"),
        ("get", "/api/v1/instances"),
        ("get", "/api/v1/instances/{name}"),
        ("delete", "/api/v1/instances/{name}"),
        ("get", "/api/v1/jobs"),
        ("get", "/api/v1/providers"),
        ("get", "/api/v1/controller"),
        ("put", "/api/v1/controller"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/api/v1/metadata/jit-config"),
        ("get", "/api/v1/metadata/runner-registration-token"),
        ("get", "/api/v1/metadata/credentials/{file}"),
        ("get", "/api/v1/metadata/system/service-name"),
        ("get", "/api/v1/metadata/systemd/unit-file"),
        ("get", "/api/v1/metadata/system/cert-bundle"),
        ("get", "/api/v1/metadata/runner-metadata"),
        ("post", "/api/v1/callbacks/status"),
        ("post", "/api/v1/callbacks/system-info"),
        ("get", "/metrics"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    // …and every documented route is served (not "no such route", not 405).
    let c = reqwest::Client::new();
    let mut n = 0;
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = path
                .replace("{entity_id}", "00000000-0000-0000-0000-000000000000")
                .replace("{id}", "00000000-0000-0000-0000-000000000000")
                .replace("{name}", "nothing-here");
            let r = c
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{concrete}", d.url),
                )
                .bearer_auth(&api.token)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                !body.contains("no such route"),
                "{method} {path} is documented but not routed"
            );
            n += 1;
        }
    }
    assert!(n >= 45, "{n} operations");
    // An undocumented path is not served, and a wrong method is refused, on
    // the webhook routes (served outside the trace layer) as on the others,
    // with the usual JSON error.
    for (method, path, status, error) in [
        ("GET", "/api/v1/nonexistent", 404, "no such route"),
        ("GET", "/nonexistent", 404, "no such route"),
        ("GET", "/webhooks", 405, "method not allowed on this route"),
        (
            "DELETE",
            "/webhooks/0198c0de-0000-7000-8000-000000000000",
            405,
            "method not allowed on this route",
        ),
        (
            "PATCH",
            "/api/v1/pools",
            405,
            "method not allowed on this route",
        ),
    ] {
        let r = c
            .request(method.parse().unwrap(), format!("{}{path}", d.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], error, "{method} {path}");
    }
}
