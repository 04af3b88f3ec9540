//! `hangar-bench`: the benchmarks behind `cargo xtask bench`. Runs the
//! release `hangard` on loopback and prints tables.
//!
//! - `webhooks`: a 7 KB `queued` delivery with a distinct job id per
//!   request, at 1 and 16 connections: accepted req/s, p50/p99 latency, CPU
//!   time per request and peak RSS of hangard; the same for deliveries with
//!   a bad signature. Every 202 is checked to be durable (counted in the
//!   database afterwards).
//! - `schedule`: time from a `queued` webhook to the provider's create call
//!   (FakeGitHub as the API + hangard's in-process instant fake provider,
//!   whose calls log stamps each create), for 200 sequential single jobs
//!   (p50/p99) and for bursts of 50, 200 and 2,000 jobs (first and last
//!   webhook → last create), plus hangard's CPU per job; each scenario gets
//!   a fresh daemon. Deliveries are signed here and sent directly (16
//!   connections for bursts), so FakeGitHub's job bookkeeping is not part
//!   of the figures.
//! - `queue`: 2,000 jobs that stay queued over 100 pools (`max_runners` 1,
//!   runners that never come up, the external fake provider): GitHub calls
//!   per minute by route (FakeGitHub's counters) and provider calls per
//!   minute by command (the provider's calls log) at steady state; several
//!   `hangard` builds compared, interleaved (`HANGAR_BENCH_HANGARDS`).
//! - `idle-rss`: resident memory of hangard, from `/proc/PID/smaps_rollup`
//!   (all, anonymous, file-backed), after start with an empty database,
//!   after first run + login, and idle with 1 repo + 1 pool once the
//!   blocking threads have timed out. `HANGAR_BIN_DIR` picks the binaries,
//!   so older builds can be measured in the same session.
//! - `scale` ([`scale`]): 10 repositories × 10 pools, 2,000 live
//!   instances; `scale --quick` for a short run.
//! - `scalesets` ([`scalesets`]): runner scale set `JobAvailable` → provider
//!   create, 200 single jobs and a 1,000-job burst; `--quick` for fewer.
//! - `postgres` ([`postgres`]): intake and CPU per delivery on SQLite vs
//!   PostgreSQL, interleaved, and webhook → create with one and three
//!   replicas on one PostgreSQL database; needs the server `cargo xtask
//!   bench postgres` starts; `--quick` for a short run.
//! - `schedule` ends with the burst-latency case ([`burst_latency`]);
//!   `HANGAR_BENCH_SCHEDULE=burst-latency` runs only that case.

#[path = "hangar-bench/burst_latency.rs"]
mod burst_latency;
#[path = "hangar-bench/load.rs"]
mod load;
#[path = "hangar-bench/postgres.rs"]
mod postgres;
#[path = "hangar-bench/scale.rs"]
mod scale;
#[path = "hangar-bench/scalesets.rs"]
mod scalesets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hangar_e2e::{Api, Daemon, bin, free_port, sign, write_config};
use serde_json::{Value, json};

const SECRET: &str = "bench-webhook-secret";

fn clk_tck() -> f64 {
    100.0
}

/// The name and user + system CPU seconds in a `/proc/…/stat` line.
fn parse_stat(stat: &str) -> anyhow::Result<(&str, f64)> {
    let (open, close) = stat.find('(').zip(stat.rfind(')')).context("stat format")?;
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let ticks = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok((&stat[open + 1..close], ticks / clk_tck()))
}

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(parse_stat(&stat)?.1)
}

/// User + system CPU seconds of each thread of a process so far, summed by
/// thread name (digits dropped, so `sqlx-sqlite-worker-3` and `-4` add up).
fn thread_cpu(pid: u32) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let mut by_name = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let (name, secs) = parse_stat(&stat)?;
        let name = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        *by_name.entry(name.to_owned()).or_insert(0.0) += secs;
    }
    Ok(by_name)
}

