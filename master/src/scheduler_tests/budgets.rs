//! Budgets and ending: trial and wall-time budgets, failures, trials of ended experiments.

use super::*;

#[tokio::test]
async fn experiment_completes_exactly_at_the_trial_budget() {
    let h = Harness::long().await;
    let a = register(&h.sched, 2).await;
    let exponential = "[annealing]\ncooling = \"exponential\"\ncooling_rate = 0.9\n";
    let id = within(h.sched.submit(spec(4, exponential))).await.unwrap();
    let mut done = 0;
    while done < 4 {
        let v = view(&h.sched, &id).await;
        assert_eq!(
            v.row.status,
            ExperimentStatus::Running,
            "ended after {done} trials"
        );
        assert!(v.counts.budgeted() <= 4, "{:?}", v.counts);
        let x = lease(&h.sched, &a).await;
        let y = within(h.sched.acquire(a.as_str(), Duration::ZERO))
            .await
            .unwrap();
        finish(&h.sched, &a, &x, 0.5 + done as f64 / 100.0).await;
        done += 1;
        if let Some(y) = y {
            finish(&h.sched, &a, &y, 0.4).await;
            done += 1;
        }
    }
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Completed);
    assert_eq!(v.row.status_reason, "trial budget reached");
    assert!(v.row.finished_at_ms.is_some());
    assert_eq!(
        v.counts,
        TrialCounts {
            completed: 4,
            ..TrialCounts::default()
        }
    );
    // Two chains (one per connected slot), two results each.
    let cooled = v.spec.annealing.initial_temperature * 0.9f64.powf(2.0);
    assert!((v.temperature - cooled).abs() < 1e-12, "{}", v.temperature);
    assert!(
        within(h.sched.acquire(a.as_str(), Duration::from_millis(50)))
            .await
            .unwrap()
            .is_none()
    );
    within(h.sched.tick()).await.unwrap();
    assert_eq!(
        trials(&h.sched, &id).await.len(),
        4,
        "nothing proposed after the end"
    );
}

#[tokio::test]
async fn wall_time_budget_stops_proposals_and_ends_when_nothing_is_in_flight() {
    let h = Harness::long().await;
    let w = register(&h.sched, 2).await;
    let id = within(h.sched.submit(spec(100, "max_wall_seconds = 1\n")))
        .await
        .unwrap();
    let held = lease(&h.sched, &w).await;
    assert_eq!(counts(&h.sched, &id).await.queued, 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    within(h.sched.tick()).await.unwrap();
    let v = view(&h.sched, &id).await;
    assert_eq!(
        v.row.status,
        ExperimentStatus::Running,
        "a trial is still in flight"
    );
    assert_eq!(
        (v.counts.queued, v.counts.cancelled, v.counts.leased),
        (0, 1, 1)
    );
    let cancelled = trials(&h.sched, &id)
        .await
        .into_iter()
        .find(|t| t.status == TrialStatus::Cancelled)
        .unwrap();
    assert_eq!(cancelled.error, "wall-time budget reached");
    assert!(within(h.sched.acquire(w.as_str(), Duration::ZERO))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        within(
            h.sched
                .heartbeat(w.as_str(), held.id.as_str(), 1, progress(1))
        )
        .await
        .unwrap(),
        HeartbeatAnswer::Continue,
        "running trials may finish"
    );

    assert_eq!(finish(&h.sched, &w, &held, 0.7).await.reason, "");
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Completed);
    assert_eq!(v.row.status_reason, "wall-time budget reached");
    assert_eq!((v.counts.completed, v.counts.queued), (1, 0));
    assert_eq!(v.best.unwrap().id, held.id);
}

#[tokio::test]
async fn failed_trial_is_replaced_and_does_not_use_the_budget() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(2, ""))).await.unwrap();
    let t = lease(&h.sched, &w).await;
    within(h.sched.fail(w.as_str(), t.id.as_str(), 1, "out of memory"))
        .await
        .unwrap();
    let failed = trial(&h.sched, &t.id).await;
    assert_eq!(
        (failed.status.as_str(), failed.error.as_str()),
        ("failed", "out of memory")
    );
    assert!(failed.finished_at_ms.is_some());
    let c = counts(&h.sched, &id).await;
    assert_eq!((c.failed, c.queued, c.budgeted()), (1, 1, 1));
    // A second report of the same failure, or one from an old attempt, changes nothing.
    within(h.sched.fail(w.as_str(), t.id.as_str(), 1, "again"))
        .await
        .unwrap();
    within(h.sched.fail(w.as_str(), t.id.as_str(), 7, "other"))
        .await
        .unwrap();
    assert_eq!(trial(&h.sched, &t.id).await.error, "out of memory");
    assert_eq!(counts(&h.sched, &id).await.failed, 1);

    assert_eq!(run_to_end(&h.sched, &w, &id, &[0.5]).await, 2);
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Completed);
    assert_eq!((v.counts.completed, v.counts.failed), (2, 1));
}

