//! Job intake with several writers at once: the same deliveries recorded
//! by concurrent tasks (on PostgreSQL, several connections, as several
//! replicas would) leave each job once, with the status its latest action
//! gives, and each delivery recorded by exactly one of them.

mod common;

use common::TestDb;
use hangar_core::*;
use hangar_store::*;
use hangar_testkit::sample;

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
    for (step, action) in actions.into_iter().enumerate() {
        for n in 0..jobs {
            if step <= (n % 3) as usize {
                out.push(event(entity, base + n, action));
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

async fn the_same_deliveries_from_concurrent_tasks_are_recorded_once(db: TestDb) {
    let store = db.open().await;
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
    store.close().await;
}

on_both_backends!(the_same_deliveries_from_concurrent_tasks_are_recorded_once);
