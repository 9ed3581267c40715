//! The `[search.flat]` section of a spec: restricts the architectures the search may reach to a
//! flat, stage-indexed space (the kind a random search or TPE samples), so that a run can
//! separate what architecture freedom buys from what the search method buys.
//!
//! ```toml
//! [search.flat]
//! max_stages = 3                           # 1..=3 conv stages
//! convs_per_stage = [1, 2]                 # each of 1 or 2 convs
//! kernels = [3, 5]                         # one kernel per stage
//! activations = ["relu", "gelu", "silu"]   # one activation for the whole network
//! max_dropout = 0.5                        # one dropout rate for the head
//! ```
//!
//! A genome is in the flat space when it reads as [`FlatGenome`]: stages of
//! `(conv [+ batch_norm] + activation) × convs`, all convs of a stage with one width (from
//! `search.channels`) and one kernel, each stage followed by a 2×2 max pool while the feature
//! map is at least 4 pixels on its shorter side; batch-norm on every conv or on none; one
//! activation everywhere; then an optional dropout, an optional dense layer (from
//! `search.dense_units`) with the activation, and an optional second dropout of the same rate
//! after it. Anything else (residual blocks, average pooling, strides, stacked dense layers, a
//! stage without its pool) is outside the space.

use serde::{Deserialize, Serialize};

use crate::error::CommonError;
use crate::genome::{Activation, Block, Genome, InputShape, PoolKind, MAX_KERNEL};

/// The flat architecture space (`[search.flat]`); its presence switches the search's
/// architecture mutations from per-block edits to moves of [`FlatGenome`]'s parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlatSpace {
    /// Most conv stages (at least 1).
    pub max_stages: u32,
    /// Inclusive range of convs per stage.
    pub convs_per_stage: [u32; 2],
    /// Kernel sizes a stage may use (odd).
    pub kernels: Vec<u32>,
    /// Activations the network may use (one for all its layers).
    pub activations: Vec<Activation>,
    /// Largest dropout rate of the head (0 = no dropout).
    pub max_dropout: f32,
}

impl Default for FlatSpace {
    fn default() -> Self {
        FlatSpace {
            max_stages: 3,
            convs_per_stage: [1, 2],
            kernels: vec![3, 5],
            activations: vec![Activation::Relu, Activation::Gelu, Activation::Silu],
            max_dropout: 0.5,
        }
    }
}

/// One conv stage of a [`FlatGenome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlatStage {
    /// Output channels of each conv of the stage.
    pub channels: u32,
    /// Kernel of each conv of the stage.
    pub kernel: u32,
    /// Number of convs.
    pub convs: u32,
}

/// A genome of the flat space, in the space's own parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatGenome {
    /// The conv stages, input first (at least one).
    pub stages: Vec<FlatStage>,
    /// Whether every conv is followed by batch-norm.
    pub batch_norm: bool,
    /// The activation of every layer.
    pub activation: Activation,
    /// Dropout rate of the head; 0 = no dropout block.
    pub dropout: f32,
    /// Units of the dense layer; 0 = no dense layer.
    pub dense_units: u32,
    /// Whether a second dropout follows the dense layer (only with a dense layer and a
    /// dropout; false otherwise, so equal architectures compare equal).
    pub dropout_after_dense: bool,
}

/// Pools follow a stage while the shorter side of its feature map is at least this.
const POOL_FROM: u32 = 4;

impl FlatGenome {
    /// The genome's blocks, in the layout the module documents.
    pub fn blocks(&self, input: InputShape) -> Vec<Block> {
        let act = Block::Activation {
            kind: self.activation,
        };
        let mut side = input.height.min(input.width);
        let mut blocks = Vec::new();
        for stage in &self.stages {
            for _ in 0..stage.convs {
                blocks.push(Block::Conv {
                    out_channels: stage.channels,
                    kernel: stage.kernel,
                    stride: 1,
                });
                if self.batch_norm {
                    blocks.push(Block::BatchNorm);
                }
                blocks.push(act.clone());
            }
            if side >= POOL_FROM {
                blocks.push(Block::Pool {
                    kind: PoolKind::Max,
                    size: 2,
                });
                side /= 2;
            }
        }
        if self.dropout > 0.0 {
            blocks.push(Block::Dropout { rate: self.dropout });
        }
        if self.dense_units > 0 {
            blocks.push(Block::Dense {
                units: self.dense_units,
            });
            blocks.push(act);
            if self.dropout_after_dense && self.dropout > 0.0 {
                blocks.push(Block::Dropout { rate: self.dropout });
            }
        }
        blocks
    }

