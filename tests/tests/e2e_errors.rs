//! Bad input gets a clear error and a non-zero exit, never a panic or a hang.

use std::time::Duration;

use explore_common::client::connect;
use explore_common::client::{worker_client, BearerToken};
use explore_common::proto::{self, worker_service_client::WorkerServiceClient};
use explore_tests::{binary, describe, run, MasterProc};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn no_panic(o: &std::process::Output) {
    assert!(!stderr(o).contains("panicked"), "{}", describe(o));
}

#[test]
fn invalid_spec_names_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("bad.toml");
    std::fs::write(
        &spec,
        "name = \"x\"\n[budget]\nmax_trials = 3\n[search]\nlearning_rate = [0.1, 0.001]\n",
    )
    .unwrap();
    let out = run(
        &binary("master"),
        &[
            "submit",
            spec.to_str().unwrap(),
            "--master",
            "http://127.0.0.1:9",
        ],
    )
    .unwrap();
    assert!(!out.status.success());
    no_panic(&out);
    assert!(
        stderr(&out).contains("search.learning_rate"),
        "{}",
        describe(&out)
    );

    std::fs::write(
        &spec,
        "name = \"x\"\n[budget]\nmax_trials = 3\nmax_trails = 4\n",
    )
    .unwrap();
    let out = run(&binary("master"), &["submit", spec.to_str().unwrap()]).unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("max_trails"), "{}", describe(&out));
}

#[test]
fn genome_whose_shapes_do_not_fit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let genome = tmp.path().join("g.json");
    std::fs::write(
        &genome,
        r#"{"input":{"channels":1,"height":28,"width":28},"num_classes":10,
            "blocks":[{"type":"dense","units":32},{"type":"conv","out_channels":8,"kernel":3,"stride":1}]}"#,
    )
    .unwrap();
    let hparams = tmp.path().join("h.json");
    std::fs::write(
        &hparams,
        r#"{"optimizer":"sgd","learning_rate":0.01,"schedule":"constant","batch_size":32,"weight_decay":0.0,"epochs":1}"#,
    )
    .unwrap();
    let out = run(
        &binary("worker"),
        &[
            "train",
            "--genome",
            genome.to_str().unwrap(),
            "--hparams",
            hparams.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(!out.status.success());
    no_panic(&out);
    assert!(stderr(&out).contains("blocks[1]"), "{}", describe(&out));
}

#[test]
fn missing_data_files_are_named_with_an_install_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        &binary("worker"),
        &[
            "train",
            "--genome",
            "preset:cnn2",
            "--hparams",
            "default",
            "--data-dir",
            tmp.path().to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(!out.status.success());
    no_panic(&out);
    let err = stderr(&out);
    assert!(
        err.contains("train-images-idx3-ubyte"),
        "{}",
        describe(&out)
    );
    assert!(
        err.contains("apt-get install dataset-fashion-mnist"),
        "{}",
        describe(&out)
    );
}

#[test]
fn worker_retries_an_unreachable_master_then_gives_up() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef").unwrap();
    let start = std::time::Instant::now();
    // Port 9 (discard) on loopback: nothing listens there.
    let out = run(
        &binary("worker"),
        &[
            "join",
            "--master",
            "http://127.0.0.1:9",
            "--token-file",
            token.to_str().unwrap(),
            "--give-up-after-secs",
            "3",
            "--device",
            "cpu",
        ],
    )
    .unwrap();
    assert!(!out.status.success());
    no_panic(&out);
    let err = stderr(&out);
    assert!(err.contains("retrying"), "{}", describe(&out));
    assert!(err.contains("unreachable"), "{}", describe(&out));
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn unauthenticated_and_wrong_version_calls_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let master = MasterProc::start(&tmp.path().join("m"), &[]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = connect(&master.url).await.unwrap();
        let mut anonymous = WorkerServiceClient::new(channel.clone());
        let err = anonymous
            .register(proto::RegisterRequest {
                protocol_version: proto::PROTOCOL_VERSION,
                name: "intruder".into(),
                device: "cpu".into(),
                slots: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);

        let token = std::fs::read_to_string(master.token_file()).unwrap();
        let mut client = worker_client(channel, &BearerToken::new(&token).unwrap());
        let err = client
            .register(proto::RegisterRequest {
                protocol_version: proto::PROTOCOL_VERSION + 1,
                name: "future".into(),
                device: "cpu".into(),
                slots: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().contains("protocol version"),
            "{}",
            err.message()
        );
    });
    // The status command with the wrong token explains itself.
    let bad_token = tmp.path().join("bad-token");
    std::fs::write(&bad_token, "not-the-token-0000000000").unwrap();
    let out = master
        .client(&["status", "--token-file", bad_token.to_str().unwrap()])
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("token"), "{}", describe(&out));
}

