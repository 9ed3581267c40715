//! Datasets: where they come from ([`DataSource`]), their decoded bytes ([`Dataset`], loaded
//! once per process through a [`DatasetCache`]) and the tensors of one train/validation/test
//! split ([`SplitData`]).
//!
//! # Split semantics
//!
//! [`Dataset::split`] permutes the indices of the training file with
//! `ChaCha8Rng::seed_from_u64(split_seed)`, keeps the first `train_subset` of them (all when 0,
//! or when the file is smaller), and holds out the last `round(n × validation_fraction)` of those
//! as the validation split; the rest is the training split. Validation examples are therefore
//! never trained on, and the validation accuracy is the selection score. The test split is the
//! first `test_subset` examples of the test file in file order (all when 0); it is only reported,
//! never used for selection. The same configuration always gives the same split.
//!
//! Images become `f32` tensors `[N, C, H, W]` scaled to `[0, 1]` and then normalised per channel
//! with the mean and standard deviation of the training split (not the validation or test
//! split); labels become `i64` tensors `[N]`.

mod digits;
mod domains;
mod folder;
mod idx;
mod transform;

pub use digits::DIGITS_TEST_ROWS;
pub use domains::DataPlan;
pub use folder::FOLDER_TEST_FRACTION;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use explore_common::genome::InputShape;
use explore_common::spec::{DataConfig, FOLDER_DATASET};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};
use tracing::info;

use crate::error::WorkerError;

/// Where the Debian package `dataset-fashion-mnist` installs Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// File names of Fashion-MNIST (and MNIST) inside their directory, without `.gz`.
const FASHION_MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Where `scripts/setup.sh` installs the datasets that have no Debian package (MNIST, digits):
/// `$EXPLORE_DATA_DIR`, else `$EXPLORE_CACHE/data`, else `~/.cache/explore/data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EXPLORE_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(cache) = std::env::var_os("EXPLORE_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(cache).join("data");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache/explore/data")
}

/// Where a dataset's files are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DataSource {
    /// Fashion-MNIST in `dir`, under its usual file names (gzipped or not).
    FashionMnist { dir: PathBuf },
    /// MNIST in `dir` (`<data dir>/mnist`), under its usual file names (gzipped or not).
    Mnist { dir: PathBuf },
    /// scikit-learn's 8×8 digits, one CSV file (see the `digits` module).
    Digits { file: PathBuf },
    /// Four explicit IDX files (optionally gzipped).
    Idx {
        train_images: PathBuf,
        train_labels: PathBuf,
        test_images: PathBuf,
        test_labels: PathBuf,
    },
    /// Image folders `root/<class>/<file>.png|jpg|jpeg` (see the `folder` module), converted
    /// to `channels` and resized to `size`×`size`; the test file is `test_root`, else a fixed
    /// held-out part of `root`.
    Folder {
        root: PathBuf,
        test_root: Option<PathBuf>,
        channels: u32,
        size: u32,
    },
}

impl DataSource {
    /// Fashion-MNIST where `apt-get install dataset-fashion-mnist` puts it.
    pub fn fashion_mnist_default() -> Self {
        DataSource::FashionMnist {
            dir: PathBuf::from(FASHION_MNIST_DIR),
        }
    }

    /// The source an experiment's `[data]` section names; `fashion_mnist_dir` is where this
    /// worker keeps Fashion-MNIST, [`default_data_dir`] where it keeps MNIST and digits.
    pub fn from_config(cfg: &DataConfig, fashion_mnist_dir: &Path) -> Result<Self, WorkerError> {
        if cfg.dataset == "idx" {
            let need = |value: &Option<String>, key: &str| {
                value.as_ref().map(PathBuf::from).ok_or_else(|| {
                    WorkerError::Source(format!("data.{key} is required with dataset = \"idx\""))
                })
            };
            return Ok(DataSource::Idx {
                train_images: need(&cfg.train_images, "train_images")?,
                train_labels: need(&cfg.train_labels, "train_labels")?,
                test_images: need(&cfg.test_images, "test_images")?,
                test_labels: need(&cfg.test_labels, "test_labels")?,
            });
        }
        Self::for_dataset(&cfg.dataset, cfg, fashion_mnist_dir, &default_data_dir())
    }

