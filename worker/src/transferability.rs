//! Transferability scores of a source model for a new task, from one forward pass over the new
//! task's training examples (the S2 probe): how well the model's penultimate features or its
//! source-class predictions already explain the new labels, without fine-tuning anything.
//!
//! * [`logme`]: LogME (You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained
//!   Models for Transfer Learning", ICML 2021). For each class present, the one-hot label column
//!   `y` is regressed on the features `F` `[n, D]` by Bayesian linear regression with prior
//!   `w ~ N(0, α⁻¹ I)` and noise `N(0, β⁻¹)`; `(α, β)` maximise the evidence `p(y | F, α, β)`
//!   (MacKay's fixed-point iteration) and the score is the log evidence per example, averaged
//!   over the classes present. Higher is better: the features predict the labels linearly with
//!   little weight and little noise. It is a log density, unbounded in both directions; features
//!   unrelated to the labels score about the evidence of a noise-only model of the label
//!   frequencies.
//! * [`leep`]: LEEP (Nguyen, Hassner, Seeger and Archambeau, "LEEP: A New Measure to Evaluate
//!   Transferability of Learned Representations", ICML 2020). The source model's softmax
//!   `θ(x)` over its own classes `z` and the empirical conditional `P(y | z)` of the new labels
//!   form the "expected empirical predictor" `Σ_z P(y | z) θ_z(x)`; LEEP is the mean log
//!   likelihood of the new labels under it. It is at most 0, and 0 when the source prediction
//!   determines the new label.
//! * [`nce`]: NCE, negative conditional entropy (Tran, Nguyen and Hassner, "Transferability and
//!   Hardness of Supervised Classification Tasks", ICCV 2019): `−H(Y | Z)` of the new label `Y`
//!   given the source model's hard prediction `Z = argmax_z θ_z(x)` (ties go to the lowest
//!   source class), from the empirical joint counts. Between `−ln C` and 0, 0 when `Z`
//!   determines `Y`.
//!
//! [`scores`] computes all three from the features, the source logits and the labels.
//!
//! Everything is computed in `f64` on the CPU, whatever the kind and device of the inputs.
//! Labels are class indices (`int64` or another integer kind); only their values matter, so the
//! classes need not be contiguous, and a class without examples plays no part.
//!
//! # How LogME is computed
//!
//! One symmetric eigendecomposition per call: of `FᵀF` (`D × D`) when `n ≥ D`, of `F Fᵀ`
//! (`n × n`) when `n < D`. In that eigenbasis the posterior mean `m`, `γ = Σ β sᵢ / (α + β sᵢ)`,
//! `mᵀm` and `ln det A` (`A = α I + β FᵀF`) cost `O(rank)` per update; the residual
//! `‖y − F m‖²` is computed directly from the rotated features `F V` when `n ≥ D` (no
//! cancellation when the features fit a class almost exactly) and in closed form from the
//! complete eigenbasis of `F Fᵀ` when `n < D`. Eigenvalues that rounding makes negative count as
//! 0, so rank-deficient features need nothing special. The iteration starts at `α = β = 1`,
//! updates `α ← γ / mᵀm`, `β ← (n − γ) / ‖y − F m‖²` at most [`LOGME_MAX_UPDATES`] times and
//! stops after the first update whose relative change of both `α` and `β` is below
//! [`LOGME_TOLERANCE`]; the evidence is then evaluated at the last `(α, β)`. This is the rule of
//! the plain NumPy reference `bench/reference/transferability.py`, whose constants the tests
//! reproduce. When the features cannot fit a class at all (`mᵀm = 0`, e.g. all-zero features),
//! the evidence is maximised at `α → ∞` and the score is its limit, the noise-only evidence.

use std::collections::BTreeMap;
use std::fmt::Display;

use tch::{Device, Kind, Tensor};

use crate::error::WorkerError;

#[cfg(test)]
mod tests;

/// At most this many `(α, β)` updates per class in LogME's fixed-point iteration.
pub const LOGME_MAX_UPDATES: usize = 11;
/// LogME's iteration stops once an update changes both `α` and `β` by less than this fraction.
pub const LOGME_TOLERANCE: f64 = 1e-3;
/// Class indices must be below this; a larger one is taken for a wrong tensor (ids, pixels).
pub const MAX_CLASSES: i64 = 1 << 20;
/// How far a row of source probabilities may sum from 1 (a float32 softmax over many classes
/// is off by a few 1e-6).
pub const ROW_SUM_TOLERANCE: f64 = 1e-3;

