//! `ExternalProvider` against `#!/bin/sh` providers: what garm's contract
//! promises a provider (variables, stdin, exit codes) and what Hangar adds
//! (timeouts, concurrency bound, clean environment, clear errors).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hangar_core::provider::{InstanceRef, ProviderInstanceStatus};
use hangar_core::{ControllerId, InstanceName, PoolId, Provider, ProviderError};
use hangar_provider_external::{ExternalProvider, GarmCommand, InterfaceVersion};
use hangar_testkit::conformance::{ConformanceCase, sample_request, sample_spec};
use support::{SHELL_VARS, Script, parse_env, process_gone, wait_for};

/// Records every call's environment and stdin, answers every command.
const RECORDER: &str = r#"
cmd="$GARM_COMMAND"
env > "$D/env.$cmd"
case "$cmd" in
  CreateInstance)
    cat > "$D/stdin.$cmd"
    printf '{"provider_id":"i-42","name":"%s","status":"running","os_name":"ubuntu","os_version":"22.04","addresses":[{"address":"10.1.2.3","type":"private"}]}' "$GARM_INSTANCE_ID"
    ;;
  ValidatePoolInfo) cat > "$D/stdin.$cmd" ;;
  GetInstance) printf '{"provider_id":"%s","name":"rec-get","status":"stopped"}' "$GARM_INSTANCE_ID" ;;
  ListInstances) printf '[{"provider_id":"i-1","name":"rec-a","status":"running"},{"provider_id":"i-2","name":"rec-b","status":"error","provider_fault":"boom"}]' ;;
  GetVersion) echo v9.8.7 ;;
  GetSupportedInterfaceVersions) echo '["v0.1.0","v0.1.1"]' ;;
  GetConfigJSONSchema) echo '{"type":"object","title":"cfg"}' ;;
  GetExtraSpecsJSONSchema) echo '{"type":"object","title":"specs"}' ;;
  DeleteInstance|StartInstance|StopInstance|RemoveAllInstances) : ;;
  *) echo "unknown command $cmd" >&2; exit 1 ;;
esac
"#;

fn iref(name: &str, provider_id: Option<&str>, ctl: ControllerId, pool: PoolId) -> InstanceRef {
    InstanceRef {
        name: InstanceName::parse(name).expect("valid name"),
        provider_id: provider_id.map(str::to_owned),
        controller_id: ctl,
        pool_id: pool,
    }
}

fn decode_specs(env: &BTreeMap<String, String>) -> serde_json::Value {
    let raw = env.get("GARM_POOL_EXTRASPECS").expect("extra specs set");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .expect("extra specs are base64");
    serde_json::from_slice(&bytes).expect("extra specs are JSON")
}

/// The seven `GARM_*` variables every call gets.
fn assert_garm_env(
    env: &BTreeMap<String, String>,
    s: &Script,
    command: &str,
    version: &str,
    controller: &str,
    pool: &str,
    instance: &str,
) {
    let want = [
        ("GARM_COMMAND", command),
        ("GARM_CONTROLLER_ID", controller),
        ("GARM_POOL_ID", pool),
        ("GARM_INSTANCE_ID", instance),
        ("GARM_INTERFACE_VERSION", version),
    ];
    for (k, v) in want {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{command}: {k}");
    }
    assert_eq!(
        env.get("GARM_PROVIDER_CONFIG_FILE").map(String::as_str),
        Some(s.config_file.to_str().expect("utf-8 path")),
        "{command}: GARM_PROVIDER_CONFIG_FILE"
    );
    assert!(
        env.contains_key("GARM_POOL_EXTRASPECS"),
        "{command}: GARM_POOL_EXTRASPECS"
    );
}

