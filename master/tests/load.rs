//! SQLite under load: many simulated workers, each with its own gRPC connection, against an
//! in-process master whose pool is a file on disk. Every worker registers, then loops acquire →
//! heartbeat → upload a small checkpoint → complete until the experiment's budget is spent,
//! while admin readers list the pool beside them (more readers than the store has pooled
//! connections). No call may fail (in particular never with "database is locked" / busy), and
//! every trial must be completed exactly once. Prints calls per second; bounded by `LIMIT`.
//!
//! `cargo test -p explore-master --test load -- --nocapture`

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use explore_common::client::{self, BearerToken};
use explore_common::proto::{self, PROTOCOL_VERSION};
use explore_master::scheduler::SchedulerConfig;
use explore_master::server::{start, ServeConfig};
use sha2::{Digest, Sha256};

const WORKERS: usize = 32;
const READERS: usize = 8;
const TRIALS: u32 = 300;
const LIMIT: Duration = Duration::from_secs(60);

/// What the simulated workers did.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    completed: AtomicU64,
    errors: Mutex<Vec<String>>,
    calls_by_kind: Mutex<BTreeMap<&'static str, u64>>,
}

impl Tally {
    fn record<T>(&self, kind: &'static str, result: Result<T, tonic::Status>) -> Option<T> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        *self.calls_by_kind.lock().unwrap().entry(kind).or_default() += 1;
        match result {
            Ok(v) => Some(v),
            Err(s) => {
                self.errors.lock().unwrap().push(format!(
                    "{kind}: {:?}: {}",
                    s.code(),
                    s.message()
                ));
                None
            }
        }
    }
}

/// A pseudo-random score in [0.5, 0.95] derived from the trial id.
fn score_of(trial_id: &str) -> f64 {
    let h = Sha256::digest(trial_id.as_bytes());
    0.5 + 0.45 * (u16::from_le_bytes([h[0], h[1]]) as f64 / u16::MAX as f64)
}

