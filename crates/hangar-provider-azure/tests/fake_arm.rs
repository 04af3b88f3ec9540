//! The Azure provider against the loopback fake ARM: the conformance suite,
//! the exact request bodies of a confidential VM, clean-up of a create that
//! fails half-way, throttling, paging and half-made leftovers.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use base64::Engine as _;
use hangar_core::provider::InstanceRef;
use hangar_core::{ControllerId, PoolId, Provider, ProviderError};
use hangar_provider_azure::{AccessToken, AzureProvider, AzureProviderConfig, TokenCredential};
use hangar_testkit::conformance::{ConformanceCase, sample_request, sample_spec};
use hangar_testkit::fake_arm::{ArmFault, ArmKind, FakeArm};
use serde_json::{Value, json};

const TOKEN: &str = "fake-arm-token";
const CVM_IMAGE: &str = "Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest";
const SUBNET: &str = "/subscriptions/sub-1/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v/subnets/runners";

/// A credential that hands out a fixed token, as a test may inject one
/// (azure_identity refuses non-https login endpoints).
#[derive(Debug)]
struct FixedToken(&'static str);

#[async_trait::async_trait]
impl TokenCredential for FixedToken {
    async fn get_token(&self, _scopes: &[&str]) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            self.0,
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
    async fn clear_cache(&self) -> azure_core::Result<()> {
        Ok(())
    }
}

fn config(arm: &FakeArm, extra: &str) -> AzureProviderConfig {
    toml::from_str(&format!(
        r#"
subscription_id = "sub-1"
resource_group = "runners"
location = "westeurope"
subnet_id = "{SUBNET}"
arm_endpoint = "{}"
{extra}
[credential]
kind = "managed_identity"
"#,
        arm.url()
    ))
    .unwrap()
}

async fn setup(extra: &str) -> (FakeArm, AzureProvider) {
    let arm = FakeArm::start().await;
    arm.require_token(TOKEN);
    let p = AzureProvider::new(config(&arm, extra), Arc::new(FixedToken(TOKEN)), None)
        .unwrap()
        .with_fast_polling();
    (arm, p)
}

fn cvm_case() -> ConformanceCase {
    ConformanceCase {
        image: CVM_IMAGE.into(),
        flavor: "Standard_DC2as_v5".into(),
        extra_specs: json!({"confidential": true}).as_object().unwrap().clone(),
        invalid_image: Some("invalid".into()),
    }
}

fn puts_to(arm: &FakeArm, kind: &str) -> Vec<Value> {
    arm.requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.to_ascii_lowercase().contains(kind))
        .filter_map(|r| r.body)
        .collect()
}

fn iref(req: &hangar_core::provider::CreateInstanceRequest) -> InstanceRef {
    InstanceRef {
        name: req.name.clone(),
        provider_id: None,
        controller_id: req.controller_id,
        pool_id: req.pool_id,
    }
}

/// What must hold after every conformance property: nothing is left at
/// ARM, and every call carried the token and an api-version.
fn assert_left_nothing(arm: &FakeArm) {
    let left = arm.resources();
    assert!(left.is_empty(), "every resource is gone: {left:?}");
    for r in arm.requests() {
        assert_eq!(
            r.authorization.as_deref(),
            Some(&*format!("Bearer {TOKEN}"))
        );
        assert!(r.query.contains("api-version="), "{} {}", r.method, r.path);
    }
}

// The conformance suite with confidential VMs, each property leaving nothing.
hangar_testkit::conformance_tests! {
    mod conformance,
    setup: setup("").await,
    provider: |(_, p)| p,
    case: |_| cvm_case(),
    after: |(arm, _), _names| assert_left_nothing(arm),
}

