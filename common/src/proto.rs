//! Generated code for the `explore.v1` wire contract.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("explore.v1");

/// Version of the worker protocol; a worker with another version is refused at registration.
pub const PROTOCOL_VERSION: u32 = 1;
