//! Authenticated gRPC clients for the master's services, shared by the worker and the CLI.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::CommonError;
use crate::failover::MasterChannel;
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

/// A channel whose calls carry the token, to one master or to whichever of several answers
/// ([`MasterChannel`]).
pub type AuthChannel = InterceptedService<MasterChannel, BearerToken>;

/// TLS settings of a client connection. With an `https` URL and neither set, the client
/// trusts the system's root certificates and presents no certificate of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA that signed the master's certificate; when given, only it is trusted.
    pub ca: Option<PathBuf>,
    /// PEM certificate and private key files this client presents to a master that requires
    /// client certificates (mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl TlsOptions {
    /// Whether a CA or a client identity is given.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.identity.is_some()
    }

    /// Checks `url` and these settings together and reads every file given, so that a bad URL
    /// or a missing or malformed file is reported before any connection is tried.
    pub fn check(&self, url: &str) -> Result<(), CommonError> {
        self.endpoint(url).map(|_| ())
    }

    /// An endpoint for `url`: TLS for `https://`; for `http://`, plain text, and TLS settings
    /// are refused rather than silently ignored.
    fn endpoint(&self, url: &str) -> Result<Endpoint, CommonError> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| CommonError::Spec(format!("bad master url {url:?}: {e}")))?;
        if endpoint.uri().scheme_str() == Some("https") {
            endpoint
                .tls_config(self.client_config()?)
                .map_err(|e| CommonError::Tls(format!("tls setup for {url}: {}", error_chain(&e))))
        } else if self.is_set() {
            Err(CommonError::Tls(format!(
                "tls certificates given but the master url {url} is not https://"
            )))
        } else {
            Ok(endpoint)
        }
    }

    /// The tonic client TLS config, reading the files.
    fn client_config(&self) -> Result<ClientTlsConfig, CommonError> {
        let mut config = ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read_pem_certs(ca)?)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(
                read_pem_certs(cert)?,
                read_pem_key(key)?,
            ));
        }
        Ok(config)
    }
}

/// How long a client waits for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads a PEM file holding at least one certificate; errors name the file.
pub fn read_pem_certs(path: &Path) -> Result<Vec<u8>, CommonError> {
    read_pem(path, "certificate", "-----BEGIN CERTIFICATE-----")
}

/// Reads a PEM file holding a private key; errors name the file.
pub fn read_pem_key(path: &Path) -> Result<Vec<u8>, CommonError> {
    read_pem(path, "private key", "PRIVATE KEY-----")
}

fn read_pem(path: &Path, what: &str, marker: &str) -> Result<Vec<u8>, CommonError> {
    let pem = std::fs::read(path).map_err(|e| CommonError::Io {
        path: path.display().to_string(),
        reason: format!("cannot read the tls {what}: {e}"),
    })?;
    if !pem.windows(marker.len()).any(|w| w == marker.as_bytes()) {
        return Err(CommonError::Tls(format!(
            "{} holds no pem {what}",
            path.display()
        )));
    }
    Ok(pem)
}

/// Connects to a master URL such as `http://127.0.0.1:50051`, in plain text; an `https` URL
/// gets TLS trusting the system's root certificates.
pub async fn connect(url: &str) -> Result<Channel, CommonError> {
    connect_with(url, &TlsOptions::default()).await
}

/// Connects to a master URL with TLS settings: `https://` URLs use TLS, `http://` URLs plain
/// text (and refuse TLS settings rather than silently ignoring them).
pub async fn connect_with(url: &str, tls: &TlsOptions) -> Result<Channel, CommonError> {
    let endpoint = tls.endpoint(url)?;
    let https = endpoint.uri().scheme_str() == Some("https");
    with_connection_options(endpoint)
        .connect()
        .await
        .map_err(|e| {
            if https && is_tls_failure(&e) {
                CommonError::Tls(format!(
                    "tls handshake with {url} failed: {}",
                    error_chain(&e)
                ))
            } else {
                CommonError::Io {
                    path: url.to_string(),
                    reason: format!("cannot connect to the master: {}", error_chain(&e)),
                }
            }
        })
}

