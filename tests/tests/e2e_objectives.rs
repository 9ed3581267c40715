//! Training objectives through the cluster with the real binaries on loopback: an experiment
//! in equivalent-learning-rate mode (S3) on a Fashion-MNIST subset with a master and two
//! workers. Every trial must record its objective in its hyperparameters and the ELR metrics of
//! its epochs in the pool (norms held at their initial values); mutations must move the ELR and
//! never learning rate or weight decay; the exported best model, with its cosine head, must
//! re-score to its reported accuracy. Then the domain objectives (S5 and its DANN baseline) on
//! rotated Fashion-MNIST domains: every trial records its objective and the per-epoch domain
//! metrics, and its score is the training domains' validation accuracy. Last, S4: a
//! gradient-mixing experiment on a few-shot rotated domain replaying the upright source.

use explore_tests::{
    describe, require_fashion_mnist, rescore_export, start_workers, submit_and_list_trials,
    MasterProc, Split,
};

const TRAIN_SUBSET: u32 = 1500;
const TEST_SUBSET: u32 = 300;
const SEED: u64 = 11;

fn elr_spec() -> String {
    format!(
        r#"
name = "e2e-elr"
seed = {SEED}

[budget]
max_trials = 5

[data]
dataset = "fashion-mnist"
train_subset = {TRAIN_SUBSET}
test_subset = {TEST_SUBSET}
validation_fraction = 0.2

[training]
objective = "elr"

[early_stopping]
rule = "none"

[inheritance]
enabled = false

[search]
elr = [0.01, 0.3]
epochs = [2, 2]
channels = [8, 16]
dense_units = [32]
batch_sizes = [64]
optimizers = ["sgd"]
schedules = ["cosine"]
architecture_mutation_probability = 0.3

[[seeds]]
preset = "cnn2"
hparams = {{ optimizer = "sgd", learning_rate = 0.03, schedule = "cosine", batch_size = 64, weight_decay = 0.0, epochs = 2 }}
"#
    )
}

#[test]
fn an_elr_experiment_records_its_objective_and_metrics_and_exports_a_rescorable_model() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let master = MasterProc::start(
        &tmp.path().join("master"),
        &["--heartbeat-secs", "1", "--lease-secs", "20"],
    )
    .unwrap();
    let _workers = start_workers(&master, tmp.path(), 2).unwrap();
    let (experiment_id, trials) = submit_and_list_trials(&master, tmp.path(), &elr_spec()).unwrap();
    let dump = serde_json::to_string_pretty(&trials).unwrap();
    let completed: Vec<_> = trials
        .iter()
        .filter(|t| t["status"] == "completed")
        .collect();
    assert_eq!(completed.len(), 5, "{dump}");
    for t in &completed {
        let hp = &t["hparams"];
        let elr = hp["objective"]["elr"]["elr"]
            .as_f64()
            .expect("an ELR trial");
        assert!((0.01..=0.3).contains(&elr), "{dump}");
        assert_eq!(hp["objective"]["elr"]["scale"], 16.0, "{dump}");
        // the seed's learning rate 0.03 is kept as it was and never searched
        assert_eq!(hp["learning_rate"], 0.03, "{dump}");
        assert_eq!(hp["weight_decay"], 0.0, "{dump}");
        let metrics = &t["epoch_metrics"];
        assert!(
            metrics["elr.norm_error"]
                .as_f64()
                .expect("ELR metrics stored")
                < 1e-5,
            "{dump}"
        );
        assert!(metrics["elr.norm_drift"].as_f64().unwrap() > 0.0, "{dump}");
        assert!(t["score"].as_f64().unwrap() > 0.5, "{dump}");
    }
    // the seed: 0.03 over the default squared norm 1/3 (rounded by the conversion)
    let seed = trials.iter().find(|t| t["seq"] == 0).unwrap();
    let seed_elr = seed["hparams"]["objective"]["elr"]["elr"].as_f64().unwrap();
    assert!((seed_elr - 0.09).abs() < 1e-9, "{dump}");
    assert!(
        completed
            .iter()
            .any(|t| t["origin"].as_str().unwrap().contains("elr ")),
        "no mutation moved the ELR: {dump}"
    );

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
    let split = Split {
        train_subset: TRAIN_SUBSET,
        test_subset: TEST_SUBSET,
        validation_fraction: 0.2,
        seed: SEED,
    };
    let (card, val, _) = rescore_export(&export_dir, split).unwrap();
    let reported = card["validation_accuracy"].as_f64().unwrap();
    assert!(
        (val - reported).abs() < 1e-9,
        "re-scored {val}, reported {reported}"
    );
}

