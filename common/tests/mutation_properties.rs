//! Property tests of the mutation operators through the public API: children are always valid,
//! inside the search space, different from their parent, and reproducible from a seed.

use explore_common::hparams::{Augment, HyperParams, Objective, Optimizer, Schedule};
use explore_common::mutation::{mutate_genome, mutate_hparams, propose, sample_hparams};
use explore_common::presets;
use explore_common::spec::SearchSpace;
use explore_common::{CommonError, Genome};
use proptest::prelude::*;
use proptest::sample::subsequence;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn preset_index() -> impl Strategy<Value = usize> {
    0..presets::NAMES.len()
}

fn preset_genome(i: usize) -> Genome {
    presets::preset(presets::NAMES[i]).expect("listed preset")
}

/// A random validated search space.
fn space() -> impl Strategy<Value = SearchSpace> {
    (
        (-5.0f64..0.0, 0.0f64..2.5),
        subsequence(vec![16u32, 32, 64, 128, 256, 512], 1..=6),
        (1u32..8, 0u32..4),
        subsequence(
            vec![Optimizer::Sgd, Optimizer::Adam, Optimizer::AdamW],
            1..=3,
        ),
        subsequence(
            vec![Schedule::Constant, Schedule::Cosine, Schedule::OneCycle],
            1..=3,
        ),
        (prop_oneof![Just(0.0), 1e-6f64..1e-3], 0.0f64..1e-2),
        0.0f64..=1.0,
        (20u32..60, 1u64..20),
    )
        .prop_map(
            |(
                (lr_exp, lr_span),
                batch_sizes,
                (e0, de),
                optimizers,
                schedules,
                (w0, dw),
                p,
                (blocks, mparams),
            )| {
                let lo = 10f64.powf(lr_exp);
                SearchSpace {
                    learning_rate: [lo, (lo * 10f64.powf(lr_span)).min(10.0)],
                    batch_sizes,
                    epochs: [e0, e0 + de],
                    optimizers,
                    schedules,
                    weight_decay: [w0, w0 + dw],
                    architecture_mutation_probability: p,
                    max_blocks: blocks,
                    max_params: mparams * 1_000_000,
                    ..SearchSpace::default()
                }
            },
        )
        .prop_filter("valid space", |s| s.validate().is_ok())
}

/// A preset and a `max_flops` for it: unset, or a multiple (0.5x to 4x) of the preset's own
/// FLOPs, so that most limits admit the preset but bind its growth, and some it already breaks.
fn preset_and_max_flops() -> impl Strategy<Value = (usize, u64)> {
    preset_index().prop_flat_map(|i| {
        let flops = preset_genome(i).analyze().expect("presets analyze").flops as f64;
        (
            Just(i),
            prop_oneof![
                1 => Just(0u64),
                4 => (1.0f64..4.0).prop_map(move |k| (k * flops) as u64),
                1 => (0.5f64..1.0).prop_map(move |k| (k * flops) as u64),
            ],
        )
    })
}

/// The least share of proposals a chain starting inside the constraints must get accepted
/// (every one was, over 1,652 such chains of 10 to 30 steps).
const MIN_SUCCESS_RATE: f64 = 0.8;

/// Random valid hyperparameters, often outside the space under test.
fn hparams() -> impl Strategy<Value = HyperParams> {
    (
        prop_oneof![
            Just(Optimizer::Sgd),
            Just(Optimizer::Adam),
            Just(Optimizer::AdamW)
        ],
        1e-6f64..5.0,
        prop_oneof![
            Just(Schedule::Constant),
            Just(Schedule::Cosine),
            Just(Schedule::OneCycle)
        ],
        1u32..2000,
        prop_oneof![Just(0.0), 1e-7f64..0.5],
        1u32..20,
    )
        .prop_map(
            |(optimizer, learning_rate, schedule, batch_size, weight_decay, epochs)| HyperParams {
                optimizer,
                learning_rate,
                schedule,
                batch_size,
                weight_decay,
                epochs,
                objective: Objective::Plain,
                head_only: false,
                augment: Augment::default(),
            },
        )
}

/// Random valid augmentation strengths (often off, often outside the space under test).
fn augment() -> impl Strategy<Value = Augment> {
    (
        prop_oneof![Just(0u32), 0u32..=16],
        prop_oneof![Just(0.0), 0.0f64..=0.5],
        prop_oneof![Just(0.0), 0.0f64..=1.0],
    )
        .prop_map(|(crop_pad, flip, erase)| Augment {
            crop_pad,
            flip,
            erase,
        })
}

