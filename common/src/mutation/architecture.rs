//! Architecture operators: one random change to the top-level blocks of a genome, with
//! residual bodies refitted when the channels entering them change.

use rand::seq::SliceRandom;
use rand::Rng;

use super::pick_other;
use crate::error::CommonError;
use crate::genome::{Activation, Block, Genome, PoolKind, Shape};
use crate::spec::SearchSpace;

#[cfg(test)]
mod tests;

/// Drop probabilities a mutated dropout block may take.
pub const DROPOUT_RATES: [f32; 5] = [0.1, 0.2, 0.3, 0.4, 0.5];

/// A dense block is only inserted where its input has at most this many features.
const DENSE_INPUT_LIMIT: u64 = 16_384;

/// Applies ONE random architecture mutation, chosen uniformly among the operators.
///
/// Returns the child (which passes `validate()` and differs from the parent) with a description,
/// or `Err(CommonError::Mutation(reason))` when the chosen operator does not apply, would grow the
/// genome beyond `space.max_blocks`, or produces an invalid genome (the reason then contains the
/// validation error). Never panics, never returns an invalid genome.
pub fn mutate_genome<R: Rng + ?Sized>(
    genome: &Genome,
    space: &SearchSpace,
    rng: &mut R,
) -> Result<(Genome, String), CommonError> {
    mutate_genome_traced(genome, space, rng).1
}

/// One kind of architecture change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ArchOp {
    ChangeChannels,
    ChangeKernel,
    InsertConv,
    RemoveConv,
    InsertPool,
    RemovePool,
    ChangeActivation,
    InsertBatchNorm,
    RemoveBatchNorm,
    InsertDropout,
    RemoveDropout,
    ChangeDropout,
    ChangeDenseUnits,
    InsertDense,
    RemoveDense,
    InsertResidual,
    RemoveResidual,
}

impl ArchOp {
    const ALL: [ArchOp; 17] = [
        ArchOp::ChangeChannels,
        ArchOp::ChangeKernel,
        ArchOp::InsertConv,
        ArchOp::RemoveConv,
        ArchOp::InsertPool,
        ArchOp::RemovePool,
        ArchOp::ChangeActivation,
        ArchOp::InsertBatchNorm,
        ArchOp::RemoveBatchNorm,
        ArchOp::InsertDropout,
        ArchOp::RemoveDropout,
        ArchOp::ChangeDropout,
        ArchOp::ChangeDenseUnits,
        ArchOp::InsertDense,
        ArchOp::RemoveDense,
        ArchOp::InsertResidual,
        ArchOp::RemoveResidual,
    ];

    fn name(self) -> &'static str {
        match self {
            ArchOp::ChangeChannels => "change channels",
            ArchOp::ChangeKernel => "change kernel",
            ArchOp::InsertConv => "insert conv",
            ArchOp::RemoveConv => "remove conv",
            ArchOp::InsertPool => "insert pool",
            ArchOp::RemovePool => "remove pool",
            ArchOp::ChangeActivation => "change activation",
            ArchOp::InsertBatchNorm => "insert batch_norm",
            ArchOp::RemoveBatchNorm => "remove batch_norm",
            ArchOp::InsertDropout => "insert dropout",
            ArchOp::RemoveDropout => "remove dropout",
            ArchOp::ChangeDropout => "change dropout",
            ArchOp::ChangeDenseUnits => "change dense units",
            ArchOp::InsertDense => "insert dense",
            ArchOp::RemoveDense => "remove dense",
            ArchOp::InsertResidual => "insert residual",
            ArchOp::RemoveResidual => "remove residual",
        }
    }
}

/// [`mutate_genome`], also saying which operator was drawn.
fn mutate_genome_traced<R: Rng + ?Sized>(
    genome: &Genome,
    space: &SearchSpace,
    rng: &mut R,
) -> (ArchOp, Result<(Genome, String), CommonError>) {
    let op = *ArchOp::ALL.choose(rng).expect("there are operators");
    (op, apply_arch_op(op, genome, space, rng))
}

