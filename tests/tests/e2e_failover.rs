//! A worker given several master addresses follows whichever master is up: it starts past a
//! dead address to master A, and when A is SIGKILLed mid-experiment and master B takes over A's
//! data directory on another address of the worker's list, the worker switches to B with its
//! leases, and the experiment completes with every trial completed exactly once.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use explore_tests::pool::PoolDb;
use explore_tests::{
    describe, poll, read_log, require_fashion_mnist, reserve_two_ports, start_worker_at,
    submitted_experiment_id, with_status, MasterProc,
};

const MAX_TRIALS: usize = 4;

fn spec() -> String {
    format!(
        r#"
name = "failover"
seed = 17

[budget]
max_trials = {MAX_TRIALS}

[data]
dataset = "fashion-mnist"
train_subset = 600
test_subset = 100
validation_fraction = 0.2

# Every trial must complete: one that did not would count as lost.
[early_stopping]
rule = "none"

[search]
epochs = [2, 2]
channels = [8, 16]
dense_units = [32, 64]
batch_sizes = [64, 128]

[[seeds]]
preset = "cnn2"
hparams = {{ optimizer = "adamw", learning_rate = 0.003, schedule = "constant", batch_size = 64, weight_decay = 0.0001, epochs = 2 }}
"#
    )
}

/// Rows of the data directory's `late_results` (results that arrived for an attempt after its
/// trial was already decided: history only).
fn late_results(data_dir: &Path) -> Result<i64> {
    PoolDb::of(data_dir).count_blocking("late_results")
}

#[test]
fn a_worker_follows_the_master_that_takes_over_from_a_killed_one() -> Result<()> {
    require_fashion_mnist();
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("master");
    let (dead, b_addr) = reserve_two_ports()?;
    let master_flags = ["--heartbeat-secs", "1", "--lease-secs", "20"];
    let mut a = MasterProc::start(&data_dir, &master_flags)?;
    let b_url = format!("http://{b_addr}");
    // A dead address first, A second, B's future address last.
    let masters = format!("http://{dead},{},{b_url}", a.url);
    let log = tmp.path().join("worker.log");
    let mut worker = start_worker_at(&masters, &a.token_file(), "follower", &log, &[])?;
    let logs = |master_log: &Path| {
        format!(
            "--- worker log\n{}\n--- master log\n{}",
            read_log(&log),
            read_log(master_log)
        )
    };

    let spec_path = tmp.path().join("spec.toml");
    std::fs::write(&spec_path, spec())?;
    let submit = a.client(&["submit", spec_path.to_str().context("utf-8 path")?])?;
    ensure!(submit.status.success(), "submit: {}", describe(&submit));
    let experiment = submitted_experiment_id(&String::from_utf8_lossy(&submit.stdout))
        .with_context(|| format!("no experiment id: {}", describe(&submit)))?;

    // Mid-experiment: a trial done on A and another one held by the worker.
    let before = poll(
        "a completed trial and a running one on master A",
        Duration::from_secs(45),
        Duration::from_millis(200),
        || {
            let trials = a.trials_json(&experiment)?;
            let done = with_status(&trials, "completed").len();
            let running = with_status(&trials, "running").len();
            Ok((done >= 1 && running >= 1 && done < MAX_TRIALS).then_some(done))
        },
    )
    .with_context(|| logs(&a.log))?;
    a.kill()?;

    // B takes over A's data directory on the last address of the worker's list.
    let b = MasterProc::start_on(&data_dir, &b_addr, &master_flags)?;
    ensure!(b.url == b_url, "B listens on {} instead of {b_url}", b.url);
    let trials = poll(
        "the experiment to complete on master B",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || {
            let trials = b.trials_json(&experiment)?;
            let ended = trials.len() >= MAX_TRIALS
                && trials
                    .iter()
                    .all(|t| matches!(t["status"].as_str(), Some("completed" | "failed")));
            Ok(ended.then_some(trials))
        },
    )
    .with_context(|| logs(&b.log))?;

    // Every trial completed exactly once: the budget, no more, each trial and proposal once.
    let completed = with_status(&trials, "completed");
    ensure!(
        trials.len() == MAX_TRIALS && completed.len() == MAX_TRIALS,
        "{} trials, {} completed, of a budget of {MAX_TRIALS}: {trials:#?}",
        trials.len(),
        completed.len()
    );
    let ids: HashSet<_> = completed
        .iter()
        .map(|t| t["trial_id"].to_string())
        .collect();
    let seqs: HashSet<_> = completed.iter().map(|t| t["seq"].to_string()).collect();
    ensure!(
        ids.len() == MAX_TRIALS && seqs.len() == MAX_TRIALS,
        "{trials:#?}"
    );
    ensure!(
        completed.iter().all(|t| t["score"].is_f64()),
        "every trial has its score: {trials:#?}"
    );
    let late = late_results(&data_dir)?;
    ensure!(
        late == 0,
        "{late} results arrived for trials already decided"
    );

    // The worker did it, by switching to B (and never left or started over).
    let text = read_log(&log);
    ensure!(
        text.contains("switching master") && text.contains(&b_url),
        "the worker never switched to {b_url}: {}",
        logs(&b.log)
    );
    ensure!(
        text.matches("registered").count() == 1,
        "the worker registered more than once: {text}"
    );
    ensure!(worker.is_running(), "the worker exited: {text}");
    eprintln!(
        "{before} of {MAX_TRIALS} trials done on A; the rest on B; {:.1} s in all; the worker's \
         switches:\n{}",
        started.elapsed().as_secs_f64(),
        text.lines()
            .filter(|l| l.contains("switching master"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    worker.terminate(Duration::from_secs(20))?;
    Ok(())
}
