//! The two migration folders, `migrations/sqlite` and `migrations/postgres`,
//! must give the same schema: the store's SQL is written once for both. A
//! fresh SQLite file and a fresh PostgreSQL database are migrated by
//! `Store::open`, then each catalog is read into one neutral shape (tables,
//! columns with normalized type, nullability, default and case-insensitive
//! collation, primary keys, unique constraints, named indexes with their
//! columns and partial predicate, foreign keys with their ON DELETE) and the
//! two are compared; every difference is listed.

mod common;

use std::collections::BTreeMap;

use common::TestDb;
use sqlx::{Connection as _, Row as _};

/// Flags: SQLite has no boolean type, and its shipped migrations declared
/// these INTEGER (0/1); PostgreSQL's are BOOLEAN, which is what the code
/// binds and reads (`bool`). Any other integer/boolean mismatch is a
/// difference.
const FLAGS: &[&str] = &[
    "users.is_admin",
    "pools.enabled",
    "pools.scale_set",
    "jobs.last_action_moved",
    "instances.force_delete",
];

/// sqlx's own bookkeeping, not part of the schema.
const IGNORED_TABLES: &[&str] = &["_sqlx_migrations"];

/// A schema as `"table.what" => "description"`, so that two compare
/// entry by entry and a difference reads as one line.
type Shape = BTreeMap<String, String>;

#[tokio::test]
async fn sqlite_and_postgres_migrations_give_the_same_schema() {
    let lite = TestDb::sqlite();
    lite.open().await.close().await;
    let Some(pg) = TestDb::postgres().await else {
        return;
    };
    pg.open().await.close().await;

    let sqlite = sqlite_shape(&lite).await;
    let postgres = postgres_shape(&pg).await;
    assert!(
        sqlite.len() > 100,
        "the SQLite catalog was read: {sqlite:#?}"
    );

    let mut differences = Vec::new();
    for key in sqlite.keys().chain(postgres.keys()) {
        match (sqlite.get(key), postgres.get(key)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                differences.push(format!("{key}: sqlite {a:?} but postgres {b:?}"))
            }
            (Some(a), None) => differences.push(format!("{key}: only in sqlite ({a})")),
            (None, Some(b)) => differences.push(format!("{key}: only in postgres ({b})")),
            (None, None) => unreachable!(),
        }
    }
    differences.dedup();
    assert!(
        differences.is_empty(),
        "migrations/sqlite and migrations/postgres differ ({} differences):\n  {}",
        differences.len(),
        differences.join("\n  ")
    );
}

fn describe_column(ty: &str, not_null: bool, default: Option<String>, nocase: bool) -> String {
    format!(
        "{ty}{}{}{}",
        if not_null { " not null" } else { " null" },
        default.map(|d| format!(" default {d}")).unwrap_or_default(),
        if nocase { " nocase" } else { "" }
    )
}

/// `(a, b)` for an index's or key's columns.
fn cols(list: &[String]) -> String {
    format!("({})", list.join(", "))
}

