//! The history model pool on PostgreSQL (`master serve --db postgres://…`): every operation of
//! the store, with the SQLite backend's names, parameters and meaning, in PostgreSQL's SQL.
//! Each takes a connection first, so callers compose several into one transaction.
//!
//! What differs from SQLite:
//! - Several masters may share one database. Leasing picks its trial `FOR UPDATE SKIP LOCKED`,
//!   so two transactions leasing at once get two different trials, never the same one and
//!   never none while another is queued; [`next_seq`] takes a transaction-scoped advisory lock
//!   per experiment, so two proposals for one experiment cannot pick the same `seq`.
//! - The tallies (`trial_tallies`, `chain_tallies`) are kept by a PL/pgSQL trigger; a write
//!   that moves a trial between statuses locks the two tally rows it changes until its
//!   transaction ends, so concurrent status changes of one experiment's trials (two leases
//!   included) take turns there. A transaction that changes several trials may then be chosen
//!   as a deadlock victim (`40P01`); [`convert_pg_err`] reports it, like a serialization
//!   failure (`40001`), as aborted and retryable.
//! - Text keys are ordered `COLLATE "C"` (byte order, as SQLite compares them) where an order
//!   is part of the result.
//! - Aggregates are cast back to `BIGINT` (`SUM` of a `BIGINT` is a `NUMERIC`), and
//!   `trials.accepted` is a `BOOLEAN`.

pub mod election;
pub mod final_phase;
mod migrations;
pub mod reads;
#[cfg(test)]
mod start_tests;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::contract::types::*;
use super::error::{classify, StoreError};
use super::model::parse_epoch_metrics;
use super::{parse_text, BASE_CANDIDATES};
use super::{Backend, PoolTx, TrialKind};
use crate::leader::Election;

/// Connections a master keeps open to the database.
pub const POOL_SIZE: u32 = 8;

/// SQLSTATEs meaning "this transaction was rolled back, try again": serialization failure,
/// deadlock victim, lock not available.
const RETRY_CODES: &[&str] = &["40001", "40P01", "55P03"];

/// Maps a sqlx error into the crate's error type.
pub fn convert_pg_err(e: sqlx::Error) -> MasterError {
    match e {
        sqlx::Error::RowNotFound => MasterError::NotFound("row".into()),
        other => MasterError::Store(StoreError::new(
            classify(&other, RETRY_CODES),
            other.to_string(),
        )),
    }
}

/// How long [`connect`] keeps trying a database it cannot reach at start-up.
pub const CONNECT_RETRY_FOR: Duration = Duration::from_secs(30);

/// Connects to the database `url` names (a pool of [`POOL_SIZE`]), retrying for
/// [`CONNECT_RETRY_FOR`] while it cannot be reached, applies the embedded migrations and
/// returns the pool. A malformed URL, a refused login or a schema from a newer release fail at
/// once, each with its own message; the URL's password never appears in one.
pub async fn connect(url: &str) -> Result<PgPool, MasterError> {
    let options = PgConnectOptions::from_str(url).map_err(|e| {
        MasterError::InvalidArgument(format!(
            "malformed database URL {}: {e}",
            crate::store::redact_url(url)
        ))
    })?;
    connect_retrying(options, CONNECT_RETRY_FOR).await
}

/// [`connect_with`], retrying with a doubling delay (from half a second) while the server
/// cannot be reached, for at most `retry_for`.
pub async fn connect_retrying(
    options: PgConnectOptions,
    retry_for: Duration,
) -> Result<PgPool, MasterError> {
    let started = std::time::Instant::now();
    let target = format!("{}:{}", options.get_host(), options.get_port());
    let mut delay = Duration::from_millis(500);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match probe(&options).await {
            Ok(()) => return connect_with(options).await,
            Err(MasterError::Store(e))
                if e.kind == super::StoreErrorKind::Unreachable
                    && started.elapsed() + delay < retry_for =>
            {
                tracing::warn!(database = %target, attempt = attempts, error = %e, retry_in_s = delay.as_secs_f64(), "cannot reach PostgreSQL yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
            Err(MasterError::Store(e)) if e.kind == super::StoreErrorKind::Unreachable => {
                return Err(MasterError::Unavailable(format!(
                    "cannot reach PostgreSQL at {target} after {attempts} attempts over {:.0} s: {e}",
                    started.elapsed().as_secs_f64()
                )))
            }
            Err(other) => return Err(other),
        }
    }
}

/// How long one attempt to reach the server may take at start-up (a silent network).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection to the server, closed again: whether it can be reached and logged into,
/// quickly (a pool would retry a refused connection until its acquire timeout).
async fn probe(options: &PgConnectOptions) -> Result<(), MasterError> {
    use sqlx::Connection;
    let conn = tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(options))
        .await
        .map_err(|_| {
            MasterError::Store(StoreError::new(
                super::StoreErrorKind::Unreachable,
                format!("no answer within {PROBE_TIMEOUT:?}"),
            ))
        })?
        .map_err(convert_pg_err)?;
    conn.close().await.ok();
    Ok(())
}

