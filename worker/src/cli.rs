//! Command-line flags shared by the `worker` subcommands (clap derive), and their conversion
//! into the library's types.

use std::path::PathBuf;

use clap::Args;
use tch::Device;

use explore_common::spec::DataConfig;

use crate::data::{DataPlan, DataSource, DatasetCache, SplitConfig, SplitData, FASHION_MNIST_DIR};
use crate::device::parse_device;
use crate::error::WorkerError;

/// Which data to train on and how to split it.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// A TOML file with a `[data]` section as in an experiment spec (any dataset, derived
    /// domains, few-shot, `[data.history]`); replaces the other data and split flags except
    /// --data-dir and --split-seed
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["train_images", "train_labels", "test_images", "test_labels", "train_subset", "test_subset", "validation_fraction"]
    )]
    pub data_config: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub split: SplitArgs,
}

impl DataArgs {
    /// Loads the data the flags name and cuts the split on `device`.
    pub fn load_split(&self, device: Device) -> Result<SplitData, WorkerError> {
        let Some(path) = &self.data_config else {
            let dataset = crate::data::Dataset::load(&self.source()?)?;
            return dataset.split(&self.split_config(), device);
        };
        let cfg = read_data_config(path)?;
        let plan = DataPlan::resolve(&cfg, &self.source.fashion_mnist_dir(), &DatasetCache::new())?;
        plan.split(
            &SplitConfig::from_config(&cfg, self.split.split_seed),
            device,
        )
    }

    /// The loaded data the flags name and the split to cut from it, without cutting it.
    pub fn plan(&self) -> Result<(DataPlan, SplitConfig), WorkerError> {
        let Some(path) = &self.data_config else {
            let dataset = crate::data::Dataset::load(&self.source()?)?;
            return Ok((
                DataPlan::single(std::sync::Arc::new(dataset)),
                self.split_config(),
            ));
        };
        let cfg = read_data_config(path)?;
        let plan = DataPlan::resolve(&cfg, &self.source.fashion_mnist_dir(), &DatasetCache::new())?;
        Ok((plan, SplitConfig::from_config(&cfg, self.split.split_seed)))
    }

    /// The data source the flags name.
    pub fn source(&self) -> Result<DataSource, WorkerError> {
        self.source.source()
    }

    /// The split the flags ask for.
    pub fn split_config(&self) -> SplitConfig {
        self.split.split_config()
    }
}

/// Where the data is: Fashion-MNIST in a directory, or four IDX files.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Directory holding Fashion-MNIST [default: /usr/share/datasets/fashion-mnist]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// IDX file (optionally gzipped) of the training images, instead of --data-dir
    #[arg(long, value_name = "FILE", conflicts_with = "data_dir")]
    pub train_images: Option<PathBuf>,
    /// IDX file of the training labels
    #[arg(long, value_name = "FILE", conflicts_with = "data_dir")]
    pub train_labels: Option<PathBuf>,
    /// IDX file of the test images
    #[arg(long, value_name = "FILE", conflicts_with = "data_dir")]
    pub test_images: Option<PathBuf>,
    /// IDX file of the test labels
    #[arg(long, value_name = "FILE", conflicts_with = "data_dir")]
    pub test_labels: Option<PathBuf>,
}

impl SourceArgs {
    /// The Fashion-MNIST directory: `--data-dir` or the Debian package's location.
    pub fn fashion_mnist_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR))
    }

    /// The data source the flags name; IDX files must be given all four or none.
    pub fn source(&self) -> Result<DataSource, WorkerError> {
        let files = [
            ("--train-images", &self.train_images),
            ("--train-labels", &self.train_labels),
            ("--test-images", &self.test_images),
            ("--test-labels", &self.test_labels),
        ];
        if files.iter().all(|(_, f)| f.is_none()) {
            return Ok(DataSource::FashionMnist {
                dir: self.fashion_mnist_dir(),
            });
        }
        let missing: Vec<&str> = files
            .iter()
            .filter(|(_, f)| f.is_none())
            .map(|(flag, _)| *flag)
            .collect();
        if !missing.is_empty() {
            return Err(WorkerError::Source(format!(
                "idx data needs all four files, missing {}",
                missing.join(", ")
            )));
        }
        let file = |f: &Option<PathBuf>| f.clone().unwrap_or_default();
        Ok(DataSource::Idx {
            train_images: file(&self.train_images),
            train_labels: file(&self.train_labels),
            test_images: file(&self.test_images),
            test_labels: file(&self.test_labels),
        })
    }
}

