//! S4's gradient-mixing fine-tune: learn a new task without undoing what the model knew.
//!
//! Every step computes two gradients of the same weights: the **transfer gradient** `g_t` of
//! the new task's batch and the **history gradient** `g_h` of a replayed batch from the history
//! library (a class-balanced sample of the source task's training examples, `[data.history]`).
//! [`mix`] turns them into the one update the optimizer applies:
//!
//! 1. On conflict (`g_t · g_h < 0`) the part of `g_t` that opposes `g_h` is removed first:
//!    `g_t' = g_t − (g_t · g_h / ‖g_h‖²) g_h`, so `g_t' · g_h = 0`.
//! 2. Both are normalised to unit length, `u_t = g_t'/‖g_t'‖`, `u_h = g_h/‖g_h‖`, and mixed with
//!    a weight that grows as they disagree: with `c = cos(g_t, g_h)` and `a = (1 − c)/2`,
//!    `update = ‖g_t‖ · ((1 − a) u_t + a u_h)`.
//!
//! So the update never points against the history gradient: `update · g_h ≥ 0`, because both
//! terms are non-negative (`u_t · u_h` is `c ≥ 0`, or 0 after the projection). Without the
//! projection the cosine weight alone would still keep the dot product at `(1 + c²)/2 ≥ 0`;
//! the projection makes sure no part of the new-task direction itself works against the
//! history on conflict. Aligned gradients (`c = 1`) give exactly the plain fine-tuning step `g_t`, and
//! the step keeps the transfer gradient's magnitude, so learning rates mean what they mean for
//! plain fine-tuning. The guarantee is about the gradient handed to the optimizer; momentum and
//! weight decay act on it as they do in plain training.
//!
//! **Batches.** The trainer walks the new task's examples in its seeded order, one epoch per
//! pass; each step takes the next `batch_size` examples of the library in its stored order
//! (wrapping around), so the library is replayed in order alongside the new samples.
//!
//! **Library update.** After every epoch the library is chosen again, per class, from the
//! candidates: the `library_per_class` examples whose history gradients conflict most with the
//! epoch's mean transfer gradient. The conflict of an example is measured on the classifier head,
//! where it has a closed form for cross-entropy: with features `f`, probabilities `p` and one-hot
//! label `y`, its head gradient is `((p − y) fᵀ, p − y)`, and its dot product with the mean
//! transfer gradient `(G_W, G_b)` is `(p − y) · (G_W f + G_b)`; the most negative are the
//! examples a transfer step hurts most, so they are the ones replayed.
//!
//! **Batch-norm statistics** track the new task only: the history batch is forwarded in training
//! mode (batch statistics, so its gradient is the one plain replay would compute), and the
//! running means and variances it moved are put back before the optimizer step. Evaluation on
//! the new task therefore normalises with new-task statistics; source accuracy is measured with
//! the same statistics, which is what a deployed model would use.
//!
//! **Baselines.** The same objective runs the two baselines S4 is measured against by changing
//! only how the two gradients combine ([`Combine`]): experience replay with a fixed mix
//! ([`Replay`], the mean of the two gradients, as a concatenated batch of equal halves gives;
//! Chaudhry et al. 2019) and A-GEM ([`Agem`], the transfer gradient projected off the history
//! gradient on conflict, else unchanged; Chaudhry et al. 2019). Both replay a fixed library (the
//! first `library_per_class` candidates of each class); only gradient mixing re-chooses it.
//!
//! Per-epoch metrics (prefixed by the objective's name, shown here for gradient mixing):
//! `gradient_mixing.source_acc` (accuracy on the source's test examples: what
//! is retained), `gradient_mixing.conflict_rate` (fraction of steps with `c < 0`),
//! `gradient_mixing.mean_cos` and `gradient_mixing.library_changed` (library examples replaced
//! after the epoch). The new task's accuracy is the epoch's validation accuracy.

use std::collections::BTreeMap;

use explore_common::genome::Genome;
use explore_common::hparams::HyperParams;
use tch::nn;
use tch::{Device, Kind, TchError, Tensor};

use super::{cross_entropy, optimizer_of, set_scheduled_lr, Batch, EpochData, Objective};
use crate::data::HistorySplit;
use crate::error::WorkerError;
use crate::model::{self, GenomeNet};
use crate::train::accuracy;

/// Guards divisions by gradient norms.
const NORM_EPS: f64 = 1e-12;

