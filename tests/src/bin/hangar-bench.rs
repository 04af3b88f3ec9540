//! `hangar-bench`: the benchmarks behind `cargo xtask bench`. Runs the
//! release `hangard` on loopback and prints tables.
//!
//! - `webhooks`: a 7 KB `queued` delivery with a distinct job id per
//!   request, at 1 and 16 connections: accepted req/s, p50/p99 latency, CPU
//!   time per request and peak RSS of hangard; the same for deliveries with
//!   a bad signature. Every 202 is checked to be durable (counted in the
//!   database afterwards).
//! - `schedule`: time from a `queued` webhook to the provider's create call
//!   (FakeGitHub + hangard's in-process instant fake provider), for single
//!   jobs and for bursts, plus scheduling CPU per job.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hangar_e2e::{Api, Daemon, free_port, sign, write_config};
use serde_json::{Value, json};

const SECRET: &str = "bench-webhook-secret";

fn clk_tck() -> f64 {
    100.0
}

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("stat format")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f[11].parse()?;
    let stime: f64 = f[12].parse()?;
    Ok((utime + stime) / clk_tck())
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

/// Sends `bodies` (pre-signed) over `conns` connections; returns latencies,
/// the number of answers with `expect` status and the wall time.
async fn blast(
    url: &str,
    bodies: Vec<(Vec<u8>, String)>,
    conns: usize,
    expect: u16,
) -> anyhow::Result<(Vec<Duration>, usize, Duration)> {
    let per = bodies.len().div_ceil(conns);
    let mut chunks: Vec<Vec<(Vec<u8>, String)>> = Vec::new();
    let mut it = bodies.into_iter();
    for _ in 0..conns {
        chunks.push(it.by_ref().take(per).collect());
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
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-github-event", "workflow_job")
                    .header("x-hub-signature-256", sig)
                    .body(body)
                    .send()
                    .await?;
                let status = r.status().as_u16();
                let _ = r.bytes().await?;
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
    for (conns, n) in [(1usize, 4000usize), (16, 16000)] {
        let bodies: Vec<(Vec<u8>, String)> = (0..n)
            .map(|i| {
                let b = body_for(&template, next_id + i as i64);
                let s = sign(SECRET, &b);
                (b, s)
            })
            .collect();
        next_id += n as i64;
        // Warm up the connection(s) and caches.
        let cpu0 = cpu_seconds(pid)?;
        let (lat, ok, wall) = blast(&url, bodies, conns, 202).await?;
        let cpu = cpu_seconds(pid)? - cpu0;
        accepted_total += ok;
        rows.push(Run {
            name: "accepted (202)".into(),
            conns,
            requests: n,
            ok,
            wall,
            latencies: lat,
            cpu,
            rss: peak_rss_mib(pid)?,
        });
        let bad: Vec<(Vec<u8>, String)> = (0..n)
            .map(|i| {
                let b = body_for(&template, next_id + i as i64);
                let s = sign("wrong-secret", &b);
                (b, s)
            })
            .collect();
        next_id += n as i64;
        let cpu0 = cpu_seconds(pid)?;
        let (lat, ok, wall) = blast(&url, bad, conns, 401).await?;
        let cpu = cpu_seconds(pid)? - cpu0;
        rows.push(Run {
            name: "rejected (401)".into(),
            conns,
            requests: n,
            ok,
            wall,
            latencies: lat,
            cpu,
            rss: peak_rss_mib(pid)?,
        });
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
        "\ndurability: {accepted_total} deliveries answered 202, {queued} queued jobs in the database afterwards"
    );
    if queued != accepted_total {
        bail!("{accepted_total} deliveries were acknowledged but {queued} jobs are stored");
    }
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
        "all" => webhooks(&root).await,
        other => bail!("unknown benchmark {other:?}"),
    }
}
