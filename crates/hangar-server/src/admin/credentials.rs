//! `/api/v1/credentials`: PATs and GitHub Apps. Secrets are write-only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hangar_api::{CredentialsCreate, CredentialsResponse, CredentialsUpdate};
use hangar_core::{Credentials, CredentialsAuth, ResourceName, Secret};
use hangar_store::CredentialsSummary;

use crate::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, JsonBody};

fn response(c: CredentialsSummary) -> CredentialsResponse {
    CredentialsResponse {
        name: c.name.to_string(),
        description: c.description,
        endpoint: c.endpoint.to_string(),
        auth_type: c.auth_type,
        app_id: c.app_id,
        installation_id: c.installation_id,
        has_app_webhook_secret: c.has_app_webhook_secret,
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

fn check_pem(key: &str) -> ApiResult<()> {
    if key.contains("-----BEGIN") && key.contains("PRIVATE KEY-----") {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "private_key must be the App's PEM private key (-----BEGIN RSA PRIVATE KEY----- …)",
        ))
    }
}

fn auth_from(
    auth_type: &str,
    token: Option<String>,
    app_id: Option<i64>,
    installation_id: Option<i64>,
    private_key: Option<String>,
) -> ApiResult<CredentialsAuth> {
    match auth_type {
        "pat" => {
            let token = token
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| ApiError::bad_request("auth_type pat needs pat_oauth_token"))?;
            Ok(CredentialsAuth::Pat {
                token: Secret::new(token.trim()),
            })
        }
        "app" => {
            let (Some(app_id), Some(installation_id), Some(key)) =
                (app_id, installation_id, private_key)
            else {
                return Err(ApiError::bad_request(
                    "auth_type app needs app_id, installation_id and private_key",
                ));
            };
            if app_id <= 0 || installation_id <= 0 {
                return Err(ApiError::bad_request(
                    "app_id and installation_id must be positive",
                ));
            }
            check_pem(&key)?;
            Ok(CredentialsAuth::App {
                app_id,
                installation_id,
                private_key: Secret::new(key),
            })
        }
        other => Err(ApiError::bad_request(format!(
            "auth_type must be pat or app, got {other:?}"
        ))),
    }
}

#[utoipa::path(get, path = "/api/v1/credentials", tag = "credentials",
    responses((status = 200, body = Vec<CredentialsResponse>)), security(("bearer" = [])))]
pub async fn list(
    _: Admin,
    State(s): State<AppState>,
) -> ApiResult<Json<Vec<CredentialsResponse>>> {
    Ok(Json(
        s.store
            .list_credentials()
            .await?
            .into_iter()
            .map(response)
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/credentials", tag = "credentials", request_body = CredentialsCreate,
    responses((status = 201, body = CredentialsResponse), (status = 400, body = hangar_api::ErrorBody), (status = 409, body = hangar_api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    _: Admin,
    State(s): State<AppState>,
    JsonBody(req): JsonBody<CredentialsCreate>,
) -> ApiResult<(StatusCode, Json<CredentialsResponse>)> {
    let name =
        ResourceName::parse(&req.name).map_err(|e| ApiError::bad_request(format!("name: {e}")))?;
    let endpoint = ResourceName::parse(&req.endpoint)
        .map_err(|e| ApiError::bad_request(format!("endpoint: {e}")))?;
    s.store.endpoint(endpoint.as_str()).await.map_err(|_| {
        ApiError::bad_request(format!(
            "endpoint {:?} does not exist; add it first",
            endpoint.as_str()
        ))
    })?;
    let auth = auth_from(
        &req.auth_type,
        req.pat_oauth_token,
        req.app_id,
        req.installation_id,
        req.private_key,
    )?;
    let c = s
        .store
        .create_credentials(&Credentials {
            name,
            description: req.description.unwrap_or_default(),
            endpoint,
            auth,
            app_webhook_secret: req
                .app_webhook_secret
                .filter(|s| !s.is_empty())
                .map(Secret::new),
        })
        .await?;
    s.refresh_catalog().await?;
    Ok((StatusCode::CREATED, Json(response(c))))
}

#[utoipa::path(get, path = "/api/v1/credentials/{name}", tag = "credentials", params(("name" = String, Path)),
    responses((status = 200, body = CredentialsResponse), (status = 404, body = hangar_api::ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    _: Admin,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<CredentialsResponse>> {
    Ok(Json(response(s.store.credentials_summary(&name).await?)))
}

#[utoipa::path(put, path = "/api/v1/credentials/{name}", tag = "credentials", params(("name" = String, Path)), request_body = CredentialsUpdate,
    responses((status = 200, body = CredentialsResponse), (status = 400, body = hangar_api::ErrorBody), (status = 404, body = hangar_api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    _: Admin,
    State(s): State<AppState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<CredentialsUpdate>,
) -> ApiResult<Json<CredentialsResponse>> {
    let current = s.store.credentials(&name).await?;
    let auth = match (
        &current.auth,
        req.pat_oauth_token,
        req.app_id,
        req.installation_id,
        req.private_key,
    ) {
        (_, None, None, None, None) => None,
        (CredentialsAuth::Pat { .. }, token, None, None, None) => {
            Some(auth_from("pat", token, None, None, None)?)
        }
        (
            CredentialsAuth::App {
                app_id,
                installation_id,
                private_key,
            },
            None,
            a,
            i,
            k,
        ) => Some(auth_from(
            "app",
            None,
            a.or(Some(*app_id)),
            i.or(Some(*installation_id)),
            k.or_else(|| Some(private_key.expose().to_owned())),
        )?),
        _ => {
            return Err(ApiError::bad_request(
                "the update mixes PAT and App fields; the auth type of credentials cannot change (delete and re-add them)",
            ));
        }
    };
    let hook = req.app_webhook_secret.map(Secret::new);
    let c = s
        .store
        .update_credentials(
            &name,
            req.description.as_deref(),
            auth.as_ref(),
            hook.as_ref(),
        )
        .await?;
    s.scheduler.invalidate_entity(None);
    s.refresh_catalog().await?;
    Ok(Json(response(c)))
}

#[utoipa::path(delete, path = "/api/v1/credentials/{name}", tag = "credentials", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = hangar_api::ErrorBody), (status = 409, body = hangar_api::ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    _: Admin,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.store.delete_credentials(&name).await?;
    s.refresh_catalog().await?;
    Ok(StatusCode::NO_CONTENT)
}
