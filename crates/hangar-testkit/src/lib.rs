//! Test doubles for Hangar that behave like the real thing.
//!
//! Nothing here is a mock: [`fake_provider::FakeProvider`] keeps instances in
//! memory and can "boot" them by walking through the real bootstrap calls
//! ([`runner_sim`]) — both live in `hangar-provider-fake`, since `hangard`'s
//! `kind = "fake"` uses them, and are re-exported here for tests; the fake
//! servers listen on loopback and speak HTTP:
//! [`fake_github::FakeGitHub`] is GitHub's REST API and webhooks,
//! [`fake_actions::FakeActions`] the Actions service behind runner scale
//! sets (sessions, the message queue, JIT runners), and
//! [`fake_arm::FakeArm`] is Azure Resource Manager (VMs, NICs, public IPs,
//! disks and their long-running operations) for the Azure provider. The
//! [`conformance`] suite is what every `Provider` implementation must pass;
//! [`cloud_init`] runs the standard validator on rendered user-data.

pub mod cloud_init;
pub mod conformance;
pub mod fake_actions;
pub mod fake_arm;
pub mod fake_github;
pub mod sample;

pub use hangar_provider_fake::{fake_provider, runner_sim};

/// For [`conformance_tests!`]: the trait its tests name, so a caller need not
/// depend on `hangar-core` to use the macro.
#[doc(hidden)]
pub use hangar_core::Provider as __Provider;
