use explore_common::genome::{Activation, Block, InputShape};
use explore_common::hparams::{Objective as Settings, Optimizer, Schedule};
use tch::Device;

use super::*;
use crate::data::SplitData;
use crate::testing::torch_lock as lock;
use crate::train::{train_trial, Control, TrialPlan};

const DOMAINS: i64 = 3;

/// How a synthetic task looks: the pixel noise and the brightness of the class's row (a
/// domain's column is always 2.0 bright).
#[derive(Debug, Clone, Copy)]
struct Look {
    noise: f64,
    class: f64,
}

/// Crisp images: class and domain are read without error.
const CRISP: Look = Look {
    noise: 0.3,
    class: 2.0,
};

/// Noisy images whose class is read with about 94% accuracy at best, the domain still
/// reliably: features then spread within a class as real ones do (see [`noisy_split`]).
const NOISY: Look = Look {
    noise: 1.0,
    class: 1.5,
};

/// `n` 1×6×6 images of 3 classes from domain `domain` (or the target, `None`), plus noise:
/// class k lights row k of the top-left 3×3 quarter, domain d lights column d of the
/// bottom-right quarter (the target lights none). The domain is read from the pixels at least
/// as easily as the class, and a network can be exactly invariant to it.
fn examples(n: i64, domain: Option<i64>, seed: i64, look: Look) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let cpu = (Kind::Float, Device::Cpu);
    let ys = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3);
    let xs = Tensor::randn([n, 1, 6, 6], cpu) * look.noise;
    let rows = ys
        .one_hot(3)
        .to_kind(Kind::Float)
        .view([n, 1, 3, 1])
        .expand([n, 1, 3, 3], false)
        * look.class;
    let _ = xs.narrow(2, 0, 3).narrow(3, 0, 3).f_add_(&rows).unwrap();
    if let Some(d) = domain {
        let _ = xs
            .narrow(2, 3, 3)
            .narrow(3, 3 + d, 1)
            .f_add_scalar_(2.0)
            .unwrap();
    }
    (xs, ys)
}

fn pooled(per_domain: i64, seed: i64, look: Look) -> (Tensor, Tensor, Tensor) {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let mut ds = Vec::new();
    for d in 0..DOMAINS {
        let (x, y) = examples(per_domain, Some(d), seed * 10 + d, look);
        xs.push(x);
        ys.push(y);
        ds.push(Tensor::full([per_domain], d, (Kind::Int64, Device::Cpu)));
    }
    (
        Tensor::cat(&xs, 0),
        Tensor::cat(&ys, 0),
        Tensor::cat(&ds, 0),
    )
}

/// Training, validation and (target-domain) test splits of `per_train`, `per_val` examples
/// per training domain and 120 target examples.
fn split_of_look(per_train: i64, per_val: i64, look: Look) -> SplitData {
    let (train_x, train_y, train_domain) = pooled(per_train, 1, look);
    let (val_x, val_y, val_domain) = pooled(per_val, 2, look);
    let (test_x, test_y) = examples(120, None, 3, look);
    SplitData {
        train_x,
        train_y,
        val_x,
        val_y,
        test_x,
        test_y,
        num_classes: 3,
        train_domain: Some(train_domain),
        val_domain: Some(val_domain),
        domain_names: (0..DOMAINS).map(|d| format!("d{d}")).collect(),
        history: None,
    }
}

fn split() -> SplitData {
    split_of_look(200, 60, CRISP)
}

/// The task on which the domain probe is measured: [`NOISY`] images, 1,000 training and 200
/// validation examples per domain (the probe is scored on the 600 validation examples).
///
/// Why noisy: CLUB's `q(z_i | z_s)` is one Gaussian per `z_s`, and `z_s` knows the domain but
/// not the class, so the penalty sees a domain shift of `z_i` against the whole spread of
/// `z_i` (between classes included), while a linear probe sees it against the spread within
/// one class and domain. On [`CRISP`] images the classes are tight clusters far apart: a shift
/// far too small for the penalty to notice separates the domains perfectly, and the probe stays
/// at 0.9–1.0 at every λ tried (0.1–10) with `dim` 4 or 8, as at λ = 0 (at `dim` 2 it falls,
/// but just as far at λ = 0). With classes that overlap, as in real data, the two agree.
fn noisy_split() -> SplitData {
    split_of_look(1000, 200, NOISY)
}

fn plan(objective: Settings) -> TrialPlan {
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
                Block::Activation {
                    kind: Activation::Relu,
                },
                Block::Dense { units: 32 },
                Block::Activation {
                    kind: Activation::Relu,
                },
            ],
        },
        hparams: HyperParams {
            optimizer: Optimizer::Adam,
            learning_rate: 0.005,
            schedule: Schedule::Constant,
            batch_size: 50,
            weight_decay: 0.0,
            epochs: 8,
            objective,
            head_only: false,
            augment: Default::default(),
        },
        seed: 11,
        parent_checkpoint: None,
    }
}

