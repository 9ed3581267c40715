//! Fault injection, end to end, one scenario per test. Each scenario starts a real `master`
//! and real `worker` processes on loopback (`faults/harness.rs`), submits an experiment on a
//! Fashion-MNIST subset, injects its fault while the experiment runs, and ends with the books:
//! every budgeted trial completed once, each chain and the best as the completed trials imply,
//! every lease expiry the master logged caused by the fault (and every lease the fault took
//! away expired), late results kept as history only.
//!
//! - `master_sigkill_*`: the master is SIGKILLed three times (while a trial trains, right after
//!   a completion, while a trial is freshly leased and then kept down for longer than a lease);
//!   each kill lands with trials in flight and costs none of them its lease.
//! - `master_sigterm_*`: the master drains on SIGTERM while a trial trains and comes back.
//! - `worker_sigkill_*`: a worker is SIGKILLed between the first and second epoch of a trial.
//! - `network_cut_*`: the proxied worker is cut off for longer than its lease, once with the
//!   connections reset and once silently (nothing closed, every packet swallowed) so that the
//!   worker must notice by its HTTP/2 keepalive.
//! - `worker_sigstop_*`: the only worker is frozen with SIGSTOP while it trains, for longer than
//!   its lease, then resumed with SIGCONT: it must learn its lease is gone and train again.
//! - `replays_and_bad_calls_*`: duplicate and late completions are replayed, then 40 bad calls
//!   are sent; the full contents of every table and the artifact files' hashes are compared.
//!
//! Every wait polls a condition with a deadline; a scenario is bounded to 240 s. Set
//! `EXPLORE_FAULT_LOGS=DIR` to keep the logs and `EXPLORE_FAULT_REPORT=DIR` for JSON summaries.

#[path = "faults/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use explore_common::client::{admin_client, worker_client, BearerToken};
use explore_common::proto::admin_service_client::AdminServiceClient;
use explore_common::proto::worker_service_client::WorkerServiceClient;
use explore_common::proto::{self, PROTOCOL_VERSION};
use explore_tests::proxy::PauseMode;
use explore_tests::{poll, read_log};
use harness::{download, scenario, valid_spec, Cluster, Config, LEASE, LEASE_SECS, TICK};
use serde_json::json;
use tonic::Code;

fn config(name: &'static str, max_trials: u32) -> Config {
    Config {
        name,
        max_trials,
        direct_workers: 2,
        proxied_worker: false,
        proxied_keepalive_secs: None,
        abandoned_lease: false,
    }
}

#[test]
fn master_sigkill_with_trials_in_flight_costs_no_lease() {
    scenario(config("master_sigkill", 8), |c| {
        // 1. While a trial trains.
        let t = c.wait_for_training(Duration::from_secs(90))?;
        c.restart_master(
            "master_sigkill_restart",
            format!(
                "while {} attempt {} trained on {}",
                t.trial_id, t.attempt, t.worker_id
            ),
            Duration::ZERO,
            false,
        )?;
        c.ensure_running()?;
        // 2. Right after a completion, while workers upload, complete and acquire.
        let before = c.completed()?;
        let after = poll(
            "the next completion",
            c.limit(Duration::from_secs(90)),
            Duration::from_millis(20),
            || Ok(Some(c.completed()?).filter(|&n| n > before)),
        )?;
        c.restart_master(
            "master_sigkill_restart",
            format!("right after completion #{after}"),
            Duration::ZERO,
            false,
        )?;
        c.ensure_running()?;
        // 3. While a trial is freshly leased, then down for longer than a lease: only the fresh
        //    lease period the restarted master grants keeps the held trials.
        let t = poll(
            "a freshly leased trial",
            c.limit(Duration::from_secs(90)),
            Duration::from_millis(20),
            || Ok(c.trials()?.into_iter().find(|t| t.status == "leased")),
        )?;
        c.restart_master(
            "master_sigkill_restart",
            format!("while {} was leased to {}", t.trial_id, t.worker_id),
            LEASE + Duration::from_secs(1),
            false,
        )?;
        ensure!(c.report.faults["master_sigkill_restart"] == 3);
        ensure!(!c.report.kept.is_empty(), "no attempt was in flight");
        Ok(())
    });
}

