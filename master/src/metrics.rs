//! What the master measures about itself, behind one seam: the scheduler and the services
//! report events to a [`MetricsSink`]; [`NoMetrics`] drops them (tests, embedded use) and
//! [`PromMetrics`] keeps counters and histograms that `/metrics` renders in the Prometheus text
//! format, beside gauges read from the store at scrape time ([`StoreGauges`]).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::store::TrialStatus;

/// A worker-service call the master times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    Acquire,
    Heartbeat,
    Complete,
}

impl Rpc {
    const ALL: [Rpc; 3] = [Rpc::Acquire, Rpc::Heartbeat, Rpc::Complete];

    fn name(self) -> &'static str {
        match self {
            Rpc::Acquire => "Acquire",
            Rpc::Heartbeat => "Heartbeat",
            Rpc::Complete => "Complete",
        }
    }
}

/// Receives the events the master measures.
pub trait MetricsSink: Send + Sync {
    /// A worker call answered after `seconds` (an Acquire includes its long-poll wait).
    fn rpc_answered(&self, rpc: Rpc, seconds: f64);
    /// A lease ran out before its worker reported.
    fn lease_expired(&self);
    /// A trial ended in `status` after training for `seconds` (from its lease to its end).
    fn trial_ended(&self, status: TrialStatus, seconds: f64);
}

/// Drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;

impl MetricsSink for NoMetrics {
    fn rpc_answered(&self, _rpc: Rpc, _seconds: f64) {}
    fn lease_expired(&self) {}
    fn trial_ended(&self, _status: TrialStatus, _seconds: f64) {}
}

/// Upper bounds (seconds) of the call-latency buckets.
const RPC_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds (seconds) of the trial-duration buckets.
const TRIAL_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

/// A cumulative histogram with fixed bucket bounds.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    state: Mutex<HistogramState>,
}

#[derive(Debug, Default, Clone)]
struct HistogramState {
    /// Per bucket (not cumulative), plus one for +Inf.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            state: Mutex::new(HistogramState {
                counts: vec![0; bounds.len() + 1],
                sum: 0.0,
            }),
        }
    }

    fn observe(&self, value: f64) {
        if !value.is_finite() {
            return;
        }
        let bucket = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.counts[bucket] += 1;
        state.sum += value;
    }

    /// Writes `name_bucket`, `name_sum` and `name_count` lines with `labels` (`k="v",...`).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&state.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += state.counts[self.bounds.len()];
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", state.sum);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Counters and histograms for Prometheus.
#[derive(Debug)]
pub struct PromMetrics {
    rpc: Vec<Histogram>,
    trial_durations: Vec<(TrialStatus, Histogram)>,
    lease_expiries: AtomicU64,
}

impl Default for PromMetrics {
    fn default() -> Self {
        PromMetrics {
            rpc: Rpc::ALL
                .iter()
                .map(|_| Histogram::new(RPC_BUCKETS))
                .collect(),
            trial_durations: [
                TrialStatus::Completed,
                TrialStatus::Pruned,
                TrialStatus::Failed,
                TrialStatus::Cancelled,
            ]
            .into_iter()
            .map(|s| (s, Histogram::new(TRIAL_BUCKETS)))
            .collect(),
            lease_expiries: AtomicU64::new(0),
        }
    }
}

impl MetricsSink for PromMetrics {
    fn rpc_answered(&self, rpc: Rpc, seconds: f64) {
        if let Some(i) = Rpc::ALL.iter().position(|r| *r == rpc) {
            self.rpc[i].observe(seconds);
        }
    }

    fn lease_expired(&self) {
        self.lease_expiries.fetch_add(1, Ordering::Relaxed);
    }

    fn trial_ended(&self, status: TrialStatus, seconds: f64) {
        if let Some((_, h)) = self.trial_durations.iter().find(|(s, _)| *s == status) {
            h.observe(seconds);
        }
    }
}

/// What `/metrics` reads from the store at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreGauges {
    /// `(experiment id, trial status, count)`.
    pub trials: Vec<(String, String, i64)>,
    /// Workers registered and seen within two lease periods.
    pub connected_workers: u64,
    /// Their training slots.
    pub connected_slots: u64,
    /// `(experiment id, name, lifecycle status, best validation score)` of every experiment.
    pub experiments: Vec<(String, String, String, Option<f64>)>,
}