/// A channel to a master URL that connects on its first call (and reconnects as
/// [`connect_with`]'s does); the URL and TLS settings are checked now.
pub fn connect_lazy_with(url: &str, tls: &TlsOptions) -> Result<Channel, CommonError> {
    Ok(with_connection_options(tls.endpoint(url)?).connect_lazy())
}

/// The socket and HTTP/2 settings of every connection to the master.
fn with_connection_options(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(Duration::from_secs(5))
        // Each call is a few small HTTP/2 frames; with Nagle's algorithm the later ones wait
        // for the master's delayed ACK (~40 ms on Linux). tonic's default is on today; said
        // here so that a change of default cannot bring the stall back unnoticed.
        .tcp_nodelay(true)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        // HTTP/2 pings notice a master that vanished behind a silent partition within ~40 s,
        // so calls fail (and are retried) instead of hanging until TCP gives up.
        .http2_keep_alive_interval(keep_alive())
        .keep_alive_timeout(keep_alive())
        .keep_alive_while_idle(true)
}

/// The HTTP/2 keepalive interval and timeout: 20 s, or `EXPLORE_KEEPALIVE_SECS` (1..=3600) so
/// the fault suite's silent network cut is noticed within seconds.
fn keep_alive() -> Duration {
    let secs = std::env::var("EXPLORE_KEEPALIVE_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| (1..=3600).contains(s))
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// An error and its causes on one line, `outer: inner: innermost`, leaving out a cause whose
/// text the line already ends with (io and transport errors often print their cause already).
pub fn error_chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A status's message and, for transport failures, their causes (such as the TLS alert of a
/// master that refused this client's certificate), which the message alone does not show.
pub fn status_text(status: &tonic::Status) -> String {
    match status.source() {
        Some(cause) => {
            let causes = error_chain(cause);
            if causes.starts_with(status.message()) {
                causes
            } else {
                format!("{}: {causes}", status.message())
            }
        }
        None => status.message().to_string(),
    }
}

/// Whether a failed connect got past TCP and failed in TLS. TCP failures (refused, unreachable,
/// timed out, unresolvable) carry other kinds; rustls reports bad certificates and protocol
/// errors as `InvalidData`, and a peer that hangs up mid-handshake as `UnexpectedEof` or a reset.
fn is_tls_failure(e: &(dyn Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                InvalidData | UnexpectedEof | ConnectionReset | ConnectionAborted
            ) {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// A worker-service client over `channel` (a [`Channel`] or a [`MasterChannel`]).
pub fn worker_client(
    channel: impl Into<MasterChannel>,
    token: &BearerToken,
) -> WorkerServiceClient<AuthChannel> {
    WorkerServiceClient::with_interceptor(channel.into(), token.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// An admin-service client over `channel` (a [`Channel`] or a [`MasterChannel`]).
pub fn admin_client(
    channel: impl Into<MasterChannel>,
    token: &BearerToken,
) -> AdminServiceClient<AuthChannel> {
    AdminServiceClient::with_interceptor(channel.into(), token.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let tls = TlsOptions {
            ca: Some(PathBuf::from("/nonexistent/ca.pem")),
            identity: None,
        };
        let e = block_on(connect_with("https://localhost:1", &tls)).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn a_file_without_a_certificate_is_named() {
        let dir = std::env::temp_dir().join(format!("explore-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-a-cert.pem");
        std::fs::write(&path, "hello").unwrap();
        let e = read_pem_certs(&path).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            e.contains("not-a-cert.pem") && e.contains("no pem certificate"),
            "{e}"
        );
    }

    #[test]
    fn connections_disable_nagle() {
        let endpoint = TlsOptions::default()
            .endpoint("http://127.0.0.1:1")
            .unwrap();
        assert!(with_connection_options(endpoint).get_tcp_nodelay());
    }

    #[test]
    fn tls_settings_with_a_plain_url_are_refused() {
        let tls = TlsOptions {
            ca: Some(PathBuf::from("ca.pem")),
            identity: None,
        };
        let e = block_on(connect_with("http://127.0.0.1:1", &tls)).unwrap_err();
        assert!(e.to_string().contains("not https://"), "{e}");
    }
}
