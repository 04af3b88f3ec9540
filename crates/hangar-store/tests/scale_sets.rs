//! Scale sets against a real database (SQLite and PostgreSQL): each drives exactly one pool,
//! written with it; pool listings for webhooks never show that pool while
//! the engine's listing does; deletes refuse while machines live.

mod common;

use hangar_core::policy::Breaker;
use hangar_core::*;
use hangar_store::*;
use hangar_testkit::sample;

use common::TestDb;

async fn open(db: &TestDb) -> Store {
    db.open().await
}

async fn seed(store: &Store) -> (Entity, Pool) {
    store.create_endpoint(&sample::github_com()).await.unwrap();
    store
        .create_credentials(&sample::pat("gh", "github.com", "ghp_x"))
        .await
        .unwrap();
    let entity = store
        .create_entity(&NewEntity {
            scope: EntityScope::Organization {
                name: "acme".into(),
            },
            credentials_name: ResourceName::parse("gh").unwrap(),
            webhook_secret: Secret::new("s"),
        })
        .await
        .unwrap();
    let pool = store
        .create_pool(entity.id, &sample::pool_spec("fake", "self-hosted", 3))
        .await
        .unwrap();
    (entity, pool)
}

fn spec(name: &str, max: u32) -> ScaleSetSpec {
    ScaleSetSpec::from_pool(
        ScaleSetSpec::parse_name(name).unwrap(),
        &sample::pool_spec("fake", "ignored", max),
    )
}

fn new(entity: EntityId, name: &str) -> NewScaleSet {
    NewScaleSet {
        entity_id: entity,
        spec: spec(name, 4),
        github_id: Some(7),
        runner_group_id: Some(1),
    }
}

async fn a_scale_set_is_stored_with_its_pool_and_read_back(db: TestDb) {
    let store = open(&db).await;
    let (entity, webhook_pool) = seed(&store).await;

    let mut n = new(entity.id, "lab-ubuntu");
    n.spec.runner_group = Some("lab".into());
    let s = store.create_scale_set(&n).await.unwrap();
    assert_eq!(s.spec, n.spec);
    assert_eq!(s.entity_id, entity.id);
    assert_eq!((s.github_id, s.runner_group_id), (Some(7), Some(1)));
    assert_eq!(s.state, ScaleSetState::Active);
    assert_eq!((s.last_message_id, s.desired_runners), (0, 0));
    assert_eq!(s.statistics, None);

    // Its pool: the scale set's settings, answering only to its name.
    let pool = store.pool(s.pool_id).await.unwrap();
    assert_eq!(pool.spec, n.spec.pool_spec());
    assert_eq!(pool.spec.tags.to_vec(), vec!["lab-ubuntu".to_owned()]);
    assert_eq!(pool.spec.runner_group.as_deref(), Some("lab"));
    assert_eq!(
        store.scale_set_by_pool(s.pool_id).await.unwrap(),
        Some(s.clone())
    );
    assert_eq!(
        store.scale_set_by_pool(webhook_pool.id).await.unwrap(),
        None
    );

    assert_eq!(store.scale_set(s.id).await.unwrap(), s);
    assert_eq!(store.list_scale_sets(None).await.unwrap(), vec![s.clone()]);
    assert_eq!(
        store.list_scale_sets(Some(entity.id)).await.unwrap(),
        vec![s.clone()]
    );
    assert!(
        store
            .list_scale_sets(Some(EntityId::new_random()))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .scale_set_by_name(entity.id, "LAB-Ubuntu")
            .await
            .unwrap()
            .map(|f| f.id),
        Some(s.id)
    );

    // Webhooks never see the scale set's pool; the engine does.
    let webhook: Vec<PoolId> = store
        .list_webhook_pools(None)
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(webhook, vec![webhook_pool.id]);
    let webhook_of_entity = store.list_webhook_pools(Some(entity.id)).await.unwrap();
    assert_eq!(webhook_of_entity.len(), 1);
    let all: Vec<PoolId> = store
        .list_pools(None)
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert!(all.contains(&s.pool_id) && all.contains(&webhook_pool.id));

    // It survives a restart.
    store.close().await;
    let store = open(&db).await;
    assert_eq!(store.scale_set(s.id).await.unwrap(), s);
}

async fn names_are_unique_per_entity_ignoring_case_and_a_refusal_stores_nothing(db: TestDb) {
    let store = open(&db).await;
    let (entity, _) = seed(&store).await;
    let s = store
        .create_scale_set(&new(entity.id, "lab"))
        .await
        .unwrap();
    let pools_before = store.list_pools(None).await.unwrap().len();

    let e = store
        .create_scale_set(&new(entity.id, "LAB"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("already has a scale set named")),
        "{e}"
    );
    let e = store
        .create_scale_set(&new(EntityId::new_random(), "other"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("does not exist")),
        "{e}"
    );
    let mut bad = new(entity.id, "bad");
    bad.spec.min_idle_runners = 9;
    let e = store.create_scale_set(&bad).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Invalid(m) if m.contains("max_runners")),
        "{e}"
    );

    // No half-made pool was left behind by any refusal.
    assert_eq!(store.list_pools(None).await.unwrap().len(), pools_before);
    assert_eq!(store.list_scale_sets(None).await.unwrap(), vec![s]);
}

