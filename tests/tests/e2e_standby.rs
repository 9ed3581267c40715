//! A hot-standby master on PostgreSQL: two masters on one database, three workers that know
//! both addresses. The active master is SIGKILLed mid-experiment twice, at different moments
//! (first A, restarted as the new standby, then B): each time the standby takes over within a
//! few seconds, and the experiment completes its budget with every trial completed exactly
//! once and the best trial the pool's maximum. Prints the takeover times (RELIABILITY.md).
//!
//! Needs a PostgreSQL server (`EXPLORE_TEST_PG_URL`; `scripts/test.sh` starts one): skipped
//! with a message without one, a failure in CI.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use explore_tests::{
    describe, fresh_pg_database, pg_server, poll, read_log, require_fashion_mnist,
    reserve_two_ports, start_worker_at, submitted_experiment_id, with_status, MasterProc, Proc,
};

const MAX_TRIALS: usize = 9;

fn spec() -> String {
    format!(
        r#"
name = "standby"
seed = 23

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

fn count(trials: &[serde_json::Value], status: &str) -> usize {
    with_status(trials, status).len()
}

/// Waits until `master` answers as the active master and returns how long that took.
fn takeover_time(master: &MasterProc, killed_at: Instant) -> Result<Duration> {
    poll(
        "the standby to take over",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let out = master.client(&["status"])?;
            Ok(out.status.success().then(|| killed_at.elapsed()))
        },
    )
    .with_context(|| format!("master log:\n{}", read_log(&master.log)))
}

/// Waits until `done(trials)` holds on `master`.
fn wait_for(
    what: &str,
    master: &MasterProc,
    experiment: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Result<Vec<serde_json::Value>> {
    poll(
        what,
        Duration::from_secs(120),
        Duration::from_millis(200),
        || {
            let trials = master.trials_json(experiment)?;
            Ok(done(&trials).then_some(trials))
        },
    )
    .with_context(|| format!("master log:\n{}", read_log(&master.log)))
}

#[test]
fn the_standby_takes_over_twice_and_every_trial_completes_once() -> Result<()> {
    let Some(server) = pg_server("the_standby_takes_over_twice") else {
        return Ok(());
    };
    require_fashion_mnist();
    let tmp = tempfile::tempdir()?;
    // One shared data directory: checkpoints and the token, as a shared volume would hold them.
    let data_dir = tmp.path().join("shared");
    let db = fresh_pg_database(&server)?;
    let (a_addr, b_addr) = reserve_two_ports()?;
    let flags = ["--heartbeat-secs", "1", "--lease-secs", "20", "--db", &db];
    let mut a = MasterProc::start_on(&data_dir, &a_addr, &flags)?;
    let mut b = MasterProc::start_on(&data_dir, &b_addr, &flags)?;

    // B stands by: it refuses calls, naming why.
    let refused = b.client(&["status"])?;
    ensure!(
        !refused.status.success() && describe(&refused).contains("standby"),
        "a standby must refuse calls: {}",
        describe(&refused)
    );

    let masters = format!("{},{}", a.url, b.url);
    let mut workers: Vec<Proc> = Vec::new();
    let mut worker_logs = Vec::new();
    for n in 0..3 {
        let log = tmp.path().join(format!("worker{n}.log"));
        workers.push(start_worker_at(
            &masters,
            &a.token_file(),
            &format!("w{n}"),
            &log,
            &[],
        )?);
        worker_logs.push(log);
    }
    let logs = || {
        worker_logs
            .iter()
            .map(|l| format!("--- {}\n{}", l.display(), read_log(l)))
            .collect::<Vec<_>>()
            .join("\n")
    };

    let spec_path = tmp.path().join("spec.toml");
    std::fs::write(&spec_path, spec())?;
    let submit = a.client(&["submit", spec_path.to_str().context("utf-8 path")?])?;
    ensure!(submit.status.success(), "submit: {}", describe(&submit));
    let experiment = submitted_experiment_id(&String::from_utf8_lossy(&submit.stdout))
        .with_context(|| format!("no experiment id: {}", describe(&submit)))?;

    // First failure: A dies with two trials done and others held.
    wait_for("two completed trials on A", &a, &experiment, |t| {
        count(t, "completed") >= 2 && count(t, "running") >= 1
    })
    .with_context(logs)?;
    a.kill()?;
    let first = takeover_time(&b, Instant::now())?;
    // A comes back on its address, now as the standby.
    a.restart(Duration::from_secs(10))?;

    // Second failure, later in the experiment: B dies.
    wait_for("five completed trials on B", &b, &experiment, |t| {
        count(t, "completed") >= 5 && count(t, "running") >= 1
    })
    .with_context(logs)?;
    b.kill()?;
    let second = takeover_time(&a, Instant::now())?;

    let trials = wait_for("the experiment to complete on A", &a, &experiment, |t| {
        t.len() >= MAX_TRIALS
            && t.iter()
                .all(|t| matches!(t["status"].as_str(), Some("completed" | "failed")))
    })
    .with_context(logs)?;

    // Every trial exactly once: the budget, no more; each id and seq once; all completed.
    let ids: HashSet<_> = trials.iter().map(|t| t["trial_id"].to_string()).collect();
    let seqs: HashSet<_> = trials.iter().map(|t| t["seq"].to_string()).collect();
    ensure!(
        trials.len() == MAX_TRIALS
            && count(&trials, "completed") == MAX_TRIALS
            && ids.len() == MAX_TRIALS
            && seqs.len() == MAX_TRIALS,
        "{trials:#?}"
    );
    // The best trial is the pool's maximum.
    let max = trials
        .iter()
        .filter_map(|t| t["score"].as_f64())
        .fold(f64::MIN, f64::max);
    let best = a.client(&["best", &experiment, "--output", "json"])?;
    ensure!(best.status.success(), "best: {}", describe(&best));
    let best: serde_json::Value = serde_json::from_slice(&best.stdout)?;
    ensure!(
        best["trial"]["score"].as_f64() == Some(max),
        "best {} is not the pool maximum {max}",
        best["trial"]
    );
    ensure!(
        workers.iter_mut().all(|w| w.is_running()),
        "a worker exited:\n{}",
        logs()
    );
    eprintln!(
        "takeover after SIGKILL: {:.2} s (A -> B), {:.2} s (B -> A)",
        first.as_secs_f64(),
        second.as_secs_f64()
    );
    for w in &mut workers {
        w.terminate(Duration::from_secs(20))?;
    }
    Ok(())
}

/// A master whose election session ends (here: terminated by the database, as a lost network
/// would end it) stops serving and exits with an error instead of going on unfenced; the
/// standby takes over.
#[test]
fn a_master_that_loses_its_election_session_exits_and_the_standby_takes_over() -> Result<()> {
    let Some(server) = pg_server("a_master_that_loses_its_election_session") else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("shared");
    let db = fresh_pg_database(&server)?;
    let (a_addr, b_addr) = reserve_two_ports()?;
    let flags = ["--heartbeat-secs", "1", "--lease-secs", "20", "--db", &db];
    let mut a = MasterProc::start_on(&data_dir, &a_addr, &flags)?;
    let b = MasterProc::start_on(&data_dir, &b_addr, &flags)?;
    ensure!(a.client(&["status"])?.status.success(), "A is active");

    // End A's election session from the database side: the session holding the advisory lock.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let terminated: i64 = rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&db).await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_locks
              WHERE locktype = 'advisory' AND granted AND database = (
                  SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        anyhow::Ok(n)
    })?;
    ensure!(
        terminated == 1,
        "one election session held the lock, not {terminated}"
    );

    let exited = poll(
        "master A to exit",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || Ok((!a.proc.is_running()).then_some(())),
    );
    exited.with_context(|| read_log(&a.log))?;
    let log = read_log(&a.log);
    ensure!(
        log.contains("lost the leadership"),
        "A's log does not say why it stopped:\n{log}"
    );
    let status = a.proc.child.wait()?;
    ensure!(!status.success(), "A exited with {status}, not an error");
    takeover_time(&b, Instant::now())?;
    Ok(())
}
