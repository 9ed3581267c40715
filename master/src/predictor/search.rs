//! The predictor in ordinary exploration (`[search] predictor = true`): what it knows about one
//! candidate trial, and the choice among a proposal's candidates.
//!
//! A proposal with the predictor on mutates its chain's base into several untried candidates
//! (`[search] predictor_candidates`) instead of one, predicts each one's validation accuracy
//! with a [`Predictor`] fitted on the experiment's most recent completed trials
//! ([`SEARCH_HISTORY`] at most, so the cost does not grow with the pool), and queues the best
//! predicted. The annealing chain still decides acceptance on the real score, so a wrong
//! prediction costs one trial, never the chain's state.
//!
//! Features ([`SEARCH_FEATURE_NAMES`]): the architecture (log parameters, log FLOPs, depth,
//! blocks), the parent's score and whether the child inherits its weights (a fine-tune from a
//! good parent starts where the parent ended), and the hyperparameters (log learning rate and
//! its square, log epochs, log batch size, log weight decay, optimizer and schedule one-hot).

use explore_common::{Genome, HyperParams, Optimizer, Schedule};

use super::features::{FeatureError, FeatureMap};
use super::ridge::{Prediction, Predictor};
use super::PredictorError;

/// The most recent completed trials a search predictor is fitted on.
pub const SEARCH_HISTORY: i64 = 256;

/// The length of [`SearchFeatures::vector`].
pub const SEARCH_FEATURE_COUNT: usize = 18;

/// The name of each entry of [`SearchFeatures::vector`], in order (`ln` is the natural log).
pub const SEARCH_FEATURE_NAMES: [&str; SEARCH_FEATURE_COUNT] = [
    "log_params", // ln(params)
    "log_flops",  // ln(flops)
    "depth",      // blocks, nested ones included
    "blocks",     // top-level blocks
    "parent_score",
    "has_parent",
    "inherits",                  // 1 when the child starts from the parent's weights
    "log_learning_rate",         // ln(learning_rate)
    "log_learning_rate_squared", // ln(learning_rate)²
    "log_epochs",                // ln(1 + epochs)
    "log_batch_size",            // ln(batch_size)
    "log_weight_decay",          // ln(weight_decay + 1e-6)
    "optimizer_sgd",
    "optimizer_adam",
    "optimizer_adamw",
    "schedule_constant",
    "schedule_cosine",
    "schedule_one_cycle",
];

/// Added to the weight decay before its log, so that no weight decay (0) is a finite feature.
const WEIGHT_DECAY_FLOOR: f64 = 1e-6;

/// One candidate trial of ordinary exploration, as the search predictor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchFeatures {
    /// Trainable parameters.
    pub params: u64,
    /// FLOPs of one forward pass on one example.
    pub flops: u64,
    /// Blocks, nested ones included (`Genome::depth`).
    pub depth: u32,
    /// Top-level blocks.
    pub blocks: u32,
    /// The parent's validation accuracy; `None` for a seed or an unscored parent.
    pub parent_score: Option<f64>,
    /// Whether the trial starts from its parent's weights.
    pub inherits: bool,
    /// The trial's hyperparameters.
    pub hparams: HyperParams,
}

impl SearchFeatures {
    /// The features of `genome` trained with `hparams`; fails on a genome that does not
    /// analyse (which no queued trial has).
    pub fn of(
        genome: &Genome,
        hparams: &HyperParams,
        parent_score: Option<f64>,
        inherits: bool,
    ) -> Result<Self, explore_common::CommonError> {
        let analysis = genome
            .analyze()
            .map_err(explore_common::CommonError::from)?;
        Ok(SearchFeatures {
            params: analysis.params,
            flops: analysis.flops,
            depth: u32::try_from(genome.depth()).unwrap_or(u32::MAX),
            blocks: u32::try_from(genome.blocks.len()).unwrap_or(u32::MAX),
            parent_score,
            inherits,
            hparams: hparams.clone(),
        })
    }

    /// The numeric feature vector, entries named by [`SEARCH_FEATURE_NAMES`].
    pub fn vector(&self) -> Vec<f64> {
        let hp = &self.hparams;
        let log_learning_rate = hp.learning_rate.ln();
        let one_hot = |on: bool| f64::from(u8::from(on));
        let parent_score = self.parent_score.filter(|s| s.is_finite());
        let vector = vec![
            (self.params.max(1) as f64).ln(),
            (self.flops.max(1) as f64).ln(),
            f64::from(self.depth),
            f64::from(self.blocks),
            parent_score.unwrap_or(0.0),
            one_hot(parent_score.is_some()),
            one_hot(self.inherits),
            log_learning_rate,
            log_learning_rate * log_learning_rate,
            f64::from(hp.epochs).ln_1p(),
            f64::from(hp.batch_size.max(1)).ln(),
            (hp.weight_decay.max(0.0) + WEIGHT_DECAY_FLOOR).ln(),
            one_hot(hp.optimizer == Optimizer::Sgd),
            one_hot(hp.optimizer == Optimizer::Adam),
            one_hot(hp.optimizer == Optimizer::AdamW),
            one_hot(hp.schedule == Schedule::Constant),
            one_hot(hp.schedule == Schedule::Cosine),
            one_hot(hp.schedule == Schedule::OneCycle),
        ];
        debug_assert_eq!(vector.len(), SEARCH_FEATURE_COUNT);
        vector
    }
}