/// The three scores of one source model on one new task; higher is better for each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transferability {
    /// LogME of the features: mean log evidence per example over the classes present.
    pub logme: f64,
    /// LEEP of the source predictions (at most 0).
    pub leep: f64,
    /// NCE of the source's hard predictions (between `−ln C` and 0).
    pub nce: f64,
}

/// LogME of `features` `[n, D]` (any floating kind, any device) for `labels` `[n]` (integer
/// class indices): the mean over the classes present of the log evidence per example of a
/// Bayesian linear regression of the class indicator on the features (see the module
/// documentation). Needs at least two classes present.
pub fn logme(features: &Tensor, labels: &Tensor) -> Result<f64, WorkerError> {
    let features = float_matrix("logme", "features", features)?;
    let labels = class_labels("logme", labels, "features", features.rows)?;
    logme_checked(&features, &labels)
}

/// LEEP of `source_probs` `[n, Z]` (rows: the source model's softmax over its own classes, each
/// summing to 1) for `labels` `[n]` (integer class indices). At most 0; higher is better.
pub fn leep(source_probs: &Tensor, labels: &Tensor) -> Result<f64, WorkerError> {
    let probs = distributions("leep", source_probs)?;
    let labels = class_labels("leep", labels, "source probabilities", probs.rows)?;
    Ok(leep_checked(&probs, &labels))
}

/// NCE (negative conditional entropy of the labels given the source's argmax) of
/// `source_probs` `[n, Z]` for `labels` `[n]`. Between `−ln C` and 0; higher is better.
pub fn nce(source_probs: &Tensor, labels: &Tensor) -> Result<f64, WorkerError> {
    let probs = distributions("nce", source_probs)?;
    let labels = class_labels("nce", labels, "source probabilities", probs.rows)?;
    Ok(nce_checked(&probs, &labels))
}

/// All three scores of a source model: LogME of its `features` `[n, D]`, LEEP and NCE of the
/// softmax (taken in `f64`) of its `source_logits` `[n, Z]`, for `labels` `[n]`.
pub fn scores(
    features: &Tensor,
    source_logits: &Tensor,
    labels: &Tensor,
) -> Result<Transferability, WorkerError> {
    let features = float_matrix("scores", "features", features)?;
    let logits = float_matrix("scores", "source logits", source_logits)?;
    if logits.rows != features.rows {
        return Err(invalid(
            "scores",
            format!(
                "features have {} rows but source logits have {}",
                features.rows, logits.rows
            ),
        ));
    }
    let labels = class_labels("scores", labels, "features", features.rows)?;
    let probs = logits.values.f_softmax(-1, Kind::Double)?;
    let probs = Distributions {
        rows: logits.rows,
        cols: logits.cols,
        values: flat_values(&probs)?,
    };
    Ok(Transferability {
        logme: logme_checked(&features, &labels)?,
        leep: leep_checked(&probs, &labels),
        nce: nce_checked(&probs, &labels),
    })
}

// ----------------------------------------------------------------------------- validation

/// A bad input to one of the scores, named.
fn invalid(score: &str, reason: impl Display) -> WorkerError {
    WorkerError::Transferability(format!("{score}: {reason}"))
}

/// A finite floating-point matrix, detached, as `f64` on the CPU.
struct Matrix {
    rows: usize,
    cols: usize,
    values: Tensor,
}

fn float_matrix(score: &str, name: &str, tensor: &Tensor) -> Result<Matrix, WorkerError> {
    let kind = tensor.f_kind()?;
    if !matches!(
        kind,
        Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double
    ) {
        return Err(invalid(
            score,
            format!("{name} must be floating point, got {kind:?}"),
        ));
    }
    let size = tensor.size();
    let &[rows, cols] = size.as_slice() else {
        return Err(invalid(
            score,
            format!("{name} must be a matrix [n, d], got shape {size:?}"),
        ));
    };
    if rows == 0 {
        return Err(invalid(score, format!("{name} hold no examples")));
    }
    if cols == 0 {
        return Err(invalid(score, format!("{name} have no columns")));
    }
    let values = tensor
        .f_detach()?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Double)?
        .f_contiguous()?;
    let bad = values.f_isfinite()?.f_logical_not()?;
    let count = bad.f_sum(Kind::Int64)?.f_int64_value(&[])?;
    if count > 0 {
        let first = bad.f_nonzero()?;
        let (row, col) = (first.f_int64_value(&[0, 0])?, first.f_int64_value(&[0, 1])?);
        return Err(invalid(
            score,
            format!(
                "{name} hold {count} non-finite value{} (the first at row {row}, column {col})",
                if count == 1 { "" } else { "s" }
            ),
        ));
    }
    Ok(Matrix {
        rows: rows as usize,
        cols: cols as usize,
        values,
    })
}

