//! The store contract's shared suite: every case runs through [`PoolTx`] on each backend the
//! master can use — SQLite in memory, SQLite in a WAL file, and PostgreSQL (a fresh schema on
//! the server `EXPLORE_TEST_PG_URL` names; skipped with a message when it is unset, a failure
//! when `EXPLORE_REQUIRE_PG` is set, as in CI) — one suite instantiated per backend, as
//! Quickwit's `metastore_test_suite!`. A few checks read tables directly ([`raw_rows`]); their
//! SQL is written to mean the same in both dialects.

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::store::postgres::PgTx;
use crate::store::sqlite::SqliteTx;

/// Runs `sql` (no parameters; the same text in both dialects) on the transaction's own
/// connection and returns its rows.
pub(crate) async fn raw_rows<T>(conn: &mut dyn PoolTx, sql: &str) -> Vec<T>
where
    T: Send
        + Unpin
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    let any = conn.as_any_mut();
    if let Some(tx) = any.downcast_mut::<SqliteTx>() {
        return sqlx::query_as(sql)
            .fetch_all(tx.connection())
            .await
            .unwrap();
    }
    if let Some(tx) = any.downcast_mut::<PgTx>() {
        return sqlx::query_as(sql)
            .fetch_all(tx.connection())
            .await
            .unwrap();
    }
    panic!("unknown backend")
}

/// Runs a statement (no parameters; the same text in both dialects) on the transaction's own
/// connection.
pub(crate) async fn raw_execute(conn: &mut dyn PoolTx, sql: &str) {
    let any = conn.as_any_mut();
    if let Some(tx) = any.downcast_mut::<SqliteTx>() {
        sqlx::query(sql).execute(tx.connection()).await.unwrap();
    } else if let Some(tx) = any.downcast_mut::<PgTx>() {
        sqlx::query(sql).execute(tx.connection()).await.unwrap();
    } else {
        panic!("unknown backend")
    }
}

pub(crate) const EXP_A: &str = "exp-aaaaaaaaaaaaaaaa";
pub(crate) const EXP_B: &str = "exp-bbbbbbbbbbbbbbbb";
pub(crate) const WORKER: &str = "worker-1111111111111111";
pub(crate) const OTHER_WORKER: &str = "worker-2222222222222222";

pub(crate) fn exp_a() -> ExperimentId {
    EXP_A.parse().unwrap()
}

pub(crate) fn exp_b() -> ExperimentId {
    EXP_B.parse().unwrap()
}

pub(crate) fn worker() -> WorkerId {
    WORKER.parse().unwrap()
}

pub(crate) fn other_worker() -> WorkerId {
    OTHER_WORKER.parse().unwrap()
}

pub(crate) fn trial_id(n: i64) -> TrialId {
    format!("trial-{n:016}").parse().unwrap()
}

pub(crate) fn new_trial(
    experiment_id: &ExperimentId,
    id: &TrialId,
    seq: i64,
    genome_hash: &str,
    hparams_json: &str,
) -> NewTrial {
    NewTrial {
        id: id.clone(),
        experiment_id: experiment_id.clone(),
        seq,
        parent_id: None,
        origin: format!("test #{seq}"),
        genome_json: "{}".into(),
        genome_hash: genome_hash.to_string(),
        hparams_json: hparams_json.to_string(),
        params: 1000 + seq,
        flops: 2000 + seq,
        seed: 7 + seq,
        temperature: 0.02,
        chain: seq % 2,
        inherit_from: None,
        kind: Default::default(),
        seed_index: None,
        prediction: None,
    }
}

pub(crate) fn result(score: f64) -> TrialResult {
    TrialResult {
        score,
        metrics: BTreeMap::from([("test_accuracy".to_string(), score - 0.01)]),
        checkpoint_sha256: Some("ab".repeat(32)),
        epochs_run: 3,
    }
}

/// One experiment with `n` queued trials `trial_id(0..n)`, each with its own genome hash.
pub(crate) async fn seeded(
    store: &Store,
    experiment_id: &ExperimentId,
    created_at_ms: i64,
    n: i64,
) {
    let mut conn = store.conn().await.unwrap();
    conn.insert_experiment(experiment_id, "demo", "{}", created_at_ms)
        .await
        .unwrap();
    let base = if experiment_id.as_str() == EXP_A {
        0
    } else {
        100
    };
    for seq in 0..n {
        let t = new_trial(
            experiment_id,
            &trial_id(base + seq),
            seq,
            &format!("hash{seq}"),
            "{}",
        );
        conn.insert_trial(&t, created_at_ms).await.unwrap();
    }
}

pub(crate) async fn status_of(store: &Store, id: &TrialId) -> TrialStatus {
    let mut conn = store.conn().await.unwrap();
    conn.get_trial(id).await.unwrap().unwrap().status
}

// ---- cases -------------------------------------------------------------------------------------

async fn experiments_round_trip_and_list_newest_first(store: Store) {
    let mut conn = store.conn().await.unwrap();
    assert!(conn.get_experiment(&exp_a()).await.unwrap().is_none());
    conn.insert_experiment(&exp_a(), "first", r#"{"k":1}"#, 1_000)
        .await
        .unwrap();
    conn.insert_experiment(&exp_b(), "second", "{}", 2_000)
        .await
        .unwrap();
    let a = conn.get_experiment(&exp_a()).await.unwrap().unwrap();
    assert_eq!(a.name, "first");
    assert_eq!(a.spec_json, r#"{"k":1}"#);
    assert_eq!(a.status, ExperimentStatus::Running);
    assert_eq!(a.status_reason, "");
    assert_eq!(a.created_at_ms, 1_000);
    assert_eq!(a.finished_at_ms, None);
    assert_eq!(a.best_trial_id, None);

    let listed: Vec<ExperimentId> = conn
        .list_experiments()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, vec![exp_b(), exp_a()]);
    let running: Vec<ExperimentId> = conn
        .running_experiments()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        running,
        vec![exp_a(), exp_b()],
        "running experiments are oldest first"
    );

    conn.finish_experiment(
        &exp_a(),
        ExperimentStatus::Completed,
        "trial budget reached",
        5_000,
    )
    .await
    .unwrap();
    let a = conn.get_experiment(&exp_a()).await.unwrap().unwrap();
    assert_eq!(a.status, ExperimentStatus::Completed);
    assert_eq!(a.status_reason, "trial budget reached");
    assert_eq!(a.finished_at_ms, Some(5_000));
    let running: Vec<ExperimentId> = conn
        .running_experiments()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(running, vec![exp_b()]);
}

