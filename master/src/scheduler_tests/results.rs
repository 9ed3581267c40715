//! Completion and results: best score, Metropolis decisions, duplicate, late and invalid results.

use super::*;

#[tokio::test]
async fn best_is_always_the_highest_completed_score() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(7, ""))).await.unwrap();
    let scores = [0.50, 0.70, 0.65, 0.70, 0.90, 0.10, 0.89];
    let mut best: Option<(f64, TrialId)> = None;
    for score in scores {
        let t = lease(&h.sched, &w).await;
        finish(&h.sched, &w, &t, score).await;
        if best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, t.id.clone()));
        }
        let v = view(&h.sched, &id).await;
        let (best_score, best_id) = best.clone().unwrap();
        assert_eq!(v.row.best_trial_id.as_ref(), Some(&best_id));
        assert_eq!(v.best.as_ref().and_then(|b| b.score), Some(best_score));
        assert_eq!(max_completed_score(&h.sched, &id).await, Some(best_score));
    }
    assert_eq!(
        view(&h.sched, &id).await.row.status,
        ExperimentStatus::Completed
    );
}

#[tokio::test]
async fn metropolis_decides_children_and_rejected_children_are_never_bases() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(6, ""))).await.unwrap();
    let seed = lease(&h.sched, &w).await;
    finish(&h.sched, &w, &seed, 0.9).await;
    // Far worse than its parent at T = 0.02 · 0.9: acceptance probability e^-40.
    let worse = lease(&h.sched, &w).await;
    assert_eq!(worse.parent_id.as_ref(), Some(&seed.id));
    finish(&h.sched, &w, &worse, 0.1).await;
    let worse = trial(&h.sched, &worse.id).await;
    assert_eq!(worse.accepted, Some(false));
    let t = worse.temperature.unwrap();
    assert!(t > 0.0 && t < 0.02, "temperature {t}");
    // Better than its parent: always accepted.
    let better = lease(&h.sched, &w).await;
    assert_eq!(
        better.parent_id.as_ref(),
        Some(&seed.id),
        "the rejected child is no base"
    );
    finish(&h.sched, &w, &better, 0.95).await;
    assert_eq!(trial(&h.sched, &better.id).await.accepted, Some(true));
    run_to_end(&h.sched, &w, &id, &[0.05]).await;
    for t in trials(&h.sched, &id).await {
        assert_ne!(t.parent_id.as_ref(), Some(&worse.id));
    }
}

#[tokio::test]
async fn completing_the_same_attempt_twice_counts_once() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(3, ""))).await.unwrap();
    let t = lease(&h.sched, &w).await;
    assert_eq!(finish(&h.sched, &w, &t, 0.5).await.reason, "");
    let before = trials(&h.sched, &id).await;
    let again = finish(&h.sched, &w, &t, 0.99).await;
    assert_eq!(
        again,
        CompleteAnswer {
            accepted: true,
            reason: "already recorded".into()
        }
    );
    let v = view(&h.sched, &id).await;
    assert_eq!(v.counts.completed, 1);
    assert_eq!(
        trial(&h.sched, &t.id).await.score,
        Some(0.5),
        "the first result stands"
    );
    assert_eq!(v.best.unwrap().score, Some(0.5));
    assert_eq!(
        trials(&h.sched, &id).await.len(),
        before.len(),
        "no extra proposal"
    );
    assert!(late_results(&h.sched).await.is_empty());
}