/// The mixed update of a transfer and a history gradient (see the module documentation).
#[derive(Debug)]
pub struct Mixed {
    /// One tensor per parameter, shaped like the inputs.
    pub update: Vec<Tensor>,
    /// `cos(g_t, g_h)` as a scalar tensor (0 when either is zero).
    pub cos: Tensor,
}

/// Mixes `transfer` and `history` (one gradient tensor per parameter, matching shapes) into one
/// update; see the module documentation. Runs on the tensors' device without synchronising.
pub fn mix(transfer: &[Tensor], history: &[Tensor]) -> Result<Mixed, TchError> {
    if transfer.len() != history.len() {
        return Err(TchError::Kind(format!(
            "gradient mixing got {} transfer and {} history gradients",
            transfer.len(),
            history.len()
        )));
    }
    let dot = sum_of(transfer.iter().zip(history).map(|(t, h)| t.f_mul(h)))?;
    let t2 = sum_of(transfer.iter().map(|t| t.f_square()))?;
    let h2 = sum_of(history.iter().map(|h| h.f_square()))?;
    let t_norm = t2.f_sqrt()?;
    let h_norm = h2.f_sqrt()?;
    let cos = dot.f_div(&t_norm.f_mul(&h_norm)?.f_clamp_min(NORM_EPS)?)?;
    // The projection coefficient: 0 without conflict, dot/‖g_h‖² (negative) on conflict.
    let project = dot.f_clamp_max(0.0)?.f_div(&h2.f_clamp_min(NORM_EPS)?)?;
    let projected: Vec<Tensor> = transfer
        .iter()
        .zip(history)
        .map(|(t, h)| t.f_sub(&h.f_mul(&project)?))
        .collect::<Result<_, _>>()?;
    let p_norm = sum_of(projected.iter().map(|p| p.f_square()))?.f_sqrt()?;
    let a = cos.f_neg()?.f_add_scalar(1.0)?.f_mul_scalar(0.5)?;
    // update = ‖g_t‖ · ((1 − a) g_t'/‖g_t'‖ + a g_h/‖g_h‖)
    let w_t = t_norm
        .f_mul(&a.f_neg()?.f_add_scalar(1.0)?)?
        .f_div(&p_norm.f_clamp_min(NORM_EPS)?)?;
    let w_h = t_norm.f_mul(&a)?.f_div(&h_norm.f_clamp_min(NORM_EPS)?)?;
    let update = projected
        .iter()
        .zip(history)
        .map(|(p, h)| p.f_mul(&w_t)?.f_add(&h.f_mul(&w_h)?))
        .collect::<Result<_, _>>()?;
    Ok(Mixed { update, cos })
}

/// How an objective that replays a history library turns the transfer and history gradients
/// into the update the optimizer applies.
pub trait Combine: Send {
    /// The objective's name, as in specs.
    fn name(&self) -> &'static str;
    /// The update and the two gradients' cosine.
    fn combine(&self, transfer: &[Tensor], history: &[Tensor]) -> Result<Mixed, TchError>;
    /// Whether the library is re-chosen after every epoch.
    fn reselects_library(&self) -> bool;
}

/// S4's gradient mixing: [`mix`].
#[derive(Debug, Clone, Copy)]
pub struct MixByCosine;

impl Combine for MixByCosine {
    fn name(&self) -> &'static str {
        "gradient_mixing"
    }
    fn combine(&self, transfer: &[Tensor], history: &[Tensor]) -> Result<Mixed, TchError> {
        mix(transfer, history)
    }
    fn reselects_library(&self) -> bool {
        true
    }
}

/// Experience replay with a fixed mix: the mean of the two gradients.
#[derive(Debug, Clone, Copy)]
pub struct Replay;

impl Combine for Replay {
    fn name(&self) -> &'static str {
        "replay"
    }
    fn combine(&self, transfer: &[Tensor], history: &[Tensor]) -> Result<Mixed, TchError> {
        let cos = cosine(transfer, history)?;
        let update = transfer
            .iter()
            .zip(history)
            .map(|(t, h)| t.f_add(h)?.f_mul_scalar(0.5))
            .collect::<Result<_, _>>()?;
        Ok(Mixed { update, cos })
    }
    fn reselects_library(&self) -> bool {
        false
    }
}

/// A-GEM: on conflict the transfer gradient projected off the history gradient, else the
/// transfer gradient unchanged.
#[derive(Debug, Clone, Copy)]
pub struct Agem;

