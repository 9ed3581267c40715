//! What a worker shows while it trains: on a terminal, a progress bar per trial on stderr
//! (trial, epoch, batch, running loss and ETA); elsewhere (a file, a pipe, `--log-format
//! json`), a log line after every epoch and at most every [`LINE_EVERY`] within a long epoch.
//! Every line carries `trial_id`, `attempt` and `worker_id` as fields.
//!
//! Log lines and bars share stderr: [`LogWriter`] (the log subscriber's writer) hides the bars
//! while it writes a line, so lines land above the bars instead of through them.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::info;
use tracing_subscriber::fmt::MakeWriter;

use crate::train::{BatchProgress, EpochReport};

/// Within an epoch, a progress log line at most this often (without a terminal).
pub const LINE_EVERY: Duration = Duration::from_secs(30);

/// The bars of the trials training now; set once [`enable_bars`] was called.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Shows progress bars on stderr from now on. Call it once, from `main`, and only when stderr
/// is a terminal and the logs are text: a bar written to a file is a mess of redraws.
pub fn enable_bars() {
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
}

/// The log subscriber's writer: stderr, with the progress bars hidden while a line is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'w> MakeWriter<'w> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'w self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// One log line being written by [`LogWriter`]; it goes to stderr when dropped.
#[derive(Debug)]
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let write = || {
            let _ = std::io::stderr().lock().write_all(&self.0);
        };
        match BARS.get() {
            Some(bars) => bars.suspend(write),
            None => write(),
        }
    }
}

/// Who trains what: the fields every progress line carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialIds {
    /// The trial.
    pub trial_id: String,
    /// Its attempt (1 for the first lease).
    pub attempt: u32,
    /// The worker training it (`None` for `worker train`, which has none: no field logged).
    pub worker_id: Option<String>,
}

/// The fraction of a trial done after a batch: batches done over batches planned.
pub fn fraction_done(p: &BatchProgress) -> f64 {
    let planned = p.total_epochs as usize * p.batches;
    if planned == 0 {
        return 0.0;
    }
    let done = p.epoch.saturating_sub(1) as usize * p.batches + p.batch;
    (done as f64 / planned as f64).min(1.0)
}

/// Time left when `fraction` of the work took `elapsed`, at the same rate; `None` before any
/// progress.
pub fn eta(elapsed: Duration, fraction: f64) -> Option<Duration> {
    (fraction > 0.0 && fraction.is_finite())
        .then(|| elapsed.mul_f64((1.0 - fraction.min(1.0)) / fraction))
}

/// `1h02m`, `3m05s` or `42s`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The ETA as text, `-` when unknown.
fn eta_text(eta: Option<Duration>) -> String {
    eta.map_or("-".into(), short_duration)
}

/// The progress of one trial: a bar when bars are on ([`enable_bars`]), else periodic lines.
#[derive(Debug)]
pub struct TrialProgress {
    ids: TrialIds,
    started: Instant,
    last_line: Instant,
    line_every: Duration,
    bar: Option<ProgressBar>,
}

/// Steps of a bar: the trial's fraction done, in thousandths.
const BAR_STEPS: u64 = 1000;

impl TrialProgress {
    /// Starts following a trial planned for `total_epochs` epochs.
    pub fn start(ids: TrialIds, total_epochs: u32) -> Self {
        let bar = BARS.get().map(|bars| {
            let bar = bars.add(ProgressBar::new(BAR_STEPS));
            bar.set_style(
                ProgressStyle::with_template("{prefix} {bar:25} {percent:>3}% {msg}")
                    .expect("valid template"),
            );
            bar.set_prefix(ids.trial_id.clone());
            bar.set_message(format!("epoch 1/{total_epochs}"));
            bar
        });
        let now = Instant::now();
        TrialProgress {
            ids,
            started: now,
            last_line: now,
            line_every: LINE_EVERY,
            bar,
        }
    }

