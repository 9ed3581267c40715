//! S5's disentangle objective: domain-invariant and domain-specific features.
//!
//! The network ([`Head::Split`]) projects the trunk's features `h` into an invariant part
//! `z_i = W_i h + b_i` and a specific part `z_s = W_s h + b_s` (`dim` values each). The class
//! head sees only `z_i`, a domain head only `z_s`. Each step:
//!
//! 1. the CLUB network `q(z_i | z_s)` ([`Club`]) takes two maximum-likelihood steps on the
//!    batch's detached features (its own optimizer);
//! 2. the network takes one step on
//!    `CE(classes | z_i) + CE(domains | z_s) + λ_t · max(0, CLUB(z_i; z_s))`, with
//!    `λ_t = lambda · warm_up(progress)` ([`warm_up`]). The domain loss keeps `z_s` from
//!    collapsing to nothing, so the penalty removes from `z_i` what `z_s` knows about the
//!    domain instead of emptying both.
//!
//! The CLUB network models `q(z_i | z_s)`: the specific part is close to a domain code, so a
//! domain-dependent shift of `z_i` is what q finds first. It sees both parts standardised over
//! the batch (zero mean, unit variance per coordinate):
//! mutual information does not change under such maps, and without them the network lowers
//! the estimate by rescaling its features instead of removing information. A negative
//! estimate (q lagging behind the features) is clamped to zero in the loss.
//!
//! Batch-norm layers of the trunk see batches pooled over the training domains and keep one
//! set of running statistics for all of them (as plain training on pooled domains does); the
//! target domain is never seen in training. Model selection uses the validation split of the
//! training domains only (the trainer's score); the target domain's accuracy is reported.
//!
//! Per-epoch metrics: `disentangle.target_acc` (accuracy on the test split, which is the
//! target domain's), `disentangle.domain_probe` (validation accuracy of a linear probe that
//! predicts the domain from `z_i`; it should fall towards `disentangle.probe_chance`),
//! `disentangle.specific_domain_acc` (the domain head's training accuracy on `z_s`),
//! `disentangle.mi` (mean CLUB estimate over the epoch, nats) and `disentangle.lambda` (λ_t at
//! the epoch's end).

use std::collections::BTreeMap;

use explore_common::genome::Genome;
use explore_common::hparams::HyperParams;
use tch::nn;
use tch::{Kind, TchError, Tensor};

use super::probe::{correct, domain_metrics, progress, warm_up};
use super::{
    batch_domains, cross_entropy, optimizer_of, set_scheduled_lr, Batch, Club, EpochData, Objective,
};
use crate::error::WorkerError;
use crate::model::{self, BuildOptions, GenomeNet, Head, SplitOutput};

/// Hidden units of the CLUB network.
const CLUB_HIDDEN: i64 = 64;
/// Added to the batch deviation when standardising (a dead coordinate stays finite).
const STANDARDISE_EPSILON: f64 = 1e-4;
/// Maximum-likelihood steps of the CLUB network per training step.
const CLUB_STEPS: usize = 2;

/// The disentangle objective of one trial.
#[derive(Debug)]
pub struct Disentangle {
    hparams: HyperParams,
    lambda: f64,
    dim: u32,
    domains: u32,
    club: Option<Club>,
    progress: f64,
    mi_sum: f64,
    specific_correct: i64,
    seen: i64,
    steps: u64,
}

impl Disentangle {
    /// The objective with penalty weight `lambda`, feature parts of `dim` values and `domains`
    /// training domains.
    pub fn new(hparams: HyperParams, lambda: f64, dim: u32, domains: u32) -> Disentangle {
        Disentangle {
            hparams,
            lambda,
            dim,
            domains,
            club: None,
            progress: 0.0,
            mi_sum: 0.0,
            specific_correct: 0,
            seen: 0,
            steps: 0,
        }
    }

    /// The penalty weight at the current progress.
    fn current_lambda(&self) -> f64 {
        self.lambda * warm_up(self.progress)
    }
}

