//! LogME, LEEP and NCE against the constants of `bench/reference/transferability.py` (a plain
//! NumPy implementation from the papers' definitions: an explicit inverse and slogdet, no
//! eigendecomposition), on inputs rebuilt here from the script's closed-form formulas, plus the
//! properties the scores must have whatever the reference says.

use super::*;

// Printed by `/root/.cache/explore/torch-venv/bin/python bench/reference/transferability.py`.
/// n=40 D=6 C=3
const LOGME_TALL: f64 = -0.869351783574;
/// n=12 D=20 C=3
const LOGME_WIDE: f64 = -0.871578308923;
/// n=10 D=10 C=4
const LOGME_SQUARE: f64 = -0.667705730301;
/// n=50 D=8 features+1 C=3
const LOGME_OFFSET_TALL: f64 = -0.739322569799;
/// n=15 D=24 features+1 C=3
const LOGME_OFFSET_WIDE: f64 = -0.77836195814;
/// n=30 D=5 rank 3 C=3
const LOGME_RANK_DEFICIENT: f64 = -0.867770603626;
/// n=30 D=4 one-hot+perturbation C=3
const LOGME_INFORMATIVE: f64 = 1.48204846689;
/// same features, labels[i] = labels[(7i+3)%30]
const LOGME_SHUFFLED: f64 = -0.787047656704;
/// n=25 Z=5 C=3
const LEEP_SOFTMAX: f64 = -1.05012157249;
/// n=25 Z=5 C=3
const NCE_SOFTMAX: f64 = -0.891487455459;
/// n=20 Z=6 (last column 0) C=4
const LEEP_ZERO_COLUMN: f64 = -1.25745728859;
/// n=20 Z=6 (last column 0) C=4
const NCE_ZERO_COLUMN: f64 = -0.787729052538;

/// Agreement asked of the Rust scores and the reference constants (printed to 12 digits).
const RELATIVE_TOLERANCE: f64 = 1e-9;

// ----------------------------------------------------------------------------- inputs

fn labels_formula(n: usize, classes: usize) -> Vec<i64> {
    (0..n).map(|i| ((i * 7 + i / 3) % classes) as i64).collect()
}

fn features_formula(n: usize, d: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| {
            (0..d)
                .map(|j| {
                    (0.37 * ((i + 1) * (j + 2)) as f64).sin()
                        + 0.1 * (1.3 * i as f64 - 0.7 * j as f64).cos()
                })
                .collect()
        })
        .collect()
}

/// Five columns, the last two linear combinations of the first three (rank 3).
fn rank_deficient_features(n: usize) -> Vec<Vec<f64>> {
    features_formula(n, 3)
        .into_iter()
        .map(|b| vec![b[0], b[1], b[2], b[0], b[1] - 0.5 * b[2]])
        .collect()
}

/// One-hot of the label plus a small deterministic perturbation, plus one noise column.
fn informative_features(labels: &[i64], classes: usize) -> Vec<Vec<f64>> {
    labels
        .iter()
        .enumerate()
        .map(|(i, &y)| {
            (0..=classes)
                .map(|j| {
                    let hot = if j as i64 == y { 1.0 } else { 0.0 };
                    hot + 0.05 * (0.37 * ((i + 1) * (j + 2)) as f64).sin()
                })
                .collect()
        })
        .collect()
}

/// i -> (7 i + 3) mod n.
fn permutation(n: usize) -> Vec<usize> {
    (0..n).map(|i| (7 * i + 3) % n).collect()
}

fn source_logits(n: usize, z: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| {
            (0..z)
                .map(|k| {
                    2.0 * (0.5 * ((i + 1) * (k + 1)) as f64).sin()
                        + (0.3 * (i * k) as f64 + 0.2 * k as f64).cos()
                })
                .collect()
        })
        .collect()
}

fn softmax_probs(n: usize, z: usize) -> Vec<Vec<f64>> {
    source_logits(n, z)
        .into_iter()
        .map(|row| {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.iter().map(|x| x / sum).collect()
        })
        .collect()
}

