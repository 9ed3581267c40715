//! `master stop --now` and `master resume` from the real CLI against a real master and a real
//! training worker on loopback: the trial being trained is cancelled and its worker stops it,
//! nothing is leased while the experiment is stopped, and once resumed the experiment trains
//! its whole budget; a stop without the token changes nothing.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use explore_tests::{
    describe, poll, read_log, require_fashion_mnist, start_worker, submitted_experiment_id,
    with_status, MasterProc,
};
use serde_json::Value;

const TRIALS: usize = 3;

fn spec() -> String {
    format!(
        r#"
name = "control"
seed = 11

[budget]
max_trials = {TRIALS}

[data]
dataset = "fashion-mnist"
train_subset = 1500
test_subset = 200
validation_fraction = 0.2

[search]
epochs = [3, 3]

[[seeds]]
preset = "cnn2"
hparams = {{ optimizer = "adamw", learning_rate = 0.002, schedule = "constant", batch_size = 64, weight_decay = 0.0001, epochs = 3 }}
"#
    )
}

fn run(dir: &Path) -> Result<()> {
    let master = MasterProc::start(
        &dir.join("master"),
        &["--heartbeat-secs", "1", "--lease-secs", "20"],
    )?;
    let log = dir.join("worker.log");
    let _worker = start_worker(&master, "w", &log, &[])?;
    let spec_path = dir.join("spec.toml");
    std::fs::write(&spec_path, spec())?;
    let submit = master.client(&["submit", spec_path.to_str().context("utf-8 path")?])?;
    if !submit.status.success() {
        bail!("submit failed: {}", describe(&submit));
    }
    let id = submitted_experiment_id(&String::from_utf8_lossy(&submit.stdout))
        .context("no experiment id printed")?;

    // Stop --now while the first trial is training.
    let training = poll(
        "a trial in training",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || {
            let ts = master.trials_json(&id)?;
            Ok(with_status(&ts, "running")
                .first()
                .map(|t| t["trial_id"].as_str().unwrap_or_default().to_string()))
        },
    )
    .with_context(|| format!("worker log:\n{}", read_log(&log)))?;

    let refused = master.client(&[
        "stop",
        &id,
        "--now",
        "--token-file",
        spec_path.to_str().context("utf-8 path")?,
    ])?;
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    let running = master.trials_json(&id)?;
    assert!(
        running
            .iter()
            .any(|t| t["trial_id"] == training.as_str() && t["status"] == "running"),
        "a refused stop changed the trial: {running:?}"
    );

    let stop = master.client(&["stop", &id, "--now"])?;
    assert!(stop.status.success(), "{}", describe(&stop));
    let said = String::from_utf8_lossy(&stop.stdout).to_string();
    assert!(said.contains("master resume"), "{}", describe(&stop));
    // It says which trials it cancelled: the one in training (and any the worker had
    // prefetched), by id.
    let in_flight = said
        .lines()
        .find(|l| l.contains("in flight"))
        .with_context(|| describe(&stop))?;
    assert!(
        in_flight.starts_with("cancelled ") && in_flight.contains(&training),
        "{}",
        describe(&stop)
    );
    // Stopping again with --now is allowed, cancels nothing more, and prints it as JSON.
    let again = master.client(&["stop", &id, "--now", "--output", "json"])?;
    assert!(again.status.success(), "{}", describe(&again));
    let again: Value = serde_json::from_slice(&again.stdout).context("stop --output json")?;
    assert_eq!(again["experiment"]["status"], "stopped", "{again}");
    assert_eq!(
        (
            again["cancelled_held"].as_u64(),
            again["cancelled_queued"].as_u64()
        ),
        (Some(0), Some(0)),
        "{again}"
    );
    assert_eq!(
        again["cancelled_held_ids"],
        serde_json::json!([]),
        "{again}"
    );
    let stopped = master.trials_json(&id)?;
    let t = stopped
        .iter()
        .find(|t| t["trial_id"] == training.as_str())
        .context("the trial")?;
    assert_eq!(t["status"], "cancelled", "{t}");
    assert!(
        t["error"].as_str().unwrap_or_default().contains("--now"),
        "{t}"
    );
    poll(
        "the worker to stop the cancelled trial",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || Ok(read_log(&log).contains("stopped with --now").then_some(())),
    )
    .with_context(|| format!("worker log:\n{}", read_log(&log)))?;

    // Stopped: nothing is leased for a while, though the worker asks.
    for _ in 0..15 {
        let ts = master.trials_json(&id)?;
        let held = with_status(&ts, "leased").len() + with_status(&ts, "running").len();
        assert_eq!(held, 0, "a stopped experiment leased a trial: {ts:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = master.client(&["status"])?;
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("stopped"),
        "{}",
        describe(&status)
    );

    // Resumed: the budget is trained in full.
    let resume = master.client(&["resume", &id])?;
    assert!(resume.status.success(), "{}", describe(&resume));
    let done = poll(
        "the resumed experiment to train its budget",
        Duration::from_secs(240),
        Duration::from_millis(500),
        || {
            let ts = master.trials_json(&id)?;
            Ok(
                (with_status(&ts, "completed").len() + with_status(&ts, "pruned").len() >= TRIALS)
                    .then_some(ts),
            )
        },
    )
    .with_context(|| format!("worker log:\n{}", read_log(&log)))?;
    let again = master.client(&["resume", &id])?;
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not stopped"),
        "{}",
        describe(&again)
    );
    for t in with_status(&done, "cancelled") {
        let error = t["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("stopped"),
            "cancelled for another reason: {t}"
        );
    }
    Ok(())
}

#[test]
fn stop_now_cancels_the_trial_in_training_and_resume_trains_the_budget() {
    require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    run(dir.path()).unwrap();
}