    /// The source of dataset `name` in `cfg` (the section's or a domain's): the image folders
    /// of `cfg` for `"folder"`, else a dataset known by name ([`DataSource::named`]).
    pub fn for_dataset(
        name: &str,
        cfg: &DataConfig,
        fashion_mnist_dir: &Path,
        data_dir: &Path,
    ) -> Result<Self, WorkerError> {
        if name != FOLDER_DATASET {
            return Self::named(name, fashion_mnist_dir, data_dir);
        }
        let root = cfg.folder.as_ref().map(PathBuf::from).ok_or_else(|| {
            WorkerError::Source("data.folder is required with dataset = \"folder\"".into())
        })?;
        Ok(DataSource::Folder {
            root,
            test_root: cfg.test_folder.as_ref().map(PathBuf::from),
            channels: cfg.folder_channels(),
            size: cfg.folder_size(),
        })
    }

    /// A dataset known by name: Fashion-MNIST in `fashion_mnist_dir`, MNIST and digits under
    /// `data_dir`.
    pub fn named(
        name: &str,
        fashion_mnist_dir: &Path,
        data_dir: &Path,
    ) -> Result<Self, WorkerError> {
        match name {
            "fashion-mnist" | "fashion_mnist" => Ok(DataSource::FashionMnist {
                dir: fashion_mnist_dir.to_path_buf(),
            }),
            "mnist" => Ok(DataSource::Mnist {
                dir: data_dir.join("mnist"),
            }),
            "digits" => Ok(DataSource::Digits {
                file: data_dir.join("digits/digits.csv.gz"),
            }),
            other => Err(WorkerError::Source(format!(
                "unknown dataset {other:?}, expected \"fashion-mnist\", \"mnist\", \"digits\", \
                 \"folder\" or \"idx\""
            ))),
        }
    }

    /// Paths of the training images, training labels, test images and test labels (for
    /// digits, four times its one file; for image folders, the root twice and the test root, or
    /// the root, twice). For Fashion-MNIST and MNIST each is the `.gz` file, or the uncompressed
    /// one when only that exists.
    pub fn files(&self) -> [PathBuf; 4] {
        match self {
            DataSource::Folder {
                root, test_root, ..
            } => {
                let test = test_root.clone().unwrap_or_else(|| root.clone());
                [root.clone(), root.clone(), test.clone(), test]
            }
            DataSource::Digits { file } => [file.clone(), file.clone(), file.clone(), file.clone()],
            DataSource::FashionMnist { dir } | DataSource::Mnist { dir } => FASHION_MNIST_FILES
                .map(|name| {
                    let gz = dir.join(format!("{name}.gz"));
                    let raw = dir.join(name);
                    if !gz.exists() && raw.exists() {
                        raw
                    } else {
                        gz
                    }
                }),
            DataSource::Idx {
                train_images,
                train_labels,
                test_images,
                test_labels,
            } => [
                train_images.clone(),
                train_labels.clone(),
                test_images.clone(),
                test_labels.clone(),
            ],
        }
    }

    /// What to tell the user when one of the files is missing.
    fn missing_hint(&self) -> String {
        match self {
            DataSource::FashionMnist { dir } if dir == Path::new(FASHION_MNIST_DIR) => {
                "install it with `apt-get install dataset-fashion-mnist`".to_string()
            }
            DataSource::FashionMnist { dir } => format!(
                "install it with `apt-get install dataset-fashion-mnist` (into {FASHION_MNIST_DIR}) \
                 or put the fashion-mnist files into {}",
                dir.display()
            ),
            DataSource::Mnist { .. } | DataSource::Digits { .. } => format!(
                "run scripts/setup.sh, which installs MNIST and the digits into {} \
                 ($EXPLORE_DATA_DIR overrides it)",
                default_data_dir().display()
            ),
            DataSource::Idx { .. } => "check the path".to_string(),
            DataSource::Folder { .. } => "check data.folder and data.test_folder".to_string(),
        }
    }
}

/// A dataset's decoded bytes: plain vectors (no tensors), so it is `Send + Sync` and can be
/// shared by the trials of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Channels per image (1 for three-dimensional IDX image files).
    pub channels: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Image width in pixels.
    pub width: u32,
    /// Largest label in the training or test file, plus one.
    pub num_classes: u32,
    train_images: Vec<u8>,
    train_labels: Vec<u8>,
    test_images: Vec<u8>,
    test_labels: Vec<u8>,
}

