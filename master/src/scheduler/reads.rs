//! Reads for the dashboard, its JSON API and `/metrics`: the same scheduler the gRPC admin
//! service reads, so the HTTP edge stays a thin adapter. Each checks that the experiment or
//! trial exists (a `NotFound` otherwise) and is bounded in the rows it returns.

use std::collections::HashMap;

use explore_common::{ExperimentId, TrialId, WorkerId};

use super::{lookup_id, require_trial, Scheduler};
use crate::error::MasterError;
use crate::metrics::StoreGauges;
use crate::store::reads::{
    BestPoint, TemperaturePoint, TrialFilter, TrialPage, TrialSort, WorkerRow,
};
use crate::store::{ChainRow, EpochRow, PoolTx, TrialRow};

/// Most workers the workers view lists.
pub const MAX_WORKERS_LISTED: u32 = 1000;
/// Most points of a temperature history.
pub const MAX_TEMPERATURE_POINTS: u32 = 2000;

/// A trial with its curve and ancestors.
#[derive(Debug, Clone)]
pub struct TrialDetail {
    pub trial: TrialRow,
    pub epochs: Vec<EpochRow>,
    /// From the parent back to the seed.
    pub lineage: Vec<TrialRow>,
}

/// A worker and the trials it holds.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub worker: WorkerRow,
    pub held: Vec<TrialRow>,
}

/// What an experiment's trial filters can name ([`Scheduler::filter_domain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterDomain {
    /// Its trials are on chains `0..chains`.
    pub chains: i64,
    /// The name of the training objective all its trials use (`plain`, `elr`, ...).
    pub objective: &'static str,
}

impl Scheduler {
    /// The experiment a client named, checked to exist (`NotFound` otherwise, a malformed id
    /// included).
    async fn require_experiment(
        &self,
        conn: &mut dyn PoolTx,
        experiment_id: &str,
    ) -> Result<ExperimentId, MasterError> {
        let id: ExperimentId = lookup_id(experiment_id, "experiment")?;
        match conn.get_experiment(&id).await? {
            Some(_) => Ok(id),
            None => Err(MasterError::NotFound(format!("experiment {experiment_id}"))),
        }
    }

    /// What an experiment's trial filters can name: its chains are `0..chains` (the spec's
    /// `annealing.chains`, or as many as the chains table holds when the spec leaves it to the
    /// connected slots) and every trial trains with `objective`.
    pub async fn filter_domain(&self, experiment_id: &str) -> Result<FilterDomain, MasterError> {
        let spec = self.spec_of(experiment_id).await?;
        let experiment_id: ExperimentId = lookup_id(experiment_id, "experiment")?;
        let mut conn = self.store.conn().await?;
        let table = conn.list_chains(&experiment_id).await?;
        let in_table = table.iter().map(|c| c.chain + 1).max().unwrap_or(0);
        let from_spec = i64::from(spec.annealing.chains.min(crate::chains::MAX_CHAINS));
        Ok(FilterDomain {
            chains: from_spec.max(in_table).max(1),
            objective: spec
                .seed_objective(&explore_common::HyperParams::default())
                .name(),
        })
    }

    /// A filtered, sorted page of an experiment's trials and how many match.
    #[allow(clippy::too_many_arguments)]
    pub async fn query_trials(
        &self,
        experiment_id: &str,
        filter: &TrialFilter,
        sort: TrialSort,
        descending: bool,
        offset: u64,
        limit: u32,
    ) -> Result<TrialPage, MasterError> {
        let mut conn = self.store.conn().await?;
        let experiment_id = self.require_experiment(&mut *conn, experiment_id).await?;
        conn.query_trials(&experiment_id, filter, sort, descending, offset, limit)
            .await
    }

    /// A trial with its epoch curve and its ancestors.
    pub async fn trial_detail(&self, trial_id: &str) -> Result<TrialDetail, MasterError> {
        let trial_id: TrialId = lookup_id(trial_id, "trial")?;
        let mut conn = self.store.conn().await?;
        let trial = require_trial(&mut *conn, &trial_id).await?;
        let epochs = conn.epoch_curve(&trial_id).await?;
        let lineage = conn.lineage(&trial_id).await?;
        Ok(TrialDetail {
            trial,
            epochs,
            lineage,
        })
    }

    /// The `limit` best trials of an experiment and their ancestors.
    pub async fn genealogy(
        &self,
        experiment_id: &str,
        limit: u32,
    ) -> Result<Vec<TrialRow>, MasterError> {
        let mut conn = self.store.conn().await?;
        let experiment_id = self.require_experiment(&mut *conn, experiment_id).await?;
        conn.genealogy(&experiment_id, limit).await
    }

    /// The best-so-far curve's improvements and how many trials finished in all.
    pub async fn best_curve(
        &self,
        experiment_id: &str,
    ) -> Result<(Vec<BestPoint>, i64), MasterError> {
        let mut conn = self.store.conn().await?;
        let experiment_id = self.require_experiment(&mut *conn, experiment_id).await?;
        conn.best_curve(&experiment_id).await
    }

    /// The experiment's chains now and their temperatures over time.
    pub async fn chain_history(
        &self,
        experiment_id: &str,
    ) -> Result<(Vec<ChainRow>, Vec<TemperaturePoint>), MasterError> {
        let mut conn = self.store.conn().await?;
        let experiment_id = self.require_experiment(&mut *conn, experiment_id).await?;
        let chains = conn.list_chains(&experiment_id).await?;
        let history = conn
            .temperature_history(&experiment_id, MAX_TEMPERATURE_POINTS)
            .await?;
        Ok((chains, history))
    }

    /// Workers (active first) with the trials each holds.
    pub async fn worker_views(&self) -> Result<Vec<WorkerView>, MasterError> {
        let mut conn = self.store.conn().await?;
        let workers = conn.workers(MAX_WORKERS_LISTED).await?;
        let mut held: HashMap<WorkerId, Vec<TrialRow>> = HashMap::new();
        for trial in conn.held_trials().await? {
            if let Some(worker) = trial.worker_id.clone() {
                held.entry(worker).or_default().push(trial);
            }
        }
        Ok(workers
            .into_iter()
            .map(|worker| WorkerView {
                held: held.remove(&worker.id).unwrap_or_default(),
                worker,
            })
            .collect())
    }

    /// What `/metrics` reads from the store.
    pub async fn store_gauges(&self) -> Result<StoreGauges, MasterError> {
        let mut conn = self.store.conn().await?;
        let trials = conn
            .status_tallies()
            .await?
            .into_iter()
            .map(|t| (t.experiment_id.to_string(), t.status.to_string(), t.n))
            .collect();
        let since = self.connected_since(super::now_ms());
        let (connected_workers, connected_slots) = conn.connected(since).await?;
        let mut experiments = Vec::new();
        for row in conn.list_experiments().await? {
            let best = match &row.best_trial_id {
                Some(t) => conn.get_trial(t).await?.and_then(|t| t.score),
                None => None,
            };
            experiments.push((
                row.id.to_string(),
                row.name.clone(),
                row.lifecycle().as_str().to_string(),
                best,
            ));
        }
        Ok(StoreGauges {
            trials,
            connected_workers,
            connected_slots,
            experiments,
        })
    }

    /// Whether the store answers a trivial query (for `/readyz`).
    pub async fn store_reachable(&self) -> Result<(), MasterError> {
        let mut conn = self.store.conn().await?;
        conn.ping().await
    }
}
