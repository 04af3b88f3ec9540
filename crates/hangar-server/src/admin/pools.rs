//! `/api/v1/pools`: validation (core rules, then the provider's own), and
//! wake-ups so a new or changed pool is acted on at once.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hangar_api::{InstanceResponse, PoolCreate, PoolHealth, PoolResponse, PoolUpdate};
use hangar_core::policy::Breaker;
use hangar_core::{EntityId, Labels, Pool, PoolId, PoolSpec, ResourceName, RunnerPrefix};
use hangar_store::InstanceFilter;

use crate::AppState;
use crate::admin::instance_response;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, JsonBody};

pub(crate) fn health(b: Breaker) -> PoolHealth {
    PoolHealth {
        state: if b.is_open() { "degraded" } else { "ok" }.into(),
        consecutive_failures: b.consecutive_failures,
        last_error: b.last_error,
        next_attempt_at: b.next_attempt_at,
    }
}

fn response(p: Pool, instance_count: u32, breaker: Breaker) -> PoolResponse {
    PoolResponse {
        id: p.id.0,
        entity_id: p.entity_id.0,
        provider_name: p.spec.provider_name.to_string(),
        image: p.spec.image,
        flavor: p.spec.flavor,
        tags: p.spec.tags.to_vec(),
        os_type: p.spec.os_type.as_str().to_owned(),
        os_arch: p.spec.os_arch.as_str().to_owned(),
        min_idle_runners: p.spec.min_idle_runners,
        max_runners: p.spec.max_runners,
        runner_prefix: p.spec.runner_prefix.to_string(),
        runner_bootstrap_timeout: p.spec.runner_bootstrap_timeout,
        extra_specs: serde_json::Value::Object(p.spec.extra_specs),
        runner_group: p.spec.runner_group,
        priority: p.spec.priority,
        enabled: p.spec.enabled,
        instance_count,
        health: health(breaker),
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

pub(crate) fn parse_pool_id(id: &str) -> ApiResult<PoolId> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("pool {id:?} not found")))
}

/// A pool the `/pools` routes manage: a scale set's pool is managed
/// through its scale set, so here it is not found (with a pointer).
async fn webhook_pool(s: &AppState, id: PoolId) -> ApiResult<Pool> {
    if let Some(set) = s.store.scale_set_by_pool(id).await? {
        return Err(
            ApiError::not_found(format!("pool {id} not found")).with_details(format!(
                "it carries scale set {:?}; use /api/v1/scalesets/{}",
                set.spec.name.as_str(),
                set.id
            )),
        );
    }
    Ok(s.store.pool(id).await?)
}

pub(crate) async fn list_for(
    s: &AppState,
    entity: Option<EntityId>,
) -> ApiResult<Vec<PoolResponse>> {
    let usage: HashMap<_, _> = s.store.pool_usage().await?.into_iter().collect();
    let mut breakers: HashMap<_, _> = s.store.pool_breakers().await?.into_iter().collect();
    Ok(s.store
        .list_webhook_pools(entity)
        .await?
        .into_iter()
        .map(|p| {
            let n = usage.get(&p.id).map(|u| u.live).unwrap_or(0);
            let b = breakers.remove(&p.id).unwrap_or_default();
            response(p, n, b)
        })
        .collect())
}

fn tags(v: &[String]) -> ApiResult<Labels> {
    Labels::from_strs(v).map_err(|e| ApiError::bad_request(format!("tags: {e}")))
}

/// Refuses pool sizes above `server.max_runners_per_pool`: a runner count
/// no deployment plausibly wants is a typo, and would let one pool ask a
/// provider for that many machines.
pub(crate) fn check_size_limit(spec: &PoolSpec, limit: u32) -> ApiResult<()> {
    for (field, value) in [
        ("max_runners", spec.max_runners),
        ("min_idle_runners", spec.min_idle_runners),
    ] {
        if value > limit {
            return Err(ApiError::bad_request(format!(
                "{field} {value} is above the limit of {limit} runners per pool"
            ))
            .with_details(format!(
                "server.max_runners_per_pool is {limit}; raise it in hangard's config to allow larger pools"
            )));
        }
    }
    Ok(())
}