impl Dataset {
    /// Reads and checks the four files of `source`; errors name the offending file.
    pub fn load(source: &DataSource) -> Result<Dataset, WorkerError> {
        if let DataSource::Digits { file } = source {
            let digits = digits::read(file, &source.missing_hint())?;
            let dataset = Dataset::from_raw(
                (1, 8, 8),
                digits.train.0,
                digits.train.1,
                digits.test.0,
                digits.test.1,
            )?;
            info!(
                train = dataset.train_len(),
                test = dataset.test_len(),
                source = %file.display(),
                "dataset loaded"
            );
            return Ok(dataset);
        }
        if let DataSource::Folder {
            root,
            test_root,
            channels,
            size,
        } = source
        {
            let folder = folder::read(root, test_root.as_deref(), *channels, *size)?;
            let dataset = Dataset::from_raw(
                (*channels, *size, *size),
                folder.train.0,
                folder.train.1,
                folder.test.0,
                folder.test.1,
            )?;
            info!(
                train = dataset.train_len(),
                test = dataset.test_len(),
                classes = ?folder.classes,
                shape = %dataset.input_shape_string(),
                source = %root.display(),
                "dataset loaded (labels in class order)"
            );
            return Ok(dataset);
        }
        let [train_images, train_labels, test_images, test_labels] = source.files();
        let hint = source.missing_hint();
        let train = idx::read_images(&train_images, &hint)?;
        let train_y = idx::read_labels(&train_labels, &hint)?;
        let test = idx::read_images(&test_images, &hint)?;
        let test_y = idx::read_labels(&test_labels, &hint)?;
        check_counts(&train_images, train.count, &train_labels, train_y.len())?;
        check_counts(&test_images, test.count, &test_labels, test_y.len())?;
        if (test.channels, test.height, test.width) != (train.channels, train.height, train.width) {
            return Err(WorkerError::bad_data(
                &test_images,
                format!(
                    "images are {}x{}x{} but the training images in {} are {}x{}x{}",
                    test.channels,
                    test.height,
                    test.width,
                    train_images.display(),
                    train.channels,
                    train.height,
                    train.width
                ),
            ));
        }
        let dataset = Dataset::from_raw(
            (train.channels, train.height, train.width),
            train.pixels,
            train_y,
            test.pixels,
            test_y,
        )?;
        info!(
            train = dataset.train_len(),
            test = dataset.test_len(),
            classes = dataset.num_classes,
            shape = %dataset.input_shape_string(),
            source = %train_images.display(),
            "dataset loaded"
        );
        Ok(dataset)
    }

    /// Builds a dataset from in-memory bytes: `(channels, height, width)` and example-major
    /// pixels with one label byte per example.
    pub fn from_raw(
        (channels, height, width): (u32, u32, u32),
        train_images: Vec<u8>,
        train_labels: Vec<u8>,
        test_images: Vec<u8>,
        test_labels: Vec<u8>,
    ) -> Result<Dataset, WorkerError> {
        let per_image = channels as usize * height as usize * width as usize;
        if per_image == 0 {
            return Err(WorkerError::Source(format!(
                "empty image geometry {channels}x{height}x{width}"
            )));
        }
        for (what, images, labels) in [
            ("training", &train_images, &train_labels),
            ("test", &test_images, &test_labels),
        ] {
            if labels.is_empty() || images.len() != labels.len() * per_image {
                return Err(WorkerError::Source(format!(
                    "{what} data has {} pixel bytes for {} labels of {channels}x{height}x{width} images",
                    images.len(),
                    labels.len()
                )));
            }
        }
        let max_label = train_labels
            .iter()
            .chain(&test_labels)
            .copied()
            .max()
            .unwrap_or(0);
        Ok(Dataset {
            channels,
            height,
            width,
            num_classes: max_label as u32 + 1,
            train_images,
            train_labels,
            test_images,
            test_labels,
        })
    }

    /// Number of examples in the training file (training and validation splits together).
    pub fn train_len(&self) -> usize {
        self.train_labels.len()
    }

    /// Number of examples in the test file.
    pub fn test_len(&self) -> usize {
        self.test_labels.len()
    }

    /// The image geometry as a genome input shape.
    pub fn input_shape(&self) -> InputShape {
        InputShape {
            channels: self.channels,
            height: self.height,
            width: self.width,
        }
    }

