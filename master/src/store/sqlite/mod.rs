//! The pool in an embedded SQLite database: one file in the data directory, WAL mode,
//! migrations (`master/migrations/sqlite/`) applied at start-up. SQLite has one writer at a
//! time, so every write transaction takes the write lock when it starts (`BEGIN IMMEDIATE`).
//! Each function takes a connection first; [`SqliteTx`] implements the store contract by
//! calling them.

pub mod final_phase;
mod migrations;
pub mod reads;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::contract::types::*;
use super::error::{classify, StoreError};
use super::{model, Backend, PoolTx};
use super::{parse_text, BASE_CANDIDATES};
pub use super::{EpochUsage, TrialKind, TrialRow, TrialStatus, FINAL_PHASE};
use crate::leader::{Election, Sole};

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "explore.db";

/// SQLite's result codes meaning "rolled back, try again": SQLITE_BUSY and SQLITE_LOCKED
/// with their extended forms.
const RETRY_CODES: &[&str] = &["5", "6", "261", "262", "517", "518"];

/// The SQLite backend: a connection pool on one database file (or in memory, for tests).
#[derive(Clone, Debug)]
pub struct SqliteBackend {
    pool: SqlitePool,
}

impl SqliteBackend {
    /// Opens (creating if needed) the database in `data_dir` and applies migrations.
    pub async fn open(data_dir: &Path) -> Result<SqliteBackend, MasterError> {
        std::fs::create_dir_all(data_dir).map_err(|e| MasterError::Io {
            path: data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        // A file name, not a URL: `?`, `#` and `%` are ordinary characters of a directory name.
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(convert_sqlx_err)?;
        Self::migrated(pool).await
    }

    /// A private in-memory database (tests).
    pub async fn in_memory() -> Result<SqliteBackend, MasterError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(convert_sqlx_err)?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(convert_sqlx_err)?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<SqliteBackend, MasterError> {
        migrations::migrator()
            .await
            .map_err(|e| MasterError::Store(StoreError::other(e.to_string())))?
            .run(&pool)
            .await
            .map_err(|e| super::error::migration_error("SQLite", migrations::MIGRATIONS, e))?;
        Ok(SqliteBackend { pool })
    }

    /// The underlying pool, for SQLite-only tools (`master dev-prefill`).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    /// Starts a write transaction. It takes SQLite's write lock at once (`BEGIN IMMEDIATE`), so
    /// that it waits (up to the busy timeout) for another connection's write to end instead of
    /// failing with "database is locked" when a deferred transaction that has read tries to
    /// write: SQLite refuses that upgrade without waiting while another connection holds the
    /// lock, e.g. the rollback of a refused call's transaction still on its way.
    ///
    /// The start runs in its own task, so a caller cancelled meanwhile (a gRPC call whose client
    /// went away) cannot leak it: sqlx checks a custom `BEGIN` after SQLite has run it, and a
    /// future dropped between the two would leave the transaction open on a pooled connection
    /// with no `Transaction` to roll it back, holding the write lock for good. Here the task
    /// always ends with a `Transaction`, whose drop rolls back if nobody took it.
    async fn begin(&self) -> Result<Box<dyn PoolTx>, MasterError> {
        let pool = self.pool.clone();
        let tx = tokio::spawn(async move { pool.begin_with("BEGIN IMMEDIATE").await })
            .await
            .map_err(|e| {
                MasterError::Store(StoreError::other(format!("starting a transaction: {e}")))
            })?
            .map_err(convert_sqlx_err)?;
        Ok(Box::new(SqliteTx::Write(tx)))
    }

    async fn read(&self) -> Result<Box<dyn PoolTx>, MasterError> {
        let conn = self.pool.acquire().await.map_err(convert_sqlx_err)?;
        Ok(Box::new(SqliteTx::Read(conn)))
    }

    /// Closes the pool, flushing the WAL.
    async fn close(&self) {
        self.pool.close().await;
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }

    /// The data directory's lock already makes this the only master on the file.
    async fn election(&self, _name: &str) -> Result<Box<dyn Election>, MasterError> {
        Ok(Box::new(Sole))
    }
}

/// A write transaction or a read handle on SQLite.
pub enum SqliteTx {
    /// A write transaction (rolled back on drop unless committed).
    Write(Transaction<'static, Sqlite>),
    /// A pooled connection for reads.
    Read(PoolConnection<Sqlite>),
}

impl SqliteTx {
    /// The connection the transaction (or read handle) runs on.
    pub fn connection(&mut self) -> &mut SqliteConnection {
        match self {
            SqliteTx::Write(tx) => tx,
            SqliteTx::Read(conn) => conn,
        }
    }

    async fn finish(self) -> Result<(), MasterError> {
        match self {
            SqliteTx::Write(tx) => tx.commit().await.map_err(convert_sqlx_err),
            SqliteTx::Read(_) => Ok(()),
        }
    }
}

/// The SQLite connection under a transaction of this backend (None for another backend's), for
/// SQLite-only tools and tests that run raw SQL.
pub fn connection_of(tx: &mut dyn PoolTx) -> Option<&mut SqliteConnection> {
    tx.as_any_mut()
        .downcast_mut::<SqliteTx>()
        .map(SqliteTx::connection)
}

/// Every operation's function, in one namespace for the contract's delegation.
mod ops {
    pub use super::final_phase::*;
    pub use super::reads::*;
    pub use super::*;
}

store_operations!(delegate_pool_tx! { SqliteTx, ops });

/// Maps a sqlx error into the crate's error type.
pub fn convert_sqlx_err(e: sqlx::Error) -> MasterError {
    match e {
        sqlx::Error::RowNotFound => MasterError::NotFound("row".into()),
        other => MasterError::Store(StoreError::new(
            classify(&other, RETRY_CODES),
            other.to_string(),
        )),
    }
}

/// Checks that the database answers.
pub async fn ping(conn: &mut SqliteConnection) -> Result<(), MasterError> {
    sqlx::query("SELECT 1")
        .execute(conn)
        .await
        .map_err(convert_sqlx_err)?;
    Ok(())
}

// ---- experiments -------------------------------------------------------------------------------

/// Inserts a new running experiment.
pub async fn insert_experiment(
    conn: &mut SqliteConnection,
    id: &ExperimentId,
    name: &str,
    spec_json: &str,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "INSERT INTO experiments (id, name, spec_json, status, created_at_ms) VALUES (?, ?, ?, 'running', ?)",
    )
    .bind(id.as_str())
    .bind(name)
    .bind(spec_json)
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(())
}

/// The experiment with this id, if any.
pub async fn get_experiment(
    conn: &mut SqliteConnection,
    id: &ExperimentId,
) -> Result<Option<ExperimentRow>, MasterError> {
    sqlx::query_as::<_, ExperimentRow>("SELECT * FROM experiments WHERE id = ?")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(convert_sqlx_err)
}

/// All experiments, newest first.
pub async fn list_experiments(
    conn: &mut SqliteConnection,
) -> Result<Vec<ExperimentRow>, MasterError> {
    sqlx::query_as::<_, ExperimentRow>("SELECT * FROM experiments ORDER BY created_at_ms DESC, id")
        .fetch_all(conn)
        .await
        .map_err(convert_sqlx_err)
}

/// Experiments still running, oldest first.
pub async fn running_experiments(
    conn: &mut SqliteConnection,
) -> Result<Vec<ExperimentRow>, MasterError> {
    sqlx::query_as::<_, ExperimentRow>(
        "SELECT * FROM experiments WHERE status = 'running' ORDER BY created_at_ms, id",
    )
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// Marks an experiment finished.
pub async fn finish_experiment(
    conn: &mut SqliteConnection,
    id: &ExperimentId,
    status: ExperimentStatus,
    reason: &str,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "UPDATE experiments SET status = ?, status_reason = ?, finished_at_ms = ? WHERE id = ?",
    )
    .bind(status.as_str())
    .bind(reason)
    .bind(now_ms)
    .bind(id.as_str())
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(())
}

/// Marks a running experiment stopped at `now_ms` (see [`ExperimentStatus::Stopped`]); a no-op
/// on one already stopped.
pub async fn stop_experiment(
    conn: &mut SqliteConnection,
    id: &ExperimentId,
    reason: &str,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "UPDATE experiments SET stopped_at_ms = COALESCE(stopped_at_ms, ?), status_reason = ?
          WHERE id = ? AND status = 'running'",
    )
    .bind(now_ms)
    .bind(reason)
    .bind(id.as_str())
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(())
}

/// Lets a stopped experiment run again; the time it was stopped is added to `paused_ms`.
pub async fn resume_experiment(
    conn: &mut SqliteConnection,
    id: &ExperimentId,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "UPDATE experiments SET paused_ms = paused_ms + MAX(0, ? - stopped_at_ms),
             stopped_at_ms = NULL, status_reason = ''
          WHERE id = ? AND status = 'running' AND stopped_at_ms IS NOT NULL",
    )
    .bind(now_ms)
    .bind(id.as_str())
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(())
}

