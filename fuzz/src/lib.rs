//! Fuzz targets: each takes arbitrary bytes, feeds them to a parser Hangar
//! exposes to the outside world, and panics when a property breaks. Both
//! engines call these same functions: `cargo test -p hangar-fuzz` runs them
//! on the seed corpus, every kept regression and a bounded number of random
//! and mutated inputs (stable toolchain); `cargo xtask fuzz` runs them under
//! libFuzzer for as long as asked (`fuzz/libfuzzer`, nightly).
//!
//! A target never assumes its input is well-formed: returning early on
//! input it cannot use is fine, panicking is a finding.

pub mod api;
pub mod config;
pub mod webhook;

/// A fuzz target: arbitrary bytes in, a panic when a property breaks.
pub type Target = fn(&[u8]);

/// The targets by name, as `cargo xtask fuzz TARGET` and the corpus
/// folders (`fuzz/corpus/<name>/`, `fuzz/regressions/<name>/`) call them.
pub const TARGETS: [(&str, Target); 3] = [
    ("webhook", webhook::run),
    ("config", config::run),
    ("api", api::run),
];
