//! What the read-only queries behind the dashboard and its JSON API (`master/src/http/`)
//! take and return: filtered and sorted trial pages, lineages, the best-so-far curve,
//! temperature histories and workers. Each backend implements them (`sqlite/reads.rs`,
//! `postgres/reads.rs`); none is on the scheduling hot path, each is bounded in rows returned,
//! and the ones a dashboard polls read at most one experiment's trials through an index.

use explore_common::ids::{ExperimentId, TrialId, WorkerId};

use super::{TrialRow, TrialStatus};

/// How a trial page is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialSort {
    Seq,
    Score,
    Created,
    Epochs,
    Params,
    Status,
    Chain,
    /// The training objective's name (`plain`, `elr`, ...), a JSON expression each backend
    /// writes in its own SQL.
    Objective,
}

impl TrialSort {
    /// The sort key's name in the API.
    pub const NAMES: &'static [&'static str] = &[
        "seq",
        "score",
        "created",
        "epochs",
        "params",
        "status",
        "chain",
        "objective",
    ];

    /// Parses an API sort key.
    pub fn parse(name: &str) -> Option<TrialSort> {
        Some(match name {
            "seq" => TrialSort::Seq,
            "score" => TrialSort::Score,
            "created" => TrialSort::Created,
            "epochs" => TrialSort::Epochs,
            "params" => TrialSort::Params,
            "status" => TrialSort::Status,
            "chain" => TrialSort::Chain,
            "objective" => TrialSort::Objective,
            _ => return None,
        })
    }

    /// The column a SQL backend orders by, or None for [`TrialSort::Objective`], an
    /// expression in the backend's own SQL.
    pub(crate) fn column(self) -> Option<&'static str> {
        Some(match self {
            TrialSort::Seq => "seq",
            TrialSort::Score => "score",
            TrialSort::Created => "created_at_ms",
            TrialSort::Epochs => "epoch",
            TrialSort::Params => "params",
            // By name: cancelled, completed, failed, leased, pruned, queued, running.
            TrialSort::Status => "status",
            TrialSort::Chain => "chain",
            TrialSort::Objective => return None,
        })
    }

    /// What the page query orders by, inside (`trials` unaliased) and outside (`trials t`) of
    /// its id subquery, given the backend's SQL for the objective.
    pub(crate) fn order_keys(self, objective_sql: &str) -> (String, String) {
        match self.column() {
            Some(column) => (column.to_string(), format!("t.{column}")),
            // The expression names `hparams_json` alone, which only `t` has outside.
            None => (objective_sql.to_string(), objective_sql.to_string()),
        }
    }
}

/// Which trials a page lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrialFilter {
    pub status: Option<TrialStatus>,
    pub chain: Option<i64>,
    pub objective: Option<String>,
    pub min_score: Option<f64>,
    pub max_score: Option<f64>,
}

/// One page of an experiment's filtered trials and how many match in all.
#[derive(Debug, Clone)]
pub struct TrialPage {
    pub total: u64,
    pub trials: Vec<TrialRow>,
}

/// Most ancestors a lineage follows.
pub const MAX_LINEAGE: u32 = 200;

crate::sqlite_row! {
    /// A completed trial that raised an experiment's best score.
    #[derive(Debug, Clone, PartialEq)]
    pub struct BestPoint {
        pub trial_id: TrialId,
        pub score: f64,
        pub finished_at_ms: i64,
        /// Trials finished (completed or pruned) up to and including this one.
        pub finished: i64,
    }
}

crate::sqlite_row! {
    /// The temperature a trial was proposed (or, once finished, recorded) at.
    #[derive(Debug, Clone, PartialEq)]
    pub struct TemperaturePoint {
        pub chain: i64,
        pub seq: i64,
        pub at_ms: i64,
        pub temperature: f64,
    }
}

crate::sqlite_row! {
    /// One row of `workers`.
    #[derive(Debug, Clone, PartialEq)]
    pub struct WorkerRow {
        pub id: WorkerId,
        pub name: String,
        pub device: String,
        pub slots: i64,
        pub status: String,
        pub registered_at_ms: i64,
        pub last_seen_ms: i64,
    }
}

crate::sqlite_row! {
    /// Trials of one experiment in one status.
    #[derive(Debug, Clone, PartialEq)]
    pub struct StatusTally {
        pub experiment_id: ExperimentId,
        pub status: TrialStatus,
        pub n: i64,
    }
}
