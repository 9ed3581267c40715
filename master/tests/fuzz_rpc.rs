//! Fuzzing the RPC handlers through a real in-process server, every RPC of both services.
//!
//! One case in four is fully arbitrary: arbitrary strings (ids, names, specs, checkpoint
//! addresses), floats (scores, metrics, epoch metrics), integers and checkpoint streams (some
//! over the size limit), mixed with real ids. The other three are built at run time from the
//! live state (the registered worker, the trial it holds and its attempt, an uploaded
//! checkpoint, the experiment): valid in every field, or with exactly one field replaced by an
//! arbitrary value. So most calls get past validation and reach the state-changing paths.
//!
//! No call may be answered `Internal`/`Unknown`/`DataLoss` or break the connection. A refused
//! call must leave every table (all columns) and every artifact file exactly as they were. A
//! call valid in every field must succeed and make its transition, checked in the database: a
//! lease granted, a heartbeat recording its epoch and extending the lease, a completion
//! recorded once (repeating it, with the same or another score, is answered "already recorded"
//! and changes nothing), a failure, a worker registered or gone, an upload stored at its
//! address, an experiment submitted; reads change nothing.

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
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};
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
    ListTrialsPage(proto::ListTrialsPageRequest),
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
        (e(), any::<u32>(), text(), text()).prop_map(
            |(experiment_id, page_size, page_token, status)| {
                Call::ListTrialsPage(proto::ListTrialsPageRequest {
                    experiment_id,
                    page_size,
                    page_token,
                    status,
                })
            }
        ),
        e().prop_map(|experiment_id| Call::Best(proto::GetBestModelRequest { experiment_id })),
    ]
}

#[derive(Clone)]
struct Clients {
    worker: WorkerServiceClient<AuthChannel>,
    admin: AdminServiceClient<AuthChannel>,
}

/// Everything a call could change: the full contents of every table (each row as the
/// `quote()` of its columns, `workers.last_seen_ms` included) and every artifact file's
/// SHA-256, partial uploads included.
async fn state(db: &Path, artifacts: &Path) -> String {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mut out = String::new();
    for (table,) in tables {
        let columns: Vec<(String,)> =
            sqlx::query_as(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let columns: Vec<String> = columns
            .into_iter()
            .map(|(c,)| format!("'{c}=' || quote(\"{c}\")"))
            .collect();
        let sql = format!("SELECT {} FROM \"{table}\"", columns.join(" || ' | ' || "));
        let mut rows: Vec<String> = sqlx::query(&sql)
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect();
        rows.sort();
        out += &format!("{table}:\n{}\n", rows.join("\n"));
    }
    conn.close().await.unwrap();
    let mut files = BTreeMap::new();
    let mut stack = vec![artifacts.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.insert(path, hex(&Sha256::digest(&bytes)));
            }
        }
    }
    out + &format!("files: {files:?}\n")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which RPC a mostly-valid case calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Register,
    Acquire,
    Heartbeat,
    Complete,
    Fail,
    Deregister,
    Upload,
    Download,
    AdminDownload,
    Submit,
    GetExperiment,
    ListTrials,
    ListTrialsPage,
    Best,
}

/// Arbitrary values, one of which replaces the broken field of a mostly-valid call.
#[derive(Debug, Clone)]
struct Junk {
    id: String,
    float: f64,
    int: u32,
    text: String,
    sha: String,
    metrics: HashMap<String, f64>,
    chunks: Vec<Vec<u8>>,
}

/// A case: a fully arbitrary call (one in four), or a call built at run time from the
/// cluster's real state (the registered worker, the trial it holds, its attempt, an uploaded
/// checkpoint, the experiment), valid in every field but at most one (`broken`, half of them).
#[derive(Debug, Clone)]
enum Case {
    Arbitrary(Call),
    Built {
        op: Op,
        broken: Option<u8>,
        junk: Junk,
    },
}

