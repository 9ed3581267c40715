//! `worker join`: register with the master, then run two overlapping stages (S1):
//!
//! - the **generator** stage acquires the next trial by long-poll and prepares it (parses the
//!   architecture, loads the dataset into the process-wide cache) while
//! - the **trainer** stage trains the current trial on a blocking thread, reports progress every
//!   epoch, uploads the weights and reports the result.
//!
//! With `--slots N` the trainer stage is N slots that train N trials at once on the one device;
//! they share one copy of the split ([`SplitCache`]) and each trial keeps its own lease (its
//! own acquire, heartbeats and completion, by `(trial, attempt)` as with one slot). The worker
//! registers N slots, so the master keeps N trials queued for it.
//!
//! A heartbeat task keeps the leases of every held trial alive and relays stop or lease-lost
//! commands. A channel of capacity one between the stages means at most one prepared trial waits
//! while the slots train.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use explore_common::client::{
    connect_lazy_with, connect_with, status_text, worker_client, AuthChannel, BearerToken,
    TlsOptions,
};
use explore_common::convert::data_spec_from_proto;
use explore_common::failover::MasterChannel;
use explore_common::proto::worker_service_client::WorkerServiceClient;
use explore_common::proto::{self, TrialCommand, PROTOCOL_VERSION};
use explore_common::{Genome, HyperParams};
use tch::Device;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::data::{DataPlan, DatasetCache, SplitCache, SplitConfig};
use crate::error::WorkerError;
use crate::probing::{probe_trial, ProbeOutcome};
use crate::progress::{TrialIds, TrialProgress};
use crate::train::{
    train_trial_observed, Control, EpochReport, RemoveOnDrop, TrialOutcome, TrialPlan,
};

/// Settings of `worker join`.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// URLs of the masters, e.g. `http://127.0.0.1:50051` (at least one): one master, one
    /// Service address in front of several, or every master of the cluster, of which the worker
    /// follows whichever is active ([`MasterChannel`]).
    pub masters: Vec<String>,
    /// TLS settings for an `https://` master.
    pub tls: TlsOptions,
    /// The cluster token.
    pub token: String,
    /// A name shown in the master's logs.
    pub name: String,
    pub device: Device,
    /// Where the `fashion-mnist` dataset lives on this machine.
    pub fashion_mnist_dir: PathBuf,
    /// Give up when the master stays unreachable this long.
    pub give_up_after: Duration,
    /// Exit after this many trials (0 = never); for tests and batch jobs.
    pub max_trials: u32,
    /// Exit when no trial arrives for this long (zero = never): lets a Kubernetes Job end.
    pub idle_exit: Duration,
    /// Trials trained at once on `device` (at least 1).
    pub slots: u32,
}

/// Longest a finished epoch waits for the master's answer to its report before training goes on.
const EPOCH_ACK_WAIT: Duration = Duration::from_secs(10);

/// A trial acquired and prepared for training.
struct PreparedTrial {
    trial: proto::Trial,
    plan: TrialPlan,
    /// Identifies the data (the `[data]` section as the trial carries it) for split reuse.
    data_key: String,
    dataset: DataPlan,
    split: SplitConfig,
    cancel: Arc<AtomicBool>,
    /// The downloaded parent checkpoint named by `plan.parent_checkpoint`, deleted on drop.
    parent_file: Option<RemoveOnDrop>,
}

/// What the heartbeat task knows about a held trial.
#[derive(Clone)]
struct Held {
    /// Training has begun (until then the trial waits, prepared, behind another one).
    started: bool,
    progress: Option<EpochReport>,
    total_epochs: u32,
    /// The result is on its way to the master, which ends the lease: no more heartbeats, and
    /// an answer to one sent just before is stale.
    reporting: bool,
    cancel: Arc<AtomicBool>,
}

/// The trials this worker holds a lease on, by `(trial id, attempt)`, from acquisition until
/// their slot lets go of them. Every stage goes through these methods: the generator
/// ([`HeldTrials::hold`]), the slots ([`HeldTrials::start`], [`HeldTrials::record_progress`],
/// [`HeldTrials::release`]) and the heartbeats ([`heartbeat_round`], which sends
/// [`HeldTrials::heartbeats_due`] and applies each answer with [`HeldTrials::apply_command`]).
///
/// After a lost lease the same trial may come back to this worker as a new attempt while the
/// old one is still winding down, and the two must not be confused (a lease-lost answer for the
/// old attempt must not cancel the new one, nor may the end of the old one stop the new one's
/// heartbeats); likewise one slot's lost lease must not touch another slot's trial.
#[derive(Clone, Default)]
pub(crate) struct HeldTrials(Arc<Mutex<HashMap<(String, u32), Held>>>);

impl HeldTrials {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Held>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An attempt was acquired: hold it (heartbeats start) and return its cancel flag.
    pub(crate) fn hold(&self, trial_id: &str, attempt: u32) -> Arc<AtomicBool> {
        let cancel = Arc::new(AtomicBool::new(false));
        self.lock().insert(
            (trial_id.to_string(), attempt),
            Held {
                started: false,
                progress: None,
                total_epochs: 0,
                reporting: false,
                cancel: cancel.clone(),
            },
        );
        cancel
    }

    /// The attempt is prepared and will train `epochs` epochs.
    fn set_total_epochs(&self, trial_id: &str, attempt: u32, epochs: u32) {
        if let Some(h) = self.lock().get_mut(&(trial_id.to_string(), attempt)) {
            h.total_epochs = epochs;
        }
    }

    /// A slot began training the attempt.
    pub(crate) fn start(&self, trial_id: &str, attempt: u32) {
        if let Some(h) = self.lock().get_mut(&(trial_id.to_string(), attempt)) {
            h.started = true;
        }
    }

    /// The attempt finished an epoch; later heartbeats carry the report.
    fn record_progress(&self, trial_id: &str, attempt: u32, report: &EpochReport) {
        if let Some(h) = self.lock().get_mut(&(trial_id.to_string(), attempt)) {
            h.progress = Some(report.clone());
        }
    }

