//! Helpers for the end-to-end tests: locate the built `master` and `worker` binaries, run them
//! as child processes on loopback, and kill them when a test ends (even when it fails).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod http;
pub mod manifest;
pub mod pool;
pub mod proxy;
pub mod s3;

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

/// Fails with an install hint when MNIST is not where `scripts/setup.sh` installs it
/// (`$EXPLORE_DATA_DIR/mnist`, else `$EXPLORE_CACHE/data/mnist`, else `~/.cache/explore/data/mnist`).
pub fn require_mnist() {
    let dir = if let Some(d) = std::env::var_os("EXPLORE_DATA_DIR").filter(|d| !d.is_empty()) {
        PathBuf::from(d)
    } else if let Some(c) = std::env::var_os("EXPLORE_CACHE").filter(|d| !d.is_empty()) {
        PathBuf::from(c).join("data")
    } else {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
            .join(".cache/explore/data")
    };
    let file = dir.join("mnist/train-images-idx3-ubyte.gz");
    assert!(
        file.exists(),
        "{} is missing: install it with `bash scripts/setup.sh`",
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

    /// Sends SIGKILL (no chance to clean up) and reaps the process.
    pub fn kill_hard(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill().context("cannot SIGKILL")?;
        }
        self.child.wait()?;
        Ok(())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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

/// The variable naming the PostgreSQL server tests may use (a `postgres://` URL to a database
/// where they may create databases; `scripts/test.sh` starts a private one).
pub const PG_URL_VAR: &str = "EXPLORE_TEST_PG_URL";
/// Set (as in CI): a test that needs PostgreSQL fails instead of skipping without it.
pub const PG_REQUIRE_VAR: &str = "EXPLORE_REQUIRE_PG";
/// `postgres` moves every master the harness starts onto PostgreSQL (a fresh database per data
/// directory on the `EXPLORE_TEST_PG_URL` server): the same end-to-end and fault tests, on the
/// other backend. Unset or `sqlite`: the embedded pool.
pub const E2E_DB_VAR: &str = "EXPLORE_E2E_DB";

/// The PostgreSQL server tests may use, or None after saying why `test` skips (a failure when
/// `EXPLORE_REQUIRE_PG` is set).
pub fn pg_server(test: &str) -> Option<String> {
    match std::env::var(PG_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os(PG_REQUIRE_VAR).is_none(),
                "{test}: {PG_REQUIRE_VAR} is set but {PG_URL_VAR} is not"
            );
            eprintln!("skipping {test}: {PG_URL_VAR} is not set (scripts/test.sh starts a server)");
            None
        }
    }
}

/// Creates a fresh, empty database on the server `server_url` names and returns its URL.
pub fn fresh_pg_database(server_url: &str) -> Result<String> {
    use sqlx::Connection;
    let name = format!("e2e_{:016x}", rand_u64());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(server_url)
            .await
            .with_context(|| format!("connecting to {PG_URL_VAR}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .context("creating a test database")?;
        admin.close().await.ok();
        anyhow::Ok(())
    })?;
    with_database(server_url, &name)
}

/// `url` with its database (the path) replaced by `name`, query string kept.
pub fn with_database(url: &str, name: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = base
        .split_once("://")
        .context("a database URL has a scheme")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    Ok(match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    })
}

/// With `EXPLORE_E2E_DB=postgres`, the database of the master on `data_dir`: created on first
/// use and remembered in `<data_dir>.pgdb`, so that a restarted or second master on the same
/// directory finds the same pool. None on SQLite.
fn e2e_database_for(data_dir: &Path) -> Result<Option<String>> {
    match std::env::var(E2E_DB_VAR).as_deref() {
        Ok("postgres") => {}
        Ok("sqlite") | Ok("") | Err(_) => return Ok(None),
        Ok(other) => bail!("{E2E_DB_VAR}={other}: expected sqlite or postgres"),
    }
    let file = data_dir.with_extension("pgdb");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Ok(Some(url));
    }
    let server = std::env::var(PG_URL_VAR)
        .with_context(|| format!("{E2E_DB_VAR}=postgres needs {PG_URL_VAR}"))?;
    let url = fresh_pg_database(&server)?;
    std::fs::write(&file, &url)?;
    Ok(Some(url))
}

/// A random 64-bit number (database names), from the OS's hasher seed and the clock.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// The trials of a `trials_json` listing in `status`.
pub fn with_status<'a>(
    trials: &'a [serde_json::Value],
    status: &str,
) -> Vec<&'a serde_json::Value> {
    trials.iter().filter(|t| t["status"] == status).collect()
}

/// Two loopback addresses nothing listens on now: bound together (so they differ), then
/// released, for masters started later on known addresses.
pub fn reserve_two_ports() -> Result<(String, String)> {
    let a = std::net::TcpListener::bind("127.0.0.1:0")?;
    let b = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.to_string(), b.local_addr()?.to_string()))
}

