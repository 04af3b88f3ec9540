//! `hangard`: `hangard --config FILE [serve]`, `hangard --config FILE
//! migrate`, `hangard --config FILE admin reset-password`.

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
