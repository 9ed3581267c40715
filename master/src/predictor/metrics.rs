//! The predictor benchmark's metrics: weighted Kendall τ and top-1 regret.

/// The hyperbolic weigher of Vigna's τ_h: rank r (0 = most important) weighs 1/(r + 1).
fn weigh(rank: usize) -> f64 {
    1.0 / (1.0 + rank as f64)
}

/// The weighted Kendall τ of Vigna (2015), exactly as `scipy.stats.weightedtau(predicted,
/// actual)` with its defaults computes it (the statistic the LogME paper reports): additive
/// hyperbolic weights, an exchange of the elements of ranks r and s weighing 1/(r+1) + 1/(s+1),
/// where the rank is the decreasing lexicographic rank by (predicted, actual); the result is the
/// average of that and the same with the roles swapped (rank by (actual, predicted)). Ties are
/// handled as scipy does; NaN counts as lower than every number (all NaNs tied).
///
/// 1 for the same order, -1 for the reverse; NaN when either side is constant or has fewer than
/// two elements, as scipy.
///
/// # Panics
/// If the slices differ in length.
pub fn weighted_kendall_tau(predicted: &[f64], actual: &[f64]) -> f64 {
    assert_eq!(
        predicted.len(),
        actual.len(),
        "weighted_kendall_tau: predicted and actual differ in length"
    );
    if predicted.is_empty() {
        return f64::NAN;
    }
    let predicted = nan_as_lowest(predicted);
    let actual = nan_as_lowest(actual);
    (weighted_ranked_tau(&predicted, &actual) + weighted_ranked_tau(&actual, &predicted)) / 2.0
}

/// Values with NaN replaced by a rank order that puts NaN below everything, as scipy's
/// `_toint64` does (dense ranks from 1, NaN 0); unchanged when there is no NaN.
fn nan_as_lowest(values: &[f64]) -> Vec<f64> {
    if !values.iter().any(|value| value.is_nan()) {
        return values.to_vec();
    }
    let mut distinct: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    distinct.sort_by(|left, right| left.partial_cmp(right).expect("no NaN left"));
    distinct.dedup_by(|next, previous| next == previous);
    values
        .iter()
        .map(|value| {
            if value.is_nan() {
                0.0
            } else {
                let below = distinct.partition_point(|known| known < value);
                (below + 1) as f64
            }
        })
        .collect()
}

/// scipy's `_weightedrankedtau(x, y, rank=None, weigher=1/(r+1), additive=True)`: the weighted
/// τ with each element ranked by decreasing (x, y). Inputs have no NaN.
fn weighted_ranked_tau(x: &[f64], y: &[f64]) -> f64 {
    let count = x.len();
    let compare = |left: f64, right: f64| left.partial_cmp(&right).expect("no NaN");
    // Increasing by x, ties by y, stably (numpy's lexsort).
    let mut perm: Vec<usize> = (0..count).collect();
    perm.sort_by(|&left, &right| {
        compare(x[left], x[right]).then_with(|| compare(y[left], y[right]))
    });
    // The largest (x, y) gets rank 0.
    let mut rank = vec![0; count];
    for (position, &element) in perm.iter().rev().enumerate() {
        rank[element] = position;
    }

    // Weight of the pairs tied in the key `same` (additive: each element of a group of g tied
    // elements is paired with the g - 1 others).
    let tied_weight = |perm: &[usize], same: &dyn Fn(usize, usize) -> bool| -> (f64, bool) {
        let mut total = 0.0;
        let mut first = 0;
        let mut sum = weigh(rank[perm[first]]);
        for index in 1..count {
            if !same(perm[first], perm[index]) {
                total += sum * (index - first - 1) as f64;
                first = index;
                sum = 0.0;
            }
            sum += weigh(rank[perm[index]]);
        }
        total += sum * (count - first - 1) as f64;
        (total, first == 0)
    };

    let joint_ties = tied_weight(&perm, &|a, b| x[a] == x[b] && y[a] == y[b]).0;
    let (x_ties, x_constant) = tied_weight(&perm, &|a, b| x[a] == x[b]);
    if x_constant {
        return f64::NAN;
    }

    let mut exchanges = 0.0;
    let mut temp = vec![0usize; count];
    merge_weigh(&mut perm, 0, count, y, &rank, &mut temp, &mut exchanges);

    let (y_ties, y_constant) = tied_weight(&perm, &|a, b| y[a] == y[b]);
    if y_constant {
        return f64::NAN;
    }
    let sum: f64 = perm.iter().map(|&element| weigh(rank[element])).sum();
    let total = sum * (count - 1) as f64;
    let tau = ((total - (y_ties + x_ties - joint_ties)) - 2.0 * exchanges)
        / (total - x_ties).sqrt()
        / (total - y_ties).sqrt();
    tau.clamp(-1.0, 1.0)
}

