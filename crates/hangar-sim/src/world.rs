//! The simulated outside world: GitHub (jobs, workflow runs, runners, the
//! repository's webhook and its delivery log) and the providers' VMs, in
//! one state behind one lock, told time by tokio's paused clock.
//!
//! GitHub is modelled on what Hangar relies on: a JIT runner is registered
//! offline, comes online when its VM has booted, and then takes the oldest
//! queued job whose labels are all among its own — not necessarily the job
//! it was made for, so jobs steal each other's runners as they do on
//! GitHub; an ephemeral runner leaves GitHub when its job ends. Every job
//! event becomes a webhook delivery that may be lost (recorded as a failed
//! attempt, to be redelivered on request), duplicated, held back or
//! reordered. Random draws that depend only on the traffic come from the
//! world's own seeded stream, taken in a fixed order; draws made when the
//! scheduler calls a provider come from that provider's own stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hangar_core::forge::{
    DeliveryPage, ForgeDelivery, ForgeHook, ForgeJob, ForgeRunner, HookRef, JitConfig, JitRequest,
    NewHook, RegistrationToken,
};
use hangar_core::provider::{
    CreateInstanceRequest, InstanceRef, ProviderInstance, ProviderInstanceStatus, RunnerTool,
};
use hangar_core::{
    ControllerId, Forge, ForgeError, ForgeJobStatus, ForgeTarget, JobAction, JobId, Labels, PoolId,
    PoolSpec as CorePoolSpec, Provider, ProviderError, Secret,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::scenario::{Deliveries, FailureKind, ProviderSpec};

/// Where a job is on GitHub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    InProgress,
    Completed,
}