impl Combine for Agem {
    fn name(&self) -> &'static str {
        "agem"
    }
    fn combine(&self, transfer: &[Tensor], history: &[Tensor]) -> Result<Mixed, TchError> {
        let cos = cosine(transfer, history)?;
        let dot = sum_of(transfer.iter().zip(history).map(|(t, h)| t.f_mul(h)))?;
        let h2 = sum_of(history.iter().map(|h| h.f_square()))?;
        let project = dot.f_clamp_max(0.0)?.f_div(&h2.f_clamp_min(NORM_EPS)?)?;
        let update = transfer
            .iter()
            .zip(history)
            .map(|(t, h)| t.f_sub(&h.f_mul(&project)?))
            .collect::<Result<_, _>>()?;
        Ok(Mixed { update, cos })
    }
    fn reselects_library(&self) -> bool {
        false
    }
}

/// `cos(a, b)` over whole gradient lists (0 when either is zero).
fn cosine(a: &[Tensor], b: &[Tensor]) -> Result<Tensor, TchError> {
    if a.len() != b.len() {
        return Err(TchError::Kind(format!(
            "gradient mixing got {} transfer and {} history gradients",
            a.len(),
            b.len()
        )));
    }
    let dot = sum_of(a.iter().zip(b).map(|(x, y)| x.f_mul(y)))?;
    let a2 = sum_of(a.iter().map(|x| x.f_square()))?;
    let b2 = sum_of(b.iter().map(|y| y.f_square()))?;
    dot.f_div(&a2.f_mul(&b2)?.f_sqrt()?.f_clamp_min(NORM_EPS)?)
}

/// The sum of every element of every tensor, as a scalar `f32`-or-wider tensor.
fn sum_of(parts: impl Iterator<Item = Result<Tensor, TchError>>) -> Result<Tensor, TchError> {
    let mut total: Option<Tensor> = None;
    for part in parts {
        let s = part?.f_sum(Kind::Float)?;
        total = Some(match total {
            None => s,
            Some(t) => t.f_add(&s)?,
        });
    }
    total.ok_or_else(|| TchError::Kind("gradient mixing got no parameters".into()))
}

/// What the objective captures from the var store once the optimizer is built.
struct Vars {
    /// The trainable variables, in one fixed order.
    trainable: Vec<Tensor>,
    /// Batch-norm running statistics, restored after the history forward pass.
    running: Vec<Tensor>,
    head_weight: Tensor,
    head_bias: Tensor,
}

/// An objective that fine-tunes while replaying a history library, its gradients combined by
/// `rule` (gradient mixing, replay or A-GEM); see the module documentation.
pub struct GradientMixing {
    rule: Box<dyn Combine>,
    hparams: HyperParams,
    history: HistorySplit,
    /// Indices into the candidates: the library, in replay order.
    library: Vec<i64>,
    /// Position of the next history batch in `library`.
    cursor: usize,
    vars: Option<Vars>,
    /// Sum over the epoch's steps of the transfer gradient of the head (weight, bias).
    head_grad_sum: Option<(Tensor, Tensor)>,
    steps: i64,
    conflicts: Tensor,
    cos_sum: Tensor,
}

impl GradientMixing {
    /// The objective of a trial with `hparams`, replaying from `history` (moved to `device`)
    /// and combining gradients by `rule`.
    pub fn new(
        rule: Box<dyn Combine>,
        hparams: HyperParams,
        history: &HistorySplit,
        device: Device,
    ) -> Result<Self, WorkerError> {
        let history = HistorySplit {
            candidates_x: history.candidates_x.f_to_device(device)?,
            candidates_y: history.candidates_y.f_to_device(device)?,
            test_x: history.test_x.f_to_device(device)?,
            test_y: history.test_y.f_to_device(device)?,
            library_per_class: history.library_per_class,
            num_classes: history.num_classes,
        };
        let labels = Vec::<i64>::try_from(&history.candidates_y)?;
        if labels.is_empty() {
            return Err(WorkerError::Source(
                "the history library of [data.history] has no examples".into(),
            ));
        }
        let library = first_per_class(&labels, history.library_per_class as usize);
        let zero = || Tensor::f_zeros([], (Kind::Float, device));
        Ok(GradientMixing {
            rule,
            hparams,
            history,
            library,
            cursor: 0,
            vars: None,
            head_grad_sum: None,
            steps: 0,
            conflicts: zero()?,
            cos_sum: zero()?,
        })
    }