async fn simulated_worker(
    url: String,
    token: String,
    n: usize,
    tally: Arc<Tally>,
    done: Arc<AtomicBool>,
) {
    let channel = match client::connect(&url).await {
        Ok(c) => c,
        Err(e) => {
            tally.errors.lock().unwrap().push(format!("connect: {e}"));
            return;
        }
    };
    let token = BearerToken::new(&token).unwrap();
    let mut worker = client::worker_client(channel, &token);
    let registered = tally.record(
        "register",
        worker
            .register(proto::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                name: format!("sim-{n}"),
                device: "simulated".into(),
                slots: 1,
            })
            .await,
    );
    let Some(registered) = registered else { return };
    let worker_id = registered.into_inner().worker_id;
    while !done.load(Ordering::Relaxed) {
        let acquired = tally.record(
            "acquire",
            worker
                .acquire(proto::AcquireRequest {
                    worker_id: worker_id.clone(),
                    wait_ms: 250,
                })
                .await,
        );
        let Some(acquired) = acquired else { return };
        let Some(trial) = acquired.into_inner().trial else {
            continue;
        };
        let heartbeat = tally.record(
            "heartbeat",
            worker
                .heartbeat(proto::HeartbeatRequest {
                    worker_id: worker_id.clone(),
                    trial_id: trial.trial_id.clone(),
                    attempt: trial.attempt,
                    started: true,
                    epoch: 1,
                    total_epochs: 1,
                    train_loss: 0.5,
                    val_accuracy: 0.5,
                    metrics: Default::default(),
                })
                .await,
        );
        let Some(heartbeat) = heartbeat else { return };
        if heartbeat.into_inner().command != proto::TrialCommand::Continue as i32 {
            // The budget was reached meanwhile.
            continue;
        }
        // A small checkpoint, different for every trial.
        let weights: Vec<u8> = format!("weights of {} ", trial.trial_id)
            .bytes()
            .cycle()
            .take(4096)
            .collect();
        let upload = tally.record(
            "upload",
            worker
                .upload_checkpoint(tokio_stream::iter(vec![proto::CheckpointChunk {
                    data: weights,
                }]))
                .await,
        );
        let Some(upload) = upload else { return };
        let score = score_of(&trial.trial_id);
        let complete = tally.record(
            "complete",
            worker
                .complete(proto::CompleteRequest {
                    worker_id: worker_id.clone(),
                    trial_id: trial.trial_id.clone(),
                    attempt: trial.attempt,
                    score,
                    metrics: [("test_accuracy".to_string(), score)].into(),
                    checkpoint_sha256: upload.into_inner().sha256,
                    epochs_run: 1,
                })
                .await,
        );
        let Some(complete) = complete else { return };
        if complete.into_inner().accepted {
            tally.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = tally.record(
        "deregister",
        worker
            .deregister(proto::DeregisterRequest { worker_id })
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_workers_on_a_file_backed_pool_never_see_a_locked_database() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        scheduler: SchedulerConfig {
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            max_attempts: 3,
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}", handle.addr);
    // Writers alone, then the same beside readers that list the whole pool without pause.
    let started = Instant::now();
    phase(&url, &handle.token, "writers", 0).await;
    phase(&url, &handle.token, "writers+readers", READERS).await;
    assert!(
        started.elapsed() <= LIMIT,
        "the load test took {:?}",
        started.elapsed()
    );
    handle.shutdown().await.unwrap();
}

/// One experiment of `TRIALS` trials run by `WORKERS` simulated workers beside `readers`.
async fn phase(url: &str, token_text: &str, name: &str, readers: usize) {
    let token = BearerToken::new(token_text).unwrap();
    let mut admin = client::admin_client(client::connect(url).await.unwrap(), &token);
    let spec = format!("name = \"{name}\"\nseed = 3\n[budget]\nmax_trials = {TRIALS}\n");
    let experiment_id = admin
        .submit_experiment(proto::SubmitExperimentRequest { spec_toml: spec })
        .await
        .unwrap()
        .into_inner()
        .experiment_id;

    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..WORKERS)
        .map(|n| {
            tokio::spawn(simulated_worker(
                url.to_string(),
                token_text.to_string(),
                n,
                tally.clone(),
                done.clone(),
            ))
        })
        .collect();
    let reads = Arc::new(AtomicU64::new(0));
    let reader_tasks: Vec<_> = (0..readers)
        .map(|_| {
            let (url, token, tally, done, reads) = (
                url.to_string(),
                token.clone(),
                tally.clone(),
                done.clone(),
                reads.clone(),
            );
            let experiment_id = experiment_id.clone();
            tokio::spawn(async move {
                let mut admin = client::admin_client(client::connect(&url).await.unwrap(), &token);
                while !done.load(Ordering::Relaxed) {
                    let r = admin
                        .list_trials(proto::ListTrialsRequest {
                            experiment_id: experiment_id.clone(),
                        })
                        .await;
                    tally.record("list_trials", r);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Watch the experiment until it ends, a call fails, or the limit passes.
    let summary = loop {
        let s = admin
            .get_experiment(proto::GetExperimentRequest {
                experiment_id: experiment_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if s.status != "running"
            || started.elapsed() > LIMIT
            || !tally.errors.lock().unwrap().is_empty()
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    for t in tasks.into_iter().chain(reader_tasks) {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("a simulated worker stops within 10 s of the end")
            .unwrap();
    }

    let errors = tally.errors.lock().unwrap().clone();
    let per_kind = tally.calls_by_kind.lock().unwrap().clone();
    let reads = reads.load(Ordering::Relaxed);
    let calls = tally.calls.load(Ordering::Relaxed) - reads;
    let secs = elapsed.as_secs_f64();
    println!(
        "load [{name}]: {WORKERS} workers + {readers} readers, {} trials in {secs:.2} s: \
         {calls} worker calls ({:.0} calls/s, {:.0} trials/s), {reads} list_trials reads \
         ({:.0}/s); by kind {per_kind:?}; errors {}",
        summary.trials_completed,
        calls as f64 / secs,
        summary.trials_completed as f64 / secs,
        reads as f64 / secs,
        errors.len()
    );
    let locked: Vec<&String> = errors
        .iter()
        .filter(|e| {
            let e = e.to_lowercase();
            e.contains("locked") || e.contains("busy")
        })
        .collect();
    assert!(locked.is_empty(), "the database was locked: {locked:?}");
    assert!(errors.is_empty(), "calls failed: {errors:?}");
    assert_eq!(summary.status, "completed", "{summary:?}");
    assert_eq!(summary.trials_completed, TRIALS);

    // Every trial once, with its weights; nothing completed twice.
    let trials = admin
        .list_trials(proto::ListTrialsRequest {
            experiment_id: experiment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .trials;
    let completed: Vec<_> = trials.iter().filter(|t| t.status == "completed").collect();
    assert_eq!(completed.len(), TRIALS as usize);
    assert_eq!(
        tally.completed.load(Ordering::Relaxed),
        TRIALS as u64,
        "accepted completions"
    );
    let ids: HashSet<_> = completed.iter().map(|t| &t.trial_id).collect();
    let seqs: HashSet<_> = completed.iter().map(|t| t.seq).collect();
    assert_eq!(ids.len(), completed.len());
    assert_eq!(seqs.len(), completed.len());
    for t in &completed {
        assert_eq!(t.score, score_of(&t.trial_id), "{}", t.trial_id);
        assert_eq!(t.checkpoint_sha256.len(), 64, "{}", t.trial_id);
    }
    let best = completed.iter().map(|t| t.score).fold(f64::MIN, f64::max);
    assert_eq!(summary.best_score, best);
}
