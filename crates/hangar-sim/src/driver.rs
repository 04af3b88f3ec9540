//! Runs one scenario: the real scheduler (its run loop, intake writer and
//! sweep) over a real SQLite store, against the simulated world, under
//! tokio's paused clock moved in fixed steps by this driver alone.
//!
//! Time only moves when the driver says so: a blocking task held for the
//! whole run keeps tokio from auto-advancing its paused clock (it would
//! otherwise jump to the next timer whenever the runtime waits on SQLite's
//! connection thread). Each step the driver hands the world's due events
//! to the scheduler — deliveries through [`Intake`], as the webhook
//! handler does; runner status as the instance callback does — then waits
//! until no query is in flight and nothing else runs, samples, and moves
//! the clock one step. Timers inside a step (provider latencies, retries,
//! the reconcile gap) fire at the step that reaches them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_core::matching::{PoolCandidate, can_serve, rank_pools};
use hangar_core::{
    Credentials, CredentialsAuth, Endpoint, EntityScope, InstanceName, JobId, Labels, OsArch,
    OsType, Pool, PoolSpec, ResourceName, RunnerPrefix, RunnerStatus, Secret,
};
use hangar_scheduler::{Intake, Metrics, Providers, Scheduler, SchedulerDeps, SharedUrls, Urls};
use hangar_store::{Change, JobEvent, JobOutcome, NewEntity, Store, StoreOptions};
use rand::Rng;

use crate::report::{Report, percentile};
use crate::scenario::Scenario;
use crate::world::{Attempt, Due, JobState, Shared, SimGitHub, SimProvider, World};

/// Runs `scenario` with `seed` on a fresh paused-clock runtime.
pub fn run(scenario: &Scenario, seed: u64) -> anyhow::Result<Report> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    let started = std::time::Instant::now();
    let mut report = rt.block_on(simulate(scenario, seed))?;
    rt.shutdown_background();
    report.wall = started.elapsed();
    Ok(report)
}

/// One job arrival, generated up front from the world's stream.
struct Arrival {
    at_ms: u64,
    labels: Labels,
    run_ms: u64,
}

