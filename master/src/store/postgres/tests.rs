//! Smoke tests of the PostgreSQL backend against a real server: they run when
//! `EXPLORE_TEST_PG_URL` names a database where they may create schemas (each test works in a
//! fresh schema `t_<random hex>`, dropped at its end), and otherwise say so and pass (unless
//! `EXPLORE_REQUIRE_PG` is set, as in CI: then they fail).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};

use super::final_phase::*;
use super::reads::*;
use super::*;
use crate::store::reads::{TrialFilter, TrialSort};
use crate::store::{ExperimentStatus, NewTrial, TrialResult, TrialStatus};

/// The variable naming the test server.
const URL_VAR: &str = "EXPLORE_TEST_PG_URL";
/// Set (CI): the tests must run, never skip.
const REQUIRE_VAR: &str = "EXPLORE_REQUIRE_PG";

/// A migrated pool in a schema of its own.
struct TestDb {
    url: String,
    schema: String,
    pool: PgPool,
}

impl TestDb {
    /// A fresh schema on the server `EXPLORE_TEST_PG_URL` names, or None (with a message) when
    /// the variable is not set.
    async fn new(test: &str) -> Option<TestDb> {
        let url = match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => url,
            _ => {
                assert!(
                    std::env::var_os(REQUIRE_VAR).is_none(),
                    "{test}: {REQUIRE_VAR} is set but {URL_VAR} is not"
                );
                eprintln!("skipping {test}: {URL_VAR} is not set (a postgres:// URL)");
                return None;
            }
        };
        let schema = format!("t_{}", hex::encode(rand::random::<[u8; 8]>()));
        let mut admin = PgConnection::connect(&url).await.expect("connecting");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .expect("creating the test schema");
        admin.close().await.ok();
        let pool = connect_with(Self::options(&url, &schema))
            .await
            .expect("connecting and migrating");
        Some(TestDb { url, schema, pool })
    }

    fn options(url: &str, schema: &str) -> PgConnectOptions {
        PgConnectOptions::from_str(url)
            .unwrap()
            .options([("search_path", schema)])
    }

    async fn conn(&self) -> sqlx::pool::PoolConnection<sqlx::Postgres> {
        self.pool.acquire().await.unwrap()
    }

    /// Closes the pool and drops the schema.
    async fn finish(self) {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&self.url).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.ok();
    }
}

/// A well-formed id of any kind (the tests name theirs `exp-e`, `trial-t0`, `worker-w1`...).
fn id<T: FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse().unwrap()
}

