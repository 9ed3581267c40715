//! The JSON API's handlers (`docs/http-api.md`): parse and check the request, call the
//! scheduler, shape the answer.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use explore_common::{ExperimentId, TrialId};
use serde_json::Value;

use super::{json, ApiError, HttpState};
use crate::error::MasterError;
use crate::scheduler::now_ms;
use crate::store::reads::{TrialFilter, TrialSort};
use crate::store::TrialStatus;

/// Trials per page when the request names no limit.
pub const DEFAULT_TRIALS_LIMIT: u32 = 50;
/// Most trials per page.
pub const MAX_TRIALS_LIMIT: u32 = 500;
/// Best trials a genealogy starts from, by default and at most.
pub const DEFAULT_GENEALOGY: u32 = 60;
pub const MAX_GENEALOGY: u32 = 500;

type Answer = Result<Json<Value>, ApiError>;
type Params = Query<HashMap<String, String>>;

fn invalid(message: String) -> ApiError {
    MasterError::InvalidArgument(message).into()
}

fn experiment_id(raw: &str) -> Result<ExperimentId, ApiError> {
    raw.parse()
        .map_err(|e| invalid(format!("experiment id {raw:?}: {e}")))
}

/// A query parameter parsed as `T`, or a 400 naming it.
fn param<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match params.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| invalid(format!("query parameter {name}={text:?} is not valid"))),
    }
}

/// A score filter: a finite number in [0, 1] (scores are accuracies), or a 400 naming it.
fn score_bound(params: &HashMap<String, String>, name: &str) -> Result<Option<f64>, ApiError> {
    match param::<f64>(params, name)? {
        Some(v) if !(v.is_finite() && (0.0..=1.0).contains(&v)) => Err(invalid(format!(
            "{name}={v} is out of range: scores are between 0 and 1"
        ))),
        bound => Ok(bound),
    }
}

/// Refuses unknown query parameters, so a typo is a 400 instead of a silently ignored filter.
fn only(params: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!(
            "unknown query parameter {k:?} (allowed: {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Answers 404 for paths the API does not have.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    MasterError::NotFound(format!("no such path {}", uri.path())).into()
}

/// `GET /api/v1/experiments`.
pub async fn experiments(State(s): State<HttpState>) -> Answer {
    let views = s.scheduler.experiment_views().await?;
    let list: Vec<Value> = views.iter().map(json::experiment).collect();
    Ok(Json(serde_json::json!({ "experiments": list })))
}

/// `GET /api/v1/experiments/{id}`.
pub async fn experiment(State(s): State<HttpState>, Path(id): Path<String>) -> Answer {
    let id = experiment_id(&id)?;
    let view = s.scheduler.experiment_view(id.as_str()).await?;
    Ok(Json(json::experiment(&view)))
}

/// `GET /api/v1/experiments/{id}/trials`.
pub async fn trials(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Answer {
    let id = experiment_id(&id)?;
    only(
        &params,
        &[
            "offset",
            "limit",
            "sort",
            "order",
            "status",
            "chain",
            "objective",
            "min_score",
            "max_score",
        ],
    )?;
    let offset: u64 = param(&params, "offset")?.unwrap_or(0);
    let limit: u32 = param(&params, "limit")?.unwrap_or(DEFAULT_TRIALS_LIMIT);
    if limit == 0 || limit > MAX_TRIALS_LIMIT {
        return Err(invalid(format!(
            "limit must be between 1 and {MAX_TRIALS_LIMIT}, not {limit}"
        )));
    }
    let sort = match params.get("sort").map(String::as_str) {
        None | Some("") => TrialSort::Seq,
        Some(name) => TrialSort::parse(name).ok_or_else(|| {
            invalid(format!(
                "sort={name:?} is not one of {}",
                TrialSort::NAMES.join(", ")
            ))
        })?,
    };
    let descending = match params.get("order").map(String::as_str) {
        None | Some("") | Some("desc") => true,
        Some("asc") => false,
        Some(other) => return Err(invalid(format!("order={other:?} is not asc or desc"))),
    };
    let status = match params.get("status").map(String::as_str) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<TrialStatus>()
                .map_err(|_| invalid(format!("status={text:?} is not a trial status")))?,
        ),
    };
    let filter = TrialFilter {
        status,
        chain: param(&params, "chain")?,
        objective: params.get("objective").filter(|o| !o.is_empty()).cloned(),
        min_score: score_bound(&params, "min_score")?,
        max_score: score_bound(&params, "max_score")?,
    };
    if let (Some(min), Some(max)) = (filter.min_score, filter.max_score) {
        if min > max {
            return Err(invalid(format!(
                "min_score={min} is above max_score={max}: no trial can match"
            )));
        }
    }
    if filter.chain.is_some() || filter.objective.is_some() {
        let domain = s.scheduler.filter_domain(id.as_str()).await?;
        if let Some(chain) = filter.chain {
            if !(0..domain.chains).contains(&chain) {
                return Err(invalid(format!(
                    "chain={chain} is out of range: experiment {id} has chains 0 to {}",
                    domain.chains - 1
                )));
            }
        }
        if let Some(objective) = &filter.objective {
            if objective != domain.objective {
                return Err(invalid(format!(
                    "objective={objective:?} is not this experiment's: its trials train with {:?}",
                    domain.objective
                )));
            }
        }
    }
    let page = s
        .scheduler
        .query_trials(id.as_str(), &filter, sort, descending, offset, limit)
        .await?;
    if offset > 0 && offset >= page.total {
        return Err(invalid(format!(
            "offset {offset} is past the last of {} matching trials",
            page.total
        )));
    }
    let trials: Vec<Value> = page.trials.iter().map(json::trial).collect();
    Ok(Json(serde_json::json!({
        "total": page.total, "offset": offset, "limit": limit, "trials": trials,
    })))
}