fn arrivals(s: &Scenario, rng: &mut impl Rng) -> anyhow::Result<Vec<Arrival>> {
    let end = s.duration_mins * 60.0;
    let mut out = Vec::new();
    for stream in &s.streams {
        let labels =
            Labels::from_strs(&stream.labels).map_err(|e| anyhow::anyhow!("jobs.labels: {e}"))?;
        let mut times = Vec::new();
        if stream.per_min > 0.0 {
            let mean = 60.0 / stream.per_min;
            let mut t = 0.0;
            loop {
                t += -mean * (1.0 - rng.r#gen::<f64>()).ln();
                if t >= end {
                    break;
                }
                times.push(t);
            }
        }
        for b in &stream.bursts {
            for k in 0..b.jobs {
                let spread = if b.jobs > 1 {
                    b.spread_secs * f64::from(k) / f64::from(b.jobs - 1)
                } else {
                    0.0
                };
                times.push(b.at_min * 60.0 + spread);
            }
        }
        for t in times {
            out.push(Arrival {
                at_ms: (t * 1000.0) as u64,
                labels: labels.clone(),
                run_ms: (stream.run_secs.sample(rng) * 1000.0) as u64,
            });
        }
    }
    // Stable: equal times keep stream order.
    out.sort_by_key(|a| a.at_ms);
    Ok(out)
}

/// Moves the paused clock so Hangar's clock sits half-way between two
/// milliseconds: the store keeps milliseconds, and this keeps the
/// rounding of every timestamp the same from run to run.
async fn align_clock() {
    let frac = i64::from(hangar_store::clock::now().timestamp_subsec_nanos() % 1_000_000);
    let by = (500_000 - frac).rem_euclid(1_000_000);
    tokio::time::advance(Duration::from_nanos(by as u64)).await;
}

/// Waits until no query is in flight and three passes of the runtime in a
/// row found nothing to do.
async fn settle(store: &Store, world: &Shared) {
    let started = std::time::Instant::now();
    let mut calm = 0;
    let mut seen = world.lock().activity;
    while calm < 8 {
        tokio::task::yield_now().await;
        let now = world.lock().activity;
        if store.connections_in_use() == 0 && now == seen {
            calm += 1;
        } else {
            calm = 0;
            seen = now;
            // Let SQLite's threads run on a busy machine.
            std::thread::yield_now();
        }
        if started.elapsed() > Duration::from_secs(60) {
            eprintln!("hangar-sim: the scheduler did not come to rest within 60 s of real time");
            return;
        }
    }
}

/// Settles, hands out the draws of the provider calls made meanwhile, and
/// settles again until no call waits for one.
async fn quiesce(store: &Store, world: &Shared) {
    settle(store, world).await;
    while world.lock().resolve_draws() > 0 {
        settle(store, world).await;
    }
}

struct Setup {
    store: Store,
    scheduler: Scheduler,
    intake: Intake,
    entity: hangar_core::Entity,
    pools: Vec<Pool>,
    _dir: tempfile::TempDir,
}

async fn setup(s: &Scenario, world: &Shared) -> anyhow::Result<Setup> {
    let dir = tempfile::tempdir()?;
    let mut opts = StoreOptions::new(
        format!("sqlite://{}", dir.path().join("hangar.db").display()),
        Secret::new("the simulation's passphrase, long enough"),
    );
    // Losing the database on power loss does not matter here.
    opts.synchronous_full = false;
    // One reader: queries then answer in the order they were asked, which
    // keeps the interleaving of the scheduler's tasks the same from run to
    // run far more often.
    opts.readers = 1;
    opts.acquire_timeout = Duration::from_secs(24 * 3600);
    let store = Store::open(&opts).await?;
    store
        .create_endpoint(&Endpoint {
            name: ResourceName::parse("github.com")?,
            description: String::new(),
            base_url: "https://github.com".into(),
            api_base_url: "https://api.github.com".into(),
            ca_bundle: None,
        })
        .await?;
    store
        .create_credentials(&Credentials {
            name: ResourceName::parse("gh")?,
            description: String::new(),
            endpoint: ResourceName::parse("github.com")?,
            auth: CredentialsAuth::Pat {
                token: Secret::new("ghp_simulated"),
            },
            app_webhook_secret: None,
        })
        .await?;
    let entity = store
        .create_entity(&NewEntity {
            scope: EntityScope::Repository {
                owner: "octo".into(),
                name: "app".into(),
            },
            credentials_name: ResourceName::parse("gh")?,
            webhook_secret: Secret::new("simulated-webhook-secret"),
        })
        .await?;
    let mut pools = Vec::new();
    for p in &s.pools {
        let spec = PoolSpec {
            provider_name: ResourceName::parse(&p.provider)?,
            image: "ubuntu-24.04".into(),
            flavor: "standard".into(),
            tags: Labels::from_strs(&p.tags)
                .map_err(|e| anyhow::anyhow!("pool {}: {e}", p.name))?,
            os_type: OsType::Linux,
            os_arch: OsArch::Amd64,
            min_idle_runners: p.min_idle_runners,
            max_runners: p.max_runners,
            runner_prefix: RunnerPrefix::default(),
            runner_bootstrap_timeout: p.bootstrap_timeout_mins,
            extra_specs: serde_json::Map::new(),
            runner_group: None,
            priority: p.priority,
            enabled: true,
        };
        pools.push(store.create_pool(entity.id, &spec).await?);
    }
    let urls = Urls::derive("https://hangar.sim.invalid", None, None, None);
    {
        let mut w = world.lock();
        w.pool_ids = pools.iter().map(|p| p.id).collect();
        w.add_hook(format!("{}/{}", urls.webhook_base_url, entity.id));
    }
    let mut providers = Providers::builder().backoff(
        Duration::from_millis(s.scheduler.backoff_base_ms),
        Duration::from_millis(s.scheduler.backoff_max_ms),
    );
    for (index, p) in s.providers.iter().enumerate() {
        let provider = SimProvider {
            world: world.clone(),
            index,
            max_concurrency: p.max_concurrency,
        };
        providers = providers
            .add(&p.name, "simulated", Arc::new(provider), Default::default())
            .map_err(|e| anyhow::anyhow!("provider {}: {e:?}", e.0))?;
    }
    let scheduler = Scheduler::new(SchedulerDeps {
        store: store.clone(),
        forge: Arc::new(SimGitHub(world.clone())),
        actions: None,
        providers: providers.build(),
        config: s.scheduler.clone(),
        urls: SharedUrls::new(urls),
        metrics: Arc::new(Metrics::new()),
    });
    let intake = Intake::start(scheduler.clone());
    Ok(Setup {
        store,
        scheduler,
        intake,
        entity,
        pools,
        _dir: dir,
    })
}

/// What the instance's status callback does when its runner starts:
/// `installing`, then `idle`, then a wake of its pool.
async fn runner_up(setup: &Setup, name: &str) {
    let Ok(name) = InstanceName::parse(name) else {
        return;
    };
    let Ok(inst) = setup.store.instance(&name).await else {
        return;
    };
    for to in [RunnerStatus::Installing, RunnerStatus::Idle] {
        if setup
            .store
            .transition(&name, Change::Runner(to, None))
            .await
            .is_err()
        {
            break;
        }
    }
    setup.scheduler.wake_pool(inst.pool_id);
}

/// Hands delivery attempts to intake as the webhook handler would (the
/// pool chosen by label matching over current load) and records hangard's
/// answer in GitHub's delivery log.
async fn deliver(setup: &Setup, world: &Shared, attempts: Vec<Attempt>) -> anyhow::Result<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let load: HashMap<_, _> = setup
        .store
        .pool_usage()
        .await?
        .into_iter()
        .map(|(p, u)| (p, u.live))
        .collect();
    let candidates: Vec<PoolCandidate<'_>> = setup
        .pools
        .iter()
        .map(|p| PoolCandidate {
            id: p.id,
            tags: &p.spec.tags,
            priority: p.spec.priority,
            enabled: p.spec.enabled,
            busy: load.get(&p.id).copied().unwrap_or(0),
        })
        .collect();
    let events: Vec<(i64, JobEvent)> = {
        let w = world.lock();
        attempts
            .into_iter()
            .map(|a| {
                let j = &w.jobs[a.job];
                let event = JobEvent {
                    job_id: JobId(j.id),
                    run_attempt: 1,
                    action: a.action,
                    entity_id: setup.entity.id,
                    labels: j.labels.clone(),
                    repository: w.repository.clone(),
                    workflow_run_id: Some(j.run_id),
                    name: Some("build".into()),
                    runner_name: a.runner,
                    conclusion: a.conclusion,
                    pool_id: rank_pools(&j.labels, &candidates).into_iter().next(),
                };
                (a.delivery_id, event)
            })
            .collect()
    };
    let answers = futures::future::join_all(events.into_iter().map(|(id, ev)| async move {
        let code = match setup.intake.record(ev).await {
            Ok(JobOutcome::Recorded {
                pool_id: Some(_), ..
            }) => 202,
            Ok(_) => 200,
            Err(_) => 503,
        };
        (id, code)
    }))
    .await;
    let mut w = world.lock();
    for (id, code) in answers {
        w.answered(id, code);
    }
    Ok(())
}

