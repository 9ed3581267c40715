//! `master stop` and `master resume`: an experiment stops proposing and leasing trials, and
//! later runs again where it stopped.

use explore_common::{ExperimentId, TrialId};
use tracing::info;

use super::{lookup_id, now_ms, trained_seconds, Scheduler};
use crate::error::MasterError;
use crate::store::reads::{TrialFilter, TrialSort};
use crate::store::{ExperimentStatus, TrialStatus};

/// Why the trials a `stop --now` cancelled ended; the pool keeps it as their error.
pub const CANCELLED_BY_STOP: &str = "cancelled: experiment stopped with --now";

/// What a stop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// Queued trials cancelled (they had not started).
    pub cancelled_queued: u64,
    /// Held trials cancelled (`now` only); their workers are told to stop at the next
    /// heartbeat.
    pub cancelled_held: u64,
    /// Held trials left to finish (without `now`).
    pub finishing: u64,
    /// The ids of the queued trials cancelled, in seq order.
    pub cancelled_queued_ids: Vec<TrialId>,
    /// The ids of the held trials cancelled (`now` only), in seq order.
    pub cancelled_held_ids: Vec<TrialId>,
    /// The ids of the held trials left to finish (without `now`), in seq order.
    pub finishing_ids: Vec<TrialId>,
}

impl Scheduler {
    /// Stops a running experiment: nothing new is proposed or leased, its queued trials are
    /// cancelled, and the trials workers hold finish — or, with `now`, are cancelled too.
    /// Stopping a stopped experiment again is allowed (with `now`, it cancels what still runs).
    pub async fn stop_experiment(
        &self,
        experiment_id: &str,
        now: bool,
    ) -> Result<StopOutcome, MasterError> {
        let experiment_id: ExperimentId = lookup_id(experiment_id, "experiment")?;
        let experiment_id = &experiment_id;
        let _guard = self.write_lock.lock().await;
        let mut tx = self.store.begin().await?;
        let row = tx
            .get_experiment(experiment_id)
            .await?
            .ok_or_else(|| MasterError::NotFound(format!("experiment {experiment_id}")))?;
        let lifecycle = row.lifecycle();
        if !matches!(
            lifecycle,
            ExperimentStatus::Running | ExperimentStatus::Stopped
        ) {
            return Err(MasterError::FailedPrecondition(format!(
                "experiment {experiment_id} is {} and cannot be stopped",
                lifecycle.as_str()
            )));
        }
        let at = now_ms();
        // The queue holds a few trials per slot; read their ids before cancelling them.
        let queued = TrialFilter {
            status: Some(TrialStatus::Queued),
            ..TrialFilter::default()
        };
        let queued = tx
            .query_trials(experiment_id, &queued, TrialSort::Seq, false, 0, u32::MAX)
            .await?;
        let mut outcome = StopOutcome {
            cancelled_queued: tx
                .cancel_queued(experiment_id, "experiment stopped", at)
                .await?,
            cancelled_queued_ids: queued.trials.into_iter().map(|t| t.id).collect(),
            ..StopOutcome::default()
        };
        let held = tx.held_trials_of(experiment_id).await?;
        let held_ids = held.iter().map(|t| t.id.clone()).collect();
        if now {
            for trial in &held {
                tx.end_trial(&trial.id, TrialStatus::Cancelled, CANCELLED_BY_STOP, at)
                    .await?;
                self.metrics
                    .trial_ended(TrialStatus::Cancelled, trained_seconds(trial, at));
            }
            outcome.cancelled_held = held.len() as u64;
            outcome.cancelled_held_ids = held_ids;
        } else {
            outcome.finishing = held.len() as u64;
            outcome.finishing_ids = held_ids;
        }
        let reason = if now {
            "stopped with --now".to_string()
        } else {
            "stopped".to_string()
        };
        tx.stop_experiment(experiment_id, &reason, at).await?;
        tx.commit().await?;
        info!(
            experiment_id = %experiment_id,
            now,
            cancelled_queued = outcome.cancelled_queued,
            cancelled_held = outcome.cancelled_held,
            finishing = outcome.finishing,
            cancelled_held_ids = ?outcome.cancelled_held_ids,
            "experiment stopped"
        );
        Ok(outcome)
    }

    /// Lets a stopped experiment run again: the queue is refilled and waiting workers woken.
    /// The time it was stopped does not count against its wall-time budget.
    pub async fn resume_experiment(&self, experiment_id: &str) -> Result<(), MasterError> {
        let experiment_id: ExperimentId = lookup_id(experiment_id, "experiment")?;
        let experiment_id = &experiment_id;
        let _guard = self.write_lock.lock().await;
        let mut tx = self.store.begin().await?;
        let row = tx
            .get_experiment(experiment_id)
            .await?
            .ok_or_else(|| MasterError::NotFound(format!("experiment {experiment_id}")))?;
        if row.lifecycle() != ExperimentStatus::Stopped {
            return Err(MasterError::FailedPrecondition(format!(
                "experiment {experiment_id} is {}, not stopped",
                row.lifecycle().as_str()
            )));
        }
        let at = now_ms();
        tx.resume_experiment(experiment_id, at).await?;
        let row = tx
            .get_experiment(experiment_id)
            .await?
            .ok_or_else(|| MasterError::Internal("experiment vanished".into()))?;
        self.refill_experiment(&mut *tx, &row, at).await?;
        tx.commit().await?;
        info!(experiment_id = %experiment_id, "experiment resumed");
        self.wakeups.wake_all();
        Ok(())
    }
}
