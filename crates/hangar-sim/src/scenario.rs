//! Scenario files (`sim/scenarios/*.toml`): what traffic arrives, what the
//! providers and GitHub's deliveries do, how the scheduler is configured,
//! and the goals a run must meet. The format is documented in
//! `sim/README.md`; unknown keys are refused so a typo cannot silently
//! change a scenario.

use std::path::Path;

use anyhow::{Context, bail};
use hangar_scheduler::SchedulerConfig;
use rand::Rng;
use serde::Deserialize;

/// A scenario as written in its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Defaults to the file's stem.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The seed used when none is given on the command line.
    #[serde(default = "one")]
    pub seed: u64,
    /// Simulated minutes during which jobs arrive.
    pub duration_mins: f64,
    /// Simulated minutes after the last arrival, for the queue to drain.
    #[serde(default = "fifteen")]
    pub drain_mins: f64,
    /// Minutes from the start before "steady state" is measured.
    #[serde(default = "ten")]
    pub warmup_mins: f64,
    /// A job still queued at the end after this long, with no runner
    /// coming that could take it, is stranded.
    #[serde(default = "ten")]
    pub stranded_after_mins: f64,
    /// The step of virtual time, in milliseconds.
    #[serde(default = "hundred")]
    pub tick_ms: u64,
    /// The scheduler's settings (hangard's `[scheduler]` section).
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub deliveries: Deliveries,
    #[serde(rename = "provider")]
    pub providers: Vec<ProviderSpec>,
    #[serde(rename = "pool")]
    pub pools: Vec<PoolSpec>,
    #[serde(rename = "jobs")]
    pub streams: Vec<JobStream>,
    #[serde(default)]
    pub goals: Goals,
}

fn one() -> u64 {
    1
}
fn ten() -> f64 {
    10.0
}
fn fifteen() -> f64 {
    15.0
}
fn hundred() -> u64 {
    100
}
fn eight() -> usize {
    8
}
fn twenty() -> u32 {
    20
}

/// A random quantity, in seconds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dist {
    /// Always this value.
    Fixed(f64),
    /// Evenly between the two.
    Uniform([f64; 2]),
    /// Exponential with this mean.
    Exp(f64),
    /// Log-normal with this median and 95th percentile.
    Lognormal([f64; 2]),
}

impl Dist {
    pub fn sample(&self, rng: &mut impl Rng) -> f64 {
        let v = match *self {
            Dist::Fixed(v) => v,
            Dist::Uniform([a, b]) if b > a => rng.gen_range(a..b),
            Dist::Uniform([a, _]) => a,
            Dist::Exp(mean) => -mean * (1.0 - rng.r#gen::<f64>()).ln(),
            Dist::Lognormal([median, p95]) => {
                let sigma = (p95 / median).ln().max(0.0) / 1.644_853_6;
                median * (sigma * normal(rng)).exp()
            }
        };
        v.max(0.0)
    }

    fn check(&self, what: &str) -> anyhow::Result<()> {
        let ok = match *self {
            Dist::Fixed(v) | Dist::Exp(v) => v >= 0.0 && v.is_finite(),
            Dist::Uniform([a, b]) => a >= 0.0 && b >= a && b.is_finite(),
            Dist::Lognormal([m, p]) => m > 0.0 && p >= m && p.is_finite(),
        };
        if !ok {
            bail!("{what}: {self:?} is not a valid distribution of seconds");
        }
        Ok(())
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.r#gen::<f64>();
    let u2: f64 = rng.r#gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// What happens to GitHub's webhook deliveries. Each delivery (one per
/// `queued`, `in_progress` and `completed` event) meets at most one of
/// lost, duplicated and late; reordering jitter comes on top.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Deliveries {
    /// The usual time from event to delivery.
    pub latency_secs: Dist,
    /// Probability a delivery fails (hangard unreachable): GitHub records
    /// the attempt with status 0 or a 5xx and does not retry on its own.
    pub lost: f64,
    /// Probability a delivery arrives twice (the second a few seconds on).
    pub duplicated: f64,
    /// Probability a delivery is held back by `late_secs`.
    pub late: f64,
    pub late_secs: Dist,
    /// Probability a delivery is delayed by `reorder_secs` on top, so it
    /// may overtake or be overtaken by its job's other events.
    pub reordered: f64,
    pub reorder_secs: Dist,
}

impl Default for Deliveries {
    fn default() -> Self {
        Self {
            latency_secs: Dist::Uniform([0.2, 1.5]),
            lost: 0.0,
            duplicated: 0.0,
            late: 0.0,
            late_secs: Dist::Fixed(600.0),
            reordered: 0.0,
            reorder_secs: Dist::Uniform([0.0, 30.0]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    Transient,
    Quota,
    Fatal,
}

/// A simulated provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    pub name: String,
    /// How long a create call takes.
    pub create_secs: Dist,
    /// How long a delete call takes.
    pub delete_secs: Dist,
    /// From a successful create until the runner is online on GitHub.
    pub boot_secs: Dist,
    /// Probability a create fails (after its latency).
    #[serde(default)]
    pub create_failure: f64,
    #[serde(default = "transient")]
    pub create_failure_kind: FailureKind,
    /// Probability a delete fails (after its latency).
    #[serde(default)]
    pub delete_failure: f64,
    #[serde(default = "eight")]
    pub max_concurrency: usize,
}

fn transient() -> FailureKind {
    FailureKind::Transient
}

/// A pool, as an operator would create it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    pub provider: String,
    pub tags: Vec<String>,
    #[serde(default)]
    pub min_idle_runners: u32,
    pub max_runners: u32,
    #[serde(default = "twenty")]
    pub bootstrap_timeout_mins: u32,
    #[serde(default)]
    pub priority: u32,
}

/// A stream of jobs asking for `labels`: Poisson arrivals at `per_min`,
/// plus bursts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobStream {
    pub labels: Vec<String>,
    #[serde(default)]
    pub per_min: f64,
    #[serde(default)]
    pub bursts: Vec<Burst>,
    /// How long each job runs once a runner took it.
    pub run_secs: Dist,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    pub at_min: f64,
    pub jobs: u32,
    /// The burst's jobs arrive evenly over this many seconds.
    #[serde(default)]
    pub spread_secs: f64,
}

/// What a run must achieve; each is checked when given.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goals {
    pub max_stranded: Option<u64>,
    /// Mean surplus VMs (beyond `min_idle_runners` and the queue) of the
    /// worst pool after warm-up, while jobs arrive.
    pub max_steady_surplus_vms_per_pool: Option<f64>,
    pub max_time_to_runner_p95_secs: Option<f64>,
    /// The longest any served job waited.
    pub max_time_to_runner_max_secs: Option<f64>,
    /// Served jobs / all jobs.
    pub min_served_fraction: Option<f64>,
    pub max_github_calls_per_job: Option<f64>,
}

impl Scenario {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        let mut s: Scenario = toml::from_str(&text)
            .with_context(|| format!("scenario {} is not valid", path.display()))?;
        if s.name.is_empty() {
            s.name = path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        s.check()
            .with_context(|| format!("scenario {} is not valid", path.display()))?;
        Ok(s)
    }

