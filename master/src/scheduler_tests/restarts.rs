//! Restarts: a restarted master continues the experiment and reclaims or renews leases.

use super::*;

#[tokio::test]
async fn a_restarted_master_continues_the_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(LONG_LEASE, 3);
    let (id, w, held, best_before) = {
        let sched = open_scheduler(dir.path(), cfg.clone()).await;
        let w = register(&sched, 1).await;
        let id = within(sched.submit(spec(6, ""))).await.unwrap();
        for score in [0.6, 0.75] {
            let t = lease(&sched, &w).await;
            finish(&sched, &w, &t, score).await;
        }
        let held = lease(&sched, &w).await;
        let best = view(&sched, &id).await.row.best_trial_id.unwrap();
        sched.store().close().await;
        (id, w, held, best)
    };

    let sched = open_scheduler(dir.path(), cfg).await;
    within(sched.tick()).await.unwrap();
    let v = view(&sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Running);
    assert_eq!(
        (v.counts.completed, v.counts.leased),
        (2, 1),
        "{:?}",
        v.counts
    );
    assert_eq!(v.row.best_trial_id.as_ref(), Some(&best_before));
    // The worker outlived the master: its lease and its id are still good.
    assert_eq!(
        within(sched.heartbeat(w.as_str(), held.id.as_str(), 1, progress(1)))
            .await
            .unwrap(),
        HeartbeatAnswer::Continue
    );
    assert_eq!(finish(&sched, &w, &held, 0.7).await.reason, "");
    run_to_end(&sched, &w, &id, &[0.9, 0.5]).await;
    let v = view(&sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Completed);
    assert_eq!(v.counts.completed, 6);
    assert_eq!(v.counts.budgeted(), 6);
    assert_eq!(v.best.unwrap().score, Some(0.9));
    let all = trials(&sched, &id).await;
    assert_eq!(
        all.iter().map(|t| t.seq).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn leases_that_expired_while_the_master_was_down_are_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(SHORT_LEASE, 3);
    let (id, w, held) = {
        let sched = open_scheduler(dir.path(), cfg.clone()).await;
        let w = register(&sched, 1).await;
        let id = within(sched.submit(spec(2, ""))).await.unwrap();
        let held = lease(&sched, &w).await;
        sched.store().close().await;
        (id, w, held)
    };
    tokio::time::sleep(SHORT_LEASE * 2).await;
    let sched = open_scheduler(dir.path(), cfg).await;
    within(sched.tick()).await.unwrap();
    let t = trial(&sched, &held.id).await;
    assert_eq!((t.status.as_str(), t.attempt), ("queued", 2));
    assert!(!finish(&sched, &w, &held, 0.9).await.accepted);
    assert_eq!(run_to_end(&sched, &w, &id, &[0.4]).await, 2);
    assert_eq!(view(&sched, &id).await.counts.completed, 2);
}

#[tokio::test]
async fn a_restarted_master_gives_trials_in_flight_a_fresh_lease() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough that resume, tick and the completion below fit inside one fresh lease on a
    // loaded machine (with the 150 ms SHORT_LEASE this failed now and then under load), short
    // enough to be outlived by the downtime.
    let lease_period = Duration::from_secs(1);
    let cfg = config(lease_period, 3);
    let (id, w, held) = {
        let sched = open_scheduler(dir.path(), cfg.clone()).await;
        let w = register(&sched, 1).await;
        let id = within(sched.submit(spec(2, ""))).await.unwrap();
        let held = lease(&sched, &w).await;
        sched.store().close().await;
        (id, w, held)
    };
    // Down for longer than a lease: the worker kept training meanwhile.
    tokio::time::sleep(lease_period * 2).await;
    let sched = open_scheduler(dir.path(), cfg).await;
    within(sched.resume()).await.unwrap();
    within(sched.tick()).await.unwrap();
    let t = trial(&sched, &held.id).await;
    assert_eq!((t.status.as_str(), t.attempt), ("leased", 1));
    assert!(finish(&sched, &w, &held, 0.9).await.accepted);
    assert_eq!(view(&sched, &id).await.counts.completed, 1);
}
