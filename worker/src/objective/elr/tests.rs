use explore_common::genome::{Activation, Block, InputShape};
use explore_common::hparams::{Objective as Settings, Optimizer, Schedule};
use tch::nn::ModuleT;

use super::*;
use crate::testing::torch_lock as lock;

/// Runs `f` with an empty split: ELR mode's metrics do not look at the data.
fn with_no_data<R>(f: impl FnOnce(&EpochData<'_>) -> R) -> R {
    let empty = Tensor::zeros([0], (tch::Kind::Float, tch::Device::Cpu));
    f(&EpochData {
        train_x: &empty,
        train_domain: None,
        val_x: &empty,
        val_domain: None,
        test_x: &empty,
        test_y: &empty,
        num_domains: 0,
    })
}

/// conv → bn → relu → residual(conv → bn) → dense → bn → relu, then the cosine head: three
/// invariant trunk weights plus the head, and a residual, biases and batch-norm affine
/// parameters that are not invariant.
fn genome() -> Genome {
    Genome {
        input: InputShape {
            channels: 1,
            height: 6,
            width: 6,
        },
        num_classes: 3,
        blocks: vec![
            Block::Conv {
                out_channels: 4,
                kernel: 3,
                stride: 1,
            },
            Block::BatchNorm,
            Block::Activation {
                kind: Activation::Relu,
            },
            Block::Residual {
                body: vec![
                    Block::Conv {
                        out_channels: 4,
                        kernel: 3,
                        stride: 1,
                    },
                    Block::BatchNorm,
                ],
            },
            Block::Dense { units: 8 },
            Block::BatchNorm,
            Block::Activation {
                kind: Activation::Relu,
            },
        ],
    }
}

fn hparams(optimizer: Optimizer, elr: f64) -> HyperParams {
    HyperParams {
        optimizer,
        schedule: Schedule::Constant,
        batch_size: 16,
        objective: Settings::Elr { elr, scale: 16.0 },
        ..HyperParams::default()
    }
}

fn batch(seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let xs = Tensor::randn([16, 1, 6, 6], (Kind::Float, Device::Cpu));
    let ys = Tensor::arange(16, (Kind::Int64, Device::Cpu)).remainder(3);
    (xs, ys)
}

/// A built network with its objective, weights initialised from `seed`, and the invariant
/// weights multiplied by `c` before the optimizer records their norms.
fn setup(optimizer: Optimizer, elr: f64, c: f64) -> (nn::VarStore, GenomeNet, Elr) {
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let objective = Elr::new(genome(), hparams(optimizer, elr), elr, 16.0);
    let net = objective.build(&vs.root(), &genome()).unwrap();
    scale_invariant(&vs, c);
    (vs, net, objective)
}

fn scale_invariant(vs: &nn::VarStore, c: f64) {
    let mut vars = vs.variables();
    tch::no_grad(|| {
        for name in ["b0.weight", "b3.r0.weight", "b4.weight", "head.weight"] {
            let _ = vars.get_mut(name).unwrap().f_mul_scalar_(c).unwrap();
        }
    });
}

/// How much the equivalence tests scale the default initialisation first, so that
/// batch-norm's ε is negligible next to the variances it is added to.
const BASE_SCALE: f64 = 100.0;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

#[test]
fn the_invariant_weights_are_decided_from_the_genome() {
    let _guard = lock();
    let (vs, _net, mut objective) = setup(Optimizer::Sgd, 0.1, 1.0);
    let _opt = objective.optimizer(&vs).unwrap();
    assert_eq!(
        objective.invariant_weight_names(),
        ["b0.weight", "b3.r0.weight", "b4.weight", "head.weight"]
    );
    // the cosine head has no bias and stores its scale, untrained
    let vars = vs.variables();
    assert!(!vars.contains_key("head.bias"));
    assert_eq!(f64::try_from(&vars["head.scale"]).unwrap(), 16.0);
    let analysed = genome().analyze().unwrap().params;
    assert_eq!(crate::model::trainable_params(&vs), analysed - 3);
    // default initialisation: squared filter norm about 1/3
    let r2 = objective.mean_squared_norm();
    assert!((0.2..0.5).contains(&r2), "{r2}");
}

#[test]
fn multiplying_the_invariant_weights_by_a_constant_leaves_the_logits_unchanged() {
    let _guard = lock();
    let (xs, _) = batch(1);
    // Exact up to batch-norm's ε (1e-5), which is added to the variance it divides by: start
    // from weights 100 times the default so that ε stays far below that variance.
    let (vs, net, _) = setup(Optimizer::Sgd, 0.1, BASE_SCALE);
    let before = net.forward_t(&xs, true);
    let magnitude = f64::try_from(before.abs().max()).unwrap();
    for c in [0.5, 3.0, 250.0] {
        scale_invariant(&vs, c);
        let after = net.forward_t(&xs, true);
        scale_invariant(&vs, 1.0 / c);
        let relative = max_abs_diff(&before, &after) / magnitude;
        assert!(
            relative < 1e-5,
            "c = {c}: logits differ by {relative} of their size"
        );
    }
    // a parameter that is not scale-invariant (the first batch-norm's shift, in front of a
    // relu) does change them: the check can fail
    let mut vars = vs.variables();
    tch::no_grad(|| {
        let _ = vars.get_mut("b1.bias").unwrap().f_add_scalar_(0.5).unwrap();
    });
    assert!(max_abs_diff(&before, &net.forward_t(&xs, true)) > 1e-3);
}

#[test]
fn after_every_step_the_norms_equal_the_initial_norms() {
    let _guard = lock();
    for optimizer in [Optimizer::Sgd, Optimizer::Adam, Optimizer::AdamW] {
        let (vs, net, mut objective) = setup(optimizer, 0.5, 1.0);
        let mut opt = objective.optimizer(&vs).unwrap();
        for step in 0..20 {
            let (xs, ys) = batch(100 + step);
            objective.set_step_size(&mut opt, step as usize, 20);
            let _ = objective
                .step(
                    &net,
                    &mut opt,
                    &Batch {
                        xs: &xs,
                        ys: &ys,
                        domains: None,
                    },
                )
                .unwrap();
            objective.after_step().unwrap();
            let error = objective.norm_error().unwrap();
            assert!(error < 1e-5, "{optimizer:?} step {step}: {error}");
        }
        let metrics = with_no_data(|data| objective.epoch_metrics(&net, data)).unwrap();
        // the steps did move the norms before each projection: the projection is doing work
        assert!(metrics["elr.norm_drift"] > 1e-4, "{metrics:?}");
        assert!(metrics["elr.norm_error"] < 1e-5, "{metrics:?}");
        assert_eq!(metrics["elr.invariant_weights"], 4.0);
    }
}

#[test]
fn under_sgd_step_eta_norm_r_and_step_eta_c2_norm_rc_give_the_same_logits() {
    let _guard = lock();
    let run = |c: f64| -> (Tensor, f64) {
        let (vs, net, mut objective) = setup(Optimizer::Sgd, 0.05, BASE_SCALE * c);
        let mut opt = objective.optimizer(&vs).unwrap();
        for step in 0..10 {
            let (xs, ys) = batch(200 + step);
            objective.set_step_size(&mut opt, step as usize, 10);
            let _ = objective
                .step(
                    &net,
                    &mut opt,
                    &Batch {
                        xs: &xs,
                        ys: &ys,
                        domains: None,
                    },
                )
                .unwrap();
            objective.after_step().unwrap();
        }
        let (xs, _) = batch(999);
        (net.forward_t(&xs, true), objective.mean_squared_norm())
    };
    let (base, r2) = run(1.0);
    for c in [3.0, 0.25] {
        let (scaled, r2c) = run(c);
        // the invariant group's step size is η·c² because the norms are r·c
        assert!(
            ((r2c / r2) - c * c).abs() < 1e-4 * c * c,
            "{r2c} vs {r2}·{c}²"
        );
        let diff = max_abs_diff(&base, &scaled);
        assert!(diff < 1e-3, "c = {c}: logits differ by {diff}");
    }
    // a different ELR does move the logits: the comparison can fail
    let (vs, net, mut objective) = setup(Optimizer::Sgd, 0.02, BASE_SCALE);
    let mut opt = objective.optimizer(&vs).unwrap();
    for step in 0..10 {
        let (xs, ys) = batch(200 + step);
        objective.set_step_size(&mut opt, step as usize, 10);
        let _ = objective
            .step(
                &net,
                &mut opt,
                &Batch {
                    xs: &xs,
                    ys: &ys,
                    domains: None,
                },
            )
            .unwrap();
        objective.after_step().unwrap();
    }
    let (xs, _) = batch(999);
    let other = max_abs_diff(&base, &net.forward_t(&xs, true));
    assert!(other > 1e-1, "another ELR: logits differ by only {other}");
}
