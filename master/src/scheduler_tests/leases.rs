//! Workers and leases: life cycle, long polls, expiry and requeueing, workers leaving, draining.

use super::*;

#[tokio::test]
async fn register_validates_its_arguments() {
    let h = Harness::long().await;
    assert_code(
        within(h.sched.register("w", "cpu", 0)).await,
        tonic::Code::InvalidArgument,
    );
    assert_code(
        within(h.sched.register("w", "cpu", 65)).await,
        tonic::Code::InvalidArgument,
    );
    assert_code(
        within(h.sched.register(&"n".repeat(201), "cpu", 1)).await,
        tonic::Code::InvalidArgument,
    );
    let a = register(&h.sched, 64).await;
    let b = register(&h.sched, 1).await;
    assert_ne!(a, b);
}

#[tokio::test]
async fn lease_heartbeat_complete_life_cycle() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(3, ""))).await.unwrap();
    let before = crate::scheduler::now_ms();
    let t = lease(&h.sched, &w).await;
    assert_eq!(t.status, TrialStatus::Leased);
    assert_eq!(t.worker_id.as_ref(), Some(&w));
    assert_eq!(t.attempt, 1);
    let deadline = t.lease_deadline_ms.unwrap();
    assert!(
        deadline >= before + LONG_LEASE.as_millis() as i64,
        "{deadline} vs {before}"
    );
    assert!(t.started_at_ms.unwrap() >= before);
    assert_eq!(counts(&h.sched, &id).await.leased, 1);
    // Not expired: a tick changes nothing.
    within(h.sched.tick()).await.unwrap();
    let still = trial(&h.sched, &t.id).await;
    assert_eq!((still.status.as_str(), still.attempt), ("leased", 1));

    let answer = within(h.sched.heartbeat(w.as_str(), t.id.as_str(), 1, progress(0)))
        .await
        .unwrap();
    assert_eq!(answer, HeartbeatAnswer::Continue);
    assert_eq!(trial(&h.sched, &t.id).await.status, TrialStatus::Leased);
    let answer = within(h.sched.heartbeat(w.as_str(), t.id.as_str(), 1, progress(1)))
        .await
        .unwrap();
    assert_eq!(answer, HeartbeatAnswer::Continue);
    let running = trial(&h.sched, &t.id).await;
    assert_eq!((running.status.as_str(), running.epoch), ("running", 1));
    assert_eq!(counts(&h.sched, &id).await.running, 1);

    let answer = finish(&h.sched, &w, &t, 0.61).await;
    assert_eq!(
        answer,
        CompleteAnswer {
            accepted: true,
            reason: String::new()
        }
    );
    let done = trial(&h.sched, &t.id).await;
    assert_eq!(done.status, TrialStatus::Completed);
    assert_eq!(done.score, Some(0.61));
    assert_eq!(done.accepted, Some(true), "seeds are always accepted");
    assert_eq!(done.epoch, 2);
    assert_eq!(done.metrics().get("train_loss"), Some(&0.3));
    assert!(done.finished_at_ms.is_some());
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.best_trial_id.as_ref(), Some(&t.id));
    assert_eq!(v.best.unwrap().score, Some(0.61));
    assert_eq!(
        (v.counts.completed, v.counts.queued),
        (1, 1),
        "a replacement is queued"
    );

    // The trial is no longer held: a late heartbeat is told so.
    let answer = within(h.sched.heartbeat(w.as_str(), t.id.as_str(), 1, progress(3)))
        .await
        .unwrap();
    assert!(
        matches!(answer, HeartbeatAnswer::LeaseLost(_)),
        "{answer:?}"
    );
}

