//! The dashboard's read-only queries on SQLite (types in [`crate::store::reads`]).

use explore_common::ids::{ExperimentId, TrialId};
use sqlx::SqliteConnection;

use super::convert_sqlx_err;
use crate::error::MasterError;
use crate::store::reads::*;
use crate::store::TrialRow;

/// The SQL expression naming a trial's training objective (`plain`, `elr`, ...): the plain
/// objective is absent from the hyperparameters' JSON, the others are a one-key object.
pub const OBJECTIVE_SQL: &str = "COALESCE(
    CASE json_type(hparams_json, '$.objective')
        WHEN 'text' THEN json_extract(hparams_json, '$.objective')
        WHEN 'object' THEN (SELECT key FROM json_each(hparams_json, '$.objective') LIMIT 1)
    END, 'plain')";

/// A page of trials matching `filter`, ordered by `sort` (ties by seq; unscored trials last
/// when sorting by score).
pub async fn query_trials(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    filter: &TrialFilter,
    sort: TrialSort,
    descending: bool,
    offset: u64,
    limit: u32,
) -> Result<TrialPage, MasterError> {
    let mut conditions = String::from("experiment_id = ?");
    if filter.status.is_some() {
        conditions.push_str(" AND status = ?");
    }
    if filter.chain.is_some() {
        conditions.push_str(" AND chain = ?");
    }
    if filter.objective.is_some() {
        conditions.push_str(&format!(" AND {OBJECTIVE_SQL} = ?"));
    }
    if filter.min_score.is_some() {
        conditions.push_str(" AND score >= ?");
    }
    if filter.max_score.is_some() {
        conditions.push_str(" AND score <= ?");
    }
    let direction = if descending { "DESC" } else { "ASC" };
    let (inner_key, outer_key) = sort.order_keys(OBJECTIVE_SQL);
    // Only `score` can be NULL; unscored trials go last either way. The other keys are NOT
    // NULL, and an ORDER BY without expressions lets SQLite walk an index.
    let nulls = if sort == TrialSort::Score && !descending {
        " NULLS LAST"
    } else {
        ""
    };
    let count_sql = format!("SELECT COUNT(*) FROM trials WHERE {conditions}");
    // The page's rowids are picked first (the sort and the skipped rows carry one integer
    // each, not whole rows with their genome JSON); only those rows are then read, and the
    // page's few rows sorted again.
    let page_sql = format!(
        "SELECT t.* FROM trials t JOIN (
             SELECT rowid AS r FROM trials WHERE {conditions}
              ORDER BY {inner_key} {direction}{nulls}, seq {direction} LIMIT ? OFFSET ?
         ) page ON t.rowid = page.r
         ORDER BY {outer_key} {direction}{nulls}, t.seq {direction}"
    );
    macro_rules! bind_filter {
        ($query:expr) => {{
            let mut q = $query.bind(experiment_id.as_str());
            if let Some(s) = filter.status {
                q = q.bind(s.as_str());
            }
            if let Some(c) = filter.chain {
                q = q.bind(c);
            }
            if let Some(o) = &filter.objective {
                q = q.bind(o.as_str());
            }
            if let Some(m) = filter.min_score {
                q = q.bind(m);
            }
            if let Some(m) = filter.max_score {
                q = q.bind(m);
            }
            q
        }};
    }
    let (total,): (i64,) = bind_filter!(sqlx::query_as(&count_sql))
        .fetch_one(&mut *conn)
        .await
        .map_err(convert_sqlx_err)?;
    let trials = bind_filter!(sqlx::query_as::<_, TrialRow>(&page_sql))
        .bind(i64::from(limit))
        .bind(offset.min(i64::MAX as u64) as i64)
        .fetch_all(&mut *conn)
        .await
        .map_err(convert_sqlx_err)?;
    Ok(TrialPage {
        total: total as u64,
        trials,
    })
}

