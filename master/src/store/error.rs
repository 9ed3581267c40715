//! The store's typed errors: what a caller may do about a failed operation.

use std::fmt;

/// Why a store operation failed, as far as the caller's next step is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The transaction was certainly rolled back and may be retried as it was (a lock wait
    /// that timed out, a serialization failure, a deadlock victim).
    Aborted,
    /// The database could not be reached or the connection broke; a commit in flight may or
    /// may not have landed, so the caller must re-read before retrying.
    Unreachable,
    /// A uniqueness or reference rule refused the change (for example a duplicate id).
    Conflict,
    /// Anything else: bad SQL, a row that does not decode, a full disk, a schema mismatch.
    Other,
}

impl StoreErrorKind {
    /// Whether trying again later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, StoreErrorKind::Aborted | StoreErrorKind::Unreachable)
    }
}

/// A failed store operation: its kind and the backend's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    /// What the caller may do about it.
    pub kind: StoreErrorKind,
    /// The backend's message.
    pub message: String,
}

impl StoreError {
    /// An error of `kind`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    /// An error of kind [`StoreErrorKind::Other`].
    pub fn other(message: impl Into<String>) -> StoreError {
        StoreError::new(StoreErrorKind::Other, message)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

/// The error of a failed migration run, with the case a user meets on upgrades and downgrades
/// spelled out: a pool whose schema has a migration this build does not know was written by a
/// newer release, and this master must not touch it.
pub(crate) fn migration_error(
    backend: &str,
    known: &[(i64, &str, &str)],
    e: sqlx::migrate::MigrateError,
) -> crate::error::MasterError {
    use crate::error::MasterError;
    let newest = known.iter().map(|m| m.0).max().unwrap_or(0);
    match e {
        sqlx::migrate::MigrateError::VersionMissing(version) => {
            MasterError::FailedPrecondition(format!(
                "the {backend} pool's schema has migration {version}, which this master does not \
                 know (it knows versions 1 to {newest}): the pool was written by a newer release \
                 of explore; run that release (or newer) instead of this one"
            ))
        }
        other => MasterError::Store(StoreError::other(format!(
            "migrating the {backend} pool: {other}"
        ))),
    }
}

/// Classifies a sqlx error by the SQLSTATE or SQLite result code behind it; `retry_codes` are
/// the backend's codes meaning "rolled back, try again".
pub(crate) fn classify(e: &sqlx::Error, retry_codes: &[&str]) -> StoreErrorKind {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreErrorKind::Unreachable,
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() || db.is_foreign_key_violation() {
                StoreErrorKind::Conflict
            } else if db.code().is_some_and(|c| retry_codes.contains(&c.as_ref())) {
                StoreErrorKind::Aborted
            } else {
                StoreErrorKind::Other
            }
        }
        _ => StoreErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aborted_and_unreachable_are_retryable() {
        assert!(StoreErrorKind::Aborted.is_retryable());
        assert!(StoreErrorKind::Unreachable.is_retryable());
        assert!(!StoreErrorKind::Conflict.is_retryable());
        assert!(!StoreErrorKind::Other.is_retryable());
    }

    #[test]
    fn a_lost_connection_is_unreachable() {
        let e = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(classify(&e, &[]), StoreErrorKind::Unreachable);
        assert_eq!(
            classify(&sqlx::Error::PoolTimedOut, &[]),
            StoreErrorKind::Unreachable
        );
        assert_eq!(
            classify(&sqlx::Error::Protocol("x".into()), &[]),
            StoreErrorKind::Other
        );
    }
}
