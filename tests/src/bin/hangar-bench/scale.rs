//! `scale`: hangard at 2,000 live instances. 10 repositories × 10 pools on
//! FakeGitHub (a hook per repository) and the external fake provider
//! (`hangar-fake-provider`, instant creates, runners that never come up,
//! so every instance stays live); 2,000 `queued` jobs, 20 per pool, go out
//! through FakeGitHub's hooks. Prints: time to 2,000 creates, hangard's CPU
//! per instance created, steady CPU per minute, RSS (idle, at scale, after
//! a restart), GitHub calls per minute by route and provider calls per
//! minute by command at steady state, the restart's time to `/healthz`, and
//! the machine's other load during each window.
//!
//! `--quick` shortens the idle and steady windows (about a minute in all).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hangar_e2e::{Api, Daemon, bin, free_port, write_config};
use serde_json::json;

use super::load::{Load, Window};
use super::{ROUTES, SECRET, cpu_seconds, now_micros, provider_calls, smaps_rollup_kib};

const REPOS: usize = 10;
const POOLS_PER_REPO: usize = 10;
const JOBS_PER_POOL: usize = 20;
const JOBS: usize = REPOS * POOLS_PER_REPO * JOBS_PER_POOL;

struct Windows {
    /// Idle after setup: RSS is read at its end.
    idle: Duration,
    /// After the last create, before the steady window.
    warm: Duration,
    steady: Duration,
}

