//! `/api/v1/endpoints`: GitHub and GHES instances.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hangar_api::{EndpointCreate, EndpointResponse, EndpointUpdate};
use hangar_core::{Endpoint, ResourceName};

use crate::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, JsonBody};

fn response(e: Endpoint) -> EndpointResponse {
    EndpointResponse {
        name: e.name.to_string(),
        description: e.description,
        base_url: e.base_url,
        api_base_url: e.api_base_url,
        ca_bundle: e.ca_bundle,
    }
}

pub(crate) fn check_url(field: &str, value: &str) -> ApiResult<()> {
    let ok = (value.starts_with("https://") || value.starts_with("http://"))
        && value.len() > "http://".len()
        && !value.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be an http(s) URL, got {value:?}"
        )))
    }
}

fn check_ca(ca: &Option<String>) -> ApiResult<()> {
    if let Some(pem) = ca.as_deref().filter(|s| !s.is_empty())
        && !pem.contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(ApiError::bad_request(
            "ca_bundle must be PEM (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/endpoints", tag = "endpoints",
    responses((status = 200, body = Vec<EndpointResponse>)), security(("bearer" = [])))]
pub async fn list(_: Admin, State(s): State<AppState>) -> ApiResult<Json<Vec<EndpointResponse>>> {
    Ok(Json(
        s.store
            .list_endpoints()
            .await?
            .into_iter()
            .map(response)
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/endpoints", tag = "endpoints", request_body = EndpointCreate,
    responses((status = 201, body = EndpointResponse), (status = 200, description = "An identical endpoint exists", body = EndpointResponse), (status = 400, body = hangar_api::ErrorBody), (status = 409, body = hangar_api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    _: Admin,
    State(s): State<AppState>,
    JsonBody(req): JsonBody<EndpointCreate>,
) -> ApiResult<(StatusCode, Json<EndpointResponse>)> {
    let name =
        ResourceName::parse(&req.name).map_err(|e| ApiError::bad_request(format!("name: {e}")))?;
    check_url("base_url", &req.base_url)?;
    check_url("api_base_url", &req.api_base_url)?;
    check_ca(&req.ca_bundle)?;
    let want = Endpoint {
        name,
        description: req.description.unwrap_or_default(),
        base_url: req.base_url.trim_end_matches('/').to_owned(),
        api_base_url: req.api_base_url.trim_end_matches('/').to_owned(),
        ca_bundle: req.ca_bundle.filter(|c| !c.is_empty()),
    };
    let e = match s.store.create_endpoint(&want).await {
        Ok(e) => e,
        Err(hangar_store::StoreError::Conflict(msg)) => {
            // Adding what exists already (e.g. the `github.com` endpoint
            // first run makes) succeeds; a different one is a conflict.
            let have = s.store.endpoint(want.name.as_str()).await?;
            let same = have.base_url == want.base_url
                && have.api_base_url == want.api_base_url
                && have.ca_bundle == want.ca_bundle
                && (want.description.is_empty() || have.description == want.description);
            if !same {
                return Err(ApiError::conflict(msg));
            }
            return Ok((StatusCode::OK, Json(response(have))));
        }
        Err(e) => return Err(e.into()),
    };
    Ok((StatusCode::CREATED, Json(response(e))))
}

#[utoipa::path(get, path = "/api/v1/endpoints/{name}", tag = "endpoints", params(("name" = String, Path)),
    responses((status = 200, body = EndpointResponse), (status = 404, body = hangar_api::ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    _: Admin,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<EndpointResponse>> {
    Ok(Json(response(s.store.endpoint(&name).await?)))
}

#[utoipa::path(put, path = "/api/v1/endpoints/{name}", tag = "endpoints", params(("name" = String, Path)), request_body = EndpointUpdate,
    responses((status = 200, body = EndpointResponse), (status = 400, body = hangar_api::ErrorBody), (status = 404, body = hangar_api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    _: Admin,
    State(s): State<AppState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<EndpointUpdate>,
) -> ApiResult<Json<EndpointResponse>> {
    let mut e = s.store.endpoint(&name).await?;
    if let Some(d) = req.description {
        e.description = d;
    }
    if let Some(u) = req.base_url {
        check_url("base_url", &u)?;
        e.base_url = u.trim_end_matches('/').to_owned();
    }
    if let Some(u) = req.api_base_url {
        check_url("api_base_url", &u)?;
        e.api_base_url = u.trim_end_matches('/').to_owned();
    }
    if let Some(ca) = req.ca_bundle {
        let ca = Some(ca).filter(|c| !c.is_empty());
        check_ca(&ca)?;
        e.ca_bundle = ca;
    }
    let e = s.store.update_endpoint(&e).await?;
    s.scheduler.invalidate_entity(None);
    Ok(Json(response(e)))
}

#[utoipa::path(delete, path = "/api/v1/endpoints/{name}", tag = "endpoints", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = hangar_api::ErrorBody), (status = 409, body = hangar_api::ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    _: Admin,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.store.delete_endpoint(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
