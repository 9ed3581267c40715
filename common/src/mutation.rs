//! Mutation operators: how the search moves from a trained model to a new candidate.
//!
//! [`propose`] turns a base model (genome + hyperparameters) into a child that differs from it,
//! is valid and meets the hard constraints of the [`SearchSpace`]. It is built from
//! [`mutate_genome`] (one random architecture change) and [`mutate_hparams`] (one or two random
//! hyperparameter changes). [`sample_hparams`] draws hyperparameters from scratch.
//!
//! Architecture operators work on the top-level blocks; blocks nested in residual bodies are only
//! touched to keep a residual's output shape equal to its input when the channels entering it
//! change ("refit"). Every child genome is checked with [`Genome::validate`]; an operator that
//! does not apply, or whose result is invalid, is a [`CommonError::Mutation`] with the reason.
//! All functions are pure given the random generator, so a seeded generator replays them.

use rand::seq::SliceRandom;
use rand::Rng;

use crate::error::CommonError;
use crate::genome::{Activation, Block, Genome, PoolKind, Shape};
use crate::hparams::{HyperParams, Optimizer, Schedule};
use crate::spec::SearchSpace;

/// Drop probabilities a mutated dropout block may take.
pub const DROPOUT_RATES: [f32; 5] = [0.1, 0.2, 0.3, 0.4, 0.5];

/// How many architecture mutations [`propose`] tries before giving up.
pub const MAX_ARCHITECTURE_ATTEMPTS: usize = 32;

/// Probability that an architecture change also changes the hyperparameters.
const HPARAMS_WITH_ARCHITECTURE_PROBABILITY: f64 = 0.3;

/// A dense block is only inserted where its input has at most this many features.
const DENSE_INPUT_LIMIT: u64 = 16_384;

/// Standard deviation of the log-normal learning-rate step.
const LR_LOG_SIGMA: f64 = 0.5;

/// Standard deviation of the log-normal weight-decay step.
const WD_LOG_SIGMA: f64 = 1.0;

/// The smallest non-zero weight decay drawn when the range starts at zero, relative to its top.
const WD_LOW_FRACTION: f64 = 1e-3;

/// How often a numeric hyperparameter step is redrawn when rounding or clamping undid it.
const NUMERIC_REDRAWS: usize = 8;

/// A proposed child: architecture, hyperparameters, and a human-readable description of what
/// changed (e.g. `"widen blocks[4] conv 64->96; lr 0.002->0.0031"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The child architecture; valid and within the space's constraints.
    pub genome: Genome,
    /// The child hyperparameters; valid. An architecture-only child keeps its parent's (moved
    /// into the space only if they do not validate).
    pub hparams: HyperParams,
    /// What changed, parts separated by `"; "`, architecture first.
    pub description: String,
}

/// A full child of `genome` + `hparams`.
///
/// With probability `space.architecture_mutation_probability` the architecture is mutated (and
/// with probability 0.3 the hyperparameters too), else only the hyperparameters. A rejected
/// architecture mutation, or one whose child breaks `space.check_constraints`, is retried up to
/// [`MAX_ARCHITECTURE_ATTEMPTS`] times. The child always differs from the parent (genome hash or
/// hyperparameters), validates and meets the constraints; otherwise the result is
/// `Err(CommonError::Mutation(..))` carrying the last reason.
pub fn propose<R: Rng + ?Sized>(
    genome: &Genome,
    hparams: &HyperParams,
    space: &SearchSpace,
    rng: &mut R,
) -> Result<Proposal, CommonError> {
    let p = space.architecture_mutation_probability;
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    if rng.gen_bool(p) {
        let mut last = String::from("no attempt was made");
        for _ in 0..MAX_ARCHITECTURE_ATTEMPTS {
            let child = mutate_genome(genome, space, rng).and_then(|(child, description)| {
                space
                    .check_constraints(&child)
                    .map(|()| (child, description))
            });
            match child {
                Ok((child, description)) => {
                    let (hparams, description) =
                        if rng.gen_bool(HPARAMS_WITH_ARCHITECTURE_PROBABILITY) {
                            let (hparams, changes) = mutate_hparams(hparams, space, rng);
                            (hparams, format!("{description}; {changes}"))
                        } else if hparams.validate().is_ok() {
                            (hparams.clone(), description)
                        } else {
                            let (clamped, notes) = HpBounds::of(space).clamp(hparams);
                            (clamped, join_notes(description, notes))
                        };
                    return Ok(Proposal {
                        genome: child,
                        hparams,
                        description,
                    });
                }
                Err(e) => last = reason_of(e),
            }
        }
        Err(CommonError::Mutation(format!(
            "no valid architecture mutation in {MAX_ARCHITECTURE_ATTEMPTS} attempts, last: {last}"
        )))
    } else {
        space.check_constraints(genome).map_err(|e| {
            CommonError::Mutation(format!(
                "parent breaks the search constraints: {}",
                reason_of(e)
            ))
        })?;
        let (child, description) = mutate_hparams(hparams, space, rng);
        if child == *hparams {
            return Err(CommonError::Mutation(
                "no hyperparameter change is possible within the search space".into(),
            ));
        }
        Ok(Proposal {
            genome: genome.clone(),
            hparams: child,
            description,
        })
    }
}

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

