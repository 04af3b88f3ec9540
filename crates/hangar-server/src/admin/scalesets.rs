//! `/api/v1/scalesets` and `/api/v1/{repositories|organizations|enterprises}/{id}/scalesets`:
//! runner scale sets, made, changed and removed on GitHub (the Actions
//! service) as well as here.
//!
//! GitHub goes first and the store only after it answered, so a GitHub
//! failure leaves nothing stored; a store failure after a create on GitHub
//! removes what was just made there. A scale set of the same name already
//! on GitHub is adopted, so a create that failed half-way can be repeated.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hangar_api::{ScaleSetCreate, ScaleSetResponse, ScaleSetStatisticsResponse, ScaleSetUpdate};
use hangar_core::policy::Breaker;
use hangar_core::{
    EntityId, ForgeError, ForgeTarget, PoolSpec, RemoteScaleSet, ResourceName, RunnerPrefix,
    ScaleSet, ScaleSetId, ScaleSetRequest, ScaleSetSpec, ScaleSetState,
};
use hangar_store::{NewScaleSet, PoolUsage};

use crate::AppState;
use crate::admin::pools::{check_size_limit, health, validate_pool};
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, JsonBody};

fn response(s: ScaleSet, usage: PoolUsage, breaker: Breaker) -> ScaleSetResponse {
    ScaleSetResponse {
        id: s.id.0,
        entity_id: s.entity_id.0,
        pool_id: s.pool_id.0,
        name: s.spec.name.as_str().to_owned(),
        provider_name: s.spec.provider_name.to_string(),
        image: s.spec.image,
        flavor: s.spec.flavor,
        os_type: s.spec.os_type.as_str().to_owned(),
        os_arch: s.spec.os_arch.as_str().to_owned(),
        min_idle_runners: s.spec.min_idle_runners,
        max_runners: s.spec.max_runners,
        runner_prefix: s.spec.runner_prefix.to_string(),
        runner_bootstrap_timeout: s.spec.runner_bootstrap_timeout,
        extra_specs: serde_json::Value::Object(s.spec.extra_specs),
        runner_group: s.spec.runner_group,
        enabled: s.spec.enabled,
        github_id: s.github_id,
        runner_group_id: s.runner_group_id,
        state: s.state.as_str().to_owned(),
        last_error: s.last_error,
        statistics: s.statistics.map(|t| ScaleSetStatisticsResponse {
            total_available_jobs: t.total_available_jobs,
            total_acquired_jobs: t.total_acquired_jobs,
            total_assigned_jobs: t.total_assigned_jobs,
            total_running_jobs: t.total_running_jobs,
            total_registered_runners: t.total_registered_runners,
            total_busy_runners: t.total_busy_runners,
            total_idle_runners: t.total_idle_runners,
        }),
        desired_runners: s.desired_runners,
        instance_count: usage.live,
        idle_runners: usage.idle,
        active_runners: usage.active,
        health: health(breaker),
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

async fn one(s: &AppState, set: ScaleSet) -> ApiResult<ScaleSetResponse> {
    let usage = s.store.pool_usage_of(set.pool_id).await?;
    let breaker = s.store.pool_breaker(set.pool_id).await?;
    Ok(response(set, usage, breaker))
}

pub(crate) async fn list_for(
    s: &AppState,
    entity: Option<EntityId>,
) -> ApiResult<Vec<ScaleSetResponse>> {
    let usage: HashMap<_, _> = s.store.pool_usage().await?.into_iter().collect();
    let mut breakers: HashMap<_, _> = s.store.pool_breakers().await?.into_iter().collect();
    Ok(s.store
        .list_scale_sets(entity)
        .await?
        .into_iter()
        .map(|set| {
            let u = usage.get(&set.pool_id).copied().unwrap_or_default();
            let b = breakers.remove(&set.pool_id).unwrap_or_default();
            response(set, u, b)
        })
        .collect())
}

fn parse_id(id: &str) -> ApiResult<ScaleSetId> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("scale set {id:?} not found")))
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// A GitHub failure as the operator should read it: the request was fine
/// but GitHub could not do it (502/503), or it conflicts with what GitHub
/// has (409).
fn github_error(what: &str, e: ForgeError) -> ApiError {
    let headline = format!("GitHub: cannot {what}");
    match e {
        ForgeError::RateLimited { retry_after, .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, headline)
                .with_details(e.to_string())
                .with_retry_after(retry_after)
        }
        ForgeError::AlreadyExists(_) | ForgeError::Busy(_) => {
            ApiError::conflict(headline).with_details(e.to_string())
        }
        _ => ApiError::new(StatusCode::BAD_GATEWAY, headline).with_details(e.to_string()),
    }
}

