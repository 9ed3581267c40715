//! `explore.v1.AdminService` over the scheduler.

use std::sync::Arc;

use explore_common::proto;
use explore_common::proto::admin_service_server::AdminService;
use explore_common::spec::ExperimentSpec;
use explore_common::{ExperimentId, TrialId};
use tonic::{Request, Response, Status};

use super::convert::{experiment_summary, ids_text, parse_id, trial_record};
use super::ChunkStream;
use crate::error::MasterError;
use crate::scheduler::Scheduler;
use crate::store::TrialStatus;

/// Trials per `ListTrialsPage` answer when the request names no page size.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// Most trials per `ListTrialsPage` answer.
pub const MAX_PAGE_SIZE: u32 = 5000;

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

    async fn list_trials_page(
        &self,
        request: Request<proto::ListTrialsPageRequest>,
    ) -> Result<Response<proto::ListTrialsPageResponse>, Status> {
        let request = request.into_inner();
        let id: ExperimentId = parse_id("experiment_id", &request.experiment_id)?;
        let after_seq = match request.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<i64>().map_err(|_| {
                MasterError::InvalidArgument(format!(
                    "page_token {token:?} is not a token of an earlier page"
                ))
            })?),
        };
        let status = match request.status.as_str() {
            "" => None,
            s => Some(
                s.parse::<TrialStatus>()
                    .map_err(|_| MasterError::InvalidArgument(format!("no trial status {s:?}")))?,
            ),
        };
        let limit = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let spec = self.scheduler.spec_of(id.as_str()).await?;
        // One more than asked tells whether a next page exists.
        let mut page = self
            .scheduler
            .trials_page(id.as_str(), after_seq, status, limit + 1)
            .await?;
        let more = page.len() > limit as usize;
        page.truncate(limit as usize);
        let next_page_token = match page.last() {
            Some((last, _)) if more => last.seq.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListTrialsPageResponse {
            trials: page
                .iter()
                .map(|(t, metrics)| trial_record(t, &spec, Some(metrics)))
                .collect(),
            next_page_token,
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
        let epoch_metrics = self.scheduler.trial_epoch_metrics(&best).await?;
        Ok(Response::new(trial_record(
            &best,
            &view.spec,
            Some(&epoch_metrics),
        )))
    }

    async fn get_trial(
        &self,
        request: Request<proto::GetTrialRequest>,
    ) -> Result<Response<proto::TrialRecord>, Status> {
        let id: TrialId = parse_id("trial_id", &request.into_inner().trial_id)?;
        let trial = self.scheduler.trial(id.as_str()).await?;
        let spec = self.scheduler.spec_of(trial.experiment_id.as_str()).await?;
        let epoch_metrics = self.scheduler.trial_epoch_metrics(&trial).await?;
        Ok(Response::new(trial_record(
            &trial,
            &spec,
            Some(&epoch_metrics),
        )))
    }

    async fn stop_experiment(
        &self,
        request: Request<proto::StopExperimentRequest>,
    ) -> Result<Response<proto::StopExperimentResponse>, Status> {
        let request = request.into_inner();
        let id: ExperimentId = parse_id("experiment_id", &request.experiment_id)?;
        let outcome = self
            .scheduler
            .stop_experiment(id.as_str(), request.now)
            .await?;
        let view = self.scheduler.experiment_view(id.as_str()).await?;
        Ok(Response::new(proto::StopExperimentResponse {
            experiment: Some(experiment_summary(&view)),
            cancelled_queued: outcome.cancelled_queued,
            cancelled_held: outcome.cancelled_held,
            finishing: outcome.finishing,
            cancelled_queued_ids: ids_text(outcome.cancelled_queued_ids),
            cancelled_held_ids: ids_text(outcome.cancelled_held_ids),
            finishing_ids: ids_text(outcome.finishing_ids),
        }))
    }

    async fn resume_experiment(
        &self,
        request: Request<proto::ResumeExperimentRequest>,
    ) -> Result<Response<proto::ExperimentSummary>, Status> {
        let id: ExperimentId = parse_id("experiment_id", &request.into_inner().experiment_id)?;
        self.scheduler.resume_experiment(id.as_str()).await?;
        let view = self.scheduler.experiment_view(id.as_str()).await?;
        Ok(Response::new(experiment_summary(&view)))
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