fn case(real: &Real) -> impl Strategy<Value = Case> {
    let ids = real.workers.clone();
    let op = prop_oneof![
        2 => Just(Op::Register),
        3 => Just(Op::Acquire),
        4 => Just(Op::Heartbeat),
        8 => Just(Op::Complete),
        2 => Just(Op::Fail),
        1 => Just(Op::Deregister),
        2 => Just(Op::Upload),
        1 => Just(Op::Download),
        1 => Just(Op::AdminDownload),
        1 => Just(Op::Submit),
        1 => Just(Op::GetExperiment),
        1 => Just(Op::ListTrials),
        1 => Just(Op::ListTrialsPage),
        1 => Just(Op::Best),
    ];
    let junk = (
        id(ids),
        float(),
        prop_oneof![0u32..4, any::<u32>()],
        text(),
        prop_oneof![any::<String>(), "[0-9a-f]{64}", "(\\.\\./)+[a-z]{1,8}"],
        proptest::collection::hash_map(
            prop_oneof![any::<String>(), "[a-z_]{1,70}", Just(String::new())],
            float(),
            0..70,
        ),
        prop_oneof![
            3 => proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..4),
            1 => (1usize..4).prop_map(|n| vec![vec![n as u8; 400_000]; n + 2]),
        ],
    )
        .prop_map(|(id, float, int, text, sha, metrics, chunks)| Junk {
            id,
            float,
            int,
            text,
            sha,
            metrics,
            chunks,
        });
    prop_oneof![
        1 => call(real).prop_map(Case::Arbitrary),
        3 => (op, prop_oneof![Just(None), (0u8..8).prop_map(Some)], junk)
            .prop_map(|(op, broken, junk)| Case::Built { op, broken, junk }),
    ]
}

/// An answer worth checking.
#[derive(Debug)]
enum Answer {
    Nothing,
    Register(proto::RegisterResponse),
    Acquire(Box<proto::AcquireResponse>),
    Heartbeat(proto::HeartbeatResponse),
    Complete(proto::CompleteResponse),
    Upload(proto::UploadCheckpointResponse),
    Submit(proto::SubmitExperimentResponse),
}

