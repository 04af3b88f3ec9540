//! A pool's image, flavor and `extra_specs`, parsed and checked, so that a
//! typo or a confidential pool on a non-confidential size fails when the
//! pool is created instead of at the first VM.

use std::collections::BTreeMap;

use hangar_core::ProviderError;
use serde::Deserialize;

/// Why a pool's image, flavor or extra specs cannot work on Azure; the pool
/// is refused (at creation, or its create fails as an invalid spec).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

impl From<SpecError> for ProviderError {
    fn from(e: SpecError) -> Self {
        ProviderError::InvalidSpec(e.0)
    }
}

/// Where a VM's OS disk comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// A marketplace image, `publisher:offer:sku:version`.
    Marketplace {
        publisher: String,
        offer: String,
        sku: String,
        version: String,
    },
    /// A managed image or Azure Compute Gallery image (version) id.
    ResourceId(String),
}

impl Image {
    pub fn parse(s: &str) -> Result<Image, SpecError> {
        let s = s.trim();
        if s.starts_with("/subscriptions/") {
            let lower = s.to_ascii_lowercase();
            if lower.contains("/providers/microsoft.compute/images/")
                || lower.contains("/providers/microsoft.compute/galleries/")
            {
                return Ok(Image::ResourceId(s.to_owned()));
            }
            return Err(SpecError(format!(
                "image {s:?} is a resource id but not of a managed image or gallery image"
            )));
        }
        let parts: Vec<&str> = s.split(':').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match parts.as_slice() {
            [publisher, offer, sku, version] if parts.iter().all(|p| ok(p)) => {
                Ok(Image::Marketplace {
                    publisher: (*publisher).to_owned(),
                    offer: (*offer).to_owned(),
                    sku: (*sku).to_owned(),
                    version: (*version).to_owned(),
                })
            }
            _ => Err(SpecError(format!(
                "image {s:?} is neither a marketplace URN (publisher:offer:sku:version, e.g. Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest) nor an image resource id (/subscriptions/…/images/… or …/galleries/…)"
            ))),
        }
    }
}

/// How much of a confidential VM's state is encrypted with its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SecurityEncryptionType {
    /// Only the VM guest state (UEFI, TPM); quick to create. The default.
    VMGuestStateOnly,
    /// Full confidential OS-disk encryption; slower to create.
    DiskWithVMGuestState,
    /// No persisted firmware/TPM state (Intel TDX sizes).
    NonPersistedTPM,
}

impl SecurityEncryptionType {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityEncryptionType::VMGuestStateOnly => "VMGuestStateOnly",
            SecurityEncryptionType::DiskWithVMGuestState => "DiskWithVMGuestState",
            SecurityEncryptionType::NonPersistedTPM => "NonPersistedTPM",
        }
    }
}

/// The extra specs this provider understands. Anything else is an error.
///
/// | key | value |
/// |---|---|
/// | `confidential` | `true`: a confidential VM (`securityType: ConfidentialVM`, vTPM, Secure Boot); the flavor must be a confidential size (DCas/DCads/DCes/DCeds/ECas/ECads/ECes/ECeds v5, …v6) |
/// | `security_encryption_type` | `VMGuestStateOnly` (default), `DiskWithVMGuestState` or `NonPersistedTPM`; confidential only |
/// | `secure_boot` | UEFI Secure Boot, default `true` (`false` for `NonPersistedTPM` sizes that need it) |
/// | `disk_encryption_set_id` | customer-managed key for the confidential OS disk |
/// | `trusted_launch` | `true`: Trusted Launch (vTPM + Secure Boot) on a non-confidential size |
/// | `os_disk_size_gb` | OS disk size (30–4095) |
/// | `os_disk_type` | `StandardSSD_LRS` (default), `Premium_LRS`, `Standard_LRS`, `StandardSSD_ZRS`, `Premium_ZRS` |
/// | `public_ip` | overrides the provider's `public_ip` |
/// | `subnet_id` | overrides the provider's subnet |
/// | `zone` | availability zone (`"1"`, `"2"`, `"3"`) |
/// | `tags` | extra tags (string → string) on every resource; `hangar-*` names are reserved |
/// | `ssh_public_keys` | more SSH keys for the admin user, after the provider's |
/// | `ephemeral_os_disk` | `true`: the OS disk lives on the VM's resource disk (`diffDiskSettings`), not a managed disk; not with `confidential` |
/// | `accelerated_networking` | `true`: the NIC gets accelerated networking; not with `confidential` |
///
/// garm-provider-azure's names are accepted for the same settings, so a
/// garm pool's extra specs move over verbatim ([`GARM_NAMES`]); giving
/// both names of one setting is an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraSpecs {
    #[serde(default)]
    pub confidential: bool,
    pub security_encryption_type: Option<SecurityEncryptionType>,
    pub secure_boot: Option<bool>,
    pub disk_encryption_set_id: Option<String>,
    #[serde(default)]
    pub trusted_launch: bool,
    pub os_disk_size_gb: Option<u32>,
    pub os_disk_type: Option<String>,
    pub public_ip: Option<bool>,
    pub subnet_id: Option<String>,
    pub zone: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub ssh_public_keys: Vec<String>,
    #[serde(default)]
    pub ephemeral_os_disk: bool,
    #[serde(default)]
    pub accelerated_networking: bool,
}

