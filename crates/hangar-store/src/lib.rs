//! All of Hangar's SQL, and nothing else.
//!
//! SQLite through sqlx: one writer connection (so writes queue in-process
//! instead of failing with "database is locked") and a small pool of readers
//! (WAL lets them run beside the writer). Migrations from the top-level
//! `migrations/sqlite/` folder (or `migrations/postgres/`) are embedded and run by [`Store::open`]. Every status
//! change passes the core transition check inside the transaction that writes
//! it. Secrets are sealed with [`seal::Sealer`] before they touch the disk.
//!
//! A bound LIMIT is written `LIMIT CAST(? AS INTEGER)`: SQLite marks a
//! statement with a bare `LIMIT ?` to be re-prepared whenever that parameter
//! is bound, which is every time it runs.

pub mod clock;
mod controller;
mod credentials;
mod dashboard;
mod endpoints;
mod entities;
pub mod files;
pub mod garm;
mod hooks;
mod instances;
mod jobs;
mod leases;
mod pool_state;
mod pools;
mod scale_set_queue;
mod scale_sets;
pub mod seal;
mod users;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use hangar_core::{ControllerId, Secret, TransitionError};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Postgres, Row, Sqlite};

pub use controller::ControllerInfo;
pub use credentials::CredentialsSummary;
pub use dashboard::{FailureRow, JobTimes, JobTimesFilter, PoolQueue, WaitSample};
pub use entities::NewEntity;
pub use hooks::DeliveryCursor;
pub use instances::{
    Change, CreateWrite, CreateWritten, InstanceCounts, InstanceFilter, NewInstance, PoolUsage,
    TokenLookup,
};
pub use jobs::{JobEvent, JobFilter, JobOutcome, PoolDemand, ROWS_PER_STATEMENT};
pub use leases::{Fence, Lease, LeaseRow, PoolFence, Renewal, current_fence, fair_share, fenced};
pub use pool_state::{PoolState, ScaleSetDemand};
pub use scale_set_queue::{
    AppliedMessage, ListenedScaleSet, PoolScaleSet, ScaleSetProgress, desired_runners,
};
pub use scale_sets::NewScaleSet;
pub use seal::{SealError, Sealer};
pub use users::User;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");
static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// Runs `$body` with `$c` bound to the backend's pool: `write` (the single
/// SQLite writer, or the PostgreSQL pool) or `read` (the SQLite readers, or
/// the PostgreSQL pool); with `both, |$w, $r|`, to each. The body is
/// compiled once per backend, so the same SQL text runs on both: write it in
/// the dialect both accept (`$1` placeholders, `TRUE`/`FALSE`, `ON
/// CONFLICT`, integer results cast to `BIGINT` where PostgreSQL would give
/// another type). Rows differ by backend: map them inside the body. With a
/// module name before the closure (`on!(self, write, m, |c| …)`), `m`
/// names the calling module's [`per_backend!`] items for that backend.
macro_rules! on {
    ($store:expr, both, |$w:ident, $r:ident| $body:expr) => {
        match &$store.inner.backend {
            $crate::Backend::Sqlite(b) => {
                let ($w, $r) = (&b.write, &b.read);
                $body
            }
            $crate::Backend::Postgres(p) => {
                let ($w, $r) = (p, p);
                $body
            }
        }
    };
    ($store:expr, both, $m:ident, |$w:ident, $r:ident| $body:expr) => {
        match &$store.inner.backend {
            $crate::Backend::Sqlite(b) => {
                let ($w, $r) = (&b.write, &b.read);
                #[allow(unused_imports)]
                use self::on_sqlite as $m;
                $body
            }
            $crate::Backend::Postgres(p) => {
                let ($w, $r) = (p, p);
                #[allow(unused_imports)]
                use self::on_postgres as $m;
                $body
            }
        }
    };
    ($store:expr, $side:ident, |$c:ident| $body:expr) => {
        match &$store.inner.backend {
            $crate::Backend::Sqlite(b) => {
                let $c = &b.$side;
                $body
            }
            $crate::Backend::Postgres(p) => {
                let $c = p;
                $body
            }
        }
    };
    ($store:expr, $side:ident, $m:ident, |$c:ident| $body:expr) => {
        match &$store.inner.backend {
            $crate::Backend::Sqlite(b) => {
                let $c = &b.$side;
                #[allow(unused_imports)]
                use self::on_sqlite as $m;
                $body
            }
            $crate::Backend::Postgres(p) => {
                let $c = p;
                #[allow(unused_imports)]
                use self::on_postgres as $m;
                $body
            }
        }
    };
}
pub(crate) use on;

