//! Domain-adversarial training (DANN, Ganin et al., JMLR 2016): the baseline S5 is measured
//! against.
//!
//! The network is the plain one (trunk and linear class head). A domain classifier
//! (`dann.d1`: dense to [`DISCRIMINATOR_HIDDEN`] units, ReLU, `dann.d2`: dense to the domains)
//! reads the trunk's features through a gradient-reversal layer: the forward pass is the
//! identity, the backward pass multiplies the gradient by `−λ_t`, with
//! `λ_t = lambda · warm_up(progress)`. One optimizer step on `CE(classes) + CE(domains)` so
//! trains the classifier to tell the domains apart and the trunk to make that impossible.
//! The discriminator's tensors are saved with the checkpoint and ignored when it is loaded for
//! scoring. Batch-norm statistics are pooled over the training domains, as in plain training.
//!
//! Per-epoch metrics: `dann.target_acc` (accuracy on the test split, the target domain's),
//! `dann.domain_probe` (validation accuracy of a linear probe predicting the domain from the
//! trunk's features), `dann.probe_chance`, `dann.discriminator_acc` (the discriminator's
//! training accuracy) and `dann.lambda`.

use std::collections::BTreeMap;

use explore_common::genome::Genome;
use explore_common::hparams::HyperParams;
use tch::nn;
use tch::{TchError, Tensor};

use super::probe::{correct, domain_metrics, progress, warm_up};
use super::{
    batch_domains, cross_entropy, optimizer_of, set_scheduled_lr, Batch, EpochData, Objective,
};
use crate::error::WorkerError;
use crate::model::{self, GenomeNet};

/// Hidden units of the domain discriminator.
pub const DISCRIMINATOR_HIDDEN: i64 = 64;

/// The DANN objective of one trial.
#[derive(Debug)]
pub struct Dann {
    hparams: HyperParams,
    lambda: f64,
    domains: u32,
    discriminator: Option<Discriminator>,
    progress: f64,
    correct: i64,
    seen: i64,
}

#[derive(Debug)]
struct Discriminator {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl Discriminator {
    fn forward(&self, features: &Tensor) -> Result<Tensor, TchError> {
        features
            .f_linear(&self.w1, Some(&self.b1))?
            .f_relu()?
            .f_linear(&self.w2, Some(&self.b2))
    }
}

/// The identity forward, `−scale ×` the gradient backward: `x·(1 + s) − x·s` with the first
/// term detached has value `x` and gradient `−s`.
pub fn reverse_gradient(x: &Tensor, scale: f64) -> Result<Tensor, TchError> {
    x.f_mul_scalar(1.0 + scale)?
        .f_detach()?
        .f_sub(&x.f_mul_scalar(scale)?)
}

impl Dann {
    /// The objective with reversal weight `lambda` over `domains` training domains.
    pub fn new(hparams: HyperParams, lambda: f64, domains: u32) -> Dann {
        Dann {
            hparams,
            lambda,
            domains,
            discriminator: None,
            progress: 0.0,
            correct: 0,
            seen: 0,
        }
    }

    fn current_lambda(&self) -> f64 {
        self.lambda * warm_up(self.progress)
    }
}

/// A dense layer's weight and bias with PyTorch's default initialisation.
fn dense_vars(p: &nn::Path, inputs: i64, outputs: i64) -> Result<(Tensor, Tensor), TchError> {
    let bound = 1.0 / (inputs as f64).sqrt();
    let init = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    Ok((
        p.f_var("weight", &[outputs, inputs], init)?,
        p.f_var("bias", &[outputs], init)?,
    ))
}

impl Objective for Dann {
    fn name(&self) -> &'static str {
        "dann"
    }

    fn build(&self, root: &nn::Path, genome: &Genome) -> Result<GenomeNet, WorkerError> {
        model::build(root, genome)
    }

    fn optimizer(&mut self, vs: &nn::VarStore) -> Result<nn::Optimizer, WorkerError> {
        // the discriminator is created here, after inheritance, under `dann.*`, so the class
        // network's variables are created exactly as the plain objective creates them
        let root = vs.root();
        let features = trunk_width(vs)?;
        let (w1, b1) = dense_vars(&(&root / "dann" / "d1"), features, DISCRIMINATOR_HIDDEN)?;
        let (w2, b2) = dense_vars(
            &(&root / "dann" / "d2"),
            DISCRIMINATOR_HIDDEN,
            self.domains as i64,
        )?;
        self.discriminator = Some(Discriminator { w1, b1, w2, b2 });
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
        let domains = batch_domains(batch, "dann")?;
        let lambda = self.current_lambda();
        let discriminator = self.discriminator.as_ref().ok_or_else(|| {
            TchError::Kind("the DANN discriminator is built with the optimizer".into())
        })?;
        let features = net.f_features_t(batch.xs, true)?;
        let logits = net.f_head(&features, true)?;
        let domain_logits = discriminator.forward(&reverse_gradient(&features, lambda)?)?;
        let task = cross_entropy(&logits, batch.ys)?;
        let loss = task.f_add(&cross_entropy(&domain_logits, domains)?)?;
        opt.zero_grad();
        loss.f_backward()?;
        opt.step();
        self.correct += correct(&domain_logits, domains)?;
        self.seen += domains.size()[0];
        Ok(loss)
    }

    fn epoch_metrics(
        &mut self,
        net: &GenomeNet,
        data: &EpochData<'_>,
    ) -> Result<BTreeMap<String, f64>, TchError> {
        let trunk = |xs: &Tensor| net.f_features_t(xs, false);
        let mut metrics = domain_metrics("dann", net, data, trunk)?;
        if self.seen > 0 {
            metrics.insert(
                "dann.discriminator_acc".into(),
                self.correct as f64 / self.seen as f64,
            );
        }
        metrics.insert("dann.lambda".into(), self.current_lambda());
        self.correct = 0;
        self.seen = 0;
        Ok(metrics)
    }
}

/// The number of trunk features: the input width of the class head (`head.weight`).
fn trunk_width(vs: &nn::VarStore) -> Result<i64, WorkerError> {
    let variables = vs.variables();
    let head = variables
        .get("head.weight")
        .ok_or_else(|| WorkerError::Genome("the network has no head.weight".into()))?;
    Ok(head.size()[1])
}
