//! Starting the master: lock the data directory when the pool is SQLite in it (one master per
//! directory, [`crate::lock`]), open the store (SQLite or PostgreSQL, `--db`), bind the gRPC endpoint (port 0 works, for tests) with the standard health
//! service beside the token-checked ones, run the scheduler's maintenance tick, and shut down
//! cleanly on request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use explore_common::client::{error_chain, read_pem_certs, read_pem_key};
use explore_common::proto::admin_service_server::AdminServiceServer;
use explore_common::proto::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::artifacts::{ArtifactLocation, ArtifactStore};
use crate::auth::{load_or_create_token, load_token, TokenAuth};
use crate::error::MasterError;
use crate::http::HttpState;
use crate::leader::{Election, STANDBY_POLL};
use crate::lock::DataDirLock;
use crate::metrics::PromMetrics;
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
    /// Where the pool lives: `sqlite` (a file in `data_dir`) or a `postgres://` URL.
    pub db: String,
    pub scheduler: SchedulerConfig,
    /// Largest checkpoint accepted.
    pub max_checkpoint_bytes: u64,
    /// Largest single gRPC message accepted.
    pub max_message_bytes: usize,
    /// Serve over TLS with these files; `None` serves plain text.
    pub tls: Option<TlsConfig>,
    /// How often expired leases are reclaimed and budgets applied.
    pub tick_interval: Duration,
    /// Where to serve the HTTP edge (dashboard, JSON API, `/metrics`, probes); `None` for
    /// none. Port 0 picks a free port.
    pub http_listen: Option<SocketAddr>,
    /// Read the cluster token from this file (e.g. a mounted Kubernetes Secret) instead of
    /// `data_dir/token`, which is then neither read nor created.
    pub token_file: Option<PathBuf>,
    /// Where checkpoints live; `None` is `data_dir/artifacts`.
    pub artifacts: Option<ArtifactLocation>,
}

impl ServeConfig {
    /// Where checkpoints live: [`ServeConfig::artifacts`], or `data_dir/artifacts`.
    pub fn artifacts_location(&self) -> ArtifactLocation {
        self.artifacts
            .clone()
            .unwrap_or_else(|| ArtifactLocation::Dir(self.data_dir.join("artifacts")))
    }
}

/// The master's TLS files (PEM). With `client_ca`, every client must present a certificate
/// signed by it (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The master's certificate chain.
    pub cert: PathBuf,
    /// The private key of `cert`.
    pub key: PathBuf,
    /// CA whose client certificates are accepted; when set, clients without one are refused.
    pub client_ca: Option<PathBuf>,
}

impl TlsConfig {
    /// Reads the files into a tonic server TLS config; errors name the file.
    pub fn load(&self) -> Result<ServerTlsConfig, MasterError> {
        let identity = Identity::from_pem(read_pem_certs(&self.cert)?, read_pem_key(&self.key)?);
        let mut config = ServerTlsConfig::new()
            .identity(identity)
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read_pem_certs(ca)?));
        }
        Ok(config)
    }
}

/// How long the master waits for a client's TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:50051".parse().expect("valid address"),
            data_dir: PathBuf::from(".explore"),
            db: "sqlite".into(),
            scheduler: SchedulerConfig::default(),
            max_checkpoint_bytes: 1 << 30,
            max_message_bytes: 4 << 20,
            tls: None,
            tick_interval: Duration::from_secs(1),
            http_listen: None,
            token_file: None,
            artifacts: None,
        }
    }
}

/// A running master.
pub struct MasterHandle {
    /// The bound address.
    pub addr: SocketAddr,
    /// The bound address of the HTTP edge, when it serves one.
    pub http_addr: Option<SocketAddr>,
    /// The cluster token clients must present.
    pub token: String,
    auth: TokenAuth,
    shutdown: Arc<watch::Sender<bool>>,
    /// Why this master stopped serving on its own (it lost the leadership), if it did.
    lost: watch::Receiver<Option<String>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    ticker: JoinHandle<()>,
    scheduler: Arc<Scheduler>,
    health: HealthReporter,
    /// The data directory's lock, held while the pool is SQLite in that directory; dropping it
    /// (or dying) frees the directory.
    lock: Option<DataDirLock>,
}

/// The services whose `grpc.health.v1` status the master reports, besides the overall "".
const HEALTH_SERVICES: [&str; 3] = [
    "",
    <WorkerServiceServer<WorkerApi> as NamedService>::NAME,
    <AdminServiceServer<AdminApi> as NamedService>::NAME,
];

impl MasterHandle {
    /// Calls refused for a missing or wrong token since start.
    pub fn refused_calls(&self) -> u64 {
        self.auth.refused()
    }

