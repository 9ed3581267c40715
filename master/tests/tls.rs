//! TLS and mutual TLS end to end: certificates made with rcgen at test time (none are kept in
//! the repository), a real master started in-process on a loopback port, and the shared clients.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use explore_common::client::{self, BearerToken, TlsOptions};
use explore_common::proto::admin_service_client::AdminServiceClient;
use explore_common::proto::ListExperimentsRequest;
use explore_common::CommonError;
use explore_master::server::{start, MasterHandle, ServeConfig, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tempfile::TempDir;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(30);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("call did not finish in time")
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate signed by it,
/// and a second CA (with its own client certificate) that the master does not know.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = make_ca(dir.path(), "ca", "explore test ca");
        let other = make_ca(dir.path(), "other-ca", "some other ca");
        make_leaf(
            dir.path(),
            "server",
            &ca,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        make_leaf(
            dir.path(),
            "client",
            &ca,
            &["worker-1"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        make_leaf(
            dir.path(),
            "other-client",
            &other,
            &["intruder"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self, client_ca: bool) -> TlsConfig {
        TlsConfig {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: client_ca.then(|| self.path("ca.pem")),
        }
    }

    /// Client options trusting `ca` (a file stem), presenting `identity` if given.
    fn client(&self, ca: &str, identity: Option<&str>) -> TlsOptions {
        TlsOptions {
            ca: Some(self.path(&format!("{ca}.pem"))),
            identity: identity.map(|name| {
                (
                    self.path(&format!("{name}.pem")),
                    self.path(&format!("{name}.key")),
                )
            }),
        }
    }
}

fn make_ca(dir: &Path, stem: &str, name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join(format!("{stem}.pem")), ca.pem()).unwrap();
    ca
}

fn make_leaf(
    dir: &Path,
    stem: &str,
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca).unwrap();
    std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
}

struct Master {
    handle: MasterHandle,
    /// `https://localhost:PORT`: the host matches the certificate's DNS name.
    url: String,
    _dir: TempDir,
}

impl Master {
    async fn start(tls: TlsConfig) -> Master {
        let dir = tempfile::tempdir().unwrap();
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            tls: Some(tls),
            ..Default::default()
        };
        let handle = within(start(config)).await.unwrap();
        let url = format!("https://localhost:{}", handle.addr.port());
        Master {
            handle,
            url,
            _dir: dir,
        }
    }

    /// Connects to `url` with `tls` and lists experiments with the master's token; the error
    /// of whichever step failed.
    async fn list(&self, url: &str, tls: &TlsOptions) -> Result<usize, String> {
        within(async {
            let channel = client::connect_with(url, tls)
                .await
                .map_err(|e| e.to_string())?;
            let token = BearerToken::new(&self.handle.token).unwrap();
            let mut admin = client::admin_client(channel, &token);
            admin
                .list_experiments(ListExperimentsRequest {})
                .await
                .map(|r| r.into_inner().experiments.len())
                .map_err(|s| format!("{:?}: {}", s.code(), client::status_text(&s)))
        })
        .await
    }

    async fn stop(self) {
        within(self.handle.shutdown()).await.unwrap();
    }
}

#[tokio::test]
async fn a_client_trusting_the_ca_is_served_over_tls() {
    let pki = Pki::new();
    let master = Master::start(pki.server(false)).await;
    assert_eq!(
        master.list(&master.url, &pki.client("ca", None)).await,
        Ok(0)
    );
    // The certificate also names 127.0.0.1, so the address works as well as the name.
    let by_ip = format!("https://{}", master.handle.addr);
    assert_eq!(master.list(&by_ip, &pki.client("ca", None)).await, Ok(0));
    master.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_is_refused() {
    let pki = Pki::new();
    let master = Master::start(pki.server(false)).await;
    let plain = format!("http://{}", master.handle.addr);
    let result = master.list(&plain, &TlsOptions::default()).await;
    // TCP connects, but the master's TLS layer drops the connection on the HTTP/2 preface
    // before any gRPC status exists: a transport error (code Unknown) on the first call, not
    // a refusal by the service (that would be Unauthenticated, or an answer) or a TCP failure.
    let e = result.expect_err("a plaintext client must be refused");
    assert!(
        e.starts_with("Unknown: transport error: connection error:"),
        "{e}"
    );
    assert!(
        ["broken pipe", "connection reset", "closed"]
            .iter()
            .any(|cause| e.contains(cause)),
        "{e}"
    );
    master.stop().await;
}

#[tokio::test]
async fn a_client_not_trusting_the_ca_fails_the_handshake() {
    let pki = Pki::new();
    let master = Master::start(pki.server(false)).await;
    let e = within(client::connect_with(
        &master.url,
        &pki.client("other-ca", None),
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, CommonError::Tls(_)), "{e:?}");
    let expected = format!("tls handshake with {} failed", master.url);
    assert!(e.to_string().starts_with(&expected), "{e}");
    // Still serving the clients that do trust it.
    assert_eq!(
        master.list(&master.url, &pki.client("ca", None)).await,
        Ok(0)
    );
    master.stop().await;
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new();
    let master = Master::start(pki.server(true)).await;
    let without = master.list(&master.url, &pki.client("ca", None)).await;
    // The master's refusal (a TLS alert) reaches the client on its first call.
    let refused = without.expect_err("a client without a certificate must be refused");
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    let foreign = master
        .list(&master.url, &pki.client("ca", Some("other-client")))
        .await;
    // The master does not know the other CA and says so with a TLS alert.
    let foreign = foreign.expect_err("a client certificate from another CA must be refused");
    assert!(
        foreign.starts_with("Unknown: transport error:")
            && foreign.contains("received fatal alert: UnknownCA"),
        "{foreign}"
    );
    let with = master
        .list(&master.url, &pki.client("ca", Some("client")))
        .await;
    assert_eq!(with, Ok(0));
    master.stop().await;
}

#[tokio::test]
async fn the_token_is_still_required_over_tls() {
    let pki = Pki::new();
    let master = Master::start(pki.server(true)).await;
    let tls = pki.client("ca", Some("client"));
    let channel = within(client::connect_with(&master.url, &tls))
        .await
        .unwrap();
    let status = within(
        AdminServiceClient::new(channel.clone()).list_experiments(ListExperimentsRequest {}),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let wrong = BearerToken::new("not-the-token").unwrap();
    let status =
        within(client::admin_client(channel, &wrong).list_experiments(ListExperimentsRequest {}))
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(master.handle.refused_calls() >= 2);
    master.stop().await;
}

#[tokio::test]
async fn a_missing_certificate_file_fails_start_naming_it() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let missing = pki.path("missing.pem");
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        tls: Some(TlsConfig {
            cert: missing.clone(),
            ..pki.server(false)
        }),
        ..Default::default()
    };
    let e = within(start(config)).await.err().expect("start must fail");
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_fails_start() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        tls: Some(TlsConfig {
            key: pki.path("client.key"),
            ..pki.server(false)
        }),
        ..Default::default()
    };
    let e = within(start(config)).await.err().expect("start must fail");
    assert!(e.to_string().contains("server.pem"), "{e}");
}