#[tokio::test]
async fn acquire_returns_none_after_the_wait_when_nothing_is_queued() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let start = Instant::now();
    let got = within(h.sched.acquire(w.as_str(), Duration::from_millis(200)))
        .await
        .unwrap();
    let waited = start.elapsed();
    assert!(got.is_none());
    assert!(
        waited >= Duration::from_millis(190),
        "returned after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "returned after {waited:?}");
    // A zero wait answers at once.
    assert!(within(h.sched.acquire(w.as_str(), Duration::ZERO))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn acquire_wakes_up_as_soon_as_a_trial_is_queued() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let sched = h.sched.clone();
    let worker = w.clone();
    let waiter = tokio::spawn(async move {
        let start = Instant::now();
        let got = sched
            .acquire(worker.as_str(), Duration::from_secs(20))
            .await;
        (got, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let id = within(h.sched.submit(spec(2, ""))).await.unwrap();
    let (got, waited) = within(waiter).await.unwrap();
    let t = got.unwrap().expect("woken with a trial");
    assert_eq!(t.experiment_id, id);
    assert!(waited < Duration::from_secs(10), "woke after {waited:?}");
}

#[tokio::test]
async fn acquire_wakes_up_when_a_failure_queues_a_replacement() {
    let h = Harness::long().await;
    let a = register(&h.sched, 1).await;
    within(h.sched.submit(spec(1, "max_failures = 3\n")))
        .await
        .unwrap();
    let seed = lease(&h.sched, &a).await;
    // The whole budget is leased: `b` waits until the seed's failure frees it.
    let b = register(&h.sched, 1).await;
    let sched = h.sched.clone();
    let worker = b.clone();
    let waiter = tokio::spawn(async move {
        let start = Instant::now();
        let got = sched
            .acquire(worker.as_str(), Duration::from_secs(20))
            .await;
        (got, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "nothing to lease yet");
    within(h.sched.fail(a.as_str(), seed.id.as_str(), 1, "cuda error"))
        .await
        .unwrap();
    let (got, waited) = within(waiter).await.unwrap();
    let got = got.unwrap().expect("woken with the replacement");
    assert_ne!(got.id, seed.id);
    assert_eq!(got.seq, 1);
    assert!(waited < Duration::from_secs(10), "woke after {waited:?}");
}

#[tokio::test]
async fn calls_from_unknown_or_malformed_workers_are_refused() {
    let h = Harness::long().await;
    within(h.sched.submit(spec(2, ""))).await.unwrap();
    let ghost = WorkerId::generate();
    assert_code(
        within(h.sched.acquire(ghost.as_str(), Duration::ZERO)).await,
        tonic::Code::NotFound,
    );
    assert_code(
        within(h.sched.acquire("bogus", Duration::ZERO)).await,
        tonic::Code::InvalidArgument,
    );
    assert_code(
        within(h.sched.deregister(ghost.as_str())).await,
        tonic::Code::NotFound,
    );
    let w = register(&h.sched, 1).await;
    let t = lease(&h.sched, &w).await;
    assert_code(
        within(
            h.sched
                .heartbeat(ghost.as_str(), t.id.as_str(), 1, progress(0)),
        )
        .await,
        tonic::Code::NotFound,
    );
    assert_code(
        within(
            h.sched
                .complete(ghost.as_str(), t.id.as_str(), 1, result(0.5)),
        )
        .await,
        tonic::Code::NotFound,
    );
    assert_code(
        within(h.sched.fail(ghost.as_str(), t.id.as_str(), 1, "x")).await,
        tonic::Code::NotFound,
    );
    assert_eq!(
        trial(&h.sched, &t.id).await.status,
        TrialStatus::Leased,
        "nothing changed"
    );
}

#[tokio::test]
async fn calls_naming_unknown_or_malformed_trials_are_refused() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(2, ""))).await.unwrap();
    let unknown = explore_common::TrialId::generate();
    let ws = w.as_str();
    assert_code(
        within(h.sched.complete(ws, unknown.as_str(), 1, result(0.5))).await,
        tonic::Code::NotFound,
    );
    assert_code(
        within(h.sched.heartbeat(ws, unknown.as_str(), 1, progress(0))).await,
        tonic::Code::NotFound,
    );
    assert_code(
        within(h.sched.fail(ws, unknown.as_str(), 1, "x")).await,
        tonic::Code::NotFound,
    );
    for bad in ["", "bogus", "exp-0123456789abcdef", "trial-a b", "trial-"] {
        assert_code(
            within(h.sched.complete(ws, bad, 1, result(0.5))).await,
            tonic::Code::InvalidArgument,
        );
        assert_code(
            within(h.sched.heartbeat(ws, bad, 1, progress(0))).await,
            tonic::Code::InvalidArgument,
        );
        assert_code(
            within(h.sched.fail(ws, bad, 1, "x")).await,
            tonic::Code::InvalidArgument,
        );
    }
    assert_eq!(
        counts(&h.sched, &id).await,
        TrialCounts {
            queued: 1,
            ..TrialCounts::default()
        }
    );
    assert!(late_results(&h.sched).await.is_empty());
}

// ---- lease expiry and workers leaving ----------------------------------------------------------

#[tokio::test]
async fn expired_leases_are_requeued_up_to_max_attempts_then_failed() {
    let h = Harness::new(config(SHORT_LEASE, 2)).await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(3, ""))).await.unwrap();
    let first = lease(&h.sched, &w).await;
    tokio::time::sleep(SHORT_LEASE * 2).await;
    within(h.sched.tick()).await.unwrap();
    assert_eq!(trial(&h.sched, &first.id).await.attempt, 2);

    let second = lease(&h.sched, &w).await;
    assert_eq!((second.id.as_str(), second.attempt), (first.id.as_str(), 2));
    tokio::time::sleep(SHORT_LEASE * 2).await;
    within(h.sched.tick()).await.unwrap();
    let failed = trial(&h.sched, &first.id).await;
    assert_eq!(failed.status, TrialStatus::Failed);
    assert_eq!(failed.error, "lease expired 2 times");
    let c = counts(&h.sched, &id).await;
    assert_eq!((c.failed, c.queued), (1, 1), "a replacement is proposed");
    let old = within(
        h.sched
            .heartbeat(w.as_str(), first.id.as_str(), 2, progress(1)),
    )
    .await
    .unwrap();
    assert!(matches!(old, HeartbeatAnswer::LeaseLost(_)), "{old:?}");
    // A result for the failed trial is history only.
    assert!(!finish(&h.sched, &w, &second, 0.9).await.accepted);
    assert_eq!(counts(&h.sched, &id).await.completed, 0);
}

#[tokio::test]
async fn heartbeats_keep_a_lease_alive() {
    // Eight heartbeats 150 ms apart outlast a 600 ms lease several times over.
    let h = Harness::new(config(Duration::from_millis(600), 3)).await;
    let w = register(&h.sched, 1).await;
    within(h.sched.submit(spec(3, ""))).await.unwrap();
    let t = lease(&h.sched, &w).await;
    for epoch in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let answer = within(
            h.sched
                .heartbeat(w.as_str(), t.id.as_str(), 1, progress(epoch)),
        )
        .await
        .unwrap();
        assert_eq!(answer, HeartbeatAnswer::Continue);
        within(h.sched.tick()).await.unwrap();
    }
    let held = trial(&h.sched, &t.id).await;
    // Reports past the trial's planned epochs (3) are clamped: they cannot overdraw a budget.
    assert_eq!(
        (held.status.as_str(), held.attempt, held.epoch),
        ("running", 1, 3)
    );
}