#[tokio::test]
async fn confidential_vm_request_bodies() {
    let (arm, p) = setup("").await;
    let (c, pool) = (ControllerId::new_random(), PoolId::new_random());
    let mut case = cvm_case();
    case.extra_specs =
        json!({"confidential": true, "security_encryption_type": "DiskWithVMGuestState"})
            .as_object()
            .unwrap()
            .clone();
    let mut req = sample_request("hangar-cvm-1", c, pool, &case);
    req.userdata = "#!/bin/sh\n# Hangar runner bootstrap\necho boot\n".into();
    let inst = p.create_instance(&req).await.unwrap();
    assert_eq!(inst.name, "hangar-cvm-1");
    assert!(
        inst.provider_id.ends_with(
            "/resourceGroups/runners/providers/Microsoft.Compute/virtualMachines/hangar-cvm-1"
        ),
        "{}",
        inst.provider_id
    );
    assert!(
        !inst.addresses.is_empty(),
        "the NIC's private IP is reported"
    );

    let vm = puts_to(&arm, "/virtualmachines/");
    assert_eq!(vm.len(), 1, "one VM PUT");
    let vm = &vm[0];
    let props = &vm["properties"];
    assert_eq!(vm["location"], "westeurope");
    assert_eq!(props["hardwareProfile"]["vmSize"], "Standard_DC2as_v5");
    assert_eq!(
        props["securityProfile"],
        json!({"securityType": "ConfidentialVM",
               "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}})
    );
    let disk = &props["storageProfile"]["osDisk"];
    assert_eq!(
        disk["managedDisk"]["securityProfile"]["securityEncryptionType"],
        "DiskWithVMGuestState"
    );
    assert_eq!(
        disk["deleteOption"], "Delete",
        "the OS disk goes with the VM"
    );
    assert_eq!(disk["createOption"], "FromImage");
    assert_eq!(
        props["storageProfile"]["imageReference"],
        json!({"publisher": "Canonical", "offer": "0001-com-ubuntu-confidential-vm-jammy",
               "sku": "22_04-lts-cvm", "version": "latest"})
    );
    let custom = props["osProfile"]["customData"].as_str().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(custom)
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), req.userdata);
    assert_eq!(
        props["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"],
        true
    );
    let key = props["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["keyData"]
        .as_str()
        .unwrap();
    assert!(key.starts_with("ssh-ed25519 "), "{key}");
    assert_eq!(
        props["networkProfile"]["networkInterfaces"][0]["properties"]["deleteOption"],
        "Delete"
    );
    assert_eq!(vm["tags"]["hangar-controller-id"], c.to_string());
    assert_eq!(vm["tags"]["hangar-pool-id"], pool.to_string());
    assert_eq!(vm["tags"]["hangar-instance"], "hangar-cvm-1");

    let nic = puts_to(&arm, "/networkinterfaces/");
    assert_eq!(nic.len(), 1);
    assert_eq!(
        nic[0]["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"],
        SUBNET
    );
    assert_eq!(nic[0]["properties"]["enableAcceleratedNetworking"], false);
    assert!(
        nic[0]["properties"]["ipConfigurations"][0]["properties"]
            .get("publicIPAddress")
            .is_none(),
        "no public IP unless asked"
    );
    assert!(puts_to(&arm, "/publicipaddresses/").is_empty());

    // The long-running operations were followed to their end.
    assert!(
        arm.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.to_ascii_lowercase().contains("/operations/")),
        "the Azure-AsyncOperation URL was polled"
    );
    let vm_now = arm
        .resource(ArmKind::VirtualMachine, "hangar-cvm-1")
        .unwrap();
    assert_eq!(vm_now.provisioning_state, "Succeeded");

    p.delete_instance(&iref(&req)).await.unwrap();
    assert!(arm.resources().is_empty(), "{:?}", arm.resources());
}

#[tokio::test]
async fn a_create_that_fails_half_way_leaves_nothing() {
    let (arm, p) = setup("public_ip = true").await;
    arm.inject(
        Some(Method::PUT),
        "/virtualMachines/",
        1,
        ArmFault::ProvisioningFailed {
            code: "InternalExecutionError".into(),
            message: "the platform failed".into(),
        },
    );
    let req = sample_request(
        "hangar-half-1",
        ControllerId::new_random(),
        PoolId::new_random(),
        &cvm_case(),
    );
    let err = p.create_instance(&req).await.unwrap_err();
    assert!(err.is_retryable(), "a platform failure may pass: {err:?}");
    assert!(err.to_string().contains("InternalExecutionError"), "{err}");
    assert_eq!(
        puts_to(&arm, "/publicipaddresses/").len(),
        1,
        "the IP was made"
    );
    assert_eq!(
        puts_to(&arm, "/networkinterfaces/").len(),
        1,
        "the NIC was made"
    );
    let left = arm.resources();
    assert!(
        left.is_empty(),
        "VM, NIC, IP and disk are removed: {left:?}"
    );
}

#[tokio::test]
async fn throttling_is_retried_after_retry_after() {
    let (arm, p) = setup("").await;
    arm.inject(
        Some(Method::PUT),
        "/networkInterfaces/",
        2,
        ArmFault::TooManyRequests {
            retry_after_secs: 0,
        },
    );
    let req = sample_request(
        "hangar-429-1",
        ControllerId::new_random(),
        PoolId::new_random(),
        &cvm_case(),
    );
    p.create_instance(&req).await.unwrap();
    let nic_puts = arm
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("networkInterfaces"))
        .count();
    assert_eq!(nic_puts, 3, "two 429s, then success");
    p.delete_instance(&iref(&req)).await.unwrap();
    assert!(arm.resources().is_empty());
}

