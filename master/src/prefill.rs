//! A fast pre-fill of the pool for scale benchmarks (`master dev-prefill`, hidden): submits an
//! experiment as `master submit` would, then writes `trials` completed trials into it with one
//! recursive SQL statement, as the scheduler would have recorded them — the seed's architecture
//! with distinct learning rates (so one architecture has a million hyperparameter variants, the
//! hard case for the duplicate check), scores spread over [0.5, 0.9], two in three accepted,
//! spread over 8 chains — and makes the best of them the experiment's best trial. The triggers
//! of `0005_scale.sql` keep the tallies right as the rows go in.
//!
//! The experiment's trial budget is raised past the pre-filled trials in the stored spec (a
//! submitted spec may ask for at most 100,000): the point is a running experiment whose own pool
//! is large. Run it against a master that is not running.

use std::path::Path;
use std::time::Instant;

use explore_common::spec::ExperimentSpec;

use crate::artifacts::ArtifactStore;
use crate::error::MasterError;
use crate::scheduler::{now_ms, Scheduler, SchedulerConfig};
use crate::store::sqlite::{convert_sqlx_err, SqliteBackend};
use crate::store::Store;

/// Submits `spec` into the pool in `data_dir` and adds `trials` completed trials to it; returns
/// the experiment id.
pub async fn prefill(
    data_dir: &Path,
    spec: ExperimentSpec,
    trials: u64,
) -> Result<String, MasterError> {
    // Refused while a master serves this directory (it names the master).
    let _lock = crate::lock::DataDirLock::acquire(data_dir)?;
    let backend = SqliteBackend::open(data_dir).await?;
    let store = Store::from_backend(backend.clone());
    let artifacts = ArtifactStore::open(&data_dir.join("artifacts"), 1 << 30)?;
    let scheduler = Scheduler::new(store.clone(), artifacts, SchedulerConfig::default());
    let id = scheduler.submit(spec).await?;
    let started = Instant::now();
    let mut conn = store.conn().await?;
    let seed = conn
        .train_trials_below(&id, 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| MasterError::Internal("the experiment has no seed trial".into()))?;
    let first_seq = conn.next_seq(&id).await?;
    drop(conn);
    let mut tx = backend.pool().begin().await.map_err(convert_sqlx_err)?;
    let now = now_ms();
    // The recursive table has at least one row: nothing to insert is a separate case.
    let rows = if trials == 0 { 0 } else { trials as i64 };
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
         INSERT INTO trials (id, experiment_id, seq, parent_id, origin, genome_json, genome_hash,
             hparams_json, params, flops, seed, status, attempt, epoch, score, metrics_json,
             accepted, temperature, created_at_ms, started_at_ms, finished_at_ms, chain, kind)
         SELECT printf('trial-%016x', 1152921504606846976 + i), ?, ? + i, ?, 'pre-filled',
             ?, ?, json_set(?, '$.learning_rate', 1e-4 + i * 1e-9), ?, ?, i, 'completed', 1,
             json_extract(?, '$.epochs'),
             0.5 + 0.4 * ((i * 7919) % 10007) / 10007.0, '{\"synthetic\":1.0}',
             (i % 3) != 0, 0.01, ?, ?, ?, i % 8, 'train'
           FROM n WHERE ? > 0",
    )
    .bind(rows.max(1))
    .bind(id.as_str())
    .bind(first_seq)
    .bind(seed.id.as_str())
    .bind(&seed.genome_json)
    .bind(&seed.genome_hash)
    .bind(&seed.hparams_json)
    .bind(seed.params)
    .bind(seed.flops)
    .bind(&seed.hparams_json)
    .bind(now)
    .bind(now)
    .bind(now)
    .bind(rows)
    .execute(&mut *tx)
    .await
    .map_err(convert_sqlx_err)?;
    sqlx::query(
        "UPDATE experiments SET spec_json = json_set(spec_json, '$.budget.max_trials', ?),
             best_trial_id = (SELECT id FROM trials WHERE experiment_id = ? AND kind = 'train'
                               AND status = 'completed' AND accepted = 1
                              ORDER BY score DESC, seq LIMIT 1)
          WHERE id = ?",
    )
    .bind((trials + 10_000_000).min(u64::from(u32::MAX)) as i64)
    .bind(id.as_str())
    .bind(id.as_str())
    .execute(&mut *tx)
    .await
    .map_err(convert_sqlx_err)?;
    tx.commit().await.map_err(convert_sqlx_err)?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(backend.pool())
        .await
        .map_err(convert_sqlx_err)?;
    store.close().await;
    tracing::info!(
        experiment_id = %id,
        trials,
        seconds = started.elapsed().as_secs_f64(),
        "pool pre-filled"
    );
    Ok(id.to_string())
}
