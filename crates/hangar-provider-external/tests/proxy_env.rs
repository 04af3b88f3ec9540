//! Proxies reach external-provider VMs' providers: the pool's proxy
//! settings (pool over provider, as the scheduler resolved them into the
//! bootstrap params) are exported to the provider process, in both
//! spellings, for the create and for later calls about the pool's
//! instances; without settings the inherited values stay.

mod support;

use hangar_core::provider::{InstanceRef, ProxySettings};
use hangar_core::{ControllerId, InstanceName, PoolId, Provider};
use hangar_provider_external::{ExternalProvider, InterfaceVersion};
use hangar_testkit::conformance::{ConformanceCase, sample_request};
use support::Script;

/// Records each command's environment and answers like a provider.
const RECORDER: &str = r#"
env > "$D/env.$GARM_COMMAND"
case "$GARM_COMMAND" in
  CreateInstance)
    cat > /dev/null
    printf '{"provider_id":"i-7","name":"%s","status":"running","os_name":"ubuntu","os_version":"24.04"}' "$GARM_INSTANCE_ID"
    ;;
  GetInstance) printf '{"provider_id":"%s","name":"px-1","status":"running"}' "$GARM_INSTANCE_ID" ;;
  DeleteInstance) : ;;
  *) echo v1 ;;
esac
"#;

fn case() -> ConformanceCase {
    ConformanceCase {
        image: "ubuntu:24.04".into(),
        flavor: "small".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_pools_proxy_reaches_the_provider_process() {
    let s = Script::new(RECORDER);
    let inherited = [
        ("PATH", "/usr/bin:/bin"),
        ("HTTPS_PROXY", "http://hangard-own:3128"),
        ("https_proxy", "http://hangard-own:3128"),
        ("no_proxy", "inherited.example"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let provider =
        ExternalProvider::with_environment(s.config(InterfaceVersion::V011), inherited).unwrap();
    let (ctl, pool) = (ControllerId::new_random(), PoolId::new_random());
    let mut req = sample_request("px-1", ctl, pool, &case());
    req.bootstrap.proxy = ProxySettings {
        http_proxy: Some("http://pool-proxy.corp:3128".into()),
        https_proxy: Some("http://pool-proxy.corp:3129".into()),
        no_proxy: Some("169.254.169.254,.corp".into()),
    };
    provider.create_instance(&req).await.expect("created");

    let env = s.recorded_env("CreateInstance");
    for (k, v) in [
        ("HTTP_PROXY", "http://pool-proxy.corp:3128"),
        ("http_proxy", "http://pool-proxy.corp:3128"),
        ("HTTPS_PROXY", "http://pool-proxy.corp:3129"),
        ("https_proxy", "http://pool-proxy.corp:3129"),
        ("NO_PROXY", "169.254.169.254,.corp"),
        ("no_proxy", "169.254.169.254,.corp"),
    ] {
        assert_eq!(
            env.get(k).map(String::as_str),
            Some(v),
            "CreateInstance: {k}"
        );
    }

    // Later calls about the pool's instances carry the same settings.
    let r = InstanceRef {
        name: InstanceName::parse("px-1").unwrap(),
        provider_id: Some("i-7".into()),
        controller_id: ctl,
        pool_id: pool,
    };
    provider.get_instance(&r).await.expect("found");
    provider.delete_instance(&r).await.expect("deleted");
    for command in ["GetInstance", "DeleteInstance"] {
        let env = s.recorded_env(command);
        assert_eq!(
            env.get("https_proxy").map(String::as_str),
            Some("http://pool-proxy.corp:3129"),
            "{command}"
        );
        assert_eq!(
            env.get("NO_PROXY").map(String::as_str),
            Some("169.254.169.254,.corp"),
            "{command}"
        );
    }
}

#[tokio::test]
async fn without_proxy_settings_inherited_values_stay() {
    let s = Script::new(RECORDER);
    let inherited = [
        ("PATH", "/usr/bin:/bin"),
        ("https_proxy", "http://hangard-own:3128"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let provider =
        ExternalProvider::with_environment(s.config(InterfaceVersion::V011), inherited).unwrap();
    let mut req = sample_request(
        "px-2",
        ControllerId::new_random(),
        PoolId::new_random(),
        &case(),
    );
    // Only no_proxy set at the pool: the rest is not invented.
    req.bootstrap.proxy = ProxySettings {
        no_proxy: Some("localhost".into()),
        ..Default::default()
    };
    provider.create_instance(&req).await.expect("created");
    let env = s.recorded_env("CreateInstance");
    assert_eq!(
        env.get("https_proxy").map(String::as_str),
        Some("http://hangard-own:3128")
    );
    assert_eq!(env.get("NO_PROXY").map(String::as_str), Some("localhost"));
    assert!(!env.contains_key("HTTP_PROXY") && !env.contains_key("http_proxy"));
}
