//! The configured providers by name, each with its concurrency limit,
//! backoff gate and proxy settings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hangar_core::Provider;
use hangar_core::provider::ProxySettings;
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
            }),
        );
        Ok(self)
    }

    pub fn build(self) -> Providers {
        Providers(Arc::new(self.entries))
    }
}
