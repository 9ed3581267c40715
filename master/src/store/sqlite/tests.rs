//! Tests of what is SQLite's own: migrations of pools written by earlier releases, file
//! handling, WAL reads beside a write, and the write lock. The store contract's shared suite is
//! `store/suite.rs`.

use super::*;
use crate::store::suite::*;
use crate::store::Store;

#[tokio::test]
async fn reopening_keeps_the_data_and_reapplies_no_migration() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    seeded(&store, &exp_a(), 1, 2).await;
    store.close().await;
    assert!(dir.path().join(DB_FILE).is_file());

    let store = Store::open(dir.path()).await.unwrap();
    let mut conn = store.conn().await.unwrap();
    assert_eq!(conn.list_trials(&exp_a()).await.unwrap().len(), 2);
    let (migrations,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(crate::store::sqlite::connection_of(&mut *conn).unwrap())
        .await
        .unwrap();
    assert_eq!(migrations, super::migrations::MIGRATIONS.len() as i64);
}

// A pool written by the first release (migration 0001 only) is upgraded in place: every row
// survives the rebuild of `trials`, foreign keys still hold, and the new status is accepted.
#[tokio::test]
async fn a_first_release_pool_is_upgraded_without_losing_rows() {
    let dir = tempfile::tempdir().unwrap();
    let only_first = dir.path().join("migrations");
    std::fs::create_dir_all(&only_first).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite/0001_init.sql"
        ),
        only_first.join("0001_init.sql"),
    )
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let options = SqliteConnectOptions::new()
        .filename(data.join(DB_FILE))
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(only_first.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    for statement in [
        "INSERT INTO experiments (id, name, spec_json, status, created_at_ms) VALUES ('exp-aaaaaaaaaaaaaaaa', 'old', '{}', 'running', 1)",
        "INSERT INTO trials (id, experiment_id, seq, origin, genome_json, genome_hash, hparams_json, params, flops, seed, status, epoch, score, created_at_ms) VALUES ('trial-0000000000000000', 'exp-aaaaaaaaaaaaaaaa', 0, 'seed', '{}', 'h0', '{}', 1, 1, 1, 'completed', 3, 0.9, 1)",
        "INSERT INTO trials (id, experiment_id, seq, parent_id, origin, genome_json, genome_hash, hparams_json, params, flops, seed, status, created_at_ms) VALUES ('trial-0000000000000001', 'exp-aaaaaaaaaaaaaaaa', 1, 'trial-0000000000000000', 'child', '{}', 'h1', '{}', 1, 1, 1, 'queued', 2)",
        "INSERT INTO late_results (trial_id, attempt, worker_id, score, metrics_json, reason, received_at_ms) VALUES ('trial-0000000000000000', 1, 'worker-1111111111111111', 0.5, '{}', 'late', 3)",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = Store::open(&data).await.unwrap();
    let mut conn = store.conn().await.unwrap();
    let trials = conn.list_trials(&exp_a()).await.unwrap();
    assert_eq!(trials.len(), 2);
    assert_eq!(
        (trials[0].score, trials[0].epoch, trials[0].chain),
        (Some(0.9), 3, 0)
    );
    assert_eq!(
        trials[1].parent_id.as_ref().map(|id| id.as_str()),
        Some("trial-0000000000000000")
    );
    let (late,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM late_results")
        .fetch_one(crate::store::sqlite::connection_of(&mut *conn).unwrap())
        .await
        .unwrap();
    assert_eq!(late, 1);
    let violations = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(crate::store::sqlite::connection_of(&mut *conn).unwrap())
        .await
        .unwrap();
    assert!(violations.is_empty());
    let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
        .fetch_one(crate::store::sqlite::connection_of(&mut *conn).unwrap())
        .await
        .unwrap();
    assert_eq!(fk, 1, "foreign keys are back on after the upgrade");
    conn.prune_trial(&trial_id(1), 0.4, 1, "median rule", 0.01, 9)
        .await
        .unwrap();
    assert_eq!(status_of(&store, &trial_id(1)).await, TrialStatus::Pruned);
}

// A pool written before epoch metrics (migrations 0001 and 0002) keeps its epoch curves: the
// new column is NULL for the old rows, which read back as epochs without metrics.
#[tokio::test]
async fn a_pool_from_before_epoch_metrics_keeps_its_curves() {
    let dir = tempfile::tempdir().unwrap();
    let older = dir.path().join("migrations");
    std::fs::create_dir_all(&older).unwrap();
    for file in ["0001_init.sql", "0002_search.sql"] {
        std::fs::copy(
            format!("{}/migrations/sqlite/{file}", env!("CARGO_MANIFEST_DIR")),
            older.join(file),
        )
        .unwrap();
    }
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let options = SqliteConnectOptions::new()
        .filename(data.join(DB_FILE))
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(older.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    for statement in [
        "INSERT INTO experiments (id, name, spec_json, status, created_at_ms) VALUES ('exp-aaaaaaaaaaaaaaaa', 'old', '{}', 'running', 1)",
        "INSERT INTO trials (id, experiment_id, seq, origin, genome_json, genome_hash, hparams_json, params, flops, seed, status, epoch, created_at_ms) VALUES ('trial-0000000000000000', 'exp-aaaaaaaaaaaaaaaa', 0, 'seed', '{}', 'h0', '{}', 1, 1, 1, 'running', 2, 1)",
        "INSERT INTO trial_epochs (trial_id, epoch, val_accuracy, train_loss) VALUES ('trial-0000000000000000', 1, 0.5, 0.9)",
        "INSERT INTO trial_epochs (trial_id, epoch, val_accuracy, train_loss) VALUES ('trial-0000000000000000', 2, 0.6, NULL)",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = Store::open(&data).await.unwrap();
    let mut conn = store.conn().await.unwrap();
    let curve = conn.epoch_curve(&trial_id(0)).await.unwrap();
    let rows: Vec<(i64, f64, Option<f64>, Option<String>)> = curve
        .iter()
        .map(|e| {
            (
                e.epoch,
                e.val_accuracy,
                e.train_loss,
                e.metrics_json.clone(),
            )
        })
        .collect();
    assert_eq!(rows, vec![(1, 0.5, Some(0.9), None), (2, 0.6, None, None)]);
    assert!(conn.last_epoch_metrics(&exp_a()).await.unwrap().is_empty());
    // New reports on the upgraded pool carry metrics.
    let drift = BTreeMap::from([("elr.norm_drift".to_string(), 0.25)]);
    conn.record_epoch(&trial_id(0), 2, 0.6, None, &drift)
        .await
        .unwrap();
    assert_eq!(
        conn.last_epoch_metrics(&exp_a()).await.unwrap(),
        HashMap::from([(trial_id(0), drift)])
    );
}

#[tokio::test]
async fn open_creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a").join("b");
    let store = Store::open(&nested).await.unwrap();
    seeded(&store, &exp_a(), 1, 1).await;
    assert!(nested.join(DB_FILE).is_file());
}

// Regression: the database path was spliced into a `sqlite://` URL, so a data directory with `?`
// in its name was read as URL parameters and one with `%41` was percent-decoded elsewhere.
#[tokio::test]
async fn open_accepts_directory_names_that_look_like_url_syntax() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("run?mode=ro #2 100%41");
    let store = Store::open(&odd).await.unwrap();
    seeded(&store, &exp_a(), 1, 1).await;
    store.close().await;
    assert!(
        odd.join(DB_FILE).is_file(),
        "database not inside {}",
        odd.display()
    );
    let store = Store::open(&odd).await.unwrap();
    let mut conn = store.conn().await.unwrap();
    assert_eq!(conn.list_trials(&exp_a()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn open_fails_cleanly_when_the_directory_cannot_be_created() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file.join("sub")).await.unwrap_err();
    assert!(matches!(err, MasterError::Io { .. }), "{err}");
}

#[tokio::test]
async fn file_database_serves_reads_while_a_write_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    seeded(&store, &exp_a(), 1, 1).await;
    let mut tx = store.begin().await.unwrap();
    tx.lease_next_trial(&worker(), 10, 100)
        .await
        .unwrap()
        .unwrap();
    // WAL: a reader sees the last committed state while the write transaction is open.
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        status_of(&store, &trial_id(0)),
    )
    .await
    .expect("read blocked by an open write");
    assert_eq!(read, TrialStatus::Queued);
    tx.commit().await.unwrap();
    assert_eq!(status_of(&store, &trial_id(0)).await, TrialStatus::Leased);
}

#[test]
fn status_text_round_trips() {
    for s in [
        TrialStatus::Queued,
        TrialStatus::Leased,
        TrialStatus::Running,
        TrialStatus::Completed,
        TrialStatus::Pruned,
        TrialStatus::Failed,
        TrialStatus::Cancelled,
    ] {
        assert_eq!(s.as_str().parse::<TrialStatus>().unwrap(), s);
        assert_eq!(s.to_string(), s.as_str());
        assert_eq!(
            s.is_held(),
            matches!(s, TrialStatus::Leased | TrialStatus::Running)
        );
    }
    assert!(matches!(
        "done".parse::<TrialStatus>(),
        Err(MasterError::Internal(_))
    ));
    assert_eq!(ExperimentStatus::Failed.as_str(), "failed");
}

// Regression (flaky `calls_naming_unknown_or_malformed_trials_are_refused`): a refused call drops
// its write transaction, whose rollback reaches SQLite a moment later; the next call's deferred
// transaction read, then tried to write while that rollback was still pending, and failed at once
// with "database is locked": SQLite never runs the busy handler for a transaction that has read
// and wants to write. `Store::begin` takes the write lock up front, so a write waits for another
// connection's open write instead of failing.
#[tokio::test]
async fn a_write_transaction_waits_for_another_open_write_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    seeded(&store, &exp_a(), 1, 1).await;
    let mut first = store.begin().await.unwrap();
    first.touch_worker(&worker(), 1).await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop(first); // rolled back
    });
    let mut next = store.begin().await.unwrap();
    next.get_trial(&trial_id(0)).await.unwrap();
    next.touch_worker(&worker(), 2).await.unwrap();
    next.commit().await.unwrap();
    release.await.unwrap();
}

