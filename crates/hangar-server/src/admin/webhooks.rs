//! `/api/v1/{repositories|organizations}/{id}/webhook`: Hangar makes,
//! shows and removes the entity's hook on GitHub (garm-cli's `repo|org
//! webhook install|show|uninstall`), with the entity's URL and secret.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hangar_api::{WebhookInfo, WebhookInstall};
use hangar_core::forge::{ForgeHook, NewHook};
use hangar_core::{Entity, EntityKind, ForgeError, ForgeTarget};

use crate::AppState;
use crate::admin::entities::entity_of_kind;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};

/// The events Hangar needs.
const EVENTS: [&str; 1] = ["workflow_job"];

fn forge_error(what: &str, e: ForgeError) -> ApiError {
    let status = match e {
        ForgeError::NotFound(_) => StatusCode::NOT_FOUND,
        ForgeError::Unauthorized(_) => StatusCode::BAD_GATEWAY,
        ForgeError::RateLimited { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, format!("GitHub: cannot {what}")).with_details(e.to_string())
}

fn info(h: ForgeHook) -> WebhookInfo {
    WebhookInfo {
        id: h.id,
        url: h.url,
        events: h.events,
        active: h.active,
        insecure_ssl: h.insecure_ssl,
    }
}

/// The install options; an empty body means the defaults.
fn options(body: &[u8]) -> ApiResult<WebhookInstall> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(WebhookInstall::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let details = e.to_string();
        ApiError::bad_request(crate::error::body_error_summary(&details)).with_details(details)
    })
}

struct Hooked {
    entity: Entity,
    target: ForgeTarget,
    url: String,
}

async fn load(s: &AppState, kind: EntityKind, id: &str) -> ApiResult<Hooked> {
    let entity = entity_of_kind(s, kind, id).await?;
    let target = s.store.forge_target(entity.id).await?;
    let url = format!("{}/{}", s.urls.get().webhook_base_url, entity.id);
    Ok(Hooked {
        entity,
        target,
        url,
    })
}

/// Hooks on the entity that deliver to its URL.
async fn ours(s: &AppState, h: &Hooked) -> ApiResult<Vec<ForgeHook>> {
    let hooks = s
        .forge
        .list_hooks(&h.target)
        .await
        .map_err(|e| forge_error("list webhooks", e))?;
    Ok(hooks
        .into_iter()
        .filter(|k| k.url.trim_end_matches('/') == h.url)
        .collect())
}

pub(crate) async fn install(
    s: &AppState,
    kind: EntityKind,
    id: &str,
    req: WebhookInstall,
) -> ApiResult<WebhookInfo> {
    let h = load(s, kind, id).await?;
    if let Some(existing) = ours(s, &h).await?.into_iter().next() {
        return Err(ApiError::conflict(format!(
            "{kind} {} already has a hook to {} (GitHub id {})",
            h.entity.scope.display_name(),
            h.url,
            existing.id
        )));
    }
    let secret = s
        .catalog
        .snapshot()
        .entity(&h.entity.id)
        .map(|e| e.secret.clone())
        .ok_or_else(|| ApiError::internal("the entity is missing from the webhook catalog"))?;
    let hook = s
        .forge
        .create_hook(
            &h.target,
            &NewHook {
                url: h.url.clone(),
                secret,
                events: EVENTS.iter().map(|e| (*e).to_owned()).collect(),
                insecure_ssl: req.insecure_ssl,
            },
        )
        .await
        .map_err(|e| forge_error("create the webhook", e))?;
    tracing::info!(entity.id = %h.entity.id, hook.id = hook.id, "webhook installed on GitHub");
    Ok(info(hook))
}

async fn show(s: &AppState, kind: EntityKind, id: &str) -> ApiResult<WebhookInfo> {
    let h = load(s, kind, id).await?;
    ours(s, &h)
        .await?
        .into_iter()
        .next()
        .map(info)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{kind} {} has no hook to {} on GitHub",
                h.entity.scope.display_name(),
                h.url
            ))
        })
}

async fn uninstall(s: &AppState, kind: EntityKind, id: &str) -> ApiResult<StatusCode> {
    let h = load(s, kind, id).await?;
    for hook in ours(s, &h).await? {
        s.forge
            .delete_hook(&h.target, hook.id)
            .await
            .map_err(|e| forge_error("delete the webhook", e))?;
        tracing::info!(entity.id = %h.entity.id, hook.id = hook.id, "webhook removed from GitHub");
    }
    Ok(StatusCode::NO_CONTENT)
}

macro_rules! webhook_routes {
    ($module:ident, $kind:expr, $tag:literal, $path:literal) => {
        pub mod $module {
            use super::*;

            /// Creates the hook on GitHub: `workflow_job` deliveries to the
            /// entity's webhook URL, signed with its secret.
            #[utoipa::path(post, path = $path, tag = $tag, params(("id" = String, Path)), request_body = WebhookInstall,
                responses((status = 201, body = WebhookInfo), (status = 404, body = hangar_api::ErrorBody),
                    (status = 409, description = "A hook to this URL exists", body = hangar_api::ErrorBody),
                    (status = 502, description = "GitHub refused", body = hangar_api::ErrorBody)),
                security(("bearer" = [])))]
            pub async fn install(
                _: Admin,
                State(s): State<AppState>,
                Path(id): Path<String>,
                body: axum::body::Bytes,
            ) -> ApiResult<(StatusCode, Json<WebhookInfo>)> {
                let req = super::options(&body)?;
                Ok((StatusCode::CREATED, Json(super::install(&s, $kind, &id, req).await?)))
            }

            /// The hook on GitHub that delivers to the entity's URL.
            #[utoipa::path(get, path = $path, tag = $tag, params(("id" = String, Path)),
                responses((status = 200, body = WebhookInfo), (status = 404, body = hangar_api::ErrorBody),
                    (status = 502, description = "GitHub refused", body = hangar_api::ErrorBody)),
                security(("bearer" = [])))]
            pub async fn show(_: Admin, State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<WebhookInfo>> {
                Ok(Json(super::show(&s, $kind, &id).await?))
            }

            /// Removes the entity's hooks from GitHub (none is fine).
            #[utoipa::path(delete, path = $path, tag = $tag, params(("id" = String, Path)),
                responses((status = 204), (status = 404, body = hangar_api::ErrorBody),
                    (status = 502, description = "GitHub refused", body = hangar_api::ErrorBody)),
                security(("bearer" = [])))]
            pub async fn uninstall(_: Admin, State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
                super::uninstall(&s, $kind, &id).await
            }
        }
    };
}

webhook_routes!(
    repositories,
    EntityKind::Repository,
    "repositories",
    "/api/v1/repositories/{id}/webhook"
);
webhook_routes!(
    organizations,
    EntityKind::Organization,
    "organizations",
    "/api/v1/organizations/{id}/webhook"
);
