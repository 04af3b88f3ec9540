//! `GitHubForge`: the `Forge` on GitHub.com and GHES.
//!
//! octocrab supplies authentication (PAT, or App JWT → installation tokens
//! that it caches and renews before they expire) and the HTTP transport.
//! Requests go through octocrab's raw methods rather than its typed
//! builders because the typed builders drop the response headers, and
//! `retry-after` / `x-ratelimit-*` are exactly what must be honoured. The
//! same routes serve repositories, organizations and enterprises. The
//! transport under octocrab is Hangar's own (`transport`: proxies, the
//! endpoint's CA bundle); octocrab's layers on top of it are the same ones
//! its default client uses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hangar_core::entity::CredentialsAuth;
use hangar_core::forge::{
    DeliveryPage, ForgeDelivery, ForgeHook, ForgeJob, ForgeRunner, HookRef, JitConfig, JitRequest,
    NewHook, RegistrationToken,
};
use hangar_core::provider::RunnerTool;
use hangar_core::{EntityScope, Forge, ForgeError, ForgeTarget, JobId, Secret};
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use octocrab::service::middleware::auth_header::AuthHeaderLayer;
use octocrab::service::middleware::base_uri::BaseUriLayer;
use octocrab::service::middleware::extra_headers::ExtraHeadersLayer;
use octocrab::{AuthState, OctoBody, Octocrab, OctocrabBuilder};
use serde::Deserialize;
use sha2::Digest as _;

use crate::config::GitHubConfig;
use crate::limits::{Denied, Limiter, RateHeaders, jittered};
use crate::transport::{self, Proxies};

/// Counters of one set of credentials, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialStats {
    pub credentials: String,
    pub calls: u64,
    pub errors: HashMap<&'static str, u64>,
    pub rate_limit_remaining: Option<u64>,
    pub rate_limit_limit: Option<u64>,
    pub rate_limit_reset: Option<u64>,
}

#[derive(Debug)]
struct Client {
    name: String,
    octo: Octocrab,
    /// The App itself (JWT), for `/app/...` routes; `None` for a PAT.
    app_octo: Option<Octocrab>,
    limiter: Mutex<Limiter>,
    stats: Mutex<CredentialStats>,
}

/// GitHub through octocrab. One per daemon; clients are cached per
/// credentials (and rebuilt when the credentials or endpoint change).
#[derive(Debug)]
pub struct GitHubForge {
    config: GitHubConfig,
    proxies: Arc<Proxies>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

/// An answer GitHub gave (any status).
struct Answer {
    status: StatusCode,
    body: Bytes,
}

impl Answer {
    fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, ForgeError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ForgeError::Fatal(format!("unexpected {what} answer from GitHub: {e}")))
    }

    fn message(&self) -> String {
        #[derive(Deserialize)]
        struct Msg {
            message: Option<String>,
        }
        serde_json::from_slice::<Msg>(&self.body)
            .ok()
            .and_then(|m| m.message)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(200)
                    .collect()
            })
    }

    /// Maps a non-success answer to an error kind.
    fn error(&self, what: &str) -> ForgeError {
        let msg = format!("{what}: HTTP {}: {}", self.status.as_u16(), self.message());
        match self.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ForgeError::Unauthorized(msg),
            StatusCode::NOT_FOUND => ForgeError::NotFound(msg),
            StatusCode::CONFLICT => ForgeError::AlreadyExists(msg),
            StatusCode::UNPROCESSABLE_ENTITY => ForgeError::Busy(msg),
            s if s.is_server_error() => ForgeError::Transient(msg),
            _ => ForgeError::Fatal(msg),
        }
    }
}

fn is_rate_limited(status: StatusCode, h: &RateHeaders, body: &[u8]) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && (h.retry_after.is_some()
                || h.remaining == Some(0)
                || String::from_utf8_lossy(body)
                    .to_ascii_lowercase()
                    .contains("rate limit")))
}

/// An error with its causes, so a refused certificate or an unreachable
/// proxy is named rather than hidden behind "client error (Connect)".
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

