//! The provider's settings, as the daemon reads them from
//! `[provider.libvirt]`; checked once in [`LibvirtProviderConfig::validate`]
//! so the rest of the crate can trust them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// `[provider.libvirt]`. Every key is optional.
///
/// ```toml
/// [provider.libvirt]
/// uri = "qemu:///system"          # any libvirt URI, e.g. qemu+ssh://host/system
/// storage_pool = "default"        # holds the base volumes, overlays and seeds
/// network = "network:default"     # "network:<name>", "bridge:<dev>" or "user"
/// domain_type = "kvm"             # "kvm", "qemu" (TCG, no hardware acceleration) or "test"
/// max_concurrency = 4             # provider calls at once
/// kernel_dirs = []                # where direct-kernel-boot pools may take kernels from
/// console_log_dir = "/var/log/hangar/consoles"  # optional: serial console to <dir>/<name>.log
///
/// [provider.libvirt.flavors.small]
/// vcpus = 2
/// memory_mib = 4096
/// disk_gib = 20
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibvirtProviderConfig {
    /// libvirt connection URI. Default `qemu:///system`.
    pub uri: String,
    /// Storage pool holding the base images (a pool's `image` names a volume
    /// here) and receiving each instance's overlay and seed volumes.
    /// Default `default`.
    pub storage_pool: String,
    /// How guests reach the network, unless a pool's `network` extra spec
    /// says otherwise. Default `network:default` (libvirt's NAT network).
    /// `user` is QEMU user-mode networking: no bridge, dnsmasq or iptables on
    /// the host; the guest reaches the host's loopback at 10.0.2.2.
    pub network: NetworkSpec,
    /// Named machine sizes; a pool's `flavor` picks one. Setting this table
    /// replaces the defaults (`small` 2 vCPU/4 GiB/20 GiB, `medium`
    /// 4/8/40, `large` 8/16/80).
    pub flavors: BTreeMap<String, Flavor>,
    /// libvirt domain type. Default `kvm`. Use `qemu` where KVM is missing or
    /// unusable (nested virtualisation without vmx/svm), `test` only with
    /// libvirt's `test:///` driver.
    pub domain_type: DomainType,
    /// How many provider calls Hangar makes at once. Default 4.
    pub max_concurrency: usize,
    /// Directories on the libvirt host from which pools may boot a kernel
    /// directly (`kernel`/`initrd` extra specs). Empty (the default)
    /// disables direct kernel boot, so pool settings cannot make QEMU read
    /// arbitrary host files.
    pub kernel_dirs: Vec<PathBuf>,
    /// When set, each guest's serial console is written to
    /// `<dir>/<instance>.log` on the libvirt host (useful to debug boot
    /// scripts; the files are kept after the instance is deleted). Unset:
    /// the console is a pty (`virsh console`).
    pub console_log_dir: Option<PathBuf>,
}

impl Default for LibvirtProviderConfig {
    fn default() -> Self {
        Self {
            uri: "qemu:///system".into(),
            storage_pool: "default".into(),
            network: NetworkSpec::Network("default".into()),
            flavors: default_flavors(),
            domain_type: DomainType::Kvm,
            max_concurrency: 4,
            kernel_dirs: Vec::new(),
            console_log_dir: None,
        }
    }
}

fn default_flavors() -> BTreeMap<String, Flavor> {
    [
        ("small", 2, 4096, 20),
        ("medium", 4, 8192, 40),
        ("large", 8, 16384, 80),
    ]
    .into_iter()
    .map(|(name, vcpus, memory_mib, disk_gib)| {
        (
            name.to_owned(),
            Flavor {
                vcpus,
                memory_mib,
                disk_gib,
            },
        )
    })
    .collect()
}

/// A machine size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flavor {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Size of the root overlay; never smaller than the base image.
    pub disk_gib: u64,
}

/// libvirt's `<domain type=…>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    Kvm,
    Qemu,
    Test,
}

impl DomainType {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
            DomainType::Test => "test",
        }
    }
}

/// Where a guest's network interface is plugged, written as a string so the
/// config file and a pool's `network` extra spec read the same.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum NetworkSpec {
    /// `network:<name>`: a libvirt virtual network.
    Network(String),
    /// `bridge:<device>`: an existing host bridge.
    Bridge(String),
    /// `user`: QEMU user-mode networking (slirp/passt).
    User,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid network {0:?}: use \"network:<libvirt network>\", \"bridge:<host bridge>\" or \"user\""
)]
pub struct NetworkSpecError(String);