/// The elements of a tensor in row-major order.
fn flat_values(tensor: &Tensor) -> Result<Vec<f64>, WorkerError> {
    Ok(Vec::<f64>::try_from(&tensor.f_reshape([-1])?)?)
}

/// Rows of probabilities, row-major.
struct Distributions {
    rows: usize,
    cols: usize,
    values: Vec<f64>,
}

impl Distributions {
    fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.cols..(i + 1) * self.cols]
    }
}

fn distributions(score: &str, probs: &Tensor) -> Result<Distributions, WorkerError> {
    let name = "source probabilities";
    let matrix = float_matrix(score, name, probs)?;
    let probs = Distributions {
        rows: matrix.rows,
        cols: matrix.cols,
        values: flat_values(&matrix.values)?,
    };
    for i in 0..probs.rows {
        let row = probs.row(i);
        if let Some(k) = row.iter().position(|&p| p < 0.0) {
            return Err(invalid(
                score,
                format!("{name} are negative at row {i}, column {k} ({})", row[k]),
            ));
        }
        let sum: f64 = row.iter().sum();
        if (sum - 1.0).abs() > ROW_SUM_TOLERANCE {
            return Err(invalid(
                score,
                format!(
                    "row {i} of the {name} sums to {sum}, not 1 (pass the softmax, not the logits)"
                ),
            ));
        }
    }
    Ok(probs)
}

/// Labels as dense indices into the classes present.
struct Labels {
    /// The dense class index of each example.
    classes: Vec<usize>,
    /// The label value of each dense class, ascending.
    values: Vec<i64>,
    /// How many examples each dense class has.
    counts: Vec<usize>,
}

fn class_labels(
    score: &str,
    labels: &Tensor,
    other: &str,
    rows: usize,
) -> Result<Labels, WorkerError> {
    let kind = labels.f_kind()?;
    if !matches!(
        kind,
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
    ) {
        return Err(invalid(
            score,
            format!("labels must be integer class indices, got {kind:?}"),
        ));
    }
    if labels.dim() != 1 {
        return Err(invalid(
            score,
            format!("labels must be a vector [n], got shape {:?}", labels.size()),
        ));
    }
    let values = Vec::<i64>::try_from(&labels.f_detach()?.f_to_device(Device::Cpu)?)?;
    if values.len() != rows {
        return Err(invalid(
            score,
            format!("{other} have {rows} rows but labels have {}", values.len()),
        ));
    }
    if let Some(i) = values.iter().position(|&y| y < 0) {
        return Err(invalid(
            score,
            format!("label {} of example {i} is negative", values[i]),
        ));
    }
    if let Some(i) = values.iter().position(|&y| y >= MAX_CLASSES) {
        return Err(invalid(
            score,
            format!(
                "label {} of example {i} is out of range (class indices must be below {MAX_CLASSES})",
                values[i]
            ),
        ));
    }
    let mut counts = BTreeMap::new();
    for &y in &values {
        *counts.entry(y).or_insert(0usize) += 1;
    }
    if counts.len() < 2 {
        return Err(invalid(
            score,
            format!(
                "all {rows} labels are class {}; at least 2 classes must be present",
                values[0]
            ),
        ));
    }
    let index: BTreeMap<i64, usize> = counts.keys().enumerate().map(|(k, &y)| (y, k)).collect();
    Ok(Labels {
        classes: values.iter().map(|y| index[y]).collect(),
        values: counts.keys().copied().collect(),
        counts: counts.into_values().collect(),
    })
}

// ----------------------------------------------------------------------------- LogME

