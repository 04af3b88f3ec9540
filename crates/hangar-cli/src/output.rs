//! Rendering answers: tables for people (ids and names first), or the API's
//! JSON unchanged for scripts. Rendering returns strings so it is tested
//! without a terminal.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use comfy_table::{ColumnConstraint, ContentArrangement, Table, Width, presets};
use hangar_api::{
    ControllerResponse, CredentialsResponse, EndpointResponse, EntityResponse, InstanceResponse,
    JobResponse, PoolResponse, ProviderResponse, UserResponse, WebhookInfo,
};
use serde::Serialize;
use uuid::Uuid;

use crate::args::OutputFormat;
use crate::profiles::ProfileSummary;

/// How wide a default table may be: it wraps long cells to fit, ids never.
pub const TABLE_WIDTH: u16 = 100;

/// Something shown as one row of a list, or as a field/value table alone.
pub trait Tabular {
    /// Every column (`--long`, `--output wide`).
    const HEADERS: &'static [&'static str];
    fn row(&self) -> Vec<String>;
    /// Every field, for `show`.
    fn fields(&self) -> Vec<(&'static str, String)>;
    /// The default table's columns: what an operator reads first, names
    /// where the wide table has ids. The whole row unless a type narrows it.
    const COLUMNS: &'static [&'static str] = Self::HEADERS;
    fn columns(&self, _names: &Names) -> Vec<String> {
        self.row()
    }
}

/// What the default tables print instead of ids: entities by name, pools
/// by their entity and tags. An id it does not know shows as its first
/// eight characters.
#[derive(Debug, Default, Clone)]
pub struct Names {
    entities: HashMap<Uuid, String>,
    pools: HashMap<Uuid, String>,
}

impl Names {
    pub fn new(entities: &[EntityResponse], pools: &[PoolResponse]) -> Self {
        let entities: HashMap<Uuid, String> =
            entities.iter().map(|e| (e.id, entity_name(e))).collect();
        let pools = pools
            .iter()
            .map(|p| {
                let owner = entities
                    .get(&p.entity_id)
                    .cloned()
                    .unwrap_or_else(|| short_id(&p.entity_id));
                (p.id, format!("{owner} [{}]", p.tags.join(", ")))
            })
            .collect();
        Self { entities, pools }
    }

    pub fn entity(&self, id: &Uuid) -> String {
        self.entities
            .get(id)
            .cloned()
            .unwrap_or_else(|| short_id(id))
    }

    pub fn pool(&self, id: &Uuid) -> String {
        self.pools.get(id).cloned().unwrap_or_else(|| short_id(id))
    }
}

/// `owner/name` for a repository, the name otherwise.
fn entity_name(e: &EntityResponse) -> String {
    if e.owner.is_empty() || e.owner == e.name {
        e.name.clone()
    } else {
        format!("{}/{}", e.owner, e.name)
    }
}

fn short_id(id: &Uuid) -> String {
    id.to_string()[..8].to_owned()
}

pub fn list<T: Tabular + Serialize>(format: OutputFormat, items: &[T]) -> anyhow::Result<String> {
    list_named(format, items, &Names::default())
}

/// [`list`], with the names the default table shows for ids.
pub fn list_named<T: Tabular + Serialize>(
    format: OutputFormat,
    items: &[T],
    names: &Names,
) -> anyhow::Result<String> {
    match format {
        OutputFormat::Json => json(&items),
        OutputFormat::Wide => {
            let mut t = table();
            t.set_header(T::HEADERS.to_vec());
            for i in items {
                t.add_row(i.row());
            }
            Ok(t.to_string())
        }
        OutputFormat::Table => {
            let mut t = table();
            t.set_header(T::COLUMNS.to_vec());
            for i in items {
                t.add_row(i.columns(names));
            }
            fit(&mut t, T::COLUMNS);
            Ok(t.to_string())
        }
    }
}

pub fn one<T: Tabular + Serialize>(format: OutputFormat, item: &T) -> anyhow::Result<String> {
    match format {
        OutputFormat::Json => json(item),
        OutputFormat::Table | OutputFormat::Wide => {
            let mut t = table();
            t.set_header(vec!["FIELD", "VALUE"]);
            for (k, v) in item.fields() {
                t.add_row(vec![k.to_owned(), v]);
            }
            if format == OutputFormat::Table {
                fit(&mut t, &["FIELD"]);
            }
            Ok(t.to_string())
        }
    }
}