    /// The next `n` library indices in replay order, wrapping around.
    fn next_history_batch(&mut self, n: usize) -> Vec<i64> {
        let n = n.min(self.library.len());
        let out = (0..n)
            .map(|k| self.library[(self.cursor + k) % self.library.len()])
            .collect();
        self.cursor = (self.cursor + n) % self.library.len();
        out
    }

    /// Chooses the library again: per class, the candidates whose head gradients conflict most
    /// with the epoch's mean transfer gradient. Returns how many library entries changed.
    fn reselect(&mut self, net: &GenomeNet) -> Result<usize, TchError> {
        let Some((gw, gb)) = &self.head_grad_sum else {
            return Ok(0);
        };
        let scores = tch::no_grad(|| -> Result<Vec<f64>, TchError> {
            let f = net.f_features_t(&self.history.candidates_x, false)?;
            let logits = net.f_head(&f, false)?;
            let classes = logits.size()[1];
            let p = logits.f_softmax(-1, Kind::Float)?;
            let y = self
                .history
                .candidates_y
                .f_one_hot(classes)?
                .f_to_kind(Kind::Float)?;
            let r = p.f_sub(&y)?;
            // (p − y) · (G_W f + G_b), per example.
            let direction = f.f_matmul(&gw.f_tr()?)?.f_add(gb)?;
            let s = r
                .f_mul(&direction)?
                .f_sum_dim_intlist(-1, false, Kind::Float)?;
            Vec::<f64>::try_from(&s.f_to_kind(Kind::Double)?)
        })?;
        let labels = Vec::<i64>::try_from(&self.history.candidates_y)?;
        let chosen = most_conflicting(&labels, &scores, self.history.library_per_class as usize);
        let before: std::collections::HashSet<i64> = self.library.iter().copied().collect();
        let changed = chosen.iter().filter(|i| !before.contains(i)).count();
        self.library = chosen;
        self.cursor = 0;
        Ok(changed)
    }
}

/// Per class, the first `k` indices in order (classes interleaved as they come).
fn first_per_class(labels: &[i64], k: usize) -> Vec<i64> {
    let mut taken: BTreeMap<i64, usize> = BTreeMap::new();
    (0..labels.len())
        .filter(|&i| {
            let n = taken.entry(labels[i]).or_default();
            *n += 1;
            *n <= k
        })
        .map(|i| i as i64)
        .collect()
}

/// Per class, the `k` indices with the lowest score (most conflicting), ties by index; returned
/// interleaved by rank so every replay batch sees every class.
fn most_conflicting(labels: &[i64], scores: &[f64], k: usize) -> Vec<i64> {
    let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &label) in labels.iter().enumerate() {
        by_class.entry(label).or_default().push(i);
    }
    let mut ranked: Vec<Vec<usize>> = by_class
        .into_values()
        .map(|mut idx| {
            idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
            idx.truncate(k);
            idx
        })
        .collect();
    let mut out = Vec::new();
    for rank in 0..k {
        for class in ranked.iter_mut() {
            if let Some(&i) = class.get(rank) {
                out.push(i as i64);
            }
        }
    }
    out
}

/// A detached copy of `t`.
fn copy_of(t: &Tensor) -> Result<Tensor, TchError> {
    let mut out = t.f_empty_like()?;
    tch::no_grad(|| out.f_copy_(t))?;
    Ok(out)
}

/// The gradient of every tensor in `vars` (zeros where backward left none), detached copies.
fn gradients(vars: &[Tensor]) -> Result<Vec<Tensor>, TchError> {
    vars.iter()
        .map(|v| {
            let g = v.grad();
            if g.defined() {
                copy_of(&g)
            } else {
                v.f_zeros_like()
            }
        })
        .collect()
}

