//! Runs the store's tests on both backends: a fresh SQLite file in a
//! temporary folder, and a fresh PostgreSQL database made on the server
//! `HANGAR_TEST_POSTGRES_URL` names (any database there the URL's user may
//! `CREATE DATABASE` from) and dropped after the test. Without that
//! variable the PostgreSQL half is skipped loudly, unless `CI=true`: CI
//! must run it, so there it fails.
//!
//! A test file declares its backend-neutral tests as `async fn name(db:
//! TestDb)` and lists them in [`on_both_backends!`], which makes
//! `name::sqlite` and `name::postgres` tests.

#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use hangar_core::Secret;
use hangar_store::{Store, StoreOptions};
use sqlx::Connection as _;

/// The passphrase [`TestDb::open`] uses.
pub const PASS: &str = "a test passphrase that is long enough!";

/// The variable naming the PostgreSQL server the tests may use.
pub const POSTGRES_URL_VAR: &str = "HANGAR_TEST_POSTGRES_URL";

/// Makes `name::sqlite` and `name::postgres` tokio tests of each listed
/// `async fn name(db: TestDb)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::common::TestDb::sqlite()).await
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(db) = $crate::common::TestDb::postgres().await {
                    super::$name(db).await
                }
            }
        }
    )*};
}

/// One test's database; a PostgreSQL one is dropped with it.
pub struct TestDb {
    kind: Kind,
}

enum Kind {
    Sqlite(tempfile::TempDir),
    Postgres {
        /// Where `CREATE/DROP DATABASE` run (the variable's URL).
        admin_url: String,
        url: String,
        name: String,
    },
}

impl TestDb {
    /// A fresh SQLite file (`data/hangar.db` in a new temporary folder).
    pub fn sqlite() -> Self {
        Self {
            kind: Kind::Sqlite(tempfile::tempdir().expect("a temporary folder")),
        }
    }

    /// A fresh PostgreSQL database, or `None` when the variable is unset
    /// outside CI (after saying so loudly). Panics in CI without it.
    pub async fn postgres() -> Option<Self> {
        let admin_url = postgres_url()?;
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "hangar_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..8)
                .unwrap_or("0")
        );
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR}={admin_url}: cannot connect: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        Some(Self {
            kind: Kind::Postgres {
                admin_url,
                url,
                name,
            },
        })
    }

    /// The `[database] url` of this database.
    pub fn url(&self) -> String {
        match &self.kind {
            Kind::Sqlite(_) => format!("sqlite://{}", self.sqlite_file().unwrap().display()),
            Kind::Postgres { url, .. } => url.clone(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.kind, Kind::Postgres { .. })
    }

    /// `"sqlite"` or `"postgres"`, for messages.
    pub fn backend(&self) -> &'static str {
        if self.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// The temporary folder of a SQLite database.
    pub fn dir(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Sqlite(dir) => Some(dir.path()),
            Kind::Postgres { .. } => None,
        }
    }

    /// The SQLite file (which may not exist yet).
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        self.dir().map(|d| d.join("data/hangar.db"))
    }

    /// Options for this database with `passphrase`.
    pub fn options_with(&self, passphrase: &str) -> StoreOptions {
        StoreOptions::new(self.url(), Secret::new(passphrase))
    }

    /// Options for this database with [`PASS`].
    pub fn options(&self) -> StoreOptions {
        self.options_with(PASS)
    }

    /// Opens (and on first use migrates) the store with [`PASS`].
    pub async fn open(&self) -> Store {
        Store::open(&self.options())
            .await
            .unwrap_or_else(|e| panic!("the {} store opens: {e}", self.backend()))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Kind::Postgres {
            admin_url, name, ..
        } = &self.kind
        else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // a thread of its own with a small runtime drops the database.
        // FORCE ends the connections a store still holds.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            let _ = writeln!(
                std::io::stderr(),
                "could not drop the test database {}: {dropped:?}",
                match &self.kind {
                    Kind::Postgres { name, .. } => name.as_str(),
                    Kind::Sqlite(_) => "",
                }
            );
        }
    }
}

/// The server URL, or `None` (said once per test binary) when the
/// PostgreSQL half is skipped.
fn postgres_url() -> Option<String> {
    if let Some(url) = std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        return Some(url);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!(
            "{POSTGRES_URL_VAR} is not set but CI is: the store tests must run on PostgreSQL in CI \
             (cargo xtask ci starts a server and sets it)"
        );
    }
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        // Straight to the process's stderr, past the test harness's capture,
        // so it shows even when every test passes.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED PostgreSQL: set {POSTGRES_URL_VAR} (e.g. postgres://postgres@127.0.0.1:5432/postgres) \
             to run the store tests on PostgreSQL too ***\n"
        );
    });
    None
}

/// `url` with its database name replaced by `name` (query kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[test]
fn the_database_name_is_replaced_and_the_query_kept() {
    assert_eq!(
        with_database("postgres://u:p@h:5/postgres?sslmode=require", "t1"),
        "postgres://u:p@h:5/t1?sslmode=require"
    );
    assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
}

/// Every table of a PostgreSQL test database as text, rows sorted, bytes
/// as `encode(…, 'escape')` (printable bytes stay as they are): to compare
/// a database before and after, or to look for a plain-text secret.
pub async fn dump(db: &TestDb) -> String {
    assert!(db.is_postgres(), "dump reads PostgreSQL");
    let mut c = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut out = String::new();
    for table in tables {
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT)
               FROM information_schema.columns
              WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(&table)
        .fetch_all(&mut c)
        .await
        .unwrap();
        let exprs: Vec<String> = columns
            .iter()
            .map(|(name, ty)| {
                let text = if ty == "bytea" {
                    format!("encode(\"{name}\", 'escape')")
                } else {
                    format!("CAST(\"{name}\" AS TEXT)")
                };
                format!("COALESCE({text}, 'NULL')")
            })
            .collect();
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        out.push_str(&format!("== {table} ({})\n", names.join(", ")));
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT concat_ws(' | ', {}) FROM \"{table}\" ORDER BY 1",
            exprs.join(", ")
        )))
        .fetch_all(&mut c)
        .await
        .unwrap();
        for row in rows {
            out.push_str(&row);
            out.push('\n');
        }
    }
    c.close().await.ok();
    out
}

/// A connection of the test's own beside the store's, to put rows into
/// states the store's API would not (the same SQL on both backends).
pub enum Raw {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

/// A parameter of [`Raw::execute`].
pub enum Arg<'a> {
    Text(Option<&'a str>),
    Int(i64),
}

impl Raw {
    pub async fn connect(db: &TestDb) -> Self {
        use sqlx::ConnectOptions as _;
        match db.sqlite_file() {
            Some(file) => Raw::Sqlite(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(file)
                    .connect()
                    .await
                    .unwrap(),
            ),
            None => Raw::Postgres(sqlx::PgConnection::connect(&db.url()).await.unwrap()),
        }
    }

    /// Runs `sql` (`$1…` placeholders) with `args`; returns the rows changed.
    pub async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> u64 {
        macro_rules! run {
            ($conn:expr) => {{
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
                for a in args {
                    q = match a {
                        Arg::Text(t) => q.bind(*t),
                        Arg::Int(i) => q.bind(*i),
                    };
                }
                q.execute($conn).await.unwrap().rows_affected()
            }};
        }
        match self {
            Raw::Sqlite(c) => run!(c),
            Raw::Postgres(c) => run!(c),
        }
    }
}