/// A partial index's predicate, without the spelling differences of the
/// two catalogs (parentheses, spaces, case).
fn predicate(p: &str) -> String {
    p.replace(['(', ')'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A column default without PostgreSQL's casts (`'[]'::text`).
fn default_value(d: &str) -> String {
    let d = d.trim();
    match d.find("::") {
        Some(i) if !d[i..].contains('\'') => d[..i].to_owned(),
        _ => d.to_owned(),
    }
}

fn on_delete(action: &str) -> String {
    action.to_lowercase().replace(' ', "_")
}

async fn sqlite_shape(db: &TestDb) -> Shape {
    let file = db.sqlite_file().unwrap();
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", file.display()))
        .await
        .unwrap();
    let mut shape = Shape::new();
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    for (table, sql) in tables {
        if IGNORED_TABLES.contains(&table.as_str()) {
            continue;
        }
        shape.insert(table.clone(), "table".into());
        let nocase = nocase_columns(&sql);
        let columns = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA table_info({table})")))
            .fetch_all(&mut c)
            .await
            .unwrap();
        let mut pk: Vec<(i64, String)> = Vec::new();
        for col in &columns {
            let name: String = col.get("name");
            let declared: String = col.get("type");
            let flag = FLAGS.contains(&format!("{table}.{name}").as_str());
            let ty = match declared.to_uppercase().as_str() {
                "INTEGER" if flag => "boolean".to_owned(),
                "INTEGER" => "integer".to_owned(),
                "TEXT" => "text".to_owned(),
                "BLOB" => "blob".to_owned(),
                "BOOLEAN" => "boolean".to_owned(),
                other => format!("other:{other}"),
            };
            let key_part: i64 = col.get("pk");
            if key_part > 0 {
                pk.push((key_part, name.clone()));
            }
            // A key column is NOT NULL on PostgreSQL whatever it says; on
            // SQLite only INTEGER PRIMARY KEY and WITHOUT ROWID ensure it,
            // and the store never writes a NULL key.
            let not_null = col.get::<i64, _>("notnull") != 0 || key_part > 0;
            let default = col.get::<Option<String>, _>("dflt_value").map(|d| {
                let d = default_value(&d);
                match (flag, d.as_str()) {
                    (true, "0") => "false".to_owned(),
                    (true, "1") => "true".to_owned(),
                    _ => d,
                }
            });
            shape.insert(
                format!("{table}.column {name}"),
                describe_column(&ty, not_null, default, nocase.contains(&name)),
            );
        }
        pk.sort();
        let pk: Vec<String> = pk.into_iter().map(|(_, n)| n).collect();
        shape.insert(format!("{table}.primary key"), cols(&pk));

        let indexes = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA index_list({table})")))
            .fetch_all(&mut c)
            .await
            .unwrap();
        for ix in indexes {
            let name: String = ix.get("name");
            let origin: String = ix.get("origin");
            let unique = ix.get::<i64, _>("unique") != 0;
            let mut columns: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT seqno, name FROM pragma_index_info('{name}')"
            )))
            .fetch_all(&mut c)
            .await
            .unwrap();
            columns.sort();
            let columns: Vec<String> = columns.into_iter().map(|(_, n)| n).collect();
            match origin.as_str() {
                "pk" => {}
                "u" => {
                    shape.insert(
                        format!("{table}.unique {}", cols(&columns)),
                        "unique".into(),
                    );
                }
                _ => {
                    let index_sql: String = sqlx::query_scalar(
                        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = $1",
                    )
                    .bind(&name)
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
                    let upper = index_sql.to_uppercase();
                    let pred = upper
                        .find(" WHERE ")
                        .map(|i| predicate(&index_sql[i + 7..]));
                    shape.insert(
                        format!("{table}.index {name}"),
                        describe_index(&columns, unique, pred),
                    );
                }
            }
        }

        let fks = sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA foreign_key_list({table})"
        )))
        .fetch_all(&mut c)
        .await
        .unwrap();
        let mut by_id: BTreeMap<i64, (Vec<String>, String, Vec<String>, String)> = BTreeMap::new();
        for fk in fks {
            let e = by_id.entry(fk.get("id")).or_default();
            e.0.push(fk.get("from"));
            e.1 = fk.get("table");
            e.2.push(fk.get("to"));
            e.3 = on_delete(&fk.get::<String, _>("on_delete"));
        }
        for (_, (from, target, to, del)) in by_id {
            shape.insert(
                format!("{table}.foreign key {}", cols(&from)),
                format!("{target}{} on delete {del}", cols(&to)),
            );
        }
    }
    c.close().await.ok();
    shape
}

fn describe_index(columns: &[String], unique: bool, pred: Option<String>) -> String {
    format!(
        "{}{}{}",
        if unique { "unique " } else { "" },
        cols(columns),
        pred.map(|p| format!(" where {p}")).unwrap_or_default()
    )
}

/// Columns declared `COLLATE NOCASE` in a CREATE TABLE statement.
fn nocase_columns(create: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (create.find('('), create.rfind(')')) else {
        return Vec::new();
    };
    let body = &create[open + 1..close];
    // Split at the commas between definitions, not those inside (…).
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, ch) in body.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    parts
        .into_iter()
        .filter(|p| p.to_uppercase().contains("COLLATE NOCASE"))
        .filter_map(|p| {
            p.split_whitespace()
                .next()
                .map(|w| w.trim_matches('"').to_owned())
        })
        .collect()
}