async fn make_hook(gh_url: &str, repo: &str, url: &str) -> anyhow::Result<()> {
    let r = reqwest::Client::new()
        .post(format!("{gh_url}/repos/{repo}/hooks"))
        .bearer_auth("bench")
        .json(
            &json!({"name": "web", "active": true, "events": ["workflow_job"],
            "config": {"url": url, "content_type": "json", "secret": SECRET, "insecure_ssl": "0"}}),
        )
        .send()
        .await?;
    anyhow::ensure!(
        r.status() == 201,
        "creating the hook of {repo}: {}",
        r.status()
    );
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

/// Polls `/healthz` every 5 ms from `since` until it answers 200.
async fn healthy_after(url: &str, since: Instant) -> anyhow::Result<Duration> {
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{url}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(60) {
            bail!("hangard not healthy 60 s after the restart");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn run(quick: bool) -> anyhow::Result<()> {
    let w = if quick {
        Windows {
            idle: Duration::from_secs(5),
            warm: Duration::from_secs(5),
            steady: Duration::from_secs(20),
        }
    } else {
        // tokio lets an idle blocking thread go after 10 s: idle means after.
        Windows {
            idle: Duration::from_secs(12),
            warm: Duration::from_secs(15),
            steady: Duration::from_secs(60),
        }
    };
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("provider");
    std::fs::create_dir_all(&state)?;
    let provider_cfg = dir.path().join("provider.toml");
    std::fs::write(
        &provider_cfg,
        format!("state_dir = \"{}\"\nboot = \"none\"\n", state.display()),
    )?;
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
        bin("hangar-fake-provider").display(),
        provider_cfg.display()
    );
    let port = free_port();
    let config = write_config(dir.path(), port, &extra);
    let hangard = bin("hangard");
    let mut daemon = Daemon::start_bin(&hangard, dir.path(), port, &config, &[]).await?;
    let pid = daemon.pid().context("pid")?;
    let api = Api::init(&daemon.url).await?;
    let gh = hangar_testkit::fake_github::FakeGitHub::start().await;
    api.add_github(&gh.url()).await?;

    let setup = Window::start(pid)?;
    let mut labels: Vec<(String, String)> = Vec::new(); // (owner/name, pool label)
    for r in 0..REPOS {
        let name = format!("app{r}");
        let repo = api.add_repo("scale", &name, SECRET).await?;
        make_hook(
            &gh.url(),
            &format!("scale/{name}"),
            &format!("{}/webhooks/{repo}", daemon.url),
        )
        .await?;
        for p in 0..POOLS_PER_REPO {
            let label = format!("r{r}p{p}");
            api.add_pool(
                &repo,
                json!({"provider_name": "ext", "image": "i", "flavor": "f",
                       "tags": ["self-hosted", label], "max_runners": JOBS_PER_POOL + 5,
                       "runner_bootstrap_timeout": 600}),
            )
            .await?;
            labels.push((format!("scale/{name}"), label));
        }
    }
    tokio::time::sleep(w.idle).await;
    let setup_load = setup.end(pid)?;
    let idle_rss = smaps_rollup_kib(pid)?;
    let idle_threads = threads(pid);

    // 2,000 jobs through FakeGitHub's hooks, 16 senders.
    let log = state.join("calls.log");
    let burst = Window::start(pid)?;
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..16 {
        let gh = gh.clone();
        let mine: Vec<(String, String)> = labels.iter().skip(s).step_by(16).cloned().collect();
        tasks.push(tokio::spawn(async move {
            for _ in 0..JOBS_PER_POOL {
                for (repo, label) in &mine {
                    gh.queue_job(repo, &["self-hosted", label]).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let sent = t0.elapsed();
    let deadline = t0 + Duration::from_secs(300);
    let creates = loop {
        let n = provider_calls(&log, 0, u128::MAX)?
            .get("CreateInstance")
            .copied()
            .unwrap_or(0) as usize;
        if n >= JOBS {
            break n;
        }
        if Instant::now() > deadline {
            bail!("only {n} of {JOBS} creates 300 s after the first job");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let to_creates = t0.elapsed();
    // hangard's own CPU (provider processes are in the load table).
    let cpu_create = cpu_seconds(pid)? - cpu0;
    let burst_load = burst.end(pid)?;

    tokio::time::sleep(w.warm).await;
    let live = api
        .instances(false)
        .await?
        .iter()
        .filter(|i| i["status"] == "running")
        .count();
    let steady = Window::start(pid)?;
    let cpu1 = cpu_seconds(pid)?;
    let gh0: Vec<u64> = ROUTES.iter().map(|r| gh.calls(r)).collect();
    let gh_all0 = gh.calls_total();
    let s0 = now_micros();
    tokio::time::sleep(w.steady).await;
    let s1 = now_micros();
    let per_min = |n: f64| n * 60.0 / w.steady.as_secs_f64();
    let steady_cpu = per_min(cpu_seconds(pid)? - cpu1);
    let github: Vec<(String, f64)> = ROUTES
        .iter()
        .zip(gh0)
        .map(|(r, b)| (r.to_string(), per_min((gh.calls(r) - b) as f64)))
        .collect();
    let github_all = per_min((gh.calls_total() - gh_all0) as f64);
    let provider: BTreeMap<String, f64> = provider_calls(&log, s0, s1)?
        .into_iter()
        .map(|(c, n)| (c, per_min(n as f64)))
        .collect();
    let steady_load = steady.end(pid)?;
    let scale_rss = smaps_rollup_kib(pid)?;
    let scale_threads = threads(pid);

    // Restart: SIGTERM, then a new hangard on the same database.
    let stop_started = Instant::now();
    daemon.stop();
    let stop_took = stop_started.elapsed();
    let log_file = std::fs::File::create(dir.path().join("hangard-restarted.log"))?;
    let restart_started = Instant::now();
    let mut child = std::process::Command::new(&hangard)
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .spawn()
        .context("restart hangard")?;
    let restarted = async {
        let to_health = healthy_after(&daemon.url, restart_started).await?;
        let pid2 = child.id();
        let after = Window::start(pid2)?;
        tokio::time::sleep(w.idle).await;
        let after_load = after.end(pid2)?;
        let rss = smaps_rollup_kib(pid2)?;
        anyhow::Ok((to_health, rss, threads(pid2), after_load))
    }
    .await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let (to_health, restart_rss, restart_threads, restart_load) = restarted?;

    let size = std::fs::metadata(&hangard).map_or(0, |m| m.len());
    println!(
        "\n## Scale: {REPOS} repositories × {POOLS_PER_REPO} pools, {JOBS} live instances (external fake provider, FakeGitHub; {}, {:.1} MiB on disk)\n",
        hangard.display(),
        size as f64 / (1 << 20) as f64
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| time to {JOBS} creates (first job queued → {creates}th CreateInstance) | {:.2} s (all webhooks answered after {:.2} s) |",
        to_creates.as_secs_f64(),
        sent.as_secs_f64()
    );
    println!(
        "| hangard CPU per instance created | {:.2} ms (hangard alone; with its provider processes {:.2} ms) |",
        cpu_create * 1000.0 / JOBS as f64,
        burst_load.daemon * burst_load.secs * 1000.0 / JOBS as f64
    );
    println!("| live instances at steady state | {live} |");
    println!(
        "| steady CPU of hangard per minute, {live} live instances | {:.3} s ({:.2} % of a CPU) |",
        steady_cpu,
        steady_cpu / 60.0 * 100.0
    );
    println!(
        "| RSS idle, 10 repos + 100 pools after login | {:.1} MiB (anonymous {:.1}, file-backed {:.1}; {idle_threads} threads) |",
        mib(idle_rss.0),
        mib(idle_rss.1),
        mib(idle_rss.2)
    );
    println!(
        "| RSS at scale | {:.1} MiB (anonymous {:.1}, file-backed {:.1}; {scale_threads} threads) |",
        mib(scale_rss.0),
        mib(scale_rss.1),
        mib(scale_rss.2)
    );
    println!(
        "| RSS after restart, {} s idle | {:.1} MiB (anonymous {:.1}, file-backed {:.1}; {restart_threads} threads) |",
        w.idle.as_secs(),
        mib(restart_rss.0),
        mib(restart_rss.1),
        mib(restart_rss.2)
    );
    println!(
        "| restart: SIGTERM → exit, start → `/healthz` 200 | {:.3} s, {:.3} s |",
        stop_took.as_secs_f64(),
        to_health.as_secs_f64()
    );
    println!(
        "\nGitHub calls per minute at steady state ({} s window; all routes {github_all:.1}):\n",
        w.steady.as_secs()
    );
    println!("| GitHub route | calls/min |");
    println!("|---|---:|");
    for (route, n) in &github {
        if *n > 0.0 {
            println!("| {route} | {n:.1} |");
        }
    }
    println!("\nProvider calls per minute at steady state:\n");
    println!("| provider command | calls/min |");
    println!("|---|---:|");
    if provider.is_empty() {
        println!("| (none) | 0 |");
    }
    for (c, n) in &provider {
        println!("| {c} | {n:.1} |");
    }
    println!("\nThe machine during each window (CPUs busy on average):\n");
    println!("{}", Load::HEADER);
    for (what, l) in [
        ("setup + idle", &setup_load),
        ("2,000 jobs → creates", &burst_load),
        ("steady state", &steady_load),
        ("after restart, idle", &restart_load),
    ] {
        println!("{}", l.row(what));
    }
    if live < JOBS {
        println!("\nnote: only {live} of {JOBS} instances were running at steady state");
    }
    Ok(())
}
