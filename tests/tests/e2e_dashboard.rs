//! The web dashboard in a real browser: a real master with `--http-listen`, two real workers
//! training a small Fashion-MNIST experiment, and `tests/browser/check_dashboard.py` driving
//! Debian's headless Chromium through Selenium against the dashboard. The script checks the
//! experiment row, the charts, the genealogy, the trial table against the JSON API, a trial's
//! learning curve, a refused Stop (wrong token) and a Stop now with the token; its screenshots
//! are kept under `target/test-artifacts/dashboard/`.
//!
//! Chromium, ChromeDriver and the Selenium venv come from `scripts/setup-test-tools.sh`. Without
//! them the test says so and passes, unless `CI` or `EXPLORE_REQUIRE_BROWSER` is set: then it
//! fails.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use explore_tests::{
    bin_dir, binary, describe, http, poll, read_log, require_fashion_mnist, start_worker_at,
    submitted_experiment_id, Proc,
};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Small enough for a trial to take seconds on one CPU thread, with budgets far beyond what the
/// test waits for: the browser check stops the experiment itself ("Stop now").
fn spec() -> String {
    let hparams = |lr: f64| {
        format!(
            "hparams = {{ optimizer = \"adamw\", learning_rate = {lr}, schedule = \"constant\", \
             batch_size = 64, weight_decay = 0.0001, epochs = 2 }}"
        )
    };
    format!(
        r#"
name = "e2e-dashboard"
seed = 7

[budget]
max_trials = 200
max_wall_seconds = 900

[data]
dataset = "fashion-mnist"
train_subset = 1000
test_subset = 200
validation_fraction = 0.2

[annealing]
chains = 2

[inheritance]
enabled = true
fine_tune_epochs = 2

[search]
epochs = [2, 2]
channels = [8, 16]
dense_units = [32, 64]
batch_sizes = [64]

[[seeds]]
preset = "cnn2"
{}

[[seeds]]
preset = "cnn2"
{}
"#,
        hparams(0.003),
        hparams(0.001)
    )
}

/// The Selenium venv's python, or why the browser test cannot run here.
fn browser_python() -> std::result::Result<PathBuf, String> {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(tool).exists() {
            return Err(format!("{tool} is missing"));
        }
    }
    let cache = std::env::var_os("EXPLORE_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
                .join(".cache/explore")
        });
    let python = cache.join("test-venv/bin/python");
    let imports = Command::new(&python)
        .args(["-c", "import selenium"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match imports {
        Ok(status) if status.success() => Ok(python),
        _ => Err(format!("{} cannot import selenium", python.display())),
    }
}

/// Whether a missing browser must fail the test rather than skip it.
fn browser_required() -> bool {
    ["CI", "EXPLORE_REQUIRE_BROWSER"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty() && s != "0" && s != "false"))
}

/// A master started with `--http-listen 127.0.0.1:0`, with both addresses it printed.
struct Master {
    /// Killed when the test ends.
    _proc: Proc,
    grpc_url: String,
    http: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
}

fn start_master(data_dir: &Path) -> Result<Master> {
    let log = data_dir.with_extension("master.log");
    let mut child = Command::new(binary("master"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--heartbeat-secs", "1", "--lease-secs", "20", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log)?))
        .spawn()
        .context("cannot start master")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            for (prefix, kind) in [
                ("master listening on ", "grpc"),
                ("http listening on ", "http"),
            ] {
                if let Some(rest) = line.strip_prefix(prefix) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send((kind, addr));
                }
            }
        }
    });
    let mut proc = Proc {
        name: "master".into(),
        child,
    };
    let (mut grpc, mut http) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while grpc.is_none() || http.is_none() {
        if let Ok((kind, addr)) = rx.recv_timeout(Duration::from_millis(100)) {
            let addr: SocketAddr = addr.parse().context("master printed a bad address")?;
            if kind == "grpc" {
                grpc = Some(addr);
            } else {
                http = Some(addr);
            }
        }
        if let Some(status) = proc.child.try_wait()? {
            bail!("master exited with {status}: {}", read_log(&log));
        }
        if Instant::now() > deadline {
            bail!(
                "master did not print both addresses within 60 s (gRPC {grpc:?}, HTTP {http:?}): {}",
                read_log(&log)
            );
        }
    }
    Ok(Master {
        _proc: proc,
        grpc_url: format!("http://{}", grpc.unwrap()),
        http: http.unwrap(),
        data_dir: data_dir.to_path_buf(),
        log,
    })
}

fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value> {
    let (status, body) = http::get(addr, path)?;
    if status != 200 {
        bail!("GET {path}: {status} {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
}

#[test]
fn the_dashboard_shows_a_live_experiment_in_a_real_browser() {
    let python = match browser_python() {
        Ok(python) => python,
        Err(why) if browser_required() => panic!(
            "the dashboard browser test cannot run: {why}; install the tools with \
             `bash scripts/setup-test-tools.sh`"
        ),
        Err(why) => {
            // Straight to stderr, past the test harness's capture, so `cargo test` shows it.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED the dashboard browser test: {why}. Install the tools with `bash \
                 scripts/setup-test-tools.sh` (set EXPLORE_REQUIRE_BROWSER=1 to fail instead)."
            );
            return;
        }
    };
    require_fashion_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = bin_dir()
        .parent()
        .expect("the target directory")
        .join("test-artifacts/dashboard");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();

    let master = start_master(&tmp.path().join("master")).unwrap();
    let token = master.data_dir.join("token");
    let _workers: Vec<Proc> = (0..2)
        .map(|i| {
            let log = tmp.path().join(format!("worker{i}.log"));
            start_worker_at(&master.grpc_url, &token, &format!("w{i}"), &log, &[]).unwrap()
        })
        .collect();
    let logs = || {
        let mut all = format!("--- master\n{}", read_log(&master.log));
        for i in 0..2 {
            let log = tmp.path().join(format!("worker{i}.log"));
            all += &format!("--- worker{i}\n{}", read_log(&log));
        }
        all
    };

    // The page and its assets come from the binary.
    let (status, page) = http::get(master.http, "/").unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("/assets/app.js"), "{page}");
    for asset in ["/assets/app.js", "/assets/app.css"] {
        assert_eq!(http::get(master.http, asset).unwrap().0, 200, "{asset}");
    }

    let spec_path = tmp.path().join("spec.toml");
    std::fs::write(&spec_path, spec()).unwrap();
    let submit = Command::new(binary("master"))
        .arg("submit")
        .arg(&spec_path)
        .args(["--master", &master.grpc_url, "--data-dir"])
        .arg(&master.data_dir)
        .output()
        .unwrap();
    assert!(submit.status.success(), "{}", describe(&submit));
    let experiment = submitted_experiment_id(&String::from_utf8_lossy(&submit.stdout))
        .unwrap_or_else(|| panic!("no experiment id printed: {}", describe(&submit)));

    // Wait for a few finished trials (with their epochs, lineage and a best score).
    let path = format!("/api/v1/experiments/{experiment}");
    poll(
        "three completed trials",
        Duration::from_secs(300),
        Duration::from_millis(500),
        || {
            let e = get_json(master.http, &path)?;
            if e["status"] != "running" {
                bail!(
                    "the experiment is {} before the browser check: {e}",
                    e["status"]
                );
            }
            Ok((e["trials"]["completed"].as_u64().unwrap_or(0) >= 3).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/check_dashboard.py");
    let out_path = artifacts.join("check_dashboard.log");
    let out = std::fs::File::create(&out_path).unwrap();
    let child = Command::new(&python)
        .arg(&script)
        .args(["--url", &format!("http://{}", master.http)])
        .args(["--experiment", &experiment])
        .arg("--screenshot")
        .arg(artifacts.join("dashboard.png"))
        .arg("--token-file")
        .arg(&token)
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    let mut check = Proc {
        name: "check_dashboard.py".into(),
        child,
    };
    let status = check.wait_timeout(Duration::from_secs(480));
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("{output}");
    std::fs::write(artifacts.join("master.log"), read_log(&master.log)).unwrap();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "the dashboard check failed ({s}); screenshots in {}:\n{output}\n{}",
            artifacts.display(),
            logs()
        ),
        Err(e) => panic!("{e}:\n{output}"),
    }
    assert!(
        artifacts.join("dashboard.png").exists(),
        "no screenshot in {}",
        artifacts.display()
    );

    // The browser's "Stop now" (with the token from the dialog) stopped the experiment.
    let e = get_json(master.http, &path).unwrap();
    assert_eq!(e["status"], "stopped", "{e}\n{output}");
}
