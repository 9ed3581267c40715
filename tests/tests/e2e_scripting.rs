//! Scripting with the real binaries (issue 15): logs written to a pipe or a file carry no colour
//! escape codes, `--log-format json` (or `EXPLORE_LOG_FORMAT=json`) makes every stderr line a
//! JSON object with the trial, attempt and worker ids as fields, the read commands' `--output
//! json` documents parse with the shapes the README documents, and exit codes are 0, 1 and 2.
//! Most clusters here run `worker simulate` (synthetic scores, no training); one real `worker
//! join` trains a 2-epoch MLP on 400 examples, so the file runs in seconds.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use explore_tests::{
    binary, describe, require_fashion_mnist, run, submitted_experiment_id, MasterProc,
    FASHION_MNIST_DIR,
};
use serde_json::Value;

/// The escape that starts every ANSI colour code.
const ESC: &str = "\x1b[";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Every non-empty line of `text` as JSON, each an object with a level and a message.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
            v
        })
        .collect()
}

/// `worker join` against a port where nothing listens: it logs retries, then fails (exit 1).
fn unreachable_join(extra: &[&str], env: &[(&str, &str)]) -> Output {
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "t0ken").unwrap();
    std::process::Command::new(binary("worker"))
        .env_remove("NO_COLOR")
        .env_remove("EXPLORE_LOG_FORMAT")
        .envs(env.iter().copied())
        .args(extra)
        .args(["join", "--master", "http://127.0.0.1:9", "--token-file"])
        .arg(token.path())
        .args(["--give-up-after-secs", "1"])
        .output()
        .unwrap()
}

