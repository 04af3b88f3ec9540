//! hangard's one TOML config file: typed, `deny_unknown_fields`, every key
//! documented in `config/hangard.example.toml`. Only this crate reads files
//! and the environment; everything below gets plain values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use hangar_core::Secret;
use hangar_core::provider::ProxySettings;
use hangar_scheduler::{RecoveryConfig, SchedulerConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    #[serde(default)]
    pub database: DatabaseSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub github: hangar_github::GitHubConfig,
    #[serde(default)]
    pub recovery: RecoveryConfig,
    #[serde(default)]
    pub logging: LoggingSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default, rename = "provider")]
    pub providers: Vec<ProviderSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on, e.g. `127.0.0.1:9997`.
    pub bind: String,
    /// Base of the webhook, metadata and callback URLs.
    pub public_url: String,
    /// Largest accepted webhook body in bytes.
    #[serde(default = "default_body_limit")]
    pub webhook_body_limit: usize,
    /// Seconds to let open requests finish on shutdown.
    #[serde(default = "default_shutdown_secs")]
    pub shutdown_timeout_secs: u64,
    /// Seconds a request's headers (and a webhook's body) may take to
    /// arrive; an idle kept-alive connection is closed after as long.
    #[serde(default = "default_read_timeout_secs")]
    pub read_timeout_secs: u64,
    /// Connections open at once; at the cap the connection idle the
    /// longest is closed to make room, and when all are busy a new one is
    /// closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The largest `max_runners` (and `min_idle_runners`) a pool may have;
    /// a create or update asking for more is refused.
    #[serde(default = "default_max_runners_per_pool")]
    pub max_runners_per_pool: u32,
    /// Threads running the scheduler's async work (reconciles, provider
    /// and GitHub calls); the HTTP listener and the intake writer have a
    /// thread of their own (`front`). Unset:
    /// [`ServerSection::worker_thread_count`] decides.
    #[serde(default)]
    pub worker_threads: Option<usize>,
    /// TLS on the listener: a PEM certificate chain and its private key,
    /// both or neither; read again on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl ServerSection {
    /// The scheduler runtime's worker thread count. SQLite runs on threads
    /// of its own, and the one writer thread is the serial step of webhook
    /// intake, so by default one CPU is left to it: on 2 CPUs one async
    /// worker, with no second worker waking up, stealing work and
    /// contending with the writer and the front thread for the CPUs.
    pub fn worker_thread_count(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1)
        })
    }
}

fn default_body_limit() -> usize {
    hangar_server::DEFAULT_WEBHOOK_BODY_LIMIT
}

fn default_shutdown_secs() -> u64 {
    10
}

fn default_read_timeout_secs() -> u64 {
    30
}

fn default_max_connections() -> usize {
    1024
}

fn default_max_runners_per_pool() -> u32 {
    hangar_server::DEFAULT_MAX_RUNNERS_PER_POOL
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    #[serde(default = "default_db_url")]
    pub url: String,
    /// Reads `url` from a file (first line) instead, e.g. a PostgreSQL URL
    /// that carries a password; wins over `url`.
    pub url_file: Option<PathBuf>,
    pub passphrase: Option<String>,
    pub passphrase_file: Option<PathBuf>,
    #[serde(default)]
    pub synchronous: Synchronous,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: default_db_url(),
            url_file: None,
            passphrase: None,
            passphrase_file: None,
            synchronous: Synchronous::Full,
        }
    }
}

fn default_db_url() -> String {
    "sqlite://./data/hangar.db".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Lifetime of admin API tokens, in hours.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_hours: u64,
    /// Secret that signs admin tokens; generated and kept (sealed) in the
    /// database when not given.
    pub jwt_secret: Option<String>,
    pub jwt_secret_file: Option<PathBuf>,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            token_ttl_hours: default_token_ttl(),
            jwt_secret: None,
            jwt_secret_file: None,
        }
    }
}

fn default_token_ttl() -> u64 {
    24
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `hangar_scheduler=debug,info`, …
    /// (`RUST_LOG` wins when set).
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LoggingSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: default_level(),
        }
    }
}

fn default_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Serve `GET /metrics`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Required from scrapers (Bearer, or the basic-auth password) when set.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            token: None,
            token_file: None,
        }
    }
}

