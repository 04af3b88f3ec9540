//! Pools: sets of identical runners that serve jobs whose labels they carry.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ControllerId, EntityId, PoolId, ResourceName};
use crate::labels::{Label, Labels};
use crate::provider::ProxySettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OsType {
    #[default]
    Linux,
    Windows,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OsArch {
    #[default]
    Amd64,
    Arm64,
    Arm,
}

impl OsType {
    pub fn as_str(self) -> &'static str {
        match self {
            OsType::Linux => "linux",
            OsType::Windows => "windows",
        }
    }
}

impl OsArch {
    pub fn as_str(self) -> &'static str {
        match self {
            OsArch::Amd64 => "amd64",
            OsArch::Arm64 => "arm64",
            OsArch::Arm => "arm",
        }
    }

    /// The architecture name GitHub's runner downloads use.
    pub fn github_name(self) -> &'static str {
        match self {
            OsArch::Amd64 => "x64",
            OsArch::Arm64 => "arm64",
            OsArch::Arm => "arm",
        }
    }
}

impl FromStr for OsType {
    type Err = PoolSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "linux" => Ok(OsType::Linux),
            "windows" => Ok(OsType::Windows),
            _ => Err(PoolSpecError::OsType(s.to_owned())),
        }
    }
}

impl FromStr for OsArch {
    type Err = PoolSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "amd64" | "x64" | "x86_64" => Ok(OsArch::Amd64),
            "arm64" | "aarch64" => Ok(OsArch::Arm64),
            "arm" => Ok(OsArch::Arm),
            _ => Err(PoolSpecError::OsArch(s.to_owned())),
        }
    }
}

/// The first part of every runner name in a pool.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunnerPrefix(String);

impl RunnerPrefix {
    /// Leaves room for `-` and a 12-character suffix within a 63-character
    /// hostname.
    pub const MAX_LEN: usize = 50;

    pub fn parse(s: &str) -> Result<Self, PoolSpecError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(PoolSpecError::RunnerPrefix(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RunnerPrefix {
    fn default() -> Self {
        Self("hangar".to_owned())
    }
}

impl TryFrom<String> for RunnerPrefix {
    type Error = PoolSpecError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<RunnerPrefix> for String {
    fn from(value: RunnerPrefix) -> Self {
        value.0
    }
}

impl fmt::Debug for RunnerPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for RunnerPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolSpecError {
    #[error("max_runners ({max}) must be at least min_idle_runners ({min})")]
    MaxBelowMinIdle { min: u32, max: u32 },
    #[error("tags must not be empty: a pool needs at least one label to match jobs against")]
    NoTags,
    #[error("extra_specs must be a JSON object, got {0}")]
    ExtraSpecsNotObject(&'static str),
    #[error(
        "runner prefix {0:?} is invalid: use 1-50 lowercase letters, digits and '-', starting with a letter"
    )]
    RunnerPrefix(String),
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("runner_bootstrap_timeout must be between 1 and 1440 minutes, got {0}")]
    BootstrapTimeout(u32),
    #[error("unknown os_type {0:?} (expected linux or windows)")]
    OsType(String),
    #[error("unknown os_arch {0:?} (expected amd64, arm64 or arm)")]
    OsArch(String),
    #[error(
        "extra_specs.proxy must be {{\"http_proxy\", \"https_proxy\", \"no_proxy\"}} strings: {0}"
    )]
    Proxy(String),
}

/// The extra-specs key Hangar keeps for itself (a pool's proxy settings);
/// providers never see it.
pub const RESERVED_EXTRA_SPEC: &str = "proxy";

/// The label every runner of a controller carries, so clean-up only ever
/// touches that controller's runners.
pub fn controller_label(id: ControllerId) -> String {
    format!("hangar-controller-id:{id}")
}

/// The label that ties a runner to its pool.
pub fn pool_label(id: PoolId) -> String {
    format!("hangar-pool-id:{id}")
}

/// What an operator asks of a pool. Construct, then [`PoolSpec::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub provider_name: ResourceName,
    pub image: String,
    pub flavor: String,
    pub tags: Labels,
    pub os_type: OsType,
    pub os_arch: OsArch,
    pub min_idle_runners: u32,
    pub max_runners: u32,
    pub runner_prefix: RunnerPrefix,
    /// Minutes an instance may take from creation to an idle runner.
    pub runner_bootstrap_timeout: u32,
    pub extra_specs: serde_json::Map<String, serde_json::Value>,
    /// GitHub runner group name; `None` is the default group.
    pub runner_group: Option<String>,
    /// Higher serves first when several pools match a job.
    pub priority: u32,
    pub enabled: bool,
}

impl PoolSpec {
    pub const DEFAULT_BOOTSTRAP_TIMEOUT_MIN: u32 = 20;
    const MAX_FIELD: usize = 1024;

    pub fn validate(&self) -> Result<(), PoolSpecError> {
        if self.max_runners < self.min_idle_runners {
            return Err(PoolSpecError::MaxBelowMinIdle {
                min: self.min_idle_runners,
                max: self.max_runners,
            });
        }
        if self.tags.is_empty() {
            return Err(PoolSpecError::NoTags);
        }
        for (field, value) in [("image", &self.image), ("flavor", &self.flavor)] {
            if value.trim().is_empty() {
                return Err(PoolSpecError::Empty { field });
            }
            if value.len() > Self::MAX_FIELD {
                return Err(PoolSpecError::TooLong {
                    field,
                    max: Self::MAX_FIELD,
                });
            }
        }
        if let Some(group) = &self.runner_group
            && group.trim().is_empty()
        {
            return Err(PoolSpecError::Empty {
                field: "runner_group",
            });
        }
        if !(1..=1440).contains(&self.runner_bootstrap_timeout) {
            return Err(PoolSpecError::BootstrapTimeout(
                self.runner_bootstrap_timeout,
            ));
        }
        self.proxy()?;
        Ok(())
    }