#[test]
fn worker_logs_in_a_pipe_have_no_colour_and_json_lines_parse() {
    let out = unreachable_join(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = stderr(&out);
    assert!(text.contains("master unreachable"), "{}", describe(&out));
    assert!(!text.contains(ESC), "colour codes in a pipe: {text:?}");

    for (extra, env) in [
        (&["--log-format", "json"][..], &[][..]),
        (&[][..], &[("EXPLORE_LOG_FORMAT", "json")][..]),
    ] {
        let out = unreachable_join(extra, env);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let lines = json_lines(&stderr(&out));
        assert!(
            lines
                .iter()
                .any(|l| l["message"] == "master unreachable, retrying"
                    && l["master"] == "http://127.0.0.1:9"),
            "{}",
            describe(&out)
        );
        // the error that ends the run is a JSON line too
        let last = lines.last().unwrap();
        assert_eq!(last["level"], "ERROR", "{last}");
        assert!(
            last["error"].as_str().unwrap().contains("unreachable"),
            "{last}"
        );
    }

    // a bad format is a usage error (exit 2)
    let out = run(&binary("worker"), &["--log-format", "xml", "analyze"]).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn worker_train_logs_one_json_line_per_epoch_with_its_ids() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let hparams = tmp.path().join("h.json");
    std::fs::write(
        &hparams,
        r#"{"optimizer":"adamw","learning_rate":0.003,"schedule":"constant","batch_size":64,"weight_decay":0.0,"epochs":2}"#,
    )
    .unwrap();
    let out = run(
        &binary("worker"),
        &[
            "--log-format",
            "json",
            "train",
            "--genome",
            "preset:mlp",
            "--hparams",
            hparams.to_str().unwrap(),
            "--data-dir",
            FASHION_MNIST_DIR,
            "--train-subset",
            "300",
            "--test-subset",
            "100",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
    )
    .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let epochs: Vec<Value> = json_lines(&stderr(&out))
        .into_iter()
        .filter(|l| l["epoch"].is_number() && l["val_accuracy"].is_number())
        .collect();
    assert_eq!(epochs.len(), 2, "{}", describe(&out));
    for (i, line) in epochs.iter().enumerate() {
        assert_eq!(line["epoch"], i as u64 + 1, "{line}");
        assert_eq!(line["total_epochs"], 2, "{line}");
        assert_eq!(line["trial_id"], "train", "{line}");
        assert_eq!(line["attempt"], 1, "{line}");
        // `worker train` has no worker: no worker_id field
        assert!(line["worker_id"].is_null(), "{line}");
        assert!(line["train_loss"].is_number(), "{line}");
        assert!(line["eta_secs"].is_number(), "{line}");
    }
    // no bar was drawn into the pipe
    assert!(!stderr(&out).contains(ESC), "{}", describe(&out));
}

const SPEC: &str = r#"
name = "scripting"
seed = 3
[budget]
max_trials = 6
"#;

/// A `master` client command that must succeed; its stdout.
fn client_ok(master: &MasterProc, args: &[&str]) -> String {
    let out = master.client(args).unwrap();
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    assert!(!stderr(&out).contains(ESC), "{}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Runs simulated workers until the experiment's trials are done.
fn simulate(master: &MasterProc) {
    let out = run(
        &binary("worker"),
        &[
            "simulate",
            "--master",
            &master.url,
            "--token-file",
            master.token_file().to_str().unwrap(),
            "--count",
            "2",
            "--idle-exit-secs",
            "2",
        ],
    )
    .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn read_commands_print_the_documented_json_and_master_logs_are_plain() {
    let tmp = tempfile::tempdir().unwrap();
    let master = MasterProc::start(&tmp.path().join("data"), &[]).unwrap();
    // nothing yet: an empty list, and `best` fails with exit 1
    let empty = parse(&client_ok(&master, &["status", "--output", "json"]));
    assert_eq!(empty, serde_json::json!({"experiments": []}));
    let out = master.client(&["best", "--output", "json"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    let spec = tmp.path().join("spec.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let submitted = client_ok(&master, &["submit", spec.to_str().unwrap()]);
    let id = submitted_experiment_id(&submitted).unwrap();
    simulate(&master);

    let list = parse(&client_ok(&master, &["status", "--output", "json"]));
    let summary = &list["experiments"][0];
    assert_eq!(summary["experiment_id"], id.as_str(), "{list}");
    assert_eq!(summary["status"], "completed", "{list}");
    assert_eq!(summary["trials_finished"], 6, "{list}");
    assert_eq!(summary["max_trials"], 6, "{list}");
    assert!(summary["max_epochs"].is_null(), "{list}");
    assert!(summary["best_score"].is_number(), "{list}");

    let one = parse(&client_ok(
        &master,
        &["status", &id, "--top", "3", "--output", "json"],
    ));
    assert_eq!(one["experiment"], *summary, "{one}");
    let board = one["leaderboard"].as_array().unwrap();
    assert_eq!(board.len(), 3, "{one}");
    for (i, row) in board.iter().enumerate() {
        assert_eq!(row["rank"], i + 1, "{row}");
        assert_eq!(row["status"], "completed", "{row}");
    }
    assert_eq!(board[0]["trial_id"], summary["best_trial_id"], "{one}");

    let best = parse(&client_ok(&master, &["best", &id, "--output", "json"]));
    assert_eq!(best["experiment_id"], id.as_str(), "{best}");
    assert_eq!(
        best["trial"]["trial_id"], summary["best_trial_id"],
        "{best}"
    );
    assert_eq!(best["trial"]["score"], summary["best_score"], "{best}");
    assert!(best["exported_to"].is_null(), "{best}");

    // trials: one object per line; --json is the same as --output json
    let lines = client_ok(&master, &["trials", &id, "--output", "json"]);
    assert_eq!(lines, client_ok(&master, &["trials", &id, "--json"]));
    let trials: Vec<Value> = lines.lines().map(parse).collect();
    assert_eq!(trials.len(), 6, "{lines}");
    assert!(trials.iter().all(|t| t["trial_id"].is_string()));
    // tables stay the default
    let table = client_ok(&master, &["status", &id]);
    assert!(table.starts_with("EXPERIMENT"), "{table}");

    // usage errors exit 2
    for args in [
        &["trials", &id, "--json", "--output", "table"][..],
        &["status", "--output", "yaml"][..],
        &["--log-format", "xml", "status"][..],
    ] {
        let out = master.client(args).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }

    // the master's log went to a file: no colour codes
    let log = std::fs::read_to_string(&master.log).unwrap();
    assert!(log.contains("trial completed"), "{log}");
    assert!(!log.contains(ESC), "colour codes in a file: {log}");
}

#[test]
fn master_json_logs_carry_trial_attempt_and_worker_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut master = MasterProc::start(&data, &["--log-format", "json"]).unwrap();
    let spec = tmp.path().join("spec.toml");
    std::fs::write(&spec, SPEC).unwrap();
    client_ok(&master, &["submit", spec.to_str().unwrap()]);
    simulate(&master);
    master.proc.terminate(Duration::from_secs(30)).unwrap();
    let lines = json_lines(&std::fs::read_to_string(Path::new(&master.log)).unwrap());
    let completed: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "trial completed")
        .collect();
    assert_eq!(completed.len(), 6, "{lines:?}");
    for line in completed {
        assert!(line["trial_id"].is_string(), "{line}");
        assert_eq!(line["attempt"], 1, "{line}");
        assert!(line["worker_id"].is_string(), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "trial leased" && l["worker_id"].is_string()),
        "{lines:?}"
    );
}

#[test]
fn a_real_worker_logs_each_epoch_of_a_trial_with_its_ids_and_no_colour() {
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let master = MasterProc::start(&tmp.path().join("data"), &[]).unwrap();
    let spec = tmp.path().join("spec.toml");
    std::fs::write(
        &spec,
        r#"
name = "scripting-join"
seed = 2
[budget]
max_trials = 1
[data]
dataset = "fashion-mnist"
train_subset = 400
test_subset = 100
[[seeds]]
preset = "mlp"
hparams = { optimizer = "adamw", learning_rate = 0.003, schedule = "constant", batch_size = 64, weight_decay = 0.0, epochs = 2 }
"#,
    )
    .unwrap();
    client_ok(&master, &["submit", spec.to_str().unwrap()]);
    // the log goes to a file; EXPLORE_LOG_FORMAT picks JSON
    let log = tmp.path().join("worker.log");
    let mut worker = explore_tests::start_worker_with_env(
        &master.url,
        &master.token_file(),
        "w-json",
        &log,
        &["--max-trials", "1"],
        &[("EXPLORE_LOG_FORMAT", "json")],
    )
    .unwrap();
    let status = worker.wait_timeout(Duration::from_secs(300)).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(!text.contains(ESC), "{text}");
    let lines = json_lines(&text);
    let worker_id = lines
        .iter()
        .find(|l| l["message"] == "registered")
        .and_then(|l| l["worker_id"].as_str())
        .unwrap_or_else(|| panic!("no registration: {text}"))
        .to_string();
    let epochs: Vec<&Value> = lines
        .iter()
        .filter(|l| l["epoch"].is_number() && l["val_accuracy"].is_number())
        .collect();
    assert_eq!(epochs.len(), 2, "{text}");
    let trial_id = epochs[0]["trial_id"].as_str().unwrap();
    for (line, epoch) in epochs.iter().zip(1..) {
        assert_eq!(line["epoch"], epoch, "{line}");
        assert_eq!(line["trial_id"], trial_id, "{line}");
        assert_eq!(line["attempt"], 1, "{line}");
        assert_eq!(line["worker_id"], worker_id.as_str(), "{line}");
    }
    for message in ["trial prepared", "training", "trial completed"] {
        let line = lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line: {text}"));
        assert_eq!(line["trial_id"], trial_id, "{line}");
        assert_eq!(line["attempt"], 1, "{line}");
        assert_eq!(line["worker_id"], worker_id.as_str(), "{line}");
    }

    // `worker evaluate` on the exported model: its log lines, in a pipe, are plain
    // (rescore_export fails on a colour escape in its stderr).
    let export = tmp.path().join("best");
    client_ok(&master, &["best", "--export", export.to_str().unwrap()]);
    let split = explore_tests::Split {
        train_subset: 400,
        test_subset: 100,
        validation_fraction: 0.1,
        seed: 2,
    };
    let (card, _, test) = explore_tests::rescore_export(&export, split).unwrap();
    assert_eq!(card["trial_id"], trial_id, "{card}");
    assert!((0.0..=1.0).contains(&test), "{test}");
}