#[tokio::test]
async fn every_command_of_v011_gets_garms_variables_and_stdin() {
    let s = Script::new(RECORDER);
    let ctl = ControllerId::new_random();
    let provider = s.provider(InterfaceVersion::V011).with_controller_id(ctl);
    let v = "v0.1.1";
    let case = ConformanceCase {
        extra_specs: serde_json::json!({"confidential": true, "disk_gb": 64})
            .as_object()
            .cloned()
            .expect("object"),
        ..ConformanceCase::default()
    };
    let pool = PoolId::new_random();

    // CreateInstance: bootstrap JSON on stdin, instance JSON back.
    let req = sample_request("hangar-rec-1", ctl, pool, &case);
    let created = provider.create_instance(&req).await.expect("create");
    assert_eq!(created.provider_id, "i-42");
    assert_eq!(created.name, "hangar-rec-1");
    assert_eq!(created.status, ProviderInstanceStatus::Running);
    assert_eq!(created.addresses, vec!["10.1.2.3".to_owned()]);
    assert_eq!(created.os_version.as_deref(), Some("22.04"));
    assert_eq!(created.controller_id, Some(ctl));
    assert_eq!(created.pool_id, Some(pool));
    let env = s.recorded_env("CreateInstance");
    let (c, p) = (ctl.to_string(), pool.to_string());
    assert_garm_env(&env, &s, "CreateInstance", v, &c, &p, "hangar-rec-1");
    assert_eq!(
        decode_specs(&env),
        serde_json::json!({"confidential": true, "disk_gb": 64})
    );
    let stdin: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.path("stdin.CreateInstance")).expect("stdin recorded"),
    )
    .expect("stdin is JSON");
    assert_eq!(stdin["name"], "hangar-rec-1");
    assert_eq!(stdin["pool_id"], p);
    assert_eq!(stdin["image"], "ubuntu-22.04");
    assert_eq!(stdin["flavor"], "small");
    assert_eq!(stdin["os_type"], "linux");
    assert_eq!(stdin["arch"], "amd64");
    assert_eq!(stdin["repo_url"], "https://github.com/octo/app");
    assert_eq!(stdin["metadata-url"], "http://127.0.0.1:9/api/v1/metadata");
    assert_eq!(
        stdin["callback-url"],
        "http://127.0.0.1:9/api/v1/callbacks/status"
    );
    assert_eq!(stdin["instance-token"], "conformance-token");
    assert_eq!(stdin["jit_config_enabled"], true);
    assert_eq!(stdin["extra_specs"]["disk_gb"], 64);
    assert_eq!(
        stdin["labels"],
        serde_json::json!(["conformance", "linux", "self-hosted"])
    );

    // GetInstance by provider id; the pool's extra specs are remembered.
    let r = iref("hangar-rec-1", Some("i-42"), ctl, pool);
    let got = provider.get_instance(&r).await.expect("get");
    assert_eq!(got.status, ProviderInstanceStatus::Stopped);
    let env = s.recorded_env("GetInstance");
    assert_garm_env(&env, &s, "GetInstance", v, &c, &p, "i-42");
    assert_eq!(decode_specs(&env)["confidential"], true);

    // ListInstances for the pool.
    let listed = provider.list_instances(ctl, pool).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].status, ProviderInstanceStatus::Error);
    assert_eq!(listed[1].fault.as_deref(), Some("boom"));
    assert!(listed.iter().all(|i| i.pool_id == Some(pool)));
    let env = s.recorded_env("ListInstances");
    assert_garm_env(&env, &s, "ListInstances", v, &c, &p, "");

    // Delete, start, stop by name when there is no provider id.
    let by_name = iref("hangar-rec-1", None, ctl, pool);
    provider.delete_instance(&by_name).await.expect("delete");
    assert_garm_env(
        &s.recorded_env("DeleteInstance"),
        &s,
        "DeleteInstance",
        v,
        &c,
        &p,
        "hangar-rec-1",
    );
    provider.start_instance(&r).await.expect("start");
    assert_garm_env(
        &s.recorded_env("StartInstance"),
        &s,
        "StartInstance",
        v,
        &c,
        &p,
        "i-42",
    );
    provider.stop_instance(&r).await.expect("stop");
    assert_garm_env(
        &s.recorded_env("StopInstance"),
        &s,
        "StopInstance",
        v,
        &c,
        &p,
        "i-42",
    );

    let other = ControllerId::new_random();
    provider
        .remove_all_instances(other)
        .await
        .expect("remove all");
    assert_garm_env(
        &s.recorded_env("RemoveAllInstances"),
        &s,
        "RemoveAllInstances",
        v,
        &other.to_string(),
        "",
        "",
    );

    // The v0.1.1 additions.
    assert_eq!(provider.get_version().await.expect("version"), "v9.8.7");
    assert_garm_env(
        &s.recorded_env("GetVersion"),
        &s,
        "GetVersion",
        v,
        &c,
        "",
        "",
    );
    assert_eq!(
        provider
            .supported_interface_versions()
            .await
            .expect("versions"),
        vec!["v0.1.0".to_owned(), "v0.1.1".to_owned()]
    );
    assert_eq!(
        provider.config_json_schema().await.expect("schema")["title"],
        "cfg"
    );
    assert_eq!(
        provider.extra_specs_json_schema().await.expect("schema")["title"],
        "specs"
    );
    for cmd in [
        "GetSupportedInterfaceVersions",
        "GetConfigJSONSchema",
        "GetExtraSpecsJSONSchema",
    ] {
        assert_garm_env(&s.recorded_env(cmd), &s, cmd, v, &c, "", "");
    }
    provider.health().await.expect("health runs GetVersion");

    provider
        .validate_pool(&sample_spec(&case))
        .await
        .expect("validate");
    let env = s.recorded_env("ValidatePoolInfo");
    assert_garm_env(&env, &s, "ValidatePoolInfo", v, &c, "", "");
    assert_eq!(decode_specs(&env)["disk_gb"], 64);
    let stdin: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.path("stdin.ValidatePoolInfo")).expect("stdin recorded"),
    )
    .expect("stdin is JSON");
    assert_eq!(stdin["image"], "ubuntu-22.04");
    assert_eq!(stdin["flavor"], "small");
    assert_eq!(stdin["instance-token"], "", "no secret in pool validation");
}

