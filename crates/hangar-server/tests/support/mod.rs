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
use hangar_testkit::sample;

/// The router and a (not running) scheduler over `store`, as the daemon
/// wires them, with the in-process fake provider.
pub async fn router_over(store: &Store) -> (axum::Router, Scheduler) {
    let (forge, actions) = github_clients();
    router_with(store, forge, actions).await
}

/// The real GitHub clients, pointed at nothing.
fn github_clients() -> (Arc<dyn Forge>, Arc<dyn ActionsService>) {
    let forge: Arc<dyn Forge> = Arc::new(hangar_github::GitHubForge::new(Default::default()));
    let actions: Arc<dyn ActionsService> = Arc::new(hangar_github::ActionsClient::new(
        Default::default(),
        forge.clone(),
    ));
    (forge, actions)
}

/// [`router_over`] with `[metrics] token` set.
pub async fn router_with_metrics_token(
    store: &Store,
    metrics_token: Option<Secret>,
) -> (axum::Router, Scheduler) {
    let (forge, actions) = github_clients();
    router_full(store, forge, actions, metrics_token).await
}

/// [`router_over`] with the given GitHub clients.
pub async fn router_with(
    store: &Store,
    forge: Arc<dyn Forge>,
    actions: Arc<dyn ActionsService>,
) -> (axum::Router, Scheduler) {
    router_full(store, forge, actions, None).await
}

async fn router_full(
    store: &Store,
    forge: Arc<dyn Forge>,
    actions: Arc<dyn ActionsService>,
    metrics_token: Option<Secret>,
) -> (axum::Router, Scheduler) {
    let providers = Providers::builder()
        .add(
            "fake",
            "",
            Arc::new(hangar_testkit::fake_provider::FakeProvider::default()),
            Default::default(),
        )
        .unwrap()
        .build();
    let urls = SharedUrls::new(Urls::derive("http://127.0.0.1:1", None, None, None));
    let metrics = Arc::new(Metrics::new());
    let scheduler = Scheduler::new(SchedulerDeps {
        store: store.clone(),
        forge: forge.clone(),
        actions: Some(actions.clone()),
        providers: providers.clone(),
        config: Default::default(),
        urls: urls.clone(),
        metrics: metrics.clone(),
    });
    let state = AppState::new(
        AppDeps {
            store: store.clone(),
            scheduler: scheduler.clone(),
            providers,
            metrics,
            urls,
            forge,
            actions,
        },
        Settings {
            public_url: "http://127.0.0.1:1".into(),
            webhook_body_limit: 1 << 20,
            webhook_read_timeout: Duration::from_secs(30),
            version: "test".into(),
            token_ttl: Duration::from_secs(3600),
            max_runners_per_pool: hangar_server::DEFAULT_MAX_RUNNERS_PER_POOL,
            metrics_hook: None,
            metrics_token,
        },
        None,
    )
    .await
    .unwrap();
    (hangar_server::router(state), scheduler)
}

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
    store
        .create_endpoint(&sample::endpoint(
            "gh",
            "http://127.0.0.1:1",
            "http://127.0.0.1:1",
        ))
        .await
        .unwrap();
    store
        .create_credentials(&sample::pat("gh", "gh", "t"))
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
        .create_pool(e.id, &sample::pool_spec("fake", "self-hosted", 5))
        .await
        .unwrap();
    for id in garm_controller_ids {
        store.add_garm_controller_id(id).await.unwrap();
    }
    let (router, scheduler) = router_over(&store).await;
    (router, store, pool, scheduler)
}