async fn runner_group_id(
    s: &AppState,
    target: &ForgeTarget,
    group: Option<&str>,
) -> ApiResult<i64> {
    s.actions
        .runner_group_id(target, group)
        .await
        .map_err(|e| match e {
            ForgeError::NotFound(m) => ApiError::bad_request(format!(
                "runner group {:?} does not exist on GitHub",
                group.unwrap_or_default()
            ))
            .with_details(m),
            other => github_error("look up the runner group", other),
        })
}

fn remote_request(spec: &ScaleSetSpec, runner_group_id: i64) -> ScaleSetRequest {
    ScaleSetRequest {
        name: spec.name.as_str().to_owned(),
        runner_group_id,
        labels: Vec::new(),
        disable_update: false,
    }
}

/// The scale set named like `spec` on GitHub: found (adopted) or made.
/// `true` when it was made by this call.
async fn find_or_create(
    s: &AppState,
    target: &ForgeTarget,
    spec: &ScaleSetSpec,
) -> ApiResult<(RemoteScaleSet, bool)> {
    let group = runner_group_id(s, target, spec.runner_group.as_deref()).await?;
    let found = s
        .actions
        .find_scale_set(target, group, spec.name.as_str())
        .await
        .map_err(|e| github_error("look up the scale set", e))?;
    if let Some(remote) = found {
        return Ok((remote, false));
    }
    let remote = s
        .actions
        .create_scale_set(target, &remote_request(spec, group))
        .await
        .map_err(|e| github_error("create the scale set", e))?;
    Ok((remote, true))
}

/// The 409 for a GitHub scale set that another scale set row drives
/// already: two rows would run two listeners on one queue.
async fn adopted_elsewhere(
    s: &AppState,
    github_id: i64,
    entity: EntityId,
    except: Option<ScaleSetId>,
) -> ApiResult<Option<ApiError>> {
    Ok(s.store
        .scale_set_adopting(github_id, entity, except)
        .await?
        .map(|(id, name)| {
            ApiError::conflict(format!(
                "GitHub scale set {github_id} is already driven by scale set {name:?} ({id})"
            ))
            .with_details(
                "one GitHub scale set is driven by one Hangar scale set only: \
                 delete the other one first, or choose a name GitHub has no scale set under",
            )
        }))
}

/// Core validation, the size limit, then the provider's.
async fn validate(s: &AppState, spec: &ScaleSetSpec, resized: bool) -> ApiResult<()> {
    spec.validate().map_err(bad)?;
    let pool = spec.pool_spec();
    if resized {
        check_size_limit(&pool, s.settings.max_runners_per_pool)?;
    }
    validate_pool(s, &pool).await
}

fn parse_os<T: std::str::FromStr<Err = hangar_core::PoolSpecError>>(
    v: Option<&str>,
) -> ApiResult<Option<T>> {
    v.map(str::parse).transpose().map_err(bad)
}

