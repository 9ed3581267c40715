//! Hyperparameter operators: one or two random changes within a search space, and sampling
//! from scratch.

use rand::seq::SliceRandom;
use rand::Rng;

use super::pick_other;
use crate::hparams::{Augment, HyperParams, Objective, Optimizer, Schedule};
use crate::spec::SearchSpace;

#[cfg(test)]
mod tests;

/// Standard deviation of the log-normal learning-rate step.
const LR_LOG_SIGMA: f64 = 0.5;

/// Standard deviation of the log-normal step of the equivalent learning rate (ELR mode).
const ELR_LOG_SIGMA: f64 = 0.5;

/// Standard deviation of the log-normal weight-decay step.
const WD_LOG_SIGMA: f64 = 1.0;

/// The smallest non-zero weight decay drawn when the range starts at zero, relative to its top.
const WD_LOW_FRACTION: f64 = 1e-3;

/// Standard deviation of the normal step of an augmentation probability (`flip`, `erase`).
const AUGMENT_PROBABILITY_SIGMA: f64 = 0.1;

/// How often a numeric hyperparameter step is redrawn when rounding or clamping undid it.
const NUMERIC_REDRAWS: usize = 8;

/// Applies one or two random hyperparameter changes within the space.
///
/// Values of the parent outside the space are first clamped into it (and the description says
/// so). The result always passes `validate()` and lies inside the space; the description lists
/// the changes (e.g. `"lr 0.002->0.0031; epochs 3->4"`). Only a space that pins every value can
/// leave the hyperparameters unchanged.
pub fn mutate_hparams<R: Rng + ?Sized>(
    hparams: &HyperParams,
    space: &SearchSpace,
    rng: &mut R,
) -> (HyperParams, String) {
    let (child, description, _) = mutate_hparams_traced(hparams, space, rng);
    (child, description)
}

/// Samples plain-objective hyperparameters uniformly from the space: a log-uniform learning rate, uniform batch
/// size, optimiser, schedule and epochs, and a weight decay that is log-uniform when the range
/// starts above zero, else 0 with probability 0.2 and log-uniform in `[high / 1000, high]`
/// otherwise. Numbers are rounded to three significant digits. Augmentation strengths are
/// uniform in their ranges (probabilities to two decimals), off when the space has none; a
/// space without augmentation ranges draws exactly what it drew before they existed. Always
/// valid.
pub fn sample_hparams<R: Rng + ?Sized>(space: &SearchSpace, rng: &mut R) -> HyperParams {
    let b = HpBounds::of(space);
    let [lr_lo, lr_hi] = b.learning_rate;
    let [wd_lo, wd_hi] = b.weight_decay;
    let learning_rate = tidy(log_uniform(lr_lo, lr_hi, rng), lr_lo, lr_hi);
    let batch_size = *b
        .batch_sizes
        .choose(rng)
        .expect("bounds lists are non-empty");
    let optimizer = *b
        .optimizers
        .choose(rng)
        .expect("bounds lists are non-empty");
    let schedule = *b.schedules.choose(rng).expect("bounds lists are non-empty");
    let weight_decay = if wd_hi == 0.0 {
        0.0
    } else if wd_lo > 0.0 {
        tidy(log_uniform(wd_lo, wd_hi, rng), wd_lo, wd_hi)
    } else if rng.gen_bool(0.2) {
        0.0
    } else {
        tidy(
            log_uniform(wd_hi * WD_LOW_FRACTION, wd_hi, rng),
            wd_lo,
            wd_hi,
        )
    };
    let epochs = rng.gen_range(b.epochs[0]..=b.epochs[1]);
    let [c0, c1] = b.crop_pad;
    let crop_pad = if c0 < c1 { rng.gen_range(c0..=c1) } else { c0 };
    let mut probability = |[lo, hi]: [f64; 2]| {
        if lo < hi {
            round_probability(rng.gen_range(lo..=hi), lo, hi)
        } else {
            lo
        }
    };
    let augment = Augment {
        crop_pad,
        flip: probability(b.flip),
        erase: probability(b.erase),
    };
    HyperParams {
        optimizer,
        learning_rate,
        schedule,
        batch_size,
        weight_decay,
        epochs,
        objective: Objective::Plain,
        head_only: false,
        augment,
    }
}

