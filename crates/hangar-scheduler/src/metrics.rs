//! Prometheus metrics of the whole daemon, in one registry. Label sets are
//! bounded: provider, operation, outcome, pool, status — never a job or an
//! instance.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub event: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderOpLabels {
    pub provider: String,
    pub op: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderDurationLabels {
    pub provider: String,
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GithubCallLabels {
    pub credentials: String,
    pub op: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialsLabels {
    pub credentials: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub pool: String,
    pub status: String,
    pub runner_status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecoveryPathLabels {
    /// `redelivery` or `queued_runs`.
    pub path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecoveryCallLabels {
    /// `list_hooks`, `list_hook_deliveries`, `redeliver`, `queued_run_ids`, `run_jobs`.
    pub op: &'static str,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleSetLabels {
    /// The scale set's id in Hangar.
    pub scale_set: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleSetSessionLabels {
    pub scale_set: String,
    /// `created` (first session of a listener), `reconnected` (a new
    /// session after a lost one), `refreshed` (its queue token renewed),
    /// `conflict` (the service still holds another listener's session).
    pub event: &'static str,
}

fn latency_histogram() -> Histogram {
    // 5 ms … ~10 min.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 18,
    ))
}

/// Every metric Hangar exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Mutex<Registry>,
    pub webhooks: Family<WebhookLabels, Counter>,
    pub provider_ops: Family<ProviderOpLabels, Counter>,
    pub provider_op_seconds: Family<ProviderDurationLabels, Histogram, fn() -> Histogram>,
    pub github_calls: Family<GithubCallLabels, Counter>,
    pub github_rate_limit_remaining: Family<CredentialsLabels, Gauge>,
    pub jobs: Family<StatusLabels, Gauge>,
    pub instances: Family<InstanceLabels, Gauge>,
    pub time_to_create_seconds: Histogram,
    pub time_to_runner_seconds: Histogram,
    pub reconcile_seconds: Histogram,
    pub jobs_recovered: Family<RecoveryPathLabels, Counter>,
    pub recovery_calls: Family<RecoveryCallLabels, Counter>,
    /// 1 while a pool's circuit breaker is open (its creates back off).
    pub pool_breaker_open: Family<PoolLabels, Gauge>,
    /// Failed creates per pool (a refused JIT registration included).
    pub pool_create_failures: Family<PoolLabels, Counter>,
    /// Scale set queue messages applied to the store.
    pub scale_set_messages: Family<ScaleSetLabels, Counter>,
    /// Jobs a scale set's listener acquired.
    pub scale_set_jobs_acquired: Family<ScaleSetLabels, Counter>,
    pub scale_set_sessions: Family<ScaleSetSessionLabels, Counter>,
    /// From a job's `JobAvailable` being applied to the provider create of
    /// the runner serving it.
    pub scale_set_time_to_create_seconds: Family<ScaleSetLabels, Histogram, fn() -> Histogram>,
    /// 1 once the Actions service no longer has the scale set.
    pub scale_set_deleted_on_github: Family<ScaleSetLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hangar");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            webhooks: Family::default(),
            provider_ops: Family::default(),
            provider_op_seconds: Family::new_with_constructor(latency_histogram),
            github_calls: Family::default(),
            github_rate_limit_remaining: Family::default(),
            jobs: Family::default(),
            instances: Family::default(),
            time_to_create_seconds: latency_histogram(),
            time_to_runner_seconds: latency_histogram(),
            reconcile_seconds: latency_histogram(),
            jobs_recovered: Family::default(),
            recovery_calls: Family::default(),
            pool_breaker_open: Family::default(),
            pool_create_failures: Family::default(),
            scale_set_messages: Family::default(),
            scale_set_jobs_acquired: Family::default(),
            scale_set_sessions: Family::default(),
            scale_set_time_to_create_seconds: Family::new_with_constructor(latency_histogram),
            scale_set_deleted_on_github: Family::default(),
        };
        registry.register(
            "webhooks",
            "Webhook deliveries by event and outcome",
            m.webhooks.clone(),
        );
        registry.register(
            "provider_operations",
            "Provider calls by provider, operation and outcome",
            m.provider_ops.clone(),
        );
        registry.register(
            "provider_operation_duration_seconds",
            "Duration of provider calls",
            m.provider_op_seconds.clone(),
        );
        registry.register(
            "github_api_calls",
            "GitHub API calls made by the scheduler, by credentials, operation and outcome",
            m.github_calls.clone(),
        );
        registry.register(
            "github_rate_limit_remaining",
            "Last x-ratelimit-remaining seen per credentials",
            m.github_rate_limit_remaining.clone(),
        );
        registry.register("jobs", "Jobs by status", m.jobs.clone());
        registry.register(
            "instances",
            "Instances by pool, status and runner status",
            m.instances.clone(),
        );
        registry.register(
            "time_to_create_seconds",
            "From a job being queued to the provider create call for its instance",
            m.time_to_create_seconds.clone(),
        );
        registry.register(
            "time_to_runner_seconds",
            "From a job being queued to a runner taking it",
            m.time_to_runner_seconds.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one pool reconcile",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "jobs_recovered",
            "Jobs whose lost delivery was recovered, by path (redelivery, queued_runs)",
            m.jobs_recovered.clone(),
        );
        registry.register(
            "recovery_calls",
            "GitHub calls made by lost-delivery recovery, by operation and outcome",
            m.recovery_calls.clone(),
        );
        registry.register(
            "pool_breaker_open",
            "1 while the pool's circuit breaker is open: its creates back off after consecutive failures",
            m.pool_breaker_open.clone(),
        );
        registry.register(
            "pool_create_failures",
            "Failed creates per pool, a refused JIT registration included",
            m.pool_create_failures.clone(),
        );
        registry.register(
            "scale_set_messages_applied",
            "Scale set queue messages applied to the store, per scale set",
            m.scale_set_messages.clone(),
        );
        registry.register(
            "scale_set_jobs_acquired",
            "Jobs acquired from a scale set's queue, per scale set",
            m.scale_set_jobs_acquired.clone(),
        );
        registry.register(
            "scale_set_sessions",
            "Scale set message sessions, per scale set and event (created, reconnected, refreshed, conflict)",
            m.scale_set_sessions.clone(),
        );
        registry.register(
            "scale_set_time_to_create_seconds",
            "From a scale set job's JobAvailable to the provider create of the runner serving it",
            m.scale_set_time_to_create_seconds.clone(),
        );
        registry.register(
            "scale_set_deleted_on_github",
            "1 once the Actions service no longer has the scale set (its listener stopped)",
            m.scale_set_deleted_on_github.clone(),
        );
        *m.registry.lock().expect("registry lock") = registry;
        m
    }

    /// Prometheus text exposition of everything.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("registry lock");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Counts one delivery. The labels are a fixed set, so they are static
    /// and counting allocates nothing.
    pub fn webhook(&self, event: &'static str, outcome: &'static str) {
        self.webhooks
            .get_or_create(&WebhookLabels { event, outcome })
            .inc();
    }

    pub fn provider_op(&self, provider: &str, op: &str, outcome: &str, seconds: f64) {
        self.provider_ops
            .get_or_create(&ProviderOpLabels {
                provider: provider.to_owned(),
                op: op.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.provider_op_seconds
            .get_or_create(&ProviderDurationLabels {
                provider: provider.to_owned(),
                op: op.to_owned(),
            })
            .observe(seconds);
    }

    pub fn github_call(&self, credentials: &str, op: &str, outcome: &str) {
        self.github_calls
            .get_or_create(&GithubCallLabels {
                credentials: credentials.to_owned(),
                op: op.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn job_recovered(&self, path: &'static str, n: u64) {
        self.jobs_recovered
            .get_or_create(&RecoveryPathLabels { path })
            .inc_by(n);
    }

    pub fn recovery_call(&self, op: &'static str, outcome: &str) {
        self.recovery_calls
            .get_or_create(&RecoveryCallLabels {
                op,
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn pool_breaker(&self, pool: hangar_core::PoolId, open: bool) {
        self.pool_breaker_open
            .get_or_create(&PoolLabels {
                pool: pool.to_string(),
            })
            .set(i64::from(open));
    }

    pub fn pool_create_failed(&self, pool: hangar_core::PoolId) {
        self.pool_create_failures
            .get_or_create(&PoolLabels {
                pool: pool.to_string(),
            })
            .inc();
    }

    fn scale_set_labels(id: &str) -> ScaleSetLabels {
        ScaleSetLabels {
            scale_set: id.to_owned(),
        }
    }

    pub fn scale_set_message(&self, id: &str) {
        self.scale_set_messages
            .get_or_create(&Self::scale_set_labels(id))
            .inc();
    }

    pub fn scale_set_acquired(&self, id: &str, n: u64) {
        self.scale_set_jobs_acquired
            .get_or_create(&Self::scale_set_labels(id))
            .inc_by(n);
    }

    pub fn scale_set_session(&self, id: &str, event: &'static str) {
        self.scale_set_sessions
            .get_or_create(&ScaleSetSessionLabels {
                scale_set: id.to_owned(),
                event,
            })
            .inc();
    }

    pub fn scale_set_time_to_create(&self, id: &str, seconds: f64) {
        self.scale_set_time_to_create_seconds
            .get_or_create(&Self::scale_set_labels(id))
            .observe(seconds);
    }

    pub fn scale_set_gone(&self, id: &str) {
        self.scale_set_deleted_on_github
            .get_or_create(&Self::scale_set_labels(id))
            .set(1);
    }
}
