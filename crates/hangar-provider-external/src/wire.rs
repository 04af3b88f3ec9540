//! garm's JSON on the provider's stdin and stdout, and its conversion to and
//! from Hangar's domain types. Field names follow garm-provider-common's
//! `params` package exactly (including its dashed keys), since existing
//! providers decode them with Go's `encoding/json`.

use base64::Engine as _;
use hangar_core::provider::{
    CreateInstanceRequest, ProviderInstance, ProviderInstanceStatus, ProxySettings, RunnerTool,
};
use hangar_core::{ControllerId, PoolId, PoolSpec};
use serde::{Deserialize, Serialize};

/// One runner download, as GitHub lists them (`RunnerApplicationDownload`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerApplicationDownload {
    pub os: String,
    pub architecture: String,
    pub download_url: String,
    pub filename: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256_checksum: Option<String>,
}

impl From<&RunnerTool> for RunnerApplicationDownload {
    fn from(t: &RunnerTool) -> Self {
        Self {
            os: t.os.clone(),
            architecture: t.architecture.clone(),
            download_url: t.download_url.clone(),
            filename: t.filename.clone(),
            sha256_checksum: t.sha256_checksum.clone(),
        }
    }
}

/// Knobs garm's userdata templates understand. garm leaves them at their
/// zero values; Hangar takes them from the pool's extra specs when set
/// there under the same names, and the zero values otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDataOptions {
    pub disable_updates_on_boot: bool,
    pub extra_packages: Vec<String>,
    pub enable_boot_debug: bool,
}

impl UserDataOptions {
    fn from_extra_specs(specs: &serde_json::Map<String, serde_json::Value>) -> Self {
        let flag = |k: &str| specs.get(k).and_then(serde_json::Value::as_bool) == Some(true);
        Self {
            disable_updates_on_boot: flag("disable_updates_on_boot"),
            extra_packages: specs
                .get("extra_packages")
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            enable_boot_debug: flag("enable_boot_debug"),
        }
    }
}

/// garm's `ProxyConfig`: empty strings where unset, as Go encodes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyConfig {
    #[serde(default)]
    pub http_proxy: String,
    #[serde(default)]
    pub https_proxy: String,
    #[serde(default)]
    pub no_proxy: String,
}

impl From<&ProxySettings> for ProxyConfig {
    fn from(p: &ProxySettings) -> Self {
        Self {
            http_proxy: p.http_proxy.clone().unwrap_or_default(),
            https_proxy: p.https_proxy.clone().unwrap_or_default(),
            no_proxy: p.no_proxy.clone().unwrap_or_default(),
        }
    }
}

/// What `CreateInstance` reads on stdin (garm's `BootstrapInstance`).
/// Its `Debug` hides the instance token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapInstance {
    pub name: String,
    pub tools: Vec<RunnerApplicationDownload>,
    pub repo_url: String,
    #[serde(rename = "callback-url")]
    pub callback_url: String,
    #[serde(rename = "metadata-url")]
    pub metadata_url: String,
    #[serde(rename = "instance-token")]
    pub instance_token: String,
    #[serde(rename = "ssh-keys")]
    pub ssh_keys: Vec<String>,
    pub extra_specs: serde_json::Map<String, serde_json::Value>,
    #[serde(rename = "github-runner-group")]
    pub github_runner_group: String,
    /// Go's `[]byte`, so base64 of the PEM bundle, or `null`.
    #[serde(rename = "ca-cert-bundle")]
    pub ca_cert_bundle: Option<String>,
    pub arch: String,
    pub os_type: String,
    pub flavor: String,
    pub image: String,
    pub labels: Vec<String>,
    pub pool_id: String,
    pub user_data_options: UserDataOptions,
    pub jit_config_enabled: bool,
    pub proxy_config: ProxyConfig,
}

impl std::fmt::Debug for BootstrapInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapInstance")
            .field("name", &self.name)
            .field("pool_id", &self.pool_id)
            .field("image", &self.image)
            .field("flavor", &self.flavor)
            .field("os_type", &self.os_type)
            .field("arch", &self.arch)
            .field("labels", &self.labels)
            .field("instance_token", &"***")
            .finish_non_exhaustive()
    }
}

