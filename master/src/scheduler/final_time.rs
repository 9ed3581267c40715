//! How much of the wall-time budget the search leaves the final phase, under
//! `[final] within_wall_budget = true`: `budget.max_wall_seconds` then bounds the whole
//! experiment, and the search ends when the time left is what the final phase is expected to
//! take.
//!
//! **The estimate** comes from the search's own measurements: every completed trial's worker
//! reports its training time (`train_seconds`, per-epoch validation included), the part spent
//! on validation (`eval_seconds`), the examples it trained on (`train_examples`), the size
//! of the whole training split (`split_examples`) and the trial's whole time on its slot
//! (`wall_seconds`: training, then test scoring and saving and uploading the checkpoint). The
//! final trial of a parent trains the same model for `[final] epochs` epochs on the whole
//! split, so it is expected to take the parent's training time per epoch, scaled by
//! `split_examples / train_examples` (a search on a subset trains on fewer examples), plus its
//! validation time per epoch (the same validation split), times the final epochs, plus the
//! parent's time outside training (`wall_seconds − train_seconds`: the same test set and
//! checkpoint size). The phase runs its trials side by side on the connected slots: it takes
//! the longest of them, or their sum shared among the slots when there are fewer slots than
//! trials. And the search's last trials, in flight when it ends, finish first: one more search
//! trial's whole time (the mean of the planned parents') is kept for them.
//!
//! The estimate is refreshed whenever a search trial completes (the plan, the best `top_k`
//! distinct architectures, can only change then) or the connected slots change (see
//! `Scheduler::search_wall`).
//!
//! **A slow machine** would spend most of the budget on the final phase and search too little
//! to find anything: the search always keeps [`MIN_SEARCH_SHARE`] of the budget, and when the
//! time left after it cannot hold `[final] epochs`, the final trials train the epochs that fit
//! ([`fitted_epochs`], at least one).

use explore_common::spec::FinalConfig;
use explore_common::HyperParams;

use crate::store::TrialRow;

/// The share of the wall-time budget the search keeps under `within_wall_budget`, however
/// long the final phase is expected to take.
pub const MIN_SEARCH_SHARE: f64 = 0.5;

/// The final trials' epochs when the search ends with `time_left_ms` of the wall budget left:
/// `[final] epochs`, or as many as the final phase of `plan` on `slots` slots is expected to
/// fit in the time left (at least one). `[final] epochs` when nothing is measured.
pub fn fitted_epochs(plan: &[TrialRow], fin: &FinalConfig, slots: u32, time_left_ms: i64) -> u32 {
    let phase_ms = |epochs: u32| {
        let fin = FinalConfig {
            epochs,
            ..fin.clone()
        };
        reservation(plan, &fin, slots).map(|r| r.phase_ms)
    };
    if phase_ms(fin.epochs).is_none() {
        return fin.epochs;
    }
    // The phase's time grows with its epochs (each trial's time outside training does not):
    // the most epochs whose phase fits, found by bisection over 1..=epochs.
    let fits = |epochs: u32| phase_ms(epochs).is_some_and(|ms| ms <= time_left_ms);
    let (mut fit, mut too_many) = (1, fin.epochs + 1);
    while too_many - fit > 1 {
        let mid = fit + (too_many - fit) / 2;
        if fits(mid) {
            fit = mid;
        } else {
            too_many = mid;
        }
    }
    fit
}

/// What the search keeps of the wall-time budget for the final phase, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reservation {
    /// The final phase's expected wall time.
    pub phase_ms: i64,
    /// The expected time for the search trials in flight when the search ends.
    pub tail_ms: i64,
}

impl Reservation {
    /// Everything kept: the tail and the phase.
    pub fn total_ms(&self) -> i64 {
        self.phase_ms + self.tail_ms
    }
}

/// What a completed search trial's worker measured of its training.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Measured {
    /// Training time, validation included, in seconds.
    seconds: f64,
    /// The part of `seconds` spent on validation.
    eval_seconds: f64,
    /// The trial's time on its slot outside training: test scoring, saving and uploading the
    /// checkpoint (0 when its worker did not report `wall_seconds`).
    outside_seconds: f64,
    /// Epochs trained.
    epochs: f64,
    /// How many times larger the whole training split is than what the trial trained on.
    scale: f64,
}

