//! The predictor end to end on synthetic histories: recovering a known ordering, uncertainty,
//! refusals and the ranking invariants.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::features::tests::example;
use super::*;
use crate::MasterError;

/// The known truth of the synthetic world: accuracy rises with LogME and with data, and is
/// best at a learning rate of 10^-2.5, falling off quadratically in its log.
fn truth(features: &TransferFeatures) -> f64 {
    let log10_learning_rate = features.learning_rate.log10();
    0.7 + 0.08 * features.logme - 0.04 * (log10_learning_rate + 2.5).powi(2)
        + 0.01 * f64::from(features.examples).ln()
        + 0.05 * (features.source_score - 0.85)
}

/// Random pairs drawn from a seeded stream: varied models, settings, probes and tasks.
fn synthetic_candidates(seed: u64, count: usize) -> Vec<TransferFeatures> {
    let mut rng = StdRng::seed_from_u64(seed);
    let objectives = ["plain", "gradient_mixing", "replay", "agem", "elr", "dann"];
    (0..count)
        .map(|_| {
            let params = 10f64.powf(rng.gen_range(4.0..6.0)) as u64;
            TransferFeatures {
                params,
                flops: params * rng.gen_range(20..60),
                depth: rng.gen_range(3..12),
                blocks: rng.gen_range(2..8),
                source_score: rng.gen_range(0.8..0.95),
                learning_rate: 10f64.powf(rng.gen_range(-4.0..-1.5)),
                epochs: rng.gen_range(1..10),
                batch_size: [32, 64, 128][rng.gen_range(0..3)],
                weight_decay: [0.0, 1e-4, 5e-4][rng.gen_range(0..3)],
                objective: objectives[rng.gen_range(0..objectives.len())].to_string(),
                optimizer: ["sgd", "adam", "adamw"][rng.gen_range(0..3)].to_string(),
                head_only: false,
                logme: rng.gen_range(-1.0..1.5),
                leep: rng.gen_range(-2.0..-0.3),
                nce: rng.gen_range(-2.0..-0.3),
                examples: [100, 500, 1000, 5000][rng.gen_range(0..4)],
                classes: [5, 10][rng.gen_range(0..2)],
                channels: 1,
                size: [8, 28][rng.gen_range(0..2)],
            }
        })
        .collect()
}

/// A history of fine-tunes with the truth plus small seeded noise (±0.005).
fn synthetic_history(seed: u64, count: usize) -> Vec<(TransferFeatures, f64)> {
    let mut noise = StdRng::seed_from_u64(seed ^ 0x5eed);
    synthetic_candidates(seed, count)
        .into_iter()
        .map(|features| {
            let accuracy = truth(&features) + noise.gen_range(-0.005..0.005);
            (features, accuracy)
        })
        .collect()
}

#[test]
fn recovers_a_known_ordering_on_synthetic_history() {
    let history = synthetic_history(7, 60);
    let predictor = Predictor::fit(&history).unwrap();
    assert!(predictor.converged());
    assert_eq!(predictor.observations(), 60);

    let held_out = synthetic_candidates(8, 40);
    let actual: Vec<f64> = held_out.iter().map(truth).collect();
    let predicted: Vec<f64> = held_out
        .iter()
        .map(|features| predictor.predict(features).unwrap().mean)
        .collect();
    let tau = weighted_kendall_tau(&predicted, &actual);
    assert!(tau > 0.8, "predictor τ_w = {tau}");
    let logme: Vec<f64> = held_out.iter().map(|features| features.logme).collect();
    let logme_tau = weighted_kendall_tau(&logme, &actual);
    assert!(
        tau > logme_tau + 0.1,
        "predictor τ_w {tau}, LogME alone {logme_tau}"
    );
    assert!(top1_regret(&predicted, &actual) < 0.01);

    // The ranking agrees: its first candidate is the predicted best.
    let candidates: Vec<(usize, TransferFeatures)> = held_out.iter().cloned().enumerate().collect();
    let ranked = rank(&predictor, &candidates, Acquisition::Mean).unwrap();
    let best = (0..predicted.len())
        .max_by(|&a, &b| predicted[a].total_cmp(&predicted[b]))
        .unwrap();
    assert_eq!(ranked[0].id, best);

    // The learned weights point the right way: LogME helps.
    let weights = predictor.weights();
    let logme_weight = weights.iter().find(|(name, _)| *name == "logme").unwrap().1;
    assert!(logme_weight > 0.0, "{weights:?}");
}

#[test]
fn predictive_std_grows_away_from_the_data() {
    let history = synthetic_history(11, 40);
    let predictor = Predictor::fit(&history).unwrap();
    let mut previous = 0.0;
    for logme in [0.25, 3.0, 6.0, 12.0, 24.0] {
        let features = TransferFeatures {
            logme,
            ..history[0].0.clone()
        };
        let std = predictor.predict(&features).unwrap().std;
        assert!(
            std > previous,
            "std {std} at logme {logme}, {previous} before"
        );
        previous = std;
    }
    // Never below the fitted noise level.
    let at_data = predictor.predict(&history[0].0).unwrap().std;
    assert!(at_data >= 1.0 / predictor.beta().sqrt());
}

