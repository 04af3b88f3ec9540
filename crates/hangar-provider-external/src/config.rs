//! The `[provider.external]` table of hangard's config, and the rules that
//! turn it into the exact environment a provider executable sees.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which revision of garm's external provider interface the executable
/// speaks. It decides which commands exist and is passed on as
/// `GARM_INTERFACE_VERSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum InterfaceVersion {
    /// The original interface: create, delete, get, list, remove-all,
    /// start, stop. What garm assumes when `interface_version` is absent,
    /// so it is the default here too.
    #[default]
    #[serde(rename = "v0.1.0")]
    V010,
    /// Adds `GetVersion`, `GetSupportedInterfaceVersions`,
    /// `ValidatePoolInfo`, `GetConfigJSONSchema`, `GetExtraSpecsJSONSchema`
    /// and passes the pool's extra specs to every call.
    #[serde(rename = "v0.1.1")]
    V011,
}

impl InterfaceVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            InterfaceVersion::V010 => "v0.1.0",
            InterfaceVersion::V011 => "v0.1.1",
        }
    }
}

impl std::fmt::Display for InterfaceVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings of one external provider, embedded in hangard's TOML config as
/// the `[provider.external]` table of a `kind = "external"` provider.
///
/// ```toml
/// [provider.external]
/// executable = "/usr/local/bin/garm-provider-lxd"
/// config_file = "/etc/hangar/lxd.toml"
/// interface_version = "v0.1.1"
/// environment_variables = ["LXD_", "HOME"]
/// call_timeout_secs = 300
/// max_concurrency = 8
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalProviderConfig {
    /// Absolute path of the provider executable (any garm external
    /// provider). It is run once per operation, never through a shell.
    pub executable: PathBuf,
    /// The provider's own config file, passed as
    /// `GARM_PROVIDER_CONFIG_FILE`; opaque to Hangar, but it must exist.
    pub config_file: PathBuf,
    /// `v0.1.0` (default, as in garm when the key is absent) or `v0.1.1`.
    /// Use what the provider documents; garm's current providers speak
    /// `v0.1.1`. Only v0.1.1 providers are asked `ValidatePoolInfo` and
    /// `GetVersion`, and one that answers those with garm's "unknown
    /// command" is taken not to implement them.
    #[serde(default)]
    pub interface_version: InterfaceVersion,
    /// Variables of hangard's environment the provider may see. Every
    /// entry is a prefix, as in garm (`AWS` passes `AWS_REGION`, `HOME`
    /// passes `HOMEBREW_PREFIX` too); a trailing `*` is accepted and
    /// ignored (`OS_*` = `OS_`). Names starting with `GARM` never pass
    /// (Hangar sets the `GARM_*` variables per call). Everything else is
    /// withheld: the provider starts from an empty environment plus
    /// `PATH`, the `GARM_*` variables and `http_proxy`, `https_proxy`,
    /// `no_proxy` (either case), which always pass. Empty by default.
    #[serde(default)]
    pub environment_variables: Vec<String>,
    /// Seconds one call may run before its whole process group is killed
    /// (default 300, which also bounds a create; at least 1). A provider
    /// that waits for its VM to boot needs more; listing should take
    /// seconds.
    #[serde(default = "default_call_timeout_secs")]
    pub call_timeout_secs: u64,
    /// How many calls to the executable may run at once (default 8, at
    /// least 1). Further calls queue.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Whether runners fetch a just-in-time config (default true). Set false
    /// for an old provider whose boot script only knows registration
    /// tokens; the bootstrap JSON then says `"jit_config_enabled": false`.
    #[serde(default = "default_jit_enabled")]
    pub jit_enabled: bool,
    /// The OS types the provider can boot (`linux`, `windows`); a pool of
    /// another is refused when it is created or updated. Empty (default):
    /// any.
    #[serde(default)]
    pub os_types: Vec<hangar_core::OsType>,
    /// The architectures the provider can boot (`amd64`, `arm64`, `arm`);
    /// empty (default): any.
    #[serde(default)]
    pub os_archs: Vec<hangar_core::OsArch>,
}

fn default_call_timeout_secs() -> u64 {
    300
}

fn default_max_concurrency() -> usize {
    8
}

fn default_jit_enabled() -> bool {
    true
}

impl ExternalProviderConfig {
    /// A config with every optional key at its default.
    pub fn new(executable: impl Into<PathBuf>, config_file: impl Into<PathBuf>) -> Self {
        Self {
            executable: executable.into(),
            config_file: config_file.into(),
            interface_version: InterfaceVersion::default(),
            environment_variables: Vec::new(),
            call_timeout_secs: default_call_timeout_secs(),
            max_concurrency: default_max_concurrency(),
            jit_enabled: default_jit_enabled(),
            os_types: Vec::new(),
            os_archs: Vec::new(),
        }
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.call_timeout_secs)
    }
}

