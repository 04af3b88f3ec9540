//! Hangar's HTTP side, as one axum router built in one place
//! ([`router`]), so tests can drive it with `oneshot` or on a real socket.
//!
//! Handlers are thin: they extract input, make one call into the store or
//! the scheduler, and return a DTO from `hangar-api`. Webhook intake never
//! calls GitHub or a provider; it records and wakes the scheduler.

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod error;
pub mod instance_api;
pub mod links;
pub mod ops;
pub mod throttle;
pub mod ui;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hangar_core::{ActionsService, Forge};
use hangar_scheduler::{Intake, Metrics, Providers, Scheduler, SharedUrls};
use hangar_store::Store;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::TokenKeys;
use crate::catalog::Catalog;

/// Server settings from the daemon's config.
pub struct Settings {
    pub public_url: String,
    pub webhook_body_limit: usize,
    /// How long a webhook's body may take to arrive.
    pub webhook_read_timeout: Duration,
    pub version: String,
    pub token_ttl: Duration,
    /// The largest `max_runners` or `min_idle_runners` a pool may have
    /// (`server.max_runners_per_pool`).
    pub max_runners_per_pool: u32,
    /// Called before `/metrics` is encoded, to refresh gauges owned by
    /// others (e.g. GitHub rate-limit figures).
    pub metrics_hook: Option<MetricsHook>,
    /// `[metrics] token`: when set, `/metrics` answers only requests that
    /// carry it (Bearer, or as the basic-auth password).
    pub metrics_token: Option<hangar_core::Secret>,
}

/// Refreshes gauges owned outside the server just before `/metrics` answers.
pub type MetricsHook = Box<dyn Fn(&Metrics) + Send + Sync>;

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("public_url", &self.public_url)
            .field("webhook_body_limit", &self.webhook_body_limit)
            .field("webhook_read_timeout", &self.webhook_read_timeout)
            .field("version", &self.version)
            .field("max_runners_per_pool", &self.max_runners_per_pool)
            .field("metrics_token", &self.metrics_token.is_some())
            .finish()
    }
}

pub const DEFAULT_WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Default of `server.max_runners_per_pool`: more runners than one pool
/// plausibly needs, far fewer than a typo like 100000 would ask for.
pub const DEFAULT_MAX_RUNNERS_PER_POOL: u32 = 1000;

/// Everything handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub store: Store,
    pub scheduler: Scheduler,
    pub providers: Providers,
    pub metrics: Arc<Metrics>,
    pub urls: SharedUrls,
    /// GitHub, for the routes instances call (registration tokens).
    pub forge: Arc<dyn Forge>,
    /// GitHub's runner scale set API, for the scale set routes.
    pub actions: Arc<dyn ActionsService>,
    pub catalog: Catalog,
    pub intake: Intake,
    pub tokens: TokenKeys,
    /// Failed logins per username and per address.
    pub login_throttle: throttle::LoginThrottle,
    /// Refused webhook deliveries, for their rate-limited warnings.
    pub rejections: webhooks::Rejections,
    pub settings: Settings,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The parts the server shares with the rest of the daemon, built once by
/// the composition root.
#[derive(Debug)]
pub struct AppDeps {
    pub store: Store,
    pub scheduler: Scheduler,
    /// The same providers the scheduler was built with.
    pub providers: Providers,
    pub metrics: Arc<Metrics>,
    /// The same URLs the scheduler renders into boot scripts.
    pub urls: SharedUrls,
    pub forge: Arc<dyn Forge>,
    /// The scale set routes create, change and delete scale sets on
    /// GitHub through it.
    pub actions: Arc<dyn ActionsService>,
}

