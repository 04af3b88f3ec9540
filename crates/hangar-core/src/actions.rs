//! The `ActionsService` trait: GitHub's runner scale set API (the Actions
//! service behind `actions/runner-registration`), as Hangar uses it.
//!
//! A scale set is another way jobs reach the one scheduling engine: a
//! listener holds a message session on the scale set, long-polls its queue,
//! acquires the jobs it is offered and applies each batch to the store
//! before acknowledging it. Runners register through
//! [`ActionsService::generate_jit_config`] and boot exactly like a pool's.
//!
//! The implementation (over HTTP, with the registration-token exchange and
//! the admin token's refresh kept inside it) lives in `hangar-github`; the
//! scheduler only sees `Arc<dyn ActionsService>` and [`ForgeError`], whose
//! kinds decide its next step. [`ForgeError::NotFound`] on a scale set
//! means it was deleted on GitHub.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::forge::{ForgeError, ForgeTarget, JitConfig};
use crate::secret::Secret;

/// A runner scale set as the Actions service describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteScaleSet {
    pub id: i64,
    pub name: String,
    pub runner_group_id: i64,
    pub runner_group_name: Option<String>,
    /// Label names (the scale set's name is always one of them).
    pub labels: Vec<String>,
    pub disable_update: bool,
}

/// What Hangar asks the Actions service to create or update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSetRequest {
    pub name: String,
    pub runner_group_id: i64,
    /// Extra labels besides the name (none by default).
    pub labels: Vec<String>,
    pub disable_update: bool,
}

/// A message session: one listener's right to read a scale set's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSession {
    pub session_id: String,
    pub owner_name: String,
    pub scale_set_id: i64,
    pub message_queue_url: String,
    pub message_queue_access_token: Secret,
    pub statistics: Option<ScaleSetStatistics>,
}

/// The counters the service sends with a session and every message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleSetStatistics {
    pub total_available_jobs: i64,
    pub total_acquired_jobs: i64,
    pub total_assigned_jobs: i64,
    pub total_running_jobs: i64,
    pub total_registered_runners: i64,
    pub total_busy_runners: i64,
    pub total_idle_runners: i64,
}

/// What every job message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleSetJob {
    /// The request id the service acquires and assigns by.
    pub runner_request_id: i64,
    /// `owner/name` of the repository the job runs for (`ownerName` /
    /// `repositoryName` on the wire).
    pub repository: String,
    /// The service's job id (a string on the wire, not the REST job id).
    pub job_id: String,
    pub job_display_name: Option<String>,
    pub workflow_run_id: Option<i64>,
    pub request_labels: Vec<String>,
    pub queue_time: Option<DateTime<Utc>>,
}

/// One job event of a message batch, in the order the service sent them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ScaleSetJobEvent {
    /// Offered to this scale set; acquire it to have it assigned.
    Available { job: ScaleSetJob },
    /// Assigned to this scale set: a runner of it will take the job.
    Assigned { job: ScaleSetJob },
    Started {
        job: ScaleSetJob,
        runner_id: i64,
        runner_name: String,
    },
    Completed {
        job: ScaleSetJob,
        result: String,
        runner_id: i64,
        runner_name: String,
    },
}

impl ScaleSetJobEvent {
    pub fn job(&self) -> &ScaleSetJob {
        match self {
            ScaleSetJobEvent::Available { job }
            | ScaleSetJobEvent::Assigned { job }
            | ScaleSetJobEvent::Started { job, .. }
            | ScaleSetJobEvent::Completed { job, .. } => job,
        }
    }
}

/// One message of a scale set's queue (`RunnerScaleSetJobMessages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSetMessage {
    pub message_id: i64,
    pub statistics: Option<ScaleSetStatistics>,
    pub events: Vec<ScaleSetJobEvent>,
}

/// A runner of a scale set as the service lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleSetRunner {
    pub id: i64,
    pub name: String,
    pub scale_set_id: i64,
}

/// GitHub's runner scale set API, as Hangar uses it.
#[async_trait]
pub trait ActionsService: Send + Sync + fmt::Debug {
    /// The id of a runner group by name (`None`: the default group).
    async fn runner_group_id(
        &self,
        target: &ForgeTarget,
        name: Option<&str>,
    ) -> Result<i64, ForgeError>;

    /// The scale set named `name` in a runner group, if any.
    async fn find_scale_set(
        &self,
        target: &ForgeTarget,
        runner_group_id: i64,
        name: &str,
    ) -> Result<Option<RemoteScaleSet>, ForgeError>;

    /// A scale set by id; `None` when it no longer exists.
    async fn get_scale_set(
        &self,
        target: &ForgeTarget,
        scale_set_id: i64,
    ) -> Result<Option<RemoteScaleSet>, ForgeError>;

    async fn create_scale_set(
        &self,
        target: &ForgeTarget,
        req: &ScaleSetRequest,
    ) -> Result<RemoteScaleSet, ForgeError>;

    async fn update_scale_set(
        &self,
        target: &ForgeTarget,
        scale_set_id: i64,
        req: &ScaleSetRequest,
    ) -> Result<RemoteScaleSet, ForgeError>;

    /// Removes a scale set; already gone is `Ok`.
    async fn delete_scale_set(
        &self,
        target: &ForgeTarget,
        scale_set_id: i64,
    ) -> Result<(), ForgeError>;

    /// Opens a message session. Another listener holding one is
    /// [`ForgeError::AlreadyExists`] (the service's 409).
    async fn create_session(
        &self,
        target: &ForgeTarget,
        scale_set_id: i64,
        owner_name: &str,
    ) -> Result<MessageSession, ForgeError>;

    /// Refreshes a session (and its queue access token).
    async fn refresh_session(
        &self,
        target: &ForgeTarget,
        session: &MessageSession,
    ) -> Result<MessageSession, ForgeError>;

    /// Closes a session; already gone is `Ok`.
    async fn delete_session(
        &self,
        target: &ForgeTarget,
        session: &MessageSession,
    ) -> Result<(), ForgeError>;

    /// One long poll of the queue: `None` when the service had nothing
    /// (202) before its wait ran out. An expired queue token is
    /// [`ForgeError::Unauthorized`]: refresh the session and poll again.
    async fn get_message(
        &self,
        session: &MessageSession,
        last_message_id: i64,
        max_capacity: u32,
    ) -> Result<Option<ScaleSetMessage>, ForgeError>;

    /// Acknowledges a message once it has been applied.
    async fn delete_message(
        &self,
        session: &MessageSession,
        message_id: i64,
    ) -> Result<(), ForgeError>;

    /// Asks for jobs offered by `JobAvailable`; returns the request ids the
    /// service gave this scale set.
    async fn acquire_jobs(
        &self,
        target: &ForgeTarget,
        session: &MessageSession,
        runner_request_ids: &[i64],
    ) -> Result<Vec<i64>, ForgeError>;

    /// Registers an ephemeral runner of the scale set and returns its JIT
    /// config. A name clash is [`ForgeError::AlreadyExists`].
    async fn generate_jit_config(
        &self,
        target: &ForgeTarget,
        scale_set_id: i64,
        runner_name: &str,
        work_folder: &str,
    ) -> Result<JitConfig, ForgeError>;

    async fn get_runner_by_name(
        &self,
        target: &ForgeTarget,
        name: &str,
    ) -> Result<Option<ScaleSetRunner>, ForgeError>;

    /// Removes a runner; already gone is `Ok`, a busy one
    /// [`ForgeError::Busy`].
    async fn delete_runner(&self, target: &ForgeTarget, runner_id: i64) -> Result<(), ForgeError>;
}
