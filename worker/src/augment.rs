//! Data augmentation of training batches (issue 14): random crop with padding, horizontal
//! flip and random erasing (Cutout), with the strengths of the trial's
//! [`explore_common::hparams::Augment`].
//!
//! Only the trainer's batch loop calls [`Augmenter::apply`], on the images of one training
//! batch (a fresh tensor gathered from the training split, never the split itself); evaluation
//! ([`crate::train::accuracy`], probes, transferability scores, export checks) takes the split's
//! tensors as they are, so validation and test images are never augmented. What an objective
//! draws by itself (the history batches gradient mixing replays) is not augmented either.
//!
//! **Randomness.** The per-example draws (flip or not, crop offsets, erase or not, the square's
//! centre) come from a ChaCha8 generator seeded with the trial's seed and the global step
//! number, not from torch's process-wide generator: the same trial seed gives the same
//! augmented batches, whatever other trials on the same device do, and a step's draws do not
//! depend on the steps before it. They are `6 · batch` small integers, copied to the device as
//! one `[batch, 6]` tensor; the images themselves never leave the device.
//!
//! **Operations**, per example, in this order, all as tensor operations on the batch's device:
//! 1. *Crop with padding* (`crop_pad = p > 0`): the image is padded by `p` pixels on each side
//!    and cropped back to its size at an offset `(dy, dx)` uniform in `0..=2p` each, as
//!    torchvision's `RandomCrop(size, padding = p)`. The padding replicates the edge pixels
//!    (the background on MNIST-like images; a zero pad would be the mean grey after
//!    normalisation, a frame the test images never have).
//! 2. *Horizontal flip* with probability `flip`.
//!
//!    Both are one `gather` over the flattened pixels: output pixel `(i, j)` reads the input at
//!    `(clamp(i + dy − p), clamp(j' + dx − p))` with `j' = W − 1 − j` when flipped, else `j`
//!    (clamping to the image is exactly replicate padding).
//! 3. *Random erasing* with probability `erase`: a square of side
//!    `round(ERASE_SIDE_FRACTION · min(H, W))` (at least 1) centred at a uniform pixel, clipped
//!    at the image's edges (Cutout, DeVries & Taylor 2017), is set to zero in every channel:
//!    after normalisation zero is the channel mean.

use explore_common::hparams::{Augment, ERASE_SIDE_FRACTION};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, TchError, Tensor};

/// The tag that makes the augmentation generator's seed differ from every other use of the
/// trial seed.
const SEED_TAG: &[u8; 16] = b"explore-augment\0";

/// The random choices for one batch, one entry per example.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Draws {
    /// Whether the example is flipped horizontally.
    pub flip: Vec<bool>,
    /// Row offset of the crop in the padded image, `0..=2p` (`p` = no shift).
    pub dy: Vec<i64>,
    /// Column offset of the crop in the padded image, `0..=2p` (`p` = no shift).
    pub dx: Vec<i64>,
    /// Whether a square is erased.
    pub erase: Vec<bool>,
    /// Row of the erased square's centre, `0..H`.
    pub cy: Vec<i64>,
    /// Column of the erased square's centre, `0..W`.
    pub cx: Vec<i64>,
}

impl Draws {
    /// Draws the choices for `batch` examples of `height × width` images under `settings`.
    /// Every example takes the same six draws whatever the settings, in a fixed order.
    pub fn draw<R: Rng + ?Sized>(
        settings: &Augment,
        batch: usize,
        height: i64,
        width: i64,
        rng: &mut R,
    ) -> Draws {
        let span = 2 * settings.crop_pad as i64;
        let mut d = Draws::default();
        for _ in 0..batch {
            d.flip.push(rng.gen::<f64>() < settings.flip);
            d.dy.push(rng.gen_range(0..=span));
            d.dx.push(rng.gen_range(0..=span));
            d.erase.push(rng.gen::<f64>() < settings.erase);
            d.cy.push(rng.gen_range(0..height.max(1)));
            d.cx.push(rng.gen_range(0..width.max(1)));
        }
        d
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.flip.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.flip.is_empty()
    }
}

/// Augments the training batches of one trial.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augmenter {
    settings: Augment,
    seed: u64,
}

impl Augmenter {
    /// The augmenter of a trial with these settings and seed; `None` when augmentation is off
    /// (the trainer then leaves its batches untouched, bit for bit as before augmentation
    /// existed).
    pub fn new(settings: Augment, seed: u64) -> Option<Augmenter> {
        (!settings.is_off()).then_some(Augmenter { settings, seed })
    }