#[derive(Debug, Clone)]
pub struct SimJob {
    pub id: i64,
    pub run_id: i64,
    pub labels: Labels,
    pub queued_ms: u64,
    pub run_ms: u64,
    pub state: JobState,
    pub runner: Option<String>,
    pub started_ms: Option<u64>,
    pub conclusion: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SimRunner {
    pub id: i64,
    pub name: String,
    pub labels: Labels,
    /// The pool (scenario index) named by its `hangar-pool-id` label.
    pub pool: Option<usize>,
    pub online_ms: Option<u64>,
    pub job: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct SimVm {
    pub provider: usize,
    pub provider_id: String,
    pub name: String,
    pub controller_id: ControllerId,
    pub pool_id: PoolId,
    pub created_ms: u64,
    /// The runner on it ran its one job (or its VM lost it).
    pub done: bool,
}

/// A delivery not yet attempted.
#[derive(Debug, Clone)]
pub struct Planned {
    pub guid: String,
    pub job: usize,
    pub action: JobAction,
    pub runner: Option<String>,
    pub conclusion: Option<String>,
    pub fate: Fate,
    pub redelivery: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    /// The attempt fails; `status_code` is what GitHub records.
    Lost {
        status_code: i64,
    },
}

/// Something due at a virtual instant.
#[derive(Debug, Clone)]
pub enum Due {
    Deliver(Planned),
    /// A VM's runner comes online.
    Boot(String),
    /// A job's work is done.
    Complete(usize),
}

/// A delivery attempt ready for Hangar's intake.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivery_id: i64,
    pub job: usize,
    pub action: JobAction,
    pub runner: Option<String>,
    pub conclusion: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct ProviderCounts {
    pub creates: u64,
    pub create_failures: u64,
    pub deletes: u64,
    pub delete_failures: u64,
}

#[derive(Debug, Default, Clone)]
pub struct FaultCounts {
    pub deliveries: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub late: u64,
    pub reordered: u64,
    pub redelivered: u64,
}

#[derive(Debug)]
pub struct ProviderState {
    pub spec: ProviderSpec,
    pub counts: ProviderCounts,
}

/// What a provider call will do, drawn when the driver resolves it.
#[derive(Debug, Clone, Copy)]
pub struct Draw {
    pub latency: Duration,
    pub fails: bool,
    pub boot: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Create,
    Delete,
}

/// A provider call waiting for its draw. Calls that arrive within one
/// step are resolved together, sorted by provider, pool, kind and
/// instance name — the order the store breaks ties in — so the draws do
/// not depend on which task the runtime happened to poll first.
#[derive(Debug)]
struct PendingDraw {
    provider: usize,
    pool: usize,
    op: Op,
    name: String,
    tx: tokio::sync::oneshot::Sender<Draw>,
}

#[derive(Debug)]
pub struct World {
    start: tokio::time::Instant,
    /// Hangar's clock at `start`.
    epoch: DateTime<Utc>,
    rng: StdRng,
    faults: Deliveries,
    pub repository: String,
    pub jobs: Vec<SimJob>,
    /// Jobs queued on GitHub: (queued at, index).
    queued: BTreeSet<(u64, usize)>,
    pub runners: BTreeMap<i64, SimRunner>,
    next_runner_id: i64,
    /// The pools' ids, in scenario order.
    pub pool_ids: Vec<PoolId>,
    pub vms: BTreeMap<String, SimVm>,
    next_vm_id: u64,
    pub providers: Vec<ProviderState>,
    seed: u64,
    /// One random stream per provider and pool.
    streams: BTreeMap<(usize, usize), StdRng>,
    pending_draws: Vec<PendingDraw>,
    due: BTreeMap<(u64, u64), Due>,
    seq: u64,
    next_guid: u64,
    /// Every delivery attempt, oldest first (id = index + 1).
    deliveries: Vec<ForgeDelivery>,
    /// Attempt id → the planned delivery, for redelivery.
    delivery_plans: BTreeMap<i64, Planned>,
    hooks: BTreeMap<i64, ForgeHook>,
    next_hook_id: i64,
    pub calls: BTreeMap<&'static str, u64>,
    /// Bumped by every call into the world: the driver's sign that the
    /// scheduler is still moving.
    pub activity: u64,
    pub faults_seen: FaultCounts,
    /// Jobs that were ever stranded (see [`World::mark_stranded`]).
    pub stranded: BTreeSet<usize>,
    /// VM lifetimes that ended: (pool index, created, deleted) in ms.
    pub vm_spans: Vec<(usize, u64, u64)>,
}

impl World {
    pub fn new(seed: u64, faults: Deliveries, providers: &[ProviderSpec]) -> Self {
        let providers = providers
            .iter()
            .map(|spec| ProviderState {
                spec: spec.clone(),
                counts: ProviderCounts::default(),
            })
            .collect();
        Self {
            start: tokio::time::Instant::now(),
            epoch: hangar_store::clock::now(),
            rng: StdRng::seed_from_u64(seed),
            faults,
            repository: "octo/app".into(),
            jobs: Vec::new(),
            queued: BTreeSet::new(),
            runners: BTreeMap::new(),
            next_runner_id: 1000,
            pool_ids: Vec::new(),
            vms: BTreeMap::new(),
            next_vm_id: 0,
            providers,
            seed,
            streams: BTreeMap::new(),
            pending_draws: Vec::new(),
            due: BTreeMap::new(),
            seq: 0,
            next_guid: 0,
            deliveries: Vec::new(),
            delivery_plans: BTreeMap::new(),
            hooks: BTreeMap::new(),
            next_hook_id: 1,
            calls: BTreeMap::new(),
            activity: 0,
            faults_seen: FaultCounts::default(),
            stranded: BTreeSet::new(),
            vm_spans: Vec::new(),
        }
    }

    /// Virtual milliseconds since the simulation started.
    pub fn now_ms(&self) -> u64 {
        tokio::time::Instant::now()
            .duration_since(self.start)
            .as_millis() as u64
    }

    fn at(&self, ms: u64) -> DateTime<Utc> {
        self.epoch + chrono::Duration::milliseconds(ms as i64)
    }

    /// The world's own random stream (traffic and delivery faults).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    fn count(&mut self, op: &'static str) {
        self.activity += 1;
        *self.calls.entry(op).or_default() += 1;
    }

    pub fn schedule(&mut self, at_ms: u64, what: Due) {
        self.seq += 1;
        self.due.insert((at_ms, self.seq), what);
    }

    /// Takes the next thing due by `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<Due> {
        let key = *self.due.keys().next()?;
        if key.0 > now {
            return None;
        }
        self.due.remove(&key)
    }

