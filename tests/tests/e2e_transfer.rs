//! Transfer through the cluster with the real binaries on loopback: a small source experiment on
//! Fashion-MNIST, then a `[transfer]` experiment from it on a few-shot rotated domain with the
//! gradient-mixing fine-tune (S4), a master and two workers. The transfer's seed trials must
//! start from the source's best models (inheriting every tensor), replay the source's data
//! (retention metrics in the pool), and its exported best model must re-score to its reported
//! accuracy.

use explore_tests::{
    describe, require_fashion_mnist, rescore_export_on, start_workers, submit_and_list_trials,
    MasterProc,
};

const SEED: u64 = 5;

fn source_spec() -> String {
    format!(
        r#"
name = "e2e-transfer-source"
seed = {SEED}

[budget]
max_trials = 3

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

const TARGET_DATA: &str = r#"
[data]
dataset = "fashion-mnist"
per_class = 20
test_subset = 300
validation_fraction = 0.25
transform = { rotate = 45 }
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
models = 2
settings = [{{ optimizer = "adamw", learning_rate = 0.001, schedule = "constant", batch_size = 16, weight_decay = 0.0, epochs = 1 }}]
"#
    )
}

#[test]
fn a_transfer_experiment_fine_tunes_the_source_models_and_exports_a_rescorable_model() {
    require_fashion_mnist();
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
    let mut source_scores: Vec<(f64, String)> = source
        .iter()
        .filter(|t| t["status"] == "completed")
        .map(|t| {
            (
                t["score"].as_f64().unwrap(),
                t["trial_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(source_scores.len(), 3, "{source:?}");
    source_scores.sort_by(|a, b| b.0.total_cmp(&a.0));

    let target_dir = tmp.path().join("target");
    std::fs::create_dir_all(&target_dir).unwrap();
    let (experiment_id, trials) =
        submit_and_list_trials(&master, &target_dir, &transfer_spec()).unwrap();
    let dump = serde_json::to_string_pretty(&trials).unwrap();
    let completed: Vec<_> = trials
        .iter()
        .filter(|t| t["status"] == "completed")
        .collect();
    assert_eq!(completed.len(), 3, "{dump}");
    // the two seeds are the source's two best models, fine-tuned from their weights
    for seq in 0..2 {
        let seed = trials.iter().find(|t| t["seq"] == seq).unwrap();
        let origin = seed["origin"].as_str().unwrap();
        assert!(origin.contains("transfer e2e-transfer-source#"), "{dump}");
        assert_eq!(seed["inherited"], true, "{dump}");
        // same architecture: every tensor of the source model is inherited
        assert!(
            seed["inherited_tensors"].as_f64().unwrap_or(0.0) >= 6.0,
            "{dump}"
        );
    }
    for t in &completed {
        assert_eq!(t["hparams"]["objective"], "gradient_mixing", "{dump}");
        let kept = t["epoch_metrics"]["gradient_mixing.source_acc"]
            .as_f64()
            .unwrap_or_else(|| panic!("no retention metric: {dump}"));
        // the upright source is still recognised after one replayed epoch
        assert!(kept > 0.3, "{dump}");
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
