//! Training and scoring one trial: a genome with hyperparameters on a data split.
//!
//! The trainer drives the trial (epochs, batches drawn from a per-epoch permutation of the
//! training split seeded by the trial's seed, NaN checks, evaluation, the checkpoint, progress);
//! what varies between training methods (heads, parameter groups, the step, a hook after each
//! step, per-epoch metrics) belongs to the trial's [`crate::objective::Objective`]. Optimisers:
//! `sgd` is SGD with Nesterov momentum 0.9 and L2 weight decay, `adam` is Adam with L2 weight
//! decay folded into the gradient, `adamw` is AdamW with decoupled weight decay (all with
//! β = (0.9, 0.999)). Step sizes follow [`learning_rate`]'s schedules.

use std::collections::{BTreeMap, HashMap};
use std::f64::consts::PI;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use explore_common::genome::Genome;
use explore_common::hparams::{HyperParams, Schedule};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn;
use tch::{Device, Kind, TchError, Tensor};
use tracing::debug;

use crate::augment::Augmenter;
use crate::data::SplitData;
use crate::error::WorkerError;
use crate::inherit::{inherit_from_file, Inherited};
use crate::model::{self, BuildOptions, GenomeNet, Head};
use crate::objective::{self, Batch, EpochData};

/// Examples per forward pass when evaluating on a GPU.
const EVAL_BATCH_GPU: i64 = 1000;
/// Examples per forward pass when evaluating on the CPU: larger batches make the allocator hand
/// big activation buffers back to the kernel after every batch, which costs more than it saves.
const EVAL_BATCH_CPU: i64 = 250;
/// Steps between checks of the running loss for NaN (each check synchronises a GPU).
const NAN_CHECK_EVERY: usize = 50;
/// Held from seeding torch's process-wide generator until a trial's weights are initialised,
/// so trials that start together on several slots each initialise from their own seed.
static SEEDED_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What to train.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialPlan {
    pub genome: Genome,
    pub hparams: HyperParams,
    /// Seeds the weight initialisation, dropout and the batch order.
    pub seed: u64,
    /// A parent's checkpoint to start from: its tensors are copied wherever name and shape
    /// match (see [`crate::inherit`]).
    pub parent_checkpoint: Option<PathBuf>,
}

/// Progress after one epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochReport {
    /// Epochs finished so far, 1-based.
    pub epoch: u32,
    /// Epochs the trial is planned to run.
    pub total_epochs: u32,
    /// Mean training loss over the epoch's examples (in training mode).
    pub train_loss: f64,
    /// Accuracy on the validation split after the epoch.
    pub val_accuracy: f64,
    /// Named per-epoch metrics of the trial's objective (e.g. ELR mode's norm drift), sent
    /// with the heartbeat and stored with the epoch curve. Empty for the plain objective.
    pub metrics: BTreeMap<String, f64>,
}

/// What the epoch callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep training.
    Continue,
    /// Stop now; the trial is still scored and checkpointed.
    Stop,
}

/// Result of a trained trial.
#[derive(Clone, PartialEq)]
pub struct TrialOutcome {
    /// Accuracy on the validation split: the selection score.
    pub val_accuracy: f64,
    /// Accuracy on the test split: reported only, never used for selection.
    pub test_accuracy: f64,
    /// Mean training loss of the last epoch run.
    pub train_loss: f64,
    /// Epochs actually run.
    pub epochs_run: u32,
    /// Wall time of the training loop, per-epoch validation included (test scoring and
    /// checkpointing excluded).
    pub train_seconds: f64,
    /// The part of `train_seconds` spent scoring the validation split after each epoch.
    pub eval_seconds: f64,
    /// Whether training ended before its planned epochs because the callback said stop.
    pub stopped: bool,
    /// Trainable parameters.
    pub params: u64,
    /// Examples of the training split trained on (each epoch goes through all of them).
    pub train_examples: usize,
    /// What was inherited from the parent's checkpoint (nothing without one).
    pub inherited: Inherited,
    /// The var store in safetensors format (see [`crate::model`] for the names).
    pub checkpoint: Vec<u8>,
}

impl std::fmt::Debug for TrialOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrialOutcome")
            .field("val_accuracy", &self.val_accuracy)
            .field("test_accuracy", &self.test_accuracy)
            .field("train_loss", &self.train_loss)
            .field("epochs_run", &self.epochs_run)
            .field("train_seconds", &self.train_seconds)
            .field("eval_seconds", &self.eval_seconds)
            .field("stopped", &self.stopped)
            .field("train_examples", &self.train_examples)
            .field("params", &self.params)
            .field("inherited", &self.inherited.copied.len())
            .field(
                "checkpoint",
                &format_args!("<{} bytes>", self.checkpoint.len()),
            )
            .finish()
    }
}