/// The per-epoch metrics of a trained trial, and its outcome.
fn train(objective: Settings) -> (Vec<BTreeMap<String, f64>>, crate::train::TrialOutcome) {
    let mut metrics = Vec::new();
    let outcome = train_trial(&plan(objective), &split(), Device::Cpu, &mut |r| {
        metrics.push(r.metrics.clone());
        Control::Continue
    })
    .unwrap();
    (metrics, outcome)
}

/// What the objective guarantees on a small synthetic task: the task is learnt from the
/// invariant part, the specific part knows the domain, the penalty warms up, and every metric
/// is reported. (On these crisp images the domain probe stays at 1.0 with the penalty; that it
/// falls towards chance is asserted on noisy ones, in
/// [`the_penalty_drives_the_domain_probe_on_the_invariant_part_to_chance`].)
#[test]
fn the_disentangle_objective_learns_the_task_and_reports_its_metrics() {
    let _guard = lock();
    let (metrics, outcome) = train(Settings::Disentangle {
        lambda: 1.0,
        dim: 8,
    });
    assert_eq!(metrics.len(), 8);
    let last = &metrics[7];
    assert!((last["disentangle.probe_chance"] - 1.0 / 3.0).abs() < 1e-9);
    let probe = last["disentangle.domain_probe"];
    assert!((0.0..=1.0).contains(&probe), "{probe}");
    assert!(last["disentangle.mi"].is_finite(), "{last:?}");
    assert!(metrics[0]["disentangle.lambda"] < last["disentangle.lambda"]);
    assert!(last["disentangle.lambda"] > 0.99 && last["disentangle.lambda"] <= 1.0);
    assert!(outcome.val_accuracy > 0.8, "{outcome:?}");
    // the domain head learns the domain from the specific part; the penalty then pulls
    // domain information out of it too (measured: 0.95 at best, 0.5 at the end), so only
    // "above chance" is guaranteed at the end
    let best_specific = metrics
        .iter()
        .map(|m| m["disentangle.specific_domain_acc"])
        .fold(0.0, f64::max);
    assert!(best_specific > 0.9, "{metrics:?}");
    assert!(last["disentangle.specific_domain_acc"] > 0.4, "{metrics:?}");
    assert!(last["disentangle.target_acc"] > 0.8, "{metrics:?}");
}

/// Settings under which the penalty removes the domain from the invariant part of
/// [`noisy_split`]'s features: a 4-value part, λ = 3, 12 epochs with a cosine schedule (the
/// probe still moves by ±0.15 from epoch to epoch under a constant rate).
const PROBE_DIM: u32 = 4;
const PROBE_LAMBDA: f64 = 3.0;
const PROBE_EPOCHS: u32 = 12;

/// libtorch's intra-op thread count, set for as long as the value lives and restored when it
/// is dropped (also when a test fails). Set only under the torch lock, so that no other test
/// sees it.
struct Threads(i32);

