//! grpc.health.v1 on the master's gRPC port (no token needed: Kubernetes' gRPC probes send
//! none), NOT_SERVING once the master drains, and one master per data directory.

use std::future::Future;
use std::time::Duration;

use explore_master::server::{start, ServeConfig};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const LIMIT: Duration = Duration::from_secs(30);
const WORKER_SERVICE: &str = "explore.v1.WorkerService";
const ADMIN_SERVICE: &str = "explore.v1.AdminService";

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("call did not finish in time")
}

fn config(dir: &std::path::Path) -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..Default::default()
    }
}

fn request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

#[tokio::test]
async fn health_answers_without_a_token_and_turns_not_serving_on_drain() {
    let dir = tempfile::tempdir().unwrap();
    let master = within(start(config(dir.path()))).await.unwrap();
    // A plain channel: no `authorization` header at all, as a kubelet's probe.
    let channel = within(
        tonic::transport::Endpoint::from_shared(format!("http://{}", master.addr))
            .unwrap()
            .connect(),
    )
    .await
    .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", WORKER_SERVICE, ADMIN_SERVICE] {
        let status = within(health.check(request(service)))
            .await
            .unwrap_or_else(|e| panic!("check {service:?}: {e}"))
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let unknown = within(health.check(request("explore.v1.Nope")))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    // The other services still want the token: health is the only open door.
    let mut admin =
        explore_common::proto::admin_service_client::AdminServiceClient::new(channel.clone());
    let refused =
        within(admin.list_experiments(explore_common::proto::ListExperimentsRequest::default()))
            .await
            .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        master.refused_calls(),
        1,
        "health checks are not refused calls"
    );

    // A watcher sees SERVING, then NOT_SERVING when the master drains, then its stream ends:
    // it must not hold the graceful shutdown open.
    let mut watch = within(health.watch(request("")))
        .await
        .unwrap()
        .into_inner();
    let first = within(watch.next()).await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    let shutdown = tokio::spawn(master.shutdown());
    let mut seen = Vec::new();
    while let Some(item) = within(watch.next()).await {
        match item {
            Ok(answer) => seen.push(answer.status()),
            // The connection may close right after the last answer.
            Err(_) => break,
        }
    }
    assert_eq!(seen, [ServingStatus::NotServing]);
    within(shutdown).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_second_master_on_one_data_directory_is_refused_until_the_first_stops() {
    let dir = tempfile::tempdir().unwrap();
    let first = within(start(config(dir.path()))).await.unwrap();
    let e = match within(start(config(dir.path()))).await {
        Ok(_) => panic!("two masters serve one data directory"),
        Err(e) => e.to_string(),
    };
    let pid = std::process::id();
    assert!(
        e.contains(&format!(
            "data directory {} is in use by master pid {pid} on host ",
            dir.path().display()
        )),
        "{e}"
    );
    assert!(e.contains("stop it first"), "{e}");
    // The refused one touched nothing: the first still serves.
    let mut health = HealthClient::new(
        within(
            tonic::transport::Endpoint::from_shared(format!("http://{}", first.addr))
                .unwrap()
                .connect(),
        )
        .await
        .unwrap(),
    );
    within(health.check(request(""))).await.unwrap();
    within(first.shutdown()).await.unwrap();
    let second = within(start(config(dir.path()))).await.unwrap();
    within(second.shutdown()).await.unwrap();
}

#[tokio::test]
async fn serve_token_file_replaces_the_data_directory_token() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret-token");
    std::fs::write(&secret, "0123456789abcdef-from-a-secret\n").unwrap();
    let data = dir.path().join("data");
    let master = within(start(ServeConfig {
        token_file: Some(secret.clone()),
        ..config(&data)
    }))
    .await
    .unwrap();
    assert_eq!(master.token, "0123456789abcdef-from-a-secret");
    assert!(
        !data.join("token").exists(),
        "no token of its own is created"
    );
    within(master.shutdown()).await.unwrap();

    std::fs::write(&secret, "short").unwrap();
    let e = match within(start(ServeConfig {
        token_file: Some(secret.clone()),
        ..config(&data)
    }))
    .await
    {
        Ok(_) => panic!("a short token was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(&secret.display().to_string()), "{e}");
}
