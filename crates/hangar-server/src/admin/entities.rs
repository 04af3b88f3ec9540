//! `/api/v1/repositories`, `/organizations`, `/enterprises`: who Hangar
//! serves, and their pools.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hangar_api::{EntityCreate, EntityResponse, EntityUpdate, PoolCreate, PoolResponse};
use hangar_core::{Entity, EntityId, EntityKind, EntityScope, ResourceName, Secret};
use hangar_store::NewEntity;
use rand::RngCore;

use crate::AppState;
use crate::admin::pools;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, JsonBody};

pub(crate) async fn response(
    s: &AppState,
    e: Entity,
    generated: Option<Secret>,
) -> ApiResult<EntityResponse> {
    let pool_count = s.store.list_webhook_pools(Some(e.id)).await?.len() as u32;
    let endpoint = s
        .store
        .credentials_summary(e.credentials_name.as_str())
        .await
        .map(|c| c.endpoint.to_string())
        .unwrap_or_default();
    let (owner, name) = match &e.scope {
        EntityScope::Repository { owner, name } => (owner.clone(), name.clone()),
        EntityScope::Organization { name } => (String::new(), name.clone()),
        EntityScope::Enterprise { slug } => (String::new(), slug.clone()),
    };
    Ok(EntityResponse {
        id: e.id.0,
        kind: e.scope.kind().as_str().to_owned(),
        owner,
        name,
        credentials_name: e.credentials_name.to_string(),
        endpoint,
        webhook_url: format!("{}/{}", s.urls.get().webhook_base_url, e.id),
        pool_count,
        webhook_secret: generated.map(|g| g.expose().to_owned()),
        created_at: e.created_at,
        updated_at: e.updated_at,
    })
}

fn parse_id(id: &str) -> ApiResult<EntityId> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("entity {id:?} not found")))
}

/// Loads an entity and checks it is of the kind the route names.
pub(crate) async fn entity_of_kind(s: &AppState, kind: EntityKind, id: &str) -> ApiResult<Entity> {
    let e = s.store.entity(parse_id(id)?).await?;
    if e.scope.kind() != kind {
        return Err(ApiError::not_found(format!("{kind} {id} not found")));
    }
    Ok(e)
}

async fn list(s: &AppState, kind: EntityKind) -> ApiResult<Vec<EntityResponse>> {
    let mut out = Vec::new();
    for e in s.store.list_entities(Some(kind)).await? {
        out.push(response(s, e, None).await?);
    }
    Ok(out)
}

async fn create(s: &AppState, kind: EntityKind, req: EntityCreate) -> ApiResult<EntityResponse> {
    let scope = match kind {
        EntityKind::Repository => EntityScope::Repository {
            owner: req
                .owner
                .clone()
                .filter(|o| !o.is_empty())
                .ok_or_else(|| ApiError::bad_request("a repository needs an owner"))?,
            name: req.name.clone(),
        },
        EntityKind::Organization => EntityScope::Organization {
            name: req.name.clone(),
        },
        EntityKind::Enterprise => EntityScope::Enterprise {
            slug: req.name.clone(),
        },
    };
    if kind != EntityKind::Repository && req.owner.as_deref().is_some_and(|o| !o.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "an {kind} has no owner; give only its name"
        )));
    }
    scope
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let credentials_name = ResourceName::parse(&req.credentials_name)
        .map_err(|e| ApiError::bad_request(format!("credentials_name: {e}")))?;
    let (secret, generated) = match req.webhook_secret.filter(|w| !w.is_empty()) {
        Some(w) => (Secret::new(w), None),
        None => {
            let mut b = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut b);
            let g = Secret::new(hex::encode(b));
            (g.clone(), Some(g))
        }
    };
    let e = s
        .store
        .create_entity(&NewEntity {
            scope,
            credentials_name,
            webhook_secret: secret,
        })
        .await?;
    tracing::info!(entity.id = %e.id, entity.kind = %kind, entity.name = %e.scope.display_name(), "entity registered");
    s.refresh_catalog().await?;
    response(s, e, generated).await
}

async fn update(
    s: &AppState,
    kind: EntityKind,
    id: &str,
    req: EntityUpdate,
) -> ApiResult<EntityResponse> {
    let e = entity_of_kind(s, kind, id).await?;
    let creds = req
        .credentials_name
        .as_deref()
        .map(ResourceName::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("credentials_name: {e}")))?;
    if req.webhook_secret.as_deref() == Some("") {
        return Err(ApiError::bad_request("webhook_secret must not be empty"));
    }
    let secret = req.webhook_secret.map(Secret::new);
    let e = s
        .store
        .update_entity(e.id, creds.as_ref(), secret.as_ref())
        .await?;
    s.scheduler.invalidate_entity(Some(e.id));
    s.refresh_catalog().await?;
    response(s, e, None).await
}

