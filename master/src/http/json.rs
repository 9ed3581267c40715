//! The JSON shapes of the HTTP API (`docs/http-api.md`), built from the scheduler's rows.

use explore_common::HyperParams;
use serde_json::{json, Value};

use crate::scheduler::reads::{TrialDetail, WorkerView};
use crate::scheduler::{ExperimentView, StopOutcome};
use crate::store::reads::{BestPoint, TemperaturePoint};
use crate::store::{ChainRow, TrialRow};

/// A finite number, or null.
fn number(v: Option<f64>) -> Value {
    match v {
        Some(x) if x.is_finite() => json!(x),
        _ => Value::Null,
    }
}

/// The `Experiment` object.
pub fn experiment(v: &ExperimentView) -> Value {
    let c = &v.counts;
    let budget = &v.spec.budget;
    json!({
        "id": v.row.id,
        "name": v.row.name,
        "status": v.row.lifecycle().as_str(),
        "status_reason": v.row.status_reason,
        "created_at_ms": v.row.created_at_ms,
        "finished_at_ms": v.row.finished_at_ms,
        "trials": {
            "queued": c.queued, "leased": c.leased, "running": c.running,
            "completed": c.completed, "pruned": c.pruned, "failed": c.failed,
            "cancelled": c.cancelled,
        },
        "max_trials": budget.max_trials,
        "epochs_spent": v.epochs.spent,
        "max_epochs": budget.max_epochs,
        "max_wall_seconds": budget.max_wall_seconds,
        "temperature": number(Some(v.temperature)),
        "best_score": number(v.best.as_ref().and_then(|b| b.score)),
        "best_trial_id": v.row.best_trial_id,
        "best_test_accuracy": number(
            v.best.as_ref().and_then(|b| b.metrics().get("test_accuracy").copied())
        ),
    })
}

/// The stop action's answer: the `Experiment` after the stop, with `"stop"`: what it did.
pub fn stopped(v: &ExperimentView, o: &StopOutcome) -> Value {
    let mut value = experiment(v);
    value["stop"] = json!({
        "cancelled_queued": o.cancelled_queued,
        "cancelled_held": o.cancelled_held,
        "finishing": o.finishing,
        "cancelled_queued_ids": o.cancelled_queued_ids,
        "cancelled_held_ids": o.cancelled_held_ids,
        "finishing_ids": o.finishing_ids,
    });
    value
}

/// The name of a trial's training objective (`plain` when its hyperparameters do not parse).
fn objective(t: &TrialRow) -> String {
    HyperParams::from_json(&t.hparams_json)
        .map(|h| h.objective.name().to_string())
        .unwrap_or_else(|_| "plain".to_string())
}

/// The `Trial` object.
pub fn trial(t: &TrialRow) -> Value {
    json!({
        "id": t.id,
        "experiment_id": t.experiment_id,
        "seq": t.seq,
        "kind": t.kind,
        "parent_id": t.parent_id,
        "origin": t.origin,
        "phase": t.phase,
        "status": t.status.as_str(),
        "attempt": t.attempt,
        "chain": t.chain,
        "score": number(t.score),
        "test_accuracy": number(t.metrics().get("test_accuracy").copied()),
        "epochs_run": t.epoch,
        "params": t.params,
        "flops": t.flops,
        "accepted": t.accepted,
        "temperature": number(t.temperature),
        "inherit_from": t.inherit_from,
        "worker_id": t.worker_id,
        "error": t.error,
        "objective": objective(t),
        "predicted_score": number(t.predicted_score),
        "created_at_ms": t.created_at_ms,
        "started_at_ms": t.started_at_ms,
        "finished_at_ms": t.finished_at_ms,
    })
}

/// The trial page's object: a `Trial` with its genome, hyperparameters, curve and lineage.
pub fn trial_detail(d: &TrialDetail) -> Value {
    let mut value = trial(&d.trial);
    let parsed = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    value["genome"] = parsed(&d.trial.genome_json);
    value["hparams"] = parsed(&d.trial.hparams_json);
    value["metrics"] = json!(d.trial.metrics());
    value["epochs"] = d
        .epochs
        .iter()
        .map(|e| {
            json!({
                "epoch": e.epoch,
                "val_accuracy": number(Some(e.val_accuracy)),
                "train_loss": number(e.train_loss),
                "metrics": e.metrics(),
            })
        })
        .collect();
    value["lineage"] = d
        .lineage
        .iter()
        .map(|a| {
            json!({
                "id": a.id, "seq": a.seq, "origin": a.origin, "score": number(a.score),
                "accepted": a.accepted, "inherited": a.inherit_from.is_some(),
            })
        })
        .collect();
    value
}

/// The genealogy's nodes: each trial with its parent's score and the change.
pub fn genealogy(rows: &[TrialRow]) -> Value {
    let scores: std::collections::HashMap<&str, Option<f64>> =
        rows.iter().map(|t| (t.id.as_str(), t.score)).collect();
    let nodes: Vec<Value> = rows
        .iter()
        .map(|t| {
            let parent_score = t
                .parent_id
                .as_ref()
                .and_then(|p| scores.get(p.as_str()).copied().flatten());
            let delta = t.score.zip(parent_score).map(|(s, p)| s - p);
            json!({
                "id": t.id, "seq": t.seq, "parent_id": t.parent_id, "origin": t.origin,
                "status": t.status.as_str(), "chain": t.chain, "score": number(t.score),
                "parent_score": number(parent_score), "delta": number(delta),
                "accepted": t.accepted, "inherited": t.inherit_from.is_some(),
            })
        })
        .collect();
    json!({ "nodes": nodes })
}

/// The best-so-far curve.
pub fn best_curve(points: &[BestPoint], finished: i64, now_ms: i64) -> Value {
    let points: Vec<Value> = points
        .iter()
        .map(|p| {
            json!({
                "finished": p.finished, "at_ms": p.finished_at_ms,
                "score": number(Some(p.score)), "trial_id": p.trial_id,
            })
        })
        .collect();
    json!({ "points": points, "finished": finished, "now_ms": now_ms })
}

/// The chains and their temperature history.
pub fn chains(chains: &[ChainRow], history: &[TemperaturePoint]) -> Value {
    let chains: Vec<Value> = chains
        .iter()
        .map(|c| {
            json!({
                "chain": c.chain, "temperature": number(Some(c.temperature)),
                "current_trial_id": c.current_trial_id, "best_score": number(c.best_score),
                "results": c.results, "accepted": c.accepted, "reheats": c.reheats,
            })
        })
        .collect();
    let history: Vec<Value> = history
        .iter()
        .map(|h| {
            json!({
                "chain": h.chain, "seq": h.seq, "at_ms": h.at_ms,
                "temperature": number(Some(h.temperature)),
            })
        })
        .collect();
    json!({ "chains": chains, "history": history })
}

/// The workers view.
pub fn workers(views: &[WorkerView]) -> Value {
    let workers: Vec<Value> = views
        .iter()
        .map(|v| {
            let w = &v.worker;
            let trials: Vec<Value> = v
                .held
                .iter()
                .map(|t| {
                    json!({
                        "trial_id": t.id, "experiment_id": t.experiment_id,
                        "status": t.status.as_str(), "epoch": t.epoch,
                    })
                })
                .collect();
            json!({
                "id": w.id, "name": w.name, "device": w.device, "slots": w.slots,
                "active": w.status == "active", "last_seen_ms": w.last_seen_ms,
                "trials": trials,
            })
        })
        .collect();
    json!({ "workers": workers })
}
