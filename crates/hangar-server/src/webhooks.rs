//! Webhook intake: `POST /webhooks/{entity_id}` and `POST /webhooks`
//! (also `/webhooks/` and `/webhooks/{controller_id}`, where garm's hooks
//! point).
//!
//! Order of work, always: size limit → signature (HMAC-SHA256 of the raw
//! bytes, from the in-memory catalog; no database) → parse → durable record
//! → answer. Nothing here calls GitHub or a provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use hangar_api::WebhookAck;
use hangar_core::{EntityKind, JobAction, JobId, Labels};
use hangar_github::routing::{self, Subject};
use hangar_github::webhook::{self, DeliveryTarget, SignatureError, WorkflowJobEvent};
use hangar_store::{JobEvent, JobOutcome};
use http_body_util::BodyExt as _;

use crate::AppState;
use crate::catalog::EntityEntry;
use crate::error::ApiError;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Reads the body within the configured time, refusing anything over the
/// size limit (see [`read_body`]).
async fn read_limited(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let timeout = state.settings.webhook_read_timeout;
    tokio::time::timeout(
        timeout,
        read_body(headers, body, state.settings.webhook_body_limit),
    )
    .await
    .unwrap_or_else(|_| {
        Err(
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "webhook body too slow")
                .with_details(format!("it must arrive within {} s", timeout.as_secs())),
        )
    })
}

/// Reads the body, refusing anything over `limit` — by its declared length
/// before reading a byte, or as soon as the stream passes the limit. A body
/// that arrives in one frame (the usual case: hyper reads a delivery's
/// headers and body in one go) is returned without a copy.
async fn read_body(headers: &HeaderMap, mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "webhook body too large")
            .with_details(format!("the limit is {limit} bytes"))
    };
    if let Some(len) = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request("cannot read the request body").with_details(e.to_string())
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let read = joined.as_ref().map_or(first.len(), BytesMut::len);
        if read + data.len() > limit {
            return Err(too_large());
        }
        match &mut joined {
            Some(buf) => buf.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut buf = BytesMut::with_capacity(first.len() + data.len());
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
                joined = Some(buf);
            }
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

fn signature_error(e: SignatureError) -> ApiError {
    ApiError::unauthorized("webhook signature rejected").with_details(e.to_string())
}

fn ack(status: StatusCode, outcome: &str, job_id: Option<i64>) -> Response {
    (
        status,
        Json(WebhookAck {
            outcome: outcome.to_owned(),
            job_id,
        }),
    )
        .into_response()
}

/// A delivery for one entity; or, when the id is a controller's (this one's
/// or an imported garm deployment's, where garm's hooks point), a delivery
/// to the shared hook.
#[utoipa::path(
    post,
    path = "/webhooks/{entity_id}",
    tag = "webhooks",
    params(("entity_id" = String, Path, description = "Entity id from its webhook_url, or a controller id (garm's hook URL)")),
    request_body(content = String, description = "The raw GitHub delivery", content_type = "application/json"),
    responses(
        (status = 202, description = "Job recorded", body = WebhookAck),
        (status = 200, description = "Accepted, nothing to do (ping, other event, no matching pool, duplicate)", body = WebhookAck),
        (status = 400, description = "Malformed payload", body = hangar_api::ErrorBody),
        (status = 401, description = "Missing or bad signature", body = hangar_api::ErrorBody),
        (status = 404, description = "Unknown entity or controller", body = hangar_api::ErrorBody),
        (status = 408, description = "Body not received within server.read_timeout_secs", body = hangar_api::ErrorBody),
        (status = 413, description = "Body too large", body = hangar_api::ErrorBody),
        (status = 500, description = "The job could not be committed; GitHub redelivers", body = hangar_api::ErrorBody),
        (status = 503, description = "Shutting down; GitHub redelivers", body = hangar_api::ErrorBody),
    )
)]
pub async fn entity_webhook(
    State(state): State<AppState>,
    Path(entity_id): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let event = header(headers, webhook::EVENT_HEADER).unwrap_or("");
    let result = async {
        let body = read_limited(&state, headers, body).await?;
        let lookup = |snap: &crate::catalog::Snapshot| {
            entity_id
                .parse()
                .ok()
                .and_then(|id| snap.entity(&id).cloned())
        };
        let mut snap = state.catalog.snapshot();
        let mut found = lookup(&snap);
        if found.is_none()
            && !snap.is_controller(&entity_id)
            && state.catalog.refresh_after_miss(&state.store).await
        {
            snap = state.catalog.snapshot();
            found = lookup(&snap);
        }
        let Some(entry) = found else {
            if snap.is_controller(&entity_id) {
                return shared(&state, &snap, headers, event, &body).await;
            }
            return Err(ApiError::not_found(format!(
                "no entity {entity_id:?} is registered"
            )));
        };
        let sig = webhook::signature_from_headers(
            header(headers, webhook::SIGNATURE_256_HEADER),
            header(headers, webhook::SIGNATURE_SHA1_HEADER),
        )
        .map_err(signature_error)?;
        webhook::verify(entry.secret.expose().as_bytes(), &body, &sig).map_err(signature_error)?;
        handle_verified(&state, event, &entry, &body).await
    }
    .await;
    finish(&state, event, Some(&entity_id), result)
}

