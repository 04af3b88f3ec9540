//! The provider against libvirt's in-process `test:///default` driver: the
//! conformance suite plus the create/delete guarantees (cleanup of half-made
//! instances, refusing to touch foreign domains), no daemon needed.
//!
//! The test driver keeps volumes as metadata only: overlays (with their
//! backing store), seed and data volumes are created and deleted for real,
//! but the seed's bytes cannot be uploaded (`virStorageVolUpload` is not
//! implemented there), so the provider skips that one step on this driver.
//! The real-daemon test (`real_libvirt.rs`) covers the upload and the boot.

use std::sync::Arc;

use hangar_core::provider::{InstanceRef, ProviderInstanceStatus};
use hangar_core::{ControllerId, InstanceName, PoolId, Provider, ProviderError};
use hangar_provider_libvirt::{
    DomainType, Flavor, LibvirtProvider, LibvirtProviderConfig, NetworkSpec,
};
use hangar_testkit::conformance::{ConformanceCase, sample_request, sample_spec};
use serde_json::json;
use virt::connect::Connect;
use virt::storage_vol::StorageVol;

const POOL: &str = "default-pool";

/// Holds a connection for the whole test: the test driver's shared state
/// lives as long as some connection to `test:///default` is open.
struct TestHost {
    conn: Arc<Connect>,
    base: String,
}

