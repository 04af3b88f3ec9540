//! A typed HTTP client for the admin API: one method per route, answering
//! with the same DTOs the server serialises, so the CLI cannot drift from
//! the server.
//!
//! Errors keep what a caller needs to decide and to tell the operator: the
//! HTTP status with the server's own `error`/`details`, or the URL that
//! could not be reached.

mod scalesets;

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;
use uuid::Uuid;

use crate::dto::{
    ControllerResponse, ControllerUpdate, CredentialsCreate, CredentialsResponse,
    CredentialsUpdate, EndpointCreate, EndpointResponse, EndpointUpdate, EntityCreate,
    EntityResponse, EntityUpdate, ErrorBody, FirstRunRequest, HealthResponse, InstanceResponse,
    JobResponse, LoginRequest, LoginResponse, PoolCreate, PoolResponse, PoolUpdate, PoolUserdata,
    ProviderResponse, UserResponse, WebhookInfo, WebhookInstall,
};

/// Why a call failed, shaped by what the caller does next: show the
/// server's words (`Api`), check the address (`Connect`), or suspect a
/// version mismatch (`Decode`).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status; `error` and `details` are
    /// its own words.
    #[error("{error} (HTTP {status})")]
    Api {
        status: u16,
        error: String,
        details: Option<String>,
    },
    /// No answer from `url`: refused, unresolvable, TLS failure or timeout.
    #[error("cannot reach {url}: {cause}")]
    Connect { url: String, cause: String },
    /// A success status whose body is not what this route answers: another
    /// service at that address, or a server of another version.
    #[error("unexpected answer from {url} (HTTP {status}): {message}")]
    Decode {
        url: String,
        status: u16,
        message: String,
    },
    /// The base URL given cannot address a Hangar server.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

impl ClientError {
    /// The HTTP status the server answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's `details`, when it gave any.
    pub fn details(&self) -> Option<&str> {
        match self {
            ClientError::Api { details, .. } => details.as_deref(),
            _ => None,
        }
    }
}

/// Which collection an entity lives in; the routes are the same shape for
/// all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    Repository,
    Organization,
    Enterprise,
}

impl EntityKind {
    /// The path segment under `/api/v1`.
    pub fn collection(self) -> &'static str {
        match self {
            EntityKind::Repository => "repositories",
            EntityKind::Organization => "organizations",
            EntityKind::Enterprise => "enterprises",
        }
    }

    /// The `kind` value the server puts in [`EntityResponse`].
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Repository => "repository",
            EntityKind::Organization => "organization",
            EntityKind::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Filters of `GET /api/v1/instances`.
#[derive(Debug, Clone, Default)]
pub struct InstanceQuery {
    pub pool_id: Option<Uuid>,
    /// Include deleted instances (history).
    pub include_deleted: bool,
}

/// Filters of `GET /api/v1/jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// `waiting`, `queued`, `in_progress` or `completed`.
    pub status: Option<String>,
    pub pool_id: Option<Uuid>,
    pub limit: Option<u32>,
}

/// garm-cli's removal switches, sent as query parameters of
/// `DELETE /api/v1/instances/{name}` so the server can honour them.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstanceDelete {
    /// Mark the instance deleted even when the provider fails to remove it.
    pub force_remove_runner: bool,
    /// Go on when GitHub refuses the credentials while removing the runner.
    pub bypass_github_unauthorized: bool,
}

/// How long one call may take. Listing providers runs their health checks
/// (bounded at 5 s on the server), so the total is generous.
const TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin API of one Hangar server, optionally with a bearer token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

