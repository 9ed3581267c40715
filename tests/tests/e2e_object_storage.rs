//! Checkpoints in object storage, with the real binaries on loopback: a master started with
//! `--artifacts s3://BUCKET/PREFIX` against an S3-compatible server (moto) and two workers run an
//! experiment with weight inheritance and a final phase from weights. Every checkpoint must land in
//! the bucket under the prefix and nowhere on the master's disk; children must start from their
//! parents' weights read back from the bucket; the exported best model must re-score to its
//! reported accuracies (its bytes survived the round trip); and a master restarted after SIGKILL
//! must still serve the checkpoints, which outlive it.

use std::collections::HashSet;
use std::time::Duration;

use explore_tests::s3::S3Server;
use explore_tests::{
    describe, require_fashion_mnist, rescore_export, start_workers, submit_and_list_trials,
    MasterProc, Split,
};
use serde_json::Value;

const TRAIN_SUBSET: u32 = 1500;
const TEST_SUBSET: u32 = 300;
const VALIDATION_FRACTION: f64 = 0.2;
const SEED: u64 = 21;
const BUCKET: &str = "explore-e2e";
const PREFIX: &str = "team/run1";

fn spec() -> String {
    format!(
        r#"
name = "e2e-object-storage"
seed = {SEED}

[budget]
max_trials = 5

[data]
dataset = "fashion-mnist"
train_subset = {TRAIN_SUBSET}
test_subset = {TEST_SUBSET}
validation_fraction = {VALIDATION_FRACTION}

[early_stopping]
rule = "none"

[inheritance]
enabled = true
fine_tune_epochs = 1

[final]
top_k = 1
epochs = 1

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

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn checkpoints_live_in_the_bucket_and_outlive_the_master() {
    let Some(s3) = S3Server::start(
        "checkpoints_live_in_the_bucket_and_outlive_the_master",
        BUCKET,
    ) else {
        return;
    };
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("s3://{BUCKET}/{PREFIX}");
    let mut master = MasterProc::start_with_env(
        &tmp.path().join("master"),
        &[
            "--heartbeat-secs",
            "1",
            "--lease-secs",
            "20",
            "--artifacts",
            &url,
        ],
        &s3.env(),
    )
    .unwrap();
    let _workers = start_workers(&master, tmp.path(), 2).unwrap();
    let (experiment, trials) = submit_and_list_trials(&master, tmp.path(), &spec()).unwrap();
    let dump = serde_json::to_string_pretty(&trials).unwrap();
    let completed: Vec<&Value> = trials
        .iter()
        .filter(|t| t["status"] == "completed")
        .collect();
    assert!(completed.len() >= 4, "{dump}");

    // Children and the final trial started from weights the master read from the bucket.
    let inherited: Vec<&&Value> = completed
        .iter()
        .filter(|t| t["inherited"] == true)
        .collect();
    assert!(
        !inherited.is_empty(),
        "no completed trial inherited: {dump}"
    );
    for t in &inherited {
        assert!(t["inherited_tensors"].as_f64().unwrap() > 0.0, "{dump}");
    }

    // Every checkpoint is an object `<prefix>/<sha[0..2]>/<sha>`; no partial upload is left;
    // nothing was written under the data directory.
    let keys = s3.keys(PREFIX).unwrap();
    let blobs: HashSet<&str> = keys
        .iter()
        .filter_map(|k| {
            let rest = k.strip_prefix(&format!("{PREFIX}/"))?;
            let (fan, sha) = rest.split_once('/')?;
            (is_sha256(sha) && sha.starts_with(fan) && fan.len() == 2).then_some(sha)
        })
        .collect();
    assert!(
        blobs.len() >= completed.len(),
        "{} checkpoints for {} completed trials: {keys:?}",
        blobs.len(),
        completed.len()
    );
    assert_eq!(blobs.len(), keys.len(), "stray objects: {keys:?}");
    let local = tmp.path().join("master").join("artifacts");
    assert!(
        !local.exists(),
        "checkpoints written to {}",
        local.display()
    );

    // The best model's bytes round-trip: its export re-scores to what the worker reported.
    let best = completed
        .iter()
        .max_by(|a, b| {
            a["score"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["score"].as_f64().unwrap())
        })
        .unwrap();
    let best_id = best["trial_id"].as_str().unwrap();
    let split = Split {
        train_subset: TRAIN_SUBSET,
        test_subset: TEST_SUBSET,
        validation_fraction: VALIDATION_FRACTION,
        seed: SEED,
    };
    let export = |dir: &std::path::Path, master: &MasterProc| {
        let out = master
            .client(&[
                "export",
                &experiment,
                "--trial",
                best_id,
                dir.to_str().unwrap(),
            ])
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
    };
    let first = tmp.path().join("export-1");
    export(&first, &master);
    let (_, val, test) = rescore_export(&first, split).unwrap();
    assert!(
        (val - best["score"].as_f64().unwrap()).abs() < 1e-9,
        "{dump}"
    );
    assert!(
        (test - best["test_accuracy"].as_f64().unwrap()).abs() < 1e-9,
        "{dump}"
    );

    // The checkpoints outlive the master: killed and restarted, it exports the same weights.
    master.kill().unwrap();
    master.restart(Duration::from_secs(20)).unwrap();
    let second = tmp.path().join("export-2");
    export(&second, &master);
    let weights = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "safetensors" || x == "ot")
            })
            .map(|p| std::fs::read(p).unwrap())
            .collect::<Vec<_>>()
    };
    let (a, b) = (weights(&first), weights(&second));
    assert!(!a.is_empty(), "no weights file in {}", first.display());
    assert_eq!(a, b, "the restarted master served other bytes");
}