#[tokio::test]
async fn v010_runs_its_seven_commands_and_refuses_the_rest() {
    let s = Script::new(RECORDER);
    let provider = s.provider(InterfaceVersion::V010);
    let (ctl, pool) = (ControllerId::new_random(), PoolId::new_random());
    let (c, p) = (ctl.to_string(), pool.to_string());
    let v = "v0.1.0";
    let case = ConformanceCase::default();

    let req = sample_request("hangar-old-1", ctl, pool, &case);
    provider.create_instance(&req).await.expect("create");
    assert_garm_env(
        &s.recorded_env("CreateInstance"),
        &s,
        "CreateInstance",
        v,
        &c,
        &p,
        "hangar-old-1",
    );
    let r = iref("hangar-old-1", Some("i-42"), ctl, pool);
    provider.get_instance(&r).await.expect("get");
    provider.list_instances(ctl, pool).await.expect("list");
    provider.delete_instance(&r).await.expect("delete");
    provider.start_instance(&r).await.expect("start");
    provider.stop_instance(&r).await.expect("stop");
    provider
        .remove_all_instances(ctl)
        .await
        .expect("remove all");
    for (cmd, inst) in [
        ("GetInstance", "i-42"),
        ("DeleteInstance", "i-42"),
        ("StartInstance", "i-42"),
        ("StopInstance", "i-42"),
    ] {
        assert_garm_env(&s.recorded_env(cmd), &s, cmd, v, &c, &p, inst);
    }
    assert_garm_env(
        &s.recorded_env("ListInstances"),
        &s,
        "ListInstances",
        v,
        &c,
        &p,
        "",
    );
    assert_garm_env(
        &s.recorded_env("RemoveAllInstances"),
        &s,
        "RemoveAllInstances",
        v,
        &c,
        "",
        "",
    );

    // v0.1.0 has no ValidatePoolInfo or GetVersion: accept, check the file.
    let mut bad = sample_spec(&case);
    bad.image = "invalid".into();
    provider.validate_pool(&bad).await.expect("v0.1.0 accepts");
    provider
        .health()
        .await
        .expect("health checks the executable");
    assert!(!s.path("env.ValidatePoolInfo").exists());
    assert!(!s.path("env.GetVersion").exists());

    let err = provider.get_version().await.expect_err("not in v0.1.0");
    assert!(
        matches!(&err, ProviderError::Fatal(m) if m.contains("GetVersion") && m.contains("v0.1.0")),
        "{err:?}"
    );
    assert!(provider.config_json_schema().await.is_err());
    assert!(provider.supported_interface_versions().await.is_err());
    assert!(provider.extra_specs_json_schema().await.is_err());
    assert!(!GarmCommand::GetConfigJSONSchema.in_v010());
}

