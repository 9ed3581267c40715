//! Fault injection, end to end: a real `master` and three real `worker` processes run an
//! experiment on a Fashion-MNIST subset while the suite
//!
//! - SIGKILLs a worker in the middle of a trial and starts a replacement,
//! - SIGKILLs the master three times at different moments and restarts it on the same port and
//!   data directory (the workers must find it again by themselves), then once more with SIGTERM
//!   (a drain),
//! - cuts one worker off the network (a pausable proxy) for longer than its lease,
//! - replays duplicate and late completions through the gRPC API, and
//! - sends unauthenticated, malformed and oversized calls,
//!
//! then checks the books: every budgeted trial completed exactly once with a score and weights,
//! nothing double-counted, the best model is the pool's maximum, every bad call refused with the
//! right code and without a trace. A summary goes to stdout, and as JSON to
//! `$EXPLORE_FAULT_REPORT` when set.
//!
//! Loopback only; every wait polls a condition with a deadline, and the whole suite is bounded
//! by `SUITE_LIMIT`. Set `EXPLORE_FAULT_LOGS=DIR` to keep the master's and workers' logs.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use explore_common::client::{admin_client, connect, worker_client, AuthChannel, BearerToken};
use explore_common::proto::admin_service_client::AdminServiceClient;
use explore_common::proto::worker_service_client::WorkerServiceClient;
use explore_common::proto::{self, PROTOCOL_VERSION};
use explore_tests::proxy::{PauseMode, Proxy};
use explore_tests::{
    poll, read_log, require_fashion_mnist, start_worker, start_worker_at, MasterProc, Proc,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tonic::transport::Channel;
use tonic::Code;

const MAX_TRIALS: u32 = 24;
const HEARTBEAT_SECS: u64 = 1;
const LEASE_SECS: u64 = 4;
const LEASE: Duration = Duration::from_secs(LEASE_SECS);
/// Hard bound on the whole suite.
const SUITE_LIMIT: Duration = Duration::from_secs(270);
const TICK: Duration = Duration::from_millis(50);
const MASTER_RESTARTS: usize = 3;

fn spec() -> String {
    format!(
        r#"
name = "faults"
seed = 23

[budget]
max_trials = {MAX_TRIALS}

[data]
dataset = "fashion-mnist"
train_subset = 1500
test_subset = 300
validation_fraction = 0.2

# Every trial must complete here: the suite counts a trial that did not as lost. Pruning is an
# intended early end, covered by e2e_search.rs.
[early_stopping]
rule = "none"

[search]
epochs = [2, 2]
channels = [8, 16]
dense_units = [32, 64]
batch_sizes = [64, 128]

[[seeds]]
preset = "cnn2"
hparams = {{ optimizer = "adamw", learning_rate = 0.003, schedule = "one_cycle", batch_size = 64, weight_decay = 0.0001, epochs = 2 }}
"#
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn is_held(status: &str) -> bool {
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

struct Worker {
    name: String,
    proc: Proc,
    log: PathBuf,
    id: String,
}

/// One bad call and how it was answered.
struct BadInput {
    name: String,
    expected: Code,
    got: Result<(), Code>,
}

#[derive(Default)]
struct Report {
    faults: BTreeMap<&'static str, u32>,
    moments: Vec<String>,
    /// (trial, attempt, worker) of attempts the master took back: late completions to replay.
    superseded: Vec<(String, u32, String)>,
    /// Trials a fault hit; each must end completed.
    hit: Vec<String>,
    bad_inputs: Vec<BadInput>,
    unauthenticated_sent: u32,
    duplicate_replays: u32,
    late_replays: u32,
    replays_that_changed_state: u32,
    /// Replays answered or recorded other than they should have been.
    replay_violations: Vec<String>,
}

struct Suite {
    rt: tokio::runtime::Runtime,
    tmp: tempfile::TempDir,
    master: MasterProc,
    proxy: Proxy,
    token: String,
    workers: Vec<Worker>,
    experiment_id: String,
    admin: RefCell<Option<AdminServiceClient<AuthChannel>>>,
    started: Instant,
    report: Report,
}

impl Suite {
    /// Records an injected fault, with when it happened and how far the run was.
    fn fault(&mut self, kind: &'static str, moment: String) -> Result<()> {
        let done = self.completed()?;
        let line = format!(
            "[{:5.1} s, {done:2} done] {kind}: {moment}",
            self.started.elapsed().as_secs_f64()
        );
        println!("{line}");
        *self.report.faults.entry(kind).or_default() += 1;
        self.report.moments.push(line);
        Ok(())
    }

    fn db_path(&self) -> PathBuf {
        self.master.data_dir.join("explore.db")
    }

    fn bearer(&self) -> BearerToken {
        BearerToken::new(&self.token).unwrap()
    }

    /// `timeout`, cut to what is left of the suite's limit.
    fn limit(&self, timeout: Duration) -> Duration {
        timeout.min(SUITE_LIMIT.saturating_sub(self.started.elapsed()))
    }

    fn channel(&self) -> Result<Channel> {
        Ok(self
            .rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), connect(&self.master.url)).await
            })
            .context("connect timed out")??)
    }

    fn worker_api(&self) -> Result<WorkerServiceClient<AuthChannel>> {
        Ok(worker_client(self.channel()?, &self.bearer()))
    }

    /// An admin call, retried across master restarts (a fresh connection after a transport
    /// error) for up to 60 s; an answer from the master other than success is an error.
    fn admin_call<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
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

    fn summary(&self) -> Result<proto::ExperimentSummary> {
        let id = self.experiment_id.clone();
        self.admin_call("get experiment", move |mut c| {
            let id = id.clone();
            async move {
                c.get_experiment(proto::GetExperimentRequest { experiment_id: id })
                    .await
            }
        })
    }

    fn trials(&self) -> Result<Vec<proto::TrialRecord>> {
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

    fn trial(&self, id: &str) -> Result<proto::TrialRecord> {
        self.trials()?
            .into_iter()
            .find(|t| t.trial_id == id)
            .with_context(|| format!("trial {id} is not in the pool"))
    }

    /// Everything the admin API shows, as text (NaN-safe comparison).
    fn snapshot(&self) -> Result<String> {
        let experiments = self.admin_call("list experiments", |mut c| async move {
            c.list_experiments(proto::ListExperimentsRequest {}).await
        })?;
        let mut trials = self.trials()?;
        trials.sort_by(|a, b| a.trial_id.cmp(&b.trial_id));
        // Map order is not stable: compare metrics sorted.
        let metrics: Vec<BTreeMap<String, f64>> = trials
            .iter_mut()
            .map(|t| t.metrics.drain().collect())
            .collect();
        Ok(format!("{experiments:?}\n{trials:?}\n{metrics:?}"))
    }

    fn completed(&self) -> Result<u32> {
        Ok(self.summary()?.trials_completed)
    }

    fn db<T>(&self, sql: &str) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        let path = self.db_path();
        self.rt.block_on(async {
            let mut conn = SqliteConnectOptions::new()
                .filename(&path)
                .read_only(true)
                .connect()
                .await?;
            let rows = sqlx::query_as::<_, T>(sql).fetch_all(&mut conn).await?;
            conn.close().await?;
            Ok(rows)
        })
    }

    /// Row counts of every table.
    fn db_counts(&self) -> Result<BTreeMap<&'static str, i64>> {
        let mut counts = BTreeMap::new();
        for table in ["experiments", "trials", "workers", "late_results"] {
            let n: Vec<(i64,)> = self.db(&format!("SELECT COUNT(*) FROM {table}"))?;
            counts.insert(table, n[0].0);
        }
        Ok(counts)
    }

    /// Checkpoint files and partial uploads in the artifact store.
    fn artifact_files(&self) -> (usize, usize) {
        let dir = self.master.data_dir.join("artifacts");
        let mut blobs = 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name() != "tmp" && entry.path().is_dir() {
                blobs += std::fs::read_dir(entry.path())
                    .into_iter()
                    .flatten()
                    .count();
            }
        }
        let partial = std::fs::read_dir(dir.join("tmp"))
            .into_iter()
            .flatten()
            .count();
        (blobs, partial)
    }

    fn live_workers(&mut self) -> Vec<usize> {
        (0..self.workers.len())
            .filter(|&i| self.workers[i].proc.is_running())
            .collect()
    }

    fn worker_index(&self, name: &str) -> usize {
        self.workers.iter().position(|w| w.name == name).unwrap()
    }

    /// Starts a worker (through the proxy when `via_proxy`) and waits until it registered.
    fn add_worker(&mut self, name: &str, via_proxy: bool) -> Result<usize> {
        let log = self.tmp.path().join(format!("{name}.log"));
        let extra = ["--give-up-after-secs", "120"];
        let proc = if via_proxy {
            start_worker_at(
                &self.proxy.url(),
                &self.master.token_file(),
                name,
                &log,
                &extra,
            )?
        } else {
            start_worker(&self.master, name, &log, &extra)?
        };
        self.workers.push(Worker {
            name: name.to_string(),
            proc,
            log: log.clone(),
            id: String::new(),
        });
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
        let i = self.workers.len() - 1;
        self.workers[i].id = id;
        Ok(i)
    }

    fn all_workers_alive(&mut self, except: &[usize]) -> Result<()> {
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

    fn ensure_running(&self) -> Result<()> {
        let s = self.summary()?;
        ensure!(
            s.status == "running",
            "the experiment ended ({} of {MAX_TRIALS} completed) before every fault was injected; \
             raise MAX_TRIALS",
            s.trials_completed
        );
        Ok(())
    }

    // ---- master restarts ----------------------------------------------------------------------

    /// SIGKILLs the master, keeps it down for `down`, restarts it on the same port and data
    /// directory, and waits until every live worker has called it again by itself.
    fn crash_master(&mut self, moment: String, down: Duration) -> Result<()> {
        self.restart_master("master_sigkill_restart", moment, down, false)
    }

    /// Stops the master (SIGKILL, or SIGTERM for a drain), keeps it down for `down`, restarts
    /// it on the same port and data directory, and waits until every live worker has called
    /// it again by itself.
    fn restart_master(
        &mut self,
        kind: &'static str,
        moment: String,
        down: Duration,
        graceful: bool,
    ) -> Result<()> {
        if graceful {
            let status = self.master.proc.terminate(Duration::from_secs(30))?;
            ensure!(status.success(), "master drained with {status:?}");
        } else {
            self.master.kill()?;
        }
        if !down.is_zero() {
            // The length of the outage is the fault itself, not a wait for something.
            std::thread::sleep(down);
        }
        self.master.restart(Duration::from_secs(15))?;
        *self.admin.borrow_mut() = None;
        let back_ms = now_ms();
        self.fault(kind, moment)?;
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
        let alive: Vec<usize> = (0..self.workers.len())
            .filter(|&i| !live.iter().any(|(_, id)| *id == self.workers[i].id))
            .collect();
        self.all_workers_alive(&alive)
    }

    /// Restart 1: while a trial is in the middle of training.
    fn crash_master_mid_training(&mut self) -> Result<()> {
        let t = poll(
            "a trial in the middle of training",
            self.limit(Duration::from_secs(90)),
            TICK,
            || Ok(self.trials()?.into_iter().find(|t| t.status == "running")),
        )?;
        self.crash_master(
            format!(
                "while {} (attempt {}) was training on {}",
                t.trial_id, t.attempt, t.worker_id
            ),
            Duration::ZERO,
        )
    }

    /// Restart 2: right after a completion, while workers upload, complete and acquire.
    fn crash_master_after_completion(&mut self) -> Result<()> {
        let before = self.completed()?;
        let after = poll(
            "the next completion",
            self.limit(Duration::from_secs(60)),
            Duration::from_millis(20),
            || Ok(Some(self.completed()?).filter(|&c| c > before)),
        )?;
        self.crash_master(format!("right after completion #{after}"), Duration::ZERO)
    }

    /// Restart 3: while a trial is freshly leased (being prepared), down for 3 s.
    fn crash_master_while_leased(&mut self) -> Result<()> {
        let t = poll(
            "a freshly leased trial",
            self.limit(Duration::from_secs(60)),
            Duration::from_millis(20),
            || Ok(self.trials()?.into_iter().find(|t| t.status == "leased")),
        )?;
        self.crash_master(
            format!(
                "while {} was leased to {}, down for 3 s",
                t.trial_id, t.worker_id
            ),
            Duration::from_secs(3),
        )
    }

    /// Restart 4: SIGTERM (drain) while trials train, then straight back.
    fn drain_master_mid_training(&mut self) -> Result<()> {
        let t = poll(
            "a trial in the middle of training",
            self.limit(Duration::from_secs(60)),
            TICK,
            || Ok(self.trials()?.into_iter().find(|t| t.status == "running")),
        )?;
        self.restart_master(
            "master_sigterm_restart",
            format!(
                "SIGTERM while {} was training on {}",
                t.trial_id, t.worker_id
            ),
            Duration::ZERO,
            true,
        )
    }

    // ---- worker faults ------------------------------------------------------------------------

    /// SIGKILLs a worker while it is between its first and second epoch, starts a replacement,
    /// and waits until the master took the trial back (lease expired, attempt + 1).
    fn kill_worker_mid_trial(&mut self) -> Result<()> {
        for (round, victim) in ["w0", "w1"].into_iter().enumerate() {
            let i = self.worker_index(victim);
            let (id, log) = (self.workers[i].id.clone(), self.workers[i].log.clone());
            let t = poll(
                &format!("{victim} in the middle of a trial"),
                self.limit(Duration::from_secs(90)),
                TICK,
                || {
                    let found = self.trials()?.into_iter().find(|t| {
                        t.worker_id == id && t.status == "running" && {
                            let last_epoch = format!("epoch done trial_id={} epoch=2 ", t.trial_id);
                            !read_log(&log).contains(&last_epoch)
                        }
                    });
                    Ok(found)
                },
            )?;
            self.workers[i].proc.kill_hard()?;
            let after = self.trial(&t.trial_id)?;
            let mid_trial = after.status != "completed" || after.attempt != t.attempt;
            self.fault(
                "worker_sigkill",
                format!(
                    "{victim} killed while training {} attempt {} ({})",
                    t.trial_id,
                    t.attempt,
                    if mid_trial {
                        "mid-trial"
                    } else {
                        "its completion got through first"
                    }
                ),
            )?;
            self.add_worker(&format!("w{}", 3 + round), false)?;
            if !mid_trial {
                continue;
            }
            self.report.hit.push(t.trial_id.clone());
            let requeued = poll(
                "the killed worker's lease to expire",
                self.limit(LEASE + Duration::from_secs(20)),
                Duration::from_millis(100),
                || Ok(Some(self.trial(&t.trial_id)?).filter(|r| r.attempt > t.attempt)),
            )?;
            println!(
                "  {} is back in play as attempt {} ({})",
                t.trial_id, requeued.attempt, requeued.status
            );
            self.report
                .superseded
                .push((t.trial_id.clone(), t.attempt, id.clone()));
            return Ok(());
        }
        bail!("could not kill a worker mid-trial in two tries")
    }

    /// Cuts the proxied worker off (blackhole) while it trains, for longer than its lease; then
    /// reconnects it and waits until it learned the lease is gone and trains something else.
    fn cut_worker_off(&mut self) -> Result<()> {
        let i = self.worker_index("w2");
        let (id, log) = (self.workers[i].id.clone(), self.workers[i].log.clone());
        for _ in 0..3 {
            let t = poll(
                "the proxied worker training a trial",
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
            )?;
            self.proxy.pause(PauseMode::Blackhole);
            let paused_at = Instant::now();
            let outcome = poll(
                "the cut-off worker's lease to expire",
                self.limit(LEASE + Duration::from_secs(20)),
                Duration::from_millis(100),
                || {
                    let r = self.trial(&t.trial_id)?;
                    Ok(if r.attempt > t.attempt {
                        Some(true)
                    } else if r.status == "completed" {
                        Some(false)
                    } else {
                        None
                    })
                },
            )?;
            if !outcome {
                // Its completion got through before the cut: try again with its next trial.
                self.proxy.resume();
                println!("  cut too late for {}, trying again", t.trial_id);
                continue;
            }
            // Stay cut a while past the lease (the fault's length, not a wait for something).
            let cut_for = LEASE + Duration::from_secs(2);
            if let Some(rest) = cut_for.checked_sub(paused_at.elapsed()) {
                std::thread::sleep(rest);
            }
            let mark = read_log(&log).len();
            self.proxy.resume();
            self.fault(
                "network_cut_longer_than_lease",
                format!(
                    "w2 cut off for {:.1} s (lease {LEASE_SECS} s) while training {} attempt {}; {} live connections dropped",
                    paused_at.elapsed().as_secs_f64(),
                    t.trial_id,
                    t.attempt,
                    self.proxy.cut_connections()
                ),
            )?;
            self.report.hit.push(t.trial_id.clone());
            self.report
                .superseded
                .push((t.trial_id.clone(), t.attempt, id.clone()));
            let how = poll(
                "the cut-off worker to learn its lease is gone",
                self.limit(Duration::from_secs(60)),
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
            println!("  w2 learned: {how}");
            poll(
                "the cut-off worker to move on to another trial",
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
            return self.all_workers_alive(&[]);
        }
        bail!("could not cut the proxied worker off mid-trial in three tries")
    }

    // ---- replays ------------------------------------------------------------------------------

    /// Re-sends the completion of a completed attempt with another score: answered "already
    /// recorded", nothing changes.
    fn replay_duplicate(&mut self, t: &proto::TrialRecord) -> Result<()> {
        let mut client = self.worker_api()?;
        let forged = if t.score > 0.5 { 0.0125 } else { 0.9875 };
        let request = proto::CompleteRequest {
            worker_id: t.worker_id.clone(),
            trial_id: t.trial_id.clone(),
            attempt: t.attempt,
            score: forged,
            metrics: [("test_accuracy".to_string(), forged)].into(),
            checkpoint_sha256: t.checkpoint_sha256.clone(),
            epochs_run: 2,
        };
        let answer = self.rt.block_on(client.complete(request))?.into_inner();
        self.report.duplicate_replays += 1;
        if !(answer.accepted && answer.reason.contains("already")) {
            self.violation(
                false,
                format!(
                    "a duplicate completion of {} was answered {answer:?}",
                    t.trial_id
                ),
            );
        }
        let after = self.trial(&t.trial_id)?;
        let best = self.summary()?.best_score;
        if after.score != t.score
            || after.metrics.get("test_accuracy") != t.metrics.get("test_accuracy")
            || after.checkpoint_sha256 != t.checkpoint_sha256
            || best == forged
        {
            self.violation(
                true,
                format!("a duplicate completion changed {}: {after:?}", t.trial_id),
            );
        }
        Ok(())
    }

    /// Sends the completion of an attempt the master took back: kept in `late_results` only.
    fn replay_late(&mut self, trial_id: &str, attempt: u32, worker_id: &str) -> Result<()> {
        let mut client = self.worker_api()?;
        let forged = 0.9625 + attempt as f64 / 1000.0;
        let before: Vec<(i64,)> = self.db(&format!(
            "SELECT COUNT(*) FROM late_results WHERE trial_id = '{trial_id}' AND attempt = {attempt} AND score = {forged}"
        ))?;
        let answer = self
            .rt
            .block_on(client.complete(proto::CompleteRequest {
                worker_id: worker_id.to_string(),
                trial_id: trial_id.to_string(),
                attempt,
                score: forged,
                metrics: HashMap::new(),
                checkpoint_sha256: String::new(),
                epochs_run: 2,
            }))?
            .into_inner();
        self.report.late_replays += 1;
        if answer.accepted {
            self.violation(
                true,
                format!("a completion of superseded attempt {attempt} of {trial_id} was accepted: {answer:?}"),
            );
        }
        let after: Vec<(i64,)> = self.db(&format!(
            "SELECT COUNT(*) FROM late_results WHERE trial_id = '{trial_id}' AND attempt = {attempt}
               AND worker_id = '{worker_id}' AND score = {forged}"
        ))?;
        if after[0].0 != before[0].0 + 1 {
            self.violation(
                false,
                format!(
                    "the late completion of {trial_id} attempt {attempt} is not in late_results"
                ),
            );
        }
        let record = self.trial(trial_id)?;
        if record.score == forged || self.summary()?.best_score == forged {
            self.violation(true, format!("a late completion was counted: {record:?}"));
        }
        Ok(())
    }

    /// Records a replay that was not answered or kept as it should have been.
    fn violation(&mut self, changed_state: bool, what: String) {
        println!("  VIOLATION: {what}");
        if changed_state {
            self.report.replays_that_changed_state += 1;
        }
        self.report.replay_violations.push(what);
    }

    // ---- bad input ----------------------------------------------------------------------------

    fn refused<T>(&mut self, name: &str, expected: Code, result: Result<T, tonic::Status>) {
        let got = match result {
            Ok(_) => Ok(()),
            Err(s) => {
                if s.code() != expected {
                    println!(
                        "  {name}: expected {expected:?}, got {:?}: {}",
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

    /// Unauthenticated, malformed and oversized calls; each must be refused with its code and
    /// leave the pool, the workers table and the artifact store as they were.
    fn send_bad_input(&mut self) -> Result<()> {
        let snapshot = self.snapshot()?;
        let counts = self.db_counts()?;
        let files = self.artifact_files();
        let channel = self.channel()?;
        let trials = self.trials()?;
        let real_trial = trials[0].trial_id.clone();
        let real_sha = trials[0].checkpoint_sha256.clone();
        let experiment = self.experiment_id.clone();
        let live = self.live_workers()[0];
        let worker = self.workers[live].id.clone();
        let complete = |score: f64| proto::CompleteRequest {
            worker_id: worker.clone(),
            trial_id: real_trial.clone(),
            attempt: 1,
            score,
            metrics: HashMap::new(),
            checkpoint_sha256: String::new(),
            epochs_run: 1,
        };
        let register = |name: String, slots: u32, version: u32| proto::RegisterRequest {
            protocol_version: version,
            name,
            device: "cpu".into(),
            slots,
        };

        // No token, a wrong token, another scheme, an empty token.
        let mut bare = WorkerServiceClient::new(channel.clone());
        let mut bare_admin = AdminServiceClient::new(channel.clone());
        let mut wrong = worker_client(
            channel.clone(),
            &BearerToken::new("not-the-cluster-token-0123456789").unwrap(),
        );
        let mut wrong_admin = admin_client(
            channel.clone(),
            &BearerToken::new("not-the-cluster-token-0123456789").unwrap(),
        );
        let basic = self.token.clone();
        let mut basic_scheme = WorkerServiceClient::with_interceptor(
            channel.clone(),
            move |mut r: tonic::Request<()>| -> Result<tonic::Request<()>, tonic::Status> {
                r.metadata_mut()
                    .insert("authorization", format!("Basic {basic}").parse().unwrap());
                Ok(r)
            },
        );
        let mut empty_token = AdminServiceClient::with_interceptor(
            channel.clone(),
            |mut r: tonic::Request<()>| -> Result<tonic::Request<()>, tonic::Status> {
                r.metadata_mut()
                    .insert("authorization", "Bearer ".parse().unwrap());
                Ok(r)
            },
        );
        let r = self
            .rt
            .block_on(bare.register(register("intruder".into(), 4, PROTOCOL_VERSION)));
        self.refused("register without token", Code::Unauthenticated, r);
        let r = self.rt.block_on(bare.acquire(proto::AcquireRequest {
            worker_id: worker.clone(),
            wait_ms: 0,
        }));
        self.refused("acquire without token", Code::Unauthenticated, r);
        let r = self.rt.block_on(bare.complete(complete(0.99)));
        self.refused("complete without token", Code::Unauthenticated, r);
        let r = self.rt.block_on(
            bare_admin.submit_experiment(proto::SubmitExperimentRequest { spec_toml: spec() }),
        );
        self.refused("submit without token", Code::Unauthenticated, r);
        let r = self.rt.block_on(wrong.heartbeat(proto::HeartbeatRequest {
            worker_id: worker.clone(),
            trial_id: real_trial.clone(),
            attempt: 1,
            ..Default::default()
        }));
        self.refused("heartbeat with a wrong token", Code::Unauthenticated, r);
        let r = self.rt.block_on(wrong.deregister(proto::DeregisterRequest {
            worker_id: worker.clone(),
        }));
        self.refused("deregister with a wrong token", Code::Unauthenticated, r);
        let r = self
            .rt
            .block_on(wrong_admin.list_trials(proto::ListTrialsRequest {
                experiment_id: experiment.clone(),
            }));
        self.refused("list trials with a wrong token", Code::Unauthenticated, r);
        let r = self
            .rt
            .block_on(
                wrong.upload_checkpoint(tokio_stream::iter(vec![proto::CheckpointChunk {
                    data: vec![7; 1000],
                }])),
            );
        self.refused("upload with a wrong token", Code::Unauthenticated, r);
        let r = self.rt.block_on(basic_scheme.complete(complete(0.99)));
        self.refused("complete with a Basic credential", Code::Unauthenticated, r);
        let r = self
            .rt
            .block_on(empty_token.get_best_model(proto::GetBestModelRequest {
                experiment_id: experiment.clone(),
            }));
        self.refused("best model with an empty token", Code::Unauthenticated, r);

        // Malformed fields.
        let mut w = worker_client(channel.clone(), &self.bearer());
        let mut a = admin_client(channel.clone(), &self.bearer());
        let r = self.rt.block_on(w.acquire(proto::AcquireRequest {
            worker_id: "garbage".into(),
            wait_ms: 0,
        }));
        self.refused("acquire with a garbage worker id", Code::InvalidArgument, r);
        let r = self.rt.block_on(w.heartbeat(proto::HeartbeatRequest {
            worker_id: worker.clone(),
            trial_id: "../../etc/passwd".into(),
            attempt: 1,
            ..Default::default()
        }));
        self.refused(
            "heartbeat with a path as trial id",
            Code::InvalidArgument,
            r,
        );
        let r = self.rt.block_on(w.complete(proto::CompleteRequest {
            worker_id: "worker-".into(),
            ..complete(0.5)
        }));
        self.refused("complete with an empty worker id", Code::InvalidArgument, r);
        let r = self.rt.block_on(w.complete(proto::CompleteRequest {
            trial_id: format!("trial-{}", "a".repeat(100)),
            ..complete(0.5)
        }));
        self.refused(
            "complete with an overlong trial id",
            Code::InvalidArgument,
            r,
        );
        let r = self.rt.block_on(w.deregister(proto::DeregisterRequest {
            worker_id: "worker-x'; DROP TABLE workers; --".into(),
        }));
        self.refused("deregister with SQL in the id", Code::InvalidArgument, r);
        for (label, score) in [
            ("NaN", f64::NAN),
            ("+inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
            ("negative", -0.25),
            ("above one", 1.5),
        ] {
            let r = self.rt.block_on(w.complete(complete(score)));
            self.refused(
                &format!("complete with a {label} score"),
                Code::InvalidArgument,
                r,
            );
        }
        let r = self.rt.block_on(w.complete(proto::CompleteRequest {
            metrics: [("test_accuracy".to_string(), f64::NAN)].into(),
            ..complete(0.5)
        }));
        self.refused("complete with a NaN metric", Code::InvalidArgument, r);
        let r = self.rt.block_on(w.complete(proto::CompleteRequest {
            metrics: [(String::new(), 0.5)].into(),
            ..complete(0.5)
        }));
        self.refused("complete with an unnamed metric", Code::InvalidArgument, r);
        let r = self.rt.block_on(
            w.complete(proto::CompleteRequest {
                metrics: (0..5000)
                    .map(|i| (format!("metric_{i}"), i as f64))
                    .collect(),
                ..complete(0.5)
            }),
        );
        self.refused("complete with 5000 metrics", Code::InvalidArgument, r);
        let r = self
            .rt
            .block_on(w.register(register("x".repeat(10_000), 1, PROTOCOL_VERSION)));
        self.refused("register with a 10 kB name", Code::InvalidArgument, r);
        let r = self
            .rt
            .block_on(w.register(register("greedy".into(), 65, PROTOCOL_VERSION)));
        self.refused("register with 65 slots", Code::InvalidArgument, r);
        let r = self
            .rt
            .block_on(a.submit_experiment(proto::SubmitExperimentRequest {
                spec_toml: "name = \"x\"\n[budget\nmax_trials = ".into(),
            }));
        self.refused("submit broken TOML", Code::InvalidArgument, r);
        let r = self
            .rt
            .block_on(a.submit_experiment(proto::SubmitExperimentRequest {
                spec_toml: spec().replace(&format!("max_trials = {MAX_TRIALS}"), "max_trials = 0"),
            }));
        self.refused("submit a zero budget", Code::InvalidArgument, r);
        let r = self
            .rt
            .block_on(a.get_experiment(proto::GetExperimentRequest {
                experiment_id: "exp-../../x".into(),
            }));
        self.refused("get experiment with a path as id", Code::InvalidArgument, r);
        let r = self.rt.block_on(download(&mut a, "../token"));
        self.refused("download a path", Code::InvalidArgument, r);

        // Well-formed but unknown.
        let unknown_trial = "trial-00000000deadbeef".to_string();
        let r = self.rt.block_on(w.complete(proto::CompleteRequest {
            trial_id: unknown_trial.clone(),
            ..complete(0.5)
        }));
        self.refused("complete an unknown trial", Code::NotFound, r);
        let r = self.rt.block_on(w.heartbeat(proto::HeartbeatRequest {
            worker_id: worker.clone(),
            trial_id: unknown_trial.clone(),
            attempt: 1,
            ..Default::default()
        }));
        self.refused("heartbeat an unknown trial", Code::NotFound, r);
        let r = self.rt.block_on(w.acquire(proto::AcquireRequest {
            worker_id: "worker-00000000deadbeef".into(),
            wait_ms: 0,
        }));
        self.refused("acquire as an unknown worker", Code::NotFound, r);
        let r = self.rt.block_on(w.fail(proto::FailRequest {
            worker_id: "worker-00000000deadbeef".into(),
            trial_id: real_trial.clone(),
            attempt: 1,
            reason: "sabotage".into(),
        }));
        self.refused("fail as an unknown worker", Code::NotFound, r);
        let r = self
            .rt
            .block_on(a.get_experiment(proto::GetExperimentRequest {
                experiment_id: "exp-00000000deadbeef".into(),
            }));
        self.refused("get an unknown experiment", Code::NotFound, r);
        let r = self.rt.block_on(download(&mut a, &"0".repeat(64)));
        self.refused("download an unknown checkpoint", Code::NotFound, r);
        let r = self
            .rt
            .block_on(w.register(register("old".into(), 1, PROTOCOL_VERSION + 1)));
        self.refused(
            "register with another protocol version",
            Code::FailedPrecondition,
            r,
        );
        let r = self.rt.block_on(w.complete(proto::CompleteRequest {
            checkpoint_sha256: "ab".repeat(32),
            ..complete(0.5)
        }));
        self.refused(
            "complete naming a checkpoint never uploaded",
            Code::FailedPrecondition,
            r,
        );

        // Messages above the master's 4 MiB limit, from clients that do not limit themselves.
        let big = 5 << 20;
        let mut w_big =
            worker_client(channel.clone(), &self.bearer()).max_encoding_message_size(64 << 20);
        let mut a_big =
            admin_client(channel.clone(), &self.bearer()).max_encoding_message_size(64 << 20);
        let r = self
            .rt
            .block_on(a_big.submit_experiment(proto::SubmitExperimentRequest {
                spec_toml: format!("{}\n#{}", spec(), "x".repeat(big)),
            }));
        self.refused("submit a 5 MiB spec", Code::OutOfRange, r);
        let r = self.rt.block_on(
            w_big.complete(proto::CompleteRequest {
                metrics: (0..(big / 16))
                    .map(|i| (format!("m{i:011}"), 0.5))
                    .collect(),
                ..complete(0.5)
            }),
        );
        self.refused("complete with a 5 MiB metrics map", Code::OutOfRange, r);
        let r =
            self.rt
                .block_on(w_big.upload_checkpoint(tokio_stream::iter(vec![
                    proto::CheckpointChunk { data: vec![1; big] },
                ])));
        self.refused("upload a 5 MiB chunk", Code::OutOfRange, r);
        // The limit is per message: the real checkpoints above were larger than one chunk.
        ensure!(!real_sha.is_empty());

        // No trace.
        let after = self.snapshot()?;
        ensure!(after == snapshot, "a refused call changed the pool");
        let counts_after = self.db_counts()?;
        ensure!(
            counts_after == counts,
            "a refused call left rows: {counts:?} -> {counts_after:?}"
        );
        let files_after = self.artifact_files();
        ensure!(
            files_after.0 == files.0 && files_after.1 == 0,
            "a refused upload left files: {files:?} -> {files_after:?}"
        );
        Ok(())
    }

    fn worker_logs(&self) -> String {
        self.workers
            .iter()
            .map(|w| read_log(&w.log))
            .collect::<Vec<_>>()
            .join("\n")
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

async fn download(
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

#[test]
fn no_trial_is_lost_and_no_stranger_gets_in() {
    require_fashion_mnist();
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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
    )
    .unwrap();
    let proxy = rt.block_on(Proxy::start(master.addr)).unwrap();
    let token = std::fs::read_to_string(master.token_file())
        .unwrap()
        .trim()
        .to_string();
    let mut suite = Suite {
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
    let result = run(&mut suite);
    if let Ok(dir) = std::env::var("EXPLORE_FAULT_LOGS") {
        suite.keep_logs(Path::new(&dir));
    }
    if let Err(e) = result {
        panic!("{e:#}\n{}", suite.diagnostics());
    }
}

fn run(s: &mut Suite) -> Result<()> {
    s.add_worker("w0", false)?;
    s.add_worker("w1", false)?;
    s.add_worker("w2", true)?;
    let spec = spec();
    let submitted = s.admin_call("submit", move |mut c| {
        let spec = spec.clone();
        async move {
            c.submit_experiment(proto::SubmitExperimentRequest { spec_toml: spec })
                .await
        }
    })?;
    s.experiment_id = submitted.experiment_id;
    println!(
        "experiment {} submitted, {MAX_TRIALS} trials, lease {LEASE_SECS} s",
        s.experiment_id
    );

    // Faults, interleaved with the run.
    s.crash_master_mid_training()?;
    s.ensure_running()?;
    s.cut_worker_off()?;
    s.ensure_running()?;
    let first_done = s
        .trials()?
        .into_iter()
        .find(|t| t.status == "completed")
        .context("a trial completed by now")?;
    s.replay_duplicate(&first_done)?;
    s.crash_master_after_completion()?;
    s.ensure_running()?;
    s.kill_worker_mid_trial()?;
    s.ensure_running()?;
    let superseded = s.report.superseded.clone();
    for (trial, attempt, worker) in &superseded {
        s.replay_late(trial, *attempt, worker)?;
    }
    s.crash_master_while_leased()?;
    s.ensure_running()?;
    s.drain_master_mid_training()?;
    ensure!(
        s.report.faults["master_sigkill_restart"] as usize >= MASTER_RESTARTS,
        "three master restarts"
    );

    // The run ends by itself.
    let summary = poll(
        "the experiment to complete",
        s.limit(Duration::from_secs(180)),
        Duration::from_millis(250),
        || Ok(Some(s.summary()?).filter(|x| x.status != "running")),
    )?;
    ensure!(
        summary.status == "completed",
        "experiment ended {}: {}",
        summary.status,
        summary.status_reason
    );
    // Trials still held when the budget was reached are told to stop; wait until none is held.
    poll(
        "no trial left in flight",
        s.limit(LEASE + Duration::from_secs(20)),
        Duration::from_millis(200),
        || {
            Ok(s.trials()?
                .iter()
                .all(|t| !is_held(&t.status) && t.status != "queued")
                .then_some(()))
        },
    )?;

    // Replays on the finished pool: every completed attempt again, with another score, and
    // every superseded attempt again. Nothing may change but late_results.
    let before = s.snapshot()?;
    let counts_before = s.db_counts()?;
    let completed: Vec<proto::TrialRecord> = s
        .trials()?
        .into_iter()
        .filter(|t| t.status == "completed")
        .collect();
    for t in &completed {
        s.replay_duplicate(t)?;
    }
    for (trial, attempt, worker) in &superseded {
        s.replay_late(trial, *attempt, worker)?;
    }
    let after = s.snapshot()?;
    let counts_after = s.db_counts()?;
    if before != after {
        s.violation(
            true,
            format!("replays changed the pool:\n{before}\n->\n{after}"),
        );
    }
    let mut expected_counts = counts_before.clone();
    *expected_counts.get_mut("late_results").unwrap() += superseded.len() as i64;
    if counts_after != expected_counts {
        s.violation(
            true,
            format!("replays changed the tables: {counts_before:?} -> {counts_after:?}"),
        );
    }

    s.send_bad_input()?;

    // Workers drain and leave on SIGTERM.
    for i in s.live_workers() {
        let w = &mut s.workers[i];
        let status = w.proc.terminate(Duration::from_secs(30))?;
        ensure!(status.success(), "{} exited with {status:?}", w.name);
    }

    // The books.
    let summary = s.summary()?;
    let trials = s.trials()?;
    let completed: Vec<&proto::TrialRecord> =
        trials.iter().filter(|t| t.status == "completed").collect();
    let ids: HashSet<&str> = completed.iter().map(|t| t.trial_id.as_str()).collect();
    let seqs: HashSet<u32> = completed.iter().map(|t| t.seq).collect();
    let db_completed: Vec<(i64,)> =
        s.db("SELECT COUNT(*) FROM trials WHERE status = 'completed'")?;
    let late: Vec<(String, i64, String, f64)> =
        s.db("SELECT trial_id, attempt, worker_id, score FROM late_results")?;
    let lost = trials.iter().filter(|t| t.status != "completed").count()
        + s.report
            .hit
            .iter()
            .filter(|id| !ids.contains(id.as_str()))
            .count();
    let double_counts = (summary.trials_completed as usize).saturating_sub(ids.len())
        + ids.len().saturating_sub(seqs.len())
        + (db_completed[0].0 as usize).saturating_sub(MAX_TRIALS as usize)
        + s.report.replays_that_changed_state as usize;
    let mut with_weights = 0;
    let mut admin = admin_client(s.channel()?, &s.bearer());
    for t in &completed {
        ensure!(
            t.score.is_finite() && (0.0..=1.0).contains(&t.score),
            "trial {} has score {}",
            t.trial_id,
            t.score
        );
        let bytes = s.rt.block_on(download(&mut admin, &t.checkpoint_sha256))?;
        ensure!(
            hex(&Sha256::digest(&bytes)) == t.checkpoint_sha256,
            "checkpoint of {} does not match its address",
            t.trial_id
        );
        with_weights += 1;
    }
    let pool_max = completed
        .iter()
        .map(|t| t.score)
        .fold(f64::NEG_INFINITY, f64::max);
    let best = s.admin_call("best model", |mut c| {
        let id = s.experiment_id.clone();
        async move {
            c.get_best_model(proto::GetBestModelRequest { experiment_id: id })
                .await
        }
    })?;
    let master_log = read_log(&s.master.log);
    let refusals_logged = master_log.matches("refused unauthenticated call").count() as u32;
    let lease_expiries = master_log.matches("lease expired").count();
    let worker_logs = s.worker_logs();
    let worker_retries = worker_logs.matches("master unreachable, retrying").count();
    let bad_tried = s.report.bad_inputs.len();
    let bad_refused = s
        .report
        .bad_inputs
        .iter()
        .filter(|b| b.got.is_err())
        .count();
    let bad_right_code = s
        .report
        .bad_inputs
        .iter()
        .filter(|b| b.got == Err(b.expected))
        .count();
    let by_code: BTreeMap<String, usize> =
        s.report
            .bad_inputs
            .iter()
            .fold(BTreeMap::new(), |mut m, b| {
                *m.entry(format!("{:?}", b.expected)).or_default() += 1;
                m
            });

    let report = json!({
        "experiment": s.experiment_id,
        "max_trials": MAX_TRIALS,
        "workers": 3,
        "lease_secs": LEASE_SECS,
        "wall_seconds": (s.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "faults": s.report.faults,
        "fault_moments": s.report.moments,
        "lease_expiries_logged": lease_expiries,
        "worker_reconnect_retries_logged": worker_retries,
        "master_bind_retries": s.master.bind_retries,
        "trials_completed": summary.trials_completed,
        "trials_in_pool": trials.len(),
        "trials_with_verified_checkpoint": with_weights,
        "trials_lost": lost,
        "double_counts": double_counts,
        "duplicate_completions_replayed": s.report.duplicate_replays,
        "late_completions_replayed": s.report.late_replays,
        "late_results_rows": late.len(),
        "best_score": summary.best_score,
        "pool_max_score": pool_max,
        "bad_inputs_tried": bad_tried,
        "bad_inputs_refused": bad_refused,
        "bad_inputs_refused_with_expected_code": bad_right_code,
        "bad_inputs_by_expected_code": by_code,
        "unauthenticated_sent": s.report.unauthenticated_sent,
        "unauthenticated_refusals_logged": refusals_logged,
    });
    println!("\n==== fault-injection summary ====");
    for (kind, n) in &s.report.faults {
        println!("fault {kind:<32} {n}");
    }
    println!("lease expiries (master log)       {lease_expiries}");
    println!("worker reconnect retries (logs)   {worker_retries}");
    println!(
        "trials completed                  {} of {MAX_TRIALS}",
        summary.trials_completed
    );
    println!("trials lost                       {lost}");
    println!("double counts                     {double_counts}");
    println!(
        "replays: duplicate {} / late {} (late_results rows {})",
        s.report.duplicate_replays,
        s.report.late_replays,
        late.len()
    );
    println!(
        "bad inputs tried / refused / right code   {bad_tried} / {bad_refused} / {bad_right_code}"
    );
    println!(
        "unauthenticated sent / refusals logged    {} / {refusals_logged}",
        s.report.unauthenticated_sent
    );
    println!("best {} = pool max {pool_max}", summary.best_score);
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Ok(path) = std::env::var("EXPLORE_FAULT_REPORT") {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {path}"))?;
    }

    // Verdicts.
    ensure!(
        s.report.replay_violations.is_empty(),
        "replays: {:#?}",
        s.report.replay_violations
    );
    for b in &s.report.bad_inputs {
        ensure!(
            b.got == Err(b.expected),
            "bad input {:?} was answered {:?}, expected {:?}",
            b.name,
            b.got,
            b.expected
        );
    }
    ensure!(lost == 0, "{lost} trials lost: {trials:#?}");
    ensure!(double_counts == 0, "{double_counts} double counts");
    ensure!(summary.status == "completed");
    ensure!(summary.trials_completed == MAX_TRIALS);
    ensure!(completed.len() == MAX_TRIALS as usize && ids.len() == completed.len());
    ensure!(seqs.len() == completed.len(), "each proposal once");
    ensure!(summary.trials_failed == 0 && summary.trials_running == 0);
    ensure!(with_weights == MAX_TRIALS as usize);
    ensure!(
        summary.best_score == pool_max && best.score == pool_max,
        "best {} / {} is not the pool's maximum {pool_max}",
        summary.best_score,
        best.score
    );
    ensure!(
        late.len() as u32 >= s.report.late_replays,
        "every late replay is kept"
    );
    ensure!(
        refusals_logged == s.report.unauthenticated_sent,
        "the master logged {refusals_logged} refusals for {} unauthenticated calls",
        s.report.unauthenticated_sent
    );
    ensure!(s.report.faults.get("worker_sigkill").copied().unwrap_or(0) >= 1);
    ensure!(
        s.report
            .faults
            .get("network_cut_longer_than_lease")
            .copied()
            .unwrap_or(0)
            >= 1
    );
    for text in [&master_log, &worker_logs] {
        ensure!(!text.contains("panicked"), "a process panicked");
        ensure!(
            !text.contains("database is locked"),
            "the database was found locked"
        );
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
