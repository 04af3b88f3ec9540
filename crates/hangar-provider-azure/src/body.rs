//! The ARM request bodies for one runner: public IP, NIC and VM (compute
//! and network api-version 2024-07-01), built from data so tests can check
//! every field that matters — above all the confidential-VM security
//! profile and the OS disk's `deleteOption`, which defaults to `Detach`
//! and would leak a disk per job.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::specs::{ExtraSpecs, Image};

/// Tag names on every resource Hangar makes.
pub const TAG_CONTROLLER: &str = "hangar-controller-id";
pub const TAG_POOL: &str = "hangar-pool-id";
pub const TAG_INSTANCE: &str = "hangar-instance";
/// `<controller id>/<pool id>`: one tag the generic resource list can
/// filter on server-side to find every resource of one pool.
pub const TAG_OWNER: &str = "hangar-owner";

/// Largest `customData` Azure takes, decoded.
pub const MAX_CUSTOM_DATA: usize = 65_535;

/// Names of an instance's resources, derived from its name so a delete
/// after a crash finds everything without any stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    pub vm: String,
    pub nic: String,
    pub public_ip: String,
    pub os_disk: String,
}

impl ResourceNames {
    pub fn for_instance(name: &str) -> Self {
        Self {
            vm: name.to_owned(),
            nic: format!("{name}-nic"),
            public_ip: format!("{name}-pip"),
            os_disk: format!("{name}-osdisk"),
        }
    }

    /// The instance a resource name belongs to.
    pub fn instance_of(resource_name: &str) -> &str {
        for suffix in ["-nic", "-pip", "-osdisk"] {
            if let Some(base) = resource_name.strip_suffix(suffix) {
                return base;
            }
        }
        resource_name
    }
}

pub fn tags(
    controller: &str,
    pool: &str,
    instance: &str,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut t = extra.clone();
    t.insert(TAG_CONTROLLER.into(), controller.into());
    t.insert(TAG_POOL.into(), pool.into());
    t.insert(TAG_INSTANCE.into(), instance.into());
    t.insert(TAG_OWNER.into(), format!("{controller}/{pool}"));
    t
}

pub fn public_ip(location: &str, tags: &BTreeMap<String, String>, zone: Option<&str>) -> Value {
    let mut b = json!({
        "location": location,
        "tags": tags,
        "sku": {"name": "Standard", "tier": "Regional"},
        "properties": {
            "publicIPAllocationMethod": "Static",
            "publicIPAddressVersion": "IPv4",
            "deleteOption": "Delete"
        }
    });
    if let Some(z) = zone {
        b["zones"] = json!([z]);
    }
    b
}

pub fn nic(
    location: &str,
    tags: &BTreeMap<String, String>,
    subnet_id: &str,
    public_ip_id: Option<&str>,
    accelerated_networking: bool,
) -> Value {
    let mut ipconf = json!({
        "name": "ipconfig1",
        "properties": {
            "subnet": {"id": subnet_id},
            "privateIPAllocationMethod": "Dynamic",
            "primary": true
        }
    });
    if let Some(id) = public_ip_id {
        ipconf["properties"]["publicIPAddress"] = json!({"id": id});
    }
    json!({
        "location": location,
        "tags": tags,
        "properties": {
            "ipConfigurations": [ipconf],
            // Off unless asked for: confidential VMs and small sizes do
            // not support it.
            "enableAcceleratedNetworking": accelerated_networking
        }
    })
}

/// Everything the VM body is made from.
#[derive(Debug, Clone)]
pub struct VmParams<'a> {
    pub location: &'a str,
    pub names: &'a ResourceNames,
    pub tags: &'a BTreeMap<String, String>,
    pub size: &'a str,
    pub image: &'a Image,
    pub specs: &'a ExtraSpecs,
    pub nic_id: &'a str,
    pub admin_username: &'a str,
    pub ssh_public_key: &'a str,
    /// The rendered cloud-init boot script.
    pub userdata: &'a str,
}

/// A boot script larger than Azure's `customData` takes; the create fails
/// as an invalid parameter, as ARM itself would answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the boot script is {bytes} bytes; Azure takes at most {MAX_CUSTOM_DATA}")]
pub struct BootScriptTooLarge {
    pub bytes: usize,
}

