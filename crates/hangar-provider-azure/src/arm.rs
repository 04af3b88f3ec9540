//! A small Azure Resource Manager REST client: bearer tokens from any
//! `TokenCredential`, retries of throttled (429) and failed (5xx) calls with
//! `Retry-After` or exponential backoff with jitter, long-running operations
//! followed through the exact `Azure-AsyncOperation`/`Location` URLs ARM
//! hands out, and lists followed through `nextLink`.
//!
//! Why not the generated `azure_mgmt_compute` client: see ARCHITECTURE.md
//! ("Azure: typed REST instead of the legacy management crates").

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::auth::TokenCredential;
use rand::Rng as _;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Why an ARM call failed, shaped for the provider's retry decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArmError {
    /// ARM answered with an error status and (usually) a `CloudError` body.
    #[error("ARM answered {status} {code}: {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// A long-running operation ended `Failed` or `Canceled`.
    #[error("operation {status}: {code}: {message}")]
    OperationFailed {
        status: String,
        code: String,
        message: String,
    },
    /// No answer (connection refused, reset, request timeout).
    #[error("cannot reach ARM: {0}")]
    Transport(String),
    /// No token could be had.
    #[error("cannot get an ARM token: {0}")]
    Credential(String),
    /// A long-running operation did not end in time.
    #[error("operation did not finish within {0:?}")]
    Timeout(Duration),
    /// ARM's answer was not what its API promises.
    #[error("unexpected ARM answer: {0}")]
    Protocol(String),
    /// Not sent: the caller may no longer act (its pool's lease went while
    /// the call waited; see `hangar_core::provider::may_act`).
    #[error("not sent: {0}")]
    NotActing(String),
}

impl ArmError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ArmError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            ArmError::Status { code, .. } | ArmError::OperationFailed { code, .. } => code,
            _ => "",
        }
    }
}

/// Retry settings for throttled and failed calls.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with full jitter for attempt `n` (0-based).
    fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(n.min(16)))
            .min(self.max);
        let ms = exp.as_millis().max(1) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
    }
}

/// One answer from ARM.
#[derive(Debug, Clone)]
pub struct ArmResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl ArmResponse {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// `Retry-After` (seconds) or the `retry-after-ms` variants.
    fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers)
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(ms) = get("retry-after-ms")
        .or_else(|| get("x-ms-retry-after-ms"))
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_millis(ms));
    }
    get("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The ARM client. Cheap to clone.
#[derive(Clone)]
pub struct Arm {
    http: reqwest::Client,
    base: String,
    credential: Arc<dyn TokenCredential>,
    scope: String,
    retry: RetryPolicy,
    /// Wait between polls when ARM gives no `Retry-After`.
    default_poll: Duration,
    /// Shortest wait between polls, whatever `Retry-After` says.
    min_poll: Duration,
}

impl std::fmt::Debug for Arm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arm").field("base", &self.base).finish()
    }
}

