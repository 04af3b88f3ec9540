//! Job intake with several writers at once: the same deliveries recorded
//! by concurrent tasks (on PostgreSQL, several connections, as several
//! replicas would) leave each job once, with the status its latest action
//! gives, and each delivery recorded by exactly one of them.

use hangar_core::*;
use hangar_store::*;
use hangar_testkit::sample;

const PASS: &str = "a test passphrase that is long enough!";

/// A fresh store: a SQLite file, or with `HANGAR_TEST_POSTGRES_URL` set, a
/// new database on that server (dropped by the guard).
struct TestDb {
    store: Store,
    _dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl TestDb {
    async fn open(sqlite: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = std::env::var("HANGAR_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty());
        let (url, postgres) = match server {
            Some(server) if !sqlite => {
                let name = format!("hangar_job_intake_{}", uuid::Uuid::new_v4().simple());
                admin(&server, &format!("CREATE DATABASE {name}")).await;
                let url = match server.rsplit_once('/') {
                    Some((base, _)) => format!("{base}/{name}"),
                    None => panic!("HANGAR_TEST_POSTGRES_URL has no database part"),
                };
                (url, Some((server, name)))
            }
            _ => (
                format!("sqlite://{}", dir.path().join("hangar.db").display()),
                None,
            ),
        };
        let store = Store::open(&StoreOptions::new(url, Secret::new(PASS)))
            .await
            .expect("store opens");
        Self {
            store,
            _dir: dir,
            postgres,
        }
    }

    async fn close(self) {
        self.store.close().await;
        if let Some((server, name)) = &self.postgres {
            admin(server, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
        }
    }
}

async fn admin(server: &str, sql: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(server)
        .await
        .expect("HANGAR_TEST_POSTGRES_URL answers");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
}

async fn seed(store: &Store) -> Entity {
    store.create_endpoint(&sample::github_com()).await.unwrap();
    store
        .create_credentials(&sample::pat("gh", "github.com", "ghp_TOKEN"))
        .await
        .unwrap();
    store
        .create_entity(&NewEntity {
            scope: EntityScope::Repository {
                owner: "octo".into(),
                name: "app".into(),
            },
            credentials_name: ResourceName::parse("gh").unwrap(),
            webhook_secret: Secret::new("whsec_HOOK"),
        })
        .await
        .unwrap()
}

fn event(entity: EntityId, id: i64, action: JobAction) -> JobEvent {
    JobEvent {
        job_id: JobId(id),
        run_attempt: 1,
        action,
        entity_id: entity,
        labels: Labels::parse_list("self-hosted,linux").unwrap(),
        repository: "octo/app".into(),
        workflow_run_id: Some(1),
        name: Some("build".into()),
        runner_name: (action == JobAction::InProgress).then(|| format!("runner-{id}")),
        conclusion: (action == JobAction::Completed).then(|| "success".to_owned()),
        pool_id: None,
    }
}

/// Job `base + n` gets `n % 3 + 1` actions (queued; then in_progress; then
/// completed), in order; the jobs' events are interleaved round-robin, so a
/// batch holds each job several times and spans several statements.
fn batch(entity: EntityId, base: i64, jobs: i64) -> Vec<JobEvent> {
    let actions = [
        JobAction::Queued,
        JobAction::InProgress,
        JobAction::Completed,
    ];
    let mut out = Vec::new();
    for step in 0..3 {
        for n in 0..jobs {
            if step <= (n % 3) as usize {
                out.push(event(entity, base + n, actions[step]));
            }
        }
    }
    out
}

fn expected_status(n: i64) -> JobStatus {
    match n % 3 {
        0 => JobStatus::Queued,
        1 => JobStatus::InProgress,
        _ => JobStatus::Completed,
    }
}

async fn same_batch_from_concurrent_tasks(sqlite: bool) {
    let db = TestDb::open(sqlite).await;
    let store = db.store.clone();
    let entity = seed(&store).await;
    const JOBS: i64 = 40;
    const TASKS: usize = 4;
    let base = 29_679_449_555_i64; // above 2^31
    for round in 0..3 {
        let base = base + round * 1000;
        let events = batch(entity.id, base, JOBS);
        assert!(events.len() > ROWS_PER_STATEMENT);
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            // Half the tasks see the jobs in the opposite order (a job's own
            // events keep theirs), as two replicas given the same
            // deliveries in another order would.
            let mut mine = events.clone();
            if t % 2 == 1 {
                mine.sort_by_key(|e| std::cmp::Reverse(e.job_id.0));
            }
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let out = store.record_job_events(&mine).await.expect("intake");
                mine.into_iter().zip(out).collect::<Vec<_>>()
            }));
        }
        let mut recorded = std::collections::HashMap::new();
        for t in tasks {
            for (ev, outcome) in t.await.unwrap() {
                let key = (ev.job_id.0, ev.action);
                if outcome != JobOutcome::Duplicate {
                    *recorded.entry(key).or_insert(0) += 1;
                } else {
                    recorded.entry(key).or_insert(0);
                }
            }
        }
        assert_eq!(recorded.len(), events.len());
        for (key, times) in &recorded {
            assert_eq!(*times, 1, "delivery {key:?} recorded {times} times");
        }
        let jobs = store
            .list_jobs(&JobFilter {
                entity_id: Some(entity.id),
                limit: Some(10_000),
                ..Default::default()
            })
            .await
            .unwrap();
        let mine: Vec<&Job> = jobs
            .iter()
            .filter(|j| (base..base + JOBS).contains(&j.id.0))
            .collect();
        assert_eq!(mine.len(), JOBS as usize, "each job once");
        for job in mine {
            let n = job.id.0 - base;
            assert_eq!(job.status, expected_status(n), "job {n}");
            if n % 3 >= 1 {
                assert_eq!(job.runner_name, Some(format!("runner-{}", job.id.0)));
            }
            if n % 3 == 2 {
                assert_eq!(job.conclusion.as_deref(), Some("success"));
            }
        }
    }
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_deliveries_from_concurrent_tasks_are_recorded_once_on_sqlite() {
    same_batch_from_concurrent_tasks(true).await;
}

/// Runs against PostgreSQL when `HANGAR_TEST_POSTGRES_URL` is set (else on
/// SQLite again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_deliveries_from_concurrent_tasks_are_recorded_once_on_postgres() {
    same_batch_from_concurrent_tasks(false).await;
}