#[tokio::test]
async fn exit_code_30_is_not_found_and_delete_is_idempotent() {
    let s = Script::new(
        r#"
echo "instance $GARM_INSTANCE_ID: no such instance" >&2
exit 30
"#,
    );
    let provider = s.provider(InterfaceVersion::V011);
    let r = iref(
        "hangar-gone",
        None,
        ControllerId::new_random(),
        PoolId::new_random(),
    );
    let err = provider.get_instance(&r).await.expect_err("get fails");
    match err {
        ProviderError::NotFound(m) => {
            assert!(m.contains("exited with code 30"), "{m}");
            assert!(m.contains("no such instance"), "stderr in the error: {m}");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    provider
        .delete_instance(&r)
        .await
        .expect("delete of a missing instance succeeds");
    assert!(matches!(
        provider.start_instance(&r).await,
        Err(ProviderError::NotFound(_))
    ));
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let s = Script::new(
        r#"
sleep 600 &
echo $! > "$D/child.pid"
echo "provider started, now hanging" >&2
sleep 600
"#,
    );
    let mut cfg = s.config(InterfaceVersion::V011);
    cfg.call_timeout_secs = 1;
    let provider =
        ExternalProvider::with_environment(cfg, support::test_env()).expect("valid config");
    let r = iref(
        "hangar-hang",
        None,
        ControllerId::new_random(),
        PoolId::new_random(),
    );

    let started = Instant::now();
    let err = provider.get_instance(&r).await.expect_err("times out");
    let took = started.elapsed();
    match &err {
        ProviderError::Transient(m) => {
            assert!(m.contains("timed out after 1s"), "{m}");
            assert!(m.contains("now hanging"), "stderr kept: {m}");
        }
        other => panic!("expected Transient, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(8),
        "killed promptly, took {took:?}"
    );

    let pid: i32 = std::fs::read_to_string(s.path("child.pid"))
        .expect("child pid recorded")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        wait_for(Duration::from_secs(5), || process_gone(pid)).await,
        "background child {pid} survived the timeout"
    );
}

/// The processes still running (not zombies) whose process group is
/// `pgid`, from `/proc`.
fn running_in_group(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    Some(fields.get(2)?.parse::<i32>().ok()? == pgid && fields[0] != "Z")
                })
                .unwrap_or(false)
        })
        .collect()
}

fn read_pid(s: &Script, file: &str) -> i32 {
    std::fs::read_to_string(s.path(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[tokio::test]
async fn timeout_kills_the_whole_tree_even_descendants_that_left_the_group() {
    let s = Script::new(
        r#"
export D
echo $$ > "$D/leader.pid"
sleep 600 &
echo $! > "$D/child.pid"
(trap '' TERM; sleep 600) &
echo $! > "$D/stubborn.pid"
# Leaves the process group (and the session), as daemonising tools do.
setsid sleep 600 &
echo $! > "$D/escaped.pid"
# A subtree of its own outside the group, with a grandchild.
setsid sh -c 'sleep 600 & echo $! > "$D/escaped-grandchild.pid"; sleep 600' &
echo $! > "$D/escaped-parent.pid"
while [ ! -s "$D/escaped-grandchild.pid" ]; do sleep 0.05; done
echo ready > "$D/ready"
sleep 600
"#,
    );
    let mut cfg = s.config(InterfaceVersion::V011);
    cfg.call_timeout_secs = 2;
    let provider =
        ExternalProvider::with_environment(cfg, support::test_env()).expect("valid config");
    let r = iref(
        "hangar-tree",
        None,
        ControllerId::new_random(),
        PoolId::new_random(),
    );
    let err = provider.get_instance(&r).await.expect_err("times out");
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
    assert!(
        s.path("ready").exists(),
        "the script started every child before the timeout"
    );

    let leader = read_pid(&s, "leader.pid");
    let pids: Vec<(&str, i32)> = [
        "child.pid",
        "stubborn.pid",
        "escaped.pid",
        "escaped-parent.pid",
        "escaped-grandchild.pid",
    ]
    .into_iter()
    .map(|f| (f, read_pid(&s, f)))
    .collect();
    // The call returns once the tree is dead; give SIGKILL's delivery a
    // little slack all the same.
    assert!(
        wait_for(Duration::from_secs(5), || running_in_group(leader)
            .is_empty())
        .await,
        "processes of the provider's group {leader} survived: {:?}",
        running_in_group(leader)
    );
    for (what, pid) in pids {
        assert!(
            wait_for(Duration::from_secs(5), || process_gone(pid)).await,
            "{what} {pid} survived the timeout"
        );
    }
}

#[tokio::test]
async fn children_that_ignore_sigterm_are_killed_too() {
    let s = Script::new(
        r#"
(trap '' TERM; sleep 600) &
echo $! > "$D/child.pid"
trap '' TERM
sleep 600
"#,
    );
    let mut cfg = s.config(InterfaceVersion::V011);
    cfg.call_timeout_secs = 1;
    let provider =
        ExternalProvider::with_environment(cfg, support::test_env()).expect("valid config");
    let r = iref(
        "hangar-stubborn",
        None,
        ControllerId::new_random(),
        PoolId::new_random(),
    );
    let started = Instant::now();
    let err = provider.stop_instance(&r).await.expect_err("times out");
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGKILL follows the grace period"
    );
    let pid: i32 = std::fs::read_to_string(s.path("child.pid"))
        .expect("child pid recorded")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        wait_for(Duration::from_secs(5), || process_gone(pid)).await,
        "child {pid} that ignores SIGTERM survived"
    );
}

#[tokio::test]
async fn an_abandoned_call_takes_its_process_group_down() {
    let s = Script::new(
        r#"
sleep 600 &
echo $! > "$D/child.pid"
sleep 600
"#,
    );
    let provider = s.provider(InterfaceVersion::V011);
    let r = iref(
        "hangar-dropped",
        None,
        ControllerId::new_random(),
        PoolId::new_random(),
    );
    // The caller gives up long before the provider's own timeout.
    let pid_file = s.path("child.pid");
    let res = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::select! {
            _ = provider.get_instance(&r) => {}
            _ = wait_for(Duration::from_secs(5), || {
                std::fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n'))
            }) => {}
        }
    })
    .await;
    assert!(res.is_ok(), "script started");
    let pid: i32 = std::fs::read_to_string(s.path("child.pid"))
        .expect("child pid recorded")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        wait_for(Duration::from_secs(5), || process_gone(pid)).await,
        "child {pid} outlived the dropped call"
    );
}

