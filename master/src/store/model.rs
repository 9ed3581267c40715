//! Rows of the pool's tables and the small enums stored in them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use explore_common::ids::{ExperimentId, TrialId, WorkerId};

use crate::error::MasterError;

/// Lifecycle of a trial: `queued → leased → running → completed | pruned | failed`, or
/// `cancelled` when the experiment ends before it was trained. `pruned` is a trial early stopping
/// ended because it was clearly worse than its peers at the same epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrialStatus {
    Queued,
    Leased,
    Running,
    Completed,
    Pruned,
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
            TrialStatus::Pruned => "pruned",
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
            "pruned" => TrialStatus::Pruned,
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

/// What a trial does with its worker's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrialKind {
    /// Trains (or fine-tunes) a model: a member of the pool.
    #[default]
    Train,
    /// Measures a source model's transferability to a transfer experiment's new task (S2):
    /// seconds of forward passes, never a model of the pool, outside every budget.
    Probe,
}

impl TrialKind {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialKind::Train => "train",
            TrialKind::Probe => "probe",
        }
    }
}

impl fmt::Display for TrialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TrialKind {
    type Err = MasterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "train" => Ok(TrialKind::Train),
            "probe" => Ok(TrialKind::Probe),
            other => Err(MasterError::Internal(format!(
                "unknown trial kind {other:?}"
            ))),
        }
    }
}

/// Lifecycle of an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExperimentStatus {
    Running,
    /// Stopped by `master stop`: nothing new is proposed or leased until `master resume`.
    /// Stored as `running` with `stopped_at_ms` set (see migration 0006).
    Stopped,
    Completed,
    Failed,
}

impl ExperimentStatus {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentStatus::Running => "running",
            ExperimentStatus::Stopped => "stopped",
            ExperimentStatus::Completed => "completed",
            ExperimentStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for ExperimentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExperimentStatus {
    type Err = MasterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(ExperimentStatus::Running),
            "stopped" => Ok(ExperimentStatus::Stopped),
            "completed" => Ok(ExperimentStatus::Completed),
            "failed" => Ok(ExperimentStatus::Failed),
            other => Err(MasterError::Internal(format!(
                "unknown experiment status {other:?}"
            ))),
        }
    }
}

crate::sqlite_row! {
    /// One row of `experiments`.
    #[derive(Debug, Clone)]
    pub struct ExperimentRow {
        pub id: ExperimentId,
        pub name: String,
        pub spec_json: String,
        /// The stored status: `Running` (stopped or not: see [`ExperimentRow::lifecycle`]),
        /// `Completed` or `Failed`.
        pub status: ExperimentStatus,
        pub status_reason: String,
        pub created_at_ms: i64,
        pub finished_at_ms: Option<i64>,
        pub best_trial_id: Option<TrialId>,
        /// When `master stop` stopped it; `None` unless stopped (see [`ExperimentStatus::Stopped`]).
        pub stopped_at_ms: Option<i64>,
        /// Milliseconds spent stopped before the current run (not counted as wall time).
        pub paused_ms: i64,
        /// Why the search ended, once it has and the final phase (`[final]`) has begun; `None`
        /// while the experiment searches (see migration 0007).
        pub search_ended: Option<String>,
    }
}

impl ExperimentRow {
    /// The experiment's lifecycle state, `Stopped` included.
    pub fn lifecycle(&self) -> ExperimentStatus {
        match self.status {
            ExperimentStatus::Running if self.stopped_at_ms.is_some() => ExperimentStatus::Stopped,
            status => status,
        }
    }

    /// Whether the experiment proposes and leases new trials.
    pub fn is_running(&self) -> bool {
        self.lifecycle() == ExperimentStatus::Running
    }

    /// Whether the search is over and the final phase has begun (`[final]`).
    pub fn in_final_phase(&self) -> bool {
        self.search_ended.is_some()
    }

    /// Wall time the experiment has run at `now_ms`: since its creation, less the time it
    /// spent stopped.
    pub fn running_ms(&self, now_ms: i64) -> i64 {
        let stopped_now = self.stopped_at_ms.map_or(0, |at| (now_ms - at).max(0));
        (now_ms - self.created_at_ms - self.paused_ms - stopped_now).max(0)
    }
}

crate::sqlite_row! {
    /// One row of `trials`.
    #[derive(Debug, Clone)]
    pub struct TrialRow {
        pub id: TrialId,
        pub experiment_id: ExperimentId,
        pub seq: i64,
        pub parent_id: Option<TrialId>,
        pub origin: String,
        pub genome_json: String,
        pub genome_hash: String,
        pub hparams_json: String,
        pub params: i64,
        pub flops: i64,
        pub seed: i64,
        pub status: TrialStatus,
        pub attempt: i64,
        pub worker_id: Option<WorkerId>,
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
        /// The annealing chain that proposed the trial.
        pub chain: i64,
        /// Checkpoint of the parent whose weights the trial starts from.
        pub inherit_from: Option<String>,
        /// `train` or `probe` (see [`TrialKind`]).
        pub kind: String,
        /// The seed a seed trial trains (transfer experiments); `None` for mutations and probes.
        pub seed_index: Option<i64>,
        /// The learned predictor's fine-tuned validation accuracy, for a seed it ranked.
        pub predicted_score: Option<f64>,
        /// The standard deviation of that prediction.
        pub predicted_std: Option<f64>,
        /// `search` or `final`: a final trial trains a best architecture of the search again
        /// (see [`FINAL_PHASE`]).
        pub phase: String,
    }
}

