//! The experiment spec: a TOML document that says what to search, on which data, with which
//! budget. Unknown keys are refused and every validation error names the offending key.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::CommonError;
use crate::genome::Genome;
use crate::hparams::{HyperParams, Objective, Optimizer, Schedule, DEFAULT_INIT_SQUARED_NORM};
use crate::presets;

mod data;
mod final_training;
mod flat;
mod transfer;

pub use data::{
    DataConfig, DomainConfig, DomainTransform, HistoryConfig, DEFAULT_FOLDER_CHANNELS,
    DEFAULT_FOLDER_SIZE, FOLDER_DATASET, MAX_FOLDER_SIZE, NAMED_DATASETS,
};
pub use final_training::{FinalConfig, FinalStart, MAX_FINAL_EPOCHS};
pub use flat::{FlatGenome, FlatSpace, FlatStage};
pub use transfer::{default_settings as default_transfer_settings, TransferConfig, TransferSeed};

/// A parsed and validated experiment spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Human-readable name shown by `master status`.
    pub name: String,
    /// Seed of every random choice of the search (proposals, acceptance, data split).
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub budget: Budget,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub annealing: AnnealingConfig,
    #[serde(default)]
    pub search: SearchSpace,
    #[serde(default)]
    pub early_stopping: EarlyStopping,
    #[serde(default)]
    pub inheritance: Inheritance,
    #[serde(default)]
    pub training: TrainingConfig,
    /// Architectures (and optionally hyperparameters) the search starts from.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<SeedModel>,
    /// Start from an earlier experiment's trained models instead (see [`TransferConfig`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferConfig>,
    /// `[final]`: train the best architectures again once the search is over (see
    /// [`FinalConfig`]); absent, the experiment ends with the search.
    #[serde(rename = "final", default, skip_serializing_if = "Option::is_none")]
    pub final_training: Option<FinalConfig>,
}

fn default_seed() -> u64 {
    42
}

fn default_seeds() -> Vec<SeedModel> {
    vec![SeedModel {
        preset: Some("cnn2".into()),
        genome_file: None,
        genome: None,
        hparams: None,
        transfer: None,
    }]
}

/// When the experiment stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Number of trials to complete.
    pub max_trials: u32,
    /// Stop proposing new trials after this many seconds (running ones still finish).
    #[serde(default)]
    pub max_wall_seconds: Option<u64>,
    /// Give up on the experiment after this many failed trials. Unset: after `max_trials`
    /// failures, or after the first 5 trials if all of them failed before any trained to a result.
    #[serde(default)]
    pub max_failures: Option<u32>,
    /// Total training epochs across all trials (pruned and failed ones count the epochs they
    /// ran): the compute budget. A trial's epochs are cut to what is left.
    #[serde(default)]
    pub max_epochs: Option<u32>,
}

/// How the temperature cools.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cooling {
    /// `T_k = T_0 · rate^k`.
    Exponential,
    /// `T_k = T_0 · (1 − progress)`, floored at the minimum; progress is the used fraction of
    /// the trial (or epoch) budget.
    Linear,
    /// Follows the chain's acceptance rate towards `target_acceptance`: after each result
    /// `T ← T · exp(λ (a − target))` with `a` = 1 for an accepted child and 0 otherwise and
    /// `λ = −2 ln(cooling_rate)`, capped by the linear schedule so the search still cools.
    Adaptive,
}

/// Simulated-annealing settings (see `annealing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnealingConfig {
    /// Starting temperature, in units of score (accuracy): a child 0.02 worse than its parent is
    /// accepted with probability 1/e at T = 0.02.
    pub initial_temperature: f64,
    pub cooling: Cooling,
    /// Multiplier per completed trial for exponential cooling.
    pub cooling_rate: f64,
    /// Temperature never drops below this.
    pub min_temperature: f64,
    /// Annealing chains sharing the pool, each with its own current model and temperature
    /// (0 = one per connected worker slot, and at least two: one chain alone can be trapped
    /// for a whole run in a poor region it accepted early).
    pub chains: u32,
    /// Acceptance rate adaptive cooling steers each chain towards.
    pub target_acceptance: f64,
    /// Reheat a chain (temperature back to the initial one, restart from a draw over the whole
    /// pool) after this many results in a row that did not beat its best (0 = never).
    pub reheat_after: u32,
}

/// The defaults are the settings of the search benchmark's `explore` runs (BENCHMARKS.md,
/// "The product defaults"): measured there as a whole against the earlier defaults (T0 0.02,
/// exponential cooling at 0.9 to 0.001, one chain per slot, reheat after 6), which reached a
/// lower mean and a seven times larger spread over seeds.
impl Default for AnnealingConfig {
    fn default() -> Self {
        AnnealingConfig {
            initial_temperature: 0.01,
            cooling: Cooling::Adaptive,
            cooling_rate: 0.85,
            min_temperature: 0.0005,
            chains: 0,
            target_acceptance: 0.3,
            reheat_after: 4,
        }
    }
}

/// Which rule stops trials that are clearly worse than their peers at the same epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoppingRule {
    /// Every trial runs all its epochs.
    None,
    /// Stop a trial whose validation accuracy is below the median of its peers' at that epoch.
    Median,
    /// Asynchronous successive halving: at rung epochs `grace · η^k` a trial goes on only if
    /// it is in the top `1/η` of the trials that reached that rung.
    Asha,
}

/// Early stopping of unpromising trials through the progress stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStopping {
    pub rule: StoppingRule,
    /// No trial is stopped before it has run this many epochs.
    pub grace_epochs: u32,
    /// Compare only when at least this many other trials have reported the same epoch.
    pub min_peers: u32,
    /// η of [`StoppingRule::Asha`].
    pub reduction_factor: u32,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        EarlyStopping {
            rule: StoppingRule::Median,
            grace_epochs: 1,
            min_peers: 3,
            reduction_factor: 3,
        }
    }
}

