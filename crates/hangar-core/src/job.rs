//! Workflow jobs as GitHub reports them. A job's status only moves forward, so
//! a late or repeated webhook can never undo newer knowledge.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{EntityId, JobId, PoolId};
use crate::labels::Labels;

/// Job status, ordered: `waiting < queued < in_progress < completed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Held by a deployment protection rule; no runner is wanted yet.
    Waiting,
    Queued,
    InProgress,
    Completed,
}

impl JobStatus {
    pub const ALL: [JobStatus; 4] = [
        JobStatus::Waiting,
        JobStatus::Queued,
        JobStatus::InProgress,
        JobStatus::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Waiting => "waiting",
            JobStatus::Queued => "queued",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completed => "completed",
        }
    }

    /// Whether a job in `self` may be moved to `next`: only strictly forward.
    pub fn can_advance_to(self, next: JobStatus) -> bool {
        next > self
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown job status {s:?} (expected waiting, queued, in_progress or completed)"
                )
            })
    }
}

/// The `action` of a `workflow_job` webhook that Hangar records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobAction {
    Waiting,
    Queued,
    InProgress,
    Completed,
}

impl JobAction {
    /// Parses a webhook action; `None` for actions Hangar does not track.
    pub fn from_webhook(action: &str) -> Option<Self> {
        match action {
            "waiting" => Some(JobAction::Waiting),
            "queued" => Some(JobAction::Queued),
            "in_progress" => Some(JobAction::InProgress),
            "completed" => Some(JobAction::Completed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.status().as_str()
    }

    pub fn status(self) -> JobStatus {
        match self {
            JobAction::Waiting => JobStatus::Waiting,
            JobAction::Queued => JobStatus::Queued,
            JobAction::InProgress => JobStatus::InProgress,
            JobAction::Completed => JobStatus::Completed,
        }
    }
}

/// A recorded workflow job, keyed by (`id`, `run_attempt`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub run_attempt: i64,
    pub entity_id: EntityId,
    pub status: JobStatus,
    pub conclusion: Option<String>,
    pub labels: Labels,
    /// `owner/name` of the repository the job runs in.
    pub repository: String,
    pub workflow_run_id: Option<i64>,
    pub name: Option<String>,
    pub runner_name: Option<String>,
    /// The pool chosen for the job; `None` when no pool matched.
    pub pool_id: Option<PoolId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_only_moves_forward() {
        for from in JobStatus::ALL {
            for to in JobStatus::ALL {
                let expected = JobStatus::ALL.iter().position(|s| *s == to)
                    > JobStatus::ALL.iter().position(|s| *s == from);
                assert_eq!(from.can_advance_to(to), expected, "{from} -> {to}");
            }
        }
        assert!(!JobStatus::Completed.can_advance_to(JobStatus::Queued));
        assert!(!JobStatus::Queued.can_advance_to(JobStatus::Queued));
    }

    #[test]
    fn actions() {
        assert_eq!(
            JobAction::from_webhook("in_progress"),
            Some(JobAction::InProgress)
        );
        assert_eq!(JobAction::from_webhook("requested"), None);
        assert_eq!(
            "completed".parse::<JobStatus>().unwrap(),
            JobStatus::Completed
        );
        assert!("done".parse::<JobStatus>().is_err());
    }
}