/// Applies `op` to `genome`, then refits residuals and checks the child.
fn apply_arch_op<R: Rng + ?Sized>(
    op: ArchOp,
    genome: &Genome,
    space: &SearchSpace,
    rng: &mut R,
) -> Result<(Genome, String), CommonError> {
    let analysis = genome
        .analyze()
        .map_err(|e| reject(format!("parent genome is invalid: {e}")))?;
    let input = Shape::Map {
        c: genome.input.channels,
        h: genome.input.height,
        w: genome.input.width,
    };
    // shapes[p] enters position p (before blocks[p]); shapes[len] enters the head.
    let shapes: Vec<Shape> = std::iter::once(input)
        .chain(analysis.block_outputs)
        .collect();
    let mut blocks = genome.blocks.clone();
    let mut description = edit_blocks(op, &mut blocks, &shapes, space, rng)
        .map_err(|reason| reject(format!("{}: {reason}", op.name())))?;
    if blocks.is_empty() {
        return Err(reject(format!("{}: would leave no blocks", op.name())));
    }
    let mut child = Genome {
        blocks,
        ..genome.clone()
    };
    let narrowest = space.channels.iter().copied().min().unwrap_or(1);
    let notes = refit_residuals(&mut child, narrowest)
        .map_err(|reason| reject(format!("{description}: {reason}")))?;
    for note in notes {
        description.push_str(", ");
        description.push_str(&note);
    }
    if child.canonical_hash() == genome.canonical_hash() {
        return Err(reject(format!("{}: the genome did not change", op.name())));
    }
    let (depth, max) = (child.depth(), space.max_blocks as usize);
    if max > 0 && depth > max && depth >= genome.depth() {
        return Err(reject(format!(
            "{description}: {depth} blocks exceed search.max_blocks = {max}"
        )));
    }
    child
        .validate()
        .map_err(|e| reject(format!("{description}: child is invalid: {e}")))?;
    Ok((child, description))
}

