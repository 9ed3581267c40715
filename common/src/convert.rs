//! Conversions between domain types and their wire (proto) form. A missing or malformed field
//! becomes an error that names it.

use crate::error::CommonError;
use crate::proto;
use crate::spec::DataConfig;

/// The wire form of an experiment's data settings, with the seed that fixes the split.
pub fn data_spec_to_proto(cfg: &DataConfig, split_seed: u64) -> proto::DataSpec {
    proto::DataSpec {
        dataset: cfg.dataset.clone(),
        train_images: cfg.train_images.clone().unwrap_or_default(),
        train_labels: cfg.train_labels.clone().unwrap_or_default(),
        test_images: cfg.test_images.clone().unwrap_or_default(),
        test_labels: cfg.test_labels.clone().unwrap_or_default(),
        train_subset: cfg.train_subset,
        test_subset: cfg.test_subset,
        validation_fraction: cfg.validation_fraction,
        split_seed,
    }
}

/// Data settings and split seed from their wire form.
pub fn data_spec_from_proto(spec: &proto::DataSpec) -> Result<(DataConfig, u64), CommonError> {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let cfg = DataConfig {
        dataset: spec.dataset.clone(),
        train_images: opt(&spec.train_images),
        train_labels: opt(&spec.train_labels),
        test_images: opt(&spec.test_images),
        test_labels: opt(&spec.test_labels),
        train_subset: spec.train_subset,
        test_subset: spec.test_subset,
        validation_fraction: spec.validation_fraction,
    };
    if cfg.dataset.is_empty() {
        return Err(CommonError::Spec("trial.data.dataset is missing".into()));
    }
    if !(cfg.validation_fraction > 0.0 && cfg.validation_fraction < 0.9) {
        return Err(CommonError::Spec(format!(
            "trial.data.validation_fraction must be in (0, 0.9), got {}",
            cfg.validation_fraction
        )));
    }
    Ok((cfg, spec.split_seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_spec_round_trips() {
        let cfg = DataConfig {
            dataset: "idx".into(),
            train_images: Some("a".into()),
            train_labels: Some("b".into()),
            test_images: Some("c".into()),
            test_labels: Some("d".into()),
            train_subset: 500,
            test_subset: 100,
            validation_fraction: 0.2,
        };
        let (back, seed) = data_spec_from_proto(&data_spec_to_proto(&cfg, 7)).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(seed, 7);
        let missing = proto::DataSpec::default();
        assert!(data_spec_from_proto(&missing)
            .unwrap_err()
            .to_string()
            .contains("dataset"));
    }
}
