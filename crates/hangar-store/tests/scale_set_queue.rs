//! A scale set's queue messages applied to a real database (SQLite and
//! PostgreSQL): one
//! transaction per message, job status only forward, duplicates and
//! redeliveries harmless, demand from the counters, runners moved through
//! the transition tables.

mod common;

use common::TestDb;
use hangar_core::*;
use hangar_store::*;
use hangar_testkit::sample;

async fn setup(db: &TestDb, max: u32, min_idle: u32) -> (Store, Pool, String) {
    let store = db.open().await;
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
    let mut spec = sample::pool_spec("fake", "ss", max);
    spec.min_idle_runners = min_idle;
    let pool = store.create_pool(entity.id, &spec).await.unwrap();
    let id = store
        .attach_scale_set(pool.id, "ss", Some(7))
        .await
        .unwrap();
    (store, pool, id)
}

fn job(rid: i64) -> ScaleSetJob {
    ScaleSetJob {
        runner_request_id: rid,
        repository: "octo/app".into(),
        job_id: format!("j{rid}"),
        job_display_name: None,
        workflow_run_id: None,
        request_labels: vec!["ss".into()],
        queue_time: None,
    }
}

fn stats(assigned: i64) -> Option<ScaleSetStatistics> {
    Some(ScaleSetStatistics {
        total_assigned_jobs: assigned,
        ..Default::default()
    })
}

fn msg(id: i64, assigned: i64, events: Vec<ScaleSetJobEvent>) -> ScaleSetMessage {
    ScaleSetMessage {
        message_id: id,
        statistics: stats(assigned),
        events,
    }
}

