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
//! With `transfer.probe` (the default) the seeds are not queued in that order (S2):
//! [`queue_probes`] first queues one probe trial per source model (negative `seq`, outside every
//! budget); once every probe has ended, [`choose_seed`] picks each next seed to fine-tune:
//! the one the learned [`crate::predictor`] ranks best once the pool holds enough fine-tunes of
//! earlier transfers (across experiments), by the probe's LogME until then. Models whose
//! measured latency exceeds `transfer.max_latency_ms` are never queued. The predictor is refitted
//! on the pool at every choice, so results that arrive meanwhile reorder what is left.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::store::PoolTx;
use explore_common::annealing;
use explore_common::genome::Genome;
use explore_common::hparams::HyperParams;
use explore_common::spec::{
    DataConfig, ExperimentSpec, HistoryConfig, ResolvedSeed, SeedModel, TransferSeed,
    NAMED_DATASETS,
};
use explore_common::{ExperimentId, TrialId};
use rand::Rng;

use crate::artifacts::ArtifactStore;
use crate::error::MasterError;
use crate::predictor::{self, Predictor, TransferFeatures};
use crate::store::{ExperimentRow, NewTrial, TrialKind, TrialRow, TrialStatus};

/// Metrics a probe reports (names shared with the worker, which sends them).
pub mod probe_metrics {
    /// LogME of the model's features on the new task's training examples.
    pub const LOGME: &str = "probe.logme";
    /// LEEP of the model's source head on the new task.
    pub const LEEP: &str = "probe.leep";
    /// NCE of the model's source head on the new task.
    pub const NCE: &str = "probe.nce";
    /// Median milliseconds of one forward pass of one image on the probing worker's device.
    pub const LATENCY_MS: &str = "probe.latency_ms";
    /// Training examples of the new task the probe measured.
    pub const EXAMPLES: &str = "probe.examples";
    /// Classes of the new task.
    pub const CLASSES: &str = "probe.classes";
}

/// The rng stream that seeds probe trials (the scheduler's streams are 0 to 3).
const STREAM_PROBE_SEED: u64 = 7;

