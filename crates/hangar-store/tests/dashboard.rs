//! The dashboard's reads against a real database (SQLite and PostgreSQL): queues per pool, the
//! queued → runner wait recorded when a job moves to `in_progress`, jobs
//! filtered by repository and label with their times, recent failures.

mod common;

use std::time::Duration;

use hangar_core::*;
use hangar_store::*;
use hangar_testkit::sample;

use common::TestDb;

async fn open(db: &TestDb) -> Store {
    db.open().await
}

async fn seed(store: &Store) -> (EntityId, PoolId) {
    store.create_endpoint(&sample::github_com()).await.unwrap();
    store
        .create_credentials(&sample::pat("gh", "github.com", "ghp_TOKEN"))
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
    let pool = store
        .create_pool(
            entity.id,
            &sample::pool_spec("fake", "self-hosted,linux", 3),
        )
        .await
        .unwrap();
    (entity.id, pool.id)
}

fn event(
    entity: EntityId,
    id: i64,
    action: JobAction,
    repo: &str,
    labels: &str,
    pool: Option<PoolId>,
) -> JobEvent {
    JobEvent {
        job_id: JobId(id),
        run_attempt: 1,
        action,
        entity_id: entity,
        labels: Labels::parse_list(labels).unwrap(),
        repository: repo.into(),
        workflow_run_id: Some(1),
        name: Some("build".into()),
        runner_name: matches!(action, JobAction::InProgress | JobAction::Completed)
            .then(|| format!("hangar-{id}")),
        conclusion: (action == JobAction::Completed).then(|| "success".to_owned()),
        pool_id: pool,
    }
}