fn runners_base(scope: &EntityScope) -> String {
    match scope {
        EntityScope::Repository { owner, name } => format!("/repos/{owner}/{name}/actions/runners"),
        EntityScope::Organization { name } => format!("/orgs/{name}/actions/runners"),
        EntityScope::Enterprise { slug } => format!("/enterprises/{slug}/actions/runners"),
    }
}

/// Where an entity's webhooks live; enterprises have none in the REST API.
fn hooks_base(scope: &EntityScope) -> Result<String, ForgeError> {
    match scope {
        EntityScope::Repository { owner, name } => Ok(format!("/repos/{owner}/{name}/hooks")),
        EntityScope::Organization { name } => Ok(format!("/orgs/{name}/hooks")),
        EntityScope::Enterprise { .. } => Err(ForgeError::Fatal(
            "GitHub's REST API has no enterprise webhooks; create the hook by hand".into(),
        )),
    }
}

/// A webhook as `repos/list-webhooks` / `orgs/list-webhooks` return it.
#[derive(Deserialize)]
struct HookBody {
    id: i64,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    config: HookConfigBody,
}

#[derive(Deserialize, Default)]
struct HookConfigBody {
    url: Option<String>,
    /// A string (`"0"`/`"1"`) in GitHub's schema, a number on some GHES.
    insecure_ssl: Option<serde_json::Value>,
}

impl From<HookBody> for ForgeHook {
    fn from(h: HookBody) -> Self {
        let insecure_ssl = match h.config.insecure_ssl {
            Some(serde_json::Value::String(s)) => s == "1",
            Some(serde_json::Value::Number(n)) => n.as_i64() == Some(1),
            _ => false,
        };
        ForgeHook {
            id: h.id,
            url: h.config.url.unwrap_or_default(),
            events: h.events,
            active: h.active,
            insecure_ssl,
        }
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &http::HeaderMap) -> Option<String> {
    let link = headers.get(http::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, rel) = part.split_once(';')?;
        rel.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// The `cursor` query parameter of a URL (hook deliveries paginate by
/// cursor, named in the `Link` header). Kept as it appears there (still
/// URL-encoded): it is opaque and only ever sent back the same way.
fn cursor_of(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "cursor" && !v.is_empty()).then(|| v.to_owned())
    })
}

/// Where a hook's deliveries are listed: a repository's or organization's
/// hook, or the App's (`/app/hook/deliveries`, as the App itself).
fn deliveries_base(scope: &EntityScope, hook: HookRef) -> Result<(String, bool), ForgeError> {
    match hook {
        HookRef::App => Ok(("/app/hook/deliveries".into(), true)),
        HookRef::Entity { hook_id } => Ok((
            format!("{}/{hook_id}/deliveries", hooks_base(scope)?),
            false,
        )),
    }
}

/// A delivery as `repos/list-webhook-deliveries` (and its `orgs/`, `apps/`
/// twins) list it.
#[derive(Deserialize)]
struct DeliveryBody {
    id: i64,
    guid: String,
    delivered_at: DateTime<Utc>,
    #[serde(default)]
    redelivery: bool,
    #[serde(default)]
    status_code: i64,
    #[serde(default)]
    event: String,
    action: Option<String>,
}

impl From<DeliveryBody> for ForgeDelivery {
    fn from(d: DeliveryBody) -> Self {
        ForgeDelivery {
            id: d.id,
            guid: d.guid,
            delivered_at: d.delivered_at,
            redelivery: d.redelivery,
            status_code: d.status_code,
            event: d.event,
            action: d.action,
        }
    }
}

#[derive(Deserialize)]
struct RunnerLabel {
    name: String,
}

#[derive(Deserialize)]
struct RunnerBody {
    id: i64,
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    busy: bool,
    #[serde(default)]
    labels: Vec<RunnerLabel>,
}

impl From<RunnerBody> for ForgeRunner {
    fn from(r: RunnerBody) -> Self {
        ForgeRunner {
            id: r.id,
            name: r.name,
            status: r.status,
            busy: r.busy,
            labels: r.labels.into_iter().map(|l| l.name).collect(),
        }
    }
}

