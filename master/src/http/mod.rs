//! The master's HTTP edge (`master serve --http-listen ADDR`): one axum router for the
//! dashboard (`/`, `/assets/…`, embedded in the binary), its JSON API (`/api/v1/…`, see
//! `docs/http-api.md`), Prometheus metrics (`/metrics`) and the probes (`/healthz`,
//! `/readyz`). Every handler is a thin adapter over the scheduler's reads and writes; errors
//! are [`MasterError`]s mapped by their [`ErrorKind`](crate::error::ErrorKind), the same
//! mapping the gRPC services use.

mod api;
mod dashboard;
mod json;

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::auth::TokenAuth;
use crate::error::MasterError;
use crate::metrics::PromMetrics;
use crate::scheduler::Scheduler;

/// What every handler reads.
#[derive(Clone)]
pub struct HttpState {
    /// The scheduler the gRPC services also use.
    pub scheduler: Arc<Scheduler>,
    /// The counters and histograms `/metrics` renders.
    pub metrics: Arc<PromMetrics>,
    /// The cluster token; write actions need it.
    pub auth: TokenAuth,
}

/// The router of the HTTP edge.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/{file}", get(dashboard::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/experiments", get(api::experiments))
        .route("/api/v1/experiments/{id}", get(api::experiment))
        .route("/api/v1/experiments/{id}/trials", get(api::trials))
        .route("/api/v1/experiments/{id}/best", get(api::best_curve))
        .route("/api/v1/experiments/{id}/genealogy", get(api::genealogy))
        .route("/api/v1/experiments/{id}/chains", get(api::chains))
        .route("/api/v1/experiments/{id}/stop", post(api::stop))
        .route("/api/v1/experiments/{id}/resume", post(api::resume))
        .route("/api/v1/trials/{id}", get(api::trial))
        .route("/api/v1/workers", get(api::workers))
        .fallback(api::not_found)
        .with_state(state)
}

/// An error answered as `{"error": {"code", "message"}}` with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// A 401 for a write without the right token.
    fn unauthenticated() -> ApiError {
        let kind = crate::error::ErrorKind::Unauthenticated;
        ApiError {
            status: StatusCode::from_u16(kind.http()).unwrap_or(StatusCode::UNAUTHORIZED),
            code: kind.name(),
            message: crate::auth::UNAUTHENTICATED.to_string(),
        }
    }
}

impl From<MasterError> for ApiError {
    fn from(e: MasterError) -> Self {
        let kind = e.kind();
        if kind == crate::error::ErrorKind::Internal {
            tracing::error!(error = %e, "internal error answering an HTTP request");
        }
        ApiError {
            status: StatusCode::from_u16(kind.http()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: kind.name(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// Liveness: the process serves HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the master is the active one (not a standby), is not draining, and the store
/// answers.
async fn readyz(axum::extract::State(state): axum::extract::State<HttpState>) -> Response {
    if !state.scheduler.is_active() {
        return (StatusCode::SERVICE_UNAVAILABLE, "standby\n").into_response();
    }
    if state.scheduler.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match state.scheduler.store_reachable().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unreachable: {e}\n"),
        )
            .into_response(),
    }
}

/// Prometheus metrics in the text format.
async fn metrics(
    axum::extract::State(state): axum::extract::State<HttpState>,
) -> Result<Response, ApiError> {
    let gauges = state.scheduler.store_gauges().await?;
    let text = state.metrics.render(&gauges, state.auth.refused());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