async fn duplicate_experiment_id_is_a_store_error(store: Store) {
    let mut conn = store.conn().await.unwrap();
    conn.insert_experiment(&exp_a(), "x", "{}", 1)
        .await
        .unwrap();
    let err = conn
        .insert_experiment(&exp_a(), "y", "{}", 2)
        .await
        .unwrap_err();
    assert!(matches!(err, MasterError::Store(_)), "{err}");
    assert_eq!(
        conn.get_experiment(&exp_a()).await.unwrap().unwrap().name,
        "x"
    );
}

async fn trials_round_trip_in_seq_order(store: Store) {
    let mut conn = store.conn().await.unwrap();
    conn.insert_experiment(&exp_a(), "demo", "{}", 1)
        .await
        .unwrap();
    // Inserted out of seq order; listed by seq.
    for seq in [0, 2, 1] {
        let mut t = new_trial(
            &exp_a(),
            &trial_id(seq),
            seq,
            "h",
            &format!("{{\"n\":{seq}}}"),
        );
        if seq > 0 {
            t.parent_id = Some(trial_id(0));
        }
        conn.insert_trial(&t, 10 + seq).await.unwrap();
    }
    let all = conn.list_trials(&exp_a()).await.unwrap();
    assert_eq!(all.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
    let t = conn.get_trial(&trial_id(1)).await.unwrap().unwrap();
    assert_eq!(t.experiment_id, exp_a());
    assert_eq!(t.parent_id.as_ref(), Some(&trial_id(0)));
    assert_eq!(t.origin, "test #1");
    assert_eq!(t.hparams_json, r#"{"n":1}"#);
    assert_eq!((t.params, t.flops, t.seed), (1001, 2001, 8));
    assert_eq!(t.status, TrialStatus::Queued);
    assert_eq!(t.attempt, 1);
    assert_eq!(t.worker_id, None);
    assert_eq!(t.epoch, 0);
    assert_eq!(t.score, None);
    assert!(t.metrics().is_empty());
    assert_eq!(t.accepted, None);
    assert_eq!(t.temperature, Some(0.02));
    assert_eq!(t.created_at_ms, 11);
    assert!(conn.get_trial(&trial_id(99)).await.unwrap().is_none());
    assert!(conn.list_trials(&exp_b()).await.unwrap().is_empty());
}

async fn seq_is_unique_per_experiment(store: Store) {
    let mut conn = store.conn().await.unwrap();
    conn.insert_experiment(&exp_a(), "a", "{}", 1)
        .await
        .unwrap();
    conn.insert_experiment(&exp_b(), "b", "{}", 2)
        .await
        .unwrap();
    assert_eq!(conn.next_seq(&exp_a()).await.unwrap(), 0);
    conn.insert_trial(&new_trial(&exp_a(), &trial_id(0), 0, "h", "{}"), 1)
        .await
        .unwrap();
    let dup = conn
        .insert_trial(&new_trial(&exp_a(), &trial_id(1), 0, "h", "{}"), 1)
        .await;
    assert!(matches!(dup, Err(MasterError::Store(_))), "{dup:?}");
    // The same seq in another experiment is fine.
    conn.insert_trial(&new_trial(&exp_b(), &trial_id(2), 0, "h", "{}"), 1)
        .await
        .unwrap();
    conn.insert_trial(&new_trial(&exp_a(), &trial_id(3), 5, "h", "{}"), 1)
        .await
        .unwrap();
    assert_eq!(conn.next_seq(&exp_a()).await.unwrap(), 6);
    assert_eq!(conn.next_seq(&exp_b()).await.unwrap(), 1);
}

async fn foreign_keys_are_enforced(store: Store) {
    let mut conn = store.conn().await.unwrap();
    let orphan = conn
        .insert_trial(&new_trial(&exp_a(), &trial_id(0), 0, "h", "{}"), 1)
        .await;
    assert!(matches!(orphan, Err(MasterError::Store(_))), "{orphan:?}");
    conn.insert_experiment(&exp_a(), "a", "{}", 1)
        .await
        .unwrap();
    let mut t = new_trial(&exp_a(), &trial_id(0), 0, "h", "{}");
    t.parent_id = Some(trial_id(42));
    assert!(
        conn.insert_trial(&t, 1).await.is_err(),
        "unknown parent accepted"
    );
    let late = conn
        .insert_late_result(&trial_id(42), 1, &worker(), &result(0.5), "late", 1)
        .await;
    assert!(late.is_err(), "late result of an unknown trial accepted");
}

async fn lease_takes_oldest_running_experiment_then_lowest_seq(store: Store) {
    seeded(&store, &exp_b(), 2_000, 2).await;
    seeded(&store, &exp_a(), 1_000, 2).await;
    let mut conn = store.conn().await.unwrap();
    let first = conn
        .lease_next_trial(&worker(), 10_000, 500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.id, trial_id(0), "oldest experiment, lowest seq first");
    assert_eq!(first.status, TrialStatus::Leased);
    assert_eq!(first.worker_id, Some(worker()));
    assert_eq!(first.lease_deadline_ms, Some(10_500));
    assert_eq!(first.started_at_ms, Some(10_000));
    assert_eq!(
        conn.lease_next_trial(&worker(), 10_001, 500)
            .await
            .unwrap()
            .unwrap()
            .id,
        trial_id(1)
    );
    // A finished experiment's queued trials are never leased.
    conn.finish_experiment(&exp_b(), ExperimentStatus::Failed, "x", 10_002)
        .await
        .unwrap();
    assert!(conn
        .lease_next_trial(&worker(), 10_003, 500)
        .await
        .unwrap()
        .is_none());
    assert_eq!(conn.trial_counts(&exp_b()).await.unwrap().queued, 2);
}

async fn requeued_trial_keeps_its_first_start_time(store: Store) {
    seeded(&store, &exp_a(), 1, 1).await;
    let mut conn = store.conn().await.unwrap();
    let id = trial_id(0);
    conn.lease_next_trial(&worker(), 100, 50)
        .await
        .unwrap()
        .unwrap();
    assert!(conn
        .heartbeat_trial(&id, &worker(), 1, 2, true, 300)
        .await
        .unwrap());
    conn.requeue_trial(&id, "lease of attempt 1 expired")
        .await
        .unwrap();
    let t = conn.get_trial(&id).await.unwrap().unwrap();
    assert_eq!(t.status, TrialStatus::Queued);
    assert_eq!(t.attempt, 2);
    assert_eq!(t.worker_id, None);
    assert_eq!(t.lease_deadline_ms, None);
    assert_eq!(t.epoch, 0);
    assert_eq!(t.error, "lease of attempt 1 expired");
    let again = conn
        .lease_next_trial(&other_worker(), 900, 50)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempt, 2);
    assert_eq!(again.worker_id, Some(other_worker()));
    assert_eq!(again.started_at_ms, Some(100));
    assert_eq!(again.lease_deadline_ms, Some(950));
}

async fn heartbeat_needs_the_current_holder(store: Store) {
    seeded(&store, &exp_a(), 1, 1).await;
    let mut conn = store.conn().await.unwrap();
    let id = trial_id(0);
    // Not leased yet.
    assert!(!conn
        .heartbeat_trial(&id, &worker(), 1, 0, false, 1_000)
        .await
        .unwrap());
    conn.lease_next_trial(&worker(), 100, 50)
        .await
        .unwrap()
        .unwrap();
    assert!(!conn
        .heartbeat_trial(&id, &other_worker(), 1, 0, false, 1_000)
        .await
        .unwrap());
    assert!(!conn
        .heartbeat_trial(&id, &worker(), 2, 0, false, 1_000)
        .await
        .unwrap());
    assert_eq!(
        conn.get_trial(&id)
            .await
            .unwrap()
            .unwrap()
            .lease_deadline_ms,
        Some(150)
    );

    // Epoch 0 extends the lease but the trial stays leased; a later epoch makes it running.
    assert!(conn
        .heartbeat_trial(&id, &worker(), 1, 0, false, 1_000)
        .await
        .unwrap());
    let t = conn.get_trial(&id).await.unwrap().unwrap();
    assert_eq!(
        (t.status.as_str(), t.lease_deadline_ms, t.epoch),
        ("leased", Some(1_000), 0)
    );
    assert!(conn
        .heartbeat_trial(&id, &worker(), 1, 2, true, 2_000)
        .await
        .unwrap());
    // Epochs never go backwards.
    assert!(conn
        .heartbeat_trial(&id, &worker(), 1, 1, true, 3_000)
        .await
        .unwrap());
    let t = conn.get_trial(&id).await.unwrap().unwrap();
    assert_eq!(
        (t.status.as_str(), t.lease_deadline_ms, t.epoch),
        ("running", Some(3_000), 2)
    );

    conn.complete_trial(&id, &result(0.5), true, 0.01, 4_000)
        .await
        .unwrap();
    assert!(!conn
        .heartbeat_trial(&id, &worker(), 1, 3, true, 5_000)
        .await
        .unwrap());
    let t = conn.get_trial(&id).await.unwrap().unwrap();
    assert_eq!(
        (t.status.as_str(), t.lease_deadline_ms),
        ("completed", None)
    );
}

async fn completion_records_the_result(store: Store) {
    seeded(&store, &exp_a(), 1, 1).await;
    let mut conn = store.conn().await.unwrap();
    let id = trial_id(0);
    conn.lease_next_trial(&worker(), 100, 50)
        .await
        .unwrap()
        .unwrap();
    conn.complete_trial(&id, &result(0.75), false, 0.005, 4_000)
        .await
        .unwrap();
    let t = conn.get_trial(&id).await.unwrap().unwrap();
    assert_eq!(t.status, TrialStatus::Completed);
    assert_eq!(t.score, Some(0.75));
    assert_eq!(
        t.metrics(),
        BTreeMap::from([("test_accuracy".to_string(), 0.74)])
    );
    assert_eq!(t.checkpoint_sha256, Some("ab".repeat(32)));
    assert_eq!(t.accepted, Some(false));
    assert_eq!(t.temperature, Some(0.005));
    assert_eq!(t.epoch, 3);
    assert_eq!(t.lease_deadline_ms, None);
    assert_eq!(t.finished_at_ms, Some(4_000));
    assert_eq!(
        t.worker_id,
        Some(worker()),
        "the worker that trained it is kept"
    );
    // Only accepted completed trials are annealing states.
    assert!(conn.accepted_trials(&exp_a()).await.unwrap().is_empty());
}

async fn accepted_trials_are_completed_and_accepted_in_seq_order(store: Store) {
    seeded(&store, &exp_a(), 1, 4).await;
    let mut conn = store.conn().await.unwrap();
    for (n, accepted) in [(3, true), (0, true), (1, false)] {
        conn.complete_trial(&trial_id(n), &result(0.5), accepted, 0.01, 10)
            .await
            .unwrap();
    }
    let ids: Vec<TrialId> = conn
        .accepted_trials(&exp_a())
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec![trial_id(0), trial_id(3)]);
}