// Hand-written so a token never lands in a log or a panic message.
impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    /// A client for the server at `base_url` (e.g. `https://hangar.example.com`,
    /// or with a path prefix when behind a reverse proxy).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("hangar-api/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ClientError::InvalidUrl {
                url: base_url.to_owned(),
                reason: format!("cannot build an HTTP client: {e}"),
            })?;
        Self::with_http(http, base_url)
    }

    /// Like [`Client::new`] with a caller-configured `reqwest::Client`.
    pub fn with_http(http: reqwest::Client, base_url: &str) -> Result<Self, ClientError> {
        Ok(Self {
            http,
            base: parse_base(base_url)?,
            token: None,
        })
    }

    /// The same client, sending `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `<base>/<segments…>`, each segment percent-encoded, so a name with
    /// `/` or `?` cannot address another route.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("base URL was checked to be hierarchical")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn api(&self, segments: &[&str]) -> Url {
        let mut all = Vec::with_capacity(segments.len() + 2);
        all.extend(["api", "v1"]);
        all.extend_from_slice(segments);
        self.url(&all)
    }

    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<(u16, Url, Vec<u8>), ClientError> {
        let mut req = self
            .http
            .request(method, url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| connect_error(&url, &e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| connect_error(&url, &e))?;
        if status.is_success() {
            return Ok((status.as_u16(), url, bytes.to_vec()));
        }
        Err(api_error(status, &bytes))
    }

    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let (status, url, body) = self.send(method, url, body).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            status,
            message: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<T, ClientError> {
        self.call(Method::GET, url, None::<&()>).await
    }

    /// A call whose success answer carries no body worth reading (204).
    async fn call_empty(&self, method: Method, url: Url) -> Result<(), ClientError> {
        self.send(method, url, None::<&()>).await.map(|_| ())
    }

    // --- auth ---------------------------------------------------------

    /// `POST /api/v1/first-run`: creates the first admin (409 once one exists).
    pub async fn first_run(&self, req: &FirstRunRequest) -> Result<UserResponse, ClientError> {
        self.call(Method::POST, self.api(&["first-run"]), Some(req))
            .await
    }

    /// `POST /api/v1/auth/login`: a token for the other routes.
    pub async fn login(&self, req: &LoginRequest) -> Result<LoginResponse, ClientError> {
        self.call(Method::POST, self.api(&["auth", "login"]), Some(req))
            .await
    }

    // --- endpoints ----------------------------------------------------

    pub async fn list_endpoints(&self) -> Result<Vec<EndpointResponse>, ClientError> {
        self.get(self.api(&["endpoints"])).await
    }

    pub async fn get_endpoint(&self, name: &str) -> Result<EndpointResponse, ClientError> {
        self.get(self.api(&["endpoints", name])).await
    }

    pub async fn create_endpoint(
        &self,
        req: &EndpointCreate,
    ) -> Result<EndpointResponse, ClientError> {
        self.call(Method::POST, self.api(&["endpoints"]), Some(req))
            .await
    }

    pub async fn update_endpoint(
        &self,
        name: &str,
        req: &EndpointUpdate,
    ) -> Result<EndpointResponse, ClientError> {
        self.call(Method::PUT, self.api(&["endpoints", name]), Some(req))
            .await
    }

    pub async fn delete_endpoint(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, self.api(&["endpoints", name]))
            .await
    }

    // --- credentials --------------------------------------------------

    pub async fn list_credentials(&self) -> Result<Vec<CredentialsResponse>, ClientError> {
        self.get(self.api(&["credentials"])).await
    }

    pub async fn get_credentials(&self, name: &str) -> Result<CredentialsResponse, ClientError> {
        self.get(self.api(&["credentials", name])).await
    }

    pub async fn create_credentials(
        &self,
        req: &CredentialsCreate,
    ) -> Result<CredentialsResponse, ClientError> {
        self.call(Method::POST, self.api(&["credentials"]), Some(req))
            .await
    }

    pub async fn update_credentials(
        &self,
        name: &str,
        req: &CredentialsUpdate,
    ) -> Result<CredentialsResponse, ClientError> {
        self.call(Method::PUT, self.api(&["credentials", name]), Some(req))
            .await
    }

    pub async fn delete_credentials(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, self.api(&["credentials", name]))
            .await
    }

    // --- repositories, organizations, enterprises ----------------------

    pub async fn list_entities(
        &self,
        kind: EntityKind,
    ) -> Result<Vec<EntityResponse>, ClientError> {
        self.get(self.api(&[kind.collection()])).await
    }

    pub async fn get_entity(
        &self,
        kind: EntityKind,
        id: Uuid,
    ) -> Result<EntityResponse, ClientError> {
        self.get(self.api(&[kind.collection(), &id.to_string()]))
            .await
    }

    /// The answer carries `webhook_secret` only when the server generated it.
    pub async fn create_entity(
        &self,
        kind: EntityKind,
        req: &EntityCreate,
    ) -> Result<EntityResponse, ClientError> {
        self.call(Method::POST, self.api(&[kind.collection()]), Some(req))
            .await
    }

    pub async fn update_entity(
        &self,
        kind: EntityKind,
        id: Uuid,
        req: &EntityUpdate,
    ) -> Result<EntityResponse, ClientError> {
        self.call(
            Method::PUT,
            self.api(&[kind.collection(), &id.to_string()]),
            Some(req),
        )
        .await
    }

    /// Creates the entity's hook on GitHub (its webhook URL and secret).
    pub async fn install_webhook(
        &self,
        kind: EntityKind,
        id: Uuid,
        req: &WebhookInstall,
    ) -> Result<WebhookInfo, ClientError> {
        self.call(
            Method::POST,
            self.api(&[kind.collection(), &id.to_string(), "webhook"]),
            Some(req),
        )
        .await
    }

    /// The entity's hook on GitHub; 404 when there is none.
    pub async fn get_webhook(
        &self,
        kind: EntityKind,
        id: Uuid,
    ) -> Result<WebhookInfo, ClientError> {
        self.get(self.api(&[kind.collection(), &id.to_string(), "webhook"]))
            .await
    }

    /// Removes the entity's hook from GitHub (none there is fine).
    pub async fn uninstall_webhook(&self, kind: EntityKind, id: Uuid) -> Result<(), ClientError> {
        self.call_empty(
            Method::DELETE,
            self.api(&[kind.collection(), &id.to_string(), "webhook"]),
        )
        .await
    }

    /// 409 while the entity still has pools.
    pub async fn delete_entity(&self, kind: EntityKind, id: Uuid) -> Result<(), ClientError> {
        self.call_empty(
            Method::DELETE,
            self.api(&[kind.collection(), &id.to_string()]),
        )
        .await
    }

    pub async fn list_entity_pools(
        &self,
        kind: EntityKind,
        id: Uuid,
    ) -> Result<Vec<PoolResponse>, ClientError> {
        self.get(self.api(&[kind.collection(), &id.to_string(), "pools"]))
            .await
    }

    pub async fn create_pool(
        &self,
        kind: EntityKind,
        entity_id: Uuid,
        req: &PoolCreate,
    ) -> Result<PoolResponse, ClientError> {
        self.call(
            Method::POST,
            self.api(&[kind.collection(), &entity_id.to_string(), "pools"]),
            Some(req),
        )
        .await
    }

    // --- pools --------------------------------------------------------

    pub async fn list_pools(&self) -> Result<Vec<PoolResponse>, ClientError> {
        self.get(self.api(&["pools"])).await
    }

    pub async fn get_pool(&self, id: Uuid) -> Result<PoolResponse, ClientError> {
        self.get(self.api(&["pools", &id.to_string()])).await
    }

    pub async fn pool_userdata(&self, id: Uuid) -> Result<PoolUserdata, ClientError> {
        self.get(self.api(&["pools", &id.to_string(), "userdata"]))
            .await
    }

    pub async fn update_pool(
        &self,
        id: Uuid,
        req: &PoolUpdate,
    ) -> Result<PoolResponse, ClientError> {
        self.call(
            Method::PUT,
            self.api(&["pools", &id.to_string()]),
            Some(req),
        )
        .await
    }

    /// 409 while the pool still has instances.
    pub async fn delete_pool(&self, id: Uuid) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, self.api(&["pools", &id.to_string()]))
            .await
    }

    pub async fn list_pool_instances(
        &self,
        id: Uuid,
    ) -> Result<Vec<InstanceResponse>, ClientError> {
        self.get(self.api(&["pools", &id.to_string(), "instances"]))
            .await
    }

    // --- instances, jobs, providers, controller -------------------------

    pub async fn list_instances(
        &self,
        q: &InstanceQuery,
    ) -> Result<Vec<InstanceResponse>, ClientError> {
        let mut url = self.api(&["instances"]);
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(p) = q.pool_id {
                pairs.append_pair("pool_id", &p.to_string());
            }
            if q.include_deleted {
                pairs.append_pair("all", "true");
            }
        }
        self.get(strip_empty_query(url)).await
    }

    pub async fn get_instance(&self, name: &str) -> Result<InstanceResponse, ClientError> {
        self.get(self.api(&["instances", name])).await
    }

    /// Asks for the instance's removal (202): its runner leaves GitHub, then
    /// the VM goes. The answer is the instance as it is now.
    pub async fn delete_instance(
        &self,
        name: &str,
        opts: InstanceDelete,
    ) -> Result<InstanceResponse, ClientError> {
        let mut url = self.api(&["instances", name]);
        {
            let mut pairs = url.query_pairs_mut();
            if opts.force_remove_runner {
                pairs.append_pair("force_remove_runner", "true");
            }
            if opts.bypass_github_unauthorized {
                pairs.append_pair("bypass_github_unauthorized", "true");
            }
        }
        self.call(Method::DELETE, strip_empty_query(url), None::<&()>)
            .await
    }

    pub async fn list_jobs(&self, q: &JobQuery) -> Result<Vec<JobResponse>, ClientError> {
        let mut url = self.api(&["jobs"]);
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(s) = &q.status {
                pairs.append_pair("status", s);
            }
            if let Some(p) = q.pool_id {
                pairs.append_pair("pool_id", &p.to_string());
            }
            if let Some(l) = q.limit {
                pairs.append_pair("limit", &l.to_string());
            }
        }
        self.get(strip_empty_query(url)).await
    }

    pub async fn list_providers(&self) -> Result<Vec<ProviderResponse>, ClientError> {
        self.get(self.api(&["providers"])).await
    }

    pub async fn get_controller(&self) -> Result<ControllerResponse, ClientError> {
        self.get(self.api(&["controller"])).await
    }

    pub async fn update_controller(
        &self,
        req: &ControllerUpdate,
    ) -> Result<ControllerResponse, ClientError> {
        self.call(Method::PUT, self.api(&["controller"]), Some(req))
            .await
    }

    /// `GET /api/v1/openapi.json`, as a JSON document.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.get(self.api(&["openapi.json"])).await
    }

    /// `GET /healthz`: the process answers.
    pub async fn healthz(&self) -> Result<HealthResponse, ClientError> {
        self.get(self.url(&["healthz"])).await
    }
}

