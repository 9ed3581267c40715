//! What the predictor knows about one (source model, fine-tune settings, new task) triple, and
//! its numeric feature vector.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The objectives that get their own one-hot slot, in slot order; any other name (`disentangle`,
/// `dann`, a future one) shares the final `objective_other` slot. Names as
/// `Objective::name` writes them.
pub const OBJECTIVES: [&str; 5] = ["plain", "gradient_mixing", "replay", "agem", "elr"];

/// The optimizers that get a one-hot slot, in slot order (names as the spec writes them); any
/// other name sets none.
pub const OPTIMIZERS: [&str; 3] = ["sgd", "adam", "adamw"];

/// The length of [`TransferFeatures::vector`].
pub const FEATURE_COUNT: usize = 29;

/// The name of each entry of [`TransferFeatures::vector`], in order (`ln` is the natural log).
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    // source model
    "log_params",   // ln(params)
    "log_flops",    // ln(flops)
    "depth",        // layers
    "blocks",       // blocks
    "source_score", // validation accuracy on the source task
    // fine-tune settings
    "log_learning_rate",         // ln(learning_rate)
    "log_learning_rate_squared", // ln(learning_rate)²: lets the fit place an optimum
    "log_epochs",                // ln(1 + epochs)
    "log_batch_size",            // ln(batch_size)
    "log_weight_decay",          // ln(weight_decay + 1e-6)
    "objective_plain",           // one-hot over OBJECTIVES ...
    "objective_gradient_mixing",
    "objective_replay",
    "objective_agem",
    "objective_elr",
    "objective_other", // ... and any other objective
    // probe scores on the new task
    "logme",
    "leep",
    "nce",
    // the new task
    "log_examples", // ln(examples)
    "log_classes",  // ln(classes)
    "channels",     // 1 gray, 3 RGB
    "log_size",     // ln(size)
    // interactions
    "logme_x_log_learning_rate", // logme · ln(learning_rate)
    "logme_x_log_examples",      // logme · ln(examples)
    // the optimizer, one-hot over OPTIMIZERS
    "optimizer_sgd",
    "optimizer_adam",
    "optimizer_adamw",
    // 1 when only the classifier head is fine-tuned
    "head_only",
];

/// Added to the weight decay before its log, so that no weight decay (0) is a finite feature.
const WEIGHT_DECAY_FLOOR: f64 = 1e-6;

/// What a [`Predictor`](super::Predictor) can be fitted on: a record with a named numeric
/// feature vector. Two maps exist: [`TransferFeatures`] (a fine-tune on a new task, S2) and
/// [`SearchFeatures`](super::SearchFeatures) (a candidate of ordinary exploration).
pub trait FeatureMap {
    /// The name of each entry of the vector, in order.
    fn names() -> &'static [&'static str];
    /// The feature vector, or the first field out of its domain, named.
    fn checked_vector(&self) -> Result<Vec<f64>, FeatureError>;
}

impl FeatureMap for TransferFeatures {
    fn names() -> &'static [&'static str] {
        &FEATURE_NAMES
    }

    fn checked_vector(&self) -> Result<Vec<f64>, FeatureError> {
        TransferFeatures::checked_vector(self)
    }
}

/// One (source model, fine-tune settings) pair on a new task, as the predictor sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferFeatures {
    /// Source model: trainable parameters.
    pub params: u64,
    /// Source model: FLOPs of one forward pass on one image (2 × multiply-accumulates).
    pub flops: u64,
    /// Source model: blocks counted with the bodies of residual blocks (`Genome::depth`).
    pub depth: u32,
    /// Source model: blocks of the genome.
    pub blocks: u32,
    /// Source model: validation accuracy on the source task, in [0, 1].
    pub source_score: f64,
    /// Fine-tune: learning rate (> 0).
    pub learning_rate: f64,
    /// Fine-tune: epochs.
    pub epochs: u32,
    /// Fine-tune: batch size (≥ 1).
    pub batch_size: u32,
    /// Fine-tune: weight decay (≥ 0).
    pub weight_decay: f64,
    /// Fine-tune: objective name (`plain`, `gradient_mixing`, `replay`, `agem`, `elr`, other
    /// names share one slot); compared after trimming and lower-casing.
    pub objective: String,
    /// Fine-tune: optimizer name (`sgd`, `adam`, `adamw`; another name sets no slot), compared
    /// after trimming and lower-casing.
    pub optimizer: String,
    /// Fine-tune: only the classifier head trains (`head_only`); absent in JSON = false.
    #[serde(default)]
    pub head_only: bool,
    /// Probe: LogME on the new task, the mean per-example log evidence (about -2..2).
    pub logme: f64,
    /// Probe: LEEP on the new task, a log-likelihood (≤ 0).
    pub leep: f64,
    /// Probe: NCE on the new task, a negative conditional entropy (≤ 0).
    pub nce: f64,
    /// New task: labelled training examples.
    pub examples: u32,
    /// New task: classes.
    pub classes: u32,
    /// New task: image channels.
    pub channels: u32,
    /// New task: image side in pixels (height = width).
    pub size: u32,
}

