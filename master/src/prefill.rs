//! A fast pre-fill of the pool for scale benchmarks (`master dev-prefill`, hidden): submits an
//! experiment as `master submit` would, then writes `trials` completed trials into it with one
//! recursive SQL statement, as the scheduler would have recorded them — the seed's architecture
//! with distinct learning rates (so one architecture has a million hyperparameter variants, the
//! hard case for the duplicate check), scores spread over [0.5, 0.9], two in three accepted,
//! spread over 8 chains — and makes the best of them the experiment's best trial. The triggers
//! of `0005_scale.sql` (SQLite) and `0001_init.sql` (PostgreSQL) keep the tallies right as the rows
//! go in. The pool is the embedded SQLite file of `--data-dir` or, with `--db postgres://…`, a
//! PostgreSQL database, so the scale benchmark measures both backends on the same pools.
//!
//! The experiment's trial budget is raised past the pre-filled trials in the stored spec (a
//! submitted spec may ask for at most 100,000): the point is a running experiment whose own pool
//! is large. Run it against a master that is not running.

use std::path::Path;
use std::time::Instant;

use explore_common::spec::ExperimentSpec;
use explore_common::ExperimentId;

use crate::artifacts::ArtifactStore;
use crate::error::MasterError;
use crate::scheduler::{now_ms, Scheduler, SchedulerConfig};
use crate::store::postgres::{convert_pg_err, PgBackend};
use crate::store::sqlite::{convert_sqlx_err, SqliteBackend};
use crate::store::{Store, TrialRow};

/// Submits `spec` into the pool `db` names (`sqlite`: the file in `data_dir`; or a PostgreSQL
/// URL) and adds `trials` completed trials to it; returns the experiment id.
pub async fn prefill(
    data_dir: &Path,
    db: &str,
    spec: ExperimentSpec,
    trials: u64,
) -> Result<String, MasterError> {
    // Refused while a master serves this directory (it names the master). A PostgreSQL pool is
    // the caller's to keep quiet.
    let _lock = if Store::is_sqlite(db) {
        Some(crate::lock::DataDirLock::acquire(data_dir)?)
    } else {
        None
    };
    let target = if Store::is_sqlite(db) {
        Target::Sqlite(SqliteBackend::open(data_dir).await?)
    } else {
        Target::Postgres(PgBackend::connect(db).await?)
    };
    fill(target, data_dir, spec, trials).await
}

/// [`prefill`] on an opened pool.
async fn fill(
    target: Target,
    data_dir: &Path,
    spec: ExperimentSpec,
    trials: u64,
) -> Result<String, MasterError> {
    let store = match &target {
        Target::Sqlite(b) => Store::from_backend(b.clone()),
        Target::Postgres(b) => Store::from_backend(b.clone()),
    };
    let artifacts = ArtifactStore::open_dir(&data_dir.join("artifacts"), 1 << 30).await?;
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
    let fill = Fill {
        experiment_id: &id,
        first_seq,
        seed: &seed,
        rows: trials as i64,
        max_trials: fill_budget(trials),
        now: now_ms(),
    };
    match &target {
        Target::Sqlite(b) => fill_sqlite(b, &fill).await?,
        Target::Postgres(b) => fill_postgres(b, &fill).await?,
    }
    store.close().await;
    eprintln!(
        "dev-prefill: experiment {id}'s trial budget is now {} (the spec's is ignored)",
        fill_budget(trials)
    );
    tracing::info!(
        experiment_id = %id,
        trials,
        backend = store.backend_name(),
        seconds = started.elapsed().as_secs_f64(),
        "pool pre-filled"
    );
    Ok(id.to_string())
}

/// The trial budget a pre-filled experiment gets: room for ten million trials past the
/// pre-filled ones (capped to the budget's type).
fn fill_budget(trials: u64) -> i64 {
    (trials + 10_000_000).min(u64::from(u32::MAX)) as i64
}

/// The pool being filled.
enum Target {
    Sqlite(SqliteBackend),
    Postgres(PgBackend),
}

/// What both backends' bulk inserts write.
struct Fill<'a> {
    experiment_id: &'a ExperimentId,
    first_seq: i64,
    seed: &'a TrialRow,
    rows: i64,
    /// The experiment's trial budget, raised past the pre-filled trials.
    max_trials: i64,
    now: i64,
}

