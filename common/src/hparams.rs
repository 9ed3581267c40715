//! Training hyperparameters of one trial.

use serde::{Deserialize, Serialize};

use crate::error::CommonError;

/// Optimiser family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// Stochastic gradient descent with Nesterov momentum 0.9.
    Sgd,
    /// Adam with L2 weight decay folded into the gradient.
    Adam,
    /// Adam with decoupled weight decay.
    #[serde(rename = "adamw")]
    AdamW,
}

impl Optimizer {
    /// The name used in specs and JSON: `sgd`, `adam` or `adamw`.
    pub fn name(self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Adam => "adam",
            Optimizer::AdamW => "adamw",
        }
    }
}

/// How the learning rate changes over the epochs of one trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// The same rate for every step.
    Constant,
    /// Cosine decay from the initial rate to zero over all steps of the trial.
    Cosine,
    /// Linear warm-up over the first 10% of steps, then linear decay to zero (one-cycle style).
    OneCycle,
}

/// Squared norm of one output filter (or dense row) under the default initialisation, uniform
/// in `±1/sqrt(fan_in)`: `fan_in · (1/fan_in) / 3`, whatever the layer's size. ELR mode uses it
/// to turn a learning rate into an equivalent learning rate and back.
pub const DEFAULT_INIT_SQUARED_NORM: f64 = 1.0 / 3.0;

/// The training objective of a trial: what the trainer optimises and how (see the worker's
/// `objective` module). The plain objective is not serialised, so hyperparameters written
/// before objectives existed keep their JSON text, hash and duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Objective {
    /// Cross-entropy on a linear head, one optimizer group with `learning_rate` and
    /// `weight_decay`.
    #[default]
    Plain,
    /// Equivalent-learning-rate mode (S3): a scale-invariant cosine head
    /// `logits = scale · normalize(W) · normalize(x)`, every scale-invariant weight projected
    /// back to its initial norm after each step, and one step-size dimension, `elr`, in place of
    /// `learning_rate` and `weight_decay` (both unused in this mode).
    Elr {
        /// The equivalent learning rate: the optimizer's step size divided by the mean squared
        /// initial norm of the scale-invariant filters.
        elr: f64,
        /// The fixed logit scale S of the cosine head.
        scale: f64,
    },
    /// Domain disentanglement (S5): the trunk's features are projected into a domain-invariant
    /// and a domain-specific part of `dim` values each; the task head sees only the invariant
    /// part, a domain head the specific part, and `lambda` weighs a CLUB estimate of the mutual
    /// information between the two parts (warmed up over training). Needs multi-domain data.
    Disentangle {
        /// Weight of the mutual-information penalty after warm-up.
        lambda: f64,
        /// Size of each of the two feature parts.
        dim: u32,
    },
    /// Domain-adversarial training (DANN, Ganin et al. 2016), a baseline for S5: a domain
    /// classifier on the trunk's features behind a gradient-reversal layer of weight `lambda`
    /// (warmed up over training). Needs multi-domain data.
    Dann {
        /// Weight of the reversed domain gradient after warm-up.
        lambda: f64,
    },
    /// Gradient-mixing fine-tune (S4): every step mixes the gradient of a new-task batch with
    /// the gradient of a replayed batch of the history library (`[data.history]`), normalised
    /// and weighted by their cosine; on conflict the part of the new-task gradient that opposes
    /// the history gradient is removed first. Needs `[data.history]`.
    GradientMixing,
    /// Experience replay with a fixed mix, a baseline for S4: the update is the mean of the
    /// new-task and the history gradients. Needs `[data.history]`.
    Replay,
    /// A-GEM, a baseline for S4: on conflict the new-task gradient projected off the history
    /// gradient, else unchanged. Needs `[data.history]`.
    Agem,
}

impl Objective {
    /// Whether this is the plain objective (the serialisation default).
    pub fn is_plain(&self) -> bool {
        matches!(self, Objective::Plain)
    }

    /// Whether this is ELR mode, which replaces learning rate and weight decay by `elr` and
    /// needs scale-invariant weights.
    pub fn is_elr(&self) -> bool {
        matches!(self, Objective::Elr { .. })
    }

    /// Whether the objective replays a history library (`[data.history]`).
    pub fn needs_history(&self) -> bool {
        matches!(
            self,
            Objective::GradientMixing | Objective::Replay | Objective::Agem
        )
    }

