//! The app the server's tests drive: a real store in a temporary folder
//! with one organization (`acme`, webhook secret `s`) and one pool on
//! the in-process fake provider, a scheduler that is not running, and the
//! router over them.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use hangar_core::*;
use hangar_scheduler::{Metrics, Providers, Scheduler, SchedulerDeps, SharedUrls, Urls};
use hangar_server::{AppDeps, AppState, Settings};
use hangar_store::{NewEntity, Store, StoreOptions};

/// The app; `garm_controller_ids` are recorded as an importer would before
/// the server starts.
pub async fn app(
    dir: &std::path::Path,
    garm_controller_ids: &[&str],
) -> (axum::Router, Store, Pool, Scheduler) {
    let store = Store::open(&StoreOptions::new(
        format!("sqlite://{}/h.db", dir.display()),
        Secret::new("instance api test passphrase, 32+ chars"),
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
    for id in garm_controller_ids {
        store.add_garm_controller_id(id).await.unwrap();
    }
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
    (hangar_server::router(state), store, pool, scheduler)
}
