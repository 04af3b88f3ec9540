//! Two scheduler replicas on one PostgreSQL database (issue #17), on real
//! time: pools spread one per replica, any replica's intake wakes the
//! holder, and when one replica is cut off from the database the other
//! takes its pool and finishes its work: every job served by exactly one
//! instance, no VM left, `max_runners` never exceeded. Runs when
//! `HANGAR_TEST_POSTGRES_URL` names a server; skipped loudly otherwise.

mod support;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_core::*;
use hangar_scheduler::{Intake, ListenStep, SchedulerConfig, SchedulerError};
use hangar_store::{Change, JobEvent, NewEntity, Store, StoreError, StoreOptions};
use hangar_testkit::fake_provider::{BootMode, FakeInstance, FakeProvider, FakeProviderConfig};
use hangar_testkit::sample;
use sqlx::{ConnectOptions, Connection};
use support::{Harness, MemoryGitHub};
use tokio_util::sync::CancellationToken;

const MAX: u32 = 2;

async fn open(url: &str) -> Store {
    Store::open(&StoreOptions::new(
        url,
        Secret::new("a test passphrase that is long enough!"),
    ))
    .await
    .unwrap()
}

fn event(
    entity: EntityId,
    pool: PoolId,
    job: i64,
    action: JobAction,
    runner: Option<&str>,
) -> JobEvent {
    JobEvent {
        job_id: JobId(job),
        run_attempt: 1,
        action,
        entity_id: entity,
        labels: Labels::parse_list("self-hosted,linux").unwrap(),
        repository: "octo/app".into(),
        workflow_run_id: Some(1),
        name: Some("build".into()),
        runner_name: runner.map(str::to_owned),
        conclusion: None,
        pool_id: Some(pool),
    }
}

/// Polls `check` every 20 ms until it holds, or fails after `within`.
async fn until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh PostgreSQL database for one test, dropped by [`TestDb::drop`].
struct TestDb {
    name: String,
    url: String,
    admin: sqlx::PgConnection,
}

impl TestDb {
    /// `None` (the test skipped, loudly) without a server; CI must have one.
    async fn create() -> Option<Self> {
        let Ok(admin) = std::env::var("HANGAR_TEST_POSTGRES_URL") else {
            // CI must run it: `cargo xtask ci` starts a server and sets the URL.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "HANGAR_TEST_POSTGRES_URL unset under CI=true: the two-replica tests must run"
            );
            eprintln!("HANGAR_TEST_POSTGRES_URL unset: the two-replica test did not run (SKIPPED)");
            return None;
        };
        let name = format!("hangar_replicas_{}", uuid_like());
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .unwrap();
        let url = sqlx::postgres::PgConnectOptions::from_str(&admin)
            .unwrap()
            .database(&name)
            .to_url_lossy()
            .to_string();
        Some(Self {
            name,
            url,
            admin: c,
        })
    }

    /// Runs one statement in the test's database (what no replica would
    /// do: the test playing the clock or a stalled replica).
    async fn execute(&self, sql: &str) {
        let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut c)
            .await
            .unwrap();
        let _ = c.close().await;
    }

    async fn drop(mut self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut self.admin)
        .await
        .unwrap();
    }
}

/// The endpoint, credentials and repository both replicas serve.
async fn seed(store: &Store) -> Entity {
    store.create_endpoint(&sample::github_com()).await.unwrap();
    store
        .create_credentials(&sample::pat("gh", "github.com", "ghp_test"))
        .await
        .unwrap();
    store
        .create_entity(&NewEntity {
            scope: EntityScope::Repository {
                owner: "octo".into(),
                name: "app".into(),
            },
            credentials_name: ResourceName::parse("gh").unwrap(),
            webhook_secret: Secret::new("whsec"),
        })
        .await
        .unwrap()
}

/// Two replicas' stores on one database, seeded through the first.
async fn two_replicas(db: &TestDb) -> (Store, Store, Entity) {
    let (a, b) = (open(&db.url).await, open(&db.url).await);
    let entity = seed(&a).await;
    (a, b, entity)
}

/// A pool of `max` runners for `self-hosted, linux`, made through `store`.
async fn linux_pool(store: &Store, entity: &Entity, max: u32) -> PoolId {
    store
        .create_pool(
            entity.id,
            &sample::pool_spec("fake", "self-hosted,linux", max),
        )
        .await
        .unwrap()
        .id
}

