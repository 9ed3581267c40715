//! The master's gRPC services end to end: a real server started in-process on port 0, called
//! through the shared clients. The "worker" here is the test itself, choosing the scores, since
//! these tests are about the master's bookkeeping, not about training.

use std::future::Future;
use std::time::Duration;

use explore_common::client::{self, AuthChannel, BearerToken};
use explore_common::proto::admin_service_client::AdminServiceClient;
use explore_common::proto::worker_service_client::WorkerServiceClient;
use explore_common::proto::{self, PROTOCOL_VERSION};
use explore_master::server::{start, MasterHandle, ServeConfig};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio_stream::StreamExt;
use tonic::Code;

const MINIMAL: &str = "name = \"svc\"\n[budget]\nmax_trials = 4\n";
const LIMIT: Duration = Duration::from_secs(30);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("call did not finish in time")
}

struct Master {
    handle: MasterHandle,
    url: String,
    _dir: TempDir,
}

impl Master {
    async fn start() -> Master {
        Master::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut ServeConfig)) -> Master {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        adjust(&mut config);
        let handle = within(start(config)).await.unwrap();
        let url = format!("http://{}", handle.addr);
        Master {
            handle,
            url,
            _dir: dir,
        }
    }

    async fn channel(&self) -> tonic::transport::Channel {
        within(client::connect(&self.url)).await.unwrap()
    }

    async fn worker(&self) -> WorkerServiceClient<AuthChannel> {
        client::worker_client(
            self.channel().await,
            &BearerToken::new(&self.handle.token).unwrap(),
        )
    }

    async fn admin(&self) -> AdminServiceClient<AuthChannel> {
        client::admin_client(
            self.channel().await,
            &BearerToken::new(&self.handle.token).unwrap(),
        )
    }

    async fn stop(self) {
        within(self.handle.shutdown()).await.unwrap();
    }
}

async fn register(worker: &mut WorkerServiceClient<AuthChannel>, slots: u32) -> String {
    let r = within(worker.register(proto::RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        name: "test-worker".into(),
        device: "cpu".into(),
        slots,
    }))
    .await
    .unwrap()
    .into_inner();
    assert!(r.worker_id.starts_with("worker-"), "{}", r.worker_id);
    r.worker_id
}

async fn submit(admin: &mut AdminServiceClient<AuthChannel>, toml: &str) -> String {
    within(admin.submit_experiment(proto::SubmitExperimentRequest {
        spec_toml: toml.into(),
    }))
    .await
    .unwrap()
    .into_inner()
    .experiment_id
}

async fn summary(
    admin: &mut AdminServiceClient<AuthChannel>,
    id: &str,
) -> proto::ExperimentSummary {
    within(admin.get_experiment(proto::GetExperimentRequest {
        experiment_id: id.into(),
    }))
    .await
    .unwrap()
    .into_inner()
}

async fn upload(
    worker: &mut WorkerServiceClient<AuthChannel>,
    bytes: &[u8],
    chunk: usize,
) -> Result<proto::UploadCheckpointResponse, tonic::Status> {
    let chunks: Vec<proto::CheckpointChunk> = bytes
        .chunks(chunk)
        .map(|c| proto::CheckpointChunk { data: c.to_vec() })
        .collect();
    within(worker.upload_checkpoint(tokio_stream::iter(chunks)))
        .await
        .map(|r| r.into_inner())
}

