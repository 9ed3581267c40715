//! `worker export`: a trained checkpoint as a TorchScript module that PyTorch users load with
//! `torch.jit.load`, with nothing of explore needed.
//!
//! The module takes what a PyTorch user has: `float32` images `[N, C, H, W]` with intensities in
//! `[0, 1]` (pixel bytes divided by 255), on the CPU. It applies the trainer's normalisation
//! itself — per channel `(x − mean) / std` with the statistics of the trial's training split
//! ([`DataPlan::normalisation`]), baked in as constants — and returns the logits `[N, classes]`
//! of the network in eval mode (no dropout, batch norm with its running statistics). The
//! weights are constants of the traced graph; the batch size is free.
//!
//! [`export_torchscript`] checks the file it wrote: it loads it back, runs it on the split's
//! validation and test images turned back into `[0, 1]` intensities, and compares its accuracy
//! with the network's own on the normalised images ([`ExportReport`]).

use std::path::Path;

use explore_common::genome::Genome;
use tch::{CModule, Device, Kind, TchError, Tensor};

use crate::data::{ChannelStats, SplitData};
use crate::error::WorkerError;
use crate::model::{GenomeNet, Head};
use crate::train::{accuracy, head_of_checkpoint, load_model};

/// Examples per forward pass when scoring the exported module.
const EVAL_BATCH: i64 = 250;

/// Largest accuracy difference between the traced module on `[0, 1]` images and the network on
/// normalised images that an export accepts (rounding can flip a near-tied prediction).
pub const MAX_ACCURACY_GAP: f64 = 0.005;

/// What an export wrote and how its check went.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    /// The normalisation baked into the module, one entry per channel.
    pub normalisation: Vec<ChannelStats>,
    /// The head the checkpoint was trained with.
    pub head: Head,
    /// Outputs of the module (the genome's classes).
    pub num_classes: u32,
    /// Accuracy of the saved module, loaded back, on the validation images in `[0, 1]`.
    pub traced_val_accuracy: f64,
    /// Accuracy of the saved module, loaded back, on the test images in `[0, 1]`.
    pub traced_test_accuracy: f64,
    /// Accuracy of the network itself on the normalised validation images.
    pub network_val_accuracy: f64,
    /// Accuracy of the network itself on the normalised test images.
    pub network_test_accuracy: f64,
    /// Largest absolute difference between the module's and the network's test logits.
    pub max_logit_difference: f64,
}

/// Traces `genome` with the `weights` of a checkpoint (safetensors, as `worker train
/// --save-checkpoint` and the master store them) into a TorchScript module that normalises its
/// `[0, 1]` input with `normalisation` and returns logits; saves it to `out` and checks it on
/// `split` (normalised with the same statistics). Fails when the checkpoint does not fit the
/// genome, the normalisation has the wrong number of channels, or the saved module disagrees
/// with the network by more than [`MAX_ACCURACY_GAP`].
pub fn export_torchscript(
    genome: &Genome,
    weights: &Path,
    normalisation: &[ChannelStats],
    split: &SplitData,
    out: &Path,
) -> Result<ExportReport, WorkerError> {
    let channels = genome.input.channels as usize;
    if normalisation.len() != channels {
        return Err(WorkerError::Genome(format!(
            "the genome takes {channels}-channel images but the data has {} channels",
            normalisation.len()
        )));
    }
    let head = head_of_checkpoint(weights)?;
    let (mut vs, net) = load_model(genome, weights, Device::Cpu)?;
    // Trainable variables would enter the graph as constants that require grad, which the
    // tracer refuses.
    vs.freeze();
    let (mean, std) = stats_tensors(normalisation)?;
    let module = tch::no_grad(|| trace(&net, genome, &mean, &std))?;
    module.save(out).map_err(|e| WorkerError::Checkpoint {
        path: out.to_path_buf(),
        reason: format!("cannot save the TorchScript module: {e}"),
    })?;
    let mut loaded = CModule::load(out).map_err(|e| WorkerError::Checkpoint {
        path: out.to_path_buf(),
        reason: format!("cannot load the TorchScript module back: {e}"),
    })?;
    loaded.set_eval();

    let cpu = |t: &Tensor| t.f_to_device(Device::Cpu);
    let (val_x, val_y) = (cpu(&split.val_x)?, cpu(&split.val_y)?);
    let (test_x, test_y) = (cpu(&split.test_x)?, cpu(&split.test_y)?);
    // The images as a PyTorch user has them: the trainer's normalisation undone.
    let raw = |x: &Tensor| x.f_mul(&std)?.f_add(&mean);
    let (val_raw, test_raw) = (raw(&val_x)?, raw(&test_x)?);
    let report = ExportReport {
        normalisation: normalisation.to_vec(),
        head,
        num_classes: genome.num_classes,
        traced_val_accuracy: module_accuracy(&loaded, &val_raw, &val_y)?,
        traced_test_accuracy: module_accuracy(&loaded, &test_raw, &test_y)?,
        network_val_accuracy: accuracy(&net, &val_x, &val_y)?,
        network_test_accuracy: accuracy(&net, &test_x, &test_y)?,
        max_logit_difference: max_logit_difference(&loaded, &net, &test_raw, &test_x)?,
    };
    let gap = (report.traced_test_accuracy - report.network_test_accuracy)
        .abs()
        .max((report.traced_val_accuracy - report.network_val_accuracy).abs());
    if gap > MAX_ACCURACY_GAP {
        return Err(WorkerError::Torch(format!(
            "the exported module disagrees with the network: test accuracy {:.4} vs {:.4}, \
             validation accuracy {:.4} vs {:.4}",
            report.traced_test_accuracy,
            report.network_test_accuracy,
            report.traced_val_accuracy,
            report.network_val_accuracy
        )));
    }
    Ok(report)
}