impl FeatureMap for SearchFeatures {
    fn names() -> &'static [&'static str] {
        &SEARCH_FEATURE_NAMES
    }

    fn checked_vector(&self) -> Result<Vec<f64>, FeatureError> {
        if !(self.hparams.learning_rate.is_finite() && self.hparams.learning_rate > 0.0) {
            return Err(FeatureError {
                feature: "learning_rate",
                value: self.hparams.learning_rate,
                reason: "must be finite and positive",
            });
        }
        if !self.hparams.weight_decay.is_finite() {
            return Err(FeatureError {
                feature: "weight_decay",
                value: self.hparams.weight_decay,
                reason: "must be finite",
            });
        }
        let vector = self.vector();
        if let Some((index, value)) = vector.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(FeatureError {
                feature: SEARCH_FEATURE_NAMES[index],
                value: *value,
                reason: "must be finite",
            });
        }
        Ok(vector)
    }
}

/// The candidate with the highest predicted mean (the first of equals) and its prediction;
/// `None` for no candidates. A greedy choice: the annealing chain and the mutations' own
/// randomness already explore, the predictor only picks among what they offer.
pub fn best_candidate(
    predictor: &Predictor<SearchFeatures>,
    candidates: &[SearchFeatures],
) -> Result<Option<(usize, Prediction)>, PredictorError> {
    let mut best: Option<(usize, Prediction)> = None;
    for (index, candidate) in candidates.iter().enumerate() {
        let prediction = predictor.predict_at(candidate, || format!("candidate {index}"))?;
        if best.is_none_or(|(_, b)| prediction.mean > b.mean) {
            best = Some((index, prediction));
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use explore_common::presets;

    fn genome() -> Genome {
        presets::preset("cnn2").unwrap()
    }

    fn with_lr(learning_rate: f64) -> SearchFeatures {
        let hparams = HyperParams {
            learning_rate,
            ..HyperParams::default()
        };
        SearchFeatures::of(&genome(), &hparams, Some(0.8), true).unwrap()
    }

    /// Accuracy peaks at lr = 3e-3 (a parabola in ln lr, which the squared feature can fit).
    fn synthetic_accuracy(learning_rate: f64) -> f64 {
        let d = learning_rate.ln() - 3e-3f64.ln();
        0.9 - 0.02 * d * d
    }

    #[test]
    fn the_vector_has_one_named_finite_entry_per_feature() {
        let f = with_lr(2e-3);
        let v = f.checked_vector().unwrap();
        assert_eq!(v.len(), SearchFeatures::names().len());
        assert!(v.iter().all(|x| x.is_finite()));
        let at = |name: &str| {
            v[SEARCH_FEATURE_NAMES
                .iter()
                .position(|n| *n == name)
                .unwrap()]
        };
        assert_eq!(at("parent_score"), 0.8);
        assert_eq!((at("has_parent"), at("inherits")), (1.0, 1.0));
        assert_eq!(
            at("optimizer_adamw") + at("optimizer_adam") + at("optimizer_sgd"),
            1.0
        );
        assert_eq!(at("schedule_one_cycle"), 1.0);
    }

    #[test]
    fn a_seed_without_parent_has_no_parent_score() {
        let f = SearchFeatures::of(&genome(), &HyperParams::default(), None, false).unwrap();
        let v = f.vector();
        assert_eq!((v[4], v[5], v[6]), (0.0, 0.0, 0.0));
    }

    #[test]
    fn an_invalid_learning_rate_is_named() {
        let mut f = with_lr(2e-3);
        f.hparams.learning_rate = 0.0;
        assert_eq!(f.checked_vector().unwrap_err().feature, "learning_rate");
    }

    #[test]
    fn the_predictor_picks_the_candidate_nearest_the_optimum_of_its_history() {
        let history: Vec<(SearchFeatures, f64)> = (0..16)
            .map(|i| {
                let lr = 3e-4 * (1e-2f64 / 3e-4).powf(f64::from(i) / 15.0);
                (with_lr(lr), synthetic_accuracy(lr))
            })
            .collect();
        let predictor = Predictor::fit(&history).unwrap();
        let candidates: Vec<SearchFeatures> = [4e-4, 9e-3, 2.8e-3, 1e-3]
            .into_iter()
            .map(with_lr)
            .collect();
        let (index, prediction) = best_candidate(&predictor, &candidates).unwrap().unwrap();
        assert_eq!(index, 2, "lr 2.8e-3 is nearest the optimum 3e-3");
        assert!((prediction.mean - synthetic_accuracy(2.8e-3)).abs() < 0.01);
        assert!(best_candidate(&predictor, &[]).unwrap().is_none());
    }
}
