//! The store's queries against real SQLite. Every case runs on both backends the master uses: a
//! private in-memory database and a WAL file database in a temporary directory (one suite
//! instantiated per backend, as Quickwit's `metastore_test_suite!`).

use std::collections::{BTreeMap, HashMap};

use super::*;

const EXP_A: &str = "exp-aaaaaaaaaaaaaaaa";
const EXP_B: &str = "exp-bbbbbbbbbbbbbbbb";
const WORKER: &str = "worker-1111111111111111";
const OTHER_WORKER: &str = "worker-2222222222222222";

fn trial_id(n: i64) -> String {
    format!("trial-{n:016}")
}

fn new_trial(
    experiment_id: &str,
    id: &str,
    seq: i64,
    genome_hash: &str,
    hparams_json: &str,
) -> NewTrial {
    NewTrial {
        id: id.to_string(),
        experiment_id: experiment_id.to_string(),
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

fn result(score: f64) -> TrialResult {
    TrialResult {
        score,
        metrics: BTreeMap::from([("test_accuracy".to_string(), score - 0.01)]),
        checkpoint_sha256: Some("ab".repeat(32)),
        epochs_run: 3,
    }
}

/// One experiment with `n` queued trials `trial_id(0..n)`, each with its own genome hash.
async fn seeded(store: &Store, experiment_id: &str, created_at_ms: i64, n: i64) {
    let mut conn = store.conn().await.unwrap();
    insert_experiment(&mut conn, experiment_id, "demo", "{}", created_at_ms)
        .await
        .unwrap();
    let base = if experiment_id == EXP_A { 0 } else { 100 };
    for seq in 0..n {
        let t = new_trial(
            experiment_id,
            &trial_id(base + seq),
            seq,
            &format!("hash{seq}"),
            "{}",
        );
        insert_trial(&mut conn, &t, created_at_ms).await.unwrap();
    }
}

async fn status_of(store: &Store, id: &str) -> String {
    let mut conn = store.conn().await.unwrap();
    get_trial(&mut conn, id).await.unwrap().unwrap().status
}

// ---- cases -------------------------------------------------------------------------------------

async fn experiments_round_trip_and_list_newest_first(store: Store) {
    let mut conn = store.conn().await.unwrap();
    assert!(get_experiment(&mut conn, EXP_A).await.unwrap().is_none());
    insert_experiment(&mut conn, EXP_A, "first", r#"{"k":1}"#, 1_000)
        .await
        .unwrap();
    insert_experiment(&mut conn, EXP_B, "second", "{}", 2_000)
        .await
        .unwrap();
    let a = get_experiment(&mut conn, EXP_A).await.unwrap().unwrap();
    assert_eq!(a.name, "first");
    assert_eq!(a.spec_json, r#"{"k":1}"#);
    assert_eq!(a.status, "running");
    assert_eq!(a.status_reason, "");
    assert_eq!(a.created_at_ms, 1_000);
    assert_eq!(a.finished_at_ms, None);
    assert_eq!(a.best_trial_id, None);

    let listed: Vec<String> = list_experiments(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, vec![EXP_B, EXP_A]);
    let running: Vec<String> = running_experiments(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        running,
        vec![EXP_A, EXP_B],
        "running experiments are oldest first"
    );

    finish_experiment(
        &mut conn,
        EXP_A,
        ExperimentStatus::Completed,
        "trial budget reached",
        5_000,
    )
    .await
    .unwrap();
    let a = get_experiment(&mut conn, EXP_A).await.unwrap().unwrap();
    assert_eq!(a.status, "completed");
    assert_eq!(a.status_reason, "trial budget reached");
    assert_eq!(a.finished_at_ms, Some(5_000));
    let running: Vec<String> = running_experiments(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(running, vec![EXP_B]);
}

async fn duplicate_experiment_id_is_a_store_error(store: Store) {
    let mut conn = store.conn().await.unwrap();
    insert_experiment(&mut conn, EXP_A, "x", "{}", 1)
        .await
        .unwrap();
    let err = insert_experiment(&mut conn, EXP_A, "y", "{}", 2)
        .await
        .unwrap_err();
    assert!(matches!(err, MasterError::Store(_)), "{err}");
    assert_eq!(
        get_experiment(&mut conn, EXP_A)
            .await
            .unwrap()
            .unwrap()
            .name,
        "x"
    );
}

async fn trials_round_trip_in_seq_order(store: Store) {
    let mut conn = store.conn().await.unwrap();
    insert_experiment(&mut conn, EXP_A, "demo", "{}", 1)
        .await
        .unwrap();
    // Inserted out of seq order; listed by seq.
    for seq in [0, 2, 1] {
        let mut t = new_trial(EXP_A, &trial_id(seq), seq, "h", &format!("{{\"n\":{seq}}}"));
        if seq > 0 {
            t.parent_id = Some(trial_id(0));
        }
        insert_trial(&mut conn, &t, 10 + seq).await.unwrap();
    }
    let all = list_trials(&mut conn, EXP_A).await.unwrap();
    assert_eq!(all.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
    let t = get_trial(&mut conn, &trial_id(1)).await.unwrap().unwrap();
    assert_eq!(t.experiment_id, EXP_A);
    assert_eq!(t.parent_id.as_deref(), Some(trial_id(0).as_str()));
    assert_eq!(t.origin, "test #1");
    assert_eq!(t.hparams_json, r#"{"n":1}"#);
    assert_eq!((t.params, t.flops, t.seed), (1001, 2001, 8));
    assert_eq!(t.status().unwrap(), TrialStatus::Queued);
    assert_eq!(t.attempt, 1);
    assert_eq!(t.worker_id, None);
    assert_eq!(t.epoch, 0);
    assert_eq!(t.score, None);
    assert!(t.metrics().is_empty());
    assert_eq!(t.accepted, None);
    assert_eq!(t.temperature, Some(0.02));
    assert_eq!(t.created_at_ms, 11);
    assert!(get_trial(&mut conn, &trial_id(99)).await.unwrap().is_none());
    assert!(list_trials(&mut conn, EXP_B).await.unwrap().is_empty());
}

async fn seq_is_unique_per_experiment(store: Store) {
    let mut conn = store.conn().await.unwrap();
    insert_experiment(&mut conn, EXP_A, "a", "{}", 1)
        .await
        .unwrap();
    insert_experiment(&mut conn, EXP_B, "b", "{}", 2)
        .await
        .unwrap();
    assert_eq!(next_seq(&mut conn, EXP_A).await.unwrap(), 0);
    insert_trial(&mut conn, &new_trial(EXP_A, &trial_id(0), 0, "h", "{}"), 1)
        .await
        .unwrap();
    let dup = insert_trial(&mut conn, &new_trial(EXP_A, &trial_id(1), 0, "h", "{}"), 1).await;
    assert!(matches!(dup, Err(MasterError::Store(_))), "{dup:?}");
    // The same seq in another experiment is fine.
    insert_trial(&mut conn, &new_trial(EXP_B, &trial_id(2), 0, "h", "{}"), 1)
        .await
        .unwrap();
    insert_trial(&mut conn, &new_trial(EXP_A, &trial_id(3), 5, "h", "{}"), 1)
        .await
        .unwrap();
    assert_eq!(next_seq(&mut conn, EXP_A).await.unwrap(), 6);
    assert_eq!(next_seq(&mut conn, EXP_B).await.unwrap(), 1);
}

async fn foreign_keys_are_enforced(store: Store) {
    let mut conn = store.conn().await.unwrap();
    let orphan = insert_trial(&mut conn, &new_trial(EXP_A, &trial_id(0), 0, "h", "{}"), 1).await;
    assert!(matches!(orphan, Err(MasterError::Store(_))), "{orphan:?}");
    insert_experiment(&mut conn, EXP_A, "a", "{}", 1)
        .await
        .unwrap();
    let mut t = new_trial(EXP_A, &trial_id(0), 0, "h", "{}");
    t.parent_id = Some(trial_id(42));
    assert!(
        insert_trial(&mut conn, &t, 1).await.is_err(),
        "unknown parent accepted"
    );
    let late =
        insert_late_result(&mut conn, &trial_id(42), 1, WORKER, &result(0.5), "late", 1).await;
    assert!(late.is_err(), "late result of an unknown trial accepted");
}

async fn lease_takes_oldest_running_experiment_then_lowest_seq(store: Store) {
    seeded(&store, EXP_B, 2_000, 2).await;
    seeded(&store, EXP_A, 1_000, 2).await;
    let mut conn = store.conn().await.unwrap();
    let first = lease_next_trial(&mut conn, WORKER, 10_000, 500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.id, trial_id(0), "oldest experiment, lowest seq first");
    assert_eq!(first.status, "leased");
    assert_eq!(first.worker_id.as_deref(), Some(WORKER));
    assert_eq!(first.lease_deadline_ms, Some(10_500));
    assert_eq!(first.started_at_ms, Some(10_000));
    assert_eq!(
        lease_next_trial(&mut conn, WORKER, 10_001, 500)
            .await
            .unwrap()
            .unwrap()
            .id,
        trial_id(1)
    );
    // A finished experiment's queued trials are never leased.
    finish_experiment(&mut conn, EXP_B, ExperimentStatus::Failed, "x", 10_002)
        .await
        .unwrap();
    assert!(lease_next_trial(&mut conn, WORKER, 10_003, 500)
        .await
        .unwrap()
        .is_none());
    assert_eq!(trial_counts(&mut conn, EXP_B).await.unwrap().queued, 2);
}

async fn requeued_trial_keeps_its_first_start_time(store: Store) {
    seeded(&store, EXP_A, 1, 1).await;
    let mut conn = store.conn().await.unwrap();
    let id = trial_id(0);
    lease_next_trial(&mut conn, WORKER, 100, 50)
        .await
        .unwrap()
        .unwrap();
    assert!(heartbeat_trial(&mut conn, &id, WORKER, 1, 2, true, 300)
        .await
        .unwrap());
    requeue_trial(&mut conn, &id, "lease of attempt 1 expired")
        .await
        .unwrap();
    let t = get_trial(&mut conn, &id).await.unwrap().unwrap();
    assert_eq!(t.status, "queued");
    assert_eq!(t.attempt, 2);
    assert_eq!(t.worker_id, None);
    assert_eq!(t.lease_deadline_ms, None);
    assert_eq!(t.epoch, 0);
    assert_eq!(t.error, "lease of attempt 1 expired");
    let again = lease_next_trial(&mut conn, OTHER_WORKER, 900, 50)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempt, 2);
    assert_eq!(again.worker_id.as_deref(), Some(OTHER_WORKER));
    assert_eq!(again.started_at_ms, Some(100));
    assert_eq!(again.lease_deadline_ms, Some(950));
}

async fn heartbeat_needs_the_current_holder(store: Store) {
    seeded(&store, EXP_A, 1, 1).await;
    let mut conn = store.conn().await.unwrap();
    let id = trial_id(0);
    // Not leased yet.
    assert!(!heartbeat_trial(&mut conn, &id, WORKER, 1, 0, false, 1_000)
        .await
        .unwrap());
    lease_next_trial(&mut conn, WORKER, 100, 50)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !heartbeat_trial(&mut conn, &id, OTHER_WORKER, 1, 0, false, 1_000)
            .await
            .unwrap()
    );
    assert!(!heartbeat_trial(&mut conn, &id, WORKER, 2, 0, false, 1_000)
        .await
        .unwrap());
    assert_eq!(
        get_trial(&mut conn, &id)
            .await
            .unwrap()
            .unwrap()
            .lease_deadline_ms,
        Some(150)
    );

    // Epoch 0 extends the lease but the trial stays leased; a later epoch makes it running.
    assert!(heartbeat_trial(&mut conn, &id, WORKER, 1, 0, false, 1_000)
        .await
        .unwrap());
    let t = get_trial(&mut conn, &id).await.unwrap().unwrap();
    assert_eq!(
        (t.status.as_str(), t.lease_deadline_ms, t.epoch),
        ("leased", Some(1_000), 0)
    );
    assert!(heartbeat_trial(&mut conn, &id, WORKER, 1, 2, true, 2_000)
        .await
        .unwrap());
    // Epochs never go backwards.
    assert!(heartbeat_trial(&mut conn, &id, WORKER, 1, 1, true, 3_000)
        .await
        .unwrap());
    let t = get_trial(&mut conn, &id).await.unwrap().unwrap();
    assert_eq!(
        (t.status.as_str(), t.lease_deadline_ms, t.epoch),
        ("running", Some(3_000), 2)
    );

    complete_trial(&mut conn, &id, &result(0.5), true, 0.01, 4_000)
        .await
        .unwrap();
    assert!(!heartbeat_trial(&mut conn, &id, WORKER, 1, 3, true, 5_000)
        .await
        .unwrap());
    let t = get_trial(&mut conn, &id).await.unwrap().unwrap();
    assert_eq!(
        (t.status.as_str(), t.lease_deadline_ms),
        ("completed", None)
    );
}

async fn completion_records_the_result(store: Store) {
    seeded(&store, EXP_A, 1, 1).await;
    let mut conn = store.conn().await.unwrap();
    let id = trial_id(0);
    lease_next_trial(&mut conn, WORKER, 100, 50)
        .await
        .unwrap()
        .unwrap();
    complete_trial(&mut conn, &id, &result(0.75), false, 0.005, 4_000)
        .await
        .unwrap();
    let t = get_trial(&mut conn, &id).await.unwrap().unwrap();
    assert_eq!(t.status().unwrap(), TrialStatus::Completed);
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
        t.worker_id.as_deref(),
        Some(WORKER),
        "the worker that trained it is kept"
    );
    // Only accepted completed trials are annealing states.
    assert!(accepted_trials(&mut conn, EXP_A).await.unwrap().is_empty());
}

async fn accepted_trials_are_completed_and_accepted_in_seq_order(store: Store) {
    seeded(&store, EXP_A, 1, 4).await;
    let mut conn = store.conn().await.unwrap();
    for (n, accepted) in [(3, true), (0, true), (1, false)] {
        complete_trial(&mut conn, &trial_id(n), &result(0.5), accepted, 0.01, 10)
            .await
            .unwrap();
    }
    let ids: Vec<String> = accepted_trials(&mut conn, EXP_A)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec![trial_id(0), trial_id(3)]);
}

async fn counts_follow_every_status(store: Store) {
    seeded(&store, EXP_A, 1, 6).await;
    seeded(&store, EXP_B, 2, 2).await;
    let mut conn = store.conn().await.unwrap();
    assert_eq!(
        trial_counts(&mut conn, EXP_A).await.unwrap(),
        TrialCounts {
            queued: 6,
            ..TrialCounts::default()
        }
    );
    lease_next_trial(&mut conn, WORKER, 10, 100)
        .await
        .unwrap()
        .unwrap(); // 0 leased
    lease_next_trial(&mut conn, WORKER, 10, 100)
        .await
        .unwrap()
        .unwrap(); // 1 leased
    assert!(
        heartbeat_trial(&mut conn, &trial_id(1), WORKER, 1, 1, true, 200)
            .await
            .unwrap()
    ); // 1 running
    complete_trial(&mut conn, &trial_id(2), &result(0.1), true, 0.01, 20)
        .await
        .unwrap();
    end_trial(&mut conn, &trial_id(3), TrialStatus::Failed, "boom", 30)
        .await
        .unwrap();
    end_trial(&mut conn, &trial_id(4), TrialStatus::Cancelled, "stop", 30)
        .await
        .unwrap();
    let c = trial_counts(&mut conn, EXP_A).await.unwrap();
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
    let failed = get_trial(&mut conn, &trial_id(3)).await.unwrap().unwrap();
    assert_eq!(
        (failed.error.as_str(), failed.finished_at_ms),
        ("boom", Some(30))
    );
    // The other experiment is untouched.
    assert_eq!(trial_counts(&mut conn, EXP_B).await.unwrap().queued, 2);
    assert_eq!(
        trial_counts(&mut conn, "exp-none").await.unwrap(),
        TrialCounts::default()
    );
}

async fn cancel_queued_only_touches_queued_trials_of_that_experiment(store: Store) {
    seeded(&store, EXP_A, 1, 3).await;
    seeded(&store, EXP_B, 2, 1).await;
    let mut conn = store.conn().await.unwrap();
    lease_next_trial(&mut conn, WORKER, 10, 100)
        .await
        .unwrap()
        .unwrap();
    let n = cancel_queued(&mut conn, EXP_A, "budget reached", 50)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let c = trial_counts(&mut conn, EXP_A).await.unwrap();
    assert_eq!((c.queued, c.leased, c.cancelled), (0, 1, 2));
    let t = get_trial(&mut conn, &trial_id(1)).await.unwrap().unwrap();
    assert_eq!(
        (t.error.as_str(), t.finished_at_ms),
        ("budget reached", Some(50))
    );
    assert_eq!(trial_counts(&mut conn, EXP_B).await.unwrap().queued, 1);
    assert_eq!(
        cancel_queued(&mut conn, EXP_A, "again", 60).await.unwrap(),
        0
    );
}

async fn candidate_exists_ignores_failed_and_cancelled(store: Store) {
    seeded(&store, EXP_A, 1, 3).await;
    seeded(&store, EXP_B, 2, 0).await;
    let mut conn = store.conn().await.unwrap();
    assert!(candidate_exists(&mut conn, EXP_A, "hash0", "{}")
        .await
        .unwrap());
    assert!(!candidate_exists(&mut conn, EXP_A, "hash0", r#"{"x":1}"#)
        .await
        .unwrap());
    assert!(!candidate_exists(&mut conn, EXP_B, "hash0", "{}")
        .await
        .unwrap());
    end_trial(&mut conn, &trial_id(0), TrialStatus::Failed, "boom", 5)
        .await
        .unwrap();
    end_trial(&mut conn, &trial_id(1), TrialStatus::Cancelled, "stop", 5)
        .await
        .unwrap();
    complete_trial(&mut conn, &trial_id(2), &result(0.2), true, 0.01, 5)
        .await
        .unwrap();
    assert!(!candidate_exists(&mut conn, EXP_A, "hash0", "{}")
        .await
        .unwrap());
    assert!(!candidate_exists(&mut conn, EXP_A, "hash1", "{}")
        .await
        .unwrap());
    assert!(candidate_exists(&mut conn, EXP_A, "hash2", "{}")
        .await
        .unwrap());
}

async fn expired_leases_are_held_trials_past_their_deadline(store: Store) {
    seeded(&store, EXP_A, 1, 4).await;
    let mut conn = store.conn().await.unwrap();
    lease_next_trial(&mut conn, WORKER, 0, 100)
        .await
        .unwrap()
        .unwrap(); // 0: deadline 100
    lease_next_trial(&mut conn, WORKER, 0, 300)
        .await
        .unwrap()
        .unwrap(); // 1: deadline 300
    lease_next_trial(&mut conn, WORKER, 0, 100)
        .await
        .unwrap()
        .unwrap(); // 2: deadline 100
    assert!(
        heartbeat_trial(&mut conn, &trial_id(2), WORKER, 1, 1, true, 100)
            .await
            .unwrap()
    );
    complete_trial(&mut conn, &trial_id(2), &result(0.3), true, 0.01, 50)
        .await
        .unwrap();
    // A deadline equal to now has not expired yet.
    assert!(expired_leases(&mut conn, 100).await.unwrap().is_empty());
    let ids: Vec<String> = expired_leases(&mut conn, 101)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec![trial_id(0)]);
    let ids: Vec<String> = expired_leases(&mut conn, 10_000)
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
    seeded(&store, EXP_A, 1, 3).await;
    let mut conn = store.conn().await.unwrap();
    lease_next_trial(&mut conn, WORKER, 0, 100)
        .await
        .unwrap()
        .unwrap();
    lease_next_trial(&mut conn, OTHER_WORKER, 0, 100)
        .await
        .unwrap()
        .unwrap();
    lease_next_trial(&mut conn, WORKER, 0, 100)
        .await
        .unwrap()
        .unwrap();
    complete_trial(&mut conn, &trial_id(2), &result(0.3), true, 0.01, 50)
        .await
        .unwrap();
    let held: Vec<String> = trials_held_by(&mut conn, WORKER)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(held, vec![trial_id(0)]);
    assert_eq!(
        trials_held_by(&mut conn, OTHER_WORKER).await.unwrap().len(),
        1
    );
    assert!(trials_held_by(&mut conn, "worker-none")
        .await
        .unwrap()
        .is_empty());
}

async fn late_results_are_kept_apart(store: Store) {
    seeded(&store, EXP_A, 1, 1).await;
    let mut conn = store.conn().await.unwrap();
    insert_late_result(
        &mut conn,
        &trial_id(0),
        1,
        WORKER,
        &result(0.9),
        "superseded",
        77,
    )
    .await
    .unwrap();
    let rows: Vec<(String, i64, String, f64, String, i64)> = sqlx::query_as(
        "SELECT trial_id, attempt, worker_id, score, reason, received_at_ms FROM late_results",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![(
            trial_id(0),
            1,
            WORKER.to_string(),
            0.9,
            "superseded".to_string(),
            77
        )]
    );
    let t = get_trial(&mut conn, &trial_id(0)).await.unwrap().unwrap();
    assert_eq!((t.status.as_str(), t.score), ("queued", None));
}

async fn workers_register_and_count_while_recently_seen(store: Store) {
    let mut conn = store.conn().await.unwrap();
    assert_eq!(connected_slots(&mut conn, 0).await.unwrap(), 0);
    assert!(!worker_is_active(&mut conn, WORKER).await.unwrap());
    insert_worker(&mut conn, WORKER, "w1", "cpu", 2, 1_000)
        .await
        .unwrap();
    insert_worker(&mut conn, OTHER_WORKER, "w2", "cuda:0", 3, 2_000)
        .await
        .unwrap();
    assert!(insert_worker(&mut conn, WORKER, "again", "cpu", 1, 3_000)
        .await
        .is_err());
    assert!(worker_is_active(&mut conn, WORKER).await.unwrap());
    assert_eq!(connected_slots(&mut conn, 1_000).await.unwrap(), 5);
    assert_eq!(connected_slots(&mut conn, 1_001).await.unwrap(), 3);
    touch_worker(&mut conn, WORKER, 5_000).await.unwrap();
    assert_eq!(connected_slots(&mut conn, 4_000).await.unwrap(), 2);
    worker_left(&mut conn, WORKER).await.unwrap();
    assert!(!worker_is_active(&mut conn, WORKER).await.unwrap());
    assert_eq!(connected_slots(&mut conn, 0).await.unwrap(), 3);
}

async fn uncommitted_transaction_leaves_nothing(store: Store) {
    {
        let mut tx = store.begin().await.unwrap();
        insert_experiment(&mut tx, EXP_A, "a", "{}", 1)
            .await
            .unwrap();
        insert_trial(&mut tx, &new_trial(EXP_A, &trial_id(0), 0, "h", "{}"), 1)
            .await
            .unwrap();
        assert!(get_experiment(&mut tx, EXP_A).await.unwrap().is_some());
        // Dropped without commit: rolled back.
    }
    let mut conn = store.conn().await.unwrap();
    assert!(get_experiment(&mut conn, EXP_A).await.unwrap().is_none());
    assert!(get_trial(&mut conn, &trial_id(0)).await.unwrap().is_none());
    drop(conn);
    let mut tx = store.begin().await.unwrap();
    insert_experiment(&mut tx, EXP_A, "a", "{}", 1)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.conn().await.unwrap();
    assert!(get_experiment(&mut conn, EXP_A).await.unwrap().is_some());
}

async fn epoch_curves_feed_peers_and_pruning_ends_a_trial(store: Store) {
    seeded(&store, EXP_A, 1, 3).await;
    seeded(&store, EXP_B, 2, 1).await;
    let mut conn = store.conn().await.unwrap();
    record_epoch(
        &mut conn,
        &trial_id(0),
        1,
        0.80,
        Some(0.5),
        &BTreeMap::new(),
    )
    .await
    .unwrap();
    record_epoch(&mut conn, &trial_id(1), 1, 0.70, None, &BTreeMap::new())
        .await
        .unwrap();
    // A repeated report replaces the earlier one.
    record_epoch(&mut conn, &trial_id(1), 1, 0.75, None, &BTreeMap::new())
        .await
        .unwrap();
    record_epoch(&mut conn, &trial_id(1), 2, 0.85, None, &BTreeMap::new())
        .await
        .unwrap();
    record_epoch(&mut conn, &trial_id(100), 1, 0.99, None, &BTreeMap::new())
        .await
        .unwrap();
    let mut peers = peer_accuracies(&mut conn, EXP_A, &trial_id(2), 1)
        .await
        .unwrap();
    peers.sort_by(f64::total_cmp);
    assert_eq!(peers, vec![0.75, 0.80], "other experiments are not peers");
    assert_eq!(
        peer_accuracies(&mut conn, EXP_A, &trial_id(0), 1)
            .await
            .unwrap(),
        vec![0.75],
        "a trial is not its own peer"
    );
    lease_next_trial(&mut conn, WORKER, 10, 100)
        .await
        .unwrap()
        .unwrap();
    prune_trial(
        &mut conn,
        &trial_id(0),
        0.8,
        1,
        "below the median",
        0.01,
        20,
    )
    .await
    .unwrap();
    let t = get_trial(&mut conn, &trial_id(0)).await.unwrap().unwrap();
    assert_eq!(t.status, "pruned");
    assert_eq!((t.score, t.epoch, t.accepted), (Some(0.8), 1, Some(false)));
    assert_eq!(
        (t.error.as_str(), t.finished_at_ms),
        ("below the median", Some(20))
    );
    let counts = trial_counts(&mut conn, EXP_A).await.unwrap();
    assert_eq!(
        (counts.pruned, counts.finished(), counts.budgeted()),
        (1, 1, 3)
    );
    assert!(accepted_trials(&mut conn, EXP_A).await.unwrap().is_empty());
}

async fn epoch_metrics_round_trip_and_an_epoch_without_any_stores_null(store: Store) {
    seeded(&store, EXP_A, 1, 3).await;
    seeded(&store, EXP_B, 2, 1).await;
    let mut conn = store.conn().await.unwrap();
    let drift = BTreeMap::from([
        ("elr.norm_drift".to_string(), 0.0125),
        ("elr.scale".to_string(), -3.5e-9),
    ]);
    let none = BTreeMap::new();
    record_epoch(&mut conn, &trial_id(0), 1, 0.5, Some(0.9), &drift)
        .await
        .unwrap();
    record_epoch(&mut conn, &trial_id(0), 2, 0.6, None, &none)
        .await
        .unwrap();
    let curve = epoch_curve(&mut conn, &trial_id(0)).await.unwrap();
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
    let (stored,): (Option<String>,) =
        sqlx::query_as("SELECT metrics_json FROM trial_epochs WHERE trial_id = ? AND epoch = 2")
            .bind(trial_id(0))
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(stored, None, "no metrics is NULL, not an empty object");

    // The last recorded epoch counts, up to the trial's own epoch count: trial 0 (epoch 2) has
    // none at its last epoch; trial 1 shows epoch 2's; trial 2 was requeued back to epoch 1, so
    // what its abandoned attempt reported for epoch 3 is not its last epoch.
    let later = BTreeMap::from([("elr.norm_drift".to_string(), 0.5)]);
    record_epoch(&mut conn, &trial_id(1), 1, 0.5, None, &drift)
        .await
        .unwrap();
    record_epoch(&mut conn, &trial_id(1), 2, 0.6, None, &later)
        .await
        .unwrap();
    record_epoch(&mut conn, &trial_id(2), 1, 0.5, None, &drift)
        .await
        .unwrap();
    record_epoch(&mut conn, &trial_id(2), 3, 0.7, None, &later)
        .await
        .unwrap();
    record_epoch(&mut conn, &trial_id(100), 1, 0.5, None, &later)
        .await
        .unwrap();
    for (n, epoch) in [(0, 2), (1, 2), (2, 1)] {
        sqlx::query("UPDATE trials SET epoch = ? WHERE id = ?")
            .bind(epoch)
            .bind(trial_id(n))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let last = last_epoch_metrics(&mut conn, EXP_A).await.unwrap();
    assert_eq!(
        last,
        HashMap::from([(trial_id(1), later.clone()), (trial_id(2), drift.clone())])
    );
    // A repeated report replaces the epoch's metrics too.
    record_epoch(&mut conn, &trial_id(1), 2, 0.6, None, &none)
        .await
        .unwrap();
    let last = last_epoch_metrics(&mut conn, EXP_A).await.unwrap();
    assert!(!last.contains_key(&trial_id(1)), "{last:?}");
}

async fn epoch_usage_counts_run_and_planned_epochs(store: Store) {
    let mut conn = store.conn().await.unwrap();
    insert_experiment(&mut conn, EXP_A, "demo", "{}", 1)
        .await
        .unwrap();
    for seq in 0..4 {
        let hp = format!("{{\"epochs\":{}}}", seq + 2);
        let t = new_trial(EXP_A, &trial_id(seq), seq, &format!("h{seq}"), &hp);
        insert_trial(&mut conn, &t, 1).await.unwrap();
    }
    assert_eq!(
        epoch_usage(&mut conn, EXP_A).await.unwrap(),
        EpochUsage {
            spent: 0,
            committed: 2 + 3 + 4 + 5
        }
    );
    // 0 completes after 2 epochs, 1 is pruned after 1, 2 runs its first epoch, 3 is cancelled.
    lease_next_trial(&mut conn, WORKER, 10, 100).await.unwrap();
    complete_trial(
        &mut conn,
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
    lease_next_trial(&mut conn, WORKER, 10, 100).await.unwrap();
    prune_trial(&mut conn, &trial_id(1), 0.5, 1, "pruned", 0.01, 30)
        .await
        .unwrap();
    lease_next_trial(&mut conn, WORKER, 10, 100).await.unwrap();
    heartbeat_trial(&mut conn, &trial_id(2), WORKER, 1, 1, true, 200)
        .await
        .unwrap();
    cancel_queued(&mut conn, EXP_A, "budget", 40).await.unwrap();
    assert_eq!(
        epoch_usage(&mut conn, EXP_A).await.unwrap(),
        EpochUsage {
            spent: 2 + 1 + 1,
            committed: 2 + 1 + 4
        }
    );
}

async fn chains_round_trip_and_loads_count_open_trials(store: Store) {
    seeded(&store, EXP_A, 1, 3).await;
    let mut conn = store.conn().await.unwrap();
    assert_eq!(get_chain(&mut conn, EXP_A, 0).await.unwrap(), None);
    let chain = ChainRow {
        experiment_id: EXP_A.into(),
        chain: 1,
        temperature: 0.02,
        current_trial_id: Some(trial_id(1)),
        best_score: Some(0.9),
        since_improvement: 2,
        results: 5,
        accepted: 3,
        reheats: 1,
    };
    save_chain(&mut conn, &chain).await.unwrap();
    save_chain(
        &mut conn,
        &ChainRow {
            temperature: 0.01,
            ..chain.clone()
        },
    )
    .await
    .unwrap();
    let loaded = get_chain(&mut conn, EXP_A, 1).await.unwrap().unwrap();
    assert_eq!(loaded.temperature, 0.01);
    assert_eq!(list_chains(&mut conn, EXP_A).await.unwrap().len(), 1);
    // seeded() puts trial seq s on chain s % 2: chain 0 holds seqs 0 and 2, chain 1 seq 1.
    let mut loads = chain_loads(&mut conn, EXP_A).await.unwrap();
    loads.sort();
    assert_eq!(loads, vec![(0, 2, 2), (1, 1, 1)]);
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
);

/// The tallies the triggers keep (0005_scale.sql) against a direct count of the rows.
async fn assert_tallies_match(conn: &mut SqliteConnection) {
    let direct: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT experiment_id, kind, status, COUNT(*), SUM(epoch) FROM trials
          GROUP BY experiment_id, kind, status ORDER BY 1, 2, 3",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let kept: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT experiment_id, kind, status, n, epochs FROM trial_tallies WHERE n != 0
          ORDER BY 1, 2, 3",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(kept, direct);
    let direct: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT experiment_id, chain, SUM(status IN ('queued', 'leased', 'running')), COUNT(*)
           FROM trials WHERE kind = 'train' GROUP BY experiment_id, chain ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let kept: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT experiment_id, chain, open, total FROM chain_tallies WHERE total != 0
          ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(kept, direct);
}

async fn tallies_match_a_count_of_the_rows_after_every_kind_of_change(store: Store) {
    seeded(&store, EXP_A, 1, 6).await;
    seeded(&store, EXP_B, 2, 3).await;
    let mut conn = store.conn().await.unwrap();
    assert_tallies_match(&mut conn).await;
    insert_worker(&mut conn, WORKER, "w", "cpu", 1, 0)
        .await
        .unwrap();
    let leased = lease_next_trial(&mut conn, WORKER, 10, 1000)
        .await
        .unwrap()
        .unwrap();
    heartbeat_trial(&mut conn, &leased.id, WORKER, 1, 2, true, 2000)
        .await
        .unwrap();
    assert_tallies_match(&mut conn).await;
    complete_trial(&mut conn, &leased.id, &result(0.8), true, 0.01, 20)
        .await
        .unwrap();
    let second = lease_next_trial(&mut conn, WORKER, 30, 1000)
        .await
        .unwrap()
        .unwrap();
    requeue_trial(&mut conn, &second.id, "lost").await.unwrap();
    let third = lease_next_trial(&mut conn, WORKER, 40, 1000)
        .await
        .unwrap()
        .unwrap();
    prune_trial(&mut conn, &third.id, 0.3, 1, "worse", 0.01, 50)
        .await
        .unwrap();
    let fourth = lease_next_trial(&mut conn, WORKER, 60, 1000)
        .await
        .unwrap()
        .unwrap();
    end_trial(&mut conn, &fourth.id, TrialStatus::Failed, "boom", 70)
        .await
        .unwrap();
    cancel_queued(&mut conn, EXP_A, "over", 80).await.unwrap();
    assert_tallies_match(&mut conn).await;
    let counts = trial_counts(&mut conn, EXP_A).await.unwrap();
    assert_eq!(
        (
            counts.completed,
            counts.pruned,
            counts.failed,
            counts.queued
        ),
        (1, 1, 1, 0)
    );
    sqlx::query("DELETE FROM trials WHERE experiment_id = ? AND status = 'cancelled'")
        .bind(EXP_B)
        .execute(&mut *conn)
        .await
        .unwrap();
    assert_tallies_match(&mut conn).await;
}

async fn trials_are_listed_page_by_page_in_seq_order(store: Store) {
    seeded(&store, EXP_A, 1, 7).await;
    seeded(&store, EXP_B, 2, 2).await;
    let mut conn = store.conn().await.unwrap();
    insert_worker(&mut conn, WORKER, "w", "cpu", 1, 0)
        .await
        .unwrap();
    let leased = lease_next_trial(&mut conn, WORKER, 10, 1000)
        .await
        .unwrap()
        .unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = list_trials_page(&mut conn, EXP_A, after, None, 3)
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
    let queued = list_trials_page(&mut conn, EXP_A, Some(0), Some("queued"), 100)
        .await
        .unwrap();
    assert_eq!(queued.len(), 6);
    assert!(queued.iter().all(|t| t.id != leased.id && t.seq > 0));
    let held = list_trials_page(&mut conn, EXP_A, None, Some("leased"), 100)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id, leased.id);
}

async fn base_candidates_are_the_best_accepted_in_seq_order(store: Store) {
    seeded(&store, EXP_A, 1, 5).await;
    let mut conn = store.conn().await.unwrap();
    insert_worker(&mut conn, WORKER, "w", "cpu", 1, 0)
        .await
        .unwrap();
    for (score, accepted) in [(0.5, true), (0.9, false), (0.7, true), (0.6, true)] {
        let t = lease_next_trial(&mut conn, WORKER, 10, 1000)
            .await
            .unwrap()
            .unwrap();
        complete_trial(&mut conn, &t.id, &result(score), accepted, 0.01, 20)
            .await
            .unwrap();
    }
    let candidates = base_candidates(&mut conn, EXP_A).await.unwrap();
    let accepted: Vec<(String, i64, f64)> = accepted_trials(&mut conn, EXP_A)
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
}

// ---- file database only ------------------------------------------------------------------------

#[tokio::test]
async fn reopening_keeps_the_data_and_reapplies_no_migration() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    seeded(&store, EXP_A, 1, 2).await;
    store.close().await;
    assert!(dir.path().join(DB_FILE).is_file());

    let store = Store::open(dir.path()).await.unwrap();
    let mut conn = store.conn().await.unwrap();
    assert_eq!(list_trials(&mut conn, EXP_A).await.unwrap().len(), 2);
    let (migrations,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut *conn)
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
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/0001_init.sql"),
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
    let trials = list_trials(&mut conn, EXP_A).await.unwrap();
    assert_eq!(trials.len(), 2);
    assert_eq!(
        (trials[0].score, trials[0].epoch, trials[0].chain),
        (Some(0.9), 3, 0)
    );
    assert_eq!(
        trials[1].parent_id.as_deref(),
        Some("trial-0000000000000000")
    );
    let (late,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM late_results")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(late, 1);
    let violations = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert!(violations.is_empty());
    let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(fk, 1, "foreign keys are back on after the upgrade");
    prune_trial(&mut conn, &trial_id(1), 0.4, 1, "median rule", 0.01, 9)
        .await
        .unwrap();
    assert_eq!(status_of(&store, &trial_id(1)).await, "pruned");
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
            format!("{}/migrations/{file}", env!("CARGO_MANIFEST_DIR")),
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
    let curve = epoch_curve(&mut conn, &trial_id(0)).await.unwrap();
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
    assert!(last_epoch_metrics(&mut conn, EXP_A)
        .await
        .unwrap()
        .is_empty());
    // New reports on the upgraded pool carry metrics.
    let drift = BTreeMap::from([("elr.norm_drift".to_string(), 0.25)]);
    record_epoch(&mut conn, &trial_id(0), 2, 0.6, None, &drift)
        .await
        .unwrap();
    assert_eq!(
        last_epoch_metrics(&mut conn, EXP_A).await.unwrap(),
        HashMap::from([(trial_id(0), drift)])
    );
}

#[tokio::test]
async fn open_creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a").join("b");
    let store = Store::open(&nested).await.unwrap();
    seeded(&store, EXP_A, 1, 1).await;
    assert!(nested.join(DB_FILE).is_file());
}

// Regression: the database path was spliced into a `sqlite://` URL, so a data directory with `?`
// in its name was read as URL parameters and one with `%41` was percent-decoded elsewhere.
#[tokio::test]
async fn open_accepts_directory_names_that_look_like_url_syntax() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("run?mode=ro #2 100%41");
    let store = Store::open(&odd).await.unwrap();
    seeded(&store, EXP_A, 1, 1).await;
    store.close().await;
    assert!(
        odd.join(DB_FILE).is_file(),
        "database not inside {}",
        odd.display()
    );
    let store = Store::open(&odd).await.unwrap();
    let mut conn = store.conn().await.unwrap();
    assert_eq!(list_trials(&mut conn, EXP_A).await.unwrap().len(), 1);
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
    seeded(&store, EXP_A, 1, 1).await;
    let mut tx = store.begin().await.unwrap();
    lease_next_trial(&mut tx, WORKER, 10, 100)
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
    assert_eq!(read, "queued");
    tx.commit().await.unwrap();
    assert_eq!(status_of(&store, &trial_id(0)).await, "leased");
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
    seeded(&store, EXP_A, 1, 1).await;
    let mut first = store.begin().await.unwrap();
    touch_worker(&mut first, WORKER, 1).await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        first.rollback().await.unwrap();
    });
    let mut next = store.begin().await.unwrap();
    get_trial(&mut next, &trial_id(0)).await.unwrap();
    touch_worker(&mut next, WORKER, 2).await.unwrap();
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
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}
