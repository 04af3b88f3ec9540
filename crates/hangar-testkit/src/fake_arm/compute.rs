//! Virtual machines: the PUT with its confidential-VM and disk/NIC rules,
//! the instance view, and what a deleted VM leaves behind.

use serde_json::{Map, Value, json};

use super::ArmKind;
use super::operations::OpWhat;
use super::parse::{
    canonical_id, check_base64, key_of, parse_delete_option, remove_path, set_path,
};
use super::reply::{Reply, bad, invalid, now};
use super::resources::PutStart;
use super::routes::{Req, parse_ref};
use super::state::{Inner, Res};

pub(super) const ENCRYPTION_TYPES: [&str; 3] = [
    "VMGuestStateOnly",
    "DiskWithVMGuestState",
    "NonPersistedTPM",
];

/// What a VM needs beyond its JSON body.
#[derive(Debug, Clone)]
pub(super) struct VmExtra {
    /// Kept because GET does not return it.
    pub(super) custom_data: Option<String>,
    pub(super) user_data: Option<String>,
    pub(super) os_disk_name: String,
    pub(super) os_disk_delete: bool,
    pub(super) storage_type: String,
    pub(super) encryption: Option<String>,
    /// (NIC key, delete with the VM).
    pub(super) nics: Vec<(String, bool)>,
    /// Set once the OS disk exists.
    pub(super) disk: Option<String>,
    pub(super) failure: Option<(String, String)>,
}

/// Confidential-capable sizes: `Standard_{DC,EC}<n>{as,ads,es,eds}_v5`, and
/// leniently `{as,ads}_v6`.
pub(super) fn confidential_size(size: &str) -> bool {
    let s = size.to_ascii_lowercase();
    let Some(rest) = s.strip_prefix("standard_") else {
        return false;
    };
    let Some(rest) = rest.strip_prefix("dc").or_else(|| rest.strip_prefix("ec")) else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0
        && matches!(
            &rest[digits..],
            "as_v5" | "ads_v5" | "es_v5" | "eds_v5" | "as_v6" | "ads_v6"
        )
}

pub(super) fn instance_view(r: &Res) -> Value {
    let state = r.state();
    let mut statuses = Vec::new();
    let failure = r.vm.as_ref().and_then(|x| x.failure.clone());
    match (state, failure) {
        ("Failed", Some((code, message))) => statuses.push(json!({
            "code": format!("ProvisioningState/failed/{code}"),
            "level": "Error",
            "displayStatus": "Provisioning failed",
            "message": message,
        })),
        _ => statuses.push(json!({
            "code": format!("ProvisioningState/{}", state.to_ascii_lowercase()),
            "level": "Info",
            "displayStatus": format!("Provisioning {}", state.to_ascii_lowercase()),
        })),
    }
    let power = match state {
        "Succeeded" | "Updating" => Some(("running", "VM running")),
        "Creating" => Some(("starting", "VM starting")),
        "Deleting" => Some(("stopping", "VM stopping")),
        _ => None,
    };
    if let Some((code, display)) = power {
        statuses.push(json!({"code": format!("PowerState/{code}"), "level": "Info", "displayStatus": display}));
    }
    let disks: Vec<Value> = r
        .vm
        .as_ref()
        .filter(|x| x.disk.is_some())
        .map(|x| {
            vec![json!({"name": x.os_disk_name, "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"}]})]
        })
        .unwrap_or_default();
    json!({
        "computerName": r.body["properties"]["osProfile"]["computerName"],
        "osName": "ubuntu",
        "osVersion": "22.04",
        "hyperVGeneration": "V2",
        "disks": disks,
        "statuses": statuses,
    })
}