async fn status_moves_forward_only_and_old_messages_change_nothing(db: TestDb) {
    let (store, pool, id) = setup(&db, 3, 1).await;
    let out = store
        .apply_scale_set_message(
            &id,
            &msg(
                2,
                1,
                vec![
                    ScaleSetJobEvent::Available { job: job(10) },
                    ScaleSetJobEvent::Assigned { job: job(10) },
                    // A repeat within the batch, and an older state after a
                    // newer one: neither moves it back.
                    ScaleSetJobEvent::Available { job: job(10) },
                ],
            ),
            &[10],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        AppliedMessage::Applied {
            pool_id: pool.id,
            desired_runners: 2,
            marked_active: 0,
            retired: 0
        }
    );
    assert_eq!(
        store.scale_set_job_statuses(&id).await.unwrap(),
        vec![(10, "assigned".to_owned())]
    );
    // The same id again, or an older one: nothing changes.
    for old in [2, 1] {
        let again = store
            .apply_scale_set_message(
                &id,
                &msg(old, 9, vec![ScaleSetJobEvent::Available { job: job(11) }]),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(again, AppliedMessage::AlreadyApplied);
    }
    let p = store.scale_set_progress(&id).await.unwrap().unwrap();
    assert_eq!((p.last_message_id, p.desired_runners), (2, 2));
    assert_eq!(store.scale_set_job_statuses(&id).await.unwrap().len(), 1);
    // Demand is capped at max_runners.
    store
        .apply_scale_set_message(&id, &msg(3, 50, vec![]), &[])
        .await
        .unwrap();
    assert_eq!(store.scale_set_desired(pool.id).await.unwrap(), Some(3));
}

async fn started_and_completed_jobs_move_the_runner_in_the_same_transaction(db: TestDb) {
    let (store, pool, id) = setup(&db, 3, 0).await;
    let name = InstanceName::parse("hangar-ss1").unwrap();
    store
        .reserve_instance(&NewInstance {
            name: name.clone(),
            pool_id: pool.id,
            provider_name: "fake".into(),
            job_id: None,
        })
        .await
        .unwrap()
        .unwrap();
    store
        .transition(
            &name,
            Change::BeginCreate {
                token_hash: &[1; 32],
            },
        )
        .await
        .unwrap();
    let started = ScaleSetJobEvent::Started {
        job: job(5),
        runner_id: 44,
        runner_name: name.to_string(),
    };
    let out = store
        .apply_scale_set_message(&id, &msg(1, 1, vec![started]), &[])
        .await
        .unwrap();
    assert!(matches!(
        out,
        AppliedMessage::Applied {
            marked_active: 1,
            ..
        }
    ));
    assert_eq!(
        store.instance(&name).await.unwrap().runner_status,
        RunnerStatus::Active
    );
    // Completed while the instance is still `creating`: it cannot be
    // retired yet, and is once it runs.
    let completed = ScaleSetJobEvent::Completed {
        job: job(5),
        result: "succeeded".into(),
        runner_id: 44,
        runner_name: name.to_string(),
    };
    store
        .apply_scale_set_message(&id, &msg(2, 0, vec![completed]), &[])
        .await
        .unwrap();
    assert_eq!(
        store.instance(&name).await.unwrap().status,
        InstanceStatus::Creating
    );
    store
        .transition(
            &name,
            Change::FinishCreate {
                provider_id: "p1",
                addresses: &[],
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.settle_scale_set_runners(pool.id).await.unwrap(),
        (0, 1)
    );
    let inst = store.instance(&name).await.unwrap();
    assert_eq!(inst.status, InstanceStatus::PendingDelete);
    assert_eq!(inst.status_message.as_deref(), Some("job completed"));
    assert_eq!(
        store.settle_scale_set_runners(pool.id).await.unwrap(),
        (0, 0),
        "nothing twice"
    );
}

/// Several connections (on PostgreSQL, as several replicas' listeners
/// would after a failover) apply messages to one scale set at once: each
/// message id is applied once, and the last applied id never goes back.
async fn concurrent_applies_apply_each_message_once(db: TestDb) {
    let (store, _pool, id) = setup(&db, 10, 0).await;
    let same = msg(
        2,
        1,
        vec![
            ScaleSetJobEvent::Available { job: job(10) },
            ScaleSetJobEvent::Assigned { job: job(10) },
        ],
    );
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (store, id, m) = (store.clone(), id.clone(), same.clone());
        tasks.push(tokio::spawn(async move {
            store.apply_scale_set_message(&id, &m, &[10]).await.unwrap()
        }));
    }
    let mut applied = 0;
    for t in tasks {
        if t.await.unwrap() != AppliedMessage::AlreadyApplied {
            applied += 1;
        }
    }
    assert_eq!(applied, 1, "one of the six applies the message");

    // Newer ids from several tasks, in no particular order: whichever
    // lands last, the scale set ends at the highest.
    let mut tasks = Vec::new();
    for message_id in [5, 3, 7, 4, 6, 3, 7] {
        let (store, id) = (store.clone(), id.clone());
        let m = msg(
            message_id,
            message_id,
            vec![ScaleSetJobEvent::Available {
                job: job(100 + message_id),
            }],
        );
        tasks.push(tokio::spawn(async move {
            (
                message_id,
                store.apply_scale_set_message(&id, &m, &[]).await.unwrap(),
            )
        }));
    }
    let mut applied_ids = Vec::new();
    for t in tasks {
        let (message_id, out) = t.await.unwrap();
        if out != AppliedMessage::AlreadyApplied {
            applied_ids.push(message_id);
        }
    }
    let mut unique = applied_ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), applied_ids.len(), "no id applied twice");
    assert!(applied_ids.contains(&7));
    let p = store.scale_set_progress(&id).await.unwrap().unwrap();
    assert_eq!(p.last_message_id, 7);
    assert_eq!(p.desired_runners, 7, "the counters of message 7");
    store.close().await;
}

/// Concurrent creates of one scale set's pool each serve a different
/// waiting request, and no request is served twice.
async fn each_waiting_request_is_served_once(db: TestDb) {
    let (store, pool, id) = setup(&db, 10, 0).await;
    let events = (1..=3)
        .map(|rid| ScaleSetJobEvent::Assigned { job: job(rid) })
        .collect();
    store
        .apply_scale_set_message(&id, &msg(1, 3, events), &[])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.serve_scale_set_job(pool.id).await.unwrap()
        }));
    }
    let mut served = 0;
    for t in tasks {
        served += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(served, 3, "three waiting requests, each served once");
    assert_eq!(store.serve_scale_set_job(pool.id).await.unwrap(), None);
    store.close().await;
}