/// A validated space with augmentation ranges (each sometimes absent, sometimes one value).
fn augmented_space() -> impl Strategy<Value = SearchSpace> {
    (
        space(),
        prop::option::of((0u32..=8, 0u32..=8)),
        prop::option::of((0.0f64..=0.5, 0.0f64..=0.5)),
        prop::option::of((0.0f64..=1.0, 0.0f64..=1.0)),
    )
        .prop_map(|(space, crop, flip, erase)| {
            let order = |(a, b): (f64, f64)| [a.min(b), a.max(b)];
            SearchSpace {
                crop_pad: crop.map(|(a, b)| [a.min(b), a.max(b)]),
                flip: flip.map(order),
                erase: erase.map(order),
                ..space
            }
        })
        .prop_filter("valid space", |s| s.validate().is_ok())
}

fn assert_inside(hp: &HyperParams, space: &SearchSpace) -> Result<(), TestCaseError> {
    prop_assert!(hp.validate().is_ok(), "{:?}", hp);
    let [lo, hi] = space.learning_rate;
    prop_assert!(
        lo <= hp.learning_rate && hp.learning_rate <= hi,
        "lr {} not in [{lo}, {hi}]",
        hp.learning_rate
    );
    prop_assert!(
        space.batch_sizes.contains(&hp.batch_size),
        "batch size {}",
        hp.batch_size
    );
    prop_assert!(
        space.epochs[0] <= hp.epochs && hp.epochs <= space.epochs[1],
        "epochs {}",
        hp.epochs
    );
    prop_assert!(space.optimizers.contains(&hp.optimizer));
    prop_assert!(space.schedules.contains(&hp.schedule));
    let [w0, w1] = space.weight_decay;
    prop_assert!(
        w0 <= hp.weight_decay && hp.weight_decay <= w1,
        "wd {} not in [{w0}, {w1}]",
        hp.weight_decay
    );
    // An absent range means the strength is off.
    let [c0, c1] = space.crop_pad.unwrap_or([0, 0]);
    let a = hp.augment;
    prop_assert!(
        c0 <= a.crop_pad && a.crop_pad <= c1,
        "crop_pad {} not in [{c0}, {c1}]",
        a.crop_pad
    );
    for (name, value, range) in [
        ("flip", a.flip, space.flip),
        ("erase", a.erase, space.erase),
    ] {
        let [lo, hi] = range.unwrap_or([0.0, 0.0]);
        prop_assert!(
            lo <= value && value <= hi,
            "{name} {value} not in [{lo}, {hi}]"
        );
    }
    Ok(())
}

