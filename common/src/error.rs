//! Errors of the common crate.

use thiserror::Error;

/// A genome that cannot be parsed or whose shapes do not fit.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum GenomeError {
    #[error("invalid genome json: {0}")]
    Parse(String),
    #[error("invalid genome at {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// Everything else that can go wrong in the common crate.
#[derive(Debug, Error)]
pub enum CommonError {
    #[error("invalid {kind} {value:?}")]
    InvalidId { kind: &'static str, value: String },
    #[error(transparent)]
    Genome(#[from] GenomeError),
    #[error("invalid hyperparameter {field}: {reason}")]
    InvalidHyperParams { field: String, reason: String },
    #[error("invalid json: {0}")]
    Json(String),
    #[error("invalid experiment spec: {0}")]
    Spec(String),
    #[error("invalid experiment spec: `{key}` {reason}")]
    SpecKey { key: String, reason: String },
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("mutation rejected: {0}")]
    Mutation(String),
    /// A TLS certificate or key that cannot be used, or a TLS handshake that failed.
    #[error("{0}")]
    Tls(String),
}
