//! `ExternalProvider` driving the `hangar-fake-provider` binary: the
//! conformance suite on both interface versions, the v0.1.1 extras, and a
//! simulated boot that reaches a loopback metadata server.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_core::provider::{InstanceRef, ProviderInstanceStatus};
use hangar_core::{ControllerId, PoolId, Provider, ProviderError};
use hangar_provider_external::{ExternalProvider, ExternalProviderConfig, InterfaceVersion};
use hangar_testkit::conformance::{ConformanceCase, sample_request, sample_spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Fake {
    dir: tempfile::TempDir,
    provider: ExternalProvider,
}

fn fake(version: InterfaceVersion, boot: &str, delay_ms: u64) -> Fake {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let config_file = dir.path().join("fake.toml");
    std::fs::write(
        &config_file,
        format!(
            "state_dir = {:?}\nboot = {boot:?}\ncreate_delay_ms = {delay_ms}\n",
            state.display().to_string()
        ),
    )
    .expect("write config");
    let mut cfg = ExternalProviderConfig::new(support::fake_provider_binary(), config_file);
    cfg.interface_version = version;
    cfg.call_timeout_secs = 30;
    let provider =
        ExternalProvider::with_environment(cfg, support::test_env()).expect("valid config");
    Fake { dir, provider }
}

impl Fake {
    fn state(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join("state").join(rel)
    }
}

hangar_testkit::conformance_tests! {
    mod conformance_v011,
    setup: fake(InterfaceVersion::V011, "none", 0),
    provider: |f| &f.provider,
    case: |_| ConformanceCase::default(),
}

hangar_testkit::conformance_tests! {
    mod conformance_v010,
    setup: fake(InterfaceVersion::V010, "none", 0),
    provider: |f| &f.provider,
    // v0.1.0 has no ValidatePoolInfo, so nothing can be rejected.
    case: |_| ConformanceCase {
        invalid_image: None,
        ..ConformanceCase::default()
    },
}

#[tokio::test]
async fn v011_extras_and_calls_log() {
    let f = fake(InterfaceVersion::V011, "none", 0);
    let p = &f.provider;
    assert!(p.get_version().await.expect("version").starts_with('v'));
    assert_eq!(
        p.supported_interface_versions().await.expect("versions"),
        vec!["v0.1.0".to_owned(), "v0.1.1".to_owned()]
    );
    assert_eq!(
        p.config_json_schema().await.expect("schema")["required"],
        serde_json::json!(["state_dir"])
    );
    assert_eq!(
        p.extra_specs_json_schema().await.expect("schema")["type"],
        "object"
    );

    let case = ConformanceCase::default();
    let mut spec = sample_spec(&case);
    spec.extra_specs
        .insert("surprise".into(), serde_json::json!(1));
    let err = p
        .validate_pool(&spec)
        .await
        .expect_err("unknown extra spec");
    assert!(
        matches!(&err, ProviderError::InvalidSpec(m) if m.contains("surprise")),
        "{err:?}"
    );

    let (ctl, pool) = (ControllerId::new_random(), PoolId::new_random());
    let req = sample_request("hangar-extras-1", ctl, pool, &case);
    let made = p.create_instance(&req).await.expect("create");
    let r = InstanceRef {
        name: req.name.clone(),
        provider_id: Some(made.provider_id.clone()),
        controller_id: ctl,
        pool_id: pool,
    };
    p.stop_instance(&r).await.expect("stop");
    assert_eq!(
        p.get_instance(&r).await.expect("get").status,
        ProviderInstanceStatus::Stopped
    );
    p.start_instance(&r).await.expect("start");
    assert_eq!(
        p.get_instance(&r).await.expect("get").status,
        ProviderInstanceStatus::Running
    );
    // Creates are keyed by name: a second one says the instance exists, for
    // the scheduler to adopt it.
    let dup = p.create_instance(&req).await.expect_err("same name twice");
    assert!(matches!(dup, ProviderError::AlreadyExists(m) if m.contains("duplicate")));

    p.remove_all_instances(ctl).await.expect("remove all");
    assert!(matches!(
        p.get_instance(&r).await,
        Err(ProviderError::NotFound(_))
    ));

    let log = std::fs::read_to_string(f.state("calls.log")).expect("calls.log");
    let create = log
        .lines()
        .find(|l| l.starts_with("CreateInstance hangar-extras-1 "))
        .expect("create logged with the instance name");
    let micros: u128 = create
        .rsplit(' ')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("unix micros");
    assert!(
        micros > 1_600_000_000_000_000,
        "a plausible timestamp: {micros}"
    );
    assert!(log.lines().any(|l| l.starts_with("GetVersion - ")));
    assert!(log.lines().any(|l| l.starts_with("RemoveAllInstances - ")));
}

/// One HTTP request as the simulated runner made it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

/// A loopback HTTP/1.1 server standing in for Hangar's metadata and
/// callback routes: records each request, answers 200.
async fn metadata_server() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let mut lines = head.lines();
                let mut first = lines.next().unwrap_or("").split(' ');
                let method = first.next().unwrap_or("").to_owned();
                let path = first.next().unwrap_or("").to_owned();
                let mut authorization = None;
                let mut length = 0usize;
                for l in lines {
                    if let Some((k, v)) = l.split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "authorization" => authorization = Some(v.trim().to_owned()),
                            "content-length" => length = v.trim().parse().unwrap_or(0),
                            _ => {}
                        }
                    }
                }
                while buf.len() < head_end + length {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
                let reply = if path.ends_with("/jit-config") {
                    "not-a-fake-github-jit"
                } else {
                    "{}"
                };
                record.lock().expect("lock").push(Seen {
                    method,
                    path,
                    authorization,
                    body,
                });
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn simulated_boot_walks_the_bootstrap_calls() {
    let (base, seen) = metadata_server().await;
    let f = fake(InterfaceVersion::V011, "simulate", 50);
    let (ctl, pool) = (ControllerId::new_random(), PoolId::new_random());
    let mut req = sample_request("hangar-boots-1", ctl, pool, &ConformanceCase::default());
    req.bootstrap.metadata_url = format!("{base}/api/v1/metadata");
    req.bootstrap.callback_url = format!("{base}/api/v1/callbacks/status");
    req.bootstrap.instance_token = hangar_core::Secret::new("boot-token-123");

    let made = f.provider.create_instance(&req).await.expect("create");
    assert_eq!(made.status, ProviderInstanceStatus::Running);

    let done = support::wait_for(Duration::from_secs(15), || {
        seen.lock().expect("lock").len() >= 3
    })
    .await;
    let requests = seen.lock().expect("lock").clone();
    let boot_log = std::fs::read_to_string(f.state("boot/hangar-boots-1.log")).unwrap_or_default();
    assert!(done, "runner sim made {requests:?}; boot log: {boot_log}");
    let summary: Vec<(String, String)> = requests
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("POST".to_owned(), "/api/v1/callbacks/status".to_owned()),
            ("GET".to_owned(), "/api/v1/metadata/jit-config".to_owned()),
            ("POST".to_owned(), "/api/v1/callbacks/status".to_owned()),
        ]
    );
    assert!(
        requests
            .iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer boot-token-123")),
        "every call carries the instance token"
    );
    assert!(requests[0].body.contains("installing"));
    assert!(requests[2].body.contains("idle"));

    // The boot child removes the token-bearing file and exits.
    assert!(
        support::wait_for(Duration::from_secs(5), || {
            !f.state("boot/hangar-boots-1.json").exists()
                && std::fs::read_to_string(f.state("boot/hangar-boots-1.log"))
                    .is_ok_and(|l| l.contains("Idle"))
        })
        .await,
        "boot child finished"
    );
    assert!(f.state("instances/hangar-boots-1.json").is_file());
}