impl BootstrapInstance {
    /// garm's bootstrap document for `req`. `jit_enabled` is the provider's
    /// own setting: a provider configured without JIT never gets asked for
    /// it, whatever the scheduler prepared.
    pub fn from_request(req: &CreateInstanceRequest, jit_enabled: bool) -> Self {
        let b = &req.bootstrap;
        Self {
            name: req.name.to_string(),
            tools: b
                .tools
                .iter()
                .map(RunnerApplicationDownload::from)
                .collect(),
            repo_url: b.repo_url.clone(),
            callback_url: b.callback_url.clone(),
            metadata_url: b.metadata_url.clone(),
            instance_token: b.instance_token.expose().to_owned(),
            ssh_keys: Vec::new(),
            extra_specs: req.extra_specs.clone(),
            github_runner_group: b.runner_group.clone().unwrap_or_default(),
            ca_cert_bundle: b
                .ca_cert_bundle
                .as_ref()
                .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())),
            arch: req.os_arch.as_str().to_owned(),
            os_type: req.os_type.as_str().to_owned(),
            flavor: req.flavor.clone(),
            image: req.image.clone(),
            labels: req.labels.to_vec(),
            pool_id: req.pool_id.to_string(),
            user_data_options: UserDataOptions::from_extra_specs(&req.extra_specs),
            jit_config_enabled: b.jit_config_enabled && jit_enabled,
            proxy_config: ProxyConfig::from(&b.proxy),
        }
    }

    /// What `ValidatePoolInfo` gets on stdin: the pool's side of a bootstrap
    /// document, with nothing secret in it. garm's Go library reads the
    /// image and flavor from here when a provider chooses to.
    pub fn for_validation(spec: &PoolSpec, jit_enabled: bool) -> Self {
        Self {
            name: String::new(),
            tools: Vec::new(),
            repo_url: String::new(),
            callback_url: String::new(),
            metadata_url: String::new(),
            instance_token: String::new(),
            ssh_keys: Vec::new(),
            extra_specs: spec.extra_specs.clone(),
            github_runner_group: spec.runner_group.clone().unwrap_or_default(),
            ca_cert_bundle: None,
            arch: spec.os_arch.as_str().to_owned(),
            os_type: spec.os_type.as_str().to_owned(),
            flavor: spec.flavor.clone(),
            image: spec.image.clone(),
            labels: spec.tags.to_vec(),
            pool_id: String::new(),
            user_data_options: UserDataOptions::from_extra_specs(&spec.extra_specs),
            jit_config_enabled: jit_enabled,
            proxy_config: spec
                .proxy()
                .map(|p| ProxyConfig::from(&p))
                .unwrap_or_default(),
        }
    }
}

/// An address the provider reports (`Address`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub address: String,
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// What the provider prints for one instance (`ProviderInstance`). Only
/// `provider_id`, `name` and `status` are required; everything else is
/// taken when present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GarmInstance {
    #[serde(default)]
    pub provider_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub os_type: Option<String>,
    #[serde(default)]
    pub os_name: Option<String>,
    #[serde(default)]
    pub os_version: Option<String>,
    #[serde(default)]
    pub os_arch: Option<String>,
    #[serde(default)]
    pub addresses: Option<Vec<Address>>,
    #[serde(default)]
    pub status: Option<String>,
    /// Go's `[]byte`: base64 from Go providers, plain text from scripts.
    #[serde(default)]
    pub provider_fault: Option<String>,
    /// Not in garm's struct, but in its documented sample; providers that
    /// print it let Hangar drop instances of other pools defensively.
    #[serde(default)]
    pub pool_id: Option<String>,
    /// A Hangar extension: the controller the instance is tagged with.
    #[serde(default)]
    pub controller_id: Option<String>,
}

/// Why a provider's instance JSON was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceJsonError {
    #[error("instance JSON has no provider_id")]
    MissingProviderId,
    #[error("instance JSON has no name")]
    MissingName,
}

/// garm's statuses to Hangar's. garm itself only accepts running, stopped,
/// error and unknown from providers; the transitional ones are mapped too
/// so a provider reporting them is not refused outright.
pub fn status_from_garm(status: Option<&str>) -> ProviderInstanceStatus {
    match status.unwrap_or("").to_ascii_lowercase().as_str() {
        "running" => ProviderInstanceStatus::Running,
        "stopped" => ProviderInstanceStatus::Stopped,
        "error" => ProviderInstanceStatus::Error,
        "pending_create" | "creating" => ProviderInstanceStatus::Creating,
        _ => ProviderInstanceStatus::Unknown,
    }
}

