//! Measurements the domain objectives share: a linear probe (how much of a label a set of
//! features still carries), the features of a strided sample of a split, and the warm-up
//! schedule of a loss weight.

use std::collections::BTreeMap;

use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Reduction, TchError, Tensor};

use super::EpochData;
use crate::model::GenomeNet;
use crate::train::accuracy;

/// At most this many examples of each split feed the domain probe.
const PROBE_EXAMPLES: i64 = 2000;
/// Examples per forward pass when extracting features.
const FEATURE_BATCH: i64 = 250;
/// Full-batch optimisation steps of the linear probe.
const PROBE_STEPS: usize = 150;
/// Learning rate of the probe's Adam optimizer (the features are scaled to unit total variance first).
const PROBE_LEARNING_RATE: f64 = 0.05;

/// The warm-up factor of a loss weight at training progress `p` in `[0, 1]`:
/// `2 / (1 + exp(−10 p)) − 1`, from 0 at the start to about 1 at the end (the schedule of
/// DANN, Ganin et al. 2016), so a penalty does not fight the task loss before features exist.
pub fn warm_up(progress: f64) -> f64 {
    let p = progress.clamp(0.0, 1.0);
    2.0 / (1.0 + (-10.0 * p).exp()) - 1.0
}

/// Training progress in `[0, 1]` at optimizer step `step` of `total_steps`.
pub(crate) fn progress(step: usize, total_steps: usize) -> f64 {
    step as f64 / total_steps.max(1) as f64
}

/// How many rows of `logits` pick their label.
pub(crate) fn correct(logits: &Tensor, labels: &Tensor) -> Result<i64, TchError> {
    let hits = logits
        .f_argmax(-1, false)?
        .f_eq_tensor(labels)?
        .f_sum(Kind::Int64)?;
    i64::try_from(&hits)
}

/// The metrics both domain objectives report, named `<prefix>.<metric>`: `target_acc` (the
/// test split, which is the target domain's), and with domain labels `domain_probe` (a linear
/// probe predicting the domain from `features`, fitted on the training split, scored on the
/// validation split) and `probe_chance`.
pub(crate) fn domain_metrics(
    prefix: &str,
    net: &GenomeNet,
    data: &EpochData<'_>,
    features: impl Fn(&Tensor) -> Result<Tensor, TchError>,
) -> Result<BTreeMap<String, f64>, TchError> {
    let mut metrics = BTreeMap::new();
    if let (Some(train_domain), Some(val_domain)) = (data.train_domain, data.val_domain) {
        let device = data.train_x.device();
        let train_idx = strided(data.train_x.size()[0], PROBE_EXAMPLES, device)?;
        let val_idx = strided(data.val_x.size()[0], PROBE_EXAMPLES, device)?;
        let probe = linear_probe_accuracy(
            &features_of(data.train_x, &train_idx, &features)?,
            &train_domain.f_index_select(0, &train_idx)?,
            &features_of(data.val_x, &val_idx, &features)?,
            &val_domain.f_index_select(0, &val_idx)?,
            data.num_domains as i64,
        )?;
        metrics.insert(format!("{prefix}.domain_probe"), probe);
        metrics.insert(
            format!("{prefix}.probe_chance"),
            1.0 / data.num_domains.max(1) as f64,
        );
    }
    let target = accuracy(net, data.test_x, data.test_y)
        .map_err(|e| TchError::Kind(format!("target-domain accuracy: {e}")))?;
    metrics.insert(format!("{prefix}.target_acc"), target);
    Ok(metrics)
}

/// Indices `0, s, 2s, …` of at most `max` examples spread evenly over `n` (a split is ordered
/// by domain, so a prefix would hold one domain only).
pub(crate) fn strided(n: i64, max: i64, device: Device) -> Result<Tensor, TchError> {
    let step = ((n + max - 1) / max.max(1)).max(1);
    Tensor::f_arange_start_step(0, n, step, (Kind::Int64, device))
}

/// `f` applied in evaluation mode, without gradients, in batches, to `xs[idx]`.
pub(crate) fn features_of(
    xs: &Tensor,
    idx: &Tensor,
    f: impl Fn(&Tensor) -> Result<Tensor, TchError>,
) -> Result<Tensor, TchError> {
    tch::no_grad(|| {
        let picked = xs.f_index_select(0, idx)?;
        let n = picked.size()[0];
        let mut parts = Vec::new();
        let mut start = 0;
        while start < n {
            let len = FEATURE_BATCH.min(n - start);
            parts.push(f(&picked.f_narrow(0, start, len)?)?);
            start += len;
        }
        Tensor::f_cat(&parts, 0)
    })
}