/// Compiles the items twice, as `on_sqlite` and `on_postgres` submodules of
/// the calling module, with `Db` and `Conn` naming that backend's database
/// and connection types: for helpers that take a connection (a
/// transaction's) and so cannot be written once for both.
macro_rules! per_backend {
    ($($item:item)*) => {
        pub(crate) mod on_sqlite {
            #![allow(unused_imports, dead_code)]
            use super::*;
            pub(crate) type Db = sqlx::Sqlite;
            pub(crate) type Conn = sqlx::SqliteConnection;
            $($item)*
        }
        pub(crate) mod on_postgres {
            #![allow(unused_imports, dead_code)]
            use super::*;
            pub(crate) type Db = sqlx::Postgres;
            pub(crate) type Conn = sqlx::PgConnection;
            $($item)*
        }
    };
}
pub(crate) use per_backend;

/// A row of either backend, read the same way: the row mappers take
/// `&impl DbRow` and are written once.
pub(crate) trait DbRow {
    fn get<'r, T, I>(&'r self, index: I) -> T
    where
        T: sqlx::Decode<'r, Sqlite>
            + sqlx::Type<Sqlite>
            + sqlx::Decode<'r, Postgres>
            + sqlx::Type<Postgres>,
        I: sqlx::ColumnIndex<SqliteRow> + sqlx::ColumnIndex<PgRow> + std::fmt::Debug;

    #[allow(dead_code)]
    fn try_get<'r, T, I>(&'r self, index: I) -> Result<T, sqlx::Error>
    where
        T: sqlx::Decode<'r, Sqlite>
            + sqlx::Type<Sqlite>
            + sqlx::Decode<'r, Postgres>
            + sqlx::Type<Postgres>,
        I: sqlx::ColumnIndex<SqliteRow> + sqlx::ColumnIndex<PgRow> + std::fmt::Debug;
}

macro_rules! db_row {
    ($row:ty) => {
        impl DbRow for $row {
            fn get<'r, T, I>(&'r self, index: I) -> T
            where
                T: sqlx::Decode<'r, Sqlite>
                    + sqlx::Type<Sqlite>
                    + sqlx::Decode<'r, Postgres>
                    + sqlx::Type<Postgres>,
                I: sqlx::ColumnIndex<SqliteRow> + sqlx::ColumnIndex<PgRow> + std::fmt::Debug,
            {
                Row::get(self, index)
            }

            fn try_get<'r, T, I>(&'r self, index: I) -> Result<T, sqlx::Error>
            where
                T: sqlx::Decode<'r, Sqlite>
                    + sqlx::Type<Sqlite>
                    + sqlx::Decode<'r, Postgres>
                    + sqlx::Type<Postgres>,
                I: sqlx::ColumnIndex<SqliteRow> + sqlx::ColumnIndex<PgRow> + std::fmt::Debug,
            {
                Row::try_get(self, index)
            }
        }
    };
}
db_row!(SqliteRow);
db_row!(PgRow);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A write on a pool's behalf by a replica that no longer holds the
    /// pool's lease (or holds it under a newer token): it was not made.
    #[error("fenced: {0}")]
    Fenced(String),
    #[error(
        "the database {path} was created with a different passphrase; refusing to start (the database was not changed). Use the passphrase it was created with."
    )]
    WrongPassphrase { path: String },
    #[error("cannot seal or open a secret: {0}")]
    Seal(#[from] SealError),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://path/to/file.db` (relative paths are relative to the working
    /// directory) or `sqlite:path`.
    pub url: String,
    pub passphrase: Secret,
    /// `FULL` (default) fsyncs every commit: an acknowledged webhook survives
    /// power loss. `NORMAL` survives a crash of the process only.
    pub synchronous_full: bool,
    /// Reader connections besides the single writer.
    pub readers: u32,
    /// How long a query may wait for a connection before it fails.
    pub acquire_timeout: Duration,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>, passphrase: Secret) -> Self {
        Self {
            url: url.into(),
            passphrase,
            synchronous_full: true,
            readers: 4,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// The database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    sealer: Sealer,
    controller_id: ControllerId,
}

/// Where the data lives.
#[derive(Debug)]
pub(crate) enum Backend {
    Sqlite(SqliteBackend),
    Postgres(PgPool),
}

#[derive(Debug)]
pub(crate) struct SqliteBackend {
    write: SqlitePool,
    read: SqlitePool,
    path: PathBuf,
}

/// Which database a `[database] url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server (`postgres://` or `postgresql://`).
    Postgres,
}

/// Checks a `[database] url` and says which backend it selects.
pub fn database_kind(url: &str) -> Result<DatabaseKind> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Invalid(format!("database url is not a valid PostgreSQL URL: {e}"))
        })?;
        return Ok(DatabaseKind::Postgres);
    }
    sqlite_path(url).map(DatabaseKind::Sqlite)
}