/// The shared cloud of a test that plays the runners' side itself.
fn quiet_provider() -> Arc<FakeProvider> {
    Arc::new(FakeProvider::new(FakeProviderConfig {
        boot: BootMode::None,
        ..Default::default()
    }))
}

/// Closes both replicas' stores (bounded) and drops the database.
async fn close(db: TestDb, stores: [Store; 2]) {
    for s in stores {
        let _ = tokio::time::timeout(Duration::from_secs(5), s.close()).await;
    }
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_cut_off_from_the_database_hands_its_pool_over() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (store_a, store_b, entity) = two_replicas(&db).await;
    let spec = sample::pool_spec("fake", "self-hosted,linux", MAX);
    let p1 = store_a.create_pool(entity.id, &spec).await.unwrap().id;
    let p2 = store_a.create_pool(entity.id, &spec).await.unwrap().id;

    // One GitHub and one cloud, shared by both replicas.
    let github = Arc::new(MemoryGitHub::default());
    let provider = Arc::new(FakeProvider::default());
    let config = SchedulerConfig {
        lease_ttl_ms: 1_500,
        reconcile_interval_secs: 1,
        idle_grace_secs: 0,
        ..support::config()
    };
    let a = Harness::scheduler(&store_a, &github, &provider, &config);
    let b = Harness::scheduler(&store_b, &github, &provider, &config);
    let (cancel_a, cancel_b) = (CancellationToken::new(), CancellationToken::new());
    let run_a = tokio::spawn({
        let (a, c) = (a.clone(), cancel_a.clone());
        async move { a.run(c).await }
    });
    let run_b = tokio::spawn({
        let (b, c) = (b.clone(), cancel_b.clone());
        async move { b.run(c).await }
    });

    // The two pools spread: one per replica.
    until(Duration::from_secs(30), "one pool per replica", || async {
        (a.holds_pool(p1) ^ b.holds_pool(p1))
            && (a.holds_pool(p2) ^ b.holds_pool(p2))
            && a.holds_pool(p1) != a.holds_pool(p2)
    })
    .await;
    let (a_pool, b_pool) = if a.holds_pool(p1) { (p1, p2) } else { (p2, p1) };

    // Every delivery goes through A's intake; B's pool hears of it.
    let intake_a = Intake::start(a.clone());
    let mut job = 0;
    let mut queue = |pool: PoolId, n: usize| {
        let mut evs = Vec::new();
        for _ in 0..n {
            job += 1;
            evs.push((job, event(entity.id, pool, job, JobAction::Queued, None)));
        }
        evs
    };
    let first: Vec<_> = queue(a_pool, 2)
        .into_iter()
        .chain(queue(b_pool, 2))
        .collect();
    for (_, ev) in &first {
        intake_a.record(ev.clone()).await.unwrap();
    }
    until(
        Duration::from_secs(30),
        "four instances created",
        || async { provider.instances().len() == 4 },
    )
    .await;

    // A is cut off from the database (its connections closed): it stops
    // acting, and B takes A's pool once the lease lapses.
    // Closing the pool refuses every new query at once; waiting for the
    // connections still out (the wake listener keeps one) is not needed.
    let cut = Instant::now();
    let _ = tokio::time::timeout(Duration::from_millis(200), store_a.close()).await;
    until(Duration::from_secs(30), "B holding both pools", || async {
        b.holds_pool(a_pool) && b.holds_pool(b_pool)
    })
    .await;
    let failover = cut.elapsed();
    println!(
        "failover after the holder lost the database: {} ms",
        failover.as_millis()
    );
    assert!(!a.holds_pool(a_pool), "A stopped acting on its pool");

    // The rest through B: the running jobs finish, four more come.
    let intake_b = Intake::start(b.clone());
    let second: Vec<_> = queue(a_pool, 2)
        .into_iter()
        .chain(queue(b_pool, 2))
        .collect();
    for (_, ev) in &second {
        intake_b.record(ev.clone()).await.unwrap();
    }
    // Each round's jobs get running instances (the second's once the
    // first's free the pools), then run and complete.
    for round in [&first, &second] {
        until(
            Duration::from_secs(30),
            "a round's instances running",
            || async {
                let all = store_b
                    .list_instances(&hangar_store::InstanceFilter::default())
                    .await
                    .unwrap();
                round.iter().all(|(j, _)| {
                    all.iter()
                        .any(|i| i.job_id == Some(JobId(*j)) && i.status == InstanceStatus::Running)
                })
            },
        )
        .await;
        for (j, ev) in round.iter() {
            let inst = store_b
                .list_instances(&hangar_store::InstanceFilter {
                    pool_id: ev.pool_id,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .find(|i| i.job_id == Some(JobId(*j)))
                .unwrap_or_else(|| panic!("job {j} has a live instance"));
            let runner = Some(inst.name.as_str());
            let pool = ev.pool_id.unwrap();
            intake_b
                .record(event(entity.id, pool, *j, JobAction::InProgress, runner))
                .await
                .unwrap();
            intake_b
                .record(event(entity.id, pool, *j, JobAction::Completed, runner))
                .await
                .unwrap();
        }
    }
    // The provider's delete comes before the store records it: both.
    until(Duration::from_secs(60), "every VM deleted", || async {
        provider.instances().is_empty()
            && store_b
                .list_instances(&hangar_store::InstanceFilter::default())
                .await
                .unwrap()
                .is_empty()
    })
    .await;

    let all = store_b
        .list_instances(&hangar_store::InstanceFilter {
            include_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap();
    for j in 1..=job {
        let made: Vec<_> = all.iter().filter(|i| i.job_id == Some(JobId(j))).collect();
        assert_eq!(made.len(), 1, "job {j} served by one instance: {made:#?}");
    }
    assert_eq!(
        all.len() as i64,
        job,
        "no instance beyond the jobs: {all:#?}"
    );
    assert!(all.iter().all(|i| i.status == InstanceStatus::Deleted));
    assert_eq!(provider.create_count(), job as u64, "no VM created twice");
    assert!(
        provider.peak_instances() <= 2 * MAX as usize,
        "max_runners held: peak {}",
        provider.peak_instances()
    );
    assert!(github.runners().is_empty(), "no runner left registered");

    cancel_b.cancel();
    cancel_a.cancel();
    run_b.await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), run_a).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), store_b.close()).await;
    db.drop().await;
}

