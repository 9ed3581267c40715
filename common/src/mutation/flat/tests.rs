use std::collections::HashSet;

use super::*;
use crate::genome::Block;
use crate::hparams::HyperParams;
use crate::mutation::propose;
use crate::mutation::test_support::{check, preset, rng};

/// The search benchmark's space: its channels and dense units, three stages at most.
fn space() -> SearchSpace {
    SearchSpace {
        channels: vec![16, 24, 32, 48, 64, 96],
        dense_units: vec![64, 128, 256],
        max_params: 1_000_000,
        max_flops: 30_000_000,
        max_blocks: 20,
        flat: Some(FlatSpace::default()),
        ..SearchSpace::default()
    }
}

fn flat_of(space: &SearchSpace) -> &FlatSpace {
    space.flat.as_ref().unwrap()
}

#[test]
fn a_random_walk_stays_in_the_flat_space_and_uses_every_move() {
    let space = space();
    let flat = flat_of(&space);
    let mut parent = preset("cnn2");
    let mut r = rng(11);
    let mut seen = HashSet::new();
    for _ in 0..3000 {
        let mut dyn_rng = &mut r;
        let result = flat.mutate(&parent, &space, &mut dyn_rng);
        check(&parent, &result);
        let Ok((child, description)) = result else {
            continue;
        };
        let reading = flat
            .read(&child, &space.channels, &space.dense_units)
            .unwrap_or_else(|e| panic!("{description}: left the flat space: {e}"));
        assert_eq!(reading.to_genome(&child), child, "{description}");
        seen.insert(move_of(&description));
        if space.check_constraints(&child).is_ok() {
            parent = child;
        }
    }
    assert_eq!(seen.len(), FlatMove::ALL.len(), "moves seen: {seen:?}");
}

/// The move a description tells of.
fn move_of(description: &str) -> FlatMove {
    let words: Vec<&str> = description.split(' ').collect();
    match words[1..] {
        ["stage", _, "channels", ..] => FlatMove::StageChannels,
        ["stage", _, "kernel", ..] => FlatMove::StageKernel,
        ["stage", _, "convs", ..] => FlatMove::StageConvs,
        ["add", "stage", ..] => FlatMove::AddStage,
        ["remove", "stage", ..] => FlatMove::RemoveStage,
        ["batch_norm", ..] => FlatMove::BatchNorm,
        ["activation", ..] => FlatMove::Activation,
        ["dropout", "after", ..] => FlatMove::DropoutAfterDense,
        ["dropout", ..] => FlatMove::Dropout,
        ["dense", "units", ..] => FlatMove::DenseUnits,
        _ => panic!("unknown description {description}"),
    }
}

#[test]
fn switching_batch_norm_switches_it_on_every_conv_and_changes_nothing_else() {
    let space = space();
    let cnn2 = preset("cnn2");
    let mut flat = flat_of(&space)
        .read(&cnn2, &space.channels, &space.dense_units)
        .unwrap();
    let description = apply(
        FlatMove::BatchNorm,
        &mut flat,
        flat_of(&space),
        &space,
        &mut rng(1),
    )
    .unwrap();
    assert_eq!(description, "batch_norm off");
    let child = flat.to_genome(&cnn2);
    let without: Vec<Block> = cnn2
        .blocks
        .iter()
        .filter(|b| **b != Block::BatchNorm)
        .cloned()
        .collect();
    assert_eq!(child.blocks, without);
}