/// GitHub's job, tolerant: `requested`/`pending`/`waiting` statuses and
/// null fields are all accepted.
#[derive(Deserialize)]
struct JobBody {
    id: i64,
    run_attempt: Option<i64>,
    status: Option<String>,
    conclusion: Option<String>,
    #[serde(default)]
    labels: Option<Vec<String>>,
    runner_name: Option<String>,
    run_id: Option<i64>,
    name: Option<String>,
    created_at: Option<DateTime<Utc>>,
}

impl From<JobBody> for ForgeJob {
    fn from(b: JobBody) -> Self {
        ForgeJob {
            id: JobId(b.id),
            run_attempt: b.run_attempt,
            status: b.status.unwrap_or_default().into(),
            conclusion: b.conclusion,
            labels: b.labels.unwrap_or_default(),
            runner_name: b.runner_name,
            run_id: b.run_id,
            name: b.name,
            created_at: b.created_at,
        }
    }
}

impl GitHubForge {
    pub fn new(config: GitHubConfig) -> Self {
        Self {
            proxies: Arc::new(Proxies::new(&config.proxy)),
            config,
            clients: Mutex::default(),
        }
    }

    /// Per-credentials counters and the last rate-limit figures seen.
    pub fn stats(&self) -> Vec<CredentialStats> {
        let clients: Vec<Arc<Client>> = self
            .clients
            .lock()
            .expect("clients lock")
            .values()
            .cloned()
            .collect();
        let mut out: Vec<CredentialStats> = clients
            .iter()
            .map(|c| {
                let mut s = c.stats.lock().expect("stats lock").clone();
                let last = c.limiter.lock().expect("limiter lock").last;
                s.rate_limit_remaining = last.remaining;
                s.rate_limit_limit = last.limit;
                s.rate_limit_reset = last.reset;
                s
            })
            .collect();
        out.sort_by(|a, b| a.credentials.cmp(&b.credentials));
        out
    }