/// A delivery to the shared hook: routed by the target headers or the
/// payload. GitHub App deliveries (target type `integration`) are verified
/// with the App's secret and routed by repository/organization.
#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "webhooks",
    request_body(content = String, description = "The raw GitHub delivery", content_type = "application/json"),
    responses(
        (status = 202, description = "Job recorded", body = WebhookAck),
        (status = 200, description = "Accepted, nothing to do", body = WebhookAck),
        (status = 400, description = "Malformed payload", body = hangar_api::ErrorBody),
        (status = 401, description = "Missing or bad signature", body = hangar_api::ErrorBody),
        (status = 404, description = "No registered entity for this delivery", body = hangar_api::ErrorBody),
        (status = 408, description = "Body not received within server.read_timeout_secs", body = hangar_api::ErrorBody),
        (status = 413, description = "Body too large", body = hangar_api::ErrorBody),
        (status = 500, description = "The job could not be committed; GitHub redelivers", body = hangar_api::ErrorBody),
        (status = 503, description = "Shutting down; GitHub redelivers", body = hangar_api::ErrorBody),
    )
)]
pub async fn shared_webhook(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let event = header(headers, webhook::EVENT_HEADER).unwrap_or("");
    let result = async {
        let body = read_limited(&state, headers, body).await?;
        match shared(&state, &state.catalog.snapshot(), headers, event, &body).await {
            // No entity, or no secret that verifies: another replica may
            // have just added the entity or changed its secret.
            Err(e)
                if matches!(e.status, StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED)
                    && state.catalog.refresh_after_miss(&state.store).await =>
            {
                shared(&state, &state.catalog.snapshot(), headers, event, &body).await
            }
            r => r,
        }
    }
    .await;
    finish(&state, event, None, result)
}

/// `POST /webhooks/`, where hooks made by garm without a controller id
/// point: the shared hook.
#[utoipa::path(
    post,
    path = "/webhooks/",
    tag = "webhooks",
    request_body(content = String, description = "The raw GitHub delivery", content_type = "application/json"),
    responses(
        (status = 202, description = "Job recorded", body = WebhookAck),
        (status = 200, description = "Accepted, nothing to do", body = WebhookAck),
        (status = 400, description = "Malformed payload", body = hangar_api::ErrorBody),
        (status = 401, description = "Missing or bad signature", body = hangar_api::ErrorBody),
        (status = 404, description = "No registered entity for this delivery", body = hangar_api::ErrorBody),
        (status = 413, description = "Body too large", body = hangar_api::ErrorBody),
    )
)]
pub async fn shared_webhook_slash(state: State<AppState>, request: Request) -> Response {
    shared_webhook(state, request).await
}