async fn counts_follow_every_status(store: Store) {
    seeded(&store, &exp_a(), 1, 6).await;
    seeded(&store, &exp_b(), 2, 2).await;
    let mut conn = store.conn().await.unwrap();
    assert_eq!(
        conn.trial_counts(&exp_a()).await.unwrap(),
        TrialCounts {
            queued: 6,
            ..TrialCounts::default()
        }
    );
    conn.lease_next_trial(&worker(), 10, 100)
        .await
        .unwrap()
        .unwrap(); // 0 leased
    conn.lease_next_trial(&worker(), 10, 100)
        .await
        .unwrap()
        .unwrap(); // 1 leased
    assert!(conn
        .heartbeat_trial(&trial_id(1), &worker(), 1, 1, true, 200)
        .await
        .unwrap()); // 1 running
    conn.complete_trial(&trial_id(2), &result(0.1), true, 0.01, 20)
        .await
        .unwrap();
    conn.end_trial(&trial_id(3), TrialStatus::Failed, "boom", 30)
        .await
        .unwrap();
    conn.end_trial(&trial_id(4), TrialStatus::Cancelled, "stop", 30)
        .await
        .unwrap();
    let c = conn.trial_counts(&exp_a()).await.unwrap();
    assert_eq!(
        c,
        TrialCounts {
            queued: 1,
            leased: 1,
            running: 1,
            completed: 1,
            pruned: 0,
            failed: 1,
            cancelled: 1,
        }
    );
    assert_eq!(c.budgeted(), 4);
    assert_eq!(c.in_flight(), 2);
    let failed = conn.get_trial(&trial_id(3)).await.unwrap().unwrap();
    assert_eq!(
        (failed.error.as_str(), failed.finished_at_ms),
        ("boom", Some(30))
    );
    // The other experiment is untouched.
    assert_eq!(conn.trial_counts(&exp_b()).await.unwrap().queued, 2);
    assert_eq!(
        conn.trial_counts(&"exp-none".parse().unwrap())
            .await
            .unwrap(),
        TrialCounts::default()
    );
}

