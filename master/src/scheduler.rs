//! The scheduler: owns the experiments' life cycle. It keeps each running experiment's queue
//! filled with simulated-annealing proposals, leases trials to workers, records results with
//! the Metropolis decision, reclaims expired leases and ends experiments at their budget.
//!
//! All state lives in the store; every state change is one transaction, serialised by a single
//! writer lock (SQLite allows one writer; taking the lock in-process avoids "database is
//! locked" errors instead of retrying them). The tonic services are thin adapters over this.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::PoolTx;
use explore_common::annealing::{self, STREAM_ACCEPTANCE, STREAM_PROPOSAL};
use explore_common::spec::ExperimentSpec;
use explore_common::{CommonError, ExperimentId, HyperParams, TrialId, WorkerId};
use rand::Rng;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::artifacts::ArtifactStore;
use crate::chains::{self, ChainResult};
use crate::early_stop;
use crate::error::MasterError;
use crate::metrics::{MetricsSink, NoMetrics};
use crate::predictor::{Predictor, SearchFeatures};
use crate::proposals;
use crate::store::{
    ChainRow, EpochUsage, ExperimentRow, ExperimentStatus, NewTrial, Store, TrialCounts, TrialKind,
    TrialResult, TrialRow, TrialStatus,
};
use crate::transfer;
use budget::BudgetUsage;

mod budget;
mod control;
mod failures;
mod final_phase;
mod final_time;
pub mod reads;
mod wakeups;
pub use control::{StopOutcome, CANCELLED_BY_STOP};
pub use final_phase::{search_epochs, search_trials};

/// Most trials one refill of an experiment's queue proposes (see `refill_experiment`).
pub const MAX_PROPOSALS_PER_REFILL: u32 = 32;

/// How long an `Acquire` that was refused a prefetch (the queued trials wait for idle slots
/// elsewhere) steps out of the wake-up line before it looks again.
const PREFETCH_RETRY: Duration = Duration::from_millis(250);

/// Randomness stream for per-trial training seeds.
const STREAM_TRIAL_SEED: u64 = 3;

/// Timing and limits of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// A lease lasts this long without a heartbeat.
    pub lease: Duration,
    /// Workers are asked to heartbeat this often.
    pub heartbeat_interval: Duration,
    /// A trial whose lease expired this many times is failed.
    pub max_attempts: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            lease: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(10),
            max_attempts: 3,
        }
    }
}

/// What a heartbeat tells the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatAnswer {
    Continue,
    Stop(String),
    LeaseLost(String),
}

/// What happened to a reported result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteAnswer {
    pub accepted: bool,
    pub reason: String,
}

/// Progress carried by a heartbeat.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Whether training has begun (a prefetched trial waits, leased, until it does).
    pub started: bool,
    pub epoch: u32,
    pub total_epochs: u32,
    pub train_loss: f64,
    pub val_accuracy: f64,
    /// Named metrics of `epoch` from the trial's training objective, stored with the epoch
    /// (checked by [`validate_epoch_metrics`]); empty for the plain objective.
    pub metrics: BTreeMap<String, f64>,
}

/// Most named metrics one epoch report may carry.
pub const MAX_EPOCH_METRICS: usize = 32;
/// Longest name of an epoch metric.
pub const MAX_EPOCH_METRIC_NAME: usize = 64;

/// An experiment with its counts, for status displays.
#[derive(Debug, Clone)]
pub struct ExperimentView {
    pub row: ExperimentRow,
    pub spec: ExperimentSpec,
    pub counts: TrialCounts,
    pub best: Option<TrialRow>,
    /// Mean temperature of the annealing chains.
    pub temperature: f64,
    /// Training epochs spent and committed.
    pub epochs: EpochUsage,
}

/// What one look at the queue for an `Acquire` found.
enum LeaseTry {
    /// A trial, now leased to the worker.
    Leased(Box<TrialRow>),
    /// Nothing runnable is queued.
    Empty,
    /// The worker already holds a trial for each of its slots, and the queued trials are no
    /// more than the idle slots of other workers (see `prefetch_would_starve`).
    LeftForIdleSlots,
}

/// The scheduler; cheap to share behind an `Arc`.
pub struct Scheduler {
    store: Store,
    artifacts: ArtifactStore,
    config: SchedulerConfig,
    write_lock: Mutex<()>,
    wakeups: wakeups::Wakeups,
    draining: std::sync::atomic::AtomicBool,
    /// Whether this master is the active one (false on a standby; see [`crate::leader`]).
    active: std::sync::atomic::AtomicBool,
    metrics: Arc<dyn MetricsSink>,
    /// The last final-phase reservation of each experiment under `[final] within_wall_budget`,
    /// with the completed trials and connected slots it was estimated for: it is estimated
    /// again only when one of them changes (see [`final_time`]).
    final_reservations: budget::ReservationMemos,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse_spec(row: &ExperimentRow) -> Result<ExperimentSpec, MasterError> {
    serde_json::from_str(&row.spec_json)
        .map_err(|e| MasterError::Internal(format!("stored spec of {} is unreadable: {e}", row.id)))
}

/// Refuses seeds whose input shape differs from the images `[data]` gives, when the spec alone
/// decides that shape (see `DataConfig::input_shape`): every trial of such a seed would fail on
/// its worker. A seed of a transfer from an MNIST-sized pool to digits is told about `size`.
fn check_input_shapes(
    spec: &ExperimentSpec,
    seeds: &[explore_common::spec::ResolvedSeed],
) -> Result<(), MasterError> {
    let Some((channels, height, width)) = spec.data.input_shape() else {
        return Ok(());
    };
    for seed in seeds {
        let input = seed.genome.input;
        if (input.channels, input.height, input.width) == (channels, height, width) {
            continue;
        }
        let hint = if input.channels == channels && input.height == input.width {
            format!(" (set [data] size = {} to resize the images)", input.height)
        } else {
            String::new()
        };
        return Err(MasterError::InvalidArgument(format!(
            "data: {} takes {}x{}x{} images but [data] gives {channels}x{height}x{width}{hint}",
            seed.label, input.channels, input.height, input.width
        )));
    }
    Ok(())
}

/// A trial seed as stored: SQLite integers are signed, so the top bit is dropped.
pub(crate) fn db_seed(seed: u64) -> i64 {
    (seed >> 1) as i64
}

impl Scheduler {
    /// A scheduler over a store and an artifact directory.
    pub fn new(store: Store, artifacts: ArtifactStore, config: SchedulerConfig) -> Scheduler {
        Scheduler {
            store,
            artifacts,
            config,
            write_lock: Mutex::new(()),
            wakeups: wakeups::Wakeups::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            active: std::sync::atomic::AtomicBool::new(true),
            metrics: Arc::new(NoMetrics),
            final_reservations: Default::default(),
        }
    }