/// The training objective of every trial of the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveKind {
    /// Cross-entropy on a linear head; learning rate and weight decay are searched.
    Plain,
    /// Equivalent-learning-rate mode (S3): a scale-invariant cosine head, weights projected back
    /// to their initial norms, one searched step size (`search.elr`) instead of learning rate and
    /// weight decay.
    Elr,
    /// Domain disentanglement (S5): invariant and specific feature parts, the task head on the
    /// invariant part, a CLUB mutual-information penalty between the parts. Needs
    /// `[[data.domains]]` with at least two training domains and a target domain.
    Disentangle,
    /// Domain-adversarial training (DANN), the baseline S5 is measured against. Needs
    /// `[[data.domains]]` with at least two training domains.
    Dann,
    /// Gradient-mixing fine-tune (S4): new-task gradients mixed with gradients replayed from a
    /// history library of the source task, never undoing the history direction. Needs
    /// `[data.history]`.
    GradientMixing,
    /// Experience replay with a fixed mix (S4's baseline). Needs `[data.history]`.
    Replay,
    /// A-GEM (S4's baseline). Needs `[data.history]`.
    Agem,
}

/// How trials train (`[training]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    pub objective: ObjectiveKind,
    /// The logit scale S of ELR mode's cosine head (fixed, not searched).
    pub elr_scale: f64,
    /// Weight of the disentangle objective's mutual-information penalty after warm-up.
    pub disentangle_lambda: f64,
    /// Size of each of the disentangle objective's two feature parts.
    pub disentangle_dim: u32,
    /// Weight of DANN's reversed domain gradient after warm-up.
    pub dann_lambda: f64,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            objective: ObjectiveKind::Plain,
            elr_scale: DEFAULT_ELR_SCALE,
            disentangle_lambda: DEFAULT_DISENTANGLE_LAMBDA,
            disentangle_dim: DEFAULT_DISENTANGLE_DIM,
            dann_lambda: DEFAULT_DANN_LAMBDA,
        }
    }
}

/// Default weight of the disentangle objective's mutual-information penalty. The CLUB estimate
/// sums over the feature coordinates, so λ goes with `disentangle_dim`: (0.03, 8) is the
/// configuration the S5 benchmark selected on training-domain validation (BENCHMARKS.md); the
/// earlier (0.1, 32) let the penalty swamp the task loss.
pub const DEFAULT_DISENTANGLE_LAMBDA: f64 = 0.03;
/// Default size of each of the disentangle objective's feature parts (see
/// [`DEFAULT_DISENTANGLE_LAMBDA`]); at 8 the domain probe on the invariant part falls towards
/// chance, at 32 it stays high.
pub const DEFAULT_DISENTANGLE_DIM: u32 = 8;
/// Default weight of DANN's reversed gradient (the paper's value, reached after warm-up).
pub const DEFAULT_DANN_LAMBDA: f64 = 1.0;

/// The search keys ELR mode replaces with `search.elr`: setting them in ELR mode is an error.
pub const ELR_REPLACED_KEYS: [&str; 2] = ["learning_rate", "weight_decay"];

/// Default logit scale of ELR mode's cosine head: a softmax over 10 classes can reach a
/// confident 0.99 when the right class's cosine leads the others by about 0.35.
pub const DEFAULT_ELR_SCALE: f64 = 16.0;

/// Default `search.elr` range in ELR mode: step sizes of about 7e-4 to 7e-2 on networks with
/// the default initialisation (squared filter norm 1/3), which covers Adam's and SGD's usual
/// learning rates.
pub const DEFAULT_ELR_RANGE: [f64; 2] = [2e-3, 0.2];

/// Weight inheritance: a child starts from its parent's trained weights wherever tensor names
/// and shapes still match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inheritance {
    pub enabled: bool,
    /// An inheriting child trains at most this many epochs: a fine-tune (0 = its own epochs).
    pub fine_tune_epochs: u32,
}

impl Default for Inheritance {
    fn default() -> Self {
        Inheritance {
            enabled: true,
            fine_tune_epochs: 2,
        }
    }
}

/// The space mutations move in and the hard constraints a trial must meet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSpace {
    /// Largest parameter count a proposed model may have (0 = no limit).
    pub max_params: u64,
    /// Largest FLOPs per example a proposed model may have (0 = no limit).
    pub max_flops: u64,
    /// Largest number of blocks (nested ones included).
    pub max_blocks: u32,
    /// Channel counts a conv block may take.
    pub channels: Vec<u32>,
    /// Unit counts a dense block may take.
    pub dense_units: Vec<u32>,
    /// Inclusive learning-rate range, sampled log-uniformly.
    pub learning_rate: [f64; 2],
    /// Batch sizes to choose from.
    pub batch_sizes: Vec<u32>,
    /// Inclusive range of epochs per trial.
    pub epochs: [u32; 2],
    pub optimizers: Vec<Optimizer>,
    pub schedules: Vec<Schedule>,
    /// Inclusive weight-decay range (sampled log-uniformly above zero).
    pub weight_decay: [f64; 2],
    /// Inclusive range of the equivalent learning rate in ELR mode (`training.objective =
    /// "elr"`), searched log-uniformly in place of `learning_rate` and `weight_decay`
    /// (default [`DEFAULT_ELR_RANGE`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elr: Option<[f64; 2]>,
    /// Inclusive range of the random crop's padding in pixels (`augment.crop_pad`); absent:
    /// never proposed (every child's crop is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop_pad: Option<[u32; 2]>,
    /// Inclusive range of the horizontal-flip probability (`augment.flip`); absent: never
    /// proposed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flip: Option<[f64; 2]>,
    /// Inclusive range of the random-erasing probability (`augment.erase`); absent: never
    /// proposed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erase: Option<[f64; 2]>,
    /// Probability that a mutation changes the architecture (else only hyperparameters).
    pub architecture_mutation_probability: f64,
    /// Predictor-guided proposals: each proposal mutates its base into
    /// `predictor_candidates` untried candidates and queues the one a predictor fitted on the
    /// experiment's recent completed trials ranks best (once it has enough history; until then
    /// proposals are as without it). Off by default.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub predictor: bool,
    /// Candidates per proposal when `predictor` is on (2..=64).
    #[serde(skip_serializing_if = "is_default_predictor_candidates")]
    pub predictor_candidates: u32,
    /// `[search.flat]`: architectures stay in a flat stage space and mutate by its parameters
    /// (a stage's width, kernel or depth, a stage more or less, the network's activation or
    /// batch-norm, the head); absent: per-block mutations over the whole genome language.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flat: Option<FlatSpace>,
}