#[tokio::test]
async fn garbage_and_empty_output_are_clear_errors() {
    let s = Script::new(
        r#"
case "$GARM_COMMAND" in
  GetInstance) echo "this is not json" ;;
  CreateInstance) cat > /dev/null ;;
  ListInstances) echo '{"provider_id":"i-1"}' ;;
  GetVersion) : ;;
  GetConfigJSONSchema) echo '{"type":' ;;
  StartInstance) echo "cloud API returned 503" >&2; exit 1 ;;
  StopInstance) echo "Quota exceeded for instances" >&2; exit 1 ;;
esac
"#,
    );
    let provider = s.provider(InterfaceVersion::V011);
    let (ctl, pool) = (ControllerId::new_random(), PoolId::new_random());
    let r = iref("hangar-garbage", Some("i-1"), ctl, pool);

    let err = provider.get_instance(&r).await.expect_err("garbage");
    assert!(
        matches!(&err, ProviderError::Fatal(m) if m.contains("GetInstance") && m.contains("this is not json") && m.contains("not the expected JSON")),
        "{err:?}"
    );
    let req = sample_request("hangar-empty", ctl, pool, &ConformanceCase::default());
    let err = provider.create_instance(&req).await.expect_err("empty");
    assert!(
        matches!(&err, ProviderError::Fatal(m) if m.contains("CreateInstance") && m.contains("printed nothing")),
        "{err:?}"
    );
    let err = provider
        .list_instances(ctl, pool)
        .await
        .expect_err("object, not array");
    assert!(matches!(err, ProviderError::Fatal(_)), "{err:?}");
    let err = provider.get_version().await.expect_err("empty version");
    assert!(matches!(err, ProviderError::Fatal(_)), "{err:?}");
    let err = provider
        .config_json_schema()
        .await
        .expect_err("truncated JSON");
    assert!(matches!(err, ProviderError::Fatal(_)), "{err:?}");

    let err = provider.start_instance(&r).await.expect_err("exit 1");
    assert!(
        matches!(&err, ProviderError::Transient(m) if m.contains("exited with code 1") && m.contains("cloud API returned 503")),
        "{err:?}"
    );
    let err = provider.stop_instance(&r).await.expect_err("quota");
    assert!(matches!(err, ProviderError::Quota(_)), "{err:?}");
}

