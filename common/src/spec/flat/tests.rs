use super::*;
use crate::genome::{Activation as A, Block as B, Genome, InputShape};
use crate::presets;
use crate::spec::{ExperimentSpec, SearchSpace};

const CHANNELS: &[u32] = &[16, 24, 32, 48, 64, 96];
const DENSE: &[u32] = &[64, 128, 256];

fn genome(blocks: Vec<Block>) -> Genome {
    Genome {
        input: InputShape::MNIST,
        num_classes: 10,
        blocks,
    }
}

fn read(g: &Genome) -> Result<FlatGenome, String> {
    FlatSpace::default().read(g, CHANNELS, DENSE)
}

fn pool() -> Block {
    Block::max_pool2()
}

#[test]
fn the_cnn2_preset_reads_as_two_stages_and_renders_back_exactly() {
    let cnn2 = presets::preset("cnn2").unwrap();
    let flat = read(&cnn2).unwrap();
    assert_eq!(
        flat,
        FlatGenome {
            stages: vec![
                FlatStage {
                    channels: 32,
                    kernel: 3,
                    convs: 1
                },
                FlatStage {
                    channels: 64,
                    kernel: 3,
                    convs: 1
                },
            ],
            batch_norm: true,
            activation: A::Relu,
            dropout: 0.25,
            dense_units: 128,
            dropout_after_dense: true,
        }
    );
    assert_eq!(flat.to_genome(&cnn2), cnn2);
}

#[test]
fn stages_pool_while_the_map_is_at_least_four_wide() {
    let flat = FlatGenome {
        stages: vec![
            FlatStage {
                channels: 16,
                kernel: 3,
                convs: 2,
            };
            3
        ],
        batch_norm: false,
        activation: A::Gelu,
        dropout: 0.0,
        dense_units: 0,
        dropout_after_dense: false,
    };
    let pools = |input: InputShape| {
        flat.blocks(input)
            .iter()
            .filter(|b| matches!(b, Block::Pool { .. }))
            .count()
    };
    // 28 -> 14 -> 7 -> 3: every stage pools; 8 -> 4 -> 2: the third does not.
    assert_eq!(pools(InputShape::MNIST), 3);
    let digits = InputShape {
        channels: 1,
        height: 8,
        width: 8,
    };
    assert_eq!(pools(digits), 2);
    let g = Genome {
        input: digits,
        num_classes: 10,
        blocks: flat.blocks(digits),
    };
    g.validate().unwrap();
    let back = read(&g).unwrap();
    assert_eq!(
        back.blocks(digits),
        g.blocks,
        "the reading renders the same genome"
    );
}

#[test]
fn genomes_outside_the_layout_are_refused_with_the_block_that_leaves_it() {
    let conv = |c, k, s| B::Conv {
        out_channels: c,
        kernel: k,
        stride: s,
    };
    let act = |kind| B::Activation { kind };
    let cases: Vec<(&str, Vec<Block>, &str)> = vec![
        (
            "no conv",
            vec![B::Dense { units: 64 }, act(A::Relu)],
            "blocks[0] is a dense layer",
        ),
        (
            "stride 2",
            vec![conv(32, 3, 2), act(A::Relu), pool()],
            "blocks[0] is a conv, expected a conv of stride 1",
        ),
        (
            "average pool",
            vec![
                conv(32, 3, 1),
                act(A::Relu),
                B::Pool {
                    kind: PoolKind::Avg,
                    size: 2,
                },
            ],
            "blocks[2] is a pool, expected a 2x2 max pool",
        ),
        (
            "two activations",
            vec![
                conv(32, 3, 1),
                act(A::Relu),
                pool(),
                conv(64, 3, 1),
                act(A::Tanh),
                pool(),
            ],
            "blocks[4] is an activation, expected the network's one activation",
        ),
        (
            "batch_norm on one conv of two",
            vec![
                conv(32, 3, 1),
                B::BatchNorm,
                act(A::Relu),
                pool(),
                conv(64, 3, 1),
                act(A::Relu),
                pool(),
            ],
            "batch_norm follows some convs but not all",
        ),
        (
            "two widths in one stage",
            vec![
                conv(32, 3, 1),
                act(A::Relu),
                conv(64, 3, 1),
                act(A::Relu),
                pool(),
            ],
            "blocks[2] is a conv, expected a 2x2 max pool ending the stage",
        ),
        (
            "stacked dense layers",
            vec![
                conv(32, 3, 1),
                act(A::Relu),
                pool(),
                B::Dense { units: 64 },
                act(A::Relu),
                B::Dense { units: 64 },
                act(A::Relu),
            ],
            "blocks[5] is a dense layer, expected the end of the genome",
        ),
        (
            "second dropout of another rate",
            vec![
                conv(32, 3, 1),
                act(A::Relu),
                pool(),
                B::Dropout { rate: 0.2 },
                B::Dense { units: 64 },
                act(A::Relu),
                B::Dropout { rate: 0.3 },
            ],
            "needs the same rate before it",
        ),
        (
            "residual",
            presets::preset("resnet_small").unwrap().blocks,
            "blocks[",
        ),
    ];
    for (name, blocks, expected) in cases {
        let err = read(&genome(blocks)).expect_err(name);
        assert!(err.contains(expected), "{name}: {err}");
    }
}

