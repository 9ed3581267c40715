//! The pool database of a master the harness started, on whichever backend it uses: the data
//! directory's `explore.db` (SQLite), or the PostgreSQL database remembered in
//! `<data_dir>.pgdb` when `EXPLORE_E2E_DB=postgres` moved the master there. Tests that check
//! the books straight in the database (the fault suite, e2e_slots, e2e_failover) read it
//! through here, so that they run unchanged on both backends.
//!
//! The SQL a test passes must be portable: plain `SELECT`s with literals (no `?`/`$1`
//! parameters), no booleans compared to integers (`trials.accepted` is an INTEGER on SQLite
//! and a BOOLEAN on PostgreSQL: write `CASE WHEN accepted THEN ... END`), integers read as
//! `i64` only from BIGINT columns or `CAST(... AS BIGINT)` (PostgreSQL's `COUNT(*)` is one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::postgres::PgRow;
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{ConnectOptions, Connection, FromRow, PgConnection, Row, SqliteConnection};

/// Every table's rows as text, table by table, rows sorted (see [`PoolDb::dump`]).
pub type Dump = BTreeMap<String, Vec<String>>;

/// Where a master's pool lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolDb {
    /// The SQLite file `<data_dir>/explore.db`.
    Sqlite(PathBuf),
    /// A PostgreSQL database URL.
    Postgres(String),
}

enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl PoolDb {
    /// The pool of the master on `data_dir`: PostgreSQL when the harness gave it a database
    /// (`<data_dir>.pgdb` exists), else the SQLite file in the directory.
    pub fn of(data_dir: &Path) -> PoolDb {
        match std::fs::read_to_string(data_dir.with_extension("pgdb")) {
            Ok(url) if !url.trim().is_empty() => PoolDb::Postgres(url.trim().to_string()),
            _ => PoolDb::Sqlite(data_dir.join("explore.db")),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, PoolDb::Postgres(_))
    }

    /// "SQLite" or "PostgreSQL", for reports.
    pub fn backend(&self) -> &'static str {
        match self {
            PoolDb::Sqlite(_) => "SQLite",
            PoolDb::Postgres(_) => "PostgreSQL",
        }
    }

    async fn connect(&self, read_only: bool) -> Result<Conn> {
        Ok(match self {
            PoolDb::Sqlite(path) => Conn::Sqlite(
                SqliteConnectOptions::new()
                    .filename(path)
                    .read_only(read_only)
                    .busy_timeout(Duration::from_secs(10))
                    .connect()
                    .await
                    .with_context(|| format!("opening {}", path.display()))?,
            ),
            PoolDb::Postgres(url) => Conn::Postgres(
                PgConnection::connect(url)
                    .await
                    .with_context(|| format!("connecting to {url}"))?,
            ),
        })
    }

    /// The rows of one portable query (see the module's notes), on a fresh connection.
    pub async fn fetch_all<T>(&self, sql: &str) -> Result<Vec<T>>
    where
        T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        let rows = match self.connect(true).await? {
            Conn::Sqlite(mut c) => {
                let rows = sqlx::query_as::<_, T>(sql).fetch_all(&mut c).await;
                c.close().await.ok();
                rows
            }
            Conn::Postgres(mut c) => {
                let rows = sqlx::query_as::<_, T>(sql).fetch_all(&mut c).await;
                c.close().await.ok();
                rows
            }
        };
        rows.with_context(|| format!("{} query {sql}", self.backend()))
    }

    /// Runs one portable statement that changes rows; returns how many it changed.
    pub async fn execute(&self, sql: &str) -> Result<u64> {
        let done = match self.connect(false).await? {
            Conn::Sqlite(mut c) => {
                let r = sqlx::query(sql)
                    .execute(&mut c)
                    .await
                    .map(|r| r.rows_affected());
                c.close().await.ok();
                r
            }
            Conn::Postgres(mut c) => {
                let r = sqlx::query(sql)
                    .execute(&mut c)
                    .await
                    .map(|r| r.rows_affected());
                c.close().await.ok();
                r
            }
        };
        done.with_context(|| format!("{} statement {sql}", self.backend()))
    }

    /// `SELECT COUNT(*) FROM {from}` (`from` may carry a `WHERE`).
    pub async fn count(&self, from: &str) -> Result<i64> {
        let rows: Vec<(i64,)> = self
            .fetch_all(&format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {from}"))
            .await?;
        rows.first()
            .map(|r| r.0)
            .context("COUNT(*) returned no row")
    }

    /// [`PoolDb::count`] from synchronous code (on a runtime of its own).
    pub fn count_blocking(&self, from: &str) -> Result<i64> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(self.count(from))
    }

    /// The full contents of every table of the pool: each row as `col=value` pairs joined by
    /// ` | ` (a value as SQL would write it: text quoted, numbers bare, NULL), rows sorted.
    /// The columns `masked` names as `(table, column)` are left out. The text of a row is the
    /// same on both backends for text and integer columns; compare dumps of one backend only.
    pub async fn dump(&self, masked: &[(&str, &str)]) -> Result<Dump> {
        let is_masked = |t: &str, c: &str| masked.iter().any(|&(mt, mc)| mt == t && mc == c);
        let mut dump = Dump::new();
        match self.connect(true).await? {
            Conn::Sqlite(mut conn) => {
                let tables: Vec<(String,)> = sqlx::query_as(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
                )
                .fetch_all(&mut conn)
                .await?;
                for (table,) in tables {
                    let columns: Vec<(String,)> =
                        sqlx::query_as(&format!("SELECT name FROM pragma_table_info('{table}')"))
                            .fetch_all(&mut conn)
                            .await?;
                    let columns: Vec<String> = columns
                        .into_iter()
                        .map(|(c,)| c)
                        .filter(|c| !is_masked(&table, c))
                        .map(|c| format!("'{c}=' || quote(\"{c}\")"))
                        .collect();
                    let sql = format!("SELECT {} FROM \"{table}\"", columns.join(" || ' | ' || "));
                    let mut rows: Vec<String> = sqlx::query(&sql)
                        .fetch_all(&mut conn)
                        .await?
                        .iter()
                        .map(|r| r.get::<String, _>(0))
                        .collect();
                    rows.sort();
                    dump.insert(table, rows);
                }
                conn.close().await.ok();
            }
            Conn::Postgres(mut conn) => {
                let tables: Vec<(String,)> = sqlx::query_as(
                    "SELECT table_name::text FROM information_schema.tables
                      WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
                      ORDER BY table_name",
                )
                .fetch_all(&mut conn)
                .await?;
                for (table,) in tables {
                    let columns: Vec<(String, String)> = sqlx::query_as(&format!(
                        "SELECT column_name::text, data_type::text FROM information_schema.columns
                          WHERE table_schema = current_schema() AND table_name = '{table}'
                          ORDER BY ordinal_position"
                    ))
                    .fetch_all(&mut conn)
                    .await?;
                    let columns: Vec<String> = columns
                        .into_iter()
                        .filter(|(c, _)| !is_masked(&table, c))
                        .map(|(c, ty)| {
                            let value = match ty.as_str() {
                                "text" | "character varying" | "character" => {
                                    format!("quote_literal(\"{c}\")")
                                }
                                _ => format!("\"{c}\"::text"),
                            };
                            format!("'{c}=' || coalesce({value}, 'NULL')")
                        })
                        .collect();
                    let sql = format!("SELECT {} FROM \"{table}\"", columns.join(" || ' | ' || "));
                    let mut rows: Vec<String> = sqlx::query(&sql)
                        .fetch_all(&mut conn)
                        .await?
                        .iter()
                        .map(|r| r.get::<String, _>(0))
                        .collect();
                    rows.sort();
                    dump.insert(table, rows);
                }
                conn.close().await.ok();
            }
        }
        Ok(dump)
    }
}
