//! `master stop` and `master resume` (issue 15): a stopped experiment proposes and leases
//! nothing, its trials in flight finish (or, with `now`, are cancelled and told so), and a
//! resumed one carries on where it stopped, its stopped time not charged as wall time.

use super::*;
use crate::scheduler::CANCELLED_BY_STOP;

#[tokio::test]
async fn a_stopped_experiment_leases_nothing_and_lets_its_trials_in_flight_finish() {
    let h = Harness::long().await;
    let w = register(&h.sched, 2).await;
    let id = within(h.sched.submit(spec(10, ""))).await.unwrap();
    let held = lease(&h.sched, &w).await;
    assert!(counts(&h.sched, &id).await.queued >= 1);

    let outcome = within(h.sched.stop_experiment(id.as_str(), false))
        .await
        .unwrap();
    assert_eq!((outcome.finishing, outcome.cancelled_held), (1, 0));
    assert!(outcome.cancelled_queued >= 1, "{outcome:?}");
    assert_eq!(outcome.finishing_ids, std::slice::from_ref(&held.id));
    assert!(outcome.cancelled_held_ids.is_empty(), "{outcome:?}");
    assert_eq!(
        outcome.cancelled_queued_ids.len() as u64,
        outcome.cancelled_queued,
        "{outcome:?}"
    );
    for queued in &outcome.cancelled_queued_ids {
        let row = trial(&h.sched, queued).await;
        assert_eq!(
            (row.status.as_str(), row.error.as_str()),
            ("cancelled", "experiment stopped")
        );
    }
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.lifecycle().as_str(), "stopped");
    assert_eq!(v.counts.queued, 0);
    within(h.sched.tick()).await.unwrap();
    assert_eq!(counts(&h.sched, &id).await.queued, 0, "a tick refilled it");
    assert!(within(h.sched.acquire(w.as_str(), Duration::ZERO))
        .await
        .unwrap()
        .is_none());

    // The trial in flight trains on and its result counts.
    assert_eq!(
        within(
            h.sched
                .heartbeat(w.as_str(), held.id.as_str(), 1, progress(1))
        )
        .await
        .unwrap(),
        HeartbeatAnswer::Continue
    );
    assert_eq!(finish(&h.sched, &w, &held, 0.8).await.reason, "");
    let v = view(&h.sched, &id).await;
    assert_eq!(v.counts.completed, 1);
    assert_eq!(
        v.counts.queued, 0,
        "completing refilled a stopped experiment"
    );
    assert_eq!(v.row.best_trial_id.as_ref(), Some(&held.id));

    // Resumed: the queue fills and trials are leased again.
    within(h.sched.resume_experiment(id.as_str()))
        .await
        .unwrap();
    assert_eq!(
        view(&h.sched, &id).await.row.lifecycle().as_str(),
        "running"
    );
    let next = lease(&h.sched, &w).await;
    assert_eq!(next.experiment_id, id);
    assert_eq!(finish(&h.sched, &w, &next, 0.6).await.reason, "");
    assert_eq!(run_to_end(&h.sched, &w, &id, &[0.5]).await, 8);
    let v = view(&h.sched, &id).await;
    assert_eq!(v.counts.completed, 10, "{:?}", v.counts);
}

