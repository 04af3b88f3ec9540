//! `postgres`: hangard on PostgreSQL against hangard on SQLite, on the same
//! machine, and several replicas on one PostgreSQL database (issue #17).
//! `cargo xtask bench postgres` starts a throwaway PostgreSQL server set as
//! a production one would be (fsync on) and hands it over in
//! `HANGAR_BENCH_POSTGRES_URL`, `_PID` (the postmaster), `HANGAR_BENCH_PSQL`
//! and `HANGAR_BENCH_POSTGRES_SETTINGS`.
//!
//! - Intake: the `webhooks` bench's 7 KB `queued` delivery, distinct job
//!   ids, at 1 and 16 connections, into one hangard on SQLite
//!   (`synchronous = "full"`) and one on PostgreSQL, interleaved (SQLite,
//!   PostgreSQL, SQLite, …) so a change in the machine's other load falls on
//!   both: accepted/s, latency, hangard's CPU and the PostgreSQL server's
//!   CPU (postmaster and every backend, from `/proc`) per delivery, and the
//!   PostgreSQL/SQLite ratios of the medians. Every 202 is checked to be
//!   stored.
//! - Time to create: `queued` webhook → the external fake provider's
//!   `CreateInstance`, single jobs one at a time (as `schedule`'s single-job
//!   case), over six pools, with one hangard on SQLite, one on PostgreSQL
//!   and three replicas on one PostgreSQL database (same passphrase and JWT
//!   secret, one shared provider state folder, webhooks round-robin over
//!   the replicas, so most land on a replica that does not hold the job's
//!   pool and reach the holder through `LISTEN/NOTIFY`).
//!
//! `--quick` runs fewer deliveries, rounds and jobs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hangar_e2e::{Api, Daemon, bin, free_port, sign, write_config};
use serde_json::{Value, json};

use super::burst_latency::create_stamps;
use super::load::{Window, with_children};
use super::{SECRET, blast, body_for, cpu_seconds, ms, payload_template, percentile};

/// The JWT secret every replica shares (any replica accepts a token).
const JWT_SECRET: &str = "bench-jwt-secret-shared-by-every-replica";
/// Pools of the time-to-create case, so leases spread over replicas.
const POOLS: usize = 6;

/// The PostgreSQL server `cargo xtask bench postgres` started.
struct Server {
    url: String,
    postmaster: u32,
    psql: PathBuf,
    settings: String,
}

