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

use serde::{Deserialize, Serialize};

use crate::error::CommonError;

/// The datasets a worker knows by name (plus `"idx"`, four explicit files).
pub const NAMED_DATASETS: [&str; 3] = ["fashion-mnist", "mnist", "digits"];

/// Which data trials train on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `"fashion-mnist"`, `"mnist"`, `"digits"` (resolved by each worker, see `worker join
    /// --data-dir` and the README's data sources) or `"idx"`.
    pub dataset: String,
    /// With `dataset = "idx"`: paths of the MNIST-format IDX files (optionally gzipped).
    pub train_images: Option<String>,
    pub train_labels: Option<String>,
    pub test_images: Option<String>,
    pub test_labels: Option<String>,
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

    /// The training (non-target) domains, in declaration order.
    pub fn training_domains(&self) -> impl Iterator<Item = &DomainConfig> {
        self.domains.iter().filter(|d| !d.target)
    }

    /// The target domain, if one is declared.
    pub fn target_domain(&self) -> Option<&DomainConfig> {
        self.domains.iter().find(|d| d.target)
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
            name if NAMED_DATASETS.contains(&name) => {
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
                        "must be \"fashion-mnist\", \"mnist\", \"digits\" or \"idx\", got {other:?}"
                    ),
                )
            }
        }
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
                if !NAMED_DATASETS.contains(&name.as_str()) {
                    return key(
                        &format!("{prefix}.dataset"),
                        format!("must be \"fashion-mnist\", \"mnist\" or \"digits\", got {name:?}"),
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