/// [`connect`] with options already parsed (tests set a `search_path`), without retries.
pub async fn connect_with(options: PgConnectOptions) -> Result<PgPool, MasterError> {
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .map_err(convert_pg_err)?;
    migrations::migrator()
        .await
        .map_err(|e| MasterError::Store(StoreError::other(e.to_string())))?
        .run(&pool)
        .await
        .map_err(|e| super::error::migration_error("PostgreSQL", migrations::MIGRATIONS, e))?;
    Ok(pool)
}

/// The PostgreSQL backend: a connection pool on one database, which several masters may share.
#[derive(Clone, Debug)]
pub struct PgBackend {
    pool: PgPool,
    /// What write transactions check before they change anything (free until an election).
    fence: Arc<election::Fence>,
}

impl PgBackend {
    /// Connects to the database `url` names and applies the migrations ([`connect`]).
    pub async fn connect(url: &str) -> Result<PgBackend, MasterError> {
        Ok(PgBackend::from_pool(connect(url).await?))
    }

    /// A backend on a pool already connected and migrated.
    pub fn from_pool(pool: PgPool) -> PgBackend {
        PgBackend {
            pool,
            fence: Arc::new(election::Fence::free()),
        }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The epoch this backend's writes are fenced with ([`election::Fence`]).
    pub fn fence_epoch(&self) -> i64 {
        self.fence.epoch()
    }
}

#[async_trait::async_trait]
impl Backend for PgBackend {
    /// Starts a write transaction (`READ COMMITTED`, PostgreSQL's default). The start runs in
    /// its own task, so a caller cancelled meanwhile cannot leave a begun transaction on a
    /// pooled connection without a `Transaction` to roll it back.
    async fn begin(&self) -> Result<Box<dyn PoolTx>, MasterError> {
        let pool = self.pool.clone();
        let mut tx = tokio::spawn(async move { pool.begin().await })
            .await
            .map_err(|e| {
                MasterError::Store(StoreError::other(format!("starting a transaction: {e}")))
            })?
            .map_err(convert_pg_err)?;
        // Dropped on a refusal: the transaction rolls back.
        self.fence.check(&mut tx).await?;
        Ok(Box::new(PgTx::Write(tx)))
    }

    async fn read(&self) -> Result<Box<dyn PoolTx>, MasterError> {
        let conn = self.pool.acquire().await.map_err(convert_pg_err)?;
        Ok(Box::new(PgTx::Read(conn)))
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn election(&self, name: &str) -> Result<Box<dyn Election>, MasterError> {
        let options = (*self.pool.connect_options()).clone();
        Ok(Box::new(election::PgElection::new(
            options,
            self.fence.clone(),
            name,
        )))
    }
}

/// A write transaction or a read handle on PostgreSQL.
pub enum PgTx {
    /// A write transaction (rolled back on drop unless committed).
    Write(Transaction<'static, Postgres>),
    /// A pooled connection for reads.
    Read(PoolConnection<Postgres>),
}

impl PgTx {
    /// The connection the transaction (or read handle) runs on.
    pub fn connection(&mut self) -> &mut PgConnection {
        match self {
            PgTx::Write(tx) => tx,
            PgTx::Read(conn) => conn,
        }
    }

    async fn finish(self) -> Result<(), MasterError> {
        match self {
            PgTx::Write(tx) => tx.commit().await.map_err(convert_pg_err),
            PgTx::Read(_) => Ok(()),
        }
    }
}

/// Every operation's function, in one namespace for the contract's delegation.
mod ops {
    pub use super::final_phase::*;
    pub use super::reads::*;
    pub use super::*;
}

store_operations!(delegate_pool_tx! { PgTx, ops });

/// Checks that the database answers.
pub async fn ping(conn: &mut PgConnection) -> Result<(), MasterError> {
    sqlx::query("SELECT 1")
        .execute(conn)
        .await
        .map_err(convert_pg_err)?;
    Ok(())
}

// ---- experiments -------------------------------------------------------------------------------

/// Inserts a new running experiment.
pub async fn insert_experiment(
    conn: &mut PgConnection,
    id: &ExperimentId,
    name: &str,
    spec_json: &str,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "INSERT INTO experiments (id, name, spec_json, status, created_at_ms)
         VALUES ($1, $2, $3, 'running', $4)",
    )
    .bind(id.as_str())
    .bind(name)
    .bind(spec_json)
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(())
}

/// The experiment with this id, if any.
pub async fn get_experiment(
    conn: &mut PgConnection,
    id: &ExperimentId,
) -> Result<Option<ExperimentRow>, MasterError> {
    sqlx::query_as::<_, ExperimentRow>("SELECT * FROM experiments WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(convert_pg_err)
}

/// All experiments, newest first.
pub async fn list_experiments(conn: &mut PgConnection) -> Result<Vec<ExperimentRow>, MasterError> {
    sqlx::query_as::<_, ExperimentRow>(
        "SELECT * FROM experiments ORDER BY created_at_ms DESC, id COLLATE \"C\"",
    )
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)
}

/// Experiments still running, oldest first.
pub async fn running_experiments(
    conn: &mut PgConnection,
) -> Result<Vec<ExperimentRow>, MasterError> {
    sqlx::query_as::<_, ExperimentRow>(
        "SELECT * FROM experiments WHERE status = 'running'
          ORDER BY created_at_ms, id COLLATE \"C\"",
    )
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)
}

/// Marks an experiment finished.
pub async fn finish_experiment(
    conn: &mut PgConnection,
    id: &ExperimentId,
    status: ExperimentStatus,
    reason: &str,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "UPDATE experiments SET status = $1, status_reason = $2, finished_at_ms = $3 WHERE id = $4",
    )
    .bind(status.as_str())
    .bind(reason)
    .bind(now_ms)
    .bind(id.as_str())
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(())
}