impl Objective for GradientMixing {
    fn name(&self) -> &'static str {
        self.rule.name()
    }

    fn build(&self, root: &nn::Path, genome: &Genome) -> Result<GenomeNet, WorkerError> {
        if self.history.num_classes > genome.num_classes {
            return Err(WorkerError::Genome(format!(
                "the history's dataset has {} classes but the genome has {}: the {} objective \
                 replays the source through the same class head",
                self.history.num_classes,
                genome.num_classes,
                self.rule.name()
            )));
        }
        model::build(root, genome)
    }

    fn optimizer(&mut self, vs: &nn::VarStore) -> Result<nn::Optimizer, WorkerError> {
        let variables = vs.variables();
        let find = |name: &str| {
            variables
                .get(name)
                .map(|t| t.shallow_clone())
                .ok_or_else(|| {
                    WorkerError::Genome(format!("gradient mixing needs the variable {name}"))
                })
        };
        let mut running: Vec<(&String, &Tensor)> = variables
            .iter()
            .filter(|(name, _)| name.ends_with("running_mean") || name.ends_with("running_var"))
            .collect();
        running.sort_by(|a, b| a.0.cmp(b.0));
        self.vars = Some(Vars {
            trainable: vs.trainable_variables(),
            running: running
                .into_iter()
                .map(|(_, t)| t.shallow_clone())
                .collect(),
            head_weight: find("head.weight")?,
            head_bias: find("head.bias")?,
        });
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
        let n = batch.xs.size()[0] as usize;
        let idx = self.next_history_batch(n);
        let Some(vars) = &self.vars else {
            return Err(TchError::Kind(
                "gradient mixing stepped before its optimizer was built".into(),
            ));
        };
        opt.zero_grad();
        let loss = cross_entropy(&net.f_forward_t(batch.xs, true)?, batch.ys)?;
        loss.f_backward()?;
        let transfer = gradients(&vars.trainable)?;
        let head = (
            gradients(std::slice::from_ref(&vars.head_weight))?.remove(0),
            gradients(std::slice::from_ref(&vars.head_bias))?.remove(0),
        );

        let saved: Vec<Tensor> = vars.running.iter().map(copy_of).collect::<Result<_, _>>()?;
        let idx = Tensor::f_from_slice(&idx)?.f_to_device(batch.xs.device())?;
        let hx = self.history.candidates_x.f_index_select(0, &idx)?;
        let hy = self.history.candidates_y.f_index_select(0, &idx)?;
        opt.zero_grad();
        let history_loss = cross_entropy(&net.f_forward_t(&hx, true)?, &hy)?;
        history_loss.f_backward()?;
        let history = gradients(&vars.trainable)?;
        tch::no_grad(|| -> Result<(), TchError> {
            for (t, s) in vars.running.iter().zip(&saved) {
                let mut running = t.shallow_clone();
                running.f_copy_(s)?;
            }
            Ok(())
        })?;

        let mixed = self.rule.combine(&transfer, &history)?;
        tch::no_grad(|| -> Result<(), TchError> {
            for (v, u) in vars.trainable.iter().zip(&mixed.update) {
                let mut grad = v.grad();
                if grad.defined() {
                    grad.f_copy_(u)?;
                }
            }
            Ok(())
        })?;
        opt.step();

        self.steps += 1;
        self.conflicts = self
            .conflicts
            .f_add(&mixed.cos.f_lt(0.0)?.f_to_kind(Kind::Float)?)?;
        self.cos_sum = self.cos_sum.f_add(&mixed.cos)?;
        self.head_grad_sum = Some(match self.head_grad_sum.take() {
            None => head,
            Some((w, b)) => (w.f_add(&head.0)?, b.f_add(&head.1)?),
        });
        Ok(loss)
    }

    fn epoch_metrics(
        &mut self,
        net: &GenomeNet,
        _data: &EpochData<'_>,
    ) -> Result<BTreeMap<String, f64>, TchError> {
        let source_acc = accuracy(net, &self.history.test_x, &self.history.test_y)
            .map_err(|e| TchError::Kind(e.to_string()))?;
        let steps = self.steps.max(1) as f64;
        let conflict_rate = f64::try_from(&self.conflicts)? / steps;
        let mean_cos = f64::try_from(&self.cos_sum)? / steps;
        let changed = if self.rule.reselects_library() {
            self.reselect(net)?
        } else {
            0
        };
        self.steps = 0;
        self.conflicts = self.conflicts.f_zero_()?;
        self.cos_sum = self.cos_sum.f_zero_()?;
        self.head_grad_sum = None;
        let name = self.rule.name();
        Ok(BTreeMap::from([
            (format!("{name}.source_acc"), source_acc),
            (format!("{name}.conflict_rate"), conflict_rate),
            (format!("{name}.mean_cos"), mean_cos),
            (format!("{name}.library_changed"), changed as f64),
        ]))
    }
}

#[cfg(test)]
mod tests;
