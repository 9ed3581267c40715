//! Helpers shared by the unit tests.

use std::sync::{Mutex, MutexGuard};

use explore_common::genome::{Activation, Block, Genome, InputShape};
use tch::{Device, Kind, Tensor};

use crate::data::SplitData;

/// libtorch's random generator is process-wide: tests that seed it, build models or draw random
/// tensors hold this lock so that seeded runs stay reproducible under the parallel test runner.
static TORCH: Mutex<()> = Mutex::new(());

/// Takes the torch lock (ignoring poisoning by a failed test).
pub(crate) fn torch_lock() -> MutexGuard<'static, ()> {
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// `n` 1×4×4 images of 3 classes: class k has a bright row k, plus noise.
pub(crate) fn examples(n: i64, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let ys = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3);
    let rows = ys
        .one_hot(4)
        .to_kind(Kind::Float)
        .view([n, 1, 4, 1])
        .expand([n, 1, 4, 4], false);
    let xs = rows * 2.0 + Tensor::randn([n, 1, 4, 4], (Kind::Float, Device::Cpu)) * 0.3;
    (xs, ys)
}

/// 300 training, 60 validation and 90 test examples of [`examples`].
pub(crate) fn split() -> SplitData {
    let (train_x, train_y) = examples(300, 1);
    let (val_x, val_y) = examples(60, 2);
    let (test_x, test_y) = examples(90, 3);
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
        history: None,
    }
}

/// A small conv + batch-norm + dense network for [`split`]'s 1×4×4 images of 3 classes.
pub(crate) fn genome() -> Genome {
    Genome {
        input: InputShape {
            channels: 1,
            height: 4,
            width: 4,
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
            Block::Dropout { rate: 0.1 },
            Block::Dense { units: 16 },
            Block::Activation {
                kind: Activation::Relu,
            },
        ],
    }
}
