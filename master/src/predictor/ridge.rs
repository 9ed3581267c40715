//! Bayesian ridge regression with evidence maximisation (MacKay's fixed point), the same
//! algorithm and defaults as scikit-learn's `BayesianRidge`, on standardised features.
//!
//! Notation (Bishop's, not scikit-learn's): α is the precision of the Gaussian prior on the
//! weights (scikit-learn's `lambda_`), β the precision of the noise (its `alpha_`). With Z the
//! standardised n × p design, y the centred targets and ZᵀZ = V diag(λ) Vᵀ:
//! - posterior mean m = (ZᵀZ + α/β I)⁻¹ Zᵀy, posterior covariance S = (βZᵀZ + αI)⁻¹;
//! - γ = Σ βλᵢ / (α + βλᵢ), the effective number of parameters;
//! - α ← (γ + 2a₁) / (|m|² + 2a₂), β ← (n − γ + 2b₁) / (|y − Zm|² + 2b₂),
//!
//! starting from α = 1, β = 1 / var(y), until the weights move less than the tolerance (L1).
//! The predictive distribution at z is N(ȳ + zᵀm, zᵀSz + 1/β).

use std::marker::PhantomData;

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use serde::{Deserialize, Serialize};

use super::features::{FeatureMap, TransferFeatures};
use super::{PredictorError, MIN_HISTORY};

/// A column whose standard deviation is below this fraction of max(1, |mean|) is constant: it
/// keeps scale 1 instead of being blown up to unit variance.
const CONSTANT_COLUMN_TOLERANCE: f64 = 1e-10;

/// How [`Predictor::fit_with`] iterates; the default is scikit-learn's `BayesianRidge` with a
/// tighter tolerance (the fit is tiny, so converging fully costs nothing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// Most fixed-point iterations (≥ 1); scikit-learn's default is 300.
    pub max_iterations: usize,
    /// Stop when the L1 change of the standardised weights between two iterations is below
    /// this (scikit-learn's `tol`, default 1e-3 there, 1e-6 here).
    pub tolerance: f64,
    /// Gamma hyperprior (shape, rate) on the weight precision α (scikit-learn's `lambda_1`,
    /// `lambda_2`).
    pub weight_precision_prior: (f64, f64),
    /// Gamma hyperprior (shape, rate) on the noise precision β (scikit-learn's `alpha_1`,
    /// `alpha_2`).
    pub noise_precision_prior: (f64, f64),
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            max_iterations: 300,
            tolerance: 1e-6,
            weight_precision_prior: (1e-6, 1e-6),
            noise_precision_prior: (1e-6, 1e-6),
        }
    }
}

impl FitOptions {
    fn validate(&self) -> Result<(), PredictorError> {
        let invalid = |name, value, reason| {
            Err(PredictorError::InvalidParameter {
                name,
                value,
                reason,
            })
        };
        if self.max_iterations == 0 {
            return invalid("max_iterations", 0.0, "must be at least 1");
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return invalid(
                "tolerance",
                self.tolerance,
                "must be finite and non-negative",
            );
        }
        let priors = [
            ("weight_precision_prior.0", self.weight_precision_prior.0),
            ("noise_precision_prior.0", self.noise_precision_prior.0),
        ];
        for (name, shape) in priors {
            if !(shape.is_finite() && shape >= 0.0) {
                return invalid(name, shape, "must be finite and non-negative");
            }
        }
        let rates = [
            ("weight_precision_prior.1", self.weight_precision_prior.1),
            ("noise_precision_prior.1", self.noise_precision_prior.1),
        ];
        for (name, rate) in rates {
            if !(rate.is_finite() && rate > 0.0) {
                return invalid(name, rate, "must be finite and positive");
            }
        }
        Ok(())
    }
}

/// A predicted fine-tuned validation accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Posterior predictive mean.
    pub mean: f64,
    /// Posterior predictive standard deviation (weight uncertainty and noise).
    pub std: f64,
}

