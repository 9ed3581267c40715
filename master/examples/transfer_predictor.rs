//! The evaluation of the S2 benchmark (`bash bench/transfer.sh s2`): reads the rows that
//! `bench/transfer/s2.py` collected (zoo models, probes, brute-force fine-tunes), fits the
//! transfer predictor leave-one-task-out and prints, as markdown, how well it and the baselines
//! rank the (model, settings) pairs of each held-out task against the fine-tuned truth, and what
//! following its top pick costs against brute force.
//!
//! ```text
//! cargo build -p explore-master --example transfer_predictor
//! target/debug/examples/transfer_predictor bench/transfer/results/s2.jsonl
//! ```
//!
//! Methods (each gives one score per (model, settings) pair of the held-out task, highest =
//! fine-tune first):
//! - `predictor`: [`Predictor::fit`] on every fine-tune of the other tasks, its predicted mean;
//! - `LogME`: the probe's LogME of the model (the same for each of its settings), ties broken by
//!   the fixed settings order of the benchmark; likewise `source accuracy` (the model's
//!   validation accuracy on Fashion-MNIST) and `parameter count` (larger first);
//! - `settings prior, then source accuracy`: the settings ordered by their mean fine-tuned
//!   validation accuracy on the other tasks (what the history says without any model), the
//!   models within a setting by source accuracy: the bar for what the predictor adds;
//! - `random`: a seeded random order, metrics averaged over 100 shuffles.
//!
//! Metrics: [`weighted_kendall_tau`] between the scores and the fine-tuned validation
//! accuracies, and [`top1_regret`] in points (best validation accuracy of the task minus that of
//! the pair ranked first); the test-accuracy regret of the same pick is shown beside it.

use std::collections::{BTreeMap, HashMap};
use std::fs;

use explore_master::predictor::{top1_regret, weighted_kendall_tau, Predictor, TransferFeatures};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::Value;

const RANDOM_SHUFFLES: u64 = 100;

struct FineTune {
    model: String,
    task: String,
    settings: String,
    settings_index: usize,
    features: TransferFeatures,
    val: f64,
    test: f64,
    wall_seconds: f64,
}

struct Probe {
    wall_seconds: f64,
    seconds: f64,
}

fn num(row: &Value, key: &str) -> f64 {
    row[key]
        .as_f64()
        .unwrap_or_else(|| panic!("row lacks number `{key}`: {row}"))
}

fn text(row: &Value, key: &str) -> String {
    row[key]
        .as_str()
        .unwrap_or_else(|| panic!("row lacks string `{key}`: {row}"))
        .to_string()
}

/// Scores that order the pairs by `key` (highest first), ties by the settings order: n for the
/// first, n - 1 for the second, …
fn lexicographic(rows: &[&FineTune], key: impl Fn(&FineTune) -> f64) -> Vec<f64> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        key(rows[b])
            .total_cmp(&key(rows[a]))
            .then(rows[a].settings_index.cmp(&rows[b].settings_index))
    });
    let mut scores = vec![0.0; rows.len()];
    for (position, &index) in order.iter().enumerate() {
        scores[index] = (rows.len() - position) as f64;
    }
    scores
}

/// Scores that order the pairs by the mean validation accuracy of their settings on the other
/// tasks (`settings_mean`), then by source accuracy, then by the settings order.
fn settings_then_source(rows: &[&FineTune], settings_mean: &HashMap<String, f64>) -> Vec<f64> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    let prior = |f: &FineTune| settings_mean[&f.settings];
    order.sort_by(|&a, &b| {
        prior(rows[b])
            .total_cmp(&prior(rows[a]))
            .then(
                rows[b]
                    .features
                    .source_score
                    .total_cmp(&rows[a].features.source_score),
            )
            .then(rows[a].settings_index.cmp(&rows[b].settings_index))
    });
    let mut scores = vec![0.0; rows.len()];
    for (position, &index) in order.iter().enumerate() {
        scores[index] = (rows.len() - position) as f64;
    }
    scores
}

/// Test-accuracy regret (points) of the pair `scores` ranks first.
fn test_regret(rows: &[&FineTune], scores: &[f64]) -> f64 {
    let tests: Vec<f64> = rows.iter().map(|r| r.test).collect();
    100.0 * top1_regret(scores, &tests)
}

fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (index, value) in values.iter().enumerate() {
        if *value > values[best] {
            best = index;
        }
    }
    best
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Per method and task: (τ_w, val regret in points, test regret in points).
type Results = BTreeMap<usize, Vec<(f64, f64, f64)>>;

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bench/transfer/results/s2.jsonl".to_string());
    let content = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let rows: Vec<Value> = content
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();

    let models: HashMap<String, &Value> = rows
        .iter()
        .filter(|r| r["kind"] == "model")
        .map(|r| (text(r, "model"), r))
        .collect();
    let probe_rows: HashMap<(String, String), &Value> = rows
        .iter()
        .filter(|r| r["kind"] == "probe")
        .map(|r| ((text(r, "model"), text(r, "task")), r))
        .collect();
    let mut tasks: Vec<String> = Vec::new();
    let mut fine_tunes = Vec::new();
    for row in rows.iter().filter(|r| r["kind"] == "finetune") {
        let (model_name, task) = (text(row, "model"), text(row, "task"));
        if !tasks.contains(&task) {
            tasks.push(task.clone());
        }
        let model = models[&model_name];
        let probe = probe_rows[&(model_name.clone(), task.clone())];
        let features = TransferFeatures {
            params: num(model, "params") as u64,
            flops: num(model, "flops") as u64,
            depth: num(model, "depth") as u32,
            blocks: num(model, "blocks") as u32,
            source_score: num(model, "source_val"),
            learning_rate: num(row, "learning_rate"),
            epochs: num(row, "epochs") as u32,
            batch_size: num(row, "batch_size") as u32,
            weight_decay: num(row, "weight_decay"),
            objective: text(row, "objective"),
            optimizer: text(row, "optimizer"),
            head_only: row["head_only"].as_bool().unwrap_or(false),
            logme: num(probe, "logme"),
            leep: num(probe, "leep"),
            nce: num(probe, "nce"),
            examples: num(probe, "examples") as u32,
            classes: num(probe, "classes") as u32,
            channels: 1,
            size: 28,
        };
        fine_tunes.push(FineTune {
            model: model_name,
            task,
            settings: text(row, "settings"),
            settings_index: num(row, "settings_index") as usize,
            features,
            val: num(row, "val_accuracy"),
            test: num(row, "test_accuracy"),
            wall_seconds: num(row, "wall_seconds"),
        });
    }
    let probes: HashMap<(String, String), Probe> = probe_rows
        .iter()
        .map(|(key, row)| {
            (
                key.clone(),
                Probe {
                    wall_seconds: num(row, "wall_seconds"),
                    seconds: num(row, "probe_seconds"),
                },
            )
        })
        .collect();

    let methods = [
        "predictor (leave-one-task-out)",
        "LogME alone",
        "source accuracy",
        "parameter count",
        "settings prior, then source accuracy",
        "random (mean of 100 shuffles)",
    ];
    let mut results: Results = BTreeMap::new();
    let mut model_level: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut compute_rows = Vec::new();
    let (mut guided_total, mut brute_total) = (0.0, 0.0);
    let mut spread_rows = Vec::new();
    for (task_index, task) in tasks.iter().enumerate() {
        let held: Vec<&FineTune> = fine_tunes.iter().filter(|f| &f.task == task).collect();
        let history: Vec<(TransferFeatures, f64)> = fine_tunes
            .iter()
            .filter(|f| &f.task != task)
            .map(|f| (f.features.clone(), f.val))
            .collect();
        let predictor = Predictor::fit(&history).expect("the predictor fits");
        let predicted: Vec<f64> = held
            .iter()
            .map(|f| predictor.predict(&f.features).expect("a prediction").mean)
            .collect();
        let actual: Vec<f64> = held.iter().map(|f| f.val).collect();
        let mut settings_sums: HashMap<String, (f64, f64)> = HashMap::new();
        for f in fine_tunes.iter().filter(|f| &f.task != task) {
            let entry = settings_sums.entry(f.settings.clone()).or_default();
            entry.0 += f.val;
            entry.1 += 1.0;
        }
        let settings_mean: HashMap<String, f64> = settings_sums
            .into_iter()
            .map(|(name, (sum, count))| (name, sum / count))
            .collect();
        let scored = [
            predicted.clone(),
            lexicographic(&held, |f| f.features.logme),
            lexicographic(&held, |f| f.features.source_score),
            lexicographic(&held, |f| f.features.params as f64),
            settings_then_source(&held, &settings_mean),
        ];
        for (method, scores) in scored.iter().enumerate() {
            results.entry(method).or_default().push((
                weighted_kendall_tau(scores, &actual),
                100.0 * top1_regret(scores, &actual),
                test_regret(&held, scores),
            ));
        }
        let mut rng = StdRng::seed_from_u64(task_index as u64);
        let (mut taus, mut regrets, mut test_regrets) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RANDOM_SHUFFLES {
            let mut scores: Vec<f64> = (0..held.len()).map(|i| i as f64).collect();
            scores.shuffle(&mut rng);
            taus.push(weighted_kendall_tau(&scores, &actual));
            regrets.push(100.0 * top1_regret(&scores, &actual));
            test_regrets.push(test_regret(&held, &scores));
        }
        results.entry(methods.len() - 1).or_default().push((
            mean(&taus),
            mean(&regrets),
            mean(&test_regrets),
        ));

        // Model level, the LogME paper's setting: rank the models (not pairs) against each
        // model's best fine-tuned accuracy over the settings.
        let mut names: Vec<&str> = held.iter().map(|f| f.model.as_str()).collect();
        names.sort();
        names.dedup();
        let best_of = |name: &str, value: &dyn Fn(usize) -> f64| {
            held.iter()
                .enumerate()
                .filter(|(_, f)| f.model == name)
                .map(|(i, _)| value(i))
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let truth: Vec<f64> = names.iter().map(|n| best_of(n, &|i| actual[i])).collect();
        let by_logme: Vec<f64> = names
            .iter()
            .map(|n| best_of(n, &|i| held[i].features.logme))
            .collect();
        let by_predictor: Vec<f64> = names
            .iter()
            .map(|n| best_of(n, &|i| predicted[i]))
            .collect();
        let by_source: Vec<f64> = names
            .iter()
            .map(|n| best_of(n, &|i| held[i].features.source_score))
            .collect();
        model_level
            .entry(0)
            .or_default()
            .push(weighted_kendall_tau(&by_predictor, &truth));
        model_level
            .entry(1)
            .or_default()
            .push(weighted_kendall_tau(&by_logme, &truth));
        model_level
            .entry(2)
            .or_default()
            .push(weighted_kendall_tau(&by_source, &truth));

        // Compute: probing every model of the task and fine-tuning the predictor's top pick,
        // against fine-tuning every pair.
        let pick = argmax(&predicted);
        let probe_wall: f64 = names
            .iter()
            .map(|n| probes[&(n.to_string(), task.clone())].wall_seconds)
            .sum();
        let probe_inner: f64 = names
            .iter()
            .map(|n| probes[&(n.to_string(), task.clone())].seconds)
            .sum();
        let brute: f64 = held.iter().map(|f| f.wall_seconds).sum();
        let guided = probe_wall + held[pick].wall_seconds;
        guided_total += guided;
        brute_total += brute;
        compute_rows.push(format!(
            "| {task} | {} | {probe_wall:.1} (in-process {probe_inner:.1}) | {:.1} | {guided:.1} | {brute:.1} | {:.1}× |",
            names.len(),
            held[pick].wall_seconds,
            brute / guided
        ));
        let best = argmax(&actual);
        let worst = actual.iter().copied().fold(f64::INFINITY, f64::min);
        spread_rows.push(format!(
            "| {task} | {} | {} / {} ({:.3} / {:.3}) | {} / {} ({:.3} / {:.3}; predicted {:.3} ± {:.3}) | {:.3} | {:.3} |",
            held.len(),
            held[best].model,
            held[best].settings,
            held[best].val,
            held[best].test,
            held[pick].model,
            held[pick].settings,
            held[pick].val,
            held[pick].test,
            predicted[pick],
            predictor.predict(&held[pick].features).unwrap().std,
            mean(&actual),
            worst,
        ));
    }

    // Markdown.
    let columns = tasks.join(" | ");
    let rule = "---|".repeat(tasks.len());
    println!(
        "S2 predictor quality: {} source models × {} fine-tune settings = {} pairs per target task, {} tasks, {} fine-tunes in all; leave-one-task-out (the predictor of each task is fitted on the other {} tasks' {} fine-tunes).\n",
        fine_tunes.len() / tasks.len() / count_settings(&fine_tunes),
        count_settings(&fine_tunes),
        fine_tunes.len() / tasks.len(),
        tasks.len(),
        fine_tunes.len(),
        tasks.len() - 1,
        fine_tunes.len() - fine_tunes.len() / tasks.len(),
    );
    println!("Weighted Kendall τ (Vigna's τ_h, as scipy's `weightedtau`) of each method's ranking of the pairs against their fine-tuned validation accuracy, and top-1 regret (points of validation accuracy: best pair minus the pair ranked first; in brackets the same pick's test-accuracy regret):\n");
    println!("| method | mean τ_w | {columns} | median regret (test) | {columns} |");
    println!("|---|---|{rule}---|{rule}");
    for (index, method) in methods.iter().enumerate() {
        let per_task = &results[&index];
        let taus: Vec<f64> = per_task.iter().map(|r| r.0).collect();
        let regrets: Vec<f64> = per_task.iter().map(|r| r.1).collect();
        let tests: Vec<f64> = per_task.iter().map(|r| r.2).collect();
        let tau_cells: Vec<String> = taus.iter().map(|t| format!("{t:.3}")).collect();
        let regret_cells: Vec<String> = per_task
            .iter()
            .map(|r| format!("{:.1} ({:.1})", r.1, r.2))
            .collect();
        println!(
            "| {method} | **{:.3}** | {} | **{:.1}** ({:.1}) | {} |",
            mean(&taus),
            tau_cells.join(" | "),
            median(&regrets),
            median(&tests),
            regret_cells.join(" | "),
        );
    }

    println!("\nModel level (the LogME paper's setting): τ_w of ranking the source models against each model's best fine-tuned validation accuracy over the settings (the predictor: its best predicted setting per model):\n");
    println!("| method | mean τ_w | {columns} |");
    println!("|---|---|{rule}");
    for (index, name) in ["predictor", "LogME", "source accuracy"].iter().enumerate() {
        let taus = &model_level[&index];
        let cells: Vec<String> = taus.iter().map(|t| format!("{t:.3}")).collect();
        println!("| {name} | {:.3} | {} |", mean(taus), cells.join(" | "));
    }

    println!("\nWhat there is to gain per task, and the predictor's pick (validation / test accuracy):\n");
    println!("| task | pairs | best pair (val / test) | predictor's pick (val / test) | mean val | worst val |");
    println!("|---|---|---|---|---|---|");
    for row in &spread_rows {
        println!("{row}");
    }

    println!("\nCompute, wall seconds of the worker commands (process start and data loading included): probing every model of the task plus fine-tuning the predictor's top pick, against fine-tuning every pair (brute force):\n");
    println!("| task | probes | probe seconds | top-1 fine-tune | guided total | brute force | brute / guided |");
    println!("|---|---|---|---|---|---|---|");
    for row in &compute_rows {
        println!("{row}");
    }
    println!(
        "| all tasks | | | | {guided_total:.1} | {brute_total:.1} | {:.1}× |",
        brute_total / guided_total
    );

    // The goals of issue 9, checked.
    let taus = |index: usize| mean(&results[&index].iter().map(|r| r.0).collect::<Vec<_>>());
    let regret = median(&results[&0].iter().map(|r| r.1).collect::<Vec<_>>());
    let (predictor_tau, logme_tau) = (taus(0), taus(1));
    let verdict = |met: bool| if met { "met" } else { "not met" };
    println!("\nGoals: τ_w ≥ 0.5: {predictor_tau:.3}, {}; τ_w ≥ LogME + 0.1 = {:.3}: {}; median top-1 regret ≤ 1 point: {regret:.1}, {}; ≥ 10× less compute than brute force: {:.1}×, {}.",
        verdict(predictor_tau >= 0.5),
        logme_tau + 0.1,
        verdict(predictor_tau >= logme_tau + 0.1),
        verdict(regret <= 1.0),
        brute_total / guided_total,
        verdict(brute_total / guided_total >= 10.0),
    );

    // The fit on every task, for the record.
    let all: Vec<(TransferFeatures, f64)> = fine_tunes
        .iter()
        .map(|f| (f.features.clone(), f.val))
        .collect();
    let predictor = Predictor::fit(&all).expect("the predictor fits");
    let mut weights = predictor.weights();
    weights.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let top: Vec<String> = weights
        .iter()
        .take(8)
        .map(|(name, w)| format!("{name} {w:+.3}"))
        .collect();
    println!(
        "\nPredictor fitted on all {} fine-tunes: noise σ = {:.3}, largest standardised weights: {}.",
        predictor.observations(),
        1.0 / predictor.beta().sqrt(),
        top.join(", ")
    );
}

fn count_settings(fine_tunes: &[FineTune]) -> usize {
    let mut names: Vec<&str> = fine_tunes.iter().map(|f| f.settings.as_str()).collect();
    names.sort();
    names.dedup();
    names.len()
}
