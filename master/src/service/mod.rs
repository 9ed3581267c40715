//! Thin tonic adapters over the [`Scheduler`](crate::scheduler::Scheduler).

pub mod admin;
pub mod convert;
pub mod worker;

use std::pin::Pin;

use explore_common::proto::CheckpointChunk;
use futures::Stream;

/// Size of the chunks checkpoints are streamed in.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// A server stream of checkpoint chunks.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<CheckpointChunk, tonic::Status>> + Send>>;

/// Streams a stored checkpoint.
pub async fn stream_checkpoint(
    artifacts: &crate::artifacts::ArtifactStore,
    sha: &str,
) -> Result<ChunkStream, tonic::Status> {
    let bytes = artifacts.read(sha).await?;
    let chunks: Vec<Result<CheckpointChunk, tonic::Status>> = bytes
        .chunks(CHUNK_BYTES)
        .map(|c| Ok(CheckpointChunk { data: c.to_vec() }))
        .collect();
    Ok(Box::pin(futures::stream::iter(chunks)))
}