async fn simulate(s: &Scenario, seed: u64) -> anyhow::Result<Report> {
    // Held until the end: no auto-advance of the paused clock.
    let (hold, held) = std::sync::mpsc::channel::<()>();
    let holder = tokio::task::spawn_blocking(move || {
        let _ = held.recv();
    });
    align_clock().await;

    let world = Shared(Arc::new(Mutex::new(World::new(
        seed,
        s.deliveries.clone(),
        &s.providers,
    ))));
    let setup = setup(s, &world).await?;
    let arrivals = arrivals(s, world.lock().rng())?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let run = {
        let scheduler = setup.scheduler.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { scheduler.run(cancel).await })
    };

    let tick = Duration::from_millis(s.tick_ms);
    let arrive_until = (s.duration_mins * 60_000.0) as u64;
    let end = arrive_until + (s.drain_mins * 60_000.0) as u64;
    let warmup = (s.warmup_mins * 60_000.0) as u64;
    let n_pools = setup.pools.len();
    let mut surplus_ms = vec![0u64; n_pools];
    let mut vm_ms = vec![0u64; n_pools];
    let mut steady_sum = vec![0u64; n_pools];
    let mut steady_samples = 0u64;
    let mut peak_vms = vec![0usize; n_pools];
    let mut next = 0;
    let threshold = (s.stranded_after_mins * 60_000.0) as u64;
    // How often (in steps) to look for stranded jobs: every 10 s.
    let stranded_every = (10_000 / s.tick_ms).max(1);
    let mut step = 0u64;

    loop {
        // What the step of time set off (timers due) runs first, alone.
        quiesce(&setup.store, &world).await;
        let now = world.lock().now_ms();
        let mut attempts = Vec::new();
        let mut booted = Vec::new();
        {
            let mut w = world.lock();
            while next < arrivals.len() && arrivals[next].at_ms <= now {
                let a = &arrivals[next];
                w.queue_job(a.labels.clone(), a.run_ms);
                next += 1;
            }
            while let Some(due) = w.pop_due(now) {
                match due {
                    Due::Deliver(plan) => attempts.extend(w.attempt(plan)),
                    Due::Boot(vm) => booted.extend(w.boot(&vm)),
                    Due::Complete(job) => w.complete(job, "success"),
                }
            }
            w.match_runners();
        }
        // Then the world's events, one kind at a time, each followed by
        // the scheduler's reaction to it.
        if !booted.is_empty() {
            for name in booted {
                runner_up(&setup, &name).await;
            }
            quiesce(&setup.store, &world).await;
        }
        if !attempts.is_empty() {
            deliver(&setup, &world, attempts).await?;
            quiesce(&setup.store, &world).await;
        }

        {
            let w = world.lock();
            let steady = now >= warmup && now < arrive_until;
            if steady {
                steady_samples += 1;
            }
            for (i, pool) in setup.pools.iter().enumerate() {
                let vms: Vec<&str> = w
                    .vms
                    .values()
                    .filter(|v| v.pool_id == pool.id)
                    .map(|v| v.name.as_str())
                    .collect();
                let busy = w
                    .runners
                    .values()
                    .filter(|r| r.job.is_some() && vms.contains(&r.name.as_str()))
                    .count();
                let queued = w
                    .queued_jobs()
                    .filter(|j| can_serve(&pool.spec.tags, &w.jobs[*j].labels))
                    .count();
                let surplus = vms
                    .len()
                    .saturating_sub(busy + queued + pool.spec.min_idle_runners as usize);
                surplus_ms[i] += surplus as u64 * s.tick_ms;
                vm_ms[i] += vms.len() as u64 * s.tick_ms;
                peak_vms[i] = peak_vms[i].max(vms.len());
                if steady {
                    steady_sum[i] += surplus as u64;
                }
            }
        }
        step += 1;
        if step.is_multiple_of(stranded_every) {
            world.lock().mark_stranded(threshold);
        }
        if now >= end {
            break;
        }
        tokio::time::advance(tick).await;
    }

    cancel.cancel();
    let report = {
        let mut w = world.lock();
        w.mark_stranded(threshold);
        let stranded = w.stranded.len() as u64;
        let waiting = w.queued_jobs().count() as u64;
        let mut ttr: Vec<u64> = w
            .jobs
            .iter()
            .filter_map(|j| j.started_ms.map(|s| s - j.queued_ms))
            .collect();
        ttr.sort_unstable();
        let served = ttr.len() as u64;
        let in_progress = w
            .jobs
            .iter()
            .filter(|j| j.state == JobState::InProgress)
            .count() as u64;
        let steady_surplus = (0..n_pools)
            .map(|i| {
                if steady_samples == 0 {
                    0.0
                } else {
                    steady_sum[i] as f64 / steady_samples as f64
                }
            })
            .collect::<Vec<_>>();
        Report {
            scenario: s.name.clone(),
            seed,
            jobs: w.jobs.len() as u64,
            served,
            still_running: in_progress,
            waiting,
            stranded,
            ttr_p50: percentile(&ttr, 50.0),
            ttr_p95: percentile(&ttr, 95.0),
            ttr_p99: percentile(&ttr, 99.0),
            ttr_max: ttr.last().copied().unwrap_or(0),
            surplus_vm_min: surplus_ms.iter().sum::<u64>() as f64 / 60_000.0,
            vm_min: vm_ms.iter().sum::<u64>() as f64 / 60_000.0,
            steady_surplus_per_pool: setup
                .pools
                .iter()
                .zip(&s.pools)
                .zip(steady_surplus)
                .map(|((_, p), v)| (p.name.clone(), v))
                .collect(),
            peak_vms: s
                .pools
                .iter()
                .map(|p| p.name.clone())
                .zip(peak_vms)
                .collect(),
            calls: w.calls.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            faults: w.faults_seen.clone(),
            providers: w
                .providers
                .iter()
                .map(|p| (p.spec.name.clone(), p.counts.clone()))
                .collect(),
            goals: Vec::new(),
            wall: Duration::ZERO,
        }
        .judge(&s.goals)
    };
    drop(hold);
    let _ = holder.await;
    drop(run);
    Ok(report)
}