impl Arm {
    pub fn new(base: &str, credential: Arc<dyn TokenCredential>) -> Result<Self, ArmError> {
        let base = base.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ArmError::Transport(e.to_string()))?;
        // Public cloud tokens are for management.azure.com whatever the
        // endpoint's spelling; sovereign clouds use their own host.
        let scope = if base.contains("management.azure.com") || base.starts_with("http://") {
            "https://management.azure.com/.default".to_owned()
        } else {
            format!("{base}/.default")
        };
        Ok(Self {
            http,
            base,
            credential,
            scope,
            retry: RetryPolicy::default(),
            default_poll: Duration::from_secs(5),
            min_poll: Duration::from_secs(1),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Poll waits: `default` when ARM names none, never less than `min`.
    pub fn with_poll(mut self, default: Duration, min: Duration) -> Self {
        self.default_poll = default;
        self.min_poll = min;
        self
    }

    /// `base` + `path` (which starts with `/subscriptions/`) + api-version.
    pub fn url(&self, path: &str, api_version: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version={api_version}", self.base)
    }

    async fn token(&self) -> Result<String, ArmError> {
        let t = self
            .credential
            .get_token(&[self.scope.as_str()])
            .await
            .map_err(|e| ArmError::Credential(e.to_string()))?;
        Ok(t.token.secret().to_owned())
    }

    /// One call, retried on 429, 5xx and transport errors.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<ArmResponse, ArmError> {
        let mut attempt = 0;
        loop {
            let result = self.send_once(method.clone(), url, body).await;
            let retry_in = match &result {
                Ok(r)
                    if r.status == StatusCode::TOO_MANY_REQUESTS || r.status.is_server_error() =>
                {
                    Some(
                        r.retry_after()
                            .unwrap_or_else(|| self.retry.backoff(attempt)),
                    )
                }
                Err(ArmError::Transport(_)) => Some(self.retry.backoff(attempt)),
                _ => None,
            };
            match retry_in {
                Some(wait) if attempt + 1 < self.retry.attempts => {
                    tracing::debug!(
                        %method, url = %redact(url), attempt, wait_ms = wait.as_millis() as u64,
                        "ARM call throttled or failed; retrying"
                    );
                    tokio::time::sleep(wait.min(self.retry.max)).await;
                    attempt += 1;
                }
                _ => return result,
            }
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<ArmResponse, ArmError> {
        let token = self.token().await?;
        // A write is the provider acting: asked at the last moment, after
        // the token and any retry's sleep.
        if method != Method::GET {
            hangar_core::provider::may_act().map_err(|e| ArmError::NotActing(e.to_string()))?;
        }
        let mut req = self.http.request(method, url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let rsp = req
            .send()
            .await
            .map_err(|e| ArmError::Transport(e.without_url().to_string()))?;
        let status = rsp.status();
        let headers = rsp.headers().clone();
        let bytes = rsp
            .bytes()
            .await
            .map_err(|e| ArmError::Transport(e.without_url().to_string()))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into())
            })
        };
        Ok(ArmResponse {
            status,
            headers,
            body,
        })
    }