pub(crate) fn fault_text(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.trim().is_empty());
    Some(decoded.unwrap_or_else(|| raw.to_owned()))
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.trim().is_empty())
}

impl GarmInstance {
    /// Converts to Hangar's view. `controller_id` and `pool_id` are those
    /// of the call that produced the JSON (garm's providers answer only for
    /// instances tagged with them), unless the JSON names its own.
    pub fn into_provider_instance(
        self,
        controller_id: Option<ControllerId>,
        pool_id: Option<PoolId>,
    ) -> Result<ProviderInstance, InstanceJsonError> {
        if self.provider_id.trim().is_empty() {
            return Err(InstanceJsonError::MissingProviderId);
        }
        if self.name.trim().is_empty() {
            return Err(InstanceJsonError::MissingName);
        }
        let own_pool = self.pool_id.as_deref().and_then(|p| p.parse().ok());
        let own_controller = self.controller_id.as_deref().and_then(|c| c.parse().ok());
        Ok(ProviderInstance {
            status: status_from_garm(self.status.as_deref()),
            provider_id: self.provider_id,
            name: self.name,
            controller_id: own_controller.or(controller_id),
            pool_id: own_pool.or(pool_id),
            addresses: self
                .addresses
                .unwrap_or_default()
                .into_iter()
                .map(|a| a.address)
                .filter(|a| !a.is_empty())
                .collect(),
            os_name: non_empty(self.os_name),
            os_version: non_empty(self.os_version),
            fault: self.provider_fault.as_deref().and_then(fault_text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_core::provider::BootstrapParams;
    use hangar_core::{InstanceName, Labels, OsArch, OsType, Secret};

    fn request() -> CreateInstanceRequest {
        CreateInstanceRequest {
            name: InstanceName::parse("hangar-abc123").expect("valid"),
            controller_id: ControllerId::new_random(),
            pool_id: PoolId::new_random(),
            image: "ubuntu:22.04".into(),
            flavor: "m1.small".into(),
            os_type: OsType::Linux,
            os_arch: OsArch::Arm64,
            labels: Labels::parse_list("self-hosted,arm64").expect("valid"),
            extra_specs: serde_json::json!({"confidential": true, "enable_boot_debug": true,
                    "extra_packages": ["jq"], "runner_install_template": "IyEvYmluL2Jhc2g="})
            .as_object()
            .cloned()
            .expect("object"),
            userdata: String::new(),
            bootstrap: BootstrapParams {
                repo_url: "https://github.com/octo/app".into(),
                metadata_url: "http://h/api/v1/metadata".into(),
                callback_url: "http://h/api/v1/callbacks/status".into(),
                instance_token: Secret::new("tok"),
                jit_config_enabled: true,
                runner_group: Some("ci".into()),
                tools: vec![RunnerTool {
                    os: "linux".into(),
                    architecture: "arm64".into(),
                    download_url: "https://x/runner.tgz".into(),
                    filename: "runner.tgz".into(),
                    sha256_checksum: Some("abc".into()),
                }],
                ca_cert_bundle: Some("PEM".into()),
                proxy: ProxySettings {
                    http_proxy: Some("http://proxy:3128".into()),
                    https_proxy: None,
                    no_proxy: Some("10.0.0.0/8".into()),
                },
            },
            watcher: None,
        }
    }

    #[test]
    fn bootstrap_json_uses_garm_field_names() {
        let req = request();
        let v = serde_json::to_value(BootstrapInstance::from_request(&req, true)).expect("json");
        assert_eq!(v["name"], "hangar-abc123");
        assert_eq!(v["callback-url"], "http://h/api/v1/callbacks/status");
        assert_eq!(v["metadata-url"], "http://h/api/v1/metadata");
        assert_eq!(v["instance-token"], "tok");
        assert_eq!(v["github-runner-group"], "ci");
        assert_eq!(v["ca-cert-bundle"], "UEVN", "[]byte is base64");
        assert_eq!(v["arch"], "arm64");
        assert_eq!(v["os_type"], "linux");
        assert_eq!(v["pool_id"], req.pool_id.to_string());
        assert_eq!(v["extra_specs"]["confidential"], true);
        assert_eq!(v["tools"][0]["sha256_checksum"], "abc");
        assert_eq!(v["labels"], serde_json::json!(["arm64", "self-hosted"]));
        assert_eq!(v["jit_config_enabled"], true);
        assert_eq!(
            v["user_data_options"]["extra_packages"],
            serde_json::json!(["jq"])
        );
        assert_eq!(v["user_data_options"]["enable_boot_debug"], true);
        assert_eq!(v["user_data_options"]["disable_updates_on_boot"], false);
        assert_eq!(
            v["extra_specs"]["runner_install_template"], "IyEvYmluL2Jhc2g=",
            "garm's template override reaches the provider"
        );
        assert_eq!(
            v["proxy_config"],
            serde_json::json!({"http_proxy": "http://proxy:3128", "https_proxy": "",
                               "no_proxy": "10.0.0.0/8"})
        );

        let no_jit = BootstrapInstance::from_request(&req, false);
        assert!(!no_jit.jit_config_enabled, "provider setting wins");
    }

    /// The keys of garm-provider-common's `params.BootstrapInstance`, by
    /// their JSON names: every one is emitted, and nothing else.
    #[test]
    fn bootstrap_json_has_every_field_garm_fills() {
        const GARM_FIELDS: [&str; 19] = [
            "name",
            "tools",
            "repo_url",
            "callback-url",
            "metadata-url",
            "instance-token",
            "ssh-keys",
            "extra_specs",
            "github-runner-group",
            "ca-cert-bundle",
            "arch",
            "os_type",
            "flavor",
            "image",
            "labels",
            "pool_id",
            "user_data_options",
            "jit_config_enabled",
            "proxy_config",
        ];
        let v =
            serde_json::to_value(BootstrapInstance::from_request(&request(), true)).expect("json");
        let mut keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut want = GARM_FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
        let sub = |k: &str| {
            let mut ks: Vec<String> = v[k].as_object().expect("object").keys().cloned().collect();
            ks.sort_unstable();
            ks
        };
        assert_eq!(
            sub("user_data_options"),
            [
                "disable_updates_on_boot",
                "enable_boot_debug",
                "extra_packages"
            ]
        );
        assert_eq!(
            sub("proxy_config"),
            ["http_proxy", "https_proxy", "no_proxy"]
        );
        let tool = sub_tool(&v);
        assert_eq!(
            tool,
            [
                "architecture",
                "download_url",
                "filename",
                "os",
                "sha256_checksum"
            ]
        );
    }

    fn sub_tool(v: &serde_json::Value) -> Vec<String> {
        let mut ks: Vec<String> = v["tools"][0]
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        ks.sort_unstable();
        ks
    }

    #[test]
    fn instance_json_to_domain() {
        let pool = PoolId::new_random();
        let ctl = ControllerId::new_random();
        let inst: GarmInstance = serde_json::from_str(
            r#"{"provider_id":"i-1","name":"hangar-x","os_name":"ubuntu","os_version":"",
                "status":"error","provider_fault":"cXVvdGEgZXhjZWVkZWQ=",
                "addresses":[{"address":"10.0.0.5","type":"private"}]}"#,
        )
        .expect("parses");
        let p = inst
            .into_provider_instance(Some(ctl), Some(pool))
            .expect("valid");
        assert_eq!(p.status, ProviderInstanceStatus::Error);
        assert_eq!(p.fault.as_deref(), Some("quota exceeded"));
        assert_eq!(p.addresses, vec!["10.0.0.5".to_owned()]);
        assert_eq!(p.os_name.as_deref(), Some("ubuntu"));
        assert_eq!(p.os_version, None);
        assert_eq!(p.pool_id, Some(pool));
        assert_eq!(p.controller_id, Some(ctl));

        let plain: GarmInstance = serde_json::from_str(
            r#"{"provider_id":"i-1","name":"n","status":"running","provider_fault":"disk full!"}"#,
        )
        .expect("parses");
        let p = plain.into_provider_instance(None, None).expect("valid");
        assert_eq!(p.fault.as_deref(), Some("disk full!"));
        assert_eq!(p.status, ProviderInstanceStatus::Running);

        let missing: GarmInstance = serde_json::from_str(r#"{"name":"n"}"#).expect("parses");
        assert_eq!(
            missing.into_provider_instance(None, None),
            Err(InstanceJsonError::MissingProviderId)
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(
            status_from_garm(Some("stopped")),
            ProviderInstanceStatus::Stopped
        );
        assert_eq!(
            status_from_garm(Some("creating")),
            ProviderInstanceStatus::Creating
        );
        assert_eq!(
            status_from_garm(Some("deleting")),
            ProviderInstanceStatus::Unknown
        );
        assert_eq!(status_from_garm(None), ProviderInstanceStatus::Unknown);
    }
}
