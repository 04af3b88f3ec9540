//! `hangar-faults`: the fault suite behind `cargo xtask faults`. Each
//! scenario runs the real `hangard` on loopback against FakeGitHub and the
//! external fake provider, injects one family of faults, waits (bounded)
//! for the jobs to be served and everything to be cleaned up, and becomes
//! one row of a Markdown table. A promised zero that is not zero, or an
//! accepted job that is not served, fails the run (exit 1).
//!
//! ```text
//! hangar-faults [--short] [--seed N] [--postgres URL [--replicas N] [--lease-ttl-ms MS]] [SCENARIO…]
//! ```
//!
//! Scenarios: `kill9`, `provider`, `github`, `lost`, `disorder`,
//! `db-full`, `db-readonly`, `flood`, `slowloris` (all by default).
//! `--short` runs smaller bursts (CI); randomness comes from `--seed`
//! (default 13), so a failing run can be repeated.
//!
//! `--postgres URL` runs every scenario against a cluster: `--replicas`
//! `hangard` (default 2) on a fresh database of that server, with
//! `[scheduler] lease_ttl_ms` = `--lease-ttl-ms` (default 1500). It adds
//! the cluster-only `kill-lease-holder` (kill -9 of the replica holding a
//! pool's lease, ≥ 10 times, 3 with `--short`; failover measured) and, in
//! the full run, `kill-lease-holder-default-ttl` (the same at the default
//! 6000 ms). Scenarios that only make sense on one SQLite `hangard` are
//! skipped with their reason.

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

/// Failover times of one `kill-lease-holder` row.
#[derive(Debug, Clone, Default)]
pub struct Failover {
    pub lease_ttl_ms: u64,
    /// One per kill that failed over, in order.
    pub times: Vec<Duration>,
}

impl Failover {
    pub fn median(&self) -> Duration {
        let mut t = self.times.clone();
        t.sort_unstable();
        t.get(t.len() / 2).copied().unwrap_or_default()
    }

    pub fn max(&self) -> Duration {
        self.times.iter().max().copied().unwrap_or_default()
    }
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
    /// Cluster failover measurements (`kill-lease-holder`).
    pub failover: Option<Failover>,
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

/// Scenarios only a cluster runs.
const CLUSTER_SCENARIOS: &[&str] = &["kill-lease-holder", "kill-lease-holder-default-ttl"];

fn usage() -> String {
    format!(
        "usage: hangar-faults [--short] [--seed N] [--postgres URL [--replicas N] [--lease-ttl-ms MS]] [SCENARIO…]\nscenarios: {}\ncluster only (--postgres): {}",
        SCENARIOS.join(", "),
        CLUSTER_SCENARIOS.join(", ")
    )
}

/// How long one scenario may take before it is abandoned.
fn limit(name: &str, short: bool) -> Duration {
    let secs = match (name, short) {
        ("kill9", true) => 300,
        ("kill9", false) => 1200,
        ("lost", _) => 400,
        ("kill-lease-holder" | "kill-lease-holder-default-ttl", true) => 300,
        ("kill-lease-holder" | "kill-lease-holder-default-ttl", false) => 900,
        (_, true) => 180,
        (_, false) => 400,
    };
    Duration::from_secs(secs)
}

/// `[scheduler] lease_ttl_ms`'s default.
const DEFAULT_LEASE_TTL_MS: u64 = 6000;

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
        "kill-lease-holder" => scenarios::kill_lease_holder(ctx, None).await,
        "kill-lease-holder-default-ttl" => {
            scenarios::kill_lease_holder(ctx, Some(DEFAULT_LEASE_TTL_MS)).await
        }
        other => anyhow::bail!("unknown scenario {other:?}"),
    }
}

fn print_table(rows: &[Row], ctx: &Ctx) {
    let world = match rig::cluster() {
        Some(c) => format!(
            ", {} hangard replicas on PostgreSQL, lease_ttl_ms {}",
            c.replicas, c.lease_ttl_ms
        ),
        None => ", one hangard on SQLite".to_owned(),
    };
    println!(
        "\n## Fault suite ({}, seed {}{world})\n",
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
    let failovers: Vec<(&Row, &Failover)> = rows
        .iter()
        .filter_map(|r| r.failover.as_ref().map(|f| (r, f)))
        .collect();
    if !failovers.is_empty() {
        println!(
            "\n| failover (kill -9 of the lease holder → another replica holds the lease and creates for a waiting job) | lease_ttl_ms | kills measured | median | max |"
        );
        println!("|---|---|---|---|---|");
        for (r, f) in failovers {
            println!(
                "| {} | {} | {} | {:.2} s | {:.2} s |",
                r.name,
                f.lease_ttl_ms,
                f.times.len(),
                f.median().as_secs_f64(),
                f.max().as_secs_f64()
            );
        }
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
    let mut postgres: Option<String> = None;
    let mut replicas = 2usize;
    let mut lease_ttl_ms = 1500u64;
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
            "--postgres" => match args.next() {
                Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                    postgres = Some(u)
                }
                _ => {
                    eprintln!("--postgres needs a postgres:// URL\n{}", usage());
                    return ExitCode::from(2);
                }
            },
            "--replicas" => match args.next().and_then(|s| s.parse().ok()) {
                Some(n) if (1..=8).contains(&n) => replicas = n,
                _ => {
                    eprintln!("--replicas needs a number from 1 to 8\n{}", usage());
                    return ExitCode::from(2);
                }
            },
            "--lease-ttl-ms" => match args.next().and_then(|s| s.parse().ok()) {
                Some(n) if n >= 600 => lease_ttl_ms = n,
                _ => {
                    eprintln!(
                        "--lease-ttl-ms needs a number of milliseconds, at least 600\n{}",
                        usage()
                    );
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{}", usage());
                return ExitCode::SUCCESS;
            }
            s if SCENARIOS.contains(&s) || CLUSTER_SCENARIOS.contains(&s) => {
                chosen.push(s.to_owned())
            }
            other => {
                eprintln!("unknown argument {other:?}\n{}", usage());
                return ExitCode::from(2);
            }
        }
    }
    if chosen
        .iter()
        .any(|s| CLUSTER_SCENARIOS.contains(&s.as_str()))
        && postgres.is_none()
    {
        eprintln!(
            "{} run on a cluster only: add --postgres URL\n{}",
            CLUSTER_SCENARIOS.join(" and "),
            usage()
        );
        return ExitCode::from(2);
    }
    if chosen.is_empty() {
        chosen = SCENARIOS.iter().map(|s| s.to_string()).collect();
        if postgres.is_some() {
            chosen.push(CLUSTER_SCENARIOS[0].to_owned());
            if !short && lease_ttl_ms != DEFAULT_LEASE_TTL_MS {
                chosen.push(CLUSTER_SCENARIOS[1].to_owned());
            }
        }
    }
    if let Some(admin_url) = postgres {
        rig::set_cluster(rig::Cluster {
            admin_url,
            replicas,
            lease_ttl_ms,
        });
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
    runtime.block_on(rig::drop_databases());
    // Scenario tasks (FakeGitHub servers, watchers) end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(2));
    print_table(&rows, &ctx);
    if rows.iter().any(|r| !r.problems.is_empty()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
