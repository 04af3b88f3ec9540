//! garm's hook URLs: `/webhooks/<controller id>` (this controller's, or a
//! garm deployment's recorded by the importer) and `/webhooks/` are the
//! shared hook; any other id is still an unknown entity.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hangar_core::*;
use hangar_scheduler::{Metrics, Providers, Scheduler, SchedulerDeps, SharedUrls, Urls};
use hangar_server::{AppDeps, AppState, Settings};
use hangar_store::{NewEntity, Store, StoreOptions};
use tower::ServiceExt as _;

const GARM_ID: &str = "8E1B1A5C-6C2A-4D7E-9C55-1D2B3A4F5E6D";

async fn app(dir: &std::path::Path, garm_id: &str) -> (axum::Router, Store) {
    let store = Store::open(&StoreOptions::new(
        format!("sqlite://{}/h.db", dir.display()),
        Secret::new("webhook paths test passphrase, 32+ chars"),
    ))
    .await
    .unwrap();
    let providers = Providers::builder()
        .add(
            "fake",
            "",
            Arc::new(hangar_testkit::fake_provider::FakeProvider::default()),
            Default::default(),
        )
        .unwrap()
        .build();
    let forge: Arc<dyn Forge> = Arc::new(hangar_github::GitHubForge::new(Default::default()));
    let urls = SharedUrls::new(Urls::derive("http://127.0.0.1:1", None, None, None));
    let metrics = Arc::new(Metrics::new());
    let scheduler = Scheduler::new(SchedulerDeps {
        store: store.clone(),
        forge: forge.clone(),
        providers: providers.clone(),
        config: Default::default(),
        urls: urls.clone(),
        metrics: metrics.clone(),
    });
    store
        .create_endpoint(&Endpoint {
            name: ResourceName::parse("gh").unwrap(),
            description: String::new(),
            base_url: "http://127.0.0.1:1".into(),
            api_base_url: "http://127.0.0.1:1".into(),
            ca_bundle: None,
        })
        .await
        .unwrap();
    store
        .create_credentials(&Credentials {
            name: ResourceName::parse("gh").unwrap(),
            description: String::new(),
            endpoint: ResourceName::parse("gh").unwrap(),
            auth: CredentialsAuth::Pat {
                token: Secret::new("t"),
            },
            app_webhook_secret: None,
        })
        .await
        .unwrap();
    let e = store
        .create_entity(&NewEntity {
            scope: EntityScope::Organization {
                name: "acme".into(),
            },
            credentials_name: ResourceName::parse("gh").unwrap(),
            webhook_secret: Secret::new("s"),
        })
        .await
        .unwrap();
    let pool = store
        .create_pool(
            e.id,
            &PoolSpec {
                provider_name: ResourceName::parse("fake").unwrap(),
                image: "i".into(),
                flavor: "f".into(),
                tags: Labels::parse_list("self-hosted").unwrap(),
                os_type: OsType::Linux,
                os_arch: OsArch::Amd64,
                min_idle_runners: 0,
                max_runners: 5,
                runner_prefix: RunnerPrefix::default(),
                runner_bootstrap_timeout: 20,
                extra_specs: Default::default(),
                runner_group: None,
                priority: 0,
                enabled: true,
            },
        )
        .await
        .unwrap();
    store.add_garm_controller_id(garm_id).await.unwrap();
    let state = AppState::new(
        AppDeps {
            store: store.clone(),
            scheduler: scheduler.clone(),
            providers,
            metrics,
            urls,
            forge,
        },
        Settings {
            public_url: "http://127.0.0.1:1".into(),
            webhook_body_limit: 1 << 20,
            webhook_read_timeout: Duration::from_secs(30),
            version: "test".into(),
            token_ttl: Duration::from_secs(3600),
            metrics_hook: None,
        },
        None,
    )
    .await
    .unwrap();
    let _ = (pool, scheduler);
    (hangar_server::router(state), store)
}

async fn post(app: &axum::Router, path: &str, secret: &str) -> u16 {
    let body = br#"{"zen":"Keep it simple.","hook_id":1,"organization":{"login":"acme","id":7}}"#;
    let req = Request::post(path)
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-github-hook-installation-target-type", "organization")
        .header("x-github-hook-installation-target-id", "7")
        .header(
            "x-hub-signature-256",
            hangar_github::webhook::sign(secret.as_bytes(), body),
        )
        .body(Body::from(&body[..]))
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn garm_hook_urls_route_like_the_shared_hook() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path(), GARM_ID).await;
    let own = store.controller_id().to_string();
    assert_eq!(
        store.controller_info().await.unwrap().garm_controller_ids,
        vec![GARM_ID.to_owned()]
    );
    for path in [
        "/webhooks".to_owned(),
        "/webhooks/".to_owned(),
        format!("/webhooks/{own}"),
        format!("/webhooks/{GARM_ID}"),
        format!("/webhooks/{}", GARM_ID.to_ascii_lowercase()),
    ] {
        assert_eq!(post(&app, &path, "s").await, 200, "{path}");
        assert_eq!(post(&app, &path, "wrong").await, 401, "{path}");
    }
    assert_eq!(
        post(&app, "/webhooks/00000000-0000-0000-0000-000000000000", "s").await,
        404,
        "an id that is neither an entity nor a controller"
    );
}
