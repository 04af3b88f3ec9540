//! The provider's settings, as the daemon reads them from
//! `[provider.azure]`; checked once in [`AzureProviderConfig::validate`] so
//! the rest of the crate can trust them.

use std::path::PathBuf;

use serde::Deserialize;

/// `[provider.azure]`.
///
/// ```toml
/// [provider.azure]
/// subscription_id = "00000000-0000-0000-0000-000000000000"
/// resource_group = "hangar-runners"      # runner VMs, NICs, IPs and disks go here
/// location = "westeurope"
/// subnet_id = "/subscriptions/…/resourceGroups/…/providers/Microsoft.Network/virtualNetworks/…/subnets/…"
/// public_ip = false                      # a public IP per VM (default false)
/// admin_username = "hangar"
/// ssh_public_key_file = "/etc/hangar/runner.pub"   # optional
/// max_concurrency = 4
/// create_timeout_secs = 900
/// arm_endpoint = "https://management.azure.com"    # sovereign clouds, tests
/// authority_host = "https://login.microsoftonline.com"
///
/// [provider.azure.credential]
/// kind = "managed_identity"              # client_secret | managed_identity | workload_identity | azure_cli
/// client_id = "…"                        # user-assigned identity; omit for system-assigned
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AzureProviderConfig {
    pub subscription_id: String,
    /// Resource group that receives every runner resource. Hangar only ever
    /// touches resources in it that carry its controller tag.
    pub resource_group: String,
    /// Azure region of the VMs (e.g. `westeurope`).
    pub location: String,
    /// Subnet the runners' NICs join, unless a pool's `subnet_id` extra spec
    /// says otherwise.
    pub subnet_id: String,
    /// Give every VM a public IP (Standard SKU, static). Default false:
    /// runners only need outbound access (NAT gateway or the subnet's
    /// default outbound route).
    #[serde(default)]
    pub public_ip: bool,
    /// The VM's admin user. Password login is always disabled.
    #[serde(default = "default_admin")]
    pub admin_username: String,
    /// SSH public key for the admin user (`ssh-rsa …`/`ssh-ed25519 …`).
    /// When neither this nor `ssh_public_key_file` is set, each start of
    /// the provider makes a fresh Ed25519 key and throws the private half
    /// away, so nobody can log in.
    pub ssh_public_key: Option<String>,
    pub ssh_public_key_file: Option<PathBuf>,
    /// Provider calls at once. Default 4.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Seconds one create (all its long-running operations) may take.
    /// Default 900.
    #[serde(default = "default_create_timeout")]
    pub create_timeout_secs: u64,
    /// Azure Resource Manager base URL. Default the public cloud's.
    #[serde(default = "default_arm")]
    pub arm_endpoint: String,
    /// Microsoft Entra login host (client-secret and workload-identity
    /// credentials). Default the public cloud's.
    #[serde(default = "default_authority")]
    pub authority_host: String,
    /// How Hangar authenticates to ARM.
    pub credential: CredentialConfig,
}

/// `[provider.azure.credential]`: which identity calls ARM.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialConfig {
    /// A service principal with a client secret.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        /// Prefer `client_secret_file` or the `AZURE_CLIENT_SECRET`
        /// environment variable.
        client_secret: Option<String>,
        client_secret_file: Option<PathBuf>,
    },
    /// The managed identity of the VM or container Hangar runs in (IMDS,
    /// or `IDENTITY_ENDPOINT` where Azure sets it).
    ManagedIdentity {
        /// A user-assigned identity's client id; omit for system-assigned.
        client_id: Option<String>,
    },
    /// Workload identity federation (AKS): a federated token in a file that
    /// is re-read at each token refresh. Defaults from `AZURE_TENANT_ID`,
    /// `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`.
    WorkloadIdentity {
        tenant_id: Option<String>,
        client_id: Option<String>,
        token_file: Option<PathBuf>,
    },
    /// The signed-in Azure CLI (`az login`); for development.
    AzureCli,
}

fn default_admin() -> String {
    "hangar".into()
}
fn default_concurrency() -> usize {
    4
}
fn default_create_timeout() -> u64 {
    900
}
fn default_arm() -> String {
    "https://management.azure.com".into()
}
fn default_authority() -> String {
    "https://login.microsoftonline.com".into()
}