    fn input_shape_string(&self) -> String {
        format!("{}x{}x{}", self.channels, self.height, self.width)
    }

    fn image_len(&self) -> usize {
        self.channels as usize * self.height as usize * self.width as usize
    }

    /// Builds the tensors of one split on `device`; see the module documentation for the exact
    /// semantics.
    pub fn split(&self, cfg: &SplitConfig, device: Device) -> Result<SplitData, WorkerError> {
        let (train_idx, val_idx) = self.select(cfg, cfg.split_seed)?;
        let test_n = self.test_count(cfg);
        self.split_at(&train_idx, &val_idx, test_n, device)
    }

    /// The training and validation indices into the training file: [`split_indices`], or with
    /// `per_class` the first `per_class` examples of each class in the seeded order, of which
    /// the last `round(n × validation_fraction)` are held out.
    pub(crate) fn select(
        &self,
        cfg: &SplitConfig,
        seed: u64,
    ) -> Result<(Vec<usize>, Vec<usize>), WorkerError> {
        let seeded = SplitConfig {
            split_seed: seed,
            ..cfg.clone()
        };
        if cfg.per_class == 0 {
            return split_indices(self.train_len(), &seeded);
        }
        let mut order = self.class_balanced(cfg.per_class, seed);
        let n = order.len();
        let n_val = (n as f64 * cfg.validation_fraction).round() as usize;
        if n_val == 0 || n_val >= n {
            return Err(WorkerError::Split(format!(
                "per_class = {} keeps {n} training examples; validation_fraction {} leaves {n_val} \
                 for validation and {} for training; both need at least one",
                cfg.per_class,
                cfg.validation_fraction,
                n.saturating_sub(n_val)
            )));
        }
        let val = order.split_off(n - n_val);
        Ok((order, val))
    }

    /// Indices into the training file: the first `per_class` examples of each class in an
    /// order seeded by `seed` (fewer for a class with fewer), in that order.
    pub(crate) fn class_balanced(&self, per_class: u32, seed: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.train_len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut taken = vec![0u32; self.num_classes as usize];
        order.retain(|&i| {
            let class = &mut taken[self.train_labels[i] as usize];
            *class += 1;
            *class <= per_class
        });
        order
    }

    /// The training images at `idx`, normalised with `lut`, as `f32 [N, C, H, W]`.
    pub(crate) fn train_tensor(
        &self,
        idx: &[usize],
        lut: &[[f32; 256]],
        device: Device,
    ) -> Result<Tensor, WorkerError> {
        self.images_tensor(&self.train_images, idx, lut, device)
    }

    /// The test images at `idx`, normalised with `lut`.
    pub(crate) fn test_tensor(
        &self,
        idx: &[usize],
        lut: &[[f32; 256]],
        device: Device,
    ) -> Result<Tensor, WorkerError> {
        self.images_tensor(&self.test_images, idx, lut, device)
    }

    /// The training labels at `idx`, as `i64 [N]`.
    pub(crate) fn train_labels_tensor(
        &self,
        idx: &[usize],
        device: Device,
    ) -> Result<Tensor, WorkerError> {
        labels_tensor(&self.train_labels, idx, device)
    }

    /// The test labels at `idx`.
    pub(crate) fn test_labels_tensor(
        &self,
        idx: &[usize],
        device: Device,
    ) -> Result<Tensor, WorkerError> {
        labels_tensor(&self.test_labels, idx, device)
    }

    /// How many test examples a split uses: the first `test_subset` (all when 0).
    pub(crate) fn test_count(&self, cfg: &SplitConfig) -> usize {
        match cfg.test_subset as usize {
            0 => self.test_len(),
            k => k.min(self.test_len()),
        }
    }

    /// The tensors of the split with these training and validation indices (into the training
    /// file) and the first `test_n` test examples, normalised with the training examples.
    pub(crate) fn split_at(
        &self,
        train_idx: &[usize],
        val_idx: &[usize],
        test_n: usize,
        device: Device,
    ) -> Result<SplitData, WorkerError> {
        let lut = self.normalisation_table(train_idx);
        let train_x = self.images_tensor(&self.train_images, train_idx, &lut, device)?;
        let train_y = labels_tensor(&self.train_labels, train_idx, device)?;
        let val_x = self.images_tensor(&self.train_images, val_idx, &lut, device)?;
        let val_y = labels_tensor(&self.train_labels, val_idx, device)?;
        let test_idx: Vec<usize> = (0..test_n).collect();
        let test_x = self.images_tensor(&self.test_images, &test_idx, &lut, device)?;
        let test_y = labels_tensor(&self.test_labels, &test_idx, device)?;
        Ok(SplitData {
            train_x,
            train_y,
            val_x,
            val_y,
            test_x,
            test_y,
            num_classes: self.num_classes,
            train_domain: None,
            val_domain: None,
            domain_names: Vec::new(),
            history: None,
        })
    }

