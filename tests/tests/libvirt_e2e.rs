//! The real `hangard` with the libvirt provider against a real libvirt
//! daemon and QEMU (TCG): a queued job gets a fresh VM that boots, fetches
//! its JIT config from Hangar and reports in; when the job completes the
//! domain and its volumes are gone. And a crash of hangard between defining
//! the domain and recording it as running leaves nothing behind.
//!
//! Needs `HANGAR_LIBVIRT_TESTS=1` and `HANGAR_GUEST_CACHE` (set by `cargo
//! xtask ci` after `.ci/libvirt/setup.sh` and `build-guest.sh`); otherwise
//! it prints a loud SKIPPED line and passes.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hangar_e2e::{Api, Daemon, free_port, wait_for, write_config};
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::{Value, json};

const SECRET: &str = "libvirt-e2e-secret";
const POOL: &str = "hangar-ci";

fn guest(test: &str) -> Option<(PathBuf, HashMap<String, String>)> {
    if std::env::var("HANGAR_LIBVIRT_TESTS").as_deref() != Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPED: {test}: needs HANGAR_LIBVIRT_TESTS=1 and HANGAR_GUEST_CACHE (cargo xtask ci sets them)\n"
        );
        return None;
    }
    let cache = PathBuf::from(std::env::var("HANGAR_GUEST_CACHE").expect("HANGAR_GUEST_CACHE"));
    let env = std::fs::read_to_string(cache.join("guest.env")).expect("guest.env");
    let vars = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Some((cache, vars))
}

fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .arg("-c")
        .arg("qemu:///system")
        .args(args)
        .output()
        .expect("virsh runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Domains and volumes whose name contains `needle`.
fn leftovers(needle: &str) -> Vec<String> {
    let mut out: Vec<String> = virsh(&["list", "--all", "--name"])
        .lines()
        .filter(|l| l.contains(needle))
        .map(|l| format!("domain {l}"))
        .collect();
    out.extend(
        virsh(&["vol-list", POOL])
            .lines()
            .filter(|l| l.contains(needle))
            .map(|l| format!("volume {}", l.split_whitespace().next().unwrap_or(""))),
    );
    out
}

/// Removes what an earlier run of the same test left (one killed before
/// its clean-up), so that this run counts only its own domains.
fn purge(prefix: &str) {
    for name in virsh(&["list", "--all", "--name"])
        .lines()
        .filter(|l| l.starts_with(prefix))
    {
        virsh(&["destroy", name]);
        virsh(&["undefine", name, "--nvram"]);
        virsh(&["undefine", name]);
    }
    for line in virsh(&["vol-list", POOL]).lines() {
        if let Some(vol) = line
            .split_whitespace()
            .next()
            .filter(|v| v.starts_with(prefix))
        {
            virsh(&["vol-delete", vol, "--pool", POOL]);
        }
    }
}

async fn setup(
    dir: &Path,
    cache: &Path,
    vars: &HashMap<String, String>,
    prefix: &str,
) -> (Daemon, Api, FakeGitHub, u16) {
    purge(prefix);
    let port = free_port();
    let providers = format!(
        r#"
[scheduler]
reconcile_interval_secs = 2

[[provider]]
name = "kvm"
kind = "libvirt"
[provider.libvirt]
uri = "qemu:///system"
storage_pool = "{POOL}"
network = "user"
domain_type = "qemu"
kernel_dirs = ["{cache}"]
console_log_dir = "{dir}"
[provider.libvirt.flavors.tiny]
vcpus = 1
memory_mib = 256
disk_gib = 1
"#,
        cache = cache.display(),
        dir = dir.display()
    );
    let config = write_config(dir, port, &providers);
    let daemon = Daemon::start(dir, port, &config).await.unwrap();
    let api = Api::init(&daemon.url).await.unwrap();
    // The guest reaches the host's loopback at 10.0.2.2 (QEMU user networking).
    let (s, v) = api
        .call(
            reqwest::Method::PUT,
            "/api/v1/controller",
            Some(json!({
                "metadata_url": format!("http://10.0.2.2:{port}/api/v1/metadata"),
                "callback_url": format!("http://10.0.2.2:{port}/api/v1/callbacks/status"),
            })),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let gh = FakeGitHub::start().await;
    gh.set_job_duration(Duration::from_millis(200));
    api.add_github(&gh.url()).await.unwrap();
    let repo = api.add_repo("octo", "vm", SECRET).await.unwrap();
    gh.set_webhook_target(format!("{}/webhooks/{repo}", daemon.url), SECRET);
    api.add_pool(
        &repo,
        json!({"provider_name": "kvm", "image": "hangar-ci-base.qcow2", "flavor": "tiny",
               "tags": ["self-hosted", "linux"], "max_runners": 1, "runner_prefix": prefix,
               "extra_specs": {"kernel": vars["KERNEL"], "initrd": vars["INITRD"], "cmdline": vars["CMDLINE"]}}),
    )
    .await
    .unwrap();
    (daemon, api, gh, port)
}

async fn instance(api: &Api, want: &str) -> Value {
    let api = api.clone();
    let want = want.to_owned();
    wait_for(
        Duration::from_secs(180),
        &format!("an instance with {want}"),
        move || {
            let api = api.clone();
            let want = want.clone();
            async move {
                let all = api.instances(false).await.map_err(|e| e.to_string())?;
                let states: Vec<String> = all
                    .iter()
                    .map(|i| format!("{}:{}/{}", i["name"], i["status"], i["runner_status"]))
                    .collect();
                all.into_iter()
                    .find(|i| i["runner_status"] == want.as_str())
                    .ok_or_else(|| format!("instances: {states:?}"))
            }
        },
    )
    .await
}

/// Plays GitHub's side once the VM's runner is up: the runner comes online,
/// takes the job, finishes it.
async fn run_job_on(gh: &FakeGitHub, name: &str, job: i64) {
    let runner = gh
        .runners()
        .into_iter()
        .find(|r| r.name == name)
        .expect("runner registered on GitHub");
    reqwest::Client::new()
        .post(format!("{}/_fake/runners/{}/online", gh.url(), runner.id))
        .send()
        .await
        .unwrap();
    gh.wait_for(Duration::from_secs(60), "the job to complete", |g| {
        g.job(job).is_some_and(|j| j.status == "completed")
    })
    .await;
}

async fn gone(api: &Api, name: &str) {
    let api2 = api.clone();
    let n = name.to_owned();
    wait_for(
        Duration::from_secs(120),
        "the instance to be deleted",
        move || {
            let api = api2.clone();
            let n = n.clone();
            async move {
                let all = api.instances(true).await.map_err(|e| e.to_string())?;
                let i = all
                    .iter()
                    .find(|i| i["name"] == n.as_str())
                    .ok_or("missing")?;
                if i["status"] == "deleted" {
                    Ok(())
                } else {
                    Err(format!("{}", i["status"]))
                }
            }
        },
    )
    .await;
    let n = name.to_owned();
    wait_for(
        Duration::from_secs(30),
        "libvirt to hold nothing of it",
        move || {
            let n = n.clone();
            async move {
                let left = leftovers(&n);
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{left:?}"))
                }
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_gets_a_vm_that_boots_reports_in_and_is_destroyed() {
    let Some((cache, vars)) = guest("a_job_gets_a_vm_that_boots_reports_in_and_is_destroyed")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (daemon, api, gh, _) = setup(dir.path(), &cache, &vars, "e2e-vm").await;
    let job = gh.queue_job("octo/vm", &["self-hosted", "linux"]).await;
    // The VM boots under TCG, fetches its JIT config with its token and
    // reports idle.
    let inst = instance(&api, "idle").await;
    let name = inst["name"].as_str().unwrap().to_owned();
    assert!(
        virsh(&["list", "--all", "--name"]).contains(&name),
        "domain exists"
    );
    let logs = daemon.logs();
    assert!(
        logs.contains(&format!("JIT config handed out instance.name={name}")),
        "{logs}"
    );
    run_job_on(&gh, &name, job).await;
    gone(&api, &name).await;
    assert!(gh.runners().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_define_and_running_leaves_nothing_behind() {
    let Some((cache, vars)) = guest("a_crash_between_define_and_running_leaves_nothing_behind")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, api, gh, port) = setup(dir.path(), &cache, &vars, "e2e-crash").await;
    let job = gh.queue_job("octo/vm", &["self-hosted", "linux"]).await;
    // Kill hangard the moment the domain exists (its create call is still
    // under way, or only just returned).
    let first_uuid = wait_for(
        Duration::from_secs(60),
        "a domain to be defined",
        || async {
            let names: Vec<String> = virsh(&["list", "--all", "--name"])
                .lines()
                .filter(|l| l.starts_with("e2e-crash-"))
                .map(str::to_owned)
                .collect();
            match names.first() {
                Some(n) => Ok(virsh(&["domuuid", n]).trim().to_owned()),
                None => Err("no domain yet".to_owned()),
            }
        },
    )
    .await;
    daemon.kill9();
    let config = daemon.config.clone();
    let daemon = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::login(&daemon.url).await.unwrap_or(api);
    // The domain made before the crash is never raced by a second one: if
    // it was running it is adopted and serves the job; if it was only
    // half made it is removed before the create is retried under the same
    // name. Either way one idle runner comes, and at most one domain per
    // instance exists meanwhile.
    let inst = instance(&api, "idle").await;
    let domains: Vec<String> = virsh(&["list", "--all", "--name"])
        .lines()
        .filter(|l| l.starts_with("e2e-crash-"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        domains.len(),
        1,
        "one domain, not a second create: {domains:?}"
    );
    let uuids: Vec<String> = virsh(&["list", "--all", "--uuid"])
        .lines()
        .map(|l| l.trim().to_owned())
        .collect();
    if uuids.contains(&first_uuid) {
        assert_eq!(
            inst["provider_id"].as_str(),
            Some(first_uuid.as_str()),
            "the pre-crash domain survives only as the adopted instance"
        );
    }
    let name = inst["name"].as_str().unwrap().to_owned();
    run_job_on(&gh, &name, job).await;
    gone(&api, &name).await;
    wait_for(
        Duration::from_secs(30),
        "no e2e-crash resources at all",
        || async {
            let left = leftovers("e2e-crash-");
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
}
