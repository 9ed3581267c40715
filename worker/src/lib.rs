//! The explore training worker as a library: it owns everything between a trial (a genome plus
//! hyperparameters) and its score. It reads IDX datasets once per process and cuts them into
//! seeded training / validation / test splits ([`data`]), picks the libtorch device
//! ([`device`]), builds a network from a genome with stable variable names ([`model`]), trains
//! and scores it and serialises its weights as safetensors ([`train`]). The `worker` binary is a
//! thin command line over it ([`cli`] holds its reusable flags); [`join`] is the cluster loop
//! that pulls trials from the master; [`progress`] shows how far its trials are.

pub mod augment;
pub mod cli;
pub mod data;
pub mod device;
pub mod error;
pub mod export;
pub mod inherit;
pub mod join;
pub mod model;
pub mod objective;
pub mod probing;
pub mod progress;
pub mod simulate;
pub mod train;
pub mod transferability;

#[cfg(test)]
mod testing;

pub use error::WorkerError;