#[tokio::test]
async fn public_ip_when_asked_and_removed_with_the_rest() {
    let (arm, p) = setup("").await;
    let mut case = cvm_case();
    case.extra_specs.insert("public_ip".into(), json!(true));
    let req = sample_request(
        "hangar-pip-1",
        ControllerId::new_random(),
        PoolId::new_random(),
        &case,
    );
    let inst = p.create_instance(&req).await.unwrap();
    assert_eq!(
        inst.addresses.len(),
        2,
        "private and public: {:?}",
        inst.addresses
    );
    let nic = &puts_to(&arm, "/networkinterfaces/")[0];
    let pip_ref = nic["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"]["id"]
        .as_str()
        .unwrap();
    assert!(
        pip_ref.ends_with("/publicIPAddresses/hangar-pip-1-pip"),
        "{pip_ref}"
    );
    assert!(
        arm.resource(ArmKind::PublicIpAddress, "hangar-pip-1-pip")
            .is_some()
    );
    p.delete_instance(&iref(&req)).await.unwrap();
    assert!(arm.resources().is_empty(), "{:?}", arm.resources());
}

#[tokio::test]
async fn half_made_instances_are_listed_and_deletable() {
    let (arm, p) = setup("").await;
    let (c, pool) = (ControllerId::new_random(), PoolId::new_random());
    // The VM create fails and so does the NIC's clean-up: a NIC is left.
    arm.inject(
        Some(Method::PUT),
        "/virtualMachines/",
        1,
        ArmFault::Status {
            status: 400,
            code: "InvalidParameter".into(),
        },
    );
    arm.inject(
        Some(Method::DELETE),
        "/networkInterfaces/",
        100,
        ArmFault::Status {
            status: 500,
            code: "InternalServerError".into(),
        },
    );
    let req = sample_request("hangar-left-1", c, pool, &cvm_case());
    let err = p.create_instance(&req).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidSpec(_)), "{err:?}");
    assert!(
        arm.resource(ArmKind::NetworkInterface, "hangar-left-1-nic")
            .is_some()
    );

    let listed = p.list_instances(c, pool).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "hangar-left-1");
    assert_eq!(
        listed[0].status,
        hangar_core::provider::ProviderInstanceStatus::Error
    );
    assert!(
        listed[0]
            .fault
            .as_deref()
            .unwrap_or("")
            .contains("half-made")
    );
    let got = p.get_instance(&iref(&req)).await.unwrap();
    assert!(got.fault.is_some());
    assert!(
        p.list_instances(ControllerId::new_random(), pool)
            .await
            .unwrap()
            .is_empty(),
        "another controller's list never shows it"
    );

    arm.clear_faults();
    p.delete_instance(&iref(&req)).await.unwrap();
    assert!(arm.resources().is_empty(), "{:?}", arm.resources());
    assert!(matches!(
        p.get_instance(&iref(&req)).await,
        Err(ProviderError::NotFound(_))
    ));
}

#[tokio::test]
async fn lists_follow_next_link() {
    let (arm, p) = setup("").await;
    arm.set_page_size(2);
    let (c, pool) = (ControllerId::new_random(), PoolId::new_random());
    let mut reqs = Vec::new();
    for i in 0..5 {
        let r = sample_request(&format!("hangar-page-{i}"), c, pool, &cvm_case());
        p.create_instance(&r).await.unwrap();
        reqs.push(r);
    }
    let mut names: Vec<String> = p
        .list_instances(c, pool)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    names.sort();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(
        arm.requests()
            .iter()
            .any(|r| r.query.contains("skiptoken") || r.query.contains("skipToken")),
        "a nextLink was followed"
    );
    for r in &reqs {
        p.delete_instance(&iref(r)).await.unwrap();
    }
    assert!(arm.resources().is_empty());
}