    /// Extra specs as providers see them: without Hangar's own key.
    pub fn provider_extra_specs(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut s = self.extra_specs.clone();
        s.remove(RESERVED_EXTRA_SPEC);
        s
    }

    /// The pool's own proxy settings (`extra_specs.proxy`); none when unset.
    pub fn proxy(&self) -> Result<ProxySettings, PoolSpecError> {
        match self.extra_specs.get(RESERVED_EXTRA_SPEC) {
            None => Ok(ProxySettings::default()),
            Some(v) => {
                ProxySettings::deserialize(v).map_err(|e| PoolSpecError::Proxy(e.to_string()))
            }
        }
    }

    /// Turns a free JSON value into extra specs, refusing anything but an
    /// object (`null` counts as empty).
    pub fn extra_specs_from_value(
        value: serde_json::Value,
    ) -> Result<serde_json::Map<String, serde_json::Value>, PoolSpecError> {
        use serde_json::Value;
        match value {
            Value::Object(map) => Ok(map),
            Value::Null => Ok(serde_json::Map::new()),
            Value::Bool(_) => Err(PoolSpecError::ExtraSpecsNotObject("a boolean")),
            Value::Number(_) => Err(PoolSpecError::ExtraSpecsNotObject("a number")),
            Value::String(_) => Err(PoolSpecError::ExtraSpecsNotObject("a string")),
            Value::Array(_) => Err(PoolSpecError::ExtraSpecsNotObject("an array")),
        }
    }
}

/// A stored pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub id: PoolId,
    pub entity_id: EntityId,
    pub spec: PoolSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Pool {
    /// The labels a runner of this pool registers with: the pool's tags
    /// plus the controller and pool labels the sweep recognises.
    pub fn runner_labels(&self, controller: ControllerId) -> Labels {
        let mut labels = self.spec.tags.clone();
        for l in [controller_label(controller), pool_label(self.id)] {
            labels.insert(Label::parse(&l).expect("controller and pool labels are valid"));
        }
        labels
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> PoolSpec {
        PoolSpec {
            provider_name: ResourceName::parse("fake").unwrap(),
            image: "ubuntu-22.04".into(),
            flavor: "small".into(),
            tags: Labels::parse_list("self-hosted,linux").unwrap(),
            os_type: OsType::Linux,
            os_arch: OsArch::Amd64,
            min_idle_runners: 0,
            max_runners: 4,
            runner_prefix: RunnerPrefix::default(),
            runner_bootstrap_timeout: 20,
            extra_specs: serde_json::Map::new(),
            runner_group: None,
            priority: 0,
            enabled: true,
        }
    }

    #[test]
    fn valid_spec_passes() {
        spec().validate().unwrap();
    }

    #[test]
    fn max_below_min_idle() {
        let mut s = spec();
        s.min_idle_runners = 5;
        s.max_runners = 4;
        assert_eq!(
            s.validate(),
            Err(PoolSpecError::MaxBelowMinIdle { min: 5, max: 4 })
        );
        s.max_runners = 5;
        assert!(s.validate().is_ok());
    }

    #[test]
    fn tags_required() {
        let mut s = spec();
        s.tags = Labels::default();
        assert_eq!(s.validate(), Err(PoolSpecError::NoTags));
    }

    #[test]
    fn image_and_flavor_required() {
        let mut s = spec();
        s.image = " ".into();
        assert_eq!(s.validate(), Err(PoolSpecError::Empty { field: "image" }));
        let mut s = spec();
        s.flavor = String::new();
        assert_eq!(s.validate(), Err(PoolSpecError::Empty { field: "flavor" }));
    }

    #[test]
    fn bootstrap_timeout_bounds() {
        let mut s = spec();
        s.runner_bootstrap_timeout = 0;
        assert!(s.validate().is_err());
        s.runner_bootstrap_timeout = 1441;
        assert!(s.validate().is_err());
    }

    #[test]
    fn extra_specs_must_be_object() {
        use serde_json::json;
        assert!(PoolSpec::extra_specs_from_value(json!({"confidential": true})).is_ok());
        assert!(
            PoolSpec::extra_specs_from_value(json!(null))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            PoolSpec::extra_specs_from_value(json!([1])),
            Err(PoolSpecError::ExtraSpecsNotObject("an array"))
        );
        assert_eq!(
            PoolSpec::extra_specs_from_value(json!("x")),
            Err(PoolSpecError::ExtraSpecsNotObject("a string"))
        );
    }

    #[test]
    fn runner_prefix_charset() {
        assert!(RunnerPrefix::parse("hangar").is_ok());
        assert!(RunnerPrefix::parse("ci-runner2").is_ok());
        assert!(RunnerPrefix::parse("").is_err());
        assert!(RunnerPrefix::parse("2abc").is_err());
        assert!(RunnerPrefix::parse("Abc").is_err());
        assert!(RunnerPrefix::parse("a_b").is_err());
        assert!(RunnerPrefix::parse("abc-").is_err());
        assert!(RunnerPrefix::parse(&"a".repeat(51)).is_err());
    }

    #[test]
    fn os_parsing() {
        assert_eq!("Linux".parse::<OsType>().unwrap(), OsType::Linux);
        assert_eq!("x86_64".parse::<OsArch>().unwrap(), OsArch::Amd64);
        assert!("plan9".parse::<OsType>().is_err());
    }
}
