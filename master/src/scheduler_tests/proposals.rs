//! Proposals and reproducibility: valid unique children within the constraints, and seeded replays.

use super::*;

#[tokio::test]
async fn proposals_are_valid_unique_children_within_the_constraints() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let extra = "[search]\nmax_params = 600000\nmax_blocks = 16\n";
    let id = within(h.sched.submit(spec(24, extra))).await.unwrap();
    let scores: Vec<f64> = (0..24)
        .map(|i| 0.5 + ((i * 7) % 11) as f64 / 40.0)
        .collect();
    assert_eq!(run_to_end(&h.sched, &w, &id, &scores).await, 24);
    let all = trials(&h.sched, &id).await;
    let space = view(&h.sched, &id).await.spec.search;
    let seqs: HashSet<i64> = all.iter().map(|t| t.seq).collect();
    assert_eq!(seqs.len(), all.len());
    let mut seen = HashSet::new();
    for t in &all {
        let genome = Genome::from_json(&t.genome_json).unwrap();
        let hparams = HyperParams::from_json(&t.hparams_json).unwrap();
        let analysis = genome.analyze().unwrap();
        assert_eq!(t.genome_hash, genome.canonical_hash());
        assert_eq!(t.genome_json, genome.canonical_json());
        assert_eq!(t.hparams_json, hparams.to_json());
        assert_eq!(
            (t.params as u64, t.flops as u64),
            (analysis.params, analysis.flops)
        );
        if t.status != TrialStatus::Failed {
            assert!(
                seen.insert((t.genome_hash.clone(), t.hparams_json.clone())),
                "trial {} repeats an earlier candidate",
                t.seq
            );
        }
        if t.seq == 0 {
            assert_eq!(t.parent_id, None);
            continue;
        }
        space.check_constraints(&genome).unwrap();
        assert!(
            analysis.params <= space.max_params,
            "{} params",
            analysis.params
        );
        assert!(
            space.batch_sizes.contains(&hparams.batch_size),
            "{hparams:?}"
        );
        assert!(space.optimizers.contains(&hparams.optimizer), "{hparams:?}");
        assert!(
            (space.epochs[0]..=space.epochs[1]).contains(&hparams.epochs),
            "{hparams:?}"
        );
        let parent_id = t.parent_id.as_ref().expect("a mutation has a parent");
        let parent = all
            .iter()
            .find(|p| &p.id == parent_id)
            .expect("parent in the same experiment");
        assert!(parent.seq < t.seq);
        assert_eq!(
            parent.accepted,
            Some(true),
            "a base model is an accepted state"
        );
        assert!(
            !t.origin.is_empty() && !t.origin.starts_with("seed"),
            "{}",
            t.origin
        );
        assert!(
            parent.genome_hash != t.genome_hash || parent.hparams_json != t.hparams_json,
            "trial {} equals its parent",
            t.seq
        );
    }
}

#[tokio::test]
async fn a_flat_experiment_runs_to_its_budget_inside_the_flat_space() {
    let h = Harness::long().await;
    let w = register(&h.sched, 1).await;
    let id = within(h.sched.submit(spec(30, "[search.flat]\nmax_stages = 3\n")))
        .await
        .unwrap();
    let scores: Vec<f64> = (0..30)
        .map(|i| 0.5 + ((i * 5) % 13) as f64 / 50.0)
        .collect();
    assert_eq!(run_to_end(&h.sched, &w, &id, &scores).await, 30);
    let space = view(&h.sched, &id).await.spec.search;
    let flat = space.flat.clone().expect("the spec has [search.flat]");
    let mut architecture_moves = 0;
    for t in trials(&h.sched, &id).await {
        let genome = Genome::from_json(&t.genome_json).unwrap();
        flat.read(&genome, &space.channels, &space.dense_units)
            .unwrap_or_else(|e| panic!("trial {} ({}) left the flat space: {e}", t.seq, t.origin));
        if t.origin.starts_with("flat: ") {
            architecture_moves += 1;
        }
        assert!(
            !t.origin.contains("blocks["),
            "a per-block move: {}",
            t.origin
        );
    }
    assert!(
        architecture_moves >= 5,
        "{architecture_moves} flat moves in 30 trials"
    );
}

/// Everything a replay must reproduce, with parents named by seq.
type Replay = Vec<(i64, Option<i64>, String, String, String, i64, Option<bool>)>;

async fn replay(sched: &Scheduler, spec: ExperimentSpec, scores: &[f64]) -> Replay {
    let w = register(sched, 1).await;
    let id = within(sched.submit(spec)).await.unwrap();
    run_to_end(sched, &w, &id, scores).await;
    let all = trials(sched, &id).await;
    let seq_of = |id: &TrialId| all.iter().find(|t| &t.id == id).map(|t| t.seq);
    all.iter()
        .map(|t| {
            (
                t.seq,
                t.parent_id.as_ref().and_then(seq_of),
                t.origin.clone(),
                t.genome_json.clone(),
                t.hparams_json.clone(),
                t.seed,
                t.accepted,
            )
        })
        .collect()
}

#[tokio::test]
async fn same_seed_and_results_replay_the_same_search() {
    let dir = tempfile::tempdir().unwrap();
    let scores = [0.81, 0.79, 0.84, 0.83, 0.86, 0.80, 0.87, 0.85];
    let one = replay(
        &in_memory_scheduler(&dir.path().join("a")).await,
        seeded_spec(14, 11),
        &scores,
    )
    .await;
    let two = replay(
        &in_memory_scheduler(&dir.path().join("b")).await,
        seeded_spec(14, 11),
        &scores,
    )
    .await;
    assert_eq!(one.len(), 14);
    assert_eq!(one, two);
    // A file database replays the same search too.
    let h = Harness::long().await;
    assert_eq!(replay(&h.sched, seeded_spec(14, 11), &scores).await, one);
    // Another seed searches differently.
    let other = replay(
        &in_memory_scheduler(&dir.path().join("c")).await,
        seeded_spec(14, 12),
        &scores,
    )
    .await;
    assert_ne!(other, one);
}