fn new_trial(experiment_id: &str, trial_id: &str, seq: i64, hparams_json: &str) -> NewTrial {
    NewTrial {
        id: id(trial_id),
        experiment_id: id(experiment_id),
        seq,
        parent_id: None,
        origin: format!("test #{seq}"),
        genome_json: "{}".into(),
        genome_hash: format!("g{}", seq % 3),
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

fn result(score: f64, epochs_run: u32) -> TrialResult {
    TrialResult {
        score,
        metrics: BTreeMap::from([("test_accuracy".to_string(), score - 0.01)]),
        checkpoint_sha256: Some("ab".repeat(32)),
        epochs_run,
    }
}

/// An experiment `e` with `n` queued trials `t0..`, epochs 3 each.
async fn experiment_with_trials(conn: &mut PgConnection, n: i64) {
    insert_experiment(conn, &id("exp-e"), "smoke", "{}", 1_000)
        .await
        .unwrap();
    for seq in 0..n {
        let hparams = format!(r#"{{"epochs":3,"lr":{seq}}}"#);
        insert_trial(
            conn,
            &new_trial("exp-e", &format!("trial-t{seq}"), seq, &hparams),
            1_000 + seq,
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn migrations_apply_once_and_a_second_connect_finds_them_applied() {
    let Some(db) = TestDb::new("migrations").await else {
        return;
    };
    let again = connect_with(TestDb::options(&db.url, &db.schema))
        .await
        .unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&again)
        .await
        .unwrap();
    assert_eq!(n, migrations::MIGRATIONS.len() as i64);
    again.close().await;
    let mut conn = db.conn().await;
    ping(&mut conn).await.unwrap();
    drop(conn);
    db.finish().await;
}

#[tokio::test]
async fn a_trial_is_leased_heartbeated_completed_and_counted() {
    let Some(db) = TestDb::new("lifecycle").await else {
        return;
    };
    let mut conn = db.conn().await;
    experiment_with_trials(&mut conn, 3).await;
    insert_worker(&mut conn, &id("worker-w1"), "worker one", "cpu", 2, 1_000)
        .await
        .unwrap();
    assert!(worker_is_active(&mut conn, &id("worker-w1")).await.unwrap());
    assert_eq!(next_seq(&mut conn, &id("exp-e")).await.unwrap(), 3);
    assert!(
        candidate_exists(&mut conn, &id("exp-e"), "g1", r#"{"epochs":3,"lr":1}"#)
            .await
            .unwrap()
    );
    assert!(!candidate_exists(&mut conn, &id("exp-e"), "g1", "{}")
        .await
        .unwrap());

    let counts = trial_counts(&mut conn, &id("exp-e")).await.unwrap();
    assert_eq!((counts.queued, counts.budgeted()), (3, 3));
    assert_eq!(
        epoch_usage(&mut conn, &id("exp-e")).await.unwrap(),
        EpochUsage {
            spent: 0,
            committed: 9
        }
    );

    let leased = lease_next_trial(&mut conn, &id("worker-w1"), 2_000, 500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.id.as_str(), "trial-t0");
    assert_eq!(leased.status, TrialStatus::Leased);
    assert_eq!(leased.lease_deadline_ms, Some(2_500));
    assert_eq!(leased.started_at_ms, Some(2_000));
    assert!(heartbeat_trial(
        &mut conn,
        &id("trial-t0"),
        &id("worker-w1"),
        1,
        2,
        false,
        3_000
    )
    .await
    .unwrap());
    assert!(!heartbeat_trial(
        &mut conn,
        &id("trial-t0"),
        &id("worker-w2"),
        1,
        2,
        false,
        3_000
    )
    .await
    .unwrap());
    let t0 = get_trial(&mut conn, &id("trial-t0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t0.status.as_str(), t0.epoch), ("running", 2));
    assert_eq!(
        epoch_usage(&mut conn, &id("exp-e")).await.unwrap(),
        EpochUsage {
            spent: 2,
            committed: 9
        }
    );
    record_epoch(
        &mut conn,
        &id("trial-t0"),
        1,
        0.5,
        Some(1.0),
        &BTreeMap::new(),
    )
    .await
    .unwrap();
    let metrics = BTreeMap::from([("elr.drift".to_string(), 0.25)]);
    record_epoch(&mut conn, &id("trial-t0"), 2, 0.6, None, &metrics)
        .await
        .unwrap();
    record_epoch(&mut conn, &id("trial-t0"), 2, 0.7, None, &metrics)
        .await
        .unwrap();
    let curve = epoch_curve(&mut conn, &id("trial-t0")).await.unwrap();
    assert_eq!(curve.len(), 2);
    assert_eq!(curve[1].val_accuracy, 0.7);
    assert_eq!(trial_epoch_metrics(&mut conn, &t0).await.unwrap(), metrics);
    assert_eq!(
        last_epoch_metrics(&mut conn, &id("exp-e")).await.unwrap()[&id("trial-t0")],
        metrics
    );
    assert_eq!(
        trials_epoch_metrics(&mut conn, std::slice::from_ref(&t0))
            .await
            .unwrap()[&id("trial-t0")],
        metrics
    );
    assert!(
        peer_accuracies(&mut conn, &id("exp-e"), &id("trial-t1"), 2)
            .await
            .unwrap()
            == vec![0.7]
    );
    assert_eq!(
        trials_held_by(&mut conn, &id("worker-w1"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        held_trials_of(&mut conn, &id("exp-e")).await.unwrap().len(),
        1
    );
    assert_eq!(held_trials(&mut conn).await.unwrap().len(), 1);
    assert_eq!(extend_held_leases(&mut conn, 10_000).await.unwrap(), 1);
    assert!(expired_leases(&mut conn, 9_999).await.unwrap().is_empty());
    assert_eq!(expired_leases(&mut conn, 10_001).await.unwrap().len(), 1);
    // w1 holds one trial of its two slots: no starving.
    assert!(!prefetch_would_starve(&mut conn, &id("worker-w1"), 0)
        .await
        .unwrap());

    complete_trial(
        &mut conn,
        &id("trial-t0"),
        &result(0.8, 3),
        true,
        0.02,
        4_000,
    )
    .await
    .unwrap();
    let t0 = get_trial(&mut conn, &id("trial-t0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t0.status, TrialStatus::Completed);
    assert_eq!(t0.accepted, Some(true));
    assert_eq!(t0.metrics()["test_accuracy"], 0.8 - 0.01);
    assert_eq!(
        accepted_trials(&mut conn, &id("exp-e"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        base_candidates(&mut conn, &id("exp-e")).await.unwrap(),
        vec![(id("trial-t0"), 0, 0.8)]
    );
    let counts = trial_counts(&mut conn, &id("exp-e")).await.unwrap();
    assert_eq!(
        (counts.queued, counts.in_flight(), counts.completed),
        (2, 0, 1)
    );
    assert_eq!(
        probe_counts(&mut conn, &id("exp-e")).await.unwrap(),
        TrialCounts::default()
    );
    assert_eq!(
        epoch_usage(&mut conn, &id("exp-e")).await.unwrap(),
        EpochUsage {
            spent: 3,
            committed: 9
        }
    );

    // The second trial: leased, requeued (a new attempt), leased again and pruned.
    let t1 = lease_next_trial(&mut conn, &id("worker-w1"), 5_000, 500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t1.id.as_str(), "trial-t1");
    requeue_trial(&mut conn, &id("trial-t1"), "lease expired")
        .await
        .unwrap();
    let t1 = lease_next_trial(&mut conn, &id("worker-w1"), 6_000, 500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t1.id.as_str(), t1.attempt, t1.started_at_ms),
        ("trial-t1", 2, Some(5_000))
    );
    insert_late_result(
        &mut conn,
        &id("trial-t1"),
        1,
        &id("worker-w1"),
        &result(0.1, 1),
        "superseded",
        6_100,
    )
    .await
    .unwrap();
    prune_trial(
        &mut conn,
        &id("trial-t1"),
        0.3,
        1,
        "pruned at epoch 1",
        0.02,
        7_000,
    )
    .await
    .unwrap();
    let t1 = get_trial(&mut conn, &id("trial-t1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t1.status.as_str(), t1.accepted), ("pruned", Some(false)));

    // The third: cancelled with the queue.
    assert_eq!(
        cancel_queued(&mut conn, &id("exp-e"), "done", 8_000)
            .await
            .unwrap(),
        1
    );
    let counts = trial_counts(&mut conn, &id("exp-e")).await.unwrap();
    assert_eq!(
        (
            counts.completed,
            counts.pruned,
            counts.cancelled,
            counts.queued
        ),
        (1, 1, 1, 0)
    );
    assert!(lease_next_trial(&mut conn, &id("worker-w1"), 9_000, 500)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        chain_loads(&mut conn, &id("exp-e"))
            .await
            .unwrap()
            .into_iter()
            .fold((0, 0), |(o, t), (_, open, total)| (o + open, t + total)),
        (0, 3)
    );
    drop(conn);
    db.finish().await;
}

#[tokio::test]
async fn two_concurrent_leases_get_two_different_trials() {
    let Some(db) = TestDb::new("concurrent leases").await else {
        return;
    };
    {
        let mut conn = db.conn().await;
        experiment_with_trials(&mut conn, 3).await;
    }
    let mut first = db.pool.begin().await.unwrap();
    let a = lease_next_trial(&mut first, &id("worker-w1"), 2_000, 500)
        .await
        .unwrap()
        .unwrap();
    // The second transaction skips the trial the first one holds locked; it may then wait for
    // the first one's tally rows, so it runs in a task while the first commits.
    let pool = db.pool.clone();
    let second = tokio::spawn(async move {
        let mut tx = pool.begin().await.unwrap();
        let b = lease_next_trial(&mut tx, &id("worker-w2"), 2_000, 500)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        b
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.commit().await.unwrap();
    let b = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second lease finishes")
        .unwrap()
        .expect("the second lease gets a trial");
    assert_ne!(a.id, b.id);
    assert_eq!((a.id.as_str(), b.id.as_str()), ("trial-t0", "trial-t1"));
    let mut conn = db.conn().await;
    assert_eq!(
        get_trial(&mut conn, &id("trial-t0"))
            .await
            .unwrap()
            .unwrap()
            .worker_id
            .as_ref()
            .map(|w| w.as_str()),
        Some("worker-w1")
    );
    assert_eq!(
        get_trial(&mut conn, &id("trial-t1"))
            .await
            .unwrap()
            .unwrap()
            .worker_id
            .as_ref()
            .map(|w| w.as_str()),
        Some("worker-w2")
    );
    let counts = trial_counts(&mut conn, &id("exp-e")).await.unwrap();
    assert_eq!((counts.queued, counts.leased), (1, 2));
    drop(conn);
    db.finish().await;
}

#[tokio::test]
async fn every_other_operation_runs_and_decodes() {
    let Some(db) = TestDb::new("other operations").await else {
        return;
    };
    let mut conn = db.conn().await;
    experiment_with_trials(&mut conn, 4).await;
    // Experiments.
    assert_eq!(list_experiments(&mut conn).await.unwrap().len(), 1);
    assert_eq!(running_experiments(&mut conn).await.unwrap().len(), 1);
    stop_experiment(&mut conn, &id("exp-e"), "stopped", 2_000)
        .await
        .unwrap();
    assert!(lease_next_trial(&mut conn, &id("worker-w"), 2_100, 10)
        .await
        .unwrap()
        .is_none());
    resume_experiment(&mut conn, &id("exp-e"), 2_500)
        .await
        .unwrap();
    let e = get_experiment(&mut conn, &id("exp-e"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((e.paused_ms, e.stopped_at_ms), (500, None));
    assert!(set_status_reason(&mut conn, &id("exp-e"), "searching")
        .await
        .unwrap());
    assert!(!set_status_reason(&mut conn, &id("exp-e"), "searching")
        .await
        .unwrap());

    // A lineage t0 <- t4 (inheriting), a probe and a transfer seed.
    let mut child = new_trial(
        "exp-e",
        "trial-t4",
        4,
        r#"{"epochs":3,"objective":{"elr":{"beta":1}}}"#,
    );
    child.parent_id = Some(id("trial-t0"));
    child.inherit_from = Some("ck0".into());
    child.seed_index = Some(0);
    child.prediction = Some((0.7, 0.1));
    insert_trial(&mut conn, &child, 3_000).await.unwrap();
    let mut probe = new_trial("exp-e", "trial-p0", -1, "{}");
    probe.kind = TrialKind::Probe;
    probe.inherit_from = Some("ck0".into());
    insert_trial(&mut conn, &probe, 3_000).await.unwrap();
    assert_eq!(
        list_trials(&mut conn, &id("exp-e")).await.unwrap()[0]
            .id
            .as_str(),
        "trial-p0"
    );
    assert_eq!(
        list_train_trials(&mut conn, &id("exp-e"))
            .await
            .unwrap()
            .len(),
        5
    );
    assert_eq!(list_probes(&mut conn, &id("exp-e")).await.unwrap().len(), 1);
    assert_eq!(
        queued_seed_indices(&mut conn, &id("exp-e")).await.unwrap(),
        vec![0]
    );
    assert_eq!(
        train_trials_below(&mut conn, &id("exp-e"), 2)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        list_trials_page(
            &mut conn,
            &id("exp-e"),
            Some(1),
            Some(TrialStatus::Queued),
            2
        )
        .await
        .unwrap()
        .len(),
        2
    );
    assert_eq!(
        list_trials_page(&mut conn, &id("exp-e"), None, None, 100)
            .await
            .unwrap()
            .len(),
        6
    );
    assert_eq!(
        probe_counts(&mut conn, &id("exp-e")).await.unwrap().queued,
        1
    );

    // Finish a few, in an order whose best-so-far curve has two improvements.
    insert_worker(&mut conn, &id("worker-w"), "worker-w", "cuda:0", 1, 3_000)
        .await
        .unwrap();
    for (trial, score, at) in [
        ("trial-t0", 0.5, 4_000),
        ("trial-t1", 0.4, 4_100),
        ("trial-t4", 0.9, 4_200),
    ] {
        sqlx::query("UPDATE trials SET status = 'running', worker_id = 'worker-w' WHERE id = $1")
            .bind(trial)
            .execute(&mut *conn)
            .await
            .unwrap();
        complete_trial(&mut conn, &id(trial), &result(score, 3), true, 0.02, at)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE trials SET status = 'completed', score = 0.3 WHERE id = 'trial-p0'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let history = fine_tune_history(&mut conn).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].0.id.as_str(), "trial-t4");
    let recent = recent_completed_for_predictor(&mut conn, &id("exp-e"), 10)
        .await
        .unwrap();
    assert_eq!(recent.len(), 3);
    assert!(recent[0].inherits);
    assert_eq!(recent[0].parent_score, Some(0.5));
    let (points, finished) = best_curve(&mut conn, &id("exp-e")).await.unwrap();
    assert_eq!(
        points
            .iter()
            .map(|p| p.trial_id.as_str())
            .collect::<Vec<_>>(),
        vec!["trial-t0", "trial-t4"]
    );
    assert_eq!(points[1].finished, 3);
    assert_eq!(finished, 3);
    assert_eq!(
        lineage(&mut conn, &id("trial-t4"))
            .await
            .unwrap()
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        vec!["trial-t0"]
    );
    assert_eq!(
        genealogy(&mut conn, &id("exp-e"), 1)
            .await
            .unwrap()
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        vec!["trial-t0", "trial-t4"]
    );
    assert_eq!(
        temperature_history(&mut conn, &id("exp-e"), 2)
            .await
            .unwrap()
            .len(),
        2
    );
    let best = best_distinct(&mut conn, &id("exp-e"), 5).await.unwrap();
    assert_eq!(
        best.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        vec!["trial-t4", "trial-t0"],
        "t1 shares t4's genome hash"
    );
    mark_final(&mut conn, &id("trial-t2")).await.unwrap();
    assert_eq!(
        final_trials(&mut conn, &id("exp-e")).await.unwrap()[0]
            .id
            .as_str(),
        "trial-t2"
    );
    begin_final_phase(&mut conn, &id("exp-e"), "trial budget reached")
        .await
        .unwrap();
    begin_final_phase(&mut conn, &id("exp-e"), "again")
        .await
        .unwrap();
    let e = get_experiment(&mut conn, &id("exp-e"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.search_ended.as_deref(), Some("trial budget reached"));
    set_best_trial(&mut conn, &id("exp-e"), &id("trial-t4"))
        .await
        .unwrap();

    // Dashboard pages.
    let filter = TrialFilter {
        objective: Some("elr".into()),
        ..TrialFilter::default()
    };
    let page = query_trials(
        &mut conn,
        &id("exp-e"),
        &filter,
        TrialSort::Seq,
        false,
        0,
        10,
    )
    .await
    .unwrap();
    assert_eq!((page.total, page.trials.len()), (1, 1));
    let plain = TrialFilter {
        objective: Some("plain".into()),
        min_score: Some(0.0),
        ..TrialFilter::default()
    };
    let page = query_trials(
        &mut conn,
        &id("exp-e"),
        &plain,
        TrialSort::Score,
        true,
        0,
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        page.trials
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        vec!["trial-t0", "trial-t1", "trial-p0"]
    );
    for descending in [false, true] {
        let page = query_trials(
            &mut conn,
            &id("exp-e"),
            &TrialFilter::default(),
            TrialSort::Score,
            descending,
            0,
            10,
        )
        .await
        .unwrap();
        assert_eq!(page.total, 6);
        assert!(
            page.trials.last().unwrap().score.is_none(),
            "unscored trials last"
        );
    }
    let filtered = TrialFilter {
        status: Some(TrialStatus::Queued),
        chain: Some(0),
        max_score: None,
        ..TrialFilter::default()
    };
    let page = query_trials(
        &mut conn,
        &id("exp-e"),
        &filtered,
        TrialSort::Params,
        true,
        0,
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        page.trials
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        vec!["trial-t2"]
    );

    // Chains.
    let chain = ChainRow {
        experiment_id: id("exp-e"),
        chain: 0,
        temperature: 0.5,
        current_trial_id: Some(id("trial-t0")),
        best_score: Some(0.5),
        since_improvement: 1,
        results: 2,
        accepted: 1,
        reheats: 0,
    };
    save_chain(&mut conn, &chain).await.unwrap();
    let mut changed = chain.clone();
    changed.temperature = 0.25;
    save_chain(&mut conn, &changed).await.unwrap();
    assert_eq!(
        get_chain(&mut conn, &id("exp-e"), 0).await.unwrap(),
        Some(changed)
    );
    assert_eq!(list_chains(&mut conn, &id("exp-e")).await.unwrap().len(), 1);

    // Workers.
    touch_worker(&mut conn, &id("worker-w"), 5_000)
        .await
        .unwrap();
    assert_eq!(connected(&mut conn, 4_000).await.unwrap(), (1, 1));
    assert_eq!(connected_slots(&mut conn, 4_000).await.unwrap(), 1);
    assert_eq!(workers(&mut conn, 10).await.unwrap()[0].last_seen_ms, 5_000);
    let tallies = status_tallies(&mut conn).await.unwrap();
    assert!(tallies
        .iter()
        .any(|t| t.status == TrialStatus::Completed && t.n == 4));
    end_trial(
        &mut conn,
        &id("trial-t3"),
        TrialStatus::Failed,
        "broken",
        6_000,
    )
    .await
    .unwrap();
    worker_left(&mut conn, &id("worker-w")).await.unwrap();
    assert!(!worker_is_active(&mut conn, &id("worker-w")).await.unwrap());
    finish_experiment(
        &mut conn,
        &id("exp-e"),
        ExperimentStatus::Completed,
        "done",
        7_000,
    )
    .await
    .unwrap();
    assert!(running_experiments(&mut conn).await.unwrap().is_empty());

    // The tallies the trigger kept agree with the rows.
    let (mismatches,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (
             SELECT experiment_id, kind, status, COUNT(*) AS n, SUM(epoch) AS epochs
               FROM trials GROUP BY experiment_id, kind, status) r
           FULL JOIN (SELECT * FROM trial_tallies WHERE n <> 0) k
             USING (experiment_id, kind, status)
          WHERE r.n IS DISTINCT FROM k.n OR r.epochs IS DISTINCT FROM k.epochs",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(mismatches, 0);
    drop(conn);
    db.finish().await;
}

#[tokio::test]
async fn a_missing_worker_is_not_found_and_a_duplicate_id_a_conflict() {
    let Some(db) = TestDb::new("errors").await else {
        return;
    };
    let mut conn = db.conn().await;
    let missing = prefetch_would_starve(&mut conn, &id("worker-nobody"), 0)
        .await
        .unwrap_err();
    assert!(matches!(missing, MasterError::NotFound(_)), "{missing:?}");
    insert_experiment(&mut conn, &id("exp-e"), "x", "{}", 1)
        .await
        .unwrap();
    let duplicate = insert_experiment(&mut conn, &id("exp-e"), "x", "{}", 1)
        .await
        .unwrap_err();
    match duplicate {
        MasterError::Store(e) => assert_eq!(e.kind, crate::store::StoreErrorKind::Conflict),
        other => panic!("{other:?}"),
    }
    drop(conn);
    db.finish().await;
}