/// One kind of hyperparameter change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum HpOp {
    LearningRate,
    BatchSize,
    Optimizer,
    Schedule,
    WeightDecay,
    Epochs,
    /// The equivalent learning rate of ELR mode.
    Elr,
    /// The random crop's padding (`augment.crop_pad`), one pixel up or down.
    CropPad,
    /// The horizontal-flip probability (`augment.flip`).
    Flip,
    /// The random-erasing probability (`augment.erase`).
    Erase,
}

impl HpOp {
    /// The operators of the plain objective (in this order, so seeded replays stay the same).
    const PLAIN: [HpOp; 6] = [
        HpOp::LearningRate,
        HpOp::BatchSize,
        HpOp::Optimizer,
        HpOp::Schedule,
        HpOp::WeightDecay,
        HpOp::Epochs,
    ];

    /// The operators of ELR mode: the ELR replaces learning rate and weight decay, which are
    /// never touched.
    const ELR: [HpOp; 5] = [
        HpOp::Elr,
        HpOp::BatchSize,
        HpOp::Optimizer,
        HpOp::Schedule,
        HpOp::Epochs,
    ];

    /// The operators for `hp` in `b`: those of its objective, then the augmentation operators
    /// whose range in the space has more than one value (appended, so a space without
    /// augmentation shuffles and draws exactly as before they existed).
    fn for_hparams(hp: &HyperParams, b: &HpBounds) -> Vec<HpOp> {
        let mut ops = if hp.objective.is_elr() {
            HpOp::ELR.to_vec()
        } else {
            HpOp::PLAIN.to_vec()
        };
        if b.crop_pad[0] < b.crop_pad[1] {
            ops.push(HpOp::CropPad);
        }
        if b.flip[0] < b.flip[1] {
            ops.push(HpOp::Flip);
        }
        if b.erase[0] < b.erase[1] {
            ops.push(HpOp::Erase);
        }
        ops
    }
}

/// The ranges of a search space, made usable even when the space was never validated: bad
/// ranges fall back to the defaults, lists are deduplicated and never empty.
pub(super) struct HpBounds {
    learning_rate: [f64; 2],
    batch_sizes: Vec<u32>,
    epochs: [u32; 2],
    optimizers: Vec<Optimizer>,
    schedules: Vec<Schedule>,
    weight_decay: [f64; 2],
    elr: [f64; 2],
    /// `augment.crop_pad`'s range; `[0, 0]` (off) when the space has none or a bad one.
    crop_pad: [u32; 2],
    /// `augment.flip`'s range; `[0, 0]` (off) when the space has none or a bad one.
    flip: [f64; 2],
    /// `augment.erase`'s range; `[0, 0]` (off) when the space has none or a bad one.
    erase: [f64; 2],
}

impl HpBounds {
    pub(super) fn of(space: &SearchSpace) -> HpBounds {
        let defaults = SearchSpace::default();
        let [lo, hi] = space.learning_rate;
        let learning_rate =
            if lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi && hi <= 10.0 {
                [lo, hi]
            } else {
                defaults.learning_rate
            };
        let mut batch_sizes: Vec<u32> = space
            .batch_sizes
            .iter()
            .copied()
            .filter(|b| (1..=65_536).contains(b))
            .collect();
        batch_sizes.sort_unstable();
        batch_sizes.dedup();
        if batch_sizes.is_empty() {
            batch_sizes = defaults.batch_sizes;
        }
        let e0 = space.epochs[0].clamp(1, 1000);
        let e1 = space.epochs[1].clamp(e0, 1000);
        let [w0, w1] = space.weight_decay;
        let weight_decay = if w0.is_finite() && w1.is_finite() && 0.0 <= w0 && w0 <= w1 && w1 <= 1.0
        {
            [w0, w1]
        } else {
            defaults.weight_decay
        };
        let [e_lo, e_hi] = space.elr_range();
        let elr =
            if e_lo.is_finite() && e_hi.is_finite() && e_lo > 0.0 && e_lo <= e_hi && e_hi <= 10.0 {
                [e_lo, e_hi]
            } else {
                crate::spec::DEFAULT_ELR_RANGE
            };
        let crop_pad = match space.crop_pad {
            Some([lo, hi]) if lo <= hi && hi <= crate::hparams::MAX_CROP_PAD => [lo, hi],
            _ => [0, 0],
        };
        let probability = |range: Option<[f64; 2]>, max: f64| match range {
            Some([lo, hi])
                if lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi && hi <= max =>
            {
                [lo, hi]
            }
            _ => [0.0, 0.0],
        };
        HpBounds {
            learning_rate,
            elr,
            crop_pad,
            flip: probability(space.flip, crate::hparams::MAX_FLIP),
            erase: probability(space.erase, crate::hparams::MAX_ERASE),
            batch_sizes,
            epochs: [e0, e1],
            optimizers: dedup_or(&space.optimizers, defaults.optimizers),
            schedules: dedup_or(&space.schedules, defaults.schedules),
            weight_decay,
        }
    }