async fn fill_sqlite(backend: &SqliteBackend, f: &Fill<'_>) -> Result<(), MasterError> {
    let mut tx = backend.pool().begin().await.map_err(convert_sqlx_err)?;
    // The recursive table has at least one row: nothing to insert is a separate case.
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
    .bind(f.rows.max(1))
    .bind(f.experiment_id.as_str())
    .bind(f.first_seq)
    .bind(f.seed.id.as_str())
    .bind(&f.seed.genome_json)
    .bind(&f.seed.genome_hash)
    .bind(&f.seed.hparams_json)
    .bind(f.seed.params)
    .bind(f.seed.flops)
    .bind(&f.seed.hparams_json)
    .bind(f.now)
    .bind(f.now)
    .bind(f.now)
    .bind(f.rows)
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
    .bind(f.max_trials)
    .bind(f.experiment_id.as_str())
    .bind(f.experiment_id.as_str())
    .execute(&mut *tx)
    .await
    .map_err(convert_sqlx_err)?;
    tx.commit().await.map_err(convert_sqlx_err)?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(backend.pool())
        .await
        .map_err(convert_sqlx_err)?;
    Ok(())
}

/// The same rows as [`fill_sqlite`], in PostgreSQL's dialect; then `ANALYZE`, so the planner
/// knows the table is large before the master's first query. The insert trigger is off for the
/// bulk insert and the tallies are added in two grouped statements instead: row by row, a
/// million updates of the same tally row in one transaction take quadratic time (100,000 rows:
/// 210 s; every update walks the row's dead versions).
async fn fill_postgres(backend: &PgBackend, f: &Fill<'_>) -> Result<(), MasterError> {
    let mut tx = backend.pool().begin().await.map_err(convert_pg_err)?;
    sqlx::query("ALTER TABLE trials DISABLE TRIGGER trials_tally_insert")
        .execute(&mut *tx)
        .await
        .map_err(convert_pg_err)?;
    sqlx::query(
        "INSERT INTO trials (id, experiment_id, seq, parent_id, origin, genome_json, genome_hash,
             hparams_json, params, flops, seed, status, attempt, epoch, score, metrics_json,
             accepted, temperature, created_at_ms, started_at_ms, finished_at_ms, chain, kind)
         SELECT 'trial-' || lpad(to_hex(1152921504606846976 + i), 16, '0'), $1, $2 + i, $3,
             'pre-filled', $4, $5,
             jsonb_set($6::jsonb, '{learning_rate}', to_jsonb(1e-4 + i * 1e-9))::text, $7, $8,
             i, 'completed', 1, ($6::jsonb ->> 'epochs')::bigint,
             0.5 + 0.4 * ((i * 7919) % 10007) / 10007.0, '{\"synthetic\":1.0}',
             (i % 3) <> 0, 0.01, $9, $9, $9, i % 8, 'train'
           FROM generate_series(0::bigint, $10::bigint - 1) AS i",
    )
    .bind(f.experiment_id.as_str())
    .bind(f.first_seq)
    .bind(f.seed.id.as_str())
    .bind(&f.seed.genome_json)
    .bind(&f.seed.genome_hash)
    .bind(&f.seed.hparams_json)
    .bind(f.seed.params)
    .bind(f.seed.flops)
    .bind(f.now)
    .bind(f.rows)
    .execute(&mut *tx)
    .await
    .map_err(convert_pg_err)?;
    // Every pre-filled row is a completed training trial: none is open.
    for tally in [
        "INSERT INTO trial_tallies (experiment_id, kind, status, n, epochs)
         SELECT experiment_id, kind, status, COUNT(*), SUM(epoch) FROM trials
          WHERE experiment_id = $1 AND seq >= $2 GROUP BY experiment_id, kind, status
         ON CONFLICT (experiment_id, kind, status) DO UPDATE
            SET n = trial_tallies.n + EXCLUDED.n, epochs = trial_tallies.epochs + EXCLUDED.epochs",
        "INSERT INTO chain_tallies (experiment_id, chain, open, total)
         SELECT experiment_id, chain, 0, COUNT(*) FROM trials
          WHERE experiment_id = $1 AND seq >= $2 GROUP BY experiment_id, chain
         ON CONFLICT (experiment_id, chain) DO UPDATE SET total = chain_tallies.total + EXCLUDED.total",
        "ALTER TABLE trials ENABLE TRIGGER trials_tally_insert",
    ] {
        let query = sqlx::query(tally);
        let query = if tally.contains("$1") {
            query.bind(f.experiment_id.as_str()).bind(f.first_seq)
        } else {
            query
        };
        query.execute(&mut *tx).await.map_err(convert_pg_err)?;
    }
    sqlx::query(
        "UPDATE experiments
            SET spec_json = jsonb_set(spec_json::jsonb, '{budget,max_trials}', to_jsonb($1::bigint))::text,
                best_trial_id = (SELECT id FROM trials WHERE experiment_id = $2 AND kind = 'train'
                                  AND status = 'completed' AND accepted
                                 ORDER BY score DESC, seq LIMIT 1)
          WHERE id = $2",
    )
    .bind(f.max_trials)
    .bind(f.experiment_id.as_str())
    .execute(&mut *tx)
    .await
    .map_err(convert_pg_err)?;
    tx.commit().await.map_err(convert_pg_err)?;
    sqlx::query("ANALYZE")
        .execute(backend.pool())
        .await
        .map_err(convert_pg_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::testing::Scratch;
    use crate::store::TrialStatus;

    const TRIALS: u64 = 3000;

    fn spec() -> ExperimentSpec {
        ExperimentSpec::from_toml("name = \"prefill\"\nseed = 3\n[budget]\nmax_trials = 50\n")
            .unwrap()
    }

    /// The pre-filled pool is what the scheduler would have recorded: every row completed and
    /// counted by the tallies, the best accepted trial recorded as the best, the budget raised,
    /// and the experiment still proposing.
    async fn check(store: &Store, id: &str) {
        let id: &ExperimentId = &id.parse().unwrap();
        let mut conn = store.conn().await.unwrap();
        let counts = conn.trial_counts(id).await.unwrap();
        assert_eq!(u64::from(counts.completed), TRIALS, "{counts:?}");
        let tallied: i64 = conn
            .status_tallies()
            .await
            .unwrap()
            .iter()
            .filter(|t| &t.experiment_id == id && t.status == TrialStatus::Completed)
            .map(|t| t.n)
            .sum();
        assert_eq!(tallied, TRIALS as i64, "the tallies count every row");
        // Per chain: every row counted, only the queued seed open.
        let loads = conn.chain_loads(id).await.unwrap();
        let open: i64 = loads.iter().map(|(_, open, _)| open).sum();
        let total: i64 = loads.iter().map(|(_, _, total)| total).sum();
        assert_eq!((open, total), (1, TRIALS as i64 + 1), "{loads:?}");
        let experiment = conn.get_experiment(id).await.unwrap().unwrap();
        let best = conn
            .get_trial(experiment.best_trial_id.as_ref().unwrap())
            .await
            .unwrap()
            .unwrap();
        let top = conn
            .accepted_trials(id)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.score.unwrap())
            .fold(f64::MIN, f64::max);
        assert_eq!(best.score, Some(top));
        assert_eq!(best.status, TrialStatus::Completed);
        assert!(experiment
            .spec_json
            .contains(&format!("{}", TRIALS + 10_000_000)));
        let page = conn
            .list_trials_page(id, None, Some(TrialStatus::Completed), 5)
            .await
            .unwrap();
        assert_eq!(page.len(), 5);
    }

    #[tokio::test]
    async fn a_sqlite_pool_is_filled_with_completed_trials() {
        let dir = tempfile::tempdir().unwrap();
        let id = prefill(dir.path(), "sqlite", spec(), TRIALS).await.unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        check(&store, &id).await;
    }

    #[tokio::test]
    async fn a_postgres_pool_is_filled_with_the_same_trials() {
        let Some(scratch) = Scratch::create("a_postgres_pool_is_filled_with_the_same_trials").await
        else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::store::postgres::connect_with(scratch.options())
            .await
            .unwrap();
        let id = fill(
            Target::Postgres(PgBackend::from_pool(pool)),
            dir.path(),
            spec(),
            TRIALS,
        )
        .await
        .unwrap();
        check(scratch.store(), &id).await;
        scratch.drop_schema().await;
    }
}
