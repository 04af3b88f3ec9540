//! A cluster of real `hangard` replicas on one PostgreSQL database, for the
//! end-to-end tests of issue #17: a fresh database per test (made on the
//! server at `HANGAR_TEST_POSTGRES_URL`, dropped at the end), one loopback
//! FakeGitHub, a round-robin load balancer in front of the replicas (their
//! shared public URL, as a real deployment has), and the external fake
//! provider with one shared `state_dir`, so every replica sees every VM.
//! Each replica's provider config names it (`caller`), so the provider's
//! `calls.log` says which replica made each call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::json;
use sqlx::Connection as _;

use crate::{Api, Daemon, bin, free_port, write_config};

/// The webhook secret of the cluster's repository.
pub const SECRET: &str = "cluster-webhook-secret-XYZ";

/// Where the PostgreSQL server for these tests is, or why they do not run:
/// `Ok(None)` skips (said loudly on stderr) outside CI; under `CI=true` a
/// missing server is an error, so CI cannot pass by running nothing.
pub fn postgres_url(test: &str) -> anyhow::Result<Option<String>> {
    match std::env::var("HANGAR_TEST_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => Ok(Some(u)),
        _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => bail!(
            "{test}: CI=true but HANGAR_TEST_POSTGRES_URL is not set; the cluster tests need a \
             PostgreSQL server (cargo xtask ci starts one)"
        ),
        _ => {
            eprintln!(
                "\n!!! SKIPPED {test}: set HANGAR_TEST_POSTGRES_URL=postgres://… to run the \
                 cluster tests (cargo xtask ci does) !!!\n"
            );
            Ok(None)
        }
    }
}

/// A database made for one test, dropped when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create(admin_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let name = format!("{prefix}_{}_{}", std::process::id(), rand::random::<u32>());
        let mut url = reqwest::Url::parse(admin_url).context("HANGAR_TEST_POSTGRES_URL")?;
        url.set_path(&format!("/{name}"));
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connect to {admin_url}"))?;
        // The name is ours: a prefix, a pid and a number.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .context("CREATE DATABASE")?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    pub async fn connect(&self) -> anyhow::Result<sqlx::PgConnection> {
        Ok(sqlx::PgConnection::connect(&self.url).await?)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // A runtime of its own: this may run inside (or after) the test's.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut c = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut c)
                .await
                .ok()
            })
        })
        .join();
        if !matches!(done, Ok(Some(_))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A round-robin HTTP load balancer on loopback: each request goes to the
/// next replica that is up; one that refuses the connection is skipped, and
/// one marked down (as a health check would) gets nothing.
#[derive(Debug, Clone)]
pub struct Balancer {
    pub url: String,
    backends: Arc<Vec<String>>,
    down: Arc<Vec<AtomicBool>>,
    next: Arc<AtomicUsize>,
    /// Requests each backend answered.
    pub served: Arc<Vec<AtomicU64>>,
}

impl Balancer {
    /// Listens on `port` and forwards to `backends` (base URLs).
    pub async fn start(port: u16, backends: Vec<String>) -> anyhow::Result<Self> {
        let n = backends.len();
        let lb = Self {
            url: format!("http://127.0.0.1:{port}"),
            backends: Arc::new(backends),
            down: Arc::new((0..n).map(|_| AtomicBool::new(false)).collect()),
            next: Arc::new(AtomicUsize::new(0)),
            served: Arc::new((0..n).map(|_| AtomicU64::new(0)).collect()),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let me = lb.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let me = me.clone();
            let client = client.clone();
            async move { me.forward(&client, req).await }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(lb)
    }

    /// Takes backend `i` out of rotation (or puts it back).
    pub fn set_down(&self, i: usize, down: bool) {
        self.down[i].store(down, Ordering::SeqCst);
    }

    async fn forward(
        &self,
        client: &reqwest::Client,
        req: axum::extract::Request,
    ) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let (parts, body) = req.into_parts();
        let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
            return (axum::http::StatusCode::BAD_REQUEST, "body").into_response();
        };
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let n = self.backends.len();
        for _ in 0..2 * n {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
            if self.down[i].load(Ordering::SeqCst) {
                continue;
            }
            let mut r = client.request(parts.method.clone(), format!("{}{path}", self.backends[i]));
            for (k, v) in &parts.headers {
                if k != axum::http::header::HOST {
                    r = r.header(k, v);
                }
            }
            match r.body(body.clone()).send().await {
                Ok(resp) => {
                    self.served[i].fetch_add(1, Ordering::Relaxed);
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let bytes = resp.bytes().await.unwrap_or_default();
                    let mut out = (status, bytes).into_response();
                    for (k, v) in &headers {
                        if k != axum::http::header::CONTENT_LENGTH
                            && k != axum::http::header::TRANSFER_ENCODING
                        {
                            out.headers_mut().insert(k, v.clone());
                        }
                    }
                    return out;
                }
                // Not reached (a dead replica): the next one. Anything
                // else may have been seen, so it is the answer.
                Err(e) if e.is_connect() => continue,
                Err(e) => {
                    return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response();
                }
            }
        }
        (axum::http::StatusCode::BAD_GATEWAY, "no replica up").into_response()
    }
}