#[test]
fn a_noiseless_linear_history_is_fitted_exactly() {
    // Accuracy exactly linear in the feature vector: the fit reproduces it.
    let coefficients: Vec<f64> = (0..FEATURE_COUNT)
        .map(|index| 0.01 * ((index as f64) * 1.3).sin())
        .collect();
    let linear = |features: &TransferFeatures| -> f64 {
        0.5 + features
            .vector()
            .iter()
            .zip(&coefficients)
            .map(|(value, coefficient)| value * coefficient)
            .sum::<f64>()
    };
    let history: Vec<(TransferFeatures, f64)> = synthetic_candidates(3, 120)
        .into_iter()
        .map(|features| {
            let accuracy = linear(&features);
            (features, accuracy)
        })
        .collect();
    let predictor = Predictor::fit(&history).unwrap();
    assert!(
        predictor.converged(),
        "{} iterations",
        predictor.iterations()
    );
    assert!(
        predictor.beta() > 1e6,
        "noise precision {}",
        predictor.beta()
    );
    for features in synthetic_candidates(4, 20) {
        let prediction = predictor.predict(&features).unwrap();
        let expected = linear(&features);
        assert!(
            (prediction.mean - expected).abs() < 1e-6,
            "{} against {expected}",
            prediction.mean
        );
    }
}

#[test]
fn fitting_is_deterministic() {
    let history = synthetic_history(5, 30);
    let first = Predictor::fit(&history).unwrap();
    let second = Predictor::fit(&history).unwrap();
    let query = synthetic_candidates(6, 1).remove(0);
    assert_eq!(
        first.predict(&query).unwrap(),
        second.predict(&query).unwrap()
    );
}

#[test]
fn a_too_thin_history_is_refused() {
    let history = synthetic_history(1, MIN_HISTORY - 1);
    let error = Predictor::fit(&history).unwrap_err();
    assert_eq!(
        error,
        PredictorError::TooFewObservations {
            have: MIN_HISTORY - 1,
            need: MIN_HISTORY
        }
    );
    assert!(matches!(
        MasterError::from(error),
        MasterError::FailedPrecondition(_)
    ));
    assert!(Predictor::<TransferFeatures>::fit(&[]).is_err());
}

#[test]
fn nan_and_infinite_inputs_are_refused_naming_the_feature() {
    let mut history = synthetic_history(2, 12);
    history[3].0.logme = f64::NAN;
    let error = Predictor::fit(&history).unwrap_err();
    assert_eq!(
        error.to_string(),
        "history row 3: feature `logme` is NaN: must be finite"
    );
    assert!(matches!(
        MasterError::from(error),
        MasterError::InvalidArgument(_)
    ));

    let mut history = synthetic_history(2, 12);
    history[5].1 = f64::INFINITY;
    let error = Predictor::fit(&history).unwrap_err();
    assert!(error.to_string().contains("history row 5"), "{error}");

    let predictor = Predictor::fit(&synthetic_history(2, 12)).unwrap();
    let mut bad = example();
    bad.nce = f64::NEG_INFINITY;
    let candidates = vec![("good", example()), ("bad", bad)];
    let error = rank(&predictor, &candidates, Acquisition::Mean).unwrap_err();
    assert_eq!(
        error.to_string(),
        "candidate 1: feature `nce` is -inf: must be finite"
    );
    let error = rank(
        &predictor,
        &candidates[..1],
        Acquisition::UpperConfidenceBound { kappa: f64::NAN },
    )
    .unwrap_err();
    assert!(error.to_string().contains("kappa"), "{error}");
}

#[test]
fn equal_candidates_keep_their_input_order() {
    let predictor = Predictor::fit(&synthetic_history(9, 20)).unwrap();
    let candidates: Vec<(char, TransferFeatures)> =
        ['a', 'b', 'c'].iter().map(|id| (*id, example())).collect();
    let ranked = rank(
        &predictor,
        &candidates,
        Acquisition::UpperConfidenceBound { kappa: 1.5 },
    )
    .unwrap();
    let ids: Vec<char> = ranked.iter().map(|entry| entry.id).collect();
    assert_eq!(ids, ['a', 'b', 'c']);
}

#[test]
fn upper_confidence_bound_prefers_the_uncertain() {
    let history = synthetic_history(13, 30);
    let predictor = Predictor::fit(&history).unwrap();
    let familiar = history[0].0.clone();
    let unusual = TransferFeatures {
        channels: 3,
        size: 64,
        ..familiar.clone()
    };
    let familiar_prediction = predictor.predict(&familiar).unwrap();
    let unusual_prediction = predictor.predict(&unusual).unwrap();
    assert!(unusual_prediction.std > familiar_prediction.std);
    let kappa = 1e3;
    let candidates = vec![("familiar", familiar), ("unusual", unusual)];
    let ranked = rank(
        &predictor,
        &candidates,
        Acquisition::UpperConfidenceBound { kappa },
    )
    .unwrap();
    assert_eq!(ranked[0].id, "unusual");
    assert_eq!(
        ranked[0].score,
        unusual_prediction.mean + kappa * unusual_prediction.std
    );
}

