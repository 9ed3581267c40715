use explore_common::genome::Block;
use explore_common::hparams::{Objective, Optimizer};

use super::*;
use crate::testing::{genome, split, torch_lock as lock};

fn plan(optimizer: Optimizer, schedule: Schedule) -> TrialPlan {
    TrialPlan {
        genome: genome(),
        hparams: HyperParams {
            optimizer,
            learning_rate: if optimizer == Optimizer::Sgd {
                0.05
            } else {
                0.01
            },
            schedule,
            batch_size: 32,
            weight_decay: 1e-4,
            epochs: 4,
            objective: Objective::Plain,
            head_only: false,
            augment: Default::default(),
        },
        seed: 5,
        parent_checkpoint: None,
    }
}

#[test]
fn every_optimiser_and_schedule_learns_an_easy_task() {
    let _guard = lock();
    let data = split();
    for (optimizer, schedule) in [
        (Optimizer::Sgd, Schedule::Cosine),
        (Optimizer::Adam, Schedule::Constant),
        (Optimizer::AdamW, Schedule::OneCycle),
    ] {
        let mut reports = Vec::new();
        let out = train_trial(&plan(optimizer, schedule), &data, Device::Cpu, &mut |r| {
            reports.push(r.clone());
            Control::Continue
        })
        .unwrap();
        assert_eq!(reports.len(), 4);
        assert_eq!(reports[3].epoch, 4);
        assert_eq!(reports[3].total_epochs, 4);
        assert_eq!(out.epochs_run, 4);
        assert!(!out.stopped);
        assert_eq!(out.val_accuracy, reports[3].val_accuracy);
        assert!(out.val_accuracy > 0.9, "{optimizer:?}: {out:?}");
        assert!(out.test_accuracy > 0.9, "{optimizer:?}: {out:?}");
        assert!(reports[3].train_loss < reports[0].train_loss, "{reports:?}");
        assert_eq!(out.params, genome().analyze().unwrap().params);
    }
}

#[test]
fn the_batch_hook_sees_every_step_and_the_running_loss_after_each_nan_check() {
    let _guard = lock();
    let data = split();
    let mut p = plan(Optimizer::AdamW, Schedule::Constant);
    p.hparams.epochs = 2;
    p.hparams.batch_size = 2;
    let batches = batch_ranges(data.train_len(), 2).len();
    assert!(batches > NAN_CHECK_EVERY, "{batches} batches");
    let mut seen = Vec::new();
    let observed = train_trial_observed(
        &p,
        &data,
        Device::Cpu,
        &mut |_| Control::Continue,
        &mut |b| seen.push(*b),
    )
    .unwrap();
    assert_eq!(seen.len(), 2 * batches);
    for (i, b) in seen.iter().enumerate() {
        assert_eq!(
            (b.epoch as usize, b.batch),
            (i / batches + 1, i % batches + 1)
        );
        assert_eq!((b.total_epochs, b.batches), (2, batches));
        // the running loss is known from the epoch's first NaN check on
        assert_eq!(
            b.running_loss.is_some(),
            b.batch >= NAN_CHECK_EVERY,
            "{b:?}"
        );
    }
    // observing changes nothing
    let plain = train_trial(&p, &data, Device::Cpu, &mut |_| Control::Continue).unwrap();
    assert_eq!(observed.checkpoint, plain.checkpoint);
}

#[test]
fn stop_ends_training_early_and_still_scores() {
    let _guard = lock();
    let out = train_trial(
        &plan(Optimizer::AdamW, Schedule::OneCycle),
        &split(),
        Device::Cpu,
        &mut |r| {
            if r.epoch == 2 {
                Control::Stop
            } else {
                Control::Continue
            }
        },
    )
    .unwrap();
    assert!(out.stopped);
    assert_eq!(out.epochs_run, 2);
    assert!(out.test_accuracy > 0.0 && !out.checkpoint.is_empty());
}