/// The fitted regression on plain rows; [`Predictor`] feeds it feature vectors.
#[derive(Debug, Clone)]
pub(super) struct BayesianRidge {
    means: Vec<f64>,
    scales: Vec<f64>,
    target_mean: f64,
    /// Posterior mean of the weights on standardised features.
    weights: DVector<f64>,
    /// Eigenvectors of ZᵀZ, one per column.
    eigenvectors: DMatrix<f64>,
    /// Eigenvalues of ZᵀZ, clamped at 0.
    eigenvalues: DVector<f64>,
    alpha: f64,
    beta: f64,
    iterations: usize,
    converged: bool,
}

impl BayesianRidge {
    /// Fits rows (all of one length) to targets; both must be finite, checked by the caller.
    pub(super) fn fit(
        rows: &[Vec<f64>],
        targets: &[f64],
        options: &FitOptions,
    ) -> Result<Self, PredictorError> {
        options.validate()?;
        let observations = rows.len();
        if observations == 0 {
            return Err(PredictorError::TooFewObservations { have: 0, need: 1 });
        }
        assert_eq!(observations, targets.len(), "one target per row");
        let width = rows[0].len();
        assert!(
            rows.iter().all(|row| row.len() == width),
            "rows of one length"
        );
        let count = observations as f64;

        let mut means = vec![0.0; width];
        let mut scales = vec![1.0; width];
        for column in 0..width {
            let mean = rows.iter().map(|row| row[column]).sum::<f64>() / count;
            let variance = rows
                .iter()
                .map(|row| (row[column] - mean).powi(2))
                .sum::<f64>()
                / count;
            let deviation = variance.sqrt();
            means[column] = mean;
            if deviation > CONSTANT_COLUMN_TOLERANCE * mean.abs().max(1.0) {
                scales[column] = deviation;
            }
        }
        let design = DMatrix::from_fn(observations, width, |row, column| {
            (rows[row][column] - means[column]) / scales[column]
        });
        let target_mean = targets.iter().sum::<f64>() / count;
        let centred = DVector::from_iterator(
            observations,
            targets.iter().map(|target| target - target_mean),
        );
        let target_variance = centred.norm_squared() / count;

        let gram = design.tr_mul(&design);
        let eigen = SymmetricEigen::new(gram);
        let eigenvalues = eigen.eigenvalues.map(|value| value.max(0.0));
        let eigenvectors = eigen.eigenvectors;
        let projected = eigenvectors.tr_mul(&design.tr_mul(&centred));

        // The posterior mean and the residual sum of squares for given precisions.
        let solve = |alpha: f64, beta: f64| {
            let ratio = alpha / beta;
            let scaled = DVector::from_fn(width, |index, _| {
                projected[index] / (eigenvalues[index] + ratio)
            });
            let weights = &eigenvectors * scaled;
            let residual_sum = (&centred - &design * &weights).norm_squared();
            (weights, residual_sum)
        };

        let (shape_alpha, rate_alpha) = options.weight_precision_prior;
        let (shape_beta, rate_beta) = options.noise_precision_prior;
        let mut alpha = 1.0;
        let mut beta = 1.0 / (target_variance + f64::EPSILON);
        let mut previous: Option<DVector<f64>> = None;
        let mut iterations = 0;
        let mut converged = false;
        for iteration in 0..options.max_iterations {
            iterations = iteration + 1;
            let (weights, residual_sum) = solve(alpha, beta);
            let gamma: f64 = eigenvalues
                .iter()
                .map(|value| beta * value / (alpha + beta * value))
                .sum();
            alpha = (gamma + 2.0 * shape_alpha) / (weights.norm_squared() + 2.0 * rate_alpha);
            beta = (count - gamma + 2.0 * shape_beta) / (residual_sum + 2.0 * rate_beta);
            if let Some(previous) = &previous {
                if (previous - &weights).abs().sum() < options.tolerance {
                    converged = true;
                    break;
                }
            }
            previous = Some(weights);
        }
        let (weights, _) = solve(alpha, beta);

        let finite = alpha.is_finite()
            && beta.is_finite()
            && alpha > 0.0
            && beta > 0.0
            && target_mean.is_finite()
            && weights.iter().all(|weight| weight.is_finite())
            && scales.iter().all(|scale| scale.is_finite())
            && means.iter().all(|mean| mean.is_finite());
        if !finite {
            return Err(PredictorError::Numerical(format!(
                "alpha {alpha}, beta {beta} after {iterations} iterations \
                 (are some features or accuracies extremely large?)"
            )));
        }
        Ok(BayesianRidge {
            means,
            scales,
            target_mean,
            weights,
            eigenvectors,
            eigenvalues,
            alpha,
            beta,
            iterations,
            converged,
        })
    }

