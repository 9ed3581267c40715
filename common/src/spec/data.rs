//! The `[data]` section of a spec: which dataset, which derived domain of it, how much of it,
//! and, for the domain objectives, several labelled domains (`[[data.domains]]`).
//!
//! ```toml
//! [data]
//! dataset = "fashion-mnist"
//! train_subset = 4000
//!
//! [[data.domains]]
//! name = "rot15"
//! transform = { rotate = 15 }
//!
//! [[data.domains]]
//! name = "rot30"
//! transform = { rotate = 30 }
//!
//! [[data.domains]]
//! name = "upright"
//! transform = { rotate = 0 }
//! target = true
//! ```
//!
//! A user's own images: `dataset = "folder"`, `folder = "/path/to/root"` with one subfolder per
//! class (`root/<class>/<file>.png|jpg|jpeg`), optional `test_folder`, and the geometry every
//! image is converted to, `channels` (1 or 3, default 1) and `size` (default 28).

use serde::{Deserialize, Serialize};

use crate::error::CommonError;

/// The datasets a worker knows by name (plus `"idx"`, four explicit files, and `"folder"`, a
/// user's image folders). All of them are gray (one channel).
pub const NAMED_DATASETS: [&str; 3] = ["fashion-mnist", "mnist", "digits"];

/// The dataset name of image folders (`[data] folder`, `test_folder`, `channels`, `size`).
pub const FOLDER_DATASET: &str = "folder";
/// Channels folder images are converted to when `channels` is not given (gray).
pub const DEFAULT_FOLDER_CHANNELS: u32 = 1;
/// Side of the square folder images are resized to when `size` is not given (MNIST's 28, so
/// the presets' input shape fits).
pub const DEFAULT_FOLDER_SIZE: u32 = 28;
/// Largest accepted `size`.
pub const MAX_FOLDER_SIZE: u32 = 1024;

/// Which data trials train on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `"fashion-mnist"`, `"mnist"`, `"digits"` (resolved by each worker, see `worker join
    /// --data-dir` and the README's data sources), `"idx"` or `"folder"`.
    pub dataset: String,
    /// With `dataset = "idx"`: paths of the MNIST-format IDX files (optionally gzipped).
    pub train_images: Option<String>,
    pub train_labels: Option<String>,
    pub test_images: Option<String>,
    pub test_labels: Option<String>,
    /// With `dataset = "folder"` (or a domain's): the root of the training images,
    /// `root/<class>/<file>.png|jpg|jpeg`, as each worker sees the path. Class names sorted give
    /// the label indices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Test images in the same layout (classes named as in `folder`); absent = a fixed,
    /// seeded fifth of each class of `folder` is held out as the test file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_folder: Option<String>,
    /// Channels folder images are converted to: 1 (gray) or 3 (RGB); absent = 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
    /// Side of the square every folder image is resized to; absent = 28.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// Train on at most this many training examples (0 or absent = all); per domain with
    /// `[[data.domains]]`.
    pub train_subset: u32,
    /// Report test accuracy on at most this many test examples (0 or absent = all).
    pub test_subset: u32,
    /// Fraction of the training examples held out as the validation split (the score).
    pub validation_fraction: f64,
    /// Few-shot: keep only this many training examples of each class (0 = all), before the
    /// validation split is held out; per domain with `[[data.domains]]`.
    #[serde(skip_serializing_if = "is_zero")]
    pub per_class: u32,
    /// A derived domain of the dataset (rotation, inversion, low contrast with noise), applied
    /// to its training and test images. Identity by default.
    #[serde(skip_serializing_if = "DomainTransform::is_identity")]
    pub transform: DomainTransform,
    /// Several labelled domains instead of one source: each a dataset (default: `dataset`)
    /// and a transform, tagged as a training domain or the target domain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<DomainConfig>,
    /// The history library of the gradient-mixing objective (S4): a class-balanced sample of
    /// the source task's training examples, replayed while fine-tuning on this data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryConfig>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: "fashion-mnist".into(),
            train_images: None,
            train_labels: None,
            test_images: None,
            test_labels: None,
            folder: None,
            test_folder: None,
            channels: None,
            size: None,
            train_subset: 0,
            test_subset: 0,
            validation_fraction: 0.1,
            per_class: 0,
            transform: DomainTransform::default(),
            domains: Vec::new(),
            history: None,
        }
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A deterministic derivation of a domain from a dataset's images, applied in this order:
/// rotation, inversion, contrast reduction, noise. The identity by default.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainTransform {
    /// Rotation in degrees, counter-clockwise about the image centre (bilinear, zero fill).
    pub rotate: f64,
    /// Invert intensities (`v → 255 − v`).
    pub invert: bool,
    /// Contrast reduction in [0, 1): `v → (1 − a)·v + a·127.5` (0 = unchanged).
    pub low_contrast: f64,
    /// Standard deviation of the Gaussian noise added after the contrast step, in units of the
    /// full intensity range ([0, 1]; seeded by the split seed and the domain).
    pub noise: f64,
}

