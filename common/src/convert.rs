//! Conversions between domain types and their wire (proto) form. A missing or malformed field
//! becomes an error that names it.

use crate::error::CommonError;
use crate::proto;
use crate::spec::{DataConfig, DomainConfig, DomainTransform, HistoryConfig};

/// The wire form of an experiment's data settings, with the seed that fixes the split.
pub fn data_spec_to_proto(cfg: &DataConfig, split_seed: u64) -> proto::DataSpec {
    proto::DataSpec {
        dataset: cfg.dataset.clone(),
        train_images: cfg.train_images.clone().unwrap_or_default(),
        train_labels: cfg.train_labels.clone().unwrap_or_default(),
        test_images: cfg.test_images.clone().unwrap_or_default(),
        test_labels: cfg.test_labels.clone().unwrap_or_default(),
        folder: cfg.folder.clone().unwrap_or_default(),
        test_folder: cfg.test_folder.clone().unwrap_or_default(),
        channels: cfg.channels.unwrap_or_default(),
        size: cfg.size.unwrap_or_default(),
        train_subset: cfg.train_subset,
        test_subset: cfg.test_subset,
        validation_fraction: cfg.validation_fraction,
        split_seed,
        transform: transform_to_proto(&cfg.transform),
        per_class: cfg.per_class,
        domains: cfg
            .domains
            .iter()
            .map(|d| proto::DomainSpec {
                name: d.name.clone(),
                dataset: d.dataset.clone().unwrap_or_default(),
                transform: transform_to_proto(&d.transform),
                target: d.target,
            })
            .collect(),
        history: cfg.history.as_ref().map(|h| proto::HistorySpec {
            dataset: h.dataset.clone(),
            transform: transform_to_proto(&h.transform),
            per_class: h.per_class,
            library_per_class: h.library_per_class,
            test_subset: h.test_subset,
        }),
    }
}

fn transform_to_proto(t: &DomainTransform) -> Option<proto::DomainTransform> {
    (!t.is_identity()).then_some(proto::DomainTransform {
        rotate: t.rotate,
        invert: t.invert,
        low_contrast: t.low_contrast,
        noise: t.noise,
    })
}

fn transform_from_proto(t: Option<&proto::DomainTransform>) -> DomainTransform {
    t.map_or_else(DomainTransform::default, |t| DomainTransform {
        rotate: t.rotate,
        invert: t.invert,
        low_contrast: t.low_contrast,
        noise: t.noise,
    })
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
        folder: opt(&spec.folder),
        test_folder: opt(&spec.test_folder),
        channels: (spec.channels != 0).then_some(spec.channels),
        size: (spec.size != 0).then_some(spec.size),
        train_subset: spec.train_subset,
        test_subset: spec.test_subset,
        validation_fraction: spec.validation_fraction,
        per_class: spec.per_class,
        transform: transform_from_proto(spec.transform.as_ref()),
        domains: spec
            .domains
            .iter()
            .map(|d| DomainConfig {
                name: d.name.clone(),
                dataset: opt(&d.dataset),
                transform: transform_from_proto(d.transform.as_ref()),
                target: d.target,
            })
            .collect(),
        history: spec.history.as_ref().map(|h| HistoryConfig {
            dataset: h.dataset.clone(),
            transform: transform_from_proto(h.transform.as_ref()),
            per_class: h.per_class,
            library_per_class: h.library_per_class,
            test_subset: h.test_subset,
        }),
    };
    if cfg.dataset.is_empty() {
        return Err(CommonError::Spec("trial.data.dataset is missing".into()));
    }
    // The master validated the spec; a worker checks again so a bad trial fails with the key.
    cfg.validate()
        .map_err(|e| CommonError::Spec(format!("trial: {e}")))?;
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
            ..DataConfig::default()
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

    #[test]
    fn domains_and_transforms_round_trip() {
        let cfg = DataConfig {
            dataset: "mnist".into(),
            per_class: 20,
            domains: vec![
                DomainConfig {
                    name: "rot".into(),
                    dataset: None,
                    transform: DomainTransform {
                        rotate: 30.0,
                        invert: true,
                        low_contrast: 0.5,
                        noise: 0.1,
                    },
                    target: false,
                },
                DomainConfig {
                    name: "plain".into(),
                    dataset: Some("fashion-mnist".into()),
                    transform: DomainTransform::default(),
                    target: false,
                },
                DomainConfig {
                    name: "digits".into(),
                    dataset: Some("digits".into()),
                    transform: DomainTransform::default(),
                    target: true,
                },
            ],
            ..DataConfig::default()
        };
        let (back, _) = data_spec_from_proto(&data_spec_to_proto(&cfg, 1)).unwrap();
        assert_eq!(back, cfg);
        let single = DataConfig {
            transform: DomainTransform {
                rotate: -45.0,
                ..DomainTransform::default()
            },
            ..DataConfig::default()
        };
        let (back, _) = data_spec_from_proto(&data_spec_to_proto(&single, 1)).unwrap();
        assert_eq!(back, single);
        let history = DataConfig {
            dataset: "mnist".into(),
            history: Some(HistoryConfig {
                dataset: "fashion-mnist".into(),
                transform: DomainTransform {
                    rotate: 30.0,
                    ..DomainTransform::default()
                },
                per_class: 30,
                library_per_class: 12,
                test_subset: 500,
            }),
            ..DataConfig::default()
        };
        let (back, _) = data_spec_from_proto(&data_spec_to_proto(&history, 1)).unwrap();
        assert_eq!(back, history);
    }

    #[test]
    fn image_folders_round_trip() {
        let folder = DataConfig {
            dataset: "folder".into(),
            folder: Some("/data/pets/train".into()),
            test_folder: Some("/data/pets/test".into()),
            channels: Some(3),
            size: Some(32),
            per_class: 10,
            ..DataConfig::default()
        };
        let wire = data_spec_to_proto(&folder, 5);
        assert_eq!((wire.channels, wire.size), (3, 32));
        let (back, seed) = data_spec_from_proto(&wire).unwrap();
        assert_eq!(back, folder);
        assert_eq!(seed, 5);
        // unset keys travel as empty / 0 and come back unset (the defaults apply)
        let defaults = DataConfig {
            dataset: "folder".into(),
            folder: Some("root".into()),
            ..DataConfig::default()
        };
        let wire = data_spec_to_proto(&defaults, 5);
        assert_eq!(
            (wire.test_folder.as_str(), wire.channels, wire.size),
            ("", 0, 0)
        );
        let (back, _) = data_spec_from_proto(&wire).unwrap();
        assert_eq!(back, defaults);
        assert_eq!((back.folder_channels(), back.folder_size()), (1, 28));
        // a folder as one domain of several
        let domains = DataConfig {
            dataset: "mnist".into(),
            folder: Some("mine".into()),
            domains: vec![
                DomainConfig {
                    name: "mnist".into(),
                    dataset: None,
                    transform: DomainTransform::default(),
                    target: false,
                },
                DomainConfig {
                    name: "mine".into(),
                    dataset: Some("folder".into()),
                    transform: DomainTransform::default(),
                    target: true,
                },
            ],
            ..DataConfig::default()
        };
        let (back, _) = data_spec_from_proto(&data_spec_to_proto(&domains, 1)).unwrap();
        assert_eq!(back, domains);
        // a worker re-validates: a folder spec without its folder is refused by key
        let mut missing = data_spec_to_proto(&defaults, 1);
        missing.folder.clear();
        let err = data_spec_from_proto(&missing).unwrap_err().to_string();
        assert!(err.contains("data.folder"), "{err}");
    }
}