/// The trials of an experiment that workers hold now (leased or running).
pub async fn held_trials_of(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE status IN ('leased', 'running') AND experiment_id = ?
          ORDER BY seq",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// Records the experiment's best trial.
pub async fn set_best_trial(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    trial_id: &TrialId,
) -> Result<(), MasterError> {
    sqlx::query("UPDATE experiments SET best_trial_id = ? WHERE id = ?")
        .bind(trial_id.as_str())
        .bind(experiment_id.as_str())
        .execute(conn)
        .await
        .map_err(convert_sqlx_err)?;
    Ok(())
}

// ---- trials ------------------------------------------------------------------------------------

/// Inserts a queued trial.
pub async fn insert_trial(
    conn: &mut SqliteConnection,
    t: &NewTrial,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "INSERT INTO trials (id, experiment_id, seq, parent_id, origin, genome_json, genome_hash, hparams_json,
             params, flops, seed, status, temperature, created_at_ms, chain, inherit_from, kind,
             seed_index, predicted_score, predicted_std)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(t.id.as_str())
    .bind(t.experiment_id.as_str())
    .bind(t.seq)
    .bind(t.parent_id.as_ref().map(TrialId::as_str))
    .bind(&t.origin)
    .bind(&t.genome_json)
    .bind(&t.genome_hash)
    .bind(&t.hparams_json)
    .bind(t.params)
    .bind(t.flops)
    .bind(t.seed)
    .bind(t.temperature)
    .bind(now_ms)
    .bind(t.chain)
    .bind(&t.inherit_from)
    .bind(t.kind.as_str())
    .bind(t.seed_index)
    .bind(t.prediction.map(|p| p.0))
    .bind(t.prediction.map(|p| p.1))
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(())
}