/// Positive weights in every column but the last, which is exactly zero; rows normalised.
fn zero_column_probs(n: usize, z: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| {
            let row: Vec<f64> = (0..z)
                .map(|k| {
                    if k + 1 < z {
                        1.5 + (0.9 * i as f64 + 1.7 * k as f64).sin()
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum: f64 = row.iter().sum();
            row.iter().map(|x| x / sum).collect()
        })
        .collect()
}

fn matrix(rows: &[Vec<f64>]) -> Tensor {
    let cols = rows[0].len() as i64;
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).reshape([rows.len() as i64, cols])
}

fn offset(rows: Vec<Vec<f64>>, by: f64) -> Vec<Vec<f64>> {
    rows.into_iter()
        .map(|r| r.into_iter().map(|x| x + by).collect())
        .collect()
}

fn vector(labels: &[i64]) -> Tensor {
    Tensor::from_slice(labels)
}

fn assert_close(name: &str, got: f64, want: f64) {
    let relative = (got - want).abs() / want.abs();
    assert!(
        relative <= RELATIVE_TOLERANCE,
        "{name}: got {got:.12}, reference {want:.12} (relative difference {relative:.2e})"
    );
}

fn logme_of(features: &[Vec<f64>], labels: &[i64]) -> f64 {
    logme(&matrix(features), &vector(labels)).unwrap()
}

fn message(result: Result<f64, WorkerError>) -> String {
    let message = result.unwrap_err().to_string();
    assert!(
        message.starts_with(char::is_lowercase) && !message.ends_with('.'),
        "error messages are lowercase: {message}"
    );
    message
}

// ----------------------------------------------------------------------------- LogME

#[test]
fn logme_matches_reference_when_n_is_at_least_d() {
    let cases = [
        (
            "tall",
            features_formula(40, 6),
            labels_formula(40, 3),
            LOGME_TALL,
        ),
        (
            "square",
            features_formula(10, 10),
            labels_formula(10, 4),
            LOGME_SQUARE,
        ),
        (
            "offset tall",
            offset(features_formula(50, 8), 1.0),
            labels_formula(50, 3),
            LOGME_OFFSET_TALL,
        ),
    ];
    for (name, features, labels, want) in cases {
        assert_close(name, logme_of(&features, &labels), want);
    }
}

#[test]
fn logme_matches_reference_when_n_is_below_d() {
    assert_close(
        "wide",
        logme_of(&features_formula(12, 20), &labels_formula(12, 3)),
        LOGME_WIDE,
    );
    assert_close(
        "offset wide",
        logme_of(
            &offset(features_formula(15, 24), 1.0),
            &labels_formula(15, 3),
        ),
        LOGME_OFFSET_WIDE,
    );
}

#[test]
fn logme_matches_reference_on_rank_deficient_features() {
    assert_close(
        "rank deficient",
        logme_of(&rank_deficient_features(30), &labels_formula(30, 3)),
        LOGME_RANK_DEFICIENT,
    );
    // The same features transposed in role: fewer examples than columns and rank 3.
    let wide = rank_deficient_features(4);
    let labels = [0, 1, 0, 1];
    let value = logme_of(&wide, &labels);
    assert!(value.is_finite(), "{value}");
}

#[test]
fn logme_matches_reference_on_informative_and_shuffled_labels() {
    let labels = labels_formula(30, 3);
    let features = informative_features(&labels, 3);
    let shuffled: Vec<i64> = permutation(30).iter().map(|&i| labels[i]).collect();
    let informative = logme_of(&features, &labels);
    let noise = logme_of(&features, &shuffled);
    assert_close("informative", informative, LOGME_INFORMATIVE);
    assert_close("shuffled", noise, LOGME_SHUFFLED);
}

#[test]
fn logme_is_higher_for_features_that_encode_the_label_than_for_noise() {
    for (n, classes) in [(30, 3), (60, 5), (12, 4)] {
        let labels = labels_formula(n, classes);
        let encoded = informative_features(&labels, classes);
        let noise = features_formula(n, classes + 1);
        let (good, bad) = (logme_of(&encoded, &labels), logme_of(&noise, &labels));
        assert!(good > bad + 0.5, "n={n} C={classes}: {good} vs {bad}");
    }
}

#[test]
fn logme_of_zero_features_is_the_noise_only_evidence() {
    let labels = labels_formula(20, 4);
    let zeros = vec![vec![0.0; 3]; 20];
    let n = 20.0_f64;
    let mut want = 0.0;
    for class in 0..4 {
        let ones = labels.iter().filter(|&&y| y == class).count() as f64;
        want += 0.5 * (n / ones).ln() - 0.5 - 0.5 * (2.0 * std::f64::consts::PI).ln();
    }
    assert_close("zero features", logme_of(&zeros, &labels), want / 4.0);
}

#[test]
fn logme_accepts_float32_features_and_sparse_class_indices() {
    let features = features_formula(40, 6);
    let labels = labels_formula(40, 3);
    let single = matrix(&features).to_kind(Kind::Float);
    let value = logme(&single, &vector(&labels)).unwrap();
    assert!((value - LOGME_TALL).abs() < 1e-5, "{value}");
    // Only the label values' identity matters: classes 0, 1, 2 renamed 5, 17, 900.
    let renamed: Vec<i64> = labels.iter().map(|&y| [5, 17, 900][y as usize]).collect();
    assert_close("renamed", logme_of(&features, &renamed), LOGME_TALL);
    let narrow = vector(&labels).to_kind(Kind::Uint8);
    assert_close(
        "uint8 labels",
        logme(&matrix(&features), &narrow).unwrap(),
        LOGME_TALL,
    );
}

// ----------------------------------------------------------------------------- LEEP and NCE

#[test]
fn leep_and_nce_match_reference_on_softmax_probabilities() {
    let probs = matrix(&softmax_probs(25, 5));
    let labels = vector(&labels_formula(25, 3));
    assert_close("leep", leep(&probs, &labels).unwrap(), LEEP_SOFTMAX);
    assert_close("nce", nce(&probs, &labels).unwrap(), NCE_SOFTMAX);
}

#[test]
fn leep_and_nce_match_reference_with_a_source_class_never_predicted() {
    let probs = matrix(&zero_column_probs(20, 6));
    let labels = vector(&labels_formula(20, 4));
    assert_close("leep", leep(&probs, &labels).unwrap(), LEEP_ZERO_COLUMN);
    assert_close("nce", nce(&probs, &labels).unwrap(), NCE_ZERO_COLUMN);
}

#[test]
fn leep_and_nce_are_zero_when_the_source_determines_the_label() {
    // Source class (2 y + 1) mod 5 for target class y: one-hot rows, a bijection onto 4 of them.
    let labels = labels_formula(23, 4);
    let probs: Vec<Vec<f64>> = labels
        .iter()
        .map(|&y| {
            let mut row = vec![0.0; 5];
            row[(2 * y as usize + 1) % 5] = 1.0;
            row
        })
        .collect();
    let (probs, labels) = (matrix(&probs), vector(&labels));
    assert!(leep(&probs, &labels).unwrap().abs() < 1e-12);
    assert!(nce(&probs, &labels).unwrap().abs() < 1e-12);
    // And strictly below 0 as soon as the prediction is not a function of the label's class.
    let blurred = matrix(&softmax_probs(23, 5));
    assert!(leep(&blurred, &labels).unwrap() < -0.1);
    assert!(nce(&blurred, &labels).unwrap() < -0.1);
}

#[test]
fn leep_and_nce_are_invariant_to_permuting_source_classes() {
    let rows = softmax_probs(25, 5);
    let order = [3, 0, 4, 1, 2];
    let permuted: Vec<Vec<f64>> = rows
        .iter()
        .map(|row| order.iter().map(|&k| row[k]).collect())
        .collect();
    let labels = vector(&labels_formula(25, 3));
    let (a, b) = (matrix(&rows), matrix(&permuted));
    assert!((leep(&a, &labels).unwrap() - leep(&b, &labels).unwrap()).abs() < 1e-12);
    assert!((nce(&a, &labels).unwrap() - nce(&b, &labels).unwrap()).abs() < 1e-12);
}

// ----------------------------------------------------------------------------- scores

#[test]
fn scores_softmax_the_logits_and_agree_with_the_single_scores() {
    let features = matrix(&features_formula(25, 7));
    let logits = matrix(&source_logits(25, 5));
    let labels = vector(&labels_formula(25, 3));
    let all = scores(&features, &logits.to_kind(Kind::Float), &labels).unwrap();
    assert_eq!(all.logme, logme(&features, &labels).unwrap());
    // The logits went through float32 here.
    assert!((all.leep - LEEP_SOFTMAX).abs() < 1e-6, "{all:?}");
    assert_close("nce", all.nce, NCE_SOFTMAX);
    let exact = scores(&features, &logits, &labels).unwrap();
    assert_close("leep", exact.leep, LEEP_SOFTMAX);
}

#[test]
fn scores_are_deterministic() {
    let features = matrix(&features_formula(40, 6));
    let logits = matrix(&source_logits(40, 5));
    let labels = vector(&labels_formula(40, 3));
    let first = scores(&features, &logits, &labels).unwrap();
    for _ in 0..3 {
        let again = scores(&features.copy(), &logits.copy(), &labels.copy()).unwrap();
        assert_eq!(first.logme.to_bits(), again.logme.to_bits());
        assert_eq!(first.leep.to_bits(), again.leep.to_bits());
        assert_eq!(first.nce.to_bits(), again.nce.to_bits());
    }
}

// ----------------------------------------------------------------------------- bad input

#[test]
fn mismatched_row_counts_are_refused() {
    let features = matrix(&features_formula(10, 3));
    let labels = vector(&labels_formula(9, 3));
    assert_eq!(
        message(logme(&features, &labels)),
        "cannot score transferability: logme: features have 10 rows but labels have 9"
    );
    let probs = matrix(&softmax_probs(10, 4));
    assert!(message(leep(&probs, &labels)).contains("source probabilities have 10 rows"));
    let logits = matrix(&source_logits(11, 4));
    let err = scores(&features, &logits, &vector(&labels_formula(10, 3))).unwrap_err();
    assert!(
        err.to_string()
            .contains("features have 10 rows but source logits have 11"),
        "{err}"
    );
}

#[test]
fn empty_input_is_refused() {
    let empty = Tensor::zeros([0, 4], (Kind::Double, Device::Cpu));
    let no_labels = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
    assert!(message(logme(&empty, &no_labels)).contains("features hold no examples"));
    assert!(message(nce(&empty, &no_labels)).contains("source probabilities hold no examples"));
    let no_columns = Tensor::zeros([5, 0], (Kind::Double, Device::Cpu));
    assert!(message(logme(&no_columns, &vector(&[0, 1, 0, 1, 0]))).contains("no columns"));
}

#[test]
fn negative_or_out_of_range_labels_are_refused() {
    let features = matrix(&features_formula(4, 3));
    assert_eq!(
        message(logme(&features, &vector(&[0, 1, -1, 0]))),
        "cannot score transferability: logme: label -1 of example 2 is negative"
    );
    let huge = message(logme(&features, &vector(&[0, 1, MAX_CLASSES, 0])));
    assert!(huge.contains("out of range"), "{huge}");
    let probs = matrix(&softmax_probs(4, 3));
    assert!(message(leep(&probs, &vector(&[0, -3, 1, 1]))).contains("negative"));
    let floats = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 0.0]);
    assert!(message(nce(&probs, &floats)).contains("integer class indices"));
}