#[test]
fn fallback_ranks_by_logme_then_leep_and_says_so() {
    let with = |logme: f64, leep: f64| TransferFeatures {
        logme,
        leep,
        ..example()
    };
    let candidates = vec![
        ("low", with(0.1, -0.5)),
        ("tie-worse-leep", with(0.9, -1.2)),
        ("tie-better-leep", with(0.9, -0.4)),
        ("tie-better-leep-later", with(0.9, -0.4)),
        ("best", with(1.3, -2.0)),
    ];
    let history = synthetic_history(4, 3);
    let ranking = rank_candidates(&history, &candidates, Acquisition::Mean).unwrap();
    assert_eq!(ranking.basis, RankingBasis::ProbeScores { history: 3 });
    assert_eq!(
        ranking.basis.to_string(),
        "ranked by LogME: history too thin (3 of 8)"
    );
    let ids: Vec<&str> = ranking.order.iter().map(|entry| entry.id).collect();
    assert_eq!(
        ids,
        [
            "best",
            "tie-better-leep",
            "tie-better-leep-later",
            "tie-worse-leep",
            "low"
        ]
    );
    assert!(ranking.order.iter().all(|entry| entry.prediction.is_none()));

    let mut bad = candidates.clone();
    bad[2].1.logme = f64::NAN;
    let error = fallback_rank(&bad).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("candidate 2: feature `logme`"),
        "{error}"
    );

    let history = synthetic_history(4, MIN_HISTORY);
    let ranking = rank_candidates(&history, &candidates, Acquisition::Mean).unwrap();
    assert_eq!(
        ranking.basis,
        RankingBasis::Predictor {
            history: MIN_HISTORY,
            acquisition: Acquisition::Mean
        }
    );
    assert!(ranking.order.iter().all(|entry| entry.prediction.is_some()));
}

/// Candidates from few distinct values, so equal scores are common.
fn candidate_strategy() -> impl Strategy<Value = Vec<TransferFeatures>> {
    prop::collection::vec((0usize..3, 0usize..3, 0usize..3), 0..24).prop_map(|choices| {
        choices
            .into_iter()
            .map(|(logme, learning_rate, leep)| TransferFeatures {
                logme: [-0.5, 0.3, 1.1][logme],
                learning_rate: [1e-4, 3e-3, 1e-2][learning_rate],
                leep: [-1.5, -0.8, -0.2][leep],
                ..example()
            })
            .collect()
    })
}

/// The ranking's invariants: a permutation of the input, best first by score then by
/// `tie_break` (higher first), fully equal entries in input order.
fn check_ranking<Id: Clone + PartialEq + std::fmt::Debug>(
    candidates: &[(Id, TransferFeatures)],
    ranked: &[Ranked<Id>],
    tie_break: impl Fn(&TransferFeatures) -> f64,
) -> Result<(), TestCaseError> {
    let mut indices: Vec<usize> = ranked.iter().map(|entry| entry.input_index).collect();
    indices.sort_unstable();
    prop_assert_eq!(indices, (0..candidates.len()).collect::<Vec<_>>());
    for entry in ranked {
        prop_assert_eq!(&entry.id, &candidates[entry.input_index].0);
    }
    for pair in ranked.windows(2) {
        prop_assert!(pair[0].score >= pair[1].score);
        if pair[0].score == pair[1].score {
            let first = tie_break(&candidates[pair[0].input_index].1);
            let second = tie_break(&candidates[pair[1].input_index].1);
            prop_assert!(first >= second);
            if first == second {
                prop_assert!(pair[0].input_index < pair[1].input_index);
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn rank_is_a_deterministic_permutation(
        features in candidate_strategy(),
        kappa in prop_oneof![Just(0.0), -2.0f64..4.0],
        use_mean in any::<bool>(),
    ) {
        let predictor = Predictor::fit(&synthetic_history(21, 16)).unwrap();
        let candidates: Vec<(usize, TransferFeatures)> =
            features.into_iter().enumerate().map(|(index, f)| (index * 10, f)).collect();
        let acquisition = if use_mean {
            Acquisition::Mean
        } else {
            Acquisition::UpperConfidenceBound { kappa }
        };
        let ranked = rank(&predictor, &candidates, acquisition).unwrap();
        check_ranking(&candidates, &ranked, |_| 0.0)?;
        prop_assert_eq!(&ranked, &rank(&predictor, &candidates, acquisition).unwrap());

        let fallback = fallback_rank(&candidates).unwrap();
        check_ranking(&candidates, &fallback, |f| f.leep)?;
        prop_assert_eq!(&fallback, &fallback_rank(&candidates).unwrap());
    }
}