/// Escapes a label value for the text format.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl PromMetrics {
    /// The Prometheus text exposition (format 0.0.4) of everything measured, with `gauges`
    /// from the store and the count of calls refused for a missing or wrong token.
    pub fn render(&self, gauges: &StoreGauges, refused_calls: u64) -> String {
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };

        family(
            &mut out,
            "explore_trials",
            "gauge",
            "Trials by experiment and status (probes included).",
        );
        for (experiment, status, n) in &gauges.trials {
            let _ = writeln!(
                out,
                "explore_trials{{experiment=\"{}\",status=\"{}\"}} {n}",
                label(experiment),
                label(status)
            );
        }
        family(
            &mut out,
            "explore_queue_depth",
            "gauge",
            "Trials queued and not yet leased, over all experiments.",
        );
        let queued: i64 = gauges
            .trials
            .iter()
            .filter(|(_, s, _)| s == "queued")
            .map(|(_, _, n)| n)
            .sum();
        let _ = writeln!(out, "explore_queue_depth {queued}");
        family(
            &mut out,
            "explore_connected_workers",
            "gauge",
            "Workers seen within two lease periods.",
        );
        let _ = writeln!(
            out,
            "explore_connected_workers {}",
            gauges.connected_workers
        );
        family(
            &mut out,
            "explore_connected_slots",
            "gauge",
            "Training slots of the connected workers.",
        );
        let _ = writeln!(out, "explore_connected_slots {}", gauges.connected_slots);
        family(
            &mut out,
            "explore_best_score",
            "gauge",
            "Best validation score of each experiment with a completed trial.",
        );
        for (id, name, _, best) in &gauges.experiments {
            if let Some(best) = best {
                let _ = writeln!(
                    out,
                    "explore_best_score{{experiment=\"{}\",name=\"{}\"}} {best}",
                    label(id),
                    label(name)
                );
            }
        }
        family(
            &mut out,
            "explore_experiment_running",
            "gauge",
            "1 for each experiment that is running, 0 when stopped, completed or failed.",
        );
        for (id, name, status, _) in &gauges.experiments {
            let _ = writeln!(
                out,
                "explore_experiment_running{{experiment=\"{}\",name=\"{}\"}} {}",
                label(id),
                label(name),
                u8::from(status == "running")
            );
        }
        family(
            &mut out,
            "explore_rpc_duration_seconds",
            "histogram",
            "Time to answer worker calls (an Acquire includes its long-poll wait).",
        );
        for (rpc, h) in Rpc::ALL.iter().zip(&self.rpc) {
            h.render(
                &mut out,
                "explore_rpc_duration_seconds",
                &format!("method=\"{}\"", rpc.name()),
            );
        }
        family(
            &mut out,
            "explore_trial_duration_seconds",
            "histogram",
            "Training time of ended trials, from lease to end, by outcome (cancelled: by a stop with --now).",
        );
        for (status, h) in &self.trial_durations {
            h.render(
                &mut out,
                "explore_trial_duration_seconds",
                &format!("status=\"{}\"", status.as_str()),
            );
        }
        family(
            &mut out,
            "explore_lease_expiries_total",
            "counter",
            "Leases that ran out before their worker reported.",
        );
        let _ = writeln!(
            out,
            "explore_lease_expiries_total {}",
            self.lease_expiries.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "explore_refused_calls_total",
            "counter",
            "Calls refused for a missing or wrong cluster token (gRPC and HTTP).",
        );
        let _ = writeln!(out, "explore_refused_calls_total {refused_calls}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_cumulative_and_counts_everything() {
        let m = PromMetrics::default();
        m.rpc_answered(Rpc::Complete, 0.003);
        m.rpc_answered(Rpc::Complete, 0.2);
        m.rpc_answered(Rpc::Complete, 100.0);
        let text = m.render(&StoreGauges::default(), 0);
        assert!(
            text.contains(
                "explore_rpc_duration_seconds_bucket{method=\"Complete\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("explore_rpc_duration_seconds_bucket{method=\"Complete\",le=\"0.25\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("explore_rpc_duration_seconds_bucket{method=\"Complete\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(text.contains("explore_rpc_duration_seconds_count{method=\"Complete\"} 3"));
        assert!(text.contains("explore_rpc_duration_seconds_count{method=\"Acquire\"} 0"));
    }

    #[test]
    fn gauges_and_counters_carry_their_labels_escaped() {
        let m = PromMetrics::default();
        m.lease_expired();
        m.trial_ended(TrialStatus::Pruned, 12.0);
        let gauges = StoreGauges {
            trials: vec![
                ("exp-1".into(), "queued".into(), 3),
                ("exp-2".into(), "queued".into(), 2),
                ("exp-1".into(), "completed".into(), 7),
            ],
            connected_workers: 2,
            connected_slots: 5,
            experiments: vec![(
                "exp-1".into(),
                "a \"b\"".into(),
                "running".into(),
                Some(0.9),
            )],
        };
        let text = m.render(&gauges, 4);
        assert!(text.contains("explore_queue_depth 5"), "{text}");
        assert!(text.contains("explore_trials{experiment=\"exp-1\",status=\"completed\"} 7"));
        assert!(text.contains("explore_best_score{experiment=\"exp-1\",name=\"a \\\"b\\\"\"} 0.9"));
        assert!(text.contains("explore_lease_expiries_total 1"));
        assert!(text.contains("explore_refused_calls_total 4"));
        assert!(text.contains("explore_connected_slots 5"));
        assert!(
            text.contains("explore_trial_duration_seconds_bucket{status=\"pruned\",le=\"15\"} 1"),
            "{text}"
        );
    }
}
