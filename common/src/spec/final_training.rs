//! The `[final]` section of a spec: once the search is over, train the best architectures again
//! with a longer schedule.
//!
//! ```toml
//! [final]
//! top_k = 3          # the 3 best distinct architectures by validation score
//! epochs = 20        # each trained for 20 epochs
//! from = "weights"   # starting from its trained weights ("scratch": a fresh initialisation)
//! ```
//!
//! The final phase is part of the budget: `budget.max_trials` and `budget.max_epochs` are the
//! experiment's totals, and the search gets what is left after `top_k` trials and
//! `top_k × epochs` epochs are reserved for the final phase (so a spec must leave the search at
//! least one trial and one epoch). The wall-time budget ends the search only, and the final
//! phase then runs to its end, unless `within_wall_budget = true`: then `budget.max_wall_seconds`
//! bounds the whole experiment, and the search ends early enough for the final phase to fit,
//! as the master estimates it from the search's measured training speed (the search keeps at
//! least half the budget; the final trials then train the epochs that fit the rest).

use serde::{Deserialize, Serialize};

use crate::error::CommonError;

/// Most epochs a final trial may train (the bound of `HyperParams::epochs`).
pub const MAX_FINAL_EPOCHS: u32 = 1000;

/// Where a final trial starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalStart {
    /// From the checkpoint of the trial it retrains (a fresh initialisation when that trial
    /// has none). The default: the search's best models are usually fine-tunes many epochs
    /// deep, whose quality a from-scratch run of `epochs` epochs would have to earn again.
    #[default]
    Weights,
    /// From a fresh initialisation, with a new training seed.
    Scratch,
}

impl FinalStart {
    /// The spec's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinalStart::Weights => "weights",
            FinalStart::Scratch => "scratch",
        }
    }
}