#[test]
fn master_sigterm_drains_and_restarts_without_losing_a_lease() {
    scenario(config("master_sigterm", 4), |c| {
        let t = c.wait_for_training(Duration::from_secs(90))?;
        c.restart_master(
            "master_sigterm_restart",
            format!("SIGTERM while {} trained on {}", t.trial_id, t.worker_id),
            Duration::ZERO,
            true,
        )?;
        ensure!(c.report.faults["master_sigterm_restart"] == 1);
        Ok(())
    });
}

#[test]
fn worker_sigkill_between_two_epochs_requeues_its_trials() {
    scenario(config("worker_sigkill", 5), |c| {
        for (round, victim) in ["w0", "w1"].into_iter().enumerate() {
            let i = c.worker_index(victim);
            let (id, log) = (c.workers[i].id.clone(), c.workers[i].log.clone());
            // Between the epochs: the master recorded epoch 1 and the worker has not logged
            // epoch 2.
            let t = poll(
                &format!("{victim} between the first and second epoch of a trial"),
                c.limit(Duration::from_secs(90)),
                TICK,
                || {
                    let rows: Vec<(String, i64)> = c.db(&format!(
                        "SELECT t.id, t.attempt FROM trials t
                          WHERE t.worker_id = '{id}' AND t.status = 'running'
                            AND EXISTS (SELECT 1 FROM trial_epochs e
                                         WHERE e.trial_id = t.id AND e.epoch = 1)
                            AND NOT EXISTS (SELECT 1 FROM trial_epochs e
                                             WHERE e.trial_id = t.id AND e.epoch >= 2)"
                    ))?;
                    let text = read_log(&log);
                    Ok(rows.into_iter().find(|(t, _)| {
                        text.contains(&format!("epoch done trial_id={t} epoch=1 "))
                            && !text.contains(&format!("epoch done trial_id={t} epoch=2 "))
                    }))
                },
            )?;
            c.workers[i].proc.kill_hard()?;
            let between =
                !read_log(&log).contains(&format!("epoch done trial_id={} epoch=2 ", t.0));
            let held = c.held(Some(&id))?;
            ensure!(
                held.iter().any(|h| h.0 == t.0),
                "{} was no longer held by {victim} at the kill",
                t.0
            );
            c.fault(
                "worker_sigkill",
                format!(
                    "{victim} killed {} while training {} attempt {}; it held {held:?}",
                    if between {
                        "between epochs 1 and 2"
                    } else {
                        "after epoch 2 (too late)"
                    },
                    t.0,
                    t.1
                ),
            )?;
            c.report.superseded.extend(held.iter().cloned());
            c.add_worker(&format!("w{}", 2 + round), false)?;
            for (trial, attempt, _) in &held {
                poll(
                    "the killed worker's lease to expire",
                    c.limit(LEASE + Duration::from_secs(30)),
                    Duration::from_millis(100),
                    || Ok(Some(c.trial(trial)?).filter(|r| r.attempt > *attempt)),
                )?;
            }
            for attempt in &held {
                c.replay_late(attempt)?;
            }
            if between {
                c.report
                    .extra
                    .insert("killed_between_epochs".into(), json!(t.0));
                return Ok(());
            }
            c.ensure_running()?;
        }
        bail!("could not kill a worker between two epochs in two tries")
    });
}