    /// The generator of step `step`'s draws: ChaCha8 keyed by the trial seed, the step and a
    /// tag.
    pub fn rng(&self, step: u64) -> ChaCha8Rng {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&self.seed.to_le_bytes());
        key[8..16].copy_from_slice(&step.to_le_bytes());
        key[16..].copy_from_slice(SEED_TAG);
        ChaCha8Rng::from_seed(key)
    }

    /// The batch `xs` (`[N, C, H, W]`) of training step `step`, augmented on its device. `xs`
    /// is not modified.
    pub fn apply(&self, xs: &Tensor, step: u64) -> Result<Tensor, TchError> {
        let (n, _, h, w) = xs.size4()?;
        let draws = Draws::draw(&self.settings, n as usize, h, w, &mut self.rng(step));
        augment_batch(xs, &self.settings, &draws)
    }
}

/// `xs` (`[N, C, H, W]`) augmented with the given draws (see the module documentation):
/// `settings` gives the crop's padding and switches each operation on (its probabilities were
/// already applied by the draws). Pure tensor operations on `xs`'s device; `xs` is not
/// modified.
pub fn augment_batch(xs: &Tensor, settings: &Augment, draws: &Draws) -> Result<Tensor, TchError> {
    let (n, c, h, w) = xs.size4()?;
    if draws.len() != n as usize {
        return Err(TchError::Shape(format!(
            "{} augmentation draws for a batch of {n}",
            draws.len()
        )));
    }
    let device = xs.device();
    let crop = settings.crop_pad > 0;
    let flip = settings.flip > 0.0 && draws.flip.iter().any(|&f| f);
    let erase = settings.erase > 0.0 && draws.erase.iter().any(|&e| e);
    if n == 0 || !(crop || flip || erase) {
        return Ok(xs.shallow_clone());
    }
    let p = settings.crop_pad as i64;
    // One small host-to-device copy of the draws: columns flip, dy, dx, erase, cy, cx.
    let mut table = Vec::with_capacity(6 * n as usize);
    for i in 0..n as usize {
        table.extend_from_slice(&[
            draws.flip[i] as i64,
            if crop { draws.dy[i] } else { p },
            if crop { draws.dx[i] } else { p },
            draws.erase[i] as i64,
            draws.cy[i],
            draws.cx[i],
        ]);
    }
    let table = Tensor::f_from_slice(&table)?
        .f_view([n, 6])?
        .f_to_device(device)?;
    let column = |k: i64| table.f_select(1, k)?.f_view([n, 1]);
    let rows = Tensor::f_arange(h, (Kind::Int64, device))?.f_view([1, h])?;
    let cols = Tensor::f_arange(w, (Kind::Int64, device))?.f_view([1, w])?;

    let mut out = if crop || flip {
        // Source row and column of every output pixel.
        let src_rows = rows
            .f_add(&column(1)?)?
            .f_sub_scalar(p)?
            .f_clamp(0, h - 1)?; // [N, H]
        let flipped = column(0)?.f_ne(0)?; // [N, 1]
        let mirrored = cols.f_neg()?.f_add_scalar(w - 1)?; // [1, W]
        let src_cols = mirrored
            .f_where_self(&flipped, &cols)?
            .f_add(&column(2)?)?
            .f_sub_scalar(p)?
            .f_clamp(0, w - 1)?; // [N, W]
        let index = src_rows
            .f_view([n, h, 1])?
            .f_mul_scalar(w)?
            .f_add(&src_cols.f_view([n, 1, w])?)? // [N, H, W]
            .f_view([n, 1, h * w])?
            .f_expand([n, c, h * w], false)?;
        xs.f_reshape([n, c, h * w])?
            .f_gather(2, &index, false)?
            .f_view([n, c, h, w])?
    } else {
        xs.shallow_clone()
    };

    if erase {
        let side = erase_side(h, w);
        let top = column(4)?.f_sub_scalar(side / 2)?.f_view([n, 1, 1])?;
        let left = column(5)?.f_sub_scalar(side / 2)?.f_view([n, 1, 1])?;
        let r = rows.f_view([1, h, 1])?;
        let k = cols.f_view([1, 1, w])?;
        let in_rows = r
            .f_ge_tensor(&top)?
            .f_logical_and(&r.f_lt_tensor(&top.f_add_scalar(side)?)?)?;
        let in_cols = k
            .f_ge_tensor(&left)?
            .f_logical_and(&k.f_lt_tensor(&left.f_add_scalar(side)?)?)?;
        let chosen = column(3)?.f_ne(0)?.f_view([n, 1, 1])?;
        let mask = in_rows
            .f_logical_and(&in_cols)?
            .f_logical_and(&chosen)? // [N, H, W]
            .f_unsqueeze(1)?; // [N, 1, H, W], broadcast over the channels
        out = out.f_masked_fill(&mask, 0.0)?;
    }
    Ok(out)
}

/// Side of the square random erasing zeroes in `h × w` images:
/// `round(ERASE_SIDE_FRACTION · min(h, w))`, at least 1.
pub fn erase_side(h: i64, w: i64) -> i64 {
    ((ERASE_SIDE_FRACTION * h.min(w) as f64).round() as i64).max(1)
}

#[cfg(test)]
mod tests;