impl Server {
    fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| {
            std::env::var(name).with_context(|| {
                format!("{name} is not set: run this bench with `cargo xtask bench postgres`")
            })
        };
        Ok(Self {
            url: var("HANGAR_BENCH_POSTGRES_URL")?,
            postmaster: var("HANGAR_BENCH_POSTGRES_PID")?
                .parse()
                .context("HANGAR_BENCH_POSTGRES_PID")?,
            psql: PathBuf::from(var("HANGAR_BENCH_PSQL")?),
            settings: var("HANGAR_BENCH_POSTGRES_SETTINGS")?,
        })
    }

    /// Runs one SQL command on the server's `postgres` database; its
    /// unaligned output.
    fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let out = std::process::Command::new(&self.psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(&self.url)
            .args(["-c", sql])
            .output()
            .with_context(|| format!("run {}", self.psql.display()))?;
        if !out.status.success() {
            bail!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A new, empty database; its URL.
    fn fresh_database(&self, name: &str) -> anyhow::Result<String> {
        self.psql(&format!("CREATE DATABASE {name}"))?;
        let (base, _) = self.url.rsplit_once('/').context("database URL")?;
        Ok(format!("{base}/{name}"))
    }

    /// One SQL query's unaligned output on database `url`.
    fn query(&self, url: &str, sql: &str) -> anyhow::Result<String> {
        let out = std::process::Command::new(&self.psql)
            .args(["-X", "-q", "-A", "-t", "-F", " ", "-d", url, "-c", sql])
            .output()?;
        if !out.status.success() {
            bail!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// User + system CPU seconds of the whole server so far: the
    /// postmaster with the backends it reaped, and every live child
    /// (backends, WAL writer, checkpointer, autovacuum …).
    fn cpu(&self) -> f64 {
        let mut total = with_children(self.postmaster);
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return total;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = stat
                .rfind(')')
                .and_then(|c| stat[c + 2..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(self.postmaster) {
                total += with_children(pid);
            }
        }
        total
    }
}

/// Which store a hangard runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// Starts hangard in `dir` with `extra` config; on PostgreSQL when `db`
/// is given (`HANGAR_DATABASE_URL`, so the config is the same otherwise).
async fn start(dir: &Path, extra: &str, db: Option<&str>) -> anyhow::Result<Daemon> {
    std::fs::create_dir_all(dir)?;
    let port = free_port();
    let config = write_config(dir, port, extra);
    let env: Vec<(&str, &str)> = db.map(|u| ("HANGAR_DATABASE_URL", u)).into_iter().collect();
    Daemon::start_bin(&bin("hangard"), dir, port, &config, &env).await
}

/// One hangard taking webhooks for a pool that makes nothing.
struct Intake {
    backend: Backend,
    _dir: tempfile::TempDir,
    daemon: Daemon,
    api: Api,
    url: String,
    accepted: usize,
}

async fn intake_daemon(backend: Backend, db: Option<&str>) -> anyhow::Result<Intake> {
    let dir = tempfile::tempdir()?;
    let extra = format!(
        "[auth]\njwt_secret = \"{JWT_SECRET}\"\n\n[[provider]]\nname = \"fake\"\nkind = \"fake\"\n[provider.fake]\nboot = \"none\"\n"
    );
    let daemon = start(dir.path(), &extra, db).await?;
    let api = Api::init(&daemon.url).await?;
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
    Ok(Intake {
        backend,
        _dir: dir,
        url: format!("{}/webhooks/{repo}", daemon.url),
        daemon,
        api,
        accepted: 0,
    })
}

/// One blast's figures.
struct IntakeRun {
    round: usize,
    backend: Backend,
    conns: usize,
    requests: usize,
    ok: usize,
    wall: Duration,
    p50: Duration,
    p99: Duration,
    /// hangard's CPU ms per delivery.
    hangard: f64,
    /// The PostgreSQL server's CPU ms per delivery (for SQLite runs: what
    /// the idle server did meanwhile).
    server: f64,
    /// The machine during the blast: busy CPUs, and what was neither
    /// hangard, the PostgreSQL server nor this bench.
    busy: f64,
    other: f64,
}

impl IntakeRun {
    fn per_sec(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

async fn intake(
    root: &Path,
    pg: &Server,
    quick: bool,
) -> anyhow::Result<(Vec<IntakeRun>, usize, usize)> {
    let rounds = if quick { 2 } else { 5 };
    let cases: &[(usize, usize)] = if quick {
        &[(1, 500), (16, 2000)]
    } else {
        &[(1, 4000), (16, 16000)]
    };
    let db = pg.fresh_database("bench_intake")?;
    let mut sides = [
        intake_daemon(Backend::Sqlite, None).await?,
        intake_daemon(Backend::Postgres, Some(&db)).await?,
    ];
    let template = payload_template(root, "bench", "app", 7 * 1024)?;
    let size = body_for(&template, 1).len();
    // Quiet first: the pools' first reconciles and the sweeps after start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut next_id: i64 = 80_000_000_000;
    let mut runs = Vec::new();
    for &(conns, n) in cases {
        for round in 1..=rounds {
            for side in sides.iter_mut() {
                let bodies: Vec<(Vec<u8>, String)> = (0..n)
                    .map(|i| {
                        let b = body_for(&template, next_id + i as i64);
                        let s = sign(SECRET, &b);
                        (b, s)
                    })
                    .collect();
                next_id += n as i64;
                let pid = side.daemon.pid().context("pid")?;
                let window = Window::start(pid)?;
                let cpu0 = cpu_seconds(pid)?;
                let server0 = pg.cpu();
                let (mut lat, ok, wall) = blast(&side.url, bodies, conns, 202).await?;
                let hangard = cpu_seconds(pid)? - cpu0;
                let server = pg.cpu() - server0;
                let load = window.end(pid)?;
                side.accepted += ok;
                lat.sort();
                runs.push(IntakeRun {
                    round,
                    backend: side.backend,
                    conns,
                    requests: n,
                    ok,
                    wall,
                    p50: percentile(&lat, 0.5),
                    p99: percentile(&lat, 0.99),
                    hangard: hangard * 1000.0 / n as f64,
                    server: server * 1000.0 / n as f64,
                    busy: load.all,
                    other: (load.other - server / load.secs).max(0.0),
                });
            }
        }
    }
    // Durability: every 202 is in each database.
    for side in &sides {
        let controller = side.api.get("/api/v1/controller").await?;
        let queued = controller["counts"]["queued_jobs"].as_u64().unwrap_or(0) as usize;
        println!(
            "durability, {}: {} deliveries answered 202, {queued} queued jobs stored",
            side.backend.name(),
            side.accepted
        );
        if queued != side.accepted {
            bail!(
                "{}: {} deliveries were acknowledged but {queued} jobs are stored",
                side.backend.name(),
                side.accepted
            );
        }
    }
    drop(sides);
    pg.psql("DROP DATABASE bench_intake WITH (FORCE)")?;
    Ok((runs, size, rounds))
}

fn print_intake(runs: &[IntakeRun], size: usize, rounds: usize, pg: &Server) {
    println!(
        "\n## Webhook intake, SQLite vs PostgreSQL (body {size} bytes, hangard release, interleaved runs, a 202 is durable on both)\n"
    );
    println!(
        "| connections | round | store | deliveries | accepted | accepted/s | p50 ms | p99 ms | hangard CPU ms/delivery | PostgreSQL server CPU ms/delivery | CPU ms/delivery, both | CPUs busy (all) | other load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {:.4} | {:.4} | {:.4} | {:.2} | {:.2} |",
            r.conns,
            r.round,
            r.backend.name(),
            r.requests,
            r.ok,
            r.per_sec(),
            ms(r.p50),
            ms(r.p99),
            r.hangard,
            r.server,
            r.hangard + r.server,
            r.busy,
            r.other,
        );
    }
    println!("\nMedians over {rounds} interleaved rounds, and PostgreSQL / SQLite:\n");
    println!(
        "| connections | store | accepted/s | p50 ms | p99 ms | hangard CPU ms/delivery | PostgreSQL server CPU ms/delivery | CPU ms/delivery, both |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut conns: Vec<usize> = runs.iter().map(|r| r.conns).collect();
    conns.dedup();
    for c in conns {
        let pick = |b: Backend, f: &dyn Fn(&IntakeRun) -> f64| {
            median(
                runs.iter()
                    .filter(|r| r.conns == c && r.backend == b)
                    .map(f)
                    .collect(),
            )
        };
        let figures = |b: Backend| {
            [
                pick(b, &|r| r.per_sec()),
                pick(b, &|r| r.p50.as_secs_f64() * 1000.0),
                pick(b, &|r| r.p99.as_secs_f64() * 1000.0),
                pick(b, &|r| r.hangard),
                // The server's CPU during SQLite runs is idle noise, not
                // part of SQLite's cost.
                if b == Backend::Sqlite {
                    0.0
                } else {
                    pick(b, &|r| r.server)
                },
                pick(b, &|r| {
                    r.hangard + if b == Backend::Sqlite { 0.0 } else { r.server }
                }),
            ]
        };
        let sq = figures(Backend::Sqlite);
        let pq = figures(Backend::Postgres);
        let row = |name: &str, f: &[f64; 6]| {
            println!(
                "| {c} | {name} | {:.0} | {:.3} | {:.3} | {:.4} | {} | {:.4} |",
                f[0],
                f[1],
                f[2],
                f[3],
                if name == "SQLite" {
                    "–".to_owned()
                } else {
                    format!("{:.4}", f[4])
                },
                f[5]
            );
        };
        row("SQLite", &sq);
        row("PostgreSQL", &pq);
        let ratio = |i: usize| {
            if sq[i] > 0.0 {
                format!("{:.2}×", pq[i] / sq[i])
            } else {
                "–".to_owned()
            }
        };
        println!(
            "| {c} | **PostgreSQL / SQLite** | {} | {} | {} | {} | – | {} |",
            ratio(0),
            ratio(1),
            ratio(2),
            ratio(3),
            ratio(5)
        );
    }
    println!(
        "\nSQLite: `synchronous = \"full\"` (fsync per commit, commits batched under load). PostgreSQL {}: `{}`; the server on this machine, over loopback TCP. \"other load\" is CPUs busy with neither hangard, the PostgreSQL server nor this bench (its load generator).",
        pg.query(&pg.url, "SHOW server_version")
            .unwrap_or_else(|_| "?".into()),
        pg.settings
    );
}

/// One time-to-create scenario's figures.
struct CreateRun {
    label: String,
    jobs: usize,
    lat: Vec<Duration>,
    hangard: f64,
    server: f64,
    spread: String,
    other: f64,
}

/// Waits until every pool has a live lease and the holders hold a fair
/// share each (ceil(pools / replicas)); the spread as "a/b/c".
async fn wait_spread(pg: &Server, db: &str, replicas: usize) -> anyhow::Result<String> {
    let share = POOLS.div_ceil(replicas);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = pg.query(
            db,
            "SELECT count(*) FROM pool_leases WHERE holder IS NOT NULL \
             AND expires_at > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) \
             GROUP BY holder ORDER BY 1 DESC",
        )?;
        let counts: Vec<usize> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        let held: usize = counts.iter().sum();
        if held == POOLS && counts.len() == replicas.min(POOLS) && counts[0] <= share {
            return Ok(counts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("/"));
        }
        if Instant::now() > deadline {
            bail!("leases did not spread over {replicas} replicas in 60 s: {counts:?} of {POOLS}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Single `queued` jobs one at a time, round-robin over `replicas`
/// hangards (on SQLite when `db` is None) and over the pools: webhook sent
/// → the fake provider's `CreateInstance` logged.
async fn time_to_create(
    root: &Path,
    pg: &Server,
    label: &str,
    db_name: Option<&str>,
    replicas: usize,
    jobs: usize,
) -> anyhow::Result<CreateRun> {
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
[auth]
jwt_secret = "{JWT_SECRET}"

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
    let db = db_name.map(|n| pg.fresh_database(n)).transpose()?;
    let mut daemons = vec![start(&dir.path().join("r0"), &extra, db.as_deref()).await?];
    let api = Api::init(&daemons[0].url).await?;
    let gh = hangar_testkit::fake_github::FakeGitHub::start().await;
    api.add_github(&gh.url()).await?;
    let repo = api.add_repo("bench", "create", SECRET).await?;
    for p in 0..POOLS {
        api.add_pool(
            &repo,
            json!({"provider_name": "ext", "image": "i", "flavor": "f",
                   "tags": ["self-hosted", format!("p{p}")], "max_runners": 1000,
                   "runner_bootstrap_timeout": 600}),
        )
        .await?;
    }
    for r in 1..replicas {
        daemons.push(start(&dir.path().join(format!("r{r}")), &extra, db.as_deref()).await?);
    }
    let spread = match &db {
        Some(db) => wait_spread(pg, db, replicas).await?,
        None => {
            // SQLite: one replica holds every pool; the pools' first
            // reconciles and the sweep after start pass first.
            tokio::time::sleep(Duration::from_secs(2)).await;
            POOLS.to_string()
        }
    };
    let urls: Vec<String> = daemons
        .iter()
        .map(|d| format!("{}/webhooks/{repo}", d.url))
        .collect();
    let pids: Vec<u32> = daemons.iter().filter_map(Daemon::pid).collect();
    let template = payload_template(root, "bench", "create", 0)?;
    let log = state.join("calls.log");
    let client = reqwest::Client::new();
    // hangard with the provider processes it ran and reaped.
    let hangard_cpu = || pids.iter().map(|&p| with_children(p)).sum::<f64>();
    let window = Window::start(pids[0])?;
    let cpu0 = hangard_cpu();
    let server0 = pg.cpu();
    let mut lat = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let mut v: Value = template.clone();
        v["workflow_job"]["labels"] = json!(["self-hosted", format!("p{}", i % POOLS)]);
        let body = body_for(&v, 90_000_000_000 + i as i64);
        let sig = sign(SECRET, &body);
        let t0 = super::now_micros();
        let status = super::post_webhook(&client, &urls[i % urls.len()], body, &sig).await?;
        if status != 202 {
            bail!("{label}: job {i}: webhook answered {status}");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let newest = loop {
            let stamps = create_stamps(&log);
            if stamps.len() > i {
                break stamps.into_iter().max().unwrap_or(t0);
            }
            if Instant::now() > deadline {
                bail!(
                    "{label}: job {i}: {} creates for {} jobs after 30 s",
                    stamps.len(),
                    i + 1
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        lat.push(Duration::from_micros(newest.saturating_sub(t0) as u64));
    }
    // The tail of the last job's work (state moves after the create).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hangard = hangard_cpu() - cpu0;
    let server = pg.cpu() - server0;
    let load = window.end(pids[0])?;
    let total = create_stamps(&log).len();
    if total != jobs {
        bail!("{label}: {total} creates for {jobs} jobs (a job served twice?)");
    }
    drop(daemons);
    if let Some(n) = db_name {
        pg.psql(&format!("DROP DATABASE {n} WITH (FORCE)"))?;
    }
    lat.sort();
    Ok(CreateRun {
        label: label.to_owned(),
        jobs,
        lat,
        hangard: hangard * 1000.0 / jobs as f64,
        server: if db_name.is_some() {
            server * 1000.0 / jobs as f64
        } else {
            0.0
        },
        spread,
        // The window counts replica 0 as the daemon; the other replicas
        // and the server are taken out of "other" here.
        other: (load.all - load.bench - (hangard + server) / load.secs).max(0.0),
    })
}

pub async fn run(root: &Path, quick: bool) -> anyhow::Result<()> {
    let pg = Server::from_env()?;
    let (runs, size, rounds) = intake(root, &pg, quick).await?;
    let jobs = if quick { 60 } else { 300 };
    let create_rounds = if quick { 1 } else { 2 };
    let mut creates = Vec::new();
    let mut n = 0;
    for _ in 0..create_rounds {
        for (label, on_pg, replicas) in [
            ("1 replica, SQLite", false, 1usize),
            ("1 replica, PostgreSQL", true, 1),
            ("3 replicas, PostgreSQL", true, 3),
        ] {
            n += 1;
            let name = format!("bench_create_{n}");
            let db = on_pg.then_some(name.as_str());
            creates.push(time_to_create(root, &pg, label, db, replicas, jobs).await?);
        }
    }
    print_intake(&runs, size, rounds, &pg);
    println!(
        "\n## Queued webhook → provider create call, single jobs one at a time (external fake provider, FakeGitHub API, {POOLS} pools, webhooks round-robin over the replicas, hangard release)\n"
    );
    println!(
        "| setup | jobs | pools held per replica | p50 ms | p99 ms | max ms | hangard CPU ms/job (all replicas, with provider processes) | PostgreSQL server CPU ms/job | other load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &creates {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.3} | {} | {:.2} |",
            r.label,
            r.jobs,
            r.spread,
            ms(percentile(&r.lat, 0.5)),
            ms(percentile(&r.lat, 0.99)),
            ms(*r.lat.last().context("latencies")?),
            r.hangard,
            if r.label.contains("SQLite") {
                "–".to_owned()
            } else {
                format!("{:.3}", r.server)
            },
            r.other,
        );
    }
    if create_rounds > 1 {
        println!("\nAll runs of a setup together:\n");
        println!("| setup | jobs | p50 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|");
        let mut labels: Vec<&str> = creates.iter().map(|r| r.label.as_str()).collect();
        labels.truncate(3);
        for label in labels {
            let mut lat: Vec<Duration> = creates
                .iter()
                .filter(|r| r.label == label)
                .flat_map(|r| r.lat.iter().copied())
                .collect();
            lat.sort();
            println!(
                "| {label} | {} | {} | {} | {} |",
                lat.len(),
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.99)),
                ms(*lat.last().context("latencies")?),
            );
        }
    }
    println!(
        "\nWith 3 replicas a webhook lands on the pool's holder one time in three; otherwise the replica that took it wakes the holder through `LISTEN/NOTIFY`. Leases: `lease_ttl_ms` 6000 (default). \"other load\" is CPUs busy with neither hangard, the PostgreSQL server nor this bench."
    );
    Ok(())
}
