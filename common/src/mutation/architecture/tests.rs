use std::collections::HashSet;

use super::*;
use crate::mutation::test_support::{check, preset, rng};
use crate::presets;

#[test]
fn every_architecture_operator_applies_somewhere() {
    let space = SearchSpace::default();
    let mut r = rng(1);
    // Every preset puts a batch-norm after each conv; add one that does not.
    let mut genomes: Vec<Genome> = presets::presets().into_iter().map(|(_, g)| g).collect();
    let mut plain = preset("cnn2");
    plain.blocks.retain(|b| !matches!(b, Block::BatchNorm));
    genomes.push(plain);
    for op in ArchOp::ALL {
        let mut applied = 0;
        for g in &genomes {
            for _ in 0..20 {
                let result = apply_arch_op(op, g, &space, &mut r);
                check(g, &result);
                applied += usize::from(result.is_ok());
            }
        }
        assert!(applied > 0, "{op:?} never applied to a preset");
    }
}

#[test]
fn every_architecture_operator_fires_through_mutate_genome() {
    let space = SearchSpace::default();
    let mut r = rng(2);
    let mut fired = HashSet::new();
    for (_, seed) in presets::presets() {
        let mut g = seed.clone();
        for step in 0..300 {
            let (op, result) = mutate_genome_traced(&g, &space, &mut r);
            check(&g, &result);
            if let Ok((child, _)) = result {
                fired.insert(op);
                if space.check_constraints(&child).is_ok() {
                    g = child;
                }
            }
            if step % 20 == 19 {
                g = seed.clone();
            }
        }
    }
    for op in ArchOp::ALL {
        assert!(fired.contains(&op), "{op:?} never fired");
    }
}

#[test]
fn widening_a_stem_refits_the_residual_after_it() {
    let mut g = preset("resnet_small");
    g.blocks[0] = Block::conv3(48);
    assert!(g.validate().is_err());
    let notes = refit_residuals(&mut g, 16).unwrap();
    assert_eq!(notes, vec!["refit blocks[3] residual 32->48".to_string()]);
    g.validate().unwrap();
    let Block::Residual { body } = &g.blocks[3] else {
        panic!()
    };
    assert_eq!(body[0], Block::conv3(48));
    assert_eq!(body[3], Block::conv3(48));
    // The second stage is untouched.
    assert_eq!(refit_residuals(&mut g, 16).unwrap(), Vec::<String>::new());
    // Without the stem the first residual would see the single input channel.
    let mut g = preset("resnet_small");
    g.blocks.drain(0..3);
    let err = refit_residuals(&mut g, 16).unwrap_err();
    assert_eq!(err, "blocks[0] residual would shrink from 32 to 1 channels");
    let err = apply_arch_op(
        ArchOp::RemoveConv,
        &preset("resnet_small"),
        &SearchSpace::default(),
        &mut rng(15),
    );
    if let Err(e) = err {
        assert!(e.to_string().contains("would shrink"), "{e}");
    }
}

#[test]
fn resizing_convs_of_a_resnet_keeps_it_valid() {
    let space = SearchSpace::default();
    let g = preset("resnet_small");
    let mut r = rng(5);
    let mut ok = 0;
    for _ in 0..200 {
        let result = apply_arch_op(ArchOp::ChangeChannels, &g, &space, &mut r);
        check(&g, &result);
        let (_, description) = result.unwrap();
        assert!(description.starts_with("widen ") || description.starts_with("narrow "));
        ok += 1;
    }
    assert_eq!(ok, 200);
}

#[test]
fn removing_a_conv_takes_its_batch_norm_and_activation() {
    let mut blocks = preset("cnn2").blocks;
    let before = blocks.len();
    let text = remove_with_followers(&mut blocks, 4);
    assert_eq!(text, "remove blocks[4] conv(64,3) with batch_norm, relu");
    assert_eq!(blocks.len(), before - 3);
    assert!(matches!(blocks[4], Block::Pool { .. }));
}