    /// The slot is sending the attempt's result: heartbeats for it stop, and answers to those
    /// already sent are ignored (a completed trial is "no longer leased" to anyone).
    fn reporting(&self, trial_id: &str, attempt: u32) {
        if let Some(h) = self.lock().get_mut(&(trial_id.to_string(), attempt)) {
            h.reporting = true;
        }
    }

    /// Wind-down: the slot is done with the attempt (reported, failed, stopped or never
    /// started); no more heartbeats for it. Other attempts of the same trial stay held.
    pub(crate) fn release(&self, trial_id: &str, attempt: u32) {
        self.lock().remove(&(trial_id.to_string(), attempt));
    }

    /// Whether the attempt is held (acquired and not yet released).
    #[cfg(test)]
    pub(crate) fn holds(&self, trial_id: &str, attempt: u32) -> bool {
        self.lock().contains_key(&(trial_id.to_string(), attempt))
    }

    /// Attempts held.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The heartbeats the timer sends now: one per held attempt that has not been told to stop
    /// and has not lost its lease (those stay held until their slot gets to them).
    pub(crate) fn heartbeats_due(&self, worker_id: &str) -> Vec<proto::HeartbeatRequest> {
        let mut due: Vec<proto::HeartbeatRequest> = self
            .lock()
            .iter()
            .filter(|(_, h)| !h.cancel.load(Ordering::SeqCst) && !h.reporting)
            .map(|((trial_id, attempt), h)| {
                heartbeat_request(
                    worker_id,
                    trial_id,
                    *attempt,
                    h.started,
                    h.progress.as_ref(),
                    h.total_epochs,
                )
            })
            .collect();
        due.sort_by(|a, b| (&a.trial_id, a.attempt).cmp(&(&b.trial_id, b.attempt)));
        due
    }

    /// Acts on the master's answer to a heartbeat for `attempt` of a trial: stop or lease-lost
    /// cancel that attempt (and no other).
    pub(crate) fn apply_command(
        &self,
        trial_id: &str,
        attempt: u32,
        response: proto::HeartbeatResponse,
    ) {
        let command = TrialCommand::try_from(response.command).unwrap_or(TrialCommand::Continue);
        if !matches!(command, TrialCommand::Stop | TrialCommand::LeaseLost) {
            return;
        }
        let held = self.lock();
        match held.get(&(trial_id.to_string(), attempt)) {
            Some(h) if !h.reporting => {
                warn!(trial_id, attempt, command = ?command, reason = %response.reason, "master asked to drop the trial");
                h.cancel.store(true, Ordering::SeqCst);
            }
            // A heartbeat that crossed the result on the wire: the master already has it.
            _ => debug!(trial_id, attempt, command = ?command, "stale heartbeat answer ignored"),
        }
    }
}

/// How long a worker waits for the answer to one call (an `Acquire` long-poll waits 10 s of
/// it on the master) before it counts the call as lost and retries: a master whose packets
/// vanish never answers, and the connection's keepalive notices only later.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// The same for a checkpoint download or upload (up to `--max-checkpoint-mib`, 1 GiB).
pub const TRANSFER_DEADLINE: Duration = Duration::from_secs(600);

/// Runs one call with a deadline: past it, the call is abandoned and answered
/// `DEADLINE_EXCEEDED`.
async fn within<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {} s",
                deadline.as_secs_f64()
            )))
        })
}

/// Retries `op` with exponential backoff while the master is unreachable or does not answer
/// within `deadline` (every retried call is idempotent on the master).
async fn with_retry<T, F, Fut>(
    what: &str,
    give_up_after: Duration,
    deadline: Duration,
    mut op: F,
) -> Result<T, WorkerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        match within(deadline, op()).await {
            Ok(v) => return Ok(v),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::DeadlineExceeded
                ) =>
            {
                if start.elapsed() >= give_up_after {
                    return Err(WorkerError::Master(format!(
                        "{what}: master unreachable for {:?}: {}",
                        give_up_after,
                        status_text(&s)
                    )));
                }
                warn!(what, retry_in_ms = delay.as_millis() as u64, error = %status_text(&s), "master unreachable, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(s) => return Err(WorkerError::Master(format!("{what}: {}", s.message()))),
        }
    }
}