    /// Stops accepting calls, lets in-flight calls finish, and closes the store.
    ///
    /// Health checks answer `NOT_SERVING` from the moment it drains; `Watch` streams get that
    /// answer and then end, so that they do not hold the graceful shutdown open.
    pub async fn shutdown(self) -> Result<(), MasterError> {
        self.scheduler.drain();
        let mut health = self.health;
        for service in HEALTH_SERVICES {
            health
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        let _ = self.shutdown.send(true);
        for service in HEALTH_SERVICES {
            health.clear_service_status(service).await;
        }
        self.ticker.abort();
        let result = self.server.await;
        if let Some(http) = self.http {
            if let Ok(Err(e)) = http.await {
                tracing::warn!(error = %e, "http edge stopped with an error");
            }
        }
        self.scheduler.store().close().await;
        drop(self.lock);
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(MasterError::Internal(format!("server error: {e}"))),
            Err(e) => Err(MasterError::Internal(format!("server task: {e}"))),
        }
    }

    /// Waits until the server stops on its own: it does not, unless it fails or loses the
    /// leadership it held (PostgreSQL, several masters), which is an error.
    pub async fn wait(&mut self) -> Result<(), MasterError> {
        let ended = (&mut self.server).await;
        if let Some(reason) = self.lost.borrow().clone() {
            return Err(MasterError::Unavailable(format!(
                "this master lost the leadership and stopped serving: {reason}"
            )));
        }
        match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(MasterError::Internal(format!("server error: {e}"))),
            Err(e) => Err(MasterError::Internal(format!("server task: {e}"))),
        }
    }
}

/// Starts a master and returns once it accepts connections.
pub async fn start(config: ServeConfig) -> Result<MasterHandle, MasterError> {
    // Bad TLS files fail start-up before anything is opened.
    let mut builder = tonic::transport::Server::builder();
    if let Some(files) = &config.tls {
        builder = builder.tls_config(files.load()?).map_err(|e| {
            MasterError::InvalidArgument(format!(
                "tls certificate {} and key {} do not work together: {}",
                files.cert.display(),
                files.key.display(),
                error_chain(&e)
            ))
        })?;
    }
    // Before the store is opened: a second master on this directory must not touch its SQLite
    // pool. A PostgreSQL pool is the database's to guard, and the data directory (checkpoints)
    // may be a volume several masters share.
    let lock = if Store::is_sqlite(&config.db) {
        Some(DataDirLock::acquire(&config.data_dir)?)
    } else {
        None
    };
    let store = Store::connect(&config.db, &config.data_dir).await?;
    tracing::info!(backend = store.backend_name(), "pool opened");
    let election = store.election(&master_name(config.listen)).await?;
    let artifacts =
        ArtifactStore::open(&config.artifacts_location(), config.max_checkpoint_bytes).await?;
    tracing::info!(location = %artifacts.location(), "checkpoints opened");
    let token = match &config.token_file {
        Some(file) => load_token(file)?,
        None => load_or_create_token(&config.data_dir)?,
    };
    let metrics = Arc::new(PromMetrics::default());
    let scheduler = Arc::new(
        Scheduler::new(store.clone(), artifacts, config.scheduler.clone())
            .with_metrics(metrics.clone()),
    );
    // The active master resumes at once: trials in flight when the last one stopped get one
    // lease period for their workers to report; then budgets are applied before anyone is
    // served. A standby serves only UNAVAILABLE until it takes over (the ticker task below).
    let active_at_start = election.try_acquire().await?;
    match active_at_start {
        Some(epoch) => {
            tracing::info!(epoch, "active master");
            scheduler.resume().await?;
            scheduler.tick().await?;
        }
        None => {
            scheduler.set_active(false);
            let holder = election.holder().await.unwrap_or_default();
            tracing::info!(active = %holder, "standing by: another master is active");
        }
    }

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

    // grpc.health.v1 needs no token: Kubernetes' gRPC probes send none, and it tells nothing.
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, scheduler.is_active()).await;

    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    let (lost_tx, lost_rx) = watch::channel(None);
    // TCP_NODELAY on every accepted connection. tonic's `Server::tcp_nodelay` applies only
    // to listeners it binds itself, not to `serve_with_incoming`; without it Nagle's algorithm
    // holds back the small frames of each answer until the client's delayed ACK (~40 ms), so
    // every call a worker makes took ~45 ms however fast the master was.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(
        builder
            .add_service(health_service)
            .add_service(InterceptedService::new(worker, {
                let scheduler = scheduler.clone();
                move |r| {
                    refuse_on_standby(&scheduler)?;
                    worker_auth.check(r)
                }
            }))
            .add_service(InterceptedService::new(admin, {
                let scheduler = scheduler.clone();
                move |r| {
                    refuse_on_standby(&scheduler)?;
                    admin_auth.check(r)
                }
            }))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = shutdown_rx.wait_for(|stop| *stop).await;
            }),
    );
    let (http, http_addr) = match config.http_listen {
        Some(listen) => {
            let listener = TcpListener::bind(listen)
                .await
                .map_err(|e| MasterError::Io {
                    path: listen.to_string(),
                    reason: format!("cannot listen for http: {e}"),
                })?;
            let http_addr = listener
                .local_addr()
                .map_err(|e| MasterError::Internal(e.to_string()))?;
            let router = crate::http::router(HttpState {
                scheduler: scheduler.clone(),
                metrics,
                auth: auth.clone(),
            });
            let mut stop = shutdown_tx.subscribe();
            let task = tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    })
                    .await
            });
            tracing::info!(addr = %http_addr, "http edge listening (dashboard, /metrics, probes)");
            (Some(task), Some(http_addr))
        }
        None => (None, None),
    };
    let ticker = tokio::spawn(lead(
        scheduler.clone(),
        election,
        active_at_start.is_none(),
        config.tick_interval,
        health.clone(),
        shutdown_tx.clone(),
        lost_tx,
    ));
    tracing::info!(
        %addr,
        data_dir = %config.data_dir.display(),
        tls = config.tls.is_some(),
        client_certs = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        "master listening"
    );
    Ok(MasterHandle {
        addr,
        http_addr,
        token,
        auth,
        shutdown: shutdown_tx,
        lost: lost_rx,
        server,
        http,
        ticker,
        scheduler,
        health,
        lock,
    })
}