#[tokio::test]
async fn fail_reason_is_truncated() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    within(h.sched.submit(spec(2, ""))).await.unwrap();
    let t = lease(&h.sched, &w).await;
    within(
        h.sched
            .fail(w.as_str(), t.id.as_str(), 1, &"é".repeat(5000)),
    )
    .await
    .unwrap();
    assert_eq!(trial(&h.sched, &t.id).await.error.chars().count(), 2000);
}

#[tokio::test]
async fn experiment_fails_after_max_failures() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(5, "max_failures = 2\n")))
        .await
        .unwrap();
    let first = lease(&h.sched, &w).await;
    within(h.sched.fail(w.as_str(), first.id.as_str(), 1, "nan loss"))
        .await
        .unwrap();
    assert_eq!(
        view(&h.sched, &id).await.row.status,
        ExperimentStatus::Running
    );
    let second = lease(&h.sched, &w).await;
    within(h.sched.fail(w.as_str(), second.id.as_str(), 1, "nan loss"))
        .await
        .unwrap();
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Failed);
    assert!(
        v.row.status_reason.contains("2 trials failed"),
        "{}",
        v.row.status_reason
    );
    assert_eq!((v.counts.failed, v.counts.queued), (2, 0));
    assert!(
        within(h.sched.acquire(w.as_str(), Duration::from_millis(50)))
            .await
            .unwrap()
            .is_none()
    );
}

/// Leases the next trial and reports it failed with `error`.
async fn lease_and_fail(h: &Harness, w: &WorkerId, error: &str) {
    let t = lease(&h.sched, w).await;
    within(h.sched.fail(w.as_str(), t.id.as_str(), 1, error))
        .await
        .unwrap();
}

#[tokio::test]
async fn without_a_failure_limit_the_first_five_failures_end_an_experiment_that_trained_nothing() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(100, ""))).await.unwrap();
    lease_and_fail(&h, &w, "input shape [1, 28, 28] does not fit the seed").await;
    for _ in 1..4 {
        lease_and_fail(&h, &w, "another error").await;
    }
    assert_eq!(
        view(&h.sched, &id).await.row.status,
        ExperimentStatus::Running,
        "four failures do not end it"
    );
    lease_and_fail(&h, &w, "another error").await;
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Failed);
    assert!(
        v.row.status_reason.starts_with("the first 5 trials failed")
            && v.row
                .status_reason
                .ends_with("first error: input shape [1, 28, 28] does not fit the seed"),
        "{}",
        v.row.status_reason
    );
    assert_eq!((v.counts.failed, v.counts.queued), (5, 0));
}

#[tokio::test]
async fn without_a_failure_limit_failures_after_a_result_do_not_end_the_experiment() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(100, ""))).await.unwrap();
    let t = lease(&h.sched, &w).await;
    finish(&h.sched, &w, &t, 0.5).await;
    for _ in 0..8 {
        lease_and_fail(&h, &w, "nan loss").await;
    }
    let v = view(&h.sched, &id).await;
    assert_eq!(
        v.row.status,
        ExperimentStatus::Running,
        "{}",
        v.row.status_reason
    );
    assert_eq!((v.counts.completed, v.counts.failed), (1, 8));
}

#[tokio::test]
async fn running_trials_of_a_failed_experiment_are_told_to_stop() {
    let h = Harness::long().await;
    let w = register(&h.sched, 2).await;
    let id = within(h.sched.submit(spec(5, "max_failures = 1\n")))
        .await
        .unwrap();
    let a = lease(&h.sched, &w).await;
    let b = lease(&h.sched, &w).await;
    within(h.sched.fail(w.as_str(), a.id.as_str(), 1, "boom"))
        .await
        .unwrap();
    assert_eq!(
        view(&h.sched, &id).await.row.status,
        ExperimentStatus::Failed
    );
    let answer = within(h.sched.heartbeat(w.as_str(), b.id.as_str(), 1, progress(1)))
        .await
        .unwrap();
    assert!(
        matches!(answer, HeartbeatAnswer::Stop(ref r) if r.contains("failed")),
        "{answer:?}"
    );
}