/// Peak resident set size in MiB.
fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("VmHWM")?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?;
    Ok(kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// A `queued` payload for `owner/name`, padded to about `size` bytes.
fn payload_template(root: &Path, owner: &str, name: &str, size: usize) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(
        root.join("fixtures/github-webhooks/workflow_job/queued.payload.json"),
    )?;
    let mut v: Value = serde_json::from_str(&text)?;
    v["workflow_job"]["labels"] = json!(["self-hosted", "linux"]);
    v["workflow_job"]["runner_id"] = Value::Null;
    v["workflow_job"]["runner_name"] = Value::Null;
    v["repository"]["name"] = json!(name);
    v["repository"]["full_name"] = json!(format!("{owner}/{name}"));
    v["repository"]["owner"]["login"] = json!(owner);
    let base = serde_json::to_vec(&v)?.len();
    if size > base + 16 {
        v["hangar_bench_padding"] = json!("x".repeat(size - base - 16));
    }
    Ok(v)
}

fn body_for(template: &Value, job_id: i64) -> Vec<u8> {
    let mut v = template.clone();
    v["workflow_job"]["id"] = json!(job_id);
    serde_json::to_vec(&v).expect("serialises")
}

struct Run {
    name: String,
    conns: usize,
    requests: usize,
    ok: usize,
    wall: Duration,
    latencies: Vec<Duration>,
    cpu: f64,
    rss: f64,
}

impl Run {
    fn row(&self) -> String {
        let mut l = self.latencies.clone();
        l.sort();
        format!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {:.4} | {:.1} |",
            self.name,
            self.conns,
            self.requests,
            self.ok,
            self.ok as f64 / self.wall.as_secs_f64(),
            ms(percentile(&l, 0.5)),
            ms(percentile(&l, 0.99)),
            self.cpu * 1000.0 / self.requests as f64,
            self.rss
        )
    }
}

/// POSTs one signed `workflow_job` delivery; returns the status once the
/// whole answer is read.
async fn post_webhook(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    sig: &str,
) -> anyhow::Result<u16> {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "workflow_job")
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    r.bytes().await?;
    Ok(status)
}

/// Sends `bodies` (pre-signed, in id order) over `conns` connections;
/// returns latencies, the number of answers with `expect` status and the
/// wall time.
async fn blast(
    url: &str,
    bodies: Vec<(Vec<u8>, String)>,
    conns: usize,
    expect: u16,
) -> anyhow::Result<(Vec<Duration>, usize, Duration)> {
    // Dealt out round-robin: GitHub numbers jobs from one sequence as they
    // are queued, so deliveries arriving together carry nearby ids.
    let mut chunks: Vec<Vec<(Vec<u8>, String)>> = vec![Vec::new(); conns];
    for (i, b) in bodies.into_iter().enumerate() {
        chunks[i % conns].push(b);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()?;
            let mut lat = Vec::with_capacity(chunk.len());
            let mut ok = 0usize;
            for (body, sig) in chunk {
                let t = Instant::now();
                let status = post_webhook(&client, &url, body, &sig).await?;
                lat.push(t.elapsed());
                if status == expect {
                    ok += 1;
                }
            }
            anyhow::Ok((lat, ok))
        }));
    }
    let mut all = Vec::new();
    let mut ok = 0;
    for t in tasks {
        let (l, o) = t.await??;
        all.extend(l);
        ok += o;
    }
    Ok((all, ok, started.elapsed()))
}

async fn start_daemon(dir: &Path, extra: &str) -> anyhow::Result<(Daemon, Api)> {
    let port = free_port();
    let config = write_config(dir, port, extra);
    let daemon = Daemon::start(dir, port, &config).await?;
    let api = Api::init(&daemon.url).await?;
    Ok((daemon, api))
}

