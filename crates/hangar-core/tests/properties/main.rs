//! Property tests of core's pure rules: the two status machines, label
//! matching and the scaling policy. Case counts are modest so the suite
//! stays quick on CI's two cores; `PROPTEST_CASES=N` runs N cases of each
//! property instead (e.g. `PROPTEST_CASES=20000 cargo test -p hangar-core
//! --test properties`).

use proptest::test_runner::Config;

mod matching;
mod policy;
mod state_machines;

/// The config each property runs with: `default_cases` cases unless
/// `PROPTEST_CASES` says otherwise.
fn config(default_cases: u32) -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = default_cases;
    }
    c
}
