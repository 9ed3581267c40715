//! Rows of the pool's tables and the small enums stored in them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::MasterError;

/// Lifecycle of a trial: `queued → leased → running → completed | failed`, or `cancelled` when
/// the experiment ends before it was trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrialStatus {
    Queued,
    Leased,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl TrialStatus {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Queued => "queued",
            TrialStatus::Leased => "leased",
            TrialStatus::Running => "running",
            TrialStatus::Completed => "completed",
            TrialStatus::Failed => "failed",
            TrialStatus::Cancelled => "cancelled",
        }
    }

    /// Whether a worker currently holds the trial.
    pub fn is_held(self) -> bool {
        matches!(self, TrialStatus::Leased | TrialStatus::Running)
    }
}

impl fmt::Display for TrialStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TrialStatus {
    type Err = MasterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => TrialStatus::Queued,
            "leased" => TrialStatus::Leased,
            "running" => TrialStatus::Running,
            "completed" => TrialStatus::Completed,
            "failed" => TrialStatus::Failed,
            "cancelled" => TrialStatus::Cancelled,
            other => {
                return Err(MasterError::Internal(format!(
                    "unknown trial status {other:?}"
                )))
            }
        })
    }
}

/// Lifecycle of an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExperimentStatus {
    Running,
    Completed,
    Failed,
}

impl ExperimentStatus {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentStatus::Running => "running",
            ExperimentStatus::Completed => "completed",
            ExperimentStatus::Failed => "failed",
        }
    }
}

/// One row of `experiments`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExperimentRow {
    pub id: String,
    pub name: String,
    pub spec_json: String,
    pub status: String,
    pub status_reason: String,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub best_trial_id: Option<String>,
}

/// One row of `trials`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TrialRow {
    pub id: String,
    pub experiment_id: String,
    pub seq: i64,
    pub parent_id: Option<String>,
    pub origin: String,
    pub genome_json: String,
    pub genome_hash: String,
    pub hparams_json: String,
    pub params: i64,
    pub flops: i64,
    pub seed: i64,
    pub status: String,
    pub attempt: i64,
    pub worker_id: Option<String>,
    pub lease_deadline_ms: Option<i64>,
    pub epoch: i64,
    pub score: Option<f64>,
    pub metrics_json: String,
    pub checkpoint_sha256: Option<String>,
    pub accepted: Option<bool>,
    pub temperature: Option<f64>,
    pub error: String,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

impl TrialRow {
    /// The parsed status column.
    pub fn status(&self) -> Result<TrialStatus, MasterError> {
        self.status.parse()
    }

    /// The parsed metrics column.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        serde_json::from_str(&self.metrics_json).unwrap_or_default()
    }
}

/// A new trial to insert.
#[derive(Debug, Clone)]
pub struct NewTrial {
    pub id: String,
    pub experiment_id: String,
    pub seq: i64,
    pub parent_id: Option<String>,
    pub origin: String,
    pub genome_json: String,
    pub genome_hash: String,
    pub hparams_json: String,
    pub params: i64,
    pub flops: i64,
    pub seed: i64,
    pub temperature: f64,
}

/// Trial counts of one experiment by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrialCounts {
    pub queued: u32,
    pub leased: u32,
    pub running: u32,
    pub completed: u32,
    pub failed: u32,
    pub cancelled: u32,
}

impl TrialCounts {
    /// Trials that count against the budget: everything not failed or cancelled.
    pub fn budgeted(&self) -> u32 {
        self.queued + self.leased + self.running + self.completed
    }

    /// Trials a worker holds.
    pub fn in_flight(&self) -> u32 {
        self.leased + self.running
    }
}

/// A result as reported by a worker.
#[derive(Debug, Clone)]
pub struct TrialResult {
    pub score: f64,
    pub metrics: BTreeMap<String, f64>,
    pub checkpoint_sha256: Option<String>,
    pub epochs_run: u32,
}