/// The normalisation as `[1, C, 1, 1]` mean and standard-deviation tensors.
fn stats_tensors(normalisation: &[ChannelStats]) -> Result<(Tensor, Tensor), WorkerError> {
    let shape = [1, normalisation.len() as i64, 1, 1];
    let column = |f: fn(&ChannelStats) -> f64| -> Result<Tensor, TchError> {
        let values: Vec<f32> = normalisation.iter().map(|s| f(s) as f32).collect();
        Tensor::f_from_slice(&values)?.f_view(shape)
    };
    Ok((column(|s| s.mean)?, column(|s| s.std)?))
}

/// Traces `x ↦ net((x − mean) / std)` in eval mode on an example batch of the genome's input.
fn trace(
    net: &GenomeNet,
    genome: &Genome,
    mean: &Tensor,
    std: &Tensor,
) -> Result<CModule, WorkerError> {
    let input = genome.input;
    let example = Tensor::f_rand(
        [
            2,
            input.channels as i64,
            input.height as i64,
            input.width as i64,
        ],
        (Kind::Float, Device::Cpu),
    )?;
    // The tracing closure cannot return an error; it keeps the first one here.
    let mut failure = None;
    let module =
        CModule::create_by_tracing("ExploreClassifier", "forward", &[example], &mut |inputs| {
            let logits = inputs[0]
                .f_sub(mean)
                .and_then(|x| x.f_div(std))
                .and_then(|x| net.f_forward_t(&x, false));
            match logits {
                Ok(logits) => vec![logits],
                Err(e) => {
                    failure = Some(e);
                    Vec::new()
                }
            }
        });
    if let Some(e) = failure {
        return Err(WorkerError::Torch(format!(
            "tracing the network failed: {e}"
        )));
    }
    Ok(module?)
}

/// Fraction of examples whose arg-max output of `module` is the label; batched, no gradients.
fn module_accuracy(module: &CModule, xs: &Tensor, ys: &Tensor) -> Result<f64, WorkerError> {
    let n = xs.size()[0];
    if n == 0 {
        return Ok(0.0);
    }
    let correct = tch::no_grad(|| -> Result<i64, TchError> {
        let mut correct = 0;
        let mut start = 0;
        while start < n {
            let len = EVAL_BATCH.min(n - start);
            let logits = module.forward_ts(&[xs.f_narrow(0, start, len)?])?;
            let hits = logits
                .f_argmax(-1, false)?
                .f_eq_tensor(&ys.f_narrow(0, start, len)?)?
                .f_sum(Kind::Int64)?;
            correct += i64::try_from(&hits)?;
            start += len;
        }
        Ok(correct)
    })?;
    Ok(correct as f64 / n as f64)
}

