//! Property tests of the store against a real database (a SQLite file, and
//! a PostgreSQL database where `HANGAR_TEST_POSTGRES_URL` is set): random change
//! sequences through `Store::transition` agree with core's tables (and a
//! refused change leaves the row untouched), and random interleavings of
//! concurrent reservations and deletions across pools never exceed
//! `max_runners`. Case counts are modest; `PROPTEST_CASES=N` runs N.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::TestDb;
use hangar_core::{
    EntityId, EntityScope, Instance, InstanceName, InstanceStatus as I, JobId, PoolId,
    ResourceName, RunnerStatus as R, Secret,
};
use hangar_store::{Change, InstanceFilter, NewEntity, NewInstance, Store, StoreError};
use hangar_testkit::sample;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

/// `default_cases` cases unless `PROPTEST_CASES` says otherwise; a failing
/// case is kept in `properties.proptest-regressions` and re-run first.
fn config(default_cases: u32) -> Config {
    let mut c = Config {
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = default_cases;
    }
    c
}

/// A runtime with two workers, so concurrent tasks really interleave.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The test's database on `backend`, or `None` when PostgreSQL is skipped.
fn test_db(rt: &tokio::runtime::Runtime, backend: &str) -> Option<TestDb> {
    match backend {
        "sqlite" => Some(TestDb::sqlite()),
        _ => rt.block_on(TestDb::postgres()),
    }
}

/// A store in `db` with one repository entity. SQLite commits skip the
/// fsync: these properties are about what is committed, not about power
/// loss.
async fn open(db: &TestDb) -> (Store, EntityId) {
    let mut opts = db.options();
    opts.synchronous_full = false;
    let store = Store::open(&opts).await.unwrap();
    store.create_endpoint(&sample::github_com()).await.unwrap();
    store
        .create_credentials(&sample::pat("gh", "github.com", "ghp_x"))
        .await
        .unwrap();
    let entity = store
        .create_entity(&NewEntity {
            scope: EntityScope::Repository {
                owner: "octo".into(),
                name: "app".into(),
            },
            credentials_name: ResourceName::parse("gh").unwrap(),
            webhook_secret: Secret::new("whsec"),
        })
        .await
        .unwrap();
    (store, entity.id)
}

static NAMES: AtomicUsize = AtomicUsize::new(0);

fn fresh_name() -> InstanceName {
    InstanceName::parse(&format!(
        "hangar-p{}",
        NAMES.fetch_add(1, Ordering::Relaxed)
    ))
    .unwrap()
}

/// An owned `Change`.
#[derive(Debug, Clone)]
enum Ask {
    Status(I, Option<String>),
    Runner(R, Option<String>),
    TookJob(i64),
    BeginCreate(u8),
    FinishCreate(String, Vec<String>),
}

impl Ask {
    fn change<'a>(&'a self, hash: &'a [u8; 32]) -> Change<'a> {
        match self {
            Ask::Status(s, m) => Change::Status(*s, m.as_deref()),
            Ask::Runner(r, m) => Change::Runner(*r, m.as_deref()),
            Ask::TookJob(j) => Change::TookJob(JobId(*j)),
            Ask::BeginCreate(_) => Change::BeginCreate { token_hash: hash },
            Ask::FinishCreate(id, addrs) => Change::FinishCreate {
                provider_id: id,
                addresses: addrs,
            },
        }
    }
}

fn ask() -> impl Strategy<Value = Ask> {
    let msg = prop::option::of("[a-z ]{1,12}");
    prop_oneof![
        4 => (prop::sample::select(I::ALL.to_vec()), msg.clone()).prop_map(|(s, m)| Ask::Status(s, m)),
        3 => (prop::sample::select(R::ALL.to_vec()), msg).prop_map(|(r, m)| Ask::Runner(r, m)),
        1 => (1i64..=i64::MAX).prop_map(Ask::TookJob),
        1 => any::<u8>().prop_map(Ask::BeginCreate),
        1 => ("vm-[0-9]{1,4}", prop::collection::vec("10\\.0\\.0\\.[0-9]{1,3}", 0..3))
            .prop_map(|(id, a)| Ask::FinishCreate(id, a)),
    ]
}