/// The shared hook, after the body is read: verified against the App's
/// secrets or the candidate entities' secrets, then routed by the payload.
async fn shared(
    state: &AppState,
    snap: &crate::catalog::Snapshot,
    headers: &HeaderMap,
    event: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let body: &[u8] = body;
    let sig = webhook::signature_from_headers(
        header(headers, webhook::SIGNATURE_256_HEADER),
        header(headers, webhook::SIGNATURE_SHA1_HEADER),
    )
    .map_err(signature_error)?;
    let target_type = header(headers, webhook::TARGET_TYPE_HEADER).unwrap_or("");
    // Which endpoint sent it, to tell apart one name registered on two.
    let host = routing::delivery_host(header(headers, routing::ENTERPRISE_HOST_HEADER));
    if target_type == "integration" {
        let app_id: i64 = header(headers, webhook::TARGET_ID_HEADER)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "GitHub App delivery without a numeric X-GitHub-Hook-Installation-Target-ID",
                )
            })?;
        let secrets = snap.apps.get(&app_id).ok_or_else(|| {
            ApiError::not_found(format!(
                "no credentials hold a webhook secret for GitHub App {app_id}"
            ))
        })?;
        if !secrets
            .iter()
            .any(|s| webhook::verify(s.expose().as_bytes(), body, &sig).is_ok())
        {
            return Err(signature_error(SignatureError::Mismatch));
        }
        let target: DeliveryTarget = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request("malformed JSON payload").with_details(e.to_string())
        })?;
        let entry = route(snap, &target, &host).ok_or_else(|| {
            ApiError::not_found(
                "no registered repository, organization or enterprise matches this delivery",
            )
        })?;
        return handle_verified(state, event, &entry, body).await;
    }
    let kind = match target_type {
        "repository" => Some(EntityKind::Repository),
        "organization" => Some(EntityKind::Organization),
        "business" | "enterprise" => Some(EntityKind::Enterprise),
        _ => None,
    };
    // Verify against the candidates' secrets before parsing anything; a
    // secret that verifies identifies the entity (payload confirms).
    let mut verified = false;
    for entry in snap.of_kind(kind) {
        if webhook::verify(entry.secret.expose().as_bytes(), body, &sig).is_err() {
            continue;
        }
        verified = true;
        let target: DeliveryTarget = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request("malformed JSON payload").with_details(e.to_string())
        })?;
        match route(snap, &target, &host) {
            None => return handle_verified(state, event, entry, body).await,
            Some(e) if e.entity.id == entry.entity.id => {
                return handle_verified(state, event, entry, body).await;
            }
            // The same scope on another endpoint: the host picked `e`; if
            // its secret verifies too (one secret for both), it is `e`,
            // otherwise the secret says it is `entry`.
            Some(e) if e.entity.scope.as_scope_ref().is(&entry.entity.scope) => {
                let twin = webhook::verify(e.secret.expose().as_bytes(), body, &sig).is_ok();
                let chosen = if twin { &e } else { entry };
                return handle_verified(state, event, chosen, body).await;
            }
            Some(_) => {}
        }
    }
    if verified {
        return Err(ApiError::not_found(
            "the delivery verifies, but no registered entity matches its payload",
        ));
    }
    if snap.entities.is_empty() {
        return Err(ApiError::not_found("no entities are registered"));
    }
    Err(signature_error(SignatureError::Mismatch))
}

/// The registered entity a delivery from `host` is about (see
/// [`routing::route`] and [`routing::pick_by_host`]).
fn route(
    snap: &crate::catalog::Snapshot,
    t: &DeliveryTarget,
    host: &str,
) -> Option<Arc<EntityEntry>> {
    routing::route(Subject::from(t), |scope| snap.by_scope(scope, host)).cloned()
}

