//! What the `master` read commands print for scripts (`--output json`), and the progress line of
//! `master submit --watch`. The JSON shapes are documented in the README ("Scripting"); the
//! tests below pin them: add fields freely, never rename or remove one.
//!
//! - `master status --output json`: `{"experiments": [SUMMARY, …]}`, newest first.
//! - `master status EXP --output json`: `{"experiment": SUMMARY, "leaderboard": [TRIAL + "rank",
//!   …]}`.
//! - `master best --output json`: `{"experiment_id": …, "trial": TRIAL, "exported_to": DIR |
//!   null}`.
//! - `master trials --output json` (alias `--json`): one TRIAL object per line.
//! - `master stop --output json`: `{"experiment": SUMMARY, "cancelled_queued": N,
//!   "cancelled_held": N, "finishing": N, "cancelled_queued_ids": […], "cancelled_held_ids":
//!   […], "finishing_ids": […]}`.
//!
//! SUMMARY is [`summary_json`], TRIAL is [`crate::cli::trial_json`]. Absent numbers (no best
//! score yet, no budget) are `null`, never NaN or 0.

use std::path::Path;
use std::time::Duration;

use clap::{Args, ValueEnum};
use explore_common::proto::{ExperimentSummary, StopExperimentResponse, TrialRecord};
use serde_json::{json, Value};

use crate::cli::trial_json;

/// How a read command prints its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document (`trials`: one object per line) for scripts.
    Json,
}

/// The `--output` flag of the read commands.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct OutputArgs {
    /// Print a table (for people) or JSON (for scripts; shapes in the README).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

impl OutputArgs {
    /// Whether JSON was asked for.
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

/// A finite number, else `null`.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// A non-empty string, else `null`.
fn text(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A positive number, else `null` (budgets and times where 0 means none).
fn positive<T: Default + PartialOrd>(v: T) -> Option<T> {
    (v > T::default()).then_some(v)
}

/// An experiment's summary as one JSON object: the `ExperimentSummary` message's fields by
/// their proto names, `trials_finished` (completed + pruned, what the trial budget counts), and
/// `null` for what is absent (best score and trial, budgets, finish time).
pub fn summary_json(s: &ExperimentSummary) -> Value {
    json!({
        "experiment_id": s.experiment_id,
        "name": s.name,
        "status": s.status,
        "status_reason": text(&s.status_reason),
        "trials_finished": s.trials_completed + s.trials_pruned,
        "trials_completed": s.trials_completed,
        "trials_pruned": s.trials_pruned,
        "trials_failed": s.trials_failed,
        "trials_running": s.trials_running,
        "trials_queued": s.trials_queued,
        "max_trials": positive(s.max_trials),
        "epochs_spent": s.epochs_spent,
        "max_epochs": positive(s.max_epochs),
        "max_wall_seconds": positive(s.max_wall_seconds),
        "best_score": finite(s.best_score),
        "best_trial_id": text(&s.best_trial_id),
        "temperature": finite(s.temperature),
        "created_at_ms": s.created_at_ms,
        "finished_at_ms": positive(s.finished_at_ms),
    })
}

/// `master status --output json`: every experiment.
pub fn experiments_json(list: &[ExperimentSummary]) -> Value {
    json!({ "experiments": list.iter().map(summary_json).collect::<Vec<_>>() })
}

/// `master status EXP --output json`: the summary and the leaderboard (best first), each row
/// a trial object with its 1-based `rank`.
pub fn status_json(summary: &ExperimentSummary, leaderboard: &[TrialRecord]) -> Value {
    let rows: Vec<Value> = leaderboard
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut row = trial_json(t);
            row["rank"] = json!(i + 1);
            row
        })
        .collect();
    json!({ "experiment": summary_json(summary), "leaderboard": rows })
}

/// `master best --output json`: the best trial, and where it was exported (`null` without
/// `--export`).
pub fn best_json(t: &TrialRecord, exported_to: Option<&Path>) -> Value {
    json!({
        "experiment_id": t.experiment_id,
        "trial": trial_json(t),
        "exported_to": exported_to.map(|p| p.display().to_string()),
    })
}

