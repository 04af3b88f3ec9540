//! The command line, as clap types. Commands and flag names follow DESIGN §4
//! and garm-cli's where the concept is the same, so a garm user's commands
//! work with the binary renamed; garm's aliases (`list`, `create`, `delete`,
//! `get`, …) are accepted too.

mod scaleset;

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

pub use scaleset::{ScaleSetAddArgs, ScaleSetCmd, ScaleSetSettings, ScaleSetUpdateArgs};

/// Admin CLI of Hangar, the autoscaler of ephemeral GitHub Actions runners.
///
/// Profiles (server URL + token) live in the user's config dir, or in
/// $HANGAR_CLI_CONFIG_DIR. $HANGAR_URL with $HANGAR_TOKEN (or $HANGAR_TOKEN
/// alone, with the profile's URL) bypass the stored token.
#[derive(Debug, Parser)]
#[command(name = "hangar", version, propagate_version = true)]
pub struct Cli {
    /// Output format: tables for people (`table` fits 100 columns and shows
    /// names; `wide` has every column, ids included), or exactly the API's
    /// JSON.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table, alias = "format")]
    pub output: OutputFormat,

    /// Wide tables: every column, ids included (`--output wide`).
    #[arg(long, short = 'l', global = true)]
    pub long: bool,

    /// Profile to use instead of the active one.
    #[arg(long, global = true, env = "HANGAR_PROFILE")]
    pub profile: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Wide,
    Json,
}

