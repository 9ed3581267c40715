//! The budget checks' reads: the trial counts, the epochs spent, and the search's share of the
//! wall-time budget ([`SearchWall`]: all of `budget.max_wall_seconds`, or under `[final]
//! within_wall_budget` what the final phase's expected time leaves, see [`super::final_time`]).

use std::collections::HashMap;

use explore_common::spec::ExperimentSpec;
use explore_common::ExperimentId;

use super::final_time;
use super::{search_epochs, search_trials, Scheduler};
use crate::error::MasterError;
use crate::store::{EpochUsage, ExperimentRow, PoolTx, TrialCounts};

/// The per-experiment memo of [`Scheduler::search_wall`]: a final-phase reservation and what
/// it was estimated for, `(completed trials, slots, reservation)`.
pub(super) type ReservationMemos = std::sync::Mutex<HashMap<ExperimentId, ReservationMemo>>;

type ReservationMemo = (u32, u32, Option<final_time::Reservation>);

impl Scheduler {
    /// What the experiment's budget checks read (see [`BudgetUsage`]).
    pub(super) async fn budget_usage(
        &self,
        conn: &mut dyn PoolTx,
        spec: &ExperimentSpec,
        row: &ExperimentRow,
        now: i64,
    ) -> Result<BudgetUsage, MasterError> {
        let counts = conn.trial_counts(&row.id).await?;
        let epochs = match search_epochs(spec) {
            Some(_) => Some(conn.epoch_usage(&row.id).await?),
            None => None,
        };
        let wall = self
            .search_wall(conn, spec, row, Some(counts.completed), now)
            .await?;
        Ok(BudgetUsage {
            counts,
            epochs,
            wall,
        })
    }

    /// The search's wall-time limit ([`SearchWall`]); `None` without a wall-time budget.
    /// `completed` is the experiment's completed-trial count when the caller has it.
    pub(super) async fn search_wall(
        &self,
        conn: &mut dyn PoolTx,
        spec: &ExperimentSpec,
        row: &ExperimentRow,
        completed: Option<u32>,
        now: i64,
    ) -> Result<Option<SearchWall>, MasterError> {
        let Some(max) = spec.budget.max_wall_seconds else {
            return Ok(None);
        };
        let budget_ms = (max as i64).saturating_mul(1000);
        let fin = match &spec.final_training {
            Some(fin) if fin.within_wall_budget => fin,
            _ => {
                return Ok(Some(SearchWall {
                    budget_ms,
                    reserved: None,
                }))
            }
        };
        let completed = match completed {
            Some(n) => n,
            None => conn.trial_counts(&row.id).await?.completed,
        };
        let since = self.connected_since(now);
        let slots = conn.connected_slots(since).await?;
        let memo = self
            .final_reservations
            .lock()
            .expect("reservation memo poisoned")
            .get(&row.id)
            .copied();
        let reserved = match memo {
            Some((c, s, r)) if c == completed && s == slots => r,
            _ => {
                let plan = conn.best_distinct(&row.id, fin.top_k).await?;
                let r = final_time::reservation(&plan, fin, slots);
                if let Some(r) = &r {
                    tracing::debug!(experiment_id = %row.id, phase_ms = r.phase_ms, tail_ms = r.tail_ms, slots, "final phase estimated");
                }
                self.final_reservations
                    .lock()
                    .expect("reservation memo poisoned")
                    .insert(row.id.clone(), (completed, slots, r));
                r
            }
        };
        Ok(Some(SearchWall {
            budget_ms,
            reserved,
        }))
    }
}

/// The search's share of the wall-time budget: `budget.max_wall_seconds`, less what
/// `[final] within_wall_budget` keeps for the final phase.
#[derive(Debug, Clone, Copy)]
pub(super) struct SearchWall {
    /// `budget.max_wall_seconds` in milliseconds.
    budget_ms: i64,
    /// What is kept for the final phase, once the search has measurements to estimate it from.
    reserved: Option<final_time::Reservation>,
}

impl SearchWall {
    /// Milliseconds of running time the search may use: at least
    /// [`final_time::MIN_SEARCH_SHARE`] of the budget.
    fn search_ms(&self) -> i64 {
        let kept = self.reserved.map_or(0, |r| r.total_ms());
        let floor = (self.budget_ms as f64 * final_time::MIN_SEARCH_SHARE) as i64;
        (self.budget_ms - kept).max(floor)
    }

    /// Whether the search's share is used up.
    pub(super) fn spent(&self, row: &ExperimentRow, now: i64) -> bool {
        row.running_ms(now) >= self.search_ms()
    }

    /// Why the search ended, when it ends for the wall time.
    pub(super) fn reason(&self) -> String {
        match self.reserved {
            None => "wall-time budget reached".to_string(),
            Some(_) => format!(
                "wall-time budget reached ({:.0} s of {:.0} kept for the final phase, as \
                 estimated from the search's training speed)",
                (self.budget_ms - self.search_ms()) as f64 / 1000.0,
                self.budget_ms as f64 / 1000.0
            ),
        }
    }
}

/// What an experiment's budget checks read: its trial counts, the epochs spent and committed
/// when it has an epoch budget, and the search's wall-time limit when it has a wall budget.
/// Read once per call that both cools a chain and refills.
pub(super) struct BudgetUsage {
    pub(super) counts: TrialCounts,
    pub(super) epochs: Option<EpochUsage>,
    pub(super) wall: Option<SearchWall>,
}

impl BudgetUsage {
    /// Used fraction of the experiment's budget (the largest of trials, epochs and wall time).
    pub(super) fn progress(&self, spec: &ExperimentSpec, row: &ExperimentRow, now: i64) -> f64 {
        // The search's share of the budget (the final phase's reservation left out).
        let mut progress = f64::from(self.counts.finished()) / f64::from(search_trials(spec));
        if let (Some(max), Some(epochs)) = (search_epochs(spec), &self.epochs) {
            progress = progress.max(epochs.spent as f64 / max as f64);
        }
        if let Some(wall) = &self.wall {
            let share = wall.search_ms().max(1) as f64;
            progress = progress.max(row.running_ms(now) as f64 / share);
        }
        progress.clamp(0.0, 1.0)
    }
}