    /// Whether the objective trains on domain labels (`[[data.domains]]`).
    pub fn needs_domains(&self) -> bool {
        matches!(self, Objective::Disentangle { .. } | Objective::Dann { .. })
    }

    /// The name used in specs and tables: `plain`, `elr`, `disentangle`, `dann`,
    /// `gradient_mixing`, `replay` or `agem`.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Plain => "plain",
            Objective::Elr { .. } => "elr",
            Objective::Disentangle { .. } => "disentangle",
            Objective::Dann { .. } => "dann",
            Objective::GradientMixing => "gradient_mixing",
            Objective::Replay => "replay",
            Objective::Agem => "agem",
        }
    }
}

/// Largest `augment.crop_pad` (pixels of padding) a trial may use.
pub const MAX_CROP_PAD: u32 = 16;
/// Largest `augment.flip` probability: a flip with probability `p` and one with `1 - p` give
/// the same spread of images, so 0.5 is the strongest flip.
pub const MAX_FLIP: f64 = 0.5;
/// Largest `augment.erase` probability.
pub const MAX_ERASE: f64 = 1.0;
/// Side of the square random erasing zeroes, as a fraction of the image's shorter side
/// (Cutout's half side: 14 pixels on 28×28 images), centred anywhere in the image and clipped
/// at its edges.
pub const ERASE_SIDE_FRACTION: f64 = 0.5;

/// Data augmentation of the training batches (never of validation or test data), applied by
/// the worker to each training batch on its device. Off (all zero) by default; off is not
/// serialised, so hyperparameters written before augmentation existed keep their JSON text,
/// hash and duplicate detection.
///
/// Per example, in this order: a random crop with padding (the image shifted by up to
/// `crop_pad` pixels each way, the uncovered border filled with the edge pixels, i.e.
/// replicate padding: the background on MNIST-like data), a horizontal flip with probability
/// `flip`, and with probability `erase` a random square of side [`ERASE_SIDE_FRACTION`] of the
/// image zeroed (after normalisation, zero is the channel mean: Cutout / random erasing).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Pixels of padding of the random crop, 0..=[`MAX_CROP_PAD`] (0 = no crop).
    pub crop_pad: u32,
    /// Probability of a horizontal flip, in [0, [`MAX_FLIP`]].
    pub flip: f64,
    /// Probability of erasing a square, in [0, [`MAX_ERASE`]].
    pub erase: f64,
}

impl Augment {
    /// Whether no augmentation is applied (the serialisation default).
    pub fn is_off(&self) -> bool {
        self.crop_pad == 0 && self.flip == 0.0 && self.erase == 0.0
    }

    /// Checks ranges; the error names the key (`augment.crop_pad`, `augment.flip`,
    /// `augment.erase`).
    pub fn validate(&self) -> Result<(), CommonError> {
        let bad = |field: &str, reason: String| {
            Err(CommonError::InvalidHyperParams {
                field: format!("augment.{field}"),
                reason,
            })
        };
        if self.crop_pad > MAX_CROP_PAD {
            return bad(
                "crop_pad",
                format!("must be 0..={MAX_CROP_PAD}, got {}", self.crop_pad),
            );
        }
        if !(self.flip.is_finite() && (0.0..=MAX_FLIP).contains(&self.flip)) {
            return bad(
                "flip",
                format!("must be in [0, {MAX_FLIP}], got {}", self.flip),
            );
        }
        if !(self.erase.is_finite() && (0.0..=MAX_ERASE).contains(&self.erase)) {
            return bad(
                "erase",
                format!("must be in [0, {MAX_ERASE}], got {}", self.erase),
            );
        }
        Ok(())
    }
}

/// Everything the trainer needs besides the architecture and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HyperParams {
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    pub schedule: Schedule,
    pub batch_size: u32,
    pub weight_decay: f64,
    pub epochs: u32,
    /// The training objective; absent in JSON when plain.
    #[serde(default, skip_serializing_if = "Objective::is_plain")]
    pub objective: Objective,
    /// Fine-tune the classifier head only (`head.*`): every other weight keeps the value it
    /// was initialised or inherited with (batch-norm running statistics still follow the data).
    /// A transfer setting; absent in JSON when false, so older pools keep their hashes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub head_only: bool,
    /// Data augmentation of the training batches; absent in JSON when off.
    #[serde(default, skip_serializing_if = "Augment::is_off")]
    pub augment: Augment,
}