impl TestHost {
    fn new() -> Self {
        virt::error::clear_error_callback();
        let conn = Connect::open(Some("test:///default")).expect("open test:///default");
        let base = format!(
            "base-{}.qcow2",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let pool = conn.lookup_storage_pool_by_name(POOL).expect("test pool");
        StorageVol::create_xml(
            &pool,
            &format!(
                "<volume><name>{base}</name><capacity unit='bytes'>{}</capacity><target><format type='qcow2'/></target></volume>",
                2u64 << 30
            ),
            0,
        )
        .expect("create base volume");
        Self {
            conn: Arc::new(conn),
            base,
        }
    }

    fn provider(&self) -> LibvirtProvider {
        LibvirtProvider::new(config()).expect("valid config")
    }

    fn volumes(&self) -> Vec<String> {
        let pool = self.conn.lookup_storage_pool_by_name(POOL).unwrap();
        let mut v = pool.list_volumes().unwrap();
        v.sort();
        v
    }

    fn volumes_of(&self, name: &str) -> Vec<String> {
        self.volumes()
            .into_iter()
            .filter(|v| v.starts_with(&format!("{name}.")) || v.starts_with(&format!("{name}-")))
            .collect()
    }

    fn domain_exists(&self, name: &str) -> bool {
        self.conn.lookup_domain_by_name(name).is_ok()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Ok(pool) = self.conn.lookup_storage_pool_by_name(POOL)
            && let Ok(v) = pool.lookup_storage_vol_by_name(&self.base)
        {
            let _ = v.delete(0);
        }
    }
}

fn config() -> LibvirtProviderConfig {
    LibvirtProviderConfig {
        uri: "test:///default".into(),
        storage_pool: POOL.into(),
        network: NetworkSpec::User,
        domain_type: DomainType::Test,
        kernel_dirs: vec!["/srv/kernels".into()],
        flavors: [(
            "small".to_owned(),
            Flavor {
                vcpus: 1,
                memory_mib: 512,
                disk_gib: 4,
            },
        )]
        .into(),
        ..Default::default()
    }
}

fn name(tag: &str) -> String {
    format!(
        "t-{tag}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

fn case(host: &TestHost) -> ConformanceCase {
    ConformanceCase {
        image: host.base.clone(),
        flavor: "small".into(),
        extra_specs: serde_json::Map::new(),
        invalid_image: Some("no-such-base.qcow2".into()),
    }
}

fn iref(req: &hangar_core::provider::CreateInstanceRequest, id: Option<String>) -> InstanceRef {
    InstanceRef {
        name: req.name.clone(),
        provider_id: id,
        controller_id: req.controller_id,
        pool_id: req.pool_id,
    }
}

// The conformance suite; after each property, none of its instances'
// volumes is left (other tests share the driver's state, so only the
// property's own names are checked).
hangar_testkit::conformance_tests! {
    mod conformance,
    setup: {
        let host = TestHost::new();
        let provider = host.provider();
        (host, provider)
    },
    provider: |(_, p)| p,
    case: |(host, _)| case(host),
    after: |(host, _), names| {
        let left: Vec<String> = names
            .iter()
            .flat_map(|n| host.volumes_of(n.as_str()))
            .collect();
        assert!(
            left.is_empty(),
            "the suite's volumes are all deleted: {left:?}"
        );
    },
}

#[tokio::test(flavor = "multi_thread")]
async fn create_makes_overlay_seed_data_and_tagged_domain() {
    let host = TestHost::new();
    let provider = host.provider();
    let mut c = case(&host);
    c.extra_specs = json!({"extra_disk_gib": 3, "cpu_mode": "host-model", "machine": "pc"})
        .as_object()
        .unwrap()
        .clone();
    let n = name("full");
    let req = sample_request(&n, ControllerId::new_random(), PoolId::new_random(), &c);
    let inst = provider.create_instance(&req).await.expect("create");
    assert_eq!(inst.status, ProviderInstanceStatus::Running);
    assert_eq!(
        host.volumes_of(&n),
        vec![
            format!("{n}-data.qcow2"),
            format!("{n}-seed.iso"),
            format!("{n}.qcow2")
        ]
    );

    let pool = host.conn.lookup_storage_pool_by_name(POOL).unwrap();
    let root = pool
        .lookup_storage_vol_by_name(&format!("{n}.qcow2"))
        .unwrap();
    let root_xml = root.xml_desc(0).unwrap();
    assert!(
        root_xml.contains(&format!("<path>/{POOL}/{}</path>", host.base)),
        "overlay is backed by the base, not a copy:\n{root_xml}"
    );
    assert_eq!(
        root.info().unwrap().capacity,
        4 << 30,
        "sized by the flavor"
    );
    let data = pool
        .lookup_storage_vol_by_name(&format!("{n}-data.qcow2"))
        .unwrap();
    assert_eq!(data.info().unwrap().capacity, 3 << 30);

    let dom = host.conn.lookup_domain_by_name(&n).unwrap();
    assert_eq!(dom.uuid_string().unwrap(), inst.provider_id);
    let xml = dom.xml_desc(0).unwrap();
    assert!(xml.contains("<cpu mode='host-model'"), "{xml}");
    assert!(xml.contains("machine='pc'"), "{xml}");
    assert!(
        xml.contains(&req.controller_id.to_string()),
        "controller id in metadata"
    );
    assert!(
        xml.contains(&req.pool_id.to_string()),
        "pool id in metadata"
    );
    assert!(
        !xml.contains("conformance-token"),
        "the token never reaches the domain XML"
    );

    // Stopped from outside (the guest powered off): reported as stopped.
    dom.destroy().unwrap();
    let got = provider.get_instance(&iref(&req, None)).await.unwrap();
    assert_eq!(got.status, ProviderInstanceStatus::Stopped);

    provider
        .delete_instance(&iref(&req, Some(inst.provider_id)))
        .await
        .expect("delete");
    assert!(!host.domain_exists(&n));
    assert!(host.volumes_of(&n).is_empty(), "all three volumes deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_created_instance_is_cleaned_up() {
    let host = TestHost::new();
    let provider = host.provider();
    let mut c = case(&host);
    c.extra_specs = json!({"extra_disk_gib": 1}).as_object().unwrap().clone();
    let n = name("half");
    // The data volume's name is taken, so create fails after the domain,
    // the overlay and the seed exist.
    let pool = host.conn.lookup_storage_pool_by_name(POOL).unwrap();
    StorageVol::create_xml(
        &pool,
        &format!("<volume><name>{n}-data.qcow2</name><capacity>1024</capacity></volume>"),
        0,
    )
    .unwrap();
    let req = sample_request(&n, ControllerId::new_random(), PoolId::new_random(), &c);
    let err = provider.create_instance(&req).await.unwrap_err();
    assert!(err.to_string().contains("create data volume"), "{err}");
    assert!(!host.domain_exists(&n), "the defined domain is removed");
    assert!(
        host.volumes_of(&n).is_empty(),
        "overlay, seed and the stale data volume are removed: {:?}",
        host.volumes_of(&n)
    );
    assert!(
        provider
            .list_instances(req.controller_id, req.pool_id)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_domains_are_never_touched() {
    let host = TestHost::new();
    let provider = host.provider();
    let c = case(&host);

    // A domain that is not Hangar's, under an instance's name.
    let n = name("foreign");
    host.conn
        .define_domain_xml(&format!(
            "<domain type='test'><name>{n}</name><memory>65536</memory><os><type>hvm</type></os></domain>"
        ))
        .unwrap();
    let req = sample_request(&n, ControllerId::new_random(), PoolId::new_random(), &c);
    let err = provider
        .delete_instance(&iref(&req, None))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Fatal(_)), "{err:?}");
    assert!(host.domain_exists(&n), "a foreign domain survives delete");
    let err = provider.create_instance(&req).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(
        host.domain_exists(&n),
        "and a failed create does not remove it"
    );
    assert!(
        matches!(
            provider.get_instance(&iref(&req, None)).await,
            Err(ProviderError::NotFound(_))
        ),
        "a foreign domain is not an instance"
    );
    let dom = host.conn.lookup_domain_by_name(&n).unwrap();
    dom.undefine().unwrap();

    // Another controller's instance.
    let n = name("other");
    let req = sample_request(&n, ControllerId::new_random(), PoolId::new_random(), &c);
    let inst = provider.create_instance(&req).await.unwrap();
    let mut theirs = iref(&req, Some(inst.provider_id.clone()));
    theirs.controller_id = ControllerId::new_random();
    let err = provider.delete_instance(&theirs).await.unwrap_err();
    assert!(
        err.to_string().contains("belongs to Hangar controller"),
        "{err}"
    );
    assert!(host.domain_exists(&n));
    assert_eq!(host.volumes_of(&n).len(), 2, "its volumes survive too");
    provider
        .delete_instance(&iref(&req, Some(inst.provider_id)))
        .await
        .unwrap();
    assert!(!host.domain_exists(&n));
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_pool_names_what_is_wrong() {
    let host = TestHost::new();
    let provider = host.provider();
    let c = case(&host);
    let mut spec = sample_spec(&c);
    provider.validate_pool(&spec).await.expect("valid pool");

    spec.flavor = "huge".into();
    let err = provider.validate_pool(&spec).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidSpec(m) if m.contains("unknown flavor \"huge\"")),
        "{err:?}"
    );

    spec = sample_spec(&c);
    spec.extra_specs = json!({"gpu": true}).as_object().unwrap().clone();
    let err = provider.validate_pool(&spec).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidSpec(m) if m.contains("gpu")),
        "{err:?}"
    );

    spec = sample_spec(&c);
    spec.extra_specs = json!({"kernel": "/boot/vmlinuz"})
        .as_object()
        .unwrap()
        .clone();
    let err = provider.validate_pool(&spec).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidSpec(m) if m.contains("kernel_dirs")),
        "{err:?}"
    );

    spec = sample_spec(&c);
    spec.os_type = hangar_core::OsType::Windows;
    let err = provider.validate_pool(&spec).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidSpec(m)
            if m.contains("os_type windows") && m.contains("external")),
        "a Windows pool is refused at pool add, saying where it can go: {err:?}"
    );

    spec = sample_spec(&c);
    spec.image = "missing.qcow2".into();
    let err = provider.validate_pool(&spec).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidSpec(m) if m.contains("missing.qcow2")),
        "{err:?}"
    );

    // Bad specs fail create before anything is made.
    let n = name("bad");
    let mut bad = c.clone();
    bad.flavor = "huge".into();
    let req = sample_request(&n, ControllerId::new_random(), PoolId::new_random(), &bad);
    assert!(matches!(
        provider.create_instance(&req).await,
        Err(ProviderError::InvalidSpec(_))
    ));
    assert!(!host.domain_exists(&n));
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_libvirt_is_transient_and_not_fatal_at_startup() {
    let provider = LibvirtProvider::new(LibvirtProviderConfig {
        uri: "qemu+unix:///system?socket=/nonexistent/hangar-libvirt-sock".into(),
        ..Default::default()
    })
    .expect("new() does not connect");
    let err = provider.health().await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
    let gone = InstanceRef {
        name: InstanceName::parse("never").unwrap(),
        provider_id: None,
        controller_id: ControllerId::new_random(),
        pool_id: PoolId::new_random(),
    };
    let err = provider.delete_instance(&gone).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[test]
fn bad_settings_fail_new() {
    let err = LibvirtProvider::new(LibvirtProviderConfig {
        flavors: Default::default(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("flavors"), "{err}");
}
