//! The genome: an image-classifier architecture as a sequence of blocks, with shape inference,
//! parameter and FLOP counts, validation and a canonical hash.
//!
//! A genome describes the body of the network. The builder (in the worker) appends the head: a
//! flatten (if the body ends on a feature map) and a dense layer to `num_classes` logits. Shape
//! inference, counts and validation live here so the master can reject bad children without
//! libtorch.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::GenomeError;

/// Largest number of channels or units a block may have.
pub const MAX_WIDTH: u32 = 4096;
/// Largest convolution kernel.
pub const MAX_KERNEL: u32 = 11;
/// Largest nesting depth of residual blocks.
pub const MAX_RESIDUAL_DEPTH: usize = 3;

/// Non-linearity applied element-wise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Gelu,
    Silu,
    Tanh,
}

/// Pooling flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    Max,
    Avg,
}

/// One layer (or group of layers) of the network body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Block {
    /// 2-D convolution with "same" padding (`kernel / 2`), no bias when followed by batch-norm
    /// is a builder detail; here it always counts a bias.
    Conv {
        out_channels: u32,
        kernel: u32,
        stride: u32,
    },
    /// Batch normalisation over channels (2-D on feature maps, 1-D on vectors).
    BatchNorm,
    /// Element-wise non-linearity.
    Activation { kind: Activation },
    /// Pooling with window = stride = `size`, floor rounding.
    Pool { kind: PoolKind, size: u32 },
    /// Averages each channel over the whole feature map, giving a vector of `channels`.
    GlobalAvgPool,
    /// `x + body(x)`; the body must keep the shape of its input.
    Residual { body: Vec<Block> },
    /// Dropout with the given drop probability (active in training only).
    Dropout { rate: f32 },
    /// Fully connected layer; flattens a feature map first.
    Dense { units: u32 },
}

impl Block {
    /// A 3×3, stride-1 convolution.
    pub fn conv3(out_channels: u32) -> Block {
        Block::Conv {
            out_channels,
            kernel: 3,
            stride: 1,
        }
    }

    /// A ReLU activation.
    pub fn relu() -> Block {
        Block::Activation {
            kind: Activation::Relu,
        }
    }

    /// A 2×2 max-pool.
    pub fn max_pool2() -> Block {
        Block::Pool {
            kind: PoolKind::Max,
            size: 2,
        }
    }
}

/// Shape of an activation flowing through the network (batch dimension omitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shape {
    /// A feature map: channels × height × width.
    Map { c: u32, h: u32, w: u32 },
    /// A flat vector of features.
    Flat { n: u32 },
}

impl Shape {
    /// Number of scalars in one example's activation.
    pub fn numel(&self) -> u64 {
        match *self {
            Shape::Map { c, h, w } => c as u64 * h as u64 * w as u64,
            Shape::Flat { n } => n as u64,
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Map { c, h, w } => write!(f, "{c}x{h}x{w}"),
            Shape::Flat { n } => write!(f, "{n}"),
        }
    }
}

/// Input image geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputShape {
    pub channels: u32,
    pub height: u32,
    pub width: u32,
}

impl InputShape {
    /// Single-channel 28×28 images (MNIST, Fashion-MNIST).
    pub const MNIST: InputShape = InputShape {
        channels: 1,
        height: 28,
        width: 28,
    };
}

/// A complete classifier architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genome {
    pub input: InputShape,
    pub num_classes: u32,
    pub blocks: Vec<Block>,
}

/// Shapes, parameter count and FLOPs of a valid genome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// Output shape of each top-level block, in order.
    pub block_outputs: Vec<Shape>,
    /// Shape entering the classifier head.
    pub features: Shape,
    /// Trainable parameters, head included.
    pub params: u64,
    /// Multiply-accumulates × 2 for one forward pass of one example, head included.
    pub flops: u64,
}

/// Running totals while walking the blocks. The sums saturate: a network too large to count
/// ends at `u64::MAX` and is refused (instead of overflowing).
#[derive(Default)]
struct Counts {
    params: u64,
    flops: u64,
}

impl Counts {
    fn add(&mut self, params: u64, flops: u64) {
        self.params = self.params.saturating_add(params);
        self.flops = self.flops.saturating_add(flops);
    }
}

