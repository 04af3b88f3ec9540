//! Who Hangar works for: GitHub endpoints, the credentials used there, and
//! the repositories, organizations and enterprises runners are registered to.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{EntityId, ResourceName};
use crate::secret::Secret;

/// A GitHub or GitHub Enterprise Server instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: ResourceName,
    pub description: String,
    /// Web URL, e.g. `https://github.com` or `https://ghes.example.com`.
    pub base_url: String,
    /// REST API URL, e.g. `https://api.github.com` or `https://HOST/api/v3`.
    pub api_base_url: String,
    /// PEM bundle to trust for this endpoint (GHES with a private CA).
    pub ca_bundle: Option<String>,
}

/// How Hangar authenticates to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "auth_type", rename_all = "snake_case")]
pub enum CredentialsAuth {
    Pat {
        token: Secret,
    },
    App {
        app_id: i64,
        installation_id: i64,
        /// PEM-encoded RSA private key of the App.
        private_key: Secret,
    },
}

impl CredentialsAuth {
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialsAuth::Pat { .. } => "pat",
            CredentialsAuth::App { .. } => "app",
        }
    }
}

/// Named credentials bound to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub name: ResourceName,
    pub description: String,
    pub endpoint: ResourceName,
    pub auth: CredentialsAuth,
    /// Secret of a GitHub App's own webhook (one hook for every installation).
    pub app_webhook_secret: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Repository,
    Organization,
    Enterprise,
}

impl EntityKind {
    pub const ALL: [EntityKind; 3] = [
        EntityKind::Repository,
        EntityKind::Organization,
        EntityKind::Enterprise,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Repository => "repository",
            EntityKind::Organization => "organization",
            EntityKind::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntityKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntityKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown entity kind {s:?}"))
    }
}

/// Where runners are registered on GitHub.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntityScope {
    Repository { owner: String, name: String },
    Organization { name: String },
    Enterprise { slug: String },
}

impl EntityScope {
    pub fn kind(&self) -> EntityKind {
        match self {
            EntityScope::Repository { .. } => EntityKind::Repository,
            EntityScope::Organization { .. } => EntityKind::Organization,
            EntityScope::Enterprise { .. } => EntityKind::Enterprise,
        }
    }

    /// This scope as a [`ScopeRef`], to compare with or look up by one.
    pub fn as_scope_ref(&self) -> ScopeRef<'_> {
        match self {
            EntityScope::Repository { owner, name } => ScopeRef::Repository { owner, name },
            EntityScope::Organization { name } => ScopeRef::Organization { name },
            EntityScope::Enterprise { slug } => ScopeRef::Enterprise { slug },
        }
    }

    /// `owner/name`, the organization or the enterprise slug.
    pub fn display_name(&self) -> String {
        match self {
            EntityScope::Repository { owner, name } => format!("{owner}/{name}"),
            EntityScope::Organization { name } => name.clone(),
            EntityScope::Enterprise { slug } => slug.clone(),
        }
    }

    /// Validates the GitHub names: non-empty, no `/`, no whitespace, at most
    /// 100 characters.
    pub fn validate(&self) -> Result<(), ScopeNameError> {
        let parts: &[(&'static str, &str)] = match self {
            EntityScope::Repository { owner, name } => &[("owner", owner), ("name", name)],
            EntityScope::Organization { name } => &[("name", name)],
            EntityScope::Enterprise { slug } => &[("name", slug)],
        };
        for &(field, value) in parts {
            if value.is_empty() {
                return Err(ScopeNameError::Empty { field });
            }
            if value.len() > 100 {
                return Err(ScopeNameError::TooLong { field });
            }
            if let Some(c) = value
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            {
                return Err(ScopeNameError::BadChar {
                    field,
                    value: value.to_owned(),
                    c,
                });
            }
        }
        Ok(())
    }
}

/// An [`EntityScope`] whose names are borrowed (from a delivery's payload),
/// so routing a delivery copies no string. GitHub names compare without
/// regard to ASCII case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeRef<'a> {
    Repository { owner: &'a str, name: &'a str },
    Organization { name: &'a str },
    Enterprise { slug: &'a str },
}

impl ScopeRef<'_> {
    pub fn kind(&self) -> EntityKind {
        match self {
            ScopeRef::Repository { .. } => EntityKind::Repository,
            ScopeRef::Organization { .. } => EntityKind::Organization,
            ScopeRef::Enterprise { .. } => EntityKind::Enterprise,
        }
    }

    /// Whether this names `scope`, as GitHub compares names.
    pub fn is(&self, scope: &EntityScope) -> bool {
        match (*self, scope) {
            (
                ScopeRef::Repository { owner, name },
                EntityScope::Repository { owner: o, name: n },
            ) => owner.eq_ignore_ascii_case(o) && name.eq_ignore_ascii_case(n),
            (ScopeRef::Organization { name }, EntityScope::Organization { name: n }) => {
                name.eq_ignore_ascii_case(n)
            }
            (ScopeRef::Enterprise { slug }, EntityScope::Enterprise { slug: s }) => {
                slug.eq_ignore_ascii_case(s)
            }
            _ => false,
        }
    }
}

/// Why a repository, organization or enterprise name is not one GitHub
/// accepts; callers refuse the request that carried it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeNameError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is longer than 100 characters")]
    TooLong { field: &'static str },
    #[error("{field} {value:?} contains {c:?}; GitHub names use letters, digits, '-', '_' and '.'")]
    BadChar {
        field: &'static str,
        value: String,
        c: char,
    },
}

/// A repository, organization or enterprise served by Hangar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    pub id: EntityId,
    pub scope: EntityScope,
    pub credentials_name: ResourceName,
    /// Its credentials' endpoint: the same scope may be registered once per
    /// endpoint (github.com and a GHES).
    pub endpoint: ResourceName,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_validation() {
        let ok = EntityScope::Repository {
            owner: "mkulke".into(),
            name: "garm-playground".into(),
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.display_name(), "mkulke/garm-playground");
        let bad = EntityScope::Repository {
            owner: "a/b".into(),
            name: "x".into(),
        };
        assert!(bad.validate().unwrap_err().to_string().contains("'/'"));
        assert!(
            EntityScope::Organization {
                name: String::new()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn credentials_never_print_secrets() {
        let c = CredentialsAuth::Pat {
            token: Secret::new("ghp_abc"),
        };
        assert!(!format!("{c:?}").contains("ghp_abc"));
    }
}
