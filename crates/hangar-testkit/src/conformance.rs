//! The provider conformance suite: what every [`Provider`] must do, run the
//! same way against each implementation (FakeProvider, libvirt's test
//! driver, the fake ARM server, script providers, …).
//!
//! Each property is its own `pub async fn` (it panics with a message naming
//! the broken promise), and [`conformance_tests!`](crate::conformance_tests)
//! turns them into one `#[tokio::test]` each, named after the property, so a
//! failing run names what broke. Every property uses fresh random instance
//! names and deletes what it made, so properties can share a backend; each
//! returns the names it used, for a caller that checks nothing of them is
//! left behind.

use hangar_core::provider::{
    BootstrapParams, CreateInstanceRequest, InstanceRef, ProviderInstance, ProviderInstanceStatus,
    ProxySettings,
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
        watcher: None,
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

/// One property's world: a random name suffix, a controller and a pool, and
/// the names of the instances made so far.
struct Scope<'a> {
    provider: &'a dyn Provider,
    case: &'a ConformanceCase,
    suffix: String,
    controller: ControllerId,
    pool: PoolId,
    names: Vec<InstanceName>,
}

impl<'a> Scope<'a> {
    fn new(provider: &'a dyn Provider, case: &'a ConformanceCase) -> Self {
        Self {
            provider,
            case,
            suffix: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            controller: ControllerId::new_random(),
            pool: PoolId::new_random(),
            names: Vec::new(),
        }
    }

    /// A request for `conf-<suffix>-<tag>` in `pool`; the name is recorded.
    fn request(&mut self, tag: &str, pool: PoolId) -> CreateInstanceRequest {
        let req = sample_request(
            &format!("conf-{}-{tag}", self.suffix),
            self.controller,
            pool,
            self.case,
        );
        self.names.push(req.name.clone());
        req
    }

    async fn create(&mut self, tag: &str, pool: PoolId, what: &str) -> Made {
        let req = self.request(tag, pool);
        let made = self.provider.create_instance(&req).await.expect(what);
        Made { req, made }
    }

    async fn delete(&self, m: &Made, what: &str) {
        self.provider.delete_instance(&m.by_id()).await.expect(what);
    }

    async fn names_in(&self, controller: ControllerId, pool: PoolId, what: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .provider
            .list_instances(controller, pool)
            .await
            .expect(what)
            .into_iter()
            .map(|i| i.name)
            .collect();
        names.sort();
        names
    }
}

/// A created instance and the request that made it.
struct Made {
    req: CreateInstanceRequest,
    made: ProviderInstance,
}

impl Made {
    fn by_id(&self) -> InstanceRef {
        iref(&self.req, Some(self.made.provider_id.clone()))
    }
}

/// `health()` succeeds against a working backend.
pub async fn health_succeeds(
    provider: &dyn Provider,
    _case: &ConformanceCase,
) -> Vec<InstanceName> {
    provider.health().await.expect("health() succeeds");
    Vec::new()
}

/// `validate_pool` accepts the case's pool spec.
pub async fn validate_pool_accepts_the_case(
    provider: &dyn Provider,
    case: &ConformanceCase,
) -> Vec<InstanceName> {
    provider
        .validate_pool(&sample_spec(case))
        .await
        .expect("validate_pool accepts the case's spec");
    Vec::new()
}

/// `validate_pool` rejects the case's invalid image (`InvalidSpec` or
/// `NotFound`); passes trivially for a case without one.
pub async fn validate_pool_rejects_an_invalid_image(
    provider: &dyn Provider,
    case: &ConformanceCase,
) -> Vec<InstanceName> {
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
    Vec::new()
}

/// A create returns a provider id, the instance's name, and a running or
/// creating status.
pub async fn create_returns_the_new_instance(
    provider: &dyn Provider,
    case: &ConformanceCase,
) -> Vec<InstanceName> {
    let mut s = Scope::new(provider, case);
    let a = s.create("a", s.pool, "create_instance succeeds").await;
    assert!(
        !a.made.provider_id.is_empty(),
        "create returns a provider id"
    );
    assert_eq!(
        a.made.name,
        a.req.name.as_str(),
        "create returns the instance name"
    );
    assert!(
        matches!(
            a.made.status,
            ProviderInstanceStatus::Running | ProviderInstanceStatus::Creating
        ),
        "a new instance is running or creating, got {:?}",
        a.made.status
    );
    s.delete(&a, "delete succeeds").await;
    s.names
}