/// The shortest metrics token accepted: a scrape secret worth the name.
const MIN_METRICS_TOKEN: usize = 16;

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Libvirt,
    Azure,
    External,
    /// In-process fake for demos, tests and benchmarks: no machine is made.
    Fake,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    pub name: String,
    pub kind: ProviderKind,
    #[serde(default)]
    pub description: String,
    /// Proxy settings for this provider's instances (pools may override
    /// them with `extra_specs.proxy`).
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub external: Option<hangar_provider_external::ExternalProviderConfig>,
    pub libvirt: Option<hangar_provider_libvirt::LibvirtProviderConfig>,
    pub azure: Option<hangar_provider_azure::AzureProviderConfig>,
    pub fake: Option<hangar_provider_fake::fake_provider::FakeProviderSettings>,
}

impl ProviderSection {
    pub fn proxy(&self) -> ProxySettings {
        ProxySettings {
            http_proxy: self.http_proxy.clone(),
            https_proxy: self.https_proxy.clone(),
            no_proxy: self.no_proxy.clone(),
        }
    }
}

/// A value read from the environment, for [`Config::load_with`].
pub type Env = dyn Fn(&str) -> Option<String>;

/// hangard's own proxy for GitHub calls, from the variables curl and Go
/// read: upper case first, then lower case; empty means unset.
pub fn proxy_from_env(env: &Env) -> ProxySettings {
    let var = |upper: &str, lower: &str| {
        env(upper)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| env(lower).filter(|v| !v.trim().is_empty()))
    };
    ProxySettings {
        http_proxy: var("HTTP_PROXY", "http_proxy"),
        https_proxy: var("HTTPS_PROXY", "https_proxy"),
        no_proxy: var("NO_PROXY", "no_proxy"),
    }
}

