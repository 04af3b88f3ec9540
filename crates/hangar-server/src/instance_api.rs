//! The routes a booting instance calls with its own token: Hangar's own
//! (the whole JIT config, once) and garm's boot contract, so that the
//! install script of any garm external provider registers its runner
//! unchanged: the JIT config's three files (each once) or one registration
//! token, the service name and systemd unit, the CA bundle, the runner's
//! metadata, and the status and system-info callbacks. Every route answers
//! with and without a trailing slash (see [`trailing_slash_routes`]).
//!
//! A token opens only its own instance, and only while the runner is still
//! coming up (`pending`/`installing`); after that it is good for one thing
//! only: the status callback that reports the runner's exit (`terminated`).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hangar_api::{
    CertificateBundle, MetadataAccess, RunnerMetadata, RunnerTools, StatusCallback,
    SystemInfoCallback,
};
use hangar_core::provider::ProxySettings;
use hangar_core::{
    ForgeTarget, Instance, InstanceStatus, JitFile, Pool, RunnerStatus, entity_web_url,
};
use hangar_store::Change;

use crate::AppState;
use crate::auth::bearer;
use crate::error::{ApiError, ApiResult};

/// The instance a valid instance token belongs to.
#[derive(Debug)]
pub struct InstanceAuth {
    pub instance: Instance,
    pub has_jit_config: bool,
}

/// The live (not retiring) instance a request's token belongs to, whatever
/// its runner's status.
async fn live_instance(
    parts: &Parts,
    state: &AppState,
) -> Result<hangar_store::TokenLookup, ApiError> {
    let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("missing instance token"))?;
    let hash = hangar_store::hash_token(token);
    let found = state
        .store
        .instance_by_token(&hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown or expired instance token"))?;
    if matches!(
        found.instance.status,
        InstanceStatus::PendingDelete | InstanceStatus::Deleting | InstanceStatus::Deleted
    ) {
        return Err(ApiError::unauthorized("this instance is being retired"));
    }
    Ok(found)
}

impl FromRequestParts<AppState> for InstanceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let found = live_instance(parts, state).await?;
        let inst = &found.instance;
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

/// The instance of a status callback: bootstrapping, or with a runner that
/// is up (`idle`/`active`) and may only report that it exited.
#[derive(Debug)]
pub struct CallbackAuth {
    pub instance: Instance,
}

impl FromRequestParts<AppState> for CallbackAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let found = live_instance(parts, state).await?;
        let runner = found.instance.runner_status;
        if !runner.is_bootstrapping()
            && !matches!(runner, RunnerStatus::Idle | RunnerStatus::Active)
        {
            return Err(ApiError::forbidden(format!(
                "the instance token is no longer valid (runner is {runner})"
            )));
        }
        Ok(CallbackAuth {
            instance: found.instance,
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
    let jit = s.store.take_jit_config(&auth.instance.name).await?;
    tracing::info!(instance.name = %auth.instance.name, "JIT config handed out");
    Ok(jit.expose().to_owned())
}

/// A registration token for `config.sh`: for instances without a JIT
/// config, once per create attempt.
#[utoipa::path(get, path = "/api/v1/metadata/runner-registration-token", tag = "instances",
    responses(
        (status = 200, description = "A registration token", body = String, content_type = "text/plain"),
        (status = 401, body = hangar_api::ErrorBody),
        (status = 409, description = "Already handed out, or the instance boots with a JIT config", body = hangar_api::ErrorBody),
        (status = 502, description = "GitHub refused", body = hangar_api::ErrorBody),
    ),
    security(("instance_token" = [])))]
pub async fn registration_token(
    State(s): State<AppState>,
    auth: InstanceAuth,
) -> ApiResult<String> {
    if auth.has_jit_config {
        return Err(ApiError::conflict(
            "this instance boots with a JIT config, not a registration token",
        )
        .with_details(
            "fetch /api/v1/metadata/credentials/{runner,credentials,credentials_rsaparams}",
        ));
    }
    let name = &auth.instance.name;
    s.store.claim_registration_token(name).await?;
    let target = match forge_target(&s, &auth.instance).await {
        Ok(t) => t,
        Err(e) => {
            s.store.release_registration_token(name).await?;
            return Err(e);
        }
    };
    let token = match s.forge.registration_token(&target).await {
        Ok(t) => t,
        Err(e) => {
            // The instance may ask again: it got nothing.
            s.store.release_registration_token(name).await?;
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "cannot get a registration token from GitHub",
            )
            .with_details(e.to_string()));
        }
    };
    tracing::info!(instance.name = %name, "registration token handed out");
    Ok(token.token.expose().to_owned())
}