/// Connects, retrying with backoff until a master answers or `give_up_after` passes. With
/// several masters each is tried in turn; the client starts at the first that connects and
/// moves on to the next whenever one is unreachable or answers `UNAVAILABLE`.
async fn connect_with_retry(
    config: &JoinConfig,
) -> Result<(MasterChannel, WorkerServiceClient<AuthChannel>), WorkerError> {
    let token = BearerToken::new(&config.token).map_err(|e| WorkerError::Master(e.to_string()))?;
    let masters = &config.masters;
    if masters.is_empty() {
        return Err(WorkerError::Master("no master url given".into()));
    }
    // A bad URL or a missing certificate file does not get better by waiting: fail now.
    // Handshake failures are retried like any other (a restarting master resets connections).
    for url in masters {
        config
            .tls
            .check(url)
            .map_err(|e| WorkerError::Master(e.to_string()))?;
    }
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(500);
    let mut next = 0;
    loop {
        let url = &masters[next];
        match connect_with(url, &config.tls).await {
            Ok(channel) => {
                // The other masters are connected to when the client first turns to them.
                let mut endpoints = Vec::with_capacity(masters.len());
                for (i, other) in masters.iter().enumerate() {
                    let channel = if i == next {
                        channel.clone()
                    } else {
                        connect_lazy_with(other, &config.tls)
                            .map_err(|e| WorkerError::Master(e.to_string()))?
                    };
                    endpoints.push((other.clone(), channel));
                }
                let channel = MasterChannel::new(endpoints, next);
                return Ok((channel.clone(), worker_client(channel, &token)));
            }
            Err(e) => {
                next = (next + 1) % masters.len();
                if next != 0 {
                    warn!(master = %url, error = %e, "master unreachable, trying the next one");
                    continue;
                }
                if start.elapsed() >= config.give_up_after {
                    return Err(WorkerError::Master(format!(
                        "master at {} unreachable for {:?}: {e}",
                        masters.join(", "),
                        config.give_up_after
                    )));
                }
                warn!(master = %url, retry_in_ms = delay.as_millis() as u64, error = %e, "master unreachable, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Runs the worker until `shutdown` flips to true (drain: every slot finishes its current
/// trial, the prepared one is handed back) or `max_trials` trials are done.
pub async fn run(config: JoinConfig, shutdown: watch::Receiver<bool>) -> Result<(), WorkerError> {
    let (masters, client) = connect_with_retry(&config).await?;
    let device_text = crate::device::describe(config.device);
    let slots = config.slots.max(1);
    let registration = with_retry("register", config.give_up_after, CALL_DEADLINE, || {
        let mut c = client.clone();
        let request = proto::RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            name: config.name.clone(),
            device: device_text.clone(),
            slots,
        };
        async move { c.register(request).await.map(|r| r.into_inner()) }
    })
    .await?;
    let worker_id = registration.worker_id.clone();
    let heartbeat_every = Duration::from_millis(registration.heartbeat_interval_ms.max(100) as u64);
    info!(worker_id = %worker_id, master = %masters.current_url(), device = %device_text, slots, "registered");

    let held = HeldTrials::default();
    let cache = Arc::new(DatasetCache::new());
    let (prepared_tx, prepared_rx) = mpsc::channel::<PreparedTrial>(1);
    let (stop_tx, stop_rx) = watch::channel(false);

    let heartbeats = tokio::spawn(heartbeat_loop(
        client.clone(),
        worker_id.clone(),
        held.clone(),
        heartbeat_every,
        stop_rx.clone(),
    ));
    let generator = tokio::spawn(generator_loop(
        client.clone(),
        config.clone(),
        worker_id.clone(),
        held.clone(),
        cache.clone(),
        prepared_tx,
        stop_rx.clone(),
    ));

    // The slots take prepared trials from one queue; `quit` tells them to take no more (trial
    // limit reached, or a slot lost the master).
    let (quit_tx, _) = watch::channel(false);
    let shared = Arc::new(SlotShared {
        client: client.clone(),
        config: config.clone(),
        worker_id: worker_id.clone(),
        held: held.clone(),
        splits: Arc::new(SplitCache::new()),
        prepared: tokio::sync::Mutex::new(prepared_rx),
        claimed: AtomicU32::new(0),
        done: AtomicU32::new(0),
        quit: quit_tx,
    });
    let mut slot_tasks = tokio::task::JoinSet::new();
    for slot in 0..slots {
        slot_tasks.spawn(slot_loop(slot, shared.clone(), shutdown.clone()));
    }
    let mut result: Result<(), WorkerError> = Ok(());
    while let Some(ended) = slot_tasks.join_next().await {
        let ended = ended.unwrap_or_else(|e| Err(WorkerError::Torch(format!("slot task: {e}"))));
        if let Err(e) = ended {
            shared.quit.send_replace(true);
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    let done = shared.done.load(Ordering::SeqCst);

    // Drain: stop acquiring, hand back whatever is still held, leave.
    let _ = stop_tx.send(true);
    if generator.is_finished() {
        if let Ok(Err(e)) = generator.await {
            result = result.and(Err(e));
        }
    } else {
        generator.abort();
    }
    heartbeats.abort();
    let handed_back = held.len();
    let dereg = within(
        CALL_DEADLINE,
        client.clone().deregister(proto::DeregisterRequest {
            worker_id: worker_id.clone(),
        }),
    )
    .await;
    match dereg {
        Ok(_) => info!(worker_id = %worker_id, handed_back, trials_done = done, "deregistered"),
        Err(s) => {
            warn!(worker_id = %worker_id, error = %s.message(), "could not deregister; the master will reclaim leases")
        }
    }
    result
}

/// What the slots of one worker share.
struct SlotShared {
    client: WorkerServiceClient<AuthChannel>,
    config: JoinConfig,
    worker_id: String,
    held: HeldTrials,
    /// One copy of the split for all slots.
    splits: Arc<SplitCache>,
    /// Prepared trials, from the generator.
    prepared: tokio::sync::Mutex<mpsc::Receiver<PreparedTrial>>,
    /// Trials a slot has begun (counts against `max_trials`).
    claimed: AtomicU32,
    /// Trials trained (or failed) and reported.
    done: AtomicU32,
    /// Set: take no more trials.
    quit: watch::Sender<bool>,
}

/// Resolves when `flag` becomes true; never when its sender is gone without setting it.
async fn raised(mut flag: watch::Receiver<bool>) {
    if flag.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One slot of the trainer stage: takes prepared trials one after another and trains each
/// (with its own heartbeats and its own result) until the generator ends, `shutdown` or `quit`
/// is raised (the current trial is finished first), or `max_trials` trials have begun.
async fn slot_loop(
    slot: u32,
    shared: Arc<SlotShared>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let config = &shared.config;
    let mut client = shared.client.clone();
    loop {
        if *shutdown.borrow() || *shared.quit.borrow() {
            return Ok(());
        }
        let next = tokio::select! {
            p = async { shared.prepared.lock().await.recv().await } => p,
            _ = raised(shutdown.clone()) => None,
            _ = raised(shared.quit.subscribe()) => None,
        };
        let Some(prepared) = next else {
            return Ok(());
        };
        let trial_id = prepared.trial.trial_id.clone();
        let attempt = prepared.trial.attempt;
        if prepared.cancel.load(Ordering::SeqCst) {
            shared.held.release(&trial_id, attempt);
            continue;
        }
        if config.max_trials > 0 {
            let claimed = shared.claimed.fetch_add(1, Ordering::SeqCst) + 1;
            if claimed > config.max_trials {
                // Another slot took the last trial: this one stays held and is handed back.
                shared.quit.send_replace(true);
                return Ok(());
            }
            if claimed == config.max_trials {
                info!(slot, "trial limit reached: this is the last trial");
                shared.quit.send_replace(true);
            }
        }
        let outcome = train_and_report(
            &mut client,
            config,
            &shared.worker_id,
            &shared.held,
            &shared.splits,
            prepared,
        )
        .await;
        shared.held.release(&trial_id, attempt);
        shared.done.fetch_add(1, Ordering::SeqCst);
        match outcome {
            Ok(()) => {}
            Err(WorkerError::Master(m)) => return Err(WorkerError::Master(m)),
            Err(e) => {
                error!(trial_id = %trial_id, attempt, worker_id = %shared.worker_id, slot, error = %e, "trial could not be reported")
            }
        }
    }
}

/// The generator stage: acquire, prepare, hand over; at most one prepared trial waits.
async fn generator_loop(
    mut client: WorkerServiceClient<AuthChannel>,
    config: JoinConfig,
    worker_id: String,
    held: HeldTrials,
    cache: Arc<DatasetCache>,
    prepared_tx: mpsc::Sender<PreparedTrial>,
    stop: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let mut idle_since = tokio::time::Instant::now();
    loop {
        // Wait for room before acquiring, so no trial is leased that cannot start soon.
        let permit = match prepared_tx.reserve().await {
            Ok(p) => p,
            Err(_) => return Ok(()),
        };
        if *stop.borrow() {
            return Ok(());
        }
        let request = proto::AcquireRequest {
            worker_id: worker_id.clone(),
            wait_ms: 10_000,
        };
        let response = with_retry("acquire", config.give_up_after, CALL_DEADLINE, || {
            let mut c = client.clone();
            let r = request.clone();
            async move { c.acquire(r).await.map(|r| r.into_inner()) }
        })
        .await?;
        let Some(trial) = response.trial else {
            if !config.idle_exit.is_zero() && idle_since.elapsed() >= config.idle_exit {
                info!(
                    idle_secs = config.idle_exit.as_secs(),
                    "no work for a while, leaving"
                );
                drop(permit);
                return Ok(());
            }
            continue;
        };
        idle_since = tokio::time::Instant::now();
        let trial_id = trial.trial_id.clone();
        let attempt = trial.attempt;
        let cancel = held.hold(&trial_id, attempt);
        match prepare(trial, cancel, &config, &cache, &client).await {
            Ok(prepared) => {
                held.set_total_epochs(&trial_id, attempt, prepared.plan.hparams.epochs);
                info!(trial_id = %trial_id, attempt, worker_id = %worker_id, "trial prepared");
                permit.send(prepared);
            }
            Err(e) if e.is_local() => {
                // Failing the trial would charge the experiment for this machine's fault, and
                // every later trial would fail alike: keep the lease (run() hands it back when
                // it deregisters) and leave with the error.
                error!(trial_id = %trial_id, attempt, worker_id = %worker_id, error = %e, "this worker cannot prepare trials; handing the trial back and leaving");
                return Err(e);
            }
            Err(e) => {
                warn!(trial_id = %trial_id, attempt, worker_id = %worker_id, error = %e, "trial cannot be prepared");
                held.release(&trial_id, attempt);
                let _ = client
                    .fail(proto::FailRequest {
                        worker_id: worker_id.clone(),
                        trial_id,
                        attempt,
                        reason: e.to_string(),
                    })
                    .await;
            }
        }
    }
}

/// Parses the trial, loads its dataset (once per process, through the cache) and downloads the
/// parent checkpoint it inherits from, if any.
async fn prepare(
    trial: proto::Trial,
    cancel: Arc<AtomicBool>,
    config: &JoinConfig,
    cache: &Arc<DatasetCache>,
    client: &WorkerServiceClient<AuthChannel>,
) -> Result<PreparedTrial, WorkerError> {
    let genome =
        Genome::from_json(&trial.genome_json).map_err(|e| WorkerError::Genome(e.to_string()))?;
    let hparams = HyperParams::from_json(&trial.hparams_json)
        .map_err(|e| WorkerError::Genome(e.to_string()))?;
    let data = trial
        .data
        .as_ref()
        .ok_or_else(|| WorkerError::Genome("trial.data is missing".into()))?;
    let (data_config, split_seed) =
        data_spec_from_proto(data).map_err(|e| WorkerError::Genome(e.to_string()))?;
    let split = SplitConfig::from_config(&data_config, split_seed);
    let cache = cache.clone();
    let data_key = format!("{data_config:?}");
    let fashion_mnist_dir = config.fashion_mnist_dir.clone();
    let dataset = tokio::task::spawn_blocking(move || {
        DataPlan::resolve(&data_config, &fashion_mnist_dir, &cache)
    })
    .await
    .map_err(|e| WorkerError::Torch(format!("data loading task: {e}")))??;
    if dataset.input_shape() != genome.input {
        return Err(WorkerError::Genome(format!(
            "genome expects input {:?} but the dataset has {:?}",
            genome.input,
            dataset.input_shape()
        )));
    }
    let parent_file = match trial.inherit_checkpoint_sha256.as_str() {
        "" => None,
        sha => Some(download_parent(client, config, sha).await?),
    };
    let plan = TrialPlan {
        genome,
        hparams,
        seed: trial.seed,
        parent_checkpoint: parent_file.as_ref().map(|f| f.0.clone()),
    };
    Ok(PreparedTrial {
        trial,
        plan,
        data_key,
        dataset,
        split,
        cancel,
        parent_file,
    })
}

/// A temporary file for one download of a parent checkpoint. Each call gives a new path: two
/// held trials with the same parent (one training, one prefetched) each own their copy, so the
/// first one's clean-up cannot delete the other's.
fn parent_download_path(sha256: &str) -> PathBuf {
    static DOWNLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = DOWNLOADS.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "explore-worker-{}-{n}-parent-{sha256}.safetensors",
        std::process::id()
    ))
}

/// Downloads a checkpoint by its sha256 into a temporary file, checking the digest.
async fn download_parent(
    client: &WorkerServiceClient<AuthChannel>,
    config: &JoinConfig,
    sha256: &str,
) -> Result<RemoveOnDrop, WorkerError> {
    use sha2::{Digest, Sha256};
    use tokio_stream::StreamExt;
    let bytes = with_retry(
        "download parent checkpoint",
        config.give_up_after,
        TRANSFER_DEADLINE,
        || {
            let mut c = client.clone();
            let request = proto::DownloadCheckpointRequest {
                sha256: sha256.to_string(),
            };
            async move {
                let mut stream = c.download_checkpoint(request).await?.into_inner();
                let mut bytes = Vec::new();
                while let Some(chunk) = stream.next().await {
                    bytes.extend_from_slice(&chunk?.data);
                }
                Ok(bytes)
            }
        },
    )
    .await?;
    let digest = hex::encode(Sha256::digest(&bytes));
    if digest != sha256 {
        return Err(WorkerError::Master(format!(
            "parent checkpoint {sha256} arrived with digest {digest}"
        )));
    }
    let file = RemoveOnDrop(parent_download_path(sha256));
    std::fs::write(&file.0, &bytes).map_err(|e| WorkerError::io(&file.0, e))?;
    Ok(file)
}

/// What the trainer stage did with a trial.
enum Work {
    /// Trained: a model with its weights, and the size of the whole training split (more than
    /// the outcome's `train_examples` when the trial trained on a prefix of it).
    Trained {
        outcome: TrialOutcome,
        split_examples: usize,
    },
    /// Probed (S2): transferability scores, no weights.
    Probed(ProbeOutcome),
}

/// The trainer stage for one trial: train (or probe) on a blocking thread, upload, complete (or
/// fail).
async fn train_and_report(
    client: &mut WorkerServiceClient<AuthChannel>,
    config: &JoinConfig,
    worker_id: &str,
    held: &HeldTrials,
    splits: &Arc<SplitCache>,
    prepared: PreparedTrial,
) -> Result<(), WorkerError> {
    let PreparedTrial {
        trial,
        plan,
        data_key,
        dataset,
        split,
        cancel,
        parent_file,
    } = prepared;
    let trial_id = trial.trial_id.clone();
    let device = config.device;
    let key = format!("{data_key}|{split:?}|{device:?}");
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<EpochReport>();
    // The forwarder acknowledges each report once the master has answered it, so a stop decided
    // on this epoch's accuracy (early stopping) takes effect before the next epoch starts.
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
    info!(trial_id = %trial_id, attempt = trial.attempt, worker_id, epochs = plan.hparams.epochs, "training");
    held.start(&trial_id, trial.attempt);
    let started = std::time::Instant::now();
    let cancel_flag = cancel.clone();
    let probe = trial.kind == proto::TrialKind::Probe as i32;
    let train_examples = trial.train_examples as usize;
    let splits = splits.clone();
    let ids = TrialIds {
        trial_id: trial_id.clone(),
        attempt: trial.attempt,
        worker_id: Some(worker_id.to_string()),
    };
    let training = tokio::task::spawn_blocking(move || -> Result<Work, WorkerError> {
        // One copy of the split for every slot (built here by the first slot that needs it).
        let data = splits.get_or_build(&key, || dataset.split(&split, device))?;
        let split_examples = data.train_len();
        // A search trial under `[final] search_subset` trains on the split's first examples.
        let data = data.training_prefix(train_examples)?;
        // A bar on a terminal, else a line per epoch and every 30 s within long epochs (a
        // probe has no epochs: nothing to show).
        let progress = std::cell::RefCell::new(
            (!probe).then(|| TrialProgress::start(ids, plan.hparams.epochs)),
        );
        let mut on_batch = |b: &crate::train::BatchProgress| {
            if let Some(p) = progress.borrow_mut().as_mut() {
                p.batch(b);
            }
        };
        let mut on_epoch = |report: &EpochReport| {
            if let Some(p) = progress.borrow_mut().as_mut() {
                p.epoch(report);
            }
            if progress_tx.send(report.clone()).is_ok() {
                let _ = ack_rx.recv_timeout(EPOCH_ACK_WAIT);
            }
            if cancel_flag.load(Ordering::SeqCst) {
                Control::Stop
            } else {
                Control::Continue
            }
        };
        if probe {
            match &plan.parent_checkpoint {
                Some(source) => probe_trial(&plan.genome, source, &data, device).map(Work::Probed),
                None => Err(WorkerError::Genome(
                    "a probe trial must name the checkpoint it probes".into(),
                )),
            }
        } else {
            train_trial_observed(&plan, &data, device, &mut on_epoch, &mut on_batch).map(
                |outcome| Work::Trained {
                    outcome,
                    split_examples,
                },
            )
        }
    });
    // Forward epoch reports to the master as they arrive.
    let forward_held = held.clone();
    let forward_id = trial_id.clone();
    let mut forward_client = client.clone();
    let forward_worker = worker_id.to_string();
    let attempt = trial.attempt;
    let forwarder = tokio::spawn(async move {
        // The epoch's log line comes from the trial's `TrialProgress`.
        while let Some(report) = progress_rx.recv().await {
            forward_held.record_progress(&forward_id, attempt, &report);
            let r = within(
                CALL_DEADLINE,
                forward_client.heartbeat(heartbeat_request(
                    &forward_worker,
                    &forward_id,
                    attempt,
                    true,
                    Some(&report),
                    report.total_epochs,
                )),
            )
            .await;
            match r {
                Ok(r) => forward_held.apply_command(&forward_id, attempt, r.into_inner()),
                Err(s) => {
                    warn!(trial_id = %forward_id, attempt, worker_id = %forward_worker, error = %s.message(), "epoch heartbeat failed")
                }
            }
            let _ = ack_tx.send(());
        }
    });
    let outcome = training
        .await
        .map_err(|e| WorkerError::Torch(format!("training thread panicked: {e}")))?;
    let _ = forwarder.await;
    drop(parent_file);
    if cancel.load(Ordering::SeqCst) {
        info!(trial_id = %trial_id, attempt = trial.attempt, worker_id, "trial stopped by the master; nothing to report");
        return Ok(());
    }
    match outcome {
        Ok(Work::Trained {
            outcome,
            split_examples,
        }) => {
            let facts = RunFacts {
                split_examples,
                started,
            };
            report_success(client, config, held, worker_id, &trial, outcome, facts).await
        }
        Ok(Work::Probed(outcome)) => {
            report_probe(client, config, held, worker_id, &trial, outcome).await
        }
        Err(e) => {
            warn!(trial_id = %trial_id, attempt = trial.attempt, worker_id, error = %e, "trial failed");
            held.reporting(&trial_id, trial.attempt);
            with_retry("fail", config.give_up_after, CALL_DEADLINE, || {
                let mut c = client.clone();
                let r = proto::FailRequest {
                    worker_id: worker_id.to_string(),
                    trial_id: trial_id.clone(),
                    attempt: trial.attempt,
                    reason: e.to_string(),
                };
                async move { c.fail(r).await.map(|_| ()) }
            })
            .await
        }
    }
}

/// What the trainer stage knows of a trained trial beyond its outcome.
struct RunFacts {
    /// The size of the whole training split (more than the outcome's `train_examples` when the
    /// trial trained on a prefix of it).
    split_examples: usize,
    /// When the trainer stage took the trial up.
    started: std::time::Instant,
}

async fn report_success(
    client: &mut WorkerServiceClient<AuthChannel>,
    config: &JoinConfig,
    held: &HeldTrials,
    worker_id: &str,
    trial: &proto::Trial,
    outcome: TrialOutcome,
    facts: RunFacts,
) -> Result<(), WorkerError> {
    let checkpoint = Arc::new(outcome.checkpoint);
    let upload = with_retry(
        "upload checkpoint",
        config.give_up_after,
        TRANSFER_DEADLINE,
        || {
            let mut c = client.clone();
            let bytes = checkpoint.clone();
            async move {
                let chunks: Vec<proto::CheckpointChunk> = bytes
                    .chunks(256 * 1024)
                    .map(|c| proto::CheckpointChunk { data: c.to_vec() })
                    .collect();
                c.upload_checkpoint(tokio_stream::iter(chunks))
                    .await
                    .map(|r| r.into_inner())
            }
        },
    )
    .await?;
    let mut metrics = HashMap::new();
    metrics.insert("test_accuracy".to_string(), outcome.test_accuracy);
    metrics.insert("train_loss".to_string(), outcome.train_loss);
    metrics.insert("train_seconds".to_string(), outcome.train_seconds);
    metrics.insert("train_examples".to_string(), outcome.train_examples as f64);
    // What the master needs to estimate a longer training of this model on the whole split
    // (`[final] within_wall_budget`).
    metrics.insert("eval_seconds".to_string(), outcome.eval_seconds);
    metrics.insert("split_examples".to_string(), facts.split_examples as f64);
    // The trial's whole time on this slot: its training, then test scoring, saving and
    // uploading the checkpoint (the estimate adds the difference to each final trial).
    let wall_seconds = facts.started.elapsed().as_secs_f64();
    metrics.insert("wall_seconds".to_string(), wall_seconds);
    if outcome.inherited.total > 0 {
        let copied = outcome.inherited.copied.len() as f64;
        metrics.insert("inherited_tensors".to_string(), copied);
    }
    let request = proto::CompleteRequest {
        worker_id: worker_id.to_string(),
        trial_id: trial.trial_id.clone(),
        attempt: trial.attempt,
        score: outcome.val_accuracy,
        metrics,
        checkpoint_sha256: upload.sha256,
        epochs_run: outcome.epochs_run,
    };
    let answer = complete(client, config, held, request).await?;
    if answer.accepted {
        info!(
            trial_id = %trial.trial_id,
            attempt = trial.attempt,
            worker_id,
            val_accuracy = outcome.val_accuracy,
            test_accuracy = outcome.test_accuracy,
            seconds = outcome.train_seconds,
            "trial completed"
        );
    } else {
        warn!(trial_id = %trial.trial_id, attempt = trial.attempt, worker_id, reason = %answer.reason, "result kept as history only");
    }
    Ok(())
}

/// Sends a result, retrying while the master is unreachable (completion is idempotent).
async fn complete(
    client: &WorkerServiceClient<AuthChannel>,
    config: &JoinConfig,
    held: &HeldTrials,
    request: proto::CompleteRequest,
) -> Result<proto::CompleteResponse, WorkerError> {
    held.reporting(&request.trial_id, request.attempt);
    with_retry("complete", config.give_up_after, CALL_DEADLINE, || {
        let mut c = client.clone();
        let r = request.clone();
        async move { c.complete(r).await.map(|r| r.into_inner()) }
    })
    .await
}

/// Completes a probe trial with its scores (no checkpoint, no epochs).
async fn report_probe(
    client: &mut WorkerServiceClient<AuthChannel>,
    config: &JoinConfig,
    held: &HeldTrials,
    worker_id: &str,
    trial: &proto::Trial,
    outcome: ProbeOutcome,
) -> Result<(), WorkerError> {
    let request = proto::CompleteRequest {
        worker_id: worker_id.to_string(),
        trial_id: trial.trial_id.clone(),
        attempt: trial.attempt,
        score: outcome.score(),
        metrics: outcome.metrics().into_iter().collect(),
        checkpoint_sha256: String::new(),
        epochs_run: 0,
    };
    let answer = complete(client, config, held, request).await?;
    if answer.accepted {
        info!(
            trial_id = %trial.trial_id,
            attempt = trial.attempt,
            worker_id,
            logme = outcome.scores.logme,
            leep = outcome.scores.leep,
            nce = outcome.scores.nce,
            latency_ms = outcome.latency_ms,
            seconds = outcome.seconds,
            "probe completed"
        );
    } else {
        warn!(trial_id = %trial.trial_id, attempt = trial.attempt, worker_id, reason = %answer.reason, "probe result kept as history only");
    }
    Ok(())
}

/// The heartbeat for a held trial, with its last epoch report if any. The report's named
/// metrics travel along, less any non-finite value (a diverging objective's NaN): the master
/// refuses those, and a refused heartbeat would not extend the lease.
fn heartbeat_request(
    worker_id: &str,
    trial_id: &str,
    attempt: u32,
    started: bool,
    progress: Option<&EpochReport>,
    total_epochs: u32,
) -> proto::HeartbeatRequest {
    proto::HeartbeatRequest {
        worker_id: worker_id.to_string(),
        trial_id: trial_id.to_string(),
        attempt,
        started,
        epoch: progress.map(|p| p.epoch).unwrap_or(0),
        total_epochs,
        train_loss: progress.map(|p| p.train_loss).unwrap_or(f64::NAN),
        val_accuracy: progress.map(|p| p.val_accuracy).unwrap_or(f64::NAN),
        metrics: progress
            .map(|p| {
                p.metrics
                    .iter()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// One round of the heartbeat timer: sends [`HeldTrials::heartbeats_due`] through `send` (the
/// master's `Heartbeat`) and applies each answer to its own attempt.
async fn heartbeat_round<F, Fut>(held: &HeldTrials, worker_id: &str, mut send: F)
where
    F: FnMut(proto::HeartbeatRequest) -> Fut,
    Fut: std::future::Future<Output = Result<proto::HeartbeatResponse, tonic::Status>>,
{
    for request in held.heartbeats_due(worker_id) {
        let (trial_id, attempt) = (request.trial_id.clone(), request.attempt);
        match send(request).await {
            Ok(answer) => held.apply_command(&trial_id, attempt, answer),
            Err(s) => {
                warn!(trial_id = %trial_id, attempt, worker_id, error = %s.message(), "heartbeat failed")
            }
        }
    }
}

/// Keeps every held trial's lease alive.
async fn heartbeat_loop(
    client: WorkerServiceClient<AuthChannel>,
    worker_id: String,
    held: HeldTrials,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        if *stop.borrow() {
            return;
        }
        heartbeat_round(&held, &worker_id, |request| {
            let mut c = client.clone();
            async move {
                within(CALL_DEADLINE, c.heartbeat(request))
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Regression (issue 13): a master whose packets vanish never answers; without a deadline a
    // call waited until the connection's keepalive gave up, and one with keepalive off forever.
    #[tokio::test]
    async fn a_call_that_never_answers_is_abandoned_at_its_deadline_and_retried() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let result: Result<(), WorkerError> = tokio::time::timeout(
            Duration::from_secs(10),
            with_retry(
                "complete",
                Duration::from_millis(400),
                Duration::from_millis(50),
                || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<Result<(), tonic::Status>>()
                },
            ),
        )
        .await
        .expect("a call without an answer must not hang");
        let text = result.unwrap_err().to_string();
        assert!(text.contains("no answer within 0.05 s"), "{text}");
        assert!(
            calls.load(Ordering::SeqCst) >= 2,
            "the lost call was retried"
        );
    }

    // Regression: every download of a parent went to one path per (process, parent), so when a
    // trial and the prefetched trial behind it shared a parent, the first one's clean-up deleted
    // the second one's file and it failed with "parent checkpoint ... NotFound".
    #[test]
    fn two_downloads_of_the_same_parent_get_their_own_files() {
        let sha = "ab".repeat(32);
        let first = RemoveOnDrop(parent_download_path(&sha));
        let second = RemoveOnDrop(parent_download_path(&sha));
        assert_ne!(first.0, second.0);
        std::fs::write(&first.0, b"1").unwrap();
        std::fs::write(&second.0, b"2").unwrap();
        drop(first);
        assert_eq!(std::fs::read(&second.0).unwrap(), b"2");
    }

    #[test]
    fn a_heartbeat_carries_the_epoch_metrics_but_no_non_finite_value() {
        let report = EpochReport {
            epoch: 2,
            total_epochs: 3,
            train_loss: 0.4,
            val_accuracy: 0.8,
            metrics: [
                ("elr.norm_drift".to_string(), 0.25),
                ("elr.diverged".to_string(), f64::NAN),
            ]
            .into(),
        };
        let r = heartbeat_request("worker-1", "trial-1", 1, true, Some(&report), 3);
        assert_eq!(r.epoch, 2);
        assert_eq!(
            r.metrics,
            HashMap::from([("elr.norm_drift".to_string(), 0.25)])
        );
        let before = heartbeat_request("worker-1", "trial-1", 1, false, None, 3);
        assert!(before.metrics.is_empty());
    }

    fn answer(command: TrialCommand) -> proto::HeartbeatResponse {
        proto::HeartbeatResponse {
            command: command as i32,
            reason: "test".into(),
        }
    }

    /// A stand-in for the master's `Heartbeat`: records what it was sent and answers each
    /// `(trial, attempt)` with the command `answers` names (continue for the rest).
    #[derive(Default)]
    struct FakeMaster {
        sent: Vec<(String, u32, u32)>,
        answers: HashMap<(String, u32), TrialCommand>,
    }

    impl FakeMaster {
        fn answer(&mut self, trial_id: &str, attempt: u32, command: TrialCommand) {
            self.answers
                .insert((trial_id.to_string(), attempt), command);
        }

        /// One round of the worker's heartbeat timer against this master; returns the
        /// `(trial, attempt)` pairs it heartbeated.
        async fn round(&mut self, held: &HeldTrials) -> Vec<(String, u32)> {
            let before = self.sent.len();
            heartbeat_round(held, "worker-1", |r| {
                self.sent.push((r.trial_id.clone(), r.attempt, r.epoch));
                let command = self
                    .answers
                    .get(&(r.trial_id.clone(), r.attempt))
                    .copied()
                    .unwrap_or(TrialCommand::Continue);
                async move { Ok(answer(command)) }
            })
            .await;
            self.sent[before..]
                .iter()
                .map(|(t, a, _)| (t.clone(), *a))
                .collect()
        }
    }

    fn pair(trial_id: &str, attempt: u32) -> (String, u32) {
        (trial_id.to_string(), attempt)
    }

    // Issue 12: the same trial came back to this worker as attempt 2 while attempt 1, whose
    // lease was lost, was still winding down; attempt 1's lease-lost answer cancelled attempt 2.
    // Driven through the worker's own bookkeeping: the generator's `hold`, the slot's `start`
    // and `release` (its wind-down) and the heartbeat timer's `heartbeat_round`.
    #[tokio::test]
    async fn a_lost_lease_cancels_only_its_own_attempt() {
        let held = HeldTrials::default();
        let mut master = FakeMaster::default();
        // Attempt 1 trains; its lease was lost while the worker was cut off from the master.
        let old = held.hold("trial-x", 1);
        held.start("trial-x", 1);
        // Back online, the generator acquired the same trial again as attempt 2.
        let new = held.hold("trial-x", 2);
        master.answer("trial-x", 1, TrialCommand::LeaseLost);
        let sent = master.round(&held).await;
        assert_eq!(sent, vec![pair("trial-x", 1), pair("trial-x", 2)]);
        assert!(old.load(Ordering::SeqCst), "attempt 1 is dropped");
        assert!(
            !new.load(Ordering::SeqCst),
            "attempt 1's lease-lost answer cancelled attempt 2"
        );
        // Attempt 1 is no longer heartbeated while it winds down; attempt 2 still is.
        assert_eq!(master.round(&held).await, vec![pair("trial-x", 2)]);
        // Attempt 1's epoch in flight reaches the master (the forwarder's path) and is told
        // again that its lease is lost.
        held.apply_command("trial-x", 1, answer(TrialCommand::LeaseLost));
        assert!(
            !new.load(Ordering::SeqCst),
            "a late answer cancelled attempt 2"
        );
        // The slot lets go of attempt 1: attempt 2 stays held and heartbeated.
        held.release("trial-x", 1);
        assert!(!held.holds("trial-x", 1));
        assert!(
            held.holds("trial-x", 2),
            "attempt 1's wind-down released attempt 2"
        );
        held.start("trial-x", 2);
        assert_eq!(master.round(&held).await, vec![pair("trial-x", 2)]);
        assert!(!new.load(Ordering::SeqCst));
        // A stop for attempt 2 does reach it.
        master.answer("trial-x", 2, TrialCommand::Stop);
        master.round(&held).await;
        assert!(new.load(Ordering::SeqCst));
        assert!(master.round(&held).await.is_empty());
    }

    // Two slots train two trials; one loses its lease: the other keeps training, heartbeating
    // (with its own progress) and holding its trial.
    #[tokio::test]
    async fn one_slots_lost_lease_leaves_the_other_slot_alone() {
        let held = HeldTrials::default();
        let mut master = FakeMaster::default();
        let a = held.hold("trial-a", 1);
        let b = held.hold("trial-b", 1);
        held.start("trial-a", 1);
        held.start("trial-b", 1);
        let report = EpochReport {
            epoch: 2,
            total_epochs: 5,
            train_loss: 0.5,
            val_accuracy: 0.7,
            metrics: Default::default(),
        };
        held.record_progress("trial-b", 1, &report);
        master.answer("trial-a", 1, TrialCommand::LeaseLost);
        assert_eq!(
            master.round(&held).await,
            vec![pair("trial-a", 1), pair("trial-b", 1)]
        );
        assert!(a.load(Ordering::SeqCst), "slot A's trial is dropped");
        assert!(!b.load(Ordering::SeqCst), "slot B's trial keeps training");
        held.release("trial-a", 1);
        assert_eq!(master.round(&held).await, vec![pair("trial-b", 1)]);
        assert_eq!(master.sent.last(), Some(&("trial-b".to_string(), 1, 2)));
        assert!(!b.load(Ordering::SeqCst));
        assert_eq!(held.len(), 1);
    }

    // Regression (CI, fresh clone): a slot's heartbeat crossed its result on the wire; the
    // master answered "no longer leased" (the trial was completed) and the worker logged that
    // the master asked it to drop a trial it had just reported.
    #[tokio::test]
    async fn a_heartbeat_answer_that_crosses_the_result_is_ignored() {
        let held = HeldTrials::default();
        let mut master = FakeMaster::default();
        let a = held.hold("trial-a", 1);
        let b = held.hold("trial-b", 1);
        held.start("trial-a", 1);
        held.start("trial-b", 1);
        // Slot A sends its result: its heartbeats stop, slot B's go on.
        held.reporting("trial-a", 1);
        assert_eq!(master.round(&held).await, vec![pair("trial-b", 1)]);
        // The answer to a heartbeat sent just before arrives now, and changes nothing.
        held.apply_command("trial-a", 1, answer(TrialCommand::LeaseLost));
        assert!(
            !a.load(Ordering::SeqCst),
            "a reported attempt was cancelled"
        );
        // Slot B, not reporting, still obeys its answers.
        held.apply_command("trial-b", 1, answer(TrialCommand::LeaseLost));
        assert!(b.load(Ordering::SeqCst));
    }

    #[test]
    fn slots_share_one_copy_of_the_split() {
        let _torch = crate::testing::torch_lock();
        let splits = SplitCache::new();
        let builds = std::cell::Cell::new(0);
        let build = || {
            builds.set(builds.get() + 1);
            Ok(crate::testing::split())
        };
        let first = splits.get_or_build("data|split|Cpu", build).unwrap();
        let second = splits.get_or_build("data|split|Cpu", build).unwrap();
        assert_eq!(builds.get(), 1, "the second slot reuses the split");
        assert_eq!(first.train_x.data_ptr(), second.train_x.data_ptr());
        assert_eq!(first.test_y.data_ptr(), second.test_y.data_ptr());
        let other = splits.get_or_build("other|split|Cpu", build).unwrap();
        assert_eq!(builds.get(), 2, "other data builds its own split");
        assert_ne!(other.train_x.data_ptr(), first.train_x.data_ptr());
        // The slot still training on the old split keeps its tensors.
        assert_eq!(first.train_len(), 300);
    }
}
