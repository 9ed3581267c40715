//! Architecture moves of the flat space (`[search.flat]`): one random change of one parameter of
//! a [`FlatGenome`], so that every child stays in the space a flat random search or TPE samples.

use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

use super::{pick_other, ArchitectureMoves, DROPOUT_RATES};
use crate::error::CommonError;
use crate::genome::Genome;
use crate::spec::{FlatGenome, FlatSpace, FlatStage, SearchSpace};

#[cfg(test)]
mod tests;

/// One kind of flat-space move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FlatMove {
    StageChannels,
    StageKernel,
    StageConvs,
    AddStage,
    RemoveStage,
    BatchNorm,
    Activation,
    Dropout,
    DenseUnits,
    DropoutAfterDense,
}

impl FlatMove {
    const ALL: [FlatMove; 10] = [
        FlatMove::StageChannels,
        FlatMove::StageKernel,
        FlatMove::StageConvs,
        FlatMove::AddStage,
        FlatMove::RemoveStage,
        FlatMove::BatchNorm,
        FlatMove::Activation,
        FlatMove::Dropout,
        FlatMove::DenseUnits,
        FlatMove::DropoutAfterDense,
    ];

    fn name(self) -> &'static str {
        match self {
            FlatMove::StageChannels => "change stage channels",
            FlatMove::StageKernel => "change stage kernel",
            FlatMove::StageConvs => "change stage convs",
            FlatMove::AddStage => "add stage",
            FlatMove::RemoveStage => "remove stage",
            FlatMove::BatchNorm => "switch batch_norm",
            FlatMove::Activation => "change activation",
            FlatMove::Dropout => "change dropout",
            FlatMove::DenseUnits => "change dense units",
            FlatMove::DropoutAfterDense => "switch dropout after dense",
        }
    }
}

impl ArchitectureMoves for FlatSpace {
    /// One move drawn uniformly among the flat moves; the child is described as
    /// `"flat: stage 1 channels 64->96"`. A parent outside the space, or a move that does not
    /// apply to it, is a rejection with the reason.
    fn mutate(
        &self,
        genome: &Genome,
        space: &SearchSpace,
        rng: &mut dyn RngCore,
    ) -> Result<(Genome, String), CommonError> {
        let parent = self
            .read(genome, &space.channels, &space.dense_units)
            .map_err(|reason| reject(format!("parent is outside the flat space: {reason}")))?;
        let op = *FlatMove::ALL.choose(rng).expect("there are moves");
        let mut child = parent.clone();
        let description = apply(op, &mut child, self, space, rng)
            .map_err(|reason| reject(format!("{}: {reason}", op.name())))?;
        if !(child.dense_units > 0 && child.dropout > 0.0) {
            child.dropout_after_dense = false;
        }
        if child == parent {
            return Err(reject(format!("{}: the genome did not change", op.name())));
        }
        let child = child.to_genome(genome);
        child
            .validate()
            .map_err(|e| reject(format!("{description}: child is invalid: {e}")))?;
        Ok((child, format!("flat: {description}")))
    }
}

/// Applies `op` to `flat` in place; returns the description, or why `op` does not apply.
fn apply(
    op: FlatMove,
    flat: &mut FlatGenome,
    space: &FlatSpace,
    search: &SearchSpace,
    rng: &mut dyn RngCore,
) -> Result<String, String> {
    let [c0, c1] = space.convs_per_stage;
    match op {
        FlatMove::StageChannels => {
            let i = stage(flat, rng);
            let old = flat.stages[i].channels;
            let new = pick_other(&search.channels, old, rng)
                .ok_or_else(|| format!("search.channels offers no width other than {old}"))?;
            flat.stages[i].channels = new;
            Ok(format!("stage {i} channels {old}->{new}"))
        }
        FlatMove::StageKernel => {
            let i = stage(flat, rng);
            let old = flat.stages[i].kernel;
            let new = pick_other(&space.kernels, old, rng)
                .ok_or_else(|| format!("search.flat.kernels offers no kernel other than {old}"))?;
            flat.stages[i].kernel = new;
            Ok(format!("stage {i} kernel {old}->{new}"))
        }
        FlatMove::StageConvs => {
            let i = stage(flat, rng);
            let old = flat.stages[i].convs;
            let options: Vec<u32> = (c0..=c1).collect();
            let new = pick_other(&options, old, rng)
                .ok_or("search.flat.convs_per_stage offers one count only")?;
            flat.stages[i].convs = new;
            Ok(format!("stage {i} convs {old}->{new}"))
        }
        FlatMove::AddStage => {
            if flat.stages.len() >= space.max_stages as usize {
                return Err(format!(
                    "already search.flat.max_stages = {} stages",
                    space.max_stages
                ));
            }
            let new = FlatStage {
                channels: *search
                    .channels
                    .choose(rng)
                    .ok_or("search.channels is empty")?,
                kernel: *space.kernels.choose(rng).ok_or("no kernels")?,
                convs: rng.gen_range(c0..=c1),
            };
            let p = rng.gen_range(0..=flat.stages.len());
            flat.stages.insert(p, new);
            Ok(format!(
                "add stage {p} conv({},{})x{}",
                new.channels, new.kernel, new.convs
            ))
        }
        FlatMove::RemoveStage => {
            if flat.stages.len() < 2 {
                return Err("the only stage".into());
            }
            let p = stage(flat, rng);
            let old = flat.stages.remove(p);
            Ok(format!(
                "remove stage {p} conv({},{})x{}",
                old.channels, old.kernel, old.convs
            ))
        }
        FlatMove::BatchNorm => {
            flat.batch_norm = !flat.batch_norm;
            Ok(format!(
                "batch_norm {}",
                if flat.batch_norm { "on" } else { "off" }
            ))
        }
        FlatMove::Activation => {
            let old = flat.activation;
            let new = pick_other(&space.activations, old, rng)
                .ok_or("search.flat.activations offers one activation only")?;
            flat.activation = new;
            Ok(format!("activation {old:?}->{new:?}").to_lowercase())
        }
        FlatMove::Dropout => {
            let options: Vec<f32> = std::iter::once(0.0)
                .chain(DROPOUT_RATES)
                .filter(|r| *r <= space.max_dropout)
                .collect();
            let old = flat.dropout;
            let new = pick_other(&options, old, rng)
                .ok_or("search.flat.max_dropout allows no other rate")?;
            flat.dropout = new;
            Ok(format!("dropout {old}->{new}"))
        }
        FlatMove::DenseUnits => {
            let options: Vec<u32> = std::iter::once(0)
                .chain(search.dense_units.iter().copied())
                .collect();
            let old = flat.dense_units;
            let new = pick_other(&options, old, rng).ok_or("search.dense_units is empty")?;
            flat.dense_units = new;
            Ok(format!("dense units {old}->{new}"))
        }
        FlatMove::DropoutAfterDense => {
            if flat.dense_units == 0 || flat.dropout == 0.0 {
                return Err("needs a dense layer and a dropout".into());
            }
            flat.dropout_after_dense = !flat.dropout_after_dense;
            Ok(format!(
                "dropout after dense {}",
                if flat.dropout_after_dense {
                    "on"
                } else {
                    "off"
                }
            ))
        }
    }
}

/// A uniformly chosen stage index of `flat` (which has at least one stage).
fn stage(flat: &FlatGenome, rng: &mut dyn RngCore) -> usize {
    rng.gen_range(0..flat.stages.len())
}

fn reject(reason: String) -> CommonError {
    CommonError::Mutation(reason)
}
