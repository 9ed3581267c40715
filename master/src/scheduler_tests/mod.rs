//! Shared harness for the scheduler tests against real SQLite, one submodule per subject.
//! Timing-dependent cases use short leases and bounded waits; every await that could hang runs
//! under [`within`].

mod budgets;
mod chains;
mod control;
mod early_stopping;
mod epoch_metrics;
mod exhaustion;
mod final_phase;
mod invariants;
mod leases;
mod predictor_search;
mod proposals;
mod restarts;
mod results;
mod submission;
mod transfer;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use explore_common::spec::ExperimentSpec;
use explore_common::{ExperimentId, Genome, HyperParams, TrialId, WorkerId};
use tempfile::TempDir;

use crate::artifacts::ArtifactStore;
use crate::error::MasterError;
use crate::scheduler::{
    CompleteAnswer, ExperimentView, HeartbeatAnswer, Progress, Scheduler, SchedulerConfig,
};
use crate::store::{ExperimentStatus, Store, TrialCounts, TrialResult, TrialRow, TrialStatus};

/// A lease no test outlives.
const LONG_LEASE: Duration = Duration::from_secs(60);
/// A lease that expires within a test.
const SHORT_LEASE: Duration = Duration::from_millis(150);
/// Upper bound on any single await.
const LIMIT: Duration = Duration::from_secs(30);
/// Long-poll wait when a trial is expected to be queued already.
const WAIT: Duration = Duration::from_secs(2);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("scheduler call did not finish in time")
}

fn config(lease: Duration, max_attempts: u32) -> SchedulerConfig {
    SchedulerConfig {
        lease,
        heartbeat_interval: lease / 4,
        max_attempts,
    }
}

/// A scheduler over a file database and an artifact directory in `dir`.
struct Harness {
    sched: Arc<Scheduler>,
    dir: TempDir,
}

impl Harness {
    async fn new(cfg: SchedulerConfig) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let sched = open_scheduler(dir.path(), cfg).await;
        Harness {
            sched: Arc::new(sched),
            dir,
        }
    }

    async fn long() -> Harness {
        Harness::new(config(LONG_LEASE, 3)).await
    }
}

/// The variable that moves the scheduler tests onto PostgreSQL (`postgres`; the server is
/// `EXPLORE_TEST_PG_URL`'s). Unset, they run on SQLite.
const BACKEND_VAR: &str = "EXPLORE_SCHEDULER_TESTS_DB";

/// The pool of a scheduler in `dir`: SQLite in `dir`, or with `EXPLORE_SCHEDULER_TESTS_DB=postgres`
/// a PostgreSQL schema that belongs to `dir` (so a reopened scheduler finds the same pool).
async fn test_store(dir: &std::path::Path) -> Store {
    match std::env::var(BACKEND_VAR).as_deref() {
        Ok("postgres") => crate::store::postgres::testing::store_for_dir(dir).await,
        Ok("sqlite") | Err(_) => Store::open(dir).await.unwrap(),
        Ok(other) => panic!("{BACKEND_VAR}={other}: expected sqlite or postgres"),
    }
}

async fn open_scheduler(dir: &std::path::Path, cfg: SchedulerConfig) -> Scheduler {
    let store = test_store(dir).await;
    let artifacts = ArtifactStore::open_dir(&dir.join("artifacts"), 1 << 20)
        .await
        .unwrap();
    Scheduler::new(store, artifacts, cfg)
}

/// A scheduler over a private in-memory database (a fresh schema on PostgreSQL).
async fn in_memory_scheduler(artifact_dir: &std::path::Path) -> Scheduler {
    let store = if std::env::var(BACKEND_VAR).as_deref() == Ok("postgres") {
        test_store(&artifact_dir.join("pool")).await
    } else {
        Store::in_memory().await.unwrap()
    };
    let artifacts = ArtifactStore::open_dir(artifact_dir, 1 << 20)
        .await
        .unwrap();
    Scheduler::new(store, artifacts, config(LONG_LEASE, 3))
}

fn spec(max_trials: u32, extra: &str) -> ExperimentSpec {
    ExperimentSpec::from_toml(&format!(
        "name = \"test\"\n[budget]\nmax_trials = {max_trials}\n{extra}"
    ))
    .unwrap()
}

/// A spec with its own random seed.
fn seeded_spec(max_trials: u32, seed: u64) -> ExperimentSpec {
    ExperimentSpec::from_toml(&format!(
        "name = \"test\"\nseed = {seed}\n[budget]\nmax_trials = {max_trials}\n"
    ))
    .unwrap()
}

fn result(score: f64) -> TrialResult {
    TrialResult {
        score,
        metrics: BTreeMap::from([("train_loss".to_string(), 0.3)]),
        checkpoint_sha256: None,
        epochs_run: 2,
    }
}