/// Reads a `[data]` section (or a file of `[data]` keys at the top level) and validates it.
pub fn read_data_config(path: &std::path::Path) -> Result<DataConfig, WorkerError> {
    let bad = |reason: String| WorkerError::Source(format!("{}: {reason}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| WorkerError::io(path, e))?;
    let mut table: toml::Table = text.parse().map_err(|e| bad(format!("not TOML: {e}")))?;
    let data = match table.remove("data") {
        Some(toml::Value::Table(data)) => data,
        Some(_) => return Err(bad("`data` must be a table ([data])".into())),
        None => table,
    };
    let cfg: DataConfig = toml::Value::Table(data)
        .try_into()
        .map_err(|e| bad(format!("not a [data] section: {e}")))?;
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}

/// How to cut the data into training, validation and test splits.
#[derive(Debug, Clone, Args)]
pub struct SplitArgs {
    /// Train on at most N examples of the training file (0 = all)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub train_subset: u32,
    /// Test on the first N examples of the test file (0 = all)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub test_subset: u32,
    /// Fraction of the training examples held out as the validation split (the score)
    #[arg(long, value_name = "F", default_value_t = 0.1)]
    pub validation_fraction: f64,
    /// Seed of the subset / validation split
    #[arg(long, value_name = "SEED", default_value_t = 42)]
    pub split_seed: u64,
}

impl SplitArgs {
    /// The split the flags ask for.
    pub fn split_config(&self) -> SplitConfig {
        SplitConfig {
            train_subset: self.train_subset,
            test_subset: self.test_subset,
            validation_fraction: self.validation_fraction,
            split_seed: self.split_seed,
            per_class: 0,
        }
    }
}

/// Where and with how many threads to compute.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Device: auto, cpu, cuda or cuda:N
    #[arg(long, value_name = "DEVICE", default_value = "auto")]
    pub device: String,
    /// libtorch intra-op threads [default: libtorch's choice]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub threads: Option<i32>,
}

impl RuntimeArgs {
    /// Applies `--threads` (process-wide) and resolves `--device`.
    pub fn apply(&self) -> Result<Device, WorkerError> {
        if let Some(n) = self.threads {
            tch::set_num_threads(n);
        }
        parse_device(&self.device)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        data: DataArgs,
    }

    #[test]
    fn defaults_name_fashion_mnist_and_the_default_split() {
        let cli = Cli::parse_from(["t"]);
        assert_eq!(
            cli.data.source().unwrap(),
            DataSource::fashion_mnist_default()
        );
        assert_eq!(cli.data.split_config(), SplitConfig::default());
    }

    #[test]
    fn idx_files_need_all_four() {
        let cli = Cli::parse_from(["t", "--train-images", "a", "--test-labels", "d"]);
        let err = cli.data.source().unwrap_err().to_string();
        assert!(err.contains("--train-labels, --test-images"), "{err}");
        let cli = Cli::parse_from([
            "t",
            "--train-images",
            "a",
            "--train-labels",
            "b",
            "--test-images",
            "c",
            "--test-labels",
            "d",
            "--train-subset",
            "500",
        ]);
        assert!(matches!(cli.data.source().unwrap(), DataSource::Idx { .. }));
        assert_eq!(cli.data.split_config().train_subset, 500);
        assert!(Cli::try_parse_from(["t", "--data-dir", "x", "--train-images", "a"]).is_err());
    }
}
