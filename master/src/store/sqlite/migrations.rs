//! This backend's migrations (`master/migrations/sqlite/`), embedded in the binary and applied at
//! start-up (`store/migrate.rs`). A new migration is a file `NNNN_name.sql` there plus its line
//! in [`MIGRATIONS`]; a test checks that the two agree.

use sqlx::migrate::{MigrateError, Migrator};

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
    (
        8,
        "covering candidates",
        include_str!("../../../migrations/sqlite/0008_covering_candidates.sql"),
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
    fn every_migration_file_is_embedded_in_order_with_its_text() {
        crate::store::migrate::assert_files_are_embedded("migrations/sqlite", MIGRATIONS);
    }
}
