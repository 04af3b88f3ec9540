//! Deciders racing from many connections: on PostgreSQL every store call
//! may run on its own connection (and replicas share the database), so
//! the read-then-write paths must hold the row they decide on. Each test
//! runs on both backends; on SQLite the single writer serialises them.

mod common;

use common::TestDb;
use hangar_core::jit::{self, JitFile};
use hangar_core::policy::Breaker;
use hangar_core::*;
use hangar_store::*;
use hangar_testkit::sample;

async fn seed(store: &Store, max: u32) -> (Entity, Pool) {
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
            webhook_secret: Secret::new("whsec_HOOK"),
        })
        .await
        .unwrap();
    let pool = store
        .create_pool(
            entity.id,
            &sample::pool_spec("fake", "self-hosted,linux", max),
        )
        .await
        .unwrap();
    (entity, pool)
}

fn name(n: usize) -> InstanceName {
    InstanceName::parse(&format!("hangar-{n}")).unwrap()
}

/// 20 tasks × 5 reservations (single and batched) into a pool of at most 7
/// runners: exactly 7 are made, whatever the interleaving.
async fn reservations_from_many_tasks_never_exceed_max_runners(db: TestDb) {
    let store = db.open().await;
    let (_, pool) = seed(&store, 7).await;
    let mut tasks = Vec::new();
    for t in 0..20 {
        let store = store.clone();
        let p = pool.id;
        tasks.push(tokio::spawn(async move {
            let mut made = 0;
            for k in 0..5 {
                let n = t * 10 + k;
                if t % 2 == 0 {
                    let new = NewInstance {
                        name: name(n),
                        pool_id: p,
                        provider_name: "fake".into(),
                        job_id: None,
                    };
                    made += usize::from(store.reserve_instance(&new).await.unwrap().is_some());
                } else {
                    made += store
                        .reserve_instances(p, "fake", &[name(n), name(1000 + n)])
                        .await
                        .unwrap()
                        .len();
                }
            }
            made
        }));
    }
    let mut made = 0;
    for t in tasks {
        made += t.await.unwrap();
    }
    assert_eq!(made, 7, "reservations made on {}", db.backend());
    assert_eq!(store.pool_usage_of(pool.id).await.unwrap().live, 7);
    let live = store
        .list_instances(&InstanceFilter {
            pool_id: Some(pool.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(live.len(), 7);

    // A retired instance frees its place for exactly one newcomer.
    let gone = &live[0].name;
    for to in [
        InstanceStatus::PendingDelete,
        InstanceStatus::Deleting,
        InstanceStatus::Deleted,
    ] {
        store
            .transition(gone, Change::Status(to, None))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for t in 0..10 {
        let store = store.clone();
        let p = pool.id;
        tasks.push(tokio::spawn(async move {
            store
                .reserve_instances(p, "fake", &[name(2000 + t)])
                .await
                .unwrap()
                .len()
        }));
    }
    let mut made = 0;
    for t in tasks {
        made += t.await.unwrap();
    }
    assert_eq!(made, 1);
    assert_eq!(store.pool_usage_of(pool.id).await.unwrap().live, 7);
}

/// Many callers make the same status move at once: one wins, the others
/// get a transition error, and the move is written once.
async fn a_status_move_is_made_once_by_racing_callers(db: TestDb) {
    let store = db.open().await;
    let (_, pool) = seed(&store, 3).await;
    let made = store
        .reserve_instances(pool.id, "fake", &[name(1)])
        .await
        .unwrap();
    let inst = made[0].name.clone();
    let mut tasks = Vec::new();
    for k in 0..12u8 {
        let store = store.clone();
        let inst = inst.clone();
        tasks.push(tokio::spawn(async move {
            let hash = [k; 32];
            match store
                .transition(&inst, Change::BeginCreate { token_hash: &hash })
                .await
            {
                Ok(_) => true,
                Err(StoreError::Transition(_)) => false,
                Err(e) => panic!("{e}"),
            }
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1, "one BeginCreate on {}", db.backend());
    let now = store.instance(&inst).await.unwrap();
    assert_eq!(now.status, InstanceStatus::Creating);
    assert_eq!(now.create_attempts, 1, "the attempt is counted once");
}

/// A JIT config (whole, or one of its files) is handed out once even when
/// the instance asks from several connections at once.
async fn racing_jit_fetches_get_it_once(db: TestDb) {
    let store = db.open().await;
    let (_, pool) = seed(&store, 3).await;
    let made = store
        .reserve_instances(pool.id, "fake", &[name(1), name(2)])
        .await
        .unwrap();
    let (whole, files) = (made[0].name.clone(), made[1].name.clone());
    store
        .set_instance_jit(&whole, 1, &Secret::new("jit"))
        .await
        .unwrap();
    let cfg = jit::encode_jit_config([
        (JitFile::Runner, &b"R"[..]),
        (JitFile::Credentials, &b"C"[..]),
        (JitFile::CredentialsRsaParams, &b"P"[..]),
    ]);
    store
        .set_instance_jit(&files, 2, &Secret::new(cfg))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for k in 0..16 {
        let store = store.clone();
        let (whole, files) = (whole.clone(), files.clone());
        tasks.push(tokio::spawn(async move {
            if k % 2 == 0 {
                (store.take_jit_config(&whole).await.is_ok(), false)
            } else {
                (
                    false,
                    store.take_jit_file(&files, JitFile::Runner).await.is_ok(),
                )
            }
        }));
    }
    let (mut configs, mut runner_files) = (0, 0);
    for t in tasks {
        let (c, f) = t.await.unwrap();
        configs += usize::from(c);
        runner_files += usize::from(f);
    }
    assert_eq!((configs, runner_files), (1, 1), "on {}", db.backend());
}

/// Failed creates reported at once all count in the pool's breaker.
async fn racing_failures_all_count_in_the_breaker(db: TestDb) {
    let store = db.open().await;
    let (_, pool) = seed(&store, 3).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        let p = pool.id;
        tasks.push(tokio::spawn(async move {
            store
                .record_pool_failure(p, |b| Breaker {
                    consecutive_failures: b.consecutive_failures + 1,
                    last_error: Some("quota".into()),
                    next_attempt_at: None,
                })
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        store
            .pool_breaker(pool.id)
            .await
            .unwrap()
            .consecutive_failures,
        10,
        "on {}",
        db.backend()
    );
}

on_both_backends!(
    reservations_from_many_tasks_never_exceed_max_runners,
    a_status_move_is_made_once_by_racing_callers,
    racing_jit_fetches_get_it_once,
    racing_failures_all_count_in_the_breaker,
);
