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

on_both_backends!(
    status_moves_forward_only_and_old_messages_change_nothing,
    started_and_completed_jobs_move_the_runner_in_the_same_transaction,
);