impl Measured {
    /// Reads a trial's measurements; `None` when its worker did not report them (a worker
    /// that reports no split size is taken to have trained on the whole split unless the spec
    /// searches on a subset, where its scale is unknown).
    fn of(trial: &TrialRow, fin: &FinalConfig) -> Option<Measured> {
        let m = trial.metrics();
        let seconds = *m
            .get("train_seconds")
            .filter(|s| s.is_finite() && **s > 0.0)?;
        let eval_seconds = m
            .get("eval_seconds")
            .copied()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(0.0)
            .min(seconds);
        let epochs = if trial.epoch > 0 {
            trial.epoch as f64
        } else {
            f64::from(HyperParams::from_json(&trial.hparams_json).ok()?.epochs)
        };
        let outside_seconds = m
            .get("wall_seconds")
            .filter(|s| s.is_finite())
            .map_or(0.0, |wall| (wall - seconds).max(0.0));
        let examples = m.get("train_examples").copied().filter(|n| *n >= 1.0);
        let scale = match (examples, m.get("split_examples").copied()) {
            (Some(trained), Some(split)) if split >= trained => split / trained,
            _ if fin.search_subset == 0 => 1.0,
            _ => return None,
        };
        Some(Measured {
            seconds,
            eval_seconds,
            outside_seconds,
            epochs: epochs.max(1.0),
            scale,
        })
    }

    /// Expected milliseconds of a trial of `epochs` epochs of the same model on the whole split.
    fn final_ms(&self, epochs: u32) -> f64 {
        let train_per_epoch = (self.seconds - self.eval_seconds) / self.epochs * self.scale;
        let eval_per_epoch = self.eval_seconds / self.epochs;
        ((train_per_epoch + eval_per_epoch) * f64::from(epochs) + self.outside_seconds) * 1000.0
    }

    /// The search trial's whole time on its slot, in seconds.
    fn wall_seconds(&self) -> f64 {
        self.seconds + self.outside_seconds
    }
}

