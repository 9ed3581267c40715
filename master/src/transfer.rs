//! Transfer experiments (`[transfer]`): the seeds of a new experiment derived from the trained
//! models of an earlier one.
//!
//! On submission [`derive_seeds`] finds the source experiment (by id, or the newest with that
//! name), takes its completed models with a stored checkpoint, best validation score first,
//! drops those that break this spec's constraints (`search.max_params`, `max_flops`,
//! `max_blocks`), keeps the first `transfer.models`, and writes one seed per (model, settings)
//! pair: the model's genome, the settings with this spec's objective, and the model's checkpoint
//! to inherit. The seeds are ordered model-major, so the best model's fine-tunes run first. A
//! replaying objective (`gradient_mixing`, `replay`, `agem`) without `[data.history]` replays
//! the source experiment's dataset and transform.
//!
//! The models are ranked by their source validation score alone: the learned predictor of S2
//! (probe scores, model and task features) does not exist yet.

use std::collections::BTreeMap;

use explore_common::genome::Genome;
use explore_common::spec::{
    DataConfig, ExperimentSpec, HistoryConfig, SeedModel, TransferSeed, NAMED_DATASETS,
};
use sqlx::SqliteConnection;

use crate::artifacts::ArtifactStore;
use crate::error::MasterError;
use crate::store::{self, ExperimentRow, TrialStatus};

/// `spec` with its seeds (and, where the objective replays, its history) derived from the
/// source experiment of `[transfer]`; `spec` unchanged without `[transfer]`. Errors say what is
/// missing: no such experiment, no completed model, or which constraint rules out the most.
pub async fn derive_seeds(
    conn: &mut SqliteConnection,
    artifacts: &ArtifactStore,
    spec: &ExperimentSpec,
) -> Result<ExperimentSpec, MasterError> {
    let Some(transfer) = &spec.transfer else {
        return Ok(spec.clone());
    };
    let default_seed = SeedModel {
        preset: Some("cnn2".into()),
        genome_file: None,
        genome: None,
        hparams: None,
        transfer: None,
    };
    if spec.seeds != [default_seed] {
        return Err(MasterError::InvalidArgument(
            "seeds: a [transfer] experiment starts from its source's models; remove [[seeds]]"
                .into(),
        ));
    }
    let source = find_source(conn, &transfer.from).await?;
    let source_spec: ExperimentSpec = serde_json::from_str(&source.spec_json).map_err(|e| {
        MasterError::Internal(format!("stored spec of {} is unreadable: {e}", source.id))
    })?;
    let mut models = Vec::new();
    let mut ruled_out: BTreeMap<&'static str, (usize, String)> = BTreeMap::new();
    let mut completed = 0;
    for trial in store::list_trials(conn, &source.id).await? {
        let (Some(score), Some(sha)) = (trial.score, trial.checkpoint_sha256.clone()) else {
            continue;
        };
        if trial.status()? != TrialStatus::Completed || !artifacts.contains(&sha) {
            continue;
        }
        completed += 1;
        let genome = Genome::from_json(&trial.genome_json).map_err(|e| {
            MasterError::Internal(format!("trial {}: stored genome: {e}", trial.id))
        })?;
        match spec.search.constraint_violation(&genome)? {
            Some((key, example)) => {
                let entry = ruled_out.entry(key).or_insert((0, example));
                entry.0 += 1;
            }
            None => models.push((score, trial.seq, trial.id.clone(), sha, genome)),
        }
    }
    if completed == 0 {
        return Err(MasterError::FailedPrecondition(format!(
            "transfer.from: experiment {} ({}) has no completed model with a checkpoint",
            source.name, source.id
        )));
    }
    if models.is_empty() {
        let (key, (count, example)) = ruled_out
            .iter()
            .max_by_key(|(_, (count, _))| *count)
            .map(|(k, v)| (*k, v.clone()))
            .unwrap_or(("search", (0, String::new())));
        return Err(MasterError::FailedPrecondition(format!(
            "transfer.from: none of the {completed} completed models of {} meets this spec's \
             constraints; {key} rules out the most ({count}, e.g. {example})",
            source.name
        )));
    }
    models.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    models.truncate(transfer.models as usize);

    let mut derived = spec.clone();
    derived.seeds = Vec::new();
    for (score, seq, trial_id, sha, genome) in &models {
        for (k, settings) in transfer.settings.iter().enumerate() {
            let mut hparams = settings.clone();
            hparams.objective = spec.seed_objective(settings);
            derived.seeds.push(SeedModel {
                preset: None,
                genome_file: None,
                genome: Some(genome.clone()),
                hparams: Some(hparams),
                transfer: Some(TransferSeed {
                    trial_id: trial_id.clone(),
                    checkpoint_sha256: sha.clone(),
                    label: format!(
                        "transfer {}#{seq} (source val {score:.4}), settings {k}",
                        source.name
                    ),
                }),
            });
        }
    }
    let replays = spec.seed_objective(&transfer.settings[0]).needs_history();
    if replays && derived.data.history.is_none() {
        derived.data.history = Some(history_of(&source_spec.data, &source.name)?);
    }
    derived.validate()?;
    Ok(derived)
}

/// The experiment `from` names: its id, else the newest experiment with that name.
async fn find_source(
    conn: &mut SqliteConnection,
    from: &str,
) -> Result<ExperimentRow, MasterError> {
    if let Some(row) = store::get_experiment(conn, from).await? {
        return Ok(row);
    }
    store::list_experiments(conn)
        .await?
        .into_iter()
        .find(|row| row.name == from)
        .ok_or_else(|| {
            MasterError::NotFound(format!(
                "transfer.from: no experiment has the id or name {from:?} (see `master status`)"
            ))
        })
}

/// The history library that replays a source experiment's data.
fn history_of(data: &DataConfig, source_name: &str) -> Result<HistoryConfig, MasterError> {
    if !NAMED_DATASETS.contains(&data.dataset.as_str()) || !data.domains.is_empty() {
        return Err(MasterError::InvalidArgument(format!(
            "data.history: the source experiment {source_name} trained on {} data, which a \
             history library cannot replay by name; set [data.history] to a named dataset",
            if data.domains.is_empty() {
                data.dataset.as_str()
            } else {
                "multi-domain"
            }
        )));
    }
    Ok(HistoryConfig::replaying(&data.dataset, data.transform))
}

// Tests: `scheduler_tests/transfer.rs` (through `Scheduler::submit`, on the shared harness).
