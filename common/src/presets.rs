//! Named starting architectures for 28×28 single-channel images, usable as `preset = "..."` in a
//! spec's `[[seeds]]`.

use crate::genome::{Block, Genome, InputShape};

/// Every preset name, in the order `presets` lists them.
pub const NAMES: &[&str] = &["cnn2", "cnn3", "mlp", "resnet_small"];

use Block as B;

fn conv(out_channels: u32) -> Block {
    B::conv3(out_channels)
}

fn relu() -> Block {
    B::relu()
}

fn max_pool() -> Block {
    B::max_pool2()
}

fn genome(blocks: Vec<Block>) -> Genome {
    Genome {
        input: InputShape::MNIST,
        num_classes: 10,
        blocks,
    }
}

/// The architecture called `name`, or `None` when there is no such preset.
pub fn preset(name: &str) -> Option<Genome> {
    let blocks = match name {
        // The classic two-convolution CNN with batch-norm.
        "cnn2" => vec![
            conv(32),
            Block::BatchNorm,
            relu(),
            max_pool(),
            conv(64),
            Block::BatchNorm,
            relu(),
            max_pool(),
            Block::Dropout { rate: 0.25 },
            Block::Dense { units: 128 },
            relu(),
            Block::Dropout { rate: 0.25 },
        ],
        // Three convolutions, global pooling, a small head.
        "cnn3" => vec![
            conv(32),
            Block::BatchNorm,
            relu(),
            max_pool(),
            conv(64),
            Block::BatchNorm,
            relu(),
            max_pool(),
            conv(96),
            Block::BatchNorm,
            relu(),
            Block::Dropout { rate: 0.2 },
            Block::Dense { units: 128 },
            relu(),
        ],
        // A multi-layer perceptron: the floor any CNN should beat.
        "mlp" => vec![
            Block::Dense { units: 256 },
            relu(),
            Block::Dropout { rate: 0.2 },
            Block::Dense { units: 128 },
            relu(),
        ],
        // A stem and two residual stages.
        "resnet_small" => vec![
            conv(32),
            Block::BatchNorm,
            relu(),
            Block::Residual {
                body: vec![
                    conv(32),
                    Block::BatchNorm,
                    relu(),
                    conv(32),
                    Block::BatchNorm,
                ],
            },
            relu(),
            max_pool(),
            conv(64),
            Block::BatchNorm,
            relu(),
            Block::Residual {
                body: vec![
                    conv(64),
                    Block::BatchNorm,
                    relu(),
                    conv(64),
                    Block::BatchNorm,
                ],
            },
            relu(),
            max_pool(),
            Block::GlobalAvgPool,
        ],
        _ => return None,
    };
    Some(genome(blocks))
}

/// All presets with their names.
pub fn presets() -> Vec<(&'static str, Genome)> {
    NAMES
        .iter()
        .map(|n| (*n, preset(n).expect("every listed preset exists")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid() {
        for (name, g) in presets() {
            let a = g.analyze().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(a.params > 1000, "{name} has {} params", a.params);
        }
        assert!(preset("nope").is_none());
    }
}
