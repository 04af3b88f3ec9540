//! Rendering answers: tables for people (ids and names first), or the API's
//! JSON unchanged for scripts. Rendering returns strings so it is tested
//! without a terminal.

use chrono::{DateTime, Utc};
use comfy_table::{Table, presets};
use hangar_api::{
    ControllerResponse, CredentialsResponse, EndpointResponse, EntityResponse, InstanceResponse,
    JobResponse, PoolResponse, ProviderResponse, UserResponse, WebhookInfo,
};
use serde::Serialize;

use crate::args::OutputFormat;
use crate::profiles::ProfileSummary;

/// Something shown as one row of a list, or as a field/value table alone.
pub trait Tabular {
    const HEADERS: &'static [&'static str];
    fn row(&self) -> Vec<String>;
    /// Every field, for `show`.
    fn fields(&self) -> Vec<(&'static str, String)>;
}

pub fn list<T: Tabular + Serialize>(format: OutputFormat, items: &[T]) -> anyhow::Result<String> {
    match format {
        OutputFormat::Json => json(&items),
        OutputFormat::Table => {
            let mut t = table();
            t.set_header(T::HEADERS.to_vec());
            for i in items {
                t.add_row(i.row());
            }
            Ok(t.to_string())
        }
    }
}

pub fn one<T: Tabular + Serialize>(format: OutputFormat, item: &T) -> anyhow::Result<String> {
    match format {
        OutputFormat::Json => json(item),
        OutputFormat::Table => {
            let mut t = table();
            t.set_header(vec!["FIELD", "VALUE"]);
            for (k, v) in item.fields() {
                t.add_row(vec![k.to_owned(), v]);
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

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
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
        "CREATED",
    ];
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.pool_id.to_string(),
            self.status.clone(),
            self.runner_status.clone(),
            opt(&self.provider_id),
            opt(&self.job_id),
            time(&self.created_at),
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
        assert!(t.contains("self-hosted,azure-cvm,ubuntu-2204"), "{t}");
        assert!(t.contains("0d9b1c59-7c64-4d5c-a7c4-0a2f0e5f6a11"), "{t}");

        let show = one(OutputFormat::Table, &p).unwrap();
        assert!(show.contains(r#"{"confidential":true}"#), "{show}");
        assert!(show.contains("degraded"), "{show}");
        assert!(show.contains("exit status 1"), "pool show says why: {show}");
        assert!(show.contains("20 min"), "{show}");

        let e: EntityResponse =
            serde_json::from_value(entity_json(Some("generated-secret"))).unwrap();
        let t = list(OutputFormat::Table, std::slice::from_ref(&e)).unwrap();
        let header = t.lines().nth(1).unwrap();
        let cols: Vec<&str> = header
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cols[..3], ["ID", "OWNER", "NAME"]);
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