/// A feature that cannot enter the predictor, named.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("feature `{feature}` is {value}: {reason}")]
pub struct FeatureError {
    /// The field of the feature record, or the entry of its feature names.
    pub feature: &'static str,
    /// Its value.
    pub value: f64,
    /// What it must be.
    pub reason: &'static str,
}

impl TransferFeatures {
    /// The objective's one-hot slot: its index in [`OBJECTIVES`], or `OBJECTIVES.len()` for any
    /// other name.
    pub fn objective_slot(&self) -> usize {
        let name = self.objective.trim().to_ascii_lowercase();
        OBJECTIVES
            .iter()
            .position(|known| *known == name)
            .unwrap_or(OBJECTIVES.len())
    }

    /// The numeric feature vector, entries named by [`FEATURE_NAMES`]. Out-of-domain input (a
    /// zero parameter count, a non-positive learning rate, a NaN score) gives non-finite entries
    /// here; [`TransferFeatures::checked_vector`] refuses it instead.
    pub fn vector(&self) -> Vec<f64> {
        let log_learning_rate = self.learning_rate.ln();
        let log_examples = f64::from(self.examples).ln();
        let mut objective = [0.0; OBJECTIVES.len() + 1];
        objective[self.objective_slot()] = 1.0;
        let mut vector = Vec::with_capacity(FEATURE_COUNT);
        vector.extend([
            (self.params as f64).ln(),
            (self.flops as f64).ln(),
            f64::from(self.depth),
            f64::from(self.blocks),
            self.source_score,
            log_learning_rate,
            log_learning_rate * log_learning_rate,
            f64::from(self.epochs).ln_1p(),
            f64::from(self.batch_size).ln(),
            (self.weight_decay + WEIGHT_DECAY_FLOOR).ln(),
        ]);
        vector.extend(objective);
        vector.extend([
            self.logme,
            self.leep,
            self.nce,
            log_examples,
            f64::from(self.classes).ln(),
            f64::from(self.channels),
            f64::from(self.size).ln(),
            self.logme * log_learning_rate,
            self.logme * log_examples,
        ]);
        let optimizer = self.optimizer.trim().to_ascii_lowercase();
        vector.extend(OPTIMIZERS.map(|known| f64::from(u8::from(known == optimizer))));
        vector.push(f64::from(u8::from(self.head_only)));
        debug_assert_eq!(vector.len(), FEATURE_COUNT);
        vector
    }