    /// The earliest last contact of a worker that counts as connected at `now`: two lease
    /// periods ago.
    fn connected_since(&self, now: i64) -> i64 {
        now - 2 * self.config.lease.as_millis() as i64
    }

    /// The scheduler reporting what it measures to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsSink>) -> Scheduler {
        self.metrics = metrics;
        self
    }

    /// Where the scheduler and the services report what they measure.
    pub fn metrics(&self) -> &dyn MetricsSink {
        self.metrics.as_ref()
    }

    /// The store (read access for the admin service).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The artifact store.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// The scheduler's timing.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    // ---- experiments ---------------------------------------------------------------------------

    /// Validates and records a new experiment, then queues its first trials.
    pub async fn submit(&self, spec: ExperimentSpec) -> Result<ExperimentId, MasterError> {
        spec.validate()?;
        let spec = {
            let mut conn = self.store.conn().await?;
            transfer::derive_seeds(&mut *conn, &self.artifacts, &spec).await?
        };
        // Resolve seeds now so the stored spec is self-contained.
        let seeds = spec.resolve_seeds(None)?;
        check_input_shapes(&spec, &seeds)?;
        let mut stored = spec.clone();
        // Presets are built in and keep their name, which labels their seed trials ("seed cnn2");
        // genome files, which the master cannot read later, are inlined.
        stored.seeds = spec
            .seeds
            .iter()
            .zip(&seeds)
            .map(|(given, s)| explore_common::spec::SeedModel {
                preset: given.preset.clone(),
                genome_file: None,
                genome: given.preset.is_none().then(|| s.genome.clone()),
                hparams: Some(s.hparams.clone()),
                transfer: given.transfer.clone(),
            })
            .collect();
        let spec_json =
            serde_json::to_string(&stored).map_err(|e| MasterError::Internal(e.to_string()))?;
        let id = ExperimentId::generate();
        let _guard = self.write_lock.lock().await;
        let mut tx = self.store.begin().await?;
        let now = now_ms();
        tx.insert_experiment(&id, &spec.name, &spec_json, now)
            .await?;
        if transfer::probes(&stored) {
            transfer::queue_probes(&mut *tx, &stored, &seeds, &id, now).await?;
        }
        let row = tx
            .get_experiment(&id)
            .await?
            .ok_or_else(|| MasterError::Internal("experiment vanished".into()))?;
        self.refill_experiment(&mut *tx, &row, now).await?;
        tx.commit().await?;
        info!(experiment_id = %id, name = %spec.name, max_trials = spec.budget.max_trials, "experiment submitted");
        self.wakeups.wake_all();
        Ok(id)
    }

    /// An experiment with counts, best trial and current temperature.
    pub async fn experiment_view(&self, id: &str) -> Result<ExperimentView, MasterError> {
        let id: ExperimentId = lookup_id(id, "experiment")?;
        let mut conn = self.store.conn().await?;
        let row = conn
            .get_experiment(&id)
            .await?
            .ok_or_else(|| MasterError::NotFound(format!("experiment {id}")))?;
        self.view_of(&mut *conn, row).await
    }