async fn create_for(
    s: &AppState,
    entity: EntityId,
    req: ScaleSetCreate,
) -> ApiResult<ScaleSetResponse> {
    let spec = ScaleSetSpec {
        name: ScaleSetSpec::parse_name(&req.name).map_err(bad)?,
        runner_group: req.runner_group.filter(|g| !g.is_empty()),
        provider_name: ResourceName::parse(&req.provider_name)
            .map_err(|e| bad(format!("provider_name: {e}")))?,
        image: req.image,
        flavor: req.flavor,
        os_type: parse_os(req.os_type.as_deref())?.unwrap_or_default(),
        os_arch: parse_os(req.os_arch.as_deref())?.unwrap_or_default(),
        min_idle_runners: req.min_idle_runners.unwrap_or(0),
        max_runners: req.max_runners.unwrap_or(10),
        runner_prefix: req
            .runner_prefix
            .as_deref()
            .map(RunnerPrefix::parse)
            .transpose()
            .map_err(bad)?
            .unwrap_or_default(),
        runner_bootstrap_timeout: req
            .runner_bootstrap_timeout
            .unwrap_or(PoolSpec::DEFAULT_BOOTSTRAP_TIMEOUT_MIN),
        extra_specs: PoolSpec::extra_specs_from_value(req.extra_specs.unwrap_or_default())
            .map_err(bad)?,
        enabled: req.enabled.unwrap_or(true),
    };
    validate(s, &spec, true).await?;
    // Refused here before GitHub is asked anything.
    if let Some(taken) = s
        .store
        .scale_set_by_name(entity, spec.name.as_str())
        .await?
    {
        return Err(ApiError::conflict(format!(
            "this entity already has a scale set named {:?} ({})",
            taken.spec.name.as_str(),
            taken.id
        )));
    }
    let target = s.store.forge_target(entity).await?;
    let (remote, made) = find_or_create(s, &target, &spec).await?;
    if !made && let Some(conflict) = adopted_elsewhere(s, remote.id, entity, None).await? {
        return Err(conflict);
    }
    let stored = s
        .store
        .create_scale_set(&NewScaleSet {
            entity_id: entity,
            spec: spec.clone(),
            github_id: Some(remote.id),
            runner_group_id: Some(remote.runner_group_id),
        })
        .await;
    let set = match stored {
        Ok(set) => set,
        Err(e) => {
            if made && let Err(undo) = s.actions.delete_scale_set(&target, remote.id).await {
                tracing::warn!(github.id = remote.id, error = %undo, "cannot remove the scale set just made on GitHub");
            }
            return Err(e.into());
        }
    };
    tracing::info!(scale_set.id = %set.id, entity.id = %entity, github.id = remote.id, adopted = !made, "scale set created");
    s.scheduler.wake_pool(set.pool_id);
    one(s, set).await
}

