//! Runner scale sets: GitHub's other way of handing Hangar jobs. A scale
//! set is named by the `runs-on` value workflows use; its jobs arrive
//! through the Actions service's message queue instead of webhooks.
//!
//! Each scale set drives exactly one pool (the pool row holds the provider
//! settings and the engine reconciles it like any pool), so the provider
//! side is validated by [`PoolSpec::validate`]: [`ScaleSetSpec::pool_spec`]
//! is that pool.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::actions::ScaleSetStatistics;
use crate::ids::{EntityId, PoolId, ResourceName, ScaleSetId};
use crate::labels::{Label, LabelError, Labels};
use crate::pool::{OsArch, OsType, PoolSpec, PoolSpecError, RunnerPrefix};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaleSetSpecError {
    #[error("scale set name: {0}")]
    Name(LabelError),
    #[error(transparent)]
    Pool(#[from] PoolSpecError),
}

/// What an operator asks of a scale set. Construct, then
/// [`ScaleSetSpec::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleSetSpec {
    /// The `runs-on` value; the only label its runners answer to.
    pub name: Label,
    /// GitHub runner group name; `None` is the default group.
    pub runner_group: Option<String>,
    pub provider_name: ResourceName,
    pub image: String,
    pub flavor: String,
    pub os_type: OsType,
    pub os_arch: OsArch,
    pub min_idle_runners: u32,
    pub max_runners: u32,
    pub runner_prefix: RunnerPrefix,
    /// Minutes an instance may take from creation to an idle runner.
    pub runner_bootstrap_timeout: u32,
    pub extra_specs: serde_json::Map<String, serde_json::Value>,
    pub enabled: bool,
}

impl ScaleSetSpec {
    /// A name is a runner label (it is what `runs-on` names).
    pub fn parse_name(s: &str) -> Result<Label, ScaleSetSpecError> {
        Label::parse(s).map_err(ScaleSetSpecError::Name)
    }

    pub fn validate(&self) -> Result<(), ScaleSetSpecError> {
        // The label was parsed; parse again so a spec built from stored or
        // deserialised parts cannot slip an invalid one through.
        Self::parse_name(self.name.as_str())?;
        self.pool_spec().validate()?;
        Ok(())
    }

    /// The pool that carries this scale set's runners: tagged with the
    /// scale set's name only, never matched to a webhook's job.
    pub fn pool_spec(&self) -> PoolSpec {
        let mut tags = Labels::default();
        tags.insert(self.name.clone());
        PoolSpec {
            provider_name: self.provider_name.clone(),
            image: self.image.clone(),
            flavor: self.flavor.clone(),
            tags,
            os_type: self.os_type,
            os_arch: self.os_arch,
            min_idle_runners: self.min_idle_runners,
            max_runners: self.max_runners,
            runner_prefix: self.runner_prefix.clone(),
            runner_bootstrap_timeout: self.runner_bootstrap_timeout,
            extra_specs: self.extra_specs.clone(),
            runner_group: self.runner_group.clone(),
            priority: 0,
            enabled: self.enabled,
        }
    }

    /// The spec of a scale set named `name` whose pool is `pool`.
    pub fn from_pool(name: Label, pool: &PoolSpec) -> Self {
        Self {
            name,
            runner_group: pool.runner_group.clone(),
            provider_name: pool.provider_name.clone(),
            image: pool.image.clone(),
            flavor: pool.flavor.clone(),
            os_type: pool.os_type,
            os_arch: pool.os_arch,
            min_idle_runners: pool.min_idle_runners,
            max_runners: pool.max_runners,
            runner_prefix: pool.runner_prefix.clone(),
            runner_bootstrap_timeout: pool.runner_bootstrap_timeout,
            extra_specs: pool.extra_specs.clone(),
            enabled: pool.enabled,
        }
    }
}

/// How a scale set stands with GitHub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScaleSetState {
    #[default]
    Active,
    /// The Actions service answered 404 for it: its listener stopped.
    DeletedOnGithub,
    /// Something else stops it; `last_error` says what.
    Error,
}

impl ScaleSetState {
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleSetState::Active => "active",
            ScaleSetState::DeletedOnGithub => "deleted_on_github",
            ScaleSetState::Error => "error",
        }
    }
}

impl fmt::Display for ScaleSetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scale set state {0:?} (expected active, deleted_on_github or error)")]
pub struct UnknownScaleSetState(pub String);

impl FromStr for ScaleSetState {
    type Err = UnknownScaleSetState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(ScaleSetState::Active),
            "deleted_on_github" => Ok(ScaleSetState::DeletedOnGithub),
            "error" => Ok(ScaleSetState::Error),
            other => Err(UnknownScaleSetState(other.to_owned())),
        }
    }
}

/// A stored scale set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleSet {
    pub id: ScaleSetId,
    pub entity_id: EntityId,
    /// The pool its runners belong to.
    pub pool_id: PoolId,
    pub spec: ScaleSetSpec,
    /// The Actions service's id, once it exists there.
    pub github_id: Option<i64>,
    pub runner_group_id: Option<i64>,
    pub state: ScaleSetState,
    pub last_error: Option<String>,
    /// The newest queue message applied.
    pub last_message_id: i64,
    /// The counters of that message.
    pub statistics: Option<ScaleSetStatistics>,
    /// min(max_runners, min_idle_runners + assigned jobs) as of that
    /// message: the engine's demand for the pool.
    pub desired_runners: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ScaleSetSpec {
        ScaleSetSpec::from_pool(
            ScaleSetSpec::parse_name("lab-ubuntu").unwrap(),
            &crate::pool::tests::spec(),
        )
    }

    #[test]
    fn valid_spec_passes_and_its_pool_answers_only_to_the_name() {
        let s = spec();
        s.validate().unwrap();
        let pool = s.pool_spec();
        assert_eq!(pool.tags.to_vec(), vec!["lab-ubuntu".to_owned()]);
        assert_eq!(pool.priority, 0);
        assert_eq!(ScaleSetSpec::from_pool(s.name.clone(), &pool), s);
    }

    #[test]
    fn name_must_be_a_label() {
        assert!(ScaleSetSpec::parse_name("").is_err());
        assert!(ScaleSetSpec::parse_name("two words").is_err());
        assert!(ScaleSetSpec::parse_name("a,b").is_err());
        assert!(ScaleSetSpec::parse_name(&"x".repeat(300)).is_err());
    }

    #[test]
    fn pool_rules_apply() {
        let mut s = spec();
        s.min_idle_runners = 3;
        s.max_runners = 2;
        assert_eq!(
            s.validate(),
            Err(ScaleSetSpecError::Pool(PoolSpecError::MaxBelowMinIdle {
                min: 3,
                max: 2
            }))
        );
        let mut s = spec();
        s.image = " ".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.runner_group = Some(String::new());
        assert!(s.validate().is_err());
    }

    #[test]
    fn states_round_trip() {
        for st in [
            ScaleSetState::Active,
            ScaleSetState::DeletedOnGithub,
            ScaleSetState::Error,
        ] {
            assert_eq!(st.as_str().parse::<ScaleSetState>().unwrap(), st);
        }
        assert!("gone".parse::<ScaleSetState>().is_err());
    }
}