async fn forge_target(s: &AppState, inst: &Instance) -> ApiResult<ForgeTarget> {
    let pool = s.store.pool(inst.pool_id).await?;
    Ok(s.store.forge_target(pool.entity_id).await?)
}

/// One file of the instance's JIT config, as the runner keeps it on disk.
#[utoipa::path(get, path = "/api/v1/metadata/credentials/{file}", tag = "instances",
    params(("file" = String, Path, description = "`runner`, `credentials` or `credentials_rsaparams`")),
    responses(
        (status = 200, description = "The file's content, decoded", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "Not one of the three files", body = hangar_api::ErrorBody),
        (status = 401, body = hangar_api::ErrorBody),
        (status = 404, description = "This instance bootstraps with a registration token", body = hangar_api::ErrorBody),
        (status = 409, description = "Already fetched (this file, or the whole config)", body = hangar_api::ErrorBody),
    ),
    security(("instance_token" = [])))]
pub async fn jit_credentials_file(
    State(s): State<AppState>,
    auth: InstanceAuth,
    Path(file): Path<String>,
) -> ApiResult<Response> {
    let file = JitFile::parse(&file)
        .map_err(|e| ApiError::bad_request("unknown JIT file").with_details(e.to_string()))?;
    if !auth.has_jit_config {
        return Err(ApiError::not_found(
            "this instance has no JIT config; use /api/v1/metadata/runner-registration-token",
        ));
    }
    let content = s.store.take_jit_file(&auth.instance.name, file).await?;
    tracing::info!(instance.name = %auth.instance.name, file = file.file_name(), "JIT file handed out");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename={}", file.file_name()),
            ),
        ],
        content,
    )
        .into_response())
}

/// The name of the runner's systemd service, without `.service`.
#[utoipa::path(get, path = "/api/v1/metadata/system/service-name", tag = "instances",
    responses(
        (status = 200, description = "`actions.runner.<owner>[.<repo>]`", body = String, content_type = "text/plain"),
        (status = 401, body = hangar_api::ErrorBody),
    ),
    security(("instance_token" = [])))]
pub async fn service_name(State(s): State<AppState>, auth: InstanceAuth) -> ApiResult<String> {
    let target = forge_target(&s, &auth.instance).await?;
    Ok(service_name_for(&target))
}

fn service_name_for(target: &ForgeTarget) -> String {
    use hangar_core::EntityScope;
    match &target.scope {
        EntityScope::Repository { owner, name } => format!("actions.runner.{owner}.{name}"),
        EntityScope::Organization { name } => format!("actions.runner.{name}"),
        EntityScope::Enterprise { slug } => format!("actions.runner.{slug}"),
    }
}

/// The `runAsUser` query of the unit-file route.
#[derive(Debug, serde::Deserialize)]
pub struct UnitFileQuery {
    #[serde(rename = "runAsUser", default)]
    run_as_user: Option<String>,
}

/// A systemd unit that runs the runner from `/home/<runAsUser>/actions-runner`.
#[utoipa::path(get, path = "/api/v1/metadata/systemd/unit-file", tag = "instances",
    params(("runAsUser" = Option<String>, Query, description = "The user the runner runs as (default `runner`)")),
    responses(
        (status = 200, description = "The unit file", body = String, content_type = "text/plain"),
        (status = 400, description = "Not a valid user name", body = hangar_api::ErrorBody),
        (status = 401, body = hangar_api::ErrorBody),
    ),
    security(("instance_token" = [])))]
pub async fn systemd_unit_file(
    State(s): State<AppState>,
    auth: InstanceAuth,
    query: Result<Query<UnitFileQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<String> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request("invalid query").with_details(e.body_text()))?;
    let user = q.run_as_user.filter(|u| !u.is_empty());
    let user = user.as_deref().unwrap_or("runner");
    if !valid_user_name(user) {
        return Err(ApiError::bad_request("runAsUser is not a valid user name")
            .with_details("expected [a-z_][a-z0-9_-]*, at most 32 characters"));
    }
    let pool = s.store.pool(auth.instance.pool_id).await?;
    let target = s.store.forge_target(pool.entity_id).await?;
    let proxy = instance_proxy(&s, &pool);
    Ok(unit_file(&service_name_for(&target), user, &proxy))
}