    fn client(&self, target: &ForgeTarget) -> Result<Arc<Client>, ForgeError> {
        let creds = &target.credentials;
        let mut h = sha2::Sha256::new();
        h.update(target.endpoint.api_base_url.as_bytes());
        h.update(
            target
                .endpoint
                .ca_bundle
                .as_deref()
                .unwrap_or("")
                .as_bytes(),
        );
        match &creds.auth {
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
        let key = format!("{}:{}", creds.name, hex::encode(h.finalize()));
        if let Some(c) = self.clients.lock().expect("clients lock").get(&key) {
            return Ok(c.clone());
        }
        let base = format!("{}/", target.endpoint.api_base_url.trim_end_matches('/'));
        let base_uri: http::Uri = base
            .parse()
            .map_err(|e| ForgeError::Fatal(format!("api_base_url {base:?}: {e}")))?;
        let timeout = Duration::from_secs(self.config.request_timeout_secs.max(1));
        let connector = transport::connector(
            self.proxies.clone(),
            target.endpoint.ca_bundle.as_deref(),
            timeout,
        )
        .map_err(|e| {
            ForgeError::Fatal(format!("endpoint {:?}: {e}", target.endpoint.name.as_str()))
        })?;
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        let (auth_header, auth_state) = match &creds.auth {
            CredentialsAuth::Pat { token } => {
                let mut v = http::HeaderValue::try_from(format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        ForgeError::Unauthorized(format!(
                            "credentials {:?}: the token is not a valid header value",
                            creds.name.as_str()
                        ))
                    })?;
                v.set_sensitive(true);
                (Some(v), AuthState::None)
            }
            CredentialsAuth::App {
                app_id,
                private_key,
                ..
            } => {
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key.expose().as_bytes())
                    .map_err(|e| {
                        ForgeError::Unauthorized(format!(
                            "credentials {:?}: the App private key is not a valid RSA PEM key: {e}",
                            creds.name.as_str()
                        ))
                    })?;
                (
                    None,
                    AuthState::App(octocrab::auth::AppAuth {
                        app_id: octocrab::models::AppId(*app_id as u64),
                        key,
                    }),
                )
            }
        };
        // Innermost first: a plain-http request to a forward proxy carries
        // the proxy's credentials; then the user agent, the base URI, and
        // (outermost, seeing the caller's relative path) the token.
        let proxies = self.proxies.clone();
        let octo = OctocrabBuilder::new_empty()
            .with_service(http)
            .with_layer(&tower::util::MapRequestLayer::new(
                move |mut req: http::Request<OctoBody>| {
                    if req.uri().scheme_str() == Some("http")
                        && let Some(auth) = proxies
                            .intercept(req.uri())
                            .and_then(|p| p.basic_auth().cloned())
                    {
                        req.headers_mut()
                            .insert(http::header::PROXY_AUTHORIZATION, auth);
                    }
                    req
                },
            ))
            .with_layer(&ExtraHeadersLayer::new(Arc::new(vec![(
                http::header::USER_AGENT,
                http::HeaderValue::from_static(concat!("hangar/", env!("CARGO_PKG_VERSION"))),
            )])))
            .with_layer(&BaseUriLayer::new(base_uri.clone()))
            .with_layer(&AuthHeaderLayer::new(
                auth_header,
                base_uri.clone(),
                base_uri,
            ))
            .with_auth(auth_state)
            .build()
            .map_err(|e| ForgeError::Fatal(format!("cannot build the GitHub client: {e}")))?;
        let (octo, app_octo) = match &creds.auth {
            CredentialsAuth::Pat { .. } => (octo, None),
            CredentialsAuth::App {
                installation_id, ..
            } => (
                octo.installation(octocrab::models::InstallationId(*installation_id as u64))
                    .map_err(|e| {
                        ForgeError::Fatal(format!("cannot build the App installation client: {e}"))
                    })?,
                Some(octo),
            ),
        };
        let client = Arc::new(Client {
            name: creds.name.to_string(),
            octo,
            app_octo,
            limiter: Mutex::new(Limiter::new(
                self.config.budget_per_hour,
                self.config.budget_burst,
            )),
            stats: Mutex::new(CredentialStats {
                credentials: creds.name.to_string(),
                ..Default::default()
            }),
        });
        let mut clients = self.clients.lock().expect("clients lock");
        // Forget clients of older versions of the same credentials.
        let prefix = format!("{}:", creds.name);
        clients.retain(|k, _| !k.starts_with(&prefix));
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn count_error(client: &Client, e: &ForgeError) {
        *client
            .stats
            .lock()
            .expect("stats lock")
            .errors
            .entry(e.kind())
            .or_default() += 1;
    }