/// The VM body; `Err` when the boot script is larger than Azure accepts.
pub fn vm(p: &VmParams<'_>) -> Result<Value, BootScriptTooLarge> {
    if p.userdata.len() > MAX_CUSTOM_DATA {
        return Err(BootScriptTooLarge {
            bytes: p.userdata.len(),
        });
    }
    let image = match p.image {
        Image::Marketplace {
            publisher,
            offer,
            sku,
            version,
        } => json!({"publisher": publisher, "offer": offer, "sku": sku, "version": version}),
        Image::ResourceId(id) => json!({"id": id}),
    };
    let s = p.specs;
    let mut managed_disk = json!({
        "storageAccountType": s.os_disk_type.as_deref().unwrap_or("StandardSSD_LRS")
    });
    let mut os_disk = json!({
        "name": p.names.os_disk,
        "createOption": "FromImage",
        "caching": "ReadWrite",
        // The default is Detach: every VM would leave its disk behind.
        "deleteOption": "Delete",
    });
    if let Some(gb) = s.os_disk_size_gb {
        os_disk["diskSizeGB"] = json!(gb);
    }
    if s.ephemeral_os_disk {
        // On the VM's resource disk (garm-provider-azure's default
        // placement); an ephemeral disk takes read-only caching.
        os_disk["diffDiskSettings"] = json!({"option": "Local", "placement": "ResourceDisk"});
        os_disk["caching"] = json!("ReadOnly");
    }
    let ssh_keys: Vec<Value> = std::iter::once(p.ssh_public_key)
        .chain(s.ssh_public_keys.iter().map(String::as_str))
        .map(|k| {
            json!({
                "path": format!("/home/{}/.ssh/authorized_keys", p.admin_username),
                "keyData": k
            })
        })
        .collect();
    let mut props = json!({
        "hardwareProfile": {"vmSize": p.size},
        "storageProfile": {"imageReference": image},
        "osProfile": {
            "computerName": p.names.vm,
            "adminUsername": p.admin_username,
            "customData": base64::engine::general_purpose::STANDARD.encode(p.userdata),
            "linuxConfiguration": {
                "disablePasswordAuthentication": true,
                "ssh": {"publicKeys": ssh_keys},
                "provisionVMAgent": true
            }
        },
        "networkProfile": {"networkInterfaces": [{
            "id": p.nic_id,
            "properties": {"primary": true, "deleteOption": "Delete"}
        }]},
        "diagnosticsProfile": {"bootDiagnostics": {"enabled": true}}
    });
    if s.confidential {
        let mut disk_security = json!({"securityEncryptionType": s.encryption_type().as_str()});
        if let Some(des) = &s.disk_encryption_set_id {
            disk_security["diskEncryptionSet"] = json!({"id": des});
        }
        managed_disk["securityProfile"] = disk_security;
        props["securityProfile"] = json!({
            "securityType": "ConfidentialVM",
            "uefiSettings": {
                "secureBootEnabled": s.secure_boot.unwrap_or(true),
                "vTpmEnabled": true
            }
        });
    } else if s.trusted_launch {
        props["securityProfile"] = json!({
            "securityType": "TrustedLaunch",
            "uefiSettings": {
                "secureBootEnabled": s.secure_boot.unwrap_or(true),
                "vTpmEnabled": true
            }
        });
    }
    os_disk["managedDisk"] = managed_disk;
    props["storageProfile"]["osDisk"] = os_disk;
    let mut b = json!({
        "location": p.location,
        "tags": p.tags,
        "properties": props
    });
    if let Some(z) = &s.zone {
        b["zones"] = json!([z]);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(
        names: &'a ResourceNames,
        tags: &'a BTreeMap<String, String>,
        image: &'a Image,
        specs: &'a ExtraSpecs,
        userdata: &'a str,
    ) -> VmParams<'a> {
        VmParams {
            location: "westeurope",
            names,
            tags,
            size: "Standard_DC2as_v5",
            image,
            specs,
            nic_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/r-nic",
            admin_username: "hangar",
            ssh_public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB hangar",
            userdata,
        }
    }

    #[test]
    fn confidential_vm_body() {
        let names = ResourceNames::for_instance("r1");
        let tags = tags("c", "p", "r1", &BTreeMap::new());
        let image =
            Image::parse("Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest")
                .unwrap();
        let specs = ExtraSpecs {
            confidential: true,
            ..Default::default()
        };
        let b = vm(&params(
            &names,
            &tags,
            &image,
            &specs,
            "#!/bin/sh\necho hi\n",
        ))
        .unwrap();
        let p = &b["properties"];
        assert_eq!(p["securityProfile"]["securityType"], "ConfidentialVM");
        assert_eq!(
            p["securityProfile"]["uefiSettings"]["secureBootEnabled"],
            true
        );
        assert_eq!(p["securityProfile"]["uefiSettings"]["vTpmEnabled"], true);
        let disk = &p["storageProfile"]["osDisk"];
        assert_eq!(disk["deleteOption"], "Delete");
        assert_eq!(disk["name"], "r1-osdisk");
        assert_eq!(
            disk["managedDisk"]["securityProfile"]["securityEncryptionType"],
            "VMGuestStateOnly"
        );
        assert_eq!(
            p["storageProfile"]["imageReference"]["offer"],
            "0001-com-ubuntu-confidential-vm-jammy"
        );
        let custom = p["osProfile"]["customData"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(custom)
            .unwrap();
        assert_eq!(decoded, b"#!/bin/sh\necho hi\n");
        assert_eq!(
            p["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"],
            true
        );
        assert_eq!(
            p["networkProfile"]["networkInterfaces"][0]["properties"]["deleteOption"],
            "Delete"
        );
        assert_eq!(b["tags"][TAG_OWNER], "c/p");
    }

    #[test]
    fn plain_vm_has_no_security_profile_and_oversized_userdata_fails() {
        let names = ResourceNames::for_instance("r1");
        let tags = tags("c", "p", "r1", &BTreeMap::new());
        let image = Image::ResourceId(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/images/i".into(),
        );
        let specs = ExtraSpecs::default();
        let b = vm(&params(&names, &tags, &image, &specs, "x")).unwrap();
        assert!(b["properties"].get("securityProfile").is_none());
        assert!(
            b["properties"]["storageProfile"]["osDisk"]["managedDisk"]
                .get("securityProfile")
                .is_none()
        );
        assert_eq!(
            b["properties"]["storageProfile"]["imageReference"]["id"],
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/images/i"
        );
        let big = "x".repeat(MAX_CUSTOM_DATA + 1);
        assert!(vm(&params(&names, &tags, &image, &specs, &big)).is_err());
    }

    #[test]
    fn names_round_trip() {
        let n = ResourceNames::for_instance("hangar-abc");
        for r in [&n.vm, &n.nic, &n.public_ip, &n.os_disk] {
            assert_eq!(ResourceNames::instance_of(r), "hangar-abc");
        }
    }
}
