//! The store contract's one list of operations, and the macros that turn it into the
//! [`PoolTx`](super::PoolTx) trait and into each backend's implementation of it.
//!
//! A new operation is one line here (with its doc comment) plus one function of the same name
//! and parameters in each backend (`sqlite/`, `postgres/`), taking that backend's connection
//! first. Everything else follows: the trait method, both delegations and the compile-time check
//! that the two backends agree.
//!
//! Operations take and return domain types: ids (`ExperimentId`, `TrialId`, `WorkerId`) and
//! status enums, never their text. Backends bind an id as its text and decode rows once, at the
//! row boundary ([`Column`](super::Column)): a malformed id or status in the database is a
//! store error naming the column and the value.

/// The types the operations take and return, for the modules that expand the contract.
#[allow(unused_imports)] // each backend uses its own share
pub(crate) mod types {
    pub use std::collections::{BTreeMap, HashMap};

    pub use explore_common::ids::{ExperimentId, TrialId, WorkerId};

    pub use crate::error::MasterError;
    pub use crate::store::reads::{
        BestPoint, StatusTally, TemperaturePoint, TrialFilter, TrialPage, TrialSort, WorkerRow,
    };
    pub use crate::store::{
        ChainRow, EpochRow, EpochUsage, ExperimentRow, ExperimentStatus, NewTrial,
        PredictorHistoryRow, TrialCounts, TrialResult, TrialRow, TrialStatus,
    };
}