    /// Sends one request, honouring rate limits. `idempotent` requests are
    /// retried (bounded, with backoff) after transient failures and short
    /// rate limits; others are sent once. Non-success answers that are not
    /// rate limits or 5xx are returned for the caller to interpret.
    #[tracing::instrument(skip_all, fields(credentials = %client.name, http.method = %method, http.path = %path))]
    async fn send(
        &self,
        client: &Client,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotent: bool,
        as_app: bool,
    ) -> Result<(Answer, http::HeaderMap), ForgeError> {
        let octo = if as_app {
            client.app_octo.as_ref().ok_or_else(|| {
                ForgeError::Fatal(format!(
                    "{method} {path}: needs GitHub App credentials (the App's own JWT)"
                ))
            })?
        } else {
            &client.octo
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let admitted = client.limiter.lock().expect("limiter lock").admit();
            if let Err(denied) = admitted {
                let wait = denied.wait();
                if wait > self.config.max_inline_wait() {
                    let e = ForgeError::RateLimited {
                        retry_after: wait,
                        message: match denied {
                            Denied::GitHub(_) => "GitHub asked to wait".into(),
                            Denied::Budget(_) => {
                                "the credentials' hourly call budget is spent".into()
                            }
                        },
                    };
                    Self::count_error(client, &e);
                    return Err(e);
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            client.stats.lock().expect("stats lock").calls += 1;
            let result = match method {
                Method::GET => octo._get(path).await,
                Method::POST => octo._post(path, body).await,
                Method::DELETE => octo._delete(path, None::<&()>).await,
                _ => return Err(ForgeError::Fatal(format!("unsupported method {method}"))),
            };
            let transient = match result {
                Err(e) => ForgeError::Transient(format!("{method} {path}: {}", chain(&e))),
                Ok(resp) => {
                    let (parts, b) = resp.into_parts();
                    let bytes = match b.collect().await {
                        Ok(c) => c.to_bytes(),
                        Err(e) => {
                            let e = ForgeError::Transient(format!(
                                "{method} {path}: reading the answer: {e}"
                            ));
                            Self::count_error(client, &e);
                            return Err(e);
                        }
                    };
                    let rate = RateHeaders::parse(&parts.headers);
                    if is_rate_limited(parts.status, &rate, &bytes) {
                        let wait = client.limiter.lock().expect("limiter lock").limited(
                            rate,
                            self.config.backoff_base(),
                            self.config.backoff_max(),
                        );
                        tracing::warn!(
                            wait_ms = wait.as_millis() as u64,
                            status = parts.status.as_u16(),
                            "GitHub rate limit"
                        );
                        if idempotent
                            && attempt <= self.config.max_retries
                            && wait <= self.config.max_inline_wait()
                        {
                            continue;
                        }
                        let e = ForgeError::RateLimited {
                            retry_after: wait,
                            message: format!("{method} {path}: HTTP {}", parts.status.as_u16()),
                        };
                        Self::count_error(client, &e);
                        return Err(e);
                    }
                    client.limiter.lock().expect("limiter lock").observe(rate);
                    let answer = Answer {
                        status: parts.status,
                        body: bytes,
                    };
                    if !parts.status.is_server_error() {
                        client.limiter.lock().expect("limiter lock").success();
                        return Ok((answer, parts.headers));
                    }
                    answer.error(&format!("{method} {path}"))
                }
            };
            if idempotent && attempt <= self.config.max_retries {
                let wait = jittered(
                    attempt,
                    self.config.backoff_base(),
                    self.config.backoff_max(),
                );
                tracing::debug!(error = %transient, retry_in_ms = wait.as_millis() as u64, "retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            Self::count_error(client, &transient);
            return Err(transient);
        }
    }

    async fn call(
        &self,
        target: &ForgeTarget,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotent: bool,
    ) -> Result<(Answer, http::HeaderMap), ForgeError> {
        self.call_as(target, method, path, body, idempotent, false)
            .await
    }

    /// [`Self::call`], as the GitHub App itself (its JWT) when `as_app`.
    async fn call_as(
        &self,
        target: &ForgeTarget,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotent: bool,
        as_app: bool,
    ) -> Result<(Answer, http::HeaderMap), ForgeError> {
        let client = self.client(target)?;
        let r = self
            .send(&client, method, path, body, idempotent, as_app)
            .await;
        if let Ok((a, _)) = &r
            && !a.status.is_success()
            && a.status != StatusCode::NOT_FOUND
        {
            Self::count_error(&client, &a.error(path));
        }
        r
    }
}

#[async_trait]
impl Forge for GitHubForge {
    async fn generate_jit_config(
        &self,
        target: &ForgeTarget,
        req: &JitRequest,
    ) -> Result<JitConfig, ForgeError> {
        #[derive(Deserialize)]
        struct Body {
            runner: RunnerBody,
            encoded_jit_config: String,
        }
        let path = format!("{}/generate-jitconfig", runners_base(&target.scope));
        let body = serde_json::json!({
            "name": req.name,
            "runner_group_id": req.runner_group_id,
            "labels": req.labels,
            "work_folder": req.work_folder,
        });
        // Never retried here: a retry after a lost answer would collide on
        // the runner name. The caller handles AlreadyExists deliberately.
        let (a, _) = self
            .call(target, Method::POST, &path, Some(&body), false)
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

    async fn registration_token(
        &self,
        target: &ForgeTarget,
    ) -> Result<RegistrationToken, ForgeError> {
        #[derive(Deserialize)]
        struct Body {
            token: String,
            expires_at: DateTime<Utc>,
        }
        let path = format!("{}/registration-token", runners_base(&target.scope));
        // Asking twice just yields another token: safe to retry.
        let (a, _) = self.call(target, Method::POST, &path, None, true).await?;
        if !a.status.is_success() {
            return Err(a.error("registration token"));
        }
        let b: Body = a.json("registration token")?;
        Ok(RegistrationToken {
            token: Secret::new(b.token),
            expires_at: b.expires_at,
        })
    }

    async fn list_runners(&self, target: &ForgeTarget) -> Result<Vec<ForgeRunner>, ForgeError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            runners: Vec<RunnerBody>,
        }
        let mut out = Vec::new();
        let mut path = format!("{}?per_page=100", runners_base(&target.scope));
        for _ in 0..1000 {
            let (a, headers) = self.call(target, Method::GET, &path, None, true).await?;
            if !a.status.is_success() {
                return Err(a.error("list runners"));
            }
            let page: Page = a.json("runner list")?;
            out.extend(page.runners.into_iter().map(ForgeRunner::from));
            match next_link(&headers) {
                Some(next) => path = next,
                None => break,
            }
        }
        Ok(out)
    }

    async fn delete_runner(&self, target: &ForgeTarget, runner_id: i64) -> Result<(), ForgeError> {
        let path = format!("{}/{runner_id}", runners_base(&target.scope));
        let (a, _) = self.call(target, Method::DELETE, &path, None, true).await?;
        match a.status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Ok(()),
            _ => Err(a.error("delete runner")),
        }
    }

    async fn get_job(
        &self,
        target: &ForgeTarget,
        repository: &str,
        job_id: JobId,
    ) -> Result<Option<ForgeJob>, ForgeError> {
        let path = format!("/repos/{repository}/actions/jobs/{}", job_id.0);
        let (a, _) = self.call(target, Method::GET, &path, None, true).await?;
        match a.status {
            s if s.is_success() => Ok(Some(a.json::<JobBody>("job")?.into())),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(a.error("get job")),
        }
    }

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
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            runner_groups: Vec<Group>,
        }
        let Some(name) = name else {
            return Ok(1);
        };
        let base = match &target.scope {
            EntityScope::Repository { .. } => {
                return Err(ForgeError::Fatal(format!(
                    "runner group {name:?}: runner groups exist only for organizations and enterprises"
                )));
            }
            EntityScope::Organization { name } => format!("/orgs/{name}/actions/runner-groups"),
            EntityScope::Enterprise { slug } => {
                format!("/enterprises/{slug}/actions/runner-groups")
            }
        };
        let mut path = format!("{base}?per_page=100");
        for _ in 0..100 {
            let (a, headers) = self.call(target, Method::GET, &path, None, true).await?;
            if !a.status.is_success() {
                return Err(a.error("list runner groups"));
            }
            let page: Page = a.json("runner group list")?;
            if let Some(g) = page
                .runner_groups
                .iter()
                .find(|g| g.name.eq_ignore_ascii_case(name))
            {
                return Ok(g.id);
            }
            match next_link(&headers) {
                Some(next) => path = next,
                None => break,
            }
        }
        Err(ForgeError::NotFound(format!(
            "runner group {name:?} does not exist"
        )))
    }