async fn webhooks(root: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let extra = r#"
[[provider]]
name = "fake"
kind = "fake"
[provider.fake]
boot = "none"
"#;
    let (daemon, api) = start_daemon(dir.path(), extra).await?;
    api.post(
        "/api/v1/endpoints",
        json!({"name": "gh", "base_url": "http://127.0.0.1:9", "api_base_url": "http://127.0.0.1:9"}),
    )
    .await?;
    api.post(
        "/api/v1/credentials",
        json!({"name": "gh", "endpoint": "gh", "auth_type": "pat", "pat_oauth_token": "unused"}),
    )
    .await?;
    let repo = api.add_repo("bench", "app", SECRET).await?;
    // max_runners 0: intake is measured, nothing is created.
    api.add_pool(
        &repo,
        json!({"provider_name": "fake", "image": "i", "flavor": "f", "tags": ["self-hosted", "linux"], "max_runners": 0}),
    )
    .await?;
    let url = format!("{}/webhooks/{repo}", daemon.url);
    let template = payload_template(root, "bench", "app", 7 * 1024)?;
    let size = body_for(&template, 1).len();
    let pid = daemon.pid().context("pid")?;

    let mut rows = Vec::new();
    let mut next_id: i64 = 40_000_000_000;
    let mut accepted_total = 0usize;
    // HANGAR_BENCH_CONNS=16 runs one connection count only and
    // HANGAR_BENCH_CASE=accepted|rejected one kind of delivery (e.g. under
    // `perf record`).
    let only: Option<usize> = std::env::var("HANGAR_BENCH_CONNS")
        .ok()
        .map(|v| v.parse())
        .transpose()
        .context("HANGAR_BENCH_CONNS")?;
    let case = std::env::var("HANGAR_BENCH_CASE").unwrap_or_default();
    if !matches!(case.as_str(), "" | "accepted" | "rejected") {
        bail!("HANGAR_BENCH_CASE must be accepted or rejected, not {case:?}");
    }
    let mut breakdown = Vec::new();
    for (conns, n) in [(1usize, 4000usize), (16, 16000)] {
        if only.is_some_and(|c| c != conns) {
            continue;
        }
        for (name, secret, expect) in [
            ("accepted", SECRET, 202u16),
            ("rejected", "wrong-secret", 401),
        ] {
            if !case.is_empty() && case != name {
                continue;
            }
            let bodies: Vec<(Vec<u8>, String)> = (0..n)
                .map(|i| {
                    let b = body_for(&template, next_id + i as i64);
                    let s = sign(secret, &b);
                    (b, s)
                })
                .collect();
            next_id += n as i64;
            let cpu0 = cpu_seconds(pid)?;
            let threads0 = thread_cpu(pid)?;
            let (lat, ok, wall) = blast(&url, bodies, conns, expect).await?;
            let cpu = cpu_seconds(pid)? - cpu0;
            if expect == 202 {
                let threads = thread_cpu(pid)?
                    .into_iter()
                    .map(|(thread, t)| {
                        let d = t - threads0.get(&thread).copied().unwrap_or(0.0);
                        (thread, d * 1000.0 / n as f64)
                    })
                    .filter(|(_, d)| *d > 0.0)
                    .collect::<Vec<_>>();
                breakdown.push((conns, threads));
                accepted_total += ok;
            }
            rows.push(Run {
                name: format!("{name} ({expect})"),
                conns,
                requests: n,
                ok,
                wall,
                latencies: lat,
                cpu,
                rss: peak_rss_mib(pid)?,
            });
        }
    }
    // Durability: every 202 is in the database.
    let controller = api.get("/api/v1/controller").await?;
    let queued = controller["counts"]["queued_jobs"].as_u64().unwrap_or(0) as usize;
    println!("\n## Webhook intake (body {size} bytes, hangard release, SQLite synchronous=FULL)\n");
    println!(
        "| deliveries | connections | requests | expected status | req/s | p50 ms | p99 ms | CPU ms/request | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{}", r.row());
    }
    println!(
        "\nCPU ms per accepted request, by hangard thread (threads that ended are missing):\n"
    );
    for (conns, threads) in &breakdown {
        let parts: Vec<String> = threads
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.4}"))
            .collect();
        println!("- {conns} connection(s): {}", parts.join(", "));
    }
    println!(
        "\ndurability: {accepted_total} deliveries answered 202, {queued} queued jobs in the database afterwards"
    );
    if queued != accepted_total {
        bail!("{accepted_total} deliveries were acknowledged but {queued} jobs are stored");
    }
    Ok(())
}