/// The master's name in the election: host, address and process id.
fn master_name(listen: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host} {listen} pid {}", std::process::id())
}

/// Refuses a call while this master stands by: `UNAVAILABLE`, which workers given several
/// master addresses take as "try the next one".
fn refuse_on_standby(scheduler: &Scheduler) -> Result<(), tonic::Status> {
    if scheduler.is_active() {
        Ok(())
    } else {
        Err(tonic::Status::unavailable(
            "this master is a standby: the active master is another one",
        ))
    }
}

/// Reports every service as serving (the active master) or not (a standby).
async fn set_health(health: &HealthReporter, active: bool) {
    let status = if active {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for service in HEALTH_SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// The master's leadership loop: a standby waits until it wins the election, then takes over
/// exactly as a restarted master does (in-flight trials get one lease period, budgets are
/// applied); the active master ticks the scheduler (expired leases, budgets, proposals) every
/// `interval` until it loses the leadership, when it stops serving and records why.
async fn lead(
    scheduler: Arc<Scheduler>,
    election: Box<dyn Election>,
    standing_by: bool,
    interval: Duration,
    health: HealthReporter,
    shutdown: Arc<watch::Sender<bool>>,
    lost: watch::Sender<Option<String>>,
) {
    if standing_by {
        let waited = std::time::Instant::now();
        loop {
            tokio::time::sleep(STANDBY_POLL).await;
            match election.try_acquire().await {
                Ok(Some(epoch)) => {
                    tracing::info!(
                        epoch,
                        waited_s = waited.elapsed().as_secs_f64(),
                        "took over as the active master"
                    );
                    break;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "election: cannot reach the database"),
            }
        }
        while let Err(e) = scheduler.resume().await {
            tracing::error!(error = %e, "taking over: resuming leases failed; retrying");
            tokio::time::sleep(STANDBY_POLL).await;
        }
        if let Err(e) = scheduler.tick().await {
            tracing::error!(error = %e, "scheduler tick failed");
        }
        scheduler.set_active(true);
        set_health(&health, true).await;
    }
    let lost_leadership = election.lost();
    tokio::pin!(lost_leadership);
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            reason = &mut lost_leadership => {
                tracing::error!(reason = %reason, "lost the leadership: stopping");
                scheduler.set_active(false);
                set_health(&health, false).await;
                let _ = lost.send(Some(reason));
                let _ = shutdown.send(true);
                return;
            }
            _ = ticks.tick() => {
                if let Err(e) = scheduler.tick().await {
                    tracing::error!(error = %e, "scheduler tick failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_certificate_file_is_named() {
        let tls = TlsConfig {
            cert: PathBuf::from("/nonexistent/master.pem"),
            key: PathBuf::from("/nonexistent/master.key"),
            client_ca: None,
        };
        let e = tls.load().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/master.pem"), "{e}");
    }
}
