//! The `[scheduler]` section of hangard's config: timings and limits of the
//! pool manager, all with working defaults.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Seconds between level-triggered passes over every pool (events wake
    /// the scheduler at once; this catches everything else).
    pub reconcile_interval_secs: u64,
    /// Seconds a freshly queued job is left to an idle runner before another
    /// instance is made for it.
    pub idle_grace_secs: u64,
    /// Provider create attempts per instance before it is given up.
    pub create_attempts: u32,
    /// First retry delay in milliseconds; doubles per failure, with jitter.
    pub backoff_base_ms: u64,
    /// Longest retry delay in milliseconds.
    pub backoff_max_ms: u64,
    /// Seconds between attempts to remove a runner GitHub reports busy.
    pub busy_retry_secs: u64,
    /// Seconds a job may stay queued before it is first re-checked against
    /// GitHub. Later re-checks are spaced by the job's age (so the spacing
    /// doubles: 5, 10, 20, 40 … minutes) up to `job_recheck_max_secs`.
    pub job_recheck_after_secs: u64,
    /// Longest spacing between two re-checks of one queued job.
    pub job_recheck_max_secs: u64,
    /// Re-checks per sweep at most (one GitHub call each), taken from the
    /// background budget (`[recovery] budget_per_hour`).
    pub job_recheck_batch: u32,
    /// Hours `deleted` instances are kept as history.
    pub deleted_history_hours: u64,
    /// Hours completed jobs are kept.
    pub completed_job_history_hours: u64,
    /// GitHub calls at once per set of credentials.
    pub github_concurrency: usize,
    /// Seconds a running instance may be missing from the provider's list
    /// before it counts as lost (covers list/create races). A scale set
    /// runner unchanged this long is looked up on the Actions service, at
    /// most once per this many seconds, and retired when it is gone there.
    pub lost_instance_grace_secs: u64,
    /// Seconds to let in-flight provider calls finish on shutdown (retry
    /// pauses and GitHub calls stop at once).
    pub shutdown_grace_secs: u64,
    /// Lost-delivery recovery: hangard's `[recovery]` section (not a
    /// `[scheduler]` key; the daemon fills it in).
    #[serde(skip)]
    pub recovery: RecoveryConfig,
    /// Consecutive failed creates of a pool (a refused JIT registration
    /// included) before its circuit breaker opens: then no registration
    /// and no provider create happen for the pool until a back-off has
    /// passed, and after it one probe at a time.
    pub breaker_threshold: u32,
    /// The breaker's first back-off in seconds; doubles with each further
    /// failure, with jitter.
    pub breaker_base_secs: u64,
    /// The breaker's longest back-off in seconds (also how long a probe
    /// holds the breaker before another may start).
    pub breaker_max_secs: u64,
    /// Failed tries of a delete (at GitHub or at the provider) before it
    /// gives up on them: GitHub's runner is left to the sweep and the VM
    /// deleted; after provider failures the instance is marked deleted
    /// with the provider's last error and the orphan sweep removes the VM
    /// if it still exists.
    pub delete_attempts: u32,
    /// Milliseconds a pool's lease lasts (several replicas on PostgreSQL;
    /// SQLite's one replica holds every pool and ignores it). The holder
    /// renews every third of it and stops acting on a pool a sixth of it
    /// before the lease it last confirmed lapses; another replica takes a
    /// dead one's pools within about `lease_ttl_ms` plus a third of it.
    pub lease_ttl_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            reconcile_interval_secs: 30,
            idle_grace_secs: 5,
            create_attempts: 3,
            backoff_base_ms: 1_000,
            backoff_max_ms: 60_000,
            busy_retry_secs: 30,
            job_recheck_after_secs: 300,
            job_recheck_max_secs: 6 * 3600,
            job_recheck_batch: 10,
            deleted_history_hours: 24,
            completed_job_history_hours: 24 * 7,
            github_concurrency: 8,
            lost_instance_grace_secs: 120,
            shutdown_grace_secs: 20,
            recovery: RecoveryConfig::default(),
            breaker_threshold: 3,
            breaker_base_secs: 10,
            breaker_max_secs: 300,
            delete_attempts: 10,
            lease_ttl_ms: 6_000,
        }
    }
}