impl Threads {
    fn set(n: i32) -> Threads {
        let before = tch::get_num_threads();
        tch::set_num_threads(n);
        Threads(before)
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

/// Linear-probe accuracy for the domain on the invariant part of the untrained network that
/// [`train_trial`] starts from (same seed, same build).
fn untrained_probe(plan: &TrialPlan, data: &SplitData) -> f64 {
    tch::manual_seed(plan.seed as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let objective = Disentangle::new(plan.hparams.clone(), PROBE_LAMBDA, PROBE_DIM, 3);
    let net = objective.build(&vs.root(), &plan.genome).unwrap();
    let epoch = EpochData {
        train_x: &data.train_x,
        train_domain: data.train_domain.as_ref(),
        val_x: &data.val_x,
        val_domain: data.val_domain.as_ref(),
        test_x: &data.test_x,
        test_y: &data.test_y,
        num_domains: DOMAINS as usize,
    };
    let invariant = |xs: &Tensor| Ok(split_of(&net, xs, false)?.invariant);
    domain_metrics("untrained", &net, &epoch, invariant).unwrap()["untrained.domain_probe"]
}

/// S5's test: a linear probe for the domain on the invariant part falls towards chance during
/// training, because of the penalty: the same network trained with λ = 0 keeps the domain
/// there, and the task is learnt nearly as well with the penalty as without.
///
/// Measured (seed 11, one thread): the probe on the penalised invariant part is 0.53 on the
/// untrained network, 0.93 after epoch 1 and 0.32 after epoch 12 (chance 1/3); with λ = 0 it
/// ends at 0.80. Validation accuracy 0.89 against 0.94 at λ = 0 (about the best possible).
/// Over plan seeds 11–18 the end probe was 0.32–0.44 with the penalty and 0.73–0.96 without.
/// With `dim` 32 (λ 0.1–1) it was still 0.69–0.77 after 12 epochs, against 0.98 at λ = 0.
#[test]
fn the_penalty_drives_the_domain_probe_on_the_invariant_part_to_chance() {
    let _guard = lock();
    // one thread: the same sums (so the same figures) on any machine, and about 3 s on two
    // cores, where two threads spinning against other processes took over a minute
    let _threads = Threads::set(1);
    let data = noisy_split();
    let run = |lambda: f64| {
        let mut plan = plan(Settings::Disentangle {
            lambda,
            dim: PROBE_DIM,
        });
        plan.hparams.epochs = PROBE_EPOCHS;
        plan.hparams.schedule = Schedule::Cosine;
        let mut metrics = Vec::new();
        let outcome = train_trial(&plan, &data, Device::Cpu, &mut |r| {
            metrics.push(r.metrics.clone());
            Control::Continue
        })
        .unwrap();
        let probes: Vec<f64> = metrics
            .iter()
            .map(|m| m["disentangle.domain_probe"])
            .collect();
        (plan, probes, metrics, outcome)
    };
    let (plan, probes, metrics, outcome) = run(PROBE_LAMBDA);
    let (_, unpenalised, _, unpenalised_outcome) = run(0.0);
    let untrained = untrained_probe(&plan, &data);
    let last = metrics.last().unwrap();
    let chance = last["disentangle.probe_chance"];
    let end = *probes.last().unwrap();
    let unpenalised_end = *unpenalised.last().unwrap();
    let report = format!(
        "probe per epoch {probes:?}, at λ = 0 {unpenalised:?}, untrained {untrained}, \
         chance {chance}; val {} (λ = 0: {})",
        outcome.val_accuracy, unpenalised_outcome.val_accuracy
    );
    assert!((chance - 1.0 / 3.0).abs() < 1e-9, "{report}");
    // the domain is there to remove: without the penalty the invariant part keeps it
    assert!(unpenalised_end > 0.7, "{report}");
    // (a) the penalty removes it: well below the same probe without the penalty
    assert!(end < unpenalised_end - 0.25, "{report}");
    // (b) close to chance
    assert!(end < chance + 0.15, "{report}");
    // the task does not pay for it: 0.94 is about the best any classifier reaches here
    assert!(outcome.val_accuracy > 0.85, "{report}");
    assert!(
        outcome.val_accuracy > unpenalised_outcome.val_accuracy - 0.08,
        "{report}"
    );
    assert!(last["disentangle.target_acc"] > 0.8, "{report}");
    println!("{report}");
}

#[test]
fn a_trial_without_domain_labels_is_refused_naming_the_objective() {
    let _guard = lock();
    let mut data = split();
    data.train_domain = None;
    data.val_domain = None;
    data.domain_names.clear();
    let err = train_trial(
        &plan(Settings::Disentangle {
            lambda: 1.0,
            dim: 8,
        }),
        &data,
        Device::Cpu,
        &mut |_| Control::Continue,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("disentangle") && err.contains("two training domains"),
        "{err}"
    );
}

#[test]
fn a_split_checkpoint_rebuilds_its_head_and_scores_the_same() {
    let _guard = lock();
    let (_, outcome) = train(Settings::Disentangle {
        lambda: 1.0,
        dim: 8,
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &outcome.checkpoint).unwrap();
    assert_eq!(
        crate::train::head_of_checkpoint(&path).unwrap(),
        Head::Split { dim: 8, domains: 3 }
    );
    let (val, test) = crate::train::evaluate_checkpoint(
        &plan(Settings::Plain).genome,
        &path,
        &split(),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(val, outcome.val_accuracy);
    assert_eq!(test, outcome.test_accuracy);
}

/// The DANN baseline runs on the same labelled domains: the task is learnt and its metrics
/// (the discriminator's accuracy, the probe on the trunk) are reported every epoch.
#[test]
fn the_dann_baseline_trains_on_labelled_domains_and_reports_its_metrics() {
    let _guard = lock();
    let (metrics, outcome) = train(Settings::Dann { lambda: 1.0 });
    assert_eq!(metrics.len(), 8);
    let last = &metrics[7];
    for key in [
        "dann.discriminator_acc",
        "dann.domain_probe",
        "dann.target_acc",
    ] {
        assert!((0.0..=1.0).contains(&last[key]), "{key}: {last:?}");
    }
    assert!(outcome.val_accuracy > 0.9, "{outcome:?}");
    assert!(last["dann.target_acc"] > 0.8, "{metrics:?}");
    // the checkpoint carries the discriminator, which scoring ignores
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &outcome.checkpoint).unwrap();
    let names: Vec<String> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(names.iter().any(|n| n.starts_with("dann.")), "{names:?}");
    let (val, test) = crate::train::evaluate_checkpoint(
        &plan(Settings::Plain).genome,
        &path,
        &split(),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!((val, test), (outcome.val_accuracy, outcome.test_accuracy));
}
