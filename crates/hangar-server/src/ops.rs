//! Operational routes: liveness, readiness (database and providers) and
//! Prometheus metrics.
//!
//! Both health routes list every configured provider, so they agree on
//! what is there; they differ in how they learn its health. `/healthz`
//! (liveness) asks nothing: it reports what the scheduler's calls last
//! saw (a provider backing off after failures is unhealthy), so it stays
//! cheap and answers while a dependency is down. `/readyz` (readiness)
//! pings the database (503 when it does not answer) and asks each provider
//! for its health, at most 5 s each.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use hangar_api::{HealthResponse, ProviderResponse};
use hangar_scheduler::metrics::{InstanceLabels, StatusLabels};

use crate::AppState;
use crate::admin::provider_health;

/// The process is up. Lists the configured providers as the scheduler
/// last saw them; calls neither the database nor a provider.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = HealthResponse)))]
pub async fn healthz(State(s): State<AppState>) -> Json<HealthResponse> {
    let providers: Vec<ProviderResponse> = s
        .providers
        .iter()
        .map(|e| {
            let failures = e.gate.consecutive_failures();
            let error = e.gate.remaining().map(|left| {
                format!(
                    "{failures} consecutive failed calls; backing off for {} ms",
                    left.as_millis()
                )
            });
            ProviderResponse {
                name: e.name.clone(),
                kind: e.provider.kind().to_owned(),
                description: e.description.clone(),
                healthy: error.is_none(),
                error,
            }
        })
        .collect();
    let status = if providers.iter().all(|p| p.healthy) {
        "ok"
    } else {
        "degraded"
    };
    Json(HealthResponse {
        status: status.into(),
        database: "unchecked".into(),
        providers,
    })
}

/// The database answers; providers' health is reported (an unhealthy
/// provider degrades, but does not fail, readiness: webhooks can still be
/// taken).
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, body = HealthResponse),
    (status = 503, description = "Database unreachable", body = HealthResponse)))]
pub async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let db = s.store.ping().await;
    let providers = provider_health(s.providers.iter()).await;
    let status = match (&db, providers.iter().all(|p| p.healthy)) {
        (Err(_), _) => "unavailable",
        (Ok(()), true) => "ok",
        (Ok(()), false) => "degraded",
    };
    let code = if db.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(HealthResponse {
            status: status.into(),
            database: match db {
                Ok(()) => "ok".into(),
                Err(e) => e.to_string(),
            },
            providers,
        }),
    )
}

/// Whether a `/metrics` request carries the configured token: as
/// `Authorization: Bearer <token>`, or as the password of HTTP basic auth
/// (any user name), the two ways Prometheus's scrape config can send it.
fn metrics_authorized(expected: &hangar_core::Secret, headers: &axum::http::HeaderMap) -> bool {
    use base64::Engine as _;
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let given = if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let Some(pair) = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return false;
        };
        match pair.split_once(':') {
            Some((_, password)) => password.to_owned(),
            None => return false,
        }
    } else {
        return false;
    };
    // Compared as digests: equal length, no early exit on the secret.
    hangar_store::hash_token(&given) == hangar_store::hash_token(expected.expose())
}

/// Prometheus metrics (OpenMetrics text). When `[metrics] token` is set, the
/// token is required (Bearer, or as the basic-auth password).
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses(
        (status = 200, body = String, content_type = "application/openmetrics-text"),
        (status = 401, description = "A metrics token is configured and the request did not carry it", body = hangar_api::ErrorBody),
    ),
    security((), ("metrics_token" = [])))]
pub async fn metrics(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Some(token) = &s.settings.metrics_token
        && !metrics_authorized(token, &headers)
    {
        return (
            [(
                header::WWW_AUTHENTICATE,
                r#"Bearer realm="hangar metrics", Basic realm="hangar metrics""#,
            )],
            crate::error::ApiError::unauthorized("the metrics token is missing or wrong")
                .with_details("send Authorization: Bearer <[metrics] token>"),
        )
            .into_response();
    }
    let m = &s.metrics;
    if let Ok(jobs) = s.store.job_counts().await {
        m.jobs.clear();
        for (status, n) in jobs {
            m.jobs
                .get_or_create(&StatusLabels {
                    status: status.as_str().into(),
                })
                .set(n as i64);
        }
    }
    if let Ok(counts) = s.store.instance_counts().await {
        m.instances.clear();
        for (pool, status, runner, n) in counts {
            if status == hangar_core::InstanceStatus::Deleted {
                continue;
            }
            m.instances
                .get_or_create(&InstanceLabels {
                    pool: pool.to_string(),
                    status: status.as_str().into(),
                    runner_status: runner.as_str().into(),
                })
                .set(n as i64);
        }
    }
    // From the database, so the gauge is right after a restart too.
    if let Ok(breakers) = s.store.pool_breakers().await {
        m.pool_breaker_open.clear();
        for (pool, b) in breakers {
            m.pool_breaker(pool, b.is_open());
        }
    }
    if let Some(hook) = &s.settings.metrics_hook {
        hook(m);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}
