//! Tests of `propose` and of the public API as a whole.

use super::test_support::{check, preset, rng};
use super::*;
use crate::hparams::{Optimizer, Schedule};
use crate::presets;

#[test]
fn both_kinds_of_proposal_happen() {
    let space = SearchSpace::default();
    let g = preset("cnn2");
    let hp = HyperParams::default();
    let mut r = rng(4);
    let (mut arch, mut hp_only, mut both) = (0, 0, 0);
    for _ in 0..300 {
        let p = propose(&g, &hp, &space, &mut r).unwrap();
        match (p.genome != g, p.hparams != hp) {
            (true, false) => arch += 1,
            (false, true) => hp_only += 1,
            (true, true) => both += 1,
            (false, false) => panic!("child equals parent: {}", p.description),
        }
    }
    assert!(
        arch > 0 && hp_only > 0 && both > 0,
        "{arch} {hp_only} {both}"
    );
    // Roughly 0.6 architecture, of which roughly 0.3 also change the hyperparameters.
    assert!((arch + both) > 120 && (arch + both) < 240, "{arch} {both}");
}

#[test]
fn propose_fails_when_nothing_can_change() {
    let space = SearchSpace {
        architecture_mutation_probability: 0.0,
        learning_rate: [1e-3, 1e-3],
        batch_sizes: vec![64],
        epochs: [2, 2],
        optimizers: vec![Optimizer::Adam],
        schedules: vec![Schedule::Constant],
        weight_decay: [0.0, 0.0],
        ..SearchSpace::default()
    };
    let hp = HyperParams {
        optimizer: Optimizer::Adam,
        learning_rate: 1e-3,
        schedule: Schedule::Constant,
        batch_size: 64,
        weight_decay: 0.0,
        epochs: 2,
        objective: Default::default(),
        head_only: false,
        augment: Default::default(),
    };
    let err = propose(&preset("cnn2"), &hp, &space, &mut rng(11))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no hyperparameter change"), "{err}");
    // A parent outside that space is moved into it, which is a change.
    let p = propose(
        &preset("cnn2"),
        &HyperParams::default(),
        &space,
        &mut rng(11),
    )
    .unwrap();
    assert_eq!(p.hparams, hp);
    assert!(
        p.description.contains("clamp epochs 3->2"),
        "{}",
        p.description
    );
}

#[test]
fn propose_reports_the_last_reason_after_its_attempts() {
    let space = SearchSpace {
        architecture_mutation_probability: 1.0,
        max_params: 1,
        ..SearchSpace::default()
    };
    let err = propose(
        &preset("cnn2"),
        &HyperParams::default(),
        &space,
        &mut rng(12),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("32 attempts") && err.contains("last: "),
        "{err}"
    );
    let space = SearchSpace {
        architecture_mutation_probability: 0.0,
        ..space
    };
    let err = propose(
        &preset("cnn2"),
        &HyperParams::default(),
        &space,
        &mut rng(12),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("parent breaks the search constraints") && err.contains("max_params"),
        "{err}"
    );
}

#[test]
fn unvalidated_spaces_do_not_panic() {
    let space = SearchSpace {
        channels: vec![],
        dense_units: vec![],
        learning_rate: [f64::NAN, -1.0],
        batch_sizes: vec![0],
        epochs: [0, 0],
        optimizers: vec![],
        schedules: vec![],
        weight_decay: [2.0, 1.0],
        architecture_mutation_probability: f64::NAN,
        ..SearchSpace::default()
    };
    let mut r = rng(14);
    for _ in 0..200 {
        sample_hparams(&space, &mut r).validate().unwrap();
        let (hp, _) = mutate_hparams(&HyperParams::default(), &space, &mut r);
        hp.validate().unwrap();
        for (_, g) in presets::presets() {
            check(&g, &mutate_genome(&g, &space, &mut r));
        }
        if let Ok(p) = propose(&preset("cnn3"), &HyperParams::default(), &space, &mut r) {
            p.hparams.validate().unwrap();
        }
    }
}
