//! One scenario's world: a FakeGitHub, the external fake provider (its
//! state in a temp dir), the real `hangard` wired to both, a watcher that
//! records the most runners each pool ever had, and the end-of-run
//! measurements (served, leaked, calls per job, panics) a table row needs.
//!
//! With `--postgres URL` ([`Cluster`]) the world is a cluster: N `hangard`
//! replicas on one fresh PostgreSQL database (made for the rig, dropped at
//! the end of the run), sharing the passphrase, the JWT secret, the fake
//! provider's state and FakeGitHub, behind a round-robin HTTP balancer
//! ([`balancer`]) that GitHub's deliveries, the runners' callbacks and the
//! admin API all go through, as they would behind a load balancer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use hangar_e2e::{Api, Daemon, PASSPHRASE, bin, free_port};
use hangar_testkit::fake_github::FakeGitHub;
use serde_json::{Value, json};

pub const SECRET: &str = "faults-webhook-secret";
pub const REPO: &str = "octo/faults";

/// The JWT secret every replica of a cluster shares (a token one issues,
/// the others accept).
const JWT_SECRET: &str = "faults-cluster-jwt-secret-at-least-32-bytes";

/// How the run was asked to build its worlds: one `hangard` on SQLite
/// (no cluster), or replicas on PostgreSQL.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// A server URL whose user may create databases
    /// (`postgres://postgres@127.0.0.1:55432/postgres`).
    pub admin_url: String,
    pub replicas: usize,
    /// `[scheduler] lease_ttl_ms` of every replica.
    pub lease_ttl_ms: u64,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
/// Databases the run made, dropped by [`drop_databases`].
static DATABASES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Makes every rig of the run a cluster (once, before the first rig).
pub fn set_cluster(c: Cluster) {
    let _ = CLUSTER.set(c);
}

pub fn cluster() -> Option<&'static Cluster> {
    CLUSTER.get()
}

/// `admin_url` with its database replaced by `db`.
fn with_database(admin_url: &str, db: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url, String::new()),
    };
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let base = if rest.contains('/') {
        &base[..base.rfind('/').unwrap_or(base.len())]
    } else {
        base
    };
    format!("{base}/{db}{query}")
}

/// A fresh database for one rig; its URL.
async fn create_database(c: &Cluster) -> anyhow::Result<String> {
    use sqlx::Connection as _;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "hangar_faults_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(&c.admin_url)
        .await
        .with_context(|| format!("connecting to {}", c.admin_url))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .context("CREATE DATABASE")?;
    DATABASES.lock().expect("databases").push(name.clone());
    Ok(with_database(&c.admin_url, &name))
}

/// Drops every database the run made (their replicas are gone by now).
pub async fn drop_databases() {
    use sqlx::Connection as _;
    let Some(c) = cluster() else { return };
    let names = std::mem::take(&mut *DATABASES.lock().expect("databases"));
    if names.is_empty() {
        return;
    }
    match sqlx::PgConnection::connect(&c.admin_url).await {
        Ok(mut conn) => {
            for name in names {
                if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                {
                    eprintln!("hangar-faults: cannot drop database {name}: {e}");
                }
            }
        }
        Err(e) => eprintln!("hangar-faults: cannot drop databases {names:?}: {e}"),
    }
}

