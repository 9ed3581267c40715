//! Equivalent-learning-rate mode (S3): a scale-invariant network trained with one step-size
//! hyperparameter.
//!
//! **Which weights are scale-invariant.** The conv and dense weights that feed a batch-norm
//! directly ([`Genome::scale_invariant_weights`], decided from each trial's genome, so again for
//! every mutated architecture) and the cosine head's weight (`logits = S · normalize(x) ·
//! normalize(W)ᵀ`, see [`crate::model::Head::Cosine`]). Multiplying any of them by a constant
//! leaves the logits unchanged (in training mode, where batch-norm uses batch statistics; exact
//! up to batch-norm's ε of 1e-5, which is added to the batch variance it divides by).
//! They form optimizer group [`INVARIANT_GROUP`]. After every optimizer step each of their
//! output filters (rows of a dense weight) is projected back to its norm at the start of the
//! trial: `W ← W · ‖W₀‖ / ‖W‖`.
//!
//! **Everything else** (group 0): batch-norm scale and shift, biases (a bias in front of a
//! batch-norm gets no gradient in training mode anyway), and conv or dense weights that feed an
//! activation, a dropout or a residual sum without a batch-norm. They are trained with the step
//! size `elr · 1/3` (the squared filter norm of the default initialisation, a constant so that
//! their step does not depend on the measured norms), are not projected, and get no weight
//! decay.
//!
//! **The one step-size dimension.** With the norms fixed, weight decay has no effect on the
//! invariant weights (the projection undoes it), so it is 0 everywhere, and the step size of
//! the invariant group is set from the equivalent learning rate as `η = elr · r̄²`, where r̄² is
//! the mean squared initial norm of the invariant filters, times the trial's schedule. Under
//! SGD the trajectory of a scale-invariant weight depends on η / r² only: scaling the weights by
//! c scales their gradients by 1/c, so a step of η·c² moves them c times as far and the
//! direction is the same. That holds with momentum too (the buffer scales like the
//! gradients); with the trainer's Nesterov momentum μ = 0.9 the steady angular step per
//! update is about `elr / (1 − μ)`. Adam divides out the gradient's scale, so there the
//! trajectory depends on η / r instead; the trainer still sets η = elr · r̄², which makes the
//! ELR of an Adam run exact for the default initialisation (r̄² ≈ 1/3) but not invariant to a
//! rescaled one.
//!
//! Per-epoch metrics: `elr.step_size` (η of the invariant group at the epoch's last step),
//! `elr.norm_drift` (the largest relative change of a filter norm made by one optimizer step
//! before the projection), `elr.norm_error` (the largest relative deviation from the initial
//! norms after it, ≈ 1e-7) and `elr.invariant_weights` (how many weight tensors are projected).

use std::collections::BTreeMap;

use explore_common::genome::Genome;
use explore_common::hparams::{HyperParams, DEFAULT_INIT_SQUARED_NORM};
use tch::nn;
use tch::{Device, Kind, TchError, Tensor};

use super::{cross_entropy_step, optimizer_for, Batch, EpochData, Objective};
use crate::error::WorkerError;
use crate::model::{self, BuildOptions, GenomeNet, Head};
use crate::train::learning_rate;

/// The optimizer group of the scale-invariant weights.
pub const INVARIANT_GROUP: usize = 1;

/// Smallest norm a filter is divided by when it is projected.
const NORM_EPS: f64 = 1e-12;

/// One scale-invariant weight and the norms its filters are held at.
struct InvariantWeight {
    name: String,
    weight: Tensor,
    /// `‖W₀‖` per output filter, shaped to broadcast over the weight (`[out, 1, …]`).
    initial_norms: Tensor,
}

/// S3's equivalent-learning-rate mode; see the module documentation.
pub struct Elr {
    genome: Genome,
    hparams: HyperParams,
    elr: f64,
    scale: f64,
    weights: Vec<InvariantWeight>,
    /// Mean squared initial norm of the invariant filters (r̄²).
    mean_squared_norm: f64,
    /// Largest relative norm change of one step this epoch (a scalar on the device).
    drift: Option<Tensor>,
    /// η of the invariant group at the last step.
    last_step_size: f64,
}

impl Elr {
    /// ELR mode for a trial of `genome` with equivalent learning rate `elr` and cosine-head
    /// scale `scale`; the optimizer family and schedule come from `hparams`.
    pub fn new(genome: Genome, hparams: HyperParams, elr: f64, scale: f64) -> Elr {
        Elr {
            genome,
            hparams,
            elr,
            scale,
            weights: Vec::new(),
            mean_squared_norm: DEFAULT_INIT_SQUARED_NORM,
            drift: None,
            last_step_size: 0.0,
        }
    }

    /// Names of the projected weights, in the order they were found (for tests and logs).
    pub fn invariant_weight_names(&self) -> Vec<&str> {
        self.weights.iter().map(|w| w.name.as_str()).collect()
    }