async fn an_update_rewrites_both_rows_and_keeps_github_state(db: TestDb) {
    let store = open(&db).await;
    let (entity, _) = seed(&store).await;
    let s = store
        .create_scale_set(&new(entity.id, "lab"))
        .await
        .unwrap();
    let other = store
        .create_scale_set(&new(entity.id, "other"))
        .await
        .unwrap();
    store
        .record_pool_failure(s.pool_id, |b| Breaker {
            consecutive_failures: b.consecutive_failures + 1,
            last_error: Some("boom".into()),
            next_attempt_at: None,
        })
        .await
        .unwrap();

    let mut changed = s.spec.clone();
    changed.name = ScaleSetSpec::parse_name("lab-2").unwrap();
    changed.max_runners = 9;
    changed.image = "ubuntu-24.04".into();
    changed.runner_group = Some("lab".into());
    changed.enabled = false;
    let u = store.update_scale_set(s.id, &changed).await.unwrap();
    assert_eq!(u.spec, changed);
    assert_eq!(u.github_id, s.github_id);
    assert_eq!(u.pool_id, s.pool_id);
    let pool = store.pool(s.pool_id).await.unwrap();
    assert_eq!(pool.spec, changed.pool_spec());
    assert_eq!(
        store.pool_breaker(s.pool_id).await.unwrap(),
        Breaker::default()
    );

    // Renaming onto another scale set's name is refused and changes nothing.
    let mut clash = changed.clone();
    clash.name = ScaleSetSpec::parse_name("Other").unwrap();
    clash.max_runners = 1;
    let e = store.update_scale_set(s.id, &clash).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    assert_eq!(store.scale_set(s.id).await.unwrap().spec, changed);
    assert_eq!(store.scale_set(other.id).await.unwrap(), other);

    let e = store
        .update_scale_set(ScaleSetId::new_random(), &changed)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e}");
}

async fn github_ids_and_state_are_recorded(db: TestDb) {
    let store = open(&db).await;
    let (entity, _) = seed(&store).await;
    let mut n = new(entity.id, "lab");
    n.github_id = None;
    n.runner_group_id = None;
    let s = store.create_scale_set(&n).await.unwrap();
    assert_eq!(s.github_id, None);

    let s2 = store
        .set_scale_set_github(s.id, Some(42), Some(3))
        .await
        .unwrap();
    assert_eq!((s2.github_id, s2.runner_group_id), (Some(42), Some(3)));
    store
        .set_scale_set_state(
            s.id,
            ScaleSetState::DeletedOnGithub,
            Some("404 from GitHub"),
        )
        .await
        .unwrap();
    let s3 = store.scale_set(s.id).await.unwrap();
    assert_eq!(s3.state, ScaleSetState::DeletedOnGithub);
    assert_eq!(s3.last_error.as_deref(), Some("404 from GitHub"));
    store
        .set_scale_set_state(s.id, ScaleSetState::Active, None)
        .await
        .unwrap();
    assert_eq!(store.scale_set(s.id).await.unwrap().last_error, None);

    let missing = ScaleSetId::new_random();
    assert!(matches!(
        store
            .set_scale_set_state(missing, ScaleSetState::Error, Some("x"))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.set_scale_set_github(missing, Some(1), None).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn deletes_refuse_while_machines_live_and_then_take_both_rows(db: TestDb) {
    let store = open(&db).await;
    let (entity, _) = seed(&store).await;
    let s = store
        .create_scale_set(&new(entity.id, "lab"))
        .await
        .unwrap();
    let empty = store
        .create_scale_set(&new(entity.id, "empty"))
        .await
        .unwrap();

    // The entity cannot go while it has scale sets, and says which.
    let e = store.delete_entity(entity.id).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("scale set") && m.contains("lab")),
        "{e}"
    );
    // Its pool is not deleted through the pool route.
    let e = store.delete_pool(s.pool_id).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("scale set")),
        "{e}"
    );

    store
        .reserve_instance(&NewInstance {
            name: InstanceName::parse("hangar-ss1").unwrap(),
            pool_id: s.pool_id,
            provider_name: "fake".into(),
            job_id: None,
        })
        .await
        .unwrap()
        .unwrap();
    for e in [
        store.scale_set_deletable(s.id).await.unwrap_err(),
        store.delete_scale_set(s.id).await.unwrap_err(),
    ] {
        assert!(
            matches!(&e, StoreError::Conflict(m) if m.contains("hangar-ss1")),
            "{e}"
        );
    }
    assert!(store.scale_set(s.id).await.is_ok());
    assert!(store.pool(s.pool_id).await.is_ok());

    store.scale_set_deletable(empty.id).await.unwrap();
    store.delete_scale_set(empty.id).await.unwrap();
    assert!(matches!(
        store.scale_set(empty.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.pool(empty.pool_id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete_scale_set(empty.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.list_scale_sets(None).await.unwrap(), vec![s]);
}

on_both_backends!(
    a_scale_set_is_stored_with_its_pool_and_read_back,
    names_are_unique_per_entity_ignoring_case_and_a_refusal_stores_nothing,
    an_update_rewrites_both_rows_and_keeps_github_state,
    github_ids_and_state_are_recorded,
    deletes_refuse_while_machines_live_and_then_take_both_rows,
);
