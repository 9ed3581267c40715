//! The HTTP edge end to end: a real master started in-process with `--http-listen` on port 0,
//! a pool filled through the real gRPC worker service (the test plays the worker and picks
//! the scores), and every JSON endpoint, the probes, the write actions' token check and
//! `/metrics` (checked by `promtool` where it is installed; CI installs it) read over plain
//! HTTP/1.1 on loopback.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use explore_common::client::{self, AuthChannel, BearerToken};
use explore_common::proto::admin_service_client::AdminServiceClient;
use explore_common::proto::worker_service_client::WorkerServiceClient;
use explore_common::proto::{self, PROTOCOL_VERSION};
use explore_master::server::{start, MasterHandle, ServeConfig};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(30);
/// Two chains, so the chain filter has something to tell apart.
const SPEC: &str = "name = \"http\"\n[budget]\nmax_trials = 8\n[annealing]\nchains = 2\n";

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("call did not finish in time")
}

/// An HTTP answer.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `error.code` of a JSON error answer.
    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error answer: {}", self.body))
            .to_string()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Answer {
    within(async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let text = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
        );
        stream.write_all(text.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head[9..12].parse().unwrap();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let body = if header("transfer-encoding") == "chunked" {
            dechunk(body)
        } else {
            body.to_string()
        };
        Answer {
            status,
            content_type: header("content-type"),
            body,
        }
    })
    .await
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

struct Master {
    handle: MasterHandle,
    http: std::net::SocketAddr,
    _dir: TempDir,
}

impl Master {
    async fn start() -> Master {
        let dir = tempfile::tempdir().unwrap();
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let handle = within(start(config)).await.unwrap();
        let http = handle.http_addr.expect("an http address");
        Master {
            handle,
            http,
            _dir: dir,
        }
    }

    async fn clients(
        &self,
    ) -> (
        WorkerServiceClient<AuthChannel>,
        AdminServiceClient<AuthChannel>,
    ) {
        let channel = within(client::connect(&format!("http://{}", self.handle.addr)))
            .await
            .unwrap();
        let token = BearerToken::new(&self.handle.token).unwrap();
        (
            client::worker_client(channel.clone(), &token),
            client::admin_client(channel, &token),
        )
    }