#[tokio::test]
async fn deregister_puts_held_trials_back_in_the_queue() {
    let h = Harness::long().await;
    let leaving = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(3, ""))).await.unwrap();
    let t = lease(&h.sched, &leaving).await;
    within(h.sched.deregister(leaving.as_str())).await.unwrap();
    let back = trial(&h.sched, &t.id).await;
    assert_eq!(
        (back.status.as_str(), back.attempt, back.worker_id.clone()),
        ("queued", 2, None)
    );
    assert!(back.error.contains("left"), "{}", back.error);
    assert_code(
        within(h.sched.acquire(leaving.as_str(), Duration::ZERO)).await,
        tonic::Code::NotFound,
    );
    assert_code(
        within(h.sched.deregister(leaving.as_str())).await,
        tonic::Code::NotFound,
    );

    let stays = register(&h.sched, 1).await;
    let again = lease(&h.sched, &stays).await;
    assert_eq!((again.id.as_str(), again.attempt), (t.id.as_str(), 2));
    assert_eq!(finish(&h.sched, &stays, &again, 0.4).await.reason, "");
    assert_eq!(counts(&h.sched, &id).await.completed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_workers_never_share_a_trial() {
    let h = Harness::long().await;
    let id = within(h.sched.submit(spec(16, ""))).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..4u32 {
        let sched = h.sched.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let w = register(&sched, 1).await;
            let mut mine = Vec::new();
            loop {
                match sched
                    .acquire(w.as_str(), Duration::from_millis(200))
                    .await
                    .unwrap()
                {
                    Some(t) => {
                        let score = 0.5 + f64::from(n) / 10.0 + mine.len() as f64 / 100.0;
                        assert_eq!(finish(&sched, &w, &t, score).await.reason, "");
                        mine.push(t.id);
                    }
                    None if view(&sched, &id).await.row.status != ExperimentStatus::Running => {
                        return mine
                    }
                    None => {}
                }
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(within(task).await.unwrap());
    }
    let unique: HashSet<&TrialId> = all.iter().collect();
    assert_eq!(all.len(), 16);
    assert_eq!(unique.len(), 16, "a trial was trained twice");
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Completed);
    assert_eq!(
        v.counts,
        TrialCounts {
            completed: 16,
            ..TrialCounts::default()
        }
    );
    assert_eq!(
        v.best.and_then(|b| b.score),
        max_completed_score(&h.sched, &id).await
    );
}

#[tokio::test]
async fn draining_answers_waiting_long_polls_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sched = std::sync::Arc::new(in_memory_scheduler(dir.path()).await);
    let w = register(&sched, 1).await;
    let waiter = {
        let sched = sched.clone();
        let w = w.clone();
        tokio::spawn(async move { sched.acquire(w.as_str(), Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    sched.drain();
    let answer = within(waiter).await.unwrap().unwrap();
    assert!(answer.is_none());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Nothing is handed out once draining, even with work queued.
    within(sched.submit(spec(2, ""))).await.unwrap();
    assert!(within(sched.acquire(w.as_str(), WAIT))
        .await
        .unwrap()
        .is_none());
}

// Regression (a one-CPU-hour run, 2026-12-06): when the final phase queued its two trials, the
// worker whose slot was free took the first and, a moment later, prefetched the second, while
// the other worker's slot sat idle; the two final trials then trained one after the other.
#[tokio::test]
async fn a_prefetch_leaves_the_last_queued_trials_to_idle_slots_elsewhere() {
    let h = Harness::long().await;
    let a = register(&h.sched, 1).await;
    let b = register(&h.sched, 1).await;
    within(h.sched.submit(spec(2, ""))).await.unwrap();
    let first = lease(&h.sched, &a).await;
    // A's slot is busy and B's idle, with one trial left: A's prefetch must not take it.
    let prefetch = within(h.sched.acquire(a.as_str(), Duration::from_millis(300)))
        .await
        .unwrap();
    assert!(prefetch.is_none(), "{prefetch:?}");
    let second = lease(&h.sched, &b).await;
    assert_ne!(first.id, second.id);
}

#[tokio::test]
async fn a_lone_worker_still_prefetches() {
    let h = Harness::long().await;
    let a = register(&h.sched, 1).await;
    within(h.sched.submit(spec(3, ""))).await.unwrap();
    let first = lease(&h.sched, &a).await;
    let prefetched = lease(&h.sched, &a).await;
    assert_ne!(first.id, prefetched.id);
}

// Regression (issue 11, control-plane review): a new trial woke every waiting Acquire, and each
// ran a lease transaction under the writer lock; with many idle workers (the end of a search,
// a final phase) one completion cost as many transactions as there were waiters.
#[tokio::test]
async fn a_new_trial_wakes_one_waiting_acquire_not_all_of_them() {
    let h = Harness::long().await;
    let holder = register(&h.sched, 1).await;
    within(h.sched.submit(spec(2, "max_failures = 3\n")))
        .await
        .unwrap();
    // A lone worker may prefetch: it holds the whole budget, so nothing is queued.
    let first = lease(&h.sched, &holder).await;
    lease(&h.sched, &holder).await;
    const WAITERS: usize = 30;
    let mut waiters = Vec::new();
    for _ in 0..WAITERS {
        let w = register(&h.sched, 1).await;
        let sched = h.sched.clone();
        waiters.push(tokio::spawn(async move {
            sched.acquire(w.as_str(), Duration::from_secs(20)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "nothing to lease yet"
    );
    let before = h.sched.lease_attempts();
    // The failure queues one replacement.
    within(
        h.sched
            .fail(holder.as_str(), first.id.as_str(), 1, "cuda error"),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiters.iter().all(|w| !w.is_finished()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let any further wake-ups run out before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attempts = h.sched.lease_attempts() - before;
    let served: Vec<_> = waiters.iter().filter(|w| w.is_finished()).collect();
    assert_eq!(served.len(), 1, "one waiter gets the replacement");
    assert!(
        attempts <= 3,
        "{attempts} lease transactions for one new trial and {WAITERS} waiters"
    );
    for w in waiters {
        w.abort();
    }
}

#[tokio::test]
async fn several_new_trials_reach_as_many_waiting_workers() {
    let h = Harness::long().await;
    let leaving = register(&h.sched, 3).await;
    within(h.sched.submit(spec(3, ""))).await.unwrap();
    let mut held = HashSet::new();
    for _ in 0..3 {
        held.insert(lease(&h.sched, &leaving).await.id);
    }
    let mut waiters = Vec::new();
    for _ in 0..4 {
        let w = register(&h.sched, 1).await;
        let sched = h.sched.clone();
        waiters.push(tokio::spawn(async move {
            sched.acquire(w.as_str(), Duration::from_secs(3)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Three trials go back to the queue at once; one wake-up is passed on from waiter to waiter.
    let started = Instant::now();
    within(h.sched.deregister(leaving.as_str())).await.unwrap();
    let mut got = HashSet::new();
    let mut empty = 0;
    for w in waiters {
        match within(w).await.unwrap().unwrap() {
            Some(t) => {
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "{:?}",
                    started.elapsed()
                );
                got.insert(t.id);
            }
            None => empty += 1,
        }
    }
    assert_eq!(got, held, "each requeued trial reached a waiting worker");
    assert_eq!(empty, 1);
}

#[tokio::test]
async fn a_refused_prefetch_looks_again_a_few_times_a_second_not_in_a_loop() {
    let h = Harness::long().await;
    let a = register(&h.sched, 1).await;
    let _idle = register(&h.sched, 1).await;
    within(h.sched.submit(spec(2, ""))).await.unwrap();
    lease(&h.sched, &a).await;
    let before = h.sched.lease_attempts();
    // One trial left and an idle slot elsewhere: A's prefetch is refused for its whole wait.
    let prefetch = within(h.sched.acquire(a.as_str(), Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(prefetch.is_none(), "{prefetch:?}");
    let attempts = h.sched.lease_attempts() - before;
    assert!(
        (2..=6).contains(&attempts),
        "{attempts} lease transactions in a 1 s refused prefetch"
    );
}
