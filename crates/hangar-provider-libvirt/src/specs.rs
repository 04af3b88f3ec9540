//! A pool's `extra_specs`, parsed and checked against the provider's
//! settings, so that a typo fails at `validate_pool` instead of at the
//! hundredth VM.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::config::{LibvirtProviderConfig, NetworkSpec};

/// The extra specs this provider understands. Anything else is an error.
///
/// | key | value |
/// |---|---|
/// | `cpu_mode` | `host-passthrough`, `host-model` or `maximum` (libvirt's default when absent) |
/// | `machine` | QEMU machine type, default `q35` |
/// | `network` | `network:<name>`, `bridge:<dev>` or `user`; overrides the provider's |
/// | `extra_disk_gib` | adds an empty qcow2 data disk of this size (1–16384) |
/// | `firmware` | `bios` (default) or `efi` |
/// | `kernel`, `initrd`, `cmdline` | direct kernel boot; `kernel` must lie under a `kernel_dirs` entry |
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraSpecs {
    pub cpu_mode: Option<CpuMode>,
    pub machine: Option<String>,
    pub network: Option<NetworkSpec>,
    pub extra_disk_gib: Option<u64>,
    pub firmware: Option<Firmware>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuMode {
    HostPassthrough,
    HostModel,
    Maximum,
}

impl CpuMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CpuMode::HostPassthrough => "host-passthrough",
            CpuMode::HostModel => "host-model",
            CpuMode::Maximum => "maximum",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Efi,
}

/// How the guest boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// From the root overlay, through the firmware.
    Disk,
    /// A kernel (and initrd) on the libvirt host, bypassing the firmware.
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: Option<String>,
    },
}

/// Why a pool's extra specs cannot work with this provider; the pool is
/// refused. The message names the bad key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub(crate) String);

pub const MAX_EXTRA_DISK_GIB: u64 = 16 * 1024;

impl ExtraSpecs {
    /// Parses and checks `extra_specs`; the message names the bad key.
    pub fn parse(
        map: &serde_json::Map<String, serde_json::Value>,
        config: &LibvirtProviderConfig,
    ) -> Result<Self, SpecError> {
        let specs: ExtraSpecs = serde_json::from_value(serde_json::Value::Object(map.clone()))
            .map_err(|e| SpecError(format!("extra_specs: {e}")))?;
        if let Some(m) = &specs.machine
            && (m.is_empty()
                || m.len() > 64
                || !m
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(SpecError(format!(
                "extra_specs.machine {m:?} is not a machine type name (e.g. q35, pc-q35-8.2)"
            )));
        }
        if let Some(gib) = specs.extra_disk_gib
            && !(1..=MAX_EXTRA_DISK_GIB).contains(&gib)
        {
            return Err(SpecError(format!(
                "extra_specs.extra_disk_gib must be between 1 and {MAX_EXTRA_DISK_GIB}, got {gib}"
            )));
        }
        if specs.kernel.is_none() && (specs.initrd.is_some() || specs.cmdline.is_some()) {
            return Err(SpecError(
                "extra_specs.initrd and cmdline need extra_specs.kernel".into(),
            ));
        }
        for (key, path) in [("kernel", &specs.kernel), ("initrd", &specs.initrd)] {
            if let Some(p) = path {
                check_kernel_path(key, p, &config.kernel_dirs)?;
            }
        }
        if let Some(c) = &specs.cmdline
            && c.chars().any(char::is_control)
        {
            return Err(SpecError(
                "extra_specs.cmdline contains control characters".into(),
            ));
        }
        Ok(specs)
    }

    pub fn boot(&self) -> Boot {
        match &self.kernel {
            None => Boot::Disk,
            Some(kernel) => Boot::Kernel {
                kernel: kernel.clone(),
                initrd: self.initrd.clone(),
                cmdline: self.cmdline.clone(),
            },
        }
    }
}

/// Direct kernel boot makes QEMU (often root) read a host file: only allow
/// files under directories the operator listed.
fn check_kernel_path(key: &str, path: &Path, allowed: &[PathBuf]) -> Result<(), SpecError> {
    if allowed.is_empty() {
        return Err(SpecError(format!(
            "extra_specs.{key}: direct kernel boot is disabled; list the kernel's directory in the provider's kernel_dirs"
        )));
    }
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(SpecError(format!(
            "extra_specs.{key} {} must be an absolute path without . or ..",
            path.display()
        )));
    }
    if !allowed.iter().any(|dir| path.starts_with(dir)) {
        return Err(SpecError(format!(
            "extra_specs.{key} {} is not under any of the provider's kernel_dirs",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    fn config() -> LibvirtProviderConfig {
        LibvirtProviderConfig {
            kernel_dirs: vec!["/srv/kernels".into()],
            ..Default::default()
        }
    }

    #[test]
    fn empty_specs_boot_from_disk() {
        let s = ExtraSpecs::parse(&serde_json::Map::new(), &config()).unwrap();
        assert_eq!(s, ExtraSpecs::default());
        assert_eq!(s.boot(), Boot::Disk);
    }

    #[test]
    fn every_key_parses() {
        let s = ExtraSpecs::parse(
            &map(json!({
                "cpu_mode": "host-passthrough",
                "machine": "pc-q35-8.2",
                "network": "bridge:br0",
                "extra_disk_gib": 50,
                "firmware": "efi",
                "kernel": "/srv/kernels/vmlinuz",
                "initrd": "/srv/kernels/initrd.img",
                "cmdline": "console=ttyS0"
            })),
            &config(),
        )
        .unwrap();
        assert_eq!(s.cpu_mode, Some(CpuMode::HostPassthrough));
        assert_eq!(s.network, Some(NetworkSpec::Bridge("br0".into())));
        assert_eq!(s.extra_disk_gib, Some(50));
        assert_eq!(s.firmware, Some(Firmware::Efi));
        assert!(matches!(
            s.boot(),
            Boot::Kernel {
                initrd: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let cases = [
            (json!({"cpu": "host"}), "unknown field `cpu`"),
            (json!({"cpu_mode": "fast"}), "unknown variant `fast`"),
            (json!({"machine": "q35; rm -rf"}), "machine"),
            (json!({"network": "default"}), "invalid network"),
            (json!({"extra_disk_gib": 0}), "extra_disk_gib"),
            (json!({"extra_disk_gib": "ten"}), "invalid type"),
            (
                json!({"initrd": "/srv/kernels/i"}),
                "need extra_specs.kernel",
            ),
            (json!({"kernel": "/etc/shadow"}), "not under"),
            (
                json!({"kernel": "/srv/kernels/../../etc/shadow"}),
                "without . or ..",
            ),
            (json!({"kernel": "vmlinuz"}), "absolute"),
            (
                json!({"kernel": "/srv/kernels/k", "cmdline": "a\nb"}),
                "control",
            ),
        ];
        for (specs, want) in cases {
            let err = ExtraSpecs::parse(&map(specs.clone()), &config())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(want),
                "{specs}: {err:?} should mention {want:?}"
            );
        }
    }

    #[test]
    fn direct_kernel_boot_needs_kernel_dirs() {
        let err = ExtraSpecs::parse(
            &map(json!({"kernel": "/srv/kernels/vmlinuz"})),
            &LibvirtProviderConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("disabled"), "{err}");
    }
}
