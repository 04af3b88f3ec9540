//! The configured providers by name, each with its concurrency limit,
//! backoff gate and proxy settings.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_core::provider::ProxySettings;
use hangar_core::{PoolId, Provider};
use tokio::sync::Semaphore;

use crate::backoff::Gate;

#[derive(Debug)]
pub struct ProviderEntry {
    pub name: String,
    pub description: String,
    pub provider: Arc<dyn Provider>,
    /// Bounds calls at once to this provider.
    pub permits: Arc<Semaphore>,
    /// Backs off the whole provider after failures.
    pub gate: Gate,
    /// Proxy for instances of this provider (pools may override).
    pub proxy: ProxySettings,
    /// Pools whose last create on this provider failed: when failures span
    /// pools, the provider (not one pool's settings) is the likely cause.
    failing_pools: Mutex<HashSet<PoolId>>,
}

impl ProviderEntry {
    /// A create of `pool` failed. When another of this provider's pools is
    /// failing too, the provider's gate backs off (whatever the kind of
    /// error; retryable ones have counted already in the call itself, so a
    /// gate already closed is left as it is). Returns whether it did.
    pub fn pool_failed(&self, pool: PoolId) -> bool {
        let spans = {
            let mut set = self.failing_pools.lock().expect("failing_pools lock");
            set.insert(pool);
            set.len() >= 2
        };
        if spans && self.gate.remaining().is_none() {
            self.gate.failure();
            return true;
        }
        false
    }

    /// A create of `pool` succeeded.
    pub fn pool_succeeded(&self, pool: PoolId) {
        self.failing_pools
            .lock()
            .expect("failing_pools lock")
            .remove(&pool);
    }
}

/// Providers by name. Built once at start.
#[derive(Debug, Clone, Default)]
pub struct Providers(Arc<BTreeMap<String, Arc<ProviderEntry>>>);

impl Providers {
    pub fn builder() -> ProvidersBuilder {
        ProvidersBuilder::default()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ProviderEntry>> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<ProviderEntry>> {
        self.0.values()
    }

    pub fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Two providers with one name: pools name their provider, so the daemon
/// refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider {0:?} is configured twice")]
pub struct DuplicateProvider(pub String);

#[derive(Debug, Default)]
pub struct ProvidersBuilder {
    entries: BTreeMap<String, Arc<ProviderEntry>>,
    backoff_base: Option<Duration>,
    backoff_max: Option<Duration>,
}

impl ProvidersBuilder {
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = Some(base);
        self.backoff_max = Some(max);
        self
    }

    /// Adds a provider; a duplicate name is an error.
    pub fn add(
        mut self,
        name: &str,
        description: &str,
        provider: Arc<dyn Provider>,
        proxy: ProxySettings,
    ) -> Result<Self, DuplicateProvider> {
        if self.entries.contains_key(name) {
            return Err(DuplicateProvider(name.to_owned()));
        }
        let permits = Arc::new(Semaphore::new(provider.max_concurrency().max(1)));
        let gate = Gate::new(
            self.backoff_base.unwrap_or(Duration::from_secs(1)),
            self.backoff_max.unwrap_or(Duration::from_secs(60)),
        );
        self.entries.insert(
            name.to_owned(),
            Arc::new(ProviderEntry {
                name: name.to_owned(),
                description: description.to_owned(),
                provider,
                permits,
                gate,
                proxy,
                failing_pools: Mutex::default(),
            }),
        );
        Ok(self)
    }

    pub fn build(self) -> Providers {
        Providers(Arc::new(self.entries))
    }
}
