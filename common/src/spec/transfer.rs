//! The `[transfer]` section of a spec: start from the trained models of an earlier experiment
//! instead of from seeds.
//!
//! ```toml
//! [transfer]
//! from = "fashion-source"           # an experiment id, or the name of the newest one
//! models = 3                        # the source's best models that meet [search]'s constraints
//!
//! [[transfer.settings]]             # fine-tune settings; each model is tried with each
//! optimizer = "adamw"
//! learning_rate = 0.001
//! schedule = "constant"
//! batch_size = 32
//! weight_decay = 0.0
//! epochs = 2
//! ```
//!
//! On submission the master replaces the seeds with one seed per (model, settings) pair, each
//! inheriting its model's weights (by name and shape, so a head of another class count is
//! trained afresh); `[training].objective` applies to every fine-tune, and a gradient-mixing
//! fine-tune without `[data.history]` replays the source experiment's data.

use serde::{Deserialize, Serialize};

use crate::error::CommonError;
use crate::hparams::{HyperParams, Optimizer, Schedule};

/// Where a transfer experiment starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferConfig {
    /// The source experiment: its id, or the name of the newest experiment with that name.
    pub from: String,
    /// How many of the source's completed models (best validation score first) to fine-tune.
    #[serde(default = "default_models")]
    pub models: u32,
    /// Fine-tune settings; every chosen model is fine-tuned with each.
    #[serde(default = "default_settings")]
    pub settings: Vec<HyperParams>,
}

fn default_models() -> u32 {
    3
}

/// The default fine-tune: AdamW at a small constant learning rate for two epochs.
pub fn default_settings() -> Vec<HyperParams> {
    vec![HyperParams {
        optimizer: Optimizer::AdamW,
        learning_rate: 1e-3,
        schedule: Schedule::Constant,
        batch_size: 32,
        weight_decay: 0.0,
        epochs: 2,
        objective: Default::default(),
    }]
}

impl TransferConfig {
    /// Checks the section; errors name `transfer.<field>`.
    pub fn validate(&self) -> Result<(), CommonError> {
        let key = |field: &str, reason: String| {
            Err(CommonError::SpecKey {
                key: format!("transfer.{field}"),
                reason,
            })
        };
        if self.from.trim().is_empty() {
            return key("from", "must name an experiment (its id or name)".into());
        }
        if !(1..=64).contains(&self.models) {
            return key("models", format!("must be 1..=64, got {}", self.models));
        }
        if self.settings.is_empty() || self.settings.len() > 16 {
            return key(
                "settings",
                format!("needs 1 to 16 settings, got {}", self.settings.len()),
            );
        }
        for (i, s) in self.settings.iter().enumerate() {
            if let Err(e) = s.validate() {
                return key(&format!("settings[{i}]"), e.to_string());
            }
        }
        Ok(())
    }
}

/// A seed the master derived from a source model of `[transfer]`: which trial it comes from and
/// the checkpoint it inherits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferSeed {
    /// The source trial.
    pub trial_id: String,
    /// Its checkpoint (sha256), the weights the seed trial starts from.
    pub checkpoint_sha256: String,
    /// What `master trials` shows as the seed's origin.
    pub label: String,
}