    pub fn add_hook(&mut self, url: String) {
        let id = self.next_hook_id;
        self.next_hook_id += 1;
        self.hooks.insert(
            id,
            ForgeHook {
                id,
                url,
                events: vec!["workflow_job".into()],
                active: true,
                insecure_ssl: false,
            },
        );
    }

    /// A job is queued on GitHub (a workflow run of one job) and its
    /// `queued` event sent.
    pub fn queue_job(&mut self, labels: Labels, run_ms: u64) -> usize {
        let now = self.now_ms();
        let idx = self.jobs.len();
        self.jobs.push(SimJob {
            // Above 2^31, as GitHub's job ids are.
            id: 30_000_000_000 + idx as i64,
            run_id: 9_000_000_000 + idx as i64,
            labels,
            queued_ms: now,
            run_ms,
            state: JobState::Queued,
            runner: None,
            started_ms: None,
            conclusion: None,
        });
        self.queued.insert((now, idx));
        self.send(idx, JobAction::Queued);
        idx
    }

    /// Plans the webhook delivery of a job event, with its faults.
    fn send(&mut self, job: usize, action: JobAction) {
        let now = self.now_ms();
        let f = self.faults.clone();
        self.next_guid += 1;
        let guid = format!("00000000-0000-4000-8000-{:012x}", self.next_guid);
        let j = &self.jobs[job];
        let (runner, conclusion) = match action {
            JobAction::Queued | JobAction::Waiting => (None, None),
            JobAction::InProgress => (j.runner.clone(), None),
            JobAction::Completed => (j.runner.clone(), j.conclusion.clone()),
        };
        let mut delay = f.latency_secs.sample(&mut self.rng);
        let roll: f64 = self.rng.r#gen();
        let mut fate = Fate::Delivered;
        let mut duplicate = false;
        self.faults_seen.deliveries += 1;
        if roll < f.lost {
            let code = [0, 502, 503, 504][self.rng.gen_range(0..4)];
            fate = Fate::Lost { status_code: code };
            self.faults_seen.lost += 1;
        } else if roll < f.lost + f.duplicated {
            duplicate = true;
            self.faults_seen.duplicated += 1;
        } else if roll < f.lost + f.duplicated + f.late {
            delay += f.late_secs.sample(&mut self.rng);
            self.faults_seen.late += 1;
        }
        if self.rng.r#gen::<f64>() < f.reordered {
            delay += f.reorder_secs.sample(&mut self.rng);
            self.faults_seen.reordered += 1;
        }
        let plan = Planned {
            guid,
            job,
            action,
            runner,
            conclusion,
            fate,
            redelivery: false,
        };
        let at = now + (delay * 1000.0) as u64;
        if duplicate {
            let again = at + self.rng.gen_range(1_000..10_000);
            self.schedule(again, Due::Deliver(plan.clone()));
        }
        self.schedule(at, Due::Deliver(plan));
    }

    /// Records an attempt in the hook's delivery log. Failed attempts get
    /// their status now; delivered ones once intake answered.
    pub fn attempt(&mut self, plan: Planned) -> Option<Attempt> {
        let now = self.now_ms();
        let id = self.deliveries.len() as i64 + 1;
        let status_code = match plan.fate {
            Fate::Lost { status_code } => status_code,
            Fate::Delivered => 0,
        };
        self.deliveries.push(ForgeDelivery {
            id,
            guid: plan.guid.clone(),
            delivered_at: self.at(now),
            redelivery: plan.redelivery,
            status_code,
            event: "workflow_job".into(),
            action: Some(plan.action.as_str().to_owned()),
        });
        self.delivery_plans.insert(id, plan.clone());
        match plan.fate {
            Fate::Lost { .. } => None,
            Fate::Delivered => Some(Attempt {
                delivery_id: id,
                job: plan.job,
                action: plan.action,
                runner: plan.runner,
                conclusion: plan.conclusion,
            }),
        }
    }

    /// What hangard answered to a delivery.
    pub fn answered(&mut self, delivery_id: i64, status_code: i64) {
        if let Some(d) = self.deliveries.get_mut(delivery_id as usize - 1) {
            d.status_code = status_code;
        }
    }

    /// Idle online runners take the oldest queued jobs that fit them, in
    /// a fixed order (online time, pool, id).
    pub fn match_runners(&mut self) {
        let now = self.now_ms();
        // Ties go by name, as the store breaks them, not by runner id
        // (registration order within a step is up to the runtime).
        let mut idle: Vec<(u64, usize, String, i64)> = self
            .runners
            .values()
            .filter(|r| r.job.is_none() && r.online_ms.is_some())
            .map(|r| {
                (
                    r.online_ms.unwrap_or(0),
                    r.pool.unwrap_or(usize::MAX),
                    r.name.clone(),
                    r.id,
                )
            })
            .collect();
        idle.sort();
        for (_, _, _, rid) in idle {
            if self.queued.is_empty() {
                break;
            }
            let labels = self.runners[&rid].labels.clone();
            let Some(&(q, job)) = self
                .queued
                .iter()
                .find(|(_, j)| self.jobs[*j].labels.is_subset_of(&labels))
            else {
                continue;
            };
            self.queued.remove(&(q, job));
            let name = self.runners[&rid].name.clone();
            if let Some(r) = self.runners.get_mut(&rid) {
                r.job = Some(job);
            }
            let j = &mut self.jobs[job];
            j.state = JobState::InProgress;
            j.runner = Some(name);
            j.started_ms = Some(now);
            let done = now + j.run_ms;
            self.schedule(done, Due::Complete(job));
            self.send(job, JobAction::InProgress);
        }
    }

    /// A job's work ends: it completes, and its ephemeral runner leaves
    /// GitHub.
    pub fn complete(&mut self, job: usize, conclusion: &str) {
        if self.jobs[job].state != JobState::InProgress {
            return;
        }
        let j = &mut self.jobs[job];
        j.state = JobState::Completed;
        j.conclusion = Some(conclusion.to_owned());
        let name = j.runner.clone();
        self.runners.retain(|_, r| r.job != Some(job));
        if let Some(vm) = name.and_then(|n| self.vms.get_mut(&n)) {
            vm.done = true;
        }
        self.send(job, JobAction::Completed);
    }

    /// A VM has booted: its runner comes online if it is still registered.
    /// Returns the runner's (instance) name when it did.
    pub fn boot(&mut self, vm: &str) -> Option<String> {
        let now = self.now_ms();
        if !self.vms.contains_key(vm) {
            return None;
        }
        let r = self
            .runners
            .values_mut()
            .find(|r| r.name == vm && r.online_ms.is_none())?;
        r.online_ms = Some(now);
        Some(r.name.clone())
    }

    /// Gives every provider call of this step its draw (see
    /// [`PendingDraw`]); returns how many there were.
    pub fn resolve_draws(&mut self) -> usize {
        let mut pending = std::mem::take(&mut self.pending_draws);
        pending.sort_by(|a, b| {
            (a.provider, a.pool, a.op, &a.name).cmp(&(b.provider, b.pool, b.op, &b.name))
        });
        let n = pending.len();
        for p in pending {
            let seed = self.seed
                ^ 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(p.provider as u64 + 1)
                ^ 0xc2b2_ae3d_27d4_eb4fu64.wrapping_mul(p.pool as u64 + 1);
            let rng = self
                .streams
                .entry((p.provider, p.pool))
                .or_insert_with(|| StdRng::seed_from_u64(seed));
            let spec = &self.providers[p.provider].spec;
            let draw = match p.op {
                Op::Create => Draw {
                    latency: secs(spec.create_secs.sample(rng)),
                    fails: rng.r#gen::<f64>() < spec.create_failure,
                    boot: spec.boot_secs.sample(rng),
                },
                Op::Delete => Draw {
                    latency: secs(spec.delete_secs.sample(rng)),
                    fails: rng.r#gen::<f64>() < spec.delete_failure,
                    boot: 0.0,
                },
            };
            let _ = p.tx.send(draw);
        }
        n
    }

    fn pool_of(&self, labels: &Labels) -> Option<usize> {
        labels.iter().find_map(|l| {
            let id = l.as_str().strip_prefix("hangar-pool-id:")?;
            self.pool_ids.iter().position(|p| p.to_string() == id)
        })
    }

    fn forge_job(&self, idx: usize) -> ForgeJob {
        let j = &self.jobs[idx];
        ForgeJob {
            id: JobId(j.id),
            run_attempt: Some(1),
            status: match j.state {
                JobState::Queued => ForgeJobStatus::Queued,
                JobState::InProgress => ForgeJobStatus::InProgress,
                JobState::Completed => ForgeJobStatus::Completed,
            },
            conclusion: j.conclusion.clone(),
            labels: j.labels.to_vec(),
            runner_name: j.runner.clone(),
            run_id: Some(j.run_id),
            name: Some("build".into()),
            created_at: Some(self.at(j.queued_ms)),
        }
    }

    fn job_index(&self, id: i64) -> Option<usize> {
        let idx = usize::try_from(id - 30_000_000_000).ok()?;
        (idx < self.jobs.len()).then_some(idx)
    }

    fn run_index(&self, run_id: i64) -> Option<usize> {
        let idx = usize::try_from(run_id - 9_000_000_000).ok()?;
        (idx < self.jobs.len()).then_some(idx)
    }

    /// Marks every job queued for at least `threshold_ms` with no free
    /// registered runner (idle, or on a VM still coming up) whose labels
    /// fit it: stranded, whether or not something rescues it later.
    pub fn mark_stranded(&mut self, threshold_ms: u64) {
        let now = self.now_ms();
        let mut free: Vec<&Labels> = Vec::new();
        for r in self.runners.values().filter(|r| r.job.is_none()) {
            if !free.contains(&&r.labels) {
                free.push(&r.labels);
            }
        }
        let newly: Vec<usize> = self
            .queued
            .iter()
            .take_while(|(q, _)| now.saturating_sub(*q) >= threshold_ms)
            .map(|(_, j)| *j)
            .filter(|j| !free.iter().any(|l| self.jobs[*j].labels.is_subset_of(l)))
            .collect();
        self.stranded.extend(newly);
    }

    /// Jobs still queued on GitHub, oldest first.
    pub fn queued_jobs(&self) -> impl Iterator<Item = usize> + '_ {
        self.queued.iter().map(|(_, j)| *j)
    }

    /// Removes a VM (provider delete, or lost); a runner still on it goes
    /// offline for good, and a job it was running fails.
    fn remove_vm(&mut self, name: &str) -> bool {
        let now = self.now_ms();
        let Some(vm) = self.vms.remove(name) else {
            return false;
        };
        if let Some(pool) = self.pool_ids.iter().position(|p| *p == vm.pool_id) {
            self.vm_spans.push((pool, vm.created_ms, now));
        }
        let running = self
            .runners
            .values()
            .find(|r| r.name == name)
            .and_then(|r| r.job);
        if let Some(job) = running {
            self.complete(job, "failure");
        }
        for r in self.runners.values_mut().filter(|r| r.name == name) {
            // Registered still, but nothing will ever run it.
            r.online_ms = None;
        }
        true
    }
}

