//! hangard, the composition root: the only place that reads config files
//! and the environment, builds every component and wires them together.
//! Startup is a straight line that logs one line per step; one
//! cancellation token carries SIGTERM/SIGINT to the server and the
//! scheduler, and shutdown waits for both.

pub mod config;
pub mod front;
pub mod http;
pub mod import_garm;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hangar_core::{Provider, Secret};
use hangar_scheduler::{
    Metrics, Providers, Scheduler, SchedulerConfig, SchedulerDeps, SharedUrls, Urls,
};
use hangar_server::{AppDeps, AppState, Settings};
use hangar_store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat, ProviderKind, Synchronous};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Sets up logging as the config asks (`RUST_LOG` overrides the level).
pub fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.logging.level));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match config.logging.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub(crate) async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let mut opts = StoreOptions::new(config.database.url.clone(), config.passphrase()?);
    opts.synchronous_full = config.database.synchronous == Synchronous::Full;
    Store::open(&opts).await.map_err(|e| anyhow::anyhow!("{e}"))
}

/// `hangard migrate`: opens the database (creating it), applies migrations.
pub async fn migrate(config: &Config) -> anyhow::Result<Vec<i64>> {
    let store = open_store(config).await?;
    let applied = store.applied_migrations().await?;
    store.close().await;
    Ok(applied)
}

/// `hangard admin reset-password`: sets a new password for an admin (the
/// first one when none is named) and revokes every token issued before.
pub async fn reset_password(
    config: &Config,
    username: Option<&str>,
    password: &Secret,
) -> anyhow::Result<String> {
    hangar_server::auth::check_password_policy(password.expose())
        .map_err(|e| anyhow::anyhow!("{}", e.error))?;
    let store = open_store(config).await?;
    let name = match username {
        Some(u) => u.to_owned(),
        None => store
            .first_admin_name()
            .await?
            .context("there is no admin yet; run the first-run step (hangar init) instead")?,
    };
    let hash = hangar_server::auth::hash_password(password.expose())
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.error))?;
    store
        .set_password(&name, &hash)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.close().await;
    Ok(name)
}

/// Builds every configured provider. External providers are told the
/// controller id and every stored pool's extra specs (garm's contract
/// passes them on every call, not only on create).
pub async fn build_providers(config: &Config, store: &Store) -> anyhow::Result<Providers> {
    let pools = store.list_pools(None).await?;
    let c = &config.scheduler;
    let mut builder = Providers::builder().backoff(
        Duration::from_millis(c.backoff_base_ms),
        Duration::from_millis(c.backoff_max_ms),
    );
    for p in &config.providers {
        let provider: Arc<dyn Provider> = match p.kind {
            ProviderKind::Fake => {
                let settings = p.fake.clone().unwrap_or(
                    hangar_provider_fake::fake_provider::FakeProviderSettings {
                        create_latency_ms: 0,
                        delete_latency_ms: 0,
                        boot: hangar_provider_fake::fake_provider::BootMode::Simulate,
                        max_concurrency: 64,
                        calls_log: None,
                        fail_first_creates: 0,
                    },
                );
                let fails = settings.fail_first_creates as usize;
                let fake = hangar_provider_fake::fake_provider::FakeProvider::new(settings.into());
                fake.fail_next_creates(
                    fails,
                    hangar_core::ProviderError::Transient("injected create failure".into()),
                );
                Arc::new(fake)
            }
            ProviderKind::External => {
                let cfg = p.external.clone().context("validated")?;
                let ext = hangar_provider_external::ExternalProvider::new(cfg)
                    .with_context(|| format!("provider {:?}", p.name))?
                    .with_controller_id(store.controller_id());
                for pool in pools
                    .iter()
                    .filter(|x| x.spec.provider_name.as_str() == p.name)
                {
                    ext.remember_pool_extra_specs(pool.id, pool.spec.provider_extra_specs());
                }
                Arc::new(ext)
            }
            ProviderKind::Libvirt => {
                let cfg = p.libvirt.clone().context("validated")?;
                Arc::new(
                    hangar_provider_libvirt::LibvirtProvider::new(cfg)
                        .with_context(|| format!("provider {:?}", p.name))?,
                )
            }
            ProviderKind::Azure => {
                let cfg = p.azure.clone().context("validated")?;
                Arc::new(
                    azure_provider(&cfg, &|k| std::env::var(k).ok())
                        .with_context(|| format!("provider {:?}", p.name))?,
                )
            }
        };
        tracing::info!(provider = %p.name, kind = provider.kind(), "provider configured");
        builder = builder.add(&p.name, &p.description, provider, p.proxy())?;
    }
    Ok(builder.build())
}