#[tokio::test]
async fn create_failures_never_echo_the_instance_token() {
    let s = Script::new(
        r#"
input=$(cat)
token=$(printf '%s' "$input" | sed -n 's/.*"instance-token":"\([^"]*\)".*/\1/p')
echo "bad request: $input" >&2
echo "rejected token=$token" >&2
printf '{"provider_id":"","name":"x","status":"error","provider_fault":"token %s refused"}' "$token"
exit 1
"#,
    );
    let provider = s.provider(InterfaceVersion::V011);
    let req = sample_request(
        "hangar-leaky",
        ControllerId::new_random(),
        PoolId::new_random(),
        &ConformanceCase::default(),
    );
    let err = provider.create_instance(&req).await.expect_err("fails");
    let text = err.to_string();
    assert!(text.contains("rejected token=***"), "{text}");
    assert!(text.contains("provider_fault: token *** refused"), "{text}");
    assert!(!text.contains("conformance-token"), "token leaked: {text}");
}

#[tokio::test]
async fn a_burst_never_exceeds_max_concurrency() {
    let s = Script::new(
        r#"
i=1
while [ "$i" -le 64 ]; do
  if mkdir "$D/slot.$i" 2>/dev/null; then break; fi
  i=$((i + 1))
done
touch "$D/reached.$i"
# Hold the slot until three calls run at once (or 5 s pass), so a loaded
# machine that starts processes slowly still shows the peak.
n=0
while [ "$n" -lt 100 ]; do
  held=0
  for s in "$D"/slot.*; do [ -d "$s" ] && held=$((held + 1)); done
  [ "$held" -ge 3 ] && break
  sleep 0.05
  n=$((n + 1))
done
sleep 0.1
rmdir "$D/slot.$i"
printf '{"provider_id":"%s","name":"burst","status":"running"}' "$GARM_INSTANCE_ID"
"#,
    );
    let mut cfg = s.config(InterfaceVersion::V011);
    cfg.max_concurrency = 3;
    let provider = Arc::new(
        ExternalProvider::with_environment(cfg, support::test_env()).expect("valid config"),
    );
    assert_eq!(provider.max_concurrency(), 3);
    let (ctl, pool) = (ControllerId::new_random(), PoolId::new_random());

    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..12 {
        let p = Arc::clone(&provider);
        calls.spawn(async move {
            p.get_instance(&iref("hangar-burst", Some(&format!("i-{n}")), ctl, pool))
                .await
        });
    }
    let mut ok = 0;
    while let Some(res) = calls.join_next().await {
        res.expect("task").expect("call succeeds");
        ok += 1;
    }
    assert_eq!(ok, 12);
    let reached: Vec<u32> = std::fs::read_dir(s.dir.path())
        .expect("read dir")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("reached.")?
                .parse()
                .ok()
        })
        .collect();
    let peak = reached.iter().copied().max().expect("scripts ran");
    assert_eq!(peak, 3, "3 at once, never more (slots used: {reached:?})");
    // 12 calls of at least 0.1 s, 3 at a time: at least four rounds.
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn only_allow_listed_prefixes_reach_the_provider() {
    let s = Script::new(
        r#"
env > "$D/env.$GARM_COMMAND"
echo v1
"#,
    );
    let mut cfg = s.config(InterfaceVersion::V011);
    cfg.environment_variables = vec!["AWS".into(), "HOME".into(), "GARM".into()];
    let parent = [
        ("PATH", "/usr/bin:/bin"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
        ("HOME", "/var/lib/hangar"),
        ("HOMEBREW_PREFIX", "/opt/brew"),
        ("HANGAR_PASSPHRASE", "do-not-pass"),
        ("GITHUB_TOKEN", "ghp_nope"),
        ("https_proxy", "http://proxy:3128"),
        ("NO_PROXY", "localhost"),
        ("GARM_COMMAND", "spoofed"),
        ("GARMIN", "not ours either"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let provider = ExternalProvider::with_environment(cfg, parent).expect("valid config");
    provider.get_version().await.expect("runs");

    let env = s.recorded_env("GetVersion");
    let seen: Vec<&str> = env
        .keys()
        .map(String::as_str)
        .filter(|k| !k.starts_with("GARM_") && !SHELL_VARS.contains(k))
        .collect();
    assert_eq!(
        seen,
        vec![
            "AWS_REGION",
            "AWS_SECRET_ACCESS_KEY",
            "HOME",
            "HOMEBREW_PREFIX",
            "NO_PROXY",
            "PATH",
            "https_proxy"
        ]
    );
    assert_eq!(
        env["GARM_COMMAND"], "GetVersion",
        "hangard's GARM_* never leaks"
    );
    assert_eq!(env["PATH"], "/usr/bin:/bin");
}

#[tokio::test]
async fn the_real_environment_is_cleared() {
    let s = Script::new(
        r#"
env > "$D/env.$GARM_COMMAND"
echo v1
"#,
    );
    let provider = ExternalProvider::new(s.config(InterfaceVersion::V011)).expect("valid config");
    provider.get_version().await.expect("runs");
    let env = parse_env(&std::fs::read_to_string(s.path("env.GetVersion")).expect("recorded"));
    let proxies = [
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ];
    let leaked: Vec<&String> = env
        .keys()
        .filter(|k| {
            !k.starts_with("GARM_")
                && k.as_str() != "PATH"
                && !proxies.contains(&k.as_str())
                && !SHELL_VARS.contains(&k.as_str())
        })
        .collect();
    assert!(leaked.is_empty(), "not allow-listed but passed: {leaked:?}");
    let ours: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    assert!(
        ours.iter().any(|k| k.starts_with("CARGO") || k == "HOME"),
        "the test process has variables that were withheld"
    );
    if let Ok(path) = std::env::var("PATH") {
        assert_eq!(env.get("PATH"), Some(&path), "PATH is kept");
    }
}

#[tokio::test]
async fn bad_configs_fail_at_startup() {
    let s = Script::new("exit 0");
    let mut cfg = s.config(InterfaceVersion::V011);
    cfg.executable = "provider.sh".into();
    assert!(ExternalProvider::new(cfg).is_err(), "relative path");

    let mut cfg = s.config(InterfaceVersion::V011);
    cfg.executable = s.config_file.clone();
    let err = ExternalProvider::new(cfg).expect_err("not executable");
    assert!(err.to_string().contains("not an executable"), "{err}");

    let mut cfg = s.config(InterfaceVersion::V011);
    cfg.config_file = s.path("missing.toml");
    let err = ExternalProvider::new(cfg).expect_err("missing config");
    assert!(err.to_string().contains("missing.toml"), "{err}");

    let mut cfg = s.config(InterfaceVersion::V011);
    cfg.max_concurrency = 0;
    assert!(ExternalProvider::new(cfg).is_err());
    let mut cfg = s.config(InterfaceVersion::V011);
    cfg.call_timeout_secs = 0;
    assert!(ExternalProvider::new(cfg).is_err());

    let mut cfg = s.config(InterfaceVersion::V011);
    cfg.call_timeout_secs = 300;
    cfg.jit_enabled = false;
    let p = ExternalProvider::new(cfg).expect("valid");
    assert!(p.create_timeout() >= Duration::from_secs(300));
    assert!(!p.jit_enabled());
    assert_eq!(p.kind(), "external");
}

#[tokio::test]
async fn health_fails_when_get_version_fails() {
    let s = Script::new(r#"echo "cannot reach LXD socket" >&2; exit 1"#);
    let provider = s.provider(InterfaceVersion::V011);
    let err = provider.health().await.expect_err("unhealthy");
    assert!(err.to_string().contains("cannot reach LXD socket"), "{err}");
}

/// A stateful provider in plain `sh`: one file set per instance, exit 30
/// for anything unknown, filtered by the controller and pool it is called
/// with. Its JSON carries neither, as garm's own providers print it.
const STATEFUL: &str = r#"
mkdir -p "$D/inst"
case "$GARM_COMMAND" in
  CreateInstance)
    input=$(cat)
    name=$(printf '%s' "$input" | sed -n 's/.*"name":"\([^"]*\)".*/\1/p')
    [ -n "$name" ] || { echo "no name on stdin" >&2; exit 1; }
    [ -e "$D/inst/$name.json" ] && { echo "duplicate $name" >&2; exit 31; }
    printf '%s' "$GARM_POOL_ID" > "$D/inst/$name.pool"
    printf '%s' "$GARM_CONTROLLER_ID" > "$D/inst/$name.ctl"
    printf '{"provider_id":"sp-%s","name":"%s","status":"running","os_type":"linux"}' "$name" "$name" > "$D/inst/$name.json"
    cat "$D/inst/$name.json"
    ;;
  GetInstance)
    name=${GARM_INSTANCE_ID#sp-}
    [ -e "$D/inst/$name.json" ] || { echo "$GARM_INSTANCE_ID not found" >&2; exit 30; }
    cat "$D/inst/$name.json"
    ;;
  DeleteInstance)
    name=${GARM_INSTANCE_ID#sp-}
    [ -e "$D/inst/$name.json" ] || exit 30
    rm -f "$D/inst/$name.json" "$D/inst/$name.pool" "$D/inst/$name.ctl"
    ;;
  ListInstances)
    sep=""
    printf '['
    for f in "$D"/inst/*.json; do
      [ -e "$f" ] || continue
      base=${f%.json}
      [ "$(cat "$base.pool")" = "$GARM_POOL_ID" ] || continue
      [ "$(cat "$base.ctl")" = "$GARM_CONTROLLER_ID" ] || continue
      printf '%s' "$sep"; cat "$f"; sep=","
    done
    printf ']'
    ;;
  ValidatePoolInfo)
    if cat | grep -q '"image":"invalid"'; then echo "image invalid does not exist" >&2; exit 1; fi
    ;;
  GetVersion) echo v0.0.1-script ;;
  *) echo "unsupported $GARM_COMMAND" >&2; exit 1 ;;
esac
"#;

// The conformance suite against a stateful script.
hangar_testkit::conformance_tests! {
    mod conformance_stateful_script,
    setup: {
        let s = Script::new(STATEFUL);
        let provider = s.provider(InterfaceVersion::V011);
        (s, provider)
    },
    provider: |(_, p)| p,
    case: |_| ConformanceCase::default(),
}

/// A call that waited for the provider's own concurrency limit while its
/// caller lost the right to act (a replica frozen past its pool's lease)
/// is not started: the provider asks the call's guard right before it
/// spawns, after the wait.
#[tokio::test]
async fn a_call_whose_guard_refuses_after_its_wait_starts_no_process() {
    let s = Script::new(
        r#"
touch "$D/ran.$GARM_INSTANCE_ID"
[ "$GARM_INSTANCE_ID" = "guard-first" ] && sleep 0.5
printf '{"provider_id":"%s","name":"guard","status":"running"}' "$GARM_INSTANCE_ID"
"#,
    );
    let mut cfg = s.config(InterfaceVersion::V011);
    cfg.max_concurrency = 1;
    let provider = Arc::new(
        ExternalProvider::with_environment(cfg, support::test_env()).expect("valid config"),
    );
    let (ctl, pool) = (ControllerId::new_random(), PoolId::new_random());
    let case = ConformanceCase::default();

    // The first call holds the provider's only slot for half a second.
    let first = {
        let provider = provider.clone();
        let req = sample_request("guard-first", ctl, pool, &case);
        tokio::spawn(async move { provider.create_instance(&req).await })
    };
    assert!(
        wait_for(Duration::from_secs(10), || s
            .path("ran.guard-first")
            .exists())
        .await,
        "the first call started"
    );

    // The second waits for it under a guard that still allows when it
    // starts waiting and refuses before the slot is free.
    let lease = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let guard: hangar_core::provider::ActGuard = {
        let lease = lease.clone();
        Arc::new(move || {
            if lease.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                Err("pool lease 3 taken by another replica".into())
            }
        })
    };
    assert_eq!(hangar_core::provider::may_act(), Ok(()));
    let second = {
        let provider = provider.clone();
        let req = sample_request("guard-second", ctl, pool, &case);
        tokio::spawn(hangar_core::provider::act_guarded(
            guard.clone(),
            async move { provider.create_instance(&req).await },
        ))
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    lease.store(false, std::sync::atomic::Ordering::SeqCst);

    let made = first.await.expect("first call").expect("first create");
    assert_eq!(made.provider_id, "guard-first");
    let refused = second.await.expect("second call");
    match refused {
        Err(ProviderError::Transient(msg)) => assert!(
            msg.contains("pool lease 3 taken by another replica"),
            "the refusal names why: {msg}"
        ),
        other => panic!("a refused call must fail as transient, got {other:?}"),
    }
    assert!(
        !s.path("ran.guard-second").exists(),
        "the provider process of a refused call was started"
    );

    // The same call under a guard that allows is made as usual.
    lease.store(true, std::sync::atomic::Ordering::SeqCst);
    let req = sample_request("guard-second", ctl, pool, &case);
    let again = hangar_core::provider::act_guarded(guard, provider.create_instance(&req))
        .await
        .expect("allowed create");
    assert_eq!(again.provider_id, "guard-second");
    assert!(s.path("ran.guard-second").exists());
}
