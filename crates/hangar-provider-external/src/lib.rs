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
//! As in garm, a config without `interface_version` speaks v0.1.0, and
//! every `environment_variables` entry is a prefix.
//!
//! Decisions beyond garm's documentation:
//! - On v0.1.1, `ValidatePoolInfo` (pool add/update) and `GetVersion`
//!   (health) are asked; a provider answering garm-provider-common's
//!   "unknown GARM_COMMAND" is taken not to implement them (pool accepted,
//!   healthy). v0.1.0 providers are sent only the seven commands garm sends.
//! - Hangar renders no boot script for these providers
//!   (`renders_userdata` is false): they render their own, Windows
//!   included, from the bootstrap JSON.
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