fn parse_base(base_url: &str) -> Result<Url, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: base_url.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(invalid("it needs a host, like https://hangar.example.com"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment"));
    }
    Ok(url)
}

/// `query_pairs_mut` leaves a bare `?` when nothing was appended.
fn strip_empty_query(mut url: Url) -> Url {
    if url.query() == Some("") {
        url.set_query(None);
    }
    url
}

fn connect_error(url: &Url, e: &reqwest::Error) -> ClientError {
    // reqwest's own message repeats the URL; the innermost cause is the
    // useful part ("Connection refused", "dns error", …).
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let cause = if e.is_timeout() {
        format!("timed out ({cause})")
    } else {
        cause.to_string()
    };
    let mut shown = url.clone();
    shown.set_query(None);
    ClientError::Connect {
        url: shown.to_string(),
        cause,
    }
}

/// The longest non-JSON error body kept for display (a proxy's HTML page
/// is noise beyond this).
const MAX_FOREIGN_BODY: usize = 300;

fn api_error(status: reqwest::StatusCode, body: &[u8]) -> ClientError {
    if let Ok(b) = serde_json::from_slice::<ErrorBody>(body) {
        return ClientError::Api {
            status: status.as_u16(),
            error: b.error,
            details: b.details.filter(|d| !d.is_empty()),
        };
    }
    // Not Hangar's error shape (a proxy, or another service): keep the
    // status words and the start of whatever came back.
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let details = (!text.is_empty()).then(|| {
        let mut t: String = text.chars().take(MAX_FOREIGN_BODY).collect();
        if t.len() < text.len() {
            t.push('…');
        }
        t
    });
    ClientError::Api {
        status: status.as_u16(),
        error: status
            .canonical_reason()
            .unwrap_or("unexpected status")
            .to_owned(),
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-request HTTP server that answers `status` with `body` and
    /// hands back the raw request it saw.
    async fn answer_once(
        status: &'static str,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Read headers, then as many body bytes as Content-Length says.
            loop {
                let n = sock.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            sock.shutdown().await.ok();
            String::from_utf8(req).unwrap()
        });
        (format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn server_error_keeps_status_error_and_details() {
        let (url, seen) = answer_once(
            "409 Conflict",
            r#"{"error":"repository has 1 pool","details":"delete pool 42 first"}"#,
        )
        .await;
        let id = Uuid::new_v4();
        let err = Client::new(&url)
            .unwrap()
            .with_token("tok-123")
            .delete_entity(EntityKind::Repository, id)
            .await
            .unwrap_err();
        match &err {
            ClientError::Api {
                status,
                error,
                details,
            } => {
                assert_eq!(*status, 409);
                assert_eq!(error, "repository has 1 pool");
                assert_eq!(details.as_deref(), Some("delete pool 42 first"));
            }
            other => panic!("expected Api, got {other:?}"),
        }
        assert_eq!(err.to_string(), "repository has 1 pool (HTTP 409)");
        let req = seen.await.unwrap();
        assert!(
            req.starts_with(&format!("DELETE /api/v1/repositories/{id} HTTP/1.1")),
            "{req}"
        );
        assert!(
            req.to_ascii_lowercase()
                .contains("authorization: bearer tok-123"),
            "{req}"
        );
    }

    #[tokio::test]
    async fn success_body_is_decoded_and_request_body_sent() {
        let (url, seen) = answer_once(
            "200 OK",
            r#"{"token":"t","expires_at":"2030-01-01T00:00:00Z"}"#,
        )
        .await;
        let resp = Client::new(&url)
            .unwrap()
            .login(&LoginRequest {
                username: "admin".into(),
                password: "pw".into(),
            })
            .await
            .unwrap();
        assert_eq!(resp.token, "t");
        let req = seen.await.unwrap();
        assert!(req.starts_with("POST /api/v1/auth/login HTTP/1.1"), "{req}");
        assert!(
            !req.to_ascii_lowercase().contains("authorization:"),
            "no token was set, none may be sent: {req}"
        );
        assert!(
            req.ends_with(r#"{"username":"admin","password":"pw"}"#),
            "{req}"
        );
    }

    #[tokio::test]
    async fn names_are_one_path_segment_and_queries_encoded() {
        let (url, seen) = answer_once("200 OK", "[]").await;
        let list = Client::new(&format!("{url}/prefix/"))
            .unwrap()
            .list_jobs(&JobQuery {
                status: Some("in progress&x=1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(list.is_empty());
        let req = seen.await.unwrap();
        assert!(
            req.starts_with("GET /prefix/api/v1/jobs?status=in+progress%26x%3D1 HTTP/1.1"),
            "{req}"
        );

        let (url, seen) = answer_once("404 Not Found", r#"{"error":"x"}"#).await;
        let _ = Client::new(&url).unwrap().get_endpoint("a/../b?c").await;
        let req = seen.await.unwrap();
        assert!(
            req.starts_with("GET /api/v1/endpoints/a%2F..%2Fb%3Fc HTTP/1.1"),
            "{req}"
        );
    }

    #[tokio::test]
    async fn foreign_error_body_is_kept_short() {
        let (url, _seen) = answer_once("502 Bad Gateway", "<html>upstream down</html>").await;
        let err = Client::new(&url).unwrap().list_pools().await.unwrap_err();
        assert_eq!(err.status(), Some(502));
        assert_eq!(err.to_string(), "Bad Gateway (HTTP 502)");
        assert_eq!(err.details(), Some("<html>upstream down</html>"));
    }

    #[tokio::test]
    async fn wrong_shape_is_a_decode_error() {
        let (url, _seen) = answer_once("200 OK", r#"{"hello":"world"}"#).await;
        let err = Client::new(&url)
            .unwrap()
            .get_controller()
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Decode { status: 200, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn refused_connection_names_the_url() {
        // Bind then drop: the port is very likely closed right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = Client::new(&format!("http://127.0.0.1:{port}"))
            .unwrap()
            .list_providers()
            .await
            .unwrap_err();
        match err {
            ClientError::Connect { url, cause } => {
                assert_eq!(url, format!("http://127.0.0.1:{port}/api/v1/providers"));
                assert!(!cause.is_empty());
            }
            other => panic!("expected Connect, got {other:?}"),
        }
    }

    #[test]
    fn base_url_is_checked() {
        assert!(Client::new("hangar.example.com").is_err());
        assert!(Client::new("ftp://hangar.example.com").is_err());
        assert!(Client::new("https://hangar.example.com/?x=1").is_err());
        let c = Client::new("https://hangar.example.com/base").unwrap();
        assert_eq!(
            c.api(&["pools"]).as_str(),
            "https://hangar.example.com/base/api/v1/pools"
        );
    }

    #[test]
    fn debug_hides_the_token() {
        let c = Client::new("http://localhost:1")
            .unwrap()
            .with_token("very-secret-token");
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret-token"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
