//! Network interfaces and public IPs: their PUTs and the references between
//! them.

use serde_json::{Value, json};

use super::ArmKind;
use super::operations::OpWhat;
use super::parse::{canonical_id, remove_path, set_path};
use super::reply::{Reply, bad, invalid};
use super::resources::PutStart;
use super::routes::{Req, parse_ref};
use super::state::{Inner, Res};

impl Inner {
    pub(super) fn put_nic(&mut self, sub: &str, rg: &str, name: &str, req: &Req<'_>) -> Reply {
        let kind = ArmKind::NetworkInterface;
        let PutStart {
            key,
            body,
            location,
            tags,
        } = self.put_start(kind, sub, rg, name, req)?;
        let p = &body["properties"];
        if !p.is_null() && !p.is_object() {
            return Err(invalid("properties must be an object."));
        }
        let ipcs = match p["ipConfigurations"].as_array() {
            Some(a) if !a.is_empty() => a,
            _ => {
                return Err(invalid(
                    "A network interface needs at least one entry in properties.ipConfigurations.",
                ));
            }
        };
        let accelerated = match &p["enableAcceleratedNetworking"] {
            Value::Null => false,
            Value::Bool(b) => *b,
            _ => return Err(invalid("enableAcceleratedNetworking must be a boolean.")),
        };
        let existing = self.res.get(&key).cloned();
        let (id, name) = match &existing {
            Some(e) => (e.id.clone(), e.name.clone()),
            None => (canonical_id(kind, sub, rg, name), name.to_owned()),
        };
        let mut configs = Vec::new();
        let mut pips: Vec<(String, String)> = Vec::new();
        for (i, ipc) in ipcs.iter().enumerate() {
            let cname = ipc["name"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("ipconfig{}", i + 1));
            let cid = format!("{id}/ipConfigurations/{cname}");
            let ip = &ipc["properties"];
            let Some(subnet) = ip["subnet"]["id"]
                .as_str()
                .filter(|s| s.to_ascii_lowercase().starts_with("/subscriptions/"))
            else {
                return Err(invalid(format!(
                    "properties.ipConfigurations[{i}].properties.subnet.id must be a subnet id (/subscriptions/…)."
                )));
            };
            let mut cprops = ip.as_object().cloned().unwrap_or_default();
            match &ip["publicIPAddress"]["id"] {
                Value::Null => {}
                Value::String(pid) => {
                    let Some(pk) = parse_ref(pid, ArmKind::PublicIpAddress)
                        .filter(|pk| self.res.contains_key(pk))
                    else {
                        return Err(bad(
                            "InvalidResourceReference",
                            format!("Resource {pid} referenced by resource {id} was not found."),
                        ));
                    };
                    let used_by = self.res.get(&pk).and_then(|r| {
                        r.body["properties"]["ipConfiguration"]["id"]
                            .as_str()
                            .map(str::to_owned)
                    });
                    if let Some(other) = used_by
                        && !other
                            .to_ascii_lowercase()
                            .starts_with(&format!("{}/", id.to_ascii_lowercase()))
                    {
                        return Err(invalid(format!(
                            "Public IP address {pid} is already used by {other}."
                        )));
                    }
                    pips.push((pk, cid.clone()));
                }
                _ => return Err(invalid("publicIPAddress.id must be a string.")),
            }
            let old_ip = existing.as_ref().and_then(|e| {
                e.body["properties"]["ipConfigurations"]
                    .as_array()?
                    .iter()
                    .find(|c| c["name"].as_str() == Some(cname.as_str()))?["properties"]["privateIPAddress"]
                    .as_str()
                    .map(str::to_owned)
            });
            let private_ip = old_ip.unwrap_or_else(|| {
                let n = self.next_private;
                self.next_private += 1;
                format!("10.0.{}.{}", (n / 250) % 256, n % 250 + 4)
            });
            cprops.insert("provisioningState".into(), json!("Succeeded"));
            cprops.insert("privateIPAddress".into(), json!(private_ip));
            cprops
                .entry("privateIPAllocationMethod")
                .or_insert(json!("Dynamic"));
            cprops.insert("subnet".into(), json!({"id": subnet}));
            cprops.insert("primary".into(), json!(i == 0));
            cprops.insert("privateIPAddressVersion".into(), json!("IPv4"));
            configs.push(json!({"name": cname, "id": cid, "type": "Microsoft.Network/networkInterfaces/ipConfigurations", "properties": cprops}));
        }
        let fault = self.operation_fault(req);
        let busy = fault.is_some();
        let mut props = p.as_object().cloned().unwrap_or_default();
        props.insert("ipConfigurations".into(), Value::Array(configs));
        props.insert("enableAcceleratedNetworking".into(), json!(accelerated));
        props.entry("enableIPForwarding").or_insert(json!(false));
        props.insert("nicType".into(), json!("Standard"));
        props.insert(
            "provisioningState".into(),
            json!(if busy { "Updating" } else { "Succeeded" }),
        );
        let keep = |field: &str| {
            existing
                .as_ref()
                .map(|e| e.body["properties"][field].clone())
                .filter(|v| !v.is_null())
        };
        props.insert(
            "resourceGuid".into(),
            keep("resourceGuid").unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string())),
        );
        props.insert(
            "macAddress".into(),
            keep("macAddress").unwrap_or_else(|| {
                json!(format!(
                    "00-0D-3A-{:02X}-{:02X}-{:02X}",
                    rand::random::<u8>(),
                    rand::random::<u8>(),
                    rand::random::<u8>()
                ))
            }),
        );
        props.remove("virtualMachine");
        if let Some(vm) = keep("virtualMachine") {
            props.insert("virtualMachine".into(), vm);
        }
        let stored_body = json!({
            "id": id,
            "name": name,
            "type": kind.resource_type(),
            "location": location,
            "tags": tags,
            "etag": format!("W/\"{}\"", uuid::Uuid::new_v4()),
            "properties": props,
        });
        // Public IP back-references follow the NIC's configurations.
        let prefix = format!("{}/", id.to_ascii_lowercase());
        for r in self.res.values_mut() {
            if r.kind == ArmKind::PublicIpAddress
                && r.body["properties"]["ipConfiguration"]["id"]
                    .as_str()
                    .is_some_and(|c| c.to_ascii_lowercase().starts_with(&prefix))
            {
                remove_path(&mut r.body, &["properties", "ipConfiguration"]);
            }
        }
        for (pk, cid) in pips {
            if let Some(r) = self.res.get_mut(&pk) {
                set_path(
                    &mut r.body,
                    &["properties", "ipConfiguration"],
                    json!({"id": cid}),
                );
            }
        }
        let op = self.new_op(OpWhat::PutNetwork, &key, fault);
        let (sub, rg) = match &existing {
            Some(e) => (e.sub.clone(), e.rg.clone()),
            None => (sub.to_owned(), rg.to_owned()),
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
            busy: busy.then(|| op.clone()),
            attached_to: existing.as_ref().and_then(|e| e.attached_to.clone()),
            vm: None,
        };
        self.res.insert(key, res);
        Ok(self.accepted_put(existing.is_some(), kind, &sub, &location, &op, stored_body))
    }

    pub(super) fn put_pip(&mut self, sub: &str, rg: &str, name: &str, req: &Req<'_>) -> Reply {
        let kind = ArmKind::PublicIpAddress;
        let PutStart {
            key,
            body,
            location,
            tags,
        } = self.put_start(kind, sub, rg, name, req)?;
        let p = &body["properties"];
        if !p.is_null() && !p.is_object() {
            return Err(invalid("properties must be an object."));
        }
        let existing = self.res.get(&key).cloned();
        let (id, name, sub, rg) = match &existing {
            Some(e) => (e.id.clone(), e.name.clone(), e.sub.clone(), e.rg.clone()),
            None => (
                canonical_id(kind, sub, rg, name),
                name.to_owned(),
                sub.to_owned(),
                rg.to_owned(),
            ),
        };
        let fault = self.operation_fault(req);
        let busy = fault.is_some();
        let keep = |field: &str| {
            existing
                .as_ref()
                .map(|e| e.body["properties"][field].clone())
                .filter(|v| !v.is_null())
        };
        let address = keep("ipAddress").unwrap_or_else(|| {
            let n = self.next_public;
            self.next_public += 1;
            json!(format!("20.0.{}.{}", (n / 250) % 256, n % 250 + 4))
        });
        let mut props = p.as_object().cloned().unwrap_or_default();
        props.insert(
            "provisioningState".into(),
            json!(if busy { "Updating" } else { "Succeeded" }),
        );
        props.insert("ipAddress".into(), address);
        props
            .entry("publicIPAddressVersion")
            .or_insert(json!("IPv4"));
        props
            .entry("publicIPAllocationMethod")
            .or_insert(json!("Static"));
        props.entry("idleTimeoutInMinutes").or_insert(json!(4));
        props.insert(
            "resourceGuid".into(),
            keep("resourceGuid").unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string())),
        );
        props.remove("ipConfiguration");
        if let Some(c) = keep("ipConfiguration") {
            props.insert("ipConfiguration".into(), c);
        }
        let sku = match &body["sku"] {
            Value::Object(_) => body["sku"].clone(),
            _ => json!({"name": "Standard", "tier": "Regional"}),
        };
        let stored_body = json!({
            "id": id,
            "name": name,
            "type": kind.resource_type(),
            "location": location,
            "tags": tags,
            "etag": format!("W/\"{}\"", uuid::Uuid::new_v4()),
            "sku": sku,
            "properties": props,
        });
        let op = self.new_op(OpWhat::PutNetwork, &key, fault);
        self.res.insert(
            key,
            Res {
                kind,
                sub: sub.clone(),
                rg,
                name,
                id,
                location: location.clone(),
                tags,
                body: stored_body.clone(),
                busy: busy.then(|| op.clone()),
                attached_to: None,
                vm: None,
            },
        );
        Ok(self.accepted_put(existing.is_some(), kind, &sub, &location, &op, stored_body))
    }

    /// Drops the back-references public IPs hold to a NIC that went away.
    pub(super) fn forget_nic(&mut self, nic: &Res) {
        let prefix = format!("{}/", nic.id.to_ascii_lowercase());
        for r in self.res.values_mut() {
            if r.kind == ArmKind::PublicIpAddress
                && r.body["properties"]["ipConfiguration"]["id"]
                    .as_str()
                    .is_some_and(|id| id.to_ascii_lowercase().starts_with(&prefix))
            {
                remove_path(&mut r.body, &["properties", "ipConfiguration"]);
            }
        }
    }
}
