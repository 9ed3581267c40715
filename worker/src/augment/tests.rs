use explore_common::hparams::{HyperParams, Optimizer, Schedule};
use tch::Device;

use super::*;
use crate::testing::{genome, split, torch_lock as lock};
use crate::train::{evaluate_checkpoint, train_trial, Control, TrialPlan};

/// A `[1, 1, h, w]` image with pixels 1, 2, 3, … row by row.
fn counting(h: i64, w: i64) -> Tensor {
    Tensor::f_arange(h * w, (Kind::Float, Device::Cpu))
        .unwrap()
        .f_add_scalar(1.0)
        .unwrap()
        .f_view([1, 1, h, w])
        .unwrap()
}

fn pixels(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.f_flatten(0, -1).unwrap()).unwrap()
}

/// Draws for one example: no flip, no shift (offset `p`), no erase.
fn still(p: i64) -> Draws {
    Draws {
        flip: vec![false],
        dy: vec![p],
        dx: vec![p],
        erase: vec![false],
        cy: vec![0],
        cx: vec![0],
    }
}

fn settings(crop_pad: u32, flip: f64, erase: f64) -> Augment {
    Augment {
        crop_pad,
        flip,
        erase,
    }
}

#[test]
fn a_flip_mirrors_the_columns() {
    let x = counting(2, 3);
    let draws = Draws {
        flip: vec![true],
        ..still(0)
    };
    let out = augment_batch(&x, &settings(0, 0.5, 0.0), &draws).unwrap();
    assert_eq!(pixels(&out), [3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
    // Not drawn: untouched, alone or beside a flipped example.
    let out = augment_batch(&x, &settings(0, 0.5, 0.0), &still(0)).unwrap();
    assert_eq!(pixels(&out), pixels(&x));
    let pair = Tensor::cat(&[&x, &x], 0);
    let draws = Draws {
        flip: vec![false, true],
        dy: vec![0, 0],
        dx: vec![0, 0],
        erase: vec![false, false],
        cy: vec![0, 0],
        cx: vec![0, 0],
    };
    let out = augment_batch(&pair, &settings(0, 0.5, 0.0), &draws).unwrap();
    assert_eq!(
        pixels(&out),
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 3.0, 2.0, 1.0, 6.0, 5.0, 4.0]
    );
}

#[test]
fn a_crop_shifts_the_image_and_replicates_the_edges() {
    // 1 2 3 / 4 5 6 / 7 8 9
    let x = counting(3, 3);
    // Padding 1; offset (0, 2) in the padded image: the window starts one row above the image
    // and one column right of it.
    let draws = Draws {
        dy: vec![0],
        dx: vec![2],
        ..still(1)
    };
    let out = augment_batch(&x, &settings(1, 0.0, 0.0), &draws).unwrap();
    assert_eq!(
        pixels(&out),
        [2.0, 3.0, 3.0, 2.0, 3.0, 3.0, 5.0, 6.0, 6.0],
        "rows clamp(i - 1), columns clamp(j + 1)"
    );
    // The centred window (offset p, p) is the image itself.
    let out = augment_batch(&x, &settings(1, 0.0, 0.0), &still(1)).unwrap();
    assert_eq!(pixels(&out), pixels(&x));
    // Crop, then flip: the cropped window mirrored.
    let draws = Draws {
        flip: vec![true],
        dy: vec![2],
        dx: vec![0],
        ..still(1)
    };
    let out = augment_batch(&x, &settings(1, 0.5, 0.0), &draws).unwrap();
    // The crop alone would be 4 4 5 / 7 7 8 / 7 7 8.
    assert_eq!(pixels(&out), [5.0, 4.0, 4.0, 8.0, 7.0, 7.0, 8.0, 7.0, 7.0]);
}

#[test]
fn erasing_zeroes_a_clipped_square_in_every_channel() {
    let x = Tensor::f_ones([1, 2, 4, 4], (Kind::Float, Device::Cpu)).unwrap();
    assert_eq!(erase_side(4, 4), 2);
    assert_eq!(erase_side(28, 28), 14);
    assert_eq!(erase_side(1, 1), 1);
    let at = |cy: i64, cx: i64| Draws {
        erase: vec![true],
        cy: vec![cy],
        cx: vec![cx],
        ..still(0)
    };
    let out = augment_batch(&x, &settings(0, 0.0, 0.5), &at(2, 1)).unwrap();
    #[rustfmt::skip]
    let expected = [
        1.0, 1.0, 1.0, 1.0,
        0.0, 0.0, 1.0, 1.0,
        0.0, 0.0, 1.0, 1.0,
        1.0, 1.0, 1.0, 1.0,
    ];
    let got = pixels(&out);
    assert_eq!(got[..16], expected, "channel 0");
    assert_eq!(got[16..], expected, "channel 1");
    // Centred on a corner, the square is clipped to one pixel.
    let out = augment_batch(&x, &settings(0, 0.0, 0.5), &at(0, 0)).unwrap();
    let got = pixels(&out);
    assert_eq!(
        got.iter().filter(|v| **v == 0.0).count(),
        2,
        "one pixel per channel"
    );
    assert_eq!((got[0], got[16]), (0.0, 0.0));
    // Not drawn: untouched.
    let out = augment_batch(&x, &settings(0, 0.0, 0.5), &still(0)).unwrap();
    assert_eq!(pixels(&out), pixels(&x));
}

#[test]
fn each_example_gets_its_own_draws() {
    let x = Tensor::cat(&[counting(2, 2), counting(2, 2)], 0); // 1 2 / 3 4, twice
    let draws = Draws {
        flip: vec![true, false],
        dy: vec![0, 0],
        dx: vec![0, 0],
        erase: vec![false, true],
        cy: vec![0, 1],
        cx: vec![0, 1],
    };
    let out = augment_batch(&x, &settings(0, 0.5, 0.5), &draws).unwrap();
    // Example 0 flipped, example 1 erased at (0..2, 0..2) with side round(0.5 · 2) = 1 centred
    // at (1, 1).
    assert_eq!(pixels(&out), [2.0, 1.0, 4.0, 3.0, 1.0, 2.0, 3.0, 0.0]);
}

#[test]
fn augmentation_is_deterministic_under_a_seed_and_leaves_its_input_alone() {
    let _guard = lock();
    tch::manual_seed(3);
    let xs = Tensor::f_randn([64, 1, 28, 28], (Kind::Float, Device::Cpu)).unwrap();
    let before = xs.copy();
    let strong = settings(4, 0.5, 0.5);
    assert!(Augmenter::new(Augment::default(), 7).is_none(), "off");
    let a = Augmenter::new(strong, 7).unwrap();
    let out = a.apply(&xs, 12).unwrap();
    assert!(xs.equal(&before), "the batch itself was modified");
    assert_eq!(out.size(), xs.size());
    assert!(!out.equal(&xs), "nothing augmented");
    // Torch's own generator plays no part.
    tch::manual_seed(99);
    let _ = Tensor::f_randn([10], (Kind::Float, Device::Cpu)).unwrap();
    assert!(a.apply(&xs, 12).unwrap().equal(&out), "same seed and step");
    assert!(Augmenter::new(strong, 7)
        .unwrap()
        .apply(&xs, 12)
        .unwrap()
        .equal(&out));
    assert!(!a.apply(&xs, 13).unwrap().equal(&out), "another step");
    assert!(
        !Augmenter::new(strong, 8)
            .unwrap()
            .apply(&xs, 12)
            .unwrap()
            .equal(&out),
        "another seed"
    );
}

#[test]
fn draws_follow_the_strengths() {
    let mut rng = Augmenter::new(settings(2, 0.25, 0.5), 1).unwrap().rng(0);
    let d = Draws::draw(&settings(2, 0.25, 0.5), 20_000, 28, 20, &mut rng);
    let share = |v: &[bool]| v.iter().filter(|b| **b).count() as f64 / v.len() as f64;
    assert!((share(&d.flip) - 0.25).abs() < 0.02, "{}", share(&d.flip));
    assert!((share(&d.erase) - 0.5).abs() < 0.02, "{}", share(&d.erase));
    for offsets in [&d.dy, &d.dx] {
        assert_eq!(offsets.iter().min(), Some(&0));
        assert_eq!(offsets.iter().max(), Some(&4));
    }
    assert_eq!(d.cy.iter().max(), Some(&27));
    assert_eq!(d.cx.iter().max(), Some(&19));
    let none = Draws::draw(&Augment::default(), 100, 28, 28, &mut rng);
    assert!(none.flip.iter().chain(&none.erase).all(|b| !b));
    assert!(none.dy.iter().chain(&none.dx).all(|o| *o == 0));
}

/// On a GPU (when there is one; skipped otherwise) the batch is augmented there, to the same
/// pixels as on the CPU.
#[test]
fn on_a_gpu_the_batch_stays_there_and_matches_the_cpu() {
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: skipped");
        return;
    }
    let _guard = lock();
    tch::manual_seed(4);
    let xs = Tensor::f_randn([64, 3, 32, 32], (Kind::Float, Device::Cpu)).unwrap();
    let a = Augmenter::new(settings(4, 0.5, 0.5), 3).unwrap();
    let gpu = xs.to_device(Device::Cuda(0));
    let on_gpu = a.apply(&gpu, 9).unwrap();
    assert_eq!(on_gpu.device(), Device::Cuda(0));
    assert!(on_gpu
        .to_device(Device::Cpu)
        .equal(&a.apply(&xs, 9).unwrap()));
}