/// Marks a running experiment stopped at `now_ms` (see [`ExperimentStatus::Stopped`]); a no-op
/// on one already stopped.
pub async fn stop_experiment(
    conn: &mut PgConnection,
    id: &ExperimentId,
    reason: &str,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "UPDATE experiments SET stopped_at_ms = COALESCE(stopped_at_ms, $1), status_reason = $2
          WHERE id = $3 AND status = 'running'",
    )
    .bind(now_ms)
    .bind(reason)
    .bind(id.as_str())
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(())
}

/// Lets a stopped experiment run again; the time it was stopped is added to `paused_ms`.
pub async fn resume_experiment(
    conn: &mut PgConnection,
    id: &ExperimentId,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "UPDATE experiments SET paused_ms = paused_ms + GREATEST(0, $1 - stopped_at_ms),
             stopped_at_ms = NULL, status_reason = ''
          WHERE id = $2 AND status = 'running' AND stopped_at_ms IS NOT NULL",
    )
    .bind(now_ms)
    .bind(id.as_str())
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(())
}

/// The trials of an experiment that workers hold now (leased or running).
pub async fn held_trials_of(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE status IN ('leased', 'running') AND experiment_id = $1
          ORDER BY seq",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)
}

/// Records the experiment's best trial.
pub async fn set_best_trial(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
    trial_id: &TrialId,
) -> Result<(), MasterError> {
    sqlx::query("UPDATE experiments SET best_trial_id = $1 WHERE id = $2")
        .bind(trial_id.as_str())
        .bind(experiment_id.as_str())
        .execute(conn)
        .await
        .map_err(convert_pg_err)?;
    Ok(())
}

// ---- trials ------------------------------------------------------------------------------------

/// Inserts a queued trial.
pub async fn insert_trial(
    conn: &mut PgConnection,
    t: &NewTrial,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "INSERT INTO trials (id, experiment_id, seq, parent_id, origin, genome_json, genome_hash,
             hparams_json, params, flops, seed, status, temperature, created_at_ms, chain,
             inherit_from, kind, seed_index, predicted_score, predicted_std)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'queued', $12, $13, $14, $15, $16,
             $17, $18, $19)",
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
    .map_err(convert_pg_err)?;
    Ok(())
}

/// The trial with this id, if any.
pub async fn get_trial(
    conn: &mut PgConnection,
    id: &TrialId,
) -> Result<Option<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>("SELECT * FROM trials WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(convert_pg_err)
}

/// All trials of an experiment, probes included, in proposal order (probes first).
pub async fn list_trials(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>("SELECT * FROM trials WHERE experiment_id = $1 ORDER BY seq")
        .bind(experiment_id.as_str())
        .fetch_all(conn)
        .await
        .map_err(convert_pg_err)
}

/// The training trials of an experiment (its pool: no probes), in proposal order.
pub async fn list_train_trials(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE experiment_id = $1 AND kind = 'train' ORDER BY seq",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)
}

/// The probe trials of an experiment, in the order they were queued (their seqs are −1, −2, …:
/// descending seq).
pub async fn list_probes(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE experiment_id = $1 AND kind = 'probe' ORDER BY seq DESC",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)
}

/// The seed indices an experiment's trials were queued for (transfer experiments record them).
pub async fn queued_seed_indices(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<i64>, MasterError> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT seed_index FROM trials
          WHERE experiment_id = $1 AND kind = 'train' AND seed_index IS NOT NULL",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(rows.into_iter().map(|(i,)| i).collect())
}

