//! What each command does: pick a profile, make the calls, render the
//! answer. Every failure says what was being done, so the server's message
//! arrives with its context.

mod scaleset;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::CommandFactory;
use hangar_api::client::{Client, EntityKind, InstanceDelete, InstanceQuery, JobQuery};
use hangar_api::{
    ControllerUpdate, EndpointCreate, EndpointUpdate, EntityCreate, EntityResponse, EntityUpdate,
    FirstRunRequest, LoginRequest, LoginResponse, WebhookInstall,
};
use uuid::Uuid;

use crate::args::{
    Cli, Command, ControllerCmd, CredentialsCmd, EndpointCmd, EnterpriseCmd, EntityAddMore,
    EntityCmd, GithubCmd, JobCmd, NamedEntityAddArgs, OrganizationCmd, OutputFormat, PoolCmd,
    PoolLsFilter, PoolRunnerCmd, ProfileCmd, ProviderCmd, RepositoryCmd, RunnerCmd, WebhookCmd,
    WebhookSecretArgs,
};
use crate::input;
use crate::output::{self, Tabular};
use crate::profiles::{Profile, ProfileStore, Profiles};

/// `HANGAR_URL` / `HANGAR_TOKEN`: a session without (or over) a stored
/// profile, for CI jobs and one-off scripts.
#[derive(Clone, Default)]
pub struct Overrides {
    pub url: Option<String>,
    pub token: Option<String>,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overrides")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Overrides {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            url: var("HANGAR_URL"),
            token: var("HANGAR_TOKEN"),
        }
    }
}

/// Everything a command needs besides its own arguments.
#[derive(Debug)]
pub struct Ctx {
    pub format: OutputFormat,
    pub profile: Option<String>,
    pub store: ProfileStore,
    pub overrides: Overrides,
}

