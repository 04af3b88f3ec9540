//! `FakeArm` driven over plain HTTP the way the Azure provider drives real
//! ARM: create a NIC and a confidential VM, poll their operations, list with
//! `nextLink`, delete and see what `deleteOption` leaves behind, and meet the
//! errors and faults real ARM answers with.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hangar_testkit::fake_arm::{ArmBoot, ArmFault, ArmKind, FakeArm};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const SUB: &str = "/subscriptions/00000000-0000-0000-0000-00000000c0de";
const RG: &str = "/subscriptions/00000000-0000-0000-0000-00000000c0de/resourceGroups/rg-hangar";
const OTHER_RG: &str =
    "/subscriptions/00000000-0000-0000-0000-00000000c0de/resourceGroups/rg-other";
const SUBNET: &str = "/subscriptions/00000000-0000-0000-0000-00000000c0de/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn nic_path(rg: &str, name: &str) -> String {
    format!("{rg}/providers/Microsoft.Network/networkInterfaces/{name}")
}

fn vm_path(rg: &str, name: &str) -> String {
    format!("{rg}/providers/Microsoft.Compute/virtualMachines/{name}")
}

fn nic_body(tags: Value) -> Value {
    json!({
        "location": "westeurope",
        "tags": tags,
        "properties": {
            "enableAcceleratedNetworking": false,
            "ipConfigurations": [{"name": "ipconfig1", "properties": {"subnet": {"id": SUBNET}}}]
        }
    })
}

/// A confidential VM body like the one a one-VM-per-job provider sends.
fn cvm_body(name: &str, nic_id: &str, tags: Value) -> Value {
    json!({
        "location": "westeurope",
        "tags": tags,
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_DC2as_v5"},
            "securityProfile": {
                "securityType": "ConfidentialVM",
                "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}
            },
            "storageProfile": {
                "imageReference": {
                    "publisher": "Canonical",
                    "offer": "0001-com-ubuntu-confidential-vm-jammy",
                    "sku": "22_04-lts-cvm",
                    "version": "latest"
                },
                "osDisk": {
                    "createOption": "FromImage",
                    "managedDisk": {
                        "storageAccountType": "Premium_LRS",
                        "securityProfile": {"securityEncryptionType": "DiskWithVMGuestState"}
                    }
                }
            },
            "osProfile": {
                "computerName": name,
                "adminUsername": "hangar",
                "customData": b64("#!/bin/sh\necho hello\n"),
                "linuxConfiguration": {"disablePasswordAuthentication": true}
            },
            "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"primary": true}}]}
        }
    })
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn state(&self) -> &str {
        self.body["properties"]["provisioningState"]
            .as_str()
            .unwrap_or("")
    }
}

struct T {
    arm: FakeArm,
    http: Client,
}

