//! Pool leases on both backends: spread over replicas, takeover with a new
//! token, a stale holder's fenced write refused, and never two holders at
//! once under a race. PostgreSQL runs when `HANGAR_TEST_POSTGRES_URL` names
//! a server (each test makes and drops its own database); SQLite always.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hangar_core::{InstanceName, InstanceStatus, PoolId, ReplicaId, Secret};
use hangar_store::{
    Change, Fence, Lease, NewInstance, PoolFence, Store, StoreError, StoreOptions, fenced,
};
use sqlx::{ConnectOptions, Connection};

const PASS: &str = "a test passphrase that is long enough!";

/// A store on one backend, and how to drop what it made.
struct Backend {
    store: Store,
    _dir: Option<tempfile::TempDir>,
    drop_db: Option<(String, String)>,
    /// The PostgreSQL database's URL.
    pg_url: Option<String>,
}

impl Backend {
    async fn finish(self) {
        self.store.close().await;
        if let Some((admin, name)) = self.drop_db {
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await
            .unwrap();
        }
    }
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hangar.db").display());
    let store = Store::open(&StoreOptions::new(url, Secret::new(PASS)))
        .await
        .unwrap();
    Backend {
        store,
        _dir: Some(dir),
        drop_db: None,
        pg_url: None,
    }
}

async fn postgres() -> Option<Backend> {
    let admin = std::env::var("HANGAR_TEST_POSTGRES_URL").ok()?;
    let name = format!("hangar_leases_{}", uuid::Uuid::new_v4().simple());
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
    let store = Store::open(&StoreOptions::new(url.clone(), Secret::new(PASS)))
        .await
        .unwrap();
    Some(Backend {
        store,
        _dir: None,
        drop_db: Some((admin, name)),
        pg_url: Some(url),
    })
}

async fn backends() -> Vec<Backend> {
    let mut all = vec![sqlite().await];
    match postgres().await {
        Some(pg) => all.push(pg),
        None => eprintln!("HANGAR_TEST_POSTGRES_URL unset: PostgreSQL not tested"),
    }
    all
}