/// Core validation, then the provider's (which must exist).
pub(crate) async fn validate_pool(s: &AppState, spec: &PoolSpec) -> ApiResult<()> {
    spec.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let entry = s
        .providers
        .get(spec.provider_name.as_str())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "provider {:?} is not configured; configured providers: {}",
                spec.provider_name.as_str(),
                s.providers.names().join(", ")
            ))
        })?;
    // A pool that could never boot is refused, not left to fail every create.
    entry
        .provider
        .can_boot(spec.os_type, spec.os_arch)
        .map_err(|why| {
            ApiError::bad_request(format!(
                "provider {:?} cannot boot {}/{} instances",
                entry.name,
                spec.os_type.as_str(),
                spec.os_arch.as_str()
            ))
            .with_details(why)
        })?;
    let mut for_provider = spec.clone();
    for_provider.extra_specs = spec.provider_extra_specs();
    entry
        .provider
        .validate_pool(&for_provider)
        .await
        .map_err(|e| match e {
            hangar_core::ProviderError::Transient(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "provider unavailable for validation",
            )
            .with_details(m),
            other => ApiError::bad_request(format!("provider {:?} rejects the pool", entry.name))
                .with_details(other.to_string()),
        })
}

pub(crate) async fn create_for(
    s: &AppState,
    entity: EntityId,
    req: PoolCreate,
) -> ApiResult<PoolResponse> {
    let spec = PoolSpec {
        provider_name: ResourceName::parse(&req.provider_name)
            .map_err(|e| ApiError::bad_request(format!("provider_name: {e}")))?,
        image: req.image,
        flavor: req.flavor,
        tags: tags(&req.tags)?,
        os_type: req
            .os_type
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: hangar_core::PoolSpecError| ApiError::bad_request(e.to_string()))?
            .unwrap_or_default(),
        os_arch: req
            .os_arch
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: hangar_core::PoolSpecError| ApiError::bad_request(e.to_string()))?
            .unwrap_or_default(),
        min_idle_runners: req.min_idle_runners.unwrap_or(0),
        max_runners: req.max_runners.unwrap_or(10),
        runner_prefix: req
            .runner_prefix
            .as_deref()
            .map(RunnerPrefix::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .unwrap_or_default(),
        runner_bootstrap_timeout: req
            .runner_bootstrap_timeout
            .unwrap_or(PoolSpec::DEFAULT_BOOTSTRAP_TIMEOUT_MIN),
        extra_specs: PoolSpec::extra_specs_from_value(req.extra_specs.unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        runner_group: req.runner_group.filter(|g| !g.is_empty()),
        priority: req.priority.unwrap_or(0),
        enabled: req.enabled.unwrap_or(true),
    };
    check_size_limit(&spec, s.settings.max_runners_per_pool)?;
    validate_pool(s, &spec).await?;
    let pool = s.store.create_pool(entity, &spec).await?;
    tracing::info!(pool.id = %pool.id, entity.id = %entity, provider = %spec.provider_name, "pool created");
    s.refresh_catalog().await?;
    s.scheduler.wake_pool(pool.id);
    Ok(response(pool, 0, Breaker::default()))
}

#[utoipa::path(get, path = "/api/v1/pools", tag = "pools",
    responses((status = 200, body = Vec<PoolResponse>)), security(("bearer" = [])))]
pub async fn list(_: Admin, State(s): State<AppState>) -> ApiResult<Json<Vec<PoolResponse>>> {
    Ok(Json(list_for(&s, None).await?))
}

