//! The plain objective: cross-entropy on a linear head, one optimizer group with the trial's
//! learning rate (on its schedule) and weight decay.

use explore_common::genome::Genome;
use explore_common::hparams::HyperParams;
use tch::nn;
use tch::{TchError, Tensor};

use super::{cross_entropy_step, optimizer_of, set_scheduled_lr, Batch, Objective};
use crate::error::WorkerError;
use crate::model::{self, GenomeNet};

/// Cross-entropy with the optimizer, learning rate, schedule and weight decay of the trial.
#[derive(Debug, Clone)]
pub struct Plain {
    hparams: HyperParams,
}

impl Plain {
    /// The plain objective of a trial with these hyperparameters.
    pub fn new(hparams: HyperParams) -> Plain {
        Plain { hparams }
    }
}

impl Objective for Plain {
    fn name(&self) -> &'static str {
        "plain"
    }

    fn build(&self, root: &nn::Path, genome: &Genome) -> Result<GenomeNet, WorkerError> {
        model::build(root, genome)
    }

    fn optimizer(&mut self, vs: &nn::VarStore) -> Result<nn::Optimizer, WorkerError> {
        optimizer_of(&self.hparams, vs)
    }

    fn set_step_size(&mut self, opt: &mut nn::Optimizer, step: usize, total_steps: usize) {
        set_scheduled_lr(opt, &self.hparams, step, total_steps);
    }

    fn step(
        &mut self,
        net: &GenomeNet,
        opt: &mut nn::Optimizer,
        batch: &Batch<'_>,
    ) -> Result<Tensor, TchError> {
        cross_entropy_step(net, opt, batch)
    }
}
