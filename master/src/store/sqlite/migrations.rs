//! The schema's migrations, embedded in the binary and applied at start-up by sqlx's
//! [`Migrator`], without sqlx's `migrate!` macro: the macro crate builds a second copy of the
//! SQLite driver for the compiler host, minutes of every fresh build on a small machine.
//!
//! A new migration is a file `migrations/sqlite/NNNN_name.sql` plus its line in [`MIGRATIONS`]; a test
//! checks that the two agree. The checksums are the same as `migrate!` computed (SHA-384 of the
//! file's text), so databases created by earlier builds keep validating.

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

/// Every migration: (version, description, SQL), in version order.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "search",
        include_str!("../../../migrations/sqlite/0002_search.sql"),
    ),
    (
        3,
        "epoch metrics",
        include_str!("../../../migrations/sqlite/0003_epoch_metrics.sql"),
    ),
    (
        4,
        "probes",
        include_str!("../../../migrations/sqlite/0004_probes.sql"),
    ),
    (
        5,
        "scale",
        include_str!("../../../migrations/sqlite/0005_scale.sql"),
    ),
    (
        6,
        "control",
        include_str!("../../../migrations/sqlite/0006_control.sql"),
    ),
    (
        7,
        "final",
        include_str!("../../../migrations/sqlite/0007_final.sql"),
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
    fn every_migration_file_is_embedded_in_order_with_its_text() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
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
        assert_eq!(
            files.iter().map(|f| f.0).collect::<Vec<_>>(),
            embedded.iter().map(|f| f.0).collect::<Vec<_>>(),
            "migrations/sqlite/ and MIGRATIONS list different versions"
        );
        assert_eq!(files, embedded);
    }
}
