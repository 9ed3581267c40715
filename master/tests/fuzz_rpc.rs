//! Fuzzing the RPC handlers through a real in-process server: every RPC of both services, with
//! arbitrary strings (ids, names, specs, checkpoint addresses), arbitrary floats (scores,
//! metrics, progress, epoch metrics), arbitrary integers and checkpoint streams (some over the
//! size limit), mixed with valid ids so the calls get past the first checks. No call may
//! panic or be answered `Internal`/`Unknown`, and a refused call must leave the pool, the
//! workers, the late results, the epoch curves and the artifact store exactly as they were.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use explore_common::client::{self, AuthChannel, BearerToken};
use explore_common::proto::admin_service_client::AdminServiceClient;
use explore_common::proto::worker_service_client::WorkerServiceClient;
use explore_common::proto::{self, PROTOCOL_VERSION};
use explore_master::server::{start, ServeConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tonic::Code;

/// A request of any kind.
#[derive(Debug, Clone)]
enum Call {
    Register(proto::RegisterRequest),
    Acquire(proto::AcquireRequest),
    Heartbeat(proto::HeartbeatRequest),
    Complete(proto::CompleteRequest),
    Fail(proto::FailRequest),
    Deregister(proto::DeregisterRequest),
    Download(proto::DownloadCheckpointRequest),
    Upload(Vec<Vec<u8>>),
    AdminDownload(proto::DownloadCheckpointRequest),
    ListExperiments,
    Submit(proto::SubmitExperimentRequest),
    GetExperiment(proto::GetExperimentRequest),
    ListTrials(proto::ListTrialsRequest),
    Best(proto::GetBestModelRequest),
}

/// Ids that are garbage, almost right, or real.
fn id(real: Vec<String>) -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        "(worker|trial|exp)-[a-zA-Z0-9_-]{0,70}",
        "(worker|trial|exp)-[a-z0-9 ./'%;\\\\-]{0,20}",
        Just(String::new()),
        proptest::sample::select(real),
    ]
    .boxed()
}

fn float() -> BoxedStrategy<f64> {
    prop_oneof![
        any::<f64>(),
        0.0f64..=1.0,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(f64::MIN_POSITIVE),
        Just(1.0 + f64::EPSILON),
    ]
    .boxed()
}

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,300}",
        Just("x".repeat(5000)),
        Just("name = \"fuzz\"\n[budget]\nmax_trials = 0\n".to_string()),
    ]
    .boxed()
}

struct Real {
    workers: Vec<String>,
    trials: Vec<String>,
    experiments: Vec<String>,
    shas: Vec<String>,
}