/// The file path of a `sqlite:` URL.
pub fn sqlite_path(url: &str) -> Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "database url {url:?} is not supported: use sqlite://PATH or postgres://USER@HOST/DB"
            ))
        })?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Invalid(format!(
            "database url {url:?} names no file: use sqlite://PATH"
        )));
    }
    Ok(PathBuf::from(path))
}

impl Store {
    /// Opens (creating when missing) and migrates the database.
    ///
    /// An existing database is first opened read-only to check the
    /// passphrase; with the wrong one this fails with
    /// [`StoreError::WrongPassphrase`] before anything is written.
    pub async fn open(opts: &StoreOptions) -> Result<Self> {
        let path = match database_kind(&opts.url)? {
            DatabaseKind::Sqlite(path) => path,
            DatabaseKind::Postgres => return Self::open_postgres(opts).await,
        };
        let mut sealer = None;
        if path.exists() {
            files::tighten(&path)?;
            sealer = check_existing(&path, &opts.passphrase).await?;
        } else {
            files::create_private(&path)?;
        }

        let base = SqliteConnectOptions::new()
            .filename(&path)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if opts.synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .log_statements(tracing::log::LevelFilter::Trace)
            .pragma("temp_store", "memory");
        // An embedded database cannot drop a connection the way a server
        // can, so the liveness ping sqlx sends before handing one out is a
        // wasted round trip to the connection's thread on every query.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|_, _| {
                Box::pin(async {
                    let suspect = WRITER_SUSPECT.swap(false, std::sync::atomic::Ordering::SeqCst);
                    if suspect {
                        tracing::warn!(
                            "a write failed at the file (full, read-only, I/O): opening a fresh writer connection"
                        );
                    }
                    Ok(!suspect)
                })
            })
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(base.clone().create_if_missing(true))
            .await?;
        // The writer made the -wal and -shm files; they take the database
        // file's mode, which this confirms.
        files::tighten(&path)?;
        MIGRATOR.run(&write).await?;

        let (controller_id, sealer) =
            controller::on_sqlite::ensure(&write, &opts.passphrase, sealer).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(opts.readers.max(1))
            .acquire_timeout(opts.acquire_timeout)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(base.read_only(true))
            .await?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend: Backend::Sqlite(SqliteBackend { write, read, path }),
                sealer,
                controller_id,
            }),
        })
    }

    /// How long PostgreSQL lets one of our sessions sit idle inside a
    /// transaction before it ends it (see [`Store::open_postgres`]).
    pub const IDLE_IN_TRANSACTION_TIMEOUT_MS: u64 = 5_000;

    /// Opens and migrates a PostgreSQL database. Its passphrase is checked
    /// first, in a read-only transaction, so a replica started with the
    /// wrong one refuses before it writes anything (migrations included).
    async fn open_postgres(opts: &StoreOptions) -> Result<Self> {
        let connect = PgConnectOptions::from_str(&opts.url)
            .map_err(|e| StoreError::Invalid(format!("database url: {e}")))?
            .application_name("hangard")
            .log_statements(tracing::log::LevelFilter::Trace)
            // A replica frozen mid-transaction (SIGSTOP, a stalled VM)
            // would hold its row locks — the share lock a fenced write
            // takes on its pool's lease row among them — for as long as
            // its connection stays open, and no other replica could take
            // the pool over. The server ends such a session instead; no
            // transaction of ours waits between statements this long.
            .options([(
                "idle_in_transaction_session_timeout",
                Self::IDLE_IN_TRANSACTION_TIMEOUT_MS.to_string(),
            )]);
        let pool = PgPoolOptions::new()
            .max_connections(opts.readers.max(1) + 4)
            .min_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect)
            .await?;
        let sealer = check_existing_postgres(&pool, &opts.passphrase).await?;
        PG_MIGRATOR.run(&pool).await?;
        let (controller_id, sealer) =
            controller::on_postgres::ensure(&pool, &opts.passphrase, sealer).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend: Backend::Postgres(pool),
                sealer,
                controller_id,
            }),
        })
    }

    /// Which backend this store runs on: `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match &self.inner.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub fn controller_id(&self) -> ControllerId {
        self.inner.controller_id
    }

    /// The SQLite file; `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.backend {
            Backend::Sqlite(b) => Some(&b.path),
            Backend::Postgres(_) => None,
        }
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        on!(self, read, |c| sqlx::query("SELECT 1")
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// The applied migration versions, oldest first.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>> {
        let sql = "SELECT version FROM _sqlx_migrations ORDER BY version";
        Ok(on!(self, read, |c| sqlx::query_scalar(sql)
            .fetch_all(c)
            .await)?)
    }

    /// Connections checked out or being opened right now: 0 means no query
    /// is in flight. Tools that step tokio's paused clock by hand (the
    /// simulation, `hangar-sim`) wait for 0 before moving time, so no
    /// query straddles a step.
    pub fn connections_in_use(&self) -> u32 {
        match &self.inner.backend {
            Backend::Sqlite(b) => {
                let busy = |p: &SqlitePool| p.size().saturating_sub(p.num_idle() as u32);
                busy(&b.write) + busy(&b.read)
            }
            Backend::Postgres(p) => p.size().saturating_sub(p.num_idle() as u32),
        }
    }

    /// Waits for in-flight queries and closes every connection (checkpoints
    /// the WAL).
    pub async fn close(&self) {
        match &self.inner.backend {
            Backend::Sqlite(b) => {
                b.read.close().await;
                b.write.close().await;
            }
            Backend::Postgres(p) => p.close().await,
        }
    }

    fn sealer(&self) -> &Sealer {
        &self.inner.sealer
    }
}