/// Applies one or two random hyperparameter changes within the space.
///
/// Values of the parent outside the space are first clamped into it (and the description says
/// so). The result always passes `validate()` and lies inside the space; the description lists
/// the changes (e.g. `"lr 0.002->0.0031; epochs 3->4"`). Only a space that pins every value can
/// leave the hyperparameters unchanged.
pub fn mutate_hparams<R: Rng + ?Sized>(
    hparams: &HyperParams,
    space: &SearchSpace,
    rng: &mut R,
) -> (HyperParams, String) {
    let (child, description, _) = mutate_hparams_traced(hparams, space, rng);
    (child, description)
}

/// Samples hyperparameters uniformly from the space: a log-uniform learning rate, uniform batch
/// size, optimiser, schedule and epochs, and a weight decay that is log-uniform when the range
/// starts above zero, else 0 with probability 0.2 and log-uniform in `[high / 1000, high]`
/// otherwise. Numbers are rounded to three significant digits. Always valid.
pub fn sample_hparams<R: Rng + ?Sized>(space: &SearchSpace, rng: &mut R) -> HyperParams {
    let b = HpBounds::of(space);
    let [lr_lo, lr_hi] = b.learning_rate;
    let [wd_lo, wd_hi] = b.weight_decay;
    let learning_rate = tidy(log_uniform(lr_lo, lr_hi, rng), lr_lo, lr_hi);
    let batch_size = *b
        .batch_sizes
        .choose(rng)
        .expect("bounds lists are non-empty");
    let optimizer = *b
        .optimizers
        .choose(rng)
        .expect("bounds lists are non-empty");
    let schedule = *b.schedules.choose(rng).expect("bounds lists are non-empty");
    let weight_decay = if wd_hi == 0.0 {
        0.0
    } else if wd_lo > 0.0 {
        tidy(log_uniform(wd_lo, wd_hi, rng), wd_lo, wd_hi)
    } else if rng.gen_bool(0.2) {
        0.0
    } else {
        tidy(
            log_uniform(wd_hi * WD_LOW_FRACTION, wd_hi, rng),
            wd_lo,
            wd_hi,
        )
    };
    let epochs = rng.gen_range(b.epochs[0]..=b.epochs[1]);
    HyperParams {
        optimizer,
        learning_rate,
        schedule,
        batch_size,
        weight_decay,
        epochs,
    }
}

// ---------------------------------------------------------------------------------------------
// Architecture operators

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
            blocks.splice(p..p, [conv(c), Block::BatchNorm, relu()]);
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
            blocks.splice(p..p, [Block::Dense { units }, relu()]);
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
            let body = vec![conv(c), Block::BatchNorm, relu(), conv(c), Block::BatchNorm];
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