/// Trains one trial; blocking, so call it from a dedicated thread. Seeds torch with
/// `plan.seed` and shuffles batches with a generator seeded by it; with augmentation on
/// (`hparams.augment`), each training batch is augmented on the device with draws seeded by
/// the seed and the step ([`crate::augment`]). `tch::manual_seed` is
/// process-wide: trials training at once (`worker join --slots N`) seed and initialise their
/// weights one at a time ([`SEEDED_INIT`]), so the initial weights depend on the seed only, but
/// dropout masks then come from the shared generator: run one trial per process at a time when
/// results must be reproducible bit for bit. Calls
/// `on_epoch` after every epoch; [`Control::Stop`] ends training early and the model is still
/// scored. Evaluation runs in eval mode without gradients, in batches (1000 on a GPU, 250 on
/// the CPU).
pub fn train_trial(
    plan: &TrialPlan,
    data: &SplitData,
    device: Device,
    on_epoch: &mut dyn FnMut(&EpochReport) -> Control,
) -> Result<TrialOutcome, WorkerError> {
    train_trial_observed(plan, data, device, on_epoch, &mut |_| {})
}

/// Progress within an epoch, reported after every optimizer step by
/// [`train_trial_observed`] (for progress bars and periodic log lines; costs no device sync).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchProgress {
    /// The epoch running, 1-based.
    pub epoch: u32,
    /// Epochs the trial is planned to run.
    pub total_epochs: u32,
    /// Batches of this epoch done so far.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// Mean training loss of the epoch so far, as of its last NaN check (every 50 batches):
    /// `None` before the first.
    pub running_loss: Option<f64>,
}