/// Pool rows for leases to name. Leases only need the pools to exist, so
/// the rows are written directly, with foreign key checks off for the one
/// connection that writes them (no entity behind them).
async fn pools(b: &Backend, n: usize) -> Vec<PoolId> {
    let ids: Vec<PoolId> = (0..n).map(|_| PoolId::new_random()).collect();
    let insert = "INSERT INTO pools (id, entity_id, provider_name, image, flavor, tags, \
        os_type, os_arch, min_idle_runners, max_runners, runner_prefix, \
        runner_bootstrap_timeout, extra_specs, priority, enabled, created_at, updated_at, \
        scale_set) VALUES ($1, $2, 'fake', 'img', 'small', '[]', 'linux', 'x64', 0, 1, \
        'hangar', 20, '{}', 0, TRUE, 0, 0, FALSE)";
    match b.store.path() {
        Some(path) => {
            let mut c = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .foreign_keys(false)
                .connect()
                .await
                .unwrap();
            for id in &ids {
                sqlx::query(insert)
                    .bind(id.to_string())
                    .bind(uuid::Uuid::new_v4().to_string())
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
        None => {
            let url = b.pg_url.as_deref().expect("a PostgreSQL backend");
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("SET session_replication_role = replica")
                .execute(&mut c)
                .await
                .unwrap();
            for id in &ids {
                sqlx::query(insert)
                    .bind(id.to_string())
                    .bind(uuid::Uuid::new_v4().to_string())
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }
    ids
}

const TTL: Duration = Duration::from_secs(30);

fn fence(me: ReplicaId, lease: &Lease) -> Fence {
    Fence {
        replica: me,
        token: lease.token,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn leases_spread_over_replicas_and_a_released_pool_fences_its_old_holder() {
    for b in backends().await {
        let store = &b.store;
        let what = store.backend_name();
        let ids = pools(&b, 4).await;
        let (a, bb) = (ReplicaId::new_random(), ReplicaId::new_random());

        // Alone, A's share is every pool, and it takes them all.
        let r = store.renew_leases(a, TTL).await.unwrap();
        assert_eq!((r.held.len(), r.fair_share), (0, 4), "{what}");
        let taken_a = store.acquire_leases(a, TTL, r.fair_share).await.unwrap();
        assert_eq!(taken_a.len(), 4, "{what}");
        assert!(taken_a.iter().all(|l| l.token == 1), "{what}: {taken_a:?}");

        // B arrives: its share is two, but nothing is free.
        let r = store.renew_leases(bb, TTL).await.unwrap();
        assert_eq!(r.fair_share, 2, "{what}");
        assert!(store.acquire_leases(bb, TTL, 2).await.unwrap().is_empty());

        // A sees two live replicas and lets two pools go.
        let r = store.renew_leases(a, TTL).await.unwrap();
        assert_eq!((r.held.len(), r.fair_share), (4, 2), "{what}");
        let (keep, give) = r.held.split_at(2);
        for l in give {
            assert!(store.release_lease(a, l.pool_id).await.unwrap());
        }
        // A does not take back what it let go of ...
        assert!(store.acquire_leases(a, TTL, 2).await.unwrap().is_empty());
        // ... B takes it, under the next token.
        let taken_b = store.acquire_leases(bb, TTL, 2).await.unwrap();
        let mut got: Vec<PoolId> = taken_b.iter().map(|l| l.pool_id).collect();
        let mut want: Vec<PoolId> = give.iter().map(|l| l.pool_id).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{what}");
        assert!(taken_b.iter().all(|l| l.token == 2), "{what}: {taken_b:?}");

        // A's write for a pool it gave away is refused; B's and A's own pass.
        let e = store
            .check_fence(give[0].pool_id, &fence(a, &give[0]))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Fenced(_)), "{what}: {e}");
        let b_lease = taken_b
            .iter()
            .find(|l| l.pool_id == give[0].pool_id)
            .unwrap();
        store
            .check_fence(give[0].pool_id, &fence(bb, b_lease))
            .await
            .unwrap();
        store
            .check_fence(keep[0].pool_id, &fence(a, &keep[0]))
            .await
            .unwrap();
        // Every pool has one holder.
        for id in &ids {
            let row = store.pool_lease(*id).await.unwrap().unwrap();
            assert!(row.holder == Some(a) || row.holder == Some(bb), "{what}");
        }

        // A shuts down cleanly: its pools lapse at once and B may take
        // them beyond its share; A's row is gone, so B's share is all.
        store.retire_replica(a).await.unwrap();
        let r = store.renew_leases(bb, TTL).await.unwrap();
        assert_eq!((r.held.len(), r.fair_share), (2, 4), "{what}");
        let more = store.acquire_leases(bb, TTL, 2).await.unwrap();
        assert_eq!(more.len(), 2, "{what}");
        assert!(more.iter().all(|l| l.token == 2), "{what}: {more:?}");
        b.finish().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_lapsed_lease_is_taken_under_a_new_token_and_the_old_holder_is_fenced() {
    for b in backends().await {
        let store = &b.store;
        let what = store.backend_name();
        let ids = pools(&b, 1).await;
        let (a, bb) = (ReplicaId::new_random(), ReplicaId::new_random());
        let short = Duration::from_millis(300);

        store.renew_leases(a, short).await.unwrap();
        let held = store.acquire_leases(a, short, 1).await.unwrap();
        assert_eq!(held.len(), 1, "{what}");
        // While it runs, B cannot take it even with room.
        store.renew_leases(bb, TTL).await.unwrap();
        assert!(store.acquire_leases(bb, TTL, 1).await.unwrap().is_empty());

        // A stops renewing (killed, cut off): the lease lapses.
        tokio::time::sleep(short * 3).await;
        let taken = store.acquire_leases(bb, TTL, 1).await.unwrap();
        assert_eq!(taken.len(), 1, "{what}");
        assert_eq!(taken[0].token, held[0].token + 1, "{what}");

        // A comes back: its renewal finds nothing held and its write under
        // the old token is refused.
        let r = store.renew_leases(a, short).await.unwrap();
        assert!(r.held.is_empty(), "{what}: {r:?}");
        let e = store
            .check_fence(ids[0], &fence(a, &held[0]))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Fenced(_)), "{what}: {e}");
        let row = store.pool_lease(ids[0]).await.unwrap().unwrap();
        assert_eq!((row.holder, row.token), (Some(bb), 2), "{what}");

        // The writes a step makes for the pool, run under A's old fence,
        // are refused and change nothing; under B's they are made.
        let stale = Some(PoolFence {
            pool_id: ids[0],
            fence: fence(a, &held[0]),
        });
        let current = Some(PoolFence {
            pool_id: ids[0],
            fence: fence(bb, &taken[0]),
        });
        let new = NewInstance {
            name: InstanceName::parse("hangar-fenced-1").unwrap(),
            pool_id: ids[0],
            provider_name: "fake".into(),
            job_id: None,
        };
        let e = fenced(stale, store.reserve_instance(&new))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Fenced(_)), "{what}: {e}");
        assert!(store.instance(&new.name).await.is_err(), "{what}");
        let inst = fenced(current, store.reserve_instance(&new))
            .await
            .unwrap()
            .expect("room for one");
        let names = [InstanceName::parse("hangar-fenced-2").unwrap()];
        let e = fenced(stale, store.reserve_instances(ids[0], "fake", &names))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Fenced(_)), "{what}: {e}");
        let to_delete = Change::Status(InstanceStatus::PendingDelete, None);
        let e = fenced(stale, store.transition(&inst.name, to_delete))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Fenced(_)), "{what}: {e}");
        let e = fenced(
            stale,
            store.set_instance_jit(&inst.name, 7, &Secret::new("jit")),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, StoreError::Fenced(_)), "{what}: {e}");
        let still = store.instance(&inst.name).await.unwrap();
        assert_eq!(still.status, InstanceStatus::PendingCreate, "{what}");
        assert_eq!(still.runner_id, None, "{what}");
        let moved = fenced(current, store.transition(&inst.name, to_delete))
            .await
            .unwrap();
        assert_eq!(moved.status, InstanceStatus::PendingDelete, "{what}");
        // Unfenced writes (the admin API, an instance's callbacks) pass.
        store
            .transition(&inst.name, Change::Status(InstanceStatus::Deleting, None))
            .await
            .unwrap();
        b.finish().await;
    }
}

