//! The store against real SQLite files: opening, sealing, conflicts, the
//! state machines, capacity and job intake.

mod common;

use std::path::{Path, PathBuf};

use common::{PASS, TestDb};
use hangar_core::*;
use hangar_store::*;
use hangar_testkit::sample;
use sha2::Digest as _;

async fn open(db: &TestDb) -> Store {
    db.open().await
}

fn db_file(dir: &Path) -> PathBuf {
    dir.join("data/hangar.db")
}

async fn seed(store: &Store) -> (Entity, Pool) {
    store.create_endpoint(&sample::github_com()).await.unwrap();
    let mut pat = sample::pat("gh", "github.com", "ghp_SUPERSECRETTOKEN123");
    pat.description = "test".into();
    store.create_credentials(&pat).await.unwrap();
    let entity = store
        .create_entity(&NewEntity {
            scope: EntityScope::Repository {
                owner: "octo".into(),
                name: "app".into(),
            },
            credentials_name: ResourceName::parse("gh").unwrap(),
            webhook_secret: Secret::new("whsec_VERYSECRETHOOK"),
        })
        .await
        .unwrap();
    let pool = store.create_pool(entity.id, &spec(3)).await.unwrap();
    (entity, pool)
}

fn spec(max: u32) -> PoolSpec {
    sample::pool_spec("fake", "self-hosted,linux", max)
}

fn new_instance(pool: PoolId, n: usize) -> NewInstance {
    NewInstance {
        name: InstanceName::parse(&format!("hangar-{n}")).unwrap(),
        pool_id: pool,
        provider_name: "fake".into(),
        job_id: None,
    }
}

fn token_hash(n: usize) -> [u8; 32] {
    let mut h = [0u8; 32];
    h.copy_from_slice(&sha2::Sha256::digest(format!("token-{n}")));
    h
}

async fn creates_folder_and_file_and_keeps_data_across_restarts(db: TestDb) {
    let store = open(&db).await;
    if let Some(file) = db.sqlite_file() {
        assert!(file.exists());
    }
    assert_eq!(
        store.applied_migrations().await.unwrap(),
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    );
    let id = store.controller_id();
    let (entity, pool) = seed(&store).await;
    store.close().await;

    let store = open(&db).await;
    assert_eq!(store.controller_id(), id, "controller id is stable");
    assert_eq!(store.entity(entity.id).await.unwrap(), entity);
    assert_eq!(store.pool(pool.id).await.unwrap().spec, pool.spec);
    match store.credentials("gh").await.unwrap().auth {
        CredentialsAuth::Pat { token } => assert_eq!(token.expose(), "ghp_SUPERSECRETTOKEN123"),
        other => panic!("{other:?}"),
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn database_files_are_private_to_the_service() {
    let db = TestDb::sqlite();
    let dir = db.dir().unwrap();
    let store = open(&db).await;
    seed(&store).await;
    let [file, wal, shm] = files::database_files(&db_file(dir));
    // While the store is open, SQLite keeps all three in WAL mode.
    for f in [&file, &wal, &shm] {
        assert_eq!(mode(f), 0o600, "{} is private", f.display());
    }
    assert_eq!(mode(&dir.join("data")), 0o700, "the folder it made");
    store.close().await;

    // A database left readable by others (an older hangard, a copy) is
    // tightened when opened.
    use std::os::unix::fs::PermissionsExt as _;
    for f in [&file, &wal, &shm] {
        if f.exists() {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let store = open(&db).await;
    store.ping().await.unwrap();
    for f in [&file, &wal, &shm] {
        assert_eq!(mode(f), 0o600, "{} tightened on open", f.display());
    }
    store.close().await;
}

fn sha(path: &Path) -> Vec<u8> {
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[tokio::test]
async fn wrong_passphrase_refuses_and_changes_nothing() {
    let db = TestDb::sqlite();
    let dir = db.dir().unwrap();
    let store = open(&db).await;
    seed(&store).await;
    store.close().await;
    let before = sha(&db_file(dir));
    let listing_before: Vec<_> = std::fs::read_dir(dir.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    let wrong = db.options_with("another passphrase, also long enough");
    let err = Store::open(&wrong).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongPassphrase { .. }), "{err}");
    assert!(err.to_string().contains("different passphrase"), "{err}");
    assert_eq!(sha(&db_file(dir)), before, "database bytes unchanged");
    let listing_after: Vec<_> = std::fs::read_dir(dir.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        listing_before.len(),
        listing_after.len(),
        "no files left behind"
    );

    // The right passphrase still works afterwards.
    open(&db).await;
}

/// On PostgreSQL (a replica started with another passphrase than the
/// others): refused before migrating or writing anything, every table
/// (the migrations applied and the controller row included) as it was.
#[tokio::test]
async fn wrong_passphrase_on_postgres_refuses_and_changes_nothing() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = open(&db).await;
    let (entity, _) = seed(&store).await;
    let before = common::dump(&db).await;
    assert!(before.contains("== _sqlx_migrations"), "{before}");
    assert!(before.contains("== controller"), "{before}");

    let wrong = db.options_with("another passphrase, also long enough");
    let err = Store::open(&wrong).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongPassphrase { .. }), "{err}");
    assert!(err.to_string().contains("different passphrase"), "{err}");
    assert_eq!(common::dump(&db).await, before, "database unchanged");

    // The replica that has the right one carries on, and so does a new one.
    assert_eq!(store.entity(entity.id).await.unwrap(), entity);
    store.close().await;
    let again = open(&db).await;
    assert_eq!(again.entity(entity.id).await.unwrap(), entity);
}

async fn short_passphrase_is_refused(db: TestDb) {
    let o = db.options_with("short");
    let err = Store::open(&o).await.unwrap_err();
    assert!(err.to_string().contains("at least 32"), "{err}");
}

async fn no_secret_is_stored_in_plain_text(db: TestDb) {
    let store = open(&db).await;
    let (_, pool) = seed(&store).await;
    let inst = store
        .reserve_instance(&new_instance(pool.id, 1))
        .await
        .unwrap()
        .unwrap();
    store
        .set_instance_jit(&inst.name, 7, &Secret::new("JITCONFIGSECRETBLOB"))
        .await
        .unwrap();
    store.close().await;
    let secrets = [
        "ghp_SUPERSECRETTOKEN123",
        "whsec_VERYSECRETHOOK",
        "JITCONFIGSECRETBLOB",
        PASS,
    ];
    let Some(dir) = db.dir() else {
        // Every table as text, bytes as escaped strings: what an operator
        // (or a backup) would see.
        let dump = common::dump(&db).await;
        assert!(dump.contains("credentials"), "dump ran");
        for s in secrets {
            assert!(!dump.contains(s), "{s} in the PostgreSQL tables");
        }
        return;
    };
    // Raw bytes of every file of the database.
    for entry in std::fs::read_dir(dir.join("data")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for s in secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s} found in plain text"
            );
        }
    }
    // And what an operator would look at.
    if let Ok(out) = std::process::Command::new("sqlite3")
        .arg(db_file(dir))
        .arg(".dump")
        .output()
    {
        let dump = String::from_utf8_lossy(&out.stdout);
        assert!(dump.contains("CREATE TABLE credentials"), "dump ran");
        for s in secrets {
            assert!(!dump.contains(s), "{s} in .dump");
        }
    } else {
        eprintln!("sqlite3 CLI not installed: checked raw database bytes only");
    }
}