fn heavy_plan(augment: Augment) -> TrialPlan {
    TrialPlan {
        genome: genome(),
        hparams: HyperParams {
            optimizer: Optimizer::AdamW,
            learning_rate: 0.01,
            schedule: Schedule::Constant,
            batch_size: 32,
            weight_decay: 1e-4,
            epochs: 3,
            augment,
            ..HyperParams::default()
        },
        seed: 5,
        parent_checkpoint: None,
    }
}

/// Issue 14: augmentation reaches the training batches only. A trial with every augmentation
/// at full strength leaves the split's tensors bit for bit as they were, its validation and
/// test accuracies are those of its weights on the unaugmented split, and the same seed trains
/// the same weights.
#[test]
fn training_with_augmentation_never_touches_the_evaluation_data() {
    let _guard = lock();
    let data = split();
    let copies: Vec<Tensor> = [
        &data.train_x,
        &data.train_y,
        &data.val_x,
        &data.val_y,
        &data.test_x,
        &data.test_y,
    ]
    .iter()
    .map(|t| t.copy())
    .collect();
    let heavy = settings(2, 0.5, 1.0);
    let mut val_curve = Vec::new();
    let out = train_trial(&heavy_plan(heavy), &data, Device::Cpu, &mut |r| {
        val_curve.push(r.val_accuracy);
        Control::Continue
    })
    .unwrap();
    for (now, before) in [
        &data.train_x,
        &data.train_y,
        &data.val_x,
        &data.val_y,
        &data.test_x,
        &data.test_y,
    ]
    .iter()
    .zip(&copies)
    {
        assert!(now.equal(before), "a split tensor changed");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heavy.safetensors");
    std::fs::write(&path, &out.checkpoint).unwrap();
    let (val, test) = evaluate_checkpoint(&genome(), &path, &data, Device::Cpu).unwrap();
    assert_eq!(
        (out.val_accuracy, out.test_accuracy),
        (val, test),
        "the trial's scores are not those of its weights on the plain split"
    );
    assert_eq!(val_curve.last(), Some(&out.val_accuracy));
    let again = train_trial(&heavy_plan(heavy), &data, Device::Cpu, &mut |_| {
        Control::Continue
    })
    .unwrap();
    assert_eq!(again.checkpoint, out.checkpoint, "same seed, other weights");
    let plain = train_trial(
        &heavy_plan(Augment::default()),
        &data,
        Device::Cpu,
        &mut |_| Control::Continue,
    )
    .unwrap();
    assert_ne!(
        plain.checkpoint, out.checkpoint,
        "augmentation never reached the training batches"
    );
}

/// Only the trainer's batch loop augments: no other module of the worker (evaluation,
/// probes, transferability scores, export) can reach the augmenter.
#[test]
fn only_the_training_loop_calls_the_augmenter() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut callers = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.starts_with(src.join("augment"))
                && path != src.join("augment.rs")
            {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains("Augmenter") || text.contains("augment_batch") {
                    callers.push(path.strip_prefix(&src).unwrap().display().to_string());
                }
            }
        }
    }
    assert_eq!(callers, ["train.rs"]);
    let train = std::fs::read_to_string(src.join("train.rs")).unwrap();
    assert_eq!(train.matches("Augmenter::new").count(), 1);
    assert_eq!(train.matches(".apply(").count(), 1);
}