    async fn list_hooks(&self, target: &ForgeTarget) -> Result<Vec<ForgeHook>, ForgeError> {
        let mut out = Vec::new();
        let mut path = format!("{}?per_page=100", hooks_base(&target.scope)?);
        for _ in 0..100 {
            let (a, headers) = self.call(target, Method::GET, &path, None, true).await?;
            if !a.status.is_success() {
                return Err(a.error("list webhooks"));
            }
            let page: Vec<HookBody> = a.json("webhook list")?;
            out.extend(page.into_iter().map(ForgeHook::from));
            match next_link(&headers) {
                Some(next) => path = next,
                None => break,
            }
        }
        Ok(out)
    }

    async fn create_hook(
        &self,
        target: &ForgeTarget,
        hook: &NewHook,
    ) -> Result<ForgeHook, ForgeError> {
        let path = hooks_base(&target.scope)?;
        let mut body = serde_json::json!({
            "active": true,
            "events": hook.events,
            "config": {
                "url": hook.url,
                "content_type": "json",
                "secret": hook.secret.expose(),
                "insecure_ssl": if hook.insecure_ssl { "1" } else { "0" },
            },
        });
        // GitHub's schema: `name` must be "web" (required for orgs).
        body["name"] = "web".into();
        // A lost answer retried would make a second hook: sent once.
        let (a, _) = self
            .call(target, Method::POST, &path, Some(&body), false)
            .await?;
        if !a.status.is_success() {
            return Err(a.error("create webhook"));
        }
        Ok(a.json::<HookBody>("webhook")?.into())
    }

