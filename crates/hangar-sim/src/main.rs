//! `hangar-sim [SCENARIO|all] [--seed N] [--dir DIR]`: runs scenarios from
//! `sim/scenarios` (or DIR), prints the Markdown tables, and exits 1 when
//! a scenario missed one of its goals (2 on bad input).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hangar_sim::{Scenario, markdown, run};

const USAGE: &str = "usage: hangar-sim [SCENARIO|PATH.toml|all] [--seed N] [--dir DIR]";

fn main() -> ExitCode {
    match main_() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("hangar-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Log lines carry Hangar's (virtual) clock, not the wall clock.
struct VirtualTime;

impl tracing_subscriber::fmt::time::FormatTime for VirtualTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", hangar_store::clock::now().format("%H:%M:%S%.3f"))
    }
}

fn scenario_files(dir: &Path, which: &str) -> anyhow::Result<Vec<PathBuf>> {
    if which.ends_with(".toml") {
        return Ok(vec![PathBuf::from(which)]);
    }
    if which != "all" {
        let path = dir.join(format!("{which}.toml"));
        if !path.exists() {
            anyhow::bail!(
                "no scenario {which:?} in {} (try `all`, or one of: {})",
                dir.display(),
                names(dir)?.join(", ")
            );
        }
        return Ok(vec![path]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!("no scenarios in {}", dir.display());
    }
    Ok(files)
}

fn names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    out.sort();
    Ok(out)
}

fn main_() -> anyhow::Result<bool> {
    // The scheduler's own log, when asked for (`HANGAR_SIM_LOG=info`).
    if let Ok(filter) = std::env::var("HANGAR_SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_timer(VirtualTime)
            .with_ansi(false)
            .init();
    }
    let mut which = None;
    let mut seed = None;
    let mut dir = PathBuf::from("sim/scenarios");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seed" => {
                let v = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--seed needs a value"))?;
                seed = Some(
                    v.parse::<u64>()
                        .map_err(|_| anyhow::anyhow!("--seed {v:?} is not a whole number"))?,
                );
            }
            "--dir" => {
                dir = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--dir needs a value"))?
                    .into();
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(true);
            }
            s if s.starts_with('-') => anyhow::bail!("unknown option {s:?}\n{USAGE}"),
            s if which.is_none() => which = Some(s.to_owned()),
            s => anyhow::bail!("unexpected argument {s:?}\n{USAGE}"),
        }
    }
    let which = which.unwrap_or_else(|| "all".into());
    let mut reports = Vec::new();
    for file in scenario_files(&dir, &which)? {
        let scenario = Scenario::load(&file)?;
        let seed = seed.unwrap_or(scenario.seed);
        eprintln!(
            "hangar-sim: {} (seed {seed}): {}",
            scenario.name, scenario.description
        );
        let report = run(&scenario, seed)?;
        eprintln!(
            "hangar-sim: {} done in {:.1} s of real time",
            scenario.name,
            report.wall.as_secs_f64()
        );
        reports.push(report);
    }
    print!("{}", markdown(&reports));
    let met = reports.iter().all(|r| r.goals_met());
    if !met {
        for r in reports.iter().filter(|r| !r.goals_met()) {
            for (g, _) in r.goals.iter().filter(|(_, ok)| !ok) {
                eprintln!("hangar-sim: {}: goal missed: {g}", r.scenario);
            }
        }
    }
    Ok(met)
}
