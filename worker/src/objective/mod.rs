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
//! Five implementations: [`Plain`] (cross-entropy on a linear head, the trainer's behaviour
//! before objectives existed, bit for bit), [`Elr`] (S3's equivalent-learning-rate mode),
//! [`Disentangle`] (S5's domain-invariant / domain-specific split with a CLUB
//! mutual-information penalty), [`Dann`] (domain-adversarial training, S5's baseline) and
//! [`GradientMixing`] (S4's fine-tune that replays a history library without undoing it).
//! [`for_trial`] picks one from the trial's hyperparameters.

mod club;
mod dann;
mod disentangle;
mod elr;
mod gradient_mixing;
mod plain;
mod probe;

use std::collections::BTreeMap;

use explore_common::genome::Genome;
use explore_common::hparams::{HyperParams, Objective as ObjectiveSettings, Optimizer};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Reduction, TchError, Tensor};

pub use club::Club;
pub use dann::Dann;
pub use disentangle::Disentangle;
pub use elr::{Elr, INVARIANT_GROUP};
pub use gradient_mixing::{mix, Agem, Combine, GradientMixing, MixByCosine, Mixed, Replay};
pub use plain::Plain;
pub use probe::{linear_probe_accuracy, warm_up};

use crate::data::SplitData;
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
        batch: &Batch<'_>,
    ) -> Result<Tensor, TchError>;

    /// Runs after every optimizer step.
    fn after_step(&mut self) -> Result<(), TchError> {
        Ok(())
    }

    /// Named metrics of the epoch just finished (names of `[a-z0-9_.]`, values finite); called
    /// once per epoch with the network and the split, it may reset what it accumulates.
    fn epoch_metrics(
        &mut self,
        _net: &GenomeNet,
        _data: &EpochData<'_>,
    ) -> Result<BTreeMap<String, f64>, TchError> {
        Ok(BTreeMap::new())
    }
}

/// One training batch, on the training device.
#[derive(Debug)]
pub struct Batch<'a> {
    /// Images `[N, C, H, W]`.
    pub xs: &'a Tensor,
    /// Class labels `[N]`.
    pub ys: &'a Tensor,
    /// Domain indices `[N]` with multi-domain data, else `None`.
    pub domains: Option<&'a Tensor>,
}

/// The split an objective may look at after an epoch, on the training device.
#[derive(Debug)]
pub struct EpochData<'a> {
    pub train_x: &'a Tensor,
    /// Domain index of each training example (multi-domain data only).
    pub train_domain: Option<&'a Tensor>,
    pub val_x: &'a Tensor,
    /// Domain index of each validation example (multi-domain data only).
    pub val_domain: Option<&'a Tensor>,
    /// The test split: the target domain's with multi-domain data.
    pub test_x: &'a Tensor,
    pub test_y: &'a Tensor,
    /// Number of training domains (0 for single-source data).
    pub num_domains: usize,
}

/// The objective that trains `genome` with `hparams` (their `objective` field decides) on
/// `data`, on `device`. The domain objectives need at least two training domains, the
/// gradient-mixing fine-tune a history library (`[data.history]`).
pub fn for_trial(
    genome: &Genome,
    hparams: &HyperParams,
    data: &SplitData,
    device: Device,
) -> Result<Box<dyn Objective>, WorkerError> {
    let num_domains = data.num_domains();
    let need_domains = |name: &str| {
        if num_domains < 2 {
            return Err(WorkerError::HyperParams(format!(
                "the {name} objective needs data with at least two training domains \
                 ([[data.domains]]), this trial's data has {num_domains}"
            )));
        }
        Ok(())
    };
    Ok(match hparams.objective {
        ObjectiveSettings::Plain => Box::new(Plain::new(hparams.clone())),
        ObjectiveSettings::Elr { elr, scale } => {
            Box::new(Elr::new(genome.clone(), hparams.clone(), elr, scale))
        }
        ObjectiveSettings::Disentangle { lambda, dim } => {
            need_domains("disentangle")?;
            Box::new(Disentangle::new(
                hparams.clone(),
                lambda,
                dim,
                num_domains as u32,
            ))
        }
        ObjectiveSettings::Dann { lambda } => {
            need_domains("dann")?;
            Box::new(Dann::new(hparams.clone(), lambda, num_domains as u32))
        }
        ObjectiveSettings::GradientMixing | ObjectiveSettings::Replay | ObjectiveSettings::Agem => {
            let rule: Box<dyn Combine> = match hparams.objective {
                ObjectiveSettings::Replay => Box::new(Replay),
                ObjectiveSettings::Agem => Box::new(Agem),
                _ => Box::new(MixByCosine),
            };
            let history = data.history.as_ref().ok_or_else(|| {
                WorkerError::HyperParams(format!(
                    "the {} objective needs a history library ([data.history]), this trial's \
                     data has none",
                    rule.name()
                ))
            })?;
            Box::new(GradientMixing::new(rule, hparams.clone(), history, device)?)
        }
    })
}

/// The domain labels of a batch, or an error naming the objective when the data has none.
pub(crate) fn batch_domains<'a>(
    batch: &Batch<'a>,
    objective: &str,
) -> Result<&'a Tensor, TchError> {
    batch.domains.ok_or_else(|| {
        TchError::Kind(format!(
            "the {objective} objective got a batch without domain labels"
        ))
    })
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

/// The optimizer a trial's own settings name: its optimizer, learning rate and weight decay,
/// over every variable of `vs`.
pub(crate) fn optimizer_of(
    hp: &HyperParams,
    vs: &nn::VarStore,
) -> Result<nn::Optimizer, WorkerError> {
    optimizer_for(hp.optimizer, vs, hp.learning_rate, hp.weight_decay)
}

/// Sets the learning rate of `hp`'s schedule at `step` of `total_steps`.
pub(crate) fn set_scheduled_lr(
    opt: &mut nn::Optimizer,
    hp: &HyperParams,
    step: usize,
    total_steps: usize,
) {
    opt.set_lr(crate::train::learning_rate(
        hp.schedule,
        hp.learning_rate,
        step,
        total_steps,
    ));
}

/// The cross-entropy step both objectives use: forward in training mode, mean cross-entropy,
/// zero the gradients, backward, optimizer step. Returns the loss.
pub(crate) fn cross_entropy_step(
    net: &GenomeNet,
    opt: &mut nn::Optimizer,
    batch: &Batch<'_>,
) -> Result<Tensor, TchError> {
    let logits = net.f_forward_t(batch.xs, true)?;
    let loss = cross_entropy(&logits, batch.ys)?;
    opt.zero_grad();
    loss.f_backward()?;
    opt.step();
    Ok(loss)
}

/// Mean cross-entropy of logits `[N, K]` against labels `[N]`.
pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor, TchError> {
    logits.f_cross_entropy_loss::<Tensor>(labels, None, Reduction::Mean, -100, 0.0)
}
