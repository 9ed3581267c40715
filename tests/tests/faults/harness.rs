//! The fault suite's shared harness: a real `master` and real `worker` processes on loopback
//! (one of them optionally behind a pausable proxy), an experiment on a Fashion-MNIST subset,
//! helpers that inject faults and record them, and the books every scenario ends with.
//!
//! The books (see [`Cluster::finish`]) check what a lost trial or a double-counted result would
//! corrupt, not what the schema already guarantees: every budgeted trial completed, each chain's
//! result count, accepted count, current model and best score as its completed trials imply,
//! the best trial and the epoch total as the pool implies, late results in neither, every
//! checkpoint present and hashing to its address, and every lease expiry the master logged
//! caused by an injected fault (and every lease a fault took away expired).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use explore_common::client::{admin_client, connect, worker_client, AuthChannel, BearerToken};
use explore_common::proto::admin_service_client::AdminServiceClient;
use explore_common::proto::worker_service_client::WorkerServiceClient;
use explore_common::proto::{self, PROTOCOL_VERSION};
use explore_tests::pool::PoolDb;
use explore_tests::proxy::Proxy;
use explore_tests::{
    poll, read_log, require_fashion_mnist, start_worker, start_worker_with_env, MasterProc, Proc,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::Code;

pub const HEARTBEAT_SECS: u64 = 1;
pub const LEASE_SECS: u64 = 4;
pub const LEASE: Duration = Duration::from_secs(LEASE_SECS);
/// Epochs of every trial (the search space allows no other).
pub const EPOCHS: u32 = 2;
/// `annealing.reheat_after` of the spec, which the chain books replay.
const REHEAT_AFTER: i64 = 6;
/// Hard bound on one scenario.
const SCENARIO_LIMIT: Duration = Duration::from_secs(240);
pub const TICK: Duration = Duration::from_millis(50);

/// One scenario's cluster.
pub struct Config {
    /// The scenario's name: its logs and report are named after it.
    pub name: &'static str,
    pub max_trials: u32,
    /// Workers `w0..` connected straight to the master.
    pub direct_workers: usize,
    /// One more worker, `wp`, connected through the proxy.
    pub proxied_worker: bool,
    /// `EXPLORE_KEEPALIVE_SECS` of the proxied worker (HTTP/2 keepalive interval and timeout).
    pub proxied_keepalive_secs: Option<u64>,
    /// Register a fake worker through the API before submitting, so that it takes the first
    /// trial and abandons it (its lease expires): a superseded attempt to replay.
    pub abandoned_lease: bool,
}

fn spec(max_trials: u32) -> String {
    format!(
        r#"
name = "faults"
seed = 23

[budget]
max_trials = {max_trials}

[data]
dataset = "fashion-mnist"
train_subset = 500
test_subset = 100
validation_fraction = 0.2

# Every trial must complete here: the suite counts a trial that did not as lost. Pruning is an
# intended early end, covered by e2e_search.rs.
[early_stopping]
rule = "none"

[annealing]
chains = 2
reheat_after = {REHEAT_AFTER}

[search]
epochs = [{EPOCHS}, {EPOCHS}]
channels = [8, 16]
dense_units = [32, 64]
batch_sizes = [64, 128]

[[seeds]]
preset = "cnn2"
hparams = {{ optimizer = "adamw", learning_rate = 0.003, schedule = "one_cycle", batch_size = 64, weight_decay = 0.0001, epochs = {EPOCHS} }}
"#
    )
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn is_held(status: &str) -> bool {
    status == "leased" || status == "running"
}

/// Whether a status was made on this side from a broken connection rather than sent by the
/// master.
fn is_transport(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) || std::error::Error::source(s).is_some()
}

pub struct Worker {
    pub name: String,
    pub proc: Proc,
    pub log: PathBuf,
    pub id: String,
}

/// One bad call and how it was answered.
pub struct BadInput {
    pub name: String,
    pub expected: Code,
    pub got: Result<(), Code>,
}

/// A held attempt: `(trial, attempt, worker)`.
pub type Attempt = (String, u32, String);

#[derive(Default)]
pub struct Report {
    pub faults: BTreeMap<&'static str, u32>,
    pub moments: Vec<String>,
    /// Attempts a fault took away from their worker: each lease must expire (and no other),
    /// and each is a late completion to replay.
    pub superseded: Vec<Attempt>,
    /// Attempts in flight when the master went down: the downtime must cost none of them its
    /// lease, so each trial ends completed with this very attempt.
    pub kept: Vec<Attempt>,
    pub bad_inputs: Vec<BadInput>,
    pub unauthenticated_sent: u32,
    pub duplicate_replays: u32,
    pub late_replays: u32,
    /// Replays answered or recorded other than they should have been.
    pub replay_violations: Vec<String>,
    /// Scenario-specific figures for the report.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A `chains` row's books: `(chain, current_trial_id, best_score, since_improvement, results,
/// accepted, reheats)`.
type ChainBooks = (i64, Option<String>, Option<f64>, i64, i64, i64, i64);

/// Every table's rows as text (each column as SQL would write it), table by table.
pub type Dump = explore_tests::pool::Dump;

pub struct Cluster {
    pub cfg: Config,
    pub rt: tokio::runtime::Runtime,
    pub tmp: tempfile::TempDir,
    pub master: MasterProc,
    pub proxy: Option<Proxy>,
    pub token: String,
    pub workers: Vec<Worker>,
    pub experiment_id: String,
    admin: RefCell<Option<AdminServiceClient<AuthChannel>>>,
    pub started: Instant,
    pub report: Report,
}

/// Runs one scenario: starts its cluster, submits the experiment, runs `inject` (the faults),
/// waits for the experiment to end and checks the books. Panics with the logs' tails on
/// failure; `EXPLORE_FAULT_LOGS=DIR` keeps the logs in `DIR/<scenario>/`, and
/// `EXPLORE_FAULT_REPORT=DIR` writes the summary to `DIR/<scenario>.json`.
pub fn scenario(cfg: Config, inject: impl FnOnce(&mut Cluster) -> Result<()>) {
    require_fashion_mnist();
    let name = cfg.name;
    let mut cluster = match Cluster::start(cfg) {
        Ok(c) => c,
        Err(e) => panic!("{name}: cannot start the cluster: {e:#}"),
    };
    let result = cluster
        .submit()
        .and_then(|()| inject(&mut cluster))
        .and_then(|()| cluster.finish());
    if let Ok(dir) = std::env::var("EXPLORE_FAULT_LOGS") {
        cluster.keep_logs(&Path::new(&dir).join(name));
    }
    if let Err(e) = result {
        panic!("{name}: {e:#}\n{}", cluster.diagnostics());
    }
}

impl Cluster {
    fn start(cfg: Config) -> Result<Cluster> {
        let started = Instant::now();
        let tmp = tempfile::tempdir()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let master = MasterProc::start(
            &tmp.path().join("master"),
            &[
                "--heartbeat-secs",
                &HEARTBEAT_SECS.to_string(),
                "--lease-secs",
                &LEASE_SECS.to_string(),
                "--max-attempts",
                "6",
            ],
        )?;
        let proxy = if cfg.proxied_worker {
            Some(rt.block_on(Proxy::start(master.addr))?)
        } else {
            None
        };
        let token = std::fs::read_to_string(master.token_file())?
            .trim()
            .to_string();
        let mut cluster = Cluster {
            cfg,
            rt,
            tmp,
            master,
            proxy,
            token,
            workers: Vec::new(),
            experiment_id: String::new(),
            admin: RefCell::new(None),
            started,
            report: Report::default(),
        };
        let fake = if cluster.cfg.abandoned_lease {
            Some(cluster.register_fake("abandoner")?)
        } else {
            None
        };
        if fake.is_none() {
            cluster.start_workers()?;
        }
        cluster
            .report
            .extra
            .insert("fake_worker".into(), json!(fake));
        Ok(cluster)
    }

    /// Starts every worker at once, then waits until each registered.
    fn start_workers(&mut self) -> Result<()> {
        let mut started = Vec::new();
        for i in 0..self.cfg.direct_workers {
            started.push(self.spawn_worker(&format!("w{i}"), false)?);
        }
        if self.cfg.proxied_worker {
            started.push(self.spawn_worker("wp", true)?);
        }
        for i in started {
            self.await_registration(i)?;
        }
        Ok(())
    }

    /// Submits the experiment; with `abandoned_lease`, the fake worker then takes the first
    /// trial and never reports on it, and the real workers start.
    fn submit(&mut self) -> Result<()> {
        let spec = spec(self.cfg.max_trials);
        let submitted = self.admin_call("submit", move |mut c| {
            let spec = spec.clone();
            async move {
                c.submit_experiment(proto::SubmitExperimentRequest { spec_toml: spec })
                    .await
            }
        })?;
        self.experiment_id = submitted.experiment_id;
        println!(
            "[{}] experiment {} submitted, {} trials, lease {LEASE_SECS} s, pool on {}",
            self.cfg.name,
            self.experiment_id,
            self.cfg.max_trials,
            self.pool().backend()
        );
        if let Some(fake) = self.report.extra["fake_worker"].as_str().map(String::from) {
            let mut api = self.worker_api()?;
            let lease = self
                .rt
                .block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(20),
                        api.acquire(proto::AcquireRequest {
                            worker_id: fake.clone(),
                            wait_ms: 10_000,
                        }),
                    )
                    .await
                })
                .context("acquire timed out")??
                .into_inner();
            let trial = lease.trial.context("the fake worker got no trial")?;
            self.fault(
                "abandoned_lease",
                format!(
                    "a fake worker took {} attempt {} and went silent",
                    trial.trial_id, trial.attempt
                ),
            )?;
            self.report
                .superseded
                .push((trial.trial_id, trial.attempt, fake));
            self.start_workers()?;
        }
        Ok(())
    }

    /// Registers a worker through the API (no process behind it) and returns its id.
    pub fn register_fake(&self, name: &str) -> Result<String> {
        let mut api = self.worker_api()?;
        let answer = self
            .rt
            .block_on(api.register(proto::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                name: name.into(),
                device: "cpu".into(),
                slots: 1,
            }))?
            .into_inner();
        Ok(answer.worker_id)
    }

    /// Records an injected fault, with when it happened and how far the run was.
    pub fn fault(&mut self, kind: &'static str, moment: String) -> Result<()> {
        let done = self.completed()?;
        let line = format!(
            "[{}: {:5.1} s, {done:2} done] {kind}: {moment}",
            self.cfg.name,
            self.started.elapsed().as_secs_f64()
        );
        println!("{line}");
        *self.report.faults.entry(kind).or_default() += 1;
        self.report.moments.push(line);
        Ok(())
    }

    /// The master's pool database (SQLite or PostgreSQL, as the harness started it).
    pub fn pool(&self) -> PoolDb {
        PoolDb::of(&self.master.data_dir)
    }

    pub fn bearer(&self) -> BearerToken {
        BearerToken::new(&self.token).unwrap()
    }

    /// `timeout`, cut to what is left of the scenario's limit.
    pub fn limit(&self, timeout: Duration) -> Duration {
        timeout.min(SCENARIO_LIMIT.saturating_sub(self.started.elapsed()))
    }

    pub fn channel(&self) -> Result<Channel> {
        Ok(self
            .rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), connect(&self.master.url)).await
            })
            .context("connect timed out")??)
    }

    pub fn worker_api(&self) -> Result<WorkerServiceClient<AuthChannel>> {
        Ok(worker_client(self.channel()?, &self.bearer()))
    }

    /// Runs `f` on the runtime with a deadline of 30 s.
    pub fn call<T>(&self, f: impl Future<Output = Result<T, tonic::Status>>) -> Result<T> {
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), f).await })
            .context("call timed out after 30 s")?
            .map_err(Into::into)
    }

    /// Like [`Cluster::call`], for calls whose refusal is the point.
    pub fn try_call<T>(
        &self,
        f: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), f).await })
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in 30 s")))
    }

    /// An admin call, retried across master restarts (a fresh connection after a transport
    /// error) for up to 60 s; an answer from the master other than success is an error.
    pub fn admin_call<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: Fn(AdminServiceClient<AuthChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.limit(Duration::from_secs(60));
        let mut last = String::new();
        while Instant::now() < deadline {
            let cached = self.admin.borrow().clone();
            let client = match cached {
                Some(c) => c,
                None => match self.channel() {
                    Ok(ch) => {
                        let c = admin_client(ch, &self.bearer());
                        *self.admin.borrow_mut() = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        last = format!("{e:#}");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                },
            };
            match self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(15), f(client)).await })
            {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(s)) if is_transport(&s) => {
                    last = format!("{s:?}");
                    *self.admin.borrow_mut() = None;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(Err(s)) => bail!("{what}: {:?}: {}", s.code(), s.message()),
                Err(_) => {
                    last = "call timed out".into();
                    *self.admin.borrow_mut() = None;
                }
            }
        }
        bail!("{what}: master unreachable: {last}")
    }

    pub fn summary(&self) -> Result<proto::ExperimentSummary> {
        let id = self.experiment_id.clone();
        self.admin_call("get experiment", move |mut c| {
            let id = id.clone();
            async move {
                c.get_experiment(proto::GetExperimentRequest { experiment_id: id })
                    .await
            }
        })
    }

    pub fn trials(&self) -> Result<Vec<proto::TrialRecord>> {
        let id = self.experiment_id.clone();
        let r = self.admin_call("list trials", move |mut c| {
            let id = id.clone();
            async move {
                c.list_trials(proto::ListTrialsRequest { experiment_id: id })
                    .await
            }
        })?;
        Ok(r.trials)
    }

    pub fn trial(&self, id: &str) -> Result<proto::TrialRecord> {
        self.trials()?
            .into_iter()
            .find(|t| t.trial_id == id)
            .with_context(|| format!("trial {id} is not in the pool"))
    }

    pub fn completed(&self) -> Result<u32> {
        Ok(self.summary()?.trials_completed)
    }

    /// Rows of a read-only query on the master's database (which may be down), on either
    /// backend: the SQL must be portable (see `explore_tests::pool`).
    pub fn db<T>(&self, sql: &str) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        let pool = self.pool();
        self.rt.block_on(pool.fetch_all(sql))
    }

    /// The full contents of every table: each row as its columns' SQL text, rows sorted. With
    /// `mask_last_seen`, `workers.last_seen_ms` is left out (live workers touch it by
    /// long-polling).
    pub fn dump(&self, mask_last_seen: bool) -> Result<Dump> {
        let masked: &[(&str, &str)] = if mask_last_seen {
            &[("workers", "last_seen_ms")]
        } else {
            &[]
        };
        let pool = self.pool();
        self.rt.block_on(pool.dump(masked))
    }

    /// Every file under the artifact directory (partial uploads included) and its SHA-256.
    pub fn artifact_hashes(&self) -> Result<BTreeMap<String, String>> {
        fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
            for entry in std::fs::read_dir(dir).into_iter().flatten() {
                let path = entry?.path();
                if path.is_dir() {
                    walk(&path, root, out)?;
                } else {
                    let bytes = std::fs::read(&path)?;
                    let name = path.strip_prefix(root)?.to_string_lossy().into_owned();
                    out.insert(name, hex(&Sha256::digest(&bytes)));
                }
            }
            Ok(())
        }
        let root = self.master.data_dir.join("artifacts");
        let mut out = BTreeMap::new();
        walk(&root, &root, &mut out)?;
        Ok(out)
    }

    /// Attempts held (leased or running) now, per the database, optionally only by `worker`.
    pub fn held(&self, worker: Option<&str>) -> Result<Vec<Attempt>> {
        let rows: Vec<(String, i64, String)> = self.db(&format!(
            "SELECT id, attempt, worker_id FROM trials WHERE experiment_id = '{}'
               AND status IN ('leased', 'running') ORDER BY seq",
            self.experiment_id
        ))?;
        Ok(rows
            .into_iter()
            .map(|(t, a, w)| (t, a as u32, w))
            .filter(|(_, _, w)| worker.is_none_or(|id| id == w))
            .collect())
    }

    pub fn live_workers(&mut self) -> Vec<usize> {
        (0..self.workers.len())
            .filter(|&i| self.workers[i].proc.is_running())
            .collect()
    }

    pub fn worker_index(&self, name: &str) -> usize {
        self.workers.iter().position(|w| w.name == name).unwrap()
    }

    /// Starts a worker (through the proxy when `via_proxy`) and waits until it registered.
    pub fn add_worker(&mut self, name: &str, via_proxy: bool) -> Result<usize> {
        let i = self.spawn_worker(name, via_proxy)?;
        self.await_registration(i)?;
        Ok(i)
    }

    /// Starts a worker (through the proxy when `via_proxy`); returns its index.
    fn spawn_worker(&mut self, name: &str, via_proxy: bool) -> Result<usize> {
        let log = self.tmp.path().join(format!("{name}.log"));
        let extra = ["--give-up-after-secs", "120"];
        let proc = if via_proxy {
            let keepalive = self
                .cfg
                .proxied_keepalive_secs
                .map(|s| s.to_string())
                .unwrap_or_default();
            let env: Vec<(&str, &str)> = if keepalive.is_empty() {
                Vec::new()
            } else {
                vec![("EXPLORE_KEEPALIVE_SECS", keepalive.as_str())]
            };
            let url = self.proxy.as_ref().context("no proxy")?.url();
            start_worker_with_env(&url, &self.master.token_file(), name, &log, &extra, &env)?
        } else {
            start_worker(&self.master, name, &log, &extra)?
        };
        self.workers.push(Worker {
            name: name.to_string(),
            proc,
            log,
            id: String::new(),
        });
        Ok(self.workers.len() - 1)
    }

    /// Waits until worker `i` logged its registration, and records its id.
    fn await_registration(&mut self, i: usize) -> Result<()> {
        let (name, log) = (self.workers[i].name.clone(), self.workers[i].log.clone());
        let id = poll(
            &format!("{name} to register"),
            self.limit(Duration::from_secs(60)),
            TICK,
            || {
                Ok(read_log(&log).lines().find_map(|l| {
                    let rest = l.split("registered worker_id=").nth(1)?;
                    Some(rest.split_whitespace().next()?.to_string())
                }))
            },
        )?;
        self.workers[i].id = id;
        Ok(())
    }

    pub fn all_workers_alive(&mut self, except: &[usize]) -> Result<()> {
        for i in 0..self.workers.len() {
            if !except.contains(&i) && !self.workers[i].proc.is_running() {
                let status = self.workers[i].proc.child.try_wait();
                bail!(
                    "worker {} exited on its own: {status:?}",
                    self.workers[i].name
                );
            }
        }
        Ok(())
    }

    /// Fails when the experiment already ended: a fault injected after the end proves nothing.
    pub fn ensure_running(&self) -> Result<()> {
        let s = self.summary()?;
        ensure!(
            s.status == "running",
            "the experiment ended ({} of {} completed) before every fault was injected; \
             raise max_trials",
            s.trials_completed,
            self.cfg.max_trials
        );
        Ok(())
    }

    // ---- master restarts ----------------------------------------------------------------------

    /// Stops the master (SIGKILL, or SIGTERM for a drain), checks in its database that at
    /// least one trial was in flight at that instant (those attempts must keep their leases),
    /// keeps it down for `down`, restarts it on the same port and data directory, and waits
    /// until every live worker has called it again by itself.
    pub fn restart_master(
        &mut self,
        kind: &'static str,
        moment: String,
        down: Duration,
        graceful: bool,
    ) -> Result<()> {
        if graceful {
            let status = self.master.proc.terminate(Duration::from_secs(30))?;
            ensure!(
                status.success(),
                "the master drained with {status:?} on SIGTERM"
            );
            ensure!(
                read_log(&self.master.log).matches("shutting down").count()
                    == 1 + self
                        .report
                        .faults
                        .get("master_sigterm_restart")
                        .copied()
                        .unwrap_or(0) as usize,
                "the master did not log its drain on SIGTERM"
            );
        } else {
            self.master.kill()?;
        }
        let in_flight = self.held(None)?;
        ensure!(
            !in_flight.is_empty(),
            "{kind} ({moment}) landed with no trial in flight"
        );
        if !down.is_zero() {
            // The length of the outage is the fault itself, not a wait for something.
            std::thread::sleep(down);
        }
        self.master.restart(Duration::from_secs(15))?;
        *self.admin.borrow_mut() = None;
        let back_ms = now_ms();
        let held: Vec<String> = in_flight
            .iter()
            .map(|(t, a, _)| format!("{t}#{a}"))
            .collect();
        self.fault(
            kind,
            format!(
                "{moment}; down {:.1} s; in flight: {}",
                down.as_secs_f64(),
                held.join(", ")
            ),
        )?;
        let live: Vec<(String, String)> = self
            .live_workers()
            .into_iter()
            .map(|i| (self.workers[i].name.clone(), self.workers[i].id.clone()))
            .collect();
        // The master records `last_seen` on every acquire, heartbeat and completion.
        poll(
            "every live worker to call the restarted master",
            self.limit(Duration::from_secs(45)),
            Duration::from_millis(200),
            || {
                let seen: Vec<(String, i64)> = self.db("SELECT id, last_seen_ms FROM workers")?;
                let seen: HashMap<String, i64> = seen.into_iter().collect();
                Ok(live
                    .iter()
                    .all(|(_, id)| seen.get(id).is_some_and(|&t| t >= back_ms))
                    .then_some(()))
            },
        )
        .with_context(|| format!("workers {live:?} did not come back"))?;
        let gone: Vec<usize> = (0..self.workers.len())
            .filter(|&i| !live.iter().any(|(_, id)| *id == self.workers[i].id))
            .collect();
        self.all_workers_alive(&gone)?;
        // An attempt leased in the instant before the kill may never have reached its worker
        // (the answer died with the master): that lease expires by design, and is counted as
        // taken away. Every attempt its worker got must keep its lease.
        for (trial, attempt, worker) in in_flight {
            let log = self
                .workers
                .iter()
                .find(|w| w.id == worker)
                .map(|w| w.log.clone());
            let needle = format!("trial_id={trial} attempt={attempt}");
            // Until the worker shows it, or the attempt is gone (a lease the worker never got
            // expires after the fresh period): then its log decides, once more. Waiting the
            // whole 20 s instead can outlast the experiment.
            let known = log.is_some_and(|log| {
                poll(
                    "the worker to show the attempt it holds",
                    self.limit(Duration::from_secs(20)),
                    Duration::from_millis(200),
                    || {
                        if read_log(&log).contains(&needle) {
                            return Ok(Some(true));
                        }
                        let t = self.trial(&trial)?;
                        Ok((t.attempt > attempt || !is_held(&t.status))
                            .then(|| read_log(&log).contains(&needle)))
                    },
                )
                .unwrap_or(false)
            });
            if known {
                self.report.kept.push((trial, attempt, worker));
            } else {
                println!(
                    "[{}]   {trial} attempt {attempt}: the lease answer died with the master",
                    self.cfg.name
                );
                self.report.superseded.push((trial, attempt, worker));
            }
        }
        Ok(())
    }

    /// Waits for a trial in the middle of training (a `running` trial).
    pub fn wait_for_training(&self, timeout: Duration) -> Result<proto::TrialRecord> {
        poll(
            "a trial in the middle of training",
            self.limit(timeout),
            TICK,
            || Ok(self.trials()?.into_iter().find(|t| t.status == "running")),
        )
    }

    // ---- network cuts -------------------------------------------------------------------------

    /// Waits until the proxied worker trains a trial, returns it.
    pub fn wait_proxied_training(&self) -> Result<proto::TrialRecord> {
        self.wait_worker_training("wp")
    }

    /// Waits until worker `name` trains a trial (its log shows the attempt it holds), returns
    /// it.
    pub fn wait_worker_training(&self, name: &str) -> Result<proto::TrialRecord> {
        let i = self.worker_index(name);
        let (id, log) = (self.workers[i].id.clone(), self.workers[i].log.clone());
        poll(
            &format!("{name} training a trial"),
            self.limit(Duration::from_secs(90)),
            TICK,
            || {
                let text = read_log(&log);
                Ok(self.trials()?.into_iter().find(|t| {
                    t.worker_id == id
                        && is_held(&t.status)
                        && text.contains(&format!(
                            "training trial_id={} attempt={} ",
                            t.trial_id, t.attempt
                        ))
                }))
            },
        )
    }

    /// After a cut of the proxied worker, with the proxy resumed at log offset `mark`: waits
    /// until the worker learned that the lease of `t` is gone and trains another trial.
    pub fn proxied_worker_recovers(&mut self, t: &proto::TrialRecord, mark: usize) -> Result<()> {
        self.worker_recovers("wp", t, mark)
    }

    /// After worker `name` lost the lease of `t` (cut off, frozen) and is back, with its log
    /// at offset `mark` when it came back: waits until it learned that the lease is gone and
    /// trains another trial (or `t` again, as a new attempt).
    pub fn worker_recovers(
        &mut self,
        name: &str,
        t: &proto::TrialRecord,
        mark: usize,
    ) -> Result<()> {
        let log = self.workers[self.worker_index(name)].log.clone();
        let how = poll(
            &format!("{name} to learn its lease is gone"),
            self.limit(Duration::from_secs(90)),
            Duration::from_millis(100),
            || {
                let text = read_log(&log);
                Ok(text.lines().find_map(|l| {
                    if !l.contains(&t.trial_id) {
                        None
                    } else if l.contains("LeaseLost") {
                        Some("lease lost (heartbeat answer)")
                    } else if l.contains("result kept as history only") {
                        Some("late completion kept as history")
                    } else {
                        None
                    }
                }))
            },
        )?;
        println!("[{}]   {name} learned: {how}", self.cfg.name);
        self.report
            .extra
            .insert("cut_worker_learned".into(), json!(how));
        poll(
            &format!("{name} to move on to another trial"),
            self.limit(Duration::from_secs(90)),
            Duration::from_millis(100),
            || {
                let text = read_log(&log);
                let tail = &text[mark.min(text.len())..];
                Ok(tail
                    .lines()
                    .any(|l| {
                        l.contains("training trial_id=")
                            && !l.contains(&format!(
                                "trial_id={} attempt={} ",
                                t.trial_id, t.attempt
                            ))
                    })
                    .then_some(()))
            },
        )?;
        self.all_workers_alive(&[])
    }

    // ---- replays ------------------------------------------------------------------------------

    /// Re-sends the completion of a completed attempt with another score: answered "already
    /// recorded".
    pub fn replay_duplicate(&mut self, t: &proto::TrialRecord) -> Result<()> {
        let mut client = self.worker_api()?;
        let forged = if t.score > 0.5 { 0.0125 } else { 0.9875 };
        let request = proto::CompleteRequest {
            worker_id: t.worker_id.clone(),
            trial_id: t.trial_id.clone(),
            attempt: t.attempt,
            score: forged,
            metrics: [("test_accuracy".to_string(), forged)].into(),
            checkpoint_sha256: t.checkpoint_sha256.clone(),
            epochs_run: EPOCHS,
        };
        let answer = self.call(client.complete(request))?.into_inner();
        self.report.duplicate_replays += 1;
        if !(answer.accepted && answer.reason.contains("already")) {
            self.violation(format!(
                "a duplicate completion of {} was answered {answer:?}",
                t.trial_id
            ));
        }
        Ok(())
    }

    /// Sends the completion of an attempt the master took back, with a forged score: it must
    /// be answered `accepted = false` and kept in `late_results`.
    pub fn replay_late(&mut self, (trial_id, attempt, worker_id): &Attempt) -> Result<f64> {
        let mut client = self.worker_api()?;
        let forged = 0.9625 + f64::from(self.report.late_replays) / 1000.0;
        let answer = self
            .call(client.complete(proto::CompleteRequest {
                worker_id: worker_id.clone(),
                trial_id: trial_id.clone(),
                attempt: *attempt,
                score: forged,
                metrics: HashMap::new(),
                checkpoint_sha256: String::new(),
                epochs_run: EPOCHS,
            }))?
            .into_inner();
        self.report.late_replays += 1;
        if answer.accepted {
            self.violation(format!(
                "a completion of superseded attempt {attempt} of {trial_id} was accepted: {answer:?}"
            ));
        }
        Ok(forged)
    }

    fn violation(&mut self, what: String) {
        println!("[{}]   VIOLATION: {what}", self.cfg.name);
        self.report.replay_violations.push(what);
    }

    // ---- bad input ----------------------------------------------------------------------------

    pub fn refused<T>(&mut self, name: &str, expected: Code, result: Result<T, tonic::Status>) {
        let got = match result {
            Ok(_) => Ok(()),
            Err(s) => {
                if s.code() != expected {
                    println!(
                        "[{}]   {name}: expected {expected:?}, got {:?}: {}",
                        self.cfg.name,
                        s.code(),
                        s.message()
                    );
                }
                Err(s.code())
            }
        };
        if expected == Code::Unauthenticated {
            self.report.unauthenticated_sent += 1;
        }
        self.report.bad_inputs.push(BadInput {
            name: name.to_string(),
            expected,
            got,
        });
    }

    // ---- the end ------------------------------------------------------------------------------

    /// Waits until the experiment completed and no trial is queued or held.
    pub fn wait_done(&self) -> Result<()> {
        let summary = poll(
            "the experiment to complete",
            self.limit(Duration::from_secs(180)),
            Duration::from_millis(250),
            || Ok(Some(self.summary()?).filter(|x| x.status != "running")),
        )?;
        ensure!(
            summary.status == "completed",
            "experiment ended {}: {}",
            summary.status,
            summary.status_reason
        );
        // Trials still held when the budget was reached are told to stop; wait until none is.
        poll(
            "no trial left in flight",
            self.limit(LEASE + Duration::from_secs(20)),
            Duration::from_millis(200),
            || {
                Ok(self
                    .trials()?
                    .iter()
                    .all(|t| !is_held(&t.status) && t.status != "queued")
                    .then_some(()))
            },
        )?;
        Ok(())
    }

    /// SIGTERMs every live worker; each must drain and exit 0.
    pub fn drain_workers(&mut self) -> Result<()> {
        for i in self.live_workers() {
            let w = &mut self.workers[i];
            let status = w.proc.terminate(Duration::from_secs(30))?;
            ensure!(status.success(), "{} exited with {status:?}", w.name);
        }
        Ok(())
    }

    /// Waits for the end, drains the workers and checks the books (see the module docs).
    fn finish(&mut self) -> Result<()> {
        self.wait_done()?;
        self.drain_workers()?;
        let name = self.cfg.name;
        let max_trials = self.cfg.max_trials;
        let summary = self.summary()?;
        let trials = self.trials()?;
        let by_id: HashMap<&str, &proto::TrialRecord> =
            trials.iter().map(|t| (t.trial_id.as_str(), t)).collect();
        let completed: Vec<&proto::TrialRecord> =
            trials.iter().filter(|t| t.status == "completed").collect();
        let mut problems: Vec<String> = Vec::new();
        let mut double_counts: Vec<String> = Vec::new();
        // An attempt in flight at several restarts is checked once.
        self.report.kept.sort();
        self.report.kept.dedup();

        // Lost: a budgeted trial that did not complete, or a trial a fault hit that did not.
        let mut lost = trials.iter().filter(|t| t.status != "completed").count();
        for (trial, _, _) in self.report.superseded.iter().chain(&self.report.kept) {
            if by_id
                .get(trial.as_str())
                .is_none_or(|t| t.status != "completed")
            {
                lost += 1;
            }
        }
        if summary.trials_completed != max_trials || completed.len() != max_trials as usize {
            problems.push(format!(
                "{} completed ({} in the pool) of a budget of {max_trials}",
                summary.trials_completed,
                completed.len()
            ));
        }

        // Each chain's books, replayed from its completed trials in completion order.
        let chains: Vec<ChainBooks> = self.db(&format!(
            "SELECT chain, current_trial_id, best_score, since_improvement, results, accepted,
                        reheats FROM chains WHERE experiment_id = '{}' ORDER BY chain",
            self.experiment_id
        ))?;
        let results: Vec<(String, i64, f64, i64)> = self.db(&format!(
            "SELECT id, chain, score,
                    CASE WHEN accepted THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END
               FROM trials
              WHERE experiment_id = '{}' AND kind = 'train' AND status IN ('completed', 'pruned')
              ORDER BY finished_at_ms, seq",
            self.experiment_id
        ))?;
        for (chain, current, best, since, n, accepted, reheats) in &chains {
            let mut implied = (None::<String>, None::<f64>, 0i64, 0i64, 0i64, 0i64);
            for (id, _, score, acc) in results.iter().filter(|r| r.1 == *chain) {
                let (cur, bst, since, n, accepted, reheats) = &mut implied;
                *n += 1;
                if *acc != 0 {
                    *accepted += 1;
                    *cur = Some(id.clone());
                }
                if bst.is_none_or(|b| *score > b) {
                    *bst = Some(*score);
                    *since = 0;
                } else {
                    *since += 1;
                }
                if REHEAT_AFTER > 0 && *since >= REHEAT_AFTER {
                    *cur = None;
                    *bst = None;
                    *since = 0;
                    *reheats += 1;
                }
            }
            let recorded = (current.clone(), *best, *since, *n, *accepted, *reheats);
            if recorded != implied {
                double_counts.push(format!(
                    "chain {chain}: (current, best, since_improvement, results, accepted, \
                     reheats) recorded {recorded:?}, its completed trials imply {implied:?}"
                ));
            }
        }
        let chain_results: i64 = chains.iter().map(|c| c.4).sum();
        if chain_results != results.len() as i64 {
            double_counts.push(format!(
                "the chains recorded {chain_results} results for {} completed trials",
                results.len()
            ));
        }

        // The best trial and the epoch total, as the pool implies them.
        let pool_max = completed
            .iter()
            .map(|t| t.score)
            .fold(f64::NEG_INFINITY, f64::max);
        let implied_best = results
            .iter()
            .find(|r| r.2 == pool_max)
            .map(|r| r.0.clone());
        let recorded_best: Vec<(Option<String>,)> = self.db(&format!(
            "SELECT best_trial_id FROM experiments WHERE id = '{}'",
            self.experiment_id
        ))?;
        let recorded_best = recorded_best.into_iter().next().and_then(|r| r.0);
        let best = self.admin_call("best model", |mut c| {
            let id = self.experiment_id.clone();
            async move {
                c.get_best_model(proto::GetBestModelRequest { experiment_id: id })
                    .await
            }
        })?;
        if recorded_best != implied_best || summary.best_score != pool_max || best.score != pool_max
        {
            double_counts.push(format!(
                "best trial {recorded_best:?} (summary {}, GetBestModel {}), the pool implies \
                 {implied_best:?} at {pool_max}",
                summary.best_score, best.score
            ));
        }
        let epochs_implied: u64 = completed.iter().map(|t| u64::from(t.epochs_run)).sum();
        if summary.epochs_spent != epochs_implied
            || completed.iter().any(|t| t.epochs_run != EPOCHS)
        {
            double_counts.push(format!(
                "{} epochs spent, the completed trials ran {epochs_implied} ({EPOCHS} each \
                 expected)",
                summary.epochs_spent
            ));
        }

        // Late results are history only: their scores appear in no trial, chain or best.
        let late: Vec<(String, i64, String, f64)> =
            self.db("SELECT trial_id, attempt, worker_id, score FROM late_results")?;
        for (trial, attempt, worker, score) in &late {
            let own = by_id.get(trial.as_str()).map(|t| t.score);
            if own == Some(*score) {
                // A genuine late result of a deterministic retrain can equal the recorded one.
                continue;
            }
            let leaked = completed.iter().any(|t| t.score == *score)
                || chains.iter().any(|c| c.2 == Some(*score))
                || summary.best_score == *score;
            if leaked {
                double_counts.push(format!(
                    "the late result of {trial} attempt {attempt} by {worker} ({score}) was counted"
                ));
            }
        }
        if (late.len() as u32) < self.report.late_replays {
            problems.push(format!(
                "{} late replays, {} late_results rows",
                self.report.late_replays,
                late.len()
            ));
        }

        // Every score in range, every checkpoint there and hashing to its address.
        let mut with_weights = 0;
        let mut admin = admin_client(self.channel()?, &self.bearer());
        for t in &completed {
            if !(t.score.is_finite() && (0.0..=1.0).contains(&t.score)) {
                problems.push(format!("trial {} has score {}", t.trial_id, t.score));
            }
            let bytes = self
                .rt
                .block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(30),
                        download(&mut admin, &t.checkpoint_sha256),
                    )
                    .await
                })
                .context("download timed out")??;
            if hex(&Sha256::digest(&bytes)) == t.checkpoint_sha256 {
                with_weights += 1;
            } else {
                problems.push(format!("checkpoint of {} does not match", t.trial_id));
            }
        }

        // Leases: exactly the attempts a fault took away expired; a master's downtime cost none.
        let master_log = read_log(&self.master.log);
        let expired: BTreeSet<(String, u32)> = master_log
            .lines()
            .filter(|l| l.contains("lease expired"))
            .filter_map(|l| {
                let field = |k: &str| {
                    l.split(&format!("{k}="))
                        .nth(1)?
                        .split_whitespace()
                        .next()
                        .map(|v| v.trim_matches('"').to_string())
                };
                Some((field("trial_id")?, field("attempt")?.parse().ok()?))
            })
            .collect();
        let expected_expiries: BTreeSet<(String, u32)> = self
            .report
            .superseded
            .iter()
            .map(|(t, a, _)| (t.clone(), *a))
            .collect();
        if expired != expected_expiries {
            problems.push(format!(
                "leases expired {expired:?}; the injected faults took away {expected_expiries:?}"
            ));
        }
        for (trial, attempt, _) in &self.report.superseded {
            if by_id
                .get(trial.as_str())
                .is_none_or(|t| t.attempt <= *attempt)
            {
                problems.push(format!("{trial} attempt {attempt} was not superseded"));
            }
        }
        for (trial, attempt, worker) in &self.report.kept {
            if by_id
                .get(trial.as_str())
                .is_none_or(|t| t.attempt != *attempt || t.worker_id != *worker)
            {
                problems.push(format!(
                    "{trial} attempt {attempt} on {worker} lost its lease to the master's downtime: \
                     {:?}",
                    by_id.get(trial.as_str())
                ));
            }
        }

        let worker_logs: String = self
            .workers
            .iter()
            .map(|w| read_log(&w.log))
            .collect::<Vec<_>>()
            .join("\n");
        for text in [&master_log, &worker_logs] {
            if text.contains("panicked") {
                problems.push("a process panicked".into());
            }
            if text.contains("database is locked") {
                problems.push("the database was found locked".into());
            }
        }
        if summary.trials_failed != 0 || summary.trials_running != 0 {
            problems.push(format!(
                "{} failed, {} in flight at the end",
                summary.trials_failed, summary.trials_running
            ));
        }
        let refusals_logged = master_log.matches("refused unauthenticated call").count() as u32;
        if refusals_logged != self.report.unauthenticated_sent {
            problems.push(format!(
                "the master logged {refusals_logged} refusals for {} unauthenticated calls",
                self.report.unauthenticated_sent
            ));
        }
        for b in &self.report.bad_inputs {
            if b.got != Err(b.expected) {
                problems.push(format!(
                    "bad input {:?} was answered {:?}, expected {:?}",
                    b.name, b.got, b.expected
                ));
            }
        }
        problems.extend(self.report.replay_violations.iter().cloned());

        let by_code: BTreeMap<String, usize> =
            self.report
                .bad_inputs
                .iter()
                .fold(BTreeMap::new(), |mut m, b| {
                    *m.entry(format!("{:?}", b.expected)).or_default() += 1;
                    m
                });
        let report = json!({
            "scenario": name,
            "backend": self.pool().backend(),
            "experiment": self.experiment_id,
            "max_trials": max_trials,
            "lease_secs": LEASE_SECS,
            "wall_seconds": (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "faults": self.report.faults,
            "fault_moments": self.report.moments,
            "lease_expiries_logged": expired.len(),
            "lease_expiries_expected": expected_expiries.len(),
            "attempts_kept_across_master_restarts": self.report.kept.len(),
            "worker_reconnect_retries_logged":
                worker_logs.matches("master unreachable, retrying").count(),
            "master_bind_retries": self.master.bind_retries,
            "trials_completed": summary.trials_completed,
            "trials_with_verified_checkpoint": with_weights,
            "trials_lost": lost,
            "double_counts": double_counts.len(),
            "chains_checked": chains.len(),
            "epochs_spent": summary.epochs_spent,
            "duplicate_completions_replayed": self.report.duplicate_replays,
            "late_completions_replayed": self.report.late_replays,
            "late_results_rows": late.len(),
            "best_score": summary.best_score,
            "pool_max_score": pool_max,
            "bad_inputs_tried": self.report.bad_inputs.len(),
            "bad_inputs_refused_with_expected_code":
                self.report.bad_inputs.iter().filter(|b| b.got == Err(b.expected)).count(),
            "bad_inputs_by_expected_code": by_code,
            "unauthenticated_sent": self.report.unauthenticated_sent,
            "unauthenticated_refusals_logged": refusals_logged,
            "extra": self.report.extra,
        });
        println!("[{name}] summary {}", serde_json::to_string(&report)?);
        if let Ok(dir) = std::env::var("EXPLORE_FAULT_REPORT") {
            let _ = std::fs::create_dir_all(&dir);
            let path = Path::new(&dir).join(format!("{name}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        ensure!(lost == 0, "{lost} trials lost: {trials:#?}");
        ensure!(
            double_counts.is_empty(),
            "{} double counts: {double_counts:#?}",
            double_counts.len()
        );
        ensure!(problems.is_empty(), "{problems:#?}");
        Ok(())
    }

    /// Copies every log to `dir` (for a look after the run).
    fn keep_logs(&self, dir: &Path) {
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::copy(&self.master.log, dir.join("master.log"));
        for w in &self.workers {
            let _ = std::fs::copy(&w.log, dir.join(format!("{}.log", w.name)));
        }
    }

    fn diagnostics(&self) -> String {
        let tail = |text: String, n: usize| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        let mut out = format!("--- master log\n{}\n", tail(read_log(&self.master.log), 60));
        for w in &self.workers {
            out += &format!("--- {} log\n{}\n", w.name, tail(read_log(&w.log), 30));
        }
        out
    }
}

pub async fn download(
    client: &mut AdminServiceClient<AuthChannel>,
    sha: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = client
        .download_checkpoint(proto::DownloadCheckpointRequest {
            sha256: sha.to_string(),
        })
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        bytes.extend_from_slice(&chunk.data);
    }
    Ok(bytes)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The experiment spec the scenarios submit (for bad calls that need a valid one).
pub fn valid_spec(max_trials: u32) -> String {
    spec(max_trials)
}