/// Calls `$callback! { { $args } <every operation> }`, each operation written as
/// `/// doc` `fn name(arg: Type, ...) -> Returned;` (the `Result<_, MasterError>` and the
/// connection are implied).
macro_rules! store_operations {
    ($callback:ident ! { $($args:tt)* }) => {
        $callback! { { $($args)* }
        /// Inserts a new running experiment.
        fn insert_experiment(id: &ExperimentId, name: &str, spec_json: &str, now_ms: i64) -> ();
        /// The experiment with this id, if any.
        fn get_experiment(id: &ExperimentId) -> Option<ExperimentRow>;
        /// All experiments, newest first.
        fn list_experiments() -> Vec<ExperimentRow>;
        /// Experiments still running, oldest first.
        fn running_experiments() -> Vec<ExperimentRow>;
        /// Marks an experiment finished.
        fn finish_experiment(id: &ExperimentId, status: ExperimentStatus, reason: &str, now_ms: i64) -> ();
        /// Marks a running experiment stopped at `now_ms` (see [`ExperimentStatus::Stopped`]); a no-op
        /// on one already stopped.
        fn stop_experiment(id: &ExperimentId, reason: &str, now_ms: i64) -> ();
        /// Lets a stopped experiment run again; the time it was stopped is added to `paused_ms`.
        fn resume_experiment(id: &ExperimentId, now_ms: i64) -> ();
        /// The trials of an experiment that workers hold now (leased or running).
        fn held_trials_of(experiment_id: &ExperimentId) -> Vec<TrialRow>;
        /// Records the experiment's best trial.
        fn set_best_trial(experiment_id: &ExperimentId, trial_id: &TrialId) -> ();
        /// Inserts a queued trial.
        fn insert_trial(t: &NewTrial, now_ms: i64) -> ();
        /// The trial with this id, if any.
        fn get_trial(id: &TrialId) -> Option<TrialRow>;
        /// All trials of an experiment, probes included, in proposal order (probes first).
        fn list_trials(experiment_id: &ExperimentId) -> Vec<TrialRow>;
        /// The training trials of an experiment (its pool: no probes), in proposal order.
        fn list_train_trials(experiment_id: &ExperimentId) -> Vec<TrialRow>;
        /// The probe trials of an experiment, in the order they were queued (their seqs are −1, −2,
        /// …, so by descending seq).
        fn list_probes(experiment_id: &ExperimentId) -> Vec<TrialRow>;
        /// The seed indices an experiment's trials were queued for (transfer experiments record them).
        fn queued_seed_indices(experiment_id: &ExperimentId) -> Vec<i64>;
        /// Every completed fine-tune of a transfer seed in the pool, across experiments, with the
        /// metrics of the probe that measured its source model on the same task: the history the
        /// learned predictor of S2 is fitted on. Pairs of `(fine-tune, probe metrics JSON)`.
        fn fine_tune_history() -> Vec<(TrialRow, String)>;
        /// Completed trials of an experiment that the Metropolis rule accepted: the states annealing
        /// draws base models from.
        fn accepted_trials(experiment_id: &ExperimentId) -> Vec<TrialRow>;
        /// `(id, seq, score)` of the experiment's best [`BASE_CANDIDATES`] accepted trials by score
        /// (index `trials_accepted_by_score`), in proposal order.
        fn base_candidates(experiment_id: &ExperimentId) -> Vec<(TrialId, i64, f64)>;
        /// The experiment's training trials with `seq < below` (its seed trials), in proposal order.
        fn train_trials_below(experiment_id: &ExperimentId, below: i64) -> Vec<TrialRow>;
        /// One page of an experiment's trials in seq order: those after `after_seq` (all when None),
        /// with `status` when given, at most `limit`.
        fn list_trials_page(experiment_id: &ExperimentId, after_seq: Option<i64>, status: Option<TrialStatus>, limit: u32) -> Vec<TrialRow>;
        /// The named metrics of a trial's last recorded epoch (up to its current epoch count, as
        /// [`last_epoch_metrics`]), empty when none.
        fn trial_epoch_metrics(trial: &TrialRow) -> BTreeMap<String, f64>;
        /// [`trial_epoch_metrics`] for several trials in one query (a page of a listing); trials whose
        /// last recorded epoch has no metrics are absent.
        fn trials_epoch_metrics(trials: &[TrialRow]) -> HashMap<TrialId, BTreeMap<String, f64>>;
        /// Counts an experiment's training trials by status (probes are counted by [`probe_counts`]).
        fn trial_counts(experiment_id: &ExperimentId) -> TrialCounts;
        /// Counts an experiment's probe trials by status.
        fn probe_counts(experiment_id: &ExperimentId) -> TrialCounts;
        /// The next sequence number of an experiment.
        fn next_seq(experiment_id: &ExperimentId) -> i64;
        /// Whether the experiment already has a trial with this architecture and these hyperparameters.
        fn candidate_exists(experiment_id: &ExperimentId, genome_hash: &str, hparams_json: &str) -> bool;
        /// Leases the oldest queued trial of the oldest running experiment to `worker_id`.
        fn lease_next_trial(worker_id: &WorkerId, now_ms: i64, lease_ms: i64) -> Option<TrialRow>;
        /// Whether leasing one more trial to `worker_id` would be a prefetch that starves another
        /// worker: `worker_id` already holds a trial for each of its slots, and the runnable queue has
        /// no more trials than the free slots of the other live workers (seen since `since_ms`), so
        /// every queued trial has an idle slot waiting for it elsewhere. (The end of a search and a
        /// final phase queue only a few trials; without this, one worker's prefetch could take a
        /// trial that another worker's idle slot would have started at once.) False when nothing
        /// is queued: a refusal therefore means trials are waiting for other workers.
        fn prefetch_would_starve(worker_id: &WorkerId, since_ms: i64) -> bool;
        /// Extends the lease of a held trial and records progress; false when `(worker, attempt)` no
        /// longer holds it.
        fn heartbeat_trial(trial_id: &TrialId, worker_id: &WorkerId, attempt: i64, epoch: i64, started: bool, deadline_ms: i64) -> bool;
        /// Records a completed trial.
        fn complete_trial(trial_id: &TrialId, result: &TrialResult, accepted: bool, temperature: f64, now_ms: i64) -> ();
        /// Records a trial that early stopping ended after `epoch` epochs with validation accuracy
        /// `score`; it is never a base for proposals.
        fn prune_trial(trial_id: &TrialId, score: f64, epoch: i64, reason: &str, temperature: f64, now_ms: i64) -> ();
        /// Records the validation accuracy a trial reached after `epoch`, with the objective's named
        /// metrics of that epoch (stored as NULL when there are none). A repeated report, e.g. from a
        /// retried heartbeat or a new attempt, replaces the old one.
        fn record_epoch(trial_id: &TrialId, epoch: i64, val_accuracy: f64, train_loss: Option<f64>, metrics: &BTreeMap<String, f64>) -> ();
        /// A trial's epoch curve in epoch order.
        fn epoch_curve(trial_id: &TrialId) -> Vec<EpochRow>;
        /// Per trial of an experiment, the named metrics of its last recorded epoch (the highest one up
        /// to the trial's current epoch count, so a requeued trial does not show what an abandoned
        /// attempt got further with). Trials whose last epoch has no metrics are absent.
        fn last_epoch_metrics(experiment_id: &ExperimentId) -> HashMap<TrialId, BTreeMap<String, f64>>;
        /// Validation accuracies that the experiment's other trials reported after `epoch`.
        fn peer_accuracies(experiment_id: &ExperimentId, trial_id: &TrialId, epoch: i64) -> Vec<f64>;
        /// How many training epochs the experiment has spent and committed (see [`EpochUsage`]).
        fn epoch_usage(experiment_id: &ExperimentId) -> EpochUsage;
        /// Per chain: `(chain, queued and held trials, all trials)` of an experiment.
        fn chain_loads(experiment_id: &ExperimentId) -> Vec<(i64, i64, i64)>;
        /// The state of one annealing chain, if it has been created.
        fn get_chain(experiment_id: &ExperimentId, chain: i64) -> Option<ChainRow>;
        /// Every chain of an experiment, by index.
        fn list_chains(experiment_id: &ExperimentId) -> Vec<ChainRow>;
        /// Inserts or replaces a chain's state.
        fn save_chain(c: &ChainRow) -> ();
        /// Marks a trial failed (or cancelled) with a reason.
        fn end_trial(trial_id: &TrialId, status: TrialStatus, error: &str, now_ms: i64) -> ();
        /// Puts a held trial back in the queue as a new attempt.
        fn requeue_trial(trial_id: &TrialId, error: &str) -> ();
        /// Cancels every queued trial of an experiment.
        fn cancel_queued(experiment_id: &ExperimentId, reason: &str, now_ms: i64) -> u64;
        /// Held trials whose lease ran out before `now_ms`.
        fn expired_leases(now_ms: i64) -> Vec<TrialRow>;
        /// Gives every held trial at least until `deadline_ms`: after a master restart, workers get a
        /// full lease period to reconnect before their trials are taken back.
        fn extend_held_leases(deadline_ms: i64) -> u64;
        /// Trials a worker holds.
        fn trials_held_by(worker_id: &WorkerId) -> Vec<TrialRow>;
        /// Keeps a result that arrived for a superseded attempt, as history.
        fn insert_late_result(trial_id: &TrialId, attempt: i64, worker_id: &WorkerId, result: &TrialResult, reason: &str, now_ms: i64) -> ();
        /// Registers a worker.
        fn insert_worker(id: &WorkerId, name: &str, device: &str, slots: u32, now_ms: i64) -> ();
        /// Whether a worker with this id is registered and has not left.
        fn worker_is_active(id: &WorkerId) -> bool;
        /// Records that a worker was seen now.
        fn touch_worker(id: &WorkerId, now_ms: i64) -> ();
        /// Marks a worker as gone.
        fn worker_left(id: &WorkerId) -> ();
        /// Training slots of the workers seen since `since_ms`.
        fn connected_slots(since_ms: i64) -> u32;
        /// The experiment's most recent `limit` completed training trials with a score, newest first,
        /// each with its parent's score: a bounded read (the `(status, experiment_id, seq)` index,
        /// walked backwards), whatever the pool's size.
        fn recent_completed_for_predictor(experiment_id: &ExperimentId, limit: i64) -> Vec<PredictorHistoryRow>;
        /// A page of trials matching `filter`, ordered by `sort` (ties by seq; unscored trials last
        /// when sorting by score).
        fn query_trials(experiment_id: &ExperimentId, filter: &TrialFilter, sort: TrialSort, descending: bool, offset: u64, limit: u32) -> TrialPage;
        /// The ancestors of a trial, from its parent back to its seed (at most [`MAX_LINEAGE`]).
        fn lineage(trial_id: &TrialId) -> Vec<TrialRow>;
        /// The `limit` best-scored training trials of an experiment and all their ancestors (each
        /// once), in seq order.
        fn genealogy(experiment_id: &ExperimentId, limit: u32) -> Vec<TrialRow>;
        /// The best-so-far curve as its improvements, in finishing order, and how many training
        /// trials have finished in all.
        fn best_curve(experiment_id: &ExperimentId) -> (Vec<BestPoint>, i64);
        /// Chains' temperatures by trial, thinned evenly by seq to at most `max_points`.
        fn temperature_history(experiment_id: &ExperimentId, max_points: u32) -> Vec<TemperaturePoint>;
        /// Workers, active ones first, then by when they were last seen (at most `limit`).
        fn workers(limit: u32) -> Vec<WorkerRow>;
        /// Every trial a worker holds now (leased or running), in any experiment.
        fn held_trials() -> Vec<TrialRow>;
        /// Trial counts by experiment and status, from the trigger-kept tallies (training trials and
        /// probes together).
        fn status_tallies() -> Vec<StatusTally>;
        /// Workers registered and seen since `since_ms`, and their slots.
        fn connected(since_ms: i64) -> (u64, u64);
        /// The experiment's `k` best distinct architectures: for each genome hash its best completed
        /// search trial (by validation score, then lower seq), the best `k` of those, best first.
        /// Pruned trials (partial scores), probes and final trials are left out. Read once, when the
        /// final phase begins; it walks the experiment's completed trials.
        fn best_distinct(experiment_id: &ExperimentId, k: u32) -> Vec<TrialRow>;
        /// Every final trial of an experiment (cancelled ones included), in seq order: a handful of
        /// rows, read through the partial index `trials_final`.
        fn final_trials(experiment_id: &ExperimentId) -> Vec<TrialRow>;
        /// Marks a trial as a final trial.
        fn mark_final(trial_id: &TrialId) -> ();
        /// Records that the experiment's search ended for `reason` and its final phase has begun.
        fn begin_final_phase(experiment_id: &ExperimentId, reason: &str) -> ();
        /// Sets a running experiment's status message (a no-op when it already says so).
        fn set_status_reason(experiment_id: &ExperimentId, reason: &str) -> bool;

        /// Checks that the database answers (readiness).
        fn ping() -> ();
        }
    };
}

/// Implements [`PoolTx`](super::PoolTx) for `$tx` by calling, for each operation, the function
/// of the same name in module `$ops` with `self.connection()` first. `$tx` provides
/// `fn connection(&mut self) -> &mut Connection` and `async fn finish(self) -> Result<(), MasterError>`.
macro_rules! delegate_pool_tx {
    ({ $tx:ty, $ops:ident }
     $( $(#[$doc:meta])* fn $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty ; )*) => {
        #[async_trait::async_trait]
        impl $crate::store::PoolTx for $tx {
            $(
                async fn $name(&mut self, $($arg: $ty),*) -> Result<$ret, MasterError> {
                    $ops::$name(self.connection(), $($arg),*).await
                }
            )*

            async fn commit(self: Box<Self>) -> Result<(), MasterError> {
                (*self).finish().await
            }

            fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
                self
            }
        }
    };
}