/// The trial with this id, if any.
pub async fn get_trial(
    conn: &mut SqliteConnection,
    id: &TrialId,
) -> Result<Option<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>("SELECT * FROM trials WHERE id = ?")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(convert_sqlx_err)
}

/// All trials of an experiment, probes included, in proposal order (probes first).
pub async fn list_trials(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>("SELECT * FROM trials WHERE experiment_id = ? ORDER BY seq")
        .bind(experiment_id.as_str())
        .fetch_all(conn)
        .await
        .map_err(convert_sqlx_err)
}

/// The training trials of an experiment (its pool: no probes), in proposal order.
pub async fn list_train_trials(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE experiment_id = ? AND kind = 'train' ORDER BY seq",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// The probe trials of an experiment, in the order they were queued (their seqs are −1, −2, …:
/// descending seq).
pub async fn list_probes(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE experiment_id = ? AND kind = 'probe' ORDER BY seq DESC",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// The seed indices an experiment's trials were queued for (transfer experiments record them).
pub async fn queued_seed_indices(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<i64>, MasterError> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT seed_index FROM trials
          WHERE experiment_id = ? AND kind = 'train' AND seed_index IS NOT NULL",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(rows.into_iter().map(|(i,)| i).collect())
}

/// Every completed fine-tune of a transfer seed in the pool, across experiments, with the
/// metrics of the probe that measured its source model on the same task: the history the
/// learned predictor of S2 is fitted on. Pairs of `(fine-tune, probe metrics JSON)`.
pub async fn fine_tune_history(
    conn: &mut SqliteConnection,
) -> Result<Vec<(TrialRow, String)>, MasterError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.id, p.metrics_json FROM trials t
           JOIN trials p ON p.experiment_id = t.experiment_id AND p.kind = 'probe'
                        AND p.status = 'completed' AND p.inherit_from = t.inherit_from
          WHERE t.kind = 'train' AND t.status = 'completed' AND t.seed_index IS NOT NULL
            AND t.score IS NOT NULL
          ORDER BY t.created_at_ms, t.id",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(convert_sqlx_err)?;
    let mut history = Vec::with_capacity(rows.len());
    for (id, probe_metrics) in rows {
        let id: TrialId = parse_text("id", &id)?;
        if let Some(trial) = get_trial(conn, &id).await? {
            history.push((trial, probe_metrics));
        }
    }
    Ok(history)
}

/// Completed trials of an experiment that the Metropolis rule accepted: the states annealing
/// draws base models from.
pub async fn accepted_trials(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE experiment_id = ? AND kind = 'train' AND status = 'completed'
           AND accepted = 1 ORDER BY seq",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// The read of [`base_candidates`]: a walk of the covering index `trials_accepted_by_score`
/// (migration 0008), packed into one JSON array.
const BASE_CANDIDATES_SQL: &str =
    "SELECT json_group_array(json_array(id, seq, printf('%!.17g', score))) FROM (
         SELECT id, seq, score FROM trials INDEXED BY trials_accepted_by_score
          WHERE experiment_id = ? AND kind = 'train' AND status = 'completed' AND accepted = 1
          ORDER BY score DESC, seq LIMIT ?)";

/// `(id, seq, score)` of the experiment's best [`BASE_CANDIDATES`] accepted trials by score
/// (index `trials_accepted_by_score`, which holds all three: no table lookups), in proposal
/// order.
///
/// Read as **one row**: sqlx's SQLite driver hands every result row from its connection thread
/// to the caller as a message of its own, so the 256 rows of a full candidate set cost 256
/// cross-thread hand-offs (the largest cost of a proposal in a grown pool); packed into one
/// JSON array they cost one. Scores travel as 17 significant digits (`printf('%!.17g')`),
/// which read back as the same `f64` bit for bit.
pub async fn base_candidates(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<(TrialId, i64, f64)>, MasterError> {
    let packed: Option<String> = sqlx::query_scalar(BASE_CANDIDATES_SQL)
        .bind(experiment_id.as_str())
        .bind(BASE_CANDIDATES)
        .fetch_one(conn)
        .await
        .map_err(convert_sqlx_err)?;
    let mut rows = unpack_candidates(packed)?;
    rows.sort_by_key(|r| r.1);
    Ok(rows)
}

/// The `[[id, seq, "score"], …]` array [`base_candidates`] reads, as typed rows.
fn unpack_candidates(packed: Option<String>) -> Result<Vec<(TrialId, i64, f64)>, MasterError> {
    let rows: Vec<(String, i64, String)> = unpack_rows(packed, "base candidates")?;
    rows.into_iter()
        .map(|(id, seq, score)| {
            let score = score.parse::<f64>().map_err(|e| {
                MasterError::Store(StoreError::other(format!(
                    "base candidates: score {score:?}: {e}"
                )))
            })?;
            Ok((parse_text("id", &id)?, seq, score))
        })
        .collect()
}

/// Rows packed into one JSON array by `json_group_array` (NULL: no rows), as `T`s; `what`
/// names the read in the error.
fn unpack_rows<T: serde::de::DeserializeOwned>(
    packed: Option<String>,
    what: &str,
) -> Result<Vec<T>, MasterError> {
    serde_json::from_str(packed.as_deref().unwrap_or("[]")).map_err(|e| {
        MasterError::Store(StoreError::other(format!(
            "{what}: unreadable row set: {e}"
        )))
    })
}

/// The experiment's training trials with `seq < below` (its seed trials), in proposal order.
pub async fn train_trials_below(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    below: i64,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE experiment_id = ? AND seq >= 0 AND seq < ? AND kind = 'train'
          ORDER BY seq",
    )
    .bind(experiment_id.as_str())
    .bind(below)
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// One page of an experiment's trials in seq order: those after `after_seq` (all when None),
/// with `status` when given, at most `limit`.
pub async fn list_trials_page(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    after_seq: Option<i64>,
    status: Option<TrialStatus>,
    limit: u32,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE experiment_id = ? AND seq > ? AND (? IS NULL OR status = ?)
          ORDER BY seq LIMIT ?",
    )
    .bind(experiment_id.as_str())
    .bind(after_seq.unwrap_or(i64::MIN))
    .bind(status.map(TrialStatus::as_str))
    .bind(status.map(TrialStatus::as_str))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// The named metrics of a trial's last recorded epoch (up to its current epoch count, as
/// [`last_epoch_metrics`]), empty when none.
pub async fn trial_epoch_metrics(
    conn: &mut SqliteConnection,
    trial: &TrialRow,
) -> Result<BTreeMap<String, f64>, MasterError> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT metrics_json FROM trial_epochs WHERE trial_id = ? AND epoch <= ?
          ORDER BY epoch DESC LIMIT 1",
    )
    .bind(trial.id.as_str())
    .bind(trial.epoch)
    .fetch_optional(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(model::parse_epoch_metrics(
        row.and_then(|(json,)| json).as_deref(),
    ))
}

/// [`trial_epoch_metrics`] for several trials in one query (a page of a listing); trials whose
/// last recorded epoch has no metrics are absent.
pub async fn trials_epoch_metrics(
    conn: &mut SqliteConnection,
    trials: &[TrialRow],
) -> Result<HashMap<TrialId, BTreeMap<String, f64>>, MasterError> {
    if trials.is_empty() {
        return Ok(HashMap::new());
    }
    let placeholders = vec!["?"; trials.len()].join(", ");
    let sql = format!(
        "SELECT t.id, e.metrics_json FROM trials t JOIN trial_epochs e ON e.trial_id = t.id
          WHERE t.id IN ({placeholders}) AND e.metrics_json IS NOT NULL
            AND e.epoch = (SELECT MAX(l.epoch) FROM trial_epochs l
                            WHERE l.trial_id = t.id AND l.epoch <= t.epoch)"
    );
    let mut query = sqlx::query_as::<_, (String, Option<String>)>(&sql);
    for trial in trials {
        query = query.bind(trial.id.as_str());
    }
    let rows = query.fetch_all(conn).await.map_err(convert_sqlx_err)?;
    model::epoch_metrics_by_trial(rows)
}

/// Counts an experiment's training trials by status (probes are counted by [`probe_counts`]).
pub async fn trial_counts(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<TrialCounts, MasterError> {
    counts_of_kind(conn, experiment_id, TrialKind::Train).await
}

/// Counts an experiment's probe trials by status.
pub async fn probe_counts(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<TrialCounts, MasterError> {
    counts_of_kind(conn, experiment_id, TrialKind::Probe).await
}

async fn counts_of_kind(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    kind: TrialKind,
) -> Result<TrialCounts, MasterError> {
    // Kept by triggers (0005_scale.sql): one row per status, whatever the pool's size, summed
    // into one result row (the driver hands each result row over on its own).
    let row: (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(CASE status WHEN 'queued' THEN n END), 0),
                COALESCE(SUM(CASE status WHEN 'leased' THEN n END), 0),
                COALESCE(SUM(CASE status WHEN 'running' THEN n END), 0),
                COALESCE(SUM(CASE status WHEN 'completed' THEN n END), 0),
                COALESCE(SUM(CASE status WHEN 'pruned' THEN n END), 0),
                COALESCE(SUM(CASE status WHEN 'failed' THEN n END), 0),
                COALESCE(SUM(CASE status WHEN 'cancelled' THEN n END), 0)
           FROM trial_tallies WHERE experiment_id = ? AND kind = ?",
    )
    .bind(experiment_id.as_str())
    .bind(kind.as_str())
    .fetch_one(conn)
    .await
    .map_err(convert_sqlx_err)?;
    let n = |v: i64| v.max(0) as u32;
    Ok(TrialCounts {
        queued: n(row.0),
        leased: n(row.1),
        running: n(row.2),
        completed: n(row.3),
        pruned: n(row.4),
        failed: n(row.5),
        cancelled: n(row.6),
    })
}

/// The next sequence number of an experiment.
pub async fn next_seq(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<i64, MasterError> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(seq) + 1, 0) FROM trials WHERE experiment_id = ?")
            .bind(experiment_id.as_str())
            .fetch_one(conn)
            .await
            .map_err(convert_sqlx_err)?;
    Ok(n)
}

/// Whether the experiment already has a trial with this architecture and these hyperparameters.
pub async fn candidate_exists(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    genome_hash: &str,
    hparams_json: &str,
) -> Result<bool, MasterError> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM trials WHERE experiment_id = ? AND genome_hash = ? AND hparams_json = ?
           AND kind = 'train' AND status NOT IN ('failed', 'cancelled')",
    )
    .bind(experiment_id.as_str())
    .bind(genome_hash)
    .bind(hparams_json)
    .fetch_one(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(n > 0)
}

