//! Property tests: completion and search invariants under random operation orders.

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Lease a trial if one is available.
    Acquire,
    /// Complete the n-th held trial with a score.
    Complete(usize, f64),
    /// Report an already completed trial again with another score.
    Duplicate(usize, f64),
    /// Fail the n-th held trial.
    Fail(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        4 => (any::<usize>(), 0.0f64..=1.0).prop_map(|(n, s)| Op::Complete(n, s)),
        1 => (any::<usize>(), 0.0f64..=1.0).prop_map(|(n, s)| Op::Duplicate(n, s)),
        1 => any::<usize>().prop_map(Op::Fail),
    ]
}

async fn check_invariants(
    sched: &Scheduler,
    id: &ExperimentId,
    max_trials: u32,
    first_scores: &[(TrialId, f64)],
) {
    let v = view(sched, id).await;
    assert!(v.counts.completed <= max_trials, "{:?}", v.counts);
    assert!(v.counts.budgeted() <= max_trials, "{:?}", v.counts);
    assert_eq!(
        v.counts.completed as usize,
        first_scores.len(),
        "each trial completes once"
    );
    let all = trials(sched, id).await;
    for (trial_id, score) in first_scores {
        let t = all.iter().find(|t| &t.id == trial_id).unwrap();
        assert_eq!((t.status.as_str(), t.score), ("completed", Some(*score)));
    }
    let max = first_scores
        .iter()
        .map(|(_, s)| *s)
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
    assert_eq!(v.best.as_ref().and_then(|b| b.score), max);
    if let Some(best) = &v.best {
        assert_eq!(best.status, TrialStatus::Completed);
    }
    match v.row.status.as_str() {
        "completed" => assert_eq!(v.counts.completed, max_trials),
        "running" => assert!(v.counts.completed < max_trials, "{:?}", v.counts),
        // Trials in flight when the experiment failed may still complete.
        _ => assert!(v.counts.failed >= max_trials, "{:?}", v.counts),
    }
}