impl Ctx {
    /// A client for the chosen profile (or the environment's overrides).
    fn client(&self) -> anyhow::Result<Client> {
        if let (Some(url), Some(token)) = (&self.overrides.url, &self.overrides.token) {
            return Ok(Client::new(url)?.with_token(token.clone()));
        }
        let profiles = self.store.load()?;
        let (name, p) = profiles.resolve(self.profile.as_deref()).with_context(|| {
            if self.overrides.url.is_some() {
                "HANGAR_URL is set without HANGAR_TOKEN, and no profile can supply a token"
            } else {
                "cannot pick a profile"
            }
        })?;
        if let Some(token) = &self.overrides.token {
            return Ok(Client::new(&p.url)?.with_token(token.clone()));
        }
        if let Some(exp) = p.token_expires_at
            && exp <= Utc::now()
        {
            bail!(
                "the token of profile {name:?} expired at {}: run `hangar profile login {name}`",
                exp.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        Ok(Client::new(&p.url)
            .with_context(|| format!("profile {name:?} has a bad URL"))?
            .with_token(p.token.clone()))
    }

    fn list<T: Tabular + serde::Serialize>(&self, items: &[T]) -> anyhow::Result<String> {
        output::list(self.format, items)
    }

    /// [`Self::list`] for rows that name pools or entities by id: the
    /// default table shows their names, looked up here (JSON and wide
    /// tables need no look-up and make none).
    async fn list_named<T: Tabular + serde::Serialize>(
        &self,
        c: &Client,
        items: &[T],
    ) -> anyhow::Result<String> {
        let names = match self.format {
            OutputFormat::Table if !items.is_empty() => names(c).await,
            _ => output::Names::default(),
        };
        output::list_named(self.format, items, &names)
    }

    fn one<T: Tabular + serde::Serialize>(&self, item: &T) -> anyhow::Result<String> {
        output::one(self.format, item)
    }

    /// What a successful delete prints: nothing for JSON (the API answers
    /// with no body), a line for people.
    fn deleted(&self, what: String) -> String {
        match self.format {
            OutputFormat::Json => String::new(),
            OutputFormat::Table | OutputFormat::Wide => format!("{what} deleted"),
        }
    }
}

/// Entity and pool names for the default tables. A look-up that fails
/// leaves short ids in the table rather than failing the command.
async fn names(c: &Client) -> output::Names {
    let mut entities = Vec::new();
    for kind in [
        EntityKind::Repository,
        EntityKind::Organization,
        EntityKind::Enterprise,
    ] {
        entities.extend(c.list_entities(kind).await.unwrap_or_default());
    }
    let pools = c.list_pools().await.unwrap_or_default();
    output::Names::new(&entities, &pools)
}

/// Whether a failed command authenticates with a stored token (so a 401
/// means "log in again") rather than with a password.
pub fn uses_token(cmd: &Command) -> bool {
    !matches!(
        cmd,
        Command::Init(_)
            | Command::Version
            | Command::Completions { .. }
            | Command::Profile(
                ProfileCmd::Add(_)
                    | ProfileCmd::Login(_)
                    | ProfileCmd::Ls
                    | ProfileCmd::Switch { .. }
                    | ProfileCmd::Rm { .. }
            )
    )
}

/// Runs one command; the returned text goes to standard output.
pub async fn run(cli: Cli, ctx: &Ctx) -> anyhow::Result<String> {
    match cli.command {
        Command::Init(a) => {
            let password = input::password(&a.password, std::io::stdin())?;
            init(ctx, a, password).await
        }
        Command::Profile(p) => profile(ctx, p).await,
        Command::Endpoint(e) | Command::Github(GithubCmd::Endpoint(e)) => endpoint(ctx, e).await,
        Command::Credentials(c) | Command::Github(GithubCmd::Credentials(c)) => {
            credentials(ctx, c).await
        }
        Command::Repository(RepositoryCmd::Add(a)) => {
            let req = entity_create(Some(a.owner), a.name, a.credentials, &a.secret)?;
            entity_add(ctx, EntityKind::Repository, req, &a.more).await
        }
        Command::Repository(RepositoryCmd::Webhook(w)) => {
            webhook(ctx, EntityKind::Repository, w).await
        }
        Command::Organization(OrganizationCmd::Webhook(w)) => {
            webhook(ctx, EntityKind::Organization, w).await
        }
        Command::Organization(OrganizationCmd::Add(a)) => {
            named_entity_add(ctx, EntityKind::Organization, a).await
        }
        Command::Enterprise(EnterpriseCmd::Add(a)) => {
            named_entity_add(ctx, EntityKind::Enterprise, a).await
        }
        Command::Repository(RepositoryCmd::Common(c)) => {
            entity(ctx, EntityKind::Repository, c).await
        }
        Command::Organization(OrganizationCmd::Common(c)) => {
            entity(ctx, EntityKind::Organization, c).await
        }
        Command::Enterprise(EnterpriseCmd::Common(c)) => {
            entity(ctx, EntityKind::Enterprise, c).await
        }
        Command::Pool(p) => pool(ctx, p).await,
        Command::Scaleset(s) => scaleset::run(ctx, s).await,
        Command::Runner(r) => runner(ctx, r).await,
        Command::Job(JobCmd::Ls(a)) => {
            let c = ctx.client()?;
            let q = JobQuery {
                status: a.status,
                pool_id: a.pool.as_deref().map(input::pool_id).transpose()?,
                limit: a.limit,
            };
            let jobs = c.list_jobs(&q).await.context("cannot list jobs")?;
            ctx.list_named(&c, &jobs).await
        }
        Command::Provider(ProviderCmd::Ls) => {
            let c = ctx.client()?;
            ctx.list(&c.list_providers().await.context("cannot list providers")?)
        }
        Command::Controller(ControllerCmd::Show) => {
            let c = ctx.client()?;
            ctx.one(
                &c.get_controller()
                    .await
                    .context("cannot show the controller")?,
            )
        }
        Command::Controller(ControllerCmd::Update(a)) => {
            let req = controller_update(a.metadata_url, a.callback_url, a.webhook_url)?;
            let c = ctx.client()?;
            ctx.one(
                &c.update_controller(&req)
                    .await
                    .context("cannot update the controller")?,
            )
        }
        Command::Version => version(ctx).await,
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hangar", &mut buf);
            Ok(String::from_utf8(buf).context("completion script is not UTF-8")?)
        }
    }
}

/// `hangar version`: the client's version always; the server's when a
/// profile (or `HANGAR_URL`/`HANGAR_TOKEN`) reaches one, else why not.
async fn version(ctx: &Ctx) -> anyhow::Result<String> {
    let client = env!("CARGO_PKG_VERSION");
    let server = match ctx.client() {
        Err(e) => Err(format!("{e:#}")),
        Ok(c) => c
            .get_controller()
            .await
            .map(|i| i.version)
            .map_err(|e| e.to_string()),
    };
    Ok(match ctx.format {
        OutputFormat::Json => output::json(&serde_json::json!({
            "client": client,
            "server": server.as_ref().ok(),
            "server_error": server.as_ref().err(),
        }))?,
        OutputFormat::Table | OutputFormat::Wide => match server {
            Ok(v) => format!("client: hangar {client}\nserver: hangard {v}"),
            Err(e) => format!("client: hangar {client}\nserver: unknown ({e})"),
        },
    })
}

fn controller_update(
    metadata_url: Option<String>,
    callback_url: Option<String>,
    webhook_url: Option<String>,
) -> anyhow::Result<ControllerUpdate> {
    // An empty value is allowed: it restores the URL derived from public_url.
    for (flag, v) in [
        ("--metadata-url", &metadata_url),
        ("--callback-url", &callback_url),
        ("--webhook-url", &webhook_url),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            input::http_url(flag, v)?;
        }
    }
    Ok(ControllerUpdate {
        metadata_url,
        callback_url,
        webhook_base_url: webhook_url,
    })
}

