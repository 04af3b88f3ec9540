//! The in-process `FakeProvider` (hangar-provider-fake) against the
//! conformance suite, and its failure injection; here rather than in its own
//! crate, because the suite lives in testkit and the fake must not depend on
//! testkit.

use hangar_core::{ControllerId, PoolId, Provider, ProviderError};
use hangar_testkit::conformance::{ConformanceCase, sample_request};
use hangar_testkit::fake_provider::FakeProvider;

hangar_testkit::conformance_tests!(
    mod conformance,
    ConformanceCase::default(),
    FakeProvider::default()
);

#[tokio::test]
async fn injected_failures_come_back_in_order() {
    let p = FakeProvider::default();
    p.fail_next_creates(1, ProviderError::Transient("boom".into()));
    let req = sample_request(
        "hangar-a",
        ControllerId::new_random(),
        PoolId::new_random(),
        &ConformanceCase::default(),
    );
    assert_eq!(
        p.create_instance(&req).await.unwrap_err(),
        ProviderError::Transient("boom".into())
    );
    assert!(p.create_instance(&req).await.is_ok());
    assert_eq!(p.create_count(), 1);
}
