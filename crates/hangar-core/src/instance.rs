//! Instances (one runner VM each) and the two state machines that govern them.
//!
//! The transition tables below are the only definition of what may follow
//! what; the store refuses any status change they do not allow, inside the
//! same transaction that writes it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{InstanceName, JobId, PoolId};

/// Lifecycle of the VM (or container) behind a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Recorded and counted against capacity; the provider has not been asked yet.
    PendingCreate,
    /// The provider's create call is under way.
    Creating,
    Running,
    /// Create failed or the provider lost it; retried or deleted from here.
    Error,
    /// Wanted gone; the runner is removed from GitHub before the VM.
    PendingDelete,
    /// The provider's delete call is under way.
    Deleting,
    /// Gone from the provider; the row stays a while as history.
    Deleted,
}

/// Lifecycle of the GitHub runner process inside an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerStatus {
    Pending,
    Installing,
    Idle,
    Active,
    Terminated,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {machine} transition {from} -> {to}")]
pub struct TransitionError {
    pub machine: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}

impl InstanceStatus {
    pub const ALL: [InstanceStatus; 7] = [
        InstanceStatus::PendingCreate,
        InstanceStatus::Creating,
        InstanceStatus::Running,
        InstanceStatus::Error,
        InstanceStatus::PendingDelete,
        InstanceStatus::Deleting,
        InstanceStatus::Deleted,
    ];

    /// The transition table: every status a given status may move to.
    pub fn successors(self) -> &'static [InstanceStatus] {
        use InstanceStatus::*;
        match self {
            // Not yet handed to the provider: it may still be called off.
            PendingCreate => &[Creating, PendingDelete],
            Creating => &[Running, Error],
            // A running VM can be lost or crash (error) or be retired.
            Running => &[PendingDelete, Error],
            // Retry the create, or give up and clean up.
            Error => &[PendingCreate, PendingDelete],
            PendingDelete => &[Deleting],
            // A failed delete goes back to be retried.
            Deleting => &[Deleted, PendingDelete],
            Deleted => &[],
        }
    }

    pub fn can_transition_to(self, to: InstanceStatus) -> bool {
        self.successors().contains(&to)
    }

    pub fn check_transition(self, to: InstanceStatus) -> Result<(), TransitionError> {
        if self.can_transition_to(to) {
            Ok(())
        } else {
            Err(TransitionError {
                machine: "instance",
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }

    /// Whether the instance still (possibly) exists at the provider and so
    /// counts against the pool's `max_runners`.
    pub fn holds_capacity(self) -> bool {
        self != InstanceStatus::Deleted
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::PendingCreate => "pending_create",
            InstanceStatus::Creating => "creating",
            InstanceStatus::Running => "running",
            InstanceStatus::Error => "error",
            InstanceStatus::PendingDelete => "pending_delete",
            InstanceStatus::Deleting => "deleting",
            InstanceStatus::Deleted => "deleted",
        }
    }
}

impl RunnerStatus {
    pub const ALL: [RunnerStatus; 6] = [
        RunnerStatus::Pending,
        RunnerStatus::Installing,
        RunnerStatus::Idle,
        RunnerStatus::Active,
        RunnerStatus::Terminated,
        RunnerStatus::Failed,
    ];

    /// The transition table. Steps may be skipped forward (a job can start
    /// before the `idle` callback lands), never taken back.
    pub fn successors(self) -> &'static [RunnerStatus] {
        use RunnerStatus::*;
        match self {
            Pending => &[Installing, Idle, Active, Failed, Terminated],
            Installing => &[Idle, Active, Failed, Terminated],
            Idle => &[Active, Terminated],
            Active => &[Terminated],
            Failed => &[Terminated],
            Terminated => &[],
        }
    }

    pub fn can_transition_to(self, to: RunnerStatus) -> bool {
        self.successors().contains(&to)
    }

    pub fn check_transition(self, to: RunnerStatus) -> Result<(), TransitionError> {
        if self.can_transition_to(to) {
            Ok(())
        } else {
            Err(TransitionError {
                machine: "runner",
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }

    /// Whether the runner is still coming up (instance token valid for
    /// bootstrap calls only in these states).
    pub fn is_bootstrapping(self) -> bool {
        matches!(self, RunnerStatus::Pending | RunnerStatus::Installing)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunnerStatus::Pending => "pending",
            RunnerStatus::Installing => "installing",
            RunnerStatus::Idle => "idle",
            RunnerStatus::Active => "active",
            RunnerStatus::Terminated => "terminated",
            RunnerStatus::Failed => "failed",
        }
    }
}

macro_rules! str_enum_impls {
    ($t:ty, $what:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$t>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| format!("unknown {} {s:?}", $what))
            }
        }
    };
}

str_enum_impls!(InstanceStatus, "instance status");
str_enum_impls!(RunnerStatus, "runner status");

