use std::collections::HashSet;

use super::*;
use crate::mutation::test_support::rng;

#[test]
fn every_hparam_operator_of_each_objective_fires() {
    let space = SearchSpace::default();
    let elr = HyperParams {
        objective: Objective::Elr {
            elr: 0.01,
            scale: 16.0,
        },
        ..HyperParams::default()
    };
    for (start, ops) in [
        (HyperParams::default(), HpOp::PLAIN.to_vec()),
        (elr, HpOp::ELR.to_vec()),
    ] {
        let mut r = rng(3);
        let mut fired = HashSet::new();
        let mut hp = start.clone();
        for _ in 0..300 {
            let (child, description, applied) = mutate_hparams_traced(&hp, &space, &mut r);
            assert!(!applied.is_empty() && applied.len() <= 2, "{description}");
            assert_ne!(child, hp, "{description}");
            assert_eq!(child.objective.is_plain(), start.objective.is_plain());
            fired.extend(applied);
            hp = child;
        }
        assert_eq!(fired, ops.into_iter().collect::<HashSet<_>>());
    }
}

#[test]
fn hparams_outside_the_space_are_clamped() {
    let space = SearchSpace::default();
    let wild = HyperParams {
        learning_rate: 5.0,
        batch_size: 1000,
        epochs: 50,
        weight_decay: 0.5,
        ..HyperParams::default()
    };
    for seed in 0..50 {
        let (hp, text) = mutate_hparams(&wild, &space, &mut rng(seed));
        assert!(text.contains("clamp lr 5->0.01"), "{text}");
        assert!(text.contains("clamp batch_size 1000->256"), "{text}");
        assert!(hp.learning_rate <= 0.01 && hp.epochs <= 4 && hp.weight_decay <= 1e-3);
        assert!(space.batch_sizes.contains(&hp.batch_size));
    }
}

#[test]
fn tidy_keeps_three_significant_digits() {
    assert_eq!(tidy(0.003_123_4, 0.0, 1.0), 0.003_12);
    assert_eq!(tidy(0.002 * 1.55, 0.0, 1.0), 0.0031);
    assert_eq!(tidy(123_456.0, 0.0, 1e9), 123_000.0);
    assert_eq!(tidy(5.0, 0.0, 1.0), 1.0);
    assert_eq!(tidy(f64::NAN, 0.1, 1.0), 0.1);
    assert_eq!(tidy(0.0, 0.0, 1.0), 0.0);
}

#[test]
fn standard_normal_has_unit_moments() {
    let mut r = rng(13);
    let n = 20_000;
    let xs: Vec<f64> = (0..n).map(|_| standard_normal(&mut r)).collect();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
    assert!(mean.abs() < 0.03, "{mean}");
    assert!((var - 1.0).abs() < 0.05, "{var}");
}

/// Issue 10: in ELR mode a hyperparameter mutation never touches the learning rate or the weight
/// decay directly (the ELR replaces both); only the ELR and the other settings move.
#[test]
fn an_elr_mutation_never_changes_learning_rate_or_weight_decay() {
    let space = SearchSpace::default();
    for seed in 0..20 {
        let mut r = rng(seed);
        let mut hp = HyperParams {
            learning_rate: 0.0123,
            weight_decay: 0.0456,
            objective: Objective::Elr {
                elr: 0.01,
                scale: 16.0,
            },
            ..HyperParams::default()
        };
        let mut elr_moved = false;
        for _ in 0..50 {
            let (child, description, _) = mutate_hparams_traced(&hp, &space, &mut r);
            assert_eq!(child.learning_rate, hp.learning_rate, "{description}");
            assert_eq!(child.weight_decay, hp.weight_decay, "{description}");
            assert!(child.objective.is_elr(), "{description}");
            elr_moved |= child.objective != hp.objective;
            hp = child;
        }
        assert!(elr_moved, "seed {seed}: the ELR itself never moved");
    }
}

/// Issue 14: with augmentation ranges in the space, each augmentation operator fires and keeps
/// its strength in range; without them none is ever chosen.
#[test]
fn augmentation_operators_fire_only_when_the_space_has_their_range() {
    let augmented = SearchSpace {
        crop_pad: Some([0, 4]),
        flip: Some([0.0, 0.5]),
        erase: Some([0.1, 0.5]),
        ..SearchSpace::default()
    };
    let mut r = rng(5);
    let mut fired = HashSet::new();
    let mut hp = HyperParams::default();
    for _ in 0..300 {
        let (child, description, applied) = mutate_hparams_traced(&hp, &augmented, &mut r);
        let a = child.augment;
        assert!(a.crop_pad <= 4, "{description}");
        assert!((0.0..=0.5).contains(&a.flip), "{description}");
        assert!((0.1..=0.5).contains(&a.erase), "{description}");
        assert_eq!(a.flip, (a.flip * 100.0).round() / 100.0, "{description}");
        child.validate().unwrap();
        fired.extend(applied);
        hp = child;
    }
    for op in [HpOp::CropPad, HpOp::Flip, HpOp::Erase] {
        assert!(fired.contains(&op), "{op:?} never fired");
    }
    // Only the augmentation ranges given are searched; a one-value range pins the strength.
    let flip_only = SearchSpace {
        flip: Some([0.0, 0.5]),
        erase: Some([0.2, 0.2]),
        ..SearchSpace::default()
    };
    let ops = HpOp::for_hparams(&HyperParams::default(), &HpBounds::of(&flip_only));
    assert!(ops.contains(&HpOp::Flip));
    assert!(!ops.contains(&HpOp::CropPad) && !ops.contains(&HpOp::Erase));
    let (child, description) = mutate_hparams(&HyperParams::default(), &flip_only, &mut rng(1));
    assert_eq!(child.augment.erase, 0.2, "{description}");
    assert!(description.contains("clamp erase 0->0.2"), "{description}");

    let plain = SearchSpace::default();
    let ops = HpOp::for_hparams(&HyperParams::default(), &HpBounds::of(&plain));
    assert_eq!(ops, HpOp::PLAIN.to_vec());
    let augmented_parent = HyperParams {
        augment: Augment {
            crop_pad: 2,
            flip: 0.5,
            erase: 0.3,
        },
        ..HyperParams::default()
    };
    for seed in 0..50 {
        let (child, description, applied) =
            mutate_hparams_traced(&augmented_parent, &plain, &mut rng(seed));
        assert!(child.augment.is_off(), "{description}");
        assert!(description.contains("clamp crop_pad 2->0"), "{description}");
        assert!(
            applied
                .iter()
                .all(|op| !matches!(op, HpOp::CropPad | HpOp::Flip | HpOp::Erase)),
            "{description}"
        );
    }
}

#[test]
fn sampling_draws_augmentation_only_from_its_ranges() {
    let plain = SearchSpace::default();
    let augmented = SearchSpace {
        crop_pad: Some([1, 3]),
        flip: Some([0.0, 0.5]),
        erase: Some([0.25, 0.25]),
        ..SearchSpace::default()
    };
    let mut seen_pads = HashSet::new();
    for seed in 0..100 {
        assert!(sample_hparams(&plain, &mut rng(seed)).augment.is_off());
        let hp = sample_hparams(&augmented, &mut rng(seed));
        hp.validate().unwrap();
        assert!((1..=3).contains(&hp.augment.crop_pad));
        assert!((0.0..=0.5).contains(&hp.augment.flip));
        assert_eq!(hp.augment.erase, 0.25);
        seen_pads.insert(hp.augment.crop_pad);
    }
    assert_eq!(seen_pads.len(), 3);
}