fn now_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// Unix µs of every create call the fake provider logged so far (sorted).
///
/// The fake appends `<op> <instance> <unix µs>` per call but writes a line in
/// several pieces, so the lines of concurrent calls can interleave (seen in
/// practice: `create a 1796…839create\n b 1796…858`). Each call writes its
/// time stamp in one piece, though, and instance names have no run of 15
/// digits, so while no delete was logged every such run is one create.
fn creates(log: &Path) -> anyhow::Result<Vec<u128>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut stamps: Vec<u128> = Vec::new();
    if !text.contains("delete") && !text.contains("list") {
        let mut run = String::new();
        for ch in text.chars().chain(std::iter::once(' ')) {
            if ch.is_ascii_digit() {
                run.push(ch);
                continue;
            }
            if run.len() >= 15 {
                stamps.push(run.parse()?);
            }
            run.clear();
        }
    } else {
        for line in text.lines() {
            match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["create", _, ts] => stamps.push(
                    ts.parse()
                        .with_context(|| format!("calls log {}: line {line:?}", log.display()))?,
                ),
                ["delete", _, _] | ["list", _, _] => {}
                _ => bail!("calls log {}: garbled line {line:?}", log.display()),
            }
        }
    }
    stamps.sort_unstable();
    Ok(stamps)
}

/// Waits until the fake provider logged at least `n` creates.
async fn wait_creates(
    log: &Path,
    n: usize,
    poll: Duration,
    timeout: Duration,
) -> anyhow::Result<Vec<u128>> {
    let deadline = Instant::now() + timeout;
    loop {
        let c = creates(log)?;
        if c.len() >= n {
            return Ok(c);
        }
        if Instant::now() > deadline {
            bail!("only {} of {n} create calls after {timeout:?}", c.len());
        }
        tokio::time::sleep(poll).await;
    }
}

/// A fresh hangard with one pool on the in-process instant fake provider,
/// FakeGitHub as the API (JIT runner registration), and a signed `queued`
/// delivery template for its repository.
struct Sched {
    _dir: tempfile::TempDir,
    daemon: Daemon,
    _gh: hangar_testkit::fake_github::FakeGitHub,
    log: std::path::PathBuf,
    url: String,
    template: Value,
}

impl Sched {
    async fn start(root: &Path) -> anyhow::Result<Self> {
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
        // The 2,000-job burst needs a pool above the default cap of 1,000.
        let port = free_port();
        let config = write_config(dir.path(), port, &extra);
        let text = std::fs::read_to_string(&config)?;
        std::fs::write(
            &config,
            text.replacen("[server]\n", "[server]\nmax_runners_per_pool = 5000\n", 1),
        )?;
        let daemon = Daemon::start(dir.path(), port, &config).await?;
        let api = Api::init(&daemon.url).await?;
        let gh = hangar_testkit::fake_github::FakeGitHub::start().await;
        api.add_github(&gh.url()).await?;
        let repo = api.add_repo("bench", "sched", SECRET).await?;
        api.add_pool(
            &repo,
            json!({"provider_name": "fake", "image": "i", "flavor": "f", "tags": ["self-hosted", "linux"], "max_runners": 5000}),
        )
        .await?;
        Ok(Sched {
            _dir: dir,
            url: format!("{}/webhooks/{repo}", daemon.url),
            daemon,
            _gh: gh,
            log,
            template: payload_template(root, "bench", "sched", 0)?,
        })
    }

    /// `n` signed `queued` deliveries with distinct job ids.
    fn bodies(&self, first_id: i64, n: usize) -> Vec<(Vec<u8>, String)> {
        (0..n)
            .map(|i| {
                let b = body_for(&self.template, first_id + i as i64);
                let s = sign(SECRET, &b);
                (b, s)
            })
            .collect()
    }
}

fn ms_u(micros: u128) -> String {
    format!("{:.1}", micros as f64 / 1000.0)
}