async fn update_set(
    s: &AppState,
    id: ScaleSetId,
    req: ScaleSetUpdate,
) -> ApiResult<ScaleSetResponse> {
    let old = s.store.scale_set(id).await?;
    let mut spec = old.spec.clone();
    let resized = req.max_runners.is_some() || req.min_idle_runners.is_some();
    if let Some(v) = req.name {
        spec.name = ScaleSetSpec::parse_name(&v).map_err(bad)?;
    }
    if let Some(v) = req.provider_name {
        spec.provider_name =
            ResourceName::parse(&v).map_err(|e| bad(format!("provider_name: {e}")))?;
    }
    if let Some(v) = req.image {
        spec.image = v;
    }
    if let Some(v) = req.flavor {
        spec.flavor = v;
    }
    if let Some(v) = parse_os(req.os_type.as_deref())? {
        spec.os_type = v;
    }
    if let Some(v) = parse_os(req.os_arch.as_deref())? {
        spec.os_arch = v;
    }
    if let Some(v) = req.min_idle_runners {
        spec.min_idle_runners = v;
    }
    if let Some(v) = req.max_runners {
        spec.max_runners = v;
    }
    if let Some(v) = req.runner_prefix {
        spec.runner_prefix = RunnerPrefix::parse(&v).map_err(bad)?;
    }
    if let Some(v) = req.runner_bootstrap_timeout {
        spec.runner_bootstrap_timeout = v;
    }
    if let Some(v) = req.extra_specs {
        spec.extra_specs = PoolSpec::extra_specs_from_value(v).map_err(bad)?;
    }
    if let Some(v) = req.runner_group {
        spec.runner_group = Some(v).filter(|g| !g.is_empty());
    }
    if let Some(v) = req.enabled {
        spec.enabled = v;
    }
    validate(s, &spec, resized).await?;
    if let Some(taken) = s
        .store
        .scale_set_by_name(old.entity_id, spec.name.as_str())
        .await?
        .filter(|t| t.id != id)
    {
        return Err(ApiError::conflict(format!(
            "this entity already has a scale set named {:?} ({})",
            taken.spec.name.as_str(),
            taken.id
        )));
    }

    let target = s.store.forge_target(old.entity_id).await?;
    let renamed = spec.name != old.spec.name || spec.runner_group != old.spec.runner_group;
    // What GitHub has after this call, and how to put back what it had
    // should the store refuse.
    let remote: Option<(RemoteScaleSet, Undo)> = match old.github_id {
        // Gone from GitHub (or never made there): made again.
        Some(_) if old.state == ScaleSetState::DeletedOnGithub => {
            let (r, made) = find_or_create(s, &target, &spec).await?;
            Some((r, if made { Undo::Delete } else { Undo::Nothing }))
        }
        None => {
            let (r, made) = find_or_create(s, &target, &spec).await?;
            Some((r, if made { Undo::Delete } else { Undo::Nothing }))
        }
        Some(github_id) if renamed => {
            let group = runner_group_id(s, &target, spec.runner_group.as_deref()).await?;
            let r = s
                .actions
                .update_scale_set(&target, github_id, &remote_request(&spec, group))
                .await
                .map_err(|e| match e {
                    ForgeError::NotFound(m) => {
                        ApiError::conflict("the scale set no longer exists on GitHub").with_details(
                            format!(
                                "{m}; once its listener has marked it deleted_on_github, an update makes it again"
                            ),
                        )
                    }
                    other => github_error("update the scale set", other),
                })?;
            let back = remote_request(&old.spec, old.runner_group_id.unwrap_or(r.runner_group_id));
            Some((r, Undo::Patch(github_id, back)))
        }
        Some(_) => None,
    };
    // A scale set found on GitHub by name may be one another row drives
    // already (renamed there, or the same scope under a second endpoint):
    // refused before anything is stored, GitHub put back as it was.
    if let Some((r, _)) = &remote
        && let Some(conflict) = adopted_elsewhere(s, r.id, old.entity_id, Some(id)).await?
    {
        if let Some((r, undo)) = remote {
            undo.run(s, &target, r.id).await;
        }
        return Err(conflict);
    }

    let stored = async {
        let mut set = s.store.update_scale_set(id, &spec).await?;
        if let Some((r, _)) = &remote
            && (Some(r.id) != set.github_id || Some(r.runner_group_id) != set.runner_group_id)
        {
            set = s
                .store
                .set_scale_set_github(id, Some(r.id), Some(r.runner_group_id))
                .await?;
        }
        if remote.is_some() && set.state != ScaleSetState::Active {
            s.store
                .set_scale_set_state(id, ScaleSetState::Active, None)
                .await?;
            set = s.store.scale_set(id).await?;
        }
        Ok::<_, hangar_store::StoreError>(set)
    }
    .await;
    let set = match stored {
        Ok(set) => set,
        Err(e) => {
            if let Some((r, undo)) = remote {
                undo.run(s, &target, r.id).await;
            }
            return Err(e.into());
        }
    };
    tracing::info!(scale_set.id = %id, "scale set updated");
    s.scheduler.wake_pool(set.pool_id);
    one(s, set).await
}

/// Puts GitHub back as it was when the store refused an update.
enum Undo {
    Nothing,
    Delete,
    Patch(i64, ScaleSetRequest),
}

impl Undo {
    async fn run(self, s: &AppState, target: &ForgeTarget, made: i64) {
        let r = match self {
            Undo::Nothing => return,
            Undo::Delete => s.actions.delete_scale_set(target, made).await,
            Undo::Patch(id, back) => s
                .actions
                .update_scale_set(target, id, &back)
                .await
                .map(drop),
        };
        if let Err(e) = r {
            tracing::warn!(github.id = made, error = %e, "cannot undo the scale set change on GitHub");
        }
    }
}

