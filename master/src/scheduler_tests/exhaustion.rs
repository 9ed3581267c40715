//! Proposal exhaustion: an exhausted space ends the experiment, a stuck chain model does not.

use super::*;

// Regression: when the search space held no new candidate, `refill` logged "no proposal this
// round" and returned; with nothing queued or in flight the experiment then stayed "running"
// forever, below its budget, with nothing any worker could lease.
#[tokio::test]
async fn experiment_ends_when_the_search_space_is_exhausted() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    // Only the batch size can change, between two values: two candidates in all.
    let extra = "[search]\narchitecture_mutation_probability = 0.0\nbatch_sizes = [64, 128]\n\
                 learning_rate = [0.002, 0.002]\nepochs = [3, 3]\noptimizers = [\"adamw\"]\n\
                 schedules = [\"one_cycle\"]\nweight_decay = [0.0001, 0.0001]\n";
    let id = within(h.sched.submit(spec(4, extra))).await.unwrap();
    for score in [0.5, 0.6] {
        let t = lease(&h.sched, &w).await;
        finish(&h.sched, &w, &t, score).await;
    }
    within(h.sched.tick()).await.unwrap();
    let v = view(&h.sched, &id).await;
    assert_eq!(
        (v.counts.completed, v.counts.queued, v.counts.in_flight()),
        (2, 0, 0)
    );
    assert_eq!(
        v.row.status,
        ExperimentStatus::Completed,
        "{}",
        v.row.status_reason
    );
    assert!(
        v.row
            .status_reason
            .starts_with("search space exhausted: no untried candidate within the constraints"),
        "{}",
        v.row.status_reason
    );
    assert_eq!(v.best.unwrap().score, Some(0.6));
    assert!(within(h.sched.acquire(w.as_str(), Duration::ZERO))
        .await
        .unwrap()
        .is_none());
}

/// Runs an experiment with one single-slot worker and synthetic scores until it ends (or
/// `budget + 5` completions, which it must not need); returns its view.
async fn run_synthetic(sched: &Scheduler, id: &ExperimentId, budget: u32) -> ExperimentView {
    let w = register(sched, 1).await;
    let mut n = 0u64;
    while view(sched, id).await.row.status == ExperimentStatus::Running {
        assert!(n <= u64::from(budget) + 5, "experiment does not end");
        let t = within(sched.acquire(w.as_str(), Duration::ZERO))
            .await
            .unwrap()
            .expect("a running experiment keeps a trial queued for its worker");
        let answer = finish(sched, &w, &t, 0.5 + ((n * 37) % 101) as f64 / 250.0).await;
        assert_eq!(answer.reason, "", "{answer:?}");
        n += 1;
    }
    view(sched, id).await
}

/// Every trial of the experiment is a distinct candidate.
async fn assert_all_distinct(sched: &Scheduler, id: &ExperimentId) {
    let mut seen = HashSet::new();
    for t in trials(sched, id).await {
        assert!(
            seen.insert((t.genome_hash.clone(), t.hparams_json.clone())),
            "trial {} repeats an earlier candidate",
            t.seq
        );
    }
}

/// Narrow hyperparameters, an architecture that cannot grow: a cnn2's every model has only a
/// handful of untried children, yet the space holds thousands of candidates.
const NARROW_SPACE: &str = "[search]\nmax_blocks = 12\nchannels = [32, 64]\n\
    dense_units = [64, 128]\nbatch_sizes = [64, 128]\noptimizers = [\"adamw\"]\n\
    schedules = [\"one_cycle\"]\nlearning_rate = [0.002, 0.002]\n\
    weight_decay = [0.0001, 0.0001]\nepochs = [3, 3]\n";

/// Hyperparameters only: 4 batch sizes × 3 optimisers × 3 schedules × 2 epoch counts = 72
/// candidates besides the seed (whose 3 epochs are outside the range).
const TINY_SPACE: &str = "[search]\narchitecture_mutation_probability = 0.0\n\
    batch_sizes = [32, 64, 128, 256]\noptimizers = [\"adamw\", \"sgd\", \"adam\"]\n\
    schedules = [\"one_cycle\", \"cosine\", \"constant\"]\nlearning_rate = [0.002, 0.002]\n\
    weight_decay = [0.0001, 0.0001]\nepochs = [1, 2]\n";

// Regression: a chain whose current model had no untried child in 16 tries ended the whole
// experiment ("no new proposal: internal error: no new proposal from trial-… after 16 tries");
// here after 81 of 2,000 trials. The proposal now falls back to other bases of the pool.
#[tokio::test]
async fn a_chain_model_without_untried_children_does_not_end_the_experiment() {
    const BUDGET: u32 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let sched = in_memory_scheduler(dir.path()).await;
    let id = within(sched.submit(spec(BUDGET, NARROW_SPACE)))
        .await
        .unwrap();
    let started = Instant::now();
    let v = run_synthetic(&sched, &id, BUDGET).await;
    assert_eq!(
        (v.row.status.as_str(), v.row.status_reason.as_str()),
        ("completed", "trial budget reached")
    );
    assert_eq!(v.counts.completed, BUDGET);
    assert_all_distinct(&sched, &id).await;
    println!("{BUDGET} trials in {:?}", started.elapsed());
}

// Regression, the same cause: a truly tiny space ended after 37 of its 73 candidates with an
// internal error. Now the search covers the space and then says plainly that it is exhausted,
// the same way in every replay.
#[tokio::test]
async fn a_truly_tiny_space_is_covered_then_ends_as_exhausted() {
    const BUDGET: u32 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for name in ["a", "b"] {
        let sched = in_memory_scheduler(&dir.path().join(name)).await;
        let id = within(sched.submit(spec(BUDGET, TINY_SPACE)))
            .await
            .unwrap();
        let v = run_synthetic(&sched, &id, BUDGET).await;
        assert_eq!(v.row.status, ExperimentStatus::Completed);
        let reason = &v.row.status_reason;
        assert!(
            reason.starts_with(
                "search space exhausted: no untried candidate within the constraints after "
            ),
            "{reason}"
        );
        assert!(
            v.counts.completed >= 65 && v.counts.completed <= 73,
            "{} of the 73 candidates tried before: {reason}",
            v.counts.completed
        );
        assert_eq!(v.counts.queued + v.counts.in_flight(), 0);
        assert_all_distinct(&sched, &id).await;
        let all = trials(&sched, &id).await;
        runs.push((
            reason.clone(),
            all.iter()
                .map(|t| {
                    (
                        t.genome_hash.clone(),
                        t.hparams_json.clone(),
                        t.origin.clone(),
                    )
                })
                .collect::<Vec<_>>(),
        ));
    }
    assert_eq!(runs[0], runs[1], "the fallback is deterministic");
}