async fn waits_and_run_times_come_from_the_deliveries(db: TestDb) {
    let store = open(&db).await;
    let (entity, pool) = seed(&store).await;
    let p = Some(pool);
    let before = clock::now();
    store
        .record_job_events(&[
            event(
                entity,
                1,
                JobAction::Queued,
                "octo/app",
                "self-hosted,linux",
                p,
            ),
            event(
                entity,
                2,
                JobAction::Queued,
                "octo/app",
                "self-hosted,linux",
                p,
            ),
            event(entity, 3, JobAction::Queued, "octo/other", "windows", None),
        ])
        .await
        .unwrap();

    let queues = store.pool_queues().await.unwrap();
    assert_eq!(
        queues.len(),
        1,
        "unmatched jobs belong to no pool: {queues:?}"
    );
    assert_eq!((queues[0].pool_id, queues[0].queued), (pool, 2));
    assert!(queues[0].oldest_queued_at >= before - chrono::Duration::seconds(1));

    // Job 1's runner takes it a little later, then it completes.
    tokio::time::sleep(Duration::from_millis(60)).await;
    store
        .record_job_events(&[event(
            entity,
            1,
            JobAction::InProgress,
            "octo/app",
            "self-hosted,linux",
            p,
        )])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    store
        .record_job_events(&[event(
            entity,
            1,
            JobAction::Completed,
            "octo/app",
            "self-hosted,linux",
            p,
        )])
        .await
        .unwrap();
    // A job first heard of in progress has no queue time to measure.
    store
        .record_job_events(&[event(
            entity,
            4,
            JobAction::InProgress,
            "octo/app",
            "self-hosted,linux",
            p,
        )])
        .await
        .unwrap();

    let samples = store
        .wait_samples(clock::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].pool_id, p);
    assert!(samples[0].wait_ms >= 60, "{samples:?}");
    assert!(
        store
            .wait_samples(clock::now() + chrono::Duration::seconds(1))
            .await
            .unwrap()
            .is_empty(),
        "only the window's samples"
    );

    let all = |f: JobTimesFilter| {
        let store = store.clone();
        async move {
            let mut ids: Vec<i64> = store
                .jobs_with_times(&JobTimesFilter { limit: 100, ..f })
                .await
                .unwrap()
                .iter()
                .map(|t| t.job.id.0)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(all(JobTimesFilter::default()).await, vec![1, 2, 3, 4]);
    let label = |l: &str| JobTimesFilter {
        label: Some(l.into()),
        ..Default::default()
    };
    assert_eq!(
        all(label("LINUX")).await,
        vec![1, 2, 4],
        "labels match whole, any case"
    );
    assert_eq!(all(label("lin")).await, Vec::<i64>::new());
    let repo = |r: &str| JobTimesFilter {
        repository: Some(r.into()),
        ..Default::default()
    };
    assert_eq!(
        all(repo("OTHER")).await,
        vec![3],
        "part of owner/name, any case"
    );
    assert_eq!(all(repo("octo/")).await, vec![1, 2, 3, 4]);
    let done = store
        .jobs_with_times(&JobTimesFilter {
            status: Some(JobStatus::Completed),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    let (queued, started, finished) = (
        done[0].queued_at,
        done[0].started_at.expect("started"),
        done[0].finished_at.expect("finished"),
    );
    assert!((started - queued).num_milliseconds() >= 60);
    assert!((finished - started).num_milliseconds() >= 40);
    let first_seen_running = store
        .jobs_with_times(&JobTimesFilter {
            status: Some(JobStatus::InProgress),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first_seen_running[0].job.id, JobId(4));
    assert_eq!(first_seen_running[0].started_at, None);

    let queues = store.pool_queues().await.unwrap();
    assert_eq!(queues[0].queued, 1, "job 1 left the queue");
}

async fn recent_failures_are_instances_that_failed(db: TestDb) {
    let store = open(&db).await;
    let (_, pool) = seed(&store).await;
    let reserve = |n: u32| {
        let store = store.clone();
        async move {
            store
                .reserve_instance(&NewInstance {
                    name: InstanceName::parse(&format!("hangar-{n}")).unwrap(),
                    pool_id: pool,
                    provider_name: "fake".into(),
                    job_id: None,
                })
                .await
                .unwrap()
                .expect("capacity")
                .name
        }
    };
    let healthy = reserve(1).await;
    let failing = reserve(2).await;
    store
        .count_failed_create(&failing, "provider refused the create")
        .await
        .unwrap();
    let failures = store.recent_failures(10).await.unwrap();
    let names: Vec<_> = failures.iter().map(|f| f.name.clone()).collect();
    assert_eq!(names, vec![failing], "not {healthy}");
    assert_eq!(failures[0].create_attempts, 1);
    assert_eq!(failures[0].pool_id, pool);
}

/// A scale set's runner requests wait in its pool's queue until a runner
/// starts them; the start the queue reports gives the wait, once.
async fn scale_set_jobs_queue_and_wait_in_their_pool(db: TestDb) {
    let store = open(&db).await;
    let (entity, webhook_pool) = seed(&store).await;
    let pool = store
        .create_pool(entity, &sample::pool_spec("fake", "ss", 2))
        .await
        .unwrap();
    let ss = store
        .attach_scale_set(pool.id, "ss", Some(7))
        .await
        .unwrap();
    let queued_at = clock::now() - chrono::Duration::seconds(30);
    let job = |rid: i64| ScaleSetJob {
        runner_request_id: rid,
        repository: "octo/app".into(),
        job_id: format!("j{rid}"),
        job_display_name: None,
        workflow_run_id: None,
        request_labels: vec!["ss".into()],
        queue_time: Some(queued_at),
    };
    let apply = |id: i64, events: Vec<ScaleSetJobEvent>| {
        let (store, ss) = (store.clone(), ss.clone());
        async move {
            store
                .apply_scale_set_message(
                    &ss,
                    &ScaleSetMessage {
                        message_id: id,
                        statistics: None,
                        events,
                    },
                    &[],
                )
                .await
                .unwrap()
        }
    };
    apply(
        1,
        vec![
            ScaleSetJobEvent::Available { job: job(1) },
            ScaleSetJobEvent::Assigned { job: job(2) },
        ],
    )
    .await;
    let queues = store.pool_queues().await.unwrap();
    assert_eq!(queues.len(), 1, "{queues:?}");
    assert_eq!((queues[0].pool_id, queues[0].queued), (pool.id, 2));
    assert_eq!(
        queues[0].oldest_queued_at.timestamp_millis(),
        queued_at.timestamp_millis()
    );
    assert!(
        store
            .wait_samples(clock::now() - chrono::Duration::hours(1))
            .await
            .unwrap()
            .is_empty()
    );

    // Job 1's runner starts it, then it completes: its wait is measured
    // from the service's queue time, and the completion changes nothing.
    let started = |job| ScaleSetJobEvent::Started {
        job,
        runner_id: 5,
        runner_name: "hangar-ss-1".into(),
    };
    apply(2, vec![started(job(1))]).await;
    apply(
        3,
        vec![ScaleSetJobEvent::Completed {
            job: job(1),
            result: "succeeded".into(),
            runner_id: 5,
            runner_name: "hangar-ss-1".into(),
        }],
    )
    .await;
    let queues = store.pool_queues().await.unwrap();
    assert_eq!((queues[0].pool_id, queues[0].queued), (pool.id, 1));
    let samples = store
        .wait_samples(clock::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].pool_id, Some(pool.id));
    assert!(samples[0].wait_ms >= 30_000, "{samples:?}");
    assert_ne!(samples[0].pool_id, Some(webhook_pool));

    // Once every job started, the pool has no queue left.
    apply(4, vec![started(job(2))]).await;
    assert!(store.pool_queues().await.unwrap().is_empty());
    assert_eq!(
        store
            .wait_samples(clock::now() - chrono::Duration::hours(1))
            .await
            .unwrap()
            .len(),
        2
    );
}

on_both_backends!(
    waits_and_run_times_come_from_the_deliveries,
    recent_failures_are_instances_that_failed,
    scale_set_jobs_queue_and_wait_in_their_pool,
);