/// Regression: a worker without the experiment's data failed every trial it leased ("trial
/// cannot be prepared"), so an experiment with a large budget burned through tens of thousands
/// of failed trials in minutes. Now the worker hands the trial back uncharged and leaves with
/// the install hint, and a worker that has the data trains it.
#[test]
fn a_worker_without_the_data_hands_its_trial_back_and_leaves() {
    explore_tests::require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let mut master = MasterProc::start(&tmp.path().join("master"), &[]).unwrap();
    let spec = tmp.path().join("spec.toml");
    std::fs::write(
        &spec,
        r#"
name = "no-data"
seed = 3
[budget]
max_trials = 2
[data]
dataset = "fashion-mnist"
train_subset = 400
test_subset = 100
validation_fraction = 0.25
[search]
epochs = [1, 1]
[[seeds]]
preset = "cnn2"
hparams = { optimizer = "adamw", learning_rate = 0.002, schedule = "constant", batch_size = 64, weight_decay = 0.0001, epochs = 1 }
"#,
    )
    .unwrap();
    let submit = master.client(&["submit", spec.to_str().unwrap()]).unwrap();
    assert!(submit.status.success(), "{}", describe(&submit));
    let experiment =
        explore_tests::submitted_experiment_id(&String::from_utf8_lossy(&submit.stdout)).unwrap();

    let empty = tmp.path().join("no-data");
    std::fs::create_dir(&empty).unwrap();
    let log = tmp.path().join("no-data.log");
    let child = std::process::Command::new(binary("worker"))
        .args(["join", "--master", &master.url, "--token-file"])
        .arg(master.token_file())
        .args(["--device", "cpu", "--threads", "1", "--data-dir"])
        .arg(&empty)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut without_data = explore_tests::Proc {
        name: "worker without data".into(),
        child,
    };
    let status = without_data
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", explore_tests::read_log(&log)));
    let err = explore_tests::read_log(&log);
    assert!(!status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("apt-get install dataset-fashion-mnist"),
        "{err}"
    );
    assert!(err.contains("handing the trial back"), "{err}");
    let trials = master.trials_json(&experiment).unwrap();
    assert!(!trials.is_empty());
    assert!(
        trials.iter().all(|t| t["status"] == "queued"),
        "handed back, not failed: {trials:?}"
    );

    let log = tmp.path().join("worker.log");
    let mut worker = explore_tests::start_worker(&master, "with-data", &log, &[]).unwrap();
    let trials = explore_tests::poll(
        "the experiment to complete",
        Duration::from_secs(240),
        Duration::from_millis(500),
        || {
            let trials = master.trials_json(&experiment)?;
            let ended = trials.len() == 2 && trials.iter().all(|t| t["status"] == "completed");
            Ok(ended.then_some(trials))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", explore_tests::read_log(&log)));
    assert!(trials.iter().all(|t| t["status"] != "failed"), "{trials:?}");
    worker.terminate(Duration::from_secs(20)).unwrap();
    master.kill().unwrap();
}