/// The ancestors of a trial, from its parent back to its seed (at most [`MAX_LINEAGE`]).
pub async fn lineage(
    conn: &mut SqliteConnection,
    trial_id: &TrialId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "WITH RECURSIVE anc(id, depth) AS (
             SELECT parent_id, 1 FROM trials WHERE id = ? AND parent_id IS NOT NULL
             UNION ALL
             SELECT t.parent_id, a.depth + 1 FROM anc a JOIN trials t ON t.id = a.id
              WHERE t.parent_id IS NOT NULL AND a.depth < ?
         )
         SELECT t.* FROM anc a JOIN trials t ON t.id = a.id ORDER BY a.depth",
    )
    .bind(trial_id.as_str())
    .bind(MAX_LINEAGE)
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// The `limit` best-scored training trials of an experiment and all their ancestors (each
/// once), in seq order.
pub async fn genealogy(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    limit: u32,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "WITH RECURSIVE top(id) AS (
             SELECT id FROM trials
              WHERE experiment_id = ? AND kind = 'train' AND score IS NOT NULL
              ORDER BY score DESC, seq LIMIT ?
         ),
         anc(id, depth) AS (
             SELECT id, 0 FROM top
             UNION
             SELECT t.parent_id, a.depth + 1 FROM anc a JOIN trials t ON t.id = a.id
              WHERE t.parent_id IS NOT NULL AND a.depth < ?
         )
         SELECT * FROM trials WHERE id IN (SELECT id FROM anc) ORDER BY seq",
    )
    .bind(experiment_id.as_str())
    .bind(limit)
    .bind(MAX_LINEAGE)
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// The best-so-far curve as its improvements, in finishing order, and how many training
/// trials have finished in all.
pub async fn best_curve(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<(Vec<BestPoint>, i64), MasterError> {
    let points = sqlx::query_as::<_, BestPoint>(
        "SELECT trial_id, score, finished_at_ms, finished FROM (
             SELECT id AS trial_id, score, status, finished_at_ms,
                    ROW_NUMBER() OVER w AS finished,
                    MAX(CASE WHEN status = 'completed' THEN score END) OVER (w
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
               FROM trials
              WHERE experiment_id = ? AND kind = 'train' AND status IN ('completed', 'pruned')
                AND score IS NOT NULL AND finished_at_ms IS NOT NULL
             WINDOW w AS (ORDER BY finished_at_ms, seq)
         )
         WHERE status = 'completed' AND (before IS NULL OR score > before)
         ORDER BY finished",
    )
    .bind(experiment_id.as_str())
    .fetch_all(&mut *conn)
    .await
    .map_err(convert_sqlx_err)?;
    let (finished,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(SUM(n), 0) FROM trial_tallies
          WHERE experiment_id = ? AND kind = 'train' AND status IN ('completed', 'pruned')",
    )
    .bind(experiment_id.as_str())
    .fetch_one(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok((points, finished))
}

/// Chains' temperatures by trial, thinned evenly by seq to at most `max_points`.
pub async fn temperature_history(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    max_points: u32,
) -> Result<Vec<TemperaturePoint>, MasterError> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(SUM(n), 0) FROM trial_tallies WHERE experiment_id = ? AND kind = 'train'",
    )
    .bind(experiment_id.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(convert_sqlx_err)?;
    let stride = (n / i64::from(max_points.max(1))).max(0) + 1;
    sqlx::query_as::<_, TemperaturePoint>(
        "SELECT chain, seq, created_at_ms AS at_ms, temperature FROM trials
          WHERE experiment_id = ? AND kind = 'train' AND temperature IS NOT NULL
            AND seq % ? = 0
          ORDER BY seq LIMIT ?",
    )
    .bind(experiment_id.as_str())
    .bind(stride)
    .bind(max_points)
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// Workers, active ones first, then by when they were last seen (at most `limit`).
pub async fn workers(
    conn: &mut SqliteConnection,
    limit: u32,
) -> Result<Vec<WorkerRow>, MasterError> {
    sqlx::query_as::<_, WorkerRow>(
        "SELECT * FROM workers ORDER BY status = 'active' DESC, last_seen_ms DESC, id LIMIT ?",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// Every trial a worker holds now (leased or running), in any experiment.
pub async fn held_trials(conn: &mut SqliteConnection) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE status IN ('leased', 'running') ORDER BY experiment_id, seq",
    )
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// Trial counts by experiment and status, from the trigger-kept tallies (training trials and
/// probes together).
pub async fn status_tallies(conn: &mut SqliteConnection) -> Result<Vec<StatusTally>, MasterError> {
    sqlx::query_as::<_, StatusTally>(
        "SELECT experiment_id, status, SUM(n) AS n FROM trial_tallies
          GROUP BY experiment_id, status ORDER BY experiment_id, status",
    )
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// Workers registered and seen since `since_ms`, and their slots.
pub async fn connected(
    conn: &mut SqliteConnection,
    since_ms: i64,
) -> Result<(u64, u64), MasterError> {
    let (workers, slots): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(slots), 0) FROM workers
          WHERE status = 'active' AND last_seen_ms >= ?",
    )
    .bind(since_ms)
    .fetch_one(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok((workers as u64, slots as u64))
}