fn valid_user_name(user: &str) -> bool {
    let mut chars = user.chars();
    user.len() <= 32
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The proxy the instance was created with: the pool's, else its provider's.
fn instance_proxy(s: &AppState, pool: &Pool) -> ProxySettings {
    let own = pool.spec.proxy().unwrap_or_default();
    match s.providers.get(pool.spec.provider_name.as_str()) {
        Some(entry) => own.or(&entry.proxy),
        None => own,
    }
}

fn unit_file(service: &str, user: &str, proxy: &ProxySettings) -> String {
    // systemd expands `%` specifiers, even in Environment=.
    let esc = |v: &str| v.replace('%', "%%").replace('"', "\\\"");
    let mut env = String::new();
    for (names, value) in [
        (["HTTP_PROXY", "http_proxy"], &proxy.http_proxy),
        (["HTTPS_PROXY", "https_proxy"], &proxy.https_proxy),
        (["NO_PROXY", "no_proxy"], &proxy.no_proxy),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            for n in names {
                env.push_str(&format!("Environment=\"{n}={}\"\n", esc(v)));
            }
        }
    }
    let home = format!("/home/{user}/actions-runner");
    format!(
        "# Written by Hangar for a runner that takes one job and leaves.\n\
         [Unit]\n\
         Description=GitHub Actions runner ({service})\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         User={user}\n\
         WorkingDirectory={home}\n\
         ExecStart={home}/runsvc.sh\n\
         {env}\
         KillMode=process\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=5min\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// The CA certificates of the instance's GitHub endpoint.
#[utoipa::path(get, path = "/api/v1/metadata/system/cert-bundle", tag = "instances",
    responses(
        (status = 200, body = CertificateBundle),
        (status = 401, body = hangar_api::ErrorBody),
    ),
    security(("instance_token" = [])))]
pub async fn cert_bundle(
    State(s): State<AppState>,
    auth: InstanceAuth,
) -> ApiResult<axum::Json<CertificateBundle>> {
    let target = forge_target(&s, &auth.instance).await?;
    let root_certificates = target
        .endpoint
        .ca_bundle
        .as_deref()
        .map(certificates_by_serial)
        .unwrap_or_default();
    Ok(axum::Json(CertificateBundle { root_certificates }))
}

/// Each certificate of a PEM bundle, re-encoded as PEM and then base64,
/// keyed by its decimal serial number (as garm answers). A certificate
/// whose serial cannot be read is keyed by its position.
fn certificates_by_serial(pem: &str) -> std::collections::BTreeMap<String, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let b64 = &base64::engine::general_purpose::STANDARD;
    let mut out = std::collections::BTreeMap::new();
    let mut rest = pem;
    let mut n = 0;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let Some(end) = after.find(END) else { break };
        let body: String = after[..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        rest = &after[end + END.len()..];
        let Ok(der) = b64.decode(&body) else { continue };
        let mut wrapped = String::from(BEGIN);
        wrapped.push('\n');
        for line in body.as_bytes().chunks(64) {
            wrapped.push_str(std::str::from_utf8(line).unwrap_or_default());
            wrapped.push('\n');
        }
        wrapped.push_str(END);
        wrapped.push('\n');
        let key = der_serial_decimal(&der).unwrap_or_else(|| n.to_string());
        out.insert(key, b64.encode(wrapped));
        n += 1;
    }
    out
}

/// The serial number of a DER certificate, in decimal.
fn der_serial_decimal(der: &[u8]) -> Option<String> {
    // (tag, content) of the DER element at the start of `b`, and what follows.
    fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&len0, mut b) = b.split_first()?;
        let len = if len0 < 0x80 {
            usize::from(len0)
        } else {
            let n = usize::from(len0 & 0x7f);
            if n == 0 || n > 4 || b.len() < n {
                return None;
            }
            let (lb, rest) = b.split_at(n);
            b = rest;
            lb.iter()
                .fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
        };
        (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
    }
    let (0x30, cert, _) = element(der)? else {
        return None;
    };
    let (0x30, tbs, _) = element(cert)? else {
        return None;
    };
    let (mut tag, mut serial, rest) = element(tbs)?;
    if tag == 0xa0 {
        (tag, serial, _) = element(rest)?;
    }
    if tag != 0x02 || serial.is_empty() {
        return None;
    }
    // Big-endian unsigned to decimal by repeated division.
    let mut digits = Vec::new();
    let mut num: Vec<u8> = serial.to_vec();
    while num.iter().any(|&d| d != 0) {
        let mut rem = 0u32;
        for d in num.iter_mut() {
            let cur = (rem << 8) | u32::from(*d);
            *d = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).ok()
}

/// What the booting instance may learn about itself (garm's shape).
#[utoipa::path(get, path = "/api/v1/metadata/runner-metadata", tag = "instances",
    responses(
        (status = 200, body = RunnerMetadata),
        (status = 401, body = hangar_api::ErrorBody),
    ),
    security(("instance_token" = [])))]
