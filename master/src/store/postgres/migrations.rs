//! This backend's migrations (`master/migrations/postgres/`), embedded in the binary and applied at
//! start-up (`store/migrate.rs`). A new migration is a file `NNNN_name.sql` there plus its line
//! in [`MIGRATIONS`]; a test checks that the two agree.

use sqlx::migrate::{MigrateError, Migrator};

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

/// The migrator for the embedded migrations.
pub async fn migrator() -> Result<Migrator, MigrateError> {
    crate::store::migrate::migrator(MIGRATIONS).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_postgres_migration_file_is_embedded_in_order_with_its_text() {
        crate::store::migrate::assert_files_are_embedded("migrations/postgres", MIGRATIONS);
    }
}