// Regression: a held trial of an experiment that already ended went back to the queue when its
// lease expired (or its worker left) and stayed there forever, as a queued trial of a finished
// experiment that nothing can ever lease.
#[tokio::test]
async fn held_trials_of_an_ended_experiment_are_cancelled_not_requeued() {
    let h = Harness::new(config(SHORT_LEASE, 3)).await;
    let w = register(&h.sched, 3).await;
    let id = within(h.sched.submit(spec(5, "max_failures = 1\n")))
        .await
        .unwrap();
    let a = lease(&h.sched, &w).await;
    let b = lease(&h.sched, &w).await;
    let c = lease(&h.sched, &w).await;
    within(h.sched.fail(w.as_str(), a.id.as_str(), 1, "boom"))
        .await
        .unwrap();
    assert_eq!(
        view(&h.sched, &id).await.row.status,
        ExperimentStatus::Failed
    );
    // `b`'s worker stops without reporting (as told by the heartbeat); its lease runs out.
    let keep = within(h.sched.heartbeat(w.as_str(), c.id.as_str(), 1, progress(1)))
        .await
        .unwrap();
    assert!(matches!(keep, HeartbeatAnswer::Stop(_)));
    tokio::time::sleep(SHORT_LEASE * 2).await;
    within(h.sched.tick()).await.unwrap();
    let v = view(&h.sched, &id).await;
    assert_eq!(v.counts.queued, 0, "{:?}", v.counts);
    assert_eq!(v.counts.in_flight(), 0, "{:?}", v.counts);
    for t in [&b, &c] {
        let t = trial(&h.sched, &t.id).await;
        assert_eq!(t.status, TrialStatus::Cancelled, "{}: {}", t.id, t.error);
    }

    // The same through a worker that leaves while holding a trial of an ended experiment.
    let h = Harness::long().await;
    let w = register(&h.sched, 2).await;
    let id = within(h.sched.submit(spec(5, "max_failures = 1\n")))
        .await
        .unwrap();
    let a = lease(&h.sched, &w).await;
    let b = lease(&h.sched, &w).await;
    within(h.sched.fail(w.as_str(), a.id.as_str(), 1, "boom"))
        .await
        .unwrap();
    within(h.sched.deregister(w.as_str())).await.unwrap();
    assert_eq!(trial(&h.sched, &b.id).await.status, TrialStatus::Cancelled);
    assert_eq!(counts(&h.sched, &id).await.queued, 0);
}

#[tokio::test]
async fn after_the_wall_time_a_prefetched_trial_is_cancelled_but_a_started_one_runs_on() {
    let h = Harness::long().await;
    let w = register(&h.sched, 2).await;
    let id = within(h.sched.submit(spec(100, "max_wall_seconds = 1\n")))
        .await
        .unwrap();
    let training = lease(&h.sched, &w).await;
    let prefetched = lease(&h.sched, &w).await;
    let started = Progress {
        started: true,
        ..progress(0)
    };
    assert_eq!(
        within(
            h.sched
                .heartbeat(w.as_str(), training.id.as_str(), 1, started.clone())
        )
        .await
        .unwrap(),
        HeartbeatAnswer::Continue
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Past the budget: the waiting trial is dropped, the training one may finish.
    let answer = within(
        h.sched
            .heartbeat(w.as_str(), prefetched.id.as_str(), 1, progress(0)),
    )
    .await
    .unwrap();
    assert!(matches!(answer, HeartbeatAnswer::Stop(_)), "{answer:?}");
    let t = trial(&h.sched, &prefetched.id).await;
    assert_eq!(t.status, TrialStatus::Cancelled);
    assert_eq!(t.error, "wall-time budget reached before it started");
    assert_eq!(
        within(
            h.sched
                .heartbeat(w.as_str(), training.id.as_str(), 1, started)
        )
        .await
        .unwrap(),
        HeartbeatAnswer::Continue
    );
    assert!(finish(&h.sched, &w, &training, 0.8).await.accepted);
    within(h.sched.tick()).await.unwrap();
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Completed);
    assert_eq!(v.row.status_reason, "wall-time budget reached");
    assert_eq!(v.counts.completed, 1);
}
