use std::collections::HashSet;

use super::idx::{encode_images, encode_labels, gzip};
use super::*;

const H: u32 = 2;
const W: u32 = 3;

/// Writes a tiny dataset (`n_train` / `n_test` 2×3 images, labels `i % 4`) into `dir`; the
/// training files gzipped, the test files raw.
fn write_tiny(dir: &Path, n_train: u32, n_test: u32) -> DataSource {
    let pixels = |n: u32| -> Vec<u8> { (0..n * H * W).map(|i| (i * 7 % 256) as u8).collect() };
    let labels = |n: u32| -> Vec<u8> { (0..n).map(|i| (i % 4) as u8).collect() };
    let source = DataSource::Idx {
        train_images: dir.join("train-images.gz"),
        train_labels: dir.join("train-labels.gz"),
        test_images: dir.join("test-images"),
        test_labels: dir.join("test-labels"),
    };
    let [ti, tl, si, sl] = source.files();
    std::fs::write(ti, gzip(&encode_images(n_train, 1, H, W, &pixels(n_train)))).unwrap();
    std::fs::write(tl, gzip(&encode_labels(&labels(n_train)))).unwrap();
    std::fs::write(si, encode_images(n_test, 1, H, W, &pixels(n_test))).unwrap();
    std::fs::write(sl, encode_labels(&labels(n_test))).unwrap();
    source
}

fn cfg(train_subset: u32, fraction: f64, seed: u64) -> SplitConfig {
    SplitConfig {
        train_subset,
        test_subset: 0,
        validation_fraction: fraction,
        split_seed: seed,
        per_class: 0,
    }
}

#[test]
fn tiny_idx_dataset_loads() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Dataset::load(&write_tiny(dir.path(), 20, 6)).unwrap();
    assert_eq!((ds.channels, ds.height, ds.width), (1, H, W));
    assert_eq!((ds.train_len(), ds.test_len(), ds.num_classes), (20, 6, 4));
}

#[test]
fn a_missing_file_is_named_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let source = write_tiny(dir.path(), 20, 6);
    std::fs::remove_file(&source.files()[3]).unwrap();
    let err = Dataset::load(&source).unwrap_err();
    assert!(matches!(err, WorkerError::MissingData { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("test-labels") && msg.contains("check the path"),
        "{msg}"
    );

    let fashion = DataSource::FashionMnist {
        dir: dir.path().join("nowhere"),
    };
    let msg = Dataset::load(&fashion).unwrap_err().to_string();
    assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
    assert!(
        msg.contains("apt-get install dataset-fashion-mnist"),
        "{msg}"
    );
}

#[test]
fn mismatched_counts_name_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let source = write_tiny(dir.path(), 20, 6);
    std::fs::write(&source.files()[1], encode_labels(&[0; 19])).unwrap();
    let msg = Dataset::load(&source).unwrap_err().to_string();
    assert!(
        msg.contains("train-labels.gz") && msg.contains("19 labels"),
        "{msg}"
    );
    assert!(
        msg.contains("train-images.gz") && msg.contains("20 images"),
        "{msg}"
    );
}