    /// `hp` moved into the space, with a note per field that moved.
    pub(super) fn clamp(&self, hp: &HyperParams) -> (HyperParams, Vec<String>) {
        let mut out = hp.clone();
        let mut notes = Vec::new();
        let elr_mode = hp.objective.is_elr();
        let [lr_lo, lr_hi] = self.learning_rate;
        if !elr_mode {
            out.learning_rate = if hp.learning_rate.is_nan() {
                (lr_lo * lr_hi).sqrt()
            } else {
                hp.learning_rate.clamp(lr_lo, lr_hi)
            };
        }
        if let Objective::Elr { elr, scale } = hp.objective {
            let [lo, hi] = self.elr;
            let clamped = if elr.is_nan() {
                (lo * hi).sqrt()
            } else {
                elr.clamp(lo, hi)
            };
            if clamped != elr {
                notes.push(format!("clamp elr {elr}->{clamped}"));
            }
            out.objective = Objective::Elr {
                elr: clamped,
                scale,
            };
        }
        if !self.batch_sizes.contains(&hp.batch_size) {
            out.batch_size = *self
                .batch_sizes
                .iter()
                .min_by_key(|b| b.abs_diff(hp.batch_size))
                .expect("non-empty");
        }
        if !self.optimizers.contains(&hp.optimizer) {
            out.optimizer = self.optimizers[0];
        }
        if !self.schedules.contains(&hp.schedule) {
            out.schedule = self.schedules[0];
        }
        let [wd_lo, wd_hi] = self.weight_decay;
        if !elr_mode {
            out.weight_decay = if hp.weight_decay.is_nan() {
                wd_lo
            } else {
                hp.weight_decay.clamp(wd_lo, wd_hi)
            };
        }
        out.epochs = hp.epochs.clamp(self.epochs[0], self.epochs[1]);
        let probability =
            |x: f64, [lo, hi]: [f64; 2]| if x.is_nan() { lo } else { x.clamp(lo, hi) };
        out.augment = Augment {
            crop_pad: hp
                .augment
                .crop_pad
                .clamp(self.crop_pad[0], self.crop_pad[1]),
            flip: probability(hp.augment.flip, self.flip),
            erase: probability(hp.augment.erase, self.erase),
        };
        let f = |x: f64| x.to_string();
        for (field, old, new) in [
            ("lr", f(hp.learning_rate), f(out.learning_rate)),
            (
                "batch_size",
                hp.batch_size.to_string(),
                out.batch_size.to_string(),
            ),
            (
                "optimizer",
                hp.optimizer.name().into(),
                out.optimizer.name().into(),
            ),
            (
                "schedule",
                schedule_name(hp.schedule).into(),
                schedule_name(out.schedule).into(),
            ),
            ("weight_decay", f(hp.weight_decay), f(out.weight_decay)),
            ("epochs", hp.epochs.to_string(), out.epochs.to_string()),
            (
                "crop_pad",
                hp.augment.crop_pad.to_string(),
                out.augment.crop_pad.to_string(),
            ),
            ("flip", f(hp.augment.flip), f(out.augment.flip)),
            ("erase", f(hp.augment.erase), f(out.augment.erase)),
        ] {
            if old != new {
                notes.push(format!("clamp {field} {old}->{new}"));
            }
        }
        (out, notes)
    }
}