/// The `[recovery]` section: finding jobs whose `queued` delivery never
/// reached Hangar. Two paths, both per set of credentials within
/// `budget_per_hour` (a share below JIT and delete calls): redelivering
/// failed deliveries of the hooks that point here, and re-listing the
/// queued workflow runs of repositories.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Off: neither path runs (job re-checks still do).
    pub enabled: bool,
    /// Seconds between redelivery passes (one deliveries listing per hook
    /// when fewer than 100 deliveries arrived since the last pass). The
    /// first pass runs `start_delay_secs` after start.
    pub redelivery_interval_secs: u64,
    /// Seconds between queued-run passes (one runs listing per repository,
    /// plus one jobs listing per queued run not seen before).
    pub queued_runs_interval_secs: u64,
    /// Seconds after start before the first pass of each path (the
    /// listener is up by then, so redeliveries land).
    pub start_delay_secs: u64,
    /// A queued run already listed is listed again after this many seconds
    /// while it stays queued (jobs that wait on others appear later).
    pub run_relist_secs: u64,
    /// Deliveries older than this are never redelivered; also how far back
    /// the first pass of a hook looks.
    pub lookback_secs: u64,
    /// Redeliveries of one delivery (guid) at most; one per pass at most.
    pub max_redeliveries: u32,
    /// Pages of 100 deliveries read per hook per pass at most.
    pub max_delivery_pages: u32,
    /// Queued runs whose jobs are listed per repository per pass at most.
    pub max_runs_per_pass: u32,
    /// Calls per hour per set of credentials for recovery and job
    /// re-checks together (a token bucket; burst a tenth of it).
    pub budget_per_hour: u32,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            redelivery_interval_secs: 90,
            queued_runs_interval_secs: 90,
            start_delay_secs: 3,
            run_relist_secs: 1800,
            lookback_secs: 6 * 3600,
            max_redeliveries: 3,
            max_delivery_pages: 5,
            max_runs_per_pass: 20,
            budget_per_hour: 1_000,
        }
    }
}

impl RecoveryConfig {
    pub fn redelivery_interval(&self) -> Duration {
        Duration::from_secs(self.redelivery_interval_secs.max(10))
    }

    pub fn queued_runs_interval(&self) -> Duration {
        Duration::from_secs(self.queued_runs_interval_secs.max(10))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.redelivery_interval_secs < 10 || self.queued_runs_interval_secs < 10 {
            return Err(ConfigError::RecoveryInterval);
        }
        if self.budget_per_hour == 0 {
            return Err(ConfigError::RecoveryBudget);
        }
        Ok(())
    }
}

impl SchedulerConfig {
    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_secs(self.reconcile_interval_secs.max(1))
    }

    pub fn idle_grace(&self) -> Duration {
        Duration::from_secs(self.idle_grace_secs)
    }

    /// The pool breaker's settings, for core's rule.
    pub fn breaker_rules(&self) -> hangar_core::policy::BreakerRules {
        hangar_core::policy::BreakerRules {
            threshold: self.breaker_threshold.max(1),
            base: Duration::from_secs(self.breaker_base_secs.max(1)),
            max: Duration::from_secs(self.breaker_max_secs.max(self.breaker_base_secs).max(1)),
        }
    }

    /// How long a pool's lease lasts.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_ttl_ms < 600 {
            return Err(ConfigError::LeaseTtl);
        }
        if self.breaker_threshold == 0 {
            return Err(ConfigError::BreakerThreshold);
        }
        if self.breaker_base_secs == 0 || self.breaker_max_secs < self.breaker_base_secs {
            return Err(ConfigError::BreakerBackoff);
        }
        if self.delete_attempts == 0 {
            return Err(ConfigError::NoDeleteAttempts);
        }
        if self.create_attempts == 0 {
            return Err(ConfigError::NoCreateAttempts);
        }
        if self.github_concurrency == 0 {
            return Err(ConfigError::NoGithubConcurrency);
        }
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            return Err(ConfigError::Backoff);
        }
        if self.job_recheck_batch == 0 {
            return Err(ConfigError::NoRecheckBatch);
        }
        Ok(())
    }
}

/// A `[scheduler]` setting the scheduler cannot run with; the daemon
/// refuses to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("scheduler.create_attempts must be at least 1")]
    NoCreateAttempts,
    #[error("scheduler.github_concurrency must be at least 1")]
    NoGithubConcurrency,
    #[error("scheduler.backoff_base_ms must be > 0 and not above backoff_max_ms")]
    Backoff,
    #[error(
        "recovery.redelivery_interval_secs and recovery.queued_runs_interval_secs must be at least 10"
    )]
    RecoveryInterval,
    #[error("scheduler.job_recheck_batch must be at least 1")]
    NoRecheckBatch,
    #[error("recovery.budget_per_hour must be at least 1 (turn recovery off with enabled = false)")]
    RecoveryBudget,
    #[error("scheduler.breaker_threshold must be at least 1")]
    BreakerThreshold,
    #[error("scheduler.breaker_base_secs must be > 0 and not above breaker_max_secs")]
    BreakerBackoff,
    #[error("scheduler.delete_attempts must be at least 1")]
    NoDeleteAttempts,
    #[error("scheduler.lease_ttl_ms must be at least 600")]
    LeaseTtl,
}
