//! Simulated workers for control-plane tests and benchmarks (`worker simulate --count N`).
//!
//! Each simulated worker is a real gRPC client of its own: it registers, long-polls `Acquire`,
//! sends a heartbeat for the trial (so leases, epoch records and early stopping run as for a
//! real worker), and reports a **synthetic** score with `Complete` at once. No libtorch, no
//! data, no checkpoint: the score is a smooth function of the hyperparameters and the genome's
//! size plus noise seeded by the trial's seed ([`synthetic_score`]), deterministic for a trial,
//! and it is never a real accuracy (the result carries the metric `synthetic = 1`).
//!
//! This module depends on `explore_common`, tokio, tonic, rand, serde_json and tracing only (no
//! `tch`), so tests of other crates can include it as a module.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use explore_common::client::{self, BearerToken, TlsOptions};
use explore_common::proto::{self, PROTOCOL_VERSION};
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::watch;

/// What the simulated workers do and for how long.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// URL of the master.
    pub master: String,
    pub tls: TlsOptions,
    /// The cluster token.
    pub token: String,
    /// Simulated workers (one slot each).
    pub count: usize,
    /// gRPC connections they share (0 = one per worker); HTTP/2 multiplexes the rest.
    pub connections: usize,
    /// Stop after this long (None = until the work runs out).
    pub duration: Option<Duration>,
    /// A worker leaves after this long without a trial.
    pub idle_exit: Duration,
    /// Long-poll wait of each `Acquire`.
    pub acquire_wait: Duration,
    /// Prefix of the workers' names.
    pub name: String,
    /// Also call `ListExperiments` (the status view) this often, as `master status` would.
    pub status_every: Option<Duration>,
    /// Pretend each trial trains this long before its result (zero: report at once).
    pub trial_time: Duration,
    /// Spread of the pretended training time: each trial takes `trial_time` times a factor
    /// drawn uniformly from `[1 - trial_jitter, 1 + trial_jitter]` (0: every trial the same;
    /// at most 1). Real trials differ in size, so real workers drift apart; without a spread
    /// the simulated ones stay in lock-step and ask in bursts.
    pub trial_jitter: f64,
    /// Workers start one after another over this long (zero: all at once), as the pods of a
    /// Kubernetes job or the workers of a growing cluster do.
    pub ramp: Duration,
}

impl SimConfig {
    /// `count` workers against `master` with `token`, running until the work runs out.
    pub fn new(master: &str, token: &str, count: usize) -> SimConfig {
        SimConfig {
            master: master.to_string(),
            tls: TlsOptions::default(),
            token: token.to_string(),
            count,
            connections: 0,
            duration: None,
            idle_exit: Duration::from_secs(3),
            acquire_wait: Duration::from_millis(1000),
            name: "sim".into(),
            status_every: None,
            trial_time: Duration::ZERO,
            trial_jitter: 0.0,
            ramp: Duration::ZERO,
        }
    }
}

/// Percentiles of one kind of call, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    pub calls: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(samples: &mut [Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort();
        let at =
            |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
        Latency {
            calls: samples.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// What the simulated workers did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SimReport {
    pub workers: usize,
    /// Trials completed (answers with `accepted = true`, not "already recorded").
    pub trials: u64,
    pub seconds: f64,
    pub trials_per_second: f64,
    /// `Acquire` calls that returned a trial.
    pub acquire: Latency,
    /// `Acquire` calls that returned no trial within the wait.
    pub acquire_empty: u64,
    pub heartbeat: Latency,
    pub complete: Latency,
    /// `ListExperiments` calls (only with `status_every`).
    pub status: Latency,
    /// Calls that failed (connection, status) and results the master kept as history only.
    pub errors: u64,
    /// The first few errors, for the log.
    pub error_samples: Vec<String>,
    /// Every completed trial id with how many times its completion was accepted (each should
    /// be 1): the exactly-once accounting of tests.
    #[serde(skip)]
    pub completed: HashMap<String, u32>,
}

#[derive(Default)]
struct Shared {
    acquire: Vec<Duration>,
    heartbeat: Vec<Duration>,
    complete: Vec<Duration>,
    status: Vec<Duration>,
    acquire_empty: u64,
    errors: u64,
    error_samples: Vec<String>,
    completed: HashMap<String, u32>,
}

impl Shared {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.error_samples.len() < 20 {
            self.error_samples.push(what);
        }
    }
}