/// Two rotated training domains and an upright target, from a small Fashion-MNIST subset.
fn domain_spec(objective: &str) -> String {
    format!(
        r#"
name = "e2e-{objective}"
seed = {SEED}

[budget]
max_trials = 3

[data]
dataset = "fashion-mnist"
train_subset = 600
test_subset = {TEST_SUBSET}
validation_fraction = 0.2

[[data.domains]]
name = "rot30"
transform = {{ rotate = 30 }}

[[data.domains]]
name = "rot60"
transform = {{ rotate = 60 }}

[[data.domains]]
name = "upright"
target = true

[training]
objective = "{objective}"
disentangle_dim = 16

[early_stopping]
rule = "none"

[inheritance]
enabled = false

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

#[test]
fn domain_objectives_record_their_objective_and_domain_metrics_through_the_cluster() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let master = MasterProc::start(
        &tmp.path().join("master"),
        &["--heartbeat-secs", "1", "--lease-secs", "20"],
    )
    .unwrap();
    let _workers = start_workers(&master, tmp.path(), 2).unwrap();
    for objective in ["disentangle", "dann"] {
        let dir = tmp.path().join(objective);
        std::fs::create_dir_all(&dir).unwrap();
        let (_, trials) = submit_and_list_trials(&master, &dir, &domain_spec(objective)).unwrap();
        let dump = serde_json::to_string_pretty(&trials).unwrap();
        let completed: Vec<_> = trials
            .iter()
            .filter(|t| t["status"] == "completed")
            .collect();
        assert_eq!(completed.len(), 3, "{dump}");
        for t in &completed {
            let settings = &t["hparams"]["objective"][objective];
            assert!(settings.is_object(), "{objective} not recorded: {dump}");
            if objective == "disentangle" {
                assert_eq!(settings["dim"], 16, "{dump}");
            }
            let metrics = &t["epoch_metrics"];
            for key in ["target_acc", "domain_probe", "probe_chance"] {
                let value = metrics[format!("{objective}.{key}")]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{objective}.{key} missing: {dump}"));
                assert!((0.0..=1.0).contains(&value), "{dump}");
            }
            assert_eq!(metrics[format!("{objective}.probe_chance")], 0.5, "{dump}");
            // the score is the training domains' validation accuracy: after two epochs on
            // 1,200 rotated images, above the chance of 10 classes
            assert!(t["score"].as_f64().unwrap() > 0.15, "{dump}");
        }
    }
}

fn gradient_mixing_spec() -> String {
    format!(
        r#"
name = "e2e-gradient-mixing"
seed = {SEED}

[budget]
max_trials = 3

[data]
dataset = "fashion-mnist"
per_class = 30
test_subset = {TEST_SUBSET}
validation_fraction = 0.2
transform = {{ rotate = 90 }}

[data.history]
dataset = "fashion-mnist"
per_class = 20
library_per_class = 10
test_subset = {TEST_SUBSET}

[training]
objective = "gradient_mixing"

[early_stopping]
rule = "none"

[inheritance]
enabled = false

[search]
epochs = [2, 2]
channels = [8, 16]
dense_units = [32]
batch_sizes = [32]
optimizers = ["adam"]
schedules = ["constant"]

[[seeds]]
preset = "cnn2"
hparams = {{ optimizer = "adam", learning_rate = 0.002, schedule = "constant", batch_size = 32, weight_decay = 0.0, epochs = 2 }}
"#
    )
}

/// S4 through the cluster: a gradient-mixing experiment on a few-shot rotated domain with the
/// upright source as its history library; every trial records the objective and the
/// per-epoch retention metrics of its epochs.
#[test]
fn a_gradient_mixing_experiment_replays_its_history_and_records_retention() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let master = MasterProc::start(
        &tmp.path().join("master"),
        &["--heartbeat-secs", "1", "--lease-secs", "20"],
    )
    .unwrap();
    let _workers = start_workers(&master, tmp.path(), 2).unwrap();
    let (_, trials) = submit_and_list_trials(&master, tmp.path(), &gradient_mixing_spec()).unwrap();
    let dump = serde_json::to_string_pretty(&trials).unwrap();
    let completed: Vec<_> = trials
        .iter()
        .filter(|t| t["status"] == "completed")
        .collect();
    assert_eq!(completed.len(), 3, "{dump}");
    for t in &completed {
        assert_eq!(t["hparams"]["objective"], "gradient_mixing", "{dump}");
        let metrics = &t["epoch_metrics"];
        for key in ["source_acc", "conflict_rate"] {
            let value = metrics[format!("gradient_mixing.{key}")]
                .as_f64()
                .unwrap_or_else(|| panic!("gradient_mixing.{key} missing: {dump}"));
            assert!((0.0..=1.0).contains(&value), "{dump}");
        }
        assert!(
            metrics["gradient_mixing.library_changed"]
                .as_f64()
                .is_some(),
            "{dump}"
        );
        // 240 rotated training images, two epochs: above the chance of 10 classes
        assert!(t["score"].as_f64().unwrap() > 0.15, "{dump}");
    }
}