pub fn json<T: Serialize + ?Sized>(v: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)?)
}

fn table() -> Table {
    let mut t = Table::new();
    // Plain ASCII: readable in logs, CI output and any terminal font.
    t.load_preset(presets::ASCII_FULL_CONDENSED);
    t
}

/// Columns that are never wrapped: ids, names and short states. The rest
/// (tags, messages, URLs) wrap.
const WHOLE: &[&str] = &[
    "ID",
    "NAME",
    "FIELD",
    "STATUS",
    "RUNNER",
    "TRIES",
    "AGE",
    "RUNNERS",
    "STATE",
    "POOLS",
    "AUTH TYPE",
    "APP ID",
    "CA BUNDLE",
];

/// Wraps long cells so the table fits [`TABLE_WIDTH`], whatever the
/// terminal; ids, names and states are never broken.
fn fit(t: &mut Table, headers: &[&str]) {
    t.set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(TABLE_WIDTH);
    for (i, h) in headers.iter().enumerate() {
        if let Some(c) = t.column_mut(i) {
            c.set_constraint(if WHOLE.contains(h) {
                ColumnConstraint::ContentWidth
            } else {
                ColumnConstraint::LowerBoundary(Width::Fixed(8))
            });
        }
    }
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// How long ago, in the largest unit that is not zero ("3m", "2h", "5d").
fn age(t: &DateTime<Utc>) -> String {
    let secs = (Utc::now() - *t).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

impl Tabular for EndpointResponse {
    const HEADERS: &'static [&'static str] = &[
        "NAME",
        "BASE URL",
        "API BASE URL",
        "CA BUNDLE",
        "DESCRIPTION",
    ];
    const COLUMNS: &'static [&'static str] = &["NAME", "BASE URL", "API BASE URL", "CA BUNDLE"];
    fn columns(&self, _: &Names) -> Vec<String> {
        self.row()[..4].to_vec()
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.base_url.clone(),
            self.api_base_url.clone(),
            yes_no(self.ca_bundle.as_deref().is_some_and(|c| !c.is_empty())),
            self.description.clone(),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("name", self.name.clone()),
            ("description", self.description.clone()),
            ("base_url", self.base_url.clone()),
            ("api_base_url", self.api_base_url.clone()),
            ("ca_bundle", opt(&self.ca_bundle)),
        ]
    }
}

impl Tabular for CredentialsResponse {
    const HEADERS: &'static [&'static str] = &[
        "NAME",
        "ENDPOINT",
        "AUTH TYPE",
        "APP ID",
        "INSTALLATION ID",
        "APP WEBHOOK SECRET",
        "DESCRIPTION",
    ];
    const COLUMNS: &'static [&'static str] =
        &["NAME", "ENDPOINT", "AUTH TYPE", "APP ID", "DESCRIPTION"];
    fn columns(&self, _: &Names) -> Vec<String> {
        vec![
            self.name.clone(),
            self.endpoint.clone(),
            self.auth_type.clone(),
            opt(&self.app_id),
            self.description.clone(),
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.endpoint.clone(),
            self.auth_type.clone(),
            opt(&self.app_id),
            opt(&self.installation_id),
            yes_no(self.has_app_webhook_secret),
            self.description.clone(),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("name", self.name.clone()),
            ("description", self.description.clone()),
            ("endpoint", self.endpoint.clone()),
            ("auth_type", self.auth_type.clone()),
            ("app_id", opt(&self.app_id)),
            ("installation_id", opt(&self.installation_id)),
            (
                "has_app_webhook_secret",
                yes_no(self.has_app_webhook_secret),
            ),
            ("created_at", time(&self.created_at)),
            ("updated_at", time(&self.updated_at)),
        ]
    }
}