impl DomainTransform {
    /// Whether the transform leaves every image unchanged.
    pub fn is_identity(&self) -> bool {
        *self == DomainTransform::default()
    }

    /// Checks the ranges; errors name `prefix.<field>`.
    pub fn validate(&self, prefix: &str) -> Result<(), CommonError> {
        let key = |field: &str, reason: String| {
            Err(CommonError::SpecKey {
                key: format!("{prefix}.{field}"),
                reason,
            })
        };
        if !(self.rotate.is_finite() && self.rotate.abs() <= 360.0) {
            return key(
                "rotate",
                format!("must be degrees in [-360, 360], got {}", self.rotate),
            );
        }
        if !(self.low_contrast >= 0.0 && self.low_contrast < 1.0) {
            return key(
                "low_contrast",
                format!("must be in [0, 1), got {}", self.low_contrast),
            );
        }
        if !(self.noise >= 0.0 && self.noise <= 1.0) {
            return key("noise", format!("must be in [0, 1], got {}", self.noise));
        }
        Ok(())
    }
}

/// The source task whose knowledge a gradient-mixing fine-tune keeps (`[data.history]`).
///
/// The worker draws `per_class` training examples of each class of `dataset` (seeded by the
/// split seed, so the same spec gives the same candidates on every worker), resized to this
/// data's geometry and derived by `transform`; of these, `library_per_class` per class form the
/// history library that is replayed, re-chosen after every epoch. The source's first
/// `test_subset` test examples measure what is retained (forgetting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// A named dataset: `"fashion-mnist"`, `"mnist"` or `"digits"`.
    pub dataset: String,
    /// How the source derives from its dataset (identity by default).
    #[serde(default, skip_serializing_if = "DomainTransform::is_identity")]
    pub transform: DomainTransform,
    /// Candidate examples per class drawn from the source's training file.
    #[serde(default = "default_history_per_class")]
    pub per_class: u32,
    /// Examples per class in the replayed library (at most `per_class`).
    #[serde(default = "default_history_library")]
    pub library_per_class: u32,
    /// Source test examples that measure retention (the first ones of its test file).
    #[serde(default = "default_history_test_subset")]
    pub test_subset: u32,
}

fn default_history_per_class() -> u32 {
    40
}

fn default_history_library() -> u32 {
    20
}

fn default_history_test_subset() -> u32 {
    1000
}

impl HistoryConfig {
    /// A history of `dataset` derived by `transform`, with the default sizes.
    pub fn replaying(dataset: &str, transform: DomainTransform) -> Self {
        HistoryConfig {
            dataset: dataset.to_string(),
            transform,
            per_class: default_history_per_class(),
            library_per_class: default_history_library(),
            test_subset: default_history_test_subset(),
        }
    }

    /// Checks the section; errors name `data.history.<field>`.
    pub fn validate(&self) -> Result<(), CommonError> {
        let key = |field: &str, reason: String| {
            Err(CommonError::SpecKey {
                key: format!("data.history.{field}"),
                reason,
            })
        };
        if !NAMED_DATASETS.contains(&self.dataset.as_str()) {
            return key(
                "dataset",
                format!(
                    "must be \"fashion-mnist\", \"mnist\" or \"digits\", got {:?}",
                    self.dataset
                ),
            );
        }
        if !(1..=10_000).contains(&self.per_class) {
            return key(
                "per_class",
                format!("must be 1..=10000, got {}", self.per_class),
            );
        }
        if self.library_per_class == 0 || self.library_per_class > self.per_class {
            return key(
                "library_per_class",
                format!(
                    "must be 1..=per_class ({}), got {}",
                    self.per_class, self.library_per_class
                ),
            );
        }
        if self.test_subset == 0 {
            return key("test_subset", "must be at least 1".into());
        }
        self.transform.validate("data.history.transform")
    }
}