fn dedup_or<T: Copy + PartialEq>(items: &[T], fallback: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(item) {
            out.push(*item);
        }
    }
    if out.is_empty() {
        fallback
    } else {
        out
    }
}

/// [`mutate_hparams`], also saying which operators were applied.
fn mutate_hparams_traced<R: Rng + ?Sized>(
    hparams: &HyperParams,
    space: &SearchSpace,
    rng: &mut R,
) -> (HyperParams, String, Vec<HpOp>) {
    let bounds = HpBounds::of(space);
    let (mut child, mut notes) = bounds.clamp(hparams);
    let wanted = if rng.gen_bool(0.5) { 2 } else { 1 };
    let mut order = HpOp::for_hparams(hparams, &bounds);
    order.shuffle(rng);
    let mut applied = Vec::with_capacity(wanted);
    for op in order {
        if applied.len() == wanted {
            break;
        }
        if let Some(note) = apply_hp_op(op, &mut child, &bounds, rng) {
            notes.push(note);
            applied.push(op);
        }
    }
    if notes.is_empty() {
        notes.push("no hyperparameter change possible in the search space".into());
    }
    (child, notes.join("; "), applied)
}

/// Changes one hyperparameter of `hp` (already inside the bounds); `None` when the space leaves
/// no other value.
fn apply_hp_op<R: Rng + ?Sized>(
    op: HpOp,
    hp: &mut HyperParams,
    b: &HpBounds,
    rng: &mut R,
) -> Option<String> {
    match op {
        HpOp::LearningRate => {
            let [lo, hi] = b.learning_rate;
            let old = hp.learning_rate;
            let new = redraw(old, || {
                tidy(old * (LR_LOG_SIGMA * standard_normal(rng)).exp(), lo, hi)
            })?;
            hp.learning_rate = new;
            Some(format!("lr {old}->{new}"))
        }
        HpOp::BatchSize => {
            let sizes = &b.batch_sizes;
            let at = sizes.iter().position(|s| *s == hp.batch_size)?;
            let mut neighbours = Vec::with_capacity(2);
            if at > 0 {
                neighbours.push(sizes[at - 1]);
            }
            if at + 1 < sizes.len() {
                neighbours.push(sizes[at + 1]);
            }
            let new = *neighbours.choose(rng)?;
            let old = std::mem::replace(&mut hp.batch_size, new);
            Some(format!("batch_size {old}->{new}"))
        }
        HpOp::Optimizer => {
            let new = pick_other(&b.optimizers, hp.optimizer, rng)?;
            let old = std::mem::replace(&mut hp.optimizer, new);
            Some(format!("optimizer {}->{}", old.name(), new.name()))
        }
        HpOp::Schedule => {
            let new = pick_other(&b.schedules, hp.schedule, rng)?;
            let old = std::mem::replace(&mut hp.schedule, new);
            Some(format!(
                "schedule {}->{}",
                schedule_name(old),
                schedule_name(new)
            ))
        }
        HpOp::WeightDecay => {
            let [lo, hi] = b.weight_decay;
            let old = hp.weight_decay;
            let new = redraw(old, || {
                if old == 0.0 {
                    tidy(log_uniform((hi * WD_LOW_FRACTION).max(lo), hi, rng), lo, hi)
                } else if lo == 0.0 && rng.gen_bool(0.1) {
                    0.0
                } else {
                    tidy(old * (WD_LOG_SIGMA * standard_normal(rng)).exp(), lo, hi)
                }
            })?;
            hp.weight_decay = new;
            Some(format!("weight_decay {old}->{new}"))
        }
        HpOp::Elr => {
            let Objective::Elr { elr: old, scale } = hp.objective else {
                return None;
            };
            let [lo, hi] = b.elr;
            let new = redraw(old, || {
                tidy(old * (ELR_LOG_SIGMA * standard_normal(rng)).exp(), lo, hi)
            })?;
            hp.objective = Objective::Elr { elr: new, scale };
            Some(format!("elr {old}->{new}"))
        }
        HpOp::CropPad => {
            let [lo, hi] = b.crop_pad;
            let old = hp.augment.crop_pad;
            let new = step_one(old, lo, hi, rng)?;
            hp.augment.crop_pad = new;
            Some(format!("crop_pad {old}->{new}"))
        }
        HpOp::Flip => {
            let old = hp.augment.flip;
            let new = step_probability(old, b.flip, rng)?;
            hp.augment.flip = new;
            Some(format!("flip {old}->{new}"))
        }
        HpOp::Erase => {
            let old = hp.augment.erase;
            let new = step_probability(old, b.erase, rng)?;
            hp.augment.erase = new;
            Some(format!("erase {old}->{new}"))
        }
        HpOp::Epochs => {
            let [e0, e1] = b.epochs;
            let old = hp.epochs;
            let new = match (old > e0, old < e1) {
                (true, true) => {
                    if rng.gen_bool(0.5) {
                        old - 1
                    } else {
                        old + 1
                    }
                }
                (true, false) => old - 1,
                (false, true) => old + 1,
                (false, false) => return None,
            };
            hp.epochs = new;
            Some(format!("epochs {old}->{new}"))
        }
    }
}