/// Many replicas grab the same pools' short leases over and over, at once:
/// every take has its own token, and in token order each take starts no
/// earlier than the previous holder's lease ended, so no two replicas ever
/// held a pool at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_replicas_never_hold_a_pool_together() {
    for b in backends().await {
        let store = b.store.clone();
        let what = store.backend_name();
        let ids = pools(&b, 3).await;
        let ttl = Duration::from_millis(40);
        let takes = Arc::new(std::sync::Mutex::new(Vec::<(Lease, ReplicaId)>::new()));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (store, takes) = (store.clone(), takes.clone());
            tasks.push(tokio::spawn(async move {
                let me = ReplicaId::new_random();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                while tokio::time::Instant::now() < deadline {
                    for l in store.acquire_leases(me, ttl, 3).await.unwrap() {
                        takes.lock().unwrap().push((l, me));
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let takes = takes.lock().unwrap().clone();
        for id in &ids {
            let mut mine: Vec<(Lease, ReplicaId)> = takes
                .iter()
                .filter(|(l, _)| l.pool_id == *id)
                .copied()
                .collect();
            assert!(
                mine.len() >= 2,
                "{what}: the pool changed hands: {}",
                mine.len()
            );
            mine.sort_by_key(|(l, _)| l.token);
            for (n, pair) in mine.windows(2).enumerate() {
                let (prev, next) = (&pair[0].0, &pair[1].0);
                assert_eq!(next.token, prev.token + 1, "{what}: one take per token");
                let start = next.expires_at_ms - ttl.as_millis() as i64;
                assert!(
                    start >= prev.expires_at_ms,
                    "{what}: take {n} began at {start} before the lease before it ended at {}",
                    prev.expires_at_ms
                );
            }
        }
        b.finish().await;
    }
}

/// The repository, credentials and endpoint a real pool needs.
async fn entity(store: &Store) -> hangar_core::Entity {
    use hangar_testkit::sample;
    store.create_endpoint(&sample::github_com()).await.unwrap();
    store
        .create_credentials(&sample::pat("gh", "github.com", "ghp_x"))
        .await
        .unwrap();
    store
        .create_entity(&hangar_store::NewEntity {
            scope: hangar_core::EntityScope::Repository {
                owner: "octo".into(),
                name: "app".into(),
            },
            credentials_name: hangar_core::ResourceName::parse("gh").unwrap(),
            webhook_secret: Secret::new("whsec"),
        })
        .await
        .unwrap()
}

/// The writes the scale set listener and lost-delivery recovery make are
/// fenced like a step's: under a fence whose pool moved to another replica
/// they are refused and change nothing; under the new holder's they are
/// made. And a fenced write touches its own pool only: a fence that holds
/// one pool's lease cannot change another pool's instances.
#[tokio::test(flavor = "current_thread")]
async fn listener_and_recovery_writes_are_fenced_and_a_fence_covers_its_pool_only() {
    use hangar_core::{ScaleSetJob, ScaleSetJobEvent, ScaleSetMessage, ScaleSetStatistics};
    use hangar_store::{AppliedMessage, DeliveryCursor};
    for b in backends().await {
        let store = &b.store;
        let what = store.backend_name();
        let e = entity(store).await;
        let spec = hangar_testkit::sample::pool_spec("fake", "ss", 4);
        let ss_pool = store.create_pool(e.id, &spec).await.unwrap().id;
        let ss = store
            .attach_scale_set(ss_pool, "ss", Some(7))
            .await
            .unwrap();
        let spec = hangar_testkit::sample::pool_spec("fake", "self-hosted", 4);
        let other = store.create_pool(e.id, &spec).await.unwrap().id;

        // A holds both; it lets the scale set's pool go and B takes it.
        let (a, bb) = (ReplicaId::new_random(), ReplicaId::new_random());
        store.renew_leases(a, TTL).await.unwrap();
        let held = store.acquire_leases(a, TTL, 2).await.unwrap();
        assert_eq!(held.len(), 2, "{what}");
        let lease = |pool: PoolId| *held.iter().find(|l| l.pool_id == pool).unwrap();
        assert!(store.release_lease(a, ss_pool).await.unwrap());
        store.renew_leases(bb, TTL).await.unwrap();
        let taken = store.acquire_leases(bb, TTL, 2).await.unwrap();
        assert_eq!(taken.len(), 1, "{what}: {taken:?}");
        let stale = Some(PoolFence {
            pool_id: ss_pool,
            fence: fence(a, &lease(ss_pool)),
        });
        let current = Some(PoolFence {
            pool_id: ss_pool,
            fence: fence(bb, &taken[0]),
        });
        let a_other = Some(PoolFence {
            pool_id: other,
            fence: fence(a, &lease(other)),
        });
        let mut recorded = store.leases_of(a).await.unwrap();
        recorded.sort();
        assert_eq!(recorded, vec![(other, 1)], "{what}");
        assert_eq!(store.leases_of(bb).await.unwrap(), vec![(ss_pool, 2)]);

        // The listener's writes.
        let msg = ScaleSetMessage {
            message_id: 1,
            statistics: Some(ScaleSetStatistics {
                total_available_jobs: 1,
                ..Default::default()
            }),
            events: vec![ScaleSetJobEvent::Available {
                job: ScaleSetJob {
                    runner_request_id: 11,
                    repository: "octo/app".into(),
                    job_id: "j11".into(),
                    job_display_name: None,
                    workflow_run_id: None,
                    request_labels: vec!["ss".into()],
                    queue_time: None,
                },
            }],
        };
        let refused = fenced(stale, store.apply_scale_set_message(&ss, &msg, &[11])).await;
        assert!(
            matches!(refused, Err(StoreError::Fenced(_))),
            "{what}: {refused:?}"
        );
        let stats = ScaleSetStatistics::default();
        let refused = fenced(stale, store.set_scale_set_statistics(&ss, &stats)).await;
        assert!(
            matches!(refused, Err(StoreError::Fenced(_))),
            "{what}: {refused:?}"
        );
        let refused = fenced(stale, store.settle_scale_set_runners(ss_pool)).await;
        assert!(
            matches!(refused, Err(StoreError::Fenced(_))),
            "{what}: {refused:?}"
        );
        assert_eq!(
            store
                .scale_set_progress(&ss)
                .await
                .unwrap()
                .unwrap()
                .last_message_id,
            0,
            "{what}: nothing applied"
        );
        assert!(store.scale_set_job_statuses(&ss).await.unwrap().is_empty());
        let applied = fenced(current, store.apply_scale_set_message(&ss, &msg, &[11]))
            .await
            .unwrap();
        assert!(matches!(applied, AppliedMessage::Applied { .. }), "{what}");
        assert_eq!(
            store.scale_set_job_statuses(&ss).await.unwrap(),
            vec![(11, "acquired".to_owned())],
            "{what}"
        );

        // Recovery's cursor (recovery runs under the leading pool's fence).
        let cursor = DeliveryCursor {
            hook_id: Some(5),
            last_seen: 40,
        };
        let refused = fenced(stale, store.set_delivery_cursor("entity:x", cursor)).await;
        assert!(
            matches!(refused, Err(StoreError::Fenced(_))),
            "{what}: {refused:?}"
        );
        assert_eq!(store.delivery_cursor("entity:x").await.unwrap(), None);
        let refused = fenced(stale, store.clear_delivery_cursor("entity:x")).await;
        assert!(
            matches!(refused, Err(StoreError::Fenced(_))),
            "{what}: {refused:?}"
        );
        fenced(current, store.set_delivery_cursor("entity:x", cursor))
            .await
            .unwrap();
        assert_eq!(
            store.delivery_cursor("entity:x").await.unwrap(),
            Some(cursor),
            "{what}"
        );

        // One pool's fence does not cover another pool's instances.
        let new = NewInstance {
            name: InstanceName::parse("hangar-other-1").unwrap(),
            pool_id: other,
            provider_name: "fake".into(),
            job_id: None,
        };
        let refused = fenced(current, store.reserve_instance(&new)).await;
        assert!(
            matches!(refused, Err(StoreError::Fenced(_))),
            "{what}: {refused:?}"
        );
        let inst = fenced(a_other, store.reserve_instance(&new))
            .await
            .unwrap()
            .expect("room");
        let retire = Change::Status(InstanceStatus::PendingDelete, None);
        let refused = fenced(current, store.transition(&inst.name, retire)).await;
        assert!(
            matches!(refused, Err(StoreError::Fenced(_))),
            "{what}: {refused:?}"
        );
        assert_eq!(
            store.instance(&inst.name).await.unwrap().status,
            InstanceStatus::PendingCreate,
            "{what}: the refused change was rolled back"
        );
        fenced(a_other, store.transition(&inst.name, retire))
            .await
            .unwrap();
        b.finish().await;
    }
}