/// Checks the passphrase against a PostgreSQL database that has a
/// controller row, in a read-only transaction.
async fn check_existing_postgres(pool: &PgPool, passphrase: &Secret) -> Result<Option<Sealer>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await?;
    let has_controller: Option<String> =
        sqlx::query_scalar("SELECT CAST(to_regclass('controller') AS TEXT)")
            .fetch_one(&mut *tx)
            .await?;
    let mut result = None;
    if has_controller.is_some() {
        let row = sqlx::query("SELECT kdf_salt, key_check FROM controller WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            let salt: Vec<u8> = Row::get(&row, 0);
            let check: Vec<u8> = Row::get(&row, 1);
            let sealer = Sealer::derive(passphrase, &salt)?;
            if !sealer.verify_key_check(&check) {
                return Err(StoreError::WrongPassphrase {
                    path: "(the PostgreSQL database)".into(),
                });
            }
            result = Some(sealer);
        }
    }
    tx.rollback().await?;
    Ok(result)
}

/// Checks the passphrase of an existing database without writing to it.
async fn check_existing(path: &Path, passphrase: &Secret) -> Result<Option<Sealer>> {
    // With no WAL file around, open as immutable: SQLite then creates no
    // -wal/-shm files either, so a refused start leaves the folder as it was.
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let mut conn = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .read_only(true)
        .immutable(!Path::new(&wal).exists())
        .create_if_missing(false)
        .connect()
        .await?;
    let has_controller: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'controller'",
    )
    .fetch_optional(&mut conn)
    .await?;
    let mut result = None;
    if has_controller.is_some() {
        let row = sqlx::query("SELECT kdf_salt, key_check FROM controller WHERE id = 1")
            .fetch_optional(&mut conn)
            .await?;
        if let Some(row) = row {
            let salt: Vec<u8> = Row::get(&row, 0);
            let check: Vec<u8> = Row::get(&row, 1);
            let sealer = Sealer::derive(passphrase, &salt)?;
            if !sealer.verify_key_check(&check) {
                conn.close().await.ok();
                return Err(StoreError::WrongPassphrase {
                    path: path.display().to_string(),
                });
            }
            result = Some(sealer);
        }
    }
    conn.close().await?;
    Ok(result)
}

/// SHA-256 of an instance token: what the database keeps instead of the
/// token itself (tokens are 256-bit random, so a plain hash is enough).
pub fn hash_token(token: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

pub(crate) fn now_ms() -> i64 {
    clock::now().timestamp_millis()
}

pub(crate) fn to_dt(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Maps a UNIQUE or FOREIGN KEY violation to a clear conflict message.
pub(crate) fn map_constraint(e: sqlx::Error, unique: &str, foreign: &str) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict(unique.to_owned());
        }
        if db.is_foreign_key_violation() {
            return StoreError::Conflict(foreign.to_owned());
        }
    }
    StoreError::from(e)
}

/// Set when SQLite failed in a way that can leave the writer connection's
/// transaction state unknown (disk full, I/O error, read-only file…): a
/// COMMIT refused for want of space may or may not have rolled back, and
/// sqlx's own bookkeeping of it can then disagree with SQLite's. The write
/// pool's `before_acquire` sees the flag and closes the connection, which
/// rolls back whatever it still held, so the next write starts on a clean
/// connection instead of piling acknowledged writes into a transaction that
/// never commits.
static WRITER_SUSPECT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// SQLite's primary result codes after which a connection is not trusted:
/// BUSY, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN.
const UNTRUSTED_CODES: [i64; 7] = [5, 7, 8, 10, 11, 13, 14];

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let untrusted = match &e {
            sqlx::Error::Database(db) => db
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .is_some_and(|c| UNTRUSTED_CODES.contains(&(c & 0xff))),
            sqlx::Error::Io(_) => true,
            _ => false,
        };
        if untrusted {
            WRITER_SUSPECT.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        StoreError::Database(e)
    }
}