/// Regression: a call cancelled while its write transaction was starting (a worker dropping
/// its long-poll Acquire as it drained) left `BEGIN IMMEDIATE` done on a pooled connection with
/// no `Transaction` to roll it back, so the write lock stayed held: the next writer failed with
/// "database is locked" after the busy timeout, then "begin_with at non-zero transaction depth".
#[tokio::test]
async fn a_begin_cancelled_at_any_point_leaves_no_transaction_open() {
    let store = Store::in_memory().await.unwrap();
    for step in 0..400u64 {
        // Cancel the start of a transaction after a growing delay, so that some cancellations
        // land in each of its await points.
        let delay = Duration::from_micros(step * 5);
        if let Ok(tx) = tokio::time::timeout(delay, store.begin()).await {
            drop(tx.unwrap());
        }
        // The store's only connection must take a new write transaction at once.
        let mut tx = tokio::time::timeout(Duration::from_secs(5), store.begin())
            .await
            .unwrap_or_else(|_| panic!("step {step}: begin hung"))
            .unwrap_or_else(|e| panic!("step {step}: a cancelled begin left a transaction: {e}"));
        sqlx::query("UPDATE workers SET slots = slots WHERE 0")
            .execute(crate::store::sqlite::connection_of(&mut *tx).unwrap())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

// A pool written by a newer release (a migration this build does not know) is refused at start,
// naming both versions, instead of being served with a schema the code does not expect.
#[tokio::test]
async fn a_pool_from_a_newer_release_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let mut conn = store.conn().await.unwrap();
    crate::store::suite::raw_execute(
        &mut *conn,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99, 'from the future', TRUE, x'00', 0)",
    )
    .await;
    drop(conn);
    store.close().await;
    let err = Store::open(dir.path()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MasterError::FailedPrecondition(_)), "{err:?}");
    assert!(text.contains("migration 99"), "{text}");
    assert!(
        text.contains(&format!(
            "versions 1 to {}",
            super::migrations::MIGRATIONS.len()
        )),
        "{text}"
    );
}

// The base-candidate read runs at every proposal: it must stay inside its index (no lookup of
// each candidate's row in the table), whatever SQLite version the driver bundles.
#[tokio::test]
async fn the_base_candidate_read_never_leaves_its_index() {
    let store = Store::in_memory().await.unwrap();
    let mut conn = store.conn().await.unwrap();
    let plan: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(&format!("EXPLAIN QUERY PLAN {BASE_CANDIDATES_SQL}"))
            .bind(exp_a().as_str())
            .bind(BASE_CANDIDATES)
            .fetch_all(crate::store::sqlite::connection_of(&mut *conn).unwrap())
            .await
            .unwrap();
    let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("USING COVERING INDEX trials_accepted_by_score")),
        "{details:?}"
    );
}
