//! Embedded migrations, applied at start-up by sqlx's [`Migrator`] without sqlx's `migrate!`
//! macro (whose crate builds a second copy of the SQLite driver for the compiler host, minutes
//! of every fresh build on a small machine). Each backend lists its own files
//! (`sqlite/migrations.rs`, `postgres/migrations.rs`); the checksums are those `migrate!`
//! computes (SHA-384 of the file's text), so pools created by earlier builds keep validating.

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

/// A backend's migrations: (version, description, SQL), in version order.
pub type Migrations = &'static [(i64, &'static str, &'static str)];

/// A list of embedded migrations as a source sqlx can resolve.
#[derive(Debug)]
struct Embedded(Migrations);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
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

/// The migrator for `migrations`.
pub async fn migrator(migrations: Migrations) -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded(migrations)).await
}

/// Checks that the `.sql` files of `master/<dir>` are exactly `migrations`: same versions, in
/// order, with the same text.
#[cfg(test)]
pub fn assert_files_are_embedded(dir: &str, migrations: Migrations) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
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
    let embedded: Vec<(i64, String)> = migrations
        .iter()
        .map(|(version, _, sql)| (*version, sql.to_string()))
        .collect();
    assert_eq!(
        files.iter().map(|f| f.0).collect::<Vec<_>>(),
        embedded.iter().map(|f| f.0).collect::<Vec<_>>(),
        "{} and the embedded list name different versions",
        dir.display()
    );
    assert_eq!(files, embedded);
}