/// Create steps whose writes are committed together each serve a
/// different waiting request, oldest first, and none twice.
async fn creates_written_together_serve_each_request_once(db: TestDb) {
    let (store, pool, id) = setup(&db, 10, 0).await;
    let events = (1..=3)
        .map(|rid| ScaleSetJobEvent::Assigned { job: job(rid) })
        .collect();
    store
        .apply_scale_set_message(&id, &msg(1, 3, events), &[])
        .await
        .unwrap();
    let mut names = Vec::new();
    for n in 0..4 {
        let new = NewInstance {
            name: InstanceName::parse(&format!("ss-runner-{n}")).unwrap(),
            pool_id: pool.id,
            provider_name: "fake".into(),
            job_id: None,
        };
        names.push(store.reserve_instance(&new).await.unwrap().unwrap().name);
    }
    let hashes: Vec<[u8; 32]> = (0..4u8).map(|n| [n; 32]).collect();
    let writes: Vec<CreateWrite<'_>> = names
        .iter()
        .zip(&hashes)
        .map(|(name, h)| CreateWrite {
            name,
            change: Change::BeginCreate { token_hash: h },
            jit: None,
            serve_scale_set_job: true,
            fence: None,
        })
        .collect();
    let out = store.create_writes(&writes).await.unwrap();
    let served = out
        .iter()
        .filter(|r| r.as_ref().unwrap().1.is_some())
        .count();
    assert_eq!(served, 3, "three waiting requests, each served once");
    assert!(
        out[3].as_ref().unwrap().1.is_none(),
        "the fourth finds none"
    );
    assert_eq!(store.serve_scale_set_job(pool.id).await.unwrap(), None);
    store.close().await;
}

/// The jobs a message's acquire took are demand with that message, though
/// its counters (taken before the acquire) still call them available; the
/// service's next message, which counts them as assigned, asks for no
/// more, and a job is never counted twice.
async fn jobs_acquired_with_a_message_are_demand_at_once_and_counted_once(db: TestDb) {
    let (store, _pool, id) = setup(&db, 10, 1).await;
    let sid: ScaleSetId = id.parse().unwrap();
    let counters = |available: i64, assigned: i64| {
        Some(ScaleSetStatistics {
            total_available_jobs: available,
            total_acquired_jobs: 0,
            total_assigned_jobs: assigned,
            total_running_jobs: 0,
            total_registered_runners: 0,
            total_busy_runners: 0,
            total_idle_runners: 0,
        })
    };
    let available = |rids: &[i64]| -> Vec<ScaleSetJobEvent> {
        rids.iter()
            .map(|r| ScaleSetJobEvent::Available { job: job(*r) })
            .collect()
    };
    let desired = || async { store.scale_set(sid).await.unwrap().desired_runners };
    // One job assigned earlier; two offered now and acquired: 1 + 1 + 2.
    let m = ScaleSetMessage {
        message_id: 1,
        statistics: counters(2, 1),
        events: available(&[1, 2]),
    };
    store
        .apply_scale_set_message(&id, &m, &[1, 2])
        .await
        .unwrap();
    assert_eq!(desired().await, 4);
    // The service's JobAssigned for them: the same demand, not more.
    let m = ScaleSetMessage {
        message_id: 2,
        statistics: counters(0, 3),
        events: vec![
            ScaleSetJobEvent::Assigned { job: job(1) },
            ScaleSetJobEvent::Assigned { job: job(2) },
        ],
    };
    store.apply_scale_set_message(&id, &m, &[]).await.unwrap();
    assert_eq!(desired().await, 4);
    // A job offered again that is this scale set's already is not new
    // demand.
    let m = ScaleSetMessage {
        message_id: 3,
        statistics: counters(1, 3),
        events: available(&[2]),
    };
    store.apply_scale_set_message(&id, &m, &[2]).await.unwrap();
    assert_eq!(desired().await, 4);
    // Counters that no longer call the acquired job available: counted
    // once, by the counters.
    let m = ScaleSetMessage {
        message_id: 4,
        statistics: counters(0, 4),
        events: available(&[5]),
    };
    store.apply_scale_set_message(&id, &m, &[5]).await.unwrap();
    assert_eq!(desired().await, 5);
}

on_both_backends!(
    jobs_acquired_with_a_message_are_demand_at_once_and_counted_once,
    status_moves_forward_only_and_old_messages_change_nothing,
    started_and_completed_jobs_move_the_runner_in_the_same_transaction,
    concurrent_applies_apply_each_message_once,
    each_waiting_request_is_served_once,
    creates_written_together_serve_each_request_once,
);