#[test]
fn descriptions_name_the_change() {
    let space = SearchSpace::default();
    let g = preset("cnn2");
    let mut r = rng(6);
    let (child, text) = apply_arch_op(ArchOp::ChangeKernel, &g, &space, &mut r).unwrap();
    assert!(
        text.starts_with("kernel blocks[") && text.ends_with(" conv 3->5"),
        "{text}"
    );
    assert_ne!(child, g);
    let (_, text) = apply_arch_op(ArchOp::InsertConv, &g, &space, &mut r).unwrap();
    assert!(
        text.starts_with("insert conv(") && text.contains("+batch_norm+relu at blocks["),
        "{text}"
    );
    let (child, text) = apply_arch_op(ArchOp::ChangeDropout, &g, &space, &mut r).unwrap();
    assert!(
        text.starts_with("dropout blocks[") && text.contains("0.25->"),
        "{text}"
    );
    assert!(child
        .blocks
        .iter()
        .any(|b| matches!(b, Block::Dropout { rate } if DROPOUT_RATES.contains(rate))));
}

#[test]
fn inserted_dense_sits_before_the_head_on_a_small_input() {
    let space = SearchSpace {
        max_blocks: 100,
        ..SearchSpace::default()
    };
    let mut r = rng(7);
    for name in ["cnn2", "cnn3", "mlp", "resnet_small"] {
        let g = preset(name);
        for _ in 0..30 {
            let (child, text) = apply_arch_op(ArchOp::InsertDense, &g, &space, &mut r).unwrap();
            let analysis = child.analyze().unwrap();
            let p: usize = text
                .rsplit("blocks[")
                .next()
                .unwrap()
                .trim_end_matches(']')
                .parse()
                .unwrap();
            let entering = if p == 0 {
                784
            } else {
                analysis.block_outputs[p - 1].numel()
            };
            assert!(entering <= DENSE_INPUT_LIMIT, "{name}: {text}");
            assert!(!child.blocks[p..].iter().any(needs_map), "{name}: {text}");
        }
    }
}

#[test]
fn inapplicable_operators_say_why() {
    let space = SearchSpace::default();
    let mut r = rng(8);
    let mlp = preset("mlp");
    for op in [
        ArchOp::ChangeChannels,
        ArchOp::RemoveConv,
        ArchOp::RemovePool,
        ArchOp::RemoveResidual,
    ] {
        let err = apply_arch_op(op, &mlp, &space, &mut r)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("mutation rejected: "), "{err}");
        assert!(err.contains(op.name()), "{err}");
    }
    let lone = Genome {
        blocks: vec![Block::Dense { units: 64 }],
        ..mlp.clone()
    };
    let err = apply_arch_op(ArchOp::RemoveDense, &lone, &space, &mut r)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no blocks"), "{err}");
}

#[test]
fn invalid_children_carry_the_validation_error() {
    // Pools on a 2x2 map: removing the dense leaves ... no; build a case where the only
    // applicable insertion is invalid: a conv straight after a global pool is never offered,
    // so use a genome whose max_blocks is exceeded instead, and an invalid parent.
    let space = SearchSpace {
        max_blocks: 4,
        ..SearchSpace::default()
    };
    let mut r = rng(9);
    let mlp = preset("mlp");
    let err = apply_arch_op(ArchOp::InsertConv, &mlp, &space, &mut r)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceed search.max_blocks = 4"), "{err}");
    let mut broken = preset("cnn2");
    broken.blocks.push(Block::conv3(8));
    let err = mutate_genome(&broken, &space, &mut r)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("parent genome is invalid") && err.contains("feature map"),
        "{err}"
    );
}

#[test]
fn a_residual_needs_room_on_the_map() {
    // A single-channel map after an input pool is narrower than any allowed conv width.
    let g = Genome {
        blocks: vec![Block::max_pool2(), Block::Dense { units: 64 }],
        ..preset("mlp")
    };
    let err = apply_arch_op(
        ArchOp::InsertResidual,
        &g,
        &SearchSpace::default(),
        &mut rng(10),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("insert residual"), "{err}");
}
