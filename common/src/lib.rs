//! Shared core of explore: the wire contract (generated from `proto/`), id newtypes, the genome
//! (architecture) with shape/params/FLOPs inference, hyperparameters, the experiment spec, the
//! mutation operators and simulated annealing. No server code and no libtorch live here, so the
//! master, the worker and the tests can all use it.

pub mod annealing;
pub mod client;
pub mod convert;
pub mod error;
pub mod failover;
pub mod genome;
pub mod hparams;
pub mod ids;
pub mod logging;
pub mod mutation;
pub mod presets;
pub mod proto;
pub mod spec;

pub use error::{CommonError, GenomeError};
pub use genome::{Activation, Block, Genome, InputShape, PoolKind, Shape};
pub use hparams::{HyperParams, Optimizer, Schedule};
pub use ids::{ExperimentId, TrialId, WorkerId};