impl Tabular for EntityResponse {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "OWNER",
        "NAME",
        "ENDPOINT",
        "CREDENTIALS",
        "POOLS",
        "WEBHOOK URL",
    ];
    const COLUMNS: &'static [&'static str] = &["ID", "NAME", "ENDPOINT", "CREDENTIALS", "POOLS"];
    fn columns(&self, _: &Names) -> Vec<String> {
        vec![
            self.id.to_string(),
            entity_name(self),
            self.endpoint.clone(),
            self.credentials_name.clone(),
            self.pool_count.to_string(),
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.owner.clone(),
            self.name.clone(),
            self.endpoint.clone(),
            self.credentials_name.clone(),
            self.pool_count.to_string(),
            self.webhook_url.clone(),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        // The generated secret is not a field here: the caller prints it
        // once, apart, so it is not mistaken for something stored to show.
        vec![
            ("id", self.id.to_string()),
            ("kind", self.kind.clone()),
            ("owner", self.owner.clone()),
            ("name", self.name.clone()),
            ("credentials_name", self.credentials_name.clone()),
            ("endpoint", self.endpoint.clone()),
            ("webhook_url", self.webhook_url.clone()),
            ("pool_count", self.pool_count.to_string()),
            ("created_at", time(&self.created_at)),
            ("updated_at", time(&self.updated_at)),
        ]
    }
}

impl Tabular for WebhookInfo {
    const HEADERS: &'static [&'static str] = &["ID", "URL", "EVENTS", "ACTIVE", "INSECURE SSL"];
    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.url.clone(),
            self.events.join(","),
            self.active.to_string(),
            self.insecure_ssl.to_string(),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            ("url", self.url.clone()),
            ("events", self.events.join(",")),
            ("active", self.active.to_string()),
            ("insecure_ssl", self.insecure_ssl.to_string()),
        ]
    }
}

impl Tabular for PoolResponse {
    const HEADERS: &'static [&'static str] = &[
        "ID", "ENTITY", "PROVIDER", "IMAGE", "FLAVOR", "TAGS", "MIN IDLE", "MAX", "RUNNERS",
        "PRIORITY", "ENABLED", "HEALTH",
    ];
    const COLUMNS: &'static [&'static str] = &["ID", "ENTITY", "TAGS", "RUNNERS", "STATE"];
    fn columns(&self, names: &Names) -> Vec<String> {
        vec![
            self.id.to_string(),
            names.entity(&self.entity_id),
            // Spaced, so a narrow column wraps between tags.
            self.tags.join(", "),
            format!("{}/{}", self.instance_count, self.max_runners),
            if self.enabled {
                self.health.state.clone()
            } else {
                "disabled".into()
            },
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.entity_id.to_string(),
            self.provider_name.clone(),
            self.image.clone(),
            self.flavor.clone(),
            self.tags.join(","),
            self.min_idle_runners.to_string(),
            self.max_runners.to_string(),
            self.instance_count.to_string(),
            self.priority.to_string(),
            self.enabled.to_string(),
            self.health.state.clone(),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            ("entity_id", self.entity_id.to_string()),
            ("provider_name", self.provider_name.clone()),
            ("image", self.image.clone()),
            ("flavor", self.flavor.clone()),
            ("tags", self.tags.join(",")),
            ("os_type", self.os_type.clone()),
            ("os_arch", self.os_arch.clone()),
            ("min_idle_runners", self.min_idle_runners.to_string()),
            ("max_runners", self.max_runners.to_string()),
            ("runner_prefix", self.runner_prefix.clone()),
            (
                "runner_bootstrap_timeout",
                format!("{} min", self.runner_bootstrap_timeout),
            ),
            ("extra_specs", self.extra_specs.to_string()),
            ("runner_group", opt(&self.runner_group)),
            ("priority", self.priority.to_string()),
            ("enabled", self.enabled.to_string()),
            ("instance_count", self.instance_count.to_string()),
            ("health", self.health.state.clone()),
            (
                "consecutive_failures",
                self.health.consecutive_failures.to_string(),
            ),
            ("last_error", opt(&self.health.last_error)),
            (
                "next_attempt_at",
                self.health
                    .next_attempt_at
                    .as_ref()
                    .map(time)
                    .unwrap_or_default(),
            ),
            ("created_at", time(&self.created_at)),
            ("updated_at", time(&self.updated_at)),
        ]
    }
}