impl Genome {
    /// Infers every shape and counts parameters and FLOPs; fails with the first block that
    /// does not fit, naming its path (e.g. `blocks[3].body[1]`).
    pub fn analyze(&self) -> Result<Analysis, GenomeError> {
        if self.num_classes < 2 || self.num_classes > 100_000 {
            return Err(GenomeError::Invalid {
                path: "num_classes".into(),
                reason: format!("must be between 2 and 100000, got {}", self.num_classes),
            });
        }
        let InputShape {
            channels,
            height,
            width,
        } = self.input;
        if channels == 0
            || height == 0
            || width == 0
            || channels > 64
            || height > 4096
            || width > 4096
        {
            return Err(GenomeError::Invalid {
                path: "input".into(),
                reason: format!("unsupported input shape {channels}x{height}x{width}"),
            });
        }
        if self.blocks.is_empty() {
            return Err(GenomeError::Invalid {
                path: "blocks".into(),
                reason: "a genome needs at least one block".into(),
            });
        }
        let mut counts = Counts::default();
        let mut shape = Shape::Map {
            c: channels,
            h: height,
            w: width,
        };
        let mut block_outputs = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            shape = infer_block(block, shape, &format!("blocks[{i}]"), 0, &mut counts)?;
            block_outputs.push(shape);
        }
        // Head: (flatten) + dense to num_classes.
        let features = shape.numel();
        counts.add(
            features * self.num_classes as u64 + self.num_classes as u64,
            2 * features * self.num_classes as u64,
        );
        if counts.params == u64::MAX || counts.flops == u64::MAX {
            return Err(GenomeError::Invalid {
                path: "blocks".into(),
                reason:
                    "the network is too large: its parameter or FLOP count does not fit in 64 bits"
                        .into(),
            });
        }
        Ok(Analysis {
            block_outputs,
            features: shape,
            params: counts.params,
            flops: counts.flops,
        })
    }

    /// Checks that the genome is well-formed; see [`Genome::analyze`].
    pub fn validate(&self) -> Result<(), GenomeError> {
        self.analyze().map(|_| ())
    }

    /// Canonical JSON: the same architecture always serialises to the same text.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("genome serialisation cannot fail")
    }

    /// SHA-256 of the canonical JSON, lowercase hex; equal genomes have equal hashes.
    pub fn canonical_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
    }

    /// Parses a genome from JSON and validates it.
    pub fn from_json(text: &str) -> Result<Genome, GenomeError> {
        let genome: Genome =
            serde_json::from_str(text).map_err(|e| GenomeError::Parse(e.to_string()))?;
        genome.validate()?;
        Ok(genome)
    }

    /// The conv and dense layers whose output goes straight into a batch-norm (the next block of
    /// the same sequence is `batch_norm`), by their variable prefix in the worker's model
    /// (`b3`, `b5.r0`; see the worker's `model` module). Batch-norm divides out any scale of
    /// their weight, so the network's output does not change when such a weight is multiplied
    /// by a constant: these are the scale-invariant weights of ELR mode (S3), besides its
    /// cosine head. A layer feeding a residual sum, an activation or the head directly is not
    /// invariant; neither is one behind a dropout before the batch-norm.
    pub fn scale_invariant_weights(&self) -> Vec<String> {
        fn walk(blocks: &[Block], prefix: &str, out: &mut Vec<String>) {
            for (i, block) in blocks.iter().enumerate() {
                let path = if prefix.is_empty() {
                    format!("b{i}")
                } else {
                    format!("{prefix}.r{i}")
                };
                match block {
                    Block::Conv { .. } | Block::Dense { .. }
                        if matches!(blocks.get(i + 1), Some(Block::BatchNorm)) =>
                    {
                        out.push(path)
                    }
                    Block::Residual { body } => walk(body, &path, out),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.blocks, "", &mut out);
        out
    }

    /// Number of blocks, counting those nested inside residual blocks.
    pub fn depth(&self) -> usize {
        fn count(blocks: &[Block]) -> usize {
            blocks
                .iter()
                .map(|b| match b {
                    Block::Residual { body } => 1 + count(body),
                    _ => 1,
                })
                .sum()
        }
        count(&self.blocks)
    }
}

fn invalid(path: &str, reason: impl Into<String>) -> GenomeError {
    GenomeError::Invalid {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn infer_block(
    block: &Block,
    input: Shape,
    path: &str,
    residual_depth: usize,
    counts: &mut Counts,
) -> Result<Shape, GenomeError> {
    match block {
        Block::Conv {
            out_channels,
            kernel,
            stride,
        } => {
            let Shape::Map { c, h, w } = input else {
                return Err(invalid(
                    path,
                    format!("conv needs a feature map, got vector {input}"),
                ));
            };
            if *out_channels == 0 || *out_channels > MAX_WIDTH {
                return Err(invalid(
                    path,
                    format!("out_channels must be 1..={MAX_WIDTH}, got {out_channels}"),
                ));
            }
            if *kernel == 0 || *kernel > MAX_KERNEL || kernel % 2 == 0 {
                return Err(invalid(
                    path,
                    format!("kernel must be odd and 1..={MAX_KERNEL}, got {kernel}"),
                ));
            }
            if *stride == 0 || *stride > 4 {
                return Err(invalid(path, format!("stride must be 1..=4, got {stride}")));
            }
            let pad = kernel / 2;
            let oh = (h + 2 * pad - kernel) / stride + 1;
            let ow = (w + 2 * pad - kernel) / stride + 1;
            let k2 = (*kernel as u64) * (*kernel as u64);
            counts.add(
                k2 * c as u64 * *out_channels as u64 + *out_channels as u64,
                2 * k2 * c as u64 * *out_channels as u64 * oh as u64 * ow as u64,
            );
            Ok(Shape::Map {
                c: *out_channels,
                h: oh,
                w: ow,
            })
        }
        Block::BatchNorm => {
            let channels = match input {
                Shape::Map { c, .. } => c,
                Shape::Flat { n } => n,
            };
            counts.add(2 * channels as u64, 2 * input.numel());
            Ok(input)
        }
        Block::Activation { .. } => {
            counts.add(0, input.numel());
            Ok(input)
        }
        Block::Pool { size, .. } => {
            let Shape::Map { c, h, w } = input else {
                return Err(invalid(
                    path,
                    format!("pool needs a feature map, got vector {input}"),
                ));
            };
            if *size < 2 || *size > 8 {
                return Err(invalid(
                    path,
                    format!("pool size must be 2..=8, got {size}"),
                ));
            }
            if h < *size || w < *size {
                return Err(invalid(
                    path,
                    format!("pool of size {size} does not fit a {h}x{w} map"),
                ));
            }
            counts.add(0, input.numel());
            Ok(Shape::Map {
                c,
                h: h / size,
                w: w / size,
            })
        }
        Block::GlobalAvgPool => {
            let Shape::Map { c, .. } = input else {
                return Err(invalid(
                    path,
                    format!("global_avg_pool needs a feature map, got vector {input}"),
                ));
            };
            counts.add(0, input.numel());
            Ok(Shape::Flat { n: c })
        }
        Block::Residual { body } => {
            if residual_depth >= MAX_RESIDUAL_DEPTH {
                return Err(invalid(
                    path,
                    format!("residual blocks nest at most {MAX_RESIDUAL_DEPTH} deep"),
                ));
            }
            if body.is_empty() {
                return Err(invalid(path, "residual body is empty"));
            }
            let mut shape = input;
            for (i, inner) in body.iter().enumerate() {
                shape = infer_block(
                    inner,
                    shape,
                    &format!("{path}.body[{i}]"),
                    residual_depth + 1,
                    counts,
                )?;
            }
            if shape != input {
                return Err(invalid(
                    path,
                    format!("residual body must keep its input shape {input}, ends with {shape}"),
                ));
            }
            counts.add(0, input.numel());
            Ok(input)
        }
        Block::Dropout { rate } => {
            if !(0.0..0.95).contains(rate) || !rate.is_finite() {
                return Err(invalid(
                    path,
                    format!("dropout rate must be in [0, 0.95), got {rate}"),
                ));
            }
            Ok(input)
        }
        Block::Dense { units } => {
            if *units == 0 || *units > MAX_WIDTH {
                return Err(invalid(
                    path,
                    format!("units must be 1..={MAX_WIDTH}, got {units}"),
                ));
            }
            let n = input.numel();
            if n > 1 << 22 {
                return Err(invalid(
                    path,
                    format!("dense input of {n} features is too large"),
                ));
            }
            counts.add(n * *units as u64 + *units as u64, 2 * n * *units as u64);
            Ok(Shape::Flat { n: *units })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(out_channels: u32, kernel: u32) -> Block {
        Block::Conv {
            out_channels,
            kernel,
            stride: 1,
        }
    }

    #[test]
    fn scale_invariant_weights_are_those_feeding_a_batch_norm() {
        let resnet = crate::presets::preset("resnet_small").unwrap();
        assert_eq!(
            resnet.scale_invariant_weights(),
            ["b0", "b3.r0", "b3.r3", "b6", "b9.r0", "b9.r3"]
        );
        let cnn2 = crate::presets::preset("cnn2").unwrap();
        // the dense layer feeds a relu, not a batch-norm
        assert_eq!(cnn2.scale_invariant_weights(), ["b0", "b4"]);
        assert!(crate::presets::preset("mlp")
            .unwrap()
            .scale_invariant_weights()
            .is_empty());
        let behind_dropout = Genome {
            input: InputShape::MNIST,
            num_classes: 10,
            blocks: vec![conv(8, 3), Block::Dropout { rate: 0.1 }, Block::BatchNorm],
        };
        assert!(behind_dropout.scale_invariant_weights().is_empty());
    }

    fn small_cnn() -> Genome {
        Genome {
            input: InputShape::MNIST,
            num_classes: 10,
            blocks: vec![
                conv(32, 3),
                Block::Activation {
                    kind: Activation::Relu,
                },
                Block::Pool {
                    kind: PoolKind::Max,
                    size: 2,
                },
                Block::Dense { units: 64 },
            ],
        }
    }

    #[test]
    fn shapes_params_and_flops_of_a_small_cnn() {
        let a = small_cnn().analyze().unwrap();
        assert_eq!(
            a.block_outputs[0],
            Shape::Map {
                c: 32,
                h: 28,
                w: 28
            }
        );
        assert_eq!(
            a.block_outputs[2],
            Shape::Map {
                c: 32,
                h: 14,
                w: 14
            }
        );
        assert_eq!(a.features, Shape::Flat { n: 64 });
        let conv_params = 9 * 32 + 32;
        let dense_params = 32 * 14 * 14 * 64 + 64;
        let head_params = 64 * 10 + 10;
        assert_eq!(a.params, (conv_params + dense_params + head_params) as u64);
        let conv_flops = 2 * 9 * 32 * 28 * 28;
        let relu_flops = 32 * 28 * 28;
        let pool_flops = 32 * 28 * 28;
        let dense_flops = 2 * 32 * 14 * 14 * 64;
        let head_flops = 2 * 64 * 10;
        assert_eq!(
            a.flops,
            (conv_flops + relu_flops + pool_flops + dense_flops + head_flops) as u64
        );
    }

    #[test]
    fn strided_conv_rounds_down_like_torch() {
        let g = Genome {
            input: InputShape::MNIST,
            num_classes: 10,
            blocks: vec![Block::Conv {
                out_channels: 8,
                kernel: 3,
                stride: 2,
            }],
        };
        // torch: floor((28 + 2 - 3) / 2) + 1 = 14
        assert_eq!(
            g.analyze().unwrap().features,
            Shape::Map { c: 8, h: 14, w: 14 }
        );
    }

    #[test]
    fn residual_that_changes_shape_is_rejected_with_its_path() {
        let mut g = small_cnn();
        g.blocks.insert(
            1,
            Block::Residual {
                body: vec![conv(16, 3)],
            },
        );
        let err = g.validate().unwrap_err().to_string();
        assert!(err.contains("blocks[1]"), "{err}");
        assert!(err.contains("keep its input shape"), "{err}");
    }

    #[test]
    fn conv_after_dense_is_rejected() {
        let mut g = small_cnn();
        g.blocks.push(conv(8, 3));
        let err = g.validate().unwrap_err().to_string();
        assert!(
            err.contains("blocks[4]") && err.contains("feature map"),
            "{err}"
        );
    }

    #[test]
    fn pool_larger_than_map_is_rejected() {
        let mut g = small_cnn();
        g.blocks.truncate(3);
        for _ in 0..4 {
            g.blocks.push(Block::Pool {
                kind: PoolKind::Avg,
                size: 2,
            });
        }
        // 14 -> 7 -> 3 -> 1 -> does not fit
        let err = g.validate().unwrap_err().to_string();
        assert!(
            err.contains("blocks[6]") && err.contains("does not fit"),
            "{err}"
        );
    }

    #[test]
    fn canonical_hash_is_stable_and_distinguishes_genomes() {
        let a = small_cnn();
        let b = Genome::from_json(&a.canonical_json()).unwrap();
        assert_eq!(a.canonical_hash(), b.canonical_hash());
        let mut c = small_cnn();
        c.blocks[0] = conv(33, 3);
        assert_ne!(a.canonical_hash(), c.canonical_hash());
    }

    #[test]
    fn unknown_json_fields_are_refused() {
        let err = Genome::from_json(
            r#"{"input":{"channels":1,"height":28,"width":28},"num_classes":10,
                "blocks":[{"type":"dense","units":8,"bias":false}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bias"), "{err}");
    }
}