/// Proxy variables pass whatever the allow-list says: garm's providers and
/// the clouds' SDKs expect them, and they carry no credentials by design.
const ALWAYS_PASSED: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// Used when hangard itself runs without `PATH` (systemd always sets one),
/// so `#!/bin/sh` providers can still find `sed` and friends.
pub(crate) const FALLBACK_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Names no allow-list entry passes: garm withholds its own namespace from
/// the inherited environment, and the per-call `GARM_*` values must not be
/// spoofable from hangard's environment.
const RESERVED_PREFIX: &str = "GARM";

/// Whether `name` from hangard's environment may reach the provider. As in
/// garm, every allow-list entry is a prefix of the names it passes.
pub(crate) fn env_allowed(allow_list: &[String], name: &str) -> bool {
    if name.starts_with(RESERVED_PREFIX) {
        return false;
    }
    if name == "PATH" || ALWAYS_PASSED.contains(&name) {
        return true;
    }
    allow_list.iter().any(|entry| {
        let prefix = entry.strip_suffix('*').unwrap_or(entry);
        !prefix.is_empty() && name.starts_with(prefix)
    })
}

/// The part of `parent` (hangard's environment) a provider inherits, with a
/// `PATH` guaranteed. Sorted so every call sees the same order.
pub(crate) fn inherited_env(
    allow_list: &[String],
    parent: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = parent
        .into_iter()
        .filter(|(k, _)| env_allowed(allow_list, k))
        .collect();
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.push(("PATH".to_owned(), FALLBACK_PATH.to_owned()));
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_from_minimal_toml() {
        let cfg: ExternalProviderConfig = toml::from_str(
            r#"
            executable = "/usr/local/bin/garm-provider-lxd"
            config_file = "/etc/hangar/lxd.toml"
            "#,
        )
        .expect("parses");
        assert_eq!(
            cfg.interface_version,
            InterfaceVersion::V010,
            "garm reads a missing interface_version as v0.1.0"
        );
        assert_eq!(cfg.call_timeout_secs, 300);
        assert_eq!(cfg.max_concurrency, 8);
        assert!(cfg.jit_enabled);
        assert!(cfg.environment_variables.is_empty());
        assert_eq!(
            cfg,
            ExternalProviderConfig::new("/usr/local/bin/garm-provider-lxd", "/etc/hangar/lxd.toml")
        );
    }

    #[test]
    fn full_toml_and_unknown_keys() {
        let cfg: ExternalProviderConfig = toml::from_str(
            r#"
            executable = "/bin/p"
            config_file = "/etc/p.toml"
            interface_version = "v0.1.1"
            environment_variables = ["AWS_", "HOME"]
            call_timeout_secs = 30
            max_concurrency = 2
            jit_enabled = false
            "#,
        )
        .expect("parses");
        assert_eq!(cfg.interface_version, InterfaceVersion::V011);
        assert_eq!(cfg.call_timeout(), Duration::from_secs(30));
        assert!(!cfg.jit_enabled);

        let err = toml::from_str::<ExternalProviderConfig>(
            "executable = \"/bin/p\"\nconfig_file = \"/c\"\ntimeout = 3\n",
        )
        .expect_err("unknown key rejected");
        assert!(err.to_string().contains("timeout"), "{err}");
        let err = toml::from_str::<ExternalProviderConfig>(
            "executable = \"/bin/p\"\nconfig_file = \"/c\"\ninterface_version = \"v0.2.0\"\n",
        )
        .expect_err("unknown version rejected");
        assert!(err.to_string().contains("v0.2.0"), "{err}");
    }

    #[test]
    fn every_entry_is_a_prefix_as_in_garm() {
        let allow = list(&["AWS", "OS_*", "HOME", "GARM", ""]);
        assert!(env_allowed(&allow, "AWS_REGION"), "garm's own example");
        assert!(env_allowed(&allow, "AWS"));
        assert!(
            env_allowed(&allow, "OS_AUTH_URL"),
            "a trailing * is a prefix"
        );
        assert!(!env_allowed(&allow, "OSX"));
        assert!(env_allowed(&allow, "HOME"));
        assert!(env_allowed(&allow, "HOMEBREW_PREFIX"), "prefix, as garm");
        assert!(
            !env_allowed(&allow, "HANGAR_PASSPHRASE"),
            "an empty entry passes nothing"
        );
        assert!(!env_allowed(&allow, "GARM_COMMAND"), "GARM* never passes");
        assert!(!env_allowed(&allow, "GARMX"));
        for always in ["PATH", "http_proxy", "HTTPS_PROXY", "no_proxy"] {
            assert!(env_allowed(&[], always), "{always} always passes");
        }
    }

    #[test]
    fn inherited_env_filters_and_keeps_path() {
        let parent = vec![
            ("HANGAR_PASSPHRASE".to_owned(), "s3cret".to_owned()),
            ("AWS_REGION".to_owned(), "eu-west-1".to_owned()),
            ("https_proxy".to_owned(), "http://proxy:3128".to_owned()),
            ("GARM_COMMAND".to_owned(), "spoofed".to_owned()),
        ];
        let env = inherited_env(&list(&["AWS", "GARM_"]), parent);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, vec!["AWS_REGION", "PATH", "https_proxy"]);
        assert_eq!(env[1].1, FALLBACK_PATH);
    }
}
