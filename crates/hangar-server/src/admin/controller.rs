//! `/api/v1/controller` and `/api/v1/providers`: this installation, its URLs,
//! its providers' health and headline counts.

use axum::Json;
use axum::extract::State;
use hangar_api::{ControllerCounts, ControllerResponse, ControllerUpdate, ProviderResponse};
use hangar_core::{InstanceStatus, JobStatus};
use hangar_scheduler::Urls;

use crate::AppState;
use crate::admin::endpoints::check_url;
use crate::admin::provider_health;
use crate::auth::Admin;
use crate::error::ApiResult;

async fn controller_response(s: &AppState) -> ApiResult<ControllerResponse> {
    let urls = s.urls.get();
    let pools = s.store.list_webhook_pools(None).await?.len() as u64;
    let instances = s
        .store
        .instance_counts()
        .await?
        .iter()
        .filter(|(_, st, _, _)| *st != InstanceStatus::Deleted)
        .map(|(_, _, _, n)| n)
        .sum();
    let queued_jobs = s
        .store
        .job_counts()
        .await?
        .iter()
        .filter(|(st, _)| *st == JobStatus::Queued)
        .map(|(_, n)| *n)
        .sum();
    Ok(ControllerResponse {
        controller_id: s.store.controller_id().0,
        version: s.settings.version.clone(),
        public_url: urls.public_url,
        webhook_base_url: urls.webhook_base_url,
        metadata_url: urls.metadata_url,
        callback_url: urls.callback_url,
        garm_controller_ids: s.store.controller_info().await?.garm_controller_ids,
        providers: provider_health(s.providers.iter()).await,
        counts: ControllerCounts {
            pools,
            instances,
            queued_jobs,
        },
    })
}

#[utoipa::path(get, path = "/api/v1/controller", tag = "controller",
    responses((status = 200, body = ControllerResponse)), security(("bearer" = [])))]
pub async fn get(_: Admin, State(s): State<AppState>) -> ApiResult<Json<ControllerResponse>> {
    Ok(Json(controller_response(&s).await?))
}

/// Overrides the URLs instances and GitHub use (e.g. when instances reach
/// Hangar through another address than operators do).
#[utoipa::path(put, path = "/api/v1/controller", tag = "controller", request_body = ControllerUpdate,
    responses((status = 200, body = ControllerResponse), (status = 400, body = hangar_api::ErrorBody)), security(("bearer" = [])))]
pub async fn update(
    _: Admin,
    State(s): State<AppState>,
    crate::error::JsonBody(req): crate::error::JsonBody<ControllerUpdate>,
) -> ApiResult<Json<ControllerResponse>> {
    for (field, v) in [
        ("metadata_url", &req.metadata_url),
        ("callback_url", &req.callback_url),
        ("webhook_base_url", &req.webhook_base_url),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            check_url(field, v)?;
        }
    }
    let info = s
        .store
        .update_controller_urls(
            req.metadata_url.as_deref(),
            req.callback_url.as_deref(),
            req.webhook_base_url.as_deref(),
        )
        .await?;
    s.urls.set(Urls::derive(
        &s.settings.public_url,
        info.webhook_url.as_deref(),
        info.metadata_url.as_deref(),
        info.callback_url.as_deref(),
    ));
    tracing::info!("controller URLs updated");
    Ok(Json(controller_response(&s).await?))
}

#[utoipa::path(get, path = "/api/v1/providers", tag = "providers",
    responses((status = 200, body = Vec<ProviderResponse>)), security(("bearer" = [])))]
pub async fn providers(
    _: Admin,
    State(s): State<AppState>,
) -> ApiResult<Json<Vec<ProviderResponse>>> {
    Ok(Json(provider_health(s.providers.iter()).await))
}
