//! Entry point of `hangar`: parse the command line, run it on a small
//! single-threaded runtime (one request at a time needs no more).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hangar_cli::args::Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(hangar_cli::run(cli))
}
