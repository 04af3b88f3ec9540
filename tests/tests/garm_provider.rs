//! A garm user's external provider against the real `hangard` and `hangar`:
//! a config with no `interface_version` and a provider that only knows
//! interface v0.1.0 takes the seed's `hangar pool add` flags and serves a
//! queued job (its `CreateInstance` gets the bootstrap JSON); a Windows pool
//! on the same provider does too, with no boot script rendered by Hangar.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hangar_e2e::{Api, Daemon, bin, free_port, wait_for, write_config};
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::Value;

const SECRET: &str = "e2e-webhook-secret-garm-v010";
const IMAGE: &str = "Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest";

/// A provider that knows only garm's v0.1.0 commands: it answers anything
/// else (ValidatePoolInfo, GetVersion, …) as garm-provider-common does an
/// unknown `GARM_COMMAND`, keeps one file per instance with its pool, and
/// records every call and every CreateInstance's stdin.
fn v010_provider(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let exe = dir.join("garm-provider-v010");
    let cfg = dir.join("garm-provider-v010.toml");
    std::fs::write(&cfg, "# opaque to hangar\n").unwrap();
    let script = format!(
        r#"#!/bin/sh
D='{d}'
printf '%s\n' "$GARM_COMMAND" >> "$D/calls"
case "${{GARM_INTERFACE_VERSION:-v0.1.0}}" in
  v0.1.0) ;;
  *) echo "unsupported interface version: $GARM_INTERFACE_VERSION" >&2; exit 1 ;;
