//! End to end with simulated workers (`worker simulate`, included here as a module so the test
//! needs no libtorch): real gRPC clients register, lease, heartbeat and complete trials with
//! synthetic scores against an in-process master over loopback, its pool a file on disk.
//!
//! * exactly-once accounting: every trial the master records as completed was completed by
//!   exactly one accepted `Complete`, and nothing is left queued or held at the end;
//! * a budget of several thousand trials is reached (regression: the search used to end early
//!   with "no new proposal" once a chain's model had no untried child in 16 tries).
//!
//! `cargo test -p explore-master --test simulated -- --nocapture` prints the figures.

#[allow(dead_code)]
#[path = "../../worker/src/simulate.rs"]
mod simulate;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use explore_common::client::{self, BearerToken};
use explore_common::proto;
use explore_master::server::{start, MasterHandle, ServeConfig};
use simulate::{SimConfig, SimReport};
use tokio::sync::watch;

async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .expect("did not finish in time")
}

/// Starts a master, submits `spec`, runs `workers` simulated workers until the experiment ends.
async fn run_experiment(
    dir: &std::path::Path,
    spec: &str,
    workers: usize,
    limit: Duration,
) -> (MasterHandle, String, SimReport, Vec<proto::TrialRecord>) {
    let handle = within(
        limit,
        start(ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.to_path_buf(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let url = format!("http://{}", handle.addr);
    let token = BearerToken::new(&handle.token).unwrap();
    let channel = client::connect(&url).await.unwrap();
    let mut admin = client::admin_client(channel, &token);
    let experiment_id = admin
        .submit_experiment(proto::SubmitExperimentRequest {
            spec_toml: spec.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .experiment_id;
    let mut config = SimConfig::new(&url, &handle.token, workers);
    config.connections = 4;
    config.idle_exit = Duration::from_secs(2);
    config.acquire_wait = Duration::from_millis(500);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let report = within(limit, simulate::run(config, stop_rx)).await.unwrap();
    let mut trials = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_trials_page(proto::ListTrialsPageRequest {
                experiment_id: experiment_id.clone(),
                page_size: 700,
                page_token,
                status: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        trials.extend(page.trials);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    (handle, experiment_id, report, trials)
}

fn check_exactly_once(report: &SimReport, trials: &[proto::TrialRecord]) {
    assert_eq!(report.errors, 0, "errors: {:?}", report.error_samples);
    let duplicates: Vec<_> = report.completed.iter().filter(|(_, &n)| n != 1).collect();
    assert!(duplicates.is_empty(), "completed twice: {duplicates:?}");
    let by_id: HashMap<&str, &proto::TrialRecord> =
        trials.iter().map(|t| (t.trial_id.as_str(), t)).collect();
    assert_eq!(by_id.len(), trials.len(), "a trial listed twice");
    let completed: Vec<&proto::TrialRecord> =
        trials.iter().filter(|t| t.status == "completed").collect();
    for t in &completed {
        assert_eq!(
            report.completed.get(t.trial_id.as_str()),
            Some(&1),
            "trial {} is completed in the pool but no worker completed it once",
            t.trial_id
        );
        assert_eq!(t.metrics.get("synthetic"), Some(&1.0));
    }
    for id in report.completed.keys() {
        let t = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("trial {id} completed by a worker is not in the pool"));
        assert_eq!(t.status, "completed", "trial {id} lost its completion");
    }
    let open: Vec<_> = trials
        .iter()
        .filter(|t| matches!(t.status.as_str(), "queued" | "leased" | "running"))
        .map(|t| (&t.trial_id, &t.status))
        .collect();
    assert!(open.is_empty(), "trials left open: {open:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_workers_complete_every_trial_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "name = \"simulated\"\nseed = 11\n[budget]\nmax_trials = 300\n";
    let started = Instant::now();
    let (handle, _id, report, trials) =
        run_experiment(dir.path(), spec, 24, Duration::from_secs(120)).await;
    println!(
        "simulated: {} trials in {:.1} s ({:.0} trials/s), acquire p50 {:.2} ms p99 {:.2} ms, \
         complete p50 {:.2} ms p99 {:.2} ms",
        report.trials,
        report.seconds,
        report.trials_per_second,
        report.acquire.p50_ms,
        report.acquire.p99_ms,
        report.complete.p50_ms,
        report.complete.p99_ms
    );
    check_exactly_once(&report, &trials);
    let completed = trials.iter().filter(|t| t.status == "completed").count();
    assert_eq!(completed, 300, "the budget's trials all completed");
    assert_eq!(report.trials, 300);
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_of_thousands_of_trials_runs_to_the_end() {
    const BUDGET: u32 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("name = \"long\"\nseed = 3\n[budget]\nmax_trials = {BUDGET}\n");
    let (handle, experiment_id, report, trials) =
        run_experiment(dir.path(), &spec, 8, Duration::from_secs(240)).await;
    println!(
        "long run: {} trials in {:.1} s ({:.0} trials/s)",
        report.trials, report.seconds, report.trials_per_second
    );
    check_exactly_once(&report, &trials);
    let token = BearerToken::new(&handle.token).unwrap();
    let channel = client::connect(&format!("http://{}", handle.addr))
        .await
        .unwrap();
    let summary = client::admin_client(channel, &token)
        .get_experiment(proto::GetExperimentRequest { experiment_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.status, "completed");
    assert_eq!(
        summary.trials_completed, BUDGET,
        "ended early: {:?}",
        summary.status_reason
    );
    handle.shutdown().await.unwrap();
}