impl Inner {
    pub(super) fn put_vm(&mut self, sub: &str, rg: &str, name: &str, req: &Req<'_>) -> Reply {
        let kind = ArmKind::VirtualMachine;
        let PutStart {
            key,
            body,
            location,
            tags,
        } = self.put_start(kind, sub, rg, name, req)?;
        if !body["properties"].is_object() {
            return Err(invalid("The VM has no properties object."));
        }
        let p = &body["properties"];
        let Some(size) = p["hardwareProfile"]["vmSize"]
            .as_str()
            .filter(|s| !s.is_empty())
        else {
            return Err(invalid(
                "Required parameter 'hardwareProfile.vmSize' is missing (null).",
            ));
        };
        let img = &p["storageProfile"]["imageReference"];
        let by_id = ["id", "sharedGalleryImageId", "communityGalleryImageId"]
            .iter()
            .any(|k| img[*k].as_str().is_some_and(|s| !s.is_empty()));
        let by_name = ["publisher", "offer", "sku", "version"]
            .iter()
            .all(|k| img[*k].as_str().is_some_and(|s| !s.is_empty()));
        if !by_id && !by_name {
            return Err(invalid(
                "storageProfile.imageReference needs publisher, offer, sku and version, or an id.",
            ));
        }
        let os = &p["osProfile"];
        match os["computerName"].as_str() {
            Some(c) if !c.is_empty() && c.len() <= 64 => {}
            Some(c) if !c.is_empty() => {
                return Err(invalid(format!(
                    "osProfile.computerName '{c}' is longer than 64 characters."
                )));
            }
            _ => {
                return Err(invalid(
                    "Required parameter 'osProfile.computerName' is missing (null).",
                ));
            }
        }
        if os["adminUsername"].as_str().is_none_or(str::is_empty) {
            return Err(invalid(
                "Required parameter 'osProfile.adminUsername' is missing (null).",
            ));
        }
        let custom_data = check_base64(&os["customData"], "osProfile.customData")?;
        let user_data = check_base64(&p["userData"], "userData")?;
        let os_disk = &p["storageProfile"]["osDisk"];
        if !os_disk.is_null() && !os_disk.is_object() {
            return Err(invalid("storageProfile.osDisk must be an object."));
        }
        let os_disk_delete =
            parse_delete_option(&os_disk["deleteOption"], "storageProfile.osDisk")?;
        let encryption = match &os_disk["managedDisk"]["securityProfile"]["securityEncryptionType"]
        {
            Value::Null => None,
            Value::String(s) => Some(
                ENCRYPTION_TYPES
                    .iter()
                    .find(|t| t.eq_ignore_ascii_case(s))
                    .map(|t| t.to_string())
                    .ok_or_else(|| {
                        invalid(format!(
                            "securityEncryptionType '{s}' is not one of {}.",
                            ENCRYPTION_TYPES.join(", ")
                        ))
                    })?,
            ),
            _ => return Err(invalid("securityEncryptionType must be a string.")),
        };
        let cvm = p["securityProfile"]["securityType"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("ConfidentialVM"));
        if cvm {
            if !confidential_size(size) {
                return Err(bad(
                    "BadRequest",
                    format!(
                        "The VM size '{size}' does not support securityType ConfidentialVM; use a confidential size such as Standard_DC2as_v5 (DCasv5/DCadsv5/DCesv5/DCedsv5/ECasv5/ECadsv5/ECesv5/ECedsv5)."
                    ),
                ));
            }
            if p["securityProfile"]["uefiSettings"]["vTpmEnabled"].as_bool() != Some(true) {
                return Err(bad(
                    "BadRequest",
                    "securityType ConfidentialVM requires securityProfile.uefiSettings.vTpmEnabled = true.",
                ));
            }
            if encryption.is_none() {
                return Err(bad(
                    "BadRequest",
                    "securityType ConfidentialVM requires storageProfile.osDisk.managedDisk.securityProfile.securityEncryptionType (VMGuestStateOnly, DiskWithVMGuestState or NonPersistedTPM).",
                ));
            }
        } else if encryption.is_some() {
            return Err(bad(
                "BadRequest",
                "securityEncryptionType can be set only for Confidential VMs (securityProfile.securityType = ConfidentialVM).",
            ));
        }
        let refs = match p["networkProfile"]["networkInterfaces"].as_array() {
            Some(a) if !a.is_empty() => a,
            _ => {
                return Err(invalid(
                    "networkProfile.networkInterfaces must name at least one network interface.",
                ));
            }
        };
        let primaries = refs
            .iter()
            .filter(|r| r["properties"]["primary"].as_bool() == Some(true))
            .count();
        if refs.len() > 1 && primaries != 1 {
            return Err(invalid(
                "A VM with several network interfaces must mark exactly one as primary.",
            ));
        }
        let mut nics: Vec<(String, bool)> = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            let target = format!("networkProfile.networkInterfaces[{i}].id");
            let Some(id) = r["id"].as_str() else {
                return Err(invalid(format!(
                    "Required parameter '{target}' is missing."
                )));
            };
            let nk = parse_ref(id, ArmKind::NetworkInterface).ok_or_else(|| {
                invalid(format!("{target} '{id}' is not a network interface id."))
            })?;
            let Some(nic) = self.res.get(&nk) else {
                return Err(invalid(format!(
                    "Network interface '{id}' ({target}) was not found."
                )));
            };
            if nics.iter().any(|(k, _)| *k == nk) {
                return Err(invalid(format!(
                    "Network interface '{id}' is listed twice."
                )));
            }
            if nic.state() == "Deleting" {
                return Err(invalid(format!(
                    "Network interface '{id}' is being deleted."
                )));
            }
            if let Some(other) = &nic.attached_to
                && *other != key
                && self.res.contains_key(other)
            {
                let other_id = self
                    .res
                    .get(other)
                    .map(|v| v.id.clone())
                    .unwrap_or_default();
                return Err(bad(
                    "NicInUse",
                    format!("Network interface '{id}' is already attached to VM '{other_id}'."),
                ));
            }
            if nic.location != location {
                return Err(invalid(format!(
                    "Network interface '{id}' is in location '{}', the VM in '{location}'.",
                    nic.location
                )));
            }
            if cvm && nic.body["properties"]["enableAcceleratedNetworking"].as_bool() == Some(true)
            {
                return Err(bad(
                    "BadRequest",
                    format!(
                        "Network interface '{id}' has accelerated networking enabled, which Confidential VMs do not support."
                    ),
                ));
            }
            let delete = parse_delete_option(&r["properties"]["deleteOption"], &target)?;
            nics.push((nk, delete));
        }
        let existing = self.res.get(&key).cloned();
        if let Some(old) = existing.as_ref().and_then(|e| e.vm.as_ref())
            && let Some(new) = &custom_data
            && old.custom_data.as_ref() != Some(new)
        {
            return Err(bad(
                "PropertyChangeNotAllowed",
                "Changing property 'osProfile.customData' is not allowed.",
            ));
        }