/// What core's tables say the row becomes, or `None` when the change is
/// not allowed from where it is.
fn model(before: &Instance, ask: &Ask) -> Option<Instance> {
    let mut after = before.clone();
    match ask {
        Ask::Status(to, msg) => {
            if !before.status.can_transition_to(*to) {
                return None;
            }
            after.status = *to;
            if let Some(m) = msg {
                after.status_message = Some(m.clone());
            }
            if *to == I::Deleted {
                // Every runner status but `terminated` itself may end.
                after.runner_status = R::Terminated;
            }
        }
        Ask::Runner(to, msg) => {
            if !before.runner_status.can_transition_to(*to) {
                return None;
            }
            after.runner_status = *to;
            if let Some(m) = msg {
                after.status_message = Some(m.clone());
            }
        }
        Ask::TookJob(j) => {
            if !before.runner_status.can_transition_to(R::Active) {
                return None;
            }
            after.runner_status = R::Active;
            after.job_id = Some(JobId(*j));
        }
        Ask::BeginCreate(_) => {
            if !before.status.can_transition_to(I::Creating) {
                return None;
            }
            after.status = I::Creating;
            after.create_attempts += 1;
        }
        Ask::FinishCreate(id, addrs) => {
            if !before.status.can_transition_to(I::Running) {
                return None;
            }
            after.status = I::Running;
            after.status_message = None;
            after.provider_id = Some(id.clone());
            after.addresses = addrs.clone();
        }
    }
    Some(after)
}

/// Everything but the update time, which moves with every accepted change.
fn same_row(a: &Instance, b: &Instance) -> bool {
    Instance {
        updated_at: b.updated_at,
        ..a.clone()
    } == *b
}

/// Shortest legal way to `deleted` by core's table.
fn path_to_deleted(from: I) -> Vec<I> {
    let mut queue = std::collections::VecDeque::from([vec![from]]);
    while let Some(p) = queue.pop_front() {
        let last = *p.last().unwrap();
        if last == I::Deleted {
            return p[1..].to_vec();
        }
        for &n in last.successors() {
            if !p.contains(&n) {
                let mut longer = p.clone();
                longer.push(n);
                queue.push_back(longer);
            }
        }
    }
    panic!("{from} cannot reach deleted");
}

#[test]
fn transitions_agree_with_the_core_tables_on_sqlite() {
    transitions_agree_with_the_core_tables("sqlite");
}

#[test]
fn transitions_agree_with_the_core_tables_on_postgres() {
    transitions_agree_with_the_core_tables("postgres");
}

