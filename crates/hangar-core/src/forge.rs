//! The `Forge` trait: what Hangar needs from GitHub (or GHES) to register,
//! find and remove one-job runners, and to re-check a job.
//!
//! The implementation (octocrab) lives in `hangar-github`; the scheduler only
//! sees `Arc<dyn Forge>` and the error kinds that decide its next step.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::entity::{Credentials, Endpoint, EntityScope};
use crate::ids::JobId;
use crate::provider::RunnerTool;
use crate::secret::Secret;

/// Where a call goes: an endpoint, the credentials to use there, and the
/// repository/organization/enterprise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeTarget {
    pub endpoint: Endpoint,
    pub credentials: Credentials,
    pub scope: EntityScope,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgeError {
    #[error("not found on GitHub: {0}")]
    NotFound(String),
    /// The runner is running a job (GitHub answers 422); retry later.
    #[error("runner is busy: {0}")]
    Busy(String),
    /// A runner with that name already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// Primary or secondary rate limit; do not call before `retry_after`.
    #[error("rate limited by GitHub for {retry_after:?}: {message}")]
    RateLimited {
        retry_after: Duration,
        message: String,
    },
    #[error("GitHub refused the credentials: {0}")]
    Unauthorized(String),
    /// Network trouble or a 5xx; retry with backoff.
    #[error("transient GitHub failure: {0}")]
    Transient(String),
    #[error("GitHub request failed: {0}")]
    Fatal(String),
}

impl ForgeError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ForgeError::Busy(_) | ForgeError::RateLimited { .. } | ForgeError::Transient(_)
        )
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ForgeError::NotFound(_) => "not_found",
            ForgeError::Busy(_) => "busy",
            ForgeError::AlreadyExists(_) => "already_exists",
            ForgeError::RateLimited { .. } => "rate_limited",
            ForgeError::Unauthorized(_) => "unauthorized",
            ForgeError::Transient(_) => "transient",
            ForgeError::Fatal(_) => "fatal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitRequest {
    pub name: String,
    pub runner_group_id: i64,
    pub labels: Vec<String>,
    pub work_folder: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitConfig {
    pub runner_id: i64,
    pub runner_name: String,
    pub encoded_jit_config: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationToken {
    pub token: Secret,
    pub expires_at: DateTime<Utc>,
}

/// A self-hosted runner as GitHub lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeRunner {
    pub id: i64,
    pub name: String,
    /// `online` or `offline`.
    pub status: String,
    pub busy: bool,
    pub labels: Vec<String>,
}

/// A workflow job as GitHub reports it on re-check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeJob {
    pub id: JobId,
    pub run_attempt: Option<i64>,
    pub status: ForgeJobStatus,
    pub conclusion: Option<String>,
    pub labels: Vec<String>,
    pub runner_name: Option<String>,
    /// The workflow run the job belongs to.
    pub run_id: Option<i64>,
    /// The job's name (`jobs.<id>.name`).
    pub name: Option<String>,
    /// When GitHub queued the job.
    pub created_at: Option<DateTime<Utc>>,
}

/// A workflow job's `status` as GitHub documents it. A value GitHub adds
/// later is kept as [`ForgeJobStatus::Other`] rather than failing the
/// re-check: callers treat it like a job still waiting.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ForgeJobStatus {
    Queued,
    InProgress,
    Completed,
    Waiting,
    Requested,
    Pending,
    Other(String),
}

impl ForgeJobStatus {
    pub fn as_str(&self) -> &str {
        match self {
            ForgeJobStatus::Queued => "queued",
            ForgeJobStatus::InProgress => "in_progress",
            ForgeJobStatus::Completed => "completed",
            ForgeJobStatus::Waiting => "waiting",
            ForgeJobStatus::Requested => "requested",
            ForgeJobStatus::Pending => "pending",
            ForgeJobStatus::Other(s) => s,
        }
    }
}

impl From<String> for ForgeJobStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "queued" => ForgeJobStatus::Queued,
            "in_progress" => ForgeJobStatus::InProgress,
            "completed" => ForgeJobStatus::Completed,
            "waiting" => ForgeJobStatus::Waiting,
            "requested" => ForgeJobStatus::Requested,
            "pending" => ForgeJobStatus::Pending,
            _ => ForgeJobStatus::Other(s),
        }
    }
}

impl From<ForgeJobStatus> for String {
    fn from(s: ForgeJobStatus) -> Self {
        match s {
            ForgeJobStatus::Other(s) => s,
            known => known.as_str().to_owned(),
        }
    }
}

impl fmt::Display for ForgeJobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A repository or organization webhook as GitHub lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeHook {
    pub id: i64,
    /// Where GitHub delivers (`config.url`).
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    /// `config.insecure_ssl` is `"1"`.
    pub insecure_ssl: bool,
}

/// A webhook to create: JSON deliveries of `events` to `url`, signed
/// with `secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHook {
    pub url: String,
    pub secret: Secret,
    pub events: Vec<String>,
    pub insecure_ssl: bool,
}

/// Whose webhook deliveries: a repository's or organization's hook, or
/// the GitHub App's one hook (`/app/hook/deliveries`, authenticated as the
/// App itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookRef {
    Entity { hook_id: i64 },
    App,
}

/// One delivery attempt as GitHub's hook deliveries list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeDelivery {
    pub id: i64,
    /// Shared by every attempt of one delivery (`X-GitHub-Delivery`).
    pub guid: String,
    pub delivered_at: DateTime<Utc>,
    /// This attempt was a redelivery.
    pub redelivery: bool,
    /// The HTTP status the receiver answered; 0 when it could not be reached.
    pub status_code: i64,
    pub event: String,
    pub action: Option<String>,
}