    /// Every experiment, newest first.
    pub async fn experiment_views(&self) -> Result<Vec<ExperimentView>, MasterError> {
        let mut conn = self.store.conn().await?;
        let rows = conn.list_experiments().await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            views.push(self.view_of(&mut *conn, row).await?);
        }
        Ok(views)
    }

    async fn view_of(
        &self,
        conn: &mut dyn PoolTx,
        row: ExperimentRow,
    ) -> Result<ExperimentView, MasterError> {
        let spec = parse_spec(&row)?;
        let counts = conn.trial_counts(&row.id).await?;
        let best = match &row.best_trial_id {
            Some(t) => conn.get_trial(t).await?,
            None => None,
        };
        let temperature = chains::mean_temperature(conn, &spec, &row.id).await?;
        let epochs = conn.epoch_usage(&row.id).await?;
        Ok(ExperimentView {
            row,
            spec,
            counts,
            best,
            temperature,
            epochs,
        })
    }

    /// One trial by id, or `NotFound`.
    pub async fn trial(&self, trial_id: &str) -> Result<TrialRow, MasterError> {
        let trial_id: TrialId = lookup_id(trial_id, "trial")?;
        let mut conn = self.store.conn().await?;
        require_trial(&mut *conn, &trial_id).await
    }

    /// Every trial of an experiment.
    pub async fn trials(&self, experiment_id: &str) -> Result<Vec<TrialRow>, MasterError> {
        let experiment_id: ExperimentId = lookup_id(experiment_id, "experiment")?;
        let mut conn = self.store.conn().await?;
        if conn.get_experiment(&experiment_id).await?.is_none() {
            return Err(MasterError::NotFound(format!("experiment {experiment_id}")));
        }
        conn.list_trials(&experiment_id).await
    }

    /// One page of an experiment's trials in seq order (see [`store::list_trials_page`]), each
    /// with the named metrics of its last recorded epoch.
    pub async fn trials_page(
        &self,
        experiment_id: &str,
        after_seq: Option<i64>,
        status: Option<TrialStatus>,
        limit: u32,
    ) -> Result<Vec<(TrialRow, BTreeMap<String, f64>)>, MasterError> {
        let experiment_id: ExperimentId = lookup_id(experiment_id, "experiment")?;
        let mut conn = self.store.conn().await?;
        if conn.get_experiment(&experiment_id).await?.is_none() {
            return Err(MasterError::NotFound(format!("experiment {experiment_id}")));
        }
        let rows = conn
            .list_trials_page(&experiment_id, after_seq, status, limit)
            .await?;
        let mut metrics = conn.trials_epoch_metrics(&rows).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let of_row = metrics.remove(&row.id).unwrap_or_default();
                (row, of_row)
            })
            .collect())
    }

    /// The named metrics of one trial's last recorded epoch (empty when none).
    pub async fn trial_epoch_metrics(
        &self,
        trial: &TrialRow,
    ) -> Result<BTreeMap<String, f64>, MasterError> {
        let mut conn = self.store.conn().await?;
        conn.trial_epoch_metrics(trial).await
    }

    /// Per trial of an experiment, the named metrics of its last recorded epoch (trials
    /// without any are absent).
    pub async fn last_epoch_metrics(
        &self,
        experiment_id: &str,
    ) -> Result<HashMap<TrialId, BTreeMap<String, f64>>, MasterError> {
        let Ok(experiment_id) = experiment_id.parse::<ExperimentId>() else {
            // A malformed id names no experiment: no trials, no metrics.
            return Ok(HashMap::new());
        };
        let mut conn = self.store.conn().await?;
        conn.last_epoch_metrics(&experiment_id).await
    }

    /// The experiment's stored spec.
    pub async fn spec_of(&self, experiment_id: &str) -> Result<ExperimentSpec, MasterError> {
        let experiment_id: ExperimentId = lookup_id(experiment_id, "experiment")?;
        let mut conn = self.store.conn().await?;
        let row = conn
            .get_experiment(&experiment_id)
            .await?
            .ok_or_else(|| MasterError::NotFound(format!("experiment {experiment_id}")))?;
        parse_spec(&row)
    }

    // ---- workers -------------------------------------------------------------------------------

    /// Registers a worker and returns its id.
    pub async fn register(
        &self,
        name: &str,
        device: &str,
        slots: u32,
    ) -> Result<WorkerId, MasterError> {
        if name.len() > 200 || device.len() > 200 {
            return Err(MasterError::InvalidArgument(
                "worker name and device must be at most 200 bytes".into(),
            ));
        }
        if slots == 0 || slots > 64 {
            return Err(MasterError::InvalidArgument(format!(
                "slots must be 1..=64, got {slots}"
            )));
        }
        let id = WorkerId::generate();
        let _guard = self.write_lock.lock().await;
        let mut tx = self.store.begin().await?;
        tx.insert_worker(&id, name, device, slots, now_ms()).await?;
        tx.commit().await?;
        info!(worker_id = %id, name, device, slots, "worker registered");
        Ok(id)
    }

    async fn check_worker(
        &self,
        conn: &mut dyn PoolTx,
        worker_id: &WorkerId,
    ) -> Result<(), MasterError> {
        if !conn.worker_is_active(worker_id).await? {
            return Err(MasterError::NotFound(format!(
                "worker {worker_id} (register first)"
            )));
        }
        Ok(())
    }

    /// Stops handing out trials and answers every waiting long-poll now, so a shutting-down
    /// master does not wait for them to time out.
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wakeups.wake_all();
    }

    /// Marks this master active (it leads) or a standby (it serves nothing but refusals).
    pub fn set_active(&self, active: bool) {
        self.active
            .store(active, std::sync::atomic::Ordering::SeqCst);
        if active {
            self.wakeups.wake_all();
        }
    }

    /// Whether this master is the active one.
    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether [`Scheduler::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Long-polls for a trial for `worker_id`: returns as soon as one is leased, or `None`
    /// after `wait`.
    pub async fn acquire(
        &self,
        worker_id: &str,
        wait: Duration,
    ) -> Result<Option<TrialRow>, MasterError> {
        let worker_id: WorkerId = parse_arg(worker_id)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let notified = self.wakeups.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.is_draining() {
                    return Ok(None);
                }
                match self.try_lease(&worker_id).await? {
                    LeaseTry::Leased(trial) => {
                        info!(trial_id = %trial.id, worker_id = %worker_id, attempt = trial.attempt, "trial leased");
                        // More trials may be queued behind this one: the next waiter looks.
                        self.wakeups.work_queued();
                        return Ok(Some(*trial));
                    }
                    LeaseTry::Empty => {
                        if tokio::time::timeout_at(deadline, notified).await.is_err() {
                            return Ok(None);
                        }
                        continue;
                    }
                    // Leaves the block, and with it the wake-up line.
                    LeaseTry::LeftForIdleSlots => {}
                }
            }
            // A prefetch refused: the queued trials are for idle slots elsewhere. Hand the
            // wake-up on to their workers (it cannot come back to this call, which is out of
            // the line now) and look again a little later.
            self.wakeups.work_queued();
            let retry = tokio::time::Instant::now() + PREFETCH_RETRY;
            if retry >= deadline {
                tokio::time::sleep_until(deadline).await;
                return Ok(None);
            }
            tokio::time::sleep_until(retry).await;
        }
    }

    /// Lease transactions that `Acquire` calls have run since this scheduler started (one per
    /// look at the queue; a measure of how much waiting workers cost the writer).
    pub fn lease_attempts(&self) -> u64 {
        self.wakeups.lease_attempts()
    }

    async fn try_lease(&self, worker_id: &WorkerId) -> Result<LeaseTry, MasterError> {
        self.wakeups.lease_attempted();
        let _guard = self.write_lock.lock().await;
        let mut tx = self.store.begin().await?;
        self.check_worker(&mut *tx, worker_id).await?;
        let now = now_ms();
        tx.touch_worker(worker_id, now).await?;
        let lease_ms = self.config.lease.as_millis() as i64;
        let live_since = now - 2 * lease_ms;
        // A prefetch waits while every queued trial has an idle slot waiting for it elsewhere.
        if tx.prefetch_would_starve(worker_id, live_since).await? {
            tx.commit().await?;
            return Ok(LeaseTry::LeftForIdleSlots);
        }
        let mut trial = tx.lease_next_trial(worker_id, now, lease_ms).await?;
        if trial.is_none() {
            // The queue may be short because this worker just joined: top it up and retry.
            for row in tx.running_experiments().await? {
                self.refill_experiment(&mut *tx, &row, now).await?;
            }
            // What the refill queued may be no more than idle slots elsewhere are waiting for.
            if tx.prefetch_would_starve(worker_id, live_since).await? {
                tx.commit().await?;
                return Ok(LeaseTry::LeftForIdleSlots);
            }
            trial = tx.lease_next_trial(worker_id, now, lease_ms).await?;
        }
        tx.commit().await?;
        Ok(match trial {
            Some(trial) => LeaseTry::Leased(Box::new(trial)),
            None => LeaseTry::Empty,
        })
    }

    /// Records progress for a held trial and extends its lease.
    pub async fn heartbeat(
        &self,
        worker_id: &str,
        trial_id: &str,
        attempt: u32,
        progress: Progress,
    ) -> Result<HeartbeatAnswer, MasterError> {
        let trial_id: TrialId = parse_arg(trial_id)?;
        let worker_id: WorkerId = parse_arg(worker_id)?;
        let (trial_id, worker_id) = (&trial_id, &worker_id);
        // Checked before anything is written: a refused report leaves no trace.
        validate_epoch_metrics(&progress.metrics)?;
        let _guard = self.write_lock.lock().await;
        let mut tx = self.store.begin().await?;
        self.check_worker(&mut *tx, worker_id).await?;
        let now = now_ms();
        tx.touch_worker(worker_id, now).await?;
        let trial = require_trial(&mut *tx, trial_id).await?;
        let experiment = experiment_of(&mut *tx, &trial).await?;
        let deadline = now + self.config.lease.as_millis() as i64;
        // A trial never runs more epochs than planned; a report claiming more is clamped so it
        // cannot overdraw the epoch budget.
        let planned = HyperParams::from_json(&trial.hparams_json)?.epochs;
        let progress = Progress {
            epoch: progress.epoch.min(planned),
            ..progress
        };
        let held = tx
            .heartbeat_trial(
                trial_id,
                worker_id,
                attempt as i64,
                progress.epoch as i64,
                progress.started,
                deadline,
            )
            .await?;
        if !held {
            tx.commit().await?;
            // Cancelled while this worker held it (`master stop --now`): told why, not "lost".
            if trial.status == TrialStatus::Cancelled
                && trial.attempt == i64::from(attempt)
                && trial.worker_id.as_ref() == Some(worker_id)
            {
                return Ok(HeartbeatAnswer::Stop(trial.error.clone()));
            }
            return Ok(HeartbeatAnswer::LeaseLost(format!(
                "trial {trial_id} attempt {attempt} is no longer leased to {worker_id}"
            )));
        }
        // Once the wall-time budget is spent, a trial that has not started yet is not worth
        // starting: cancel it instead of letting the experiment's tail grow by a whole trial.
        if !progress.started
            && !trial.is_final()
            && experiment.status == ExperimentStatus::Running
            && self
                .search_wall(&mut *tx, &parse_spec(&experiment)?, &experiment, None, now)
                .await?
                .is_some_and(|w| w.spent(&experiment, now))
        {
            let reason = "wall-time budget reached before it started";
            tx.end_trial(trial_id, TrialStatus::Cancelled, reason, now)
                .await?;
            self.refill_experiment(&mut *tx, &experiment, now).await?;
            tx.commit().await?;
            info!(
                trial_id = %trial_id,
                attempt, worker_id = %worker_id, "prefetched trial cancelled: wall-time budget reached"
            );
            return Ok(HeartbeatAnswer::Stop(reason.to_string()));
        }
        let epoch_reason = if trial.kind()? == TrialKind::Train {
            self.record_epoch(&mut *tx, &experiment, &trial, planned, &progress, now)
                .await?
        } else {
            None
        };
        if let Some(reason) = epoch_reason {
            tx.commit().await?;
            info!(trial_id = %trial_id, attempt, worker_id = %worker_id, reason = %reason, "trial pruned");
            self.wakeups.work_queued();
            return Ok(HeartbeatAnswer::Stop(reason));
        }
        tx.commit().await?;
        if experiment.status != ExperimentStatus::Running {
            return Ok(HeartbeatAnswer::Stop(format!(
                "experiment {} is {}",
                experiment.id, experiment.status
            )));
        }
        tracing::debug!(
            trial_id = %trial_id,
            attempt,
            worker_id = %worker_id,
            epoch = progress.epoch,
            total_epochs = progress.total_epochs,
            train_loss = progress.train_loss,
            val_accuracy = progress.val_accuracy,
            "progress"
        );
        Ok(HeartbeatAnswer::Continue)
    }

    /// Records the validation accuracy an epoch report carries and applies early stopping: when
    /// the trial is clearly worse than its peers at this epoch it is recorded as pruned (its
    /// score the accuracy so far) and the reason is returned.
    async fn record_epoch(
        &self,
        conn: &mut dyn PoolTx,
        experiment: &ExperimentRow,
        trial: &TrialRow,
        total_epochs: u32,
        progress: &Progress,
        now: i64,
    ) -> Result<Option<String>, MasterError> {
        let val = progress.val_accuracy;
        if !(progress.started && progress.epoch >= 1 && (0.0..=1.0).contains(&val)) {
            return Ok(None);
        }
        let epoch = i64::from(progress.epoch);
        let loss = progress
            .train_loss
            .is_finite()
            .then_some(progress.train_loss);
        conn.record_epoch(&trial.id, epoch, val, loss, &progress.metrics)
            .await?;
        // A final trial is one of the search's chosen models trained longer: never pruned.
        if experiment.status != ExperimentStatus::Running || trial.is_final() {
            return Ok(None);
        }
        let spec = parse_spec(experiment)?;
        if !early_stop::may_stop(&spec.early_stopping, progress.epoch, total_epochs) {
            return Ok(None);
        }
        let peers = conn
            .peer_accuracies(&experiment.id, &trial.id, epoch)
            .await?;
        let Some(reason) = early_stop::should_stop(
            &spec.early_stopping,
            progress.epoch,
            total_epochs,
            val,
            &peers,
        ) else {
            return Ok(None);
        };
        let chain = chains::load(conn, &spec, &experiment.id, trial.chain).await?;
        conn.prune_trial(&trial.id, val, epoch, &reason, chain.temperature, now)
            .await?;
        self.metrics
            .trial_ended(TrialStatus::Pruned, trained_seconds(trial, now));
        let usage = self.budget_usage(conn, &spec, experiment, now).await?;
        let result = ChainResult {
            trial_id: &trial.id,
            score: val,
            accepted: false,
            progress: usage.progress(&spec, experiment, now),
        };
        chains::record(conn, &spec, chain, result).await?;
        self.refill_with(conn, experiment, now, Some(usage)).await?;
        Ok(Some(reason))
    }

    /// Records a trial's result. Idempotent on `(trial, attempt)`; a result from a superseded
    /// attempt is kept as history and not counted.
    pub async fn complete(
        &self,
        worker_id: &str,
        trial_id: &str,
        attempt: u32,
        result: TrialResult,
    ) -> Result<CompleteAnswer, MasterError> {
        let trial_id: TrialId = parse_arg(trial_id)?;
        let worker_id: WorkerId = parse_arg(worker_id)?;
        let (trial_id, worker_id) = (&trial_id, &worker_id);
        validate_result(&result)?;
        if let Some(sha) = &result.checkpoint_sha256 {
            if !self.artifacts.contains(sha).await? {
                return Err(MasterError::FailedPrecondition(format!(
                    "checkpoint {sha} was not uploaded"
                )));
            }
        }
        let _guard = self.write_lock.lock().await;
        let mut tx = self.store.begin().await?;
        self.check_worker(&mut *tx, worker_id).await?;
        let now = now_ms();
        tx.touch_worker(worker_id, now).await?;
        let trial = require_trial(&mut *tx, trial_id).await?;
        let status = trial.status;
        let current =
            trial.attempt == attempt as i64 && trial.worker_id.as_ref() == Some(worker_id);
        if status == TrialStatus::Completed && current {
            return Ok(CompleteAnswer {
                accepted: true,
                reason: "already recorded".into(),
            });
        }
        if !(current && status.is_held()) {
            let reason = format!(
                "attempt {attempt} of {trial_id} is not current (trial is {status}, attempt {})",
                trial.attempt
            );
            tx.insert_late_result(trial_id, attempt as i64, worker_id, &result, &reason, now)
                .await?;
            tx.commit().await?;
            warn!(trial_id = %trial_id, attempt, worker_id = %worker_id, "late result kept as history");
            return Ok(CompleteAnswer {
                accepted: false,
                reason,
            });
        }
        let experiment = experiment_of(&mut *tx, &trial).await?;
        if trial.kind()? == TrialKind::Probe {
            // A probe measures a model; it is never a model of the pool: no chain, no best.
            let result = TrialResult {
                epochs_run: 0,
                checkpoint_sha256: None,
                ..result
            };
            tx.complete_trial(trial_id, &result, false, 0.0, now)
                .await?;
            self.refill_experiment(&mut *tx, &experiment, now).await?;
            tx.commit().await?;
            info!(trial_id = %trial_id, attempt, worker_id = %worker_id, experiment_id = %experiment.id, metrics = ?result.metrics, "probe completed");
            self.wakeups.work_queued();
            return Ok(CompleteAnswer {
                accepted: true,
                reason: String::new(),
            });
        }
        let spec = parse_spec(&experiment)?;
        let chain = chains::load(&mut *tx, &spec, &experiment.id, trial.chain).await?;
        let temperature = chain.temperature;
        let parent_score = match &trial.parent_id {
            Some(p) => tx.get_trial(p).await?.and_then(|p| p.score),
            None => None,
        };
        // A final trial is not a step of the search: no Metropolis decision, no chain moves.
        let is_final = trial.is_final();
        let accepted = match parent_score {
            _ if is_final => true,
            Some(parent) => {
                let u: f64 =
                    annealing::rng_for(spec.seed, STREAM_ACCEPTANCE, trial.seq as u64).gen();
                annealing::metropolis_accept(parent, result.score, temperature, u)
            }
            // Seeds, and children whose parent has no score, are accepted.
            None => true,
        };
        let result = TrialResult {
            epochs_run: result
                .epochs_run
                .min(HyperParams::from_json(&trial.hparams_json)?.epochs),
            ..result
        };
        tx.complete_trial(trial_id, &result, accepted, temperature, now)
            .await?;
        self.metrics
            .trial_ended(TrialStatus::Completed, trained_seconds(&trial, now));
        // Read once for the chain's cooling and the refill below (nothing between changes them).
        let usage = self.budget_usage(&mut *tx, &spec, &experiment, now).await?;
        if !is_final {
            let chain_result = ChainResult {
                trial_id,
                score: result.score,
                accepted,
                progress: usage.progress(&spec, &experiment, now),
            };
            chains::record(&mut *tx, &spec, chain, chain_result).await?;
        }
        let best = match &experiment.best_trial_id {
            Some(b) => tx.get_trial(b).await?,
            None => None,
        };
        let standing = final_phase::Standing {
            is_final,
            score: Some(result.score),
        };
        let new_best =
            final_phase::outranks(standing, best.as_ref().map(final_phase::Standing::of));
        if new_best {
            tx.set_best_trial(&experiment.id, trial_id).await?;
        }
        self.refill_with(&mut *tx, &experiment, now, Some(usage))
            .await?;
        tx.commit().await?;
        info!(
            trial_id = %trial_id,
            attempt,
            worker_id = %worker_id,
            experiment_id = %experiment.id,
            score = result.score,
            accepted,
            temperature,
            new_best,
            "trial completed"
        );
        self.wakeups.work_queued();
        Ok(CompleteAnswer {
            accepted: true,
            reason: String::new(),
        })
    }

    /// Records that an attempt could not be trained; the trial fails with the reason.
    pub async fn fail(
        &self,
        worker_id: &str,
        trial_id: &str,
        attempt: u32,
        reason: &str,
    ) -> Result<(), MasterError> {
        let trial_id: TrialId = parse_arg(trial_id)?;
        let worker_id: WorkerId = parse_arg(worker_id)?;
        let (trial_id, worker_id) = (&trial_id, &worker_id);
        let reason: String = reason.chars().take(2000).collect();
        let _guard = self.write_lock.lock().await;
        let mut tx = self.store.begin().await?;
        self.check_worker(&mut *tx, worker_id).await?;
        let now = now_ms();
        let trial = require_trial(&mut *tx, trial_id).await?;
        let current =
            trial.attempt == attempt as i64 && trial.worker_id.as_ref() == Some(worker_id);
        if !(current && trial.status.is_held()) {
            return Ok(());
        }
        tx.end_trial(trial_id, TrialStatus::Failed, &reason, now)
            .await?;
        self.metrics
            .trial_ended(TrialStatus::Failed, trained_seconds(&trial, now));
        let experiment = experiment_of(&mut *tx, &trial).await?;
        self.refill_experiment(&mut *tx, &experiment, now).await?;
        tx.commit().await?;
        warn!(trial_id = %trial_id, worker_id = %worker_id, attempt, reason = %reason, "trial failed");
        self.wakeups.work_queued();
        Ok(())
    }

    /// A worker leaves: the trials it holds go back to the queue.
    pub async fn deregister(&self, worker_id: &str) -> Result<(), MasterError> {
        let worker_id: WorkerId = parse_arg(worker_id)?;
        let worker_id = &worker_id;
        let _guard = self.write_lock.lock().await;
        let mut tx = self.store.begin().await?;
        self.check_worker(&mut *tx, worker_id).await?;
        let now = now_ms();
        for trial in tx.trials_held_by(worker_id).await? {
            release_trial(&mut *tx, &trial, &format!("worker {worker_id} left"), now).await?;
        }
        tx.worker_left(worker_id).await?;
        tx.commit().await?;
        info!(worker_id = %worker_id, "worker deregistered");
        self.wakeups.work_queued();
        Ok(())
    }

    // ---- periodic maintenance -------------------------------------------------------------------

    /// Called once at start-up: the master's own downtime must not cost workers their leases,
    /// so every held trial gets a fresh lease period to be heartbeated or completed.
    pub async fn resume(&self) -> Result<(), MasterError> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.store.begin().await?;
        let deadline = now_ms() + self.config.lease.as_millis() as i64;
        let held = tx.extend_held_leases(deadline).await?;
        tx.commit().await?;
        if held > 0 {
            info!(
                held,
                "resumed: trials in flight keep their leases for one more period"
            );
        }
        Ok(())
    }

    /// Reclaims expired leases and applies budgets; called every second by the server.
    pub async fn tick(&self) -> Result<(), MasterError> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.store.begin().await?;
        let now = now_ms();
        let mut changed = false;
        for trial in tx.expired_leases(now).await? {
            changed = true;
            self.metrics.lease_expired();
            let worker = trial
                .worker_id
                .as_ref()
                .map_or_else(String::new, ToString::to_string);
            if trial.attempt < self.config.max_attempts as i64 {
                let requeued = release_trial(
                    &mut *tx,
                    &trial,
                    &format!(
                        "lease of attempt {} expired (worker {worker})",
                        trial.attempt
                    ),
                    now,
                )
                .await?;
                let outcome = if requeued { "requeued" } else { "cancelled" };
                warn!(trial_id = %trial.id, attempt = trial.attempt, worker_id = %worker, outcome, "lease expired");
            } else {
                let reason = format!("lease expired {} times", trial.attempt);
                tx.end_trial(&trial.id, TrialStatus::Failed, &reason, now)
                    .await?;
                warn!(trial_id = %trial.id, worker_id = %worker, "lease expired too often, trial failed");
            }
        }
        for row in tx.running_experiments().await? {
            changed |= self.refill_experiment(&mut *tx, &row, now).await?;
        }
        tx.commit().await?;
        // Wake long-polls only when there may be something new for them.
        if changed {
            self.wakeups.work_queued();
        }
        Ok(())
    }

    /// Ends the experiment if its budget is spent, else keeps a trial queued for every connected
    /// worker slot (never more than the budget allows). Returns whether anything changed.
    async fn refill_experiment(
        &self,
        conn: &mut dyn PoolTx,
        row: &ExperimentRow,
        now: i64,
    ) -> Result<bool, MasterError> {
        self.refill_with(conn, row, now, None).await
    }

    /// [`Self::refill_experiment`] with the experiment's [`BudgetUsage`] when the caller has
    /// already read it in this transaction (`None`: read it here).
    async fn refill_with(
        &self,
        conn: &mut dyn PoolTx,
        row: &ExperimentRow,
        now: i64,
        usage: Option<BudgetUsage>,
    ) -> Result<bool, MasterError> {
        if !row.is_running() {
            return Ok(false);
        }
        let spec = parse_spec(row)?;
        if row.in_final_phase() {
            return self.refill_final(conn, row, &spec, now).await;
        }
        let budget = &spec.budget;
        // The search's share of the trial and epoch budgets: `[final]` reserves the rest.
        let max_trials = search_trials(&spec);
        let usage = match usage {
            Some(usage) => usage,
            None => self.budget_usage(conn, &spec, row, now).await?,
        };
        let mut counts = usage.counts;
        if counts.finished() >= max_trials {
            let cancelled = conn.cancel_queued(&row.id, "budget reached", now).await?;
            // The final phase chooses among all the search's results, so it would wait for
            // trials still in flight (a guard: with `budgeted() <= max_trials` there are none).
            if spec.final_training.is_some() && counts.in_flight() > 0 {
                return Ok(cancelled > 0);
            }
            info!(experiment_id = %row.id, trials = counts.finished(), "trial budget reached");
            self.search_over(conn, row, &spec, "trial budget reached", now)
                .await?;
            return Ok(true);
        }
        if let Some(limit) = failures::limit_reached(budget, &counts) {
            conn.cancel_queued(&row.id, "experiment failed", now)
                .await?;
            let first = conn
                .list_trials_page(&row.id, None, Some(TrialStatus::Failed), 1)
                .await?;
            let first_error = first.first().map(|t| t.error.as_str());
            let reason = failures::with_first_error(&limit, first_error);
            conn.finish_experiment(&row.id, ExperimentStatus::Failed, &reason, now)
                .await?;
            warn!(experiment_id = %row.id, reason = %reason, "experiment failed");
            return Ok(true);
        }
        if let Some(wall) = usage.wall.filter(|w| w.spent(row, now)) {
            let cancelled = conn
                .cancel_queued(&row.id, "wall-time budget reached", now)
                .await?;
            if counts.in_flight() == 0 {
                let reason = wall.reason();
                info!(experiment_id = %row.id, trials = counts.finished(), reason = %reason, "wall-time budget reached");
                self.search_over(conn, row, &spec, &reason, now).await?;
                return Ok(true);
            }
            return Ok(cancelled > 0);
        }
        let mut remaining_epochs = match (search_epochs(&spec), &usage.epochs) {
            (Some(max), Some(epochs)) => Some(max.saturating_sub(epochs.committed)),
            _ => None,
        };
        if remaining_epochs == Some(0) {
            if counts.queued == 0 && counts.in_flight() == 0 {
                info!(experiment_id = %row.id, trials = counts.finished(), "epoch budget reached");
                self.search_over(conn, row, &spec, "epoch budget reached", now)
                    .await?;
                return Ok(true);
            }
            return Ok(false);
        }
        // A probing transfer experiment ranks its fine-tunes by the probes' results.
        if transfer::probes(&spec) && transfer::probes_pending(conn, &row.id).await? {
            return Ok(false);
        }
        let since = self.connected_since(now);
        let slots = conn.connected_slots(since).await?;
        let target_queued = slots.max(1);
        let mut changed = false;
        // One call adds at most `MAX_PROPOSALS_PER_REFILL` trials, so a thousand workers joining
        // at once do not hold the writer lock for a thousand proposals: the next calls and ticks
        // top the queue up the rest of the way.
        let mut proposed = 0;
        let mut shared = RefillShared {
            spec: &spec,
            connected_slots: slots,
            now,
            predictor: None,
        };
        while counts.queued < target_queued
            && proposed < MAX_PROPOSALS_PER_REFILL
            && counts.budgeted() < max_trials
            && remaining_epochs != Some(0)
        {
            match self.propose(conn, row, &mut shared, remaining_epochs).await {
                Ok(Ok(epochs)) => {
                    counts.queued += 1;
                    proposed += 1;
                    changed = true;
                    if let Some(left) = remaining_epochs.as_mut() {
                        *left = left.saturating_sub(u64::from(epochs));
                    }
                }
                Ok(Err(exhausted)) => {
                    // Only a result can add a base to the pool: with nothing queued or in
                    // flight none will come, so the search space is exhausted for good.
                    if counts.queued == 0 && counts.in_flight() == 0 {
                        info!(experiment_id = %row.id, trials = counts.finished(), reason = %exhausted, "search over");
                        self.search_over(conn, row, &spec, &exhausted.to_string(), now)
                            .await?;
                        changed = true;
                    } else {
                        info!(experiment_id = %row.id, reason = %exhausted, "no proposal until more results come in");
                    }
                    break;
                }
                Err(e) => {
                    warn!(experiment_id = %row.id, error = %e, "no proposal this round");
                    // A proposal depends only on the pool; with nothing queued or in flight the
                    // pool cannot change, so no later round can do better: the search is over.
                    let permanent = !matches!(e, MasterError::Store(_) | MasterError::Io { .. });
                    if permanent && counts.queued == 0 && counts.in_flight() == 0 {
                        let reason = format!("no new proposal: {e}");
                        info!(experiment_id = %row.id, trials = counts.finished(), reason = %reason, "search over");
                        self.search_over(conn, row, &spec, &reason, now).await?;
                        changed = true;
                    }
                    break;
                }
            }
        }
        Ok(changed)
    }

    /// Inserts the next trial: a seed while seeds remain, else an annealing proposal from the
    /// least-loaded chain (falling back to other bases when that chain's model has no untried
    /// child, see [`proposals`]). Returns the trial's planned epochs (cut to
    /// `remaining_epochs`), or that no base of the pool yielded an untried candidate.
    async fn propose(
        &self,
        conn: &mut dyn PoolTx,
        row: &ExperimentRow,
        shared: &mut RefillShared<'_>,
        remaining_epochs: Option<u64>,
    ) -> Result<Result<u32, proposals::Exhausted>, MasterError> {
        let (spec, connected_slots, now) = (shared.spec, shared.connected_slots, shared.now);
        let seq = conn.next_seq(&row.id).await?;
        let seeds = spec.resolve_seeds(None)?;
        let trial_seed =
            db_seed(annealing::rng_for(spec.seed, STREAM_TRIAL_SEED, seq as u64).gen());
        let chain_count = chains::chain_count(spec, connected_slots);
        // A probing transfer experiment queues its seeds best-predicted first (S2); the others in
        // index order, seed `seq` at `seq`.
        let seed_choice = if (seq as usize) >= seeds.len() {
            None
        } else if transfer::probes(spec) {
            transfer::choose_seed(conn, spec, &row.id, &seeds, remaining_epochs).await?
        } else {
            Some(transfer::SeedChoice {
                index: seq as usize,
                prediction: None,
                note: String::new(),
            })
        };
        let is_seed = seed_choice.is_some();
        let chain_index = if is_seed {
            seq % i64::from(chain_count)
        } else {
            chains::least_loaded(conn, &row.id, chain_count).await?
        };
        let chain = chains::load_or_create(conn, spec, &row.id, chain_index).await?;
        let cap_epochs = |hp: &mut HyperParams| {
            if let Some(left) = remaining_epochs {
                hp.epochs = hp.epochs.min(left.min(u64::from(u32::MAX)) as u32).max(1);
            }
        };
        let mut search_prediction = None;
        let (parent_id, origin, genome, hparams, inherit_from) = if let Some(choice) = &seed_choice
        {
            let seed = &seeds[choice.index];
            let mut hparams = seed.hparams.clone();
            cap_epochs(&mut hparams);
            let inherit_from = seed.inherit_from.clone();
            let origin = if choice.note.is_empty() {
                seed.label.clone()
            } else {
                format!("{}; {}", seed.label, choice.note)
            };
            (None, origin, seed.genome.clone(), hparams, inherit_from)
        } else {
            let mut rng = annealing::rng_for(spec.seed, STREAM_PROPOSAL, seq as u64);
            let base = self
                .base_for(conn, row, seeds.len(), &chain, &mut rng)
                .await?;
            if shared.predictor.is_none() {
                shared.predictor = Some(proposals::search_predictor(conn, spec, &row.id).await?);
            }
            let search = proposals::Search {
                spec,
                experiment_id: &row.id,
                artifacts: &self.artifacts,
                remaining_epochs,
                seq,
                seed_count: seeds.len(),
                predictor: shared.predictor.as_ref().and_then(Option::as_ref),
            };
            let p = match search.find(conn, &chain, base, &mut rng).await? {
                Ok(p) => p,
                Err(exhausted) => return Ok(Err(exhausted)),
            };
            let origin = if p.inherit_from.is_some() {
                format!("{} (inherits weights)", p.description)
            } else {
                p.description
            };
            search_prediction = p.prediction.map(|f| (f.mean, f.std));
            (Some(p.base.id), origin, p.genome, p.hparams, p.inherit_from)
        };
        // Mutations respect the constraints already; this guards every path into the queue.
        spec.search.check_constraints(&genome)?;
        let analysis = genome
            .analyze()
            .map_err(explore_common::CommonError::from)?;
        let epochs = hparams.epochs;
        let trial = NewTrial {
            id: TrialId::generate(),
            experiment_id: row.id.clone(),
            seq,
            parent_id,
            origin,
            genome_json: genome.canonical_json(),
            genome_hash: genome.canonical_hash(),
            hparams_json: hparams.to_json(),
            params: analysis.params as i64,
            flops: analysis.flops as i64,
            seed: trial_seed,
            temperature: chain.temperature,
            chain: chain_index,
            inherit_from,
            kind: TrialKind::Train,
            seed_index: seed_choice
                .as_ref()
                .filter(|_| transfer::probes(spec))
                .map(|c| c.index as i64),
            prediction: seed_choice
                .as_ref()
                .and_then(|c| c.prediction)
                .or(search_prediction),
        };
        // `load_or_create` above saved the chain if it was new.
        conn.insert_trial(&trial, now).await?;
        tracing::debug!(trial_id = %trial.id, seq, chain = chain_index, origin = %trial.origin, "trial proposed");
        Ok(Ok(epochs))
    }

    /// The model a chain's next proposal mutates: the chain's current model; without one, a
    /// Boltzmann draw (at the chain's temperature) over every accepted trial of the pool; before
    /// anything is scored, one of the seed trials.
    async fn base_for(
        &self,
        conn: &mut dyn PoolTx,
        row: &ExperimentRow,
        seed_count: usize,
        chain: &ChainRow,
        rng: &mut impl Rng,
    ) -> Result<TrialRow, MasterError> {
        if let Some(id) = &chain.current_trial_id {
            if let Some(current) = conn.get_trial(id).await? {
                if current.status == TrialStatus::Completed && current.score.is_some() {
                    return Ok(current);
                }
            }
        }
        // The best accepted trials by score (all of them in a pool of up to
        // `store::BASE_CANDIDATES`), read through an index: the draw costs the same in a pool of
        // any size.
        let candidates = conn.base_candidates(&row.id).await?;
        if candidates.is_empty() {
            let seed_trials = conn.train_trials_below(&row.id, seed_count as i64).await?;
            if seed_trials.is_empty() {
                return Err(MasterError::Internal("no seed trial to mutate".into()));
            }
            return Ok(seed_trials[rng.gen_range(0..seed_trials.len())].clone());
        }
        let scores: Vec<f64> = candidates.iter().map(|c| c.2).collect();
        let index = annealing::draw_base(&scores, chain.temperature, rng)
            .ok_or_else(|| MasterError::Internal("no scored base model".into()))?;
        require_trial(conn, &candidates[index].0).await
    }
}

/// Seconds from a trial's first lease to `now`.
fn trained_seconds(trial: &TrialRow, now: i64) -> f64 {
    trial
        .started_at_ms
        .map_or(0.0, |start| (now - start).max(0) as f64 / 1000.0)
}

/// The trial with this id, or `NotFound`.
async fn require_trial(conn: &mut dyn PoolTx, trial_id: &TrialId) -> Result<TrialRow, MasterError> {
    conn.get_trial(trial_id)
        .await?
        .ok_or_else(|| MasterError::NotFound(format!("trial {trial_id}")))
}

/// The experiment a trial belongs to (the foreign key guarantees it exists).
async fn experiment_of(
    conn: &mut dyn PoolTx,
    trial: &TrialRow,
) -> Result<ExperimentRow, MasterError> {
    conn.get_experiment(&trial.experiment_id)
        .await?
        .ok_or_else(|| MasterError::Internal(format!("trial {} without experiment", trial.id)))
}

/// Puts a held trial back in the queue as a new attempt, or cancels it when its experiment has
/// ended: nothing leases a finished experiment's trials, so a requeued one would stay queued
/// forever.
async fn release_trial(
    conn: &mut dyn PoolTx,
    trial: &TrialRow,
    reason: &str,
    now: i64,
) -> Result<bool, MasterError> {
    let running = conn
        .get_experiment(&trial.experiment_id)
        .await?
        .is_some_and(|e| e.status == ExperimentStatus::Running);
    if running {
        conn.requeue_trial(&trial.id, reason).await?;
    } else {
        conn.end_trial(
            &trial.id,
            TrialStatus::Cancelled,
            &format!("{reason} after the experiment ended"),
            now,
        )
        .await?;
    }
    Ok(running)
}

/// Parses an id a client sent (a worker's, a trial's): a malformed one is an invalid argument.
pub(crate) fn parse_arg<T>(text: &str) -> Result<T, MasterError>
where
    T: FromStr<Err = CommonError>,
{
    text.parse()
        .map_err(|e: CommonError| MasterError::InvalidArgument(e.to_string()))
}

/// Parses the id of something a client looks up (`what`: "experiment", "trial"): a malformed
/// id names nothing, so it is not found, as an unknown one is.
pub(crate) fn lookup_id<T: FromStr>(text: &str, what: &str) -> Result<T, MasterError> {
    text.parse()
        .map_err(|_| MasterError::NotFound(format!("{what} {text}")))
}

/// Checks the named metrics of an epoch report: at most [`MAX_EPOCH_METRICS`] of them, names of
/// 1 to [`MAX_EPOCH_METRIC_NAME`] characters of `[a-z0-9_.]`, finite values. The error names
/// the offending metric.
pub fn validate_epoch_metrics(metrics: &BTreeMap<String, f64>) -> Result<(), MasterError> {
    if metrics.len() > MAX_EPOCH_METRICS {
        return Err(MasterError::InvalidArgument(format!(
            "at most {MAX_EPOCH_METRICS} epoch metrics, got {}",
            metrics.len()
        )));
    }
    for (name, value) in metrics {
        let well_formed = !name.is_empty()
            && name.len() <= MAX_EPOCH_METRIC_NAME
            && name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.'));
        if !well_formed {
            // Debug formatting escapes control characters, and a long name is cut.
            let shown: String = name.chars().take(MAX_EPOCH_METRIC_NAME + 1).collect();
            return Err(MasterError::InvalidArgument(format!(
                "epoch metric {shown:?}: a name must be 1 to {MAX_EPOCH_METRIC_NAME} characters of a-z, 0-9, '_' and '.'"
            )));
        }
        if !value.is_finite() {
            return Err(MasterError::InvalidArgument(format!(
                "epoch metric {name:?} = {value}: values must be finite"
            )));
        }
    }
    Ok(())
}

fn validate_result(result: &TrialResult) -> Result<(), MasterError> {
    if !result.score.is_finite() || !(0.0..=1.0).contains(&result.score) {
        return Err(MasterError::InvalidArgument(format!(
            "score must be a finite accuracy in [0, 1], got {}",
            result.score
        )));
    }
    if result.metrics.len() > 64 {
        return Err(MasterError::InvalidArgument("at most 64 metrics".into()));
    }
    for (name, value) in &result.metrics {
        if name.is_empty() || name.len() > 64 || !value.is_finite() {
            return Err(MasterError::InvalidArgument(format!(
                "metric {name:?} = {value} is not allowed"
            )));
        }
    }
    Ok(())
}

/// What the proposals of one refill share.
struct RefillShared<'a> {
    spec: &'a ExperimentSpec,
    /// Worker slots connected now (sets the number of annealing chains).
    connected_slots: u32,
    now: i64,
    /// The search predictor, fitted at the first proposal that needs it: it learns from
    /// completed trials, which no proposal changes, so one fit serves the whole refill.
    predictor: Option<Option<Predictor<SearchFeatures>>>,
}