impl Cli {
    /// The format asked for: `--long` widens a table; JSON stays JSON.
    pub fn format(&self) -> OutputFormat {
        match self.output {
            OutputFormat::Table if self.long => OutputFormat::Wide,
            f => f,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Initialise a new server: create its admin, log in and save a profile.
    Init(InitArgs),
    /// Manage profiles (one per Hangar server).
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// GitHub or GHES endpoints.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Credentials (PAT or GitHub App) for an endpoint.
    #[command(subcommand, visible_alias = "creds")]
    Credentials(CredentialsCmd),
    /// Repositories served by Hangar.
    #[command(subcommand, visible_alias = "repo")]
    Repository(RepositoryCmd),
    /// Organizations served by Hangar.
    #[command(subcommand, visible_alias = "org")]
    Organization(OrganizationCmd),
    /// Enterprises served by Hangar.
    #[command(subcommand, visible_alias = "ent")]
    Enterprise(EnterpriseCmd),
    /// Pools of runners.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Runner scale sets: jobs from GitHub's queue, no inbound webhook.
    #[command(subcommand, visible_alias = "scale-set")]
    Scaleset(ScaleSetCmd),
    /// Runner instances.
    #[command(subcommand, alias = "run")]
    Runner(RunnerCmd),
    /// Workflow jobs Hangar has recorded.
    #[command(subcommand, alias = "jobs")]
    Job(JobCmd),
    /// Providers configured in hangard.
    #[command(subcommand)]
    Provider(ProviderCmd),
    /// This Hangar installation and its public URLs.
    #[command(subcommand, alias = "controller-info")]
    Controller(ControllerCmd),
    /// Print the CLI's version and, with a usable profile, the server's.
    Version,
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// garm-cli's spelling (`github endpoint …`, `github credentials …`).
    #[command(subcommand, hide = true)]
    Github(GithubCmd),
}

#[derive(Debug, Subcommand)]
pub enum GithubCmd {
    /// Same as `hangar endpoint`.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Same as `hangar credentials`.
    #[command(subcommand, alias = "creds")]
    Credentials(CredentialsCmd),
}

// A password from a flag or from standard input (kept out of `ps`).
#[derive(Debug, Clone, Args)]
pub struct PasswordArgs {
    /// The password (visible to other local users in the process list; prefer --password-stdin).
    #[arg(long, short = 'p', conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Name of the profile to save.
    #[arg(long, short = 'n', default_value = "default")]
    pub name: String,
    /// Base URL of the Hangar server (its `public_url`).
    #[arg(long, short = 'a')]
    pub url: String,
    /// The admin's username.
    #[arg(long, short = 'u')]
    pub username: String,
    #[command(flatten)]
    pub password: PasswordArgs,
    #[arg(long, short = 'e')]
    pub email: Option<String>,
    #[arg(long, short = 'f')]
    pub full_name: Option<String>,
    /// Override the metadata URL instances use.
    #[arg(long, short = 'm')]
    pub metadata_url: Option<String>,
    /// Override the callback URL instances use.
    #[arg(long, short = 'c')]
    pub callback_url: Option<String>,
    /// Override the base of entity webhook URLs.
    #[arg(long, short = 'w')]
    pub webhook_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCmd {
    /// Log in to an existing server and save it as a profile (made active).
    #[command(alias = "create")]
    Add(ProfileAddArgs),
    /// List profiles.
    #[command(alias = "list")]
    Ls,
    /// Make a profile the active one.
    Switch { name: String },
    /// Forget a profile.
    #[command(aliases = ["delete", "remove", "del"])]
    Rm { name: String },
    /// Log in again and store a fresh token (active or named profile).
    Login(ProfileLoginArgs),
}

#[derive(Debug, Args)]
pub struct ProfileAddArgs {
    #[arg(long, short = 'n')]
    pub name: String,
    #[arg(long, short = 'a')]
    pub url: String,
    #[arg(long, short = 'u')]
    pub username: String,
    #[command(flatten)]
    pub password: PasswordArgs,
}

#[derive(Debug, Args)]
pub struct ProfileLoginArgs {
    /// The profile (default: --profile, then the active one).
    pub name: Option<String>,
    /// Log in as another user than the one stored in the profile.
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    #[command(flatten)]
    pub password: PasswordArgs,
}

#[derive(Debug, Subcommand)]
pub enum EndpointCmd {
    /// Add an endpoint.
    #[command(alias = "create")]
    Add(EndpointAddArgs),
    /// List endpoints.
    #[command(alias = "list")]
    Ls,
    /// Show one endpoint.
    #[command(alias = "get")]
    Show { name: String },
    /// Change an endpoint.
    Update(EndpointUpdateArgs),
    /// Remove an endpoint; refused (409) while credentials use it.
    #[command(aliases = ["delete", "remove", "del"])]
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct EndpointAddArgs {
    #[arg(long)]
    pub name: String,
    /// e.g. https://github.com or https://ghes.example.com
    #[arg(long)]
    pub base_url: String,
    /// e.g. https://api.github.com or https://ghes.example.com/api/v3
    #[arg(long)]
    pub api_base_url: String,
    #[arg(long)]
    pub description: Option<String>,
    /// PEM bundle to trust for this endpoint (GHES with a private CA).
    #[arg(long)]
    pub ca_cert_path: Option<PathBuf>,
    /// Accepted for garm-cli compatibility; Hangar never uploads to GitHub.
    #[arg(long, hide = true)]
    pub upload_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct EndpointUpdateArgs {
    pub name: String,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long)]
    pub base_url: Option<String>,
    #[arg(long)]
    pub api_base_url: Option<String>,
    #[arg(long, conflicts_with = "clear_ca_cert")]
    pub ca_cert_path: Option<PathBuf>,
    /// Remove the endpoint's CA bundle.
    #[arg(long)]
    pub clear_ca_cert: bool,
    /// Accepted for garm-cli compatibility; Hangar never uploads to GitHub.
    #[arg(long, hide = true)]
    pub upload_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthType {
    Pat,
    App,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Pat => "pat",
            AuthType::App => "app",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CredentialsCmd {
    /// Add credentials (secrets are write-only: never shown again).
    #[command(alias = "create")]
    Add(CredentialsAddArgs),
    /// List credentials.
    #[command(alias = "list")]
    Ls,
    /// Show one set of credentials.
    #[command(alias = "get")]
    Show { name: String },
    /// Change credentials.
    Update(CredentialsUpdateArgs),
    /// Remove credentials; refused (409) while an entity uses them.
    #[command(aliases = ["delete", "remove", "del"])]
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct CredentialsAddArgs {
    #[arg(long)]
    pub name: String,
    /// The endpoint these credentials are for.
    #[arg(long)]
    pub endpoint: String,
    #[arg(long, value_enum)]
    pub auth_type: AuthType,
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub secrets: CredentialSecrets,
}

#[derive(Debug, Args)]
pub struct CredentialsUpdateArgs {
    pub name: String,
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub secrets: CredentialSecrets,
}

// The write-only parts of credentials.
#[derive(Debug, Clone, Args)]
pub struct CredentialSecrets {
    /// The personal access token (auth type pat).
    #[arg(long, conflicts_with_all = ["app_id", "installation_id", "private_key_path"])]
    pub pat_oauth_token: Option<String>,
    /// The GitHub App's id (auth type app).
    #[arg(long)]
    pub app_id: Option<i64>,
    /// The App installation's id (auth type app).
    #[arg(long, alias = "app-installation-id")]
    pub installation_id: Option<i64>,
    /// File with the App's PEM private key (auth type app).
    #[arg(long)]
    pub private_key_path: Option<PathBuf>,
    /// Secret of the App's own webhook (deliveries to `POST /webhooks`);
    /// an empty string removes it on update.
    #[arg(long)]
    pub app_webhook_secret: Option<String>,
}

// The three entity kinds share every command but `add`, whose flags differ.

#[derive(Debug, Subcommand)]
pub enum RepositoryCmd {
    /// Add a repository (its webhook secret is generated when not given).
    #[command(alias = "create")]
    Add(RepositoryAddArgs),
    /// The repository's hook on GitHub, made by Hangar.
    #[command(subcommand)]
    Webhook(WebhookCmd),
    #[command(flatten)]
    Common(EntityCmd),
}

#[derive(Debug, Subcommand)]
pub enum OrganizationCmd {
    /// Add an organization (its webhook secret is generated when not given).
    #[command(alias = "create")]
    Add(NamedEntityAddArgs),
    /// The organization's hook on GitHub, made by Hangar.
    #[command(subcommand)]
    Webhook(WebhookCmd),
    #[command(flatten)]
    Common(EntityCmd),
}

/// garm-cli's `repo|org webhook …`: Hangar makes, shows or removes the
/// entity's hook on GitHub (its webhook URL and secret, `workflow_job`).
#[derive(Debug, Subcommand)]
pub enum WebhookCmd {
    /// Create the hook on GitHub (with the entity's URL and secret).
    #[command(alias = "add")]
    Install(WebhookArgs),
    /// Show the hook Hangar finds on GitHub for this entity's URL.
    #[command(alias = "get")]
    Show(WebhookArgs),
    /// Remove the hook from GitHub.
    #[command(aliases = ["rm", "delete", "remove"])]
    Uninstall(WebhookArgs),
}

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// The entity's id or name.
    pub id: String,
    /// The endpoint, when the name alone is ambiguous.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Let GitHub skip TLS verification when it delivers (garm-cli's flag).
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Debug, Subcommand)]
pub enum EnterpriseCmd {
    /// Add an enterprise (its webhook secret is generated when not given).
    #[command(alias = "create")]
    Add(NamedEntityAddArgs),
    #[command(flatten)]
    Common(EntityCmd),
}

#[derive(Debug, Subcommand)]
pub enum EntityCmd {
    /// List them.
    #[command(alias = "list")]
    Ls(EntityLsArgs),
    /// Show one (by id, or by name; `owner/name` for repositories).
    #[command(alias = "get")]
    Show {
        id: String,
        /// The endpoint, when the name is registered on several.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Change credentials or webhook secret.
    Update(EntityUpdateArgs),
    /// Remove one; refused (409) while it still has pools.
    #[command(aliases = ["delete", "remove", "del"])]
    Rm {
        id: String,
        /// The endpoint, when the name is registered on several.
        #[arg(long)]
        endpoint: Option<String>,
    },
}

// How the webhook secret is chosen; without either flag the server
// generates one, as `--random-webhook-secret` asks.
#[derive(Debug, Clone, Args)]
pub struct WebhookSecretArgs {
    /// The secret GitHub signs deliveries with.
    #[arg(long, conflicts_with = "random_webhook_secret")]
    pub webhook_secret: Option<String>,
    /// Let the server generate the secret (printed once).
    #[arg(long)]
    pub random_webhook_secret: bool,
}

#[derive(Debug, Args)]
pub struct RepositoryAddArgs {
    /// Credentials name (see `hangar credentials ls`).
    #[arg(long)]
    pub credentials: String,
    #[arg(long)]
    pub owner: String,
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub secret: WebhookSecretArgs,
    #[command(flatten)]
    pub more: EntityAddMore,
}

#[derive(Debug, Args)]
pub struct NamedEntityAddArgs {
    /// Credentials name (see `hangar credentials ls`).
    #[arg(long)]
    pub credentials: String,
    /// The organization's name, or the enterprise's slug.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub secret: WebhookSecretArgs,
    #[command(flatten)]
    pub more: EntityAddMore,
}

// The flags `add` has beyond the entity itself.
#[derive(Debug, Clone, Args)]
pub struct EntityAddMore {
    /// The endpoint the credentials must belong to (a check: the
    /// credentials decide the endpoint).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Create the hook on GitHub right away (repositories and organizations).
    #[arg(long)]
    pub install_webhook: bool,
}

#[derive(Debug, Args)]
pub struct EntityLsArgs {
    /// Only this name (exact, case-insensitive).
    #[arg(long, short = 'n')]
    pub name: Option<String>,
    /// Only this owner (repositories).
    #[arg(long, short = 'o')]
    pub owner: Option<String>,
    /// Only entities on this endpoint.
    #[arg(long, short = 'e')]
    pub endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct EntityUpdateArgs {
    pub id: String,
    /// The endpoint, when the name is registered on several.
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long)]
    pub credentials: Option<String>,
    /// New webhook secret; change it on GitHub as well.
    #[arg(long)]
    pub webhook_secret: Option<String>,
}

// The entity a pool command works within.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct PoolOwner {
    /// Repository id (or `owner/name`).
    #[arg(long, short = 'r')]
    pub repo: Option<String>,
    /// Organization id (or name).
    #[arg(long, short = 'o')]
    pub org: Option<String>,
    /// Enterprise id (or slug).
    #[arg(long, short = 'e')]
    pub enterprise: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[group(required = false, multiple = false)]
pub struct PoolLsFilter {
    #[arg(long, short = 'r')]
    pub repo: Option<String>,
    #[arg(long, short = 'o')]
    pub org: Option<String>,
    #[arg(long, short = 'e')]
    pub enterprise: Option<String>,
    /// Every pool (what a bare `pool ls` does; kept for garm-cli scripts).
    #[arg(long, short = 'a')]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// Add a pool to a repository, organization or enterprise.
    #[command(alias = "create")]
    Add(PoolAddArgs),
    /// List pools (all, or one entity's).
    #[command(alias = "list")]
    Ls(PoolLsFilter),
    /// Show one pool.
    #[command(alias = "get")]
    Show { id: String },
    /// Change a pool's settings (only the flags given).
    Update(PoolUpdateArgs),
    /// Remove a pool; refused (409) while it still has instances.
    #[command(aliases = ["delete", "remove", "del"])]
    Rm { id: String },
    /// The pool's runners (garm-cli's `pool runner list POOL`).
    #[command(subcommand)]
    Runner(PoolRunnerCmd),
    /// Print the boot data (#cloud-config) a new instance of the pool gets,
    /// with placeholders for its name, token and runner download.
    Userdata { id: String },
}

#[derive(Debug, Subcommand)]
pub enum PoolRunnerCmd {
    /// Same as `hangar runner ls --pool POOL`.
    #[command(alias = "ls")]
    List {
        pool_id: String,
        /// Include deleted instances (history).
        #[arg(long)]
        include_deleted: bool,
    },
}

#[derive(Debug, Args)]
pub struct PoolAddArgs {
    #[command(flatten)]
    pub owner: PoolOwner,
    /// Provider (a `[[provider]]` name in hangard's config).
    #[arg(long)]
    pub provider_name: String,
    #[arg(long)]
    pub image: String,
    #[arg(long)]
    pub flavor: String,
    /// Runner labels, comma separated; a job runs here when all its labels are among them.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1)]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub settings: PoolSettings,
}

#[derive(Debug, Args)]
pub struct PoolUpdateArgs {
    pub id: String,
    #[arg(long)]
    pub provider_name: Option<String>,
    #[arg(long)]
    pub image: Option<String>,
    #[arg(long)]
    pub flavor: Option<String>,
    /// Runner labels, comma separated (replaces the current ones).
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub tags: Option<Vec<String>>,
    #[command(flatten)]
    pub settings: PoolSettings,
}

// The optional pool settings shared by `add` and `update`.
#[derive(Debug, Clone, Args)]
pub struct PoolSettings {
    /// linux or windows.
    #[arg(long)]
    pub os_type: Option<String>,
    /// amd64, arm64, …
    #[arg(long)]
    pub os_arch: Option<String>,
    #[arg(long)]
    pub min_idle_runners: Option<u32>,
    #[arg(long)]
    pub max_runners: Option<u32>,
    #[arg(long)]
    pub runner_prefix: Option<String>,
    /// Minutes from creation to an idle runner before the instance is replaced.
    #[arg(long)]
    pub runner_bootstrap_timeout: Option<u32>,
    /// Provider settings as a JSON object, e.g. '{"confidential": true}'.
    #[arg(long, conflicts_with = "extra_specs_file")]
    pub extra_specs: Option<String>,
    /// File holding the extra specs JSON object.
    #[arg(long)]
    pub extra_specs_file: Option<PathBuf>,
    /// GitHub runner group (empty: the default group).
    #[arg(long)]
    pub runner_group: Option<String>,
    /// Among pools matching a job, higher priority is used first.
    #[arg(long)]
    pub priority: Option<u32>,
    /// true or false (a bare `--enabled` means true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub enabled: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub enum RunnerCmd {
    /// List runners (all, one pool's, or one entity's).
    #[command(alias = "list")]
    Ls(RunnerLsArgs),
    /// Show one runner.
    #[command(alias = "get")]
    Show { name: String },
    /// Remove a runner: off GitHub first, then its VM. Asks nothing.
    #[command(aliases = ["delete", "remove", "del"])]
    Rm(RunnerRmArgs),
}

#[derive(Debug, Args)]
pub struct RunnerLsArgs {
    /// Only this pool's runners (garm-cli's positional form).
    #[arg(conflicts_with_all = ["pool", "repo", "org", "enterprise"])]
    pub pool_id: Option<String>,
    /// Only this pool's runners.
    #[arg(long, conflicts_with_all = ["repo", "org", "enterprise"])]
    pub pool: Option<String>,
    /// Only runners of this repository's pools.
    #[arg(long, short = 'r', conflicts_with_all = ["org", "enterprise"])]
    pub repo: Option<String>,
    #[arg(long, short = 'o', conflicts_with = "enterprise")]
    pub org: Option<String>,
    #[arg(long, short = 'e')]
    pub enterprise: Option<String>,
    /// Every runner (what a bare `runner ls` does; kept for garm-cli scripts).
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Include deleted instances (history).
    #[arg(long)]
    pub include_deleted: bool,
}

#[derive(Debug, Args)]
pub struct RunnerRmArgs {
    pub name: String,
    /// Passed to the server as garm-cli does: forget the instance even if
    /// the provider fails to delete it.
    #[arg(long, short = 'f')]
    pub force_remove_runner: bool,
    /// Passed to the server as garm-cli does: go on when GitHub refuses
    /// the credentials.
    #[arg(long, short = 'b')]
    pub bypass_github_unauthorized: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// List jobs, newest first.
    #[command(alias = "list")]
    Ls(JobLsArgs),
}

#[derive(Debug, Args)]
pub struct JobLsArgs {
    #[arg(long, value_parser = ["waiting", "queued", "in_progress", "completed"])]
    pub status: Option<String>,
    /// Only jobs matched to this pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// At most this many, newest first.
    #[arg(long)]
    pub limit: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum ProviderCmd {
    /// List providers with their health.
    #[command(alias = "list")]
    Ls,
}

#[derive(Debug, Subcommand)]
pub enum ControllerCmd {
    /// Show the controller id, version, URLs and counts.
    #[command(alias = "get")]
    Show,
    /// Override URLs derived from hangard's `public_url` (an empty value restores the derived one).
    Update(ControllerUpdateArgs),
}

#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct ControllerUpdateArgs {
    #[arg(long, short = 'm')]
    pub metadata_url: Option<String>,
    #[arg(long, short = 'c')]
    pub callback_url: Option<String>,
    /// Base of entity webhook URLs (`<webhook-url>/<entity id>`).
    #[arg(long, short = 'w')]
    pub webhook_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(line: &[&str]) -> Cli {
        let mut argv = vec!["hangar"];
        argv.extend_from_slice(line);
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn refuse(line: &[&str]) -> clap::Error {
        let mut argv = vec!["hangar"];
        argv.extend_from_slice(line);
        match Cli::try_parse_from(argv) {
            Ok(cli) => panic!("{line:?} parsed: {cli:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn init_pinned_and_garm_forms() {
        let cli = parse(&[
            "init",
            "--url",
            "http://127.0.0.1:9997",
            "--username",
            "admin",
            "--password",
            "a-strong-password",
        ]);
        let Command::Init(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.url, "http://127.0.0.1:9997");
        assert_eq!(a.username, "admin");
        assert_eq!(a.password.password.as_deref(), Some("a-strong-password"));
        assert_eq!(a.name, "default");

        let cli = parse(&[
            "init",
            "--name",
            "prod",
            "--url",
            "https://h",
            "--username",
            "admin",
            "--password-stdin",
            "--email",
            "a@example.com",
            "--full-name",
            "Ada Admin",
        ]);
        let Command::Init(a) = cli.command else {
            panic!()
        };
        assert!(a.password.password_stdin && a.password.password.is_none());
        assert_eq!(a.name, "prod");
        assert_eq!(a.email.as_deref(), Some("a@example.com"));
        assert_eq!(a.full_name.as_deref(), Some("Ada Admin"));

        // garm-cli's short flags.
        let cli = parse(&[
            "init",
            "-n",
            "p",
            "-a",
            "https://h",
            "-u",
            "admin",
            "-p",
            "pw",
            "-e",
            "x@y",
            "-w",
            "https://h/hooks",
        ]);
        let Command::Init(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.webhook_url.as_deref(), Some("https://h/hooks"));

        refuse(&[
            "init",
            "--url",
            "https://h",
            "--username",
            "a",
            "--password",
            "x",
            "--password-stdin",
        ]);
        refuse(&["init", "--username", "a", "--password", "x"]);
    }

    #[test]
    fn profile_commands() {
        let cli = parse(&[
            "profile",
            "add",
            "--name",
            "p",
            "--url",
            "https://h",
            "--username",
            "u",
            "--password",
            "pw",
        ]);
        assert!(matches!(cli.command, Command::Profile(ProfileCmd::Add(ref a)) if a.name == "p"));
        assert!(matches!(
            parse(&["profile", "ls"]).command,
            Command::Profile(ProfileCmd::Ls)
        ));
        assert!(matches!(
            parse(&["profile", "list"]).command,
            Command::Profile(ProfileCmd::Ls)
        ));
        assert!(
            matches!(parse(&["profile", "switch", "p"]).command, Command::Profile(ProfileCmd::Switch { ref name }) if name == "p")
        );
        assert!(
            matches!(parse(&["profile", "rm", "p"]).command, Command::Profile(ProfileCmd::Rm { ref name }) if name == "p")
        );
        assert!(matches!(
            parse(&["profile", "delete", "p"]).command,
            Command::Profile(ProfileCmd::Rm { .. })
        ));
        let cli = parse(&["profile", "login", "--password-stdin"]);
        assert!(
            matches!(cli.command, Command::Profile(ProfileCmd::Login(ref a)) if a.name.is_none() && a.password.password_stdin)
        );
        let cli = parse(&["profile", "login", "prod", "-u", "other", "-p", "pw"]);
        assert!(
            matches!(cli.command, Command::Profile(ProfileCmd::Login(ref a)) if a.name.as_deref() == Some("prod") && a.username.as_deref() == Some("other"))
        );
    }

    #[test]
    fn endpoint_commands() {
        let cli = parse(&[
            "endpoint",
            "add",
            "--name",
            "github",
            "--base-url",
            "https://github.com",
            "--api-base-url",
            "https://api.github.com",
            "--description",
            "public GitHub",
            "--ca-cert-path",
            "/etc/ssl/ca.pem",
        ]);
        let Command::Endpoint(EndpointCmd::Add(a)) = cli.command else {
            panic!()
        };
        assert_eq!(a.api_base_url, "https://api.github.com");
        assert_eq!(a.ca_cert_path, Some(PathBuf::from("/etc/ssl/ca.pem")));
        for sub in ["ls", "list"] {
            assert!(matches!(
                parse(&["endpoint", sub]).command,
                Command::Endpoint(EndpointCmd::Ls)
            ));
        }
        assert!(matches!(
            parse(&["endpoint", "show", "g"]).command,
            Command::Endpoint(EndpointCmd::Show { .. })
        ));
        assert!(matches!(
            parse(&["endpoint", "update", "g", "--description", "d"]).command,
            Command::Endpoint(EndpointCmd::Update(ref u)) if u.description.as_deref() == Some("d")
        ));
        assert!(matches!(
            parse(&["endpoint", "rm", "g"]).command,
            Command::Endpoint(EndpointCmd::Rm { .. })
        ));
        refuse(&[
            "endpoint",
            "add",
            "--name",
            "g",
            "--base-url",
            "https://github.com",
        ]);
        // garm-cli's spelling, upload URL included.
        let cli = parse(&[
            "github",
            "endpoint",
            "create",
            "--name",
            "ghes",
            "--base-url",
            "https://ghes",
            "--api-base-url",
            "https://ghes/api/v3",
            "--upload-url",
            "https://ghes/uploads",
        ]);
        assert!(matches!(
            cli.command,
            Command::Github(GithubCmd::Endpoint(EndpointCmd::Add(_)))
        ));
    }

    #[test]
    fn credentials_commands() {
        let cli = parse(&[
            "credentials",
            "add",
            "--name",
            "garm",
            "--endpoint",
            "github.com",
            "--auth-type",
            "pat",
            "--pat-oauth-token",
            "ghp_x",
        ]);
        let Command::Credentials(CredentialsCmd::Add(a)) = cli.command else {
            panic!()
        };
        assert_eq!(a.auth_type, AuthType::Pat);
        assert_eq!(a.secrets.pat_oauth_token.as_deref(), Some("ghp_x"));

        let cli = parse(&[
            "credentials",
            "add",
            "--name",
            "app",
            "--endpoint",
            "github.com",
            "--auth-type",
            "app",
            "--app-id",
            "123",
            "--installation-id",
            "456",
            "--private-key-path",
            "/k.pem",
            "--app-webhook-secret",
            "hook",
            "--description",
            "the app",
        ]);
        let Command::Credentials(CredentialsCmd::Add(a)) = cli.command else {
            panic!()
        };
        assert_eq!(
            (a.secrets.app_id, a.secrets.installation_id),
            (Some(123), Some(456))
        );
        assert_eq!(a.secrets.app_webhook_secret.as_deref(), Some("hook"));

        // garm-cli's `--app-installation-id` and `creds` alias.
        let cli = parse(&["creds", "update", "app", "--app-installation-id", "7"]);
        assert!(matches!(
            cli.command,
            Command::Credentials(CredentialsCmd::Update(ref u)) if u.secrets.installation_id == Some(7)
        ));
        refuse(&[
            "credentials",
            "add",
            "--name",
            "x",
            "--endpoint",
            "e",
            "--auth-type",
            "token",
        ]);
        refuse(&[
            "credentials",
            "add",
            "--name",
            "x",
            "--endpoint",
            "e",
            "--auth-type",
            "pat",
            "--pat-oauth-token",
            "t",
            "--app-id",
            "1",
        ]);
        for sub in [
            ["credentials", "ls"],
            ["credentials", "show"],
            ["credentials", "rm"],
        ] {
            let mut line = sub.to_vec();
            if sub[1] != "ls" {
                line.push("x");
            }
            parse(&line);
        }
    }

    #[test]
    fn repository_garm_sequence() {
        let cli = parse(&[
            "repository",
            "add",
            "--credentials",
            "garm",
            "--name",
            "garm-playground",
            "--owner",
            "mkulke",
            "--webhook-secret",
            "s3cret",
        ]);
        let Command::Repository(RepositoryCmd::Add(a)) = cli.command else {
            panic!()
        };
        assert_eq!(
            (a.credentials.as_str(), a.owner.as_str(), a.name.as_str()),
            ("garm", "mkulke", "garm-playground")
        );
        assert_eq!(a.secret.webhook_secret.as_deref(), Some("s3cret"));

        let cli = parse(&["repo", "ls"]);
        assert!(matches!(
            cli.command,
            Command::Repository(RepositoryCmd::Common(EntityCmd::Ls(_)))
        ));
        let cli = parse(&[
            "repo",
            "add",
            "--credentials",
            "c",
            "--owner",
            "o",
            "--name",
            "n",
            "--random-webhook-secret",
        ]);
        assert!(
            matches!(cli.command, Command::Repository(RepositoryCmd::Add(ref a)) if a.secret.random_webhook_secret)
        );
        refuse(&[
            "repo",
            "add",
            "--credentials",
            "c",
            "--owner",
            "o",
            "--name",
            "n",
            "--webhook-secret",
            "s",
            "--random-webhook-secret",
        ]);
        refuse(&["repo", "add", "--credentials", "c", "--name", "n"]);
        for line in [
            &["repo", "show", "x"][..],
            &[
                "repo",
                "update",
                "x",
                "--credentials",
                "c2",
                "--webhook-secret",
                "w",
            ],
            &["repo", "rm", "x"],
            &["repository", "delete", "x"],
        ] {
            parse(line);
        }
    }

    #[test]
    fn organization_and_enterprise() {
        let cli = parse(&[
            "org",
            "add",
            "--credentials",
            "c",
            "--name",
            "acme",
            "--webhook-secret",
            "w",
        ]);
        assert!(
            matches!(cli.command, Command::Organization(OrganizationCmd::Add(ref a)) if a.name == "acme")
        );
        let cli = parse(&["organization", "ls"]);
        assert!(matches!(
            cli.command,
            Command::Organization(OrganizationCmd::Common(EntityCmd::Ls(_)))
        ));
        let cli = parse(&[
            "enterprise",
            "add",
            "--credentials",
            "c",
            "--name",
            "acme-ent",
        ]);
        assert!(matches!(
            cli.command,
            Command::Enterprise(EnterpriseCmd::Add(_))
        ));
        for kind in ["org", "enterprise"] {
            parse(&[kind, "show", "x"]);
            parse(&[kind, "update", "x", "--credentials", "c"]);
            parse(&[kind, "rm", "x"]);
        }
        // An organization has no owner.
        refuse(&[
            "org",
            "add",
            "--credentials",
            "c",
            "--name",
            "n",
            "--owner",
            "o",
        ]);
    }

    #[test]
    fn pool_add_garm_sequence() {
        let cli = parse(&[
            "pool",
            "add",
            "--repo",
            "9a4b9e43-5e0b-4bd4-b0cb-4d2a2d0a7e8f",
            "--flavor",
            "Standard_DC2as_v5",
            "--tags",
            "self-hosted,azure-cvm,ubuntu-2204",
            "--enabled",
            "true",
            "--min-idle-runners",
            "0",
            "--max-runners",
            "4",
            "--extra-specs",
            r#"{"confidential": true}"#,
            "--provider-name",
            "azure_external",
            "--image",
            "Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest",
        ]);
        let Command::Pool(PoolCmd::Add(a)) = cli.command else {
            panic!()
        };
        assert_eq!(
            a.owner.repo.as_deref(),
            Some("9a4b9e43-5e0b-4bd4-b0cb-4d2a2d0a7e8f")
        );
        assert_eq!(a.tags, ["self-hosted", "azure-cvm", "ubuntu-2204"]);
        assert_eq!(a.settings.enabled, Some(true));
        assert_eq!(a.settings.min_idle_runners, Some(0));
        assert_eq!(a.settings.max_runners, Some(4));
        assert_eq!(
            a.settings.extra_specs.as_deref(),
            Some(r#"{"confidential": true}"#)
        );
        assert_eq!(a.provider_name, "azure_external");
        assert_eq!(
            a.image,
            "Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest"
        );
    }

    #[test]
    fn pool_add_optional_flags_and_owner_choice() {
        let base = [
            "pool",
            "add",
            "--provider-name",
            "p",
            "--image",
            "i",
            "--flavor",
            "f",
            "--tags",
            "a,b",
        ];
        let with = |extra: &[&'static str]| -> Vec<&'static str> {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            v
        };
        let cli = parse(&with(&[
            "--org",
            "acme",
            "--os-type",
            "linux",
            "--os-arch",
            "arm64",
            "--runner-prefix",
            "cvm",
            "--runner-bootstrap-timeout",
            "15",
            "--runner-group",
            "g",
            "--priority",
            "5",
            "--enabled",
            "false",
        ]));
        let Command::Pool(PoolCmd::Add(a)) = cli.command else {
            panic!()
        };
        assert_eq!(a.owner.org.as_deref(), Some("acme"));
        assert_eq!(a.settings.enabled, Some(false));
        assert_eq!(a.settings.priority, Some(5));
        assert_eq!(a.settings.runner_bootstrap_timeout, Some(15));
        assert_eq!(a.settings.os_arch.as_deref(), Some("arm64"));

        // A bare --enabled means true; `--enabled=false` works too.
        let Command::Pool(PoolCmd::Add(a)) = parse(&with(&["-e", "ent", "--enabled"])).command
        else {
            panic!()
        };
        assert_eq!(a.settings.enabled, Some(true));
        assert_eq!(a.owner.enterprise.as_deref(), Some("ent"));
        let Command::Pool(PoolCmd::Add(a)) = parse(&with(&["-r", "r", "--enabled=false"])).command
        else {
            panic!()
        };
        assert_eq!(a.settings.enabled, Some(false));

        refuse(&base); // no entity
        refuse(&with(&["--repo", "a", "--org", "b"]));
        refuse(&with(&["--repo", "a", "--max-runners", "-1"]));
        refuse(&with(&[
            "--repo",
            "a",
            "--extra-specs",
            "{}",
            "--extra-specs-file",
            "/x",
        ]));
        refuse(&with(&["--repo", "a", "--enabled", "maybe"]));
    }

    #[test]
    fn pool_ls_show_update_rm() {
        let Command::Pool(PoolCmd::Ls(f)) = parse(&["pool", "ls"]).command else {
            panic!()
        };
        assert!(f.repo.is_none() && f.org.is_none() && f.enterprise.is_none() && !f.all);
        let Command::Pool(PoolCmd::Ls(f)) = parse(&["pool", "ls", "--repo", "r"]).command else {
            panic!()
        };
        assert_eq!(f.repo.as_deref(), Some("r"));
        for line in [
            &["pool", "ls", "--org", "o"][..],
            &["pool", "ls", "--enterprise", "e"],
            &["pool", "list", "--all"],
        ] {
            parse(line);
        }
        refuse(&["pool", "ls", "--repo", "r", "--all"]);
        let cli = parse(&[
            "pool",
            "update",
            "id",
            "--max-runners",
            "8",
            "--tags",
            "x,y",
            "--enabled",
            "false",
        ]);
        let Command::Pool(PoolCmd::Update(u)) = cli.command else {
            panic!()
        };
        assert_eq!(u.tags, Some(vec!["x".to_owned(), "y".to_owned()]));
        assert_eq!(u.settings.max_runners, Some(8));
        parse(&["pool", "show", "id"]);
        parse(&["pool", "rm", "id"]);
    }

    #[test]
    fn runner_job_provider_controller() {
        let Command::Runner(RunnerCmd::Ls(a)) = parse(&["runner", "ls"]).command else {
            panic!()
        };
        assert!(a.pool.is_none() && a.pool_id.is_none());
        let Command::Runner(RunnerCmd::Ls(a)) = parse(&["runner", "ls", "--pool", "p1"]).command
        else {
            panic!()
        };
        assert_eq!(a.pool.as_deref(), Some("p1"));
        let Command::Runner(RunnerCmd::Ls(a)) = parse(&["runner", "list", "p2"]).command else {
            panic!()
        };
        assert_eq!(a.pool_id.as_deref(), Some("p2"));
        refuse(&["runner", "ls", "p2", "--pool", "p1"]);
        parse(&["runner", "show", "hangar-abc"]);
        let Command::Runner(RunnerCmd::Rm(r)) =
            parse(&["runner", "rm", "hangar-abc", "-f"]).command
        else {
            panic!()
        };
        assert!(r.force_remove_runner && !r.bypass_github_unauthorized);

        let Command::Job(JobCmd::Ls(j)) = parse(&["job", "ls", "--status", "queued"]).command
        else {
            panic!()
        };
        assert_eq!(j.status.as_deref(), Some("queued"));
        parse(&["job", "ls"]);
        refuse(&["job", "ls", "--status", "running"]);

        assert!(matches!(
            parse(&["provider", "ls"]).command,
            Command::Provider(ProviderCmd::Ls)
        ));
        assert!(matches!(
            parse(&["controller", "show"]).command,
            Command::Controller(ControllerCmd::Show)
        ));
        let cli = parse(&[
            "controller",
            "update",
            "--metadata-url",
            "https://h/api/v1/metadata",
            "--callback-url",
            "https://h/api/v1/callbacks",
            "--webhook-url",
            "https://h/webhooks",
        ]);
        assert!(matches!(
            cli.command,
            Command::Controller(ControllerCmd::Update(ref u)) if u.webhook_url.as_deref() == Some("https://h/webhooks")
        ));
        refuse(&["controller", "update"]);
    }

    #[test]
    fn globals_and_completions() {
        let cli = parse(&["repo", "ls", "--output", "json", "--profile", "prod"]);
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.profile.as_deref(), Some("prod"));
        // garm-cli's `--format`.
        assert_eq!(
            parse(&["--format", "json", "pool", "ls"]).output,
            OutputFormat::Json
        );
        assert_eq!(parse(&["pool", "ls"]).output, OutputFormat::Table);
        assert_eq!(
            parse(&["pool", "ls", "--long"]).format(),
            OutputFormat::Wide
        );
        assert_eq!(parse(&["-l", "runner", "ls"]).format(), OutputFormat::Wide);
        assert_eq!(
            parse(&["runner", "ls", "--output", "wide"]).format(),
            OutputFormat::Wide
        );
        assert_eq!(
            parse(&["runner", "ls", "--long", "--output", "json"]).format(),
            OutputFormat::Json,
            "JSON stays the API's JSON"
        );
        refuse(&["pool", "ls", "--output", "yaml"]);
        for shell in ["bash", "zsh", "fish"] {
            assert!(matches!(
                parse(&["completions", shell]).command,
                Command::Completions { .. }
            ));
        }
    }
}