    async fn delete_hook(&self, target: &ForgeTarget, hook_id: i64) -> Result<(), ForgeError> {
        let path = format!("{}/{hook_id}", hooks_base(&target.scope)?);
        let (a, _) = self.call(target, Method::DELETE, &path, None, true).await?;
        match a.status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Ok(()),
            _ => Err(a.error("delete webhook")),
        }
    }

    async fn list_hook_deliveries(
        &self,
        target: &ForgeTarget,
        hook: HookRef,
        cursor: Option<&str>,
        per_page: u32,
    ) -> Result<DeliveryPage, ForgeError> {
        let (base, as_app) = deliveries_base(&target.scope, hook)?;
        let mut path = format!("{base}?per_page={}", per_page.clamp(1, 100));
        if let Some(c) = cursor {
            // Opaque, and still URL-encoded as the Link header gave it.
            if c.bytes()
                .any(|b| !(b.is_ascii_alphanumeric() || b"%_-.~=".contains(&b)))
            {
                return Err(ForgeError::Fatal(format!("invalid delivery cursor {c:?}")));
            }
            path.push_str("&cursor=");
            path.push_str(c);
        }
        let (a, headers) = self
            .call_as(target, Method::GET, &path, None, true, as_app)
            .await?;
        if !a.status.is_success() {
            return Err(a.error("list webhook deliveries"));
        }
        let page: Vec<DeliveryBody> = a.json("webhook delivery list")?;
        Ok(DeliveryPage {
            deliveries: page.into_iter().map(ForgeDelivery::from).collect(),
            next_cursor: next_link(&headers).as_deref().and_then(cursor_of),
        })
    }

    async fn redeliver(
        &self,
        target: &ForgeTarget,
        hook: HookRef,
        delivery_id: i64,
    ) -> Result<(), ForgeError> {
        let (base, as_app) = deliveries_base(&target.scope, hook)?;
        let path = format!("{base}/{delivery_id}/attempts");
        // Sent once: a repeat would only be another attempt of the same
        // guid, but there is no reason to make one blindly.
        let (a, _) = self
            .call_as(target, Method::POST, &path, None, false, as_app)
            .await?;
        match a.status {
            s if s.is_success() => Ok(()),
            // 400/422: GitHub will not redeliver this one (too old, hook gone).
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                Err(ForgeError::Fatal(format!(
                    "redeliver webhook delivery {delivery_id}: HTTP {}: {}",
                    a.status.as_u16(),
                    a.message()
                )))
            }
            _ => Err(a.error("redeliver webhook delivery")),
        }
    }

    async fn queued_run_ids(
        &self,
        target: &ForgeTarget,
        repository: &str,
        limit: u32,
    ) -> Result<Vec<i64>, ForgeError> {
        #[derive(Deserialize)]
        struct Run {
            id: i64,
        }
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            workflow_runs: Vec<Run>,
        }
        let limit = limit.max(1) as usize;
        let mut out = Vec::new();
        let mut path = format!(
            "/repos/{repository}/actions/runs?status=queued&per_page={}",
            limit.min(100)
        );
        for _ in 0..100 {
            let (a, headers) = self.call(target, Method::GET, &path, None, true).await?;
            if !a.status.is_success() {
                return Err(a.error("list queued workflow runs"));
            }
            let page: Page = a.json("workflow run list")?;
            out.extend(page.workflow_runs.into_iter().map(|r| r.id));
            if out.len() >= limit {
                out.truncate(limit);
                break;
            }
            match next_link(&headers) {
                Some(next) => path = next,
                None => break,
            }
        }
        Ok(out)
    }

    async fn run_jobs(
        &self,
        target: &ForgeTarget,
        repository: &str,
        run_id: i64,
    ) -> Result<Vec<ForgeJob>, ForgeError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            jobs: Vec<JobBody>,
        }
        let mut out = Vec::new();
        let mut path =
            format!("/repos/{repository}/actions/runs/{run_id}/jobs?filter=latest&per_page=100");
        for _ in 0..100 {
            let (a, headers) = self.call(target, Method::GET, &path, None, true).await?;
            if !a.status.is_success() {
                return Err(a.error("list workflow run jobs"));
            }
            let page: Page = a.json("workflow job list")?;
            out.extend(page.jobs.into_iter().map(ForgeJob::from));
            match next_link(&headers) {
                Some(next) => path = next,
                None => break,
            }
        }
        Ok(out)
    }

    async fn runner_downloads(&self, target: &ForgeTarget) -> Result<Vec<RunnerTool>, ForgeError> {
        #[derive(Deserialize)]
        struct Tool {
            os: String,
            architecture: String,
            download_url: String,
            filename: String,
            sha256_checksum: Option<String>,
        }
        let path = format!("{}/downloads", runners_base(&target.scope));
        let (a, _) = self.call(target, Method::GET, &path, None, true).await?;
        if !a.status.is_success() {
            return Err(a.error("runner downloads"));
        }
        let tools: Vec<Tool> = a.json("runner downloads")?;
        Ok(tools
            .into_iter()
            .map(|t| RunnerTool {
                os: t.os,
                architecture: t.architecture,
                download_url: t.download_url,
                filename: t.filename,
                sha256_checksum: t.sha256_checksum,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::LINK,
            "<https://api.github.com/repos/o/r/actions/runners?per_page=100&page=2>; rel=\"next\", <https://api.github.com/repos/o/r/actions/runners?per_page=100&page=5>; rel=\"last\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/repos/o/r/actions/runners?per_page=100&page=2")
        );
        assert_eq!(next_link(&http::HeaderMap::new()), None);
    }

    #[test]
    fn delivery_cursor_from_link() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::LINK,
            "<https://api.github.com/repos/o/r/hooks/1/deliveries?per_page=30&cursor=v1_12345%3D>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        let next = next_link(&h).unwrap();
        assert_eq!(cursor_of(&next).as_deref(), Some("v1_12345%3D"));
        assert_eq!(cursor_of("https://x/y?per_page=3"), None);
    }

    #[test]
    fn delivery_summary_parses() {
        let d: DeliveryBody = serde_json::from_str(
            r#"{"id": 12345678, "guid": "0b989ba4-242f-11e5-81e1-c7b6966d2516", "delivered_at": "2019-06-03T00:57:16Z",
                "redelivery": false, "duration": 0.27, "status": "Invalid HTTP Response: 503", "status_code": 503,
                "event": "workflow_job", "action": "queued", "installation_id": null, "repository_id": 42}"#,
        )
        .unwrap();
        let d = ForgeDelivery::from(d);
        assert_eq!(d.status_code, 503);
        assert_eq!(d.action.as_deref(), Some("queued"));
    }

    #[test]
    fn rate_limit_detection() {
        let none = RateHeaders::default();
        assert!(is_rate_limited(StatusCode::TOO_MANY_REQUESTS, &none, b""));
        assert!(is_rate_limited(
            StatusCode::FORBIDDEN,
            &none,
            br#"{"message":"You have exceeded a secondary rate limit"}"#
        ));
        assert!(!is_rate_limited(
            StatusCode::FORBIDDEN,
            &none,
            br#"{"message":"Resource not accessible by integration"}"#
        ));
    }

    #[test]
    fn tolerant_job() {
        let j: JobBody = serde_json::from_str(
            r#"{"id": 29679449555, "status": "requested", "conclusion": null, "labels": null, "runner_name": null}"#,
        )
        .unwrap();
        assert_eq!(j.status.as_deref(), Some("requested"));
        assert!(j.labels.is_none());
    }
}
