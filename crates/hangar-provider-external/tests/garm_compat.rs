//! garm's semantics where Hangar used to differ: a config without
//! `interface_version` is v0.1.0 and is sent only garm's seven commands; a
//! v0.1.1 provider that answers "unknown command" to `ValidatePoolInfo` or
//! `GetVersion` does not implement them (it does not refuse the pool); exit
//! 30 on delete is gone; and the provider renders its own boot script, so a
//! Windows pool reaches it with the bootstrap JSON alone.

mod support;

use hangar_core::provider::InstanceRef;
use hangar_core::{ControllerId, InstanceName, OsType, PoolId, Provider, ProviderError};
use hangar_provider_external::{ExternalProvider, ExternalProviderConfig, InterfaceVersion};
use hangar_testkit::conformance::{ConformanceCase, sample_request, sample_spec};
use support::{Script, test_env};

/// What garm-provider-common makes of a command its interface version does
/// not know: its environment check fails and the provider exits 1 through
/// `log.Fatal`, with the command's name on stderr.
const UNKNOWN: &str = r#"unknown() {
  echo "2026/01/01 00:00:00 failed to validate execution environment: unknown GARM_COMMAND: $GARM_COMMAND" >&2
  exit 1
}"#;

/// A provider that only knows interface v0.1.0: refuses any other
/// interface version as an old garm-provider-common build does, keeps one
/// file per instance, exits 30 for an instance it does not have, and
/// answers everything beyond the seven v0.1.0 commands as unknown.
fn v010_only() -> String {
    format!(
        r#"{UNKNOWN}
printf '%s\n' "$GARM_COMMAND" >> "$D/calls"
env > "$D/env.$GARM_COMMAND"
case "${{GARM_INTERFACE_VERSION:-v0.1.0}}" in
  v0.1.0) ;;
  *) echo "unsupported interface version: $GARM_INTERFACE_VERSION" >&2; exit 1 ;;
esac
mkdir -p "$D/inst"
case "$GARM_COMMAND" in
  CreateInstance)
    cat > "$D/stdin.CreateInstance"
    name=$(grep -o '"name": *"[^"]*"' "$D/stdin.CreateInstance" | head -n1 | sed 's/.*"\([^"]*\)"$/\1/')
    [ -n "$name" ] || {{ echo "no name on stdin" >&2; exit 1; }}
    printf '{{"provider_id":"old-%s","name":"%s","status":"running"}}' "$name" "$name" > "$D/inst/old-$name"
    cat "$D/inst/old-$name"
    ;;
  GetInstance)
    [ -e "$D/inst/$GARM_INSTANCE_ID" ] || {{ echo "instance $GARM_INSTANCE_ID not found" >&2; exit 30; }}
    cat "$D/inst/$GARM_INSTANCE_ID"
    ;;
  DeleteInstance)
    [ -e "$D/inst/$GARM_INSTANCE_ID" ] || {{ echo "instance $GARM_INSTANCE_ID not found" >&2; exit 30; }}
    rm -f "$D/inst/$GARM_INSTANCE_ID"
    ;;
  ListInstances) echo '[]' ;;
  RemoveAllInstances|StartInstance|StopInstance) : ;;
  *) unknown ;;
esac
"#
    )
}

fn calls(s: &Script) -> Vec<String> {
    std::fs::read_to_string(s.path("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn iref(name: &str, provider_id: &str, ctl: ControllerId, pool: PoolId) -> InstanceRef {
    InstanceRef {
        name: InstanceName::parse(name).expect("valid name"),
        provider_id: Some(provider_id.to_owned()),
        controller_id: ctl,
        pool_id: pool,
    }
}

/// The provider as hangard builds it from a garm-style table: no
/// `interface_version`.
fn from_garm_style_toml(s: &Script) -> ExternalProvider {
    let cfg: ExternalProviderConfig = toml::from_str(&format!(
        "executable = {:?}\nconfig_file = {:?}\n",
        s.executable.display().to_string(),
        s.config_file.display().to_string()
    ))
    .expect("a garm-style table parses");
    assert_eq!(cfg.interface_version, InterfaceVersion::V010);
    ExternalProvider::with_environment(cfg, test_env()).expect("valid config")
}

#[tokio::test]
async fn a_v010_only_provider_without_interface_version_serves_a_pool() {
    let s = Script::new(&v010_only());
    let provider = from_garm_style_toml(&s);
    let case = ConformanceCase {
        extra_specs: serde_json::json!({"confidential": true})
            .as_object()
            .cloned()
            .expect("object"),
        ..ConformanceCase::default()
    };

    // pool add: nothing is sent that garm would not send.
    provider
        .validate_pool(&sample_spec(&case))
        .await
        .expect("the pool is accepted");
    provider.health().await.expect("healthy");
    assert!(
        calls(&s).is_empty(),
        "no command sent for pool add or health: {:?}",
        calls(&s)
    );

    let (ctl, pool) = (ControllerId::new_random(), PoolId::new_random());
    let created = provider
        .create_instance(&sample_request("hangar-old-7", ctl, pool, &case))
        .await
        .expect("create");
    assert_eq!(created.provider_id, "old-hangar-old-7");
    assert_eq!(
        s.recorded_env("CreateInstance")["GARM_INTERFACE_VERSION"],
        "v0.1.0"
    );

    let r = iref("hangar-old-7", "old-hangar-old-7", ctl, pool);
    provider.get_instance(&r).await.expect("get");
    provider.delete_instance(&r).await.expect("delete");
    // Exit 30: gone. A second delete is done, a get is NotFound.
    provider
        .delete_instance(&r)
        .await
        .expect("exit 30 on delete means gone");
    let err = provider.get_instance(&r).await.expect_err("gone");
    assert!(matches!(err, ProviderError::NotFound(_)), "{err:?}");

    assert_eq!(
        calls(&s),
        [
            "CreateInstance",
            "GetInstance",
            "DeleteInstance",
            "DeleteInstance",
            "GetInstance"
        ]
    );
}

/// A v0.1.1 provider that knows the instance commands but neither
/// `ValidatePoolInfo` nor `GetVersion`, in either of garm-provider-common's
/// two wordings.
fn v011_without_validation(wording: &str) -> String {
    format!(
        r#"printf '%s\n' "$GARM_COMMAND" >> "$D/calls"
case "$GARM_COMMAND" in
  CreateInstance)
    cat > "$D/stdin.CreateInstance"
    printf '{{"provider_id":"new-1","name":"%s","status":"running"}}' "$GARM_INSTANCE_ID"
    ;;
  DeleteInstance) exit 30 ;;
  ListInstances) echo '[]' ;;
  *) echo "{wording}$GARM_COMMAND" >&2; exit 1 ;;
