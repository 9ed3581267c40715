use super::*;
use explore_common::spec::DomainConfig;

/// A dataset of `n_train` / `n_test` `size`×`size` images whose pixels all equal `value`, with
/// labels cycling through 0..classes.
fn flat(value: u8, size: u32, n_train: usize, n_test: usize, classes: u8) -> Arc<Dataset> {
    let image = (size * size) as usize;
    let labels = |n: usize| {
        (0..n)
            .map(|i| (i % classes as usize) as u8)
            .collect::<Vec<_>>()
    };
    Arc::new(
        Dataset::from_raw(
            (1, size, size),
            vec![value; n_train * image],
            labels(n_train),
            vec![value; n_test * image],
            labels(n_test),
        )
        .unwrap(),
    )
}

fn part(name: &str, dataset: Arc<Dataset>, target: bool) -> Part {
    Part {
        name: name.into(),
        dataset,
        transform: DomainTransform::default(),
        target,
    }
}

fn cfg(seed: u64) -> SplitConfig {
    SplitConfig {
        train_subset: 0,
        test_subset: 0,
        validation_fraction: 0.25,
        split_seed: seed,
        per_class: 0,
    }
}

fn ints(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(&t.reshape([-1])).unwrap()
}

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.reshape([-1])).unwrap()
}

/// `[data] size` resizes a single named dataset (digits' 8×8 for an MNIST-sized model), and only
/// when it differs from the dataset's own size.
#[test]
fn a_size_resizes_a_single_source_and_its_input_shape() {
    let _guard = crate::testing::torch_lock();
    let mut plan = DataPlan::single(flat(200, 8, 40, 10, 4));
    plan.size = Some(28);
    assert_eq!(plan.input_shape().height, 28);
    assert_eq!(plan.input_shape().width, 28);
    let split = plan.split(&cfg(3), Device::Cpu).unwrap();
    assert_eq!(split.train_x.size()[1..], [1, 28, 28]);
    assert_eq!(split.test_x.size(), [10, 1, 28, 28]);
    assert_eq!(split.train_len() + split.val_len(), 40);
    // a constant image stays constant when resized
    let pixels = floats(&split.train_x);
    assert!(pixels.iter().all(|p| (p - pixels[0]).abs() < 1e-6));
    // the dataset's own size: the split is the one without `size`
    let mut same = DataPlan::single(flat(200, 8, 40, 10, 4));
    let plain = same.split(&cfg(3), Device::Cpu).unwrap();
    same.size = Some(8);
    let sized = same.split(&cfg(3), Device::Cpu).unwrap();
    assert_eq!(floats(&plain.train_x), floats(&sized.train_x));
    assert_eq!(ints(&plain.train_y), ints(&sized.train_y));
}

#[test]
fn training_domains_are_pooled_and_the_target_is_only_tested_on() {
    let _guard = crate::testing::torch_lock();
    let plan = DataPlan {
        parts: vec![
            part("dark", flat(10, 4, 40, 8, 4), false),
            part("target", flat(250, 8, 40, 12, 4), true),
            part("mid", flat(120, 4, 20, 8, 4), false),
        ],
        labelled: true,
        history: None,
        size: None,
    };
    assert_eq!(plan.domain_names(), vec!["dark", "mid"]);
    // resized to the first training domain's 4×4
    assert_eq!(plan.input_shape().height, 4);
    let split = plan.split(&cfg(5), Device::Cpu).unwrap();
    assert_eq!(
        (split.train_len(), split.val_len(), split.test_len()),
        (45, 15, 12)
    );
    assert_eq!(split.test_x.size(), vec![12, 1, 4, 4]);
    assert_eq!(split.num_domains(), 2);
    let train_domains = ints(split.train_domain.as_ref().unwrap());
    let val_domains = ints(split.val_domain.as_ref().unwrap());
    assert_eq!(train_domains.iter().filter(|&&d| d == 0).count(), 30);
    assert_eq!(train_domains.iter().filter(|&&d| d == 1).count(), 15);
    assert_eq!(val_domains.iter().filter(|&&d| d == 0).count(), 10);
    assert_eq!(val_domains.iter().filter(|&&d| d == 1).count(), 5);
    // the target's images (the brightest) are in the test split and nowhere else
    let test_min = floats(&split.test_x).into_iter().fold(f32::MAX, f32::min);
    let seen_max = floats(&split.train_x)
        .into_iter()
        .chain(floats(&split.val_x))
        .fold(f32::MIN, f32::max);
    assert!(test_min > seen_max, "{test_min} vs {seen_max}");
    // each domain's pixels keep their own value: the domain label tells them apart
    let xs = floats(&split.train_x);
    for (i, &d) in train_domains.iter().enumerate() {
        let first = xs[i * 16];
        let dark = first < 0.0;
        assert_eq!(dark, d == 0, "example {i}: pixel {first}, domain {d}");
    }
    // deterministic
    let again = plan.split(&cfg(5), Device::Cpu).unwrap();
    assert_eq!(floats(&again.train_x), xs);
    assert_eq!(ints(again.val_domain.as_ref().unwrap()), val_domains);
}

