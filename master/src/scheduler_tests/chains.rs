//! Annealing chains: turn-taking, checkpoint inheritance and reheating a stagnating chain.

use super::*;

#[tokio::test]
async fn chains_take_turns_and_each_mutates_its_own_current_model() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let extra =
        "[annealing]\nchains = 2\n[[seeds]]\npreset = \"cnn2\"\n[[seeds]]\npreset = \"cnn3\"\n";
    let id = within(h.sched.submit(spec(8, extra))).await.unwrap();
    let mut by_chain: BTreeMap<i64, Vec<TrialRow>> = BTreeMap::new();
    for k in 0..8 {
        let t = lease(&h.sched, &w).await;
        // Scores rise, so every child is accepted and becomes its chain's current model.
        finish_with_checkpoint(&h.sched, &w, &t, 0.5 + k as f64 / 100.0).await;
        by_chain
            .entry(t.chain)
            .or_default()
            .push(trial(&h.sched, &t.id).await);
    }
    assert_eq!(by_chain.len(), 2, "both chains got work");
    for (chain, ts) in &by_chain {
        assert_eq!(ts.len(), 4, "chain {chain} got its share");
        assert_eq!(ts[0].parent_id, None, "each chain starts from a seed");
        for pair in ts.windows(2) {
            assert_eq!(
                pair[1].parent_id.as_ref(),
                Some(&pair[0].id),
                "chain {chain} mutates its own last accepted model"
            );
        }
    }
    let v = view(&h.sched, &id).await;
    assert_eq!(v.row.status, ExperimentStatus::Completed);
}

#[tokio::test]
async fn children_inherit_their_parents_checkpoint_and_fine_tune_briefly() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let extra = "[inheritance]\nfine_tune_epochs = 1\n[search]\nepochs = [2, 4]\n";
    let id = within(h.sched.submit(spec(4, extra))).await.unwrap();
    let seed = lease(&h.sched, &w).await;
    assert_eq!(seed.inherit_from, None, "a seed trains from scratch");
    finish_with_checkpoint(&h.sched, &w, &seed, 0.8).await;
    let seed = trial(&h.sched, &seed.id).await;
    let child = lease(&h.sched, &w).await;
    assert_eq!(child.parent_id.as_ref(), Some(&seed.id));
    assert_eq!(child.inherit_from, seed.checkpoint_sha256);
    assert!(
        child.origin.ends_with("(inherits weights)"),
        "{}",
        child.origin
    );
    assert_eq!(
        HyperParams::from_json(&child.hparams_json).unwrap().epochs,
        1
    );

    // Without inheritance the child trains from scratch with its own epochs.
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let extra = "[inheritance]\nenabled = false\n";
    within(h.sched.submit(spec(4, extra))).await.unwrap();
    let seed = lease(&h.sched, &w).await;
    finish_with_checkpoint(&h.sched, &w, &seed, 0.8).await;
    let child = lease(&h.sched, &w).await;
    assert_eq!(child.inherit_from, None);
    let _ = id;
}

#[tokio::test]
async fn a_stagnating_chain_is_reheated() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let extra = "[annealing]\nchains = 1\nreheat_after = 2\ninitial_temperature = 0.05\n\
                 cooling = \"exponential\"\ncooling_rate = 0.5\n";
    let id = within(h.sched.submit(spec(10, extra))).await.unwrap();
    for score in [0.9, 0.5] {
        let t = lease(&h.sched, &w).await;
        finish(&h.sched, &w, &t, score).await;
    }
    let mut conn = h.sched.store().conn().await.unwrap();
    let chain = conn.get_chain(&id, 0).await.unwrap().unwrap();
    assert_eq!((chain.reheats, chain.since_improvement), (0, 1));
    assert!(
        (chain.temperature - 0.05 * 0.25).abs() < 1e-12,
        "{}",
        chain.temperature
    );
    drop(conn);
    let t = lease(&h.sched, &w).await;
    finish(&h.sched, &w, &t, 0.4).await;
    let mut conn = h.sched.store().conn().await.unwrap();
    let chain = conn.get_chain(&id, 0).await.unwrap().unwrap();
    assert_eq!(chain.reheats, 1);
    assert_eq!(chain.temperature, 0.05, "back to the initial temperature");
    assert_eq!(
        chain.current_trial_id, None,
        "the next base is drawn from the pool"
    );
}