async fn delete(s: &AppState, kind: EntityKind, id: &str) -> ApiResult<StatusCode> {
    let e = entity_of_kind(s, kind, id).await?;
    s.store.delete_entity(e.id).await?;
    s.scheduler.invalidate_entity(Some(e.id));
    s.refresh_catalog().await?;
    Ok(StatusCode::NO_CONTENT)
}

macro_rules! entity_routes {
    ($module:ident, $kind:expr, $tag:literal, $coll:literal, $one:literal, $pools:literal) => {
        pub mod $module {
            use super::*;

            #[utoipa::path(get, path = $coll, tag = $tag,
                responses((status = 200, body = Vec<EntityResponse>)), security(("bearer" = [])))]
            pub async fn list(_: Admin, State(s): State<AppState>) -> ApiResult<Json<Vec<EntityResponse>>> {
                Ok(Json(super::list(&s, $kind).await?))
            }

            #[utoipa::path(post, path = $coll, tag = $tag, request_body = EntityCreate,
                responses((status = 201, body = EntityResponse), (status = 400, body = hangar_api::ErrorBody), (status = 409, body = hangar_api::ErrorBody)),
                security(("bearer" = [])))]
            pub async fn create(
                _: Admin,
                State(s): State<AppState>,
                JsonBody(req): JsonBody<EntityCreate>,
            ) -> ApiResult<(StatusCode, Json<EntityResponse>)> {
                Ok((StatusCode::CREATED, Json(super::create(&s, $kind, req).await?)))
            }

            #[utoipa::path(get, path = $one, tag = $tag, params(("id" = String, Path)),
                responses((status = 200, body = EntityResponse), (status = 404, body = hangar_api::ErrorBody)), security(("bearer" = [])))]
            pub async fn get(_: Admin, State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<EntityResponse>> {
                let e = entity_of_kind(&s, $kind, &id).await?;
                Ok(Json(response(&s, e, None).await?))
            }

            #[utoipa::path(put, path = $one, tag = $tag, params(("id" = String, Path)), request_body = EntityUpdate,
                responses((status = 200, body = EntityResponse), (status = 400, body = hangar_api::ErrorBody), (status = 404, body = hangar_api::ErrorBody)),
                security(("bearer" = [])))]
            pub async fn update(
                _: Admin,
                State(s): State<AppState>,
                Path(id): Path<String>,
                JsonBody(req): JsonBody<EntityUpdate>,
            ) -> ApiResult<Json<EntityResponse>> {
                Ok(Json(super::update(&s, $kind, &id, req).await?))
            }

            #[utoipa::path(delete, path = $one, tag = $tag, params(("id" = String, Path)),
                responses((status = 204), (status = 404, body = hangar_api::ErrorBody), (status = 409, description = "Still has pools", body = hangar_api::ErrorBody)),
                security(("bearer" = [])))]
            pub async fn delete(_: Admin, State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
                super::delete(&s, $kind, &id).await
            }

            #[utoipa::path(get, path = $pools, tag = $tag, params(("id" = String, Path)),
                responses((status = 200, body = Vec<PoolResponse>), (status = 404, body = hangar_api::ErrorBody)), security(("bearer" = [])))]
            pub async fn list_pools(_: Admin, State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Vec<PoolResponse>>> {
                let e = entity_of_kind(&s, $kind, &id).await?;
                Ok(Json(pools::list_for(&s, Some(e.id)).await?))
            }

            #[utoipa::path(post, path = $pools, tag = $tag, params(("id" = String, Path)), request_body = PoolCreate,
                responses((status = 201, body = PoolResponse), (status = 400, body = hangar_api::ErrorBody), (status = 404, body = hangar_api::ErrorBody)),
                security(("bearer" = [])))]
            pub async fn create_pool(
                _: Admin,
                State(s): State<AppState>,
                Path(id): Path<String>,
                JsonBody(req): JsonBody<PoolCreate>,
            ) -> ApiResult<(StatusCode, Json<PoolResponse>)> {
                let e = entity_of_kind(&s, $kind, &id).await?;
                Ok((StatusCode::CREATED, Json(pools::create_for(&s, e.id, req).await?)))
            }
        }
    };
}

entity_routes!(
    repositories,
    EntityKind::Repository,
    "repositories",
    "/api/v1/repositories",
    "/api/v1/repositories/{id}",
    "/api/v1/repositories/{id}/pools"
);
entity_routes!(
    organizations,
    EntityKind::Organization,
    "organizations",
    "/api/v1/organizations",
    "/api/v1/organizations/{id}",
    "/api/v1/organizations/{id}/pools"
);
entity_routes!(
    enterprises,
    EntityKind::Enterprise,
    "enterprises",
    "/api/v1/enterprises",
    "/api/v1/enterprises/{id}",
    "/api/v1/enterprises/{id}/pools"
);
