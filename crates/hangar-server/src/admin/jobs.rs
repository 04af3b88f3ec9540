//! `/api/v1/jobs`: what GitHub asked for and what became of it.

use axum::Json;
use axum::extract::{Query, State};
use hangar_api::JobResponse;
use hangar_core::{Job, JobStatus};
use hangar_store::JobFilter;
use serde::Deserialize;

use crate::AppState;
use crate::admin::pools::parse_pool_id;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct JobQuery {
    /// `waiting`, `queued`, `in_progress` or `completed`.
    pub status: Option<String>,
    pub pool_id: Option<String>,
    /// At most this many, newest first (default 1000).
    pub limit: Option<u32>,
}

pub fn job_response(j: Job) -> JobResponse {
    JobResponse {
        id: j.id.0,
        run_attempt: j.run_attempt,
        status: j.status.as_str().to_owned(),
        conclusion: j.conclusion,
        labels: j.labels.to_vec(),
        repository: j.repository,
        runner_name: j.runner_name,
        name: j.name,
        workflow_run_id: j.workflow_run_id,
        entity_id: j.entity_id.0,
        pool_id: j.pool_id.map(|p| p.0),
        created_at: j.created_at,
        updated_at: j.updated_at,
    }
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobQuery),
    responses((status = 200, body = Vec<JobResponse>), (status = 400, body = hangar_api::ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    _: Admin,
    State(s): State<AppState>,
    Query(q): Query<JobQuery>,
) -> ApiResult<Json<Vec<JobResponse>>> {
    let status = q
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let pool_id = q.pool_id.as_deref().map(parse_pool_id).transpose()?;
    let jobs = s
        .store
        .list_jobs(&JobFilter {
            status,
            pool_id,
            entity_id: None,
            limit: Some(q.limit.unwrap_or(1000).clamp(1, 10_000)),
        })
        .await?;
    Ok(Json(jobs.into_iter().map(job_response).collect()))
}