async fn cancel_queued_only_touches_queued_trials_of_that_experiment(store: Store) {
    seeded(&store, &exp_a(), 1, 3).await;
    seeded(&store, &exp_b(), 2, 1).await;
    let mut conn = store.conn().await.unwrap();
    conn.lease_next_trial(&worker(), 10, 100)
        .await
        .unwrap()
        .unwrap();
    let n = conn
        .cancel_queued(&exp_a(), "budget reached", 50)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let c = conn.trial_counts(&exp_a()).await.unwrap();
    assert_eq!((c.queued, c.leased, c.cancelled), (0, 1, 2));
    let t = conn.get_trial(&trial_id(1)).await.unwrap().unwrap();
    assert_eq!(
        (t.error.as_str(), t.finished_at_ms),
        ("budget reached", Some(50))
    );
    assert_eq!(conn.trial_counts(&exp_b()).await.unwrap().queued, 1);
    assert_eq!(conn.cancel_queued(&exp_a(), "again", 60).await.unwrap(), 0);
}

async fn candidate_exists_ignores_failed_and_cancelled(store: Store) {
    seeded(&store, &exp_a(), 1, 3).await;
    seeded(&store, &exp_b(), 2, 0).await;
    let mut conn = store.conn().await.unwrap();
    assert!(conn
        .candidate_exists(&exp_a(), "hash0", "{}")
        .await
        .unwrap());
    assert!(!conn
        .candidate_exists(&exp_a(), "hash0", r#"{"x":1}"#)
        .await
        .unwrap());
    assert!(!conn
        .candidate_exists(&exp_b(), "hash0", "{}")
        .await
        .unwrap());
    conn.end_trial(&trial_id(0), TrialStatus::Failed, "boom", 5)
        .await
        .unwrap();
    conn.end_trial(&trial_id(1), TrialStatus::Cancelled, "stop", 5)
        .await
        .unwrap();
    conn.complete_trial(&trial_id(2), &result(0.2), true, 0.01, 5)
        .await
        .unwrap();
    assert!(!conn
        .candidate_exists(&exp_a(), "hash0", "{}")
        .await
        .unwrap());
    assert!(!conn
        .candidate_exists(&exp_a(), "hash1", "{}")
        .await
        .unwrap());
    assert!(conn
        .candidate_exists(&exp_a(), "hash2", "{}")
        .await
        .unwrap());
}

async fn expired_leases_are_held_trials_past_their_deadline(store: Store) {
    seeded(&store, &exp_a(), 1, 4).await;
    let mut conn = store.conn().await.unwrap();
    conn.lease_next_trial(&worker(), 0, 100)
        .await
        .unwrap()
        .unwrap(); // 0: deadline 100
    conn.lease_next_trial(&worker(), 0, 300)
        .await
        .unwrap()
        .unwrap(); // 1: deadline 300
    conn.lease_next_trial(&worker(), 0, 100)
        .await
        .unwrap()
        .unwrap(); // 2: deadline 100
    assert!(conn
        .heartbeat_trial(&trial_id(2), &worker(), 1, 1, true, 100)
        .await
        .unwrap());
    conn.complete_trial(&trial_id(2), &result(0.3), true, 0.01, 50)
        .await
        .unwrap();
    // A deadline equal to now has not expired yet.
    assert!(conn.expired_leases(100).await.unwrap().is_empty());
    let ids: Vec<TrialId> = conn
        .expired_leases(101)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec![trial_id(0)]);
    let ids: Vec<TrialId> = conn
        .expired_leases(10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(
        ids,
        vec![trial_id(0), trial_id(1)],
        "queued and completed trials never expire"
    );
}

async fn held_trials_are_found_by_worker(store: Store) {
    seeded(&store, &exp_a(), 1, 3).await;
    let mut conn = store.conn().await.unwrap();
    conn.lease_next_trial(&worker(), 0, 100)
        .await
        .unwrap()
        .unwrap();
    conn.lease_next_trial(&other_worker(), 0, 100)
        .await
        .unwrap()
        .unwrap();
    conn.lease_next_trial(&worker(), 0, 100)
        .await
        .unwrap()
        .unwrap();
    conn.complete_trial(&trial_id(2), &result(0.3), true, 0.01, 50)
        .await
        .unwrap();
    let held: Vec<TrialId> = conn
        .trials_held_by(&worker())
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(held, vec![trial_id(0)]);
    assert_eq!(conn.trials_held_by(&other_worker()).await.unwrap().len(), 1);
    assert!(conn
        .trials_held_by(&"worker-none".parse().unwrap())
        .await
        .unwrap()
        .is_empty());
}

async fn late_results_are_kept_apart(store: Store) {
    seeded(&store, &exp_a(), 1, 1).await;
    let mut conn = store.conn().await.unwrap();
    conn.insert_late_result(&trial_id(0), 1, &worker(), &result(0.9), "superseded", 77)
        .await
        .unwrap();
    let rows: Vec<(String, i64, String, f64, String, i64)> = raw_rows(
        &mut *conn,
        "SELECT trial_id, attempt, worker_id, score, reason, received_at_ms FROM late_results",
    )
    .await;
    assert_eq!(
        rows,
        vec![(
            trial_id(0).to_string(),
            1,
            WORKER.to_string(),
            0.9,
            "superseded".to_string(),
            77
        )]
    );
    let t = conn.get_trial(&trial_id(0)).await.unwrap().unwrap();
    assert_eq!((t.status.as_str(), t.score), ("queued", None));
}

async fn workers_register_and_count_while_recently_seen(store: Store) {
    let mut conn = store.conn().await.unwrap();
    assert_eq!(conn.connected_slots(0).await.unwrap(), 0);
    assert!(!conn.worker_is_active(&worker()).await.unwrap());
    conn.insert_worker(&worker(), "w1", "cpu", 2, 1_000)
        .await
        .unwrap();
    conn.insert_worker(&other_worker(), "w2", "cuda:0", 3, 2_000)
        .await
        .unwrap();
    assert!(conn
        .insert_worker(&worker(), "again", "cpu", 1, 3_000)
        .await
        .is_err());
    assert!(conn.worker_is_active(&worker()).await.unwrap());
    assert_eq!(conn.connected_slots(1_000).await.unwrap(), 5);
    assert_eq!(conn.connected_slots(1_001).await.unwrap(), 3);
    conn.touch_worker(&worker(), 5_000).await.unwrap();
    assert_eq!(conn.connected_slots(4_000).await.unwrap(), 2);
    conn.worker_left(&worker()).await.unwrap();
    assert!(!conn.worker_is_active(&worker()).await.unwrap());
    assert_eq!(conn.connected_slots(0).await.unwrap(), 3);
}

async fn uncommitted_transaction_leaves_nothing(store: Store) {
    {
        let mut tx = store.begin().await.unwrap();
        tx.insert_experiment(&exp_a(), "a", "{}", 1).await.unwrap();
        tx.insert_trial(&new_trial(&exp_a(), &trial_id(0), 0, "h", "{}"), 1)
            .await
            .unwrap();
        assert!(tx.get_experiment(&exp_a()).await.unwrap().is_some());
        // Dropped without commit: rolled back.
    }
    let mut conn = store.conn().await.unwrap();
    assert!(conn.get_experiment(&exp_a()).await.unwrap().is_none());
    assert!(conn.get_trial(&trial_id(0)).await.unwrap().is_none());
    drop(conn);
    let mut tx = store.begin().await.unwrap();
    tx.insert_experiment(&exp_a(), "a", "{}", 1).await.unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.conn().await.unwrap();
    assert!(conn.get_experiment(&exp_a()).await.unwrap().is_some());
}

async fn epoch_curves_feed_peers_and_pruning_ends_a_trial(store: Store) {
    seeded(&store, &exp_a(), 1, 3).await;
    seeded(&store, &exp_b(), 2, 1).await;
    let mut conn = store.conn().await.unwrap();
    conn.record_epoch(&trial_id(0), 1, 0.80, Some(0.5), &BTreeMap::new())
        .await
        .unwrap();
    conn.record_epoch(&trial_id(1), 1, 0.70, None, &BTreeMap::new())
        .await
        .unwrap();
    // A repeated report replaces the earlier one.
    conn.record_epoch(&trial_id(1), 1, 0.75, None, &BTreeMap::new())
        .await
        .unwrap();
    conn.record_epoch(&trial_id(1), 2, 0.85, None, &BTreeMap::new())
        .await
        .unwrap();
    conn.record_epoch(&trial_id(100), 1, 0.99, None, &BTreeMap::new())
        .await
        .unwrap();
    let mut peers = conn
        .peer_accuracies(&exp_a(), &trial_id(2), 1)
        .await
        .unwrap();
    peers.sort_by(f64::total_cmp);
    assert_eq!(peers, vec![0.75, 0.80], "other experiments are not peers");
    assert_eq!(
        conn.peer_accuracies(&exp_a(), &trial_id(0), 1)
            .await
            .unwrap(),
        vec![0.75],
        "a trial is not its own peer"
    );
    conn.lease_next_trial(&worker(), 10, 100)
        .await
        .unwrap()
        .unwrap();
    conn.prune_trial(&trial_id(0), 0.8, 1, "below the median", 0.01, 20)
        .await
        .unwrap();
    let t = conn.get_trial(&trial_id(0)).await.unwrap().unwrap();
    assert_eq!(t.status, TrialStatus::Pruned);
    assert_eq!((t.score, t.epoch, t.accepted), (Some(0.8), 1, Some(false)));
    assert_eq!(
        (t.error.as_str(), t.finished_at_ms),
        ("below the median", Some(20))
    );
    let counts = conn.trial_counts(&exp_a()).await.unwrap();
    assert_eq!(
        (counts.pruned, counts.finished(), counts.budgeted()),
        (1, 1, 3)
    );
    assert!(conn.accepted_trials(&exp_a()).await.unwrap().is_empty());
}

async fn epoch_metrics_round_trip_and_an_epoch_without_any_stores_null(store: Store) {
    seeded(&store, &exp_a(), 1, 3).await;
    seeded(&store, &exp_b(), 2, 1).await;
    let mut conn = store.conn().await.unwrap();
    let drift = BTreeMap::from([
        ("elr.norm_drift".to_string(), 0.0125),
        ("elr.scale".to_string(), -3.5e-9),
    ]);
    let none = BTreeMap::new();
    conn.record_epoch(&trial_id(0), 1, 0.5, Some(0.9), &drift)
        .await
        .unwrap();
    conn.record_epoch(&trial_id(0), 2, 0.6, None, &none)
        .await
        .unwrap();
    let curve = conn.epoch_curve(&trial_id(0)).await.unwrap();
    assert_eq!(
        curve,
        vec![
            EpochRow {
                trial_id: trial_id(0),
                epoch: 1,
                val_accuracy: 0.5,
                train_loss: Some(0.9),
                metrics_json: curve[0].metrics_json.clone(),
            },
            EpochRow {
                trial_id: trial_id(0),
                epoch: 2,
                val_accuracy: 0.6,
                train_loss: None,
                metrics_json: None,
            },
        ]
    );
    assert_eq!(curve[0].metrics(), drift, "values survive exactly");
    assert!(curve[1].metrics().is_empty());
    let stored: Vec<(Option<String>,)> = raw_rows(
        &mut *conn,
        &format!(
            "SELECT metrics_json FROM trial_epochs WHERE trial_id = '{}' AND epoch = 2",
            trial_id(0)
        ),
    )
    .await;
    let [(stored,)] = &stored[..] else {
        panic!("one row expected: {stored:?}")
    };
    assert_eq!(*stored, None, "no metrics is NULL, not an empty object");

    // The last recorded epoch counts, up to the trial's own epoch count: trial 0 (epoch 2) has
    // none at its last epoch; trial 1 shows epoch 2's; trial 2 was requeued back to epoch 1, so
    // what its abandoned attempt reported for epoch 3 is not its last epoch.
    let later = BTreeMap::from([("elr.norm_drift".to_string(), 0.5)]);
    conn.record_epoch(&trial_id(1), 1, 0.5, None, &drift)
        .await
        .unwrap();
    conn.record_epoch(&trial_id(1), 2, 0.6, None, &later)
        .await
        .unwrap();
    conn.record_epoch(&trial_id(2), 1, 0.5, None, &drift)
        .await
        .unwrap();
    conn.record_epoch(&trial_id(2), 3, 0.7, None, &later)
        .await
        .unwrap();
    conn.record_epoch(&trial_id(100), 1, 0.5, None, &later)
        .await
        .unwrap();
    for (n, epoch) in [(0, 2), (1, 2), (2, 1)] {
        raw_execute(
            &mut *conn,
            &format!(
                "UPDATE trials SET epoch = {epoch} WHERE id = '{}'",
                trial_id(n)
            ),
        )
        .await;
    }
    let last = conn.last_epoch_metrics(&exp_a()).await.unwrap();
    assert_eq!(
        last,
        HashMap::from([(trial_id(1), later.clone()), (trial_id(2), drift.clone())])
    );
    // A repeated report replaces the epoch's metrics too.
    conn.record_epoch(&trial_id(1), 2, 0.6, None, &none)
        .await
        .unwrap();
    let last = conn.last_epoch_metrics(&exp_a()).await.unwrap();
    assert!(!last.contains_key(&trial_id(1)), "{last:?}");
}

async fn epoch_usage_counts_run_and_planned_epochs(store: Store) {
    let mut conn = store.conn().await.unwrap();
    conn.insert_experiment(&exp_a(), "demo", "{}", 1)
        .await
        .unwrap();
    for seq in 0..4 {
        let hp = format!("{{\"epochs\":{}}}", seq + 2);
        let t = new_trial(&exp_a(), &trial_id(seq), seq, &format!("h{seq}"), &hp);
        conn.insert_trial(&t, 1).await.unwrap();
    }
    assert_eq!(
        conn.epoch_usage(&exp_a()).await.unwrap(),
        EpochUsage {
            spent: 0,
            committed: 2 + 3 + 4 + 5
        }
    );
    // 0 completes after 2 epochs, 1 is pruned after 1, 2 runs its first epoch, 3 is cancelled.
    conn.lease_next_trial(&worker(), 10, 100).await.unwrap();
    conn.complete_trial(
        &trial_id(0),
        &TrialResult {
            epochs_run: 2,
            ..result(0.9)
        },
        true,
        0.01,
        20,
    )
    .await
    .unwrap();
    conn.lease_next_trial(&worker(), 10, 100).await.unwrap();
    conn.prune_trial(&trial_id(1), 0.5, 1, "pruned", 0.01, 30)
        .await
        .unwrap();
    conn.lease_next_trial(&worker(), 10, 100).await.unwrap();
    conn.heartbeat_trial(&trial_id(2), &worker(), 1, 1, true, 200)
        .await
        .unwrap();
    conn.cancel_queued(&exp_a(), "budget", 40).await.unwrap();
    assert_eq!(
        conn.epoch_usage(&exp_a()).await.unwrap(),
        EpochUsage {
            spent: 2 + 1 + 1,
            committed: 2 + 1 + 4
        }
    );
}

async fn chains_round_trip_and_loads_count_open_trials(store: Store) {
    seeded(&store, &exp_a(), 1, 3).await;
    let mut conn = store.conn().await.unwrap();
    assert_eq!(conn.get_chain(&exp_a(), 0).await.unwrap(), None);
    let chain = ChainRow {
        experiment_id: exp_a(),
        chain: 1,
        temperature: 0.02,
        current_trial_id: Some(trial_id(1)),
        best_score: Some(0.9),
        since_improvement: 2,
        results: 5,
        accepted: 3,
        reheats: 1,
    };
    conn.save_chain(&chain).await.unwrap();
    conn.save_chain(&ChainRow {
        temperature: 0.01,
        ..chain.clone()
    })
    .await
    .unwrap();
    let loaded = conn.get_chain(&exp_a(), 1).await.unwrap().unwrap();
    assert_eq!(loaded.temperature, 0.01);
    assert_eq!(conn.list_chains(&exp_a()).await.unwrap().len(), 1);
    // seeded() puts trial seq s on chain s % 2: chain 0 holds seqs 0 and 2, chain 1 seq 1.
    let mut loads = conn.chain_loads(&exp_a()).await.unwrap();
    loads.sort();
    assert_eq!(loads, vec![(0, 2, 2), (1, 1, 1)]);
}

async fn trial_pages_sort_by_every_key_and_filter_by_objective(store: Store) {
    use crate::store::reads::{TrialFilter, TrialSort};
    let mut conn = store.conn().await.unwrap();
    conn.insert_experiment(&exp_a(), "demo", "{}", 1)
        .await
        .unwrap();
    // The objective as the three shapes the hyperparameters' JSON gives it.
    let hparams = [
        "{}",
        r#"{"objective":"elr"}"#,
        r#"{"objective":{"disentangle":{"weight":1.0}}}"#,
        "{}",
    ];
    for (seq, h) in hparams.iter().enumerate() {
        let t = new_trial(&exp_a(), &trial_id(seq as i64), seq as i64, "g", h);
        conn.insert_trial(&t, 1).await.unwrap();
    }
    let all = TrialFilter::default();
    let order = |page: TrialPage| -> Vec<i64> { page.trials.iter().map(|t| t.seq).collect() };
    for (sort, ascending, descending) in [
        (TrialSort::Seq, vec![0, 1, 2, 3], vec![3, 2, 1, 0]),
        (TrialSort::Params, vec![0, 1, 2, 3], vec![3, 2, 1, 0]),
        // Ties by seq, in the same direction.
        (TrialSort::Status, vec![0, 1, 2, 3], vec![3, 2, 1, 0]),
        (TrialSort::Chain, vec![0, 2, 1, 3], vec![3, 1, 2, 0]),
        (TrialSort::Objective, vec![2, 1, 0, 3], vec![3, 0, 1, 2]),
    ] {
        for (descending_flag, expected) in [(false, ascending), (true, descending)] {
            let page = conn
                .query_trials(&exp_a(), &all, sort, descending_flag, 0, 10)
                .await
                .unwrap();
            assert_eq!(page.total, 4);
            assert_eq!(
                order(page),
                expected,
                "{sort:?}, descending {descending_flag}"
            );
        }
    }
    let elr = TrialFilter {
        objective: Some("elr".into()),
        ..TrialFilter::default()
    };
    let page = conn
        .query_trials(&exp_a(), &elr, TrialSort::Objective, false, 0, 10)
        .await
        .unwrap();
    assert_eq!((page.total, order(page)), (1, vec![1]));
    let plain = TrialFilter {
        objective: Some("plain".into()),
        ..TrialFilter::default()
    };
    let page = conn
        .query_trials(&exp_a(), &plain, TrialSort::Seq, true, 1, 10)
        .await
        .unwrap();
    assert_eq!((page.total, order(page)), (2, vec![0]), "offset 1 of two");
}

macro_rules! store_test_suite {
    ($($case:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Store::in_memory().await.unwrap()).await;
                }
            )*
        }

        mod on_disk {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$case(super::Store::open(dir.path()).await.unwrap()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(scratch) = crate::store::postgres::testing::Scratch::create(
                        concat!("suite ", stringify!($case)),
                    )
                    .await
                    else {
                        return;
                    };
                    super::$case(scratch.store().clone()).await;
                    scratch.drop_schema().await;
                }
            )*
        }
    };
}

