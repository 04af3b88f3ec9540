//! `hangar-faults`: the fault suite behind `cargo xtask faults`. Each
//! scenario runs the real `hangard` on loopback against FakeGitHub and the
//! external fake provider, injects one family of faults, waits (bounded)
//! for the jobs to be served and everything to be cleaned up, and becomes
//! one row of a Markdown table. A promised zero that is not zero, or an
//! accepted job that is not served, fails the run (exit 1).
//!
//! ```text
//! hangar-faults [--short] [--seed N] [SCENARIO…]
//! ```
//!
//! Scenarios: `kill9`, `provider`, `github`, `lost`, `disorder`,
//! `db-full`, `db-readonly`, `flood`, `slowloris` (all by default).
//! `--short` runs smaller bursts (CI); randomness comes from `--seed`
//! (default 13), so a failing run can be repeated.

mod net;
mod rig;
mod scenarios;

use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How a run was asked for.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub short: bool,
    pub seed: u64,
}

/// One line of the table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub name: String,
    pub faults: String,
    pub accepted: usize,
    pub queued: usize,
    pub served: usize,
    pub vms_leaked: usize,
    pub runners_leaked: usize,
    /// The worst pool's observed peak and its `max_runners`.
    pub peak: (usize, u32),
    pub calls_per_job: f64,
    pub panics: usize,
    /// Broken promises; any fails the run.
    pub problems: Vec<String>,
    /// Findings that break no promise of this row.
    pub notes: Vec<String>,
    /// Why the row could not run here.
    pub skipped: Option<String>,
    pub took: Duration,
}

const SCENARIOS: &[&str] = &[
    "kill9",
    "provider",
    "github",
    "lost",
    "disorder",
    "db-full",
    "db-readonly",
    "flood",
    "slowloris",
];

fn usage() -> String {
    format!(
        "usage: hangar-faults [--short] [--seed N] [SCENARIO…]\nscenarios: {}",
        SCENARIOS.join(", ")
    )
}

/// How long one scenario may take before it is abandoned.
fn limit(name: &str, short: bool) -> Duration {
    let secs = match (name, short) {
        ("kill9", true) => 300,
        ("kill9", false) => 1200,
        ("lost", _) => 400,
        (_, true) => 180,
        (_, false) => 400,
    };
    Duration::from_secs(secs)
}

async fn run_one(name: &str, ctx: &Ctx) -> anyhow::Result<Row> {
    match name {
        "kill9" => scenarios::kill9(ctx).await,
        "provider" => scenarios::provider(ctx).await,
        "github" => scenarios::github(ctx).await,
        "lost" => scenarios::lost(ctx).await,
        "disorder" => scenarios::disorder(ctx).await,
        "db-full" => scenarios::database(ctx, scenarios::DbFault::Full).await,
        "db-readonly" => scenarios::database(ctx, scenarios::DbFault::ReadOnly).await,
        "flood" => net::flood(ctx).await,
        "slowloris" => net::slowloris(ctx).await,
        other => anyhow::bail!("unknown scenario {other:?}"),
    }
}

fn print_table(rows: &[Row], ctx: &Ctx) {
    println!(
        "\n## Fault suite ({}, seed {})\n",
        if ctx.short { "short" } else { "full" },
        ctx.seed
    );
    println!(
        "| scenario | faults injected | jobs accepted | jobs served | VMs leaked | runners leaked | max runners seen / max_runners | GitHub calls per job | panics | result |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        if let Some(why) = &r.skipped {
            println!(
                "| {} | **SKIPPED: {why}** | – | – | – | – | – | – | – | SKIPPED |",
                r.name
            );
            continue;
        }
        println!(
            "| {} | {} | {} | {} of {} | {} | {} | {} / {} | {:.1} | {} | {} |",
            r.name,
            r.faults,
            r.accepted,
            r.served,
            r.queued,
            r.vms_leaked,
            r.runners_leaked,
            r.peak.0,
            r.peak.1,
            r.calls_per_job,
            r.panics,
            if r.problems.is_empty() {
                format!("ok ({}s)", r.took.as_secs())
            } else {
                format!("**FAIL** ({}s)", r.took.as_secs())
            }
        );
    }
    let mut any = false;
    for r in rows {
        for p in &r.problems {
            if !any {
                println!();
                any = true;
            }
            println!("- **{}**: {p}", r.name);
        }
        for n in &r.notes {
            if !any {
                println!();
                any = true;
            }
            println!("- {}: {n}", r.name);
        }
    }
}

fn main() -> ExitCode {
    let mut short = false;
    let mut seed = 13u64;
    let mut chosen = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--short" => short = true,
            "--seed" => match args.next().and_then(|s| s.parse().ok()) {
                Some(s) => seed = s,
                None => {
                    eprintln!("--seed needs a number\n{}", usage());
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{}", usage());
                return ExitCode::SUCCESS;
            }
            s if SCENARIOS.contains(&s) => chosen.push(s.to_owned()),
            other => {
                eprintln!("unknown argument {other:?}\n{}", usage());
                return ExitCode::from(2);
            }
        }
    }
    if chosen.is_empty() {
        chosen = SCENARIOS.iter().map(|s| s.to_string()).collect();
    }
    let ctx = Ctx { short, seed };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hangar-faults: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows = runtime.block_on(async {
        let mut rows = Vec::new();
        for name in &chosen {
            eprintln!("==> scenario {name}");
            let started = Instant::now();
            let mut row = match tokio::time::timeout(limit(name, short), run_one(name, &ctx)).await
            {
                Ok(Ok(row)) => row,
                Ok(Err(e)) => Row {
                    name: name.clone(),
                    problems: vec![format!("could not run: {e:#}")],
                    ..Row::default()
                },
                Err(_) => Row {
                    name: name.clone(),
                    problems: vec![format!("abandoned after {}s", limit(name, short).as_secs())],
                    ..Row::default()
                },
            };
            row.took = started.elapsed();
            eprintln!(
                "    {name}: {} in {}s",
                if row.skipped.is_some() {
                    "skipped"
                } else if row.problems.is_empty() {
                    "ok"
                } else {
                    "FAIL"
                },
                row.took.as_secs()
            );
            rows.push(row);
        }
        rows
    });
    // Scenario tasks (FakeGitHub servers, watchers) end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(2));
    print_table(&rows, &ctx);
    if rows.iter().any(|r| !r.problems.is_empty()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