/// How the cluster is made.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub replicas: usize,
    pub max_runners: u32,
    pub lease_ttl_ms: u64,
    /// How long each fake create takes.
    pub create_delay_ms: u64,
    pub job_duration: Duration,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            replicas: 2,
            max_runners: 20,
            lease_ttl_ms: 1500,
            create_delay_ms: 50,
            job_duration: Duration::from_millis(20),
        }
    }
}

/// One replica: its process (None once killed) and what names it.
#[derive(Debug)]
pub struct Replica {
    pub daemon: Daemon,
    /// Its tag in the provider's `calls.log`.
    pub caller: String,
    pub dir: PathBuf,
}

impl Replica {
    /// The replica id it holds leases under (from its startup log line).
    pub fn replica_id(&self) -> Option<String> {
        replica_id_in(&self.daemon.logs())
    }
}

fn replica_id_in(logs: &str) -> Option<String> {
    logs.lines().find_map(|l| {
        if !l.contains("scheduler replica") {
            return None;
        }
        let at = l.find("replica.id=")? + "replica.id=".len();
        let id: String = l[at..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
            .collect();
        (!id.is_empty()).then_some(id)
    })
}

/// N replicas on one database, a FakeGitHub, a balancer, one pool.
#[derive(Debug)]
pub struct Cluster {
    pub replicas: Vec<Replica>,
    pub gh: FakeGitHub,
    pub lb: Balancer,
    /// Logged in through the balancer.
    pub api: Api,
    pub repo: String,
    pub pool: String,
    /// The fake provider's shared state (instances/, calls.log).
    pub state: PathBuf,
    pub spec: ClusterSpec,
    // Last: dropped after the replicas are killed.
    pub db: TestDatabase,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts everything and sets up (first run, GitHub, repository, pool)
    /// through the first replica; the others see it through the database.
    pub async fn start(admin_url: &str, spec: ClusterSpec) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = TestDatabase::create(admin_url, "hangar_cluster").await?;
        let state = dir.path().join("provider-state");
        std::fs::create_dir_all(&state)?;
        let lb_port = free_port();
        let lb_url = format!("http://127.0.0.1:{lb_port}");
        let mut replicas = Vec::new();
        let ports: Vec<u16> = (0..spec.replicas).map(|_| free_port()).collect();
        let lb = Balancer::start(
            lb_port,
            ports
                .iter()
                .map(|p| format!("http://127.0.0.1:{p}"))
                .collect(),
        )
        .await?;
        for (i, port) in ports.iter().enumerate() {
            let caller = format!("r{i}");
            let rdir = dir.path().join(&caller);
            std::fs::create_dir_all(&rdir)?;
            let pcfg = rdir.join("fake-provider.toml");
            std::fs::write(
                &pcfg,
                format!(
                    "state_dir = \"{}\"\nboot = \"simulate\"\ncreate_delay_ms = {}\ncaller = \"{caller}\"\n",
                    state.display(),
                    spec.create_delay_ms
                ),
            )?;
            let extra = format!(
                r#"
[github]
budget_per_hour = 1000000
budget_burst = 100000

[scheduler]
reconcile_interval_secs = 2
lost_instance_grace_secs = 5
backoff_base_ms = 100
backoff_max_ms = 1000
breaker_base_secs = 1
breaker_max_secs = 2
lease_ttl_ms = {ttl}

[[provider]]
name = "ext"
kind = "external"
[provider.external]
executable = "{exe}"
config_file = "{cfg}"
"#,
                ttl = spec.lease_ttl_ms,
                exe = bin("hangar-fake-provider").display(),
                cfg = pcfg.display(),
            );
            let config = write_config(&rdir, *port, &extra);
            // The replicas share the balancer's URL (the one runners and
            // GitHub reach) and the database.
            let text = std::fs::read_to_string(&config)?
                .replace(
                    &format!("public_url = \"http://127.0.0.1:{port}\""),
                    &format!("public_url = \"{lb_url}\""),
                )
                .replace(
                    &format!(
                        "url = \"sqlite://{}\"",
                        rdir.join("data/hangar.db").display()
                    ),
                    &format!("url = \"{}\"", db.url),
                );
            std::fs::write(&config, text)?;
            let daemon = Daemon::start(&rdir, *port, &config).await?;
            replicas.push(Replica {
                daemon,
                caller,
                dir: rdir,
            });
        }
        let gh = FakeGitHub::start().await;
        gh.set_job_duration(spec.job_duration);
        let first = Api::init(&replicas[0].daemon.url).await?;
        first.add_github(&gh.url()).await?;
        let repo = first.add_repo("octo", "cluster", SECRET).await?;
        let pool = first
            .add_pool(
                &repo,
                json!({"provider_name": "ext", "image": "i", "flavor": "f",
                       "tags": ["self-hosted", "cluster"], "max_runners": spec.max_runners}),
            )
            .await?;
        // Every replica answers for the same installation.
        for r in &replicas[1..] {
            let api = Api::login(&r.daemon.url).await?;
            let pools = api
                .get(&format!("/api/v1/repositories/{repo}/pools"))
                .await?;
            if !pools.to_string().contains(&pool) {
                bail!("replica {} does not see pool {pool}: {pools}", r.caller);
            }
        }
        // Every replica accepts deliveries for it (a signed ping answered
        // 2xx), however it learnt of it.
        let client = reqwest::Client::new();
        for r in &replicas {
            let url = format!("{}/webhooks/{repo}", r.daemon.url);
            let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#.to_vec();
            let sig = crate::sign(SECRET, &body);
            crate::wait_for(
                Duration::from_secs(30),
                "every replica to know the repository",
                || {
                    let (client, url, body, sig) =
                        (client.clone(), url.clone(), body.clone(), sig.clone());
                    async move {
                        let r = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("x-github-event", "ping")
                            .header(
                                "x-github-delivery",
                                format!("ping-{}", rand::random::<u64>()),
                            )
                            .header("x-hub-signature-256", sig)
                            .body(body)
                            .send()
                            .await
                            .map_err(|e| e.to_string())?;
                        if r.status().is_success() {
                            Ok(())
                        } else {
                            Err(format!(
                                "{} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            ))
                        }
                    }
                },
            )
            .await;
        }
        gh.set_webhook_target(format!("{lb_url}/webhooks/{repo}"), SECRET);
        let api = Api::login(&lb_url).await?;
        Ok(Self {
            replicas,
            gh,
            lb,
            api,
            repo,
            pool,
            state,
            spec,
            db,
            _dir: dir,
        })
    }

    /// The replica id holding the pool's lease now (unexpired), with its
    /// fencing token.
    pub async fn lease_holder(&self) -> anyhow::Result<Option<(String, i64)>> {
        let mut c = self.db.connect().await?;
        let row: Option<(Option<String>, i64)> = sqlx::query_as(
            "SELECT holder, token FROM pool_leases WHERE pool_id = $1 \
             AND expires_at > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        )
        .bind(&self.pool)
        .fetch_optional(&mut c)
        .await?;
        let _ = c.close().await;
        Ok(row.and_then(|(h, t)| h.map(|h| (h, t))))
    }

    /// Which of `self.replicas` holds the pool's lease (index, token).
    pub async fn holder_index(&self) -> anyhow::Result<Option<(usize, i64)>> {
        let Some((id, token)) = self.lease_holder().await? else {
            return Ok(None);
        };
        Ok(self
            .replicas
            .iter()
            .position(|r| r.replica_id().as_deref() == Some(id.as_str()))
            .map(|i| (i, token)))
    }

    /// Instances the fake provider holds now (names).
    pub fn provider_instances(&self) -> Vec<String> {
        provider_instances(&self.state)
    }

    /// The provider's calls: (command, instance, unix µs, caller).
    pub fn calls(&self) -> Vec<Call> {
        calls(&self.state)
    }

    /// Queues `n` jobs in FakeGitHub, their `queued` webhooks sent through
    /// the balancer (round-robin over the replicas) on `connections`
    /// concurrent senders. Returns the job ids.
    pub async fn burst(&self, n: usize, connections: usize) -> Vec<i64> {
        let left = Arc::new(AtomicUsize::new(n));
        let mut senders = Vec::new();
        for _ in 0..connections {
            let gh = self.gh.clone();
            let left = left.clone();
            senders.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                while left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                    .is_ok()
                {
                    ids.push(
                        gh.queue_job("octo/cluster", &["self-hosted", "cluster"])
                            .await,
                    );
                }
                ids
            }));
        }
        let mut ids = Vec::new();
        for s in senders {
            ids.extend(s.await.expect("sender"));
        }
        ids
    }

    /// Samples, every few ms until stopped, the most live VMs the provider
    /// held and the most live instances the store listed at once.
    pub fn watch_capacity(&self) -> CapacityWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let state = self.state.clone();
        let s = stop.clone();
        let vms = tokio::spawn(async move {
            let mut peak = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let now = provider_instances(&state);
                if now.len() > peak.len() {
                    peak = now;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak
        });
        let api = self.api.clone();
        let s = stop.clone();
        let pool = self.pool.clone();
        let store = tokio::spawn(async move {
            let mut peak = 0;
            while !s.load(Ordering::Relaxed) {
                if let Ok(list) = api.instances(false).await {
                    let n = list
                        .iter()
                        .filter(|i| i["pool_id"].as_str() == Some(pool.as_str()))
                        .count();
                    peak = peak.max(n);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        });
        CapacityWatch { stop, vms, store }
    }

    /// Waits until every job in `jobs` completed in FakeGitHub, then until
    /// no VM, no live instance and no registered runner is left.
    pub async fn wait_drained(&self, jobs: &[i64], timeout: Duration) {
        self.gh
            .wait_for(timeout, "every accepted job to complete", |g| {
                jobs.iter()
                    .all(|id| g.job(*id).is_some_and(|j| j.status == "completed"))
            })
            .await;
        let api = self.api.clone();
        let state = self.state.clone();
        let gh = self.gh.clone();
        crate::wait_for(timeout, "no VM, instance or runner left", || {
            let api = api.clone();
            let state = state.clone();
            let gh = gh.clone();
            async move {
                let live = api.instances(false).await.map_err(|e| e.to_string())?.len();
                let vms = provider_instances(&state);
                let runners = gh.runners();
                if live == 0 && vms.is_empty() && runners.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{live} live in hangar, provider holds {vms:?}, runners {runners:?}"
                    ))
                }
            }
        })
        .await;
    }

    /// Every replica's logs, by caller tag.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for r in &self.replicas {
            out.push_str(&format!(
                "==== {} ====\n{}\n",
                r.caller,
                r.daemon.all_logs()
            ));
        }
        out
    }
}