#[tokio::test]
async fn result_of_a_superseded_attempt_is_kept_as_history_only() {
    let h = Harness::new(config(SHORT_LEASE, 3)).await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(3, ""))).await.unwrap();
    let t = lease(&h.sched, &w).await;
    tokio::time::sleep(SHORT_LEASE * 2).await;
    within(h.sched.tick()).await.unwrap();
    let requeued = trial(&h.sched, &t.id).await;
    assert_eq!((requeued.status.as_str(), requeued.attempt), ("queued", 2));
    assert_eq!(requeued.worker_id, None);
    assert!(
        requeued.error.contains("lease of attempt 1 expired"),
        "{}",
        requeued.error
    );

    let answer = within(h.sched.heartbeat(w.as_str(), t.id.as_str(), 1, progress(1)))
        .await
        .unwrap();
    assert!(
        matches!(answer, HeartbeatAnswer::LeaseLost(_)),
        "{answer:?}"
    );
    let answer = finish(&h.sched, &w, &t, 0.8).await;
    assert!(!answer.accepted);
    assert!(answer.reason.contains("not current"), "{}", answer.reason);
    assert_eq!(
        late_results(&h.sched).await,
        vec![(t.id.to_string(), 1, 0.8)]
    );
    let v = view(&h.sched, &id).await;
    assert_eq!(v.counts.completed, 0);
    assert!(v.row.best_trial_id.is_none());
    assert_eq!(trial(&h.sched, &t.id).await.status, TrialStatus::Queued);

    // The same worker may train the new attempt; the old attempt stays history.
    let again = lease(&h.sched, &w).await;
    assert_eq!((again.id.as_str(), again.attempt), (t.id.as_str(), 2));
    assert!(!finish(&h.sched, &w, &t, 0.3).await.accepted);
    assert_eq!(finish(&h.sched, &w, &again, 0.6).await.reason, "");
    let v = view(&h.sched, &id).await;
    assert_eq!(v.counts.completed, 1);
    assert_eq!(v.best.unwrap().score, Some(0.6));
    assert_eq!(late_results(&h.sched).await.len(), 2);
}

#[tokio::test]
async fn invalid_scores_and_metrics_are_refused_and_change_nothing() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(3, ""))).await.unwrap();
    let t = lease(&h.sched, &w).await;
    for score in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.01,
        1.0001,
        2.0,
    ] {
        assert_code(
            within(
                h.sched
                    .complete(w.as_str(), t.id.as_str(), 1, result(score)),
            )
            .await,
            tonic::Code::InvalidArgument,
        );
    }
    let mut bad_metric = result(0.5);
    bad_metric.metrics.insert("loss".into(), f64::NAN);
    assert_code(
        within(h.sched.complete(w.as_str(), t.id.as_str(), 1, bad_metric)).await,
        tonic::Code::InvalidArgument,
    );
    let mut empty_name = result(0.5);
    empty_name.metrics.insert(String::new(), 1.0);
    assert_code(
        within(h.sched.complete(w.as_str(), t.id.as_str(), 1, empty_name)).await,
        tonic::Code::InvalidArgument,
    );
    let mut many = result(0.5);
    many.metrics = (0..65).map(|i| (format!("m{i}"), 0.0)).collect();
    assert_code(
        within(h.sched.complete(w.as_str(), t.id.as_str(), 1, many)).await,
        tonic::Code::InvalidArgument,
    );

    let still = trial(&h.sched, &t.id).await;
    assert_eq!((still.status.as_str(), still.score), ("leased", None));
    assert_eq!(counts(&h.sched, &id).await.completed, 0);
    assert!(late_results(&h.sched).await.is_empty());
    // The boundaries are valid accuracies.
    assert_eq!(finish(&h.sched, &w, &t, 1.0).await.reason, "");
    let t = lease(&h.sched, &w).await;
    assert_eq!(finish(&h.sched, &w, &t, 0.0).await.reason, "");
}

#[tokio::test]
async fn checkpoint_must_be_uploaded_before_completion() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    within(h.sched.submit(spec(3, ""))).await.unwrap();
    let t = lease(&h.sched, &w).await;
    let mut missing = result(0.5);
    missing.checkpoint_sha256 = Some("0".repeat(64));
    assert_code(
        within(h.sched.complete(w.as_str(), t.id.as_str(), 1, missing)).await,
        tonic::Code::FailedPrecondition,
    );
    let mut malformed = result(0.5);
    malformed.checkpoint_sha256 = Some("../../etc/passwd".into());
    assert_code(
        within(h.sched.complete(w.as_str(), t.id.as_str(), 1, malformed)).await,
        tonic::Code::FailedPrecondition,
    );
    assert_eq!(trial(&h.sched, &t.id).await.status, TrialStatus::Leased);

    let mut upload = within(h.sched.artifacts().begin_upload()).await.unwrap();
    within(upload.write(b"weights")).await.unwrap();
    let (sha, _) = within(upload.finish()).await.unwrap();
    let mut with_checkpoint = result(0.5);
    with_checkpoint.checkpoint_sha256 = Some(sha.clone());
    within(
        h.sched
            .complete(w.as_str(), t.id.as_str(), 1, with_checkpoint),
    )
    .await
    .unwrap();
    assert_eq!(trial(&h.sched, &t.id).await.checkpoint_sha256, Some(sha));
}