/// Largest absolute difference between the module's logits on `raw` and the network's on the
/// same images normalised (`normalised`), over the first batch.
fn max_logit_difference(
    module: &CModule,
    net: &GenomeNet,
    raw: &Tensor,
    normalised: &Tensor,
) -> Result<f64, WorkerError> {
    let n = raw.size()[0].min(EVAL_BATCH);
    if n == 0 {
        return Ok(0.0);
    }
    let diff = tch::no_grad(|| -> Result<f64, TchError> {
        let traced = module.forward_ts(&[raw.f_narrow(0, 0, n)?])?;
        let direct = net.f_forward_t(&normalised.f_narrow(0, 0, n)?, false)?;
        f64::try_from(&traced.f_sub(&direct)?.f_abs()?.f_max()?)
    })?;
    Ok(diff)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data::{DataPlan, Dataset, SplitConfig};
    use crate::train::{train_trial, Control, TrialPlan};

    /// A 1×8×8 dataset of two classes (bright top half or bright bottom half) with noise.
    fn dataset(n_train: usize, n_test: usize) -> Dataset {
        let [train_x, train_y, test_x, test_y] = raw(n_train, n_test);
        Dataset::from_raw((1, 8, 8), train_x, train_y, test_x, test_y).unwrap()
    }

    /// The pixels and labels of [`dataset`]: training images, labels, test images, labels.
    fn raw(n_train: usize, n_test: usize) -> [Vec<u8>; 4] {
        let mut state = 7u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let mut make = |n: usize| {
            let mut pixels = Vec::with_capacity(n * 64);
            let mut labels = Vec::with_capacity(n);
            for i in 0..n {
                let label = (i % 2) as u8;
                for row in 0..8 {
                    for _ in 0..8 {
                        let bright = (row < 4) == (label == 0);
                        let base = if bright { 170 } else { 40 };
                        pixels.push((base + next() % 80) as u8);
                    }
                }
                labels.push(label);
            }
            (pixels, labels)
        };
        let (train_x, train_y) = make(n_train);
        let (test_x, test_y) = make(n_test);
        [train_x, train_y, test_x, test_y]
    }

    /// A small network with every layer whose eval mode differs from training: batch norm
    /// and dropout.
    fn genome() -> Genome {
        use explore_common::genome::{Block, InputShape};
        Genome {
            input: InputShape {
                channels: 1,
                height: 8,
                width: 8,
            },
            num_classes: 2,
            blocks: vec![
                Block::conv3(8),
                Block::BatchNorm,
                Block::relu(),
                Block::Dropout { rate: 0.3 },
                Block::Dense { units: 16 },
                Block::relu(),
            ],
        }
    }

    #[test]
    fn normalisation_undoes_exactly_what_the_split_applies() {
        let plan = DataPlan::single(Arc::new(dataset(200, 40)));
        let cfg = SplitConfig {
            train_subset: 150,
            ..SplitConfig::default()
        };
        let stats = plan.normalisation(&cfg).unwrap();
        assert_eq!(stats.len(), 1);
        let split = plan.split(&cfg, Device::Cpu).unwrap();
        // Undone with the right statistics, every normalised pixel is a byte over 255.
        let bytes = (&split.train_x * stats[0].std + stats[0].mean) * 255.0;
        let off = (&bytes - bytes.round()).abs().max().double_value(&[]);
        assert!(off < 1e-3, "pixels are bytes again: {off}");
        let mean = split.train_x.mean(Kind::Float).double_value(&[]);
        assert!(mean.abs() < 1e-4, "the training split is centred: {mean}");
    }

    /// Writes `data`'s files as uncompressed IDX files in `dir` and returns `[data]` keys naming
    /// them.
    fn idx_files([train_x, train_y, test_x, test_y]: [Vec<u8>; 4], dir: &Path) -> String {
        let images = |pixels: &[u8], n: usize| {
            let mut out = vec![0, 0, 8, 3];
            for d in [n as u32, 8, 8] {
                out.extend_from_slice(&d.to_be_bytes());
            }
            out.extend_from_slice(pixels);
            out
        };
        let labels = |labels: &[u8]| {
            let mut out = vec![0, 0, 8, 1];
            out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
            out.extend_from_slice(labels);
            out
        };
        let files = [
            ("train_images", images(&train_x, train_y.len())),
            ("train_labels", labels(&train_y)),
            ("test_images", images(&test_x, test_y.len())),
            ("test_labels", labels(&test_y)),
        ];
        let mut keys = String::from("dataset = \"idx\"\n");
        for (key, bytes) in files {
            let path = dir.join(key);
            std::fs::write(&path, bytes).unwrap();
            keys += &format!("{key} = {:?}\n", path.display().to_string());
        }
        keys
    }

    #[test]
    fn normalisation_of_a_derived_domain_is_that_of_its_pooled_training_split() {
        let dir = tempfile::tempdir().unwrap();
        let keys = idx_files(raw(120, 20), dir.path());
        let text = format!(
            "{keys}train_subset = 100\nvalidation_fraction = 0.2\n\
             [transform]\nrotate = 30.0\ninvert = true\nnoise = 0.1\n"
        );
        let cfg: explore_common::spec::DataConfig = toml::from_str(&text).unwrap();
        cfg.validate().unwrap();
        let plan = DataPlan::resolve(&cfg, dir.path(), &crate::data::DatasetCache::new()).unwrap();
        let split_cfg = SplitConfig::from_config(&cfg, 5);
        let stats = plan.normalisation(&split_cfg).unwrap();
        let split = plan.split(&split_cfg, Device::Cpu).unwrap();
        let bytes = (&split.train_x * stats[0].std + stats[0].mean) * 255.0;
        let off = (&bytes - bytes.round()).abs().max().double_value(&[]);
        assert!(off < 1e-3, "pixels are bytes again: {off}");
        let mean = split.train_x.mean(Kind::Float).double_value(&[]);
        assert!(mean.abs() < 1e-4, "the training split is centred: {mean}");
        // The undone test images are bytes too: they were normalised with the same statistics.
        let bytes = (&split.test_x * stats[0].std + stats[0].mean) * 255.0;
        let off = (&bytes - bytes.round()).abs().max().double_value(&[]);
        assert!(off < 1e-3, "test pixels are bytes again: {off}");
        // Without the transform the statistics differ: they are the derived domain's.
        let plain = DataPlan::single(Arc::new(dataset(120, 20)));
        assert_ne!(plain.normalisation(&split_cfg).unwrap(), stats);
    }

    #[test]
    fn the_traced_module_takes_unit_range_images_and_matches_the_network() {
        let data = dataset(300, 100);
        let plan = DataPlan::single(Arc::new(data));
        let cfg = SplitConfig::default();
        let split = plan.split(&cfg, Device::Cpu).unwrap();
        let stats = plan.normalisation(&cfg).unwrap();
        let hparams = explore_common::hparams::HyperParams {
            epochs: 2,
            ..Default::default()
        };
        let genome = genome();
        let trial = TrialPlan {
            genome: genome.clone(),
            hparams,
            seed: 3,
            parent_checkpoint: None,
        };
        let outcome = train_trial(&trial, &split, Device::Cpu, &mut |_| Control::Continue).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("w.safetensors");
        std::fs::write(&weights, &outcome.checkpoint).unwrap();
        let out = dir.path().join("model.pt");
        let report = export_torchscript(&genome, &weights, &stats, &split, &out).unwrap();
        assert!(out.is_file());
        assert_eq!(report.traced_test_accuracy, report.network_test_accuracy);
        assert!(
            (report.network_test_accuracy - outcome.test_accuracy).abs() < 1e-9,
            "{report:?} vs {}",
            outcome.test_accuracy
        );
        assert!(report.max_logit_difference < 1e-3, "{report:?}");
        assert!(report.traced_test_accuracy > 0.9, "it learned: {report:?}");

        // Any batch size works, and the module needs nothing but libtorch.
        let module = CModule::load(&out).unwrap();
        let logits = module
            .forward_ts(&[Tensor::rand([5, 1, 8, 8], (Kind::Float, Device::Cpu))])
            .unwrap();
        assert_eq!(logits.size(), vec![5, 2]);
    }

    #[test]
    fn a_checkpoint_of_another_genome_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("missing.safetensors");
        let split = DataPlan::single(Arc::new(dataset(50, 10)))
            .split(&SplitConfig::default(), Device::Cpu)
            .unwrap();
        let stats = [ChannelStats {
            mean: 0.5,
            std: 0.2,
        }];
        let err = export_torchscript(
            &genome(),
            &weights,
            &stats,
            &split,
            &dir.path().join("m.pt"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = export_torchscript(&genome(), &weights, &[], &split, &dir.path().join("m.pt"))
            .unwrap_err();
        assert!(err.to_string().contains("1-channel"), "{err}");
    }
}