async fn conflicts_say_what_is_in_the_way(db: TestDb) {
    let store = open(&db).await;
    let (entity, pool) = seed(&store).await;

    let e = store.delete_endpoint("github.com").await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("gh")),
        "{e}"
    );
    let e = store.delete_credentials("gh").await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("octo/app")),
        "{e}"
    );
    let e = store.delete_entity(entity.id).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains(&pool.id.to_string())),
        "{e}"
    );

    store
        .reserve_instance(&new_instance(pool.id, 1))
        .await
        .unwrap()
        .unwrap();
    let e = store.delete_pool(pool.id).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("hangar-1")),
        "{e}"
    );

    // Duplicates.
    let dup = store
        .create_entity(&NewEntity {
            scope: EntityScope::Repository {
                owner: "OCTO".into(),
                name: "App".into(),
            },
            credentials_name: ResourceName::parse("gh").unwrap(),
            webhook_secret: Secret::new("x"),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&dup, StoreError::Conflict(m) if m.contains("already registered")),
        "{dup}"
    );
    // Unknown credentials.
    let e = store
        .create_entity(&NewEntity {
            scope: EntityScope::Organization {
                name: "acme".into(),
            },
            credentials_name: ResourceName::parse("nope").unwrap(),
            webhook_secret: Secret::new("x"),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("do not exist")),
        "{e}"
    );

    // Nothing was lost on the way.
    assert!(store.entity(entity.id).await.is_ok());
    assert!(store.pool(pool.id).await.is_ok());
}

