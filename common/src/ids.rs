//! Identifier newtypes, so an experiment id can never be passed where a trial id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::CommonError;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                let raw = uuid::Uuid::new_v4().simple().to_string();
                Self(format!("{}{}", $prefix, &raw[..16]))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = CommonError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let rest = s.strip_prefix($prefix).ok_or_else(|| CommonError::InvalidId {
                    kind: stringify!($name),
                    value: s.to_string(),
                })?;
                if rest.is_empty()
                    || rest.len() > 64
                    || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(CommonError::InvalidId {
                        kind: stringify!($name),
                        value: s.to_string(),
                    });
                }
                Ok(Self(s.to_string()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = CommonError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                value.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id_type!(
    /// Identifies an experiment (one search with one spec and one budget).
    ExperimentId,
    "exp-"
);
id_type!(
    /// Identifies a trial: one architecture + hyperparameter set to train and score.
    TrialId,
    "trial-"
);
id_type!(
    /// Identifies a registered worker process.
    WorkerId,
    "worker-"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip_through_text() {
        let id = TrialId::generate();
        let parsed: TrialId = id.to_string().parse().unwrap();
        assert_eq!(id, parsed);
    }

    #[test]
    fn foreign_prefix_is_refused() {
        let err = "exp-abc".parse::<TrialId>().unwrap_err();
        assert!(err.to_string().contains("TrialId"), "{err}");
        assert!("trial-".parse::<TrialId>().is_err());
        assert!("trial-a b".parse::<TrialId>().is_err());
    }
}