impl Tabular for InstanceResponse {
    const HEADERS: &'static [&'static str] = &[
        "NAME",
        "POOL",
        "STATUS",
        "RUNNER STATUS",
        "PROVIDER ID",
        "JOB",
        "CREATE ATTEMPTS",
        "CREATED",
        "STATUS MESSAGE",
    ];
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.pool_id.to_string(),
            self.status.clone(),
            self.runner_status.clone(),
            opt(&self.provider_id),
            opt(&self.job_id),
            self.create_attempts.to_string(),
            time(&self.created_at),
            opt(&self.status_message),
        ]
    }
    const COLUMNS: &'static [&'static str] = &[
        "NAME", "POOL", "STATUS", "RUNNER", "TRIES", "AGE", "MESSAGE",
    ];
    fn columns(&self, names: &Names) -> Vec<String> {
        vec![
            self.name.clone(),
            names.pool(&self.pool_id),
            self.status.clone(),
            self.runner_status.clone(),
            self.create_attempts.to_string(),
            age(&self.created_at),
            opt(&self.status_message),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("name", self.name.clone()),
            ("pool_id", self.pool_id.to_string()),
            ("provider_id", opt(&self.provider_id)),
            ("status", self.status.clone()),
            ("runner_status", self.runner_status.clone()),
            ("runner_id", opt(&self.runner_id)),
            ("job_id", opt(&self.job_id)),
            ("addresses", self.addresses.join(", ")),
            ("status_message", opt(&self.status_message)),
            ("create_attempts", self.create_attempts.to_string()),
            ("created_at", time(&self.created_at)),
            ("updated_at", time(&self.updated_at)),
        ]
    }
}

impl Tabular for JobResponse {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "ATTEMPT",
        "STATUS",
        "CONCLUSION",
        "REPOSITORY",
        "LABELS",
        "RUNNER",
        "POOL",
        "UPDATED",
    ];
    const COLUMNS: &'static [&'static str] =
        &["ID", "STATUS", "REPOSITORY", "LABELS", "RUNNER", "AGE"];
    fn columns(&self, _: &Names) -> Vec<String> {
        let status = match &self.conclusion {
            Some(c) => format!("{} ({c})", self.status),
            None => self.status.clone(),
        };
        let mut labels = self.labels.join(", ");
        if self.pool_id.is_none() {
            labels.push_str(" (unmatched)");
        }
        vec![
            self.id.to_string(),
            status,
            self.repository.clone(),
            labels,
            opt(&self.runner_name),
            age(&self.created_at),
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.run_attempt.to_string(),
            self.status.clone(),
            opt(&self.conclusion),
            self.repository.clone(),
            self.labels.join(","),
            opt(&self.runner_name),
            self.pool_id
                .map(|p| p.to_string())
                .unwrap_or_else(|| "(unmatched)".into()),
            time(&self.updated_at),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            ("run_attempt", self.run_attempt.to_string()),
            ("status", self.status.clone()),
            ("conclusion", opt(&self.conclusion)),
            ("name", opt(&self.name)),
            ("repository", self.repository.clone()),
            ("labels", self.labels.join(",")),
            ("runner_name", opt(&self.runner_name)),
            ("workflow_run_id", opt(&self.workflow_run_id)),
            ("entity_id", self.entity_id.to_string()),
            ("pool_id", opt(&self.pool_id)),
            ("created_at", time(&self.created_at)),
            ("updated_at", time(&self.updated_at)),
        ]
    }
}

impl Tabular for ProviderResponse {
    const HEADERS: &'static [&'static str] = &["NAME", "KIND", "HEALTHY", "DESCRIPTION", "ERROR"];
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.kind.clone(),
            yes_no(self.healthy),
            self.description.clone(),
            opt(&self.error),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("name", self.name.clone()),
            ("kind", self.kind.clone()),
            ("description", self.description.clone()),
            ("healthy", yes_no(self.healthy)),
            ("error", opt(&self.error)),
        ]
    }
}

