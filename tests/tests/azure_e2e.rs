//! The Azure provider inside the real `hangard`, against the loopback fake
//! ARM and FakeGitHub: the garm-on-Azure pool added with the `hangar` CLI, a
//! queued webhook, a confidential-VM request whose custom data bootstraps
//! the runner (the fake ARM "boots" it by following the script's own URLs
//! and token), the job runs, and `completed` removes every Azure resource.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use hangar_e2e::{ADMIN, Api, Daemon, PASSWORD, bin, free_port, wait_for, write_config};
use hangar_testkit::fake_arm::{ArmBoot, ArmKind, FakeArm, IDENTITY_PATH};
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::Value;

const SECRET: &str = "azure-e2e-webhook-secret";
const ARM_TOKEN: &str = "arm-token-from-managed-identity";
const IMAGE: &str = "Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest";

/// Runs the CLI with its profile in `cfg_dir` and nothing from the
/// environment.
fn hangar_output(cfg_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("hangar"))
        .env_remove("HANGAR_URL")
        .env_remove("HANGAR_TOKEN")
        .env_remove("HANGAR_PROFILE")
        .env("HANGAR_CLI_CONFIG_DIR", cfg_dir)
        .args(args)
        .output()
        .expect("run hangar")
}

/// Runs the CLI, expects success, returns stdout.
fn hangar(cfg_dir: &Path, args: &[&str]) -> String {
    let out = hangar_output(cfg_dir, args);
    assert!(
        out.status.success(),
        "hangar {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_gets_a_confidential_vm_and_completed_removes_everything() {
    let arm = FakeArm::start().await;
    arm.require_token(ARM_TOKEN);
    arm.set_polls(2);
    arm.set_boot(ArmBoot::Simulate);
    let gh = FakeGitHub::start().await;
    gh.set_job_duration(Duration::from_millis(300));

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        port,
        &format!(
            r#"
[scheduler]
reconcile_interval_secs = 2

[[provider]]
name = "azure-cvm"
kind = "azure"
[provider.azure]
subscription_id = "sub-e2e"
resource_group = "hangar-runners"
location = "westeurope"
subnet_id = "/subscriptions/sub-e2e/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/hangar/subnets/runners"
arm_endpoint = "{}"
[provider.azure.credential]
kind = "managed_identity"
client_id = "uami-client-id"
"#,
            arm.url()
        ),
    );
    let identity = format!("{}{IDENTITY_PATH}", arm.url());
    let daemon = Daemon::start_with_env(
        dir.path(),
        port,
        &config,
        &[
            ("IDENTITY_ENDPOINT", identity.as_str()),
            ("IDENTITY_HEADER", "e2e"),
        ],
    )
    .await
    .unwrap();

    let cli = dir.path().join("cli");
    hangar(
        &cli,
        &[
            "init",
            "--url",
            &daemon.url,
            "--username",
            ADMIN,
            "--password",
            PASSWORD,
        ],
    );
    let api = Api::login(&daemon.url).await.unwrap();
    api.add_github(&gh.url()).await.unwrap();
    let repo: Value = serde_json::from_str(&hangar(
        &cli,
        &[
            "repository",
            "add",
            "--credentials",
            "gh",
            "--owner",
            "octo",
            "--name",
            "app",
            "--webhook-secret",
            SECRET,
            "--output",
            "json",
        ],
    ))
    .unwrap();
    let repo_id = repo["id"].as_str().unwrap().to_owned();
    gh.set_webhook_target(format!("{}/webhooks/{repo_id}", daemon.url), SECRET);

    // A non-confidential size with confidential = true is refused, and says why.
    let bad = hangar_output(
        &cli,
        &[
            "pool",
            "add",
            "--repo",
            &repo_id,
            "--provider-name",
            "azure-cvm",
            "--flavor",
            "Standard_D2s_v5",
            "--image",
            IMAGE,
            "--tags",
            "self-hosted,azure-cvm",
            "--extra-specs",
            r#"{"confidential": true}"#,
            "--enabled",
            "true",
        ],
    );
    assert!(!bad.status.success());
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(
        msg.contains("Standard_D2s_v5") && msg.contains("confidential"),
        "{msg}"
    );

    // The garm-on-Azure pool, flags as garm-cli has them.
    let pool: Value = serde_json::from_str(&hangar(
        &cli,
        &[
            "pool",
            "add",
            "--repo",
            &repo_id,
            "--provider-name",
            "azure-cvm",
            "--flavor",
            "Standard_DC2as_v5",
            "--image",
            IMAGE,
            "--tags",
            "self-hosted,azure-cvm,ubuntu-2204",
            "--min-idle-runners",
            "0",
            "--max-runners",
            "4",
            "--extra-specs",
            r#"{"confidential": true}"#,
            "--enabled",
            "true",
            "--output",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(pool["provider_name"], "azure-cvm");
    assert_eq!(pool["extra_specs"]["confidential"], true);
    assert!(
        arm.resources().is_empty(),
        "scale to zero: nothing before a job"
    );

    let job = gh
        .queue_job("octo/app", &["self-hosted", "azure-cvm", "ubuntu-2204"])
        .await;
    assert_eq!(gh.deliveries()[0].status, 202);

    // The fake ARM receives a confidential VM whose custom data bootstraps
    // the runner: the simulated boot follows it to Hangar and FakeGitHub.
    gh.wait_for(Duration::from_secs(90), "the job to complete", |g| {
        g.job(job).is_some_and(|j| j.status == "completed")
    })
    .await;
    assert!(arm.boot_errors().is_empty(), "{:?}", arm.boot_errors());
    let ran_on = gh.job(job).unwrap().runner_name.unwrap();
    let vm_put = arm
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT" && r.path.ends_with(&format!("/virtualMachines/{ran_on}")))
        .expect("a VM PUT for the runner");
    assert_eq!(
        vm_put.authorization.as_deref(),
        Some(&*format!("Bearer {ARM_TOKEN}")),
        "the managed identity's token is used"
    );
    let body = vm_put.body.unwrap();
    let props = &body["properties"];
    assert_eq!(props["hardwareProfile"]["vmSize"], "Standard_DC2as_v5");
    assert_eq!(props["securityProfile"]["securityType"], "ConfidentialVM");
    assert_eq!(
        props["securityProfile"]["uefiSettings"]["vTpmEnabled"],
        true
    );
    assert_eq!(
        props["storageProfile"]["osDisk"]["managedDisk"]["securityProfile"]["securityEncryptionType"],
        "VMGuestStateOnly"
    );
    assert_eq!(props["storageProfile"]["osDisk"]["deleteOption"], "Delete");
    assert_eq!(body["tags"]["hangar-pool-id"], pool["id"]);
    let script = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(props["osProfile"]["customData"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(script.starts_with("#cloud-config\n"), "{script}");
    assert!(
        script.contains("#!/bin/sh"),
        "the boot script is in it: {script}"
    );
    assert!(
        script.contains(&format!(
            "HANGAR_METADATA_URL='{}/api/v1/metadata'",
            daemon.url
        )),
        "{script}"
    );
    assert!(script.contains("run.sh"), "the script runs the runner");

    // completed → runner removed on GitHub, then every Azure resource.
    let arm2 = arm.clone();
    wait_for(
        Duration::from_secs(60),
        "every Azure resource to be deleted",
        || {
            let arm = arm2.clone();
            async move {
                let left = arm.resources();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{:?}",
                        left.iter().map(|r| (&r.kind, &r.name)).collect::<Vec<_>>()
                    ))
                }
            }
        },
    )
    .await;
    assert!(
        arm.resource(ArmKind::Disk, &format!("{ran_on}-osdisk"))
            .is_none()
    );
    assert!(
        gh.runners().iter().all(|r| r.name != ran_on),
        "the runner is gone from GitHub"
    );
    let api2 = api.clone();
    wait_for(
        Duration::from_secs(30),
        "the instance to be deleted",
        || {
            let api = api2.clone();
            let name = ran_on.clone();
            async move {
                let all = api.instances(true).await.map_err(|e| e.to_string())?;
                match all.iter().find(|i| i["name"] == name.as_str()) {
                    Some(i) if i["status"] == "deleted" => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    let logs = daemon.logs();
    assert!(
        !logs.contains(ARM_TOKEN),
        "the ARM token never reaches the log"
    );
}
