//! Annealing chains: several simulated-annealing walks that share one pool.
//!
//! Each chain has a current model (its last accepted trial), its own temperature and a count of
//! results without improvement. A proposal goes to the least-loaded chain and mutates that
//! chain's current model; a chain without one (new, or just reheated) draws its base from the
//! whole pool with Boltzmann weights, which is how chains share what the others found. After each
//! result the chain cools ([`annealing::next_temperature`]); after `reheat_after` results without
//! beating its best it reheats: back to the initial temperature, restarting from a pool draw.

use crate::store::PoolTx;
use explore_common::annealing;
use explore_common::spec::ExperimentSpec;
use explore_common::{ExperimentId, TrialId};
use tracing::info;

use crate::error::MasterError;
use crate::store::ChainRow;

/// Most chains an experiment may have.
pub const MAX_CHAINS: u32 = 256;

/// Chains an experiment with `annealing.chains = 0` runs at least, however few slots are
/// connected: a single chain that accepted a poor model early can stay in its region for a
/// whole run (the search benchmark's product-default runs, BENCHMARKS.md).
pub const MIN_AUTO_CHAINS: u32 = 2;

/// How many chains the experiment runs: `annealing.chains`, or one per connected worker slot
/// (at least [`MIN_AUTO_CHAINS`]) when that is 0.
pub fn chain_count(spec: &ExperimentSpec, connected_slots: u32) -> u32 {
    match spec.annealing.chains {
        0 => connected_slots.clamp(MIN_AUTO_CHAINS, MAX_CHAINS),
        n => n.min(MAX_CHAINS),
    }
}

/// The chain with the fewest queued and held trials among the first `count` (ties: the fewest
/// trials overall, then the lowest index), so every chain keeps work in flight and the chains
/// take turns.
pub async fn least_loaded(
    conn: &mut dyn PoolTx,
    experiment_id: &ExperimentId,
    count: u32,
) -> Result<i64, MasterError> {
    let loads = conn.chain_loads(experiment_id).await?;
    let load_of = |c: i64| {
        loads
            .iter()
            .find(|(chain, _, _)| *chain == c)
            .map_or((0, 0), |&(_, open, all)| (open, all))
    };
    Ok((0..i64::from(count.max(1)))
        .min_by_key(|&c| (load_of(c), c))
        .unwrap_or(0))
}

/// The chain's state, created (at the initial temperature, and saved) if it does not exist yet.
pub async fn load_or_create(
    conn: &mut dyn PoolTx,
    spec: &ExperimentSpec,
    experiment_id: &ExperimentId,
    chain: i64,
) -> Result<ChainRow, MasterError> {
    if let Some(row) = conn.get_chain(experiment_id, chain).await? {
        return Ok(row);
    }
    let row = fresh(spec, experiment_id, chain);
    conn.save_chain(&row).await?;
    Ok(row)
}

/// The chain's state, or a fresh one at the initial temperature (not saved).
pub async fn load(
    conn: &mut dyn PoolTx,
    spec: &ExperimentSpec,
    experiment_id: &ExperimentId,
    chain: i64,
) -> Result<ChainRow, MasterError> {
    Ok(conn
        .get_chain(experiment_id, chain)
        .await?
        .unwrap_or_else(|| fresh(spec, experiment_id, chain)))
}

/// A chain that has seen nothing yet.
fn fresh(spec: &ExperimentSpec, experiment_id: &ExperimentId, chain: i64) -> ChainRow {
    ChainRow {
        experiment_id: experiment_id.clone(),
        chain,
        temperature: spec.annealing.initial_temperature,
        current_trial_id: None,
        best_score: None,
        since_improvement: 0,
        results: 0,
        accepted: 0,
        reheats: 0,
    }
}

/// A result of one of the chain's trials.
#[derive(Debug, Clone, Copy)]
pub struct ChainResult<'a> {
    pub trial_id: &'a TrialId,
    pub score: f64,
    /// Whether the Metropolis rule accepted it (a pruned trial never is).
    pub accepted: bool,
    /// Used fraction of the experiment's budget, for linear and adaptive cooling.
    pub progress: f64,
}

/// Applies a result to the chain: moves its current model on acceptance, tracks its best,
/// cools, and reheats after too long without improvement. Returns the saved state.
pub async fn record(
    conn: &mut dyn PoolTx,
    spec: &ExperimentSpec,
    mut chain: ChainRow,
    result: ChainResult<'_>,
) -> Result<ChainRow, MasterError> {
    let cfg = &spec.annealing;
    chain.results += 1;
    if result.accepted {
        chain.accepted += 1;
        chain.current_trial_id = Some(result.trial_id.clone());
    }
    if chain.best_score.is_none_or(|b| result.score > b) {
        chain.best_score = Some(result.score);
        chain.since_improvement = 0;
    } else {
        chain.since_improvement += 1;
    }
    chain.temperature = annealing::next_temperature(
        cfg,
        chain.temperature,
        chain.results.clamp(0, i64::from(u32::MAX)) as u32,
        result.progress,
        result.accepted,
    );
    if annealing::should_reheat(
        cfg,
        chain.since_improvement.clamp(0, i64::from(u32::MAX)) as u32,
    ) {
        chain.temperature = cfg.initial_temperature;
        chain.current_trial_id = None;
        chain.since_improvement = 0;
        chain.best_score = None;
        chain.reheats += 1;
        info!(
            experiment_id = %chain.experiment_id,
            chain = chain.chain,
            reheats = chain.reheats,
            "chain stagnated: reheated, next base drawn from the whole pool"
        );
    }
    conn.save_chain(&chain).await?;
    Ok(chain)
}

/// Mean temperature of the experiment's chains (the initial temperature before any exists).
pub async fn mean_temperature(
    conn: &mut dyn PoolTx,
    spec: &ExperimentSpec,
    experiment_id: &ExperimentId,
) -> Result<f64, MasterError> {
    let chains = conn.list_chains(experiment_id).await?;
    if chains.is_empty() {
        return Ok(spec.annealing.initial_temperature);
    }
    Ok(chains.iter().map(|c| c.temperature).sum::<f64>() / chains.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(chains: u32) -> ExperimentSpec {
        ExperimentSpec::from_toml(&format!(
            "name = \"chains\"\n[budget]\nmax_trials = 10\n[annealing]\nchains = {chains}\n"
        ))
        .unwrap()
    }

    #[test]
    fn automatic_chains_follow_the_slots_and_are_never_fewer_than_two() {
        assert_eq!(chain_count(&spec(0), 0), MIN_AUTO_CHAINS);
        assert_eq!(chain_count(&spec(0), 1), MIN_AUTO_CHAINS);
        assert_eq!(chain_count(&spec(0), 2), 2);
        assert_eq!(chain_count(&spec(0), 8), 8);
        assert_eq!(chain_count(&spec(0), 10_000), MAX_CHAINS);
    }

    #[test]
    fn a_set_chain_count_is_kept_whatever_the_slots() {
        assert_eq!(chain_count(&spec(1), 8), 1);
        assert_eq!(chain_count(&spec(3), 1), 3);
        assert_eq!(chain_count(&spec(256), 1), 256);
    }
}