/// The default of [`SearchSpace::predictor_candidates`].
pub const DEFAULT_PREDICTOR_CANDIDATES: u32 = 4;

fn is_default_predictor_candidates(candidates: &u32) -> bool {
    *candidates == DEFAULT_PREDICTOR_CANDIDATES
}

impl Default for SearchSpace {
    fn default() -> Self {
        SearchSpace {
            max_params: 5_000_000,
            max_flops: 0,
            max_blocks: 24,
            channels: vec![16, 24, 32, 48, 64, 96, 128],
            dense_units: vec![64, 128, 256, 512],
            learning_rate: [3e-4, 1e-2],
            batch_sizes: vec![64, 128, 256],
            epochs: [2, 4],
            optimizers: vec![Optimizer::AdamW, Optimizer::Adam, Optimizer::Sgd],
            schedules: vec![Schedule::OneCycle, Schedule::Cosine, Schedule::Constant],
            weight_decay: [0.0, 1e-3],
            elr: None,
            crop_pad: None,
            flip: None,
            erase: None,
            architecture_mutation_probability: 0.6,
            predictor: false,
            predictor_candidates: DEFAULT_PREDICTOR_CANDIDATES,
            flat: None,
        }
    }
}

/// A starting point of the search: a preset name, a genome file, or an inline genome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedModel {
    pub preset: Option<String>,
    pub genome_file: Option<String>,
    pub genome: Option<Genome>,
    /// Hyperparameters of the seed trial (default: [`HyperParams::default`]).
    pub hparams: Option<HyperParams>,
    /// Set by the master for the seeds of a `[transfer]` experiment: the source model whose
    /// weights the seed starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferSeed>,
}

/// A seed after resolution: the architecture and hyperparameters to train first.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSeed {
    pub label: String,
    pub genome: Genome,
    pub hparams: HyperParams,
    /// The checkpoint (sha256) the seed trial inherits: a `[transfer]` source model's.
    pub inherit_from: Option<String>,
}

impl ExperimentSpec {
    /// Parses and validates TOML text. Genome files named by seeds are resolved relative to
    /// `base_dir` when given.
    pub fn from_toml(text: &str) -> Result<ExperimentSpec, CommonError> {
        let spec: ExperimentSpec =
            toml::from_str(text).map_err(|e| CommonError::Spec(toml_error(&e)))?;
        spec.validate()?;
        spec.check_replaced_keys(text)?;
        Ok(spec)
    }

