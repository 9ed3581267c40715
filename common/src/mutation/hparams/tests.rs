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