async fn login(client: &Client, username: &str, password: String) -> anyhow::Result<LoginResponse> {
    client
        .login(&LoginRequest {
            username: username.to_owned(),
            password,
        })
        .await
        .with_context(|| format!("cannot log in to {} as {username:?}", client.base_url()))
}

fn saved(name: &str, url: &str, active: bool) -> String {
    let active = if active { " (active)" } else { "" };
    format!("profile {name:?} saved for {url}{active}")
}

async fn init(ctx: &Ctx, a: crate::args::InitArgs, password: String) -> anyhow::Result<String> {
    let controller =
        if a.metadata_url.is_some() || a.callback_url.is_some() || a.webhook_url.is_some() {
            Some(controller_update(
                a.metadata_url,
                a.callback_url,
                a.webhook_url,
            )?)
        } else {
            None
        };
    let mut profiles = ctx.store.load()?;
    profiles.check_new(&a.name)?;
    let client = Client::new(&a.url)?;
    let user = client
        .first_run(&FirstRunRequest {
            username: a.username.clone(),
            password: password.clone(),
            email: a.email,
            full_name: a.full_name,
        })
        .await
        .map_err(|e| {
            let hint = if e.status() == Some(409) {
                "; to use it from here, run `hangar profile add`"
            } else {
                ""
            };
            anyhow::Error::new(e).context(format!("cannot initialise {}{hint}", a.url))
        })?;
    let session = login(&client, &a.username, password).await?;
    profiles.add(
        &a.name,
        Profile {
            url: a.url.clone(),
            username: a.username,
            token: session.token.clone(),
            token_expires_at: Some(session.expires_at),
        },
    )?;
    profiles.active = Some(a.name.clone());
    ctx.store.save(&profiles)?;
    if let Some(req) = controller {
        client
            .with_token(session.token)
            .update_controller(&req)
            .await
            .context(
                "the admin was created and the profile saved, but the controller URLs were not set",
            )?;
    }
    match ctx.format {
        OutputFormat::Json => output::json(&user),
        OutputFormat::Table | OutputFormat::Wide => Ok(format!(
            "{}\n{}",
            ctx.one(&user)?,
            saved(&a.name, &a.url, true)
        )),
    }
}

async fn profile(ctx: &Ctx, cmd: ProfileCmd) -> anyhow::Result<String> {
    let mut profiles = ctx.store.load()?;
    match cmd {
        ProfileCmd::Add(a) => {
            profiles.check_new(&a.name)?;
            let password = input::password(&a.password, std::io::stdin())?;
            let client = Client::new(&a.url)?;
            let session = login(&client, &a.username, password).await?;
            profiles.add(
                &a.name,
                Profile {
                    url: a.url.clone(),
                    username: a.username,
                    token: session.token,
                    token_expires_at: Some(session.expires_at),
                },
            )?;
            profiles.active = Some(a.name.clone());
            ctx.store.save(&profiles)?;
            summary(ctx, &profiles, &a.name, || saved(&a.name, &a.url, true))
        }
        ProfileCmd::Ls => ctx.list(&profiles.summaries()),
        ProfileCmd::Switch { name } => {
            profiles.switch(&name)?;
            ctx.store.save(&profiles)?;
            summary(ctx, &profiles, &name, || {
                format!("profile {name:?} is now active")
            })
        }
        ProfileCmd::Rm { name } => {
            profiles.remove(&name)?;
            ctx.store.save(&profiles)?;
            Ok(ctx.deleted(format!("profile {name:?}")))
        }
        ProfileCmd::Login(a) => {
            let requested = a.name.as_deref().or(ctx.profile.as_deref());
            let (name, p) = profiles.resolve(requested)?;
            let (name, mut p) = (name.to_owned(), p.clone());
            let username = a.username.unwrap_or_else(|| p.username.clone());
            let password = input::password(&a.password, std::io::stdin())?;
            let session = login(&Client::new(&p.url)?, &username, password).await?;
            p.username = username;
            p.token = session.token;
            p.token_expires_at = Some(session.expires_at);
            profiles.profiles.insert(name.clone(), p);
            ctx.store.save(&profiles)?;
            let exp = session.expires_at.format("%Y-%m-%d %H:%M:%S UTC");
            summary(ctx, &profiles, &name, || {
                format!("profile {name:?} has a fresh token (expires {exp})")
            })
        }
    }
}