/// Every completed fine-tune of a transfer seed in the pool, across experiments, with the
/// metrics of the probe that measured its source model on the same task: the history the
/// learned predictor of S2 is fitted on. Pairs of `(fine-tune, probe metrics JSON)`.
pub async fn fine_tune_history(
    conn: &mut PgConnection,
) -> Result<Vec<(TrialRow, String)>, MasterError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.id, p.metrics_json FROM trials t
           JOIN trials p ON p.experiment_id = t.experiment_id AND p.kind = 'probe'
                        AND p.status = 'completed' AND p.inherit_from = t.inherit_from
          WHERE t.kind = 'train' AND t.status = 'completed' AND t.seed_index IS NOT NULL
            AND t.score IS NOT NULL
          ORDER BY t.created_at_ms, t.id COLLATE \"C\"",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(convert_pg_err)?;
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
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE experiment_id = $1 AND kind = 'train' AND status = 'completed'
           AND accepted ORDER BY seq",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)
}

/// `(id, seq, score)` of the experiment's best [`BASE_CANDIDATES`] accepted trials by score
/// (index `trials_accepted_by_score`), in proposal order.
pub async fn base_candidates(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<(TrialId, i64, f64)>, MasterError> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT id, seq, score FROM trials
          WHERE experiment_id = $1 AND kind = 'train' AND status = 'completed' AND accepted
          ORDER BY score DESC, seq LIMIT $2",
    )
    .bind(experiment_id.as_str())
    .bind(BASE_CANDIDATES)
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)?;
    let mut rows = rows
        .into_iter()
        .map(|(id, seq, score)| Ok((parse_text("id", &id)?, seq, score)))
        .collect::<Result<Vec<_>, MasterError>>()?;
    rows.sort_by_key(|r| r.1);
    Ok(rows)
}

/// The experiment's training trials with `seq < below` (its seed trials), in proposal order.
pub async fn train_trials_below(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
    below: i64,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE experiment_id = $1 AND seq >= 0 AND seq < $2 AND kind = 'train'
          ORDER BY seq",
    )
    .bind(experiment_id.as_str())
    .bind(below)
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)
}

/// One page of an experiment's trials in seq order: those after `after_seq` (all when None),
/// with `status` when given, at most `limit`.
pub async fn list_trials_page(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
    after_seq: Option<i64>,
    status: Option<TrialStatus>,
    limit: u32,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE experiment_id = $1 AND seq > $2
            AND ($3::TEXT IS NULL OR status = $3)
          ORDER BY seq LIMIT $4",
    )
    .bind(experiment_id.as_str())
    .bind(after_seq.unwrap_or(i64::MIN))
    .bind(status.map(TrialStatus::as_str))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)
}

/// The named metrics of a trial's last recorded epoch (up to its current epoch count, as
/// [`last_epoch_metrics`]), empty when none.
pub async fn trial_epoch_metrics(
    conn: &mut PgConnection,
    trial: &TrialRow,
) -> Result<BTreeMap<String, f64>, MasterError> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT metrics_json FROM trial_epochs WHERE trial_id = $1 AND epoch <= $2
          ORDER BY epoch DESC LIMIT 1",
    )
    .bind(trial.id.as_str())
    .bind(trial.epoch)
    .fetch_optional(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(parse_epoch_metrics(row.and_then(|(json,)| json).as_deref()))
}

/// [`trial_epoch_metrics`] for several trials in one query (a page of a listing); trials whose
/// last recorded epoch has no metrics are absent.
pub async fn trials_epoch_metrics(
    conn: &mut PgConnection,
    trials: &[TrialRow],
) -> Result<HashMap<TrialId, BTreeMap<String, f64>>, MasterError> {
    if trials.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = trials.iter().map(|t| t.id.as_str()).collect();
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT t.id, e.metrics_json FROM trials t JOIN trial_epochs e ON e.trial_id = t.id
          WHERE t.id = ANY($1) AND e.metrics_json IS NOT NULL
            AND e.epoch = (SELECT MAX(l.epoch) FROM trial_epochs l
                            WHERE l.trial_id = t.id AND l.epoch <= t.epoch)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)?;
    crate::store::model::epoch_metrics_by_trial(rows)
}