/// What [`Cluster::watch_capacity`] samples.
#[derive(Debug)]
pub struct CapacityWatch {
    stop: Arc<AtomicBool>,
    vms: tokio::task::JoinHandle<Vec<String>>,
    store: tokio::task::JoinHandle<usize>,
}

impl CapacityWatch {
    /// Stops sampling: (most VMs at once, most live instances at once).
    pub async fn finish(self) -> (usize, usize) {
        let (vms, live, _) = self.finish_with_names().await;
        (vms, live)
    }

    /// [`Self::finish`], and the VMs the provider held at the peak.
    pub async fn finish_with_names(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let names = self.vms.await.expect("vm sampler");
        (names.len(), self.store.await.expect("store sampler"), names)
    }
}

/// One line of the fake provider's `calls.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub command: String,
    pub instance: String,
    pub unix_micros: u128,
    pub caller: String,
}

pub fn calls(state: &Path) -> Vec<Call> {
    std::fs::read_to_string(state.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [cmd, inst, ts, caller] => Some(Call {
                    command: (*cmd).to_owned(),
                    instance: (*inst).to_owned(),
                    unix_micros: ts.parse().ok()?,
                    caller: (*caller).to_owned(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// Instances the external fake provider holds (one JSON file each).
pub fn provider_instances(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("instances"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default()
}

/// Now, in the calls log's unit.
pub fn unix_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}