    /// The genome with `input` and `num_classes` of `like` and this architecture.
    pub fn to_genome(&self, like: &Genome) -> Genome {
        Genome {
            input: like.input,
            num_classes: like.num_classes,
            blocks: self.blocks(like.input),
        }
    }
}

impl FlatSpace {
    /// Checks every value; the error names the key under `search.flat.`.
    pub fn validate(&self) -> Result<(), CommonError> {
        let key = |k: &str, reason: String| {
            Err(CommonError::SpecKey {
                key: format!("search.flat.{k}"),
                reason,
            })
        };
        if !(1..=16).contains(&self.max_stages) {
            return key(
                "max_stages",
                format!("must be 1..=16, got {}", self.max_stages),
            );
        }
        let [c0, c1] = self.convs_per_stage;
        if c0 == 0 || c0 > c1 || c1 > 8 {
            return key(
                "convs_per_stage",
                format!("must be [low, high] with 1 <= low <= high <= 8, got [{c0}, {c1}]"),
            );
        }
        if self.kernels.is_empty()
            || self
                .kernels
                .iter()
                .any(|&k| k == 0 || k % 2 == 0 || k > MAX_KERNEL)
        {
            return key(
                "kernels",
                format!("must be a non-empty list of odd sizes in 1..={MAX_KERNEL}"),
            );
        }
        if self.activations.is_empty() {
            return key("activations", "must not be empty".into());
        }
        if !(self.max_dropout.is_finite() && (0.0..1.0).contains(&self.max_dropout)) {
            return key(
                "max_dropout",
                format!("must be in [0, 1), got {}", self.max_dropout),
            );
        }
        Ok(())
    }

    /// `genome` read as a [`FlatGenome`] of this space, whose widths come from `channels` and
    /// `dense_units`; the error says which block or value leaves the space.
    pub fn read(
        &self,
        genome: &Genome,
        channels: &[u32],
        dense_units: &[u32],
    ) -> Result<FlatGenome, String> {
        let flat = parse(genome, self.convs_per_stage[1])?;
        self.admits(&flat, channels, dense_units)?;
        Ok(flat)
    }

    /// Whether every parameter of `flat` is a value of this space.
    pub fn admits(
        &self,
        flat: &FlatGenome,
        channels: &[u32],
        dense_units: &[u32],
    ) -> Result<(), String> {
        if flat.stages.is_empty() || flat.stages.len() > self.max_stages as usize {
            return Err(format!(
                "{} stages, the space has 1..={}",
                flat.stages.len(),
                self.max_stages
            ));
        }
        let [c0, c1] = self.convs_per_stage;
        for (i, s) in flat.stages.iter().enumerate() {
            if !(c0..=c1).contains(&s.convs) {
                return Err(format!(
                    "stage {i} has {} convs, the space has {c0}..={c1}",
                    s.convs
                ));
            }
            if !channels.contains(&s.channels) {
                return Err(format!(
                    "stage {i} has {} channels, not one of search.channels",
                    s.channels
                ));
            }
            if !self.kernels.contains(&s.kernel) {
                return Err(format!(
                    "stage {i} has kernel {}, not one of search.flat.kernels",
                    s.kernel
                ));
            }
        }
        if !self.activations.contains(&flat.activation) {
            return Err(format!(
                "activation {:?} is not one of search.flat.activations",
                flat.activation
            ));
        }
        if !(0.0..=self.max_dropout).contains(&flat.dropout) {
            return Err(format!(
                "dropout {} is above search.flat.max_dropout = {}",
                flat.dropout, self.max_dropout
            ));
        }
        if flat.dense_units > 0 && !dense_units.contains(&flat.dense_units) {
            return Err(format!(
                "dense layer of {} units, not one of search.dense_units",
                flat.dense_units
            ));
        }
        Ok(())
    }
}