#[test]
fn truncated_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let source = write_tiny(dir.path(), 20, 6);
    let path = &source.files()[2];
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() - 1]).unwrap();
    let msg = Dataset::load(&source).unwrap_err().to_string();
    assert!(
        msg.contains("test-images") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn split_sizes_follow_the_config() {
    let (train, val) = split_indices(100, &cfg(0, 0.1, 1)).unwrap();
    assert_eq!((train.len(), val.len()), (90, 10));
    let (train, val) = split_indices(100, &cfg(50, 0.25, 1)).unwrap();
    // round(50 × 0.25) = 13 (12.5 rounds away from zero)
    assert_eq!((train.len(), val.len()), (37, 13));
    let (train, val) = split_indices(100, &cfg(1000, 0.5, 1)).unwrap();
    assert_eq!((train.len(), val.len()), (50, 50));
}

#[test]
fn splits_are_deterministic_disjoint_and_seeded() {
    let (train, val) = split_indices(1000, &cfg(300, 0.2, 7)).unwrap();
    assert_eq!(
        split_indices(1000, &cfg(300, 0.2, 7)).unwrap(),
        (train.clone(), val.clone())
    );
    let train_set: HashSet<_> = train.iter().collect();
    let val_set: HashSet<_> = val.iter().collect();
    assert_eq!(train_set.len(), train.len());
    assert_eq!(val_set.len(), val.len());
    assert!(train_set.is_disjoint(&val_set));
    assert!(train.iter().chain(&val).all(|&i| i < 1000));
    let (other, _) = split_indices(1000, &cfg(300, 0.2, 8)).unwrap();
    assert_ne!(train, other);
}

#[test]
fn bad_fractions_are_refused() {
    for f in [0.0, 1.0, -0.1, f64::NAN] {
        let msg = split_indices(100, &cfg(0, f, 1)).unwrap_err().to_string();
        assert!(msg.contains("validation_fraction"), "{msg}");
    }
    let msg = split_indices(3, &cfg(0, 0.1, 1)).unwrap_err().to_string();
    assert!(msg.contains("at least one"), "{msg}");
}

#[test]
fn split_tensors_have_the_right_shapes_and_normalisation() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Dataset::load(&write_tiny(dir.path(), 40, 10)).unwrap();
    let split = ds
        .split(
            &SplitConfig {
                train_subset: 30,
                test_subset: 4,
                validation_fraction: 0.2,
                split_seed: 3,
                per_class: 0,
            },
            Device::Cpu,
        )
        .unwrap();
    assert_eq!(split.train_x.size(), vec![24, 1, H as i64, W as i64]);
    assert_eq!(split.val_x.size(), vec![6, 1, H as i64, W as i64]);
    assert_eq!(split.test_x.size(), vec![4, 1, H as i64, W as i64]);
    assert_eq!(
        (split.train_len(), split.val_len(), split.test_len()),
        (24, 6, 4)
    );
    assert_eq!(split.train_x.kind(), tch::Kind::Float);
    assert_eq!(split.train_y.kind(), tch::Kind::Int64);
    let mean = split.train_x.mean(tch::Kind::Double).double_value(&[]);
    let std = split.train_x.std(false).double_value(&[]);
    assert!(mean.abs() < 1e-5, "{mean}");
    assert!((std - 1.0).abs() < 1e-4, "{std}");
    // the test split is the first examples in file order: labels 0, 1, 2, 3
    assert_eq!(
        Vec::<i64>::try_from(&split.test_y).unwrap(),
        vec![0, 1, 2, 3]
    );
    // the same config gives the same tensors
    let again = ds
        .split(
            &SplitConfig {
                train_subset: 30,
                test_subset: 4,
                validation_fraction: 0.2,
                split_seed: 3,
                per_class: 0,
            },
            Device::Cpu,
        )
        .unwrap();
    assert!(again.train_x.equal(&split.train_x) && again.val_y.equal(&split.val_y));
}

#[test]
fn the_cache_loads_each_dataset_once() {
    let dir = tempfile::tempdir().unwrap();
    let source = write_tiny(dir.path(), 20, 6);
    let cache = DatasetCache::new();
    let a = cache.get_or_load(&source).unwrap();
    std::fs::remove_file(&source.files()[0]).unwrap();
    let b = cache.get_or_load(&source).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(cache.len(), 1);
}