impl Tabular for ControllerResponse {
    const HEADERS: &'static [&'static str] = &["CONTROLLER ID", "VERSION", "PUBLIC URL"];
    fn row(&self) -> Vec<String> {
        vec![
            self.controller_id.to_string(),
            self.version.clone(),
            self.public_url.clone(),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        let providers = self
            .providers
            .iter()
            .map(|p| {
                format!(
                    "{} ({}, {})",
                    p.name,
                    p.kind,
                    if p.healthy { "healthy" } else { "unhealthy" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        vec![
            ("controller_id", self.controller_id.to_string()),
            ("version", self.version.clone()),
            ("public_url", self.public_url.clone()),
            ("webhook_base_url", self.webhook_base_url.clone()),
            ("metadata_url", self.metadata_url.clone()),
            ("callback_url", self.callback_url.clone()),
            ("garm_controller_ids", self.garm_controller_ids.join(", ")),
            ("providers", providers),
            ("pools", self.counts.pools.to_string()),
            ("instances", self.counts.instances.to_string()),
            ("queued_jobs", self.counts.queued_jobs.to_string()),
        ]
    }
}

impl Tabular for UserResponse {
    const HEADERS: &'static [&'static str] = &["ID", "USERNAME", "EMAIL", "FULL NAME", "ADMIN"];
    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.username.clone(),
            opt(&self.email),
            opt(&self.full_name),
            yes_no(self.is_admin),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            ("username", self.username.clone()),
            ("email", opt(&self.email)),
            ("full_name", opt(&self.full_name)),
            ("is_admin", yes_no(self.is_admin)),
            ("created_at", time(&self.created_at)),
        ]
    }
}

impl Tabular for ProfileSummary {
    const HEADERS: &'static [&'static str] =
        &["NAME", "URL", "USERNAME", "ACTIVE", "TOKEN EXPIRES"];
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.url.clone(),
            self.username.clone(),
            if self.active {
                "*".into()
            } else {
                String::new()
            },
            self.token_expires_at.as_ref().map(time).unwrap_or_default(),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("name", self.name.clone()),
            ("url", self.url.clone()),
            ("username", self.username.clone()),
            ("active", yes_no(self.active)),
            (
                "token_expires_at",
                self.token_expires_at.as_ref().map(time).unwrap_or_default(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pool_json() -> Value {
        json!({
            "id": "0d9b1c59-7c64-4d5c-a7c4-0a2f0e5f6a11",
            "entity_id": "9a4b9e43-5e0b-4bd4-b0cb-4d2a2d0a7e8f",
            "provider_name": "azure_external",
            "image": "Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest",
            "flavor": "Standard_DC2as_v5",
            "tags": ["self-hosted", "azure-cvm", "ubuntu-2204"],
            "os_type": "linux", "os_arch": "amd64",
            "min_idle_runners": 0, "max_runners": 4,
            "runner_prefix": "hangar", "runner_bootstrap_timeout": 20,
            "extra_specs": {"confidential": true},
            "runner_group": null, "priority": 0, "enabled": true,
            "instance_count": 1,
            "health": {"state": "degraded", "consecutive_failures": 4,
                       "last_error": "provider failure: exit status 1",
                       "next_attempt_at": "2025-01-02T03:05:05Z"},
            "created_at": "2025-01-02T03:04:05Z", "updated_at": "2025-01-02T03:04:05Z"
        })
    }

    fn entity_json(secret: Option<&str>) -> Value {
        let mut v = json!({
            "id": "9a4b9e43-5e0b-4bd4-b0cb-4d2a2d0a7e8f", "kind": "repository",
            "owner": "mkulke", "name": "garm-playground", "credentials_name": "garm",
            "endpoint": "github.com",
            "webhook_url": "http://127.0.0.1:9997/webhooks/9a4b9e43-5e0b-4bd4-b0cb-4d2a2d0a7e8f",
            "pool_count": 1,
            "created_at": "2025-01-02T03:04:05Z", "updated_at": "2025-01-02T03:04:05Z"
        });
        if let Some(s) = secret {
            v["webhook_secret"] = json!(s);
        }
        v
    }

    #[test]
    fn json_output_is_the_api_json() {
        // What the server sent is what a script reads back, field for field.
        for original in [json!([pool_json()]), json!([entity_json(None)])] {
            let rendered = if original[0].get("flavor").is_some() {
                let v: Vec<PoolResponse> = serde_json::from_value(original.clone()).unwrap();
                list(OutputFormat::Json, &v).unwrap()
            } else {
                let v: Vec<EntityResponse> = serde_json::from_value(original.clone()).unwrap();
                list(OutputFormat::Json, &v).unwrap()
            };
            let back: Value = serde_json::from_str(&rendered).unwrap();
            assert_eq!(back, original);
        }
        let e: EntityResponse = serde_json::from_value(entity_json(Some("generated"))).unwrap();
        let back: Value = serde_json::from_str(&one(OutputFormat::Json, &e).unwrap()).unwrap();
        assert_eq!(
            back,
            entity_json(Some("generated")),
            "a generated secret is in the API's JSON"
        );
    }

    fn instance_json() -> Value {
        json!({
            "name": "hangar-3kq9x0b2m1zd", "pool_id": "0d9b1c59-7c64-4d5c-a7c4-0a2f0e5f6a11",
            "provider_id": null, "status": "pending_create", "runner_status": "pending",
            "runner_id": null, "job_id": 4_294_967_296_i64, "addresses": [],
            "status_message": "transient GitHub failure: POST /repos/mkulke/garm-playground/actions/runners/generate-jitconfig: error trying to connect: tcp connect error: Connection refused (os error 111)",
            "create_attempts": 2, "os_name": null, "os_version": null,
            "created_at": "2025-01-02T03:04:05Z", "updated_at": "2025-01-02T03:04:05Z"
        })
    }

    fn job_json() -> Value {
        json!({
            "id": 4_294_967_296_i64, "run_attempt": 1, "status": "completed", "conclusion": "success",
            "labels": ["self-hosted", "azure-cvm", "ubuntu-2204"], "repository": "mkulke/garm-playground",
            "runner_name": "hangar-3kq9x0b2m1zd", "name": "build", "workflow_run_id": 7,
            "entity_id": "9a4b9e43-5e0b-4bd4-b0cb-4d2a2d0a7e8f",
            "pool_id": "0d9b1c59-7c64-4d5c-a7c4-0a2f0e5f6a11",
            "created_at": "2025-01-02T03:04:05Z", "updated_at": "2025-01-02T03:04:05Z"
        })
    }

    fn widest(t: &str) -> usize {
        t.lines().map(|l| l.chars().count()).max().unwrap_or(0)
    }

    /// The default tables fit 100 columns and name pools and entities;
    /// `--long` (wide) has every column, ids included; JSON is untouched.
    #[test]
    fn default_tables_fit_100_columns_and_show_names() {
        let e: EntityResponse = serde_json::from_value(entity_json(None)).unwrap();
        let p: PoolResponse = serde_json::from_value(pool_json()).unwrap();
        let i: InstanceResponse = serde_json::from_value(instance_json()).unwrap();
        let j: JobResponse = serde_json::from_value(job_json()).unwrap();
        let names = Names::new(std::slice::from_ref(&e), std::slice::from_ref(&p));
        let pool_name = "mkulke/garm-playground [self-hosted, azure-cvm, ubuntu-2204]";
        assert_eq!(names.pool(&p.id), pool_name);

        let runners = list_named(OutputFormat::Table, std::slice::from_ref(&i), &names).unwrap();
        assert!(widest(&runners) <= 100, "{}\n{runners}", widest(&runners));
        assert!(runners.contains("hangar-3kq9x0b2m1zd"), "{runners}");
        assert!(runners.contains("mkulke/garm-"), "{runners}");
        assert!(!runners.contains("0d9b1c59"), "no pool id: {runners}");
        assert!(
            runners.contains("TRIES") && runners.contains("Connection"),
            "{runners}"
        );

        let jobs = list_named(OutputFormat::Table, std::slice::from_ref(&j), &names).unwrap();
        assert!(widest(&jobs) <= 100, "{jobs}");
        assert!(
            jobs.contains("completed") && jobs.contains("(success)"),
            "{jobs}"
        );
        assert!(
            !jobs.contains("0d9b1c59") && !jobs.contains("9a4b9e43"),
            "{jobs}"
        );

        let pools = list_named(OutputFormat::Table, std::slice::from_ref(&p), &names).unwrap();
        assert!(widest(&pools) <= 100, "{pools}");
        assert!(
            pools.contains("0d9b1c59-7c64-4d5c-a7c4-0a2f0e5f6a11"),
            "pool ids stay whole: {pools}"
        );
        assert!(
            pools.contains("mkulke/") && !pools.contains("9a4b9e43"),
            "{pools}"
        );

        let repos = list(OutputFormat::Table, std::slice::from_ref(&e)).unwrap();
        assert!(widest(&repos) <= 100, "{repos}");
        assert!(repos.contains("mkulke/garm-playground"), "{repos}");

        // Unknown ids fall back to their first characters.
        let bare = list(OutputFormat::Table, std::slice::from_ref(&i)).unwrap();
        assert!(
            bare.contains("0d9b1c59") && !bare.contains("0d9b1c59-7c64"),
            "{bare}"
        );

        // Wide: every column, whole ids, nothing wrapped.
        let wide = list_named(OutputFormat::Wide, std::slice::from_ref(&i), &names).unwrap();
        assert!(
            wide.contains("0d9b1c59-7c64-4d5c-a7c4-0a2f0e5f6a11"),
            "{wide}"
        );
        assert!(
            wide.contains("CREATE ATTEMPTS") && wide.contains("(os error 111)"),
            "{wide}"
        );
        assert_eq!(wide.lines().count(), 5, "one line per row: {wide}");
        let wide_jobs = list_named(OutputFormat::Wide, &[j], &names).unwrap();
        assert!(
            wide_jobs.contains("0d9b1c59-7c64-4d5c-a7c4-0a2f0e5f6a11"),
            "{wide_jobs}"
        );

        // JSON is the API's, whatever names are known.
        let back: Value =
            serde_json::from_str(&list_named(OutputFormat::Json, &[i], &names).unwrap()).unwrap();
        assert_eq!(back, json!([instance_json()]));

        // `show` lists the last error and the attempts.
        let shown = one(
            OutputFormat::Table,
            &serde_json::from_value::<InstanceResponse>(instance_json()).unwrap(),
        )
        .unwrap();
        assert!(widest(&shown) <= 100, "{shown}");
        assert!(
            shown.contains("create_attempts") && shown.contains("Connection refused"),
            "{shown}"
        );
    }

    #[test]
    fn tables_put_ids_and_names_first() {
        let p: PoolResponse = serde_json::from_value(pool_json()).unwrap();
        let t = list(OutputFormat::Table, std::slice::from_ref(&p)).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        let header = lines[1];
        assert!(
            header.trim_start_matches(['|', ' ']).starts_with("ID"),
            "{t}"
        );
        assert!(t.contains("self-hosted, azure-cvm,"), "{t}");
        assert!(t.contains("0d9b1c59-7c64-4d5c-a7c4-0a2f0e5f6a11"), "{t}");
        let wide = list(OutputFormat::Wide, std::slice::from_ref(&p)).unwrap();
        assert!(wide.contains("self-hosted,azure-cvm,ubuntu-2204"), "{wide}");

        let show = one(OutputFormat::Table, &p).unwrap();
        assert!(show.contains(r#"{"confidential":true}"#), "{show}");
        assert!(show.contains("degraded"), "{show}");
        assert!(show.contains("exit status 1"), "pool show says why: {show}");
        assert!(show.contains("20 min"), "{show}");

        let e: EntityResponse =
            serde_json::from_value(entity_json(Some("generated-secret"))).unwrap();
        let t = list(OutputFormat::Wide, std::slice::from_ref(&e)).unwrap();
        let header = t.lines().nth(1).unwrap();
        let cols: Vec<&str> = header
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cols[..3], ["ID", "OWNER", "NAME"]);
        let t = list(OutputFormat::Table, std::slice::from_ref(&e)).unwrap();
        let header = t.lines().nth(1).unwrap();
        let cols: Vec<&str> = header
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cols[..2], ["ID", "NAME"]);
        assert!(
            !t.contains("generated-secret"),
            "a table never shows the secret: {t}"
        );
        assert!(
            !one(OutputFormat::Table, &e)
                .unwrap()
                .contains("generated-secret")
        );
    }

    #[test]
    fn empty_list_renders() {
        let empty: Vec<JobResponse> = vec![];
        assert_eq!(list(OutputFormat::Json, &empty).unwrap(), "[]");
        let t = list(OutputFormat::Table, &empty).unwrap();
        assert!(t.contains("REPOSITORY"), "{t}");
    }

    #[test]
    fn unmatched_jobs_say_so() {
        let j: JobResponse = serde_json::from_value(json!({
            "id": 4_294_967_296_i64, "run_attempt": 1, "status": "queued", "conclusion": null,
            "labels": ["self-hosted", "gpu"], "repository": "octo/app", "runner_name": null,
            "name": "build", "workflow_run_id": 7, "entity_id": "9a4b9e43-5e0b-4bd4-b0cb-4d2a2d0a7e8f",
            "pool_id": null, "created_at": "2025-01-02T03:04:05Z", "updated_at": "2025-01-02T03:04:05Z"
        }))
        .unwrap();
        let t = list(OutputFormat::Table, &[j]).unwrap();
        assert!(t.contains("4294967296") && t.contains("(unmatched)"), "{t}");
    }
}
