//! `worker join --slots 2` on loopback against a real `master`: one worker process trains two
//! trials at once (each with its own lease, heartbeats and completion), and when one of them
//! loses its lease the other trains on undisturbed while the lost one comes back as a new
//! attempt and completes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use explore_tests::pool::PoolDb;
use explore_tests::{poll, read_log, require_fashion_mnist, start_worker, MasterProc};

/// A spec with two seeds (both queued at once) and no trial beyond them.
fn spec(epochs: u32) -> String {
    let seed = |lr: f64| {
        format!(
            r#"
[[seeds]]
preset = "cnn2"
hparams = {{ optimizer = "adamw", learning_rate = {lr}, schedule = "constant", batch_size = 64, weight_decay = 0.0001, epochs = {epochs} }}
"#
        )
    };
    format!(
        r#"
name = "slots"
seed = 5

[budget]
max_trials = 2

[data]
dataset = "fashion-mnist"
train_subset = 1500
test_subset = 200
validation_fraction = 0.2

[search]
epochs = [{epochs}, {epochs}]
{}{}"#,
        seed(0.002),
        seed(0.001)
    )
}

#[derive(Debug, Clone)]
struct Trial {
    id: String,
    status: String,
    attempt: i64,
    worker_id: Option<String>,
    epoch: i64,
    finished_at_ms: Option<i64>,
}

/// The master's pool, on whichever backend the harness started it (`explore_tests::pool`).
struct Db {
    master_dir: std::path::PathBuf,
    rt: tokio::runtime::Runtime,
}

