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
//!
//! With `probe = true` (the default) the master first queues one **probe** per source model: a
//! worker runs the model's features over the new task's training examples and reports LogME,
//! LEEP, NCE and its latency per image (S2). The fine-tunes are then queued best-predicted
//! first: by the learned predictor once the pool holds enough fine-tunes of earlier transfers,
//! by LogME until then. `max_latency_ms` drops the models whose measured latency exceeds it.

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
    /// Probe the models on the new task and queue the fine-tunes best-predicted first (S2);
    /// `false` queues them by source validation score, without probes.
    #[serde(default = "default_probe")]
    pub probe: bool,
    /// The most milliseconds per image (batch of one, measured by the probing worker on its
    /// own device) a chosen model may take; needs `probe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<f64>,
}

fn default_probe() -> bool {
    true
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
        head_only: false,
        augment: Default::default(),
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
        if let Some(ms) = self.max_latency_ms {
            if !(ms.is_finite() && ms > 0.0) {
                return key(
                    "max_latency_ms",
                    format!("must be a positive number, got {ms}"),
                );
            }
            if !self.probe {
                return key(
                    "max_latency_ms",
                    "needs probe = true: latency is measured by the probes".into(),
                );
            }
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
    /// The source model's validation score on its own task (a feature of the predictor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_score: Option<f64>,
}
