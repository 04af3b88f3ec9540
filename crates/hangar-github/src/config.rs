//! The `[github]` section of hangard's config: how hard Hangar may lean on
//! GitHub's API, per set of credentials.

use std::time::Duration;

use hangar_core::provider::ProxySettings;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GitHubConfig {
    /// Calls per hour each set of credentials may make (a token bucket that
    /// refills evenly), well under GitHub's 5,000, so a burst of jobs can
    /// never spend the whole hour.
    pub budget_per_hour: u32,
    /// Largest burst the bucket allows.
    pub budget_burst: u32,
    /// Retries of idempotent calls (GET, DELETE) after a transient failure
    /// or a short rate limit. Registering a runner is never retried here.
    pub max_retries: u32,
    /// First retry delay in milliseconds (doubles, with jitter).
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// A rate-limit wait longer than this is not slept through inside a
    /// call; the call fails with "rate limited" and the caller reschedules.
    pub max_inline_wait_secs: u64,
    /// Timeout of one HTTP request.
    pub request_timeout_secs: u64,
    /// The proxy for GitHub calls. Not a config key: the daemon fills it
    /// from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (or their lowercase
    /// forms). Loopback and `no_proxy` hosts are reached directly.
    #[serde(skip)]
    pub proxy: ProxySettings,
}

impl Default for GitHubConfig {
    fn default() -> Self {
        Self {
            budget_per_hour: 4_000,
            budget_burst: 1_000,
            max_retries: 3,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
            max_inline_wait_secs: 10,
            request_timeout_secs: 30,
            proxy: ProxySettings::default(),
        }
    }
}

impl GitHubConfig {
    pub fn backoff_base(&self) -> Duration {
        Duration::from_millis(self.backoff_base_ms.max(1))
    }

    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms.max(self.backoff_base_ms.max(1)))
    }

    pub fn max_inline_wait(&self) -> Duration {
        Duration::from_secs(self.max_inline_wait_secs)
    }
}
