//! Deterministic image operations on raw bytes (`[C, H, W]` planes of `u8`): bilinear resizing
//! to a common geometry, and the derived domains of [`DomainTransform`] (rotation, inversion,
//! contrast reduction, Gaussian noise).

use explore_common::spec::DomainTransform;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Image geometry: channels, height, width.
pub(crate) type Geometry = (u32, u32, u32);

/// Bilinear resize of one image from `from` to `to` (same channel count), sampling at pixel
/// centres (the convention of `align_corners = false`).
pub(crate) fn resize(image: &[u8], from: Geometry, to: Geometry) -> Vec<u8> {
    let (c, h, w) = (from.0 as usize, from.1 as usize, from.2 as usize);
    let (oh, ow) = (to.1 as usize, to.2 as usize);
    if (h, w) == (oh, ow) {
        return image.to_vec();
    }
    let mut out = Vec::with_capacity(c * oh * ow);
    let sy = h as f64 / oh as f64;
    let sx = w as f64 / ow as f64;
    for plane in image.chunks_exact(h * w) {
        for y in 0..oh {
            let fy = ((y as f64 + 0.5) * sy - 0.5).clamp(0.0, (h - 1) as f64);
            for x in 0..ow {
                let fx = ((x as f64 + 0.5) * sx - 0.5).clamp(0.0, (w - 1) as f64);
                out.push(to_byte(bilinear(plane, h, w, fy, fx)));
            }
        }
    }
    out
}

/// Applies `t` to one image in place; `rng` supplies the noise (untouched when `t.noise` is 0).
pub(crate) fn apply(
    t: &DomainTransform,
    image: &mut [u8],
    geometry: Geometry,
    rng: &mut ChaCha8Rng,
) {
    if t.rotate != 0.0 {
        let rotated = rotate(image, geometry, t.rotate);
        image.copy_from_slice(&rotated);
    }
    if t.invert {
        for v in image.iter_mut() {
            *v = 255 - *v;
        }
    }
    if t.low_contrast > 0.0 {
        let a = t.low_contrast;
        for v in image.iter_mut() {
            *v = to_byte((1.0 - a) * *v as f64 + a * 127.5);
        }
    }
    if t.noise > 0.0 {
        let std = t.noise * 255.0;
        for v in image.iter_mut() {
            *v = to_byte(*v as f64 + std * standard_normal(rng));
        }
    }
}

/// Rotation by `degrees` counter-clockwise about the image centre; bilinear, zero outside.
fn rotate(image: &[u8], (c, h, w): Geometry, degrees: f64) -> Vec<u8> {
    let (c, h, w) = (c as usize, h as usize, w as usize);
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let mut out = vec![0u8; c * h * w];
    for (plane, dst) in image.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
        for y in 0..h {
            for x in 0..w {
                // inverse map: the source of output pixel (y, x); y grows downwards, so a
                // counter-clockwise turn on screen uses the transposed rotation
                let (dy, dx) = (y as f64 - cy, x as f64 - cx);
                let sx = cos * dx - sin * dy + cx;
                let sy = sin * dx + cos * dy + cy;
                dst[y * w + x] = to_byte(bilinear_zero(plane, h, w, sy, sx));
            }
        }
    }
    out
}

fn bilinear(plane: &[u8], h: usize, w: usize, fy: f64, fx: f64) -> f64 {
    let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
    let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
    let (ty, tx) = (fy - y0 as f64, fx - x0 as f64);
    let at = |y: usize, x: usize| plane[y * w + x] as f64;
    let top = at(y0, x0) * (1.0 - tx) + at(y0, x1) * tx;
    let bottom = at(y1, x0) * (1.0 - tx) + at(y1, x1) * tx;
    top * (1.0 - ty) + bottom * ty
}

/// Bilinear sample that treats everything outside the image as 0.
fn bilinear_zero(plane: &[u8], h: usize, w: usize, fy: f64, fx: f64) -> f64 {
    let (y0, x0) = (fy.floor(), fx.floor());
    let (ty, tx) = (fy - y0, fx - x0);
    let at = |y: f64, x: f64| {
        if y < 0.0 || x < 0.0 || y >= h as f64 || x >= w as f64 {
            0.0
        } else {
            plane[y as usize * w + x as usize] as f64
        }
    };
    let top = at(y0, x0) * (1.0 - tx) + at(y0, x0 + 1.0) * tx;
    let bottom = at(y0 + 1.0, x0) * (1.0 - tx) + at(y0 + 1.0, x0 + 1.0) * tx;
    top * (1.0 - ty) + bottom * ty
}

fn to_byte(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// One standard normal draw (Box–Muller).
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(3)
    }

    /// A 1×5×5 image with one bright pixel at (row, col).
    fn dot(row: usize, col: usize) -> Vec<u8> {
        let mut image = vec![0u8; 25];
        image[row * 5 + col] = 200;
        image
    }

    #[test]
    fn quarter_turn_moves_a_pixel_counter_clockwise() {
        // right of centre → above centre after 90° counter-clockwise
        let mut image = dot(2, 4);
        let t = DomainTransform {
            rotate: 90.0,
            ..DomainTransform::default()
        };
        apply(&t, &mut image, (1, 5, 5), &mut rng());
        assert_eq!(image, dot(0, 2));
        // four quarter turns are the identity on a square grid
        let mut image = dot(1, 3);
        for _ in 0..4 {
            apply(&t, &mut image, (1, 5, 5), &mut rng());
        }
        assert_eq!(image, dot(1, 3));
    }

    #[test]
    fn inversion_contrast_and_noise_do_what_they_say() {
        let mut image = vec![0u8, 255, 100];
        let invert = DomainTransform {
            invert: true,
            ..DomainTransform::default()
        };
        apply(&invert, &mut image, (1, 1, 3), &mut rng());
        assert_eq!(image, vec![255, 0, 155]);
        let flat = DomainTransform {
            low_contrast: 0.5,
            ..DomainTransform::default()
        };
        apply(&flat, &mut image, (1, 1, 3), &mut rng());
        assert_eq!(image, vec![191, 64, 141]);
        let noisy = DomainTransform {
            noise: 0.1,
            ..DomainTransform::default()
        };
        let mut grey = vec![128u8; 4000];
        apply(&noisy, &mut grey, (1, 40, 100), &mut rng());
        let mean = grey.iter().map(|&v| v as f64).sum::<f64>() / 4000.0;
        let var = grey.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 4000.0;
        assert!((mean - 128.0).abs() < 2.0, "{mean}");
        assert!((var.sqrt() - 25.5).abs() < 2.0, "{}", var.sqrt());
        // seeded: the same seed gives the same noise
        let mut again = vec![128u8; 4000];
        apply(&noisy, &mut again, (1, 40, 100), &mut rng());
        assert_eq!(grey, again);
    }

    #[test]
    fn resize_keeps_constant_images_and_scales_geometry() {
        let image = vec![77u8; 64];
        let out = resize(&image, (1, 8, 8), (1, 28, 28));
        assert_eq!(out.len(), 784);
        assert!(out.iter().all(|&v| v == 77));
        // a left-dark, right-bright image stays so
        let mut halves = vec![0u8; 64];
        for row in halves.chunks_exact_mut(8) {
            row[4..].fill(240);
        }
        let out = resize(&halves, (1, 8, 8), (1, 16, 16));
        assert_eq!(out[0], 0);
        assert_eq!(out[15], 240);
        assert_eq!(resize(&halves, (1, 8, 8), (1, 8, 8)), halves);
    }
}
