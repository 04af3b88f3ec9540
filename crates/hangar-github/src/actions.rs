//! `ActionsClient`: the `ActionsService` (runner scale sets) over HTTP.
//!
//! Two hosts are involved. The REST API gives a registration token (through
//! the [`Forge`], so PAT and GitHub App credentials, and their rate limits,
//! are handled in one place) and exchanges it at
//! `POST {api}/actions/runner-registration` (`Authorization: RemoteAuth`)
//! for the Actions service's URL and an admin token (a JWT). That pair is
//! cached per target and fetched again a minute before the JWT's `exp`, and
//! after the service answers 401. Everything else goes to the Actions
//! service: scale sets, runner groups, sessions, acquiring jobs, JIT
//! configs and runners with the admin token; the message queue (long poll,
//! acknowledge) and `acquirejobs` with the session's queue token, whose
//! expiry is the caller's to handle (refresh the session).
//!
//! Requests go through the same transport as the REST calls (`transport`:
//! proxies, the endpoint's CA bundle, rustls). Idempotent calls are retried
//! a few times after a transient failure; creating anything is sent once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hangar_core::actions::{
    ActionsService, MessageSession, RemoteScaleSet, ScaleSetJob, ScaleSetJobEvent, ScaleSetMessage,
    ScaleSetRequest, ScaleSetRunner, ScaleSetStatistics,
};
use hangar_core::entity::CredentialsAuth;
use hangar_core::forge::JitConfig;
use hangar_core::{EntityScope, Forge, ForgeError, ForgeTarget, Secret};
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::config::GitHubConfig;
use crate::limits::jittered;
use crate::transport::{self, Proxies};

/// The Actions service's API version, on every request to it.
pub const API_VERSION: &str = "6.0-preview";
/// The header a long poll tells the service how many jobs this scale set
/// could take now.
pub const MAX_CAPACITY_HEADER: &str = "X-ScaleSetMaxCapacity";
const SCALE_SETS: &str = "_apis/runtime/runnerscalesets";
const RUNNER_GROUPS: &str = "_apis/runtime/runnergroups/";
const AGENTS: &str = "_apis/distributedtask/pools/0/agents";
/// The admin token is replaced this long before its `exp`.
const REFRESH_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// How long one long poll may take, end to end (the service holds it for
/// about 50 seconds).
const POLL_TIMEOUT: Duration = Duration::from_secs(90);

type HttpClient = hyper_util::client::legacy::Client<
    hyper_timeout::TimeoutConnector<hyper_rustls::HttpsConnector<transport::ProxyConnector>>,
    Full<Bytes>,
>;

/// The Actions service of one target, as the registration exchange gave it.
#[derive(Debug, Clone)]
struct Admin {
    url: String,
    token: Secret,
    expires_at: DateTime<Utc>,
}

/// One target's admin connection; the async lock makes concurrent callers
/// wait for a single exchange rather than each making one.
#[derive(Debug, Default)]
struct AdminSlot {
    admin: tokio::sync::Mutex<Option<Admin>>,
}

/// GitHub's runner scale set API over HTTP. One per daemon.
#[derive(Debug)]
pub struct ActionsClient {
    config: GitHubConfig,
    forge: Arc<dyn Forge>,
    proxies: Arc<Proxies>,
    /// Per CA bundle (hash): the HTTP client.
    http: Mutex<HashMap<String, HttpClient>>,
    /// Per target (endpoint, credentials, scope): the admin connection.
    admins: Mutex<HashMap<String, Arc<AdminSlot>>>,
    /// Per message queue host: the CA bundle of the endpoint whose session
    /// named it (a long poll is given only the session).
    queue_ca: Mutex<HashMap<String, Option<String>>>,
    /// Admin exchanges made, for tests and metrics.
    exchanges: std::sync::atomic::AtomicU64,
}