/// Counts an experiment's training trials by status (probes are counted by [`probe_counts`]).
pub async fn trial_counts(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<TrialCounts, MasterError> {
    counts_of_kind(conn, experiment_id, TrialKind::Train).await
}

/// Counts an experiment's probe trials by status.
pub async fn probe_counts(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<TrialCounts, MasterError> {
    counts_of_kind(conn, experiment_id, TrialKind::Probe).await
}

async fn counts_of_kind(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
    kind: TrialKind,
) -> Result<TrialCounts, MasterError> {
    // Kept by the tally trigger (0001_init.sql): one row per status, whatever the pool's size.
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, n FROM trial_tallies WHERE experiment_id = $1 AND kind = $2",
    )
    .bind(experiment_id.as_str())
    .bind(kind.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)?;
    let mut counts = TrialCounts::default();
    for (status, n) in rows {
        let n = n.max(0) as u32;
        match status.parse::<TrialStatus>()? {
            TrialStatus::Queued => counts.queued = n,
            TrialStatus::Leased => counts.leased = n,
            TrialStatus::Running => counts.running = n,
            TrialStatus::Completed => counts.completed = n,
            TrialStatus::Pruned => counts.pruned = n,
            TrialStatus::Failed => counts.failed = n,
            TrialStatus::Cancelled => counts.cancelled = n,
        }
    }
    Ok(counts)
}

/// The next sequence number of an experiment.
///
/// Called in a transaction, it first takes a transaction-scoped advisory lock on the
/// experiment, held until that transaction ends: another master proposing for the same
/// experiment waits, then sees this one's trial, instead of picking the same `seq` (which the
/// unique `(experiment_id, seq)` would refuse at commit). Outside a transaction the lock ends
/// with the statement, and the number is only a reading.
pub async fn next_seq(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<i64, MasterError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('explore.next_seq:' || $1, 0))")
        .bind(experiment_id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(convert_pg_err)?;
    let (n,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(seq) + 1, 0) FROM trials WHERE experiment_id = $1")
            .bind(experiment_id.as_str())
            .fetch_one(conn)
            .await
            .map_err(convert_pg_err)?;
    Ok(n)
}

/// Whether the experiment already has a trial with this architecture and these hyperparameters.
pub async fn candidate_exists(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
    genome_hash: &str,
    hparams_json: &str,
) -> Result<bool, MasterError> {
    // `md5(hparams_json)` matches the index `trials_by_candidate`; the text comparison after it
    // is what decides.
    let (exists,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (
             SELECT 1 FROM trials
              WHERE experiment_id = $1 AND genome_hash = $2 AND md5(hparams_json) = md5($3)
                AND hparams_json = $3 AND kind = 'train'
                AND status NOT IN ('failed', 'cancelled'))",
    )
    .bind(experiment_id.as_str())
    .bind(genome_hash)
    .bind(hparams_json)
    .fetch_one(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(exists)
}

/// Leases the oldest queued trial of the oldest running experiment to `worker_id`.
///
/// The candidate is locked `FOR UPDATE SKIP LOCKED`: a trial another transaction is leasing
/// (on this master or another one sharing the database) is skipped, not waited for, so
/// concurrent leases get different trials. The lock lasts until the caller's transaction ends.
pub async fn lease_next_trial(
    conn: &mut PgConnection,
    worker_id: &WorkerId,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Option<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "UPDATE trials SET status = 'leased', worker_id = $1, lease_deadline_ms = $2, epoch = 0,
             started_at_ms = COALESCE(started_at_ms, $3)
          WHERE id = (
              SELECT t.id FROM trials t JOIN experiments e ON e.id = t.experiment_id
               WHERE t.status = 'queued' AND e.status = 'running' AND e.stopped_at_ms IS NULL
               ORDER BY e.created_at_ms, t.seq
               LIMIT 1
               FOR UPDATE OF t SKIP LOCKED)
            AND status = 'queued'
         RETURNING *",
    )
    .bind(worker_id.as_str())
    .bind(now_ms + lease_ms)
    .bind(now_ms)
    .fetch_optional(conn)
    .await
    .map_err(convert_pg_err)
}

/// Whether leasing one more trial to `worker_id` would be a prefetch that starves another
/// worker: `worker_id` already holds a trial for each of its slots, and the runnable queue has
/// no more trials than the free slots of the other live workers (seen since `since_ms`). False
/// when nothing is queued.
pub async fn prefetch_would_starve(
    conn: &mut PgConnection,
    worker_id: &WorkerId,
    since_ms: i64,
) -> Result<bool, MasterError> {
    let (slots, held): (i64, i64) = sqlx::query_as(
        "SELECT w.slots, (SELECT COUNT(*) FROM trials
                           WHERE worker_id = w.id AND status IN ('leased', 'running'))
           FROM workers w WHERE w.id = $1",
    )
    .bind(worker_id.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(convert_pg_err)?;
    if held < slots {
        return Ok(false);
    }
    let (idle_elsewhere,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(SUM(GREATEST(w.slots - COALESCE(h.n, 0), 0)), 0)::BIGINT
           FROM workers w
           LEFT JOIN (SELECT worker_id, COUNT(*) AS n FROM trials
                       WHERE status IN ('leased', 'running') GROUP BY worker_id) h
             ON h.worker_id = w.id
          WHERE w.status = 'active' AND w.last_seen_ms >= $1 AND w.id <> $2",
    )
    .bind(since_ms)
    .bind(worker_id.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(convert_pg_err)?;
    if idle_elsewhere == 0 {
        return Ok(false);
    }
    // Counted up to one past the idle slots: all that decides. An empty queue starves no one.
    let (queued,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (
            SELECT 1 FROM trials t JOIN experiments e ON e.id = t.experiment_id
             WHERE t.status = 'queued' AND e.status = 'running' AND e.stopped_at_ms IS NULL
             LIMIT $1) runnable",
    )
    .bind(idle_elsewhere + 1)
    .fetch_one(&mut *conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(queued > 0 && queued <= idle_elsewhere)
}

/// Extends the lease of a held trial and records progress; false when `(worker, attempt)` no
/// longer holds it.
pub async fn heartbeat_trial(
    conn: &mut PgConnection,
    trial_id: &TrialId,
    worker_id: &WorkerId,
    attempt: i64,
    epoch: i64,
    started: bool,
    deadline_ms: i64,
) -> Result<bool, MasterError> {
    let result = sqlx::query(
        "UPDATE trials SET lease_deadline_ms = $1, epoch = GREATEST(epoch, $2),
             status = CASE WHEN $2 > 0 OR $3 THEN 'running' ELSE status END
          WHERE id = $4 AND worker_id = $5 AND attempt = $6 AND status IN ('leased', 'running')",
    )
    .bind(deadline_ms)
    .bind(epoch)
    .bind(started)
    .bind(trial_id.as_str())
    .bind(worker_id.as_str())
    .bind(attempt)
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(result.rows_affected() == 1)
}

/// Records a completed trial.
pub async fn complete_trial(
    conn: &mut PgConnection,
    trial_id: &TrialId,
    result: &TrialResult,
    accepted: bool,
    temperature: f64,
    now_ms: i64,
) -> Result<(), MasterError> {
    let metrics =
        serde_json::to_string(&result.metrics).map_err(|e| MasterError::Internal(e.to_string()))?;
    sqlx::query(
        "UPDATE trials SET status = 'completed', score = $1, metrics_json = $2,
             checkpoint_sha256 = $3, accepted = $4, temperature = $5, epoch = $6,
             lease_deadline_ms = NULL, finished_at_ms = $7
          WHERE id = $8",
    )
    .bind(result.score)
    .bind(metrics)
    .bind(&result.checkpoint_sha256)
    .bind(accepted)
    .bind(temperature)
    .bind(i64::from(result.epochs_run))
    .bind(now_ms)
    .bind(trial_id.as_str())
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(())
}

/// Records a trial that early stopping ended after `epoch` epochs with validation accuracy
/// `score`; it is never a base for proposals.
pub async fn prune_trial(
    conn: &mut PgConnection,
    trial_id: &TrialId,
    score: f64,
    epoch: i64,
    reason: &str,
    temperature: f64,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "UPDATE trials SET status = 'pruned', score = $1, epoch = $2, error = $3, accepted = FALSE,
             temperature = $4, lease_deadline_ms = NULL, finished_at_ms = $5
          WHERE id = $6",
    )
    .bind(score)
    .bind(epoch)
    .bind(reason)
    .bind(temperature)
    .bind(now_ms)
    .bind(trial_id.as_str())
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(())
}

/// Records the validation accuracy a trial reached after `epoch`, with the objective's named
/// metrics of that epoch (stored as NULL when there are none). A repeated report, e.g. from a
/// retried heartbeat or a new attempt, replaces the old one.
pub async fn record_epoch(
    conn: &mut PgConnection,
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
        "INSERT INTO trial_epochs (trial_id, epoch, val_accuracy, train_loss, metrics_json)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (trial_id, epoch) DO UPDATE SET val_accuracy = EXCLUDED.val_accuracy,
             train_loss = EXCLUDED.train_loss, metrics_json = EXCLUDED.metrics_json",
    )
    .bind(trial_id.as_str())
    .bind(epoch)
    .bind(val_accuracy)
    .bind(train_loss)
    .bind(metrics_json)
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(())
}

/// A trial's epoch curve in epoch order.
pub async fn epoch_curve(
    conn: &mut PgConnection,
    trial_id: &TrialId,
) -> Result<Vec<EpochRow>, MasterError> {
    sqlx::query_as::<_, EpochRow>(
        "SELECT trial_id, epoch, val_accuracy, train_loss, metrics_json FROM trial_epochs
          WHERE trial_id = $1 ORDER BY epoch",
    )
    .bind(trial_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)
}

/// Per trial of an experiment, the named metrics of its last recorded epoch (the highest one up
/// to the trial's current epoch count). Trials whose last epoch has no metrics are absent.
pub async fn last_epoch_metrics(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<HashMap<TrialId, BTreeMap<String, f64>>, MasterError> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT t.id, e.metrics_json FROM trials t JOIN trial_epochs e ON e.trial_id = t.id
          WHERE t.experiment_id = $1 AND e.metrics_json IS NOT NULL
            AND e.epoch = (SELECT MAX(l.epoch) FROM trial_epochs l
                            WHERE l.trial_id = t.id AND l.epoch <= t.epoch)",
    )
    .bind(experiment_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)?;
    crate::store::model::epoch_metrics_by_trial(rows)
}

