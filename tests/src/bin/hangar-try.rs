//! `hangar-try` (`cargo xtask try`): the whole flow on this machine in
//! about a minute, without GitHub. A loopback FakeGitHub and `hangard` on
//! the dev config (the in-process fake provider), the README's walkthrough
//! run as written with the `hangar` CLI, then one job pushed through while
//! each step is printed. It stops everything and removes its files when
//! done, and exits non-zero when the job does not get through in time.

use std::time::Duration;

use hangar_e2e::walkthrough::{LABELS, OWNER_REPO, Rig};

const USAGE: &str = "usage: hangar-try\n\nStarts a FakeGitHub and hangard (config/hangard.toml) on loopback, runs the\nREADME's walkthrough with the hangar CLI, pushes one job through and prints\neach step; then stops. Run it from the workspace with `cargo xtask try`.";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return std::process::ExitCode::SUCCESS;
    }
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hangar-try: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    println!("==> starting a FakeGitHub and hangard (config/hangard.toml) on loopback");
    let rig = Rig::start().await?;
    println!("    GitHub (fake): {}", rig.gh.url());
    println!(
        "    hangard:       {}  (log: {})",
        rig.daemon.url,
        rig.daemon.log.display()
    );
    println!("\n==> the README's walkthrough, as written");
    rig.run_readme(true)?;
    println!(
        "\n==> a workflow job on {OWNER_REPO} asking for [{}]",
        LABELS.join(", ")
    );
    // A job that takes a second, so its runner is seen busy.
    rig.gh.set_job_duration(Duration::from_secs(1));
    let seen = rig
        .push_a_job(Duration::from_secs(120), |t, what| {
            println!("  {:>6} ms  {what}", t.as_millis());
        })
        .await?;
    let runner = seen
        .iter()
        .find_map(|s| s.strip_prefix("runner ")?.split(':').next())
        .unwrap_or("hangar-")
        .to_owned();
    println!("\n==> hangard's log of it (every step, in order)");
    for line in rig.daemon.logs().lines().filter(|l| {
        (l.contains(&runner) || l.contains("webhook installed")) && !l.contains("DEBUG")
    }) {
        println!("  {line}");
    }
    println!("\n==> what hangard recorded");
    print!("{}", rig.hangar(&["job", "ls"])?);
    println!(
        "\n==> done: stopping hangard and the FakeGitHub, removing {}",
        rig.dir.path().display()
    );
    Ok(())
}