/// A `[provider.azure]` setting that cannot work; the daemon refuses to
/// start rather than fail one VM at a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl AzureProviderConfig {
    /// Checks what can be checked without calling Azure.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("subscription_id", &self.subscription_id),
            ("resource_group", &self.resource_group),
            ("location", &self.location),
            ("subnet_id", &self.subnet_id),
            ("admin_username", &self.admin_username),
        ] {
            if v.trim().is_empty() {
                return Err(ConfigError(format!("{key} must not be empty")));
            }
        }
        if self
            .resource_group
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')')))
        {
            return Err(ConfigError(format!(
                "resource_group {:?} has characters Azure does not allow",
                self.resource_group
            )));
        }
        if !self.subnet_id.starts_with("/subscriptions/")
            || !self.subnet_id.to_ascii_lowercase().contains("/subnets/")
        {
            return Err(ConfigError(format!(
                "subnet_id {:?} is not a subnet resource id (/subscriptions/…/virtualNetworks/…/subnets/…)",
                self.subnet_id
            )));
        }
        if self.max_concurrency == 0 {
            return Err(ConfigError("max_concurrency must be at least 1".into()));
        }
        if self.create_timeout_secs < 10 {
            return Err(ConfigError(
                "create_timeout_secs must be at least 10".into(),
            ));
        }
        for (key, u) in [
            ("arm_endpoint", &self.arm_endpoint),
            ("authority_host", &self.authority_host),
        ] {
            let parsed =
                url::Url::parse(u).map_err(|e| ConfigError(format!("{key} {u:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError(format!("{key} {u:?} must be an http(s) URL")));
            }
        }
        if self.ssh_public_key.is_some() && self.ssh_public_key_file.is_some() {
            return Err(ConfigError(
                "set ssh_public_key or ssh_public_key_file, not both".into(),
            ));
        }
        if let Some(k) = &self.ssh_public_key {
            check_ssh_key(k)?;
        }
        if let CredentialConfig::ClientSecret {
            client_secret,
            client_secret_file,
            ..
        } = &self.credential
            && client_secret.is_some()
            && client_secret_file.is_some()
        {
            return Err(ConfigError(
                "credential: set client_secret or client_secret_file, not both".into(),
            ));
        }
        Ok(())
    }
}

/// A public key line as Azure accepts it.
pub fn check_ssh_key(key: &str) -> Result<(), ConfigError> {
    let mut parts = key.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("ssh-rsa" | "ssh-ed25519" | "ecdsa-sha2-nistp256"), Some(b)) if b.len() > 16 => {
            Ok(())
        }
        _ => Err(ConfigError(
            "ssh public key must look like \"ssh-ed25519 AAAA… comment\"".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
subscription_id = "sub"
resource_group = "rg"
location = "westeurope"
subnet_id = "/subscriptions/sub/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
[credential]
kind = "managed_identity"
"#;

    fn parse(text: &str) -> Result<AzureProviderConfig, String> {
        let c: AzureProviderConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map(|()| c).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse(MIN).unwrap();
        assert!(!c.public_ip);
        assert_eq!(c.admin_username, "hangar");
        assert_eq!(c.max_concurrency, 4);
        assert_eq!(c.arm_endpoint, "https://management.azure.com");
        assert_eq!(
            c.credential,
            CredentialConfig::ManagedIdentity { client_id: None }
        );
    }

    #[test]
    fn every_credential_kind() {
        for (text, want) in [
            (
                "kind = \"client_secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_file = \"/run/s\"",
                "ClientSecret",
            ),
            (
                "kind = \"workload_identity\"\ntoken_file = \"/var/run/t\"",
                "WorkloadIdentity",
            ),
            ("kind = \"azure_cli\"", "AzureCli"),
            (
                "kind = \"managed_identity\"\nclient_id = \"c\"",
                "ManagedIdentity",
            ),
        ] {
            let full = MIN.replace("kind = \"managed_identity\"", text);
            let c = parse(&full).unwrap();
            assert!(format!("{:?}", c.credential).starts_with(want), "{text}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse(&MIN.replace("location = \"westeurope\"", "location = \"\"")).unwrap_err();
        assert!(e.contains("location"), "{e}");
        let e = parse(&MIN.replace("/subnets/s", "/nope")).unwrap_err();
        assert!(e.contains("subnet_id"), "{e}");
        let e = parse(&format!("{MIN}\nbogus = 1")).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = parse(&MIN.replace("managed_identity", "password")).unwrap_err();
        assert!(e.contains("password") || e.contains("variant"), "{e}");
        let e = parse(&MIN.replace("[credential]", "ssh_public_key = \"hello\"\n[credential]"))
            .unwrap_err();
        assert!(e.contains("ssh"), "{e}");
    }
}