/// scipy's inner `weigh`: merge-sorts `perm[offset..offset + length]` by `y`, adding the weight
/// of every exchange to `exchanges`; returns the weight of the section.
fn merge_weigh(
    perm: &mut [usize],
    offset: usize,
    length: usize,
    y: &[f64],
    rank: &[usize],
    temp: &mut [usize],
    exchanges: &mut f64,
) -> f64 {
    if length == 1 {
        return weigh(rank[perm[offset]]);
    }
    let left_length = length / 2;
    let right_length = length - left_length;
    let middle = offset + left_length;
    let mut residual = merge_weigh(perm, offset, left_length, y, rank, temp, exchanges);
    let weight = merge_weigh(perm, middle, right_length, y, rank, temp, exchanges) + residual;
    if y[perm[middle - 1]] < y[perm[middle]] {
        return weight;
    }
    let (mut merged, mut left, mut right) = (0, 0, 0);
    while left < left_length && right < right_length {
        if y[perm[offset + left]] <= y[perm[middle + right]] {
            temp[merged] = perm[offset + left];
            residual -= weigh(rank[temp[merged]]);
            left += 1;
        } else {
            temp[merged] = perm[middle + right];
            *exchanges += weigh(rank[temp[merged]]) * (left_length - left) as f64 + residual;
            right += 1;
        }
        merged += 1;
    }
    perm.copy_within(offset + left..offset + left_length, offset + merged);
    perm[offset..offset + merged].copy_from_slice(&temp[..merged]);
    weight
}