store_test_suite!(
    experiments_round_trip_and_list_newest_first,
    duplicate_experiment_id_is_a_store_error,
    trials_round_trip_in_seq_order,
    seq_is_unique_per_experiment,
    foreign_keys_are_enforced,
    lease_takes_oldest_running_experiment_then_lowest_seq,
    requeued_trial_keeps_its_first_start_time,
    heartbeat_needs_the_current_holder,
    completion_records_the_result,
    accepted_trials_are_completed_and_accepted_in_seq_order,
    counts_follow_every_status,
    cancel_queued_only_touches_queued_trials_of_that_experiment,
    candidate_exists_ignores_failed_and_cancelled,
    expired_leases_are_held_trials_past_their_deadline,
    held_trials_are_found_by_worker,
    late_results_are_kept_apart,
    workers_register_and_count_while_recently_seen,
    uncommitted_transaction_leaves_nothing,
    epoch_curves_feed_peers_and_pruning_ends_a_trial,
    epoch_metrics_round_trip_and_an_epoch_without_any_stores_null,
    epoch_usage_counts_run_and_planned_epochs,
    chains_round_trip_and_loads_count_open_trials,
    tallies_match_a_count_of_the_rows_after_every_kind_of_change,
    trials_are_listed_page_by_page_in_seq_order,
    base_candidates_are_the_best_accepted_in_seq_order,
    base_candidates_of_a_large_pool_are_its_best_by_score,
    trial_pages_sort_by_every_key_and_filter_by_objective,
    probes_are_listed_in_the_order_they_were_queued,
);