pub async fn runner_metadata(
    State(s): State<AppState>,
    auth: InstanceAuth,
) -> ApiResult<axum::Json<RunnerMetadata>> {
    let inst = &auth.instance;
    let pool = s.store.pool(inst.pool_id).await?;
    let target = s.store.forge_target(pool.entity_id).await?;
    let urls = s.urls.get();
    let runner_labels = if auth.has_jit_config {
        Vec::new()
    } else {
        pool.runner_labels(s.store.controller_id()).to_vec()
    };
    let ca_bundles = target
        .endpoint
        .ca_bundle
        .iter()
        .map(|pem| {
            (
                "forge_ca".to_owned(),
                base64::engine::general_purpose::STANDARD.encode(pem.as_bytes()),
            )
        })
        .collect();
    // Tools are a convenience here: a GitHub hiccup leaves them empty
    // rather than failing the boot.
    let (os, arch) = (pool.spec.os_type.as_str(), pool.spec.os_arch.github_name());
    let runner_tools = match s.forge.runner_downloads(&target).await {
        Ok(tools) => tools
            .into_iter()
            .find(|t| t.os.eq_ignore_ascii_case(os) && t.architecture.eq_ignore_ascii_case(arch))
            .map(|t| RunnerTools {
                os: Some(t.os),
                architecture: Some(t.architecture),
                download_url: Some(t.download_url),
                filename: Some(t.filename),
                sha256_checksum: t.sha256_checksum,
            })
            .unwrap_or_default(),
        Err(e) => {
            tracing::warn!(instance.name = %inst.name, error = %e, "cannot list runner downloads");
            RunnerTools::default()
        }
    };
    Ok(axum::Json(RunnerMetadata {
        metadata_access: MetadataAccess {
            callback_url: urls.callback_url.clone(),
            metadata_url: urls.metadata_url.clone(),
            agent_url: String::new(),
        },
        forge_type: "github".into(),
        runner_registration_url: entity_web_url(&target.endpoint.base_url, &target.scope),
        runner_name: inst.name.to_string(),
        runner_labels,
        ca_bundles,
        extra_specs: pool.spec.provider_extra_specs(),
        agent_mode: false,
        jit_enabled: auth.has_jit_config,
        runner_tools,
    }))
}

/// A JSON body read whatever its `Content-Type`: garm's scripts post JSON
/// with `curl -d`, which labels it a form. Unreadable JSON is a 400.
#[derive(Debug)]
pub struct AnyJson<T>(pub T);

impl<S, T> FromRequest<S> for AnyJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::new(e.status(), "cannot read the request body").with_details(e.body_text())
        })?;
        serde_json::from_slice(&bytes)
            .map(AnyJson)
            .map_err(|e| ApiError::bad_request("invalid request body").with_details(e.to_string()))
    }
}

/// The instance reports its runner's progress.
#[utoipa::path(post, path = "/api/v1/callbacks/status", tag = "instances",
    request_body(content = StatusCallback, description = "JSON, whatever the Content-Type says"),
    responses(
        (status = 204),
        (status = 400, body = hangar_api::ErrorBody),
        (status = 401, body = hangar_api::ErrorBody),
        (status = 409, description = "Not a legal step from the runner's current status", body = hangar_api::ErrorBody),
    ),
    security(("instance_token" = [])))]
pub async fn status_callback(
    State(s): State<AppState>,
    auth: CallbackAuth,
    AnyJson(req): AnyJson<StatusCallback>,
) -> ApiResult<StatusCode> {
    let to = match req.status.as_str() {
        "installing" => RunnerStatus::Installing,
        "idle" => RunnerStatus::Idle,
        "failed" => RunnerStatus::Failed,
        "terminated" => RunnerStatus::Terminated,
        other => {
            return Err(ApiError::bad_request(format!(
                "status must be installing, idle, failed or terminated, got {other:?}"
            )));
        }
    };
    if !auth.instance.runner_status.is_bootstrapping() && to != RunnerStatus::Terminated {
        return Err(ApiError::forbidden(format!(
            "the runner is {}: the instance token may now only report terminated",
            auth.instance.runner_status
        )));
    }
    let message: Option<String> = req.message.map(|m| m.chars().take(500).collect());
    let name = &auth.instance.name;
    if let Some(agent_id) = req.agent_id.filter(|_| auth.instance.runner_id.is_none()) {
        s.store
            .record_system_info(name, None, None, Some(agent_id))
            .await?;
    }
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

/// The instance reports its OS and, once known, its GitHub runner id.
#[utoipa::path(post, path = "/api/v1/callbacks/system-info", tag = "instances",
    request_body(content = SystemInfoCallback, description = "JSON, whatever the Content-Type says"),
    responses(
        (status = 204),
        (status = 400, body = hangar_api::ErrorBody),
        (status = 401, body = hangar_api::ErrorBody),
    ),
    security(("instance_token" = [])))]