    /// After an optimizer step: moves the bar, or logs a line when [`LINE_EVERY`] passed since
    /// the last one.
    pub fn batch(&mut self, p: &BatchProgress) {
        let fraction = fraction_done(p);
        let eta = eta(self.started.elapsed(), fraction);
        if let Some(bar) = &self.bar {
            let loss = p.running_loss.map_or("-".into(), |l| format!("{l:.4}"));
            bar.set_position((fraction * BAR_STEPS as f64) as u64);
            bar.set_message(format!(
                "epoch {}/{} batch {}/{} loss {loss} ETA {}",
                p.epoch,
                p.total_epochs,
                p.batch,
                p.batches,
                eta_text(eta)
            ));
        } else if self.last_line.elapsed() >= self.line_every {
            self.last_line = Instant::now();
            info!(
                trial_id = %self.ids.trial_id,
                epoch = p.epoch,
                total_epochs = p.total_epochs,
                batch = p.batch,
                batches = p.batches,
                train_loss = p.running_loss,
                attempt = self.ids.attempt,
                worker_id = self.ids.worker_id.as_deref(),
                eta_secs = eta.map(|d| d.as_secs()),
                eta = %eta_text(eta),
                "training progress"
            );
        }
    }

    /// After an epoch: logs its line (with a terminal too: it lands above the bar).
    pub fn epoch(&mut self, r: &EpochReport) {
        let fraction = if r.total_epochs == 0 {
            1.0
        } else {
            f64::from(r.epoch) / f64::from(r.total_epochs)
        };
        let eta = eta(self.started.elapsed(), fraction);
        self.last_line = Instant::now();
        // "epoch done" then trial_id and epoch first: tests/tests/faults.rs finds a trial's
        // epochs in the text log by `epoch done trial_id=T epoch=N `.
        info!(
            trial_id = %self.ids.trial_id,
            epoch = r.epoch,
            total_epochs = r.total_epochs,
            train_loss = r.train_loss,
            val_accuracy = r.val_accuracy,
            attempt = self.ids.attempt,
            worker_id = self.ids.worker_id.as_deref(),
            eta_secs = eta.map(|d| d.as_secs()),
            eta = %eta_text(eta),
            "epoch done"
        );
        if let Some(bar) = &self.bar {
            bar.set_position((fraction.min(1.0) * BAR_STEPS as f64) as u64);
        }
    }
}

impl Drop for TrialProgress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            if let Some(bars) = BARS.get() {
                bars.remove(&bar);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u32, batch: usize) -> BatchProgress {
        BatchProgress {
            epoch,
            total_epochs: 4,
            batch,
            batches: 10,
            running_loss: None,
        }
    }

    #[test]
    fn the_fraction_counts_batches_over_all_epochs() {
        assert_eq!(fraction_done(&at(1, 0)), 0.0);
        assert_eq!(fraction_done(&at(1, 5)), 0.125);
        assert_eq!(fraction_done(&at(3, 10)), 0.75);
        assert_eq!(fraction_done(&at(4, 10)), 1.0);
        let empty = BatchProgress {
            batches: 0,
            ..at(1, 0)
        };
        assert_eq!(fraction_done(&empty), 0.0);
    }

    #[test]
    fn the_eta_extrapolates_the_rate_so_far() {
        assert_eq!(
            eta(Duration::from_secs(10), 0.25),
            Some(Duration::from_secs(30))
        );
        assert_eq!(eta(Duration::from_secs(10), 1.0), Some(Duration::ZERO));
        assert_eq!(eta(Duration::from_secs(10), 0.0), None);
        assert_eq!(short_duration(Duration::from_secs(42)), "42s");
        assert_eq!(short_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(short_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn without_bars_a_line_comes_at_most_every_interval_within_an_epoch() {
        let ids = TrialIds {
            trial_id: "trial-1".into(),
            attempt: 1,
            worker_id: Some("w".into()),
        };
        let mut p = TrialProgress::start(ids, 4);
        assert!(p.bar.is_none());
        p.line_every = Duration::from_secs(3600);
        let before = p.last_line;
        p.batch(&at(1, 1));
        assert_eq!(p.last_line, before, "no line before the interval");
        p.line_every = Duration::ZERO;
        p.batch(&at(1, 2));
        assert!(p.last_line > before, "a line once the interval passed");
    }
}
