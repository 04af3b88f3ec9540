//! Test doubles for Hangar that behave like the real thing.
//!
//! Nothing here is a mock: [`fake_provider::FakeProvider`] keeps instances in
//! memory and can "boot" them by walking through the real bootstrap calls
//! ([`runner_sim`]); the fake servers listen on loopback and speak HTTP. The
//! [`conformance`] suite is what every `Provider` implementation must pass.

pub mod conformance;
pub mod fake_github;
pub mod fake_provider;
pub mod runner_sim;