#[test]
fn a_plain_single_source_splits_exactly_like_the_dataset() {
    let _guard = crate::testing::torch_lock();
    let mut pixels = Vec::new();
    for i in 0..60u32 {
        pixels.extend((0..16u32).map(|p| ((i * 7 + p * 13) % 256) as u8));
    }
    let labels: Vec<u8> = (0..60).map(|i| (i % 3) as u8).collect();
    let dataset = Arc::new(
        Dataset::from_raw(
            (1, 4, 4),
            pixels.clone(),
            labels.clone(),
            pixels[..160].to_vec(),
            labels[..10].to_vec(),
        )
        .unwrap(),
    );
    let direct = dataset.split(&cfg(9), Device::Cpu).unwrap();
    let planned = DataPlan::single(dataset.clone())
        .split(&cfg(9), Device::Cpu)
        .unwrap();
    assert_eq!(floats(&planned.train_x), floats(&direct.train_x));
    assert_eq!(ints(&planned.val_y), ints(&direct.val_y));
    assert!(planned.train_domain.is_none() && planned.domain_names.is_empty());
    // the pooled path with an identity transform selects the same examples
    let mut plan = DataPlan::single(dataset);
    plan.parts[0].transform.noise = 1e-9;
    let pooled = plan.split(&cfg(9), Device::Cpu).unwrap();
    assert_eq!(ints(&pooled.train_y), ints(&direct.train_y));
    assert_eq!(ints(&pooled.test_y), ints(&direct.test_y));
    assert_eq!(floats(&pooled.val_x), floats(&direct.val_x));
}

#[test]
fn per_class_keeps_that_many_of_each_class() {
    let _guard = crate::testing::torch_lock();
    let dataset = flat(90, 4, 200, 10, 5);
    let few = SplitConfig {
        per_class: 8,
        ..cfg(2)
    };
    let split = DataPlan::single(dataset.clone())
        .split(&few, Device::Cpu)
        .unwrap();
    let mut labels = ints(&split.train_y);
    labels.extend(ints(&split.val_y));
    assert_eq!(labels.len(), 40);
    for class in 0..5 {
        assert_eq!(labels.iter().filter(|&&l| l == class).count(), 8);
    }
    assert_eq!(split.val_len(), 10);
    let too_few = SplitConfig {
        per_class: 1,
        validation_fraction: 0.05,
        ..cfg(2)
    };
    let err = dataset
        .split(&too_few, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("per_class = 1"), "{err}");
}

#[test]
fn a_config_without_files_names_the_missing_file_and_the_set_up() {
    let cfg = DataConfig {
        dataset: "mnist".into(),
        domains: vec![DomainConfig {
            name: "a".into(),
            dataset: Some("digits".into()),
            transform: DomainTransform::default(),
            target: false,
        }],
        ..DataConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let source = DataSource::named("digits", dir.path(), dir.path()).unwrap();
    let err = Dataset::load(&source).unwrap_err().to_string();
    assert!(
        err.contains("digits.csv.gz") && err.contains("setup.sh"),
        "{err}"
    );
    // resolving goes through the same loader and names the domain's file
    let mut fashion = DataConfig {
        dataset: "fashion-mnist".into(),
        ..cfg
    };
    fashion.domains[0].dataset = None;
    let err = DataPlan::resolve(&fashion, dir.path(), &DatasetCache::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("train-images-idx3-ubyte"), "{err}");
}

#[test]
fn a_history_is_class_balanced_resized_and_normalised_like_the_new_task() {
    let _guard = crate::testing::torch_lock();
    let mut plan = DataPlan::single(flat(100, 4, 40, 8, 4));
    plan.history = Some(History {
        part: part("history", flat(200, 8, 90, 30, 3), false),
        config: HistoryConfig {
            dataset: "mnist".into(),
            transform: DomainTransform::default(),
            per_class: 5,
            library_per_class: 2,
            test_subset: 12,
        },
    });
    let split = plan.split(&cfg(3), Device::Cpu).unwrap();
    let history = split.history.as_ref().unwrap();
    assert_eq!(history.candidates_x.size(), vec![15, 1, 4, 4]);
    assert_eq!(history.test_x.size(), vec![12, 1, 4, 4]);
    let labels = ints(&history.candidates_y);
    for class in 0..3 {
        assert_eq!(labels.iter().filter(|&&l| l == class).count(), 5);
    }
    assert_eq!((history.library_per_class, history.num_classes), (2, 3));
    // Normalised with the new task's statistics: the new task's flat 100 is the mean, so its
    // images are 0 and the brighter history's are positive (the same table for both).
    assert!(floats(&split.train_x).iter().all(|&v| v == 0.0));
    let values = floats(&history.candidates_x);
    assert!(
        values.iter().all(|&v| v > 0.0 && v == values[0]),
        "{:?}",
        &values[..4]
    );
    // deterministic: the same candidates again
    let again = plan.split(&cfg(3), Device::Cpu).unwrap();
    assert_eq!(ints(&again.history.unwrap().candidates_y), labels);
}