    /// In ELR mode, refuses TOML text that sets a search key the ELR replaces
    /// ([`ELR_REPLACED_KEYS`]); the parsed spec cannot tell, since those keys have defaults.
    pub fn check_replaced_keys(&self, text: &str) -> Result<(), CommonError> {
        if self.training.objective != ObjectiveKind::Elr {
            return Ok(());
        }
        let raw: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| CommonError::Spec(toml_error(&e)))?;
        let search = raw.get("search").and_then(|v| v.as_table());
        for replaced in ELR_REPLACED_KEYS {
            if search.is_some_and(|t| t.contains_key(replaced)) {
                return Err(CommonError::SpecKey {
                    key: format!("search.{replaced}"),
                    reason: "is replaced by search.elr in ELR mode (training.objective = \"elr\"); remove it".into(),
                });
            }
        }
        Ok(())
    }

    /// The spec as TOML text that [`ExperimentSpec::from_toml`] reads back as this spec; in
    /// ELR mode without the search keys the ELR replaces.
    pub fn to_toml(&self) -> Result<String, CommonError> {
        let mut table =
            toml::Table::try_from(self).map_err(|e| CommonError::Spec(e.to_string()))?;
        if self.training.objective == ObjectiveKind::Elr {
            if let Some(search) = table.get_mut("search").and_then(|v| v.as_table_mut()) {
                for replaced in ELR_REPLACED_KEYS {
                    search.remove(replaced);
                }
            }
        }
        toml::to_string(&table).map_err(|e| CommonError::Spec(e.to_string()))
    }

    /// Reads, parses and validates a spec file.
    pub fn from_file(path: &Path) -> Result<ExperimentSpec, CommonError> {
        let text = std::fs::read_to_string(path).map_err(|e| CommonError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), CommonError> {
        let key = |k: &str, reason: String| {
            Err(CommonError::SpecKey {
                key: k.to_string(),
                reason,
            })
        };
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return key("name", "must be 1..=200 characters".into());
        }
        let b = &self.budget;
        if b.max_trials == 0 || b.max_trials > 100_000 {
            return key(
                "budget.max_trials",
                format!("must be 1..=100000, got {}", b.max_trials),
            );
        }
        if b.max_failures == Some(0) {
            return key("budget.max_failures", "must be at least 1".into());
        }
        if b.max_wall_seconds == Some(0) {
            return key("budget.max_wall_seconds", "must be positive".into());
        }
        if b.max_epochs == Some(0) {
            return key("budget.max_epochs", "must be positive".into());
        }
        self.data.validate()?;
        if let Some(f) = &self.final_training {
            f.validate(b.max_trials, b.max_epochs, b.max_wall_seconds)?;
        }
        if let Some(t) = &self.transfer {
            t.validate()?;
        }
        let a = &self.annealing;
        if !(a.initial_temperature.is_finite() && a.initial_temperature > 0.0) {
            return key(
                "annealing.initial_temperature",
                format!("must be positive, got {}", a.initial_temperature),
            );
        }
        if !(a.min_temperature.is_finite()
            && a.min_temperature > 0.0
            && a.min_temperature <= a.initial_temperature)
        {
            return key(
                "annealing.min_temperature",
                format!(
                    "must be positive and at most initial_temperature, got {}",
                    a.min_temperature
                ),
            );
        }
        if !(a.cooling_rate > 0.0 && a.cooling_rate <= 1.0) {
            return key(
                "annealing.cooling_rate",
                format!("must be in (0, 1], got {}", a.cooling_rate),
            );
        }
        if a.chains > 256 {
            return key(
                "annealing.chains",
                format!(
                    "must be 0 (one per worker slot, at least 2) to 256, got {}",
                    a.chains
                ),
            );
        }
        if !(a.target_acceptance > 0.0 && a.target_acceptance < 1.0) {
            return key(
                "annealing.target_acceptance",
                format!("must be in (0, 1), got {}", a.target_acceptance),
            );
        }
        if a.cooling == Cooling::Adaptive && a.cooling_rate >= 1.0 {
            return key(
                "annealing.cooling_rate",
                "must be below 1 with adaptive cooling (it sets the adaptation step)".into(),
            );
        }
        let e = &self.early_stopping;
        if e.min_peers == 0 {
            return key("early_stopping.min_peers", "must be at least 1".into());
        }
        if e.rule == StoppingRule::Asha && e.reduction_factor < 2 {
            return key(
                "early_stopping.reduction_factor",
                format!("must be at least 2, got {}", e.reduction_factor),
            );
        }
        self.search.validate()?;
        if self.seeds.is_empty() {
            return key("seeds", "needs at least one seed model".into());
        }
        // The seeds of a transfer experiment come from its source (the master derives them and
        // checks the source's models against the constraints); until then they are placeholders.
        let derived = self.seeds.iter().all(|s| s.transfer.is_some());
        for (i, seed) in self.seeds.iter().enumerate() {
            let resolved = seed.resolve(i, None)?;
            if self.transfer.is_some() && !derived {
                continue;
            }
            let breaks = |reason: String| CommonError::SpecKey {
                key: format!("seeds[{i}]"),
                reason: format!("breaks the search constraints: {reason}"),
            };
            if let Some((_, message)) = self
                .search
                .constraint_violation(&resolved.genome)
                .map_err(|e| breaks(e.to_string()))?
            {
                return Err(breaks(message));
            }
        }
        self.validate_training()
    }

    /// Checks `[training]` against the search space and the seeds.
    fn validate_training(&self) -> Result<(), CommonError> {
        let key = |k: &str, reason: String| {
            Err(CommonError::SpecKey {
                key: k.to_string(),
                reason,
            })
        };
        let t = &self.training;
        if !(t.elr_scale.is_finite() && (1.0..=100.0).contains(&t.elr_scale)) {
            return key(
                "training.elr_scale",
                format!("must be in [1, 100], got {}", t.elr_scale),
            );
        }
        for (k, lambda) in [
            ("training.disentangle_lambda", t.disentangle_lambda),
            ("training.dann_lambda", t.dann_lambda),
        ] {
            if !(lambda.is_finite() && (0.0..=100.0).contains(&lambda)) {
                return key(k, format!("must be in [0, 100], got {lambda}"));
            }
        }
        if !(1..=1024).contains(&t.disentangle_dim) {
            return key(
                "training.disentangle_dim",
                format!("must be 1..=1024, got {}", t.disentangle_dim),
            );
        }
        let replays = matches!(
            t.objective,
            ObjectiveKind::GradientMixing | ObjectiveKind::Replay | ObjectiveKind::Agem
        );
        if !replays && self.data.history.is_some() {
            return key(
                "data.history",
                "is only used by the gradient-mixing fine-tune and its baselines: set \
                 training.objective = \"gradient_mixing\" (or \"replay\", \"agem\")"
                    .into(),
            );
        }
        if t.objective != ObjectiveKind::Elr && self.search.elr.is_some() {
            return key(
                "search.elr",
                "is only used in ELR mode: set training.objective = \"elr\"".into(),
            );
        }
        match t.objective {
            ObjectiveKind::Disentangle | ObjectiveKind::Dann => self.check_domains()?,
            ObjectiveKind::GradientMixing | ObjectiveKind::Replay | ObjectiveKind::Agem => {
                self.check_history()?
            }
            ObjectiveKind::Plain => {}
            ObjectiveKind::Elr => {
                for (i, seed) in self.seeds.iter().enumerate() {
                    let resolved = seed.resolve(i, None)?;
                    if resolved.genome.scale_invariant_weights().is_empty() {
                        return key(
                            &format!("seeds[{i}]"),
                            format!(
                                "({}) has no scale-invariant weight: ELR mode needs a conv or dense block followed directly by batch_norm",
                                resolved.label
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The objectives that replay a history library need `[data.history]` and single-source
    /// data to fine-tune on.
    fn check_history(&self) -> Result<(), CommonError> {
        let objective = self.seed_objective(&HyperParams::default());
        let name = objective.name();
        // A transfer experiment replays its source experiment's data unless told otherwise.
        if self.data.history.is_none() && self.transfer.is_none() {
            return Err(CommonError::SpecKey {
                key: "data.history".into(),
                reason: format!(
                    "objective = \"{name}\" needs [data.history]: the source task whose \
                     examples are replayed (for example dataset = \"fashion-mnist\"), or \
                     [transfer] from an experiment whose data it replays"
                ),
            });
        }
        if !self.data.domains.is_empty() {
            return Err(CommonError::SpecKey {
                key: "data.domains".into(),
                reason: format!(
                    "objective = \"{name}\" fine-tunes on one source: [[data.domains]] is for \
                     the domain objectives"
                ),
            });
        }
        Ok(())
    }

    /// The domain objectives need labelled domains: at least two training domains in
    /// `[[data.domains]]`, and for `disentangle` a target domain (whose test file is what the
    /// disentangled features are for).
    fn check_domains(&self) -> Result<(), CommonError> {
        let (objective, needs_target) = match self.training.objective {
            ObjectiveKind::Disentangle => ("disentangle", true),
            _ => ("dann", false),
        };
        let training = self.data.training_domains().count();
        if training < 2 {
            return Err(CommonError::SpecKey {
                key: "data.domains".into(),
                reason: format!(
                    "objective = \"{objective}\" needs at least two training domains \
                     ([[data.domains]] with target = false), got {training}"
                ),
            });
        }
        if needs_target && self.data.target_domain().is_none() {
            return Err(CommonError::SpecKey {
                key: "data.domains".into(),
                reason: format!(
                    "objective = \"{objective}\" needs a target domain ([[data.domains]] with \
                     target = true): its test file measures the transfer"
                ),
            });
        }
        Ok(())
    }

    /// The objective a seed trial trains with: plain, or in ELR mode the seed's own ELR
    /// settings if it has them, else its learning rate converted to its equivalent learning rate on a default-initialised network, clamped
    /// into `search.elr`.
    pub fn seed_objective(&self, seed: &HyperParams) -> Objective {
        let t = &self.training;
        match (t.objective, seed.objective) {
            (ObjectiveKind::Plain, _) => Objective::Plain,
            (ObjectiveKind::Disentangle, _) => Objective::Disentangle {
                lambda: t.disentangle_lambda,
                dim: t.disentangle_dim,
            },
            (ObjectiveKind::Dann, _) => Objective::Dann {
                lambda: t.dann_lambda,
            },
            (ObjectiveKind::GradientMixing, _) => Objective::GradientMixing,
            (ObjectiveKind::Replay, _) => Objective::Replay,
            (ObjectiveKind::Agem, _) => Objective::Agem,
            (ObjectiveKind::Elr, given @ Objective::Elr { .. }) => given,
            (ObjectiveKind::Elr, _) => {
                let [lo, hi] = self.search.elr_range();
                Objective::Elr {
                    elr: (seed.learning_rate / DEFAULT_INIT_SQUARED_NORM).clamp(lo, hi),
                    scale: self.training.elr_scale,
                }
            }
        }
    }

    /// The seed models, resolved and validated.
    /// Their hyperparameters carry the experiment's objective ([`Self::seed_objective`]).
    pub fn resolve_seeds(&self, base_dir: Option<&Path>) -> Result<Vec<ResolvedSeed>, CommonError> {
        self.seeds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut seed = s.resolve(i, base_dir)?;
                seed.hparams.objective = self.seed_objective(&seed.hparams);
                Ok(seed)
            })
            .collect()
    }
}

impl SearchSpace {
    /// Checks every value; the error names the key under `search.`.
    pub fn validate(&self) -> Result<(), CommonError> {
        let key = |k: &str, reason: String| {
            Err(CommonError::SpecKey {
                key: format!("search.{k}"),
                reason,
            })
        };
        if self.max_blocks < 2 || self.max_blocks > 200 {
            return key(
                "max_blocks",
                format!("must be 2..=200, got {}", self.max_blocks),
            );
        }
        if self.channels.is_empty()
            || self
                .channels
                .iter()
                .any(|&c| c == 0 || c > crate::genome::MAX_WIDTH)
        {
            return key(
                "channels",
                "must be a non-empty list of values in 1..=4096".into(),
            );
        }
        if self.dense_units.is_empty()
            || self
                .dense_units
                .iter()
                .any(|&c| c == 0 || c > crate::genome::MAX_WIDTH)
        {
            return key(
                "dense_units",
                "must be a non-empty list of values in 1..=4096".into(),
            );
        }
        let [lo, hi] = self.learning_rate;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi && hi <= 10.0) {
            return key(
                "learning_rate",
                format!("must be [low, high] with 0 < low <= high <= 10, got [{lo}, {hi}]"),
            );
        }
        if self.batch_sizes.is_empty() || self.batch_sizes.iter().any(|&b| b == 0 || b > 65_536) {
            return key(
                "batch_sizes",
                "must be a non-empty list of values in 1..=65536".into(),
            );
        }
        let [e0, e1] = self.epochs;
        if e0 == 0 || e0 > e1 || e1 > 1000 {
            return key(
                "epochs",
                format!("must be [low, high] with 1 <= low <= high <= 1000, got [{e0}, {e1}]"),
            );
        }
        if self.optimizers.is_empty() {
            return key("optimizers", "must not be empty".into());
        }
        if self.schedules.is_empty() {
            return key("schedules", "must not be empty".into());
        }
        let [w0, w1] = self.weight_decay;
        if !(w0.is_finite() && w1.is_finite() && w0 >= 0.0 && w0 <= w1 && w1 <= 1.0) {
            return key(
                "weight_decay",
                format!("must be [low, high] with 0 <= low <= high <= 1, got [{w0}, {w1}]"),
            );
        }
        if let Some([lo, hi]) = self.elr {
            if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi && hi <= 10.0) {
                return key(
                    "elr",
                    format!("must be [low, high] with 0 < low <= high <= 10, got [{lo}, {hi}]"),
                );
            }
        }
        if let Some([lo, hi]) = self.crop_pad {
            if lo > hi || hi > crate::hparams::MAX_CROP_PAD {
                return key(
                    "crop_pad",
                    format!(
                        "must be [low, high] with 0 <= low <= high <= {}, got [{lo}, {hi}]",
                        crate::hparams::MAX_CROP_PAD
                    ),
                );
            }
        }
        for (name, range, max) in [
            ("flip", self.flip, crate::hparams::MAX_FLIP),
            ("erase", self.erase, crate::hparams::MAX_ERASE),
        ] {
            if let Some([lo, hi]) = range {
                if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi && hi <= max) {
                    return key(
                        name,
                        format!(
                            "must be [low, high] with 0 <= low <= high <= {max}, got [{lo}, {hi}]"
                        ),
                    );
                }
            }
        }
        if !(2..=64).contains(&self.predictor_candidates) {
            return key(
                "predictor_candidates",
                format!("must be 2..=64, got {}", self.predictor_candidates),
            );
        }
        let p = self.architecture_mutation_probability;
        if !(0.0..=1.0).contains(&p) {
            return key(
                "architecture_mutation_probability",
                format!("must be in [0, 1], got {p}"),
            );
        }
        if let Some(flat) = &self.flat {
            flat.validate()?;
        }
        Ok(())
    }

    /// The equivalent-learning-rate range of ELR mode: `elr`, or [`DEFAULT_ELR_RANGE`].
    pub fn elr_range(&self) -> [f64; 2] {
        self.elr.unwrap_or(DEFAULT_ELR_RANGE)
    }

    /// Whether a genome meets the hard constraints (params, FLOPs, block count, the flat space
    /// when there is one); the error says which limit it breaks.
    pub fn check_constraints(&self, genome: &Genome) -> Result<(), CommonError> {
        match self.constraint_violation(genome)? {
            Some((_, message)) => Err(CommonError::Mutation(message)),
            None => Ok(()),
        }
    }

    /// The first constraint `genome` breaks, as its key (`search.max_params`,
    /// `search.max_flops`, `search.max_blocks`, `search.flat`) and a sentence; `None` when it
    /// meets them all.
    pub fn constraint_violation(
        &self,
        genome: &Genome,
    ) -> Result<Option<(&'static str, String)>, CommonError> {
        let analysis = genome.analyze()?;
        if self.max_params > 0 && analysis.params > self.max_params {
            return Ok(Some((
                "search.max_params",
                format!(
                    "{} parameters exceed search.max_params = {}",
                    analysis.params, self.max_params
                ),
            )));
        }
        if self.max_flops > 0 && analysis.flops > self.max_flops {
            return Ok(Some((
                "search.max_flops",
                format!(
                    "{} FLOPs exceed search.max_flops = {}",
                    analysis.flops, self.max_flops
                ),
            )));
        }
        if genome.depth() > self.max_blocks as usize {
            return Ok(Some((
                "search.max_blocks",
                format!(
                    "{} blocks exceed search.max_blocks = {}",
                    genome.depth(),
                    self.max_blocks
                ),
            )));
        }
        if let Some(flat) = &self.flat {
            if let Err(reason) = flat.read(genome, &self.channels, &self.dense_units) {
                return Ok(Some((
                    "search.flat",
                    format!("outside the flat space of search.flat: {reason}"),
                )));
            }
        }
        Ok(None)
    }
}

impl SeedModel {
    fn resolve(&self, index: usize, base_dir: Option<&Path>) -> Result<ResolvedSeed, CommonError> {
        let k = |field: &str| format!("seeds[{index}].{field}");
        let sources = [
            self.preset.is_some(),
            self.genome_file.is_some(),
            self.genome.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if sources != 1 {
            return Err(CommonError::SpecKey {
                key: format!("seeds[{index}]"),
                reason: "needs exactly one of preset, genome_file, genome".into(),
            });
        }
        let (label, genome) = if let Some(name) = &self.preset {
            let genome = presets::preset(name).ok_or_else(|| CommonError::SpecKey {
                key: k("preset"),
                reason: format!(
                    "unknown preset {name:?}; known: {}",
                    presets::NAMES.join(", ")
                ),
            })?;
            (format!("seed {name}"), genome)
        } else if let Some(file) = &self.genome_file {
            let path = match base_dir {
                Some(dir) if Path::new(file).is_relative() => dir.join(file),
                _ => Path::new(file).to_path_buf(),
            };
            if base_dir.is_none() && !path.exists() {
                // Validation without a base directory (on the master, for a spec submitted
                // remotely) cannot check relative files; the submitting CLI inlines them.
                return Err(CommonError::SpecKey {
                    key: k("genome_file"),
                    reason: format!("file {} not found", path.display()),
                });
            }
            let text = std::fs::read_to_string(&path).map_err(|e| CommonError::SpecKey {
                key: k("genome_file"),
                reason: format!("cannot read {}: {e}", path.display()),
            })?;
            let genome = Genome::from_json(&text).map_err(|e| CommonError::SpecKey {
                key: k("genome_file"),
                reason: e.to_string(),
            })?;
            (format!("seed {file}"), genome)
        } else {
            let genome = self.genome.clone().expect("checked above");
            genome.validate().map_err(|e| CommonError::SpecKey {
                key: k("genome"),
                reason: e.to_string(),
            })?;
            (format!("seed #{index}"), genome)
        };
        let hparams = self.hparams.clone().unwrap_or_default();
        hparams.validate().map_err(|e| CommonError::SpecKey {
            key: k("hparams"),
            reason: e.to_string(),
        })?;
        let (label, inherit_from) = match &self.transfer {
            Some(t) => (t.label.clone(), Some(t.checkpoint_sha256.clone())),
            None => (label, None),
        };
        Ok(ResolvedSeed {
            label,
            genome,
            hparams,
            inherit_from,
        })
    }
}

/// Formats a TOML error on one line, keeping the key and position toml reports.
fn toml_error(e: &toml::de::Error) -> String {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => format!("{message} (at byte {})", span.start),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "demo"
[budget]
max_trials = 4
"#;

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec = ExperimentSpec::from_toml(MINIMAL).unwrap();
        assert_eq!(spec.budget.max_trials, 4);
        assert_eq!(spec.data.dataset, "fashion-mnist");
        assert_eq!(spec.resolve_seeds(None).unwrap().len(), 1);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = ExperimentSpec::from_toml(&format!("{MINIMAL}max_trails = 3\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_trails"), "{err}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let text = MINIMAL.replace("max_trials = 4", "max_trials = 0");
        let err = ExperimentSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("budget.max_trials"), "{err}");
        let text = format!("{MINIMAL}[search]\nlearning_rate = [0.1, 0.01]\n");
        let err = ExperimentSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("search.learning_rate"), "{err}");
    }

    #[test]
    fn idx_dataset_requires_paths() {
        let text = format!("{MINIMAL}[data]\ndataset = \"idx\"\ntrain_images = \"a\"\n");
        let err = ExperimentSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("data.train_labels"), "{err}");
    }

    #[test]
    fn seeds_must_meet_the_search_constraints() {
        let text = format!("{MINIMAL}[search]\nmax_params = 1000\n");
        let err = ExperimentSpec::from_toml(&text).unwrap_err().to_string();
        assert!(
            err.contains("seeds[0]") && err.contains("max_params"),
            "{err}"
        );
        let text = MINIMAL.replace("max_trials = 4", "max_trials = 4\nmax_failures = 0");
        let err = ExperimentSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("budget.max_failures"), "{err}");
    }

    #[test]
    fn elr_mode_converts_the_seed_learning_rate_and_refuses_what_it_replaces() {
        let elr = format!("{MINIMAL}[training]\nobjective = \"elr\"\n");
        let spec = ExperimentSpec::from_toml(&elr).unwrap();
        let seeds = spec.resolve_seeds(None).unwrap();
        // default seed learning rate 2e-3 over the default squared norm 1/3
        match seeds[0].hparams.objective {
            Objective::Elr { elr, scale } => {
                assert!((elr - 6e-3).abs() < 1e-12, "{elr}");
                assert_eq!(scale, DEFAULT_ELR_SCALE);
            }
            other => panic!("{other:?}"),
        }
        for replaced in ["learning_rate = [0.001, 0.01]", "weight_decay = [0.0, 0.1]"] {
            let text = format!("{elr}[search]\n{replaced}\nelr = [0.01, 0.1]\n");
            let err = ExperimentSpec::from_toml(&text).unwrap_err().to_string();
            let name = replaced.split(' ').next().unwrap();
            assert!(
                err.contains(&format!("search.{name}")) && err.contains("search.elr"),
                "{err}"
            );
        }
        let plain_with_elr = format!("{MINIMAL}[search]\nelr = [0.01, 0.1]\n");
        let err = ExperimentSpec::from_toml(&plain_with_elr)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("search.elr") && err.contains("training.objective"),
            "{err}"
        );
        let mlp = format!("{elr}[[seeds]]\npreset = \"mlp\"\n");
        let err = ExperimentSpec::from_toml(&mlp).unwrap_err().to_string();
        assert!(
            err.contains("seeds[0]") && err.contains("no scale-invariant weight"),
            "{err}"
        );
        let unknown = format!("{MINIMAL}[training]\nobjective = \"magic\"\n");
        let err = ExperimentSpec::from_toml(&unknown).unwrap_err().to_string();
        assert!(err.contains("magic") && err.contains("elr"), "{err}");
        let plain = ExperimentSpec::from_toml(MINIMAL).unwrap();
        assert!(plain.resolve_seeds(None).unwrap()[0]
            .hparams
            .objective
            .is_plain());
    }

    #[test]
    fn an_elr_spec_re_encodes_without_the_keys_it_replaces() {
        let text = format!(
            "{MINIMAL}[training]\nobjective = \"elr\"\n[search]\nelr = [0.01, 0.1]\n[[seeds]]\npreset = \"cnn2\"\n"
        );
        let spec = ExperimentSpec::from_toml(&text).unwrap();
        let encoded = spec.to_toml().unwrap();
        assert!(!encoded.contains("learning_rate = ["), "{encoded}");
        assert_eq!(ExperimentSpec::from_toml(&encoded).unwrap(), spec);
        let plain = ExperimentSpec::from_toml(MINIMAL).unwrap();
        assert_eq!(
            ExperimentSpec::from_toml(&plain.to_toml().unwrap()).unwrap(),
            plain
        );
    }

    #[test]
    fn every_example_spec_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                ExperimentSpec::from_file(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 2, "{seen} example specs in {}", dir.display());
    }

    const THREE_ROTATIONS: &str = r#"