impl AppState {
    /// Builds the state: loads the catalog, reads the JWT secret, starts the
    /// intake writer and a background refresh of pool load figures.
    pub async fn new(
        deps: AppDeps,
        settings: Settings,
        jwt_secret: Option<hangar_core::Secret>,
    ) -> Result<Self, hangar_store::StoreError> {
        let AppDeps {
            store,
            scheduler,
            providers,
            metrics,
            urls,
            forge,
            actions,
        } = deps;
        let catalog = Catalog::default();
        catalog.refresh(&store).await?;
        catalog.refresh_load(&store).await?;
        let secret = match jwt_secret {
            Some(s) => s,
            None => store.jwt_secret().await?,
        };
        let tokens = TokenKeys::new(&secret, settings.token_ttl);
        let intake = Intake::start(scheduler.clone());
        let state = AppState(Arc::new(Inner {
            store,
            scheduler,
            providers,
            metrics,
            urls,
            forge,
            actions,
            catalog,
            intake,
            tokens,
            login_throttle: throttle::LoginThrottle::default(),
            rejections: webhooks::Rejections::default(),
            settings,
        }));
        let weak = Arc::downgrade(&state.0);
        // On a shared database other replicas' admin APIs add and change
        // entities, secrets and pools too: without a rebuild here a
        // replica would refuse (404) deliveries for a repository created
        // through another one.
        let shared = state.store.backend_name() != "sqlite";
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                if shared && let Err(e) = inner.catalog.refresh(&inner.store).await {
                    tracing::debug!(error = %e, "cannot refresh the intake catalog");
                }
                if let Err(e) = inner.catalog.refresh_load(&inner.store).await {
                    tracing::debug!(error = %e, "cannot refresh pool load");
                }
            }
        });
        Ok(state)
    }

    pub async fn refresh_catalog(&self) -> Result<(), error::ApiError> {
        self.catalog.refresh(&self.store).await?;
        Ok(())
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Hangar", description = "Autoscaled ephemeral GitHub Actions runners"),
    modifiers(&SecuritySchemes),
    tags(
        (name = "webhooks", description = "GitHub deliveries"),
        (name = "auth", description = "First run and login"),
        (name = "instances", description = "Runner instances, and the routes instances call"),
        (name = "scalesets", description = "Runner scale sets: jobs from GitHub's message queue"),
        (name = "ops", description = "Health and metrics"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["bearer", "instance_token", "metrics_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The webhook routes with their OpenAPI description. They are served
/// without the HTTP trace layer: GitHub's deliveries are the one hot path,
/// and [`webhooks`] logs each with its outcome instead.
fn webhook_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(webhooks::shared_webhook))
        .routes(routes!(webhooks::shared_webhook_slash))
        .routes(routes!(webhooks::entity_webhook))
}

/// Every other route with its OpenAPI description, registered together so
/// the document cannot miss a route.
fn api_router() -> OpenApiRouter<AppState> {
    use admin::entities::{enterprises, organizations, repositories};
    use admin::{controller, credentials, endpoints, instances, jobs, pools, scalesets, webhooks};
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::first_run))
        .routes(routes!(auth::login))
        .routes(routes!(endpoints::list, endpoints::create))
        .routes(routes!(
            endpoints::get,
            endpoints::update,
            endpoints::delete
        ))
        .routes(routes!(credentials::list, credentials::create))
        .routes(routes!(
            credentials::get,
            credentials::update,
            credentials::delete
        ))
        .routes(routes!(repositories::list, repositories::create))
        .routes(routes!(
            repositories::get,
            repositories::update,
            repositories::delete
        ))
        .routes(routes!(repositories::list_pools, repositories::create_pool))
        .routes(routes!(organizations::list, organizations::create))
        .routes(routes!(
            organizations::get,
            organizations::update,
            organizations::delete
        ))
        .routes(routes!(
            organizations::list_pools,
            organizations::create_pool
        ))
        .routes(routes!(enterprises::list, enterprises::create))
        .routes(routes!(
            enterprises::get,
            enterprises::update,
            enterprises::delete
        ))
        .routes(routes!(enterprises::list_pools, enterprises::create_pool))
        .routes(routes!(
            webhooks::repositories::install,
            webhooks::repositories::show,
            webhooks::repositories::uninstall
        ))
        .routes(routes!(
            webhooks::organizations::install,
            webhooks::organizations::show,
            webhooks::organizations::uninstall
        ))
        .routes(routes!(pools::list))
        .routes(routes!(pools::get, pools::update, pools::delete))
        .routes(routes!(pools::instances))
        .routes(routes!(scalesets::list))
        .routes(routes!(
            scalesets::get,
            scalesets::update,
            scalesets::delete
        ))
        .routes(routes!(
            scalesets::repositories::list_scale_sets,
            scalesets::repositories::create_scale_set
        ))
        .routes(routes!(
            scalesets::organizations::list_scale_sets,
            scalesets::organizations::create_scale_set
        ))
        .routes(routes!(
            scalesets::enterprises::list_scale_sets,
            scalesets::enterprises::create_scale_set
        ))
        .routes(routes!(pools::userdata))
        .routes(routes!(instances::list))
        .routes(routes!(instances::get, instances::delete))
        .routes(routes!(jobs::list))
        .routes(routes!(controller::providers))
        .routes(routes!(controller::get, controller::update))
        .routes(routes!(instance_api::jit_config))
        .routes(routes!(instance_api::registration_token))
        .routes(routes!(instance_api::jit_credentials_file))
        .routes(routes!(instance_api::service_name))
        .routes(routes!(instance_api::systemd_unit_file))
        .routes(routes!(instance_api::cert_bundle))
        .routes(routes!(instance_api::runner_metadata))
        .routes(routes!(instance_api::status_callback))
        .routes(routes!(instance_api::system_info_callback))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_router().merge(webhook_router()).split_for_parts();
    doc.paths.paths.insert(
        "/api/v1/openapi.json".into(),
        utoipa::openapi::path::PathItem::new(
            utoipa::openapi::HttpMethod::Get,
            utoipa::openapi::path::OperationBuilder::new()
                .tag("ops")
                .summary(Some("This document"))
                .response(
                    "200",
                    utoipa::openapi::Response::new("The OpenAPI 3 document"),
                )
                .operation_id(Some("openapi")),
        ),
    );
    links::unique_operation_ids(&mut doc);
    links::add_links(&mut doc);
    doc
}

/// The OpenAPI document as served at `/api/v1/openapi.json`.
pub fn openapi_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(openapi()).expect("the OpenAPI document serialises");
    links::camel_case_link_fields(&mut doc);
    doc
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let not_allowed = || async {
        error::ApiError::new(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this route",
        )
    };
    let (webhooks, _) = webhook_router().split_for_parts();
    let (api, _) = api_router().split_for_parts();
    let doc = Arc::new(openapi_json());
    let api = api
        .merge(instance_api::trailing_slash_routes())
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .method_not_allowed_fallback(not_allowed)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        );
    let ui = ui::router(state.clone());
    webhooks
        .method_not_allowed_fallback(not_allowed)
        .merge(api)
        .with_state(state)
        .merge(ui)
}