/// Leases the oldest queued trial of the oldest running experiment to `worker_id`.
pub async fn lease_next_trial(
    conn: &mut SqliteConnection,
    worker_id: &WorkerId,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Option<TrialRow>, MasterError> {
    // One statement (the candidate, the lease and the leased row): every statement of sqlx's
    // SQLite driver is a round trip to the connection's thread.
    sqlx::query_as::<_, TrialRow>(
        "UPDATE trials SET status = 'leased', worker_id = ?, lease_deadline_ms = ?, epoch = 0,
             started_at_ms = COALESCE(started_at_ms, ?)
          WHERE id = (
              SELECT t.id FROM trials t JOIN experiments e ON e.id = t.experiment_id
               WHERE t.status = 'queued' AND e.status = 'running' AND e.stopped_at_ms IS NULL
               ORDER BY e.created_at_ms, t.seq
               LIMIT 1)
            AND status = 'queued'
         RETURNING *",
    )
    .bind(worker_id.as_str())
    .bind(now_ms + lease_ms)
    .bind(now_ms)
    .fetch_optional(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// Whether leasing one more trial to `worker_id` would be a prefetch that starves another
/// worker: `worker_id` already holds a trial for each of its slots, and the runnable queue has
/// no more trials than the free slots of the other live workers (seen since `since_ms`), so
/// every queued trial has an idle slot waiting for it elsewhere. (The end of a search and a
/// final phase queue only a few trials; without this, one worker's prefetch could take a
/// trial that another worker's idle slot would have started at once.) False when nothing is
/// queued.
pub async fn prefetch_would_starve(
    conn: &mut SqliteConnection,
    worker_id: &WorkerId,
    since_ms: i64,
) -> Result<bool, MasterError> {
    let (slots, held): (i64, i64) = sqlx::query_as(
        "SELECT w.slots, (SELECT COUNT(*) FROM trials
                           WHERE worker_id = w.id AND status IN ('leased', 'running'))
           FROM workers w WHERE w.id = ?",
    )
    .bind(worker_id.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(convert_sqlx_err)?;
    if held < slots {
        return Ok(false);
    }
    let (idle_elsewhere,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(SUM(MAX(w.slots - COALESCE(h.n, 0), 0)), 0)
           FROM workers w
           LEFT JOIN (SELECT worker_id, COUNT(*) AS n FROM trials
                       WHERE status IN ('leased', 'running') GROUP BY worker_id) h
             ON h.worker_id = w.id
          WHERE w.status = 'active' AND w.last_seen_ms >= ? AND w.id != ?",
    )
    .bind(since_ms)
    .bind(worker_id.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(convert_sqlx_err)?;
    if idle_elsewhere == 0 {
        return Ok(false);
    }
    // Counted up to one past the idle slots: all that decides. An empty queue starves no one.
    let (queued,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (
            SELECT 1 FROM trials t JOIN experiments e ON e.id = t.experiment_id
             WHERE t.status = 'queued' AND e.status = 'running' AND e.stopped_at_ms IS NULL
             LIMIT ?)",
    )
    .bind(idle_elsewhere + 1)
    .fetch_one(&mut *conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(queued > 0 && queued <= idle_elsewhere)
}

/// Extends the lease of a held trial and records progress; false when `(worker, attempt)` no
/// longer holds it.
pub async fn heartbeat_trial(
    conn: &mut SqliteConnection,
    trial_id: &TrialId,
    worker_id: &WorkerId,
    attempt: i64,
    epoch: i64,
    started: bool,
    deadline_ms: i64,
) -> Result<bool, MasterError> {
    let result = sqlx::query(
        "UPDATE trials SET lease_deadline_ms = ?, epoch = MAX(epoch, ?),
             status = CASE WHEN ? > 0 OR ? THEN 'running' ELSE status END
          WHERE id = ? AND worker_id = ? AND attempt = ? AND status IN ('leased', 'running')",
    )
    .bind(deadline_ms)
    .bind(epoch)
    .bind(epoch)
    .bind(started)
    .bind(trial_id.as_str())
    .bind(worker_id.as_str())
    .bind(attempt)
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(result.rows_affected() == 1)
}

/// Records a completed trial.
pub async fn complete_trial(
    conn: &mut SqliteConnection,
    trial_id: &TrialId,
    result: &TrialResult,
    accepted: bool,
    temperature: f64,
    now_ms: i64,
) -> Result<(), MasterError> {
    let metrics =
        serde_json::to_string(&result.metrics).map_err(|e| MasterError::Internal(e.to_string()))?;
    sqlx::query(
        "UPDATE trials SET status = 'completed', score = ?, metrics_json = ?, checkpoint_sha256 = ?,
             accepted = ?, temperature = ?, epoch = ?, lease_deadline_ms = NULL, finished_at_ms = ?
          WHERE id = ?",
    )
    .bind(result.score)
    .bind(metrics)
    .bind(&result.checkpoint_sha256)
    .bind(accepted)
    .bind(temperature)
    .bind(result.epochs_run as i64)
    .bind(now_ms)
    .bind(trial_id.as_str())
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(())
}

/// Records a trial that early stopping ended after `epoch` epochs with validation accuracy
/// `score`; it is never a base for proposals.
pub async fn prune_trial(
    conn: &mut SqliteConnection,
    trial_id: &TrialId,
    score: f64,
    epoch: i64,
    reason: &str,
    temperature: f64,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "UPDATE trials SET status = 'pruned', score = ?, epoch = ?, error = ?, accepted = 0,
             temperature = ?, lease_deadline_ms = NULL, finished_at_ms = ?
          WHERE id = ?",
    )
    .bind(score)
    .bind(epoch)
    .bind(reason)
    .bind(temperature)
    .bind(now_ms)
    .bind(trial_id.as_str())
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(())
}

/// Records the validation accuracy a trial reached after `epoch`, with the objective's named
/// metrics of that epoch (stored as NULL when there are none). A repeated report, e.g. from a
/// retried heartbeat or a new attempt, replaces the old one.
pub async fn record_epoch(
    conn: &mut SqliteConnection,
    trial_id: &TrialId,
    epoch: i64,
    val_accuracy: f64,
    train_loss: Option<f64>,
    metrics: &BTreeMap<String, f64>,
) -> Result<(), MasterError> {
    let metrics_json = if metrics.is_empty() {
        None
    } else {
        Some(serde_json::to_string(metrics).map_err(|e| MasterError::Internal(e.to_string()))?)
    };
    sqlx::query(
        "INSERT OR REPLACE INTO trial_epochs (trial_id, epoch, val_accuracy, train_loss, metrics_json)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(trial_id.as_str())
    .bind(epoch)
    .bind(val_accuracy)
    .bind(train_loss)
    .bind(metrics_json)
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(())
}

/// A trial's epoch curve in epoch order.
pub async fn epoch_curve(
    conn: &mut SqliteConnection,
    trial_id: &TrialId,
) -> Result<Vec<EpochRow>, MasterError> {
    sqlx::query_as::<_, EpochRow>(
        "SELECT trial_id, epoch, val_accuracy, train_loss, metrics_json FROM trial_epochs
          WHERE trial_id = ? ORDER BY epoch",
    )
    .bind(trial_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// Per trial of an experiment, the named metrics of its last recorded epoch (the highest one up
/// to the trial's current epoch count, so a requeued trial does not show what an abandoned
/// attempt got further with). Trials whose last epoch has no metrics are absent.
pub async fn last_epoch_metrics(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<HashMap<TrialId, BTreeMap<String, f64>>, MasterError> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT t.id, e.metrics_json FROM trials t JOIN trial_epochs e ON e.trial_id = t.id
          WHERE t.experiment_id = ? AND e.metrics_json IS NOT NULL
            AND e.epoch = (SELECT MAX(l.epoch) FROM trial_epochs l
                            WHERE l.trial_id = t.id AND l.epoch <= t.epoch)",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)?;
    model::epoch_metrics_by_trial(rows)
}

/// Validation accuracies that the experiment's other trials reported after `epoch`.
pub async fn peer_accuracies(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    trial_id: &TrialId,
    epoch: i64,
) -> Result<Vec<f64>, MasterError> {
    let rows: Vec<(f64,)> = sqlx::query_as(
        "SELECT e.val_accuracy FROM trial_epochs e JOIN trials t ON t.id = e.trial_id
          WHERE t.experiment_id = ? AND e.epoch = ? AND e.trial_id != ?",
    )
    .bind(experiment_id.as_str())
    .bind(epoch)
    .bind(trial_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(rows.into_iter().map(|(v,)| v).collect())
}

/// How many training epochs the experiment has spent and committed (see [`EpochUsage`]).
pub async fn epoch_usage(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<EpochUsage, MasterError> {
    // Finished trials from the tallies (0005_scale.sql); open ones (queued or held: as many as
    // there are worker slots) row by row through the status index.
    let (finished,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(SUM(epochs), 0) FROM trial_tallies
          WHERE experiment_id = ? AND kind = 'train' AND status IN ('completed', 'pruned', 'failed')",
    )
    .bind(experiment_id.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(convert_sqlx_err)?;
    let (held, open): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(CASE WHEN status IN ('leased', 'running') THEN epoch ELSE 0 END), 0),
                COALESCE(SUM(MAX(epoch, json_extract(hparams_json, '$.epochs'))), 0)
           FROM trials WHERE status IN ('queued', 'leased', 'running') AND experiment_id = ?
            AND kind = 'train'",
    )
    .bind(experiment_id.as_str())
    .fetch_one(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(EpochUsage {
        spent: (finished + held).max(0) as u64,
        committed: (finished + open).max(0) as u64,
    })
}

/// Per chain: `(chain, queued and held trials, all trials)` of an experiment.
pub async fn chain_loads(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<(i64, i64, i64)>, MasterError> {
    // Kept by triggers (0005_scale.sql); packed into one result row, as the base candidates.
    let packed: Option<String> = sqlx::query_scalar(
        "SELECT json_group_array(json_array(chain, open, total)) FROM (
             SELECT chain, open, total FROM chain_tallies WHERE experiment_id = ? ORDER BY chain)",
    )
    .bind(experiment_id.as_str())
    .fetch_one(conn)
    .await
    .map_err(convert_sqlx_err)?;
    unpack_rows(packed, "chain loads")
}

/// The state of one annealing chain, if it has been created.
pub async fn get_chain(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    chain: i64,
) -> Result<Option<ChainRow>, MasterError> {
    sqlx::query_as::<_, ChainRow>("SELECT * FROM chains WHERE experiment_id = ? AND chain = ?")
        .bind(experiment_id.as_str())
        .bind(chain)
        .fetch_optional(conn)
        .await
        .map_err(convert_sqlx_err)
}

/// Every chain of an experiment, by index.
pub async fn list_chains(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<ChainRow>, MasterError> {
    sqlx::query_as::<_, ChainRow>("SELECT * FROM chains WHERE experiment_id = ? ORDER BY chain")
        .bind(experiment_id.as_str())
        .fetch_all(conn)
        .await
        .map_err(convert_sqlx_err)
}

/// Inserts or replaces a chain's state.
pub async fn save_chain(conn: &mut SqliteConnection, c: &ChainRow) -> Result<(), MasterError> {
    sqlx::query(
        "INSERT OR REPLACE INTO chains (experiment_id, chain, temperature, current_trial_id,
             best_score, since_improvement, results, accepted, reheats)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(c.experiment_id.as_str())
    .bind(c.chain)
    .bind(c.temperature)
    .bind(c.current_trial_id.as_ref().map(TrialId::as_str))
    .bind(c.best_score)
    .bind(c.since_improvement)
    .bind(c.results)
    .bind(c.accepted)
    .bind(c.reheats)
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(())
}

/// Marks a trial failed (or cancelled) with a reason.
pub async fn end_trial(
    conn: &mut SqliteConnection,
    trial_id: &TrialId,
    status: TrialStatus,
    error: &str,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query("UPDATE trials SET status = ?, error = ?, lease_deadline_ms = NULL, finished_at_ms = ? WHERE id = ?")
        .bind(status.as_str())
        .bind(error)
        .bind(now_ms)
        .bind(trial_id.as_str())
        .execute(conn)
        .await
        .map_err(convert_sqlx_err)?;
    Ok(())
}

/// Puts a held trial back in the queue as a new attempt.
pub async fn requeue_trial(
    conn: &mut SqliteConnection,
    trial_id: &TrialId,
    error: &str,
) -> Result<(), MasterError> {
    sqlx::query(
        "UPDATE trials SET status = 'queued', attempt = attempt + 1, worker_id = NULL, lease_deadline_ms = NULL,
             epoch = 0, error = ?
          WHERE id = ?",
    )
    .bind(error)
    .bind(trial_id.as_str())
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(())
}

/// Cancels every queued trial of an experiment.
pub async fn cancel_queued(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    reason: &str,
    now_ms: i64,
) -> Result<u64, MasterError> {
    let r = sqlx::query(
        "UPDATE trials SET status = 'cancelled', error = ?, finished_at_ms = ? WHERE experiment_id = ? AND status = 'queued'",
    )
    .bind(reason)
    .bind(now_ms)
    .bind(experiment_id.as_str())
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(r.rows_affected())
}

/// Held trials whose lease ran out before `now_ms`.
pub async fn expired_leases(
    conn: &mut SqliteConnection,
    now_ms: i64,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE status IN ('leased', 'running') AND lease_deadline_ms < ? ORDER BY seq",
    )
    .bind(now_ms)
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// Gives every held trial at least until `deadline_ms`: after a master restart, workers get a
/// full lease period to reconnect before their trials are taken back.
pub async fn extend_held_leases(
    conn: &mut SqliteConnection,
    deadline_ms: i64,
) -> Result<u64, MasterError> {
    let r = sqlx::query(
        "UPDATE trials SET lease_deadline_ms = MAX(COALESCE(lease_deadline_ms, 0), ?)
          WHERE status IN ('leased', 'running')",
    )
    .bind(deadline_ms)
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(r.rows_affected())
}

/// Trials a worker holds.
pub async fn trials_held_by(
    conn: &mut SqliteConnection,
    worker_id: &WorkerId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE worker_id = ? AND status IN ('leased', 'running')",
    )
    .bind(worker_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}

/// Keeps a result that arrived for a superseded attempt, as history.
pub async fn insert_late_result(
    conn: &mut SqliteConnection,
    trial_id: &TrialId,
    attempt: i64,
    worker_id: &WorkerId,
    result: &TrialResult,
    reason: &str,
    now_ms: i64,
) -> Result<(), MasterError> {
    let metrics =
        serde_json::to_string(&result.metrics).map_err(|e| MasterError::Internal(e.to_string()))?;
    sqlx::query(
        "INSERT INTO late_results (trial_id, attempt, worker_id, score, metrics_json, reason, received_at_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(trial_id.as_str())
    .bind(attempt)
    .bind(worker_id.as_str())
    .bind(result.score)
    .bind(metrics)
    .bind(reason)
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(())
}

// ---- workers -----------------------------------------------------------------------------------

/// Registers a worker.
pub async fn insert_worker(
    conn: &mut SqliteConnection,
    id: &WorkerId,
    name: &str,
    device: &str,
    slots: u32,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "INSERT INTO workers (id, name, device, slots, status, registered_at_ms, last_seen_ms)
         VALUES (?, ?, ?, ?, 'active', ?, ?)",
    )
    .bind(id.as_str())
    .bind(name)
    .bind(device)
    .bind(slots as i64)
    .bind(now_ms)
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(convert_sqlx_err)?;
    Ok(())
}

/// Whether a worker with this id is registered and has not left.
pub async fn worker_is_active(
    conn: &mut SqliteConnection,
    id: &WorkerId,
) -> Result<bool, MasterError> {
    let row: Option<(String,)> = sqlx::query_as("SELECT status FROM workers WHERE id = ?")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(convert_sqlx_err)?;
    Ok(matches!(row, Some((s,)) if s == "active"))
}

/// Records that a worker was seen now.
pub async fn touch_worker(
    conn: &mut SqliteConnection,
    id: &WorkerId,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query("UPDATE workers SET last_seen_ms = ? WHERE id = ?")
        .bind(now_ms)
        .bind(id.as_str())
        .execute(conn)
        .await
        .map_err(convert_sqlx_err)?;
    Ok(())
}

/// Marks a worker as gone.
pub async fn worker_left(conn: &mut SqliteConnection, id: &WorkerId) -> Result<(), MasterError> {
    sqlx::query("UPDATE workers SET status = 'left' WHERE id = ?")
        .bind(id.as_str())
        .execute(conn)
        .await
        .map_err(convert_sqlx_err)?;
    Ok(())
}

/// Training slots of the workers seen since `since_ms`.
pub async fn connected_slots(
    conn: &mut SqliteConnection,
    since_ms: i64,
) -> Result<u32, MasterError> {
    let (_, slots) = reads::connected(conn, since_ms).await?;
    Ok(slots as u32)
}

/// The experiment's most recent `limit` completed training trials with a score, newest first,
/// each with its parent's score: a bounded read (the `(status, experiment_id, seq)` index,
/// walked backwards), whatever the pool's size.
pub async fn recent_completed_for_predictor(
    conn: &mut SqliteConnection,
    experiment_id: &ExperimentId,
    limit: i64,
) -> Result<Vec<PredictorHistoryRow>, MasterError> {
    sqlx::query_as::<_, PredictorHistoryRow>(
        "SELECT t.genome_json, t.hparams_json, t.score, t.inherit_from IS NOT NULL AS inherits,
                p.score AS parent_score
           FROM trials t LEFT JOIN trials p ON p.id = t.parent_id
          WHERE t.status = 'completed' AND t.experiment_id = ? AND t.kind = 'train'
            AND t.score IS NOT NULL
          ORDER BY t.seq DESC LIMIT ?",
    )
    .bind(experiment_id.as_str())
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(convert_sqlx_err)
}