/// The world, shared by the simulated GitHub, providers and the driver.
#[derive(Debug, Clone)]
pub struct Shared(pub Arc<Mutex<World>>);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.0.lock().expect("world lock")
    }
}

/// GitHub, as the scheduler reaches it through [`Forge`].
#[derive(Debug, Clone)]
pub struct SimGitHub(pub Shared);

#[async_trait]
impl Forge for SimGitHub {
    async fn generate_jit_config(
        &self,
        _target: &ForgeTarget,
        req: &JitRequest,
    ) -> Result<JitConfig, ForgeError> {
        let mut w = self.0.lock();
        w.count("generate_jit_config");
        if w.runners.values().any(|r| r.name == req.name) {
            return Err(ForgeError::AlreadyExists(format!(
                "a runner named {} exists",
                req.name
            )));
        }
        let labels = Labels::from_strs(&req.labels)
            .map_err(|e| ForgeError::Fatal(format!("invalid labels: {e}")))?;
        w.next_runner_id += 1;
        let id = w.next_runner_id;
        let pool = w.pool_of(&labels);
        w.runners.insert(
            id,
            SimRunner {
                id,
                name: req.name.clone(),
                labels,
                pool,
                online_ms: None,
                job: None,
            },
        );
        Ok(JitConfig {
            runner_id: id,
            runner_name: req.name.clone(),
            encoded_jit_config: Secret::new(format!("jit-{id}")),
        })
    }