/// One labelled domain of multi-domain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// Name shown in metrics and errors; unique within `[[data.domains]]`.
    pub name: String,
    /// A named dataset (default: the section's `dataset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// How this domain derives from its dataset.
    #[serde(default, skip_serializing_if = "DomainTransform::is_identity")]
    pub transform: DomainTransform,
    /// The target domain: never trained on or selected on; its test file is the test split.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub target: bool,
}

impl DataConfig {
    /// The dataset of a domain: its own, or the section's.
    pub fn dataset_of<'a>(&'a self, domain: &'a DomainConfig) -> &'a str {
        domain.dataset.as_deref().unwrap_or(&self.dataset)
    }

    /// Whether the section or one of its domains reads image folders (`dataset = "folder"`).
    pub fn uses_folder(&self) -> bool {
        self.dataset == FOLDER_DATASET
            || self
                .domains
                .iter()
                .any(|d| d.dataset.as_deref() == Some(FOLDER_DATASET))
    }

    /// Channels folder images are converted to (`channels`, default 1).
    pub fn folder_channels(&self) -> u32 {
        self.channels.unwrap_or(DEFAULT_FOLDER_CHANNELS)
    }

    /// Side of the square folder images are resized to (`size`, default 28).
    pub fn folder_size(&self) -> u32 {
        self.size.unwrap_or(DEFAULT_FOLDER_SIZE)
    }

    /// The training (non-target) domains, in declaration order.
    pub fn training_domains(&self) -> impl Iterator<Item = &DomainConfig> {
        self.domains.iter().filter(|d| !d.target)
    }

    /// The target domain, if one is declared.
    pub fn target_domain(&self) -> Option<&DomainConfig> {
        self.domains.iter().find(|d| d.target)
    }

    /// The image shape `(channels, height, width)` the workers will train on, where the spec
    /// alone decides it: `size` if given, else the named dataset's own (Fashion-MNIST and MNIST
    /// 1×28×28, digits 1×8×8), image folders' `channels` × `size`; with `[[data.domains]]` the
    /// first training domain's. `None` for IDX files, whose shape only the files know.
    pub fn input_shape(&self) -> Option<(u32, u32, u32)> {
        let dataset = match self.training_domains().next() {
            Some(first) => self.dataset_of(first),
            None => self.dataset.as_str(),
        };
        let (channels, side) = match dataset {
            FOLDER_DATASET => (self.folder_channels(), self.folder_size()),
            "fashion-mnist" | "fashion_mnist" | "mnist" => (1, 28),
            "digits" => (1, 8),
            _ => return None,
        };
        let side = self.size.unwrap_or(side);
        Some((channels, side, side))
    }

