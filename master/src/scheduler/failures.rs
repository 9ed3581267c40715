//! When failed trials end an experiment.
//!
//! Failed trials do not count against `budget.max_trials` (a trial that failed trained no
//! model), so without a limit an experiment whose every trial fails would keep proposing. The
//! limit is `budget.max_failures` when the spec sets it. When it does not, two rules apply: the
//! experiment fails once `max_trials` trials have failed, and — sooner — once its first
//! [`FIRST_FAILURES`] trials have all failed with nothing trained yet: a setup that fails every
//! trial (a seed that does not fit the dataset, a checkpoint store the workers cannot read) ends
//! within a few trials, with the first error in its status, instead of after `max_trials`
//! failures.

use explore_common::spec::Budget;

use crate::store::TrialCounts;

/// Failed trials before any trial completed or was pruned that end an experiment whose spec
/// leaves `budget.max_failures` unset.
pub const FIRST_FAILURES: u32 = 5;

/// Why the experiment's failed trials end it, or `None` while they do not.
pub fn limit_reached(budget: &Budget, counts: &TrialCounts) -> Option<String> {
    let failed = counts.failed;
    match budget.max_failures {
        Some(limit) => (failed >= limit).then(|| format!("{failed} trials failed (limit {limit})")),
        None if failed >= budget.max_trials => Some(format!(
            "{failed} trials failed (limit {}: budget.max_trials, as budget.max_failures is not set)",
            budget.max_trials
        )),
        None if counts.finished() == 0 && failed >= FIRST_FAILURES => Some(format!(
            "the first {failed} trials failed and none trained to a result (with budget.max_failures \
             not set, {FIRST_FAILURES} failures before any result end the experiment)"
        )),
        None => None,
    }
}

/// The status reason of an experiment ended by its failures: `reason`, then the first failed
/// trial's error (shortened to 300 characters), the likeliest cause of the rest.
pub fn with_first_error(reason: &str, first_error: Option<&str>) -> String {
    match first_error.map(str::trim).filter(|e| !e.is_empty()) {
        Some(error) => {
            let mut short: String = error.chars().take(300).collect();
            if short.len() < error.len() {
                short.push('…');
            }
            format!("{reason}; first error: {short}")
        }
        None => reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_trials: u32, max_failures: Option<u32>) -> Budget {
        let mut spec = explore_common::spec::ExperimentSpec::from_toml(&format!(
            "name = \"f\"\n[budget]\nmax_trials = {max_trials}\n"
        ))
        .unwrap();
        spec.budget.max_failures = max_failures;
        spec.budget
    }

    fn counts(completed: u32, pruned: u32, failed: u32) -> TrialCounts {
        TrialCounts {
            completed,
            pruned,
            failed,
            ..TrialCounts::default()
        }
    }

    #[test]
    fn a_set_limit_is_the_only_rule() {
        let b = budget(100, Some(8));
        assert_eq!(limit_reached(&b, &counts(0, 0, 7)), None);
        let reason = limit_reached(&b, &counts(0, 0, 8)).unwrap();
        assert_eq!(reason, "8 trials failed (limit 8)");
        assert!(limit_reached(&b, &counts(3, 0, 8)).is_some());
    }

    #[test]
    fn without_a_limit_the_first_failures_end_an_experiment_that_trained_nothing() {
        let b = budget(100, None);
        assert_eq!(limit_reached(&b, &counts(0, 0, FIRST_FAILURES - 1)), None);
        let reason = limit_reached(&b, &counts(0, 0, FIRST_FAILURES)).unwrap();
        assert!(reason.starts_with("the first 5 trials failed"), "{reason}");
        // One trial trained to a result (completed or pruned): failures are the search's cost.
        assert_eq!(limit_reached(&b, &counts(1, 0, 50)), None);
        assert_eq!(limit_reached(&b, &counts(0, 1, 50)), None);
    }

    #[test]
    fn without_a_limit_max_trials_failures_end_it() {
        let b = budget(100, None);
        assert_eq!(limit_reached(&b, &counts(10, 0, 99)), None);
        let reason = limit_reached(&b, &counts(10, 0, 100)).unwrap();
        assert!(
            reason.starts_with("100 trials failed (limit 100"),
            "{reason}"
        );
        // A budget smaller than the first-failures rule: its own size decides.
        let small = budget(2, None);
        assert!(limit_reached(&small, &counts(0, 0, 2)).is_some());
    }

    #[test]
    fn the_first_error_is_added_and_shortened() {
        assert_eq!(with_first_error("r", None), "r");
        assert_eq!(with_first_error("r", Some("  ")), "r");
        assert_eq!(
            with_first_error("r", Some("shape mismatch\n")),
            "r; first error: shape mismatch"
        );
        let long = with_first_error("r", Some(&"é".repeat(1000)));
        assert_eq!(long.chars().count(), "r; first error: ".len() + 300 + 1);
        assert!(long.ends_with('…'));
    }
}
