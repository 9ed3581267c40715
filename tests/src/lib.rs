//! Helpers for the end-to-end tests: locate the built `master` and `worker` binaries, run them
//! as child processes on loopback, and kill them when a test ends (even when it fails).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Where Fashion-MNIST is installed by Debian's `dataset-fashion-mnist`.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The directory holding the workspace's binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("EXPLORE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_path_buf()
}

/// Path of a workspace binary; fails with a hint when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`) or set EXPLORE_BIN_DIR",
        path.display()
    );
    path
}

/// Fails with an install hint when Fashion-MNIST is not installed.
pub fn require_fashion_mnist() {
    let file = Path::new(FASHION_MNIST_DIR).join("train-images-idx3-ubyte.gz");
    assert!(
        file.exists(),
        "{} is missing: install it with `apt-get install dataset-fashion-mnist` (scripts/test.sh does)",
        file.display()
    );
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                bail!("{} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A master started on a free loopback port with its own data directory.
pub struct MasterProc {
    pub proc: Proc,
    pub url: String,
    pub data_dir: PathBuf,
}

impl MasterProc {
    /// Starts `master serve` and waits until it prints its address.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Result<MasterProc> {
        let log = std::fs::File::create(data_dir.with_extension("master.log"))?;
        let mut child = Command::new(binary("master"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start master")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("master listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let proc = Proc {
            name: "master".into(),
            child,
        };
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .context("master did not report its address within 60 s")?;
        Ok(MasterProc {
            proc,
            url: format!("http://{addr}"),
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The token file the master created.
    pub fn token_file(&self) -> PathBuf {
        self.data_dir.join("token")
    }

    /// Runs a `master` client subcommand against this master and returns its output.
    pub fn client(&self, args: &[&str]) -> Result<Output> {
        let output = Command::new(binary("master"))
            .args(args)
            .args(["--master", &self.url, "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .context("cannot run master client command")?;
        Ok(output)
    }
}

/// Starts `worker join` against `master`; its log goes to `log`.
pub fn start_worker(master: &MasterProc, name: &str, log: &Path, extra: &[&str]) -> Result<Proc> {
    let log = std::fs::File::create(log)?;
    let child = Command::new(binary("worker"))
        .args(["join", "--master", &master.url, "--token-file"])
        .arg(master.token_file())
        .args([
            "--name",
            name,
            "--device",
            "cpu",
            "--threads",
            "1",
            "--data-dir",
            FASHION_MNIST_DIR,
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .context("cannot start worker")?;
    Ok(Proc {
        name: name.to_string(),
        child,
    })
}

/// Runs a command to completion and returns its output.
pub fn run(program: &Path, args: &[&str]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", program.display()))
}

/// Stdout and stderr of an output, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