    /// Checks the section; errors name the offending key.
    pub fn validate(&self) -> Result<(), CommonError> {
        let key = |k: &str, reason: String| {
            Err(CommonError::SpecKey {
                key: k.to_string(),
                reason,
            })
        };
        let files = [
            ("data.train_images", &self.train_images),
            ("data.train_labels", &self.train_labels),
            ("data.test_images", &self.test_images),
            ("data.test_labels", &self.test_labels),
        ];
        match self.dataset.as_str() {
            "idx" => {
                for (k, v) in files {
                    if v.as_deref().is_none_or(|p| p.trim().is_empty()) {
                        return key(k, "is required with dataset = \"idx\"".into());
                    }
                }
            }
            name if NAMED_DATASETS.contains(&name) || name == FOLDER_DATASET => {
                for (k, v) in files {
                    if v.is_some() {
                        return key(k, "is only allowed with dataset = \"idx\"".into());
                    }
                }
            }
            other => {
                return key(
                    "data.dataset",
                    format!(
                        "must be \"fashion-mnist\", \"mnist\", \"digits\", \"folder\" or \"idx\", \
                         got {other:?}"
                    ),
                )
            }
        }
        self.validate_folder()?;
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 0.9) {
            return key(
                "data.validation_fraction",
                format!("must be in (0, 0.9), got {}", self.validation_fraction),
            );
        }
        if self.train_subset != 0 && self.train_subset < 100 {
            return key(
                "data.train_subset",
                format!("must be 0 (all) or at least 100, got {}", self.train_subset),
            );
        }
        if self.per_class != 0 && self.train_subset != 0 {
            return key(
                "data.per_class",
                "cannot be combined with data.train_subset: give one of the two".into(),
            );
        }
        if self.per_class > 100_000 {
            return key(
                "data.per_class",
                format!("must be at most 100000, got {}", self.per_class),
            );
        }
        self.transform.validate("data.transform")?;
        if let Some(history) = &self.history {
            history.validate()?;
        }
        if self.domains.is_empty() {
            return Ok(());
        }
        if !self.transform.is_identity() {
            return key(
                "data.transform",
                "cannot be combined with [[data.domains]]: give each domain its own transform"
                    .into(),
            );
        }
        if self.dataset == "idx" {
            return key(
                "data.domains",
                "cannot be combined with dataset = \"idx\": domains take named datasets".into(),
            );
        }
        if self.domains.len() > 16 {
            return key(
                "data.domains",
                format!("at most 16 domains, got {}", self.domains.len()),
            );
        }
        for (i, d) in self.domains.iter().enumerate() {
            let prefix = format!("data.domains[{i}]");
            if d.name.trim().is_empty() || d.name.len() > 64 {
                return key(
                    &format!("{prefix}.name"),
                    "must be 1 to 64 characters".into(),
                );
            }
            if self.domains[..i].iter().any(|e| e.name == d.name) {
                return key(
                    &format!("{prefix}.name"),
                    format!("{:?} is used by two domains", d.name),
                );
            }
            if let Some(name) = &d.dataset {
                if !NAMED_DATASETS.contains(&name.as_str()) && name != FOLDER_DATASET {
                    return key(
                        &format!("{prefix}.dataset"),
                        format!(
                            "must be \"fashion-mnist\", \"mnist\", \"digits\" or \"folder\", \
                             got {name:?}"
                        ),
                    );
                }
            }
            d.transform.validate(&format!("{prefix}.transform"))?;
        }
        if self.domains.iter().filter(|d| d.target).count() > 1 {
            return key(
                "data.domains",
                "at most one domain can be the target".into(),
            );
        }
        if self.training_domains().next().is_none() {
            return key(
                "data.domains",
                "needs at least one training domain (target = false)".into(),
            );
        }
        if self.uses_folder() && self.folder_channels() != 1 {
            if let Some(d) = self
                .domains
                .iter()
                .find(|d| self.dataset_of(d) != FOLDER_DATASET)
            {
                return key(
                    "data.channels",
                    format!(
                        "is {} but domain {:?} reads the gray dataset {:?}; all domains need the \
                         same number of channels",
                        self.folder_channels(),
                        d.name,
                        self.dataset_of(d)
                    ),
                );
            }
        }
        Ok(())
    }

    /// Checks `folder`, `test_folder`, `channels` and `size`: required or allowed only where
    /// image folders are read, and in range.
    fn validate_folder(&self) -> Result<(), CommonError> {
        let key = |k: &str, reason: String| {
            Err(CommonError::SpecKey {
                key: k.to_string(),
                reason,
            })
        };
        if !self.uses_folder() {
            for (k, set) in [
                ("data.folder", self.folder.is_some()),
                ("data.test_folder", self.test_folder.is_some()),
                ("data.channels", self.channels.is_some()),
            ] {
                if set {
                    return key(k, "is only allowed with dataset = \"folder\"".into());
                }
            }
            // A named dataset keeps its own size unless `size` resizes it (e.g. digits' 8×8
            // to the 28×28 of an MNIST-sized model).
            if let Some(size) = self.size.filter(|s| !(1..=MAX_FOLDER_SIZE).contains(s)) {
                return key(
                    "data.size",
                    format!("must be 1..={MAX_FOLDER_SIZE} pixels, got {size}"),
                );
            }
            return Ok(());
        }
        if self.folder.as_deref().is_none_or(|p| p.trim().is_empty()) {
            return key(
                "data.folder",
                "is required with dataset = \"folder\": the root of root/<class>/<image>.png|jpg"
                    .into(),
            );
        }
        if self
            .test_folder
            .as_deref()
            .is_some_and(|p| p.trim().is_empty())
        {
            return key(
                "data.test_folder",
                "must be a path; leave it out to hold out a part of data.folder".into(),
            );
        }
        if !matches!(self.folder_channels(), 1 | 3) {
            return key(
                "data.channels",
                format!(
                    "must be 1 (gray) or 3 (RGB), got {}",
                    self.folder_channels()
                ),
            );
        }
        if !(1..=MAX_FOLDER_SIZE).contains(&self.folder_size()) {
            return key(
                "data.size",
                format!(
                    "must be 1..={MAX_FOLDER_SIZE} pixels, got {}",
                    self.folder_size()
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_shape_follows_the_dataset_size_and_first_training_domain() {
        let shape = |text: &str| parse(text).input_shape();
        assert_eq!(shape("dataset = \"mnist\""), Some((1, 28, 28)));
        assert_eq!(shape("dataset = \"digits\""), Some((1, 8, 8)));
        assert_eq!(shape("dataset = \"digits\"\nsize = 28"), Some((1, 28, 28)));
        assert_eq!(
            shape("dataset = \"folder\"\nfolder = \"/x\"\nchannels = 3\nsize = 32"),
            Some((3, 32, 32))
        );
        assert_eq!(
            shape("dataset = \"folder\"\nfolder = \"/x\""),
            Some((1, 28, 28))
        );
        assert_eq!(
            shape(
                "dataset = \"idx\"\ntrain_images = \"a\"\ntrain_labels = \"b\"\ntest_images = \"c\"\ntest_labels = \"d\""
            ),
            None
        );
        // the target's own dataset does not decide: it is resized to the training domains'
        let domains = "dataset = \"mnist\"\n[[domains]]\nname = \"digits\"\ndataset = \"digits\"\ntarget = true\n[[domains]]\nname = \"a\"\n[[domains]]\nname = \"b\"\ntransform = { rotate = 20 }";
        assert_eq!(shape(domains), Some((1, 28, 28)));
    }

    fn parse(text: &str) -> DataConfig {
        toml::from_str(text).unwrap()
    }

    fn error_key(cfg: &DataConfig) -> String {
        match cfg.validate().unwrap_err() {
            CommonError::SpecKey { key, .. } => key,
            other => panic!("expected a key error, got {other}"),
        }
    }

    #[test]
    fn domains_parse_with_inline_transforms_and_defaults() {
        let cfg = parse(
            r#"
            dataset = "mnist"
            [[domains]]
            name = "a"
            transform = { rotate = 15, noise = 0.1 }
            [[domains]]
            name = "b"
            dataset = "fashion-mnist"
            [[domains]]
            name = "t"
            dataset = "digits"
            target = true
            "#,
        );
        cfg.validate().unwrap();
        assert_eq!(cfg.domains[0].transform.rotate, 15.0);
        assert_eq!(cfg.domains[0].transform.noise, 0.1);
        assert_eq!(cfg.dataset_of(&cfg.domains[0]), "mnist");
        assert_eq!(cfg.dataset_of(&cfg.domains[1]), "fashion-mnist");
        assert_eq!(cfg.training_domains().count(), 2);
        assert_eq!(cfg.target_domain().unwrap().name, "t");
    }

    #[test]
    fn defaults_are_not_serialised() {
        let json = serde_json::to_string(&DataConfig::default()).unwrap();
        assert!(!json.contains("domains"), "{json}");
        assert!(!json.contains("transform"), "{json}");
        assert!(!json.contains("per_class"), "{json}");
        let back: DataConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, DataConfig::default());
    }

    #[test]
    fn bad_data_sections_name_their_key() {
        let base = DataConfig::default();
        let with = |f: &dyn Fn(&mut DataConfig)| {
            let mut c = base.clone();
            f(&mut c);
            c
        };
        let domain = |name: &str, target: bool| DomainConfig {
            name: name.into(),
            dataset: None,
            transform: DomainTransform::default(),
            target,
        };
        let cases: Vec<(DataConfig, &str)> = vec![
            (with(&|c| c.dataset = "cifar".into()), "data.dataset"),
            (
                with(&|c| c.transform.rotate = f64::NAN),
                "data.transform.rotate",
            ),
            (
                with(&|c| c.transform.low_contrast = 1.0),
                "data.transform.low_contrast",
            ),
            (with(&|c| c.transform.noise = -0.1), "data.transform.noise"),
            (
                with(&|c| {
                    c.per_class = 10;
                    c.train_subset = 1000;
                }),
                "data.per_class",
            ),
            (
                with(&|c| c.domains = vec![domain("a", false), domain("a", false)]),
                "data.domains[1].name",
            ),
            (
                with(&|c| c.domains = vec![domain("a", true), domain("b", true)]),
                "data.domains",
            ),
            (
                with(&|c| c.domains = vec![domain("t", true)]),
                "data.domains",
            ),
            (
                with(&|c| {
                    c.domains = vec![domain("a", false)];
                    c.transform.invert = true;
                }),
                "data.transform",
            ),
            (
                with(&|c| {
                    let mut d = domain("a", false);
                    d.dataset = Some("idx".into());
                    c.domains = vec![d];
                }),
                "data.domains[0].dataset",
            ),
            (
                with(&|c| {
                    let mut d = domain("a", false);
                    d.transform.rotate = 400.0;
                    c.domains = vec![d];
                }),
                "data.domains[0].transform.rotate",
            ),
        ];
        for (cfg, expected) in cases {
            assert_eq!(error_key(&cfg), expected, "{cfg:?}");
        }
    }

    #[test]
    fn folders_parse_with_defaults_and_bad_folder_keys_are_named() {
        let cfg = parse(
            r#"
            dataset = "folder"
            folder = "/data/pets/train"
            "#,
        );
        cfg.validate().unwrap();
        assert!(cfg.uses_folder());
        assert_eq!((cfg.folder_channels(), cfg.folder_size()), (1, 28));
        assert_eq!(cfg.test_folder, None);
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(
            !json.contains("channels") && !json.contains("size"),
            "{json}"
        );
        let rgb = parse(
            r#"
            dataset = "folder"
            folder = "train"
            test_folder = "test"
            channels = 3
            size = 32
            "#,
        );
        rgb.validate().unwrap();
        assert_eq!((rgb.folder_channels(), rgb.folder_size()), (3, 32));
        // a folder as the target domain of named training domains
        let target = parse(
            r#"
            dataset = "mnist"
            folder = "mine"
            [[domains]]
            name = "mnist"
            [[domains]]
            name = "mine"
            dataset = "folder"
            target = true
            "#,
        );
        target.validate().unwrap();
        assert!(target.uses_folder());

        let folder = DataConfig {
            dataset: FOLDER_DATASET.into(),
            folder: Some("/x".into()),
            ..DataConfig::default()
        };
        let with = |f: &dyn Fn(&mut DataConfig)| {
            let mut c = folder.clone();
            f(&mut c);
            c
        };
        let cases: Vec<(DataConfig, &str)> = vec![
            (with(&|c| c.folder = None), "data.folder"),
            (with(&|c| c.folder = Some(" ".into())), "data.folder"),
            (
                with(&|c| c.test_folder = Some("".into())),
                "data.test_folder",
            ),
            (with(&|c| c.channels = Some(2)), "data.channels"),
            (with(&|c| c.size = Some(0)), "data.size"),
            (with(&|c| c.size = Some(MAX_FOLDER_SIZE + 1)), "data.size"),
            (
                with(&|c| c.train_images = Some("a".into())),
                "data.train_images",
            ),
            (
                with(&|c| {
                    c.dataset = "mnist".into();
                }),
                "data.folder",
            ),
            (
                with(&|c| {
                    c.dataset = "digits".into();
                    c.folder = None;
                    c.size = Some(0);
                }),
                "data.size",
            ),
            (
                with(&|c| {
                    c.channels = Some(3);
                    c.domains = vec![
                        DomainConfig {
                            name: "mine".into(),
                            dataset: None,
                            transform: DomainTransform::default(),
                            target: false,
                        },
                        DomainConfig {
                            name: "mnist".into(),
                            dataset: Some("mnist".into()),
                            transform: DomainTransform::default(),
                            target: true,
                        },
                    ];
                }),
                "data.channels",
            ),
        ];
        for (cfg, expected) in cases {
            assert_eq!(error_key(&cfg), expected, "{cfg:?}");
        }
    }
}
