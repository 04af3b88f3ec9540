//! `bench scalesets`: time from a job becoming available on a runner scale
//! set (FakeActions' queue, read by hangard's listener through the long
//! poll) to the provider's create call (hangard's in-process instant fake
//! provider, whose calls log stamps each create). 200 single jobs, one at
//! a time and each waited for, then a 1,000-job burst; a fresh daemon per
//! scenario. The clock starts just before the job is queued in FakeActions,
//! which is when the service offers it as `JobAvailable`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hangar_e2e::{Api, Daemon, free_port, write_config};
use hangar_testkit::fake_actions::FakeActions;
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::json;

use crate::load;
use crate::{creates, ms, now_micros, percentile, wait_creates};

const NAME: &str = "hangar-bench-ss";
const SECRET: &str = "unused-webhook-secret-value";

struct Env {
    _dir: tempfile::TempDir,
    daemon: Daemon,
    _gh: FakeGitHub,
    fa: FakeActions,
    log: PathBuf,
}

impl Env {
    /// With `HANGAR_BENCH_KEEP_LOGS=DIR`, keeps the daemon's log and the
    /// provider's calls log as `DIR/<scenario>.{hangard,calls}.log` (with
    /// `HANGAR_E2E_LOG=info,hangar_scheduler=debug` they give a timeline).
    fn keep_logs(&self, scenario: &str) -> anyhow::Result<()> {
        let Some(dir) = std::env::var_os("HANGAR_BENCH_KEEP_LOGS") else {
            return Ok(());
        };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join(format!("{scenario}.hangard.log")),
            self.daemon.logs(),
        )?;
        std::fs::copy(&self.log, dir.join(format!("{scenario}.calls.log")))?;
        Ok(())
    }
}

async fn start(max_runners: usize) -> anyhow::Result<Env> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("calls.log");
    let extra = format!(
        r#"
[github]
budget_per_hour = 100000000
budget_burst = 100000

[[provider]]
name = "fake"
kind = "fake"
[provider.fake]
boot = "none"
max_concurrency = 64
calls_log = "{}"
"#,
        log.display()
    );
    // Diagnosis: more config (e.g. a `[scheduler]` table) for a run.
    let extra = extra + &std::env::var("HANGAR_BENCH_SS_CONFIG").unwrap_or_default();
    let port = free_port();
    let config = write_config(dir.path(), port, &extra);
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        text.replacen("[server]\n", "[server]\nmax_runners_per_pool = 5000\n", 1),
    )?;
    let daemon = Daemon::start(dir.path(), port, &config).await?;
    let api = Api::init(&daemon.url).await?;
    let gh = FakeGitHub::start().await;
    let fa = FakeActions::start(&gh).await;
    fa.set_poll_wait(Duration::from_secs(5));
    api.add_github(&gh.url()).await?;
    let repo = api.add_repo("bench", "ss", SECRET).await?;
    let ss = api
        .post(
            &format!("/api/v1/repositories/{repo}/scalesets"),
            json!({"name": NAME, "provider_name": "fake", "image": "i", "flavor": "f",
                   "max_runners": max_runners}),
        )
        .await?;
    ss["github_id"]
        .as_i64()
        .context("scale set without github_id")?;
    let held = fa
        .wait_for(Duration::from_secs(60), |fa| {
            fa.scale_sets()
                .iter()
                .any(|s| s.name == NAME && s.session_owner.is_some())
        })
        .await;
    if !held {
        anyhow::bail!("no listener session:\n{}", daemon.logs());
    }
    Ok(Env {
        _dir: dir,
        daemon,
        _gh: gh,
        fa,
        log,
    })
}

/// Single jobs, one at a time: returns sorted latencies and the load window.
async fn singles(n: usize) -> anyhow::Result<(Vec<Duration>, load::Load)> {
    let env = start(n.max(1000)).await?;
    let pid = env.daemon.pid().context("pid")?;
    let window = load::Window::start(pid)?;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = now_micros();
        env.fa.queue_job(NAME, "bench/ss");
        let c = wait_creates(
            &env.log,
            i + 1,
            Duration::from_millis(1),
            Duration::from_secs(30),
        )
        .await?;
        let newest = *c.last().context("a create")?;
        lat.push(Duration::from_micros(newest.saturating_sub(t0) as u64));
    }
    let l = window.end(pid)?;
    env.keep_logs("singles")?;
    let total = creates(&env.log)?.len();
    if total != n {
        println!("note: single jobs: {total} create calls for {n} jobs");
    }
    lat.sort();
    Ok((lat, l))
}

/// `n` jobs queued at once; each create is matched to the queue instant of
/// the job with the same rank (creates are not tied to a job id here, so
/// this is the time for the k-th job to get its VM call).
async fn burst(n: usize) -> anyhow::Result<(Vec<Duration>, load::Load)> {
    let env = start(n).await?;
    let pid = env.daemon.pid().context("pid")?;
    let window = load::Window::start(pid)?;
    let mut queued = Vec::with_capacity(n);
    for _ in 0..n {
        queued.push(now_micros());
        env.fa.queue_job(NAME, "bench/ss");
    }
    let c = wait_creates(
        &env.log,
        n,
        Duration::from_millis(10),
        Duration::from_secs(120),
    )
    .await?;
    let l = window.end(pid)?;
    env.keep_logs("burst")?;
    if let Some(dir) = std::env::var_os("HANGAR_BENCH_KEEP_LOGS") {
        let q: Vec<String> = queued.iter().map(u128::to_string).collect();
        std::fs::write(PathBuf::from(dir).join("burst.queued"), q.join("\n"))?;
    }
    let mut lat: Vec<Duration> = queued
        .iter()
        .zip(c.iter())
        .map(|(q, c)| Duration::from_micros(c.saturating_sub(*q) as u64))
        .collect();
    lat.sort();
    Ok((lat, l))
}

pub async fn run(_root: &Path, quick: bool) -> anyhow::Result<()> {
    const P99_MS: f64 = 100.0;
    let (n_single, n_burst) = if quick { (50, 200) } else { (200, 1000) };
    let (single, l1) = singles(n_single).await?;
    let (bursty, l2) = burst(n_burst).await?;
    println!(
        "\n## Scale set: JobAvailable → provider create call (FakeActions, in-process instant fake provider, hangard from HANGAR_BIN_DIR: release under `cargo xtask bench`, a fresh daemon per scenario)\n"
    );
    println!("| scenario | jobs | p50 ms | p99 ms | max ms | target (reported, not asserted) |");
    println!("|---|---|---|---|---|---|");
    for (what, lat) in [("single job, sequential", &single), ("burst", &bursty)] {
        let p99 = percentile(lat, 0.99);
        let p99_ms = p99.as_secs_f64() * 1000.0;
        println!(
            "| {what} | {} | {} | {} | {} | p99 ≤ {P99_MS:.0} ms: {} |",
            lat.len(),
            ms(percentile(lat, 0.5)),
            ms(p99),
            ms(*lat.last().context("latencies")?),
            crate::verdict(p99_ms <= P99_MS)
        );
    }
    println!("\n{}", load::Load::HEADER);
    println!("{}", l1.row("single jobs"));
    println!("{}", l2.row("burst"));
    Ok(())
}
