//! Bodies of the scale set routes (`/api/v1/scalesets`,
//! `/api/v1/{entity}/{id}/scalesets`). A scale set's provider settings
//! are a pool's, minus tags and priority: its runners answer only to its
//! name, and no webhook job is ever matched to them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::dto::PoolHealth;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleSetCreate {
    /// The `runs-on` value workflows target it by; a runner label.
    pub name: String,
    pub provider_name: String,
    pub image: String,
    pub flavor: String,
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
    /// GitHub runner group; absent or empty is the default group.
    #[serde(default)]
    pub runner_group: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleSetUpdate {
    /// Renames it on GitHub too; workflows must then use the new name.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub provider_name: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub flavor: Option<String>,
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
    pub enabled: Option<bool>,
}

/// The counters of the newest queue message applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScaleSetStatisticsResponse {
    pub total_available_jobs: i64,
    pub total_acquired_jobs: i64,
    pub total_assigned_jobs: i64,
    pub total_running_jobs: i64,
    pub total_registered_runners: i64,
    pub total_busy_runners: i64,
    pub total_idle_runners: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScaleSetResponse {
    pub id: Uuid,
    pub entity_id: Uuid,
    /// The pool carrying its runners (`runner ls --pool` takes it).
    pub pool_id: Uuid,
    pub name: String,
    pub provider_name: String,
    pub image: String,
    pub flavor: String,
    pub os_type: String,
    pub os_arch: String,
    pub min_idle_runners: u32,
    pub max_runners: u32,
    pub runner_prefix: String,
    pub runner_bootstrap_timeout: u32,
    #[schema(value_type = Object)]
    pub extra_specs: serde_json::Value,
    pub runner_group: Option<String>,
    pub enabled: bool,
    /// The scale set's id on GitHub (the Actions service).
    pub github_id: Option<i64>,
    pub runner_group_id: Option<i64>,
    /// `active`, `deleted_on_github` (GitHub no longer has it; its listener
    /// stopped) or `error` (`last_error` says why).
    pub state: String,
    pub last_error: Option<String>,
    pub statistics: Option<ScaleSetStatisticsResponse>,
    /// min(max_runners, min_idle_runners + assigned jobs), as of the last
    /// message applied.
    pub desired_runners: u32,
    /// Instances currently holding capacity.
    pub instance_count: u32,
    /// Of those, runners idle and runners running a job.
    pub idle_runners: u32,
    pub active_runners: u32,
    #[serde(default)]
    pub health: PoolHealth,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