fn transitions_agree_with_the_core_tables(backend: &str) {
    let rt = runtime();
    let Some(db) = test_db(&rt, backend) else {
        return;
    };
    let (store, entity) = rt.block_on(open(&db));
    let pool = rt
        .block_on(store.create_pool(entity, &sample::pool_spec("fake", "self-hosted", 1_000_000)))
        .unwrap();
    let mut runner = TestRunner::new(config(64));
    let result = runner.run(&prop::collection::vec(ask(), 1..40), |asks| {
        rt.block_on(async {
            let name = fresh_name();
            let mut row = store
                .reserve_instance(&NewInstance {
                    name: name.clone(),
                    pool_id: pool.id,
                    provider_name: "fake".into(),
                    job_id: None,
                })
                .await
                .unwrap()
                .expect("the pool has room");
            for ask in &asks {
                let hash = [match ask {
                    Ask::BeginCreate(b) => *b,
                    _ => 0,
                }; 32];
                let want = model(&row, ask);
                match (store.transition(&name, ask.change(&hash)).await, want) {
                    (Ok(got), Some(want)) => {
                        prop_assert!(
                            same_row(&got, &want),
                            "{ask:?}: store {got:?}, tables {want:?}"
                        );
                        prop_assert_eq!(&store.instance(&name).await.unwrap(), &got);
                        row = got;
                    }
                    (Err(StoreError::Transition(_)), None) => {
                        let now = store.instance(&name).await.unwrap();
                        prop_assert_eq!(&now, &row, "a refused {:?} changed the row", ask);
                    }
                    (got, want) => {
                        return Err(TestCaseError::fail(format!(
                            "{ask:?} from {}/{}: store {got:?}, tables allow: {}",
                            row.status,
                            row.runner_status,
                            want.is_some()
                        )));
                    }
                }
                // The two machines stay consistent: a deleted instance's
                // runner has ended.
                prop_assert!(row.status != I::Deleted || row.runner_status == R::Terminated);
            }
            // Whatever happened, the table's way to `deleted` is accepted.
            for s in path_to_deleted(row.status) {
                row = store
                    .transition(&name, Change::Status(s, None))
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{} -> {s}: {e}", row.status)))?;
            }
            prop_assert_eq!((row.status, row.runner_status), (I::Deleted, R::Terminated));
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    rt.block_on(store.close());
}

/// One step of a random interleaving.
#[derive(Debug, Clone)]
enum Op {
    /// `reserve_instance` (the one-at-a-time path).
    ReserveOne,
    /// `reserve_instances` with this many names (the scheduler's path).
    ReserveBatch(usize),
    /// Retire and delete the n-th live instance, if there is one.
    Delete(usize),
}

fn op() -> impl Strategy<Value = (usize, Op)> {
    (
        0usize..3,
        prop_oneof![
            Just(Op::ReserveOne),
            (1usize..5).prop_map(Op::ReserveBatch),
            (0usize..4).prop_map(Op::Delete),
        ],
    )
}

/// What one op did to its pool: instances reserved and deleted.
async fn run_op(store: Store, pool: PoolId, op: Op) -> (usize, usize) {
    let new = |name| NewInstance {
        name,
        pool_id: pool,
        provider_name: "fake".into(),
        job_id: None,
    };
    match op {
        Op::ReserveOne => {
            let got = store.reserve_instance(&new(fresh_name())).await.unwrap();
            (usize::from(got.is_some()), 0)
        }
        Op::ReserveBatch(n) => {
            let names: Vec<_> = (0..n).map(|_| fresh_name()).collect();
            let got = store.reserve_instances(pool, "fake", &names).await.unwrap();
            assert!(got.len() <= n);
            (got.len(), 0)
        }
        Op::Delete(n) => {
            let live = store
                .list_instances(&InstanceFilter {
                    pool_id: Some(pool),
                    ..Default::default()
                })
                .await
                .unwrap();
            let Some(inst) = live.get(n % live.len().max(1)) else {
                return (0, 0);
            };
            // Another op may be deleting it too: only one of them finishes.
            for s in [I::PendingDelete, I::Deleting] {
                match store.transition(&inst.name, Change::Status(s, None)).await {
                    Ok(_) | Err(StoreError::Transition(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            match store
                .transition(&inst.name, Change::Status(I::Deleted, None))
                .await
            {
                Ok(_) => (0, 1),
                Err(StoreError::Transition(_)) => (0, 0),
                Err(e) => panic!("{e}"),
            }
        }
    }
}

#[test]
fn concurrent_reservations_and_deletions_never_exceed_max_runners_on_sqlite() {
    concurrent_reservations_and_deletions_never_exceed_max_runners("sqlite");
}

#[test]
fn concurrent_reservations_and_deletions_never_exceed_max_runners_on_postgres() {
    concurrent_reservations_and_deletions_never_exceed_max_runners("postgres");
}

fn concurrent_reservations_and_deletions_never_exceed_max_runners(backend: &str) {
    let rt = runtime();
    let Some(db) = test_db(&rt, backend) else {
        return;
    };
    let (store, entity) = rt.block_on(open(&db));
    let pools = (
        prop::collection::vec((0u32..5, prop::bool::weighted(0.85)), 1..=3),
        prop::collection::vec(op(), 1..32),
    );
    let mut runner = TestRunner::new(config(48));
    let result = runner.run(&pools, |(pools, ops)| {
        rt.block_on(async {
            let mut made = Vec::new();
            for (max, enabled) in &pools {
                let mut spec = sample::pool_spec("fake", "self-hosted", *max);
                spec.enabled = *enabled;
                made.push(store.create_pool(entity, &spec).await.unwrap());
            }
            // A watcher reads every pool's use while the ops run.
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let watcher = {
                let (store, done, made) = (store.clone(), done.clone(), made.clone());
                tokio::spawn(async move {
                    let mut looks = 0u32;
                    loop {
                        let finished = done.load(Ordering::Acquire);
                        for p in &made {
                            let live = store.pool_usage_of(p.id).await.unwrap().live;
                            assert!(
                                live <= p.spec.max_runners,
                                "pool live {live} > max {}",
                                p.spec.max_runners
                            );
                        }
                        looks += 1;
                        if finished {
                            return looks;
                        }
                        tokio::task::yield_now().await;
                    }
                })
            };
            let tasks: Vec<_> = ops
                .iter()
                .map(|(i, op)| {
                    let p = &made[i % made.len()];
                    (p.id, tokio::spawn(run_op(store.clone(), p.id, op.clone())))
                })
                .collect();
            let mut net = std::collections::HashMap::<PoolId, i64>::new();
            for (pool, task) in tasks {
                let (reserved, deleted) = task.await.unwrap();
                *net.entry(pool).or_default() += reserved as i64 - deleted as i64;
            }
            done.store(true, Ordering::Release);
            prop_assert!(watcher.await.unwrap() >= 1);
            for p in &made {
                let live = store.pool_usage_of(p.id).await.unwrap().live;
                let max = p.spec.max_runners;
                prop_assert!(live <= max, "live {} > max {}", live, max);
                prop_assert_eq!(i64::from(live), net.get(&p.id).copied().unwrap_or(0));
                if !p.spec.enabled {
                    prop_assert_eq!(live, 0);
                }
                // The room left is handed out, exactly.
                let names: Vec<_> = (0..max + 2).map(|_| fresh_name()).collect();
                let got = store.reserve_instances(p.id, "fake", &names).await.unwrap();
                let room = if p.spec.enabled { max - live } else { 0 };
                prop_assert_eq!(got.len() as u32, room);
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    rt.block_on(store.close());
}