/// A uniformly chosen entry of `options` other than `current`.
fn pick_other<T: Copy + PartialEq, R: Rng + ?Sized>(
    options: &[T],
    current: T,
    rng: &mut R,
) -> Option<T> {
    let others: Vec<T> = options.iter().copied().filter(|o| *o != current).collect();
    others.choose(rng).copied()
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

fn conv(out_channels: u32) -> Block {
    Block::Conv {
        out_channels,
        kernel: 3,
        stride: 1,
    }
}

fn relu() -> Block {
    Block::Activation {
        kind: Activation::Relu,
    }
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

/// The reason inside a rejection, or the whole message of another error.
fn reason_of(e: CommonError) -> String {
    match e {
        CommonError::Mutation(reason) => reason,
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Hyperparameter operators

/// One kind of hyperparameter change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum HpOp {
    LearningRate,
    BatchSize,
    Optimizer,
    Schedule,
    WeightDecay,
    Epochs,
}

impl HpOp {
    const ALL: [HpOp; 6] = [
        HpOp::LearningRate,
        HpOp::BatchSize,
        HpOp::Optimizer,
        HpOp::Schedule,
        HpOp::WeightDecay,
        HpOp::Epochs,
    ];
}

/// The ranges of a search space, made usable even when the space was never validated: bad
/// ranges fall back to the defaults, lists are deduplicated and never empty.
struct HpBounds {
    learning_rate: [f64; 2],
    batch_sizes: Vec<u32>,
    epochs: [u32; 2],
    optimizers: Vec<Optimizer>,
    schedules: Vec<Schedule>,
    weight_decay: [f64; 2],
}

impl HpBounds {
    fn of(space: &SearchSpace) -> HpBounds {
        let defaults = SearchSpace::default();
        let [lo, hi] = space.learning_rate;
        let learning_rate =
            if lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi && hi <= 10.0 {
                [lo, hi]
            } else {
                defaults.learning_rate
            };
        let mut batch_sizes: Vec<u32> = space
            .batch_sizes
            .iter()
            .copied()
            .filter(|b| (1..=65_536).contains(b))
            .collect();
        batch_sizes.sort_unstable();
        batch_sizes.dedup();
        if batch_sizes.is_empty() {
            batch_sizes = defaults.batch_sizes;
        }
        let e0 = space.epochs[0].clamp(1, 1000);
        let e1 = space.epochs[1].clamp(e0, 1000);
        let [w0, w1] = space.weight_decay;
        let weight_decay = if w0.is_finite() && w1.is_finite() && 0.0 <= w0 && w0 <= w1 && w1 <= 1.0
        {
            [w0, w1]
        } else {
            defaults.weight_decay
        };
        HpBounds {
            learning_rate,
            batch_sizes,
            epochs: [e0, e1],
            optimizers: dedup_or(&space.optimizers, defaults.optimizers),
            schedules: dedup_or(&space.schedules, defaults.schedules),
            weight_decay,
        }
    }

    /// `hp` moved into the space, with a note per field that moved.
    fn clamp(&self, hp: &HyperParams) -> (HyperParams, Vec<String>) {
        let mut out = hp.clone();
        let mut notes = Vec::new();
        let [lr_lo, lr_hi] = self.learning_rate;
        out.learning_rate = if hp.learning_rate.is_nan() {
            (lr_lo * lr_hi).sqrt()
        } else {
            hp.learning_rate.clamp(lr_lo, lr_hi)
        };
        if !self.batch_sizes.contains(&hp.batch_size) {
            out.batch_size = *self
                .batch_sizes
                .iter()
                .min_by_key(|b| b.abs_diff(hp.batch_size))
                .expect("non-empty");
        }
        if !self.optimizers.contains(&hp.optimizer) {
            out.optimizer = self.optimizers[0];
        }
        if !self.schedules.contains(&hp.schedule) {
            out.schedule = self.schedules[0];
        }
        let [wd_lo, wd_hi] = self.weight_decay;
        out.weight_decay = if hp.weight_decay.is_nan() {
            wd_lo
        } else {
            hp.weight_decay.clamp(wd_lo, wd_hi)
        };
        out.epochs = hp.epochs.clamp(self.epochs[0], self.epochs[1]);
        let f = |x: f64| x.to_string();
        for (field, old, new) in [
            ("lr", f(hp.learning_rate), f(out.learning_rate)),
            (
                "batch_size",
                hp.batch_size.to_string(),
                out.batch_size.to_string(),
            ),
            (
                "optimizer",
                optimizer_name(hp.optimizer).into(),
                optimizer_name(out.optimizer).into(),
            ),
            (
                "schedule",
                schedule_name(hp.schedule).into(),
                schedule_name(out.schedule).into(),
            ),
            ("weight_decay", f(hp.weight_decay), f(out.weight_decay)),
            ("epochs", hp.epochs.to_string(), out.epochs.to_string()),
        ] {
            if old != new {
                notes.push(format!("clamp {field} {old}->{new}"));
            }
        }
        (out, notes)
    }
}

fn dedup_or<T: Copy + PartialEq>(items: &[T], fallback: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(item) {
            out.push(*item);
        }
    }
    if out.is_empty() {
        fallback
    } else {
        out
    }
}

/// [`mutate_hparams`], also saying which operators were applied.
fn mutate_hparams_traced<R: Rng + ?Sized>(
    hparams: &HyperParams,
    space: &SearchSpace,
    rng: &mut R,
) -> (HyperParams, String, Vec<HpOp>) {
    let bounds = HpBounds::of(space);
    let (mut child, mut notes) = bounds.clamp(hparams);
    let wanted = if rng.gen_bool(0.5) { 2 } else { 1 };
    let mut order = HpOp::ALL;
    order.shuffle(rng);
    let mut applied = Vec::with_capacity(wanted);
    for op in order {
        if applied.len() == wanted {
            break;
        }
        if let Some(note) = apply_hp_op(op, &mut child, &bounds, rng) {
            notes.push(note);
            applied.push(op);
        }
    }
    if notes.is_empty() {
        notes.push("no hyperparameter change possible in the search space".into());
    }
    (child, notes.join("; "), applied)
}

/// Changes one hyperparameter of `hp` (already inside the bounds); `None` when the space leaves
/// no other value.
fn apply_hp_op<R: Rng + ?Sized>(
    op: HpOp,
    hp: &mut HyperParams,
    b: &HpBounds,
    rng: &mut R,
) -> Option<String> {
    match op {
        HpOp::LearningRate => {
            let [lo, hi] = b.learning_rate;
            let old = hp.learning_rate;
            let new = redraw(old, || {
                tidy(old * (LR_LOG_SIGMA * standard_normal(rng)).exp(), lo, hi)
            })?;
            hp.learning_rate = new;
            Some(format!("lr {old}->{new}"))
        }
        HpOp::BatchSize => {
            let sizes = &b.batch_sizes;
            let at = sizes.iter().position(|s| *s == hp.batch_size)?;
            let mut neighbours = Vec::with_capacity(2);
            if at > 0 {
                neighbours.push(sizes[at - 1]);
            }
            if at + 1 < sizes.len() {
                neighbours.push(sizes[at + 1]);
            }
            let new = *neighbours.choose(rng)?;
            let old = std::mem::replace(&mut hp.batch_size, new);
            Some(format!("batch_size {old}->{new}"))
        }
        HpOp::Optimizer => {
            let new = pick_other(&b.optimizers, hp.optimizer, rng)?;
            let old = std::mem::replace(&mut hp.optimizer, new);
            Some(format!(
                "optimizer {}->{}",
                optimizer_name(old),
                optimizer_name(new)
            ))
        }
        HpOp::Schedule => {
            let new = pick_other(&b.schedules, hp.schedule, rng)?;
            let old = std::mem::replace(&mut hp.schedule, new);
            Some(format!(
                "schedule {}->{}",
                schedule_name(old),
                schedule_name(new)
            ))
        }
        HpOp::WeightDecay => {
            let [lo, hi] = b.weight_decay;
            let old = hp.weight_decay;
            let new = redraw(old, || {
                if old == 0.0 {
                    tidy(log_uniform((hi * WD_LOW_FRACTION).max(lo), hi, rng), lo, hi)
                } else if lo == 0.0 && rng.gen_bool(0.1) {
                    0.0
                } else {
                    tidy(old * (WD_LOG_SIGMA * standard_normal(rng)).exp(), lo, hi)
                }
            })?;
            hp.weight_decay = new;
            Some(format!("weight_decay {old}->{new}"))
        }
        HpOp::Epochs => {
            let [e0, e1] = b.epochs;
            let old = hp.epochs;
            let new = match (old > e0, old < e1) {
                (true, true) => {
                    if rng.gen_bool(0.5) {
                        old - 1
                    } else {
                        old + 1
                    }
                }
                (true, false) => old - 1,
                (false, true) => old + 1,
                (false, false) => return None,
            };
            hp.epochs = new;
            Some(format!("epochs {old}->{new}"))
        }
    }
}

/// Draws with `draw` until the value differs from `old` (a few times at most).
fn redraw(old: f64, mut draw: impl FnMut() -> f64) -> Option<f64> {
    (0..NUMERIC_REDRAWS).map(|_| draw()).find(|v| *v != old)
}

/// A standard normal variate by the Box-Muller transform.
fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1 = 1.0 - rng.gen::<f64>(); // (0, 1], so the logarithm is finite
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Log-uniform in `[lo, hi]` (`lo` when the range is empty or not positive).
fn log_uniform<R: Rng + ?Sized>(lo: f64, hi: f64, rng: &mut R) -> f64 {
    if !(lo > 0.0 && hi > lo) {
        return lo;
    }
    let u: f64 = rng.gen();
    (lo.ln() + u * (hi.ln() - lo.ln())).exp()
}

/// `x` rounded to three significant digits, then clamped to `[lo, hi]` (with `lo <= hi`).
fn tidy(x: f64, lo: f64, hi: f64) -> f64 {
    let rounded = if x.is_finite() && x != 0.0 {
        let scale = 10f64.powi(2 - x.abs().log10().floor() as i32);
        (x * scale).round() / scale
    } else {
        x
    };
    if rounded.is_nan() {
        lo
    } else {
        rounded.clamp(lo, hi)
    }
}

fn join_notes(description: String, notes: Vec<String>) -> String {
    std::iter::once(description)
        .chain(notes)
        .collect::<Vec<_>>()
        .join("; ")
}

fn optimizer_name(o: Optimizer) -> &'static str {
    match o {
        Optimizer::Sgd => "sgd",
        Optimizer::Adam => "adam",
        Optimizer::AdamW => "adam_w",
    }
}

fn schedule_name(s: Schedule) -> &'static str {
    match s {
        Schedule::Constant => "constant",
        Schedule::Cosine => "cosine",
        Schedule::OneCycle => "one_cycle",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::presets;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn preset(name: &str) -> Genome {
        presets::preset(name).expect("preset exists")
    }

    /// Checks the contract of one architecture mutation result.
    fn check(parent: &Genome, result: &Result<(Genome, String), CommonError>) {
        match result {
            Ok((child, description)) => {
                child
                    .validate()
                    .unwrap_or_else(|e| panic!("{description}: {e}"));
                assert_ne!(
                    child.canonical_hash(),
                    parent.canonical_hash(),
                    "{description}"
                );
                assert!(!description.is_empty());
            }
            Err(CommonError::Mutation(reason)) => assert!(!reason.is_empty()),
            Err(other) => panic!("not a mutation rejection: {other}"),
        }
    }

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
    fn every_hparam_operator_fires() {
        let space = SearchSpace::default();
        let mut r = rng(3);
        let mut fired = HashSet::new();
        let mut hp = HyperParams::default();
        for _ in 0..300 {
            let (child, description, ops) = mutate_hparams_traced(&hp, &space, &mut r);
            assert!(!ops.is_empty() && ops.len() <= 2, "{description}");
            assert_ne!(child, hp, "{description}");
            fired.extend(ops);
            hp = child;
        }
        for op in HpOp::ALL {
            assert!(fired.contains(&op), "{op:?} never fired");
        }
    }

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
    fn widening_a_stem_refits_the_residual_after_it() {
        let mut g = preset("resnet_small");
        g.blocks[0] = conv(48);
        assert!(g.validate().is_err());
        let notes = refit_residuals(&mut g, 16).unwrap();
        assert_eq!(notes, vec!["refit blocks[3] residual 32->48".to_string()]);
        g.validate().unwrap();
        let Block::Residual { body } = &g.blocks[3] else {
            panic!()
        };
        assert_eq!(body[0], conv(48));
        assert_eq!(body[3], conv(48));
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
        broken.blocks.push(conv(8));
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
            blocks: vec![
                Block::Pool {
                    kind: PoolKind::Max,
                    size: 2,
                },
                Block::Dense { units: 64 },
            ],
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
}
