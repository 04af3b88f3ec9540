//! The provider against a real libvirt daemon with QEMU (TCG): a VM boots
//! the test guest from `.ci/libvirt/build-guest.sh`, runs Hangar's real boot
//! script from the NoCloud seed, fetches its JIT config from a local HTTP
//! server with its token, reports `installing` and `idle`, runs the fake
//! runner and powers off; delete then leaves no domain and no volume.
//!
//! Needs `HANGAR_LIBVIRT_TESTS=1` and `HANGAR_GUEST_CACHE` (what
//! `cargo xtask ci` sets after `.ci/libvirt/setup.sh` and `build-guest.sh`);
//! otherwise each test prints `SKIPPED` and passes. Optional:
//! `HANGAR_CI_POOL` (default `hangar-ci`), `HANGAR_CI_BASE` (default
//! `hangar-ci-base.qcow2`).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use hangar_core::provider::{
    BootstrapParams, CreateInstanceRequest, InstanceRef, ProviderInstanceStatus, ProxySettings,
};
use hangar_core::userdata::{UserdataParams, render};
use hangar_core::{
    ControllerId, InstanceName, Labels, OsArch, OsType, PoolId, Provider, ProviderError, Secret,
};
use hangar_provider_libvirt::{
    DomainType, Flavor, LibvirtProvider, LibvirtProviderConfig, NetworkSpec,
};

const URI: &str = "qemu:///system";
const JIT_CONFIG: &str = "eyJmYWtlIjoiaml0LWNvbmZpZyJ9";

struct Env {
    cache: PathBuf,
    pool: String,
    base: String,
    guest: HashMap<String, String>,
}

/// The test environment, or `None` after a loud SKIPPED line.
fn env(test: &str) -> Option<Env> {
    if std::env::var("HANGAR_LIBVIRT_TESTS").as_deref() != Ok("1") {
        // Straight to stderr: libtest would swallow eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPED: {test}: set HANGAR_LIBVIRT_TESTS=1 and HANGAR_GUEST_CACHE \
             (run .ci/libvirt/setup.sh and .ci/libvirt/build-guest.sh <dir>, or `cargo xtask ci`)\n"
        );
        return None;
    }
    let cache = PathBuf::from(
        std::env::var("HANGAR_GUEST_CACHE")
            .expect("HANGAR_LIBVIRT_TESTS=1 needs HANGAR_GUEST_CACHE (build-guest.sh's dir)"),
    );
    let text = std::fs::read_to_string(cache.join("guest.env"))
        .unwrap_or_else(|e| panic!("{}/guest.env: {e}", cache.display()));
    let guest = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Some(Env {
        cache,
        pool: std::env::var("HANGAR_CI_POOL").unwrap_or_else(|_| "hangar-ci".into()),
        base: std::env::var("HANGAR_CI_BASE").unwrap_or_else(|_| "hangar-ci-base.qcow2".into()),
        guest,
    })
}

fn provider(env: &Env, console_dir: &Path) -> LibvirtProvider {
    LibvirtProvider::new(LibvirtProviderConfig {
        uri: URI.into(),
        storage_pool: env.pool.clone(),
        network: NetworkSpec::User,
        domain_type: DomainType::Qemu,
        kernel_dirs: vec![env.cache.clone()],
        console_log_dir: Some(console_dir.to_owned()),
        flavors: [(
            "tiny".to_owned(),
            Flavor {
                vcpus: 1,
                memory_mib: 256,
                disk_gib: 1,
            },
        )]
        .into(),
        ..Default::default()
    })
    .expect("valid config")
}

/// What the guest did, as the metadata/callback server saw it.
#[derive(Debug, Default)]
struct Seen {
    jit_fetches: usize,
    bad_auth: usize,
    statuses: Vec<String>,
}

#[derive(Clone)]
struct Server {
    token: String,
    seen: Arc<Mutex<Seen>>,
}

impl Server {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let ok = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {}", self.token));
        if !ok {
            self.seen.lock().unwrap().bad_auth += 1;
        }
        ok
    }
}

async fn jit_config(State(s): State<Server>, headers: HeaderMap) -> (StatusCode, String) {
    if !s.authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    s.seen.lock().unwrap().jit_fetches += 1;
    (StatusCode::OK, JIT_CONFIG.to_owned())
}