    /// For each channel and byte value, the normalised `f32`: `(v / 255 − mean) / std`, with
    /// the mean and standard deviation of the examples in `train_idx` ([`Dataset::channel_stats`]).
    pub(crate) fn normalisation_table(&self, train_idx: &[usize]) -> Vec<[f32; 256]> {
        self.channel_stats(train_idx)
            .iter()
            .map(|s| {
                let mut table = [0f32; 256];
                for (v, t) in table.iter_mut().enumerate() {
                    *t = ((v as f64 / 255.0 - s.mean) / s.std) as f32;
                }
                table
            })
            .collect()
    }

    /// Per channel, the mean and (population) standard deviation of the intensities `v / 255`
    /// of the training-file examples in `train_idx`; a standard deviation below `1e-6` is
    /// replaced by 1. Images are normalised as `(v / 255 − mean) / std`.
    pub fn channel_stats(&self, train_idx: &[usize]) -> Vec<ChannelStats> {
        let plane = self.height as usize * self.width as usize;
        let image = self.image_len();
        let mut hist = vec![[0u64; 256]; self.channels as usize];
        for &i in train_idx {
            let pixels = &self.train_images[i * image..(i + 1) * image];
            for (c, channel) in pixels.chunks_exact(plane).enumerate() {
                for &v in channel {
                    hist[c][v as usize] += 1;
                }
            }
        }
        hist.iter()
            .map(|h| {
                let n = h.iter().sum::<u64>().max(1) as f64;
                let mean = h
                    .iter()
                    .enumerate()
                    .map(|(v, &k)| v as f64 * k as f64)
                    .sum::<f64>()
                    / n;
                let var = h
                    .iter()
                    .enumerate()
                    .map(|(v, &k)| (v as f64 - mean).powi(2) * k as f64)
                    .sum::<f64>()
                    / n;
                let (mean, std) = (mean / 255.0, var.sqrt() / 255.0);
                let std = if std > 1e-6 { std } else { 1.0 };
                ChannelStats { mean, std }
            })
            .collect()
    }

    fn images_tensor(
        &self,
        images: &[u8],
        idx: &[usize],
        lut: &[[f32; 256]],
        device: Device,
    ) -> Result<Tensor, WorkerError> {
        let image = self.image_len();
        let plane = self.height as usize * self.width as usize;
        let mut out = Vec::with_capacity(idx.len() * image);
        for &i in idx {
            let pixels = &images[i * image..(i + 1) * image];
            for (channel, table) in pixels.chunks_exact(plane).zip(lut) {
                out.extend(channel.iter().map(|&v| table[v as usize]));
            }
        }
        let shape = [
            idx.len() as i64,
            self.channels as i64,
            self.height as i64,
            self.width as i64,
        ];
        Ok(Tensor::f_from_slice(&out)?
            .f_view(shape)?
            .f_to_device(device)?)
    }
}

fn check_counts(
    images: &Path,
    n_images: usize,
    labels: &Path,
    n_labels: usize,
) -> Result<(), WorkerError> {
    if n_images != n_labels {
        return Err(WorkerError::bad_data(
            labels,
            format!(
                "holds {n_labels} labels but {} holds {n_images} images",
                images.display()
            ),
        ));
    }
    Ok(())
}

fn labels_tensor(labels: &[u8], idx: &[usize], device: Device) -> Result<Tensor, WorkerError> {
    let values: Vec<i64> = idx.iter().map(|&i| labels[i] as i64).collect();
    Ok(Tensor::f_from_slice(&values)?.f_to_device(device)?)
}

