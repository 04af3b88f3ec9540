//! Managed disks: the OS disk a VM create makes (ARM has no separate PUT
//! here), with its confidential-VM security type.

use serde_json::json;

use super::ArmKind;
use super::parse::{canonical_id, key_of, set_path};
use super::reply::now;
use super::state::{Inner, Res};

impl Inner {
    pub(super) fn create_os_disk(&mut self, vm_key: &str) {
        let Some(vm) = self.res.get(vm_key) else {
            return;
        };
        let Some(x) = vm.vm.as_ref() else {
            return;
        };
        if x.disk.is_some() {
            return;
        }
        let key = key_of(ArmKind::Disk, &vm.sub, &vm.rg, &x.os_disk_name);
        let id = canonical_id(ArmKind::Disk, &vm.sub, &vm.rg, &x.os_disk_name);
        let mut props = json!({
            "osType": "Linux",
            "hyperVGeneration": "V2",
            "creationData": {"createOption": "FromImage"},
            "diskSizeGB": 30,
            "diskState": "Attached",
            "provisioningState": "Succeeded",
            "timeCreated": now(),
            "uniqueId": uuid::Uuid::new_v4().to_string(),
        });
        if let Some(enc) = &x.encryption {
            let security_type = match enc.to_ascii_lowercase().as_str() {
                "vmgueststateonly" => "ConfidentialVM_VMGuestStateOnlyEncryptedWithPlatformKey",
                "nonpersistedtpm" => "ConfidentialVM_NonPersistedTPM",
                _ => "ConfidentialVM_DiskEncryptedWithPlatformKey",
            };
            props["securityProfile"] = json!({"securityType": security_type});
        }
        let body = json!({
            "id": id,
            "name": x.os_disk_name,
            "type": ArmKind::Disk.resource_type(),
            "location": vm.location,
            "tags": vm.tags,
            "managedBy": vm.id,
            "sku": {"name": x.storage_type, "tier": "Premium"},
            "properties": props,
        });
        let disk = Res {
            kind: ArmKind::Disk,
            sub: vm.sub.clone(),
            rg: vm.rg.clone(),
            name: x.os_disk_name.clone(),
            id: id.clone(),
            location: vm.location.clone(),
            tags: vm.tags.clone(),
            body,
            busy: None,
            attached_to: Some(vm_key.to_owned()),
            vm: None,
        };
        self.res.insert(key.clone(), disk);
        if let Some(vm) = self.res.get_mut(vm_key) {
            set_path(
                &mut vm.body,
                &[
                    "properties",
                    "storageProfile",
                    "osDisk",
                    "managedDisk",
                    "id",
                ],
                json!(id),
            );
            if let Some(x) = vm.vm.as_mut() {
                x.disk = Some(key);
            }
        }
    }
}
