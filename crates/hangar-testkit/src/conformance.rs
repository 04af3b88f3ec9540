//! The provider conformance suite: what every [`Provider`] must do, run the
//! same way against each implementation (FakeProvider, libvirt's test
//! driver, the fake ARM server, script providers, …).
//!
//! It panics with a message naming the broken promise.

use hangar_core::provider::{
    BootstrapParams, CreateInstanceRequest, InstanceRef, ProviderInstanceStatus, ProxySettings,
};
use hangar_core::{
    ControllerId, InstanceName, Labels, OsArch, OsType, PoolId, PoolSpec, Provider, ProviderError,
    ResourceName, RunnerPrefix, Secret,
};

/// Provider-specific inputs for the suite.
#[derive(Debug, Clone)]
pub struct ConformanceCase {
    pub image: String,
    pub flavor: String,
    pub extra_specs: serde_json::Map<String, serde_json::Value>,
    /// A pool spec the provider must reject (`None` skips that check).
    pub invalid_image: Option<String>,
}

impl Default for ConformanceCase {
    fn default() -> Self {
        Self {
            image: "ubuntu-22.04".into(),
            flavor: "small".into(),
            extra_specs: serde_json::Map::new(),
            invalid_image: Some("invalid".into()),
        }
    }
}

pub fn sample_spec(case: &ConformanceCase) -> PoolSpec {
    PoolSpec {
        provider_name: ResourceName::parse("conformance").expect("valid"),
        image: case.image.clone(),
        flavor: case.flavor.clone(),
        tags: Labels::parse_list("self-hosted,linux,conformance").expect("valid"),
        os_type: OsType::Linux,
        os_arch: OsArch::Amd64,
        min_idle_runners: 0,
        max_runners: 2,
        runner_prefix: RunnerPrefix::default(),
        runner_bootstrap_timeout: 20,
        extra_specs: case.extra_specs.clone(),
        runner_group: None,
        priority: 0,
        enabled: true,
    }
}

/// A create request with a harmless bootstrap (nothing listens at its URLs).
pub fn sample_request(
    name: &str,
    controller_id: ControllerId,
    pool_id: PoolId,
    case: &ConformanceCase,
) -> CreateInstanceRequest {
    CreateInstanceRequest {
        name: InstanceName::parse(name).expect("valid instance name"),
        controller_id,
        pool_id,
        image: case.image.clone(),
        flavor: case.flavor.clone(),
        os_type: OsType::Linux,
        os_arch: OsArch::Amd64,
        labels: Labels::parse_list("self-hosted,linux,conformance").expect("valid"),
        extra_specs: case.extra_specs.clone(),
        userdata: "#!/bin/sh\necho conformance\n".into(),
        bootstrap: BootstrapParams {
            repo_url: "https://github.com/octo/app".into(),
            metadata_url: "http://127.0.0.1:9/api/v1/metadata".into(),
            callback_url: "http://127.0.0.1:9/api/v1/callbacks/status".into(),
            instance_token: Secret::new("conformance-token"),
            jit_config_enabled: true,
            runner_group: None,
            tools: vec![],
            ca_cert_bundle: None,
            proxy: ProxySettings::default(),
        },
    }
}

fn iref(req: &CreateInstanceRequest, provider_id: Option<String>) -> InstanceRef {
    InstanceRef {
        name: req.name.clone(),
        provider_id,
        controller_id: req.controller_id,
        pool_id: req.pool_id,
    }
}