/// Best actual score minus the actual score of the candidate predicted best (the first of equal
/// best predictions; NaN predictions are never chosen): what trusting the predictor's top pick
/// costs. 0 when the top pick is the best; NaN when nothing can be chosen.
///
/// # Panics
/// If the slices differ in length.
pub fn top1_regret(predicted: &[f64], actual: &[f64]) -> f64 {
    assert_eq!(
        predicted.len(),
        actual.len(),
        "top1_regret: predicted and actual differ in length"
    );
    let mut chosen: Option<usize> = None;
    for (index, value) in predicted.iter().enumerate() {
        if value.is_nan() {
            continue;
        }
        if chosen.is_none_or(|best| *value > predicted[best]) {
            chosen = Some(index);
        }
    }
    let Some(chosen) = chosen else {
        return f64::NAN;
    };
    let best = actual.iter().copied().fold(f64::NAN, f64::max);
    best - actual[chosen]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scipy 1.17.1 `weightedtau(x, y).statistic` and, for the one-sided helper,
    /// `weightedtau(x, y, rank=None).statistic`, printed by:
    /// ```python
    /// import numpy as np
    /// from scipy.stats import weightedtau
    /// cases = {
    ///     "distinct": ([0.1, 0.4, 0.35, 0.8, 0.5, 0.2], [0.3, 0.6, 0.7, 0.9, 0.4, 0.1]),
    ///     "ties": ([1., 2., 2., 3., 4., 4., 5.], [2., 1., 3., 3., 5., 4., 4.]),
    ///     "docs": ([12., 2., 1., 12., 2.], [1., 4., 7., 1., 0.]),
    ///     "nan": ([12., 2., 1., 12., 2.], [1., 4., 7., 1., np.nan]),
    ///     "nan_inside": ([0.5, np.nan, 0.2, 0.9, 0.4], [0.3, 0.1, 0.5, 0.8, 0.2]),
    ///     "joint_ties": ([1., 1., 2., 2., 3.], [1., 1., 2., 2., 0.]),
    /// }
    /// i = np.arange(50)
    /// cases["long"] = (list(np.sin(i * 1.7)), list(np.sin(i * 1.7) + 0.5 * np.cos(i * 2.3)))
    /// for name, (x, y) in cases.items():
    ///     print(name, repr(weightedtau(x, y).statistic),
    ///           repr(weightedtau(x, y, rank=None).statistic))
    /// ```
    type Case = (&'static str, Vec<f64>, Vec<f64>, f64, f64);

    fn scipy_cases() -> Vec<Case> {
        let nan = f64::NAN;
        let long_x: Vec<f64> = (0..50).map(|i| (f64::from(i) * 1.7).sin()).collect();
        let long_y: Vec<f64> = (0..50)
            .map(|i| (f64::from(i) * 1.7).sin() + 0.5 * (f64::from(i) * 2.3).cos())
            .collect();
        vec![
            (
                "distinct",
                vec![0.1, 0.4, 0.35, 0.8, 0.5, 0.2],
                vec![0.3, 0.6, 0.7, 0.9, 0.4, 0.1],
                0.5863945578231293,
                0.5863945578231293,
            ),
            (
                "ties",
                vec![1., 2., 2., 3., 4., 4., 5.],
                vec![2., 1., 3., 3., 5., 4., 4.],
                0.6373243091179188,
                0.6367852507670063,
            ),
            (
                "docs",
                vec![12., 2., 1., 12., 2.],
                vec![1., 4., 7., 1., 0.],
                -0.5669496815368272,
                -0.4157652301037516,
            ),
            (
                "nan",
                vec![12., 2., 1., 12., 2.],
                vec![1., 4., 7., 1., nan],
                -0.5669496815368272,
                -0.4157652301037516,
            ),
            (
                "nan_inside",
                vec![0.5, nan, 0.2, 0.9, 0.4],
                vec![0.3, 0.1, 0.5, 0.8, 0.2],
                0.6806569343065694,
                0.708029197080292,
            ),
            (
                "joint_ties",
                vec![1., 1., 2., 2., 3.],
                vec![1., 1., 2., 2., 0.],
                -0.08201954495490207,
                -0.3460721868365181,
            ),
            (
                "long",
                long_x,
                long_y,
                0.7512306745338488,
                0.7132644975203701,
            ),
        ]
    }

    #[test]
    fn weighted_tau_matches_scipy() {
        for (name, x, y, both, one_sided) in scipy_cases() {
            let tau = weighted_kendall_tau(&x, &y);
            assert!((tau - both).abs() < 1e-12, "{name}: {tau} against {both}");
            let ranked = weighted_ranked_tau(&nan_as_lowest(&x), &nan_as_lowest(&y));
            assert!(
                (ranked - one_sided).abs() < 1e-12,
                "{name} (rank=None): {ranked} against {one_sided}"
            );
        }
    }

    #[test]
    fn weighted_tau_is_one_for_the_same_order_and_minus_one_for_the_reverse() {
        let actual = [0.61, 0.72, 0.55, 0.9, 0.83, 0.4, 0.77];
        // Same order, different values.
        let same: Vec<f64> = actual.iter().map(|a| a * 3.0 - 1.0).collect();
        assert!((weighted_kendall_tau(&same, &actual) - 1.0).abs() < 1e-12);
        let reverse: Vec<f64> = actual.iter().map(|a| -a).collect();
        assert!((weighted_kendall_tau(&reverse, &actual) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn weighted_tau_of_constant_or_tiny_input_is_nan() {
        assert!(weighted_kendall_tau(&[], &[]).is_nan());
        assert!(weighted_kendall_tau(&[0.5], &[0.7]).is_nan());
        assert!(weighted_kendall_tau(&[1.0, 1.0, 1.0], &[0.1, 0.2, 0.3]).is_nan());
        assert!(weighted_kendall_tau(&[0.1, 0.2, 0.3], &[2.0, 2.0, 2.0]).is_nan());
    }

    #[test]
    fn top1_regret_is_the_loss_of_trusting_the_top_pick() {
        let actual = [0.80, 0.92, 0.85];
        assert_eq!(top1_regret(&[0.1, 0.9, 0.3], &actual), 0.0);
        assert!((top1_regret(&[0.1, 0.2, 0.3], &actual) - 0.07).abs() < 1e-12);
        // Equal best predictions: the first is chosen.
        assert!((top1_regret(&[0.5, 0.2, 0.5], &actual) - 0.12).abs() < 1e-12);
        assert!((top1_regret(&[f64::NAN, 0.2, 0.1], &actual) - 0.0).abs() < 1e-12);
        assert!(top1_regret(&[], &[]).is_nan());
        assert!(top1_regret(&[f64::NAN], &[0.3]).is_nan());
    }
}
