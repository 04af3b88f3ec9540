//! The routes a booting instance calls with its own token: fetch the JIT
//! config (once), fetch a registration token (fallback), report status.
//!
//! A token opens only its own instance, and only while the runner is still
//! coming up (`pending`/`installing`); after that it is worthless.

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use hangar_api::StatusCallback;
use hangar_core::{Instance, InstanceStatus, RunnerStatus};
use hangar_store::Change;

use crate::AppState;
use crate::auth::bearer;
use crate::error::{ApiError, ApiResult, JsonBody};

/// The instance a valid instance token belongs to.
#[derive(Debug)]
pub struct InstanceAuth {
    pub instance: Instance,
    pub has_jit_config: bool,
}

impl FromRequestParts<AppState> for InstanceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token =
            bearer(parts).ok_or_else(|| ApiError::unauthorized("missing instance token"))?;
        let hash = hangar_store::hash_token(token);
        let found = state
            .store
            .instance_by_token(&hash)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or expired instance token"))?;
        let inst = &found.instance;
        if matches!(
            inst.status,
            InstanceStatus::PendingDelete | InstanceStatus::Deleting | InstanceStatus::Deleted
        ) {
            return Err(ApiError::unauthorized("this instance is being retired"));
        }
        if !inst.runner_status.is_bootstrapping() {
            return Err(ApiError::forbidden(format!(
                "the instance token is only valid while the runner bootstraps (runner is {})",
                inst.runner_status
            )));
        }
        Ok(InstanceAuth {
            instance: found.instance,
            has_jit_config: found.has_jit_config || found.jit_fetched,
        })
    }
}

/// The runner's JIT config, handed out exactly once.
#[utoipa::path(get, path = "/api/v1/metadata/jit-config", tag = "instances",
    responses(
        (status = 200, description = "The encoded JIT config", body = String, content_type = "text/plain"),
        (status = 401, body = hangar_api::ErrorBody),
        (status = 404, description = "This instance bootstraps with a registration token", body = hangar_api::ErrorBody),
        (status = 409, description = "Already fetched", body = hangar_api::ErrorBody),
    ),
    security(("instance_token" = [])))]
pub async fn jit_config(State(s): State<AppState>, auth: InstanceAuth) -> ApiResult<String> {
    if !auth.has_jit_config {
        return Err(ApiError::not_found(
            "this instance has no JIT config; use /api/v1/metadata/runner-registration-token",
        ));
    }
    let jit = s
        .store
        .take_jit_config(&auth.instance.name)
        .await
        .map_err(|e| match e {
            hangar_store::StoreError::Conflict(m) => ApiError::conflict(m),
            other => other.into(),
        })?;
    tracing::info!(instance.name = %auth.instance.name, "JIT config handed out");
    Ok(jit.expose().to_owned())
}

/// A registration token for `config.sh`, for providers that do not use JIT.
#[utoipa::path(get, path = "/api/v1/metadata/runner-registration-token", tag = "instances",
    responses(
        (status = 200, description = "A registration token", body = String, content_type = "text/plain"),
        (status = 401, body = hangar_api::ErrorBody),
        (status = 502, description = "GitHub refused", body = hangar_api::ErrorBody),
    ),
    security(("instance_token" = [])))]
pub async fn registration_token(
    State(s): State<AppState>,
    auth: InstanceAuth,
) -> ApiResult<String> {
    let pool = s.store.pool(auth.instance.pool_id).await?;
    let target = s.store.forge_target(pool.entity_id).await?;
    let token = s.forge.registration_token(&target).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "cannot get a registration token from GitHub",
        )
        .with_details(e.to_string())
    })?;
    tracing::info!(instance.name = %auth.instance.name, "registration token handed out");
    Ok(token.token.expose().to_owned())
}

/// The instance reports its runner's progress.
#[utoipa::path(post, path = "/api/v1/callbacks/status", tag = "instances", request_body = StatusCallback,
    responses(
        (status = 204),
        (status = 400, body = hangar_api::ErrorBody),
        (status = 401, body = hangar_api::ErrorBody),
        (status = 409, description = "Not a legal step from the runner's current status", body = hangar_api::ErrorBody),
    ),
    security(("instance_token" = [])))]
pub async fn status_callback(
    State(s): State<AppState>,
    auth: InstanceAuth,
    JsonBody(req): JsonBody<StatusCallback>,
) -> ApiResult<StatusCode> {
    let to = match req.status.as_str() {
        "installing" => RunnerStatus::Installing,
        "idle" => RunnerStatus::Idle,
        "failed" => RunnerStatus::Failed,
        other => {
            return Err(ApiError::bad_request(format!(
                "status must be installing, idle or failed, got {other:?}"
            )));
        }
    };
    let message: Option<String> = req.message.map(|m| m.chars().take(500).collect());
    let name = &auth.instance.name;
    if auth.instance.runner_status == to {
        return Ok(StatusCode::NO_CONTENT);
    }
    s.store
        .transition(name, Change::Runner(to, message.as_deref()))
        .await?;
    tracing::info!(instance.name = %name, runner.status = %to, message = ?message, "runner status");
    // Reconcile decides what a failed runner means for its instance.
    s.scheduler.wake_pool(auth.instance.pool_id);
    Ok(StatusCode::NO_CONTENT)
}