async fn delete_set(s: &AppState, id: ScaleSetId) -> ApiResult<StatusCode> {
    let set = s.store.scale_set(id).await?;
    // Refused before GitHub loses it.
    s.store.scale_set_deletable(id).await?;
    if let Some(github_id) = set.github_id {
        let target = s.store.forge_target(set.entity_id).await?;
        match s.actions.delete_scale_set(&target, github_id).await {
            Ok(()) | Err(ForgeError::NotFound(_)) => {}
            Err(e) => return Err(github_error("delete the scale set", e)),
        }
    }
    s.store.delete_scale_set(id).await?;
    tracing::info!(scale_set.id = %id, github.id = ?set.github_id, "scale set deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/scalesets", tag = "scalesets",
    responses((status = 200, body = Vec<ScaleSetResponse>)), security(("bearer" = [])))]
pub async fn list(_: Admin, State(s): State<AppState>) -> ApiResult<Json<Vec<ScaleSetResponse>>> {
    Ok(Json(list_for(&s, None).await?))
}

#[utoipa::path(get, path = "/api/v1/scalesets/{id}", tag = "scalesets", params(("id" = String, Path)),
    responses((status = 200, body = ScaleSetResponse), (status = 404, body = hangar_api::ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ScaleSetResponse>> {
    let set = s.store.scale_set(parse_id(&id)?).await?;
    Ok(Json(one(&s, set).await?))
}

#[utoipa::path(put, path = "/api/v1/scalesets/{id}", tag = "scalesets", params(("id" = String, Path)), request_body = ScaleSetUpdate,
    responses((status = 200, body = ScaleSetResponse), (status = 400, body = hangar_api::ErrorBody), (status = 404, body = hangar_api::ErrorBody),
        (status = 409, body = hangar_api::ErrorBody), (status = 502, description = "GitHub failed", body = hangar_api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ScaleSetUpdate>,
) -> ApiResult<Json<ScaleSetResponse>> {
    Ok(Json(update_set(&s, parse_id(&id)?, req).await?))
}

#[utoipa::path(delete, path = "/api/v1/scalesets/{id}", tag = "scalesets", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = hangar_api::ErrorBody), (status = 409, description = "Still has instances", body = hangar_api::ErrorBody),
        (status = 502, description = "GitHub failed", body = hangar_api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    delete_set(&s, parse_id(&id)?).await
}

macro_rules! entity_scale_set_routes {
    ($module:ident, $kind:expr, $tag:literal, $path:literal) => {
        pub mod $module {
            use super::*;
            use crate::admin::entities::entity_of_kind;

            #[utoipa::path(get, path = $path, tag = $tag, params(("id" = String, Path)),
                responses((status = 200, body = Vec<ScaleSetResponse>), (status = 404, body = hangar_api::ErrorBody)), security(("bearer" = [])))]
            pub async fn list_scale_sets(_: Admin, State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Vec<ScaleSetResponse>>> {
                let e = entity_of_kind(&s, $kind, &id).await?;
                Ok(Json(list_for(&s, Some(e.id)).await?))
            }

            #[utoipa::path(post, path = $path, tag = $tag, params(("id" = String, Path)), request_body = ScaleSetCreate,
                responses((status = 201, body = ScaleSetResponse), (status = 400, body = hangar_api::ErrorBody), (status = 404, body = hangar_api::ErrorBody),
                    (status = 409, body = hangar_api::ErrorBody), (status = 502, description = "GitHub failed", body = hangar_api::ErrorBody)),
                security(("bearer" = [])))]
            pub async fn create_scale_set(
                _: Admin,
                State(s): State<AppState>,
                Path(id): Path<String>,
                JsonBody(req): JsonBody<ScaleSetCreate>,
            ) -> ApiResult<(StatusCode, Json<ScaleSetResponse>)> {
                let e = entity_of_kind(&s, $kind, &id).await?;
                Ok((StatusCode::CREATED, Json(create_for(&s, e.id, req).await?)))
            }
        }
    };
}

entity_scale_set_routes!(
    repositories,
    hangar_core::EntityKind::Repository,
    "repositories",
    "/api/v1/repositories/{id}/scalesets"
);
entity_scale_set_routes!(
    organizations,
    hangar_core::EntityKind::Organization,
    "organizations",
    "/api/v1/organizations/{id}/scalesets"
);
entity_scale_set_routes!(
    enterprises,
    hangar_core::EntityKind::Enterprise,
    "enterprises",
    "/api/v1/enterprises/{id}/scalesets"
);