async fn postgres_shape(db: &TestDb) -> Shape {
    let mut c = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    let mut shape = Shape::new();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    for table in tables {
        if IGNORED_TABLES.contains(&table.as_str()) {
            continue;
        }
        shape.insert(table.clone(), "table".into());
        let columns = sqlx::query(
            "SELECT CAST(column_name AS TEXT) AS name, CAST(data_type AS TEXT) AS ty,
                    CAST(is_nullable AS TEXT) AS nullable, CAST(column_default AS TEXT) AS dflt,
                    CAST(collation_name AS TEXT) AS coll
               FROM information_schema.columns
              WHERE table_schema = 'public' AND table_name = $1",
        )
        .bind(&table)
        .fetch_all(&mut c)
        .await
        .unwrap();
        for col in columns {
            let name: String = col.get("name");
            let ty = match col.get::<String, _>("ty").as_str() {
                "bigint" => "integer".to_owned(),
                "text" => "text".to_owned(),
                "bytea" => "blob".to_owned(),
                "boolean" => "boolean".to_owned(),
                // An INTEGER or NUMERIC column would not decode as i64.
                other => format!("other:{other}"),
            };
            let not_null = col.get::<String, _>("nullable") == "NO";
            let default = col
                .get::<Option<String>, _>("dflt")
                .map(|d| default_value(&d));
            let nocase = col.get::<Option<String>, _>("coll").as_deref() == Some("nocase");
            shape.insert(
                format!("{table}.column {name}"),
                describe_column(&ty, not_null, default, nocase),
            );
        }

        let indexes = sqlx::query(
            "SELECT CAST(i.relname AS TEXT) AS name, x.indisunique AS uniq, x.indisprimary AS pk,
                    CAST(pg_get_expr(x.indpred, x.indrelid) AS TEXT) AS pred,
                    EXISTS (SELECT 1 FROM pg_constraint k
                             WHERE k.conindid = x.indexrelid AND k.contype = 'u') AS constraint_backed,
                    ARRAY(SELECT CAST(pg_get_indexdef(x.indexrelid, n, TRUE) AS TEXT)
                            FROM generate_series(1, CAST(x.indnatts AS INTEGER)) n ORDER BY n) AS cols
               FROM pg_index x
               JOIN pg_class i ON i.oid = x.indexrelid
               JOIN pg_class t ON t.oid = x.indrelid
               JOIN pg_namespace s ON s.oid = t.relnamespace
              WHERE s.nspname = 'public' AND t.relname = $1",
        )
        .bind(&table)
        .fetch_all(&mut c)
        .await
        .unwrap();
        let mut pk_cols = Vec::new();
        for ix in indexes {
            let name: String = ix.get("name");
            let columns: Vec<String> = ix.get("cols");
            if ix.get::<bool, _>("pk") {
                pk_cols = columns;
            } else if ix.get::<bool, _>("constraint_backed") {
                shape.insert(
                    format!("{table}.unique {}", cols(&columns)),
                    "unique".into(),
                );
            } else {
                let pred = ix.get::<Option<String>, _>("pred").map(|p| predicate(&p));
                shape.insert(
                    format!("{table}.index {name}"),
                    describe_index(&columns, ix.get("uniq"), pred),
                );
            }
        }
        shape.insert(format!("{table}.primary key"), cols(&pk_cols));

        let fks = sqlx::query(
            "SELECT ARRAY(SELECT CAST(a.attname AS TEXT) FROM unnest(k.conkey) WITH ORDINALITY u(n, o)
                            JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n
                           ORDER BY u.o) AS from_cols,
                    CAST(f.relname AS TEXT) AS target,
                    ARRAY(SELECT CAST(a.attname AS TEXT) FROM unnest(k.confkey) WITH ORDINALITY u(n, o)
                            JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n
                           ORDER BY u.o) AS to_cols,
                    CAST(k.confdeltype AS TEXT) AS del
               FROM pg_constraint k
               JOIN pg_class t ON t.oid = k.conrelid
               JOIN pg_class f ON f.oid = k.confrelid
               JOIN pg_namespace s ON s.oid = t.relnamespace
              WHERE k.contype = 'f' AND s.nspname = 'public' AND t.relname = $1",
        )
        .bind(&table)
        .fetch_all(&mut c)
        .await
        .unwrap();
        for fk in fks {
            let del = match fk.get::<String, _>("del").as_str() {
                "a" => "no_action",
                "r" => "restrict",
                "c" => "cascade",
                "n" => "set_null",
                "d" => "set_default",
                other => panic!("unknown confdeltype {other}"),
            };
            let from: Vec<String> = fk.get("from_cols");
            let to: Vec<String> = fk.get("to_cols");
            shape.insert(
                format!("{table}.foreign key {}", cols(&from)),
                format!(
                    "{}{} on delete {del}",
                    fk.get::<String, _>("target"),
                    cols(&to)
                ),
            );
        }
    }
    c.close().await.ok();
    shape
}

#[test]
fn nocase_columns_are_found_in_a_create_table() {
    let sql = "CREATE TABLE t (id TEXT PRIMARY KEY, owner TEXT NOT NULL DEFAULT '' COLLATE NOCASE,
        n INTEGER CHECK (n IN (1, 2)), name TEXT COLLATE nocase, UNIQUE (owner, name))";
    assert_eq!(nocase_columns(sql), vec!["owner", "name"]);
}