/// `get_instance` finds a new instance by provider id and by name alone,
/// and it carries the controller id and pool id.
pub async fn get_finds_by_id_and_by_name(
    provider: &dyn Provider,
    case: &ConformanceCase,
) -> Vec<InstanceName> {
    let mut s = Scope::new(provider, case);
    let a = s.create("a", s.pool, "create_instance succeeds").await;
    let got = provider
        .get_instance(&a.by_id())
        .await
        .expect("get_instance finds the new instance");
    assert_eq!(
        got.provider_id, a.made.provider_id,
        "get returns the same provider id"
    );
    assert_eq!(
        got.controller_id,
        Some(s.controller),
        "instance carries the controller id"
    );
    assert_eq!(got.pool_id, Some(s.pool), "instance carries the pool id");
    let by_name = provider
        .get_instance(&iref(&a.req, None))
        .await
        .expect("get_instance finds an instance by name alone");
    assert_eq!(
        by_name.provider_id, a.made.provider_id,
        "get by name returns the same provider id"
    );
    s.delete(&a, "delete succeeds").await;
    s.names
}

/// `list_instances` returns exactly one controller's pool: not another
/// pool's instances, nothing for another controller, and nothing once all
/// are deleted.
pub async fn list_filters_by_controller_and_pool(
    provider: &dyn Provider,
    case: &ConformanceCase,
) -> Vec<InstanceName> {
    let mut s = Scope::new(provider, case);
    let other_pool = PoolId::new_random();
    let a = s.create("a", s.pool, "create_instance succeeds").await;
    let b = s.create("b", s.pool, "a second create succeeds").await;
    let c = s
        .create("c", other_pool, "a create in another pool succeeds")
        .await;
    assert_eq!(
        s.names_in(s.controller, s.pool, "list_instances succeeds")
            .await,
        vec![a.req.name.to_string(), b.req.name.to_string()],
        "list returns exactly this pool's instances"
    );
    let foreign = provider
        .list_instances(ControllerId::new_random(), s.pool)
        .await
        .expect("list for another controller succeeds");
    assert!(
        foreign.is_empty(),
        "another controller's list is empty, got {foreign:?}"
    );
    for m in [&a, &b, &c] {
        s.delete(m, "delete succeeds").await;
    }
    assert!(
        s.names_in(s.controller, s.pool, "list succeeds")
            .await
            .is_empty(),
        "nothing is left after deleting everything"
    );
    s.names
}

/// After a delete, `get_instance` is `NotFound` and the list no longer has
/// the instance (but still has the others).
pub async fn deleted_instances_are_gone(
    provider: &dyn Provider,
    case: &ConformanceCase,
) -> Vec<InstanceName> {
    let mut s = Scope::new(provider, case);
    let a = s.create("a", s.pool, "create_instance succeeds").await;
    let b = s.create("b", s.pool, "a second create succeeds").await;
    s.delete(&a, "delete succeeds").await;
    let gone = provider.get_instance(&a.by_id()).await;
    assert!(
        matches!(gone, Err(ProviderError::NotFound(_))),
        "get after delete is NotFound, got {gone:?}"
    );
    assert_eq!(
        s.names_in(s.controller, s.pool, "list succeeds").await,
        vec![b.req.name.to_string()],
        "deleted instances leave the list"
    );
    s.delete(&b, "delete succeeds").await;
    s.names
}

/// Deleting an already deleted instance succeeds.
pub async fn delete_is_idempotent(
    provider: &dyn Provider,
    case: &ConformanceCase,
) -> Vec<InstanceName> {
    let mut s = Scope::new(provider, case);
    let a = s.create("a", s.pool, "create_instance succeeds").await;
    s.delete(&a, "delete succeeds").await;
    s.delete(&a, "deleting an already deleted instance succeeds")
        .await;
    s.names
}