fn progress(epoch: u32) -> Progress {
    Progress {
        started: epoch > 0,
        epoch,
        total_epochs: 3,
        train_loss: 0.5,
        val_accuracy: f64::NAN,
        metrics: BTreeMap::new(),
    }
}

async fn register(sched: &Scheduler, slots: u32) -> WorkerId {
    within(sched.register("w", "cpu", slots)).await.unwrap()
}

/// Leases a trial that must be available.
async fn lease(sched: &Scheduler, worker: &WorkerId) -> TrialRow {
    within(sched.acquire(worker.as_str(), WAIT))
        .await
        .unwrap()
        .expect("a trial should be available")
}

async fn finish(
    sched: &Scheduler,
    worker: &WorkerId,
    trial: &TrialRow,
    score: f64,
) -> CompleteAnswer {
    within(sched.complete(
        worker.as_str(),
        trial.id.as_str(),
        trial.attempt as u32,
        result(score),
    ))
    .await
    .unwrap()
}

async fn view(sched: &Scheduler, id: &ExperimentId) -> ExperimentView {
    within(sched.experiment_view(id.as_str())).await.unwrap()
}

async fn counts(sched: &Scheduler, id: &ExperimentId) -> TrialCounts {
    view(sched, id).await.counts
}

async fn trials(sched: &Scheduler, id: &ExperimentId) -> Vec<TrialRow> {
    within(sched.trials(id.as_str())).await.unwrap()
}

async fn trial(sched: &Scheduler, id: &TrialId) -> TrialRow {
    let mut conn = within(sched.store().conn()).await.unwrap();
    conn.get_trial(id).await.unwrap().unwrap()
}

async fn late_results(sched: &Scheduler) -> Vec<(String, i64, f64)> {
    let mut conn = within(sched.store().conn()).await.unwrap();
    crate::store::suite::raw_rows(
        &mut *conn,
        "SELECT trial_id, attempt, score FROM late_results ORDER BY received_at_ms, trial_id, attempt",
    )
    .await
}

/// The best completed score of an experiment, read from the trials themselves.
async fn max_completed_score(sched: &Scheduler, id: &ExperimentId) -> Option<f64> {
    trials(sched, id)
        .await
        .iter()
        .filter(|t| t.status == TrialStatus::Completed)
        .filter_map(|t| t.score)
        .fold(None, |best: Option<f64>, s| {
            Some(best.map_or(s, |b| b.max(s)))
        })
}

/// Trains an experiment to its end with one single-slot worker, scoring the n-th completion
/// `scores[n % len]`; returns the number of completions.
async fn run_to_end(
    sched: &Scheduler,
    worker: &WorkerId,
    id: &ExperimentId,
    scores: &[f64],
) -> usize {
    let mut n = 0;
    while view(sched, id).await.row.status == ExperimentStatus::Running {
        assert!(n < 500, "experiment does not end");
        let t = lease(sched, worker).await;
        let answer = finish(sched, worker, &t, scores[n % scores.len()]).await;
        assert_eq!(answer.reason, "", "{answer:?}");
        n += 1;
    }
    n
}

fn assert_code<T: std::fmt::Debug>(r: Result<T, MasterError>, expected: tonic::Code) {
    match r {
        Ok(v) => panic!("expected {expected:?}, got Ok({v:?})"),
        Err(e) => {
            let status = tonic::Status::from(e);
            assert_eq!(status.code(), expected, "{}", status.message());
        }
    }
}

// ---- search at cluster scale: chains, early stopping and the search invariants -----------------

/// Reports epoch `epoch` of a held trial with a validation accuracy.
async fn report_epoch(
    sched: &Scheduler,
    w: &WorkerId,
    t: &TrialRow,
    epoch: u32,
    val: f64,
) -> HeartbeatAnswer {
    let p = Progress {
        started: true,
        epoch,
        total_epochs: HyperParams::from_json(&t.hparams_json).unwrap().epochs,
        train_loss: 0.4,
        val_accuracy: val,
        metrics: BTreeMap::new(),
    };
    within(sched.heartbeat(w.as_str(), t.id.as_str(), t.attempt as u32, p))
        .await
        .unwrap()
}

/// Completes a trial with a real uploaded checkpoint, so children can inherit from it.
async fn finish_with_checkpoint(sched: &Scheduler, w: &WorkerId, t: &TrialRow, score: f64) {
    let mut upload = within(sched.artifacts().begin_upload()).await.unwrap();
    within(upload.write(format!("weights of {}", t.id).as_bytes()))
        .await
        .unwrap();
    let (sha, _) = within(upload.finish()).await.unwrap();
    let r = TrialResult {
        checkpoint_sha256: Some(sha),
        ..result(score)
    };
    within(sched.complete(w.as_str(), t.id.as_str(), t.attempt as u32, r))
        .await
        .unwrap();
}