/// A stored instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub name: InstanceName,
    pub pool_id: PoolId,
    /// The provider's own id once created (VM UUID, ARM id, …).
    pub provider_id: Option<String>,
    pub status: InstanceStatus,
    pub runner_status: RunnerStatus,
    /// The GitHub runner id from the JIT config.
    pub runner_id: Option<i64>,
    /// The job that asked for this instance, if any (idle top-ups have none).
    pub job_id: Option<JobId>,
    pub addresses: Vec<String>,
    pub status_message: Option<String>,
    pub create_attempts: u32,
    /// What the booting instance reported (`callbacks/system-info`).
    #[serde(default)]
    pub os_name: Option<String>,
    #[serde(default)]
    pub os_version: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Instance {
    /// Is or will be a runner free to take a job: not being deleted, its
    /// runner not yet busy. What a pool's demand is met with. An instance in
    /// `error` counts: its create is retried under the same name (or it is
    /// given up and retired, and then no longer counts), so a failed create
    /// never brings a second VM for the same slot meanwhile.
    pub fn is_spare(&self) -> bool {
        matches!(
            self.status,
            InstanceStatus::PendingCreate
                | InstanceStatus::Creating
                | InstanceStatus::Running
                | InstanceStatus::Error
        ) && matches!(
            self.runner_status,
            RunnerStatus::Pending | RunnerStatus::Installing | RunnerStatus::Idle
        )
    }

    /// A running VM whose runner waits for a job now.
    pub fn is_idle(&self) -> bool {
        self.status == InstanceStatus::Running && self.runner_status == RunnerStatus::Idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceStatus as I;
    use RunnerStatus as R;

    /// The expected instance table written out pair by pair, independent of
    /// `successors`, so a slip in either shows up.
    fn instance_allowed(from: I, to: I) -> bool {
        matches!(
            (from, to),
            (I::PendingCreate, I::Creating)
                | (I::PendingCreate, I::PendingDelete)
                | (I::Creating, I::Running)
                | (I::Creating, I::Error)
                | (I::Running, I::PendingDelete)
                | (I::Running, I::Error)
                | (I::Error, I::PendingCreate)
                | (I::Error, I::PendingDelete)
                | (I::PendingDelete, I::Deleting)
                | (I::Deleting, I::Deleted)
                | (I::Deleting, I::PendingDelete)
        )
    }

    fn runner_allowed(from: R, to: R) -> bool {
        matches!(
            (from, to),
            (R::Pending, R::Installing)
                | (R::Pending, R::Idle)
                | (R::Pending, R::Active)
                | (R::Pending, R::Failed)
                | (R::Pending, R::Terminated)
                | (R::Installing, R::Idle)
                | (R::Installing, R::Active)
                | (R::Installing, R::Failed)
                | (R::Installing, R::Terminated)
                | (R::Idle, R::Active)
                | (R::Idle, R::Terminated)
                | (R::Active, R::Terminated)
                | (R::Failed, R::Terminated)
        )
    }

    #[test]
    fn every_instance_pair() {
        let mut allowed = 0;
        for from in I::ALL {
            for to in I::ALL {
                let want = instance_allowed(from, to);
                assert_eq!(from.can_transition_to(to), want, "{from} -> {to}");
                assert_eq!(from.check_transition(to).is_ok(), want, "{from} -> {to}");
                allowed += usize::from(want);
            }
        }
        assert_eq!(allowed, 11);
        assert_eq!(I::ALL.len() * I::ALL.len(), 49);
    }

    #[test]
    fn every_runner_pair() {
        let mut allowed = 0;
        for from in R::ALL {
            for to in R::ALL {
                let want = runner_allowed(from, to);
                assert_eq!(from.can_transition_to(to), want, "{from} -> {to}");
                assert_eq!(from.check_transition(to).is_ok(), want, "{from} -> {to}");
                allowed += usize::from(want);
            }
        }
        assert_eq!(allowed, 13);
    }

    #[test]
    fn no_self_loops_and_terminal_states() {
        for s in I::ALL {
            assert!(!s.can_transition_to(s), "{s}");
        }
        for s in R::ALL {
            assert!(!s.can_transition_to(s), "{s}");
        }
        assert!(I::Deleted.successors().is_empty());
        assert!(R::Terminated.successors().is_empty());
    }

    #[test]
    fn every_status_reaches_deleted() {
        // From any instance status, following the table can end at Deleted:
        // nothing can get stuck.
        for start in I::ALL {
            let mut seen = vec![start];
            let mut frontier = vec![start];
            while let Some(s) = frontier.pop() {
                for &n in s.successors() {
                    if !seen.contains(&n) {
                        seen.push(n);
                        frontier.push(n);
                    }
                }
            }
            assert!(seen.contains(&I::Deleted), "{start} cannot reach deleted");
        }
    }

    #[test]
    fn error_message_names_the_pair() {
        let e = I::Deleted.check_transition(I::Running).unwrap_err();
        assert_eq!(
            e.to_string(),
            "illegal instance transition deleted -> running"
        );
        let e = R::Active.check_transition(R::Idle).unwrap_err();
        assert_eq!(e.to_string(), "illegal runner transition active -> idle");
    }

    #[test]
    fn parse_round_trip() {
        for s in I::ALL {
            assert_eq!(s.as_str().parse::<I>().unwrap(), s);
        }
        for s in R::ALL {
            assert_eq!(s.as_str().parse::<R>().unwrap(), s);
        }
        assert!("bogus".parse::<I>().is_err());
    }

    #[test]
    fn bootstrapping_states() {
        assert!(R::Pending.is_bootstrapping());
        assert!(R::Installing.is_bootstrapping());
        assert!(!R::Idle.is_bootstrapping());
        assert!(!R::Failed.is_bootstrapping());
    }
}