    async fn registration_token(
        &self,
        _target: &ForgeTarget,
    ) -> Result<RegistrationToken, ForgeError> {
        let mut w = self.0.lock();
        w.count("registration_token");
        let expires_at = w.at(w.now_ms()) + chrono::Duration::hours(1);
        Ok(RegistrationToken {
            token: Secret::new("registration-token"),
            expires_at,
        })
    }

    async fn list_runners(&self, _target: &ForgeTarget) -> Result<Vec<ForgeRunner>, ForgeError> {
        let mut w = self.0.lock();
        w.count("list_runners");
        Ok(w.runners
            .values()
            .map(|r| ForgeRunner {
                id: r.id,
                name: r.name.clone(),
                status: if r.online_ms.is_some() {
                    "online"
                } else {
                    "offline"
                }
                .into(),
                busy: r.job.is_some(),
                labels: r.labels.to_vec(),
            })
            .collect())
    }

    async fn delete_runner(&self, _target: &ForgeTarget, runner_id: i64) -> Result<(), ForgeError> {
        let mut w = self.0.lock();
        w.count("delete_runner");
        match w.runners.get(&runner_id) {
            Some(r) if r.job.is_some() => Err(ForgeError::Busy(format!(
                "runner {} is running a job",
                r.name
            ))),
            _ => {
                w.runners.remove(&runner_id);
                Ok(())
            }
        }
    }

