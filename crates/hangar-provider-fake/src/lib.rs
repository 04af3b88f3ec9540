//! The `kind = "fake"` provider, so `hangard` can run demos, end-to-end tests
//! and benchmarks without making machines — and without linking test code.
//!
//! [`fake_provider::FakeProvider`] keeps instances in memory, with latency and
//! failure injection; [`runner_sim`] is what a freshly booted instance does
//! (fetch the JIT config, report status, go online at FakeGitHub), over real
//! HTTP. `hangar-testkit` re-exports both for tests.

pub mod fake_provider;
pub mod runner_sim;
