//! Authenticated gRPC clients for the master's services, shared by the worker and the CLI.

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

use crate::error::CommonError;
use crate::proto::admin_service_client::AdminServiceClient;
use crate::proto::worker_service_client::WorkerServiceClient;

/// Environment variable that may hold the cluster token.
pub const TOKEN_ENV: &str = "EXPLORE_TOKEN";

/// Largest message a client accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl BearerToken {
    /// An interceptor presenting `token`.
    pub fn new(token: &str) -> Result<Self, CommonError> {
        let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
            CommonError::Spec(
                "the cluster token contains characters not allowed in a header".into(),
            )
        })?;
        Ok(BearerToken(value))
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel whose calls carry the token.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// Connects to a master URL such as `http://127.0.0.1:50051`.
pub async fn connect(url: &str) -> Result<Channel, CommonError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| CommonError::Spec(format!("bad master url {url:?}: {e}")))?;
    endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_keepalive(Some(std::time::Duration::from_secs(30)))
        .connect()
        .await
        .map_err(|e| CommonError::Io {
            path: url.to_string(),
            reason: format!("cannot connect to the master: {e}"),
        })
}

/// A worker-service client over `channel`.
pub fn worker_client(channel: Channel, token: &BearerToken) -> WorkerServiceClient<AuthChannel> {
    WorkerServiceClient::with_interceptor(channel, token.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// An admin-service client over `channel`.
pub fn admin_client(channel: Channel, token: &BearerToken) -> AdminServiceClient<AuthChannel> {
    AdminServiceClient::with_interceptor(channel, token.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The cluster token: from `token_file` when given, else from `$EXPLORE_TOKEN`, else from
/// `fallback_file` (the master's data directory for local CLI use).
pub fn read_token(
    token_file: Option<&Path>,
    fallback_file: Option<&Path>,
) -> Result<String, CommonError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| t.trim().to_string())
            .map_err(|e| CommonError::Io {
                path: p.display().to_string(),
                reason: format!("cannot read the cluster token: {e}"),
            })
    };
    if let Some(p) = token_file {
        return read(p);
    }
    if let Ok(t) = std::env::var(TOKEN_ENV) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    match fallback_file {
        Some(p) if p.exists() => read(p),
        Some(p) => Err(CommonError::Io {
            path: p.display().to_string(),
            reason: format!("no cluster token: pass --token-file or set {TOKEN_ENV}"),
        }),
        None => Err(CommonError::Spec(format!(
            "no cluster token: pass --token-file or set {TOKEN_ENV}"
        ))),
    }
}