/// Probes are queued with seqs −1, −2, …; `list_probes` gives them back in that order, without
/// the experiment's training trials.
async fn probes_are_listed_in_the_order_they_were_queued(store: Store) {
    seeded(&store, &exp_a(), 1_000, 2).await;
    let mut conn = store.conn().await.unwrap();
    for n in 1..=3 {
        let probe = NewTrial {
            kind: TrialKind::Probe,
            ..new_trial(&exp_a(), &trial_id(50 + n), -n, &format!("probe{n}"), "{}")
        };
        conn.insert_trial(&probe, 1_000 + n).await.unwrap();
    }
    let listed: Vec<TrialId> = conn
        .list_probes(&exp_a())
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, vec![trial_id(51), trial_id(52), trial_id(53)]);
}

/// The tallies the triggers keep (`trial_tallies`, `chain_tallies`) against a direct count of
/// the rows.
async fn assert_tallies_match(conn: &mut dyn PoolTx) {
    let direct: Vec<(String, String, String, i64, i64)> = raw_rows(
        conn,
        "SELECT experiment_id, kind, status, COUNT(*), CAST(SUM(epoch) AS BIGINT) FROM trials
          GROUP BY experiment_id, kind, status ORDER BY 1, 2, 3",
    )
    .await;
    let kept: Vec<(String, String, String, i64, i64)> = raw_rows(
        conn,
        "SELECT experiment_id, kind, status, n, epochs FROM trial_tallies WHERE n != 0
          ORDER BY 1, 2, 3",
    )
    .await;
    assert_eq!(kept, direct);
    let direct: Vec<(String, i64, i64, i64)> = raw_rows(
        conn,
        "SELECT experiment_id, chain,
                CAST(SUM(CASE WHEN status IN ('queued', 'leased', 'running') THEN 1 ELSE 0 END)
                     AS BIGINT),
                COUNT(*)
           FROM trials WHERE kind = 'train' GROUP BY experiment_id, chain ORDER BY 1, 2",
    )
    .await;
    let kept: Vec<(String, i64, i64, i64)> = raw_rows(
        conn,
        "SELECT experiment_id, chain, open, total FROM chain_tallies WHERE total != 0
          ORDER BY 1, 2",
    )
    .await;
    assert_eq!(kept, direct);
}