    async fn get(&self, path: &str) -> Answer {
        request(self.http, "GET", path, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>) -> Answer {
        request(self.http, "POST", path, token).await
    }
}

/// Trains `n` trials through the worker service: two epoch reports each, then a result.
/// Returns the scores given, by trial id.
async fn train(
    worker: &mut WorkerServiceClient<AuthChannel>,
    worker_id: &str,
    n: usize,
) -> Vec<(String, f64)> {
    let mut done = Vec::new();
    for i in 0..n {
        let trial = within(worker.acquire(proto::AcquireRequest {
            worker_id: worker_id.into(),
            wait_ms: 2000,
        }))
        .await
        .unwrap()
        .into_inner()
        .trial
        .expect("a trial");
        let score = [0.62, 0.71, 0.69, 0.80, 0.77, 0.83][i % 6];
        for epoch in 1..=2u32 {
            within(worker.heartbeat(proto::HeartbeatRequest {
                worker_id: worker_id.into(),
                trial_id: trial.trial_id.clone(),
                attempt: trial.attempt,
                started: true,
                epoch,
                total_epochs: 2,
                train_loss: 1.0 / f64::from(epoch),
                val_accuracy: score - 0.1 / f64::from(epoch),
                ..Default::default()
            }))
            .await
            .unwrap();
        }
        let answer = within(worker.complete(proto::CompleteRequest {
            worker_id: worker_id.into(),
            trial_id: trial.trial_id.clone(),
            attempt: trial.attempt,
            score,
            metrics: [("test_accuracy".to_string(), score - 0.01)].into(),
            epochs_run: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
        assert!(answer.accepted, "{}", answer.reason);
        done.push((trial.trial_id, score));
    }
    done
}

#[tokio::test]
async fn the_json_api_answers_from_the_pool_and_checks_its_input() {
    let m = Master::start().await;
    let (mut worker, mut admin) = m.clients().await;
    let experiment_id = within(admin.submit_experiment(proto::SubmitExperimentRequest {
        spec_toml: SPEC.into(),
    }))
    .await
    .unwrap()
    .into_inner()
    .experiment_id;
    let worker_id = within(worker.register(proto::RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        name: "http-test".into(),
        device: "cpu".into(),
        slots: 1,
    }))
    .await
    .unwrap()
    .into_inner()
    .worker_id;
    let trained = train(&mut worker, &worker_id, 5).await;
    // One more held, so the workers view has something to show.
    let held = within(worker.acquire(proto::AcquireRequest {
        worker_id: worker_id.clone(),
        wait_ms: 2000,
    }))
    .await
    .unwrap()
    .into_inner()
    .trial
    .unwrap();

    // Probes.
    assert_eq!(m.get("/healthz").await.status, 200);
    let ready = m.get("/readyz").await;
    assert_eq!((ready.status, ready.body.trim()), (200, "ready"));

    // Experiments.
    let list = m.get("/api/v1/experiments").await;
    assert_eq!(list.status, 200);
    assert!(
        list.content_type.starts_with("application/json"),
        "{}",
        list.content_type
    );
    let experiments = list.json()["experiments"].as_array().unwrap().clone();
    assert_eq!(experiments.len(), 1);
    let e = &experiments[0];
    assert_eq!(e["id"], experiment_id.as_str());
    assert_eq!(e["status"], "running");
    assert_eq!(e["trials"]["completed"], 5);
    assert_eq!(e["trials"]["leased"], 1);
    assert_eq!(e["max_trials"], 8);
    let best = trained
        .iter()
        .cloned()
        .fold(("".to_string(), 0.0), |b, t| if t.1 > b.1 { t } else { b });
    assert_eq!(e["best_trial_id"], best.0.as_str());
    assert!((e["best_score"].as_f64().unwrap() - best.1).abs() < 1e-12);
    assert!((e["best_test_accuracy"].as_f64().unwrap() - (best.1 - 0.01)).abs() < 1e-12);
    let one = m.get(&format!("/api/v1/experiments/{experiment_id}")).await;
    assert_eq!(one.json()["id"], experiment_id.as_str());

    // Trial pages: total, paging, sorting, filtering.
    let base = format!("/api/v1/experiments/{experiment_id}/trials");
    let all = m.get(&format!("{base}?limit=500")).await.json();
    let total = all["total"].as_u64().unwrap();
    assert!(total >= 6, "{all}");
    assert_eq!(all["trials"].as_array().unwrap().len() as u64, total);
    let seqs: Vec<i64> = all["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "default order is seq descending: {seqs:?}"
    );
    let page = m
        .get(&format!("{base}?limit=2&offset=1&order=asc"))
        .await
        .json();
    let page_seqs: Vec<i64> = page["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["seq"].as_i64().unwrap())
        .collect();
    let mut ascending = seqs.clone();
    ascending.reverse();
    assert_eq!(page_seqs, ascending[1..3].to_vec());
    let by_score = m
        .get(&format!("{base}?sort=score&status=completed"))
        .await
        .json();
    assert_eq!(by_score["total"], 5);
    let scores: Vec<f64> = by_score["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["score"].as_f64().unwrap())
        .collect();
    let mut expected: Vec<f64> = trained.iter().map(|t| t.1).collect();
    expected.sort_by(|a, b| b.partial_cmp(a).unwrap());
    assert_eq!(scores, expected);
    // Sorted by status (by name) and by chain, ties by seq in the same direction.
    for (key, order) in [
        ("status", "asc"),
        ("status", "desc"),
        ("chain", "asc"),
        ("chain", "desc"),
    ] {
        let page = m
            .get(&format!("{base}?sort={key}&order={order}&limit=500"))
            .await;
        assert_eq!(page.status, 200, "sort={key}: {}", page.body);
        let page = page.json();
        assert_eq!(page["total"].as_u64(), Some(total), "{page}");
        let rows: Vec<(String, i64)> = page["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let k = match key {
                    "status" => t["status"].as_str().unwrap().to_string(),
                    _ => format!("{:03}", t["chain"].as_i64().unwrap()),
                };
                (k, t["seq"].as_i64().unwrap())
            })
            .collect();
        let mut sorted = rows.clone();
        sorted.sort();
        if order == "desc" {
            sorted.reverse();
        }
        assert_eq!(rows, sorted, "sort={key}&order={order}");
        let distinct: HashSet<&String> = rows.iter().map(|r| &r.0).collect();
        assert!(
            distinct.len() >= 2,
            "sort={key}: too few kinds to tell: {rows:?}"
        );
    }
    let high = m
        .get(&format!("{base}?min_score=0.75&objective=plain"))
        .await
        .json();
    assert_eq!(
        high["total"],
        trained.iter().filter(|t| t.1 >= 0.75).count()
    );
    let bounds = m
        .get(&format!("{base}?min_score=0&max_score=1&status=completed"))
        .await
        .json();
    assert_eq!(
        bounds["total"], 5,
        "the bounds 0 and 1 are in range: {bounds}"
    );
    for chain in [0, 1] {
        let page = m
            .get(&format!("{base}?chain={chain}&limit=500"))
            .await
            .json();
        assert!(page["trials"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["chain"] == chain));
    }
    let by_chain: u64 = [0, 1]
        .iter()
        .map(|c| {
            let total = all["trials"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["chain"] == *c)
                .count();
            total as u64
        })
        .sum();
    assert_eq!(by_chain, total, "every trial is on chain 0 or 1");

    // Bad input: 400 naming the parameter, 404 for unknown ids.
    for (query, needle) in [
        ("sort=fastest", "sort"),
        ("order=up", "order"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("offset=-1", "offset"),
        ("offset=1000", "offset 1000"),
        ("status=done", "status"),
        ("chain=x", "chain"),
        ("min_score=high", "min_score"),
        ("colour=red", "colour"),
        // Filters out of range: a clear 400, not an empty page.
        ("chain=2", "chain=2 is out of range"),
        ("chain=-1", "chain=-1 is out of range"),
        ("min_score=1.5", "min_score=1.5 is out of range"),
        ("max_score=-0.1", "max_score=-0.1 is out of range"),
        ("min_score=nan", "min_score=NaN is out of range"),
        ("max_score=inf", "max_score=inf is out of range"),
        ("min_score=-inf", "min_score=-inf is out of range"),
        ("min_score=0.9&max_score=0.1", "above max_score"),
        (
            "objective=elr",
            "objective=\"elr\" is not this experiment's",
        ),
    ] {
        let a = m.get(&format!("{base}?{query}")).await;
        assert_eq!(a.status, 400, "{query}: {}", a.body);
        assert_eq!(a.error_code(), "invalid_argument");
        let message = a.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{query}: {}", a.body);
    }
    let missing = m
        .get("/api/v1/experiments/exp-00000000000000000000000000000000")
        .await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (404, "not_found")
    );
    let missing = m
        .get("/api/v1/experiments/exp-00000000000000000000000000000000/trials")
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    let malformed = m.get("/api/v1/experiments/not-an-id").await;
    assert_eq!(
        (malformed.status, malformed.error_code().as_str()),
        (400, "invalid_argument")
    );
    let missing = m
        .get("/api/v1/trials/trial-00000000000000000000000000000000")
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(m.get("/api/v1/nothing").await.status, 404);

    // One trial: curve, genome, hyperparameters, lineage back to a seed.
    let child = all["trials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["parent_id"].is_string() && t["status"] == "completed")
        .expect("a completed child")
        .clone();
    let detail = m
        .get(&format!("/api/v1/trials/{}", child["id"].as_str().unwrap()))
        .await
        .json();
    let epochs = detail["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    assert_eq!(epochs[1]["epoch"], 2);
    assert!((epochs[0]["train_loss"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert!(
        detail["genome"]["blocks"].is_array(),
        "{}",
        detail["genome"]
    );
    assert!(
        detail["hparams"]["epochs"].is_u64(),
        "{}",
        detail["hparams"]
    );
    let lineage = detail["lineage"].as_array().unwrap();
    assert_eq!(lineage[0]["id"], child["parent_id"]);
    let root = lineage.last().unwrap()["id"].as_str().unwrap().to_string();
    let root = m.get(&format!("/api/v1/trials/{root}")).await.json();
    assert!(
        root["parent_id"].is_null(),
        "the lineage ends at a seed: {root}"
    );

    // The best-so-far curve rises and ends at the best score.
    let curve = m
        .get(&format!("/api/v1/experiments/{experiment_id}/best"))
        .await
        .json();
    assert_eq!(curve["finished"], 5);
    let points = curve["points"].as_array().unwrap();
    let curve_scores: Vec<f64> = points
        .iter()
        .map(|p| p["score"].as_f64().unwrap())
        .collect();
    assert!(
        curve_scores.windows(2).all(|w| w[0] < w[1]),
        "{curve_scores:?}"
    );
    let mut running_best = Vec::new();
    for (_, s) in &trained {
        if running_best.last().is_none_or(|b| s > b) {
            running_best.push(*s);
        }
    }
    assert_eq!(curve_scores, running_best);
    assert_eq!(points.last().unwrap()["trial_id"], best.0.as_str());

    // The genealogy holds the best trials and every ancestor, with score changes.
    let tree = m
        .get(&format!(
            "/api/v1/experiments/{experiment_id}/genealogy?limit=2"
        ))
        .await
        .json();
    let nodes = tree["nodes"].as_array().unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&best.0.as_str()));
    for n in nodes {
        if let Some(parent) = n["parent_id"].as_str() {
            assert!(ids.contains(&parent), "ancestor {parent} missing");
            if let (Some(s), Some(p)) = (n["score"].as_f64(), n["parent_score"].as_f64()) {
                assert!((n["delta"].as_f64().unwrap() - (s - p)).abs() < 1e-12);
            }
        }
    }
    let bad = m
        .get(&format!(
            "/api/v1/experiments/{experiment_id}/genealogy?limit=0"
        ))
        .await;
    assert_eq!(bad.status, 400);

    // Chains and their temperature history.
    let chains = m
        .get(&format!("/api/v1/experiments/{experiment_id}/chains"))
        .await
        .json();
    assert_eq!(chains["chains"].as_array().unwrap().len(), 2, "{chains}");
    assert!(chains["history"].as_array().unwrap().len() >= 6, "{chains}");

    // Workers and what they hold.
    let workers = m.get("/api/v1/workers").await.json();
    let w = &workers["workers"][0];
    assert_eq!(
        (w["id"].as_str().unwrap(), w["active"].as_bool().unwrap()),
        (worker_id.as_str(), true)
    );
    assert_eq!(w["trials"][0]["trial_id"], held.trial_id.as_str());

    // Writes need the token: without or with a wrong one, 401 and nothing changes.
    let stop = format!("/api/v1/experiments/{experiment_id}/stop");
    let refused = m.post(&stop, None).await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (401, "unauthenticated")
    );
    assert_eq!(m.post(&stop, Some("wrong")).await.status, 401);
    assert_eq!(
        m.get(&format!("/api/v1/experiments/{experiment_id}"))
            .await
            .json()["status"],
        "running"
    );
    let token = m.handle.token.clone();
    let stopped = m.post(&format!("{stop}?now=true"), Some(&token)).await;
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    let stopped = stopped.json();
    assert_eq!(stopped["status"], "stopped");
    // The answer says which trials the stop cancelled.
    let what = &stopped["stop"];
    assert_eq!(what["cancelled_held"], 1, "{stopped}");
    assert_eq!(
        what["cancelled_held_ids"],
        serde_json::json!([held.trial_id.as_str()]),
        "{stopped}"
    );
    assert_eq!(
        what["cancelled_queued_ids"].as_array().unwrap().len() as u64,
        what["cancelled_queued"].as_u64().unwrap(),
        "{stopped}"
    );
    assert_eq!(
        (what["finishing"].as_u64(), what["finishing_ids"].clone()),
        (Some(0), serde_json::json!([])),
        "{stopped}"
    );
    let held_now = m
        .get(&format!("/api/v1/trials/{}", held.trial_id))
        .await
        .json();
    assert_eq!(held_now["status"], "cancelled");
    assert!(
        held_now["error"].as_str().unwrap().contains("stopped"),
        "{held_now}"
    );
    let resume = format!("/api/v1/experiments/{experiment_id}/resume");
    // A resume without the token, or with a wrong one: 401, and the experiment stays stopped.
    let refused = m.post(&resume, None).await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (401, "unauthenticated")
    );
    assert_eq!(m.post(&resume, Some("wrong")).await.status, 401);
    let still = m
        .get(&format!("/api/v1/experiments/{experiment_id}"))
        .await
        .json();
    assert_eq!(still["status"], "stopped", "{still}");
    assert_eq!(still["trials"]["queued"], 0, "{still}");
    let resumed = m.post(&resume, Some(&token)).await;
    assert_eq!(
        (resumed.status, resumed.json()["status"].as_str().unwrap()),
        (200, "running")
    );
    let again = m.post(&resume, Some(&token)).await;
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (409, "failed_precondition")
    );

    // Metrics reflect the pool and the calls.
    let metrics = m.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .content_type
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        metrics.content_type
    );
    let text = metrics.body;
    assert!(
        text.contains(&format!(
            "explore_trials{{experiment=\"{experiment_id}\",status=\"completed\"}} 5"
        )),
        "{text}"
    );
    assert!(
        text.contains("explore_rpc_duration_seconds_count{method=\"Complete\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("explore_rpc_duration_seconds_count{method=\"Heartbeat\"} 10"),
        "{text}"
    );
    assert!(text.contains("explore_refused_calls_total 4"), "{text}");
    assert!(text.contains("explore_connected_workers 1"), "{text}");
    assert!(
        text.contains("explore_trial_duration_seconds_count{status=\"completed\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("explore_trial_duration_seconds_count{status=\"cancelled\"} 1"),
        "the trial stop --now cancelled: {text}"
    );
    assert!(
        text.contains(&format!(
            "explore_best_score{{experiment=\"{experiment_id}\",name=\"http\"}} {}",
            best.1
        )),
        "{text}"
    );
    promtool_check(&text);

    within(m.handle.shutdown()).await.unwrap();
}

/// `promtool check metrics` on the real output. CI installs Debian's `prometheus`
/// (scripts/setup-test-tools.sh), so there it must run; elsewhere a missing promtool skips
/// this check with a message.
fn promtool_check(text: &str) {
    use std::io::Write;
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("EXPLORE_REQUIRE_DATA").is_some();
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if !required => {
            eprintln!("skipping promtool check: promtool not runnable ({e}); scripts/setup-test-tools.sh installs it");
            return;
        }
        Err(e) => panic!("promtool is required here but not runnable: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}"
    );
    assert!(report.trim().is_empty(), "promtool has remarks:\n{report}");
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_and_the_edge_closes_on_shutdown() {
    let m = Master::start().await;
    let page = m.get("/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(page.body.contains("/assets/app.js"), "{}", page.body);
    let js = m.get("/assets/app.js").await;
    assert_eq!(js.status, 200);
    assert!(js.content_type.starts_with("text/javascript"));
    assert_eq!(m.get("/assets/other.js").await.status, 404);
    let http = m.http;
    within(m.handle.shutdown()).await.unwrap();
    let closed = tokio::net::TcpStream::connect(http).await;
    assert!(
        closed.is_err(),
        "the http edge still accepts connections after shutdown"
    );
}
