//! Early stopping: whether a running trial is clearly worse than its peers at the same epoch.
//!
//! Pure functions over the validation accuracies that heartbeats report after each epoch; the
//! scheduler records those curves and asks [`should_stop`] on every report.

use explore_common::spec::{EarlyStopping, StoppingRule};

/// Whether [`should_stop`] can stop a trial at `epoch` of `total_epochs` at all (its peers
/// need not be read otherwise: no rule, within the grace epochs, or the last epoch).
pub fn may_stop(cfg: &EarlyStopping, epoch: u32, total_epochs: u32) -> bool {
    !(cfg.rule == StoppingRule::None || epoch < cfg.grace_epochs.max(1) || epoch >= total_epochs)
}

/// The reason to stop a trial that reached `val_accuracy` after `epoch` of its `total_epochs`,
/// given what its peers reached after the same epoch; `None` to let it go on.
///
/// A trial is never stopped before `grace_epochs`, at or after its last epoch (it is about to
/// report its result anyway), or with fewer than `min_peers` peers to compare with. Non-finite
/// peer values are ignored.
pub fn should_stop(
    cfg: &EarlyStopping,
    epoch: u32,
    total_epochs: u32,
    val_accuracy: f64,
    peers: &[f64],
) -> Option<String> {
    if !may_stop(cfg, epoch, total_epochs) {
        return None;
    }
    let mut peers: Vec<f64> = peers.iter().copied().filter(|v| v.is_finite()).collect();
    if peers.len() < cfg.min_peers as usize || !val_accuracy.is_finite() {
        return None;
    }
    peers.sort_by(|a, b| b.total_cmp(a));
    match cfg.rule {
        StoppingRule::None => None,
        StoppingRule::Median => {
            let m = median_of_sorted(&peers);
            (val_accuracy < m).then(|| {
                format!(
                    "median rule at epoch {epoch}: validation accuracy {val_accuracy:.4} is below \
                     the median {m:.4} of {} peers",
                    peers.len()
                )
            })
        }
        StoppingRule::Asha => {
            let eta = cfg.reduction_factor.max(2);
            if !is_rung(epoch, cfg.grace_epochs.max(1), eta) {
                return None;
            }
            // The rung holds the peers and this trial; the top 1/η of it (at least one) go on.
            let n = peers.len() + 1;
            let keep = (n / eta as usize).max(1);
            let rank = peers.iter().filter(|&&p| p > val_accuracy).count();
            (rank >= keep).then(|| {
                format!(
                    "ASHA rung at epoch {epoch}: validation accuracy {val_accuracy:.4} ranks {} of \
                     {n}, only the top {keep} (1/{eta}) go on",
                    rank + 1
                )
            })
        }
    }
}

/// Whether `epoch` is a rung `grace · η^k` of successive halving.
pub fn is_rung(epoch: u32, grace: u32, eta: u32) -> bool {
    let mut rung = u64::from(grace.max(1));
    let epoch = u64::from(epoch);
    while rung < epoch {
        rung *= u64::from(eta.max(2));
    }
    rung == epoch
}

/// Median of values sorted in either order (mean of the middle two for an even count).
fn median_of_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn median_rule() -> EarlyStopping {
        EarlyStopping {
            rule: StoppingRule::Median,
            grace_epochs: 1,
            min_peers: 3,
            reduction_factor: 3,
        }
    }

    fn asha() -> EarlyStopping {
        EarlyStopping {
            rule: StoppingRule::Asha,
            ..median_rule()
        }
    }

    #[test]
    fn median_rule_stops_a_trial_below_its_peers_median() {
        let cfg = median_rule();
        let peers = [0.80, 0.85, 0.90];
        let reason = should_stop(&cfg, 1, 3, 0.84, &peers).expect("below the median");
        assert!(reason.contains("median 0.8500"), "{reason}");
        assert_eq!(should_stop(&cfg, 1, 3, 0.85, &peers), None);
        assert_eq!(should_stop(&cfg, 1, 3, 0.95, &peers), None);
        // Even count: the mean of the middle two.
        assert!(should_stop(&cfg, 1, 3, 0.859, &[0.8, 0.85, 0.87, 0.9]).is_some());
        assert!(should_stop(&cfg, 1, 3, 0.861, &[0.8, 0.85, 0.87, 0.9]).is_none());
    }

    #[test]
    fn nothing_is_stopped_without_enough_peers_in_grace_or_at_the_end() {
        let cfg = median_rule();
        assert_eq!(should_stop(&cfg, 1, 3, 0.1, &[0.9, 0.9]), None);
        assert_eq!(should_stop(&cfg, 1, 3, 0.1, &[0.9, 0.9, f64::NAN]), None);
        assert_eq!(should_stop(&cfg, 3, 3, 0.1, &[0.9; 5]), None);
        let late = EarlyStopping {
            grace_epochs: 2,
            ..cfg.clone()
        };
        assert_eq!(should_stop(&late, 1, 3, 0.1, &[0.9; 5]), None);
        let off = EarlyStopping {
            rule: StoppingRule::None,
            ..cfg
        };
        assert_eq!(should_stop(&off, 1, 3, 0.1, &[0.9; 5]), None);
    }

    #[test]
    fn asha_keeps_the_top_third_at_rungs_only() {
        let cfg = asha();
        let peers = [0.70, 0.75, 0.80, 0.85, 0.90];
        // Rung epoch 1, six trials: the top two go on.
        assert_eq!(should_stop(&cfg, 1, 9, 0.86, &peers), None);
        assert!(should_stop(&cfg, 1, 9, 0.84, &peers).is_some());
        // Epoch 2 is not a rung (1, 3, 9, ...).
        assert_eq!(should_stop(&cfg, 2, 9, 0.1, &peers), None);
        assert!(should_stop(&cfg, 3, 9, 0.1, &peers).is_some());
        assert!(is_rung(1, 1, 3) && is_rung(3, 1, 3) && is_rung(9, 1, 3));
        assert!(!is_rung(2, 1, 3) && !is_rung(4, 1, 3) && !is_rung(1, 2, 2));
    }

    proptest! {
        /// Early stopping never stops the best trial at an epoch, and the median rule never stops
        /// more than half of a set of trials.
        #[test]
        fn the_leader_is_never_stopped(
            values in prop::collection::vec(0.0f64..1.0, 4..30),
            epoch in 1u32..10,
            asha_rule in any::<bool>(),
        ) {
            let cfg = if asha_rule { asha() } else { median_rule() };
            let best = values.iter().copied().fold(f64::MIN, f64::max);
            let mut stopped = 0;
            for (i, &v) in values.iter().enumerate() {
                let peers: Vec<f64> = values.iter().enumerate()
                    .filter(|&(j, _)| j != i).map(|(_, &p)| p).collect();
                let decision = should_stop(&cfg, epoch, 10, v, &peers);
                if v == best {
                    prop_assert!(decision.is_none());
                }
                stopped += usize::from(decision.is_some());
            }
            if !asha_rule {
                prop_assert!(stopped <= values.len() / 2 + 1);
            }
        }
    }
}
