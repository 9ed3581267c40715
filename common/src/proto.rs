//! Generated code for the `explore.v1` wire contract.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("explore.v1");

/// Version of the worker protocol; a worker with another version is refused at registration.
/// 2: a trial's hyperparameters may carry data augmentation and a trial may train on part of
/// the training split (`Trial.train_examples`); a version-1 worker would silently ignore both.
pub const PROTOCOL_VERSION: u32 = 2;
