//! The final-training phase (`[final] top_k = K, epochs = E, from = "weights" | "scratch"`):
//! once the search is over, the K best distinct architectures (by validation score; two trials
//! of one genome count once) are trained again for E epochs, and the experiment completes when
//! those trials have ended.
//!
//! **Budget.** The phase is inside the budget: `budget.max_trials` and `budget.max_epochs` are
//! the experiment's totals, and the search gets `max_trials − K` trials and `max_epochs − K·E`
//! epochs ([`search_trials`], [`search_epochs`]); spec validation makes sure both leave the
//! search something. The final trials are ordinary training trials, so the status view's trial
//! and epoch counts include them. A search that ends with fewer than K distinct completed
//! architectures trains that many (the status message says so) and leaves the rest of the
//! reservation unspent. The wall-time budget ends the search only: the final phase's cost is
//! known (at most K·E epochs) and it runs to its end; with `within_wall_budget`, the search
//! ends early enough for the phase's expected time to fit ([`super::final_time`]). The failure limit (`max_failures`)
//! applies to the search only: a final trial that fails for good (lease expired `max_attempts`
//! times, or reported failed) is one model less, not a failed experiment.
//!
//! **State.** Everything is in the database: `experiments.search_ended` says the phase has begun
//! (and why the search ended), and every final trial (`trials.phase = 'final'`, parent = the
//! trial it trains again) is queued in the same transaction that sets it. So the plan is the
//! set of parents of the final trials, and a restarted master resumes the phase as it was:
//! nothing is chosen twice, queued or held trials keep their places, leases are reclaimed and
//! retried by the usual rules. Only `master stop` cancels final trials (queued ones, held ones
//! with `--now`); [`Scheduler::refill_final`] queues a new trial for each parent left without a
//! live or ended one once the experiment runs again, never while it is stopped.
//!
//! **Selection.** A final trial completes like any other, except that it is not a Metropolis
//! step (no chain is cooled or moved; it is recorded as accepted) and early stopping never
//! prunes it. The final phase's models are the experiment's result ([`outranks`]): the first
//! final trial to complete becomes the best trial whatever its score, and a later one replaces
//! it when its validation score is higher, so `master best` reports the final model, selected on
//! validation among the final trials. A final trial is not compared with the search's best
//! score: that score is the highest of many noisy validation scores, biased upwards by the
//! selection itself (on the search benchmark the search's best validation score was 1–2 points
//! above its test accuracy), so a retrain that is better on unseen data rarely beats it on
//! validation. The search's trials stay in the pool for anyone who wants one of them.

use crate::store::PoolTx;
use explore_common::annealing;
use explore_common::spec::{ExperimentSpec, FinalConfig, FinalStart};
use explore_common::{HyperParams, TrialId};
use rand::Rng;
use tracing::info;

use super::{db_seed, final_time, Scheduler, STREAM_TRIAL_SEED};
use crate::chains;
use crate::error::MasterError;
use crate::store::{ExperimentRow, ExperimentStatus, NewTrial, TrialKind, TrialRow, TrialStatus};

/// What [`outranks`] compares of a trial: its phase and its validation score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    /// A trial of the final phase.
    pub is_final: bool,
    /// Its validation score, if it has one.
    pub score: Option<f64>,
}

impl Standing {
    /// The standing of a trial of the pool.
    pub fn of(trial: &TrialRow) -> Standing {
        Standing {
            is_final: trial.is_final(),
            score: trial.score,
        }
    }
}

/// Whether a trial that just completed (`new`) takes the place of the experiment's best trial
/// so far (`best`): a final trial outranks every search trial, and between two trials of the
/// same phase the higher score wins (the earlier one on a tie).
pub fn outranks(new: Standing, best: Option<Standing>) -> bool {
    let Some(best) = best else {
        return true;
    };
    match (new.is_final, best.is_final) {
        (true, false) => true,
        (false, true) => false,
        _ => match (new.score, best.score) {
            (Some(n), Some(b)) => n > b,
            (Some(_), None) => true,
            (None, _) => false,
        },
    }
}