#[utoipa::path(get, path = "/api/v1/pools/{id}", tag = "pools", params(("id" = String, Path)),
    responses((status = 200, body = PoolResponse), (status = 404, body = hangar_api::ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PoolResponse>> {
    let id = parse_pool_id(&id)?;
    let p = webhook_pool(&s, id).await?;
    let n = s.store.pool_usage_of(id).await?.live;
    let b = s.store.pool_breaker(id).await?;
    Ok(Json(response(p, n, b)))
}

#[utoipa::path(put, path = "/api/v1/pools/{id}", tag = "pools", params(("id" = String, Path)), request_body = PoolUpdate,
    responses((status = 200, body = PoolResponse), (status = 400, body = hangar_api::ErrorBody), (status = 404, body = hangar_api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PoolUpdate>,
) -> ApiResult<Json<PoolResponse>> {
    let id = parse_pool_id(&id)?;
    let mut spec = webhook_pool(&s, id).await?.spec;
    // A pool stored above the limit (imported, or the limit lowered since)
    // can still be changed in other ways; resizing it must respect it.
    let resized = req.max_runners.is_some() || req.min_idle_runners.is_some();
    if let Some(p) = req.provider_name {
        spec.provider_name = ResourceName::parse(&p)
            .map_err(|e| ApiError::bad_request(format!("provider_name: {e}")))?;
    }
    if let Some(v) = req.image {
        spec.image = v;
    }
    if let Some(v) = req.flavor {
        spec.flavor = v;
    }
    if let Some(v) = req.tags {
        spec.tags = tags(&v)?;
    }
    if let Some(v) = req.os_type {
        spec.os_type = v
            .parse()
            .map_err(|e: hangar_core::PoolSpecError| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(v) = req.os_arch {
        spec.os_arch = v
            .parse()
            .map_err(|e: hangar_core::PoolSpecError| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(v) = req.min_idle_runners {
        spec.min_idle_runners = v;
    }
    if let Some(v) = req.max_runners {
        spec.max_runners = v;
    }
    if let Some(v) = req.runner_prefix {
        spec.runner_prefix =
            RunnerPrefix::parse(&v).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(v) = req.runner_bootstrap_timeout {
        spec.runner_bootstrap_timeout = v;
    }
    if let Some(v) = req.extra_specs {
        spec.extra_specs = PoolSpec::extra_specs_from_value(v)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(v) = req.runner_group {
        spec.runner_group = Some(v).filter(|g| !g.is_empty());
    }
    if let Some(v) = req.priority {
        spec.priority = v;
    }
    if let Some(v) = req.enabled {
        spec.enabled = v;
    }
    if resized {
        check_size_limit(&spec, s.settings.max_runners_per_pool)?;
    }
    validate_pool(&s, &spec).await?;
    let p = s.store.update_pool(id, &spec).await?;
    s.scheduler.invalidate_entity(Some(p.entity_id));
    s.refresh_catalog().await?;
    s.scheduler.wake_pool(id);
    let n = s.store.pool_usage_of(id).await?.live;
    // The update closed the breaker.
    Ok(Json(response(p, n, Breaker::default())))
}

#[utoipa::path(delete, path = "/api/v1/pools/{id}", tag = "pools", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = hangar_api::ErrorBody), (status = 409, description = "Still has instances", body = hangar_api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_pool_id(&id)?;
    webhook_pool(&s, id).await?;
    s.store.delete_pool(id).await?;
    s.refresh_catalog().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/pools/{id}/instances", tag = "pools", params(("id" = String, Path)),
    responses((status = 200, body = Vec<InstanceResponse>), (status = 404, body = hangar_api::ErrorBody)), security(("bearer" = [])))]
pub async fn instances(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<InstanceResponse>>> {
    let id = parse_pool_id(&id)?;
    s.store.pool(id).await?;
    let list = s
        .store
        .list_instances(&InstanceFilter {
            pool_id: Some(id),
            ..Default::default()
        })
        .await?;
    Ok(Json(list.iter().map(instance_response).collect()))
}

/// What stands in the inspected boot data for the per-instance parts.
const NAME_SUFFIX_PLACEHOLDER: &str = "xxxxxxxxxxxx";
const TOKEN_PLACEHOLDER: &str = "<instance token: issued per instance, valid while it bootstraps>";
const RUNNER_URL_PLACEHOLDER: &str =
    "<runner download: GitHub's current release for the pool's OS and architecture>";
const RUNNER_SHA_PLACEHOLDER: &str = "<its SHA-256, from GitHub's list>";

/// The pool's boot data as a new instance of it would get it (for
/// inspection; no secret: the instance's name suffix, token and runner
/// download are placeholders). 409 when the provider renders its own
/// (garm's external providers) or the pool's OS has no boot script.
#[utoipa::path(get, path = "/api/v1/pools/{id}/userdata", tag = "pools", params(("id" = String, Path)),
    responses(
        (status = 200, body = hangar_api::PoolUserdata),
        (status = 404, body = hangar_api::ErrorBody),
        (status = 409, description = "The provider renders its own boot script, is not configured, or the pool's OS has none", body = hangar_api::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn userdata(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<hangar_api::PoolUserdata>> {
    use hangar_core::provider::{BootstrapParams, RunnerTool};
    use hangar_core::userdata::{self, UserdataParams};
    let id = parse_pool_id(&id)?;
    let pool = s.store.pool(id).await?;
    let provider = pool.spec.provider_name.as_str();
    let entry = s.providers.get(provider).ok_or_else(|| {
        ApiError::conflict(format!(
            "provider {provider:?} is not configured in hangard"
        ))
    })?;
    if !entry.provider.renders_userdata() {
        return Err(ApiError::conflict(format!(
            "provider {provider:?} renders its own boot script (a garm external provider); \
             Hangar hands it the bootstrap parameters instead"
        )));
    }
    let target = s.store.forge_target(pool.entity_id).await?;
    let urls = s.urls.get();
    let bootstrap = BootstrapParams {
        repo_url: hangar_core::entity_web_url(&target.endpoint.base_url, &target.scope),
        metadata_url: urls.metadata_url.clone(),
        callback_url: urls.callback_url.clone(),
        instance_token: hangar_core::Secret::new(TOKEN_PLACEHOLDER),
        jit_config_enabled: entry.provider.jit_enabled(),
        runner_group: pool.spec.runner_group.clone(),
        tools: Vec::new(),
        ca_cert_bundle: target.endpoint.ca_bundle.clone(),
        proxy: pool.spec.proxy().unwrap_or_default().or(&entry.proxy),
    };
    let tool = RunnerTool {
        os: pool.spec.os_type.as_str().to_owned(),
        architecture: pool.spec.os_arch.github_name().to_owned(),
        download_url: RUNNER_URL_PLACEHOLDER.to_owned(),
        filename: String::new(),
        sha256_checksum: Some(RUNNER_SHA_PLACEHOLDER.to_owned()),
    };
    let name =
        hangar_core::InstanceName::generate(&pool.spec.runner_prefix, NAME_SUFFIX_PLACEHOLDER)
            .map_err(|e| {
                ApiError::internal("cannot make an example instance name")
                    .with_details(e.to_string())
            })?;
    let labels = pool.runner_labels(s.store.controller_id());
    let rendered = userdata::render(&UserdataParams {
        name: &name,
        os_type: pool.spec.os_type,
        labels: &labels,
        bootstrap: &bootstrap,
        tool: Some(&tool),
    })
    .map_err(|e| ApiError::conflict(e.to_string()))?;
    Ok(Json(hangar_api::PoolUserdata {
        pool_id: pool.id.0,
        provider_name: provider.to_owned(),
        content_type: "text/cloud-config".into(),
        userdata: rendered,
        placeholders: vec![
            format!(
                "{name}: each instance's name ends in its own random suffix instead of {NAME_SUFFIX_PLACEHOLDER}"
            ),
            format!("HANGAR_TOKEN {TOKEN_PLACEHOLDER}"),
            format!(
                "RUNNER_URL {RUNNER_URL_PLACEHOLDER}; used only when the image has no runner in {}",
                userdata::RUNNER_DIR
            ),
            format!("RUNNER_SHA256 {RUNNER_SHA_PLACEHOLDER}"),
        ],
    }))
}
