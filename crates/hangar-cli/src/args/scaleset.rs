//! `hangar scaleset add|ls|show|update|rm`, with garm-cli's flag names.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Subcommand};

use super::{PoolLsFilter, PoolOwner};

#[derive(Debug, Subcommand)]
pub enum ScaleSetCmd {
    /// Add a runner scale set to a repository, organization or enterprise
    /// (made on GitHub too; one of that name there is adopted).
    #[command(alias = "create")]
    Add(ScaleSetAddArgs),
    /// List scale sets (all, or one entity's).
    #[command(alias = "list")]
    Ls(PoolLsFilter),
    /// Show one scale set (by id, or by name when that is unique).
    #[command(alias = "get")]
    Show { id: String },
    /// Change a scale set's settings (only the flags given).
    Update(ScaleSetUpdateArgs),
    /// Remove a scale set (on GitHub too); refused (409) while it still
    /// has instances.
    #[command(aliases = ["delete", "remove", "del"])]
    Rm { id: String },
}

#[derive(Debug, Args)]
pub struct ScaleSetAddArgs {
    #[command(flatten)]
    pub owner: PoolOwner,
    /// The scale set's name: what workflows put in `runs-on`.
    #[arg(long)]
    pub name: String,
    /// Provider (a `[[provider]]` name in hangard's config).
    #[arg(long)]
    pub provider_name: String,
    #[arg(long)]
    pub image: String,
    #[arg(long)]
    pub flavor: String,
    #[command(flatten)]
    pub settings: ScaleSetSettings,
}

#[derive(Debug, Args)]
pub struct ScaleSetUpdateArgs {
    /// The scale set (id, or name when unique).
    pub id: String,
    /// A new name (workflows must then use it in `runs-on`).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub provider_name: Option<String>,
    #[arg(long)]
    pub image: Option<String>,
    #[arg(long)]
    pub flavor: Option<String>,
    #[command(flatten)]
    pub settings: ScaleSetSettings,
}

// The optional settings shared by `add` and `update`.
#[derive(Debug, Clone, Args)]
pub struct ScaleSetSettings {
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
    /// true or false (a bare `--enabled` means true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub enabled: Option<bool>,
}
