//! Starting the master: open the store, bind the gRPC endpoint (port 0 works, for tests), run
//! the scheduler's maintenance tick, and shut down cleanly on request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use explore_common::proto::admin_service_server::AdminServiceServer;
use explore_common::proto::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;

use crate::artifacts::ArtifactStore;
use crate::auth::{load_or_create_token, TokenAuth};
use crate::error::MasterError;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::service::admin::AdminApi;
use crate::service::worker::WorkerApi;
use crate::store::Store;

/// Everything `master serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Holds the database, the token and the checkpoints.
    pub data_dir: PathBuf,
    pub scheduler: SchedulerConfig,
    /// Largest checkpoint accepted.
    pub max_checkpoint_bytes: u64,
    /// Largest single gRPC message accepted.
    pub max_message_bytes: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:50051".parse().expect("valid address"),
            data_dir: PathBuf::from(".explore"),
            scheduler: SchedulerConfig::default(),
            max_checkpoint_bytes: 1 << 30,
            max_message_bytes: 4 << 20,
        }
    }
}

/// A running master.
pub struct MasterHandle {
    /// The bound address.
    pub addr: SocketAddr,
    /// The cluster token clients must present.
    pub token: String,
    auth: TokenAuth,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    ticker: JoinHandle<()>,
    store: Store,
}

impl MasterHandle {
    /// Calls refused for a missing or wrong token since start.
    pub fn refused_calls(&self) -> u64 {
        self.auth.refused()
    }

    /// Stops accepting calls, lets in-flight calls finish, and closes the store.
    pub async fn shutdown(self) -> Result<(), MasterError> {
        let _ = self.shutdown.send(true);
        self.ticker.abort();
        let result = self.server.await;
        self.store.close().await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(MasterError::Internal(format!("server error: {e}"))),
            Err(e) => Err(MasterError::Internal(format!("server task: {e}"))),
        }
    }

    /// Waits until the server stops on its own (it does not, unless it fails).
    pub async fn wait(&mut self) -> Result<(), MasterError> {
        match (&mut self.server).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(MasterError::Internal(format!("server error: {e}"))),
            Err(e) => Err(MasterError::Internal(format!("server task: {e}"))),
        }
    }
}

/// Starts a master and returns once it accepts connections.
pub async fn start(config: ServeConfig) -> Result<MasterHandle, MasterError> {
    let store = Store::open(&config.data_dir).await?;
    let artifacts = ArtifactStore::open(
        &config.data_dir.join("artifacts"),
        config.max_checkpoint_bytes,
    )?;
    let token = load_or_create_token(&config.data_dir)?;
    let scheduler = Arc::new(Scheduler::new(
        store.clone(),
        artifacts,
        config.scheduler.clone(),
    ));
    // Reclaim leases that expired while the master was down before serving anyone.
    scheduler.tick().await?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| MasterError::Io {
            path: config.listen.to_string(),
            reason: format!("cannot listen: {e}"),
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| MasterError::Internal(e.to_string()))?;

    let auth = TokenAuth::new(token.clone());
    let worker_auth = auth.clone();
    let admin_auth = auth.clone();
    let worker = WorkerServiceServer::new(WorkerApi::new(scheduler.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    let admin = AdminServiceServer::new(AdminApi::new(scheduler.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);

    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(InterceptedService::new(worker, move |r| {
                worker_auth.check(r)
            }))
            .add_service(InterceptedService::new(admin, move |r| admin_auth.check(r)))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = shutdown_rx.wait_for(|stop| *stop).await;
            }),
    );
    let tick_scheduler = scheduler.clone();
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            if let Err(e) = tick_scheduler.tick().await {
                tracing::error!(error = %e, "scheduler tick failed");
            }
        }
    });
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "master listening");
    Ok(MasterHandle {
        addr,
        token,
        auth,
        shutdown: shutdown_tx,
        server,
        ticker,
        store,
    })
}
