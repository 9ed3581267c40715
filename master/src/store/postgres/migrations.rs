//! The PostgreSQL schema's migrations (`master/migrations/postgres/`), embedded in the binary and
//! applied at start-up by sqlx's [`Migrator`], without sqlx's `migrate!` macro (as the SQLite
//! backend's `migrations.rs`). sqlx records them in `_sqlx_migrations` of the connection's
//! schema (the first of its `search_path`) and holds an advisory lock while it applies them, so
//! masters starting together on one database apply each migration once.
//!
//! A new migration is a file `migrations/postgres/NNNN_name.sql` plus its line in
//! [`MIGRATIONS`]; a test checks that the two agree. The checksums are SHA-384 of the file's
//! text, as `migrate!` computes them.

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

/// Every migration: (version, description, SQL), in version order.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "leadership",
        include_str!("../../../migrations/postgres/0002_leadership.sql"),
    ),
];

/// [`MIGRATIONS`] as a source sqlx can resolve.
#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The migrator for the embedded migrations.
pub async fn migrator() -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_postgres_migration_file_is_embedded_in_order_with_its_text() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
        let mut files: Vec<(i64, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "sql"))
            .map(|path| {
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                let version = name.split('_').next().unwrap().parse().unwrap();
                (version, std::fs::read_to_string(&path).unwrap())
            })
            .collect();
        files.sort();
        let embedded: Vec<(i64, String)> = MIGRATIONS
            .iter()
            .map(|(version, _, sql)| (*version, sql.to_string()))
            .collect();
        assert_eq!(files, embedded);
    }
}
