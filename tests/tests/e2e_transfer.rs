//! Transfer through the cluster with the real binaries on loopback, a master and two workers:
//! a small source experiment on Fashion-MNIST, then two `[transfer]` experiments from it to
//! MNIST subsets (S2 and S4). The first probes the source models (LogME, LEEP, NCE, latency),
//! ranks its nine fine-tunes by LogME (the pool has no history for the predictor yet) and runs
//! them all; the second probes again and lets the learned predictor, fitted on those nine,
//! choose which three of its nine (model, settings) pairs to fine-tune with gradient mixing.
//! Its seed trials must start from the source's models (inheriting every tensor), replay the
//! source's data (retention metrics in the pool), and its exported best model must re-score to
//! its reported accuracy.

use explore_tests::{
    describe, require_fashion_mnist, require_mnist, rescore_export_on, start_workers,
    submit_and_list_trials, MasterProc,
};

const SEED: u64 = 5;

fn source_spec() -> String {
    format!(
        r#"
name = "e2e-transfer-source"
seed = {SEED}

[budget]
max_trials = 4

[data]
dataset = "fashion-mnist"
train_subset = 1500
test_subset = 300
validation_fraction = 0.2

[early_stopping]
rule = "none"

[search]
epochs = [2, 2]
channels = [8, 16]
dense_units = [32]
batch_sizes = [64]
optimizers = ["adam"]
schedules = ["constant"]

[[seeds]]
preset = "cnn2"
hparams = {{ optimizer = "adam", learning_rate = 0.002, schedule = "constant", batch_size = 64, weight_decay = 0.0, epochs = 2 }}
"#
    )
}

/// Three fine-tune settings every transfer below tries with each of its three models.
const SETTINGS: &str = r#"settings = [
  { optimizer = "adamw", learning_rate = 0.001, schedule = "constant", batch_size = 16, weight_decay = 0.0, epochs = 1 },
  { optimizer = "adamw", learning_rate = 0.004, schedule = "constant", batch_size = 16, weight_decay = 0.0, epochs = 1 },
  { optimizer = "sgd", learning_rate = 0.02, schedule = "constant", batch_size = 16, weight_decay = 0.0, epochs = 1 },
]"#;

/// The first transfer: plain fine-tunes of every pair, the predictor's history.
fn history_spec() -> String {
    format!(
        r#"
name = "e2e-transfer-history"
seed = {SEED}

[budget]
max_trials = 9

[data]
dataset = "mnist"
per_class = 20
test_subset = 300
validation_fraction = 0.25

[early_stopping]
rule = "none"

[transfer]
from = "e2e-transfer-source"
models = 3
{SETTINGS}
"#
    )
}

const TARGET_DATA: &str = r#"
[data]
dataset = "mnist"
per_class = 20
test_subset = 300
validation_fraction = 0.25
transform = { rotate = 20 }
"#;

fn transfer_spec() -> String {
    format!(
        r#"
name = "e2e-transfer"
seed = {SEED}

[budget]
max_trials = 3
{TARGET_DATA}
[training]
objective = "gradient_mixing"

[early_stopping]
rule = "none"

[search]
epochs = [1, 1]
channels = [8, 16]
dense_units = [32]
batch_sizes = [16]
optimizers = ["adamw"]
schedules = ["constant"]

[transfer]
from = "e2e-transfer-source"
models = 3
{SETTINGS}
"#
    )
}

/// The trials of a listing that are probes, and those that train.
fn by_kind(trials: &[serde_json::Value]) -> (Vec<&serde_json::Value>, Vec<&serde_json::Value>) {
    trials.iter().partition(|t| t["kind"] == "probe")
}

/// Checks that each of `count` distinct source models was probed once, with finite scores.
fn assert_probed(probes: &[&serde_json::Value], count: usize, dump: &str) {
    assert_eq!(probes.len(), count, "{dump}");
    for p in probes {
        assert_eq!(p["status"], "completed", "{dump}");
        for name in ["probe.logme", "probe.leep", "probe.nce", "probe.latency_ms"] {
            assert!(
                p["metrics"][name].as_f64().is_some_and(f64::is_finite),
                "{name}: {dump}"
            );
        }
        assert!(
            p["metrics"]["probe.latency_ms"].as_f64().unwrap() > 0.0,
            "{dump}"
        );
        assert_eq!(
            p["metrics"]["probe.examples"].as_f64(),
            Some(150.0),
            "{dump}"
        );
    }
}

