//! Identifier newtypes, so a pool id can never be passed where an entity id
//! is expected, and names are validated once, at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| NameError::NotAnId(s.to_owned()))
            }
        }
    };
}

uuid_id!(
    /// This Hangar installation. Every runner label and cloud tag carries it
    /// so cleanup only ever touches Hangar's own resources.
    ControllerId
);
uuid_id!(
    /// A repository, organization or enterprise Hangar serves.
    EntityId
);
uuid_id!(
    /// A pool of identical runners.
    PoolId
);
uuid_id!(
    /// A runner scale set (its jobs come from GitHub's message queue).
    ScaleSetId
);
uuid_id!(
    /// One running `hangard` process of a cluster sharing a database: it
    /// holds pools' leases (a new id every start).
    ReplicaId
);

/// A GitHub workflow job id. GitHub's ids exceed 2^31, so this is an `i64`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name {name:?} is longer than {max} characters")]
    TooLong { name: String, max: usize },
    #[error("name {name:?} contains {ch:?}; allowed are {allowed}")]
    BadChar {
        name: String,
        ch: char,
        allowed: &'static str,
    },
    #[error("{0:?} is not a valid id (expected a UUID)")]
    NotAnId(String),
}

/// The name of an instance (and of its GitHub runner and VM):
/// `<runner prefix>-<random suffix>`, lowercase ASCII letters, digits and `-`,
/// at most 63 characters so it is a valid hostname label everywhere.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceName(String);

impl InstanceName {
    pub const MAX_LEN: usize = 63;
    const ALLOWED: &'static str = "lowercase ASCII letters, digits and '-'";

    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(NameError::TooLong {
                name: s.to_owned(),
                max: Self::MAX_LEN,
            });
        }
        if let Some(ch) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar {
                name: s.to_owned(),
                ch,
                allowed: Self::ALLOWED,
            });
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(NameError::BadChar {
                name: s.to_owned(),
                ch: '-',
                allowed: "'-' only between other characters",
            });
        }
        Ok(Self(s.to_owned()))
    }

    /// Builds `<prefix>-<suffix>`; the suffix comes from the caller's random
    /// source (core does no I/O, randomness included).
    pub fn generate(prefix: &crate::pool::RunnerPrefix, suffix: &str) -> Result<Self, NameError> {
        Self::parse(&format!(
            "{}-{}",
            prefix.as_str(),
            suffix.to_ascii_lowercase()
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InstanceName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<InstanceName> for String {
    fn from(value: InstanceName) -> Self {
        value.0
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceName({})", self.0)
    }
}

/// The name of an endpoint, a set of credentials or a provider: what an
/// operator types on the command line. ASCII letters, digits, `-`, `_`, `.`;
/// at most 64 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceName(String);

impl ResourceName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(NameError::TooLong {
                name: s.to_owned(),
                max: Self::MAX_LEN,
            });
        }
        if let Some(ch) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(NameError::BadChar {
                name: s.to_owned(),
                ch,
                allowed: "ASCII letters, digits, '-', '_' and '.'",
            });
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ResourceName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ResourceName> for String {
    fn from(value: ResourceName) -> Self {
        value.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceName({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_hostname_safe() {
        assert!(InstanceName::parse("hangar-abc123").is_ok());
        assert_eq!(InstanceName::parse(""), Err(NameError::Empty));
        assert!(matches!(
            InstanceName::parse("Hangar-1"),
            Err(NameError::BadChar { ch: 'H', .. })
        ));
        assert!(InstanceName::parse("a_b").is_err());
        assert!(InstanceName::parse("-a").is_err());
        assert!(InstanceName::parse("a-").is_err());
        assert!(InstanceName::parse(&"a".repeat(64)).is_err());
        assert!(InstanceName::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn resource_names() {
        assert!(ResourceName::parse("azure_external").is_ok());
        assert!(ResourceName::parse("github.com").is_ok());
        assert!(ResourceName::parse("has space").is_err());
        assert!(ResourceName::parse("").is_err());
    }

    #[test]
    fn ids_parse_and_reject() {
        let id = PoolId::new_random();
        assert_eq!(id.to_string().parse::<PoolId>().unwrap(), id);
        assert!(matches!(
            "nope".parse::<PoolId>(),
            Err(NameError::NotAnId(_))
        ));
    }

    #[test]
    fn job_ids_above_i32() {
        let id: JobId = serde_json::from_str("29679449555").unwrap();
        assert_eq!(id.0, 29_679_449_555);
    }
}