/// Builds the Azure provider: secrets and the SSH key come from files, the
/// environment (`AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID`,
/// `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`, `IDENTITY_ENDPOINT`,
/// `IDENTITY_HEADER`) or the systemd credential `azure-client-secret`.
pub fn azure_provider(
    cfg: &hangar_provider_azure::AzureProviderConfig,
    env: &config::Env,
) -> anyhow::Result<hangar_provider_azure::AzureProvider> {
    use hangar_provider_azure::CredentialConfig;
    let mut secrets = hangar_provider_azure::ResolvedSecrets {
        tenant_id: env("AZURE_TENANT_ID"),
        client_id: env("AZURE_CLIENT_ID"),
        federated_token_file: env("AZURE_FEDERATED_TOKEN_FILE").map(Into::into),
        identity_endpoint: env("IDENTITY_ENDPOINT"),
        identity_header: env("IDENTITY_HEADER"),
        ..Default::default()
    };
    if let CredentialConfig::ClientSecret {
        client_secret,
        client_secret_file,
        ..
    } = &cfg.credential
    {
        secrets.client_secret = if let Some(s) = client_secret {
            Some(s.clone())
        } else if let Some(f) = client_secret_file {
            Some(
                config::read_secret_file(f, "credential.client_secret_file")?
                    .expose()
                    .to_owned(),
            )
        } else if let Some(s) = env("AZURE_CLIENT_SECRET") {
            Some(s)
        } else if let Some(dir) = env("CREDENTIALS_DIRECTORY") {
            let f = std::path::Path::new(&dir).join("azure-client-secret");
            f.exists()
                .then(|| {
                    config::read_secret_file(&f, "the systemd credential \"azure-client-secret\"")
                })
                .transpose()?
                .map(|s| s.expose().to_owned())
        } else {
            None
        };
    }
    let ssh_key = match &cfg.ssh_public_key_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read ssh_public_key_file {}", f.display()))?,
        ),
        None => None,
    };
    let credential =
        hangar_provider_azure::credential::build(&cfg.credential, &cfg.authority_host, secrets)
            .map_err(|e| anyhow::anyhow!("[provider.azure] credential: {e}"))?;
    hangar_provider_azure::AzureProvider::new(cfg.clone(), credential, ssh_key)
        .map_err(|e| anyhow::anyhow!("[provider.azure] {e}"))
}

/// Waits for SIGTERM or SIGINT, then cancels `token`.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        }
        token.cancel();
    });
}

