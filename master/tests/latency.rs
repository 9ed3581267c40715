//! Per-call latency of one worker over loopback, against an in-process master on port 0.
//!
//! Regression: the master served its accepted sockets with Nagle's algorithm on (tonic's
//! `Server::tcp_nodelay` does not reach a listener handed to `serve_with_incoming`), so the
//! small frames of every answer waited for the client's delayed ACK: each Acquire took ~45 ms
//! although the trial was leased within 2 ms. A 40 ms stall cannot pass the median bound below;
//! a loaded machine (two shared cores, a debug build) still passes it easily.
//!
//! `cargo test -p explore-master --test latency -- --nocapture` prints the medians; with
//! `--release` they are the figures for a real master.

use std::future::Future;
use std::time::{Duration, Instant};

use explore_common::client::{self, BearerToken};
use explore_common::proto::{self, PROTOCOL_VERSION};
use explore_master::server::{start, ServeConfig};

/// Sequential calls of each kind measured.
const CALLS: usize = 50;
/// Bound on the median of each kind: far above a healthy call, below one delayed ACK.
const MEDIAN_LIMIT: Duration = Duration::from_millis(20);
/// Bound on any single call.
const LIMIT: Duration = Duration::from_secs(30);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("call did not finish in time")
}

/// Runs `call` and adds its duration to `samples`.
async fn timed<T>(samples: &mut Vec<Duration>, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let value = within(call).await;
    samples.push(started.elapsed());
    value
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_sees_no_nagle_stall_on_acquire_complete_or_admin_calls() {
    let dir = tempfile::tempdir().unwrap();
    let handle = within(start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let url = format!("http://{}", handle.addr);
    let token = BearerToken::new(&handle.token).unwrap();
    let channel = within(client::connect(&url)).await.unwrap();
    let mut worker = client::worker_client(channel.clone(), &token);
    let mut admin = client::admin_client(channel, &token);

    let spec = format!(
        "name = \"latency\"\nseed = 5\n[budget]\nmax_trials = {}\n",
        CALLS + 10
    );
    let experiment_id =
        within(admin.submit_experiment(proto::SubmitExperimentRequest { spec_toml: spec }))
            .await
            .unwrap()
            .into_inner()
            .experiment_id;
    let worker_id = within(worker.register(proto::RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        name: "latency".into(),
        device: "simulated".into(),
        slots: 1,
    }))
    .await
    .unwrap()
    .into_inner()
    .worker_id;

    let (mut acquire, mut complete, mut status) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..CALLS {
        let trial = timed(
            &mut acquire,
            worker.acquire(proto::AcquireRequest {
                worker_id: worker_id.clone(),
                wait_ms: 5_000,
            }),
        )
        .await
        .unwrap()
        .into_inner()
        .trial
        .unwrap_or_else(|| panic!("call {n}: a trial is queued after every completion"));
        let score = 0.5 + (n % 7) as f64 / 20.0;
        let answer = timed(
            &mut complete,
            worker.complete(proto::CompleteRequest {
                worker_id: worker_id.clone(),
                trial_id: trial.trial_id.clone(),
                attempt: trial.attempt,
                score,
                epochs_run: 1,
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_inner();
        assert!(answer.accepted, "call {n}: {answer:?}");
        timed(
            &mut status,
            admin.get_experiment(proto::GetExperimentRequest {
                experiment_id: experiment_id.clone(),
            }),
        )
        .await
        .unwrap();
    }

    let mut report = Vec::new();
    for (kind, samples) in [
        ("acquire", &acquire),
        ("complete", &complete),
        ("get_experiment", &status),
    ] {
        let (p50, p90) = (percentile(samples, 0.5), percentile(samples, 0.9));
        println!(
            "latency [{kind}]: {CALLS} sequential calls, p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms",
            p50.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3,
            samples.iter().max().unwrap().as_secs_f64() * 1e3
        );
        report.push((kind, p50));
    }
    for (kind, p50) in report {
        assert!(
            p50 < MEDIAN_LIMIT,
            "median {kind} call took {p50:?} (limit {MEDIAN_LIMIT:?}): is TCP_NODELAY off on \
             the master's accepted sockets or on the client channel?"
        );
    }
    within(handle.shutdown()).await.unwrap();
}