    /// [`TransferFeatures::vector`], or the first field out of its domain (NaN or infinite
    /// scores and rates, a non-positive count, learning rate or negative weight decay), named.
    pub fn checked_vector(&self) -> Result<Vec<f64>, FeatureError> {
        let positive_counts = [
            ("params", self.params as f64),
            ("flops", self.flops as f64),
            ("batch_size", f64::from(self.batch_size)),
            ("examples", f64::from(self.examples)),
            ("classes", f64::from(self.classes)),
            ("channels", f64::from(self.channels)),
            ("size", f64::from(self.size)),
        ];
        for (feature, value) in positive_counts {
            if value < 1.0 {
                return Err(FeatureError {
                    feature,
                    value,
                    reason: "must be at least 1",
                });
            }
        }
        let finite = [
            ("source_score", self.source_score),
            ("learning_rate", self.learning_rate),
            ("weight_decay", self.weight_decay),
            ("logme", self.logme),
            ("leep", self.leep),
            ("nce", self.nce),
        ];
        for (feature, value) in finite {
            if !value.is_finite() {
                return Err(FeatureError {
                    feature,
                    value,
                    reason: "must be finite",
                });
            }
        }
        if self.learning_rate <= 0.0 {
            return Err(FeatureError {
                feature: "learning_rate",
                value: self.learning_rate,
                reason: "must be positive",
            });
        }
        if self.weight_decay < 0.0 {
            return Err(FeatureError {
                feature: "weight_decay",
                value: self.weight_decay,
                reason: "must not be negative",
            });
        }
        let vector = self.vector();
        // Products of finite inputs can still overflow.
        if let Some((index, value)) = vector
            .iter()
            .enumerate()
            .find(|(_, value)| !value.is_finite())
        {
            return Err(FeatureError {
                feature: FEATURE_NAMES[index],
                value: *value,
                reason: "must be finite",
            });
        }
        Ok(vector)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid example: a small CNN fine-tuned with gradient mixing on a digits-like task.
    pub(crate) fn example() -> TransferFeatures {
        TransferFeatures {
            params: 120_000,
            flops: 3_500_000,
            depth: 6,
            blocks: 4,
            source_score: 0.91,
            learning_rate: 1e-3,
            epochs: 5,
            batch_size: 64,
            weight_decay: 5e-4,
            objective: "gradient_mixing".to_string(),
            optimizer: "adamw".to_string(),
            head_only: false,
            logme: 0.4,
            leep: -0.9,
            nce: -0.7,
            examples: 500,
            classes: 10,
            channels: 1,
            size: 28,
        }
    }

    #[test]
    fn vector_matches_names_and_transforms() {
        let features = example();
        let vector = features.checked_vector().unwrap();
        assert_eq!(vector.len(), FEATURE_NAMES.len());
        let entry = |name: &str| vector[FEATURE_NAMES.iter().position(|n| *n == name).unwrap()];
        assert!((entry("log_params") - 120_000f64.ln()).abs() < 1e-12);
        assert!((entry("log_learning_rate") - 1e-3f64.ln()).abs() < 1e-12);
        assert!((entry("log_learning_rate_squared") - 1e-3f64.ln().powi(2)).abs() < 1e-9);
        assert!((entry("logme_x_log_examples") - 0.4 * 500f64.ln()).abs() < 1e-12);
        assert_eq!(entry("objective_gradient_mixing"), 1.0);
        let one_hot: f64 = (10..16).map(|index| vector[index]).sum();
        assert_eq!(one_hot, 1.0, "exactly one objective slot is set");
    }

    #[test]
    fn the_optimizer_sets_its_one_hot_slot() {
        let entry = |f: &TransferFeatures, name: &str| {
            f.vector()[FEATURE_NAMES.iter().position(|n| *n == name).unwrap()]
        };
        let mut features = example();
        assert_eq!(entry(&features, "optimizer_adamw"), 1.0);
        assert_eq!(entry(&features, "optimizer_sgd"), 0.0);
        features.optimizer = " SGD ".to_string();
        assert_eq!(entry(&features, "optimizer_sgd"), 1.0);
        assert_eq!(entry(&features, "optimizer_adamw"), 0.0);
        features.optimizer = "lion".to_string();
        let slots: f64 = ["optimizer_sgd", "optimizer_adam", "optimizer_adamw"]
            .iter()
            .map(|n| entry(&features, n))
            .sum();
        assert_eq!(slots, 0.0, "an unknown optimizer sets no slot");
    }

    #[test]
    fn unknown_objectives_share_the_other_slot() {
        let mut features = example();
        features.objective = " ELR ".to_string();
        assert_eq!(features.objective_slot(), 4);
        features.objective = "dann".to_string();
        assert_eq!(features.objective_slot(), OBJECTIVES.len());
        assert_eq!(FEATURE_NAMES[10 + OBJECTIVES.len()], "objective_other");
        assert_eq!(features.vector()[10 + OBJECTIVES.len()], 1.0);
    }

    #[test]
    fn out_of_domain_fields_are_named() {
        let mut features = example();
        features.leep = f64::NAN;
        let error = features.checked_vector().unwrap_err();
        assert_eq!(error.feature, "leep");
        assert!(error.to_string().contains("`leep` is NaN"), "{error}");

        let mut features = example();
        features.learning_rate = 0.0;
        assert_eq!(
            features.checked_vector().unwrap_err().feature,
            "learning_rate"
        );

        let mut features = example();
        features.params = 0;
        assert_eq!(features.checked_vector().unwrap_err().feature, "params");

        let mut features = example();
        features.logme = 1e308;
        features.learning_rate = 1e-300;
        assert_eq!(
            features.checked_vector().unwrap_err().feature,
            "logme_x_log_learning_rate"
        );
    }
}
