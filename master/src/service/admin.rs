//! `explore.v1.AdminService` over the scheduler.

use std::sync::Arc;

use explore_common::proto;
use explore_common::proto::admin_service_server::AdminService;
use explore_common::spec::ExperimentSpec;
use explore_common::ExperimentId;
use tonic::{Request, Response, Status};

use super::convert::{experiment_summary, parse_id, trial_record};
use super::ChunkStream;
use crate::error::MasterError;
use crate::scheduler::Scheduler;

/// Largest spec text accepted.
const MAX_SPEC_BYTES: usize = 1 << 20;

/// The admin service.
pub struct AdminApi {
    scheduler: Arc<Scheduler>,
}

impl AdminApi {
    /// A service over `scheduler`.
    pub fn new(scheduler: Arc<Scheduler>) -> Self {
        AdminApi { scheduler }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn submit_experiment(
        &self,
        request: Request<proto::SubmitExperimentRequest>,
    ) -> Result<Response<proto::SubmitExperimentResponse>, Status> {
        let text = request.into_inner().spec_toml;
        if text.len() > MAX_SPEC_BYTES {
            return Err(MasterError::TooLarge(format!(
                "spec is larger than {MAX_SPEC_BYTES} bytes"
            ))
            .into());
        }
        let spec = ExperimentSpec::from_toml(&text).map_err(MasterError::from)?;
        let id = self.scheduler.submit(spec).await?;
        Ok(Response::new(proto::SubmitExperimentResponse {
            experiment_id: id.to_string(),
        }))
    }

    async fn list_experiments(
        &self,
        _request: Request<proto::ListExperimentsRequest>,
    ) -> Result<Response<proto::ListExperimentsResponse>, Status> {
        let views = self.scheduler.experiment_views().await?;
        Ok(Response::new(proto::ListExperimentsResponse {
            experiments: views.iter().map(experiment_summary).collect(),
        }))
    }

    async fn get_experiment(
        &self,
        request: Request<proto::GetExperimentRequest>,
    ) -> Result<Response<proto::ExperimentSummary>, Status> {
        let id: ExperimentId = parse_id("experiment_id", &request.into_inner().experiment_id)?;
        let view = self.scheduler.experiment_view(id.as_str()).await?;
        Ok(Response::new(experiment_summary(&view)))
    }

    async fn list_trials(
        &self,
        request: Request<proto::ListTrialsRequest>,
    ) -> Result<Response<proto::ListTrialsResponse>, Status> {
        let id: ExperimentId = parse_id("experiment_id", &request.into_inner().experiment_id)?;
        let spec = self.scheduler.spec_of(id.as_str()).await?;
        let trials = self.scheduler.trials(id.as_str()).await?;
        let epoch_metrics = self.scheduler.last_epoch_metrics(id.as_str()).await?;
        Ok(Response::new(proto::ListTrialsResponse {
            trials: trials
                .iter()
                .map(|t| trial_record(t, &spec, epoch_metrics.get(&t.id)))
                .collect(),
        }))
    }

    async fn get_best_model(
        &self,
        request: Request<proto::GetBestModelRequest>,
    ) -> Result<Response<proto::TrialRecord>, Status> {
        let id: ExperimentId = parse_id("experiment_id", &request.into_inner().experiment_id)?;
        let view = self.scheduler.experiment_view(id.as_str()).await?;
        let best = view.best.ok_or_else(|| {
            MasterError::NotFound(format!("experiment {id} has no completed trial yet"))
        })?;
        let epoch_metrics = self.scheduler.last_epoch_metrics(id.as_str()).await?;
        Ok(Response::new(trial_record(
            &best,
            &view.spec,
            epoch_metrics.get(&best.id),
        )))
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
}