/// `old` one up or one down within `[lo, hi]` (either way with probability 1/2 when both are
/// possible); `None` when the range has no other value.
fn step_one<R: Rng + ?Sized>(old: u32, lo: u32, hi: u32, rng: &mut R) -> Option<u32> {
    match (old > lo, old < hi) {
        (true, true) => Some(if rng.gen_bool(0.5) { old - 1 } else { old + 1 }),
        (true, false) => Some(old - 1),
        (false, true) => Some(old + 1),
        (false, false) => None,
    }
}

/// A probability moved by a normal step of [`AUGMENT_PROBABILITY_SIGMA`], rounded to two
/// decimals and kept in `range`; `None` when no draw moved it.
fn step_probability<R: Rng + ?Sized>(old: f64, range: [f64; 2], rng: &mut R) -> Option<f64> {
    let [lo, hi] = range;
    redraw(old, || {
        round_probability(
            old + AUGMENT_PROBABILITY_SIGMA * standard_normal(rng),
            lo,
            hi,
        )
    })
}

/// `p` rounded to two decimals, then clamped to `[lo, hi]`.
fn round_probability(p: f64, lo: f64, hi: f64) -> f64 {
    ((p * 100.0).round() / 100.0).clamp(lo, hi)
}

/// Draws with `draw` until the value differs from `old` (a few times at most).
fn redraw(old: f64, mut draw: impl FnMut() -> f64) -> Option<f64> {
    (0..NUMERIC_REDRAWS).map(|_| draw()).find(|v| *v != old)
}

/// A standard normal variate by the Box-Muller transform.
fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1 = 1.0 - rng.gen::<f64>(); // (0, 1], so the logarithm is finite
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Log-uniform in `[lo, hi]` (`lo` when the range is empty or not positive).
fn log_uniform<R: Rng + ?Sized>(lo: f64, hi: f64, rng: &mut R) -> f64 {
    if !(lo > 0.0 && hi > lo) {
        return lo;
    }
    let u: f64 = rng.gen();
    (lo.ln() + u * (hi.ln() - lo.ln())).exp()
}

/// `x` rounded to three significant digits, then clamped to `[lo, hi]` (with `lo <= hi`).
fn tidy(x: f64, lo: f64, hi: f64) -> f64 {
    let rounded = if x.is_finite() && x != 0.0 {
        let scale = 10f64.powi(2 - x.abs().log10().floor() as i32);
        (x * scale).round() / scale
    } else {
        x
    };
    if rounded.is_nan() {
        lo
    } else {
        rounded.clamp(lo, hi)
    }
}

fn schedule_name(s: Schedule) -> &'static str {
    match s {
        Schedule::Constant => "constant",
        Schedule::Cosine => "cosine",
        Schedule::OneCycle => "one_cycle",
    }
}