impl Default for HyperParams {
    /// A setting that trains small CNNs on MNIST-sized data well in a few epochs.
    fn default() -> Self {
        HyperParams {
            optimizer: Optimizer::AdamW,
            learning_rate: 2e-3,
            schedule: Schedule::OneCycle,
            batch_size: 128,
            weight_decay: 1e-4,
            epochs: 3,
            objective: Objective::Plain,
            head_only: false,
            augment: Augment::default(),
        }
    }
}

impl HyperParams {
    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), CommonError> {
        let bad = |field: &str, reason: String| {
            Err(CommonError::InvalidHyperParams {
                field: field.to_string(),
                reason,
            })
        };
        if !(self.learning_rate.is_finite()
            && self.learning_rate > 0.0
            && self.learning_rate <= 10.0)
        {
            return bad(
                "learning_rate",
                format!("must be in (0, 10], got {}", self.learning_rate),
            );
        }
        if !(self.weight_decay.is_finite() && (0.0..=1.0).contains(&self.weight_decay)) {
            return bad(
                "weight_decay",
                format!("must be in [0, 1], got {}", self.weight_decay),
            );
        }
        if self.batch_size == 0 || self.batch_size > 65_536 {
            return bad(
                "batch_size",
                format!("must be 1..=65536, got {}", self.batch_size),
            );
        }
        if self.epochs == 0 || self.epochs > 1000 {
            return bad("epochs", format!("must be 1..=1000, got {}", self.epochs));
        }
        match self.objective {
            Objective::Plain | Objective::GradientMixing | Objective::Replay | Objective::Agem => {}
            Objective::Elr { elr, scale } => {
                if !(elr.is_finite() && elr > 0.0 && elr <= 10.0) {
                    return bad(
                        "objective.elr.elr",
                        format!("must be in (0, 10], got {elr}"),
                    );
                }
                if !(scale.is_finite() && (1.0..=100.0).contains(&scale)) {
                    return bad(
                        "objective.elr.scale",
                        format!("must be in [1, 100], got {scale}"),
                    );
                }
            }
            Objective::Disentangle { lambda, dim } => {
                if !(lambda.is_finite() && (0.0..=100.0).contains(&lambda)) {
                    return bad(
                        "objective.disentangle.lambda",
                        format!("must be in [0, 100], got {lambda}"),
                    );
                }
                if !(1..=1024).contains(&dim) {
                    return bad(
                        "objective.disentangle.dim",
                        format!("must be 1..=1024, got {dim}"),
                    );
                }
            }
            Objective::Dann { lambda } => {
                if !(lambda.is_finite() && (0.0..=100.0).contains(&lambda)) {
                    return bad(
                        "objective.dann.lambda",
                        format!("must be in [0, 100], got {lambda}"),
                    );
                }
            }
        }
        self.augment.validate()?;
        if self.head_only && self.objective.needs_domains() {
            return bad(
                "head_only",
                format!(
                    "the {} objective trains its own feature heads, so it cannot train the \
                     classifier head alone",
                    self.objective.name()
                ),
            );
        }
        Ok(())
    }

    /// Parses hyperparameters from JSON and validates them.
    pub fn from_json(text: &str) -> Result<HyperParams, CommonError> {
        let hp: HyperParams = serde_json::from_str(text)
            .map_err(|e| CommonError::Json(format!("hyperparameters: {e}")))?;
        hp.validate()?;
        Ok(hp)
    }

    /// Canonical JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("hyperparameter serialisation cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_round_trips() {
        let hp = HyperParams::default();
        hp.validate().unwrap();
        assert_eq!(HyperParams::from_json(&hp.to_json()).unwrap(), hp);
    }

    #[test]
    fn optimizer_names_are_the_serialised_ones() {
        for o in [Optimizer::Sgd, Optimizer::Adam, Optimizer::AdamW] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.name());
        }
    }

    #[test]
    fn head_only_is_not_serialised_when_false_and_refused_with_a_domain_objective() {
        let all_layers = HyperParams::default();
        assert!(!all_layers.to_json().contains("head_only"));
        let head = HyperParams {
            head_only: true,
            ..HyperParams::default()
        };
        assert!(head.to_json().contains("\"head_only\":true"));
        assert_eq!(HyperParams::from_json(&head.to_json()).unwrap(), head);
        let dann = HyperParams {
            head_only: true,
            objective: Objective::Dann { lambda: 0.1 },
            ..HyperParams::default()
        };
        let err = dann.validate().unwrap_err().to_string();
        assert!(err.contains("head_only") && err.contains("dann"), "{err}");
    }

    #[test]
    fn the_plain_objective_is_not_serialised_and_elr_round_trips() {
        let plain = HyperParams::default();
        assert!(
            !plain.to_json().contains("objective"),
            "{}",
            plain.to_json()
        );
        let old = r#"{"optimizer":"adamw","learning_rate":0.002,"schedule":"one_cycle","batch_size":128,"weight_decay":0.0001,"epochs":3}"#;
        assert_eq!(plain.to_json(), old);
        assert_eq!(HyperParams::from_json(old).unwrap(), plain);
        let elr = HyperParams {
            objective: Objective::Elr {
                elr: 0.05,
                scale: 16.0,
            },
            ..HyperParams::default()
        };
        assert!(elr
            .to_json()
            .contains(r#""objective":{"elr":{"elr":0.05,"scale":16.0}}"#));
        assert_eq!(HyperParams::from_json(&elr.to_json()).unwrap(), elr);
        let bad = HyperParams {
            objective: Objective::Elr {
                elr: 0.0,
                scale: 16.0,
            },
            ..HyperParams::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("objective.elr.elr"));
    }

    #[test]
    fn augmentation_is_not_serialised_when_off_and_round_trips_when_on() {
        let old = r#"{"optimizer":"adamw","learning_rate":0.002,"schedule":"one_cycle","batch_size":128,"weight_decay":0.0001,"epochs":3}"#;
        let off = HyperParams::default();
        assert!(off.augment.is_off());
        assert_eq!(off.to_json(), old);
        assert_eq!(HyperParams::from_json(old).unwrap(), off);
        // Written out in full but all zero: still off, and re-encoded without the key.
        let zero = old.replace('}', r#","augment":{"crop_pad":0,"flip":0.0,"erase":0.0}}"#);
        assert_eq!(HyperParams::from_json(&zero).unwrap().to_json(), old);
        let on = HyperParams {
            augment: Augment {
                crop_pad: 2,
                flip: 0.5,
                erase: 0.25,
            },
            ..HyperParams::default()
        };
        assert!(
            on.to_json()
                .ends_with(r#","augment":{"crop_pad":2,"flip":0.5,"erase":0.25}}"#),
            "{}",
            on.to_json()
        );
        assert_eq!(HyperParams::from_json(&on.to_json()).unwrap(), on);
        // One strength alone is enough to be on; the others default to zero.
        let flip_only = old.replace('}', r#","augment":{"flip":0.1}}"#);
        let parsed = HyperParams::from_json(&flip_only).unwrap();
        assert_eq!(parsed.augment.flip, 0.1);
        assert_eq!(parsed.augment.crop_pad, 0);
        assert!(!parsed.augment.is_off());
        let unknown = old.replace('}', r#","augment":{"rotate":0.1}}"#);
        assert!(HyperParams::from_json(&unknown).is_err());
    }

    #[test]
    fn augmentation_out_of_range_names_the_key() {
        for (augment, key) in [
            (
                Augment {
                    crop_pad: MAX_CROP_PAD + 1,
                    ..Augment::default()
                },
                "augment.crop_pad",
            ),
            (
                Augment {
                    flip: 0.6,
                    ..Augment::default()
                },
                "augment.flip",
            ),
            (
                Augment {
                    flip: f64::NAN,
                    ..Augment::default()
                },
                "augment.flip",
            ),
            (
                Augment {
                    erase: -0.1,
                    ..Augment::default()
                },
                "augment.erase",
            ),
            (
                Augment {
                    erase: 1.5,
                    ..Augment::default()
                },
                "augment.erase",
            ),
        ] {
            let hp = HyperParams {
                augment,
                ..HyperParams::default()
            };
            let err = hp.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let strongest = HyperParams {
            augment: Augment {
                crop_pad: MAX_CROP_PAD,
                flip: MAX_FLIP,
                erase: MAX_ERASE,
            },
            ..HyperParams::default()
        };
        strongest.validate().unwrap();
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let hp = HyperParams {
            learning_rate: f64::NAN,
            ..HyperParams::default()
        };
        assert!(hp
            .validate()
            .unwrap_err()
            .to_string()
            .contains("learning_rate"));
        let hp = HyperParams {
            batch_size: 0,
            ..HyperParams::default()
        };
        assert!(hp
            .validate()
            .unwrap_err()
            .to_string()
            .contains("batch_size"));
    }
}
