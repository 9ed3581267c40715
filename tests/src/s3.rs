//! A throwaway S3-compatible server for the object-storage tests: moto's standalone server
//! (`moto_server`, installed by scripts/setup-test-tools.sh into its own venv), on a free loopback
//! port, with one empty bucket. It is killed when the handle drops. Requests to it are plain
//! unsigned HTTP (`crate::http`): moto does not check signatures.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{http, Proc};

/// Set (as in CI) to make the object-storage tests fail instead of skipping when no
/// `moto_server` is installed.
pub const S3_REQUIRE_VAR: &str = "EXPLORE_REQUIRE_S3";

/// A running S3-compatible server with one bucket.
pub struct S3Server {
    _proc: Proc,
    /// The server's loopback address.
    pub addr: SocketAddr,
    /// The bucket created for the test.
    pub bucket: String,
}

/// Where setup-test-tools.sh installs `moto_server`.
pub fn moto_server_path() -> PathBuf {
    let cache = std::env::var_os("EXPLORE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/explore")
        });
    cache.join("s3-venv/bin/moto_server")
}

impl S3Server {
    /// Starts a server with an empty bucket `bucket`, or None after saying why `test` skips
    /// (a failure when [`S3_REQUIRE_VAR`] is set).
    pub fn start(test: &str, bucket: &str) -> Option<S3Server> {
        let path = moto_server_path();
        if !path.is_file() {
            assert!(
                std::env::var_os(S3_REQUIRE_VAR).is_none(),
                "{test}: {S3_REQUIRE_VAR} is set but {} is missing (bash scripts/setup-test-tools.sh)",
                path.display()
            );
            eprintln!(
                "skipping {test}: no S3-compatible server at {} (bash scripts/setup-test-tools.sh installs one)",
                path.display()
            );
            return None;
        }
        Some(Self::launch(&path, bucket).expect("starting moto_server"))
    }

    fn launch(path: &PathBuf, bucket: &str) -> Result<S3Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let mut proc = Proc {
            name: "moto_server".into(),
            child,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((status, body)) = http::request(addr, "PUT", &format!("/{bucket}")) {
                if status == 200 {
                    break;
                }
                bail!("creating bucket {bucket}: {status} {body}");
            }
            if let Some(status) = proc.child.try_wait()? {
                bail!("moto_server exited with {status} before answering");
            }
            if Instant::now() > deadline {
                bail!("moto_server did not answer within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(S3Server {
            _proc: proc,
            addr,
            bucket: bucket.to_string(),
        })
    }

    /// The environment a client of this server needs (object_store's and the AWS SDKs'
    /// variables; moto accepts any credentials).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", format!("http://{}", self.addr)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "explore-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "explore-test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The keys of every object under `prefix`, from the server's own listing.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let (status, body) = http::get(
            self.addr,
            &format!("/{}?list-type=2&max-keys=1000&prefix={prefix}", self.bucket),
        )?;
        if status != 200 {
            bail!("listing {prefix}: {status} {body}");
        }
        if body.contains("<IsTruncated>true</IsTruncated>") {
            bail!("more than 1000 objects under {prefix}");
        }
        Ok(body
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(str::to_string)
            .collect())
    }
}