fn uuid_like() -> String {
    PoolId::new_random().to_string().replace('-', "")
}

/// Lines the fake provider logged: every create, delete and listing.
fn provider_calls(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// An instance the store records as running (a create finished), made
/// through the store as the scheduler would.
async fn running_instance(store: &Store, pool: PoolId, name: &str) -> InstanceName {
    let name = InstanceName::parse(name).unwrap();
    store
        .reserve_instance(&hangar_store::NewInstance {
            name: name.clone(),
            pool_id: pool,
            provider_name: "fake".into(),
            job_id: None,
        })
        .await
        .unwrap()
        .expect("room in the pool");
    let hash = hangar_store::hash_token(name.as_str());
    store
        .transition(&name, Change::BeginCreate { token_hash: &hash })
        .await
        .unwrap();
    store
        .transition(
            &name,
            Change::FinishCreate {
                provider_id: &format!("fake-{name}"),
                addresses: &[],
            },
        )
        .await
        .unwrap();
    name
}

fn fake_vm(store: &Store, pool: PoolId, name: &str) -> FakeInstance {
    FakeInstance {
        provider_id: format!("fake-{name}"),
        name: name.into(),
        controller_id: store.controller_id(),
        pool_id: pool,
        image: "img".into(),
        flavor: "small".into(),
        userdata: String::new(),
        labels: Vec::new(),
    }
}

fn fenced<T: std::fmt::Debug>(r: &Result<T, SchedulerError>) -> bool {
    matches!(r, Err(SchedulerError::Store(StoreError::Fenced(_))))
}

const SCALE_SET: &str = "linux-scale-set";

/// A replica whose pools were taken while it still believes it holds them
/// (its renewals stalled past the lease, as a paused process or a slow
/// disk would): its sweep, its scale set listener, its lost-delivery
/// recovery and its reconcile are refused by the database (`Fenced`) and
/// make no provider or GitHub call at all — the orphan VM, the stray
/// runner, the lost instance, the queued run and the scale set's message
/// are all still there for the new holder, which handles each exactly
/// once; run again, it finds nothing left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_whose_lease_was_taken_acts_no_more() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (store_a, store_b, entity) = two_replicas(&db).await;
    let p = linux_pool(&store_a, &entity, 4).await;
    let s_pool = store_a
        .create_pool(entity.id, &sample::pool_spec("fake", SCALE_SET, 4))
        .await
        .unwrap()
        .id;
    let actions = support::memory_actions::memory_actions();
    let gid = actions.add_scale_set(SCALE_SET);
    let ss = store_a
        .attach_scale_set(s_pool, SCALE_SET, Some(gid))
        .await
        .unwrap();

    let github = Arc::new(MemoryGitHub::default());
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("provider-calls");
    let provider = Arc::new(FakeProvider::new(FakeProviderConfig {
        calls_log: Some(log.clone()),
        boot: BootMode::None,
        ..Default::default()
    }));
    // Leases that never lapse on their own within the test: only the
    // database says A lost them.
    let config = SchedulerConfig {
        lease_ttl_ms: 600_000,
        lost_instance_grace_secs: 0,
        ..support::config()
    };
    let a = Harness::scheduler_with_actions(
        &store_a,
        &github,
        Some(actions.clone()),
        provider.clone(),
        &config,
    );
    let b = Harness::scheduler_with_actions(
        &store_b,
        &github,
        Some(actions.clone()),
        provider.clone(),
        &config,
    );
    // A alone first: it takes both pools; B, joining, takes none.
    a.lease_pass().await.unwrap();
    assert!(a.holds_pool(p) && a.holds_pool(s_pool));
    assert!(b.lease_pass().await.unwrap().gained.is_empty());

    // What each path would act on.
    provider.plant(fake_vm(&store_a, p, "orphan-vm-1"));
    let labels = vec![controller_label(store_a.controller_id())];
    github.add_runner("stray-runner-1", &labels);
    let lost = running_instance(&store_a, p, "lost-vm-1").await;
    // An instance to delete: a reconcile starts its delete step.
    let doomed = running_instance(&store_a, p, "doomed-vm-1").await;
    provider.plant(fake_vm(&store_a, p, doomed.as_str()));
    let doomed_runner = github.add_runner(doomed.as_str(), &labels);
    store_a
        .set_instance_jit(&doomed, doomed_runner, &Secret::new("jit"))
        .await
        .unwrap();
    store_a
        .transition(&doomed, Change::Status(InstanceStatus::PendingDelete, None))
        .await
        .unwrap();
    github.queue_run(
        77,
        vec![hangar_core::forge::ForgeJob {
            id: JobId(900),
            run_attempt: Some(1),
            status: ForgeJobStatus::Queued,
            conclusion: None,
            labels: vec!["self-hosted".into(), "linux".into()],
            runner_name: None,
            run_id: Some(77),
            name: Some("build".into()),
            created_at: None,
        }],
    );
    let request = actions.queue_job(gid);
    // Jobs for the pool: a reconcile would reserve instances for them.
    let jobs: Vec<_> = (901..=903)
        .map(|j| event(entity.id, p, j, JobAction::Queued, None))
        .collect();
    store_a.record_job_events(&jobs).await.unwrap();
    // The lost instance has been unchanged for longer than the grace (0).
    tokio::time::sleep(Duration::from_millis(20)).await;

    // A stalls: its leases lapse in the database and B takes both pools,
    // while A's own deadline has not passed.
    db.execute("UPDATE pool_leases SET expires_at = 0").await;
    let pass = b.lease_pass().await.unwrap();
    assert_eq!(pass.gained.len(), 2, "B took both pools: {pass:?}");
    assert!(
        a.holds_pool(p) && a.holds_pool(s_pool),
        "A does not know yet"
    );

    let (gh_before, provider_before) = (github.total_calls(), provider_calls(&log));
    assert!(fenced(&a.sweep().await), "A's sweep refused");
    let mut listener = a.scale_set_listener(&ss);
    let step = listener.step().await.unwrap();
    assert!(
        matches!(&step, ListenStep::Stop(why) if why.contains("lease")),
        "A's listener stops: {step:?}"
    );
    assert!(fenced(&a.recover().await), "A's recovery refused");
    // Its reconcile starts the delete step (no write comes first), which
    // asks the database before it calls anyone; its reservations for the
    // queued jobs are refused.
    let r = a.reconcile_pool(p).await;
    assert!(fenced(&r), "A's reconcile refused: {r:?}");
    a.run_until_idle().await;
    assert_eq!(
        store_b.instance(&doomed).await.unwrap().status,
        InstanceStatus::PendingDelete,
        "A's delete step did not start"
    );
    assert!(provider.instance(doomed.as_str()).is_some());
    assert!(github.runner_named(doomed.as_str()).is_some());

    assert_eq!(github.total_calls(), gh_before, "A made no GitHub call");
    assert_eq!(
        provider_calls(&log),
        provider_before,
        "A made no provider call"
    );
    for op in [
        "create_session",
        "get_message",
        "acquire_jobs",
        "delete_message",
    ] {
        assert_eq!(actions.calls(op), 0, "A made no {op} call");
    }
    assert!(provider.instance("orphan-vm-1").is_some());
    assert!(github.runner_named("stray-runner-1").is_some());
    let inst = store_b.instance(&lost).await.unwrap();
    assert_eq!(inst.status, InstanceStatus::Running, "A retired nothing");
    assert!(
        store_b
            .known_jobs(&[(JobId(900), 1)])
            .await
            .unwrap()
            .is_empty(),
        "A recovered nothing"
    );
    assert!(
        store_b
            .scale_set_job_statuses(&ss)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(actions.pending_messages(gid).len(), 1, "the message waits");
    let live = store_b
        .list_instances(&hangar_store::InstanceFilter::default())
        .await
        .unwrap();
    assert_eq!(live.len(), 2, "A reserved nothing: {live:#?}");

    // B, the holder, does each once.
    let r = b.sweep().await.unwrap();
    assert_eq!(
        (r.orphans_deleted, r.stray_runners_deleted, r.lost_instances),
        (1, 1, 1),
        "{r:?}"
    );
    assert!(provider.instance("orphan-vm-1").is_none());
    assert!(github.runner_named("stray-runner-1").is_none());
    assert_eq!(
        store_b.instance(&lost).await.unwrap().status,
        InstanceStatus::PendingDelete
    );
    let mut listener = b.scale_set_listener(&ss);
    let step = listener.step().await.unwrap();
    assert!(
        matches!(step, ListenStep::Message { acquired: 1, .. }),
        "B's listener applies the message: {step:?}"
    );
    assert_eq!(
        store_b.scale_set_job_statuses(&ss).await.unwrap(),
        vec![(request, "acquired".to_owned())]
    );
    assert_eq!(b.recover().await.unwrap().recovered_from_runs, 1);

    // Again: nothing left, nothing done twice.
    let r = b.sweep().await.unwrap();
    assert_eq!(
        (r.orphans_deleted, r.stray_runners_deleted, r.lost_instances),
        (0, 0, 0),
        "{r:?}"
    );
    assert_eq!(b.recover().await.unwrap().recovered_from_runs, 0);
    assert_eq!(actions.calls("acquire_jobs"), 1);
    assert_eq!(github.calls("delete_runner"), 1);

    listener.close().await;
    close(db, [store_a, store_b]).await;
}

/// Provider and GitHub actions are keyed by the instance's name, so the
/// new holder finishing what the old one cut short does nothing twice: a
/// create whose VM was made but not recorded is adopted (no second VM),
/// and a delete whose VM and runner were already removed is recorded done
/// (the provider's delete of a missing VM and GitHub's of a missing runner
/// succeed; the provider deletes one VM in all).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_cut_short_by_a_failover_is_finished_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (store_a, store_b, entity) = two_replicas(&db).await;
    let p = linux_pool(&store_a, &entity, 4).await;
    let github = Arc::new(MemoryGitHub::default());
    let provider = quiet_provider();
    let config = SchedulerConfig {
        lease_ttl_ms: 600_000,
        ..support::config()
    };
    let a = Harness::scheduler(&store_a, &github, &provider, &config);
    let b = Harness::scheduler(&store_b, &github, &provider, &config);
    a.lease_pass().await.unwrap();
    assert!(a.holds_pool(p));
    b.lease_pass().await.unwrap();

    // A's create: the provider made the VM, A died before recording it.
    let made = InstanceName::parse("made-vm-1").unwrap();
    store_a
        .reserve_instance(&hangar_store::NewInstance {
            name: made.clone(),
            pool_id: p,
            provider_name: "fake".into(),
            job_id: None,
        })
        .await
        .unwrap()
        .unwrap();
    let hash = hangar_store::hash_token(made.as_str());
    store_a
        .transition(&made, Change::BeginCreate { token_hash: &hash })
        .await
        .unwrap();
    provider.plant(fake_vm(&store_a, p, made.as_str()));

    // A's delete: the runner and the VM went, A died before recording it.
    let gone = running_instance(&store_a, p, "gone-vm-1").await;
    provider.plant(fake_vm(&store_a, p, gone.as_str()));
    let runner = github.add_runner(gone.as_str(), &[]);
    store_a
        .set_instance_jit(&gone, runner, &Secret::new("jit"))
        .await
        .unwrap();
    store_a
        .transition(&gone, Change::Status(InstanceStatus::PendingDelete, None))
        .await
        .unwrap();
    store_a
        .transition(&gone, Change::Status(InstanceStatus::Deleting, None))
        .await
        .unwrap();
    let target = ForgeTarget {
        endpoint: sample::github_com(),
        credentials: sample::pat("gh", "github.com", "ghp_test"),
        scope: entity.scope.clone(),
    };
    github.delete_runner(&target, runner).await.unwrap();
    provider
        .delete_instance(&hangar_core::provider::InstanceRef {
            name: gone.clone(),
            provider_id: Some(format!("fake-{gone}")),
            controller_id: store_a.controller_id(),
            pool_id: p,
        })
        .await
        .unwrap();
    assert_eq!(provider.delete_count(), 1);

    // B takes the pool over and settles both.
    db.execute("UPDATE pool_leases SET expires_at = 0").await;
    assert_eq!(b.lease_pass().await.unwrap().gained, vec![p]);
    b.wake_all();
    b.run_until_idle().await;

    let made_now = store_b.instance(&made).await.unwrap();
    assert_eq!(made_now.status, InstanceStatus::Running, "adopted");
    assert_eq!(provider.create_count(), 0, "no second VM was created");
    assert_eq!(
        provider
            .instances()
            .iter()
            .filter(|i| i.name == made.as_str())
            .count(),
        1
    );
    let gone_now = store_b.instance(&gone).await.unwrap();
    assert_eq!(gone_now.status, InstanceStatus::Deleted, "delete recorded");
    assert_eq!(provider.delete_count(), 1, "the VM was deleted once");
    assert!(github.runner_named(gone.as_str()).is_none());

    close(db, [store_a, store_b]).await;
}