/// The training and validation indices (into the training file) of a split.
pub(crate) fn split_indices(
    n_all: usize,
    cfg: &SplitConfig,
) -> Result<(Vec<usize>, Vec<usize>), WorkerError> {
    let fraction = cfg.validation_fraction;
    if !(fraction.is_finite() && fraction > 0.0 && fraction < 1.0) {
        return Err(WorkerError::Split(format!(
            "validation_fraction must be in (0, 1), got {fraction}"
        )));
    }
    let n = match cfg.train_subset as usize {
        0 => n_all,
        k => k.min(n_all),
    };
    let n_val = (n as f64 * fraction).round() as usize;
    if n_val == 0 || n_val >= n {
        return Err(WorkerError::Split(format!(
            "{n} training examples with validation_fraction {fraction} leave {n_val} for validation \
             and {} for training; both need at least one",
            n.saturating_sub(n_val)
        )));
    }
    let mut order: Vec<usize> = (0..n_all).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.split_seed));
    order.truncate(n);
    let val = order.split_off(n - n_val);
    Ok((order, val))
}

/// The normalisation of one image channel: intensities `x = v / 255` in `[0, 1]` become
/// `(x − mean) / std`, with the statistics of the training split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelStats {
    /// Mean intensity of the channel over the training split, in `[0, 1]`.
    pub mean: f64,
    /// Standard deviation of the channel's intensity over the training split (1 when the
    /// channel is constant).
    pub std: f64,
}

/// How a dataset is cut into training, validation and test splits.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitConfig {
    /// Use at most this many examples of the training file (0 = all).
    pub train_subset: u32,
    /// Use the first this-many examples of the test file (0 = all).
    pub test_subset: u32,
    /// Fraction of the used training examples held out for validation, in (0, 1).
    pub validation_fraction: f64,
    /// Seed of the permutation that picks the subset and the validation split.
    pub split_seed: u64,
    /// Few-shot: keep this many training examples per class before the hold-out (0 = all).
    pub per_class: u32,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            train_subset: 0,
            test_subset: 0,
            validation_fraction: 0.1,
            split_seed: 42,
            per_class: 0,
        }
    }
}

impl SplitConfig {
    /// The split an experiment's `[data]` section asks for, with the experiment's seed.
    pub fn from_config(cfg: &DataConfig, split_seed: u64) -> Self {
        SplitConfig {
            train_subset: cfg.train_subset,
            test_subset: cfg.test_subset,
            validation_fraction: cfg.validation_fraction,
            split_seed,
            per_class: cfg.per_class,
        }
    }
}

/// The tensors of one split, on one device. Images are `f32 [N, C, H, W]` normalised with the
/// training split's statistics; labels are `i64 [N]`.
#[derive(Debug)]
pub struct SplitData {
    pub train_x: Tensor,
    pub train_y: Tensor,
    pub val_x: Tensor,
    pub val_y: Tensor,
    pub test_x: Tensor,
    pub test_y: Tensor,
    /// Number of classes of the dataset (largest label + 1).
    pub num_classes: u32,
    /// With several training domains (`[[data.domains]]`): the domain index (`i64 [N]`, into
    /// `domain_names`) of each training example. `None` for single-source data.
    pub train_domain: Option<Tensor>,
    /// The domain index of each validation example, like `train_domain`.
    pub val_domain: Option<Tensor>,
    /// Names of the training domains, in domain-index order; empty for single-source data.
    pub domain_names: Vec<String>,
    /// The gradient-mixing objective's source task (`[data.history]`), else `None`.
    pub history: Option<HistorySplit>,
}

/// The source task of a gradient-mixing fine-tune, as tensors normalised like the new task's
/// images (see [`crate::data::DataPlan`]).
#[derive(Debug)]
pub struct HistorySplit {
    /// Candidates for the history library: `per_class` training examples of each class.
    pub candidates_x: Tensor,
    pub candidates_y: Tensor,
    /// The source's test examples that measure retention.
    pub test_x: Tensor,
    pub test_y: Tensor,
    /// Examples per class in the replayed library.
    pub library_per_class: u32,
    /// Classes of the source dataset.
    pub num_classes: u32,
}

impl SplitData {
    /// Examples in the training split.
    pub fn train_len(&self) -> usize {
        self.train_y.size()[0] as usize
    }

    /// Examples in the validation split.
    pub fn val_len(&self) -> usize {
        self.val_y.size()[0] as usize
    }

    /// Examples in the test split.
    pub fn test_len(&self) -> usize {
        self.test_y.size()[0] as usize
    }