esac
"#
    )
}

#[tokio::test]
async fn unknown_command_to_validate_or_version_is_not_a_refusal() {
    for wording in [
        "2026/01/01 00:00:00 failed to validate execution environment: unknown GARM_COMMAND: ",
        "failed to run command: invalid command: ",
    ] {
        let s = Script::new(&v011_without_validation(wording));
        let provider = s.provider(InterfaceVersion::V011);
        let case = ConformanceCase::default();
        provider
            .validate_pool(&sample_spec(&case))
            .await
            .unwrap_or_else(|e| panic!("{wording:?}: the pool is accepted: {e:?}"));
        provider.health().await.expect("healthy");
        assert_eq!(
            provider
                .get_version_if_implemented()
                .await
                .expect("no error"),
            None
        );
        assert_eq!(
            calls(&s)[..2],
            ["ValidatePoolInfo", "GetVersion"],
            "v0.1.1 does ask"
        );
        let (ctl, pool) = (ControllerId::new_random(), PoolId::new_random());
        provider
            .create_instance(&sample_request("hangar-new-1", ctl, pool, &case))
            .await
            .expect("create");
        provider
            .delete_instance(&iref("hangar-new-1", "new-1", ctl, pool))
            .await
            .expect("exit 30 on delete means gone");
    }
}

#[tokio::test]
async fn a_real_refusal_still_refuses_the_pool() {
    let s = Script::new(
        r#"
case "$GARM_COMMAND" in
  ValidatePoolInfo) echo "failed to run command: failed to validate pool info: image ubuntu-22.04 not found" >&2; exit 1 ;;
  GetVersion) echo "cannot reach the cloud" >&2; exit 1 ;;
  *) exit 1 ;;
esac
"#,
    );
    let provider = s.provider(InterfaceVersion::V011);
    let err = provider
        .validate_pool(&sample_spec(&ConformanceCase::default()))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, ProviderError::InvalidSpec(m) if m.contains("image ubuntu-22.04 not found")),
        "{err:?}"
    );
    assert!(provider.health().await.is_err(), "a failing GetVersion");
}

#[tokio::test]
async fn a_windows_pool_reaches_the_provider_with_the_bootstrap_json() {
    let s = Script::new(&v010_only());
    let provider = from_garm_style_toml(&s);
    assert!(
        !provider.renders_userdata(),
        "garm's providers render their own boot script"
    );
    let case = ConformanceCase::default();
    let mut spec = sample_spec(&case);
    spec.os_type = OsType::Windows;
    provider
        .validate_pool(&spec)
        .await
        .expect("a Windows pool is accepted");

    let (ctl, pool) = (ControllerId::new_random(), PoolId::new_random());
    let mut req = sample_request("hangar-win-1", ctl, pool, &case);
    req.os_type = OsType::Windows;
    // What the scheduler sends a provider that renders its own script.
    req.userdata = String::new();
    provider.create_instance(&req).await.expect("create");
    let stdin: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.path("stdin.CreateInstance")).expect("stdin recorded"),
    )
    .expect("bootstrap JSON");
    assert_eq!(stdin["name"], "hangar-win-1");
    assert_eq!(stdin["os_type"], "windows");
    assert_eq!(stdin["instance-token"], "conformance-token");
    assert_eq!(stdin["metadata-url"], "http://127.0.0.1:9/api/v1/metadata");
    assert_eq!(
        stdin["callback-url"],
        "http://127.0.0.1:9/api/v1/callbacks/status"
    );
}
