//! Ordering candidate (model, fine-tune settings) pairs: by the predictor's acquisition, or by
//! probe scores while the history is too thin.

use std::cmp::Ordering;
use std::fmt;

use super::features::TransferFeatures;
use super::ridge::{Prediction, Predictor};
use super::{PredictorError, MIN_HISTORY};

/// What [`rank`] orders by, highest first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Acquisition {
    /// The predicted mean: exploit only.
    Mean,
    /// Upper confidence bound `mean + kappa · std`: a finite κ > 0 favours candidates the
    /// history says little about (κ = 1 to 2 is usual); κ < 0 is a pessimistic lower bound.
    UpperConfidenceBound {
        /// Standard deviations added to the mean.
        kappa: f64,
    },
}

impl Acquisition {
    /// The value a prediction is ranked by.
    pub fn value(&self, prediction: &Prediction) -> f64 {
        match *self {
            Acquisition::Mean => prediction.mean,
            Acquisition::UpperConfidenceBound { kappa } => prediction.mean + kappa * prediction.std,
        }
    }

    fn validate(&self) -> Result<(), PredictorError> {
        match *self {
            Acquisition::UpperConfidenceBound { kappa } if !kappa.is_finite() => {
                Err(PredictorError::InvalidParameter {
                    name: "kappa",
                    value: kappa,
                    reason: "must be finite",
                })
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Acquisition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Acquisition::Mean => write!(formatter, "predicted mean"),
            Acquisition::UpperConfidenceBound { kappa } => {
                write!(formatter, "predicted mean + {kappa}·std")
            }
        }
    }
}

/// One candidate in a ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked<Id> {
    /// The caller's id of the candidate.
    pub id: Id,
    /// Its position in the input.
    pub input_index: usize,
    /// The predictor's prediction; `None` when ranked by probe scores.
    pub prediction: Option<Prediction>,
    /// The value it was ranked by: the acquisition, or LogME when ranked by probe scores.
    pub score: f64,
}

/// How a [`Ranking`] was made; its `Display` is the line the scheduler logs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RankingBasis {
    /// By the fitted predictor.
    Predictor {
        /// Fine-tunes it was fitted on.
        history: usize,
        /// The acquisition ranked by.
        acquisition: Acquisition,
    },
    /// By LogME (LEEP breaking ties), the history having fewer than [`MIN_HISTORY`] fine-tunes.
    ProbeScores {
        /// Fine-tunes in the history.
        history: usize,
    },
}

impl fmt::Display for RankingBasis {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RankingBasis::Predictor {
                history,
                acquisition,
            } => write!(
                formatter,
                "ranked by the predictor ({acquisition}, fitted on {history} fine-tunes)"
            ),
            RankingBasis::ProbeScores { history } => write!(
                formatter,
                "ranked by LogME: history too thin ({history} of {MIN_HISTORY})"
            ),
        }
    }
}

/// Candidates in the order to fine-tune them, and how that order was made.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking<Id> {
    /// How the order was made.
    pub basis: RankingBasis,
    /// Best first.
    pub order: Vec<Ranked<Id>>,
}

/// Highest score first; equal scores keep their input order.
fn by_score_then_input<Id>(left: &Ranked<Id>, right: &Ranked<Id>) -> Ordering {
    right
        .score
        .partial_cmp(&left.score)
        .unwrap_or(Ordering::Equal)
        .then(left.input_index.cmp(&right.input_index))
}

/// Orders candidates by the predictor's `acquisition`, highest first; equal values keep their
/// input order, so the result is a deterministic permutation of the input. Refuses a candidate
/// with out-of-domain features (naming it and the feature) and a non-finite κ.
pub fn rank<Id: Clone>(
    predictor: &Predictor,
    candidates: &[(Id, TransferFeatures)],
    acquisition: Acquisition,
) -> Result<Vec<Ranked<Id>>, PredictorError> {
    acquisition.validate()?;
    let mut order = Vec::with_capacity(candidates.len());
    for (input_index, (id, features)) in candidates.iter().enumerate() {
        let prediction = predictor.predict_at(features, || format!("candidate {input_index}"))?;
        order.push(Ranked {
            id: id.clone(),
            input_index,
            prediction: Some(prediction),
            score: acquisition.value(&prediction),
        });
    }
    order.sort_by(by_score_then_input);
    Ok(order)
}

/// Orders candidates by probe scores alone, for a history too thin to fit the predictor: LogME
/// highest first, then LEEP, then input order. Refuses a NaN or infinite LogME or LEEP, naming
/// the candidate.
pub fn fallback_rank<Id: Clone>(
    candidates: &[(Id, TransferFeatures)],
) -> Result<Vec<Ranked<Id>>, PredictorError> {
    let mut order = Vec::with_capacity(candidates.len());
    for (input_index, (id, features)) in candidates.iter().enumerate() {
        for (feature, value) in [("logme", features.logme), ("leep", features.leep)] {
            if !value.is_finite() {
                return Err(PredictorError::InvalidFeature {
                    at: format!("candidate {input_index}"),
                    error: super::FeatureError {
                        feature,
                        value,
                        reason: "must be finite",
                    },
                });
            }
        }
        order.push(Ranked {
            id: id.clone(),
            input_index,
            prediction: None,
            score: features.logme,
        });
    }
    order.sort_by(|left, right| {
        let leep = |ranked: &Ranked<Id>| candidates[ranked.input_index].1.leep;
        right
            .score
            .partial_cmp(&left.score)
            .unwrap_or(Ordering::Equal)
            .then(
                leep(right)
                    .partial_cmp(&leep(left))
                    .unwrap_or(Ordering::Equal),
            )
            .then(left.input_index.cmp(&right.input_index))
    });
    Ok(order)
}

/// Ranks candidates the way the scheduler does: fits the predictor on the history and ranks by
/// `acquisition` when the history has at least [`MIN_HISTORY`] fine-tunes, else ranks by probe
/// scores ([`fallback_rank`]); the [`RankingBasis`] says which.
pub fn rank_candidates<Id: Clone>(
    history: &[(TransferFeatures, f64)],
    candidates: &[(Id, TransferFeatures)],
    acquisition: Acquisition,
) -> Result<Ranking<Id>, PredictorError> {
    if history.len() < MIN_HISTORY {
        return Ok(Ranking {
            basis: RankingBasis::ProbeScores {
                history: history.len(),
            },
            order: fallback_rank(candidates)?,
        });
    }
    let predictor = Predictor::fit(history)?;
    Ok(Ranking {
        basis: RankingBasis::Predictor {
            history: history.len(),
            acquisition,
        },
        order: rank(&predictor, candidates, acquisition)?,
    })
}