    /// The predictive distribution at a row of the fitted width.
    pub(super) fn predict(&self, row: &[f64]) -> Prediction {
        assert_eq!(row.len(), self.means.len(), "row of the fitted width");
        let standardised = DVector::from_fn(row.len(), |column, _| {
            (row[column] - self.means[column]) / self.scales[column]
        });
        let mean = self.target_mean + standardised.dot(&self.weights);
        let projected = self.eigenvectors.tr_mul(&standardised);
        let weight_variance: f64 = projected
            .iter()
            .zip(self.eigenvalues.iter())
            .map(|(value, eigenvalue)| value * value / (self.beta * eigenvalue + self.alpha))
            .sum();
        Prediction {
            mean,
            std: (weight_variance + 1.0 / self.beta).sqrt(),
        }
    }
}

/// The fitted predictor: a validation accuracy from a [`FeatureMap`]: the fine-tuned accuracy
/// from [`TransferFeatures`] (the default, S2), or a trial's accuracy from
/// [`SearchFeatures`](super::SearchFeatures) (`[search] predictor`).
#[derive(Debug, Clone)]
pub struct Predictor<F = TransferFeatures> {
    ridge: BayesianRidge,
    observations: usize,
    features: PhantomData<fn(&F)>,
}

impl<F: FeatureMap> Predictor<F> {
    /// Fits on the history, (features, validation accuracy reached), with the default
    /// [`FitOptions`]. Refuses fewer than [`MIN_HISTORY`] rows, and names the row and feature
    /// of any NaN, infinite or out-of-domain input.
    pub fn fit(history: &[(F, f64)]) -> Result<Self, PredictorError> {
        Self::fit_with(history, &FitOptions::default())
    }

    /// [`Predictor::fit`] with explicit options.
    pub fn fit_with(history: &[(F, f64)], options: &FitOptions) -> Result<Self, PredictorError> {
        if history.len() < MIN_HISTORY {
            return Err(PredictorError::TooFewObservations {
                have: history.len(),
                need: MIN_HISTORY,
            });
        }
        let mut rows = Vec::with_capacity(history.len());
        let mut targets = Vec::with_capacity(history.len());
        for (row, (features, accuracy)) in history.iter().enumerate() {
            let vector =
                features
                    .checked_vector()
                    .map_err(|error| PredictorError::InvalidFeature {
                        at: format!("history row {row}"),
                        error,
                    })?;
            if !accuracy.is_finite() {
                return Err(PredictorError::InvalidTarget {
                    row,
                    value: *accuracy,
                });
            }
            rows.push(vector);
            targets.push(*accuracy);
        }
        let ridge = BayesianRidge::fit(&rows, &targets, options)?;
        Ok(Predictor {
            ridge,
            observations: history.len(),
            features: PhantomData,
        })
    }

    /// The predicted validation accuracy of one candidate; refuses out-of-domain features,
    /// naming them.
    pub fn predict(&self, features: &F) -> Result<Prediction, PredictorError> {
        self.predict_at(features, || "candidate".to_string())
    }

    /// [`Predictor::predict`] with the row named by `at` in errors.
    pub(super) fn predict_at(
        &self,
        features: &F,
        at: impl FnOnce() -> String,
    ) -> Result<Prediction, PredictorError> {
        let vector = features
            .checked_vector()
            .map_err(|error| PredictorError::InvalidFeature { at: at(), error })?;
        Ok(self.ridge.predict(&vector))
    }

    /// How many history rows it was fitted on.
    pub fn observations(&self) -> usize {
        self.observations
    }

    /// The fitted precision of the prior on the weights (α; scikit-learn's `lambda_`).
    pub fn alpha(&self) -> f64 {
        self.ridge.alpha
    }

    /// The fitted noise precision (β; scikit-learn's `alpha_`): 1/√β is the noise level.
    pub fn beta(&self) -> f64 {
        self.ridge.beta
    }