/// Trials the search may train: `budget.max_trials` less the final phase's `top_k`.
pub fn search_trials(spec: &ExperimentSpec) -> u32 {
    let reserved = spec.final_training.as_ref().map_or(0, |f| f.top_k);
    spec.budget.max_trials.saturating_sub(reserved).max(1)
}

/// Epochs the search may train, when the budget has an epoch limit: `budget.max_epochs` less
/// the final phase's `top_k × epochs`.
pub fn search_epochs(spec: &ExperimentSpec) -> Option<u64> {
    let reserved = spec
        .final_training
        .as_ref()
        .map_or(0, FinalConfig::reserved_epochs);
    spec.budget
        .max_epochs
        .map(|max| u64::from(max).saturating_sub(reserved).max(1))
}

/// The parents of the final trials (the plan), each once, in the order they were queued.
fn plan_of(finals: &[TrialRow]) -> Vec<&TrialId> {
    let mut parents: Vec<&TrialId> = Vec::new();
    for t in finals {
        if let Some(p) = t.parent_id.as_ref() {
            if !parents.contains(&p) {
                parents.push(p);
            }
        }
    }
    parents
}

/// The epochs the final trials train: those of the first one queued (all of them train the
/// same, see [`Scheduler::final_epochs`]); `[final] epochs` before any is queued.
fn epochs_of(finals: &[TrialRow], fin: &FinalConfig) -> u32 {
    finals
        .iter()
        .find_map(|t| HyperParams::from_json(&t.hparams_json).ok())
        .map_or(fin.epochs, |h| h.epochs)
}

/// What the phase's status message says about the epochs: fewer than `[final] epochs` when the
/// wall budget left no time for them.
fn epochs_note(fin: &FinalConfig, epochs: u32) -> String {
    if epochs < fin.epochs {
        format!(
            "{epochs} epochs (of final.epochs = {}: what the wall-time budget left)",
            fin.epochs
        )
    } else {
        format!("{epochs} epochs")
    }
}

/// What the phase's status message says about the plan's size.
fn plan_note(fin: &FinalConfig, planned: usize) -> String {
    if planned < fin.top_k as usize {
        format!(
            "{planned} of top_k = {} architectures (only {} completed in the search)",
            fin.top_k,
            architectures(planned, "distinct ")
        )
    } else {
        architectures(planned, "")
    }
}

/// "1 architecture", "2 architectures" (with `adjective` before the noun).
fn architectures(n: usize, adjective: &str) -> String {
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {adjective}architecture{plural}")
}

impl Scheduler {
    /// The search is over for `reason` (its budget is spent, or it has nothing left to
    /// propose) and nothing of it is queued or in flight: with `[final]`, begins the final
    /// phase (see the module documentation); without, completes the experiment.
    pub(super) async fn search_over(
        &self,
        conn: &mut dyn PoolTx,
        row: &ExperimentRow,
        spec: &ExperimentSpec,
        reason: &str,
        now: i64,
    ) -> Result<(), MasterError> {
        let Some(fin) = &spec.final_training else {
            conn.finish_experiment(&row.id, ExperimentStatus::Completed, reason, now)
                .await?;
            info!(experiment_id = %row.id, reason = %reason, "experiment completed");
            return Ok(());
        };
        let plan = conn.best_distinct(&row.id, fin.top_k).await?;
        if plan.is_empty() {
            let reason = format!("{reason}; no final training: no completed trial to retrain");
            conn.finish_experiment(&row.id, ExperimentStatus::Completed, &reason, now)
                .await?;
            info!(experiment_id = %row.id, reason = %reason, "experiment completed");
            return Ok(());
        }
        let epochs = self.final_epochs(conn, row, spec, fin, &plan, now).await?;
        conn.begin_final_phase(&row.id, reason).await?;
        for parent in &plan {
            self.queue_final(conn, row, spec, epochs, parent, now)
                .await?;
        }
        let message = format!(
            "final training: {} for {}, 0 of {} ended; search ended: {reason}",
            plan_note(fin, plan.len()),
            epochs_note(fin, epochs),
            plan.len()
        );
        conn.set_status_reason(&row.id, &message).await?;
        info!(experiment_id = %row.id, planned = plan.len(), top_k = fin.top_k, epochs, search_ended = %reason, "final phase begun");
        Ok(())
    }

