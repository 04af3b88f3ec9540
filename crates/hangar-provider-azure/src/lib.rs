//! Hangar's Azure provider: one VM per job — a confidential VM when the
//! pool asks for it — with its NIC, optional public IP and OS disk, all
//! tagged with the controller and pool ids and all removed afterwards.
//!
//! It speaks the ARM REST API directly ([`arm`]) with tokens from any
//! `azure_core` `TokenCredential` ([`credential`]); every Azure type stays
//! inside this crate, behind the core `Provider` trait. The daemon embeds
//! [`AzureProviderConfig`] as `[provider.azure]` and builds the provider
//! with [`AzureProvider::new`], which never calls Azure.

pub mod arm;
pub mod body;
pub mod config;
pub mod credential;
mod provider;
pub mod specs;

pub use config::{AzureProviderConfig, ConfigError, CredentialConfig};
pub use credential::ResolvedSecrets;
pub use provider::{AzureProvider, NewError};

/// The credential trait tests and embedders implement.
pub use azure_core::auth::{AccessToken, TokenCredential};