/// Validation accuracies that the experiment's other trials reported after `epoch`.
pub async fn peer_accuracies(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
    trial_id: &TrialId,
    epoch: i64,
) -> Result<Vec<f64>, MasterError> {
    let rows: Vec<(f64,)> = sqlx::query_as(
        "SELECT e.val_accuracy FROM trial_epochs e JOIN trials t ON t.id = e.trial_id
          WHERE t.experiment_id = $1 AND e.epoch = $2 AND e.trial_id <> $3",
    )
    .bind(experiment_id.as_str())
    .bind(epoch)
    .bind(trial_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(rows.into_iter().map(|(v,)| v).collect())
}

/// How many training epochs the experiment has spent and committed (see [`EpochUsage`]).
pub async fn epoch_usage(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<EpochUsage, MasterError> {
    // Finished trials from the tallies; open ones (queued or held: as many as there are worker
    // slots) row by row through the status index.
    let (finished,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(SUM(epochs), 0)::BIGINT FROM trial_tallies
          WHERE experiment_id = $1 AND kind = 'train'
            AND status IN ('completed', 'pruned', 'failed')",
    )
    .bind(experiment_id.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(convert_pg_err)?;
    // As SQLite's `MAX(epoch, json_extract(hparams_json, '$.epochs'))`, which is NULL (and so
    // left out of the sum) when the hyperparameters name no numeric epoch count.
    let (held, open): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(CASE WHEN status IN ('leased', 'running') THEN epoch ELSE 0 END),
                         0)::BIGINT,
                COALESCE(SUM(CASE WHEN planned IS NULL THEN NULL
                                  ELSE GREATEST(epoch::NUMERIC, planned) END), 0)::BIGINT
           FROM (SELECT status, epoch,
                        CASE WHEN json_typeof(hparams_json::json -> 'epochs') = 'number'
                             THEN (hparams_json::json ->> 'epochs')::NUMERIC END AS planned
                   FROM trials
                  WHERE status IN ('queued', 'leased', 'running') AND experiment_id = $1
                    AND kind = 'train') open_trials",
    )
    .bind(experiment_id.as_str())
    .fetch_one(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(EpochUsage {
        spent: (finished + held).max(0) as u64,
        committed: (finished + open).max(0) as u64,
    })
}

/// Per chain: `(chain, queued and held trials, all trials)` of an experiment.
pub async fn chain_loads(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<(i64, i64, i64)>, MasterError> {
    // Kept by the tally trigger (0001_init.sql).
    sqlx::query_as("SELECT chain, open, total FROM chain_tallies WHERE experiment_id = $1")
        .bind(experiment_id.as_str())
        .fetch_all(conn)
        .await
        .map_err(convert_pg_err)
}

/// The state of one annealing chain, if it has been created.
pub async fn get_chain(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
    chain: i64,
) -> Result<Option<ChainRow>, MasterError> {
    sqlx::query_as::<_, ChainRow>("SELECT * FROM chains WHERE experiment_id = $1 AND chain = $2")
        .bind(experiment_id.as_str())
        .bind(chain)
        .fetch_optional(conn)
        .await
        .map_err(convert_pg_err)
}

/// Every chain of an experiment, by index.
pub async fn list_chains(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
) -> Result<Vec<ChainRow>, MasterError> {
    sqlx::query_as::<_, ChainRow>("SELECT * FROM chains WHERE experiment_id = $1 ORDER BY chain")
        .bind(experiment_id.as_str())
        .fetch_all(conn)
        .await
        .map_err(convert_pg_err)
}

/// Inserts or replaces a chain's state.
pub async fn save_chain(conn: &mut PgConnection, c: &ChainRow) -> Result<(), MasterError> {
    sqlx::query(
        "INSERT INTO chains (experiment_id, chain, temperature, current_trial_id, best_score,
             since_improvement, results, accepted, reheats)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (experiment_id, chain) DO UPDATE SET temperature = EXCLUDED.temperature,
             current_trial_id = EXCLUDED.current_trial_id, best_score = EXCLUDED.best_score,
             since_improvement = EXCLUDED.since_improvement, results = EXCLUDED.results,
             accepted = EXCLUDED.accepted, reheats = EXCLUDED.reheats",
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
    .map_err(convert_pg_err)?;
    Ok(())
}

/// Marks a trial failed (or cancelled) with a reason.
pub async fn end_trial(
    conn: &mut PgConnection,
    trial_id: &TrialId,
    status: TrialStatus,
    error: &str,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "UPDATE trials SET status = $1, error = $2, lease_deadline_ms = NULL, finished_at_ms = $3
          WHERE id = $4",
    )
    .bind(status.as_str())
    .bind(error)
    .bind(now_ms)
    .bind(trial_id.as_str())
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(())
}

/// Puts a held trial back in the queue as a new attempt.
pub async fn requeue_trial(
    conn: &mut PgConnection,
    trial_id: &TrialId,
    error: &str,
) -> Result<(), MasterError> {
    sqlx::query(
        "UPDATE trials SET status = 'queued', attempt = attempt + 1, worker_id = NULL,
             lease_deadline_ms = NULL, epoch = 0, error = $1
          WHERE id = $2",
    )
    .bind(error)
    .bind(trial_id.as_str())
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(())
}

/// Cancels every queued trial of an experiment.
pub async fn cancel_queued(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
    reason: &str,
    now_ms: i64,
) -> Result<u64, MasterError> {
    let r = sqlx::query(
        "UPDATE trials SET status = 'cancelled', error = $1, finished_at_ms = $2
          WHERE experiment_id = $3 AND status = 'queued'",
    )
    .bind(reason)
    .bind(now_ms)
    .bind(experiment_id.as_str())
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(r.rows_affected())
}

/// Held trials whose lease ran out before `now_ms`.
pub async fn expired_leases(
    conn: &mut PgConnection,
    now_ms: i64,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE status IN ('leased', 'running') AND lease_deadline_ms < $1
          ORDER BY seq",
    )
    .bind(now_ms)
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)
}