impl T {
    async fn new() -> T {
        T {
            arm: FakeArm::start().await,
            http: Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version=2024-07-01", self.arm.url())
    }

    async fn raw(&self, rb: reqwest::RequestBuilder) -> Resp {
        let r = rb.send().await.expect("request reaches the fake");
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("fake answers JSON")
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut rb = self.http.request(method, self.url(path));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        self.raw(rb).await
    }

    async fn put(&self, path: &str, body: Value) -> Resp {
        self.send(Method::PUT, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None).await
    }

    /// GETs an absolute URL the fake handed out, as-is.
    async fn follow(&self, url: &str) -> Resp {
        self.raw(self.http.get(url)).await
    }

    /// Polls an `Azure-AsyncOperation` URL to a terminal status; returns
    /// every status seen and the last body.
    async fn poll_async(&self, url: &str) -> (Vec<String>, Value) {
        let mut seen = Vec::new();
        for _ in 0..50 {
            let r = self.follow(url).await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            assert_eq!(r.header("retry-after"), Some("0"));
            let s = r.body["status"].as_str().expect("status").to_owned();
            seen.push(s.clone());
            if s != "InProgress" {
                return (seen, r.body);
            }
        }
        panic!("operation {url} never finished: {seen:?}");
    }

    /// Polls a `Location` URL until it stops answering 202.
    async fn poll_location(&self, url: &str) -> Vec<u16> {
        let mut seen = Vec::new();
        for _ in 0..50 {
            let r = self.follow(url).await;
            seen.push(r.status.as_u16());
            if r.status != StatusCode::ACCEPTED {
                return seen;
            }
            assert_eq!(r.header("retry-after"), Some("0"));
        }
        panic!("location {url} never finished: {seen:?}");
    }

    async fn make_nic(&self, rg: &str, name: &str, tags: Value) -> String {
        let r = self.put(&nic_path(rg, name), nic_body(tags)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["id"].as_str().expect("nic id").to_owned()
    }

    /// NIC + CVM, create polled to the end; returns the VM's GET body.
    async fn make_vm(&self, rg: &str, name: &str, tags: Value, delete: bool) -> Value {
        let nic = self
            .make_nic(rg, &format!("{name}-nic"), tags.clone())
            .await;
        let mut body = cvm_body(name, &nic, tags);
        if delete {
            body["properties"]["storageProfile"]["osDisk"]["deleteOption"] = json!("Delete");
            body["properties"]["networkProfile"]["networkInterfaces"][0]["properties"]["deleteOption"] =
                json!("Delete");
        }
        let r = self.put(&vm_path(rg, name), body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let op = r
            .header("azure-asyncoperation")
            .expect("async header")
            .to_owned();
        let (seen, _) = self.poll_async(&op).await;
        assert_eq!(seen.last().map(String::as_str), Some("Succeeded"));
        let vm = self.get(&vm_path(rg, name)).await;
        assert_eq!(vm.state(), "Succeeded");
        vm.body
    }

    /// Follows `nextLink` to the end; returns the pages.
    async fn pages(&self, first: reqwest::RequestBuilder) -> Vec<Value> {
        let mut pages = vec![self.raw(first).await];
        while let Some(next) = pages.last().and_then(|p| p.body["nextLink"].as_str()) {
            assert!(next.starts_with(&self.arm.url()), "{next}");
            assert!(next.contains("api-version="), "{next}");
            assert!(next.contains("$skiptoken="), "{next}");
            let next = next.to_owned();
            pages.push(self.follow(&next).await);
            assert!(pages.len() < 20, "nextLink loops");
        }
        pages
            .into_iter()
            .map(|p| {
                assert_eq!(p.status, StatusCode::OK, "{:?}", p.body);
                p.body
            })
            .collect()
    }
}

fn names(pages: &[Value]) -> BTreeSet<String> {
    pages
        .iter()
        .flat_map(|p| p["value"].as_array().cloned().unwrap_or_default())
        .map(|v| v["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn confidential_vm_create_flow() {
    let t = T::new().await;
    t.arm.set_polls(2);

    let r = t
        .put(&nic_path(RG, "hangar-1-nic"), nic_body(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.state(),
        "Succeeded",
        "network PUTs answer Succeeded at once"
    );
    let nic_id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        nic_id,
        format!("{RG}/providers/Microsoft.Network/networkInterfaces/hangar-1-nic")
    );
    let ip = r.body["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]
        .as_str()
        .unwrap();
    assert!(ip.starts_with("10.0."), "{ip}");
    assert!(r.body["properties"]["macAddress"].is_string());
    let nic_op = r.header("azure-asyncoperation").unwrap().to_owned();
    assert!(nic_op.starts_with(&format!(
        "{}{SUB}/providers/Microsoft.Network/locations/westeurope/operations/",
        t.arm.url()
    )));
    assert_eq!(r.header("retry-after"), Some("0"));
    assert_eq!(
        t.poll_async(&nic_op).await.0,
        ["InProgress", "InProgress", "Succeeded"]
    );

    let tags = json!({"hangar-controller": "c1", "hangar-pool": "p1"});
    let mut body = cvm_body("hangar-1", &nic_id, tags.clone());
    body["properties"]["storageProfile"]["osDisk"]["deleteOption"] = json!("Delete");
    let r = t.put(&vm_path(RG, "hangar-1"), body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.state(), "Creating");
    assert_eq!(r.body["type"], "Microsoft.Compute/virtualMachines");
    assert_eq!(r.body["tags"], tags);
    assert_eq!(r.body["properties"]["vmId"].as_str().unwrap().len(), 36);
    assert!(
        r.body["properties"]["osProfile"]
            .get("customData")
            .is_none(),
        "ARM does not echo customData"
    );
    assert_eq!(
        r.body["properties"]["securityProfile"]["securityType"],
        "ConfidentialVM"
    );
    assert_eq!(r.header("retry-after"), Some("0"));
    let op = r.header("azure-asyncoperation").unwrap().to_owned();
    assert!(op.starts_with(&format!(
        "{}{SUB}/providers/Microsoft.Compute/locations/westeurope/operations/",
        t.arm.url()
    )));
    assert!(
        t.arm.resource(ArmKind::Disk, "x").is_none() && t.arm.resources().len() == 2,
        "no disk before the create finished"
    );

    let (seen, last) = t.poll_async(&op).await;
    assert_eq!(seen, ["InProgress", "InProgress", "Succeeded"]);
    assert!(last["endTime"].is_string() && last.get("error").is_none());

    let vm = t.get(&vm_path(RG, "hangar-1")).await;
    assert_eq!(vm.state(), "Succeeded");
    let os_disk = &vm.body["properties"]["storageProfile"]["osDisk"];
    let disk_name = os_disk["name"].as_str().unwrap();
    assert!(disk_name.starts_with("hangar-1_OsDisk_1_"), "{disk_name}");
    assert_eq!(disk_name.len(), "hangar-1_OsDisk_1_".len() + 32);
    assert_eq!(os_disk["deleteOption"], "Delete");
    let disk = t
        .arm
        .resource(ArmKind::Disk, disk_name)
        .expect("OS disk exists");
    assert_eq!(os_disk["managedDisk"]["id"], json!(disk.id));
    assert_eq!(
        disk.tags.get("hangar-controller").map(String::as_str),
        Some("c1")
    );
    assert_eq!(disk.body["managedBy"], vm.body["id"]);
    assert_eq!(
        disk.body["properties"]["securityProfile"]["securityType"],
        "ConfidentialVM_DiskEncryptedWithPlatformKey"
    );
    let d = t
        .raw(
            t.http
                .get(format!("{}{}?api-version=2024-03-02", t.arm.url(), disk.id)),
        )
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.body["properties"]["diskState"], "Attached");

    let nic = t.get(&nic_path(RG, "hangar-1-nic")).await;
    assert_eq!(
        nic.body["properties"]["virtualMachine"]["id"],
        vm.body["id"]
    );

    let iv = t
        .get(&format!("{}/instanceView", vm_path(RG, "hangar-1")))
        .await;
    let codes: Vec<&str> = iv.body["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["code"].as_str())
        .collect();
    assert_eq!(codes, ["ProvisioningState/succeeded", "PowerState/running"]);

    // Kept internally: the request log has the customData ARM won't echo.
    let put = t
        .arm
        .requests()
        .into_iter()
        .find(|q| q.method == "PUT" && q.path.ends_with("/hangar-1"))
        .unwrap();
    assert_eq!(
        put.body.unwrap()["properties"]["osProfile"]["customData"],
        b64("#!/bin/sh\necho hello\n")
    );
    assert!(put.query.contains("api-version=2024-07-01"));
}

#[tokio::test]
async fn get_alone_drives_an_operation_to_its_end() {
    // A client that never polls, only GETs, still sees the VM finish.
    let t = T::new().await;
    t.arm.set_polls(3);
    let nic = t.make_nic(RG, "n", json!({})).await;
    let r = t
        .put(&vm_path(RG, "v"), cvm_body("v", &nic, json!({})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let mut states = Vec::new();
    for _ in 0..10 {
        let s = t.get(&vm_path(RG, "v")).await.state().to_owned();
        states.push(s.clone());
        if s == "Succeeded" {
            break;
        }
    }
    assert_eq!(states, ["Creating", "Creating", "Creating", "Succeeded"]);
}

/// An edit that turns a good VM body into a bad one.
type Mutation = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn validation_rejects_what_arm_rejects() {
    let t = T::new().await;
    let nic = t.make_nic(RG, "n", json!({})).await;
    let good = cvm_body("bad", &nic, json!({}));
    let path = vm_path(RG, "bad");

    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "non-confidential size",
            Box::new(|b| b["properties"]["hardwareProfile"]["vmSize"] = json!("Standard_D2s_v5")),
            "BadRequest",
        ),
        (
            "vTPM off",
            Box::new(|b| {
                b["properties"]["securityProfile"]["uefiSettings"]["vTpmEnabled"] = json!(false)
            }),
            "BadRequest",
        ),
        (
            "no encryption type",
            Box::new(|b| {
                b["properties"]["storageProfile"]["osDisk"]["managedDisk"]
                    .as_object_mut()
                    .unwrap()
                    .remove("securityProfile");
            }),
            "BadRequest",
        ),
        (
            "unknown encryption type",
            Box::new(|b| {
                b["properties"]["storageProfile"]["osDisk"]["managedDisk"]["securityProfile"]["securityEncryptionType"] =
                    json!("Everything")
            }),
            "InvalidParameter",
        ),
        (
            "customData not base64",
            Box::new(|b| {
                b["properties"]["osProfile"]["customData"] = json!("#!/bin/sh not base64")
            }),
            "InvalidParameter",
        ),
        (
            "customData too large",
            Box::new(|b| {
                b["properties"]["osProfile"]["customData"] = json!(b64(&"x".repeat(65_536)))
            }),
            "InvalidParameter",
        ),
        (
            "no location",
            Box::new(|b| {
                b.as_object_mut().unwrap().remove("location");
            }),
            "LocationRequired",
        ),
        (
            "computerName over 64",
            Box::new(|b| b["properties"]["osProfile"]["computerName"] = json!("c".repeat(65))),
            "InvalidParameter",
        ),
        (
            "no adminUsername",
            Box::new(|b| b["properties"]["osProfile"]["adminUsername"] = Value::Null),
            "InvalidParameter",
        ),
        (
            "no image",
            Box::new(|b| {
                b["properties"]["storageProfile"]["imageReference"] =
                    json!({"publisher": "Canonical"})
            }),
            "InvalidParameter",
        ),
        (
            "missing NIC",
            Box::new(|b| {
                b["properties"]["networkProfile"]["networkInterfaces"][0]["id"] =
                    json!(nic_path(RG, "nope"))
            }),
            "InvalidParameter",
        ),
        (
            "no NICs",
            Box::new(|b| b["properties"]["networkProfile"]["networkInterfaces"] = json!([])),
            "InvalidParameter",
        ),
        (
            "properties of the wrong shape",
            Box::new(|b| b["properties"]["storageProfile"]["osDisk"] = json!("disk")),
            "InvalidParameter",
        ),
    ];
    for (what, mutate, code) in cases {
        let mut b = good.clone();
        mutate(&mut b);
        let r = t.put(&path, b).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {:?}", r.body);
        assert_eq!(r.code(), code, "{what}: {:?}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }

    // Not JSON at all.
    let r = t
        .raw(
            t.http
                .put(t.url(&path))
                .header("content-type", "application/json")
                .body("{nope"),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InvalidRequestContent")
    );

    // No api-version.
    let r = t
        .raw(t.http.get(format!("{}{}", t.arm.url(), vm_path(RG, "x"))))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "MissingApiVersionParameter")
    );

    // Accelerated networking is not for CVMs.
    let mut fast = nic_body(json!({}));
    fast["properties"]["enableAcceleratedNetworking"] = json!(true);
    let r = t.put(&nic_path(RG, "fast"), fast).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = t
        .put(
            &path,
            cvm_body("bad", r.body["id"].as_str().unwrap(), json!({})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "BadRequest")
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("accelerated")
    );

    // An unknown resource type is an error, not a silent 404.
    let r = t
        .get(&format!("{RG}/providers/Microsoft.Compute/snapshots/s"))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InvalidResourceType")
    );

    assert!(
        t.arm.resource(ArmKind::VirtualMachine, "bad").is_none(),
        "a rejected PUT creates nothing"
    );

    // The limits are inclusive: 65,535 decoded bytes of customData is fine,
    // and a TrustedLaunch VM needs no confidential size.
    let mut b = good.clone();
    b["properties"]["osProfile"]["customData"] = json!(b64(&"x".repeat(65_535)));
    let r = t.put(&path, b).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let nic2 = t.make_nic(RG, "n2", json!({})).await;
    let mut tl = cvm_body("tl", &nic2, json!({}));
    tl["properties"]["hardwareProfile"]["vmSize"] = json!("Standard_D2s_v5");
    tl["properties"]["securityProfile"]["securityType"] = json!("TrustedLaunch");
    tl["properties"]["storageProfile"]["osDisk"]["managedDisk"]
        .as_object_mut()
        .unwrap()
        .remove("securityProfile");
    let r = t.put(&vm_path(RG, "tl"), tl).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test]
async fn delete_follows_delete_options() {
    let t = T::new().await;
    let a = t.make_vm(RG, "vm-a", json!({"k": "a"}), true).await;
    let b = t.make_vm(RG, "vm-b", json!({"k": "b"}), false).await;
    let disk_a = a["properties"]["storageProfile"]["osDisk"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let disk_b = b["properties"]["storageProfile"]["osDisk"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        b["properties"]["storageProfile"]["osDisk"]["deleteOption"],
        "Detach"
    );
    assert_eq!(
        b["properties"]["networkProfile"]["networkInterfaces"][0]["properties"]["deleteOption"],
        "Detach"
    );

    // deleteOption Delete: the disk and the NIC go with the VM.
    let r = t
        .delete(&format!("{}?forceDeletion=true", vm_path(RG, "vm-a")))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.header("retry-after"), Some("0"));
    assert!(r.header("azure-asyncoperation").is_some());
    let loc = r.header("location").unwrap().to_owned();
    assert!(
        loc.starts_with(&t.arm.url()) && loc.contains("monitor=true"),
        "{loc}"
    );
    let mid = t.arm.resource(ArmKind::VirtualMachine, "vm-a").unwrap();
    assert_eq!(mid.provisioning_state, "Deleting");
    assert_eq!(t.poll_location(&loc).await, [202, 204]);
    assert!(t.arm.resource(ArmKind::VirtualMachine, "vm-a").is_none());
    assert!(t.arm.resource(ArmKind::Disk, &disk_a).is_none());
    assert!(
        t.arm
            .resource(ArmKind::NetworkInterface, "vm-a-nic")
            .is_none()
    );
    assert_eq!(
        t.get(&vm_path(RG, "vm-a")).await.status,
        StatusCode::NOT_FOUND
    );

    // Default (Detach): the disk and the NIC stay behind, unattached.
    let r = t.delete(&vm_path(RG, "vm-b")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let op = r.header("azure-asyncoperation").unwrap().to_owned();
    assert_eq!(t.poll_async(&op).await.0, ["InProgress", "Succeeded"]);
    assert!(t.arm.resource(ArmKind::VirtualMachine, "vm-b").is_none());
    let leaked = t
        .arm
        .resource(ArmKind::Disk, &disk_b)
        .expect("detached disk stays");
    assert_eq!(leaked.body["properties"]["diskState"], "Unattached");
    assert!(leaked.body.get("managedBy").is_none());
    let nic = t
        .arm
        .resource(ArmKind::NetworkInterface, "vm-b-nic")
        .expect("NIC stays");
    assert!(nic.body["properties"].get("virtualMachine").is_none());

    // A new VM may not claim the leaked disk's name by creating over it.
    let mut reuse = cvm_body("vm-c", &nic.id, json!({}));
    reuse["properties"]["storageProfile"]["osDisk"]["name"] = json!(disk_b);
    let r = t.put(&vm_path(RG, "vm-c"), reuse).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "ConflictingUserInput")
    );

    // Cleaning up the leak: disk then NIC, each via a Location-only 202.
    let r = t
        .raw(t.http.delete(format!(
            "{}{}?api-version=2024-03-02",
            t.arm.url(),
            leaked.id
        )))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.header("azure-asyncoperation").is_none());
    assert_eq!(
        t.poll_location(r.header("location").unwrap()).await,
        [202, 204]
    );
    let r = t.delete(&nic_path(RG, "vm-b-nic")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.header("azure-asyncoperation").is_none());
    let loc = r.header("location").unwrap().to_owned();
    assert!(loc.contains("/providers/Microsoft.Network/locations/westeurope/operationResults/"));
    assert_eq!(t.poll_location(&loc).await, [202, 204]);
    assert_eq!(
        t.poll_location(&loc).await,
        [204],
        "a finished operation stays finished"
    );
    assert!(t.arm.resources().is_empty(), "{:?}", t.arm.resources());
}

#[tokio::test]
async fn in_use_conflicts_and_idempotency() {
    let t = T::new().await;
    let pip = t
        .put(
            &format!("{RG}/providers/Microsoft.Network/publicIPAddresses/p"),
            json!({"location": "westeurope"}),
        )
        .await;
    assert_eq!(pip.status, StatusCode::CREATED);
    assert!(
        pip.body["properties"]["ipAddress"]
            .as_str()
            .unwrap()
            .starts_with("20.0.")
    );
    let mut nb = nic_body(json!({}));
    nb["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"] =
        json!({"id": pip.body["id"]});
    let nic = t.put(&nic_path(RG, "v-nic"), nb.clone()).await;
    assert_eq!(nic.status, StatusCode::CREATED);
    let mut missing_pip = nb.clone();
    missing_pip["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"]["id"] = json!(
        format!("{RG}/providers/Microsoft.Network/publicIPAddresses/nope")
    );
    let r = t.put(&nic_path(RG, "other"), missing_pip).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InvalidResourceReference")
    );

    let nic_id = nic.body["id"].as_str().unwrap().to_owned();
    let r = t
        .put(&vm_path(RG, "v"), cvm_body("v", &nic_id, json!({})))
        .await;
    let op = r.header("azure-asyncoperation").unwrap().to_owned();
    t.poll_async(&op).await;
    let vm = t.get(&vm_path(RG, "v")).await.body;
    let disk_id = vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = t.delete(&nic_path(RG, "v-nic")).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "NicInUse"));
    let r = t
        .delete(&format!(
            "{RG}/providers/Microsoft.Network/publicIPAddresses/p"
        ))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "PublicIPAddressInUse")
    );
    let r = t.delete(&disk_id).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "OperationNotAllowed")
    );
    let r = t
        .put(&vm_path(RG, "w"), cvm_body("w", &nic_id, json!({})))
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "NicInUse"));
    assert_eq!(t.arm.resources().len(), 4, "nothing was deleted or created");

    for missing in [
        vm_path(RG, "gone"),
        nic_path(RG, "gone"),
        format!("{RG}/providers/Microsoft.Network/publicIPAddresses/gone"),
        format!("{RG}/providers/Microsoft.Compute/disks/gone"),
    ] {
        let r = t.get(&missing).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "ResourceNotFound"),
            "{missing}"
        );
        assert_eq!(
            t.delete(&missing).await.status,
            StatusCode::NO_CONTENT,
            "{missing}"
        );
        assert_eq!(
            t.delete(&missing).await.status,
            StatusCode::NO_CONTENT,
            "{missing}"
        );
    }

    // Case does not matter in paths and ids.
    let r = t
        .get(
            &vm_path(RG, "V")
                .replace("resourceGroups", "RESOURCEGROUPS")
                .replace("Microsoft.Compute", "microsoft.compute"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["id"], vm["id"], "the stored casing is kept");

    // Create-only on an existing VM.
    let r = t
        .raw(
            t.http
                .put(t.url(&vm_path(RG, "v")))
                .header("if-none-match", "*")
                .json(&cvm_body("v", &nic_id, json!({}))),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PRECONDITION_FAILED, "PreconditionFailed")
    );

    // Update: 200 Updating; no second write while it runs.
    let r = t
        .put(
            &vm_path(RG, "v"),
            cvm_body("v", &nic_id, json!({"new": "tag"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.state(), "Updating");
    assert_eq!(r.body["properties"]["vmId"], vm["properties"]["vmId"]);
    let op = r.header("azure-asyncoperation").unwrap().to_owned();
    let r = t
        .put(&vm_path(RG, "v"), cvm_body("v", &nic_id, json!({})))
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "Conflict"));
    let r = t.delete(&vm_path(RG, "v")).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "Conflict"));
    assert_eq!(t.poll_async(&op).await.0, ["InProgress", "Succeeded"]);
    let now = t.get(&vm_path(RG, "v")).await;
    assert_eq!(now.state(), "Succeeded");
    assert_eq!(now.body["tags"], json!({"new": "tag"}));

    // customData cannot change after creation.
    let mut changed = cvm_body("v", &nic_id, json!({}));
    changed["properties"]["osProfile"]["customData"] = json!(b64("#!/bin/sh\necho other\n"));
    let r = t.put(&vm_path(RG, "v"), changed).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "PropertyChangeNotAllowed")
    );

    let r = t
        .get(&format!("{SUB}/providers/Microsoft.Compute/locations/westeurope/operations/00000000-0000-0000-0000-000000000000"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn lists_page_through_next_link() {
    let t = T::new().await;
    t.arm.set_page_size(2);
    for i in 0..5 {
        t.make_nic(RG, &format!("nic-{i}"), json!({})).await;
    }
    t.make_nic(OTHER_RG, "elsewhere", json!({})).await;
    let pages = t
        .pages(t.http.get(t.url(&format!(
            "{RG}/providers/Microsoft.Network/networkInterfaces"
        ))))
        .await;
    assert_eq!(pages.len(), 3);
    assert_eq!(
        pages
            .iter()
            .map(|p| p["value"].as_array().unwrap().len())
            .collect::<Vec<_>>(),
        [2, 2, 1]
    );
    assert!(pages[2].get("nextLink").is_none());
    assert_eq!(
        names(&pages),
        (0..5).map(|i| format!("nic-{i}")).collect::<BTreeSet<_>>()
    );

    // A resource deleted between pages does not shift the rest.
    let first = t
        .get(&format!(
            "{RG}/providers/Microsoft.Network/networkInterfaces"
        ))
        .await
        .body;
    let next = first["nextLink"].as_str().unwrap().to_owned();
    let r = t.delete(&nic_path(RG, "nic-0")).await;
    t.poll_location(r.header("location").unwrap()).await;
    let rest = t.pages(t.http.get(&next)).await;
    let mut seen = names(std::slice::from_ref(&first));
    seen.extend(names(&rest));
    assert_eq!(seen.len(), 5);

    // VMs: by resource group and across the subscription.
    t.make_vm(RG, "vm-1", json!({}), true).await;
    t.make_vm(RG, "vm-2", json!({}), true).await;
    t.make_vm(OTHER_RG, "vm-3", json!({}), true).await;
    let by_rg = t
        .pages(
            t.http
                .get(t.url(&format!("{RG}/providers/Microsoft.Compute/virtualMachines"))),
        )
        .await;
    assert_eq!(by_rg.len(), 1);
    assert_eq!(
        names(&by_rg),
        BTreeSet::from(["vm-1".into(), "vm-2".into()])
    );
    assert_eq!(
        by_rg[0]["value"][0]["properties"]["provisioningState"],
        "Succeeded"
    );
    let all = t
        .pages(t.http.get(t.url(&format!(
            "{SUB}/providers/Microsoft.Compute/virtualMachines"
        ))))
        .await;
    assert_eq!(all.len(), 2);
    assert_eq!(names(&all).len(), 3);
    let disks = t
        .pages(
            t.http
                .get(t.url(&format!("{RG}/providers/Microsoft.Compute/disks"))),
        )
        .await;
    assert_eq!(names(&disks).len(), 2);

    // Compute lists have no tag filter.
    let r = t
        .raw(
            t.http
                .get(t.url(&format!("{RG}/providers/Microsoft.Compute/virtualMachines")))
                .query(&[("$filter", "tagName eq 'a'")]),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InvalidParameter")
    );
}

#[tokio::test]
async fn resources_list_filters_by_tag() {
    let t = T::new().await;
    t.arm.set_page_size(2);
    let c1 = json!({"hangar-controller": "c1"});
    let vm = t.make_vm(RG, "vm-c1", c1.clone(), false).await;
    t.make_nic(RG, "nic-c2", json!({"hangar-controller": "c2"}))
        .await;
    t.make_nic(RG, "nic-untagged", json!({})).await;
    t.make_nic(OTHER_RG, "nic-other-rg", c1.clone()).await;
    let disk = vm["properties"]["storageProfile"]["osDisk"]["name"]
        .as_str()
        .unwrap();

    let list = |filter: &str| {
        t.http
            .get(t.url(&format!("{RG}/resources")))
            .query(&[("$filter", filter)])
    };
    let pages = t
        .pages(list("tagName eq 'hangar-controller' and tagValue eq 'c1'"))
        .await;
    assert_eq!(pages.len(), 2);
    let items: Vec<Value> = pages
        .iter()
        .flat_map(|p| p["value"].as_array().cloned().unwrap())
        .collect();
    assert_eq!(
        names(&pages),
        BTreeSet::from(["vm-c1".to_owned(), "vm-c1-nic".to_owned(), disk.to_owned()])
    );
    for item in &items {
        assert!(
            item.get("tags").is_none(),
            "tags are not returned when filtering by tag"
        );
        assert_eq!(item["location"], "westeurope");
        assert!(item["id"].as_str().unwrap().starts_with(RG));
    }
    let types: BTreeSet<&str> = items.iter().filter_map(|i| i["type"].as_str()).collect();
    assert_eq!(
        types,
        BTreeSet::from([
            "Microsoft.Compute/virtualMachines",
            "Microsoft.Compute/disks",
            "Microsoft.Network/networkInterfaces"
        ])
    );

    let named = t.pages(list("tagName eq 'HANGAR-CONTROLLER'")).await;
    assert_eq!(names(&named).len(), 4, "tag names match case-insensitively");
    let r = t
        .raw(list("resourceType eq 'Microsoft.Compute/virtualMachines'"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let everything = t.pages(t.http.get(t.url(&format!("{RG}/resources")))).await;
    assert_eq!(names(&everything).len(), 5);
}

#[tokio::test]
async fn injected_faults() {
    let t = T::new().await;

    t.arm.inject(
        Some(Method::PUT),
        "networkinterfaces/n1",
        1,
        ArmFault::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    let r = t.put(&nic_path(RG, "n1"), nic_body(json!({}))).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
    );
    assert_eq!(r.header("retry-after"), Some("7"));
    assert!(t.arm.resource(ArmKind::NetworkInterface, "n1").is_none());
    let r = t.put(&nic_path(RG, "n1"), nic_body(json!({}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "the fault fired once");
    let nic = r.body["id"].as_str().unwrap().to_owned();

    t.arm.inject(
        None,
        "/n1",
        2,
        ArmFault::Status {
            status: 503,
            code: "ServiceUnavailable".into(),
        },
    );
    for _ in 0..2 {
        let r = t.get(&nic_path(RG, "n1")).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
        );
    }
    assert_eq!(t.get(&nic_path(RG, "n1")).await.status, StatusCode::OK);

    t.arm
        .inject(Some(Method::DELETE), "n1", 1, ArmFault::Conflict);
    let r = t.delete(&nic_path(RG, "n1")).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "Conflict"));
    assert!(t.arm.resource(ArmKind::NetworkInterface, "n1").is_some());

    // Provisioning fails: the operation says why, the VM stays Failed, and
    // its disk is there to be cleaned up.
    t.arm.inject(
        None,
        "virtualMachines/broken",
        1,
        ArmFault::ProvisioningFailed {
            code: "OSProvisioningTimedOut".into(),
            message: "OS Provisioning did not finish in the allotted time.".into(),
        },
    );
    let r = t
        .put(&vm_path(RG, "broken"), cvm_body("broken", &nic, json!({})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.state(), "Creating");
    let (seen, last) = t
        .poll_async(r.header("azure-asyncoperation").unwrap())
        .await;
    assert_eq!(seen, ["InProgress", "Failed"]);
    assert_eq!(last["error"]["code"], "OSProvisioningTimedOut");
    let vm = t.get(&vm_path(RG, "broken")).await;
    assert_eq!(vm.state(), "Failed");
    let iv = t
        .get(&format!("{}/instanceView", vm_path(RG, "broken")))
        .await;
    assert_eq!(
        iv.body["statuses"][0]["code"],
        "ProvisioningState/failed/OSProvisioningTimedOut"
    );
    assert_eq!(
        t.arm
            .resources()
            .iter()
            .filter(|r| r.kind == ArmKind::Disk)
            .count(),
        1
    );
    let r = t
        .put(&vm_path(RG, "broken"), cvm_body("broken", &nic, json!({})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "a Failed VM can be PUT again");
    t.poll_async(r.header("azure-asyncoperation").unwrap())
        .await;
    assert_eq!(t.get(&vm_path(RG, "broken")).await.state(), "Succeeded");
    let r = t.delete(&vm_path(RG, "broken")).await;
    t.poll_location(r.header("location").unwrap()).await;

    // An operation that never finishes keeps the VM busy.
    let nic2 = t.make_nic(RG, "n2", json!({})).await;
    t.arm.inject(
        Some(Method::PUT),
        "virtualmachines/stuck",
        1,
        ArmFault::NeverFinish,
    );
    let r = t
        .put(&vm_path(RG, "stuck"), cvm_body("stuck", &nic2, json!({})))
        .await;
    let op = r.header("azure-asyncoperation").unwrap().to_owned();
    for _ in 0..20 {
        assert_eq!(t.follow(&op).await.body["status"], "InProgress");
    }
    assert_eq!(t.get(&vm_path(RG, "stuck")).await.state(), "Creating");
    assert_eq!(
        t.delete(&vm_path(RG, "stuck")).await.status,
        StatusCode::CONFLICT
    );

    t.arm.inject(
        Some(Method::GET),
        "/n2",
        1,
        ArmFault::Latency(Duration::from_millis(200)),
    );
    let started = Instant::now();
    assert_eq!(t.get(&nic_path(RG, "n2")).await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(200));

    t.arm.inject(None, "/n2", 5, ArmFault::Conflict);
    t.arm.clear_faults();
    assert_eq!(t.get(&nic_path(RG, "n2")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn require_token_answers_401() {
    let t = T::new().await;
    t.arm.require_token("t0ken");
    let r = t.get(&vm_path(RG, "v")).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "AuthenticationFailed")
    );
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );
    let r = t
        .raw(t.http.get(t.url(&vm_path(RG, "v"))).bearer_auth("wrong"))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "AuthenticationFailed")
    );
    let r = t
        .raw(t.http.get(t.url(&vm_path(RG, "v"))).bearer_auth("t0ken"))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "ResourceNotFound")
    );
    let seen: Vec<Option<String>> = t
        .arm
        .requests()
        .into_iter()
        .map(|r| r.authorization)
        .collect();
    assert_eq!(
        seen,
        [
            None,
            Some("Bearer wrong".into()),
            Some("Bearer t0ken".into())
        ]
    );
}

#[tokio::test]
async fn simulated_boot_walks_the_bootstrap_calls() {
    use axum::routing::{get, post};
    use hangar_core::provider::{BootstrapParams, ProxySettings};
    use hangar_core::userdata::{UserdataParams, render};
    use hangar_core::{InstanceName, Labels, OsType, Secret};

    // Stand-in for hangard's metadata and callback routes.
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let (c1, c2) = (calls.clone(), calls.clone());
    let app = axum::Router::new()
        .route(
            "/api/v1/metadata/jit-config",
            get(move |h: axum::http::HeaderMap| async move {
                let auth = h["authorization"].to_str().unwrap_or("").to_owned();
                c1.lock().unwrap().push(format!("jit {auth}"));
                "opaque-jit-config"
            }),
        )
        .route(
            "/api/v1/callbacks/status",
            post(move |axum::Json(v): axum::Json<Value>| async move {
                c2.lock()
                    .unwrap()
                    .push(format!("status {}", v["status"].as_str().unwrap_or("")));
                axum::http::StatusCode::OK
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hangard = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let bootstrap = BootstrapParams {
        repo_url: "https://github.com/octo/app".into(),
        metadata_url: format!("{hangard}/api/v1/metadata"),
        callback_url: format!("{hangard}/api/v1/callbacks/status"),
        instance_token: Secret::new("inst'tok"),
        jit_config_enabled: true,
        runner_group: None,
        tools: vec![],
        ca_cert_bundle: None,
        proxy: ProxySettings::default(),
    };
    let name = InstanceName::parse("hangar-boot").unwrap();
    let labels = Labels::parse_list("self-hosted,linux").unwrap();
    let script = render(&UserdataParams {
        name: &name,
        os_type: OsType::Linux,
        labels: &labels,
        bootstrap: &bootstrap,
        tool: None,
    })
    .unwrap();

    let t = T::new().await;
    t.arm.set_boot(ArmBoot::Simulate);
    let nic = t.make_nic(RG, "boot-nic", json!({})).await;
    let mut body = cvm_body("hangar-boot", &nic, json!({}));
    body["properties"]["osProfile"]["customData"] = json!(b64(&script));
    let r = t.put(&vm_path(RG, "hangar-boot"), body).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(
        calls.lock().unwrap().is_empty(),
        "no boot before the create succeeded"
    );
    t.poll_async(r.header("azure-asyncoperation").unwrap())
        .await;
    t.arm
        .wait_for("the VM to boot", Duration::from_secs(10), |a| {
            !a.booted().is_empty() || !a.boot_errors().is_empty()
        })
        .await;
    assert_eq!(t.arm.booted(), ["hangar-boot"], "{:?}", t.arm.boot_errors());
    assert_eq!(
        *calls.lock().unwrap(),
        ["status installing", "jit Bearer inst'tok", "status idle"]
    );

    // A script without Hangar's variables is a boot error, not a panic.
    let nic2 = t.make_nic(RG, "boot-nic-2", json!({})).await;
    let mut body = cvm_body("not-hangar", &nic2, json!({}));
    body["properties"]["osProfile"]["customData"] = json!(b64("#!/bin/sh\necho hi\n"));
    let r = t.put(&vm_path(RG, "not-hangar"), body).await;
    t.poll_async(r.header("azure-asyncoperation").unwrap())
        .await;
    t.arm
        .wait_for("a boot error", Duration::from_secs(5), |a| {
            !a.boot_errors().is_empty()
        })
        .await;
    let errors = t.arm.boot_errors();
    assert!(
        errors[0].starts_with("not-hangar: ") && errors[0].contains("HANGAR_METADATA_URL"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn odd_input_gets_cloud_errors_not_panics() {
    let t = T::new().await;
    let nic = t.make_nic(RG, "n", json!({})).await;
    let bodies = [
        json!([]),
        json!("string"),
        json!({"location": 7}),
        json!({"location": "westeurope", "properties": "x"}),
        json!({"location": "westeurope", "tags": ["a"], "properties": {}}),
        json!({"location": "westeurope", "tags": {"k": 1}}),
        json!({"location": "westeurope", "properties": {"ipConfigurations": "x"}}),
        json!({"location": "westeurope", "properties": {"ipConfigurations": [7]}}),
        json!({"location": "westeurope", "properties": {"ipConfigurations": [{"properties": {"subnet": {"id": SUBNET}, "publicIPAddress": {"id": 3}}}]}}),
        json!({"location": "westeurope", "properties": {"hardwareProfile": {"vmSize": "Standard_DC2as_v5"}, "storageProfile": [], "osProfile": 1, "networkProfile": {"networkInterfaces": [{"id": nic}]}}}),
        json!({"location": "westeurope", "properties": {"networkProfile": {"networkInterfaces": [{"id": 5}, null]}}}),
    ];
    let paths = [
        vm_path(RG, "odd"),
        nic_path(RG, "odd"),
        format!("{RG}/providers/Microsoft.Network/publicIPAddresses/odd"),
    ];
    for path in &paths {
        for b in &bodies {
            let r = t.put(path, b.clone()).await;
            assert!(
                r.status.is_client_error() || r.status.is_success(),
                "{path} {b}: {}",
                r.status
            );
            if r.status.is_client_error() {
                assert!(!r.code().is_empty(), "{path} {b}: {:?}", r.body);
            }
        }
    }
    for (method, path) in [
        (Method::GET, format!("{RG}/resources?$filter='")),
        (
            Method::GET,
            format!("{RG}/providers/Microsoft.Network/networkInterfaces?$skiptoken=zz"),
        ),
        (
            Method::GET,
            format!("{RG}/providers/Microsoft.Network/networkInterfaces?$skiptoken=%ff%fe"),
        ),
        (Method::PATCH, vm_path(RG, "odd")),
        (Method::POST, format!("{RG}/resources")),
        (Method::GET, "/".to_owned()),
        (
            Method::GET,
            format!("{RG}/providers/Microsoft.Compute/virtualMachines/a/b/c/d"),
        ),
        (
            Method::PUT,
            format!("{RG}/providers/Microsoft.Compute/virtualMachines/bad%20name"),
        ),
        (
            Method::PUT,
            format!("{RG}/providers/Microsoft.Compute/disks/d"),
        ),
    ] {
        let r = t.send(method.clone(), &path, Some(json!({}))).await;
        assert!(r.status.is_client_error(), "{method} {path}: {}", r.status);
        assert!(!r.code().is_empty(), "{method} {path}: {:?}", r.body);
    }
    // Still serving, state intact.
    assert_eq!(t.get(&nic_path(RG, "n")).await.status, StatusCode::OK);
}