/// Cuts the proxied worker off in `mode` while it trains, for longer than its lease; then
/// restores the network and waits until the worker learned its lease is gone and trains
/// something else. Every lease the proxied worker held during the cut and lost is expected to
/// expire, and the trial it trained must be one of them.
fn cut_proxied_worker(c: &mut Cluster, mode: PauseMode, kind: &'static str) -> Result<()> {
    let wp = c.workers[c.worker_index("wp")].id.clone();
    let log = c.workers[c.worker_index("wp")].log.clone();
    for _ in 0..3 {
        let t = c.wait_proxied_training()?;
        c.proxy.as_ref().context("proxy")?.pause(mode);
        let paused_at = Instant::now();
        // Every attempt the worker holds during the cut, including one leased in the instant
        // of the cut whose answer never reached it.
        let mut held = c.held(Some(&wp))?;
        let superseded = poll(
            "the cut-off worker's lease to expire",
            c.limit(LEASE + Duration::from_secs(20)),
            Duration::from_millis(100),
            || {
                for h in c.held(Some(&wp))? {
                    if !held.contains(&h) {
                        held.push(h);
                    }
                }
                let r = c.trial(&t.trial_id)?;
                Ok(if r.attempt > t.attempt {
                    Some(true)
                } else if r.status == "completed" {
                    Some(false)
                } else {
                    None
                })
            },
        )?;
        if superseded {
            // Stay cut a while past the lease (the fault's length, not a wait for something).
            let cut_for = LEASE + Duration::from_secs(2);
            if let Some(rest) = cut_for.checked_sub(paused_at.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        let mark = read_log(&log).len();
        let proxy = c.proxy.as_ref().context("proxy")?;
        proxy.resume();
        let (cut, silenced) = (proxy.cut_connections(), proxy.silenced().len());
        // Which held attempts the cut took away: those requeued (attempt + 1) meanwhile.
        let mut lost = Vec::new();
        for h in &held {
            if c.trial(&h.0)?.attempt > h.1 {
                lost.push(h.clone());
            }
        }
        c.report.superseded.extend(lost.iter().cloned());
        if !superseded {
            println!(
                "[{}]   cut too late for {}, trying again",
                c.cfg.name, t.trial_id
            );
            continue;
        }
        // Resumed now: the cut lasted this long, and must have outlasted the lease.
        let cut_lasted = paused_at.elapsed();
        ensure!(
            cut_lasted > LEASE,
            "the {kind} lasted {cut_lasted:?}, not longer than the {LEASE:?} lease"
        );
        c.report
            .extra
            .insert("cut_seconds".into(), json!(cut_lasted.as_secs_f64()));
        c.fault(
            kind,
            format!(
                "wp cut off for {:.1} s (lease {LEASE_SECS} s) while training {} attempt {}; \
                 {cut} connections reset, {silenced} silenced; leases lost: {lost:?}",
                cut_lasted.as_secs_f64(),
                t.trial_id,
                t.attempt,
            ),
        )?;
        c.proxied_worker_recovers(&t, mark)?;
        return Ok(());
    }
    bail!("could not cut the proxied worker off mid-trial in three tries")
}

/// The proxied worker alone: nothing completes while it is cut off, so the trials it loses
/// wait for it and it must move on to train them.
fn cut_config(name: &'static str, keepalive: Option<u64>) -> Config {
    Config {
        direct_workers: 0,
        proxied_worker: true,
        proxied_keepalive_secs: keepalive,
        ..config(name, 4)
    }
}

#[test]
fn network_cut_with_reset_longer_than_the_lease_requeues_the_trial() {
    scenario(cut_config("network_cut_reset", None), |c| {
        cut_proxied_worker(c, PauseMode::Blackhole, "network_cut_reset")?;
        let proxy = c.proxy.as_ref().context("proxy")?;
        ensure!(
            proxy.cut_connections() >= 1,
            "the cut reset no live connection"
        );
        Ok(())
    });
}

/// HTTP/2 keepalive of the proxied worker in the silent cut (interval and timeout).
const KEEPALIVE_SECS: u64 = 2;

#[test]
fn network_cut_silent_drop_is_noticed_by_keepalive() {
    scenario(
        cut_config("network_cut_silent", Some(KEEPALIVE_SECS)),
        |c| {
            cut_proxied_worker(c, PauseMode::Silent, "network_cut_silent")?;
            let proxy = c.proxy.as_ref().context("proxy")?;
            ensure!(
                proxy.cut_connections() == 0,
                "a silent cut closed connections"
            );
            // The worker, not the proxy, must give up every silenced connection: its keepalive
            // pings go unanswered. None of them can end sooner than one keepalive interval.
            let lifetimes = poll(
                "the worker to close every silenced connection",
                c.limit(Duration::from_secs(60)),
                Duration::from_millis(100),
                || {
                    let s = proxy.silenced();
                    Ok(s.iter()
                        .all(Option::is_some)
                        .then(|| s.into_iter().flatten().collect::<Vec<_>>()))
                },
            )?;
            ensure!(!lifetimes.is_empty(), "no connection was silenced");
            let shortest = lifetimes.iter().min().copied().unwrap_or_default();
            let longest = lifetimes.iter().max().copied().unwrap_or_default();
            ensure!(
                shortest >= Duration::from_secs(KEEPALIVE_SECS) / 2,
                "a silenced connection was closed after {shortest:?}: not by keepalive"
            );
            c.report.extra.insert(
                "silenced_connections".into(),
                json!({
                    "count": lifetimes.len(),
                    "closed_by_worker_after_s": [shortest.as_secs_f64(), longest.as_secs_f64()],
                }),
            );
            Ok(())
        },
    );
}

/// Sends `signal` (`STOP`, `CONT`) to a process with kill(1).
fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .context("cannot run kill")?;
    ensure!(status.success(), "kill -{signal} {pid}: {status}");
    Ok(())
}

/// The state letter of a process in /proc (`T` when stopped).
fn process_state(pid: u32) -> Result<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // `pid (comm) S ...`: the state follows the last `)`.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .context("unreadable /proc stat")
}

