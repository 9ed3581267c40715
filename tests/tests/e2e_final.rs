//! Search on a subset, then final training on everything (`[final] search_subset`), with the
//! real binaries on loopback: a master and two workers explore a Fashion-MNIST subset where
//! every search trial trains on the first examples of the training split only, then the final
//! phase retrains the best architecture on the whole split from its weights. The pool records
//! how many examples each trial trained on, and both kinds of model re-score to their reported
//! test accuracy from their exports, so search and final trials share one validation split, one
//! test split and one normalisation.

use explore_tests::{
    describe, require_fashion_mnist, rescore_export, start_workers, submit_and_list_trials,
    MasterProc, Split,
};
use serde_json::Value;

const TRAIN_SUBSET: u32 = 1500;
const TEST_SUBSET: u32 = 300;
const VALIDATION_FRACTION: f64 = 0.2;
/// The training split: the subset less its validation part.
const TRAINING_SPLIT: u32 = 1200;
const SEARCH_SUBSET: u32 = 400;
const FINAL_EPOCHS: u64 = 2;

fn spec() -> String {
    format!(
        r#"
name = "e2e-final"
seed = 11

[budget]
max_trials = 6

[data]
dataset = "fashion-mnist"
train_subset = {TRAIN_SUBSET}
test_subset = {TEST_SUBSET}
validation_fraction = {VALIDATION_FRACTION}

[final]
top_k = 1
epochs = {FINAL_EPOCHS}
search_subset = {SEARCH_SUBSET}

[early_stopping]
rule = "none"

[search]
epochs = [1, 2]
channels = [8, 16]
dense_units = [32, 64]
batch_sizes = [64]

[[seeds]]
preset = "cnn2"
hparams = {{ optimizer = "adamw", learning_rate = 0.003, schedule = "constant", batch_size = 64, weight_decay = 0.0001, epochs = 2 }}
"#
    )
}

fn examples(t: &Value) -> u64 {
    t["metrics"]["train_examples"]
        .as_f64()
        .unwrap_or_else(|| panic!("no train_examples metric: {t:#}")) as u64
}

#[test]
fn the_search_trains_on_a_subset_and_the_final_trial_on_the_whole_split() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let master = MasterProc::start(
        &tmp.path().join("master"),
        &["--heartbeat-secs", "1", "--lease-secs", "20"],
    )
    .unwrap();
    let _workers = start_workers(&master, tmp.path(), 2).unwrap();
    let (experiment, trials) = submit_and_list_trials(&master, tmp.path(), &spec()).unwrap();
    let dump = serde_json::to_string_pretty(&trials).unwrap();
    let is_final = |t: &Value| t["phase"] == "final";
    // `master trials --output json` says each trial's phase, in agreement with its origin.
    for t in &trials {
        let origin = t["origin"].as_str().unwrap();
        assert!(t["phase"] == "search" || t["phase"] == "final", "{t:#}");
        assert_eq!(is_final(t), origin.starts_with("final:"), "{t:#}");
    }

    // Every completed search trial trained on the first SEARCH_SUBSET examples only.
    let search: Vec<&Value> = trials
        .iter()
        .filter(|t| !is_final(t) && t["status"] == "completed")
        .collect();
    assert!(search.len() >= 2, "{dump}");
    for t in &search {
        assert_eq!(examples(t), u64::from(SEARCH_SUBSET), "{t:#}");
        // What the master estimates a final trial's time from (`within_wall_budget`): the
        // whole split's size, and the validation part of the training time.
        let metric = |name: &str| t["metrics"][name].as_f64().unwrap_or(-1.0);
        assert_eq!(
            metric("split_examples") as u64,
            u64::from(TRAINING_SPLIT),
            "{t:#}"
        );
        let (eval, train) = (metric("eval_seconds"), metric("train_seconds"));
        assert!(eval > 0.0 && eval < train, "{t:#}");
        // The trial's whole time on its slot: training, then test scoring and the upload.
        assert!(metric("wall_seconds") > train, "{t:#}");
    }
    // One final trial, from the best search trial's weights, on the whole training split.
    let finals: Vec<&Value> = trials.iter().filter(|t| is_final(t)).collect();
    assert_eq!(finals.len(), 1, "{dump}");
    let fin = finals[0];
    assert_eq!(fin["status"], "completed", "{dump}");
    assert_eq!(examples(fin), u64::from(TRAINING_SPLIT), "{fin:#}");
    assert_eq!(fin["epochs_run"], FINAL_EPOCHS, "{fin:#}");
    assert_eq!(fin["inherited"], true, "from its weights: {fin:#}");
    let best_search = search
        .iter()
        .max_by(|a, b| {
            a["score"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["score"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(fin["parent_trial_id"], best_search["trial_id"], "{dump}");

    // Both kinds re-score to their reported test accuracy: the same test split and the same
    // normalisation (the whole training split's), whatever part of it a trial trained on.
    let split = Split {
        train_subset: TRAIN_SUBSET,
        test_subset: TEST_SUBSET,
        validation_fraction: VALIDATION_FRACTION,
        seed: 11,
    };
    for (name, t) in [("search", *best_search), ("final", fin)] {
        let dir = tmp.path().join(name);
        let id = t["trial_id"].as_str().unwrap();
        let out = master
            .client(&["export", &experiment, "--trial", id, dir.to_str().unwrap()])
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        let (card, val, test) = rescore_export(&dir, split).unwrap();
        let reported_val = t["score"].as_f64().unwrap();
        let reported_test = t["test_accuracy"].as_f64().unwrap();
        assert!(
            (val - reported_val).abs() < 1e-9,
            "{name}: {val} vs {reported_val}"
        );
        assert!(
            (test - reported_test).abs() < 1e-9,
            "{name}: {test} vs {reported_test}"
        );
        assert_eq!(
            card["split"]["trained_on"].as_f64().map(|n| n as u64),
            Some(examples(t)),
            "{card:#}"
        );
        assert_eq!(card["split"]["train"], TRAINING_SPLIT, "{card:#}");
        let md = std::fs::read_to_string(dir.join("MODEL_CARD.md")).unwrap();
        assert!(
            md.contains(&format!(
                "this model trained on: {} training examples",
                examples(t)
            )),
            "{md}"
        );
    }
}