/// Reads the structure of a flat genome (values unchecked), stages holding at most
/// `max_convs` convs; the error names the first block that does not fit the layout.
fn parse(genome: &Genome, max_convs: u32) -> Result<FlatGenome, String> {
    let blocks = &genome.blocks;
    let at = |i: usize, what: &str| match blocks.get(i) {
        Some(b) => format!("blocks[{i}] is {}, expected {what}", kind_of(b)),
        None => format!("the genome ends at blocks[{i}], expected {what}"),
    };
    let mut i = 0;
    let mut side = genome.input.height.min(genome.input.width);
    let mut stages: Vec<FlatStage> = Vec::new();
    let mut batch_norm = None;
    let mut activation = None;
    while let Some(&Block::Conv {
        out_channels,
        kernel,
        stride,
    }) = blocks.get(i)
    {
        let mut convs = 0;
        while convs < max_convs
            && blocks.get(i)
                == Some(&Block::Conv {
                    out_channels,
                    kernel,
                    stride,
                })
        {
            if stride != 1 {
                return Err(at(i, "a conv of stride 1"));
            }
            i += 1;
            let has_bn = blocks.get(i) == Some(&Block::BatchNorm);
            if *batch_norm.get_or_insert(has_bn) != has_bn {
                return Err(format!(
                    "blocks[{i}]: batch_norm follows some convs but not all"
                ));
            }
            i += usize::from(has_bn);
            match blocks.get(i) {
                Some(Block::Activation { kind }) if *activation.get_or_insert(*kind) == *kind => {}
                _ => return Err(at(i, "the network's one activation")),
            }
            i += 1;
            convs += 1;
        }
        if side >= POOL_FROM {
            if blocks.get(i)
                != Some(&Block::Pool {
                    kind: PoolKind::Max,
                    size: 2,
                })
            {
                return Err(at(i, "a 2x2 max pool ending the stage"));
            }
            i += 1;
            side /= 2;
        }
        stages.push(FlatStage {
            channels: out_channels,
            kernel,
            convs,
        });
    }
    let (Some(batch_norm), Some(activation)) = (batch_norm, activation) else {
        return Err(at(0, "a conv stage"));
    };
    let mut dropout = 0.0;
    if let Some(&Block::Dropout { rate }) = blocks.get(i) {
        dropout = rate;
        i += 1;
    }
    let mut dense_units = 0;
    let mut dropout_after_dense = false;
    if let Some(&Block::Dense { units }) = blocks.get(i) {
        dense_units = units;
        i += 1;
        if blocks.get(i) != Some(&Block::Activation { kind: activation }) {
            return Err(at(i, "the network's one activation after the dense layer"));
        }
        i += 1;
        if let Some(&Block::Dropout { rate }) = blocks.get(i) {
            if dropout == 0.0 || rate != dropout {
                return Err(format!(
                    "blocks[{i}]: a dropout after the dense layer needs the same rate before it"
                ));
            }
            dropout_after_dense = true;
            i += 1;
        }
    }
    if i < blocks.len() {
        return Err(at(i, "the end of the genome"));
    }
    Ok(FlatGenome {
        stages,
        batch_norm,
        activation,
        dropout,
        dense_units,
        dropout_after_dense,
    })
}

/// A block's kind in words, for error messages.
fn kind_of(block: &Block) -> &'static str {
    match block {
        Block::Conv { .. } => "a conv",
        Block::BatchNorm => "a batch_norm",
        Block::Activation { .. } => "an activation",
        Block::Pool { .. } => "a pool",
        Block::GlobalAvgPool => "a global_avg_pool",
        Block::Residual { .. } => "a residual",
        Block::Dropout { .. } => "a dropout",
        Block::Dense { .. } => "a dense layer",
    }
}

#[cfg(test)]
mod tests;