impl Db {
    fn new(master_dir: &Path) -> Db {
        Db {
            master_dir: master_dir.to_path_buf(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// Resolved on each use: the master may start (and pick its database) after `new`.
    fn pool(&self) -> PoolDb {
        PoolDb::of(&self.master_dir)
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        type Columns = (String, String, i64, Option<String>, i64, Option<i64>);
        let rows: Vec<Columns> = self.rt.block_on(self.pool().fetch_all(
            "SELECT id, status, attempt, worker_id, epoch, finished_at_ms
               FROM trials ORDER BY seq",
        ))?;
        Ok(rows
            .into_iter()
            .map(
                |(id, status, attempt, worker_id, epoch, finished_at_ms)| Trial {
                    id,
                    status,
                    attempt,
                    worker_id,
                    epoch,
                    finished_at_ms,
                },
            )
            .collect())
    }

    fn count(&self, table: &str) -> Result<i64> {
        self.rt.block_on(self.pool().count(table))
    }

    /// Makes attempt `attempt` of `trial_id` look expired to the master's lease tick (as if
    /// the worker had stopped heartbeating it); a no-op once that attempt is not held.
    fn expire_lease(&self, trial_id: &str, attempt: i64) -> Result<()> {
        ensure!(
            trial_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "unexpected trial id {trial_id:?}"
        );
        self.rt.block_on(self.pool().execute(&format!(
            "UPDATE trials SET lease_deadline_ms = 0
              WHERE id = '{trial_id}' AND attempt = {attempt}
                AND status IN ('leased', 'running')"
        )))?;
        Ok(())
    }
}

/// Submits the spec (without waiting) and returns when the master has queued it.
fn submit(master: &MasterProc, dir: &Path, spec: &str) -> Result<()> {
    let path = dir.join("spec.toml");
    std::fs::write(&path, spec)?;
    let out = master.client(&["submit", path.to_str().context("utf-8 path")?])?;
    if !out.status.success() {
        bail!("submit failed: {}", explore_tests::describe(&out));
    }
    Ok(())
}

/// Waits until every trial has ended (completed, failed or cancelled).
fn wait_all_ended(db: &Db, timeout: Duration, log: &Path) -> Result<Vec<Trial>> {
    poll(
        "both trials to end",
        timeout,
        Duration::from_millis(200),
        || {
            let trials = db.trials()?;
            let ended = trials.len() == 2
                && trials
                    .iter()
                    .all(|t| matches!(t.status.as_str(), "completed" | "failed" | "cancelled"));
            Ok(ended.then_some(trials))
        },
    )
    .with_context(|| format!("worker log:\n{}", read_log(log)))
}

/// Both trials held by the same worker at once, each with training started.
fn wait_both_training(db: &Db, timeout: Duration, log: &Path) -> Result<Vec<Trial>> {
    poll(
        "two trials training at once on one worker",
        timeout,
        Duration::from_millis(100),
        || {
            let trials = db.trials()?;
            let running: Vec<Trial> = trials
                .into_iter()
                .filter(|t| t.status == "running")
                .collect();
            Ok(
                (running.len() == 2 && running[0].worker_id == running[1].worker_id)
                    .then_some(running),
            )
        },
    )
    .with_context(|| format!("worker log:\n{}", read_log(log)))
}

fn start(dir: &Path) -> Result<(MasterProc, explore_tests::Proc, std::path::PathBuf)> {
    let master = MasterProc::start(
        &dir.join("master"),
        &["--heartbeat-secs", "1", "--lease-secs", "20"],
    )?;
    let log = dir.join("worker.log");
    let worker = start_worker(&master, "slotted", &log, &["--slots", "2"])?;
    Ok((master, worker, log))
}

#[test]
fn one_worker_with_two_slots_trains_two_trials_at_once() {
    require_fashion_mnist();
    let began = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let (master, mut worker, log) = start(tmp.path()).unwrap();
    let db = Db::new(&tmp.path().join("master"));
    submit(&master, tmp.path(), &spec(3)).unwrap();
    // Both trials `running` (training begun, as their heartbeats say) at the same moment: a
    // prefetched trial waiting behind another one would still be `leased`.
    let running = wait_both_training(&db, Duration::from_secs(120), &log).unwrap();
    let trials = wait_all_ended(&db, Duration::from_secs(240), &log).unwrap();
    let text = read_log(&log);
    assert!(
        text.contains("slots=2"),
        "registered with two slots:\n{text}"
    );
    for t in &trials {
        assert_eq!(t.status, "completed", "{t:?}\n{text}");
        assert_eq!(t.attempt, 1, "{t:?}");
        assert_eq!(t.epoch, 3, "{t:?}");
        assert_eq!(t.worker_id, running[0].worker_id, "{t:?}");
        assert!(t.finished_at_ms.is_some(), "{t:?}");
    }
    // The worker log agrees: both trials began training before either completed.
    let line_of = |needle: &str, id: &str| {
        text.lines()
            .position(|l| l.contains(needle) && l.contains(id))
            .unwrap_or_else(|| panic!("no {needle:?} line for {id}:\n{text}"))
    };
    let began_training = trials.iter().map(|t| line_of(" training ", &t.id)).max();
    let first_done = trials
        .iter()
        .map(|t| line_of("trial completed", &t.id))
        .min();
    assert!(began_training < first_done, "{text}");
    assert!(worker.is_running(), "the worker keeps going:\n{text}");
    eprintln!("two slots: {:.1} s", began.elapsed().as_secs_f64());
}

#[test]
fn a_lost_lease_on_one_slot_leaves_the_other_slot_training() {
    require_fashion_mnist();
    let began = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let (master, mut worker, log) = start(tmp.path()).unwrap();
    let db = Db::new(&tmp.path().join("master"));
    const EPOCHS: i64 = 8;
    submit(&master, tmp.path(), &spec(EPOCHS as u32)).unwrap();
    let running = wait_both_training(&db, Duration::from_secs(120), &log).unwrap();
    let (lost, kept) = (&running[0], &running[1]);
    assert!(lost.epoch < EPOCHS, "still training: {lost:?}");
    // Take the first trial's lease away. A heartbeat may extend it between the write and the
    // master's next lease tick, so keep writing until the master has requeued it.
    poll(
        "the master to take the lease back",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            db.expire_lease(&lost.id, 1)?;
            let now = db.trials()?;
            let t = now.iter().find(|t| t.id == lost.id).context("trial")?;
            Ok((t.attempt > 1 || t.status != "running").then_some(()))
        },
    )
    .unwrap();
    let trials = wait_all_ended(&db, Duration::from_secs(240), &log).unwrap();
    let text = read_log(&log);
    let by_id = |id: &str| trials.iter().find(|t| t.id == id).unwrap().clone();
    let (lost_now, kept_now) = (by_id(&lost.id), by_id(&kept.id));
    // The other slot's trial trained all its epochs on its first lease.
    assert_eq!(kept_now.status, "completed", "{kept_now:?}\n{text}");
    assert_eq!(kept_now.attempt, 1, "{kept_now:?}\n{text}");
    assert_eq!(kept_now.epoch, EPOCHS, "{kept_now:?}\n{text}");
    // The lost one came back as attempt 2 and completed.
    assert_eq!(lost_now.status, "completed", "{lost_now:?}\n{text}");
    assert_eq!(lost_now.attempt, 2, "{lost_now:?}\n{text}");
    assert_eq!(lost_now.epoch, EPOCHS, "{lost_now:?}\n{text}");
    // Attempt 1 was dropped and reported nothing; only it was told to drop.
    let dropped: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("master asked to drop the trial"))
        .collect();
    assert!(!dropped.is_empty(), "{text}");
    for line in &dropped {
        assert!(
            line.contains(&lost.id) && line.contains("attempt=1"),
            "only attempt 1 of {} is dropped: {line}\n{text}",
            lost.id
        );
    }
    assert_eq!(db.count("late_results").unwrap(), 0, "{text}");
    assert!(worker.is_running(), "the worker keeps going:\n{text}");
    eprintln!(
        "lost lease on one slot: {:.1} s",
        began.elapsed().as_secs_f64()
    );
}

#[test]
fn sigterm_drains_every_slot() {
    require_fashion_mnist();
    let began = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let (master, mut worker, log) = start(tmp.path()).unwrap();
    let db = Db::new(&tmp.path().join("master"));
    const EPOCHS: i64 = 4;
    submit(&master, tmp.path(), &spec(EPOCHS as u32)).unwrap();
    wait_both_training(&db, Duration::from_secs(120), &log).unwrap();
    // Drain: both slots finish their trials, then the worker deregisters and exits cleanly.
    let status = worker.terminate(Duration::from_secs(180)).unwrap();
    let text = read_log(&log);
    assert!(
        status.success(),
        "{status:?}\n{text}\nMASTER\n{}",
        read_log(&master.log)
    );
    let trials = db.trials().unwrap();
    assert_eq!(trials.len(), 2, "{trials:?}");
    for t in &trials {
        assert_eq!(t.status, "completed", "{t:?}\n{text}");
        assert_eq!((t.attempt, t.epoch), (1, EPOCHS), "{t:?}\n{text}");
    }
    assert!(
        text.contains("trials_done=2"),
        "{text}\nMASTER\n{}",
        read_log(&master.log)
    );
    eprintln!(
        "drain with two slots: {:.1} s",
        began.elapsed().as_secs_f64()
    );
}
