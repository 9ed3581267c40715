//! Simulated annealing as pure, seeded functions.
//!
//! The master keeps the annealing state (the pool of trained models, their scores and the number
//! of completed trials) in its database and calls these functions to decide what to do next:
//! [`temperature`] / [`next_temperature`] from the cooling schedule (per annealing chain), [`draw_base`] to pick a base model from the pool with
//! Boltzmann weights, and [`metropolis_accept`] to decide whether a trained child replaces its
//! parent as a base. Scores are "higher is better" (validation accuracy).
//!
//! Every random decision takes its own generator from [`rng_for`], keyed by the experiment seed, a
//! stream (what the decision is for) and an index (which trial it is for), so a decision can be
//! replayed after a restart without replaying every decision before it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::spec::{AnnealingConfig, Cooling};

/// Stream of the randomness that draws a base model and mutates it into a proposal.
pub const STREAM_PROPOSAL: u64 = 1;
/// Stream of the randomness of the Metropolis acceptance test.
pub const STREAM_ACCEPTANCE: u64 = 2;

/// Tag in the last key word, so these generators never coincide with a plain
/// `ChaCha8Rng::from_seed` of small numbers used elsewhere.
const KEY_DOMAIN: u64 = 0x6578_706c_6f72_6531; // "explore1"