    /// Mean squared initial norm of the invariant filters (r̄²); known after
    /// [`Objective::optimizer`].
    pub fn mean_squared_norm(&self) -> f64 {
        self.mean_squared_norm
    }

    /// The largest relative deviation of a filter norm from its initial norm, now.
    pub fn norm_error(&self) -> Result<f64, TchError> {
        let mut worst = 0.0f64;
        for w in &self.weights {
            let norms = filter_norms(&w.weight)?;
            let error = norms
                .f_div(&w.initial_norms)?
                .f_sub_scalar(1.0)?
                .f_abs()?
                .f_max()?;
            worst = worst.max(f64::try_from(&error)?);
        }
        Ok(worst)
    }
}

impl Objective for Elr {
    fn name(&self) -> &'static str {
        "elr"
    }

    fn build(&self, root: &nn::Path, genome: &Genome) -> Result<GenomeNet, WorkerError> {
        model::build_with(
            root,
            genome,
            BuildOptions {
                head: Head::Cosine { scale: self.scale },
                invariant_group: Some(INVARIANT_GROUP),
            },
        )
    }

    fn optimizer(&mut self, vs: &nn::VarStore) -> Result<nn::Optimizer, WorkerError> {
        let variables = vs.variables();
        let mut names: Vec<String> = self
            .genome
            .scale_invariant_weights()
            .into_iter()
            .map(|prefix| format!("{prefix}.weight"))
            .collect();
        names.push("head.weight".into());
        let mut weights = Vec::with_capacity(names.len());
        let (mut squared_sum, mut filters) = (0.0f64, 0i64);
        for name in names {
            let weight = variables.get(&name).ok_or_else(|| {
                WorkerError::Genome(format!(
                    "internal error: ELR mode expects a variable {name} that the network does not have"
                ))
            })?;
            let initial_norms = tch::no_grad(|| filter_norms(weight))?;
            squared_sum += f64::try_from(&initial_norms.f_square()?.f_sum(Kind::Double)?)?;
            filters += weight.size()[0];
            weights.push(InvariantWeight {
                name,
                weight: weight.shallow_clone(),
                initial_norms,
            });
        }
        self.mean_squared_norm = squared_sum / filters.max(1) as f64;
        self.weights = weights;
        optimizer_for(self.hparams.optimizer, vs, self.elr, 0.0)
    }

    fn set_step_size(&mut self, opt: &mut nn::Optimizer, step: usize, total_steps: usize) {
        let scheduled = learning_rate(self.hparams.schedule, self.elr, step, total_steps);
        let invariant = scheduled * self.mean_squared_norm;
        self.last_step_size = invariant;
        opt.set_lr_group(INVARIANT_GROUP, invariant);
        opt.set_lr_group(0, scheduled * DEFAULT_INIT_SQUARED_NORM);
    }

    fn step(
        &mut self,
        net: &GenomeNet,
        opt: &mut nn::Optimizer,
        batch: &Batch<'_>,
    ) -> Result<Tensor, TchError> {
        cross_entropy_step(net, opt, batch)
    }

    fn after_step(&mut self) -> Result<(), TchError> {
        tch::no_grad(|| -> Result<(), TchError> {
            for w in &mut self.weights {
                let norms = filter_norms(&w.weight)?;
                let change = norms
                    .f_div(&w.initial_norms)?
                    .f_sub_scalar(1.0)?
                    .f_abs()?
                    .f_max()?;
                self.drift = Some(match self.drift.take() {
                    Some(d) => d.f_maximum(&change)?,
                    None => change,
                });
                let ratio = w.initial_norms.f_div(&norms.f_clamp_min(NORM_EPS)?)?;
                let _ = w.weight.f_mul_(&ratio)?;
            }
            Ok(())
        })
    }

    fn epoch_metrics(
        &mut self,
        _net: &GenomeNet,
        _data: &EpochData<'_>,
    ) -> Result<BTreeMap<String, f64>, TchError> {
        let drift = match self.drift.take() {
            Some(d) => f64::try_from(&d.f_to_device(Device::Cpu)?)?,
            None => 0.0,
        };
        Ok(BTreeMap::from([
            ("elr.step_size".to_string(), self.last_step_size),
            ("elr.norm_drift".to_string(), drift),
            ("elr.norm_error".to_string(), self.norm_error()?),
            (
                "elr.invariant_weights".to_string(),
                self.weights.len() as f64,
            ),
        ]))
    }
}

/// The Euclidean norm of each output filter (first dimension) of a weight, shaped
/// `[out, 1, …]` to broadcast over it.
fn filter_norms(weight: &Tensor) -> Result<Tensor, TchError> {
    let size = weight.size();
    let mut shape = vec![1i64; size.len()];
    shape[0] = size[0];
    weight
        .f_flatten(1, -1)?
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?
        .f_view(shape.as_slice())
}

#[cfg(test)]
mod tests;