#[tokio::test]
async fn stop_now_cancels_the_trials_in_flight_and_tells_their_workers_why() {
    let metrics = Arc::new(crate::metrics::PromMetrics::default());
    let dir = tempfile::tempdir().unwrap();
    let sched = open_scheduler(dir.path(), config(LONG_LEASE, 3))
        .await
        .with_metrics(metrics.clone());
    let h = Harness {
        sched: Arc::new(sched),
        dir,
    };
    let w = register(&h.sched, 2).await;
    let id = within(h.sched.submit(spec(10, ""))).await.unwrap();
    let a = lease(&h.sched, &w).await;
    let b = lease(&h.sched, &w).await;
    within(h.sched.heartbeat(w.as_str(), a.id.as_str(), 1, progress(1)))
        .await
        .unwrap();
    let outcome = within(h.sched.stop_experiment(id.as_str(), true))
        .await
        .unwrap();
    assert_eq!((outcome.cancelled_held, outcome.finishing), (2, 0));
    // The outcome names the trials it cancelled.
    let mut cancelled = outcome.cancelled_held_ids.clone();
    cancelled.sort();
    let mut expected = vec![a.id.clone(), b.id.clone()];
    expected.sort();
    assert_eq!(cancelled, expected);
    assert!(outcome.finishing_ids.is_empty(), "{outcome:?}");
    assert_eq!(
        outcome.cancelled_queued_ids.len() as u64,
        outcome.cancelled_queued
    );
    // Their training time is recorded under status "cancelled".
    let text = metrics.render(&crate::metrics::StoreGauges::default(), 0);
    assert!(
        text.contains("explore_trial_duration_seconds_count{status=\"cancelled\"} 2"),
        "{text}"
    );
    for t in [&a, &b] {
        let row = trial(&h.sched, &t.id).await;
        assert_eq!(
            (row.status.as_str(), row.error.as_str()),
            ("cancelled", CANCELLED_BY_STOP)
        );
    }
    assert_eq!(
        within(h.sched.heartbeat(w.as_str(), a.id.as_str(), 1, progress(1)))
            .await
            .unwrap(),
        HeartbeatAnswer::Stop(CANCELLED_BY_STOP.to_string())
    );
    // A result that arrives anyway is history, never counted.
    let answer = finish(&h.sched, &w, &b, 0.9).await;
    assert!(!answer.accepted, "{answer:?}");
    let v = view(&h.sched, &id).await;
    assert_eq!(v.counts.completed, 0);
    assert_eq!(v.row.best_trial_id, None);
    assert_eq!(late_results(&h.sched).await.len(), 1);
}

#[tokio::test]
async fn only_a_running_experiment_stops_and_only_a_stopped_one_resumes() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(1, ""))).await.unwrap();
    assert_code(
        within(h.sched.resume_experiment(id.as_str())).await,
        tonic::Code::FailedPrecondition,
    );
    run_to_end(&h.sched, &w, &id, &[0.5]).await;
    assert_code(
        within(h.sched.stop_experiment(id.as_str(), false)).await,
        tonic::Code::FailedPrecondition,
    );
    assert_code(
        within(
            h.sched
                .stop_experiment("exp-00000000000000000000000000000000", false),
        )
        .await,
        tonic::Code::NotFound,
    );
}

#[tokio::test]
async fn time_spent_stopped_is_not_charged_to_the_wall_time_budget() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(100, "max_wall_seconds = 2\n")))
        .await
        .unwrap();
    within(h.sched.stop_experiment(id.as_str(), false))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    within(h.sched.resume_experiment(id.as_str()))
        .await
        .unwrap();
    within(h.sched.tick()).await.unwrap();
    let v = view(&h.sched, &id).await;
    assert_eq!(
        v.row.lifecycle().as_str(),
        "running",
        "{}",
        v.row.status_reason
    );
    assert!(v.row.paused_ms >= 2000, "{}", v.row.paused_ms);
    assert!(lease(&h.sched, &w).await.experiment_id == id);
}

#[tokio::test]
async fn a_stopped_experiment_stays_stopped_across_a_master_restart() {
    let h = Harness::long().await;
    let id = within(h.sched.submit(spec(10, ""))).await.unwrap();
    within(h.sched.stop_experiment(id.as_str(), false))
        .await
        .unwrap();
    let restarted = open_scheduler(h.dir.path(), config(LONG_LEASE, 3)).await;
    within(restarted.resume()).await.unwrap();
    within(restarted.tick()).await.unwrap();
    let w = register(&restarted, 1).await;
    assert!(within(restarted.acquire(w.as_str(), Duration::ZERO))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        view(&restarted, &id).await.row.lifecycle().as_str(),
        "stopped"
    );
}

#[tokio::test]
async fn a_trial_whose_lease_expires_while_stopped_waits_for_the_resume() {
    let h = Harness::new(config(SHORT_LEASE, 3)).await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(10, ""))).await.unwrap();
    let held = lease(&h.sched, &w).await;
    within(h.sched.stop_experiment(id.as_str(), false))
        .await
        .unwrap();
    tokio::time::sleep(SHORT_LEASE * 2).await;
    within(h.sched.tick()).await.unwrap();
    let requeued = trial(&h.sched, &held.id).await;
    assert_eq!((requeued.status.as_str(), requeued.attempt), ("queued", 2));
    assert!(
        within(h.sched.acquire(w.as_str(), Duration::ZERO))
            .await
            .unwrap()
            .is_none(),
        "a stopped experiment's requeued trial was leased"
    );
    within(h.sched.resume_experiment(id.as_str()))
        .await
        .unwrap();
    let again = lease(&h.sched, &w).await;
    assert_eq!((again.id.as_str(), again.attempt), (held.id.as_str(), 2));
}
