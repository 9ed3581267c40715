//! The transfer predictor (S2): predicts the validation accuracy a (source model, fine-tune
//! settings) pair will reach on a new task, with an uncertainty, before anything is fine-tuned,
//! so the scheduler fine-tunes the most promising pairs first.
//!
//! **Features** ([`TransferFeatures`], named by [`FEATURE_NAMES`]): the source model (log
//! parameters, log FLOPs, depth, blocks, source accuracy), the fine-tune settings (log learning
//! rate and its square, log epochs, log batch size, log weight decay, the objective one-hot over
//! [`OBJECTIVES`] plus an "other" slot), the probe scores a worker measured on the new task in
//! seconds (LogME, LEEP, NCE), the task (log examples, log classes, channels, log image size),
//! and two interactions with LogME (× log learning rate, × log examples). Sizes and rates enter
//! as logarithms because their effect is multiplicative; the squared log learning rate lets a
//! linear model place an optimum inside the searched range.
//!
//! **Model** ([`Predictor`]): Bayesian ridge regression, as scikit-learn's `BayesianRidge`:
//! features standardised on the training rows (a constant column keeps scale 1), the target
//! centred (the intercept is its mean), a Gaussian prior of precision α on the weights and
//! Gaussian noise of precision β, both set by maximising the evidence with MacKay's fixed-point
//! updates under the same weak Gamma(1e-6, 1e-6) hyperpriors. The linear algebra (a symmetric
//! eigendecomposition of ZᵀZ, from which every posterior quantity for any α, β follows) is
//! nalgebra's. The prediction is the posterior predictive mean and standard deviation.
//!
//! **Why this model.** The history is small (tens of fine-tunes at first, a few hundred later)
//! and every new fine-tune refits it, so the model must be cheap, stable with fewer observations
//! than features and honest about its uncertainty: Bayesian ridge needs no tuned hyperparameters
//! (the evidence sets them), gives a calibrated-by-construction predictive variance that grows
//! away from the data (which an upper-confidence-bound acquisition in [`rank`] turns into
//! exploration), is deterministic given the history (no rng at all), and its standardised weights
//! ([`Predictor::weights`]) can be logged and read. Trees or a Gaussian process would need more
//! data to beat it and give no such readable account.
//!
//! **In ordinary exploration** ([`SearchFeatures`], `[search] predictor = true`) the same
//! regression, fitted on the experiment's own recent trials, picks the best predicted of several
//! mutated candidates per proposal (see [`search`]).
//!
//! While the history has fewer than [`MIN_HISTORY`] fine-tunes, [`fallback_rank`] ranks by the
//! probe scores alone (LogME, then LEEP); [`rank_candidates`] picks between the two and says which
//! it used ([`RankingBasis`]). [`weighted_kendall_tau`] and [`top1_regret`] are the metrics of the
//! predictor benchmark.

mod features;
mod metrics;
mod rank;
mod ridge;
mod search;
#[cfg(test)]
mod tests;

use thiserror::Error;

use crate::MasterError;

pub use features::{
    FeatureError, FeatureMap, TransferFeatures, FEATURE_COUNT, FEATURE_NAMES, OBJECTIVES,
    OPTIMIZERS,
};
pub use metrics::{top1_regret, weighted_kendall_tau};
pub use rank::{fallback_rank, rank, rank_candidates, Acquisition, Ranked, Ranking, RankingBasis};
pub use ridge::{FitOptions, Prediction, Predictor};
pub use search::{
    best_candidate, SearchFeatures, SEARCH_FEATURE_COUNT, SEARCH_FEATURE_NAMES, SEARCH_HISTORY,
};

/// The fewest fine-tunes the predictor is fitted on; below this the scheduler ranks by probe
/// scores ([`fallback_rank`]).
pub const MIN_HISTORY: usize = 8;

/// Why the predictor cannot be fitted or used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PredictorError {
    /// Fewer fine-tunes in the history than [`MIN_HISTORY`].
    #[error("history too thin: {have} fine-tunes, the predictor needs at least {need}")]
    TooFewObservations { have: usize, need: usize },
    /// A feature of a history row or a candidate is missing, infinite or out of its domain.
    #[error("{at}: {error}")]
    InvalidFeature {
        /// Which row: `history row 3`, `candidate 5`.
        at: String,
        #[source]
        error: FeatureError,
    },
    /// A history row's fine-tuned accuracy is NaN or infinite.
    #[error("history row {row}: fine-tuned accuracy is {value}, must be finite")]
    InvalidTarget { row: usize, value: f64 },
    /// A parameter of the call (κ of the acquisition, a fit option) is out of its domain.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },
    /// The fit produced a non-finite quantity (should not happen on validated input).
    #[error("numerical failure fitting the predictor: {0}")]
    Numerical(String),
}

impl From<PredictorError> for MasterError {
    fn from(error: PredictorError) -> Self {
        let message = error.to_string();
        match error {
            PredictorError::TooFewObservations { .. } => MasterError::FailedPrecondition(message),
            PredictorError::InvalidFeature { .. }
            | PredictorError::InvalidTarget { .. }
            | PredictorError::InvalidParameter { .. } => MasterError::InvalidArgument(message),
            PredictorError::Numerical(_) => MasterError::Internal(message),
        }
    }
}
