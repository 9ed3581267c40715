//! Probe trials (S2): how well a trained source model is likely to transfer to a new task,
//! measured in seconds instead of a fine-tune.
//!
//! A probe loads a source checkpoint whole (its source head included), runs the network in
//! evaluation mode over up to [`MAX_PROBE_EXAMPLES`] training examples of the new task and
//! scores the result with [`crate::transferability`]: LogME of the trunk's features against the
//! new labels, LEEP and NCE of the source head's predictions against them. It also measures the
//! model's latency per image on the worker's own device: the median of [`LATENCY_REPEATS`]
//! forward passes of a batch of one (after [`LATENCY_WARM_UP`] unmeasured ones; a GPU is
//! synchronised around each), which is what a `transfer.max_latency_ms` constraint is checked
//! against. Nothing is trained and no checkpoint is written.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use explore_common::genome::Genome;
use tch::{Device, Kind, Tensor};

use crate::data::SplitData;
use crate::error::WorkerError;
use crate::model;
use crate::train::{check_input, load_model};
use crate::transferability::{self, Transferability};

/// At most this many training examples feed the scores (the split's first ones; the split is
/// already a seeded shuffle).
pub const MAX_PROBE_EXAMPLES: i64 = 2000;
/// Examples per forward pass while extracting features.
const FEATURE_BATCH: i64 = 250;
/// Unmeasured forward passes before the latency is timed.
pub const LATENCY_WARM_UP: usize = 3;
/// Timed forward passes of one image; the latency is their median.
pub const LATENCY_REPEATS: usize = 21;

/// What a probe measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOutcome {
    /// LogME, LEEP and NCE of the source model on the new task.
    pub scores: Transferability,
    /// Median milliseconds of one forward pass of one image.
    pub latency_ms: f64,
    /// Training examples the scores were computed on.
    pub examples: usize,
    /// Classes of the new task.
    pub classes: u32,
    /// Wall time of the whole probe.
    pub seconds: f64,
}

impl ProbeOutcome {
    /// The metrics a probe reports to the master (names as in the protocol's `TrialKind`).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("probe.logme".to_string(), self.scores.logme),
            ("probe.leep".to_string(), self.scores.leep),
            ("probe.nce".to_string(), self.scores.nce),
            ("probe.latency_ms".to_string(), self.latency_ms),
            ("probe.examples".to_string(), self.examples as f64),
            ("probe.classes".to_string(), f64::from(self.classes)),
            ("probe.seconds".to_string(), self.seconds),
        ])
    }

    /// The probe's score in `[0, 1]`: `exp(LEEP)`, the geometric mean of the likelihood the
    /// source head (through LEEP's empirical label map) gives the new labels.
    pub fn score(&self) -> f64 {
        self.scores.leep.exp().clamp(0.0, 1.0)
    }
}

