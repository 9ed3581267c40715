//! The master's error type and its mapping to gRPC status codes.

use thiserror::Error;

/// Everything that can go wrong in the master.
#[derive(Debug, Error)]
pub enum MasterError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("store error: {0}")]
    Store(String),
    #[error("cannot access {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Common(#[from] explore_common::CommonError),
}

impl From<MasterError> for tonic::Status {
    fn from(e: MasterError) -> Self {
        let message = e.to_string();
        match e {
            MasterError::InvalidArgument(_) | MasterError::Common(_) => {
                tonic::Status::invalid_argument(message)
            }
            MasterError::NotFound(_) => tonic::Status::not_found(message),
            MasterError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            MasterError::TooLarge(_) => tonic::Status::resource_exhausted(message),
            MasterError::Store(_) | MasterError::Io { .. } | MasterError::Internal(_) => {
                tracing::error!(error = %message, "internal error answering a call");
                tonic::Status::internal(message)
            }
        }
    }
}
