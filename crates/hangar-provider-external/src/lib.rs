//! Hangar's external provider: any executable that speaks garm's external
//! provider interface (v0.1.0 or v0.1.1) becomes a [`hangar_core::Provider`].
//!
//! Each operation runs the executable once with `GARM_COMMAND` and the other
//! `GARM_*` variables in an otherwise empty environment (plus an allow-list
//! and the proxy variables), the bootstrap JSON on stdin for
//! `CreateInstance`, and the instance JSON read back from stdout. Calls are
//! bounded in number and time; a timed-out call takes its whole process
//! group with it. Exit code 30 means "not found".
//!
//! Decisions beyond garm's documentation:
//! - `ValidatePoolInfo` also gets a token-less bootstrap document (image,
//!   flavor, OS, labels, extra specs) on stdin; providers that ignore stdin
//!   are unaffected.
//! - Instances a provider lists for another pool or controller (when its
//!   JSON says so) are dropped.
//! - A failing call maps to `Transient` (retry with backoff) unless it
//!   exits 30 (`NotFound`), mentions quota (`Quota`), is a pool validation
//!   (`InvalidSpec`), or the executable cannot be run at all (`Fatal`).
//!   Output that is not the expected JSON is `Fatal`.

pub mod config;
mod exec;
pub mod provider;
pub mod wire;

pub use config::{ExternalProviderConfig, InterfaceVersion};
pub use exec::GarmCommand;
pub use provider::{EXIT_DUPLICATE, EXIT_NOT_FOUND, ExternalError, ExternalProvider};