/// What to keep for the final phase of `plan` (the search's best distinct architectures now, at
/// most `top_k`), run on `slots` connected slots. `None` when no planned trial has
/// measurements yet (nothing to estimate from: the search keeps the whole budget until then).
pub fn reservation(plan: &[TrialRow], fin: &FinalConfig, slots: u32) -> Option<Reservation> {
    let measured: Vec<Measured> = plan.iter().filter_map(|t| Measured::of(t, fin)).collect();
    if measured.is_empty() {
        return None;
    }
    let trials: Vec<f64> = measured.iter().map(|m| m.final_ms(fin.epochs)).collect();
    // Parents without measurements are expected to cost what the measured ones cost on average.
    let mean = trials.iter().sum::<f64>() / trials.len() as f64;
    let planned = plan.len().max(1);
    let total = mean * planned as f64;
    let longest = trials.iter().copied().fold(0.0, f64::max);
    let phase = longest.max(total / f64::from(slots.max(1)));
    let tail =
        measured.iter().map(Measured::wall_seconds).sum::<f64>() / measured.len() as f64 * 1000.0;
    Some(Reservation {
        phase_ms: phase.ceil() as i64,
        tail_ms: tail.ceil() as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TrialStatus;
    use explore_common::spec::FinalStart;
    use explore_common::{ExperimentId, TrialId};

    fn fin(epochs: u32, search_subset: u32) -> FinalConfig {
        FinalConfig {
            top_k: 2,
            epochs,
            from: FinalStart::Weights,
            search_subset,
            within_wall_budget: true,
        }
    }

    /// A completed search trial whose worker reported these measurements.
    fn trial(epochs: i64, metrics: &[(&str, f64)]) -> TrialRow {
        let metrics: std::collections::BTreeMap<&str, f64> = metrics.iter().copied().collect();
        TrialRow {
            id: TrialId::generate(),
            experiment_id: ExperimentId::generate(),
            seq: 1,
            parent_id: None,
            origin: String::new(),
            genome_json: String::new(),
            genome_hash: String::new(),
            hparams_json: HyperParams::default().to_json(),
            params: 0,
            flops: 0,
            seed: 0,
            status: TrialStatus::Completed,
            attempt: 1,
            worker_id: None,
            lease_deadline_ms: None,
            epoch: epochs,
            score: Some(0.9),
            metrics_json: serde_json::to_string(&metrics).unwrap(),
            checkpoint_sha256: None,
            accepted: Some(true),
            temperature: None,
            error: String::new(),
            created_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
            chain: 0,
            inherit_from: None,
            kind: "train".into(),
            seed_index: None,
            predicted_score: None,
            predicted_std: None,
            phase: "search".into(),
        }
    }

    #[test]
    fn a_subset_trial_scales_its_training_time_and_not_its_validation_time() {
        // 2 epochs of 20 s: 8 s of validation, 12 s of training on 6,000 of 54,000 examples.
        let t = trial(
            2,
            &[
                ("train_seconds", 20.0),
                ("eval_seconds", 8.0),
                ("train_examples", 6000.0),
                ("split_examples", 54000.0),
            ],
        );
        // Per final epoch: 6 s × 9 of training and 4 s of validation = 58 s; 4 epochs = 232 s.
        let r = reservation(&[t], &fin(4, 6000), 2).unwrap();
        assert_eq!(r.phase_ms, 232_000);
        assert_eq!(r.tail_ms, 20_000, "one search trial's time");
        assert_eq!(r.total_ms(), 252_000);
    }

    #[test]
    fn final_trials_share_the_slots() {
        let a = trial(1, &[("train_seconds", 10.0), ("train_examples", 100.0)]);
        let b = trial(1, &[("train_seconds", 30.0), ("train_examples", 100.0)]);
        let plan = [a, b];
        // Whole-split search (scale 1), 2 final epochs: 20 s and 60 s.
        let two = reservation(&plan, &fin(2, 0), 2).unwrap();
        assert_eq!(two.phase_ms, 60_000, "side by side: the longest");
        let one = reservation(&plan, &fin(2, 0), 1).unwrap();
        assert_eq!(one.phase_ms, 80_000, "one slot: one after the other");
        let none = reservation(&plan, &fin(2, 0), 0).unwrap();
        assert_eq!(none, one, "no slot connected counts as one");
        assert_eq!(two.tail_ms, 20_000, "the mean search trial");
    }

    #[test]
    fn the_final_epochs_shrink_to_the_time_left_and_never_below_one() {
        // 10 s per final epoch (whole split, 1 epoch of 10 s), two trials on two slots.
        let plan = [
            trial(1, &[("train_seconds", 10.0), ("train_examples", 100.0)]),
            trial(1, &[("train_seconds", 10.0), ("train_examples", 100.0)]),
        ];
        let f = fin(4, 0);
        assert_eq!(
            fitted_epochs(&plan, &f, 2, 3_600_000),
            4,
            "time enough: all 4"
        );
        assert_eq!(fitted_epochs(&plan, &f, 2, 40_000), 4);
        assert_eq!(fitted_epochs(&plan, &f, 2, 39_999), 3);
        assert_eq!(
            fitted_epochs(&plan, &f, 1, 39_999),
            1,
            "one slot: 20 s an epoch"
        );
        assert_eq!(fitted_epochs(&plan, &f, 2, 0), 1, "at least one epoch");
        assert_eq!(fitted_epochs(&plan, &f, 2, -5), 1);
        assert_eq!(
            fitted_epochs(&[], &f, 2, 0),
            4,
            "nothing measured: as specified"
        );
    }

    #[test]
    fn each_final_trial_adds_its_parents_time_outside_training_once() {
        // 2 epochs of 10 s on the whole split, 14 s on the slot: 4 s of test scoring, saving
        // and uploading.
        let t = trial(
            2,
            &[
                ("train_seconds", 10.0),
                ("train_examples", 100.0),
                ("wall_seconds", 14.0),
            ],
        );
        // 3 final epochs: 15 s of training and 4 s outside it, once.
        let r = reservation(std::slice::from_ref(&t), &fin(3, 0), 1).unwrap();
        assert_eq!(r.phase_ms, 19_000);
        assert_eq!(r.tail_ms, 14_000, "the search trial's whole time");
        // The 4 s come once per trial, not with every epoch: 10 final epochs (54 s) fit in
        // 54 s, where 9 s an epoch (one epoch's phase) would fit only 6.
        assert_eq!(
            fitted_epochs(std::slice::from_ref(&t), &fin(10, 0), 1, 54_000),
            10
        );
        assert_eq!(
            fitted_epochs(std::slice::from_ref(&t), &fin(10, 0), 1, 53_999),
            9
        );
        // A wall time below the training time (clocks of another kind) adds nothing.
        let odd = trial(
            2,
            &[
                ("train_seconds", 10.0),
                ("train_examples", 100.0),
                ("wall_seconds", 9.0),
            ],
        );
        let r = reservation(std::slice::from_ref(&odd), &fin(3, 0), 1).unwrap();
        assert_eq!((r.phase_ms, r.tail_ms), (15_000, 10_000));
    }

    #[test]
    fn without_measurements_there_is_nothing_to_keep() {
        assert_eq!(reservation(&[], &fin(4, 0), 2), None);
        let unmeasured = trial(2, &[("train_loss", 0.3)]);
        assert_eq!(
            reservation(std::slice::from_ref(&unmeasured), &fin(4, 0), 2),
            None
        );
        // An older worker that does not report the split's size: its scale is unknown when
        // the search trains on a subset, and 1 when it trains on the whole split.
        let old = trial(2, &[("train_seconds", 10.0), ("train_examples", 6000.0)]);
        assert_eq!(
            reservation(std::slice::from_ref(&old), &fin(4, 6000), 2),
            None
        );
        assert_eq!(
            reservation(std::slice::from_ref(&old), &fin(4, 0), 2)
                .unwrap()
                .phase_ms,
            20_000
        );
        // An unmeasured parent beside a measured one is expected to cost as much.
        let r = reservation(&[old, unmeasured], &fin(4, 0), 1).unwrap();
        assert_eq!(r.phase_ms, 40_000);
    }
}