    pub fn parse(name: &str, text: &str) -> anyhow::Result<Self> {
        let mut s: Scenario = toml::from_str(text)?;
        if s.name.is_empty() {
            s.name = name.to_owned();
        }
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> anyhow::Result<()> {
        if !(self.duration_mins > 0.0 && self.duration_mins <= 24.0 * 60.0) {
            bail!("duration_mins must be in (0, 1440]");
        }
        if self.drain_mins < 0.0 || self.warmup_mins < 0.0 || self.stranded_after_mins <= 0.0 {
            bail!("drain_mins and warmup_mins must be >= 0, stranded_after_mins > 0");
        }
        if !(1..=60_000).contains(&self.tick_ms) {
            bail!("tick_ms must be in [1, 60000]");
        }
        self.scheduler
            .validate()
            .map_err(|e| anyhow::anyhow!("[scheduler]: {e}"))?;
        let d = &self.deliveries;
        for (what, p) in [
            ("deliveries.lost", d.lost),
            ("deliveries.duplicated", d.duplicated),
            ("deliveries.late", d.late),
            ("deliveries.reordered", d.reordered),
        ] {
            if !(0.0..=1.0).contains(&p) {
                bail!("{what} must be a probability in [0, 1]");
            }
        }
        if d.lost + d.duplicated + d.late > 1.0 {
            bail!("deliveries.lost + duplicated + late must not exceed 1");
        }
        d.latency_secs.check("deliveries.latency_secs")?;
        d.late_secs.check("deliveries.late_secs")?;
        d.reorder_secs.check("deliveries.reorder_secs")?;
        if self.providers.is_empty() || self.pools.is_empty() || self.streams.is_empty() {
            bail!("a scenario needs at least one [[provider]], [[pool]] and [[jobs]]");
        }
        for p in &self.providers {
            p.create_secs
                .check(&format!("provider {}: create_secs", p.name))?;
            p.delete_secs
                .check(&format!("provider {}: delete_secs", p.name))?;
            p.boot_secs
                .check(&format!("provider {}: boot_secs", p.name))?;
            if !(0.0..=1.0).contains(&p.create_failure) || !(0.0..=1.0).contains(&p.delete_failure)
            {
                bail!("provider {}: failure rates must be in [0, 1]", p.name);
            }
            if p.max_concurrency == 0 {
                bail!("provider {}: max_concurrency must be at least 1", p.name);
            }
            if self.providers.iter().filter(|q| q.name == p.name).count() > 1 {
                bail!("provider {} is defined twice", p.name);
            }
        }
        for pool in &self.pools {
            if !self.providers.iter().any(|p| p.name == pool.provider) {
                bail!(
                    "pool {}: provider {:?} is not defined",
                    pool.name,
                    pool.provider
                );
            }
            if self.pools.iter().filter(|q| q.name == pool.name).count() > 1 {
                bail!("pool {} is defined twice", pool.name);
            }
        }
        for s in &self.streams {
            s.run_secs.check("jobs.run_secs")?;
            if s.labels.is_empty() {
                bail!("every [[jobs]] stream needs labels");
            }
            if !(s.per_min >= 0.0 && s.per_min.is_finite()) {
                bail!("jobs.per_min must be >= 0");
            }
            for b in &s.bursts {
                if b.at_min < 0.0 || b.at_min > self.duration_mins || b.spread_secs < 0.0 {
                    bail!("a burst must fall within duration_mins");
                }
            }
        }
        Ok(())
    }
}
