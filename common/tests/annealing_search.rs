//! A toy annealing run with `annealing` + `mutation`, standing in for trained scores: the
//! objective rewards a learning rate near 0.003 and small networks. Checks that a seed replays
//! the same trajectory and that the search improves on its start.

use explore_common::annealing::{
    draw_base, metropolis_accept, rng_for, temperature, STREAM_ACCEPTANCE, STREAM_PROPOSAL,
};
use explore_common::hparams::HyperParams;
use explore_common::mutation::propose;
use explore_common::presets;
use explore_common::spec::{AnnealingConfig, SearchSpace};
use explore_common::Genome;
use rand::Rng;

const STEPS: u32 = 200;

fn objective(genome: &Genome, hp: &HyperParams) -> f64 {
    -(hp.learning_rate.log10() - 0.003f64.log10()).abs() - 0.001 * genome.depth() as f64
}

/// One step of the trajectory: (base drawn, child hash, child score, accepted).
type Step = (usize, String, f64, bool);

/// Runs the search; returns the trajectory and the best score in the pool at the end.
fn run(seed: u64) -> (Vec<Step>, f64, f64) {
    let cfg = AnnealingConfig::default();
    let space = SearchSpace::default();
    let genome = presets::preset("cnn2").expect("preset");
    let hp = HyperParams {
        learning_rate: 3e-4,
        ..HyperParams::default()
    };
    let start = objective(&genome, &hp);
    // The pool of accepted models; children that are refused never become bases.
    let mut pool = vec![(genome, hp, start)];
    let mut trajectory = Vec::new();
    for step in 0..STEPS {
        let t = temperature(&cfg, step, f64::from(step) / f64::from(STEPS));
        let scores: Vec<f64> = pool.iter().map(|m| m.2).collect();
        let mut rng = rng_for(seed, STREAM_PROPOSAL, u64::from(step));
        let base = draw_base(&scores, t, &mut rng).expect("finite scores");
        let (parent_genome, parent_hp, parent_score) = pool[base].clone();
        let Ok(child) = propose(&parent_genome, &parent_hp, &space, &mut rng) else {
            continue;
        };
        let score = objective(&child.genome, &child.hparams);
        let u: f64 = rng_for(seed, STREAM_ACCEPTANCE, u64::from(step)).gen();
        let accepted = metropolis_accept(parent_score, score, t, u);
        trajectory.push((base, child.genome.canonical_hash(), score, accepted));
        if accepted {
            pool.push((child.genome, child.hparams, score));
        }
    }
    let best = pool.iter().map(|m| m.2).fold(f64::NEG_INFINITY, f64::max);
    (trajectory, start, best)
}

#[test]
fn same_seed_replays_the_same_trajectory() {
    let (a, _, best_a) = run(42);
    let (b, _, best_b) = run(42);
    assert_eq!(a, b);
    assert_eq!(best_a, best_b);
    let (c, _, _) = run(43);
    assert_ne!(a, c);
}

#[test]
fn annealing_improves_on_the_start() {
    for seed in [1, 2, 3] {
        let (trajectory, start, best) = run(seed);
        assert!(
            trajectory.len() > 150,
            "seed {seed}: only {} proposals",
            trajectory.len()
        );
        assert!(
            best > start + 0.5,
            "seed {seed}: best {best} vs start {start}"
        );
        let accepted = trajectory.iter().filter(|s| s.3).count();
        let refused = trajectory.len() - accepted;
        assert!(
            accepted > 0 && refused > 0,
            "seed {seed}: {accepted} accepted, {refused} refused"
        );
    }
}