/// [`train_trial`] that also calls `on_batch` after every optimizer step.
pub fn train_trial_observed(
    plan: &TrialPlan,
    data: &SplitData,
    device: Device,
    on_epoch: &mut dyn FnMut(&EpochReport) -> Control,
    on_batch: &mut dyn FnMut(&BatchProgress),
) -> Result<TrialOutcome, WorkerError> {
    let hp = &plan.hparams;
    hp.validate()
        .map_err(|e| WorkerError::HyperParams(e.to_string()))?;
    check_fits(&plan.genome, data)?;
    let n_train = data.train_len();
    if n_train < 2 {
        return Err(WorkerError::Split(format!(
            "the training split has {n_train} example(s), training needs at least 2"
        )));
    }
    let batches = batch_ranges(n_train, hp.batch_size as usize);
    let steps_per_epoch = batches.len();
    let total_steps = steps_per_epoch * hp.epochs as usize;

    let seeded = SEEDED_INIT.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(plan.seed as i64);
    let mut objective = objective::for_trial(&plan.genome, hp, data, device)?;
    let vs = nn::VarStore::new(device);
    let net = objective.build(&vs.root(), &plan.genome)?;
    let params = model::trainable_params(&vs);
    let inherited = match &plan.parent_checkpoint {
        Some(path) => inherit_from_file(&vs, path)?,
        None => Inherited::default(),
    };
    drop(seeded);
    if hp.head_only {
        freeze_all_but_head(&vs);
    }
    let mut opt = objective.optimizer(&vs)?;
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    rng.set_stream(1);
    let [train_x, train_y, val_x, val_y, test_x, test_y] = on_device(data, device)?;
    let train_domain = optional_on_device(&data.train_domain, device)?;
    let val_domain = optional_on_device(&data.val_domain, device)?;
    let epoch_data = EpochData {
        train_x: &train_x,
        train_domain: train_domain.as_ref(),
        val_x: &val_x,
        val_domain: val_domain.as_ref(),
        test_x: &test_x,
        test_y: &test_y,
        num_domains: data.num_domains(),
    };
    debug!(
        params,
        objective = objective.name(),
        inherited = inherited.copied.len(),
        steps_per_epoch,
        epochs = hp.epochs,
        "training started"
    );

    let started = Instant::now();
    let mut eval_seconds = 0.0;
    let mut order: Vec<i64> = (0..n_train as i64).collect();
    // Training batches only (see crate::augment); evaluation reads the split as it is.
    let augmenter = Augmenter::new(hp.augment, plan.seed);
    let mut last = EpochReport {
        epoch: 0,
        total_epochs: hp.epochs,
        train_loss: f64::NAN,
        val_accuracy: 0.0,
        metrics: BTreeMap::new(),
    };
    let mut stopped = false;
    for epoch in 1..=hp.epochs {
        order.shuffle(&mut rng);
        let perm = Tensor::f_from_slice(&order)?.f_to_device(device)?;
        let mut loss_sum = Tensor::f_zeros([], (Kind::Float, device))?;
        let mut seen = 0i64;
        let mut running_loss = None;
        for (b, &(start, len)) in batches.iter().enumerate() {
            let step = (epoch as usize - 1) * steps_per_epoch + b;
            objective.set_step_size(&mut opt, step, total_steps);
            let idx = perm.f_narrow(0, start, len)?;
            let xs = train_x.f_index_select(0, &idx)?;
            let xs = match &augmenter {
                Some(a) => a.apply(&xs, step as u64)?,
                None => xs,
            };
            let ys = train_y.f_index_select(0, &idx)?;
            let domains = match &train_domain {
                Some(d) => Some(d.f_index_select(0, &idx)?),
                None => None,
            };
            let batch = Batch {
                xs: &xs,
                ys: &ys,
                domains: domains.as_ref(),
            };
            let loss = objective.step(&net, &mut opt, &batch)?;
            objective.after_step()?;
            loss_sum = loss_sum.f_add(&loss.f_detach()?.f_mul_scalar(len)?)?;
            seen += len;
            if (b + 1) % NAN_CHECK_EVERY == 0 {
                let running = f64::try_from(&loss_sum)?;
                if !running.is_finite() {
                    return Err(WorkerError::Diverged {
                        epoch,
                        loss: running,
                    });
                }
                running_loss = Some(running / seen as f64);
            }
            on_batch(&BatchProgress {
                epoch,
                total_epochs: hp.epochs,
                batch: b + 1,
                batches: steps_per_epoch,
                running_loss,
            });
        }
        let train_loss = f64::try_from(&loss_sum)? / seen as f64;
        if !train_loss.is_finite() {
            return Err(WorkerError::Diverged {
                epoch,
                loss: train_loss,
            });
        }
        let eval_started = Instant::now();
        let val_accuracy = accuracy(&net, &val_x, &val_y)?;
        eval_seconds += eval_started.elapsed().as_secs_f64();
        last = EpochReport {
            epoch,
            total_epochs: hp.epochs,
            train_loss,
            val_accuracy,
            metrics: objective.epoch_metrics(&net, &epoch_data)?,
        };
        debug!(epoch, train_loss, val_accuracy, "epoch finished");
        if on_epoch(&last) == Control::Stop && epoch < hp.epochs {
            stopped = true;
            break;
        }
    }
    let train_seconds = started.elapsed().as_secs_f64();
    let test_accuracy = accuracy(&net, &test_x, &test_y)?;
    Ok(TrialOutcome {
        train_examples: n_train,
        val_accuracy: last.val_accuracy,
        test_accuracy,
        train_loss: last.train_loss,
        epochs_run: last.epoch,
        train_seconds,
        eval_seconds,
        stopped,
        params,
        inherited,
        checkpoint: checkpoint_bytes(&vs)?,
    })
}

/// The prefix of the classifier head's variables (`head.weight`, `head.bias`, `head.scale`).
const HEAD_PREFIX: &str = "head.";

/// A head-only fine-tune: every variable outside the classifier head stops receiving gradients,
/// so the optimizers (which skip a variable without a gradient, weight decay included) leave it
/// as it was initialised or inherited. Batch-norm running statistics are buffers, not
/// variables: they still follow the data in training mode. Returns how many were frozen.
pub fn freeze_all_but_head(vs: &nn::VarStore) -> usize {
    let mut frozen = 0;
    for (name, var) in vs.variables() {
        if !name.starts_with(HEAD_PREFIX) {
            let _ = var.set_requires_grad(false);
            frozen += 1;
        }
    }
    frozen
}

/// Builds `genome` with the head `checkpoint` was trained with and loads every weight from it;
/// the var store owns the weights the network uses.
pub fn load_model(
    genome: &Genome,
    checkpoint: &Path,
    device: Device,
) -> Result<(nn::VarStore, GenomeNet), WorkerError> {
    let head = head_of_checkpoint(checkpoint)?;
    let mut vs = nn::VarStore::new(device);
    let net = model::build_with(
        &vs.root(),
        genome,
        BuildOptions {
            head,
            invariant_group: None,
        },
    )?;
    load_checkpoint(&mut vs, checkpoint)?;
    Ok((vs, net))
}