async fn tallies_match_a_count_of_the_rows_after_every_kind_of_change(store: Store) {
    seeded(&store, &exp_a(), 1, 6).await;
    seeded(&store, &exp_b(), 2, 3).await;
    let mut conn = store.conn().await.unwrap();
    assert_tallies_match(&mut *conn).await;
    conn.insert_worker(&worker(), "w", "cpu", 1, 0)
        .await
        .unwrap();
    let leased = conn
        .lease_next_trial(&worker(), 10, 1000)
        .await
        .unwrap()
        .unwrap();
    conn.heartbeat_trial(&leased.id, &worker(), 1, 2, true, 2000)
        .await
        .unwrap();
    assert_tallies_match(&mut *conn).await;
    conn.complete_trial(&leased.id, &result(0.8), true, 0.01, 20)
        .await
        .unwrap();
    let second = conn
        .lease_next_trial(&worker(), 30, 1000)
        .await
        .unwrap()
        .unwrap();
    conn.requeue_trial(&second.id, "lost").await.unwrap();
    let third = conn
        .lease_next_trial(&worker(), 40, 1000)
        .await
        .unwrap()
        .unwrap();
    conn.prune_trial(&third.id, 0.3, 1, "worse", 0.01, 50)
        .await
        .unwrap();
    let fourth = conn
        .lease_next_trial(&worker(), 60, 1000)
        .await
        .unwrap()
        .unwrap();
    conn.end_trial(&fourth.id, TrialStatus::Failed, "boom", 70)
        .await
        .unwrap();
    conn.cancel_queued(&exp_a(), "over", 80).await.unwrap();
    assert_tallies_match(&mut *conn).await;
    let counts = conn.trial_counts(&exp_a()).await.unwrap();
    assert_eq!(
        (
            counts.completed,
            counts.pruned,
            counts.failed,
            counts.queued
        ),
        (1, 1, 1, 0)
    );
    raw_execute(
        &mut *conn,
        &format!("DELETE FROM trials WHERE experiment_id = '{EXP_B}' AND status = 'cancelled'"),
    )
    .await;
    assert_tallies_match(&mut *conn).await;
}

