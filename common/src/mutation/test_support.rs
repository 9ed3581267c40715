//! Helpers shared by the mutation unit tests.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::CommonError;
use crate::genome::Genome;
use crate::presets;

pub(super) fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub(super) fn preset(name: &str) -> Genome {
    presets::preset(name).expect("preset exists")
}

/// Checks the contract of one architecture mutation result.
pub(super) fn check(parent: &Genome, result: &Result<(Genome, String), CommonError>) {
    match result {
        Ok((child, description)) => {
            child
                .validate()
                .unwrap_or_else(|e| panic!("{description}: {e}"));
            assert_ne!(
                child.canonical_hash(),
                parent.canonical_hash(),
                "{description}"
            );
            assert!(!description.is_empty());
        }
        Err(CommonError::Mutation(reason)) => assert!(!reason.is_empty()),
        Err(other) => panic!("not a mutation rejection: {other}"),
    }
}