    /// The epochs of the final trials of `plan`: `[final] epochs`, or under
    /// `within_wall_budget` as many as fit the wall-time budget's rest at the speed the search
    /// measured ([`final_time::fitted_epochs`]).
    async fn final_epochs(
        &self,
        conn: &mut dyn PoolTx,
        row: &ExperimentRow,
        spec: &ExperimentSpec,
        fin: &FinalConfig,
        plan: &[TrialRow],
        now: i64,
    ) -> Result<u32, MasterError> {
        let Some(max) = spec
            .budget
            .max_wall_seconds
            .filter(|_| fin.within_wall_budget)
        else {
            return Ok(fin.epochs);
        };
        let time_left = (max as i64).saturating_mul(1000) - row.running_ms(now);
        let since = self.connected_since(now);
        let slots = conn.connected_slots(since).await?;
        let epochs = final_time::fitted_epochs(plan, fin, slots, time_left);
        if epochs < fin.epochs {
            info!(experiment_id = %row.id, epochs, planned = fin.epochs, time_left_ms = time_left, "final epochs fitted to the wall-time budget");
        }
        Ok(epochs)
    }

    /// Keeps the final phase going (the experiment runs, and its search has ended): queues a
    /// trial again for a parent whose final trial `master stop` cancelled, keeps the status
    /// message current, and completes the experiment once every final trial has ended
    /// (completed, or failed for good). Returns whether anything changed.
    pub(super) async fn refill_final(
        &self,
        conn: &mut dyn PoolTx,
        row: &ExperimentRow,
        spec: &ExperimentSpec,
        now: i64,
    ) -> Result<bool, MasterError> {
        let search_ended = row.search_ended.clone().unwrap_or_default();
        let Some(fin) = &spec.final_training else {
            // Cannot happen (the spec is stored once), but must not leave the experiment open.
            conn.finish_experiment(&row.id, ExperimentStatus::Completed, &search_ended, now)
                .await?;
            return Ok(true);
        };
        let finals = conn.final_trials(&row.id).await?;
        let epochs = epochs_of(&finals, fin);
        let mut changed = false;
        for parent_id in plan_of(&finals) {
            let live = finals.iter().any(|t| {
                t.parent_id.as_ref() == Some(parent_id) && t.status != TrialStatus::Cancelled
            });
            if !live {
                let parent = super::require_trial(conn, parent_id).await?;
                self.queue_final(conn, row, spec, epochs, &parent, now)
                    .await?;
                changed = true;
            }
        }
        let finals = if changed {
            conn.final_trials(&row.id).await?
        } else {
            finals
        };
        let planned = plan_of(&finals).len();
        let live: Vec<&TrialRow> = finals
            .iter()
            .filter(|t| t.status != TrialStatus::Cancelled)
            .collect();
        let count = |s: TrialStatus| live.iter().filter(|t| t.status == s).count();
        let (completed, pruned, failed) = (
            count(TrialStatus::Completed),
            count(TrialStatus::Pruned),
            count(TrialStatus::Failed),
        );
        let ended = completed + pruned + failed;
        if ended == live.len() {
            let reason = format!(
                "final training done: {} retrained for {} ({completed} completed, \
                 {failed} failed); search ended: {search_ended}",
                plan_note(fin, planned),
                epochs_note(fin, epochs)
            );
            conn.finish_experiment(&row.id, ExperimentStatus::Completed, &reason, now)
                .await?;
            info!(experiment_id = %row.id, completed, failed, "experiment completed after its final phase");
            return Ok(true);
        }
        let message = format!(
            "final training: {} for {}, {ended} of {planned} ended; search ended: \
             {search_ended}",
            plan_note(fin, planned),
            epochs_note(fin, epochs)
        );
        conn.set_status_reason(&row.id, &message).await?;
        Ok(changed)
    }