async fn trials_are_listed_page_by_page_in_seq_order(store: Store) {
    seeded(&store, &exp_a(), 1, 7).await;
    seeded(&store, &exp_b(), 2, 2).await;
    let mut conn = store.conn().await.unwrap();
    conn.insert_worker(&worker(), "w", "cpu", 1, 0)
        .await
        .unwrap();
    let leased = conn
        .lease_next_trial(&worker(), 10, 1000)
        .await
        .unwrap()
        .unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = conn
            .list_trials_page(&exp_a(), after, None, 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = Some(page.last().unwrap().seq);
        seen.extend(page.into_iter().map(|t| t.seq));
    }
    assert_eq!(seen, (0..7).collect::<Vec<_>>());
    let queued = conn
        .list_trials_page(&exp_a(), Some(0), Some(TrialStatus::Queued), 100)
        .await
        .unwrap();
    assert_eq!(queued.len(), 6);
    assert!(queued.iter().all(|t| t.id != leased.id && t.seq > 0));
    let held = conn
        .list_trials_page(&exp_a(), None, Some(TrialStatus::Leased), 100)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id, leased.id);
}

async fn base_candidates_are_the_best_accepted_in_seq_order(store: Store) {
    seeded(&store, &exp_a(), 1, 5).await;
    let mut conn = store.conn().await.unwrap();
    conn.insert_worker(&worker(), "w", "cpu", 1, 0)
        .await
        .unwrap();
    // Scores that need all 17 significant digits to read back as the same `f64` (a backend that
    // packs the rows as text must not round them).
    let scores = [
        (0.1 + 0.2, true),
        (0.9, false),
        (1.0 / 3.0, true),
        (f64::from_bits(0.6f64.to_bits() + 1), true),
    ];
    for (score, accepted) in scores {
        let t = conn
            .lease_next_trial(&worker(), 10, 1000)
            .await
            .unwrap()
            .unwrap();
        conn.complete_trial(&t.id, &result(score), accepted, 0.01, 20)
            .await
            .unwrap();
    }
    let candidates = conn.base_candidates(&exp_a()).await.unwrap();
    let accepted: Vec<(TrialId, i64, f64)> = conn
        .accepted_trials(&exp_a())
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.seq, t.score.unwrap()))
        .collect();
    assert_eq!(candidates, accepted);
    assert_eq!(
        candidates.iter().map(|c| c.1).collect::<Vec<_>>(),
        vec![0, 2, 3]
    );
    let bits = |v: &[(TrialId, i64, f64)]| v.iter().map(|c| c.2.to_bits()).collect::<Vec<_>>();
    let expected: Vec<u64> = [scores[0].0, scores[2].0, scores[3].0]
        .iter()
        .map(|s| s.to_bits())
        .collect();
    assert_eq!(bits(&candidates), expected);
}

/// More accepted trials than [`crate::store::BASE_CANDIDATES`]: the set is the best of them by
/// score, still in proposal order.
async fn base_candidates_of_a_large_pool_are_its_best_by_score(store: Store) {
    let n = crate::store::BASE_CANDIDATES + 44;
    seeded(&store, &exp_a(), 1, n).await;
    let mut conn = store.conn().await.unwrap();
    conn.insert_worker(&worker(), "w", "cpu", 1, 0)
        .await
        .unwrap();
    // Distinct scores in an order unrelated to seq (37 and n share no factor).
    let score_of = |seq: i64| ((seq * 37) % n) as f64 / n as f64 + 0.1;
    for _ in 0..n {
        let t = conn
            .lease_next_trial(&worker(), 10, 1000)
            .await
            .unwrap()
            .unwrap();
        conn.complete_trial(&t.id, &result(score_of(t.seq)), true, 0.01, 20)
            .await
            .unwrap();
    }
    let candidates = conn.base_candidates(&exp_a()).await.unwrap();
    let mut best: Vec<i64> = (0..n).collect();
    best.sort_by(|a, b| score_of(*b).total_cmp(&score_of(*a)));
    best.truncate(crate::store::BASE_CANDIDATES as usize);
    best.sort();
    assert_eq!(candidates.iter().map(|c| c.1).collect::<Vec<_>>(), best);
    for (_, seq, score) in &candidates {
        assert_eq!(score.to_bits(), score_of(*seq).to_bits());
    }
}

// ---- file database only ------------------------------------------------------------------------
