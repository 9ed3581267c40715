//! Queries of the final-training phase (`[final]`, migration 0007): the plan's parents, the
//! final trials, and the experiment's phase marker.

use explore_common::ids::{ExperimentId, TrialId};
use sqlx::SqliteConnection;

use super::{convert_sqlx_err, get_trial, TrialRow};
use crate::error::MasterError;
use crate::store::parse_text;

/// The experiment's `k` best distinct architectures: for each genome hash its best completed
/// search trial (by validation score, then lower seq), the best `k` of those, best first.
/// Pruned trials (partial scores), probes and final trials are left out. Read once, when the
/// final phase begins; it walks the experiment's completed trials.
pub async fn best_distinct(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    k: u32,
) -> Result<Vec<TrialRow>, MasterError> {
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM (
             SELECT id, score, seq, ROW_NUMBER() OVER (
                        PARTITION BY genome_hash ORDER BY score DESC, seq) AS in_genome
               FROM trials
              WHERE experiment_id = ? AND kind = 'train' AND phase = 'search'
                AND status = 'completed' AND score IS NOT NULL)
          WHERE in_genome = 1 ORDER BY score DESC, seq LIMIT ?",
    )
    .bind(experiment_id.as_str())
    .bind(i64::from(k))
    .fetch_all(&mut *conn)
    .await
    .map_err(convert_sqlx_err)?;
    let mut rows = Vec::with_capacity(ids.len());
    for (id,) in ids {
        let id: TrialId = parse_text("id", &id)?;
        if let Some(row) = get_trial(conn, &id).await? {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Every final trial of an experiment (cancelled ones included), in seq order: a handful of
/// rows, read through the partial index `trials_final`.
pub async fn final_trials(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials INDEXED BY trials_final
          WHERE experiment_id = ? AND phase = 'final' ORDER BY seq",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// Marks a trial as a final trial.
pub async fn mark_final(
    conn: &mut SqliteConnection,
    trial_id: &TrialId,
) -> Result<(), MasterError> {
    sqlx::query("UPDATE trials SET phase = 'final' WHERE id = ?")
        .bind(trial_id.as_str())
        .execute(conn)
        .await
        .map_err(convert_sqlx_err)?;
    Ok(())
}

/// Records that the experiment's search ended for `reason` and its final phase has begun.
pub async fn begin_final_phase(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    reason: &str,
) -> Result<(), MasterError> {
    sqlx::query("UPDATE experiments SET search_ended = ? WHERE id = ? AND search_ended IS NULL")
        .bind(reason)
        .bind(experiment_id.as_str())
        .execute(conn)
        .await
        .map_err(convert_sqlx_err)?;
    Ok(())
}

/// Sets a running experiment's status message (a no-op when it already says so).
pub async fn set_status_reason(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    reason: &str,
) -> Result<bool, MasterError> {
    let r = sqlx::query(
        "UPDATE experiments SET status_reason = ?
          WHERE id = ? AND status = 'running' AND status_reason != ?",
    )
    .bind(reason)
    .bind(experiment_id.as_str())
    .bind(reason)
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(r.rows_affected() > 0)
}