/// SIGHUP reads the TLS certificate and key again (systemd's
/// `ExecReload`); without TLS there is nothing to reload, and the signal
/// no longer ends the process either way.
fn reload_on_sighup(tls: Option<tls::Tls>, cancel: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                got = hup.recv() => if got.is_none() { break },
            }
            match &tls {
                None => tracing::info!("SIGHUP received: nothing to reload (no server.tls_cert)"),
                Some(t) => match t.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %t.cert_path().display(), "SIGHUP received: TLS certificate reloaded")
                    }
                    Err(e) => tracing::error!(
                        error = format!("{e:#}"),
                        "SIGHUP received: TLS certificate NOT reloaded; the previous one stays in use"
                    ),
                },
            }
        }
    });
    Ok(())
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(false, state)
    {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Runs the daemon until `cancel`.
pub async fn serve(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let addr = config.bind_addr()?;
    tracing::info!(version = VERSION, "starting hangard");

    let store = open_store(&config).await?;
    let migrations = store.applied_migrations().await?;
    tracing::info!(
        database.backend = store.backend_name(),
        database = %store.path().map(|p| p.display().to_string()).unwrap_or_default(),
        migrations = ?migrations,
        controller.id = %store.controller_id(),
        "database ready"
    );

    let providers = build_providers(&config, &store).await?;
    if providers.is_empty() {
        tracing::warn!("no [[provider]] configured: pools cannot be created");
    }

    let forge = Arc::new(hangar_github::GitHubForge::new(config.github.clone()));
    // The runner scale set API: registration tokens come from the forge.
    let actions: Arc<dyn hangar_core::ActionsService> = Arc::new(
        hangar_github::ActionsClient::new(config.github.clone(), forge.clone()),
    );
    tracing::info!("GitHub client ready");

    let info = store.controller_info().await?;
    let urls = Urls::derive(
        &config.server.public_url,
        info.webhook_url.as_deref(),
        info.metadata_url.as_deref(),
        info.callback_url.as_deref(),
    );
    tracing::info!(webhooks = %urls.webhook_base_url, metadata = %urls.metadata_url, "public URLs");
    let urls = SharedUrls::new(urls);
    let metrics = Arc::new(Metrics::new());
    let scheduler = Scheduler::new(SchedulerDeps {
        store: store.clone(),
        forge: forge.clone(),
        actions: Some(actions.clone()),
        providers: providers.clone(),
        config: SchedulerConfig {
            recovery: config.recovery.clone(),
            ..config.scheduler.clone()
        },
        urls: urls.clone(),
        metrics: metrics.clone(),
    });
    // The id other replicas see in the pool leases (a new one every start).
    tracing::info!(replica.id = %scheduler.replica_id(), "scheduler replica");

    let stats_forge = forge.clone();
    let settings = Settings {
        public_url: config.server.public_url.clone(),
        webhook_body_limit: config.server.webhook_body_limit,
        webhook_read_timeout: Duration::from_secs(config.server.read_timeout_secs),
        version: VERSION.to_owned(),
        token_ttl: Duration::from_secs(config.auth.token_ttl_hours.max(1) * 3600),
        max_runners_per_pool: config.server.max_runners_per_pool,
        metrics_token: config.metrics_token()?,
        metrics_hook: Some(Box::new(move |m: &Metrics| {
            for s in stats_forge.stats() {
                if let Some(remaining) = s.rate_limit_remaining {
                    m.github_rate_limit_remaining
                        .get_or_create(&hangar_scheduler::metrics::CredentialsLabels {
                            credentials: s.credentials.clone(),
                        })
                        .set(remaining as i64);
                }
            }
        })),
    };
    let deps = AppDeps {
        store: store.clone(),
        scheduler: scheduler.clone(),
        providers,
        metrics,
        urls,
        forge,
        actions,
    };
    let jwt_secret = config.jwt_secret()?;
    let metrics_enabled = config.metrics.enabled;

    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(tls::Tls::load(cert, key)?),
        _ => None,
    };
    reload_on_sighup(tls.clone(), cancel.clone())?;
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let address = listener.local_addr()?;
    let grace = Duration::from_secs(config.server.shutdown_timeout_secs);
    // The HTTP listener and the intake writer get a thread and runtime of
    // their own (`front`): webhooks never wait behind scheduler work.
    let front = front::Front::start(
        listener,
        move || async move {
            let state = AppState::new(deps, settings, jwt_secret)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut app = hangar_server::router(state);
            if !metrics_enabled {
                app = app.route(
                    "/metrics",
                    axum::routing::get(|| async { axum::http::StatusCode::NOT_FOUND }),
                );
            }
            Ok(app)
        },
        http::Limits {
            read_timeout: Duration::from_secs(config.server.read_timeout_secs),
            max_connections: config.server.max_connections,
            grace,
        },
        cancel.clone(),
        tls.clone(),
    )
    .await?;
    tracing::info!(%address, thread = front::THREAD_NAME, tls = tls.is_some(), "listening");

    let sched = {
        let scheduler = scheduler.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { scheduler.run(cancel).await })
    };
    // The replica's id is what `pool_leases.holder` names: an operator (or
    // the fault suite) finds which process holds a pool by it.
    tracing::info!(replica.id = %scheduler.replica_id(), "scheduler running");

    notify(&[sd_notify::NotifyState::Ready]);
    let mut watchdog_usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut watchdog_usec) && watchdog_usec > 0 {
        let every = Duration::from_micros(watchdog_usec / 2);
        let cancel = cancel.clone();
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = tick.tick() => {
                        // Only claim liveness while the database answers.
                        if store.ping().await.is_ok() {
                            notify(&[sd_notify::NotifyState::Watchdog]);
                        }
                    }
                }
            }
        });
        tracing::info!(
            interval_ms = every.as_millis() as u64,
            "systemd watchdog enabled"
        );
    }

    cancel.cancelled().await;
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping: finishing open requests and scheduler work");
    match front.stopped().await {
        Ok(http::Stopped::Drained) => {}
        Ok(http::Stopped::GraceExpired) => tracing::warn!(
            grace_s = grace.as_secs(),
            "requests still open after the grace period"
        ),
        Err(e) => tracing::error!(error = %e, "server thread failed"),
    }
    if sched.await.is_err() {
        bail!("scheduler task panicked");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
