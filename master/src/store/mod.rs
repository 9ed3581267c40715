//! The history model pool: one contract ([`PoolTx`], reached through a [`Store`]) and two
//! backends, each with its own SQL and migrations:
//!
//! - [`sqlite`]: the embedded default (one file in the data directory, WAL mode);
//! - [`postgres`]: `master serve --db postgres://…`, for a pool several masters share.
//!
//! Every operation runs on a [`PoolTx`]: a write transaction from [`Store::begin`] or a read
//! handle from [`Store::conn`]. Callers compose several operations into one transaction, so a
//! state change is either fully recorded or not at all. The operations are declared once, in
//! `store_operations!` (`contract.rs`): the trait and both backends' delegations are
//! generated from that one list, so a backend missing an operation, or one with another
//! signature, does not compile.

#[macro_use]
mod contract;
mod error;
mod migrate;
mod model;
pub mod postgres;
pub mod reads;
mod row;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

pub use error::{StoreError, StoreErrorKind};
pub use model::{
    ChainRow, EpochRow, EpochUsage, ExperimentRow, ExperimentStatus, NewTrial, PredictorHistoryRow,
    TrialCounts, TrialKind, TrialResult, TrialRow, TrialStatus, FINAL_PHASE,
};
use reads::{
    BestPoint, StatusTally, TemperaturePoint, TrialFilter, TrialPage, TrialSort, WorkerRow,
};
pub(crate) use row::parse_text;
pub use row::{parse_column, Column};

use explore_common::ids::{ExperimentId, TrialId, WorkerId};

use crate::error::MasterError;
use crate::leader::Election;

/// How many of an experiment's best accepted trials a chain without a current model draws its
/// base from (`base_candidates`): the whole accepted pool while it is that small, a bounded
/// read however large the pool grows.
pub const BASE_CANDIDATES: i64 = 256;

/// Name of the SQLite database file inside the data directory.
pub const DB_FILE: &str = sqlite::DB_FILE;

macro_rules! declare_pool_tx {
    ({} $( $(#[$doc:meta])* fn $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty ; )*) => {
        /// One transaction (or read handle) on the pool: every operation of the store contract.
        /// A write transaction that is dropped without [`PoolTx::commit`] rolls back.
        #[async_trait::async_trait]
        pub trait PoolTx: Send {
            $(
                $(#[$doc])*
                async fn $name(&mut self, $($arg: $ty),*) -> Result<$ret, MasterError>;
            )*

            /// Commits a write transaction (a no-op on a read handle).
            async fn commit(self: Box<Self>) -> Result<(), MasterError>;

            /// The concrete transaction, for backend-specific tools and tests (raw SQL).
            fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
        }
    };
}

store_operations!(declare_pool_tx! {});

/// What a backend provides to a [`Store`]: transactions and read handles on its database.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Starts a write transaction.
    async fn begin(&self) -> Result<Box<dyn PoolTx>, MasterError>;
    /// A handle for reads (no transaction: each operation sees the latest commits).
    async fn read(&self) -> Result<Box<dyn PoolTx>, MasterError>;
    /// Closes the backend's connections.
    async fn close(&self);
    /// The backend's name for logs and errors (`sqlite`, `postgres`).
    fn name(&self) -> &'static str;
    /// Enters the election of the active master under `name` (see [`crate::leader`]). From
    /// then on the backend's write transactions are fenced: refused until this master wins,
    /// and refused again once another master has taken over.
    async fn election(&self, name: &str) -> Result<Box<dyn Election>, MasterError>;
}

/// A handle on the pool database, whichever backend holds it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    /// Opens (creating if needed) the SQLite database in `data_dir` and applies migrations.
    pub async fn open(data_dir: &Path) -> Result<Store, MasterError> {
        Ok(Store::from_backend(
            sqlite::SqliteBackend::open(data_dir).await?,
        ))
    }

    /// Opens the pool the `--db` option names: `sqlite` (the default: a file in `data_dir`) or
    /// a `postgres://` / `postgresql://` URL. Migrations are applied either way.
    pub async fn connect(db: &str, data_dir: &Path) -> Result<Store, MasterError> {
        if Store::is_sqlite(db) {
            Store::open(data_dir).await
        } else if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            Ok(Store::from_backend(postgres::PgBackend::connect(db).await?))
        } else {
            Err(MasterError::InvalidArgument(format!(
                "--db must be `sqlite` or a postgres:// URL, got {:?}",
                redact_url(db)
            )))
        }
    }

    /// Whether the `--db` value names the embedded SQLite pool.
    pub fn is_sqlite(db: &str) -> bool {
        db.is_empty() || db == "sqlite"
    }

    /// A private in-memory SQLite database (tests).
    pub async fn in_memory() -> Result<Store, MasterError> {
        Ok(Store::from_backend(
            sqlite::SqliteBackend::in_memory().await?,
        ))
    }

    /// Wraps a backend.
    pub fn from_backend(backend: impl Backend + 'static) -> Store {
        Store {
            backend: Arc::new(backend),
        }
    }

    /// Starts a write transaction; dropping it without `commit` rolls it back.
    pub async fn begin(&self) -> Result<Box<dyn PoolTx>, MasterError> {
        self.backend.begin().await
    }

    /// A handle for reads.
    pub async fn conn(&self) -> Result<Box<dyn PoolTx>, MasterError> {
        self.backend.read().await
    }

    /// Closes the pool (SQLite: flushes the WAL).
    pub async fn close(&self) {
        self.backend.close().await;
    }

    /// The backend's name (`sqlite`, `postgres`).
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Enters the election of the active master (see [`Backend::election`]).
    pub async fn election(&self, name: &str) -> Result<Box<dyn Election>, MasterError> {
        self.backend.election(name).await
    }
}

/// A database URL with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_password_never_reaches_a_message() {
        assert_eq!(
            redact_url("postgres://explore:s3cret@db:5432/pool"),
            "postgres://explore:***@db:5432/pool"
        );
        assert_eq!(
            redact_url("postgres://explore@db/pool"),
            "postgres://explore@db/pool"
        );
        assert_eq!(redact_url("sqlite"), "sqlite");
    }

    #[tokio::test]
    async fn an_unknown_db_scheme_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::connect("mysql://u:pw@h/db", dir.path())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--db must be"), "{text}");
        assert!(!text.contains("pw"), "{text}");
    }
}