#[test]
fn non_finite_inputs_are_refused() {
    let mut rows = features_formula(6, 3);
    rows[4][1] = f64::NAN;
    rows[5][2] = f64::INFINITY;
    let labels = vector(&labels_formula(6, 2));
    assert_eq!(
        message(logme(&matrix(&rows), &labels)),
        "cannot score transferability: logme: features hold 2 non-finite values (the first at row 4, column 1)"
    );
    let mut logits = source_logits(6, 3);
    logits[0][0] = f64::NEG_INFINITY;
    let err = scores(&matrix(&features_formula(6, 3)), &matrix(&logits), &labels).unwrap_err();
    assert!(
        err.to_string()
            .contains("source logits hold 1 non-finite value (the first at row 0, column 0)"),
        "{err}"
    );
}

#[test]
fn fewer_than_two_classes_are_refused() {
    let features = matrix(&features_formula(5, 3));
    assert_eq!(
        message(logme(&features, &vector(&[2, 2, 2, 2, 2]))),
        "cannot score transferability: logme: all 5 labels are class 2; at least 2 classes must be present"
    );
    let probs = matrix(&softmax_probs(5, 3));
    assert!(message(leep(&probs, &vector(&[0; 5]))).contains("at least 2 classes"));
}

#[test]
fn probabilities_that_are_not_distributions_are_refused() {
    let labels = vector(&labels_formula(25, 3));
    let logits = matrix(&source_logits(25, 5));
    assert!(message(leep(&logits, &labels)).contains("pass the softmax, not the logits"));
    let mut rows = softmax_probs(25, 5);
    rows[3][0] = -rows[3][0];
    rows[3][1] -= 2.0 * rows[3][0];
    let negative = message(nce(&matrix(&rows), &labels));
    assert!(
        negative.contains("negative at row 3, column 0"),
        "{negative}"
    );
}