/// Accuracy on `(val_features, val_labels)` of a multinomial logistic regression fitted on
/// `(train_features, train_labels)` (features centred with the training mean and divided by
/// one overall scale, the root of their total variance; zero initial weights, full-batch Adam, so the result is deterministic). Chance is
/// `1 / classes` for balanced labels; a value near it means the features no longer carry the
/// label linearly.
pub fn linear_probe_accuracy(
    train_features: &Tensor,
    train_labels: &Tensor,
    val_features: &Tensor,
    val_labels: &Tensor,
    classes: i64,
) -> Result<f64, TchError> {
    let train = train_features.f_detach()?;
    let val = val_features.f_detach()?;
    let n_val = val.size()[0];
    if n_val == 0 || train.size()[0] == 0 {
        return Ok(0.0);
    }
    // one scale for all coordinates (the root mean square deviation), not one per
    // coordinate: a near-constant coordinate with a tiny domain difference must not be blown
    // up into a perfect domain code
    let dims = Some([0i64].as_slice());
    let mean = train.f_mean_dim(dims, true, Kind::Float)?;
    let std = train
        .f_sub(&mean)?
        .f_square()?
        .f_sum(Kind::Float)?
        .f_div_scalar(train.size()[0] as f64)?
        .f_sqrt()?
        .f_clamp_min(1e-6)?;
    let train = train.f_sub(&mean)?.f_div(&std)?;
    let val = val.f_sub(&mean)?.f_div(&std)?;
    let vs = nn::VarStore::new(train.device());
    let root = vs.root();
    let d = train.size()[1];
    let weight = root.f_zeros("weight", &[classes, d])?;
    let bias = root.f_zeros("bias", &[classes])?;
    let mut opt = nn::adam(0.9, 0.999, 1e-3).build(&vs, PROBE_LEARNING_RATE)?;
    for _ in 0..PROBE_STEPS {
        let loss = train
            .f_linear(&weight, Some(&bias))?
            .f_cross_entropy_loss::<Tensor>(train_labels, None, Reduction::Mean, -100, 0.0)?;
        opt.zero_grad();
        loss.f_backward()?;
        opt.step();
    }
    let correct = tch::no_grad(|| -> Result<i64, TchError> {
        let predicted = val.f_linear(&weight, Some(&bias))?.f_argmax(-1, false)?;
        i64::try_from(&predicted.f_eq_tensor(val_labels)?.f_sum(Kind::Int64)?)
    })?;
    Ok(correct as f64 / n_val as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::torch_lock as lock;

    #[test]
    fn the_probe_reads_a_linearly_encoded_label_and_not_noise() {
        let _guard = lock();
        tch::manual_seed(1);
        let cpu = (Kind::Float, Device::Cpu);
        let labels = Tensor::arange(400, (Kind::Int64, Device::Cpu)).remainder(3);
        let noise = Tensor::randn([400, 6], cpu);
        let centres = Tensor::randn([3, 6], cpu) * 3.0;
        let encoded = &noise + centres.index_select(0, &labels);
        let (train, val) = (
            Tensor::arange_start(0, 300, (Kind::Int64, Device::Cpu)),
            Tensor::arange_start(300, 400, (Kind::Int64, Device::Cpu)),
        );
        let probe = |features: &Tensor| {
            linear_probe_accuracy(
                &features.index_select(0, &train),
                &labels.index_select(0, &train),
                &features.index_select(0, &val),
                &labels.index_select(0, &val),
                3,
            )
            .unwrap()
        };
        let readable = probe(&encoded);
        let unreadable = probe(&noise);
        assert!(readable > 0.9, "encoded label: {readable}");
        assert!(unreadable < 0.5, "pure noise: {unreadable}");
    }

    #[test]
    fn warm_up_rises_from_zero_to_nearly_one() {
        assert_eq!(warm_up(0.0), 0.0);
        assert!((warm_up(1.0) - 1.0).abs() < 1e-4);
        assert!(warm_up(0.1) < warm_up(0.2));
        assert_eq!(warm_up(2.0), warm_up(1.0));
    }

    #[test]
    fn a_strided_sample_spans_the_whole_split() {
        let idx = Vec::<i64>::try_from(strided(10, 4, Device::Cpu).unwrap()).unwrap();
        assert_eq!(idx, vec![0, 3, 6, 9]);
        let all = Vec::<i64>::try_from(strided(3, 10, Device::Cpu).unwrap()).unwrap();
        assert_eq!(all, vec![0, 1, 2]);
    }
}