fn summary(
    ctx: &Ctx,
    profiles: &Profiles,
    name: &str,
    line: impl FnOnce() -> String,
) -> anyhow::Result<String> {
    match ctx.format {
        OutputFormat::Table | OutputFormat::Wide => Ok(line()),
        OutputFormat::Json => {
            let s = profiles.summaries().into_iter().find(|s| s.name == name);
            output::json(&s)
        }
    }
}

async fn endpoint(ctx: &Ctx, cmd: EndpointCmd) -> anyhow::Result<String> {
    match cmd {
        EndpointCmd::Add(a) => {
            input::http_url("--base-url", &a.base_url)?;
            input::http_url("--api-base-url", &a.api_base_url)?;
            let req = EndpointCreate {
                name: a.name,
                description: a.description,
                base_url: a.base_url,
                api_base_url: a.api_base_url,
                ca_bundle: a
                    .ca_cert_path
                    .as_deref()
                    .map(input::ca_bundle)
                    .transpose()?,
            };
            let c = ctx.client()?;
            let e = c
                .create_endpoint(&req)
                .await
                .with_context(|| format!("cannot add endpoint {:?}", req.name))?;
            ctx.one(&e)
        }
        EndpointCmd::Ls => {
            let c = ctx.client()?;
            ctx.list(&c.list_endpoints().await.context("cannot list endpoints")?)
        }
        EndpointCmd::Show { name } => {
            let c = ctx.client()?;
            let e = c
                .get_endpoint(&name)
                .await
                .with_context(|| format!("cannot show endpoint {name:?}"))?;
            ctx.one(&e)
        }
        EndpointCmd::Update(a) => {
            for (flag, v) in [
                ("--base-url", &a.base_url),
                ("--api-base-url", &a.api_base_url),
            ] {
                if let Some(v) = v {
                    input::http_url(flag, v)?;
                }
            }
            let ca_bundle = match (&a.ca_cert_path, a.clear_ca_cert) {
                (Some(p), _) => Some(input::ca_bundle(p)?),
                // The API removes the bundle on an empty string.
                (None, true) => Some(String::new()),
                (None, false) => None,
            };
            let req = EndpointUpdate {
                description: a.description,
                base_url: a.base_url,
                api_base_url: a.api_base_url,
                ca_bundle,
            };
            if req.description.is_none()
                && req.base_url.is_none()
                && req.api_base_url.is_none()
                && req.ca_bundle.is_none()
            {
                bail!(
                    "nothing to update: give --description, --base-url, --api-base-url, --ca-cert-path or --clear-ca-cert"
                );
            }
            let c = ctx.client()?;
            let e = c
                .update_endpoint(&a.name, &req)
                .await
                .with_context(|| format!("cannot update endpoint {:?}", a.name))?;
            ctx.one(&e)
        }
        EndpointCmd::Rm { name } => {
            let c = ctx.client()?;
            c.delete_endpoint(&name)
                .await
                .with_context(|| format!("cannot delete endpoint {name:?}"))?;
            Ok(ctx.deleted(format!("endpoint {name:?}")))
        }
    }
}

async fn credentials(ctx: &Ctx, cmd: CredentialsCmd) -> anyhow::Result<String> {
    match cmd {
        CredentialsCmd::Add(a) => {
            let req = input::credentials_create(&a)?;
            let c = ctx.client()?;
            let r = c
                .create_credentials(&req)
                .await
                .with_context(|| format!("cannot add credentials {:?}", req.name))?;
            ctx.one(&r)
        }
        CredentialsCmd::Ls => {
            let c = ctx.client()?;
            ctx.list(
                &c.list_credentials()
                    .await
                    .context("cannot list credentials")?,
            )
        }
        CredentialsCmd::Show { name } => {
            let c = ctx.client()?;
            let r = c
                .get_credentials(&name)
                .await
                .with_context(|| format!("cannot show credentials {name:?}"))?;
            ctx.one(&r)
        }
        CredentialsCmd::Update(a) => {
            let req = input::credentials_update(a.description, &a.secrets)?;
            let c = ctx.client()?;
            let r = c
                .update_credentials(&a.name, &req)
                .await
                .with_context(|| format!("cannot update credentials {:?}", a.name))?;
            ctx.one(&r)
        }
        CredentialsCmd::Rm { name } => {
            let c = ctx.client()?;
            c.delete_credentials(&name)
                .await
                .with_context(|| format!("cannot delete credentials {name:?}"))?;
            Ok(ctx.deleted(format!("credentials {name:?}")))
        }
    }
}