pub async fn system_info_callback(
    State(s): State<AppState>,
    auth: InstanceAuth,
    AnyJson(req): AnyJson<SystemInfoCallback>,
) -> ApiResult<StatusCode> {
    let clip = |v: Option<String>| {
        v.map(|v| v.chars().take(200).collect::<String>())
            .filter(|v| !v.trim().is_empty())
    };
    let (os_name, os_version) = (clip(req.os_name), clip(req.os_version));
    s.store
        .record_system_info(
            &auth.instance.name,
            os_name.as_deref(),
            os_version.as_deref(),
            req.agent_id.filter(|id| *id > 0),
        )
        .await?;
    tracing::info!(instance.name = %auth.instance.name, os.name = ?os_name, os.version = ?os_version, "system info");
    Ok(StatusCode::NO_CONTENT)
}

/// The instance routes again with a trailing slash, as garm serves them
/// (its scripts call some that way). Not in the OpenAPI document, which
/// lists each route once.
pub fn trailing_slash_routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/v1/metadata/jit-config/", get(jit_config))
        .route(
            "/api/v1/metadata/runner-registration-token/",
            get(registration_token),
        )
        .route(
            "/api/v1/metadata/credentials/{file}/",
            get(jit_credentials_file),
        )
        .route("/api/v1/metadata/system/service-name/", get(service_name))
        .route(
            "/api/v1/metadata/systemd/unit-file/",
            get(systemd_unit_file),
        )
        .route("/api/v1/metadata/system/cert-bundle/", get(cert_bundle))
        .route("/api/v1/metadata/runner-metadata/", get(runner_metadata))
        .route("/api/v1/callbacks/status/", post(status_callback))
        .route("/api/v1/callbacks/system-info/", post(system_info_callback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_file_runs_the_runner_as_the_user_with_proxies_escaped() {
        let proxy = ProxySettings {
            http_proxy: Some("http://p:3128".into()),
            https_proxy: None,
            no_proxy: Some("10.%d".into()),
        };
        let unit = unit_file("actions.runner.octo.app", "ci", &proxy);
        assert!(unit.contains("User=ci\n"), "{unit}");
        assert!(unit.contains("WorkingDirectory=/home/ci/actions-runner\n"));
        assert!(unit.contains("ExecStart=/home/ci/actions-runner/runsvc.sh\n"));
        assert!(unit.contains("Environment=\"HTTP_PROXY=http://p:3128\"\n"));
        assert!(unit.contains("Environment=\"no_proxy=10.%%d\"\n"));
        assert!(!unit.contains("HTTPS_PROXY"));
        assert!(unit.contains("[Install]\nWantedBy=multi-user.target\n"));
        assert!(valid_user_name("runner") && valid_user_name("_ci-1"));
        assert!(!valid_user_name("Root") && !valid_user_name("a b") && !valid_user_name("../x"));
    }

    #[test]
    fn serial_numbers_read_from_der() {
        // SEQUENCE { SEQUENCE { [0] { INTEGER 2 }, INTEGER 0x0100 } }
        let der = [
            0x30, 0x0b, 0x30, 0x09, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x02, 0x01, 0x00,
        ];
        assert_eq!(der_serial_decimal(&der).as_deref(), Some("256"));
        // Without the version: INTEGER 0x00ff ff ff ff ff ff ff ff (2^64 - 1).
        let der = [
            0x30, 0x0d, 0x30, 0x0b, 0x02, 0x09, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff,
        ];
        assert_eq!(
            der_serial_decimal(&der).as_deref(),
            Some("18446744073709551615")
        );
        assert_eq!(der_serial_decimal(&[0x30, 0x05]), None);

        let b64 = &base64::engine::general_purpose::STANDARD;
        let pem = format!(
            "junk\n-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            b64.encode([
                0x30, 0x0b, 0x30, 0x09, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x02, 0x01, 0x00
            ])
        );
        let map = certificates_by_serial(&pem);
        let decoded = String::from_utf8(b64.decode(&map["256"]).unwrap()).unwrap();
        assert!(
            decoded.starts_with("-----BEGIN CERTIFICATE-----\n"),
            "{decoded}"
        );
    }
}
