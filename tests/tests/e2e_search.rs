//! The search features with the real binaries on loopback: a master and two workers run an
//! experiment with early stopping and weight inheritance on a Fashion-MNIST subset. A seed that
//! cannot learn (learning rate 1e-7) falls below its peers' median after its first epoch and must
//! be recorded as pruned with the reason; children of trained models must start from their
//! parents' weights (the worker reports how many tensors it copied) and still be scored.

use explore_tests::{
    describe, require_fashion_mnist, start_workers, submit_and_list_trials, MasterProc,
};

const TRAIN_SUBSET: u32 = 1500;
const TEST_SUBSET: u32 = 300;

fn spec() -> String {
    let good = |lr: f64| {
        format!(
            "hparams = {{ optimizer = \"adamw\", learning_rate = {lr}, schedule = \"constant\", \
             batch_size = 64, weight_decay = 0.0001, epochs = 3 }}"
        )
    };
    format!(
        r#"
name = "e2e-search"
seed = 5

[budget]
max_trials = 8

[data]
dataset = "fashion-mnist"
train_subset = {TRAIN_SUBSET}
test_subset = {TEST_SUBSET}
validation_fraction = 0.2

[annealing]
chains = 2

[early_stopping]
rule = "median"
grace_epochs = 1
min_peers = 2

[inheritance]
enabled = true
fine_tune_epochs = 1

[search]
epochs = [2, 3]
channels = [8, 16]
dense_units = [32, 64]
batch_sizes = [64]

[[seeds]]
preset = "cnn2"
{}

[[seeds]]
preset = "cnn3"
{}

[[seeds]]
preset = "cnn2"
hparams = {{ optimizer = "sgd", learning_rate = 0.0000001, schedule = "constant", batch_size = 64, weight_decay = 0.0, epochs = 3 }}
"#,
        good(0.003),
        good(0.002)
    )
}

#[test]
fn a_hopeless_trial_is_pruned_and_children_inherit_weights() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let master = MasterProc::start(
        &tmp.path().join("master"),
        &["--heartbeat-secs", "1", "--lease-secs", "20"],
    )
    .unwrap();
    let _workers = start_workers(&master, tmp.path(), 2).unwrap();
    let (_, trials) = submit_and_list_trials(&master, tmp.path(), &spec()).unwrap();
    let dump = serde_json::to_string_pretty(&trials).unwrap();

    // The hopeless seed (seq 2) was stopped after its first epoch, with the reason recorded.
    let hopeless = trials.iter().find(|t| t["seq"] == 2).expect("seed 2");
    assert_eq!(hopeless["status"], "pruned", "{dump}");
    assert!(
        hopeless["error"].as_str().unwrap().contains("median"),
        "{dump}"
    );
    let stopped_after = hopeless["epochs_run"].as_u64().unwrap();
    assert!((1..3).contains(&stopped_after), "stopped early: {dump}");
    assert!(hopeless["score"].as_f64().unwrap() < 0.5, "{dump}");

    // Children of trained models inherited their weights, were trained and scored.
    let inherited: Vec<_> = trials
        .iter()
        .filter(|t| t["inherited"] == true && t["status"] == "completed")
        .collect();
    assert!(
        !inherited.is_empty(),
        "no completed child inherited: {dump}"
    );
    for child in &inherited {
        let parent_id = child["parent_trial_id"].as_str().unwrap();
        let parent = trials
            .iter()
            .find(|t| t["trial_id"] == parent_id)
            .expect("the parent is in the pool");
        assert_eq!(parent["status"], "completed", "{dump}");
        assert!(child["score"].as_f64().unwrap() > 0.5, "{dump}");
        assert!(child["inherited_tensors"].as_f64().unwrap() > 0.0, "{dump}");
        assert!(child["origin"]
            .as_str()
            .unwrap()
            .contains("inherits weights"));
        assert_eq!(
            child["hparams"]["epochs"], 1,
            "a one-epoch fine-tune: {dump}"
        );
    }

    // `master status` shows the pruned count.
    let status = master.client(&["status"]).unwrap();
    assert!(status.status.success(), "{}", describe(&status));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("PRUNED"),
        "{}",
        describe(&status)
    );
}
