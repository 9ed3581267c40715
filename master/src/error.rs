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
    Store(crate::store::StoreError),
    #[error("cannot access {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Common(#[from] explore_common::CommonError),
}

/// The kind of an error, which decides its gRPC and its HTTP status: the one mapping both
/// edges use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    TooLarge,
    Unauthenticated,
    Unavailable,
    Internal,
}

impl ErrorKind {
    /// The gRPC status code.
    pub fn grpc(self) -> tonic::Code {
        match self {
            ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorKind::TooLarge => tonic::Code::ResourceExhausted,
            ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status code.
    pub fn http(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::FailedPrecondition => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// The name the JSON API gives it (`{"error": {"code": ...}}`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl MasterError {
    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MasterError::InvalidArgument(_) | MasterError::Common(_) => ErrorKind::InvalidArgument,
            MasterError::NotFound(_) => ErrorKind::NotFound,
            MasterError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            MasterError::TooLarge(_) => ErrorKind::TooLarge,
            MasterError::Unavailable(_) => ErrorKind::Unavailable,
            MasterError::Store(_) | MasterError::Io { .. } | MasterError::Internal(_) => {
                ErrorKind::Internal
            }
        }
    }
}

impl From<MasterError> for tonic::Status {
    fn from(e: MasterError) -> Self {
        let message = e.to_string();
        let kind = e.kind();
        if kind == ErrorKind::Internal {
            tracing::error!(error = %message, "internal error answering a call");
        }
        tonic::Status::new(kind.grpc(), message)
    }
}