/// How a scenario wants its world.
#[derive(Debug, Clone)]
pub struct RigOpts {
    /// (label, max_runners) per pool.
    pub pools: Vec<(&'static str, u32)>,
    /// `[[fault]]` tables for the fake provider's config.
    pub provider_faults: String,
    pub create_delay_ms: u64,
    pub call_timeout_secs: u64,
    pub read_timeout_secs: u64,
    pub job_duration: Duration,
    /// A database URL other than the temp dir's (`sqlite://…`).
    pub database_url: Option<String>,
    /// Minutes an instance may take to report its runner idle.
    pub bootstrap_timeout_mins: u32,
    /// Deliver through a repository hook made with GitHub's hooks API
    /// (listable and redeliverable, so hangard's recovery can find it)
    /// instead of a plain webhook target.
    pub repo_hook: bool,
    /// `[server] max_connections` (hangard's default when `None`).
    pub max_connections: Option<u32>,
    /// More TOML appended to hangard's config (whole sections).
    pub extra_config: String,
    /// `[scheduler] lease_ttl_ms` on a cluster, instead of the run's.
    pub lease_ttl_ms: Option<u64>,
}

impl Default for RigOpts {
    fn default() -> Self {
        Self {
            pools: vec![("a", 4), ("b", 3)],
            provider_faults: String::new(),
            create_delay_ms: 20,
            call_timeout_secs: 20,
            read_timeout_secs: 30,
            job_duration: Duration::from_millis(50),
            database_url: None,
            bootstrap_timeout_mins: 20,
            repo_hook: false,
            max_connections: None,
            extra_config: String::new(),
            lease_ttl_ms: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PoolInfo {
    pub id: String,
    pub label: &'static str,
    pub max: u32,
}

/// Live runner counts per pool, as the highest seen from any of three
/// places: hangard's live instances, the provider's VMs, GitHub's runners.
#[derive(Debug, Default)]
pub struct Peaks {
    pub per_pool: HashMap<String, usize>,
    /// The same per view: `hangard`, `provider`, `github`.
    pub per_view: HashMap<(&'static str, String), usize>,
}

/// One more replica of a cluster (replica 0 is [`Rig::daemon`]).
pub struct Replica {
    /// `None` while it is down.
    pub daemon: Option<Daemon>,
    pub port: u16,
    pub config: PathBuf,
}

pub struct Rig {
    // Dropped first: the daemon stops before its directory goes.
    /// The one `hangard`; on a cluster, replica 0.
    pub daemon: Daemon,
    /// Replicas 1.. of a cluster (empty otherwise).
    pub others: Vec<Replica>,
    pub api: Api,
    /// Where GitHub, the runners and the operator reach hangard: the
    /// daemon's own URL, or on a cluster the balancer's.
    pub url: String,
    /// The cluster's database (for `pool_leases`).
    pub database_url: Option<String>,
    /// The next replica [`Rig::crash_and_restart`] kills.
    victim: usize,
    pub gh: FakeGitHub,
    pub repo_id: String,
    pub pools: Vec<PoolInfo>,
    pub state: PathBuf,
    pub provider_config: PathBuf,
    pub port: u16,
    pub config: PathBuf,
    /// The repository hook deliveries go through (with `repo_hook`).
    pub hook_id: Option<i64>,
    env: Vec<(String, String)>,
    peaks: Arc<Mutex<Peaks>>,
    stop_watch: Arc<AtomicBool>,
    pub dir: tempfile::TempDir,
}

fn hangard_config(
    dir: &Path,
    port: u16,
    public_url: &str,
    opts: &RigOpts,
    provider_config: &Path,
) -> String {
    let (lease, auth) = match cluster() {
        Some(c) => (
            format!(
                "lease_ttl_ms = {}",
                opts.lease_ttl_ms.unwrap_or(c.lease_ttl_ms)
            ),
            format!("[auth]\njwt_secret = \"{JWT_SECRET}\"\n"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"[server]
bind = "127.0.0.1:{port}"
public_url = "{public_url}"
read_timeout_secs = {read_timeout}
{max_connections}

{auth}

[database]
url = "sqlite://{db}"
passphrase = "{PASSPHRASE}"

[logging]
level = "{level}"

[github]
budget_per_hour = 10000000
budget_burst = 1000000
backoff_base_ms = 100
backoff_max_ms = 2000
max_inline_wait_secs = 3

[scheduler]
reconcile_interval_secs = 2
idle_grace_secs = 1
lost_instance_grace_secs = 5
backoff_base_ms = 100
backoff_max_ms = 2000
busy_retry_secs = 1
job_recheck_after_secs = 20
# The pool breaker's back-off doubles from 10 s to 300 s by default: with
# the provider row's ~40 % failed creates, three failed probes in a row
# (about one run in twenty) held a pool past the row's whole window. The
# rows bound what faults cost, not the production back-off, so it is short
# here; its rule is tested in the scheduler's breaker tests.
breaker_base_secs = 2
breaker_max_secs = 8
{lease}

[[provider]]
name = "ext"
kind = "external"
[provider.external]
executable = "{exe}"
config_file = "{cfg}"
interface_version = "v0.1.1"
call_timeout_secs = {timeout}
max_concurrency = 8

{extra}
"#,
        max_connections = opts
            .max_connections
            .map(|n| format!("max_connections = {n}"))
            .unwrap_or_default(),
        extra = opts.extra_config,
        read_timeout = opts.read_timeout_secs,
        db = dir.join("data/hangar.db").display(),
        level = std::env::var("HANGAR_E2E_LOG").unwrap_or_else(|_| "info".into()),
        exe = bin("hangar-fake-provider").display(),
        cfg = provider_config.display(),
        timeout = opts.call_timeout_secs,
    )
}

impl Rig {
    pub async fn start(opts: RigOpts) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hangar-faults-")
            .tempdir()?;
        let state = dir.path().join("provider");
        std::fs::create_dir_all(&state)?;
        let provider_config = state.join("fake-provider.toml");
        std::fs::write(
            &provider_config,
            format!(
                "state_dir = \"{}\"\nboot = \"simulate\"\ncreate_delay_ms = {}\n{}",
                state.display(),
                opts.create_delay_ms,
                opts.provider_faults
            ),
        )?;
        let replicas = cluster().map_or(1, |c| c.replicas.max(1));
        let ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
        let url = if cluster().is_some() {
            balancer(ports.clone()).await?
        } else {
            format!("http://127.0.0.1:{}", ports[0])
        };
        let mut configs = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            // Not `hangard-*`: those are the daemons' logs.
            let config = dir.path().join(if replicas == 1 {
                "hangard.toml".to_owned()
            } else {
                format!("replica-{i}.toml")
            });
            std::fs::write(
                &config,
                hangard_config(dir.path(), *port, &url, &opts, &provider_config),
            )?;
            configs.push(config);
        }
        let database_url = match (cluster(), &opts.database_url) {
            (_, Some(u)) => Some(u.clone()),
            (Some(c), None) => Some(create_database(c).await?),
            (None, None) => None,
        };
        let mut env = Vec::new();
        if let Some(url) = &database_url {
            env.push(("HANGAR_DATABASE_URL".to_owned(), url.clone()));
        }
        let env_ref: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // Replica 0 migrates the fresh database; the others start on it.
        let daemon = Daemon::start_with_env(dir.path(), ports[0], &configs[0], &env_ref).await?;
        let mut others = Vec::new();
        for (port, config) in ports.iter().zip(&configs).skip(1) {
            others.push(Replica {
                daemon: Some(Daemon::start_with_env(dir.path(), *port, config, &env_ref).await?),
                port: *port,
                config: config.clone(),
            });
        }
        let api = Api::init(&url).await?;
        let gh = FakeGitHub::start().await;
        gh.set_job_duration(opts.job_duration);
        api.add_github(&gh.url()).await?;
        let (owner, name) = REPO.split_once('/').context("repo")?;
        let repo_id = api.add_repo(owner, name, SECRET).await?;
        let webhook_url = format!("{url}/webhooks/{repo_id}");
        // The hook exists before any pool does, so hangard's first
        // recovery pass (which looks only at entities with pools) finds it.
        let hook_id = if opts.repo_hook {
            Some(make_hook(&gh, &webhook_url).await?)
        } else {
            gh.set_webhook_target(webhook_url, SECRET);
            None
        };
        let mut pools = Vec::new();
        for (label, max) in &opts.pools {
            let id = api
                .add_pool(
                    &repo_id,
                    json!({"provider_name": "ext", "image": "i", "flavor": "f",
                           "tags": ["self-hosted", label], "max_runners": max,
                           "runner_bootstrap_timeout": opts.bootstrap_timeout_mins}),
                )
                .await?;
            pools.push(PoolInfo {
                id,
                label,
                max: *max,
            });
        }
        let rig = Rig {
            daemon,
            others,
            api,
            url,
            database_url: cluster().and(database_url),
            victim: 0,
            gh,
            repo_id,
            pools,
            state,
            provider_config,
            port: ports[0],
            config: configs[0].clone(),
            hook_id,
            env,
            peaks: Arc::default(),
            stop_watch: Arc::new(AtomicBool::new(false)),
            dir,
        };
        rig.watch();
        Ok(rig)
    }

    /// Redelivers attempt `id` of the rig's hook through GitHub's
    /// `POST …/hooks/{hook_id}/deliveries/{id}/attempts` (what an
    /// operator's "Redeliver" does); returns the answer's status.
    pub async fn redeliver(&self, id: i64) -> anyhow::Result<u16> {
        let hook = self.hook_id.context("the rig has no repository hook")?;
        let r = reqwest::Client::new()
            .post(format!(
                "{}/repos/{REPO}/hooks/{hook}/deliveries/{id}/attempts",
                self.gh.url()
            ))
            .bearer_auth("faults")
            .send()
            .await?;
        Ok(r.status().as_u16())
    }

    /// Samples the runner count of every pool until the rig is dropped.
    fn watch(&self) {
        let url = self.url.clone();
        let token = self.api.token.clone();
        let gh = self.gh.clone();
        let state = self.state.clone();
        let peaks = self.peaks.clone();
        let stop = self.stop_watch.clone();
        let pools: Vec<String> = self.pools.iter().map(|p| p.id.clone()).collect();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let mut counts: HashMap<String, usize> = HashMap::new();
                // hangard's view (skipped while it is down).
                if let Ok(r) = client
                    .get(format!("{url}/api/v1/instances?all=false"))
                    .bearer_auth(&token)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    && let Ok(v) = r.json::<Value>().await
                {
                    let mut live: HashMap<String, usize> = HashMap::new();
                    for i in v.as_array().into_iter().flatten() {
                        *live
                            .entry(i["pool_id"].as_str().unwrap_or("").to_owned())
                            .or_default() += 1;
                    }
                    note_view(&peaks, "hangard", &live);
                    merge_max(&mut counts, live);
                }
                // The provider's.
                let mut vms: HashMap<String, usize> = HashMap::new();
                for vm in provider_vms(&state) {
                    *vms.entry(vm.pool_id).or_default() += 1;
                }
                note_view(&peaks, "provider", &vms);
                merge_max(&mut counts, vms);
                // GitHub's.
                let mut runners: HashMap<String, usize> = HashMap::new();
                for r in gh.runners() {
                    if let Some(p) = pools
                        .iter()
                        .find(|p| r.labels.iter().any(|l| *l == format!("hangar-pool-id:{p}")))
                    {
                        *runners.entry(p.clone()).or_default() += 1;
                    }
                }
                note_view(&peaks, "github", &runners);
                merge_max(&mut counts, runners);
                {
                    let mut pk = peaks.lock().expect("peaks");
                    for (p, n) in counts {
                        let e = pk.per_pool.entry(p).or_default();
                        *e = (*e).max(n);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// The worst pool: (observed peak, its max_runners), the one furthest
    /// over (or closest to) its limit.
    pub fn worst_peak(&self) -> (usize, u32) {
        let pk = self.peaks.lock().expect("peaks");
        self.pools
            .iter()
            .map(|p| (pk.per_pool.get(&p.id).copied().unwrap_or(0), p.max))
            .max_by_key(|(seen, max)| (*seen as i64 - i64::from(*max), *seen))
            .unwrap_or((0, 0))
    }

    /// Views whose count went over a pool's max_runners, as
    /// `view: seen/max`.
    pub fn peaks_over(&self) -> Vec<String> {
        let pk = self.peaks.lock().expect("peaks");
        let mut out = Vec::new();
        for p in &self.pools {
            for view in ["hangard", "provider", "github"] {
                let seen = pk.per_view.get(&(view, p.id.clone())).copied().unwrap_or(0);
                if seen > p.max as usize {
                    out.push(format!("pool {}: {view} {seen}/{}", p.label, p.max));
                }
            }
        }
        out
    }

    /// kill -9, then start again on the same port and database; on a
    /// cluster each call takes the next replica in turn.
    pub async fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        let which = self.victim % self.replicas();
        self.victim += 1;
        self.kill_replica(which);
        self.restart_replica(which).await
    }

    /// How many `hangard` the rig runs.
    pub fn replicas(&self) -> usize {
        1 + self.others.len()
    }

    /// kill -9 of replica `i` (0: [`Rig::daemon`]).
    pub fn kill_replica(&mut self, i: usize) {
        if i == 0 {
            self.daemon.kill9();
        } else if let Some(mut d) = self.others[i - 1].daemon.take() {
            d.kill9();
        }
    }

    /// Starts replica `i` again on its port and the rig's database.
    pub async fn restart_replica(&mut self, i: usize) -> anyhow::Result<()> {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if i == 0 {
            self.daemon =
                Daemon::start_with_env(self.dir.path(), self.port, &self.config, &env).await?;
        } else {
            let r = &mut self.others[i - 1];
            r.daemon =
                Some(Daemon::start_with_env(self.dir.path(), r.port, &r.config, &env).await?);
        }
        self.api = Api::login(&self.url).await?;
        Ok(())
    }

    /// The replica id (what `pool_leases.holder` names) replica `i` logged
    /// at its latest start.
    pub fn replica_id(&self, i: usize) -> Option<String> {
        let logs = if i == 0 {
            self.daemon.logs()
        } else {
            self.others[i - 1].daemon.as_ref()?.logs()
        };
        let at = logs.rfind("replica.id")?;
        let rest = &logs[at + "replica.id".len()..];
        let start = rest.find(|c: char| c.is_ascii_hexdigit())?;
        let id: String = rest[start..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
            .collect();
        (id.len() == 36).then_some(id)
    }

    /// Queues `n` jobs spread over the pools, `conns` at a time; returns
    /// the job ids.
    pub async fn queue_jobs(&self, n: usize, conns: usize) -> Vec<i64> {
        let labels: Vec<&'static str> = self.pools.iter().map(|p| p.label).collect();
        queue_jobs(self.gh.clone(), labels, n, conns).await
    }

    /// Job ids whose `queued` delivery got a 2xx.
    pub fn accepted(&self) -> BTreeSet<i64> {
        self.gh
            .deliveries()
            .iter()
            .filter(|d| d.action == "queued" && (200..300).contains(&d.status))
            .map(|d| d.job_id)
            .collect()
    }

    /// Jobs GitHub ran to success.
    pub fn served(&self) -> BTreeSet<i64> {
        self.gh
            .jobs()
            .into_iter()
            .filter(|j| j.status == "completed" && j.conclusion.as_deref() == Some("success"))
            .map(|j| j.id)
            .collect()
    }

    /// Waits until every job in `want` has run (or `timeout`, or no job
    /// was served for `stall` while some still wait); returns those that
    /// did not.
    pub async fn wait_served(
        &self,
        want: &BTreeSet<i64>,
        timeout: Duration,
        stall: Option<Duration>,
    ) -> BTreeSet<i64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = (usize::MAX, tokio::time::Instant::now());
        loop {
            let served = self.served();
            let missing: BTreeSet<i64> = want.difference(&served).copied().collect();
            let now = tokio::time::Instant::now();
            if missing.len() != last.0 {
                last = (missing.len(), now);
            }
            let stalled = stall.is_some_and(|s| now.duration_since(last.1) > s);
            if missing.is_empty() || now > deadline || stalled {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits (up to `timeout`) until hangard has no live instance, the
    /// provider no VM and GitHub no runner; then measures what is left.
    pub async fn settle(&self, timeout: Duration) -> Leftovers {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = self.leftovers().await;
            if (left.live.is_empty() && left.vms.is_empty() && left.runners.is_empty())
                || tokio::time::Instant::now() > deadline
            {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn leftovers(&self) -> Leftovers {
        let instances = self.api.instances(false).await.unwrap_or_default();
        let live: BTreeSet<String> = instances
            .iter()
            .filter_map(|i| i["name"].as_str().map(str::to_owned))
            .collect();
        let live_status = instances
            .iter()
            .map(|i| {
                format!(
                    "{} {}/{}",
                    i["name"].as_str().unwrap_or("?"),
                    i["status"].as_str().unwrap_or("?"),
                    i["runner_status"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let vms: BTreeSet<String> = provider_vms(&self.state)
            .into_iter()
            .map(|v| v.name)
            .collect();
        let runners: BTreeSet<String> = self.gh.runners().into_iter().map(|r| r.name).collect();
        Leftovers {
            live,
            live_status,
            vms,
            runners,
        }
    }

    /// GitHub API calls so far.
    pub fn github_calls(&self) -> u64 {
        self.gh.calls_total()
    }

    /// "panicked" in every log hangard wrote.
    pub fn panics(&self) -> usize {
        self.daemon.all_logs().matches("panicked").count()
    }

    /// Lines of the fake provider's call log.
    pub fn provider_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Injected provider faults by kind.
    pub fn provider_faults(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for l in self.provider_calls() {
            let mut w = l.split_whitespace();
            if w.next() == Some("FAULT") {
                let kind = w.next().unwrap_or("?");
                let cmd = w.next().unwrap_or("?").trim_end_matches("Instance");
                *m.entry(format!("{cmd} {kind}")).or_default() += 1;
            }
        }
        m
    }

    /// Provider calls (not boot simulations) still running.
    pub fn provider_calls_running(&self) -> Vec<u32> {
        self.provider_processes()
            .into_iter()
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                cmdline.split(|b| *b == 0).nth(1) != Some(b"boot".as_slice())
            })
            .collect()
    }

    /// Processes started for this rig's provider (calls and boot
    /// simulations): their environment names this rig's provider config.
    pub fn provider_processes(&self) -> Vec<u32> {
        let needle = format!(
            "GARM_PROVIDER_CONFIG_FILE={}",
            self.provider_config.display()
        );
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(env) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                out.push(pid);
            }
        }
        out
    }

    /// Ends processes this rig started that outlived their parent: hung
    /// provider calls and boot simulations (by pid, each found by the
    /// rig's own paths).
    pub fn reap_processes(&self) {
        for pid in self.provider_processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop_watch.store(true, Ordering::Relaxed);
        self.daemon.kill9();
        for r in &mut self.others {
            if let Some(mut d) = r.daemon.take() {
                d.kill9();
            }
        }
        self.reap_processes();
    }
}

/// What is left at the end of a scenario.
#[derive(Debug, Clone, Default)]
pub struct Leftovers {
    /// hangard's live instances.
    pub live: BTreeSet<String>,
    /// `name status/runner_status` of each.
    pub live_status: Vec<String>,
    /// The provider's VMs.
    pub vms: BTreeSet<String>,
    /// Runners registered on GitHub.
    pub runners: BTreeSet<String>,
}

impl Leftovers {
    /// VMs no live instance accounts for.
    pub fn vms_leaked(&self) -> usize {
        self.vms.difference(&self.live).count()
    }

    /// Runners no live instance accounts for.
    pub fn runners_leaked(&self) -> usize {
        self.runners.difference(&self.live).count()
    }
}

/// Queues `n` jobs in [`REPO`], round-robin over `labels`, `conns` at a
/// time (each waits for its delivery's answer); returns the job ids.
pub async fn queue_jobs(
    gh: FakeGitHub,
    labels: Vec<&'static str>,
    n: usize,
    conns: usize,
) -> Vec<i64> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let mut tasks = Vec::new();
    for _ in 0..conns.max(1) {
        let gh = gh.clone();
        let next = next.clone();
        let ids = ids.clone();
        let labels = labels.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let label = labels[i % labels.len()];
                let id = gh.queue_job(REPO, &["self-hosted", label]).await;
                ids.lock().expect("ids").push(id);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut v = ids.lock().expect("ids").clone();
    v.sort_unstable();
    v
}

fn note_view(peaks: &Mutex<Peaks>, view: &'static str, counts: &HashMap<String, usize>) {
    let mut pk = peaks.lock().expect("peaks");
    for (p, n) in counts {
        let e = pk.per_view.entry((view, p.clone())).or_default();
        *e = (*e).max(*n);
    }
}

fn merge_max(into: &mut HashMap<String, usize>, from: HashMap<String, usize>) {
    for (k, v) in from {
        let e = into.entry(k).or_default();
        *e = (*e).max(v);
    }
}

pub struct Vm {
    pub name: String,
    pub pool_id: String,
}

/// The fake provider's VMs: one JSON file each under `instances/`.
pub fn provider_vms(state: &Path) -> Vec<Vm> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(state.join("instances"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue;
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        out.push(Vm {
            name: v["name"].as_str().unwrap_or(&name).to_owned(),
            pool_id: v["pool_id"].as_str().unwrap_or("").to_owned(),
        });
    }
    out
}

/// Makes a repository hook for `workflow_job` events at `url` through
/// GitHub's hooks API; returns its id.
async fn make_hook(gh: &FakeGitHub, url: &str) -> anyhow::Result<i64> {
    let r = reqwest::Client::new()
        .post(format!("{}/repos/{REPO}/hooks", gh.url()))
        .bearer_auth("faults")
        .json(
            &json!({"name": "web", "active": true, "events": ["workflow_job"],
            "config": {"url": url, "content_type": "json", "secret": SECRET, "insecure_ssl": "0"}}),
        )
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "creating the hook: {}", r.status());
    let v: Value = r.json().await?;
    v["id"].as_i64().context("hook id")
}

/// A round-robin HTTP balancer on loopback in front of the replicas' ports
/// (each request to the next; a replica that refuses the connection is
/// skipped, as a load balancer's passive health check would); its URL.
async fn balancer(ports: Vec<u16>) -> anyhow::Result<String> {
    use axum::body::Body;
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse as _, Response};

    struct Lb {
        ports: Vec<u16>,
        next: AtomicUsize,
        client: reqwest::Client,
    }
    const HOP: [header::HeaderName; 4] = [
        header::HOST,
        header::CONTENT_LENGTH,
        header::CONNECTION,
        header::TRANSFER_ENCODING,
    ];
    async fn forward(
        axum::extract::State(lb): axum::extract::State<Arc<Lb>>,
        req: axum::extract::Request,
    ) -> Response {
        let (parts, body) = req.into_parts();
        let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let n = lb.ports.len();
        let first = lb.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let port = lb.ports[(first + k) % n];
            let mut rb = lb.client.request(
                parts.method.clone(),
                format!("http://127.0.0.1:{port}{path}"),
            );
            for (name, value) in &parts.headers {
                if !HOP.contains(name) {
                    rb = rb.header(name, value);
                }
            }
            match rb.body(body.clone()).send().await {
                Ok(r) => {
                    let mut out = Response::builder().status(r.status());
                    for (name, value) in r.headers() {
                        if !HOP.contains(name) {
                            out = out.header(name, value);
                        }
                    }
                    let bytes = r.bytes().await.unwrap_or_default();
                    return out
                        .body(Body::from(bytes))
                        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response());
                }
                Err(e) if e.is_connect() => continue,
                Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
            }
        }
        StatusCode::BAD_GATEWAY.into_response()
    }

    let lb = Arc::new(Lb {
        ports,
        next: AtomicUsize::new(0),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(forward).with_state(lb);
    // Ends with the runtime, at the end of the run.
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}