impl Config {
    /// Parses a config text; errors name the key and the line.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(config)
    }

    /// Reads `path`, applies environment overrides and checks the result.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Self::load_with(path, &|k| std::env::var(k).ok())
    }

    pub fn load_with(path: &Path, env: &Env) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let mut config = Self::parse(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        if let Some(v) = env("HANGAR_BIND") {
            config.server.bind = v;
        }
        if let Some(v) = env("HANGAR_PUBLIC_URL") {
            config.server.public_url = v;
        }
        if let Some(v) = env("HANGAR_DATABASE_URL") {
            config.database.url = v;
        } else if let Some(f) = &config.database.url_file {
            config.database.url = read_secret_file(f, "database.url_file")
                .with_context(|| format!("invalid config file {}", path.display()))?
                .expose()
                .to_owned();
        }
        if let Some(v) = env("HANGAR_PASSPHRASE") {
            config.database.passphrase = Some(v);
        }
        config.github.proxy = proxy_from_env(env);
        config
            .validate()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.bind_addr()?;
        let u = &self.server.public_url;
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            bail!("server.public_url must be an http(s) URL, got {u:?}");
        }
        hangar_store::database_kind(&self.database.url)
            .map_err(|e| anyhow::anyhow!("database.url: {e}"))?;
        if self.server.webhook_body_limit < 1024 {
            bail!("server.webhook_body_limit must be at least 1024 bytes");
        }
        if !(1..=3600).contains(&self.server.read_timeout_secs) {
            bail!(
                "server.read_timeout_secs must be between 1 and 3600, got {}",
                self.server.read_timeout_secs
            );
        }
        if !(1..=1_000_000).contains(&self.server.max_connections) {
            bail!(
                "server.max_connections must be between 1 and 1000000, got {}",
                self.server.max_connections
            );
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            bail!("server.tls_cert and server.tls_key go together: set both, or neither");
        }
        if self.metrics.token.is_some() && self.metrics.token_file.is_some() {
            bail!("set metrics.token or metrics.token_file, not both");
        }
        if let Some(t) = &self.metrics.token
            && t.chars().count() < MIN_METRICS_TOKEN
        {
            bail!("metrics.token must be at least {MIN_METRICS_TOKEN} characters");
        }
        if self.server.max_runners_per_pool == 0 {
            bail!("server.max_runners_per_pool must be at least 1");
        }
        if let Some(n) = self.server.worker_threads
            && !(1..=512).contains(&n)
        {
            bail!("server.worker_threads must be between 1 and 512, got {n}");
        }
        self.scheduler
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.recovery
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut names = std::collections::HashSet::new();
        for p in &self.providers {
            hangar_core::ResourceName::parse(&p.name)
                .map_err(|e| anyhow::anyhow!("provider name {:?}: {e}", p.name))?;
            if !names.insert(p.name.as_str()) {
                bail!("provider {:?} is defined twice", p.name);
            }
            let (want, present) = match p.kind {
                ProviderKind::External => ("external", p.external.is_some()),
                ProviderKind::Libvirt => ("libvirt", p.libvirt.is_some()),
                ProviderKind::Azure => ("azure", p.azure.is_some()),
                ProviderKind::Fake => ("fake", true),
            };
            if let Some(a) = &p.azure {
                a.validate()
                    .map_err(|e| anyhow::anyhow!("provider {:?}: [provider.azure] {e}", p.name))?;
            }
            if !present {
                bail!(
                    "provider {:?} has kind = \"{want}\" but no [provider.{want}] table",
                    p.name
                );
            }
            let extra = [
                ("external", p.external.is_some()),
                ("libvirt", p.libvirt.is_some()),
                ("azure", p.azure.is_some()),
                ("fake", p.fake.is_some()),
            ]
            .into_iter()
            .find(|(k, set)| *set && *k != want);
            if let Some((other, _)) = extra {
                bail!(
                    "provider {:?} has kind = \"{want}\" but also a [provider.{other}] table",
                    p.name
                );
            }
        }
        Ok(())
    }

    pub fn bind_addr(&self) -> anyhow::Result<SocketAddr> {
        self.server.bind.parse().with_context(|| {
            format!(
                "server.bind {:?} is not an address like 127.0.0.1:9997",
                self.server.bind
            )
        })
    }

    /// The passphrase, from (in order) `HANGAR_PASSPHRASE`/`passphrase`,
    /// `passphrase_file`, or the systemd credential `passphrase`.
    pub fn passphrase(&self) -> anyhow::Result<Secret> {
        if let Some(p) = &self.database.passphrase {
            return Ok(Secret::new(p.clone()));
        }
        if let Some(f) = &self.database.passphrase_file {
            return read_secret_file(f, "database.passphrase_file");
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let f = Path::new(&dir).join("passphrase");
            if f.exists() {
                return read_secret_file(&f, "the systemd credential \"passphrase\"");
            }
        }
        bail!(
            "no database passphrase: set database.passphrase or database.passphrase_file, HANGAR_PASSPHRASE, or a systemd credential named \"passphrase\""
        )
    }

    /// The token `/metrics` requires, when `[metrics] token` or `token_file`
    /// is set, or else a systemd credential named `metrics-token` exists
    /// (the packaged unit loads one); refused when shorter than 16
    /// characters.
    pub fn metrics_token(&self) -> anyhow::Result<Option<Secret>> {
        let m = &self.metrics;
        let token = match (&m.token, &m.token_file) {
            (Some(_), Some(_)) => bail!("set metrics.token or metrics.token_file, not both"),
            (Some(t), None) => Secret::new(t.clone()),
            (None, Some(f)) => read_secret_file(f, "metrics.token_file")?,
            (None, None) => {
                let Some(f) = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .map(|d| Path::new(&d).join("metrics-token"))
                    .filter(|f| f.exists())
                else {
                    return Ok(None);
                };
                read_secret_file(&f, "the systemd credential \"metrics-token\"")?
            }
        };
        if token.expose().chars().count() < MIN_METRICS_TOKEN {
            bail!("the metrics token must be at least {MIN_METRICS_TOKEN} characters");
        }
        Ok(Some(token))
    }

    /// The JWT secret when configured (else the store generates one).
    pub fn jwt_secret(&self) -> anyhow::Result<Option<Secret>> {
        if let Some(s) = &self.auth.jwt_secret {
            return Ok(Some(Secret::new(s.clone())));
        }
        if let Some(f) = &self.auth.jwt_secret_file {
            return read_secret_file(f, "auth.jwt_secret_file").map(Some);
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let f = Path::new(&dir).join("jwt-secret");
            if f.exists() {
                return read_secret_file(&f, "the systemd credential \"jwt-secret\"").map(Some);
            }
        }
        Ok(None)
    }
}

pub fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} at {}", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        bail!("{what} at {} is empty", path.display());
    }
    Ok(Secret::new(value))
}