/// An answer the service gave.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, ForgeError> {
        // The service may start a body with a UTF-8 byte order mark.
        let body = self
            .body
            .strip_prefix(b"\xef\xbb\xbf")
            .unwrap_or(&self.body);
        serde_json::from_slice(body).map_err(|e| {
            ForgeError::Fatal(format!(
                "unexpected {what} answer from the Actions service: {e}"
            ))
        })
    }

    /// The service's exception (`typeName`, `message`), or the raw text.
    fn exception(&self) -> (String, String) {
        #[derive(Deserialize)]
        struct Exc {
            #[serde(rename = "typeName")]
            type_name: Option<String>,
            message: Option<String>,
        }
        let body = self
            .body
            .strip_prefix(b"\xef\xbb\xbf")
            .unwrap_or(&self.body);
        match serde_json::from_slice::<Exc>(body) {
            Ok(e) if e.type_name.is_some() || e.message.is_some() => (
                e.type_name.unwrap_or_default(),
                e.message.unwrap_or_default(),
            ),
            _ => (
                String::new(),
                String::from_utf8_lossy(body).chars().take(200).collect(),
            ),
        }
    }

    /// Maps a non-success answer to an error kind.
    fn error(&self, what: &str) -> ForgeError {
        let (type_name, message) = self.exception();
        let msg = if type_name.is_empty() {
            format!("{what}: HTTP {}: {message}", self.status.as_u16())
        } else {
            format!(
                "{what}: HTTP {}: {type_name}: {message}",
                self.status.as_u16()
            )
        };
        // The exception names are more precise than the statuses.
        if type_name.contains("AgentExistsException") {
            return ForgeError::AlreadyExists(msg);
        }
        if type_name.contains("AgentNotFoundException") {
            return ForgeError::NotFound(msg);
        }
        if type_name.contains("JobStillRunningException") {
            return ForgeError::Busy(msg);
        }
        match self.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ForgeError::Unauthorized(msg),
            StatusCode::NOT_FOUND => ForgeError::NotFound(msg),
            StatusCode::CONFLICT => ForgeError::AlreadyExists(msg),
            StatusCode::TOO_MANY_REQUESTS => ForgeError::RateLimited {
                retry_after: self
                    .headers
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(Duration::from_secs(60), Duration::from_secs),
                message: msg,
            },
            StatusCode::REQUEST_TIMEOUT => ForgeError::Transient(msg),
            s if s.is_server_error() => ForgeError::Transient(msg),
            _ => ForgeError::Fatal(msg),
        }
    }
}

/// The web URL of a target's entity, as the registration exchange wants
/// it (`https://github.com/octo/app`, `…/octo`, `…/enterprises/acme`).
pub fn entity_url(target: &ForgeTarget) -> String {
    let base = target.endpoint.base_url.trim_end_matches('/');
    match &target.scope {
        EntityScope::Repository { owner, name } => format!("{base}/{owner}/{name}"),
        EntityScope::Organization { name } => format!("{base}/{name}"),
        EntityScope::Enterprise { slug } => format!("{base}/enterprises/{slug}"),
    }
}

/// The `exp` of a JWT, read without verifying it (the service verifies
/// its own tokens; Hangar only needs to know when to fetch another).
pub fn jwt_expiry(token: &str) -> Option<DateTime<Utc>> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = v.get("exp")?.as_i64()?;
    DateTime::from_timestamp(exp, 0)
}