/// Single jobs, one at a time: each `queued` delivery is sent and its create
/// call waited for before the next. Returns (sorted latencies, CPU ms/job).
async fn single_jobs(root: &Path, n: usize) -> anyhow::Result<(Vec<Duration>, f64)> {
    let env = Sched::start(root).await?;
    let pid = env.daemon.pid().context("pid")?;
    let client = reqwest::Client::new();
    let bodies = env.bodies(50_000_000_000, n);
    let mut lat = Vec::with_capacity(n);
    let cpu0 = cpu_seconds(pid)?;
    for (i, (body, sig)) in bodies.into_iter().enumerate() {
        let t0 = now_micros();
        let status = post_webhook(&client, &env.url, body, &sig).await?;
        if status != 202 {
            bail!("single job {i}: webhook answered {status}");
        }
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
    let cpu = cpu_seconds(pid)? - cpu0;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = creates(&env.log)?.len();
    if total != n {
        println!("note: single jobs: {total} create calls for {n} jobs");
    }
    lat.sort();
    Ok((lat, cpu * 1000.0 / n as f64))
}

struct Burst {
    jobs: usize,
    after_last_hook: u128,
    from_first_hook: u128,
    cpu_ms_per_job: f64,
}

/// `n` `queued` deliveries at once (16 connections) into a fresh daemon;
/// waits for `n` create calls.
async fn burst(root: &Path, n: usize) -> anyhow::Result<Burst> {
    let env = Sched::start(root).await?;
    let pid = env.daemon.pid().context("pid")?;
    let bodies = env.bodies(60_000_000_000, n);
    let cpu0 = cpu_seconds(pid)?;
    let first = now_micros();
    let (_, ok, _) = blast(&env.url, bodies, 16.min(n), 202).await?;
    let last_hook = now_micros();
    if ok != n {
        bail!("burst of {n}: only {ok} webhooks answered 202");
    }
    let c = wait_creates(
        &env.log,
        n,
        Duration::from_millis(10),
        Duration::from_secs(300),
    )
    .await?;
    let last_create = *c.last().context("a create")?;
    // Let the tail of the work (state moves after each create) finish
    // before reading CPU.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = cpu_seconds(pid)? - cpu0;
    let total = creates(&env.log)?.len();
    if total != n {
        println!("note: burst of {n}: {total} create calls for {n} jobs");
    }
    Ok(Burst {
        jobs: n,
        after_last_hook: last_create.saturating_sub(last_hook),
        from_first_hook: last_create.saturating_sub(first),
        cpu_ms_per_job: cpu * 1000.0 / n as f64,
    })
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

async fn schedule(root: &Path) -> anyhow::Result<()> {
    const SINGLE_P99_MS: f64 = 100.0;
    const BURST_200_MS: f64 = 1000.0;
    const FLAT: f64 = 1.5;

    if std::env::var("HANGAR_BENCH_SCHEDULE").as_deref() == Ok("burst-latency") {
        return burst_latency::run(root).await;
    }
    let singles = 200;
    let (lat, single_cpu) = single_jobs(root, singles).await?;
    let mut bursts = Vec::new();
    for n in [50usize, 200, 2000] {
        bursts.push(burst(root, n).await?);
    }

    println!(
        "\n## Queued webhook → provider create call (FakeGitHub API, in-process instant fake provider, hangard release, a fresh daemon per scenario)\n"
    );
    println!(
        "| scenario | jobs | p50 ms | p99 ms | max ms | last webhook → last create ms | first webhook → last create ms | CPU ms/job | target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let p99 = percentile(&lat, 0.99);
    println!(
        "| single job, sequential | {singles} | {} | {} | {} | – | – | {single_cpu:.3} | p99 ≤ {SINGLE_P99_MS:.0} ms (garm: 9 s at zero backoff, 39 s default) |",
        ms(percentile(&lat, 0.5)),
        ms(p99),
        ms(*lat.last().context("latencies")?),
    );
    for b in &bursts {
        let target = match b.jobs {
            200 => {
                format!("≤ {BURST_200_MS:.0} ms after the last webhook (garm: 15 s); CPU/job flat")
            }
            _ => "CPU/job flat from 50 to 2,000".to_owned(),
        };
        println!(
            "| burst | {} | – | – | – | {} | {} | {:.3} | {target} |",
            b.jobs,
            ms_u(b.after_last_hook),
            ms_u(b.from_first_hook),
            b.cpu_ms_per_job,
        );
    }

    let p99_ms = p99.as_secs_f64() * 1000.0;
    println!(
        "\nsingle job p99 {p99_ms:.1} ms vs ≤ {SINGLE_P99_MS:.0} ms: {}",
        verdict(p99_ms <= SINGLE_P99_MS)
    );
    if let Some(b) = bursts.iter().find(|b| b.jobs == 200) {
        let after = b.after_last_hook as f64 / 1000.0;
        println!(
            "200-job burst done {after:.1} ms after the last webhook vs ≤ {BURST_200_MS:.0} ms: {}",
            verdict(after <= BURST_200_MS)
        );
    }
    let cpus: Vec<f64> = bursts.iter().map(|b| b.cpu_ms_per_job).collect();
    let lo = cpus.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = cpus.iter().copied().fold(0.0, f64::max);
    let ratio = if lo > 0.0 { hi / lo } else { f64::INFINITY };
    println!(
        "CPU ms/job across bursts of 50/200/2,000: {} (max/min {ratio:.2}×; flat taken as ≤ {FLAT}×): {}",
        cpus.iter()
            .map(|c| format!("{c:.3}"))
            .collect::<Vec<_>>()
            .join(" / "),
        verdict(ratio <= FLAT)
    );
    burst_latency::run(root).await
}

/// GitHub routes FakeGitHub counts, in table order.
const ROUTES: &[&str] = &[
    "generate-jitconfig",
    "delete-runner",
    "list-runners",
    "get-job",
    "list-runs",
    "run-jobs",
    "hooks",
    "hook-deliveries",
    "redeliver",
    "runner-groups",
    "downloads",
];

/// One run of the queue bench: calls per minute at steady state.
struct QueueRun {
    label: String,
    github: Vec<(String, f64)>,
    provider: Vec<(String, f64)>,
}

/// Provider calls per command in `calls.log` between two instants (µs).
fn provider_calls(log: &Path, from: u128, to: u128) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(cmd), Some(_), Some(at)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let at: u128 = at.parse().unwrap_or(0);
        if (from..to).contains(&at) {
            *out.entry(cmd.to_owned()).or_default() += 1;
        }
    }
    Ok(out)
}

/// 2,000 jobs queued over 100 pools that can never serve them all
/// (`max_runners = 1`, runners that never come up), on `hangard`: GitHub
/// calls per route and provider calls per command per minute at steady
/// state.
async fn queue_once(
    root: &Path,
    label: &str,
    hangard: &Path,
    measure: Duration,
) -> anyhow::Result<QueueRun> {
    const POOLS: usize = 100;
    const JOBS: usize = 2_000;
    let _ = root;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("provider");
    std::fs::create_dir_all(&state)?;
    let provider_cfg = dir.path().join("provider.toml");
    std::fs::write(
        &provider_cfg,
        format!("state_dir = \"{}\"\nboot = \"none\"\n", state.display()),
    )?;
    // Only keys both builds know; the same file for both. The external
    // fake provider logs every call of both builds; the in-process one
    // (`HANGAR_BENCH_PROVIDER=fake`) logs its listings only in builds that
    // have `list_instances_in`.
    let in_process = std::env::var("HANGAR_BENCH_PROVIDER").as_deref() == Ok("fake");
    let provider = if in_process {
        format!(
            "[[provider]]\nname = \"ext\"\nkind = \"fake\"\n[provider.fake]\nboot = \"none\"\ncalls_log = \"{}\"\n",
            state.join("calls.log").display()
        )
    } else {
        format!(
            "[[provider]]\nname = \"ext\"\nkind = \"external\"\n[provider.external]\nexecutable = \"{}\"\nconfig_file = \"{}\"\n",
            bin("hangar-fake-provider").display(),
            provider_cfg.display()
        )
    };
    let extra = format!(
        r#"
[scheduler]
job_recheck_after_secs = 30

[github]
budget_per_hour = 100000000
budget_burst = 100000

{provider}
"#
    );
    let create_cmd = if in_process {
        "create"
    } else {
        "CreateInstance"
    };
    let port = free_port();
    let config = write_config(dir.path(), port, &extra);
    let daemon = Daemon::start_bin(hangard, dir.path(), port, &config, &[]).await?;
    let api = Api::init(&daemon.url).await?;
    let gh = hangar_testkit::fake_github::FakeGitHub::start().await;
    api.add_github(&gh.url()).await?;
    let repo = api.add_repo("bench", "queue", SECRET).await?;
    for i in 0..POOLS {
        api.add_pool(
            &repo,
            json!({"provider_name": "ext", "image": "i", "flavor": "f",
                   "tags": ["self-hosted", format!("q{i}")], "max_runners": 1,
                   "runner_bootstrap_timeout": 600}),
        )
        .await?;
    }
    gh.set_webhook_target(format!("{}/webhooks/{repo}", daemon.url), SECRET);
    let mut tasks = Vec::new();
    for w in 0..16 {
        let gh = gh.clone();
        tasks.push(tokio::spawn(async move {
            for j in (w..JOBS).step_by(16) {
                let label = format!("q{}", j % POOLS);
                gh.queue_job("bench/queue", &["self-hosted", &label]).await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let log = state.join("calls.log");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let creates = provider_calls(&log, 0, u128::MAX)?
            .get(create_cmd)
            .copied()
            .unwrap_or(0);
        if creates as usize >= POOLS {
            break;
        }
        if Instant::now() > deadline {
            bail!("{label}: only {creates} of {POOLS} creates after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past the first re-checks and sweeps: steady state.
    tokio::time::sleep(Duration::from_secs(45)).await;
    let before: Vec<u64> = ROUTES.iter().map(|r| gh.calls(r)).collect();
    let t0 = now_micros();
    tokio::time::sleep(measure).await;
    let t1 = now_micros();
    let per_min = |n: u64| n as f64 * 60.0 / measure.as_secs_f64();
    let github = ROUTES
        .iter()
        .zip(before)
        .map(|(r, b)| (r.to_string(), per_min(gh.calls(r) - b)))
        .collect();
    let provider = provider_calls(&log, t0, t1)?
        .into_iter()
        .map(|(c, n)| (c, per_min(n)))
        .collect();
    let queued = api
        .jobs()
        .await?
        .iter()
        .filter(|j| j["status"] == "queued")
        .count();
    if queued < JOBS - POOLS {
        println!("note: {label}: only {queued} jobs still queued");
    }
    drop(daemon);
    Ok(QueueRun {
        label: label.to_owned(),
        github,
        provider,
    })
}

/// `HANGAR_BENCH_HANGARDS="before=/path/hangard,after=/path/hangard"`
/// compares builds, run interleaved `HANGAR_BENCH_ROUNDS` times (default:
/// this build once); `HANGAR_BENCH_MEASURE_SECS` (default 120) is the window.
async fn queue(root: &Path) -> anyhow::Result<()> {
    let builds: Vec<(String, PathBuf)> = match std::env::var("HANGAR_BENCH_HANGARDS") {
        Ok(v) => v
            .split(',')
            .map(|kv| {
                let (l, p) = kv.split_once('=').context("label=path")?;
                Ok((l.to_owned(), PathBuf::from(p)))
            })
            .collect::<anyhow::Result<_>>()?,
        Err(_) => vec![("this build".into(), bin("hangard"))],
    };
    let rounds: usize = std::env::var("HANGAR_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let measure = Duration::from_secs(
        std::env::var("HANGAR_BENCH_MEASURE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120),
    );
    let mut runs = Vec::new();
    for round in 0..rounds {
        for (label, path) in &builds {
            let label = if rounds > 1 {
                format!("{label} #{}", round + 1)
            } else {
                label.clone()
            };
            runs.push(queue_once(root, &label, path, measure).await?);
        }
    }
    println!(
        "\n### 2,000 queued jobs over 100 pools (max_runners 1, runners never come up), calls per minute over {} s at steady state\n",
        measure.as_secs()
    );
    let header: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
    println!("| GitHub route | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(runs.len()));
    for (i, route) in ROUTES.iter().enumerate() {
        let cells: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.1}", r.github[i].1))
            .collect();
        if cells.iter().any(|c| c != "0.0") {
            println!("| {route} | {} |", cells.join(" | "));
        }
    }
    let total: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.1}", r.github.iter().map(|(_, n)| n).sum::<f64>()))
        .collect();
    println!("| **all** | {} |", total.join(" | "));
    let mut commands: Vec<String> = runs
        .iter()
        .flat_map(|r| r.provider.iter().map(|(c, _)| c.clone()))
        .collect();
    commands.sort();
    commands.dedup();
    println!("\n| provider command | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(runs.len()));
    for c in &commands {
        let cells: Vec<String> = runs
            .iter()
            .map(|r| {
                let n = r
                    .provider
                    .iter()
                    .find(|(k, _)| k == c)
                    .map_or(0.0, |(_, n)| *n);
                format!("{n:.1}")
            })
            .collect();
        println!("| {c} | {} |", cells.join(" | "));
    }
    Ok(())
}

/// Resident memory of a process in KiB from `/proc/PID/smaps_rollup`:
/// (all, anonymous, file-backed incl. shared memory).
fn smaps_rollup_kib(pid: u32) -> anyhow::Result<(u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find(|l| l.split(':').next() == Some(name))
            .with_context(|| format!("{name} in smaps_rollup"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .with_context(|| format!("{name} value"))?
            .parse()?)
    };
    let rss = field("Rss")?;
    let anon = field("Anonymous")?;
    Ok((rss, anon, rss.saturating_sub(anon)))
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

async fn idle_rss() -> anyhow::Result<()> {
    // tokio lets an idle blocking thread go after 10 s; idle means after.
    const SETTLE: Duration = Duration::from_secs(12);
    let dir = tempfile::tempdir()?;
    let extra = r#"
[[provider]]
name = "fake"
kind = "fake"
[provider.fake]
boot = "none"
"#;
    let port = free_port();
    let config = write_config(dir.path(), port, extra);
    let daemon = Daemon::start(dir.path(), port, &config).await?;
    let pid = daemon.pid().context("pid")?;
    let mut rows = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    rows.push((
        "started, empty database",
        smaps_rollup_kib(pid)?,
        thread_count(pid),
    ));
    let api = Api::init(&daemon.url).await?;
    rows.push((
        "first run + login",
        smaps_rollup_kib(pid)?,
        thread_count(pid),
    ));
    api.post(
        "/api/v1/endpoints",
        json!({"name": "gh", "base_url": "http://127.0.0.1:9", "api_base_url": "http://127.0.0.1:9"}),
    )
    .await?;
    api.post(
        "/api/v1/credentials",
        json!({"name": "gh", "endpoint": "gh", "auth_type": "pat", "pat_oauth_token": "unused"}),
    )
    .await?;
    let repo = api.add_repo("bench", "app", SECRET).await?;
    api.add_pool(
        &repo,
        json!({"provider_name": "fake", "image": "i", "flavor": "f", "tags": ["self-hosted", "linux"], "max_runners": 2}),
    )
    .await?;
    rows.push((
        "+ 1 repo, 1 pool",
        smaps_rollup_kib(pid)?,
        thread_count(pid),
    ));
    tokio::time::sleep(SETTLE).await;
    rows.push(("idle 12 s later", smaps_rollup_kib(pid)?, thread_count(pid)));
    // A second login after idling: hashing memory must not come back to stay.
    Api::login(&daemon.url).await?;
    tokio::time::sleep(SETTLE).await;
    rows.push((
        "second login, idle 12 s later",
        smaps_rollup_kib(pid)?,
        thread_count(pid),
    ));

    let bin = hangar_e2e::bin("hangard");
    let size = std::fs::metadata(&bin).map_or(0, |m| m.len());
    println!(
        "\n## Idle RSS ({}, {:.1} MiB on disk; smaps_rollup)\n",
        bin.display(),
        size as f64 / (1 << 20) as f64
    );
    println!("| moment | RSS MiB | anonymous MiB | file-backed MiB | threads |");
    println!("|---|---|---|---|---|");
    let mib = |kib: u64| kib as f64 / 1024.0;
    for (moment, (rss, anon, file), threads) in &rows {
        println!(
            "| {moment} | {:.1} | {:.1} | {:.1} | {threads} |",
            mib(*rss),
            mib(*anon),
            mib(*file)
        );
    }
    const GOAL_MIB: f64 = 25.0;
    let idle = rows[3].1.0 as f64 / 1024.0;
    println!(
        "\nidle RSS with 1 repo + 1 pool after the first login {idle:.1} MiB vs ≤ {GOAL_MIB:.0} MiB: {}",
        verdict(idle <= GOAL_MIB)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo xtask bench` sets HANGAR_BIN_DIR (release binaries) and
    // HANGAR_E2E_LOG (quiet daemon logs) for the harness.
    let root = std::env::current_dir()?;
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match which.as_str() {
        "webhooks" => webhooks(&root).await,
        "schedule" => schedule(&root).await,
        "queue" => queue(&root).await,
        "idle-rss" => idle_rss().await,
        "scale" => scale::run(std::env::args().skip(2).any(|a| a == "--quick")).await,
        "scalesets" => {
            scalesets::run(&root, std::env::args().skip(2).any(|a| a == "--quick")).await
        }
        "postgres" => postgres::run(&root, std::env::args().skip(2).any(|a| a == "--quick")).await,
        "all" => {
            idle_rss().await?;
            webhooks(&root).await?;
            schedule(&root).await
        }
        other => bail!("unknown benchmark {other:?}"),
    }
}