#[test]
fn sources_come_from_the_experiment_config() {
    let fashion = DataSource::from_config(&DataConfig::default(), Path::new("/d")).unwrap();
    assert_eq!(fashion, DataSource::FashionMnist { dir: "/d".into() });
    let idx = DataConfig {
        dataset: "idx".into(),
        train_images: Some("a".into()),
        ..DataConfig::default()
    };
    let msg = DataSource::from_config(&idx, Path::new("/d"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("data.train_labels"), "{msg}");
    let split = SplitConfig::from_config(&DataConfig::default(), 9);
    assert_eq!(split.validation_fraction, 0.1);
    assert_eq!(split.split_seed, 9);
}

/// Whether a missing data set fails a test instead of skipping it: under CI (`CI` set and not
/// `false`/`0`, as CI services set it) or with `EXPLORE_REQUIRE_DATA=1`. scripts/test.sh
/// installs the data, so there a missing data set is a broken set-up, not a reason to skip.
fn data_required() -> bool {
    let set = |name: &str| {
        std::env::var(name)
            .map(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
            .unwrap_or(false)
    };
    set("CI") || std::env::var("EXPLORE_REQUIRE_DATA").is_ok_and(|v| v.trim() == "1")
}

#[test]
fn fashion_mnist_loads_when_installed() {
    let source = DataSource::fashion_mnist_default();
    let file = &source.files()[0];
    if !file.exists() {
        assert!(
            !data_required(),
            "{} is missing (CI or EXPLORE_REQUIRE_DATA=1 requires it): install it with \
             `apt-get install dataset-fashion-mnist` (scripts/test.sh does)",
            file.display()
        );
        eprintln!(
            "skipping fashion_mnist_loads_when_installed: {} is missing (install it with \
             `apt-get install dataset-fashion-mnist`; set CI=true or EXPLORE_REQUIRE_DATA=1 to \
             make this a failure)",
            file.display()
        );
        return;
    }
    let ds = Dataset::load(&source).unwrap();
    assert_eq!((ds.channels, ds.height, ds.width), (1, 28, 28));
    assert_eq!(
        (ds.train_len(), ds.test_len(), ds.num_classes),
        (60_000, 10_000, 10)
    );
}

#[test]
fn datasets_can_be_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Dataset>();
    shared::<DatasetCache>();
    fn sent<T: Send>() {}
    sent::<SplitData>();
}

/// The dataset `name` from where `scripts/setup.sh` installs it, or `None` (a skip, or a
/// failure when data is required) when it is not there.
fn installed(name: &str) -> Option<Dataset> {
    let source =
        DataSource::named(name, Path::new(FASHION_MNIST_DIR), &default_data_dir()).unwrap();
    let file = &source.files()[0];
    if !file.exists() {
        assert!(
            !data_required(),
            "{} is missing (CI or EXPLORE_REQUIRE_DATA=1 requires it): run scripts/setup.sh",
            file.display()
        );
        eprintln!(
            "skipping: {} is missing (run scripts/setup.sh)",
            file.display()
        );
        return None;
    }
    Some(Dataset::load(&source).unwrap())
}

#[test]
fn mnist_loads_when_installed() {
    let Some(ds) = installed("mnist") else { return };
    assert_eq!((ds.channels, ds.height, ds.width), (1, 28, 28));
    assert_eq!(
        (ds.train_len(), ds.test_len(), ds.num_classes),
        (60_000, 10_000, 10)
    );
}

#[test]
fn digits_load_when_installed_and_resize_to_mnist_geometry() {
    let Some(ds) = installed("digits") else {
        return;
    };
    assert_eq!((ds.channels, ds.height, ds.width), (1, 8, 8));
    assert_eq!(
        (ds.train_len(), ds.test_len(), ds.num_classes),
        (1797 - DIGITS_TEST_ROWS, DIGITS_TEST_ROWS, 10)
    );
    // MNIST → digits: a training domain of 28×28 and the 8×8 digits as the target, which is
    // resized to 28×28 and is the whole test split
    let Some(mnist) = installed("mnist") else {
        return;
    };
    let _guard = crate::testing::torch_lock();
    let cfg = DataConfig {
        dataset: "mnist".into(),
        train_subset: 500,
        domains: vec![
            explore_common::spec::DomainConfig {
                name: "mnist".into(),
                dataset: None,
                transform: Default::default(),
                target: false,
            },
            explore_common::spec::DomainConfig {
                name: "inverted".into(),
                dataset: None,
                transform: explore_common::spec::DomainTransform {
                    invert: true,
                    ..Default::default()
                },
                target: false,
            },
            explore_common::spec::DomainConfig {
                name: "digits".into(),
                dataset: Some("digits".into()),
                transform: Default::default(),
                target: true,
            },
        ],
        ..DataConfig::default()
    };
    drop(mnist);
    let plan = DataPlan::resolve(&cfg, Path::new(FASHION_MNIST_DIR), &DatasetCache::new()).unwrap();
    let split = plan
        .split(&SplitConfig::from_config(&cfg, 1), Device::Cpu)
        .unwrap();
    assert_eq!(
        split.test_x.size(),
        vec![DIGITS_TEST_ROWS as i64, 1, 28, 28]
    );
    assert_eq!((split.train_len(), split.val_len()), (900, 100));
    assert_eq!(split.domain_names, vec!["mnist", "inverted"]);
}

#[test]
fn a_training_prefix_cuts_only_the_training_part_and_copies_nothing() {
    let full = crate::testing::split();
    let search = full.training_prefix(120).unwrap();
    assert_eq!(search.train_len(), 120);
    assert_eq!(search.train_y.size(), vec![120]);
    // The same first examples, read from the same storage.
    assert_eq!(search.train_x.data_ptr(), full.train_x.data_ptr());
    assert!(search.train_x.equal(&full.train_x.narrow(0, 0, 120)));
    assert!(search.train_y.equal(&full.train_y.narrow(0, 0, 120)));
    // Validation and test are those of the whole split: the scores compare.
    for (a, b) in [
        (&search.val_x, &full.val_x),
        (&search.val_y, &full.val_y),
        (&search.test_x, &full.test_x),
        (&search.test_y, &full.test_y),
    ] {
        assert_eq!(a.data_ptr(), b.data_ptr());
        assert_eq!(a.size(), b.size());
    }
    // 0 and anything beyond the split keep all of it.
    assert_eq!(full.training_prefix(0).unwrap().train_len(), 300);
    assert_eq!(full.training_prefix(10_000).unwrap().train_len(), 300);
}