fn call(real: &Real) -> impl Strategy<Value = Call> {
    let w = || id(real.workers.clone());
    let t = || id(real.trials.clone());
    let e = || id(real.experiments.clone());
    let attempt = || prop_oneof![0u32..4, any::<u32>()];
    let metrics = proptest::collection::hash_map(
        prop_oneof![any::<String>(), "[a-z_]{1,70}", Just(String::new())],
        float(),
        0..70,
    );
    // Epoch metrics: mostly well-formed names (so valid maps occur), some garbage, up to past
    // the limit of 32 entries.
    let epoch_metrics = |sizes: std::ops::Range<usize>| {
        proptest::collection::hash_map(
            prop_oneof![
                4 => "[a-z0-9_.]{1,66}",
                1 => any::<String>(),
                1 => Just(String::new()),
                1 => Just("Elr.Drift".to_string()),
            ],
            prop_oneof![3 => -10.0f64..10.0, 1 => float()],
            sizes,
        )
    };
    let epoch_metrics = prop_oneof![3 => epoch_metrics(0..4), 1 => epoch_metrics(30..36)];
    let sha = prop_oneof![
        any::<String>(),
        "[0-9a-f]{64}",
        "[0-9A-F]{64}",
        "(\\.\\./)+[a-z]{1,8}",
        proptest::sample::select(real.shas.clone()),
        Just(String::new()),
    ];
    prop_oneof![
        (
            prop_oneof![Just(PROTOCOL_VERSION), any::<u32>()],
            text(),
            text(),
            prop_oneof![0u32..100, any::<u32>()]
        )
            .prop_map(
                |(v, name, device, slots)| Call::Register(proto::RegisterRequest {
                    protocol_version: v,
                    name,
                    device,
                    slots,
                })
            ),
        w().prop_map(|worker_id| Call::Acquire(proto::AcquireRequest {
            worker_id,
            wait_ms: 0
        })),
        (
            w(),
            t(),
            attempt(),
            any::<u32>(),
            any::<u32>(),
            float(),
            float(),
            epoch_metrics
        )
            .prop_map(
                |(
                    worker_id,
                    trial_id,
                    attempt,
                    epoch,
                    total_epochs,
                    train_loss,
                    val_accuracy,
                    metrics,
                )| {
                    Call::Heartbeat(proto::HeartbeatRequest {
                        worker_id,
                        trial_id,
                        attempt,
                        // Both values, without widening the strategy tuple.
                        started: epoch % 2 == 0,
                        epoch,
                        total_epochs,
                        train_loss,
                        val_accuracy,
                        metrics,
                    })
                }
            ),
        (
            w(),
            t(),
            attempt(),
            float(),
            metrics,
            sha.clone(),
            any::<u32>()
        )
            .prop_map(
                |(worker_id, trial_id, attempt, score, metrics, checkpoint_sha256, epochs_run)| {
                    Call::Complete(proto::CompleteRequest {
                        worker_id,
                        trial_id,
                        attempt,
                        score,
                        metrics,
                        checkpoint_sha256,
                        epochs_run,
                    })
                }
            ),
        (w(), t(), attempt(), text()).prop_map(|(worker_id, trial_id, attempt, reason)| {
            Call::Fail(proto::FailRequest {
                worker_id,
                trial_id,
                attempt,
                reason,
            })
        }),
        // Never the real worker: it must stay registered for the other cases.
        id(vec!["worker-0000000000000000".into()])
            .prop_map(|worker_id| Call::Deregister(proto::DeregisterRequest { worker_id })),
        sha.clone()
            .prop_map(|sha256| Call::Download(proto::DownloadCheckpointRequest { sha256 })),
        sha.prop_map(|sha256| Call::AdminDownload(proto::DownloadCheckpointRequest { sha256 })),
        // Small uploads, and ones over the 1 MiB limit of this master.
        prop_oneof![
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..5),
            (1usize..4).prop_map(|n| vec![vec![n as u8; 400_000]; n + 2]),
        ]
        .prop_map(Call::Upload),
        Just(Call::ListExperiments),
        text().prop_map(|spec_toml| Call::Submit(proto::SubmitExperimentRequest { spec_toml })),
        e().prop_map(
            |experiment_id| Call::GetExperiment(proto::GetExperimentRequest { experiment_id })
        ),
        e().prop_map(|experiment_id| Call::ListTrials(proto::ListTrialsRequest { experiment_id })),
        e().prop_map(|experiment_id| Call::Best(proto::GetBestModelRequest { experiment_id })),
    ]
}

#[derive(Clone)]
struct Clients {
    worker: WorkerServiceClient<AuthChannel>,
    admin: AdminServiceClient<AuthChannel>,
}

/// Sends the call; the status code when it was refused.
async fn send(c: &mut Clients, call: Call) -> Result<(), tonic::Status> {
    match call {
        Call::Register(r) => c.worker.register(r).await.map(drop),
        Call::Acquire(r) => c.worker.acquire(r).await.map(drop),
        Call::Heartbeat(r) => c.worker.heartbeat(r).await.map(drop),
        Call::Complete(r) => c.worker.complete(r).await.map(drop),
        Call::Fail(r) => c.worker.fail(r).await.map(drop),
        Call::Deregister(r) => c.worker.deregister(r).await.map(drop),
        Call::Download(r) => {
            let mut stream = c.worker.download_checkpoint(r).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok(())
        }
        Call::Upload(chunks) => {
            let chunks: Vec<proto::CheckpointChunk> = chunks
                .into_iter()
                .map(|data| proto::CheckpointChunk { data })
                .collect();
            c.worker
                .upload_checkpoint(tokio_stream::iter(chunks))
                .await
                .map(drop)
        }
        Call::AdminDownload(r) => {
            let mut stream = c.admin.download_checkpoint(r).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok(())
        }
        Call::ListExperiments => c
            .admin
            .list_experiments(proto::ListExperimentsRequest {})
            .await
            .map(drop),
        Call::Submit(r) => c.admin.submit_experiment(r).await.map(drop),
        Call::GetExperiment(r) => c.admin.get_experiment(r).await.map(drop),
        Call::ListTrials(r) => c.admin.list_trials(r).await.map(drop),
        Call::Best(r) => c.admin.get_best_model(r).await.map(drop),
    }
}

/// A trial row's mutable columns.
type TrialState = (
    String,
    String,
    i64,
    Option<String>,
    Option<i64>,
    i64,
    Option<f64>,
    String,
    String,
);

/// A `trial_epochs` row.
type EpochState = (String, i64, f64, Option<f64>, Option<String>);