/// `spec` with its seeds (and, where the objective replays, its history) derived from the
/// source experiment of `[transfer]`; `spec` unchanged without `[transfer]`. Errors say what is
/// missing: no such experiment, no completed model, or which constraint rules out the most.
pub async fn derive_seeds(
    conn: &mut dyn PoolTx,
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
    for trial in conn.list_train_trials(&source.id).await? {
        let (Some(score), Some(sha)) = (trial.score, trial.checkpoint_sha256.clone()) else {
            continue;
        };
        if trial.status != TrialStatus::Completed || !artifacts.contains(&sha).await? {
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
                    trial_id: trial_id.to_string(),
                    checkpoint_sha256: sha.clone(),
                    label: format!(
                        "transfer {}#{seq} (source val {score:.4}), settings {k}",
                        source.name
                    ),
                    source_score: Some(*score),
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
async fn find_source(conn: &mut dyn PoolTx, from: &str) -> Result<ExperimentRow, MasterError> {
    if let Ok(id) = from.parse::<ExperimentId>() {
        if let Some(row) = conn.get_experiment(&id).await? {
            return Ok(row);
        }
    }
    conn.list_experiments()
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

/// Whether the experiment probes its transfer seeds (S2) before fine-tuning them.
pub fn probes(spec: &ExperimentSpec) -> bool {
    spec.transfer.as_ref().is_some_and(|t| t.probe)
        && spec.seeds.iter().all(|s| s.transfer.is_some())
}

/// Queues one probe trial for each distinct source model among `seeds` (in seed order, `seq`
/// −1, −2, …). Returns how many were queued.
pub async fn queue_probes(
    conn: &mut dyn PoolTx,
    spec: &ExperimentSpec,
    seeds: &[ResolvedSeed],
    experiment_id: &ExperimentId,
    now: i64,
) -> Result<usize, MasterError> {
    let mut probed = HashSet::new();
    for seed in seeds {
        let Some(sha) = &seed.inherit_from else {
            continue;
        };
        if !probed.insert(sha.clone()) {
            continue;
        }
        let seq = -(probed.len() as i64);
        let analysis = seed
            .genome
            .analyze()
            .map_err(explore_common::CommonError::from)?;
        let model = seed.label.split(", settings").next().unwrap_or(&seed.label);
        let trial_seed: u64 =
            annealing::rng_for(spec.seed, STREAM_PROBE_SEED, probed.len() as u64).gen();
        let probe = NewTrial {
            id: TrialId::generate(),
            experiment_id: experiment_id.clone(),
            seq,
            parent_id: None,
            origin: format!("probe of {model}"),
            genome_json: seed.genome.canonical_json(),
            genome_hash: seed.genome.canonical_hash(),
            hparams_json: seed.hparams.to_json(),
            params: analysis.params as i64,
            flops: analysis.flops as i64,
            seed: crate::scheduler::db_seed(trial_seed),
            temperature: 0.0,
            chain: 0,
            inherit_from: Some(sha.clone()),
            kind: TrialKind::Probe,
            seed_index: None,
            prediction: None,
        };
        conn.insert_trial(&probe, now).await?;
    }
    Ok(probed.len())
}

/// Whether some probe of the experiment is still queued or held: its fine-tunes wait for them.
pub async fn probes_pending(
    conn: &mut dyn PoolTx,
    experiment_id: &ExperimentId,
) -> Result<bool, MasterError> {
    let counts = conn.probe_counts(experiment_id).await?;
    Ok(counts.queued + counts.in_flight() > 0)
}

/// The seed a probing transfer experiment fine-tunes next, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedChoice {
    /// Index into the experiment's seeds.
    pub index: usize,
    /// The predictor's `(mean, standard deviation)` of its fine-tuned validation accuracy.
    pub prediction: Option<(f64, f64)>,
    /// How it was ranked, appended to the trial's origin.
    pub note: String,
}

/// Probe results of one source model (by checkpoint).
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProbeScores {
    logme: f64,
    leep: f64,
    nce: f64,
    latency_ms: f64,
    examples: f64,
    classes: f64,
}

impl ProbeScores {
    fn from_metrics(metrics: &BTreeMap<String, f64>) -> Option<ProbeScores> {
        let get = |name: &str| metrics.get(name).copied().filter(|v| v.is_finite());
        Some(ProbeScores {
            logme: get(probe_metrics::LOGME)?,
            leep: get(probe_metrics::LEEP)?,
            nce: get(probe_metrics::NCE)?,
            latency_ms: get(probe_metrics::LATENCY_MS)?,
            examples: get(probe_metrics::EXAMPLES)?,
            classes: get(probe_metrics::CLASSES)?,
        })
    }
}

/// The predictor's features of fine-tuning `genome` (scored `source_score` on its own task) with
/// `hparams`, measured by a probe.
fn features(
    genome: &Genome,
    params: i64,
    flops: i64,
    source_score: f64,
    hparams: &HyperParams,
    probe: &ProbeScores,
) -> TransferFeatures {
    TransferFeatures {
        params: params.max(0) as u64,
        flops: flops.max(0) as u64,
        depth: genome.depth() as u32,
        blocks: genome.blocks.len() as u32,
        source_score,
        learning_rate: hparams.learning_rate,
        epochs: hparams.epochs,
        batch_size: hparams.batch_size,
        weight_decay: hparams.weight_decay,
        objective: hparams.objective.name().to_string(),
        optimizer: hparams.optimizer.name().to_string(),
        head_only: hparams.head_only,
        logme: probe.logme,
        leep: probe.leep,
        nce: probe.nce,
        examples: probe.examples as u32,
        classes: probe.classes as u32,
        channels: genome.input.channels,
        size: genome.input.height,
    }
}

/// The pool's fine-tunes of earlier probed transfers, across experiments, as predictor history.
async fn history(conn: &mut dyn PoolTx) -> Result<Vec<(TransferFeatures, f64)>, MasterError> {
    let mut specs: HashMap<ExperimentId, Option<ExperimentSpec>> = HashMap::new();
    let mut rows = Vec::new();
    for (trial, probe_json) in conn.fine_tune_history().await? {
        let (Some(score), Some(index)) = (trial.score, trial.seed_index) else {
            continue;
        };
        if !specs.contains_key(&trial.experiment_id) {
            let spec = conn
                .get_experiment(&trial.experiment_id)
                .await?
                .and_then(|row| serde_json::from_str::<ExperimentSpec>(&row.spec_json).ok());
            specs.insert(trial.experiment_id.clone(), spec);
        }
        let source_score = specs[&trial.experiment_id]
            .as_ref()
            .and_then(|spec| spec.seeds.get(index as usize))
            .and_then(|seed| seed.transfer.as_ref())
            .and_then(|t| t.source_score);
        let probe = serde_json::from_str::<BTreeMap<String, f64>>(&probe_json)
            .ok()
            .and_then(|m| ProbeScores::from_metrics(&m));
        let (Some(source_score), Some(probe)) = (source_score, probe) else {
            continue;
        };
        let (Ok(genome), Ok(hparams)) = (
            Genome::from_json(&trial.genome_json),
            HyperParams::from_json(&trial.hparams_json),
        ) else {
            continue;
        };
        rows.push((
            features(
                &genome,
                trial.params,
                trial.flops,
                source_score,
                &hparams,
                &probe,
            ),
            score,
        ));
    }
    Ok(rows)
}

/// Picks the next seed of a probing transfer experiment among those not queued yet: the
/// predictor's best once the pool holds [`predictor::MIN_HISTORY`] fine-tunes, else the best
/// LogME (then LEEP, then seed order). Seeds whose model broke `max_latency_ms` are skipped;
/// seeds whose probe failed come after every probed one, in seed order. While some seed's
/// settings fit in `remaining_epochs`, a seed that does not is passed over rather than started
/// cut short (its prediction is for its full settings). `None` when no seed is left; an error
/// when every model broke the latency limit.
pub async fn choose_seed(
    conn: &mut dyn PoolTx,
    spec: &ExperimentSpec,
    experiment_id: &ExperimentId,
    seeds: &[ResolvedSeed],
    remaining_epochs: Option<u64>,
) -> Result<Option<SeedChoice>, MasterError> {
    let used: HashSet<i64> = conn
        .queued_seed_indices(experiment_id)
        .await?
        .into_iter()
        .collect();
    let probes: Vec<TrialRow> = conn.list_probes(experiment_id).await?;
    let mut scores: HashMap<String, ProbeScores> = HashMap::new();
    for probe in &probes {
        if probe.status != TrialStatus::Completed {
            continue;
        }
        if let (Some(sha), Some(s)) = (
            &probe.inherit_from,
            ProbeScores::from_metrics(&probe.metrics()),
        ) {
            scores.insert(sha.clone(), s);
        }
    }
    let max_latency = spec.transfer.as_ref().and_then(|t| t.max_latency_ms);
    let fits = |seed: &ResolvedSeed| {
        remaining_epochs.is_none_or(|left| u64::from(seed.hparams.epochs) <= left)
    };
    let some_fit = seeds
        .iter()
        .enumerate()
        .any(|(index, seed)| !used.contains(&(index as i64)) && fits(seed));
    let mut probed = Vec::new();
    let mut unprobed = Vec::new();
    let mut too_slow = Vec::new();
    for (index, seed) in seeds.iter().enumerate() {
        if used.contains(&(index as i64)) || (some_fit && !fits(seed)) {
            continue;
        }
        let probe = seed.inherit_from.as_ref().and_then(|sha| scores.get(sha));
        match (probe, max_latency) {
            (Some(p), Some(max)) if p.latency_ms > max => too_slow.push(p.latency_ms),
            (Some(p), _) => probed.push((index, *p)),
            // Without a measured latency a limit cannot be honoured.
            (None, Some(_)) => {}
            (None, None) => unprobed.push(index),
        }
    }
    if probed.is_empty() && unprobed.is_empty() {
        if !used.is_empty() {
            return Ok(None);
        }
        let limit = max_latency.unwrap_or_default();
        if too_slow.is_empty() {
            return Err(MasterError::FailedPrecondition(format!(
                "transfer.max_latency_ms: no probe succeeded, so no model's latency is known \
                 (limit {limit} ms); `master trials` shows the probes' errors"
            )));
        }
        let fastest = too_slow.iter().copied().fold(f64::INFINITY, f64::min);
        return Err(MasterError::FailedPrecondition(format!(
            "transfer.max_latency_ms: no source model is fast enough on this task \
             (limit {limit} ms, fastest measured {fastest:.3} ms)"
        )));
    }
    if probed.is_empty() {
        return Ok(Some(SeedChoice {
            index: unprobed[0],
            prediction: None,
            note: "no probe result: seed order".into(),
        }));
    }
    let history = history(conn).await?;
    // A history the regression cannot fit (e.g. every score equal) falls back to LogME.
    let model = if history.len() >= predictor::MIN_HISTORY {
        Predictor::fit(&history)
            .inspect_err(
                |e| tracing::warn!(experiment_id = %experiment_id, error = %e, "transfer predictor not fitted"),
            )
            .ok()
    } else {
        None
    };
    if let Some(model) = model {
        let mut best: Option<(usize, f64, f64)> = None;
        for (index, probe) in &probed {
            let seed = &seeds[*index];
            let analysis = seed
                .genome
                .analyze()
                .map_err(explore_common::CommonError::from)?;
            let source_score = spec.seeds[*index]
                .transfer
                .as_ref()
                .and_then(|t| t.source_score)
                .unwrap_or(f64::NAN);
            let x = features(
                &seed.genome,
                analysis.params as i64,
                analysis.flops as i64,
                source_score,
                &seed.hparams,
                probe,
            );
            // A model whose features cannot be read (a NaN score) is left to the fallback.
            let Ok(p) = model.predict(&x) else {
                continue;
            };
            if best.is_none_or(|(_, mean, _)| p.mean > mean) {
                best = Some((*index, p.mean, p.std));
            }
        }
        if let Some((index, mean, std)) = best {
            return Ok(Some(SeedChoice {
                index,
                prediction: Some((mean, std)),
                note: format!(
                    "predicted {mean:.4} ± {std:.4} (predictor fitted on {} fine-tunes)",
                    history.len()
                ),
            }));
        }
    }
    let (index, probe) = probed
        .iter()
        .copied()
        .max_by(|a, b| {
            a.1.logme
                .total_cmp(&b.1.logme)
                .then(a.1.leep.total_cmp(&b.1.leep))
                .then(b.0.cmp(&a.0))
        })
        .expect("probed is not empty");
    Ok(Some(SeedChoice {
        index,
        prediction: None,
        note: if history.len() < predictor::MIN_HISTORY {
            format!(
                "ranked by LogME {:.4}: history too thin for the predictor ({} of {} fine-tunes)",
                probe.logme,
                history.len(),
                predictor::MIN_HISTORY
            )
        } else {
            format!(
                "ranked by LogME {:.4}: the predictor could not be fitted on {} fine-tunes",
                probe.logme,
                history.len()
            )
        },
    }))
}

// Tests: `scheduler_tests/transfer.rs` (through `Scheduler::submit`, on the shared harness).