/// The features in the eigenbasis of their Gram matrix.
enum Basis {
    /// `n ≥ D`: the rotated features `F V` `[n, D]`, `V` the eigenvectors of `FᵀF`.
    Tall(Tensor),
    /// `n < D`: the eigenvectors `U` of `F Fᵀ` `[n, n]`, a complete orthonormal basis.
    Wide,
}

fn logme_checked(features: &Matrix, labels: &Labels) -> Result<f64, WorkerError> {
    let (n, d) = (features.rows, features.cols);
    let f = &features.values;
    let tall = n >= d;
    let gram = if tall {
        f.f_transpose(0, 1)?.f_mm(f)?
    } else {
        f.f_mm(&f.f_transpose(0, 1)?)?
    };
    let (eigenvalues, vectors) = gram.f_linalg_eigh("L")?;
    let s: Vec<f64> = flat_values(&eigenvalues)?
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    let (basis, rotated) = if tall {
        let rotated = f.f_mm(&vectors)?;
        (Basis::Tall(rotated.shallow_clone()), rotated)
    } else {
        (Basis::Wide, vectors)
    };

    // The indicator columns of the classes present, [n, C].
    let num_classes = labels.counts.len();
    let mut indicators = vec![0.0; n * num_classes];
    for (i, &k) in labels.classes.iter().enumerate() {
        indicators[i * num_classes + k] = 1.0;
    }
    let y = Tensor::f_from_slice(&indicators)?.f_reshape([n as i64, num_classes as i64])?;
    // Coordinates of each indicator in the eigenbasis, [rank, C]: zᵢ = vᵢᵀ Fᵀ y when n ≥ D,
    // cᵢ = uᵢᵀ y when n < D.
    let coordinates = flat_values(&rotated.f_transpose(0, 1)?.f_mm(&y)?)?;

    let mut total = 0.0;
    for k in 0..num_classes {
        let coord: Vec<f64> = (0..s.len())
            .map(|i| coordinates[i * num_classes + k])
            .collect();
        // mᵀm = Σ β² qᵢ / (α + β sᵢ)², with qᵢ = zᵢ² = sᵢ cᵢ².
        let q: Vec<f64> = match basis {
            Basis::Tall(_) => coord.iter().map(|z| z * z).collect(),
            Basis::Wide => coord.iter().zip(&s).map(|(c, s)| s * c * c).collect(),
        };
        let column = y.f_select(1, k as i64)?;
        let residual = |alpha: f64, beta: f64| -> Result<f64, WorkerError> {
            match &basis {
                // ‖y − F m‖² with F m = (F V) (β zᵢ / (α + β sᵢ)).
                Basis::Tall(rotated) => {
                    let weights: Vec<f64> = coord
                        .iter()
                        .zip(&s)
                        .map(|(z, s)| beta * z / (alpha + beta * s))
                        .collect();
                    let fit = rotated.f_mv(&Tensor::f_from_slice(&weights)?)?;
                    Ok(column
                        .f_sub(&fit)?
                        .f_square()?
                        .f_sum(Kind::Double)?
                        .f_double_value(&[])?)
                }
                // y − F m = Σ uᵢ cᵢ α / (α + β sᵢ) over the complete basis U.
                Basis::Wide => Ok(coord
                    .iter()
                    .zip(&s)
                    .map(|(c, s)| {
                        let r = c * alpha / (alpha + beta * s);
                        r * r
                    })
                    .sum()),
            }
        };
        let evidence = class_evidence(n as f64, &s, &q, labels.counts[k] as f64, residual)?;
        if !evidence.is_finite() {
            return Err(invalid(
                "logme",
                format!(
                    "the evidence of class {} is not finite ({evidence})",
                    labels.values[k]
                ),
            ));
        }
        total += evidence / n as f64;
    }
    Ok(total / num_classes as f64)
}