/// Gives every held trial at least until `deadline_ms`: after a master restart, workers get a
/// full lease period to reconnect before their trials are taken back.
pub async fn extend_held_leases(
    conn: &mut PgConnection,
    deadline_ms: i64,
) -> Result<u64, MasterError> {
    let r = sqlx::query(
        "UPDATE trials SET lease_deadline_ms = GREATEST(COALESCE(lease_deadline_ms, 0), $1)
          WHERE status IN ('leased', 'running')",
    )
    .bind(deadline_ms)
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(r.rows_affected())
}

/// Trials a worker holds.
pub async fn trials_held_by(
    conn: &mut PgConnection,
    worker_id: &WorkerId,
) -> Result<Vec<TrialRow>, MasterError> {
    sqlx::query_as::<_, TrialRow>(
        "SELECT * FROM trials WHERE worker_id = $1 AND status IN ('leased', 'running')",
    )
    .bind(worker_id.as_str())
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)
}

/// Keeps a result that arrived for a superseded attempt, as history.
pub async fn insert_late_result(
    conn: &mut PgConnection,
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
        "INSERT INTO late_results (trial_id, attempt, worker_id, score, metrics_json, reason,
             received_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
    .map_err(convert_pg_err)?;
    Ok(())
}

// ---- workers -----------------------------------------------------------------------------------