async fn status(
    State(s): State<Server>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> StatusCode {
    if !s.authorized(&headers) {
        return StatusCode::UNAUTHORIZED;
    }
    let st = body["status"].as_str().unwrap_or("?").to_owned();
    s.seen.lock().unwrap().statuses.push(st);
    StatusCode::OK
}

/// Removes the instance with virsh if the test fails half-way, so a red
/// run still leaves no VM or volume behind.
struct Leftovers {
    name: String,
    pool: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let virsh = |args: &[&str]| {
            let _ = std::process::Command::new("virsh")
                .args(["-q", "-c", URI])
                .args(args)
                .output();
        };
        virsh(&["destroy", &self.name]);
        virsh(&["undefine", &self.name, "--nvram"]);
        for suffix in [".qcow2", "-seed.iso", "-data.qcow2"] {
            virsh(&[
                "vol-delete",
                "--pool",
                &self.pool,
                &format!("{}{suffix}", self.name),
            ]);
        }
    }
}

fn virsh(args: &[&str]) -> String {
    let out = std::process::Command::new("virsh")
        .args(["-q", "-c", URI])
        .args(args)
        .output()
        .expect("virsh runs");
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after
/// `limit` with `what` and `context()`.
async fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn request(
    env: &Env,
    name: &InstanceName,
    userdata: String,
    bootstrap: BootstrapParams,
    kernel: &str,
) -> CreateInstanceRequest {
    let mut extra_specs = serde_json::Map::new();
    extra_specs.insert("kernel".into(), kernel.into());
    extra_specs.insert("initrd".into(), env.guest["INITRD"].clone().into());
    extra_specs.insert("cmdline".into(), env.guest["CMDLINE"].clone().into());
    CreateInstanceRequest {
        name: name.clone(),
        controller_id: ControllerId::new_random(),
        pool_id: PoolId::new_random(),
        image: env.base.clone(),
        flavor: "tiny".into(),
        os_type: OsType::Linux,
        os_arch: OsArch::Amd64,
        labels: Labels::parse_list("self-hosted,linux,libvirt-ci").unwrap(),
        extra_specs,
        userdata,
        bootstrap,
        watcher: None,
    }
}

fn bootstrap(port: u16, token: &str) -> BootstrapParams {
    // QEMU user-mode networking maps 10.0.2.2 to the host's loopback.
    BootstrapParams {
        repo_url: "https://github.com/octo/app".into(),
        metadata_url: format!("http://10.0.2.2:{port}/api/v1/metadata"),
        callback_url: format!("http://10.0.2.2:{port}/api/v1/callbacks/status"),
        instance_token: Secret::new(token),
        jit_config_enabled: true,
        runner_group: None,
        tools: vec![],
        ca_cert_bundle: None,
        proxy: ProxySettings::default(),
    }
}

fn assert_nothing_left(env: &Env, name: &str) {
    let domains = virsh(&["list", "--all", "--name"]);
    assert!(
        !domains.lines().any(|l| l.trim() == name),
        "domain {name} still defined:\n{domains}"
    );
    let vols = virsh(&["vol-list", &env.pool]);
    assert!(
        !vols.contains(name),
        "volumes of {name} left in {}:\n{vols}",
        env.pool
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_boots_fetches_its_jit_config_reports_and_is_deleted_without_trace() {
    let Some(env) = env("real-libvirt boot test") else {
        return;
    };
    let t0 = Instant::now();
    let console_dir = tempfile::tempdir().unwrap();
    let provider = provider(&env, console_dir.path());
    provider.health().await.expect("libvirt reachable");

    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let server = Server {
        token: token.clone(),
        seen: Arc::default(),
    };
    let app = Router::new()
        .route("/api/v1/metadata/jit-config", get(jit_config))
        .route("/api/v1/callbacks/status", post(status))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let http = tokio::spawn(async move { axum::serve(listener, app).await });

    let name = InstanceName::parse(&format!(
        "hangar-ci-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
    .unwrap();
    let _leftovers = Leftovers {
        name: name.to_string(),
        pool: env.pool.clone(),
    };
    let labels = Labels::parse_list("self-hosted,linux,libvirt-ci").unwrap();
    let boot = bootstrap(port, &token);
    let userdata = render(&UserdataParams {
        name: &name,
        os_type: OsType::Linux,
        labels: &labels,
        bootstrap: &boot,
        tool: None,
    })
    .unwrap();
    let req = request(&env, &name, userdata, boot, &env.guest["KERNEL"]);

    let inst = provider.create_instance(&req).await.expect("create");
    let created = t0.elapsed();
    assert_eq!(inst.status, ProviderInstanceStatus::Running);
    let iref = InstanceRef {
        name: name.clone(),
        provider_id: Some(inst.provider_id.clone()),
        controller_id: req.controller_id,
        pool_id: req.pool_id,
    };
    let listed = provider
        .list_instances(req.controller_id, req.pool_id)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, name.as_str());
    let vols = virsh(&["vol-list", &env.pool]);
    for v in [format!("{name}.qcow2"), format!("{name}-seed.iso")] {
        assert!(vols.contains(&v), "{v} missing:\n{vols}");
    }
    let backing = virsh(&["vol-dumpxml", "--pool", &env.pool, &format!("{name}.qcow2")]);
    assert!(
        backing.contains("<backingStore>") && backing.contains(&env.base),
        "the root disk is an overlay on the base:\n{backing}"
    );

    let console = console_dir.path().join(format!("{name}.log"));
    let console_text = || std::fs::read_to_string(&console).unwrap_or_default();
    let context = || {
        format!(
            "seen: {:?}\nconsole:\n{}",
            server.seen.lock().unwrap(),
            console_text()
        )
    };

    // The guest fetches its JIT config and reports, then the fake runner
    // runs (it sleeps 60 s, standing in for a job) and the guest powers off
    // (on_poweroff=destroy: shut off). The power-off wait therefore starts
    // about 60 s before the guest can be off: its bound must cover the
    // runner's sleep plus the terminated callback and power-off on a slow,
    // emulated CPU.
    wait_for(
        Duration::from_secs(120),
        "the idle callback",
        async || {
            let seen = server.seen.lock().unwrap();
            seen.statuses.iter().any(|s| s == "idle").then_some(())
        },
        context,
    )
    .await;
    let reported = t0.elapsed();
    wait_for(
        Duration::from_secs(180),
        "the guest to power off",
        async || match provider.get_instance(&iref).await {
            Ok(i) if i.status == ProviderInstanceStatus::Stopped => Some(()),
            Ok(_) => None,
            Err(e) => panic!("get_instance: {e}"),
        },
        context,
    )
    .await;
    let stopped = t0.elapsed();

    {
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen.jit_fetches, 1, "{seen:?}");
        assert_eq!(seen.bad_auth, 0, "every request carried the instance token");
        assert_eq!(
            seen.statuses,
            ["installing", "idle", "terminated"],
            "{seen:?}"
        );
    }
    let log = console_text();
    assert!(
        log.contains(&format!("fake-runner: jitconfig={JIT_CONFIG}")),
        "the runner ran with the JIT config:\n{log}"
    );
    assert!(log.contains("hangar: powering off"), "{log}");

    provider.delete_instance(&iref).await.expect("delete");
    assert_nothing_left(&env, name.as_str());
    assert!(matches!(
        provider.get_instance(&iref).await,
        Err(ProviderError::NotFound(_))
    ));
    provider
        .delete_instance(&iref)
        .await
        .expect("deleting again succeeds");
    http.abort();
    eprintln!(
        "real-libvirt timings: created {created:?}, idle callback {reported:?}, powered off {stopped:?}, deleted {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_that_cannot_start_leaves_nothing_behind() {
    let Some(env) = env("real-libvirt failed-start test") else {
        return;
    };
    let console_dir = tempfile::tempdir().unwrap();
    let provider = provider(&env, console_dir.path());
    let name = InstanceName::parse(&format!(
        "hangar-ci-bad-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
    .unwrap();
    let _leftovers = Leftovers {
        name: name.to_string(),
        pool: env.pool.clone(),
    };
    // Allowed directory, missing file: define and volumes succeed, start
    // fails, so the whole half-made instance must be torn down.
    let missing = env.cache.join("no-such-vmlinuz");
    let req = request(
        &env,
        &name,
        "#!/bin/sh\npoweroff -f\n".into(),
        bootstrap(9, "unused"),
        missing.to_str().unwrap(),
    );
    let err = provider.create_instance(&req).await.unwrap_err();
    assert!(err.to_string().contains("start domain"), "{err}");
    assert_nothing_left(&env, name.as_str());
}