/// Sends the call, with a deadline of 30 s.
async fn send(c: &mut Clients, call: Call) -> Result<Answer, tonic::Status> {
    let answer = async {
        Ok(match call {
            Call::Register(r) => Answer::Register(c.worker.register(r).await?.into_inner()),
            Call::Acquire(r) => Answer::Acquire(Box::new(c.worker.acquire(r).await?.into_inner())),
            Call::Heartbeat(r) => Answer::Heartbeat(c.worker.heartbeat(r).await?.into_inner()),
            Call::Complete(r) => Answer::Complete(c.worker.complete(r).await?.into_inner()),
            Call::Fail(r) => c.worker.fail(r).await.map(|_| Answer::Nothing)?,
            Call::Deregister(r) => c.worker.deregister(r).await.map(|_| Answer::Nothing)?,
            Call::Download(r) => {
                let mut stream = c.worker.download_checkpoint(r).await?.into_inner();
                while stream.message().await?.is_some() {}
                Answer::Nothing
            }
            Call::Upload(chunks) => {
                let chunks: Vec<proto::CheckpointChunk> = chunks
                    .into_iter()
                    .map(|data| proto::CheckpointChunk { data })
                    .collect();
                Answer::Upload(
                    c.worker
                        .upload_checkpoint(tokio_stream::iter(chunks))
                        .await?
                        .into_inner(),
                )
            }
            Call::AdminDownload(r) => {
                let mut stream = c.admin.download_checkpoint(r).await?.into_inner();
                while stream.message().await?.is_some() {}
                Answer::Nothing
            }
            Call::ListExperiments => c
                .admin
                .list_experiments(proto::ListExperimentsRequest {})
                .await
                .map(|_| Answer::Nothing)?,
            Call::Submit(r) => Answer::Submit(c.admin.submit_experiment(r).await?.into_inner()),
            Call::GetExperiment(r) => c.admin.get_experiment(r).await.map(|_| Answer::Nothing)?,
            Call::ListTrials(r) => c.admin.list_trials(r).await.map(|_| Answer::Nothing)?,
            Call::ListTrialsPage(r) => {
                c.admin.list_trials_page(r).await.map(|_| Answer::Nothing)?
            }
            Call::Best(r) => c.admin.get_best_model(r).await.map(|_| Answer::Nothing)?,
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), answer)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer within 30 s")))
}

/// The live state a built call draws its valid values from.
struct Live {
    /// The worker that holds trials; never deregistered.
    worker: String,
    /// Workers registered by valid `Register` calls, for valid `Deregister` calls.
    extra_workers: Vec<String>,
    experiment: String,
    shas: Vec<String>,
}

explore_master::sqlite_row! {
    /// A trial row as the transitions are checked against.
    #[derive(Debug, Clone, PartialEq)]
    struct TrialRow {
        id: String,
        status: String,
        attempt: i64,
        worker_id: Option<String>,
        lease_deadline_ms: Option<i64>,
        score: Option<f64>,
        checkpoint_sha256: Option<String>,
        error: String,
    }
}

async fn query<T>(db: &Path, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let rows = sqlx::query_as::<_, T>(sql)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    rows
}

async fn trial_row(db: &Path, id: &str) -> Option<TrialRow> {
    query::<TrialRow>(
        db,
        &format!(
            "SELECT id, status, attempt, worker_id, lease_deadline_ms, score, checkpoint_sha256,
                    error FROM trials WHERE id = '{id}'"
        ),
    )
    .await
    .into_iter()
    .next()
}

/// The trial `worker` holds (leased or running), if any: `(id, attempt)`.
async fn held_by(db: &Path, worker: &str) -> Option<(String, u32)> {
    query::<(String, i64)>(
        db,
        &format!(
            "SELECT id, attempt FROM trials WHERE worker_id = '{worker}'
               AND status IN ('leased', 'running') ORDER BY seq LIMIT 1"
        ),
    )
    .await
    .into_iter()
    .next()
    .map(|(id, a)| (id, a as u32))
}

/// A score in [0, 1] from an arbitrary float.
fn unit(x: f64) -> f64 {
    if x.is_finite() {
        (x.abs() % 1.0 * 1e6).round() / 1e6
    } else {
        0.5
    }
}

/// Builds a built case's call from the live state; `trial` is the held trial for the calls
/// that need one. Field `broken % fields` gets the junk value instead of the valid one.
fn build(op: Op, broken: Option<u8>, junk: &Junk, live: &Live, trial: &(String, u32)) -> Call {
    let b = |fields: u8| broken.map(|k| k % fields);
    let (t, attempt) = (trial.0.clone(), trial.1);
    let w = live.worker.clone();
    let sha = if junk.int.is_multiple_of(2) {
        live.shas[junk.int as usize / 2 % live.shas.len()].clone()
    } else {
        String::new()
    };
    match op {
        Op::Register => {
            let k = b(4);
            Call::Register(proto::RegisterRequest {
                protocol_version: if k == Some(0) {
                    junk.int
                } else {
                    PROTOCOL_VERSION
                },
                name: if k == Some(1) {
                    junk.text.clone()
                } else {
                    "fuzzed".into()
                },
                device: if k == Some(2) {
                    junk.text.clone()
                } else {
                    "cpu".into()
                },
                slots: if k == Some(3) { junk.int } else { 1 },
            })
        }
        Op::Acquire => Call::Acquire(proto::AcquireRequest {
            worker_id: if b(1).is_some() { junk.id.clone() } else { w },
            wait_ms: 0,
        }),
        Op::Heartbeat => {
            let k = b(6);
            let metrics: HashMap<String, f64> = if k == Some(5) {
                junk.metrics.clone()
            } else {
                [("fuzz.drift".to_string(), 0.25)].into()
            };
            Call::Heartbeat(proto::HeartbeatRequest {
                worker_id: if k == Some(0) { junk.id.clone() } else { w },
                trial_id: if k == Some(1) { junk.id.clone() } else { t },
                attempt: if k == Some(2) { junk.int } else { attempt },
                started: true,
                epoch: if k == Some(3) { junk.int } else { 1 },
                total_epochs: 2,
                train_loss: 0.5,
                val_accuracy: if k == Some(4) {
                    junk.float
                } else {
                    unit(junk.float)
                },
                metrics,
            })
        }
        Op::Complete => {
            let k = b(7);
            let score = unit(junk.float);
            Call::Complete(proto::CompleteRequest {
                worker_id: if k == Some(0) { junk.id.clone() } else { w },
                trial_id: if k == Some(1) { junk.id.clone() } else { t },
                attempt: if k == Some(2) { junk.int } else { attempt },
                score: if k == Some(3) { junk.float } else { score },
                metrics: if k == Some(4) {
                    junk.metrics.clone()
                } else {
                    [("test_accuracy".to_string(), score)].into()
                },
                checkpoint_sha256: if k == Some(5) { junk.sha.clone() } else { sha },
                epochs_run: if k == Some(6) { junk.int } else { 1 },
            })
        }
        Op::Fail => {
            let k = b(4);
            Call::Fail(proto::FailRequest {
                worker_id: if k == Some(0) { junk.id.clone() } else { w },
                trial_id: if k == Some(1) { junk.id.clone() } else { t },
                attempt: if k == Some(2) { junk.int } else { attempt },
                reason: if k == Some(3) {
                    junk.text.clone()
                } else {
                    "fuzzed failure".into()
                },
            })
        }
        Op::Deregister => Call::Deregister(proto::DeregisterRequest {
            worker_id: match (b(1), live.extra_workers.last()) {
                // A broken call never names the holding worker (it must stay registered) nor
                // an extra one: the model would not learn that it left, and the next valid
                // deregistration of it would be refused. (Regression: a broken call whose junk
                // id was the holding worker's fell through to the extra worker and
                // deregistered it unrecorded.)
                (Some(_), _)
                    if junk.id != live.worker && !live.extra_workers.contains(&junk.id) =>
                {
                    junk.id.clone()
                }
                (Some(_), _) => "worker-00000000deadbeef".into(),
                (None, Some(extra)) => extra.clone(),
                (None, None) => "worker-00000000deadbeef".into(),
            },
        }),
        Op::Upload => Call::Upload(if b(1).is_some() {
            junk.chunks.clone()
        } else {
            junk.chunks.iter().take(2).cloned().collect()
        }),
        Op::Download | Op::AdminDownload => {
            let r = proto::DownloadCheckpointRequest {
                sha256: if b(1).is_some() {
                    junk.sha.clone()
                } else {
                    live.shas[junk.int as usize % live.shas.len()].clone()
                },
            };
            if op == Op::Download {
                Call::Download(r)
            } else {
                Call::AdminDownload(r)
            }
        }
        Op::Submit => Call::Submit(proto::SubmitExperimentRequest {
            spec_toml: if b(1).is_some() {
                junk.text.clone()
            } else {
                format!(
                    "name = \"fuzzed\"\nseed = {}\n[budget]\nmax_trials = 3\n",
                    junk.int
                )
            },
        }),
        Op::GetExperiment | Op::ListTrials | Op::ListTrialsPage | Op::Best => {
            let experiment_id = if b(1).is_some() {
                junk.id.clone()
            } else {
                live.experiment.clone()
            };
            match op {
                Op::GetExperiment => {
                    Call::GetExperiment(proto::GetExperimentRequest { experiment_id })
                }
                Op::ListTrials => Call::ListTrials(proto::ListTrialsRequest { experiment_id }),
                Op::ListTrialsPage => Call::ListTrialsPage(proto::ListTrialsPageRequest {
                    experiment_id,
                    page_size: junk.int % 8,
                    page_token: String::new(),
                    status: String::new(),
                }),
                _ => Call::Best(proto::GetBestModelRequest { experiment_id }),
            }
        }
    }
}

#[test]
fn rpc_handlers_never_fail_internally_valid_calls_make_their_transitions_and_refusals_leave_no_trace(
) {
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

    // Real ids: a worker holding a leased trial, an experiment, an uploaded checkpoint.
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
    let live = RefCell::new(Live {
        worker: real.workers[0].clone(),
        extra_workers: Vec::new(),
        experiment: real.experiments[0].clone(),
        shas: real.shas.clone(),
    });
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        // The server's state moves on with every call, so a shrunk case would run against
        // another state: report the first failing case as it failed.
        max_shrink_iters: 0,
        ..Config::default()
    });
    let by_code: RefCell<BTreeMap<String, u32>> = RefCell::new(BTreeMap::new());
    let transitions: RefCell<BTreeMap<&'static str, u32>> = RefCell::new(BTreeMap::new());
    let seen = |what: &'static str| *transitions.borrow_mut().entry(what).or_default() += 1;
    let result = runner.run(&case(&real), |case| {
        let (call, built) = match &case {
            Case::Arbitrary(call) => (call.clone(), None),
            Case::Built { op, broken, junk } => {
                let needs_trial = matches!(op, Op::Heartbeat | Op::Complete | Op::Fail);
                let worker = live.borrow().worker.clone();
                let mut trial = rt.block_on(held_by(&db, &worker));
                if trial.is_none() && needs_trial {
                    // Set-up, not the case: lease a trial to the worker.
                    let got = rt.block_on(send(
                        &mut clients.clone(),
                        Call::Acquire(proto::AcquireRequest {
                            worker_id: worker.clone(),
                            wait_ms: 1000,
                        }),
                    ));
                    prop_assert!(got.is_ok(), "set-up acquire failed: {got:?}");
                    trial = rt.block_on(held_by(&db, &worker));
                    prop_assert!(trial.is_some(), "no trial to lease");
                }
                let trial = trial.unwrap_or_else(|| ("trial-00000000deadbeef".into(), 1));
                let call = build(*op, *broken, junk, &live.borrow(), &trial);
                (call, Some((*op, *broken, trial)))
            }
        };
        let before = rt.block_on(state(&db, &artifacts));
        let held_before = match &built {
            Some((_, _, (t, _))) => rt.block_on(trial_row(&db, t)),
            None => None,
        };
        let result = rt.block_on(send(&mut clients.clone(), call.clone()));
        let code = result.as_ref().err().map(|s| s.code());
        *by_code
            .borrow_mut()
            .entry(format!("{:?}", code.unwrap_or(Code::Ok)))
            .or_default() += 1;
        if let Err(status) = &result {
            prop_assert!(
                !matches!(
                    status.code(),
                    Code::Internal
                        | Code::Unknown
                        | Code::DataLoss
                        | Code::Unavailable
                        | Code::DeadlineExceeded
                ),
                "{call:?} was answered {:?}: {}",
                status.code(),
                status.message()
            );
            let after = rt.block_on(state(&db, &artifacts));
            prop_assert_eq!(&before, &after, "the refused call {:?} left a trace", call);
        }
        // A call valid in every field must succeed and make its transition.
        let Some((op, None, (trial, attempt))) = built else {
            return Ok(());
        };
        if op == Op::Best && code == Some(Code::NotFound) {
            // Legitimately refused until a trial of the experiment completed.
            let done: Vec<(i64,)> = rt.block_on(query(
                &db,
                &format!(
                    "SELECT COUNT(*) FROM trials WHERE status = 'completed'
                       AND experiment_id = '{}'",
                    live.borrow().experiment
                ),
            ));
            prop_assert_eq!(done, vec![(0,)], "best model refused with trials completed");
            return Ok(());
        }
        let no_extra = op == Op::Deregister && live.borrow().extra_workers.is_empty();
        if no_extra {
            prop_assert_eq!(
                code,
                Some(Code::NotFound),
                "deregister of an unknown worker"
            );
            return Ok(());
        }
        let answer = match result {
            Ok(a) => a,
            Err(s) => {
                return Err(TestCaseError::fail(format!(
                    "the valid call {call:?} was refused: {:?}: {}",
                    s.code(),
                    s.message()
                )))
            }
        };
        let row = rt.block_on(trial_row(&db, &trial));
        let worker = live.borrow().worker.clone();
        match (op, answer, &call) {
            (Op::Register, Answer::Register(r), _) => {
                let rows: Vec<(String, i64)> = rt.block_on(query(
                    &db,
                    &format!(
                        "SELECT status, slots FROM workers WHERE id = '{}'",
                        r.worker_id
                    ),
                ));
                prop_assert_eq!(rows, vec![("active".to_string(), 1)]);
                live.borrow_mut().extra_workers.push(r.worker_id);
                seen("register: worker active");
            }
            (Op::Acquire, Answer::Acquire(a), _) => {
                if let Some(t) = a.trial {
                    let row = rt.block_on(trial_row(&db, &t.trial_id)).unwrap();
                    prop_assert_eq!(&row.status, "leased");
                    prop_assert_eq!(row.worker_id.as_deref(), Some(worker.as_str()));
                    prop_assert_eq!(row.attempt, i64::from(t.attempt));
                    prop_assert!(row.lease_deadline_ms.is_some());
                    seen("acquire: trial leased");
                } else {
                    seen("acquire: nothing to lease");
                }
            }
            (Op::Heartbeat, Answer::Heartbeat(h), Call::Heartbeat(r)) => {
                let row = row.unwrap();
                let before = held_before.unwrap();
                if h.command == proto::TrialCommand::Continue as i32 {
                    prop_assert_eq!(&row.status, "running");
                    prop_assert_eq!(row.attempt, i64::from(attempt));
                    prop_assert!(row.lease_deadline_ms >= before.lease_deadline_ms);
                    let epochs: Vec<(f64,)> = rt.block_on(query(
                        &db,
                        &format!(
                            "SELECT val_accuracy FROM trial_epochs WHERE trial_id = '{trial}'
                               AND epoch = 1"
                        ),
                    ));
                    prop_assert_eq!(epochs, vec![(r.val_accuracy,)]);
                    seen("heartbeat: running, lease extended, epoch recorded");
                } else {
                    prop_assert_eq!(h.command, proto::TrialCommand::Stop as i32, "{:?}", h);
                    prop_assert_eq!(&row.status, "pruned");
                    seen("heartbeat: pruned");
                }
            }
            (Op::Complete, Answer::Complete(c), Call::Complete(r)) => {
                prop_assert!(c.accepted && c.reason.is_empty(), "{c:?}");
                let row = row.unwrap();
                prop_assert_eq!(&row.status, "completed");
                prop_assert_eq!(row.score, Some(r.score));
                let sha = Some(r.checkpoint_sha256.clone()).filter(|s| !s.is_empty());
                prop_assert_eq!(&row.checkpoint_sha256, &sha);
                seen("complete: recorded");
                // Exactly once: the same completion again, and with another score, is
                // answered "already recorded" and changes nothing.
                let settled = rt.block_on(state(&db, &artifacts));
                for score in [r.score, 1.0 - r.score] {
                    let again = rt.block_on(send(
                        &mut clients.clone(),
                        Call::Complete(proto::CompleteRequest { score, ..r.clone() }),
                    ));
                    match again {
                        Ok(Answer::Complete(a)) => {
                            prop_assert!(a.accepted && a.reason.contains("already"), "{a:?}")
                        }
                        other => prop_assert!(false, "a repeated completion: {other:?}"),
                    }
                    prop_assert_eq!(
                        &settled,
                        &rt.block_on(state(&db, &artifacts)),
                        "repeating the completion (score {}) changed the state",
                        score
                    );
                }
                seen("complete: repeat is a no-op");
            }
            (Op::Fail, Answer::Nothing, Call::Fail(r)) => {
                let row = row.unwrap();
                prop_assert_eq!(&row.status, "failed");
                prop_assert_eq!(&row.error, &r.reason);
                seen("fail: trial failed");
            }
            (Op::Deregister, Answer::Nothing, Call::Deregister(r)) => {
                let rows: Vec<(String,)> = rt.block_on(query(
                    &db,
                    &format!("SELECT status FROM workers WHERE id = '{}'", r.worker_id),
                ));
                prop_assert_eq!(rows, vec![("left".to_string(),)]);
                live.borrow_mut()
                    .extra_workers
                    .retain(|w| *w != r.worker_id);
                seen("deregister: worker left");
            }
            (Op::Upload, Answer::Upload(u), Call::Upload(chunks)) => {
                let bytes = chunks.concat();
                prop_assert_eq!(&u.sha256, &hex(&Sha256::digest(&bytes)));
                prop_assert_eq!(u.size_bytes, bytes.len() as u64);
                let stored = std::fs::read(artifacts.join(&u.sha256[..2]).join(&u.sha256))
                    .or_else(|_| std::fs::read(artifacts.join(&u.sha256)));
                prop_assert!(stored.is_ok_and(|s| s == bytes), "upload not stored");
                live.borrow_mut().shas.push(u.sha256);
                seen("upload: stored at its address");
            }
            (Op::Submit, Answer::Submit(s), _) => {
                let rows: Vec<(String,)> = rt.block_on(query(
                    &db,
                    &format!(
                        "SELECT status FROM experiments WHERE id = '{}'",
                        s.experiment_id
                    ),
                ));
                prop_assert_eq!(rows, vec![("running".to_string(),)]);
                seen("submit: experiment running");
            }
            (_, Answer::Nothing, _) => {
                // Reads change nothing.
                prop_assert_eq!(&before, &rt.block_on(state(&db, &artifacts)));
                seen("read: nothing changed");
            }
            (op, answer, _) => prop_assert!(false, "{op:?} answered {answer:?}"),
        }
        Ok::<(), TestCaseError>(())
    });
    let by_code = by_code.into_inner();
    let transitions = transitions.into_inner();
    println!("answers by code: {by_code:?}");
    println!("transitions checked: {transitions:?}");
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator reaches the state-changing paths, not only validation.
    for (what, min) in [
        ("complete: recorded", 10),
        ("complete: repeat is a no-op", 10),
        ("fail: trial failed", 2),
        ("register: worker active", 2),
        ("upload: stored at its address", 2),
        ("read: nothing changed", 5),
    ] {
        let n = transitions.get(what).copied().unwrap_or(0);
        assert!(n >= min, "{what}: {n} < {min} ({transitions:?})");
    }
    let heartbeats = transitions
        .iter()
        .filter(|(k, _)| k.starts_with("heartbeat"))
        .map(|(_, n)| n)
        .sum::<u32>();
    assert!(heartbeats >= 3, "{transitions:?}");
    assert!(
        by_code.get("InvalidArgument").copied().unwrap_or(0) > 0,
        "{by_code:?}"
    );
    rt.block_on(handle.shutdown()).unwrap();
}