    async fn get_job(
        &self,
        _target: &ForgeTarget,
        repository: &str,
        job_id: JobId,
    ) -> Result<Option<ForgeJob>, ForgeError> {
        let mut w = self.0.lock();
        w.count("get_job");
        if repository != w.repository {
            return Ok(None);
        }
        Ok(w.job_index(job_id.0).map(|i| w.forge_job(i)))
    }

    async fn runner_group_id(
        &self,
        _target: &ForgeTarget,
        name: Option<&str>,
    ) -> Result<i64, ForgeError> {
        let mut w = self.0.lock();
        w.count("runner_group_id");
        match name {
            None | Some("Default") => Ok(1),
            Some(other) => Err(ForgeError::NotFound(format!("runner group {other}"))),
        }
    }

    async fn runner_downloads(&self, _target: &ForgeTarget) -> Result<Vec<RunnerTool>, ForgeError> {
        self.0.lock().count("runner_downloads");
        Ok(Vec::new())
    }

    async fn list_hooks(&self, _target: &ForgeTarget) -> Result<Vec<ForgeHook>, ForgeError> {
        let mut w = self.0.lock();
        w.count("list_hooks");
        Ok(w.hooks.values().cloned().collect())
    }

    async fn create_hook(
        &self,
        _target: &ForgeTarget,
        hook: &NewHook,
    ) -> Result<ForgeHook, ForgeError> {
        let mut w = self.0.lock();
        w.count("create_hook");
        if w.hooks.values().any(|h| h.url == hook.url) {
            return Err(ForgeError::AlreadyExists(format!(
                "a hook to {} exists",
                hook.url
            )));
        }
        w.add_hook(hook.url.clone());
        Ok(w.hooks.values().next_back().cloned().expect("just added"))
    }

    async fn delete_hook(&self, _target: &ForgeTarget, hook_id: i64) -> Result<(), ForgeError> {
        let mut w = self.0.lock();
        w.count("delete_hook");
        w.hooks.remove(&hook_id);
        Ok(())
    }