/// Deterministic generator for (experiment seed, stream, index).
///
/// The same inputs always give the same random sequence; any other input gives an independent
/// one. The 256-bit ChaCha key is `seed ‖ stream ‖ index ‖ domain tag` (little-endian words), an
/// injective mapping, so distinct triples get distinct keys and ChaCha makes their outputs
/// independent. The result does not depend on the platform.
pub fn rng_for(seed: u64, stream: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, word) in key
        .chunks_exact_mut(8)
        .zip([seed, stream, index, KEY_DOMAIN])
    {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// Scheduled temperature of a chain after `results` results, with `progress` (0 to 1) of the
/// experiment's budget used.
///
/// [`Cooling::Exponential`]: `T0 · rate^results`; [`Cooling::Linear`] and the cap of
/// [`Cooling::Adaptive`]: `T0 · (1 − progress)` (the floor once the budget is used up). The result
/// is always clamped to `[min_temperature, initial_temperature]`.
pub fn temperature(cfg: &AnnealingConfig, results: u32, progress: f64) -> f64 {
    let t0 = cfg.initial_temperature;
    let raw = match cfg.cooling {
        Cooling::Exponential => t0 * cfg.cooling_rate.powf(f64::from(results)),
        Cooling::Linear | Cooling::Adaptive => linear_ramp(t0, progress),
    };
    clamp_temperature(cfg, raw)
}

/// The temperature of a chain after one more result, given its temperature before it.
///
/// Exponential and linear cooling follow [`temperature`]. Adaptive cooling multiplies the current
/// temperature by `exp(λ (a − target))` (`a` = 1 if the result was accepted, else 0, and
/// `λ = −2 ln(cooling_rate)`), so the chain's acceptance rate settles near
/// `target_acceptance`; the linear ramp caps it, so the search still cools over the budget.
pub fn next_temperature(
    cfg: &AnnealingConfig,
    current: f64,
    results: u32,
    progress: f64,
    accepted: bool,
) -> f64 {
    match cfg.cooling {
        Cooling::Exponential | Cooling::Linear => temperature(cfg, results, progress),
        Cooling::Adaptive => {
            let lambda = -2.0 * cfg.cooling_rate.ln();
            let a = if accepted { 1.0 } else { 0.0 };
            let adapted = current * (lambda * (a - cfg.target_acceptance)).exp();
            let cap = linear_ramp(cfg.initial_temperature, progress);
            clamp_temperature(cfg, adapted.min(cap))
        }
    }
}

/// Whether a chain that has gone `since_improvement` results without beating its best should be
/// reheated.
pub fn should_reheat(cfg: &AnnealingConfig, since_improvement: u32) -> bool {
    cfg.reheat_after > 0 && since_improvement >= cfg.reheat_after
}

/// `t0 · (1 − progress)`, 0 once progress reaches 1 (NaN progress counts as 0).
fn linear_ramp(t0: f64, progress: f64) -> f64 {
    let p = if progress.is_nan() { 0.0 } else { progress };
    if p >= 1.0 {
        0.0
    } else {
        t0 * (1.0 - p.max(0.0))
    }
}

/// Clamps to `[min_temperature, initial_temperature]`, written so that a malformed config (NaN,
/// min above initial) cannot panic.
fn clamp_temperature(cfg: &AnnealingConfig, raw: f64) -> f64 {
    let floor = cfg.min_temperature;
    let t0 = cfg.initial_temperature;
    let ceiling = if t0 >= floor { t0 } else { floor };
    if raw.is_nan() || raw <= floor {
        floor
    } else if raw >= ceiling {
        ceiling
    } else {
        raw
    }
}

/// Normalised Boltzmann weights `exp(score / T)` of the scores.
///
/// Computed stably as `exp((score − max) / T)`. Non-finite scores get weight 0, and so does
/// everything when no score is finite. When at least one score is finite the weights sum to 1.
/// A temperature that is not positive (or NaN) is the limit `T → 0`: the best scores share all
/// the weight. An empty input gives an empty output.
pub fn boltzmann_weights(scores: &[f64], temperature: f64) -> Vec<f64> {
    let max = scores
        .iter()
        .copied()
        .filter(|s| s.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return vec![0.0; scores.len()];
    }
    let greedy = temperature.is_nan() || temperature <= 0.0;
    let mut weights: Vec<f64> = scores
        .iter()
        .map(|&s| {
            if !s.is_finite() {
                0.0
            } else if greedy {
                if s == max {
                    1.0
                } else {
                    0.0
                }
            } else {
                ((s - max) / temperature).exp()
            }
        })
        .collect();
    // The best score contributes exp(0) = 1, so the sum is at least 1.
    let sum: f64 = weights.iter().sum();
    for w in &mut weights {
        *w /= sum;
    }
    weights
}

/// Draws an index with Boltzmann weights at `temperature` (see [`boltzmann_weights`]); `None`
/// when no score is finite. Uses exactly one `f64` from `rng`.
pub fn draw_base<R: Rng + ?Sized>(scores: &[f64], temperature: f64, rng: &mut R) -> Option<usize> {
    let weights = boltzmann_weights(scores, temperature);
    let last = weights.iter().rposition(|&w| w > 0.0)?;
    let u: f64 = rng.gen();
    let mut cumulative = 0.0;
    for (i, &w) in weights.iter().enumerate() {
        cumulative += w;
        if w > 0.0 && u < cumulative {
            return Some(i);
        }
    }
    // Rounding left the cumulative sum just below u.
    Some(last)
}

/// Metropolis acceptance probability of moving from a parent to a child (higher score is
/// better): 1 if `child >= parent`, else `exp((child − parent) / T)`.
///
/// A NaN child score is never accepted; a finite child of a NaN parent always is. A temperature
/// that is not positive (or NaN) accepts only improvements.
pub fn acceptance_probability(parent_score: f64, child_score: f64, temperature: f64) -> f64 {
    if child_score.is_nan() {
        return 0.0;
    }
    if parent_score.is_nan() || child_score >= parent_score {
        return 1.0;
    }
    if temperature.is_nan() || temperature <= 0.0 {
        return 0.0;
    }
    let p = ((child_score - parent_score) / temperature).exp();
    if p.is_nan() {
        0.0
    } else {
        p.min(1.0)
    }
}

/// Accepts the child iff `u < acceptance_probability(parent, child, T)`, where `u` is uniform in
/// `[0, 1)` (e.g. `rng_for(seed, STREAM_ACCEPTANCE, trial).gen()`).
pub fn metropolis_accept(parent_score: f64, child_score: f64, temperature: f64, u: f64) -> bool {
    u < acceptance_probability(parent_score, child_score, temperature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::RngCore;

    fn exponential() -> AnnealingConfig {
        AnnealingConfig {
            initial_temperature: 0.05,
            cooling: Cooling::Exponential,
            cooling_rate: 0.95,
            min_temperature: 0.002,
            ..AnnealingConfig::default()
        }
    }

    fn linear() -> AnnealingConfig {
        AnnealingConfig {
            cooling: Cooling::Linear,
            ..exponential()
        }
    }

    fn assert_close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} is not within {tol} of {b}");
    }

    #[test]
    fn rng_for_is_reproducible_and_distinct() {
        let draw = |seed, stream, index| {
            let mut rng = rng_for(seed, stream, index);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(42, STREAM_PROPOSAL, 7), draw(42, STREAM_PROPOSAL, 7));
        let base = draw(42, STREAM_PROPOSAL, 7);
        assert_ne!(base, draw(42, STREAM_PROPOSAL, 8));
        assert_ne!(base, draw(42, STREAM_ACCEPTANCE, 7));
        assert_ne!(base, draw(43, STREAM_PROPOSAL, 7));
        // Swapping the roles of the words gives another key.
        assert_ne!(draw(1, 2, 3), draw(3, 2, 1));
        let mut firsts: Vec<u64> = (0..1000)
            .map(|i| rng_for(1, STREAM_PROPOSAL, i).next_u64())
            .collect();
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), 1000);
    }

    #[test]
    fn rng_for_is_stable_across_releases() {
        // Pinned so a change of the key layout (which would change every stored experiment's
        // replay) is noticed.
        let first = rng_for(42, STREAM_PROPOSAL, 0).next_u64();
        assert_eq!(first, rng_for(42, STREAM_PROPOSAL, 0).next_u64());
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&42u64.to_le_bytes());
        key[8..16].copy_from_slice(&1u64.to_le_bytes());
        key[24..].copy_from_slice(&KEY_DOMAIN.to_le_bytes());
        assert_eq!(first, ChaCha8Rng::from_seed(key).next_u64());
    }

    #[test]
    fn exponential_cooling_starts_at_t0_and_floors() {
        let cfg = exponential();
        assert_close(temperature(&cfg, 0, 0.0), 0.05, 1e-15);
        assert_close(temperature(&cfg, 1, 0.5), 0.05 * 0.95, 1e-15);
        assert_close(temperature(&cfg, 10, 0.5), 0.05 * 0.95f64.powi(10), 1e-15);
        assert_eq!(temperature(&cfg, 1000, 0.5), 0.002);
        assert_eq!(temperature(&cfg, u32::MAX, 0.5), 0.002);
    }

    #[test]
    fn linear_cooling_hits_the_floor_at_the_end_of_the_budget() {
        let cfg = linear();
        assert_close(temperature(&cfg, 0, 0.0), 0.05, 1e-15);
        assert_close(temperature(&cfg, 7, 0.5), 0.025, 1e-15);
        assert_eq!(temperature(&cfg, 7, 1.0), 0.002);
        assert_eq!(temperature(&cfg, 7, 1.5), 0.002);
        assert_close(temperature(&cfg, 7, f64::NAN), 0.05, 1e-15);
        // Just before the end it is already on the floor (0.05 * 1/100 < 0.002).
        assert_eq!(temperature(&cfg, 7, 0.99), 0.002);
    }

    #[test]
    fn adaptive_cooling_rises_on_acceptance_and_falls_on_rejection() {
        let cfg = AnnealingConfig {
            cooling: Cooling::Adaptive,
            cooling_rate: 0.8,
            target_acceptance: 0.25,
            ..exponential()
        };
        let t = 0.01;
        let up = next_temperature(&cfg, t, 1, 0.1, true);
        let down = next_temperature(&cfg, t, 1, 0.1, false);
        let lambda = -2.0 * 0.8f64.ln();
        assert_close(up, t * (lambda * 0.75).exp(), 1e-15);
        assert_close(down, t * (-lambda * 0.25).exp(), 1e-15);
        // The linear ramp caps it: near the end of the budget acceptance cannot keep it hot.
        assert_close(next_temperature(&cfg, 0.04, 1, 0.9, true), 0.005, 1e-12);
        // At the target rate the temperature is stationary: 1 accept per 3 rejects.
        let mut t = 0.01;
        for k in 0..40u32 {
            t = next_temperature(&cfg, t, k, 0.0, k % 4 == 0);
        }
        assert_close(t, 0.01, 1e-9);
    }

    #[test]
    fn reheating_waits_for_the_configured_stagnation() {
        let mut cfg = exponential();
        cfg.reheat_after = 3;
        assert!(!should_reheat(&cfg, 2));
        assert!(should_reheat(&cfg, 3));
        cfg.reheat_after = 0;
        assert!(!should_reheat(&cfg, 1000));
    }

    #[test]
    fn malformed_config_does_not_panic() {
        let cfg = AnnealingConfig {
            initial_temperature: 0.001,
            min_temperature: 0.01,
            ..exponential()
        };
        assert_eq!(temperature(&cfg, 0, 0.0), 0.01);
        let cfg = AnnealingConfig {
            cooling_rate: f64::NAN,
            ..exponential()
        };
        assert_eq!(temperature(&cfg, 3, 0.0), 0.002);
        let cfg = AnnealingConfig {
            cooling: Cooling::Adaptive,
            ..cfg
        };
        // A NaN temperature (and NaN step) recovers to the linear cap, T0 at the start.
        assert_eq!(next_temperature(&cfg, f64::NAN, 3, 0.0, true), 0.05);
    }

    #[test]
    fn weights_of_known_scores() {
        assert!(boltzmann_weights(&[], 0.1).is_empty());
        let w = boltzmann_weights(&[0.0, 0.1], 0.1);
        let e = 1f64.exp();
        assert_close(w[0], 1.0 / (1.0 + e), 1e-12);
        assert_close(w[1], e / (1.0 + e), 1e-12);
        // Huge scores do not overflow.
        let w = boltzmann_weights(&[1e6, 1e6 + 1.0], 0.001);
        assert_close(w[1], 1.0, 1e-12);
        assert!(w.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn non_finite_scores_get_no_weight() {
        let w = boltzmann_weights(&[f64::NAN, 0.5, f64::INFINITY, f64::NEG_INFINITY, 0.5], 0.1);
        assert_eq!(w, vec![0.0, 0.5, 0.0, 0.0, 0.5]);
        assert_eq!(
            boltzmann_weights(&[f64::NAN, f64::NEG_INFINITY], 0.1),
            vec![0.0, 0.0]
        );
        let mut rng = rng_for(1, 2, 3);
        assert_eq!(draw_base(&[f64::NAN], 0.1, &mut rng), None);
        assert_eq!(draw_base(&[], 0.1, &mut rng), None);
        for _ in 0..100 {
            assert_eq!(
                draw_base(&[f64::NAN, 0.3, f64::INFINITY], 0.1, &mut rng),
                Some(1)
            );
        }
    }

    #[test]
    fn zero_temperature_is_greedy() {
        assert_eq!(
            boltzmann_weights(&[0.1, 0.9, 0.9], 0.0),
            vec![0.0, 0.5, 0.5]
        );
        assert_eq!(acceptance_probability(0.5, 0.4, 0.0), 0.0);
        assert_eq!(acceptance_probability(0.5, 0.6, 0.0), 1.0);
    }

    #[test]
    fn lower_temperature_concentrates_weight_on_the_best() {
        let scores = [0.80, 0.85, 0.90, 0.88];
        let mut previous = 0.0;
        for t in [1.0, 0.1, 0.03, 0.01, 0.003, 0.001] {
            let w = boltzmann_weights(&scores, t);
            assert!(w[2] > previous, "T = {t}: {w:?}");
            previous = w[2];
        }
        assert!(previous > 0.99);
    }

    #[test]
    fn acceptance_of_known_moves() {
        assert_eq!(acceptance_probability(0.8, 0.9, 0.01), 1.0);
        assert_eq!(acceptance_probability(0.8, 0.8, 0.01), 1.0);
        assert_close(
            acceptance_probability(0.8, 0.78, 0.02),
            (-1f64).exp(),
            1e-12,
        );
        assert!(metropolis_accept(0.8, 0.78, 0.02, 0.3));
        assert!(!metropolis_accept(0.8, 0.78, 0.02, 0.4));
        assert!(metropolis_accept(0.8, 0.9, 0.02, 0.999_999));
        assert!(!metropolis_accept(0.8, f64::NAN, 0.02, 0.0));
        assert!(metropolis_accept(f64::NAN, 0.1, 0.02, 0.999));
    }

    #[test]
    fn draw_frequencies_match_the_weights() {
        let scores = [0.70, 0.75, 0.80, f64::NAN, 0.78];
        let t = 0.05;
        let weights = boltzmann_weights(&scores, t);
        let n = 20_000;
        let mut counts = [0usize; 5];
        let mut rng = rng_for(7, STREAM_PROPOSAL, 0);
        for _ in 0..n {
            counts[draw_base(&scores, t, &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[3], 0);
        for (c, w) in counts.iter().zip(&weights) {
            assert_close(*c as f64 / n as f64, *w, 0.02);
        }
    }

    fn finite_scores() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(-1.0f64..1.0, 1..20)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn weights_sum_to_one_and_are_monotone(scores in finite_scores(), t in 1e-4f64..10.0) {
            let w = boltzmann_weights(&scores, t);
            prop_assert_eq!(w.len(), scores.len());
            prop_assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            for i in 0..scores.len() {
                prop_assert!((0.0..=1.0).contains(&w[i]));
                for j in 0..scores.len() {
                    if scores[i] > scores[j] {
                        prop_assert!(w[i] >= w[j]);
                    }
                    if scores[i] == scores[j] {
                        prop_assert_eq!(w[i], w[j]);
                    }
                }
            }
        }

        #[test]
        fn weights_with_non_finite_scores_sum_to_one(
            scores in prop::collection::vec(
                prop_oneof![
                    4 => (-1.0f64..1.0).boxed(),
                    1 => Just(f64::NAN).boxed(),
                    1 => Just(f64::INFINITY).boxed(),
                    1 => Just(f64::NEG_INFINITY).boxed(),
                ],
                0..12,
            ),
            t in 1e-4f64..10.0,
        ) {
            let w = boltzmann_weights(&scores, t);
            prop_assert_eq!(w.len(), scores.len());
            let any_finite = scores.iter().any(|s| s.is_finite());
            let sum: f64 = w.iter().sum();
            if any_finite {
                prop_assert!((sum - 1.0).abs() < 1e-9);
            } else {
                prop_assert_eq!(sum, 0.0);
            }
            for (s, x) in scores.iter().zip(&w) {
                if !s.is_finite() {
                    prop_assert_eq!(*x, 0.0);
                }
            }
        }

        #[test]
        fn cooling_concentrates_the_best_weight(scores in finite_scores(), t in 1e-3f64..1.0) {
            let best = scores
                .iter()
                .enumerate()
                .fold(0, |b, (i, s)| if *s > scores[b] { i } else { b });
            let hot = boltzmann_weights(&scores, t)[best];
            let cold = boltzmann_weights(&scores, t / 2.0)[best];
            prop_assert!(cold >= hot - 1e-12);
        }

        #[test]
        fn acceptance_is_one_for_improvements_and_decreases_as_it_cools(
            parent in -1.0f64..1.0,
            delta in 1e-3f64..0.5,
            t in 1e-2f64..1.0,
        ) {
            prop_assert_eq!(acceptance_probability(parent, parent + delta, t), 1.0);
            prop_assert_eq!(acceptance_probability(parent, parent, t), 1.0);
            let worse = acceptance_probability(parent, parent - delta, t);
            prop_assert!(worse > 0.0 && worse < 1.0, "{}", worse);
            let colder = acceptance_probability(parent, parent - delta, t / 2.0);
            prop_assert!(colder < worse);
            prop_assert!(metropolis_accept(parent, parent + delta, t, 0.999_999));
        }

        #[test]
        fn exponential_cooling_is_monotone_and_floored(
            t0 in 1e-3f64..1.0,
            floor_fraction in 1e-3f64..1.0,
            rate in 0.5f64..=1.0,
            max_trials in 1u32..500,
        ) {
            let cfg = AnnealingConfig {
                initial_temperature: t0,
                cooling: Cooling::Exponential,
                cooling_rate: rate,
                min_temperature: t0 * floor_fraction,
                ..AnnealingConfig::default()
            };
            let mut previous = f64::INFINITY;
            for k in 0..600 {
                let t = temperature(&cfg, k, f64::from(k) / f64::from(max_trials));
                prop_assert!(t <= previous);
                prop_assert!(t >= cfg.min_temperature && t <= t0);
                previous = t;
            }
        }

        #[test]
        fn linear_cooling_is_monotone_and_ends_on_the_floor(
            t0 in 1e-3f64..1.0,
            floor_fraction in 1e-3f64..1.0,
            max_trials in 1u32..500,
        ) {
            let cfg = AnnealingConfig {
                initial_temperature: t0,
                cooling: Cooling::Linear,
                cooling_rate: 1.0,
                min_temperature: t0 * floor_fraction,
                ..AnnealingConfig::default()
            };
            let mut previous = f64::INFINITY;
            for k in 0..=max_trials + 5 {
                let t = temperature(&cfg, k, f64::from(k) / f64::from(max_trials));
                prop_assert!(t <= previous);
                prop_assert!(t >= cfg.min_temperature && t <= t0);
                previous = t;
            }
            prop_assert_eq!(temperature(&cfg, max_trials, 1.0), cfg.min_temperature);
        }

        #[test]
        fn adaptive_cooling_stays_in_bounds(
            t0 in 1e-3f64..1.0,
            floor_fraction in 1e-3f64..1.0,
            rate in 0.5f64..0.999,
            target in 0.05f64..0.95,
            decisions in prop::collection::vec(any::<bool>(), 1..100),
        ) {
            let cfg = AnnealingConfig {
                initial_temperature: t0,
                cooling: Cooling::Adaptive,
                cooling_rate: rate,
                min_temperature: t0 * floor_fraction,
                target_acceptance: target,
                ..AnnealingConfig::default()
            };
            let mut t = t0;
            let n = decisions.len() as f64;
            for (k, &accepted) in decisions.iter().enumerate() {
                let progress = k as f64 / n;
                t = next_temperature(&cfg, t, k as u32 + 1, progress, accepted);
                prop_assert!(t >= cfg.min_temperature && t <= t0);
                prop_assert!(t <= (t0 * (1.0 - progress)).max(cfg.min_temperature) + 1e-15);
            }
        }

        #[test]
        fn draw_base_returns_a_finite_scored_index(
            scores in prop::collection::vec(
                prop_oneof![3 => (-1.0f64..1.0).boxed(), 1 => Just(f64::NAN).boxed()],
                0..10,
            ),
            t in 1e-4f64..1.0,
            seed in any::<u64>(),
        ) {
            let mut rng = rng_for(seed, STREAM_PROPOSAL, 0);
            match draw_base(&scores, t, &mut rng) {
                Some(i) => prop_assert!(scores[i].is_finite()),
                None => prop_assert!(scores.iter().all(|s| !s.is_finite())),
            }
        }
    }
}
