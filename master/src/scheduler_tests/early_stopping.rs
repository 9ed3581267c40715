//! Early stopping and the epoch budget: median pruning and cutting the last trial.

use super::*;

#[tokio::test]
async fn a_trial_below_its_peers_median_is_pruned_and_never_a_base() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let extra = "[early_stopping]\nrule = \"median\"\nmin_peers = 2\n[inheritance]\nenabled = false\n[search]\nepochs = [3, 4]\n[[seeds]]\npreset = \"cnn2\"\nhparams = { optimizer = \"adamw\", learning_rate = 0.002, schedule = \"one_cycle\", batch_size = 128, weight_decay = 0.0001, epochs = 3 }\n";
    let id = within(h.sched.submit(spec(10, extra))).await.unwrap();
    // Two trials set the curve at epoch 1: 0.80 and 0.90.
    for val in [0.80, 0.90] {
        let t = lease(&h.sched, &w).await;
        assert_eq!(
            report_epoch(&h.sched, &w, &t, 1, val).await,
            HeartbeatAnswer::Continue
        );
        finish(&h.sched, &w, &t, val + 0.02).await;
    }
    // A third one at 0.70 after epoch 1 is below the median 0.85: stopped and recorded.
    let bad = lease(&h.sched, &w).await;
    let answer = report_epoch(&h.sched, &w, &bad, 1, 0.70).await;
    let HeartbeatAnswer::Stop(reason) = answer else {
        panic!("expected a stop, got {answer:?}");
    };
    assert!(reason.contains("median"), "{reason}");
    let pruned = trial(&h.sched, &bad.id).await;
    assert_eq!(pruned.status, TrialStatus::Pruned);
    assert_eq!((pruned.score, pruned.epoch), (Some(0.70), 1));
    assert_eq!(pruned.error, reason);
    assert_eq!(pruned.accepted, Some(false));
    // Its late result is kept as history only.
    let late = finish(&h.sched, &w, &bad, 0.75).await;
    assert!(!late.accepted, "{late:?}");
    // A good one at 0.95 goes on; no later trial descends from the pruned one.
    let good = lease(&h.sched, &w).await;
    assert_eq!(
        report_epoch(&h.sched, &w, &good, 1, 0.95).await,
        HeartbeatAnswer::Continue
    );
    finish(&h.sched, &w, &good, 0.95).await;
    let v = view(&h.sched, &id).await;
    assert_eq!(v.counts.pruned, 1);
    for _ in 0..3 {
        let t = lease(&h.sched, &w).await;
        assert_ne!(t.parent_id.as_ref(), Some(&bad.id));
        finish(&h.sched, &w, &t, 0.5).await;
    }
}

#[tokio::test]
async fn the_epoch_budget_cuts_the_last_trial_and_ends_the_experiment() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let spec = ExperimentSpec::from_toml(
        "name = \"epochs\"\n[budget]\nmax_trials = 100\nmax_epochs = 7\n[inheritance]\nenabled = false\n[search]\nepochs = [3, 3]\n[[seeds]]\npreset = \"cnn2\"\nhparams = { optimizer = \"adamw\", learning_rate = 0.002, schedule = \"one_cycle\", batch_size = 128, weight_decay = 0.0001, epochs = 3 }\n",
    )
    .unwrap();
    let id = within(h.sched.submit(spec)).await.unwrap();
    let mut planned = Vec::new();
    while view(&h.sched, &id).await.row.status == ExperimentStatus::Running {
        let t = lease(&h.sched, &w).await;
        let epochs = HyperParams::from_json(&t.hparams_json).unwrap().epochs;
        planned.push(epochs);
        let r = TrialResult {
            epochs_run: epochs,
            ..result(0.5 + planned.len() as f64 / 100.0)
        };
        within(
            h.sched
                .complete(w.as_str(), t.id.as_str(), t.attempt as u32, r),
        )
        .await
        .unwrap();
        assert!(planned.len() < 10, "the experiment does not end");
    }
    assert_eq!(planned, vec![3, 3, 1], "the last trial gets what is left");
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.status_reason, "epoch budget reached");
    assert_eq!(v.epochs.spent, 7);
}