/// `master stop --output json`: the experiment after the stop, how many trials the stop
/// cancelled (queued; held, with `--now`) or left to finish, and their ids.
pub fn stop_json(r: &StopExperimentResponse) -> Value {
    json!({
        "experiment": r.experiment.as_ref().map(summary_json),
        "cancelled_queued": r.cancelled_queued,
        "cancelled_held": r.cancelled_held,
        "finishing": r.finishing,
        "cancelled_queued_ids": r.cancelled_queued_ids,
        "cancelled_held_ids": r.cancelled_held_ids,
        "finishing_ids": r.finishing_ids,
    })
}

/// The budget an experiment is followed by: epochs when it has an epoch budget (they measure
/// compute better than trials), else trials. Returns `(unit, done, total)`; `total` is 0 when
/// the experiment has no budget in that unit.
pub fn budget_progress(s: &ExperimentSummary) -> (&'static str, u64, u64) {
    match s.max_epochs {
        0 => (
            "trials",
            u64::from(s.trials_completed + s.trials_pruned),
            u64::from(s.max_trials),
        ),
        max => ("epochs", s.epochs_spent, max),
    }
}

/// Time left until the experiment ends, from its rate so far (budget units per second since
/// it was created), bounded by its wall-time budget. `None` before any progress, without a
/// budget, or once it is not running.
pub fn eta(s: &ExperimentSummary, now_ms: i64) -> Option<Duration> {
    if s.status != "running" {
        return None;
    }
    let elapsed_ms = (now_ms - s.created_at_ms).max(0) as f64;
    let wall_left = positive(s.max_wall_seconds).map(|w| (w as f64 - elapsed_ms / 1000.0).max(0.0));
    let (_, done, total) = budget_progress(s);
    let by_rate = (done > 0 && total > 0 && elapsed_ms > 0.0).then(|| {
        let rate = done as f64 / (elapsed_ms / 1000.0);
        total.saturating_sub(done) as f64 / rate
    });
    let secs = match (by_rate, wall_left) {
        (Some(r), Some(w)) => r.min(w),
        (Some(r), None) => r,
        (None, Some(w)) => w,
        (None, None) => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// A duration as `1h02m`, `3m05s` or `42s`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The progress line of `master submit --watch`: budget used (trials, and epochs when there
/// is an epoch budget or any epoch ran), best score, running trials, failures, temperature
/// and the ETA.
pub fn watch_line(s: &ExperimentSummary, now_ms: i64) -> String {
    let finished = s.trials_completed + s.trials_pruned;
    let of = |total: u64| match total {
        0 => String::new(),
        t => format!("/{t}"),
    };
    let mut parts = vec![format!("trials {finished}{}", of(u64::from(s.max_trials)))];
    if s.max_epochs > 0 || s.epochs_spent > 0 {
        parts.push(format!("epochs {}{}", s.epochs_spent, of(s.max_epochs)));
    }
    parts.push(match finite(s.best_score) {
        Some(b) => format!("best val {b:.4}"),
        None => "best val -".into(),
    });
    parts.push(format!("running {}", s.trials_running));
    if s.trials_pruned > 0 {
        parts.push(format!("pruned {}", s.trials_pruned));
    }
    if s.trials_failed > 0 {
        parts.push(format!("failed {}", s.trials_failed));
    }
    if let Some(phase) = final_phase(s) {
        // The search's temperature and wall-time ETA no longer apply: say what is training.
        parts.push(phase.to_string());
        return parts.join("  ");
    }
    parts.push(format!("T {:.4}", s.temperature));
    parts.push(match eta(s, now_ms) {
        Some(d) => format!("ETA {}", short_duration(d)),
        None => "ETA -".into(),
    });
    parts.join("  ")
}

/// While a running experiment is in its `[final]` phase, the phase's progress from the status
/// reason ("final training: 2 architectures for 5 epochs, 1 of 2 ended").
fn final_phase(s: &ExperimentSummary) -> Option<&str> {
    if s.status != "running" || !s.status_reason.starts_with("final training:") {
        return None;
    }
    s.status_reason.split(';').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> ExperimentSummary {
        ExperimentSummary {
            experiment_id: "exp-1".into(),
            name: "demo".into(),
            status: "running".into(),
            trials_completed: 3,
            trials_pruned: 1,
            trials_failed: 2,
            trials_running: 2,
            trials_queued: 1,
            max_trials: 20,
            best_score: f64::NAN,
            temperature: 0.05,
            created_at_ms: 1_000_000,
            ..Default::default()
        }
    }

    fn trial(seq: u32, score: f64) -> TrialRecord {
        TrialRecord {
            experiment_id: "exp-1".into(),
            trial_id: format!("trial-{seq}"),
            seq,
            status: "completed".into(),
            score,
            predicted_score: f64::NAN,
            predicted_std: f64::NAN,
            genome_json: "{\"blocks\":[]}".into(),
            hparams_json: "{\"epochs\":2}".into(),
            ..Default::default()
        }
    }

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        k.sort();
        k
    }

    #[test]
    fn a_summary_has_its_documented_keys_and_null_for_what_is_absent() {
        let v = summary_json(&summary());
        assert_eq!(
            keys(&v),
            [
                "best_score",
                "best_trial_id",
                "created_at_ms",
                "epochs_spent",
                "experiment_id",
                "finished_at_ms",
                "max_epochs",
                "max_trials",
                "max_wall_seconds",
                "name",
                "status",
                "status_reason",
                "temperature",
                "trials_completed",
                "trials_failed",
                "trials_finished",
                "trials_pruned",
                "trials_queued",
                "trials_running",
            ]
        );
        assert_eq!(v["trials_finished"], 4);
        assert_eq!(v["max_trials"], 20);
        for absent in [
            "best_score",
            "best_trial_id",
            "max_epochs",
            "max_wall_seconds",
            "finished_at_ms",
            "status_reason",
        ] {
            assert!(v[absent].is_null(), "{absent}: {v}");
        }
        let done = summary_json(&ExperimentSummary {
            best_score: 0.875,
            best_trial_id: "trial-2".into(),
            max_epochs: 40,
            epochs_spent: 12,
            finished_at_ms: 2_000_000,
            status: "completed".into(),
            status_reason: "trial budget reached".into(),
            ..summary()
        });
        assert_eq!(done["best_score"], 0.875);
        assert_eq!(done["best_trial_id"], "trial-2");
        assert_eq!(done["max_epochs"], 40);
        assert_eq!(done["finished_at_ms"], 2_000_000);
        assert_eq!(done["status_reason"], "trial budget reached");
        // NaN never reaches the JSON (it is not valid JSON)
        assert!(serde_json::to_string(&v).unwrap().parse::<Value>().is_ok());
    }

    #[test]
    fn status_documents_list_experiments_or_one_with_its_ranked_leaderboard() {
        let list = experiments_json(&[summary(), summary()]);
        assert_eq!(keys(&list), ["experiments"]);
        assert_eq!(list["experiments"].as_array().unwrap().len(), 2);
        assert_eq!(list["experiments"][0]["experiment_id"], "exp-1");

        let one = status_json(&summary(), &[trial(4, 0.9), trial(2, 0.8)]);
        assert_eq!(keys(&one), ["experiment", "leaderboard"]);
        assert_eq!(one["experiment"]["name"], "demo");
        let rows = one["leaderboard"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["rank"], 1);
        assert_eq!(rows[0]["trial_id"], "trial-4");
        assert_eq!(rows[0]["score"], 0.9);
        assert_eq!(rows[1]["rank"], 2);
        // a leaderboard row is a trial object (the `trials` line) plus its rank
        let mut line = trial_json(&trial(2, 0.8));
        line["rank"] = json!(2);
        assert_eq!(rows[1], line);
    }

    #[test]
    fn stop_says_what_it_cancelled_and_what_finishes() {
        let v = stop_json(&StopExperimentResponse {
            experiment: Some(ExperimentSummary {
                status: "stopped".into(),
                ..summary()
            }),
            cancelled_queued: 2,
            cancelled_held: 1,
            finishing: 0,
            cancelled_queued_ids: vec!["trial-q1".into(), "trial-q2".into()],
            cancelled_held_ids: vec!["trial-h".into()],
            finishing_ids: vec![],
        });
        assert_eq!(
            keys(&v),
            [
                "cancelled_held",
                "cancelled_held_ids",
                "cancelled_queued",
                "cancelled_queued_ids",
                "experiment",
                "finishing",
                "finishing_ids",
            ]
        );
        assert_eq!(v["experiment"]["status"], "stopped");
        assert_eq!(
            (v["cancelled_queued"].as_u64(), v["cancelled_held"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(v["cancelled_held_ids"], json!(["trial-h"]));
        assert_eq!(v["cancelled_queued_ids"], json!(["trial-q1", "trial-q2"]));
        assert_eq!(v["finishing_ids"], json!([]));
    }

    #[test]
    fn best_names_the_trial_and_where_it_was_exported() {
        let v = best_json(&trial(7, 0.91), None);
        assert_eq!(keys(&v), ["experiment_id", "exported_to", "trial"]);
        assert_eq!(v["experiment_id"], "exp-1");
        assert_eq!(v["trial"]["trial_id"], "trial-7");
        assert_eq!(v["trial"]["genome"], json!({"blocks": []}));
        assert_eq!(v["trial"]["hparams"], json!({"epochs": 2}));
        assert!(v["exported_to"].is_null());
        let v = best_json(&trial(7, 0.91), Some(Path::new("/tmp/best")));
        assert_eq!(v["exported_to"], "/tmp/best");
    }

    #[test]
    fn a_trial_object_has_its_documented_keys() {
        let v = trial_json(&trial(1, f64::NAN));
        for key in [
            "trial_id",
            "seq",
            "kind",
            "status",
            "parent_trial_id",
            "origin",
            "chain",
            "inherited",
            "epochs_run",
            "score",
            "test_accuracy",
            "epoch_metrics",
            "accepted",
            "predicted_score",
            "metrics",
            "temperature",
            "params",
            "flops",
            "genome",
            "hparams",
            "created_at_ms",
            "finished_at_ms",
            "error",
        ] {
            assert!(v.get(key).is_some(), "{key} missing: {v}");
        }
        assert!(v["score"].is_null());
        assert_eq!(v["kind"], "train");
    }

    #[test]
    fn the_eta_follows_the_rate_so_far_and_the_wall_time_budget() {
        let s = summary(); // 4 of 20 trials finished
        let now = s.created_at_ms + 40_000; // 40 s: 0.1 trials/s, 16 left
        assert_eq!(eta(&s, now), Some(Duration::from_secs(160)));
        // an epoch budget is followed instead of the trial count
        let epochs = ExperimentSummary {
            max_epochs: 100,
            epochs_spent: 50,
            ..summary()
        };
        assert_eq!(eta(&epochs, now), Some(Duration::from_secs(40)));
        // a wall-time budget ends it sooner
        let wall = ExperimentSummary {
            max_wall_seconds: 60,
            ..summary()
        };
        assert_eq!(eta(&wall, now), Some(Duration::from_secs(20)));
        // nothing finished yet, no budget, or over: no estimate
        let fresh = ExperimentSummary {
            trials_completed: 0,
            trials_pruned: 0,
            ..summary()
        };
        assert_eq!(eta(&fresh, now), None);
        let done = ExperimentSummary {
            status: "completed".into(),
            ..summary()
        };
        assert_eq!(eta(&done, now), None);
    }

    #[test]
    fn the_watch_line_shows_budget_best_running_and_eta() {
        let s = ExperimentSummary {
            best_score: 0.8123,
            max_epochs: 100,
            epochs_spent: 50,
            ..summary()
        };
        let line = watch_line(&s, s.created_at_ms + 40_000);
        assert_eq!(
            line,
            "trials 4/20  epochs 50/100  best val 0.8123  running 2  pruned 1  failed 2  T 0.0500  ETA 40s"
        );
        let line = watch_line(&summary(), summary().created_at_ms);
        assert!(
            line.starts_with("trials 4/20  best val -  running 2"),
            "{line}"
        );
        assert!(line.ends_with("ETA -"), "{line}");
        // In the final phase the line says what trains instead of the search's T and ETA.
        let s = ExperimentSummary {
            status_reason: "final training: 2 architectures for 5 epochs, 1 of 2 ended; \
                            search ended: wall-time budget reached"
                .into(),
            ..summary()
        };
        let line = watch_line(&s, s.created_at_ms);
        assert!(
            line.ends_with("running 2  pruned 1  failed 2  final training: 2 architectures for 5 epochs, 1 of 2 ended"),
            "{line}"
        );
        assert_eq!(short_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(short_duration(Duration::from_secs(3720)), "1h02m");
    }
}