    /// Fixed-point iterations run.
    pub fn iterations(&self) -> usize {
        self.ridge.iterations
    }

    /// Whether the weights settled within the tolerance before the iteration limit.
    pub fn converged(&self) -> bool {
        self.ridge.converged
    }

    /// The posterior mean weight of each feature, on standardised features (the accuracy change
    /// per standard deviation of the feature in the history), named; for logs.
    pub fn weights(&self) -> Vec<(&'static str, f64)> {
        let names = F::names();
        debug_assert_eq!(self.ridge.weights.len(), names.len());
        names
            .iter()
            .copied()
            .zip(self.ridge.weights.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
        (actual - expected).abs() <= tolerance * expected.abs().max(1.0)
    }

    /// Reference numbers from scikit-learn 1.9.1 `BayesianRidge(tol=1e-6, max_iter=300)` on
    /// features standardised with the population deviation, printed by this script:
    /// ```python
    /// import numpy as np
    /// from sklearn.linear_model import BayesianRidge
    /// n = 12
    /// k = np.arange(n)
    /// X = np.stack([np.sin(k * 0.9), np.cos(k * 1.3) * 2.0 + 1.0, k * 0.25], axis=1)
    /// y = 0.5 + 0.3 * X[:, 0] - 0.2 * X[:, 1] + 0.05 * X[:, 2] + 0.05 * np.sin(k * 7.1)
    /// mean, std = X.mean(0), X.std(0)
    /// m = BayesianRidge(tol=1e-6, max_iter=300).fit((X - mean) / std, y)
    /// q = np.array([[0.3, 1.5, 1.0], [2.0, -3.0, 10.0]])
    /// mu, sd = m.predict((q - mean) / std, return_std=True)
    /// print(m.lambda_, m.alpha_, m.n_iter_, mu, sd)
    /// # Fewer observations than features (scikit-learn's dual branch).
    /// k = np.arange(5)
    /// X = np.stack([np.sin(k * 0.9 + j) * (j + 1) for j in range(7)], axis=1)
    /// y = 0.7 + 0.1 * X[:, 0] - 0.05 * X[:, 3] + 0.02 * np.cos(k * 3.3)
    /// mean, std = X.mean(0), X.std(0)
    /// m = BayesianRidge(tol=1e-6, max_iter=300).fit((X - mean) / std, y)
    /// q = np.array([[0.1 * j for j in range(7)]])
    /// mu, sd = m.predict((q - mean) / std, return_std=True)
    /// print(m.lambda_, m.alpha_, m.n_iter_, mu, sd)
    /// ```
    #[test]
    fn matches_scikit_learn_bayesian_ridge() {
        let rows: Vec<Vec<f64>> = (0..12)
            .map(|k| {
                let k = f64::from(k);
                vec![(k * 0.9).sin(), (k * 1.3).cos() * 2.0 + 1.0, k * 0.25]
            })
            .collect();
        let targets: Vec<f64> = rows
            .iter()
            .enumerate()
            .map(|(k, x)| {
                0.5 + 0.3 * x[0] - 0.2 * x[1] + 0.05 * x[2] + 0.05 * (k as f64 * 7.1).sin()
            })
            .collect();
        let ridge = BayesianRidge::fit(&rows, &targets, &FitOptions::default()).unwrap();
        assert!(
            close(ridge.alpha, 23.26084615746799, 1e-8),
            "{}",
            ridge.alpha
        );
        assert!(close(ridge.beta, 2431.787104347196, 1e-8), "{}", ridge.beta);
        assert_eq!(ridge.iterations, 4);
        assert!(ridge.converged);
        let first = ridge.predict(&[0.3, 1.5, 1.0]);
        let second = ridge.predict(&[2.0, -3.0, 10.0]);
        assert!(close(first.mean, 0.35659493888683375, 1e-9), "{first:?}");
        assert!(close(first.std, 0.020544579987152804, 1e-9), "{first:?}");
        assert!(close(second.mean, 2.3168762264331146, 1e-9), "{second:?}");
        assert!(close(second.std, 0.06648914330550643, 1e-9), "{second:?}");

        let rows: Vec<Vec<f64>> = (0..5)
            .map(|k| {
                (0..7)
                    .map(|j| (f64::from(k) * 0.9 + f64::from(j)).sin() * f64::from(j + 1))
                    .collect()
            })
            .collect();
        let targets: Vec<f64> = rows
            .iter()
            .enumerate()
            .map(|(k, x)| 0.7 + 0.1 * x[0] - 0.05 * x[3] + 0.02 * (k as f64 * 3.3).cos())
            .collect();
        let ridge = BayesianRidge::fit(&rows, &targets, &FitOptions::default()).unwrap();
        assert!(
            close(ridge.alpha, 331.205141206203, 1e-8),
            "{}",
            ridge.alpha
        );
        assert!(
            close(ridge.beta, 2174.9536332285825, 1e-8),
            "{}",
            ridge.beta
        );
        assert_eq!(ridge.iterations, 4);
        let query: Vec<f64> = (0..7).map(|j| 0.1 * f64::from(j)).collect();
        let prediction = ridge.predict(&query);
        assert!(
            close(prediction.mean, 0.7092205410803922, 1e-9),
            "{prediction:?}"
        );
        assert!(
            close(prediction.std, 0.027788690187251636, 1e-9),
            "{prediction:?}"
        );
    }

    #[test]
    fn hyperparameters_converge_and_a_noiseless_linear_function_is_exact() {
        let rows: Vec<Vec<f64>> = (0..40)
            .map(|k| {
                let k = f64::from(k);
                vec![
                    (k * 0.37).sin() * 3.0,
                    (k * 1.1).cos(),
                    k / 40.0,
                    (k * 0.21).sin() + k / 9.0,
                ]
            })
            .collect();
        let truth = |x: &[f64]| 0.4 + 0.05 * x[0] - 0.1 * x[1] + 0.3 * x[2] + 0.02 * x[3];
        let targets: Vec<f64> = rows.iter().map(|row| truth(row)).collect();
        let ridge = BayesianRidge::fit(&rows, &targets, &FitOptions::default()).unwrap();
        assert!(
            ridge.converged,
            "converged in {} iterations",
            ridge.iterations
        );
        assert!(ridge.iterations < 300);
        assert!(ridge.alpha.is_finite() && ridge.alpha > 0.0);
        // No noise: the noise precision runs to its hyperprior's limit, (n − γ)/(2·rate).
        assert!(ridge.beta > 1e6, "beta {}", ridge.beta);
        for query in [
            vec![0.5, -0.2, 0.3, 1.0],
            vec![2.0, 0.9, 0.8, -0.5],
            rows[7].clone(),
        ] {
            let prediction = ridge.predict(&query);
            assert!(
                (prediction.mean - truth(&query)).abs() < 1e-6,
                "{prediction:?} against {}",
                truth(&query)
            );
        }
    }

    #[test]
    fn constant_columns_are_standardised_safely() {
        let rows: Vec<Vec<f64>> = (0..10)
            .map(|k| vec![f64::from(k), 3.0, 1e-300 * f64::from(k % 2)])
            .collect();
        let targets: Vec<f64> = (0..10).map(|k| 0.1 * f64::from(k)).collect();
        let ridge = BayesianRidge::fit(&rows, &targets, &FitOptions::default()).unwrap();
        assert_eq!(ridge.scales[1], 1.0);
        assert_eq!(ridge.scales[2], 1.0);
        assert!(ridge.weights[1].abs() < 1e-12);
        let prediction = ridge.predict(&[4.0, 3.0, 0.0]);
        assert!((prediction.mean - 0.4).abs() < 1e-3, "{prediction:?}");
        // Moving along a direction never seen has the prior's variance 1/α, not nothing.
        let unseen = ridge.predict(&[4.0, 5.0, 0.0]);
        assert!(unseen.std > prediction.std, "{unseen:?} {prediction:?}");
    }

    #[test]
    fn invalid_options_are_refused() {
        let rows = vec![vec![1.0], vec![2.0]];
        let options = FitOptions {
            tolerance: f64::NAN,
            ..FitOptions::default()
        };
        let error = BayesianRidge::fit(&rows, &[1.0, 2.0], &options).unwrap_err();
        assert!(error.to_string().contains("tolerance"), "{error}");
    }
}
