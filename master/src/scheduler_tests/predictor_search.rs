//! Predictor-guided proposals (`[search] predictor = true`): predicted once the history
//! suffices, and steered towards what the history says scores well.

use super::*;

/// Hyperparameters only, so that a synthetic score of the hyperparameters is the whole story;
/// on one chain cooling exponentially from T = 0.02 (the annealing defaults before
/// 2026-12-07, kept here so that the steering margin below stays a check of the predictor:
/// under today's defaults, two adaptive chains, the same comparison gives 0.8907 against
/// 0.8890, still ahead but by less).
const HPARAMS_ONLY: &str = "[annealing]\nchains = 1\ninitial_temperature = 0.02\n\
    cooling = \"exponential\"\ncooling_rate = 0.9\nmin_temperature = 0.001\nreheat_after = 6\n\
    [search]\narchitecture_mutation_probability = 0.0\n";

/// A smooth synthetic score of a trial's hyperparameters: best at learning rate 3e-3, a little
/// better with smaller batches. Not an accuracy anyone trained: it gives the predictor a
/// landscape whose optimum the test knows.
fn synthetic_score(t: &TrialRow) -> f64 {
    let hp = HyperParams::from_json(&t.hparams_json).unwrap();
    let d = hp.learning_rate.ln() - 3e-3f64.ln();
    0.9 - 0.03 * d * d - 0.01 * f64::from(hp.batch_size).log2() / 8.0
}

/// Runs one experiment to its end, scoring each trial with [`synthetic_score`].
async fn run_synthetic(h: &Harness, extra: &str, max_trials: u32) -> Vec<TrialRow> {
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(max_trials, extra)))
        .await
        .unwrap();
    let mut n = 0;
    while view(&h.sched, &id).await.row.status == ExperimentStatus::Running {
        assert!(n < 200, "experiment does not end");
        let t = lease(&h.sched, &w).await;
        let answer = finish(&h.sched, &w, &t, synthetic_score(&t)).await;
        assert_eq!(answer.reason, "", "{answer:?}");
        n += 1;
    }
    let mut all = trials(&h.sched, &id).await;
    all.sort_by_key(|t| t.seq);
    all
}

#[tokio::test]
async fn proposals_are_predicted_once_the_history_suffices() {
    let h = Harness::long().await;
    let extra = format!("{HPARAMS_ONLY}predictor = true\npredictor_candidates = 5\n");
    let all = run_synthetic(&h, &extra, 40).await;
    assert_eq!(all.len(), 40);
    // Before MIN_HISTORY completions nothing can be predicted: the first trials are as
    // without the predictor.
    for t in all.iter().take(crate::predictor::MIN_HISTORY) {
        assert_eq!(t.predicted_score, None, "trial {} ({})", t.seq, t.origin);
    }
    let predicted: Vec<&TrialRow> = all.iter().filter(|t| t.predicted_score.is_some()).collect();
    assert!(
        predicted.len() >= 28,
        "only {} of 40 trials were chosen by the predictor",
        predicted.len()
    );
    for t in &predicted {
        assert!(t.origin.contains("best of"), "{}", t.origin);
        let std = t.predicted_std.expect("a prediction has a deviation");
        assert!(std.is_finite() && std > 0.0, "{std}");
    }
    // The predictions are about the landscape it was fitted on: close to the real scores.
    let mean_error = predicted
        .iter()
        .map(|t| (t.predicted_score.unwrap() - synthetic_score(t)).abs())
        .sum::<f64>()
        / predicted.len() as f64;
    assert!(mean_error < 0.02, "mean absolute error {mean_error}");
}

#[tokio::test]
async fn the_predictor_steers_proposals_towards_better_scores() {
    // The same seed and landscape with and without the predictor: the chosen candidates score
    // better on average once the predictor has its history.
    let mean_after_history = |all: &[TrialRow]| {
        let later: Vec<f64> = all.iter().skip(12).map(synthetic_score).collect();
        later.iter().sum::<f64>() / later.len() as f64
    };
    let without = run_synthetic(&Harness::long().await, HPARAMS_ONLY, 48).await;
    let with = run_synthetic(
        &Harness::long().await,
        &format!("{HPARAMS_ONLY}predictor = true\n"),
        48,
    )
    .await;
    assert!(without.iter().all(|t| t.predicted_score.is_none()));
    let (plain, guided) = (mean_after_history(&without), mean_after_history(&with));
    assert!(
        guided > plain + 0.004,
        "guided proposals average {guided:.4}, plain ones {plain:.4}"
    );
}