    async fn list_hook_deliveries(
        &self,
        _target: &ForgeTarget,
        hook: HookRef,
        cursor: Option<&str>,
        per_page: u32,
    ) -> Result<DeliveryPage, ForgeError> {
        let mut w = self.0.lock();
        w.count("list_hook_deliveries");
        match hook {
            HookRef::Entity { hook_id } if w.hooks.contains_key(&hook_id) => {}
            HookRef::Entity { hook_id } => {
                return Err(ForgeError::NotFound(format!("hook {hook_id}")));
            }
            HookRef::App => {
                return Err(ForgeError::NotFound(
                    "this repository is not served by a GitHub App".into(),
                ));
            }
        }
        // The cursor is the id of the last delivery of the previous page.
        let before = match cursor {
            None => i64::MAX,
            Some(c) => c
                .parse::<i64>()
                .map_err(|_| ForgeError::Fatal(format!("invalid cursor {c:?}")))?,
        };
        let per_page = per_page.clamp(1, 100) as usize;
        let mut page: Vec<ForgeDelivery> = w
            .deliveries
            .iter()
            .rev()
            .filter(|d| d.id < before)
            .take(per_page + 1)
            .cloned()
            .collect();
        let more = page.len() > per_page;
        page.truncate(per_page);
        let next_cursor = more
            .then(|| page.last().map(|d| d.id.to_string()))
            .flatten();
        Ok(DeliveryPage {
            deliveries: page,
            next_cursor,
        })
    }

    async fn redeliver(
        &self,
        _target: &ForgeTarget,
        hook: HookRef,
        delivery_id: i64,
    ) -> Result<(), ForgeError> {
        let mut w = self.0.lock();
        w.count("redeliver");
        if let HookRef::Entity { hook_id } = hook
            && !w.hooks.contains_key(&hook_id)
        {
            return Err(ForgeError::NotFound(format!("hook {hook_id}")));
        }
        let Some(plan) = w.delivery_plans.get(&delivery_id).cloned() else {
            return Err(ForgeError::NotFound(format!("delivery {delivery_id}")));
        };
        // A new attempt of the same delivery (same guid and payload), sent
        // at once; hangard is reachable again.
        let now = w.now_ms();
        w.faults_seen.redelivered += 1;
        w.schedule(
            now,
            Due::Deliver(Planned {
                fate: Fate::Delivered,
                redelivery: true,
                ..plan
            }),
        );
        Ok(())
    }

    async fn queued_run_ids(
        &self,
        _target: &ForgeTarget,
        repository: &str,
        limit: u32,
    ) -> Result<Vec<i64>, ForgeError> {
        let mut w = self.0.lock();
        w.count("queued_run_ids");
        if repository != w.repository {
            return Err(ForgeError::NotFound(format!("repository {repository}")));
        }
        // Newest first, as GitHub lists runs; one job per run here.
        let mut runs: Vec<(u64, i64)> = w
            .queued
            .iter()
            .map(|(q, j)| (*q, w.jobs[*j].run_id))
            .collect();
        runs.sort_by(|a, b| b.cmp(a));
        Ok(runs
            .into_iter()
            .take(limit as usize)
            .map(|(_, r)| r)
            .collect())
    }

    async fn run_jobs(
        &self,
        _target: &ForgeTarget,
        repository: &str,
        run_id: i64,
    ) -> Result<Vec<ForgeJob>, ForgeError> {
        let mut w = self.0.lock();
        w.count("run_jobs");
        if repository != w.repository {
            return Err(ForgeError::NotFound(format!("repository {repository}")));
        }
        match w.run_index(run_id) {
            Some(i) => Ok(vec![w.forge_job(i)]),
            None => Err(ForgeError::NotFound(format!("workflow run {run_id}"))),
        }
    }
}

/// A provider whose calls take virtual time drawn from its distributions
/// and fail with its probabilities.
#[derive(Debug, Clone)]
pub struct SimProvider {
    pub world: Shared,
    pub index: usize,
    pub max_concurrency: usize,
}

impl SimProvider {
    /// Waits for the driver to draw this call's latency and fate.
    async fn draw(&self, op: Op, pool_id: PoolId, name: &str) -> Result<Draw, ProviderError> {
        let rx = {
            let mut w = self.world.lock();
            w.activity += 1;
            let pool = w
                .pool_ids
                .iter()
                .position(|p| *p == pool_id)
                .unwrap_or(usize::MAX);
            let (tx, rx) = tokio::sync::oneshot::channel();
            w.pending_draws.push(PendingDraw {
                provider: self.index,
                pool,
                op,
                name: name.to_owned(),
                tx,
            });
            rx
        };
        rx.await
            .map_err(|_| ProviderError::Transient("the simulation has ended".into()))
    }

