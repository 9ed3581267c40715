//! Thin tonic adapters over the [`Scheduler`](crate::scheduler::Scheduler).

pub mod admin;
pub mod convert;
pub mod worker;

use std::pin::Pin;

use explore_common::proto::CheckpointChunk;
use futures::{Stream, StreamExt};

/// Size of the chunks checkpoints are streamed in.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// A server stream of checkpoint chunks.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<CheckpointChunk, tonic::Status>> + Send>>;

/// Streams a stored checkpoint from the artifact store, a chunk at a time.
pub async fn stream_checkpoint(
    artifacts: &crate::artifacts::ArtifactStore,
    sha: &str,
) -> Result<ChunkStream, tonic::Status> {
    let chunks = artifacts.read_chunks(sha, CHUNK_BYTES).await?;
    Ok(Box::pin(chunks.map(|chunk| match chunk {
        Ok(data) => Ok(CheckpointChunk {
            data: data.to_vec(),
        }),
        Err(e) => Err(e.into()),
    })))
}
