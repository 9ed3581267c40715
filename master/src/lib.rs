//! The explore master: keeps the history model pool (every trial with its architecture,
//! hyperparameters, score and weights) in SQLite, proposes simulated-annealing mutations to
//! workers over gRPC, records their results and keeps the best model. It never links libtorch.
//!
//! Layout: [`store`] (database), [`artifacts`] (checkpoint files), [`scheduler`] (all business
//! logic), [`service`] (tonic adapters), [`auth`] (cluster token), [`server`] (start/stop),
//! [`lock`] (one master per data directory),
//! [`cli`] (the `master` command line), [`output`] (what its read commands print).

pub mod artifacts;
pub mod auth;
pub mod chains;
pub mod cli;
pub mod early_stop;
pub mod error;
pub mod export;
pub mod http;
pub mod leader;
pub mod lock;
pub mod metrics;
pub mod output;
pub mod predictor;
pub mod prefill;
pub mod proposals;
pub mod scheduler;
#[cfg(test)]
mod scheduler_tests;
pub mod server;
pub mod service;
pub mod store;
pub mod transfer;

pub use error::MasterError;
pub use server::{start, MasterHandle, ServeConfig};
