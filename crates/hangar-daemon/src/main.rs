//! `hangard`: `hangard --config FILE [serve]`, `hangard --config FILE
//! migrate`, `hangard --config FILE admin reset-password`, `hangard
//! --config FILE import-garm --garm-config F [--garm-db P]`.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hangar_core::Secret;
use hangar_daemon::config::Config;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "hangard",
    version,
    about = "Hangar: autoscaled ephemeral GitHub Actions runners"
)]
struct Cli {
    /// The config file.
    #[arg(
        long,
        short,
        env = "HANGAR_CONFIG",
        default_value = "/etc/hangar/hangard.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve webhooks, the API and the scheduler (the default).
    Serve,
    /// Create or upgrade the database, then exit.
    Migrate,
    /// Move a garm deployment over: write the config (when FILE does not
    /// exist yet) and import garm's endpoints, credentials, entities and
    /// pools into FILE's database. Safe to run twice.
    ImportGarm {
        /// garm's config file (its database path and passphrase are read
        /// from it).
        #[arg(long)]
        garm_config: PathBuf,
        /// garm's SQLite database (default: the one garm's config names).
        #[arg(long)]
        garm_db: Option<PathBuf>,
        /// Written as `database.passphrase_file` when FILE is created
        /// (else the passphrase comes from HANGAR_PASSPHRASE).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Administration tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Set a new admin password; every token issued before stops working.
    ResetPassword {
        /// The admin to reset (default: the first admin).
        #[arg(long)]
        username: Option<String>,
        /// The new password (prefer --password-stdin).
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the new password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ImportGarm {
        garm_config,
        garm_db,
        passphrase_file,
    }) = cli.command
    {
        return import_garm(hangar_daemon::import_garm::ImportRequest {
            config: cli.config,
            garm_config,
            garm_db,
            passphrase_file,
        });
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hangard: {e:#}");
            return ExitCode::from(2);
        }
    };
    hangar_daemon::init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.worker_thread_count())
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hangard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let cancel = CancellationToken::new();
                hangar_daemon::cancel_on_signals(cancel.clone());
                hangar_daemon::serve(config, cancel).await
            }
            Command::ImportGarm { .. } => unreachable!("handled before the config is read"),
            Command::Migrate => {
                let applied = hangar_daemon::migrate(&config).await?;
                println!("database ready; migrations applied: {applied:?}");
                Ok(())
            }
            Command::Admin {
                command:
                    AdminCommand::ResetPassword {
                        username,
                        password,
                        password_stdin,
                    },
            } => {
                let password = match (password, password_stdin) {
                    (Some(p), _) => p,
                    (None, true) => {
                        let mut s = String::new();
                        std::io::stdin().read_to_string(&mut s)?;
                        s.trim_end_matches(['\n', '\r']).to_owned()
                    }
                    (None, false) => anyhow::bail!("give --password-stdin (or --password)"),
                };
                let name = hangar_daemon::reset_password(
                    &config,
                    username.as_deref(),
                    &Secret::new(password),
                )
                .await?;
                println!("password of {name:?} reset; earlier tokens are revoked");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("hangard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `import-garm` runs before (and may write) the config, so it has its own
/// small runtime and prints its report on stdout, what did not move on
/// stderr.
fn import_garm(req: hangar_daemon::import_garm::ImportRequest) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hangard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hangar_daemon::import_garm::import_garm(&req)) {
        Ok(report) => {
            if report.config_written {
                println!("wrote {}", req.config.display());
            } else {
                println!("kept the existing {}", req.config.display());
            }
            println!("database: {}", report.database_url);
            let c = &report.counts;
            for (what, (added, present)) in [
                ("endpoints", c.endpoints),
                ("credentials", c.credentials),
                ("entities", c.entities),
                ("pools", c.pools),
            ] {
                println!("{what}: {added} imported, {present} already present");
            }
            if let Some(id) = &report.garm_controller_id {
                println!(
                    "garm controller id {id} recorded: hooks posting to /webhooks/{id} and runners labelled runner-controller-id:{id} belong to this installation"
                );
            }
            for line in &report.not_moved {
                eprintln!("not moved: {line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hangard: import-garm: {e:#}");
            ExitCode::FAILURE
        }
    }
}
