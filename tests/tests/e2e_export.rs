//! `master export` end to end: a real master and worker run a small Fashion-MNIST experiment,
//! the best trial is exported (TorchScript written by the real `worker export`), and PyTorch
//! itself (`tests/python/check_export.py`, run with the torch venv's python) loads `model.pt`,
//! rebuilds the test split from the model card and reproduces the reported test accuracy within
//! 0.5 points. Also: the lineage of a mutated trial, an export without a `worker` binary (the
//! other files and the command to run), and the errors for unknown ids and a trial without a
//! checkpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use explore_tests::{
    binary, describe, poll, require_fashion_mnist, start_worker, submit_and_list_trials,
    submitted_experiment_id, MasterProc,
};
use serde_json::Value;

const SEED: u64 = 17;
const TEST_SUBSET: u32 = 500;

fn spec(max_trials: u32, epochs: u32, train_subset: u32) -> String {
    format!(
        r#"
name = "e2e-export"
seed = {SEED}

[budget]
max_trials = {max_trials}

[data]
dataset = "fashion-mnist"
train_subset = {train_subset}
test_subset = {TEST_SUBSET}
validation_fraction = 0.2

[search]
epochs = [{epochs}, {epochs}]
channels = [8, 16]
dense_units = [32, 64]
batch_sizes = [64, 128]

[[seeds]]
preset = "cnn2"
hparams = {{ optimizer = "adamw", learning_rate = 0.003, schedule = "one_cycle", batch_size = 64, weight_decay = 0.0001, epochs = {epochs} }}
"#
    )
}

/// Runs a `master` client command against `master` with extra environment variables.
fn master_cmd(master: &MasterProc, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary("master"))
        .args(args)
        .args(["--master", &master.url, "--data-dir"])
        .arg(&master.data_dir)
        .envs(env.iter().copied())
        .output()
        .expect("run master")
}

fn read_card(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("model.json")).expect("model.json written");
    serde_json::from_str(&text).expect("model.json is JSON")
}

/// Whether a missing prerequisite fails the test instead of skipping a part of it (as in
/// `worker/src/data/tests.rs`: CI, or `EXPLORE_REQUIRE_DATA=1`, which scripts/test.sh sets).
fn required() -> bool {
    let set = |name: &str| {
        std::env::var(name)
            .map(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
            .unwrap_or(false)
    };
    set("CI") || std::env::var("EXPLORE_REQUIRE_DATA").is_ok_and(|v| v.trim() == "1")
}

/// The python of the torch venv `scripts/setup-libtorch.sh` makes, if it imports torch:
/// `$EXPLORE_TORCH_PYTHON`, `$EXPLORE_CACHE/torch-venv`, `~/.cache/explore/torch-venv`, or the
/// venv the repository's `.libtorch` link points into.
fn torch_python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("EXPLORE_TORCH_PYTHON").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    }
    if let Some(c) = std::env::var_os("EXPLORE_CACHE").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(c).join("torch-venv/bin/python"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(h).join(".cache/explore/torch-venv/bin/python"));
    }
    // .libtorch -> <venv>/lib/python3.X/site-packages/torch
    if let Ok(torch) = std::fs::canonicalize(root.join(".libtorch")) {
        if let Some(venv) = torch.ancestors().nth(4) {
            candidates.push(venv.join("bin/python"));
        }
    }
    candidates.into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import torch"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Runs `tests/python/check_export.py DIR` with the torch python: PyTorch alone reproduces the
/// card's test accuracy. Returns its JSON answer, or `None` when skipped (no torch python
/// outside CI).
fn check_with_pytorch(dir: &Path) -> Option<Value> {
    let Some(python) = torch_python() else {
        assert!(
            !required(),
            "no python with torch (CI or EXPLORE_REQUIRE_DATA=1 requires it): run \
             scripts/setup-libtorch.sh, or set EXPLORE_TORCH_PYTHON"
        );
        eprintln!(
            "skipping the PyTorch check: no python with torch (run scripts/setup-libtorch.sh or \
             set EXPLORE_TORCH_PYTHON; CI or EXPLORE_REQUIRE_DATA=1 make this a failure)"
        );
        return None;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/check_export.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir)
        .output()
        .expect("run check_export.py");
    assert!(
        out.status.success(),
        "PyTorch does not reproduce the reported test accuracy: {}",
        describe(&out)
    );
    Some(serde_json::from_slice(&out.stdout).expect("check_export.py prints JSON"))
}

