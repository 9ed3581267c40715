//! Training objectives: what varies between training methods, behind one trait.
//!
//! The trainer ([`crate::train::train_trial`]) drives a trial: epochs, batch order, NaN checks,
//! evaluation, the checkpoint and progress reports. An [`Objective`] owns what varies between
//! methods: the network's heads and features ([`Objective::build`]), the parameter groups and
//! the optimizer ([`Objective::optimizer`]), the step sizes ([`Objective::set_step_size`]), the
//! step itself, free to compute several losses or gradients ([`Objective::step`]), a hook after
//! every optimizer step ([`Objective::after_step`]) and named per-epoch metrics
//! ([`Objective::epoch_metrics`], sent with the heartbeat).
//!
//! Two implementations: [`Plain`] (cross-entropy on a linear head, the trainer's behaviour
//! before objectives existed, bit for bit) and [`Elr`] (S3's equivalent-learning-rate mode).
//! [`for_trial`] picks one from the trial's hyperparameters.

mod elr;
mod plain;

use std::collections::BTreeMap;

use explore_common::genome::Genome;
use explore_common::hparams::{HyperParams, Objective as ObjectiveSettings, Optimizer};
use tch::nn::{self, OptimizerConfig};
use tch::{Reduction, TchError, Tensor};

pub use elr::{Elr, INVARIANT_GROUP};
pub use plain::Plain;

use crate::error::WorkerError;
use crate::model::GenomeNet;

/// One training method. Called by the trainer in this order: [`Objective::build`] once, then
/// (after inherited weights are copied in) [`Objective::optimizer`] once, then for every batch
/// [`Objective::set_step_size`], [`Objective::step`] and [`Objective::after_step`], and after
/// every epoch [`Objective::epoch_metrics`].
pub trait Objective: Send {
    /// The objective's name, as in specs (`plain`, `elr`).
    fn name(&self) -> &'static str;

    /// Creates the network's variables under `root`, in the optimizer groups the objective uses.
    fn build(&self, root: &nn::Path, genome: &Genome) -> Result<GenomeNet, WorkerError>;

    /// Builds the optimizer over `vs`'s trainable variables, whose starting values are final.
    fn optimizer(&mut self, vs: &nn::VarStore) -> Result<nn::Optimizer, WorkerError>;

    /// Sets the step size of every parameter group for step `step` (0-based) of `total_steps`.
    fn set_step_size(&mut self, opt: &mut nn::Optimizer, step: usize, total_steps: usize);

    /// One training step on a batch: computes the gradients, steps the optimizer and returns
    /// the batch's mean training loss (a scalar tensor).
    fn step(
        &mut self,
        net: &GenomeNet,
        opt: &mut nn::Optimizer,
        xs: &Tensor,
        ys: &Tensor,
    ) -> Result<Tensor, TchError>;

    /// Runs after every optimizer step.
    fn after_step(&mut self) -> Result<(), TchError> {
        Ok(())
    }

    /// Named metrics of the epoch just finished (names of `[a-z0-9_.]`, values finite); called
    /// once per epoch, it may reset what it accumulates.
    fn epoch_metrics(&mut self) -> Result<BTreeMap<String, f64>, TchError> {
        Ok(BTreeMap::new())
    }
}

/// The objective that trains `genome` with `hparams` (their `objective` field decides).
pub fn for_trial(genome: &Genome, hparams: &HyperParams) -> Box<dyn Objective> {
    match hparams.objective {
        ObjectiveSettings::Plain => Box::new(Plain::new(hparams.clone())),
        ObjectiveSettings::Elr { elr, scale } => {
            Box::new(Elr::new(genome.clone(), hparams.clone(), elr, scale))
        }
    }
}

/// Builds the optimizer family of `hparams` over `vs` with the given weight decay: `sgd` is SGD
/// with Nesterov momentum 0.9 and L2 weight decay, `adam` Adam with L2 weight decay folded into
/// the gradient, `adamw` AdamW with decoupled weight decay (β = (0.9, 0.999)). The initial
/// learning rate is `lr`; objectives set it again before every step.
pub(crate) fn optimizer_for(
    optimizer: Optimizer,
    vs: &nn::VarStore,
    lr: f64,
    weight_decay: f64,
) -> Result<nn::Optimizer, WorkerError> {
    Ok(match optimizer {
        Optimizer::Sgd => nn::sgd(0.9, 0.0, weight_decay, true).build(vs, lr)?,
        Optimizer::Adam => nn::adam(0.9, 0.999, weight_decay).build(vs, lr)?,
        Optimizer::AdamW => nn::adamw(0.9, 0.999, weight_decay).build(vs, lr)?,
    })
}

/// The cross-entropy step both objectives use: forward in training mode, mean cross-entropy,
/// zero the gradients, backward, optimizer step. Returns the loss.
pub(crate) fn cross_entropy_step(
    net: &GenomeNet,
    opt: &mut nn::Optimizer,
    xs: &Tensor,
    ys: &Tensor,
) -> Result<Tensor, TchError> {
    let logits = net.f_forward_t(xs, true)?;
    let loss = logits.f_cross_entropy_loss::<Tensor>(ys, None, Reduction::Mean, -100, 0.0)?;
    opt.zero_grad();
    loss.f_backward()?;
    opt.step();
    Ok(loss)
}