/// An operator's delete through a replica that does not hold the pool (the
/// admin API answers on any replica) only writes the store and tells the
/// holder (`NOTIFY`), which removes the runner and the VM — long before
/// its reconcile timer would have looked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_delete_on_a_follower_is_done_by_the_holder() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (store_a, store_b, entity) = two_replicas(&db).await;
    let p = linux_pool(&store_a, &entity, 2).await;
    let github = Arc::new(MemoryGitHub::default());
    let provider = quiet_provider();
    // Only a wake brings the holder back to the pool within the test.
    let config = SchedulerConfig {
        lease_ttl_ms: 3_000,
        reconcile_interval_secs: 3_600,
        ..support::config()
    };
    let a = Harness::scheduler(&store_a, &github, &provider, &config);
    let b = Harness::scheduler(&store_b, &github, &provider, &config);
    let cancel = CancellationToken::new();
    let runs: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|s| {
            let c = cancel.clone();
            tokio::spawn(async move { s.run(c).await })
        })
        .collect();
    until(Duration::from_secs(30), "a holder for the pool", || async {
        a.holds_pool(p) ^ b.holds_pool(p)
    })
    .await;
    let (follower, follower_store) = if a.holds_pool(p) {
        (b.clone(), &store_b)
    } else {
        (a.clone(), &store_a)
    };

    // A job through the follower: the holder makes its instance.
    let intake = Intake::start(follower.clone());
    intake
        .record(event(entity.id, p, 1, JobAction::Queued, None))
        .await
        .unwrap();
    until(Duration::from_secs(30), "the instance running", || async {
        follower_store
            .list_instances(&hangar_store::InstanceFilter::default())
            .await
            .unwrap()
            .iter()
            .any(|i| i.status == InstanceStatus::Running)
    })
    .await;
    let inst = follower_store
        .list_instances(&hangar_store::InstanceFilter::default())
        .await
        .unwrap()
        .remove(0);
    assert!(github.runner_named(inst.name.as_str()).is_some());

    // The operator deletes it through the follower.
    follower.request_forced_delete(&inst.name).await.unwrap();
    until(
        Duration::from_secs(60),
        "the holder deleting it",
        || async {
            follower_store.instance(&inst.name).await.unwrap().status == InstanceStatus::Deleted
        },
    )
    .await;
    // (Its job still waits, so the holder makes it another instance.)
    assert!(
        provider.instance(inst.name.as_str()).is_none(),
        "its VM is gone"
    );
    assert!(
        github.runner_named(inst.name.as_str()).is_none(),
        "its runner is gone"
    );
    assert_eq!(provider.delete_count(), 1);

    cancel.cancel();
    for r in runs {
        let _ = tokio::time::timeout(Duration::from_secs(30), r).await;
    }
    close(db, [store_a, store_b]).await;
}