impl TrialRow {
    /// The parsed kind column.
    pub fn kind(&self) -> Result<TrialKind, MasterError> {
        self.kind.parse()
    }

    /// The parsed metrics column.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        serde_json::from_str(&self.metrics_json).unwrap_or_default()
    }

    /// Whether the trial belongs to the final phase (see [`FINAL_PHASE`]).
    pub fn is_final(&self) -> bool {
        self.phase == FINAL_PHASE
    }
}

/// The `trials.phase` of a final trial: it trains one of the search's best architectures again
/// with the `[final]` schedule; every other trial is in phase `search`.
pub const FINAL_PHASE: &str = "final";

crate::sqlite_row! {
    /// One row of `trial_epochs`: what a heartbeat reported after an epoch.
    #[derive(Debug, Clone, PartialEq)]
    pub struct EpochRow {
        pub trial_id: TrialId,
        pub epoch: i64,
        pub val_accuracy: f64,
        pub train_loss: Option<f64>,
        /// The objective's named metrics as a JSON object; `None` when the epoch had none.
        pub metrics_json: Option<String>,
    }
}

impl EpochRow {
    /// The parsed metrics column (empty when there were none).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        parse_epoch_metrics(self.metrics_json.as_deref())
    }
}

/// Parses a `trial_epochs.metrics_json` value; NULL (or unreadable) is no metrics.
pub(crate) fn parse_epoch_metrics(json: Option<&str>) -> BTreeMap<String, f64> {
    json.and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

/// `(trial id, metrics JSON)` rows of a query into metrics by trial; trials without metrics are
/// left out, and a malformed id is a store error naming it.
pub(crate) fn epoch_metrics_by_trial(
    rows: Vec<(String, Option<String>)>,
) -> Result<std::collections::HashMap<TrialId, BTreeMap<String, f64>>, MasterError> {
    rows.into_iter()
        .map(|(id, json)| {
            Ok((
                super::row::parse_text("id", &id)?,
                parse_epoch_metrics(json.as_deref()),
            ))
        })
        .filter(|r| !matches!(r, Ok((_, m)) if m.is_empty()))
        .collect()
}

/// A new trial to insert.
#[derive(Debug, Clone)]
pub struct NewTrial {
    pub id: TrialId,
    pub experiment_id: ExperimentId,
    pub seq: i64,
    pub parent_id: Option<TrialId>,
    pub origin: String,
    pub genome_json: String,
    pub genome_hash: String,
    pub hparams_json: String,
    pub params: i64,
    pub flops: i64,
    pub seed: i64,
    pub temperature: f64,
    pub chain: i64,
    pub inherit_from: Option<String>,
    pub kind: TrialKind,
    /// The seed a seed trial trains, when seeds are queued out of index order.
    pub seed_index: Option<i64>,
    /// The predictor's `(mean, standard deviation)` for this trial, when it ranked it.
    pub prediction: Option<(f64, f64)>,
}

/// Trial counts of one experiment by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrialCounts {
    pub queued: u32,
    pub leased: u32,
    pub running: u32,
    pub completed: u32,
    pub pruned: u32,
    pub failed: u32,
    pub cancelled: u32,
}

impl TrialCounts {
    /// Trials that count against the trial budget: everything not failed or cancelled.
    pub fn budgeted(&self) -> u32 {
        self.queued + self.leased + self.running + self.finished()
    }

    /// Trials trained to a result: completed or pruned.
    pub fn finished(&self) -> u32 {
        self.completed + self.pruned
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

crate::sqlite_row! {
    /// One row of `chains`: an annealing chain's state.
    #[derive(Debug, Clone, PartialEq)]
    pub struct ChainRow {
        pub experiment_id: ExperimentId,
        pub chain: i64,
        pub temperature: f64,
        /// The chain's current model (its last accepted trial); `None` before its first, and after
        /// a reheat, when the next base is drawn from the whole pool.
        pub current_trial_id: Option<TrialId>,
        /// The best score of the chain's trials since its last reheat.
        pub best_score: Option<f64>,
        /// Results in a row that did not beat `best_score`.
        pub since_improvement: i64,
        /// Results (completed or pruned trials) of the chain.
        pub results: i64,
        /// Of those, accepted by the Metropolis rule.
        pub accepted: i64,
        pub reheats: i64,
    }
}

/// Training epochs of an experiment's trials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpochUsage {
    /// Epochs trained so far (ended trials and the progress of running ones).
    pub spent: u64,
    /// Epochs trained by ended trials plus the planned epochs of queued and held ones.
    pub committed: u64,
}

crate::sqlite_row! {
    /// One completed training trial as the search predictor learns from it.
    #[derive(Debug, Clone)]
    pub struct PredictorHistoryRow {
        pub genome_json: String,
        pub hparams_json: String,
        /// Its validation accuracy.
        pub score: f64,
        /// Whether it started from its parent's weights.
        pub inherits: bool,
        /// Its parent's validation accuracy, when the parent has one.
        pub parent_score: Option<f64>,
    }
}