/// Edits the top-level blocks in place; returns the description, or why `op` does not apply.
fn edit_blocks<R: Rng + ?Sized>(
    op: ArchOp,
    blocks: &mut Vec<Block>,
    shapes: &[Shape],
    space: &SearchSpace,
    rng: &mut R,
) -> Result<String, String> {
    match op {
        ArchOp::ChangeChannels => {
            let i = pick_index(blocks, is_conv, rng).ok_or("no conv block")?;
            let Block::Conv { out_channels, .. } = &mut blocks[i] else {
                unreachable!("picked a conv")
            };
            let old = *out_channels;
            let new = pick_other(&space.channels, old, rng)
                .ok_or_else(|| format!("search.channels offers no width other than {old}"))?;
            *out_channels = new;
            let verb = if new > old { "widen" } else { "narrow" };
            Ok(format!("{verb} blocks[{i}] conv {old}->{new}"))
        }
        ArchOp::ChangeKernel => {
            let i = pick_index(blocks, is_conv, rng).ok_or("no conv block")?;
            let Block::Conv { kernel, .. } = &mut blocks[i] else {
                unreachable!("picked a conv")
            };
            let old = *kernel;
            *kernel = if old == 3 { 5 } else { 3 };
            Ok(format!("kernel blocks[{i}] conv {old}->{kernel}"))
        }
        ArchOp::InsertConv => {
            let p = pick_position(blocks, shapes, rng, |_, s| is_map(s))
                .ok_or("no feature-map position")?;
            let c = *space
                .channels
                .choose(rng)
                .ok_or("search.channels is empty")?;
            blocks.splice(p..p, [Block::conv3(c), Block::BatchNorm, Block::relu()]);
            Ok(format!("insert conv({c},3)+batch_norm+relu at blocks[{p}]"))
        }
        ArchOp::RemoveConv => {
            let i = pick_index(blocks, is_conv, rng).ok_or("no conv block")?;
            Ok(remove_with_followers(blocks, i))
        }
        ArchOp::InsertPool => {
            let p = pick_position(
                blocks,
                shapes,
                rng,
                |_, s| matches!(s, Shape::Map { h, w, .. } if h >= 2 && w >= 2),
            )
            .ok_or("no feature map of at least 2x2")?;
            let kind = *[PoolKind::Max, PoolKind::Avg]
                .choose(rng)
                .expect("non-empty");
            let pool = Block::Pool { kind, size: 2 };
            let text = format!("insert {} at blocks[{p}]", label(&pool));
            blocks.insert(p, pool);
            Ok(text)
        }
        ArchOp::RemovePool => {
            let i = pick_index(blocks, |b| matches!(b, Block::Pool { .. }), rng)
                .ok_or("no pool block")?;
            Ok(format!("remove blocks[{i}] {}", label(&blocks.remove(i))))
        }
        ArchOp::ChangeActivation => {
            let i = pick_index(blocks, |b| matches!(b, Block::Activation { .. }), rng)
                .ok_or("no activation block")?;
            let Block::Activation { kind } = &mut blocks[i] else {
                unreachable!("picked an activation")
            };
            let old = *kind;
            let all = [
                Activation::Relu,
                Activation::Gelu,
                Activation::Silu,
                Activation::Tanh,
            ];
            *kind = pick_other(&all, old, rng).expect("there are four activations");
            Ok(format!(
                "activation blocks[{i}] {}->{}",
                activation_name(old),
                activation_name(*kind)
            ))
        }
        ArchOp::InsertBatchNorm => {
            let candidates: Vec<usize> = (0..blocks.len())
                .filter(|&i| {
                    is_conv(&blocks[i]) && !matches!(blocks.get(i + 1), Some(Block::BatchNorm))
                })
                .collect();
            let i = *candidates
                .choose(rng)
                .ok_or("no conv without a batch_norm after it")?;
            blocks.insert(i + 1, Block::BatchNorm);
            Ok(format!("insert batch_norm after blocks[{i}] conv"))
        }
        ArchOp::RemoveBatchNorm => {
            let i = pick_index(blocks, |b| matches!(b, Block::BatchNorm), rng)
                .ok_or("no batch_norm block")?;
            blocks.remove(i);
            Ok(format!("remove blocks[{i}] batch_norm"))
        }
        ArchOp::InsertDropout => {
            let p = pick_position(blocks, shapes, rng, |p, _| {
                p > 0 && !is_dropout(&blocks[p - 1]) && !blocks.get(p).is_some_and(is_dropout)
            })
            .ok_or("no position away from the input and other dropouts")?;
            let rate = *DROPOUT_RATES.choose(rng).expect("non-empty");
            blocks.insert(p, Block::Dropout { rate });
            Ok(format!("insert dropout({rate}) at blocks[{p}]"))
        }
        ArchOp::RemoveDropout => {
            let i = pick_index(blocks, is_dropout, rng).ok_or("no dropout block")?;
            Ok(format!("remove blocks[{i}] {}", label(&blocks.remove(i))))
        }
        ArchOp::ChangeDropout => {
            let i = pick_index(blocks, is_dropout, rng).ok_or("no dropout block")?;
            let Block::Dropout { rate } = &mut blocks[i] else {
                unreachable!("picked a dropout")
            };
            let old = *rate;
            *rate = pick_other(&DROPOUT_RATES, old, rng).expect("there are several rates");
            Ok(format!("dropout blocks[{i}] {old}->{rate}"))
        }
        ArchOp::ChangeDenseUnits => {
            let i = pick_index(blocks, is_dense, rng).ok_or("no dense block")?;
            let Block::Dense { units } = &mut blocks[i] else {
                unreachable!("picked a dense")
            };
            let old = *units;
            let new = pick_other(&space.dense_units, old, rng)
                .ok_or_else(|| format!("search.dense_units offers no width other than {old}"))?;
            *units = new;
            Ok(format!("dense blocks[{i}] units {old}->{new}"))
        }
        ArchOp::InsertDense => {
            let p = pick_position(blocks, shapes, rng, |p, s| {
                s.numel() <= DENSE_INPUT_LIMIT && !blocks[p..].iter().any(needs_map)
            })
            .ok_or_else(|| {
                format!("no position before the head with at most {DENSE_INPUT_LIMIT} features")
            })?;
            let units = *space
                .dense_units
                .choose(rng)
                .ok_or("search.dense_units is empty")?;
            blocks.splice(p..p, [Block::Dense { units }, Block::relu()]);
            Ok(format!("insert dense({units})+relu at blocks[{p}]"))
        }
        ArchOp::RemoveDense => {
            let i = pick_index(blocks, is_dense, rng).ok_or("no dense block")?;
            Ok(remove_with_followers(blocks, i))
        }
        ArchOp::InsertResidual => {
            // Not on the raw input, nor on a map narrower than any conv the space allows.
            let narrowest = space.channels.iter().copied().min().unwrap_or(1);
            let p = pick_position(blocks, shapes, rng, |p, s| {
                p > 0 && matches!(s, Shape::Map { c, .. } if c >= narrowest)
            })
            .ok_or("no feature-map position after the input as wide as search.channels")?;
            let Shape::Map { c, .. } = shapes[p] else {
                unreachable!("picked a feature-map position")
            };
            let body = vec![
                Block::conv3(c),
                Block::BatchNorm,
                Block::relu(),
                Block::conv3(c),
                Block::BatchNorm,
            ];
            blocks.insert(p, Block::Residual { body });
            Ok(format!("insert residual({c}) at blocks[{p}]"))
        }
        ArchOp::RemoveResidual => {
            let i = pick_index(blocks, |b| matches!(b, Block::Residual { .. }), rng)
                .ok_or("no residual block")?;
            Ok(format!("remove blocks[{i}] {}", label(&blocks.remove(i))))
        }
    }
}