/// `GET /api/v1/trials/{id}`.
pub async fn trial(State(s): State<HttpState>, Path(id): Path<String>) -> Answer {
    let id: TrialId = id
        .parse()
        .map_err(|e| invalid(format!("trial id {id:?}: {e}")))?;
    let detail = s.scheduler.trial_detail(id.as_str()).await?;
    Ok(Json(json::trial_detail(&detail)))
}

/// `GET /api/v1/experiments/{id}/best`.
pub async fn best_curve(State(s): State<HttpState>, Path(id): Path<String>) -> Answer {
    let id = experiment_id(&id)?;
    let (points, finished) = s.scheduler.best_curve(id.as_str()).await?;
    Ok(Json(json::best_curve(&points, finished, now_ms())))
}

/// `GET /api/v1/experiments/{id}/genealogy`.
pub async fn genealogy(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Answer {
    let id = experiment_id(&id)?;
    only(&params, &["limit"])?;
    let limit: u32 = param(&params, "limit")?.unwrap_or(DEFAULT_GENEALOGY);
    if limit == 0 || limit > MAX_GENEALOGY {
        return Err(invalid(format!(
            "limit must be between 1 and {MAX_GENEALOGY}, not {limit}"
        )));
    }
    let rows = s.scheduler.genealogy(id.as_str(), limit).await?;
    Ok(Json(json::genealogy(&rows)))
}

/// `GET /api/v1/experiments/{id}/chains`.
pub async fn chains(State(s): State<HttpState>, Path(id): Path<String>) -> Answer {
    let id = experiment_id(&id)?;
    let (chains, history) = s.scheduler.chain_history(id.as_str()).await?;
    Ok(Json(json::chains(&chains, &history)))
}

/// `GET /api/v1/workers`.
pub async fn workers(State(s): State<HttpState>) -> Answer {
    let views = s.scheduler.worker_views().await?;
    Ok(Json(json::workers(&views)))
}

/// Refuses a write without the cluster token.
fn authorize(s: &HttpState, headers: &HeaderMap) -> Result<(), ApiError> {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if s.auth.accepts(authorization, "http") {
        Ok(())
    } else {
        Err(ApiError::unauthenticated())
    }
}

/// `POST /api/v1/experiments/{id}/stop?now=BOOL`.
pub async fn stop(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(params): Params,
) -> Answer {
    authorize(&s, &headers)?;
    let id = experiment_id(&id)?;
    only(&params, &["now"])?;
    let now: bool = param(&params, "now")?.unwrap_or(false);
    let outcome = s.scheduler.stop_experiment(id.as_str(), now).await?;
    let view = s.scheduler.experiment_view(id.as_str()).await?;
    Ok(Json(json::stopped(&view, &outcome)))
}

/// `POST /api/v1/experiments/{id}/resume`.
pub async fn resume(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    authorize(&s, &headers)?;
    let id = experiment_id(&id)?;
    s.scheduler.resume_experiment(id.as_str()).await?;
    let view = s.scheduler.experiment_view(id.as_str()).await?;
    Ok(Json(json::experiment(&view)))
}
