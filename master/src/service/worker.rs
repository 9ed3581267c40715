//! `explore.v1.WorkerService` over the scheduler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use explore_common::proto::worker_service_server::WorkerService;
use explore_common::proto::{self, PROTOCOL_VERSION};
use explore_common::{TrialId, WorkerId};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{parse_id, trial_assignment};
use super::ChunkStream;
use crate::metrics::Rpc;
use crate::scheduler::{HeartbeatAnswer, Progress, Scheduler};
use crate::store::TrialResult;

/// Longest long-poll a worker may ask for.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The worker-facing service.
pub struct WorkerApi {
    scheduler: Arc<Scheduler>,
}

impl WorkerApi {
    /// A service over `scheduler`.
    pub fn new(scheduler: Arc<Scheduler>) -> Self {
        WorkerApi { scheduler }
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let r = request.into_inner();
        if r.protocol_version != PROTOCOL_VERSION {
            tracing::warn!(worker = %r.name, version = r.protocol_version, "refused worker with another protocol version");
            return Err(Status::failed_precondition(format!(
                "protocol version mismatch: master speaks {PROTOCOL_VERSION}, worker sent {}; upgrade the older side",
                r.protocol_version
            )));
        }
        let id = self
            .scheduler
            .register(&r.name, &r.device, r.slots.max(1))
            .await?;
        let cfg = self.scheduler.config();
        Ok(Response::new(proto::RegisterResponse {
            worker_id: id.to_string(),
            heartbeat_interval_ms: cfg.heartbeat_interval.as_millis() as u32,
            lease_ms: cfg.lease.as_millis() as u32,
        }))
    }

    async fn acquire(
        &self,
        request: Request<proto::AcquireRequest>,
    ) -> Result<Response<proto::AcquireResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let worker: WorkerId = parse_id("worker_id", &r.worker_id)?;
        let wait = Duration::from_millis(r.wait_ms as u64).min(MAX_WAIT);
        let trial = self.scheduler.acquire(worker.as_str(), wait).await?;
        let trial = match trial {
            Some(t) => {
                let spec = self.scheduler.spec_of(t.experiment_id.as_str()).await?;
                Some(trial_assignment(&t, &spec))
            }
            None => None,
        };
        self.scheduler
            .metrics()
            .rpc_answered(Rpc::Acquire, started.elapsed().as_secs_f64());
        Ok(Response::new(proto::AcquireResponse { trial }))
    }

    async fn heartbeat(
        &self,
        request: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let worker: WorkerId = parse_id("worker_id", &r.worker_id)?;
        let trial: TrialId = parse_id("trial_id", &r.trial_id)?;
        let progress = Progress {
            started: r.started,
            epoch: r.epoch,
            total_epochs: r.total_epochs,
            train_loss: r.train_loss,
            val_accuracy: r.val_accuracy,
            metrics: r.metrics.into_iter().collect(),
        };
        let answer = self
            .scheduler
            .heartbeat(worker.as_str(), trial.as_str(), r.attempt, progress)
            .await?;
        let (command, reason) = match answer {
            HeartbeatAnswer::Continue => (proto::TrialCommand::Continue, String::new()),
            HeartbeatAnswer::Stop(reason) => (proto::TrialCommand::Stop, reason),
            HeartbeatAnswer::LeaseLost(reason) => (proto::TrialCommand::LeaseLost, reason),
        };
        self.scheduler
            .metrics()
            .rpc_answered(Rpc::Heartbeat, started.elapsed().as_secs_f64());
        Ok(Response::new(proto::HeartbeatResponse {
            command: command as i32,
            reason,
        }))
    }

    async fn upload_checkpoint(
        &self,
        request: Request<Streaming<proto::CheckpointChunk>>,
    ) -> Result<Response<proto::UploadCheckpointResponse>, Status> {
        let mut stream = request.into_inner();
        let mut upload = self.scheduler.artifacts().begin_upload().await?;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(status) => {
                    upload.abort().await;
                    return Err(status);
                }
            };
            if let Err(e) = upload.write(&chunk.data).await {
                upload.abort().await;
                return Err(e.into());
            }
        }
        let (sha256, size_bytes) = upload.finish().await?;
        tracing::debug!(sha256 = %sha256, size_bytes, "checkpoint stored");
        Ok(Response::new(proto::UploadCheckpointResponse {
            sha256,
            size_bytes,
        }))
    }

    async fn complete(
        &self,
        request: Request<proto::CompleteRequest>,
    ) -> Result<Response<proto::CompleteResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let worker: WorkerId = parse_id("worker_id", &r.worker_id)?;
        let trial: TrialId = parse_id("trial_id", &r.trial_id)?;
        let result = TrialResult {
            score: r.score,
            metrics: r.metrics.into_iter().collect(),
            checkpoint_sha256: (!r.checkpoint_sha256.is_empty()).then_some(r.checkpoint_sha256),
            epochs_run: r.epochs_run,
        };
        let answer = self
            .scheduler
            .complete(worker.as_str(), trial.as_str(), r.attempt, result)
            .await?;
        self.scheduler
            .metrics()
            .rpc_answered(Rpc::Complete, started.elapsed().as_secs_f64());
        Ok(Response::new(proto::CompleteResponse {
            accepted: answer.accepted,
            reason: answer.reason,
        }))
    }

    async fn fail(
        &self,
        request: Request<proto::FailRequest>,
    ) -> Result<Response<proto::FailResponse>, Status> {
        let r = request.into_inner();
        let worker: WorkerId = parse_id("worker_id", &r.worker_id)?;
        let trial: TrialId = parse_id("trial_id", &r.trial_id)?;
        self.scheduler
            .fail(worker.as_str(), trial.as_str(), r.attempt, &r.reason)
            .await?;
        Ok(Response::new(proto::FailResponse {}))
    }

    type DownloadCheckpointStream = ChunkStream;

    async fn download_checkpoint(
        &self,
        request: Request<proto::DownloadCheckpointRequest>,
    ) -> Result<Response<Self::DownloadCheckpointStream>, Status> {
        let sha = request.into_inner().sha256;
        Ok(Response::new(
            super::stream_checkpoint(self.scheduler.artifacts(), &sha).await?,
        ))
    }

    async fn deregister(
        &self,
        request: Request<proto::DeregisterRequest>,
    ) -> Result<Response<proto::DeregisterResponse>, Status> {
        let worker: WorkerId = parse_id("worker_id", &request.into_inner().worker_id)?;
        self.scheduler.deregister(worker.as_str()).await?;
        Ok(Response::new(proto::DeregisterResponse {}))
    }
}