/// Everything a call could change: table contents (less `last_seen_ms`) and artifact files.
async fn state(db: &Path, artifacts: &Path) -> String {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let experiments: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, status, status_reason, best_trial_id FROM experiments ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let trials: Vec<TrialState> =
        sqlx::query_as(
            "SELECT id, status, attempt, worker_id, lease_deadline_ms, epoch, score, metrics_json, error
               FROM trials ORDER BY id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let workers: Vec<(String, String, i64, String)> =
        sqlx::query_as("SELECT id, name, slots, status FROM workers ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let late: Vec<(i64,)> = sqlx::query_as("SELECT COUNT(*) FROM late_results")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let epochs: Vec<EpochState> = sqlx::query_as(
        "SELECT trial_id, epoch, val_accuracy, train_loss, metrics_json FROM trial_epochs
          ORDER BY trial_id, epoch",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let mut files = BTreeMap::new();
    let mut stack = vec![artifacts.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path, entry.metadata().unwrap().len());
            }
        }
    }
    format!("{experiments:?}\n{trials:?}\n{workers:?}\n{late:?}\n{epochs:?}\n{files:?}")
}

#[test]
fn rpc_handlers_never_panic_never_fail_internally_and_refusals_leave_no_trace() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let handle = rt
        .block_on(start(ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            max_checkpoint_bytes: 1 << 20,
            // The periodic tick changes state on its own (it queues trials for newly
            // registered slots), which would race the before/after snapshots of a refused call.
            tick_interval: std::time::Duration::from_secs(3600),
            ..Default::default()
        }))
        .unwrap();
    let url = format!("http://{}", handle.addr);
    let token = BearerToken::new(&handle.token).unwrap();
    let mut clients = rt.block_on(async {
        let channel = client::connect(&url).await.unwrap();
        Clients {
            worker: client::worker_client(channel.clone(), &token),
            admin: client::admin_client(channel, &token),
        }
    });

    // Real ids for the fuzzer to mix in: a worker holding a leased trial, an experiment, an
    // uploaded checkpoint.
    let real = rt.block_on(async {
        let worker = clients
            .worker
            .register(proto::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                name: "fuzzer".into(),
                device: "cpu".into(),
                slots: 2,
            })
            .await
            .unwrap()
            .into_inner()
            .worker_id;
        let experiment = clients
            .admin
            .submit_experiment(proto::SubmitExperimentRequest {
                spec_toml: "name = \"fuzz\"\n[budget]\nmax_trials = 1000\n".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .experiment_id;
        let trial = clients
            .worker
            .acquire(proto::AcquireRequest {
                worker_id: worker.clone(),
                wait_ms: 1000,
            })
            .await
            .unwrap()
            .into_inner()
            .trial
            .expect("a trial to lease");
        let sha = clients
            .worker
            .upload_checkpoint(tokio_stream::iter(vec![proto::CheckpointChunk {
                data: b"weights".to_vec(),
            }]))
            .await
            .unwrap()
            .into_inner()
            .sha256;
        let queued = clients
            .admin
            .list_trials(proto::ListTrialsRequest {
                experiment_id: experiment.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .trials;
        let mut trials: Vec<String> = queued.into_iter().map(|t| t.trial_id).collect();
        trials.push(trial.trial_id);
        Real {
            workers: vec![worker],
            trials,
            experiments: vec![experiment],
            shas: vec![sha],
        }
    });

    let db: PathBuf = dir.path().join("explore.db");
    let artifacts = dir.path().join("artifacts");
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let by_code: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
    let result = runner.run(&call(&real), |c| {
        let before = rt.block_on(state(&db, &artifacts));
        let result = rt.block_on(send(&mut clients.clone(), c.clone()));
        let code = result.as_ref().err().map(|s| s.code());
        *by_code
            .borrow_mut()
            .entry(format!("{:?}", code.unwrap_or(Code::Ok)))
            .or_default() += 1;
        if let Err(status) = &result {
            prop_assert!(
                !matches!(
                    status.code(),
                    Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable
                ),
                "{c:?} was answered {:?}: {}",
                status.code(),
                status.message()
            );
            let after = rt.block_on(state(&db, &artifacts));
            prop_assert_eq!(before, after, "the refused call {:?} left a trace", c);
        }
        Ok::<(), TestCaseError>(())
    });
    let by_code = by_code.into_inner();
    println!("answers by code: {by_code:?}");
    if let Err(e) = result {
        panic!("{e}");
    }
    // Refusals were the rule, but some calls got through (the generator reaches real paths).
    assert!(by_code.get("Ok").copied().unwrap_or(0) > 0, "{by_code:?}");
    assert!(
        by_code.get("InvalidArgument").copied().unwrap_or(0) > 0,
        "{by_code:?}"
    );
    rt.block_on(handle.shutdown()).unwrap();
}