#[test]
fn an_exported_model_runs_in_pytorch_with_the_reported_accuracy() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let master = MasterProc::start(
        &tmp.path().join("master"),
        &["--heartbeat-secs", "1", "--lease-secs", "20"],
    )
    .unwrap();
    let mut worker = start_worker(&master, "w0", &tmp.path().join("worker.log"), &[]).unwrap();
    let (experiment, trials) =
        submit_and_list_trials(&master, tmp.path(), &spec(4, 1, 2000)).unwrap();
    let completed: Vec<&Value> = trials
        .iter()
        .filter(|t| t["status"] == "completed")
        .collect();
    assert!(completed.len() >= 2, "{trials:#?}");
    let best = completed
        .iter()
        .max_by(|a, b| {
            let score = |t: &Value| t["score"].as_f64().unwrap();
            score(a).total_cmp(&score(b))
        })
        .unwrap();

    // The best trial: every file, the worker's TorchScript, a card with data, split and scores.
    let dir = tmp.path().join("best");
    let out = master_cmd(
        &master,
        &["export", &experiment, dir.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    for file in [
        "model.pt",
        "weights.safetensors",
        "genome.json",
        "hparams.json",
        "data.toml",
        "model.json",
        "MODEL_CARD.md",
    ] {
        assert!(dir.join(file).is_file(), "{file} written");
    }
    let card = read_card(&dir);
    assert_eq!(
        card["trial_id"], best["trial_id"],
        "the best trial: {card:#}"
    );
    let reported = card["test_accuracy"].as_f64().expect("test accuracy");
    assert_eq!(Some(reported), best["test_accuracy"].as_f64());
    assert_eq!(card["data"]["test_subset"], TEST_SUBSET);
    assert_eq!(card["split"]["test"], TEST_SUBSET);
    assert_eq!(card["split"]["train"].as_u64(), Some(1600));
    let ts = &card["torchscript"];
    assert_eq!(
        ts["input"]["range"],
        serde_json::json!([0.0, 1.0]),
        "{ts:#}"
    );
    let traced = ts["test_accuracy"].as_f64().unwrap();
    assert!((traced - reported).abs() <= 0.005, "{traced} vs {reported}");
    let md = std::fs::read_to_string(dir.join("MODEL_CARD.md")).unwrap();
    assert!(md.contains("torch.jit.load(\"model.pt\")"), "{md}");
    assert!(md.contains("[N, 1, 28, 28]"), "{md}");
    match &best["parent_trial_id"] {
        Value::String(parent) => assert_eq!(card["lineage"][0]["trial_id"], *parent),
        _ => assert_eq!(card["lineage"], serde_json::json!([])),
    }

    // PyTorch alone, on images in [0, 1], reproduces the reported test accuracy.
    if let Some(check) = check_with_pytorch(&dir) {
        eprintln!("check_export.py: {check}");
        assert_eq!(check["examples"], TEST_SUBSET);
    }

    // A mutated trial's lineage runs from its parent back to the seed.
    let child = completed
        .iter()
        .find(|t| t["parent_trial_id"].is_string())
        .expect("a mutated trial completed");
    let child_id = child["trial_id"].as_str().unwrap();
    let dir = tmp.path().join("child");
    let out = master_cmd(
        &master,
        &[
            "export",
            &experiment,
            "--trial",
            child_id,
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let card = read_card(&dir);
    assert_eq!(card["trial_id"], child["trial_id"]);
    let lineage = card["lineage"].as_array().unwrap();
    assert_eq!(lineage[0]["trial_id"], child["parent_trial_id"]);
    let by_id = |id: &Value| trials.iter().find(|t| t["trial_id"] == *id).unwrap();
    for pair in lineage.windows(2) {
        assert_eq!(
            by_id(&pair[0]["trial_id"])["parent_trial_id"],
            pair[1]["trial_id"]
        );
    }
    let seed = by_id(&lineage.last().unwrap()["trial_id"]);
    assert!(seed["parent_trial_id"].is_null(), "ends at a seed: {seed}");
    assert_eq!(lineage.last().unwrap()["origin"], seed["origin"]);

    // Without a worker binary: everything but model.pt, and the command that writes it.
    let dir = tmp.path().join("no-worker");
    let out = master_cmd(
        &master,
        &["export", &experiment, dir.to_str().unwrap()],
        &[("EXPLORE_WORKER_BIN", "/nonexistent/worker")],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("EXPLORE_WORKER_BIN"), "{stderr}");
    assert!(stderr.contains("worker export --genome"), "{stderr}");
    assert!(dir.join("weights.safetensors").is_file() && dir.join("model.json").is_file());
    assert!(!dir.join("model.pt").exists());

    // Unknown ids.
    let unknown = |id: &str| format!("{}zz", &id[..id.len() - 2]);
    let out = master_cmd(
        &master,
        &[
            "export",
            &experiment,
            "--trial",
            &unknown(child_id),
            tmp.path().join("x").to_str().unwrap(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr.contains(&unknown(child_id)) && stderr.contains("not found"),
        "{stderr}"
    );
    let out = master_cmd(
        &master,
        &[
            "export",
            &unknown(&experiment),
            tmp.path().join("x").to_str().unwrap(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr.contains(&unknown(&experiment)) && stderr.contains("not found"),
        "{stderr}"
    );
    // A trial of another experiment.
    let out = master_cmd(
        &master,
        &[
            "export",
            &unknown(&experiment),
            "--trial",
            child_id,
            tmp.path().join("x").to_str().unwrap(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("belongs to experiment"), "{stderr}");
    assert!(!tmp.path().join("x").exists(), "nothing written on errors");

    // A trial still training has no checkpoint: a long experiment, exported while it runs.
    let spec_path = tmp.path().join("slow.toml");
    std::fs::write(&spec_path, spec(1, 30, 20000)).unwrap();
    let submit = master
        .client(&["submit", spec_path.to_str().unwrap()])
        .unwrap();
    assert!(submit.status.success(), "{}", describe(&submit));
    let slow = submitted_experiment_id(&String::from_utf8_lossy(&submit.stdout)).unwrap();
    let running = poll(
        "the slow experiment's seed",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let out = master.client(&["trials", &slow, "--json"])?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|t| t["trial_id"].is_string()))
        },
    )
    .unwrap();
    let trial_id = running["trial_id"].as_str().unwrap();
    let dir = tmp.path().join("unfinished");
    let out = master_cmd(
        &master,
        &["export", &slow, "--trial", trial_id, dir.to_str().unwrap()],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr.contains(trial_id) && stderr.contains("has no checkpoint"),
        "{stderr}"
    );
    assert!(
        !dir.exists(),
        "nothing written for a trial without a checkpoint"
    );
    worker.kill_hard().unwrap();
}