/// A master started on a free loopback port with its own data directory.
pub struct MasterProc {
    pub proc: Proc,
    pub url: String,
    pub data_dir: PathBuf,
    /// The bound address; a restart binds it again.
    pub addr: SocketAddr,
    /// Where its stderr goes (`<data_dir>.master.log`); restarts append to it.
    pub log: PathBuf,
    /// Restart attempts that found the port still taken.
    pub bind_retries: u32,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

/// Starts `master serve --listen LISTEN` and returns it with the address it printed, or the
/// reason it exited (e.g. `cannot listen`).
fn spawn_master(
    data_dir: &Path,
    listen: &str,
    extra: &[String],
    env: &[(String, String)],
    log: &Path,
    append: bool,
) -> Result<(Proc, SocketAddr)> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(log)?;
    let mut child = Command::new(binary("master"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
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
    let mut proc = Proc {
        name: "master".into(),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(addr) => return Ok((proc, addr.parse().context("master printed a bad address")?)),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(50))
            }
        }
        if let Some(status) = proc.child.try_wait()? {
            bail!(
                "master exited with {status} before listening (see {})",
                log.display()
            );
        }
        if Instant::now() > deadline {
            bail!("master did not report its address within 60 s");
        }
    }
}

impl MasterProc {
    /// Starts `master serve` and waits until it prints its address.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Result<MasterProc> {
        Self::launch(data_dir, "127.0.0.1:0", extra, &[], false)
    }

    /// Starts `master serve` like [`MasterProc::start`], with `env` added to its environment
    /// (restarts keep it).
    pub fn start_with_env(
        data_dir: &Path,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Result<MasterProc> {
        Self::launch(data_dir, "127.0.0.1:0", extra, env, false)
    }

    /// Starts `master serve --listen LISTEN` on `data_dir` (e.g. a second master taking over a
    /// killed one's data directory on an address reserved earlier) and waits until it prints
    /// its address. Its log is appended to `<data_dir>.master.log`, after any earlier master's.
    pub fn start_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Result<MasterProc> {
        Self::launch(data_dir, listen, extra, &[], true)
    }

    fn launch(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(String, String)],
        append: bool,
    ) -> Result<MasterProc> {
        let log = data_dir.with_extension("master.log");
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !extra.iter().any(|a| a == "--db") {
            if let Some(url) = e2e_database_for(data_dir)? {
                extra.extend(["--db".to_string(), url]);
            }
        }
        let (proc, addr) = spawn_master(data_dir, listen, &extra, env, &log, append)?;
        Ok(MasterProc {
            proc,
            url: format!("http://{addr}"),
            data_dir: data_dir.to_path_buf(),
            addr,
            log,
            bind_retries: 0,
            extra,
            env: env.to_vec(),
        })
    }

    /// Kills the master with SIGKILL (no drain, no clean shutdown of the store).
    pub fn kill(&mut self) -> Result<()> {
        self.proc.kill_hard()
    }

    /// Starts the master again on the same address and data directory (after [`kill`] or a
    /// crash; a master still running is killed first). Binding is retried for up to
    /// `bind_timeout` while the port is not free yet.
    ///
    /// [`kill`]: MasterProc::kill
    pub fn restart(&mut self, bind_timeout: Duration) -> Result<()> {
        self.proc.kill_hard()?;
        let listen = self.addr.to_string();
        let deadline = Instant::now() + bind_timeout;
        loop {
            match spawn_master(
                &self.data_dir,
                &listen,
                &self.extra,
                &self.env,
                &self.log,
                true,
            ) {
                Ok((proc, addr)) => {
                    assert_eq!(addr, self.addr, "a restarted master binds the same address");
                    self.proc = proc;
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline && e.to_string().contains("exited") => {
                    self.bind_retries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `master trials EXP --json` on this master: one JSON object per trial.
    pub fn trials_json(&self, experiment: &str) -> Result<Vec<serde_json::Value>> {
        let out = self.client(&["trials", experiment, "--json"])?;
        if !out.status.success() {
            bail!("master trials failed: {}", describe(&out));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).context("one JSON object per line"))
            .collect()
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

/// Starts `n` workers `w0..` against `master`, logging to `dir/worker{i}.log`.
pub fn start_workers(master: &MasterProc, dir: &Path, n: usize) -> Result<Vec<Proc>> {
    (0..n)
        .map(|i| {
            start_worker(
                master,
                &format!("w{i}"),
                &dir.join(format!("worker{i}.log")),
                &[],
            )
        })
        .collect()
}

/// The experiment id that `master submit` printed.
pub fn submitted_experiment_id(submit_stdout: &str) -> Option<String> {
    submit_stdout
        .lines()
        .find_map(|l| l.strip_prefix("submitted experiment "))
        .map(|id| id.trim().to_string())
}

/// Submits the spec text with `master submit --watch` (so it returns when the experiment has
/// ended) and returns the experiment id and `master trials --json`, one object per trial.
pub fn submit_and_list_trials(
    master: &MasterProc,
    dir: &Path,
    spec: &str,
) -> Result<(String, Vec<serde_json::Value>)> {
    let spec_path = dir.join("spec.toml");
    std::fs::write(&spec_path, spec)?;
    let submit = master.client(&["submit", &spec_path.to_string_lossy(), "--watch"])?;
    if !submit.status.success() {
        bail!("submit failed: {}", describe(&submit));
    }
    let experiment_id = submitted_experiment_id(&String::from_utf8_lossy(&submit.stdout))
        .with_context(|| format!("no experiment id printed: {}", describe(&submit)))?;
    let listing = master.client(&["trials", &experiment_id, "--json"])?;
    if !listing.status.success() {
        bail!("master trials failed: {}", describe(&listing));
    }
    let trials = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).context("one JSON object per line"))
        .collect::<Result<_>>()?;
    Ok((experiment_id, trials))
}

/// The split a test experiment trains on, as `worker evaluate` flags take it.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pub train_subset: u32,
    pub test_subset: u32,
    pub validation_fraction: f64,
    pub seed: u64,
}

/// Re-scores an export of `master best --export` with `worker evaluate` on Fashion-MNIST:
/// returns the export's model card (`model.json`) and the `(validation, test)` accuracies the
/// exported weights reach on `split`.
pub fn rescore_export(export_dir: &Path, split: Split) -> Result<(serde_json::Value, f64, f64)> {
    let (train, test, fraction, seed) = (
        split.train_subset.to_string(),
        split.test_subset.to_string(),
        split.validation_fraction.to_string(),
        split.seed.to_string(),
    );
    rescore_export_on(
        export_dir,
        &[
            "--data-dir",
            FASHION_MNIST_DIR,
            "--train-subset",
            &train,
            "--test-subset",
            &test,
            "--validation-fraction",
            &fraction,
            "--split-seed",
            &seed,
        ],
    )
}

/// Re-scores an export like [`rescore_export`] on the data `data_args` (flags of `worker
/// evaluate`, e.g. `--data-config FILE --split-seed N`) name. Fails when `worker evaluate`'s
/// stderr (a pipe here) carries colour escape codes.
pub fn rescore_export_on(
    export_dir: &Path,
    data_args: &[&str],
) -> Result<(serde_json::Value, f64, f64)> {
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(export_dir.join("model.json"))?)?;
    let genome = export_dir.join("genome.json");
    let weights = export_dir.join("weights.safetensors");
    let mut args = vec![
        "evaluate",
        "--genome",
        genome.to_str().context("export path is not UTF-8")?,
        "--checkpoint",
        weights.to_str().context("export path is not UTF-8")?,
        "--device",
        "cpu",
    ];
    args.extend_from_slice(data_args);
    // Its stderr is a pipe here: the log lines must be plain even without NO_COLOR.
    let eval = Command::new(binary("worker"))
        .env_remove("NO_COLOR")
        .env_remove("EXPLORE_LOG_FORMAT")
        .args(&args)
        .output()
        .context("cannot run worker evaluate")?;
    if !eval.status.success() {
        bail!("worker evaluate failed: {}", describe(&eval));
    }
    if String::from_utf8_lossy(&eval.stderr).contains("\x1b[") {
        bail!(
            "worker evaluate's stderr carries colour escape codes in a pipe: {}",
            describe(&eval)
        );
    }
    let scores: serde_json::Value = serde_json::from_slice(&eval.stdout)?;
    let score = |key: &str| {
        scores[key]
            .as_f64()
            .with_context(|| format!("no {key} in {scores}"))
    };
    Ok((card, score("val_accuracy")?, score("test_accuracy")?))
}

/// Starts `worker join` against `master`; its log goes to `log`.
pub fn start_worker(master: &MasterProc, name: &str, log: &Path, extra: &[&str]) -> Result<Proc> {
    start_worker_at(&master.url, &master.token_file(), name, log, extra)
}

/// Starts `worker join --master URL` (e.g. through a proxy); its log goes to `log`.
pub fn start_worker_at(
    url: &str,
    token_file: &Path,
    name: &str,
    log: &Path,
    extra: &[&str],
) -> Result<Proc> {
    start_worker_with_env(url, token_file, name, log, extra, &[])
}

/// Starts `worker join --master URL` like [`start_worker_at`], with `env` added to its
/// environment.
pub fn start_worker_with_env(
    url: &str,
    token_file: &Path,
    name: &str,
    log: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<Proc> {
    let log = std::fs::File::create(log)?;
    let child = Command::new(binary("worker"))
        .envs(env.iter().copied())
        .args(["join", "--master", url, "--token-file"])
        .arg(token_file)
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

/// A log file's text with terminal colour codes removed (empty when it does not exist yet).
pub fn read_log(path: &Path) -> String {
    let raw = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            // CSI sequence: ESC [ parameters final-byte.
            chars.next();
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Calls `check` every `every` until it returns `Ok(Some(_))`; fails on its first error, or
/// after `timeout` naming `what`.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}
