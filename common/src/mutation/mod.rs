//! Mutation operators: how the search moves from a trained model to a new candidate.
//!
//! [`propose`] turns a base model (genome + hyperparameters) into a child that differs from it,
//! is valid and meets the hard constraints of the [`SearchSpace`]. It is built from one random
//! architecture change ([`ArchitectureMoves`], chosen by [`architecture_moves`]) and
//! [`mutate_hparams`] (one or two random hyperparameter changes). [`sample_hparams`] draws
//! hyperparameters from scratch.
//!
//! Two kinds of architecture moves exist. [`BlockMoves`] (the default, [`mutate_genome`]) edits
//! the top-level blocks of the whole genome language; blocks nested in residual bodies are only
//! touched to keep a residual's output shape equal to its input when the channels entering it
//! change ("refit"). A spec with `[search.flat]` moves in its [`FlatSpace`] instead: one
//! parameter of a stage-indexed architecture at a time (`flat.rs`). Every child genome is checked with [`Genome::validate`]; an operator that
//! does not apply, or whose result is invalid, is a [`CommonError::Mutation`] with the reason.
//! All functions are pure given the random generator, so a seeded generator replays them.

mod architecture;
mod flat;
mod hparams;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

use crate::error::CommonError;
use crate::genome::Genome;
use crate::hparams::HyperParams;
use crate::spec::{FlatSpace, SearchSpace};

pub use architecture::{mutate_genome, DROPOUT_RATES};
pub use hparams::{mutate_hparams, sample_hparams};

use hparams::HpBounds;

/// How many architecture mutations [`propose`] tries before giving up.
pub const MAX_ARCHITECTURE_ATTEMPTS: usize = 32;

/// Probability that an architecture change also changes the hyperparameters.
const HPARAMS_WITH_ARCHITECTURE_PROBABILITY: f64 = 0.3;

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

/// How architectures move: one random change of a genome within a search space.
pub trait ArchitectureMoves {
    /// A child of `genome` that validates and differs from it, with a description of the
    /// change; `Err(CommonError::Mutation(reason))` when the drawn move does not apply.
    /// The space's hard constraints are checked by the caller ([`propose`]).
    fn mutate(
        &self,
        genome: &Genome,
        space: &SearchSpace,
        rng: &mut dyn RngCore,
    ) -> Result<(Genome, String), CommonError>;
}

/// Per-block edits over the whole genome language ([`mutate_genome`]); the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockMoves;

impl ArchitectureMoves for BlockMoves {
    fn mutate(
        &self,
        genome: &Genome,
        space: &SearchSpace,
        rng: &mut dyn RngCore,
    ) -> Result<(Genome, String), CommonError> {
        mutate_genome(genome, space, rng)
    }
}

/// The architecture moves of `space`: its [`FlatSpace`] when it has `[search.flat]`, else
/// [`BlockMoves`].
pub fn architecture_moves(space: &SearchSpace) -> &dyn ArchitectureMoves {
    match &space.flat {
        Some(flat) => flat as &FlatSpace,
        None => &BlockMoves,
    }
}

/// A full child of `genome` + `hparams`.
///
/// With probability `space.architecture_mutation_probability` the architecture is mutated (and
/// with probability 0.3 the hyperparameters too), else only the hyperparameters. A rejected
/// architecture mutation, or one whose child breaks `space.check_constraints`, is retried up to
/// [`MAX_ARCHITECTURE_ATTEMPTS`] times. The child always differs from the parent (genome hash or
/// hyperparameters), validates, meets the constraints and keeps a scale-invariant weight in
/// ELR mode ([`check_objective`]); otherwise the result is
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
        let moves = architecture_moves(space);
        let mut last = String::from("no attempt was made");
        for _ in 0..MAX_ARCHITECTURE_ATTEMPTS {
            let mut attempt_rng = &mut *rng;
            let child =
                moves
                    .mutate(genome, space, &mut attempt_rng)
                    .and_then(|(child, description)| {
                        space.check_constraints(&child)?;
                        check_objective(&child, hparams)?;
                        Ok((child, description))
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

/// Whether `genome` can train with the objective of `hparams`: ELR mode needs at least one
/// scale-invariant weight in the trunk ([`Genome::scale_invariant_weights`]).
pub fn check_objective(genome: &Genome, hparams: &HyperParams) -> Result<(), CommonError> {
    if hparams.objective.is_elr() && genome.scale_invariant_weights().is_empty() {
        return Err(CommonError::Mutation(
            "ELR mode needs a scale-invariant weight (a conv or dense block followed directly by batch_norm)".into(),
        ));
    }
    Ok(())
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

/// The reason inside a rejection, or the whole message of another error.
fn reason_of(e: CommonError) -> String {
    match e {
        CommonError::Mutation(reason) => reason,
        other => other.to_string(),
    }
}

fn join_notes(description: String, notes: Vec<String>) -> String {
    std::iter::once(description)
        .chain(notes)
        .collect::<Vec<_>>()
        .join("; ")
}
