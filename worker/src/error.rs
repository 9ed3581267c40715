//! The error type of the worker crate.

use std::path::PathBuf;

use explore_common::GenomeError;
use thiserror::Error;

/// Everything that can go wrong while loading data, building a model or training it.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// A data file does not exist; `hint` says how to get it.
    #[error("data file {} is missing: {hint}", path.display())]
    MissingData { path: PathBuf, hint: String },
    /// A data file exists but is not what it should be.
    #[error("bad data file {}: {reason}", path.display())]
    BadData { path: PathBuf, reason: String },
    /// Reading or writing a file failed.
    #[error("cannot access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The genome is invalid or does not fit the data.
    #[error("{0}")]
    Genome(String),
    /// The hyperparameters are out of range.
    #[error("{0}")]
    HyperParams(String),
    /// The split configuration cannot be applied to the dataset.
    #[error("invalid data split: {0}")]
    Split(String),
    /// The data source is configured inconsistently.
    #[error("invalid data source: {0}")]
    Source(String),
    /// The requested device does not exist.
    #[error("invalid device: {0}")]
    Device(String),
    /// libtorch reported an error.
    #[error("torch error: {0}")]
    Torch(String),
    /// The training loss became NaN or infinite.
    #[error("training diverged: loss is {loss} at epoch {epoch}")]
    Diverged { epoch: u32, loss: f64 },
    /// The master refused a call or stayed unreachable.
    #[error("{0}")]
    Master(String),
    /// A transferability score (LogME, LEEP, NCE) cannot be computed from its inputs.
    #[error("cannot score transferability: {0}")]
    Transferability(String),
    /// A checkpoint cannot be read or does not fit the genome.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },
}

impl From<tch::TchError> for WorkerError {
    fn from(e: tch::TchError) -> Self {
        WorkerError::Torch(e.to_string())
    }
}

impl From<GenomeError> for WorkerError {
    fn from(e: GenomeError) -> Self {
        WorkerError::Genome(e.to_string())
    }
}

impl WorkerError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WorkerError::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed data file.
    pub fn bad_data(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        WorkerError::BadData {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Whether the error lies in this worker's machine (a data file missing or damaged, a
    /// local file that cannot be read or written, a device that does not exist) rather than in
    /// the trial: another worker would train the same trial, and this one would fail every
    /// trial alike, so it hands the trial back instead of failing it.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            WorkerError::MissingData { .. }
                | WorkerError::BadData { .. }
                | WorkerError::Io { .. }
                | WorkerError::Device(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_name_the_file() {
        let e = WorkerError::MissingData {
            path: "/x/train.gz".into(),
            hint: "install it with `apt-get install dataset-fashion-mnist`".into(),
        };
        assert_eq!(
            e.to_string(),
            "data file /x/train.gz is missing: install it with `apt-get install dataset-fashion-mnist`"
        );
        let e = WorkerError::Diverged {
            epoch: 2,
            loss: f64::NAN,
        };
        assert_eq!(e.to_string(), "training diverged: loss is NaN at epoch 2");
    }
}
