//! Queries of the final-training phase (`[final]`) on PostgreSQL: the plan's parents, the final
//! trials, and the experiment's phase marker.

use explore_common::ids::{ExperimentId, TrialId};
use sqlx::PgConnection;

use super::{convert_pg_err, get_trial};
use crate::error::MasterError;
use crate::store::parse_text;
use crate::store::TrialRow;

/// The experiment's `k` best distinct architectures: for each genome hash its best completed
/// search trial (by validation score, then lower seq), the best `k` of those, best first.
/// Pruned trials (partial scores), probes and final trials are left out.
pub async fn best_distinct(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
    k: u32,
) -> Result<Vec<TrialRow>, MasterError> {
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM (
             SELECT id, score, seq, ROW_NUMBER() OVER (
                        PARTITION BY genome_hash ORDER BY score DESC, seq) AS in_genome
               FROM trials
              WHERE experiment_id = $1 AND kind = 'train' AND phase = 'search'
                AND status = 'completed' AND score IS NOT NULL) best_of_genome
          WHERE in_genome = 1 ORDER BY score DESC, seq LIMIT $2",
    )
    .bind(experiment_id.as_str())
    .bind(i64::from(k))
    .fetch_all(&mut *conn)
    .await
    .map_err(convert_pg_err)?;
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
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE experiment_id = $1 AND phase = 'final' ORDER BY seq",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)
}

/// Marks a trial as a final trial.
pub async fn mark_final(conn: &mut PgConnection, trial_id: &TrialId) -> Result<(), MasterError> {
    sqlx::query("UPDATE trials SET phase = 'final' WHERE id = $1")
        .bind(trial_id.as_str())
        .execute(conn)
        .await
        .map_err(convert_pg_err)?;
    Ok(())
}

/// Records that the experiment's search ended for `reason` and its final phase has begun.
pub async fn begin_final_phase(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
    reason: &str,
) -> Result<(), MasterError> {
    sqlx::query("UPDATE experiments SET search_ended = $1 WHERE id = $2 AND search_ended IS NULL")
        .bind(reason)
        .bind(experiment_id.as_str())
        .execute(conn)
        .await
        .map_err(convert_pg_err)?;
    Ok(())
}

/// Sets a running experiment's status message (a no-op when it already says so).
pub async fn set_status_reason(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
    reason: &str,
) -> Result<bool, MasterError> {
    let r = sqlx::query(
        "UPDATE experiments SET status_reason = $1
          WHERE id = $2 AND status = 'running' AND status_reason <> $1",
    )
    .bind(reason)
    .bind(experiment_id.as_str())
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(r.rows_affected() > 0)
}