/// Removes `blocks[i]` together with the batch-norm and activation blocks directly after it (at
/// most two); returns the description.
fn remove_with_followers(blocks: &mut Vec<Block>, i: usize) -> String {
    let mut end = i + 1;
    while end < blocks.len()
        && end - i <= 2
        && matches!(blocks[end], Block::BatchNorm | Block::Activation { .. })
    {
        end += 1;
    }
    let removed: Vec<Block> = blocks.drain(i..end).collect();
    let mut text = format!("remove blocks[{i}] {}", label(&removed[0]));
    if removed.len() > 1 {
        let followers: Vec<String> = removed[1..].iter().map(label).collect();
        text.push_str(" with ");
        text.push_str(&followers.join(", "));
    }
    text
}

/// Makes each top-level residual whose input channels changed keep its shape again, by setting
/// the convs of its body that had the old output width to the new input width. Returns a note
/// per residual refitted, or an error when a residual would become narrower than `narrowest`
/// (the smallest width the space allows). Stops at the first block whose input cannot be
/// inferred (validation will report it).
fn refit_residuals(genome: &mut Genome, narrowest: u32) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for j in 0..genome.blocks.len() {
        if !matches!(genome.blocks[j], Block::Residual { .. }) {
            continue;
        }
        let entering = if j == 0 {
            Shape::Map {
                c: genome.input.channels,
                h: genome.input.height,
                w: genome.input.width,
            }
        } else {
            let prefix = Genome {
                blocks: genome.blocks[..j].to_vec(),
                ..genome.clone()
            };
            match prefix.analyze() {
                Ok(a) => a.features,
                Err(_) => break,
            }
        };
        let Shape::Map { c, .. } = entering else {
            continue;
        };
        let Block::Residual { body } = &mut genome.blocks[j] else {
            unreachable!("checked above")
        };
        let Some(Block::Conv {
            out_channels: old, ..
        }) = body.iter().rev().find(|b| is_conv(b)).cloned()
        else {
            continue;
        };
        if old == c {
            continue;
        }
        if c < narrowest {
            return Err(format!(
                "blocks[{j}] residual would shrink from {old} to {c} channels"
            ));
        }
        for block in body.iter_mut() {
            if let Block::Conv { out_channels, .. } = block {
                if *out_channels == old {
                    *out_channels = c;
                }
            }
        }
        notes.push(format!("refit blocks[{j}] residual {old}->{c}"));
    }
    Ok(notes)
}