fn check_mutation(
    parent: &Genome,
    result: &Result<(Genome, String), CommonError>,
) -> Result<(), TestCaseError> {
    match result {
        Ok((child, description)) => {
            prop_assert!(
                child.validate().is_ok(),
                "{description}: {:?}",
                child.validate()
            );
            prop_assert_ne!(child.canonical_hash(), parent.canonical_hash());
            prop_assert!(!description.is_empty());
        }
        Err(CommonError::Mutation(reason)) => prop_assert!(!reason.is_empty()),
        Err(other) => prop_assert!(false, "not a mutation rejection: {other}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn chained_mutations_stay_valid(seed in any::<u64>(), preset in preset_index(), steps in 1usize..=20) {
        let space = SearchSpace { max_blocks: 60, max_params: 0, ..SearchSpace::default() };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut genome = preset_genome(preset);
        for _ in 0..steps {
            let result = mutate_genome(&genome, &space, &mut rng);
            check_mutation(&genome, &result)?;
            if let Ok((child, _)) = result {
                genome = child;
            }
        }
    }

    #[test]
    fn chained_proposals_meet_the_constraints(
        seed in any::<u64>(),
        (preset, max_flops) in preset_and_max_flops(),
        steps in 10usize..=30,
        space in space(),
    ) {
        let space = SearchSpace { max_flops, ..space };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut genome = preset_genome(preset);
        let start_fits = space.check_constraints(&genome).is_ok();
        let mut hp = HyperParams::default();
        let mut accepted = 0usize;
        for _ in 0..steps {
            let proposal = match propose(&genome, &hp, &space, &mut rng) {
                Ok(p) => p,
                Err(CommonError::Mutation(reason)) => {
                    prop_assert!(!reason.is_empty());
                    continue;
                }
                Err(other) => return Err(TestCaseError::fail(format!("not a mutation rejection: {other}"))),
            };
            accepted += 1;
            prop_assert!(proposal.genome.validate().is_ok());
            if max_flops > 0 {
                let flops = proposal.genome.analyze().unwrap().flops;
                prop_assert!(
                    flops <= max_flops,
                    "{flops} FLOPs exceed max_flops = {max_flops}: {}", proposal.description
                );
            }
            prop_assert!(space.check_constraints(&proposal.genome).is_ok(), "{}", proposal.description);
            prop_assert!(proposal.hparams.validate().is_ok());
            prop_assert!(
                proposal.genome.canonical_hash() != genome.canonical_hash() || proposal.hparams != hp,
                "child equals parent: {}", proposal.description
            );
            prop_assert!(!proposal.description.is_empty());
            genome = proposal.genome;
            hp = proposal.hparams;
        }
        let rate = accepted as f64 / steps as f64;
        // A parent inside the constraints keeps its children inside them, so almost every
        // proposal of such a chain succeeds; one that breaks them may be rejected throughout.
        if start_fits {
            prop_assert!(
                rate >= MIN_SUCCESS_RATE,
                "only {accepted} of {steps} proposals accepted (max_flops = {max_flops})"
            );
        }
    }

    #[test]
    fn elr_mode_proposals_never_touch_learning_rate_or_weight_decay(
        seed in any::<u64>(),
        preset in prop_oneof![Just(0usize), Just(1), Just(3)],
        steps in 1usize..=20,
        space in space(),
        parent in hparams(),
        elr in 1e-3f64..0.3,
    ) {
        let space = SearchSpace { elr: Some([1e-3, 0.3]), ..space };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut genome = preset_genome(preset);
        prop_assume!(space.check_constraints(&genome).is_ok());
        let mut hp = HyperParams { objective: Objective::Elr { elr, scale: 16.0 }, ..parent };
        let (mut accepted, mut tried) = (0, 0);
        for _ in 0..steps {
            tried += 1;
            let proposal = match propose(&genome, &hp, &space, &mut rng) {
                Ok(p) => p,
                Err(CommonError::Mutation(reason)) => {
                    prop_assert!(!reason.is_empty());
                    continue;
                }
                Err(other) => return Err(TestCaseError::fail(format!("not a mutation rejection: {other}"))),
            };
            accepted += 1;
            let child = &proposal.hparams;
            prop_assert_eq!(child.learning_rate.to_bits(), hp.learning_rate.to_bits(), "{}", proposal.description);
            prop_assert_eq!(child.weight_decay.to_bits(), hp.weight_decay.to_bits(), "{}", proposal.description);
            let touched = proposal.description.split("; ").any(|part| {
                let part = part.strip_prefix("clamp ").unwrap_or(part);
                part.starts_with("lr ") || part.starts_with("weight_decay ")
            });
            prop_assert!(!touched, "{}", proposal.description);
            let Objective::Elr { elr, scale } = child.objective else {
                return Err(TestCaseError::fail("the child left ELR mode"));
            };
            prop_assert!((1e-3..=0.3).contains(&elr) && scale == 16.0, "elr {elr}");
            prop_assert!(!proposal.genome.scale_invariant_weights().is_empty(), "{}", proposal.description);
            genome = proposal.genome;
            hp = proposal.hparams;
        }
        // the ELR and the other hyperparameters leave room to move: most proposals succeed
        prop_assert!(accepted * 2 >= tried, "{accepted} of {tried} proposals");
    }

    #[test]
    fn propose_is_reproducible(seed in any::<u64>(), preset in preset_index(), space in space()) {
        let genome = preset_genome(preset);
        let hp = HyperParams::default();
        let a = propose(&genome, &hp, &space, &mut ChaCha8Rng::seed_from_u64(seed));
        let b = propose(&genome, &hp, &space, &mut ChaCha8Rng::seed_from_u64(seed));
        match (a, b) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => prop_assert!(false, "{a:?} vs {b:?}"),
        }
    }

    #[test]
    fn mutated_hparams_stay_inside_the_space(seed in any::<u64>(), space in space(), parent in hparams()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut hp = parent;
        for _ in 0..5 {
            let (child, description) = mutate_hparams(&hp, &space, &mut rng);
            prop_assert!(!description.is_empty());
            assert_inside(&child, &space)?;
            hp = child;
        }
    }

    #[test]
    fn augmented_proposals_stay_inside_the_ranges(
        seed in any::<u64>(),
        preset in preset_index(),
        steps in 1usize..=30,
        space in augmented_space(),
        parent in hparams(),
        start in augment(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut genome = preset_genome(preset);
        prop_assume!(space.check_constraints(&genome).is_ok());
        let mut hp = HyperParams { augment: start, ..parent };
        for _ in 0..steps {
            let proposal = match propose(&genome, &hp, &space, &mut rng) {
                Ok(p) => p,
                Err(CommonError::Mutation(reason)) => {
                    prop_assert!(!reason.is_empty());
                    continue;
                }
                Err(other) => return Err(TestCaseError::fail(format!("not a mutation rejection: {other}"))),
            };
            // An architecture-only child keeps its valid parent's hyperparameters as they are;
            // every hyperparameter mutation moves them into the space.
            if proposal.genome.canonical_hash() == genome.canonical_hash()
                || proposal.hparams != hp
            {
                assert_inside(&proposal.hparams, &space)?;
            }
            genome = proposal.genome;
            hp = proposal.hparams;
        }
        let (child, _) = mutate_hparams(&hp, &space, &mut rng);
        assert_inside(&child, &space)?;
    }

    #[test]
    fn mutated_augmentation_stays_inside_the_ranges(
        seed in any::<u64>(),
        space in augmented_space(),
        parent in hparams(),
        start in augment(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut hp = HyperParams { augment: start, ..parent };
        for _ in 0..10 {
            let (child, description) = mutate_hparams(&hp, &space, &mut rng);
            prop_assert!(!description.is_empty());
            assert_inside(&child, &space)?;
            hp = child;
        }
        for _ in 0..5 {
            assert_inside(&sample_hparams(&space, &mut rng), &space)?;
        }
    }

    #[test]
    fn sampled_hparams_lie_inside_the_space(seed in any::<u64>(), space in space()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..5 {
            assert_inside(&sample_hparams(&space, &mut rng), &space)?;
        }
    }
}

#[test]
fn every_preset_mutates_validly_under_many_seeds() {
    let space = SearchSpace::default();
    for (name, genome) in presets::presets() {
        let mut successes = 0;
        for seed in 0..300 {
            let result = mutate_genome(&genome, &space, &mut ChaCha8Rng::seed_from_u64(seed));
            match &result {
                Ok((child, _)) => {
                    child.validate().unwrap();
                    successes += 1;
                }
                Err(CommonError::Mutation(reason)) => assert!(!reason.is_empty()),
                Err(other) => panic!("{name}: {other}"),
            }
        }
        assert!(
            successes > 150,
            "{name}: only {successes} of 300 mutations applied"
        );
    }
}

#[test]
fn sampled_hparams_cover_the_space() {
    let space = SearchSpace::default();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let samples: Vec<HyperParams> = (0..2000)
        .map(|_| sample_hparams(&space, &mut rng))
        .collect();
    let zero_wd = samples.iter().filter(|h| h.weight_decay == 0.0).count();
    assert!(
        (300..500).contains(&zero_wd),
        "{zero_wd} of 2000 without weight decay"
    );
    for b in &space.batch_sizes {
        assert!(samples.iter().any(|h| h.batch_size == *b));
    }
    for e in space.epochs[0]..=space.epochs[1] {
        assert!(samples.iter().any(|h| h.epochs == e));
    }
    // Log-uniform: about half of the draws below the geometric mean of the range.
    let mid = (space.learning_rate[0] * space.learning_rate[1]).sqrt();
    let below = samples.iter().filter(|h| h.learning_rate < mid).count();
    assert!(
        (850..1150).contains(&below),
        "{below} of 2000 below the geometric mean"
    );
}

#[test]
fn proposal_description_lists_architecture_then_hparams() {
    let space = SearchSpace::default();
    let genome = preset_genome(0);
    let hp = HyperParams::default();
    let mut seen_both = false;
    for seed in 0..200 {
        let p = propose(&genome, &hp, &space, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        if p.genome != genome && p.hparams != hp {
            let (arch, rest) = p.description.split_once("; ").expect("two parts");
            assert!(!arch.is_empty() && !rest.is_empty(), "{}", p.description);
            seen_both = true;
        }
    }
    assert!(seen_both);
}