/// A synthetic score in [0.05, 0.99] for a trial: a smooth function of its hyperparameters
/// (best near learning rate 3e-3, batch 128, weight decay 1e-4) and of the genome's size, plus
/// noise drawn from the trial's seed. Deterministic; not an accuracy of anything.
pub fn synthetic_score(genome_json: &str, hparams_json: &str, seed: u64) -> f64 {
    let hp: serde_json::Value = serde_json::from_str(hparams_json).unwrap_or_default();
    let num = |key: &str, default: f64| hp.get(key).and_then(|v| v.as_f64()).unwrap_or(default);
    let lr = num("learning_rate", 1e-3).max(1e-9).log10();
    let batch = num("batch_size", 128.0).max(1.0).log2();
    let wd = num("weight_decay", 1e-4).max(1e-9).log10();
    let epochs = num("epochs", 3.0);
    let genome: serde_json::Value = serde_json::from_str(genome_json).unwrap_or_default();
    let blocks = genome
        .get("blocks")
        .and_then(|b| b.as_array())
        .map_or(1, |b| b.len()) as f64;
    let smooth = 0.55
        + 0.20 * (-(lr + 2.5).powi(2) / 1.5).exp()
        + 0.05 * (-(batch - 7.0).powi(2) / 4.0).exp()
        + 0.03 * (-(wd + 4.0).powi(2) / 4.0).exp()
        + 0.06 * (1.0 - (-blocks / 4.0).exp())
        + 0.04 * (1.0 - (-epochs / 3.0).exp());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5157_4e54_4845_5449);
    let noise: f64 = rng.gen_range(-0.02..0.02);
    (smooth + noise).clamp(0.05, 0.99)
}