    /// Queues the final trial of `parent`: its genome and hyperparameters with `epochs` (see
    /// [`Scheduler::final_epochs`]), a new training seed, and (from weights) the parent's
    /// checkpoint to start from.
    async fn queue_final(
        &self,
        conn: &mut dyn PoolTx,
        row: &ExperimentRow,
        spec: &ExperimentSpec,
        epochs: u32,
        parent: &TrialRow,
        now: i64,
    ) -> Result<(), MasterError> {
        let Some(fin) = &spec.final_training else {
            return Err(MasterError::Internal(format!(
                "experiment {} has no [final] section to queue a final trial for",
                row.id
            )));
        };
        let seq = conn.next_seq(&row.id).await?;
        let seed = db_seed(annealing::rng_for(spec.seed, STREAM_TRIAL_SEED, seq as u64).gen());
        let mut hparams = HyperParams::from_json(&parent.hparams_json)?;
        hparams.epochs = epochs;
        let checkpoint = match parent.checkpoint_sha256.clone() {
            Some(sha) if self.artifacts.contains(&sha).await? => Some(sha),
            _ => None,
        };
        let (inherit_from, start) = match (fin.from, checkpoint) {
            (FinalStart::Weights, Some(sha)) => (Some(sha), "from its weights"),
            (FinalStart::Weights, None) => (None, "from scratch (it has no checkpoint)"),
            (FinalStart::Scratch, _) => (None, "from scratch"),
        };
        let chain = chains::load(conn, spec, &row.id, parent.chain).await?;
        let trial = NewTrial {
            id: TrialId::generate(),
            experiment_id: row.id.clone(),
            seq,
            parent_id: Some(parent.id.clone()),
            origin: format!(
                "final: retrain of {} for {epochs} epochs {start}",
                parent.id
            ),
            genome_json: parent.genome_json.clone(),
            genome_hash: parent.genome_hash.clone(),
            hparams_json: hparams.to_json(),
            params: parent.params,
            flops: parent.flops,
            seed,
            temperature: chain.temperature,
            chain: parent.chain,
            inherit_from,
            kind: TrialKind::Train,
            seed_index: None,
            prediction: None,
        };
        conn.insert_trial(&trial, now).await?;
        conn.mark_final(&trial.id).await?;
        tracing::debug!(trial_id = %trial.id, seq, parent = %parent.id, origin = %trial.origin, "final trial queued");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(score: f64) -> Standing {
        Standing {
            is_final: false,
            score: Some(score),
        }
    }

    fn last(score: f64) -> Standing {
        Standing {
            is_final: true,
            score: Some(score),
        }
    }

    #[test]
    fn the_first_trial_is_the_best() {
        assert!(outranks(search(0.1), None));
        assert!(outranks(last(0.1), None));
    }

    #[test]
    fn within_a_phase_only_a_higher_score_wins() {
        assert!(outranks(search(0.91), Some(search(0.9))));
        assert!(!outranks(search(0.9), Some(search(0.9))));
        assert!(!outranks(search(0.89), Some(search(0.9))));
        assert!(outranks(last(0.91), Some(last(0.9))));
        assert!(!outranks(last(0.9), Some(last(0.9))));
        assert!(!outranks(last(0.89), Some(last(0.9))));
    }

    #[test]
    fn a_final_trial_outranks_every_search_trial_and_never_the_reverse() {
        assert!(outranks(last(0.5), Some(search(0.99))));
        assert!(!outranks(search(0.99), Some(last(0.5))));
    }

    #[test]
    fn a_trial_without_a_score_never_displaces_one_with_a_score() {
        let unscored = Standing {
            is_final: false,
            score: None,
        };
        assert!(!outranks(unscored, Some(search(0.1))));
        assert!(outranks(search(0.1), Some(unscored)));
    }

    #[test]
    fn the_plan_note_counts_one_architecture_in_the_singular() {
        let fin = |top_k| FinalConfig {
            top_k,
            epochs: 4,
            from: Default::default(),
            search_subset: 0,
            within_wall_budget: false,
        };
        assert_eq!(plan_note(&fin(1), 1), "1 architecture");
        assert_eq!(plan_note(&fin(2), 2), "2 architectures");
        assert_eq!(
            plan_note(&fin(3), 1),
            "1 of top_k = 3 architectures (only 1 distinct architecture completed in the search)"
        );
        assert_eq!(
            plan_note(&fin(3), 2),
            "2 of top_k = 3 architectures (only 2 distinct architectures completed in the search)"
        );
    }
}