/// Runs the whole suite. Instance names are random, so the suite can run
/// against a shared backend.
pub async fn run(provider: &dyn Provider, case: &ConformanceCase) {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let controller = ControllerId::new_random();
    let pool = PoolId::new_random();
    let other_pool = PoolId::new_random();

    provider.health().await.expect("health() succeeds");

    provider
        .validate_pool(&sample_spec(case))
        .await
        .expect("validate_pool accepts the case's spec");
    if let Some(bad) = &case.invalid_image {
        let mut spec = sample_spec(case);
        spec.image = bad.clone();
        let err = provider.validate_pool(&spec).await;
        assert!(
            matches!(
                err,
                Err(ProviderError::InvalidSpec(_)) | Err(ProviderError::NotFound(_))
            ),
            "validate_pool must reject image {bad:?}, got {err:?}"
        );
    }

    // Create.
    let req_a = sample_request(&format!("conf-{suffix}-a"), controller, pool, case);
    let a = provider
        .create_instance(&req_a)
        .await
        .expect("create_instance succeeds");
    assert!(!a.provider_id.is_empty(), "create returns a provider id");
    assert_eq!(
        a.name,
        req_a.name.as_str(),
        "create returns the instance name"
    );
    assert!(
        matches!(
            a.status,
            ProviderInstanceStatus::Running | ProviderInstanceStatus::Creating
        ),
        "a new instance is running or creating, got {:?}",
        a.status
    );

    // Get, by name and provider id.
    let got = provider
        .get_instance(&iref(&req_a, Some(a.provider_id.clone())))
        .await
        .expect("get_instance finds the new instance");
    assert_eq!(
        got.provider_id, a.provider_id,
        "get returns the same provider id"
    );
    assert_eq!(
        got.controller_id,
        Some(controller),
        "instance carries the controller id"
    );
    assert_eq!(got.pool_id, Some(pool), "instance carries the pool id");
    let by_name = provider
        .get_instance(&iref(&req_a, None))
        .await
        .expect("get_instance finds an instance by name alone");
    assert_eq!(by_name.provider_id, a.provider_id);

    // List filters by controller and pool.
    let req_b = sample_request(&format!("conf-{suffix}-b"), controller, pool, case);
    let b = provider
        .create_instance(&req_b)
        .await
        .expect("a second create succeeds");
    let req_c = sample_request(&format!("conf-{suffix}-c"), controller, other_pool, case);
    let c = provider
        .create_instance(&req_c)
        .await
        .expect("a create in another pool succeeds");
    let mut names: Vec<String> = provider
        .list_instances(controller, pool)
        .await
        .expect("list_instances succeeds")
        .into_iter()
        .map(|i| i.name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![req_a.name.to_string(), req_b.name.to_string()],
        "list returns exactly this pool's instances"
    );
    let foreign = provider
        .list_instances(ControllerId::new_random(), pool)
        .await
        .expect("list for another controller succeeds");
    assert!(
        foreign.is_empty(),
        "another controller's list is empty, got {foreign:?}"
    );

    // Delete, twice, and of something that never existed.
    provider
        .delete_instance(&iref(&req_a, Some(a.provider_id.clone())))
        .await
        .expect("delete succeeds");
    let gone = provider
        .get_instance(&iref(&req_a, Some(a.provider_id.clone())))
        .await;
    assert!(
        matches!(gone, Err(ProviderError::NotFound(_))),
        "get after delete is NotFound, got {gone:?}"
    );
    provider
        .delete_instance(&iref(&req_a, Some(a.provider_id.clone())))
        .await
        .expect("deleting an already deleted instance succeeds");
    let never = sample_request(&format!("conf-{suffix}-never"), controller, pool, case);
    provider
        .delete_instance(&iref(&never, None))
        .await
        .expect("deleting an instance that never existed succeeds");
    let missing = provider.get_instance(&iref(&never, None)).await;
    assert!(
        matches!(missing, Err(ProviderError::NotFound(_))),
        "get of an unknown instance is NotFound, got {missing:?}"
    );
    let left: Vec<String> = provider
        .list_instances(controller, pool)
        .await
        .expect("list succeeds")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(
        left,
        vec![req_b.name.to_string()],
        "deleted instances leave the list"
    );

    // Clean up.
    provider
        .delete_instance(&iref(&req_b, Some(b.provider_id)))
        .await
        .expect("delete succeeds");
    provider
        .delete_instance(&iref(&req_c, Some(c.provider_id)))
        .await
        .expect("delete succeeds");
    assert!(
        provider
            .list_instances(controller, pool)
            .await
            .expect("list succeeds")
            .is_empty(),
        "nothing is left after deleting everything"
    );
}