/// Deleting an instance that never existed succeeds (a delete after a
/// crash may come before or without the create).
pub async fn delete_of_unknown_is_ok(
    provider: &dyn Provider,
    case: &ConformanceCase,
) -> Vec<InstanceName> {
    let mut s = Scope::new(provider, case);
    let never = s.request("never", s.pool);
    provider
        .delete_instance(&iref(&never, None))
        .await
        .expect("deleting an instance that never existed succeeds");
    s.names
}

/// `get_instance` of an instance that never existed is `NotFound`.
pub async fn get_of_unknown_is_not_found(
    provider: &dyn Provider,
    case: &ConformanceCase,
) -> Vec<InstanceName> {
    let mut s = Scope::new(provider, case);
    let never = s.request("never", s.pool);
    let missing = provider.get_instance(&iref(&never, None)).await;
    assert!(
        matches!(missing, Err(ProviderError::NotFound(_))),
        "get of an unknown instance is NotFound, got {missing:?}"
    );
    s.names
}

/// One `#[tokio::test]` per conformance property, in a module of the given
/// name, so a failure names the property (`conformance::delete_is_idempotent`).
///
/// Short form, for a provider that needs nothing kept alive beside it
/// (`provider` is evaluated in each test and may `.await`):
///
/// ```ignore
/// hangar_testkit::conformance_tests!(mod conformance, ConformanceCase::default(), FakeProvider::default());
/// ```
///
/// Full form: `setup` makes a fixture per test (it may `.await`); `provider`
/// and `case` borrow from it, and the optional `after` runs once the property
/// passed, with the names of the instances it made (e.g. to check that
/// nothing of them is left at the backend):
///
/// ```ignore
/// hangar_testkit::conformance_tests! {
///     mod conformance,
///     setup: setup("").await,
///     provider: |(_, p)| p,
///     case: |_| cvm_case(),
///     after: |(arm, _), _names| assert!(arm.resources().is_empty()),
/// }
/// ```
///
/// The tests run on a multi-threaded runtime (providers may block), and the
/// calling crate needs `tokio` with its `macros` feature.
#[macro_export]
macro_rules! conformance_tests {
    (mod $module:ident, $case:expr, $provider:expr $(,)?) => {
        $crate::conformance_tests! {
            mod $module,
            setup: $provider,
            provider: |p| p,
            case: |_| $case,
        }
    };
    (
        mod $module:ident,
        setup: $setup:expr,
        provider: |$pf:pat_param| $provider:expr,
        case: |$cf:pat_param| $case:expr
        $(,)?
    ) => {
        $crate::conformance_tests! {
            mod $module,
            setup: $setup,
            provider: |$pf| $provider,
            case: |$cf| $case,
            after: |_, _| {},
        }
    };
    (
        mod $module:ident,
        setup: $setup:expr,
        provider: |$pf:pat_param| $provider:expr,
        case: |$cf:pat_param| $case:expr,
        after: |$af:pat_param, $names:pat_param| $after:expr
        $(,)?
    ) => {
        $crate::conformance_tests!(@tests $module
            [$setup] [|$pf| $provider] [|$cf| $case] [|$af, $names| $after]
            health_succeeds
            validate_pool_accepts_the_case
            validate_pool_rejects_an_invalid_image
            create_returns_the_new_instance
            get_finds_by_id_and_by_name
            list_filters_by_controller_and_pool
            deleted_instances_are_gone
            delete_is_idempotent
            delete_of_unknown_is_ok
            get_of_unknown_is_not_found
        );
    };
    (@tests $module:ident
        [$setup:expr] [|$pf:pat_param| $provider:expr] [|$cf:pat_param| $case:expr]
        [|$af:pat_param, $names:pat_param| $after:expr]
        $($property:ident)*
    ) => {
        #[allow(unused_imports)]
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $property() {
                    let fixture = $setup;
                    let case = {
                        let $cf = &fixture;
                        $case
                    };
                    let provider: &dyn $crate::__Provider = {
                        let $pf = &fixture;
                        $provider
                    };
                    let names = $crate::conformance::$property(provider, &case).await;
                    let $af = &fixture;
                    let $names = names;
                    let () = $after;
                }
            )*
        }
    };
}