/// The log evidence of one class at the `(α, β)` the fixed-point iteration reaches. `s` are the
/// Gram eigenvalues (the missing ones are 0), `q` their weights in `mᵀm`, `ones` the squared
/// norm of the indicator (its example count) and `residual(α, β)` is `‖y − F m‖²`.
fn class_evidence(
    n: f64,
    s: &[f64],
    q: &[f64],
    ones: f64,
    mut residual: impl FnMut(f64, f64) -> Result<f64, WorkerError>,
) -> Result<f64, WorkerError> {
    let gamma = |alpha: f64, beta: f64| -> f64 {
        s.iter()
            .map(|&s| beta * s / (alpha + beta * s))
            .sum::<f64>()
    };
    let weight_norm = |alpha: f64, beta: f64| -> f64 {
        s.iter()
            .zip(q)
            .map(|(&s, &q)| {
                let scale = beta / (alpha + beta * s);
                scale * scale * q
            })
            .sum::<f64>()
    };
    // The limit α → ∞ (w = 0): y ~ N(0, β⁻¹ I) with β = n / ‖y‖².
    let noise_only =
        0.5 * n * (n / ones).ln() - 0.5 * n - 0.5 * n * (2.0 * std::f64::consts::PI).ln();

    let (mut alpha, mut beta) = (1.0_f64, 1.0_f64);
    for _ in 0..LOGME_MAX_UPDATES {
        let g = gamma(alpha, beta);
        let mm = weight_norm(alpha, beta);
        let res = residual(alpha, beta)?;
        let new_alpha = g / mm;
        if mm <= 0.0 || new_alpha.is_infinite() {
            return Ok(noise_only);
        }
        let new_beta = (n - g) / res;
        if !(new_alpha > 0.0 && new_beta.is_finite() && new_beta > 0.0) {
            return Err(invalid(
                "logme",
                format!(
                    "the evidence iteration left the finite range (alpha {new_alpha}, beta {new_beta})"
                ),
            ));
        }
        let change = ((new_alpha - alpha).abs() / alpha).max((new_beta - beta).abs() / beta);
        alpha = new_alpha;
        beta = new_beta;
        if change < LOGME_TOLERANCE {
            break;
        }
    }
    let mm = weight_norm(alpha, beta);
    let res = residual(alpha, beta)?;
    // D/2 ln α − ½ ln det A = −½ Σ ln(1 + β sᵢ / α): the zero eigenvalues cancel exactly.
    let log_det_ratio: f64 = s.iter().map(|&s| (beta * s / alpha).ln_1p()).sum();
    Ok(-0.5 * log_det_ratio + 0.5 * n * beta.ln()
        - 0.5 * alpha * mm
        - 0.5 * beta * res
        - 0.5 * n * (2.0 * std::f64::consts::PI).ln())
}

// ----------------------------------------------------------------------------- LEEP and NCE

fn leep_checked(probs: &Distributions, labels: &Labels) -> f64 {
    let (n, z) = (probs.rows, probs.cols);
    let num_classes = labels.counts.len();
    // The empirical joint P(y, z) = 1/n Σᵢ θ_z(xᵢ) [yᵢ = y].
    let mut joint = vec![0.0; num_classes * z];
    for (i, &y) in labels.classes.iter().enumerate() {
        for (cell, &p) in joint[y * z..(y + 1) * z].iter_mut().zip(probs.row(i)) {
            *cell += p / n as f64;
        }
    }
    let marginal: Vec<f64> = (0..z)
        .map(|k| (0..num_classes).map(|y| joint[y * z + k]).sum())
        .collect();
    // P(y | z); a source class no example predicts (P(z) = 0) contributes nothing.
    let conditional: Vec<f64> = (0..num_classes * z)
        .map(|cell| {
            let m = marginal[cell % z];
            if m > 0.0 {
                joint[cell] / m
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = labels
        .classes
        .iter()
        .enumerate()
        .map(|(i, &y)| {
            let eep: f64 = conditional[y * z..(y + 1) * z]
                .iter()
                .zip(probs.row(i))
                .map(|(c, p)| c * p)
                .sum();
            eep.ln()
        })
        .sum();
    total / n as f64
}

fn nce_checked(probs: &Distributions, labels: &Labels) -> f64 {
    let (n, z) = (probs.rows, probs.cols);
    let num_classes = labels.counts.len();
    let mut counts = vec![0usize; num_classes * z];
    for (i, &y) in labels.classes.iter().enumerate() {
        // The first maximum, as torch's argmax.
        let row = probs.row(i);
        let hard = (1..z).fold(0, |best, k| if row[k] > row[best] { k } else { best });
        counts[y * z + hard] += 1;
    }
    let marginal: Vec<usize> = (0..z)
        .map(|k| (0..num_classes).map(|y| counts[y * z + k]).sum())
        .collect();
    counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(cell, &c)| {
            let c = c as f64;
            c / n as f64 * (c / marginal[cell % z] as f64).ln()
        })
        .sum()
}