#[test]
fn transfers_probe_rank_by_predictor_fine_tune_and_export_a_rescorable_model() {
    require_fashion_mnist();
    require_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let master = MasterProc::start(
        &tmp.path().join("master"),
        &["--heartbeat-secs", "1", "--lease-secs", "20"],
    )
    .unwrap();
    let _workers = start_workers(&master, tmp.path(), 2).unwrap();
    let source_dir = tmp.path().join("source");
    std::fs::create_dir_all(&source_dir).unwrap();
    let (_, source) = submit_and_list_trials(&master, &source_dir, &source_spec()).unwrap();
    let source_scores: Vec<(f64, String)> = source
        .iter()
        .filter(|t| t["status"] == "completed")
        .map(|t| {
            (
                t["score"].as_f64().unwrap(),
                t["trial_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();

    assert_eq!(source_scores.len(), 4, "{source:?}");

    // 1. no history yet: every pair is fine-tuned, ordered by the probes' LogME
    let history_dir = tmp.path().join("history");
    std::fs::create_dir_all(&history_dir).unwrap();
    let (_, history) = submit_and_list_trials(&master, &history_dir, &history_spec()).unwrap();
    let dump = serde_json::to_string_pretty(&history).unwrap();
    let (probes, fine_tunes) = by_kind(&history);
    assert_probed(&probes, 3, &dump);
    assert_eq!(fine_tunes.len(), 9, "{dump}");
    let mut last_logme = f64::INFINITY;
    for t in &fine_tunes {
        assert_eq!(t["status"], "completed", "{dump}");
        let origin = t["origin"].as_str().unwrap();
        assert!(origin.contains("ranked by LogME"), "{dump}");
        let logme: f64 = origin
            .split("ranked by LogME ")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no LogME in {origin}"));
        assert!(logme <= last_logme + 1e-4, "not best LogME first: {dump}");
        last_logme = logme;
    }

    // 2. the predictor, fitted on those nine, picks three of nine pairs
    let target_dir = tmp.path().join("target");
    std::fs::create_dir_all(&target_dir).unwrap();
    let (experiment_id, trials) =
        submit_and_list_trials(&master, &target_dir, &transfer_spec()).unwrap();
    let dump = serde_json::to_string_pretty(&trials).unwrap();
    let (probes, fine_tunes) = by_kind(&trials);
    assert_probed(&probes, 3, &dump);
    let completed: Vec<_> = fine_tunes
        .iter()
        .filter(|t| t["status"] == "completed")
        .collect();
    assert_eq!(completed.len(), 3, "{dump}");
    for seed in &fine_tunes {
        let origin = seed["origin"].as_str().unwrap();
        assert!(origin.contains("transfer e2e-transfer-source#"), "{dump}");
        // fitted on the first transfer's nine fine-tunes, and refitted as this one's arrive
        assert!(
            origin.contains("predicted") && origin.contains("fitted on"),
            "{dump}"
        );
        let predicted = seed["predicted_score"].as_f64().expect("a prediction");
        assert!(predicted.is_finite(), "{dump}");
        assert!(
            seed["predicted_std"].as_f64().is_some_and(|s| s >= 0.0),
            "{dump}"
        );
        assert_eq!(seed["inherited"], true, "{dump}");
        // same architecture: every tensor of the source model is inherited
        assert!(
            seed["inherited_tensors"].as_f64().unwrap_or(0.0) >= 6.0,
            "{dump}"
        );
    }
    assert!(
        fine_tunes.iter().any(|t| t["origin"]
            .as_str()
            .unwrap()
            .contains("fitted on 9 fine-tunes")),
        "{dump}"
    );
    for t in &completed {
        assert_eq!(t["hparams"]["objective"], "gradient_mixing", "{dump}");
        let kept = t["epoch_metrics"]["gradient_mixing.source_acc"]
            .as_f64()
            .unwrap_or_else(|| panic!("no retention metric: {dump}"));
        // with the gentle setting the source is still recognised after one replayed epoch (the
        // SGD setting's larger steps may forget: the predictor is free to pick it)
        if t["hparams"]["learning_rate"] == 0.001 {
            assert!(kept > 0.3, "{dump}");
        }
    }

    let export_dir = tmp.path().join("best");
    let best = master
        .client(&[
            "best",
            &experiment_id,
            "--export",
            export_dir.to_str().unwrap(),
        ])
        .unwrap();
    assert!(best.status.success(), "{}", describe(&best));
    let data = tmp.path().join("target-data.toml");
    std::fs::write(&data, TARGET_DATA).unwrap();
    let (card, val, _) = rescore_export_on(
        &export_dir,
        &[
            "--data-config",
            data.to_str().unwrap(),
            "--split-seed",
            &SEED.to_string(),
        ],
    )
    .unwrap();
    let reported = card["validation_accuracy"].as_f64().unwrap();
    assert!(
        (val - reported).abs() < 1e-9,
        "re-scored {val}, reported {reported}"
    );
}