fn entity_create(
    owner: Option<String>,
    name: String,
    credentials: String,
    secret: &WebhookSecretArgs,
) -> anyhow::Result<EntityCreate> {
    if let Some(s) = &secret.webhook_secret
        && s.is_empty()
    {
        // Usually an unset shell variable: refusing beats silently
        // generating a secret GitHub does not know.
        bail!(
            "--webhook-secret is empty; give a secret, or use --random-webhook-secret to have one generated"
        );
    }
    Ok(EntityCreate {
        owner,
        name,
        credentials_name: credentials,
        webhook_secret: if secret.random_webhook_secret {
            None
        } else {
            secret.webhook_secret.clone()
        },
    })
}

async fn named_entity_add(
    ctx: &Ctx,
    kind: EntityKind,
    a: NamedEntityAddArgs,
) -> anyhow::Result<String> {
    let req = entity_create(None, a.name, a.credentials, &a.secret)?;
    entity_add(ctx, kind, req, &a.more).await
}

fn display_name(kind: EntityKind, owner: Option<&str>, name: &str) -> String {
    match (kind, owner) {
        (EntityKind::Repository, Some(o)) if !o.is_empty() => format!("{kind} {o}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

async fn entity_add(
    ctx: &Ctx,
    kind: EntityKind,
    req: EntityCreate,
    more: &EntityAddMore,
) -> anyhow::Result<String> {
    let c = ctx.client()?;
    if more.install_webhook && kind == EntityKind::Enterprise {
        bail!(
            "--install-webhook: GitHub's REST API has no enterprise webhooks; create the hook by hand"
        );
    }
    if let Some(endpoint) = &more.endpoint {
        let creds = c
            .get_credentials(&req.credentials_name)
            .await
            .with_context(|| format!("cannot look up credentials {:?}", req.credentials_name))?;
        if !creds.endpoint.eq_ignore_ascii_case(endpoint) {
            bail!(
                "credentials {:?} are for endpoint {:?}, not {endpoint:?}",
                req.credentials_name,
                creds.endpoint
            );
        }
    }
    let what = display_name(kind, req.owner.as_deref(), &req.name);
    let e = c
        .create_entity(kind, &req)
        .await
        .with_context(|| format!("cannot add {what}"))?;
    let hook = if more.install_webhook {
        Some(
            c.install_webhook(kind, e.id, &WebhookInstall::default())
                .await
                .with_context(|| {
                    format!(
                        "{what} was added (id {}), but its webhook could not be installed; retry with `hangar {} webhook install {}`",
                        e.id,
                        command_of(kind),
                        e.id
                    )
                })?,
        )
    } else {
        None
    };
    match (ctx.format, &e.webhook_secret, hook) {
        (OutputFormat::Table | OutputFormat::Wide, _, Some(h)) => Ok(format!(
            "{}\nwebhook installed on GitHub (id {}) for {}",
            ctx.one(&e)?,
            h.id,
            h.url
        )),
        (OutputFormat::Table | OutputFormat::Wide, Some(secret), None) => Ok(format!(
            "{}\nwebhook secret (generated; shown only this once): {secret}\nset it, with content type application/json, on the GitHub webhook for {}",
            ctx.one(&e)?,
            e.webhook_url
        )),
        _ => ctx.one(&e),
    }
}

/// `repo|org webhook install|show|uninstall`.
async fn webhook(ctx: &Ctx, kind: EntityKind, cmd: WebhookCmd) -> anyhow::Result<String> {
    let c = ctx.client()?;
    match cmd {
        WebhookCmd::Install(a) => {
            let id = resolve_entity_on(&c, kind, &a.id, a.endpoint.as_deref()).await?;
            let h = c
                .install_webhook(
                    kind,
                    id,
                    &WebhookInstall {
                        insecure_ssl: a.insecure,
                    },
                )
                .await
                .with_context(|| format!("cannot install the webhook of {kind} {}", a.id))?;
            ctx.one(&h)
        }
        WebhookCmd::Show(a) => {
            let id = resolve_entity_on(&c, kind, &a.id, a.endpoint.as_deref()).await?;
            let h = c
                .get_webhook(kind, id)
                .await
                .with_context(|| format!("cannot show the webhook of {kind} {}", a.id))?;
            ctx.one(&h)
        }
        WebhookCmd::Uninstall(a) => {
            let id = resolve_entity_on(&c, kind, &a.id, a.endpoint.as_deref()).await?;
            c.uninstall_webhook(kind, id)
                .await
                .with_context(|| format!("cannot uninstall the webhook of {kind} {}", a.id))?;
            Ok(ctx.deleted(format!("webhook of {kind} {id}")))
        }
    }
}

/// The singular command name, for hints.
fn command_of(kind: EntityKind) -> &'static str {
    kind.as_str()
}

/// An entity by id, or by name (`owner/name` or a unique `name` for
/// repositories), as garm-cli resolves them.
async fn resolve_entity(c: &Client, kind: EntityKind, arg: &str) -> anyhow::Result<Uuid> {
    resolve_entity_on(c, kind, arg, None).await
}

/// [`resolve_entity`], among the entities of `endpoint` when given.
async fn resolve_entity_on(
    c: &Client,
    kind: EntityKind,
    arg: &str,
    endpoint: Option<&str>,
) -> anyhow::Result<Uuid> {
    if let Ok(id) = arg.trim().parse::<Uuid>() {
        return Ok(id);
    }
    let all = c
        .list_entities(kind)
        .await
        .with_context(|| format!("cannot look up {kind} {arg:?}"))?;
    let (owner, name) = match (kind, arg.split_once('/')) {
        (EntityKind::Repository, Some((o, n))) => (Some(o), n),
        _ => (None, arg),
    };
    let hits: Vec<&EntityResponse> = all
        .iter()
        .filter(|e| {
            e.name.eq_ignore_ascii_case(name)
                && owner.is_none_or(|o| e.owner.eq_ignore_ascii_case(o))
                && endpoint.is_none_or(|p| e.endpoint.eq_ignore_ascii_case(p))
        })
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.id),
        [] => bail!(
            "no {kind} with id or name {arg:?} (see `hangar {} ls`)",
            command_of(kind)
        ),
        many => bail!(
            "{arg:?} names {} {kind} entries, on endpoints {}; pick one with --endpoint, or use one of their ids: {}",
            many.len(),
            many.iter()
                .map(|e| e.endpoint.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            many.iter()
                .map(|e| e.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

async fn entity(ctx: &Ctx, kind: EntityKind, cmd: EntityCmd) -> anyhow::Result<String> {
    let c = ctx.client()?;
    match cmd {
        EntityCmd::Ls(f) => {
            let all = c
                .list_entities(kind)
                .await
                .with_context(|| format!("cannot list {}", kind.collection()))?;
            let shown: Vec<EntityResponse> = all
                .into_iter()
                .filter(|e| {
                    f.name
                        .as_deref()
                        .is_none_or(|n| e.name.eq_ignore_ascii_case(n))
                })
                .filter(|e| {
                    f.owner
                        .as_deref()
                        .is_none_or(|o| e.owner.eq_ignore_ascii_case(o))
                })
                .filter(|e| {
                    f.endpoint
                        .as_deref()
                        .is_none_or(|p| e.endpoint.eq_ignore_ascii_case(p))
                })
                .collect();
            ctx.list(&shown)
        }
        EntityCmd::Show { id, endpoint } => {
            let uuid = resolve_entity_on(&c, kind, &id, endpoint.as_deref()).await?;
            let e = c
                .get_entity(kind, uuid)
                .await
                .with_context(|| format!("cannot show {kind} {id}"))?;
            ctx.one(&e)
        }
        EntityCmd::Update(a) => {
            if a.credentials.is_none() && a.webhook_secret.is_none() {
                bail!("nothing to update: give --credentials or --webhook-secret");
            }
            if a.webhook_secret.as_deref() == Some("") {
                bail!("--webhook-secret must not be empty");
            }
            let uuid = resolve_entity_on(&c, kind, &a.id, a.endpoint.as_deref()).await?;
            let req = EntityUpdate {
                credentials_name: a.credentials,
                webhook_secret: a.webhook_secret,
            };
            let e = c
                .update_entity(kind, uuid, &req)
                .await
                .with_context(|| format!("cannot update {kind} {}", a.id))?;
            ctx.one(&e)
        }
        EntityCmd::Rm { id, endpoint } => {
            let uuid = resolve_entity_on(&c, kind, &id, endpoint.as_deref()).await?;
            c.delete_entity(kind, uuid)
                .await
                .with_context(|| format!("cannot delete {kind} {id}"))?;
            Ok(ctx.deleted(format!("{kind} {uuid}")))
        }
    }
}

/// The entity a `--repo`/`--org`/`--enterprise` flag names.
fn pool_owner(
    repo: Option<String>,
    org: Option<String>,
    enterprise: Option<String>,
) -> Option<(EntityKind, String)> {
    repo.map(|r| (EntityKind::Repository, r))
        .or(org.map(|o| (EntityKind::Organization, o)))
        .or(enterprise.map(|e| (EntityKind::Enterprise, e)))
}

async fn pool(ctx: &Ctx, cmd: PoolCmd) -> anyhow::Result<String> {
    match cmd {
        PoolCmd::Add(a) => {
            let req = input::pool_create(&a)?;
            let (kind, arg) = pool_owner(a.owner.repo, a.owner.org, a.owner.enterprise)
                .context("give --repo, --org or --enterprise")?;
            let c = ctx.client()?;
            let id = resolve_entity(&c, kind, &arg).await?;
            let p = c
                .create_pool(kind, id, &req)
                .await
                .with_context(|| format!("cannot add a pool to {kind} {arg}"))?;
            ctx.one(&p)
        }
        PoolCmd::Ls(PoolLsFilter {
            repo,
            org,
            enterprise,
            all: _,
        }) => {
            let c = ctx.client()?;
            let pools = match pool_owner(repo, org, enterprise) {
                Some((kind, arg)) => {
                    let id = resolve_entity(&c, kind, &arg).await?;
                    c.list_entity_pools(kind, id)
                        .await
                        .with_context(|| format!("cannot list the pools of {kind} {arg}"))?
                }
                None => c.list_pools().await.context("cannot list pools")?,
            };
            ctx.list_named(&c, &pools).await
        }
        PoolCmd::Show { id } => {
            let uuid = input::pool_id(&id)?;
            let c = ctx.client()?;
            let p = c
                .get_pool(uuid)
                .await
                .with_context(|| format!("cannot show pool {uuid}"))?;
            ctx.one(&p)
        }
        PoolCmd::Update(a) => {
            let uuid = input::pool_id(&a.id)?;
            let req = input::pool_update(&a)?;
            let c = ctx.client()?;
            let p = c
                .update_pool(uuid, &req)
                .await
                .with_context(|| format!("cannot update pool {uuid}"))?;
            ctx.one(&p)
        }
        PoolCmd::Rm { id } => {
            let uuid = input::pool_id(&id)?;
            let c = ctx.client()?;
            c.delete_pool(uuid)
                .await
                .with_context(|| format!("cannot delete pool {uuid}"))?;
            Ok(ctx.deleted(format!("pool {uuid}")))
        }
        PoolCmd::Userdata { id } => {
            let uuid = input::pool_id(&id)?;
            let c = ctx.client()?;
            let u = c
                .pool_userdata(uuid)
                .await
                .with_context(|| format!("cannot render the boot data of pool {uuid}"))?;
            match ctx.format {
                OutputFormat::Json => output::json(&u),
                _ => {
                    // The document itself on stdout (pipe it to a file or
                    // `cloud-init schema`); what the placeholders mean on
                    // stderr.
                    for p in &u.placeholders {
                        eprintln!("# placeholder: {p}");
                    }
                    Ok(u.userdata.trim_end().to_owned())
                }
            }
        }
        PoolCmd::Runner(PoolRunnerCmd::List {
            pool_id,
            include_deleted,
        }) => {
            let uuid = input::pool_id(&pool_id)?;
            let c = ctx.client()?;
            let q = InstanceQuery {
                pool_id: Some(uuid),
                include_deleted,
            };
            let runners = c.list_instances(&q).await.context("cannot list runners")?;
            ctx.list_named(&c, &runners).await
        }
    }
}

async fn runner(ctx: &Ctx, cmd: RunnerCmd) -> anyhow::Result<String> {
    match cmd {
        RunnerCmd::Ls(a) => {
            let pool = a
                .pool_id
                .or(a.pool)
                .as_deref()
                .map(input::pool_id)
                .transpose()?;
            let c = ctx.client()?;
            let mut q = InstanceQuery {
                pool_id: pool,
                include_deleted: a.include_deleted,
            };
            let owner = pool_owner(a.repo, a.org, a.enterprise);
            let instances = match owner {
                None => c.list_instances(&q).await.context("cannot list runners")?,
                Some((kind, arg)) => {
                    // The API lists by pool; an entity's runners are those
                    // of its pools.
                    let id = resolve_entity(&c, kind, &arg).await?;
                    let pools = c
                        .list_entity_pools(kind, id)
                        .await
                        .with_context(|| format!("cannot list the pools of {kind} {arg}"))?;
                    q.pool_id = None;
                    let all = c.list_instances(&q).await.context("cannot list runners")?;
                    all.into_iter()
                        .filter(|i| pools.iter().any(|p| p.id == i.pool_id))
                        .collect()
                }
            };
            ctx.list_named(&c, &instances).await
        }
        RunnerCmd::Show { name } => {
            let c = ctx.client()?;
            let i = c
                .get_instance(&name)
                .await
                .with_context(|| format!("cannot show runner {name:?}"))?;
            ctx.one(&i)
        }
        RunnerCmd::Rm(a) => {
            let c = ctx.client()?;
            let opts = InstanceDelete {
                force_remove_runner: a.force_remove_runner,
                bypass_github_unauthorized: a.bypass_github_unauthorized,
            };
            let i = c
                .delete_instance(&a.name, opts)
                .await
                .with_context(|| format!("cannot remove runner {:?}", a.name))?;
            match ctx.format {
                OutputFormat::Json => output::json(&i),
                OutputFormat::Table | OutputFormat::Wide => Ok(format!(
                    "{}\nrunner {:?} is being removed (off GitHub first, then its VM)",
                    ctx.one(&i)?,
                    a.name
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn ctx(dir: &std::path::Path, overrides: Overrides) -> Ctx {
        Ctx {
            format: OutputFormat::Table,
            profile: None,
            store: ProfileStore::at(dir),
            overrides,
        }
    }

    #[test]
    fn client_needs_a_profile_or_both_overrides() {
        let tmp = tempfile::tempdir().unwrap();
        let e = format!(
            "{:#}",
            ctx(tmp.path(), Overrides::default()).client().unwrap_err()
        );
        assert!(
            e.contains("hangar init") && e.contains("hangar profile add"),
            "{e}"
        );

        let only_url = Overrides {
            url: Some("http://127.0.0.1:1".into()),
            token: None,
        };
        let e = format!("{:#}", ctx(tmp.path(), only_url).client().unwrap_err());
        assert!(e.contains("HANGAR_URL is set without HANGAR_TOKEN"), "{e}");

        let both = Overrides {
            url: Some("http://127.0.0.1:1".into()),
            token: Some("t".into()),
        };
        let c = ctx(tmp.path(), both).client().unwrap();
        assert_eq!(c.base_url().as_str(), "http://127.0.0.1:1/");
    }

    #[test]
    fn an_expired_token_asks_for_a_login() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ProfileStore::at(tmp.path());
        let mut p = Profiles::default();
        p.add(
            "old",
            Profile {
                url: "http://127.0.0.1:1".into(),
                username: "admin".into(),
                token: "t".into(),
                token_expires_at: Some(Utc::now() - chrono::Duration::hours(1)),
            },
        )
        .unwrap();
        p.switch("old").unwrap();
        store.save(&p).unwrap();
        let e = ctx(tmp.path(), Overrides::default())
            .client()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expired") && e.contains("hangar profile login old"),
            "{e}"
        );
    }

    #[test]
    fn empty_webhook_secret_is_refused() {
        let secret = |s: Option<&str>, random: bool| WebhookSecretArgs {
            webhook_secret: s.map(str::to_owned),
            random_webhook_secret: random,
        };
        let e = entity_create(
            Some("o".into()),
            "n".into(),
            "c".into(),
            &secret(Some(""), false),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--random-webhook-secret"), "{e}");
        let r = entity_create(
            Some("o".into()),
            "n".into(),
            "c".into(),
            &secret(None, true),
        )
        .unwrap();
        assert_eq!(r.webhook_secret, None);
        let r = entity_create(None, "acme".into(), "c".into(), &secret(Some("s"), false)).unwrap();
        assert_eq!((r.owner, r.webhook_secret.as_deref()), (None, Some("s")));
    }

    #[test]
    fn controller_update_checks_urls_but_allows_reset() {
        assert!(controller_update(Some("not a url".into()), None, None).is_err());
        let u =
            controller_update(Some(String::new()), None, Some("https://h/hooks".into())).unwrap();
        assert_eq!(u.metadata_url.as_deref(), Some(""));
        assert_eq!(u.webhook_base_url.as_deref(), Some("https://h/hooks"));
    }

    #[test]
    fn which_commands_use_a_stored_token() {
        let cmd = |line: &[&str]| {
            let mut argv = vec!["hangar"];
            argv.extend_from_slice(line);
            Cli::try_parse_from(argv).unwrap().command
        };
        assert!(uses_token(&cmd(&["repo", "ls"])));
        assert!(uses_token(&cmd(&["controller", "show"])));
        assert!(!uses_token(&cmd(&["profile", "login", "-p", "x"])));
        assert!(!uses_token(&cmd(&[
            "init",
            "--url",
            "http://h",
            "--username",
            "u",
            "-p",
            "x"
        ])));
    }

    #[tokio::test]
    async fn completions_are_generated() {
        let tmp = tempfile::tempdir().unwrap();
        for shell in ["bash", "zsh", "fish"] {
            let cli = Cli::try_parse_from(["hangar", "completions", shell]).unwrap();
            let out = run(cli, &ctx(tmp.path(), Overrides::default()))
                .await
                .unwrap();
            assert!(
                out.contains("hangar") && out.contains("repository"),
                "{shell}: {out}"
            );
        }
    }
}
