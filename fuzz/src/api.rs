//! Admin and instance API request bodies: any bytes given to each request
//! DTO's serde_json parser (what the server's `JsonBody` extractor, axum's
//! `Json`, runs) give a value or an error, never a panic; a value written back to JSON
//! reads back to the same JSON; and the core parsers the handlers then run
//! on the fields (names, labels, OS, prefix, extra specs, pool validation,
//! runner status) answer without panicking.
//!
//! Input: one JSON body, tried as every request type.

use hangar_api::*;
use hangar_core::{
    EntityScope, InstanceName, Labels, OsArch, OsType, PoolSpec, ResourceName, RunnerPrefix,
    RunnerStatus,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub fn run(data: &[u8]) {
    if let Some(r) = round_trip::<FirstRunRequest>(data) {
        let _ = ResourceName::parse(&r.username);
    }
    round_trip::<LoginRequest>(data);
    if let Some(e) = round_trip::<EndpointCreate>(data) {
        let _ = ResourceName::parse(&e.name);
    }
    round_trip::<EndpointUpdate>(data);
    if let Some(c) = round_trip::<CredentialsCreate>(data) {
        let _ = (
            ResourceName::parse(&c.name),
            ResourceName::parse(&c.endpoint),
        );
    }
    round_trip::<CredentialsUpdate>(data);
    if let Some(e) = round_trip::<EntityCreate>(data) {
        let _ = ResourceName::parse(&e.credentials_name);
        let scopes = [
            EntityScope::Repository {
                owner: e.owner.clone().unwrap_or_default(),
                name: e.name.clone(),
            },
            EntityScope::Organization {
                name: e.name.clone(),
            },
            EntityScope::Enterprise { slug: e.name },
        ];
        for s in scopes {
            if s.validate().is_ok() {
                let _ = s.display_name();
                assert!(s.as_scope_ref().is(&s));
            }
        }
    }
    round_trip::<EntityUpdate>(data);
    round_trip::<WebhookInstall>(data);
    if let Some(p) = round_trip::<PoolCreate>(data) {
        pool(&p);
    }
    if let Some(p) = round_trip::<PoolUpdate>(data) {
        let _ = p.tags.as_deref().map(Labels::from_strs);
        let _ = p.os_type.as_deref().map(str::parse::<OsType>);
        let _ = p.os_arch.as_deref().map(str::parse::<OsArch>);
        let _ = p.runner_prefix.as_deref().map(RunnerPrefix::parse);
        let _ = p.extra_specs.map(PoolSpec::extra_specs_from_value);
    }
    round_trip::<ControllerUpdate>(data);
    if let Some(s) = round_trip::<StatusCallback>(data)
        && let Ok(r) = s.status.parse::<RunnerStatus>()
    {
        assert_eq!(r.as_str(), s.status);
    }
    round_trip::<SystemInfoCallback>(data);
}

/// Parses `data` as `T`; what parses writes back to JSON that reads back to
/// the same JSON.
fn round_trip<T: Serialize + DeserializeOwned>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    let json = serde_json::to_value(&value).expect("a parsed body serialises");
    let again: T = serde_json::from_value(json.clone()).unwrap_or_else(|e| {
        panic!(
            "{} written as {json} does not read back: {e}",
            std::any::type_name::<T>()
        )
    });
    assert_eq!(
        serde_json::to_value(&again).expect("serialises"),
        json,
        "{} changed on the round trip",
        std::any::type_name::<T>()
    );
    Some(value)
}

/// A new pool as `POST …/pools` builds it from the body, field by field
/// with core's parsers, then validated as a whole.
fn pool(p: &PoolCreate) {
    let provider_name = ResourceName::parse(&p.provider_name);
    let tags = Labels::from_strs(&p.tags);
    let os_type = p.os_type.as_deref().map(str::parse::<OsType>).transpose();
    let os_arch = p.os_arch.as_deref().map(str::parse::<OsArch>).transpose();
    let prefix = p
        .runner_prefix
        .as_deref()
        .map(RunnerPrefix::parse)
        .transpose();
    let extra = PoolSpec::extra_specs_from_value(p.extra_specs.clone().unwrap_or_default());
    let (Ok(provider_name), Ok(tags), Ok(os_type), Ok(os_arch), Ok(prefix), Ok(extra_specs)) =
        (provider_name, tags, os_type, os_arch, prefix, extra)
    else {
        return;
    };
    let spec = PoolSpec {
        provider_name,
        image: p.image.clone(),
        flavor: p.flavor.clone(),
        tags,
        os_type: os_type.unwrap_or_default(),
        os_arch: os_arch.unwrap_or_default(),
        min_idle_runners: p.min_idle_runners.unwrap_or(0),
        max_runners: p.max_runners.unwrap_or(10),
        runner_prefix: prefix.unwrap_or_default(),
        runner_bootstrap_timeout: p
            .runner_bootstrap_timeout
            .unwrap_or(PoolSpec::DEFAULT_BOOTSTRAP_TIMEOUT_MIN),
        extra_specs,
        runner_group: p.runner_group.clone().filter(|g| !g.is_empty()),
        priority: p.priority.unwrap_or(0),
        enabled: p.enabled.unwrap_or(true),
    };
    if spec.validate().is_err() {
        return;
    }
    assert!(spec.min_idle_runners <= spec.max_runners);
    let _ = spec.provider_extra_specs();
    spec.proxy().expect("a valid pool's proxy settings read");
    // Its runners get valid names.
    InstanceName::generate(&spec.runner_prefix, "abc123def456")
        .expect("a valid prefix makes valid runner names");
    let json = serde_json::to_string(&spec).expect("a pool spec serialises");
    let back: PoolSpec = serde_json::from_str(&json).expect("a valid pool spec reads back");
    assert_eq!(back, spec);
}
