//! Hangar's libvirt provider: one fresh VM per job, made from a qcow2
//! overlay on a base volume plus a NoCloud seed carrying the boot script,
//! and unmade completely afterwards.
//!
//! The daemon embeds [`LibvirtProviderConfig`] as `[provider.libvirt]` and
//! builds the provider with [`LibvirtProvider::new`], which never connects:
//! libvirt may be down at startup, and `health()` says so.

pub mod config;
mod conn;
pub mod error;
mod provider;
pub mod seed;
pub mod specs;
pub mod xml;

pub use config::{ConfigError, DomainType, Flavor, LibvirtProviderConfig, NetworkSpec};
pub use error::LibvirtError;
pub use provider::LibvirtProvider;
pub use specs::SpecError;