async fn collect(
    stream: tonic::Streaming<proto::CheckpointChunk>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = stream;
    let mut bytes = Vec::new();
    while let Some(chunk) = within(stream.next()).await {
        bytes.extend_from_slice(&chunk?.data);
    }
    Ok(bytes)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn calls_without_the_token_are_refused_and_record_nothing() {
    let master = Master::start().await;
    let channel = master.channel().await;
    let mut bare_worker = WorkerServiceClient::new(channel.clone());
    let mut bare_admin = AdminServiceClient::new(channel.clone());
    let err = within(bare_worker.register(proto::RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        name: "intruder".into(),
        device: "cpu".into(),
        slots: 4,
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = within(
        bare_admin.submit_experiment(proto::SubmitExperimentRequest {
            spec_toml: MINIMAL.into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut wrong =
        client::admin_client(channel, &BearerToken::new("not-the-cluster-token").unwrap());
    let err = within(wrong.submit_experiment(proto::SubmitExperimentRequest {
        spec_toml: MINIMAL.into(),
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(master.handle.refused_calls(), 3);

    let mut admin = master.admin().await;
    let listed = within(admin.list_experiments(proto::ListExperimentsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.experiments.is_empty(),
        "a refused submission was recorded"
    );
    // Nor was the intruder registered: nothing was queued for its four slots.
    let id = submit(&mut admin, MINIMAL).await;
    assert_eq!(summary(&mut admin, &id).await.trials_queued, 1);
    assert_eq!(master.handle.refused_calls(), 3);
    master.stop().await;
}

#[tokio::test]
async fn register_with_another_protocol_version_is_refused() {
    let master = Master::start().await;
    let mut worker = master.worker().await;
    for version in [0, PROTOCOL_VERSION + 1] {
        let err = within(worker.register(proto::RegisterRequest {
            protocol_version: version,
            name: "old".into(),
            device: "cpu".into(),
            slots: 1,
        }))
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(
            err.message().contains("protocol version"),
            "{}",
            err.message()
        );
    }
    let r = within(worker.register(proto::RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        name: "new".into(),
        device: "cpu".into(),
        slots: 0,
    }))
    .await
    .unwrap()
    .into_inner();
    assert_eq!(r.lease_ms, 60_000);
    assert_eq!(r.heartbeat_interval_ms, 10_000);
    master.stop().await;
}

#[tokio::test]
async fn checkpoints_round_trip_through_upload_and_download() {
    let master = Master::start().await;
    let mut worker = master.worker().await;
    let mut admin = master.admin().await;
    // Larger than one download chunk, uploaded in uneven chunks.
    let bytes = pattern(700_000);
    let up = upload(&mut worker, &bytes, 100_003).await.unwrap();
    assert_eq!(up.size_bytes, bytes.len() as u64);
    assert_eq!(up.sha256, hex::encode(Sha256::digest(&bytes)));

    let request = proto::DownloadCheckpointRequest {
        sha256: up.sha256.clone(),
    };
    let via_worker = within(worker.download_checkpoint(request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(collect(via_worker).await.unwrap(), bytes);
    let via_admin = within(admin.download_checkpoint(request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(collect(via_admin).await.unwrap(), bytes);

    // Uploading the same bytes again gives the same address.
    assert_eq!(
        upload(&mut worker, &bytes, 1 << 20).await.unwrap().sha256,
        up.sha256
    );
    let empty = upload(&mut worker, &[], 1).await.unwrap();
    assert_eq!(empty.sha256, hex::encode(Sha256::digest(b"")));

    let unknown = proto::DownloadCheckpointRequest {
        sha256: "0".repeat(64),
    };
    let err = match within(worker.download_checkpoint(unknown)).await {
        Err(status) => status,
        Ok(stream) => collect(stream.into_inner()).await.unwrap_err(),
    };
    assert_eq!(err.code(), Code::NotFound);
    let malformed = proto::DownloadCheckpointRequest {
        sha256: "../token".into(),
    };
    let err = match within(admin.download_checkpoint(malformed)).await {
        Err(status) => status,
        Ok(stream) => collect(stream.into_inner()).await.unwrap_err(),
    };
    assert_eq!(err.code(), Code::InvalidArgument);
    master.stop().await;
}

#[tokio::test]
async fn oversized_checkpoint_is_refused() {
    let master = Master::start_with(|c| c.max_checkpoint_bytes = 1000).await;
    let mut worker = master.worker().await;
    let err = upload(&mut worker, &pattern(2000), 300).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // The limit itself is fine.
    let ok = upload(&mut worker, &pattern(1000), 300).await.unwrap();
    assert_eq!(ok.size_bytes, 1000);
    master.stop().await;
}

#[tokio::test]
async fn invalid_spec_is_refused_naming_the_key() {
    let master = Master::start().await;
    let mut admin = master.admin().await;
    let cases = [
        (
            "name = \"x\"\n[budget]\nmax_trials = 0\n",
            "budget.max_trials",
        ),
        (
            "name = \"x\"\n[budget]\nmax_trials = 3\nmax_trails = 4\n",
            "max_trails",
        ),
        (
            "name = \"x\"\n[budget]\nmax_trials = 3\n[search]\nlearning_rate = [0.1, 0.01]\n",
            "search.learning_rate",
        ),
        (
            "name = \"x\"\n[budget]\nmax_trials = 3\n[[seeds]]\npreset = \"nope\"\n",
            "seeds[0].preset",
        ),
        ("name = \"x\"\n", "budget"),
        ("this is not toml", ""),
    ];
    for (toml, key) in cases {
        let err = within(admin.submit_experiment(proto::SubmitExperimentRequest {
            spec_toml: toml.into(),
        }))
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{toml}: {err:?}");
        assert!(err.message().contains(key), "{toml}: {}", err.message());
    }
    let listed = within(admin.list_experiments(proto::ListExperimentsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.experiments.is_empty());
    master.stop().await;
}

#[tokio::test]
async fn malformed_and_unknown_ids_are_refused() {
    let master = Master::start().await;
    let mut worker = master.worker().await;
    let mut admin = master.admin().await;
    let err = within(worker.acquire(proto::AcquireRequest {
        worker_id: "nobody".into(),
        wait_ms: 0,
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("worker_id"), "{}", err.message());
    let w = register(&mut worker, 1).await;
    let err = within(worker.complete(proto::CompleteRequest {
        worker_id: w.clone(),
        trial_id: "exp-0000000000000000".into(),
        attempt: 1,
        score: 0.5,
        ..Default::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("trial_id"), "{}", err.message());
    let err = within(worker.complete(proto::CompleteRequest {
        worker_id: w.clone(),
        trial_id: "trial-0000000000000000".into(),
        attempt: 1,
        score: 0.5,
        ..Default::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = within(admin.get_experiment(proto::GetExperimentRequest {
        experiment_id: "exp-0000000000000000".into(),
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = within(admin.list_trials(proto::ListTrialsRequest {
        experiment_id: "trial-0000000000000000".into(),
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    master.stop().await;
}

#[tokio::test]
async fn best_model_is_not_found_before_any_completion() {
    let master = Master::start().await;
    let mut admin = master.admin().await;
    let id = submit(&mut admin, MINIMAL).await;
    let err = within(admin.get_best_model(proto::GetBestModelRequest { experiment_id: id }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    master.stop().await;
}

/// What trial `n` of the full flow reports with its epoch: odd ones a named metric, even ones
/// none (the plain objective).
fn epoch_metrics(n: usize) -> std::collections::HashMap<String, f64> {
    match n % 2 {
        1 => [("elr.norm_drift".to_string(), n as f64 / 8.0)].into(),
        _ => Default::default(),
    }
}

#[tokio::test]
async fn a_heartbeat_with_a_bad_epoch_metric_is_refused_naming_it() {
    let master = Master::start().await;
    let mut worker = master.worker().await;
    let mut admin = master.admin().await;
    let id = submit(&mut admin, MINIMAL).await;
    let w = register(&mut worker, 1).await;
    let trial = within(worker.acquire(proto::AcquireRequest {
        worker_id: w.clone(),
        wait_ms: 2_000,
    }))
    .await
    .unwrap()
    .into_inner()
    .trial
    .expect("a trial is queued");
    let beat = |metrics: &[(&str, f64)]| proto::HeartbeatRequest {
        worker_id: w.clone(),
        trial_id: trial.trial_id.clone(),
        attempt: trial.attempt,
        started: true,
        epoch: 1,
        total_epochs: 2,
        train_loss: 0.4,
        val_accuracy: 0.6,
        metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    };
    for (metrics, named) in [
        (vec![("elr norm drift", 0.1)], "\"elr norm drift\""),
        (
            vec![("elr.norm_drift", f64::NAN)],
            "\"elr.norm_drift\" = NaN",
        ),
        (
            vec![("elr.norm_drift", f64::INFINITY)],
            "\"elr.norm_drift\" = inf",
        ),
    ] {
        let err = within(worker.heartbeat(beat(&metrics))).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains(named), "{}", err.message());
    }
    let listed = within(admin.list_trials(proto::ListTrialsRequest {
        experiment_id: id.clone(),
    }))
    .await
    .unwrap()
    .into_inner();
    let held = listed
        .trials
        .iter()
        .find(|t| t.trial_id == trial.trial_id)
        .unwrap();
    assert_eq!((held.status.as_str(), held.epochs_run), ("leased", 0));
    assert!(held.epoch_metrics.is_empty());
    let ok = within(worker.heartbeat(beat(&[("elr.norm_drift", 0.5)])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.command, proto::TrialCommand::Continue as i32);
    master.stop().await;
}

#[tokio::test]
async fn full_flow_until_the_experiment_completes() {
    let master = Master::start().await;
    let mut worker = master.worker().await;
    let mut admin = master.admin().await;
    let id = submit(
        &mut admin,
        "name = \"flow\"\nseed = 5\n[budget]\nmax_trials = 5\n",
    )
    .await;
    let w = register(&mut worker, 1).await;
    let scores = [0.62, 0.71, 0.68, 0.74, 0.70];
    let mut checkpoints = Vec::new();
    let mut trained = Vec::new();
    for (n, score) in scores.iter().enumerate() {
        let s = summary(&mut admin, &id).await;
        assert_eq!(s.status, "running");
        assert_eq!(s.trials_completed, n as u32);
        let trial = within(worker.acquire(proto::AcquireRequest {
            worker_id: w.clone(),
            wait_ms: 2_000,
        }))
        .await
        .unwrap()
        .into_inner()
        .trial
        .expect("a trial is queued");
        assert_eq!(trial.experiment_id, id);
        assert_eq!(trial.attempt, 1);
        assert_eq!(
            trial.parent_trial_id.is_empty(),
            n == 0,
            "only the seed has no parent"
        );
        let data = trial.data.clone().expect("data spec");
        assert_eq!(
            (data.dataset.as_str(), data.split_seed),
            ("fashion-mnist", 5)
        );
        explore_common::Genome::from_json(&trial.genome_json).unwrap();
        explore_common::HyperParams::from_json(&trial.hparams_json).unwrap();

        let beat = within(worker.heartbeat(proto::HeartbeatRequest {
            worker_id: w.clone(),
            trial_id: trial.trial_id.clone(),
            attempt: trial.attempt,
            started: true,
            epoch: 1,
            total_epochs: 2,
            train_loss: 0.4,
            val_accuracy: *score,
            metrics: epoch_metrics(n),
        }))
        .await
        .unwrap()
        .into_inner();
        assert_eq!(beat.command, proto::TrialCommand::Continue as i32);

        let weights = format!("weights of trial {n}").into_bytes();
        let sha = upload(&mut worker, &weights, 7).await.unwrap().sha256;
        let done = within(worker.complete(proto::CompleteRequest {
            worker_id: w.clone(),
            trial_id: trial.trial_id.clone(),
            attempt: trial.attempt,
            score: *score,
            metrics: [("test_accuracy".to_string(), score - 0.01)].into(),
            checkpoint_sha256: sha.clone(),
            epochs_run: 2,
        }))
        .await
        .unwrap()
        .into_inner();
        assert!(done.accepted, "{}", done.reason);
        // A retried Complete is answered without being counted twice.
        let again = within(worker.complete(proto::CompleteRequest {
            worker_id: w.clone(),
            trial_id: trial.trial_id.clone(),
            attempt: trial.attempt,
            score: *score,
            checkpoint_sha256: sha.clone(),
            epochs_run: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
        assert_eq!(again.reason, "already recorded");
        checkpoints.push((sha, weights));
        trained.push(trial.trial_id);
    }

    let s = summary(&mut admin, &id).await;
    assert_eq!(s.status, "completed");
    assert_eq!(s.status_reason, "trial budget reached");
    assert_eq!(
        (
            s.trials_completed,
            s.trials_queued,
            s.trials_running,
            s.trials_failed
        ),
        (5, 0, 0, 0)
    );
    assert_eq!(s.max_trials, 5);
    assert_eq!(s.best_score, 0.74);
    assert_eq!(s.best_trial_id, trained[3]);
    assert!(s.finished_at_ms >= s.created_at_ms);

    let best = within(admin.get_best_model(proto::GetBestModelRequest {
        experiment_id: id.clone(),
    }))
    .await
    .unwrap()
    .into_inner();
    assert_eq!(best.trial_id, trained[3]);
    assert_eq!(best.score, 0.74);
    assert_eq!(best.status, "completed");
    assert_eq!(best.checkpoint_sha256, checkpoints[3].0);
    assert_eq!(
        best.metrics.get("test_accuracy").copied(),
        Some(0.74 - 0.01)
    );
    assert_eq!(best.epoch_metrics, epoch_metrics(3));
    let stream = within(admin.download_checkpoint(proto::DownloadCheckpointRequest {
        sha256: best.checkpoint_sha256.clone(),
    }))
    .await
    .unwrap()
    .into_inner();
    assert_eq!(collect(stream).await.unwrap(), checkpoints[3].1);

    let listed = within(admin.list_trials(proto::ListTrialsRequest {
        experiment_id: id.clone(),
    }))
    .await
    .unwrap()
    .into_inner();
    assert_eq!(listed.trials.len(), 5);
    for (n, t) in listed.trials.iter().enumerate() {
        assert_eq!(t.seq, n as u32);
        assert_eq!(t.trial_id, trained[n]);
        assert_eq!(t.status, "completed");
        assert_eq!(t.score, scores[n]);
        assert_eq!(t.worker_id, w);
        assert_eq!(t.origin == "seed cnn2", n == 0, "{}", t.origin);
        assert_eq!(t.epoch_metrics, epoch_metrics(n), "trial {n}");
    }
    assert!(listed.trials[0].accepted, "the seed is accepted");

    let experiments = within(admin.list_experiments(proto::ListExperimentsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(experiments.experiments.len(), 1);
    // Nothing more to lease, and the long-poll honours its wait.
    let start = std::time::Instant::now();
    let none = within(worker.acquire(proto::AcquireRequest {
        worker_id: w.clone(),
        wait_ms: 200,
    }))
    .await
    .unwrap()
    .into_inner();
    assert!(none.trial.is_none());
    assert!(start.elapsed() >= Duration::from_millis(150));
    within(worker.deregister(proto::DeregisterRequest { worker_id: w }))
        .await
        .unwrap();
    master.stop().await;
}

#[tokio::test]
async fn a_failed_trial_is_reported_and_replaced() {
    let master = Master::start().await;
    let mut worker = master.worker().await;
    let mut admin = master.admin().await;
    let id = submit(
        &mut admin,
        "name = \"f\"\n[budget]\nmax_trials = 2\nmax_failures = 1\n",
    )
    .await;
    let w = register(&mut worker, 1).await;
    let trial = within(worker.acquire(proto::AcquireRequest {
        worker_id: w.clone(),
        wait_ms: 2_000,
    }))
    .await
    .unwrap()
    .into_inner()
    .trial
    .unwrap();
    within(worker.fail(proto::FailRequest {
        worker_id: w.clone(),
        trial_id: trial.trial_id.clone(),
        attempt: trial.attempt,
        reason: "out of memory".into(),
    }))
    .await
    .unwrap();
    let s = summary(&mut admin, &id).await;
    assert_eq!((s.status.as_str(), s.trials_failed), ("failed", 1));
    assert!(
        s.status_reason.contains("1 trials failed"),
        "{}",
        s.status_reason
    );
    let listed = within(admin.list_trials(proto::ListTrialsRequest { experiment_id: id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.trials[0].error, "out of memory");
    assert!(listed.trials[0].score.is_nan());
    master.stop().await;
}

#[tokio::test]
async fn state_survives_a_master_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let handle = within(start(config.clone())).await.unwrap();
    let token = BearerToken::new(&handle.token).unwrap();
    let url = format!("http://{}", handle.addr);
    let mut admin = client::admin_client(within(client::connect(&url)).await.unwrap(), &token);
    let id = submit(&mut admin, MINIMAL).await;
    within(handle.shutdown()).await.unwrap();

    let handle = within(start(config)).await.unwrap();
    let url = format!("http://{}", handle.addr);
    // The token is kept in the data directory, so old clients still authenticate.
    let mut admin = client::admin_client(within(client::connect(&url)).await.unwrap(), &token);
    let s = summary(&mut admin, &id).await;
    assert_eq!(
        (s.status.as_str(), s.trials_queued, s.max_trials),
        ("running", 1, 4)
    );
    within(handle.shutdown()).await.unwrap();
}