impl NetworkSpec {
    pub fn parse(s: &str) -> Result<Self, NetworkSpecError> {
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match s.split_once(':') {
            None if s == "user" => Ok(NetworkSpec::User),
            Some(("network", n)) if valid_name(n) => Ok(NetworkSpec::Network(n.to_owned())),
            Some(("bridge", n)) if valid_name(n) => Ok(NetworkSpec::Bridge(n.to_owned())),
            _ => Err(NetworkSpecError(s.to_owned())),
        }
    }
}

impl TryFrom<String> for NetworkSpec {
    type Error = NetworkSpecError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NetworkSpec::parse(&s)
    }
}

impl fmt::Display for NetworkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkSpec::Network(n) => write!(f, "network:{n}"),
            NetworkSpec::Bridge(n) => write!(f, "bridge:{n}"),
            NetworkSpec::User => f.write_str("user"),
        }
    }
}

/// A `[provider.libvirt]` setting that cannot work; the provider is not
/// built and the daemon refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl LibvirtProviderConfig {
    /// Rejects settings that would only fail later, one VM at a time.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.uri.trim().is_empty() {
            return Err(ConfigError("uri is empty".into()));
        }
        if self.storage_pool.trim().is_empty() {
            return Err(ConfigError("storage_pool is empty".into()));
        }
        if self.max_concurrency == 0 {
            return Err(ConfigError("max_concurrency must be at least 1".into()));
        }
        if self.flavors.is_empty() {
            return Err(ConfigError("flavors is empty: define at least one".into()));
        }
        for (name, f) in &self.flavors {
            if f.vcpus == 0 || f.memory_mib < 64 || f.disk_gib == 0 {
                return Err(ConfigError(format!(
                    "flavor {name:?} needs vcpus >= 1, memory_mib >= 64 and disk_gib >= 1"
                )));
            }
        }
        for dir in &self.kernel_dirs {
            if !dir.is_absolute() {
                return Err(ConfigError(format!(
                    "kernel_dirs entry {} is not absolute",
                    dir.display()
                )));
            }
        }
        if let Some(dir) = &self.console_log_dir
            && !dir.is_absolute()
        {
            return Err(ConfigError(format!(
                "console_log_dir {} is not absolute",
                dir.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gives_documented_defaults() {
        let c: LibvirtProviderConfig = toml::from_str("").unwrap();
        assert_eq!(c.uri, "qemu:///system");
        assert_eq!(c.storage_pool, "default");
        assert_eq!(c.network, NetworkSpec::Network("default".into()));
        assert_eq!(c.domain_type, DomainType::Kvm);
        assert_eq!(c.max_concurrency, 4);
        assert_eq!(
            c.flavors["small"],
            Flavor {
                vcpus: 2,
                memory_mib: 4096,
                disk_gib: 20
            }
        );
        assert!(c.kernel_dirs.is_empty());
        c.validate().unwrap();
    }

    #[test]
    fn full_table_parses() {
        let c: LibvirtProviderConfig = toml::from_str(
            r#"
            uri = "qemu+ssh://ci@host/system"
            storage_pool = "runners"
            network = "user"
            domain_type = "qemu"
            max_concurrency = 2
            kernel_dirs = ["/srv/kernels"]
            console_log_dir = "/var/log/hangar"
            [flavors.tiny]
            vcpus = 1
            memory_mib = 256
            disk_gib = 1
            "#,
        )
        .unwrap();
        assert_eq!(c.network, NetworkSpec::User);
        assert_eq!(c.domain_type, DomainType::Qemu);
        assert_eq!(c.flavors.len(), 1, "a flavors table replaces the defaults");
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<LibvirtProviderConfig>("urii = \"x\"").is_err());
        assert!(toml::from_str::<LibvirtProviderConfig>("network = \"default\"").is_err());
        assert!(toml::from_str::<LibvirtProviderConfig>("domain_type = \"xen\"").is_err());
        assert!(
            toml::from_str::<LibvirtProviderConfig>(
                "[flavors.a]\nvcpus = 1\nmemory_mib = 512\ndisk_gib = 1\ngpu = 1"
            )
            .is_err()
        );
        let c: LibvirtProviderConfig = toml::from_str("kernel_dirs = [\"rel\"]").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("not absolute")
        );
        let c: LibvirtProviderConfig = toml::from_str("max_concurrency = 0").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn network_spec_round_trips() {
        for s in ["user", "network:default", "bridge:br0"] {
            assert_eq!(NetworkSpec::parse(s).unwrap().to_string(), s);
        }
        for bad in ["", "network:", "bridge:br 0", "default", "wifi:x", "user:x"] {
            assert!(NetworkSpec::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