#[test]
fn values_outside_the_space_are_refused() {
    let conv = |c, k| B::Conv {
        out_channels: c,
        kernel: k,
        stride: 1,
    };
    let relu = || B::relu();
    let stage = |c, k| vec![conv(c, k), relu(), pool()];
    let cases: Vec<(Vec<Block>, &str)> = vec![
        (stage(40, 3), "40 channels, not one of search.channels"),
        (stage(32, 7), "kernel 7, not one of search.flat.kernels"),
        (
            // 28 -> 14 -> 7 -> 3: the fourth stage has no pool.
            [
                stage(32, 3),
                stage(32, 5),
                stage(64, 3),
                vec![conv(64, 5), relu()],
            ]
            .concat(),
            "4 stages, the space has 1..=3",
        ),
        (
            [stage(32, 3), vec![B::Dense { units: 100 }, relu()]].concat(),
            "dense layer of 100 units",
        ),
        (
            [stage(32, 3), vec![B::Dropout { rate: 0.6 }]].concat(),
            "dropout 0.6 is above search.flat.max_dropout = 0.5",
        ),
        (
            vec![
                conv(32, 3),
                relu(),
                conv(32, 3),
                relu(),
                conv(32, 3),
                relu(),
                pool(),
            ],
            "a 2x2 max pool ending the stage",
        ),
        (
            vec![conv(32, 3), B::Activation { kind: A::Tanh }, pool()],
            "activation Tanh is not one of search.flat.activations",
        ),
    ];
    for (blocks, expected) in cases {
        let g = genome(blocks);
        g.validate().unwrap();
        let err = read(&g).expect_err(expected);
        assert!(err.contains(expected), "{expected}: {err}");
    }
}

#[test]
fn bad_keys_are_named() {
    let cases = [
        (
            FlatSpace {
                max_stages: 0,
                ..FlatSpace::default()
            },
            "search.flat.max_stages",
        ),
        (
            FlatSpace {
                convs_per_stage: [2, 1],
                ..FlatSpace::default()
            },
            "search.flat.convs_per_stage",
        ),
        (
            FlatSpace {
                kernels: vec![4],
                ..FlatSpace::default()
            },
            "search.flat.kernels",
        ),
        (
            FlatSpace {
                activations: vec![],
                ..FlatSpace::default()
            },
            "search.flat.activations",
        ),
        (
            FlatSpace {
                max_dropout: 1.0,
                ..FlatSpace::default()
            },
            "search.flat.max_dropout",
        ),
    ];
    for (flat, key) in cases {
        let err = flat.validate().unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    FlatSpace::default().validate().unwrap();
}

const SPEC: &str = r#"
name = "flat"
[budget]
max_trials = 10
[search.flat]
kernels = [3]
"#;

#[test]
fn a_spec_reads_the_section_with_defaults_and_round_trips() {
    let text = format!("{SPEC}\n[[seeds]]\npreset = \"cnn2\"\n");
    let spec = ExperimentSpec::from_toml(&text).unwrap();
    let flat = spec.search.flat.clone().unwrap();
    assert_eq!(
        flat,
        FlatSpace {
            kernels: vec![3],
            ..FlatSpace::default()
        }
    );
    let again = ExperimentSpec::from_toml(&spec.to_toml().unwrap()).unwrap();
    assert_eq!(again, spec);
    assert!(SearchSpace::default().flat.is_none(), "off by default");
}

#[test]
fn a_seed_outside_the_flat_space_is_refused_when_the_spec_is_read() {
    let text = format!("{SPEC}\n[[seeds]]\npreset = \"resnet_small\"\n");
    let err = ExperimentSpec::from_toml(&text).unwrap_err().to_string();
    assert!(err.contains("seeds[0]"), "{err}");
    assert!(
        err.contains("outside the flat space of search.flat"),
        "{err}"
    );
}