/// A page of deliveries, newest first, and the cursor of the next (older)
/// page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryPage {
    pub deliveries: Vec<ForgeDelivery>,
    pub next_cursor: Option<String>,
}

/// GitHub, as Hangar uses it.
#[async_trait]
pub trait Forge: Send + Sync + fmt::Debug {
    /// Registers a one-job runner and returns its JIT config. Never retried
    /// blindly: a name clash comes back as [`ForgeError::AlreadyExists`].
    async fn generate_jit_config(
        &self,
        target: &ForgeTarget,
        req: &JitRequest,
    ) -> Result<JitConfig, ForgeError>;

    /// A registration token, for images that cannot use JIT configs.
    async fn registration_token(
        &self,
        target: &ForgeTarget,
    ) -> Result<RegistrationToken, ForgeError>;

    /// Every self-hosted runner of the entity (all pages).
    async fn list_runners(&self, target: &ForgeTarget) -> Result<Vec<ForgeRunner>, ForgeError>;

    /// Removes a runner. Already gone is `Ok`; a busy runner is
    /// [`ForgeError::Busy`].
    async fn delete_runner(&self, target: &ForgeTarget, runner_id: i64) -> Result<(), ForgeError>;

    /// A job of `repository` (`owner/name`); `None` when GitHub has no such job.
    async fn get_job(
        &self,
        target: &ForgeTarget,
        repository: &str,
        job_id: JobId,
    ) -> Result<Option<ForgeJob>, ForgeError>;

    /// The id of a runner group by name (`None` means the default group, 1).
    async fn runner_group_id(
        &self,
        target: &ForgeTarget,
        name: Option<&str>,
    ) -> Result<i64, ForgeError>;

    /// GitHub's runner downloads list (URLs and checksums).
    async fn runner_downloads(&self, target: &ForgeTarget) -> Result<Vec<RunnerTool>, ForgeError>;

    /// The entity's webhooks (repositories and organizations only).
    async fn list_hooks(&self, target: &ForgeTarget) -> Result<Vec<ForgeHook>, ForgeError> {
        let _ = target;
        Err(ForgeError::Fatal("webhooks are not supported here".into()))
    }

    /// Creates a webhook on the entity.
    async fn create_hook(
        &self,
        target: &ForgeTarget,
        hook: &NewHook,
    ) -> Result<ForgeHook, ForgeError> {
        let _ = (target, hook);
        Err(ForgeError::Fatal("webhooks are not supported here".into()))
    }

    /// Removes a webhook; already gone is `Ok`.
    async fn delete_hook(&self, target: &ForgeTarget, hook_id: i64) -> Result<(), ForgeError> {
        let _ = (target, hook_id);
        Err(ForgeError::Fatal("webhooks are not supported here".into()))
    }

    /// One page (at most `per_page`, newest first) of a hook's deliveries,
    /// starting at `cursor` (`None`: the newest).
    async fn list_hook_deliveries(
        &self,
        target: &ForgeTarget,
        hook: HookRef,
        cursor: Option<&str>,
        per_page: u32,
    ) -> Result<DeliveryPage, ForgeError> {
        let _ = (target, hook, cursor, per_page);
        Err(ForgeError::Fatal(
            "webhook deliveries are not supported here".into(),
        ))
    }

    /// Asks GitHub to deliver a delivery again (a new attempt, same guid).
    async fn redeliver(
        &self,
        target: &ForgeTarget,
        hook: HookRef,
        delivery_id: i64,
    ) -> Result<(), ForgeError> {
        let _ = (target, hook, delivery_id);
        Err(ForgeError::Fatal(
            "webhook deliveries are not supported here".into(),
        ))
    }

    /// The ids of `repository`'s workflow runs whose status is `queued`
    /// (`owner/name`; all pages up to `limit`).
    async fn queued_run_ids(
        &self,
        target: &ForgeTarget,
        repository: &str,
        limit: u32,
    ) -> Result<Vec<i64>, ForgeError> {
        let _ = (target, repository, limit);
        Err(ForgeError::Fatal(
            "listing workflow runs is not supported here".into(),
        ))
    }

    /// The jobs of the latest attempt of a workflow run.
    async fn run_jobs(
        &self,
        target: &ForgeTarget,
        repository: &str,
        run_id: i64,
    ) -> Result<Vec<ForgeJob>, ForgeError> {
        let _ = (target, repository, run_id);
        Err(ForgeError::Fatal(
            "listing workflow jobs is not supported here".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_status_parses_documented_values_and_keeps_others() {
        for s in [
            "queued",
            "in_progress",
            "completed",
            "waiting",
            "requested",
            "pending",
        ] {
            let status = ForgeJobStatus::from(s.to_owned());
            assert!(!matches!(status, ForgeJobStatus::Other(_)), "{s}");
            assert_eq!(status.as_str(), s);
        }
        let later: ForgeJobStatus = serde_json::from_str("\"stalled\"").unwrap();
        assert_eq!(later, ForgeJobStatus::Other("stalled".into()));
        assert_eq!(serde_json::to_string(&later).unwrap(), "\"stalled\"");
        assert_eq!(
            serde_json::to_string(&ForgeJobStatus::InProgress).unwrap(),
            "\"in_progress\""
        );
    }
}