async fn handle_verified(
    state: &AppState,
    event: &str,
    entry: &EntityEntry,
    body: &[u8],
) -> Result<Response, ApiError> {
    match event {
        "ping" => {
            serde_json::from_slice::<serde_json::Value>(body).map_err(|e| {
                ApiError::bad_request("malformed JSON payload").with_details(e.to_string())
            })?;
            Ok(ack(StatusCode::OK, "pong", None))
        }
        "workflow_job" => {
            let ev: WorkflowJobEvent = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request("malformed workflow_job payload").with_details(e.to_string())
            })?;
            ev.workflow_job
                .check_numbers()
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let job_id = ev.workflow_job.id;
            let Some(action) = JobAction::from_webhook(&ev.action) else {
                return Ok(ack(StatusCode::OK, "ignored", Some(job_id)));
            };
            if !Subject::from(&ev).belongs_to(&entry.entity.scope) {
                // Well-formed, signed with this entity's secret, about
                // another repository: a hook pointed at the wrong URL.
                return Err(ApiError::bad_request(format!(
                    "this delivery is not about {} {}",
                    entry.entity.scope.kind(),
                    entry.entity.scope.display_name()
                ))
                .with_reason("wrong_entity"));
            }
            // Labels Hangar cannot represent can match no pool either.
            let labels = Labels::from_strs(&ev.workflow_job.labels).unwrap_or_else(|_| {
                Labels::from_strs(
                    ev.workflow_job
                        .labels
                        .iter()
                        .filter(|l| hangar_core::Label::parse(l).is_ok()),
                )
                .unwrap_or_default()
            });
            let matchable = labels.len() == ev.workflow_job.labels.len();
            let mut pool_id = if matchable {
                state.catalog.choose_pool(entry, &labels)
            } else {
                None
            };
            // No pool for the labels: one may have just been added (or
            // enabled) through another replica.
            if matchable
                && pool_id.is_none()
                && state.catalog.refresh_after_miss(&state.store).await
                && let Some(fresh) = state.catalog.snapshot().entity(&entry.entity.id).cloned()
            {
                pool_id = state.catalog.choose_pool(&fresh, &labels);
            }
            // The parsed event is not needed past here: its strings move.
            let job = ev.workflow_job;
            let record = JobEvent {
                job_id: JobId(job_id),
                run_attempt: job.run_attempt,
                action,
                entity_id: entry.entity.id,
                labels,
                repository: ev.repository.map(|r| r.full_name).unwrap_or_default(),
                workflow_run_id: job.run_id,
                name: job.name,
                runner_name: job.runner_name,
                conclusion: job.conclusion,
                pool_id,
            };
            let outcome = state.intake.record(record).await?;
            Ok(match outcome {
                JobOutcome::Recorded {
                    pool_id: Some(_), ..
                } => ack(StatusCode::ACCEPTED, "recorded", Some(job_id)),
                JobOutcome::Recorded { pool_id: None, .. } => {
                    ack(StatusCode::OK, "unmatched", Some(job_id))
                }
                JobOutcome::Duplicate => ack(StatusCode::OK, "duplicate", Some(job_id)),
                JobOutcome::Stale => ack(StatusCode::OK, "stale", Some(job_id)),
            })
        }
        _ => Ok(ack(StatusCode::OK, "ignored", None)),
    }
}

/// How often one kind of refusal of one entity is logged at `warn`.
pub const REJECTION_LOG_EVERY: Duration = Duration::from_secs(60);

/// Remembers when each kind of refused delivery was last logged, per
/// entity, so a misconfigured hook (or a flood of forged deliveries) gives
/// one warning a minute with a count, not one per delivery. Bounded: when
/// full, the oldest entries go.
#[derive(Debug, Default)]
pub struct Rejections(Mutex<HashMap<RejectionKey, (Instant, u64)>>);