/// Loads a genome's weights from a safetensors checkpoint and scores it on a split: returns
/// `(val_accuracy, test_accuracy)`. The head is the one the checkpoint was trained with (a
/// cosine head when it has `head.scale`, see [`crate::model::Head`]).
pub fn evaluate_checkpoint(
    genome: &Genome,
    checkpoint: &Path,
    data: &SplitData,
    device: Device,
) -> Result<(f64, f64), WorkerError> {
    check_fits(genome, data)?;
    let (_vs, net) = load_model(genome, checkpoint, device)?;
    let [_, _, val_x, val_y, test_x, test_y] = on_device(data, device)?;
    let val = accuracy(&net, &val_x, &val_y)?;
    let test = accuracy(&net, &test_x, &test_y)?;
    Ok((val, test))
}

/// The head a checkpoint was trained with: [`Head::Cosine`] with the stored scale when the
/// file has `head.scale`, [`Head::Split`] with the stored sizes when it has `split.inv.weight`
/// and `split.domain.weight`, else [`Head::Linear`].
pub fn head_of_checkpoint(path: &Path) -> Result<Head, WorkerError> {
    let fail = |reason: String| WorkerError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(fail("file does not exist".into()));
    }
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| fail(format!("not a readable safetensors file: {e}")))?;
    let find = |wanted: &str| {
        tensors
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, t)| t)
    };
    if let Some(t) = find("head.scale") {
        let scale = f64::try_from(&t.f_view([-1])?.f_get(0)?)?;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(fail(format!("head.scale is {scale}, not a positive scale")));
        }
        return Ok(Head::Cosine { scale });
    }
    match (find("split.inv.weight"), find("split.domain.weight")) {
        (None, None) => Ok(Head::Linear),
        (Some(inv), Some(domain)) => {
            let (inv, domain) = (inv.size(), domain.size());
            match (inv.as_slice(), domain.as_slice()) {
                ([dim, _], [domains, dim2]) if dim == dim2 && *dim > 0 && *domains > 0 => {
                    Ok(Head::Split {
                        dim: *dim as u32,
                        domains: *domains as u32,
                    })
                }
                _ => Err(fail(format!(
                    "split.inv.weight {inv:?} and split.domain.weight {domain:?} do not fit together"
                ))),
            }
        }
        (Some(_), None) => Err(fail(
            "has split.inv.weight but no split.domain.weight".into(),
        )),
        (None, Some(_)) => Err(fail(
            "has split.domain.weight but no split.inv.weight".into(),
        )),
    }
}

/// Loads every variable of `vs` from a safetensors file; fails, naming the variable, when one
/// is missing or has another shape. Extra tensors in the file are ignored.
pub fn load_checkpoint(vs: &mut nn::VarStore, path: &Path) -> Result<(), WorkerError> {
    let fail = |reason: String| WorkerError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(fail("file does not exist".into()));
    }
    let stored: HashMap<String, Vec<i64>> = Tensor::read_safetensors(path)
        .map_err(|e| fail(format!("not a readable safetensors file: {e}")))?
        .into_iter()
        .map(|(name, t)| (name, t.size()))
        .collect();
    let mut wanted: Vec<(String, Vec<i64>)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.size()))
        .collect();
    wanted.sort();
    for (name, size) in &wanted {
        match stored.get(name) {
            None => return Err(fail(format!("has no tensor {name} that the genome needs"))),
            Some(s) if s != size => {
                return Err(fail(format!(
                    "tensor {name} has shape {s:?}, the genome needs {size:?}"
                )))
            }
            Some(_) => {}
        }
    }
    vs.load(path).map_err(|e| fail(e.to_string()))
}

/// Fraction of examples whose arg-max logit is the label; eval mode, no gradients, batched.
/// Accuracies computed on the same device with the same weights are identical.
pub fn accuracy(net: &GenomeNet, xs: &Tensor, ys: &Tensor) -> Result<f64, WorkerError> {
    let n = xs.size()[0];
    if n == 0 {
        return Ok(0.0);
    }
    let batch = match xs.device() {
        Device::Cpu => EVAL_BATCH_CPU,
        _ => EVAL_BATCH_GPU,
    };
    let correct = tch::no_grad(|| -> Result<i64, TchError> {
        let mut correct = Tensor::f_zeros([], (Kind::Int64, xs.device()))?;
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let logits = net.f_forward_t(&xs.f_narrow(0, start, len)?, false)?;
            let hits = logits
                .f_argmax(-1, false)?
                .f_eq_tensor(&ys.f_narrow(0, start, len)?)?;
            correct = correct.f_add(&hits.f_sum(Kind::Int64)?)?;
            start += len;
        }
        i64::try_from(&correct)
    })?;
    Ok(correct as f64 / n as f64)
}