    fn instance(vm: &SimVm) -> ProviderInstance {
        ProviderInstance {
            provider_id: vm.provider_id.clone(),
            name: vm.name.clone(),
            status: ProviderInstanceStatus::Running,
            controller_id: Some(vm.controller_id),
            pool_id: Some(vm.pool_id),
            addresses: vec!["192.0.2.10".into()],
            os_name: Some("ubuntu".into()),
            os_version: Some("24.04".into()),
            fault: None,
        }
    }

    fn failure(kind: FailureKind, what: &str) -> ProviderError {
        match kind {
            FailureKind::Transient => ProviderError::Transient(format!("{what}: simulated outage")),
            FailureKind::Quota => ProviderError::Quota(format!("{what}: simulated quota")),
            FailureKind::Fatal => ProviderError::Fatal(format!("{what}: simulated failure")),
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_millis((s * 1000.0) as u64)
}

#[async_trait]
impl Provider for SimProvider {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    async fn validate_pool(&self, _spec: &CorePoolSpec) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn create_instance(
        &self,
        req: &CreateInstanceRequest,
    ) -> Result<ProviderInstance, ProviderError> {
        let draw = self
            .draw(Op::Create, req.pool_id, req.name.as_str())
            .await?;
        let (fails, boot) = (draw.fails, draw.boot);
        let kind = self.world.lock().providers[self.index]
            .spec
            .create_failure_kind;
        tokio::time::sleep(draw.latency).await;
        let mut w = self.world.lock();
        w.activity += 1;
        let now = w.now_ms();
        if fails {
            w.providers[self.index].counts.create_failures += 1;
            return Err(Self::failure(kind, "create"));
        }
        if let Some(vm) = w.vms.get(req.name.as_str()) {
            return Ok(Self::instance(vm));
        }
        w.providers[self.index].counts.creates += 1;
        w.next_vm_id += 1;
        let vm = SimVm {
            provider: self.index,
            provider_id: format!("vm-{}", w.next_vm_id),
            name: req.name.to_string(),
            controller_id: req.controller_id,
            pool_id: req.pool_id,
            created_ms: now,
            done: false,
        };
        let out = Self::instance(&vm);
        w.vms.insert(vm.name.clone(), vm);
        w.schedule(
            now + (boot * 1000.0) as u64,
            Due::Boot(req.name.to_string()),
        );
        Ok(out)
    }

    async fn delete_instance(&self, instance: &InstanceRef) -> Result<(), ProviderError> {
        let draw = self
            .draw(Op::Delete, instance.pool_id, instance.name.as_str())
            .await?;
        let fails = draw.fails;
        tokio::time::sleep(draw.latency).await;
        let mut w = self.world.lock();
        w.activity += 1;
        if fails {
            w.providers[self.index].counts.delete_failures += 1;
            return Err(ProviderError::Transient("delete: simulated outage".into()));
        }
        if w.remove_vm(instance.name.as_str()) {
            w.providers[self.index].counts.deletes += 1;
        }
        Ok(())
    }

    async fn get_instance(
        &self,
        instance: &InstanceRef,
    ) -> Result<ProviderInstance, ProviderError> {
        let w = self.world.lock();
        w.vms
            .get(instance.name.as_str())
            .filter(|vm| vm.provider == self.index)
            .map(Self::instance)
            .ok_or_else(|| ProviderError::NotFound(format!("instance {}", instance.name)))
    }

    async fn list_instances(
        &self,
        controller_id: ControllerId,
        pool_id: PoolId,
    ) -> Result<Vec<ProviderInstance>, ProviderError> {
        let w = self.world.lock();
        Ok(w.vms
            .values()
            .filter(|vm| {
                vm.provider == self.index
                    && vm.controller_id == controller_id
                    && vm.pool_id == pool_id
            })
            .map(Self::instance)
            .collect())
    }

    async fn health(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}