#[test]
fn changing_the_activation_changes_every_layer_of_it() {
    let space = space();
    let cnn2 = preset("cnn2");
    let mut flat = flat_of(&space)
        .read(&cnn2, &space.channels, &space.dense_units)
        .unwrap();
    apply(
        FlatMove::Activation,
        &mut flat,
        flat_of(&space),
        &space,
        &mut rng(2),
    )
    .unwrap();
    let child = flat.to_genome(&cnn2);
    let kinds: HashSet<_> = child
        .blocks
        .iter()
        .filter_map(|b| match b {
            Block::Activation { kind } => Some(*kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds.len(), 1, "{kinds:?}");
    assert!(!kinds.contains(&crate::genome::Activation::Relu));
}

#[test]
fn removing_the_dense_layer_drops_the_dropout_after_it() {
    let space = space();
    let cnn2 = preset("cnn2");
    let flat_space = flat_of(&space);
    for seed in 0..400 {
        let mut r = rng(seed);
        let mut dyn_rng = &mut r;
        let Ok((child, description)) = flat_space.mutate(&cnn2, &space, &mut dyn_rng) else {
            continue;
        };
        if description == "flat: dense units 128->0" {
            let reading = flat_space
                .read(&child, &space.channels, &space.dense_units)
                .unwrap();
            assert!(!reading.dropout_after_dense);
            assert_eq!(
                child
                    .blocks
                    .iter()
                    .filter(|b| matches!(b, Block::Dropout { .. }))
                    .count(),
                1,
                "one dropout, before the (gone) dense layer"
            );
            return;
        }
    }
    panic!("no seed in 0..400 removed the dense layer");
}

#[test]
fn the_fourth_stage_and_the_last_stage_are_refused() {
    let space = space();
    let one = crate::genome::Genome {
        blocks: vec![Block::conv3(32), Block::relu(), Block::max_pool2()],
        ..preset("cnn2")
    };
    let mut flat = flat_of(&space)
        .read(&one, &space.channels, &space.dense_units)
        .unwrap();
    let err = apply(
        FlatMove::RemoveStage,
        &mut flat,
        flat_of(&space),
        &space,
        &mut rng(3),
    );
    assert_eq!(err, Err("the only stage".to_string()));
    for _ in 0..2 {
        apply(
            FlatMove::AddStage,
            &mut flat,
            flat_of(&space),
            &space,
            &mut rng(4),
        )
        .unwrap();
    }
    assert_eq!(flat.stages.len(), 3);
    let err = apply(
        FlatMove::AddStage,
        &mut flat,
        flat_of(&space),
        &space,
        &mut rng(5),
    );
    assert!(err.unwrap_err().contains("max_stages = 3"));
}

#[test]
fn a_parent_outside_the_flat_space_is_a_rejection_with_the_reason() {
    let space = space();
    let mut dyn_rng = &mut rng(6);
    let err = flat_of(&space)
        .mutate(&preset("resnet_small"), &space, &mut dyn_rng)
        .unwrap_err()
        .to_string();
    assert!(err.contains("parent is outside the flat space"), "{err}");
}

#[test]
fn proposals_of_a_flat_spec_stay_in_it_and_replay_from_a_seed() {
    let space = space();
    let cnn2 = preset("cnn2");
    let hp = HyperParams::default();
    let mut architecture_changes = 0;
    for seed in 0..200 {
        let p = propose(&cnn2, &hp, &space, &mut rng(seed)).unwrap();
        space
            .check_constraints(&p.genome)
            .unwrap_or_else(|e| panic!("{}: {e}", p.description));
        if p.genome != cnn2 {
            architecture_changes += 1;
            assert!(p.description.starts_with("flat: "), "{}", p.description);
        }
        let again = propose(&cnn2, &hp, &space, &mut rng(seed)).unwrap();
        assert_eq!(again, p);
    }
    assert!(architecture_changes > 60, "{architecture_changes}");
}

#[test]
fn without_the_section_the_block_moves_are_used() {
    let space = SearchSpace::default();
    assert!(space.flat.is_none());
    let mut changed_blocks = false;
    for seed in 0..50 {
        let p = propose(
            &preset("cnn2"),
            &HyperParams::default(),
            &space,
            &mut rng(seed),
        )
        .unwrap();
        assert!(!p.description.starts_with("flat: "), "{}", p.description);
        changed_blocks |= p.description.contains("blocks[");
    }
    assert!(changed_blocks);
}