/// Registers a worker.
pub async fn insert_worker(
    conn: &mut PgConnection,
    id: &WorkerId,
    name: &str,
    device: &str,
    slots: u32,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "INSERT INTO workers (id, name, device, slots, status, registered_at_ms, last_seen_ms)
         VALUES ($1, $2, $3, $4, 'active', $5, $5)",
    )
    .bind(id.as_str())
    .bind(name)
    .bind(device)
    .bind(i64::from(slots))
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(convert_pg_err)?;
    Ok(())
}

/// Whether a worker with this id is registered and has not left.
pub async fn worker_is_active(conn: &mut PgConnection, id: &WorkerId) -> Result<bool, MasterError> {
    let row: Option<(String,)> = sqlx::query_as("SELECT status FROM workers WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(convert_pg_err)?;
    Ok(matches!(row, Some((s,)) if s == "active"))
}

/// Records that a worker was seen now.
pub async fn touch_worker(
    conn: &mut PgConnection,
    id: &WorkerId,
    now_ms: i64,
) -> Result<(), MasterError> {
    sqlx::query("UPDATE workers SET last_seen_ms = $1 WHERE id = $2")
        .bind(now_ms)
        .bind(id.as_str())
        .execute(conn)
        .await
        .map_err(convert_pg_err)?;
    Ok(())
}

/// Marks a worker as gone.
pub async fn worker_left(conn: &mut PgConnection, id: &WorkerId) -> Result<(), MasterError> {
    sqlx::query("UPDATE workers SET status = 'left' WHERE id = $1")
        .bind(id.as_str())
        .execute(conn)
        .await
        .map_err(convert_pg_err)?;
    Ok(())
}

/// Training slots of the workers seen since `since_ms`.
pub async fn connected_slots(conn: &mut PgConnection, since_ms: i64) -> Result<u32, MasterError> {
    let (_, slots) = reads::connected(conn, since_ms).await?;
    Ok(slots as u32)
}

/// The experiment's most recent `limit` completed training trials with a score, newest first,
/// each with its parent's score: a bounded read (the `(status, experiment_id, seq)` index,
/// walked backwards), whatever the pool's size.
pub async fn recent_completed_for_predictor(
    conn: &mut PgConnection,
    experiment_id: &ExperimentId,
    limit: i64,
) -> Result<Vec<PredictorHistoryRow>, MasterError> {
    sqlx::query_as::<_, PredictorHistoryRow>(
        "SELECT t.genome_json, t.hparams_json, t.score, t.inherit_from IS NOT NULL AS inherits,
                p.score AS parent_score
           FROM trials t LEFT JOIN trials p ON p.id = t.parent_id
          WHERE t.status = 'completed' AND t.experiment_id = $1 AND t.kind = 'train'
            AND t.score IS NOT NULL
          ORDER BY t.seq DESC LIMIT $2",
    )
    .bind(experiment_id.as_str())
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(convert_pg_err)
}