        if existing.is_none()
            && let Some(disk) = os_disk["name"].as_str().filter(|n| !n.is_empty())
            && self.res.contains_key(&key_of(ArmKind::Disk, sub, rg, disk))
        {
            return Err(bad(
                "ConflictingUserInput",
                format!(
                    "Disk {disk} already exists in resource group {rg}. Only CreateOption.Attach is supported."
                ),
            ));
        }

        // Accepted: build the stored VM.
        let fault = self.operation_fault(req);
        let (id, name) = match &existing {
            Some(e) => (e.id.clone(), e.name.clone()),
            None => (canonical_id(kind, sub, rg, name), name.to_owned()),
        };
        let (sub, rg) = match &existing {
            Some(e) => (e.sub.clone(), e.rg.clone()),
            None => (sub.to_owned(), rg.to_owned()),
        };
        let os_disk_name = match (
            existing.as_ref().and_then(|e| e.vm.as_ref()),
            os_disk["name"].as_str(),
        ) {
            (Some(x), _) => x.os_disk_name.clone(),
            (None, Some(n)) if !n.is_empty() => n.to_owned(),
            _ => format!("{name}_OsDisk_1_{}", uuid::Uuid::new_v4().simple()),
        };
        let mut props = p.clone();
        remove_path(&mut props, &["osProfile", "customData"]);
        remove_path(&mut props, &["osProfile", "adminPassword"]);
        remove_path(&mut props, &["userData"]);
        remove_path(&mut props, &["provisioningState"]);
        let od = ["storageProfile", "osDisk"];
        let od_path = |k: &'static str| [od[0], od[1], k];
        set_path(
            &mut props,
            &od_path("deleteOption"),
            json!(if os_disk_delete { "Delete" } else { "Detach" }),
        );
        set_path(&mut props, &od_path("name"), json!(os_disk_name));
        if os_disk["osType"].is_null() {
            set_path(&mut props, &od_path("osType"), json!("Linux"));
        }
        if os_disk["createOption"].is_null() {
            set_path(&mut props, &od_path("createOption"), json!("FromImage"));
        }
        let disk = existing
            .as_ref()
            .and_then(|e| e.vm.as_ref())
            .and_then(|x| x.disk.clone());
        if let Some(dk) = &disk
            && let Some(d) = self.res.get(dk)
        {
            set_path(
                &mut props,
                &["storageProfile", "osDisk", "managedDisk", "id"],
                json!(d.id),
            );
        }
        for (i, (_, delete)) in nics.iter().enumerate() {
            if let Some(r) = props
                .get_mut("networkProfile")
                .and_then(|n| n.get_mut("networkInterfaces"))
                .and_then(|a| a.get_mut(i))
            {
                set_path(
                    r,
                    &["properties", "deleteOption"],
                    json!(if *delete { "Delete" } else { "Detach" }),
                );
            }
        }
        let vm_id = existing
            .as_ref()
            .and_then(|e| e.body["properties"]["vmId"].as_str().map(str::to_owned))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let created = existing
            .as_ref()
            .and_then(|e| {
                e.body["properties"]["timeCreated"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(now);
        set_path(&mut props, &["vmId"], json!(vm_id));
        set_path(&mut props, &["timeCreated"], json!(created));
        let state = if existing.is_some() {
            "Updating"
        } else {
            "Creating"
        };
        set_path(&mut props, &["provisioningState"], json!(state));
        let mut out = Map::new();
        if let Some(obj) = body.as_object() {
            for (k, v) in obj {
                if !matches!(
                    k.as_str(),
                    "id" | "name" | "type" | "location" | "tags" | "properties" | "etag"
                ) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        out.insert("id".into(), json!(id));
        out.insert("name".into(), json!(name));
        out.insert("type".into(), json!(kind.resource_type()));
        out.insert("location".into(), json!(location));
        out.insert("tags".into(), json!(tags));
        out.insert("properties".into(), props);
        let stored_body = Value::Object(out);

        // NICs: attach the new ones, detach the ones an update dropped.
        if let Some(old) = existing.as_ref().and_then(|e| e.vm.as_ref()) {
            for (nk, _) in &old.nics {
                if !nics.iter().any(|(k, _)| k == nk)
                    && let Some(n) = self.res.get_mut(nk)
                    && n.attached_to.as_deref() == Some(key.as_str())
                {
                    n.attached_to = None;
                    remove_path(&mut n.body, &["properties", "virtualMachine"]);
                }
            }
        }
        for (nk, _) in &nics {
            if let Some(n) = self.res.get_mut(nk) {
                n.attached_to = Some(key.clone());
                set_path(
                    &mut n.body,
                    &["properties", "virtualMachine"],
                    json!({"id": id}),
                );
            }
        }
        let what = if existing.is_some() {
            OpWhat::UpdateVm
        } else {
            OpWhat::CreateVm
        };
        let op = self.new_op(what, &key, fault);
        let extra = VmExtra {
            custom_data: custom_data.or_else(|| {
                existing
                    .as_ref()
                    .and_then(|e| e.vm.as_ref())
                    .and_then(|x| x.custom_data.clone())
            }),
            user_data: user_data.or_else(|| {
                existing
                    .as_ref()
                    .and_then(|e| e.vm.as_ref())
                    .and_then(|x| x.user_data.clone())
            }),
            os_disk_name,
            os_disk_delete,
            storage_type: os_disk["managedDisk"]["storageAccountType"]
                .as_str()
                .unwrap_or("Premium_LRS")
                .to_owned(),
            encryption,
            nics,
            disk,
            failure: None,
        };
        let res = Res {
            kind,
            sub: sub.clone(),
            rg,
            name,
            id,
            location: location.clone(),
            tags,
            body: stored_body.clone(),
            busy: Some(op.clone()),
            attached_to: None,
            vm: Some(extra),
        };
        self.res.insert(key, res);
        Ok(self.accepted_put(existing.is_some(), kind, &sub, &location, &op, stored_body))
    }

    /// A deleted VM's disk and NICs go with it or stay, per `deleteOption`.
    pub(super) fn release_vm(&mut self, vm: &Res) {
        let Some(x) = &vm.vm else { return };
        let vm_key = vm.id.to_ascii_lowercase();
        if let Some(dk) = &x.disk {
            if x.os_disk_delete {
                self.res.remove(dk);
            } else if let Some(d) = self.res.get_mut(dk)
                && d.attached_to.as_deref() == Some(&vm_key)
            {
                d.attached_to = None;
                remove_path(&mut d.body, &["managedBy"]);
                set_path(
                    &mut d.body,
                    &["properties", "diskState"],
                    json!("Unattached"),
                );
            }
        }
        for (nk, delete) in &x.nics {
            let attached_here = self
                .res
                .get(nk)
                .is_some_and(|n| n.attached_to.as_deref() == Some(&vm_key));
            if !attached_here {
                continue;
            }
            if *delete {
                if let Some(nic) = self.res.remove(nk) {
                    self.forget_nic(&nic);
                }
            } else if let Some(n) = self.res.get_mut(nk) {
                n.attached_to = None;
                remove_path(&mut n.body, &["properties", "virtualMachine"]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidential_sizes() {
        for ok in [
            "Standard_DC2as_v5",
            "standard_dc96ads_v5",
            "Standard_DC4es_v5",
            "Standard_EC8eds_v5",
            "Standard_EC16as_v5",
            "Standard_DC4as_v6",
        ] {
            assert!(confidential_size(ok), "{ok}");
        }
        for no in [
            "Standard_D2s_v5",
            "Standard_DC2s_v3",
            "Standard_DCas_v5",
            "DC2as_v5",
            "Standard_DC2es_v6",
            "",
        ] {
            assert!(!confidential_size(no), "{no}");
        }
    }
}