/// Runs `config.count` simulated workers until the work runs out, `config.duration` passes or
/// `stop` turns true; then they deregister and the report is returned.
pub async fn run(config: SimConfig, stop: watch::Receiver<bool>) -> Result<SimReport, String> {
    let token = BearerToken::new(&config.token).map_err(|e| format!("token: {e}"))?;
    let connections = match config.connections {
        0 => config.count,
        n => n.min(config.count.max(1)),
    };
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(
            client::connect_with(&config.master, &config.tls)
                .await
                .map_err(|e| format!("connect {}: {e}", config.master))?,
        );
    }
    let shared = Arc::new(Mutex::new(Shared::default()));
    let started = Instant::now();
    let deadline = config.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tasks = Vec::with_capacity(config.count);
    for n in 0..config.count {
        let worker = client::worker_client(channels[n % connections].clone(), &token);
        let shared = shared.clone();
        let stop = stop.clone();
        let config = config.clone();
        let start_after = config.ramp.mul_f64(n as f64 / config.count as f64);
        tasks.push(tokio::spawn(async move {
            let mut stop_early = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(start_after) => {}
                _ = stop_early.changed() => return,
            }
            simulated_worker(worker, n, &config, deadline, stop, &shared).await
        }));
    }
    let poller = config.status_every.map(|every| {
        let mut admin = client::admin_client(channels[0].clone(), &token);
        let shared = shared.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                let t0 = Instant::now();
                let r = admin
                    .list_experiments(proto::ListExperimentsRequest {})
                    .await;
                let elapsed = t0.elapsed();
                let mut s = shared.lock().unwrap();
                match r {
                    Ok(_) => s.status.push(elapsed),
                    Err(st) => s.error(format!("list_experiments: {}", client::status_text(&st))),
                }
            }
        })
    });
    for task in tasks {
        if let Err(e) = task.await {
            shared.lock().unwrap().error(format!("worker task: {e}"));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(poller) = poller {
        poller.abort();
    }
    let mut s = std::mem::take(&mut *shared.lock().unwrap());
    let trials = s.completed.values().map(|&n| u64::from(n)).sum();
    Ok(SimReport {
        workers: config.count,
        trials,
        seconds,
        trials_per_second: trials as f64 / seconds.max(1e-9),
        acquire: Latency::of(&mut s.acquire),
        acquire_empty: s.acquire_empty,
        heartbeat: Latency::of(&mut s.heartbeat),
        complete: Latency::of(&mut s.complete),
        status: Latency::of(&mut s.status),
        errors: s.errors,
        error_samples: s.error_samples,
        completed: s.completed,
    })
}

type Client = proto::worker_service_client::WorkerServiceClient<client::AuthChannel>;

async fn simulated_worker(
    mut worker: Client,
    n: usize,
    config: &SimConfig,
    deadline: Option<tokio::time::Instant>,
    mut stop: watch::Receiver<bool>,
    shared: &Mutex<Shared>,
) {
    let registered = worker
        .register(proto::RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            name: format!("{}-{n}", config.name),
            device: "simulated (synthetic scores)".into(),
            slots: 1,
        })
        .await;
    let worker_id = match registered {
        Ok(r) => r.into_inner().worker_id,
        Err(s) => {
            shared
                .lock()
                .unwrap()
                .error(format!("register: {}", client::status_text(&s)));
            return;
        }
    };
    // Idle time counts from the end of the last trial (or from the start).
    let mut idle_since = Instant::now();
    let mut had_trial = false;
    let mut pace = rand::rngs::StdRng::seed_from_u64(0x7061_6365 ^ n as u64);
    let over = |stop: &watch::Receiver<bool>| {
        *stop.borrow() || deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
    };
    while !over(&stop) {
        if had_trial {
            idle_since = Instant::now();
            had_trial = false;
        }
        let t0 = Instant::now();
        let acquired = tokio::select! {
            r = worker.acquire(proto::AcquireRequest {
                worker_id: worker_id.clone(),
                wait_ms: config.acquire_wait.as_millis() as u32,
            }) => r,
            _ = stop.changed() => break,
        };
        let elapsed = t0.elapsed();
        let trial = match acquired {
            Ok(r) => r.into_inner().trial,
            Err(s) => {
                shared
                    .lock()
                    .unwrap()
                    .error(format!("acquire: {}", client::status_text(&s)));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(trial) = trial else {
            shared.lock().unwrap().acquire_empty += 1;
            if idle_since.elapsed() >= config.idle_exit {
                break;
            }
            continue;
        };
        shared.lock().unwrap().acquire.push(elapsed);
        had_trial = true;
        let score = synthetic_score(&trial.genome_json, &trial.hparams_json, trial.seed);
        let epochs = serde_json::from_str::<serde_json::Value>(&trial.hparams_json)
            .ok()
            .and_then(|v| v.get("epochs").and_then(|e| e.as_u64()))
            .unwrap_or(1)
            .clamp(1, 10_000) as u32;
        let (epochs, score) = if trial.kind == proto::TrialKind::Probe as i32 {
            (0, score)
        } else {
            (epochs, score)
        };
        if !config.trial_time.is_zero() {
            let time = trial_time(config, &mut pace);
            tokio::select! {
                _ = tokio::time::sleep(time) => {}
                _ = stop.changed() => {}
            }
        }
        if epochs > 0 {
            let t0 = Instant::now();
            let beat = worker
                .heartbeat(proto::HeartbeatRequest {
                    worker_id: worker_id.clone(),
                    trial_id: trial.trial_id.clone(),
                    attempt: trial.attempt,
                    started: true,
                    epoch: epochs,
                    total_epochs: epochs,
                    train_loss: 1.0 - score,
                    val_accuracy: score,
                    metrics: Default::default(),
                })
                .await;
            let elapsed = t0.elapsed();
            match beat {
                Ok(r) => {
                    shared.lock().unwrap().heartbeat.push(elapsed);
                    if r.into_inner().command != proto::TrialCommand::Continue as i32 {
                        // Pruned, or the experiment ended: nothing to report.
                        continue;
                    }
                }
                Err(s) => {
                    shared
                        .lock()
                        .unwrap()
                        .error(format!("heartbeat: {}", client::status_text(&s)));
                    continue;
                }
            }
        }
        let t0 = Instant::now();
        let done = worker
            .complete(proto::CompleteRequest {
                worker_id: worker_id.clone(),
                trial_id: trial.trial_id.clone(),
                attempt: trial.attempt,
                score,
                metrics: [("synthetic".to_string(), 1.0)].into(),
                checkpoint_sha256: String::new(),
                epochs_run: epochs,
            })
            .await;
        let elapsed = t0.elapsed();
        let mut s = shared.lock().unwrap();
        match done {
            Ok(r) => {
                s.complete.push(elapsed);
                let answer = r.into_inner();
                if answer.accepted {
                    *s.completed.entry(trial.trial_id.clone()).or_default() += 1;
                } else {
                    s.error(format!(
                        "complete {}: kept as history: {}",
                        trial.trial_id, answer.reason
                    ));
                }
            }
            Err(st) => s.error(format!("complete: {}", client::status_text(&st))),
        }
    }
    if let Err(s) = worker
        .deregister(proto::DeregisterRequest {
            worker_id: worker_id.clone(),
        })
        .await
    {
        shared
            .lock()
            .unwrap()
            .error(format!("deregister: {}", client::status_text(&s)));
    }
}

/// How long one trial pretends to train: `trial_time` spread by `trial_jitter`.
fn trial_time(config: &SimConfig, rng: &mut impl Rng) -> Duration {
    let jitter = config.trial_jitter.clamp(0.0, 1.0);
    if jitter == 0.0 {
        return config.trial_time;
    }
    config
        .trial_time
        .mul_f64(rng.gen_range(1.0 - jitter..=1.0 + jitter))
}

/// The report as the JSON `worker simulate --json` prints.
pub fn report_json(report: &SimReport) -> serde_json::Value {
    json!({
        "mode": "synthetic",
        "workers": report.workers,
        "trials": report.trials,
        "seconds": report.seconds,
        "trials_per_second": report.trials_per_second,
        "acquire": report.acquire,
        "acquire_empty": report.acquire_empty,
        "heartbeat": report.heartbeat,
        "complete": report.complete,
        "status": report.status,
        "errors": report.errors,
        "error_samples": report.error_samples,
        "duplicate_completions": report.completed.values().filter(|&&n| n > 1).count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_times_spread_over_the_jitter_range_and_none_without_it() {
        let mut config = SimConfig::new("http://127.0.0.1:1", "t", 1);
        config.trial_time = Duration::from_secs(10);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(trial_time(&config, &mut rng), Duration::from_secs(10));
        config.trial_jitter = 0.5;
        let times: Vec<f64> = (0..2000)
            .map(|_| trial_time(&config, &mut rng).as_secs_f64())
            .collect();
        let (low, high) = times
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &t| (l.min(t), h.max(t)));
        assert!(low >= 5.0 && high <= 15.0, "{low}..{high}");
        // Spread over the whole range, not bunched.
        assert!(low < 5.2 && high > 14.8, "{low}..{high}");
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        assert!((mean - 10.0).abs() < 0.3, "{mean}");
    }
}
