//! Store rows and scheduler views into their wire form.

use std::collections::BTreeMap;

use explore_common::convert::data_spec_to_proto;
use explore_common::proto;

use crate::error::MasterError;
use crate::scheduler::ExperimentView;
use crate::store::{TrialKind, TrialRow};

/// A trial row as a `TrialRecord`; `data` and `seed` come from the experiment, `epoch_metrics`
/// are the named metrics of the trial's last recorded epoch.
pub fn trial_record(
    t: &TrialRow,
    spec: &explore_common::spec::ExperimentSpec,
    epoch_metrics: Option<&BTreeMap<String, f64>>,
) -> proto::TrialRecord {
    proto::TrialRecord {
        trial_id: t.id.to_string(),
        experiment_id: t.experiment_id.to_string(),
        seq: t.seq.unsigned_abs() as u32,
        parent_trial_id: id_or_empty(t.parent_id.as_ref()),
        status: t.status.to_string(),
        attempt: t.attempt as u32,
        genome_json: t.genome_json.clone(),
        hparams_json: t.hparams_json.clone(),
        score: t.score.unwrap_or(f64::NAN),
        metrics: t.metrics().into_iter().collect(),
        checkpoint_sha256: t.checkpoint_sha256.clone().unwrap_or_default(),
        params: t.params as u64,
        flops: t.flops as u64,
        accepted: t.accepted.unwrap_or(false),
        temperature: t.temperature.unwrap_or(f64::NAN),
        worker_id: id_or_empty(t.worker_id.as_ref()),
        error: t.error.clone(),
        created_at_ms: t.created_at_ms,
        finished_at_ms: t.finished_at_ms.unwrap_or(0),
        data: Some(data_spec_to_proto(&spec.data, spec.seed)),
        seed: t.seed as u64,
        origin: t.origin.clone(),
        chain: t.chain as u32,
        inherit_from: t.inherit_from.clone().unwrap_or_default(),
        epochs_run: t.epoch as u32,
        epoch_metrics: epoch_metrics
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default(),
        kind: trial_kind(t) as i32,
        predicted_score: t.predicted_score.unwrap_or(f64::NAN),
        predicted_std: t.predicted_std.unwrap_or(f64::NAN),
        phase: t.phase.clone(),
    }
}

/// The wire kind of a stored trial (an unreadable kind trains, as every older trial did).
fn trial_kind(t: &TrialRow) -> proto::TrialKind {
    match t.kind() {
        Ok(TrialKind::Probe) => proto::TrialKind::Probe,
        _ => proto::TrialKind::Train,
    }
}

/// A trial row as the `Trial` a worker trains.
pub fn trial_assignment(t: &TrialRow, spec: &explore_common::spec::ExperimentSpec) -> proto::Trial {
    proto::Trial {
        trial_id: t.id.to_string(),
        experiment_id: t.experiment_id.to_string(),
        attempt: t.attempt as u32,
        genome_json: t.genome_json.clone(),
        hparams_json: t.hparams_json.clone(),
        data: Some(data_spec_to_proto(&spec.data, spec.seed)),
        seed: t.seed as u64,
        parent_trial_id: id_or_empty(t.parent_id.as_ref()),
        inherit_checkpoint_sha256: t.inherit_from.clone().unwrap_or_default(),
        kind: trial_kind(t) as i32,
        train_examples: train_examples(t, spec),
    }
}

/// How many examples of the training split the trial trains on (0: all): `[final]
/// search_subset` for a search trial, all of it for a final trial.
fn train_examples(t: &TrialRow, spec: &explore_common::spec::ExperimentSpec) -> u32 {
    match &spec.final_training {
        Some(fin) if !t.is_final() => fin.search_subset,
        _ => 0,
    }
}

/// An experiment view as an `ExperimentSummary`.
pub fn experiment_summary(v: &ExperimentView) -> proto::ExperimentSummary {
    proto::ExperimentSummary {
        experiment_id: v.row.id.to_string(),
        name: v.row.name.clone(),
        status: v.row.lifecycle().as_str().to_string(),
        trials_completed: v.counts.completed,
        trials_failed: v.counts.failed,
        trials_running: v.counts.in_flight(),
        trials_queued: v.counts.queued,
        max_trials: v.spec.budget.max_trials,
        best_score: v.best.as_ref().and_then(|b| b.score).unwrap_or(f64::NAN),
        best_trial_id: id_or_empty(v.row.best_trial_id.as_ref()),
        temperature: v.temperature,
        created_at_ms: v.row.created_at_ms,
        finished_at_ms: v.row.finished_at_ms.unwrap_or(0),
        status_reason: v.row.status_reason.clone(),
        max_wall_seconds: v.spec.budget.max_wall_seconds.unwrap_or(0),
        trials_pruned: v.counts.pruned,
        epochs_spent: v.epochs.spent,
        max_epochs: v.spec.budget.max_epochs.map_or(0, u64::from),
    }
}

/// An optional id as its wire text: empty when absent.
pub fn id_or_empty(id: Option<&impl ToString>) -> String {
    id.map(ToString::to_string).unwrap_or_default()
}

/// Ids as their wire text.
pub fn ids_text(ids: Vec<impl Into<String>>) -> Vec<String> {
    ids.into_iter().map(Into::into).collect()
}

/// Parses an id field, naming it when it is malformed.
pub fn parse_id<T: std::str::FromStr<Err = explore_common::CommonError>>(
    field: &str,
    value: &str,
) -> Result<T, MasterError> {
    value
        .parse()
        .map_err(|e| MasterError::InvalidArgument(format!("{field}: {e}")))
}