    /// A call whose non-2xx answer is an error.
    async fn send_ok(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<ArmResponse, ArmError> {
        let r = self.send(method, url, body).await?;
        if r.status.is_success() {
            Ok(r)
        } else {
            Err(status_error(&r))
        }
    }

    /// GET; `None` on 404.
    pub async fn get(&self, url: &str) -> Result<Option<Value>, ArmError> {
        let r = self.send(Method::GET, url, None).await?;
        match r.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(r.body)),
            _ => Err(status_error(&r)),
        }
    }

    /// Every item of a paged list, following `nextLink` exactly as given.
    pub async fn list(&self, url: &str) -> Result<Vec<Value>, ArmError> {
        let mut out = Vec::new();
        let mut next = Some(url.to_owned());
        let mut pages = 0;
        while let Some(u) = next.take() {
            pages += 1;
            if pages > 10_000 {
                return Err(ArmError::Protocol("list has more than 10000 pages".into()));
            }
            let r = self.send_ok(Method::GET, &u, None).await?;
            match r.body.get("value") {
                Some(Value::Array(items)) => out.extend(items.iter().cloned()),
                Some(Value::Null) | None => {}
                Some(_) => return Err(ArmError::Protocol("list `value` is not an array".into())),
            }
            next = r
                .body
                .get("nextLink")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
        }
        Ok(out)
    }

    /// PUT, then follows the long-running operation to its end and returns
    /// the resource as a final GET shows it.
    pub async fn put_and_wait(
        &self,
        url: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, ArmError> {
        let deadline = Instant::now() + timeout;
        let r = self.send_ok(Method::PUT, url, Some(body)).await?;
        self.wait_operation(&r, deadline, timeout).await?;
        if self.followed(&r) || !is_terminal(provisioning_state(&r.body)) {
            // Re-read the resource: its state after the operation.
            loop {
                let got = self.get(url).await?.ok_or_else(|| {
                    ArmError::Protocol("resource is gone after its create succeeded".into())
                })?;
                match provisioning_state(&got) {
                    Some("Failed") | Some("Canceled") => {
                        return Err(ArmError::OperationFailed {
                            status: provisioning_state(&got).unwrap_or_default().to_owned(),
                            code: "ProvisioningFailed".into(),
                            message: "the resource's provisioningState is not Succeeded".into(),
                        });
                    }
                    s if is_terminal(s) => return Ok(got),
                    _ => {
                        self.sleep_until_next_poll(None, deadline, timeout).await?;
                    }
                }
            }
        }
        match provisioning_state(&r.body) {
            Some("Failed") | Some("Canceled") => Err(ArmError::OperationFailed {
                status: provisioning_state(&r.body).unwrap_or_default().to_owned(),
                code: "ProvisioningFailed".into(),
                message: "the resource's provisioningState is not Succeeded".into(),
            }),
            _ => Ok(r.body),
        }
    }

    /// DELETE, then follows the operation to its end. Already gone is `Ok`.
    pub async fn delete_and_wait(&self, url: &str, timeout: Duration) -> Result<(), ArmError> {
        let deadline = Instant::now() + timeout;
        let r = self.send(Method::DELETE, url, None).await?;
        match r.status {
            StatusCode::NOT_FOUND | StatusCode::NO_CONTENT => Ok(()),
            s if s.is_success() => self.wait_operation(&r, deadline, timeout).await,
            _ => Err(status_error(&r)),
        }
    }

    fn followed(&self, r: &ArmResponse) -> bool {
        r.header("azure-asyncoperation").is_some() || r.header("location").is_some()
    }

    /// Follows `Azure-AsyncOperation` (preferred) or `Location` until the
    /// operation ends. A response with neither header is already done.
    async fn wait_operation(
        &self,
        first: &ArmResponse,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), ArmError> {
        let mut wait = first.retry_after();
        if let Some(op) = first.header("azure-asyncoperation") {
            loop {
                self.sleep_until_next_poll(wait, deadline, timeout).await?;
                let r = self.send_ok(Method::GET, &op, None).await?;
                let status = r.body.get("status").and_then(Value::as_str).unwrap_or("");
                match status {
                    "Succeeded" => return Ok(()),
                    "Failed" | "Canceled" => {
                        let err = r.body.get("error");
                        let field = |k: &str| {
                            err.and_then(|e| e.get(k))
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned()
                        };
                        return Err(ArmError::OperationFailed {
                            status: status.to_owned(),
                            code: field("code"),
                            message: field("message"),
                        });
                    }
                    _ => wait = r.retry_after(),
                }
            }
        }
        if let Some(loc) = first.header("location") {
            loop {
                self.sleep_until_next_poll(wait, deadline, timeout).await?;
                let r = self.send(Method::GET, &loc, None).await?;
                match r.status {
                    StatusCode::ACCEPTED => wait = r.retry_after(),
                    s if s.is_success() => return Ok(()),
                    _ => return Err(status_error(&r)),
                }
            }
        }
        Ok(())
    }

    async fn sleep_until_next_poll(
        &self,
        wait: Option<Duration>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), ArmError> {
        let wait = wait
            .unwrap_or(self.default_poll)
            .clamp(self.min_poll, Duration::from_secs(60));
        if Instant::now() + wait > deadline {
            return Err(ArmError::Timeout(timeout));
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

fn is_terminal(state: Option<&str>) -> bool {
    matches!(state, Some("Succeeded") | Some("Failed") | Some("Canceled"))
}

/// `properties.provisioningState` of a resource body.
pub fn provisioning_state(body: &Value) -> Option<&str> {
    body.pointer("/properties/provisioningState")
        .and_then(Value::as_str)
}

fn status_error(r: &ArmResponse) -> ArmError {
    let err = r.body.get("error");
    let field = |k: &str| {
        err.and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ArmError::Status {
        status: r.status.as_u16(),
        code: field("code").unwrap_or_else(|| {
            r.status
                .canonical_reason()
                .unwrap_or("Error")
                .replace(' ', "")
        }),
        message: field("message").unwrap_or_else(|| match &r.body {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }),
    }
}

/// A URL without its query, for logs (async URLs can carry signatures).
fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for n in 0..20 {
            let d = p.backoff(n);
            let cap = (100u64 << n.min(16)).min(1000);
            assert!(
                d.as_millis() as u64 <= cap && d.as_millis() as u64 >= cap / 2,
                "{n}: {d:?}"
            );
        }
    }

    #[test]
    fn terminal_states() {
        assert!(is_terminal(Some("Succeeded")));
        assert!(is_terminal(Some("Failed")));
        assert!(!is_terminal(Some("Creating")));
        assert!(!is_terminal(None));
    }
}