/// An entity (as logged) and a reason.
type RejectionKey = (String, &'static str);

const REJECTIONS_KEPT: usize = 1024;

impl Rejections {
    /// Whether to log this refusal now; if so, how many like it were not
    /// logged since the last line.
    fn should_log(&self, entity: &str, reason: &'static str, now: Instant) -> Option<u64> {
        let mut map = self.0.lock().expect("rejections lock");
        let key = (entity.to_owned(), reason);
        if let Some((at, skipped)) = map.get_mut(&key) {
            if now.duration_since(*at) < REJECTION_LOG_EVERY {
                *skipped += 1;
                return None;
            }
            let n = *skipped;
            *at = now;
            *skipped = 0;
            return Some(n);
        }
        if map.len() >= REJECTIONS_KEPT {
            let stale: Vec<_> = map
                .iter()
                .filter(|(_, (at, _))| now.duration_since(*at) >= REJECTION_LOG_EVERY)
                .map(|(k, _)| k.clone())
                .collect();
            for k in stale {
                map.remove(&k);
            }
            if map.len() >= REJECTIONS_KEPT {
                return None;
            }
        }
        map.insert(key, (now, 0));
        Some(0)
    }
}

/// The entity a refused delivery named, as an operator knows it.
fn entity_label(state: &AppState, entity: Option<&str>) -> String {
    let Some(id) = entity else {
        return "(shared hook)".into();
    };
    let known = id
        .parse()
        .ok()
        .and_then(|id| state.catalog.snapshot().entity(&id).cloned());
    match known {
        Some(e) => format!(
            "{} {} ({id})",
            e.entity.scope.kind(),
            e.entity.scope.display_name()
        ),
        // From the URL path: whatever was sent, kept short.
        None => id.chars().take(64).collect(),
    }
}

/// Counts the delivery and logs it at debug level; a refused one (bad
/// signature, wrong entity, unknown entity, malformed, too large or slow)
/// also at `warn`, at most once a minute per entity and reason. Webhook
/// routes are kept out of the HTTP trace layer (see `crate::router`), so
/// this line is their request log, with the outcome the trace layer could
/// not know.
fn finish(
    state: &AppState,
    event: &str,
    entity: Option<&str>,
    result: Result<Response, ApiError>,
) -> Response {
    let event_label = match event {
        "workflow_job" => "workflow_job",
        "ping" => "ping",
        "" => "none",
        _ => "other",
    };
    let (response, outcome) = match result {
        Ok(resp) => {
            let outcome = match resp.status() {
                StatusCode::ACCEPTED => "recorded",
                _ => "accepted",
            };
            (resp, outcome)
        }
        Err(e) => {
            let outcome = e.reason.unwrap_or(match e.status {
                StatusCode::UNAUTHORIZED => "bad_signature",
                StatusCode::NOT_FOUND => "unknown_entity",
                StatusCode::PAYLOAD_TOO_LARGE => "too_large",
                StatusCode::REQUEST_TIMEOUT => "too_slow",
                StatusCode::BAD_REQUEST => "malformed",
                _ => "error",
            });
            if e.status.is_client_error() {
                let label = entity_label(state, entity);
                if let Some(suppressed) =
                    state.rejections.should_log(&label, outcome, Instant::now())
                {
                    tracing::warn!(
                        event,
                        entity = %label,
                        reason = outcome,
                        status = e.status.as_u16(),
                        error = %e.error,
                        details = e.details.as_deref().unwrap_or(""),
                        suppressed,
                        "webhook delivery rejected"
                    );
                }
            }
            (e.into_response(), outcome)
        }
    };
    state.metrics.webhook(event_label, outcome);
    tracing::debug!(
        event,
        entity = entity.unwrap_or("(shared hook)"),
        status = response.status().as_u16(),
        outcome,
        "webhook delivery"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_logged_once_a_minute_per_entity_and_reason() {
        let r = Rejections::default();
        let t0 = Instant::now();
        assert_eq!(r.should_log("repo octo/app", "bad_signature", t0), Some(0));
        for _ in 0..5 {
            assert_eq!(r.should_log("repo octo/app", "bad_signature", t0), None);
        }
        // Another reason or entity has its own line.
        assert_eq!(r.should_log("repo octo/app", "wrong_entity", t0), Some(0));
        assert_eq!(r.should_log("repo octo/web", "bad_signature", t0), Some(0));
        // A minute on: logged again, with the count left out meanwhile.
        let later = t0 + REJECTION_LOG_EVERY;
        assert_eq!(
            r.should_log("repo octo/app", "bad_signature", later),
            Some(5)
        );
        assert_eq!(r.should_log("repo octo/app", "bad_signature", later), None);
    }

    #[test]
    fn rejections_stay_bounded() {
        let r = Rejections::default();
        let t0 = Instant::now();
        for i in 0..REJECTIONS_KEPT + 10 {
            r.should_log(&format!("forged-{i}"), "unknown_entity", t0);
        }
        assert!(r.0.lock().unwrap().len() <= REJECTIONS_KEPT);
        // Once old entries are stale they make room.
        let later = t0 + REJECTION_LOG_EVERY;
        assert_eq!(r.should_log("new", "unknown_entity", later), Some(0));
    }
}