#[tokio::test]
async fn pools_are_checked_before_they_are_stored() {
    let (_arm, p) = setup("").await;
    let mut spec = sample_spec(&cvm_case());
    p.validate_pool(&spec).await.unwrap();
    spec.flavor = "Standard_D2s_v5".into();
    let e = p.validate_pool(&spec).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidSpec(m) if m.contains("Standard_D2s_v5") && m.contains("confidential")),
        "{e:?}"
    );
    let mut spec = sample_spec(&cvm_case());
    spec.extra_specs.insert("confidental".into(), json!(true));
    let e = p.validate_pool(&spec).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidSpec(m) if m.contains("confidental")),
        "{e:?}"
    );
    let mut spec = sample_spec(&cvm_case());
    spec.os_type = hangar_core::OsType::Windows;
    let e = p.validate_pool(&spec).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidSpec(m)
            if m.contains("os_type windows") && m.contains("external")),
        "a Windows pool is refused at pool add, saying where it can go: {e:?}"
    );
}

#[tokio::test]
async fn a_wrong_token_is_a_fatal_error() {
    let arm = FakeArm::start().await;
    arm.require_token(TOKEN);
    let p = AzureProvider::new(config(&arm, ""), Arc::new(FixedToken("stale")), None)
        .unwrap()
        .with_fast_polling();
    let e = p.health().await.unwrap_err();
    assert!(matches!(e, ProviderError::Fatal(_)), "{e:?}");
}

#[tokio::test]
async fn an_operation_that_never_ends_times_out_and_is_cleaned_up() {
    let (arm, p) = setup("create_timeout_secs = 10").await;
    arm.inject(
        Some(Method::PUT),
        "/virtualMachines/",
        1,
        ArmFault::NeverFinish,
    );
    let req = sample_request(
        "hangar-slow-1",
        ControllerId::new_random(),
        PoolId::new_random(),
        &cvm_case(),
    );
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(60), p.create_instance(&req))
        .await
        .expect("the provider gives up by itself")
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(started.elapsed() >= Duration::from_secs(9));
    // The stuck VM could not be deleted while its create ran; whatever is
    // left carries the pool's tags for the sweep.
    for r in arm.resources() {
        assert_eq!(
            r.tags.get("hangar-instance").map(String::as_str),
            Some("hangar-slow-1")
        );
    }
}

#[tokio::test]
async fn a_garm_pools_extra_specs_make_the_same_vm() {
    let (arm, p) = setup("").await;
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGarmPoolKey operator";
    // A seed-style garm-provider-azure pool, verbatim.
    let case = ConformanceCase {
        image: "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest".into(),
        flavor: "Standard_D4s_v5".into(),
        extra_specs: json!({
            "allocate_public_ip": true,
            "disk_size_gb": 200,
            "storage_account_type": "Premium_LRS",
            "extra_tags": {"team": "ci", "cost-center": "42"},
            "ssh_public_keys": [key],
            "use_ephemeral_storage": true,
            "use_accelerated_networking": true
        })
        .as_object()
        .unwrap()
        .clone(),
        invalid_image: None,
    };
    p.validate_pool(&sample_spec(&case))
        .await
        .expect("garm's names are accepted at pool add");
    let req = sample_request(
        "hangar-garm-1",
        ControllerId::new_random(),
        PoolId::new_random(),
        &case,
    );
    p.create_instance(&req).await.unwrap();

    let vm = &puts_to(&arm, "/virtualmachines/")[0];
    let os_disk = &vm["properties"]["storageProfile"]["osDisk"];
    assert_eq!(os_disk["diskSizeGB"], 200);
    assert_eq!(os_disk["managedDisk"]["storageAccountType"], "Premium_LRS");
    assert_eq!(
        os_disk["diffDiskSettings"],
        json!({"option": "Local", "placement": "ResourceDisk"})
    );
    assert_eq!(os_disk["caching"], "ReadOnly");
    let keys = vm["properties"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"]
        .as_array()
        .unwrap();
    assert_eq!(keys.len(), 2, "the provider's key and the pool's: {keys:?}");
    assert_eq!(keys[1]["keyData"], key);
    assert_eq!(vm["tags"]["team"], "ci");
    assert_eq!(vm["tags"]["cost-center"], "42");

    let nic = &puts_to(&arm, "/networkinterfaces/")[0];
    assert_eq!(nic["properties"]["enableAcceleratedNetworking"], true);
    assert!(
        nic["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"]["id"]
            .as_str()
            .is_some(),
        "allocate_public_ip made a public IP"
    );
    assert_eq!(nic["tags"]["team"], "ci");

    // The same setting under both names is refused before anything is made.
    let mut both = case.clone();
    both.extra_specs.insert("os_disk_size_gb".into(), json!(64));
    let e = p.validate_pool(&sample_spec(&both)).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidSpec(m) if m.contains("disk_size_gb") && m.contains("keep one")),
        "{e:?}"
    );
}
