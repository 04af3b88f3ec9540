//! Request and response bodies of the admin, instance and webhook routes.
//!
//! Admin request bodies refuse fields they do not know
//! (`deny_unknown_fields`): a misspelt `max_runer` is an error the operator
//! sees, not a setting silently left at its default. The callbacks booting
//! instances send (`StatusCallback`, `SystemInfoCallback`) stay lenient:
//! they come from garm providers' install scripts, whose versions differ.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Every error answer: `{"error": "...", "details": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// Answer of the webhook routes and other fire-and-forget calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookAck {
    /// `recorded`, `duplicate`, `stale`, `unmatched`, `ignored` or `pong`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FirstRunRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub full_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserResponse {
    pub id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointCreate {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub base_url: String,
    pub api_base_url: String,
    /// PEM bundle to trust for this endpoint (GHES with a private CA).
    #[serde(default)]
    pub ca_bundle: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointUpdate {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// An empty string removes the bundle.
    #[serde(default)]
    pub ca_bundle: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EndpointResponse {
    pub name: String,
    pub description: String,
    pub base_url: String,
    pub api_base_url: String,
    pub ca_bundle: Option<String>,
}

/// New credentials. Secrets are write-only: no response ever contains them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsCreate {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Name of the endpoint these credentials are for.
    pub endpoint: String,
    /// `pat` or `app`.
    pub auth_type: String,
    /// The personal access token (auth_type `pat`).
    #[serde(default)]
    pub pat_oauth_token: Option<String>,
    #[serde(default)]
    pub app_id: Option<i64>,
    #[serde(default)]
    pub installation_id: Option<i64>,
    /// PEM private key of the GitHub App (auth_type `app`).
    #[serde(default)]
    pub private_key: Option<String>,
    /// Secret of the App's own webhook, to accept deliveries to `POST /webhooks`.
    #[serde(default)]
    pub app_webhook_secret: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsUpdate {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub pat_oauth_token: Option<String>,
    #[serde(default)]
    pub app_id: Option<i64>,
    #[serde(default)]
    pub installation_id: Option<i64>,
    #[serde(default)]
    pub private_key: Option<String>,
    /// An empty string removes it.
    #[serde(default)]
    pub app_webhook_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CredentialsResponse {
    pub name: String,
    pub description: String,
    pub endpoint: String,
    pub auth_type: String,
    pub app_id: Option<i64>,
    pub installation_id: Option<i64>,
    pub has_app_webhook_secret: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// New repository, organization or enterprise. `owner` is only for
/// repositories; for an enterprise `name` is its slug.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntityCreate {
    #[serde(default)]
    pub owner: Option<String>,
    pub name: String,
    pub credentials_name: String,
    /// Generated (and returned once) when not given.
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntityUpdate {
    #[serde(default)]
    pub credentials_name: Option<String>,
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EntityResponse {
    pub id: Uuid,
    /// `repository`, `organization` or `enterprise`.
    pub kind: String,
    /// Repository owner; empty for organizations and enterprises.
    pub owner: String,
    pub name: String,
    pub credentials_name: String,
    /// The endpoint of its credentials (tells apart entities of the same
    /// name on GitHub and a GHES).
    #[serde(default)]
    pub endpoint: String,
    /// Where GitHub must send this entity's `workflow_job` deliveries.
    pub webhook_url: String,
    pub pool_count: u32,
    /// Only in the answer to a create that generated the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The entity's hook on GitHub (`repo|org webhook install|show`), as
/// GitHub reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookInfo {
    /// GitHub's hook id.
    pub id: i64,
    /// Where GitHub delivers: the entity's `webhook_url`.
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    pub insecure_ssl: bool,
}

/// Options of `POST …/{id}/webhook`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInstall {
    /// Let GitHub skip TLS verification when it delivers.
    #[serde(default)]
    pub insecure_ssl: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolCreate {
    pub provider_name: String,
    pub image: String,
    pub flavor: String,
    /// Runner labels; a job is served when all its labels are among these.
    pub tags: Vec<String>,
    #[serde(default)]
    pub os_type: Option<String>,
    #[serde(default)]
    pub os_arch: Option<String>,
    #[serde(default)]
    pub min_idle_runners: Option<u32>,
    #[serde(default)]
    pub max_runners: Option<u32>,
    #[serde(default)]
    pub runner_prefix: Option<String>,
    /// Minutes from creation to an idle runner before the instance is replaced.
    #[serde(default)]
    pub runner_bootstrap_timeout: Option<u32>,
    /// Provider-specific settings; must be a JSON object.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub extra_specs: Option<serde_json::Value>,
    #[serde(default)]
    pub runner_group: Option<String>,
    #[serde(default)]
    pub priority: Option<u32>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolUpdate {
    #[serde(default)]
    pub provider_name: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub flavor: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub os_type: Option<String>,
    #[serde(default)]
    pub os_arch: Option<String>,
    #[serde(default)]
    pub min_idle_runners: Option<u32>,
    #[serde(default)]
    pub max_runners: Option<u32>,
    #[serde(default)]
    pub runner_prefix: Option<String>,
    #[serde(default)]
    pub runner_bootstrap_timeout: Option<u32>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub extra_specs: Option<serde_json::Value>,
    /// An empty string selects the default group.
    #[serde(default)]
    pub runner_group: Option<String>,
    #[serde(default)]
    pub priority: Option<u32>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A pool's boot data as its instances get it (`GET /api/v1/pools/{id}/userdata`),
/// for inspection. No secret is in it: the per-instance parts (name, token,
/// runner download) are placeholders, listed in `placeholders`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolUserdata {
    pub pool_id: Uuid,
    pub provider_name: String,
    /// `text/cloud-config`: what cloud-init (or the NoCloud seed) gets.
    pub content_type: String,
    /// The `#cloud-config` document, the boot script under `write_files`.
    pub userdata: String,
    /// What each placeholder stands for.
    pub placeholders: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolResponse {
    pub id: Uuid,
    pub entity_id: Uuid,
    pub provider_name: String,
    pub image: String,
    pub flavor: String,
    pub tags: Vec<String>,
    pub os_type: String,
    pub os_arch: String,
    pub min_idle_runners: u32,
    pub max_runners: u32,
    pub runner_prefix: String,
    pub runner_bootstrap_timeout: u32,
    #[schema(value_type = Object)]
    pub extra_specs: serde_json::Value,
    pub runner_group: Option<String>,
    pub priority: u32,
    pub enabled: bool,
    /// Instances currently holding capacity.
    pub instance_count: u32,
    /// Whether the pool's creates work, or it is backing off after failures.
    #[serde(default)]
    pub health: PoolHealth,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A pool's circuit breaker as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolHealth {
    /// `ok`, or `degraded` while the pool backs off after consecutive
    /// failed creates (no registration, no create before
    /// `next_attempt_at`; then one probe at a time).
    pub state: String,
    /// Failed creates since the last successful one.
    pub consecutive_failures: u32,
    /// Why the latest create failed.
    pub last_error: Option<String>,
    /// While degraded: the earliest time the next create may start (a
    /// probe under way holds it later).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl Default for PoolHealth {
    fn default() -> Self {
        Self {
            state: "ok".into(),
            consecutive_failures: 0,
            last_error: None,
            next_attempt_at: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceResponse {
    pub name: String,
    pub pool_id: Uuid,
    pub provider_id: Option<String>,
    /// `pending_create`, `creating`, `running`, `error`, `pending_delete`, `deleting`, `deleted`.
    pub status: String,
    /// `pending`, `installing`, `idle`, `active`, `terminated`, `failed`.
    pub runner_status: String,
    pub runner_id: Option<i64>,
    pub job_id: Option<i64>,
    pub addresses: Vec<String>,
    pub status_message: Option<String>,
    pub create_attempts: u32,
    /// What the instance reported through `callbacks/system-info`.
    #[serde(default)]
    pub os_name: Option<String>,
    #[serde(default)]
    pub os_version: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobResponse {
    pub id: i64,
    pub run_attempt: i64,
    /// `waiting`, `queued`, `in_progress` or `completed`.
    pub status: String,
    pub conclusion: Option<String>,
    pub labels: Vec<String>,
    /// `owner/name`.
    pub repository: String,
    pub runner_name: Option<String>,
    pub name: Option<String>,
    pub workflow_run_id: Option<i64>,
    pub entity_id: Uuid,
    /// `None` when no pool matched the job's labels.
    pub pool_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProviderResponse {
    pub name: String,
    /// `libvirt`, `azure` or `external`.
    pub kind: String,
    pub description: String,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ControllerCounts {
    pub pools: u64,
    pub instances: u64,
    pub queued_jobs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ControllerResponse {
    pub controller_id: Uuid,
    pub version: String,
    /// Base of every URL below, from the daemon's config.
    pub public_url: String,
    /// Entity webhook URLs are `<webhook_base_url>/<entity id>`.
    pub webhook_base_url: String,
    pub metadata_url: String,
    pub callback_url: String,
    /// Controller ids of garm deployments imported here: deliveries to
    /// `/webhooks/<id>` (where garm's hooks point) are the shared hook,
    /// as are those to this controller's id.
    #[serde(default)]
    pub garm_controller_ids: Vec<String>,
    pub providers: Vec<ProviderResponse>,
    pub counts: ControllerCounts,
}

/// Overrides of the URLs derived from `public_url`; an empty string
/// restores the derived value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControllerUpdate {
    #[serde(default)]
    pub metadata_url: Option<String>,
    #[serde(default)]
    pub callback_url: Option<String>,
    #[serde(default)]
    pub webhook_base_url: Option<String>,
}

/// What a booting instance reports about its runner.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusCallback {
    /// `installing`, `idle` or `failed` while the runner bootstraps;
    /// `terminated` once it has run (the runner process exited; its message
    /// says how).
    pub status: String,
    #[serde(default)]
    pub message: Option<String>,
    /// The GitHub runner id, once the runner knows it (garm's scripts send
    /// it with `idle`, `null` before).
    #[serde(default)]
    pub agent_id: Option<i64>,
}

/// What a booting instance reports about itself (garm's
/// `UpdateSystemInfoParams`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SystemInfoCallback {
    #[serde(default)]
    pub os_name: Option<String>,
    #[serde(default)]
    pub os_version: Option<String>,
    #[serde(default)]
    pub agent_id: Option<i64>,
}

/// The CA certificates an instance should trust, as garm answers
/// `system/cert-bundle`: each certificate's PEM, base64 (Go's `[]byte`),
/// keyed by its decimal serial number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertificateBundle {
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub root_certificates: std::collections::BTreeMap<String, String>,
}

/// Where the instance calls home (garm's `MetadataServiceAccessDetails`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MetadataAccess {
    pub callback_url: String,
    pub metadata_url: String,
    /// garm's agent; Hangar has none, so it is empty.
    pub agent_url: String,
}

/// One runner download (GitHub's `RunnerApplicationDownload`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunnerTools {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256_checksum: Option<String>,
}

/// What a booting instance may learn about itself (garm's
/// `InstanceMetadata`, same field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunnerMetadata {
    pub metadata_access: MetadataAccess,
    /// Always `github`.
    pub forge_type: String,
    /// The repository, organization or enterprise URL `config.sh` takes.
    pub runner_registration_url: String,
    pub runner_name: String,
    /// Labels for `config.sh --labels`; empty for JIT instances, whose
    /// labels are in their JIT config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runner_labels: Vec<String>,
    /// `forge_ca`: the endpoint's PEM bundle, base64.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ca_bundles: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub extra_specs: serde_json::Map<String, serde_json::Value>,
    /// garm's agent mode; always false.
    pub agent_mode: bool,
    pub jit_enabled: bool,
    pub runner_tools: RunnerTools,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `ok` or `degraded`.
    pub status: String,
    pub database: String,
    #[serde(default)]
    pub providers: Vec<ProviderResponse>,
}
