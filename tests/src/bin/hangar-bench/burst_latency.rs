//! `schedule`'s burst-latency case: how long GitHub waits for its answers
//! while hangard is busy creating. 200 `queued` deliveries for one pool go
//! out at once over 16 connections to a fresh hangard whose pool runs on
//! the external fake provider (a process per call, as with garm's
//! providers) and FakeGitHub (JIT registration): per-webhook latency
//! (p50, max), the time until all 200 were answered, and when the last
//! provider create came. Several rounds (`HANGAR_BENCH_ROUNDS`, default 3),
//! and several builds interleaved (`HANGAR_BENCH_HANGARDS`, as the queue
//! bench).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hangar_e2e::{Api, Daemon, bin, free_port, write_config};
use serde_json::json;

use super::load::{Load, Window};
use super::{SECRET, blast, body_for, ms, payload_template, percentile, verdict};

const JOBS: usize = 200;
const CONNS: usize = 16;

/// One burst's figures.
struct Run {
    label: String,
    p50: Duration,
    p99: Duration,
    max: Duration,
    answered: Duration,
    last_create: Duration,
    load: Load,
}

/// Unix µs of every `CreateInstance` the external fake provider logged.
pub(super) fn create_stamps(log: &Path) -> Vec<u128> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("CreateInstance"))
                .then(|| f.nth(1).and_then(|t| t.parse().ok()))
                .flatten()
        })
        .collect()
}