esac
mkdir -p "$D/inst"
case "$GARM_COMMAND" in
  CreateInstance)
    input=$(cat)
    name=$(printf '%s' "$input" | grep -o '"name": *"[^"]*"' | head -n1 | sed 's/.*"\([^"]*\)"$/\1/')
    [ -n "$name" ] || {{ echo "no name on stdin" >&2; exit 1; }}
    printf '%s' "$input" > "$D/create.$name.json"
    printf '%s' "$GARM_POOL_ID" > "$D/inst/$name.pool"
    printf '{{"provider_id":"%s","name":"%s","status":"running"}}' "$name" "$name" > "$D/inst/$name.json"
    cat "$D/inst/$name.json"
    ;;
  GetInstance)
    [ -e "$D/inst/$GARM_INSTANCE_ID.json" ] || {{ echo "$GARM_INSTANCE_ID not found" >&2; exit 30; }}
    cat "$D/inst/$GARM_INSTANCE_ID.json"
    ;;
  DeleteInstance)
    [ -e "$D/inst/$GARM_INSTANCE_ID.json" ] || exit 30
    rm -f "$D/inst/$GARM_INSTANCE_ID.json" "$D/inst/$GARM_INSTANCE_ID.pool"
    ;;
  ListInstances)
    sep=""
    printf '['
    for f in "$D"/inst/*.json; do
      [ -e "$f" ] || continue
      [ "$(cat "${{f%.json}}.pool")" = "$GARM_POOL_ID" ] || continue
      printf '%s' "$sep"; cat "$f"; sep=","
    done
    printf ']'
    ;;
  RemoveAllInstances|StartInstance|StopInstance) : ;;
  *)
    echo "2026/01/01 00:00:00 failed to validate execution environment: unknown GARM_COMMAND: $GARM_COMMAND" >&2
    exit 1
    ;;
esac
"#,
        d = dir.display()
    );
    std::fs::write(&exe, script).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    (exe, cfg)
}

/// `hangar` with the daemon's URL and token, as a script would run it.
fn hangar(api: &Api, cli_dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(bin("hangar"))
        .env_remove("HANGAR_PROFILE")
        .env("HANGAR_CLI_CONFIG_DIR", cli_dir)
        .env("HANGAR_URL", &api.url)
        .env("HANGAR_TOKEN", &api.token)
        .args(args)
        .args(["--output", "json"])
        .output()
        .expect("run hangar");
    assert!(
        out.status.success(),
        "hangar {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits for the provider's CreateInstance of a runner of `pool`, and
/// returns the bootstrap JSON it got.
async fn created_for(provider_dir: &Path, pool: &str) -> Value {
    let dir = provider_dir.to_path_buf();
    let pool = pool.to_owned();
    wait_for(
        Duration::from_secs(60),
        "the provider's CreateInstance",
        || {
            let dir = dir.clone();
            let pool = pool.clone();
            async move {
                for e in std::fs::read_dir(&dir)
                    .map_err(|e| e.to_string())?
                    .flatten()
                {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if !(n.starts_with("create.") && n.ends_with(".json")) {
                        continue;
                    }
                    let v: Value = serde_json::from_slice(
                        &std::fs::read(e.path()).map_err(|e| e.to_string())?,
                    )
                    .map_err(|e| e.to_string())?;
                    if v["pool_id"] == pool.as_str() {
                        return Ok(v);
                    }
                }
                Err(format!("calls so far: {:?}", calls(&dir)))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v010_provider_from_a_garm_config_takes_the_seed_pool_and_serves_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let provider_dir = dir.path().join("provider");
    std::fs::create_dir_all(&provider_dir).unwrap();
    let (exe, cfg) = v010_provider(&provider_dir);
    let port = free_port();
    // garm's provider table, key for key; no interface_version.
    let config = write_config(
        dir.path(),
        port,
        &format!(
            r#"
[scheduler]
reconcile_interval_secs = 2

[[provider]]
name = "garm_v010"
kind = "external"
[provider.external]
executable = "{}"
config_file = "{}"
"#,
            exe.display(),
            cfg.display()
        ),
    );
    let daemon = Daemon::start(dir.path(), port, &config).await.unwrap();
    let api = Api::init(&daemon.url).await.unwrap();
    let gh = FakeGitHub::start().await;
    api.add_github(&gh.url()).await.unwrap();
    let repo = api.add_repo("octo", "app", SECRET).await.unwrap();
    gh.set_webhook_target(format!("{}/webhooks/{repo}", daemon.url), SECRET);
    let cli = dir.path().join("cli");

    // The seed's flags, with the script provider's name.
    let pool = hangar(
        &api,
        &cli,
        &[
            "pool",
            "add",
            "--repo",
            &repo,
            "--provider-name",
            "garm_v010",
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
        ],
    );
    let pool_id = pool["id"].as_str().expect("pool id").to_owned();
    assert_eq!(pool["extra_specs"]["confidential"], true);
    assert!(
        !calls(&provider_dir).iter().any(|c| c == "ValidatePoolInfo"),
        "a v0.1.0 provider is never sent ValidatePoolInfo: {:?}",
        calls(&provider_dir)
    );

    // A queued job reaches the provider's CreateInstance.
    gh.queue_job("octo/app", &["self-hosted", "azure-cvm"])
        .await;
    assert_eq!(gh.deliveries()[0].status, 202, "queued delivery recorded");
    let boot = created_for(&provider_dir, &pool_id).await;
    assert_eq!(boot["image"], IMAGE);
    assert_eq!(boot["flavor"], "Standard_DC2as_v5");
    assert_eq!(boot["os_type"], "linux");
    assert_eq!(boot["extra_specs"]["confidential"], true);
    assert!(
        boot["instance-token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "the instance gets its token: {boot}"
    );
    assert!(
        boot["metadata-url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&daemon.url)),
        "{boot}"
    );
    let name = boot["name"].as_str().expect("name").to_owned();
    let api2 = api.clone();
    wait_for(Duration::from_secs(30), "the instance to run", || {
        let api = api2.clone();
        let name = name.clone();
        async move {
            let all = api.instances(false).await.map_err(|e| e.to_string())?;
            match all.iter().find(|i| i["name"] == name.as_str()) {
                Some(i) if i["status"] == "running" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;

    // A Windows pool on the same provider: accepted, and its create reaches
    // the provider, which renders the Windows boot script itself.
    let win = hangar(
        &api,
        &cli,
        &[
            "pool",
            "add",
            "--repo",
            &repo,
            "--provider-name",
            "garm_v010",
            "--flavor",
            "Standard_D2s_v5",
            "--image",
            "MicrosoftWindowsServer:WindowsServer:2022-datacenter-azure-edition:latest",
            "--tags",
            "self-hosted,windows,win-2022",
            "--os-type",
            "windows",
            "--max-runners",
            "1",
            "--enabled",
            "true",
        ],
    );
    let win_id = win["id"].as_str().expect("pool id").to_owned();
    gh.queue_job("octo/app", &["self-hosted", "win-2022"]).await;
    let boot = created_for(&provider_dir, &win_id).await;
    assert_eq!(boot["os_type"], "windows");
    assert!(
        boot["instance-token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{boot}"
    );
    assert!(
        !daemon.logs().contains("cannot render the boot script"),
        "{}",
        daemon.logs()
    );
}