/// Probes `genome` with the weights of `checkpoint` on the training split of `data`; blocking.
pub fn probe_trial(
    genome: &Genome,
    checkpoint: &Path,
    data: &SplitData,
    device: Device,
) -> Result<ProbeOutcome, WorkerError> {
    let started = Instant::now();
    check_input(genome, data)?;
    let n = data.train_len().min(MAX_PROBE_EXAMPLES as usize) as i64;
    if n < 2 {
        return Err(WorkerError::Split(format!(
            "the training split has {n} example(s), a probe needs at least 2"
        )));
    }
    let (_vs, net) = load_model(genome, checkpoint, device)?;
    let xs = data.train_x.f_narrow(0, 0, n)?.f_to_device(device)?;
    let labels = data.train_y.f_narrow(0, 0, n)?.to_device(Device::Cpu);

    let (features, logits) = tch::no_grad(|| -> Result<(Tensor, Tensor), WorkerError> {
        let mut features = Vec::new();
        let mut logits = Vec::new();
        let mut start = 0;
        while start < n {
            let len = FEATURE_BATCH.min(n - start);
            let batch = xs.f_narrow(0, start, len)?;
            let f = net.f_features_t(&batch, false)?;
            logits.push(
                net.f_head(&f, false)?
                    .f_to_kind(Kind::Double)?
                    .to_device(Device::Cpu),
            );
            features.push(f.f_to_kind(Kind::Double)?.to_device(Device::Cpu));
            start += len;
        }
        Ok((Tensor::f_cat(&features, 0)?, Tensor::f_cat(&logits, 0)?))
    })?;
    let scores = transferability::scores(&features, &logits, &labels)?;
    let latency_ms = latency_ms(&net, &xs.f_narrow(0, 0, 1)?, device)?;
    Ok(ProbeOutcome {
        scores,
        latency_ms,
        examples: n as usize,
        classes: data.num_classes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Median milliseconds of a forward pass of `one` (a batch of one image) in evaluation mode.
fn latency_ms(net: &model::GenomeNet, one: &Tensor, device: Device) -> Result<f64, WorkerError> {
    let sync = || {
        if let Device::Cuda(index) = device {
            tch::Cuda::synchronize(index as i64);
        }
    };
    tch::no_grad(|| -> Result<f64, WorkerError> {
        for _ in 0..LATENCY_WARM_UP {
            let _warm_up = net.f_forward_t(one, false)?;
        }
        sync();
        let mut times = Vec::with_capacity(LATENCY_REPEATS);
        for _ in 0..LATENCY_REPEATS {
            let start = Instant::now();
            let out = net.f_forward_t(one, false)?;
            sync();
            // Reading one value forces the result on every device.
            let _ = out.f_sum(Kind::Float)?.f_double_value(&[])?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    })
}

#[cfg(test)]
mod tests {
    use explore_common::hparams::{HyperParams, Objective, Optimizer, Schedule};
    use tch::nn;

    use super::*;
    use crate::testing::{genome, split, torch_lock as lock};
    use crate::train::{train_trial, Control, TrialPlan};

    /// A checkpoint of `genome()` trained for `epochs` epochs on `split()`, or freshly
    /// initialised (`epochs` = 0).
    fn checkpoint(dir: &Path, epochs: u32) -> std::path::PathBuf {
        let path = dir.join(format!("model-{epochs}.safetensors"));
        if epochs == 0 {
            tch::manual_seed(5);
            let vs = nn::VarStore::new(Device::Cpu);
            model::build(&vs.root(), &genome()).unwrap();
            vs.save(&path).unwrap();
            return path;
        }
        let plan = TrialPlan {
            genome: genome(),
            hparams: HyperParams {
                optimizer: Optimizer::AdamW,
                learning_rate: 0.01,
                schedule: Schedule::Constant,
                batch_size: 32,
                weight_decay: 1e-4,
                epochs,
                objective: Objective::Plain,
                head_only: false,
                augment: Default::default(),
            },
            seed: 5,
            parent_checkpoint: None,
        };
        let out = train_trial(&plan, &split(), Device::Cpu, &mut |_| Control::Continue).unwrap();
        assert!(out.val_accuracy > 0.9, "{out:?}");
        std::fs::write(&path, &out.checkpoint).unwrap();
        path
    }

    #[test]
    fn a_trained_model_probes_as_more_transferable_than_its_untrained_twin() {
        let _guard = lock();
        let dir = tempfile::tempdir().unwrap();
        let data = split();
        let trained =
            probe_trial(&genome(), &checkpoint(dir.path(), 4), &data, Device::Cpu).unwrap();
        let untrained =
            probe_trial(&genome(), &checkpoint(dir.path(), 0), &data, Device::Cpu).unwrap();
        assert!(
            trained.scores.logme > untrained.scores.logme + 0.1,
            "{trained:?} vs {untrained:?}"
        );
        assert!(
            trained.scores.leep > untrained.scores.leep,
            "{trained:?} vs {untrained:?}"
        );
        assert!(
            trained.scores.nce > untrained.scores.nce,
            "{trained:?} vs {untrained:?}"
        );
        // The trained head predicts these very labels: LEEP near its maximum, 0.
        assert!(trained.scores.leep > -0.3, "{trained:?}");
        assert_eq!(trained.examples, 300);
        assert_eq!(trained.classes, 3);
        assert!(trained.latency_ms > 0.0 && trained.latency_ms.is_finite());
        let metrics = trained.metrics();
        assert_eq!(metrics["probe.logme"], trained.scores.logme);
        assert_eq!(metrics["probe.examples"], 300.0);
        assert!((0.0..=1.0).contains(&trained.score()));
        assert!((trained.score() - trained.scores.leep.exp()).abs() < 1e-12);
    }

    #[test]
    fn a_probe_is_deterministic_apart_from_its_timings() {
        let _guard = lock();
        let dir = tempfile::tempdir().unwrap();
        let data = split();
        let path = checkpoint(dir.path(), 0);
        let a = probe_trial(&genome(), &path, &data, Device::Cpu).unwrap();
        let b = probe_trial(&genome(), &path, &data, Device::Cpu).unwrap();
        assert_eq!(a.scores, b.scores);
    }

    #[test]
    fn a_checkpoint_of_another_genome_or_data_of_another_shape_is_refused() {
        let _guard = lock();
        let dir = tempfile::tempdir().unwrap();
        let data = split();
        let path = checkpoint(dir.path(), 0);
        let mut wider = genome();
        wider.blocks[0] = explore_common::genome::Block::Conv {
            out_channels: 8,
            kernel: 3,
            stride: 1,
        };
        let err = probe_trial(&wider, &path, &data, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("model-0.safetensors"), "{err}");
        let mut other_input = genome();
        other_input.input.height = 8;
        other_input.input.width = 8;
        let err = probe_trial(&other_input, &path, &data, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("1x8x8"), "{err}");
        let missing = dir.path().join("missing.safetensors");
        let err = probe_trial(&genome(), &missing, &data, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("missing.safetensors"), "{err}");
    }
}