#[test]
fn the_same_seed_gives_the_same_model_and_the_checkpoint_scores_the_same() {
    let _guard = lock();
    let data = split();
    let p = plan(Optimizer::Adam, Schedule::Cosine);
    let a = train_trial(&p, &data, Device::Cpu, &mut |_| Control::Continue).unwrap();
    let b = train_trial(&p, &data, Device::Cpu, &mut |_| Control::Continue).unwrap();
    assert_eq!(a.checkpoint, b.checkpoint);
    assert_eq!(a.val_accuracy, b.val_accuracy);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &a.checkpoint).unwrap();
    let (val, test) = evaluate_checkpoint(&p.genome, &path, &data, Device::Cpu).unwrap();
    assert_eq!((val, test), (a.val_accuracy, a.test_accuracy));
}

#[test]
fn a_checkpoint_of_another_genome_is_refused_by_name() {
    let _guard = lock();
    let data = split();
    let out = train_trial(
        &plan(Optimizer::Sgd, Schedule::Constant),
        &data,
        Device::Cpu,
        &mut |_| Control::Continue,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &out.checkpoint).unwrap();
    let mut other = genome();
    other.blocks[0] = Block::Conv {
        out_channels: 8,
        kernel: 3,
        stride: 1,
    };
    let err = evaluate_checkpoint(&other, &path, &data, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor b0.bias has shape [4], the genome needs [8]"),
        "{err}"
    );
    let err = evaluate_checkpoint(&genome_with_extra(), &path, &data, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no tensor b6.bias"), "{err}");
    let missing = dir.path().join("nope.safetensors");
    let err = evaluate_checkpoint(&genome(), &missing, &data, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope.safetensors") && err.contains("does not exist"),
        "{err}"
    );
}

fn genome_with_extra() -> Genome {
    let mut g = genome();
    g.blocks.push(Block::Dense { units: 8 });
    g
}

#[test]
fn a_nan_loss_is_reported_as_divergence() {
    let _guard = lock();
    let data = split();
    let _ = data.train_x.get(0).fill_(f64::NAN);
    let err = train_trial(
        &plan(Optimizer::Adam, Schedule::Constant),
        &data,
        Device::Cpu,
        &mut |_| Control::Continue,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "training diverged: loss is NaN at epoch 1");
}

#[test]
fn a_genome_that_does_not_fit_the_data_is_refused() {
    let _guard = lock();
    let data = split();
    let mut p = plan(Optimizer::Adam, Schedule::Constant);
    p.genome.input.height = 5;
    let err = train_trial(&p, &data, Device::Cpu, &mut |_| Control::Continue)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1x5x4") && err.contains("[1, 4, 4]"), "{err}");
    let mut p = plan(Optimizer::Adam, Schedule::Constant);
    p.genome.num_classes = 2;
    let err = train_trial(&p, &data, Device::Cpu, &mut |_| Control::Continue)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 classes but the data has 3"), "{err}");
    let mut p = plan(Optimizer::Adam, Schedule::Constant);
    p.hparams.batch_size = 0;
    let err = train_trial(&p, &data, Device::Cpu, &mut |_| Control::Continue)
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch_size"), "{err}");
}

#[test]
fn schedules_have_the_documented_shape() {
    let lr = |s, step| learning_rate(s, 1.0, step, 100);
    assert_eq!(lr(Schedule::Constant, 0), 1.0);
    assert_eq!(lr(Schedule::Constant, 99), 1.0);
    assert_eq!(lr(Schedule::Cosine, 0), 1.0);
    assert!((lr(Schedule::Cosine, 50) - 0.5).abs() < 1e-12);
    assert!(lr(Schedule::Cosine, 99) < 1e-3);
    assert!((lr(Schedule::OneCycle, 0) - 0.1).abs() < 1e-12);
    assert!((lr(Schedule::OneCycle, 5) - 0.55).abs() < 1e-12);
    assert_eq!(lr(Schedule::OneCycle, 10), 1.0);
    assert!((lr(Schedule::OneCycle, 55) - 0.5).abs() < 1e-12);
    assert!(lr(Schedule::OneCycle, 99) <= 0.0112);
    for s in [Schedule::Cosine, Schedule::OneCycle] {
        for step in 0..100 {
            assert!(lr(s, step) > 0.0 && lr(s, step) <= 1.0, "{s:?} {step}");
        }
        for step in 10..99 {
            assert!(lr(s, step + 1) <= lr(s, step), "{s:?} {step}");
        }
    }
}

#[test]
fn batches_cover_the_epoch_without_a_lone_example() {
    assert_eq!(batch_ranges(10, 4), vec![(0, 4), (4, 4), (8, 2)]);
    assert_eq!(batch_ranges(9, 4), vec![(0, 4), (4, 4)]);
    assert_eq!(batch_ranges(5, 100), vec![(0, 5)]);
    assert_eq!(batch_ranges(3, 1), vec![(0, 1), (1, 1), (2, 1)]);
}

/// The training loop as it was before objectives existed (one optimizer group, a fixed
/// cross-entropy step), kept here to pin the plain objective to it: returns the checkpoint,
/// the last epoch's loss and validation accuracy.
fn legacy_plain_training(plan: &TrialPlan, data: &SplitData) -> (Vec<u8>, f64, f64) {
    use tch::nn::OptimizerConfig;
    use tch::Reduction;
    let hp = &plan.hparams;
    let batches = batch_ranges(data.train_len(), hp.batch_size as usize);
    let total_steps = batches.len() * hp.epochs as usize;
    tch::manual_seed(plan.seed as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = model::build(&vs.root(), &plan.genome).unwrap();
    let (lr, wd) = (hp.learning_rate, hp.weight_decay);
    let mut opt = match hp.optimizer {
        Optimizer::Sgd => nn::sgd(0.9, 0.0, wd, true).build(&vs, lr),
        Optimizer::Adam => nn::adam(0.9, 0.999, wd).build(&vs, lr),
        Optimizer::AdamW => nn::adamw(0.9, 0.999, wd).build(&vs, lr),
    }
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    rng.set_stream(1);
    let mut order: Vec<i64> = (0..data.train_len() as i64).collect();
    let (mut train_loss, mut val_accuracy) = (0.0, 0.0);
    for epoch in 1..=hp.epochs {
        order.shuffle(&mut rng);
        let perm = Tensor::from_slice(&order);
        let mut loss_sum = Tensor::zeros([], (Kind::Float, Device::Cpu));
        let mut seen = 0i64;
        for (b, &(start, len)) in batches.iter().enumerate() {
            let step = (epoch as usize - 1) * batches.len() + b;
            opt.set_lr(learning_rate(hp.schedule, lr, step, total_steps));
            let idx = perm.narrow(0, start, len);
            let xs = data.train_x.index_select(0, &idx);
            let ys = data.train_y.index_select(0, &idx);
            let logits = net.f_forward_t(&xs, true).unwrap();
            let loss = logits.cross_entropy_loss::<Tensor>(&ys, None, Reduction::Mean, -100, 0.0);
            opt.zero_grad();
            loss.backward();
            opt.step();
            loss_sum += loss.detach() * len;
            seen += len;
        }
        train_loss = f64::try_from(&loss_sum).unwrap() / seen as f64;
        val_accuracy = accuracy(&net, &data.val_x, &data.val_y).unwrap();
    }
    (checkpoint_bytes(&vs).unwrap(), train_loss, val_accuracy)
}

#[test]
fn the_plain_objective_trains_exactly_as_the_trainer_did_before_objectives() {
    let _guard = lock();
    let data = split();
    for (optimizer, schedule) in [
        (Optimizer::Sgd, Schedule::Cosine),
        (Optimizer::Adam, Schedule::Constant),
        (Optimizer::AdamW, Schedule::OneCycle),
    ] {
        let p = plan(optimizer, schedule);
        let out = train_trial(&p, &data, Device::Cpu, &mut |r| {
            assert!(r.metrics.is_empty(), "{:?}", r.metrics);
            Control::Continue
        })
        .unwrap();
        let (checkpoint, train_loss, val_accuracy) = legacy_plain_training(&p, &data);
        assert!(
            out.checkpoint == checkpoint,
            "{optimizer:?}: weights differ"
        );
        assert_eq!(
            out.train_loss.to_bits(),
            train_loss.to_bits(),
            "{optimizer:?}"
        );
        assert_eq!(out.val_accuracy, val_accuracy, "{optimizer:?}");
    }
}

#[test]
fn an_elr_trial_learns_reports_its_metrics_and_its_checkpoint_scores_the_same() {
    let _guard = lock();
    let data = split();
    let mut p = plan(Optimizer::Sgd, Schedule::Cosine);
    p.hparams.objective = Objective::Elr {
        elr: 0.3,
        scale: 16.0,
    };
    let mut reports = Vec::new();
    let out = train_trial(&p, &data, Device::Cpu, &mut |r| {
        reports.push(r.clone());
        Control::Continue
    })
    .unwrap();
    assert!(out.val_accuracy > 0.9, "{out:?}");
    assert_eq!(reports.len(), 4);
    for r in &reports {
        assert!(r.metrics["elr.norm_error"] < 1e-5, "{:?}", r.metrics);
        assert!(r.metrics["elr.norm_drift"] > 0.0, "{:?}", r.metrics);
        // conv b0 feeds a batch-norm; the dense layer feeds a relu; plus the head
        assert_eq!(r.metrics["elr.invariant_weights"], 2.0, "{:?}", r.metrics);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &out.checkpoint).unwrap();
    assert_eq!(
        head_of_checkpoint(&path).unwrap(),
        Head::Cosine { scale: 16.0 }
    );
    let (val, test) = evaluate_checkpoint(&p.genome, &path, &data, Device::Cpu).unwrap();
    assert_eq!((val, test), (out.val_accuracy, out.test_accuracy));
}

/// The tensors of a safetensors checkpoint, by name.
fn tensors_of(bytes: &[u8]) -> std::collections::HashMap<String, Tensor> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    std::fs::write(&path, bytes).unwrap();
    Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn a_head_only_fine_tune_moves_the_head_and_nothing_else() {
    let _guard = lock();
    let data = split();
    let parent = train_trial(
        &plan(Optimizer::AdamW, Schedule::Constant),
        &data,
        Device::Cpu,
        &mut |_| Control::Continue,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let parent_path = dir.path().join("parent.safetensors");
    std::fs::write(&parent_path, &parent.checkpoint).unwrap();
    let mut p = plan(Optimizer::AdamW, Schedule::Constant);
    p.parent_checkpoint = Some(parent_path);
    p.seed = 9;
    p.hparams.weight_decay = 0.1;
    p.hparams.head_only = true;
    let child = train_trial(&p, &data, Device::Cpu, &mut |_| Control::Continue).unwrap();
    let (before, after) = (
        tensors_of(&parent.checkpoint),
        tensors_of(&child.checkpoint),
    );
    let mut heads_moved = 0;
    for (name, old) in &before {
        let new = &after[name];
        let same = old.equal(new);
        if name.starts_with("head.") {
            heads_moved += usize::from(!same);
        } else if name.ends_with("running_mean") || name.ends_with("running_var") {
            // buffers follow the data in training mode
        } else {
            assert!(same, "{name} moved in a head-only fine-tune");
        }
    }
    assert_eq!(heads_moved, 2, "head.weight and head.bias both train");
    assert!(child.val_accuracy > 0.9, "{child:?}");
    // all layers, for contrast: the trunk moves too
    p.hparams.head_only = false;
    let full = train_trial(&p, &data, Device::Cpu, &mut |_| Control::Continue).unwrap();
    let all = tensors_of(&full.checkpoint);
    assert!(before
        .iter()
        .any(|(name, old)| !name.starts_with("head.") && !old.equal(&all[name])));
}
