//! GitHub, as Hangar talks to it.
//!
//! [`webhook`] checks deliveries' signatures and holds the payload types
//! intake parses (only after the signature is good). [`GitHubForge`] is the
//! `Forge` implementation: JIT configs, registration tokens, runners, job
//! re-checks, with per-credentials rate-limit handling ([`limits`]).
//! [`routing`] decides which entity a verified delivery is about. The HTTP
//! transport under octocrab (proxies, the endpoint's CA bundle) is
//! `transport`. [`ActionsClient`] is the `ActionsService` (runner scale
//! sets) on the Actions service, over the same transport.

pub mod actions;
pub mod config;
pub mod forge;
pub mod limits;
pub mod routing;
mod transport;
pub mod webhook;

pub use actions::ActionsClient;
pub use config::GitHubConfig;
pub use forge::{CredentialStats, GitHubForge};