async fn run_ops(max_trials: u32, slots: u32, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let sched = in_memory_scheduler(dir.path()).await;
    let w = register(&sched, slots).await;
    let id = within(sched.submit(spec(max_trials, ""))).await.unwrap();
    let mut held: Vec<TrialRow> = Vec::new();
    let mut completed: Vec<TrialRow> = Vec::new();
    let mut first_scores: Vec<(TrialId, f64)> = Vec::new();
    for op in ops {
        match op {
            Op::Acquire => {
                if let Some(t) = within(sched.acquire(w.as_str(), Duration::ZERO))
                    .await
                    .unwrap()
                {
                    assert!(held.iter().all(|h| h.id != t.id), "leased twice");
                    held.push(t);
                }
            }
            Op::Complete(n, score) if !held.is_empty() => {
                let t = held.remove(n % held.len());
                let answer = finish(&sched, &w, &t, score).await;
                assert_eq!(
                    answer,
                    CompleteAnswer {
                        accepted: true,
                        reason: String::new()
                    }
                );
                first_scores.push((t.id.clone(), score));
                completed.push(t);
            }
            Op::Duplicate(n, score) if !completed.is_empty() => {
                let t = &completed[n % completed.len()];
                let answer = finish(&sched, &w, t, score).await;
                assert_eq!(answer.reason, "already recorded");
            }
            Op::Fail(n) if !held.is_empty() => {
                let t = held.remove(n % held.len());
                within(sched.fail(
                    w.as_str(),
                    t.id.as_str(),
                    t.attempt as u32,
                    "random failure",
                ))
                .await
                .unwrap();
            }
            _ => {}
        }
        check_invariants(&sched, &id, max_trials, &first_scores).await;
    }
    // Whatever happened so far, the experiment can still be finished.
    let mut rounds = 0;
    while view(&sched, &id).await.row.status == ExperimentStatus::Running {
        rounds += 1;
        assert!(rounds < 100, "experiment does not end");
        for t in std::mem::take(&mut held) {
            finish(&sched, &w, &t, 0.5).await;
            first_scores.push((t.id.clone(), 0.5));
        }
        while let Some(t) = within(sched.acquire(w.as_str(), Duration::ZERO))
            .await
            .unwrap()
        {
            held.push(t);
        }
        check_invariants(&sched, &id, max_trials, &first_scores).await;
    }
    let v = view(&sched, &id).await;
    match v.row.status.as_str() {
        "completed" => assert_eq!(v.counts.completed, max_trials),
        "failed" => assert!(v.counts.failed >= max_trials, "{:?}", v.counts),
        other => panic!("experiment ended as {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn completion_invariants_hold_in_any_order(
        max_trials in 1u32..=5,
        slots in 1u32..=3,
        ops in prop::collection::vec(op(), 0..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run_ops(max_trials, slots, ops));
    }
}

/// What a random search run does to one trial it holds.
#[derive(Debug, Clone)]
enum SearchOp {
    Acquire,
    /// Report an epoch of the n-th held trial with a validation accuracy.
    Epoch(usize, f64),
    /// Complete the n-th held trial with a score.
    Complete(usize, f64),
}

fn search_op() -> impl Strategy<Value = SearchOp> {
    prop_oneof![
        3 => Just(SearchOp::Acquire),
        3 => (any::<usize>(), 0.0f64..=1.0).prop_map(|(n, v)| SearchOp::Epoch(n, v)),
        2 => (any::<usize>(), 0.0f64..=1.0).prop_map(|(n, s)| SearchOp::Complete(n, s)),
    ]
}

/// Runs random operations against an experiment with chains, early stopping, inheritance, an
/// epoch budget and tight constraints, checking after each that no dispatched trial breaks the
/// constraints, no candidate is trained twice and the epoch budget is never over-committed.
async fn run_search_ops(max_epochs: u32, chains: u32, ops: Vec<SearchOp>) {
    let dir = tempfile::tempdir().unwrap();
    let sched = in_memory_scheduler(dir.path()).await;
    let w = register(&sched, 2).await;
    let toml = format!(
        "name = \"prop\"\n[budget]\nmax_trials = 1000\nmax_epochs = {max_epochs}\n\
         [annealing]\nchains = {chains}\nreheat_after = 2\ncooling = \"adaptive\"\ncooling_rate = 0.8\n\
         [early_stopping]\nrule = \"median\"\nmin_peers = 1\n\
         [search]\nmax_params = 600000\nmax_flops = 12000000\nmax_blocks = 14\nepochs = [1, 3]\n"
    );
    let spec = ExperimentSpec::from_toml(&toml).unwrap();
    let space = spec.search.clone();
    let id = within(sched.submit(spec)).await.unwrap();
    let mut held: Vec<(TrialRow, u32)> = Vec::new();
    let mut dispatched: Vec<TrialRow> = Vec::new();
    for op in ops {
        match op {
            SearchOp::Acquire => {
                if let Some(t) = within(sched.acquire(w.as_str(), Duration::ZERO))
                    .await
                    .unwrap()
                {
                    dispatched.push(t.clone());
                    held.push((t, 0));
                }
            }
            SearchOp::Epoch(n, val) if !held.is_empty() => {
                let i = n % held.len();
                let planned = HyperParams::from_json(&held[i].0.hparams_json)
                    .unwrap()
                    .epochs;
                let epoch = (held[i].1 + 1).min(planned);
                let answer = report_epoch(&sched, &w, &held[i].0, epoch, val).await;
                held[i].1 = epoch;
                if matches!(answer, HeartbeatAnswer::Stop(_)) {
                    let (t, _) = held.remove(i);
                    assert_eq!(trial(&sched, &t.id).await.status, TrialStatus::Pruned);
                }
            }
            SearchOp::Complete(n, score) if !held.is_empty() => {
                let (t, _) = held.remove(n % held.len());
                finish_with_checkpoint(&sched, &w, &t, score).await;
            }
            _ => {}
        }
        let v = view(&sched, &id).await;
        assert!(
            v.epochs.committed <= u64::from(max_epochs),
            "committed {:?} over the budget {max_epochs}",
            v.epochs
        );
        let mut seen = HashSet::new();
        for t in trials(&sched, &id).await {
            if t.status != TrialStatus::Failed && t.status != TrialStatus::Cancelled {
                assert!(
                    seen.insert((t.genome_hash.clone(), t.hparams_json.clone())),
                    "trial {} repeats a candidate",
                    t.seq
                );
            }
        }
    }
    for t in &dispatched {
        let genome = Genome::from_json(&t.genome_json).unwrap();
        space.check_constraints(&genome).unwrap();
        let analysis = genome.analyze().unwrap();
        assert!(analysis.params <= space.max_params && analysis.flops <= space.max_flops);
        if let Some(parent) = &t.parent_id {
            let parent = trial(&sched, parent).await;
            // Before anything is scored, children of the seed are proposed to fill the queue.
            assert!(
                parent.status == TrialStatus::Completed || parent.seq == 0,
                "base {} is {}",
                parent.seq,
                parent.status
            );
            if t.inherit_from.is_some() {
                assert_eq!(t.inherit_from, parent.checkpoint_sha256);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn search_invariants_hold_under_pruning_chains_and_epoch_budgets(
        max_epochs in 1u32..=20,
        chains in 1u32..=3,
        ops in prop::collection::vec(search_op(), 0..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run_search_ops(max_epochs, chains, ops));
    }
}