/// Percent-encodes a query value.
fn q(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// Joins the service URL and a path, adding `api-version` unless given.
fn service_url(base: &str, path: &str) -> String {
    let mut u = format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    if !u.contains("api-version=") {
        u.push(if u.contains('?') { '&' } else { '?' });
        u.push_str("api-version=");
        u.push_str(API_VERSION);
    }
    u
}

fn bearer(token: &Secret) -> Result<HeaderValue, ForgeError> {
    let mut v = HeaderValue::try_from(format!("Bearer {}", token.expose()))
        .map_err(|_| ForgeError::Fatal("a token is not a valid header value".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

// ---- wire shapes (the Actions service's JSON) ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LabelBody {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RunnerSettingBody {
    #[serde(default)]
    disable_update: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScaleSetBody {
    id: i64,
    name: String,
    #[serde(default)]
    runner_group_id: i64,
    runner_group_name: Option<String>,
    #[serde(default)]
    labels: Vec<LabelBody>,
    #[serde(rename = "RunnerSetting", default)]
    runner_setting: Option<RunnerSettingBody>,
}

impl From<ScaleSetBody> for RemoteScaleSet {
    fn from(b: ScaleSetBody) -> Self {
        RemoteScaleSet {
            id: b.id,
            name: b.name,
            runner_group_id: b.runner_group_id,
            runner_group_name: b.runner_group_name.filter(|n| !n.is_empty()),
            labels: b.labels.into_iter().map(|l| l.name).collect(),
            disable_update: b.runner_setting.unwrap_or_default().disable_update,
        }
    }
}

#[derive(Deserialize)]
struct ListBody<T> {
    #[serde(default)]
    count: i64,
    #[serde(default = "Vec::new")]
    value: Vec<T>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase", default)]
struct StatisticsBody {
    total_available_jobs: i64,
    total_acquired_jobs: i64,
    total_assigned_jobs: i64,
    total_running_jobs: i64,
    total_registered_runners: i64,
    total_busy_runners: i64,
    total_idle_runners: i64,
}

impl From<StatisticsBody> for ScaleSetStatistics {
    fn from(s: StatisticsBody) -> Self {
        ScaleSetStatistics {
            total_available_jobs: s.total_available_jobs,
            total_acquired_jobs: s.total_acquired_jobs,
            total_assigned_jobs: s.total_assigned_jobs,
            total_running_jobs: s.total_running_jobs,
            total_registered_runners: s.total_registered_runners,
            total_busy_runners: s.total_busy_runners,
            total_idle_runners: s.total_idle_runners,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionBody {
    session_id: String,
    #[serde(default)]
    owner_name: String,
    message_queue_url: String,
    message_queue_access_token: String,
    statistics: Option<StatisticsBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageBody {
    message_id: i64,
    message_type: String,
    #[serde(default)]
    body: Option<String>,
    statistics: Option<StatisticsBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobMessageBody {
    message_type: String,
    #[serde(default)]
    runner_request_id: i64,
    #[serde(default)]
    repository_name: String,
    #[serde(default)]
    owner_name: String,
    #[serde(default)]
    job_id: String,
    #[serde(default)]
    job_display_name: Option<String>,
    #[serde(default)]
    workflow_run_id: Option<i64>,
    #[serde(default)]
    request_labels: Option<Vec<String>>,
    #[serde(default)]
    queue_time: Option<DateTime<Utc>>,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    runner_id: Option<i64>,
    #[serde(default)]
    runner_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunnerRefBody {
    id: i64,
    name: String,
    #[serde(default)]
    runner_scale_set_id: i64,
}

impl From<RunnerRefBody> for ScaleSetRunner {
    fn from(r: RunnerRefBody) -> Self {
        ScaleSetRunner {
            id: r.id,
            name: r.name,
            scale_set_id: r.runner_scale_set_id,
        }
    }
}

fn authority(url: &str) -> Option<String> {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_owned()))
}

fn session_from(b: SessionBody, scale_set_id: i64) -> MessageSession {
    MessageSession {
        session_id: b.session_id,
        owner_name: b.owner_name,
        scale_set_id,
        message_queue_url: b.message_queue_url,
        message_queue_access_token: Secret::new(b.message_queue_access_token),
        statistics: b.statistics.map(Into::into),
    }
}

/// Parses a long poll's 200 body (`RunnerScaleSetJobMessages`, whose
/// `body` is a JSON string holding the array of job messages). Another
/// message type is returned without events, so the caller acknowledges it
/// and moves on; unknown job message types are skipped.
pub fn parse_message(bytes: &[u8]) -> Result<ScaleSetMessage, ForgeError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let m: MessageBody = serde_json::from_slice(bytes).map_err(|e| {
        ForgeError::Fatal(format!("unexpected message from the Actions service: {e}"))
    })?;
    let mut out = ScaleSetMessage {
        message_id: m.message_id,
        statistics: m.statistics.map(Into::into),
        events: Vec::new(),
    };
    if m.message_type != "RunnerScaleSetJobMessages" {
        tracing::warn!(message.id = m.message_id, message.kind = %m.message_type, "skipping a message of an unknown type");
        return Ok(out);
    }
    let Some(body) = m.body.filter(|b| !b.trim().is_empty()) else {
        return Ok(out);
    };
    let jobs: Vec<JobMessageBody> = serde_json::from_str(&body).map_err(|e| {
        ForgeError::Fatal(format!(
            "message {}: the job messages do not parse: {e}",
            m.message_id
        ))
    })?;
    for j in jobs {
        let job = ScaleSetJob {
            runner_request_id: j.runner_request_id,
            repository: if j.owner_name.is_empty() {
                j.repository_name.clone()
            } else {
                format!("{}/{}", j.owner_name, j.repository_name)
            },
            job_id: j.job_id,
            job_display_name: j.job_display_name.filter(|n| !n.is_empty()),
            workflow_run_id: j.workflow_run_id.filter(|id| *id != 0),
            request_labels: j.request_labels.unwrap_or_default(),
            // Go's zero time stands for "not set".
            queue_time: j.queue_time.filter(|t| t.timestamp() > 0),
        };
        let event = match j.message_type.as_str() {
            "JobAvailable" => ScaleSetJobEvent::Available { job },
            "JobAssigned" => ScaleSetJobEvent::Assigned { job },
            "JobStarted" => ScaleSetJobEvent::Started {
                job,
                runner_id: j.runner_id.unwrap_or_default(),
                runner_name: j.runner_name.unwrap_or_default(),
            },
            "JobCompleted" => ScaleSetJobEvent::Completed {
                job,
                result: j.result.unwrap_or_default(),
                runner_id: j.runner_id.unwrap_or_default(),
                runner_name: j.runner_name.unwrap_or_default(),
            },
            other => {
                tracing::debug!(
                    message.id = m.message_id,
                    job_message.kind = other,
                    "skipping a job message of an unknown type"
                );
                continue;
            }
        };
        out.events.push(event);
    }
    Ok(out)
}

impl ActionsClient {
    /// `forge` supplies registration tokens (PAT or App credentials);
    /// `config` the transport settings (proxy, request timeout, retries).
    pub fn new(config: GitHubConfig, forge: Arc<dyn Forge>) -> Self {
        Self {
            proxies: Arc::new(Proxies::new(&config.proxy)),
            config,
            forge,
            http: Mutex::default(),
            admins: Mutex::default(),
            queue_ca: Mutex::default(),
            exchanges: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many registration exchanges (admin tokens fetched) were made.
    pub fn admin_exchanges(&self) -> u64 {
        self.exchanges.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Remembers which CA bundle the session's queue host needs.
    fn note_queue(&self, target: &ForgeTarget, session: &MessageSession) {
        if let Some(host) = authority(&session.message_queue_url) {
            self.queue_ca
                .lock()
                .expect("queue_ca lock")
                .insert(host, target.endpoint.ca_bundle.clone());
        }
    }

    fn queue_ca(&self, url: &str) -> Option<String> {
        let host = authority(url)?;
        self.queue_ca
            .lock()
            .expect("queue_ca lock")
            .get(&host)
            .cloned()
            .flatten()
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.config.request_timeout_secs.max(1))
    }

    fn http(&self, ca_bundle: Option<&str>) -> Result<HttpClient, ForgeError> {
        let key = hex::encode(sha2::Sha256::digest(ca_bundle.unwrap_or("").as_bytes()));
        if let Some(c) = self.http.lock().expect("http lock").get(&key) {
            return Ok(c.clone());
        }
        // The connector's own timeouts are the long poll's; each request is
        // bounded by its own timeout on top.
        let connector = transport::connector(self.proxies.clone(), ca_bundle, POLL_TIMEOUT)
            .map_err(ForgeError::Fatal)?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        self.http
            .lock()
            .expect("http lock")
            .insert(key, client.clone());
        Ok(client)
    }

    /// The cache key of a target: endpoint, credentials (a digest of their
    /// secret, so changed credentials get a new admin token) and scope.
    fn target_key(target: &ForgeTarget) -> String {
        let mut h = sha2::Sha256::new();
        h.update(target.endpoint.api_base_url.as_bytes());
        h.update(target.endpoint.base_url.as_bytes());
        match &target.credentials.auth {
            CredentialsAuth::Pat { token } => h.update(token.expose().as_bytes()),
            CredentialsAuth::App {
                app_id,
                installation_id,
                private_key,
            } => {
                h.update(app_id.to_le_bytes());
                h.update(installation_id.to_le_bytes());
                h.update(private_key.expose().as_bytes());
            }
        }
        format!(
            "{}|{}|{}",
            target.credentials.name,
            entity_url(target),
            hex::encode(h.finalize())
        )
    }

    /// Sends one request; network failures and timeouts are `Transient`.
    async fn send(
        &self,
        ca_bundle: Option<&str>,
        method: Method,
        url: &str,
        headers: Vec<(header::HeaderName, HeaderValue)>,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Answer, ForgeError> {
        let client = self.http(ca_bundle)?;
        let uri: http::Uri = url
            .parse()
            .map_err(|e| ForgeError::Fatal(format!("invalid URL {url:?}: {e}")))?;
        let mut req = http::Request::builder().method(method.clone()).uri(&uri);
        let h = req.headers_mut().expect("fresh builder");
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("hangar/", env!("CARGO_PKG_VERSION"))),
        );
        if body.is_some() {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        for (k, v) in headers {
            h.insert(k, v);
        }
        if uri.scheme_str() == Some("http")
            && let Some(auth) = self
                .proxies
                .intercept(&uri)
                .and_then(|p| p.basic_auth().cloned())
        {
            h.insert(header::PROXY_AUTHORIZATION, auth);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ForgeError::Fatal(format!("{method} {url}: {e}")))?;
        let what = format!("{method} {}", uri.path());
        let fut = async {
            let resp = client
                .request(req)
                .await
                .map_err(|e| ForgeError::Transient(format!("{what}: {}", chain(&e))))?;
            let (parts, b) = resp.into_parts();
            let body = b
                .collect()
                .await
                .map_err(|e| ForgeError::Transient(format!("{what}: reading the answer: {e}")))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ForgeError::Transient(format!(
                "{what}: no answer within {} s",
                timeout.as_secs()
            ))),
        }
    }

    /// The registration exchange: a registration token from the REST API,
    /// traded for the Actions service URL and an admin token.
    async fn exchange(&self, target: &ForgeTarget) -> Result<Admin, ForgeError> {
        #[derive(Deserialize)]
        struct Body {
            url: Option<String>,
            token: Option<String>,
        }
        let reg = self.forge.registration_token(target).await?;
        let url = format!(
            "{}/actions/runner-registration",
            target.endpoint.api_base_url.trim_end_matches('/')
        );
        let mut auth = HeaderValue::try_from(format!("RemoteAuth {}", reg.token.expose()))
            .map_err(|_| {
                ForgeError::Fatal("the registration token is not a header value".into())
            })?;
        auth.set_sensitive(true);
        let body = serde_json::to_vec(&json!({
            "url": entity_url(target),
            "runner_event": "register",
        }))
        .expect("serialises");
        let a = self
            .send(
                target.endpoint.ca_bundle.as_deref(),
                Method::POST,
                &url,
                vec![(header::AUTHORIZATION, auth)],
                Some(body),
                self.request_timeout(),
            )
            .await?;
        if !a.status.is_success() {
            return Err(a.error("runner registration (Actions service admin token)"));
        }
        let b: Body = a.json("runner registration")?;
        let (Some(url), Some(token)) = (
            b.url.filter(|u| !u.is_empty()),
            b.token.filter(|t| !t.is_empty()),
        ) else {
            return Err(ForgeError::Fatal(
                "runner registration: the answer has no Actions service url or token".into(),
            ));
        };
        let expires_at = jwt_expiry(&token).ok_or_else(|| {
            ForgeError::Fatal("runner registration: the admin token is not a JWT with exp".into())
        })?;
        self.exchanges
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(entity = %entity_url(target), expires_at = %expires_at, "Actions service admin token");
        Ok(Admin {
            url,
            token: Secret::new(token),
            expires_at,
        })
    }

    fn slot(&self, target: &ForgeTarget) -> Arc<AdminSlot> {
        self.admins
            .lock()
            .expect("admins lock")
            .entry(Self::target_key(target))
            .or_default()
            .clone()
    }

    /// The target's admin connection, fetched when missing, near expiry,
    /// or when `stale` (the token the service just refused) is the cached
    /// one.
    async fn admin(
        &self,
        target: &ForgeTarget,
        stale: Option<&Secret>,
    ) -> Result<Admin, ForgeError> {
        let slot = self.slot(target);
        let mut guard = slot.admin.lock().await;
        if let Some(a) = guard.as_ref() {
            let refused = stale.is_some_and(|s| s.expose() == a.token.expose());
            if !refused && a.expires_at - REFRESH_MARGIN > Utc::now() {
                return Ok(a.clone());
            }
        }
        let fresh = self.exchange(target).await?;
        *guard = Some(fresh.clone());
        Ok(fresh)
    }

    /// One call to the Actions service with the admin token (or, for
    /// `acquirejobs`, with `token` instead). A 401 fetches a new admin token
    /// and tries once more; idempotent calls are retried after transient
    /// failures.
    async fn call(
        &self,
        target: &ForgeTarget,
        method: Method,
        path: &str,
        body: Option<Value>,
        idempotent: bool,
        token: Option<&Secret>,
    ) -> Result<Answer, ForgeError> {
        let body = body.map(|b| serde_json::to_vec(&b).expect("serialises"));
        let mut admin = self.admin(target, None).await?;
        let mut refreshed = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let url = service_url(&admin.url, path);
            let auth = bearer(token.unwrap_or(&admin.token))?;
            let r = self
                .send(
                    target.endpoint.ca_bundle.as_deref(),
                    method.clone(),
                    &url,
                    vec![(header::AUTHORIZATION, auth)],
                    body.clone(),
                    self.request_timeout(),
                )
                .await;
            let e = match r {
                Ok(a) if a.status == StatusCode::UNAUTHORIZED && token.is_none() && !refreshed => {
                    refreshed = true;
                    admin = self.admin(target, Some(&admin.token)).await?;
                    continue;
                }
                Ok(a) if a.status.is_server_error() => a.error(&format!("{method} {path}")),
                Ok(a) => return Ok(a),
                Err(e) => e,
            };
            if idempotent && attempt <= self.config.max_retries {
                let wait = jittered(
                    attempt,
                    self.config.backoff_base(),
                    self.config.backoff_max(),
                );
                tracing::debug!(error = %e, retry_in_ms = wait.as_millis() as u64, "retrying an Actions service call");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(e);
        }
    }
}

/// An error with its causes.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

fn scale_set_body(req: &ScaleSetRequest) -> Value {
    let mut labels = vec![json!({"name": req.name, "type": "System"})];
    for l in &req.labels {
        if !l.eq_ignore_ascii_case(&req.name) {
            labels.push(json!({"name": l, "type": "System"}));
        }
    }
    json!({
        "name": req.name,
        "runnerGroupId": req.runner_group_id,
        "labels": labels,
        "RunnerSetting": {"disableUpdate": req.disable_update},
    })
}

#[async_trait]
impl ActionsService for ActionsClient {
    async fn runner_group_id(
        &self,
        target: &ForgeTarget,
        name: Option<&str>,
    ) -> Result<i64, ForgeError> {
        #[derive(Deserialize)]
        struct Group {
            id: i64,
            name: String,
        }
        // The default group is always id 1.
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Ok(1);
        };
        let path = format!("{RUNNER_GROUPS}?groupName={}", q(name));
        let a = self
            .call(target, Method::GET, &path, None, true, None)
            .await?;
        if !a.status.is_success() {
            return Err(a.error("get runner group"));
        }
        let list: ListBody<Group> = a.json("runner group list")?;
        match list.value.as_slice() {
            [g] => Ok(g.id),
            [] => Err(ForgeError::NotFound(format!(
                "runner group {name:?} does not exist"
            ))),
            many => many
                .iter()
                .find(|g| g.name == name)
                .map(|g| g.id)
                .ok_or_else(|| {
                    ForgeError::Fatal(format!(
                        "{} runner groups are named {name:?}",
                        list.count.max(many.len() as i64)
                    ))
                }),
        }
    }

    async fn find_scale_set(
        &self,
        target: &ForgeTarget,
        runner_group_id: i64,
        name: &str,
    ) -> Result<Option<RemoteScaleSet>, ForgeError> {
        let path = format!(
            "{SCALE_SETS}?runnerGroupId={runner_group_id}&name={}",
            q(name)
        );
        let a = self
            .call(target, Method::GET, &path, None, true, None)
            .await?;
        if !a.status.is_success() {
            return Err(a.error("find scale set"));
        }
        let list: ListBody<ScaleSetBody> = a.json("scale set list")?;
        let mut found: Vec<ScaleSetBody> = list.value;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop().map(Into::into)),
            n => Err(ForgeError::Fatal(format!(
                "{n} scale sets are named {name:?} in runner group {runner_group_id}"
            ))),
        }
    }

    async fn get_scale_set(
        &self,
        target: &ForgeTarget,
        scale_set_id: i64,
    ) -> Result<Option<RemoteScaleSet>, ForgeError> {
        let path = format!("{SCALE_SETS}/{scale_set_id}");
        let a = self
            .call(target, Method::GET, &path, None, true, None)
            .await?;
        match a.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let b: Option<ScaleSetBody> = a.json("scale set")?;
                Ok(b.map(Into::into))
            }
            _ => Err(a.error("get scale set")),
        }
    }

    async fn create_scale_set(
        &self,
        target: &ForgeTarget,
        req: &ScaleSetRequest,
    ) -> Result<RemoteScaleSet, ForgeError> {
        let a = self
            .call(
                target,
                Method::POST,
                SCALE_SETS,
                Some(scale_set_body(req)),
                false,
                None,
            )
            .await?;
        if !a.status.is_success() {
            return Err(a.error("create scale set"));
        }
        Ok(a.json::<ScaleSetBody>("scale set")?.into())
    }

    async fn update_scale_set(
        &self,
        target: &ForgeTarget,
        scale_set_id: i64,
        req: &ScaleSetRequest,
    ) -> Result<RemoteScaleSet, ForgeError> {
        let path = format!("{SCALE_SETS}/{scale_set_id}");
        // The same body again is the same update: safe to retry.
        let a = self
            .call(
                target,
                Method::PATCH,
                &path,
                Some(scale_set_body(req)),
                true,
                None,
            )
            .await?;
        if !a.status.is_success() {
            return Err(a.error("update scale set"));
        }
        Ok(a.json::<ScaleSetBody>("scale set")?.into())
    }

    async fn delete_scale_set(
        &self,
        target: &ForgeTarget,
        scale_set_id: i64,
    ) -> Result<(), ForgeError> {
        let path = format!("{SCALE_SETS}/{scale_set_id}");
        let a = self
            .call(target, Method::DELETE, &path, None, true, None)
            .await?;
        match a.status {
            StatusCode::NOT_FOUND => Ok(()),
            s if s.is_success() => Ok(()),
            _ => Err(a.error("delete scale set")),
        }
    }

    async fn create_session(
        &self,
        target: &ForgeTarget,
        scale_set_id: i64,
        owner_name: &str,
    ) -> Result<MessageSession, ForgeError> {
        let path = format!("{SCALE_SETS}/{scale_set_id}/sessions");
        let a = self
            .call(
                target,
                Method::POST,
                &path,
                Some(json!({"ownerName": owner_name})),
                false,
                None,
            )
            .await?;
        if !a.status.is_success() {
            return Err(a.error("create message session"));
        }
        let s = session_from(a.json("message session")?, scale_set_id);
        self.note_queue(target, &s);
        Ok(s)
    }

    async fn refresh_session(
        &self,
        target: &ForgeTarget,
        session: &MessageSession,
    ) -> Result<MessageSession, ForgeError> {
        let path = format!(
            "{SCALE_SETS}/{}/sessions/{}",
            session.scale_set_id,
            q(&session.session_id)
        );
        let a = self
            .call(target, Method::PATCH, &path, None, true, None)
            .await?;
        if !a.status.is_success() {
            return Err(a.error("refresh message session"));
        }
        let mut s = session_from(a.json("message session")?, session.scale_set_id);
        if s.owner_name.is_empty() {
            s.owner_name.clone_from(&session.owner_name);
        }
        self.note_queue(target, &s);
        Ok(s)
    }

    async fn delete_session(
        &self,
        target: &ForgeTarget,
        session: &MessageSession,
    ) -> Result<(), ForgeError> {
        let path = format!(
            "{SCALE_SETS}/{}/sessions/{}",
            session.scale_set_id,
            q(&session.session_id)
        );
        let a = self
            .call(target, Method::DELETE, &path, None, true, None)
            .await?;
        match a.status {
            StatusCode::NOT_FOUND => Ok(()),
            s if s.is_success() => Ok(()),
            _ => Err(a.error("delete message session")),
        }
    }

    async fn get_message(
        &self,
        session: &MessageSession,
        last_message_id: i64,
        max_capacity: u32,
    ) -> Result<Option<ScaleSetMessage>, ForgeError> {
        let mut url = url::Url::parse(&session.message_queue_url).map_err(|e| {
            ForgeError::Fatal(format!(
                "message queue URL {:?}: {e}",
                session.message_queue_url
            ))
        })?;
        if last_message_id > 0 {
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "lastMessageId")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.query_pairs_mut()
                .clear()
                .extend_pairs(kept)
                .append_pair("lastMessageId", &last_message_id.to_string());
        }
        let headers = vec![
            (
                header::ACCEPT,
                HeaderValue::from_static("application/json; api-version=6.0-preview"),
            ),
            (
                header::AUTHORIZATION,
                bearer(&session.message_queue_access_token)?,
            ),
            (
                header::HeaderName::from_static("x-scalesetmaxcapacity"),
                HeaderValue::from(max_capacity),
            ),
        ];
        let a = self
            .send(
                self.queue_ca(url.as_str()).as_deref(),
                Method::GET,
                url.as_str(),
                headers,
                None,
                POLL_TIMEOUT,
            )
            .await?;
        match a.status {
            StatusCode::ACCEPTED => Ok(None),
            StatusCode::OK => parse_message(&a.body).map(Some),
            _ => Err(a.error("get message")),
        }
    }

    async fn delete_message(
        &self,
        session: &MessageSession,
        message_id: i64,
    ) -> Result<(), ForgeError> {
        let mut url = url::Url::parse(&session.message_queue_url).map_err(|e| {
            ForgeError::Fatal(format!(
                "message queue URL {:?}: {e}",
                session.message_queue_url
            ))
        })?;
        let path = format!("{}/{message_id}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        let headers = vec![(
            header::AUTHORIZATION,
            bearer(&session.message_queue_access_token)?,
        )];
        let a = self
            .send(
                self.queue_ca(url.as_str()).as_deref(),
                Method::DELETE,
                url.as_str(),
                headers,
                None,
                self.request_timeout(),
            )
            .await?;
        match a.status {
            // Already gone: acknowledged before.
            StatusCode::NOT_FOUND => Ok(()),
            s if s.is_success() => Ok(()),
            _ => Err(a.error("delete message")),
        }
    }

    async fn acquire_jobs(
        &self,
        target: &ForgeTarget,
        session: &MessageSession,
        runner_request_ids: &[i64],
    ) -> Result<Vec<i64>, ForgeError> {
        if runner_request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let path = format!("{SCALE_SETS}/{}/acquirejobs", session.scale_set_id);
        // Acquiring the same ids again returns what this scale set holds:
        // safe to retry.
        let a = self
            .call(
                target,
                Method::POST,
                &path,
                Some(json!(runner_request_ids)),
                true,
                Some(&session.message_queue_access_token),
            )
            .await?;
        if !a.status.is_success() {
            return Err(a.error("acquire jobs"));
        }
        let list: ListBody<i64> = a.json("acquired jobs")?;
        Ok(list.value)
    }

    async fn generate_jit_config(
        &self,
        target: &ForgeTarget,
        scale_set_id: i64,
        runner_name: &str,
        work_folder: &str,
    ) -> Result<JitConfig, ForgeError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            runner: RunnerRefBody,
            #[serde(rename = "encodedJITConfig")]
            encoded_jit_config: String,
        }
        let path = format!("{SCALE_SETS}/{scale_set_id}/generatejitconfig");
        // Never retried: a retry after a lost answer would clash on the
        // name; the caller handles AlreadyExists.
        let a = self
            .call(
                target,
                Method::POST,
                &path,
                Some(json!({"name": runner_name, "workFolder": work_folder})),
                false,
                None,
            )
            .await?;
        if !a.status.is_success() {
            return Err(a.error("generate JIT config"));
        }
        let b: Body = a.json("JIT config")?;
        Ok(JitConfig {
            runner_id: b.runner.id,
            runner_name: b.runner.name,
            encoded_jit_config: Secret::new(b.encoded_jit_config),
        })
    }

    async fn get_runner_by_name(
        &self,
        target: &ForgeTarget,
        name: &str,
    ) -> Result<Option<ScaleSetRunner>, ForgeError> {
        let path = format!("{AGENTS}?agentName={}", q(name));
        let a = self
            .call(target, Method::GET, &path, None, true, None)
            .await?;
        if !a.status.is_success() {
            return Err(a.error("get runner by name"));
        }
        let mut list: ListBody<RunnerRefBody> = a.json("runner list")?;
        match list.value.len() {
            0 => Ok(None),
            1 => Ok(list.value.pop().map(Into::into)),
            n => Err(ForgeError::Fatal(format!("{n} runners are named {name:?}"))),
        }
    }

    async fn delete_runner(&self, target: &ForgeTarget, runner_id: i64) -> Result<(), ForgeError> {
        let path = format!("{AGENTS}/{runner_id}");
        let a = self
            .call(target, Method::DELETE, &path, None, true, None)
            .await?;
        match a.status {
            s if s.is_success() => Ok(()),
            _ => match a.error("delete runner") {
                ForgeError::NotFound(_) => Ok(()),
                e => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_body_is_a_json_string_of_job_messages() {
        let inner = json!([
            {"messageType": "JobAvailable", "runnerRequestId": 7, "ownerName": "octo", "repositoryName": "app",
             "jobId": "a-b", "jobDisplayName": "build", "workflowRunId": 9, "requestLabels": ["ss"],
             "queueTime": "2026-01-02T03:04:05Z", "acquireJobUrl": "x"},
            {"messageType": "JobCompleted", "runnerRequestId": 6, "ownerName": "octo", "repositoryName": "app",
             "jobId": "c", "result": "succeeded", "runnerId": 3, "runnerName": "r3",
             "queueTime": "0001-01-01T00:00:00Z"},
            {"messageType": "SomethingNew", "runnerRequestId": 5}
        ]);
        let body = json!({"messageId": 12, "messageType": "RunnerScaleSetJobMessages",
            "body": inner.to_string(), "statistics": {"totalAssignedJobs": 2}});
        let m = parse_message(body.to_string().as_bytes()).unwrap();
        assert_eq!(m.message_id, 12);
        assert_eq!(m.statistics.unwrap().total_assigned_jobs, 2);
        assert_eq!(m.events.len(), 2);
        let ScaleSetJobEvent::Available { job } = &m.events[0] else {
            panic!("{:?}", m.events[0])
        };
        assert_eq!(job.repository, "octo/app");
        assert_eq!(job.request_labels, ["ss"]);
        assert!(job.queue_time.is_some());
        let ScaleSetJobEvent::Completed {
            job,
            result,
            runner_name,
            ..
        } = &m.events[1]
        else {
            panic!("{:?}", m.events[1])
        };
        assert_eq!((result.as_str(), runner_name.as_str()), ("succeeded", "r3"));
        assert_eq!(job.queue_time, None);
    }

    #[test]
    fn other_message_types_have_no_events() {
        let m = parse_message(
            br#"{"messageId": 3, "messageType": "RunnerScaleSetSomething", "body": "{}"}"#,
        )
        .unwrap();
        assert!(m.events.is_empty());
        assert!(parse_message(b"not json").is_err());
    }

    #[test]
    fn jwt_exp_is_read() {
        use base64::Engine as _;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let t = format!(
            "{}.{}.sig",
            e.encode(br#"{"alg":"RS256"}"#),
            e.encode(br#"{"exp":1900000000}"#)
        );
        assert_eq!(jwt_expiry(&t).unwrap().timestamp(), 1_900_000_000);
        assert_eq!(jwt_expiry("opaque"), None);
    }

    #[test]
    fn service_urls_carry_the_api_version() {
        assert_eq!(
            service_url("https://x/tenant/", "_apis/runtime/runnerscalesets?name=a"),
            "https://x/tenant/_apis/runtime/runnerscalesets?name=a&api-version=6.0-preview"
        );
        assert_eq!(
            service_url("https://x/t", "/_apis/a"),
            "https://x/t/_apis/a?api-version=6.0-preview"
        );
    }
}