/// A uniformly chosen index of a block matching `pred`.
fn pick_index<R: Rng + ?Sized>(
    blocks: &[Block],
    pred: impl Fn(&Block) -> bool,
    rng: &mut R,
) -> Option<usize> {
    let candidates: Vec<usize> = (0..blocks.len()).filter(|&i| pred(&blocks[i])).collect();
    candidates.choose(rng).copied()
}

/// A uniformly chosen insertion position `p` (before `blocks[p]`, or at the end) that does not
/// split a layer from its batch-norm or activation, and where `accept(p, shape entering p)`.
fn pick_position<R: Rng + ?Sized>(
    blocks: &[Block],
    shapes: &[Shape],
    rng: &mut R,
    accept: impl Fn(usize, Shape) -> bool,
) -> Option<usize> {
    let candidates: Vec<usize> = (0..=blocks.len())
        .filter(|&p| {
            let boundary = !matches!(
                blocks.get(p),
                Some(Block::BatchNorm | Block::Activation { .. })
            );
            boundary && accept(p, shapes[p])
        })
        .collect();
    candidates.choose(rng).copied()
}

fn is_conv(b: &Block) -> bool {
    matches!(b, Block::Conv { .. })
}

fn is_dense(b: &Block) -> bool {
    matches!(b, Block::Dense { .. })
}

fn is_dropout(b: &Block) -> bool {
    matches!(b, Block::Dropout { .. })
}

fn is_map(s: Shape) -> bool {
    matches!(s, Shape::Map { .. })
}

/// Whether the block only works on (or, for a residual, is built for) a feature map.
fn needs_map(b: &Block) -> bool {
    matches!(
        b,
        Block::Conv { .. } | Block::Pool { .. } | Block::GlobalAvgPool | Block::Residual { .. }
    )
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Relu => "relu",
        Activation::Gelu => "gelu",
        Activation::Silu => "silu",
        Activation::Tanh => "tanh",
    }
}

/// Short text for a block in descriptions, e.g. `conv(64,3)` or `max_pool(2)`.
fn label(b: &Block) -> String {
    match b {
        Block::Conv {
            out_channels,
            kernel,
            stride: 1,
        } => format!("conv({out_channels},{kernel})"),
        Block::Conv {
            out_channels,
            kernel,
            stride,
        } => format!("conv({out_channels},{kernel},/{stride})"),
        Block::BatchNorm => "batch_norm".into(),
        Block::Activation { kind } => activation_name(*kind).into(),
        Block::Pool {
            kind: PoolKind::Max,
            size,
        } => format!("max_pool({size})"),
        Block::Pool {
            kind: PoolKind::Avg,
            size,
        } => format!("avg_pool({size})"),
        Block::GlobalAvgPool => "global_avg_pool".into(),
        Block::Residual { body } => format!("residual({} blocks)", body.len()),
        Block::Dropout { rate } => format!("dropout({rate})"),
        Block::Dense { units } => format!("dense({units})"),
    }
}

fn reject(reason: impl Into<String>) -> CommonError {
    CommonError::Mutation(reason.into())
}