/// `[final]`: the final-training phase (absent: none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalConfig {
    /// How many of the best distinct architectures (by validation score; two trials of one
    /// genome count once) are trained again.
    pub top_k: u32,
    /// Epochs of each final trial.
    pub epochs: u32,
    /// Whether a final trial starts from its parent's weights or from scratch.
    #[serde(default)]
    pub from: FinalStart,
    /// Search on a subset: every search trial trains on the first `search_subset` examples of
    /// the (shuffled) training split, the final trials on all of it (0 or absent: the search
    /// uses all of it too). Validation and test data are the same for both, so the search's
    /// scores and the final ones compare. Cheap search trials let a slow machine explore many
    /// models and spend its long training on the winners.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub search_subset: u32,
    /// Whether `budget.max_wall_seconds` covers the final phase too: the search then ends when
    /// the time left is what the final phase is expected to take (estimated from how fast the
    /// search trained its best models), so the whole experiment fits the wall budget; the
    /// search keeps at least half of it, and the final trials train fewer than `epochs` epochs
    /// when that is all the rest can hold. Off: the wall budget ends the search only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub within_wall_budget: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl FinalConfig {
    /// Epochs the final phase reserves from `budget.max_epochs`: `top_k × epochs`.
    pub fn reserved_epochs(&self) -> u64 {
        u64::from(self.top_k) * u64::from(self.epochs)
    }

    /// Checks the section's values and that the budget leaves the search something; the error
    /// names the key.
    pub fn validate(
        &self,
        max_trials: u32,
        max_epochs: Option<u32>,
        max_wall_seconds: Option<u64>,
    ) -> Result<(), CommonError> {
        let key = |k: &str, reason: String| {
            Err(CommonError::SpecKey {
                key: k.to_string(),
                reason,
            })
        };
        if self.top_k == 0 {
            return key("final.top_k", "must be at least 1".into());
        }
        if self.epochs == 0 || self.epochs > MAX_FINAL_EPOCHS {
            return key(
                "final.epochs",
                format!("must be 1..={MAX_FINAL_EPOCHS}, got {}", self.epochs),
            );
        }
        if self.search_subset != 0 && self.search_subset < 100 {
            return key(
                "final.search_subset",
                format!(
                    "must be 0 (the whole training split) or at least 100, got {}",
                    self.search_subset
                ),
            );
        }
        if self.within_wall_budget && max_wall_seconds.is_none() {
            return key(
                "final.within_wall_budget",
                "needs budget.max_wall_seconds (the time the search and the final phase share)"
                    .into(),
            );
        }
        if self.top_k >= max_trials {
            return key(
                "final.top_k",
                format!(
                    "must be below budget.max_trials ({max_trials}), which counts the final \
                     trials too, got {}",
                    self.top_k
                ),
            );
        }
        if let Some(max) = max_epochs {
            if self.reserved_epochs() >= u64::from(max) {
                return key(
                    "final.epochs",
                    format!(
                        "top_k × epochs = {} must be below budget.max_epochs ({max}), which \
                         counts the final epochs too",
                        self.reserved_epochs()
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::ExperimentSpec;

    fn parse(extra: &str) -> Result<ExperimentSpec, String> {
        ExperimentSpec::from_toml(&format!(
            "name = \"t\"\n[budget]\nmax_trials = 10\nmax_epochs = 100\n{extra}"
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn final_is_off_by_default_and_reads_back() {
        assert_eq!(parse("").unwrap().final_training, None);
        let spec = parse("[final]\ntop_k = 2\nepochs = 20\n").unwrap();
        let f = spec.final_training.clone().unwrap();
        assert_eq!((f.top_k, f.epochs, f.from.as_str()), (2, 20, "weights"));
        assert_eq!(f.reserved_epochs(), 40);
        let text = spec.to_toml().unwrap();
        assert!(text.contains("[final]"), "{text}");
        assert_eq!(ExperimentSpec::from_toml(&text).unwrap(), spec);
        let scratch = parse("[final]\ntop_k = 1\nepochs = 5\nfrom = \"scratch\"\n").unwrap();
        assert_eq!(scratch.final_training.unwrap().from.as_str(), "scratch");
        assert_eq!(
            f.search_subset, 0,
            "the search uses the whole split by default"
        );
        assert!(!text.contains("search_subset"), "{text}");
        let subset = parse("[final]\ntop_k = 1\nepochs = 5\nsearch_subset = 9000\n").unwrap();
        assert_eq!(subset.final_training.as_ref().unwrap().search_subset, 9000);
        let text = subset.to_toml().unwrap();
        assert_eq!(ExperimentSpec::from_toml(&text).unwrap(), subset);
        assert!(
            !f.within_wall_budget,
            "the wall budget is the search's by default"
        );
        assert!(!text.contains("within_wall_budget"), "{text}");
        let within = ExperimentSpec::from_toml(
            "name = \"t\"\n[budget]\nmax_trials = 10\nmax_wall_seconds = 600\n\
             [final]\ntop_k = 1\nepochs = 5\nwithin_wall_budget = true\n",
        )
        .unwrap();
        assert!(within.final_training.as_ref().unwrap().within_wall_budget);
        let text = within.to_toml().unwrap();
        assert_eq!(ExperimentSpec::from_toml(&text).unwrap(), within);
    }

    #[test]
    fn bad_final_values_name_their_key() {
        for (extra, key) in [
            ("[final]\ntop_k = 0\nepochs = 5\n", "final.top_k"),
            ("[final]\ntop_k = 10\nepochs = 5\n", "final.top_k"),
            ("[final]\ntop_k = 2\nepochs = 0\n", "final.epochs"),
            ("[final]\ntop_k = 2\nepochs = 1001\n", "final.epochs"),
            ("[final]\ntop_k = 2\nepochs = 50\n", "final.epochs"),
            (
                "[final]\ntop_k = 2\nepochs = 5\nsearch_subset = 99\n",
                "final.search_subset",
            ),
            (
                "[final]\ntop_k = 2\nepochs = 5\nfrom = \"x\"\n",
                "expected `weights` or `scratch`",
            ),
            (
                "[final]\ntop_k = 2\nepochs = 5\nk = 1\n",
                "unknown field `k`",
            ),
            (
                "[final]\ntop_k = 2\nepochs = 5\nwithin_wall_budget = true\n",
                "final.within_wall_budget",
            ),
        ] {
            let err = parse(extra).unwrap_err();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }
}