async fn once(root: &Path, label: &str, hangard: &Path) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("provider");
    std::fs::create_dir_all(&state)?;
    let provider_cfg = dir.path().join("provider.toml");
    std::fs::write(
        &provider_cfg,
        format!("state_dir = \"{}\"\nboot = \"none\"\n", state.display()),
    )?;
    // The fake provider next to the hangard measured (HANGAR_BIN_DIR), so
    // each build runs with the provider it was built with.
    let fake = hangard
        .parent()
        .map(|d| d.join("hangar-fake-provider"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| bin("hangar-fake-provider"));
    let extra = format!(
        r#"
[github]
budget_per_hour = 100000000
budget_burst = 100000

[[provider]]
name = "ext"
kind = "external"
[provider.external]
executable = "{}"
config_file = "{}"
"#,
        fake.display(),
        provider_cfg.display()
    );
    let port = free_port();
    let config = write_config(dir.path(), port, &extra);
    let daemon = Daemon::start_bin(hangard, dir.path(), port, &config, &[]).await?;
    let pid = daemon.pid().context("pid")?;
    let api = Api::init(&daemon.url).await?;
    let gh = hangar_testkit::fake_github::FakeGitHub::start().await;
    api.add_github(&gh.url()).await?;
    let repo = api.add_repo("bench", "burst", SECRET).await?;
    api.add_pool(
        &repo,
        json!({"provider_name": "ext", "image": "i", "flavor": "f",
               "tags": ["self-hosted", "linux"], "max_runners": 1000,
               "runner_bootstrap_timeout": 600}),
    )
    .await?;
    let url = format!("{}/webhooks/{repo}", daemon.url);
    let template = payload_template(root, "bench", "burst", 0)?;
    let bodies: Vec<(Vec<u8>, String)> = (0..JOBS)
        .map(|i| {
            let b = body_for(&template, 70_000_000_000 + i as i64);
            let s = hangar_e2e::sign(SECRET, &b);
            (b, s)
        })
        .collect();
    // Quiet first: the pool's first reconcile and the sweep after start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = Window::start(pid)?;
    let first = Instant::now();
    let first_unix = super::now_micros();
    let (mut lat, ok, answered) = blast(&url, bodies, CONNS, 202).await?;
    if ok != JOBS {
        bail!("{label}: only {ok} of {JOBS} webhooks answered 202");
    }
    let log = state.join("calls.log");
    let deadline = first + Duration::from_secs(120);
    let stamps = loop {
        let s = create_stamps(&log);
        if s.len() >= JOBS {
            break s;
        }
        if Instant::now() > deadline {
            bail!("{label}: only {} of {JOBS} creates after 120 s", s.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let load = window.end(pid)?;
    let last = stamps.iter().max().copied().unwrap_or(first_unix);
    lat.sort();
    drop(daemon);
    Ok(Run {
        label: label.to_owned(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        max: *lat.last().context("latencies")?,
        answered,
        last_create: Duration::from_micros(last.saturating_sub(first_unix) as u64),
        load,
    })
}

/// The builds to compare: `HANGAR_BENCH_HANGARDS="before=/p/hangard,after=/q/hangard"`,
/// else this build.
pub fn builds() -> anyhow::Result<Vec<(String, PathBuf)>> {
    match std::env::var("HANGAR_BENCH_HANGARDS") {
        Ok(v) => v
            .split(',')
            .map(|kv| {
                let (l, p) = kv.split_once('=').context("label=path")?;
                Ok((l.to_owned(), PathBuf::from(p)))
            })
            .collect(),
        Err(_) => Ok(vec![("this build".into(), bin("hangard"))]),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub async fn run(root: &Path) -> anyhow::Result<()> {
    const P50_MS: f64 = 8.0;
    const MAX_MS: f64 = 25.0;
    const ANSWERED_MS: f64 = 300.0;
    const LAST_CREATE_MS: f64 = 1500.0;
    let builds = builds()?;
    let rounds: usize = std::env::var("HANGAR_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut runs = Vec::new();
    for _ in 0..rounds {
        for (label, path) in &builds {
            runs.push(once(root, label, path).await?);
        }
    }
    println!(
        "\n## Webhook latency during a {JOBS}-job burst ({CONNS} connections, one pool on the external fake provider, FakeGitHub API, a fresh hangard per run)\n"
    );
    println!(
        "| build | p50 ms | p99 ms | max ms | all {JOBS} answered after ms | last create after first webhook ms |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.label,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            ms(r.answered),
            ms(r.last_create)
        );
    }
    println!("\nMedians over {rounds} run(s):\n");
    println!(
        "| build | p50 ms | max ms | all {JOBS} answered after ms | last create after first webhook ms |"
    );
    println!("|---|---|---|---|---|");
    let mut verdicts = Vec::new();
    for (label, _) in &builds {
        let mine: Vec<&Run> = runs.iter().filter(|r| &r.label == label).collect();
        let p50 = median(mine.iter().map(|r| r.p50).collect());
        let max = median(mine.iter().map(|r| r.max).collect());
        let answered = median(mine.iter().map(|r| r.answered).collect());
        let last = median(mine.iter().map(|r| r.last_create).collect());
        println!(
            "| {label} | {} | {} | {} | {} |",
            ms(p50),
            ms(max),
            ms(answered),
            ms(last)
        );
        let f = |d: Duration| d.as_secs_f64() * 1000.0;
        verdicts.push(format!(
            "{label}: p50 {:.1} ms vs ≤ {P50_MS} ms: {}; max {:.1} ms vs ≤ {MAX_MS} ms: {}; all answered {:.0} ms vs ≤ {ANSWERED_MS} ms: {}; last create {:.0} ms vs ≤ {LAST_CREATE_MS} ms: {}",
            f(p50),
            verdict(f(p50) <= P50_MS),
            f(max),
            verdict(f(max) <= MAX_MS),
            f(answered),
            verdict(f(answered) <= ANSWERED_MS),
            f(last),
            verdict(f(last) <= LAST_CREATE_MS),
        ));
    }
    println!();
    for v in verdicts {
        println!("{v}");
    }
    println!("\nThe machine during each run (CPUs busy on average):\n");
    println!("{}", Load::HEADER);
    for r in &runs {
        println!("{}", r.load.row(&format!("{} burst", r.label)));
    }
    Ok(())
}