[[data.domains]]
name = "r15"
transform = { rotate = 15 }
[[data.domains]]
name = "r30"
transform = { rotate = 30 }
[[data.domains]]
name = "upright"
target = true
"#;

    #[test]
    fn domain_objectives_need_labelled_domains() {
        for objective in ["disentangle", "dann"] {
            let bare = format!("{MINIMAL}[training]\nobjective = \"{objective}\"\n");
            let err = ExperimentSpec::from_toml(&bare).unwrap_err().to_string();
            assert!(
                err.contains("data.domains") && err.contains("two training domains"),
                "{err}"
            );
            let one = format!(
                "{bare}[[data.domains]]\nname = \"a\"\n[[data.domains]]\nname = \"t\"\ntarget = true\n"
            );
            let err = ExperimentSpec::from_toml(&one).unwrap_err().to_string();
            assert!(err.contains("got 1"), "{err}");
            let spec = ExperimentSpec::from_toml(&format!("{bare}{THREE_ROTATIONS}")).unwrap();
            assert_eq!(spec.data.training_domains().count(), 2);
        }
        let no_target = format!(
            "{MINIMAL}[training]\nobjective = \"disentangle\"\n[[data.domains]]\nname = \"a\"\n[[data.domains]]\nname = \"b\"\ntransform = {{ invert = true }}\n"
        );
        let err = ExperimentSpec::from_toml(&no_target)
            .unwrap_err()
            .to_string();
        assert!(err.contains("target domain"), "{err}");
        // DANN trains on the training domains alone; a target is optional
        let dann = no_target.replace("disentangle", "dann");
        ExperimentSpec::from_toml(&dann).unwrap();
    }

    #[test]
    fn gradient_mixing_needs_a_history_and_a_history_needs_gradient_mixing() {
        let bare = format!("{MINIMAL}[training]\nobjective = \"gradient_mixing\"\n");
        let err = ExperimentSpec::from_toml(&bare).unwrap_err().to_string();
        assert!(err.contains("data.history"), "{err}");
        let history = "[data.history]\ndataset = \"fashion-mnist\"\nper_class = 30\n";
        let text = format!("{bare}{history}");
        let spec = ExperimentSpec::from_toml(&text).unwrap();
        let h = spec.data.history.as_ref().unwrap();
        assert_eq!(
            (h.per_class, h.library_per_class, h.test_subset),
            (30, 20, 1000)
        );
        assert_eq!(
            spec.resolve_seeds(None).unwrap()[0].hparams.objective,
            Objective::GradientMixing
        );
        assert_eq!(
            ExperimentSpec::from_toml(&spec.to_toml().unwrap()).unwrap(),
            spec
        );
        let unused = format!("{MINIMAL}{history}");
        let err = ExperimentSpec::from_toml(&unused).unwrap_err().to_string();
        assert!(
            err.contains("data.history") && err.contains("gradient_mixing"),
            "{err}"
        );
        let too_big = format!("{bare}{history}library_per_class = 31\n");
        let err = ExperimentSpec::from_toml(&too_big).unwrap_err().to_string();
        assert!(err.contains("data.history.library_per_class"), "{err}");
        let unknown = format!("{bare}[data.history]\ndataset = \"cifar\"\n");
        let err = ExperimentSpec::from_toml(&unknown).unwrap_err().to_string();
        assert!(err.contains("data.history.dataset"), "{err}");
        let with_domains = format!("{bare}{history}{THREE_ROTATIONS}");
        let err = ExperimentSpec::from_toml(&with_domains)
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.domains"), "{err}");
    }

    #[test]
    fn domain_objectives_reach_the_seed_hyperparameters() {
        let text = format!(
            "{MINIMAL}[training]\nobjective = \"disentangle\"\ndisentangle_lambda = 0.5\ndisentangle_dim = 16\n{THREE_ROTATIONS}"
        );
        let spec = ExperimentSpec::from_toml(&text).unwrap();
        let seeds = spec.resolve_seeds(None).unwrap();
        assert_eq!(
            seeds[0].hparams.objective,
            Objective::Disentangle {
                lambda: 0.5,
                dim: 16
            }
        );
        let plain = format!("{MINIMAL}{THREE_ROTATIONS}");
        let spec = ExperimentSpec::from_toml(&plain).unwrap();
        assert_eq!(
            spec.resolve_seeds(None).unwrap()[0].hparams.objective,
            Objective::Plain
        );
        assert_eq!(
            ExperimentSpec::from_toml(&spec.to_toml().unwrap()).unwrap(),
            spec
        );
    }

    #[test]
    fn augmentation_ranges_parse_validate_and_stay_out_of_specs_without_them() {
        let plain = ExperimentSpec::from_toml(MINIMAL).unwrap();
        assert_eq!(
            (plain.search.crop_pad, plain.search.flip, plain.search.erase),
            (None, None, None)
        );
        let toml = plain.to_toml().unwrap();
        assert!(
            !toml.contains("crop_pad") && !toml.contains("flip") && !toml.contains("erase"),
            "{toml}"
        );
        let text = format!(
            "{MINIMAL}[search]\ncrop_pad = [0, 4]\nflip = [0.0, 0.5]\nerase = [0.0, 0.5]\n"
        );
        let spec = ExperimentSpec::from_toml(&text).unwrap();
        assert_eq!(spec.search.crop_pad, Some([0, 4]));
        assert_eq!(spec.search.flip, Some([0.0, 0.5]));
        assert_eq!(spec.search.erase, Some([0.0, 0.5]));
        assert_eq!(
            ExperimentSpec::from_toml(&spec.to_toml().unwrap()).unwrap(),
            spec
        );
        for (bad, key) in [
            ("crop_pad = [3, 1]", "search.crop_pad"),
            ("crop_pad = [0, 17]", "search.crop_pad"),
            ("flip = [0.0, 0.7]", "search.flip"),
            ("flip = [-0.1, 0.2]", "search.flip"),
            ("erase = [0.5, 0.2]", "search.erase"),
            ("erase = [0.0, 1.5]", "search.erase"),
        ] {
            let text = format!("{MINIMAL}[search]\n{bad}\n");
            let err = ExperimentSpec::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_preset_lists_the_known_ones() {
        let text = format!("{MINIMAL}[[seeds]]\npreset = \"nope\"\n");
        let err = ExperimentSpec::from_toml(&text).unwrap_err().to_string();
        assert!(
            err.contains("seeds[0].preset") && err.contains("cnn2"),
            "{err}"
        );
    }
}