/// One worker alone: nothing completes while it is frozen, so the trials it loses wait for it
/// and it must move on to train them once it runs again.
#[test]
fn worker_sigstop_beyond_its_lease_then_sigcont_recovers() {
    let cfg = Config {
        direct_workers: 1,
        ..config("worker_sigstop", 4)
    };
    scenario(cfg, |c| {
        let i = c.worker_index("w0");
        let (id, log) = (c.workers[i].id.clone(), c.workers[i].log.clone());
        let pid = c.workers[i].proc.child.id();
        for _ in 0..3 {
            let t = c.wait_worker_training("w0")?;
            signal(pid, "STOP")?;
            let frozen_at = Instant::now();
            let state = poll(
                "the worker to be stopped",
                c.limit(Duration::from_secs(5)),
                Duration::from_millis(10),
                || Ok(Some(process_state(pid)?).filter(|&s| s == 'T')),
            );
            if let Err(e) = state {
                signal(pid, "CONT")?;
                return Err(e);
            }
            // Every attempt the frozen worker holds (it cannot take a new one while stopped).
            let held = c.held(Some(&id))?;
            let superseded = poll(
                "the frozen worker's lease to expire",
                c.limit(LEASE + Duration::from_secs(20)),
                Duration::from_millis(100),
                || {
                    let r = c.trial(&t.trial_id)?;
                    Ok(if r.attempt > t.attempt {
                        Some(true)
                    } else if r.status == "completed" {
                        Some(false)
                    } else {
                        None
                    })
                },
            );
            let superseded = match superseded {
                Ok(s) => s,
                Err(e) => {
                    signal(pid, "CONT")?;
                    return Err(e);
                }
            };
            if superseded {
                // Stay frozen a while past the lease (the fault's length).
                let frozen_for = LEASE + Duration::from_secs(2);
                if let Some(rest) = frozen_for.checked_sub(frozen_at.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            let still_stopped = process_state(pid)? == 'T';
            let mark = read_log(&log).len();
            signal(pid, "CONT")?;
            let frozen = frozen_at.elapsed();
            ensure!(still_stopped, "the worker ran again before SIGCONT");
            let mut lost = Vec::new();
            for h in &held {
                if c.trial(&h.0)?.attempt > h.1 {
                    lost.push(h.clone());
                }
            }
            c.report.superseded.extend(lost.iter().cloned());
            if !superseded {
                println!(
                    "[{}]   froze too late for {}, trying again",
                    c.cfg.name, t.trial_id
                );
                continue;
            }
            ensure!(
                frozen > LEASE,
                "the worker was frozen {frozen:?}, not longer than the {LEASE:?} lease"
            );
            c.fault(
                "worker_sigstop",
                format!(
                    "w0 frozen (SIGSTOP) for {:.1} s (lease {LEASE_SECS} s) while training {} \
                     attempt {}, then SIGCONT; leases lost: {lost:?}",
                    frozen.as_secs_f64(),
                    t.trial_id,
                    t.attempt
                ),
            )?;
            c.report
                .extra
                .insert("frozen_seconds".into(), json!(frozen.as_secs_f64()));
            // Resumed, it must learn that its lease is gone and train again: nothing hangs.
            c.worker_recovers("w0", &t, mark)?;
            ensure!(
                c.workers[i].proc.is_running(),
                "the worker exited after SIGCONT"
            );
            return Ok(());
        }
        bail!("could not freeze the worker mid-trial in three tries")
    });
}

#[test]
fn replays_and_bad_calls_leave_no_trace() {
    let cfg = Config {
        abandoned_lease: true,
        ..config("replays_and_bad_calls", 4)
    };
    scenario(cfg, |c| {
        c.wait_done()?;
        // Every completed attempt again with another score, and the abandoned attempt late:
        // nothing may change but late_results, which gains exactly the late replays.
        let before = c.dump(true)?;
        let files = c.artifact_hashes()?;
        let completed: Vec<proto::TrialRecord> = c
            .trials()?
            .into_iter()
            .filter(|t| t.status == "completed")
            .collect();
        for t in &completed {
            c.replay_duplicate(t)?;
        }
        let mut forged = Vec::new();
        for a in c.report.superseded.clone() {
            forged.push((a.clone(), c.replay_late(&a)?));
        }
        let after = c.dump(true)?;
        for (table, rows) in &before {
            if table != "late_results" {
                ensure!(
                    after.get(table) == Some(rows),
                    "a replay changed table {table}:\n{rows:#?}\n->\n{:#?}",
                    after.get(table)
                );
            }
        }
        let late_before = &before["late_results"];
        let late_after = &after["late_results"];
        let added: Vec<&String> = late_after
            .iter()
            .filter(|r| !late_before.contains(r))
            .collect();
        ensure!(
            late_after.len() == late_before.len() + forged.len()
                && late_before.iter().all(|r| late_after.contains(r)),
            "the late replays {forged:?} are not exactly what late_results gained: \
             {late_before:#?} -> {late_after:#?}"
        );
        for ((trial, attempt, worker), score) in &forged {
            ensure!(
                added
                    .iter()
                    .any(|r| r.contains(&format!("trial_id='{trial}'"))
                        && r.contains(&format!("attempt={attempt} "))
                        && r.contains(&format!("worker_id='{worker}'"))
                        && r.contains(&format!("score={score}"))),
                "the late replay of {trial} attempt {attempt} is not in late_results: {added:#?}"
            );
        }
        ensure!(
            c.artifact_hashes()? == files,
            "a replay changed the artifacts"
        );

        // The workers leave, so that nothing but the bad calls can touch the database.
        c.drain_workers()?;
        send_bad_calls(c)
    });
}

/// Unauthenticated, malformed and oversized calls; each must be refused with its code and
/// leave every table (worker rows included) and every artifact file exactly as it was.
fn send_bad_calls(c: &mut Cluster) -> Result<()> {
    let before = c.dump(false)?;
    let files = c.artifact_hashes()?;
    let channel = c.channel()?;
    let trials = c.trials()?;
    let real_trial = trials[0].trial_id.clone();
    let experiment = c.experiment_id.clone();
    let worker = c.report.extra["fake_worker"]
        .as_str()
        .context("the fake worker")?
        .to_string();
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
    let wrong_token = BearerToken::new("not-the-cluster-token-0123456789").unwrap();
    let mut wrong = worker_client(channel.clone(), &wrong_token);
    let mut wrong_admin = admin_client(channel.clone(), &wrong_token);
    let basic = c.token.clone();
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
    let r = c.try_call(bare.register(register("intruder".into(), 4, PROTOCOL_VERSION)));
    c.refused("register without token", Code::Unauthenticated, r);
    let r = c.try_call(bare.acquire(proto::AcquireRequest {
        worker_id: worker.clone(),
        wait_ms: 0,
    }));
    c.refused("acquire without token", Code::Unauthenticated, r);
    let r = c.try_call(bare.complete(complete(0.99)));
    c.refused("complete without token", Code::Unauthenticated, r);
    let r = c.try_call(
        bare_admin.submit_experiment(proto::SubmitExperimentRequest {
            spec_toml: valid_spec(4),
        }),
    );
    c.refused("submit without token", Code::Unauthenticated, r);
    let r = c.try_call(wrong.heartbeat(proto::HeartbeatRequest {
        worker_id: worker.clone(),
        trial_id: real_trial.clone(),
        attempt: 1,
        ..Default::default()
    }));
    c.refused("heartbeat with a wrong token", Code::Unauthenticated, r);
    let r = c.try_call(wrong.deregister(proto::DeregisterRequest {
        worker_id: worker.clone(),
    }));
    c.refused("deregister with a wrong token", Code::Unauthenticated, r);
    let r = c.try_call(wrong_admin.list_trials(proto::ListTrialsRequest {
        experiment_id: experiment.clone(),
    }));
    c.refused("list trials with a wrong token", Code::Unauthenticated, r);
    let r = c.try_call(
        wrong.upload_checkpoint(tokio_stream::iter(vec![proto::CheckpointChunk {
            data: vec![7; 1000],
        }])),
    );
    c.refused("upload with a wrong token", Code::Unauthenticated, r);
    let r = c.try_call(basic_scheme.complete(complete(0.99)));
    c.refused("complete with a Basic credential", Code::Unauthenticated, r);
    let r = c.try_call(empty_token.get_best_model(proto::GetBestModelRequest {
        experiment_id: experiment.clone(),
    }));
    c.refused("best model with an empty token", Code::Unauthenticated, r);

    // Malformed fields.
    let mut w = worker_client(channel.clone(), &c.bearer());
    let mut a = admin_client(channel.clone(), &c.bearer());
    let r = c.try_call(w.acquire(proto::AcquireRequest {
        worker_id: "garbage".into(),
        wait_ms: 0,
    }));
    c.refused("acquire with a garbage worker id", Code::InvalidArgument, r);
    let r = c.try_call(w.heartbeat(proto::HeartbeatRequest {
        worker_id: worker.clone(),
        trial_id: "../../etc/passwd".into(),
        attempt: 1,
        ..Default::default()
    }));
    c.refused(
        "heartbeat with a path as trial id",
        Code::InvalidArgument,
        r,
    );
    let r = c.try_call(w.complete(proto::CompleteRequest {
        worker_id: "worker-".into(),
        ..complete(0.5)
    }));
    c.refused("complete with an empty worker id", Code::InvalidArgument, r);
    let r = c.try_call(w.complete(proto::CompleteRequest {
        trial_id: format!("trial-{}", "a".repeat(100)),
        ..complete(0.5)
    }));
    c.refused(
        "complete with an overlong trial id",
        Code::InvalidArgument,
        r,
    );
    let r = c.try_call(w.deregister(proto::DeregisterRequest {
        worker_id: "worker-x'; DROP TABLE workers; --".into(),
    }));
    c.refused("deregister with SQL in the id", Code::InvalidArgument, r);
    for (label, score) in [
        ("NaN", f64::NAN),
        ("+inf", f64::INFINITY),
        ("-inf", f64::NEG_INFINITY),
        ("negative", -0.25),
        ("above one", 1.5),
    ] {
        let r = c.try_call(w.complete(complete(score)));
        c.refused(
            &format!("complete with a {label} score"),
            Code::InvalidArgument,
            r,
        );
    }
    let r = c.try_call(w.complete(proto::CompleteRequest {
        metrics: [("test_accuracy".to_string(), f64::NAN)].into(),
        ..complete(0.5)
    }));
    c.refused("complete with a NaN metric", Code::InvalidArgument, r);
    let r = c.try_call(w.complete(proto::CompleteRequest {
        metrics: [(String::new(), 0.5)].into(),
        ..complete(0.5)
    }));
    c.refused("complete with an unnamed metric", Code::InvalidArgument, r);
    let r = c.try_call(
        w.complete(proto::CompleteRequest {
            metrics: (0..5000)
                .map(|i| (format!("metric_{i}"), i as f64))
                .collect(),
            ..complete(0.5)
        }),
    );
    c.refused("complete with 5000 metrics", Code::InvalidArgument, r);
    let r = c.try_call(w.register(register("x".repeat(10_000), 1, PROTOCOL_VERSION)));
    c.refused("register with a 10 kB name", Code::InvalidArgument, r);
    let r = c.try_call(w.register(register("greedy".into(), 65, PROTOCOL_VERSION)));
    c.refused("register with 65 slots", Code::InvalidArgument, r);
    let r = c.try_call(a.submit_experiment(proto::SubmitExperimentRequest {
        spec_toml: "name = \"x\"\n[budget\nmax_trials = ".into(),
    }));
    c.refused("submit broken TOML", Code::InvalidArgument, r);
    let r = c.try_call(a.submit_experiment(proto::SubmitExperimentRequest {
        spec_toml: valid_spec(4).replace("max_trials = 4", "max_trials = 0"),
    }));
    c.refused("submit a zero budget", Code::InvalidArgument, r);
    let r = c.try_call(a.get_experiment(proto::GetExperimentRequest {
        experiment_id: "exp-../../x".into(),
    }));
    c.refused("get experiment with a path as id", Code::InvalidArgument, r);
    let r = c.try_call(download(&mut a, "../token"));
    c.refused("download a path", Code::InvalidArgument, r);

    // Well-formed but unknown.
    let unknown_trial = "trial-00000000deadbeef".to_string();
    let r = c.try_call(w.complete(proto::CompleteRequest {
        trial_id: unknown_trial.clone(),
        ..complete(0.5)
    }));
    c.refused("complete an unknown trial", Code::NotFound, r);
    let r = c.try_call(w.heartbeat(proto::HeartbeatRequest {
        worker_id: worker.clone(),
        trial_id: unknown_trial.clone(),
        attempt: 1,
        ..Default::default()
    }));
    c.refused("heartbeat an unknown trial", Code::NotFound, r);
    let r = c.try_call(w.acquire(proto::AcquireRequest {
        worker_id: "worker-00000000deadbeef".into(),
        wait_ms: 0,
    }));
    c.refused("acquire as an unknown worker", Code::NotFound, r);
    let r = c.try_call(w.fail(proto::FailRequest {
        worker_id: "worker-00000000deadbeef".into(),
        trial_id: real_trial.clone(),
        attempt: 1,
        reason: "sabotage".into(),
    }));
    c.refused("fail as an unknown worker", Code::NotFound, r);
    let r = c.try_call(a.get_experiment(proto::GetExperimentRequest {
        experiment_id: "exp-00000000deadbeef".into(),
    }));
    c.refused("get an unknown experiment", Code::NotFound, r);
    let r = c.try_call(download(&mut a, &"0".repeat(64)));
    c.refused("download an unknown checkpoint", Code::NotFound, r);
    let r = c.try_call(w.register(register("old".into(), 1, PROTOCOL_VERSION + 1)));
    c.refused(
        "register with another protocol version",
        Code::FailedPrecondition,
        r,
    );
    let r = c.try_call(w.complete(proto::CompleteRequest {
        checkpoint_sha256: "ab".repeat(32),
        ..complete(0.5)
    }));
    c.refused(
        "complete naming a checkpoint never uploaded",
        Code::FailedPrecondition,
        r,
    );

    // Messages above the master's 4 MiB limit, from clients that do not limit themselves.
    let big = 5 << 20;
    let mut w_big = worker_client(channel.clone(), &c.bearer()).max_encoding_message_size(64 << 20);
    let mut a_big = admin_client(channel.clone(), &c.bearer()).max_encoding_message_size(64 << 20);
    let r = c.try_call(a_big.submit_experiment(proto::SubmitExperimentRequest {
        spec_toml: format!("{}\n#{}", valid_spec(4), "x".repeat(big)),
    }));
    c.refused("submit a 5 MiB spec", Code::OutOfRange, r);
    let r = c.try_call(
        w_big.complete(proto::CompleteRequest {
            metrics: (0..(big / 16))
                .map(|i| (format!("m{i:011}"), 0.5))
                .collect(),
            ..complete(0.5)
        }),
    );
    c.refused("complete with a 5 MiB metrics map", Code::OutOfRange, r);
    let r = c.try_call(
        w_big.upload_checkpoint(tokio_stream::iter(vec![proto::CheckpointChunk {
            data: vec![1; big],
        }])),
    );
    c.refused("upload a 5 MiB chunk", Code::OutOfRange, r);
    ensure!(c.report.bad_inputs.len() == 40, "40 bad calls");

    // No trace: every table, worker rows included, and every artifact file.
    let after = c.dump(false)?;
    for (table, rows) in &before {
        ensure!(
            after.get(table) == Some(rows),
            "a refused call changed table {table}:\n{rows:#?}\n->\n{:#?}",
            after.get(table)
        );
    }
    ensure!(after.len() == before.len(), "a refused call added a table");
    let files_after = c.artifact_hashes()?;
    ensure!(
        files_after == files,
        "a refused call changed the artifact files: {files:#?} -> {files_after:#?}"
    );
    Ok(())
}