/// The learning rate of step `step` (0-based) out of `total_steps`: constant; cosine from
/// `base` to 0; or one-cycle, rising linearly from `base / 10` to `base` over the first 10% of
/// steps and then falling linearly to 0 at `total_steps`.
pub fn learning_rate(schedule: Schedule, base: f64, step: usize, total_steps: usize) -> f64 {
    let total = total_steps.max(1) as f64;
    let t = step as f64;
    match schedule {
        Schedule::Constant => base,
        Schedule::Cosine => base * 0.5 * (1.0 + (PI * t / total).cos()),
        Schedule::OneCycle => {
            let warm = (0.1 * total).round().max(1.0);
            if t < warm {
                base / 10.0 + (base - base / 10.0) * t / warm
            } else {
                base * ((total - t) / (total - warm).max(1.0)).max(0.0)
            }
        }
    }
}

/// `(start, len)` of each batch of an epoch. A final batch of one example is dropped (unless
/// the batch size is 1): batch-norm cannot train on it.
fn batch_ranges(n: usize, batch_size: usize) -> Vec<(i64, i64)> {
    let batch = batch_size.clamp(1, n.max(1));
    let mut out: Vec<(i64, i64)> = (0..n)
        .step_by(batch)
        .map(|s| (s as i64, batch.min(n - s) as i64))
        .collect();
    if batch > 1 && out.len() > 1 && out.last().is_some_and(|&(_, len)| len == 1) {
        out.pop();
    }
    out
}

/// Checks that the genome takes the split's images and has a logit for every label.
fn check_fits(genome: &Genome, data: &SplitData) -> Result<(), WorkerError> {
    check_input(genome, data)?;
    if data.num_classes > genome.num_classes {
        return Err(WorkerError::Genome(format!(
            "the genome has {} classes but the data has {}",
            genome.num_classes, data.num_classes
        )));
    }
    Ok(())
}

/// Checks that `genome` is valid and takes the images of `data` (any class count: a probe reads
/// a new task with the source's head).
pub(crate) fn check_input(genome: &Genome, data: &SplitData) -> Result<(), WorkerError> {
    genome.validate()?;
    let size = data.train_x.size();
    let input = genome.input;
    let want = [
        input.channels as i64,
        input.height as i64,
        input.width as i64,
    ];
    if size.len() != 4 || size[1..] != want {
        return Err(WorkerError::Genome(format!(
            "the genome takes {}x{}x{} images but the data has {:?}",
            input.channels,
            input.height,
            input.width,
            size.get(1..).unwrap_or(&[])
        )));
    }
    Ok(())
}

/// The split's tensors on `device` (shallow copies when they are already there), in the order
/// train x/y, validation x/y, test x/y.
fn on_device(data: &SplitData, device: Device) -> Result<[Tensor; 6], WorkerError> {
    let move_ = |t: &Tensor| t.f_to_device(device);
    Ok([
        move_(&data.train_x)?,
        move_(&data.train_y)?,
        move_(&data.val_x)?,
        move_(&data.val_y)?,
        move_(&data.test_x)?,
        move_(&data.test_y)?,
    ])
}

fn optional_on_device(t: &Option<Tensor>, device: Device) -> Result<Option<Tensor>, TchError> {
    t.as_ref().map(|t| t.f_to_device(device)).transpose()
}

/// Serialises a var store to safetensors bytes through a temporary file.
fn checkpoint_bytes(vs: &nn::VarStore) -> Result<Vec<u8>, WorkerError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "explore-worker-{}-{}.safetensors",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _cleanup = RemoveOnDrop(path.clone());
    vs.save(&path).map_err(|e| WorkerError::Checkpoint {
        path: path.clone(),
        reason: format!("cannot write: {e}"),
    })?;
    std::fs::read(&path).map_err(|e| WorkerError::io(&path, e))
}

/// Deletes a file when dropped.
#[derive(Debug)]
pub(crate) struct RemoveOnDrop(pub(crate) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests;
