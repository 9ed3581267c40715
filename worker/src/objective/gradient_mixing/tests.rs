use explore_common::genome::{Activation, Block, InputShape};
use explore_common::hparams::{Objective as Settings, Optimizer, Schedule};
use proptest::prelude::*;
use tch::Device;

use super::*;
use crate::data::SplitData;
use crate::testing::torch_lock as lock;
use crate::train::{train_trial, Control, TrialOutcome, TrialPlan};

fn dot(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::try_from((x * y).sum(Kind::Double)).unwrap())
        .sum()
}

fn norm(a: &[Tensor]) -> f64 {
    dot(a, a).sqrt()
}

fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::try_from((x - y).abs().max()).unwrap())
        .fold(0.0, f64::max)
}

/// Two parameter tensors' worth of gradient from flat values.
fn grads(values: &[f64]) -> Vec<Tensor> {
    let t = Tensor::from_slice(values).to_kind(Kind::Float);
    vec![t.narrow(0, 0, 4).view([2, 2]), t.narrow(0, 4, 3)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The update never points against the history gradient, and keeps the transfer
    /// gradient's magnitude at most.
    #[test]
    fn the_update_never_opposes_the_history_gradient(
        t in prop::collection::vec(-5.0f64..5.0, 7),
        h in prop::collection::vec(-5.0f64..5.0, 7),
    ) {
        let (t, h) = (grads(&t), grads(&h));
        let mixed = mix(&t, &h).unwrap();
        let scale = norm(&t) * norm(&h);
        prop_assert!(dot(&mixed.update, &h) >= -1e-5 * scale.max(1e-6),
            "update·g_h = {} (scale {scale})", dot(&mixed.update, &h));
        prop_assert!(norm(&mixed.update) <= norm(&t) * (1.0 + 1e-5) + 1e-6);
        let cos = f64::try_from(&mixed.cos).unwrap();
        prop_assert!((-1.0 - 1e-5..=1.0 + 1e-5).contains(&cos));
    }
}

#[test]
fn aligned_gradients_give_the_plain_step() {
    let t = grads(&[1.0, -2.0, 0.5, 3.0, 0.0, 1.5, -1.0]);
    let h: Vec<Tensor> = t.iter().map(|g| g * 4.0).collect();
    let mixed = mix(&t, &h).unwrap();
    assert!(max_diff(&mixed.update, &t) < 1e-5);
    assert!((f64::try_from(&mixed.cos).unwrap() - 1.0).abs() < 1e-5);
}

#[test]
fn opposite_gradients_step_along_the_history_with_the_transfer_magnitude() {
    let t = grads(&[1.0, -2.0, 0.5, 3.0, 0.0, 1.5, -1.0]);
    let h: Vec<Tensor> = t.iter().map(|g| g * -0.5).collect();
    let mixed = mix(&t, &h).unwrap();
    // g_t' = 0 after the projection, a = 1: update = ‖g_t‖ · g_h/‖g_h‖ = −g_t.
    let expected: Vec<Tensor> = t.iter().map(|g| -g).collect();
    assert!(max_diff(&mixed.update, &expected) < 1e-5);
}

/// On conflict the opposing part of g_t is removed before mixing: g_t = (2, 0), g_h = (−1, 1)
/// gives g_t' = (1, 1), c = −1/√2, a = (1 + 1/√2)/2 and update = (−1, √2). (Mixing the
/// unprojected g_t would give (−0.914, 1.207).)
#[test]
fn conflicting_gradients_lose_the_opposing_part_first() {
    let t = grads(&[2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let h = grads(&[-1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let mixed = mix(&t, &h).unwrap();
    let expected = grads(&[-1.0, 2f64.sqrt(), 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert!(max_diff(&mixed.update, &expected) < 1e-5);
    assert!((f64::try_from(&mixed.cos).unwrap() + 0.5f64.sqrt()).abs() < 1e-5);
}

#[test]
fn orthogonal_gradients_mix_half_and_half() {
    let t = grads(&[3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let h = grads(&[0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0]);
    let mixed = mix(&t, &h).unwrap();
    let expected = grads(&[1.5, 0.0, 0.0, 0.0, 0.0, 1.5, 0.0]);
    assert!(max_diff(&mixed.update, &expected) < 1e-5);
}

#[test]
fn mismatched_gradient_lists_are_an_error() {
    let t = grads(&[1.0; 7]);
    assert!(mix(&t, &t[..1]).is_err());
}

#[test]
fn libraries_are_class_balanced_and_interleaved() {
    let labels = [0, 1, 0, 0, 1, 2, 2, 1];
    assert_eq!(first_per_class(&labels, 2), vec![0, 1, 2, 4, 5, 6]);
    let scores = [0.5, -1.0, -2.0, 0.1, 0.3, 1.0, -3.0, -0.5];
    // Class 0: 2 (−2.0), 3 (0.1); class 1: 1 (−1.0), 7 (−0.5); class 2: 6 (−3.0), 5 (1.0).
    assert_eq!(
        most_conflicting(&labels, &scores, 2),
        vec![2, 1, 6, 3, 7, 5]
    );
}

/// `n` 1×6×6 images of 3 classes: in the source task class k lights row k of the image, in the
/// new task column k, with noise; both can be learnt by one network at once.
fn task(n: i64, columns: bool, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let cpu = (Kind::Float, Device::Cpu);
    let ys = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3);
    let xs = Tensor::randn([n, 1, 6, 6], cpu) * 0.4;
    let lit = ys.one_hot(3).to_kind(Kind::Float) * 2.0;
    let pattern = if columns {
        lit.view([n, 1, 1, 3]).expand([n, 1, 6, 3], false)
    } else {
        lit.view([n, 1, 3, 1]).expand([n, 1, 3, 6], false)
    };
    let region = if columns {
        xs.narrow(3, 0, 3)
    } else {
        xs.narrow(2, 0, 3)
    };
    let _ = region.shallow_clone().f_add_(&pattern).unwrap();
    // The new task's classes are permuted against the source's, so plain fine-tuning that
    // follows the column pattern has to overwrite the head's row associations.
    let ys = if columns { (ys + 1).remainder(3) } else { ys };
    (xs, ys)
}

fn split(columns: bool, history: Option<HistorySplit>) -> SplitData {
    let (train_x, train_y) = task(300, columns, 1);
    let (val_x, val_y) = task(90, columns, 2);
    let (test_x, test_y) = task(150, columns, 3);
    SplitData {
        train_x,
        train_y,
        val_x,
        val_y,
        test_x,
        test_y,
        num_classes: 3,
        train_domain: None,
        val_domain: None,
        domain_names: Vec::new(),
        history,
    }
}

fn source_history() -> HistorySplit {
    let (candidates_x, candidates_y) = task(60, false, 4);
    let (test_x, test_y) = task(150, false, 5);
    HistorySplit {
        candidates_x,
        candidates_y,
        test_x,
        test_y,
        library_per_class: 8,
        num_classes: 3,
    }
}

fn plan(objective: Settings, epochs: u32, parent: Option<PathBuf>) -> TrialPlan {
    TrialPlan {
        genome: Genome {
            input: InputShape {
                channels: 1,
                height: 6,
                width: 6,
            },
            num_classes: 3,
            blocks: vec![
                Block::Conv {
                    out_channels: 8,
                    kernel: 3,
                    stride: 1,
                },
                Block::BatchNorm,
                Block::Activation {
                    kind: Activation::Relu,
                },
                Block::Dense { units: 24 },
                Block::Activation {
                    kind: Activation::Relu,
                },
            ],
        },
        hparams: HyperParams {
            optimizer: Optimizer::Sgd,
            learning_rate: 0.05,
            schedule: Schedule::Constant,
            batch_size: 30,
            weight_decay: 0.0,
            epochs,
            objective,
            head_only: false,
            augment: Default::default(),
        },
        seed: 7,
        parent_checkpoint: parent,
    }
}

use std::path::PathBuf;

fn train(plan: &TrialPlan, data: &SplitData) -> (Vec<BTreeMap<String, f64>>, TrialOutcome) {
    let mut metrics = Vec::new();
    let outcome = train_trial(plan, data, Device::Cpu, &mut |r| {
        metrics.push(r.metrics.clone());
        Control::Continue
    })
    .unwrap();
    (metrics, outcome)
}

/// Source accuracy of a fine-tuned checkpoint: scored on the source's test examples.
fn source_accuracy(genome: &Genome, checkpoint: &[u8]) -> f64 {
    let file = tempfile::Builder::new()
        .suffix(".safetensors")
        .tempfile()
        .unwrap();
    std::fs::write(file.path(), checkpoint).unwrap();
    let (_, test) =
        crate::train::evaluate_checkpoint(genome, file.path(), &split(false, None), Device::Cpu)
            .unwrap();
    test
}

/// A source model fine-tuned on a conflicting new task: gradient mixing learns the new task
/// and retains more of the source than plain fine-tuning, reports its metrics every epoch,
/// re-chooses its library, and its reported source accuracy is the checkpoint's.
#[test]
fn gradient_mixing_learns_the_new_task_and_forgets_less_than_plain_fine_tuning() {
    let _guard = lock();
    let (_, source) = train(&plan(Settings::Plain, 6, None), &split(false, None));
    assert!(source.test_accuracy > 0.95, "source {source:?}");
    let parent = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(parent.path(), &source.checkpoint).unwrap();
    let parent = Some(parent.path().to_path_buf());

    let (_, plain) = train(
        &plan(Settings::Plain, 4, parent.clone()),
        &split(true, None),
    );
    let (metrics, mixed) = train(
        &plan(Settings::GradientMixing, 4, parent),
        &split(true, Some(source_history())),
    );
    let genome = plan(Settings::Plain, 1, None).genome;
    let plain_kept = source_accuracy(&genome, &plain.checkpoint);
    let mixed_kept = source_accuracy(&genome, &mixed.checkpoint);
    eprintln!(
        "new task: plain {:.3} mixing {:.3}; source kept: plain {plain_kept:.3} mixing {mixed_kept:.3}",
        plain.test_accuracy, mixed.test_accuracy
    );
    assert!(mixed.test_accuracy > 0.9, "{mixed:?}");
    assert!(
        mixed_kept > plain_kept + 0.2,
        "mixing kept {mixed_kept}, plain {plain_kept}"
    );
    assert_eq!(metrics.len(), 4);
    let last = &metrics[3];
    assert!((last["gradient_mixing.source_acc"] - mixed_kept).abs() < 1e-9);
    let conflict_rate = last["gradient_mixing.conflict_rate"];
    assert!((0.0..=1.0).contains(&conflict_rate), "{conflict_rate}");
    let mean_cos = last["gradient_mixing.mean_cos"];
    assert!(
        mean_cos.is_finite() && (-1.0..=1.0).contains(&mean_cos),
        "{mean_cos}"
    );
    // the library is re-chosen after the first epoch (by conflict with the transfer gradient)
    assert!(
        metrics[0]["gradient_mixing.library_changed"] > 0.0,
        "{metrics:?}"
    );
    let changed = last["gradient_mixing.library_changed"];
    assert!((0.0..=24.0).contains(&changed), "{changed}");
}

/// Batch-norm running statistics follow the new task only: after a step they equal those of a
/// forward pass over the new batch alone.
#[test]
fn the_history_pass_leaves_the_running_statistics_alone() {
    let _guard = lock();
    let p = plan(Settings::GradientMixing, 1, None);
    let data = split(true, Some(source_history()));
    let running = |vs: &nn::VarStore| -> Vec<Tensor> {
        let mut v: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(n, _)| n.ends_with("running_mean") || n.ends_with("running_var"))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, t)| t.copy()).collect()
    };
    let batch_x = data.train_x.narrow(0, 0, 30);
    let batch_y = data.train_y.narrow(0, 0, 30);

    tch::manual_seed(3);
    let mut objective = super::super::for_trial(&p.genome, &p.hparams, &data, Device::Cpu).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = objective.build(&vs.root(), &p.genome).unwrap();
    let mut opt = objective.optimizer(&vs).unwrap();
    let before = running(&vs);
    let _loss = objective
        .step(
            &net,
            &mut opt,
            &Batch {
                xs: &batch_x,
                ys: &batch_y,
                domains: None,
            },
        )
        .unwrap();
    let after_step = running(&vs);

    tch::manual_seed(3);
    let reference = nn::VarStore::new(Device::Cpu);
    let reference_net = model::build(&reference.root(), &p.genome).unwrap();
    assert!(max_diff(&running(&reference), &before) == 0.0);
    let _ = reference_net.f_forward_t(&batch_x, true).unwrap();
    let expected = running(&reference);
    assert!(max_diff(&after_step, &expected) < 1e-6);
    assert!(
        max_diff(&after_step, &before) > 1e-4,
        "the new batch moved them"
    );
}

#[test]
fn a_history_with_more_classes_than_the_genome_is_refused() {
    let _guard = lock();
    let mut history = source_history();
    history.num_classes = 10;
    let p = plan(Settings::GradientMixing, 1, None);
    let data = split(true, Some(history));
    let err = train_trial(&p, &data, Device::Cpu, &mut |_| Control::Continue).unwrap_err();
    assert!(err.to_string().contains("10 classes"), "{err}");
}

#[test]
fn gradient_mixing_without_a_history_is_a_clear_error() {
    let _guard = lock();
    let p = plan(Settings::GradientMixing, 1, None);
    let err = train_trial(&p, &split(true, None), Device::Cpu, &mut |_| {
        Control::Continue
    })
    .unwrap_err();
    assert!(err.to_string().contains("[data.history]"), "{err}");
}

#[test]
fn agem_projects_only_on_conflict_and_replay_averages() {
    let t = grads(&[2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let agreeing = grads(&[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let opposing = grads(&[-1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let kept = Agem.combine(&t, &agreeing).unwrap();
    assert!(max_diff(&kept.update, &t) < 1e-6);
    let projected = Agem.combine(&t, &opposing).unwrap();
    assert!(dot(&projected.update, &opposing).abs() < 1e-6);
    assert!(
        max_diff(
            &projected.update,
            &grads(&[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        ) < 1e-6
    );
    let mean = Replay.combine(&t, &opposing).unwrap();
    assert!(max_diff(&mean.update, &grads(&[0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0])) < 1e-6);
    assert!((f64::try_from(&mean.cos).unwrap() + 0.5f64.sqrt()).abs() < 1e-5);
    assert!(
        MixByCosine.reselects_library() && !Agem.reselects_library() && !Replay.reselects_library()
    );
}

#[test]
fn the_baselines_report_their_metrics_under_their_own_names() {
    let _guard = lock();
    for (settings, name) in [(Settings::Replay, "replay"), (Settings::Agem, "agem")] {
        let (metrics, outcome) = train(
            &plan(settings, 2, None),
            &split(true, Some(source_history())),
        );
        assert!(outcome.val_accuracy > 0.5, "{name}: {outcome:?}");
        let last = &metrics[1];
        assert!(last.contains_key(&format!("{name}.source_acc")), "{last:?}");
        assert_eq!(last[&format!("{name}.library_changed")], 0.0);
    }
}