/// garm-provider-azure's extra-spec names and the Hangar names of the same
/// settings. (`ssh_public_keys` and `confidential` are spelt alike.)
pub const GARM_NAMES: &[(&str, &str)] = &[
    ("allocate_public_ip", "public_ip"),
    ("disk_size_gb", "os_disk_size_gb"),
    ("storage_account_type", "os_disk_type"),
    ("extra_tags", "tags"),
    ("use_ephemeral_storage", "ephemeral_os_disk"),
    ("use_accelerated_networking", "accelerated_networking"),
];

/// Renames garm's names to Hangar's. garm reads an unset or zero
/// `disk_size_gb` as "the default size".
fn from_garm_names(
    specs: &serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, SpecError> {
    let mut out = specs.clone();
    for (garm, hangar) in GARM_NAMES {
        let Some(v) = out.remove(*garm) else {
            continue;
        };
        if out.contains_key(*hangar) {
            return Err(SpecError(format!(
                "extra_specs: {garm:?} (garm-provider-azure's name) and {hangar:?} set the same thing; keep one"
            )));
        }
        if *garm == "disk_size_gb" && v.as_u64() == Some(0) {
            continue;
        }
        out.insert((*hangar).to_owned(), v);
    }
    Ok(out)
}

const DISK_TYPES: &[&str] = &[
    "StandardSSD_LRS",
    "Premium_LRS",
    "Standard_LRS",
    "StandardSSD_ZRS",
    "Premium_ZRS",
];

impl ExtraSpecs {
    pub fn parse(specs: &serde_json::Map<String, serde_json::Value>) -> Result<Self, SpecError> {
        let specs = from_garm_names(specs)?;
        let parsed: ExtraSpecs = serde_json::from_value(serde_json::Value::Object(specs))
            .map_err(|e| SpecError(format!("extra_specs: {e}")))?;
        parsed.check()?;
        Ok(parsed)
    }

    fn check(&self) -> Result<(), SpecError> {
        if !self.confidential {
            if self.security_encryption_type.is_some() {
                return Err(SpecError(
                    "extra_specs.security_encryption_type needs \"confidential\": true".into(),
                ));
            }
            if self.disk_encryption_set_id.is_some() {
                return Err(SpecError(
                    "extra_specs.disk_encryption_set_id needs \"confidential\": true".into(),
                ));
            }
        } else if self.trusted_launch {
            return Err(SpecError("extra_specs: \"confidential\" and \"trusted_launch\" exclude each other (a confidential VM already has vTPM and Secure Boot)".into()));
        } else if self.ephemeral_os_disk {
            return Err(SpecError("extra_specs: a confidential VM's OS disk cannot be ephemeral (ephemeral_os_disk / use_ephemeral_storage)".into()));
        } else if self.accelerated_networking {
            return Err(SpecError("extra_specs: confidential VMs do not take accelerated networking (accelerated_networking / use_accelerated_networking)".into()));
        }
        for k in &self.ssh_public_keys {
            crate::config::check_ssh_key(k)
                .map_err(|e| SpecError(format!("extra_specs.ssh_public_keys: {e}")))?;
        }
        if let Some(size) = self.os_disk_size_gb
            && !(30..=4095).contains(&size)
        {
            return Err(SpecError(format!(
                "extra_specs.os_disk_size_gb {size} is outside 30–4095"
            )));
        }
        if let Some(t) = &self.os_disk_type
            && !DISK_TYPES.contains(&t.as_str())
        {
            return Err(SpecError(format!(
                "extra_specs.os_disk_type {t:?} is not one of {}",
                DISK_TYPES.join(", ")
            )));
        }
        if let Some(s) = &self.subnet_id
            && (!s.starts_with("/subscriptions/") || !s.to_ascii_lowercase().contains("/subnets/"))
        {
            return Err(SpecError(format!(
                "extra_specs.subnet_id {s:?} is not a subnet resource id"
            )));
        }
        if let Some(z) = &self.zone
            && !matches!(z.as_str(), "1" | "2" | "3")
        {
            return Err(SpecError(format!(
                "extra_specs.zone {z:?} must be \"1\", \"2\" or \"3\""
            )));
        }
        if let Some(d) = &self.disk_encryption_set_id
            && !d
                .to_ascii_lowercase()
                .contains("/providers/microsoft.compute/diskencryptionsets/")
        {
            return Err(SpecError(format!(
                "extra_specs.disk_encryption_set_id {d:?} is not a disk encryption set id"
            )));
        }
        for (k, v) in &self.tags {
            if k.to_ascii_lowercase().starts_with("hangar-") {
                return Err(SpecError(format!(
                    "extra_specs.tags: {k:?} is reserved for Hangar"
                )));
            }
            if k.is_empty()
                || k.len() > 512
                || v.len() > 256
                || k.chars().any(|c| "<>%&\\?/".contains(c))
            {
                return Err(SpecError(format!(
                    "extra_specs.tags: {k:?} is not a valid Azure tag"
                )));
            }
        }
        Ok(())
    }

    pub fn encryption_type(&self) -> SecurityEncryptionType {
        self.security_encryption_type
            .unwrap_or(SecurityEncryptionType::VMGuestStateOnly)
    }
}

/// Whether a VM size supports confidential VMs (AMD SEV-SNP `a`, Intel TDX
/// `e`; DC general purpose and EC memory optimised; v5 and v6).
pub fn is_confidential_size(size: &str) -> bool {
    let Some(rest) = size.strip_prefix("Standard_") else {
        return false;
    };
    let lower = rest.to_ascii_lowercase();
    let Some(family_rest) = lower
        .strip_prefix("dc")
        .or_else(|| lower.strip_prefix("ec"))
    else {
        return false;
    };
    let digits = family_rest
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits == 0 {
        return false;
    }
    let suffix = &family_rest[digits..];
    matches!(
        suffix,
        "as_v5"
            | "ads_v5"
            | "es_v5"
            | "eds_v5"
            | "as_v6"
            | "ads_v6"
            | "es_v6"
            | "eds_v6"
            | "as_cc_v5"
            | "ads_cc_v5"
    )
}

/// A VM size name as Azure spells them (`Standard_…`/`Basic_…`).
pub fn check_size(size: &str) -> Result<(), SpecError> {
    let ok = (size.starts_with("Standard_") || size.starts_with("Basic_"))
        && size.len() <= 64
        && size.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SpecError(format!(
            "flavor {size:?} is not an Azure VM size (e.g. Standard_DC2as_v5)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn specs(v: serde_json::Value) -> Result<ExtraSpecs, SpecError> {
        ExtraSpecs::parse(v.as_object().unwrap())
    }

    #[test]
    fn images() {
        assert_eq!(
            Image::parse("Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest")
                .unwrap(),
            Image::Marketplace {
                publisher: "Canonical".into(),
                offer: "0001-com-ubuntu-confidential-vm-jammy".into(),
                sku: "22_04-lts-cvm".into(),
                version: "latest".into()
            }
        );
        let g = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/galleries/gal/images/runner/versions/1.0.0";
        assert_eq!(Image::parse(g).unwrap(), Image::ResourceId(g.into()));
        for bad in [
            "invalid",
            "a:b:c",
            "a:b:c:d:e",
            "a::c:d",
            "/subscriptions/s/x",
            "a b:c:d:e",
        ] {
            assert!(Image::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn confidential_sizes() {
        for s in [
            "Standard_DC2as_v5",
            "Standard_DC96ads_v5",
            "Standard_EC8as_v5",
            "Standard_DC2es_v5",
            "Standard_EC128eds_v5",
            "Standard_DC4as_v6",
        ] {
            assert!(is_confidential_size(s), "{s}");
        }
        for s in [
            "Standard_D2s_v5",
            "Standard_DC2s_v3",
            "Standard_B2s",
            "DC2as_v5",
            "Standard_DCas_v5",
            "Standard_E8as_v5",
        ] {
            assert!(!is_confidential_size(s), "{s}");
        }
    }

    #[test]
    fn extra_specs() {
        let s = specs(json!({"confidential": true})).unwrap();
        assert!(s.confidential);
        assert_eq!(
            s.encryption_type(),
            SecurityEncryptionType::VMGuestStateOnly
        );
        let s = specs(
            json!({"confidential": true, "security_encryption_type": "DiskWithVMGuestState"}),
        )
        .unwrap();
        assert_eq!(
            s.encryption_type(),
            SecurityEncryptionType::DiskWithVMGuestState
        );
        for (bad, needle) in [
            (json!({"confidentail": true}), "confidentail"),
            (json!({"confidential": "yes"}), "invalid type"),
            (
                json!({"security_encryption_type": "VMGuestStateOnly"}),
                "confidential",
            ),
            (
                json!({"confidential": true, "security_encryption_type": "Everything"}),
                "Everything",
            ),
            (json!({"os_disk_size_gb": 5}), "os_disk_size_gb"),
            (json!({"os_disk_type": "Ultra"}), "os_disk_type"),
            (json!({"tags": {"hangar-pool-id": "x"}}), "reserved"),
            (json!({"zone": "4"}), "zone"),
            (
                json!({"confidential": true, "trusted_launch": true}),
                "exclude",
            ),
        ] {
            let e = specs(bad.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB garm";

    #[test]
    fn garm_names_mean_the_hangar_settings() {
        let garm = specs(json!({
            "allocate_public_ip": true,
            "disk_size_gb": 200,
            "storage_account_type": "Premium_LRS",
            "extra_tags": {"team": "ci"},
            "ssh_public_keys": [KEY],
            "use_ephemeral_storage": true,
            "use_accelerated_networking": true
        }))
        .unwrap();
        let hangar = specs(json!({
            "public_ip": true,
            "os_disk_size_gb": 200,
            "os_disk_type": "Premium_LRS",
            "tags": {"team": "ci"},
            "ssh_public_keys": [KEY],
            "ephemeral_os_disk": true,
            "accelerated_networking": true
        }))
        .unwrap();
        assert_eq!(garm, hangar);
        assert_eq!(garm.public_ip, Some(true));
        assert_eq!(garm.os_disk_size_gb, Some(200));
        assert!(garm.ephemeral_os_disk && garm.accelerated_networking);
        // garm's 0 is its default size.
        assert_eq!(
            specs(json!({"disk_size_gb": 0})).unwrap().os_disk_size_gb,
            None
        );
        // garm's checks still apply under the garm name.
        let e = specs(json!({"storage_account_type": "Ultra"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("os_disk_type"), "{e}");
    }

    #[test]
    fn both_names_of_one_setting_are_refused() {
        for (garm, hangar, v) in [
            ("allocate_public_ip", "public_ip", json!(true)),
            ("disk_size_gb", "os_disk_size_gb", json!(64)),
            ("storage_account_type", "os_disk_type", json!("Premium_LRS")),
            ("extra_tags", "tags", json!({"a": "b"})),
            ("use_ephemeral_storage", "ephemeral_os_disk", json!(true)),
            (
                "use_accelerated_networking",
                "accelerated_networking",
                json!(false),
            ),
        ] {
            let mut m = serde_json::Map::new();
            m.insert(garm.into(), v.clone());
            m.insert(hangar.into(), v);
            let e = ExtraSpecs::parse(&m).unwrap_err().to_string();
            assert!(
                e.contains(garm) && e.contains(hangar) && e.contains("keep one"),
                "{e}"
            );
        }
    }

    #[test]
    fn new_settings_are_checked() {
        for (bad, needle) in [
            (json!({"ssh_public_keys": ["hello"]}), "ssh_public_keys"),
            (
                json!({"confidential": true, "use_ephemeral_storage": true}),
                "ephemeral",
            ),
            (
                json!({"confidential": true, "accelerated_networking": true}),
                "accelerated",
            ),
        ] {
            let e = specs(bad.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
