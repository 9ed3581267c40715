//! The data of a trial as its `[data]` section declares it: one source, possibly a derived
//! domain of it, or several labelled domains ([`DataPlan`]).
//!
//! # Multi-domain split semantics
//!
//! Every domain's images are resized (bilinear) to the geometry of the first training domain
//! and then transformed ([`DomainTransform`], noise seeded by the split seed and the domain).
//! Each training domain `i` is cut into training and validation examples exactly like a single
//! source (`train_subset` or `per_class` per domain) with seed `split_seed + i`; the training
//! splits are pooled, and so are the validation splits, so **model selection only ever sees the
//! training domains**. The test split is the target domain's test file (its first
//! `test_subset` examples); without a target, the training domains' test files pooled. The
//! target domain is never trained or selected on. Normalisation uses the pooled training split.

use std::path::Path;
use std::sync::Arc;

use explore_common::genome::InputShape;
use explore_common::spec::{DataConfig, DomainTransform, HistoryConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use super::transform::{self, Geometry};
use super::{
    default_data_dir, ChannelStats, DataSource, Dataset, DatasetCache, HistorySplit, SplitConfig,
    SplitData,
};
use crate::error::WorkerError;

/// One domain: a loaded dataset and how to derive the domain from it.
#[derive(Debug, Clone)]
struct Part {
    name: String,
    dataset: Arc<Dataset>,
    transform: DomainTransform,
    target: bool,
}

/// The datasets of a trial, loaded, with the domain structure of its `[data]` section.
#[derive(Debug, Clone)]
pub struct DataPlan {
    parts: Vec<Part>,
    /// Whether the parts are labelled domains (`[[data.domains]]`), so splits carry domain
    /// indices.
    labelled: bool,
    /// The gradient-mixing objective's source task (`[data.history]`).
    history: Option<History>,
    /// `[data] size`: every image resized to this square side; `None` keeps the first training
    /// domain's size.
    size: Option<u32>,
}

/// The source task of a gradient-mixing fine-tune, loaded.
#[derive(Debug, Clone)]
struct History {
    part: Part,
    config: HistoryConfig,
}

impl DataPlan {
    /// A single source used as it is.
    pub fn single(dataset: Arc<Dataset>) -> Self {
        DataPlan {
            parts: vec![Part {
                name: String::new(),
                dataset,
                transform: DomainTransform::default(),
                target: false,
            }],
            labelled: false,
            history: None,
            size: None,
        }
    }

    /// Loads (through `cache`) every dataset `cfg` names; `fashion_mnist_dir` is where this
    /// worker keeps Fashion-MNIST, [`default_data_dir`] where it keeps MNIST and digits.
    pub fn resolve(
        cfg: &DataConfig,
        fashion_mnist_dir: &Path,
        cache: &DatasetCache,
    ) -> Result<Self, WorkerError> {
        let data_dir = default_data_dir();
        let history = match &cfg.history {
            None => None,
            Some(config) => {
                let source = DataSource::named(&config.dataset, fashion_mnist_dir, &data_dir)?;
                Some(History {
                    part: Part {
                        name: format!("history:{}", config.dataset),
                        dataset: cache.get_or_load(&source)?,
                        transform: config.transform,
                        target: false,
                    },
                    config: config.clone(),
                })
            }
        };
        if cfg.domains.is_empty() {
            let source = DataSource::from_config(cfg, fashion_mnist_dir)?;
            let mut plan = DataPlan::single(cache.get_or_load(&source)?);
            plan.parts[0].transform = cfg.transform;
            plan.history = history;
            plan.size = cfg.size;
            plan.check_channels()?;
            return Ok(plan);
        }
        let mut parts = Vec::with_capacity(cfg.domains.len());
        for domain in &cfg.domains {
            let source =
                DataSource::for_dataset(cfg.dataset_of(domain), cfg, fashion_mnist_dir, &data_dir)?;
            parts.push(Part {
                name: domain.name.clone(),
                dataset: cache.get_or_load(&source)?,
                transform: domain.transform,
                target: domain.target,
            });
        }
        let plan = DataPlan {
            parts,
            labelled: true,
            history,
            size: cfg.size,
        };
        plan.check_channels()?;
        Ok(plan)
    }

    fn check_channels(&self) -> Result<(), WorkerError> {
        let (c, _, _) = self.geometry()?;
        let history = self.history.as_ref().map(|h| &h.part);
        if let Some(other) = self
            .parts
            .iter()
            .chain(history)
            .find(|p| p.dataset.channels != c)
        {
            return Err(WorkerError::Source(format!(
                "domain {:?} has {}-channel images but the first training domain has {c}; \
                 all domains need the same number of channels",
                other.name, other.dataset.channels
            )));
        }
        Ok(())
    }

    fn training_parts(&self) -> impl Iterator<Item = &Part> {
        self.parts.iter().filter(|p| !p.target)
    }

    /// The geometry every domain is resized to: the first training domain's.
    fn geometry(&self) -> Result<Geometry, WorkerError> {
        let first = self
            .training_parts()
            .next()
            .ok_or_else(|| WorkerError::Source("the data has no training domain".into()))?;
        let d = &first.dataset;
        Ok(match self.size {
            Some(side) => (d.channels, side, side),
            None => (d.channels, d.height, d.width),
        })
    }

    /// The input shape of the split's images.
    pub fn input_shape(&self) -> InputShape {
        let d = &self.parts[0].dataset;
        let (channels, height, width) = self.geometry().unwrap_or((d.channels, d.height, d.width));
        InputShape {
            channels,
            height,
            width,
        }
    }

    /// Names of the training domains, in domain-index order (empty for a single source).
    pub fn domain_names(&self) -> Vec<String> {
        if !self.labelled {
            return Vec::new();
        }
        self.training_parts().map(|p| p.name.clone()).collect()
    }

    /// The one dataset of a plan that uses a single source as it is (no domains, transform,
    /// history or resizing): [`DataPlan::split`] is then [`Dataset::split`] unchanged.
    fn unchanged_source(&self) -> Option<&Dataset> {
        let [only] = self.parts.as_slice() else {
            return None;
        };
        let resized = self
            .size
            .is_some_and(|side| (only.dataset.height, only.dataset.width) != (side, side));
        (!self.labelled && only.transform.is_identity() && self.history.is_none() && !resized)
            .then_some(&*only.dataset)
    }

    /// The per-channel normalisation [`DataPlan::split`] applies with `cfg` (the statistics of
    /// its training split, after resizing and transforms), without building the split: an
    /// image of this plan's geometry with intensities `x` in `[0, 1]` is what the trainer sees
    /// as `(x − mean) / std`.
    pub fn normalisation(&self, cfg: &SplitConfig) -> Result<Vec<ChannelStats>, WorkerError> {
        if let Some(only) = self.unchanged_source() {
            let (train_idx, _) = only.select(cfg, cfg.split_seed)?;
            return Ok(only.channel_stats(&train_idx));
        }
        // The training examples exactly as `split` pools them: each training domain's own
        // seeded selection, resized and transformed with the same noise stream.
        let geometry = self.geometry()?;
        let mut train = Pooled::default();
        for (index, part) in self.parts.iter().enumerate() {
            if part.target {
                continue;
            }
            let domain = domain_index(self, index);
            let (train_idx, _) = part.dataset.select(cfg, cfg.split_seed + domain as u64)?;
            let mut rng = noise_rng(cfg.split_seed, index, 0);
            train.extend(part, Which::Train, &train_idx, domain, geometry, &mut rng);
        }
        let n_train = train.labels.len();
        let image = (geometry.0 * geometry.1 * geometry.2) as usize;
        // `from_raw` wants a test file; one blank image stands in for it.
        let pooled = Dataset::from_raw(
            geometry,
            train.pixels,
            train.labels,
            vec![0; image],
            vec![0],
        )?;
        Ok(pooled.channel_stats(&(0..n_train).collect::<Vec<_>>()))
    }

    /// Builds the split's tensors on `device`; see the module documentation. A single source
    /// without transform or few-shot takes [`Dataset::split`] unchanged.
    pub fn split(&self, cfg: &SplitConfig, device: Device) -> Result<SplitData, WorkerError> {
        if let Some(only) = self.unchanged_source() {
            return only.split(cfg, device);
        }
        let geometry = self.geometry()?;
        let image = (geometry.0 * geometry.1 * geometry.2) as usize;
        let mut train = Pooled::default();
        let mut val = Pooled::default();
        let mut test = Pooled::default();
        let target = self.parts.iter().position(|p| p.target);
        let mut num_classes = 0;
        for (index, part) in self.parts.iter().enumerate() {
            num_classes = num_classes.max(part.dataset.num_classes);
            if part.target {
                continue;
            }
            let domain = domain_index(self, index);
            let (train_idx, val_idx) = part.dataset.select(cfg, cfg.split_seed + domain as u64)?;
            let mut rng = noise_rng(cfg.split_seed, index, 0);
            train.extend(part, Which::Train, &train_idx, domain, geometry, &mut rng);
            val.extend(part, Which::Train, &val_idx, domain, geometry, &mut rng);
            if target.is_none() {
                let test_idx: Vec<usize> = (0..part.dataset.test_count(cfg)).collect();
                let mut rng = noise_rng(cfg.split_seed, index, 1);
                test.extend(part, Which::Test, &test_idx, domain, geometry, &mut rng);
            }
        }
        if let Some(t) = target {
            let part = &self.parts[t];
            let test_idx: Vec<usize> = (0..part.dataset.test_count(cfg)).collect();
            let mut rng = noise_rng(cfg.split_seed, t, 1);
            test.extend(part, Which::Test, &test_idx, 0, geometry, &mut rng);
        }
        let (n_train, n_val, n_test) = (train.labels.len(), val.labels.len(), test.labels.len());
        debug_assert_eq!(train.pixels.len(), n_train * image);
        let mut pooled_pixels = train.pixels;
        pooled_pixels.extend_from_slice(&val.pixels);
        let mut pooled_labels = train.labels;
        pooled_labels.extend_from_slice(&val.labels);
        let mut pooled = Dataset::from_raw(
            geometry,
            pooled_pixels,
            pooled_labels,
            test.pixels,
            test.labels,
        )?;
        pooled.num_classes = num_classes;
        let train_idx: Vec<usize> = (0..n_train).collect();
        let val_idx: Vec<usize> = (n_train..n_train + n_val).collect();
        let mut split = pooled.split_at(&train_idx, &val_idx, n_test, device)?;
        if let Some(history) = &self.history {
            split.history = Some(history.split(&pooled, &train_idx, cfg, geometry, device)?);
        }
        if self.labelled {
            split.train_domain = Some(domain_tensor(&train.domains, device)?);
            split.val_domain = Some(domain_tensor(&val.domains, device)?);
            split.domain_names = self.domain_names();
        }
        Ok(split)
    }
}

impl History {
    /// The history's candidates (`per_class` training examples of each class, in a seeded
    /// order) and its first `test_subset` test examples, resized to `geometry`, derived, and
    /// normalised like the new task's images (with `pooled`'s statistics over `train_idx`).
    fn split(
        &self,
        pooled: &Dataset,
        train_idx: &[usize],
        cfg: &SplitConfig,
        geometry: Geometry,
        device: Device,
    ) -> Result<HistorySplit, WorkerError> {
        let d = &self.part.dataset;
        let candidates = d.class_balanced(self.config.per_class, cfg.split_seed ^ HISTORY_SEED);
        let test_idx: Vec<usize> =
            (0..(self.config.test_subset as usize).min(d.test_len())).collect();
        let mut train = Pooled::default();
        let mut test = Pooled::default();
        let mut rng = noise_rng(cfg.split_seed ^ HISTORY_SEED, 0, 0);
        train.extend(&self.part, Which::Train, &candidates, 0, geometry, &mut rng);
        let mut rng = noise_rng(cfg.split_seed ^ HISTORY_SEED, 0, 1);
        test.extend(&self.part, Which::Test, &test_idx, 0, geometry, &mut rng);
        let lut = pooled.normalisation_table(train_idx);
        let all = |n: usize| (0..n).collect::<Vec<usize>>();
        let (n_train, n_test) = (train.labels.len(), test.labels.len());
        let source = Dataset::from_raw(
            geometry,
            train.pixels,
            train.labels,
            test.pixels,
            test.labels,
        )?;
        Ok(HistorySplit {
            candidates_x: source.train_tensor(&all(n_train), &lut, device)?,
            candidates_y: source.train_labels_tensor(&all(n_train), device)?,
            test_x: source.test_tensor(&all(n_test), &lut, device)?,
            test_y: source.test_labels_tensor(&all(n_test), device)?,
            library_per_class: self.config.library_per_class,
            num_classes: d.num_classes,
        })
    }
}

/// Mixed into the split seed for the history's sample and noise.
const HISTORY_SEED: u64 = 0x0068_6973_746f_7279;

/// The index of part `index` among the training parts.
fn domain_index(plan: &DataPlan, index: usize) -> usize {
    plan.parts[..index].iter().filter(|p| !p.target).count()
}

/// Mixed into the split seed for the noise of derived domains.
const NOISE_SEED: u64 = 0x6e6f_6973_6521;

/// The noise stream of one domain's training (`stream` 0) or test (1) images.
fn noise_rng(split_seed: u64, domain: usize, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(split_seed ^ NOISE_SEED);
    rng.set_stream((domain as u64) << 1 | stream);
    rng
}

#[derive(Clone, Copy)]
enum Which {
    Train,
    Test,
}

/// Pixels, labels and domain indices gathered from several domains.
#[derive(Default)]
struct Pooled {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    domains: Vec<usize>,
}

impl Pooled {
    fn extend(
        &mut self,
        part: &Part,
        which: Which,
        idx: &[usize],
        domain: usize,
        geometry: Geometry,
        rng: &mut ChaCha8Rng,
    ) {
        let d = &part.dataset;
        let from = (d.channels, d.height, d.width);
        let size = d.image_len();
        let (images, labels) = match which {
            Which::Train => (&d.train_images, &d.train_labels),
            Which::Test => (&d.test_images, &d.test_labels),
        };
        for &i in idx {
            let mut image = transform::resize(&images[i * size..(i + 1) * size], from, geometry);
            transform::apply(&part.transform, &mut image, geometry, rng);
            self.pixels.extend_from_slice(&image);
            self.labels.push(labels[i]);
            self.domains.push(domain);
        }
    }
}

fn domain_tensor(domains: &[usize], device: Device) -> Result<Tensor, WorkerError> {
    let values: Vec<i64> = domains.iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_slice(&values)?.f_to_device(device)?)
}

#[cfg(test)]
mod tests;
