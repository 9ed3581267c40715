//! The whole product on loopback: a real `master`, two real `worker` processes training with
//! libtorch on a Fashion-MNIST subset, an experiment submitted with `master submit --watch`,
//! then the pool's accounting and the exported best model checked.

use std::collections::HashSet;
use std::time::Duration;

use explore_common::client::{admin_client, connect, BearerToken};
use explore_common::proto;
use explore_tests::{
    describe, require_fashion_mnist, rescore_export, start_workers, submitted_experiment_id,
    MasterProc, Split,
};

const MAX_TRIALS: u32 = 6;
const TRAIN_SUBSET: u32 = 2000;
const TEST_SUBSET: u32 = 500;
const SEED: u64 = 11;

fn spec() -> String {
    format!(
        r#"
name = "e2e"
seed = {SEED}

[budget]
max_trials = {MAX_TRIALS}

[data]
dataset = "fashion-mnist"
train_subset = {TRAIN_SUBSET}
test_subset = {TEST_SUBSET}
validation_fraction = 0.2

[search]
epochs = [1, 1]
channels = [8, 16]
dense_units = [32, 64]
batch_sizes = [64, 128]

[[seeds]]
preset = "cnn2"
hparams = {{ optimizer = "adamw", learning_rate = 0.003, schedule = "one_cycle", batch_size = 64, weight_decay = 0.0001, epochs = 1 }}
"#
    )
}

#[test]
fn master_and_two_workers_run_an_experiment_to_completion() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let master = MasterProc::start(
        &tmp.path().join("master"),
        &["--heartbeat-secs", "1", "--lease-secs", "20"],
    )
    .unwrap();
    let mut workers = start_workers(&master, tmp.path(), 2).unwrap();

    let spec_path = tmp.path().join("spec.toml");
    std::fs::write(&spec_path, spec()).unwrap();
    let submit = master
        .client(&["submit", spec_path.to_str().unwrap(), "--watch"])
        .unwrap();
    let logs = || {
        let mut all = String::new();
        for i in 0..2 {
            all += &std::fs::read_to_string(tmp.path().join(format!("worker{i}.log")))
                .unwrap_or_default();
        }
        all += &std::fs::read_to_string(tmp.path().join("master.master.log")).unwrap_or_default();
        all
    };
    assert!(submit.status.success(), "{}\n{}", describe(&submit), logs());
    let stdout = String::from_utf8_lossy(&submit.stdout).to_string();
    assert!(stdout.contains("leaderboard"), "{stdout}");
    let experiment_id = submitted_experiment_id(&stdout).expect("experiment id printed");

    // Accounting, read straight from the admin API.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let trials = rt.block_on(async {
        let token = std::fs::read_to_string(master.token_file()).unwrap();
        let channel = connect(&master.url).await.unwrap();
        let mut admin = admin_client(channel, &BearerToken::new(&token).unwrap());
        admin
            .list_trials(proto::ListTrialsRequest {
                experiment_id: experiment_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .trials
    });
    let completed: Vec<_> = trials.iter().filter(|t| t.status == "completed").collect();
    assert_eq!(
        completed.len(),
        MAX_TRIALS as usize,
        "every budgeted trial completes: {trials:#?}"
    );
    let ids: HashSet<_> = completed.iter().map(|t| t.trial_id.clone()).collect();
    let seqs: HashSet<_> = completed.iter().map(|t| t.seq).collect();
    assert_eq!(ids.len(), completed.len(), "each trial is in the pool once");
    assert_eq!(
        seqs.len(),
        completed.len(),
        "each proposal is in the pool once"
    );
    for t in &completed {
        assert!(
            t.score.is_finite() && t.score > 0.3,
            "trial {} learned something: {}",
            t.trial_id,
            t.score
        );
        assert!(
            !t.checkpoint_sha256.is_empty(),
            "trial {} has weights",
            t.trial_id
        );
        let test = t.metrics["test_accuracy"];
        assert!(test > 0.3 && test <= 1.0, "test accuracy reported: {test}");
    }
    assert!(
        completed.iter().any(|t| !t.parent_trial_id.is_empty()),
        "annealing proposed mutations of pool models"
    );

    // The reported best is the pool's maximum.
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
    let pool_max = completed
        .iter()
        .map(|t| t.score)
        .fold(f64::NEG_INFINITY, f64::max);
    let split = Split {
        train_subset: TRAIN_SUBSET,
        test_subset: TEST_SUBSET,
        validation_fraction: 0.2,
        seed: SEED,
    };
    let (card, val, test) = rescore_export(&export_dir, split).unwrap();
    let reported = card["validation_accuracy"].as_f64().unwrap();
    assert_eq!(reported, pool_max, "best model is the pool's maximum");

    // The exported weights, loaded back, reproduce the reported validation accuracy.
    assert!(
        (val - reported).abs() < 1e-9,
        "re-scored validation accuracy {val} differs from the reported {reported}"
    );
    let reported_test = card["metrics"]["test_accuracy"].as_f64().unwrap();
    assert!(
        (test - reported_test).abs() < 1e-9,
        "{test} vs {reported_test}"
    );

    // Workers drain on SIGTERM and leave cleanly.
    for w in &mut workers {
        let status = w.terminate(Duration::from_secs(30)).unwrap();
        assert!(status.success(), "{} exited with {status:?}", w.name);
    }
}