    /// Number of training domains (0 for single-source data).
    pub fn num_domains(&self) -> usize {
        self.domain_names.len()
    }

    /// Device the tensors live on.
    pub fn device(&self) -> Device {
        self.train_x.device()
    }

    /// Another handle on the same tensors (no copy: the storage, on the CPU or the GPU, is
    /// shared). Training only reads a split, so slots training at once can each hold one.
    pub fn shallow_clone(&self) -> SplitData {
        let opt = |t: &Option<Tensor>| t.as_ref().map(Tensor::shallow_clone);
        SplitData {
            train_x: self.train_x.shallow_clone(),
            train_y: self.train_y.shallow_clone(),
            val_x: self.val_x.shallow_clone(),
            val_y: self.val_y.shallow_clone(),
            test_x: self.test_x.shallow_clone(),
            test_y: self.test_y.shallow_clone(),
            num_classes: self.num_classes,
            train_domain: opt(&self.train_domain),
            val_domain: opt(&self.val_domain),
            domain_names: self.domain_names.clone(),
            history: self.history.as_ref().map(|h| HistorySplit {
                candidates_x: h.candidates_x.shallow_clone(),
                candidates_y: h.candidates_y.shallow_clone(),
                test_x: h.test_x.shallow_clone(),
                test_y: h.test_y.shallow_clone(),
                library_per_class: h.library_per_class,
                num_classes: h.num_classes,
            }),
        }
    }

    /// The split with its training part cut to its first `examples` examples (a search trial
    /// of `[final] search_subset`); validation, test and normalisation stay those of the whole
    /// split, so scores compare with the final trials that train on all of it. No copy: the
    /// training tensors are views. `examples` of 0 or beyond the training split keeps it all.
    pub fn training_prefix(&self, examples: usize) -> Result<SplitData, WorkerError> {
        let mut split = self.shallow_clone();
        let n = self.train_len();
        if examples == 0 || examples >= n {
            return Ok(split);
        }
        let k = examples as i64;
        split.train_x = self.train_x.f_narrow(0, 0, k)?;
        split.train_y = self.train_y.f_narrow(0, 0, k)?;
        if let Some(domain) = &self.train_domain {
            split.train_domain = Some(domain.f_narrow(0, 0, k)?);
        }
        Ok(split)
    }
}

/// The split the worker's trials train on, built once on the training device and shared by
/// every slot of `worker join --slots N`: each trial gets a [`SplitData::shallow_clone`], so N
/// trials at once hold one copy of the data (on the GPU when the device is one). One split is
/// kept, the last one asked for: a trial of other data replaces it (trials still training on
/// the old one keep it alive until they end). Building happens under the lock, so slots that
/// start together build the split once.
#[derive(Debug, Default)]
pub struct SplitCache {
    current: Mutex<Option<(String, SplitData)>>,
}

impl SplitCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The split for `key` (which must name the data, the split and the device), built by
    /// `build` unless the cached one has this key.
    pub fn get_or_build(
        &self,
        key: &str,
        build: impl FnOnce() -> Result<SplitData, WorkerError>,
    ) -> Result<SplitData, WorkerError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, data)) = current.as_ref() {
            if k == key {
                return Ok(data.shallow_clone());
            }
        }
        // Let go of the old split before building the new one (on a GPU both may not fit).
        *current = None;
        let data = build()?;
        let handle = data.shallow_clone();
        *current = Some((key.to_string(), data));
        Ok(handle)
    }
}

/// Datasets loaded by this process, keyed by their source, so each is read once and shared by
/// all trials. Loading happens under the lock: concurrent requests for the same dataset wait for
/// the first instead of reading it twice. Failed loads are not cached.
#[derive(Debug, Default)]
pub struct DatasetCache {
    loaded: Mutex<HashMap<DataSource, Arc<Dataset>>>,
}

impl DatasetCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The dataset of `source`, loading it on first use.
    pub fn get_or_load(&self, source: &DataSource) -> Result<Arc<Dataset>, WorkerError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dataset) = loaded.get(source) {
            return Ok(dataset.clone());
        }
        let dataset = Arc::new(Dataset::load(source)?);
        loaded.insert(source.clone(), dataset.clone());
        Ok(dataset)
    }

    /// Number of datasets held.
    pub fn len(&self) -> usize {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no dataset has been loaded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
