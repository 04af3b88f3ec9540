//! `hangar`, Hangar's admin CLI: garm-cli compatible commands over
//! `hangar-api`'s typed client, with profiles kept in the user's config dir.
//!
//! Split from `main.rs` so the command line, the profile store and the
//! rendering are unit-tested without spawning the binary.

pub mod args;
pub mod commands;
pub mod input;
pub mod output;
pub mod profiles;

use std::process::ExitCode;

use hangar_api::client::ClientError;

use crate::args::Cli;
use crate::commands::{Ctx, Overrides};
use crate::profiles::ProfileStore;

/// Runs a parsed command line: prints the answer to stdout, or the error
/// (with the server's details and a hint) to stderr and exits non-zero.
pub async fn run(cli: Cli) -> ExitCode {
    let uses_token = commands::uses_token(&cli.command);
    let overrides = Overrides::from_env();
    let token_from_env = overrides.token.is_some();
    let result = match ProfileStore::from_env() {
        Ok(store) => {
            let ctx = Ctx {
                format: cli.format(),
                profile: cli.profile.clone(),
                store,
                overrides,
            };
            commands::run(cli, &ctx).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(out) if out.is_empty() => ExitCode::SUCCESS,
        Ok(out) => match print(&mut std::io::stdout().lock(), &out) {
            Ok(()) => ExitCode::SUCCESS,
            // `hangar … | head`: the reader has what it wanted and left.
            // Like other Unix tools, stop quietly; it is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                report(&format!("error: cannot write the output: {e}"));
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            report(&error_report(&e, uses_token, token_from_env));
            ExitCode::FAILURE
        }
    }
}

/// Writes a command's answer with one trailing newline. `println!` would
/// panic when stdout is a closed pipe; this returns the error instead.
pub fn print(w: &mut impl std::io::Write, out: &str) -> std::io::Result<()> {
    writeln!(w, "{}", out.trim_end_matches('\n'))?;
    w.flush()
}

/// Tells the operator on stderr; a closed stderr leaves nothing to tell.
fn report(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// The error as shown to the operator: the chain on one line, then the
/// server's details and what to do about a refused token.
pub fn error_report(e: &anyhow::Error, uses_token: bool, token_from_env: bool) -> String {
    let mut out = format!("error: {e:#}");
    let api = e.chain().find_map(|c| c.downcast_ref::<ClientError>());
    if let Some(details) = api.and_then(ClientError::details) {
        out.push_str("\n  details: ");
        out.push_str(details);
    }
    if uses_token && api.and_then(ClientError::status) == Some(401) {
        out.push_str(if token_from_env {
            "\n  hint: the server refused HANGAR_TOKEN"
        } else {
            "\n  hint: run `hangar profile login` (or `hangar profile login NAME`) for a fresh token"
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn report_shows_server_words_details_and_hint() {
        let api = ClientError::Api {
            status: 401,
            error: "invalid or expired token".into(),
            details: Some("InvalidSignature".into()),
        };
        let e = Err::<(), _>(api).context("cannot list pools").unwrap_err();
        let r = error_report(&e, true, false);
        assert_eq!(
            r,
            "error: cannot list pools: invalid or expired token (HTTP 401)\n  details: InvalidSignature\n  hint: run `hangar profile login` (or `hangar profile login NAME`) for a fresh token"
        );
        // A refused password (login) is not a stale token.
        let api = ClientError::Api {
            status: 401,
            error: "invalid username or password".into(),
            details: None,
        };
        let e = Err::<(), _>(api).context("cannot log in").unwrap_err();
        assert_eq!(
            error_report(&e, false, false),
            "error: cannot log in: invalid username or password (HTTP 401)"
        );
    }
}