/// The split head's outputs; an error when the network has no split head.
fn split_of(net: &GenomeNet, xs: &Tensor, train: bool) -> Result<SplitOutput, TchError> {
    net.f_split_t(xs, train)?.ok_or_else(|| {
        TchError::Kind("the disentangle objective needs a network with a split head".into())
    })
}

/// Each coordinate of `x` centred and scaled to unit variance over the batch.
fn standardise(x: &Tensor) -> Result<Tensor, TchError> {
    let dims = Some([0i64].as_slice());
    let mean = x.f_mean_dim(dims, true, Kind::Float)?;
    let std = x
        .f_std_correction(dims, 0, true)?
        .f_add_scalar(STANDARDISE_EPSILON)?;
    x.f_sub(&mean)?.f_div(&std)
}

impl Objective for Disentangle {
    fn name(&self) -> &'static str {
        "disentangle"
    }

    fn build(&self, root: &nn::Path, genome: &Genome) -> Result<GenomeNet, WorkerError> {
        model::build_with(
            root,
            genome,
            BuildOptions {
                head: Head::Split {
                    dim: self.dim,
                    domains: self.domains,
                },
                invariant_group: None,
            },
        )
    }

    fn optimizer(&mut self, vs: &nn::VarStore) -> Result<nn::Optimizer, WorkerError> {
        let dim = self.dim as i64;
        self.club = Some(Club::new(vs.device(), dim, dim, CLUB_HIDDEN)?);
        optimizer_of(&self.hparams, vs)
    }

    fn set_step_size(&mut self, opt: &mut nn::Optimizer, step: usize, total_steps: usize) {
        set_scheduled_lr(opt, &self.hparams, step, total_steps);
        self.progress = progress(step, total_steps);
    }

    fn step(
        &mut self,
        net: &GenomeNet,
        opt: &mut nn::Optimizer,
        batch: &Batch<'_>,
    ) -> Result<Tensor, TchError> {
        let domains = batch_domains(batch, "disentangle")?;
        let out = split_of(net, batch.xs, true)?;
        let lambda = self.current_lambda();
        let club = self.club.as_mut().ok_or_else(|| {
            TchError::Kind("the CLUB estimator is built with the optimizer".into())
        })?;
        // MI is invariant to per-coordinate affine maps, so CLUB sees batch-standardised
        // parts: the network cannot lower the estimate by rescaling its features.
        let invariant = standardise(&out.invariant)?;
        let specific = standardise(&out.specific)?;
        for _ in 0..CLUB_STEPS {
            let _likelihood = club.learn(&specific, &invariant)?;
        }
        let task = cross_entropy(&out.logits, batch.ys)?;
        let domain = cross_entropy(&out.domain_logits, domains)?;
        let mi = club.upper_bound(&specific, &invariant)?;
        // a negative estimate only says q lags behind; it is no reason to move the network
        let penalty = mi.f_clamp_min(0.0)?.f_mul_scalar(lambda)?;
        let loss = task.f_add(&domain)?.f_add(&penalty)?;
        opt.zero_grad();
        loss.f_backward()?;
        opt.step();
        self.mi_sum += f64::try_from(&mi.f_detach()?)?;
        self.steps += 1;
        self.specific_correct += correct(&out.domain_logits, domains)?;
        self.seen += domains.size()[0];
        Ok(loss)
    }

    fn epoch_metrics(
        &mut self,
        net: &GenomeNet,
        data: &EpochData<'_>,
    ) -> Result<BTreeMap<String, f64>, TchError> {
        let invariant = |xs: &Tensor| Ok(split_of(net, xs, false)?.invariant);
        let mut metrics = domain_metrics("disentangle", net, data, invariant)?;
        if self.steps > 0 {
            metrics.insert("disentangle.mi".into(), self.mi_sum / self.steps as f64);
        }
        if self.seen > 0 {
            metrics.insert(
                "disentangle.specific_domain_acc".into(),
                self.specific_correct as f64 / self.seen as f64,
            );
        }
        metrics.insert("disentangle.lambda".into(), self.current_lambda());
        self.mi_sum = 0.0;
        self.steps = 0;
        self.specific_correct = 0;
        self.seen = 0;
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests;