async fn status_changes_follow_the_core_tables(db: TestDb) {
    let store = open(&db).await;
    let (_, pool) = seed(&store).await;
    let inst = store
        .reserve_instance(&new_instance(pool.id, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inst.status, InstanceStatus::PendingCreate);

    let e = store
        .transition(&inst.name, Change::Status(InstanceStatus::Running, None))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Transition(_)), "{e}");
    assert_eq!(
        store.instance(&inst.name).await.unwrap().status,
        InstanceStatus::PendingCreate
    );

    let i = store
        .transition(
            &inst.name,
            Change::BeginCreate {
                token_hash: &token_hash(1),
            },
        )
        .await
        .unwrap();
    assert_eq!((i.status, i.create_attempts), (InstanceStatus::Creating, 1));
    let i = store
        .transition(
            &inst.name,
            Change::FinishCreate {
                provider_id: "vm-1",
                addresses: &["10.0.0.5".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(i.status, InstanceStatus::Running);
    assert_eq!(i.provider_id.as_deref(), Some("vm-1"));

    store
        .transition(&inst.name, Change::Runner(RunnerStatus::Idle, None))
        .await
        .unwrap();
    store
        .transition(&inst.name, Change::Runner(RunnerStatus::Active, None))
        .await
        .unwrap();
    let e = store
        .transition(&inst.name, Change::Runner(RunnerStatus::Idle, None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("active -> idle"), "{e}");

    for s in [
        InstanceStatus::PendingDelete,
        InstanceStatus::Deleting,
        InstanceStatus::Deleted,
    ] {
        store
            .transition(&inst.name, Change::Status(s, None))
            .await
            .unwrap();
    }
    assert!(
        store
            .transition(&inst.name, Change::Status(InstanceStatus::Running, None))
            .await
            .is_err()
    );
    // Deleted rows stay as history but free capacity and are hidden by default.
    assert!(
        store
            .list_instances(&InstanceFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let all = store
        .list_instances(&InstanceFilter {
            include_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    store.delete_pool(pool.id).await.unwrap();
}

async fn concurrent_reservations_never_exceed_max_runners(db: TestDb) {
    let store = open(&db).await;
    let (entity, pool) = seed(&store).await; // max 3
    let other = store.create_pool(entity.id, &spec(5)).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..60 {
        let store = store.clone();
        let p = if n % 2 == 0 { pool.id } else { other.id };
        tasks.push(tokio::spawn(async move {
            store.reserve_instance(&new_instance(p, n)).await
        }));
    }
    let mut got = 0;
    for t in tasks {
        if t.await.unwrap().unwrap().is_some() {
            got += 1;
        }
    }
    assert_eq!(got, 3 + 5);
    let usage: std::collections::HashMap<_, _> =
        store.pool_usage().await.unwrap().into_iter().collect();
    assert_eq!(usage[&pool.id].live, 3);
    assert_eq!(usage[&other.id].live, 5);
    for p in [pool.id, other.id] {
        assert_eq!(
            store.pool_usage_of(p).await.unwrap(),
            usage[&p],
            "one-pool usage agrees"
        );
    }
    assert_eq!(
        store
            .pool_usage_of(hangar_core::PoolId::new_random())
            .await
            .unwrap()
            .live,
        0
    );

    // Disabled pools reserve nothing.
    let mut s = spec(10);
    s.enabled = false;
    let off = store.create_pool(entity.id, &s).await.unwrap();
    assert!(
        store
            .reserve_instance(&new_instance(off.id, 999))
            .await
            .unwrap()
            .is_none()
    );
}

async fn jit_config_is_handed_out_once(db: TestDb) {
    let store = open(&db).await;
    let (_, pool) = seed(&store).await;
    let new = new_instance(pool.id, 1);
    let inst = store.reserve_instance(&new).await.unwrap().unwrap();
    store
        .set_instance_jit(&inst.name, 42, &Secret::new("jit"))
        .await
        .unwrap();
    assert!(
        store
            .instance_by_token(&token_hash(1))
            .await
            .unwrap()
            .is_none(),
        "no token before a create attempt"
    );
    store
        .transition(
            &inst.name,
            Change::BeginCreate {
                token_hash: &token_hash(1),
            },
        )
        .await
        .unwrap();
    let found = store
        .instance_by_token(&token_hash(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.instance.name, inst.name);
    assert!(found.has_jit_config && !found.jit_fetched);
    assert_eq!(
        store.take_jit_config(&inst.name).await.unwrap().expose(),
        "jit"
    );
    let again = store.take_jit_config(&inst.name).await.unwrap_err();
    assert!(matches!(again, StoreError::Conflict(_)), "{again}");
    assert!(store.instance_by_token(&[0u8; 32]).await.unwrap().is_none());
}

/// Several create steps' writes in one transaction: each JIT config is
/// stored and each change checked as `transition` checks it; a write that
/// is refused (an illegal move, an instance that is gone, a stale lease
/// fence) gets its own error, writes nothing the others depend on, and the
/// others are committed.
async fn create_writes_commit_together_and_refuse_one_by_one(db: TestDb) {
    let store = open(&db).await;
    let (_, pool) = seed(&store).await;
    let mut reserved = Vec::new();
    for n in 1..=3 {
        let inst = store
            .reserve_instance(&new_instance(pool.id, n))
            .await
            .unwrap()
            .unwrap();
        reserved.push(inst);
    }
    let (a, b, c) = (&reserved[0], &reserved[1], &reserved[2]);
    // This replica holds the pool's lease; a step of another replica (or
    // of this one under an older token) carries a stale fence.
    let me = ReplicaId::new_random();
    store
        .renew_leases(me, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let leases = store
        .acquire_leases(me, std::time::Duration::from_secs(60), 100)
        .await
        .unwrap();
    let lease = leases.iter().find(|l| l.pool_id == pool.id).unwrap();
    let held = PoolFence {
        pool_id: pool.id,
        fence: Fence {
            replica: me,
            token: lease.token,
        },
    };
    let stale = PoolFence {
        pool_id: pool.id,
        fence: Fence {
            replica: me,
            token: lease.token - 1,
        },
    };
    let gone = InstanceName::parse("never-reserved").unwrap();
    let (jit_a, jit_c) = (Secret::new("jit-a"), Secret::new("jit-c"));
    let (ha, hb, hc) = (token_hash(1), token_hash(2), token_hash(3));
    let write = |name, change, jit, fence| CreateWrite {
        name,
        change,
        jit,
        serve_scale_set_job: false,
        fence,
    };
    let out = store
        .create_writes(&[
            write(
                &a.name,
                Change::BeginCreate { token_hash: &ha },
                Some((42, &jit_a)),
                Some(held),
            ),
            // `pending_create → running` is not a legal move.
            write(
                &b.name,
                Change::FinishCreate {
                    provider_id: "p-b",
                    addresses: &[],
                },
                None,
                Some(held),
            ),
            write(&gone, Change::BeginCreate { token_hash: &hb }, None, None),
            write(
                &c.name,
                Change::BeginCreate { token_hash: &hc },
                Some((43, &jit_c)),
                Some(stale),
            ),
        ])
        .await
        .unwrap();
    assert_eq!(out.len(), 4);
    let (written, served) = out[0].as_ref().unwrap();
    assert_eq!(written.status, InstanceStatus::Creating);
    assert_eq!(written.runner_id, Some(42));
    assert_eq!(*served, None, "not asked to serve a scale set request");
    assert!(
        matches!(out[1], Err(StoreError::Transition(_))),
        "{:?}",
        out[1]
    );
    assert!(
        matches!(out[2], Err(StoreError::NotFound(_))),
        "{:?}",
        out[2]
    );
    assert!(matches!(out[3], Err(StoreError::Fenced(_))), "{:?}", out[3]);
    // Committed: the token works and the JIT config is handed out.
    let found = store.instance_by_token(&ha).await.unwrap().unwrap();
    assert_eq!(found.instance.name, a.name);
    assert_eq!(
        store.take_jit_config(&a.name).await.unwrap().expose(),
        "jit-a"
    );
    assert_eq!(
        store.instance(&b.name).await.unwrap().status,
        InstanceStatus::PendingCreate
    );
    // The fenced write wrote nothing: no JIT config, no token, no move.
    let c_now = store.instance(&c.name).await.unwrap();
    assert_eq!(c_now.status, InstanceStatus::PendingCreate);
    assert_eq!(c_now.runner_id, None);
    assert!(store.instance_by_token(&hc).await.unwrap().is_none());
    // Alone, a write under a fence still held, and one under none.
    let addresses = ["10.0.0.1".to_owned()];
    let out = store
        .create_writes(&[write(
            &a.name,
            Change::FinishCreate {
                provider_id: "p-a",
                addresses: &addresses,
            },
            None,
            Some(held),
        )])
        .await
        .unwrap();
    let (running, _) = out[0].as_ref().unwrap();
    assert_eq!(running.status, InstanceStatus::Running);
    assert_eq!(running.provider_id.as_deref(), Some("p-a"));
    let out = store
        .create_writes(&[write(
            &c.name,
            Change::BeginCreate { token_hash: &hc },
            Some((43, &jit_c)),
            None,
        )])
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().0.runner_id, Some(43));
    store.close().await;
}

async fn jit_files_and_registration_tokens_are_handed_out_once_per_attempt(db: TestDb) {
    let store = open(&db).await;
    let (_, pool) = seed(&store).await;
    let inst = store
        .reserve_instance(&new_instance(pool.id, 1))
        .await
        .unwrap()
        .unwrap();
    let jit = jit::encode_jit_config([
        (JitFile::Runner, &b"R"[..]),
        (JitFile::Credentials, &b"C"[..]),
        (JitFile::CredentialsRsaParams, &b"P"[..]),
    ]);
    store
        .set_instance_jit(&inst.name, 42, &Secret::new(jit))
        .await
        .unwrap();
    assert_eq!(
        store
            .take_jit_file(&inst.name, JitFile::Runner)
            .await
            .unwrap(),
        b"R"
    );
    let again = store
        .take_jit_file(&inst.name, JitFile::Runner)
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::Conflict(_)), "{again}");
    let whole = store.take_jit_config(&inst.name).await.unwrap_err();
    assert!(matches!(whole, StoreError::Conflict(_)), "{whole}");
    assert_eq!(
        store
            .take_jit_file(&inst.name, JitFile::Credentials)
            .await
            .unwrap(),
        b"C"
    );
    assert_eq!(
        store
            .take_jit_file(&inst.name, JitFile::CredentialsRsaParams)
            .await
            .unwrap(),
        b"P"
    );
    store
        .transition(
            &inst.name,
            Change::BeginCreate {
                token_hash: &token_hash(1),
            },
        )
        .await
        .unwrap();
    let found = store
        .instance_by_token(&token_hash(1))
        .await
        .unwrap()
        .unwrap();
    assert!(
        found.jit_fetched && !found.has_jit_config,
        "all files out: config forgotten"
    );

    // One registration token per create attempt; a failed fetch gives it back.
    store.claim_registration_token(&inst.name).await.unwrap();
    let again = store
        .claim_registration_token(&inst.name)
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::Conflict(_)), "{again}");
    store.release_registration_token(&inst.name).await.unwrap();
    store.claim_registration_token(&inst.name).await.unwrap();

    store
        .record_system_info(&inst.name, Some("Ubuntu"), Some("24.04"), Some(9))
        .await
        .unwrap();
    let i = store.instance(&inst.name).await.unwrap();
    assert_eq!(
        (i.os_name.as_deref(), i.os_version.as_deref()),
        (Some("Ubuntu"), Some("24.04"))
    );
    assert_eq!(i.runner_id, Some(42), "the JIT runner id stays");
}

fn event(store_entity: EntityId, id: i64, action: JobAction, pool: Option<PoolId>) -> JobEvent {
    JobEvent {
        job_id: JobId(id),
        run_attempt: 1,
        action,
        entity_id: store_entity,
        labels: Labels::parse_list("self-hosted,linux").unwrap(),
        repository: "octo/app".into(),
        workflow_run_id: Some(1),
        name: Some("build".into()),
        runner_name: (action == JobAction::InProgress).then(|| "hangar-1".to_owned()),
        conclusion: (action == JobAction::Completed).then(|| "success".to_owned()),
        pool_id: pool,
    }
}

async fn job_events_deduplicate_and_only_move_forward(db: TestDb) {
    let store = open(&db).await;
    let (entity, pool) = seed(&store).await;
    let big = 29_679_449_555_i64; // above 2^31
    let p = Some(pool.id);

    let out = store
        .record_job_events(&[
            event(entity.id, big, JobAction::Queued, p),
            event(entity.id, big, JobAction::Queued, p),
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            JobOutcome::Recorded {
                status: JobStatus::Queued,
                pool_id: p
            },
            JobOutcome::Duplicate
        ]
    );
    // Completed arrives before in_progress.
    let out = store
        .record_job_events(&[event(entity.id, big, JobAction::Completed, None)])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![JobOutcome::Recorded {
            status: JobStatus::Completed,
            pool_id: p
        }]
    );
    let out = store
        .record_job_events(&[
            event(entity.id, big, JobAction::InProgress, p),
            event(entity.id, big, JobAction::Queued, p),
        ])
        .await
        .unwrap();
    assert_eq!(out, vec![JobOutcome::Stale, JobOutcome::Duplicate]);
    let job = store.job(JobId(big), 1).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.conclusion.as_deref(), Some("success"));
    assert_eq!(job.pool_id, p);

    // A new attempt is a new job.
    let mut ev = event(entity.id, big, JobAction::Queued, p);
    ev.run_attempt = 2;
    let out = store.record_job_events(&[ev]).await.unwrap();
    assert!(matches!(
        out[0],
        JobOutcome::Recorded {
            status: JobStatus::Queued,
            ..
        }
    ));

    let queued = store
        .list_jobs(&JobFilter {
            status: Some(JobStatus::Queued),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].run_attempt, 2);
    // The pool's state counts the one queued job, and "young" is a cut-off.
    let now = chrono::Utc::now();
    let state = |young_after| {
        let store = store.clone();
        async move { store.pool_state(pool.id, young_after, now).await.unwrap() }
    };
    let s = state(now - chrono::Duration::seconds(60)).await.unwrap();
    assert_eq!(
        s.demand,
        PoolDemand {
            queued: 1,
            queued_young: 1
        }
    );
    assert_eq!(s.pool, pool);
    assert_eq!(s.usage, PoolUsage::default());
    assert!(!s.instance_work);
    let s = state(now + chrono::Duration::seconds(60)).await.unwrap();
    assert_eq!(
        s.demand,
        PoolDemand {
            queued: 1,
            queued_young: 0
        }
    );
    assert_eq!(
        store
            .pool_state(hangar_core::PoolId::new_random(), now, now)
            .await
            .unwrap(),
        None
    );
}

/// `pool_state` counts the queue up to `demand_cap` only, and says when an
/// instance needs a step, exactly when the instance queries have rows.
async fn pool_state_caps_demand_and_sees_instance_work(db: TestDb) {
    let store = open(&db).await;
    let (entity, pool) = seed(&store).await; // max 3, min idle 0
    let events: Vec<JobEvent> = (0..20)
        .map(|i| event(entity.id, 500 + i, JobAction::Queued, Some(pool.id)))
        .collect();
    store.record_job_events(&events).await.unwrap();
    let now = chrono::Utc::now();
    let old = now - chrono::Duration::hours(1);
    let s = store.pool_state(pool.id, old, now).await.unwrap().unwrap();
    let cap = policy::demand_cap(&pool.spec, 0, 0);
    assert_eq!(cap, 4);
    assert_eq!(
        s.demand,
        PoolDemand {
            queued: cap,
            queued_young: cap
        }
    );
    assert!(!s.instance_work);

    // A reserved instance waits to be created: work, and the cap grows
    // with the spare runner.
    let made = store
        .reserve_instances(
            pool.id,
            "fake",
            &[InstanceName::parse("hangar-s1").unwrap()],
        )
        .await
        .unwrap();
    let s = store.pool_state(pool.id, old, now).await.unwrap().unwrap();
    assert!(s.instance_work);
    assert_eq!(s.usage.live, 1);
    assert_eq!(s.usage.spare, 1);
    assert_eq!(s.demand.queued, policy::demand_cap(&pool.spec, 1, 0));
    assert_eq!(
        store
            .instances_needing_work(pool.id, now - chrono::Duration::minutes(20))
            .await
            .unwrap()
            .len(),
        1
    );

    // Created and bootstrapping: work only once the pool's bootstrap
    // timeout (20 min) has passed.
    store
        .transition(
            &made[0].name,
            Change::BeginCreate {
                token_hash: &token_hash(9),
            },
        )
        .await
        .unwrap();
    store
        .transition(
            &made[0].name,
            Change::FinishCreate {
                provider_id: "p",
                addresses: &[],
            },
        )
        .await
        .unwrap();
    let s = store.pool_state(pool.id, old, now).await.unwrap().unwrap();
    assert!(!s.instance_work, "bootstrapping within its timeout");
    let later = now + chrono::Duration::minutes(21);
    let s = store
        .pool_state(pool.id, old, later)
        .await
        .unwrap()
        .unwrap();
    assert!(s.instance_work, "bootstrap timed out");
    assert_eq!(
        store
            .instances_needing_work(pool.id, later - chrono::Duration::minutes(20))
            .await
            .unwrap()
            .len(),
        1
    );
    // Its job is in progress but the runner was not marked active: work.
    let mut took = event(entity.id, 500, JobAction::InProgress, Some(pool.id));
    took.runner_name = Some("hangar-s1".into());
    store.record_job_events(&[took]).await.unwrap();
    let s = store.pool_state(pool.id, old, now).await.unwrap().unwrap();
    assert!(s.instance_work, "job progress to catch up on");
    let work = store.instances_needing_work(pool.id, old).await.unwrap();
    assert_eq!(work.len(), 1);
    assert_eq!(work[0].job, Some((JobId(500), JobStatus::InProgress)));
    store
        .transition(&made[0].name, Change::Runner(RunnerStatus::Active, None))
        .await
        .unwrap();
    let s = store.pool_state(pool.id, old, now).await.unwrap().unwrap();
    assert!(
        !s.instance_work,
        "an active runner on its job needs nothing"
    );
}

async fn batch_reservation_hands_out_jobs_and_respects_max(db: TestDb) {
    let store = open(&db).await;
    let (entity, pool) = seed(&store).await; // max 3
    let events: Vec<JobEvent> = (1..=5)
        .map(|i| event(entity.id, 100 + i, JobAction::Queued, Some(pool.id)))
        .collect();
    store.record_job_events(&events).await.unwrap();
    let names: Vec<InstanceName> = (0..5)
        .map(|i| InstanceName::parse(&format!("hangar-b{i}")).unwrap())
        .collect();
    let made = store
        .reserve_instances(pool.id, "fake", &names)
        .await
        .unwrap();
    assert_eq!(made.len(), 3);
    let mut jobs: Vec<i64> = made.iter().map(|i| i.job_id.unwrap().0).collect();
    jobs.sort();
    assert_eq!(
        jobs,
        vec![101, 102, 103],
        "oldest queued jobs first, each once"
    );
    assert!(
        store
            .reserve_instances(pool.id, "fake", &names[3..])
            .await
            .unwrap()
            .is_empty()
    );

    // A restart in the middle of work.
    store
        .transition(
            &made[0].name,
            Change::BeginCreate {
                token_hash: &token_hash(1),
            },
        )
        .await
        .unwrap();
    let i = store
        .transition(
            &made[1].name,
            Change::BeginCreate {
                token_hash: &token_hash(2),
            },
        )
        .await
        .unwrap();
    store
        .transition(
            &i.name,
            Change::FinishCreate {
                provider_id: "p",
                addresses: &[],
            },
        )
        .await
        .unwrap();
    store
        .transition(&i.name, Change::Status(InstanceStatus::PendingDelete, None))
        .await
        .unwrap();
    store
        .transition(&i.name, Change::Status(InstanceStatus::Deleting, None))
        .await
        .unwrap();
    // The create's process was recorded while it ran.
    let process = hangar_core::provider::CallProcess {
        pid: 4242,
        start_ticks: 123_456,
    };
    store
        .set_create_process(&made[0].name, process)
        .await
        .unwrap();
    // The delete goes back to be retried; the create stays `creating` until
    // the scheduler has settled it, and comes with its process.
    assert_eq!(store.recover_interrupted().await.unwrap(), 1);
    assert_eq!(
        store.instance(&made[1].name).await.unwrap().status,
        InstanceStatus::PendingDelete
    );
    let creating = store.interrupted_creates().await.unwrap();
    assert_eq!(creating.len(), 1);
    assert_eq!(creating[0].0.name, made[0].name);
    assert_eq!(creating[0].0.status, InstanceStatus::Creating);
    assert_eq!(creating[0].1, Some(process));
    // A new attempt forgets the old attempt's process.
    store
        .transition(
            &made[0].name,
            Change::Status(InstanceStatus::Error, Some("interrupted")),
        )
        .await
        .unwrap();
    store
        .set_create_process(&made[0].name, process)
        .await
        .unwrap();
    store
        .transition(
            &made[0].name,
            Change::Status(InstanceStatus::PendingCreate, None),
        )
        .await
        .unwrap();
    store
        .transition(
            &made[0].name,
            Change::BeginCreate {
                token_hash: &token_hash(3),
            },
        )
        .await
        .unwrap();
    assert_eq!(store.interrupted_creates().await.unwrap()[0].1, None);
}

/// A pool's breaker: failures counted in one transaction each, the probe
/// claimed by one create only, closed by a success or a pool update, and
/// kept across a reopen of the database.
async fn pool_breakers_count_claim_close_and_persist(db: TestDb) {
    use hangar_core::policy::{Breaker, BreakerRules};
    let store = open(&db).await;
    let (_entity, pool) = seed(&store).await;
    assert_eq!(
        store.pool_breaker(pool.id).await.unwrap(),
        Breaker::default()
    );
    let rules = BreakerRules {
        threshold: 2,
        base: std::time::Duration::from_secs(10),
        max: std::time::Duration::from_secs(60),
    };
    let now = hangar_store::clock::now();
    for _ in 0..2 {
        store
            .record_pool_failure(pool.id, |b| b.after_failure(&rules, "exit 1", now, 1.0))
            .await
            .unwrap();
    }
    let b = store.pool_breaker(pool.id).await.unwrap();
    assert_eq!(b.consecutive_failures, 2);
    assert_eq!(b.last_error.as_deref(), Some("exit 1"));
    let due = b.next_attempt_at.expect("open at the threshold");
    drop(store);
    let store = open(&db).await;
    assert_eq!(
        store.pool_breaker(pool.id).await.unwrap(),
        b,
        "kept across a restart"
    );
    assert_eq!(
        store.pool_breakers().await.unwrap(),
        vec![(pool.id, b.clone())]
    );

    let lease = due + chrono::Duration::seconds(60);
    assert!(
        !store.claim_pool_probe(pool.id, now, lease).await.unwrap(),
        "not due yet"
    );
    assert!(store.claim_pool_probe(pool.id, due, lease).await.unwrap());
    assert!(
        !store.claim_pool_probe(pool.id, due, lease).await.unwrap(),
        "one probe"
    );
    assert_eq!(
        store.pool_breaker(pool.id).await.unwrap().next_attempt_at,
        Some(lease)
    );

    store.close_pool_breaker(pool.id).await.unwrap();
    assert_eq!(
        store.pool_breaker(pool.id).await.unwrap(),
        Breaker::default()
    );
    store
        .record_pool_failure(pool.id, |b| b.after_failure(&rules, "x", now, 1.0))
        .await
        .unwrap();
    let p = store.pool(pool.id).await.unwrap();
    store.update_pool(pool.id, &p.spec).await.unwrap();
    assert_eq!(
        store.pool_breaker(pool.id).await.unwrap(),
        Breaker::default(),
        "a pool update closes it"
    );
}

/// One batch holding a job's whole life, out-of-order and repeated events,
/// and other jobs: every event gets the outcome it would get alone, in order.
async fn one_batch_applies_its_events_in_order(db: TestDb) {
    let store = open(&db).await;
    let (entity, pool) = seed(&store).await;
    let p = Some(pool.id);
    let (a, b, c) = (i64::MAX - 7, 4_000_000_001_i64, 17_i64);
    let out = store
        .record_job_events(&[
            event(entity.id, a, JobAction::Queued, p),
            event(entity.id, b, JobAction::Completed, None),
            event(entity.id, a, JobAction::InProgress, p),
            event(entity.id, b, JobAction::Queued, p),
            event(entity.id, a, JobAction::Queued, p),
            event(entity.id, c, JobAction::Queued, None),
            event(entity.id, a, JobAction::Completed, p),
            event(entity.id, b, JobAction::Completed, None),
        ])
        .await
        .unwrap();
    let rec = |status, pool_id| JobOutcome::Recorded { status, pool_id };
    assert_eq!(
        out,
        vec![
            rec(JobStatus::Queued, p),
            rec(JobStatus::Completed, None),
            rec(JobStatus::InProgress, p),
            JobOutcome::Stale,
            JobOutcome::Duplicate,
            rec(JobStatus::Queued, None),
            rec(JobStatus::Completed, p),
            JobOutcome::Duplicate,
        ]
    );
    let job_a = store.job(JobId(a), 1).await.unwrap();
    assert_eq!(job_a.status, JobStatus::Completed);
    assert_eq!(job_a.runner_name.as_deref(), Some("hangar-1"));
    assert_eq!(job_a.conclusion.as_deref(), Some("success"));
    assert_eq!(
        job_a.labels,
        Labels::parse_list("self-hosted,linux").unwrap()
    );
    let job_b = store.job(JobId(b), 1).await.unwrap();
    assert_eq!(job_b.status, JobStatus::Completed);
    assert_eq!(job_b.pool_id, None, "a stale event changes nothing");
    assert_eq!(
        store.job(JobId(c), 1).await.unwrap().status,
        JobStatus::Queued
    );
    // The same batch again is all duplicates.
    let again = store
        .record_job_events(&[
            event(entity.id, a, JobAction::Queued, p),
            event(entity.id, c, JobAction::Queued, None),
        ])
        .await
        .unwrap();
    assert_eq!(again, vec![JobOutcome::Duplicate, JobOutcome::Duplicate]);
    assert!(store.record_job_events(&[]).await.unwrap().is_empty());
}

/// A batch larger than one statement: duplicates and a job's later events
/// fall in other statements of the same transaction and still see the
/// earlier ones.
async fn a_batch_over_several_statements_keeps_its_order(db: TestDb) {
    let store = open(&db).await;
    let (entity, pool) = seed(&store).await;
    let p = Some(pool.id);
    let n = ROWS_PER_STATEMENT as i64 * 2 + 5;
    let mut events: Vec<JobEvent> = (0..n)
        .map(|i| event(entity.id, 1_000 + i, JobAction::Queued, p))
        .collect();
    events.push(event(entity.id, 1_000, JobAction::Queued, p));
    events.push(event(entity.id, 1_001, JobAction::Completed, p));
    events.push(event(entity.id, 1_001, JobAction::InProgress, p));
    let out = store.record_job_events(&events).await.unwrap();
    assert_eq!(out.len(), events.len());
    let queued = JobOutcome::Recorded {
        status: JobStatus::Queued,
        pool_id: p,
    };
    assert!(out[..n as usize].iter().all(|o| *o == queued));
    assert_eq!(
        out[n as usize..],
        [
            JobOutcome::Duplicate,
            JobOutcome::Recorded {
                status: JobStatus::Completed,
                pool_id: p
            },
            JobOutcome::Stale,
        ]
    );
    let counts = store.job_counts().await.unwrap();
    assert!(counts.contains(&(JobStatus::Queued, n as u64 - 1)));
    assert!(counts.contains(&(JobStatus::Completed, 1)));
}

/// A job the scheduler already moved on (e.g. found completed on GitHub):
/// the webhook that reports the same status later is stale, not news.
async fn a_delivery_for_a_status_already_reached_is_stale(db: TestDb) {
    let store = open(&db).await;
    let (entity, pool) = seed(&store).await;
    let p = Some(pool.id);
    store
        .record_job_events(&[event(entity.id, 77, JobAction::Queued, p)])
        .await
        .unwrap();
    assert!(
        store
            .advance_job(JobId(77), 1, JobStatus::Completed, Some("cancelled"))
            .await
            .unwrap()
    );
    let out = store
        .record_job_events(&[
            event(entity.id, 77, JobAction::Completed, p),
            event(entity.id, 77, JobAction::Completed, p),
        ])
        .await
        .unwrap();
    assert_eq!(out, vec![JobOutcome::Stale, JobOutcome::Duplicate]);
    let job = store.job(JobId(77), 1).await.unwrap();
    assert_eq!(job.conclusion.as_deref(), Some("cancelled"));
}

/// A database from before migration 3 (deliveries in `job_events`) keeps
/// deduplicating the deliveries it had already seen.
#[tokio::test]
async fn migrating_job_events_onto_jobs_keeps_what_was_seen() {
    use sqlx::Connection as _;
    let db = TestDb::sqlite();
    let dir = db.dir().unwrap();
    let old = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/sqlite");
    for m in ["0001_init.sql", "0002_jobs_pool_queued_index.sql"] {
        std::fs::copy(root.join(m), old.path().join(m)).unwrap();
    }
    // The schema as migrations 1 and 2 left it, with one job seen queued
    // and in progress.
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let url = format!("sqlite://{}?mode=rwc", db_file(dir).display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let old_migrations = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
    old_migrations.run(&mut conn).await.unwrap();
    let entity = EntityId::new_random();
    sqlx::raw_sql(
        "PRAGMA foreign_keys = ON;
         INSERT INTO endpoints (name, base_url, api_base_url, created_at, updated_at)
         VALUES ('gh', 'https://github.com', 'https://api.github.com', 1, 1);
         INSERT INTO credentials (name, endpoint_name, auth_type, secret, created_at, updated_at)
         VALUES ('gh', 'gh', 'pat', x'00', 1, 1);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO entities (id, kind, owner, name, credentials_name, webhook_secret, created_at, updated_at)
         VALUES (?, 'repository', 'octo', 'app', 'gh', x'00', 1, 1)",
    )
    .bind(entity.to_string())
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, run_attempt, entity_id, status, status_rank, labels, repository,
            runner_name, queued_at, created_at, updated_at)
         VALUES (5, 1, ?, 'in_progress', 2, '[\"linux\"]', 'octo/app', 'hangar-1', 1, 1, 1)",
    )
    .bind(entity.to_string())
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql("INSERT INTO job_events VALUES (5, 1, 'queued', 1), (5, 1, 'in_progress', 2)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let store = open(&db).await;
    assert_eq!(
        store.applied_migrations().await.unwrap(),
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    );
    let out = store
        .record_job_events(&[
            event(entity, 5, JobAction::InProgress, None),
            event(entity, 5, JobAction::Queued, None),
            event(entity, 5, JobAction::Completed, None),
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            JobOutcome::Duplicate,
            JobOutcome::Duplicate,
            JobOutcome::Recorded {
                status: JobStatus::Completed,
                pool_id: None
            }
        ]
    );
    let job = store.job(JobId(5), 1).await.unwrap();
    assert_eq!(job.runner_name.as_deref(), Some("hangar-1"));
    assert_eq!(job.conclusion.as_deref(), Some("success"));
}

/// PostgreSQL's migrations 3 and 7 move data as SQLite's rebuilds do: a
/// database left by migrations 1 and 2, with a job seen queued and in
/// progress, keeps what was seen on the job row (`actions_seen`), and its
/// entity learns its credentials' endpoint and becomes unique per endpoint.
#[tokio::test]
async fn postgres_migrations_carry_old_rows_forward() {
    use sqlx::Connection as _;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let old = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/postgres");
    for m in ["0001_init.sql", "0002_jobs_pool_queued_index.sql"] {
        std::fs::copy(root.join(m), old.path().join(m)).unwrap();
    }
    let mut conn = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    let old_migrations = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
    old_migrations.run(&mut conn).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO endpoints (name, base_url, api_base_url, created_at, updated_at)
         VALUES ('gh', 'https://github.com', 'https://api.github.com', 1, 1),
                ('ghes', 'https://ghes.example', 'https://ghes.example/api/v3', 1, 1);
         INSERT INTO credentials (name, endpoint_name, auth_type, secret, created_at, updated_at)
         VALUES ('gh', 'gh', 'pat', '\\x00', 1, 1), ('ghes', 'ghes', 'pat', '\\x00', 1, 1);
         INSERT INTO entities (id, kind, owner, name, credentials_name, webhook_secret, created_at, updated_at)
         VALUES ('e1', 'repository', 'octo', 'app', 'gh', '\\x00', 1, 1);
         INSERT INTO jobs (id, run_attempt, entity_id, status, status_rank, labels, repository,
             runner_name, queued_at, created_at, updated_at)
         VALUES (5, 1, 'e1', 'in_progress', 2, '[\"linux\"]', 'octo/app', 'hangar-1', 1, 1, 1),
                (6, 1, 'e1', 'queued', 1, '[]', 'octo/app', NULL, 1, 1, 1);
         INSERT INTO job_events VALUES (5, 1, 'queued', 1), (5, 1, 'in_progress', 2), (6, 1, 'queued', 1);",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let store = open(&db).await;
    assert_eq!(
        store.applied_migrations().await.unwrap(),
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    );
    store.close().await;
    let seen: Vec<(i64, i64)> = sqlx::query_as("SELECT id, actions_seen FROM jobs ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(seen, [(5, 2 | 4), (6, 2)], "queued 2, in_progress 4");
    let endpoint: String = sqlx::query_scalar("SELECT endpoint_name FROM entities WHERE id = 'e1'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(endpoint, "gh");
    // Unique per endpoint now, ignoring case as before.
    let insert = "INSERT INTO entities (id, kind, owner, name, endpoint_name, credentials_name,
        webhook_secret, created_at, updated_at) VALUES ($1, 'repository', 'OCTO', 'App', $2, $2, '\\x00', 1, 1)";
    sqlx::query(insert)
        .bind("e2")
        .bind("ghes")
        .execute(&mut conn)
        .await
        .unwrap();
    let dup = sqlx::query(insert)
        .bind("e3")
        .bind("gh")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(
        matches!(&dup, sqlx::Error::Database(d) if d.is_unique_violation()),
        "{dup}"
    );
    conn.close().await.unwrap();
}

/// The SQL that narrows reconcile's reads (`instances_needing_work` and
/// `pool_state.instance_work`) selects exactly the instances core's step
/// rule has a step for, and its usage counts are core's `is_spare` and
/// `is_idle`, over every status pair, job state and age.
async fn the_needs_step_query_matches_the_core_rule(db: TestDb) {
    use common::{Arg, Raw};
    let store = open(&db).await;
    let (entity, pool) = seed(&store).await;
    let name = InstanceName::parse("hangar-tie").unwrap();
    store
        .reserve_instances(pool.id, "fake", std::slice::from_ref(&name))
        .await
        .unwrap();
    store
        .record_job_events(&[event(entity.id, 77, JobAction::Queued, Some(pool.id))])
        .await
        .unwrap();
    let mut raw = Raw::connect(&db).await;
    let now = chrono::Utc::now();
    let cutoff = now - chrono::Duration::minutes(20);
    let rules = policy::StepRules {
        bootstrap_cutoff: cutoff,
        max_create_attempts: 3,
    };
    let jobs = [
        None,
        Some((JobStatus::Queued, 1)),
        Some((JobStatus::InProgress, 2)),
        Some((JobStatus::Completed, 3)),
    ];
    let mut checked = 0;
    for status in InstanceStatus::ALL {
        for runner in RunnerStatus::ALL {
            for created in [now - chrono::Duration::hours(1), now] {
                for job in jobs {
                    raw.execute(
                        "UPDATE instances SET status = $1, runner_status = $2, created_at = $3 WHERE name = $4",
                        &[
                            Arg::Text(Some(status.as_str())),
                            Arg::Text(Some(runner.as_str())),
                            Arg::Int(created.timestamp_millis()),
                            Arg::Text(Some(name.as_str())),
                        ],
                    )
                    .await;
                    let (job_status, rank, runner_name) = match job {
                        Some((s, r)) => (s, r, Some(name.as_str())),
                        None => (JobStatus::Queued, 1, None),
                    };
                    raw.execute(
                        "UPDATE jobs SET status = $1, status_rank = $2, runner_name = $3 WHERE id = 77",
                        &[
                            Arg::Text(Some(job_status.as_str())),
                            Arg::Int(rank),
                            Arg::Text(runner_name),
                        ],
                    )
                    .await;
                    let inst = store.instance(&name).await.unwrap();
                    let view = policy::InstanceView {
                        instance: inst,
                        next_attempt: None,
                        job: job.map(|(s, _)| (JobId(77), s)),
                    };
                    let wanted = policy::next_step(&view, &rules).is_some();
                    let listed = store.instances_needing_work(pool.id, cutoff).await.unwrap();
                    let case = format!("{status} / {runner} / created {created} / job {job:?}");
                    assert_eq!(listed.len(), usize::from(wanted), "{case}");
                    if let Some(v) = listed.first() {
                        assert_eq!(v, &view, "{case}");
                    }
                    let state = store.pool_state(pool.id, now, now).await.unwrap().unwrap();
                    assert_eq!(state.instance_work, wanted, "{case}");
                    // The usage counts are core's predicates too.
                    let live = u32::from(view.instance.status.holds_capacity());
                    let expected = PoolUsage {
                        live,
                        spare: u32::from(view.instance.is_spare()),
                        idle: u32::from(view.instance.is_idle()),
                        active: live
                            * u32::from(view.instance.runner_status == RunnerStatus::Active),
                    };
                    assert_eq!(state.usage, expected, "{case}");
                    let all: std::collections::HashMap<_, _> =
                        store.pool_usage().await.unwrap().into_iter().collect();
                    assert_eq!(
                        all.get(&pool.id).copied().unwrap_or_default(),
                        expected,
                        "{case}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 7 * 6 * 2 * 4);
}

/// Adds a GHES endpoint with credentials `ghes` to a seeded store.
async fn add_ghes(store: &Store) {
    store
        .create_endpoint(&sample::endpoint(
            "ghes",
            "https://ghes.example.com",
            "https://ghes.example.com/api/v3",
        ))
        .await
        .unwrap();
    store
        .create_credentials(&sample::pat("ghes", "ghes", "ghp_GHESTOKEN"))
        .await
        .unwrap();
}

/// The same repository may be registered once per endpoint, as in garm;
/// twice on one endpoint is the usual conflict.
async fn one_scope_is_registered_once_per_endpoint(db: TestDb) {
    let store = open(&db).await;
    let (first, _) = seed(&store).await;
    add_ghes(&store).await;
    let scope = EntityScope::Repository {
        owner: "Octo".into(),
        name: "APP".into(),
    };
    let second = store
        .create_entity(&NewEntity {
            scope: scope.clone(),
            credentials_name: ResourceName::parse("ghes").unwrap(),
            webhook_secret: Secret::new("whsec_GHES"),
        })
        .await
        .unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(first.endpoint.as_str(), "github.com");
    assert_eq!(second.endpoint.as_str(), "ghes");
    let both = store.entities_by_scope(&scope).await.unwrap();
    assert_eq!(
        both.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![second.id, first.id]
    );
    let on = store.entity_by_scope_on(&scope, "ghes").await.unwrap();
    assert_eq!(on.map(|e| e.id), Some(second.id));
    assert_eq!(
        store
            .entity_webhook_secret(second.id)
            .await
            .unwrap()
            .expose(),
        "whsec_GHES"
    );

    let dup = store
        .create_entity(&NewEntity {
            scope: scope.clone(),
            credentials_name: ResourceName::parse("ghes").unwrap(),
            webhook_secret: Secret::new("x"),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&dup, StoreError::Conflict(m) if m.contains("already registered on endpoint \"ghes\"")),
        "{dup}"
    );
    // Moving the github.com one onto the GHES (its credentials) collides too.
    let moved = store
        .update_entity(first.id, Some(&ResourceName::parse("ghes").unwrap()), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&moved, StoreError::Conflict(m) if m.contains("already registered")),
        "{moved}"
    );
}

/// A database from before migration 7 (entities unique per scope) keeps its
/// entities' ids, sealed secrets, pools and jobs, and learns their endpoint.
#[tokio::test]
async fn migrating_entities_per_endpoint_keeps_ids_and_secrets() {
    use sqlx::Connection as _;
    let db = TestDb::sqlite();
    let dir = db.dir().unwrap();
    let (entity, pool) = {
        let store = open(&db).await;
        let seeded = seed(&store).await;
        store.close().await;
        seeded
    };
    // Put the table back as migrations 1–6 left it, and forget migration 7.
    let url = format!("sqlite://{}", db_file(dir).display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "PRAGMA foreign_keys = OFF;
         CREATE TABLE entities_old (
             id               TEXT    PRIMARY KEY,
             kind             TEXT    NOT NULL CHECK (kind IN ('repository', 'organization', 'enterprise')),
             owner            TEXT    NOT NULL DEFAULT '' COLLATE NOCASE,
             name             TEXT    NOT NULL COLLATE NOCASE,
             credentials_name TEXT    NOT NULL REFERENCES credentials (name) ON DELETE RESTRICT,
             webhook_secret   BLOB    NOT NULL,
             created_at       INTEGER NOT NULL,
             updated_at       INTEGER NOT NULL,
             UNIQUE (kind, owner, name)
         );
         INSERT INTO entities_old SELECT id, kind, owner, name, credentials_name, webhook_secret,
             created_at, updated_at FROM entities;
         DROP TABLE entities;
         ALTER TABLE entities_old RENAME TO entities;
         DELETE FROM _sqlx_migrations WHERE version = 7;
         INSERT INTO jobs (id, run_attempt, entity_id, status, status_rank, labels, repository,
             queued_at, created_at, updated_at)
         SELECT 9, 1, id, 'queued', 1, '[]', 'octo/app', 1, 1, 1 FROM entities;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store = open(&db).await;
    assert_eq!(
        store.applied_migrations().await.unwrap(),
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    );
    let after = store.entity(entity.id).await.unwrap();
    assert_eq!(after.scope, entity.scope);
    assert_eq!(after.endpoint.as_str(), "github.com");
    assert_eq!(
        store
            .entity_webhook_secret(entity.id)
            .await
            .unwrap()
            .expose(),
        "whsec_VERYSECRETHOOK"
    );
    assert_eq!(store.pool(pool.id).await.unwrap().entity_id, entity.id);
    assert_eq!(store.job(JobId(9), 1).await.unwrap().entity_id, entity.id);
    // And a second endpoint may now hold the same name.
    add_ghes(&store).await;
    store
        .create_entity(&NewEntity {
            scope: entity.scope.clone(),
            credentials_name: ResourceName::parse("ghes").unwrap(),
            webhook_secret: Secret::new("whsec_GHES"),
        })
        .await
        .unwrap();
}

/// The first admin is made once, even by several callers at once (several
/// replicas on PostgreSQL); names match ignoring case, as on SQLite; a new
/// password bumps the token generation.
async fn the_first_admin_is_made_once_and_names_ignore_case(db: TestDb) {
    let store = open(&db).await;
    assert!(!store.has_admin().await.unwrap());
    assert_eq!(store.first_admin_name().await.unwrap(), None);
    let tries: Vec<_> = (0..4)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_first_admin(
                        &format!("Admin{n}"),
                        None,
                        Some("The Admin"),
                        "$argon2id$x",
                    )
                    .await
            })
        })
        .collect();
    let mut made = Vec::new();
    for t in tries {
        match t.await.unwrap() {
            Ok(user) => made.push(user),
            Err(StoreError::Conflict(m)) => assert!(m.contains("already exists"), "{m}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(made.len(), 1, "exactly one first admin: {made:?}");
    let admin = &made[0];
    assert!(admin.is_admin);
    assert_eq!(admin.token_generation, 0);
    assert!(store.has_admin().await.unwrap());
    assert_eq!(
        store.first_admin_name().await.unwrap().as_deref(),
        Some(admin.username.as_str())
    );
    let shouted = admin.username.to_uppercase();
    assert_eq!(
        store.user_by_name(&shouted).await.unwrap().as_ref(),
        Some(admin),
        "user names ignore case"
    );
    let changed = store.set_password(&shouted, "$argon2id$y").await.unwrap();
    assert_eq!(changed.password_hash, "$argon2id$y");
    assert_eq!(changed.token_generation, 1);
    assert_eq!(store.user_by_id(admin.id).await.unwrap(), changed);
    assert!(matches!(
        store.set_password("nobody", "$argon2id$z").await,
        Err(StoreError::NotFound(_))
    ));
}

async fn endpoints_are_created_updated_listed_and_deleted(db: TestDb) {
    let store = open(&db).await;
    let gh = store.create_endpoint(&sample::github_com()).await.unwrap();
    assert_eq!(gh, sample::github_com());
    let e = store
        .create_endpoint(&sample::github_com())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("already exists")),
        "{e}"
    );
    let mut ghes = sample::github_com();
    ghes.name = ResourceName::parse("ghes").unwrap();
    ghes.base_url = "https://ghes.example".into();
    ghes.api_base_url = "https://ghes.example/api/v3".into();
    store.create_endpoint(&ghes).await.unwrap();
    ghes.description = "the company's".into();
    ghes.ca_bundle = Some("-----BEGIN CERTIFICATE-----".into());
    assert_eq!(store.update_endpoint(&ghes).await.unwrap(), ghes);
    let names: Vec<_> = store
        .list_endpoints()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name.as_str().to_owned())
        .collect();
    assert_eq!(names, ["ghes", "github.com"]);
    let mut unknown = ghes.clone();
    unknown.name = ResourceName::parse("nope").unwrap();
    assert!(matches!(
        store.update_endpoint(&unknown).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete_endpoint("nope").await,
        Err(StoreError::NotFound(_))
    ));
    store.delete_endpoint("ghes").await.unwrap();
    assert!(matches!(
        store.endpoint("ghes").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.list_endpoints().await.unwrap(), vec![gh]);
}

async fn delivery_cursors_only_move_forward_per_hook(db: TestDb) {
    let store = open(&db).await;
    assert_eq!(store.delivery_cursor("entity:x").await.unwrap(), None);
    let c = |hook_id, last_seen| DeliveryCursor { hook_id, last_seen };
    store
        .set_delivery_cursor("entity:x", c(Some(7), 100))
        .await
        .unwrap();
    store
        .set_delivery_cursor("entity:x", c(Some(7), 90))
        .await
        .unwrap();
    assert_eq!(
        store.delivery_cursor("entity:x").await.unwrap(),
        Some(c(Some(7), 100)),
        "never back on the same hook"
    );
    store
        .set_delivery_cursor("entity:x", c(Some(8), 5))
        .await
        .unwrap();
    assert_eq!(
        store.delivery_cursor("entity:x").await.unwrap(),
        Some(c(Some(8), 5)),
        "a new hook starts over"
    );
    store.clear_delivery_cursor("entity:x").await.unwrap();
    assert_eq!(store.delivery_cursor("entity:x").await.unwrap(), None);
}

async fn rechecks_fall_due_by_their_own_time_and_known_jobs_are_found(db: TestDb) {
    let store = open(&db).await;
    let (entity, pool) = seed(&store).await;
    let events: Vec<JobEvent> = (1..=3)
        .map(|i| event(entity.id, i, JobAction::Queued, Some(pool.id)))
        .collect();
    store.record_job_events(&events).await.unwrap();
    let after = chrono::Duration::seconds(300);
    let now = clock::now();
    assert!(store.due_rechecks(now, after, 10).await.unwrap().is_empty());
    let later = now + chrono::Duration::seconds(301);
    let due = store.due_rechecks(later, after, 10).await.unwrap();
    assert_eq!(due.len(), 3);
    assert_eq!(
        store.due_rechecks(later, after, 2).await.unwrap().len(),
        2,
        "bounded"
    );
    // Job 1 re-checked: next due in an hour; the others stay due.
    store
        .mark_job_checked(JobId(1), 1, later + chrono::Duration::hours(1))
        .await
        .unwrap();
    let due: Vec<i64> = store
        .due_rechecks(later, after, 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id.0)
        .collect();
    assert_eq!(due, vec![2, 3]);
    let due = store
        .due_rechecks(later + chrono::Duration::hours(2), after, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 3);
    assert!(store.job_queued_since(JobId(1), 1).await.unwrap() <= clock::now());

    let known = store
        .known_jobs(&[(JobId(1), 1), (JobId(2), 2), (JobId(3), 1), (JobId(99), 1)])
        .await
        .unwrap();
    assert_eq!(known, vec![(JobId(1), 1), (JobId(3), 1)]);
}

on_both_backends!(
    the_first_admin_is_made_once_and_names_ignore_case,
    endpoints_are_created_updated_listed_and_deleted,
    creates_folder_and_file_and_keeps_data_across_restarts,
    short_passphrase_is_refused,
    no_secret_is_stored_in_plain_text,
    conflicts_say_what_is_in_the_way,
    status_changes_follow_the_core_tables,
    concurrent_reservations_never_exceed_max_runners,
    jit_config_is_handed_out_once,
    create_writes_commit_together_and_refuse_one_by_one,
    jit_files_and_registration_tokens_are_handed_out_once_per_attempt,
    job_events_deduplicate_and_only_move_forward,
    pool_state_caps_demand_and_sees_instance_work,
    batch_reservation_hands_out_jobs_and_respects_max,
    pool_breakers_count_claim_close_and_persist,
    one_batch_applies_its_events_in_order,
    a_batch_over_several_statements_keeps_its_order,
    a_delivery_for_a_status_already_reached_is_stale,
    the_needs_step_query_matches_the_core_rule,
    one_scope_is_registered_once_per_endpoint,
    delivery_cursors_only_move_forward_per_hook,
    rechecks_fall_due_by_their_own_time_and_known_jobs_are_found,
);
