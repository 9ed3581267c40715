//! Weight inheritance: a child trial starts from its parent's trained weights.
//!
//! Variable names are stable and derived from block positions ([`crate::model`]), so after a
//! mutation most of the parent's tensors still fit the child: every child variable whose name
//! exists in the parent's checkpoint with the same shape and element type is copied; the rest
//! keep their fresh initialisation. A mutation then costs a short fine-tune instead of training
//! from scratch.

use std::collections::HashMap;
use std::path::Path;

use tch::{nn, Tensor};

use crate::error::WorkerError;

/// What inheritance copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inherited {
    /// Names of the child's variables that now hold the parent's values, sorted.
    pub copied: Vec<String>,
    /// Number of variables of the child.
    pub total: usize,
}

/// Copies into `vs` every tensor of `parent` whose name, shape and element type match one of
/// its variables; the others are left as they are.
pub fn copy_matching(
    vs: &nn::VarStore,
    parent: &HashMap<String, Tensor>,
) -> Result<Inherited, WorkerError> {
    let variables = vs.variables();
    let mut copied = Vec::new();
    tch::no_grad(|| -> Result<(), WorkerError> {
        for (name, mut var) in variables
            .iter()
            .map(|(n, v)| (n.clone(), v.shallow_clone()))
        {
            let Some(source) = parent.get(&name) else {
                continue;
            };
            if source.size() != var.size() || source.kind() != var.kind() {
                continue;
            }
            var.f_copy_(&source.f_to_device(var.device())?)?;
            copied.push(name);
        }
        Ok(())
    })?;
    copied.sort();
    Ok(Inherited {
        copied,
        total: variables.len(),
    })
}

/// Reads a parent's safetensors checkpoint and copies the matching tensors into `vs`.
pub fn inherit_from_file(vs: &nn::VarStore, path: &Path) -> Result<Inherited, WorkerError> {
    let parent: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .map_err(|e| WorkerError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("parent checkpoint is not a readable safetensors file: {e}"),
        })?
        .into_iter()
        .collect();
    copy_matching(vs, &parent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model;
    use explore_common::genome::Genome;
    use explore_common::mutation;
    use explore_common::presets;
    use explore_common::spec::SearchSpace;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use tch::Device;

    /// Builds `genome` with weights initialised from `seed`.
    fn built(genome: &Genome, seed: i64) -> nn::VarStore {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        model::build(&vs.root(), genome).expect("valid genome");
        vs
    }

    fn snapshot(vs: &nn::VarStore) -> HashMap<String, Tensor> {
        vs.variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect()
    }

    fn equal(a: &Tensor, b: &Tensor) -> bool {
        a.size() == b.size() && a.equal(b)
    }

    #[test]
    fn identical_architecture_inherits_every_tensor() {
        let g = presets::preset("cnn2").unwrap();
        let parent = built(&g, 1);
        let child = built(&g, 2);
        let inherited = copy_matching(&child, &snapshot(&parent)).unwrap();
        assert_eq!(inherited.copied.len(), inherited.total);
        for (name, t) in child.variables() {
            assert!(equal(&t, &parent.variables()[&name]), "{name}");
        }
    }

    #[test]
    fn an_unreadable_parent_checkpoint_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parent.safetensors");
        std::fs::write(&path, b"not a checkpoint").unwrap();
        let child = built(&presets::preset("cnn2").unwrap(), 2);
        let err = inherit_from_file(&child, &path).unwrap_err().to_string();
        assert!(err.contains("parent checkpoint"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// After inheritance every child tensor whose name and shape exist in the parent holds
        /// exactly the parent's values, and every other tensor its own fresh initialisation.
        #[test]
        fn inheritance_copies_exactly_the_matching_tensors(
            seed in any::<u64>(),
            steps in 1usize..4,
            preset in prop::sample::select(vec!["cnn2", "cnn3", "resnet_small", "mlp"]),
        ) {
            let space = SearchSpace::default();
            let parent_genome = presets::preset(preset).unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut child_genome = parent_genome.clone();
            for _ in 0..steps {
                let hp = explore_common::HyperParams::default();
                child_genome = mutation::propose(&child_genome, &hp, &space, &mut rng)
                    .expect("a proposal")
                    .genome;
            }
            let parent = built(&parent_genome, 1);
            let child = built(&child_genome, 2);
            let fresh = snapshot(&child);
            let parent_tensors = snapshot(&parent);
            let inherited = copy_matching(&child, &parent_tensors).unwrap();
            let mut expected = Vec::new();
            for (name, t) in child.variables() {
                match parent_tensors.get(&name) {
                    Some(p) if p.size() == t.size() => {
                        expected.push(name.clone());
                        prop_assert!(equal(&t, p), "{} should hold the parent's values", name);
                    }
                    _ => prop_assert!(equal(&t, &fresh[&name]), "{} should be untouched", name),
                }
            }
            expected.sort();
            prop_assert_eq!(inherited.copied, expected);
            prop_assert_eq!(inherited.total, child.variables().len());
        }
    }
}
