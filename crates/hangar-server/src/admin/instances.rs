//! `/api/v1/instances`: every runner VM, and deleting one by hand.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hangar_api::InstanceResponse;
use hangar_core::InstanceName;
use hangar_store::InstanceFilter;
use serde::Deserialize;

use crate::AppState;
use crate::admin::instance_response;
use crate::admin::pools::parse_pool_id;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct InstanceQuery {
    /// Only this pool's instances.
    pub pool_id: Option<String>,
    /// Include deleted instances (history).
    #[serde(default)]
    pub all: bool,
}

/// garm-cli's removal switches.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct DeleteQuery {
    /// Mark the instance deleted after a few failed provider deletes
    /// (garm-cli's `--force-remove-runner`; `force` is the same).
    #[serde(default)]
    pub force_remove_runner: bool,
    #[serde(default)]
    pub force: bool,
    /// Accepted for garm-cli: a runner whose credentials GitHub refuses is
    /// deleted anyway, always.
    #[serde(default)]
    pub bypass_github_unauthorized: bool,
}

fn parse_name(name: &str) -> ApiResult<InstanceName> {
    InstanceName::parse(name)
        .map_err(|_| ApiError::not_found(format!("instance {name:?} not found")))
}

#[utoipa::path(get, path = "/api/v1/instances", tag = "instances", params(InstanceQuery),
    responses((status = 200, body = Vec<InstanceResponse>)), security(("bearer" = [])))]
pub async fn list(
    _: Admin,
    State(s): State<AppState>,
    Query(q): Query<InstanceQuery>,
) -> ApiResult<Json<Vec<InstanceResponse>>> {
    let pool_id = q.pool_id.as_deref().map(parse_pool_id).transpose()?;
    let list = s
        .store
        .list_instances(&InstanceFilter {
            pool_id,
            statuses: None,
            include_deleted: q.all,
        })
        .await?;
    Ok(Json(list.iter().map(instance_response).collect()))
}

#[utoipa::path(get, path = "/api/v1/instances/{name}", tag = "instances", params(("name" = String, Path)),
    responses((status = 200, body = InstanceResponse), (status = 404, body = hangar_api::ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    _: Admin,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<InstanceResponse>> {
    Ok(Json(instance_response(
        &s.store.instance(&parse_name(&name)?).await?,
    )))
}

/// Retires an instance: its runner is removed from GitHub, then the VM.
#[utoipa::path(delete, path = "/api/v1/instances/{name}", tag = "instances", params(("name" = String, Path), DeleteQuery),
    responses((status = 202, body = InstanceResponse), (status = 404, body = hangar_api::ErrorBody), (status = 409, body = hangar_api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    _: Admin,
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<(StatusCode, Json<InstanceResponse>)> {
    let name = parse_name(&name)?;
    let force = q.force || q.force_remove_runner;
    if force {
        s.scheduler.request_forced_delete(&name).await?;
    } else {
        s.scheduler.request_delete(&name).await?;
    }
    tracing::info!(instance.name = %name, force, "instance deletion requested by an operator");
    Ok((
        StatusCode::ACCEPTED,
        Json(instance_response(&s.store.instance(&name).await?)),
    ))
}
